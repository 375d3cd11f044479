/* json_api.h - the /generate request: validation with FastAPI's error shapes.
 *
 * The seed service is FastAPI + pydantic v2, so a client written for it
 * expects 422 bodies like
 *
 *     {"detail": [{"type": "missing", "loc": ["body", "prompt"],
 *                  "msg": "Field required", "input": {...}}]}
 *
 * api_parse_generate() validates a body the way pydantic's lax mode does
 * (numeric strings such as "25" are accepted for numbers, 5.0 for an int,
 * every field is checked and every error reported, unknown fields are
 * ignored) and produces those exact shapes. docs/api.md lists the choices.
 *
 * The fields, in schema order (errors come in this order):
 *
 *     prompt               str, required, at most max_prompt characters
 *     negative_prompt      str | null
 *     num_inference_steps  int = 50, 1..max_steps
 *     guidance_scale       float = 7.5, 0..50
 *     seed                 int | null (64-bit; negative values wrap as in torch)
 *     width, height        int | null, multiple of 8, 8..max_side (null: model default)
 *     scheduler            one of the engine's names | null (null: the model's)
 *     eta                  float = 0, 0..1 (DDIM)
 *     clip_skip            int | null, 0..24
 */
#ifndef SD_SERVER_JSON_API_H
#define SD_SERVER_JSON_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "sd.h"
#include "server/json_dump.h"

struct gen_request {
    char *prompt;          /* owned */
    char *negative_prompt; /* owned; NULL when not given */
    int steps;
    double guidance;
    int has_guidance;      /* 0: not given (the model's default, set at submission) */
    int has_seed;
    int64_t seed;
    int width, height;     /* 0: the model's default */
    int scheduler;         /* enum sd_scheduler */
    double eta;
    int clip_skip;
    /* SDXL micro-conditioning, pixels; 0: the image's size / no crop */
    int original_width, original_height, crop_top, crop_left, target_width, target_height;
    int n_loras;
    char *lora_names[SD_MAX_LORAS]; /* owned */
    double lora_weights[SD_MAX_LORAS];
    struct sd_lora loras[SD_MAX_LORAS]; /* gen_request_to_params' view */
};

/* Fixed bounds of /generate fields (the others are in api_limits). */
#define API_GUIDANCE_MAX 50.0
#define API_CLIP_SKIP_MAX 24

struct api_limits {
    int max_prompt; /* characters */
    int max_steps;
    int max_side;
};

/* Validate a /generate body. content_type may be NULL (no header).
 * SD_OK: *req is filled (free with gen_request_free).
 * SD_ERR_ARG: *detail is a new JSON array of pydantic-style errors (the
 * value of "detail" in the 422 body); the caller owns it.
 * SD_ERR_NOMEM: out of memory. */
int api_parse_generate(const char *body, size_t len, const char *content_type,
                       const struct api_limits *lim, struct gen_request *req, json_t **detail);

void gen_request_free(struct gen_request *r);

/* The normalised request as stored with the task (every field present,
 * seed always set): {"prompt": ..., "negative_prompt": ..., ...}. */
json_t *gen_request_to_json(const struct gen_request *r);

/* Read back what gen_request_to_json stored (validated again with the
 * engine's limits); on failure err says why. */
int gen_request_from_text(const char *text, struct gen_request *r, struct sd_err *err);

/* The engine's view. The strings (and the LoRA list) stay owned by r. */
void gen_request_to_params(struct gen_request *r, struct sd_params *p);

/* One pydantic-style error object {"type", "loc": ["body", field?], "msg",
 * "input", "ctx"?}; input and ctx are borrowed (NULL: input null / no ctx). */
json_t *api_error_item(const char *type, const char *field, const char *msg, json_t *input,
                       json_t *ctx);

/* {"detail": "<msg>"} - FastAPI's HTTPException body. */
json_t *api_detail(const char *msg);

#endif
