/* sse.h - progress streams: GET /results/{id}/events as Server-Sent Events.
 *
 *     event: queued     data: {"task_id": ..., "status": "pending", "queue_position": 2}
 *     event: started    data: {"task_id": ..., "status": "processing", "started_at": ...}
 *     event: step       data: {"task_id": ..., "step": 3, "total_steps": 21}   (one per step)
 *     event: completed  data: {"task_id": ..., "status": "completed", "seed": ..., "image_url": ...}
 *     event: failed     data: {..., "error_message": ...}
 *     event: cancelled | expired
 *
 * and the stream ends after the last one. A line ": keepalive" goes out
 * every 15 s of silence.
 *
 * It waits without tying up an HTTP thread: the response body comes from
 * a content-reader callback that, when it has nothing to send, suspends
 * its connection through the hub (hub.h) and returns 0. The store is the
 * single source of truth, so a stream opened late (or after a restart)
 * sends the same events in the same order, steps included.
 */
#ifndef SD_SERVER_SSE_H
#define SD_SERVER_SSE_H

#include <microhttpd.h>
#include <stddef.h>

#include "server/hub.h"

struct server;
struct http_request;
struct sse_stream;

/* Answer r with an event stream for task id (known to exist). */
enum MHD_Result sse_respond(struct server *srv, struct http_request *r, const char *id);

/* For the access log: bytes sent so far; then drop the request's
 * reference. */
size_t sse_stream_bytes(struct sse_stream *s);
void sse_stream_release(struct sse_stream *s);

#endif
