/* err.h - error codes and messages shared by every module.
 *
 * Functions that can fail because of their input or environment return an
 * int status (SD_OK = 0, or one of the SD_ERR_* codes) and, when given a
 * non-NULL `struct sd_err *`, leave a one-line human readable message in it
 * ("unet/config.json: block_out_channels must be a list of ints").
 * Programmer errors (broken invariants) use SD_ASSERT, which aborts.
 */
#ifndef SD_ERR_H
#define SD_ERR_H

#include <stddef.h>

enum sd_status {
    SD_OK = 0,
    SD_ERR_ARG = 1,          /* invalid argument / parameter value */
    SD_ERR_IO = 2,           /* file missing, unreadable, write failed */
    SD_ERR_FORMAT = 3,       /* malformed input data (corrupt file, bad JSON) */
    SD_ERR_UNSUPPORTED = 4,  /* well-formed but not supported (class, dtype) */
    SD_ERR_NOMEM = 5,        /* allocation failed */
    SD_ERR_CANCELLED = 6,    /* caller asked to stop */
    SD_ERR_INTERNAL = 7,     /* a library call failed unexpectedly */
};

#define SD_ERR_MSG_MAX 512

struct sd_err {
    int code;
    char msg[SD_ERR_MSG_MAX];
};

/* Record `code` and a printf-style message in `e` (if non-NULL); returns code
 * so callers can write `return sd_errf(err, SD_ERR_IO, "%s: ...", path);`. */
int sd_errf(struct sd_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix the message already in `e` with "prefix: " (for adding context such
 * as a file name on the way up); returns e->code (or code if e is NULL). */
int sd_err_prefix(struct sd_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Static name of a status code ("io error", ...). */
const char *sd_strerror(int code);

void sd_assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));

/* Always-on invariant check: a failure is a bug in diffusiond, never input. */
#define SD_ASSERT(x) ((x) ? (void)0 : sd_assert_fail(#x, __FILE__, __LINE__))

#endif
