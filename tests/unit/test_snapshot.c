/* test_snapshot.c - snapshot.c and the qcow2_snapshot_* API: what a snapshot records and
 * gives back, the table written as QEMU writes it (unknown extra data kept), the read-only
 * view, apply across a size change, refusals (refcount overflow undone, raw, read-only,
 * external data file, bad index, ID in use). Images are made by qemu-img and checked with
 * `qemu-img check` after every change; skipped without qemu-img. The interop test
 * (tests/interop/snapshot.sh) compares with qemu-img's snapshots both ways. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testfile.h"
#include "testharness.h"
#include "testworkload.h"

#define MB (1024 * 1024)

static char g_dir[4096];

/* A qemu-img image at g_dir/NAME with OPTS, SIZE, and qemu-io commands IO (may be ""). */
static void make_image(char *path, size_t len, const char *name, const char *opts,
                       const char *size, const char *io)
{
    snprintf(path, len, "%s/%s", g_dir, name);
    CHECK(wl_run_cmd("qemu-img create -q -f qcow2 -o '%s' '%s' %s", opts, path, size) == 0);
    if (*io)
        CHECK(wl_run_cmd("qemu-io %s '%s' >/dev/null", io, path) == 0);
}

static struct qcow2_image *open_rw(const char *path)
{
    struct qcow2_image *img = NULL;
    char err[QCOW2_ERROR_MAX];
    int ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    return img;
}

static bool qemu_check_clean(const char *path)
{
    return wl_run_cmd("qemu-img check -q '%s'", path) == 0;
}

static bool reads_pattern(struct qcow2_image *img, uint64_t off, size_t len, uint8_t pat)
{
    uint8_t *buf = malloc(len);
    bool ok = buf && qcow2_pread(img, buf, len, off) == 0;
    for (size_t i = 0; ok && i < len; i++)
        ok = buf[i] == pat;
    free(buf);
    return ok;
}

static int create(struct qcow2_image *img, const char *name)
{
    struct qcow2_snapshot_opts o = QCOW2_SNAPSHOT_OPTS_INIT;
    o.name = name;
    return qcow2_snapshot_create(img, &o);
}

/* ------------------------------------------------------------------------------------------ */

static void test_fields_round_trip_and_qemu_lists_them(void)
{
    char path[4200];
    make_image(path, sizeof(path), "fields.qcow2", "compat=1.1", "1M", "-c 'write -P 1 0 64k'");
    struct qcow2_image *img = open_rw(path);
    if (!img)
        return;
    struct qcow2_snapshot_opts o = QCOW2_SNAPSHOT_OPTS_INIT;
    o.name = "vm";
    o.date_sec = 1000000000;
    o.date_nsec = 123000;
    o.vm_clock_nsec = 3723456789000ull; /* 01:02:03.456 */
    o.icount = QCOW2_SNAPSHOT_NO_ICOUNT;
    CHECK(qcow2_snapshot_create(img, &o) == 0);
    CHECK(create(img, "plain") == 0);
    CHECK(qcow2_close(img) == 0);

    img = open_rw(path);
    if (!img)
        return;
    CHECK(qcow2_snapshot_count(img) == 2);
    struct qcow2_snapshot_info sn = QCOW2_SNAPSHOT_INFO_INIT;
    CHECK(qcow2_snapshot_get(img, 0, &sn) == 0);
    CHECK(strcmp(sn.id, "1") == 0 && strcmp(sn.name, "vm") == 0);
    CHECK(sn.date_sec == 1000000000 && sn.date_nsec == 123000);
    CHECK(sn.vm_clock_nsec == 3723456789000ull && sn.icount == QCOW2_SNAPSHOT_NO_ICOUNT);
    CHECK(sn.disk_size == 1 * MB && sn.vm_state_size == 0);
    CHECK(qcow2_snapshot_get(img, 1, &sn) == 0);
    CHECK(strcmp(sn.id, "2") == 0 && sn.icount == 0 && sn.date_sec != 0);
    CHECK(qcow2_snapshot_get(img, 2, &sn) == -ENOENT);
    CHECK(qcow2_snapshot_find(img, "2", NULL) == 1);
    CHECK(qcow2_snapshot_find(img, NULL, "vm") == 0);
    CHECK(qcow2_snapshot_find(img, "1", "plain") == -ENOENT);
    CHECK(qcow2_snapshot_find(img, NULL, NULL) == -EINVAL);
    o = QCOW2_SNAPSHOT_OPTS_INIT;
    o.name = "x";
    o.id = "2";
    CHECK(qcow2_snapshot_create(img, &o) == -EEXIST);
    CHECK(qcow2_close(img) == 0);
    CHECK(qemu_check_clean(path));
    /* qemu-img reads the fields we wrote: a blank ICOUNT column, the clock, the date. */
    CHECK(wl_run_cmd("TZ=UTC qemu-img snapshot -l '%s' | grep -q '^1         vm                    "
                  "0 B 2001-09-09 01:46:40 01:02:03.456           $'",
                  path) == 0);
}

static void test_writes_after_create_leave_the_snapshot_alone(void)
{
    char path[4200];
    /* Extended L2 (subclusters) and a compressed cluster among the shared ones. */
    make_image(path, sizeof(path), "cow.qcow2", "extended_l2=on", "4M",
               "-c 'write -P 1 0 1M' -c 'write -c -P 2 2M 64k'");
    struct qcow2_image *img = open_rw(path);
    if (!img)
        return;
    CHECK(create(img, "s") == 0);
    uint8_t buf[4096];
    memset(buf, 9, sizeof(buf));
    CHECK(qcow2_pwrite(img, buf, 3000, 70000, 0) == 0);     /* part of a subcluster */
    CHECK(qcow2_pwrite(img, buf, 4096, 2 * MB + 512, 0) == 0); /* into the compressed one */
    CHECK(qcow2_pwrite_zeroes(img, 512 * 1024, 64 * 1024, QCOW2_ZERO_MAY_UNMAP) == 0);
    CHECK(qcow2_discard(img, 768 * 1024, 64 * 1024) == 0);
    CHECK(qcow2_close(img) == 0);
    CHECK(qemu_check_clean(path));

    struct qcow2_open_opts oo = QCOW2_OPEN_OPTS_INIT;
    char err[QCOW2_ERROR_MAX];
    oo.read_only = 1;
    oo.snapshot_name = "s";
    CHECK(qcow2_open(path, &oo, &img, err, sizeof(err)) == 0);
    if (img) {
        CHECK(reads_pattern(img, 0, 1 * MB, 1));
        CHECK(reads_pattern(img, 2 * MB, 64 * 1024, 2));
        CHECK(qcow2_pwrite(img, buf, 512, 0, 0) == -EROFS);
        CHECK(create(img, "no") == -EROFS);
        qcow2_close(img);
    }
    /* The view needs a read-only handle and an existing snapshot. */
    oo.read_only = 0;
    CHECK(qcow2_open(path, &oo, &img, err, sizeof(err)) == -EINVAL);
    oo.read_only = 1;
    oo.snapshot_name = "nosuch";
    CHECK(qcow2_open(path, &oo, &img, err, sizeof(err)) == -ENOENT);
    CHECK(strcmp(err, "Can't find snapshot") == 0);
}

static void test_apply_brings_back_content_and_size(void)
{
    char path[4200];
    make_image(path, sizeof(path), "apply.qcow2", "compat=1.1", "1M", "-c 'write -P 3 0 1M'");
    struct qcow2_image *img = open_rw(path);
    if (!img)
        return;
    CHECK(create(img, "small") == 0);
    CHECK(qcow2_truncate(img, 3 * MB, QCOW2_PREALLOC_OFF, 0) == 0);
    uint8_t buf[65536];
    memset(buf, 4, sizeof(buf));
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == 0);
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 2 * MB, 0) == 0);
    CHECK(qcow2_snapshot_apply(img, 0) == 0);
    CHECK(qcow2_get_size(img) == 1 * MB); /* as QEMU 7.2: the snapshot's size */
    CHECK(reads_pattern(img, 0, 1 * MB, 3));
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == 0);
    CHECK(qcow2_snapshot_delete(img, 0) == 0);
    CHECK(qcow2_snapshot_count(img) == 0);
    CHECK(reads_pattern(img, 0, sizeof(buf), 4) && reads_pattern(img, 65536, 65536, 3));
    CHECK(qcow2_close(img) == 0);
    CHECK(qemu_check_clean(path));
    CHECK(wl_run_cmd("qemu-img info '%s' | grep -q '^virtual size: 1 MiB'", path) == 0);
}

static void test_unknown_extra_data_is_kept(void)
{
    char path[4200];
    make_image(path, sizeof(path), "extra.qcow2", "compat=1.1", "1M", "-c 'write -P 5 0 4k'");
    struct qcow2_image *img = open_rw(path);
    if (!img)
        return;
    CHECK(create(img, "a") == 0);
    /* Give the entry 8 bytes of extra data a newer QEMU might write. */
    pthread_mutex_lock(&img->lock);
    struct snapshot *sn = &img->snapshots.sn[0];
    uint8_t *extra = realloc(sn->extra, 32);
    if (extra) {
        memset(extra + 24, 0xa5, 8);
        sn->extra = extra;
        sn->extra_data_size = 32;
        CHECK(snapshot_table_write(img, img->snapshots.sn, 1, img->snapshots.size) == 0);
        img->snapshots.size = snapshot_table_size(img->snapshots.sn, 1);
    }
    pthread_mutex_unlock(&img->lock);
    CHECK(create(img, "b") == 0); /* rewrites the table */
    CHECK(qcow2_close(img) == 0);
    CHECK(qemu_check_clean(path));

    img = open_rw(path);
    if (!img)
        return;
    struct snapshot_table t;
    uint32_t bad;
    pthread_mutex_lock(&img->lock);
    CHECK(snapshot_table_read(img, img->hdr.snapshots_offset, img->hdr.nb_snapshots, false, &t,
                              &bad) == 0);
    pthread_mutex_unlock(&img->lock);
    CHECK(t.nb == 2);
    if (t.nb == 2) {
        CHECK(t.sn[0].extra_data_size == 32 && t.sn[0].extra[24] == 0xa5 &&
              t.sn[0].extra[31] == 0xa5);
        CHECK(t.sn[1].extra_data_size == SNAPSHOT_EXTRA_DATA_SIZE);
        CHECK(t.sn[0].disk_size == 1 * MB && t.sn[0].icount == 0);
    }
    snapshot_table_free(&t);
    qcow2_close(img);
}

static void test_refcount_overflow_is_refused_and_undone(void)
{
    char path[4200];
    make_image(path, sizeof(path), "r1.qcow2", "refcount_bits=1", "1M",
               "-c 'write -P 6 0 128k'");
    struct qcow2_image *img = open_rw(path);
    if (!img)
        return;
    CHECK(create(img, "s") == -EINVAL);
    CHECK(qcow2_snapshot_count(img) == 0);
    CHECK(reads_pattern(img, 0, 128 * 1024, 6));
    CHECK(qcow2_close(img) == 0);
    CHECK(qemu_check_clean(path)); /* nothing leaked (qemu-img leaks the L1 copy here) */
}

static void test_v2_lifecycle(void)
{
    char path[4200];
    make_image(path, sizeof(path), "v2.qcow2", "compat=0.10", "2M", "-c 'write -P 7 0 2M'");
    struct qcow2_image *img = open_rw(path);
    if (!img)
        return;
    CHECK(create(img, "a") == 0);
    uint8_t buf[512];
    memset(buf, 8, sizeof(buf));
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 4096, 0) == 0);
    CHECK(create(img, "b") == 0);
    CHECK(qcow2_snapshot_apply(img, 0) == 0);
    CHECK(reads_pattern(img, 0, 2 * MB, 7));
    CHECK(qcow2_snapshot_delete(img, 1) == 0);
    CHECK(qcow2_close(img) == 0);
    CHECK(qemu_check_clean(path));
    CHECK(wl_run_cmd("qemu-img snapshot -l '%s' | grep -c '^[0-9]' | grep -qx 1", path) == 0);
}

static void test_refusals(void)
{
    char path[4200], raw[4200], err[QCOW2_ERROR_MAX];
    struct qcow2_image *img = NULL;
    snprintf(raw, sizeof(raw), "%s/r.raw", g_dir);
    CHECK(wl_run_cmd("qemu-img create -q -f raw '%s' 1M", raw) == 0);
    struct qcow2_open_opts oo = QCOW2_OPEN_OPTS_INIT;
    oo.format = QCOW2_FORMAT_RAW;
    if (qcow2_open(raw, &oo, &img, err, sizeof(err)) == 0) {
        CHECK(qcow2_snapshot_count(img) == 0);
        CHECK(create(img, "x") == -ENOTSUP);
        qcow2_close(img);
    }
    make_image(path, sizeof(path), "ro.qcow2", "compat=1.1", "1M", "");
    oo = QCOW2_OPEN_OPTS_INIT;
    oo.read_only = 1;
    if (qcow2_open(path, &oo, &img, err, sizeof(err)) == 0) {
        CHECK(create(img, "x") == -EROFS);
        qcow2_close(img);
    }
    char df[4200];
    snprintf(path, sizeof(path), "%s/df.qcow2", g_dir);
    snprintf(df, sizeof(df), "%s/df.data", g_dir);
    CHECK(wl_run_cmd("qemu-img create -q -f qcow2 -o data_file='%s' '%s' 1M", df, path) == 0);
    img = open_rw(path);
    if (img) {
        CHECK(create(img, "x") == -ENOTSUP);
        CHECK(qcow2_snapshot_count(img) == 0);
        CHECK(qcow2_snapshot_apply(img, 0) == -ENOTSUP);
        qcow2_close(img);
    }
    struct qcow2_snapshot_info bad = {.struct_size = 0};
    make_image(path, sizeof(path), "abi.qcow2", "compat=1.1", "1M", "");
    img = open_rw(path);
    if (img) {
        CHECK(create(img, "x") == 0);
        CHECK(qcow2_snapshot_get(img, 0, &bad) == -EINVAL);
        CHECK(qcow2_snapshot_delete(img, 5) == -ENOENT);
        qcow2_close(img);
    }
}

/* A snapshot create that fails at any write and is then repeated on the same handle (ENOSPC,
 * space freed, retried) must leave what a single create leaves: no COPIED flag on a table or
 * cluster the snapshot shares, at worst leaked clusters. A failure at the L2 tables' flush
 * once left the L1 entries changed in memory and never written: the retry found nothing to
 * change, so the image kept COPIED on the tables the new snapshot shares, and the next write
 * through them changed the snapshot. */
static void test_failed_create_then_retry_leaves_no_copied_flag_on_shared_tables(void)
{
    char start[4096], path[4200], err[QCOW2_ERROR_MAX];
    /* One L2 table of refcount 1 (L1 entry COPIED), data in it: the create shares both. */
    make_image(start, sizeof(start), "retry.start.qcow2", "cluster_size=4096", "1M",
               "-c 'write -P 0x71 0 256k'");
    snprintf(path, sizeof(path), "%s/retry.qcow2", g_dir);
    int failed_at = 0;
    for (uint64_t k = 1; k <= 64; k++) {
        CHECK(wl_run_cmd("cp '%s' '%s'", start, path) == 0);
        struct testfile *tf = testfile_open(path, false, err, sizeof(err));
        CHECK_MSG(tf, "%s", err);
        struct qcow2_image *img = NULL;
        if (!tf || image_open_with_file(path, NULL, testfile_attach(tf), &img, err,
                                        sizeof(err)) < 0) {
            CHECK_MSG(0, "open: %s", err);
            testfile_free(tf);
            return;
        }
        testfile_fail(tf, TF_PWRITE, k, ENOSPC, TF_FAIL_ONCE, false);
        int ret = create(img, "s1");
        bool fired = testfile_nb_failures(tf) > 0;
        testfile_heal(tf);
        if (ret < 0)
            CHECK_MSG(create(img, "s1") == 0, "write %llu: the repeated create failed: %s",
                      (unsigned long long)k, qcow2_error(img));
        CHECK_MSG(qcow2_close(img) == 0, "write %llu: close", (unsigned long long)k);
        testfile_free(tf);
        /* Exit status 3 is leaks only: allowed after a failure. */
        int st = wl_run_cmd("qemu-img check -q '%s' >/dev/null 2>&1", path);
        CHECK_MSG(st == 0 || (fired && st == 3), "write %llu failed: qemu-img check status %d",
                  (unsigned long long)k, st);
        /* A write by QEMU, which trusts COPIED, must leave the snapshot's bytes alone. */
        CHECK_MSG(wl_run_cmd("qemu-io -c 'write -P 0x72 8k 4k' '%s' >/dev/null && "
                             "qemu-img snapshot -a s1 '%s' && "
                             "out=$(qemu-io -c 'read -P 0x71 0 256k' '%s') && "
                             "echo \"$out\" | grep -q 'read 262144' && "
                             "! echo \"$out\" | grep -q 'verification failed'",
                             path, path, path) == 0,
                  "write %llu failed: the snapshot changed", (unsigned long long)k);
        if (!fired)
            break; /* past the create's last write */
        failed_at++;
    }
    CHECK_MSG(failed_at >= 4, "only %d of the create's writes were failed", failed_at);
}

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_snapshot.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (wl_run_cmd("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
        printf("skip: qemu-img/qemu-io not found\n");
        wl_run_cmd("rm -rf '%s'", g_dir);
        return 77;
    }
    RUN("fields_round_trip_and_qemu_lists_them", test_fields_round_trip_and_qemu_lists_them());
    RUN("writes_after_create_leave_the_snapshot_alone",
        test_writes_after_create_leave_the_snapshot_alone());
    RUN("apply_brings_back_content_and_size", test_apply_brings_back_content_and_size());
    RUN("unknown_extra_data_is_kept", test_unknown_extra_data_is_kept());
    RUN("refcount_overflow_is_refused_and_undone",
        test_refcount_overflow_is_refused_and_undone());
    RUN("v2_lifecycle", test_v2_lifecycle());
    RUN("refusals", test_refusals());
    RUN("failed_create_then_retry_leaves_no_copied_flag_on_shared_tables",
        test_failed_create_then_retry_leaves_no_copied_flag_on_shared_tables());
    printf("%d passed, %d failed\n", g_passed, g_failed);
    if (!g_failed)
        wl_run_cmd("rm -rf '%s'", g_dir);
    return g_failed ? 1 : 0;
}
