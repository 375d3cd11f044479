/* paths.h - where things are found relative to the running binary. */
#ifndef SD_PATHS_H
#define SD_PATHS_H

#include <stddef.h>

/* The model bundled with the repository: <dir of the executable>/../
 * tests/data/tiny-sd1, so `build/diffusiond serve` (or `generate`) finds it
 * from any working directory inside a checkout. Falls back to the relative
 * path when /proc/self/exe is unavailable. */
void sd_bundled_model_path(char *out, size_t cap);

#endif
