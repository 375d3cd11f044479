/* api_ops.c - /health, /metrics, /openapi.json and the web page. */
#include <stdlib.h>
#include <string.h>

#include "server/metrics.h"
#include "server/routes.h"

/* The seed's two fields, plus which model and, if it failed, why. Cheap:
 * no store access, so it answers instantly even under load. */
enum MHD_Result api_health(struct server *srv, struct http_request *r)
{
    json_t *o = json_pack("{s:s,s:s}", "status", "ok", "model_status",
                          srv->model ? "available" : "unavailable");
    if (srv->model)
        json_object_set_new(o, "model", json_string(sd_model_get_info(srv->model)->name));
    else
        json_object_set_new(o, "model_error", json_string(srv->model_error));
    static const char *const hdr[] = {"Cache-Control", "no-store", NULL};
    return http_reply_json(r, 200, o, hdr);
}

enum MHD_Result api_metrics(struct server *srv, struct http_request *r)
{
    long long counts[TASK_STATUS_COUNT];
    struct sd_err err = {0};
    int have = store_counts(&srv->store, counts, &err) == SD_OK;
    if (!have)
        server_log("metrics: counting tasks failed: %s", err.msg);
    size_t len = 0;
    char *text = metrics_render(srv->metrics, have ? counts : NULL, srv->model != NULL, &len);
    if (!text)
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    return http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, 1, NULL);
}

enum MHD_Result api_openapi(struct server *srv, struct http_request *r)
{
    return http_reply(r, 200, "application/json", srv->openapi, strlen(srv->openapi), 0, NULL);
}

enum MHD_Result api_page(struct server *srv, struct http_request *r)
{
    static const char *const hdr[] = {
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self' 'unsafe-inline'",
        NULL};
    return http_reply(r, 200, "text/html; charset=utf-8", webpage_html, strlen(webpage_html), 0,
                      hdr);
}
