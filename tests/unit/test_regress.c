/* test_regress.c - inputs that once crashed or hung a fuzz target, replayed through the
 * target's own code: tests/regress/open/ through tests/fuzz/fuzz_open.c (open, block status,
 * read, check, repair, writes), tests/regress/header/ through tests/fuzz/fuzz_header.c
 * (header and extension parsing) and tests/regress/bitmap/ through tests/fuzz/fuzz_bitmap.c
 * (the bitmap directory). Each input must run to the end: a library error is fine, a
 * crash, an assertion, a sanitizer report (in the ASan build) or a hang is not. The file name
 * says what the input once did. */
#define LLVMFuzzerInitialize fuzz_open_initialize
#define LLVMFuzzerTestOneInput fuzz_open_one
#include "../fuzz/fuzz_open.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_header_one
#include "../fuzz/fuzz_header.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_bitmap_one
#include "../fuzz/fuzz_bitmap.c"
#undef LLVMFuzzerTestOneInput
#undef LLVMFuzzerInitialize

#include <dirent.h>
#include <libgen.h>
#include <time.h>

static int g_passed, g_failed;

static int load_input(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    *data = n >= 0 ? malloc((size_t)n + 1) : NULL;
    bool ok = *data && fseek(f, 0, SEEK_SET) == 0 && fread(*data, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    if (!ok) {
        free(*data);
        return -1;
    }
    *size = (size_t)n;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replay every file of `dir` through `one`. */
static void replay_dir(const char *dir, const char *target,
                       int (*one)(const uint8_t *, size_t))
{
    DIR *d = opendir(dir);
    if (!d) {
        printf("skip %s: no directory %s\n", target, dir);
        return;
    }
    char *names[4096];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096)
        if (e->d_name[0] != '.' && strcmp(e->d_name, "README") != 0)
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_names);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        uint8_t *data;
        size_t size;
        /* Printed first: if the input crashes the test, the log names it. */
        printf("     %s %s ... ", target, names[i]);
        fflush(stdout);
        if (load_input(path, &data, &size) < 0) {
            printf("\nFAIL %s %s: cannot read it\n", target, names[i]);
            g_failed++;
            free(names[i]);
            continue;
        }
        time_t t0 = time(NULL);
        one(data, size);
        long secs = (long)(time(NULL) - t0);
        free(data);
        /* A hang shows as a test timeout; a slow input as a failure here. */
        if (secs > 10) {
            printf("\nFAIL %s %s: took %ld s\n", target, names[i], secs);
            g_failed++;
        } else {
            printf("done\nok   %s %s\n", target, names[i]);
            g_passed++;
        }
        free(names[i]);
    }
}

int main(void)
{
    /* This file is tests/unit/test_regress.c; the inputs are in tests/regress/. */
    char here[4096], dir[4200];
    snprintf(here, sizeof(here), "%s", __FILE__);
    char *unit = dirname(here);
    const char *tmp = getenv("QCOW2_TEST_TMPDIR");
    if (tmp && *tmp)
        setenv("TMPDIR", tmp, 1);
    fuzz_open_initialize(NULL, NULL);

    snprintf(dir, sizeof(dir), "%s/../regress/open", unit);
    replay_dir(dir, "fuzz_open", fuzz_open_one);
    snprintf(dir, sizeof(dir), "%s/../regress/header", unit);
    replay_dir(dir, "fuzz_header", fuzz_header_one);
    snprintf(dir, sizeof(dir), "%s/../regress/bitmap", unit);
    replay_dir(dir, "fuzz_bitmap", fuzz_bitmap_one);

    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
