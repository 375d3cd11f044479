/* routes.c - the route table and dispatch (see routes.h). */
#include "server/routes.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "server/auth.h"
#include "server/metrics.h"
#include "server/ratelimit.h"
#include "server/api/api.h"

const struct route routes[] = {
    /* method   pattern                          auth rate upl family      handler */
    {"GET",    "/",                              0,   0,   0,  API_NATIVE, api_page},
    {"GET",    "/health",                        0,   0,   0,  API_NATIVE, api_health},
    {"GET",    "/openapi.json",                  0,   0,   0,  API_NATIVE, api_openapi},
    {"GET",    "/models",                        1,   0,   0,  API_NATIVE, api_models},
    {"GET",    "/metrics",                       1,   0,   0,  API_NATIVE, api_metrics},
    {"POST",   "/generate",                      1,   1,   1,  API_NATIVE, api_generate},
    {"GET",    "/results/{task_id}",             1,   0,   0,  API_NATIVE, api_result},
    {"DELETE", "/results/{task_id}",             1,   0,   0,  API_NATIVE, api_cancel},
    {"POST",   "/results/{task_id}/cancel",      1,   0,   0,  API_NATIVE, api_cancel},
    {"GET",    "/results/{task_id}/image",       1,   0,   0,  API_NATIVE, api_result_image},
    {"GET",    "/results/{task_id}/events",      1,   0,   0,  API_NATIVE, api_result_events},
    /* AUTOMATIC1111 (api/a1111.c) */
    {"POST",   "/sdapi/v1/txt2img",              1,   1,   0,  API_A1111,  api_a1111_txt2img},
    {"POST",   "/sdapi/v1/img2img",              1,   1,   1,  API_A1111,  api_a1111_img2img},
    {"GET",    "/sdapi/v1/options",              1,   0,   0,  API_A1111,  api_a1111_options},
    {"POST",   "/sdapi/v1/options",              1,   0,   0,  API_A1111,  api_a1111_set_options},
    {"GET",    "/sdapi/v1/sd-models",            1,   0,   0,  API_A1111,  api_a1111_sd_models},
    {"GET",    "/sdapi/v1/samplers",             1,   0,   0,  API_A1111,  api_a1111_samplers},
    {"GET",    "/sdapi/v1/schedulers",           1,   0,   0,  API_A1111,  api_a1111_schedulers},
    {"GET",    "/sdapi/v1/upscalers",            1,   0,   0,  API_A1111,  api_a1111_empty_list},
    {"GET",    "/sdapi/v1/latent-upscale-modes", 1,   0,   0,  API_A1111,  api_a1111_empty_list},
    {"GET",    "/sdapi/v1/sd-vae",               1,   0,   0,  API_A1111,  api_a1111_empty_list},
    {"GET",    "/sdapi/v1/loras",                1,   0,   0,  API_A1111,  api_a1111_loras},
    {"GET",    "/sdapi/v1/scripts",              1,   0,   0,  API_A1111,  api_a1111_scripts},
    {"GET",    "/sdapi/v1/progress",             1,   0,   0,  API_A1111,  api_a1111_progress},
    {"POST",   "/sdapi/v1/interrupt",            1,   0,   0,  API_A1111,  api_a1111_interrupt},
    /* OpenAI Images (api/openai.c) */
    {"POST",   "/v1/images/generations",         1,   1,   0,  API_OPENAI, api_openai_generations},
    {"POST",   "/v1/images/edits",               1,   1,   1,  API_OPENAI, api_openai_edits},
    {"GET",    "/v1/images/files/{task_id}",     0,   0,   0,  API_OPENAI, api_openai_image_file},
    {"GET",    "/v1/models",                     1,   0,   0,  API_OPENAI, api_openai_models},
};
const int routes_count = (int)(sizeof routes / sizeof routes[0]);

/* Match path against pattern segment by segment; "{...}" takes one
 * non-empty segment into param. */
static int path_matches(const char *pattern, const char *path, char *param, size_t cap)
{
    while (*pattern && *path) {
        if (*pattern == '{') {
            const char *end = strchr(path, '/');
            size_t n = end ? (size_t)(end - path) : strlen(path);
            if (n == 0 || n >= cap)
                return 0;
            memcpy(param, path, n);
            param[n] = '\0';
            path += n;
            pattern = strchr(pattern, '}') + 1;
            continue;
        }
        if (*pattern++ != *path++)
            return 0;
    }
    return *pattern == '\0' && *path == '\0';
}

const struct route *route_match(const char *method, const char *path, char *param,
                                size_t param_cap, int *path_known, char *allow, size_t allow_cap)
{
    /* HEAD is GET without the body (libmicrohttpd drops it). */
    const char *m = strcmp(method, "HEAD") ? method : "GET";
    const struct route *found = NULL;
    *path_known = 0;
    if (allow_cap)
        allow[0] = '\0';
    for (int i = 0; i < routes_count; i++) {
        char tmp[64] = "";
        if (!path_matches(routes[i].pattern, path, tmp, sizeof tmp))
            continue;
        if (!strcmp(routes[i].method, m) && !found) {
            found = &routes[i];
            snprintf(param, param_cap, "%s", tmp);
        }
        *path_known = 1;
        size_t n = strlen(allow);
        if (n < allow_cap)
            snprintf(allow + n, allow_cap - n, "%s%s", n ? ", " : "", routes[i].method);
    }
    return found;
}

enum api_family routes_family(const char *path)
{
    if (!strncmp(path, "/v1/", 4))
        return API_OPENAI;
    if (!strncmp(path, "/sdapi/", 7))
        return API_A1111;
    return API_NATIVE;
}

size_t routes_body_limit(const struct server *srv, const char *method, const char *path)
{
    char param[64], allow[128];
    int known;
    const struct route *rt = route_match(method, path, param, sizeof param, &known, allow,
                                         sizeof allow);
    return (size_t)(rt && rt->upload ? srv->cfg.max_upload : srv->cfg.max_body);
}

/* One token of the client's submission budget: shared by every API node
 * when the store is (Redis), this process's otherwise; a store that cannot
 * answer falls back to this process's bucket. */
static int rate_take(struct server *srv, const char *client, double *retry)
{
    if (srv->cfg.rate_limit > 0 && srv->store.ops->rate_take) {
        int allowed = 1;
        if (srv->store.ops->rate_take(srv->store.ctx, client, srv->cfg.rate_limit,
                                      (int)srv->cfg.rate_burst, &allowed, retry, NULL) == SD_OK)
            return allowed;
    }
    return ratelimit_take(srv->ratelimit, client, now_mono(), retry);
}

/* An error in the family's shape. */
static enum MHD_Result reply_error(struct http_request *r, enum api_family fam, int status,
                                   const char *msg, const char *const *headers)
{
    if (fam == API_OPENAI)
        return api_openai_error(r, status, msg, NULL, NULL, headers);
    return http_reply_detail(r, status, msg, headers);
}

static enum MHD_Result unauthorized(struct http_request *r, enum api_family fam,
                                    const char *header)
{
    static const char *const bearer[] = {"WWW-Authenticate", "Bearer", NULL};
    static const char *const basic[] = {"WWW-Authenticate", "Basic realm=\"diffusiond\"", NULL};
    return reply_error(r, fam, 401, header ? "Invalid API key." : "Not authenticated",
                       fam == API_A1111 ? basic : bearer);
}

/* OPTIONS on any path: the methods it takes (CORS preflights get their
 * headers in http.c; SillyTavern's sd.cpp source pings with OPTIONS). */
static enum MHD_Result options(struct http_request *r, const char *allow, int known)
{
    char methods[160];
    snprintf(methods, sizeof methods, "%s%sOPTIONS", known ? allow : "", known ? ", " : "");
    const char *hdr[] = {"Allow", methods, NULL};
    return http_reply(r, 204, NULL, "", 0, 0, hdr);
}

enum MHD_Result routes_dispatch(struct server *srv, struct http_request *r)
{
    int path_known;
    char allow[128];
    enum api_family fam = routes_family(r->path);
    const struct route *rt = route_match(r->method, r->path, r->param, sizeof r->param,
                                         &path_known, allow, sizeof allow);
    if (!strcmp(r->method, "OPTIONS"))
        return options(r, allow, path_known);
    if (!rt) {
        if (!path_known)
            return reply_error(r, fam, 404, "Not Found", NULL);
        const char *hdr[] = {"Allow", allow, NULL};
        return reply_error(r, fam, 405, "Method Not Allowed", hdr);
    }
    r->route = rt;
    if (rt->auth && srv->auth) {
        const char *h = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth_check(srv->auth, h))
            return unauthorized(r, rt->family, h);
    }
    if (r->body_too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "Request body too large (limit %zu bytes).",
                 routes_body_limit(srv, r->method, r->path));
        return reply_error(r, rt->family, 413, msg, NULL);
    }
    double retry;
    if (rt->rate_limited && !rate_take(srv, r->client, &retry)) {
        metrics_count_rate_limited(srv->metrics);
        char secs[32], msg[128];
        snprintf(secs, sizeof secs, "%.0f", ceil(retry));
        snprintf(msg, sizeof msg, "Rate limit exceeded (%g requests per minute); retry in %s s.",
                 srv->cfg.rate_limit, secs);
        const char *hdr[] = {"Retry-After", secs, NULL};
        return reply_error(r, rt->family, 429, msg, hdr);
    }
    return rt->fn(srv, r);
}
