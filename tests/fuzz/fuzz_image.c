/* fuzz_image.c - image_decode_rgb (PNG through libpng, JPEG through
 * libjpeg-turbo) and png_decode_rgba on arbitrary bytes: what an init
 * image, a mask or an OpenAI edit upload is decoded with.
 *
 * A failure leaves no outputs and says why; a success gives w*h*3 bytes
 * within the limits (every byte is read, so ASan sees a short buffer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/imgdec.h"
#include "util/png.h"

#define FUZZ_IMAGE_MAX_SIDE 1024
#define FUZZ_IMAGE_MAX_PIXELS (512L * 512L)

static unsigned fuzz_image_touch(const uint8_t *p, size_t n)
{
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += p[i];
    return s;
}

int fuzz_image(const uint8_t *data, size_t len)
{
    uint8_t *rgb = NULL;
    int w = -1, h = -1;
    struct sd_err err = {0};
    int rc = image_decode_rgb(data, len, FUZZ_IMAGE_MAX_SIDE, FUZZ_IMAGE_MAX_PIXELS, &rgb, &w, &h, &err);
    if (rc) {
        SD_ASSERT(!rgb && err.msg[0]);
    } else {
        SD_ASSERT(rgb && w > 0 && h > 0 && w <= FUZZ_IMAGE_MAX_SIDE && h <= FUZZ_IMAGE_MAX_SIDE);
        SD_ASSERT((long)w * h <= FUZZ_IMAGE_MAX_PIXELS);
        volatile unsigned s = fuzz_image_touch(rgb, (size_t)w * (size_t)h * 3);
        (void)s;
    }
    free(rgb);
    uint8_t *rgba = NULL;
    int had_alpha = -1;
    struct sd_err err2 = {0};
    rc = png_decode_rgba(data, len, 512, &rgba, &w, &h, &had_alpha, &err2);
    if (rc) {
        SD_ASSERT(!rgba && err2.msg[0]);
    } else {
        SD_ASSERT(rgba && (had_alpha == 0 || had_alpha == 1));
        volatile unsigned s = fuzz_image_touch(rgba, (size_t)w * (size_t)h * 4);
        (void)s;
        if (!had_alpha) /* no alpha in the file: every pixel opaque */
            for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
                SD_ASSERT(rgba[4 * i + 3] == 255);
    }
    free(rgba);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_image(data, size);
}
#endif
