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
 * How it waits without tying up HTTP threads: the response body comes from
 * a content-reader callback. When it has nothing to send it suspends its
 * connection (libmicrohttpd's suspend/resume) and returns 0; the thread
 * serves other connections meanwhile. Whoever changes a task (the worker,
 * a cancel) calls hub_notify(), which resumes the streams watching it; the
 * reader then reads the task from the store and sends what changed. The
 * store is the single source of truth, so a stream opened late (or after a
 * restart) sends the same events in the same order, steps included.
 *
 * A global change counter closes the race between "read the store, found
 * nothing new" and "suspend": the reader suspends only if no notification
 * arrived since it read.
 */
#ifndef SD_SERVER_SSE_H
#define SD_SERVER_SSE_H

#include <microhttpd.h>
#include <stddef.h>

struct server;
struct http_request;
struct hub;
struct sse_stream;

/* The hub starts a keepalive thread. NULL when out of memory. */
struct hub *hub_new(void);
/* Streams of task id have something new to read. */
void hub_notify(struct hub *h, const char *id);
/* Every stream should look again (the queue moved: positions changed). */
void hub_notify_all(struct hub *h);
/* End every stream and refuse new ones; call before the HTTP daemon stops
 * (libmicrohttpd must not be stopped with suspended connections). */
void hub_shutdown(struct hub *h);
void hub_free(struct hub *h);

/* Answer r with an event stream for task id (known to exist). */
enum MHD_Result sse_respond(struct server *srv, struct http_request *r, const char *id);

/* For the access log: bytes sent so far; then drop the request's
 * reference. */
size_t sse_stream_bytes(struct sse_stream *s);
void sse_stream_release(struct sse_stream *s);

#endif
