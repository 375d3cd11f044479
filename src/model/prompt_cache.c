/* prompt_cache.c - see prompt_cache.h. */
#include "model/prompt_cache.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_text(const char *s, int clip_skip)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(unsigned)clip_skip; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void pcache_init(struct prompt_cache *c, int capacity, size_t n)
{
    memset(c, 0, sizeof *c);
    c->e = calloc(capacity > 0 ? capacity : 1, sizeof *c->e);
    c->capacity = c->e ? capacity : 0;
    c->n = n;
}

void pcache_free(struct prompt_cache *c)
{
    for (int i = 0; i < c->capacity; i++) {
        free(c->e[i].text);
        free(c->e[i].emb);
    }
    free(c->e);
    memset(c, 0, sizeof *c);
}

void pcache_clear(struct prompt_cache *c)
{
    for (int i = 0; i < c->capacity; i++) {
        free(c->e[i].text);
        free(c->e[i].emb);
        memset(&c->e[i], 0, sizeof c->e[i]);
    }
}

const float *pcache_get(struct prompt_cache *c, const char *text, int clip_skip)
{
    uint64_t h = hash_text(text, clip_skip);
    for (int i = 0; i < c->capacity; i++) {
        struct prompt_entry *e = &c->e[i];
        if (e->text && e->hash == h && e->clip_skip == clip_skip && !strcmp(e->text, text)) {
            e->used = ++c->clock;
            c->hits++;
            return e->emb;
        }
    }
    c->misses++;
    return NULL;
}

void pcache_put(struct prompt_cache *c, const char *text, int clip_skip, const float *emb)
{
    if (!c->capacity)
        return;
    struct prompt_entry *victim = &c->e[0];
    for (int i = 0; i < c->capacity; i++) {
        if (!c->e[i].text) {
            victim = &c->e[i];
            break;
        }
        if (c->e[i].used < victim->used)
            victim = &c->e[i];
    }
    char *t = strdup(text);
    float *m = victim->emb ? victim->emb : malloc(c->n * sizeof(float));
    if (!t || !m) {
        free(t);
        if (!victim->emb)
            free(m);
        return;
    }
    free(victim->text);
    victim->text = t;
    victim->emb = m;
    memcpy(m, emb, c->n * sizeof(float));
    victim->clip_skip = clip_skip;
    victim->hash = hash_text(text, clip_skip);
    victim->used = ++c->clock;
}
