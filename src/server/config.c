/* config.c - see config.h. One table row per option. */
#include "server/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sd.h"
#include "util/paths.h"

enum opt_type { OPT_STR, OPT_INT, OPT_NUM, OPT_FLAG };

struct opt {
    const char *flag;
    const char *env;
    enum opt_type type;
    size_t off;
    double min, max; /* for OPT_INT and OPT_NUM */
    const char *arg;
    const char *help;
};

#define F(field) offsetof(struct server_config, field)

static const struct opt opts[] = {
    {"--model", "DIFFUSIOND_MODEL", OPT_STR, F(model), 0, 0, "DIR|FILE",
     "diffusers model folder, or a single-file checkpoint (.safetensors of SD 1.x, SD 2.x, SDXL) "
     "(default: the repository's tiny test model)"},
    {"--variant", "DIFFUSIOND_VARIANT", OPT_STR, F(variant), 0, 0, "NAME",
     "weight file variant, e.g. fp16 for *.fp16.safetensors"},
    {"--config", "DIFFUSIOND_CONFIG", OPT_STR, F(config), 0, 0, "DIR|NAME",
     "single files: configs and tokenizers from a diffusers folder, or a bundled config (sd15 sd21 "
     "sd21-base sd-turbo sdxl-base sdxl-turbo); default: detected from the file"},
    {"--vae", "DIFFUSIOND_VAE", OPT_STR, F(vae), 0, 0, "DIR|FILE",
     "use this VAE instead of the model's (a diffusers vae folder or a .safetensors file)"},
    {"--prediction-type", "DIFFUSIOND_PREDICTION_TYPE", OPT_STR, F(prediction_type), 0, 0, "T",
     "epsilon or v_prediction (default: the model's config; SD 2.x single files: v_prediction)"},
    {"--lora-dir", "DIFFUSIOND_LORA_DIR", OPT_STR, F(lora_dir), 0, 0, "DIR",
     "folder of LoRA files that requests may name (\"loras\", <lora:NAME:W>); default: none"},
    {"--threads", "DIFFUSIOND_THREADS", OPT_INT, F(threads), 0, 4096, "N",
     "compute threads for inference (0: all cores)"},
    {"--precision", "DIFFUSIOND_PRECISION", OPT_STR, F(precision), 0, 0, "P",
     "fp32 (default, matches diffusers) or bf16 (weights held in 16 bits; faster where the CPU has AVX512-BF16, "
     "see --version)"},
    {"--plan-size", "DIFFUSIOND_PLAN_SIZE", OPT_INT, F(plan_size), 0, 2048, "PIXELS",
     "image side most requests use (multiple of 8; 0: the model's default): algorithms and memory are planned for it"},
    {"--host", "DIFFUSIOND_HOST", OPT_STR, F(host), 0, 0, "ADDR",
     "address to listen on (IPv4 or IPv6 literal, or a host name)"},
    {"--port", "DIFFUSIOND_PORT", OPT_INT, F(port), 0, 65535, "N",
     "TCP port (0: pick a free one; the chosen port is printed)"},
    {"--data-dir", "DIFFUSIOND_DATA_DIR", OPT_STR, F(data_dir), 0, 0, "DIR",
     "where the task database and images live (created if missing)"},
    {"--store", "DIFFUSIOND_STORE", OPT_STR, F(store), 0, 0, "URL",
     "redis://HOST[:PORT][/DB]: tasks and images in Redis, shared by API nodes and workers (default: SQLite in --data-dir)"},
    {"--images", "DIFFUSIOND_IMAGES", OPT_STR, F(images), 0, 0, "URL",
     "s3://BUCKET[/PREFIX]: images in S3-compatible storage (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION); default: in the task store"},
    {"--s3-endpoint", "DIFFUSIOND_S3_ENDPOINT", OPT_STR, F(s3_endpoint), 0, 0, "URL",
     "http(s)://HOST[:PORT] of the S3-compatible service (MinIO, Ceph, ...); default: AWS for AWS_REGION"},
    {"--workers", "DIFFUSIOND_WORKERS", OPT_INT, F(workers), 0, 1, "N",
     "inference workers in this process: 1, or 0 for an API node of a Redis fleet (needs --store)"},
    {"--result-ttl", "DIFFUSIOND_RESULT_TTL", OPT_INT, F(result_ttl), 1, 1e12, "SECONDS",
     "how long finished results are kept before they expire (410)"},
    {"--max-body", "DIFFUSIOND_MAX_BODY", OPT_INT, F(max_body), 256, 64 << 20, "BYTES",
     "largest accepted request body (413 beyond)"},
    {"--max-upload", "DIFFUSIOND_MAX_UPLOAD", OPT_INT, F(max_upload), 1024, 256 << 20, "BYTES",
     "largest request body on routes that take images (img2img, edits, /generate with init_image)"},
    {"--max-images", "DIFFUSIOND_MAX_IMAGES", OPT_INT, F(max_images), 1, 16, "N",
     "images per request (num_images, n, batch_size x n_iter)"},
    {"--max-prompt", "DIFFUSIOND_MAX_PROMPT", OPT_INT, F(max_prompt), 1, 16384, "CHARS",
     "longest prompt or negative prompt, in characters"},
    {"--max-steps", "DIFFUSIOND_MAX_STEPS", OPT_INT, F(max_steps), 1, 1000, "N",
     "largest num_inference_steps"},
    {"--max-side", "DIFFUSIOND_MAX_SIDE", OPT_INT, F(max_side), 8, 2048, "PIXELS",
     "largest width or height"},
    {"--queue-capacity", "DIFFUSIOND_QUEUE_CAPACITY", OPT_INT, F(queue_capacity), 1, 1e7, "N",
     "pending tasks accepted before /generate answers 503"},
    {"--rate-limit", "DIFFUSIOND_RATE_LIMIT", OPT_NUM, F(rate_limit), 0, 1e6, "PER_MIN",
     "submissions per minute per client address (0: no limit; default: off when listening on loopback, 10 otherwise)"},
    {"--rate-burst", "DIFFUSIOND_RATE_BURST", OPT_INT, F(rate_burst), 1, 1e6, "N",
     "submissions a client may make at once before the rate applies"},
    {"--api-keys", "DIFFUSIOND_API_KEYS", OPT_STR, F(api_keys), 0, 0, "FILE",
     "require 'Authorization: Bearer KEY' with a key from FILE (one per line, # comments; SIGHUP rereads it)"},
    {"--cors-origins", "DIFFUSIOND_CORS_ORIGINS", OPT_STR, F(cors_origins), 0, 0, "LIST",
     "origins whose pages may call the API (comma-separated, or *); default: none"},
    {"--http-threads", "DIFFUSIOND_HTTP_THREADS", OPT_INT, F(http_threads), 1, 256, "N",
     "HTTP event-loop threads"},
    {"--max-connections", "DIFFUSIOND_MAX_CONNECTIONS", OPT_INT, F(max_connections), 1, 1e6,
     "N", "simultaneous HTTP connections (event streams included)"},
    {"--lease", "DIFFUSIOND_LEASE", OPT_INT, F(lease), 2, 86400, "SECONDS",
     "a running task whose worker is silent this long goes back to the queue"},
    {"--access-log", "DIFFUSIOND_ACCESS_LOG", OPT_STR, F(access_log), 0, 0, "FILE",
     "access log: - (stderr), off, or a file to append to"},
    {"--help", NULL, OPT_FLAG, F(help), 0, 0, NULL, "print this help and exit"},
};

#define NOPTS (sizeof opts / sizeof opts[0])

void config_defaults(struct server_config *c)
{
    memset(c, 0, sizeof *c);
    sd_bundled_model_path(c->default_model, sizeof c->default_model);
    c->model = c->default_model;
    c->variant = NULL;
    c->threads = 0;
    c->precision = "fp32";
    c->plan_size = 0;
    c->host = "127.0.0.1";
    c->port = 8000;
    c->data_dir = "./diffusiond-data";
    c->store = NULL;
    c->workers = 1;
    c->result_ttl = 24 * 3600;
    c->max_body = 64 * 1024;
    c->max_upload = 16 << 20;
    c->max_images = 8;
    c->max_prompt = 2000;
    c->max_steps = 150;
    c->max_side = 1024;
    c->queue_capacity = 100;
    c->rate_limit = -1; /* resolved at start-up from --host */
    c->rate_burst = 5;
    c->api_keys = NULL;
    c->http_threads = 4;
    c->max_connections = 1024;
    c->lease = 60;
    c->access_log = "-";
}

/* Parse and store one value; `who` names the flag or variable in errors. */
static int opt_set(struct server_config *c, const struct opt *o, const char *who,
                   const char *val, struct sd_err *err)
{
    char *field = (char *)c + o->off;
    char *end;
    switch (o->type) {
    case OPT_STR:
        if (!*val)
            return sd_errf(err, SD_ERR_ARG, "%s: empty value", who);
        *(const char **)field = val;
        return SD_OK;
    case OPT_FLAG:
        *(int *)field = 1;
        return SD_OK;
    case OPT_INT: {
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end || v < o->min || v > o->max)
            return sd_errf(err, SD_ERR_ARG, "%s: expected an integer in %.0f..%.0f, got '%s'",
                           who, o->min, o->max, val);
        *(long long *)field = v;
        return SD_OK;
    }
    case OPT_NUM: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(v) || v < o->min || v > o->max)
            return sd_errf(err, SD_ERR_ARG, "%s: expected a number in %g..%g, got '%s'", who,
                           o->min, o->max, val);
        *(double *)field = v;
        return SD_OK;
    }
    }
    return sd_errf(err, SD_ERR_INTERNAL, "%s: bad option type", who);
}

int config_load(struct server_config *c, int argc, char **argv,
                char *(*getenv_fn)(const char *), struct sd_err *err)
{
    for (size_t i = 0; getenv_fn && i < NOPTS; i++) {
        const char *v = opts[i].env ? getenv_fn(opts[i].env) : NULL;
        if (v) {
            int rc = opt_set(c, &opts[i], opts[i].env, v, err);
            if (rc)
                return rc;
        }
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const struct opt *o = NULL;
        for (size_t i = 0; i < NOPTS && !o; i++)
            if (strlen(opts[i].flag) == name_len && !strncmp(opts[i].flag, arg, name_len))
                o = &opts[i];
        if (!o && !strcmp(arg, "-h"))
            o = &opts[NOPTS - 1];
        if (!o)
            return sd_errf(err, SD_ERR_ARG, "unknown option '%s' (see --help)", arg);
        const char *val = NULL;
        if (o->type == OPT_FLAG) {
            if (eq)
                return sd_errf(err, SD_ERR_ARG, "%s takes no value", o->flag);
        } else if (eq) {
            val = eq + 1;
        } else if (a + 1 < argc) {
            val = argv[++a];
        } else {
            return sd_errf(err, SD_ERR_ARG, "%s: missing value", o->flag);
        }
        int rc = opt_set(c, o, o->flag, val ? val : "", err);
        if (rc)
            return rc;
    }
    if (sd_precision_from_name(c->precision) < 0)
        return sd_errf(err, SD_ERR_ARG, "--precision: expected fp32 or bf16, got '%s'", c->precision);
    if (c->prediction_type && strcmp(c->prediction_type, "epsilon") && strcmp(c->prediction_type, "v_prediction"))
        return sd_errf(err, SD_ERR_ARG, "--prediction-type: expected epsilon or v_prediction, got '%s'",
                       c->prediction_type);
    if (c->plan_size % 8)
        return sd_errf(err, SD_ERR_ARG, "--plan-size: expected a multiple of 8, got %lld", c->plan_size);
    if (c->store && strncmp(c->store, "redis://", 8))
        return sd_errf(err, SD_ERR_ARG, "--store: expected redis://HOST[:PORT][/DB], got '%s'", c->store);
    if (!c->workers && !c->store)
        return sd_errf(err, SD_ERR_ARG, "--workers 0 needs --store redis://... (an API node of a fleet)");
    if (c->images && strncmp(c->images, "s3://", 5))
        return sd_errf(err, SD_ERR_ARG, "--images: expected s3://BUCKET[/PREFIX], got '%s'", c->images);
    if (c->worker_only && !c->store)
        return sd_errf(err, SD_ERR_ARG, "diffusiond worker needs --store redis://...");
    return SD_OK;
}

void config_usage(FILE *f)
{
    struct server_config d;
    config_defaults(&d);
    fprintf(f, "usage: diffusiond serve [options]\n\n"
               "Serve text-to-image generation over HTTP (see docs/api.md).\n"
               "Every option can also be set by the environment variable shown.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        char head[96];
        snprintf(head, sizeof head, "%s%s%s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "  %-28s %s\n", head, o->help);
        const char *field = (const char *)&d + o->off;
        char def[4200] = "";
        if (o->type == OPT_STR && *(const char *const *)field)
            snprintf(def, sizeof def, "%s", *(const char *const *)field);
        else if (o->type == OPT_INT)
            snprintf(def, sizeof def, "%lld", *(const long long *)field);
        else if (o->type == OPT_NUM)
            snprintf(def, sizeof def, "%g", *(const double *)field);
        if (o->env)
            fprintf(f, "  %-28s [%s%s%s]\n", "", o->env, *def ? ", default " : "", def);
    }
}
