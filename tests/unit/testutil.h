/* testutil.h - helpers for tests that compare against reference files
 * (tests/data/ref/<model>.safetensors written by tools/gen_tiny.py). */
#ifndef SD_TESTUTIL_H
#define SD_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"

/* Opens a reference file; NULL (and a message) if missing. */
struct st_file *ref_open(const char *path);
/* The tensor `name` as a malloc'd float32 array (*n elements), NULL if absent. */
float *ref_f32(struct st_file *f, const char *name, size_t *n);
/* max |a - b| over n values (NaN counts as infinite). */
double max_abs_diff(const float *a, const float *b, size_t n);
double max_abs(const float *a, size_t n);
/* NCHW [C, HW] <-> channels-last [HW, C] */
void to_nhwc(float *dst, const float *src, int C, int HW);

/* Worst figures over the whole-pipeline cases of a reference file. */
struct totals {
    double worst_latent;
    double worst_identical;
    int worst_level;
    int cases;
};

#endif
