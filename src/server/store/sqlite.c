/* store/sqlite.c - the store of store.h on one machine: SQLite + files.
 *
 * Layout of the data directory:
 *
 *     diffusiond.lock     flock'ed by the one server that owns the directory
 *     diffusiond.db       SQLite, WAL journal, synchronous=FULL: a task is on
 *                         disk before /generate answers 202
 *     images/<id>.png     a task's first image; <id>.<k>.png image k >= 1;
 *                         <id>.in<k> its input files (init image, mask).
 *                         Each written to a temporary name (the final name
 *                         plus ".XXXXXX"), fsync'ed, renamed
 *
 * Concurrency: a small pool of connections, each with its own mutex and
 * prepared statements. A call borrows a free connection (or waits for one),
 * so HTTP threads reading results never queue behind the worker's writes:
 * WAL lets readers and one writer proceed together, and busy_timeout covers
 * two writers meeting. Every state change is one SQL statement (UPDATE ...
 * WHERE status = ... RETURNING), so it is atomic without explicit
 * transactions, also against other processes sharing the file.
 *
 * Progress (step/total of the running task) changes many times a second and
 * is worthless after a crash (the task restarts from step 0), so it lives in
 * memory here and reaches the database only with the final state.
 */
#include "server/store/store.h"
#include "util/png.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define NCONN 4
#define PATH_CAP 4200 /* the data directory path is limited to 4000 bytes */
#define SCHEMA_VERSION 2
#define NLIVE 16 /* running tasks whose progress is tracked in memory */
/* Expired tasks are remembered (id and times only) this long, so their ids
 * answer 410 rather than 404. */
#define TOMBSTONE_SECONDS (30.0 * 24 * 3600)

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS tasks("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " status TEXT NOT NULL,"
    " prompt TEXT, params TEXT, seed INTEGER NOT NULL DEFAULT 0,"
    " step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0,"
    " created_at REAL NOT NULL, started_at REAL, finished_at REAL,"
    " worker TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0,"
    " error_message TEXT, image TEXT,"
    " n_images INTEGER NOT NULL DEFAULT 0, n_inputs INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS tasks_by_status_seq ON tasks(status, seq);"
    "CREATE INDEX IF NOT EXISTS tasks_by_status_finished ON tasks(status, finished_at);";

#define COLS                                                                               \
    "id, status, prompt, params, seed, step, total_steps, created_at, started_at, "       \
    "finished_at, attempts, cancel_requested, error_message, image, n_images, n_inputs"

enum stmt_id {
    S_PUT, S_CLAIM, S_HEARTBEAT, S_STEPS, S_COMPLETE, S_FAIL, S_RELEASE, S_CANCEL_PENDING,
    S_CANCEL_RUNNING, S_GET, S_IMAGE, S_POSITION, S_EXPIRE_SELECT, S_EXPIRE_ONE, S_PURGE,
    S_COUNT, S_REQUEUE_FAIL, S_REQUEUE, S_INPUTS, N_STMT
};

static const char *const stmt_sql[N_STMT] = {
    [S_PUT] = "INSERT INTO tasks(id, status, prompt, params, seed, created_at, n_inputs) "
              "SELECT ?1, 'pending', ?2, ?3, ?4, ?5, ?7 "
              "WHERE (SELECT count(*) FROM tasks WHERE status = 'pending') < ?6",
    [S_CLAIM] = "UPDATE tasks SET status = 'processing', worker = ?1, lease_until = ?2, "
                "started_at = ?3, attempts = attempts + 1, step = 0, total_steps = 0 "
                "WHERE seq = (SELECT seq FROM tasks WHERE status = 'pending' "
                "ORDER BY seq LIMIT 1) RETURNING " COLS,
    [S_HEARTBEAT] = "UPDATE tasks SET lease_until = ?1 WHERE id = ?2 AND "
                    "status = 'processing' AND worker = ?3 RETURNING cancel_requested",
    [S_STEPS] = "UPDATE tasks SET step = ?1, total_steps = ?2 WHERE id = ?3",
    [S_COMPLETE] = "UPDATE tasks SET status = 'completed', finished_at = ?1, image = ?2, "
                   "n_images = ?5, "
                   "lease_until = NULL WHERE id = ?3 AND status = 'processing' AND worker = ?4",
    [S_FAIL] = "UPDATE tasks SET status = ?1, finished_at = ?2, error_message = ?3, "
               "lease_until = NULL WHERE id = ?4 AND status = 'processing' AND worker = ?5",
    /* A cancel requested before the release still wins. */
    [S_RELEASE] = "UPDATE tasks SET "
                  "status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END, "
                  "finished_at = CASE WHEN cancel_requested THEN ?1 END, "
                  "worker = NULL, lease_until = NULL, started_at = NULL, step = 0, "
                  "total_steps = 0, attempts = max(attempts - 1, 0) "
                  "WHERE id = ?2 AND status = 'processing' AND worker = ?3",
    [S_CANCEL_PENDING] = "UPDATE tasks SET status = 'cancelled', finished_at = ?1 "
                         "WHERE id = ?2 AND status = 'pending'",
    [S_CANCEL_RUNNING] = "UPDATE tasks SET cancel_requested = 1 "
                         "WHERE id = ?1 AND status = 'processing'",
    [S_GET] = "SELECT " COLS " FROM tasks WHERE id = ?1",
    [S_IMAGE] = "SELECT n_images FROM tasks WHERE id = ?1 AND status = 'completed' "
                "AND image IS NOT NULL",
    [S_INPUTS] = "SELECT n_inputs FROM tasks WHERE id = ?1 AND status != 'expired'",
    [S_POSITION] = "SELECT count(*) FROM tasks WHERE status = 'pending' AND seq <= "
                   "(SELECT seq FROM tasks WHERE id = ?1 AND status = 'pending')",
    [S_EXPIRE_SELECT] = "SELECT id, n_images, n_inputs FROM tasks WHERE status IN "
                        "('completed', 'failed', 'cancelled') AND finished_at < ?1 LIMIT 256",
    [S_EXPIRE_ONE] = "UPDATE tasks SET status = 'expired', prompt = NULL, params = NULL, "
                     "error_message = NULL, image = NULL, n_images = 0, n_inputs = 0 "
                     "WHERE id = ?1 AND status IN "
                     "('completed', 'failed', 'cancelled')",
    [S_PURGE] = "DELETE FROM tasks WHERE status = 'expired' AND finished_at < ?1",
    [S_COUNT] = "SELECT status, count(*) FROM tasks WHERE status IN "
                "('pending', 'processing', 'completed', 'failed', 'cancelled') GROUP BY status",
    [S_REQUEUE_FAIL] = "UPDATE tasks SET status = 'failed', finished_at = ?1, lease_until = NULL, "
                       "error_message = 'the worker running this task stopped ' || attempts || "
                       "' times without finishing it' "
                       "WHERE status = 'processing' AND lease_until < ?2 AND attempts >= ?3 "
                       "AND NOT cancel_requested",
    [S_REQUEUE] = "UPDATE tasks SET "
                  "status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END, "
                  "finished_at = CASE WHEN cancel_requested THEN ?1 END, "
                  "worker = NULL, lease_until = NULL, step = 0, total_steps = 0 "
                  "WHERE status = 'processing' AND lease_until < ?2",
};

struct conn {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *st[N_STMT];
};

struct live {
    char id[UUID_STR_LEN]; /* "" = free slot */
    int step, total;
};

struct sq {
    char *dir;
    char *images; /* dir/images */
    int lock_fd;
    struct conn conns[NCONN];
    atomic_uint next;
    pthread_mutex_t live_mu;
    struct live live[NLIVE];
};

/* ------------------------------------------------------------------------ */
/* Connections and statements */

static int db_error(struct sd_err *err, sqlite3 *db, const char *what)
{
    return sd_errf(err, SD_ERR_IO, "sqlite: %s: %s", what, sqlite3_errmsg(db));
}

static struct conn *conn_get(struct sq *s)
{
    unsigned start = atomic_fetch_add(&s->next, 1);
    for (unsigned i = 0; i < NCONN; i++) {
        struct conn *c = &s->conns[(start + i) % NCONN];
        if (pthread_mutex_trylock(&c->mu) == 0)
            return c;
    }
    struct conn *c = &s->conns[start % NCONN];
    pthread_mutex_lock(&c->mu);
    return c;
}

static void conn_put(struct conn *c)
{
    pthread_mutex_unlock(&c->mu);
}

/* The statement, reset and with no bindings, ready to bind. */
static sqlite3_stmt *stmt(struct conn *c, enum stmt_id id)
{
    sqlite3_stmt *st = c->st[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Run a statement that returns no rows; *changes (may be NULL) gets the
 * number of rows changed. */
static int stmt_exec(struct conn *c, sqlite3_stmt *st, int *changes, struct sd_err *err)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        int e = db_error(err, c->db, sqlite3_sql(st));
        sqlite3_reset(st);
        return e;
    }
    if (changes)
        *changes = sqlite3_changes(c->db);
    sqlite3_reset(st);
    return SD_OK;
}

static char *col_strdup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

/* Fill t from a row of COLS. Returns SD_ERR_NOMEM or SD_ERR_FORMAT (an
 * unknown status string: a database written by something else). */
static int row_to_task(sqlite3_stmt *st, struct task *t, struct sd_err *err)
{
    memset(t, 0, sizeof *t);
    const char *id = (const char *)sqlite3_column_text(st, 0);
    const char *status = (const char *)sqlite3_column_text(st, 1);
    int s = status ? task_status_from_name(status) : -1;
    if (!id || strlen(id) != UUID_STR_LEN - 1 || s < 0)
        return sd_errf(err, SD_ERR_FORMAT, "sqlite: task row with a bad id or status");
    memcpy(t->id, id, UUID_STR_LEN);
    t->status = (enum task_status)s;
    t->prompt = col_strdup(st, 2);
    t->params = col_strdup(st, 3);
    t->seed = sqlite3_column_int64(st, 4);
    t->step = sqlite3_column_int(st, 5);
    t->total_steps = sqlite3_column_int(st, 6);
    t->created_at = sqlite3_column_double(st, 7);
    t->started_at = sqlite3_column_double(st, 8);
    t->finished_at = sqlite3_column_double(st, 9);
    t->attempts = sqlite3_column_int(st, 10);
    t->cancel_requested = sqlite3_column_int(st, 11);
    t->error_message = col_strdup(st, 12);
    t->n_images = sqlite3_column_type(st, 13) != SQLITE_NULL ? sqlite3_column_int(st, 14) : 0;
    t->n_inputs = sqlite3_column_int(st, 15);
    if ((sqlite3_column_type(st, 2) != SQLITE_NULL && !t->prompt) ||
        (sqlite3_column_type(st, 3) != SQLITE_NULL && !t->params) ||
        (sqlite3_column_type(st, 12) != SQLITE_NULL && !t->error_message)) {
        task_clear(t);
        return sd_errf(err, SD_ERR_NOMEM, "sqlite: out of memory reading a task");
    }
    return SD_OK;
}

/* ------------------------------------------------------------------------ */
/* In-memory progress of running tasks */

static void live_set(struct sq *s, const char *id, int step, int total)
{
    pthread_mutex_lock(&s->live_mu);
    struct live *slot = NULL;
    for (int i = 0; i < NLIVE && !slot; i++)
        if (!strcmp(s->live[i].id, id))
            slot = &s->live[i];
    for (int i = 0; i < NLIVE && !slot; i++)
        if (!s->live[i].id[0])
            slot = &s->live[i];
    if (!slot) /* more running tasks than slots: forget the first */
        slot = &s->live[0];
    snprintf(slot->id, sizeof slot->id, "%s", id);
    slot->step = step;
    slot->total = total;
    pthread_mutex_unlock(&s->live_mu);
}

/* Copies the live progress of id into t (if any); forget it if `drop`. */
static int live_get(struct sq *s, const char *id, int *step, int *total, int drop)
{
    int found = 0;
    pthread_mutex_lock(&s->live_mu);
    for (int i = 0; i < NLIVE; i++) {
        if (strcmp(s->live[i].id, id))
            continue;
        *step = s->live[i].step;
        *total = s->live[i].total;
        if (drop)
            s->live[i].id[0] = '\0';
        found = 1;
        break;
    }
    pthread_mutex_unlock(&s->live_mu);
    return found;
}

static void live_clear_all(struct sq *s)
{
    pthread_mutex_lock(&s->live_mu);
    for (int i = 0; i < NLIVE; i++)
        s->live[i].id[0] = '\0';
    pthread_mutex_unlock(&s->live_mu);
}

/* Write the last known progress of id into its row (when it finishes). */
static int live_flush(struct sq *s, struct conn *c, const char *id, struct sd_err *err)
{
    int step, total;
    if (!live_get(s, id, &step, &total, 1))
        return SD_OK;
    sqlite3_stmt *st = stmt(c, S_STEPS);
    sqlite3_bind_int(st, 1, step);
    sqlite3_bind_int(st, 2, total);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    return stmt_exec(c, st, NULL, err);
}

/* ------------------------------------------------------------------------ */
/* Image files */

/* File names inside images/: image k of a task ("<id>.png", "<id>.<k>.png")
 * and its input k ("<id>.in<k>"). Always rebuilt from a checked id and an
 * index, never read from the database, so a tampered database cannot point
 * us at other files. The data directory's length is checked at open, so
 * these always fit. */
static void image_name(const char *id, int k, char *out, size_t cap)
{
    int n = k ? snprintf(out, cap, "%s.%d.png", id, k) : snprintf(out, cap, "%s.png", id);
    SD_ASSERT(n > 0 && (size_t)n < cap);
}

static void image_path(const struct sq *s, const char *id, int k, char *out, size_t cap)
{
    char name[64];
    image_name(id, k, name, sizeof name);
    int n = snprintf(out, cap, "%s/%s", s->images, name);
    SD_ASSERT(n > 0 && (size_t)n < cap);
}

static void input_path(const struct sq *s, const char *id, int k, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s.in%d", s->images, id, k);
    SD_ASSERT(n > 0 && (size_t)n < cap);
}

static void remove_files(const struct sq *s, const char *id, int n_images, int n_inputs)
{
    char path[PATH_CAP];
    for (int k = 0; k < n_images && k < STORE_MAX_IMAGES; k++) {
        image_path(s, id, k, path, sizeof path);
        unlink(path);
    }
    for (int k = 0; k < n_inputs && k < STORE_MAX_INPUTS; k++) {
        input_path(s, id, k, path, sizeof path);
        unlink(path);
    }
}

/* Write an image atomically (util/png.h: temporary file, fsync, rename),
 * then fsync the directory so the rename itself survives a power cut. */
static int write_file_atomic(const char *dir, const char *path, const uint8_t *data, size_t len,
                             struct sd_err *err)
{
    int rc = png_write_file(path, data, len, err);
    if (rc)
        return rc;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return SD_OK;
}

static int read_file(const char *path, uint8_t **out, size_t *len, struct sd_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 1 << 16;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sd_errf(err, SD_ERR_IO, "%s: read error", path);
    }
    *out = buf;
    *len = n;
    return SD_OK;
}

/* ------------------------------------------------------------------------ */
/* Operations */

static int sq_put(void *ctx, const struct task *t, const struct blob *inputs, int n_inputs,
                  int max_pending, int *accepted, struct sd_err *err)
{
    struct sq *s = ctx;
    SD_ASSERT(n_inputs >= 0 && n_inputs <= STORE_MAX_INPUTS);
    *accepted = 0;
    /* Files first: once the row exists a worker may claim it at once. */
    char path[PATH_CAP];
    int rc = SD_OK;
    for (int k = 0; k < n_inputs && !rc; k++) {
        input_path(s, t->id, k, path, sizeof path);
        rc = write_file_atomic(s->images, path, inputs[k].data, inputs[k].len, err);
    }
    if (!rc) {
        struct conn *c = conn_get(s);
        sqlite3_stmt *st = stmt(c, S_PUT);
        sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, t->prompt ? t->prompt : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, t->params ? t->params : "{}", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, t->seed);
        sqlite3_bind_double(st, 5, t->created_at);
        sqlite3_bind_int(st, 6, max_pending);
        sqlite3_bind_int(st, 7, n_inputs);
        int changes = 0;
        rc = stmt_exec(c, st, &changes, err);
        conn_put(c);
        *accepted = !rc && changes == 1;
    }
    if (!*accepted)
        remove_files(s, t->id, 0, n_inputs);
    return rc;
}

/* The count column of statement sid for id (0 when no row). */
static int count_of(struct sq *s, enum stmt_id sid, const char *id, int *n, struct sd_err *err)
{
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, sid);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = SD_OK;
    *n = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *n = sqlite3_column_int(st, 0);
    else if (step != SQLITE_DONE)
        rc = db_error(err, c->db, "count");
    sqlite3_reset(st);
    conn_put(c);
    return rc;
}

static int sq_input(void *ctx, const char *id, int k, uint8_t **data, size_t *len,
                    struct sd_err *err)
{
    struct sq *s = ctx;
    *data = NULL;
    *len = 0;
    int n = 0;
    int rc = count_of(s, S_INPUTS, id, &n, err);
    if (rc || k < 0 || k >= n || k >= STORE_MAX_INPUTS)
        return rc;
    char path[PATH_CAP];
    input_path(s, id, k, path, sizeof path);
    return read_file(path, data, len, err);
}

static int sq_claim(void *ctx, const char *worker, const char *model, double now, double lease_s,
                    struct task *out, int *claimed, struct sd_err *err)
{
    (void)model; /* one process, one model */
    struct sq *s = ctx;
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_CLAIM);
    sqlite3_bind_text(st, 1, worker, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, now + lease_s);
    sqlite3_bind_double(st, 3, now);
    int rc = SD_OK;
    *claimed = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        rc = row_to_task(st, out, err);
        *claimed = rc == SD_OK;
        while (sqlite3_step(st) == SQLITE_ROW) /* finish the statement */
            ;
    } else if (step != SQLITE_DONE) {
        rc = db_error(err, c->db, "claim");
    }
    sqlite3_reset(st);
    conn_put(c);
    if (*claimed)
        live_set(s, out->id, 0, 0);
    return rc;
}

static int sq_heartbeat(void *ctx, const char *id, const char *worker, double now, double lease_s,
                        int *owned, int *cancel_requested, struct sd_err *err)
{
    struct sq *s = ctx;
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_HEARTBEAT);
    sqlite3_bind_double(st, 1, now + lease_s);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, worker, -1, SQLITE_STATIC);
    int rc = SD_OK;
    *owned = 0;
    *cancel_requested = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *owned = 1;
        *cancel_requested = sqlite3_column_int(st, 0);
        while (sqlite3_step(st) == SQLITE_ROW)
            ;
    } else if (step != SQLITE_DONE) {
        rc = db_error(err, c->db, "heartbeat");
    }
    sqlite3_reset(st);
    conn_put(c);
    return rc;
}

static int sq_progress(void *ctx, const char *id, const char *worker, int step, int total,
                       struct sd_err *err)
{
    (void)worker;
    (void)err;
    live_set(ctx, id, step, total);
    return SD_OK;
}

static int sq_complete(void *ctx, const char *id, const char *worker, double now,
                       const struct blob *images, int n, int *owned, struct sd_err *err)
{
    struct sq *s = ctx;
    SD_ASSERT(n >= 1 && n <= STORE_MAX_IMAGES);
    *owned = 0;
    char path[PATH_CAP], name[64];
    image_name(id, 0, name, sizeof name);
    /* The files go first and outside any lock: a crash between the two
     * steps leaves a processing task that runs again and rewrites them. */
    int rc = SD_OK;
    for (int k = 0; k < n && !rc; k++) {
        image_path(s, id, k, path, sizeof path);
        rc = write_file_atomic(s->images, path, images[k].data, images[k].len, err);
    }
    if (rc)
        return rc;
    struct conn *c = conn_get(s);
    rc = live_flush(s, c, id, err);
    sqlite3_stmt *st = stmt(c, S_COMPLETE);
    sqlite3_bind_double(st, 1, now);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, worker, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, n);
    int changes = 0;
    if (!rc)
        rc = stmt_exec(c, st, &changes, err);
    conn_put(c);
    *owned = changes == 1;
    return rc;
}

static int sq_fail(void *ctx, const char *id, const char *worker, double now,
                   enum task_status final, const char *message, int *owned, struct sd_err *err)
{
    struct sq *s = ctx;
    SD_ASSERT(final == TASK_FAILED || final == TASK_CANCELLED);
    struct conn *c = conn_get(s);
    int rc = live_flush(s, c, id, err);
    sqlite3_stmt *st = stmt(c, S_FAIL);
    sqlite3_bind_text(st, 1, task_status_name(final), -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, now);
    if (message)
        sqlite3_bind_text(st, 3, message, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, worker, -1, SQLITE_STATIC);
    int changes = 0;
    if (!rc)
        rc = stmt_exec(c, st, &changes, err);
    conn_put(c);
    *owned = changes == 1;
    return rc;
}

static int sq_release(void *ctx, const char *id, const char *worker, int *owned,
                      struct sd_err *err)
{
    struct sq *s = ctx;
    int step, total;
    live_get(s, id, &step, &total, 1);
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_RELEASE);
    sqlite3_bind_double(st, 1, now_unix());
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, worker, -1, SQLITE_STATIC);
    int changes = 0;
    int rc = stmt_exec(c, st, &changes, err);
    conn_put(c);
    *owned = changes == 1;
    return rc;
}

static int sq_cancel(void *ctx, const char *id, double now, enum cancel_result *result,
                     struct sd_err *err)
{
    struct sq *s = ctx;
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_CANCEL_PENDING);
    sqlite3_bind_double(st, 1, now);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int changes = 0;
    int rc = stmt_exec(c, st, &changes, err);
    *result = CANCEL_DONE;
    if (!rc && !changes) {
        st = stmt(c, S_CANCEL_RUNNING);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        rc = stmt_exec(c, st, &changes, err);
        *result = CANCEL_REQUESTED;
    }
    if (!rc && !changes) {
        /* Neither pending nor processing: finished, or never seen. */
        st = stmt(c, S_GET);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        *result = step == SQLITE_ROW ? CANCEL_TOO_LATE : CANCEL_NOT_FOUND;
        if (step != SQLITE_ROW && step != SQLITE_DONE)
            rc = db_error(err, c->db, "cancel");
        sqlite3_reset(st);
    }
    conn_put(c);
    return rc;
}

static int sq_get(void *ctx, const char *id, struct task *out, int *found, struct sd_err *err)
{
    struct sq *s = ctx;
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_GET);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = SD_OK;
    *found = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        rc = row_to_task(st, out, err);
        *found = rc == SD_OK;
    } else if (step != SQLITE_DONE) {
        rc = db_error(err, c->db, "get");
    }
    sqlite3_reset(st);
    conn_put(c);
    if (*found && out->status == TASK_PROCESSING)
        live_get(s, id, &out->step, &out->total_steps, 0);
    return rc;
}

static int sq_image(void *ctx, const char *id, int k, uint8_t **png, size_t *len,
                    struct sd_err *err)
{
    struct sq *s = ctx;
    *png = NULL;
    *len = 0;
    int n = 0;
    int rc = count_of(s, S_IMAGE, id, &n, err);
    if (rc || k < 0 || k >= n || k >= STORE_MAX_IMAGES)
        return rc;
    char path[PATH_CAP];
    image_path(s, id, k, path, sizeof path);
    return read_file(path, png, len, err);
}

static int sq_position(void *ctx, const char *id, int *pos, struct sd_err *err)
{
    struct sq *s = ctx;
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_POSITION);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = SD_OK;
    *pos = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *pos = sqlite3_column_int(st, 0);
    else
        rc = db_error(err, c->db, "position");
    sqlite3_reset(st);
    conn_put(c);
    return rc;
}

static int sq_expire(void *ctx, double cutoff, int *n,
                     void (*gone)(void *user, const char *id, int n_images), void *user,
                     struct sd_err *err)
{
    struct sq *s = ctx;
    *n = 0;
    char ids[256][UUID_STR_LEN];
    int nimg[256], nin[256];
    int nids = 0, rc = SD_OK;
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_EXPIRE_SELECT);
    sqlite3_bind_double(st, 1, cutoff);
    int step;
    while (nids < 256 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (id && uuid_valid(id)) {
            nimg[nids] = sqlite3_column_int(st, 1);
            nin[nids] = sqlite3_column_int(st, 2);
            memcpy(ids[nids++], id, UUID_STR_LEN);
        }
    }
    sqlite3_reset(st);
    for (int i = 0; i < nids && !rc; i++) {
        st = stmt(c, S_EXPIRE_ONE);
        sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
        int changes = 0;
        rc = stmt_exec(c, st, &changes, err);
        *n += changes;
    }
    if (!rc) {
        st = stmt(c, S_PURGE);
        sqlite3_bind_double(st, 1, cutoff - TOMBSTONE_SECONDS);
        rc = stmt_exec(c, st, NULL, err);
    }
    conn_put(c);
    /* Rows first, files after: a crash in between leaves only a stray file. */
    for (int i = 0; i < nids; i++) {
        remove_files(s, ids[i], nimg[i] > 0 ? nimg[i] : 1, nin[i]);
        if (gone && !rc)
            gone(user, ids[i], nimg[i]);
    }
    return rc;
}

static int sq_counts(void *ctx, long long counts[TASK_STATUS_COUNT], struct sd_err *err)
{
    struct sq *s = ctx;
    memset(counts, 0, sizeof(long long) * TASK_STATUS_COUNT);
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_COUNT);
    int step, rc = SD_OK;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        int i = name ? task_status_from_name(name) : -1;
        if (i >= 0)
            counts[i] = sqlite3_column_int64(st, 1);
    }
    if (step != SQLITE_DONE)
        rc = db_error(err, c->db, "counts");
    sqlite3_reset(st);
    conn_put(c);
    return rc;
}

static int sq_requeue(void *ctx, double now, int max_attempts, int *n, struct sd_err *err)
{
    struct sq *s = ctx;
    struct conn *c = conn_get(s);
    sqlite3_stmt *st = stmt(c, S_REQUEUE_FAIL);
    double t = now_unix();
    sqlite3_bind_double(st, 1, t);
    sqlite3_bind_double(st, 2, now);
    sqlite3_bind_int(st, 3, max_attempts);
    int failed = 0, back = 0;
    int rc = stmt_exec(c, st, &failed, err);
    if (!rc) {
        st = stmt(c, S_REQUEUE);
        sqlite3_bind_double(st, 1, t);
        sqlite3_bind_double(st, 2, now);
        rc = stmt_exec(c, st, &back, err);
    }
    conn_put(c);
    *n = failed + back;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Open and close */

static void sq_close(void *ctx)
{
    struct sq *s = ctx;
    if (!s)
        return;
    for (int i = 0; i < NCONN; i++) {
        struct conn *c = &s->conns[i];
        for (int j = 0; j < N_STMT; j++)
            sqlite3_finalize(c->st[j]);
        if (c->db)
            sqlite3_close(c->db);
        pthread_mutex_destroy(&c->mu);
    }
    pthread_mutex_destroy(&s->live_mu);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    free(s->dir);
    free(s->images);
    free(s);
}

static const struct store_ops sqlite_ops = {
    .name = "sqlite",
    .put = sq_put,
    .claim = sq_claim,
    .heartbeat = sq_heartbeat,
    .progress = sq_progress,
    .complete = sq_complete,
    .fail = sq_fail,
    .release = sq_release,
    .cancel = sq_cancel,
    .get = sq_get,
    .image = sq_image,
    .input = sq_input,
    .position = sq_position,
    .expire = sq_expire,
    .counts = sq_counts,
    .requeue = sq_requeue,
    .close = sq_close,
};

static int make_dir(const char *path, struct sd_err *err)
{
    if (mkdir(path, 0755) && errno != EEXIST)
        return sd_errf(err, SD_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
    struct stat sb;
    if (stat(path, &sb) || !S_ISDIR(sb.st_mode))
        return sd_errf(err, SD_ERR_IO, "%s: not a directory", path);
    return SD_OK;
}

/* Whether name is one of ours plus a mkstemp suffix: "<id>.png.XXXXXX",
 * "<id>.<k>.png.XXXXXX" or "<id>.in<k>.XXXXXX". */
static int is_temporary(const char *name)
{
    size_t n = strlen(name);
    char id[UUID_STR_LEN];
    if (n < UUID_STR_LEN - 1 + 7)
        return 0;
    memcpy(id, name, UUID_STR_LEN - 1);
    id[UUID_STR_LEN - 1] = '\0';
    if (!uuid_valid(id) || name[n - 7] != '.')
        return 0;
    const char *p = name + UUID_STR_LEN - 1, *end = name + n - 7;
    if (end - p >= 3 && !strncmp(p, ".in", 3)) {
        p += 3;
    } else {
        if (end - p < 4 || strncmp(end - 4, ".png", 4))
            return 0;
        end -= 4;
        if (p < end && *p++ != '.')
            return 0;
    }
    for (; p < end; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

/* Remove temporary files that a crash left half-written in images/; their
 * tasks run again (or their submission was never answered) and rewrite
 * them. */
static void remove_stray_temporaries(const char *images)
{
    DIR *d = opendir(images);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (is_temporary(de->d_name))
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
}

static int exec_sql(sqlite3 *db, const char *sql, struct sd_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sd_errf(err, SD_ERR_IO, "sqlite: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return SD_ERR_IO;
    }
    return SD_OK;
}

/* The first connection creates or checks the schema. */
static int schema_init(sqlite3 *db, const char *path, struct sd_err *err)
{
    int rc = exec_sql(db, "PRAGMA journal_mode=WAL", err);
    if (rc)
        return rc;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return db_error(err, db, "user_version");
    int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (version < 0 || version > SCHEMA_VERSION)
        return sd_errf(err, SD_ERR_UNSUPPORTED,
                       "%s: database schema version %d is not one this diffusiond knows (%d)",
                       path, version, SCHEMA_VERSION);
    rc = exec_sql(db, "BEGIN IMMEDIATE", err);
    /* Version 1 (one image per task, no inputs) gains the two counts. */
    if (!rc && version == 1)
        rc = exec_sql(db,
                      "ALTER TABLE tasks ADD COLUMN n_images INTEGER NOT NULL DEFAULT 0;"
                      "ALTER TABLE tasks ADD COLUMN n_inputs INTEGER NOT NULL DEFAULT 0;"
                      "UPDATE tasks SET n_images = 1 WHERE image IS NOT NULL;",
                      err);
    if (!rc)
        rc = exec_sql(db, schema_sql, err);
    if (!rc)
        rc = exec_sql(db, "PRAGMA user_version=2; COMMIT", err);
    if (rc)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int conn_open(struct conn *c, const char *path, int first, struct sd_err *err)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK)
        return sd_errf(err, SD_ERR_IO, "%s: %s", path,
                       c->db ? sqlite3_errmsg(c->db) : "cannot open");
    sqlite3_busy_timeout(c->db, 10000);
    int rc = exec_sql(c->db, "PRAGMA synchronous=FULL", err);
    if (!rc && first)
        rc = schema_init(c->db, path, err);
    for (int j = 0; j < N_STMT && !rc; j++)
        if (sqlite3_prepare_v3(c->db, stmt_sql[j], -1, SQLITE_PREPARE_PERSISTENT, &c->st[j],
                               NULL) != SQLITE_OK)
            rc = sd_errf(err, SD_ERR_IO, "%s: preparing statement %d: %s", path, j,
                         sqlite3_errmsg(c->db));
    return rc;
}

int store_sqlite_open(struct store *out, const char *dir, struct sd_err *err)
{
    if (strlen(dir) > 4000)
        return sd_errf(err, SD_ERR_ARG, "data directory path longer than 4000 bytes");
    struct sq *s = calloc(1, sizeof *s);
    if (!s)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", dir);
    s->lock_fd = -1;
    pthread_mutex_init(&s->live_mu, NULL);
    for (int i = 0; i < NCONN; i++)
        pthread_mutex_init(&s->conns[i].mu, NULL);
    size_t n = strlen(dir) + 16;
    s->dir = strdup(dir);
    s->images = malloc(n);
    int rc = SD_OK;
    if (!s->dir || !s->images) {
        rc = sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    snprintf(s->images, n, "%s/images", dir);
    if ((rc = make_dir(dir, err)) || (rc = make_dir(s->images, err)))
        goto fail;

    char path[PATH_CAP];
    if (snprintf(path, sizeof path, "%s/diffusiond.lock", dir) >= (int)sizeof path)
        goto fail;
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        rc = sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB)) {
        rc = sd_errf(err, SD_ERR_IO, "%s: data directory is in use by another diffusiond", dir);
        goto fail;
    }

    if (snprintf(path, sizeof path, "%s/diffusiond.db", dir) >= (int)sizeof path)
        goto fail;
    for (int i = 0; i < NCONN && !rc; i++)
        rc = conn_open(&s->conns[i], path, i == 0, err);
    if (rc)
        goto fail;
    live_clear_all(s);
    remove_stray_temporaries(s->images);
    out->ops = &sqlite_ops;
    out->ctx = s;
    return SD_OK;
fail:
    sq_close(s);
    return rc;
}
