/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

struct st_file *ref_open(const char *path)
{
    struct st_file *f;
    struct sd_err err;
    if (st_open(&f, path, &err)) {
        fprintf(stderr, "  cannot open %s: %s\n", path, err.msg);
        return NULL;
    }
    return f;
}

float *ref_f32(struct st_file *f, const char *name, size_t *n)
{
    const struct st_tensor *t = st_find(f, name);
    if (!t) {
        fprintf(stderr, "  %s: no tensor %s\n", st_path(f), name);
        return NULL;
    }
    float *p = malloc((t->numel ? t->numel : 1) * sizeof *p);
    struct sd_err err;
    if (t->dtype == ST_I32) {
        for (int64_t i = 0; i < t->numel; i++) {
            int32_t v;
            __builtin_memcpy(&v, t->data + 4 * i, 4);
            p[i] = (float)v;
        }
    } else if (st_to_f32(t, p, &err)) {
        fprintf(stderr, "  %s: %s\n", name, err.msg);
        free(p);
        return NULL;
    }
    if (n)
        *n = (size_t)t->numel;
    return p;
}

double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d != d)
            return INFINITY;
        m = d > m ? d : m;
    }
    return m;
}

double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

void to_nhwc(float *dst, const float *src, int C, int HW)
{
    for (int c = 0; c < C; c++)
        for (int p = 0; p < HW; p++)
            dst[(size_t)p * C + c] = src[(size_t)c * HW + p];
}
