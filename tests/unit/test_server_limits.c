/* test_server_limits.c - rate limit, API keys and metrics
 * (ratelimit.c, auth.c, metrics.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/metrics.h"
#include "server/ratelimit.h"
#include "test.h"

TEST(server_ratelimit_token_bucket)
{
    struct ratelimit *rl = ratelimit_new(60, 3); /* 1 token/s, burst 3 */
    double ra;
    for (int i = 0; i < 3; i++)
        CHECK(ratelimit_take(rl, "1.2.3.4", 100.0, &ra));
    CHECK(!ratelimit_take(rl, "1.2.3.4", 100.0, &ra));
    CHECK_NEAR(ra, 1.0, 1e-9);
    CHECK(!ratelimit_take(rl, "1.2.3.4", 100.5, &ra));
    CHECK_NEAR(ra, 0.5, 1e-9);
    CHECK(ratelimit_take(rl, "5.6.7.8", 100.5, &ra)); /* other clients unaffected */
    CHECK(ratelimit_take(rl, "1.2.3.4", 101.0, &ra));  /* refilled one */
    CHECK(!ratelimit_take(rl, "1.2.3.4", 101.0, &ra));
    /* Refill is capped at the burst. */
    for (int i = 0; i < 3; i++)
        CHECK(ratelimit_take(rl, "1.2.3.4", 1000.0, &ra));
    CHECK(!ratelimit_take(rl, "1.2.3.4", 1000.0, &ra));
    ratelimit_free(rl);

    rl = ratelimit_new(0, 1); /* disabled */
    for (int i = 0; i < 100; i++)
        CHECK(ratelimit_take(rl, "x", 0, &ra));
    ratelimit_free(rl);
}

TEST(server_ratelimit_many_clients)
{
    struct ratelimit *rl = ratelimit_new(600, 2); /* 10/s */
    char key[32];
    double ra;
    int allowed = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "10.0.%d.%d", i / 256, i % 256);
        allowed += ratelimit_take(rl, key, 0.0, &ra);
    }
    CHECK_EQ_INT(allowed, 20000); /* the table grows for active clients */
    CHECK_EQ_INT(ratelimit_size(rl), 20000);
    /* Once everyone has refilled, idle buckets are dropped on the next rebuild. */
    for (int i = 0; i < 40000; i++) {
        snprintf(key, sizeof key, "fd00::%d", i);
        CHECK(ratelimit_take(rl, key, 1000.0 + i * 1.0, &ra));
    }
    CHECK(ratelimit_size(rl) < 40000);
    ratelimit_free(rl);
}

static const char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/sd_keys_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        path[0] = '\0';
    close(fd);
    return path;
}

TEST(server_auth_keys)
{
    struct auth *a = NULL;
    struct sd_err err = {0};
    const char *p = write_tmp("# keys\n\n  alpha-key-1  \nbeta_key_2\r\n#gamma\n");
    CHECK(p && auth_load(&a, p, &err) == SD_OK);
    unlink(p);
    CHECK(auth_count(a) == 2);
    CHECK(auth_check(a, "Bearer alpha-key-1"));
    CHECK(auth_check(a, "bearer   beta_key_2 "));
    CHECK(!auth_check(a, "Bearer alpha-key-"));
    CHECK(!auth_check(a, "Bearer alpha-key-12"));
    CHECK(!auth_check(a, "Bearer #gamma"));
    CHECK(!auth_check(a, "Basic alpha-key-1"));
    /* Basic: the key is the password, any user (A1111 clients). */
    CHECK(auth_check(a, "Basic d2VidWk6YWxwaGEta2V5LTE="));     /* webui:alpha-key-1 */
    CHECK(auth_check(a, "basic OmJldGFfa2V5XzI="));             /* :beta_key_2 */
    CHECK(!auth_check(a, "Basic YWxwaGEta2V5LTE="));            /* alpha-key-1, no colon */
    CHECK(!auth_check(a, "Basic d2VidWk6YWxwaGEta2V5LTI="));    /* webui:alpha-key-2 */
    CHECK(!auth_check(a, "Basic "));
    CHECK(!auth_check(a, "Basic %%%"));
    CHECK(!auth_check(a, "Beareralpha-key-1"));
    CHECK(!auth_check(a, "Bearer "));
    CHECK(!auth_check(a, NULL));
    auth_free(a);

    p = write_tmp("good\nbad key\n");
    CHECK(auth_load(&a, p, &err) == SD_ERR_FORMAT && strstr(err.msg, ":2:"));
    unlink(p);
    p = write_tmp("# only comments\n");
    CHECK(auth_load(&a, p, &err) == SD_ERR_FORMAT && strstr(err.msg, "no keys"));
    unlink(p);
    CHECK(auth_load(&a, "/nonexistent/keys", &err) == SD_ERR_IO);

    /* Reload (SIGHUP): new keys replace the old; a bad file keeps them. */
    p = write_tmp("first-key\n");
    CHECK(p && auth_load(&a, p, &err) == SD_OK);
    FILE *f = p ? fopen(p, "w") : NULL;
    if (f) {
        fputs("second-key\nthird-key\n", f);
        fclose(f);
    }
    CHECK(a && auth_reload(a, p, &err) == SD_OK);
    CHECK(auth_count(a) == 2 && auth_check(a, "Bearer third-key") && !auth_check(a, "Bearer first-key"));
    f = p ? fopen(p, "w") : NULL;
    if (f) {
        fputs("not a key\n", f);
        fclose(f);
    }
    CHECK(a && auth_reload(a, p, &err) == SD_ERR_FORMAT);
    CHECK(auth_count(a) == 2 && auth_check(a, "Bearer second-key"));
    if (p)
        unlink(p);
    auth_free(a);
}

TEST(server_metrics_text)
{
    struct metrics *m = metrics_new();
    CHECK(metrics_typical_generation(m, 5.0) == 5.0);
    metrics_observe_generation(m, 0.3);
    metrics_observe_generation(m, 700);
    metrics_observe_step(m, 0.02);
    metrics_count_finished(m, TASK_COMPLETED);
    metrics_count_rate_limited(m);
    metrics_count_request(m, "/health", 200, 0.0004);
    metrics_count_request(m, "/health", 200, 0.002);
    metrics_count_request(m, "/generate", 422, 0.001);
    long long counts[TASK_STATUS_COUNT] = {3, 1, 7, 0, 2, 0};
    size_t len;
    char *t = metrics_render(m, counts, 1, &len);
    CHECK(t && len == strlen(t));
    CHECK(strstr(t, "diffusiond_queue_depth 3\n"));
    CHECK(strstr(t, "diffusiond_tasks{status=\"completed\"} 7\n"));
    CHECK(strstr(t, "diffusiond_model_loaded 1\n"));
    CHECK(strstr(t, "diffusiond_tasks_finished_total{status=\"completed\"} 1\n"));
    CHECK(strstr(t, "diffusiond_rate_limited_total 1\n"));
    CHECK(strstr(t, "diffusiond_http_requests_total{route=\"/health\",code=\"200\"} 2\n"));
    CHECK(strstr(t, "diffusiond_http_requests_total{route=\"/generate\",code=\"422\"} 1\n"));
    CHECK(strstr(t, "diffusiond_generation_seconds_bucket{le=\"0.5\"} 1\n"));
    CHECK(strstr(t, "diffusiond_generation_seconds_bucket{le=\"+Inf\"} 2\n"));
    CHECK(strstr(t, "diffusiond_generation_seconds_count 2\n"));
    CHECK(strstr(t, "diffusiond_step_seconds_bucket{le=\"0.025\"} 1\n"));
    CHECK(strstr(t, "diffusiond_http_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
    CHECK(strstr(t, "# TYPE diffusiond_step_seconds histogram\n"));
    free(t);
    metrics_free(m);
}
