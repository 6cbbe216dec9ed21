/* test_compare.c - the whole-image calls through the public API only: qcow2_compare (verdicts,
 * the earliest difference among pieces read in parallel, zero ranges against data, size
 * mismatches, strict mode, progress), qcow2_measure (QEMU 7.2's numbers for sizes and for a
 * source) and qcow2_copy_range. The interop scripts compare.sh, measure.sh and dd.sh hold the
 * CLI to qemu-img; this file holds the library to its documentation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2.h"
#include "testharness.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)

static char g_dir[4096];

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", g_dir, name);
}

/* Create and open image `name` (qcow2 with `cluster_size`/`extended_l2`, or raw). */
static struct qcow2_image *make(const char *name, enum qcow2_format fmt, uint64_t size,
                                uint32_t cluster_size, int extended_l2)
{
    char path[4200], err[QCOW2_ERROR_MAX];
    struct qcow2_create_opts c = QCOW2_CREATE_OPTS_INIT;
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    struct qcow2_image *img = NULL;
    path_of(path, sizeof(path), name);
    c.format = fmt;
    c.size = size;
    c.cluster_size = cluster_size;
    c.extended_l2 = extended_l2;
    int ret = qcow2_create(path, &c, err, sizeof(err));
    CHECK_MSG(ret == 0, "create %s: %s", name, err);
    o.format = fmt;
    ret = qcow2_open(path, &o, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "open %s: %s", name, err);
    return img;
}

static void fill(struct qcow2_image *img, uint64_t offset, uint64_t len, int byte)
{
    uint8_t *buf = malloc(len);
    memset(buf, byte, len);
    CHECK(qcow2_pwrite(img, buf, len, offset, 0) == 0);
    free(buf);
}

/* Two 64 KiB-cluster images `name`-a.qcow2 and `name`-b.qcow2 of `size` bytes. */
static void make_pair(const char *name, uint64_t size, struct qcow2_image **a,
                      struct qcow2_image **b)
{
    char n[256];
    snprintf(n, sizeof(n), "%s-a.qcow2", name);
    *a = make(n, QCOW2_FORMAT_QCOW2, size, 0, 0);
    snprintf(n, sizeof(n), "%s-b.qcow2", name);
    *b = make(n, QCOW2_FORMAT_QCOW2, size, 0, 0);
}

static struct qcow2_compare_result compare(struct qcow2_image *a, struct qcow2_image *b,
                                           unsigned flags)
{
    struct qcow2_compare_result r = QCOW2_COMPARE_RESULT_INIT;
    int ret = qcow2_compare(a, b, flags, &r, NULL, NULL);
    CHECK_MSG(ret == 0, "compare: %s", qcow2_error(a));
    return r;
}

/* The same data written into two layouts (64 KiB clusters; 128 KiB with subclusters) and a
 * raw file: identical, whatever the allocation. */
static void test_same_data_in_different_layouts_is_identical(void)
{
    struct qcow2_image *a = make("same-a.qcow2", QCOW2_FORMAT_QCOW2, 8 * MIB, 0, 0);
    struct qcow2_image *b = make("same-b.qcow2", QCOW2_FORMAT_QCOW2, 8 * MIB, 128 * KIB, 1);
    struct qcow2_image *r = make("same.raw", QCOW2_FORMAT_RAW, 8 * MIB, 0, 0);
    struct qcow2_image *imgs[] = {a, b, r};
    for (int i = 0; i < 3; i++) {
        fill(imgs[i], 0, 3 * MIB, 0x61);
        fill(imgs[i], 5 * MIB + 700, 70001, 0x62);
        CHECK(qcow2_pwrite_zeroes(imgs[i], MIB, 64 * KIB, 0) == 0);
    }
    fill(b, 7 * MIB, 64 * KIB, 0); /* zeros written as data read as zeros */
    struct qcow2_compare_result res = compare(a, b, 0);
    CHECK(res.outcome == QCOW2_COMPARE_IDENTICAL && !res.size_mismatch);
    res = compare(r, b, 0);
    CHECK(res.outcome == QCOW2_COMPARE_IDENTICAL);
    res = compare(a, a, QCOW2_COMPARE_STRICT);
    CHECK(res.outcome == QCOW2_COMPARE_IDENTICAL);
    res = compare(a, r, QCOW2_COMPARE_STRICT); /* allocation differs */
    CHECK(res.outcome == QCOW2_COMPARE_STATUS_MISMATCH);
    qcow2_close(a);
    qcow2_close(b);
    qcow2_close(r);
}

/* Several differences, in pieces read by different threads: the first one by offset is
 * reported, as the start of its 512-byte sector. */
static void test_earliest_difference_wins(void)
{
    struct qcow2_image *a, *b;
    make_pair("first", 32 * MIB, &a, &b);
    fill(a, 0, 32 * MIB, 0x33);
    fill(b, 0, 32 * MIB, 0x33);
    fill(b, 31 * MIB, 1, 0x34);
    fill(b, 20 * MIB + 5, 1, 0x34);
    struct qcow2_compare_result res = compare(a, b, 0);
    CHECK(res.outcome == QCOW2_COMPARE_CONTENT_MISMATCH);
    CHECK_MSG(res.offset == 20 * MIB, "offset %llu", (unsigned long long)res.offset);
    fill(b, 3 * MIB + 1000, 1, 0x34);
    res = compare(a, b, 0);
    CHECK_MSG(res.offset == 3 * MIB + 512, "offset %llu", (unsigned long long)res.offset);
    qcow2_close(a);
    qcow2_close(b);
}

/* Data against a zero range (explicit zeros, or nothing allocated): only the data is read,
 * and it must be zeros. */
static void test_data_against_zeros(void)
{
    struct qcow2_image *a, *b;
    make_pair("zero", 4 * MIB, &a, &b);
    fill(a, 0, 4 * MIB, 0x11);
    CHECK(qcow2_pwrite_zeroes(a, MIB, MIB, 0) == 0);
    fill(b, 0, MIB, 0x11);
    fill(b, 2 * MIB, 2 * MIB, 0x11);
    struct qcow2_compare_result res = compare(a, b, 0);
    CHECK(res.outcome == QCOW2_COMPARE_IDENTICAL);
    fill(b, MIB + 4096, 1, 0x12);
    res = compare(a, b, 0);
    CHECK(res.outcome == QCOW2_COMPARE_CONTENT_MISMATCH && res.offset == MIB + 4096);
    qcow2_close(a);
    qcow2_close(b);
}

/* Different sizes: equal when the longer tail reads as zeros; strict mode refuses at once. */
static void test_size_mismatch(void)
{
    struct qcow2_image *a = make("size-a.qcow2", QCOW2_FORMAT_QCOW2, 4 * MIB, 0, 0);
    struct qcow2_image *b = make("size-b.qcow2", QCOW2_FORMAT_QCOW2, 6 * MIB, 0, 0);
    fill(a, 0, MIB, 0x21);
    fill(b, 0, MIB, 0x21);
    CHECK(qcow2_pwrite_zeroes(b, 5 * MIB, 64 * KIB, 0) == 0);
    struct qcow2_compare_result res = compare(b, a, 0);
    CHECK(res.outcome == QCOW2_COMPARE_IDENTICAL && res.size_mismatch);
    res = compare(a, b, QCOW2_COMPARE_STRICT);
    CHECK(res.outcome == QCOW2_COMPARE_SIZE_MISMATCH);
    fill(b, 5 * MIB + 1000, 1, 0x22);
    res = compare(a, b, 0);
    CHECK(res.outcome == QCOW2_COMPARE_CONTENT_MISMATCH && res.size_mismatch &&
          res.offset == 5 * MIB + 512);
    fill(a, 100, 1, 0x22); /* a difference in the common part: no size warning */
    res = compare(a, b, 0);
    CHECK(res.outcome == QCOW2_COMPARE_CONTENT_MISMATCH && !res.size_mismatch &&
          res.offset == 0);
    qcow2_close(a);
    qcow2_close(b);
}

struct progress_log {
    uint64_t last, total;
    int calls, backwards;
};

static void log_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct progress_log *p = opaque;
    p->backwards += done < p->last;
    p->last = done;
    p->total = total;
    p->calls++;
}

static void test_progress_and_bad_results(void)
{
    struct qcow2_image *a = make("prog-a.qcow2", QCOW2_FORMAT_QCOW2, 4 * MIB, 0, 0);
    struct qcow2_image *b = make("prog-b.qcow2", QCOW2_FORMAT_QCOW2, 6 * MIB, 0, 0);
    struct progress_log log = {0};
    struct qcow2_compare_result res = QCOW2_COMPARE_RESULT_INIT;
    CHECK(qcow2_compare(a, b, 0, &res, log_progress, &log) == 0);
    CHECK(log.calls >= 2 && !log.backwards && log.last == 6 * MIB && log.total == 6 * MIB);
    struct qcow2_compare_result bad = {0};
    CHECK(qcow2_compare(a, b, 0, &bad, NULL, NULL) == -EINVAL);
    CHECK(qcow2_compare(a, b, 0x80, &res, NULL, NULL) == -EINVAL);
    qcow2_close(a);
    qcow2_close(b);
}

static struct qcow2_measure_result measure(struct qcow2_image *src, enum qcow2_format fmt,
                                           uint64_t size, uint32_t cluster_size, int extl2,
                                           enum qcow2_prealloc prealloc)
{
    struct qcow2_create_opts t = QCOW2_CREATE_OPTS_INIT;
    struct qcow2_measure_result r = QCOW2_MEASURE_RESULT_INIT;
    char err[QCOW2_ERROR_MAX];
    t.format = fmt;
    t.size = size;
    t.cluster_size = cluster_size;
    t.extended_l2 = extl2;
    t.preallocation = prealloc;
    CHECK_MSG(qcow2_measure(src, &t, &r, err, sizeof(err)) == 0, "%s", err);
    return r;
}

/* The numbers qemu-img measure 7.2 prints for the same questions. */
static void test_measure_gives_qemus_numbers(void)
{
    struct qcow2_measure_result r =
        measure(NULL, QCOW2_FORMAT_QCOW2, 1024 * MIB, 0, 0, QCOW2_PREALLOC_OFF);
    CHECK(r.required == 393216 && r.fully_allocated == 1074135040 && !r.has_bitmaps);
    r = measure(NULL, QCOW2_FORMAT_QCOW2, 100 * 1024 * MIB, 2 * MIB, 1, QCOW2_PREALLOC_OFF);
    CHECK(r.required == 10485760 && r.fully_allocated == 107384668160ull);
    r = measure(NULL, QCOW2_FORMAT_QCOW2, 1024 * MIB, 0, 0, QCOW2_PREALLOC_FULL);
    CHECK(r.required == 1074135040 && r.fully_allocated == 1074135040);
    r = measure(NULL, QCOW2_FORMAT_RAW, 1001, 0, 0, QCOW2_PREALLOC_OFF);
    CHECK(r.required == 1024 && r.fully_allocated == 1024);

    struct qcow2_image *src = make("measure.qcow2", QCOW2_FORMAT_QCOW2, MIB, 0, 0);
    fill(src, 0, 64 * KIB, 0x41);
    CHECK(qcow2_pwrite_zeroes(src, 128 * KIB, 64 * KIB, 0) == 0);
    r = measure(src, QCOW2_FORMAT_QCOW2, 0, 0, 0, QCOW2_PREALLOC_OFF);
    CHECK(r.required == 393216 && r.fully_allocated == 1376256);
    CHECK(r.has_bitmaps && r.bitmaps == 0);
    r = measure(src, QCOW2_FORMAT_RAW, 0, 0, 0, QCOW2_PREALLOC_OFF);
    CHECK(r.required == MIB && !r.has_bitmaps);

    struct qcow2_create_opts t = QCOW2_CREATE_OPTS_INIT;
    struct qcow2_measure_result res = QCOW2_MEASURE_RESULT_INIT;
    char err[QCOW2_ERROR_MAX];
    t.size = 5 * 1024 * 1024 * MIB * 1024; /* 5 PiB with 64 KiB clusters: L1 too large */
    CHECK(qcow2_measure(NULL, &t, &res, err, sizeof(err)) == -EFBIG);
    CHECK(strstr(err, "too large") != NULL);
    t.size = MIB;
    t.cluster_size = 1000;
    CHECK(qcow2_measure(NULL, &t, &res, err, sizeof(err)) == -EINVAL);
    qcow2_close(src);
}

/* dd's copy: the range lands at the destination offset, zeros written as data. */
static void test_copy_range(void)
{
    struct qcow2_image *src = make("copy-src.qcow2", QCOW2_FORMAT_QCOW2, 8 * MIB, 0, 0);
    struct qcow2_image *dst = make("copy-dst.qcow2", QCOW2_FORMAT_QCOW2, 4 * MIB, 0, 0);
    fill(src, MIB, 2 * MIB, 0x51);
    struct progress_log log = {0};
    CHECK(qcow2_copy_range(src, MIB - 4096, dst, 0, 3 * MIB, 1000, log_progress, &log) == 0);
    CHECK(log.last == 3 * MIB && !log.backwards);
    uint8_t *buf = malloc(3 * MIB);
    CHECK(qcow2_pread(dst, buf, 3 * MIB, 0) == 0);
    int ok = 1;
    for (uint64_t i = 0; i < 3 * MIB; i++)
        ok &= buf[i] == (i < 4096 || i >= 4096 + 2 * MIB ? 0 : 0x51);
    CHECK(ok);
    struct qcow2_extent e = QCOW2_EXTENT_INIT;
    CHECK(qcow2_block_status(dst, 0, 4096, &e) == 0 && (e.flags & QCOW2_BS_DATA));
    CHECK(qcow2_copy_range(src, 7 * MIB, dst, 0, 2 * MIB, 0, NULL, NULL) < 0); /* past end */
    free(buf);
    qcow2_close(src);
    qcow2_close(dst);
}

int main(void)
{
    if (test_make_dir(g_dir, sizeof(g_dir), "test_compare") < 0)
        return 1;
    RUN("same data in different layouts is identical",
        test_same_data_in_different_layouts_is_identical());
    RUN("the earliest difference wins", test_earliest_difference_wins());
    RUN("data against zeros", test_data_against_zeros());
    RUN("size mismatch", test_size_mismatch());
    RUN("progress and bad result structs", test_progress_and_bad_results());
    RUN("measure gives qemu's numbers", test_measure_gives_qemus_numbers());
    RUN("copy range", test_copy_range());
    return test_finish(g_dir);
}
