/* fuzz_form.c - multipart/form-data and urlencoded bodies (OpenAI's image
 * edits) through a real libmicrohttpd daemon and form_parse.
 *
 * The post processor needs a connection, so the target runs a daemon on a
 * loopback port (started once) and sends each input as the body of a
 * POST over TCP; the first byte picks the Content-Type (with a fixed
 * boundary, with none, urlencoded, or a boundary taken from the input).
 * The handler checks the parsed form: at most FORM_MAX_PARTS parts, names
 * within bounds, every value NUL-terminated at its length.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/api/form.h"

struct fuzz_form_req {
    char *body;
    size_t len;
};

static void fuzz_form_check(const struct form *f)
{
    SD_ASSERT(f->n >= 0 && f->n <= FORM_MAX_PARTS);
    for (int i = 0; i < f->n; i++) {
        SD_ASSERT(strlen(f->parts[i].name) < FORM_NAME_MAX);
        SD_ASSERT(f->parts[i].data && f->parts[i].data[f->parts[i].len] == '\0');
        SD_ASSERT(form_get(f, f->parts[i].name, 0) != NULL);
    }
}

static enum MHD_Result fuzz_form_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                         const char *method, const char *version,
                                         const char *upload, size_t *upload_size, void **con_cls)
{
    struct fuzz_form_req *r = *con_cls;
    if (!r) {
        *con_cls = calloc(1, sizeof *r);
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        char *b = realloc(r->body, r->len + *upload_size + 1);
        if (!b)
            return MHD_NO;
        memcpy(b + r->len, upload, *upload_size);
        r->body = b;
        r->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    struct form f;
    struct sd_err err = {0};
    int rc = form_parse(conn, r->body ? r->body : "", r->len, &f, &err);
    if (rc == SD_OK)
        fuzz_form_check(&f);
    else
        SD_ASSERT(f.n == 0 && err.msg[0]);
    form_free(&f);
    static char ok[] = "ok";
    struct MHD_Response *resp = MHD_create_response_from_buffer(2, ok, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(conn, rc ? 400 : 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void fuzz_form_done(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    struct fuzz_form_req *r = *con_cls;
    if (r) {
        free(r->body);
        free(r);
    }
    *con_cls = NULL;
}

static int fuzz_form_port(void)
{
    static struct MHD_Daemon *d;
    static int port;
    if (!d) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fuzz_form_handler, NULL,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED,
                             fuzz_form_done, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 5u, MHD_OPTION_END);
        SD_ASSERT(d);
        port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    }
    return port;
}

int fuzz_form(const uint8_t *data, size_t len)
{
    if (len == 0)
        return 0;
    char ct[160];
    const uint8_t *body = data + 1;
    size_t n = len - 1;
    switch (data[0] % 4) {
    case 0: snprintf(ct, sizeof ct, "multipart/form-data; boundary=XyZ"); break;
    case 1: snprintf(ct, sizeof ct, "multipart/form-data"); break;
    case 2: snprintf(ct, sizeof ct, "application/x-www-form-urlencoded"); break;
    default: { /* boundary: the input's first line, up to 70 printable bytes */
        size_t k = 0;
        while (k < n && k < 70 && body[k] > ' ' && body[k] < 127 && body[k] != '"')
            k++;
        snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%.*s\"", (int)k, (const char *)body);
        break;
    }
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fuzz_form_port())};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    char head[400];
    int hl = snprintf(head, sizeof head,
                      "POST /v1/images/edits HTTP/1.1\r\nHost: f\r\nContent-Type: %s\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n", ct, n);
    /* MSG_NOSIGNAL: the daemon may close before reading it all. */
    if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) == hl &&
        (n == 0 || send(fd, body, n, MSG_NOSIGNAL) == (ssize_t)n)) {
        char buf[512];
        while (read(fd, buf, sizeof buf) > 0) /* until the daemon closes */
            ;
    }
    close(fd);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_form(data, size);
}
#endif
