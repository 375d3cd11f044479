/* worker.c - see worker.h. */
#include "server/worker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/api/api.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/sse.h"
#include "server/store/store.h"

#define MAX_ATTEMPTS 3
#define HEARTBEAT_MAX_S 2.0   /* lease renewal (and remote cancel) interval cap */
#define ADVERTISE_EVERY_S 2.0 /* shared stores: "alive, serving model M" ... */
#define ADVERTISE_TTL_S 10.0  /* ... believed this long */

enum stop_reason { STOP_NONE, STOP_USER, STOP_SHUTDOWN, STOP_LOST };

struct worker {
    struct server *srv;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char name[128];          /* worker id in the store: host:pid:random */
    char model[256];         /* the model it serves (its tasks' queue) */
    char *info;              /* the model described for the fleet (JSON text) */
    double last_advertised;  /* monotonic; janitor thread only */
    int stopping;            /* under mu */
    int joined;              /* under mu */
    int woken;               /* under mu */
    char id[UUID_STR_LEN];   /* running task, "" when idle; under mu */
    int reason;              /* why cancel was raised; under mu */
    double last_heartbeat;   /* monotonic; under mu */
    atomic_int cancel;       /* sd_generate polls it between steps */
};

/* ------------------------------------------------------------------------ */
/* Called from the generating thread */

static void on_progress(void *user, const struct sd_progress *p)
{
    struct worker *w = user;
    struct server *srv = w->srv;
    if (p->phase == SD_PHASE_DENOISE)
        metrics_observe_step(srv->metrics, p->step_seconds);
    store_progress(&srv->store, w->id, w->name, p->step, p->total, NULL);
    hub_notify(srv->hub, w->id);
}

static void set_running(struct worker *w, const char *id)
{
    pthread_mutex_lock(&w->mu);
    snprintf(w->id, sizeof w->id, "%s", id);
    w->reason = STOP_NONE;
    atomic_store(&w->cancel, 0);
    if (w->stopping && id[0]) { /* told to stop between claim and start */
        w->reason = STOP_SHUTDOWN;
        atomic_store(&w->cancel, 1);
    }
    w->last_heartbeat = 0; /* the next tick renews at once */
    pthread_mutex_unlock(&w->mu);
}

static void finish(struct worker *w, const struct task *t, enum task_status st, const char *msg)
{
    struct server *srv = w->srv;
    int owned = 0;
    struct sd_err err = {0};
    if (store_fail(&srv->store, t->id, w->name, now_unix(), st, msg, &owned, &err))
        server_log("task %s: recording the outcome failed: %s", t->id, err.msg);
    if (owned)
        metrics_count_finished(srv->metrics, st);
    server_log("task %s %s%s%s", t->id, task_status_name(st), msg ? ": " : "", msg ? msg : "");
}

static void store_result(struct worker *w, const struct task *t, const struct sd_image *img,
                         int n, const struct sd_params *p)
{
    struct server *srv = w->srv;
    struct sd_err err = {0};
    struct blob pngs[SD_MAX_IMAGES] = {{0}};
    int rc = SD_OK;
    for (int k = 0; k < n && !rc; k++) {
        struct sd_params pk = *p;
        pk.seed = img[k].seed; /* the parameters that reproduce this image */
        uint8_t *png = NULL;
        rc = sd_image_png(&img[k], &pk, srv->model, &png, &pngs[k].len, &err);
        pngs[k].data = png;
    }
    int owned = 0;
    if (!rc && store_complete(&srv->store, t->id, w->name, now_unix(), pngs, n, &owned, &err)) {
        server_log("task %s: storing the images failed: %s", t->id, err.msg);
        char why[SD_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err.msg);
        if (snprintf(err.msg, sizeof err.msg, "the images could not be stored: %s", why) < 0)
            err.msg[0] = '\0';
        rc = SD_ERR_IO;
    }
    for (int k = 0; k < n; k++)
        free((void *)pngs[k].data);
    if (rc) {
        finish(w, t, TASK_FAILED, err.msg);
        return;
    }
    if (!owned) {
        server_log("task %s: lease lost before completion; result dropped", t->id);
        return;
    }
    metrics_count_finished(srv->metrics, TASK_COMPLETED);
    metrics_observe_generation(srv->metrics, img[0].seconds);
    server_log("task %s completed in %.2f s (%d image%s %dx%d, seed %lld)", t->id, img[0].seconds,
               n, n == 1 ? "" : "s", img[0].width, img[0].height, (long long)t->seed);
}

/* The task's init image and mask from the store, decoded into req. */
static int load_inputs(struct server *srv, const struct task *t, struct gen_request *req,
                       struct sd_err *err)
{
    if (!req->has_init_image)
        return SD_OK;
    uint8_t *file[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    int rc = SD_OK;
    for (int k = 0; k < 1 + req->has_mask && !rc; k++) {
        rc = store_input(&srv->store, t->id, k, &file[k], &len[k], err);
        if (!rc && !file[k])
            rc = sd_errf(err, SD_ERR_IO, "the task's %s is missing from the store",
                         k ? "mask" : "init image");
    }
    if (!rc)
        rc = gen_request_load_images(req, file[0], len[0], file[1], len[1], err);
    free(file[0]), free(file[1]);
    return rc;
}

static void run_task(struct worker *w, const struct task *t)
{
    struct server *srv = w->srv;
    struct sd_err err = {0};
    struct gen_request req;
    set_running(w, t->id);
    hub_notify_all(srv->hub); /* every pending task moved up one place */
    worker_tick(w);           /* catch a cancel made between claim and now */
    server_log("task %s started (attempt %d)", t->id, t->attempts);
    /* Fault injection for the fleet tests (tests/http/test_fleet.py): a task
     * that kills its worker every time. Never set in production. */
    const char *poison = getenv("DIFFUSIOND_TEST_ABORT_PROMPT");
    if (poison && *poison && t->prompt && !strcmp(poison, t->prompt))
        abort();
    if (!t->params || gen_request_from_text(t->params, &req, &err)) {
        finish(w, t, TASK_FAILED, t->params ? err.msg : "the task has no parameters");
        set_running(w, "");
        return;
    }
    if (load_inputs(srv, t, &req, &err)) {
        finish(w, t, TASK_FAILED, err.msg);
        gen_request_free(&req);
        set_running(w, "");
        return;
    }
    struct sd_params p;
    gen_request_to_params(&req, &p);
    struct sd_callbacks cb = {.progress = on_progress, .user = w, .cancel = &w->cancel};
    struct sd_image img[SD_MAX_IMAGES];
    memset(img, 0, sizeof img);
    int rc = sd_generate(srv->model, &p, &cb, img, &err);
    if (rc == SD_OK) {
        store_result(w, t, img, p.n_images, &p);
        for (int k = 0; k < p.n_images; k++)
            sd_image_free(&img[k]);
    } else if (rc == SD_ERR_CANCELLED) {
        pthread_mutex_lock(&w->mu);
        int reason = w->reason;
        pthread_mutex_unlock(&w->mu);
        int owned = 0;
        if (reason == STOP_SHUTDOWN) {
            store_release(&srv->store, t->id, w->name, &owned, NULL);
            server_log("task %s stopped by shutdown; back in the queue", t->id);
        } else if (reason == STOP_USER) {
            finish(w, t, TASK_CANCELLED, NULL);
        } else {
            server_log("task %s abandoned: its lease was lost", t->id);
        }
    } else {
        finish(w, t, TASK_FAILED, err.msg);
    }
    gen_request_free(&req);
    set_running(w, "");
    hub_notify(srv->hub, t->id);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *srv = w->srv;
    pthread_mutex_lock(&w->mu);
    while (!w->stopping) {
        pthread_mutex_unlock(&w->mu);
        struct task t;
        int claimed = 0;
        struct sd_err err = {0};
        if (store_claim(&srv->store, w->name, w->model, now_unix(), (double)srv->cfg.lease, &t, &claimed,
                        &err))
            server_log("worker: claiming a task failed: %s", err.msg);
        if (claimed) {
            run_task(w, &t);
            task_clear(&t);
        }
        pthread_mutex_lock(&w->mu);
        if (!claimed && !w->woken && !w->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1; /* also picks up tasks queued by other processes */
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        }
        w->woken = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Called from other threads */

void worker_wake(struct worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->woken = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void worker_cancel(struct worker *w, const char *id)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    if (w->id[0] && !strcmp(w->id, id) && w->reason == STOP_NONE) {
        w->reason = STOP_USER;
        atomic_store(&w->cancel, 1);
    }
    pthread_mutex_unlock(&w->mu);
}

int worker_running(struct worker *w, char *id)
{
    if (!w)
        return 0;
    pthread_mutex_lock(&w->mu);
    memcpy(id, w->id, UUID_STR_LEN);
    pthread_mutex_unlock(&w->mu);
    return id[0] != '\0';
}

void worker_tick(struct worker *w)
{
    if (!w)
        return;
    struct server *srv = w->srv;
    double lease = (double)srv->cfg.lease, now = now_mono();
    char id[UUID_STR_LEN];
    pthread_mutex_lock(&w->mu);
    /* A running task's lease is renewed every lease/3 (at most 2 s apart:
     * the renewal also brings cancellations made on other machines). */
    double every = lease / 3 < HEARTBEAT_MAX_S ? lease / 3 : HEARTBEAT_MAX_S;
    if (srv->store.ops->advertise && now - w->last_advertised >= ADVERTISE_EVERY_S) {
        struct sd_err aerr = {0};
        if (store_advertise(&srv->store, w->name, w->model, w->info, ADVERTISE_TTL_S, &aerr))
            server_log("worker: telling the fleet it is alive failed: %s", aerr.msg);
        else
            w->last_advertised = now;
    }
    int due = w->id[0] && now - w->last_heartbeat >= every;
    memcpy(id, w->id, sizeof id);
    pthread_mutex_unlock(&w->mu);
    if (!due)
        return;
    int owned = 0, cancel = 0;
    struct sd_err err = {0};
    if (store_heartbeat(&srv->store, id, w->name, now_unix(), lease, &owned, &cancel, &err)) {
        server_log("task %s: heartbeat failed: %s", id, err.msg);
        return; /* try again next tick; the lease has slack */
    }
    pthread_mutex_lock(&w->mu);
    if (!strcmp(id, w->id) && w->reason == STOP_NONE && (!owned || cancel)) {
        w->reason = owned ? STOP_USER : STOP_LOST;
        atomic_store(&w->cancel, 1);
    }
    w->last_heartbeat = now;
    pthread_mutex_unlock(&w->mu);
}

int worker_start(struct worker **out, struct server *srv, struct sd_err *err)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return sd_errf(err, SD_ERR_NOMEM, "worker: out of memory");
    w->srv = srv;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    const struct sd_model_info *in = sd_model_get_info(srv->model);
    snprintf(w->model, sizeof w->model, "%s", in->name);
    json_t *info = api_model_json(in);
    w->info = info ? json_api_dumps(info, NULL) : NULL;
    json_decref(info);
    uint32_t rnd = 0;
    random_bytes(&rnd, sizeof rnd, NULL);
    snprintf(w->name, sizeof w->name, "%s:%d:%08x", host, (int)getpid(), rnd);
    /* Join the fleet now (shared stores): API nodes accept this model's
     * tasks from the moment the worker says it serves it. */
    if (srv->store.ops->advertise) {
        struct sd_err aerr = {0};
        if (store_advertise(&srv->store, w->name, w->model, w->info, ADVERTISE_TTL_S, &aerr))
            server_log("worker: telling the fleet it is alive failed: %s", aerr.msg);
        else
            w->last_advertised = now_mono();
    }
    if (pthread_create(&w->thread, NULL, worker_main, w)) {
        free(w->info);
        free(w);
        return sd_errf(err, SD_ERR_INTERNAL, "worker: cannot start a thread");
    }
    *out = w;
    return SD_OK;
}

void worker_stop(struct worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    if (w->id[0]) {
        w->reason = STOP_SHUTDOWN;
        atomic_store(&w->cancel, 1);
    }
    int joined = w->joined;
    w->joined = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (!joined) {
        pthread_join(w->thread, NULL);
        if (w->srv->store.ops->advertise) /* leaving the fleet */
            store_advertise(&w->srv->store, w->name, w->model, NULL, 0, NULL);
    }
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    worker_stop(w);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->info);
    free(w);
}
