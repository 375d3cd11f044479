/* config.h - `diffusiond serve` options: flags, environment, defaults.
 *
 * Every option is one row of a table in config.c: a flag (--port), an
 * environment variable (DIFFUSIOND_PORT), a type with bounds, a default and
 * a help line. Precedence: flag > environment > default.
 *
 *     struct server_config c;
 *     config_defaults(&c);
 *     if (config_load(&c, argc, argv, getenv, &err)) { fprintf(stderr, "%s\n", err.msg); ... }
 *     if (c.help) config_usage(stdout);
 *
 * String options point into argv or the environment (both outlive the
 * process' use of the config) or into the config itself; nothing to free.
 */
#ifndef SD_SERVER_CONFIG_H
#define SD_SERVER_CONFIG_H

#include <stdio.h>

#include "util/err.h"

struct server_config {
    const char *model;       /* diffusers folder or single file; default: the repo's tiny model */
    const char *variant;     /* weight variant ("fp16") or NULL */
    const char *config;      /* single files: configs folder or bundled name, or NULL */
    const char *vae;         /* a VAE to use instead of the model's, or NULL */
    const char *prediction_type; /* "epsilon", "v_prediction" or NULL (the config's) */
    const char *lora_dir;    /* where LoRA names resolve, or NULL (no LoRAs) */
    long long threads;       /* engine compute threads, 0 = all cores */
    const char *precision;   /* "fp32" or "bf16" */
    long long plan_size;     /* image side the engine plans for, 0 = the model's default */
    const char *host;        /* listen address */
    long long port;          /* 0 picks a free port (printed at start) */
    const char *data_dir;    /* SQLite database and images */
    const char *store;       /* redis://... : tasks in Redis (shared); NULL: SQLite in data_dir */
    long long workers;       /* embedded inference workers: 1, or 0 for an API node */
    const char *images;      /* s3://BUCKET[/PREFIX]: images in object storage; NULL: in the store */
    const char *s3_endpoint; /* http(s)://HOST[:PORT] of an S3-compatible service; NULL: AWS */
    int worker_only;         /* `diffusiond worker`: no HTTP, a worker for the store */
    long long result_ttl;    /* seconds a finished result is kept */
    long long max_body;      /* request body bytes */
    long long max_upload;    /* request body bytes on routes that take images */
    long long max_images;    /* images per request */
    long long max_prompt;    /* characters, prompt and negative prompt */
    long long max_steps;     /* num_inference_steps upper bound */
    long long max_side;      /* width/height upper bound, pixels */
    long long queue_capacity;/* pending tasks before 503 */
    double rate_limit;       /* submissions per minute per client, 0 = off, < 0 = the
                              * default for the address: off on loopback, 10 elsewhere */
    long long rate_burst;    /* bucket size */
    const char *api_keys;    /* file with one key per line, or NULL = open */
    const char *cors_origins;/* comma-separated origins allowed cross-origin, "*", or NULL */
    long long http_threads;  /* libmicrohttpd thread pool size */
    long long max_connections;
    long long lease;         /* seconds a claimed task stays owned without heartbeat */
    const char *access_log;  /* "-" = stderr, "off", or a file path */
    int help;

    char default_model[4096]; /* storage for the resolved default model path */
};

/* Fill in every default (the bundled model is resolved from the running
 * executable: <exe dir>/../tests/data/tiny-sd1). */
void config_defaults(struct server_config *c);

/* Apply environment variables (through getenv_fn, so tests can fake it),
 * then argv (argv[0] is the subcommand name and is skipped). Accepts
 * "--flag value" and "--flag=value". Fails on unknown flags, missing values
 * and values that do not parse or are out of range, naming the option. */
int config_load(struct server_config *c, int argc, char **argv,
                char *(*getenv_fn)(const char *), struct sd_err *err);

/* The --help text: every flag, its variable, default and meaning. */
void config_usage(FILE *f);

#endif
