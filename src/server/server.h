/* server.h - `diffusiond serve`: the HTTP service around the engine.
 *
 * Reading order of src/server/ (one folder per layer, each with one door):
 *
 *     server.c        start-up, the janitor thread, signals, shutdown
 *     config.c        options (flags and DIFFUSIOND_* variables)
 *     http.c          libmicrohttpd plumbing: bodies, limits, replies, access log
 *     routes.c        the route table: method + path -> handler, auth, rate limit
 *     api/            the handlers, one file per family of routes (api/api.h)
 *     store/          where tasks, queue and images live (store/store.h)
 *     worker.c        the inference worker: claim, generate, store the PNGs
 *     sse.c           progress streams (Server-Sent Events) via suspend/resume
 *     json_dump.c     JSON output as FastAPI writes it
 *     ratelimit.c, auth.c, metrics.c, sutil.c
 *
 * Threads: libmicrohttpd's pool answers requests and only ever touches the
 * store and in-memory state; one worker thread runs generations in queue
 * order; a janitor thread expires results, requeues tasks whose lease ran
 * out and keeps the running task's lease alive; the main thread waits for
 * SIGTERM/SIGINT.
 */
#ifndef SD_SERVER_SERVER_H
#define SD_SERVER_SERVER_H

#include <stdio.h>

#include "sd.h"
#include "server/config.h"
#include "server/api/json_api.h"
#include "server/store/store.h"

struct server {
    struct server_config cfg;
    struct api_limits limits;
    sd_model *model;                 /* NULL: failed to load (reported by /health) */
    char model_error[SD_ERR_MSG_MAX];
    struct store store;
    struct metrics *metrics;
    struct ratelimit *ratelimit;
    struct auth *auth;               /* NULL: no keys required */
    struct hub *hub;
    struct worker *worker;           /* NULL without a model */
    struct http *http;
    FILE *access_log;                /* NULL: off */
    char *openapi;                   /* /openapi.json for these limits (owned) */
    double started_at;               /* Unix time the service started */
};

/* Run the service until SIGTERM or SIGINT. Returns the process exit code:
 * 0 after a clean shutdown, 1 when it could not start (bad key file, data
 * directory unusable, address in use). A model that fails to load is not
 * fatal: the service starts and reports it. */
int server_run(const struct server_config *cfg);

/* One log line on stderr: "<time> diffusiond: <message>". */
void server_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
