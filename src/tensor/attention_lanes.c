/* attention_lanes.c - bf16 attention with the queries in the vector lanes.
 *
 * The bf16 backend's kernel for attention without a causal mask (every
 * UNet and VAE attention). attention.c's kernels hold a query row's scores
 * along a vector; here each zmm lane is one query, the transposed problem:
 *
 *   S^T[j][q] = sum_d K[j][d] Q[q][d]      (keys in rows, queries in lanes)
 *   O^T[d][q] += sum_j V^T[d][j] P^T[j][q]
 *
 * Why: the softmax runs over keys, which are now rows, so the row maximum
 * and sum are element-wise vector ops on whole registers (no horizontal
 * reductions, no scalar per-row loop), the maximum is taken while the
 * score kernel stores its tile, and a head size like 40 costs no padding
 * (channels are broadcast scalars, not vector columns; attention.c pads
 * 40 to 48 lanes in its PV product). AVX512-BF16 dot products take pairs
 * along the reduced dimension, which is why Q^T, P^T are held as pairs:
 * q2t[d/2][q][2] (channel pairs) and p2[j/2][q][2] (key pairs), while a row
 * of K and a row of V^T already hold their pairs side by side.
 *
 * One task is (batch, head, block of LQ_QB = 96 queries), walking the keys
 * in tiles of LQ_KB with the online softmax (running max m, sum l, O^T
 * rescaled when m grows), as in attention.c. Products are bf16 with
 * float32 accumulation; softmax and output in float32.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "tensor/attention.h"
#include "tensor/bf16_dot.h"
#include "tensor/vmath.h"

#ifdef __AVX512BF16__
#include <immintrin.h>

#define LQ_QB 96 /* queries per task: 6 zmm of lanes */
#define LQ_NQ 6
#define LQ_KB 128 /* keys per tile (even) */
#define LQ_NJ 8   /* keys per score register block (lanes_mm's 8 rows) */
#define LQ_ND 8   /* channels per output register block (the same) */

static int pad8(int dh) { return (dh + 7) & ~7; }
static int pad_keys(int Nk) { return (Nk + LQ_NJ - 1) / LQ_NJ * LQ_NJ; }

/* Per head: K as bf16 rows [nkp][dh8], V^T as bf16 rows [dh8][nkp]; both
 * zero-padded. In floats (two bf16 per float). */
static size_t head_floats(int Nk, int dh) { return (size_t)pad_keys(Nk) * pad8(dh); }

static size_t thread_floats(int dh)
{
    int dh8 = pad8(dh);
    return (size_t)LQ_KB * LQ_QB         /* s: score tile [KB][QB] */
           + (size_t)LQ_KB / 2 * LQ_QB   /* p2: probabilities [KB/2][QB][2] bf16 */
           + (size_t)dh8 * LQ_QB         /* ot: output accumulator [dh8][QB] */
           + (size_t)dh8 / 2 * LQ_QB     /* q2t: queries [dh8/2][QB][2] bf16 */
           + (size_t)dh8 / 2 * LQ_QB     /* stage: queries [QB][dh8] bf16 */
           + 4 * LQ_QB                   /* m, l, block max, correction */
           + 16;                         /* alignment slack */
}

size_t attention_lanes_ws(int B, int Nk, int heads, int dh)
{
    return (size_t)B * heads * head_floats(Nk, dh) + 16 +
           (size_t)omp_get_max_threads() * thread_floats(dh);
}

#define LQ_INLINE static inline __attribute__((always_inline))

/* Both products, for 8 rows r of c and NC zmm of queries from c0:
 * c[r][q] (= 0 first, or += when acc) sum_i a[i][q] . b[r][2i, 2i+1] over
 * n pairs i; a holds LQ_QB query pairs per i ([n][QB][2]) and is the
 * vector operand of bf16_dot_block, b's rows (ldb bf16 apart) are
 * broadcast. Scores: a = q2t, b = keys, c = s. Output: a = p2,
 * b = values^T, c = o^T. */
LQ_INLINE void lanes_mm(float *c, const uint16_t *a, const uint16_t *b, int ldb, int n, int c0, int acc,
                        const int NC)
{
    bf16_dot_block(c + 16 * c0, LQ_QB, b, ldb, a + 32 * c0, LQ_QB * 2, n, 1.0f, acc, 8, NC);
}

/* Scores of 8 keys (rows of k, dh8 apart) for all queries, and mx =
 * max(mx, s[r]) over the first nv (valid) of them. */
static void score_block(float *s, const uint16_t *q2t, const uint16_t *k, int dh8, float *mx, int nv)
{
    lanes_mm(s, q2t, k, dh8, dh8 / 2, 0, 0, 3);
    lanes_mm(s, q2t, k, dh8, dh8 / 2, 3, 0, 3);
    for (int c = 0; c < LQ_NQ; c++) {
        __m512 m = _mm512_load_ps(mx + 16 * c);
        for (int r = 0; r < LQ_NJ && r < nv; r++)
            m = _mm512_max_ps(m, _mm512_load_ps(s + (size_t)r * LQ_QB + 16 * c));
        _mm512_store_ps(mx + 16 * c, m);
    }
}

/* 2^x for x <= 0: a cubic on the fraction (minimax on [-0.5, 0.5],
 * relative error < 8e-5; the probabilities are rounded to bf16, 2^-9,
 * and l sums the same values, so the weights stay consistent). x is
 * clamped at -115: 2^-115 rather than a subnormal (see V_EXP_MIN in
 * vmath.h); x must not be NaN. */
LQ_INLINE __m512 exp2_neg(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-115.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(0.055171628f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24261117f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.69326103f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.99992806f));
    return _mm512_scalef_ps(p, n);
}

/* What one task needs. */
struct lq_job {
    void *out; /* float32, or bf16 when out16 */
    int ldo, out16;
    const void *q; /* first query row, rows ldq apart: float32, or bf16 when q16 */
    int ldq, q16;
    const uint16_t *k, *vt; /* the head's packed keys [nkp][dh8], values^T [dh8][nkp] */
    int rows, Nk, nkp, dh, dh8;
    float sl; /* scale * log2(e): scores -> base-2 exponents */
};

/* Gather indices 0, k, 2k, ..., 15k (elements k apart). */
static inline __m512i lane_offsets(int k)
{
    return _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                              _mm512_set1_epi32(k));
}

/* Row j of src (rows ld elements apart; float32, or bf16 when src16) as
 * bf16, dh values zero-padded to dh8. */
static void row_bf16(uint16_t *dst, const void *src, int ld, int j, int src16, int dh, int dh8)
{
    if (src16) {
        memcpy(dst, (const uint16_t *)src + (size_t)j * ld, dh * sizeof(uint16_t));
        memset(dst + dh, 0, (dh8 - dh) * sizeof(uint16_t));
    } else {
        to_bf16_row(dst, (const float *)src + (size_t)j * ld, dh, dh8);
    }
}

/* Queries -> q2t[d/2][q][2] in bf16, zero-padded to LQ_QB queries and dh8.
 * Two passes: the rows into stage [QB][dh8] (contiguous stores), then
 * 16 queries' pair i gathered into one store. Converting a row and
 * scattering its pairs straight into q2t cost 40% of a cross-attention
 * with 77 keys: each row's loads waited behind the previous row's 32
 * scattered stores. */
static void pack_queries(uint16_t *q2t, uint16_t *stage, const struct lq_job *a)
{
    int dh8 = a->dh8, np = dh8 / 2;
    for (int q = 0; q < a->rows; q++)
        row_bf16(stage + (size_t)q * dh8, a->q, a->ldq, q, a->q16, a->dh, dh8);
    if (a->rows < LQ_QB)
        memset(stage + (size_t)a->rows * dh8, 0, (size_t)(LQ_QB - a->rows) * dh8 * sizeof(uint16_t));
    const __m512i rows = lane_offsets(np);
    for (int i = 0; i < np; i++)
        for (int q0 = 0; q0 < LQ_QB; q0 += 16) {
            __m512i v = _mm512_i32gather_epi32(rows, stage + (size_t)q0 * dh8 + 2 * i, 4);
            _mm512_store_si512((void *)(q2t + ((size_t)i * LQ_QB + q0) * 2), v);
        }
}

/* out rows = O^T / l: 16 channels of one query gathered per store (in
 * bf16 when out16: the input of the product that follows). */
static void store_output(const struct lq_job *a, const float *ot, const float *l)
{
    const __m512i chans = lane_offsets(LQ_QB);
    for (int q = 0; q < a->rows; q++) {
        __m512 inv = _mm512_set1_ps(1.0f / l[q]);
        for (int d0 = 0; d0 < a->dh; d0 += 16) {
            __mmask16 t = a->dh - d0 >= 16 ? 0xffff : (__mmask16)((1u << (a->dh - d0)) - 1);
            __m512 v = _mm512_mul_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), t, chans,
                                                              ot + (size_t)d0 * LQ_QB + q, 4),
                                     inv);
            if (a->out16)
                _mm256_mask_storeu_epi16((uint16_t *)a->out + (size_t)q * a->ldo + d0, t,
                                         (__m256i)_mm512_cvtneps_pbh(v));
            else
                _mm512_mask_storeu_ps((float *)a->out + (size_t)q * a->ldo + d0, t, v);
        }
    }
}

/* Probabilities of one tile of nk keys (s holds their scores): p2 =
 * exp2(s * sl - m * sl) as key pairs in bf16 (0 beyond nk), l += their sums. */
static void tile_softmax(uint16_t *p2, const float *s, int nk, const float *m, float *l, float sl)
{
    const __m512i il = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                        23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512 vsl = _mm512_set1_ps(sl);
    for (int c = 0; c < LQ_NQ; c++) {
        __m512 off = _mm512_mul_ps(_mm512_load_ps(m + 16 * c), vsl), sum = _mm512_setzero_ps();
        for (int j = 0; j < nk; j += 2) {
            __m512 e0 = exp2_neg(_mm512_fmsub_ps(_mm512_load_ps(s + (size_t)j * LQ_QB + 16 * c), vsl, off));
            __m512 e1 = j + 1 < nk ? exp2_neg(_mm512_fmsub_ps(
                                         _mm512_load_ps(s + (size_t)(j + 1) * LQ_QB + 16 * c), vsl, off))
                                   : _mm512_setzero_ps();
            sum = _mm512_add_ps(sum, _mm512_add_ps(e0, e1));
            __m512i pair = _mm512_permutexvar_epi16(il, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
            _mm512_store_si512((void *)(p2 + (size_t)(j / 2) * LQ_QB * 2 + 32 * c), pair);
        }
        _mm512_store_ps(l + 16 * c, _mm512_add_ps(_mm512_load_ps(l + 16 * c), sum));
    }
}

static void attend_task(const struct lq_job *a, float *ws)
{
    int dh8 = a->dh8;
    float *s = ws, *ot = s + (size_t)LQ_KB * LQ_QB;
    uint16_t *p2 = (uint16_t *)(ot + (size_t)dh8 * LQ_QB);
    uint16_t *q2t = p2 + (size_t)LQ_KB * LQ_QB;
    uint16_t *stage = q2t + (size_t)dh8 * LQ_QB;
    float *m = (float *)(stage + (size_t)dh8 * LQ_QB), *l = m + LQ_QB, *mx = l + LQ_QB,
          *corr = mx + LQ_QB;
    pack_queries(q2t, stage, a);
    memset(ot, 0, (size_t)dh8 * LQ_QB * sizeof(float));
    for (int i = 0; i < LQ_QB; i++) {
        m[i] = -INFINITY;
        l[i] = 0;
    }
    for (int k0 = 0; k0 < a->Nk; k0 += LQ_KB) {
        int nk = a->Nk - k0 < LQ_KB ? a->Nk - k0 : LQ_KB;
        memcpy(mx, m, LQ_QB * sizeof(float));
        for (int j = 0; j < nk; j += LQ_NJ)
            score_block(s + (size_t)j * LQ_QB, q2t, a->k + (size_t)(k0 + j) * dh8, dh8, mx, nk - j);
        /* mx is the new running max; rescale what came before when it grew. */
        int grew = 0;
        for (int c = 0; c < LQ_NQ; c++) {
            __m512 mo = _mm512_load_ps(m + 16 * c), mn = _mm512_load_ps(mx + 16 * c);
            /* Exactly 1 where the max held; else 2^((m_old - m_new) sl), clamped
             * (m_old = -inf at the first tile, where l and O^T are still 0). The
             * same factor scales l and O^T, so its rounding cancels. */
            __mmask16 up = _mm512_cmp_ps_mask(mn, mo, _CMP_GT_OQ);
            __m512 x = _mm512_max_ps(_mm512_mul_ps(_mm512_sub_ps(mo, mn), _mm512_set1_ps(a->sl)),
                                     _mm512_set1_ps(-126.0f));
            __m512 cr = _mm512_mask_blend_ps(up, _mm512_set1_ps(1.0f), exp2_neg(x));
            grew |= up != 0;
            _mm512_store_ps(corr + 16 * c, cr);
            _mm512_store_ps(l + 16 * c, _mm512_mul_ps(_mm512_load_ps(l + 16 * c), cr));
            _mm512_store_ps(m + 16 * c, mn);
        }
        if (grew && k0 > 0)
            for (int d = 0; d < dh8; d++)
                for (int c = 0; c < LQ_NQ; c++) {
                    float *o = ot + (size_t)d * LQ_QB + 16 * c;
                    _mm512_store_ps(o, _mm512_mul_ps(_mm512_load_ps(o), _mm512_load_ps(corr + 16 * c)));
                }
        tile_softmax(p2, s, nk, m, l, a->sl);
        int np = (nk + 1) / 2;
        const uint16_t *vt = a->vt + k0;
        for (int d0 = 0; d0 < dh8; d0 += LQ_ND) {
            lanes_mm(ot + (size_t)d0 * LQ_QB, p2, vt + (size_t)d0 * a->nkp, a->nkp, np, 0, 1, 3);
            lanes_mm(ot + (size_t)d0 * LQ_QB, p2, vt + (size_t)d0 * a->nkp, a->nkp, np, 3, 1, 3);
        }
    }
    store_output(a, ot, l);
}

/* Keys j0 .. j1-1 (a multiple of 8 apart; rows from Nk on are zero) of
 * one head into K [nkp][dh8] and V^T [dh8][nkp], bf16. */
static void pack_keys(uint16_t *kp, uint16_t *vt, const void *k, const void *v, int kv16, int ldk,
                      int ldv, int Nk, int nkp, int dh, int dh8, int j0, int j1)
{
    uint16_t vr[8][ATTENTION_LANES_MAX_DH];
    for (int j8 = j0; j8 < j1; j8 += 8) {
        for (int j = j8; j < j8 + 8; j++) {
            if (j < Nk) {
                row_bf16(kp + (size_t)j * dh8, k, ldk, j, kv16, dh, dh8);
                row_bf16(vr[j - j8], v, ldv, j, kv16, dh, dh8);
            } else {
                memset(kp + (size_t)j * dh8, 0, (size_t)dh8 * sizeof(uint16_t));
                memset(vr[j - j8], 0, (size_t)dh8 * sizeof(uint16_t));
            }
        }
        for (int d = 0; d < dh8; d++) { /* 8 keys of channel d: one 16-byte store */
            uint16_t *dst = vt + (size_t)d * nkp + j8;
            for (int t = 0; t < 8; t++)
                dst[t] = vr[t][d];
        }
    }
}

void attention_lanes_forward_ex(const struct attention_io *io, int B, int Nq, int Nk, int heads, int dh,
                                int ldq, int ldk, int ldv, float scale, float *ws)
{
    size_t qs = io->q16 ? 2 : 4, ks = io->kv16 ? 2 : 4, os = io->out16 ? 2 : 4; /* element sizes */
    const char *q = io->q, *k = io->k, *v = io->v;
    char *out = io->out;
    int C = heads * dh, dh8 = pad8(dh), nkp = pad_keys(Nk), nqb = (Nq + LQ_QB - 1) / LQ_QB;
    int nkc = (nkp + 63) / 64;
    size_t hf = head_floats(Nk, dh);
    float *heads_ws = (float *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    float *tw = heads_ws + (size_t)B * heads * hf;
    long ntask = (long)B * heads * nqb;
#pragma omp parallel
    {
#pragma omp for collapse(2) schedule(static)
        for (int bh = 0; bh < B * heads; bh++)
            for (int c = 0; c < nkc; c++) {
                int b = bh / heads, h = bh % heads;
                uint16_t *kp = (uint16_t *)(heads_ws + (size_t)bh * hf);
                pack_keys(kp, kp + (size_t)nkp * dh8, k + ((size_t)b * Nk * ldk + h * dh) * ks,
                          v + ((size_t)b * Nk * ldv + h * dh) * ks, io->kv16, ldk, ldv, Nk, nkp, dh,
                          dh8, c * 64, (c + 1) * 64 < nkp ? (c + 1) * 64 : nkp);
            }
        float *w = tw + (size_t)omp_get_thread_num() * thread_floats(dh);
        w = (float *)(((uintptr_t)w + 63) & ~(uintptr_t)63);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int qb = t % nqb, h = (t / nqb) % heads, b = t / ((long)nqb * heads), i0 = qb * LQ_QB;
            const uint16_t *kp = (const uint16_t *)(heads_ws + ((size_t)b * heads + h) * hf);
            struct lq_job job = {
                .out = out + (((size_t)b * Nq + i0) * C + h * dh) * os, .ldo = C, .out16 = io->out16,
                .q = q + (((size_t)b * Nq + i0) * ldq + h * dh) * qs, .ldq = ldq, .q16 = io->q16,
                .k = kp, .vt = kp + (size_t)nkp * dh8,
                .rows = Nq - i0 < LQ_QB ? Nq - i0 : LQ_QB, .Nk = Nk, .nkp = nkp, .dh = dh, .dh8 = dh8,
                .sl = scale * 1.44269504088896341f,
            };
            attend_task(&job, w);
        }
    }
}

void attention_lanes_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                             int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, float *ws)
{
    struct attention_io io = {.out = out, .q = q, .k = k, .v = v};
    attention_lanes_forward_ex(&io, B, Nq, Nk, heads, dh, ldq, ldk, ldv, scale, ws);
}

#else /* no AVX512-BF16: attention.c never calls these */

void attention_lanes_forward_ex(const struct attention_io *io, int B, int Nq, int Nk, int heads, int dh,
                                int ldq, int ldk, int ldv, float scale, float *ws)
{
    (void)io, (void)B, (void)Nq, (void)Nk, (void)heads, (void)dh, (void)ldq, (void)ldk, (void)ldv;
    (void)scale, (void)ws;
    SD_ASSERT(0);
}

size_t attention_lanes_ws(int B, int Nk, int heads, int dh)
{
    (void)B, (void)Nk, (void)heads, (void)dh;
    return 0;
}

void attention_lanes_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                             int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, float *ws)
{
    (void)out, (void)q, (void)k, (void)v, (void)B, (void)Nq, (void)Nk, (void)heads, (void)dh;
    (void)ldq, (void)ldk, (void)ldv, (void)scale, (void)ws;
    SD_ASSERT(0);
}
#endif
