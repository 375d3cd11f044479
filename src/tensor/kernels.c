/* kernels.c - the CPU kernels of the level in use.
 *
 * The kernel files (KERNEL_SRC in the Makefile: ops_cpu.c and the kernels
 * it calls) are compiled once per instruction set level, each copy under
 * names of its own (kernel_names.h). This file, compiled for any x86-64,
 * picks the copy for cpu_level() the first time one is asked for, so one
 * binary runs on any x86-64 CPU and at full speed on the newest: a CPU
 * never executes an instruction it lacks, because the level never exceeds
 * what cpuid and the OS report.
 *
 * It also offers the few kernel entry points that code outside the
 * backends calls (tests, benches) under their plain names.
 */
#include <pthread.h>

#include "tensor/cpu.h"
#include "tensor/gemm_bf16.h"
#include "tensor/nn.h"
#include "tensor/winograd.h"

size_t onednn_extra_weight_bytes;

/* Everything a level provides. */
struct klevel {
    const struct nn_backend *cpu, *cpu_bf16, *cpu_wide;
    int (*winograd_eligible)(const struct nn_conv2d *l, int bf16);
    int (*winograd_owns)(const void *be_state);
    int (*winograd_prepare)(struct nn_conv2d *l, int bf16, struct sd_err *err);
    int (*winograd_plan)(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err);
    void (*winograd_release)(void **be_state);
    void (*gemm_bf16_panel)(int M, int K, int N, const uint16_t *A, size_t lda, const uint16_t *P,
                            int panel, float *C, size_t ldc);
    int gemm_bf16_native;
};

#define DECLARE_LEVEL(L)                                                                           \
    extern const struct nn_backend nn_backend_cpu_##L, nn_backend_cpu_bf16_##L,                    \
        nn_backend_cpu_wide_##L;                                                                   \
    int winograd_eligible_##L(const struct nn_conv2d *l, int bf16);                                \
    int winograd_owns_##L(const void *be_state);                                                   \
    int winograd_prepare_##L(struct nn_conv2d *l, int bf16, struct sd_err *err);                   \
    int winograd_plan_##L(struct nn_conv2d *l, int B, int H, int W, int accumulate,                \
                          struct sd_err *err);                                                     \
    void winograd_release_##L(void **be_state);                                                    \
    void gemm_bf16_panel_##L(int M, int K, int N, const uint16_t *A, size_t lda,                   \
                             const uint16_t *P, int panel, float *C, size_t ldc);
#define LEVEL(L, bf16)                                                                             \
    {&nn_backend_cpu_##L, &nn_backend_cpu_bf16_##L, &nn_backend_cpu_wide_##L, winograd_eligible_##L, \
     winograd_owns_##L,                                                                            \
     winograd_prepare_##L, winograd_plan_##L, winograd_release_##L, gemm_bf16_panel_##L, bf16}

DECLARE_LEVEL(baseline)
#ifdef SD_KLEVELS_X86
DECLARE_LEVEL(avx2)
DECLARE_LEVEL(avx512)
DECLARE_LEVEL(avx512bf16)
#endif

static const struct klevel levels[CPU_LEVEL_COUNT] = {
    LEVEL(baseline, 0),
#ifdef SD_KLEVELS_X86
    LEVEL(avx2, 0),
    LEVEL(avx512, 0),
    LEVEL(avx512bf16, 1),
#endif
};

enum cpu_level cpu_built_level(void)
{
#ifdef SD_KLEVELS_X86
    return CPU_AVX512_BF16;
#else
    return CPU_BASELINE;
#endif
}

static const struct klevel *cur;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void pick(void)
{
    cur = &levels[cpu_level()]; /* never above cpu_built_level() */
}

static const struct klevel *k(void)
{
    pthread_once(&once, pick);
    return cur;
}

const struct nn_backend *nn_backend_cpu_get(void)
{
    return k()->cpu;
}

const struct nn_backend *nn_backend_cpu_bf16_get(void)
{
    return k()->cpu_bf16;
}

const struct nn_backend *nn_backend_cpu_wide_get(void)
{
    return k()->cpu_wide;
}

int winograd_eligible(const struct nn_conv2d *l, int bf16)
{
    return k()->winograd_eligible(l, bf16);
}

int winograd_owns(const void *be_state)
{
    return k()->winograd_owns(be_state);
}

int winograd_prepare(struct nn_conv2d *l, int bf16, struct sd_err *err)
{
    return k()->winograd_prepare(l, bf16, err);
}

int winograd_plan(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err)
{
    return k()->winograd_plan(l, B, H, W, accumulate, err);
}

void winograd_release(void **be_state)
{
    k()->winograd_release(be_state);
}

void gemm_bf16_panel(int M, int K, int N, const uint16_t *A, size_t lda, const uint16_t *P, int panel,
                     float *C, size_t ldc)
{
    k()->gemm_bf16_panel(M, K, N, A, lda, P, panel, C, ldc);
}

int gemm_bf16_native(void)
{
    return k()->gemm_bf16_native;
}
