/* safetensors.h - strict reader (and a small writer) for .safetensors files.
 *
 * The format (see docs in sd-reference.md section 5.1):
 *
 *     bytes 0..7      N, unsigned 64-bit little-endian: length of the header
 *     bytes 8..8+N-1  JSON object, UTF-8, possibly right-padded with spaces:
 *                       {"__metadata__": {"k": "v", ...},          (optional)
 *                        "name": {"dtype": "F32", "shape": [2, 3],
 *                                 "data_offsets": [begin, end]}, ...}
 *     bytes 8+N..     the data buffer; offsets are relative to its start
 *
 * Tensors are row-major, little-endian, contiguous and possibly unaligned
 * (old writers did not pad the header), so never cast `data` to float *:
 * use st_to_f32() or memcpy.
 *
 *     struct st_file *f;
 *     if (st_open(&f, "unet/diffusion_pytorch_model.safetensors", &err))
 *         return err.code;
 *     const struct st_tensor *t = st_find(f, "conv_in.weight");
 *     float *w = malloc(t->numel * sizeof *w);
 *     st_to_f32(t, w, &err);
 *     st_close(f);      (t and t->data are invalid from here on)
 *
 * Validation is complete at open time: every tensor has a known dtype, a
 * shape whose byte size fits, offsets inside the data buffer that match that
 * size, no two tensors overlap and no name appears twice. Holes between
 * tensors and trailing bytes after the last one are allowed (foreign writers
 * produce them). Keys other than dtype/shape/data_offsets inside a tensor
 * entry are ignored. Any violation fails the whole file with a message
 * naming the file and the tensor.
 *
 * Opening only parses the header; st_open maps the file read-only
 * (MAP_PRIVATE), so a 3.4 GB UNet costs no copy and pages come in on use.
 * An st_file is immutable after opening and may be read from any number of
 * threads at once.
 */
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Every byte-sized dtype of the format. The sub-byte micro-floats (F4, F6_*)
 * are rejected as unsupported. */
enum st_dtype {
    ST_F64,
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_I64,
    ST_I32,
    ST_I16,
    ST_I8,
    ST_U64,
    ST_U32,
    ST_U16,
    ST_U8,
    ST_BOOL,
    ST_F8_E4M3,
    ST_F8_E5M2,
    ST_F8_E8M0,
    ST_C64,
    ST_NDTYPES
};

#define ST_MAX_DIMS 8

/* Largest header the reader accepts (the reference reader's limit). */
#define ST_MAX_HEADER (100u * 1000 * 1000)

struct st_tensor {
    const char *name;        /* NUL-terminated, owned by the st_file */
    enum st_dtype dtype;
    int ndim;                /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;           /* product of shape (1 for a scalar) */
    size_t nbytes;           /* numel * st_dtype_size(dtype) */
    const uint8_t *data;     /* nbytes bytes in the mapping/buffer; unaligned */
};

struct st_file;

/* Map `path` read-only and validate its header. On success *out owns the
 * mapping; release it with st_close. On failure *out is NULL and err says
 * why: SD_ERR_IO (cannot open/map), SD_ERR_FORMAT (malformed),
 * SD_ERR_UNSUPPORTED (unknown dtype, more than ST_MAX_DIMS dims),
 * SD_ERR_NOMEM. */
int st_open(struct st_file **out, const char *path, struct sd_err *err);

/* Same as st_open for bytes already in memory. The caller keeps buf alive
 * (and unchanged) until st_close; tensors point into it. `label` names the
 * buffer in messages and in st_path (copied). */
int st_parse(struct st_file **out, const uint8_t *buf, size_t len,
             const char *label, struct sd_err *err);

/* Only the header of a file (the 8-byte length and the JSON, as `head -c`
 * of a checkpoint gives it; more bytes after it are ignored): names,
 * dtypes, shapes and metadata, every tensor's data NULL. For inspecting
 * and for tests of what is decided from names and shapes alone. */
int st_parse_header(struct st_file **out, const uint8_t *buf, size_t len, const char *label,
                    struct sd_err *err);

/* An st_file over tensors that already lie in a read-only mapping (a
 * PyTorch zip checkpoint's storages, pytorch.h): takes ownership of map
 * (unmapped by st_close) and copies the descriptors and names of ts[0..n).
 * Each tensor must lie inside the mapping; names must be unique (tensors may
 * share bytes: views of one storage). meta_kv as for st_write. */
int st_from_mapping(struct st_file **out, const char *label, void *map, size_t map_len,
                    const struct st_tensor *ts, int n, const char *const *meta_kv, struct sd_err *err);

/* Unmap / release everything. NULL is fine. */
void st_close(struct st_file *f);

/* Ask the kernel to start reading the whole data buffer in the background
 * (madvise WILLNEED); worth it right before converting all weights. A no-op
 * for st_parse buffers. */
void st_prefetch(const struct st_file *f);

/* Tensors in name order (strcmp), i in [0, st_count). */
int st_count(const struct st_file *f);
const struct st_tensor *st_at(const struct st_file *f, int i);

/* Binary search by exact name; NULL if absent. */
const struct st_tensor *st_find(const struct st_file *f, const char *name);

/* Value of a __metadata__ entry, NULL if absent. Pairs in file order are
 * available through st_metadata_count / st_metadata_at. */
const char *st_metadata(const struct st_file *f, const char *key);
int st_metadata_count(const struct st_file *f);
void st_metadata_at(const struct st_file *f, int i, const char **key,
                    const char **value);

/* The path (or label) the file was opened with. */
const char *st_path(const struct st_file *f);

/* i such that st_at(f, i) == t, or -1 if t is not one of f's tensors. */
int st_index(const struct st_file *f, const struct st_tensor *t);

/* Bytes per element (1 for BOOL and the F8 types, 8 for C64) and the
 * format's name ("F32"). */
size_t st_dtype_size(enum st_dtype dt);

/* The pages wholly inside [p, p + n) of f's file mapping are dropped from
 * memory (they are re-read from the file if touched again): for tensors
 * converted to another format, so the file's copy stops counting. A no-op
 * for anything outside a mapping st_open made. */
void st_release_pages(const struct st_file *f, const void *p, size_t n);
const char *st_dtype_name(enum st_dtype dt);

/* Convert F32/F16/BF16/F64 data to float32 into dst (t->numel floats).
 * F16 and BF16 are exact (subnormals, infinities, NaN payloads kept); F64
 * rounds to nearest like a C cast. Other dtypes: SD_ERR_UNSUPPORTED. */
int st_to_f32(const struct st_tensor *t, float *dst, struct sd_err *err);

/* Exact conversions of one value, exposed for tests and kernels. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);

/* Write a safetensors file (for tests and tools). Each tensor needs name,
 * dtype, ndim, shape and data (st_dtype_size * product(shape) bytes; numel
 * and nbytes are recomputed). metadata_kv is NULL or a NULL-terminated list
 * "key", "value", ...; names must be unique and differ from __metadata__.
 * The header is padded to a multiple of 8 and tensors are stored in the
 * given order. The file appears atomically (temp file + rename). */
int st_write(const char *path, const struct st_tensor *tensors, int n,
             const char *const *metadata_kv, struct sd_err *err);

#endif
