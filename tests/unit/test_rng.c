/* test_rng.c - torch.Generator("cpu") parity: golden torch.randn vectors
 * (tests/data/torch-randn/, sd-reference.md 11.2) and call sequences on one
 * generator written by tools/gen_sched_ref.py with the installed PyTorch.
 * Everything here is bit-exact.
 */
#include "test.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/rng.h"

#define RANDN_DIR "tests/data/torch-randn/"

/* Read exactly `size` bytes of a golden file; 0 if missing or short. */
static int read_golden(const char *name, void *buf, size_t size)
{
    char path[256];
    snprintf(path, sizeof path, RANDN_DIR "%s", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t got = fread(buf, 1, size, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    return got == size && !extra;
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3u;
    return h;
}

TEST(rng_mt19937_raw)
{
    static const uint32_t seed0[] = {2357136044u, 2546248239u, 3071714933u, 3626093760u,
                                     2588848963u};
    static const uint32_t seed42[] = {1608637542u, 3421126067u, 4083286876u, 787846414u,
                                      3143890026u};
    struct torch_gen g;
    tgen_seed(&g, 0);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(tgen_random(&g), seed0[i]);
    tgen_seed(&g, 42);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(tgen_random(&g), seed42[i]);
    /* past one full twist of the state */
    tgen_seed(&g, 0);
    for (int i = 0; i < 700; i++)
        tgen_random(&g);
    uint32_t a = tgen_random(&g);
    tgen_seed(&g, (UINT64_C(7) << 32) | 0); /* only the low 32 bits count */
    for (int i = 0; i < 700; i++)
        tgen_random(&g);
    CHECK_EQ_INT(tgen_random(&g), a);
}

TEST(rng_golden_small)
{
    static const struct {
        const char *file;
        int n;
        uint64_t seed;
    } cases[] = {
        {"n3_s7.bin", 3, 7},     {"n4_s0.bin", 4, 0},     {"n15_s5.bin", 15, 5},
        {"n16_s3.bin", 16, 3},   {"n17_s0.bin", 17, 0},   {"n100_s1234.bin", 100, 1234},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float ref[100], out[100];
        int n = cases[c].n;
        CHECK_MSG(read_golden(cases[c].file, ref, (size_t)n * sizeof(float)), "%s",
                  cases[c].file);
        struct torch_gen g;
        tgen_seed(&g, cases[c].seed);
        tgen_randn(&g, out, (size_t)n);
        CHECK_MSG(!memcmp(out, ref, (size_t)n * sizeof(float)), "%s differs", cases[c].file);
    }
}

TEST(rng_golden_large)
{
    /* FNV-1a-64 of the reference set's n16384_s0, n16384_s42, n65536_s2024 */
    static const struct {
        int n;
        uint64_t seed, hash;
    } cases[] = {
        {16384, 0, 0xdf763936577cac18u},
        {16384, 42, 0xa6f589a085841b88u},
        {65536, 2024, 0x7afb7edfb28788a6u},
    };
    float *out = malloc(65536 * sizeof *out);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct torch_gen g;
        tgen_seed(&g, cases[c].seed);
        tgen_randn(&g, out, (size_t)cases[c].n);
        CHECK_MSG(fnv1a(out, (size_t)cases[c].n * sizeof *out) == cases[c].hash,
                  "randn(%d) seed %llu", cases[c].n, (unsigned long long)cases[c].seed);
    }
    /* sd-reference.md 11.2, seed 0: first values (bits), last two, sum */
    struct torch_gen g;
    tgen_seed(&g, 0);
    tgen_randn(&g, out, 16384);
    uint32_t b0;
    memcpy(&b0, &out[0], 4);
    CHECK_EQ_INT(b0, 0xbf901b85u);
    CHECK(out[16382] == -1.36646974f && out[16383] == -1.07820797f);
    double sum = 0;
    for (int i = 0; i < 16384; i++)
        sum += out[i];
    CHECK_NEAR(sum, -124.1126999, 1e-6);
    free(out);
}

TEST(rng_golden_f64_f16)
{
    double ref64[32], out64[32];
    uint16_t ref16[32], out16[32];
    struct torch_gen g;
    CHECK(read_golden("n32_s0_f64.bin", ref64, sizeof ref64));
    tgen_seed(&g, 0);
    tgen_randn_f64(&g, out64, 32);
    CHECK(!memcmp(out64, ref64, sizeof ref64));
    CHECK(read_golden("n32_s0_f16.bin", ref16, sizeof ref16));
    tgen_seed(&g, 0);
    tgen_randn_f16(&g, out16, 32);
    int same = 0;
    for (int i = 0; i < 32; i++)
        same += out16[i] == ref16[i];
    CHECK_MSG(same == 32, "%d of 32 float16 values equal", same);
}

TEST(rng_rand_uniform)
{
    float u[3];
    struct torch_gen g;
    tgen_seed(&g, 0);
    tgen_rand(&g, u, 3);
    CHECK(u[0] == 0.49625659f && u[1] == 0.768221796f && u[2] == 0.0884774327f);
}

/* The small path's cached normal survives across calls (7.4). */
TEST(rng_cache_across_calls)
{
    float a[4], b[4], big[16];
    struct torch_gen g;
    tgen_seed(&g, 7);
    tgen_randn(&g, a, 4);
    tgen_seed(&g, 7);
    tgen_randn(&g, b, 3);
    tgen_randn(&g, b + 3, 1);
    CHECK(!memcmp(a, b, sizeof a));
    CHECK(b[3] == -1.114344f || fabsf(b[3] + 1.114344f) < 1e-6f);
    /* randn(3), randn(16), randn(1): the last is element 3 of randn(4) */
    tgen_seed(&g, 0);
    tgen_randn(&g, a, 4);
    tgen_seed(&g, 0);
    tgen_randn(&g, b, 3);
    tgen_randn(&g, big, 16);
    tgen_randn(&g, b + 3, 1);
    CHECK(b[3] == a[3] && a[3] == 0.568431258f);
    /* seeding clears the cache */
    tgen_seed(&g, 7);
    tgen_randn(&g, b, 3);
    tgen_seed(&g, 7);
    tgen_randn(&g, b + 3, 1);
    CHECK(b[3] == b[0]);
}

/* seq.json: what the installed PyTorch returns for call sequences. */
TEST(rng_torch_sequences)
{
    json_error_t jerr;
    json_t *root = json_load_file(RANDN_DIR "seq.json", 0, &jerr);
    CHECK_MSG(root != NULL, "seq.json: %s", jerr.text);
    if (!root)
        return;
    json_t *seqs = json_object_get(root, "sequences"), *seq;
    size_t i, ncalls = 0, nvalues = 0, bad = 0;
    json_array_foreach(seqs, i, seq)
    {
        struct torch_gen g;
        tgen_seed(&g, (uint64_t)json_integer_value(json_object_get(seq, "seed")));
        size_t j;
        json_t *call;
        json_array_foreach(json_object_get(seq, "calls"), j, call)
        {
            json_t *vals = json_object_get(call, "values");
            size_t n = (size_t)json_integer_value(json_object_get(call, "n"));
            float out[128];
            CHECK(n == json_array_size(vals) && n <= 128);
            if (n > 128)
                break;
            tgen_randn(&g, out, n);
            for (size_t k = 0; k < n; k++)
                bad += out[k] != (float)json_number_value(json_array_get(vals, k));
            nvalues += n;
            ncalls++;
        }
    }
    CHECK_MSG(bad == 0, "%zu of %zu values differ", bad, nvalues);
    CHECK(ncalls >= 20);
    CHECK(json_is_true(json_object_get(root, "randn_tensor_is_flat_randn")));
    json_t *r3 = json_object_get(root, "rand3_seed0");
    float u[3];
    struct torch_gen g;
    tgen_seed(&g, 0);
    tgen_rand(&g, u, 3);
    for (int k = 0; k < 3; k++)
        CHECK(u[k] == (float)json_number_value(json_array_get(r3, (size_t)k)));
    printf("  rng: %zu torch.randn calls, %zu values, all bit-exact: %s\n", ncalls, nvalues,
           bad ? "no" : "yes");
    json_decref(root);
}
