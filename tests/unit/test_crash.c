/* test_crash.c - crash consistency at every write.
 * Each workload runs once over the logging backend (testfile.c), from a starting image made by
 * qemu-img. Then, for every k, the file is rebuilt as a machine that lost power right after
 * the k-th write would have left it (testcrash.c): every write that a flush completed is
 * there; of the writes since the last flush, every subset survived when there are at most
 * CRASH_EXHAUSTIVE_MAX_SHORT (8) of them (make check) or CRASH_EXHAUSTIVE_MAX_FULL (12; make
 * stress: CRASH_FULL=1), else all of them, none, and seeded random subsets; and seeded random
 * subsets of their 512-byte sectors (torn writes). The random workloads of the full run keep
 * the short threshold: with 12 one of them alone took over half an hour here. Each state must open read-write (a dirty
 * lazy-refcounts image is repaired by the open), read back every byte that a completed flush
 * made durable (and nothing but old or newly written values elsewhere), pass our qcow2_check
 * and `qemu-img check` (leaks allowed), and leave an internal snapshot's content untouched.
 * make check puts one distinct state in three past qemu-img (and the snapshot read through
 * it), chosen by the state's hash (QCOW2_QEMU_CHECK_EVERY); make stress every one.
 *
 * Two-thread schedules: one op runs in a second thread, held by the backend at its first
 * write while the main thread runs other ops (flushes among them), then released; the log
 * of that interleaving is checked the same way.
 *
 * An external data file is not behind the logging backend, so its writes are not
 * crash-simulated: for such a workload the completed run is verified, and the raw data file
 * must read as the guest does.
 *
 * The write-path matrix (testshapes.h: every request shape of test_cluster into every target
 * state, standard and extended L2, with and without a backing file, a flush after each
 * request) is crashed the same way: 7 of its 40 images of writes in make check; in make
 * stress all of them, and as many of zero writes (with and without unmapping) and discards.
 *
 * CRASH_FULL=1 also adds the random workloads (three seeds) and tries 4 random subsets of
 * each kind per crash point; CRASH_SEED=N changes the random subsets and workloads;
 * CRASH_ONLY=<workload> runs one workload (CRASH_ONLY=shapes the whole matrix),
 * CRASH_TRACE=1 prints its log.
 * A failing state is kept as <workload>.k<K>.<variant>.qcow2 in the test directory. */
#include "testcrash.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testharness.h"
#include "testshapes.h"

static struct crash_opts g_opts = {.exhaustive_max = CRASH_EXHAUSTIVE_MAX_SHORT, .samples = 1,
                                   .seed = 1, .max_reports = 3,
                                   .rerun_hint = "CRASH_TRACE=1 CRASH_ONLY="};
static struct crash_stats g_stats;

/* The verdict of crash_test_workload(). */
static void check_verdict(const struct workload *w, long bad, const char *why)
{
    CHECK_MSG(bad >= 0, "%s: %s", w->name, why);
    CHECK_MSG(bad <= 0, "%s: %ld crash states are wrong (the first %zu are described above)",
              w->name, bad, MIN((size_t)bad, g_opts.max_reports));
}

static void test_crash_at_every_write(const struct workload *w)
{
    char why[1024];
    long bad = crash_test_workload(w, crash_rec_all_ops, NULL, &g_opts, &g_stats, why,
                                   sizeof(why));
    check_verdict(w, bad, why);
}

/* ------------------------------------------------------------------------------------------ */
/* The write-path matrix under crashes: test_cluster's request shapes (testshapes.h), one per
 * region, into every target state, with standard and extended L2, alone and over a raw
 * backing file of data (COW regions of zeros, and of data). Each request is followed by a
 * flush, so every subset of its writes is tried. The requests are writes, and in make stress
 * also zero writes (with and without unmapping) and discards of the same shapes. */

enum shape_op { SHAPE_WRITE, SHAPE_ZERO, SHAPE_ZERO_UNMAP, SHAPE_DISCARD, SHAPE_OP_COUNT };
static const char *const shape_op_names[SHAPE_OP_COUNT] = {"", "zero_", "zero_unmap_",
                                                           "discard_"};

static void shapes_name(char *out, size_t len, enum shape_op op, bool ext, enum state st,
                        bool backing)
{
    snprintf(out, len, "shapes_%s%s_%s_%s", shape_op_names[op], ext ? "ext" : "std",
             state_names[st], backing ? "backing" : "alone");
}

/* The images of the matrix make check runs (the whole takes about 4 minutes of CPU per kind
 * of request, make stress): writes, with extended L2 where requests meet allocated, zero and
 * unallocated subclusters, host clusters in and out of order, and the standard L2 states that
 * mix kinds. */
static bool shapes_in_short_run(enum shape_op op, bool ext, enum state st, bool backing)
{
    if (op != SHAPE_WRITE)
        return false;
    if (ext)
        return st == ST_PARTIAL || (!backing && (st == ST_MIXED || st == ST_REVERSED ||
                                                 st == ST_ZERO_ALLOC));
    return (st == ST_MIXED && backing) || (st == ST_ZERO_ALLOC && !backing);
}

static struct wl_op shape_request(enum shape_op op, uint64_t off, uint64_t len)
{
    switch (op) {
    case SHAPE_ZERO:
        return (struct wl_op){WL_ZERO, off, len, 0};
    case SHAPE_ZERO_UNMAP:
        return (struct wl_op){WL_ZERO, off, len, QCOW2_ZERO_MAY_UNMAP};
    case SHAPE_DISCARD:
        return (struct wl_op){WL_DISCARD, off, len, 0};
    default:
        return (struct wl_op){WL_WRITE, off, len, 0};
    }
}

static void test_crash_over_request_shapes(enum shape_op op, bool ext, enum state st,
                                           bool backing)
{
    static char prep[40000];
    static struct wl_op ops[2 * G_COUNT + 1];
    char name[96], size[32], backing_io[64], src[16];
    size_t n = 0;
    for (unsigned g = 0; g < G_COUNT; g++) {
        uint64_t r = (uint64_t)g * REGION;
        snprintf(src, sizeof(src), "-P 0x%02x", 0x40 + g); /* a byte per region */
        n += shape_prep_commands(prep + n, sizeof(prep) - n, st, ext, r, src);
        ops[2 * g] = shape_request(op, r + geoms[g].off, geoms[g].len);
        ops[2 * g + 1] = (struct wl_op){WL_FLUSH, 0, 0, 0};
    }
    ops[2 * G_COUNT] = (struct wl_op){WL_END, 0, 0, 0};
    shapes_name(name, sizeof(name), op, ext, st, backing);
    snprintf(size, sizeof(size), "%llu", (unsigned long long)G_COUNT * REGION);
    snprintf(backing_io, sizeof(backing_io), "write -P 0x77 0 %s", size);
    bool shared = st == ST_SHARED || st == ST_SHARED_PARTIAL;
    struct workload w = {
        .name = name, .size = size, .cluster_size = CS,
        .create_opts = ext ? "cluster_size=65536,extended_l2=on" : "cluster_size=65536",
        .backing_size = backing ? size : NULL, .backing_fmt = "raw", .backing_io = backing_io,
        .prep_io = prep, .prep_cmd = shared ? "snapshot -c snap" : NULL,
        .snapshot = shared ? "snap" : NULL, .ops = ops};
    test_crash_at_every_write(&w);
}

/* ------------------------------------------------------------------------------------------ */
/* The verdict itself: a test that cannot fail proves nothing. After op 0 of `w` (a write)
 * the image differs from the starting content: the verdict must reject it when op 0 is not
 * expected, accept it when op 0 is durable or uncertain, and reject a wrong size. */
/* The verdict of a v2 snapshot workload (w->copied_window) accepts COPIED flags that
 * disagree with a refcount only where no data can be lost. */
static void test_v2_copied_verdict_accepts_only_flags_that_lose_no_data(void)
{
    char why[512];
    const char *set_leaked = "ERROR OFLAG_COPIED data cluster: l2_entry=8000000000009000 "
                             "refcount=2\nLeaked cluster 9 refcount=2 reference=1\n";
    const char *set_shared = "ERROR OFLAG_COPIED data cluster: l2_entry=8000000000009000 "
                             "refcount=2\nLeaked cluster 9 refcount=3 reference=2\n";
    const char *l2_set_shared = "ERROR OFLAG_COPIED L2 cluster: l1_index=0 "
                                "l1_entry=8000000000005000 refcount=2\n";
    const char *clear_single = "ERROR OFLAG_COPIED data cluster: l2_entry=9000 refcount=1\n"
                               "ERROR OFLAG_COPIED L2 cluster: l1_index=1 l1_entry=5000 "
                               "refcount=1\n";
    const char *other = "ERROR OFLAG_COPIED data cluster: l2_entry=9000 refcount=1\n"
                        "ERROR cluster 9 refcount=1 reference=2\n";
    CHECK(wl_copied_harmless(set_leaked, 4096, why, sizeof(why)) == 1);
    CHECK(wl_copied_harmless(clear_single, 4096, why, sizeof(why)) == 2);
    CHECK(wl_copied_harmless(set_shared, 4096, why, sizeof(why)) < 0);
    CHECK(wl_copied_harmless(l2_set_shared, 4096, why, sizeof(why)) < 0);
    CHECK(wl_copied_harmless(other, 4096, why, sizeof(why)) < 0 && strstr(why, "reference=2"));
}

static void test_verdict_rejects_content_the_model_does_not_allow(const struct workload *w)
{
    struct tf_buf start = {0}, base = {0}, after = {0};
    struct qcow2_image *img = NULL;
    char path[4200], err[QCOW2_ERROR_MAX], why[1024];
    snprintf(path, sizeof(path), "%s/%s.verdict.qcow2", wl_dir(), w->name);
    CHECK_MSG(w->ops[0].kind == WL_WRITE, "%s: op 0 must be a write", w->name);
    if (wl_prepare(w, &start, &base) < 0 || tf_buf_save(&start, path) < 0 ||
        qcow2_open(path, NULL, &img, err, sizeof(err)) < 0) {
        CHECK_MSG(0, "%s: cannot prepare the image", w->name);
        goto out;
    }
    CHECK_MSG(wl_exec(img, w, 0) == 0, "op 0: %s", qcow2_error(img));
    tf_buf_copy(&after, &base);
    wl_apply(w, 0, &after);
    const size_t op0 = 0;
    struct wl_expect stale = {.durable = &base, .start_size = base.size};
    struct wl_expect durable = {.durable = &after, .start_size = base.size};
    struct wl_expect uncertain = {.durable = &base, .uncertain = &op0, .nb_uncertain = 1,
                                  .start_size = base.size};
    CHECK_MSG(wl_check_content(img, w, &stale, why, sizeof(why)) < 0,
              "the verdict accepted data the model does not allow");
    CHECK_MSG(strstr(why, "are wrong"), "unexpected reason: %s", why);
    CHECK_MSG(wl_check_content(img, w, &durable, why, sizeof(why)) == 0, "durable: %s", why);
    CHECK_MSG(wl_check_content(img, w, &uncertain, why, sizeof(why)) == 0, "uncertain: %s",
              why);
    after.size -= 512;
    CHECK_MSG(wl_check_content(img, w, &durable, why, sizeof(why)) < 0 &&
                  strstr(why, "virtual size"),
              "the verdict accepted a wrong virtual size");
    after.size += 512;
out:
    if (img)
        qcow2_close(img);
    tf_buf_free(&start);
    tf_buf_free(&base);
    tf_buf_free(&after);
}

/* ------------------------------------------------------------------------------------------ */
/* An external raw data file: the completed run. */

/* Does the raw data file read as the guest content `guest`? */
static bool data_file_matches(const struct workload *w, const struct tf_buf *guest)
{
    char path[4200];
    struct tf_buf data = {0};
    snprintf(path, sizeof(path), "%s/%s.data.raw", wl_dir(), w->name);
    bool same = tf_buf_load(&data, path) == 0;
    for (uint64_t i = 0; same && i < guest->size; i++) {
        uint8_t got = i < data.size ? data.data[i] : 0;
        if (got != guest->data[i]) {
            fprintf(stderr, "  %s: data file byte 0x%llx is 0x%02x, the guest reads 0x%02x\n",
                    w->name, (unsigned long long)i, got, guest->data[i]);
            same = false;
        }
    }
    tf_buf_free(&data);
    return same;
}

static void test_raw_data_file_reads_as_the_guest(const struct workload *w)
{
    struct tf_buf start = {0}, base = {0}, model = {0};
    char why[2048];
    int ret = wl_prepare(w, &start, &base);
    CHECK_MSG(ret == 0, "%s: cannot prepare the starting image", w->name);
    if (ret < 0)
        goto out;
    char path[4200], err[QCOW2_ERROR_MAX];
    snprintf(path, sizeof(path), "%s/%s.start.qcow2", wl_dir(), w->name);
    struct qcow2_image *img;
    ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s: open: %s", w->name, err);
    if (ret < 0)
        goto out;
    tf_buf_copy(&model, &base);
    for (size_t i = 0; i < wl_nb_ops(w); i++) {
        ret = wl_exec(img, w, i);
        CHECK_MSG(ret == 0, "%s: op %zu failed: %s", w->name, i, qcow2_error(img));
        wl_apply(w, i, &model);
    }
    CHECK_MSG(qcow2_close(img) == 0, "%s: close failed", w->name);
    struct wl_expect ex = {.durable = &model, .start_size = base.size};
    CHECK_MSG(wl_verify(path, w, &ex, true, why, sizeof(why)) == 0, "%s: %s", w->name, why);
    CHECK_MSG(data_file_matches(w, &model), "%s: the raw data file differs from the guest",
              w->name);
out:
    tf_buf_free(&start);
    tf_buf_free(&base);
    tf_buf_free(&model);
}

/* ------------------------------------------------------------------------------------------ */
/* Two-thread schedules. */

/* Op `held` of `w` runs in a second thread, which the backend holds at its first I/O of the
 * kinds `hold_kinds`; meanwhile the main thread runs ops [0, held); then the held op is
 * released and, once it has returned, the main thread runs the rest. Op numbers follow
 * completion, so that the ops a flush makes durable are a prefix. */
struct schedule {
    const char *what;
    struct workload w;
    size_t held;
    unsigned hold_kinds;
};

/* A new cluster's L2 entry must not reach the disk before its data, even when another thread
 * flushed the refcount block the allocation dirtied (so that no refcount write, and no
 * fsync, is left before the L2 write). 4 KiB clusters over a raw backing file: the held
 * write allocates a cluster and copies its tail from the backing file; the main thread's
 * zero write needs a new L2 table, which writes and flushes the refcount cache. */
static const struct wl_op ops_dependency_flushed_by_another_thread[] = {
    {WL_ZERO, 4 << 20, 64 << 10, 0}, /* main thread, while op 1 is held */
    {WL_WRITE, 0, 1000, 0},          /* held before its data write */
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

static const struct schedule g_schedules[] = {
    {.what = "a write's refcount dependency flushed by another thread",
     .w = {.name = "mt_dependency_flushed", .create_opts = "cluster_size=4096", .size = "8M",
           .cluster_size = 4096, .backing_size = "8M", .backing_fmt = "raw",
           .backing_io = "write -P 0xcc 0 8M",
           .prep_io = "write -P 0x5a 64k 4k", /* the held write's L2 table exists */
           .ops = ops_dependency_flushed_by_another_thread},
     .held = 1, .hold_kinds = TF_PWRITE},
};

struct held_op {
    struct crash_recording *rec;
    const struct workload *w;
    size_t i;
    int ret;
};

static void *run_held_op(void *opaque)
{
    struct held_op *h = opaque;
    h->ret = wl_exec(h->rec->img, h->w, h->i);
    return NULL;
}

/* Record the schedule's interleaving (a crash_recorder). */
static int record_schedule(struct crash_recording *rec, const struct workload *w, void *opaque,
                           char *why, size_t whylen)
{
    const struct schedule *s = opaque;
    struct held_op h = {.rec = rec, .w = w, .i = s->held};
    pthread_t thread;
    size_t failed = SIZE_MAX;
    testfile_pause(rec->tf, s->hold_kinds, TF_ANY_OFFSET);
    crash_rec_started(rec, s->held);
    if (pthread_create(&thread, NULL, run_held_op, &h) != 0)
        abort();
    testfile_wait_paused(rec->tf);
    for (size_t i = 0; i < s->held && failed == SIZE_MAX; i++)
        if (crash_rec_exec(rec, w, i) < 0)
            failed = i;
    testfile_resume(rec->tf);
    pthread_join(thread, NULL);
    crash_rec_returned(rec, s->held);
    if (failed == SIZE_MAX && h.ret < 0)
        failed = s->held;
    for (size_t i = s->held + 1; i < rec->nb_ops && failed == SIZE_MAX; i++)
        if (crash_rec_exec(rec, w, i) < 0)
            failed = i;
    if (failed == SIZE_MAX)
        return 0;
    snprintf(why, whylen, "op %zu failed: %s", failed, qcow2_error(rec->img));
    return -1;
}

static void test_crash_in_a_two_thread_schedule(const struct schedule *s)
{
    char why[1024];
    long bad = crash_test_workload(&s->w, record_schedule, (void *)s, &g_opts, &g_stats, why,
                                   sizeof(why));
    check_verdict(&s->w, bad, why);
}

/* ------------------------------------------------------------------------------------------ */

static bool selected(const char *only, const char *name)
{
    return !only || !*only || strcmp(only, name) == 0;
}

/* The matrix's images this run takes: CRASH_ONLY=shapes all of them, CRASH_ONLY=<a name>
 * that one; otherwise make stress all and make check the short run's. CRASH_SHAPES=0 none
 * (make check-asan: test_cluster puts the same writes through the library under the
 * sanitizers, and the other workloads the same crash paths). */
static void run_request_shapes(const char *only, bool full)
{
    const char *shapes_env = getenv("CRASH_SHAPES");
    if (shapes_env && strcmp(shapes_env, "0") == 0)
        return;
    bool asked = only && *only;
    for (int op = 0; op < SHAPE_OP_COUNT; op++)
        for (int ext = 1; ext >= 0; ext--)
            for (int st = 0; st < ST_COUNT; st++)
                for (int backing = 0; backing <= 1; backing++) {
                    char name[96], label[160];
                    shapes_name(name, sizeof(name), op, ext, st, backing);
                    if ((!selected(only, name) && !selected(only, "shapes")) ||
                        (!asked && !full && !shapes_in_short_run(op, ext, st, backing)))
                        continue;
                    snprintf(label, sizeof(label), "crash_at_every_write_is_consistent (%s)",
                             name);
                    RUN(label, test_crash_over_request_shapes(op, ext, st, backing));
                }
}

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/test_crash.XXXXXX", base && *base ? base : "/tmp");
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
    const char *full_env = getenv("CRASH_FULL");
    bool full = full_env && *full_env && strcmp(full_env, "0") != 0;
    const char *seed_env = getenv("CRASH_SEED");
    if (seed_env && *seed_env)
        g_opts.seed = (uint32_t)strtoul(seed_env, NULL, 0);
    if (full)
        g_opts.samples = 4;
    g_opts.trace = getenv("CRASH_TRACE") != NULL;
    const char *only = getenv("CRASH_ONLY");
    /* CRASH_EXHAUSTIVE_MAX: the widest window of unflushed writes whose every subset is tried
     * (wider ones are sampled). make check-asan narrows it: the sanitizers look for memory
     * errors on the same paths, and the normal tree runs the full short form. */
    const char *exh_env = getenv("CRASH_EXHAUSTIVE_MAX");
    unsigned exh_short = exh_env && *exh_env ? (unsigned)strtoul(exh_env, NULL, 0)
                                             : CRASH_EXHAUSTIVE_MAX_SHORT;

    time_t t0 = time(NULL);
    RUN("v2_copied_verdict_accepts_only_flags_that_lose_no_data",
        test_v2_copied_verdict_accepts_only_flags_that_lose_no_data());
    if (selected(only, wl_workloads[0].name))
        RUN("verdict_rejects_content_the_model_does_not_allow",
            test_verdict_rejects_content_the_model_does_not_allow(&wl_workloads[0]));
    /* The random workloads (full runs only) are run with a few seeds. */
    unsigned rounds = full ? 3 : 1;
    const uint32_t first_seed = g_opts.seed;
    for (unsigned round = 0; round < rounds; round++) {
        g_opts.seed = first_seed + 1000 * round;
        wl_make_random(g_opts.seed, 120);
        for (size_t i = 0; i < wl_nb_workloads; i++) {
            const struct workload *w = &wl_workloads[i];
            if ((w->big && !full) || (round > 0 && !w->big) || !selected(only, w->name))
                continue;
            char label[256];
            if (w->data_file)
                snprintf(label, sizeof(label), "raw_data_file_reads_as_the_guest (%s)",
                         w->name);
            else if (w->big)
                snprintf(label, sizeof(label),
                         "crash_at_every_write_is_consistent (%s, seed %u)", w->name,
                         g_opts.seed);
            else
                snprintf(label, sizeof(label), "crash_at_every_write_is_consistent (%s)",
                         w->name);
            g_opts.exhaustive_max = full && !w->big ? CRASH_EXHAUSTIVE_MAX_FULL : exh_short;
            if (w->data_file)
                RUN(label, test_raw_data_file_reads_as_the_guest(w));
            else
                RUN(label, test_crash_at_every_write(w));
        }
    }
    g_opts.seed = first_seed;
    g_opts.exhaustive_max = full ? CRASH_EXHAUSTIVE_MAX_FULL : exh_short;
    run_request_shapes(only, full);
    for (size_t i = 0; i < sizeof(g_schedules) / sizeof(g_schedules[0]); i++) {
        const struct schedule *s = &g_schedules[i];
        if (!selected(only, s->w.name))
            continue;
        char label[256];
        snprintf(label, sizeof(label), "crash_in_a_two_thread_schedule_is_consistent (%s: %s)",
                 s->w.name, s->what);
        RUN(label, test_crash_in_a_two_thread_schedule(s));
    }
    printf("%zu crash states, %zu verified, %zu distinct qemu-img checks; %zu crash points "
           "with every subset tried, %zu sampled; %lds\n",
           g_stats.states, g_stats.checked, g_stats.qemu_checks, g_stats.exhaustive_points,
           g_stats.sampled_points, (long)(time(NULL) - t0));

    if (!getenv("KEEP_TMP") && !g_failed)
        wl_run_cmd("rm -rf '%s'", dir);
    else
        printf("test files kept in %s\n", dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
