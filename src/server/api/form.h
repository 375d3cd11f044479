/* api/form.h - HTML form bodies (multipart/form-data, urlencoded), parsed
 * by libmicrohttpd's post processor over a body already read in full.
 *
 * Untrusted bytes: fuzzed through a real daemon (tests/fuzz/fuzz_form.c).
 * At most FORM_MAX_PARTS parts; the body's size bounds the rest.
 */
#ifndef SD_SERVER_API_FORM_H
#define SD_SERVER_API_FORM_H

#include <microhttpd.h>
#include <stddef.h>

#include "util/err.h"

#define FORM_MAX_PARTS 32
#define FORM_NAME_MAX 64

struct form_part {
    char name[FORM_NAME_MAX]; /* the field name (truncated names are refused) */
    int is_file;              /* sent with a filename */
    char *data;               /* malloc'd, NUL-terminated (files may hold NULs) */
    size_t len;
};

struct form {
    struct form_part parts[FORM_MAX_PARTS];
    int n;
};

/* Parse body (the request's Content-Type, read from conn, picks the
 * format and boundary). SD_ERR_FORMAT with a message for a body that is
 * not a well-formed form (no boundary, truncated, too many parts);
 * SD_ERR_NOMEM. On failure f holds nothing. */
int form_parse(struct MHD_Connection *conn, const char *body, size_t len, struct form *f,
               struct sd_err *err);
void form_free(struct form *f);
/* The first part named name, or the k-th (0-based) of that name. NULL if
 * none. */
const struct form_part *form_get(const struct form *f, const char *name, int k);

#endif
