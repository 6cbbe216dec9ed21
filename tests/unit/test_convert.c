/* test_convert.c - qcow2_convert() through the public API only, and block status over a sparse
 * disk of terabytes: the copy reads back as the source, its progress ends at its total, bad
 * options are refused with a message, and one block status call spans the unallocated
 * terabytes between two clusters (the scan follows the data, not the virtual size). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2.h"
#include "testharness.h"

#define MiB (1024ull * 1024)
#define TiB (MiB * MiB)

static char g_dir[256];

static const char *path(const char *name)
{
    static char buf[4][320];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", g_dir, name);
    return buf[i];
}

static struct qcow2_image *create_open(const char *name, enum qcow2_format fmt, uint64_t size)
{
    struct qcow2_create_opts c = QCOW2_CREATE_OPTS_INIT;
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    struct qcow2_image *img = NULL;
    char err[QCOW2_ERROR_MAX] = "";
    c.format = fmt;
    c.size = size;
    CHECK_MSG(qcow2_create(path(name), &c, err, sizeof(err)) == 0, "%s", err);
    o.format = fmt;
    CHECK_MSG(qcow2_open(path(name), &o, &img, err, sizeof(err)) == 0, "%s", err);
    return img;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

struct progress {
    uint64_t last_done, total;
    int calls;
};

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct progress *p = opaque;
    p->last_done = done;
    p->total = total;
    p->calls++;
}

/* A source with data, a zero range and unallocated space, copied into qcow2 and raw. */
static void test_convert_copies_the_guest_view(enum qcow2_format out, const char *name)
{
    enum { SIZE = 8 * MiB };
    struct qcow2_image *src = create_open("src.qcow2", QCOW2_FORMAT_QCOW2, SIZE);
    struct qcow2_image *dst = create_open(name, out, SIZE);
    uint8_t *a = malloc(SIZE), *b = malloc(SIZE);
    if (!src || !dst || !a || !b)
        goto out;
    memset(a, 0, SIZE);
    fill(a + MiB, 2 * MiB, 1);
    fill(a + 6 * MiB + 512, 4096, 2);
    CHECK(qcow2_pwrite(src, a + MiB, 2 * MiB, MiB, 0) == 0);
    CHECK(qcow2_pwrite(src, a + 6 * MiB, MiB, 6 * MiB, 0) == 0);
    CHECK(qcow2_pwrite_zeroes(src, 4 * MiB, MiB, 0) == 0);

    struct qcow2_convert_opts o = QCOW2_CONVERT_OPTS_INIT;
    struct progress p = {0};
    char err[QCOW2_ERROR_MAX] = "";
    o.target_is_zero = 1;
    o.workers = 4;
    o.progress = on_progress;
    o.opaque = &p;
    CHECK_MSG(qcow2_convert(src, dst, &o, err, sizeof(err)) == 0, "%s", err);
    CHECK(qcow2_pread(dst, b, SIZE, 0) == 0);
    CHECK(memcmp(a, b, SIZE) == 0);
    CHECK(p.calls >= 2 && p.last_done == p.total);
    /* only the data ranges count: 2 MiB + 1 MiB */
    CHECK_MSG(p.total == 3 * MiB, "progress total %llu", (unsigned long long)p.total);
out:
    free(a);
    free(b);
    if (dst)
        qcow2_close(dst);
    if (src)
        qcow2_close(src);
}

static void test_convert_refuses_bad_options(void)
{
    struct qcow2_image *src = create_open("s.qcow2", QCOW2_FORMAT_QCOW2, MiB);
    struct qcow2_image *small = create_open("small.raw", QCOW2_FORMAT_RAW, MiB / 2);
    struct qcow2_image *raw = create_open("t.raw", QCOW2_FORMAT_RAW, MiB);
    char err[QCOW2_ERROR_MAX] = "";
    if (!src || !small || !raw)
        goto out;
    struct qcow2_convert_opts o = QCOW2_CONVERT_OPTS_INIT;
    CHECK(qcow2_convert(src, small, &o, err, sizeof(err)) == -EINVAL);
    CHECK_MSG(strstr(err, "smaller than the source") != NULL, "%s", err);
    o.compress = 1;
    CHECK(qcow2_convert(src, raw, &o, err, sizeof(err)) == -ENOTSUP);
    o = QCOW2_CONVERT_OPTS_INIT;
    o.min_sparse = 1000; /* not a multiple of 512 */
    CHECK(qcow2_convert(src, raw, &o, err, sizeof(err)) == -EINVAL);
    o = QCOW2_CONVERT_OPTS_INIT;
    o.struct_size = 3; /* not initialised with the macro */
    CHECK(qcow2_convert(src, raw, &o, err, sizeof(err)) == -EINVAL);
    CHECK(qcow2_convert(src, raw, NULL, err, sizeof(err)) == 0); /* defaults */
out:
    if (raw)
        qcow2_close(raw);
    if (small)
        qcow2_close(small);
    if (src)
        qcow2_close(src);
}

/* Two clusters 3 TiB apart: the unallocated range between them is one answer, however many
 * L1 entries and L2 slices it covers, and the answer ends exactly at the next data. */
static void test_block_status_spans_unallocated_terabytes(void)
{
    struct qcow2_image *img = create_open("big.qcow2", QCOW2_FORMAT_QCOW2, 4 * TiB);
    if (!img)
        return;
    uint8_t buf[65536];
    fill(buf, sizeof(buf), 3);
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == 0);
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 3 * TiB + 65536, 0) == 0);
    struct qcow2_extent e = QCOW2_EXTENT_INIT;
    CHECK(qcow2_block_status(img, 65536, 4 * TiB - 65536, &e) == 0);
    CHECK(!(e.flags & QCOW2_BS_DATA) && e.start == 65536);
    CHECK_MSG(e.length == 3 * TiB, "length %llu", (unsigned long long)e.length);
    CHECK(qcow2_block_status(img, 3 * TiB + 65536, 65536, &e) == 0);
    CHECK((e.flags & QCOW2_BS_DATA) && e.length == 65536);
    CHECK(qcow2_block_status(img, 3 * TiB + 131072, TiB - 131072, &e) == 0);
    CHECK(!(e.flags & QCOW2_BS_DATA) && e.length == TiB - 131072);
    qcow2_close(img);
}

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_convert.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN("convert_copies_the_guest_view_into_qcow2",
        test_convert_copies_the_guest_view(QCOW2_FORMAT_QCOW2, "dst.qcow2"));
    RUN("convert_copies_the_guest_view_into_raw",
        test_convert_copies_the_guest_view(QCOW2_FORMAT_RAW, "dst.raw"));
    RUN("convert_refuses_bad_options", test_convert_refuses_bad_options());
    RUN("block_status_spans_unallocated_terabytes",
        test_block_status_spans_unallocated_terabytes());
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
