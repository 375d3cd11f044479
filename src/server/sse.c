/* sse.c - see sse.h. */
#include "server/sse.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server/http.h"
#include "server/hub.h"
#include "server/api/json_api.h"
#include "server/server.h"
#include "server/store/store.h"
#include "server/sutil.h"

struct sse_stream {
    struct hub_watch watch;  /* listed in the hub while the response lives */
    struct hub *hub;
    struct server *srv;
    pthread_mutex_t mu;      /* refs and bytes */
    int refs;                /* the request and the response */
    /* What has been sent. */
    int sent_status; /* -1: nothing yet */
    int sent_pos;
    int sent_step;
    int done;
    char *pend;      /* events built but not yet handed to libmicrohttpd */
    size_t pend_len, pend_off;
    double last_write;
    size_t bytes;
};

/* ------------------------------------------------------------------------ */
/* Building events */

static void emit(struct sse_stream *s, const char *event, json_t *data)
{
    size_t len = 0;
    char *text = json_api_dumps(data, &len);
    json_decref(data);
    if (!text)
        return;
    size_t need = s->pend_len + len + strlen(event) + 32;
    char *p = realloc(s->pend, need);
    if (p) {
        s->pend = p;
        s->pend_len += (size_t)snprintf(p + s->pend_len, need - s->pend_len,
                                        "event: %s\ndata: %s\n\n", event, text);
    }
    free(text);
}

static json_t *base(const struct sse_stream *s, const struct task *t)
{
    return json_pack("{s:s,s:s}", "task_id", s->watch.id, "status", task_status_name(t->status));
}

static void emit_steps(struct sse_stream *s, const struct task *t)
{
    for (int k = s->sent_step + 1; k <= t->step; k++)
        emit(s, "step", json_pack("{s:s,s:i,s:i}", "task_id", s->watch.id, "step", k, "total_steps",
                                  t->total_steps));
    if (t->step > s->sent_step)
        s->sent_step = t->step;
}

static void emit_started(struct sse_stream *s, const struct task *t)
{
    char ts[RFC3339_LEN];
    rfc3339_format(t->started_at, ts);
    json_t *d = json_pack("{s:s,s:s,s:s}", "task_id", s->watch.id, "status", "processing",
                          "started_at", ts);
    emit(s, "started", d);
    s->sent_status = TASK_PROCESSING;
}

static void emit_final(struct sse_stream *s, const struct task *t)
{
    char ts[RFC3339_LEN];
    json_t *d = base(s, t);
    if (t->finished_at > 0) {
        rfc3339_format(t->finished_at, ts);
        json_object_set_new(d, "finished_at", json_string(ts));
    }
    if (t->status == TASK_COMPLETED) {
        char url[96];
        snprintf(url, sizeof url, "/results/%s/image", s->watch.id);
        json_object_set_new(d, "seed", json_integer(t->seed));
        json_object_set_new(d, "image_url", json_string(url));
    } else if (t->status == TASK_FAILED) {
        json_object_set_new(d, "error_message",
                            t->error_message ? json_string(t->error_message) : json_null());
    }
    emit(s, task_status_name(t->status), d);
    s->done = 1;
}

/* Compare the task in the store with what this stream has sent and queue
 * the difference. */
static void build_events(struct sse_stream *s)
{
    struct task t;
    int found = 0;
    struct sd_err err = {0};
    if (store_get(&s->srv->store, s->watch.id, &t, &found, &err) || !found) {
        emit(s, "error", json_pack("{s:s,s:s}", "task_id", s->watch.id, "detail",
                                   found ? err.msg : "Task ID not found."));
        s->done = 1;
        return;
    }
    if (t.status == TASK_PENDING) {
        int pos = 0;
        store_position(&s->srv->store, s->watch.id, &pos, NULL);
        if (s->sent_status != TASK_PENDING || pos != s->sent_pos) {
            json_t *d = base(s, &t);
            json_object_set_new(d, "queue_position", json_integer(pos));
            emit(s, "queued", d);
            s->sent_pos = pos;
        }
        s->sent_status = TASK_PENDING;
        s->sent_step = 0; /* released by a stopping worker: it will start over */
    } else if (t.status == TASK_PROCESSING) {
        if (s->sent_status != TASK_PROCESSING)
            emit_started(s, &t);
        emit_steps(s, &t);
    } else {
        if (t.status == TASK_COMPLETED) {
            if (s->sent_status != TASK_PROCESSING) /* opened late: tell the whole story */
                emit_started(s, &t);
            emit_steps(s, &t);
        }
        emit_final(s, &t);
    }
    task_clear(&t);
}

/* ------------------------------------------------------------------------ */
/* The content reader */

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct sse_stream *s = cls;
    struct hub *h = s->hub;
    for (;;) {
        if (s->pend_off < s->pend_len) {
            size_t n = s->pend_len - s->pend_off;
            if (n > max)
                n = max;
            memcpy(buf, s->pend + s->pend_off, n);
            s->pend_off += n;
            if (s->pend_off == s->pend_len)
                s->pend_off = s->pend_len = 0;
            pthread_mutex_lock(&s->mu);
            s->bytes += n;
            pthread_mutex_unlock(&s->mu);
            s->last_write = now_mono();
            return (ssize_t)n;
        }
        if (s->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        int stopping;
        unsigned long seq0 = hub_seq(h, &stopping);
        if (stopping) {
            s->done = 1;
            continue;
        }
        build_events(s);
        if (s->pend_len)
            continue;
        if (now_mono() - s->last_write >= HUB_KEEPALIVE_SECONDS - 0.5) {
            static const char ka[] = ": keepalive\n\n";
            char *p = realloc(s->pend, sizeof ka);
            if (p) {
                s->pend = p;
                memcpy(p, ka, sizeof ka - 1);
                s->pend_len = sizeof ka - 1;
                continue;
            }
        }
        if (hub_suspend(h, &s->watch, seq0))
            return 0;
        /* something changed while we looked: look again */
    }
}

static void stream_unref(struct sse_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int free_it = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (free_it) {
        pthread_mutex_destroy(&s->mu);
        free(s->pend);
        free(s);
    }
}

/* The response is gone (request over, connection closing): stop waking it. */
static void reader_free(void *cls)
{
    struct sse_stream *s = cls;
    hub_remove(s->hub, &s->watch);
    stream_unref(s);
}

size_t sse_stream_bytes(struct sse_stream *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->bytes;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sse_stream_release(struct sse_stream *s)
{
    stream_unref(s);
}

enum MHD_Result sse_respond(struct server *srv, struct http_request *r, const char *id)
{
    struct hub *h = srv->hub;
    struct sse_stream *s = calloc(1, sizeof *s);
    if (!s)
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    s->hub = h;
    s->srv = srv;
    s->watch.conn = r->conn;
    snprintf(s->watch.id, sizeof s->watch.id, "%s", id);
    pthread_mutex_init(&s->mu, NULL);
    s->sent_status = -1;
    s->sent_pos = -1;
    s->last_write = now_mono();
    s->refs = 2;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, reader, s, reader_free);
    if (!resp) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    if (!hub_add(h, &s->watch)) {
        MHD_destroy_response(resp); /* calls reader_free: one reference left */
        stream_unref(s);
        return http_reply_detail(r, 503, "Shutting down.", NULL);
    }
    r->stream = s;
    return http_reply_response(r, 200, resp);
}
