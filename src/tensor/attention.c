/* attention.c - fused multi-head attention for the fast CPU backend.
 *
 * softmax(q k^T * scale) v without ever holding a whole score matrix: each
 * task takes one (batch, head, block of ATT_QB queries) and walks the keys
 * in blocks of ATT_KB with an online softmax (running row maximum m and
 * sum l, the output rescaled when m grows), the flash-attention scheme.
 * Per thread that is a 96 x 128 score tile and a 96 x head_dim
 * accumulator, in L1/L2; keys and values are repacked once for all tasks.
 *
 * The two products are register-blocked AVX-512 kernels: scores as 6
 * queries x 64 keys, output as 6 queries x 64 channels. The bf16 variant
 * (the bf16 backend) does the same products with AVX512-BF16 dot
 * products on bf16-rounded queries, keys, values and probabilities, with
 * float32 accumulation and softmax. With AVX2 (no AVX-512) the float32
 * products are 6 queries x 16 keys (or channels) of 8-wide FMAs, the most
 * 16 registers hold; below that the loops run as C.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define ATT_AVX2 1 /* the avx2 kernels: 8-wide, 16 ymm registers */
#endif

#include "tensor/attention.h"
#include "tensor/bf16_dot.h"
#include "tensor/vmath.h"

#define ATT_QB 96  /* queries per task */
#define ATT_NR 6   /* query rows per register block */
#define ATT_KB 128 /* keys per tile */
#define ATT_MAX_DH 4096 /* the VAE's single head is 512 wide */

/* Per-thread scratch, in floats. */
static size_t thread_ws(int dh)
{
    int dhp = (dh + 15) & ~15, dh2 = (dh + 1) / 2;
    return (size_t)ATT_QB * ATT_KB      /* s: scores / probabilities */
           + (size_t)ATT_QB * dhp       /* o: output accumulator */
           + 2 * ATT_QB                 /* m, l */
           + (size_t)ATT_QB * dh2       /* q16: the query block in bf16 pairs */
           + (size_t)ATT_QB * ATT_KB / 2 /* p16: probabilities in bf16 */
           + 32;                        /* alignment slack */
}

/* Keys and values are repacked once per call for streaming loads.
 * float32: keys transposed in chunks of 64, kt[b][h][chunk][d][64] (a score
 * block reads 256 contiguous bytes per channel, no cache-set aliasing);
 * values vp[b][h][key][dhp] (contiguous rows).
 * bf16: the same with channel pairs (keys) or key pairs (values) side by
 * side, the operand layout of the AVX512-BF16 dot product:
 * kt[b][h][chunk][dh/2][64][2], vp[b][h][key/2][dhp][2]. */
static size_t kt_head_floats(int Nk, int dh, int bf16)
{
    size_t nkc = ((size_t)Nk + 63) / 64 * 64;
    return bf16 ? nkc * ((dh + 1) / 2) : nkc * dh; /* bf16: 2 values per float slot */
}

static size_t vp_head_floats(int Nk, int dh, int bf16)
{
    size_t dhp = ((size_t)dh + 15) & ~(size_t)15;
    return bf16 ? ((size_t)Nk + 1) / 2 * dhp : (size_t)Nk * dhp;
}

static size_t keys_ws(int B, int Nk, int heads, int dh, int bf16)
{
    return (size_t)B * heads * (kt_head_floats(Nk, dh, bf16) + vp_head_floats(Nk, dh, bf16)) + 32;
}

size_t attention_ws(int B, int Nq, int Nk, int heads, int dh)
{
    (void)Nq;
    size_t rows = keys_ws(B, Nk, heads, dh, 0) + (size_t)omp_get_max_threads() * thread_ws(dh);
    size_t lanes = attention_lanes32_ws(dh);
    return rows > lanes ? rows : lanes;
}

size_t attention_ws_bf16(int B, int Nq, int Nk, int heads, int dh)
{
    (void)Nq;
    size_t rows = keys_ws(B, Nk, heads, dh, 1) + (size_t)omp_get_max_threads() * thread_ws(dh);
    size_t lanes = attention_lanes_ws(B, Nk, heads, dh);
    return rows > lanes ? rows : lanes;
}

#ifdef __AVX512F__
/* Register-blocked kernels (kt rows are ldkt floats apart). NR (rows) and NC (zmm columns) are compile-time
 * constants at every call site (always_inline + literal arguments), so the
 * accumulators live in registers. */
#define ATT_INLINE static inline __attribute__((always_inline))

/* C[r][0 .. 16*NC) = scale * sum_i A[r][i] B[i][..] (acc = 0), or
 * C[r][..] += sum_i A[r][i] B[i][..] (acc = 1), for NR rows of A (lda
 * apart) and k rows of B (ldb apart); the last 16-column block is masked
 * by tail. Scores are QK^T (acc = 0), the output update is PV (acc = 1). */
ATT_INLINE void mm_k(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int k,
                     float scale, __mmask16 tail, const int acc, const int NR, const int NC)
{
    __m512 t[ATT_NR][4];
#pragma GCC unroll 6
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NC; j++)
            t[r][j] = acc ? _mm512_maskz_loadu_ps(j == NC - 1 ? tail : 0xffff, c + (size_t)r * ldc + 16 * j)
                          : _mm512_setzero_ps();
    for (int i = 0; i < k; i++) {
        const float *br = b + (size_t)i * ldb;
        __m512 bv[4];
#pragma GCC unroll 4
        for (int j = 0; j < NC; j++)
            bv[j] = _mm512_maskz_loadu_ps(j == NC - 1 ? tail : 0xffff, br + 16 * j);
#pragma GCC unroll 6
        for (int r = 0; r < NR; r++) {
            __m512 ab = _mm512_set1_ps(a[(size_t)r * lda + i]);
#pragma GCC unroll 4
            for (int j = 0; j < NC; j++)
                t[r][j] = _mm512_fmadd_ps(ab, bv[j], t[r][j]);
        }
    }
    __m512 vs = _mm512_set1_ps(scale);
#pragma GCC unroll 6
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NC; j++)
            _mm512_mask_storeu_ps(c + (size_t)r * ldc + 16 * j, j == NC - 1 ? tail : 0xffff,
                                  acc ? t[r][j] : _mm512_mul_ps(t[r][j], vs));
}

#define DISPATCH_NC(F, nc, ...)                                                                   \
    switch (nc) {                                                                                 \
    case 1: F(__VA_ARGS__, 1); break;                                                             \
    case 2: F(__VA_ARGS__, 2); break;                                                             \
    case 3: F(__VA_ARGS__, 3); break;                                                             \
    default: F(__VA_ARGS__, 4); break;                                                            \
    }
#define DISPATCH_NR(F, nr, nc, ...)                                                               \
    do {                                                                                          \
        switch (nr) {                                                                             \
        case 6: DISPATCH_NC(F, nc, __VA_ARGS__, 6) break;                                         \
        case 5: DISPATCH_NC(F, nc, __VA_ARGS__, 5) break;                                         \
        case 4: DISPATCH_NC(F, nc, __VA_ARGS__, 4) break;                                         \
        case 3: DISPATCH_NC(F, nc, __VA_ARGS__, 3) break;                                         \
        case 2: DISPATCH_NC(F, nc, __VA_ARGS__, 2) break;                                         \
        default: DISPATCH_NC(F, nc, __VA_ARGS__, 1) break;                                        \
        }                                                                                         \
    } while (0)
#endif

#ifdef ATT_AVX2
#define ATT_INLINE static inline __attribute__((always_inline))

/* A lane mask for the first n (1..8) of 8 floats. */
static inline __m256i mask8(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* mm_k with 8-wide vectors: NR rows x NC (1..2) vectors; the last vector
 * masked by tail (a lane mask). */
ATT_INLINE void mm8_k(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int k,
                      float scale, __m256i tail, const int acc, const int NR, const int NC)
{
    __m256i full = _mm256_set1_epi32(-1);
    __m256 t[ATT_NR][2];
#pragma GCC unroll 6
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 2
        for (int j = 0; j < NC; j++)
            t[r][j] = acc ? _mm256_maskload_ps(c + (size_t)r * ldc + 8 * j, j == NC - 1 ? tail : full)
                          : _mm256_setzero_ps();
    for (int i = 0; i < k; i++) {
        const float *br = b + (size_t)i * ldb;
        __m256 bv[2];
#pragma GCC unroll 2
        for (int j = 0; j < NC; j++)
            bv[j] = _mm256_maskload_ps(br + 8 * j, j == NC - 1 ? tail : full);
#pragma GCC unroll 6
        for (int r = 0; r < NR; r++) {
            __m256 ab = _mm256_broadcast_ss(a + (size_t)r * lda + i);
#pragma GCC unroll 2
            for (int j = 0; j < NC; j++)
                t[r][j] = _mm256_fmadd_ps(ab, bv[j], t[r][j]);
        }
    }
    __m256 vs = _mm256_set1_ps(scale);
#pragma GCC unroll 6
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 2
        for (int j = 0; j < NC; j++)
            _mm256_maskstore_ps(c + (size_t)r * ldc + 8 * j, j == NC - 1 ? tail : full,
                                acc ? t[r][j] : _mm256_mul_ps(t[r][j], vs));
}

#define DISPATCH8_NC(F, nc, ...)                                                                  \
    switch (nc) {                                                                                 \
    case 1: F(__VA_ARGS__, 1); break;                                                             \
    default: F(__VA_ARGS__, 2); break;                                                            \
    }
#define DISPATCH8_NR(F, nr, nc, ...)                                                              \
    do {                                                                                          \
        switch (nr) {                                                                             \
        case 6: DISPATCH8_NC(F, nc, __VA_ARGS__, 6) break;                                        \
        case 5: DISPATCH8_NC(F, nc, __VA_ARGS__, 5) break;                                        \
        case 4: DISPATCH8_NC(F, nc, __VA_ARGS__, 4) break;                                        \
        case 3: DISPATCH8_NC(F, nc, __VA_ARGS__, 3) break;                                        \
        case 2: DISPATCH8_NC(F, nc, __VA_ARGS__, 2) break;                                        \
        default: DISPATCH8_NC(F, nc, __VA_ARGS__, 1) break;                                       \
        }                                                                                         \
    } while (0)
#endif

/* s[r][j] = scale * sum_d q[r][d] kt[d][j] for nr <= ATT_NR rows, nj keys
 * (nj a multiple of 16, kt padded with zeros). */
static void scores(float *s, const float *q, int ldq, const float *kt, int ldkt, int dh, int nr,
                   int nj, float scale)
{
#ifdef __AVX512F__
    for (int j0 = 0; j0 < nj; j0 += 64) {
        int nc = (nj - j0) / 16 < 4 ? (nj - j0) / 16 : 4;
        DISPATCH_NR(mm_k, nr, nc, s + j0, ATT_KB, q, ldq, kt + j0, ldkt, dh, scale, 0xffff, 0);
    }
#elif defined(ATT_AVX2)
    __m256i full = _mm256_set1_epi32(-1);
    for (int j0 = 0; j0 < nj; j0 += 16)
        DISPATCH8_NR(mm8_k, nr, 2, s + j0, ATT_KB, q, ldq, kt + j0, ldkt, dh, scale, full, 0);
#else
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nj; j++) {
            float a = 0;
            for (int d = 0; d < dh; d++)
                a += q[(size_t)r * ldq + d] * kt[(size_t)d * ldkt + j];
            s[(size_t)r * ATT_KB + j] = a * scale;
        }
#endif
}

/* o[r][:dh] += sum_j p[r][j] v[j][:dh] for nr <= ATT_NR rows, nj keys. */
static void accumulate(float *o, int ldo, const float *p, const float *v, int ldv, int dh, int nr,
                       int nj)
{
#ifdef __AVX512F__
    for (int d0 = 0; d0 < dh; d0 += 64) {
        int w = dh - d0 < 64 ? dh - d0 : 64, nc = (w + 15) / 16;
        __mmask16 tail = w % 16 ? (__mmask16)((1u << (w % 16)) - 1) : 0xffff;
        DISPATCH_NR(mm_k, nr, nc, o + d0, ldo, p, ATT_KB, v + d0, ldv, nj, 1.0f, tail, 1);
    }
#elif defined(ATT_AVX2)
    for (int d0 = 0; d0 < dh; d0 += 16) {
        int w = dh - d0 < 16 ? dh - d0 : 16, nc = (w + 7) / 8;
        __m256i tail = mask8(w % 8 ? w % 8 : 8);
        DISPATCH8_NR(mm8_k, nr, nc, o + d0, ldo, p, ATT_KB, v + d0, ldv, nj, 1.0f, tail, 1);
    }
#else
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nj; j++) {
            float pj = p[(size_t)r * ATT_KB + j];
            for (int d = 0; d < dh; d++)
                o[(size_t)r * ldo + d] += pj * v[(size_t)j * ldv + d];
        }
#endif
}

/* bf16 products: bf16_dot_block (bf16_dot.h) with A = query or
 * probability rows, B = kt16 (one 64-key chunk [dh2][64][2]) or vp16
 * ([nk2][dhp][2]). */
#ifdef __AVX512BF16__
#define mm16_k bf16_dot_block
#endif

static void scores16(float *s, const uint16_t *q16, int ldq16, const uint16_t *kt16, int dh2, int nr,
                     int nj, float scale)
{
#ifdef __AVX512BF16__
    int nc = nj / 16;
    DISPATCH_NR(mm16_k, nr, nc, s, ATT_KB, q16, ldq16, kt16, 128, dh2, scale, 0);
#else
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nj; j++) {
            float a = 0;
            for (int p = 0; p < 2 * dh2; p++)
                a += bf16_to_f32(q16[(size_t)r * ldq16 + p]) *
                     bf16_to_f32(kt16[((size_t)(p / 2) * 64 + j) * 2 + p % 2]);
            s[(size_t)r * ATT_KB + j] = a * scale;
        }
#endif
}

static void accumulate16(float *o, int ldo, const uint16_t *p16, const uint16_t *vp16, int dhp, int nr,
                         int nk2)
{
#ifdef __AVX512BF16__
    for (int d0 = 0; d0 < dhp; d0 += 64) {
        int nc = (dhp - d0 < 64 ? dhp - d0 : 64) / 16;
        DISPATCH_NR(mm16_k, nr, nc, o + d0, ldo, p16, ATT_KB, vp16 + (size_t)d0 * 2, 2 * dhp, nk2, 1.0f, 1);
    }
#else
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < 2 * nk2; j++) {
            float pj = bf16_to_f32(p16[(size_t)r * ATT_KB + j]);
            for (int d = 0; d < dhp; d++)
                o[(size_t)r * ldo + d] += pj * bf16_to_f32(vp16[((size_t)(j / 2) * dhp + d) * 2 + j % 2]);
        }
#endif
}

/* exp(x[i] - m) for i < valid, written as bf16 to p16 (zero up to npad);
 * returns the sum. The cheaper exp is exact enough for bf16 results. */
static float exp_sum_bf16(const float *x, uint16_t *p16, int valid, int npad, float m)
{
    int i = 0;
    float sum = 0;
#ifdef __AVX512BF16__
    __m512 acc = _mm512_setzero_ps(), vm = _mm512_set1_ps(m);
    for (; i + 16 <= valid; i += 16) {
        __m512 e = v_exp_bf16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm256_storeu_si256((__m256i *)(p16 + i), (__m256i)_mm512_cvtneps_pbh(e));
        acc = _mm512_add_ps(acc, e);
    }
    sum = _mm512_reduce_add_ps(acc);
#endif
    for (; i < valid; i++) {
        float e = expf(x[i] - m);
        p16[i] = bf16_round(e);
        sum += e;
    }
    for (; i < npad; i++)
        p16[i] = 0;
    return sum;
}

/* The online-softmax update for one key block: s holds rows x nk scores;
 * they become the probabilities exp(s - m_new) (0 where the causal mask
 * hides a key): in place, or as bf16 into p16 (padded to npad) when p16 is
 * given. The running max m and sum l advance and the output o so far is
 * rescaled. */
static void online_softmax(float *s, uint16_t *p16, int npad, float *o, int dhp, float *m, float *l,
                           int rows, int i0, int k0, int nk, int causal)
{
    for (int r = 0; r < rows; r++) {
        float *sr = s + (size_t)r * ATT_KB;
        int valid = nk;
        if (causal && k0 + nk > i0 + r + 1)
            valid = i0 + r + 1 - k0 > 0 ? i0 + r + 1 - k0 : 0;
        if (valid == 0) { /* causal: this row sees none of these keys */
            if (p16)
                memset(p16 + (size_t)r * ATT_KB, 0, (size_t)npad * sizeof(uint16_t));
            else
                memset(sr, 0, (size_t)nk * sizeof(float));
            continue;
        }
        float mx = vmax(sr, valid), mnew = mx > m[r] ? mx : m[r];
        /* Once the row's maximum has been seen (most blocks), no rescaling:
         * skipping the scalar expf(0) is 5% of the bf16 kernel. */
        float corr = mx > m[r] ? expf(m[r] - mnew) : 1.0f, sum;
        if (p16) {
            sum = exp_sum_bf16(sr, p16 + (size_t)r * ATT_KB, valid, npad, mnew);
        } else {
            sum = vexp_sub_sum(sr, valid, mnew);
            for (int j = valid; j < nk; j++)
                sr[j] = 0;
        }
        l[r] = l[r] * corr + sum;
        m[r] = mnew;
        if (corr != 1.0f)
            for (int d = 0; d < dhp; d++)
                o[(size_t)r * dhp + d] *= corr;
    }
}

/* What attend_block needs about one head and one query block. */
struct att_job {
    float *out;
    int ldo;
    const float *q;       /* first query row, rows ldq apart */
    int ldq;
    const void *kt, *vp;  /* the head's packed keys and values (see keys_ws) */
    int rows, i0, Nk, dh;
    float scale;
    int causal, bf16;
};

/* One (batch, head, query block): rows i0 .. i0+rows-1. */
static void attend_block(const struct att_job *a, float *ws)
{
    int dh = a->dh, dhp = (dh + 15) & ~15, dh2 = (dh + 1) / 2, rows = a->rows;
    float *s = ws, *o = s + (size_t)ATT_QB * ATT_KB;
    float *m = o + (size_t)ATT_QB * dhp, *l = m + ATT_QB;
    uint16_t *q16 = (uint16_t *)(l + ATT_QB), *p16 = q16 + (size_t)ATT_QB * dh2 * 2;
    for (int r = 0; r < rows; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
    }
    memset(o, 0, (size_t)rows * dhp * sizeof(float));
    if (a->bf16)
        for (int r = 0; r < rows; r++)
            to_bf16_row(q16 + (size_t)r * dh2 * 2, a->q + (size_t)r * a->ldq, dh, dh2 * 2);
    int Nk = a->Nk, kend = a->causal ? (a->i0 + rows < Nk ? a->i0 + rows : Nk) : Nk;
    for (int k0 = 0; k0 < kend; k0 += ATT_KB) {
        int nk = kend - k0 < ATT_KB ? kend - k0 : ATT_KB, nkp = (nk + 15) & ~15;
        for (int c0 = 0; c0 < nkp; c0 += 64) { /* one packed 64-key chunk at a time */
            int nj = nkp - c0 < 64 ? nkp - c0 : 64;
            for (int r = 0; r < rows; r += ATT_NR) {
                int nr = rows - r < ATT_NR ? rows - r : ATT_NR;
                if (a->bf16)
                    scores16(s + (size_t)r * ATT_KB + c0, q16 + (size_t)r * dh2 * 2, dh2 * 2,
                             (const uint16_t *)a->kt + (size_t)(k0 + c0) * dh2 * 2, dh2, nr, nj,
                             a->scale);
                else
                    scores(s + (size_t)r * ATT_KB + c0, a->q + (size_t)r * a->ldq, a->ldq,
                           (const float *)a->kt + (size_t)(k0 + c0) * dh, 64, dh, nr, nj, a->scale);
            }
        }
        int nk2 = (nk + 1) / 2;
        online_softmax(s, a->bf16 ? p16 : NULL, nk2 * 2, o, dhp, m, l, rows, a->i0, k0, nk, a->causal);
        for (int r = 0; r < rows; r += ATT_NR) {
            int nr = rows - r < ATT_NR ? rows - r : ATT_NR;
            if (a->bf16) {
                accumulate16(o + (size_t)r * dhp, dhp, p16 + (size_t)r * ATT_KB,
                             (const uint16_t *)a->vp + (size_t)k0 * dhp, dhp, nr, nk2);
            } else {
                accumulate(o + (size_t)r * dhp, dhp, s + (size_t)r * ATT_KB,
                           (const float *)a->vp + (size_t)k0 * dhp, dhp, dh, nr, nk);
            }
        }
    }
    for (int r = 0; r < rows; r++) {
        float inv = 1.0f / l[r];
        for (int d = 0; d < dh; d++)
            a->out[(size_t)r * a->ldo + d] = o[(size_t)r * dhp + d] * inv;
    }
}

/* Pack one head's keys (chunk c of 64) and values for the kernels. */
static void pack_chunk(void *kt, void *vp, const float *k, const float *v, int ldk, int ldv, int Nk,
                       int dh, int c, int bf16)
{
    int dhp = (dh + 15) & ~15, dh2 = (dh + 1) / 2;
    for (int j = 0; j < 64; j++) {
        int key = c * 64 + j;
        const float *kr = k + (size_t)key * ldk, *vr = v + (size_t)key * ldv;
        if (!bf16) {
            float *kd = (float *)kt + (size_t)c * 64 * dh;
            for (int d = 0; d < dh; d++)
                kd[(size_t)d * 64 + j] = key < Nk ? kr[d] : 0.0f;
            if (key < Nk)
                memcpy((float *)vp + (size_t)key * dhp, vr, dh * sizeof(float));
            continue;
        }
        uint16_t *kd = (uint16_t *)kt + (size_t)c * 64 * dh2 * 2;
        for (int d = 0; d < 2 * dh2; d++)
            kd[((size_t)(d / 2) * 64 + j) * 2 + d % 2] = key < Nk && d < dh ? bf16_round(kr[d]) : 0;
        if (key % 2 == 0 && key < Nk) { /* values: key pairs side by side */
            uint16_t *vd = (uint16_t *)vp + (size_t)(key / 2) * dhp * 2;
            for (int d = 0; d < dhp; d++) {
                vd[2 * d] = d < dh ? bf16_round(vr[d]) : 0;
                vd[2 * d + 1] = d < dh && key + 1 < Nk ? bf16_round(vr[ldv + d]) : 0;
            }
        }
    }
}

static void attention_run(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                          int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, int causal,
                          float *ws, int bf16)
{
    SD_ASSERT(dh <= ATT_MAX_DH);
    int C = heads * dh, nqb = (Nq + ATT_QB - 1) / ATT_QB, nkc = (Nk + 63) / 64;
    long ntask = (long)B * heads * nqb;
    size_t tws = thread_ws(dh), kt_head = kt_head_floats(Nk, dh, bf16),
           vp_head = vp_head_floats(Nk, dh, bf16);
    float *kt_all = ws, *vp_all = ws + (size_t)B * heads * kt_head;
    float *tw = ws + keys_ws(B, Nk, heads, dh, bf16);
#pragma omp parallel if ((size_t)B * Nq * Nk * heads >= 32768)
    {
#pragma omp for collapse(2) schedule(static)
        for (int bh = 0; bh < B * heads; bh++)
            for (int c = 0; c < nkc; c++) {
                int b = bh / heads, h = bh % heads;
                pack_chunk(kt_all + bh * kt_head, vp_all + bh * vp_head,
                           k + (size_t)b * Nk * ldk + h * dh, v + (size_t)b * Nk * ldv + h * dh, ldk,
                           ldv, Nk, dh, c, bf16);
            }
        float *w = tw + (size_t)omp_get_thread_num() * tws;
        w = (float *)(((uintptr_t)w + 63) & ~(uintptr_t)63);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int qb = t % nqb, h = (t / nqb) % heads, b = t / ((long)nqb * heads);
            int i0 = qb * ATT_QB;
            size_t bh = (size_t)b * heads + h;
            struct att_job job = {
                .out = out + ((size_t)b * Nq + i0) * C + h * dh, .ldo = C,
                .q = q + ((size_t)b * Nq + i0) * ldq + h * dh, .ldq = ldq,
                .kt = kt_all + bh * kt_head, .vp = vp_all + bh * vp_head,
                .rows = Nq - i0 < ATT_QB ? Nq - i0 : ATT_QB, .i0 = i0, .Nk = Nk, .dh = dh,
                .scale = scale, .causal = causal, .bf16 = bf16,
            };
            attend_block(&job, w);
        }
    }
}

/* DIFFUSIOND_ATTN_LANES=0 keeps non-causal attention on the row kernels
 * above (for comparisons and their tests). */
static int lanes_enabled(void)
{
    const char *e = getenv("DIFFUSIOND_ATTN_LANES");
    return !(e && !strcmp(e, "0"));
}

void attention_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq, int Nk,
                       int heads, int dh, int ldq, int ldk, int ldv, float scale, int causal, float *ws)
{
    if (!causal && attention_lanes32_ok() && lanes_enabled()) {
        attention_lanes32_forward(out, q, k, v, B, Nq, Nk, heads, dh, ldq, ldk, ldv, scale, ws);
        return;
    }
    attention_run(out, q, k, v, B, Nq, Nk, heads, dh, ldq, ldk, ldv, scale, causal, ws, 0);
}

void attention_forward_bf16(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                            int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, int causal,
                            float *ws)
{
#ifdef __AVX512BF16__
    if (!causal && dh <= ATTENTION_LANES_MAX_DH && lanes_enabled()) {
        attention_lanes_forward(out, q, k, v, B, Nq, Nk, heads, dh, ldq, ldk, ldv, scale, ws);
        return;
    }
#endif
    attention_run(out, q, k, v, B, Nq, Nk, heads, dh, ldq, ldk, ldv, scale, causal, ws, 1);
}
