/* test.h - a tiny named-test harness for the unit and parity tests.
 *
 * Each tests/unit/test_<module>.c defines tests with
 *
 *     TEST(tokenizer_basic) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); }
 *
 * Tests register themselves at start-up (constructor attribute), so adding
 * a file to tests/unit/ is all it takes. `build/unit_tests` runs them all;
 * `build/unit_tests tokenizer` runs those whose name starts with "tokenizer".
 * Tests run from the repository root (paths like "tests/data/..." work).
 * A failed CHECK prints file:line and marks the test failed; the test goes on.
 */
#ifndef SD_TEST_H
#define SD_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
extern int test_failures; /* failed checks in the current test */

#define TEST(name)                                                        \
    static void test_##name(void);                                        \
    __attribute__((constructor)) static void test_reg_##name(void)       \
    {                                                                     \
        test_register(#name, test_##name);                                \
    }                                                                     \
    static void test_##name(void)

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                     \
            test_failures++;                                              \
        }                                                                 \
    } while (0)

#define CHECK_MSG(cond, ...)                                              \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__,      \
                    __LINE__, #cond);                                     \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            test_failures++;                                              \
        }                                                                 \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                \
    do {                                                                  \
        long long a_ = (long long)(a), b_ = (long long)(b);               \
        if (a_ != b_) {                                                   \
            fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n",   \
                    __FILE__, __LINE__, #a, #b, a_, b_);                  \
            test_failures++;                                              \
        }                                                                 \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                             \
    do {                                                                  \
        double a_ = (double)(a), b_ = (double)(b);                        \
        if (!(fabs(a_ - b_) <= (tol))) {                                  \
            fprintf(stderr, "  %s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", \
                    __FILE__, __LINE__, #a, #b, (double)(tol), a_, b_);   \
            test_failures++;                                              \
        }                                                                 \
    } while (0)

/* Skip the rest of a test (prints the reason; not a failure). */
#define SKIP(...)                                                         \
    do {                                                                  \
        fprintf(stderr, "  skipped: ");                                   \
        fprintf(stderr, __VA_ARGS__);                                     \
        fputc('\n', stderr);                                              \
        return;                                                           \
    } while (0)

#endif
