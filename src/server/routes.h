/* routes.h - every endpoint is one row of the table in routes.c.
 *
 * A row names the method, the path pattern (one "{task_id}" segment at
 * most), whether an API key is required (when keys are configured),
 * whether the per-client rate limit applies, whether the body may carry
 * images (then --max-upload bounds it rather than --max-body), the API
 * family (whose error shape dispatch answers in), and the handler.
 * Dispatch checks, in order: route (404/405; OPTIONS on any path is a
 * 204 with the methods allowed), API key (401), body size (413), rate
 * limit (429); then the handler runs. /openapi.json is written from the
 * same facts, and a unit test checks that the two agree.
 */
#ifndef SD_SERVER_ROUTES_H
#define SD_SERVER_ROUTES_H

#include "server/http.h"
#include "server/api/json_api.h"

typedef enum MHD_Result (*route_fn)(struct server *srv, struct http_request *r);

enum api_family {
    API_NATIVE, /* errors {"detail": ...} (FastAPI's, as the seed's) */
    API_A1111,  /* the same shape, with WWW-Authenticate: Basic on 401 */
    API_OPENAI, /* {"error": {"message", "type", "param", "code"}} */
};

struct route {
    const char *method;
    const char *pattern;
    int auth;          /* needs a key when --api-keys is set */
    int rate_limited;  /* counts against the client's submission budget */
    int upload;        /* the body may carry images: --max-upload applies */
    enum api_family family;
    route_fn fn;
};

extern const struct route routes[];
extern const int routes_count;

/* The route for method and path, with the {task_id} segment copied into
 * param; NULL when none matches, with *path_known = 1 when the path exists
 * under another method (405) and the methods it allows listed in allow. */
const struct route *route_match(const char *method, const char *path, char *param,
                                size_t param_cap, int *path_known, char *allow,
                                size_t allow_cap);

enum MHD_Result routes_dispatch(struct server *srv, struct http_request *r);

/* The body limit for a request to method + path (before it is read). */
size_t routes_body_limit(const struct server *srv, const char *method, const char *path);

/* The family a path belongs to (for errors before or without a route). */
enum api_family routes_family(const char *path);

#endif
