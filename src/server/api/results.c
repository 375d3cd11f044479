/* api/results.c - GET /results/{id} (+ /image, /events) and cancellation.
 *
 * Every handler starts with find_task(): a malformed or unknown id is 404
 * ("Task ID not found.", as in the seed), an expired one 410. A finished
 * task whose time-to-live has passed counts as expired even before the
 * janitor has cleaned it up, so expiry is exact to the second.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/api.h"
#include "server/sse.h"
#include "server/worker.h"

enum found { FOUND, ANSWERED };

/* Load the task named by the path into *t, or answer and return ANSWERED. */
static enum found find_task(struct server *srv, struct http_request *r, struct task *t,
                            enum MHD_Result *ret)
{
    int found = 0;
    struct sd_err err = {0};
    memset(t, 0, sizeof *t);
    if (!uuid_valid(r->param)) {
        *ret = http_reply_detail(r, 404, "Task ID not found.", NULL);
        return ANSWERED;
    }
    if (store_get(&srv->store, r->param, t, &found, &err)) {
        server_log("reading task %s failed: %s", r->param, err.msg);
        static const char *const retry[] = {"Retry-After", "5", NULL};
        *ret = http_reply_detail(r, 503, "The task store is unavailable; retry later.", retry);
        return ANSWERED;
    }
    if (!found) {
        *ret = http_reply_detail(r, 404, "Task ID not found.", NULL);
        return ANSWERED;
    }
    int stale = task_status_final(t->status) &&
                t->finished_at + (double)srv->cfg.result_ttl < now_unix();
    if (t->status == TASK_EXPIRED || stale) {
        task_clear(t);
        *ret = http_reply_detail(r, 410, "Task result has expired.", NULL);
        return ANSWERED;
    }
    return FOUND;
}

static json_t *time_or_null(double t)
{
    if (t <= 0)
        return json_null();
    char s[RFC3339_LEN];
    rfc3339_format(t, s);
    return json_string(s);
}

static json_t *nullable_string(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* The seed's ResultResponse fields first, then ours. images: the base64
 * PNGs of a completed task (NULL otherwise); image_base64 is the first. */
static json_t *result_json(struct server *srv, const struct task *t, json_t *images)
{
    json_t *o = json_object();
    json_object_set_new(o, "task_id", json_string(t->id));
    json_object_set_new(o, "status", json_string(task_status_name(t->status)));
    json_object_set_new(o, "prompt", json_string(t->prompt ? t->prompt : ""));
    json_t *first = json_array_get(images, 0);
    json_object_set(o, "image_base64", first ? first : json_null());
    json_object_set_new(o, "error_message", nullable_string(t->error_message));
    if (t->status == TASK_PENDING)
        json_object_set_new(o, "progress", json_null());
    else
        json_object_set_new(o, "progress", json_pack("{s:i,s:i}", "step", t->step,
                                                     "total_steps", t->total_steps));
    int pos = 0;
    if (t->status == TASK_PENDING)
        store_position(&srv->store, t->id, &pos, NULL);
    json_object_set_new(o, "queue_position", pos ? json_integer(pos) : json_null());
    json_object_set_new(o, "seed", json_integer(t->seed));
    json_object_set_new(o, "created_at", time_or_null(t->created_at));
    json_object_set_new(o, "started_at", time_or_null(t->started_at));
    json_object_set_new(o, "finished_at", time_or_null(t->finished_at));
    if (t->status == TASK_COMPLETED) {
        char url[128];
        snprintf(url, sizeof url, "/results/%s/image", t->id);
        json_object_set_new(o, "image_url", json_string(url));
        json_t *urls = json_array();
        for (int k = 0; k < t->n_images; k++) {
            snprintf(url, sizeof url, "/results/%s/image?index=%d", t->id, k);
            json_array_append_new(urls, json_string(url));
        }
        json_object_set_new(o, "image_urls", urls);
        json_object_set(o, "images_base64", images);
    }
    json_t *params = t->params ? json_loads(t->params, 0, NULL) : NULL;
    json_object_set_new(o, "params", params ? params : json_null());
    return o;
}

static const char *const no_store[] = {"Cache-Control", "no-store", NULL};

/* A store that cannot be reached (Redis restarting, S3 down: SD_ERR_IO) is
 * worth a retry, so 503 + Retry-After; an image that is gone is a 500. */
static enum MHD_Result image_unreadable(struct http_request *r, const struct sd_err *err)
{
    static const char *const retry[] = {"Retry-After", "5", NULL};
    if (err->code == SD_ERR_IO)
        return http_reply_detail(r, 503, "The image store is unavailable; retry later.", retry);
    return http_reply_detail(r, 500, "The stored image could not be read.", NULL);
}

json_t *api_task_images_base64(struct server *srv, const struct task *t, struct sd_err *err)
{
    json_t *a = json_array();
    for (int k = 0; a && k < t->n_images; k++) {
        uint8_t *png = NULL;
        size_t len = 0;
        if (store_image(&srv->store, t->id, k, &png, &len, err) || !png) {
            if (!png && !err->msg[0])
                sd_errf(err, SD_ERR_INTERNAL, "image %d is missing", k);
            json_decref(a);
            return NULL;
        }
        char *b64 = base64_encode(png, len, NULL);
        free(png);
        json_t *s = b64 ? json_string_nocheck(b64) : NULL;
        free(b64);
        if (!s || json_array_append_new(a, s)) {
            sd_errf(err, SD_ERR_NOMEM, "out of memory");
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

enum MHD_Result api_result(struct server *srv, struct http_request *r)
{
    struct task t;
    enum MHD_Result ret;
    if (find_task(srv, r, &t, &ret) == ANSWERED)
        return ret;
    json_t *images = NULL;
    if (t.status == TASK_COMPLETED) {
        struct sd_err err = {0};
        if (!(images = api_task_images_base64(srv, &t, &err))) {
            server_log("task %s: images unreadable: %s", t.id, err.msg);
            task_clear(&t);
            return image_unreadable(r, &err);
        }
    }
    json_t *body = result_json(srv, &t, images);
    json_decref(images);
    task_clear(&t);
    return http_reply_json(r, 200, body, no_store);
}

enum MHD_Result api_result_image(struct server *srv, struct http_request *r)
{
    struct task t;
    enum MHD_Result ret;
    if (find_task(srv, r, &t, &ret) == ANSWERED)
        return ret;
    if (t.status != TASK_COMPLETED) {
        char msg[96];
        snprintf(msg, sizeof msg, "Task is not completed (status: %s).",
                 task_status_name(t.status));
        task_clear(&t);
        return http_reply_detail(r, 409, msg, NULL);
    }
    int n = t.n_images;
    task_clear(&t);
    const char *q = http_query(r, "index");
    long k = 0;
    if (q) {
        char *end;
        k = strtol(q, &end, 10);
        if (!*q || *end || k < 0 || k >= n) {
            char msg[96];
            snprintf(msg, sizeof msg, "index must be an integer from 0 to %d.", n - 1);
            return http_reply_detail(r, 404, msg, NULL);
        }
    }
    uint8_t *png = NULL;
    size_t len = 0;
    struct sd_err err = {0};
    if (store_image(&srv->store, r->param, (int)k, &png, &len, &err) || !png) {
        server_log("task %s: image unreadable: %s", r->param, err.msg);
        return image_unreadable(r, &err);
    }
    char disp[128];
    if (k)
        snprintf(disp, sizeof disp, "inline; filename=\"%s-%ld.png\"", r->param, k);
    else
        snprintf(disp, sizeof disp, "inline; filename=\"%s.png\"", r->param);
    const char *hdr[] = {"Content-Disposition", disp, "Cache-Control", "private, max-age=3600",
                         NULL};
    return http_reply(r, 200, "image/png", (const char *)png, len, 1, hdr);
}

enum MHD_Result api_result_events(struct server *srv, struct http_request *r)
{
    struct task t;
    enum MHD_Result ret;
    if (find_task(srv, r, &t, &ret) == ANSWERED)
        return ret;
    task_clear(&t);
    return sse_respond(srv, r, r->param);
}

enum MHD_Result api_cancel(struct server *srv, struct http_request *r)
{
    struct task t;
    enum MHD_Result ret;
    if (find_task(srv, r, &t, &ret) == ANSWERED)
        return ret;
    enum cancel_result cr;
    struct sd_err err = {0};
    if (api_task_cancel(srv, t.id, &cr, &err)) {
        task_clear(&t);
        server_log("cancelling %s failed: %s", r->param, err.msg);
        return http_reply_detail(r, 500, "The task store could not be updated.", NULL);
    }
    json_t *body = NULL;
    int status = 200;
    char msg[96];
    switch (cr) {
    case CANCEL_DONE:
        body = json_pack("{s:s,s:s,s:s}", "task_id", t.id, "status", "cancelled", "message",
                         "Task cancelled.");
        server_log("task %s cancelled while pending", t.id);
        break;
    case CANCEL_REQUESTED:
        status = 202;
        body = json_pack("{s:s,s:s,s:s}", "task_id", t.id, "status", "processing", "message",
                         "Cancellation requested; the task stops after its current step.");
        break;
    case CANCEL_TOO_LATE:
    case CANCEL_NOT_FOUND: { /* it finished after find_task looked */
        struct task now_t;
        int found = 0;
        int final = store_get(&srv->store, t.id, &now_t, &found, NULL) == SD_OK && found;
        status = final && now_t.status == TASK_EXPIRED ? 410 : 409;
        snprintf(msg, sizeof msg, status == 410 ? "Task result has expired."
                                                : "Task already finished (status: %s).",
                 task_status_name(final ? now_t.status : TASK_COMPLETED));
        if (final)
            task_clear(&now_t);
        body = api_detail(msg);
        break;
    }
    }
    task_clear(&t);
    return http_reply_json(r, status, body, no_store);
}
