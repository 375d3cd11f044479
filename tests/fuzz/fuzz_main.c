/* fuzz_main.c - replays fuzz corpora without libFuzzer.
 *
 * Every tests/fuzz/fuzz_<name>.c defines `int fuzz_<name>(const uint8_t *,
 * size_t)` and, for libFuzzer, LLVMFuzzerTestOneInput. This driver includes
 * them all and feeds each file of tests/fuzz/corpus/<name>/ to its target,
 * so `make test` (and the sanitizer run) exercise every parser on the corpus.
 *
 *   build/fuzz_replay [corpus_root]        (default tests/fuzz/corpus)
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_targets.h"

static int replay_dir(const char *root, const char *name,
                      int (*fn)(const uint8_t *, size_t))
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "fuzz_replay: no corpus %s\n", dir);
        return 1;
    }
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        /* Exact-size heap copy so ASan catches any read past the end. */
        uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
        if (!buf || (len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len)) {
            fclose(f);
            free(buf);
            return 1;
        }
        fclose(f);
        fn(buf, (size_t)len);
        free(buf);
        n++;
    }
    closedir(d);
    printf("fuzz_replay: %-14s %d inputs\n", name, n);
    return n == 0;
}

int main(int argc, char **argv)
{
    const char *root = argc > 1 ? argv[1] : "tests/fuzz/corpus";
    int bad = 0;
    for (size_t i = 0; i < sizeof fuzz_targets / sizeof fuzz_targets[0]; i++)
        bad |= replay_dir(root, fuzz_targets[i].name, fuzz_targets[i].fn);
    return bad;
}
