/* test_main.c - runs the registered tests (see test.h). */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TESTS 1024

static struct {
    const char *name;
    test_fn fn;
} tests[MAX_TESTS];
static int ntests;
int test_failures;

void test_register(const char *name, test_fn fn)
{
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

static int cmp_test(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return strcmp(x, y);
}

static int matches(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (!strncmp(name, argv[i], strlen(argv[i])))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    /* Registration order depends on link order; run in name order. */
    qsort(tests, ntests, sizeof tests[0], cmp_test);
    int ran = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        if (!matches(tests[i].name, argc, argv))
            continue;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        test_failures = 0;
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        printf("%-8s %-48s %8.1f ms\n", test_failures ? "NOT OK" : "OK", tests[i].name, ms);
        fflush(stdout);
        ran++;
        failed += test_failures != 0;
    }
    printf("%d tests, %d failed\n", ran, failed);
    if (ran == 0) {
        fprintf(stderr, "no test matches\n");
        return 1;
    }
    return failed ? 1 : 0;
}
