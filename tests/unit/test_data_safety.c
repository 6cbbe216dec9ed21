/* test_data_safety.c - regression tests for the data-safety defects of the December 2026
 * review (7abab63, defects 3, 4, 6, 9 and 10; the others are in tests/interop/data_safety.sh).
 * Each scenario starts from an image made by qemu-img/qemu-io, runs through the library over
 * the logging backend, and then every crash state of the run (testscenario.h) must read, byte by
 * byte, what was there before or what was written: never stale data of a kept host cluster,
 * never zeros where the backing file's data belongs, never another guest offset's data.
 * Defect 10 is checked by reading the image through its backing chain with QEMU.
 * The scenario files are tests/tmp/ds-*; they are kept when a test fails, and
 * DATA_SAFETY_TRACE=1 prints the I/O log of a session with bad crash states. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testscenario.h"
#include "testworkload.h"

#include "testharness.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define MAX_REPORTS 3 /* bad crash states printed per test */

/* ------------------------------------------------------------------------------------------ */
/* What a guest range may read. */

/* Every byte of [offset, offset + len) reads `old` or, if `new_byte` >= 0, `new_byte`. */
struct allowed {
    uint64_t offset, len;
    int old, new_byte;
};

/* The first byte of `buf` (guest `base` on) that breaks `a`, as a sentence in `why`. */
static bool bytes_allowed(const uint8_t *buf, uint64_t base, const struct allowed *a,
                          char *why, size_t whylen)
{
    for (uint64_t i = 0; i < a->len; i++) {
        int b = buf[a->offset - base + i];
        if (b == a->old || b == a->new_byte)
            continue;
        if (a->new_byte >= 0)
            snprintf(why, whylen, "guest 0x%llx reads 0x%02x, expected 0x%02x or 0x%02x",
                     (unsigned long long)(a->offset + i), b, a->old, a->new_byte);
        else
            snprintf(why, whylen, "guest 0x%llx reads 0x%02x, expected 0x%02x",
                     (unsigned long long)(a->offset + i), b, a->old);
        return false;
    }
    return true;
}

/* A list of allowed ranges, ended by one of length 0. */
static bool image_reads_allowed(const char *path, const struct allowed *list, char *why,
                                size_t whylen)
{
    char err[QCOW2_ERROR_MAX];
    struct qcow2_open_opts o;
    o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = 1;
    struct qcow2_image *img;
    if (qcow2_open(path, &o, &img, err, sizeof(err)) < 0) {
        snprintf(why, whylen, "does not open: %s", err);
        return false;
    }
    bool ok = true;
    for (const struct allowed *a = list; ok && a->len; a++) {
        uint8_t *buf = malloc(a->len);
        if (qcow2_pread(img, buf, a->len, a->offset) < 0) {
            snprintf(why, whylen, "reading guest 0x%llx+%llu failed: %s",
                     (unsigned long long)a->offset, (unsigned long long)a->len,
                     qcow2_error(img));
            ok = false;
        } else {
            ok = bytes_allowed(buf, a->offset, a, why, whylen);
        }
        free(buf);
    }
    qcow2_close(img);
    return ok;
}

static bool verdict_reads_allowed(const char *state_path, void *opaque, char *why,
                                  size_t whylen)
{
    return image_reads_allowed(state_path, opaque, why, whylen);
}

/* Judge every crash state of `s` up to now; CHECK that none is bad. */
static void check_every_crash_state(const char *label, struct scenario *s,
                                    scenario_verdict_fn verdict, void *opaque)
{
    char state[4200];
    snprintf(state, sizeof(state), "%s.crash-state.qcow2", s->path);
    unsigned nb_states = 0;
    unsigned bad = scenario_check_states(s, testfile_nb_events(s->tf), state, verdict, opaque,
                                      MAX_REPORTS, &nb_states);
    if (bad && getenv("DATA_SAFETY_TRACE"))
        scenario_dump_log(s, 0);
    CHECK_MSG(bad == 0, "%s: %u of %u crash states are bad", label, bad, nb_states);
    CHECK_MSG(nb_states > 1, "%s: only %u crash state (nothing was written?)", label,
              nb_states);
}

/* Start a recorded session on `path` (`opts` may be NULL); CHECK that it opened. */
static bool open_session(struct scenario *s, const char *path,
                         const struct qcow2_open_opts *opts)
{
    char err[QCOW2_ERROR_MAX];
    int ret = scenario_open(s, path, opts, err, sizeof(err));
    CHECK_MSG(ret == 0, "open %s: %s", path, err);
    return ret == 0;
}

/* The type of the L2 entry of guest `offset` in `img`. */
static enum subcluster_type entry_type(struct qcow2_image *img, uint64_t offset)
{
    uint64_t bytes = 512, host = 0;
    enum subcluster_type type = SC_INVALID;
    pthread_mutex_lock(&img->lock);
    int ret = cluster_get_host_offset(img, offset, &bytes, &host, &type);
    pthread_mutex_unlock(&img->lock);
    return ret < 0 ? SC_INVALID : type;
}

static bool write_pattern(struct qcow2_image *img, int byte, uint64_t offset, uint64_t len)
{
    uint8_t *buf = malloc(len);
    memset(buf, byte, len);
    int ret = qcow2_pwrite(img, buf, len, offset, 0);
    free(buf);
    CHECK_MSG(ret == 0, "write 0x%02x at 0x%llx+%llu: %s", byte, (unsigned long long)offset,
              (unsigned long long)len, qcow2_error(img));
    return ret == 0;
}

/* Run a shell command that prepares the scenario (qemu-img, qemu-io); CHECK that it worked. */
static bool prepare(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool prepare(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int ret = wl_run_cmd("%s", cmd);
    CHECK_MSG(ret == 0, "harness: command failed: %s", cmd);
    return ret == 0;
}

/* A raw file of `size` bytes whose first `filled` bytes are `byte`. */
static bool make_raw(const char *path, uint64_t size, int byte, uint64_t filled)
{
    return prepare("qemu-img create -q -f raw '%s' %llu && "
                   "qemu-io -f raw -c 'write -P 0x%02x 0 %llu' '%s' >/dev/null",
                   path, (unsigned long long)size, byte, (unsigned long long)filled, path);
}

/* ------------------------------------------------------------------------------------------ */
/* Defect 3: a write into a kept host cluster whose L2 entry changes. */

/* A 4 KiB write into a zero-flagged cluster that keeps its host cluster (0xaa still there):
 * the rest of the cluster is zeroed by COW and the zero flag cleared. The L2 entry must not
 * reach the disk before the COW: the cluster never shows the stale 0xaa. */
static void test_zeroed_cluster_write_links_after_its_cow(void)
{
    char path[4096];
    wl_path(path, sizeof(path), "ds-zero-alloc.qcow2");
    if (!prepare("qemu-img create -q -f qcow2 '%s' 1M && qemu-io -c 'write -P 0xaa 0 64k' "
                 "-c 'write -z 0 64k' '%s' >/dev/null", path, path))
        return;
    struct scenario s;
    if (!open_session(&s, path, NULL))
        return;
    CHECK_MSG(entry_type(s.img, 0) == SC_ZERO_ALLOC,
              "harness: guest 0 is not a zero-flagged allocated cluster");
    if (write_pattern(s.img, 0xbb, 0, 4 * KiB))
        CHECK_MSG(qcow2_flush(s.img) == 0, "flush: %s", qcow2_error(s.img));
    const struct allowed after[] = {
        {0, 4 * KiB, 0x00, 0xbb},
        {4 * KiB, 60 * KiB, 0x00, -1},
        {0, 0, 0, 0},
    };
    check_every_crash_state("write into a zero-flagged allocated cluster", &s,
                            verdict_reads_allowed, (void *)after);
    scenario_end(&s);
}

/* Extended L2 over a backing file of 0xcc: a 512-byte write into an unallocated subcluster of
 * an allocated cluster. The subcluster's bitmap bit must not reach the disk before its data
 * (COW from the backing file included): the subcluster never reads zeros. */
static void test_new_subcluster_write_links_after_its_data(void)
{
    char back[4096], path[4096];
    wl_path(back, sizeof(back), "ds-subcluster-backing.raw");
    wl_path(path, sizeof(path), "ds-subcluster.qcow2");
    if (!make_raw(back, 1 * MiB, 0xcc, 1 * MiB))
        return;
    if (!prepare("qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=65536 "
                 "-b '%s' -F raw '%s' && qemu-io -c 'write -P 0xcc 0 2k' '%s' >/dev/null",
                 back, path, path))
        return;
    struct scenario s;
    if (!open_session(&s, path, NULL))
        return;
    const uint64_t at = 3 * 2048 + 512; /* inside subcluster 3 */
    CHECK_MSG(entry_type(s.img, 0) == SC_NORMAL && entry_type(s.img, at) == SC_UNALLOCATED_ALLOC,
              "harness: cluster 0 is not allocated with subcluster 3 unallocated");
    if (write_pattern(s.img, 0xbb, at, 512))
        CHECK_MSG(qcow2_flush(s.img) == 0, "flush: %s", qcow2_error(s.img));
    const struct allowed after[] = {
        {0, at, 0xcc, -1},
        {at, 512, 0xcc, 0xbb},
        {at + 512, 64 * KiB - at - 512, 0xcc, -1},
        {0, 0, 0, 0},
    };
    check_every_crash_state("write into a new subcluster", &s, verdict_reads_allowed,
                            (void *)after);
    scenario_end(&s);
}

/* ------------------------------------------------------------------------------------------ */
/* Defect 4: the L2 update of an allocating write must wait for a flush after its data, even
 * when another thread flushed the refcount cache it depends on in the meantime. */

struct writer {
    struct qcow2_image *img;
    int ret;
};

static void *write_4k_at_0(void *arg)
{
    struct writer *w = arg;
    uint8_t buf[4096];
    memset(buf, 0xbb, sizeof(buf));
    w->ret = qcow2_pwrite(w->img, buf, sizeof(buf), 0, 0);
    return NULL;
}

/* T1 writes 4 KiB at guest 0 of an overlay over a raw file of 0xcc: it allocates a cluster and
 * stalls in its COW read of the backing file. Meanwhile T2 zero-writes 64 KiB at 512 MiB, where
 * no L2 table exists: allocating one writes and flushes the refcount cache. T1 resumes and
 * links its cluster; qcow2_flush writes the L2 slice. No crash state may link the cluster
 * before its COW data is on disk: guest 4 KiB..64 KiB reads 0xcc in every one. */
static void test_l2_update_waits_for_data_when_another_thread_flushed(void)
{
    char back[4096], path[4096], err[QCOW2_ERROR_MAX];
    wl_path(back, sizeof(back), "ds-depflush-backing.raw");
    wl_path(path, sizeof(path), "ds-depflush.qcow2");
    if (!make_raw(back, 1024 * MiB, 0xcc, 1 * MiB))
        return;
    if (!prepare("qemu-img create -q -f qcow2 -b '%s' -F raw '%s'", back, path))
        return;
    struct scenario s;
    if (!open_session(&s, path, NULL))
        return;
    /* The backing file's reads go through a testfile too, so that T1's COW read can stall. */
    struct testfile *btf = testfile_open(back, true, err, sizeof(err));
    struct qcow2_image *backing = qcow2_get_backing(s.img);
    CHECK_MSG(btf && backing, "harness: backing file %s: %s", back, btf ? "not open" : err);
    if (!btf || !backing) {
        testfile_free(btf);
        scenario_end(&s);
        return;
    }
    testfile_set_logging(btf, false);
    file_close(backing->file);
    backing->file = backing->data_file = testfile_attach(btf);

    testfile_pause_read(btf, 4096);
    struct writer t1 = {.img = s.img};
    pthread_t th;
    pthread_create(&th, NULL, write_4k_at_0, &t1);
    testfile_wait_paused(btf);
    int zret = qcow2_pwrite_zeroes(s.img, 512 * MiB, 64 * KiB, 0);
    testfile_resume(btf);
    pthread_join(th, NULL);
    CHECK_MSG(t1.ret == 0, "T1's write: %s", qcow2_error(s.img));
    CHECK_MSG(zret == 0, "T2's zero write: %s", qcow2_error(s.img));
    CHECK_MSG(qcow2_flush(s.img) == 0, "flush: %s", qcow2_error(s.img));
    const struct allowed after[] = {
        {0, 4 * KiB, 0xcc, 0xbb},
        {4 * KiB, 60 * KiB, 0xcc, -1},
        {512 * MiB, 64 * KiB, 0x00, -1},
        {0, 0, 0, 0},
    };
    check_every_crash_state("allocating write racing a refcount flush", &s,
                            verdict_reads_allowed, (void *)after);
    scenario_end(&s);
    testfile_free(btf);
}

/* ------------------------------------------------------------------------------------------ */
/* Defect 6: a failed flush must not make freed clusters reusable. */

/* Guest 0 holds 0xaa (durable); it is discarded, and the flush that would make the discard
 * durable fails (every write fails with EIO until healed). After healing, a write of 0xbb at
 * 1 MiB allocates a cluster. The cluster guest 0 had must not be it while the old L2 entry
 * may still be on disk: in no crash state does guest 0 read 1 MiB's 0xbb. */
static void test_failed_flush_keeps_freed_cluster_unused(void)
{
    char path[4096];
    wl_path(path, sizeof(path), "ds-flushfail.qcow2");
    if (!prepare("qemu-img create -q -f qcow2 '%s' 4M && "
                 "qemu-io -c 'write -P 0xaa 0 64k' '%s' >/dev/null", path, path))
        return;
    struct scenario s;
    if (!open_session(&s, path, NULL))
        return;
    CHECK_MSG(qcow2_discard(s.img, 0, 64 * KiB) == 0, "discard: %s", qcow2_error(s.img));
    testfile_fail(s.tf, TF_PWRITE, 1, EIO, TF_FAIL_STICKY, false);
    CHECK_MSG(qcow2_flush(s.img) < 0, "harness: the flush succeeded although writes fail");
    testfile_heal(s.tf);
    if (write_pattern(s.img, 0xbb, 1 * MiB, 64 * KiB))
        CHECK_MSG(qcow2_flush(s.img) == 0, "flush after healing: %s", qcow2_error(s.img));
    const struct allowed after[] = {
        {0, 64 * KiB, 0xaa, 0x00},
        {1 * MiB, 64 * KiB, 0x00, 0xbb},
        {0, 0, 0, 0},
    };
    check_every_crash_state("write after a failed flush", &s, verdict_reads_allowed,
                            (void *)after);
    scenario_end(&s);
}

/* ------------------------------------------------------------------------------------------ */
/* Defect 9: growing over a longer backing file. */

struct growth {
    uint64_t old_size, new_size;
    int backing_byte;
};

/* The state has the old or the new size; the old area reads the backing file, a new area
 * zeros. */
static bool verdict_grown(const char *state_path, void *opaque, char *why, size_t whylen)
{
    const struct growth *g = opaque;
    char err[QCOW2_ERROR_MAX];
    struct qcow2_open_opts o;
    o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = 1;
    struct qcow2_image *img;
    if (qcow2_open(state_path, &o, &img, err, sizeof(err)) < 0) {
        snprintf(why, whylen, "does not open: %s", err);
        return false;
    }
    uint64_t size = qcow2_get_size(img);
    qcow2_close(img);
    if (size != g->old_size && size != g->new_size) {
        snprintf(why, whylen, "virtual size %llu, expected %llu or %llu",
                 (unsigned long long)size, (unsigned long long)g->old_size,
                 (unsigned long long)g->new_size);
        return false;
    }
    const struct allowed list[] = {
        {0, g->old_size, g->backing_byte, -1},
        {g->old_size, size - g->old_size, 0x00, -1},
        {0, 0, 0, 0},
    };
    return image_reads_allowed(state_path, list, why, whylen);
}

/* A 1 MiB overlay over a 2 MiB raw file of 0x99 grows to 2 MiB: no crash state has the new
 * size while the new area shows the backing file's data. */
static void test_growth_over_longer_backing_never_shows_it(void)
{
    char back[4096], path[4096];
    wl_path(back, sizeof(back), "ds-grow-backing.raw");
    wl_path(path, sizeof(path), "ds-grow.qcow2");
    if (!make_raw(back, 2 * MiB, 0x99, 2 * MiB))
        return;
    if (!prepare("qemu-img create -q -f qcow2 -b '%s' -F raw '%s' 1M", back, path))
        return;
    struct scenario s;
    if (!open_session(&s, path, NULL))
        return;
    struct growth g = {1 * MiB, 2 * MiB, 0x99};
    CHECK_MSG(qcow2_truncate(s.img, g.new_size, QCOW2_PREALLOC_OFF, 0) == 0, "grow: %s",
              qcow2_error(s.img));
    check_every_crash_state("growth over a longer backing file", &s, verdict_grown, &g);
    scenario_end(&s);
}

/* ------------------------------------------------------------------------------------------ */
/* Defect 10: a session without the backing file on a v2 image that has one. */

/* A v2 overlay holding 0x55 in its first 128 KiB over a 2 MiB raw file of 0x77 is opened with
 * no_backing (the plugin's backing=0); `op` runs on its first MiB, which then reads as
 * `in_session` says in that session. After closing, QEMU reads the image through its chain
 * (qemu-img convert): `expect` says what the first MiB may read. */
static void no_backing_session(const char *label, const char *name,
                               int (*op)(struct qcow2_image *img),
                               const struct allowed *in_session, const struct allowed *expect)
{
    char back[4096], path[4096], out[4200], err[QCOW2_ERROR_MAX];
    snprintf(err, sizeof(err), "ds-%s-backing.raw", name);
    wl_path(back, sizeof(back), err);
    snprintf(err, sizeof(err), "ds-%s.qcow2", name);
    wl_path(path, sizeof(path), err);
    snprintf(out, sizeof(out), "%s.converted.raw", path);
    if (!make_raw(back, 2 * MiB, 0x77, 2 * MiB))
        return;
    if (!prepare("qemu-img create -q -f qcow2 -o compat=0.10 -b '%s' -F raw '%s' && "
                 "qemu-io -c 'write -P 0x55 0 128k' '%s' >/dev/null", back, path, path))
        return;
    struct qcow2_open_opts o;
    o = QCOW2_OPEN_OPTS_INIT;
    o.no_backing = 1;
    struct qcow2_image *img;
    if (qcow2_open(path, &o, &img, err, sizeof(err)) < 0) {
        CHECK_MSG(0, "open %s without its backing file: %s", path, err);
        return;
    }
    int ret = op(img);
    uint8_t *buf = malloc(MiB);
    if (ret == 0) {
        char why[256];
        CHECK_MSG(qcow2_pread(img, buf, MiB, 0) == 0, "read: %s", qcow2_error(img));
        for (const struct allowed *a = in_session; a->len; a++)
            CHECK_MSG(bytes_allowed(buf, 0, a, why, sizeof(why)),
                      "%s: in the session itself: %s", label, why);
    }
    CHECK_MSG(qcow2_close(img) == 0, "%s: close failed", label);
    if (wl_run_cmd("qemu-img convert -f qcow2 -O raw '%s' '%s'", path, out) != 0) {
        CHECK_MSG(0, "harness: qemu-img convert %s failed", path);
    } else {
        FILE *f = fopen(out, "rb");
        bool full = f && fread(buf, 1, MiB, f) == MiB;
        if (f)
            fclose(f);
        CHECK_MSG(full, "harness: cannot read %s", out);
        char why[256];
        for (const struct allowed *a = expect; full && a->len; a++)
            CHECK_MSG(bytes_allowed(buf, 0, a, why, sizeof(why)),
                      "%s: read through the backing chain by QEMU: %s", label, why);
    }
    free(buf);
}

static int zero_first_mib(struct qcow2_image *img)
{
    int ret = qcow2_pwrite_zeroes(img, 0, MiB, 0);
    CHECK_MSG(ret == 0, "zero write without the backing file: %s", qcow2_error(img));
    return ret;
}

/* A discard is a hint: on v2 with a backing file (which cannot express it) it does nothing
 * (QEMU too), or is refused; it may never expose the backing file. */
static int discard_first_mib(struct qcow2_image *img)
{
    return qcow2_discard(img, 0, MiB);
}

/* Zero writes must leave zeros behind, whatever the backing file holds. */
static void test_no_backing_session_zero_write_hides_backing_data(void)
{
    const struct allowed expect[] = {{0, MiB, 0x00, -1}, {0, 0, 0, 0}};
    no_backing_session("zero write without the backing file", "nobacking-zero",
                       zero_first_mib, expect, expect);
}

/* A discard must not deallocate what the overlay held: that would expose the backing file. */
static void test_no_backing_session_discard_keeps_backing_hidden(void)
{
    const struct allowed expect[] = {{0, 128 * KiB, 0x55, 0x00}, {0, 0, 0, 0}};
    const struct allowed in_session[] = {
        {0, 128 * KiB, 0x55, 0x00}, {128 * KiB, MiB - 128 * KiB, 0x00, -1}, {0, 0, 0, 0}};
    no_backing_session("discard without the backing file", "nobacking-discard",
                       discard_first_mib, in_session, expect);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    if (!wl_have_qemu()) {
        printf("SKIP: qemu-img or qemu-io not installed\n");
        return 77;
    }
    const char *dir = getenv("QCOW2_TEST_TMPDIR");
    wl_set_dir(dir && *dir ? dir : "/tmp");
    /* A scenario whose paused read never comes would wait for ever: end it as a failure. */
    alarm(300);

    /* The label: the defect's number in the review, then the test's name. */
    char label[160];
#define DEFECT(n, fn)                                                                      \
    do {                                                                                   \
        snprintf(label, sizeof(label), "defect %d: %s", n, #fn + strlen("test_"));        \
        RUN(label, fn());                                                                  \
    } while (0)
    DEFECT(3, test_zeroed_cluster_write_links_after_its_cow);
    DEFECT(3, test_new_subcluster_write_links_after_its_data);
    DEFECT(4, test_l2_update_waits_for_data_when_another_thread_flushed);
    DEFECT(6, test_failed_flush_keeps_freed_cluster_unused);
    DEFECT(9, test_growth_over_longer_backing_never_shows_it);
    DEFECT(10, test_no_backing_session_zero_write_hides_backing_data);
    DEFECT(10, test_no_backing_session_discard_keeps_backing_hidden);
#undef DEFECT
    /* The scenario files (ds-*) stay for a post-mortem when something failed. */
    if (!g_failed)
        wl_run_cmd("rm -f '%s'/ds-*", wl_dir());
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
