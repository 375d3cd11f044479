/* test_prompt_cache.c - the per-prompt text-encoder cache. */
#include "model/prompt_cache.h"
#include "test.h"

TEST(prompt_cache_lru)
{
    struct prompt_cache c;
    pcache_init(&c, 2, 3);
    float a[3] = {1, 2, 3}, b[3] = {4, 5, 6}, d[3] = {7, 8, 9};
    CHECK(pcache_get(&c, "a", 0) == NULL);
    pcache_put(&c, "a", 0, a);
    pcache_put(&c, "b", 0, b);
    const float *p = pcache_get(&c, "a", 0);
    CHECK(p && p[2] == 3);
    CHECK(pcache_get(&c, "a", 1) == NULL); /* clip_skip is part of the key */
    pcache_put(&c, "d", 0, d);             /* evicts "b", the least recently used */
    CHECK(pcache_get(&c, "b", 0) == NULL);
    CHECK(pcache_get(&c, "a", 0) != NULL);
    p = pcache_get(&c, "d", 0);
    CHECK(p && p[0] == 7);
    CHECK_EQ_INT(c.hits, 3);
    CHECK_EQ_INT(c.misses, 3);
    pcache_free(&c);
}
