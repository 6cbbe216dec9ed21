/* test_overlap.c - guest writes never land on metadata: an in-place overwrite whose hostile
 * L2 entry points at the refcount table (or an L2 table) is refused, the image is marked
 * corrupt and the metadata is left as it was, as QEMU does ("Preventing invalid write on
 * metadata"). With an external data file, host offsets name the data file, where no metadata
 * lives: the same offsets are written normally. Images are made with qemu-img/qemu-io and
 * patched in place; skipped (77) without them. */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testharness.h"
#include "testworkload.h"

#define CS 65536u

static char g_dir[4096];

static struct qcow2_image *open_image(const char *name, bool read_only)
{
    char p[4200], err[QCOW2_ERROR_MAX];
    wl_path(p, sizeof(p), name);
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = read_only;
    struct qcow2_image *img = NULL;
    int ret = qcow2_open(p, &o, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "open %s: %s", name, err);
    return img;
}

static int file_bytes(const char *name, uint64_t offset, void *buf, size_t len, bool write)
{
    char p[4200];
    wl_path(p, sizeof(p), name);
    int fd = open(p, write ? O_WRONLY : O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = write ? pwrite(fd, buf, len, (off_t)offset) : pread(fd, buf, len, (off_t)offset);
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

/* A 1 MiB image whose first cluster is written, then L2 entry 0 made to point (COPIED, so
 * that it is overwritten in place) at its own L2 table or at the refcount table. Returns
 * that host offset, 0 on failure. */
static uint64_t make_hostile_image(const char *name, bool at_l2_table)
{
    char p[4200];
    wl_path(p, sizeof(p), name);
    if (wl_run_cmd("qemu-img create -q -f qcow2 '%s' 1M && qemu-io -c 'write -P 0x11 0 64k' '%s' "
                ">/dev/null",
                p, p) != 0)
        return 0;
    struct qcow2_image *img = open_image(name, true);
    if (!img)
        return 0;
    uint64_t l2 = img->l1_table[0] & L1E_OFFSET_MASK;
    uint64_t target = at_l2_table ? l2 : img->hdr.refcount_table_offset;
    qcow2_close(img);
    uint8_t e[8];
    be64_put(e, target | QCOW2_OFLAG_COPIED);
    return l2 && file_bytes(name, l2, e, sizeof(e), true) == 0 ? target : 0;
}

static void test_in_place_write_over_metadata_is_refused(bool at_l2_table, const char *what)
{
    const char *name = at_l2_table ? "over_l2.qcow2" : "over_reftable.qcow2";
    uint64_t target = make_hostile_image(name, at_l2_table);
    CHECK(target != 0);
    if (!target)
        return;
    uint8_t before[CS], after[CS];
    CHECK(file_bytes(name, target, before, CS, false) == 0);
    struct qcow2_image *img = open_image(name, false);
    if (!img)
        return;
    uint8_t buf[4096];
    memset(buf, 0x22, sizeof(buf));
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == -EIO);
    CHECK_MSG(strstr(qcow2_error(img), what) && strstr(qcow2_error(img), "corrupt"), "%s",
              qcow2_error(img));
    CHECK(img->corrupt);
    qcow2_close(img);
    CHECK(file_bytes(name, target, after, CS, false) == 0);
    CHECK(memcmp(before, after, CS) == 0);
    uint8_t f[8];
    CHECK(file_bytes(name, HDR_INCOMPATIBLE_FEATURES, f, sizeof(f), false) == 0);
    CHECK(be64_get(f) & QCOW2_INCOMPAT_CORRUPT);
}

/* Guest offset 64 KiB of an image with a data file is host offset 64 KiB of the data file,
 * where the image file has its refcount table: not an overlap. */
static void test_external_data_file_offsets_are_not_metadata(void)
{
    char p[4200], d[4200];
    wl_path(p, sizeof(p), "df.qcow2");
    wl_path(d, sizeof(d), "df.raw");
    CHECK(wl_run_cmd("qemu-img create -q -f qcow2 -o data_file='%s' '%s' 1M && "
                  "qemu-io -c 'write -P 0x11 64k 64k' '%s' >/dev/null",
                  d, p, p) == 0);
    struct qcow2_image *img = open_image("df.qcow2", false);
    if (!img)
        return;
    CHECK(img->hdr.refcount_table_offset == CS);
    uint8_t buf[4096];
    memset(buf, 0x22, sizeof(buf));
    CHECK_MSG(qcow2_pwrite(img, buf, sizeof(buf), CS, 0) == 0, "%s", qcow2_error(img));
    CHECK(!img->corrupt);
    qcow2_close(img);
    CHECK(wl_run_cmd("qemu-io -c 'read -P 0x22 64k 4k' -c 'read -P 0x11 68k 60k' '%s' "
                  "| grep -q 'verification failed'",
                  p) == 1);
    CHECK(wl_run_cmd("qemu-img check -q '%s'", p) == 0);
}

int main(void)
{
    if (!wl_have_qemu()) {
        printf("skip: qemu-img/qemu-io not found\n");
        return 77;
    }
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_overlap.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    wl_set_dir(g_dir);
    RUN("in_place_write_over_refcount_table_is_refused",
        test_in_place_write_over_metadata_is_refused(false, "refcount table"));
    RUN("in_place_write_over_l2_table_is_refused",
        test_in_place_write_over_metadata_is_refused(true, "L2 table"));
    RUN("external_data_file_offsets_are_not_metadata",
        test_external_data_file_offsets_are_not_metadata());
    if (!getenv("KEEP_TMP"))
        wl_run_cmd("rm -rf '%s'", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
