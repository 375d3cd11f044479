/* gemm_f32.h - float32 linear layers on weights packed once, at load.
 *
 *   C[M, N] = A[M, K] W^T + bias      (or C += that, when accumulating)
 *
 * A, C and the sums float32; W [N, K] (a linear layer's [out, in]) packed
 * into column panels of vectors of columns (4 x 16 with AVX-512, 2 x 8 with
 * AVX2), k after k, either as float32 or rounded to bf16 and stored as
 * pairs (one 32-bit word holds a column of an even vector in its low
 * half and the same lane's column of the next vector in its high half),
 * which the kernel widens in registers by one shift or one AND: a bf16 value is a
 * float32's high half, so the products are exact float32 ones on the
 * rounded weights, and the weights never exist in float32 (the wide
 * backend, widen.h, without its shared scratch).
 *
 * Why our own: oneDNN 2.6's float32 products at the avx2 level ran the
 * UNet's linear layers at 69-75% of the FMA ceiling, and bf16 weights
 * have to be widened into a float32 copy for oneDNN; this kernel (6 rows
 * x 2 or 4 vectors of sums in registers, A read in place, all of k in one
 * slice) runs both at 87-97% on SD's shapes (docs/engine.md), at AVX-512
 * as fast as oneDNN's float32 on float32 weights.
 *
 * Register blocks per level: AVX-512 6 rows x 64 columns, AVX2 6 x 16. Below
 * AVX2 gemm_f32_wanted() is 0 and nothing here may be called (callers
 * keep oneDNN). A packed layer belongs to the level that packed it.
 * gemm_f32_run shares the work out among the OpenMP threads itself.
 */
#ifndef SD_GEMM_F32_H
#define SD_GEMM_F32_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Whether layers should use these kernels (which exist from AVX2 on):
 * the wide backend's (bf16 weights) from avx2 on; float32 ones at the
 * avx2 level only, where oneDNN 2.6's products are slower (from avx512 on
 * oneDNN's are as fast). 0 below AVX2 and when DIFFUSIOND_GEMM=onednn
 * (comparisons, tests of both). */
int gemm_f32_wanted(int bf16_weights);

/* A packed layer; the first member tells it from other layer states. */
#define GEMM_F32_MAGIC 0x47656d6du
struct gemm_f32 {
    uint32_t magic;
    int N, K, bf16;
    int batch;     /* independent matrices packed one after the other */
    size_t mat;    /* elements of one packed matrix */
    float *bias;   /* [N] copy (padded to whole panels), or NULL */
    void *p;       /* the panels, then the bias */
    size_t bytes;  /* of p */
    size_t wbytes; /* of its panels (the weights held, as layer_bytes counts) */
};

static inline int gemm_f32_owns(const void *state)
{
    return state && ((const struct gemm_f32 *)state)->magic == GEMM_F32_MAGIC;
}

/* Pack W [N, K] (row n at W + n * K) and bias [N] (or NULL), as float32 or,
 * when bf16, rounded to bf16. *out owns what it holds; gemm_f32_free. */
int gemm_f32_pack(struct gemm_f32 **out, const float *W, const float *bias, int N, int K, int bf16,
                  struct sd_err *err);
void gemm_f32_free(struct gemm_f32 **g);

/* A batch of weight matrices without bias (the Winograd convolution's 16
 * planes): element (n, k) of matrix b at W[b * wb + n * sn + k * sk]. */
int gemm_f32_pack_batch(struct gemm_f32 **out, int batch, const float *W, size_t wb, size_t sn, size_t sk,
                        int N, int K, int bf16, struct sd_err *err);

/* C = A W^T + bias, or C += that when accumulate; A rows lda floats apart,
 * C rows ldc apart. */
void gemm_f32_run(const struct gemm_f32 *g, int M, const float *A, size_t lda, float *C, size_t ldc,
                  int accumulate);
/* The same for every matrix b of a batch: A + b * ab, C + b * cb. */
void gemm_f32_run_batch(const struct gemm_f32 *g, int M, const float *A, size_t ab, size_t lda, float *C,
                        size_t cb, size_t ldc, int accumulate);

#endif
