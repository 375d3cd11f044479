/* hub.c - see hub.h. */
#include "server/hub.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct hub {
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the timer thread early at shutdown */
    struct hub_watch *head;
    unsigned long seq;       /* bumped by every notification */
    int stopping;
    pthread_t timer;
    int has_thread;
};

enum wake_kind { WAKE_ID, WAKE_ALL, WAKE_TICK };

/* Resume the suspended watches selected. Connections are resumed after the
 * lock is dropped; a suspended connection cannot go away meanwhile
 * (libmicrohttpd does not touch it), and clearing `suspended` under the
 * lock makes us its only resumer. */
static void wake(struct hub *h, enum wake_kind kind, const char *id)
{
    pthread_mutex_lock(&h->mu);
    if (kind != WAKE_TICK)
        h->seq++;
    size_t n = 0;
    for (struct hub_watch *w = h->head; w; w = w->next)
        n++;
    struct MHD_Connection **conns = n ? malloc(n * sizeof *conns) : NULL;
    size_t k = 0;
    for (struct hub_watch *w = h->head; w && conns; w = w->next) {
        int match = kind == WAKE_ALL || (kind == WAKE_ID && !strcmp(w->id, id)) ||
                    (kind == WAKE_TICK && w->tick);
        if (w->suspended && match) {
            w->suspended = 0;
            conns[k++] = w->conn;
        }
    }
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < k; i++)
        MHD_resume_connection(conns[i]);
    free(conns);
}

void hub_notify(struct hub *h, const char *id)
{
    if (h)
        wake(h, WAKE_ID, id);
}

void hub_notify_all(struct hub *h)
{
    if (h)
        wake(h, WAKE_ALL, NULL);
}

static void *timer_main(void *arg)
{
    struct hub *h = arg;
    int ticks = 0;
    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        if (h->stopping)
            break;
        pthread_mutex_unlock(&h->mu);
        if (++ticks >= (int)HUB_KEEPALIVE_SECONDS) {
            ticks = 0;
            wake(h, WAKE_ALL, NULL); /* streams write ": keepalive" when due */
        } else {
            wake(h, WAKE_TICK, NULL);
        }
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

struct hub *hub_new(void)
{
    struct hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    if (pthread_create(&h->timer, NULL, timer_main, h) == 0)
        h->has_thread = 1;
    return h;
}

void hub_shutdown(struct hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (h->has_thread) {
        pthread_join(h->timer, NULL);
        h->has_thread = 0;
    }
    wake(h, WAKE_ALL, NULL); /* watchers see `stopping` and answer */
}

void hub_free(struct hub *h)
{
    if (!h)
        return;
    hub_shutdown(h);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

int hub_add(struct hub *h, struct hub_watch *w)
{
    pthread_mutex_lock(&h->mu);
    int ok = !h->stopping;
    if (ok) {
        w->prev = NULL;
        w->next = h->head;
        if (h->head)
            h->head->prev = w;
        h->head = w;
        w->listed = 1;
        w->suspended = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return ok;
}

void hub_remove(struct hub *h, struct hub_watch *w)
{
    pthread_mutex_lock(&h->mu);
    if (w->listed) {
        if (w->prev)
            w->prev->next = w->next;
        else
            h->head = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->listed = 0;
    }
    w->suspended = 0;
    pthread_mutex_unlock(&h->mu);
}

unsigned long hub_seq(struct hub *h, int *stopping)
{
    pthread_mutex_lock(&h->mu);
    unsigned long seq = h->seq;
    if (stopping)
        *stopping = h->stopping;
    pthread_mutex_unlock(&h->mu);
    return seq;
}

int hub_suspend(struct hub *h, struct hub_watch *w, unsigned long seq)
{
    pthread_mutex_lock(&h->mu);
    if (h->seq != seq || h->stopping || !w->listed) {
        pthread_mutex_unlock(&h->mu);
        return 0;
    }
    w->suspended = 1;
    MHD_suspend_connection(w->conn);
    pthread_mutex_unlock(&h->mu);
    return 1;
}
