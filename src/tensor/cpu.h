/* cpu.h - which instruction set levels the compute kernels may use.
 *
 * The level is what the CPU (and the operating system, which must save the
 * wider registers) supports, capped by what this binary was built with and
 * lowered by the environment:
 *
 *     DIFFUSIOND_CPU=avx2|avx512|avx512bf16   use at most this level
 *
 * The same cap is passed on to oneDNN (dnnl_set_max_cpu_isa), so a forced
 * level reproduces a smaller CPU for our kernels and oneDNN's alike. An
 * ONEDNN_MAX_CPU_ISA set by the user lowers oneDNN only; cpu_bf16_native()
 * takes both into account.
 *
 * Thread-safe: the level is computed once, on the first call.
 */
#ifndef SD_CPU_H
#define SD_CPU_H

enum cpu_level {
    CPU_BASELINE = 0,  /* x86-64 (SSE2) or another architecture */
    CPU_AVX2,          /* AVX2 + FMA (x86-64-v3) */
    CPU_AVX512,        /* AVX-512 F/BW/DQ/VL (x86-64-v4) */
    CPU_AVX512_BF16,   /* the same with AVX512-BF16 dot products */
    CPU_LEVEL_COUNT
};

/* The level in use (see above). */
enum cpu_level cpu_level(void);
/* What the CPU and OS support, before caps. */
enum cpu_level cpu_detect(void);
/* The highest level this binary has kernels for (kernels.c: every level on
 * x86-64, whatever the build machine). */
enum cpu_level cpu_built_level(void);
/* "baseline", "avx2", "avx512", "avx512bf16". */
const char *cpu_level_name(enum cpu_level l);
/* -1 for an unknown name. */
int cpu_level_from_name(const char *name);

/* 1 when bf16 products can run at bf16 speed: our kernels are at
 * CPU_AVX512_BF16 and oneDNN may use its avx512_core_bf16 (or AMX) kernels.
 * Without it, bf16 products would be emulated several times slower than
 * float32 ones. */
int cpu_bf16_native(void);

/* The level in use, the CPU's model and oneDNN's level, for logs and
 * --version: "avx512bf16 kernels on AMD EPYC (oneDNN avx512_core_bf16)". */
const char *cpu_describe(void);

#endif
