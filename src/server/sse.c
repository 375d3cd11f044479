/* sse.c - see sse.h. */
#include "server/sse.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server/http.h"
#include "server/api/json_api.h"
#include "server/server.h"
#include "server/store/store.h"
#include "server/sutil.h"

#define KEEPALIVE_SECONDS 15.0

struct sse_stream {
    struct sse_stream *prev, *next; /* in the hub's list while the response lives */
    struct hub *hub;
    struct server *srv;
    struct MHD_Connection *conn;
    char id[UUID_STR_LEN];
    int refs;       /* the request and the response; under hub->mu */
    int suspended;  /* under hub->mu */
    int listed;
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

struct hub {
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the keepalive thread early at shutdown */
    struct sse_stream *head;
    unsigned long seq;       /* bumped by every notification */
    int stopping;
    pthread_t keepalive;
    int has_thread;
};

/* ------------------------------------------------------------------------ */
/* Waking streams */

/* Resume the suspended streams that `match` selects. Connections are
 * resumed after the lock is dropped; a suspended connection cannot go away
 * meanwhile (libmicrohttpd does not touch it), and clearing `suspended`
 * under the lock makes us its only resumer. */
static void wake(struct hub *h, const char *id)
{
    pthread_mutex_lock(&h->mu);
    h->seq++;
    size_t n = 0;
    for (struct sse_stream *s = h->head; s; s = s->next)
        n++;
    struct MHD_Connection **conns = n ? malloc(n * sizeof *conns) : NULL;
    size_t k = 0;
    for (struct sse_stream *s = h->head; s && conns; s = s->next) {
        if (s->suspended && (!id || !strcmp(s->id, id))) {
            s->suspended = 0;
            conns[k++] = s->conn;
        }
    }
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < k; i++)
        MHD_resume_connection(conns[i]);
    free(conns);
}

void hub_notify(struct hub *h, const char *id)
{
    if (h)
        wake(h, id);
}

void hub_notify_all(struct hub *h)
{
    if (h)
        wake(h, NULL);
}

static void *keepalive_main(void *arg)
{
    struct hub *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)KEEPALIVE_SECONDS;
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        if (h->stopping)
            break;
        pthread_mutex_unlock(&h->mu);
        wake(h, NULL); /* readers write ": keepalive" when due */
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

struct hub *hub_new(void)
{
    struct hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    if (pthread_create(&h->keepalive, NULL, keepalive_main, h) == 0)
        h->has_thread = 1;
    return h;
}

void hub_shutdown(struct hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (h->has_thread) {
        pthread_join(h->keepalive, NULL);
        h->has_thread = 0;
    }
    wake(h, NULL); /* readers see `stopping` and end their streams */
}

void hub_free(struct hub *h)
{
    if (!h)
        return;
    hub_shutdown(h);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

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
    return json_pack("{s:s,s:s}", "task_id", s->id, "status", task_status_name(t->status));
}

static void emit_steps(struct sse_stream *s, const struct task *t)
{
    for (int k = s->sent_step + 1; k <= t->step; k++)
        emit(s, "step", json_pack("{s:s,s:i,s:i}", "task_id", s->id, "step", k, "total_steps",
                                  t->total_steps));
    if (t->step > s->sent_step)
        s->sent_step = t->step;
}

static void emit_started(struct sse_stream *s, const struct task *t)
{
    char ts[RFC3339_LEN];
    rfc3339_format(t->started_at, ts);
    json_t *d = json_pack("{s:s,s:s,s:s}", "task_id", s->id, "status", "processing",
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
        snprintf(url, sizeof url, "/results/%s/image", s->id);
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
    if (store_get(&s->srv->store, s->id, &t, &found, &err) || !found) {
        emit(s, "error", json_pack("{s:s,s:s}", "task_id", s->id, "detail",
                                   found ? err.msg : "Task ID not found."));
        s->done = 1;
        return;
    }
    if (t.status == TASK_PENDING) {
        int pos = 0;
        store_position(&s->srv->store, s->id, &pos, NULL);
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
            s->bytes += n;
            s->last_write = now_mono();
            return (ssize_t)n;
        }
        if (s->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&h->mu);
        unsigned long seq0 = h->seq;
        int stopping = h->stopping;
        pthread_mutex_unlock(&h->mu);
        if (stopping) {
            s->done = 1;
            continue;
        }
        build_events(s);
        if (s->pend_len)
            continue;
        if (now_mono() - s->last_write >= KEEPALIVE_SECONDS - 0.5) {
            static const char ka[] = ": keepalive\n\n";
            char *p = realloc(s->pend, sizeof ka);
            if (p) {
                s->pend = p;
                memcpy(p, ka, sizeof ka - 1);
                s->pend_len = sizeof ka - 1;
                continue;
            }
        }
        pthread_mutex_lock(&h->mu);
        if (h->seq != seq0 || h->stopping) {
            pthread_mutex_unlock(&h->mu);
            continue; /* something changed while we looked: look again */
        }
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
        pthread_mutex_unlock(&h->mu);
        return 0;
    }
}

static void stream_unref_locked(struct sse_stream *s, int *free_it)
{
    *free_it = --s->refs == 0;
}

static void stream_free(struct sse_stream *s)
{
    free(s->pend);
    free(s);
}

/* The response is gone (request over, connection closing): stop waking it. */
static void reader_free(void *cls)
{
    struct sse_stream *s = cls;
    struct hub *h = s->hub;
    int free_it;
    pthread_mutex_lock(&h->mu);
    if (s->listed) {
        if (s->prev)
            s->prev->next = s->next;
        else
            h->head = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->listed = 0;
    }
    s->conn = NULL;
    s->suspended = 0;
    stream_unref_locked(s, &free_it);
    pthread_mutex_unlock(&h->mu);
    if (free_it)
        stream_free(s);
}

size_t sse_stream_bytes(struct sse_stream *s)
{
    pthread_mutex_lock(&s->hub->mu);
    size_t n = s->bytes;
    pthread_mutex_unlock(&s->hub->mu);
    return n;
}

void sse_stream_release(struct sse_stream *s)
{
    struct hub *h = s->hub;
    int free_it;
    pthread_mutex_lock(&h->mu);
    stream_unref_locked(s, &free_it);
    pthread_mutex_unlock(&h->mu);
    if (free_it)
        stream_free(s);
}

enum MHD_Result sse_respond(struct server *srv, struct http_request *r, const char *id)
{
    struct hub *h = srv->hub;
    struct sse_stream *s = calloc(1, sizeof *s);
    if (!s)
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    s->hub = h;
    s->srv = srv;
    s->conn = r->conn;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->sent_status = -1;
    s->sent_pos = -1;
    s->last_write = now_mono();
    s->refs = 2;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, reader, s, reader_free);
    if (!resp) {
        free(s);
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    pthread_mutex_lock(&h->mu);
    int stopping = h->stopping;
    if (!stopping) {
        s->next = h->head;
        if (h->head)
            h->head->prev = s;
        h->head = s;
        s->listed = 1;
    }
    pthread_mutex_unlock(&h->mu);
    if (stopping) {
        MHD_destroy_response(resp); /* calls reader_free: one reference left */
        free(s);
        return http_reply_detail(r, 503, "Shutting down.", NULL);
    }
    r->stream = s;
    return http_reply_response(r, 200, resp);
}
