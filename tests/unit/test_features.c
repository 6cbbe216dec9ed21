/* test_features.c - feature bits: the table of what we parse and what we maintain, and what
 * opens do with it. A writable open clears every autoclear bit we do not maintain (unknown
 * ones) before it writes anything; persistent bitmaps are maintained: a writable open marks
 * them in_use on disk and its close stores them, with the write recorded, as QEMU reads them
 * back; a read-only open changes
 * no byte of the file; an open for repair keeps the bits and refuses guest writes, and takes
 * tables an ordinary open refuses, for the check to report. Images are made with qemu-img;
 * skipped (77) without it. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testharness.h"
#include "testworkload.h"

static char g_dir[4096];

/* The whole file, or NULL. */
static uint8_t *slurp(const char *name, size_t *len)
{
    char p[4200];
    wl_path(p, sizeof(p), name);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The header of the file as it is on disk now (header_free() it). */
static bool disk_header(const char *name, struct qcow2_header *h)
{
    size_t len = 0;
    uint8_t *buf = slurp(name, &len);
    char err[256];
    bool ok = buf && header_parse_fixed(buf, len, h, err, sizeof(err)) == 0 &&
              len >= (1u << h->cluster_bits) &&
              header_parse_extensions(buf, 1u << h->cluster_bits, h, err, sizeof(err)) == 0;
    CHECK_MSG(ok, "parsing the header of %s", name);
    free(buf);
    return ok;
}

static struct qcow2_image *open_image(const char *name, bool read_only, bool repair)
{
    char p[4200], err[QCOW2_ERROR_MAX];
    wl_path(p, sizeof(p), name);
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = read_only;
    o.repair = repair;
    struct qcow2_image *img = NULL;
    int ret = qcow2_open(p, &o, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "open %s: %s", name, err);
    return img;
}

/* A 4 MiB image with one persistent bitmap "b0" (autoclear bit 0 set) and data in it. */
static bool make_bitmap_image(const char *name)
{
    char p[4200];
    wl_path(p, sizeof(p), name);
    int ret = wl_run_cmd("qemu-img create -q -f qcow2 '%s' 4M && qemu-img bitmap --add '%s' b0 "
                         "&& qemu-io -c 'write -P 0x11 0 64k' '%s' >/dev/null",
                         p, p, p);
    CHECK(ret == 0);
    struct qcow2_header h;
    if (ret != 0 || !disk_header(name, &h))
        return false;
    bool ok = h.has_bitmaps_ext && h.nb_bitmaps == 1 &&
              (h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
    CHECK_MSG(ok, "qemu-img made no consistent bitmap");
    header_free(&h);
    return ok;
}

/* Every bit QEMU 7.2 knows, by QEMU's names: parsed and maintained. */
static void test_table_says_what_is_parsed_and_what_is_maintained(void)
{
    static const struct {
        int type, bit;
        const char *name;
        bool maintained;
    } qemu[] = {
        {QCOW2_FEAT_TYPE_INCOMPATIBLE, 0, "dirty bit", true},
        {QCOW2_FEAT_TYPE_INCOMPATIBLE, 1, "corrupt bit", true},
        {QCOW2_FEAT_TYPE_INCOMPATIBLE, 2, "external data file", true},
        {QCOW2_FEAT_TYPE_INCOMPATIBLE, 3, "compression type", true},
        {QCOW2_FEAT_TYPE_INCOMPATIBLE, 4, "extended L2 entries", true},
        {QCOW2_FEAT_TYPE_COMPATIBLE, 0, "lazy refcounts", true},
        {QCOW2_FEAT_TYPE_AUTOCLEAR, 0, "bitmaps", true},
        {QCOW2_FEAT_TYPE_AUTOCLEAR, 1, "raw external data", true},
    };
    for (size_t i = 0; i < sizeof(qemu) / sizeof(qemu[0]); i++) {
        const struct qcow2_feature *f = header_feature(qemu[i].type, qemu[i].bit);
        CHECK_MSG(f && strcmp(f->name, qemu[i].name) == 0 && f->parsed &&
                      f->maintained == qemu[i].maintained,
                  "%s", qemu[i].name);
    }
    CHECK(header_feature(QCOW2_FEAT_TYPE_INCOMPATIBLE, 5) == NULL);
    CHECK(header_feature_mask(QCOW2_FEAT_TYPE_INCOMPATIBLE, false) == 0x1f);
    CHECK(header_feature_mask(QCOW2_FEAT_TYPE_INCOMPATIBLE, true) == 0x1f);
    CHECK(header_feature_mask(QCOW2_FEAT_TYPE_AUTOCLEAR, false) == 0x3);
    CHECK(header_feature_mask(QCOW2_FEAT_TYPE_AUTOCLEAR, true) == 0x3);
}

static void test_read_only_open_changes_nothing(void)
{
    const char *name = "ro.qcow2";
    if (!make_bitmap_image(name))
        return;
    size_t n0 = 0, n1 = 0;
    uint8_t *before = slurp(name, &n0);
    struct qcow2_image *img = open_image(name, true, false);
    if (img) {
        struct qcow2_info info = QCOW2_INFO_INIT;
        CHECK(qcow2_get_info(img, &info) == 0);
        CHECK(info.nb_bitmaps == 1 && !info.bitmaps_inconsistent);
        uint8_t buf[4096];
        CHECK(qcow2_pread(img, buf, sizeof(buf), 0) == 0 && buf[0] == 0x11);
        CHECK(qcow2_close(img) == 0);
    }
    uint8_t *after = slurp(name, &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    free(before);
    free(after);
}

/* The bitmap's in_use flag on disk (the one bitmap of make_bitmap_image), via qemu-img info. */
static bool qemu_sees_in_use(const char *path)
{
    return wl_run_cmd("qemu-img info -U --output=json '%s' | grep -q '\"in-use\"'", path) == 0;
}

static void test_writable_open_marks_bitmaps_in_use_and_close_stores_the_write(void)
{
    const char *name = "rw.qcow2";
    if (!make_bitmap_image(name))
        return;
    char p[4200];
    wl_path(p, sizeof(p), name);
    struct qcow2_image *img = open_image(name, false, false);
    if (!img)
        return;
    /* Before the first write: the bit stays on and the bitmap is in_use on disk, so that a
     * crash leaves it inconsistent. */
    struct qcow2_header h;
    if (disk_header(name, &h)) {
        CHECK(h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
        CHECK(h.has_bitmaps_ext && h.nb_bitmaps == 1);
        header_free(&h);
    }
    CHECK(qemu_sees_in_use(p));
    struct qcow2_info info = QCOW2_INFO_INIT;
    CHECK(qcow2_get_info(img, &info) == 0);
    CHECK(info.nb_bitmaps == 1 && !info.bitmaps_inconsistent);
    uint8_t buf[4096];
    memset(buf, 0x22, sizeof(buf));
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 1 << 20, 0) == 0);
    uint64_t len = 0;
    CHECK(qcow2_bitmap_status(img, "b0", 1 << 20, 4096, &len) == 1 && len == 4096);
    CHECK(qcow2_close(img) == 0);
    if (disk_header(name, &h)) {
        CHECK((h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) && h.has_bitmaps_ext);
        header_free(&h);
    }
    CHECK(!qemu_sees_in_use(p));
    CHECK(wl_run_cmd("qemu-img check -q '%s'", p) == 0);
    /* Read back: qemu-io's first 64 KiB and the 64 KiB granule of our write are dirty. */
    img = open_image(name, true, false);
    if (!img)
        return;
    CHECK(qcow2_bitmap_status(img, "b0", 0, 4 << 20, &len) == 1 && len == 65536);
    CHECK(qcow2_bitmap_status(img, "b0", 65536, (4 << 20) - 65536, &len) == 0 &&
          len == (1 << 20) - 65536);
    CHECK(qcow2_bitmap_status(img, "b0", 1 << 20, 3 << 20, &len) == 1 && len == 65536);
    CHECK(qcow2_close(img) == 0);
}

/* Unknown autoclear bits go too; one we maintain (raw external data) stays. */
static void test_writable_open_clears_only_unmaintained_autoclear_bits(void)
{
    char p[4200], d[4200];
    wl_path(p, sizeof(p), "raw.qcow2");
    wl_path(d, sizeof(d), "raw.data");
    CHECK(wl_run_cmd("qemu-img create -q -f qcow2 -o data_file='%s',data_file_raw=on '%s' 1M", d,
                     p) == 0);
    struct qcow2_header h;
    if (!disk_header("raw.qcow2", &h))
        return;
    uint64_t unknown = 1ull << 7;
    uint8_t b[8];
    be64_put(b, h.autoclear_features | unknown);
    header_free(&h);
    FILE *f = fopen(p, "r+b");
    CHECK(f && fseek(f, HDR_AUTOCLEAR_FEATURES, SEEK_SET) == 0 && fwrite(b, 8, 1, f) == 1);
    if (f)
        fclose(f);
    struct qcow2_image *img = open_image("raw.qcow2", false, false);
    if (img)
        CHECK(qcow2_close(img) == 0);
    if (disk_header("raw.qcow2", &h)) {
        CHECK(h.autoclear_features == QCOW2_AUTOCLEAR_DATA_FILE_RAW);
        header_free(&h);
    }
}

/* qcow2 check -r opens for repair: the bitmaps stay consistent and are not marked in_use
 * (repairs do not change guest data, and the check counts their clusters as used), so guest
 * writes, which they would not record, are refused. */
static void test_repair_open_keeps_bitmaps_and_refuses_guest_writes(void)
{
    const char *name = "repair.qcow2";
    if (!make_bitmap_image(name))
        return;
    struct qcow2_image *img = open_image(name, false, true);
    if (!img)
        return;
    struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
    CHECK(qcow2_check(img, QCOW2_CHECK_FIX_LEAKS | QCOW2_CHECK_FIX_ERRORS, &res, NULL, NULL) ==
          0);
    CHECK(res.leaks == 0 && res.corruptions == 0);
    uint8_t buf[512] = {0};
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == -EPERM);
    CHECK(qcow2_close(img) == 0);
    struct qcow2_header h;
    if (disk_header(name, &h)) {
        CHECK(h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
        header_free(&h);
    }
}

/* An L1 table past the end of the file: ordinary opens refuse the image with one message; an
 * open for check takes it, the check says what qemu-img check says (the L1 table counted past
 * the end of the file, its L2 table and data clusters leaked), and guest I/O is refused. */
static void test_check_open_takes_a_table_past_eof_and_refuses_guest_io(void)
{
    const char *name = "l1-past-eof.qcow2";
    char p[4200], err[QCOW2_ERROR_MAX];
    wl_path(p, sizeof(p), name);
    int ret = wl_run_cmd("qemu-img create -q -f qcow2 '%s' 4M && qemu-io -c 'write -P 0x11 0 "
                         "128k' -c 'write -P 0x22 1M 64k' '%s' >/dev/null",
                         p, p);
    CHECK(ret == 0);
    FILE *f = fopen(p, "r+b");
    uint8_t off[8];
    be64_put(off, 1ull << 32);
    CHECK(f && fseek(f, HDR_L1_TABLE_OFFSET, SEEK_SET) == 0 && fwrite(off, 8, 1, f) == 1);
    if (f)
        fclose(f);

    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = 1;
    struct qcow2_image *img = NULL;
    CHECK(qcow2_open(p, &o, &img, err, sizeof(err)) == -EINVAL);
    CHECK_MSG(strstr(err, "L1 table") && strstr(err, "past the end of the file"), "%s", err);
    img = open_image(name, true, true);
    if (!img)
        return;
    struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
    CHECK(qcow2_check(img, 0, &res, NULL, NULL) == 0);
    CHECK_MSG(res.corruptions == 1 && res.leaks == 5 && res.check_errors == 0,
              "corruptions %lld leaks %lld check errors %lld", (long long)res.corruptions,
              (long long)res.leaks, (long long)res.check_errors);
    uint8_t buf[512];
    CHECK(qcow2_pread(img, buf, sizeof(buf), 0) == -EIO);
    CHECK(qcow2_close(img) == 0);
}

int main(void)
{
    RUN("table_says_what_is_parsed_and_what_is_maintained",
        test_table_says_what_is_parsed_and_what_is_maintained());
    if (!wl_have_qemu()) {
        printf("skip image tests: qemu-img/qemu-io not found\n");
        printf("%d passed, %d failed\n", g_passed, g_failed);
        return g_failed ? 1 : 0;
    }
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_features.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    wl_set_dir(g_dir);
    RUN("read_only_open_changes_nothing", test_read_only_open_changes_nothing());
    RUN("writable_open_marks_bitmaps_in_use_and_close_stores_the_write",
        test_writable_open_marks_bitmaps_in_use_and_close_stores_the_write());
    RUN("writable_open_clears_only_unmaintained_autoclear_bits",
        test_writable_open_clears_only_unmaintained_autoclear_bits());
    RUN("repair_open_keeps_bitmaps_and_refuses_guest_writes",
        test_repair_open_keeps_bitmaps_and_refuses_guest_writes());
    RUN("check_open_takes_a_table_past_eof_and_refuses_guest_io",
        test_check_open_takes_a_table_past_eof_and_refuses_guest_io());
    if (!getenv("KEEP_TMP"))
        wl_run_cmd("rm -rf '%s'", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
