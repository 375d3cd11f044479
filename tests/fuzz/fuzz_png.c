/* fuzz_png.c - png_decode_rgb on arbitrary bytes.
 *
 * Failures must leave no outputs behind; a decoded image must re-encode
 * (with its "parameters" text) and decode back to the same pixels and
 * text, which also exercises the encoder on odd sizes and texts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/png.h"

#define FUZZ_PNG_MAX_SIDE 512

int fuzz_png(const uint8_t *data, size_t len)
{
    uint8_t *rgb, *png = NULL, *rgb2 = NULL;
    int w, h, w2, h2;
    char *params, *params2 = NULL;
    size_t plen;
    struct sd_err err = {0};
    int rc = png_decode_rgb(data, len, FUZZ_PNG_MAX_SIDE, &rgb, &w, &h, &params, &err);
    if (rc) {
        SD_ASSERT(!rgb && !params && !w && !h && err.msg[0]);
        return 0;
    }
    SD_ASSERT(rgb && w > 0 && h > 0 && w <= FUZZ_PNG_MAX_SIDE && h <= FUZZ_PNG_MAX_SIDE);
    /* Round trip only small images: keeps executions fast. */
    if ((size_t)w * (size_t)h <= 64 * 64) {
        const char *kv[] = {"parameters", params, NULL};
        rc = png_encode_rgb(rgb, w, h, params ? kv : NULL, &png, &plen, &err);
        SD_ASSERT(rc == SD_OK);
        rc = png_decode_rgb(png, plen, FUZZ_PNG_MAX_SIDE, &rgb2, &w2, &h2,
                            &params2, &err);
        SD_ASSERT(rc == SD_OK && w2 == w && h2 == h);
        SD_ASSERT(!memcmp(rgb, rgb2, (size_t)w * (size_t)h * 3));
        SD_ASSERT(params ? params2 && !strcmp(params, params2) : !params2);
    }
    free(png);
    free(rgb2);
    free(params2);
    free(rgb);
    free(params);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_png(data, size);
}
#endif
