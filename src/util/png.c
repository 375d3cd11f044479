/* png.c - see png.h.
 *
 * libpng reports errors by longjmp'ing out of whatever call failed. To keep
 * that manageable every libpng call runs inside one small "guarded"
 * function per direction, and all state that changes after setjmp lives in
 * a context struct owned by the caller (never in the guarded function's
 * locals, whose values would be indeterminate after the longjmp). The
 * caller then frees whatever the context holds, on success or failure.
 */
#include "util/png.h"

#include <errno.h>
#include <png.h>       /* libpng */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* State shared by the libpng callbacks and the guarded functions. */
struct png_ctx {
    png_structp png;
    png_infop info;
    /* decode: input cursor */
    const uint8_t *in;
    size_t in_len, in_pos;
    /* encode: output buffer; decode: pixels */
    uint8_t *buf;
    size_t len, cap;
    png_bytep *rows;
    png_text *text;
    int nomem;                 /* the failure was an allocation */
    int rgba;                  /* decode to RGBA (alpha kept, 255 where none) */
    int had_alpha;             /* decode: the file has an alpha channel or tRNS */
    char msg[160];             /* libpng's error message */
};

static void on_error(png_structp png, png_const_charp msg)
{
    struct png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;   /* warnings (bad ancillary CRCs, extra data...) are not */
    (void)msg;   /* errors, and the library never prints */
}

/* ------------------------------------------------------------------------
 * Encoding */

static void write_fn(png_structp png, png_bytep data, size_t n)
{
    struct png_ctx *c = png_get_io_ptr(png);
    if (n > c->cap - c->len) {
        size_t cap = c->cap ? c->cap : 65536;
        while (cap - c->len < n) {
            if (cap > SIZE_MAX / 2) {
                cap = 0;
                break;
            }
            cap *= 2;
        }
        uint8_t *nb = cap ? realloc(c->buf, cap) : NULL;
        if (!nb) {
            c->nomem = 1;
            png_error(png, "out of memory");
        }
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
}

static void flush_fn(png_structp png)
{
    (void)png;
}

static int encode_guarded(struct png_ctx *c, const uint8_t *rgb, int w, int h,
                          int ntext)
{
    if (setjmp(png_jmpbuf(c->png)))
        return -1;
    png_set_write_fn(c->png, c, write_fn, flush_fn);
    png_set_IHDR(c->png, c->info, (png_uint_32)w, (png_uint_32)h, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(c->png, 6);
    if (ntext)
        png_set_text(c->png, c->info, c->text, ntext);
    png_write_info(c->png, c->info);
    for (int y = 0; y < h; y++)
        png_write_row(c->png, rgb + (size_t)y * (size_t)w * 3);
    png_write_end(c->png, c->info);
    return 0;
}

/* PNG keywords: 1-79 Latin-1 printable characters, no leading, trailing
 * or consecutive spaces. */
static int valid_keyword(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)k[i];
        if (ch < 32 || (ch > 126 && ch < 161) || (ch == ' ' && k[i + 1] == ' '))
            return 0;
    }
    return 1;
}

static int is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

/* Fill c->text from the key/value list; returns the pair count or -1. */
static int make_text(struct png_ctx *c, const char *const *kv, struct sd_err *err)
{
    int n = 0;
    while (kv && kv[2 * n]) {
        if (!kv[2 * n + 1] || !valid_keyword(kv[2 * n]))
            return sd_errf(err, SD_ERR_ARG, "png: invalid text key '%.80s' (or "
                           "missing value)", kv[2 * n]), -1;
        n++;
    }
    if (!n)
        return 0;
    if (!(c->text = calloc((size_t)n, sizeof *c->text)))
        return sd_errf(err, SD_ERR_NOMEM, "png: out of memory"), -1;
    for (int i = 0; i < n; i++) {
        png_text *t = &c->text[i];
        /* libpng does not modify these; its struct just is not const. */
        t->key = (char *)kv[2 * i];
        t->text = (char *)kv[2 * i + 1];
        t->compression = is_ascii(t->text) ? PNG_TEXT_COMPRESSION_NONE
                                           : PNG_ITXT_COMPRESSION_NONE;
    }
    return n;
}

int png_encode_rgb(const uint8_t *rgb, int w, int h, const char *const *text_kv,
                   uint8_t **out, size_t *out_len, struct sd_err *err)
{
    SD_ASSERT(out && out_len);
    *out = NULL;
    *out_len = 0;
    if (w <= 0 || h <= 0 || w > 1000000 || h > 1000000 || !rgb)
        return sd_errf(err, SD_ERR_ARG, "png: cannot encode a %dx%d image", w, h);
    struct png_ctx c = {0};
    int ntext = make_text(&c, text_kv, err);
    if (ntext < 0)
        return err ? err->code : SD_ERR_ARG;
    int rc = SD_OK;
    c.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
    c.info = c.png ? png_create_info_struct(c.png) : NULL;
    if (!c.info)
        rc = sd_errf(err, SD_ERR_NOMEM, "png: out of memory");
    else if (encode_guarded(&c, rgb, w, h, ntext))
        rc = sd_errf(err, c.nomem ? SD_ERR_NOMEM : SD_ERR_INTERNAL,
                     "png: encoding failed: %s", c.msg);
    png_destroy_write_struct(&c.png, &c.info);
    free(c.text);
    if (rc) {
        free(c.buf);
        return rc;
    }
    *out = c.buf;
    *out_len = c.len;
    return SD_OK;
}

/* ------------------------------------------------------------------------
 * Decoding */

static void read_fn(png_structp png, png_bytep out, size_t n)
{
    struct png_ctx *c = png_get_io_ptr(png);
    if (n > c->in_len - c->in_pos)
        png_error(png, "truncated data");
    memcpy(out, c->in + c->in_pos, n);
    c->in_pos += n;
}

/* 1 (and a message in c->msg) if a w x h image is over the limits. */
static int too_large(struct png_ctx *c, uint32_t w, uint32_t h, int max_side)
{
    if (w <= (uint32_t)max_side && h <= (uint32_t)max_side &&
        (uint64_t)w * h <= (uint64_t)PNG_MAX_PIXELS)
        return 0;
    snprintf(c->msg, sizeof c->msg, "image is %ux%u, over the limit of %d "
             "pixels a side / %ld in all", (unsigned)w, (unsigned)h, max_side,
             (long)PNG_MAX_PIXELS);
    return 1;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Walk the chunk list before libpng sees it: 0 ok, 1 too large, -1 bad
 * (c->msg says why). libpng only warns about a chunk longer than
 * PNG_MAX_CHUNK and then allocates (and clears) its declared length, so a
 * 60-byte upload could cost 2 GB; here no chunk may claim more bytes than
 * the input holds. The image size comes from IHDR before any allocation. */
static int prescan(struct png_ctx *c, int max_side)
{
    size_t pos = 8;
    const uint8_t *d = c->in;
    if (c->in_len < 8 + 12 + 13 || be32(d + 8) != 13 || memcmp(d + 12, "IHDR", 4)) {
        snprintf(c->msg, sizeof c->msg, "truncated or missing IHDR chunk");
        return -1;
    }
    uint32_t w = be32(d + 16), h = be32(d + 20);
    if (w && h && w < 0x80000000u && h < 0x80000000u &&
        too_large(c, w, h, max_side))
        return 1;   /* zero or out-of-range sizes: libpng explains */
    while (c->in_len - pos >= 12) {
        uint32_t n = be32(d + pos);
        if (n > c->in_len - pos - 12) {
            snprintf(c->msg, sizeof c->msg, "truncated data: chunk at byte %zu "
                     "claims %u bytes", pos, (unsigned)n);
            return -1;
        }
        if (!memcmp(d + pos + 4, "IEND", 4))
            return 0;
        pos += 12 + (size_t)n;
    }
    snprintf(c->msg, sizeof c->msg, "truncated data: no IEND chunk");
    return -1;
}

/* Read the header and check the size; 1 if too large (c->msg says why). */
static int decode_header(struct png_ctx *c, int max_side, png_uint_32 *w,
                         png_uint_32 *h)
{
    png_read_info(c->png, c->info);
    *w = png_get_image_width(c->png, c->info);
    *h = png_get_image_height(c->png, c->info);
    if (too_large(c, *w, *h, max_side))
        return 1;
    int ct = png_get_color_type(c->png, c->info);
    c->had_alpha = (ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(c->png, c->info, PNG_INFO_tRNS);
    /* Whatever the stored format, deliver 8-bit RGB (or RGBA). */
    png_set_expand(c->png);          /* palette, low bit depths, tRNS */
    png_set_strip_16(c->png);        /* high byte, as PIL */
    if (c->rgba)
        png_set_add_alpha(c->png, 0xff, PNG_FILLER_AFTER); /* no-op when there is alpha */
    else
        png_set_strip_alpha(c->png);
    png_set_gray_to_rgb(c->png);
    png_set_interlace_handling(c->png);
    png_read_update_info(c->png, c->info);
    if (png_get_rowbytes(c->png, c->info) != (size_t)*w * (c->rgba ? 4 : 3))
        png_error(c->png, "unexpected row size after conversion to RGB");
    return 0;
}

/* 0 ok, 1 too large, -1 libpng error. */
static int decode_guarded(struct png_ctx *c, int max_side, png_uint_32 *w,
                          png_uint_32 *h)
{
    if (setjmp(png_jmpbuf(c->png)))
        return -1;
    png_set_read_fn(c->png, c, read_fn);
    /* prescan and decode_header check sizes (libpng would stop at 1e6). */
    png_set_user_limits(c->png, 0x7fffffff, 0x7fffffff);
    png_set_chunk_malloc_max(c->png, PNG_MAX_CHUNK);
    png_set_chunk_cache_max(c->png, 256);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    /* Let mutated inputs past the CRCs so the fuzzer reaches the decoder. */
    png_set_crc_action(c->png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
#endif
    if (decode_header(c, max_side, w, h))
        return 1;
    size_t stride = (size_t)*w * (c->rgba ? 4 : 3);
    c->buf = malloc(stride * *h);
    c->rows = malloc(*h * sizeof *c->rows);
    if (!c->buf || !c->rows) {
        c->nomem = 1;
        png_error(c->png, "out of memory");
    }
    for (png_uint_32 y = 0; y < *h; y++)
        c->rows[y] = c->buf + y * stride;
    png_read_image(c->png, c->rows);
    png_read_end(c->png, c->info);   /* text chunks after the image data */
    return 0;
}

/* A copy of the "parameters" text, or NULL. */
static char *find_params(const struct png_ctx *c, int *nomem)
{
    png_textp text;
    int n = 0;
    png_get_text(c->png, c->info, &text, &n);
    for (int i = 0; i < n; i++)
        if (!strcmp(text[i].key, "parameters")) {
            char *s = strdup(text[i].text ? text[i].text : "");
            *nomem = !s;
            return s;
        }
    return NULL;
}

static int decode(const uint8_t *data, size_t len, int max_side, int rgba, uint8_t **rgb,
                  int *w, int *h, char **params, int *had_alpha, struct sd_err *err)
{
    SD_ASSERT(rgb && w && h);
    *rgb = NULL;
    *w = *h = 0;
    if (params)
        *params = NULL;
    if (max_side <= 0)
        return sd_errf(err, SD_ERR_ARG, "png: max_side %d must be positive",
                       max_side);
    if (len < 8 || png_sig_cmp(data, 0, 8))
        return sd_errf(err, SD_ERR_FORMAT, "png: not a PNG file");
    struct png_ctx c = {.in = data, .in_len = len, .rgba = rgba};
    int r = prescan(&c, max_side);
    if (r)
        return sd_errf(err, r > 0 ? SD_ERR_UNSUPPORTED : SD_ERR_FORMAT,
                       "png: %s", c.msg);
    c.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
    c.info = c.png ? png_create_info_struct(c.png) : NULL;
    png_uint_32 pw = 0, ph = 0;
    int rc = SD_OK, nomem = 0;
    if (!c.info)
        rc = sd_errf(err, SD_ERR_NOMEM, "png: out of memory");
    else if ((r = decode_guarded(&c, max_side, &pw, &ph)) != 0)
        rc = sd_errf(err, r > 0 ? SD_ERR_UNSUPPORTED :
                     c.nomem ? SD_ERR_NOMEM : SD_ERR_FORMAT, "png: %s", c.msg);
    else if (params && !(*params = find_params(&c, &nomem)) && nomem)
        rc = sd_errf(err, SD_ERR_NOMEM, "png: out of memory");
    png_destroy_read_struct(&c.png, &c.info, NULL);
    free(c.rows);
    if (rc) {
        free(c.buf);
        return rc;
    }
    *rgb = c.buf;
    *w = (int)pw;
    *h = (int)ph;
    if (had_alpha)
        *had_alpha = c.had_alpha;
    return SD_OK;
}

int png_decode_rgb(const uint8_t *data, size_t len, int max_side, uint8_t **rgb,
                   int *w, int *h, char **params, struct sd_err *err)
{
    return decode(data, len, max_side, 0, rgb, w, h, params, NULL, err);
}

int png_decode_rgba(const uint8_t *data, size_t len, int max_side, uint8_t **rgba,
                    int *w, int *h, int *had_alpha, struct sd_err *err)
{
    return decode(data, len, max_side, 1, rgba, w, h, NULL, had_alpha, err);
}

/* ------------------------------------------------------------------------
 * Files */

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int png_write_file(const char *path, const uint8_t *data, size_t len,
                   struct sd_err *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 8);
    if (!tmp)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".XXXXXX", 8);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int rc = sd_errf(err, SD_ERR_IO, "%s: cannot create: %s", path,
                         strerror(errno));
        free(tmp);
        return rc;
    }
    /* fsync before rename: after a crash the name points at complete data. */
    const char *what = NULL;
    if (write_all(fd, data, len))
        what = "write";
    else if (fchmod(fd, 0644))
        what = "chmod";
    else if (fsync(fd))
        what = "fsync";
    int e = errno;
    if (close(fd) && !what) {
        what = "close";
        e = errno;
    }
    if (!what && rename(tmp, path)) {
        what = "rename";
        e = errno;
    }
    int rc = SD_OK;
    if (what) {
        unlink(tmp);
        rc = sd_errf(err, SD_ERR_IO, "%s: %s failed: %s", path, what, strerror(e));
    }
    free(tmp);
    return rc;
}
