/* fuzz_base64.c - the image fields of every API: base64 and data: URLs
 * (image_field_decode, base64_decode) on arbitrary text.
 *
 * A decode never exceeds its bound; what decodes re-encodes to text that
 * decodes to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/sutil.h"

int fuzz_base64(const uint8_t *data, size_t len)
{
    uint8_t *out = NULL;
    size_t n = 0;
    struct sd_err err = {0};
    size_t max = len / 2 + 1;
    int rc = image_field_decode((const char *)data, len, max, &out, &n, &err);
    if (rc) {
        SD_ASSERT(!out && n == 0 && err.msg[0]);
        return 0;
    }
    SD_ASSERT(n <= max);
    size_t elen = 0;
    char *enc = base64_encode(out, n, &elen);
    SD_ASSERT(enc);
    uint8_t *back = NULL;
    size_t m = 0;
    SD_ASSERT(base64_decode(enc, elen, n, &back, &m, NULL) == SD_OK);
    SD_ASSERT(m == n && (n == 0 || !memcmp(back, out, n)));
    free(back);
    free(enc);
    free(out);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_base64(data, size);
}
#endif
