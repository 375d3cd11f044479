/* imgdec.c - see imgdec.h. */
#include "util/imgdec.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "util/png.h"

/* libjpeg reports errors by calling error_exit, which must not return:
 * jump back to the decoder with the message. */
struct jerr {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
};

static void jerr_exit(j_common_ptr cinfo)
{
    struct jerr *e = (struct jerr *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jerr_silent(j_common_ptr cinfo, int level)
{
    (void)cinfo, (void)level; /* warnings (corrupt data recovered) are not errors */
}

int jpeg_decode_rgb(const uint8_t *data, size_t len, int max_side, long max_pixels, uint8_t **rgb, int *w,
                    int *h, struct sd_err *err)
{
    *rgb = NULL;
    if (len > 0x7fffffffUL)
        return sd_errf(err, SD_ERR_ARG, "jpeg: file too large");
    struct jpeg_decompress_struct ci;
    struct jerr je;
    uint8_t *volatile out = NULL;
    ci.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jerr_exit;
    je.mgr.emit_message = jerr_silent;
    if (setjmp(je.jump)) {
        free(out);
        jpeg_destroy_decompress(&ci);
        return sd_errf(err, SD_ERR_FORMAT, "jpeg: %s", je.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, data, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    if (ci.image_width < 1 || ci.image_height < 1 || ci.image_width > (unsigned)max_side ||
        ci.image_height > (unsigned)max_side || (long)ci.image_width * (long)ci.image_height > max_pixels) {
        int ww = (int)ci.image_width, hh = (int)ci.image_height;
        jpeg_destroy_decompress(&ci);
        return sd_errf(err, SD_ERR_ARG, "jpeg: %dx%d pixels is over the limit (%d per side, %ld in all)", ww, hh,
                       max_side, max_pixels);
    }
    ci.out_color_space = JCS_RGB; /* grayscale and YCbCr alike; CMYK is refused by libjpeg */
    jpeg_start_decompress(&ci);
    if (ci.output_components != 3) {
        jpeg_destroy_decompress(&ci);
        return sd_errf(err, SD_ERR_FORMAT, "jpeg: %d color components, not RGB", ci.output_components);
    }
    size_t stride = (size_t)ci.output_width * 3;
    out = malloc(stride * ci.output_height);
    if (!out) {
        jpeg_destroy_decompress(&ci);
        return sd_errf(err, SD_ERR_NOMEM, "jpeg: out of memory");
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW row = out + stride * ci.output_scanline;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    jpeg_finish_decompress(&ci);
    *w = (int)ci.output_width, *h = (int)ci.output_height;
    jpeg_destroy_decompress(&ci);
    *rgb = out;
    return SD_OK;
}

int image_decode_rgb(const uint8_t *data, size_t len, int max_side, long max_pixels, uint8_t **rgb, int *w,
                     int *h, struct sd_err *err)
{
    *rgb = NULL;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && !memcmp(data, png_sig, 8)) {
        int rc = png_decode_rgb(data, len, max_side, rgb, w, h, NULL, err);
        if (!rc && (long)*w * *h > max_pixels) {
            free(*rgb);
            *rgb = NULL;
            return sd_errf(err, SD_ERR_ARG, "png: %dx%d pixels is over the limit (%ld)", *w, *h, max_pixels);
        }
        return rc;
    }
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return jpeg_decode_rgb(data, len, max_side, max_pixels, rgb, w, h, err);
    return sd_errf(err, SD_ERR_FORMAT, "not a PNG or JPEG image");
}
