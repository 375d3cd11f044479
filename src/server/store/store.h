/* store.h - where tasks, the queue and results live.
 *
 * One small interface, several implementations: store/sqlite.c (one
 * machine: SQLite in WAL mode plus image files in the data directory) now,
 * a Redis one (several machines, separate worker processes) next. Like a
 * ggml backend, a store is a table of function pointers plus a context;
 * callers use the store_* wrappers below and never see the implementation.
 *
 * A task's life:
 *
 *     put            -> pending            (HTTP thread, atomically bounded by capacity)
 *     claim          -> processing         (worker; lowest sequence first, with a lease)
 *     heartbeat         keeps the lease, reports a cancellation request
 *     progress          step / total_steps of the running generation
 *     complete       -> completed          (its images stored with it)
 *     fail           -> failed | cancelled (worker gave up / honoured a cancel)
 *     release        -> pending            (worker shutting down: run it again later)
 *     cancel         -> cancelled          (pending) or cancel requested (processing)
 *     requeue           processing tasks whose lease ran out -> pending
 *                       (how a kill -9 mid-generation recovers)
 *     expire         -> expired            finished tasks older than a cutoff lose
 *                                          their prompt, parameters, inputs and images
 *
 * A task may carry input files (an init image and a mask, as the client sent
 * them: put stores them with the task, input reads them back) and finishes
 * with one or more output images (PNG bytes), numbered from 0.
 *
 * Worker-side calls (heartbeat, progress, complete, fail, release) name the
 * worker; they change nothing (and say so through *owned = 0) when the task
 * is no longer processing under that worker, e.g. after its lease ran out and
 * another worker took it. That keeps at-least-once execution safe.
 *
 * Threads: every function may be called from any thread at any time; the
 * implementation serialises what needs serialising. Times are Unix seconds
 * (double). Strings in a struct task filled by the store are malloc'd and
 * owned by the task: release them with task_clear().
 *
 * Errors: functions return SD_OK or SD_ERR_* for failures of the store
 * itself (I/O, corrupt database); outcomes such as "not found" or "queue
 * full" are results in out-parameters, not errors.
 */
#ifndef SD_SERVER_STORE_H
#define SD_SERVER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "server/sutil.h"
#include "util/err.h"

enum task_status {
    TASK_PENDING,
    TASK_PROCESSING,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_CANCELLED,
    TASK_EXPIRED,
    TASK_STATUS_COUNT
};

/* "pending", ... ; task_status_from_name returns -1 for an unknown name. */
const char *task_status_name(enum task_status s);
int task_status_from_name(const char *name);
/* completed, failed, cancelled, expired: nothing more will happen. */
int task_status_final(enum task_status s);

struct task {
    char id[UUID_STR_LEN];
    enum task_status status;
    char *prompt;           /* NULL once expired */
    char *params;           /* the normalised request as JSON text; NULL once expired */
    int64_t seed;           /* the seed the generation uses */
    int step, total_steps;  /* progress of a running or finished generation */
    double created_at;      /* 0 where not reached yet */
    double started_at;
    double finished_at;
    int attempts;           /* times a worker claimed it */
    int cancel_requested;
    char *error_message;    /* failed: why; NULL otherwise */
    char *model;            /* the model that runs it; NULL: the default one */
    int n_images;           /* images stored (completed); 0 otherwise */
    int n_inputs;           /* input files stored with the task */
};

/* Bytes handed to the store (borrowed for the call). */
struct blob {
    const uint8_t *data;
    size_t len;
};

#define STORE_MAX_INPUTS 4
#define STORE_MAX_IMAGES 64

/* Free the strings of t and zero it. Safe on a zeroed task. */
void task_clear(struct task *t);

enum cancel_result {
    CANCEL_NOT_FOUND,  /* no such task (or expired: see the task) */
    CANCEL_DONE,       /* was pending; now cancelled */
    CANCEL_REQUESTED,  /* is processing; the worker stops at its next step */
    CANCEL_TOO_LATE,   /* already finished (status in *status_out) */
};

struct store_ops {
    const char *name;
    /* Several processes use the store at once (Redis): a process starting
     * must not take the tasks it finds processing for its own crashed ones
     * (the lease decides that). 0: one process owns it (SQLite's lock). */
    int shared;
    /* Insert t (id, prompt, params, seed, created_at) with its n_inputs
     * input files (<= STORE_MAX_INPUTS) as pending if fewer than max_pending
     * tasks are pending; *accepted says whether it was (when not, nothing
     * of it is kept). */
    int (*put)(void *ctx, const struct task *t, const struct blob *inputs, int n_inputs,
               int max_pending, int *accepted, struct sd_err *err);
    /* Input file k of a task that is not expired; *data is malloc'd
     * (caller frees), NULL when there is none. */
    int (*input)(void *ctx, const char *id, int k, uint8_t **data, size_t *len,
                 struct sd_err *err);
    /* Take the oldest pending task of model (NULL: any; a store with one
     * model ignores it): processing, owned by worker until now + lease_s.
     * *claimed = 0 when the queue is empty. */
    int (*claim)(void *ctx, const char *worker, const char *model, double now, double lease_s,
                 struct task *out, int *claimed, struct sd_err *err);
    int (*heartbeat)(void *ctx, const char *id, const char *worker, double now, double lease_s,
                     int *owned, int *cancel_requested, struct sd_err *err);
    int (*progress)(void *ctx, const char *id, const char *worker, int step, int total,
                    struct sd_err *err);
    /* n images (1..STORE_MAX_IMAGES), stored as image 0..n-1. */
    int (*complete)(void *ctx, const char *id, const char *worker, double now,
                    const struct blob *images, int n, int *owned, struct sd_err *err);
    /* final is TASK_FAILED (with message) or TASK_CANCELLED. */
    int (*fail)(void *ctx, const char *id, const char *worker, double now,
                enum task_status final, const char *message, int *owned, struct sd_err *err);
    int (*release)(void *ctx, const char *id, const char *worker, int *owned,
                   struct sd_err *err);
    int (*cancel)(void *ctx, const char *id, double now, enum cancel_result *result,
                  struct sd_err *err);
    /* *found = 0 for an id never seen (or forgotten long after expiry). */
    int (*get)(void *ctx, const char *id, struct task *out, int *found, struct sd_err *err);
    /* Image k of a completed task; *png is malloc'd (caller frees), NULL
     * when there is none. */
    int (*image)(void *ctx, const char *id, int k, uint8_t **png, size_t *len,
                 struct sd_err *err);
    /* 1-based place among pending tasks (1 = runs next); 0 if not pending. */
    int (*position)(void *ctx, const char *id, int *pos, struct sd_err *err);
    /* Expire tasks finished before cutoff; *n gets how many. gone (may be
     * NULL) is called for each, with the number of images it had, after
     * the store has forgotten them (images kept elsewhere go then). */
    int (*expire)(void *ctx, double cutoff, int *n,
                  void (*gone)(void *user, const char *id, int n_images), void *user,
                  struct sd_err *err);
    /* Tasks per status (TASK_EXPIRED is not counted and stays 0). */
    int (*counts)(void *ctx, long long counts[TASK_STATUS_COUNT], struct sd_err *err);
    /* Processing tasks whose lease ended before now go back to pending, or
     * fail once they have been claimed max_attempts times (a task that
     * kills its worker every time must not loop forever). */
    int (*requeue)(void *ctx, double now, int max_attempts, int *n, struct sd_err *err);
    /* Optional (NULL when every change happens in this process): call fn
     * from a thread of the store's with the id of a task that changed, or
     * "*" for any (the queue moved, or changes may have been missed);
     * either with a "+" before it when a task became pending (a worker
     * should look now).
     * Only a wake-up: the store stays the record. fn NULL: stop (fn is
     * not called once this returns). */
    int (*subscribe)(void *ctx, void (*fn)(void *user, const char *id), void *user,
                     struct sd_err *err);
    /* Optional (shared stores): worker is alive for ttl_s more seconds and
     * serves model, described by info (JSON text); ttl_s <= 0: it stops. */
    int (*advertise)(void *ctx, const char *worker, const char *model, const char *info,
                     double ttl_s, struct sd_err *err);
    /* Optional: every model a worker has served, as malloc'd JSON text
     * [{"name", "info": "<JSON text>", "workers": [live worker names]}]. */
    int (*models)(void *ctx, char **json, struct sd_err *err);
    /* Optional (shared stores): the per-client rate limit, one bucket for
     * every API node (per_minute > 0, burst >= 1). */
    int (*rate_take)(void *ctx, const char *client, double per_minute, int burst, int *allowed,
                     double *retry_after, struct sd_err *err);
    void (*close)(void *ctx);
};

struct store {
    const struct store_ops *ops;
    void *ctx;
};

/* Thin wrappers, so call sites read store_claim(st, ...). */
static inline int store_put(struct store *s, const struct task *t, const struct blob *inputs,
                            int n_inputs, int max_pending, int *accepted, struct sd_err *err)
{
    return s->ops->put(s->ctx, t, inputs, n_inputs, max_pending, accepted, err);
}
static inline int store_input(struct store *s, const char *id, int k, uint8_t **data,
                              size_t *len, struct sd_err *err)
{
    return s->ops->input(s->ctx, id, k, data, len, err);
}
static inline int store_claim(struct store *s, const char *worker, const char *model, double now,
                              double lease_s, struct task *out, int *claimed, struct sd_err *err)
{
    return s->ops->claim(s->ctx, worker, model, now, lease_s, out, claimed, err);
}
static inline int store_heartbeat(struct store *s, const char *id, const char *worker, double now,
                                  double lease_s, int *owned, int *cancel_requested,
                                  struct sd_err *err)
{
    return s->ops->heartbeat(s->ctx, id, worker, now, lease_s, owned, cancel_requested, err);
}
static inline int store_progress(struct store *s, const char *id, const char *worker, int step,
                                 int total, struct sd_err *err)
{
    return s->ops->progress(s->ctx, id, worker, step, total, err);
}
static inline int store_complete(struct store *s, const char *id, const char *worker, double now,
                                 const struct blob *images, int n, int *owned,
                                 struct sd_err *err)
{
    return s->ops->complete(s->ctx, id, worker, now, images, n, owned, err);
}
static inline int store_fail(struct store *s, const char *id, const char *worker, double now,
                             enum task_status final, const char *msg, int *owned,
                             struct sd_err *err)
{
    return s->ops->fail(s->ctx, id, worker, now, final, msg, owned, err);
}
static inline int store_release(struct store *s, const char *id, const char *worker, int *owned,
                                struct sd_err *err)
{
    return s->ops->release(s->ctx, id, worker, owned, err);
}
static inline int store_cancel(struct store *s, const char *id, double now,
                               enum cancel_result *result, struct sd_err *err)
{
    return s->ops->cancel(s->ctx, id, now, result, err);
}
static inline int store_get(struct store *s, const char *id, struct task *out, int *found,
                            struct sd_err *err)
{
    return s->ops->get(s->ctx, id, out, found, err);
}
static inline int store_image(struct store *s, const char *id, int k, uint8_t **png,
                              size_t *len, struct sd_err *err)
{
    return s->ops->image(s->ctx, id, k, png, len, err);
}
static inline int store_position(struct store *s, const char *id, int *pos, struct sd_err *err)
{
    return s->ops->position(s->ctx, id, pos, err);
}
static inline int store_expire(struct store *s, double cutoff, int *n, struct sd_err *err)
{
    return s->ops->expire(s->ctx, cutoff, n, NULL, NULL, err);
}
static inline int store_counts(struct store *s, long long counts[TASK_STATUS_COUNT],
                               struct sd_err *err)
{
    return s->ops->counts(s->ctx, counts, err);
}
static inline int store_requeue(struct store *s, double now, int max_attempts, int *n,
                                struct sd_err *err)
{
    return s->ops->requeue(s->ctx, now, max_attempts, n, err);
}
static inline void store_close(struct store *s)
{
    if (s && s->ops)
        s->ops->close(s->ctx);
}

static inline int store_subscribe(struct store *s, void (*fn)(void *user, const char *id),
                                  void *user, struct sd_err *err)
{
    return s->ops->subscribe ? s->ops->subscribe(s->ctx, fn, user, err) : SD_OK;
}

static inline int store_advertise(struct store *s, const char *worker, const char *model,
                                  const char *info, double ttl_s, struct sd_err *err)
{
    return s->ops->advertise ? s->ops->advertise(s->ctx, worker, model, info, ttl_s, err) : SD_OK;
}

/* The Redis store at url, redis://[:password@]host[:port][/db] (store/redis.c):
 * shared by API nodes and worker processes on any number of machines. The
 * server must answer at open (Redis 5.0 or later); later outages fail calls
 * with SD_ERR_IO until it is back. */
int store_redis_open(struct store *out, const char *url, struct sd_err *err);

/* Images in S3-compatible storage (store/s3.c): wraps *st (which it then
 * owns) so that completed tasks' PNGs go to url = s3://BUCKET[/PREFIX] at
 * endpoint (NULL: AWS for $AWS_REGION), the task store keeping a
 * reference with the sha256 that reads are checked against. Credentials
 * from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
 * (getenv_fn). curl_global_init must have run. */
int store_wrap_s3(struct store *st, const char *url, const char *endpoint,
                  char *(*getenv_fn)(const char *), struct sd_err *err);

/* The SQLite store in dir (created if missing): dir/diffusiond.db (WAL) and
 * the files in dir/images/. Only one server may own a data directory at a time;
 * a second one fails to open it (an flock on dir/diffusiond.lock), which
 * is what makes requeue(+inf) at start-up safe. */
int store_sqlite_open(struct store *out, const char *dir, struct sd_err *err);

#endif
