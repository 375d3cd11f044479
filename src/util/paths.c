/* paths.c - see paths.h. */
#include "util/paths.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The directory of the running executable, or "" when unknown. */
static void exe_dir(char *out, size_t cap)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    out[0] = 0;
    if (n <= 0)
        return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    if (strlen(exe) < cap)
        snprintf(out, cap, "%s", exe);
}

int sd_data_path(char *out, size_t cap, const char *rel)
{
    char dir[4096];
    const char *env = getenv("DIFFUSIOND_DATA_DIR");
    if (env && *env) {
        snprintf(out, cap, "%s/%s", env, rel);
        if (access(out, F_OK) == 0)
            return 1;
    }
    exe_dir(dir, sizeof dir);
    if (dir[0]) {
        static const char *const rels[] = {"../share/diffusiond", "../data"};
        for (int i = 0; i < 2; i++) {
            if (snprintf(out, cap, "%s/%s/%s", dir, rels[i], rel) < (int)cap && access(out, F_OK) == 0)
                return 1;
        }
    }
    snprintf(out, cap, "data/%s", rel);
    return access(out, F_OK) == 0;
}

void sd_bundled_model_path(char *out, size_t cap)
{
    /* Installed: <prefix>/share/diffusiond/models/tiny-sd1. */
    if (sd_data_path(out, cap, "models/tiny-sd1") && strncmp(out, "data/", 5))
        return;
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
