/* rng.h - torch.Generator("cpu") compatible random numbers.
 *
 * Reproduces, bit for bit, what PyTorch's CPU generator produces for
 *
 *     g = torch.Generator("cpu").manual_seed(seed)
 *     torch.randn(n, generator=g)            # float32
 *
 * which is how diffusers draws the initial latents and every scheduler noise
 * (randn_tensor on a CPU generator; a tensor of shape [1,4,h,w] is the same
 * as randn(numel) reshaped, row-major). See sd-reference.md section 7.
 *
 * Two paths, chosen by the number of values, exactly as PyTorch does:
 *   - n >= 16: uniforms for all n, Box-Muller per block of 16 with the AVX2
 *     polynomial log/sincos of PyTorch's x86 kernel (emulated in scalar C
 *     with explicit fmaf; this file must be compiled with -ffp-contract=off),
 *     and a re-drawn last block when n % 16 != 0;
 *   - n < 16: double-precision Box-Muller with one cached value that lives
 *     in the generator across calls (only manual_seed clears it).
 *
 * The generator is a plain value: copy it to fork a stream, no allocation,
 * no global state. Not thread-safe (use one per generation).
 */
#ifndef SD_RNG_H
#define SD_RNG_H

#include <stddef.h>
#include <stdint.h>

#define TGEN_STATE_N 624

struct torch_gen {
    uint32_t mt[TGEN_STATE_N]; /* MT19937 state */
    int left;                  /* draws left before the next twist, + 1 */
    int next;                  /* index of the next state word to temper */
    int has_cached;            /* a cached double normal is pending (n < 16 path) */
    double cached;
};

/* torch.Generator("cpu").manual_seed(seed): only the low 32 bits of the seed
 * are used (as PyTorch does); clears the cached normal. */
void tgen_seed(struct torch_gen *g, uint64_t seed);

/* One raw 32-bit MT19937 output (the engine's random()). */
uint32_t tgen_random(struct torch_gen *g);

/* Two draws: (first << 32) | second (the engine's random64()). */
uint64_t tgen_random64(struct torch_gen *g);

/* torch.randn(n, generator=g) in float32, written to out[0..n-1]. */
void tgen_randn(struct torch_gen *g, float *out, size_t n);

/* torch.rand(n, generator=g) in float32 (24-bit uniforms in [0, 1)). */
void tgen_rand(struct torch_gen *g, float *out, size_t n);

/* torch.randn(n, generator=g, dtype=torch.float64). */
void tgen_randn_f64(struct torch_gen *g, double *out, size_t n);

/* torch.randn(n, generator=g, dtype=torch.float16), as IEEE half bit
 * patterns. This is not randn in float32 rounded to half: PyTorch runs the
 * transform on half values (and uses libm's logf/cosf/sinf there). */
void tgen_randn_f16(struct torch_gen *g, uint16_t *out, size_t n);

#endif
