/* worker.h - the inference worker: one thread that runs tasks in order.
 *
 *     loop: claim the oldest pending task (with a lease)
 *           sd_generate(...) with a progress callback and a cancel flag
 *           encode the PNG, store it with the task (completed)
 *           or record the failure / the cancellation
 *
 * The worker only talks to the store (and wakes event streams), so it can
 * move to a separate process once the store is shared (Redis). While a task
 * runs, worker_tick() (called every second by the janitor) renews its lease
 * and picks up cancellations requested through the store; worker_cancel()
 * is the fast path for cancellations made in this process.
 *
 * Stopping (SIGTERM) lets the running step finish, then hands the task back
 * to the queue (release): it runs again after the restart.
 */
#ifndef SD_SERVER_WORKER_H
#define SD_SERVER_WORKER_H

#include "util/err.h"

struct server;
struct worker;

int worker_start(struct worker **out, struct server *srv, struct sd_err *err);
/* A task was queued: look now rather than at the next poll. */
void worker_wake(struct worker *w);
/* Stop the running task at its next step if it is `id`. */
void worker_cancel(struct worker *w, const char *id);
/* The id of the running task into id (UUID_STR_LEN bytes); 0 when idle. */
int worker_running(struct worker *w, char *id);
/* Renew the lease of the running task; honour store-side cancellations. */
void worker_tick(struct worker *w);
/* Interrupt (release) the running task and join the thread. The other
 * calls stay valid (and do nothing useful) until worker_free. */
void worker_stop(struct worker *w);
void worker_free(struct worker *w);

#endif
