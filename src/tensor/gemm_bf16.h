/* gemm_bf16.h - bf16 matrix products against a pre-packed right operand.
 *
 *   C[M, N] = A[M, K] P        A, P bf16; C float32 (float32 accumulation)
 *
 * P is the right operand [K, N] packed once (at load) into the kernel's
 * layout: column panels of GEMM_BF16_NB columns, each panel K/2 rows of
 * (column, k pair) so that one 64-byte load gives 16 columns x 2 k values,
 * the operand AVX512-BF16's dot-product instruction takes, and a panel is
 * read front to back. The Winograd convolution's 16 products per chunk
 * (winograd.c) use it in bf16: their weights are fixed and their row
 * counts small (32 to 1024 tiles), where oneDNN 2.6's batched bf16 matmul,
 * which repacks its right operand at every call, reached 210-400 GFLOP/s
 * and this kernel 330-430 on the same shapes (bench, 2 threads).
 *
 * K even and N a multiple of 16 (SD's channel counts are multiples of
 * 16). Without AVX512-BF16 the same function runs a plain loop over the
 * same layout (correct, slow: callers prefer oneDNN there,
 * GEMM_BF16_NATIVE is 0).
 * Single-threaded: callers split the work into column panels.
 */
#ifndef SD_GEMM_BF16_H
#define SD_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __AVX512BF16__
#define GEMM_BF16_NATIVE 1
#else
#define GEMM_BF16_NATIVE 0
#endif

/* Outside the kernel builds: whether the level in use has the native
 * kernel (kernels.c). */
int gemm_bf16_native(void);

/* Columns per panel: 4 vectors of 16, the kernel's register block. */
#define GEMM_BF16_NB 64

/* Index of element (k, n) of a K x N operand in the packed layout (the
 * packed operand holds exactly K * N elements). */
static inline size_t gemm_bf16_index(int K, int N, int k, int n)
{
    int n0 = n / GEMM_BF16_NB * GEMM_BF16_NB;
    int w = N - n0 < GEMM_BF16_NB ? N - n0 : GEMM_BF16_NB;
    return (size_t)n0 * K + ((size_t)(k / 2) * w + (n - n0)) * 2 + (k & 1);
}

/* Column panels of an N-column operand. */
static inline int gemm_bf16_panels(int N) { return (N + GEMM_BF16_NB - 1) / GEMM_BF16_NB; }

/* C[0..M, panel's columns] = A P for one column panel (0 <= panel <
 * gemm_bf16_panels(N)); A rows lda elements apart, C rows ldc apart. */
void gemm_bf16_panel(int M, int K, int N, const uint16_t *A, size_t lda, const uint16_t *P, int panel,
                     float *C, size_t ldc);

#endif
