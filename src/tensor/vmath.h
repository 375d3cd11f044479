/* vmath.h - vectorised exp, SiLU and GELU for the CPU kernels, and the
 * scalar float <-> bfloat16 conversions they share.
 *
 * 16 floats at a time with AVX-512 when the compiler targets it, 8 with
 * AVX2 + FMA, one at a time through libm otherwise (same results within a
 * few ulp). Accuracy:
 * exp within 2 ulp over the float range; erf within 2e-7 absolute, so
 * GELU matches PyTorch's exact-erf GELU to float precision.
 */
#ifndef SD_VMATH_H
#define SD_VMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* float -> bf16, round to nearest even (NaN stays a quiet NaN), as
 * _mm512_cvtneps_pbh does. */
static inline uint16_t bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

/* dst[0..n) = bf16(src), zero up to npad (a row of an operand packed for
 * AVX512-BF16 dot products). */
static inline void to_bf16_row(uint16_t *dst, const float *src, int n, int npad)
{
    int i = 0;
#ifdef __AVX512BF16__
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 t = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, t, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(t, src + i)));
        i = n;
    }
#endif
    for (; i < n; i++)
        dst[i] = bf16_round(src[i]);
    for (; i < npad; i++)
        dst[i] = 0;
}

#ifdef __AVX512F__
#include <immintrin.h>

/* Arguments below this give exp(-80) = 1.8e-35 instead of a smaller
 * value: never a subnormal result, which (as an operand or a result of
 * the next multiply or add) takes a slow microcode path on this CPU; in
 * softmax sums, erf tails (1 - 1e-35 = 1) and SiLU it changes nothing
 * visible. With subnormals, a bf16 UNet step was ~7% slower. */
#define V_EXP_MIN (-80.0f)

/* exp(x) = 2^n * e^r, n = round(x / ln 2), r = x - n ln 2 in two parts
 * (Cody-Waite), e^r by a degree-6 polynomial. */
static inline __m512 v_exp(__m512 x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7228394f)), _mm512_set1_ps(V_EXP_MIN));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* exp to ~5e-5 relative: enough when the result is rounded to bf16
 * (2^-8) right after, at half the cost of v_exp. x <= 0 expected. */
static inline __m512 v_exp_bf16(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(V_EXP_MIN));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.69314718056f), x);
    __m512 p = _mm512_set1_ps(1.0f / 24);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 v_silu(__m512 x)
{
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(x, _mm512_add_ps(one, v_exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

/* erf via erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2) (Numerical
 * Recipes' Chebyshev fit, fractional error < 1.2e-7). */
static inline __m512 v_erf(__m512 x)
{
    __m512 z = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    __m512 e = _mm512_mul_ps(t, v_exp(_mm512_sub_ps(p, _mm512_mul_ps(z, z))));
    __m512 r = _mm512_sub_ps(_mm512_set1_ps(1.0f), e);
    /* copy the sign of x */
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(r),
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u))));
}

static inline __m512 v_gelu(__m512 x)
{
    __m512 e = v_erf(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
/* The same functions 8 floats at a time, for the avx2 kernels. */
#include <immintrin.h>

#define V_EXP_MIN (-80.0f)

/* 2^n for integral n in [-126, 127], through the exponent bits. */
static inline __m256 v8_pow2n(__m256 n)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                                  _mm256_set1_epi32(127)), 23));
}

/* As v_exp; the top of the range stops at 88.376 (n <= 127). */
static inline __m256 v8_exp(__m256 x)
{
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(V_EXP_MIN));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    return _mm256_mul_ps(p, v8_pow2n(n));
}

static inline __m256 v8_silu(__m256 x)
{
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(x, _mm256_add_ps(one, v8_exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

static inline __m256 v8_erf(__m256 x)
{
    __m256 sign = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u)));
    __m256 z = _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u)), x);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(0.17087277f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
    __m256 e = _mm256_mul_ps(t, v8_exp(_mm256_sub_ps(p, _mm256_mul_ps(z, z))));
    return _mm256_or_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), e), sign);
}

static inline __m256 v8_gelu(__m256 x)
{
    __m256 e = v8_erf(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline float v8_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float v8_hmax(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define V8 1
#endif

static inline float s_silu(float x) { return x / (1.0f + expf(-x)); }
static inline float s_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

/* x[i] = exp(x[i] - m) for i < n; returns the sum of the results. */
static inline float vexp_sub_sum(float *x, size_t n, float m)
{
    size_t i = 0;
    float sum = 0;
#ifdef __AVX512F__
    __m512 acc = _mm512_setzero_ps(), vm = _mm512_set1_ps(m);
    for (; i + 16 <= n; i += 16) {
        __m512 e = v_exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    sum = _mm512_reduce_add_ps(acc);
#elif defined(V8)
    __m256 acc = _mm256_setzero_ps(), vm = _mm256_set1_ps(m);
    for (; i + 8 <= n; i += 8) {
        __m256 e = v8_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    sum = v8_hsum(acc);
#endif
    for (; i < n; i++)
        sum += (x[i] = expf(x[i] - m));
    return sum;
}

static inline float vmax(const float *x, size_t n)
{
    size_t i = 0;
    float m = -INFINITY;
#ifdef __AVX512F__
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16)
        vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + i));
    m = _mm512_reduce_max_ps(vm);
#elif defined(V8)
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8)
        vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    m = v8_hmax(vm);
#endif
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* In place SiLU / GELU over n floats. */
static inline void vsilu(float *x, size_t n)
{
    size_t i = 0;
#ifdef __AVX512F__
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, v_silu(_mm512_loadu_ps(x + i)));
#elif defined(V8)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, v8_silu(_mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++)
        x[i] = s_silu(x[i]);
}

static inline void vgelu(float *x, size_t n)
{
    size_t i = 0;
#ifdef __AVX512F__
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, v_gelu(_mm512_loadu_ps(x + i)));
#elif defined(V8)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, v8_gelu(_mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++)
        x[i] = s_gelu(x[i]);
}

/* out[i] = a[i] * gelu(g[i]) */
static inline void vgeglu(float *out, const float *a, const float *g, size_t n)
{
    size_t i = 0;
#ifdef __AVX512F__
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_loadu_ps(a + i), v_gelu(_mm512_loadu_ps(g + i))));
#elif defined(V8)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), v8_gelu(_mm256_loadu_ps(g + i))));
#endif
    for (; i < n; i++)
        out[i] = a[i] * s_gelu(g[i]);
}

/* The same on bf16 rows: out[i] = bf16(a[i] * gelu(g[i])), computed in
 * float32 (the bf16 backend's feed-forward). */
static inline void vgeglu_bf16(uint16_t *out, const uint16_t *a, const uint16_t *g, size_t n)
{
    size_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    for (; i + 16 <= n; i += 16) {
        __m512 av = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(a + i))), 16));
        __m512 gv = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(g + i))), 16));
        _mm256_storeu_si256((__m256i *)(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(av, v_gelu(gv))));
    }
#endif
    for (; i < n; i++)
        out[i] = bf16_round(bf16_to_f32(a[i]) * s_gelu(bf16_to_f32(g[i])));
}

#endif
