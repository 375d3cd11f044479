/* test_server_routes.c - the route table (routes.c) and /openapi.json. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "server/routes.h"
#include "server/api/api.h"
#include "test.h"

TEST(server_routes_match)
{
    char param[64], allow[128];
    int known;
    const struct route *r =
        route_match("GET", "/results/abc", param, sizeof param, &known, allow, sizeof allow);
    CHECK(r && !strcmp(r->pattern, "/results/{task_id}") && !strcmp(param, "abc"));
    CHECK(!strcmp(allow, "GET, DELETE"));
    r = route_match("POST", "/results/abc/cancel", param, sizeof param, &known, allow,
                    sizeof allow);
    CHECK(r && r->fn == api_cancel && !strcmp(param, "abc"));
    r = route_match("HEAD", "/health", param, sizeof param, &known, allow, sizeof allow);
    CHECK(r && r->fn == api_health);
    r = route_match("PUT", "/generate", param, sizeof param, &known, allow, sizeof allow);
    CHECK(!r && known && !strcmp(allow, "POST"));
    r = route_match("GET", "/results/", param, sizeof param, &known, allow, sizeof allow);
    CHECK(!r && !known); /* an empty segment is no task id */
    r = route_match("GET", "/results/a/b", param, sizeof param, &known, allow, sizeof allow);
    CHECK(!r && !known);
    r = route_match("GET", "/health/", param, sizeof param, &known, allow, sizeof allow);
    CHECK(!r && !known);
    r = route_match("GET", "", param, sizeof param, &known, allow, sizeof allow);
    CHECK(!r && !known);
    char long_path[200] = "/results/";
    memset(long_path + 9, 'a', 100);
    r = route_match("GET", long_path, param, sizeof param, &known, allow, sizeof allow);
    CHECK(!r); /* a segment longer than any id */
}

TEST(server_openapi_covers_routes)
{
    json_error_t e;
    struct api_limits lim = {.max_prompt = 321, .max_steps = 77, .max_side = 640};
    char *text = openapi_render(&lim);
    CHECK(text != NULL);
    json_t *doc = text ? json_loads(text, 0, &e) : NULL;
    free(text);
    CHECK_MSG(doc != NULL, "openapi.json: %s at line %d", e.text, e.line);
    if (!doc)
        return;
    /* The request schema shows this server's limits. */
    json_t *props = json_object_get(
        json_object_get(json_object_get(json_object_get(doc, "components"), "schemas"),
                        "GenerationRequest"),
        "properties");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(props, "prompt"), "maxLength")),
                 321);
    CHECK_EQ_INT(json_integer_value(
                     json_object_get(json_object_get(props, "num_inference_steps"), "maximum")),
                 77);
    json_t *width = json_array_get(json_object_get(json_object_get(props, "width"), "anyOf"), 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(width, "maximum")), 640);
    json_t *paths = json_object_get(doc, "paths");
    for (int i = 0; i < routes_count; i++) {
        char method[16];
        size_t n = strlen(routes[i].method);
        for (size_t k = 0; k <= n; k++)
            method[k] = (char)tolower((unsigned char)routes[i].method[k]);
        json_t *op = json_object_get(json_object_get(paths, routes[i].pattern), method);
        CHECK_MSG(op != NULL, "%s %s is not documented", routes[i].method, routes[i].pattern);
        /* The document says which operations need a key, as the table does. */
        CHECK_MSG((json_object_get(op, "security") != NULL) == routes[i].auth,
                  "%s %s: security does not match the table", routes[i].method,
                  routes[i].pattern);
    }
    size_t documented = 0;
    const char *key;
    json_t *item;
    json_object_foreach(paths, key, item)
        documented += json_object_size(item);
    CHECK_EQ_INT(documented, routes_count); /* and nothing more */
    json_decref(doc);
}
