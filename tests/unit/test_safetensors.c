/* test_safetensors.c - safetensors reader: valid files written by the
 * reference library (tests/data/st/make_testdata.py), every rejection path
 * with its message, the writer, and exhaustive F16/BF16 conversion. */
#include "model/safetensors.h"
#include "test.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Helpers */

static uint32_t fbits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

/* A file image: 8-byte length, `json`, then `data_len` bytes 0, 1, 2...
 * Exact-size heap buffer so ASan sees any over-read. */
static uint8_t *build(const char *json, size_t data_len, size_t *len)
{
    size_t hl = strlen(json);
    *len = 8 + hl + data_len;
    uint8_t *b = malloc(*len);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    for (size_t i = 0; i < data_len; i++)
        b[8 + hl + i] = (uint8_t)i;
    return b;
}

/* Parse json+data and expect failure `code` with `msg` in the message. */
static int rejects(const char *json, size_t data_len, int code, const char *msg)
{
    size_t len;
    uint8_t *b = build(json, data_len, &len);
    struct st_file *f = (struct st_file *)b;   /* must be reset to NULL */
    struct sd_err err = {0};
    int rc = st_parse(&f, b, len, "x.safetensors", &err);
    int ok = rc == code && f == NULL && strstr(err.msg, msg) &&
             !strncmp(err.msg, "x.safetensors: ", 15);
    if (!ok)
        fprintf(stderr, "  rejects(%s): rc %d, msg '%s'\n", json, rc, err.msg);
    st_close(f);
    free(b);
    return ok;
}

static struct st_file *parse_ok(const char *json, size_t data_len, uint8_t **buf)
{
    size_t len;
    *buf = build(json, data_len, &len);
    struct st_file *f = NULL;
    struct sd_err err = {0};
    if (st_parse(&f, *buf, len, "ok.safetensors", &err))
        fprintf(stderr, "  parse_ok: %s\n", err.msg);
    return f;
}

/* ------------------------------------------------------------------------
 * Valid files */

TEST(safetensors_basic_file)
{
    struct st_file *f;
    struct sd_err err = {0};
    int rc = st_open(&f, "tests/data/st/basic.safetensors", &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    if (rc)
        return;
    CHECK(!strcmp(st_path(f), "tests/data/st/basic.safetensors"));
    CHECK_EQ_INT(st_count(f), 8);
    for (int i = 1; i < st_count(f); i++)
        CHECK(strcmp(st_at(f, i - 1)->name, st_at(f, i)->name) < 0);
    for (int i = 0; i < st_count(f); i++)
        CHECK(st_find(f, st_at(f, i)->name) == st_at(f, i));
    CHECK(st_find(f, "missing") == NULL);
    CHECK(st_find(f, "") == NULL);

    CHECK_EQ_INT(st_metadata_count(f), 2);
    CHECK(!strcmp(st_metadata(f, "format"), "pt"));
    CHECK(!strcmp(st_metadata(f, "note"), "h\xc3\xa9llo"));
    CHECK(st_metadata(f, "absent") == NULL);
    const char *k, *v;
    st_metadata_at(f, 0, &k, &v);
    CHECK(!strcmp(k, "format") && !strcmp(v, "pt"));

    float out[8];
    const struct st_tensor *t = st_find(f, "f32");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 &&
          t->shape[1] == 3 && t->numel == 6 && t->nbytes == 24);
    CHECK(st_to_f32(t, out, &err) == SD_OK);
    for (int i = 0; i < 6; i++)
        CHECK(out[i] == i * 0.5f - 1);

    t = st_find(f, "f16");
    CHECK(t && t->dtype == ST_F16 && t->numel == 6 && t->nbytes == 12);
    CHECK(st_to_f32(t, out, &err) == SD_OK);
    CHECK(out[0] == 1.5f && out[1] == -2.0f && out[2] == 65504.0f);
    CHECK(out[3] == ldexpf(1, -24) && out[4] == -INFINITY && isnan(out[5]));

    t = st_find(f, "bf16");
    CHECK(t && t->dtype == ST_BF16 && t->numel == 4);
    CHECK(st_to_f32(t, out, &err) == SD_OK);
    CHECK(fbits(out[0]) == 0x3f800000 && out[1] == -3.140625f);
    CHECK(fbits(out[2]) == 0x00010000 && fbits(out[3]) == 0x7f620000);

    t = st_find(f, "f64");
    CHECK(t && t->dtype == ST_F64 && t->nbytes == 24);
    CHECK(st_to_f32(t, out, &err) == SD_OK);
    CHECK(out[0] == (float)(1.0 / 3) && out[1] == INFINITY);
    CHECK(out[2] == 0 && signbit(out[2]));

    t = st_find(f, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
    CHECK(st_to_f32(t, out, &err) == SD_OK && out[0] == 3.25f);

    t = st_find(f, "empty");
    CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->numel == 0 && t->nbytes == 0);
    CHECK(st_to_f32(t, out, &err) == SD_OK);

    t = st_find(f, "i64");
    CHECK(t && t->dtype == ST_I64 && t->numel == 4 && t->nbytes == 32);
    for (int i = 0; t && i < 4; i++) {
        int64_t x;
        memcpy(&x, t->data + 8 * i, 8);
        CHECK_EQ_INT(x, i);
    }
    CHECK(st_to_f32(t, out, &err) == SD_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "'i64'") && strstr(err.msg, "I64"));

    t = st_find(f, "u8");
    CHECK(t && t->dtype == ST_U8 && t->nbytes == 4 && t->data[3] == 255);
    st_prefetch(f);
    st_close(f);
}

TEST(safetensors_unaligned)
{
    struct st_file *f;
    struct sd_err err = {0};
    int rc = st_open(&f, "tests/data/st/unaligned.safetensors", &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    if (rc)
        return;
    const struct st_tensor *a = st_find(f, "a"), *h = st_find(f, "h");
    CHECK(a && h && (uintptr_t)a->data % 4 != 0);
    float out[3];
    CHECK(st_to_f32(a, out, &err) == SD_OK);
    CHECK(out[0] == 1.0f && out[1] == -2.5f && out[2] == 1e-40f);
    CHECK(st_to_f32(h, out, &err) == SD_OK);
    CHECK(out[0] == 0.5f && out[1] == -65504.0f);
    st_close(f);
}

TEST(safetensors_edge_cases_accepted)
{
    uint8_t *b;
    struct st_file *f = parse_ok("{}", 0, &b);          /* no tensors */
    CHECK(f && st_count(f) == 0 && st_metadata_count(f) == 0);
    st_close(f);
    free(b);

    f = parse_ok("{\"__metadata__\":{}}  ", 0, &b);     /* padded */
    CHECK(f && st_count(f) == 0);
    st_close(f);
    free(b);

    /* Holes, trailing bytes, empty tensors anywhere, huge dims times 0,
     * unknown extra keys. */
    f = parse_ok("{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                 "\"a\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[0,2]},"
                 "\"e\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776,0],"
                 "\"data_offsets\":[5,5]},"
                 "\"z\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[9,10],"
                 "\"extra\":[1]}}", 12, &b);
    CHECK(f && st_count(f) == 4);
    if (f) {
        CHECK(!strcmp(st_at(f, 0)->name, "a") && st_at(f, 0)->data[0] == 0);
        const struct st_tensor *t = st_find(f, "b");
        CHECK(t && t->data[0] == 4 && t->data[1] == 5);
        t = st_find(f, "e");
        CHECK(t && t->numel == 0 && t->nbytes == 0 && t->ndim == 3);
        CHECK(st_find(f, "z")->data[0] == 9);
    }
    st_close(f);
    free(b);

    /* Eight dims is the maximum. */
    f = parse_ok("{\"m\":{\"dtype\":\"I8\",\"shape\":[1,1,1,1,1,1,1,2],"
                 "\"data_offsets\":[0,2]}}", 2, &b);
    CHECK(f && st_at(f, 0)->ndim == 8 && st_at(f, 0)->numel == 2);
    st_close(f);
    free(b);
}

/* ------------------------------------------------------------------------
 * Rejections */

TEST(safetensors_reject_framing)
{
    struct sd_err err = {0};
    struct st_file *f;
    uint8_t small[7] = {0};
    CHECK(st_parse(&f, small, 7, "x.safetensors", &err) == SD_ERR_FORMAT);
    CHECK(f == NULL && strstr(err.msg, "x.safetensors: truncated"));
    CHECK(st_parse(&f, small, 0, "x.safetensors", &err) == SD_ERR_FORMAT);

    /* Header length over the 100 MB limit, then over the file size. */
    uint8_t big[16] = {0x01, 0xe1, 0xf5, 0x05};       /* 100000001 */
    CHECK(st_parse(&f, big, 16, "x.safetensors", &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "header length 100000001 exceeds"));
    memset(big, 0xff, 8);
    CHECK(st_parse(&f, big, 16, "x.safetensors", &err) == SD_ERR_FORMAT);
    uint8_t over[16] = {9, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    CHECK(st_parse(&f, over, 16, "x.safetensors", &err) == SD_ERR_FORMAT);
    CHECK(!strcmp(err.msg, "x.safetensors: truncated: header length 9 but "
                           "only 8 bytes follow"));

    CHECK(rejects("", 0, SD_ERR_FORMAT, "not valid JSON"));
    CHECK(rejects("{\"a\":", 0, SD_ERR_FORMAT, "not valid JSON"));
    CHECK(rejects("{} x", 0, SD_ERR_FORMAT, "not valid JSON"));
    CHECK(rejects("{}\n\t\x01", 0, SD_ERR_FORMAT, "not valid JSON"));
    CHECK(rejects("{\"\xff\":1}", 0, SD_ERR_FORMAT, "not valid JSON"));
    CHECK(rejects("{\"a\\u0000\":1}", 0, SD_ERR_FORMAT, "not valid JSON"));
    CHECK(rejects("[1,2]", 0, SD_ERR_FORMAT, "not a JSON object"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":"
                  "[0,99999999999999999999]}}", 0, SD_ERR_FORMAT, "not valid JSON"));

    /* A NUL inside the header (C strings would stop there). */
    size_t len;
    uint8_t *b = build("{}  ", 0, &len);
    b[10] = 0;
    CHECK(st_parse(&f, b, len, "x.safetensors", &err) == SD_ERR_FORMAT);
    free(b);
}

TEST(safetensors_reject_entries)
{
#define E(body) "{\"t\":" body "}"
    CHECK(rejects(E("[]"), 0, SD_ERR_FORMAT, "tensor 't': entry is not an object"));
    CHECK(rejects(E("{\"shape\":[],\"data_offsets\":[0,4]}"), 4, SD_ERR_FORMAT,
                  "tensor 't': dtype is missing"));
    CHECK(rejects(E("{\"dtype\":7,\"shape\":[],\"data_offsets\":[0,4]}"), 4,
                  SD_ERR_FORMAT, "dtype is missing or not a string"));
    CHECK(rejects(E("{\"dtype\":\"F12\",\"shape\":[],\"data_offsets\":[0,4]}"), 4,
                  SD_ERR_UNSUPPORTED, "tensor 't': unknown dtype 'F12'"));
    CHECK(rejects(E("{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}"), 4,
                  SD_ERR_UNSUPPORTED, "unknown dtype 'F4'"));
    CHECK(rejects(E("{\"dtype\":\"f32\",\"shape\":[],\"data_offsets\":[0,4]}"), 4,
                  SD_ERR_UNSUPPORTED, "unknown dtype 'f32'"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"data_offsets\":[0,4]}"), 4,
                  SD_ERR_FORMAT, "shape is missing or not a list"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}"), 4,
                  SD_ERR_FORMAT, "shape is missing or not a list"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}"), 4,
                  SD_ERR_FORMAT, "shape[0] is not a non-negative integer"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1,1.0],\"data_offsets\":[0,4]}"),
                  4, SD_ERR_FORMAT, "shape[1] is not a non-negative integer"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}"),
                  4, SD_ERR_FORMAT, "shape[0] is not"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                    "\"data_offsets\":[0,4]}"), 4, SD_ERR_UNSUPPORTED,
                  "9 dimensions (at most 8 supported)"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
                    "\"data_offsets\":[0,4]}"), 4, SD_ERR_FORMAT,
                  "shape [4611686018427387904,4] is too large"));
    CHECK(rejects(E("{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
                    "\"data_offsets\":[0,4]}"), 4, SD_ERR_FORMAT, "too large"));
    CHECK(rejects(E("{\"dtype\":\"U8\",\"shape\":[9223372036854775807,"
                    "9223372036854775807]}"), 4, SD_ERR_FORMAT, "too large"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1]}"), 4, SD_ERR_FORMAT,
                  "data_offsets must be [begin, end] non-negative integers"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}"), 4,
                  SD_ERR_FORMAT, "data_offsets must be"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}"),
                  8, SD_ERR_FORMAT, "data_offsets must be"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}"),
                  8, SD_ERR_FORMAT, "data_offsets must be"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}"),
                  8, SD_ERR_FORMAT, "data_offsets must be"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}"),
                  8, SD_ERR_FORMAT, "data_offsets [4, 0] outside the 8-byte data buffer"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}"),
                  8, SD_ERR_FORMAT, "[8, 12] outside the 8-byte data buffer"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[9,9]}"),
                  8, SD_ERR_FORMAT, "outside"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":"
                    "[0,9223372036854775807]}"), 8, SD_ERR_FORMAT, "outside"));
    CHECK(rejects(E("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}"),
                  8, SD_ERR_FORMAT, "data_offsets [0, 8] but shape [1] F32 needs 4 bytes"));
    CHECK(rejects(E("{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,4]}"),
                  8, SD_ERR_FORMAT, "shape [] F16 needs 2 bytes"));
#undef E
    /* The exact message from the brief. */
    size_t len;
    uint8_t *b = build("{\"conv_in.weight\":{\"dtype\":\"F32\",\"shape\":[320,4,3,3],"
                       "\"data_offsets\":[0,100]}}", 100, &len);
    struct st_file *f;
    struct sd_err err = {0};
    CHECK(st_parse(&f, b, len, "unet/diffusion_pytorch_model.safetensors", &err)
          == SD_ERR_FORMAT);
    CHECK_MSG(!strcmp(err.msg, "unet/diffusion_pytorch_model.safetensors: tensor "
                      "'conv_in.weight': data_offsets [0, 100] but shape "
                      "[320,4,3,3] F32 needs 46080 bytes"), "%s", err.msg);
    free(b);
}

TEST(safetensors_reject_file_level)
{
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  8, SD_ERR_FORMAT, "tensors 'a' [0, 8] and 'b' [4, 8] overlap"));
    CHECK(rejects("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
                  8, SD_ERR_FORMAT, "overlap"));
    CHECK(rejects("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                  "\"m\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,3]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[5,6]}}",
                  8, SD_ERR_FORMAT, "tensors 'a' [0, 8] and 'b' [5, 6] overlap"));
    CHECK(rejects("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                  8, SD_ERR_FORMAT, "duplicate name"));
    CHECK(rejects("{\"__metadata__\":[]}", 0, SD_ERR_FORMAT,
                  "__metadata__ is not an object"));
    CHECK(rejects("{\"__metadata__\":{\"a\":\"b\",\"n\":1}}", 0, SD_ERR_FORMAT,
                  "__metadata__ 'n' is not a string"));
    CHECK(rejects("{\"__metadata__\":{},\"__metadata__\":{}}", 0, SD_ERR_FORMAT,
                  "duplicate"));
    /* The first bad tensor fails the whole file, even after good ones. */
    CHECK(rejects("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,3]}}",
                  8, SD_ERR_FORMAT, "tensor 'b'"));
}

TEST(safetensors_open_errors)
{
    struct st_file *f = (struct st_file *)&f;
    struct sd_err err = {0};
    CHECK(st_open(&f, "tests/data/st/no-such-file.safetensors", &err) == SD_ERR_IO);
    CHECK(f == NULL && strstr(err.msg, "no-such-file.safetensors: No such file"));
    CHECK(st_open(&f, "tests/data/st", &err) == SD_ERR_IO);
    CHECK(strstr(err.msg, "not a regular file"));

    /* A truncated copy of a real file. */
    FILE *in = fopen("tests/data/st/basic.safetensors", "rb");
    CHECK(in != NULL);
    if (!in)
        return;
    uint8_t buf[1024];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_st_%d.safetensors", (int)getpid());
    size_t cuts[] = {0, 5, 8, 100, n - 1};
    for (int i = 0; i < 5; i++) {
        FILE *out = fopen(path, "wb");
        fwrite(buf, 1, cuts[i], out);
        fclose(out);
        CHECK(st_open(&f, path, &err) == SD_ERR_FORMAT && f == NULL);
        CHECK(!strncmp(err.msg, path, strlen(path)));
    }
    unlink(path);
}

/* ------------------------------------------------------------------------
 * Writer */

TEST(safetensors_write_roundtrip)
{
    float w[6] = {1, 2, 3, -4, 5e-39f, 6};
    uint16_t h[3] = {0x3c00, 0x8001, 0x7c00};
    int64_t ids[2] = {7, -9};
    struct st_tensor ts[4] = {
        {.name = "w", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}, .data = (void *)w},
        {.name = "h", .dtype = ST_F16, .ndim = 1, .shape = {3}, .data = (void *)h},
        {.name = "ids", .dtype = ST_I64, .ndim = 1, .shape = {2}, .data = (void *)ids},
        {.name = "none", .dtype = ST_F32, .ndim = 1, .shape = {0}, .data = NULL},
    };
    const char *md[] = {"format", "pt", "who", "diffusiond", NULL};
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_stw_%d.safetensors", (int)getpid());
    struct sd_err err = {0};
    CHECK_MSG(st_write(path, ts, 4, md, &err) == SD_OK, "%s", err.msg);

    struct st_file *f;
    int rc = st_open(&f, path, &err);
    CHECK_MSG(rc == SD_OK, "%s", err.msg);
    if (!rc) {
        CHECK(st_count(f) == 4 && !strcmp(st_metadata(f, "who"), "diffusiond"));
        CHECK((uintptr_t)st_find(f, "w")->data % 8 == 0);   /* padded header */
        float out[6];
        CHECK(st_to_f32(st_find(f, "w"), out, &err) == SD_OK);
        CHECK(!memcmp(out, w, sizeof w));
        CHECK(st_to_f32(st_find(f, "h"), out, &err) == SD_OK);
        CHECK(out[0] == 1 && out[1] == -ldexpf(1, -24) && out[2] == INFINITY);
        CHECK(!memcmp(st_find(f, "ids")->data, ids, sizeof ids));
        CHECK(st_find(f, "none")->nbytes == 0);
        st_close(f);
    }
    /* Duplicate names and reserved names are refused; nothing is left behind. */
    ts[1].name = "w";
    CHECK(st_write(path, ts, 2, NULL, &err) == SD_ERR_ARG);
    ts[1].name = "__metadata__";
    CHECK(st_write(path, ts, 2, md, &err) == SD_ERR_ARG);
    CHECK(st_write("/nonexistent-dir/x.safetensors", ts, 1, NULL, &err) == SD_ERR_IO);
    unlink(path);
    CHECK(access(path, F_OK) != 0);
}

/* ------------------------------------------------------------------------
 * Exhaustive conversions, against a reference built from the definition
 * of the formats with ldexp (and the compiler's _Float16 where present). */

static float f16_reference(unsigned h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY)
                                                : ldexp(1024 + m, e - 25);
    return (float)(s ? -v : v);
}

static float bf16_reference(unsigned b)
{
    int s = b >> 15, e = (b >> 7) & 255, m = b & 127;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY)
                                                   : ldexp(128 + m, e - 134);
    return (float)(s ? -v : v);
}

TEST(safetensors_f16_bf16_exhaustive)
{
    int bad16 = 0, badbf = 0, nan16 = 0;
    for (unsigned i = 0; i < 65536; i++) {
        float a = st_f16_to_f32((uint16_t)i), r = f16_reference(i);
        if (isnan(r)) {
            /* NaN payload and sign kept, as numpy and torch do. */
            nan16++;
            bad16 += !isnan(a) || fbits(a) != ((i & 0x8000u) << 16 | 0x7f800000u |
                                               (i & 0x3ffu) << 13);
        } else {
            bad16 += fbits(a) != fbits(r);
        }
#ifdef __FLT16_MAX__
        _Float16 hv;
        uint16_t u = (uint16_t)i;
        memcpy(&hv, &u, 2);
        if (!isnan(r))
            bad16 += fbits((float)hv) != fbits(a);
#endif
        float b = st_bf16_to_f32((uint16_t)i), rb = bf16_reference(i);
        badbf += isnan(rb) ? fbits(b) != (uint32_t)i << 16 : fbits(b) != fbits(rb);
    }
    CHECK_EQ_INT(bad16, 0);
    CHECK_EQ_INT(badbf, 0);
    CHECK_EQ_INT(nan16, 2 * 1023);

    /* st_to_f32 over all patterns from an unaligned buffer. */
    const char *js = "{\"h\":{\"dtype\":\"F16\",\"shape\":[65536],\"data_offsets\":[0,131072]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[256,256],"
                     "\"data_offsets\":[131072,262144]}}  ";
    size_t len;
    uint8_t *buf = build(js, 262144, &len);
    uint8_t *d = buf + len - 262144;
    for (unsigned i = 0; i < 65536; i++) {
        d[2 * i] = d[131072 + 2 * i] = (uint8_t)i;
        d[2 * i + 1] = d[131072 + 2 * i + 1] = (uint8_t)(i >> 8);
    }
    struct st_file *f;
    struct sd_err err = {0};
    CHECK(st_parse(&f, buf, len, "all.safetensors", &err) == SD_OK);
    if (f) {
        CHECK((uintptr_t)st_find(f, "h")->data % 2 == 1);
        float *out = malloc(65536 * sizeof *out);
        int mism = 0;
        CHECK(st_to_f32(st_find(f, "h"), out, &err) == SD_OK);
        for (unsigned i = 0; i < 65536; i++)
            mism += fbits(out[i]) != fbits(st_f16_to_f32((uint16_t)i));
        CHECK(st_to_f32(st_find(f, "b"), out, &err) == SD_OK);
        for (unsigned i = 0; i < 65536; i++)
            mism += fbits(out[i]) != (uint32_t)i << 16;
        CHECK_EQ_INT(mism, 0);
        free(out);
        st_close(f);
    }
    free(buf);
}
