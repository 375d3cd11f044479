/* cli.h - the diffusiond command line: `diffusiond generate ...` writes one
 * image, `diffusiond serve ...` runs the HTTP service. Each command parses
 * its own options and returns the process exit status (0 ok, 1 failure,
 * 2 bad usage). */
#ifndef SD_CLI_H
#define SD_CLI_H

int cli_generate(int argc, char **argv); /* generate.c */
int cli_serve(int argc, char **argv);
int cli_worker(int argc, char **argv);    /* serve.c */

#endif
