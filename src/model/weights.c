/* weights.c - see weights.h. */
#include "model/weights.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/pytorch.h"
#include "model/safetensors.h"

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

int weights_open(struct weights *w, const char *dir, const char *component, const char *base,
                 const char *variant, struct sd_err *err)
{
    memset(w, 0, sizeof *w);
    w->err = err;
    char alt[1100];
    if (variant && *variant)
        snprintf(w->path, sizeof w->path, "%s/%s/%s.%s.safetensors", dir, component, base, variant);
    else
        snprintf(w->path, sizeof w->path, "%s/%s/%s.safetensors", dir, component, base);
    if (!file_exists(w->path)) {
        /* Say what is there instead, if anything useful. */
        /* older folders: pytorch_model.bin / diffusion_pytorch_model.bin
         * (torch.save zip files, read without running them: pytorch.h) */
        const char *pre = strcmp(base, "model") ? "" : "pytorch_";
        if (variant && *variant)
            snprintf(alt, sizeof alt, "%s/%s/%s%s.%s.bin", dir, component, pre, base, variant);
        else
            snprintf(alt, sizeof alt, "%s/%s/%s%s.bin", dir, component, pre, base);
        if (file_exists(alt)) {
            long step;
            snprintf(w->path, sizeof w->path, "%s", alt);
            w->status = pt_open(&w->own_file, alt, &step, err);
            w->file = w->own_file;
            return w->status;
        }
        snprintf(alt, sizeof alt, "%s/%s/%s.safetensors.index.json", dir, component, base);
        if (file_exists(alt))
            return w->status = sd_errf(err, SD_ERR_UNSUPPORTED,
                                       "%s: sharded weights are not supported", alt);
        if (variant && *variant) {
            snprintf(alt, sizeof alt, "%s/%s/%s.safetensors", dir, component, base);
            if (file_exists(alt))
                return w->status = sd_errf(err, SD_ERR_IO, "%s: missing (variant \"%s\" not found; "
                                           "the folder has the default weights)", w->path, variant);
        } else {
            snprintf(alt, sizeof alt, "%s/%s/%s.fp16.safetensors", dir, component, base);
            if (file_exists(alt))
                return w->status = sd_errf(err, SD_ERR_IO, "%s: missing (the folder has the \"fp16\" "
                                           "variant: use --variant fp16)", w->path);
        }
        return w->status = sd_errf(err, SD_ERR_IO, "%s: missing", w->path);
    }
    w->status = st_open(&w->own_file, w->path, err);
    w->file = w->own_file;
    return w->status;
}

void weights_src_folder(struct weights_src *s, const char *dir, const char *component, const char *base,
                        const char *variant)
{
    memset(s, 0, sizeof *s);
    snprintf(s->config, sizeof s->config, "%s/%s/config.json", dir, component);
    s->dir = dir, s->component = component, s->base = base, s->variant = variant;
}

int weights_open_src(struct weights *w, const struct weights_src *s, struct sd_err *err)
{
    if (!s->file)
        return weights_open(w, s->dir, s->component, s->base, s->variant, err);
    memset(w, 0, sizeof *w);
    w->err = err;
    w->file = s->file;
    w->map = s->map;
    w->map_ctx = s->map_ctx;
    snprintf(w->path, sizeof w->path, "%s", st_path(s->file));
    return SD_OK;
}

/* The file's tensor for a diffusers name: itself, or a translated view. */
static const struct st_tensor *lookup(const struct weights *w, const char *name, struct st_tensor *view,
                                      int *transpose)
{
    *transpose = 0;
    if (!w->map)
        return st_find(w->file, name);
    return w->map(w->map_ctx, w->file, name, view, transpose) ? view : NULL;
}

static int fail(struct weights *w, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct weights *w, int code, const char *fmt, ...)
{
    if (w->status)
        return w->status;
    char msg[SD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return w->status = sd_errf(w->err, code, "%s: %s", w->path, msg);
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *d)
{
    size_t o = 0;
    o += snprintf(buf + o, len - o, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)d[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* A buffer of n floats owned by w (freed by weights_drop or weights_free). */
static float *own(struct weights *w, size_t n, const char *name)
{
    if (w->n_owned == w->cap_owned) {
        int cap = w->cap_owned ? w->cap_owned * 2 : 256;
        float **p = realloc(w->owned, cap * sizeof *p);
        if (!p) {
            fail(w, SD_ERR_NOMEM, "out of memory");
            return NULL;
        }
        w->owned = p;
        w->cap_owned = cap;
    }
    float *buf = malloc((n ? n : 1) * sizeof(float));
    if (!buf) {
        fail(w, SD_ERR_NOMEM, "out of memory for '%s'", name);
        return NULL;
    }
    w->owned[w->n_owned++] = buf;
    return buf;
}

const float *weights_get(struct weights *w, const char *name, int ndim, ...)
{
    if (w->status)
        return NULL;
    int64_t want[ST_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim && i < ST_MAX_DIMS; i++)
        want[i] = va_arg(ap, int);
    va_end(ap);
    struct st_tensor view;
    int transpose;
    const struct st_tensor *t = lookup(w, name, &view, &transpose);
    if (!t) {
        if (w->map)
            fail(w, SD_ERR_FORMAT, "no tensor for '%s' (diffusers name) in the checkpoint", name);
        else
            fail(w, SD_ERR_FORMAT, "missing tensor '%s'", name);
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == want[i];
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, ndim, want);
        if (w->map && t->name && strcmp(t->name, name))
            fail(w, SD_ERR_FORMAT, "tensor '%s' (%s) has shape %s but the config implies %s", t->name, name,
                 a, b);
        else
            fail(w, SD_ERR_FORMAT, "tensor '%s' has shape %s but the config implies %s", name, a, b);
        return NULL;
    }
    w->n_used++;
    w->used += (size_t)t->numel * sizeof(float);
    if (t->dtype == ST_F32 && ((uintptr_t)t->data & 3) == 0 && !transpose)
        return (const float *)(const void *)t->data;
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64) {
        fail(w, SD_ERR_UNSUPPORTED, "tensor '%s' has dtype %s (supported: F32, F16, BF16)", name,
             st_dtype_name(t->dtype));
        return NULL;
    }
    float *buf = own(w, (size_t)t->numel, name);
    if (!buf)
        return NULL;
    struct sd_err e;
    if (st_to_f32(t, buf, &e)) {
        w->n_owned--;
        free(buf);
        fail(w, e.code, "tensor '%s': %s", name, e.msg);
        return NULL;
    }
    /* The converted copy is what the model uses: the file's pages of this
     * tensor (F16 in most single files) need not stay resident. */
    st_release_pages(w->file, t->data, t->nbytes);
    if (transpose && t->ndim == 2) { /* the view is [rows, cols] of the file's [cols, rows] */
        size_t r = (size_t)t->shape[0], c = (size_t)t->shape[1];
        float *tmp = malloc(r * c * sizeof(float));
        if (!tmp) {
            fail(w, SD_ERR_NOMEM, "out of memory for '%s'", name);
            return NULL;
        }
        for (size_t i = 0; i < r; i++)
            for (size_t j = 0; j < c; j++)
                tmp[i * c + j] = buf[j * r + i];
        memcpy(buf, tmp, r * c * sizeof(float));
        free(tmp);
    }
    return buf;
}

float *weights_derived(struct weights *w, size_t n, const char *name)
{
    if (w->status)
        return NULL;
    float *buf = own(w, n, name);
    if (buf)
        w->used += n * sizeof(float);
    return buf;
}

const float *weights_stack(struct weights *w, const float *const *parts, int n, size_t each,
                           const char *name)
{
    if (w->status)
        return NULL;
    for (int i = 0; i < n; i++)
        if (!parts[i])
            return NULL;
    float *buf = own(w, (size_t)n * each, name);
    if (!buf)
        return NULL;
    for (int i = 0; i < n; i++) {
        memcpy(buf + (size_t)i * each, parts[i], each * sizeof(float));
        weights_drop(w, parts[i], each);
    }
    w->used += (size_t)n * each * sizeof(float);
    return buf;
}

void weights_drop(struct weights *w, const float *p, size_t n)
{
    if (!p)
        return;
    for (int i = 0; i < w->n_owned; i++)
        if (w->owned[i] == p) {
            free(w->owned[i]);
            w->owned[i] = w->owned[--w->n_owned];
            w->dropped += n * sizeof(float);
            return;
        }
    /* In the mapping: drop the pages wholly inside [p, p + n). */
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t b = ((uintptr_t)(p + n)) & ~(uintptr_t)(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
    w->dropped += n * sizeof(float);
}

int weights_get_raw(struct weights *w, const char *name, struct st_tensor *out, int ndim, ...)
{
    if (w->status)
        return 0;
    int64_t want[ST_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim && i < ST_MAX_DIMS; i++)
        want[i] = va_arg(ap, int);
    va_end(ap);
    int transpose;
    const struct st_tensor *t = lookup(w, name, out, &transpose);
    if (!t) {
        fail(w, SD_ERR_FORMAT, "missing tensor '%s'", name);
        return 0;
    }
    int same = t->ndim == ndim && !transpose;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == want[i];
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, ndim, want);
        if (w->map && t->name && strcmp(t->name, name))
            fail(w, SD_ERR_FORMAT, "tensor '%s' (%s) has shape %s but the config implies %s", t->name, name,
                 a, b);
        else
            fail(w, SD_ERR_FORMAT, "tensor '%s' has shape %s but the config implies %s", name, a, b);
        return 0;
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
        fail(w, SD_ERR_UNSUPPORTED, "tensor '%s' has dtype %s (supported: F32, F16, BF16)", name,
             st_dtype_name(t->dtype));
        return 0;
    }
    if (t != out)
        *out = *t;
    w->n_used++;
    w->used += t->nbytes;
    return 1;
}

void weights_add_layer(struct weights *w, const char *name, const char *tensor, int conv, void *layer, int row0,
                       int rows, int cols)
{
    if (w->status)
        return;
    if (w->n_layers == w->cap_layers) {
        int cap = w->cap_layers ? 2 * w->cap_layers : 256;
        struct weights_layer *p = realloc(w->layers, cap * sizeof *p);
        if (!p) {
            fail(w, SD_ERR_NOMEM, "out of memory");
            return;
        }
        w->layers = p;
        w->cap_layers = cap;
    }
    struct weights_layer *l = &w->layers[w->n_layers++];
    snprintf(l->name, sizeof l->name, "%s", name);
    snprintf(l->tensor, sizeof l->tensor, "%s", tensor);
    l->conv = conv, l->layer = layer, l->row0 = row0, l->rows = rows, l->cols = cols;
}

int weights_read(const struct weights *w, const char *name, float *dst, size_t n, struct sd_err *err)
{
    struct st_tensor view;
    int transpose;
    const struct st_tensor *t = w->file ? lookup(w, name, &view, &transpose) : NULL;
    if (!t)
        return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%s' is gone", w->path, name);
    if ((size_t)t->numel != n || transpose)
        return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%s' has %lld values, not %zu", w->path, name,
                       (long long)t->numel, n);
    return st_to_f32(t, dst, err);
}

int weights_has(const struct weights *w, const char *name)
{
    struct st_tensor view;
    int transpose;
    return w->file && lookup(w, name, &view, &transpose) != NULL;
}

void weights_free(struct weights *w)
{
    for (int i = 0; i < w->n_owned; i++)
        free(w->owned[i]);
    free(w->owned);
    free(w->layers);
    st_close(w->own_file);
    memset(w, 0, sizeof *w);
}
