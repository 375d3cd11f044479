/* peak.c - the multiply-add ceiling of this CPU, to put GFLOP/s numbers in context.
 *
 *   gcc -O3 -march=native -fopenmp bench/peak.c -o build/peak && build/peak [seconds]
 *
 * Runs a loop of independent vector multiply-adds that never touches memory:
 *   fp32: _mm512_fmadd_ps  (16 lanes x 2 FLOP = 32 FLOP per instruction)
 *   bf16: _mm512_dpbf16_ps (16 lanes x 2 products x 2 FLOP = 64 FLOP per instruction)
 * with 12 accumulators, enough to cover the FMA latency (4-5 cycles) times the
 * number of FMA ports (1-2), so the loop is bound by FMA throughput alone.
 * Each is measured on 1 thread and on all OpenMP threads (OMP_NUM_THREADS).
 * Without AVX-512 the fp32 test falls back to 256-bit FMA and bf16 is skipped.
 *
 * The last line is for scripts (bench/compare.py parses it):
 *   peak threads=T fp32_1t=X fp32=Y bf16_1t=Z bf16=W      (GFLOP/s, 0 = unavailable)
 *
 * This is an upper bound no real kernel reaches (loads, stores and shuffles
 * compete for issue slots); it is the yardstick, not a target.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define NACC 12
#define INNER 1000 /* iterations between clock reads */

/* Each kernel runs `iters` x INNER x NACC multiply-add instructions and
 * returns a value depending on every accumulator, so none is dead code. */
#if defined(__AVX512F__)
#define FP32_FLOP_PER_INSN 32.0
static float kernel_fp32(long iters)
{
    __m512 acc[NACC];
    const __m512 a = _mm512_set1_ps(0.9999999f), b = _mm512_set1_ps(1e-7f);
    for (int k = 0; k < NACC; k++)
        acc[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < iters; i++) {
        for (int j = 0; j < INNER; j++) {
#pragma GCC unroll 12
            for (int k = 0; k < NACC; k++)
                acc[k] = _mm512_fmadd_ps(acc[k], a, b);
        }
    }
    __m512 s = acc[0];
    for (int k = 1; k < NACC; k++)
        s = _mm512_add_ps(s, acc[k]);
    return _mm512_reduce_add_ps(s);
}
#else
#define FP32_FLOP_PER_INSN 16.0
static float kernel_fp32(long iters)
{
    __m256 acc[NACC];
    const __m256 a = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);
    for (int k = 0; k < NACC; k++)
        acc[k] = _mm256_set1_ps((float)k);
    for (long i = 0; i < iters; i++) {
        for (int j = 0; j < INNER; j++) {
#pragma GCC unroll 12
            for (int k = 0; k < NACC; k++)
                acc[k] = _mm256_fmadd_ps(acc[k], a, b);
        }
    }
    float out[8], s = 0;
    for (int k = 1; k < NACC; k++)
        acc[0] = _mm256_add_ps(acc[0], acc[k]);
    _mm256_storeu_ps(out, acc[0]);
    for (int i = 0; i < 8; i++)
        s += out[i];
    return s;
}
#endif

#if defined(__AVX512BF16__)
#define HAVE_BF16 1
static float kernel_bf16(long iters)
{
    __m512 acc[NACC];
    /* small operands: 2e9 accumulated products of 1e-6 stay far from overflow */
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    for (int k = 0; k < NACC; k++)
        acc[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < iters; i++) {
        for (int j = 0; j < INNER; j++) {
#pragma GCC unroll 12
            for (int k = 0; k < NACC; k++)
                acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
        }
    }
    __m512 s = acc[0];
    for (int k = 1; k < NACC; k++)
        s = _mm512_add_ps(s, acc[k]);
    return _mm512_reduce_add_ps(s);
}
#else
#define HAVE_BF16 0
static float kernel_bf16(long iters)
{
    (void)iters;
    return 0;
}
#endif

typedef float (*kernel_fn)(long);

/* GFLOP/s of `fn` on `threads` threads, running for about `seconds`.
 * A short calibration run picks the iteration count; every thread runs the
 * same count and the wall time covers all of them (slowest thread counts). */
static double measure(kernel_fn fn, double flop_per_insn, int threads, double seconds, float *sink)
{
    long iters = 100;
    for (;;) {
        double t0 = omp_get_wtime();
        *sink += fn(iters);
        double dt = omp_get_wtime() - t0;
        if (dt > 0.05) {
            iters = (long)(iters * seconds / dt) + 1;
            break;
        }
        iters *= 4;
    }
    float part[256] = {0};
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
    {
        int id = omp_get_thread_num();
        part[id & 255] += fn(iters);
    }
    double dt = omp_get_wtime() - t0;
    for (int i = 0; i < 256; i++)
        *sink += part[i];
    return (double)iters * INNER * NACC * flop_per_insn * threads / dt / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (seconds <= 0 || seconds > 60)
        seconds = 1.0;
    int nt = omp_get_max_threads();
    float sink = 0;
    double f1 = measure(kernel_fp32, FP32_FLOP_PER_INSN, 1, seconds, &sink);
    double fn = measure(kernel_fp32, FP32_FLOP_PER_INSN, nt, seconds, &sink);
    double b1 = 0, bn = 0;
    if (HAVE_BF16) {
        b1 = measure(kernel_bf16, 64.0, 1, seconds, &sink);
        bn = measure(kernel_bf16, 64.0, nt, seconds, &sink);
    }
    printf("fp32 %s   1 thread : %7.1f GFLOP/s\n", FP32_FLOP_PER_INSN > 16 ? "fmadd_ps 512" : "fmadd_ps 256", f1);
    printf("fp32 %s %3d threads: %7.1f GFLOP/s\n", FP32_FLOP_PER_INSN > 16 ? "fmadd_ps 512" : "fmadd_ps 256", nt, fn);
    if (HAVE_BF16) {
        printf("bf16 dpbf16_ps 512   1 thread : %7.1f GFLOP/s\n", b1);
        printf("bf16 dpbf16_ps 512 %3d threads: %7.1f GFLOP/s\n", nt, bn);
    } else {
        printf("bf16: AVX512-BF16 not available in this build\n");
    }
    printf("(checksum %g)\n", (double)sink);
    printf("peak threads=%d fp32_1t=%.1f fp32=%.1f bf16_1t=%.1f bf16=%.1f\n", nt, f1, fn, b1, bn);
    return 0;
}
