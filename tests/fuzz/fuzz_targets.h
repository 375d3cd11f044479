/* fuzz_targets.h - the table of fuzz targets.
 *
 * fuzz_main.c (corpus replay, built with -DFUZZ_REPLAY) includes this file,
 * which includes every target's source, so one binary replays them all.
 * A target tests/fuzz/fuzz_<name>.c defines
 *
 *     int fuzz_<name>(const uint8_t *data, size_t len);
 *
 * (plus LLVMFuzzerTestOneInput under #ifndef FUZZ_REPLAY for `make fuzz`),
 * and its seed corpus lives in tests/fuzz/corpus/<name>/. To add a target,
 * add its #include and a row below. Targets share one translation unit
 * here, so their file-local helpers need target-specific names.
 */
#ifndef FUZZ_TARGETS_H
#define FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

#include "fuzz_png.c"
#include "fuzz_safetensors.c"
#include "fuzz_http_request.c"
#include "fuzz_tokenizer.c"
#include "fuzz_pickle.c"
#include "fuzz_image.c"
#include "fuzz_base64.c"
#include "fuzz_form.c"

static const struct {
    const char *name;   /* corpus subdirectory */
    int (*fn)(const uint8_t *, size_t);
} fuzz_targets[] = {
    {"png", fuzz_png},
    {"safetensors", fuzz_safetensors},
    {"http_request", fuzz_http_request},
    {"tokenizer", fuzz_tokenizer},
    {"pickle", fuzz_pickle},
    {"image", fuzz_image},
    {"base64", fuzz_base64},
    {"form", fuzz_form},
};

#endif
