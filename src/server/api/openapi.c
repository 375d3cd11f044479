/* openapi.c - the OpenAPI 3.1 description served at /openapi.json.
 *
 * Built once at start-up from three sources so that it cannot drift from
 * what the server does: the operation list below (summaries, responses),
 * the route table (routes.c: which operations need an API key) and the
 * configured limits (the request schema shows --max-prompt, --max-steps
 * and --max-side as they are). The unit test server_openapi_covers_routes
 * fails when a route is missing here.
 */
#include "server/api/api.h"
#include "server/routes.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One documented response; the body schema follows from the code: the
 * operation's own for 2xx, HTTPValidationError for 422, HTTPError else. */
struct resp_doc {
    const char *code, *desc;
};

struct op_doc {
    const char *method, *path, *summary, *id;
    const char *type;     /* content type of the 2xx body */
    const char *schema;   /* its component schema, or NULL for a plain string */
    struct resp_doc resp[7];
    const char *tag;      /* the API family, NULL: the native API */
};

#define GONE {"404", "Unknown task id."}, {"410", "The result has expired."}
#define CANCEL_RESP                                                                                \
    {{"200", "Was pending; now cancelled."}, {"202", "Running; stops after the current step."},  \
     {"409", "Already finished."}, GONE}

static const struct op_doc ops[] = {
    {"get", "/", "Web page to try the service", "page", "text/html", NULL, {{"200", "HTML page."}}, NULL},
    {"get", "/health", "Liveness and model status", "health", "application/json", "Health",
     {{"200", "Always 200 while the process serves."}}, NULL},
    {"get", "/openapi.json", "This document", "openapi", "application/json", "",
     {{"200", "OpenAPI 3.1 document."}}, NULL},
    {"get", "/models", "The loaded model and the LoRAs requests may name", "models", "application/json",
     "Models", {{"200", "Models and LoRAs."}}, NULL},
    {"get", "/metrics", "Prometheus metrics", "metrics", "text/plain", NULL,
     {{"200", "Prometheus text format 0.0.4."}}, NULL},
    {"post", "/generate", "Queue a text-to-image task", "generate", "application/json", "TaskResponse",
     {{"202", "Queued. Poll the Location."},
      {"413", "Body larger than --max-body."},
      {"422", "Invalid body (FastAPI/pydantic error list)."},
      {"429", "Per-client rate limit exceeded (with Retry-After)."},
      {"503", "Model not loaded, or queue full (with Retry-After)."}}, NULL},
    {"get", "/results/{task_id}", "Status and result of a task", "result", "application/json",
     "ResultResponse", {{"200", "The task."}, GONE}, NULL},
    {"delete", "/results/{task_id}", "Cancel a task", "cancel", "application/json", "TaskResponse",
     CANCEL_RESP, NULL},
    {"post", "/results/{task_id}/cancel", "Cancel a task (same as DELETE /results/{task_id})",
     "cancel_post", "application/json", "TaskResponse", CANCEL_RESP, NULL},
    {"get", "/results/{task_id}/image", "The generated PNG", "result_image", "image/png", NULL,
     {{"200", "The image."}, {"409", "Not completed (yet)."}, GONE}, NULL},
    {"get", "/results/{task_id}/events", "Progress as Server-Sent Events", "result_events",
     "text/event-stream", NULL, {{"200", "text/event-stream"}, GONE}, NULL},
#define A1111 "AUTOMATIC1111 compatible"
#define A1111_GEN_RESP                                                                            \
    {{"200", "Done: {images: [base64 PNG], parameters, info: JSON string}. Blocks until then."},   \
     {"400", "A value the engine cannot take."}, {"422", "Malformed body."},                       \
     {"429", "Rate limited."}, {"500", "The generation failed."},                                 \
     {"503", "Model not loaded, or queue full."}}
    {"post", "/sdapi/v1/txt2img", "A1111 text-to-image (blocks; queued like /generate)", "a1111_txt2img",
     "application/json", "", A1111_GEN_RESP, A1111},
    {"post", "/sdapi/v1/img2img", "A1111 image-to-image and inpainting (blocks)", "a1111_img2img",
     "application/json", "", A1111_GEN_RESP, A1111},
    {"get", "/sdapi/v1/options", "A1111 settings (sd_model_checkpoint, samples_format, ...)",
     "a1111_options", "application/json", "", {{"200", "Settings."}}, A1111},
    {"post", "/sdapi/v1/options", "A1111 settings back (only sd_model_checkpoint is checked)",
     "a1111_set_options", "application/json", "", {{"200", "null."}, {"400", "Another model."}}, A1111},
    {"get", "/sdapi/v1/sd-models", "A1111 model list", "a1111_sd_models", "application/json", "",
     {{"200", "[{title, model_name, hash, sha256, filename, config}]"}}, A1111},
    {"get", "/sdapi/v1/samplers", "A1111 samplers", "a1111_samplers", "application/json", "",
     {{"200", "[{name, aliases, options}]"}}, A1111},
    {"get", "/sdapi/v1/schedulers", "A1111 schedule types", "a1111_schedulers", "application/json",
     "", {{"200", "[{name, label, aliases, default_rho, need_inner_model}]"}}, A1111},
    {"get", "/sdapi/v1/upscalers", "A1111 upscalers (none)", "a1111_upscalers", "application/json", "",
     {{"200", "[]"}}, A1111},
    {"get", "/sdapi/v1/latent-upscale-modes", "A1111 latent upscale modes (none)",
     "a1111_latent_upscale_modes", "application/json", "", {{"200", "[]"}}, A1111},
    {"get", "/sdapi/v1/sd-vae", "A1111 VAE list (--vae, if given)", "a1111_sd_vae", "application/json",
     "", {{"200", "[{model_name, filename}]"}}, A1111},
    {"get", "/sdapi/v1/loras", "A1111 LoRA list (--lora-dir)", "a1111_loras", "application/json", "",
     {{"200", "[{name, alias, path, metadata}]"}}, A1111},
    {"get", "/sdapi/v1/scripts", "A1111 scripts (none)", "a1111_scripts", "application/json", "",
     {{"200", "{txt2img: [], img2img: []}"}}, A1111},
    {"get", "/sdapi/v1/progress", "A1111 progress of the running task", "a1111_progress",
     "application/json", "", {{"200", "{progress, eta_relative, state, current_image, textinfo}"}},
     A1111},
    {"post", "/sdapi/v1/interrupt", "A1111 interrupt: stops the running A1111 task",
     "a1111_interrupt", "application/json", "", {{"200", "{}"}}, A1111},
#define OPENAI "OpenAI compatible"
#define OPENAI_GEN_RESP                                                                           \
    {{"200", "{created, data: [{b64_json | url, revised_prompt}], output_format}. Blocks until done."}, \
     {"400", "Invalid value (OpenAI error object)."}, {"409", "Cancelled."},                      \
     {"429", "Rate limited or queue full (retry-after)."},                                        \
     {"500", "The generation failed (x-should-retry: false)."}, {"503", "Model not loaded."}}
    {"post", "/v1/images/generations", "OpenAI image generation (blocks; queued like /generate)",
     "openai_generations", "application/json", "", OPENAI_GEN_RESP, OPENAI},
    {"post", "/v1/images/edits", "OpenAI image edit: multipart image (+ mask with transparent areas)",
     "openai_edits", "application/json", "", OPENAI_GEN_RESP, OPENAI},
    {"get", "/v1/images/files/{task_id}", "An image of response_format url (the task id is the key)",
     "openai_image_file", "image/png", NULL, {{"200", "The image."}, {"404", "No such image."}}, OPENAI},
    {"get", "/v1/models", "OpenAI model list", "openai_models", "application/json", "",
     {{"200", "{object: list, data: [{id, object, created, owned_by}]}"}}, OPENAI},
};

#define EVENTS_DESC                                                                                \
    "Events: queued {queue_position}, started, step {step, total_steps} (one per denoising step), " \
    "then completed {seed, image_url} | failed {error_message} | cancelled | expired; the stream "  \
    "ends after the last one."

/* The fixed schemas; GenerationRequest is built from the limits. */
static const char schemas_json[] =
    "{"
    "\"TaskResponse\": {\"type\": \"object\", \"required\": [\"task_id\", \"status\"], \"properties\": {"
    "  \"task_id\": {\"type\": \"string\", \"format\": \"uuid\"}, \"status\": {\"type\": \"string\"},"
    "  \"message\": {\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"null\"}]},"
    "  \"queue_position\": {\"type\": \"integer\"}, \"seed\": {\"type\": \"integer\"}}},"
    "\"Progress\": {\"type\": \"object\", \"properties\": {"
    "  \"step\": {\"type\": \"integer\"}, \"total_steps\": {\"type\": \"integer\"}}},"
    "\"ResultResponse\": {\"type\": \"object\", \"required\": [\"task_id\", \"status\", \"prompt\", "
    "  \"image_base64\", \"error_message\"], \"properties\": {"
    "  \"task_id\": {\"type\": \"string\", \"format\": \"uuid\"},"
    "  \"status\": {\"enum\": [\"pending\", \"processing\", \"completed\", \"failed\", \"cancelled\"]},"
    "  \"prompt\": {\"type\": \"string\"},"
    "  \"image_base64\": {\"anyOf\": [{\"type\": \"string\", \"contentEncoding\": \"base64\"}, {\"type\": \"null\"}]},"
    "  \"error_message\": {\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"null\"}]},"
    "  \"progress\": {\"anyOf\": [{\"$ref\": \"#/components/schemas/Progress\"}, {\"type\": \"null\"}]},"
    "  \"queue_position\": {\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"null\"}],"
    "    \"description\": \"1 = runs next; null unless pending.\"},"
    "  \"seed\": {\"type\": \"integer\"},"
    "  \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "  \"started_at\": {\"anyOf\": [{\"type\": \"string\", \"format\": \"date-time\"}, {\"type\": \"null\"}]},"
    "  \"finished_at\": {\"anyOf\": [{\"type\": \"string\", \"format\": \"date-time\"}, {\"type\": \"null\"}]},"
    "  \"image_url\": {\"type\": \"string\"},"
    "  \"image_urls\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "  \"images_base64\": {\"type\": \"array\", \"items\": {\"type\": \"string\", \"contentEncoding\": \"base64\"},"
    "    \"description\": \"Every image of a completed task; image_base64 is the first.\"},"
    "  \"params\": {\"type\": \"object\", \"description\": \"The normalised request.\"}}},"
    "\"ModelInfo\": {\"type\": \"object\", \"properties\": {"
    "  \"name\": {\"type\": \"string\"}, \"family\": {\"enum\": [\"SD 1.x\", \"SD 2.x\", \"SDXL\"]},"
    "  \"format\": {\"enum\": [\"diffusers\", \"single-file\"]},"
    "  \"prediction_type\": {\"enum\": [\"epsilon\", \"v_prediction\"]},"
    "  \"default_width\": {\"type\": \"integer\"}, \"default_height\": {\"type\": \"integer\"},"
    "  \"default_guidance\": {\"type\": \"number\"}, \"scheduler\": {\"type\": \"string\"},"
    "  \"precision\": {\"enum\": [\"fp32\", \"bf16\"]}, \"status\": {\"type\": \"string\"}}},"
    "\"Models\": {\"type\": \"object\", \"properties\": {"
    "  \"models\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/components/schemas/ModelInfo\"}},"
    "  \"loras\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}},"
    "\"Health\": {\"type\": \"object\", \"required\": [\"status\", \"model_status\"], \"properties\": {"
    "  \"status\": {\"const\": \"ok\"}, \"model_status\": {\"enum\": [\"available\", \"unavailable\"]},"
    "  \"model\": {\"type\": \"string\"}, \"model_error\": {\"type\": \"string\"},"
    "  \"model_info\": {\"$ref\": \"#/components/schemas/ModelInfo\"},"
    "  \"cpu\": {\"type\": \"string\", \"description\": \"Kernel level in use and the CPU.\"}}},"
    "\"HTTPError\": {\"type\": \"object\", \"required\": [\"detail\"], \"properties\": {"
    "  \"detail\": {\"type\": \"string\"}}},"
    "\"ValidationError\": {\"type\": \"object\", \"required\": [\"type\", \"loc\", \"msg\"], \"properties\": {"
    "  \"type\": {\"type\": \"string\"},"
    "  \"loc\": {\"type\": \"array\", \"items\": {\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"integer\"}]}},"
    "  \"msg\": {\"type\": \"string\"}, \"input\": {}, \"ctx\": {\"type\": \"object\"}}},"
    "\"HTTPValidationError\": {\"type\": \"object\", \"properties\": {"
    "  \"detail\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/components/schemas/ValidationError\"}}}}"
    "}";

static json_t *nullable(json_t *schema)
{
    return json_pack("{s:[o,{s:s}],s:n}", "anyOf", schema, "type", "null", "default");
}

static json_t *request_schema(const struct api_limits *lim)
{
    json_t *side = json_pack("{s:s,s:i,s:i,s:i}", "type", "integer", "minimum", 8, "maximum",
                             lim->max_side, "multipleOf", 8);
    json_t *props = json_pack(
        "{s:{s:s,s:i}, s:o, s:{s:s,s:i,s:i,s:i}, s:{s:s,s:i,s:f,s:f}, s:o, s:o, s:o, s:o,"
        " s:{s:s,s:i,s:i,s:i}, s:o}",
        "prompt", "type", "string", "maxLength", lim->max_prompt,
        "negative_prompt", nullable(json_pack("{s:s,s:i}", "type", "string", "maxLength", lim->max_prompt)),
        "num_inference_steps", "type", "integer", "minimum", 1, "maximum", lim->max_steps, "default", 50,
        "guidance_scale", "type", "number", "minimum", 0, "maximum", API_GUIDANCE_MAX, "default", 7.5,
        "seed", nullable(json_pack("{s:s}", "type", "integer")),
        "width", nullable(side),
        "height", nullable(json_deep_copy(side)),
        "scheduler", nullable(json_pack("{s:[s,s,s,s,s,s,s,s]}", "enum", "default", "pndm", "ddim",
                                        "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "lcm")),
        "eta", "type", "number", "minimum", 0, "maximum", 1, "default", 0,
        "clip_skip", nullable(json_pack("{s:s,s:i,s:i}", "type", "integer", "minimum", 0, "maximum",
                                        API_CLIP_SKIP_MAX)));
    if (!props)
        return NULL;
    json_object_set_new(json_object_get(props, "seed"), "description",
                        json_string("64-bit; null picks one (returned)."));
    json_object_set_new(json_object_get(props, "width"), "description",
                        json_string("null: the model's default."));
    json_object_set_new(json_object_get(props, "scheduler"), "description",
                        json_string("null or default: the model's scheduler."));
    json_object_set_new(json_object_get(props, "guidance_scale"), "description",
                        json_string("Absent: the model's default (7.5 SD, 5.0 SDXL)."));
    static const char *const micro[6] = {"original_width", "original_height", "crop_top", "crop_left",
                                         "target_width", "target_height"};
    for (int i = 0; i < 6; i++) {
        json_t *m = nullable(json_pack("{s:s,s:i,s:i}", "type", "integer", "minimum", 0, "maximum", 16384));
        json_object_set_new(m, "description", json_string("SDXL micro-conditioning (add_time_ids), pixels; "
                                                          "null: the image size, crop 0."));
        json_object_set_new(props, micro[i], m);
    }
    json_t *lora = json_pack("{s:s,s:[s],s:{s:{s:s,s:i},s:{s:s,s:f,s:f,s:f}}}", "type", "object", "required",
                             "name", "properties", "name", "type", "string", "maxLength", SD_LORA_NAME_MAX - 1,
                             "weight", "type", "number", "minimum", -(double)SD_LORA_WEIGHT_MAX, "maximum",
                             (double)SD_LORA_WEIGHT_MAX, "default", 1.0);
    json_t *loras = nullable(json_pack("{s:s,s:o,s:i}", "type", "array", "items", lora, "maxItems", SD_MAX_LORAS));
    json_object_set_new(loras, "description",
                        json_string("LoRA files of the server's --lora-dir (GET /models lists them), merged for "
                                    "this task; <lora:NAME:WEIGHT> tags in the prompt work too."));
    json_object_set_new(props, "loras", loras);
    json_t *img = nullable(json_pack("{s:s,s:s}", "type", "string", "contentEncoding", "base64"));
    json_object_set_new(img, "description", json_string("Image-to-image: a PNG or JPEG, base64 or a data: URL; "
                                                        "resized to the output size."));
    json_object_set_new(props, "init_image", img);
    json_t *mask = nullable(json_pack("{s:s,s:s}", "type", "string", "contentEncoding", "base64"));
    json_object_set_new(mask, "description", json_string("Inpainting (needs init_image): white = repaint; any "
                                                         "size; 9-channel inpainting models or latent blend."));
    json_object_set_new(props, "mask", mask);
    json_t *strength = nullable(json_pack("{s:s,s:f,s:f}", "type", "number", "minimum", 0.0, "maximum", 1.0));
    json_object_set_new(strength, "description", json_string("How much of the schedule runs from the init "
                                                             "image; null: 0.8 (inpainting 1.0)."));
    json_object_set_new(props, "strength", strength);
    json_object_set_new(props, "mask_invert", json_pack("{s:s,s:b,s:s}", "type", "boolean", "default", 0,
                                                        "description", "Black = repaint instead."));
    json_t *model = nullable(json_pack("{s:s,s:i}", "type", "string", "maxLength", 255));
    json_object_set_new(model, "description", json_string("A model of this server or its fleet (GET /models); "
                                                          "null: the default."));
    json_object_set_new(props, "model", model);
    json_object_set_new(props, "num_images", json_pack("{s:s,s:i,s:i,s:i}", "type", "integer", "minimum", 1,
                                                       "maximum", lim->max_images, "default", 1));
    json_object_set_new(props, "seed_per_image",
                        json_pack("{s:s,s:b,s:s}", "type", "boolean", "default", 0, "description",
                                  "Image k gets seed + k (as A1111) instead of one generator for the batch "
                                  "(as diffusers' num_images_per_prompt)."));
    return json_pack("{s:s,s:[s],s:o,s:s}", "type", "object", "required", "prompt", "properties", props,
                     "description", "Unknown fields are ignored. The limits are this server's.");
}

static json_t *content(const char *type, const char *schema)
{
    json_t *s = !schema ? json_pack("{s:s}", "type", "string")
                : !*schema ? json_pack("{s:s}", "type", "object")
                           : json_pack("{s:s+}", "$ref", "#/components/schemas/", schema);
    if (s && !strcmp(type, "image/png"))
        json_object_set_new(s, "contentMediaType", json_string(type));
    return json_pack("{s:{s:o}}", type, "schema", s);
}

static json_t *response(const struct op_doc *op, const struct resp_doc *r)
{
    const char *err = !strcmp(r->code, "422") ? "HTTPValidationError" : "HTTPError";
    json_t *c = r->code[0] == '2' ? content(op->type, op->schema) : content("application/json", err);
    json_t *resp = json_pack("{s:s,s:o}", "description", r->desc, "content", c);
    int accepted = !strcmp(r->code, "202") && !strcmp(op->id, "generate");
    if (resp && (accepted || !strcmp(r->code, "429") || !strcmp(r->code, "503"))) {
        json_t *h = json_pack("{s:{s:s,s:{s:s}}}", "Retry-After", "description",
                              accepted ? "Seconds to wait before the first poll."
                                       : "Seconds to wait before trying again.",
                              "schema", "type", "integer");
        if (h && accepted)
            json_object_set_new(h, "Location", json_pack("{s:s,s:{s:s}}", "description",
                                                         "/results/{task_id}", "schema", "type", "string"));
        json_object_set_new(resp, "headers", h);
    }
    return resp;
}

static int route_auth(const char *method, const char *path)
{
    for (int i = 0; i < routes_count; i++)
        if (!strcmp(routes[i].pattern, path) && !strcasecmp(routes[i].method, method))
            return routes[i].auth;
    return 0;
}

static json_t *operation(const struct op_doc *op)
{
    json_t *resps = json_object();
    for (const struct resp_doc *r = op->resp; r < op->resp + 7 && r->code; r++)
        json_object_set_new(resps, r->code, response(op, r));
    int auth = route_auth(op->method, op->path);
    if (auth) {
        struct resp_doc r401 = {"401", "API keys are configured and the request has no valid one."};
        json_object_set_new(resps, "401", response(op, &r401));
    }
    json_t *o = json_pack("{s:s,s:s,s:o}", "summary", op->summary, "operationId", op->id, "responses",
                          resps);
    if (!o)
        return NULL;
    if (op->tag)
        json_object_set_new(o, "tags", json_pack("[s]", op->tag));
    if (!strcmp(op->id, "result_events"))
        json_object_set_new(o, "description", json_string(EVENTS_DESC));
    if (auth) /* a key, or nothing when the server runs without --api-keys */
        json_object_set_new(o, "security", json_pack("[{s:[]},{s:[]},{}]", "bearer", "basic"));
    if (strstr(op->path, "{task_id}"))
        json_object_set_new(o, "parameters",
                            json_pack("[{s:s,s:s,s:b,s:{s:s,s:s}}]", "name", "task_id", "in", "path",
                                      "required", 1, "schema", "type", "string", "format", "uuid"));
    if (!strcmp(op->id, "generate"))
        json_object_set_new(o, "requestBody",
                            json_pack("{s:b,s:o}", "required", 1, "content",
                                      content("application/json", "GenerationRequest")));
    return o;
}

char *openapi_render(const struct api_limits *lim)
{
    json_t *schemas = json_loads(schemas_json, 0, NULL);
    json_t *paths = json_object();
    if (schemas)
        json_object_set_new(schemas, "GenerationRequest", request_schema(lim));
    for (size_t i = 0; paths && i < sizeof ops / sizeof ops[0]; i++) {
        json_t *item = json_object_get(paths, ops[i].path);
        if (!item)
            json_object_set_new(paths, ops[i].path, item = json_object());
        json_object_set_new(item, ops[i].method, operation(&ops[i]));
    }
    json_t *doc = json_pack(
        "{s:s,s:{s:s,s:s,s:s},s:o,s:{s:{s:{s:s,s:s,s:s}},s:o}}", "openapi", "3.1.0", "info", "title",
        "diffusiond", "version", "1.0.0", "description",
        "Stable Diffusion text-to-image over HTTP. Submit with POST /generate, then poll GET "
        "/results/{task_id} or stream GET /results/{task_id}/events. See docs/api.md.",
        "paths", paths, "components", "securitySchemes", "bearer", "type", "http", "scheme", "bearer",
        "description", "Only when the server runs with --api-keys.", "schemas", schemas);
    json_object_set_new(json_object_get(json_object_get(doc, "components"), "securitySchemes"), "basic",
                        json_pack("{s:s,s:s,s:s}", "type", "http", "scheme", "basic", "description",
                                  "The API key as the password (any user name), for A1111 clients."));
    char *text = doc ? json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    return text;
}
