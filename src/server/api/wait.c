/* api/wait.c - blocking calls over the durable queue (see api.h).
 *
 * The A1111 and OpenAI routes answer only when the image is made, yet the
 * task goes through the same queue as /generate (visible in /results and
 * /metrics, durable across restarts). While it waits, the request holds
 * no thread: its connection is suspended and registered with the hub,
 * which resumes it when the task changes, and once a second so that we
 * notice a client that hung up (its task is then cancelled: nobody would
 * read the result).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server/api/api.h"
#include "server/hub.h"
#include "server/worker.h"

struct api_wait {
    struct hub_watch watch;
    json_t *data; /* the family's state for its answer (owned) */
    int settled;  /* answered, or its task cancelled */
};

static void cancel_abandoned(struct server *srv, const char *id)
{
    enum cancel_result cr;
    if (api_task_cancel(srv, id, &cr, NULL) == SD_OK &&
        (cr == CANCEL_DONE || cr == CANCEL_REQUESTED))
        server_log("task %s cancelled: its client disconnected", id);
}

int api_task_cancel(struct server *srv, const char *id, enum cancel_result *cr,
                    struct sd_err *err)
{
    int rc = store_cancel(&srv->store, id, now_unix(), cr, err);
    if (rc)
        return rc;
    if (*cr == CANCEL_DONE)
        hub_notify_all(srv->hub); /* its watchers answer; the queue behind it moves */
    else if (*cr == CANCEL_REQUESTED)
        worker_cancel(srv->worker, id);
    return SD_OK;
}

int api_wait_begin(struct server *srv, struct http_request *r, const char *id, json_t *data)
{
    struct api_wait *w = calloc(1, sizeof *w);
    if (!w) {
        json_decref(data);
        return SD_ERR_NOMEM;
    }
    w->watch.conn = r->conn;
    w->watch.tick = 1;
    snprintf(w->watch.id, sizeof w->watch.id, "%s", id);
    w->data = data;
    if (!hub_add(srv->hub, &w->watch)) {
        json_decref(data);
        free(w);
        return SD_ERR_CANCELLED;
    }
    r->wait = w;
    return SD_OK;
}

json_t *api_wait_data(struct http_request *r)
{
    return r->wait ? r->wait->data : NULL;
}

void api_wait_end(struct server *srv, struct http_request *r)
{
    struct api_wait *w = r->wait;
    if (!w)
        return;
    hub_remove(srv->hub, &w->watch);
    /* The connection ended before an answer (libmicrohttpd saw the client
     * leave before calling the handler again): nobody will read it. */
    if (!w->settled)
        cancel_abandoned(srv, w->watch.id);
    json_decref(w->data);
    free(w);
    r->wait = NULL;
}

/* Whether the client closed its end. A peek that finds end-of-file (or a
 * reset) says so; pending bytes or "would block" mean it is still there. */
static int client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 0;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return 0;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return 1;
}

enum wait_state api_wait_poll(struct server *srv, struct http_request *r, struct task *t)
{
    struct api_wait *w = r->wait;
    SD_ASSERT(w);
    memset(t, 0, sizeof *t);
    if (client_gone(r->conn)) {
        cancel_abandoned(srv, w->watch.id);
        w->settled = 1;
        return WAIT_CLIENT_GONE;
    }
    for (;;) {
        int stopping, found = 0;
        unsigned long seq = hub_seq(srv->hub, &stopping);
        if (stopping) {
            w->settled = 1; /* the task stays queued for the next start */
            return WAIT_SHUTDOWN;
        }
        struct sd_err err = {0};
        if (store_get(&srv->store, w->watch.id, t, &found, &err) || !found) {
            server_log("task %s: reading it failed: %s", w->watch.id,
                       found ? err.msg : "not found");
            w->settled = 1;
            return WAIT_ERROR;
        }
        if (task_status_final(t->status)) {
            w->settled = 1;
            return WAIT_FINISHED;
        }
        task_clear(t);
        if (hub_suspend(srv->hub, &w->watch, seq))
            return WAIT_SUSPENDED;
    }
}
