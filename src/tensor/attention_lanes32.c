/* attention_lanes32.c - float32 attention with the queries in the vector lanes.
 *
 * The float32 (and wide) backends' kernel for attention without a causal
 * mask: every UNet and VAE attention. The transposed problem, as the bf16
 * kernel in attention_lanes.c:
 *
 *   S^T[j][q] = sum_d K[j][d] Q^T[d][q]     (keys in rows, queries in lanes)
 *   O^T[d][q] += sum_j V[j][d] P^T[j][q]
 *
 * Why, against attention.c's row kernel (a query row's scores along a
 * vector): the softmax runs over keys, which are rows here, so the running
 * maximum and sum are element-wise vector ops (no horizontal reductions,
 * no scalar loop per row), the maximum is taken from the score registers
 * before they are stored, and a head size like SD 1.5's 40 costs no
 * padding (channels are broadcast scalars, not vector columns: the row
 * kernel computes 48 or 64 lanes for 40). Keys and values are read where
 * they lie (rows ldk / ldv apart, broadcast one float at a time), so
 * nothing is repacked; only a block's queries are transposed, with the
 * scale folded in.
 *
 * One task is (batch, head, group of up to GMAX blocks of QB queries),
 * walking the keys in tiles of KB with the online softmax (running max m
 * and sum l per block, O^T rescaled when m grows); every block of the
 * group takes its turn on a tile while the tile is in the cache. Groups
 * of 4 where a head's keys and values pass 256 KB (SD 1.5's 1024 and
 * 4096-token self-attention), measured on Zen 5, one thread, interleaved
 * A/B, rows 3C apart: avx2 1.10-1.12x at 4096 tokens, 1.03-1.12x at 1024;
 * avx512 1.02x and 1.0x. Register blocks: AVX-512, 8 keys (or channels)
 * x 2 zmm of queries (16 sums); AVX2, 6 x 2 ymm (12 sums + 2 operands +
 * the broadcast in 16 registers). Measured against 8 x 3 zmm and 4 x 3
 * ymm: as fast on 1024-4096 queries, 1.2-1.5x on SD's 64-256 (fewer
 * padded lanes in a task of 64 or 32 queries). Below AVX2 attention.c's
 * plain loops serve (attention_lanes32_ok says which).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "tensor/attention.h"
#include "tensor/vmath.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define L32 1
#define VW 16 /* floats per vector */
#define NJ 8  /* keys (scores) or channels (output) per register block */
typedef __m512 vf;
#define VLOAD _mm512_load_ps
#define VSTORE _mm512_store_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps
#define VFMA _mm512_fmadd_ps
#define VMAX _mm512_max_ps
#define VMUL _mm512_mul_ps
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VSCALE2(p, n) _mm512_scalef_ps(p, n)
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define L32 1
#define VW 8
#define NJ 6
typedef __m256 vf;
#define VLOAD _mm256_load_ps
#define VSTORE _mm256_store_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps
#define VFMA _mm256_fmadd_ps
#define VMAX _mm256_max_ps
#define VMUL _mm256_mul_ps
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VSCALE2(p, n) _mm256_mul_ps(p, v8_pow2n(n))
#endif

#ifdef L32
#define NQ 2             /* query vectors per register block */
#define QB (2 * NQ * VW) /* queries per task: two register blocks (64 or 32) */
#define KB 128          /* keys per tile */
#define GMAX 4          /* query blocks per group (task) */

int attention_lanes32_ok(void) { return 1; }

/* Per thread, in floats: scores / probabilities [KB][QB]; per query
 * block of the group, O^T and Q^T [dh][QB], m and l; the tile's max and
 * the correction; alignment slack. */
static size_t thread_floats(int dh)
{
    return (size_t)KB * QB + GMAX * (2 * (size_t)dh * QB + 2 * QB) + 2 * QB + 16;
}

size_t attention_lanes32_ws(int dh)
{
    return (size_t)omp_get_max_threads() * thread_floats(dh) + 16;
}

#define L_INLINE static inline __attribute__((always_inline))

/* 2^x for x <= 0 (scores are in base-2 units: the queries carry
 * scale * log2(e)), to float32 accuracy: 2^n times a degree-6 polynomial
 * for 2^f, f = x - n in [-0.5, 0.5] (relative error 1.6e-8 before
 * rounding). Cheaper than v_exp: no range reduction by ln 2, which
 * matters because the exponentials are a fifth of this kernel's time.
 * x is clamped at -115: 2^-115, never a subnormal (V_EXP_MIN, vmath.h). */
L_INLINE vf exp2_neg(vf x)
{
    x = VMAX(x, VSET1(-115.0f));
    vf n = VROUND(x), f = VSUB(x, n);
    vf p = VSET1(1.5345809515565634e-4f);
    p = VFMA(p, f, VSET1(1.3399930903688073e-3f));
    p = VFMA(p, f, VSET1(9.618489071726799e-3f));
    p = VFMA(p, f, VSET1(5.550328642129898e-2f));
    p = VFMA(p, f, VSET1(0.24022646248340607f));
    p = VFMA(p, f, VSET1(0.6931471824645996f));
    p = VFMA(p, f, VSET1(1.0f));
    return VSCALE2(p, n);
}

/* c[r][q] (= or += when acc) sum_i a[i][q] b[r*brs + i*bis], for NR rows r
 * and the NQ vectors of queries at a and c (rows QB floats apart), over n
 * terms i. With mx: mx[q] = max(mx[q], c[r][q]) over the NR rows. Scores:
 * a = Q^T, b = keys (brs = ldk, bis = 1). Output: a = P^T, b = values
 * (brs = 1, bis = ldv). */
L_INLINE void lmm(float *c, const float *a, const float *b, int brs, int bis, int n, const int acc,
                  float *mx, const int NR)
{
    vf t[NJ][NQ];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NQ; v++)
            t[r][v] = acc ? VLOAD(c + (size_t)r * QB + v * VW) : VZERO();
    /* Unrolled: 3-7% faster at AVX2 on the 256-4096-token shapes (one
     * thread, interleaved A/B), as fast at AVX-512. */
#pragma GCC unroll 4
    for (int i = 0; i < n; i++) {
        vf av[NQ];
#pragma GCC unroll 3
        for (int v = 0; v < NQ; v++) {
            av[v] = VLOAD(a + (size_t)i * QB + v * VW);
            /* Held in a register: otherwise the compiler folds the load
             * into each of the NR multiply-adds, NR times the loads. */
            __asm__("" : "+x"(av[v]));
        }
        const float *bi = b + (size_t)i * bis;
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            vf bb = VSET1(bi[(size_t)r * brs]);
#pragma GCC unroll 3
            for (int v = 0; v < NQ; v++)
                t[r][v] = VFMA(av[v], bb, t[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NQ; v++)
            VSTORE(c + (size_t)r * QB + v * VW, t[r][v]);
    if (mx)
#pragma GCC unroll 3
        for (int v = 0; v < NQ; v++) {
            vf m = VLOAD(mx + v * VW);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++)
                m = VMAX(m, t[r][v]);
            VSTORE(mx + v * VW, m);
        }
}

/* lmm with NR = nr (1 .. NJ) made a constant. */
static void lmm_n(float *c, const float *a, const float *b, int brs, int bis, int n, int acc, float *mx,
                  int nr)
{
#define L_CASE(R)                                                                                 \
    case R:                                                                                       \
        if (acc)                                                                                  \
            lmm(c, a, b, brs, bis, n, 1, mx, R);                                                  \
        else                                                                                      \
            lmm(c, a, b, brs, bis, n, 0, mx, R);                                                  \
        break;
    switch (nr) {
        L_CASE(1)
        L_CASE(2)
        L_CASE(3)
        L_CASE(4)
        L_CASE(5)
        L_CASE(6)
#if NJ == 8
        L_CASE(7)
        L_CASE(8)
#endif
    default: SD_ASSERT(0);
    }
#undef L_CASE
}

/* In-place transpose of an 8 x 8 block held as 8 rows of 8 floats. */
L_INLINE void tr8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* qt[d][q] = q[q][d] * sl for q < rows, d < dh (rows QB floats apart in qt,
 * ldq apart in q); whole 8 x 8 blocks by tr8, the edges one by one. */
static void load_qt(float *qt, const float *q, int ldq, int rows, int dh, float sl)
{
    int r8 = rows & ~7, d8 = dh & ~7;
    __m256 vs = _mm256_set1_ps(sl);
    for (int q0 = 0; q0 < r8; q0 += 8)
        for (int d0 = 0; d0 < d8; d0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_ps(q + (size_t)(q0 + i) * ldq + d0);
            tr8(r);
            for (int i = 0; i < 8; i++)
                _mm256_storeu_ps(qt + (size_t)(d0 + i) * QB + q0, _mm256_mul_ps(r[i], vs));
        }
    for (int d = 0; d < dh; d++) {
        float *qd = qt + (size_t)d * QB;
        for (int i = d < d8 ? r8 : 0; i < rows; i++)
            qd[i] = q[(size_t)i * ldq + d] * sl;
        for (int i = rows; i < QB; i++)
            qd[i] = 0;
    }
}

/* o[q][d] = ot[d][q] * inv[q] for q < rows, d < dh (the reverse of load_qt). */
static void store_out(float *o, int ldo, const float *ot, const float *inv, int rows, int dh)
{
    int r8 = rows & ~7, d8 = dh & ~7;
    for (int q0 = 0; q0 < r8; q0 += 8)
        for (int d0 = 0; d0 < d8; d0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_ps(ot + (size_t)(d0 + i) * QB + q0);
            tr8(r);
            for (int i = 0; i < 8; i++)
                _mm256_storeu_ps(o + (size_t)(q0 + i) * ldo + d0,
                                 _mm256_mul_ps(r[i], _mm256_set1_ps(inv[q0 + i])));
        }
    for (int i = 0; i < rows; i++)
        for (int d = i < r8 ? d8 : 0; d < dh; d++)
            o[(size_t)i * ldo + d] = ot[(size_t)d * QB + i] * inv[i];
}

struct l32_job {
    float *out;
    int ldo;
    const float *q, *k, *v; /* first query row, the head's first key and value rows */
    int ldq, ldk, ldv;
    int rows, Nk, dh;       /* rows: queries in the group (up to G * QB) */
    float scale;
};

/* One query block's running state. */
struct l32_qb {
    float *ot, *qt, *m, *l;
    int rows; /* queries in the block (QB but for the last) */
};

/* Tile [k0, k0 + nk) of the keys for one query block: scores, the online
 * softmax's rescale, probabilities, O^T += P^T V. */
static void tile(const struct l32_job *a, const struct l32_qb *b, float *s, float *mx, float *corr, int k0,
                 int nk)
{
    int dh = a->dh;
    float *m = b->m, *l = b->l, *ot = b->ot;
    memcpy(mx, m, QB * sizeof(float));
    for (int j = 0; j < nk; j += NJ)
        for (int h = 0; h < QB; h += NQ * VW)
            lmm_n(s + (size_t)j * QB + h, b->qt + h, a->k + (size_t)(k0 + j) * a->ldk, a->ldk, 1, dh, 0,
                  mx + h, nk - j < NJ ? nk - j : NJ);
    /* mx is the new running max: where it grew, what came before is
     * scaled by 2^(m_old - m_new) (0 at the first tile, m_old = -inf,
     * where l and O^T are still 0). */
    int grew = 0;
    for (int c = 0; c < QB; c += VW) {
        vf mo = VLOAD(m + c), mn = VLOAD(mx + c), cr = exp2_neg(VSUB(mo, mn));
        for (int i = 0; i < VW; i++)
            grew |= mx[c + i] > m[c + i];
        VSTORE(corr + c, cr);
        VSTORE(l + c, VMUL(VLOAD(l + c), cr));
        VSTORE(m + c, mn);
    }
    if (grew && k0 > 0)
        for (int d = 0; d < dh; d++)
            for (int c = 0; c < QB; c += VW) {
                float *o = ot + (size_t)d * QB + c;
                VSTORE(o, VMUL(VLOAD(o), VLOAD(corr + c)));
            }
    /* Probabilities in place of the scores; l += their sums. */
    for (int c = 0; c < QB; c += VW) {
        vf mc = VLOAD(m + c), sum = VZERO();
        for (int j = 0; j < nk; j++) {
            float *sj = s + (size_t)j * QB + c;
            vf e = exp2_neg(VSUB(VLOAD(sj), mc));
            VSTORE(sj, e);
            sum = VADD(sum, e);
        }
        VSTORE(l + c, VADD(VLOAD(l + c), sum));
    }
    for (int d0 = 0; d0 < dh; d0 += NJ)
        for (int h = 0; h < QB; h += NQ * VW)
            lmm_n(ot + (size_t)d0 * QB + h, s + h, a->v + (size_t)k0 * a->ldv + d0, 1, a->ldv, nk, 1, NULL,
                  dh - d0 < NJ ? dh - d0 : NJ);
}

/* A group of up to GMAX query blocks walks the keys together, so each
 * tile of keys and values is used by every block of the group while it
 * is in the cache (the head's keys and values are read from memory once
 * per group, not once per block). */
static void attend(const struct l32_job *a, float *ws)
{
    int dh = a->dh, G = (a->rows + QB - 1) / QB;
    float *s = ws, *mx = s + (size_t)KB * QB, *corr = mx + QB, *p = corr + QB;
    struct l32_qb b[GMAX];
    float sl = a->scale * 1.44269504088896341f;
    for (int g = 0; g < G; g++) {
        b[g] = (struct l32_qb){.ot = p, .qt = p + (size_t)dh * QB, .m = p + 2 * (size_t)dh * QB,
                               .l = p + 2 * (size_t)dh * QB + QB,
                               .rows = a->rows - g * QB < QB ? a->rows - g * QB : QB};
        p += 2 * (size_t)dh * QB + 2 * QB;
        /* Q^T * scale * log2(e), zero past the block's rows. */
        load_qt(b[g].qt, a->q + (size_t)g * QB * a->ldq, a->ldq, b[g].rows, dh, sl);
        memset(b[g].ot, 0, (size_t)dh * QB * sizeof(float));
        for (int q = 0; q < QB; q++) {
            b[g].m[q] = -INFINITY;
            b[g].l[q] = 0;
        }
    }
    for (int k0 = 0; k0 < a->Nk; k0 += KB) {
        int nk = a->Nk - k0 < KB ? a->Nk - k0 : KB;
        for (int g = 0; g < G; g++)
            tile(a, &b[g], s, mx, corr, k0, nk);
    }
    for (int g = 0; g < G; g++) {
        for (int q = 0; q < b[g].rows; q++)
            corr[q] = 1.0f / b[g].l[q];
        store_out(a->out + (size_t)g * QB * a->ldo, a->ldo, b[g].ot, corr, b[g].rows, dh);
    }
}

void attention_lanes32_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                               int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, float *ws)
{
    int C = heads * dh, nqb = (Nq + QB - 1) / QB;
    /* Groups of G blocks where the head's keys and values outgrow a
     * quarter of a core's L2 (smaller ones stay in it between blocks),
     * while that leaves 4 tasks a thread. */
    int G = (size_t)Nk * dh * 2 * sizeof(float) > (256u << 10) ? GMAX : 1;
    while (G > 1 && (long)B * heads * ((nqb + G - 1) / G) < 4L * omp_get_max_threads())
        G--;
    int ngr = (nqb + G - 1) / G, GQ = G * QB;
    long ntask = (long)B * heads * ngr;
    size_t tf = thread_floats(dh);
#pragma omp parallel if ((size_t)B * Nq * Nk * heads >= 32768)
    {
        float *w = ws + (size_t)omp_get_thread_num() * tf;
        w = (float *)(((uintptr_t)w + 63) & ~(uintptr_t)63);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int qg = t % ngr, h = (t / ngr) % heads, b = t / ((long)ngr * heads), i0 = qg * GQ;
            struct l32_job job = {
                .out = out + ((size_t)b * Nq + i0) * C + h * dh, .ldo = C,
                .q = q + ((size_t)b * Nq + i0) * ldq + h * dh, .ldq = ldq,
                .k = k + (size_t)b * Nk * ldk + h * dh, .ldk = ldk,
                .v = v + (size_t)b * Nk * ldv + h * dh, .ldv = ldv,
                .rows = Nq - i0 < GQ ? Nq - i0 : GQ, .Nk = Nk, .dh = dh, .scale = scale,
            };
            attend(&job, w);
        }
    }
}

#else /* below AVX2: attention.c keeps its row kernel */

int attention_lanes32_ok(void) { return 0; }

size_t attention_lanes32_ws(int dh)
{
    (void)dh;
    return 0;
}

void attention_lanes32_forward(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                               int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, float *ws)
{
    (void)out, (void)q, (void)k, (void)v, (void)B, (void)Nq, (void)Nk, (void)heads, (void)dh;
    (void)ldq, (void)ldk, (void)ldv, (void)scale, (void)ws;
    SD_ASSERT(0);
}
#endif
