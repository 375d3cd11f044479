/* serve.c - `diffusiond serve [options]`: parse options, run the service.
 *
 * src/cli/main.c dispatches the "serve" subcommand here with argv[0] =
 * "serve". Exit codes: 0 clean shutdown or --help, 2 bad options, 1 the
 * service could not start.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "server/config.h"
#include "server/server.h"

int cli_serve(int argc, char **argv)
{
    struct server_config cfg;
    struct sd_err err = {0};
    config_defaults(&cfg);
    if (config_load(&cfg, argc, argv, getenv, &err)) {
        fprintf(stderr, "diffusiond serve: %s\n", err.msg);
        return 2;
    }
    if (cfg.help) {
        config_usage(stdout);
        return 0;
    }
    return server_run(&cfg);
}
