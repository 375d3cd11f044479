/* test_store_sqlite.c - the SQLite task store (src/server/store/sqlite.c) against the
 * contract of store.h: queue order, capacity, leases, cancellation, crash
 * recovery, expiry, images, and concurrent claims. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/store/store.h"
#include "test.h"

static char tmpdir[256];

static int open_tmp(struct store *st)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd_store_XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    struct sd_err err = {0};
    int rc = store_sqlite_open(st, tmpdir, &err);
    if (rc)
        fprintf(stderr, "  open: %s\n", err.msg);
    return rc;
}

static void rm_tmp(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "  could not remove %s\n", tmpdir);
}

static void new_task(struct task *t, const char *prompt, double created)
{
    memset(t, 0, sizeof *t);
    uuid4_new(t->id, NULL);
    t->prompt = (char *)prompt;
    t->params = "{\"prompt\":\"x\"}";
    t->seed = -42;
    t->created_at = created;
}

static int put(struct store *st, struct task *t, int cap)
{
    int accepted = -1;
    int rc = store_put(st, t, NULL, 0, cap, &accepted, NULL);
    return rc ? -1 : accepted;
}

TEST(store_sqlite_queue_order_and_capacity)
{
    struct store st;
    if (open_tmp(&st))
        SKIP("cannot open a store in /tmp");
    struct task t[4];
    for (int i = 0; i < 3; i++) {
        new_task(&t[i], "p", 1000 + i);
        CHECK(put(&st, &t[i], 3) == 1);
    }
    new_task(&t[3], "p", 1003);
    CHECK(put(&st, &t[3], 3) == 0); /* full */
    int pos = -1;
    CHECK(store_position(&st, t[2].id, &pos, NULL) == SD_OK && pos == 3);

    struct task got;
    int claimed = 0;
    CHECK(store_claim(&st, "w1", NULL, 2000, 30, &got, &claimed, NULL) == SD_OK && claimed);
    CHECK(!strcmp(got.id, t[0].id) && got.status == TASK_PROCESSING && got.attempts == 1);
    CHECK(got.seed == -42 && got.started_at == 2000 && !strcmp(got.prompt, "p"));
    task_clear(&got);
    CHECK(store_position(&st, t[0].id, &pos, NULL) == SD_OK && pos == 0);
    CHECK(store_position(&st, t[2].id, &pos, NULL) == SD_OK && pos == 2);
    CHECK(put(&st, &t[3], 3) == 1); /* room again */

    long long counts[TASK_STATUS_COUNT];
    CHECK(store_counts(&st, counts, NULL) == SD_OK);
    CHECK(counts[TASK_PENDING] == 3 && counts[TASK_PROCESSING] == 1);
    store_close(&st);
    rm_tmp();
}

TEST(store_sqlite_complete_and_image)
{
    struct store st;
    if (open_tmp(&st))
        SKIP("cannot open a store in /tmp");
    struct task t, got;
    new_task(&t, "a cat", 1);
    CHECK(put(&st, &t, 10) == 1);
    int claimed, owned, cancel, found;
    CHECK(store_claim(&st, "w1", NULL, 10, 30, &got, &claimed, NULL) == SD_OK && claimed);
    task_clear(&got);
    CHECK(store_progress(&st, t.id, "w1", 3, 5, NULL) == SD_OK);
    CHECK(store_get(&st, t.id, &got, &found, NULL) == SD_OK && found);
    CHECK(got.step == 3 && got.total_steps == 5 && got.status == TASK_PROCESSING);
    task_clear(&got);
    CHECK(store_heartbeat(&st, t.id, "w1", 20, 30, &owned, &cancel, NULL) == SD_OK);
    CHECK(owned && !cancel);
    CHECK(store_heartbeat(&st, t.id, "w2", 20, 30, &owned, &cancel, NULL) == SD_OK && !owned);

    const uint8_t png[] = {0x89, 'P', 'N', 'G', 0, 1, 2, 3};
    const struct blob one = {png, sizeof png};
    CHECK(store_complete(&st, t.id, "w2", 30, &one, 1, &owned, NULL) == SD_OK);
    CHECK(!owned); /* not the owner: nothing changes */
    CHECK(store_progress(&st, t.id, "w1", 5, 5, NULL) == SD_OK);
    CHECK(store_complete(&st, t.id, "w1", 30, &one, 1, &owned, NULL) == SD_OK && owned);
    CHECK(store_get(&st, t.id, &got, &found, NULL) == SD_OK && found);
    CHECK(got.status == TASK_COMPLETED && got.n_images == 1 && got.finished_at == 30);
    CHECK(got.step == 5 && got.total_steps == 5 && got.created_at == 1);
    task_clear(&got);
    uint8_t *img;
    size_t len;
    CHECK(store_image(&st, t.id, 0, &img, &len, NULL) == SD_OK);
    CHECK(img && len == sizeof png && !memcmp(img, png, len));
    free(img);
    CHECK(store_image(&st, t.id, 1, &img, &len, NULL) == SD_OK && img == NULL);

    enum cancel_result cr;
    CHECK(store_cancel(&st, t.id, 40, &cr, NULL) == SD_OK && cr == CANCEL_TOO_LATE);
    char other[UUID_STR_LEN];
    uuid4_new(other, NULL);
    CHECK(store_cancel(&st, other, 40, &cr, NULL) == SD_OK && cr == CANCEL_NOT_FOUND);
    CHECK(store_get(&st, other, &got, &found, NULL) == SD_OK && !found);
    CHECK(store_image(&st, other, 0, &img, &len, NULL) == SD_OK && img == NULL);
    store_close(&st);
    rm_tmp();
}

TEST(store_sqlite_cancel_fail_release)
{
    struct store st;
    if (open_tmp(&st))
        SKIP("cannot open a store in /tmp");
    struct task a, b, c, got;
    new_task(&a, "a", 1);
    new_task(&b, "b", 2);
    new_task(&c, "c", 3);
    CHECK(put(&st, &a, 10) == 1 && put(&st, &b, 10) == 1 && put(&st, &c, 10) == 1);
    enum cancel_result cr;
    int claimed, owned, cancel, found;

    /* pending -> cancelled at once */
    CHECK(store_cancel(&st, b.id, 5, &cr, NULL) == SD_OK && cr == CANCEL_DONE);
    CHECK(store_get(&st, b.id, &got, &found, NULL) == SD_OK && got.status == TASK_CANCELLED);
    CHECK(got.finished_at == 5);
    task_clear(&got);

    /* processing -> requested, seen by the heartbeat, honoured by fail() */
    CHECK(store_claim(&st, "w", NULL, 10, 30, &got, &claimed, NULL) == SD_OK && claimed);
    CHECK(!strcmp(got.id, a.id));
    task_clear(&got);
    CHECK(store_cancel(&st, a.id, 11, &cr, NULL) == SD_OK && cr == CANCEL_REQUESTED);
    CHECK(store_heartbeat(&st, a.id, "w", 12, 30, &owned, &cancel, NULL) == SD_OK);
    CHECK(owned && cancel);
    CHECK(store_fail(&st, a.id, "w", 13, TASK_CANCELLED, NULL, &owned, NULL) == SD_OK && owned);
    CHECK(store_get(&st, a.id, &got, &found, NULL) == SD_OK && got.status == TASK_CANCELLED);
    task_clear(&got);

    /* b was cancelled, so c runs next; release puts it back in front */
    CHECK(store_claim(&st, "w", NULL, 20, 30, &got, &claimed, NULL) == SD_OK && claimed);
    CHECK(!strcmp(got.id, c.id) && got.attempts == 1);
    task_clear(&got);
    CHECK(store_release(&st, c.id, "w", &owned, NULL) == SD_OK && owned);
    CHECK(store_get(&st, c.id, &got, &found, NULL) == SD_OK);
    CHECK(got.status == TASK_PENDING && got.attempts == 0 && got.started_at == 0);
    task_clear(&got);
    CHECK(store_claim(&st, "w", NULL, 21, 30, &got, &claimed, NULL) == SD_OK && claimed);
    task_clear(&got);
    CHECK(store_fail(&st, c.id, "w", 22, TASK_FAILED, "out of luck", &owned, NULL) == SD_OK);
    CHECK(store_get(&st, c.id, &got, &found, NULL) == SD_OK && got.status == TASK_FAILED);
    CHECK(got.error_message && !strcmp(got.error_message, "out of luck"));
    task_clear(&got);
    CHECK(store_claim(&st, "w", NULL, 23, 30, &got, &claimed, NULL) == SD_OK && !claimed);
    store_close(&st);
    rm_tmp();
}

TEST(store_sqlite_crash_recovery)
{
    struct store st;
    if (open_tmp(&st))
        SKIP("cannot open a store in /tmp");
    struct task a, got;
    new_task(&a, "a", 1);
    CHECK(put(&st, &a, 10) == 1);
    int claimed, n, found;
    CHECK(store_claim(&st, "dead", NULL, 100, 30, &got, &claimed, NULL) == SD_OK && claimed);
    task_clear(&got);
    /* A second store on the same directory is refused while one owns it. */
    struct store st2;
    struct sd_err err = {0};
    CHECK(store_sqlite_open(&st2, tmpdir, &err) == SD_ERR_IO && strstr(err.msg, "in use"));
    /* "kill -9": close without finishing, reopen, recover. A crash in the
     * middle of writing an image leaves a temporary file: it goes away. */
    store_close(&st);
    char stray[400];
    snprintf(stray, sizeof stray, "%s/images/%s.png.Ab12Cd", tmpdir, a.id);
    FILE *f = fopen(stray, "w");
    if (f)
        fclose(f);
    CHECK(store_sqlite_open(&st, tmpdir, &err) == SD_OK);
    CHECK(access(stray, F_OK) != 0);
    CHECK(store_requeue(&st, 110, 3, &n, NULL) == SD_OK && n == 0); /* lease still valid */
    CHECK(store_requeue(&st, 1e300, 3, &n, NULL) == SD_OK && n == 1);
    CHECK(store_get(&st, a.id, &got, &found, NULL) == SD_OK && got.status == TASK_PENDING);
    task_clear(&got);
    /* Two more deaths, then the task fails instead of looping. */
    for (int i = 0; i < 2; i++) {
        CHECK(store_claim(&st, "dead", NULL, 200, 30, &got, &claimed, NULL) == SD_OK && claimed);
        task_clear(&got);
        CHECK(store_requeue(&st, 1e300, 3, &n, NULL) == SD_OK && n == 1);
    }
    CHECK(store_get(&st, a.id, &got, &found, NULL) == SD_OK && got.status == TASK_FAILED);
    CHECK(got.error_message && strstr(got.error_message, "3 times"));
    task_clear(&got);
    store_close(&st);
    rm_tmp();
}

TEST(store_sqlite_expire)
{
    struct store st;
    if (open_tmp(&st))
        SKIP("cannot open a store in /tmp");
    struct task a, b, got;
    new_task(&a, "old", 1);
    new_task(&b, "pending stays", 2);
    CHECK(put(&st, &a, 10) == 1);
    int claimed, owned, n, found;
    CHECK(store_claim(&st, "w", NULL, 10, 30, &got, &claimed, NULL) == SD_OK && claimed);
    task_clear(&got);
    const uint8_t png[] = {1, 2, 3};
    const struct blob one = {png, 3};
    CHECK(store_complete(&st, a.id, "w", 50, &one, 1, &owned, NULL) == SD_OK && owned);
    CHECK(put(&st, &b, 10) == 1);
    char path[400];
    snprintf(path, sizeof path, "%s/images/%s.png", tmpdir, a.id);
    CHECK(access(path, F_OK) == 0);
    CHECK(store_expire(&st, 40, &n, NULL) == SD_OK && n == 0);
    CHECK(store_expire(&st, 60, &n, NULL) == SD_OK && n == 1);
    CHECK(access(path, F_OK) != 0);
    CHECK(store_get(&st, a.id, &got, &found, NULL) == SD_OK && found);
    CHECK(got.status == TASK_EXPIRED && !got.prompt && !got.params && !got.n_images);
    task_clear(&got);
    CHECK(store_get(&st, b.id, &got, &found, NULL) == SD_OK && got.status == TASK_PENDING);
    task_clear(&got);
    /* Tombstones are forgotten a month after expiry. */
    CHECK(store_expire(&st, 60 + 31 * 86400.0, &n, NULL) == SD_OK);
    CHECK(store_get(&st, a.id, &got, &found, NULL) == SD_OK && !found);
    store_close(&st);
    rm_tmp();
}

TEST(store_sqlite_inputs_and_several_images)
{
    struct store st;
    if (open_tmp(&st))
        SKIP("cannot open a store in /tmp");
    struct task t, got;
    new_task(&t, "img2img", 1);
    const struct blob in[2] = {{(const uint8_t *)"init-bytes", 10}, {(const uint8_t *)"mask", 4}};
    int accepted = 0, claimed, owned, found, n;
    CHECK(store_put(&st, &t, in, 2, 10, &accepted, NULL) == SD_OK && accepted);
    uint8_t *data;
    size_t len;
    CHECK(store_input(&st, t.id, 0, &data, &len, NULL) == SD_OK);
    CHECK(data && len == 10 && !memcmp(data, "init-bytes", 10));
    free(data);
    CHECK(store_input(&st, t.id, 1, &data, &len, NULL) == SD_OK && len == 4);
    free(data);
    CHECK(store_input(&st, t.id, 2, &data, &len, NULL) == SD_OK && !data);
    CHECK(store_input(&st, t.id, -1, &data, &len, NULL) == SD_OK && !data);

    /* A refused put keeps nothing: neither row nor files. */
    struct task full;
    new_task(&full, "refused", 2);
    CHECK(store_put(&st, &full, in, 2, 1, &accepted, NULL) == SD_OK && !accepted);
    char path[400];
    snprintf(path, sizeof path, "%s/images/%s.in0", tmpdir, full.id);
    CHECK(access(path, F_OK) != 0);

    CHECK(store_claim(&st, "w", NULL, 10, 30, &got, &claimed, NULL) == SD_OK && claimed);
    CHECK(got.n_inputs == 2 && got.n_images == 0);
    task_clear(&got);
    struct blob out[3] = {{(const uint8_t *)"A", 1}, {(const uint8_t *)"BB", 2},
                          {(const uint8_t *)"CCC", 3}};
    CHECK(store_complete(&st, t.id, "w", 20, out, 3, &owned, NULL) == SD_OK && owned);
    CHECK(store_get(&st, t.id, &got, &found, NULL) == SD_OK && found && got.n_images == 3);
    task_clear(&got);
    for (int k = 0; k < 3; k++) {
        CHECK(store_image(&st, t.id, k, &data, &len, NULL) == SD_OK);
        CHECK(data && len == (size_t)k + 1 && data[0] == "ABC"[k]);
        free(data);
    }
    CHECK(store_image(&st, t.id, 3, &data, &len, NULL) == SD_OK && !data);
    /* Expiry removes every image and input file. */
    CHECK(store_expire(&st, 30, &n, NULL) == SD_OK && n == 1);
    const char *names[] = {"%s/images/%s.png", "%s/images/%s.1.png", "%s/images/%s.2.png",
                           "%s/images/%s.in0", "%s/images/%s.in1"};
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, names[i], tmpdir, t.id);
        CHECK(access(path, F_OK) != 0);
    }
    CHECK(store_input(&st, t.id, 0, &data, &len, NULL) == SD_OK && !data);
    store_close(&st);
    rm_tmp();
}

/* A database written by the previous schema (one image per task) opens,
 * gains the counts, and keeps its completed task's image readable. */
TEST(store_sqlite_migrates_schema_1)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd_store_XXXXXX");
    if (!mkdtemp(tmpdir))
        SKIP("no /tmp");
    char cmd[4096], id[UUID_STR_LEN];
    uuid4_new(id, NULL);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/images && printf PNG > %s/images/%s.png && sqlite3 %s/diffusiond.db "
             "\"CREATE TABLE tasks(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
             "status TEXT NOT NULL, prompt TEXT, params TEXT, seed INTEGER NOT NULL DEFAULT 0, "
             "step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0, "
             "created_at REAL NOT NULL, started_at REAL, finished_at REAL, worker TEXT, "
             "lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT "
             "NULL DEFAULT 0, error_message TEXT, image TEXT); INSERT INTO tasks(id, status, "
             "prompt, params, created_at, finished_at, image) VALUES('%s', 'completed', 'old', "
             "'{}', 1, 2, '%s.png'); PRAGMA user_version=1;\" 2>/dev/null",
             tmpdir, tmpdir, id, tmpdir, id, id);
    if (system(cmd) != 0) {
        rm_tmp();
        SKIP("no sqlite3 command-line tool");
    }
    struct store st;
    struct sd_err err = {0};
    CHECK(store_sqlite_open(&st, tmpdir, &err) == SD_OK);
    struct task got;
    int found;
    CHECK(store_get(&st, id, &got, &found, NULL) == SD_OK && found);
    CHECK(got.status == TASK_COMPLETED && got.n_images == 1 && got.n_inputs == 0);
    task_clear(&got);
    uint8_t *data;
    size_t len;
    CHECK(store_image(&st, id, 0, &data, &len, NULL) == SD_OK && data && len == 3);
    free(data);
    store_close(&st);
    rm_tmp();
}

/* Half-written files of a crash are removed at open; finished ones stay. */
TEST(store_sqlite_removes_stray_temporaries)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd_store_XXXXXX");
    if (!mkdtemp(tmpdir))
        SKIP("no /tmp");
    char id[UUID_STR_LEN], path[400];
    uuid4_new(id, NULL);
    snprintf(path, sizeof path, "%s/images", tmpdir);
    mkdir(path, 0755);
    const char *stray[] = {"%s.png.a1B2c3", "%s.3.png.XyZ123", "%s.in1.q1w2e3"};
    const char *keep[] = {"%s.png", "%s.3.png", "%s.in1", "%s.txt.abcdef", "notes.png.abcdef"};
    char name[128];
    for (int i = 0; i < 3 + 5; i++) {
        snprintf(name, sizeof name, i < 3 ? stray[i] : keep[i - 3], id);
        snprintf(path, sizeof path, "%s/images/%s", tmpdir, name);
        FILE *f = fopen(path, "w");
        if (f)
            fclose(f);
    }
    struct store st;
    CHECK(store_sqlite_open(&st, tmpdir, NULL) == SD_OK);
    for (int i = 0; i < 3 + 5; i++) {
        snprintf(name, sizeof name, i < 3 ? stray[i] : keep[i - 3], id);
        snprintf(path, sizeof path, "%s/images/%s", tmpdir, name);
        CHECK_EQ_INT(access(path, F_OK) == 0, i >= 3);
    }
    store_close(&st);
    rm_tmp();
}

struct claimer {
    struct store *st;
    char worker[16];
    int claimed;
};

static void *claim_all(void *arg)
{
    struct claimer *c = arg;
    for (;;) {
        struct task t;
        int claimed = 0;
        if (store_claim(c->st, c->worker, NULL, now_unix(), 30, &t, &claimed, NULL) || !claimed)
            break;
        int owned = 0;
        const struct blob x = {(const uint8_t *)"x", 1};
        store_complete(c->st, t.id, c->worker, now_unix(), &x, 1, &owned, NULL);
        c->claimed += owned;
        task_clear(&t);
    }
    return NULL;
}

TEST(store_sqlite_concurrent_claims)
{
    struct store st;
    if (open_tmp(&st))
        SKIP("cannot open a store in /tmp");
    enum { N = 60, W = 4 };
    for (int i = 0; i < N; i++) {
        struct task t;
        new_task(&t, "p", i);
        CHECK(put(&st, &t, N) == 1);
    }
    struct claimer c[W];
    pthread_t th[W];
    for (int i = 0; i < W; i++) {
        c[i] = (struct claimer){.st = &st};
        snprintf(c[i].worker, sizeof c[i].worker, "w%d", i);
        pthread_create(&th[i], NULL, claim_all, &c[i]);
    }
    int total = 0;
    for (int i = 0; i < W; i++) {
        pthread_join(th[i], NULL);
        total += c[i].claimed;
    }
    CHECK_EQ_INT(total, N); /* every task exactly once */
    long long counts[TASK_STATUS_COUNT];
    CHECK(store_counts(&st, counts, NULL) == SD_OK && counts[TASK_COMPLETED] == N);
    store_close(&st);
    rm_tmp();
}
