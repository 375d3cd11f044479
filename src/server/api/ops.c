/* api/ops.c - /health, /metrics, /openapi.json and the web page. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/cpu.h"

#include "server/metrics.h"
#include "server/api/api.h"

json_t *api_model_json(const struct sd_model_info *in)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:f,s:s,s:s,s:s}", "name", in->name, "family", in->family,
                     "format", in->format, "prediction_type", in->prediction_type, "default_width",
                     in->default_width, "default_height", in->default_height, "default_guidance",
                     (double)in->default_guidance, "scheduler", in->scheduler_class, "precision",
                     sd_precision_name(in->precision), "compute", in->compute);
}

/* The seed's two fields, plus which model and, if it failed, why. Cheap:
 * no store access, so it answers instantly even under load. */
enum MHD_Result api_health(struct server *srv, struct http_request *r)
{
    json_t *o = json_pack("{s:s}", "status", "ok");
    if (srv->model) {
        const struct sd_model_info *in = sd_model_get_info(srv->model);
        json_object_set_new(o, "model_status", json_string("available"));
        json_object_set_new(o, "model", json_string(in->name));
        json_object_set_new(o, "model_info", api_model_json(in));
    } else if (srv->store.ops->shared) { /* an API node: the fleet's workers run the models */
        char name[256];
        json_t *info = NULL;
        int any = api_default_model(srv, name, sizeof name, &info);
        int live = any && json_integer_value(json_object_get(info, "workers")) > 0;
        json_object_set_new(o, "model_status", json_string(live ? "available" : "unavailable"));
        if (any) {
            json_object_set_new(o, "model", json_string(name));
            json_object_set_new(o, "model_info", info);
        }
        if (!live)
            json_object_set_new(o, "model_error",
                                json_string(any ? "no worker serving the model is alive (tasks wait "
                                                  "in the queue)"
                                                : "no worker has joined the fleet yet (diffusiond "
                                                  "worker --store ...)"));
    } else {
        json_object_set_new(o, "model_status", json_string("unavailable"));
        json_object_set_new(o, "model_error", json_string(srv->model_error));
    }
    json_object_set_new(o, "store", json_string(srv->store.ops->name));
    if (srv->store.ops->shared) {
        json_t *all = api_fleet_models(srv), *m;
        size_t i;
        json_int_t workers = 0;
        json_array_foreach(all, i, m)
            workers += json_integer_value(json_object_get(m, "workers"));
        json_decref(all);
        json_object_set_new(o, "workers", json_integer(workers));
    }
    json_object_set_new(o, "cpu", json_string(cpu_describe()));
    static const char *const hdr[] = {"Cache-Control", "no-store", NULL};
    return http_reply_json(r, 200, o, hdr);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The LoRA names a request may use: *.safetensors files of --lora-dir. */
json_t *api_lora_names(const char *dir)
{
    json_t *a = json_array();
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d)
        return a;
    char *names[1024];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 1024) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] != '.' && len > 12 && len - 12 < SD_LORA_NAME_MAX &&
            !strcmp(e->d_name + len - 12, ".safetensors") && (names[n] = strndup(e->d_name, len - 12)))
            n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        json_array_append_new(a, json_string(names[i]));
        free(names[i]);
    }
    return a;
}

/* The models this server runs (one per process today) and the LoRAs
 * requests may name. */
enum MHD_Result api_models(struct server *srv, struct http_request *r)
{
    json_t *models = api_fleet_models(srv), *m;
    size_t i;
    json_array_foreach(models, i, m)
        json_object_set_new(m, "status", json_string(json_integer_value(json_object_get(m, "workers")) > 0
                                                         ? "available"
                                                         : "no live worker"));
    return http_reply_json(r, 200, json_pack("{s:o,s:o}", "models", models, "loras", api_lora_names(srv->cfg.lora_dir)),
                           NULL);
}

enum MHD_Result api_metrics(struct server *srv, struct http_request *r)
{
    long long counts[TASK_STATUS_COUNT];
    struct sd_err err = {0};
    int have = store_counts(&srv->store, counts, &err) == SD_OK;
    if (!have)
        server_log("metrics: counting tasks failed: %s", err.msg);
    size_t len = 0;
    char *text = metrics_render(srv->metrics, have ? counts : NULL, srv->model != NULL, &len);
    if (!text)
        return http_reply_detail(r, 500, "Out of memory.", NULL);
    if (srv->store.ops->shared) { /* the fleet: live workers per model */
        json_t *all = api_fleet_models(srv), *m;
        size_t i, cap = len + 256;
        json_array_foreach(all, i, m)
            cap += 160;
        char *more = realloc(text, cap);
        if (!more) {
            free(text);
            json_decref(all);
            return http_reply_detail(r, 500, "Out of memory.", NULL);
        }
        text = more;
        len += (size_t)snprintf(text + len, cap - len,
                                "# HELP diffusiond_workers_alive Workers of the fleet serving a model.\n"
                                "# TYPE diffusiond_workers_alive gauge\n");
        json_array_foreach(all, i, m)
            len += (size_t)snprintf(text + len, cap - len, "diffusiond_workers_alive{model=\"%.100s\"} %lld\n",
                                    json_string_value(json_object_get(m, "name")),
                                    (long long)json_integer_value(json_object_get(m, "workers")));
        json_decref(all);
    }
    return http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, 1, NULL);
}

enum MHD_Result api_openapi(struct server *srv, struct http_request *r)
{
    return http_reply(r, 200, "application/json", srv->openapi, strlen(srv->openapi), 0, NULL);
}

enum MHD_Result api_page(struct server *srv, struct http_request *r)
{
    static const char *const hdr[] = {
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self' 'unsafe-inline'",
        NULL};
    return http_reply(r, 200, "text/html; charset=utf-8", webpage_html, strlen(webpage_html), 0,
                      hdr);
}
