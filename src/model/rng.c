/* rng.c - see rng.h. The algorithms follow PyTorch's CPU generator
 * (MT19937RNGEngine.h, DistributionTemplates.h, avx_mathfun.h) as described
 * in sd-reference.md section 7; written from that description.
 *
 * Compile with -ffp-contract=off: the float arithmetic below reproduces a
 * specific sequence of roundings; every fused multiply-add is an explicit
 * fmaf() and the compiler must not add others.
 */
#include "model/rng.h"

#include <math.h>
#include <string.h>

/* c10::pi<double> */
#define PI_F64 3.14159265358979323846

/* ------------------------------------------------------------------------ */
/* MT19937 engine                                                            */

void tgen_seed(struct torch_gen *g, uint64_t seed)
{
    g->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (int j = 1; j < TGEN_STATE_N; j++)
        g->mt[j] = 1812433253u * (g->mt[j - 1] ^ (g->mt[j - 1] >> 30)) + (uint32_t)j;
    g->left = 1;
    g->next = 0;
    g->has_cached = 0;
    g->cached = 0.0;
}

/* Regenerate all 624 words in place (the standard MT19937 twist). */
static void mt_twist(struct torch_gen *g)
{
    uint32_t *s = g->mt;
    for (int k = 0; k < TGEN_STATE_N; k++) {
        uint32_t next = s[(k + 1) % TGEN_STATE_N];
        uint32_t y = (s[k] & 0x80000000u) | (next & 0x7fffffffu);
        s[k] = s[(k + 397) % TGEN_STATE_N] ^ (y >> 1) ^ ((next & 1u) ? 0x9908b0dfu : 0u);
    }
    g->left = TGEN_STATE_N;
    g->next = 0;
}

uint32_t tgen_random(struct torch_gen *g)
{
    if (--g->left == 0)
        mt_twist(g);
    uint32_t y = g->mt[g->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t tgen_random64(struct torch_gen *g)
{
    uint64_t hi = tgen_random(g);
    uint64_t lo = tgen_random(g);
    return (hi << 32) | lo;
}

/* float32 uniform in [0, 1): the low 24 bits of one draw (exact). */
static float uniform_f32(struct torch_gen *g)
{
    return (float)(tgen_random(g) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* float64 uniform in [0, 1): the low 53 bits of random64(). */
static double uniform_f64(struct torch_gen *g)
{
    return (double)(tgen_random64(g) & ((UINT64_C(1) << 53) - 1)) * 0x1p-53;
}

void tgen_rand(struct torch_gen *g, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = uniform_f32(g);
}

/* ------------------------------------------------------------------------ */
/* The AVX2 kernel's polynomial log and sincos (Cephes style), one lane.     */

static float bits_to_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Natural log for x in (0, 1], as log256_ps evaluates it with FMA
 * contraction (sd-reference.md 7.3.1). */
static float avx2_logf(float x)
{
    x = fmaxf(x, 1.17549435e-38f);
    uint32_t b = f_to_bits(x);
    int e_int = (int)(b >> 23) - 127;
    x = bits_to_f((b & ~0x7f800000u) | f_to_bits(0.5f)); /* mantissa in [0.5, 1) */
    float e = (float)e_int + 1.0f;
    float tmp = x < 0.707106781186547524f ? x : 0.0f;
    e = e - (x < 0.707106781186547524f ? 1.0f : 0.0f);
    x = x - 1.0f;
    x = x + tmp;
    float z = x * x;

    static const float c[] = {
        -1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f,
        1.4249322787e-1f, -1.6668057665e-1f, 2.0000714765e-1f,
        -2.4999993993e-1f, 3.3333331174e-1f,
    };
    float y = 7.0376836292e-2f;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        y = fmaf(y, x, c[i]);
    y = y * x;
    y = fmaf(y, z, e * -2.12194440e-4f);
    y = fmaf(-z, 0.5f, y);
    return fmaf(e, 0.693359375f, x + y);
}

/* sin and cos of t >= 0, as sincos256_ps evaluates them (7.3.1). */
static void avx2_sincosf(float t, float *s_out, float *c_out)
{
    float x = fabsf(t);
    int sign_sin = (f_to_bits(t) >> 31) != 0;
    int j = (int)(x * 1.27323954473516f); /* 4/pi; truncation */
    j = (j + 1) & ~1;
    float y = (float)j;
    int swap_sin = (j & 4) != 0;
    int poly_is_sin = (j & 2) == 0;
    int sign_cos = ((~(j - 2)) & 4) != 0;

    /* extended precision modular arithmetic: x - y * pi/4 */
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    float z = x * x;

    float c = 2.443315711809948e-5f;
    c = fmaf(c, z, -1.388731625493765e-3f);
    c = fmaf(c, z, 4.166664568298827e-2f);
    c = c * z;
    c = fmaf(c, z, -(z * 0.5f));
    c = c + 1.0f;

    float p = -1.9515295891e-4f;
    p = fmaf(p, z, 8.3321608736e-3f);
    p = fmaf(p, z, -1.6666654611e-1f);
    p = p * z;
    p = fmaf(p, x, x);

    float sn = poly_is_sin ? p : c;
    float cs = poly_is_sin ? c : p;
    if (sign_sin ^ swap_sin)
        sn = -sn;
    if (sign_cos)
        cs = -cs;
    *s_out = sn;
    *c_out = cs;
}

/* Box-Muller on one block of 16 uniforms: pairs j and j + 8. */
static void normal_block16(float *d)
{
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float r = sqrtf(-2.0f * avx2_logf(u1));
        float theta = 6.2831855f * u2;
        float sn, cs;
        avx2_sincosf(theta, &sn, &cs);
        /* the kernel's trailing "* std + mean" (1 and 0) is exact */
        d[j] = r * cs;
        d[j + 8] = r * sn;
    }
}

/* ------------------------------------------------------------------------ */
/* The small-tensor path: double Box-Muller with a cached second value.      */

static double normal_f64_cached(struct torch_gen *g)
{
    if (g->has_cached) {
        g->has_cached = 0;
        return g->cached;
    }
    double u1 = uniform_f64(g);
    double u2 = uniform_f64(g);
    double r = sqrt(-2.0 * log1p(-u2)); /* note: u2 feeds the radius */
    double theta = 2.0 * PI_F64 * u1;
    g->cached = r * sin(theta);
    g->has_cached = 1;
    return r * cos(theta);
}

void tgen_randn(struct torch_gen *g, float *out, size_t n)
{
    if (n < 16) {
        for (size_t i = 0; i < n; i++)
            out[i] = (float)normal_f64_cached(g);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = uniform_f32(g);
    for (size_t s = 0; s + 16 <= n; s += 16)
        normal_block16(out + s);
    if (n % 16) {
        /* PyTorch redraws the last 16 values and transforms them again */
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++)
            tail[i] = uniform_f32(g);
        normal_block16(tail);
    }
}

/* ------------------------------------------------------------------------ */
/* float64 (scalar kernel with libm log/cos/sin).                            */

static void normal_block16_f64(double *d)
{
    for (int j = 0; j < 8; j++) {
        double u1 = 1.0 - d[j];
        double u2 = d[j + 8];
        double r = sqrt(-2.0 * log(u1));
        double theta = 2.0 * PI_F64 * u2;
        d[j] = r * cos(theta);
        d[j + 8] = r * sin(theta);
    }
}

void tgen_randn_f64(struct torch_gen *g, double *out, size_t n)
{
    if (n < 16) {
        for (size_t i = 0; i < n; i++)
            out[i] = normal_f64_cached(g);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = uniform_f64(g);
    for (size_t s = 0; s + 16 <= n; s += 16)
        normal_block16_f64(out + s);
    if (n % 16) {
        double *tail = out + n - 16;
        for (int i = 0; i < 16; i++)
            tail[i] = uniform_f64(g);
        normal_block16_f64(tail);
    }
}

/* ------------------------------------------------------------------------ */
/* float16: the scalar kernel on c10::Half values (sd-reference.md 7.5).     */

/* float -> IEEE half, round to nearest even (as c10::Half does). */
static uint16_t f32_to_f16(float f)
{
    uint32_t x = f_to_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf, nan */
        return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u);
    if (ax >= 0x477ff000u) /* rounds past 65504 */
        return sign | 0x7c00u;
    if (ax < 0x38800000u) /* below 2^-14: a subnormal half; v * 2^24 is exact */
        return sign | (uint16_t)rintf(bits_to_f(ax) * 16777216.0f);
    ax += 0xfffu + ((ax >> 13) & 1u);
    return sign | (uint16_t)((ax - 0x38000000u) >> 13);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact */
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)
        return bits_to_f(sign | 0x7f800000u | (m << 13));
    return bits_to_f(sign | ((e + 112u) << 23) | (m << 13));
}

static void normal_block16_f16(uint16_t *d)
{
    for (int j = 0; j < 8; j++) {
        uint16_t u1 = f32_to_f16(1.0f - f16_to_f32(d[j]));
        float u2 = f16_to_f32(d[j + 8]);
        uint16_t r = f32_to_f16(sqrtf(-2.0f * logf(f16_to_f32(u1))));
        uint16_t th = f32_to_f16((float)(2.0 * PI_F64 * (double)u2));
        float rf = f16_to_f32(r), tf = f16_to_f32(th);
        d[j] = f32_to_f16(rf * cosf(tf));
        d[j + 8] = f32_to_f16(rf * sinf(tf));
    }
}

void tgen_randn_f16(struct torch_gen *g, uint16_t *out, size_t n)
{
    if (n < 16) {
        for (size_t i = 0; i < n; i++)
            out[i] = f32_to_f16((float)normal_f64_cached(g));
        return;
    }
    /* 11-bit uniforms, exact in half */
    for (size_t i = 0; i < n; i++)
        out[i] = f32_to_f16((float)(tgen_random(g) & 0x7ffu) * 0x1p-11f);
    for (size_t s = 0; s + 16 <= n; s += 16)
        normal_block16_f16(out + s);
    if (n % 16) {
        uint16_t *tail = out + n - 16;
        for (int i = 0; i < 16; i++)
            tail[i] = f32_to_f16((float)(tgen_random(g) & 0x7ffu) * 0x1p-11f);
        normal_block16_f16(tail);
    }
}
