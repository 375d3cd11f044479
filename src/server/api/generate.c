/* api/generate.c - POST /generate: validate, queue, answer 202.
 *
 * Order of checks, as in the seed: the body is validated first (422), then
 * the model must be loaded (503), then the engine checks the values against
 * the model (422), then the queue must have room (503 + Retry-After).
 * The task is durable (in the store) before 202 goes out.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/metrics.h"
#include "server/api/api.h"
#include "server/worker.h"

/* A random seed that JavaScript clients can hold exactly (< 2^32), chosen
 * here so that the stored task, the result and a rerun after a crash all use
 * the same one. */
static int64_t random_seed(void)
{
    uint32_t v = 0;
    if (random_bytes(&v, sizeof v, NULL))
        v = (uint32_t)(now_unix() * 1e6);
    return (int64_t)v;
}

static enum MHD_Result value_error(struct http_request *r, json_t *body, const char *msg)
{
    char text[SD_ERR_MSG_MAX + 16];
    snprintf(text, sizeof text, "Value error, %s", msg);
    json_t *ctx = json_pack("{s:s}", "error", msg);
    json_t *item = api_error_item("value_error", NULL, text, body, ctx);
    json_decref(ctx);
    return http_reply_json(r, 422, json_pack("{s:[o]}", "detail", item), NULL);
}

/* Seconds until a client should look again, from recent generation times. */
static long estimate_seconds(struct server *srv, int tasks_ahead)
{
    double t = metrics_typical_generation(srv->metrics, 5.0) * (tasks_ahead > 0 ? tasks_ahead : 1);
    if (t < 1)
        return 1;
    return t > 3600 ? 3600 : (long)ceil(t);
}

static enum MHD_Result queue(struct server *srv, struct http_request *r, struct gen_request *req)
{
    struct task t = {0};
    struct sd_err err = {0};
    if (uuid4_new(t.id, &err))
        return http_reply_detail(r, 500, "Could not create a task id.", NULL);
    json_t *params = gen_request_to_json(req);
    t.params = params ? json_api_dumps(params, NULL) : NULL;
    json_decref(params);
    if (!t.params)
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    t.prompt = req->prompt;
    t.seed = req->seed;
    t.created_at = now_unix();
    int accepted = 0;
    int rc = store_put(&srv->store, &t, (int)srv->cfg.queue_capacity, &accepted, &err);
    free(t.params);
    if (rc) {
        server_log("queueing a task failed: %s", err.msg);
        return http_reply_detail(r, 500, "The task could not be stored.", NULL);
    }
    char secs[32];
    if (!accepted) {
        snprintf(secs, sizeof secs, "%ld", estimate_seconds(srv, 1));
        const char *hdr[] = {"Retry-After", secs, NULL};
        char msg[128];
        snprintf(msg, sizeof msg, "Queue is full (%lld tasks waiting); retry later.",
                 srv->cfg.queue_capacity);
        return http_reply_detail(r, 503, msg, hdr);
    }
    worker_wake(srv->worker);
    int pos = 0;
    store_position(&srv->store, t.id, &pos, NULL);
    char location[64];
    snprintf(location, sizeof location, "/results/%s", t.id);
    snprintf(secs, sizeof secs, "%ld", estimate_seconds(srv, pos));
    const char *hdr[] = {"Location", location, "Retry-After", secs, NULL};
    json_t *body = json_pack("{s:s,s:s,s:s,s:i,s:I}", "task_id", t.id, "status", "pending",
                             "message", "Task received and queued for processing.",
                             "queue_position", pos, "seed", (json_int_t)t.seed);
    return http_reply_json(r, 202, body, hdr);
}

enum MHD_Result api_generate(struct server *srv, struct http_request *r)
{
    struct gen_request req;
    json_t *detail = NULL;
    int rc = api_parse_generate(r->body ? r->body : "", r->body_len,
                                http_header(r, MHD_HTTP_HEADER_CONTENT_TYPE), &srv->limits, &req,
                                &detail);
    if (rc == SD_ERR_ARG)
        return http_reply_json(r, 422, json_pack("{s:o}", "detail", detail), NULL);
    if (rc)
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    if (!srv->model) {
        gen_request_free(&req);
        return http_reply_detail(r, 503, "Model is not available or failed to load.", NULL);
    }
    const struct sd_model_info *info = sd_model_get_info(srv->model);
    if (!req.has_guidance) /* the pipeline's: 7.5 for SD, 5.0 for SDXL */
        req.guidance = info->default_guidance;
    if (!req.width)
        req.width = info->default_width;
    if (!req.height)
        req.height = info->default_height;
    if (!req.has_seed) {
        req.seed = random_seed();
        req.has_seed = 1;
    }
    struct sd_params p;
    struct sd_err err = {0};
    gen_request_to_params(&req, &p);
    enum MHD_Result ret;
    if (sd_params_check(srv->model, &p, &err)) {
        json_t *body = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, NULL);
        ret = value_error(r, body, err.msg);
        json_decref(body);
    } else {
        ret = queue(srv, r, &req);
    }
    gen_request_free(&req);
    return ret;
}
