/* api/api.h - the door to the API layer: one handler per route.
 *
 * Each file here is one family of routes; routes.c maps method + path to
 * these functions after auth, body size and rate limit are checked.
 *
 *     submit.c     what every family does to queue a generation
 *     wait.c       blocking calls: answer when the task is finished
 *     generate.c   POST /generate (the seed's contract)
 *     results.c    GET /results/{id}, /image, /events; cancellation
 *     ops.c        /health, /models, /metrics, /openapi.json, the page
 *     json_api.c   the native request: validation with FastAPI's errors
 *     a1111.c      the AUTOMATIC1111 API (/sdapi/v1/...)
 *     openai.c     the OpenAI Images API (/v1/images/..., /v1/models)
 *     form.c       multipart form bodies (libmicrohttpd's post processor)
 *     openapi.c    the OpenAPI document; webpage.c the page
 */
#ifndef SD_SERVER_API_API_H
#define SD_SERVER_API_API_H

#include "server/http.h"
#include "server/api/json_api.h"

/* Submitting a generation (submit.c), shared by every family: the model's
 * defaults are filled into req (guidance, size, a random seed), the values
 * checked against the engine, and the task stored with its input images. */
enum submit_status {
    SUBMIT_QUEUED,   /* out->id, position, seed, retry_after */
    SUBMIT_INVALID,  /* the engine refused the values: out->message says why */
    SUBMIT_NO_MODEL, /* no model loaded */
    SUBMIT_FULL,     /* queue at capacity: out->retry_after */
    SUBMIT_UNAVAILABLE, /* the store could not be reached (logged): nothing queued;
                         * out->retry_after */
    SUBMIT_FAILED,   /* something else failed (out of memory) */
};
struct submission {
    char id[UUID_STR_LEN];
    int position;      /* 1 = runs next */
    int64_t seed;
    long retry_after;  /* seconds, for Retry-After */
    char message[SD_ERR_MSG_MAX];
};
enum submit_status api_submit(struct server *srv, struct gen_request *req, struct submission *out);
/* The models tasks can run on: this process's and those of the workers of
 * a shared store: [{name, family, default_width, ..., "workers": live
 * count}] (a new array). */
json_t *api_fleet_models(struct server *srv);
/* The same; *store_failed says the shared store could not be asked. */
json_t *api_fleet_models_err(struct server *srv, int *store_failed);
/* The model a request without one runs on (this process's, else the
 * fleet's first with a live worker): 1 and its name (and *info, a new
 * object, when info is not NULL), or 0 when there is none. */
int api_default_model(struct server *srv, char *name, size_t cap, json_t **info);
/* Whether name is a model of this server or its fleet. */
int api_model_known(struct server *srv, const char *name);
/* Seconds until a client should look again, from recent generation times. */
long api_retry_seconds(struct server *srv, int tasks_ahead);

/* The images of a completed task as a JSON array of base64 strings (a new
 * reference); NULL on failure with err set (results.c). */
json_t *api_task_images_base64(struct server *srv, const struct task *t, struct sd_err *err);

/* Cancel task id as DELETE /results/{id} does (pending: now; running: at
 * the worker's next step), waking whoever watches it. */
int api_task_cancel(struct server *srv, const char *id, enum cancel_result *cr,
                    struct sd_err *err);

/* Blocking calls (wait.c). A handler that must answer only when its task
 * is finished calls api_wait_begin once (data: its own state for the
 * answer, consumed), then api_wait_poll on every call that follows:
 *
 *     if (!r->wait) { ...submit...; api_wait_begin(srv, r, id, data); }
 *     switch (api_wait_poll(srv, r, &t)) {
 *     case WAIT_SUSPENDED: return MHD_YES;   (called again when it changes)
 *     case WAIT_CLIENT_GONE: return MHD_NO;  (its task was cancelled)
 *     case WAIT_FINISHED: answer from t and api_wait_data(r); task_clear(&t)
 *     ...
 *
 * The request's end (http.c) calls api_wait_end. */
enum wait_state { WAIT_SUSPENDED, WAIT_FINISHED, WAIT_CLIENT_GONE, WAIT_SHUTDOWN, WAIT_ERROR };
int api_wait_begin(struct server *srv, struct http_request *r, const char *id, json_t *data);
enum wait_state api_wait_poll(struct server *srv, struct http_request *r, struct task *t);
json_t *api_wait_data(struct http_request *r);
void api_wait_end(struct server *srv, struct http_request *r);

/* The LoRA names requests may use: the *.safetensors files of dir, sorted,
 * without the extension (ops.c). A new JSON array; empty without a dir. */
json_t *api_lora_names(const char *dir);

/* What a client may want to know of a model (ops.c): name, family,
 * format, prediction type, default size and guidance, scheduler,
 * precision. Workers advertise it to the fleet. A new object. */
json_t *api_model_json(const struct sd_model_info *in);

/* Handlers. */
enum MHD_Result api_generate(struct server *srv, struct http_request *r);
enum MHD_Result api_result(struct server *srv, struct http_request *r);
enum MHD_Result api_result_image(struct server *srv, struct http_request *r);
enum MHD_Result api_result_events(struct server *srv, struct http_request *r);
enum MHD_Result api_cancel(struct server *srv, struct http_request *r);
enum MHD_Result api_health(struct server *srv, struct http_request *r);
enum MHD_Result api_models(struct server *srv, struct http_request *r);
enum MHD_Result api_metrics(struct server *srv, struct http_request *r);
enum MHD_Result api_openapi(struct server *srv, struct http_request *r);
enum MHD_Result api_page(struct server *srv, struct http_request *r);
/* a1111.c */
enum MHD_Result api_a1111_txt2img(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_img2img(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_options(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_set_options(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_sd_models(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_samplers(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_schedulers(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_empty_list(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_loras(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_scripts(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_progress(struct server *srv, struct http_request *r);
enum MHD_Result api_a1111_interrupt(struct server *srv, struct http_request *r);
/* openai.c */
enum MHD_Result api_openai_generations(struct server *srv, struct http_request *r);
enum MHD_Result api_openai_edits(struct server *srv, struct http_request *r);
enum MHD_Result api_openai_models(struct server *srv, struct http_request *r);
enum MHD_Result api_openai_image_file(struct server *srv, struct http_request *r);
/* {"error": {"message", "type" (from the status), "param", "code"}}. */
enum MHD_Result api_openai_error(struct http_request *r, int status, const char *message,
                                 const char *param, const char *code, const char *const *headers);

/* The OpenAPI 3.1 document for these limits (openapi.c): malloc'd JSON
 * text, NULL when out of memory. */
char *openapi_render(const struct api_limits *lim);

/* The web page (webpage.c). */
extern const char webpage_html[];

#endif
