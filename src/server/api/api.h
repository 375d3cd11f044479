/* api/api.h - the door to the API layer: one handler per route.
 *
 * Each file here is one family of routes; routes.c maps method + path to
 * these functions after auth, body size and rate limit are checked.
 *
 *     generate.c   POST /generate (the seed's contract)
 *     results.c    GET /results/{id}, /image, /events; cancellation
 *     ops.c        /health, /models, /metrics, /openapi.json, the page
 *     json_api.c   the native request: validation with FastAPI's errors
 *     openapi.c    the OpenAPI document; webpage.c the page
 */
#ifndef SD_SERVER_API_API_H
#define SD_SERVER_API_API_H

#include "server/http.h"
#include "server/api/json_api.h"

/* Handlers. */
enum MHD_Result api_generate(struct server *srv, struct http_request *r);
enum MHD_Result api_result(struct server *srv, struct http_request *r);
enum MHD_Result api_result_image(struct server *srv, struct http_request *r);
enum MHD_Result api_result_events(struct server *srv, struct http_request *r);
enum MHD_Result api_cancel(struct server *srv, struct http_request *r);
enum MHD_Result api_health(struct server *srv, struct http_request *r);
enum MHD_Result api_models(struct server *srv, struct http_request *r);
enum MHD_Result api_metrics(struct server *srv, struct http_request *r);
enum MHD_Result api_openapi(struct server *srv, struct http_request *r);
enum MHD_Result api_page(struct server *srv, struct http_request *r);

/* The OpenAPI 3.1 document for these limits (openapi.c): malloc'd JSON
 * text, NULL when out of memory. */
char *openapi_render(const struct api_limits *lim);

/* The web page (webpage.c). */
extern const char webpage_html[];

#endif
