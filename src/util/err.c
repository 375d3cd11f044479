/* err.c - see err.h. */
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sd_errf(struct sd_err *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

int sd_err_prefix(struct sd_err *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    char prefix[SD_ERR_MSG_MAX], old[SD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s: %s", prefix, old);
    if (!e->code)
        e->code = code;
    return e->code;
}

const char *sd_strerror(int code)
{
    switch (code) {
    case SD_OK: return "ok";
    case SD_ERR_ARG: return "invalid argument";
    case SD_ERR_IO: return "i/o error";
    case SD_ERR_FORMAT: return "malformed data";
    case SD_ERR_UNSUPPORTED: return "unsupported";
    case SD_ERR_NOMEM: return "out of memory";
    case SD_ERR_CANCELLED: return "cancelled";
    case SD_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}

void sd_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "diffusiond: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
