/* fuzz_pickle.c - pt_parse_pickle (the .ckpt reader's pickle machine) on
 * arbitrary bytes.
 *
 * It must never crash, read outside the input, or run anything; what it
 * accepts must be consistent: every tensor has a name, a storage key, a
 * rank within bounds, and its elements lie inside the storage the pickle
 * declares.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/pytorch.h"

int fuzz_pickle(const uint8_t *data, size_t len)
{
    struct pt_state s;
    struct sd_err err = {0};
    int rc = pt_parse_pickle(data, len, "fuzz.pkl", &s, &err);
    if (rc) {
        SD_ASSERT(s.n == 0 && s.t == NULL && err.msg[0]);
        return 0;
    }
    for (int i = 0; i < s.n; i++) {
        const struct pt_tensor *t = &s.t[i];
        SD_ASSERT(t->name && t->storage_key && t->ndim >= 0 && t->ndim <= ST_MAX_DIMS);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            SD_ASSERT(t->shape[d] >= 0);
            numel *= t->shape[d];
        }
        SD_ASSERT(t->offset >= 0 && t->offset <= t->storage_numel && numel <= t->storage_numel - t->offset);
    }
    pt_state_free(&s);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_pickle(data, size);
}
#endif
