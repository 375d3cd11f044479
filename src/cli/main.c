/* main.c - diffusiond: dispatch to a command. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: diffusiond <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate   generate one image from a prompt and write it as PNG\n"
            "  serve      run the HTTP API (POST /generate, GET /results/{id}, ...)\n"
            "  worker     run inference for a Redis fleet (--store redis://...)\n"
            "\n"
            "`diffusiond <command> --help` lists a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate"))
        return cli_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve"))
        return cli_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "worker"))
        return cli_worker(argc - 1, argv + 1);
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "diffusiond: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
