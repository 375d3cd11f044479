/* safetensors.c - see safetensors.h.
 *
 * Opening is: read the 8-byte length, parse the JSON header with jansson,
 * turn every entry into a struct st_tensor (checking it against the data
 * buffer), sort by name for st_find, then sort by offset to find overlaps.
 * Names and metadata strings are copied into one pool so the jansson tree
 * can be dropped right away.
 */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (F32/F64 are memcpy'd)"
#endif

struct st_file {
    char *path;              /* label for messages, owned */
    void *map;               /* mmap'd file, or NULL for st_parse buffers */
    size_t map_len;
    const uint8_t *data;     /* start of the data buffer */
    size_t data_len;
    int n;
    struct st_tensor *t;     /* n tensors, sorted by name */
    int nmeta;
    const char **meta;       /* 2*nmeta: key, value, key, value... */
    char *pool;              /* every name, key and value string */
    int header_only;         /* st_parse_header: no data buffer */
};

static const struct {
    const char *name;
    size_t size;
} dtypes[ST_NDTYPES] = {
    [ST_F64] = {"F64", 8},       [ST_F32] = {"F32", 4},
    [ST_F16] = {"F16", 2},       [ST_BF16] = {"BF16", 2},
    [ST_I64] = {"I64", 8},       [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2},       [ST_I8] = {"I8", 1},
    [ST_U64] = {"U64", 8},       [ST_U32] = {"U32", 4},
    [ST_U16] = {"U16", 2},       [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},     [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E8M0] = {"F8_E8M0", 1},
    [ST_C64] = {"C64", 8},
};

size_t st_dtype_size(enum st_dtype dt)
{
    SD_ASSERT((unsigned)dt < ST_NDTYPES);
    return dtypes[dt].size;
}

const char *st_dtype_name(enum st_dtype dt)
{
    SD_ASSERT((unsigned)dt < ST_NDTYPES);
    return dtypes[dt].name;
}

static int dtype_lookup(const char *name)
{
    for (int i = 0; i < ST_NDTYPES; i++)
        if (!strcmp(dtypes[i].name, name))
            return i;
    return -1;
}

/* ------------------------------------------------------------------------
 * Header entries */

/* "[320,4,3,3]" into buf (truncated if it does not fit). */
static const char *shape_str(char *buf, size_t cap, const struct st_tensor *t)
{
    size_t k = 0;
    buf[k++] = '[';
    buf[k] = 0;
    for (int i = 0; i < t->ndim && k < cap; i++)
        k += snprintf(buf + k, cap - k, "%s%lld", i ? "," : "",
                      (long long)t->shape[i]);
    if (k + 2 <= cap)
        strcpy(buf + k, "]");
    return buf;
}

/* A non-negative JSON integer, or -1. */
static int64_t json_uint(const json_t *v)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    return (int64_t)json_integer_value(v);
}

/* Fill t->ndim, shape, numel, nbytes from the "shape" array (dtype set). */
static int parse_shape(struct st_tensor *t, const json_t *shape,
                       const char *path, struct sd_err *err)
{
    if (!json_is_array(shape))
        return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': shape is "
                       "missing or not a list", path, t->name);
    size_t nd = json_array_size(shape);
    if (nd > ST_MAX_DIMS)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: tensor '%.200s': %zu "
                       "dimensions (at most %d supported)", path, t->name,
                       nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    int zero = 0;
    for (int i = 0; i < t->ndim; i++) {
        t->shape[i] = json_uint(json_array_get(shape, i));
        if (t->shape[i] < 0)
            return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': shape[%d]"
                           " is not a non-negative integer", path, t->name, i);
        zero |= t->shape[i] == 0;
    }
    /* An empty tensor may have huge other dims: its product is still 0. */
    uint64_t numel = 1, limit = SIZE_MAX / dtypes[t->dtype].size;
    if (limit > INT64_MAX)
        limit = INT64_MAX;
    for (int i = 0; i < t->ndim && !zero; i++) {
        uint64_t d = (uint64_t)t->shape[i];
        if (numel > limit / d) {
            char sb[128];
            return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': shape %s "
                           "is too large", path, t->name,
                           shape_str(sb, sizeof sb, t));
        }
        numel *= d;
    }
    t->numel = zero ? 0 : (int64_t)numel;
    t->nbytes = (size_t)t->numel * dtypes[t->dtype].size;
    return SD_OK;
}

/* One "name": {"dtype", "shape", "data_offsets"} entry into *t. t->name is
 * already set. */
static int parse_entry(struct st_tensor *t, const json_t *v,
                       const struct st_file *f, struct sd_err *err)
{
    const char *path = f->path;
    if (!json_is_object(v))
        return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': entry is not "
                       "an object", path, t->name);
    const json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt))
        return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': dtype is "
                       "missing or not a string", path, t->name);
    int d = dtype_lookup(json_string_value(dt));
    if (d < 0)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: tensor '%.200s': unknown "
                       "dtype '%.40s'", path, t->name, json_string_value(dt));
    t->dtype = (enum st_dtype)d;
    int rc = parse_shape(t, json_object_get(v, "shape"), path, err);
    if (rc)
        return rc;

    if (f->header_only) {
        t->data = NULL;
        return SD_OK;
    }
    const json_t *off = json_object_get(v, "data_offsets");
    int64_t begin = json_uint(json_array_get(off, 0));
    int64_t end = json_uint(json_array_get(off, 1));
    if (!json_is_array(off) || json_array_size(off) != 2 || begin < 0 || end < 0)
        return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': data_offsets "
                       "must be [begin, end] non-negative integers", path,
                       t->name);
    if (begin > end || (uint64_t)end > f->data_len)
        return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': data_offsets "
                       "[%lld, %lld] outside the %zu-byte data buffer", path,
                       t->name, (long long)begin, (long long)end, f->data_len);
    if ((uint64_t)(end - begin) != t->nbytes) {
        char sb[128];
        return sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s': data_offsets "
                       "[%lld, %lld] but shape %s %s needs %zu bytes", path,
                       t->name, (long long)begin, (long long)end,
                       shape_str(sb, sizeof sb, t), dtypes[t->dtype].name,
                       t->nbytes);
    }
    t->data = f->data + begin;
    return SD_OK;
}

/* Copy the __metadata__ object (string -> string) into f->meta. */
static int parse_metadata(struct st_file *f, const json_t *md, char **pool,
                          struct sd_err *err)
{
    if (!json_is_object(md))
        return sd_errf(err, SD_ERR_FORMAT, "%s: __metadata__ is not an object",
                       f->path);
    f->meta = calloc(2 * json_object_size(md) + 1, sizeof *f->meta);
    if (!f->meta)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", f->path);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)md, key, v) {
        if (!json_is_string(v))
            return sd_errf(err, SD_ERR_FORMAT, "%s: __metadata__ '%.200s' is "
                           "not a string", f->path, key);
        size_t kl = strlen(key) + 1, vl = json_string_length(v) + 1;
        f->meta[2 * f->nmeta] = memcpy(*pool, key, kl);
        f->meta[2 * f->nmeta + 1] = memcpy(*pool + kl, json_string_value(v), vl);
        *pool += kl + vl;
        f->nmeta++;
    }
    return SD_OK;
}

/* Bytes needed to copy every key (and metadata value) of the header. */
static size_t pool_size(const json_t *root)
{
    size_t total = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)root, key, v) {
        total += strlen(key) + 1;
        if (!strcmp(key, "__metadata__") && json_is_object(v)) {
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2)
                total += strlen(k2) + 1 + (json_is_string(v2) ?
                                           json_string_length(v2) + 1 : 0);
        }
    }
    return total;
}

/* ------------------------------------------------------------------------
 * Whole-file checks */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct st_tensor *)a)->name,
                  ((const struct st_tensor *)b)->name);
}

static int cmp_offset(const void *a, const void *b)
{
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    if (x->data != y->data)
        return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* No two non-empty tensors may share a byte. */
static int check_overlap(const struct st_file *f, struct sd_err *err)
{
    const struct st_tensor **by = malloc((f->n ? f->n : 1) * sizeof *by);
    if (!by)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", f->path);
    int m = 0;
    for (int i = 0; i < f->n; i++)
        if (f->t[i].nbytes)
            by[m++] = &f->t[i];
    qsort(by, m, sizeof *by, cmp_offset);
    int rc = SD_OK;
    for (int i = 1; i < m && !rc; i++) {
        const struct st_tensor *a = by[i - 1], *b = by[i];
        if (b->data < a->data + a->nbytes)
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: tensors '%.150s' [%zu, %zu] "
                         "and '%.150s' [%zu, %zu] overlap", f->path, a->name,
                         (size_t)(a->data - f->data),
                         (size_t)(a->data - f->data) + a->nbytes, b->name,
                         (size_t)(b->data - f->data),
                         (size_t)(b->data - f->data) + b->nbytes);
    }
    free(by);
    return rc;
}

/* Parse the JSON header `hdr` (hlen bytes) into f. */
static int parse_header(struct st_file *f, const uint8_t *hdr, size_t hlen,
                        struct sd_err *err)
{
    json_error_t je;
    json_t *root = json_loadb((const char *)hdr, hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (json_error_code(&je) == json_error_duplicate_key)
            return sd_errf(err, SD_ERR_FORMAT, "%s: header: duplicate name "
                           "(%s)", f->path, je.text);
        return sd_errf(err, SD_ERR_FORMAT, "%s: header is not valid JSON: %s "
                       "at byte %d", f->path, je.text, je.position);
    }
    int rc = SD_OK;
    size_t n = json_object_size(root);   /* 0 for a non-object */
    if (!json_is_object(root)) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: header is not a JSON object",
                     f->path);
        goto out;
    }
    f->t = calloc(n ? n : 1, sizeof *f->t);
    char *pool = f->pool = malloc(pool_size(root) + 1);
    if (!f->t || !pool) {
        rc = sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", f->path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if ((rc = parse_metadata(f, v, &pool, err)))
                goto out;
            continue;
        }
        struct st_tensor *t = &f->t[f->n];
        size_t kl = strlen(key) + 1;
        t->name = memcpy(pool, key, kl);
        pool += kl;
        if ((rc = parse_entry(t, v, f, err)))
            goto out;
        f->n++;
    }
    qsort(f->t, f->n, sizeof *f->t, cmp_name);
    if (f->header_only)
        goto out;
    for (int i = 1; i < f->n; i++)   /* jansson already rejects these */
        if (!strcmp(f->t[i - 1].name, f->t[i].name)) {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s' appears "
                         "twice", f->path, f->t[i].name);
            goto out;
        }
    rc = check_overlap(f, err);
out:
    json_decref(root);
    return rc;
}

/* Validate buf[0..len) as a whole file; f->path is set. */
static int parse_buffer(struct st_file *f, const uint8_t *buf, size_t len,
                        struct sd_err *err)
{
    if (len < 8)
        return sd_errf(err, SD_ERR_FORMAT, "%s: truncated: %zu bytes, no header "
                       "length", f->path, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > ST_MAX_HEADER)
        return sd_errf(err, SD_ERR_FORMAT, "%s: header length %llu exceeds the "
                       "%u-byte limit", f->path, (unsigned long long)hlen,
                       ST_MAX_HEADER);
    if (hlen > len - 8)
        return sd_errf(err, SD_ERR_FORMAT, "%s: truncated: header length %llu "
                       "but only %zu bytes follow", f->path,
                       (unsigned long long)hlen, len - 8);
    if (f->header_only)
        return parse_header(f, buf + 8, hlen, err);
    f->data = buf + 8 + hlen;
    f->data_len = len - 8 - hlen;
    return parse_header(f, buf + 8, hlen, err);
}

static struct st_file *file_new(const char *label)
{
    struct st_file *f = calloc(1, sizeof *f);
    if (f && !(f->path = strdup(label ? label : "<buffer>"))) {
        free(f);
        f = NULL;
    }
    return f;
}

int st_parse(struct st_file **out, const uint8_t *buf, size_t len,
             const char *label, struct sd_err *err)
{
    *out = NULL;
    struct st_file *f = file_new(label);
    if (!f)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", label);
    int rc = parse_buffer(f, buf, len, err);
    if (rc) {
        st_close(f);
        return rc;
    }
    *out = f;
    return SD_OK;
}

int st_parse_header(struct st_file **out, const uint8_t *buf, size_t len, const char *label,
                    struct sd_err *err)
{
    *out = NULL;
    struct st_file *f = file_new(label);
    if (!f)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", label);
    f->header_only = 1;
    int rc = parse_buffer(f, buf, len, err);
    if (rc) {
        st_close(f);
        return rc;
    }
    *out = f;
    return SD_OK;
}

void st_release_pages(const struct st_file *f, const void *p, size_t n)
{
    const uint8_t *lo = f->map, *q = p;
    if (!lo || q < lo || n > f->map_len || (size_t)(q - lo) > f->map_len - n)
        return; /* not in a mapping of ours: never madvise the heap */
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)q + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t b = ((uintptr_t)q + n) & ~(uintptr_t)(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

int st_from_mapping(struct st_file **out, const char *label, void *map, size_t map_len,
                    const struct st_tensor *ts, int n, const char *const *meta_kv, struct sd_err *err)
{
    *out = NULL;
    struct st_file *f = file_new(label);
    if (!f)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", label);
    size_t pool = 1;
    int nmeta = 0;
    for (int i = 0; i < n; i++)
        pool += strlen(ts[i].name) + 1;
    for (int i = 0; meta_kv && meta_kv[i]; i++, nmeta++)
        pool += strlen(meta_kv[i]) + 1;
    nmeta /= 2;
    f->t = calloc(n ? n : 1, sizeof *f->t);
    f->pool = malloc(pool);
    f->meta = calloc(2 * nmeta + 1, sizeof *f->meta);
    int rc = SD_OK;
    if (!f->t || !f->pool || !f->meta)
        rc = sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", label);
    char *p = f->pool;
    const uint8_t *lo = map, *hi = lo + map_len;
    for (int i = 0; !rc && i < n; i++) {
        const struct st_tensor *t = &ts[i];
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS || (unsigned)t->dtype >= ST_NDTYPES ||
            (t->nbytes && (t->data < lo || t->data > hi || t->nbytes > (size_t)(hi - t->data)))) {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s' lies outside the file", label, t->name);
            break;
        }
        f->t[f->n] = *t;
        size_t l = strlen(t->name) + 1;
        f->t[f->n].name = memcpy(p, t->name, l);
        p += l;
        f->n++;
    }
    for (int i = 0; !rc && i < 2 * nmeta; i++) {
        size_t l = strlen(meta_kv[i]) + 1;
        f->meta[i] = memcpy(p, meta_kv[i], l);
        p += l;
    }
    f->nmeta = nmeta;
    if (!rc) {
        qsort(f->t, f->n, sizeof *f->t, cmp_name);
        for (int i = 1; i < f->n && !rc; i++)
            if (!strcmp(f->t[i - 1].name, f->t[i].name))
                rc = sd_errf(err, SD_ERR_FORMAT, "%s: tensor '%.200s' appears twice", label, f->t[i].name);
    }
    if (rc) {
        st_close(f);
        return rc;
    }
    f->map = map;
    f->map_len = map_len;
    f->data = map;
    f->data_len = map_len;
    *out = f;
    return SD_OK;
}

int st_open(struct st_file **out, const char *path, struct sd_err *err)
{
    *out = NULL;
    struct st_file *f = file_new(path);
    if (!f)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", path);
    int rc = SD_OK;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        rc = sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = sd_errf(err, SD_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    if (st.st_size < 8) {   /* also keeps mmap away from empty files */
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: truncated: %lld bytes, no header "
                     "length", path, (long long)st.st_size);
        goto out;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = sd_errf(err, SD_ERR_UNSUPPORTED, "%s: too large to map", path);
        goto out;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        rc = sd_errf(err, SD_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        goto out;
    }
    f->map = map;
    f->map_len = (size_t)st.st_size;
    rc = parse_buffer(f, map, f->map_len, err);
out:
    if (fd >= 0)
        close(fd);   /* the mapping stays valid without the descriptor */
    if (rc)
        st_close(f);
    else
        *out = f;
    return rc;
}

void st_close(struct st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    free(f->t);
    free(f->meta);
    free(f->pool);
    free(f->path);
    free(f);
}

void st_prefetch(const struct st_file *f)
{
    if (f->map)
        madvise(f->map, f->map_len, MADV_WILLNEED);   /* a hint: ignore errors */
}

/* ------------------------------------------------------------------------
 * Lookups */

int st_count(const struct st_file *f) { return f->n; }

const struct st_tensor *st_at(const struct st_file *f, int i)
{
    SD_ASSERT(i >= 0 && i < f->n);
    return &f->t[i];
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    int lo = 0, hi = f->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->t[mid].name);
        if (!c)
            return &f->t[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *st_metadata(const struct st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta[2 * i], key))
            return f->meta[2 * i + 1];
    return NULL;
}

int st_metadata_count(const struct st_file *f) { return f->nmeta; }

void st_metadata_at(const struct st_file *f, int i, const char **key,
                    const char **value)
{
    SD_ASSERT(i >= 0 && i < f->nmeta);
    *key = f->meta[2 * i];
    *value = f->meta[2 * i + 1];
}

const char *st_path(const struct st_file *f) { return f->path; }

int st_index(const struct st_file *f, const struct st_tensor *t)
{
    return t >= f->t && t < f->t + f->n ? (int)(t - f->t) : -1;
}

/* ------------------------------------------------------------------------
 * Conversion to float32. Values go through uint32_t bit patterns so NaN
 * payloads (even signalling ones) arrive unchanged. */

static uint32_t f16_bits(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f)                       /* inf, nan */
        return sign | 0x7f800000 | man << 13;
    if (exp)                               /* normal: rebias 15 -> 127 */
        return sign | (exp + 112) << 23 | man << 13;
    if (!man)
        return sign;
    /* Subnormal man * 2^-24: shift the leading 1 up to the implicit bit,
     * lowering the exponent from that of 2^-14 (field 113) each time. */
    uint32_t e = 113;
    while (!(man & 0x400)) {
        man <<= 1;
        e--;
    }
    return sign | e << 23 | (man & 0x3ff) << 13;
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t b = f16_bits(h);
    float x;
    memcpy(&x, &b, 4);
    return x;
}

float st_bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

int st_to_f32(const struct st_tensor *t, float *dst, struct sd_err *err)
{
    const uint8_t *p = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case ST_F32:
        if (n)
            memcpy(dst, p, n * 4);
        return SD_OK;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            uint32_t b = t->dtype == ST_F16 ? f16_bits(h) : (uint32_t)h << 16;
            memcpy(dst + i, &b, 4);
        }
        return SD_OK;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return SD_OK;
    default:
        return sd_errf(err, SD_ERR_UNSUPPORTED, "tensor '%.200s': cannot "
                       "convert %s to float32", t->name, dtypes[t->dtype].name);
    }
}

/* ------------------------------------------------------------------------
 * Writer */

static json_t *header_json(const struct st_tensor *ts, int n,
                           const char *const *kv, const char **bad)
{
    json_t *root = json_object(), *md = kv && kv[0] ? json_object() : NULL;
    if (md)
        json_object_set_new(root, "__metadata__", md);
    for (int i = 0; md && kv[i]; i += 2)
        if (!kv[i + 1] || json_object_set_new(md, kv[i], json_string(kv[i + 1])))
            goto fail;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const struct st_tensor *t = &ts[i];
        size_t nb = dtypes[t->dtype].size;
        json_t *e = json_object(), *shape = json_array();
        json_object_set_new(e, "shape", shape);
        for (int d = 0; d < t->ndim; d++) {
            json_array_append_new(shape, json_integer(t->shape[d]));
            nb *= (size_t)t->shape[d];
        }
        json_object_set_new(e, "dtype", json_string(dtypes[t->dtype].name));
        json_object_set_new(e, "data_offsets",
                            json_pack("[I,I]", (json_int_t)off,
                                      (json_int_t)(off + nb)));
        off += nb;
        if (json_object_get(root, t->name)) {
            json_decref(e);
            e = NULL;
        }
        if (!e || json_object_set_new(root, t->name, e)) {
            *bad = t->name;
            goto fail;
        }
    }
    return root;
fail:
    json_decref(root);
    return NULL;
}

int st_write(const char *path, const struct st_tensor *ts, int n,
             const char *const *metadata_kv, struct sd_err *err)
{
    for (int i = 0; i < n; i++)
        SD_ASSERT((unsigned)ts[i].dtype < ST_NDTYPES && ts[i].ndim >= 0 &&
                  ts[i].ndim <= ST_MAX_DIMS);
    const char *bad = "__metadata__";
    json_t *root = header_json(ts, n, metadata_kv, &bad);
    char *hdr = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!hdr)
        return sd_errf(err, SD_ERR_ARG, "%s: cannot write tensor '%s' (duplicate"
                       " or invalid name, or bad metadata)", path, bad);
    size_t hlen = strlen(hdr), pad = (8 - hlen % 8) % 8;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)(hlen + pad) >> (8 * i));

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 8);
    int rc = SD_OK, fd = -1;
    FILE *fp = NULL;
    if (!tmp) {
        free(hdr);
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".XXXXXX", 8);
    if ((fd = mkstemp(tmp)) < 0 || !(fp = fdopen(fd, "wb"))) {
        rc = sd_errf(err, SD_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;   /* owned by fp now */
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(hdr, 1, hlen, fp) == hlen &&
             fwrite("        ", 1, pad, fp) == pad;
    for (int i = 0; ok && i < n; i++) {
        size_t nb = dtypes[ts[i].dtype].size;
        for (int d = 0; d < ts[i].ndim; d++)
            nb *= (size_t)ts[i].shape[d];
        ok = !nb || fwrite(ts[i].data, 1, nb, fp) == nb;
    }
    ok &= fchmod(fileno(fp), 0644) == 0;
    ok &= fclose(fp) == 0;
    fp = NULL;
    if (!ok || rename(tmp, path) != 0)
        rc = sd_errf(err, SD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
out:
    if (fp)
        fclose(fp);
    if (fd >= 0)
        close(fd);
    if (rc)
        unlink(tmp);   /* harmless when mkstemp failed */
    free(tmp);
    free(hdr);
    return rc;
}
