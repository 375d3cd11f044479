/* api/a1111.c - the AUTOMATIC1111 web UI's API (/sdapi/v1/...), so that
 * Open WebUI, SillyTavern, LibreChat, webuiapi and scripts written for A1111
 * work when pointed at this server.
 *
 * Requests are read as A1111's pydantic models read them: unknown fields are
 * ignored (SillyTavern sends its own "url" and "auth"), numbers may come as
 * strings, sampler names are matched leniently ("DPM++ 2M Karras" splits
 * into sampler and schedule; a name we do not have means the model's
 * default, not an error). What is accepted and ignored is listed in
 * docs/api.md.
 *
 * txt2img and img2img block until their task is finished, but the task goes
 * through the durable queue like any /generate (it shows in /results and
 * /metrics); a client that disconnects cancels it. Images k of a request
 * have seeds seed + k, as A1111 gives them.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server/api/api.h"
#include "server/worker.h"

#define A1111_DEFAULT_STEPS 50
#define A1111_DEFAULT_STRENGTH 0.75

/* ------------------------------------------------------------------------ */
/* Errors, in A1111's shapes */

/* A1111's exception handler: {"error", "detail", "body", "errors"}. */
static enum MHD_Result a1111_error(struct http_request *r, int status, const char *type,
                                   const char *msg, const char *const *headers)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "error", type, "detail", msg, "body", "",
                          "errors", msg);
    return http_reply_json(r, status, o, headers);
}

/* FastAPI's (pydantic v1) 422 for one field. */
static void field_error(json_t *errs, const char *field, const char *msg, const char *type)
{
    json_array_append_new(errs, json_pack("{s:[s,s],s:s,s:s}", "loc", "body", field, "msg", msg,
                                          "type", type));
}

/* ------------------------------------------------------------------------ */
/* Samplers */

struct sampler {
    const char *name;           /* A1111's */
    const char *aliases[3];
    enum sd_scheduler sched;
};

static const struct sampler samplers[] = {
    {"Euler a", {"k_euler_a", "k_euler_ancestral", "euler_a"}, SD_SCHED_EULER_A},
    {"Euler", {"k_euler", "euler", NULL}, SD_SCHED_EULER},
    {"DPM++ 2M", {"k_dpmpp_2m", "dpmpp_2m", NULL}, SD_SCHED_DPMPP_2M},
    {"DDIM", {"ddim", NULL, NULL}, SD_SCHED_DDIM},
    {"PLMS", {"plms", "pndm", NULL}, SD_SCHED_PNDM},
    {"LCM", {"k_lcm", "lcm", NULL}, SD_SCHED_LCM},
};
#define N_SAMPLERS ((int)(sizeof samplers / sizeof samplers[0]))

/* Compare ignoring case, spaces, '_' and '-' ("dpm++ 2m" == "DPM++_2M"). */
static int loose_eq(const char *a, const char *b)
{
    for (;;) {
        while (*a == ' ' || *a == '_' || *a == '-')
            a++;
        while (*b == ' ' || *b == '_' || *b == '-')
            b++;
        if (!*a || !*b)
            return !*a && !*b;
        if (tolower((unsigned char)*a++) != tolower((unsigned char)*b++))
            return 0;
    }
}

/* The engine's scheduler for A1111's sampler_name and scheduler. A legacy
 * name with a schedule suffix ("DPM++ 2M Karras") is split as A1111's
 * get_sampler_and_scheduler does. Unknown names: the model's default. */
static enum sd_scheduler map_sampler(const char *name, const char *schedule)
{
    if (!name || !*name)
        return SD_SCHED_DEFAULT;
    char base[128];
    snprintf(base, sizeof base, "%s", name);
    int karras = schedule && !strcasecmp(schedule, "karras");
    size_t n = strlen(base);
    if (n > 7 && !strcasecmp(base + n - 7, " karras")) {
        base[n - 7] = '\0';
        karras = 1;
    }
    int ours = sd_scheduler_from_name(name); /* our own names work too */
    if (ours > 0)
        return (enum sd_scheduler)ours;
    for (int i = 0; i < N_SAMPLERS; i++) {
        int hit = loose_eq(base, samplers[i].name);
        for (int k = 0; k < 3 && !hit && samplers[i].aliases[k]; k++)
            hit = loose_eq(base, samplers[i].aliases[k]);
        if (hit)
            return samplers[i].sched == SD_SCHED_DPMPP_2M && karras ? SD_SCHED_DPMPP_2M_KARRAS
                                                                   : samplers[i].sched;
    }
    return SD_SCHED_DEFAULT;
}

/* ------------------------------------------------------------------------ */
/* The request */

/* A string field, or the first string of a list (A1111 takes per-image
 * prompt lists); NULL when absent. */
static const char *str_field(json_t *body, const char *key)
{
    json_t *v = json_object_get(body, key);
    if (json_is_array(v))
        v = json_array_get(v, 0);
    return json_string_value(v);
}

/* A number field: def when absent or null; else it must parse. */
static double num_field(json_t *errs, json_t *body, const char *key, double def, int integer)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return def;
    double x;
    if (!api_json_number(v, &x) || (integer && x != floor(x))) {
        field_error(errs, key, integer ? "value is not a valid integer" : "value is not a valid float",
                    integer ? "type_error.integer" : "type_error.float");
        return def;
    }
    return x;
}

/* Fill req from an A1111 txt2img/img2img body. Field errors go to errs
 * (422); a value the engine cannot take at all goes to *msg (400). */
static void parse_request(struct server *srv, json_t *body, int img2img, struct gen_request *req,
                          json_t *errs, char *msg, size_t msg_cap)
{
    memset(req, 0, sizeof *req);
    const char *prompt = str_field(body, "prompt"), *neg = str_field(body, "negative_prompt");
    req->prompt = strdup(prompt ? prompt : "");
    if (neg && *neg)
        req->negative_prompt = strdup(neg);
    if ((prompt && (int)strlen(prompt) > srv->limits.max_prompt * 4) ||
        (neg && (int)strlen(neg) > srv->limits.max_prompt * 4))
        field_error(errs, "prompt", "prompt too long", "value_error.any_str.max_length");

    double steps = num_field(errs, body, "steps", A1111_DEFAULT_STEPS, 1);
    if (steps < 1 || steps > srv->limits.max_steps) {
        snprintf(msg, msg_cap, "steps must be between 1 and %d", srv->limits.max_steps);
        steps = 1;
    }
    req->steps = (int)steps;
    json_t *cfg = json_object_get(body, "cfg_scale");
    if (cfg && !json_is_null(cfg)) {
        req->guidance = num_field(errs, body, "cfg_scale", 7.0, 0);
        req->has_guidance = 1;
        if (req->guidance < 0 || req->guidance > API_GUIDANCE_MAX)
            snprintf(msg, msg_cap, "cfg_scale must be between 0 and %g", API_GUIDANCE_MAX);
    }
    double seed = num_field(errs, body, "seed", -1, 1);
    if (seed >= 0 && seed < 18446744073709551616.0) {
        req->has_seed = 1;
        req->seed = seed >= 9223372036854775808.0 ? (int64_t)(uint64_t)seed : (int64_t)seed;
    }
    /* A1111 renders floor(side / 8) * 8 pixels; absent: the model's size. */
    const char *side[2] = {"width", "height"};
    int *dst[2] = {&req->width, &req->height};
    for (int i = 0; i < 2; i++) {
        double v = num_field(errs, body, side[i], 0, 1);
        if (v != 0 && (v < 8 || v > srv->limits.max_side))
            snprintf(msg, msg_cap, "%s must be between 8 and %d", side[i], srv->limits.max_side);
        else
            *dst[i] = (int)v / 8 * 8;
    }
    const char *sampler = str_field(body, "sampler_name");
    if (!sampler)
        sampler = str_field(body, "sampler_index");
    req->scheduler = (int)map_sampler(sampler, str_field(body, "scheduler"));
    double eta = num_field(errs, body, "eta", 0, 0);
    req->eta = eta > 0 && eta <= 1 ? eta : 0;

    /* CLIP_stop_at_last_layers k = diffusers' clip_skip k - 1. */
    json_t *ov = json_object_get(body, "override_settings");
    double stop = num_field(errs, body, "clip_skip", 0, 1);
    if (json_is_object(ov) && json_object_get(ov, "CLIP_stop_at_last_layers"))
        stop = num_field(errs, ov, "CLIP_stop_at_last_layers", stop, 1);
    if (stop > 1)
        req->clip_skip = stop - 1 > API_CLIP_SKIP_MAX ? API_CLIP_SKIP_MAX : (int)stop - 1;

    double batch = num_field(errs, body, "batch_size", 1, 1);
    double iters = num_field(errs, body, "n_iter", 1, 1);
    if (batch < 1 || iters < 1 || batch * iters > srv->limits.max_images)
        snprintf(msg, msg_cap, "batch_size x n_iter must be between 1 and %d",
                 srv->limits.max_images);
    else
        req->n_images = (int)(batch * iters);
    req->seed_per_image = 1;
    json_t *ck = json_is_object(ov) ? json_object_get(ov, "sd_model_checkpoint") : NULL;
    if (json_is_string(ck) && api_model_known(srv, json_string_value(ck)))
        req->model = strdup(json_string_value(ck));
    if (!img2img)
        return; /* txt2img's denoising_strength is the hires pass's: no hires pass here */

    double strength = num_field(errs, body, "denoising_strength", A1111_DEFAULT_STRENGTH, 0);
    if (strength < 0 || strength > 1)
        snprintf(msg, msg_cap, "denoising_strength must be between 0 and 1");
    /* At least one step runs (A1111 does one at any strength > 0). */
    req->strength = fmax(strength, 1.0 / req->steps);
    req->mask_invert = num_field(errs, body, "inpainting_mask_invert", 0, 1) != 0;
}

/* img2img's init_images[0] and mask (a string or a one-element list). */
static int parse_images(struct server *srv, json_t *body, struct gen_request *req, char *msg,
                        size_t msg_cap, int *not_found)
{
    json_t *init = json_array_get(json_object_get(body, "init_images"), 0);
    if (!json_is_string(init)) {
        *not_found = 1;
        snprintf(msg, msg_cap, "Init image not found");
        return SD_ERR_ARG;
    }
    struct sd_err err = {0};
    size_t max = srv->limits.max_input_bytes;
    if (gen_request_set_image(req, 0, "init_images[0]", json_string_value(init),
                              json_string_length(init), max, &err)) {
        snprintf(msg, msg_cap, "%s", err.msg);
        return err.code ? err.code : SD_ERR_ARG;
    }
    json_t *mask = json_object_get(body, "mask");
    if (json_is_array(mask))
        mask = json_array_get(mask, 0);
    if (json_is_string(mask) && json_string_length(mask) &&
        gen_request_set_image(req, 1, "mask", json_string_value(mask), json_string_length(mask),
                              max, &err)) {
        snprintf(msg, msg_cap, "%s", err.msg);
        return err.code ? err.code : SD_ERR_ARG;
    }
    return SD_OK;
}

/* ------------------------------------------------------------------------ */
/* The answer */

/* The checkpoint title: the default model's name (see api_default_model). */
static const char *model_title(struct server *srv, char *buf, size_t cap)
{
    api_default_model(srv, buf, cap, NULL);
    return buf;
}

/* Processed.js(): the generation's facts, as a JSON string in "info". */
static char *info_text(struct server *srv, const struct task *t, int img2img)
{
    struct gen_request req;
    struct sd_err err = {0};
    if (!t->params || gen_request_from_text(t->params, &req, &err))
        return NULL;
    struct sd_params p;
    gen_request_to_params(&req, &p);
    if (req.has_init_image) /* the infotext names the strength; no pixels needed */
        p.init_image = (const uint8_t *)"";
    json_t *seeds = json_array(), *prompts = json_array(), *negs = json_array(),
           *texts = json_array();
    for (int k = 0; k < t->n_images; k++) {
        uint64_t seed = (uint64_t)t->seed + (uint64_t)k;
        json_array_append_new(seeds, json_integer((json_int_t)seed));
        json_array_append_new(prompts, json_string(req.prompt));
        json_array_append_new(negs, json_string(req.negative_prompt ? req.negative_prompt : ""));
        char *it = sd_infotext(&p, srv->model, seed, req.width, req.height);
        json_array_append_new(texts, it ? json_string(it) : json_string(""));
        free(it);
    }
    char stamp[32];
    time_t now = (time_t)t->created_at;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    double strength = req.strength > 0 ? req.strength : req.has_mask ? 1.0 : 0.8;
    json_t *o = json_object();
    json_object_set_new(o, "prompt", json_string(req.prompt));
    json_object_set_new(o, "all_prompts", prompts);
    json_object_set_new(o, "negative_prompt",
                        json_string(req.negative_prompt ? req.negative_prompt : ""));
    json_object_set_new(o, "all_negative_prompts", negs);
    json_object_set_new(o, "seed", json_integer(t->seed));
    json_object_set(o, "all_seeds", seeds);
    json_object_set_new(o, "subseed", json_integer(t->seed));
    json_object_set_new(o, "all_subseeds", seeds);
    json_object_set_new(o, "subseed_strength", json_integer(0));
    json_object_set_new(o, "width", json_integer(req.width));
    json_object_set_new(o, "height", json_integer(req.height));
    json_object_set_new(o, "sampler_name",
                        json_string(sd_sampler_a1111_name((enum sd_scheduler)req.scheduler, srv->model)));
    json_object_set_new(o, "cfg_scale", json_real(req.guidance));
    json_object_set_new(o, "steps", json_integer(req.steps));
    json_object_set_new(o, "batch_size", json_integer(t->n_images));
    json_object_set_new(o, "restore_faces", json_false());
    json_object_set_new(o, "face_restoration_model", json_null());
    json_object_set_new(o, "sd_model_name", json_string(req.model ? req.model : ""));
    json_object_set_new(o, "sd_model_hash", json_null());
    json_object_set_new(o, "sd_vae_name", json_null());
    json_object_set_new(o, "sd_vae_hash", json_null());
    json_object_set_new(o, "seed_resize_from_w", json_integer(-1));
    json_object_set_new(o, "seed_resize_from_h", json_integer(-1));
    json_object_set_new(o, "denoising_strength", img2img ? json_real(strength) : json_null());
    json_object_set_new(o, "extra_generation_params", json_object());
    json_object_set_new(o, "index_of_first_image", json_integer(0));
    json_object_set_new(o, "infotexts", texts);
    json_object_set_new(o, "styles", json_array());
    json_object_set_new(o, "job_timestamp", json_string(stamp));
    json_object_set_new(o, "clip_skip", json_integer(req.clip_skip + 1));
    json_object_set_new(o, "is_using_inpainting_conditioning", json_boolean(req.has_mask));
    json_object_set_new(o, "version", json_string("diffusiond"));
    json_object_set_new(o, "task_id", json_string(t->id));
    char *text = json_api_dumps(o, NULL);
    json_decref(o);
    gen_request_free(&req);
    return text;
}

static enum MHD_Result answer(struct server *srv, struct http_request *r, const struct task *t)
{
    json_t *data = api_wait_data(r);
    int img2img = json_is_true(json_object_get(data, "img2img"));
    if (t->status == TASK_FAILED)
        return a1111_error(r, 500, "RuntimeError",
                           t->error_message ? t->error_message : "generation failed", NULL);
    if (t->status == TASK_EXPIRED)
        return a1111_error(r, 500, "RuntimeError", "the result expired before it was read", NULL);
    json_t *images = json_array();
    if (t->status == TASK_COMPLETED) { /* cancelled (interrupted): no images, as A1111 */
        struct sd_err err = {0};
        json_decref(images);
        if (!(images = api_task_images_base64(srv, t, &err))) {
            server_log("task %s: images unreadable: %s", t->id, err.msg);
            return a1111_error(r, 500, "RuntimeError", "the stored images could not be read",
                               NULL);
        }
    }
    char *info = info_text(srv, t, img2img);
    json_t *o = json_pack("{s:o,s:O,s:s}", "images", images, "parameters",
                          json_object_get(data, "parameters"), "info", info ? info : "{}");
    free(info);
    return http_reply_json(r, 200, o, NULL);
}

/* ------------------------------------------------------------------------ */
/* txt2img, img2img */

static enum MHD_Result submit(struct server *srv, struct http_request *r, int img2img)
{
    json_error_t jerr;
    json_t *body = r->body_len ? json_loadb(r->body, r->body_len, 0, &jerr) : NULL;
    if (!json_is_object(body)) {
        json_decref(body);
        json_t *errs = json_array();
        field_error(errs, "__root__", "value is not a valid dict", "type_error.dict");
        return http_reply_json(r, 422, json_pack("{s:o}", "detail", errs), NULL);
    }
    struct gen_request req;
    json_t *errs = json_array();
    char msg[SD_ERR_MSG_MAX] = "";
    parse_request(srv, body, img2img, &req, errs, msg, sizeof msg);
    int not_found = 0;
    if (!json_array_size(errs) && !msg[0] && img2img)
        parse_images(srv, body, &req, msg, sizeof msg, &not_found);
    if (json_array_size(errs) || msg[0] || !req.prompt) {
        gen_request_free(&req);
        json_decref(body);
        if (json_array_size(errs))
            return http_reply_json(r, 422, json_pack("{s:o}", "detail", errs), NULL);
        json_decref(errs);
        if (not_found) /* A1111's own answer */
            return http_reply_json(r, 404, json_pack("{s:s}", "detail", msg), NULL);
        return a1111_error(r, 400, "ValueError", msg[0] ? msg : "out of memory", NULL);
    }
    json_decref(errs);
    struct submission sub;
    req.api = "a1111";
    enum submit_status st = api_submit(srv, &req, &sub);
    gen_request_free(&req);
    if (st != SUBMIT_QUEUED) {
        json_decref(body);
        char secs[32];
        snprintf(secs, sizeof secs, "%ld", sub.retry_after);
        const char *hdr[] = {"Retry-After", secs, NULL};
        switch (st) {
        case SUBMIT_INVALID: return a1111_error(r, 400, "ValueError", sub.message, NULL);
        case SUBMIT_NO_MODEL: return a1111_error(r, 503, "RuntimeError", sub.message, NULL);
        case SUBMIT_FULL:
        case SUBMIT_UNAVAILABLE: return a1111_error(r, 503, "RuntimeError", sub.message, hdr);
        default: return a1111_error(r, 500, "RuntimeError", sub.message, NULL);
        }
    }
    /* "parameters" echoes the request; images are not sent back (A1111
     * sets init_images and mask to None unless include_init_images). */
    if (img2img) {
        json_object_set_new(body, "init_images", json_null());
        json_object_set_new(body, "mask", json_null());
    }
    json_t *data = json_pack("{s:o,s:b}", "parameters", body, "img2img", img2img);
    if (api_wait_begin(srv, r, sub.id, data))
        return a1111_error(r, 503, "RuntimeError", "shutting down", NULL);
    return MHD_YES;
}

static enum MHD_Result generate(struct server *srv, struct http_request *r, int img2img)
{
    if (!r->wait) {
        enum MHD_Result ret = submit(srv, r, img2img);
        if (!r->wait)
            return ret; /* answered with an error */
    }
    struct task t;
    switch (api_wait_poll(srv, r, &t)) {
    case WAIT_SUSPENDED:
        return MHD_YES;
    case WAIT_CLIENT_GONE:
        return MHD_NO;
    case WAIT_SHUTDOWN:
        return a1111_error(r, 503, "RuntimeError", "the server is shutting down; the task stays queued",
                           NULL);
    case WAIT_ERROR:
        return a1111_error(r, 500, "RuntimeError", "the task store could not be read", NULL);
    case WAIT_FINISHED:
        break;
    }
    enum MHD_Result ret = answer(srv, r, &t);
    task_clear(&t);
    return ret;
}

enum MHD_Result api_a1111_txt2img(struct server *srv, struct http_request *r)
{
    return generate(srv, r, 0);
}

enum MHD_Result api_a1111_img2img(struct server *srv, struct http_request *r)
{
    return generate(srv, r, 1);
}

/* ------------------------------------------------------------------------ */
/* Settings and lists */

/* Must always answer: Open WebUI reads sd_model_checkpoint before every
 * generation, SillyTavern uses it as its ping. */
enum MHD_Result api_a1111_options(struct server *srv, struct http_request *r)
{
    json_t *o = json_object();
    char title[256];
    json_object_set_new(o, "sd_model_checkpoint", json_string(model_title(srv, title, sizeof title)));
    json_object_set_new(o, "sd_checkpoint_hash", json_null());
    json_object_set_new(o, "samples_format", json_string("png"));
    json_object_set_new(o, "CLIP_stop_at_last_layers", json_integer(1));
    json_object_set_new(o, "sd_vae", json_string("Automatic"));
    json_object_set_new(o, "eta_ddim", json_real(0));
    json_object_set_new(o, "img2img_fix_steps", json_false());
    json_object_set_new(o, "enable_pnginfo", json_true());
    json_object_set_new(o, "forge_preset", json_string("sd"));
    return http_reply_json(r, 200, o, NULL);
}

/* Accepts the whole options dict back (Open WebUI) or a part of it
 * (SillyTavern); only the checkpoint means something: it must be the
 * loaded model (one model per process). Everything else is ignored. */
enum MHD_Result api_a1111_set_options(struct server *srv, struct http_request *r)
{
    json_t *body = r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    if (!json_is_object(body)) {
        json_decref(body);
        json_t *errs = json_array();
        field_error(errs, "__root__", "value is not a valid dict", "type_error.dict");
        return http_reply_json(r, 422, json_pack("{s:o}", "detail", errs), NULL);
    }
    /* The checkpoint must be a model this server or its fleet runs; a
     * request then runs on it when it names it (override_settings). There
     * is one default for all clients, so it is not switched here. */
    const char *ck = json_string_value(json_object_get(body, "sd_model_checkpoint"));
    if (ck && !api_model_known(srv, ck)) {
        char msg[600];
        snprintf(msg, sizeof msg, "model '%.256s' not found (GET /sdapi/v1/sd-models lists them)", ck);
        json_decref(body);
        return a1111_error(r, 400, "RuntimeError", msg, NULL);
    }
    json_decref(body);
    return http_reply_json(r, 200, json_null(), NULL);
}

enum MHD_Result api_a1111_sd_models(struct server *srv, struct http_request *r)
{
    json_t *a = json_array(), *all = api_fleet_models(srv), *m;
    size_t i;
    json_array_foreach(all, i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));
        int local = json_is_true(json_object_get(m, "local"));
        json_array_append_new(a, json_pack("{s:s,s:s,s:n,s:n,s:s,s:n}", "title", name, "model_name", name,
                                           "hash", "sha256", "filename", local ? srv->cfg.model : name,
                                           "config"));
    }
    json_decref(all);
    return http_reply_json(r, 200, a, NULL);
}

enum MHD_Result api_a1111_samplers(struct server *srv, struct http_request *r)
{
    json_t *a = json_array();
    for (int i = 0; i < N_SAMPLERS; i++) {
        json_t *al = json_array();
        for (int k = 0; k < 3 && samplers[i].aliases[k]; k++)
            json_array_append_new(al, json_string(samplers[i].aliases[k]));
        json_t *opts = json_object();
        if (samplers[i].sched == SD_SCHED_DPMPP_2M)
            json_object_set_new(opts, "scheduler", json_string("karras"));
        json_array_append_new(a, json_pack("{s:s,s:o,s:o}", "name", samplers[i].name, "aliases", al,
                                           "options", opts));
    }
    return http_reply_json(r, 200, a, NULL);
}

enum MHD_Result api_a1111_schedulers(struct server *srv, struct http_request *r)
{
    json_t *a = json_pack("[{s:s,s:s,s:n,s:i,s:b},{s:s,s:s,s:[s],s:f,s:b}]", "name", "automatic",
                          "label", "Automatic", "aliases", "default_rho", -1, "need_inner_model", 0,
                          "name", "karras", "label", "Karras", "aliases", "Karras", "default_rho", 7.0,
                          "need_inner_model", 0);
    return http_reply_json(r, 200, a, NULL);
}

/* No upscalers, latent upscale modes or VAE choices (one VAE per model):
 * empty lists, which every client handles. */
enum MHD_Result api_a1111_empty_list(struct server *srv, struct http_request *r)
{
    if (!strcmp(r->path, "/sdapi/v1/sd-vae") && srv->cfg.vae)
        return http_reply_json(r, 200, json_pack("[{s:s,s:s}]", "model_name", srv->cfg.vae,
                                                 "filename", srv->cfg.vae), NULL);
    return http_reply_json(r, 200, json_array(), NULL);
}

/* The Lora extension's list: [{name, alias, path, metadata}]. */
enum MHD_Result api_a1111_loras(struct server *srv, struct http_request *r)
{
    json_t *names = api_lora_names(srv->cfg.lora_dir), *a = json_array(), *v;
    size_t i;
    json_array_foreach(names, i, v)
    {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s.safetensors", srv->cfg.lora_dir, json_string_value(v));
        json_array_append_new(a, json_pack("{s:O,s:O,s:s,s:{}}", "name", v, "alias", v, "path", path,
                                           "metadata"));
    }
    json_decref(names);
    return http_reply_json(r, 200, a, NULL);
}

/* webuiapi asks for the scripts on construction. */
enum MHD_Result api_a1111_scripts(struct server *srv, struct http_request *r)
{
    return http_reply_json(r, 200, json_pack("{s:[],s:[]}", "txt2img", "img2img"), NULL);
}

/* ------------------------------------------------------------------------ */
/* Progress and interrupt */

/* The running task's progress in A1111's shape; idle: progress 0 and
 * job_count 0 (SillyTavern polls for exactly that). */
enum MHD_Result api_a1111_progress(struct server *srv, struct http_request *r)
{
    long long counts[TASK_STATUS_COUNT] = {0};
    store_counts(&srv->store, counts, NULL);
    char id[UUID_STR_LEN];
    struct task t = {0};
    int found = 0;
    if (worker_running(srv->worker, id))
        store_get(&srv->store, id, &t, &found, NULL);
    double progress = 0, eta = 0;
    int step = 0, total = 0;
    if (found && t.status == TASK_PROCESSING && t.total_steps > 0) {
        step = t.step, total = t.total_steps;
        progress = (double)step / total;
        double elapsed = now_unix() - t.started_at;
        if (progress > 0)
            eta = elapsed / progress - elapsed;
    }
    char job[64] = "", stamp[32] = "0";
    if (found) {
        snprintf(job, sizeof job, "task(%s)", t.id);
        time_t s = (time_t)t.started_at;
        struct tm tm;
        gmtime_r(&s, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    }
    task_clear(&t);
    json_t *state = json_pack("{s:b,s:b,s:b,s:s,s:I,s:s,s:i,s:i,s:i}", "skipped", 0, "interrupted", 0,
                              "stopping_generation", 0, "job", job, "job_count",
                              (json_int_t)(counts[TASK_PENDING] + counts[TASK_PROCESSING]),
                              "job_timestamp", stamp, "job_no", 0, "sampling_step", step,
                              "sampling_steps", total);
    json_t *o = json_pack("{s:f,s:f,s:o,s:n,s:n}", "progress", progress, "eta_relative", eta, "state",
                          state, "current_image", "textinfo");
    static const char *const hdr[] = {"Cache-Control", "no-store", NULL};
    return http_reply_json(r, 200, o, hdr);
}

/* Stops the running task if an A1111 client submitted it (A1111 has one
 * job at a time; tasks of other APIs are not this client's to stop). */
enum MHD_Result api_a1111_interrupt(struct server *srv, struct http_request *r)
{
    char id[UUID_STR_LEN];
    struct task t = {0};
    int found = 0;
    if (worker_running(srv->worker, id) &&
        store_get(&srv->store, id, &t, &found, NULL) == SD_OK && found && t.params) {
        json_t *params = json_loads(t.params, 0, NULL);
        const char *api = json_string_value(json_object_get(params, "api"));
        if (api && !strcmp(api, "a1111")) {
            enum cancel_result cr;
            if (api_task_cancel(srv, id, &cr, NULL) == SD_OK && cr == CANCEL_REQUESTED)
                server_log("task %s interrupted (/sdapi/v1/interrupt)", id);
        }
        json_decref(params);
    }
    task_clear(&t);
    return http_reply_json(r, 200, json_object(), NULL);
}
