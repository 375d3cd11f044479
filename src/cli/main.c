/* main.c - diffusiond: dispatch to a command. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "tensor/cpu.h"

#define DIFFUSIOND_VERSION "0.6.0"
#ifndef DIFFUSIOND_GIT /* set by the Makefile from git describe */
#define DIFFUSIOND_GIT "unknown"
#endif

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
            "`diffusiond <command> --help` lists a command's options; `diffusiond --version`\n"
            "names the build and the CPU kernels in use.\n");
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
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("diffusiond %s (%s)\n", DIFFUSIOND_VERSION, DIFFUSIOND_GIT);
        printf("cpu: %s\n", cpu_describe());
        printf("kernels built: up to %s\n", cpu_level_name(cpu_built_level()));
        enum cpu_level top = cpu_detect() < cpu_built_level() ? cpu_detect() : cpu_built_level();
        printf("levels this CPU runs:");
        for (int l = CPU_BASELINE; l <= (int)top; l++)
            printf(" %s", cpu_level_name((enum cpu_level)l));
        printf("\n");
        printf("--precision bf16: %s\n", cpu_bf16_native()
                                            ? "bf16 products (AVX512-BF16), float32 sums"
                                            : "bf16 weights widened for float32 products (no bf16 dot products)");
        return 0;
    }
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "diffusiond: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
