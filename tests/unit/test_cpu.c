/* test_cpu.c - instruction set levels (tensor/cpu.h). */
#include "tensor/cpu.h"
#include "test.h"

#include <string.h>

TEST(cpu_level_names)
{
    for (int l = 0; l < CPU_LEVEL_COUNT; l++)
        CHECK(cpu_level_from_name(cpu_level_name(l)) == l);
    CHECK(cpu_level_from_name("avx512bf16") == CPU_AVX512_BF16);
    CHECK(cpu_level_from_name("sse9") == -1);
    CHECK(cpu_level_from_name(NULL) == -1);
}

/* The level in use never exceeds what the CPU or the build supports, and
 * bf16 counts as native only at the bf16 level. */
TEST(cpu_level_capped)
{
    enum cpu_level l = cpu_level();
    CHECK(l <= cpu_detect());
    CHECK(l <= cpu_built_level());
    if (cpu_bf16_native())
        CHECK(l == CPU_AVX512_BF16);
    CHECK(strstr(cpu_describe(), cpu_level_name(l)) == cpu_describe());
}
