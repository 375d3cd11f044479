/* metrics.c - see metrics.h. */
#include "server/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 16
#define MAX_SERIES 256

struct histogram {
    const char *name, *help;
    int n;
    double le[MAX_BUCKETS];
    unsigned long long count[MAX_BUCKETS + 1]; /* last: +Inf */
    double sum;
};

struct series {
    const char *route;
    int code;
    unsigned long long n;
};

struct metrics {
    pthread_mutex_t mu;
    struct histogram gen, step, http;
    unsigned long long finished[TASK_STATUS_COUNT];
    unsigned long long rate_limited;
    struct series req[MAX_SERIES];
    int nreq;
    double ewma_gen; /* 0 until the first generation */
};

static void hist_init(struct histogram *h, const char *name, const char *help, const double *le,
                      int n)
{
    h->name = name;
    h->help = help;
    h->n = n;
    memcpy(h->le, le, sizeof(double) * (size_t)n);
}

static void hist_observe(struct histogram *h, double v)
{
    int i = 0;
    while (i < h->n && v > h->le[i])
        i++;
    h->count[i]++;
    h->sum += v;
}

struct metrics *metrics_new(void)
{
    static const double gen[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600, 1800};
    static const double step[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    static const double http[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                  0.05,   0.1,   0.25,   0.5,   1,    2.5};
    struct metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->gen, "diffusiond_generation_seconds",
              "Wall time of one image generation, text encoding to PNG.", gen,
              (int)(sizeof gen / sizeof gen[0]));
    hist_init(&m->step, "diffusiond_step_seconds", "Duration of one denoising step.", step,
              (int)(sizeof step / sizeof step[0]));
    hist_init(&m->http, "diffusiond_http_request_duration_seconds",
              "Time to answer an HTTP request (event streams excluded).", http,
              (int)(sizeof http / sizeof http[0]));
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_observe_generation(struct metrics *m, double seconds)
{
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->gen, seconds);
    m->ewma_gen = m->ewma_gen > 0 ? 0.7 * m->ewma_gen + 0.3 * seconds : seconds;
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_step(struct metrics *m, double seconds)
{
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->step, seconds);
    pthread_mutex_unlock(&m->mu);
}

void metrics_count_finished(struct metrics *m, enum task_status s)
{
    pthread_mutex_lock(&m->mu);
    if ((unsigned)s < TASK_STATUS_COUNT)
        m->finished[s]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_count_rate_limited(struct metrics *m)
{
    pthread_mutex_lock(&m->mu);
    m->rate_limited++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_count_request(struct metrics *m, const char *route, int code, double seconds)
{
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->nreq && !(m->req[i].code == code && !strcmp(m->req[i].route, route)))
        i++;
    if (i == m->nreq && m->nreq < MAX_SERIES)
        m->req[m->nreq++] = (struct series){route, code, 0};
    if (i < m->nreq)
        m->req[i].n++;
    if (seconds >= 0)
        hist_observe(&m->http, seconds);
    pthread_mutex_unlock(&m->mu);
}

double metrics_typical_generation(struct metrics *m, double fallback)
{
    pthread_mutex_lock(&m->mu);
    double v = m->ewma_gen > 0 ? m->ewma_gen : fallback;
    pthread_mutex_unlock(&m->mu);
    return v;
}

static void hist_render(FILE *f, const struct histogram *h)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    unsigned long long cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->count[i];
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", h->name, h->le[i], cum);
    }
    cum += h->count[h->n];
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", h->name, cum, h->name,
            h->sum, h->name, cum);
}

char *metrics_render(struct metrics *m, const long long *counts, int model_loaded, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;
    fprintf(f, "# HELP diffusiond_model_loaded 1 when a model is loaded and serving.\n"
               "# TYPE diffusiond_model_loaded gauge\ndiffusiond_model_loaded %d\n",
            model_loaded ? 1 : 0);
    if (counts) {
        fprintf(f, "# HELP diffusiond_queue_depth Tasks waiting to run.\n"
                   "# TYPE diffusiond_queue_depth gauge\ndiffusiond_queue_depth %lld\n",
                counts[TASK_PENDING]);
        fprintf(f, "# HELP diffusiond_tasks Tasks in the store by status.\n"
                   "# TYPE diffusiond_tasks gauge\n");
        for (int s = 0; s < TASK_EXPIRED; s++)
            fprintf(f, "diffusiond_tasks{status=\"%s\"} %lld\n",
                    task_status_name((enum task_status)s), counts[s]);
    }
    pthread_mutex_lock(&m->mu);
    fprintf(f, "# HELP diffusiond_tasks_finished_total Tasks finished by this process.\n"
               "# TYPE diffusiond_tasks_finished_total counter\n");
    for (int s = TASK_COMPLETED; s <= TASK_CANCELLED; s++)
        fprintf(f, "diffusiond_tasks_finished_total{status=\"%s\"} %llu\n",
                task_status_name((enum task_status)s), m->finished[s]);
    fprintf(f, "# HELP diffusiond_rate_limited_total Submissions refused by the rate limit.\n"
               "# TYPE diffusiond_rate_limited_total counter\n"
               "diffusiond_rate_limited_total %llu\n", m->rate_limited);
    fprintf(f, "# HELP diffusiond_http_requests_total HTTP requests by route and status code.\n"
               "# TYPE diffusiond_http_requests_total counter\n");
    for (int i = 0; i < m->nreq; i++)
        fprintf(f, "diffusiond_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                m->req[i].route, m->req[i].code, m->req[i].n);
    hist_render(f, &m->http);
    hist_render(f, &m->gen);
    hist_render(f, &m->step);
    pthread_mutex_unlock(&m->mu);
    if (fclose(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
