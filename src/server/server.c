/* server.c - start-up, the janitor, signals and shutdown (see server.h).
 *
 * Start-up order: block the termination signals (every thread created
 * later inherits the mask, so only the main thread's sigwait sees them),
 * load the model (a failure is reported, not fatal), open the store and
 * requeue what a previous run left processing, start the worker, the
 * janitor and finally the HTTP daemon.
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting connections; stop the worker
 * (the running step finishes, the task goes back to the queue); end event
 * streams; stop the janitor and the HTTP daemon; close the store.
 */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/auth.h"
#include "server/http.h"
#include "server/routes.h"
#include "server/api/api.h"
#include "server/metrics.h"
#include "server/ratelimit.h"
#include "server/sse.h"
#include "server/worker.h"

void server_log(const char *fmt, ...)
{
    char ts[RFC3339_LEN], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rfc3339_format(now_unix(), ts);
    fprintf(stderr, "%s diffusiond: %s\n", ts, msg);
}

/* ------------------------------------------------------------------------ */
/* Janitor: expiry, lease recovery, heartbeats; once a second. */

struct janitor {
    struct server *srv;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
};

static void janitor_round(struct server *srv)
{
    struct sd_err err = {0};
    int n = 0;
    double now = now_unix();
    if (store_expire(&srv->store, now - (double)srv->cfg.result_ttl, &n, &err))
        server_log("expiring results failed: %s", err.msg);
    else if (n)
        server_log("%d result%s expired", n, n == 1 ? "" : "s");
    /* Our own running task renews its lease below; this catches tasks of
     * workers that died without a restart of this process. */
    if (store_requeue(&srv->store, now, 3, &n, &err))
        server_log("requeueing tasks failed: %s", err.msg);
    else if (n) {
        server_log("%d task%s with an expired lease requeued", n, n == 1 ? "" : "s");
        worker_wake(srv->worker);
        hub_notify_all(srv->hub);
    }
    worker_tick(srv->worker);
}

static void *janitor_main(void *arg)
{
    struct janitor *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stopping) {
        pthread_mutex_unlock(&j->mu);
        janitor_round(j->srv);
        pthread_mutex_lock(&j->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        if (!j->stopping)
            pthread_cond_timedwait(&j->cv, &j->mu, &ts);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static void janitor_stop(struct janitor *j)
{
    pthread_mutex_lock(&j->mu);
    j->stopping = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
}

/* ------------------------------------------------------------------------ */
/* Start and stop */

static void load_model(struct server *srv)
{
    struct sd_load_opts lo = {.dir = srv->cfg.model, .variant = srv->cfg.variant, .config = srv->cfg.config,
                              .vae = srv->cfg.vae, .prediction_type = srv->cfg.prediction_type,
                              .lora_dir = srv->cfg.lora_dir,
                              .threads = (int)srv->cfg.threads,
                              .precision = sd_precision_from_name(srv->cfg.precision),
                              .width = (int)srv->cfg.plan_size, .height = (int)srv->cfg.plan_size};
    struct sd_err err = {0};
    double t0 = now_mono();
    if (sd_model_load(&srv->model, &lo, &err)) {
        srv->model = NULL;
        snprintf(srv->model_error, sizeof srv->model_error, "%s", err.msg);
        server_log("model unavailable: %s (the service runs; /generate answers 503)", err.msg);
        return;
    }
    const struct sd_model_info *in = sd_model_get_info(srv->model);
    server_log("model %s loaded from %s in %.2f s (%s %s, %s, %dx%d, %s, weights %.0f MB)", in->name,
               srv->cfg.model, now_mono() - t0, in->family, in->format, in->prediction_type, in->default_width,
               in->default_height, sd_precision_name(in->precision), in->weight_bytes / 1e6);
    if (in->precision_note[0])
        server_log("%s", in->precision_note);
}

static int open_access_log(struct server *srv, struct sd_err *err)
{
    const char *a = srv->cfg.access_log;
    if (!strcmp(a, "off"))
        srv->access_log = NULL;
    else if (!strcmp(a, "-"))
        srv->access_log = stderr;
    else if (!(srv->access_log = fopen(a, "a")))
        return sd_errf(err, SD_ERR_IO, "--access-log %s: %s", a, strerror(errno));
    return SD_OK;
}

/* A shared store saw a task change (in another process, maybe). */
static void on_store_change(void *user, const char *id)
{
    struct server *srv = user;
    int queued = id[0] == '+';
    id += queued;
    if (!strcmp(id, "*"))
        hub_notify_all(srv->hub);
    else
        hub_notify(srv->hub, id);
    if (queued) /* a task became pending, maybe in another process: claim it now */
        worker_wake(srv->worker);
}

/* Everything but the model and the threads; on failure err says why. */
static int open_parts(struct server *srv, struct sd_err *err)
{
    int rc = open_access_log(srv, err);
    if (rc)
        return rc;
    if (srv->cfg.api_keys && (rc = auth_load(&srv->auth, srv->cfg.api_keys, err)))
        return rc;
    if (srv->cfg.store)
        rc = store_redis_open(&srv->store, srv->cfg.store, err);
    else
        rc = store_sqlite_open(&srv->store, srv->cfg.data_dir, err);
    if (!rc && srv->cfg.images)
        rc = store_wrap_s3(&srv->store, srv->cfg.images, srv->cfg.s3_endpoint, getenv, err);
    if (rc)
        return rc;
    int n = 0;
    /* We own the data directory (store lock): whatever a previous run left
     * processing was interrupted, so it goes back to the queue now. In a
     * shared store other workers may be running them: their leases decide. */
    if (!srv->store.ops->shared && (rc = store_requeue(&srv->store, 1e300, 3, &n, err)))
        return rc;
    if (n)
        server_log("%d interrupted task%s back in the queue", n, n == 1 ? "" : "s");
    srv->metrics = metrics_new();
    srv->ratelimit = ratelimit_new(srv->cfg.rate_limit, (int)srv->cfg.rate_burst);
    srv->hub = hub_new();
    srv->openapi = openapi_render(&srv->limits);
    if (!srv->metrics || !srv->ratelimit || !srv->hub || !srv->openapi)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");

    return SD_OK;
}

static void close_parts(struct server *srv)
{
    hub_free(srv->hub);
    free(srv->openapi);
    ratelimit_free(srv->ratelimit);
    metrics_free(srv->metrics);
    store_close(&srv->store);
    auth_free(srv->auth);
    if (srv->access_log && srv->access_log != stderr)
        fclose(srv->access_log);
    if (srv->model)
        sd_model_free(srv->model);
}

/* SIGHUP: read the API key file again; a bad file keeps the old keys. */
static void reload_keys(struct server *srv)
{
    struct sd_err err = {0};
    if (!srv->auth)
        server_log("SIGHUP: no --api-keys file to reload");
    else if (auth_reload(srv->auth, srv->cfg.api_keys, &err))
        server_log("SIGHUP: keeping the old API keys: %s", err.msg);
    else
        server_log("SIGHUP: %d API key%s loaded from %s", auth_count(srv->auth),
                   auth_count(srv->auth) == 1 ? "" : "s", srv->cfg.api_keys);
}

static int wait_for_signal(const sigset_t *set)
{
    int sig = 0;
    while (sigwait(set, &sig) != 0)
        ;
    return sig;
}

#define DEFAULT_RATE_LIMIT 10.0 /* per minute, when listening beyond loopback */

/* Whether every address host resolves to is a loopback one (127.0.0.0/8,
 * ::1): only local programs can reach the service. */
static int host_is_loopback(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) || !res)
        return 0;
    int all = 1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            uint32_t ip = ntohl(((const struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr);
            all &= (ip >> 24) == 127;
        } else if (a->ai_family == AF_INET6) {
            all &= IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)a->ai_addr)->sin6_addr);
        } else {
            all = 0;
        }
    }
    freeaddrinfo(res);
    return all;
}

int server_run(const struct server_config *cfg)
{
    struct server srv = {.cfg = *cfg, .started_at = now_unix()};
    if (srv.cfg.model == cfg->default_model) /* the copy's own buffer */
        srv.cfg.model = srv.cfg.default_model;
    srv.limits = (struct api_limits){(int)cfg->max_prompt, (int)cfg->max_steps,
                                     (int)cfg->max_side, (int)cfg->max_images,
                                     (size_t)cfg->max_upload, 0};
    if (srv.cfg.rate_limit < 0) /* the default fits the address (config.h) */
        srv.cfg.rate_limit = host_is_loopback(srv.cfg.host) ? 0 : DEFAULT_RATE_LIMIT;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sd_err err = {0};
    int rc = open_parts(&srv, &err);
    if (rc) {
        server_log("cannot start: %s", err.msg);
        close_parts(&srv);
        return 1;
    }
    if (srv.cfg.workers > 0 || srv.cfg.worker_only)
        load_model(&srv);
    if (srv.cfg.worker_only && !srv.model) {
        server_log("cannot start a worker without its model");
        close_parts(&srv);
        return 1;
    }
    if (srv.model && worker_start(&srv.worker, &srv, &err)) {
        server_log("cannot start: %s", err.msg);
        close_parts(&srv);
        return 1;
    }
    /* Changes made by other processes (a shared store) wake our streams,
     * waits and worker; started once the worker exists. */
    if (store_subscribe(&srv.store, on_store_change, &srv, &err)) {
        server_log("cannot start: %s", err.msg);
        worker_free(srv.worker);
        srv.worker = NULL;
        close_parts(&srv);
        return 1;
    }
    struct janitor j = {.srv = &srv};
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    pthread_create(&j.thread, NULL, janitor_main, &j);
    if (!srv.cfg.worker_only && http_start(&srv, &err)) {
        server_log("cannot start: %s", err.msg);
        janitor_stop(&j);
        store_subscribe(&srv.store, NULL, NULL, NULL);
        worker_free(srv.worker);
        close_parts(&srv);
        return 1;
    }
    if (srv.cfg.worker_only)
        server_log("worker serving %s, tasks from %s", sd_model_get_info(srv.model)->name,
                   srv.cfg.store);
    else
        server_log("listening on http://%s%s%s:%d (%s %s%s%s)", strchr(srv.cfg.host, ':') ? "[" : "",
                   srv.cfg.host, strchr(srv.cfg.host, ':') ? "]" : "", http_port(&srv),
                   srv.cfg.store ? "tasks in" : "data in",
                   srv.cfg.store ? srv.cfg.store : srv.cfg.data_dir,
                   srv.worker ? "" : ", no local worker", srv.auth ? ", API keys required" : "");
    if (srv.cfg.worker_only)
        ; /* no HTTP: no rate limit to report */
    else if (srv.cfg.rate_limit > 0)
        server_log("rate limit: %g submissions per minute per client, burst %lld "
                   "(--rate-limit 0 turns it off)", srv.cfg.rate_limit, srv.cfg.rate_burst);
    else
        server_log("rate limit: off%s (--rate-limit N sets one)",
                   cfg->rate_limit < 0 ? " on a loopback address" : "");

    int sig;
    while ((sig = wait_for_signal(&set)) == SIGHUP)
        reload_keys(&srv);
    server_log("%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    http_quiesce(&srv);
    worker_stop(srv.worker); /* the running step finishes; the task is requeued */
    store_subscribe(&srv.store, NULL, NULL, NULL); /* no more wake-ups from other processes */
    janitor_stop(&j);
    hub_shutdown(srv.hub);
    http_stop(&srv);
    worker_free(srv.worker);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    close_parts(&srv);
    server_log("stopped");
    return 0;
}
