/* ratelimit.c - see ratelimit.h. Open addressing with linear probing; the
 * table is rebuilt (dropping full buckets, growing if still crowded) when
 * it is half full, so probes stay short and deletion needs no tombstones. */
#include "server/ratelimit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 48      /* an IPv6 address with zone fits */
#define MIN_CAP 1024
#define MAX_CAP (1 << 21)

struct bucket {
    char key[KEY_MAX];  /* "" = empty slot */
    double tokens;      /* at time t */
    double t;
};

struct ratelimit {
    pthread_mutex_t mu;
    double rate;        /* tokens per second */
    double burst;
    struct bucket *slots;
    size_t cap, used;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct bucket *probe(struct bucket *slots, size_t cap, const char *key)
{
    size_t i = hash_key(key) & (cap - 1);
    while (slots[i].key[0] && strcmp(slots[i].key, key))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

struct ratelimit *ratelimit_new(double per_minute, int burst)
{
    struct ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    pthread_mutex_init(&rl->mu, NULL);
    rl->rate = per_minute / 60.0;
    rl->burst = burst < 1 ? 1 : burst;
    if (rl->rate > 0) {
        rl->cap = MIN_CAP;
        rl->slots = calloc(rl->cap, sizeof *rl->slots);
        if (!rl->slots) {
            free(rl);
            return NULL;
        }
    }
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    free(rl->slots);
    free(rl);
}

static double refilled(const struct ratelimit *rl, const struct bucket *b, double now)
{
    double tok = b->tokens + (now - b->t) * rl->rate;
    return tok > rl->burst ? rl->burst : tok;
}

/* Drop full buckets; grow when the survivors still fill half the table. */
static void rebuild(struct ratelimit *rl, double now)
{
    size_t live = 0;
    for (size_t i = 0; i < rl->cap; i++)
        live += rl->slots[i].key[0] && refilled(rl, &rl->slots[i], now) < rl->burst;
    size_t cap = rl->cap;
    while (live * 2 >= cap && cap < MAX_CAP)
        cap *= 2;
    struct bucket *ns = calloc(cap, sizeof *ns);
    if (!ns)
        return; /* keep the old table; takes fail once it is full */
    size_t used = 0;
    for (size_t i = 0; i < rl->cap; i++) {
        struct bucket *b = &rl->slots[i];
        if (b->key[0] && refilled(rl, b, now) < rl->burst) {
            *probe(ns, cap, b->key) = *b;
            used++;
        }
    }
    free(rl->slots);
    rl->slots = ns;
    rl->cap = cap;
    rl->used = used;
}

int ratelimit_take(struct ratelimit *rl, const char *key, double now, double *retry_after)
{
    *retry_after = 0;
    if (rl->rate <= 0)
        return 1;
    char k[KEY_MAX];
    size_t n = strlen(key);
    if (n >= KEY_MAX)
        n = KEY_MAX - 1;
    memcpy(k, key, n);
    k[n] = '\0';
    if (!k[0])
        k[0] = '?', k[1] = '\0';

    pthread_mutex_lock(&rl->mu);
    if ((rl->used + 1) * 2 > rl->cap)
        rebuild(rl, now);
    struct bucket *b = probe(rl->slots, rl->cap, k);
    int ok;
    if (!b->key[0] && (rl->used + 1) * 4 > rl->cap * 3) {
        ok = 0; /* table saturated by active clients: refuse newcomers */
        *retry_after = 1.0 / rl->rate;
    } else {
        if (!b->key[0]) {
            memcpy(b->key, k, strlen(k) + 1);
            b->tokens = rl->burst;
            b->t = now;
            rl->used++;
        }
        b->tokens = refilled(rl, b, now);
        b->t = now;
        ok = b->tokens >= 1.0;
        if (ok)
            b->tokens -= 1.0;
        else
            *retry_after = (1.0 - b->tokens) / rl->rate;
    }
    pthread_mutex_unlock(&rl->mu);
    return ok;
}

int ratelimit_size(struct ratelimit *rl)
{
    pthread_mutex_lock(&rl->mu);
    int n = (int)rl->used;
    pthread_mutex_unlock(&rl->mu);
    return n;
}
