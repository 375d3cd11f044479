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
    char old[SD_ERR_MSG_MAX];
    memcpy(old, e->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof e->msg ? (size_t)n : sizeof e->msg - 1;
    /* append ": old" within the buffer, truncating the tail if needed */
    size_t room = sizeof e->msg - 1 - len;
    if (room >= 2) {
        memcpy(e->msg + len, ": ", 2);
        len += 2;
        room -= 2;
        size_t ol = strnlen(old, sizeof old);
        if (ol > room)
            ol = room;
        memcpy(e->msg + len, old, ol);
        len += ol;
    }
    e->msg[len] = 0;
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
