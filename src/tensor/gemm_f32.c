/* gemm_f32.c - see gemm_f32.h.
 *
 * Loop order: the output is cut into tasks of up to MR rows x a group of
 * column panels, shared out among the threads (dynamic: the last row
 * block may be short). In a task: even slices of at most KC k (all of k
 * for SD's layers but the 5120-wide ones); in a slice, blocks of 6 rows
 * of A against each panel's slice, NR x NV vectors of sums in registers.
 * A task's first slice starts its sums from the bias (plus C when
 * accumulating); the next slices add to C. The last panel of a layer
 * whose N is not a multiple of the panel width runs with masked loads and
 * stores (its padding columns are zero weights).
 *
 * Measured (Zen 5, 2 threads, SD's linear shapes, bf16 panels): 4 vectors
 * per panel instead of 2 at AVX-512 (24 sums, half the weight loads and
 * widenings per multiply-add) 186 -> 202 GFLOP/s; slices of all of k
 * instead of 256 (C read and written once, not K / 256 times) 202 -> 216,
 * AVX2 182 -> 191; oneDNN's float32 210 in the same runs. Packing the
 * rows of A for the broadcasts cost more than it saved; 12 rows x 2
 * vectors was slower than 6 x 2.
 */
#include "tensor/gemm_f32.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/arena.h"
#include "tensor/vmath.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define G_NATIVE 1
#define VW 16
typedef __m512 vf;
typedef __m512i vi;
typedef __mmask16 vmask;
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VLOADM(p, m) _mm512_maskz_loadu_ps(m, p)
#define VSTOREM(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define VBCAST(p) _mm512_set1_ps(*(p))
#define VZERO() _mm512_setzero_ps()
#define VADD _mm512_add_ps
#define VFMA _mm512_fmadd_ps
#define ILOAD(p) _mm512_loadu_si512((const void *)(p))
#define LO16(d) _mm512_castsi512_ps(_mm512_slli_epi32(d, 16))
#define HI16(d) _mm512_castsi512_ps(_mm512_and_si512(d, _mm512_set1_epi32((int)0xffff0000u)))
static vmask lane_mask(int n) { return n >= VW ? (vmask)0xffff : n <= 0 ? 0 : (vmask)((1u << n) - 1); }
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define G_NATIVE 1
#define VW 8
typedef __m256 vf;
typedef __m256i vi;
typedef __m256i vmask;
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VLOADM(p, m) _mm256_maskload_ps(p, m)
#define VSTOREM(p, m, v) _mm256_maskstore_ps(p, m, v)
#define VBCAST(p) _mm256_broadcast_ss(p)
#define VZERO() _mm256_setzero_ps()
#define VADD _mm256_add_ps
#define VFMA _mm256_fmadd_ps
#define ILOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define LO16(d) _mm256_castsi256_ps(_mm256_slli_epi32(d, 16))
#define HI16(d) _mm256_castsi256_ps(_mm256_and_si256(d, _mm256_set1_epi32((int)0xffff0000u)))
static vmask lane_mask(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#else
#define G_NATIVE 0
#endif

int gemm_f32_wanted(int bf16_weights)
{
    const char *e = getenv("DIFFUSIOND_GEMM");
    if (!G_NATIVE || (e && !strcmp(e, "onednn")))
        return 0;
#ifdef __AVX512F__
    return bf16_weights;
#else
    return 1;
#endif
}

#if G_NATIVE
#if VW == 16
#define NV 4 /* vectors of columns per panel: 6 x 4 sums + 4 weights of 32 registers */
#else
#define NV 2 /* 6 x 2 sums + 2 weights + 1 broadcast of 16 registers */
#endif
#define PW (NV * VW)  /* columns per panel */
#define NR 6          /* rows per register block */
#define KC 4096       /* most k per slice */
#define MR 96         /* rows per task (a multiple of NR) */

/* Panel p, step k: PW floats, or PW / 2 words of bf16 pairs (word h * VW
 * + j: column 2h * VW + j low, column (2h + 1) * VW + j high). */
static size_t panel_elems(int K) { return (size_t)K * PW; }

static int pack(struct gemm_f32 **out, int batch, const float *W, size_t wb, size_t sn, size_t sk,
                const float *bias, int N, int K, int bf16, struct sd_err *err)
{
    *out = NULL;
    int panels = (N + PW - 1) / PW;
    size_t elem = bf16 ? 2 : 4, mat = (size_t)panels * panel_elems(K);
    size_t wbytes = (size_t)batch * mat * elem, bbytes = bias ? (size_t)panels * PW * sizeof(float) : 0;
    struct gemm_f32 *g = calloc(1, sizeof *g);
    void *p = g ? big_alloc(wbytes + bbytes) : NULL;
    if (!p) {
        free(g);
        return sd_errf(err, SD_ERR_NOMEM, "out of memory packing a %d x %d layer", N, K);
    }
    *g = (struct gemm_f32){.magic = GEMM_F32_MAGIC, .N = N, .K = K, .bf16 = bf16, .batch = batch,
                           .mat = mat, .p = p, .bytes = wbytes + bbytes, .wbytes = wbytes};
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int pn = 0; pn < panels; pn++)
            for (int k = 0; k < K; k++) {
                size_t at = (size_t)b * mat + (size_t)pn * panel_elems(K) + (size_t)k * PW;
                for (int j = 0; j < PW; j++) {
                    int n = pn * PW + j;
                    float w = n < N ? W[(size_t)b * wb + (size_t)n * sn + (size_t)k * sk] : 0.0f;
                    /* bf16: the pair word of column j's vector pair, low or high half */
                    size_t pj = (size_t)(j / (2 * VW)) * 2 * VW + 2 * (j % VW) + j / VW % 2;
                    if (bf16)
                        ((uint16_t *)p)[at + pj] = bf16_round(w);
                    else
                        ((float *)p)[at + j] = w;
                }
            }
    if (bias) {
        g->bias = (float *)((char *)p + wbytes);
        for (int n = 0; n < panels * PW; n++)
            g->bias[n] = n < N ? bias[n] : 0.0f;
    }
    *out = g;
    return SD_OK;
}

int gemm_f32_pack(struct gemm_f32 **out, const float *W, const float *bias, int N, int K, int bf16,
                  struct sd_err *err)
{
    return pack(out, 1, W, 0, (size_t)K, 1, bias, N, K, bf16, err);
}

int gemm_f32_pack_batch(struct gemm_f32 **out, int batch, const float *W, size_t wb, size_t sn, size_t sk,
                        int N, int K, int bf16, struct sd_err *err)
{
    return pack(out, batch, W, wb, sn, sk, NULL, N, K, bf16, err);
}

#define G_INLINE static inline __attribute__((always_inline))

enum { FROM_C, FROM_BIAS, FROM_C_AND_BIAS };

/* C[0..R, 0..PW) = sums over k < K of A[r][k] P[k][..], started from
 * init (C, the bias, or both). R, BF16 and TAIL are constants at every
 * call (always_inline + literal arguments), so the R x NV sums stay in
 * registers. TAIL: only the lanes m[v] of C's vector v exist. */
G_INLINE void tile(int K, const float *A, size_t lda, const void *P, float *C, size_t ldc, int init,
                   const float *bias, const vmask *m, const int R, const int BF16, const int TAIL)
{
    vf c[NR][NV], b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        b[v] = bias ? VLOAD(bias + v * VW) : VZERO();
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            if (init == FROM_BIAS)
                c[r][v] = b[v];
            else {
                c[r][v] = TAIL ? VLOADM(C + r * ldc + v * VW, m[v]) : VLOAD(C + r * ldc + v * VW);
                if (init == FROM_C_AND_BIAS)
                    c[r][v] = VADD(c[r][v], b[v]);
            }
        }
    for (int k = 0; k < K; k++) {
        vf w[NV];
#pragma GCC unroll 4
        for (int h = 0; h < NV / 2; h++) {
            if (BF16) {
                vi d = ILOAD((const uint32_t *)P + (size_t)k * (PW / 2) + h * VW);
                w[2 * h] = LO16(d);
                w[2 * h + 1] = HI16(d);
            } else {
                w[2 * h] = VLOAD((const float *)P + (size_t)k * PW + 2 * h * VW);
                w[2 * h + 1] = VLOAD((const float *)P + (size_t)k * PW + (2 * h + 1) * VW);
            }
            /* Held in registers: otherwise the compiler folds the loads
             * into each row's multiply-add, R times the loads (and the
             * widening). */
            __asm__("" : "+x"(w[2 * h]), "+x"(w[2 * h + 1]));
        }
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            vf a = VBCAST(A + r * lda + k);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                c[r][v] = VFMA(a, w[v], c[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            if (TAIL)
                VSTOREM(C + r * ldc + v * VW, m[v], c[r][v]);
            else
                VSTORE(C + r * ldc + v * VW, c[r][v]);
        }
}

/* tile with its constants picked from the run-time values. */
static void tile_any(int K, const float *A, size_t lda, const void *P, float *C, size_t ldc, int init,
                     const float *bias, int w, int rows, int bf16)
{
    int tail = w < PW;
    vmask m[NV];
    for (int v = 0; v < NV; v++)
        m[v] = lane_mask(w - v * VW);
#define T_CASE(R)                                                                                 \
    case R:                                                                                       \
        if (bf16 && tail)                                                                         \
            tile(K, A, lda, P, C, ldc, init, bias, m, R, 1, 1);                                   \
        else if (bf16)                                                                            \
            tile(K, A, lda, P, C, ldc, init, bias, m, R, 1, 0);                                   \
        else if (tail)                                                                            \
            tile(K, A, lda, P, C, ldc, init, bias, m, R, 0, 1);                                   \
        else                                                                                      \
            tile(K, A, lda, P, C, ldc, init, bias, m, R, 0, 0);                                   \
        break;
    switch (rows) {
        T_CASE(1)
        T_CASE(2)
        T_CASE(3)
        T_CASE(4)
        T_CASE(5)
        T_CASE(6)
    default: SD_ASSERT(0);
    }
#undef T_CASE
}

void gemm_f32_run_batch(const struct gemm_f32 *g, int M, const float *A, size_t ab, size_t lda, float *C,
                        size_t cb, size_t ldc, int accumulate)
{
    int N = g->N, K = g->K, panels = (N + PW - 1) / PW, threads = omp_get_max_threads();
    size_t elem = g->bf16 ? 2 : 4;
    /* Tasks: per matrix, row blocks of MR x groups of panels (at most 256
     * columns each, and enough groups for 4 tasks per thread when rows are
     * few). */
    int nmb = (M + MR - 1) / MR, groups = (panels * PW + 255) / 256;
    if (g->batch * nmb * groups < 4 * threads)
        groups = (4 * threads + g->batch * nmb - 1) / (g->batch * nmb);
    if (groups > panels)
        groups = panels;
    int gp = (panels + groups - 1) / groups; /* panels per group */
    groups = (panels + gp - 1) / gp;
    long per = (long)nmb * groups, ntask = per * g->batch;
    int first = accumulate ? FROM_C_AND_BIAS : FROM_BIAS;
    int kcs = (K + (K + KC - 1) / KC - 1) / ((K + KC - 1) / KC); /* even slices of at most KC */
#pragma omp parallel for schedule(dynamic, 1) if (ntask > 1 && 2.0 * g->batch * M * N * K > 4e6)
    for (long t = 0; t < ntask; t++) {
        int b = (int)(t / per), m0 = (int)(t % per / groups) * MR, p0 = (int)(t % groups) * gp;
        int m1 = m0 + MR < M ? m0 + MR : M, p1 = p0 + gp < panels ? p0 + gp : panels;
        const float *a = A + (size_t)b * ab;
        float *c = C + (size_t)b * cb;
        const char *mat = (const char *)g->p + (size_t)b * g->mat * elem;
        for (int k0 = 0; k0 < K; k0 += kcs) {
            int kc = K - k0 < kcs ? K - k0 : kcs;
            for (int m = m0; m < m1; m += NR) {
                int rows = m1 - m < NR ? m1 - m : NR;
                for (int pn = p0; pn < p1; pn++) {
                    int n = pn * PW, w = N - n < PW ? N - n : PW;
                    const char *pp = mat + ((size_t)pn * panel_elems(K) + (size_t)k0 * PW) * elem;
                    tile_any(kc, a + (size_t)m * lda + k0, lda, pp, c + (size_t)m * ldc + n, ldc,
                             k0 == 0 ? first : FROM_C, g->bias ? g->bias + n : NULL, w, rows, g->bf16);
                }
            }
        }
    }
}

void gemm_f32_run(const struct gemm_f32 *g, int M, const float *A, size_t lda, float *C, size_t ldc,
                  int accumulate)
{
    SD_ASSERT(g->batch == 1);
    gemm_f32_run_batch(g, M, A, 0, lda, C, 0, ldc, accumulate);
}

#else /* below AVX2: callers keep oneDNN (gemm_f32_wanted() == 0) */

int gemm_f32_pack(struct gemm_f32 **out, const float *W, const float *bias, int N, int K, int bf16,
                  struct sd_err *err)
{
    (void)W, (void)bias, (void)N, (void)K, (void)bf16;
    *out = NULL;
    return sd_errf(err, SD_ERR_INTERNAL, "no packed float32 kernels at this level");
}

int gemm_f32_pack_batch(struct gemm_f32 **out, int batch, const float *W, size_t wb, size_t sn, size_t sk,
                        int N, int K, int bf16, struct sd_err *err)
{
    (void)batch, (void)wb, (void)sn, (void)sk;
    return gemm_f32_pack(out, W, NULL, N, K, bf16, err);
}

void gemm_f32_run_batch(const struct gemm_f32 *g, int M, const float *A, size_t ab, size_t lda, float *C,
                        size_t cb, size_t ldc, int accumulate)
{
    (void)g, (void)M, (void)A, (void)ab, (void)lda, (void)C, (void)cb, (void)ldc, (void)accumulate;
    SD_ASSERT(0);
}

void gemm_f32_run(const struct gemm_f32 *g, int M, const float *A, size_t lda, float *C, size_t ldc,
                  int accumulate)
{
    gemm_f32_run_batch(g, M, A, 0, lda, C, 0, ldc, accumulate);
}
#endif

void gemm_f32_free(struct gemm_f32 **g)
{
    if (!*g)
        return;
    big_free((*g)->p, (*g)->bytes);
    free(*g);
    *g = NULL;
}
