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
    /* method   pattern                        auth rate handler */
    {"GET",    "/",                            0,   0,   api_page},
    {"GET",    "/health",                      0,   0,   api_health},
    {"GET",    "/openapi.json",                0,   0,   api_openapi},
    {"GET",    "/models",                      1,   0,   api_models},
    {"GET",    "/metrics",                     1,   0,   api_metrics},
    {"POST",   "/generate",                    1,   1,   api_generate},
    {"GET",    "/results/{task_id}",           1,   0,   api_result},
    {"DELETE", "/results/{task_id}",           1,   0,   api_cancel},
    {"POST",   "/results/{task_id}/cancel",    1,   0,   api_cancel},
    {"GET",    "/results/{task_id}/image",     1,   0,   api_result_image},
    {"GET",    "/results/{task_id}/events",    1,   0,   api_result_events},
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
        char tmp[64];
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

static enum MHD_Result unauthorized(struct http_request *r, const char *header)
{
    static const char *const hdr[] = {"WWW-Authenticate", "Bearer", NULL};
    return http_reply_detail(r, 401, header ? "Invalid API key." : "Not authenticated", hdr);
}

enum MHD_Result routes_dispatch(struct server *srv, struct http_request *r)
{
    int path_known;
    char allow[128];
    const struct route *rt = route_match(r->method, r->path, r->param, sizeof r->param,
                                         &path_known, allow, sizeof allow);
    if (!rt) {
        if (!path_known)
            return http_reply_detail(r, 404, "Not Found", NULL);
        const char *hdr[] = {"Allow", allow, NULL};
        return http_reply_detail(r, 405, "Method Not Allowed", hdr);
    }
    r->route = rt;
    if (rt->auth && srv->auth) {
        const char *h = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth_check(srv->auth, h))
            return unauthorized(r, h);
    }
    if (r->body_too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "Request body too large (limit %lld bytes).",
                 srv->cfg.max_body);
        return http_reply_detail(r, 413, msg, NULL);
    }
    double retry;
    if (rt->rate_limited && !ratelimit_take(srv->ratelimit, r->client, now_mono(), &retry)) {
        metrics_count_rate_limited(srv->metrics);
        char secs[32], msg[128];
        snprintf(secs, sizeof secs, "%.0f", ceil(retry));
        snprintf(msg, sizeof msg, "Rate limit exceeded (%g requests per minute); retry in %s s.",
                 srv->cfg.rate_limit, secs);
        const char *hdr[] = {"Retry-After", secs, NULL};
        return http_reply_detail(r, 429, msg, hdr);
    }
    return rt->fn(srv, r);
}
