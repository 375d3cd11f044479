/* cpu.c - instruction set detection and the level the kernels use (cpu.h). */
#include "tensor/cpu.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CPU_X86 1
#endif

static const char *const level_names[CPU_LEVEL_COUNT] = {"baseline", "avx2", "avx512", "avx512bf16"};

const char *cpu_level_name(enum cpu_level l)
{
    return (unsigned)l < CPU_LEVEL_COUNT ? level_names[l] : "?";
}

int cpu_level_from_name(const char *name)
{
    for (int i = 0; name && i < CPU_LEVEL_COUNT; i++)
        if (!strcmp(name, level_names[i]))
            return i;
    return -1;
}

/* cpu_built_level: in kernels.c, which knows the levels built. */

static char brand[64];
static int amx_bf16;

#ifdef CPU_X86
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void read_brand(void)
{
    unsigned r[12];
    if ((unsigned)__get_cpuid_max(0x80000000u, NULL) < 0x80000004u)
        return;
    for (unsigned i = 0; i < 3; i++)
        __get_cpuid(0x80000002u + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
    char s[49];
    memcpy(s, r, 48);
    s[48] = 0;
    const char *p = s;
    while (*p == ' ')
        p++;
    snprintf(brand, sizeof brand, "%s", p);
    for (size_t n = strlen(brand); n > 0 && brand[n - 1] == ' '; n--)
        brand[n - 1] = 0;
}
#endif

enum cpu_level cpu_detect(void)
{
#ifdef CPU_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return CPU_BASELINE;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx)
        return CPU_BASELINE;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* the OS saves XMM and YMM state */
        return CPU_BASELINE;
    if ((unsigned)__get_cpuid_max(0, NULL) < 7)
        return CPU_BASELINE;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1) &&
                 (xcr0 & 0xe0) == 0xe0; /* F, DQ, BW, VL; opmask and ZMM state saved */
    amx_bf16 = ((d >> 22) & 1) && ((d >> 24) & 1);
    unsigned a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    int bf16 = (a1 >> 5) & 1;
    if (!avx2 || !fma)
        return CPU_BASELINE;
    if (!avx512)
        return CPU_AVX2;
    return bf16 ? CPU_AVX512_BF16 : CPU_AVX512;
#else
    return CPU_BASELINE;
#endif
}

static enum cpu_level level;
static int bf16_native;
static char describe[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
#ifdef CPU_X86
    read_brand();
#endif
    enum cpu_level hw = cpu_detect(), built = cpu_built_level();
    level = hw < built ? hw : built;
    const char *why = hw > built ? "; capped by this build" : "";
    const char *force = getenv("DIFFUSIOND_CPU");
    int forced = force && *force ? cpu_level_from_name(force) : -1;
    if (forced >= 0 && forced < (int)level) {
        level = forced;
        why = "; set by DIFFUSIOND_CPU";
        /* Cap oneDNN the same way, unless the user capped it already
         * (dnnl_set_max_cpu_isa would override ONEDNN_MAX_CPU_ISA). */
        if (!getenv("ONEDNN_MAX_CPU_ISA") && !getenv("DNNL_MAX_CPU_ISA")) {
            dnnl_cpu_isa_t cap = level == CPU_AVX512 ? dnnl_cpu_isa_avx512_core
                                 : level == CPU_AVX2 ? dnnl_cpu_isa_avx2
                                                     : dnnl_cpu_isa_sse41;
            dnnl_set_max_cpu_isa(cap);
        }
    }
    dnnl_cpu_isa_t dn = dnnl_get_effective_cpu_isa();
    int dn_bf16 = ((unsigned)dn & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
                  (unsigned)dnnl_cpu_isa_avx512_core_bf16;
    bf16_native = level >= CPU_AVX512_BF16 && dn_bf16;
    const char *dn_name = dn == dnnl_cpu_isa_avx512_core_amx    ? "avx512_core_amx"
                          : dn == dnnl_cpu_isa_avx512_core_bf16 ? "avx512_core_bf16"
                          : dn == dnnl_cpu_isa_avx512_core_vnni ? "avx512_core_vnni"
                          : dn == dnnl_cpu_isa_avx512_core      ? "avx512_core"
                          : dn == dnnl_cpu_isa_avx2_vnni        ? "avx2_vnni"
                          : dn == dnnl_cpu_isa_avx2             ? "avx2"
                          : dn == dnnl_cpu_isa_all              ? "all"
                                                                : "older";
    snprintf(describe, sizeof describe, "%s kernels on %s%s (oneDNN %s%s)", cpu_level_name(level),
             brand[0] ? brand : "an unknown CPU", amx_bf16 ? " with AMX-BF16" : "", dn_name, why);
}

enum cpu_level cpu_level(void)
{
    pthread_once(&once, init);
    return level;
}

int cpu_bf16_native(void)
{
    pthread_once(&once, init);
    return bf16_native;
}

const char *cpu_describe(void)
{
    pthread_once(&once, init);
    return describe;
}
