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
 * queries x 64 keys, output as 6 queries x 64 channels. Without AVX-512 the same
 * loops run as plain C.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "tensor/attention.h"
#include "tensor/vmath.h"

#define ATT_QB 96  /* queries per task */
#define ATT_NR 6   /* query rows per register block */
#define ATT_KB 128 /* keys per tile */
#define ATT_MAX_DH 4096 /* the VAE's single head is 512 wide */

/* Per-thread scratch, in floats. */
static size_t thread_ws(int dh)
{
    int dhp = (dh + 15) & ~15;
    return (size_t)ATT_QB * ATT_KB   /* s: scores / probabilities */
           + (size_t)ATT_QB * dhp    /* o: output accumulator */
           + 2 * ATT_QB + 32;        /* m, l, alignment slack */
}

/* Keys and values repacked once per call for streaming loads: keys
 * transposed in chunks of 64, kt[b][h][chunk][d][64] (so a 4 x 64 score
 * block reads 256 contiguous bytes per channel, no cache-set aliasing),
 * values as vp[b][h][key][dhp] (contiguous rows). */
static size_t keys_ws(int B, int Nk, int heads, int dh)
{
    size_t nkc = ((size_t)Nk + 63) / 64 * 64, dhp = ((size_t)dh + 15) & ~(size_t)15;
    return (size_t)B * heads * (dh * nkc + (size_t)Nk * dhp) + 32;
}

size_t attention_ws(int B, int Nq, int Nk, int heads, int dh)
{
    (void)Nq;
    return keys_ws(B, Nk, heads, dh) + (size_t)omp_get_max_threads() * thread_ws(dh);
}

#ifdef __AVX512F__
/* Register-blocked kernels (kt rows are ldkt floats apart). NR (rows) and NC (zmm columns) are compile-time
 * constants at every call site (always_inline + literal arguments), so the
 * accumulators live in registers. */
#define ATT_INLINE static inline __attribute__((always_inline))

ATT_INLINE void scores_k(float *s, const float *q, int ldq, const float *kt, int ldkt, int dh,
                         float scale, const int NR, const int NC)
{
    __m512 acc[ATT_NR][4];
#pragma GCC unroll 6
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int d = 0; d < dh; d++) {
        const float *kr = kt + (size_t)d * ldkt;
        __m512 kv[4];
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
            kv[c] = _mm512_loadu_ps(kr + 16 * c);
#pragma GCC unroll 6
        for (int r = 0; r < NR; r++) {
            __m512 qb = _mm512_set1_ps(q[(size_t)r * ldq + d]);
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++)
                acc[r][c] = _mm512_fmadd_ps(qb, kv[c], acc[r][c]);
        }
    }
    __m512 vs = _mm512_set1_ps(scale);
#pragma GCC unroll 6
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
            _mm512_storeu_ps(s + (size_t)r * ATT_KB + 16 * c, _mm512_mul_ps(acc[r][c], vs));
}

/* o[r][0 .. 16*NC) (+)= sum_j p[r][j] v[j][..], the last column masked. */
ATT_INLINE void accum_k(float *o, int ldo, const float *p, const float *v, int ldv, int nj,
                        __mmask16 tail, const int NR, const int NC)
{
    __m512 acc[ATT_NR][4];
#pragma GCC unroll 6
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
            acc[r][c] = _mm512_maskz_loadu_ps(c == NC - 1 ? tail : 0xffff, o + (size_t)r * ldo + 16 * c);
    for (int j = 0; j < nj; j++) {
        const float *vr = v + (size_t)j * ldv;
        __m512 vv[4];
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
            vv[c] = _mm512_maskz_loadu_ps(c == NC - 1 ? tail : 0xffff, vr + 16 * c);
#pragma GCC unroll 6
        for (int r = 0; r < NR; r++) {
            __m512 pb = _mm512_set1_ps(p[(size_t)r * ATT_KB + j]);
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++)
                acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
            _mm512_mask_storeu_ps(o + (size_t)r * ldo + 16 * c, c == NC - 1 ? tail : 0xffff, acc[r][c]);
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

/* s[r][j] = scale * sum_d q[r][d] kt[d][j] for nr <= ATT_NR rows, nj keys
 * (nj a multiple of 16, kt padded with zeros). */
static void scores(float *s, const float *q, int ldq, const float *kt, int ldkt, int dh, int nr,
                   int nj, float scale)
{
#ifdef __AVX512F__
    for (int j0 = 0; j0 < nj; j0 += 64) {
        int nc = (nj - j0) / 16 < 4 ? (nj - j0) / 16 : 4;
        DISPATCH_NR(scores_k, nr, nc, s + j0, q, ldq, kt + j0, ldkt, dh, scale);
    }
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
        DISPATCH_NR(accum_k, nr, nc, o + d0, ldo, p, v + d0, ldv, nj, tail);
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

/* One (batch, head, query block): rows i0 .. i0+rows-1. */
/* kt: this head's keys in transposed chunks of 64 (see keys_ws), zero
 * beyond Nk; v: its values, rows ldv apart. */
static void attend_block(float *out, int ldo, const float *q, int ldq, const float *kt, const float *v,
                         int ldv, int rows, int i0, int Nk, int dh, float scale, int causal, float *ws)
{
    int dhp = (dh + 15) & ~15;
    float *s = ws, *o = s + (size_t)ATT_QB * ATT_KB;
    float *m = o + (size_t)ATT_QB * dhp, *l = m + ATT_QB;
    for (int r = 0; r < rows; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
    }
    memset(o, 0, (size_t)rows * dhp * sizeof(float));
    int kend = causal ? (i0 + rows < Nk ? i0 + rows : Nk) : Nk;
    for (int k0 = 0; k0 < kend; k0 += ATT_KB) {
        int nk = kend - k0 < ATT_KB ? kend - k0 : ATT_KB, nkp = (nk + 15) & ~15;
        for (int c0 = 0; c0 < nkp; c0 += 64) /* one transposed 64-key chunk at a time */
            for (int r = 0; r < rows; r += ATT_NR)
                scores(s + (size_t)r * ATT_KB + c0, q + (size_t)r * ldq, ldq,
                       kt + (size_t)(k0 + c0) * dh, 64, dh, rows - r < ATT_NR ? rows - r : ATT_NR,
                       nkp - c0 < 64 ? nkp - c0 : 64, scale);
        /* online softmax: rescale what was accumulated when the max grows */
        for (int r = 0; r < rows; r++) {
            float *sr = s + (size_t)r * ATT_KB;
            int valid = nk;
            if (causal && k0 + nk > i0 + r + 1)
                valid = i0 + r + 1 - k0 > 0 ? i0 + r + 1 - k0 : 0;
            if (valid == 0) { /* causal: this row sees none of these keys */
                memset(sr, 0, (size_t)nk * sizeof(float));
                continue;
            }
            float mx = vmax(sr, valid), mnew = mx > m[r] ? mx : m[r];
            float corr = expf(m[r] - mnew);
            float sum = vexp_sub_sum(sr, valid, mnew);
            for (int j = valid; j < nk; j++)
                sr[j] = 0;
            l[r] = l[r] * corr + sum;
            m[r] = mnew;
            if (corr != 1.0f)
                for (int d = 0; d < dh; d++)
                    o[(size_t)r * dhp + d] *= corr;
        }
        for (int r = 0; r < rows; r += ATT_NR)
            accumulate(o + (size_t)r * dhp, dhp, s + (size_t)r * ATT_KB, v + (size_t)k0 * ldv, ldv, dh,
                       rows - r < ATT_NR ? rows - r : ATT_NR, nk);
    }
    for (int r = 0; r < rows; r++) {
        float inv = 1.0f / l[r];
        for (int d = 0; d < dh; d++)
            out[(size_t)r * ldo + d] = o[(size_t)r * dhp + d] * inv;
    }
}

void attention_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq, int Nk,
                       int heads, int dh, int ldq, int ldk, int ldv, float scale, int causal, float *ws)
{
    SD_ASSERT(dh <= ATT_MAX_DH);
    int C = heads * dh, nqb = (Nq + ATT_QB - 1) / ATT_QB, nkc = (Nk + 63) / 64;
    int dhp = (dh + 15) & ~15;
    long ntask = (long)B * heads * nqb;
    size_t tws = thread_ws(dh), kt_head = (size_t)nkc * 64 * dh, vp_head = (size_t)Nk * dhp;
    float *kt_all = ws, *vp_all = ws + (size_t)B * heads * kt_head;
    float *tw = ws + keys_ws(B, Nk, heads, dh);
#pragma omp parallel if ((size_t)B * Nq * Nk * heads >= 32768)
    {
#pragma omp for collapse(2) schedule(static)
        for (int bh = 0; bh < B * heads; bh++)
            for (int c = 0; c < nkc; c++) {
                int b = bh / heads, h = bh % heads;
                float *kd = kt_all + bh * kt_head + (size_t)c * 64 * dh;
                for (int j = 0; j < 64; j++) {
                    int key = c * 64 + j;
                    const float *kr = k + ((size_t)b * Nk + key) * ldk + h * dh;
                    for (int d = 0; d < dh; d++)
                        kd[(size_t)d * 64 + j] = key < Nk ? kr[d] : 0.0f;
                    if (key < Nk) {
                        float *vd = vp_all + bh * vp_head + (size_t)key * dhp;
                        memcpy(vd, v + ((size_t)b * Nk + key) * ldv + h * dh, dh * sizeof(float));
                    }
                }
            }
        float *w = tw + (size_t)omp_get_thread_num() * tws;
        w = (float *)(((uintptr_t)w + 63) & ~(uintptr_t)63);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int qb = t % nqb, h = (t / nqb) % heads, b = t / ((long)nqb * heads);
            int i0 = qb * ATT_QB, rows = Nq - i0 < ATT_QB ? Nq - i0 : ATT_QB;
            size_t bh = (size_t)b * heads + h;
            attend_block(out + ((size_t)b * Nq + i0) * C + h * dh, C,
                         q + ((size_t)b * Nq + i0) * ldq + h * dh, ldq, kt_all + bh * kt_head,
                         vp_all + bh * vp_head, dhp, rows, i0, Nk, dh, scale, causal, w);
        }
    }
}
