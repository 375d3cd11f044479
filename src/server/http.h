/* http.h - the HTTP layer over libmicrohttpd.
 *
 * http.c owns the daemon and one struct http_request per request: it
 * collects the body (up to --max-body; more is read and dropped so the
 * client still gets a clean 413), hands complete requests to
 * routes_dispatch(), and writes one access-log line when the request ends.
 * Handlers answer through the http_reply* helpers, which queue the response
 * and record status and size for the log and the metrics.
 *
 * Handlers run on libmicrohttpd's threads and must not block: store reads
 * and writes are fine, inference is not (the worker does that).
 */
#ifndef SD_SERVER_HTTP_H
#define SD_SERVER_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>

#include "server/server.h"
#include "server/sutil.h"

struct route;
struct sse_stream;
struct api_wait;

struct http_request {
    struct server *srv;
    struct MHD_Connection *conn;
    char method[16];
    char *path;                 /* decoded path, without the query */
    char version[16];
    char client[64];            /* peer address */
    double t0;                  /* monotonic start */
    char *body;                 /* NUL-terminated; NULL when empty */
    size_t body_len, body_cap;
    size_t body_limit;          /* --max-body, or --max-upload on routes taking images */
    int body_too_large;
    const struct route *route;  /* set by routes_dispatch */
    char param[64];             /* the {task_id} path segment */
    int status;                 /* what was answered, for the log */
    size_t bytes;
    struct sse_stream *stream;  /* an event stream answered this request */
    struct api_wait *wait;      /* a blocking call waits for its task (api/wait.c) */
};

/* Start listening (cfg host/port). */
int http_start(struct server *srv, struct sd_err *err);
/* The port actually bound (useful with --port 0). */
int http_port(struct server *srv);
/* Stop accepting new connections; existing ones continue. */
void http_quiesce(struct server *srv);
/* Close everything and free the daemon. Event streams must be ended first
 * (hub_shutdown). */
void http_stop(struct server *srv);

/* A request header, or NULL. */
const char *http_header(struct http_request *r, const char *name);
/* A query-string argument (decoded), or NULL. */
const char *http_query(struct http_request *r, const char *name);

/* Queue a response. `headers` is NULL or a NULL-terminated list of name,
 * value pairs. With `must_free` the body is malloc'd and handed over;
 * otherwise it must outlive the response (a static string). Returns the
 * libmicrohttpd result for the access handler. */
enum MHD_Result http_reply(struct http_request *r, int status, const char *content_type,
                           const char *body, size_t len, int must_free,
                           const char *const *headers);
/* Reply with a JSON document (serialised like FastAPI; `body` is consumed). */
enum MHD_Result http_reply_json(struct http_request *r, int status, json_t *body,
                                const char *const *headers);
/* {"detail": msg} with the given status. */
enum MHD_Result http_reply_detail(struct http_request *r, int status, const char *msg,
                                  const char *const *headers);
/* Queue an already built response (event streams). */
enum MHD_Result http_reply_response(struct http_request *r, int status,
                                    struct MHD_Response *resp);

#endif
