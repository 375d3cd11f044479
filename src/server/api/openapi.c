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
};

#define GONE {"404", "Unknown task id."}, {"410", "The result has expired."}
#define CANCEL_RESP                                                                                \
    {{"200", "Was pending; now cancelled."}, {"202", "Running; stops after the current step."},  \
     {"409", "Already finished."}, GONE}

static const struct op_doc ops[] = {
    {"get", "/", "Web page to try the service", "page", "text/html", NULL, {{"200", "HTML page."}}},
    {"get", "/health", "Liveness and model status", "health", "application/json", "Health",
     {{"200", "Always 200 while the process serves."}}},
    {"get", "/openapi.json", "This document", "openapi", "application/json", "",
     {{"200", "OpenAPI 3.1 document."}}},
    {"get", "/models", "The loaded model and the LoRAs requests may name", "models", "application/json",
     "Models", {{"200", "Models and LoRAs."}}},
    {"get", "/metrics", "Prometheus metrics", "metrics", "text/plain", NULL,
     {{"200", "Prometheus text format 0.0.4."}}},
    {"post", "/generate", "Queue a text-to-image task", "generate", "application/json", "TaskResponse",
     {{"202", "Queued. Poll the Location."},
      {"413", "Body larger than --max-body."},
      {"422", "Invalid body (FastAPI/pydantic error list)."},
      {"429", "Per-client rate limit exceeded (with Retry-After)."},
      {"503", "Model not loaded, or queue full (with Retry-After)."}}},
    {"get", "/results/{task_id}", "Status and result of a task", "result", "application/json",
     "ResultResponse", {{"200", "The task."}, GONE}},
    {"delete", "/results/{task_id}", "Cancel a task", "cancel", "application/json", "TaskResponse",
     CANCEL_RESP},
    {"post", "/results/{task_id}/cancel", "Cancel a task (same as DELETE /results/{task_id})",
     "cancel_post", "application/json", "TaskResponse", CANCEL_RESP},
    {"get", "/results/{task_id}/image", "The generated PNG", "result_image", "image/png", NULL,
     {{"200", "The image."}, {"409", "Not completed (yet)."}, GONE}},
    {"get", "/results/{task_id}/events", "Progress as Server-Sent Events", "result_events",
     "text/event-stream", NULL, {{"200", "text/event-stream"}, GONE}},
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
    if (!strcmp(op->id, "result_events"))
        json_object_set_new(o, "description", json_string(EVENTS_DESC));
    if (auth) /* a key, or nothing when the server runs without --api-keys */
        json_object_set_new(o, "security", json_pack("[{s:[]},{}]", "bearer"));
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
    char *text = doc ? json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    return text;
}
