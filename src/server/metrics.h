/* metrics.h - counters and histograms for /metrics (Prometheus text 0.0.4).
 *
 * Exposed (all prefixed diffusiond_):
 *
 *     queue_depth                       gauge      pending tasks
 *     tasks{status}                     gauge      tasks in the store by status
 *     model_loaded                      gauge      1 when a model is serving
 *     tasks_finished_total{status}      counter    completed/failed/cancelled here
 *     rate_limited_total                counter    submissions refused with 429
 *     http_requests_total{route,code}   counter
 *     http_request_duration_seconds     histogram  time to answer (streams excluded)
 *     generation_seconds                histogram  wall time of a whole generation
 *     step_seconds                      histogram  one denoising step
 *
 * Thread-safe: every update takes one mutex for a few instructions.
 */
#ifndef SD_SERVER_METRICS_H
#define SD_SERVER_METRICS_H

#include <stddef.h>

#include "server/store/store.h"

struct metrics;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

void metrics_observe_generation(struct metrics *m, double seconds);
void metrics_observe_step(struct metrics *m, double seconds);
void metrics_count_finished(struct metrics *m, enum task_status s);
void metrics_count_rate_limited(struct metrics *m);
/* route is a static string (the route's pattern, or "other"). */
void metrics_count_request(struct metrics *m, const char *route, int code, double seconds);

/* Mean of recent generation times (exponential moving average), or
 * `fallback` before the first one: used for Retry-After estimates. */
double metrics_typical_generation(struct metrics *m, double fallback);

/* The exposition text; malloc'd, *len its length. counts come from the
 * store (NULL if it could not be read). */
char *metrics_render(struct metrics *m, const long long *counts, int model_loaded, size_t *len);

#endif
