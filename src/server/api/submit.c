/* api/submit.c - what every API family does with a generation request:
 * fill in the model's defaults, check the values against the engine, and
 * store the task (with its input images) in the durable queue. See api.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/api.h"
#include "server/metrics.h"
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

long api_retry_seconds(struct server *srv, int tasks_ahead)
{
    double t = metrics_typical_generation(srv->metrics, 5.0) * (tasks_ahead > 0 ? tasks_ahead : 1);
    if (t < 1)
        return 1;
    return t > 3600 ? 3600 : (long)ceil(t);
}

enum submit_status api_submit(struct server *srv, struct gen_request *req, struct submission *out)
{
    memset(out, 0, sizeof *out);
    if (!srv->model) {
        snprintf(out->message, sizeof out->message, "Model is not available or failed to load.");
        return SUBMIT_NO_MODEL;
    }
    const struct sd_model_info *info = sd_model_get_info(srv->model);
    if (!req->has_guidance) /* the pipeline's: 7.5 for SD, 5.0 for SDXL */
        req->guidance = info->default_guidance;
    if (!req->width)
        req->width = info->default_width;
    if (!req->height)
        req->height = info->default_height;
    if (!req->has_seed) {
        req->seed = random_seed();
        req->has_seed = 1;
    }
    if (req->n_images < 1)
        req->n_images = 1;
    struct sd_params p;
    struct sd_err err = {0};
    gen_request_to_params(req, &p);
    if (sd_params_check(srv->model, &p, &err)) {
        snprintf(out->message, sizeof out->message, "%s", err.msg);
        return SUBMIT_INVALID;
    }

    struct task t = {0};
    if (uuid4_new(t.id, &err)) {
        snprintf(out->message, sizeof out->message, "Could not create a task id.");
        return SUBMIT_FAILED;
    }
    json_t *params = gen_request_to_json(req);
    t.params = params ? json_api_dumps(params, NULL) : NULL;
    json_decref(params);
    if (!t.params) {
        snprintf(out->message, sizeof out->message, "Out of memory.");
        return SUBMIT_FAILED;
    }
    t.prompt = req->prompt;
    t.seed = req->seed;
    t.created_at = now_unix();
    struct blob inputs[2] = {{req->init_file, req->init_file_len},
                             {req->mask_file, req->mask_file_len}};
    int n_inputs = req->has_init_image ? 1 + req->has_mask : 0;
    int accepted = 0;
    int rc = store_put(&srv->store, &t, inputs, n_inputs, (int)srv->cfg.queue_capacity, &accepted,
                       &err);
    free(t.params);
    if (rc) {
        server_log("queueing a task failed: %s", err.msg);
        snprintf(out->message, sizeof out->message, "The task could not be stored.");
        return SUBMIT_FAILED;
    }
    if (!accepted) {
        out->retry_after = api_retry_seconds(srv, 1);
        snprintf(out->message, sizeof out->message,
                 "Queue is full (%lld tasks waiting); retry later.", srv->cfg.queue_capacity);
        return SUBMIT_FULL;
    }
    worker_wake(srv->worker);
    memcpy(out->id, t.id, sizeof out->id);
    out->seed = t.seed;
    store_position(&srv->store, t.id, &out->position, NULL);
    out->retry_after = api_retry_seconds(srv, out->position);
    return SUBMIT_QUEUED;
}
