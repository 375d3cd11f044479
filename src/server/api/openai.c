/* api/openai.c - the OpenAI Images API (/v1/images/..., /v1/models), so
 * that the official openai packages, Open WebUI's "openai" engine and
 * anything built on them work with base_url = http://host:port/v1.
 *
 * Any model name is accepted (clients default to "dall-e-2" or
 * "gpt-image-1"); the loaded model answers. Extras beyond OpenAI's fields
 * (seed, steps, negative_prompt, guidance, scheduler, strength) are
 * allowed. Errors have OpenAI's shape; failures that a retry cannot fix
 * carry "x-should-retry: false", because the official client re-sends a
 * request twice after a 5xx and a generation is expensive.
 *
 * Like the A1111 routes these calls block until their task is finished,
 * and a client that disconnects cancels it. With response_format "url"
 * the images are served by GET /v1/images/files/{task_id}?index=k, which
 * needs no key: the task id is the capability (122 random bits), as
 * OpenAI's own image URLs are.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/api/api.h"
#include "server/api/form.h"
#include "util/png.h"

#define OPENAI_MAX_N 10

static const char *const no_retry[] = {"x-should-retry", "false", NULL};

enum MHD_Result api_openai_error(struct http_request *r, int status, const char *message,
                                 const char *param, const char *code, const char *const *headers)
{
    const char *type = status == 401   ? "authentication_error"
                       : status == 404 ? "not_found_error"
                       : status == 429 ? "rate_limit_error"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    json_t *e = json_pack("{s:s,s:s,s:s?,s:s?}", "message", message, "type", type, "param", param,
                          "code", code);
    if (!param)
        json_object_set_new(e, "param", json_null());
    if (!code)
        json_object_set_new(e, "code", json_null());
    return http_reply_json(r, status, json_pack("{s:o}", "error", e), headers);
}

static enum MHD_Result bad(struct http_request *r, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result bad(struct http_request *r, const char *param, const char *fmt, ...)
{
    char msg[SD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return api_openai_error(r, 400, msg, param, "invalid_value", NULL);
}

/* ------------------------------------------------------------------------ */
/* Fields, from JSON (generations) or form strings (edits) */

/* Every field of either kind of request as text, so one reader serves
 * both: JSON values are turned into strings the way forms send them. */
struct fields {
    json_t *json;            /* generations: the body object */
    const struct form *form; /* edits */
};

/* The field as a string: a JSON string, or a number/bool written out;
 * NULL when absent or null. buf holds what is written out. */
static const char *field(const struct fields *f, const char *name, char *buf, size_t cap)
{
    if (f->form) {
        const struct form_part *p = form_get(f->form, name, 0);
        return p && !p->is_file ? p->data : NULL;
    }
    json_t *v = json_object_get(f->json, name);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, cap, "%.17g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
    else
        return NULL;
    return buf;
}

/* A number field: 1 and *out when present and valid, 0 when absent, -1
 * when not a number. */
static int number(const struct fields *f, const char *name, double *out)
{
    char buf[64];
    const char *s = field(f, name, buf, sizeof buf);
    if (!s)
        return 0;
    json_t *v = json_string(s);
    int ok = v && api_json_number(v, out);
    json_decref(v);
    return ok ? 1 : -1;
}

/* "1024x768" into w, h; "auto" or absent leaves them 0. 1 ok, 0 bad. */
static int parse_size(const char *s, int *w, int *h)
{
    *w = *h = 0;
    if (!s || !*s || !strcmp(s, "auto"))
        return 1;
    char x;
    int n = 0;
    if (sscanf(s, "%d%c%d%n", w, &x, h, &n) != 3 || s[n] || (x != 'x' && x != 'X') || *w <= 0 ||
        *h <= 0)
        return 0;
    return 1;
}

/* Fill req from the fields common to generations and edits. On a bad
 * value, answers and returns 0. */
static int read_common(struct server *srv, struct http_request *r, const struct fields *f,
                       struct gen_request *req, int *url_format, enum MHD_Result *ret)
{
    char buf[64];
    const char *prompt = field(f, "prompt", buf, sizeof buf);
    if (!prompt || !*prompt) {
        *ret = bad(r, "prompt", "prompt is required");
        return 0;
    }
    if ((long)utf8_length(prompt, strlen(prompt)) > srv->limits.max_prompt) {
        *ret = bad(r, "prompt", "prompt is longer than %d characters", srv->limits.max_prompt);
        return 0;
    }
    req->prompt = strdup(prompt);
    const char *neg = field(f, "negative_prompt", buf, sizeof buf);
    if (neg && *neg) {
        if ((long)utf8_length(neg, strlen(neg)) > srv->limits.max_prompt) {
            *ret = bad(r, "negative_prompt", "negative_prompt is longer than %d characters",
                       srv->limits.max_prompt);
            return 0;
        }
        req->negative_prompt = strdup(neg);
    }
    double v;
    int max_n = srv->limits.max_images < OPENAI_MAX_N ? srv->limits.max_images : OPENAI_MAX_N;
    int got = number(f, "n", &v);
    if (got < 0 || (got && (v != floor(v) || v < 1 || v > max_n))) {
        *ret = bad(r, "n", "n must be an integer from 1 to %d", max_n);
        return 0;
    }
    req->n_images = got ? (int)v : 1;
    const char *size = field(f, "size", buf, sizeof buf);
    if (!parse_size(size, &req->width, &req->height)) {
        *ret = bad(r, "size", "size must be WIDTHxHEIGHT (for example 512x512) or auto");
        return 0;
    }
    if (req->width && (req->width % 8 || req->height % 8 || req->width > srv->limits.max_side ||
                       req->height > srv->limits.max_side)) {
        *ret = bad(r, "size", "width and height must be multiples of 8 up to %d",
                   srv->limits.max_side);
        return 0;
    }
    const char *fmt = field(f, "response_format", buf, sizeof buf);
    if (fmt && strcmp(fmt, "b64_json") && strcmp(fmt, "url")) {
        *ret = bad(r, "response_format", "response_format must be b64_json or url");
        return 0;
    }
    *url_format = fmt && !strcmp(fmt, "url");
    /* Extras (not OpenAI's): the engine's knobs. */
    if ((got = number(f, "seed", &v)) != 0) {
        if (got < 0 || v != floor(v) || fabs(v) >= 9.2e18) {
            *ret = bad(r, "seed", "seed must be an integer");
            return 0;
        }
        req->has_seed = 1, req->seed = (int64_t)v;
    }
    if ((got = number(f, "steps", &v)) != 0 || (got = number(f, "num_inference_steps", &v)) != 0) {
        if (got < 0 || v != floor(v) || v < 1 || v > srv->limits.max_steps) {
            *ret = bad(r, "steps", "steps must be an integer from 1 to %d", srv->limits.max_steps);
            return 0;
        }
        req->steps = (int)v;
    } else {
        req->steps = 50;
    }
    if ((got = number(f, "guidance", &v)) != 0 || (got = number(f, "guidance_scale", &v)) != 0) {
        if (got < 0 || v < 0 || v > API_GUIDANCE_MAX) {
            *ret = bad(r, "guidance", "guidance must be a number from 0 to %g", API_GUIDANCE_MAX);
            return 0;
        }
        req->guidance = v, req->has_guidance = 1;
    }
    const char *sched = field(f, "scheduler", buf, sizeof buf);
    if (sched && (req->scheduler = sd_scheduler_from_name(sched)) < 0) {
        *ret = bad(r, "scheduler", "unknown scheduler '%.64s'", sched);
        return 0;
    }
    if ((got = number(f, "strength", &v)) != 0) {
        if (got < 0 || v <= 0 || v > 1) {
            *ret = bad(r, "strength", "strength must be a number in (0, 1]");
            return 0;
        }
        req->strength = v;
    }
    /* "dall-e-2", "gpt-image-1": any name works; one of ours picks it. */
    const char *model = field(f, "model", buf, sizeof buf);
    if (model && api_model_known(srv, model))
        req->model = strdup(model);
    req->api = "openai";
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Submit, wait, answer */

static enum MHD_Result submit(struct server *srv, struct http_request *r, struct gen_request *req,
                             int url_format)
{
    struct submission sub;
    enum submit_status st = api_submit(srv, req, &sub);
    gen_request_free(req);
    char secs[32];
    snprintf(secs, sizeof secs, "%ld", sub.retry_after);
    const char *retry[] = {"Retry-After", secs, NULL};
    switch (st) {
    case SUBMIT_QUEUED:
        break;
    case SUBMIT_INVALID:
        return api_openai_error(r, 400, sub.message, NULL, "invalid_value", NULL);
    case SUBMIT_NO_MODEL:
        return api_openai_error(r, 503, sub.message, NULL, "model_unavailable", no_retry);
    case SUBMIT_FULL:
        return api_openai_error(r, 429, sub.message, NULL, "queue_full", retry);
    case SUBMIT_UNAVAILABLE: /* nothing was queued: a retry is right */
        return api_openai_error(r, 503, sub.message, NULL, "store_unavailable", retry);
    case SUBMIT_FAILED:
        return api_openai_error(r, 500, sub.message, NULL, NULL, no_retry);
    }
    json_t *data = json_pack("{s:b}", "url", url_format);
    if (api_wait_begin(srv, r, sub.id, data))
        return api_openai_error(r, 503, "The server is shutting down.", NULL, NULL, NULL);
    return MHD_YES;
}

static enum MHD_Result answer(struct server *srv, struct http_request *r, const struct task *t)
{
    if (t->status == TASK_FAILED)
        return api_openai_error(r, 500, t->error_message ? t->error_message : "generation failed",
                                NULL, "generation_failed", no_retry);
    if (t->status != TASK_COMPLETED)
        return api_openai_error(r, 409, "The task was cancelled.", NULL, "cancelled", no_retry);
    int url = json_is_true(json_object_get(api_wait_data(r), "url"));
    json_t *images = NULL;
    struct sd_err err = {0};
    if (!url && !(images = api_task_images_base64(srv, t, &err))) {
        server_log("task %s: images unreadable: %s", t->id, err.msg);
        return api_openai_error(r, 500, "The stored images could not be read.", NULL, NULL,
                                no_retry);
    }
    const char *host = http_header(r, MHD_HTTP_HEADER_HOST);
    json_t *data = json_array();
    for (int k = 0; k < t->n_images; k++) {
        json_t *item = json_object();
        if (url) {
            char u[512];
            snprintf(u, sizeof u, "http://%.256s/v1/images/files/%s?index=%d",
                     host ? host : "localhost", t->id, k);
            json_object_set_new(item, "url", json_string(u));
        } else {
            json_object_set(item, "b64_json", json_array_get(images, (size_t)k));
        }
        json_object_set_new(item, "revised_prompt", json_string(t->prompt ? t->prompt : ""));
        json_array_append_new(data, item);
    }
    json_decref(images);
    json_t *o = json_pack("{s:I,s:o,s:s}", "created", (json_int_t)t->created_at, "data", data,
                          "output_format", "png");
    return http_reply_json(r, 200, o, NULL);
}

/* Shared by both routes once the request is queued. */
static enum MHD_Result wait_and_answer(struct server *srv, struct http_request *r)
{
    struct task t;
    switch (api_wait_poll(srv, r, &t)) {
    case WAIT_SUSPENDED:
        return MHD_YES;
    case WAIT_CLIENT_GONE:
        return MHD_NO;
    case WAIT_SHUTDOWN:
        return api_openai_error(r, 503, "The server is shutting down; the task stays queued.",
                                NULL, NULL, NULL);
    case WAIT_ERROR:
        return api_openai_error(r, 500, "The task store could not be read.", NULL, NULL, no_retry);
    case WAIT_FINISHED:
        break;
    }
    enum MHD_Result ret = answer(srv, r, &t);
    task_clear(&t);
    return ret;
}

enum MHD_Result api_openai_generations(struct server *srv, struct http_request *r)
{
    if (r->wait)
        return wait_and_answer(srv, r);
    json_error_t jerr;
    json_t *body = r->body_len ? json_loadb(r->body, r->body_len, 0, &jerr) : NULL;
    if (!json_is_object(body)) {
        json_decref(body);
        return bad(r, NULL, "the body must be a JSON object");
    }
    struct fields f = {.json = body};
    struct gen_request req;
    memset(&req, 0, sizeof req);
    int url = 0;
    enum MHD_Result ret;
    int ok = read_common(srv, r, &f, &req, &url, &ret);
    json_decref(body);
    if (!ok) {
        gen_request_free(&req);
        return ret;
    }
    ret = submit(srv, r, &req, url);
    return r->wait ? wait_and_answer(srv, r) : ret;
}

/* OpenAI's mask: fully transparent pixels (alpha 0) mark what to edit. A
 * mask without alpha is read as ours (white = repaint). */
static int set_openai_mask(struct gen_request *req, const struct form_part *m, struct sd_err *err)
{
    uint8_t *rgba = NULL;
    int w = 0, h = 0, had_alpha = 0;
    if (m->len >= 8 && !memcmp(m->data, "\x89PNG", 4) &&
        png_decode_rgba((const uint8_t *)m->data, m->len, API_INPUT_MAX_SIDE, &rgba, &w, &h,
                        &had_alpha, NULL) == SD_OK &&
        had_alpha) {
        size_t n = (size_t)w * (size_t)h;
        uint8_t *rgb = malloc(n * 3);
        if (!rgb) {
            free(rgba);
            return sd_errf(err, SD_ERR_NOMEM, "mask: out of memory");
        }
        for (size_t i = 0; i < n; i++)
            rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = rgba[4 * i + 3] == 0 ? 255 : 0;
        free(rgba);
        uint8_t *png = NULL;
        size_t len = 0;
        int rc = png_encode_rgb(rgb, w, h, NULL, &png, &len, err);
        free(rgb);
        if (!rc)
            rc = gen_request_set_image_file(req, 1, "mask", png, len, err);
        free(png);
        return rc;
    }
    free(rgba);
    return gen_request_set_image_file(req, 1, "mask", (const uint8_t *)m->data, m->len, err);
}

enum MHD_Result api_openai_edits(struct server *srv, struct http_request *r)
{
    if (r->wait)
        return wait_and_answer(srv, r);
    struct form form;
    struct sd_err err = {0};
    if (form_parse(r->conn, r->body ? r->body : "", r->body_len, &form, &err))
        return bad(r, NULL, "%s", err.msg);
    struct fields f = {.form = &form};
    struct gen_request req;
    memset(&req, 0, sizeof req);
    int url = 0;
    enum MHD_Result ret;
    const struct form_part *img = form_get(&form, "image", 0);
    if (!img)
        img = form_get(&form, "image[]", 0);
    const struct form_part *mask = form_get(&form, "mask", 0);
    if (!read_common(srv, r, &f, &req, &url, &ret)) {
        /* answered */
    } else if (!img || !img->is_file) {
        ret = bad(r, "image", "image is required (a file part named image or image[])");
    } else if (gen_request_set_image_file(&req, 0, "image", (const uint8_t *)img->data, img->len,
                                          &err) ||
               (mask && set_openai_mask(&req, mask, &err))) {
        ret = bad(r, strncmp(err.msg, "mask", 4) ? "image" : "mask", "%s", err.msg);
    } else {
        if (!req.width) { /* OpenAI keeps the input's size */
            req.width = req.init_width / 8 * 8, req.height = req.init_height / 8 * 8;
            double over = fmax((double)req.width, (double)req.height) / srv->limits.max_side;
            if (over > 1) /* too large: the same shape, within the limit */
                req.width = (int)(req.width / over) / 8 * 8, req.height = (int)(req.height / over) / 8 * 8;
            if (req.width < 8 || req.height < 8)
                req.width = req.height = 0; /* the model's size */
        }
        form_free(&form);
        ret = submit(srv, r, &req, url);
        return r->wait ? wait_and_answer(srv, r) : ret;
    }
    form_free(&form);
    gen_request_free(&req);
    return ret;
}

enum MHD_Result api_openai_models(struct server *srv, struct http_request *r)
{
    json_t *data = json_array(), *all = api_fleet_models(srv), *m;
    size_t i;
    json_array_foreach(all, i, m)
        json_array_append_new(data, json_pack("{s:O,s:s,s:I,s:s}", "id", json_object_get(m, "name"),
                                              "object", "model", "created", (json_int_t)srv->started_at,
                                              "owned_by", "diffusiond"));
    json_decref(all);
    return http_reply_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data), NULL);
}

/* The images of response_format "url" (no key needed: see the top). Only
 * tasks submitted through this API are served here. */
enum MHD_Result api_openai_image_file(struct server *srv, struct http_request *r)
{
    struct task t;
    int found = 0;
    if (!uuid_valid(r->param) || store_get(&srv->store, r->param, &t, &found, NULL) || !found)
        return api_openai_error(r, 404, "No such image.", NULL, NULL, NULL);
    json_t *params = t.params ? json_loads(t.params, 0, NULL) : NULL;
    const char *api = json_string_value(json_object_get(params, "api"));
    int ours = api && !strcmp(api, "openai") && t.status == TASK_COMPLETED &&
               t.finished_at + (double)srv->cfg.result_ttl >= now_unix();
    int n = t.n_images;
    json_decref(params);
    task_clear(&t);
    const char *q = http_query(r, "index");
    char *end = NULL;
    long k = q ? strtol(q, &end, 10) : 0;
    if (!ours || (q && (!*q || *end)) || k < 0 || k >= n)
        return api_openai_error(r, 404, "No such image.", NULL, NULL, NULL);
    uint8_t *png = NULL;
    size_t len = 0;
    struct sd_err err = {0};
    if (store_image(&srv->store, r->param, (int)k, &png, &len, &err) || !png) {
        static const char *const retry[] = {"Retry-After", "5", NULL};
        if (err.code == SD_ERR_IO)
            return api_openai_error(r, 503, "The image store is unavailable; retry later.", NULL,
                                    "store_unavailable", retry);
        return api_openai_error(r, 500, "The stored image could not be read.", NULL, NULL, NULL);
    }
    const char *hdr[] = {"Cache-Control", "private, max-age=3600", NULL};
    return http_reply(r, 200, "image/png", (const char *)png, len, 1, hdr);
}
