/* serve.c - `diffusiond serve [options]` and `diffusiond worker [options]`:
 * parse options, run the service (or a worker of a Redis fleet).
 *
 * src/cli/main.c dispatches the "serve" subcommand here with argv[0] =
 * "serve". Exit codes: 0 clean shutdown or --help, 2 bad options, 1 the
 * service could not start.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "server/config.h"
#include "server/server.h"

static int run(int argc, char **argv, int worker_only)
{
    struct server_config cfg;
    struct sd_err err = {0};
    config_defaults(&cfg);
    cfg.worker_only = worker_only;
    if (config_load(&cfg, argc, argv, getenv, &err)) {
        fprintf(stderr, "diffusiond %s: %s\n", worker_only ? "worker" : "serve", err.msg);
        return 2;
    }
    if (cfg.help) {
        config_usage(stdout);
        return 0;
    }
    /* libcurl (S3 images) wants its global set-up before any thread. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fprintf(stderr, "diffusiond: libcurl failed to initialise\n");
        return 1;
    }
    int rc = server_run(&cfg);
    curl_global_cleanup();
    return rc;
}

int cli_serve(int argc, char **argv)
{
    return run(argc, argv, 0);
}

/* `diffusiond worker --store redis://... --model M`: the engine and one
 * worker, no HTTP; the same options as serve (those of HTTP unused). */
int cli_worker(int argc, char **argv)
{
    return run(argc, argv, 1);
}
