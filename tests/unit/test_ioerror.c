/* test_ioerror.c - I/O errors at every I/O point.
 * For each workload (testworkload.c) and every k, the k-th I/O of the run (reads, writes,
 * flushes, truncates, zeroing, discards; opening and closing included) fails through the test
 * backend (testfile.c): once with EIO; with ENOSPC until the failed request has returned (a
 * full disk stays full while the library handles the error), counting only I/O that can run
 * out of space; and as a torn write (the first half of the k-th write reaches the file, then
 * EIO: a short write that ended in an error). Required: the request that
 * met the error fails with that error and a message naming the file and the error; a request
 * that reports success did not lose the error (a flush or FUA write that succeeded did flush:
 * a write that failed inside it was written again in full and flushed; after a failed flush
 * the test backend fails every flush until the request has returned);
 * once the error is gone later requests work; the image closes; it opens again, passes our
 * qcow2_check and `qemu-img check` (leaks allowed); every acknowledged byte reads back, and
 * the failed request's range reads old or new data.
 *
 * The POSIX backend (src/file.c) is tested for short and interrupted transfers by interposing
 * pread/pwritev in this program: it must complete them, and a write that makes no progress
 * must become an error. A failed fdatasync (interposed too) must fail every later flush of
 * the handle.
 *
 * A failed flush must not make freed clusters reusable: after one, a write that allocates and
 * a power loss (every crash state of testcrash.c) may not leave a guest offset reading
 * another's data.
 *
 * IOERROR_FULL=1 (make stress) adds the random workloads and those written for the crash
 * model (IOERROR_SEED=N reseeds the random ones). To debug: IOERROR_ONLY=<workload>
 * IOERROR_K=<k> TESTFILE_TRACE=1 runs one case and prints its I/O. */
#include "testcrash.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "testharness.h"

#define MAX_REPORTS 4 /* problems reported per workload and mode */

struct fail_mode {
    const char *name;
    const char *tag; /* for file names */
    unsigned mask;   /* the kinds of I/O counted and failed */
    int err;
    enum tf_fail_mode mode;
    bool torn;
};

/* A full disk fails what allocates: writes, flushes, truncates, zeroing. */
static const struct fail_mode g_modes[] = {
    {"EIO once", "eio", TF_ALL_IO, EIO, TF_FAIL_ONCE, false},
    {"ENOSPC until the request returns", "enospc", TF_MUTATING | TF_FLUSH, ENOSPC,
     TF_FAIL_STICKY, false},
    {"torn write, then EIO", "torn", TF_PWRITE, EIO, TF_FAIL_ONCE, true},
};

struct sweep_stats {
    size_t runs, swallowed, qemu_checks;
};

/* Which I/Os a sweep fails. make stress (IOERROR_FULL=1) fails every one; make check fails
 * every `stride`-th, starting at `phase`, which rotates over workloads and modes so that the
 * short sweep still meets every residue, plus always the first and the last I/O. */
struct sweep_plan {
    uint64_t stride, phase;
};

static bool plan_takes(const struct sweep_plan *p, uint64_t k, uint64_t n)
{
    return p->stride <= 1 || k == 1 || k >= n || (k + p->phase) % p->stride == 0;
}

/* qemu-img check verdicts by file content. */
struct hash_set {
    uint64_t *v;
    size_t n, cap;
};

static bool set_has(const struct hash_set *s, uint64_t h)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == h)
            return true;
    return false;
}

static void set_add(struct hash_set *s, uint64_t h)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v)
            abort();
    }
    s->v[s->n++] = h;
}

/* Does the message name the file and the error? */
static bool message_is_clear(const char *msg, const char *path, int err)
{
    return msg && strstr(msg, path) && strstr(msg, strerror(err));
}

/* Run `w` from `start` with the k-th I/O failing. Returns 1 when the run has fewer than k
 * I/Os (the sweep is over), 0 when every rule held, -1 after reporting a violation in `why`. */
static int run_with_failure(const struct workload *w, const struct tf_buf *start,
                            const struct tf_buf *base, uint64_t k, const struct fail_mode *fm,
                            struct hash_set *checked, struct sweep_stats *st, char *why,
                            size_t whylen)
{
    char path[4200], err[QCOW2_ERROR_MAX];
    snprintf(path, sizeof(path), "%s/%s.ioerror.qcow2", wl_dir(), w->name);
    if (tf_buf_save(start, path) < 0) {
        snprintf(why, whylen, "cannot write %.1000s", path);
        return -1;
    }
    struct testfile *tf = testfile_open(path, false, err, sizeof(err));
    if (!tf) {
        snprintf(why, whylen, "%s", err);
        return -1;
    }
    testfile_set_logging(tf, false);
    testfile_fail(tf, fm->mask, k, fm->err, fm->mode, fm->torn);

    size_t nops = wl_nb_ops(w);
    size_t failed_op = SIZE_MAX;  /* the request that met the error */
    size_t durable_ops = 0;       /* ops made durable by a successful flush */
    bool close_failed = false;
    bool fired_any = false;
    int result = 0;
    struct qcow2_image *img = NULL;
    struct tf_buf skip = {0}, with = {0};
    size_t *uncertain = NULL;

    int ret = image_open_with_file(path, NULL, testfile_attach(tf), &img, err, sizeof(err));
    if (ret < 0) {
        if (testfile_nb_failures(tf) == 0) {
            snprintf(why, whylen, "open failed without an injected error: %s", err);
            goto fail;
        }
        if (!message_is_clear(err, path, fm->err)) {
            snprintf(why, whylen, "open failed (%s) with an unclear message: '%s'",
                     strerror(-ret), err);
            goto fail;
        }
        /* The error is gone: opening works again. */
        fired_any = true;
        testfile_free(tf);
        tf = testfile_open(path, false, err, sizeof(err));
        if (!tf) {
            snprintf(why, whylen, "%s", err);
            goto fail;
        }
        testfile_set_logging(tf, false);
        ret = image_open_with_file(path, NULL, testfile_attach(tf), &img, err, sizeof(err));
        if (ret < 0) {
            snprintf(why, whylen, "open after the failed open failed: %s", err);
            goto fail;
        }
    }

    for (size_t i = 0; i < nops; i++) {
        uint64_t before = testfile_nb_failures(tf);
        ret = wl_exec(img, w, i);
        bool fired = testfile_nb_failures(tf) > before;
        if (fired) {
            fired_any = true;
            testfile_heal(tf); /* the error is gone once the request has returned */
        }
        enum wl_kind kind = w->ops[i].kind;
        if (ret < 0 && !fired) {
            snprintf(why, whylen, "op %zu failed without an injected error%s: %s", i,
                     failed_op != SIZE_MAX ? " (after the error was gone)" : "",
                     qcow2_error(img));
            goto fail;
        }
        if (ret < 0) {
            failed_op = i;
            const char *msg = qcow2_error(img);
            if (ret != -fm->err) {
                snprintf(why, whylen, "op %zu returned %d (%s), not -%s: '%s'", i, ret,
                         strerror(-ret), fm->err == EIO ? "EIO" : "ENOSPC", msg);
                goto fail;
            }
            if (!message_is_clear(msg, path, fm->err)) {
                snprintf(why, whylen, "op %zu failed with an unclear message: '%s'", i, msg);
                goto fail;
            }
            /* Later ops need the new size, the snapshot, or (a compressed write) the
             * clusters discarded: a failed truncate, snapshot create or discard before a
             * compressed write is repeated, and must work. */
            bool needed = kind == WL_TRUNCATE || kind == WL_SNAP_CREATE ||
                          (kind == WL_DISCARD && i + 1 < nops &&
                           w->ops[i + 1].kind == WL_COMPRESSED);
            if (needed) {
                ret = wl_exec(img, w, i);
                if (ret < 0) {
                    snprintf(why, whylen, "op %zu (%s) failed again after the error was "
                             "gone: %s", i, kind == WL_TRUNCATE       ? "truncate"
                                            : kind == WL_SNAP_CREATE ? "snapshot"
                                                                     : "discard",
                             qcow2_error(img));
                    goto fail;
                }
                failed_op = SIZE_MAX;
            }
            continue;
        }
        if (fired) {
            st->swallowed++;
            printf("     %s: I/O %llu (%s, a %s) failed inside op %zu, which succeeded\n",
                   w->name, (unsigned long long)k, fm->name,
                   testfile_kind_name(testfile_failed_kind(tf)), i);
            /* A flush or FUA write may succeed after a failed write only if the failed
             * bytes were written again in full and flushed before it returned: a metadata
             * block kept dirty in the cache and written by the next flush (a reference the
             * write dropped after linking failed to go: a leak, ignored as QEMU ignores it). */
            if ((kind == WL_FLUSH || kind == WL_WRITE_FUA) && !testfile_failure_repaired(tf)) {
                snprintf(why, whylen,
                         "op %zu (%s) reported success although its %s failed",
                         i, kind == WL_FLUSH ? "flush" : "FUA write",
                         testfile_kind_name(testfile_failed_kind(tf)));
                goto fail;
            }
        }
        if ((kind == WL_FLUSH || kind == WL_WRITE_FUA))
            durable_ops = i + 1;
    }
    /* What must read back: every acknowledged request; the failed one may have happened in
     * part. The open handle must see it now, and the file after a successful close. */
    uncertain = calloc(nops + 1, sizeof(*uncertain));
    if (!uncertain)
        abort();
    struct wl_expect ex = {.durable = &skip, .uncertain = uncertain, .start_size = base->size};
    tf_buf_copy(&skip, base);
    tf_buf_copy(&with, base);
    for (size_t i = 0; i < nops; i++) {
        if (i != failed_op)
            wl_apply(w, i, &skip);
        wl_apply(w, i, &with);
    }
    if (failed_op != SIZE_MAX)
        ex.alternative = &with;
    /* (Only when the error is behind us: otherwise these reads would meet it instead of
     * close.) */
    if (fired_any && wl_check_content(img, w, &ex, why, whylen) < 0) {
        size_t n = strlen(why);
        snprintf(why + n, whylen - n, " (read through the handle that met the error)");
        goto fail;
    }

    uint64_t before = testfile_nb_failures(tf);
    ret = qcow2_close(img);
    img = NULL;
    bool fired = testfile_nb_failures(tf) > before;
    if (ret < 0 && !fired) {
        snprintf(why, whylen, "close failed without an injected error");
        goto fail;
    }
    if (ret == 0 && fired) {
        st->swallowed++;
        printf("     %s: I/O %llu (%s, a %s) failed inside close, which succeeded\n", w->name,
               (unsigned long long)k, fm->name, testfile_kind_name(testfile_failed_kind(tf)));
        if (testfile_failed_kind(tf) & (TF_FLUSH | TF_MUTATING)) {
            snprintf(why, whylen, "close reported success although its %s failed",
                     testfile_kind_name(testfile_failed_kind(tf)));
            goto fail;
        }
    }
    close_failed = ret < 0;
    if (!fired_any && !fired) {
        testfile_free(tf);
        tf = NULL;
        result = 1;
        goto out;
    }
    testfile_free(tf);
    tf = NULL;

    /* After a failed close only what a flush made durable is certain. */
    if (close_failed) {
        tf_buf_copy(&skip, base);
        for (size_t i = 0; i < durable_ops; i++)
            wl_apply(w, i, &skip);
        for (size_t i = durable_ops; i < nops; i++)
            uncertain[ex.nb_uncertain++] = i;
        ex.alternative = NULL;
    }

    struct tf_buf file = {0};
    tf_buf_load(&file, path);
    uint64_t h = tf_buf_hash(&file);
    tf_buf_free(&file);
    bool qemu = !set_has(checked, h) && wl_qemu_check_due(h);
    st->qemu_checks += qemu;
    if (wl_verify(path, w, &ex, qemu, why, whylen) < 0) {
        char keep[4200];
        snprintf(keep, sizeof(keep), "%s/%s.io%llu.%s.qcow2", wl_dir(), w->name,
                 (unsigned long long)k, fm->tag);
        wl_run_cmd("cp '%s' '%s'", path, keep);
        size_t n = strlen(why);
        snprintf(why + n, whylen - n, " [the image is kept as %.1000s]", keep);
        goto fail;
    }
    if (qemu)
        set_add(checked, h);
    goto out;
fail:
    result = -1;
out:
    if (img)
        qcow2_close(img);
    testfile_free(tf);
    tf_buf_free(&skip);
    tf_buf_free(&with);
    free(uncertain);
    st->runs++;
    return result;
}

/* How many I/Os a clean run of `w` does (open and close included). */
static uint64_t count_io(const struct workload *w, const struct tf_buf *start, unsigned mask)
{
    char path[4200], err[QCOW2_ERROR_MAX];
    snprintf(path, sizeof(path), "%s/%s.ioerror.qcow2", wl_dir(), w->name);
    if (tf_buf_save(start, path) < 0)
        return 0;
    struct testfile *tf = testfile_open(path, false, err, sizeof(err));
    if (!tf)
        return 0;
    testfile_set_logging(tf, false);
    struct qcow2_image *img;
    uint64_t n = 0;
    if (image_open_with_file(path, NULL, testfile_attach(tf), &img, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < wl_nb_ops(w); i++)
            CHECK_MSG(wl_exec(img, w, i) == 0, "%s: op %zu: %s", w->name, i, qcow2_error(img));
        CHECK_MSG(qcow2_close(img) == 0, "%s: close", w->name);
        n = testfile_io_count(tf, mask);
    } else {
        CHECK_MSG(0, "%s: open: %s", w->name, err);
    }
    testfile_free(tf);
    return n;
}

static void test_every_io_error_is_reported_and_survived(const struct workload *w,
                                                         const struct fail_mode *fm,
                                                         const struct sweep_plan *plan,
                                                         struct sweep_stats *st)
{
    struct tf_buf start = {0}, base = {0};
    struct hash_set checked = {0};
    if (wl_prepare(w, &start, &base) < 0) {
        CHECK_MSG(0, "%s: cannot prepare the starting image", w->name);
        goto out;
    }
    uint64_t n = count_io(w, &start, fm->mask);
    int reports = 0;
    const char *only_k = getenv("IOERROR_K"); /* one run, for debugging (TESTFILE_TRACE=1) */
    uint64_t k = only_k && *only_k ? strtoull(only_k, NULL, 0) : 1;
    uint64_t tried = 0;
    for (; k <= n + 1; k++) {
        if (!(only_k && *only_k) && !plan_takes(plan, k, n))
            continue;
        tried++;
        char why[2048];
        int ret = run_with_failure(w, &start, &base, k, fm, &checked, st, why, sizeof(why));
        if (ret == 1)
            break;
        if (ret < 0) {
            if (reports++ < MAX_REPORTS)
                CHECK_MSG(0, "%s: I/O %llu of %llu fails (%s): %s", w->name,
                          (unsigned long long)k, (unsigned long long)n, fm->name, why);
            else
                t_failed++;
        }
        if (only_k && *only_k)
            goto out;
    }
    CHECK_MSG(k >= n, "%s: the failure stopped firing at I/O %llu of %llu", w->name,
              (unsigned long long)k, (unsigned long long)n);
    printf("     %s: %llu I/Os, %llu failed in turn\n", w->name, (unsigned long long)n,
           (unsigned long long)tried);
out:
    free(checked.v);
    tf_buf_free(&start);
    tf_buf_free(&base);
}

/* ------------------------------------------------------------------------------------------ */
/* Reuse of freed clusters after a failed flush. */

/* Op 1 is the flush whose writes fail: the L2 change that frees guest 0's cluster is not on
 * disk, so as far as the disk knows that cluster still holds guest 0's data. */
#define REUSE_FAILED_FLUSH 1
static const struct wl_op ops_reuse_after_failed_flush[] = {
    {WL_DISCARD, 0, 64 << 10, 0},
    {WL_FLUSH, 0, 0, 0},               /* fails: every write fails until it returns */
    {WL_WRITE, 1 << 20, 64 << 10, 0},  /* allocates: not guest 0's old cluster */
    {WL_WRITE, 2 << 20, 100, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

static const struct workload wl_reuse_after_failed_flush = {
    .name = "reuse_after_failed_flush", .create_opts = "cluster_size=65536", .size = "4M",
    .cluster_size = 65536, .prep_io = "write -P 0xaa 0 256k",
    .ops = ops_reuse_after_failed_flush};

static unsigned g_exhaustive_max = CRASH_EXHAUSTIVE_MAX_SHORT;

/* Record the workload with its flush failing (EIO on its writes) and healed afterwards (a
 * crash_recorder). */
static int record_with_failed_flush(struct crash_recording *rec, const struct workload *w,
                                    void *opaque, char *why, size_t whylen)
{
    (void)opaque;
    for (size_t i = 0; i < rec->nb_ops; i++) {
        if (i == REUSE_FAILED_FLUSH)
            testfile_fail(rec->tf, TF_PWRITE, 1, EIO, TF_FAIL_STICKY, false);
        int ret = crash_rec_exec(rec, w, i);
        testfile_heal(rec->tf);
        if (i == REUSE_FAILED_FLUSH ? ret != -EIO : ret < 0) {
            snprintf(why, whylen, "op %zu returned %d: %s", i, ret, qcow2_error(rec->img));
            return -1;
        }
    }
    return 0;
}

static void test_no_freed_cluster_is_reused_after_a_failed_flush(void)
{
    const struct workload *w = &wl_reuse_after_failed_flush;
    struct crash_opts o = {.exhaustive_max = g_exhaustive_max, .samples = 1, .seed = 1,
                           .max_reports = MAX_REPORTS,
                           .trace = getenv("IOERROR_TRACE") != NULL,
                           .rerun_hint = "IOERROR_TRACE=1 IOERROR_ONLY="};
    struct crash_stats cs = {0};
    char why[1024];
    long bad = crash_test_workload(w, record_with_failed_flush, NULL, &o, &cs, why,
                                   sizeof(why));
    CHECK_MSG(bad >= 0, "%s: %s", w->name, why);
    CHECK_MSG(bad <= 0, "%s: %ld crash states are wrong (the first %zu are described above)",
              w->name, bad, MIN((size_t)bad, (size_t)MAX_REPORTS));
}

/* ------------------------------------------------------------------------------------------ */
/* The POSIX backend under short and interrupted transfers and a failed fdatasync. The library
 * is linked statically, so these definitions replace libc's for src/file.c. */

enum posix_mode { POSIX_PASS, POSIX_SHORT, POSIX_NO_PROGRESS, POSIX_SYNC_EIO_ONCE };
static enum posix_mode g_posix_mode = POSIX_PASS;
static unsigned long g_posix_calls;
#define SHORT_MAX 700 /* bytes per call: splits iovecs and sectors */

typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);

/* The short, interrupted or stalled form of a vectored write: -2 to pass it through whole. */
static ssize_t posix_mangled_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    static pwritev_fn real;
    if (!real)
        real = (pwritev_fn)dlsym(RTLD_NEXT, "pwritev");
    if (g_posix_mode == POSIX_PASS)
        return real(fd, iov, iovcnt, offset);
    g_posix_calls++;
    if (g_posix_mode == POSIX_NO_PROGRESS)
        return 0;
    if (g_posix_calls % 3 == 0) {
        errno = EINTR;
        return -1;
    }
    struct iovec v[8];
    int n = 0;
    size_t room = SHORT_MAX;
    for (int i = 0; i < iovcnt && n < 8 && room > 0; i++) {
        size_t len = MIN(iov[i].iov_len, room);
        v[n++] = (struct iovec){iov[i].iov_base, len};
        room -= len;
    }
    return real(fd, v, n, offset);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    return posix_mangled_pwritev(fd, iov, iovcnt, offset);
}

/* src/file.c writes a single buffer with pwrite: it must meet the same mangling. */
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    struct iovec v = {(void *)buf, count};
    return posix_mangled_pwritev(fd, &v, 1, offset);
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
    static pread_fn real;
    if (!real)
        real = (pread_fn)dlsym(RTLD_NEXT, "pread");
    if (g_posix_mode != POSIX_SHORT)
        return real(fd, buf, count, offset);
    g_posix_calls++;
    if (g_posix_calls % 3 == 0) {
        errno = EINTR;
        return -1;
    }
    return real(fd, buf, MIN(count, SHORT_MAX), offset);
}

/* fdatasync fails once with EIO in POSIX_SYNC_EIO_ONCE mode (then passes again). */
int fdatasync(int fd)
{
    typedef int (*fdatasync_fn)(int);
    static fdatasync_fn real;
    if (!real)
        real = (fdatasync_fn)dlsym(RTLD_NEXT, "fdatasync");
    if (g_posix_mode != POSIX_SYNC_EIO_ONCE)
        return real(fd);
    g_posix_calls++;
    g_posix_mode = POSIX_PASS;
    errno = EIO;
    return -1;
}

static void test_posix_backend_completes_short_and_interrupted_io(const struct workload *w)
{
    struct tf_buf start = {0}, base = {0}, model = {0};
    if (wl_prepare(w, &start, &base) < 0) {
        CHECK_MSG(0, "%s: cannot prepare the starting image", w->name);
        goto out;
    }
    char path[4200], err[QCOW2_ERROR_MAX], why[2048];
    snprintf(path, sizeof(path), "%s/%s.short.qcow2", wl_dir(), w->name);
    tf_buf_save(&start, path);
    g_posix_calls = 0;
    g_posix_mode = POSIX_SHORT;
    struct qcow2_image *img;
    int ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "open: %s", err);
    if (ret == 0) {
        for (size_t i = 0; i < wl_nb_ops(w); i++) {
            ret = wl_exec(img, w, i);
            CHECK_MSG(ret == 0, "op %zu: %s", i, qcow2_error(img));
        }
        CHECK_MSG(qcow2_close(img) == 0, "close");
    }
    g_posix_mode = POSIX_PASS;
    if (g_posix_calls == 0) {
        /* The library is linked statically: the interposers above must see its calls. */
        CHECK_MSG(0, "pread/pwrite/pwritev interposition is not in effect: nothing tested");
        goto out;
    }
    tf_buf_copy(&model, &base);
    for (size_t i = 0; i < wl_nb_ops(w); i++)
        wl_apply(w, i, &model);
    struct wl_expect ex = {.durable = &model, .start_size = base.size};
    CHECK_MSG(wl_verify(path, w, &ex, true, why, sizeof(why)) == 0, "%s", why);
out:
    tf_buf_free(&start);
    tf_buf_free(&base);
    tf_buf_free(&model);
}

/* A new 1 MiB qcow2 image `name` in the test directory (its path in `path`), opened through
 * the POSIX backend; NULL (the test failed) if that did not work. */
static struct qcow2_image *open_new_posix_image(const char *name, char *path, size_t len)
{
    char err[QCOW2_ERROR_MAX];
    snprintf(path, len, "%s/%s", wl_dir(), name);
    CHECK_MSG(wl_run_cmd("qemu-img create -q -f qcow2 '%s' 1M", path) == 0, "qemu-img create");
    struct qcow2_image *img = NULL;
    int ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "open: %s", err);
    return ret < 0 ? NULL : img;
}

/* After a call in a mangling mode: did the interposed functions see it? If not, nothing was
 * tested: reported as a failure, and the image closed. */
static bool interposed(struct qcow2_image *img, const char *what)
{
    if (g_posix_calls > 0)
        return true;
    CHECK_MSG(0, "%s interposition is not in effect: nothing tested", what);
    qcow2_close(img);
    return false;
}

static void test_posix_backend_fails_a_write_without_progress(void)
{
    char path[4200], err[QCOW2_ERROR_MAX];
    struct qcow2_image *img = open_new_posix_image("noprogress.qcow2", path, sizeof(path));
    if (!img)
        return;
    int ret;
    uint8_t buf[4096];
    memset(buf, 0x5a, sizeof(buf));
    g_posix_calls = 0;
    g_posix_mode = POSIX_NO_PROGRESS;
    ret = qcow2_pwrite(img, buf, sizeof(buf), 8192, 0);
    g_posix_mode = POSIX_PASS;
    if (!interposed(img, "pwrite/pwritev"))
        return;
    CHECK_MSG(ret < 0, "a write that wrote nothing returned %d", ret);
    CHECK_MSG(qcow2_error(img)[0] != '\0', "no message");
    ret = qcow2_pwrite(img, buf, sizeof(buf), 8192, 0);
    CHECK_MSG(ret == 0, "the next write failed: %s", qcow2_error(img));
    CHECK_MSG(qcow2_close(img) == 0, "close");
    int st = wl_qemu_check(path);
    CHECK_MSG(st == 0 || st == 3, "qemu-img check exit status %d", st);
    uint8_t back[4096];
    ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "reopen: %s", err);
    if (ret == 0) {
        CHECK_MSG(qcow2_pread(img, back, sizeof(back), 8192) == 0 &&
                      memcmp(back, buf, sizeof(buf)) == 0,
                  "the data of the retried write does not read back");
        qcow2_close(img);
    }
}

/* After a failed fdatasync every later flush fails (as in QEMU's file driver): Linux may have
 * dropped the pages whose writeback failed, and a later fdatasync that succeeds says nothing
 * about them. A flush or FUA write must not be acknowledged durable on that handle; a new
 * handle starts afresh. */
static void test_posix_backend_flush_failure_is_final(void)
{
    char path[4200], err[QCOW2_ERROR_MAX];
    struct qcow2_image *img = open_new_posix_image("syncfail.qcow2", path, sizeof(path));
    if (!img)
        return;
    int ret;
    uint8_t buf[4096];
    memset(buf, 0x3c, sizeof(buf));
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == 0);
    g_posix_calls = 0;
    g_posix_mode = POSIX_SYNC_EIO_ONCE;
    ret = qcow2_flush(img);
    g_posix_mode = POSIX_PASS;
    if (!interposed(img, "fdatasync"))
        return;
    CHECK_MSG(ret == -EIO, "the failing flush returned %d", ret);
    /* fdatasync works again, but this handle's flushes and FUA writes must not succeed. */
    CHECK_MSG(qcow2_flush(img) == -EIO, "a flush after the failed one succeeded");
    CHECK_MSG(qcow2_pwrite(img, buf, sizeof(buf), 65536, QCOW2_WRITE_FUA) < 0,
              "a FUA write after the failed flush succeeded");
    (void)qcow2_close(img); /* a close is a flush: it fails too */
    ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "reopen: %s", err);
    if (ret == 0) {
        CHECK_MSG(qcow2_pwrite(img, buf, sizeof(buf), 0, QCOW2_WRITE_FUA) == 0,
                  "a new handle cannot flush: %s", qcow2_error(img));
        CHECK_MSG(qcow2_close(img) == 0, "close");
    }
    int st = wl_qemu_check(path);
    CHECK_MSG(st == 0 || st == 3, "qemu-img check exit status %d", st);
}

int main(void)
{
    const char *tmp = getenv("QCOW2_TEST_TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/test_ioerror.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    wl_set_dir(dir);
    if (!wl_have_qemu()) {
        printf("skip: qemu-img/qemu-io not found\n");
        wl_run_cmd("rm -rf '%s'", dir);
        return 77;
    }
    const char *full_env = getenv("IOERROR_FULL");
    bool full = full_env && *full_env && strcmp(full_env, "0") != 0;
    const char *only = getenv("IOERROR_ONLY");
    /* IOERROR_STRIDE: the short sweep's density (default 3: every third I/O for EIO once,
     * every sixth for the two other modes); make check-asan thins it further. */
    const char *stride_env = getenv("IOERROR_STRIDE");
    uint64_t stride = stride_env && *stride_env ? strtoull(stride_env, NULL, 0) : 3;
    if (stride == 0)
        stride = 1;
    /* IOERROR_SEED: the random workloads' seed (default 1), to explore beyond make stress's. */
    const char *seed_env = getenv("IOERROR_SEED");
    wl_make_random(seed_env && *seed_env ? (uint32_t)strtoul(seed_env, NULL, 0) : 1, 40);

    time_t t0 = time(NULL);
    RUN("posix_backend_completes_short_and_interrupted_io",
        test_posix_backend_completes_short_and_interrupted_io(&wl_workloads[0]));
    RUN("posix_backend_fails_a_write_without_progress",
        test_posix_backend_fails_a_write_without_progress());
    RUN("posix_backend_flush_failure_is_final", test_posix_backend_flush_failure_is_final());

    if (full)
        g_exhaustive_max = CRASH_EXHAUSTIVE_MAX_FULL;
    if (!only || !*only || strcmp(only, wl_reuse_after_failed_flush.name) == 0)
        RUN("no_freed_cluster_is_reused_after_a_failed_flush",
            test_no_freed_cluster_is_reused_after_a_failed_flush());

    struct sweep_stats st = {0};
    size_t nb_modes = sizeof(g_modes) / sizeof(g_modes[0]);
    for (size_t i = 0; i < wl_nb_workloads; i++) {
        const struct workload *w = &wl_workloads[i];
        /* An external data file is not behind the failing backend, and every run would
         * change the one data file the starting image refers to. */
        bool named = only && *only;
        if ((w->big && !full) || (w->crash_aimed && !full && !named) || w->data_file ||
            (named && strcmp(only, w->name) != 0))
            continue;
        for (size_t m = 0; m < nb_modes; m++) {
            char label[256];
            snprintf(label, sizeof(label), "every_io_error_is_reported_and_survived (%s, %s)",
                     w->name, g_modes[m].name);
            /* EIO once reaches the most error paths: it gets the denser short sweep. */
            struct sweep_plan plan = {.stride = full ? 1 : m == 0 ? stride : 2 * stride,
                                      .phase = i + m};
            RUN(label,
                test_every_io_error_is_reported_and_survived(w, &g_modes[m], &plan, &st));
        }
    }
    printf("%zu failing runs, %zu errors absorbed by a successful request, %zu distinct "
           "qemu-img checks, %lds\n",
           st.runs, st.swallowed, st.qemu_checks, (long)(time(NULL) - t0));

    if (!getenv("KEEP_TMP") && !g_failed)
        wl_run_cmd("rm -rf '%s'", dir);
    else
        printf("test files kept in %s\n", dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
