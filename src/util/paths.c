/* paths.c - see paths.h. */
#include "util/paths.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

void sd_bundled_model_path(char *out, size_t cap)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(out, cap, "tests/data/tiny-sd1");
        return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    if (snprintf(out, cap, "%s/../tests/data/tiny-sd1", exe) >= (int)cap)
        snprintf(out, cap, "tests/data/tiny-sd1");
}
