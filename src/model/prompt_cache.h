/* prompt_cache.h - text-encoder outputs kept per distinct prompt.
 *
 * A service sees the same prompts again and again (a user varying the seed,
 * the empty negative prompt of almost every request), and encoding one
 * costs a text-encoder pass. The cache maps (prompt, clip_skip) to its
 * [T, D] conditioning; least recently used entries are evicted. Memory:
 * `capacity` entries of T*D floats, allocated on insertion.
 *
 * Not thread-safe: owned by one sd_model, used by its generating thread.
 */
#ifndef SD_PROMPT_CACHE_H
#define SD_PROMPT_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct prompt_entry {
    char *text;       /* owned copy; NULL when the slot is free */
    int clip_skip;
    uint64_t hash;
    uint64_t used;    /* last use (a counter), for LRU */
    float *emb;       /* [T, D], owned */
};

struct prompt_cache {
    struct prompt_entry *e;
    int capacity;
    size_t n;         /* floats per embedding (T * D) */
    uint64_t clock;
    long hits, misses;
};

void pcache_init(struct prompt_cache *c, int capacity, size_t n);
void pcache_free(struct prompt_cache *c);
/* Forget every entry (the text encoder's weights changed). */
void pcache_clear(struct prompt_cache *c);
/* The cached embedding, or NULL. */
const float *pcache_get(struct prompt_cache *c, const char *text, int clip_skip);
/* Store a copy of emb (n floats); silently does nothing when out of memory
 * (the cache is an optimisation). */
void pcache_put(struct prompt_cache *c, const char *text, int clip_skip, const float *emb);

#endif
