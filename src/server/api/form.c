/* api/form.c - see form.h. */
#include "server/api/form.h"

#include <stdlib.h>
#include <string.h>

struct parse_state {
    struct form *f;
    int error;      /* 1: too many parts / bad name, 2: out of memory */
};

/* Called for each piece of each value: off == 0 starts a new part. */
static enum MHD_Result on_value(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *filename, const char *content_type,
                                const char *transfer_encoding, const char *data, uint64_t off,
                                size_t size)
{
    struct parse_state *ps = cls;
    struct form *f = ps->f;
    if (!key) /* libmicrohttpd passes NULL for a part without a name */
        key = "";
    struct form_part *p = f->n ? &f->parts[f->n - 1] : NULL;
    if (off == 0 || !p || strcmp(p->name, key)) {
        if (f->n == FORM_MAX_PARTS || strlen(key) >= FORM_NAME_MAX) {
            ps->error = 1;
            return MHD_NO;
        }
        p = &f->parts[f->n++];
        memset(p, 0, sizeof *p);
        memcpy(p->name, key, strlen(key) + 1);
        p->is_file = filename != NULL;
    }
    if (off != p->len) { /* pieces arrive in order; anything else is a parser bug */
        ps->error = 1;
        return MHD_NO;
    }
    char *d = realloc(p->data, p->len + size + 1);
    if (!d) {
        ps->error = 2;
        return MHD_NO;
    }
    if (size)
        memcpy(d + p->len, data, size);
    p->len += size;
    d[p->len] = '\0';
    p->data = d;
    return MHD_YES;
}

int form_parse(struct MHD_Connection *conn, const char *body, size_t len, struct form *f,
               struct sd_err *err)
{
    memset(f, 0, sizeof *f);
    struct parse_state ps = {f, 0};
    struct MHD_PostProcessor *pp = MHD_create_post_processor(conn, 64 * 1024, on_value, &ps);
    if (!pp)
        return sd_errf(err, SD_ERR_FORMAT,
                       "the body must be multipart/form-data with a boundary (or "
                       "application/x-www-form-urlencoded)");
    enum MHD_Result ok = len ? MHD_post_process(pp, body, len) : MHD_YES;
    enum MHD_Result clean = MHD_destroy_post_processor(pp);
    if (ps.error == 2) {
        form_free(f);
        return sd_errf(err, SD_ERR_NOMEM, "out of memory reading the form");
    }
    if (ps.error == 1) {
        form_free(f);
        return sd_errf(err, SD_ERR_FORMAT, "the form has more than %d parts or a field name over %d bytes",
                       FORM_MAX_PARTS, FORM_NAME_MAX - 1);
    }
    if (ok != MHD_YES || clean != MHD_YES) {
        form_free(f);
        return sd_errf(err, SD_ERR_FORMAT, "the multipart body is malformed or truncated");
    }
    return SD_OK;
}

void form_free(struct form *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->parts[i].data);
    memset(f, 0, sizeof *f);
}

const struct form_part *form_get(const struct form *f, const char *name, int k)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->parts[i].name, name) && k-- == 0)
            return &f->parts[i];
    return NULL;
}
