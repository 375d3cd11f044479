/* fuzz_http_request.c - the parsers of untrusted HTTP input in the server:
 * /generate bodies (json_api.c) and URL paths (routes.c).
 *
 * Input: byte 0 picks a Content-Type, the rest is the body, and the same
 * bytes are also tried as a request path. Besides "no crash, no leak", it
 * checks that an accepted request survives the trip through the store
 * (gen_request_to_json -> text -> gen_request_from_text) unchanged, which
 * is what the worker relies on.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/json_api.h"
#include "server/routes.h"
#include "server/api/api.h"

static int http_same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static void http_check_roundtrip(const struct gen_request *req)
{
    json_t *j = gen_request_to_json(req);
    char *text = j ? json_api_dumps(j, NULL) : NULL;
    json_decref(j);
    if (!text)
        return; /* out of memory */
    struct gen_request back;
    struct sd_err err = {0};
    if (gen_request_from_text(text, &back, &err) != SD_OK)
        abort(); /* the worker could not read what the server stored */
    if (!http_same_str(req->prompt, back.prompt) ||
        !http_same_str(req->negative_prompt, back.negative_prompt) || req->steps != back.steps ||
        req->guidance != back.guidance || req->has_seed != back.has_seed ||
        req->seed != back.seed || req->width != back.width || req->height != back.height ||
        req->scheduler != back.scheduler || req->eta != back.eta ||
        req->clip_skip != back.clip_skip)
        abort();
    gen_request_free(&back);
    free(text);
}

int fuzz_http_request(const uint8_t *data, size_t len)
{
    static const char *const ctypes[] = {NULL, "application/json",
                                         "application/json; charset=utf-8", "text/plain",
                                         "application/problem+json"};
    if (len == 0)
        return 0;
    const char *ct = ctypes[data[0] % 5];
    const char *body = (const char *)data + 1;
    size_t n = len - 1;

    struct api_limits lim = {2000, 150, 1024, 8, 1 << 20, 0};
    struct gen_request req;
    json_t *detail = NULL;
    int rc = api_parse_generate(body, n, ct, &lim, &req, &detail);
    if (rc == SD_OK) {
        http_check_roundtrip(&req);
        gen_request_free(&req);
    } else if (detail) {
        free(json_api_dumps(detail, NULL));
        json_decref(detail);
    }

    char *path = malloc(n + 1);
    if (!path)
        return 0;
    memcpy(path, body, n);
    path[n] = '\0';
    char param[64], allow[128];
    int known;
    static const char *const methods[] = {"GET", "POST", "DELETE", "HEAD", "PUT"};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        const struct route *rt =
            route_match(methods[i], path, param, sizeof param, &known, allow, sizeof allow);
        if (rt && strchr(rt->pattern, '{') && (!param[0] || strchr(param, '/')))
            abort(); /* a path parameter is one non-empty segment */
    }
    free(path);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_http_request(data, size);
}
#endif
