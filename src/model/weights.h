/* weights.h - a network component's weights, looked up by name and shape.
 *
 * Opens `<dir>/<component>/<base>[.<variant>].safetensors` (memory-mapped),
 * or reads a component out of a single-file checkpoint shared with the
 * other components (weights_open_src: names are translated from diffusers'
 * to the file's own, see checkpoint.h), and hands out float32 pointers for
 * named tensors, always asked for by their diffusers names, after checking their
 * shape against what the config implies. F32 tensors that are 4-byte
 * aligned in the file are used in place (zero copy: the model's weights stay
 * in the page cache); F16/BF16/F64 tensors, or unaligned F32 ones, are
 * converted once into buffers owned by the `struct weights`.
 *
 * Errors are sticky: the first missing tensor or bad shape is recorded and
 * every later weights_get returns NULL, so a loader reads like a list and
 * checks weights_status() once at the end.
 *
 * All pointers stay valid until weights_free().
 */
#ifndef SD_WEIGHTS_H
#define SD_WEIGHTS_H

#include <stdint.h>

#include "util/err.h"

struct st_file;
struct nn_backend;

struct st_tensor;

/* A translator from diffusers tensor names to a single file's: fills *view
 * with the file's tensor under that name (a view: another shape for the
 * same bytes, or a row range of a larger tensor) and returns 1, or returns
 * 0 when the file has no such tensor. *transpose = 1 asks for the 2-D view
 * to be transposed into the returned float32 buffer. */
typedef int (*weights_map_fn)(const void *ctx, const struct st_file *f, const char *name,
                              struct st_tensor *view, int *transpose);

/* Where a network's config and weights come from. */
struct weights_src {
    char config[1100];        /* path of its config.json */
    /* A diffusers folder: <dir>/<component>/<base>[.<variant>].safetensors */
    const char *dir, *component, *base, *variant;
    /* Or a file shared by the components of a checkpoint (not owned; it
     * must outlive the weights), with its names translated by map. */
    const struct st_file *file;
    weights_map_fn map;
    const void *map_ctx;
};

/* The source of <dir>/<component> in a diffusers folder. */
void weights_src_folder(struct weights_src *s, const char *dir, const char *component, const char *base,
                        const char *variant);

/* A layer loaded from these weights, recorded so that its weights can be
 * rebuilt later (LoRA merges: lora.h). A stacked layer (q|k|v) has one
 * entry per part. */
struct weights_layer {
    char name[160];       /* diffusers module path, e.g. "down_blocks.0...attn1.to_q" */
    char tensor[176];     /* the file tensor (diffusers name) holding its weight */
    int conv;             /* 1: struct nn_conv2d, 0: struct nn_linear */
    void *layer;
    int row0, rows, cols; /* rows [row0, row0 + rows) of the layer's [out, in*k*k] weight */
};

struct weights {
    const struct st_file *file;
    struct st_file *own_file; /* file when this struct opened it */
    weights_map_fn map;
    const void *map_ctx;
    char path[1100];
    float **owned;      /* converted tensors */
    int n_owned, cap_owned;
    int n_used;         /* tensors handed out */
    int status;
    struct sd_err *err;
    /* The backend that will run the layers; the layer loaders (blocks.h)
     * let it prepare each layer's weights as they are read. */
    const struct nn_backend *be;
    size_t used;        /* bytes handed out by weights_get */
    size_t dropped;     /* of those, released after the backend prepared its copy */
    size_t prepared;    /* bytes of the backend's prepared copies */
    int conv_px;        /* nn_conv2d.px of the convolutions loaded next (0: unknown) */
    struct weights_layer *layers; /* every linear and convolution loaded */
    int n_layers, cap_layers;
};

/* base: "diffusion_pytorch_model" (unet, vae) or "model" (text encoder).
 * variant: NULL or e.g. "fp16". A missing file gets a message that names
 * what is there instead (a .bin pickle to convert, another variant). */
int weights_open(struct weights *w, const char *dir, const char *component, const char *base,
                 const char *variant, struct sd_err *err);
/* The same for any source. */
int weights_open_src(struct weights *w, const struct weights_src *s, struct sd_err *err);

/* The tensor `name` as float32 with exactly the given dims (ndim ints follow). */
const float *weights_get(struct weights *w, const char *name, int ndim, ...);

/* The backend has its own copy of the tensor at p (n floats, from
 * weights_get): release ours. Converted buffers are freed; pages of the
 * file mapping are dropped from memory (madvise), so each weight is held
 * once. p must not be used afterwards. */
void weights_drop(struct weights *w, const float *p, size_t n);

/* Bytes of weight memory this component holds: tensors in use (mapped or
 * converted) plus the backend's prepared copies. */
static inline size_t weights_resident(const struct weights *w)
{
    return w->used - w->dropped + w->prepared;
}

/* A buffer of n floats owned by w, for weights computed from the file's
 * (a layer recast in another form); counted as used, released by
 * weights_drop or weights_free. NULL on error (sticky, `name` in the
 * message). */
float *weights_derived(struct weights *w, size_t n, const char *name);

/* The tensors parts[0..n) (each `each` floats, from weights_get) stacked
 * one after the other in a buffer owned by w, for layers that run several
 * of the file's matrices as one product (attention's q, k and v). The
 * parts are dropped (weights_drop); they must not be used afterwards.
 * NULL if a part is NULL or on error (sticky, `name` in the message). */
const float *weights_stack(struct weights *w, const float *const *parts, int n, size_t each,
                           const char *name);
/* The tensor `name` as the file holds it (F32, F16 or BF16; a view into
 * the mapping, not converted, not copied), with the given dims, for tables
 * read a few rows at a time (the token embedding): a half-precision file
 * keeps them in half precision. Sticky errors as weights_get; 0 on error. */
int weights_get_raw(struct weights *w, const char *name, struct st_tensor *out, int ndim, ...);

/* Record a loaded layer (blocks.c does it for every layer it loads). */
void weights_add_layer(struct weights *w, const char *name, const char *tensor, int conv, void *layer, int row0,
                       int rows, int cols);

/* Convert the tensor `name` (n floats) to float32 into dst again, from the
 * file: the original values of a layer whose prepared copy must be rebuilt.
 * Not counted as used memory; not sticky. */
int weights_read(const struct weights *w, const char *name, float *dst, size_t n, struct sd_err *err);

/* 1 if the file has a tensor of that name (for alternative spellings). */
int weights_has(const struct weights *w, const char *name);

/* SD_OK, or the first error (also in the err given to weights_open). */
static inline int weights_status(const struct weights *w) { return w->status; }

void weights_free(struct weights *w);

#endif
