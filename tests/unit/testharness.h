/* testharness.h - the counting and reporting every unit test shares: CHECK/CHECK_MSG record a
 * failure in the current test, RUN runs one test and prints "ok"/"FAIL" with its label, and
 * each program ends by printing g_passed and g_failed as "N passed, M failed" (CTest shows it).
 * Included by one test file each (the counters are that program's). */
#ifndef QCOW2_TESTHARNESS_H
#define QCOW2_TESTHARNESS_H

#include <stdio.h>
#include <stdlib.h>

static int g_passed, g_failed;
static int t_failed; /* failures in the current test */

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            t_failed++;                                                                    \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                                               \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            t_failed++;                                                                    \
            fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* RUN(label, call): run one test and count it. */
#define RUN(label, call)                                                                   \
    do {                                                                                   \
        t_failed = 0;                                                                      \
        call;                                                                              \
        if (t_failed)                                                                      \
            g_failed++;                                                                    \
        else                                                                               \
            g_passed++;                                                                    \
        printf("%s %s\n", t_failed ? "FAIL" : "ok  ", label);                              \
        fflush(stdout);                                                                    \
    } while (0)

/* A scratch directory NAME.XXXXXX under $QCOW2_TEST_TMPDIR (or /tmp) into `dir`; 0 or -1. */
static inline int test_make_dir(char *dir, size_t len, const char *name)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(dir, len, "%s/%s.XXXXXX", base ? base : "/tmp", name);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

/* Remove the scratch directory, print "N passed, M failed"; the program's exit status. */
static inline int test_finish(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}

#endif /* QCOW2_TESTHARNESS_H */
