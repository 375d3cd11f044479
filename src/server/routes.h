/* routes.h - every endpoint is one row of the table in routes.c.
 *
 * A row names the method, the path pattern (one "{task_id}" segment at
 * most), whether an API key is required (when keys are configured) and
 * whether the per-client rate limit applies, and the handler. Dispatch
 * checks, in order: route (404/405), API key (401), body size (413), rate
 * limit (429); then the handler runs. /openapi.json is written from the
 * same facts, and a unit test checks that the two agree.
 */
#ifndef SD_SERVER_ROUTES_H
#define SD_SERVER_ROUTES_H

#include "server/http.h"
#include "server/api/json_api.h"

typedef enum MHD_Result (*route_fn)(struct server *srv, struct http_request *r);

struct route {
    const char *method;
    const char *pattern;
    int auth;          /* needs a key when --api-keys is set */
    int rate_limited;  /* counts against the client's submission budget */
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

#endif
