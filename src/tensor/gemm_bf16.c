/* gemm_bf16.c - see gemm_bf16.h.
 *
 * Loop order per column panel: blocks of KC k pairs (the panel's slice,
 * KC x 64 columns x 4 bytes = 64 KB, stays in L2 while every row block of
 * A passes over it), then blocks of 4 rows of A against the slice, 4 x 4
 * vectors of float32 sums held in registers (bf16_dot.h). 4 rows beat 6
 * and 8 on the Winograd shapes (bench: fewer broadcasts per loaded
 * vector do not pay; the panel, not A, is the stream). */
#include "tensor/gemm_bf16.h"

#include "tensor/bf16_dot.h"
#include "tensor/vmath.h"

#define KC 256 /* k pairs per slice */

#if GEMM_BF16_NATIVE
/* NR rows of A (from a) against kp k pairs of a panel slice (b, w
 * columns wide): NR x NC vectors of C, stored (acc 0) or added to (acc 1). */
static inline __attribute__((always_inline)) void rows(float *c, size_t ldc, const uint16_t *a, size_t lda,
                                                     const uint16_t *b, int w, int kp, int acc,
                                                     const int NR, const int NC)
{
    bf16_dot_block(c, (int)ldc, a, (int)lda, b, 2 * w, kp, 1.0f, acc, NR, NC);
}

#define ROWS_NC(NC)                                                                            \
    do {                                                                                       \
        int m = 0;                                                                             \
        for (; m + 4 <= M; m += 4)                                                             \
            rows(C + m * ldc, ldc, a + m * lda, lda, b, w, kp, acc, 4, NC);                     \
        switch (M - m) {                                                                       \
        case 3: rows(C + m * ldc, ldc, a + m * lda, lda, b, w, kp, acc, 3, NC); break;           \
        case 2: rows(C + m * ldc, ldc, a + m * lda, lda, b, w, kp, acc, 2, NC); break;           \
        case 1: rows(C + m * ldc, ldc, a + m * lda, lda, b, w, kp, acc, 1, NC); break;           \
        }                                                                                      \
    } while (0)

void gemm_bf16_panel(int M, int K, int N, const uint16_t *A, size_t lda, const uint16_t *P, int panel,
                     float *C, size_t ldc)
{
    int n0 = panel * GEMM_BF16_NB, w = N - n0 < GEMM_BF16_NB ? N - n0 : GEMM_BF16_NB;
    const uint16_t *pb = P + (size_t)n0 * K;
    C += n0;
    for (int k2 = 0; k2 < K / 2; k2 += KC) {
        int kp = K / 2 - k2 < KC ? K / 2 - k2 : KC, acc = k2 > 0;
        const uint16_t *a = A + 2 * (size_t)k2, *b = pb + (size_t)k2 * 2 * w;
        switch (w / 16) {
        case 4: ROWS_NC(4); break;
        case 3: ROWS_NC(3); break;
        case 2: ROWS_NC(2); break;
        default: ROWS_NC(1); break;
        }
    }
}
#else
void gemm_bf16_panel(int M, int K, int N, const uint16_t *A, size_t lda, const uint16_t *P, int panel,
                     float *C, size_t ldc)
{
    int n0 = panel * GEMM_BF16_NB, n1 = N - n0 < GEMM_BF16_NB ? N : n0 + GEMM_BF16_NB;
    for (int m = 0; m < M; m++)
        for (int n = n0; n < n1; n++) {
            float s = 0;
            for (int k = 0; k < K; k++)
                s += bf16_to_f32(A[m * lda + k]) * bf16_to_f32(P[gemm_bf16_index(K, N, k, n)]);
            C[m * ldc + n] = s;
        }
}
#endif
