/* test_png.c - PNG encode/decode: round trips with text chunks, decoding
 * of every colour type / bit depth (test images written here with libpng
 * directly), corrupt, truncated and oversize input, atomic file writes. */
#include "util/png.h"
#include "test.h"

#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * A minimal libpng writer for test images in any format. */

struct mem {
    uint8_t *p;
    size_t n;
};

static void mem_write(png_structp png, png_bytep d, size_t n)
{
    struct mem *m = png_get_io_ptr(png);
    m->p = realloc(m->p, m->n + n);
    memcpy(m->p + m->n, d, n);
    m->n += n;
}

static void mem_flush(png_structp png) { (void)png; }

struct img {
    int w, h, color, depth, interlace;
    const uint8_t *raw;          /* rows as PNG stores them (16-bit: BE) */
    const png_color *pal;
    int npal;
    const png_byte *trns;
    int ntrns;
    const char *params;          /* "parameters" text, zTXt */
    int text_after;              /* put it after the image data */
};

static struct mem write_test_png(const struct img *im)
{
    struct mem m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, 0, 0, 0);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(m.p);
        return (struct mem){0};
    }
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, im->w, im->h, im->depth, im->color, im->interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (im->pal)
        png_set_PLTE(png, info, im->pal, im->npal);
    if (im->trns)
        png_set_tRNS(png, info, im->trns, im->ntrns, NULL);
    png_text t = {.compression = PNG_TEXT_COMPRESSION_zTXt,
                  .key = "parameters", .text = (char *)im->params};
    if (im->params && !im->text_after)
        png_set_text(png, info, &t, 1);
    png_write_info(png, info);
    size_t stride = ((size_t)im->w * im->depth *
                     (im->color == PNG_COLOR_TYPE_RGB ? 3 :
                      im->color == PNG_COLOR_TYPE_RGBA ? 4 :
                      im->color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1) + 7) / 8;
    png_bytep *rows = malloc(im->h * sizeof *rows);
    for (int y = 0; y < im->h; y++)
        rows[y] = (png_bytep)im->raw + y * stride;
    png_write_image(png, rows);
    free(rows);
    if (im->params && im->text_after)
        png_set_text(png, info, &t, 1);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return m;
}

/* Decode and compare with the expected w*h RGB pixels. */
static int decodes_to(struct mem m, int w, int h, const uint8_t *want)
{
    uint8_t *rgb;
    int dw, dh;
    struct sd_err err = {0};
    int rc = png_decode_rgb(m.p, m.n, 4096, &rgb, &dw, &dh, NULL, &err);
    int ok = rc == SD_OK && dw == w && dh == h &&
             !memcmp(rgb, want, (size_t)w * h * 3);
    if (!ok)
        fprintf(stderr, "  decode: rc %d (%s) %dx%d\n", rc, err.msg, dw, dh);
    free(rgb);
    free(m.p);
    return ok;
}

static uint32_t rnd_state = 12345;
static uint8_t rnd8(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (uint8_t)(rnd_state >> 16);
}

/* ------------------------------------------------------------------------
 * Round trips */

TEST(png_roundtrip_text)
{
    enum { W = 37, H = 23 };
    uint8_t img[W * H * 3];
    for (int i = 0; i < W * H * 3; i++)
        img[i] = rnd8();
    const char *params = "a photo of a cat\nSteps: 20, Sampler: PNDM, Seed: 42";
    const char *kv[] = {"parameters", params, "Software", "diffusiond", NULL};
    uint8_t *png, *rgb;
    size_t len;
    int w, h;
    char *got;
    struct sd_err err = {0};
    CHECK(png_encode_rgb(img, W, H, kv, &png, &len, &err) == SD_OK);
    CHECK(len > 8 && !memcmp(png, "\x89PNG\r\n\x1a\n", 8));
    CHECK(memmem(png, len, "tEXtparameters", 14) != NULL);
    CHECK(png_decode_rgb(png, len, 64, &rgb, &w, &h, &got, &err) == SD_OK);
    CHECK(w == W && h == H && !memcmp(rgb, img, sizeof img));
    CHECK(got && !strcmp(got, params));
    free(rgb);
    free(got);
    /* params not wanted */
    CHECK(png_decode_rgb(png, len, 64, &rgb, &w, &h, NULL, &err) == SD_OK);
    free(rgb);
    free(png);

    /* No text: params comes back NULL. A 1x1 image works. */
    CHECK(png_encode_rgb(img, 1, 1, NULL, &png, &len, &err) == SD_OK);
    got = (char *)img;
    CHECK(png_decode_rgb(png, len, 1, &rgb, &w, &h, &got, &err) == SD_OK);
    CHECK(got == NULL && w == 1 && h == 1 && !memcmp(rgb, img, 3));
    free(rgb);
    free(png);

    /* Non-ASCII text goes in iTXt and comes back byte for byte. */
    const char *utf8 = "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac, Steps: 4";
    const char *kv2[] = {"parameters", utf8, NULL};
    CHECK(png_encode_rgb(img, 4, 4, kv2, &png, &len, &err) == SD_OK);
    CHECK(memmem(png, len, "iTXtparameters", 14) != NULL);
    CHECK(png_decode_rgb(png, len, 64, &rgb, &w, &h, &got, &err) == SD_OK);
    CHECK(got && !strcmp(got, utf8));
    free(got);
    free(rgb);
    free(png);
}

TEST(png_roundtrip_512)
{
    /* The size the service produces; smooth content like a real image. */
    enum { N = 512 };
    uint8_t *img = malloc(N * N * 3), *png, *rgb;
    for (int y = 0; y < N; y++)
        for (int x = 0; x < N; x++) {
            uint8_t *p = img + (y * N + x) * 3;
            p[0] = (uint8_t)x;
            p[1] = (uint8_t)y;
            p[2] = (uint8_t)((x * y) >> 8);
        }
    size_t len;
    int w, h;
    struct sd_err err = {0};
    CHECK(png_encode_rgb(img, N, N, NULL, &png, &len, &err) == SD_OK);
    CHECK(len < (size_t)N * N * 3 / 4);   /* actually compressed */
    CHECK(png_decode_rgb(png, len, N, &rgb, &w, &h, NULL, &err) == SD_OK);
    CHECK(w == N && h == N && !memcmp(rgb, img, N * N * 3));
    free(rgb);
    free(png);
    free(img);
}

TEST(png_encode_errors)
{
    uint8_t px[12] = {0}, *png = px;
    size_t len = 99;
    struct sd_err err = {0};
    CHECK(png_encode_rgb(px, 0, 1, NULL, &png, &len, &err) == SD_ERR_ARG);
    CHECK(png == NULL && len == 0 && strstr(err.msg, "0x1"));
    CHECK(png_encode_rgb(px, 2, -1, NULL, &png, &len, &err) == SD_ERR_ARG);
    CHECK(png_encode_rgb(NULL, 2, 2, NULL, &png, &len, &err) == SD_ERR_ARG);
    const char *bad[][3] = {
        {"", "v", NULL}, {" lead", "v", NULL}, {"trail ", "v", NULL},
        {"two  spaces", "v", NULL}, {"tab\tkey", "v", NULL},
        {"0123456789012345678901234567890123456789012345678901234567890123456789"
         "0123456789", "v", NULL},
        {"novalue", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(png_encode_rgb(px, 2, 2, bad[i], &png, &len, &err) == SD_ERR_ARG);
        CHECK(png == NULL && strstr(err.msg, "invalid text key"));
    }
    const char *ok[] = {"a b", "v", "Comment", "", NULL};
    CHECK(png_encode_rgb(px, 2, 2, ok, &png, &len, &err) == SD_OK);
    free(png);
}

/* ------------------------------------------------------------------------
 * Decoding other formats */

TEST(png_decode_formats)
{
    enum { W = 5, H = 3, N = W * H };
    uint8_t raw[N * 8], want[N * 3];
    for (int i = 0; i < N * 8; i++)
        raw[i] = rnd8();
    int interlaces[2] = {PNG_INTERLACE_NONE, PNG_INTERLACE_ADAM7};

    for (int il = 0; il < 2; il++) {
        struct img im = {.w = W, .h = H, .color = PNG_COLOR_TYPE_GRAY, .depth = 8,
                          .interlace = interlaces[il], .raw = raw};
        for (int i = 0; i < N; i++)
            want[3 * i] = want[3 * i + 1] = want[3 * i + 2] = raw[i];
        CHECK(decodes_to(write_test_png(&im), W, H, want));

        im.color = PNG_COLOR_TYPE_GRAY_ALPHA;   /* alpha dropped */
        for (int i = 0; i < N; i++)
            memset(want + 3 * i, raw[2 * i], 3);
        CHECK(decodes_to(write_test_png(&im), W, H, want));

        im.color = PNG_COLOR_TYPE_RGBA;
        for (int i = 0; i < N; i++)
            memcpy(want + 3 * i, raw + 4 * i, 3);
        CHECK(decodes_to(write_test_png(&im), W, H, want));

        im.color = PNG_COLOR_TYPE_RGB;          /* 16-bit: high byte */
        im.depth = 16;
        for (int i = 0; i < 3 * N; i++)
            want[i] = raw[2 * i];
        CHECK(decodes_to(write_test_png(&im), W, H, want));

        im.color = PNG_COLOR_TYPE_GRAY;
        for (int i = 0; i < N; i++)
            memset(want + 3 * i, raw[2 * i], 3);
        CHECK(decodes_to(write_test_png(&im), W, H, want));

        im.color = PNG_COLOR_TYPE_RGBA;
        for (int i = 0; i < N; i++)
            for (int c = 0; c < 3; c++)
                want[3 * i + c] = raw[8 * i + 2 * c];
        CHECK(decodes_to(write_test_png(&im), W, H, want));
    }
}

TEST(png_decode_low_depth_and_palette)
{
    enum { W = 9, H = 2 };   /* 9 pixels: rows end mid-byte */
    uint8_t raw[W * H], want[W * H * 3];
    /* Gray 1, 2, 4 bits scale to 0..255 (x255, x85, x17). */
    int depths[3] = {1, 2, 4}, mul[3] = {255, 85, 17};
    for (int d = 0; d < 3; d++) {
        int bits = depths[d], per = 8 / bits, stride = (W + per - 1) / per;
        memset(raw, 0, sizeof raw);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int v = (x + 3 * y) & ((1 << bits) - 1);
                raw[y * stride + x / per] |= (uint8_t)(v << (8 - bits * (x % per + 1)));
                memset(want + 3 * (y * W + x), v * mul[d], 3);
            }
        struct img im = {.w = W, .h = H, .color = PNG_COLOR_TYPE_GRAY, .depth = bits,
                          .raw = raw};
        CHECK_MSG(decodes_to(write_test_png(&im), W, H, want), "gray %d bits", bits);
    }

    /* Palette, 8 and 4 bits, with transparency (dropped). */
    png_color pal[16];
    png_byte trns[3] = {0, 128, 255};
    for (int i = 0; i < 16; i++)
        pal[i] = (png_color){(png_byte)(i * 16), (png_byte)(255 - i), (png_byte)(i * 7)};
    for (int i = 0; i < W * H; i++) {
        raw[i] = (uint8_t)(i % 16);
        want[3 * i] = pal[i % 16].red;
        want[3 * i + 1] = pal[i % 16].green;
        want[3 * i + 2] = pal[i % 16].blue;
    }
    struct img im = {.w = W, .h = H, .color = PNG_COLOR_TYPE_PALETTE, .depth = 8,
                     .raw = raw, .pal = pal, .npal = 16, .trns = trns, .ntrns = 3};
    CHECK(decodes_to(write_test_png(&im), W, H, want));
    uint8_t packed[W * H];
    memset(packed, 0, sizeof packed);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            packed[y * 5 + x / 2] |= (uint8_t)(raw[y * W + x] << (x % 2 ? 0 : 4));
    im.raw = packed;
    im.depth = 4;
    im.interlace = PNG_INTERLACE_ADAM7;
    CHECK(decodes_to(write_test_png(&im), W, H, want));
}

TEST(png_decode_ztxt_after_idat)
{
    uint8_t raw[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, *rgb;
    struct img im = {.w = 2, .h = 2, .color = PNG_COLOR_TYPE_RGB, .depth = 8, .raw = raw};
    im.params = "Steps: 30, CFG scale: 7";
    int w, h;
    char *got;
    struct sd_err err = {0};
    for (int after = 0; after < 2; after++) {
        im.text_after = after;
        struct mem m = write_test_png(&im);
        CHECK(memmem(m.p, m.n, "zTXtparameters", 14) != NULL);
        CHECK(png_decode_rgb(m.p, m.n, 2, &rgb, &w, &h, &got, &err) == SD_OK);
        CHECK(got && !strcmp(got, im.params) && !memcmp(rgb, raw, 12));
        free(got);
        free(rgb);
        free(m.p);
    }
}

/* ------------------------------------------------------------------------
 * Bad input */

/* PNG's CRC-32 (ISO 3309, reflected, poly 0xedb88320), bit by bit. */
static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

/* Signature + IHDR only, with a correct CRC. */
static size_t header_only(uint8_t *b, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(b, sig, 8);
    uint8_t ihdr[25] = {0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    for (int i = 0; i < 4; i++) {
        ihdr[8 + i] = (uint8_t)(w >> (24 - 8 * i));
        ihdr[12 + i] = (uint8_t)(h >> (24 - 8 * i));
    }
    ihdr[16] = 8;   /* depth */
    ihdr[17] = 2;   /* RGB */
    uint32_t crc = crc32_png(ihdr + 4, 17);
    for (int i = 0; i < 4; i++)
        ihdr[21 + i] = (uint8_t)(crc >> (24 - 8 * i));
    memcpy(b + 8, ihdr, 25);
    return 33;
}

TEST(png_decode_rejects)
{
    uint8_t *rgb = (uint8_t *)&rgb, b[64];
    int w = 7, h = 7;
    char *params = (char *)b;
    struct sd_err err = {0};
    CHECK(png_decode_rgb((const uint8_t *)"GIF89a....", 10, 64, &rgb, &w, &h,
                         &params, &err) == SD_ERR_FORMAT);
    CHECK(rgb == NULL && w == 0 && h == 0 && params == NULL);
    CHECK(!strcmp(err.msg, "png: not a PNG file"));
    CHECK(png_decode_rgb(b, 0, 64, &rgb, &w, &h, NULL, &err) == SD_ERR_FORMAT);

    size_t n = header_only(b, 65, 10);
    CHECK(png_decode_rgb(b, n, 64, &rgb, &w, &h, NULL, &err) == SD_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "65x10") && strstr(err.msg, "limit"));
    CHECK(png_decode_rgb(b, n, 65, &rgb, &w, &h, NULL, &err) == SD_ERR_FORMAT);
    n = header_only(b, 10000, 10000);    /* within max_side, too many pixels */
    CHECK(png_decode_rgb(b, n, 20000, &rgb, &w, &h, NULL, &err) == SD_ERR_UNSUPPORTED);
    n = header_only(b, 0x7fffffff, 1);
    CHECK(png_decode_rgb(b, n, 1 << 30, &rgb, &w, &h, NULL, &err) == SD_ERR_UNSUPPORTED);
    n = header_only(b, 0x80000000u, 1);  /* over PNG's own 2^31-1 */
    CHECK(png_decode_rgb(b, n, 1 << 30, &rgb, &w, &h, NULL, &err) == SD_ERR_FORMAT);
    n = header_only(b, 0, 1);
    CHECK(png_decode_rgb(b, n, 64, &rgb, &w, &h, NULL, &err) == SD_ERR_FORMAT);
    CHECK(png_decode_rgb(b, n, 0, &rgb, &w, &h, NULL, &err) == SD_ERR_ARG);
    b[20] ^= 1;                          /* IHDR CRC */
    CHECK(png_decode_rgb(b, n, 64, &rgb, &w, &h, NULL, &err) == SD_ERR_FORMAT);
    CHECK(rgb == NULL && w == 0);

    /* A chunk claiming 1.5 GB in a tiny file: refused before libpng would
     * allocate it (libpng itself only warns). */
    uint8_t px[3] = {1, 2, 3}, *png;
    size_t plen;
    const char *kv[] = {"parameters", "x", NULL};
    CHECK(png_encode_rgb(px, 1, 1, kv, &png, &plen, &err) == SD_OK);
    CHECK(!memcmp(png + 37, "tEXt", 4));
    png[33] = 0x5a;
    CHECK(png_decode_rgb(png, plen, 64, &rgb, &w, &h, NULL, &err) == SD_ERR_FORMAT);
    CHECK(!strcmp(err.msg, "png: truncated data: chunk at byte 33 claims "
                           "1509949452 bytes"));
    png[33] = 0;
    /* Not IHDR first. */
    memcpy(png + 12, "IHDX", 4);
    CHECK(png_decode_rgb(png, plen, 64, &rgb, &w, &h, NULL, &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "IHDR"));
    free(png);
}

TEST(png_decode_truncated_and_corrupt)
{
    uint8_t img[6 * 5 * 3], *png, *rgb;
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = rnd8();
    const char *kv[] = {"parameters", "x", NULL};
    size_t len;
    int w, h;
    char *params;
    struct sd_err err = {0};
    CHECK(png_encode_rgb(img, 6, 5, kv, &png, &len, &err) == SD_OK);
    /* Every proper prefix fails cleanly (exact-size copies for ASan). */
    int bad = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, png, cut);
        int rc = png_decode_rgb(p, cut, 64, &rgb, &w, &h, &params, &err);
        bad += rc != SD_ERR_FORMAT || rgb || params;
        free(p);
    }
    CHECK_EQ_INT(bad, 0);
    /* Every single-byte corruption: an error or a 6x5 image, no crash. */
    int failed = 0;
    for (size_t i = 0; i < len; i++) {
        png[i] ^= 0x5a;
        int rc = png_decode_rgb(png, len, 64, &rgb, &w, &h, &params, &err);
        if (rc)
            failed++;
        else
            CHECK(w == 6 && h == 5 && rgb);
        CHECK(rc != SD_ERR_NOMEM);
        free(rgb);
        free(params);
        png[i] ^= 0x5a;
    }
    CHECK(failed > (int)len / 2);   /* CRCs catch most */
    free(png);
}

/* ------------------------------------------------------------------------
 * Files */

TEST(png_write_file_atomic)
{
    char dir[64], path[96];
    snprintf(dir, sizeof dir, "/tmp/test_png_%d", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/out.png", dir);
    struct sd_err err = {0};
    const uint8_t data[] = "\x89PNG not really";
    CHECK(png_write_file(path, data, sizeof data, &err) == SD_OK);
    CHECK(png_write_file(path, data, 4, &err) == SD_OK);   /* replace */
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 4 && (st.st_mode & 0777) == 0644);
    FILE *f = fopen(path, "rb");
    uint8_t back[8];
    CHECK(f && fread(back, 1, 8, f) == 4 && !memcmp(back, data, 4));
    if (f)
        fclose(f);
    CHECK(png_write_file(path, data, 0, &err) == SD_OK);
    CHECK(stat(path, &st) == 0 && st.st_size == 0);
    CHECK(unlink(path) == 0);
    CHECK(rmdir(dir) == 0);   /* fails if a temporary was left behind */

    CHECK(png_write_file("/nonexistent-dir/x.png", data, 4, &err) == SD_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent-dir/x.png: cannot create"));
    /* Renaming over a directory fails; the temporary is removed. */
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/sub", dir);
    CHECK(mkdir(path, 0700) == 0);
    CHECK(png_write_file(path, data, 4, &err) == SD_ERR_IO);
    CHECK(strstr(err.msg, "rename failed"));
    CHECK(rmdir(path) == 0 && rmdir(dir) == 0);
}
