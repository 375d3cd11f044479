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
 *     init_image           str | null: base64 PNG/JPEG or a data: URL (img2img)
 *     mask                 str | null: the same; white = repaint (needs init_image)
 *     strength             float | null, 0..1 (null: 0.8, inpainting 1.0)
 *     mask_invert          bool = false: black = repaint instead
 *     num_images           int = 1, 1..max_images
 *     seed_per_image       bool = false: image k gets seed + k (A1111) instead
 *                          of one generator for the batch (diffusers)
 *     model                str | null: a model this server or its fleet runs
 *
 * init_image and mask are decoded here (limits checked before pixels are
 * allocated) so a broken image is a 422 at submission, not a failed task.
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
    /* Image inputs. Parsed from a client: the file bytes as sent and their
     * decoded RGB (all owned). Read back from the store: only has_* is set;
     * the bytes are the task's input files (init image 0, mask 1). */
    int has_init_image, has_mask;
    uint8_t *init_file, *mask_file;
    size_t init_file_len, mask_file_len;
    uint8_t *init_rgb, *mask_rgb;
    int init_width, init_height, mask_width, mask_height;
    double strength;       /* 0: the engine's default */
    int mask_invert;
    int n_images;          /* >= 1 */
    int seed_per_image;
    char *model;           /* owned; the model to run on, NULL: the default */
    int model_strict;      /* an unknown model name is an error (native API) */
    const char *api;       /* who submitted it: "a1111", "openai" or NULL (native);
                            * a static string */
};

/* Fixed bounds of /generate fields (the others are in api_limits). */
#define API_GUIDANCE_MAX 50.0
#define API_CLIP_SKIP_MAX 24

struct api_limits {
    int max_prompt; /* characters */
    int max_steps;
    int max_side;
    int max_images;
    size_t max_input_bytes; /* one init image or mask, as a file */
    int stored;             /* reading back gen_request_to_json's text: init_image
                             * and mask are booleans (the files are in the store) */
};

/* Bounds of an input image's pixels (a decompression bomb stops here). */
#define API_INPUT_MAX_SIDE 8192
#define API_INPUT_MAX_PIXELS SD_MAX_INPUT_PIXELS

/* Decode an image file (PNG or JPEG) a client sent as field `what`, with
 * the limits above: *rgb malloc'd. On failure err says what is wrong in
 * words for the client ("init_image: not a PNG or JPEG image"). */
int api_decode_image(const char *what, const uint8_t *file, size_t len, uint8_t **rgb, int *w,
                     int *h, struct sd_err *err);

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

/* Set r's init image (which 0) or mask (1) from a field as clients send
 * it (base64 or a data: URL, at most max_bytes decoded) and check that it
 * decodes as an image (with the mask: r->init_rgb/mask_rgb are filled).
 * Call for the init image first. err says what is wrong for the client. */
int gen_request_set_image(struct gen_request *r, int which, const char *field, const char *text,
                          size_t len, size_t max_bytes, struct sd_err *err);
/* The same with the file's bytes (copied). */
int gen_request_set_image_file(struct gen_request *r, int which, const char *field,
                               const uint8_t *data, size_t len, struct sd_err *err);

/* A number as lax clients send it: a JSON number, a boolean, or a string
 * that parses as one ("20", " 7.5 "). 1 and *out set, or 0. */
int api_json_number(const json_t *v, double *out);

/* Decode the task's input files (init image, then mask when has_mask) into
 * r->init_rgb / r->mask_rgb, the mask inverted when r->mask_invert. */
int gen_request_load_images(struct gen_request *r, const uint8_t *init, size_t init_len,
                            const uint8_t *mask, size_t mask_len, struct sd_err *err);

/* The engine's view. The strings, the LoRA list and the decoded images
 * stay owned by r (the worker fills init_rgb/mask_rgb from the store
 * before calling this). */
void gen_request_to_params(struct gen_request *r, struct sd_params *p);

/* One pydantic-style error object {"type", "loc": ["body", field?], "msg",
 * "input", "ctx"?}; input and ctx are borrowed (NULL: input null / no ctx). */
json_t *api_error_item(const char *type, const char *field, const char *msg, json_t *input,
                       json_t *ctx);

/* {"detail": "<msg>"} - FastAPI's HTTPException body. */
json_t *api_detail(const char *msg);

#endif
