/* paths.h - where things are found relative to the running binary. */
#ifndef SD_PATHS_H
#define SD_PATHS_H

#include <stddef.h>

/* The small default model: installed, <prefix>/share/diffusiond/models/
 * tiny-sd1 (see sd_data_path); in a checkout, <dir of the executable>/../
 * tests/data/tiny-sd1, so `build/diffusiond serve` (or `generate`) finds it
 * from any working directory. Falls back to the relative path when
 * /proc/self/exe is unavailable. */
void sd_bundled_model_path(char *out, size_t cap);

/* The data file or folder `rel` (e.g. "configs/sd15", "tokenizers/clip")
 * that diffusiond ships: found under $DIFFUSIOND_DATA_DIR, then
 * <exe>/../share/diffusiond (installed), then <exe>/../data (a build inside
 * the source tree), then ./data. Returns 1 and the path in out when it
 * exists; 0 (out: the last candidate) when not. */
int sd_data_path(char *out, size_t cap, const char *rel);

#endif
