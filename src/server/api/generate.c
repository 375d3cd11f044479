/* api/generate.c - POST /generate: validate, queue, answer 202.
 *
 * Order of checks, as in the seed: the body is validated first (422), then
 * the model must be loaded (503), then the engine checks the values against
 * the model (422), then the queue must have room (503 + Retry-After).
 * The task is durable (in the store) before 202 goes out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/api.h"

static enum MHD_Result value_error(struct http_request *r, json_t *body, const char *msg)
{
    char text[SD_ERR_MSG_MAX + 16];
    snprintf(text, sizeof text, "Value error, %s", msg);
    json_t *ctx = json_pack("{s:s}", "error", msg);
    json_t *item = api_error_item("value_error", NULL, text, body, ctx);
    json_decref(ctx);
    return http_reply_json(r, 422, json_pack("{s:[o]}", "detail", item), NULL);
}

enum MHD_Result api_generate(struct server *srv, struct http_request *r)
{
    struct gen_request req;
    json_t *detail = NULL;
    int rc = api_parse_generate(r->body ? r->body : "", r->body_len,
                                http_header(r, MHD_HTTP_HEADER_CONTENT_TYPE), &srv->limits, &req,
                                &detail);
    if (rc == SD_ERR_ARG)
        return http_reply_json(r, 422, json_pack("{s:o}", "detail", detail), NULL);
    if (rc)
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    struct submission sub;
    enum submit_status st = api_submit(srv, &req, &sub);
    gen_request_free(&req);
    char secs[32], location[64];
    snprintf(secs, sizeof secs, "%ld", sub.retry_after);
    switch (st) {
    case SUBMIT_QUEUED: {
        snprintf(location, sizeof location, "/results/%s", sub.id);
        const char *hdr[] = {"Location", location, "Retry-After", secs, NULL};
        json_t *body = json_pack("{s:s,s:s,s:s,s:i,s:I}", "task_id", sub.id, "status", "pending",
                                 "message", "Task received and queued for processing.",
                                 "queue_position", sub.position, "seed", (json_int_t)sub.seed);
        return http_reply_json(r, 202, body, hdr);
    }
    case SUBMIT_INVALID: {
        /* The body as input, without the image data it may carry. */
        json_t *body = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, NULL);
        if (json_is_object(body)) {
            if (json_is_string(json_object_get(body, "init_image")))
                json_object_set_new(body, "init_image", json_string("<image data>"));
            if (json_is_string(json_object_get(body, "mask")))
                json_object_set_new(body, "mask", json_string("<image data>"));
        }
        enum MHD_Result ret = value_error(r, body, sub.message);
        json_decref(body);
        return ret;
    }
    case SUBMIT_NO_MODEL:
        return http_reply_detail(r, 503, sub.message, NULL);
    case SUBMIT_UNAVAILABLE:
    case SUBMIT_FULL: {
        const char *hdr[] = {"Retry-After", secs, NULL};
        return http_reply_detail(r, 503, sub.message, hdr);
    }
    case SUBMIT_FAILED:
        break;
    }
    return http_reply_detail(r, 500, sub.message, NULL);
}
