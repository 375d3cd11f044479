/* test_vmath_avx512.c - vmath.h's AVX-512 functions, compiled for AVX-512
 * (the Makefile builds this file with the avx512 kernels' flags; the rest
 * of the tests are built for any x86-64) and run only where the CPU has it.
 */
#include <immintrin.h>
#include <math.h>

#include "tensor/cpu.h"
#include "tensor/vmath.h"
#include "test.h"

#ifdef __AVX512F__
/* The vector exponentials never return subnormals (they are slow to
 * operate on here): exp of very negative arguments bottoms out at a
 * normal number, and GELU's erf tail stays exact. */
TEST(ops_exp_no_subnormals)
{
    if (cpu_level() < CPU_AVX512)
        return; /* this CPU has no AVX-512: nothing of this file may run */
    for (float x = -120.0f; x < 0.0f; x += 0.37f) {
        float e[16], b[16], g[16];
        _mm512_storeu_ps(e, v_exp(_mm512_set1_ps(x)));
        _mm512_storeu_ps(b, v_exp_bf16(_mm512_set1_ps(x)));
        _mm512_storeu_ps(g, v_gelu(_mm512_set1_ps(x / 4)));
        CHECK_MSG(fpclassify(e[0]) == FP_NORMAL && fpclassify(b[0]) == FP_NORMAL, "exp(%g): %g %g", x, e[0],
                  b[0]);
        CHECK_MSG(fpclassify(g[0]) != FP_SUBNORMAL, "gelu(%g): %g", x / 4, g[0]);
        if (x > -80.0f)
            CHECK_MSG(fabs(e[0] - expf(x)) <= 1e-6 * expf(x), "exp(%g): %g vs %g", x, e[0], expf(x));
    }
}

#endif
