/* http.c - see http.h. */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/metrics.h"
#include "server/routes.h"
#include "server/api/api.h"
#include "server/sse.h"

/* A body over the limit is still read (and dropped) up to this much more,
 * so that a client that writes its whole body before reading the answer
 * (Python's urllib, curl without Expect) gets the 413 rather than a reset
 * connection; reading costs bandwidth, not memory. A declared body beyond
 * it is refused at once and the connection closed. */
#define DRAIN_LIMIT ((size_t)256 << 20)

struct http {
    struct MHD_Daemon *daemon;
    int port;
    int quiesced_fd; /* the listen socket once quiesced, closed after the daemon stops */
};

const char *http_header(struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_query(struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

static void add_headers(struct MHD_Response *resp, const char *const *headers)
{
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    for (int i = 0; headers && headers[i]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
}

/* Whether origin is in the comma-separated list (or the list is "*"). */
static int origin_allowed(const char *list, const char *origin)
{
    size_t olen = strlen(origin);
    while (*list) {
        while (*list == ' ' || *list == ',')
            list++;
        size_t n = strcspn(list, ",");
        size_t m = n;
        while (m > 0 && list[m - 1] == ' ')
            m--;
        if ((m == 1 && list[0] == '*') || (m == olen && !strncmp(list, origin, m)))
            return 1;
        list += n;
    }
    return 0;
}

/* --cors-origins: a page from an allowed origin may call us; preflights
 * (OPTIONS) learn what it may send. */
static void add_cors(struct http_request *r, struct MHD_Response *resp)
{
    const char *list = r->srv->cfg.cors_origins;
    const char *origin = http_header(r, "Origin");
    if (!list || !origin || !origin_allowed(list, origin))
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Vary", "Origin");
    if (!strcmp(r->method, "OPTIONS")) {
        const char *req_headers = http_header(r, "Access-Control-Request-Headers");
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                req_headers ? req_headers : "Authorization, Content-Type");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    } else {
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "Location, Retry-After, x-should-retry");
    }
}

enum MHD_Result http_reply_response(struct http_request *r, int status,
                                    struct MHD_Response *resp)
{
    add_cors(r, resp);
    r->status = status;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result http_reply(struct http_request *r, int status, const char *content_type,
                           const char *body, size_t len, int must_free,
                           const char *const *headers)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, (void *)body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        if (must_free)
            free((void *)body);
        return MHD_NO;
    }
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    add_headers(resp, headers);
    r->bytes = len;
    return http_reply_response(r, status, resp);
}

enum MHD_Result http_reply_json(struct http_request *r, int status, json_t *body,
                                const char *const *headers)
{
    size_t len = 0;
    char *text = body ? json_api_dumps(body, &len) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"detail\":\"Out of memory.\"}";
        return http_reply(r, 500, "application/json", oom, sizeof oom - 1, 0, NULL);
    }
    return http_reply(r, status, "application/json", text, len, 1, headers);
}

enum MHD_Result http_reply_detail(struct http_request *r, int status, const char *msg,
                                  const char *const *headers)
{
    return http_reply_json(r, status, json_pack("{s:s}", "detail", msg), headers);
}

/* ------------------------------------------------------------------------ */
/* Request life cycle */

static void client_address(struct MHD_Connection *conn, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, cap, "-");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
}

static struct http_request *request_new(struct server *srv, struct MHD_Connection *conn,
                                        const char *url, const char *method, const char *version)
{
    struct http_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->path = strdup(url);
    if (!r->path) {
        free(r);
        return NULL;
    }
    r->srv = srv;
    r->conn = conn;
    r->t0 = now_mono();
    snprintf(r->version, sizeof r->version, "%s", version ? version : "-");
    snprintf(r->method, sizeof r->method, "%s", method);
    client_address(conn, r->client, sizeof r->client);
    return r;
}

/* Keep up to max_body bytes; count (and drop) the rest. */
static void body_append(struct http_request *r, const char *data, size_t n, size_t max_body)
{
    if (r->body_too_large || r->body_len + n > max_body) {
        r->body_too_large = 1;
        return;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            r->body_too_large = 1; /* answered as 413 rather than crashing */
            return;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct server *srv = cls;
    struct http_request *r = *con_cls;
    if (r && r->wait) /* a blocking call resumed: its handler looks again */
        return r->route->fn(srv, r);
    if (!r) {
        r = request_new(srv, conn, url, method, version);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        r->body_limit = routes_body_limit(srv, method, r->path);
        const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > (unsigned long long)r->body_limit + DRAIN_LIMIT) {
            r->body_too_large = 1;
            return routes_dispatch(srv, r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        body_append(r, upload_data, *upload_data_size, r->body_limit);
        r->bytes += *upload_data_size; /* bytes received so far, replaced by the reply size */
        *upload_data_size = 0;
        if (r->bytes > r->body_limit + DRAIN_LIMIT)
            return MHD_NO; /* an endless chunked upload: drop the connection */
        return MHD_YES;
    }
    r->bytes = 0;
    return routes_dispatch(srv, r);
}

/* Copy s for the log with control characters, quotes, backslashes and
 * non-ASCII bytes as \xNN, so a crafted path cannot forge log lines. */
static void log_escape(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && n + 5 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
        else
            out[n++] = (char)c;
    }
    out[n] = '\0';
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct server *srv = cls;
    struct http_request *r = *con_cls;
    if (!r)
        return;
    double secs = now_mono() - r->t0;
    size_t bytes = r->bytes;
    if (r->stream) {
        bytes = sse_stream_bytes(r->stream);
        sse_stream_release(r->stream);
    }
    api_wait_end(srv, r);
    const char *route = r->route ? r->route->pattern : "other";
    metrics_count_request(srv->metrics, route, r->status ? r->status : 499,
                          r->stream ? -1.0 : secs);
    if (srv->access_log) {
        char ts[RFC3339_LEN], method[64], path[1024];
        rfc3339_format(now_unix(), ts);
        log_escape(r->method, method, sizeof method);
        log_escape(r->path, path, sizeof path);
        fprintf(srv->access_log, "%s %s \"%s %s %s\" %d %zu %.1fms%s\n", ts, r->client,
                method, path, r->version, r->status ? r->status : 499,
                bytes, secs * 1e3, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted");
        fflush(srv->access_log);
    }
    free(r->body);
    free(r->path);
    free(r);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (strstr(msg, "Application reported internal error"))
        return; /* a handler closed the connection on purpose (its client left) */
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    server_log("http: %s", msg);
}

/* ------------------------------------------------------------------------ */
/* Daemon */

static int resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len,
                   struct sd_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc || !res)
        return sd_errf(err, SD_ERR_ARG, "--host %s: %s", host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return SD_OK;
}

int http_start(struct server *srv, struct sd_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int rc = resolve(srv->cfg.host, (int)srv->cfg.port, &ss, &sslen, err);
    if (rc)
        return rc;
    struct http *h = calloc(1, sizeof *h);
    if (!h)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    /* poll(), not epoll: libmicrohttpd 0.9.75 aborts the process when
     * MHD_quiesce_daemon() and a pool thread of an epoll daemon both take
     * the listen socket out of the thread's epoll set at once ("Failed to
     * remove listen FD from epoll set", daemon.c:5531; seen on SIGTERM).
     * With poll() each thread drops the socket itself, told through its
     * inter-thread channel. poll() scans all of a thread's sockets at each
     * wake: at the default 1024 connections over 4 threads, 256 of them. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)srv->cfg.http_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)srv->cfg.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, 60u,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_END);
    if (!h->daemon) {
        free(h);
        return sd_errf(err, SD_ERR_IO, "cannot listen on %s port %lld (address in use?)",
                       srv->cfg.host, srv->cfg.port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : (int)srv->cfg.port;
    h->quiesced_fd = -1;
    srv->http = h;
    return SD_OK;
}

int http_port(struct server *srv)
{
    return srv->http ? srv->http->port : 0;
}

void http_quiesce(struct server *srv)
{
    struct http *h = srv->http;
    if (!h || !h->daemon || h->quiesced_fd >= 0)
        return;
    MHD_socket fd = MHD_quiesce_daemon(h->daemon);
    if (fd == MHD_INVALID_SOCKET)
        return;
    /* New connections are refused from here on: shutdown() takes the socket
     * out of the listening state. It is closed only after MHD_stop_daemon(),
     * as libmicrohttpd asks: a pool thread may still be polling it, and a
     * closed number could be reused by a file opened meanwhile. */
    shutdown(fd, SHUT_RDWR);
    h->quiesced_fd = fd;
}

void http_stop(struct server *srv)
{
    struct http *h = srv->http;
    if (!h)
        return;
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    if (h->quiesced_fd >= 0)
        close(h->quiesced_fd);
    free(h);
    srv->http = NULL;
}
