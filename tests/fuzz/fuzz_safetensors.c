/* fuzz_safetensors.c - st_parse on arbitrary bytes.
 *
 * Accepted files must keep the reader's promises: every tensor lies inside
 * the buffer, no byte belongs to two tensors, st_find finds every tensor,
 * metadata lookups agree, and float tensors convert. Each tensor's bytes
 * are read so ASan flags any pointer past the end of the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

static volatile unsigned fuzz_st_sink;

int fuzz_safetensors(const uint8_t *data, size_t len)
{
    struct st_file *f;
    struct sd_err err = {0};
    if (st_parse(&f, data, len, "fuzz.safetensors", &err)) {
        SD_ASSERT(f == NULL && err.code && err.msg[0]);
        return 0;
    }
    uint8_t *owner = calloc(len ? len : 1, 1);   /* byte -> claimed? */
    SD_ASSERT(owner);
    unsigned sum = 0;
    for (int i = 0; i < st_count(f); i++) {
        const struct st_tensor *t = st_at(f, i);
        SD_ASSERT(st_find(f, t->name) == t);
        SD_ASSERT(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS && t->numel >= 0);
        SD_ASSERT(t->nbytes == (size_t)t->numel * st_dtype_size(t->dtype));
        SD_ASSERT(t->data >= data + 8 && t->nbytes <= len &&
                  (size_t)(t->data - data) <= len - t->nbytes);
        for (size_t k = 0; k < t->nbytes; k++) {
            size_t at = (size_t)(t->data - data) + k;
            SD_ASSERT(!owner[at]);
            owner[at] = 1;
            sum += t->data[k];
        }
        if (t->numel <= (1 << 20)) {
            float *out = malloc(((size_t)t->numel + 1) * sizeof *out);
            SD_ASSERT(out);
            int rc = st_to_f32(t, out, &err);
            SD_ASSERT(rc == SD_OK || rc == SD_ERR_UNSUPPORTED);
            free(out);
        }
    }
    for (int i = 0; i < st_metadata_count(f); i++) {
        const char *k, *v;
        st_metadata_at(f, i, &k, &v);
        SD_ASSERT(st_metadata(f, k) == v);
    }
    fuzz_st_sink = sum;
    free(owner);
    st_close(f);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_safetensors(data, size);
}
#endif
