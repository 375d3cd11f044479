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

json_t *api_fleet_models(struct server *srv)
{
    return api_fleet_models_err(srv, NULL);
}

json_t *api_fleet_models_err(struct server *srv, int *store_failed)
{
    if (store_failed)
        *store_failed = 0;
    json_t *out = json_array();
    if (srv->model) {
        json_t *m = api_model_json(sd_model_get_info(srv->model));
        json_object_set_new(m, "workers", json_integer(1));
        json_object_set_new(m, "local", json_true());
        json_array_append_new(out, m);
    }
    char *text = NULL;
    if (!srv->store.ops->models)
        return out;
    if (srv->store.ops->models(srv->store.ctx, &text, NULL)) {
        if (store_failed)
            *store_failed = 1;
        return out;
    }
    json_t *fleet = json_loads(text, 0, NULL);
    free(text);
    size_t i;
    json_t *e;
    json_array_foreach(fleet, i, e) /* a Lua empty table encodes as {}: no loop */
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *info = json_string_value(json_object_get(e, "info"));
        json_t *workers = json_object_get(e, "workers");
        if (!name)
            continue;
        json_t *m = NULL;
        size_t j;
        json_t *have;
        json_array_foreach(out, j, have) /* the local model: count the others */
        {
            const char *hn = json_string_value(json_object_get(have, "name"));
            if (hn && !strcmp(hn, name))
                m = have;
        }
        size_t live = json_is_array(workers) ? json_array_size(workers) : 0;
        json_t *names = json_is_array(workers) ? json_incref(workers) : json_array();
        if (m) {
            json_object_set_new(m, "workers", json_integer((json_int_t)live));
            json_object_set_new(m, "worker_names", names);
            continue;
        }
        m = info ? json_loads(info, 0, NULL) : NULL;
        if (!json_is_object(m)) {
            json_decref(m);
            m = json_pack("{s:s}", "name", name);
        }
        json_object_set_new(m, "workers", json_integer((json_int_t)live));
        json_object_set_new(m, "worker_names", names);
        json_array_append_new(out, m);
    }
    json_decref(fleet);
    return out;
}

/* The model a request runs on, by name: want (NULL: the default), from
 * this process's model or the fleet's. strict: an unknown name is an error
 * (the native API); otherwise it means the default (OpenAI clients send
 * "dall-e-2"). The default: the local model, else the first with a live
 * worker (by name), else the first ever served. 0 and *m (a new object:
 * name, default_width, ...), or -1 and msg (no model at all: *m NULL). */
static int choose_model(struct server *srv, const char *want, int strict, json_t **m, char *msg,
                        size_t cap)
{
    *m = NULL;
    int store_failed = 0;
    json_t *all = api_fleet_models_err(srv, &store_failed), *e, *pick = NULL, *live = NULL;
    if (store_failed && !json_array_size(all)) {
        snprintf(msg, cap, "The task store is unavailable; nothing was queued. Retry later.");
        json_decref(all);
        return -3;
    }
    size_t i;
    json_array_foreach(all, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (want && name && !strcmp(name, want))
            pick = e;
        if (!live && json_integer_value(json_object_get(e, "workers")) > 0)
            live = e;
    }
    if (!pick && want && strict && json_array_size(all)) {
        int n = snprintf(msg, cap, "model '%.200s' is not served here (models:", want);
        json_array_foreach(all, i, e)
            if (n > 0 && (size_t)n < cap)
                n += snprintf(msg + n, cap - (size_t)n, " %s",
                              json_string_value(json_object_get(e, "name")));
        if (n > 0 && (size_t)n < cap)
            snprintf(msg + n, cap - (size_t)n, ")");
        json_decref(all);
        return -2;
    }
    if (!pick)
        pick = live ? live : json_array_get(all, 0);
    if (!pick) {
        snprintf(msg, cap, "Model is not available or failed to load.");
        json_decref(all);
        return -1;
    }
    *m = json_incref(pick);
    json_decref(all);
    return 0;
}

int api_default_model(struct server *srv, char *name, size_t cap, json_t **info)
{
    json_t *m = NULL;
    char msg[SD_ERR_MSG_MAX];
    name[0] = '\0';
    if (info)
        *info = NULL;
    if (choose_model(srv, NULL, 0, &m, msg, sizeof msg))
        return 0;
    snprintf(name, cap, "%s", json_string_value(json_object_get(m, "name")));
    if (info)
        *info = m;
    else
        json_decref(m);
    return 1;
}

int api_model_known(struct server *srv, const char *name)
{
    json_t *all = api_fleet_models(srv), *e;
    size_t i;
    int known = 0;
    json_array_foreach(all, i, e)
    {
        const char *n = json_string_value(json_object_get(e, "name"));
        known |= n && !strcmp(n, name);
    }
    json_decref(all);
    return known;
}

static int info_int(const json_t *m, const char *key, int def)
{
    json_t *v = json_object_get(m, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

enum submit_status api_submit(struct server *srv, struct gen_request *req, struct submission *out)
{
    memset(out, 0, sizeof *out);
    json_t *m = NULL;
    int picked = choose_model(srv, req->model, req->model_strict, &m, out->message, sizeof out->message);
    if (picked == -1)
        return SUBMIT_NO_MODEL;
    if (picked == -2)
        return SUBMIT_INVALID;
    if (picked == -3) {
        out->retry_after = 5;
        return SUBMIT_UNAVAILABLE;
    }
    const char *name = json_string_value(json_object_get(m, "name"));
    int local = srv->model && !strcmp(name, sd_model_get_info(srv->model)->name);
    free(req->model);
    req->model = strdup(name);
    if (!req->has_guidance) { /* the pipeline's: 7.5 for SD, 5.0 for SDXL */
        json_t *g = json_object_get(m, "default_guidance");
        req->guidance = json_is_number(g) ? json_number_value(g) : 7.5;
    }
    if (!req->width)
        req->width = info_int(m, "default_width", 512);
    if (!req->height)
        req->height = info_int(m, "default_height", 512);
    json_decref(m);
    if (!req->model) {
        snprintf(out->message, sizeof out->message, "Out of memory.");
        return SUBMIT_FAILED;
    }
    if (!req->has_seed) {
        req->seed = random_seed();
        req->has_seed = 1;
    }
    if (req->n_images < 1)
        req->n_images = 1;
    struct sd_params p;
    struct sd_err err = {0};
    gen_request_to_params(req, &p);
    /* Checked here against the model when it is ours; a worker elsewhere
     * checks it when it runs (an invalid value fails the task). */
    if (local && sd_params_check(srv->model, &p, &err)) {
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
    t.model = req->model;
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
        snprintf(out->message, sizeof out->message,
                 "The task store is unavailable; nothing was queued. Retry later.");
        out->retry_after = 5;
        return SUBMIT_UNAVAILABLE;
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
