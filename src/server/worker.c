/* worker.c - see worker.h. */
#include "server/worker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/api/json_api.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/sse.h"
#include "server/store/store.h"

#define MAX_ATTEMPTS 3

enum stop_reason { STOP_NONE, STOP_USER, STOP_SHUTDOWN, STOP_LOST };

struct worker {
    struct server *srv;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char name[128];          /* worker id in the store: host:pid:random */
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
                         const struct sd_params *p)
{
    struct server *srv = w->srv;
    struct sd_err err = {0};
    uint8_t *png = NULL;
    size_t len = 0;
    if (sd_image_png(img, p, srv->model, &png, &len, &err)) {
        finish(w, t, TASK_FAILED, err.msg);
        return;
    }
    int owned = 0;
    if (store_complete(&srv->store, t->id, w->name, now_unix(), png, len, &owned, &err)) {
        free(png);
        server_log("task %s: storing the image failed: %s", t->id, err.msg);
        finish(w, t, TASK_FAILED, "the image could not be stored");
        return;
    }
    free(png);
    if (!owned) {
        server_log("task %s: lease lost before completion; result dropped", t->id);
        return;
    }
    metrics_count_finished(srv->metrics, TASK_COMPLETED);
    metrics_observe_generation(srv->metrics, img->seconds);
    server_log("task %s completed in %.2f s (%dx%d, seed %lld)", t->id, img->seconds,
               img->width, img->height, (long long)t->seed);
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
    if (!t->params || gen_request_from_text(t->params, &req, &err)) {
        finish(w, t, TASK_FAILED, t->params ? err.msg : "the task has no parameters");
        set_running(w, "");
        return;
    }
    struct sd_params p;
    gen_request_to_params(&req, &p);
    struct sd_callbacks cb = {.progress = on_progress, .user = w, .cancel = &w->cancel};
    struct sd_image img = {0};
    int rc = sd_generate(srv->model, &p, &cb, &img, &err);
    if (rc == SD_OK) {
        store_result(w, t, &img, &p);
        sd_image_free(&img);
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
        if (store_claim(&srv->store, w->name, now_unix(), (double)srv->cfg.lease, &t, &claimed,
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

void worker_tick(struct worker *w)
{
    if (!w)
        return;
    struct server *srv = w->srv;
    double lease = (double)srv->cfg.lease, now = now_mono();
    char id[UUID_STR_LEN];
    pthread_mutex_lock(&w->mu);
    int due = w->id[0] && now - w->last_heartbeat >= lease / 3;
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
    uint32_t rnd = 0;
    random_bytes(&rnd, sizeof rnd, NULL);
    snprintf(w->name, sizeof w->name, "%s:%d:%08x", host, (int)getpid(), rnd);
    if (pthread_create(&w->thread, NULL, worker_main, w)) {
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
    if (!joined)
        pthread_join(w->thread, NULL);
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    worker_stop(w);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
