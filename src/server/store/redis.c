/* store/redis.c - the store of store.h shared by many processes: Redis.
 *
 * API nodes and `diffusiond worker` processes on any number of machines
 * share one Redis (7.0 or later; AOF recommended). Every state change is
 * one Lua script, so it is atomic like the SQLite store's single UPDATEs,
 * and the scripts check the same conditions (status, owner).
 *
 *     dfd:task:<id>     hash: status, prompt, params, seed, created,
 *                       started, finished, attempts, cancel, step, total,
 *                       error, n_images, n_inputs, worker, seq
 *     dfd:seq           submission counter (queue order)
 *     dfd:pending       zset of pending ids, score = seq (all models: counts,
 *                       capacity)
 *     dfd:pending:<m>   the same for the tasks of model m (ZRANK = position;
 *                       the workers serving m pop from it)
 *     dfd:running       zset of processing ids, score = lease end (ms, by
 *                       Redis's own clock: the hosts' clocks never matter)
 *     dfd:finished      zset of finished ids, score = finished_at (expiry)
 *     dfd:expired       zset of tombstones (ids answer 410 for 30 days)
 *     dfd:counts        hash: completed / failed / cancelled, not expired
 *     dfd:img:<id>:<k>  image k (PNG); dfd:in:<id>:<k> input file k
 *     dfd:models        hash: model name -> its info (JSON), for every model a
 *                       worker has ever served
 *     dfd:alive:<m>     zset of the workers serving m, score = heartbeat end
 *     dfd:events        pub/sub channel: an id that changed, or "*" (any);
 *                       "+" before either: and a task became pending (workers
 *                       look). Only a wake-up, never the record
 *
 * Why sorted sets and not a stream with a consumer group: the lease, the
 * owner check and the queue order of store.h map onto them directly. A
 * claim pops the lowest sequence and records the owner and lease end in
 * one script; a heartbeat extends the lease only for the owner; a commit
 * (complete, fail, release) happens only for the owner, so a worker that
 * wakes from a pause after its lease was taken changes nothing (a stream's
 * XACK does not check the owner). A requeued or released task keeps its
 * sequence and runs next, as with SQLite. There is no trimming anywhere,
 * so nothing pending can be dropped.
 *
 * Connections: a pool of synchronous hiredis contexts, one borrowed per
 * call (a context is not thread-safe). A context that fails is dropped and
 * reconnected on its next use, with a short back-off, so a Redis restart
 * costs failed calls (SD_ERR_IO: the API answers 503) but never a crash.
 * The subscriber has its own connection and thread.
 */
#include "server/store/store.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NCONN 4
#define TOMBSTONE_SECONDS (30.0 * 24 * 3600)
#define CONNECT_TIMEOUT_MS 1000
#define COMMAND_TIMEOUT_MS 10000
#define RETRY_AFTER_FAILURE_S 0.5 /* a dead server is not redialled by every call */

struct rconn {
    pthread_mutex_t mu;
    redisContext *c;  /* NULL: not connected */
    double failed_at; /* monotonic time of the last failed connect */
};

struct rs {
    char host[256];
    int port;
    int db;
    char password[256];
    struct rconn conns[NCONN];
    atomic_uint next;
    atomic_llong dialled_us; /* when a connection was last dialled successfully (mono) */
    /* subscriber */
    pthread_t sub_thread;
    int sub_running;
    atomic_int sub_stop;
    pthread_mutex_t sub_mu;
    redisContext *sub_c; /* under sub_mu, to shut it down from close */
    void (*sub_fn)(void *user, const char *id);
    void *sub_user;
};

/* ------------------------------------------------------------------------ */
/* The scripts. Keys are built inside from the "dfd:" prefix (one Redis,
 * no cluster). TIME is Redis's clock: leases never depend on the hosts'. */

#define LUA_NOW_MS                                                                                 \
    "local tm = redis.call('TIME') "                                                               \
    "local now_ms = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000) "

/* ARGV: id prompt params seed created max_pending n_inputs model input... */
static const char lua_put[] =
    "if redis.call('ZCARD', 'dfd:pending') >= tonumber(ARGV[6]) then return 0 end "
    "local t = 'dfd:task:' .. ARGV[1] "
    "if redis.call('EXISTS', t) == 1 then return -1 end "
    "local seq = redis.call('INCR', 'dfd:seq') "
    "redis.call('HSET', t, 'status', 'pending', 'prompt', ARGV[2], 'params', ARGV[3], "
    "  'seed', ARGV[4], 'created', ARGV[5], 'seq', seq, 'attempts', 0, 'cancel', 0, "
    "  'step', 0, 'total', 0, 'n_images', 0, 'n_inputs', ARGV[7], 'model', ARGV[8]) "
    "for k = 0, tonumber(ARGV[7]) - 1 do "
    "  redis.call('SET', 'dfd:in:' .. ARGV[1] .. ':' .. k, ARGV[9 + k]) end "
    "redis.call('ZADD', 'dfd:pending', seq, ARGV[1]) "
    "redis.call('ZADD', 'dfd:pending:' .. ARGV[8], seq, ARGV[1]) "
    "redis.call('PUBLISH', 'dfd:events', '+' .. ARGV[1]) "
    "return 1";

/* ARGV: worker now lease_ms model. Returns {id, field, value, ...} or false. */
static const char lua_claim[] =
    LUA_NOW_MS
    "while true do "
    "  local r = redis.call('ZPOPMIN', 'dfd:pending:' .. ARGV[4]) "
    "  if #r == 0 then return false end "
    "  local id = r[1] "
    "  redis.call('ZREM', 'dfd:pending', id) "
    "  local t = 'dfd:task:' .. id "
    "  if redis.call('HGET', t, 'status') == 'pending' then "
    "    redis.call('HSET', t, 'status', 'processing', 'worker', ARGV[1], 'started', ARGV[2], "
    "      'step', 0, 'total', 0) "
    "    redis.call('HINCRBY', t, 'attempts', 1) "
    "    redis.call('ZADD', 'dfd:running', now_ms + tonumber(ARGV[3]), id) "
    "    redis.call('PUBLISH', 'dfd:events', '*') "
    "    local all = redis.call('HGETALL', t) "
    "    table.insert(all, 1, id) "
    "    return all "
    "  end "
    "end";

/* ARGV: id worker lease_ms. Returns {owned, cancel}. */
static const char lua_heartbeat[] =
    LUA_NOW_MS
    "local t = 'dfd:task:' .. ARGV[1] "
    "local h = redis.call('HMGET', t, 'status', 'worker', 'cancel') "
    "if h[1] ~= 'processing' or h[2] ~= ARGV[2] then return {0, 0} end "
    "redis.call('ZADD', 'dfd:running', now_ms + tonumber(ARGV[3]), ARGV[1]) "
    "return {1, tonumber(h[3]) or 0}";

/* ARGV: id worker step total */
static const char lua_progress[] =
    "local t = 'dfd:task:' .. ARGV[1] "
    "local h = redis.call('HMGET', t, 'status', 'worker') "
    "if h[1] ~= 'processing' or h[2] ~= ARGV[2] then return 0 end "
    "redis.call('HSET', t, 'step', ARGV[3], 'total', ARGV[4]) "
    "redis.call('PUBLISH', 'dfd:events', ARGV[1]) "
    "return 1";

/* The end of a task: status, finished, counts, out of running. */
#define LUA_FINISH(status_expr)                                                                    \
    "redis.call('HSET', t, 'status', " status_expr ", 'finished', ARGV[3]) "                       \
    "redis.call('ZREM', 'dfd:running', ARGV[1]) "                                                  \
    "redis.call('ZADD', 'dfd:finished', ARGV[3], ARGV[1]) "                                        \
    "redis.call('HINCRBY', 'dfd:counts', " status_expr ", 1) "                                     \
    "redis.call('PUBLISH', 'dfd:events', ARGV[1]) "

#define LUA_OWNER                                                                                  \
    "local t = 'dfd:task:' .. ARGV[1] "                                                            \
    "local h = redis.call('HMGET', t, 'status', 'worker', 'cancel', 'attempts', 'seq') "           \
    "if h[1] ~= 'processing' or h[2] ~= ARGV[2] then return 0 end "

/* ARGV: id worker now n image... */
static const char lua_complete[] =
    LUA_OWNER
    "for k = 0, tonumber(ARGV[4]) - 1 do "
    "  redis.call('SET', 'dfd:img:' .. ARGV[1] .. ':' .. k, ARGV[5 + k]) end "
    "redis.call('HSET', t, 'n_images', ARGV[4]) "
    LUA_FINISH("'completed'")
    "return 1";

/* ARGV: id worker now final message */
static const char lua_fail[] =
    LUA_OWNER
    "if ARGV[5] ~= '' then redis.call('HSET', t, 'error', ARGV[5]) end "
    LUA_FINISH("ARGV[4]")
    "return 1";

/* ARGV: id worker now. A cancel requested before the release still wins. */
static const char lua_release[] =
    LUA_OWNER
    "if h[3] == '1' then "
    LUA_FINISH("'cancelled'")
    "  return 1 end "
    "local a = math.max((tonumber(h[4]) or 1) - 1, 0) "
    "redis.call('HSET', t, 'status', 'pending', 'worker', '', 'started', 0, 'step', 0, "
    "  'total', 0, 'attempts', a) "
    "redis.call('ZREM', 'dfd:running', ARGV[1]) "
    "redis.call('ZADD', 'dfd:pending', h[5], ARGV[1]) "
    "redis.call('ZADD', 'dfd:pending:' .. redis.call('HGET', t, 'model'), h[5], ARGV[1]) "
    "redis.call('PUBLISH', 'dfd:events', '+*') "
    "return 1";

/* ARGV: id now (ARGV[3] = now for LUA_FINISH). 0 not found, 1 done,
 * 2 requested, 3 too late. */
static const char lua_cancel[] =
    "local t = 'dfd:task:' .. ARGV[1] "
    "local s = redis.call('HGET', t, 'status') "
    "if not s or s == 'expired' then return 0 end "
    "if s == 'pending' then "
    "  redis.call('ZREM', 'dfd:pending', ARGV[1]) "
    "  redis.call('ZREM', 'dfd:pending:' .. redis.call('HGET', t, 'model'), ARGV[1]) "
    LUA_FINISH("'cancelled'")
    "  redis.call('PUBLISH', 'dfd:events', '*') "
    "  return 1 end "
    "if s == 'processing' then "
    "  redis.call('HSET', t, 'cancel', 1) "
    "  redis.call('PUBLISH', 'dfd:events', ARGV[1]) "
    "  return 2 end "
    "return 3";

/* ARGV: cutoff purge_before. Returns {id, n_images, id, n_images, ...} of
 * those expired. */
static const char lua_expire[] =
    "local ids = redis.call('ZRANGEBYSCORE', 'dfd:finished', '-inf', '(' .. ARGV[1], 'LIMIT', 0, 256) "
    "local out = {} "
    "for _, id in ipairs(ids) do "
    "  local t = 'dfd:task:' .. id "
    "  local h = redis.call('HMGET', t, 'status', 'n_images', 'n_inputs', 'finished') "
    "  for k = 0, (tonumber(h[2]) or 0) - 1 do redis.call('DEL', 'dfd:img:' .. id .. ':' .. k) end "
    "  for k = 0, (tonumber(h[3]) or 0) - 1 do redis.call('DEL', 'dfd:in:' .. id .. ':' .. k) end "
    "  redis.call('HDEL', t, 'prompt', 'params', 'error') "
    "  redis.call('HSET', t, 'status', 'expired', 'n_images', 0, 'n_inputs', 0) "
    "  if h[1] then redis.call('HINCRBY', 'dfd:counts', h[1], -1) end "
    "  redis.call('ZREM', 'dfd:finished', id) "
    "  redis.call('ZADD', 'dfd:expired', h[4] or ARGV[1], id) "
    "  table.insert(out, id) "
    "  table.insert(out, tonumber(h[2]) or 0) "
    "end "
    "local old = redis.call('ZRANGEBYSCORE', 'dfd:expired', '-inf', '(' .. ARGV[2], 'LIMIT', 0, 256) "
    "for _, id in ipairs(old) do "
    "  redis.call('DEL', 'dfd:task:' .. id) "
    "  redis.call('ZREM', 'dfd:expired', id) "
    "end "
    "return out";

/* ARGV: now max_attempts (ARGV[3] = now for LUA_FINISH). Tasks whose lease
 * ran out (by Redis's clock) go back to pending, keeping their place, or
 * fail after max_attempts claims. */
static const char lua_requeue[] =
    LUA_NOW_MS
    "ARGV[3] = ARGV[1] "
    "local ids = redis.call('ZRANGEBYSCORE', 'dfd:running', '-inf', now_ms, 'LIMIT', 0, 256) "
    "local n = 0 "
    "for _, id in ipairs(ids) do "
    "  ARGV[1] = id "
    "  local t = 'dfd:task:' .. id "
    "  local h = redis.call('HMGET', t, 'status', 'attempts', 'cancel', 'seq') "
    "  redis.call('ZREM', 'dfd:running', id) "
    "  if h[1] == 'processing' then "
    "    n = n + 1 "
    "    if h[3] == '1' then "
    LUA_FINISH("'cancelled'")
    "    elseif (tonumber(h[2]) or 0) >= tonumber(ARGV[2]) then "
    "      redis.call('HSET', t, 'error', 'the worker running this task stopped ' .. h[2] .. "
    "        ' times without finishing it') "
    LUA_FINISH("'failed'")
    "    else "
    "      redis.call('HSET', t, 'status', 'pending', 'worker', '', 'step', 0, 'total', 0) "
    "      redis.call('ZADD', 'dfd:pending', h[4], id) "
    "      redis.call('ZADD', 'dfd:pending:' .. redis.call('HGET', t, 'model'), h[4], id) "
    "      redis.call('PUBLISH', 'dfd:events', '+*') "
    "    end "
    "  end "
    "end "
    "return n";

/* ARGV: id. 1-based place among the pending tasks of its model. */
static const char lua_position[] =
    "local m = redis.call('HGET', 'dfd:task:' .. ARGV[1], 'model') "
    "if not m then return 0 end "
    "local r = redis.call('ZRANK', 'dfd:pending:' .. m, ARGV[1]) "
    "if not r then return 0 end "
    "return r + 1";

/* ARGV: worker model info ttl_ms */
static const char lua_advertise[] =
    LUA_NOW_MS
    "redis.call('HSET', 'dfd:models', ARGV[2], ARGV[3]) "
    "redis.call('ZADD', 'dfd:alive:' .. ARGV[2], now_ms + tonumber(ARGV[4]), ARGV[1]) "
    "return 1";

/* ARGV: worker model: a worker stopping says so */
static const char lua_retire[] =
    "redis.call('ZREM', 'dfd:alive:' .. ARGV[2], ARGV[1]) "
    "return 1";

/* Returns the fleet as JSON: [{"name", "info", "workers": [live names]}]. */
static const char lua_models[] =
    LUA_NOW_MS
    "local out = {} "
    "local all = redis.call('HGETALL', 'dfd:models') "
    "for i = 1, #all, 2 do "
    "  local k = 'dfd:alive:' .. all[i] "
    "  redis.call('ZREMRANGEBYSCORE', k, '-inf', now_ms) "
    "  local w = redis.call('ZRANGE', k, 0, -1) "
    "  table.insert(out, {name = all[i], info = all[i + 1], workers = w}) "
    "end "
    "return cjson.encode(out)";

/* ARGV: client per_minute burst. A token bucket every API node shares,
 * on Redis's clock. Returns {allowed, retry_after_ms}. */
static const char lua_rate[] =
    LUA_NOW_MS
    "local k = 'dfd:rate:' .. ARGV[1] "
    "local rate = tonumber(ARGV[2]) / 60000 "
    "local burst = tonumber(ARGV[3]) "
    "local h = redis.call('HMGET', k, 'tokens', 'at') "
    "local tokens = tonumber(h[1]) or burst "
    "local at = tonumber(h[2]) or now_ms "
    "tokens = math.min(burst, tokens + (now_ms - at) * rate) "
    "local ok, wait = 0, 0 "
    "if tokens >= 1 then tokens = tokens - 1 ok = 1 "
    "else wait = math.ceil((1 - tokens) / rate) end "
    "redis.call('HSET', k, 'tokens', tostring(tokens), 'at', now_ms) "
    "redis.call('PEXPIRE', k, math.ceil(burst / rate) + 1000) "
    "return {ok, wait}";

/* ------------------------------------------------------------------------ */
/* Connections */

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct timeval ms_tv(int ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

/* A new context, authenticated and on the right database; NULL with err set. */
static redisContext *dial(const struct rs *s, int timeout_ms, struct sd_err *err)
{
    redisContext *c = redisConnectWithTimeout(s->host, s->port, ms_tv(CONNECT_TIMEOUT_MS));
    if (!c || c->err) {
        sd_errf(err, SD_ERR_IO, "redis %s:%d: %s", s->host, s->port,
                c ? c->errstr : "cannot allocate a connection");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, ms_tv(timeout_ms));
    redisEnableKeepAlive(c);
    const char *fail = NULL;
    char dbs[16];
    snprintf(dbs, sizeof dbs, "%d", s->db);
    redisReply *r = NULL;
    if (s->password[0]) {
        r = redisCommand(c, "AUTH %s", s->password);
        fail = !r || r->type == REDIS_REPLY_ERROR ? "AUTH" : NULL;
        freeReplyObject(r);
    }
    if (!fail && s->db) {
        r = redisCommand(c, "SELECT %s", dbs);
        fail = !r || r->type == REDIS_REPLY_ERROR ? "SELECT" : NULL;
        freeReplyObject(r);
    }
    if (fail) {
        sd_errf(err, SD_ERR_IO, "redis %s:%d: %s failed: %s", s->host, s->port, fail,
                c->err ? c->errstr : "refused");
        redisFree(c);
        return NULL;
    }
    return c;
}

static struct rconn *conn_get(struct rs *s)
{
    unsigned start = atomic_fetch_add(&s->next, 1);
    for (unsigned i = 0; i < NCONN; i++) {
        struct rconn *c = &s->conns[(start + i) % NCONN];
        if (pthread_mutex_trylock(&c->mu) == 0)
            return c;
    }
    struct rconn *c = &s->conns[start % NCONN];
    pthread_mutex_lock(&c->mu);
    return c;
}

/* Whether the server closed this connection (a restart): a pooled
 * connection is checked before use, so the first command after a restart
 * goes to the new server instead of failing on the dead socket. */
static int peer_closed(int fd)
{
    char ch;
    ssize_t n = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return 0; /* unread bytes: not ours to judge */
    return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Run one command (binary-safe arguments); *out is the reply, which the
 * caller frees. A Redis error reply is SD_ERR_IO with its text; a broken
 * connection is dropped (the next call redials). */
static int run(struct rs *s, int argc, const char **argv, const size_t *lens, redisReply **out,
               struct sd_err *err)
{
    *out = NULL;
    struct rconn *c = conn_get(s);
    int rc = SD_OK;
    if (c->c && peer_closed(c->c->fd)) { /* Redis restarted since this one was used */
        redisFree(c->c);
        c->c = NULL;
        c->failed_at = 0;
    }
    if (!c->c) {
        /* Back off after a failure, unless another connection has got
         * through since: then Redis is back and this one redials now. */
        if (c->failed_at && mono() - c->failed_at < RETRY_AFTER_FAILURE_S &&
            atomic_load(&s->dialled_us) <= (long long)(c->failed_at * 1e6)) {
            pthread_mutex_unlock(&c->mu);
            return sd_errf(err, SD_ERR_IO, "redis %s:%d: unreachable", s->host, s->port);
        }
        if (!(c->c = dial(s, COMMAND_TIMEOUT_MS, err))) {
            c->failed_at = mono();
            pthread_mutex_unlock(&c->mu);
            return SD_ERR_IO;
        }
        c->failed_at = 0;
        atomic_store(&s->dialled_us, (long long)(mono() * 1e6));
    }
    redisReply *r = redisCommandArgv(c->c, argc, argv, lens);
    if (!r) {
        rc = sd_errf(err, SD_ERR_IO, "redis %s:%d: %s", s->host, s->port,
                     c->c->errstr[0] ? c->c->errstr : "connection lost");
        redisFree(c->c);
        c->c = NULL;
        c->failed_at = mono();
    } else if (r->type == REDIS_REPLY_ERROR) {
        rc = sd_errf(err, SD_ERR_IO, "redis: %s: %.*s", argv[0], (int)r->len, r->str);
        freeReplyObject(r);
        r = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    *out = r;
    return rc;
}

/* EVAL script with the given arguments (keys: none). */
static int eval(struct rs *s, const char *script, int nargs, const char **args, const size_t *lens,
                redisReply **out, struct sd_err *err)
{
    const char *argv[3 + 2 + STORE_MAX_IMAGES + 8];
    size_t alen[3 + 2 + STORE_MAX_IMAGES + 8];
    SD_ASSERT(nargs <= STORE_MAX_IMAGES + 8);
    argv[0] = "EVAL", alen[0] = 4;
    argv[1] = script, alen[1] = strlen(script);
    argv[2] = "0", alen[2] = 1;
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
        alen[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    return run(s, 3 + nargs, argv, alen, out, err);
}

static long long reply_int(const redisReply *r)
{
    if (!r)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Tasks from hashes */

static int copy_field(char **dst, const redisReply *v)
{
    *dst = malloc(v->len + 1);
    if (!*dst)
        return -1;
    memcpy(*dst, v->str, v->len);
    (*dst)[v->len] = '\0';
    return 0;
}

/* Fill t from HGETALL's flat [field, value, ...] array (from index `from`). */
static int hash_to_task(const redisReply *a, size_t from, const char *id, struct task *t,
                        struct sd_err *err)
{
    memset(t, 0, sizeof *t);
    if (strlen(id) != UUID_STR_LEN - 1 || !uuid_valid(id))
        return sd_errf(err, SD_ERR_FORMAT, "redis: a task with a bad id");
    memcpy(t->id, id, UUID_STR_LEN);
    int status = -1, bad = 0;
    for (size_t i = from; i + 1 < a->elements; i += 2) {
        const redisReply *k = a->element[i], *v = a->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        const char *f = k->str, *s = v->str;
        if (!strcmp(f, "status"))
            status = task_status_from_name(s);
        else if (!strcmp(f, "prompt"))
            bad |= copy_field(&t->prompt, v);
        else if (!strcmp(f, "params"))
            bad |= copy_field(&t->params, v);
        else if (!strcmp(f, "error"))
            bad |= copy_field(&t->error_message, v);
        else if (!strcmp(f, "model"))
            bad |= copy_field(&t->model, v);
        else if (!strcmp(f, "seed"))
            t->seed = strtoll(s, NULL, 10);
        else if (!strcmp(f, "step"))
            t->step = atoi(s);
        else if (!strcmp(f, "total"))
            t->total_steps = atoi(s);
        else if (!strcmp(f, "created"))
            t->created_at = strtod(s, NULL);
        else if (!strcmp(f, "started"))
            t->started_at = strtod(s, NULL);
        else if (!strcmp(f, "finished"))
            t->finished_at = strtod(s, NULL);
        else if (!strcmp(f, "attempts"))
            t->attempts = atoi(s);
        else if (!strcmp(f, "cancel"))
            t->cancel_requested = atoi(s);
        else if (!strcmp(f, "n_images"))
            t->n_images = atoi(s);
        else if (!strcmp(f, "n_inputs"))
            t->n_inputs = atoi(s);
    }
    if (bad) {
        task_clear(t);
        return sd_errf(err, SD_ERR_NOMEM, "redis: out of memory reading a task");
    }
    if (status < 0) {
        task_clear(t);
        return sd_errf(err, SD_ERR_FORMAT, "redis: task %s has no valid status", id);
    }
    t->status = (enum task_status)status;
    if (t->status != TASK_COMPLETED)
        t->n_images = 0;
    if (t->n_images > STORE_MAX_IMAGES || t->n_images < 0 || t->n_inputs > STORE_MAX_INPUTS ||
        t->n_inputs < 0)
        t->n_images = t->n_inputs = 0;
    return SD_OK;
}

/* ------------------------------------------------------------------------ */
/* Operations */

static void num(char *buf, size_t cap, double v)
{
    snprintf(buf, cap, "%.17g", v);
}

static int rs_put(void *ctx, const struct task *t, const struct blob *inputs, int n_inputs,
                  int max_pending, int *accepted, struct sd_err *err)
{
    struct rs *s = ctx;
    SD_ASSERT(n_inputs >= 0 && n_inputs <= STORE_MAX_INPUTS);
    char seed[32], created[40], cap[16], nin[8];
    const char *model = t->model && t->model[0] ? t->model : "default";
    snprintf(seed, sizeof seed, "%lld", (long long)t->seed);
    num(created, sizeof created, t->created_at);
    snprintf(cap, sizeof cap, "%d", max_pending);
    snprintf(nin, sizeof nin, "%d", n_inputs);
    const char *a[8 + STORE_MAX_INPUTS] = {t->id, t->prompt ? t->prompt : "",
                                           t->params ? t->params : "{}", seed, created, cap, nin,
                                           model};
    size_t l[8 + STORE_MAX_INPUTS];
    for (int i = 0; i < 8; i++)
        l[i] = strlen(a[i]);
    for (int k = 0; k < n_inputs; k++)
        a[8 + k] = (const char *)inputs[k].data, l[8 + k] = inputs[k].len;
    redisReply *r;
    int rc = eval(s, lua_put, 8 + n_inputs, a, l, &r, err);
    *accepted = !rc && reply_int(r) == 1;
    if (!rc && reply_int(r) == -1)
        rc = sd_errf(err, SD_ERR_INTERNAL, "redis: task id %s already exists", t->id);
    freeReplyObject(r);
    return rc;
}

static int rs_claim(void *ctx, const char *worker, const char *model, double now, double lease_s,
                    struct task *out, int *claimed, struct sd_err *err)
{
    struct rs *s = ctx;
    *claimed = 0;
    char nows[40], lease[32];
    num(nows, sizeof nows, now);
    snprintf(lease, sizeof lease, "%lld", (long long)(lease_s * 1000));
    const char *a[] = {worker, nows, lease, model && model[0] ? model : "default"};
    redisReply *r;
    int rc = eval(s, lua_claim, 4, a, NULL, &r, err);
    if (!rc && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        rc = hash_to_task(r, 1, r->element[0]->str, out, err);
        *claimed = rc == SD_OK;
    }
    freeReplyObject(r);
    return rc;
}

static int rs_heartbeat(void *ctx, const char *id, const char *worker, double now, double lease_s,
                        int *owned, int *cancel_requested, struct sd_err *err)
{
    struct rs *s = ctx;
    (void)now;
    char lease[32];
    snprintf(lease, sizeof lease, "%lld", (long long)(lease_s * 1000));
    const char *a[] = {id, worker, lease};
    redisReply *r;
    *owned = *cancel_requested = 0;
    int rc = eval(s, lua_heartbeat, 3, a, NULL, &r, err);
    if (!rc && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        *owned = (int)reply_int(r->element[0]);
        *cancel_requested = (int)reply_int(r->element[1]);
    }
    freeReplyObject(r);
    return rc;
}

static int rs_progress(void *ctx, const char *id, const char *worker, int step, int total,
                       struct sd_err *err)
{
    struct rs *s = ctx;
    char st[16], tot[16];
    snprintf(st, sizeof st, "%d", step);
    snprintf(tot, sizeof tot, "%d", total);
    const char *a[] = {id, worker, st, tot};
    redisReply *r;
    int rc = eval(s, lua_progress, 4, a, NULL, &r, err);
    freeReplyObject(r);
    return rc;
}

static int rs_complete(void *ctx, const char *id, const char *worker, double now,
                       const struct blob *images, int n, int *owned, struct sd_err *err)
{
    struct rs *s = ctx;
    SD_ASSERT(n >= 1 && n <= STORE_MAX_IMAGES);
    char nows[40], ns[8];
    num(nows, sizeof nows, now);
    snprintf(ns, sizeof ns, "%d", n);
    const char *a[4 + STORE_MAX_IMAGES] = {id, worker, nows, ns};
    size_t l[4 + STORE_MAX_IMAGES];
    for (int i = 0; i < 4; i++)
        l[i] = strlen(a[i]);
    for (int k = 0; k < n; k++)
        a[4 + k] = (const char *)images[k].data, l[4 + k] = images[k].len;
    redisReply *r;
    int rc = eval(s, lua_complete, 4 + n, a, l, &r, err);
    *owned = !rc && reply_int(r) == 1;
    freeReplyObject(r);
    return rc;
}

static int rs_fail(void *ctx, const char *id, const char *worker, double now,
                   enum task_status final, const char *message, int *owned, struct sd_err *err)
{
    struct rs *s = ctx;
    SD_ASSERT(final == TASK_FAILED || final == TASK_CANCELLED);
    char nows[40];
    num(nows, sizeof nows, now);
    const char *a[] = {id, worker, nows, task_status_name(final), message ? message : ""};
    redisReply *r;
    int rc = eval(s, lua_fail, 5, a, NULL, &r, err);
    *owned = !rc && reply_int(r) == 1;
    freeReplyObject(r);
    return rc;
}

static int rs_release(void *ctx, const char *id, const char *worker, int *owned,
                      struct sd_err *err)
{
    struct rs *s = ctx;
    char nows[40];
    num(nows, sizeof nows, now_unix());
    const char *a[] = {id, worker, nows};
    redisReply *r;
    int rc = eval(s, lua_release, 3, a, NULL, &r, err);
    *owned = !rc && reply_int(r) == 1;
    freeReplyObject(r);
    return rc;
}

static int rs_cancel(void *ctx, const char *id, double now, enum cancel_result *result,
                     struct sd_err *err)
{
    struct rs *s = ctx;
    char nows[40];
    num(nows, sizeof nows, now);
    const char *a[] = {id, nows, nows}; /* ARGV[3]: LUA_FINISH's time */
    redisReply *r;
    int rc = eval(s, lua_cancel, 3, a, NULL, &r, err);
    static const enum cancel_result map[] = {CANCEL_NOT_FOUND, CANCEL_DONE, CANCEL_REQUESTED,
                                             CANCEL_TOO_LATE};
    long long v = rc ? 0 : reply_int(r);
    *result = map[v >= 0 && v <= 3 ? v : 0];
    freeReplyObject(r);
    return rc;
}

static int rs_get(void *ctx, const char *id, struct task *out, int *found, struct sd_err *err)
{
    struct rs *s = ctx;
    *found = 0;
    memset(out, 0, sizeof *out);
    char key[64];
    snprintf(key, sizeof key, "dfd:task:%s", id);
    const char *a[] = {"HGETALL", key};
    redisReply *r;
    int rc = run(s, 2, a, NULL, &r, err);
    if (!rc && r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        rc = hash_to_task(r, 0, id, out, err);
        *found = rc == SD_OK;
    }
    freeReplyObject(r);
    return rc;
}

/* Blob k of a task when its count field allows it: "dfd:img" / "n_images"
 * (completed only) or "dfd:in" / "n_inputs" (not expired). */
static int blob_get(struct rs *s, const char *id, int k, int images, uint8_t **data, size_t *len,
                    struct sd_err *err)
{
    *data = NULL;
    *len = 0;
    if (k < 0 || k >= (images ? STORE_MAX_IMAGES : STORE_MAX_INPUTS))
        return SD_OK;
    char key[64];
    snprintf(key, sizeof key, "dfd:task:%s", id);
    const char *a[] = {"HMGET", key, "status", images ? "n_images" : "n_inputs"};
    redisReply *r;
    int rc = run(s, 4, a, NULL, &r, err);
    int ok = !rc && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[0]->type == REDIS_REPLY_STRING &&
             (images ? !strcmp(r->element[0]->str, "completed")
                     : strcmp(r->element[0]->str, "expired") != 0) &&
             k < reply_int(r->element[1]);
    freeReplyObject(r);
    if (rc || !ok)
        return rc;
    snprintf(key, sizeof key, "dfd:%s:%s:%d", images ? "img" : "in", id, k);
    const char *g[] = {"GET", key};
    rc = run(s, 2, g, NULL, &r, err);
    if (!rc && r->type == REDIS_REPLY_STRING) {
        *data = malloc(r->len ? r->len : 1);
        if (!*data)
            rc = sd_errf(err, SD_ERR_NOMEM, "redis: out of memory reading %s", key);
        else {
            memcpy(*data, r->str, r->len);
            *len = r->len;
        }
    }
    freeReplyObject(r);
    return rc;
}

static int rs_image(void *ctx, const char *id, int k, uint8_t **png, size_t *len,
                    struct sd_err *err)
{
    return blob_get(ctx, id, k, 1, png, len, err);
}

static int rs_input(void *ctx, const char *id, int k, uint8_t **data, size_t *len,
                    struct sd_err *err)
{
    return blob_get(ctx, id, k, 0, data, len, err);
}

static int rs_position(void *ctx, const char *id, int *pos, struct sd_err *err)
{
    struct rs *s = ctx;
    const char *a[] = {id};
    redisReply *r;
    int rc = eval(s, lua_position, 1, a, NULL, &r, err);
    *pos = rc ? 0 : (int)reply_int(r);
    freeReplyObject(r);
    return rc;
}

static int rs_rate_take(void *ctx, const char *client, double per_minute, int burst, int *allowed,
                        double *retry_after, struct sd_err *err)
{
    struct rs *s = ctx;
    char pm[40], b[16];
    num(pm, sizeof pm, per_minute);
    snprintf(b, sizeof b, "%d", burst);
    const char *a[] = {client, pm, b};
    redisReply *r;
    int rc = eval(s, lua_rate, 3, a, NULL, &r, err);
    *allowed = 1;
    *retry_after = 0;
    if (!rc && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        *allowed = (int)reply_int(r->element[0]);
        *retry_after = (double)reply_int(r->element[1]) / 1000.0;
    }
    freeReplyObject(r);
    return rc;
}

static int rs_advertise(void *ctx, const char *worker, const char *model, const char *info,
                        double ttl_s, struct sd_err *err)
{
    struct rs *s = ctx;
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%lld", (long long)(ttl_s * 1000));
    const char *a[] = {worker, model, info ? info : "{}", ttl};
    redisReply *r;
    int rc = eval(s, ttl_s > 0 ? lua_advertise : lua_retire, ttl_s > 0 ? 4 : 2, a, NULL, &r, err);
    freeReplyObject(r);
    return rc;
}

static int rs_models(void *ctx, char **json, struct sd_err *err)
{
    struct rs *s = ctx;
    *json = NULL;
    redisReply *r;
    int rc = eval(s, lua_models, 0, NULL, NULL, &r, err);
    if (!rc && r->type == REDIS_REPLY_STRING && !(*json = strdup(r->str)))
        rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
    freeReplyObject(r);
    return rc;
}

static int rs_expire(void *ctx, double cutoff, int *n,
                     void (*gone)(void *user, const char *id, int n_images), void *user,
                     struct sd_err *err)
{
    struct rs *s = ctx;
    char c[40], p[40];
    num(c, sizeof c, cutoff);
    num(p, sizeof p, cutoff - TOMBSTONE_SECONDS);
    const char *a[] = {c, p};
    redisReply *r;
    int rc = eval(s, lua_expire, 2, a, NULL, &r, err);
    *n = 0;
    if (!rc && r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            (*n)++;
            if (gone && r->element[i]->type == REDIS_REPLY_STRING)
                gone(user, r->element[i]->str, (int)reply_int(r->element[i + 1]));
        }
    freeReplyObject(r);
    return rc;
}

static int rs_counts(void *ctx, long long counts[TASK_STATUS_COUNT], struct sd_err *err)
{
    struct rs *s = ctx;
    memset(counts, 0, sizeof(long long) * TASK_STATUS_COUNT);
    const char *z1[] = {"ZCARD", "dfd:pending"}, *z2[] = {"ZCARD", "dfd:running"},
               *h[] = {"HGETALL", "dfd:counts"};
    redisReply *r;
    int rc = run(s, 2, z1, NULL, &r, err);
    counts[TASK_PENDING] = reply_int(r);
    freeReplyObject(r);
    if (!rc && !(rc = run(s, 2, z2, NULL, &r, err)))
        counts[TASK_PROCESSING] = reply_int(r);
    freeReplyObject(r);
    r = NULL;
    if (!rc && !(rc = run(s, 2, h, NULL, &r, err)) && r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            int st = r->element[i]->type == REDIS_REPLY_STRING
                         ? task_status_from_name(r->element[i]->str)
                         : -1;
            if (st == TASK_COMPLETED || st == TASK_FAILED || st == TASK_CANCELLED)
                counts[st] = reply_int(r->element[i + 1]);
        }
    freeReplyObject(r);
    return rc;
}

static int rs_requeue(void *ctx, double now, int max_attempts, int *n, struct sd_err *err)
{
    struct rs *s = ctx;
    char nows[40], ma[16];
    num(nows, sizeof nows, now > 1e15 ? now_unix() : now);
    snprintf(ma, sizeof ma, "%d", max_attempts);
    const char *a[] = {nows, ma};
    redisReply *r;
    int rc = eval(s, lua_requeue, 2, a, NULL, &r, err);
    *n = rc ? 0 : (int)reply_int(r);
    freeReplyObject(r);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Change notifications */

static void *sub_main(void *arg)
{
    struct rs *s = arg;
    double backoff = 0.1;
    while (!atomic_load(&s->sub_stop)) {
        struct sd_err err = {0};
        redisContext *c = dial(s, 0 /* no timeout: blocks until a message */, &err);
        if (c) {
            redisReply *r = redisCommand(c, "SUBSCRIBE dfd:events");
            freeReplyObject(r);
            pthread_mutex_lock(&s->sub_mu);
            s->sub_c = c;
            int stop = atomic_load(&s->sub_stop);
            pthread_mutex_unlock(&s->sub_mu);
            if (!stop) {
                s->sub_fn(s->sub_user, "+*"); /* whatever changed while we were away */
                backoff = 0.1;
                void *reply;
                while (redisGetReply(c, &reply) == REDIS_OK) {
                    redisReply *m = reply;
                    if (m && m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
                        m->element[2]->type == REDIS_REPLY_STRING)
                        s->sub_fn(s->sub_user, m->element[2]->str);
                    freeReplyObject(m);
                }
            }
            pthread_mutex_lock(&s->sub_mu);
            s->sub_c = NULL;
            pthread_mutex_unlock(&s->sub_mu);
            redisFree(c);
        }
        for (double slept = 0; slept < backoff && !atomic_load(&s->sub_stop); slept += 0.05)
            usleep(50000);
        backoff = backoff * 2 > 5 ? 5 : backoff * 2;
    }
    return NULL;
}

static void sub_stop(struct rs *s)
{
    if (!s->sub_running)
        return;
    atomic_store(&s->sub_stop, 1);
    pthread_mutex_lock(&s->sub_mu);
    if (s->sub_c) /* wake the blocked read */
        shutdown(s->sub_c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&s->sub_mu);
    pthread_join(s->sub_thread, NULL);
    s->sub_running = 0;
}

static int rs_subscribe(void *ctx, void (*fn)(void *user, const char *id), void *user,
                        struct sd_err *err)
{
    struct rs *s = ctx;
    if (!fn) {
        sub_stop(s);
        return SD_OK;
    }
    if (s->sub_running)
        return SD_OK;
    atomic_store(&s->sub_stop, 0);
    s->sub_fn = fn;
    s->sub_user = user;
    if (pthread_create(&s->sub_thread, NULL, sub_main, s))
        return sd_errf(err, SD_ERR_INTERNAL, "redis: cannot start the subscriber thread");
    s->sub_running = 1;
    return SD_OK;
}

static void rs_close(void *ctx)
{
    struct rs *s = ctx;
    if (!s)
        return;
    sub_stop(s);
    for (int i = 0; i < NCONN; i++) {
        if (s->conns[i].c)
            redisFree(s->conns[i].c);
        pthread_mutex_destroy(&s->conns[i].mu);
    }
    pthread_mutex_destroy(&s->sub_mu);
    free(s);
}

static const struct store_ops redis_ops = {
    .name = "redis",
    .shared = 1,
    .put = rs_put,
    .input = rs_input,
    .claim = rs_claim,
    .heartbeat = rs_heartbeat,
    .progress = rs_progress,
    .complete = rs_complete,
    .fail = rs_fail,
    .release = rs_release,
    .cancel = rs_cancel,
    .get = rs_get,
    .image = rs_image,
    .position = rs_position,
    .expire = rs_expire,
    .counts = rs_counts,
    .requeue = rs_requeue,
    .subscribe = rs_subscribe,
    .advertise = rs_advertise,
    .rate_take = rs_rate_take,
    .models = rs_models,
    .close = rs_close,
};

/* redis://[:password@]host[:port][/db] */
static int parse_url(struct rs *s, const char *url, struct sd_err *err)
{
    const char *p = url + 8; /* after "redis://" */
    const char *at = strchr(p, '@'), *slash;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if ((size_t)(at - pw) >= sizeof s->password)
            return sd_errf(err, SD_ERR_ARG, "%s: password too long", url);
        memcpy(s->password, pw, (size_t)(at - pw));
        p = at + 1;
    }
    slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    const char *colon = memchr(p, ':', hl);
    size_t host_len = colon ? (size_t)(colon - p) : hl;
    if (host_len == 0 || host_len >= sizeof s->host)
        return sd_errf(err, SD_ERR_ARG, "%s: expected redis://host[:port][/db]", url);
    memcpy(s->host, p, host_len);
    s->port = 6379;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != p + hl || port <= 0 || port > 65535)
            return sd_errf(err, SD_ERR_ARG, "%s: bad port", url);
        s->port = (int)port;
    }
    if (slash && slash[1]) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 1000)
            return sd_errf(err, SD_ERR_ARG, "%s: bad database number", url);
        s->db = (int)db;
    }
    return SD_OK;
}

int store_redis_open(struct store *out, const char *url, struct sd_err *err)
{
    if (strncmp(url, "redis://", 8))
        return sd_errf(err, SD_ERR_ARG, "%s: a Redis store is redis://host[:port][/db]", url);
    struct rs *s = calloc(1, sizeof *s);
    if (!s)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < NCONN; i++)
        pthread_mutex_init(&s->conns[i].mu, NULL);
    pthread_mutex_init(&s->sub_mu, NULL);
    int rc = parse_url(s, url, err);
    if (rc) {
        rs_close(s);
        return rc;
    }
    /* Check the server now (and its version: ZPOPMIN and HSET with several
     * fields need 5.0; 7.0 is what this is tested with). */
    const char *a[] = {"INFO", "server"};
    redisReply *r;
    if ((rc = run(s, 2, a, NULL, &r, err))) {
        rs_close(s);
        return rc;
    }
    const char *v = r->type == REDIS_REPLY_STRING ? strstr(r->str, "redis_version:") : NULL;
    int major = v ? atoi(v + 14) : 0;
    freeReplyObject(r);
    if (major < 5) {
        rs_close(s);
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: Redis 5.0 or later is needed (found %d)", url, major);
    }
    out->ops = &redis_ops;
    out->ctx = s;
    return SD_OK;
}
