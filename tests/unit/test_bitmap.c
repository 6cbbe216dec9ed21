/* test_bitmap.c - persistent dirty bitmaps (src/bitmap.c) through the public API, on images
 * the library creates: what each call does and refuses, that writes, zero writes, discards
 * and compressed writes are recorded and reads are not, that a store at close reads back
 * (granularities 512 B .. 64 MiB, standard and extended L2), that in_use is set while open,
 * and the directory parser's refusals. QEMU's view is tests/interop/bitmaps*.sh. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testharness.h"

static char g_dir[4096];

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", g_dir, name);
}

static struct qcow2_image *make(const char *name, const char *size, const char *opts)
{
    char p[4200], err[QCOW2_ERROR_MAX], list[256];
    path_of(p, sizeof(p), name);
    struct qcow2_create_opts co = QCOW2_CREATE_OPTS_INIT;
    snprintf(list, sizeof(list), "size=%s%s%s", size, opts ? "," : "", opts ? opts : "");
    CHECK(qcow2_create_opts_parse(&co, list, err, sizeof(err)) == 0);
    CHECK_MSG(qcow2_create(p, &co, err, sizeof(err)) == 0, "%s", err);
    struct qcow2_image *img = NULL;
    CHECK_MSG(qcow2_open(p, NULL, &img, err, sizeof(err)) == 0, "%s", err);
    return img;
}

static struct qcow2_image *reopen(const char *name, int read_only)
{
    char p[4200], err[QCOW2_ERROR_MAX];
    path_of(p, sizeof(p), name);
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = read_only;
    struct qcow2_image *img = NULL;
    CHECK_MSG(qcow2_open(p, &o, &img, err, sizeof(err)) == 0, "%s", err);
    return img;
}

/* The run at `off` of bitmap `name`: 1 dirty / 0 clean, its length in *len. */
static int run_at(struct qcow2_image *img, const char *name, uint64_t off, uint64_t *len)
{
    return qcow2_bitmap_status(img, name, off, qcow2_get_size(img) - off, len);
}

static void test_add_and_list(void)
{
    struct qcow2_image *img = make("list.qcow2", "64M", NULL);
    if (!img)
        return;
    CHECK(qcow2_bitmap_count(img) == 0);
    CHECK(qcow2_bitmap_add(img, "b0", 0, 0) == 0);
    CHECK(qcow2_bitmap_add(img, "b1", 1 << 20, QCOW2_BITMAP_DISABLED) == 0);
    CHECK(qcow2_bitmap_count(img) == 2);
    struct qcow2_bitmap_info bi = QCOW2_BITMAP_INFO_INIT;
    CHECK(qcow2_bitmap_get_info(img, 0, &bi) == 0);
    CHECK(strcmp(bi.name, "b0") == 0 && bi.granularity == 65536 && bi.enabled && !bi.in_use &&
          bi.recording);
    CHECK(qcow2_bitmap_get_info(img, 1, &bi) == 0);
    CHECK(strcmp(bi.name, "b1") == 0 && bi.granularity == 1 << 20 && !bi.enabled &&
          !bi.recording);
    CHECK(qcow2_bitmap_get_info(img, 2, &bi) == -ENOENT);
    struct qcow2_bitmap_info bad = {0};
    CHECK(qcow2_bitmap_get_info(img, 0, &bad) == -EINVAL); /* INIT forgotten */
    CHECK(qcow2_close(img) == 0);
    img = reopen("list.qcow2", 1);
    if (!img)
        return;
    CHECK(qcow2_bitmap_count(img) == 2);
    CHECK(qcow2_bitmap_get_info(img, 1, &bi) == 0 && !bi.enabled && !bi.in_use);
    CHECK(qcow2_close(img) == 0);
}

static void test_refusals_name_qemu_s_reasons(void)
{
    struct qcow2_image *img = make("refuse.qcow2", "16M", NULL);
    if (!img)
        return;
    CHECK(qcow2_bitmap_add(img, "b0", 0, 0) == 0);
    CHECK(qcow2_bitmap_add(img, "b0", 0, 0) == -EEXIST);
    CHECK(strstr(qcow2_error(img), "Bitmap already exists: b0"));
    CHECK(qcow2_bitmap_add(img, "", 0, 0) == -EINVAL);
    CHECK(strstr(qcow2_error(img), "Bitmap name cannot be empty"));
    CHECK(qcow2_bitmap_add(img, "g", 3000, 0) == -EINVAL);
    CHECK(strstr(qcow2_error(img), "Granularity must be power of 2 and at least 512"));
    CHECK(qcow2_bitmap_add(img, "g", 256, 0) == -EINVAL);
    CHECK(qcow2_bitmap_add(img, "g", 1ull << 32, 0) == -EINVAL);
    char name[1025];
    memset(name, 'n', 1024);
    name[1024] = '\0';
    CHECK(qcow2_bitmap_add(img, name, 0, 0) == -EINVAL);
    CHECK(strstr(qcow2_error(img), "Name length exceeds maximum (1023 characters)"));
    name[1023] = '\0';
    CHECK(qcow2_bitmap_add(img, name, 0, 0) == 0);
    CHECK(qcow2_bitmap_remove(img, "nosuch") == -ENOENT);
    CHECK(strstr(qcow2_error(img), "Dirty bitmap 'nosuch' not found"));
    CHECK(qcow2_bitmap_merge(img, "b0", NULL, "nosuch") == -ENOENT);
    uint64_t len;
    CHECK(qcow2_bitmap_status(img, "b0", 16 << 20, 1, &len) == -EINVAL);
    CHECK(qcow2_close(img) == 0);
    img = reopen("refuse.qcow2", 1);
    if (img) {
        CHECK(qcow2_bitmap_add(img, "x", 0, 0) == -EROFS);
        CHECK(qcow2_bitmap_clear(img, "b0") == -EROFS);
        CHECK(qcow2_close(img) == 0);
    }
    struct qcow2_image *v2 = make("v2.qcow2", "16M", "compat=0.10");
    if (v2) {
        CHECK(qcow2_bitmap_add(v2, "x", 0, 0) == -EINVAL);
        CHECK(strstr(qcow2_error(v2), "Cannot store dirty bitmaps in qcow2 v2 files"));
        CHECK(qcow2_close(v2) == 0);
    }
}

/* Every kind of write marks; reads and flushes do not; disabled bitmaps stay clean. */
static void test_writes_are_recorded(void)
{
    struct qcow2_image *img = make("rec.qcow2", "64M", "cluster_size=65536");
    if (!img)
        return;
    CHECK(qcow2_bitmap_add(img, "on", 4096, 0) == 0);
    CHECK(qcow2_bitmap_add(img, "off", 4096, QCOW2_BITMAP_DISABLED) == 0);
    static uint8_t buf[65536];
    memset(buf, 0x5a, sizeof(buf));
    CHECK(qcow2_pread(img, buf, 4096, 0) == 0);
    CHECK(qcow2_pwrite(img, buf, 100, 10000, 0) == 0);           /* granule 2 */
    CHECK(qcow2_pwrite_zeroes(img, 1 << 20, 8192, 0) == 0);      /* 256, 257 */
    CHECK(qcow2_discard(img, 2 << 20, 65536) == 0);              /* 512 .. 527 */
    CHECK(qcow2_pwrite_compressed(img, buf, 65536, 4 << 20) == 0); /* 1024 .. 1039 */
    CHECK(qcow2_flush(img) == 0);
    uint64_t len;
    CHECK(run_at(img, "on", 0, &len) == 0 && len == 8192);
    CHECK(run_at(img, "on", 8192, &len) == 1 && len == 4096);
    CHECK(run_at(img, "on", 12288, &len) == 0 && len == (1 << 20) - 12288);
    CHECK(run_at(img, "on", 1 << 20, &len) == 1 && len == 8192);
    CHECK(run_at(img, "on", 2 << 20, &len) == 1 && len == 65536);
    CHECK(run_at(img, "on", 4 << 20, &len) == 1 && len == 65536);
    CHECK(run_at(img, "on", (4 << 20) + 65536, &len) == 0 &&
          len == (60 << 20) - 65536);
    CHECK(run_at(img, "off", 0, &len) == 0 && len == 64 << 20);
    /* A range inside a granule reports to the granule's end (or the range's). */
    CHECK(qcow2_bitmap_status(img, "on", 8192 + 100, 10, &len) == 1 && len == 10);
    CHECK(qcow2_close(img) == 0);
    img = reopen("rec.qcow2", 1);
    if (!img)
        return;
    CHECK(run_at(img, "on", 8192, &len) == 1 && len == 4096);
    CHECK(run_at(img, "on", 4 << 20, &len) == 1 && len == 65536);
    CHECK(run_at(img, "off", 0, &len) == 0 && len == 64 << 20);
    CHECK(qcow2_close(img) == 0);
}

static void test_clear_enable_disable_remove_merge(void)
{
    struct qcow2_image *img = make("ops.qcow2", "32M", NULL);
    if (!img)
        return;
    static uint8_t buf[4096];
    CHECK(qcow2_bitmap_add(img, "a", 65536, 0) == 0);
    CHECK(qcow2_bitmap_add(img, "b", 1 << 20, 0) == 0);
    CHECK(qcow2_pwrite(img, buf, 4096, 3 << 20, 0) == 0);
    CHECK(qcow2_bitmap_disable(img, "b") == 0);
    CHECK(qcow2_pwrite(img, buf, 4096, 10 << 20, 0) == 0); /* a only */
    uint64_t len;
    CHECK(run_at(img, "b", 10 << 20, &len) == 0);
    CHECK(qcow2_bitmap_enable(img, "b") == 0);
    CHECK(qcow2_bitmap_clear(img, "a") == 0);
    CHECK(run_at(img, "a", 0, &len) == 0 && len == 32 << 20);
    /* merge b (1 MiB) into a (64 KiB): a's granules under b's dirty MiB */
    CHECK(qcow2_bitmap_merge(img, "a", NULL, "b") == 0);
    CHECK(run_at(img, "a", 3 << 20, &len) == 1 && len == 1 << 20);
    CHECK(qcow2_bitmap_remove(img, "b") == 0);
    CHECK(qcow2_bitmap_count(img) == 1);
    CHECK(qcow2_close(img) == 0);

    /* from another image of the same size, and not of another size */
    struct qcow2_image *src = make("ops-src.qcow2", "32M", NULL);
    struct qcow2_image *small = make("ops-small.qcow2", "16M", NULL);
    img = reopen("ops.qcow2", 0);
    if (src && small && img) {
        CHECK(qcow2_bitmap_add(src, "s", 512, 0) == 0);
        CHECK(qcow2_pwrite(src, buf, 1, 20 << 20, 0) == 0);
        CHECK(qcow2_bitmap_merge(img, "a", src, "s") == 0);
        CHECK(run_at(img, "a", 20 << 20, &len) == 1 && len == 65536);
        CHECK(qcow2_bitmap_add(small, "t", 0, 0) == 0);
        CHECK(qcow2_bitmap_merge(img, "a", small, "t") == -EINVAL);
        CHECK(strstr(qcow2_error(img), "Bitmaps are of different sizes (destination size is "
                                       "33554432, source size is 16777216)"));
    }
    CHECK(qcow2_close(src) == 0);
    CHECK(qcow2_close(small) == 0);
    CHECK(qcow2_close(img) == 0);
}

/* While a writable handle is open, the bitmaps are in_use on disk: a read-only open sees
 * them inconsistent, and every call but remove refuses them (-EBUSY). */
static void test_in_use_while_open_and_inconsistent_after(void)
{
    struct qcow2_image *img = make("inuse.qcow2", "8M", NULL);
    if (!img)
        return;
    CHECK(qcow2_bitmap_add(img, "b0", 0, 0) == 0);
    CHECK(qcow2_close(img) == 0);
    img = reopen("inuse.qcow2", 0);
    struct qcow2_image *ro = reopen("inuse.qcow2", 1);
    if (img && ro) {
        struct qcow2_bitmap_info bi = QCOW2_BITMAP_INFO_INIT;
        CHECK(qcow2_bitmap_get_info(ro, 0, &bi) == 0 && bi.in_use && !bi.recording);
        uint64_t len;
        CHECK(qcow2_bitmap_status(ro, "b0", 0, 512, &len) == -EBUSY);
        CHECK(strstr(qcow2_error(ro), "Bitmap 'b0' is inconsistent and cannot be used"));
        CHECK(qcow2_bitmap_get_info(img, 0, &bi) == 0 && !bi.in_use && bi.recording);
    }
    CHECK(qcow2_close(ro) == 0);
    /* A "crash": copy the file while the writer holds it. */
    char a[4200], b[4200], cmd[8600];
    path_of(a, sizeof(a), "inuse.qcow2");
    path_of(b, sizeof(b), "crashed.qcow2");
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", a, b);
    CHECK(system(cmd) == 0);
    CHECK(qcow2_close(img) == 0);
    img = reopen("crashed.qcow2", 0);
    if (!img)
        return;
    CHECK(qcow2_bitmap_clear(img, "b0") == -EBUSY);
    CHECK(qcow2_bitmap_enable(img, "b0") == -EBUSY);
    CHECK(qcow2_bitmap_merge(img, "b0", NULL, "b0") == -EBUSY);
    CHECK(qcow2_bitmap_remove(img, "b0") == 0);
    CHECK(qcow2_close(img) == 0);
    img = reopen("crashed.qcow2", 1);
    if (img) {
        CHECK(qcow2_bitmap_count(img) == 0);
        struct qcow2_info info = QCOW2_INFO_INIT;
        CHECK(qcow2_get_info(img, &info) == 0 && info.nb_bitmaps == 0 &&
              !(info.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS));
        struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
        CHECK(qcow2_check(img, 0, &res, NULL, NULL) == 0 && res.corruptions == 0 &&
              res.leaks == 0);
        CHECK(qcow2_close(img) == 0);
    }
}

/* Store and load at the edges: 512 B and 64 MiB granularity, extended L2, a disk whose bitmap
 * table spans clusters, truncate. */
static void test_store_round_trip(const char *name, const char *size, const char *opts,
                                  uint64_t gran, uint64_t off)
{
    struct qcow2_image *img = make(name, size, opts);
    if (!img)
        return;
    uint8_t buf[512] = {1};
    CHECK(qcow2_bitmap_add(img, "g", gran, 0) == 0);
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), off, 0) == 0);
    CHECK(qcow2_close(img) == 0);
    img = reopen(name, 1);
    if (!img)
        return;
    uint64_t len, first = off / gran * gran, end = (off + sizeof(buf) + gran - 1) / gran * gran;
    if (first)
        CHECK(run_at(img, "g", 0, &len) == 0 && len == first);
    CHECK(run_at(img, "g", first, &len) == 1 &&
          len == MIN(end, qcow2_get_size(img)) - first);
    struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
    CHECK(qcow2_check(img, 0, &res, NULL, NULL) == 0 && res.corruptions == 0 &&
          res.leaks == 0);
    CHECK(qcow2_close(img) == 0);
}

static void test_truncate_resizes(void)
{
    struct qcow2_image *img = make("trunc.qcow2", "8M", NULL);
    if (!img)
        return;
    uint8_t buf[512] = {1};
    CHECK(qcow2_bitmap_add(img, "g", 65536, 0) == 0);
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 7 << 20, 0) == 0);
    CHECK(qcow2_truncate(img, 4 << 20, QCOW2_PREALLOC_OFF, QCOW2_TRUNCATE_SHRINK) == 0);
    CHECK(qcow2_truncate(img, 16 << 20, QCOW2_PREALLOC_OFF, 0) == 0);
    uint64_t len;
    CHECK(run_at(img, "g", 0, &len) == 0 && len == 16 << 20); /* as QEMU 7.2 */
    CHECK(qcow2_close(img) == 0);
    img = reopen("trunc.qcow2", 1);
    if (img) {
        CHECK(run_at(img, "g", 0, &len) == 0 && len == 16 << 20);
        CHECK(qcow2_close(img) == 0);
    }
}

/* The parser refuses what QEMU refuses (and what would confuse us). */
static void test_directory_parser_refusals(void)
{
    uint8_t e[32] = {0};
    be64_put(e + BME_TABLE_OFFSET, 65536);
    be32_put(e + BME_TABLE_SIZE, 1);
    be32_put(e + BME_FLAGS, BME_FLAG_AUTO);
    e[BME_TYPE] = BME_TYPE_DIRTY_TRACKING;
    e[BME_GRANULARITY_BITS] = 16;
    be16_put(e + BME_NAME_SIZE, 2);
    memcpy(e + BME_HEADER_SIZE, "b0", 2);
    struct bitmap_dir_entry *d;
    char err[256];
    CHECK(bitmap_parse_directory(e, 32, 1, 16, 64 << 20, &d, err, sizeof(err)) == 0);
    bitmap_dir_free(d, 1);
    /* a disk the table does not cover (not in use) */
    CHECK(bitmap_parse_directory(e, 32, 1, 16, 1ull << 40, &d, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "doesn't satisfy the constraints"));
    uint8_t x[32];
    struct {
        size_t at;
        uint8_t val;
    } bad[] = {
        {BME_TYPE, 2}, {BME_GRANULARITY_BITS, 8}, {BME_GRANULARITY_BITS, 32},
        {BME_FLAGS + 3, 4}, {BME_EXTRA_DATA_SIZE + 3, 8}, {BME_TABLE_OFFSET + 7, 1},
        {BME_HEADER_SIZE + 1, 0}, {BME_HEADER_SIZE + 2, 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(x, e, sizeof(x));
        x[bad[i].at] = bad[i].val;
        CHECK_MSG(bitmap_parse_directory(x, 32, 1, 16, 64 << 20, &d, err, sizeof(err)) < 0,
                  "byte %zu = %u accepted", bad[i].at, bad[i].val);
    }
    CHECK(bitmap_parse_directory(e, 32, 2, 16, 64 << 20, &d, err, sizeof(err)) == -EINVAL);
    CHECK(bitmap_parse_directory(e, 24, 1, 16, 64 << 20, &d, err, sizeof(err)) == -EINVAL);
}

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_bitmap.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN("add_and_list", test_add_and_list());
    RUN("refusals_name_qemu_s_reasons", test_refusals_name_qemu_s_reasons());
    RUN("writes_are_recorded", test_writes_are_recorded());
    RUN("clear_enable_disable_remove_merge", test_clear_enable_disable_remove_merge());
    RUN("in_use_while_open_and_inconsistent_after",
        test_in_use_while_open_and_inconsistent_after());
    RUN("store_round_trip_512b", test_store_round_trip("g512.qcow2", "4M", NULL, 512, 3000000));
    RUN("store_round_trip_64m", test_store_round_trip("g64m.qcow2", "1G", NULL, 64 << 20,
                                                      700 << 20));
    RUN("store_round_trip_extl2",
        test_store_round_trip("extl2.qcow2", "64M", "extended_l2=on", 4096, 5 << 20));
    /* 4 TiB, 4 KiB clusters, 128 KiB granularity: 4 MiB of bitmap, a table of 2 clusters */
    RUN("store_round_trip_table_spans_clusters",
        test_store_round_trip("big.qcow2", "4T", "cluster_size=4096", 128 << 10,
                              (3ull << 40) + 12345));
    RUN("truncate_resizes", test_truncate_resizes());
    RUN("directory_parser_refusals", test_directory_parser_refusals());
    if (!getenv("KEEP_TMP")) {
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", g_dir);
    }
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
