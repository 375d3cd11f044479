/* hub.h - connections waiting for a task to change.
 *
 * Event streams (sse.c) and blocking calls (the A1111 and OpenAI routes,
 * api/wait.c) hold an HTTP connection open while a task runs, without
 * holding a thread: they suspend the connection (libmicrohttpd's
 * suspend/resume) and register a watch here. Whoever changes a task (the
 * worker at every step, a cancel) calls hub_notify(), which resumes the
 * connections watching it; they then read the task from the store.
 *
 * A global change counter closes the race between "read the store, found
 * nothing new" and "suspend": hub_suspend() suspends only if no
 * notification arrived since hub_seq() was read.
 *
 * A timer thread also resumes every watch marked `tick` once a second
 * (blocking calls check that their client is still connected) and every
 * watch every KEEPALIVE seconds (event streams send a keepalive line).
 */
#ifndef SD_SERVER_HUB_H
#define SD_SERVER_HUB_H

#include <microhttpd.h>

#include "server/sutil.h"

#define HUB_KEEPALIVE_SECONDS 15.0

struct hub;

/* Embedded in its owner; fields are the hub's (set conn, id and tick
 * before hub_add). */
struct hub_watch {
    struct hub_watch *prev, *next;
    struct MHD_Connection *conn;
    char id[UUID_STR_LEN]; /* the task watched */
    int tick;              /* also resume once a second */
    int suspended;         /* under the hub's lock */
    int listed;
};

/* The hub starts its timer thread. NULL when out of memory. */
struct hub *hub_new(void);
/* Watches of task id have something new to read. */
void hub_notify(struct hub *h, const char *id);
/* Every watch should look again (the queue moved: positions changed). */
void hub_notify_all(struct hub *h);
/* Resume every watch and refuse new ones; call before the HTTP daemon
 * stops (libmicrohttpd must not be stopped with suspended connections). */
void hub_shutdown(struct hub *h);
void hub_free(struct hub *h);

/* Register w; 0 when the hub is shutting down (w is not listed then). */
int hub_add(struct hub *h, struct hub_watch *w);
/* Unregister w (no-op when not listed). After this the hub never touches
 * w again. */
void hub_remove(struct hub *h, struct hub_watch *w);
/* The change counter, and whether the hub is shutting down. */
unsigned long hub_seq(struct hub *h, int *stopping);
/* Suspend w's connection unless something changed since seq (or the hub
 * is stopping): returns 1 when suspended, 0 when the caller should look
 * again. */
int hub_suspend(struct hub *h, struct hub_watch *w, unsigned long seq);

#endif
