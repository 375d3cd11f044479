/* bf16_dot.h - the register-blocked AVX512-BF16 product both attention
 * kernels (attention.c, attention_lanes.c) are built on.
 *
 * C[r][0 .. 16*NC) = scale * sum_i A[r][pair i] . B[i][..]     (acc = 0)
 * C[r][0 .. 16*NC) +=         sum_i A[r][pair i] . B[i][..]     (acc = 1)
 *
 * for NR <= 8 rows of A (lda bf16 apart: row r holds its k2 pairs side
 * by side, each broadcast) and k2 rows of B (ldb bf16 apart: row i holds
 * the i-th pair of each of the 16*NC columns). C rows are ldc floats
 * apart; float32 accumulation. NR and NC must be compile-time constants
 * at the call site (always_inline), so the NR x NC accumulators stay in
 * registers: NR * NC <= 24 leaves room for the B vectors.
 */
#ifndef SD_BF16_DOT_H
#define SD_BF16_DOT_H

#ifdef __AVX512BF16__
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

static inline __attribute__((always_inline)) void
bf16_dot_block(float *c, int ldc, const uint16_t *a, int lda, const uint16_t *b, int ldb, int k2,
               float scale, const int acc, const int NR, const int NC)
{
    __m512 t[8][4];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NC; j++)
            t[r][j] = acc ? _mm512_loadu_ps(c + (size_t)r * ldc + 16 * j) : _mm512_setzero_ps();
    for (int i = 0; i < k2; i++) {
        const uint16_t *br = b + (size_t)i * ldb;
        __m512i bv[4];
#pragma GCC unroll 4
        for (int j = 0; j < NC; j++)
            bv[j] = _mm512_loadu_si512((const void *)(br + 32 * j));
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            uint32_t pair;
            memcpy(&pair, a + (size_t)r * lda + 2 * i, 4);
            __m512i ab = _mm512_set1_epi32((int)pair);
#pragma GCC unroll 4
            for (int j = 0; j < NC; j++)
                t[r][j] = _mm512_dpbf16_ps(t[r][j], (__m512bh)bv[j], (__m512bh)ab);
        }
    }
    __m512 vs = _mm512_set1_ps(scale);
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NC; j++)
            _mm512_storeu_ps(c + (size_t)r * ldc + 16 * j, acc ? t[r][j] : _mm512_mul_ps(t[r][j], vs));
}
#endif

#endif
