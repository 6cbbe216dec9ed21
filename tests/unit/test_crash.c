/* test_crash.c - crash consistency at every write.
 * Each workload runs once over the logging backend (testfile.c), from a starting image made by
 * qemu-img. Then, for every k, the file is rebuilt as a machine that lost power right after
 * the k-th write would have left it: every write that a flush completed is there; of the
 * writes since the last flush, (a) none, (b) all, (c) a seeded random subset, (d) a random
 * subset of their 512-byte sectors (torn writes) survived. Each state must open read-write
 * (a dirty lazy-refcounts image is repaired by the open), read back every byte that a
 * completed flush made durable (and nothing but old or newly written values elsewhere), pass
 * our qcow2_check and `qemu-img check` (leaks allowed).
 *
 * CRASH_FULL=1 (make stress) adds the random workloads (three seeds) and tries 4 random
 * subsets of each kind per crash point; CRASH_SEED=N changes the random subsets and workloads;
 * CRASH_ONLY=<workload> runs one workload, CRASH_TRACE=1 prints its log.
 * A failing state is kept as <workload>.k<K>.<variant>.qcow2 in the test directory. */
#include "testworkload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testharness.h"

#define MAX_REPORTS 3 /* failing states reported per workload */

/* ------------------------------------------------------------------------------------------ */
/* The recorded run. */

struct op_record {
    size_t start_ev; /* log length when the op started */
    size_t end_ev;   /* ... and when it returned */
};

/* After a successful flush (or FUA write, or close): ops [0, nb_ops) are durable once the
 * events [0, ev) happened. */
struct durable_mark {
    size_t ev;
    size_t nb_ops;
};

struct recording {
    struct testfile *tf;
    struct op_record *ops;
    size_t nb_ops;
    struct durable_mark *marks;
    size_t nb_marks;
};

static int record_workload(const struct workload *w, const struct tf_buf *start,
                           struct recording *rec)
{
    char path[4200], err[QCOW2_ERROR_MAX];
    snprintf(path, sizeof(path), "%s/%s.work.qcow2", wl_dir(), w->name);
    if (tf_buf_save(start, path) < 0)
        return -1;
    rec->tf = testfile_open(path, false, err, sizeof(err));
    CHECK_MSG(rec->tf != NULL, "%s", err);
    if (!rec->tf)
        return -1;
    struct qcow2_image *img;
    int ret = image_open_with_file(path, NULL, testfile_attach(rec->tf), &img, err,
                                   sizeof(err));
    CHECK_MSG(ret == 0, "%s: open: %s", w->name, err);
    if (ret < 0)
        return -1;
    rec->nb_ops = wl_nb_ops(w);
    rec->ops = calloc(rec->nb_ops + 1, sizeof(*rec->ops));
    rec->marks = calloc(rec->nb_ops + 2, sizeof(*rec->marks));
    if (!rec->ops || !rec->marks)
        abort();
    for (size_t i = 0; i < rec->nb_ops; i++) {
        rec->ops[i].start_ev = testfile_nb_events(rec->tf);
        ret = wl_exec(img, w, i);
        rec->ops[i].end_ev = testfile_nb_events(rec->tf);
        CHECK_MSG(ret == 0, "%s: op %zu failed: %s", w->name, i, qcow2_error(img));
        if (ret < 0) {
            qcow2_close(img);
            return -1;
        }
        enum wl_kind k = w->ops[i].kind;
        if (k == WL_FLUSH || k == WL_WRITE_FUA)
            rec->marks[rec->nb_marks++] = (struct durable_mark){rec->ops[i].end_ev, i + 1};
    }
    ret = qcow2_close(img);
    CHECK_MSG(ret == 0, "%s: close failed", w->name);
    /* A completed close makes everything durable. */
    rec->marks[rec->nb_marks++] =
        (struct durable_mark){testfile_nb_events(rec->tf), rec->nb_ops};
    return ret;
}

static void recording_free(struct recording *rec)
{
    testfile_free(rec->tf);
    free(rec->ops);
    free(rec->marks);
}

/* ------------------------------------------------------------------------------------------ */
/* Crash states. */

/* What survived of the writes since the last flush. Random variants are tried g_samples
 * times each (seeded), the others once. */
enum variant { V_DROP, V_KEEP, V_SUBSET, V_TORN };
static const char *const variant_names[] = {"drop", "keep", "subset", "torn"};
static unsigned g_samples = 1;

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static bool keep_sector(void *opaque, uint64_t sector)
{
    (void)sector;
    return rng_next(opaque) & 1;
}

/* qemu-img check verdicts by file content (the check reads nothing else). */
struct verdict_cache {
    uint64_t *hashes;
    size_t n, cap;
};

static bool cache_has(const struct verdict_cache *c, uint64_t h)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->hashes[i] == h)
            return true;
    return false;
}

static void cache_add(struct verdict_cache *c, uint64_t h)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->hashes = realloc(c->hashes, c->cap * sizeof(*c->hashes));
        if (!c->hashes)
            abort();
    }
    c->hashes[c->n++] = h;
}

static uint64_t mix_key(size_t a, size_t b)
{
    uint64_t x = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 29);
}

/* The op during which event `i` happened (nb_ops: during close). */
static size_t op_of_event(const struct recording *rec, size_t i)
{
    size_t op = 0;
    while (op < rec->nb_ops && rec->ops[op].end_ev <= i)
        op++;
    return op;
}

struct crash_stats {
    size_t states, checked, qemu_checks;
};

static uint32_t g_seed = 1; /* of the current round: random subsets and random workloads */

static void test_crash_at_every_write(const struct workload *w, size_t wi,
                                      struct crash_stats *st)
{
    struct tf_buf start = {0}, base = {0}, state = {0}, durable = {0};
    struct recording rec = {0};
    struct verdict_cache seen = {0}, verified = {0};
    size_t *uncertain = NULL;
    int reports = 0;
    if (wl_prepare(w, &start, &base) < 0) {
        CHECK_MSG(0, "%s: cannot prepare the starting image", w->name);
        goto out;
    }
    if (record_workload(w, &start, &rec) < 0)
        goto out;

    const size_t nev = testfile_nb_events(rec.tf);
    if (getenv("CRASH_TRACE")) { /* the ops and the log, for debugging */
        static const char *const kinds[] = {"end", "write", "write-fua", "zero", "discard",
                                            "compressed", "flush", "truncate"};
        for (size_t i = 0; i < rec.nb_ops; i++)
            printf("     op %3zu %-10s 0x%llx+%llu flags %u (events %zu..%zu)\n", i,
                   kinds[w->ops[i].kind], (unsigned long long)w->ops[i].offset,
                   (unsigned long long)w->ops[i].len, w->ops[i].flags, rec.ops[i].start_ev,
                   rec.ops[i].end_ev);
        for (size_t i = 0; i < nev; i++) {
            size_t op = op_of_event(&rec, i);
            const struct tf_event *e = testfile_event(rec.tf, i);
            char opname[32];
            if (op < rec.nb_ops)
                snprintf(opname, sizeof(opname), "op %zu", op);
            else
                snprintf(opname, sizeof(opname), "close");
            printf("     event %3zu %-6s %-8s 0x%llx+%llu\n", i, opname,
                   testfile_kind_name(e->kind), (unsigned long long)e->offset,
                   (unsigned long long)e->len);
        }
    }
    uncertain = calloc(rec.nb_ops + 1, sizeof(*uncertain));
    if (!uncertain)
        abort();
    tf_buf_copy(&durable, &base);
    size_t durable_ops = 0;
    char crash_path[4200];
    snprintf(crash_path, sizeof(crash_path), "%s/%s.crash.qcow2", wl_dir(), w->name);

    /* Crash right after event p-1, for every mutating event p-1. */
    size_t k = 0;
    for (size_t p = 1; p <= nev; p++) {
        const struct tf_event *e = testfile_event(rec.tf, p - 1);
        if (!(e->kind & TF_MUTATING))
            continue;
        k++;
        size_t last_flush = 0; /* events [0, last_flush) are durable */
        for (size_t i = p; i > 0; i--) {
            if (testfile_event(rec.tf, i - 1)->kind == TF_FLUSH) {
                last_flush = i;
                break;
            }
        }
        /* The guest model: durable ops, and ops that had started (maybe partly on disk). */
        size_t want_ops = 0;
        for (size_t m = 0; m < rec.nb_marks; m++)
            if (rec.marks[m].ev <= p)
                want_ops = MAX(want_ops, rec.marks[m].nb_ops);
        for (; durable_ops < want_ops; durable_ops++)
            wl_apply(w, durable_ops, &durable);
        size_t nb_unc = 0;
        for (size_t i = durable_ops; i < rec.nb_ops && rec.ops[i].start_ev < p; i++)
            uncertain[nb_unc++] = i;
        struct wl_expect ex = {.durable = &durable, .uncertain = uncertain,
                               .nb_uncertain = nb_unc, .start_size = base.size};

        bool pending = false;
        for (size_t i = last_flush; i < p; i++)
            pending |= (testfile_event(rec.tf, i)->kind & TF_MUTATING) != 0;
        for (unsigned t = 0; t < 2 + 2 * g_samples; t++) {
            enum variant v = t < 2 ? (enum variant)t : (t - 2) % 2 ? V_TORN : V_SUBSET;
            unsigned sample = t < 2 ? 0 : (t - 2) / 2;
            if (!pending && v != V_DROP)
                break; /* all variants are the same state */
            struct rng rng = {((uint64_t)g_seed << 40) ^ ((uint64_t)wi << 32) ^ (k << 8) ^
                              ((uint64_t)sample << 2) ^ (uint64_t)v ^ 0x5bd1e995u};
            rng_next(&rng);
            tf_buf_copy(&state, &start);
            for (size_t i = 0; i < p; i++) {
                const struct tf_event *ev = testfile_event(rec.tf, i);
                if (i < last_flush || v == V_KEEP)
                    tf_buf_apply(&state, ev, NULL, NULL);
                else if (v == V_SUBSET && (rng_next(&rng) & 1))
                    tf_buf_apply(&state, ev, NULL, NULL);
                else if (v == V_TORN)
                    tf_buf_apply(&state, ev, keep_sector, &rng);
            }
            st->states++;
            uint64_t h = tf_buf_hash(&state);
            /* The same bytes with the same expectations were verified already. */
            uint64_t key = h ^ mix_key(durable_ops, nb_unc);
            if (cache_has(&verified, key))
                continue;
            bool run_qemu = !cache_has(&seen, h);
            if (tf_buf_save(&state, crash_path) < 0) {
                CHECK_MSG(0, "%s: cannot write %s", w->name, crash_path);
                goto out;
            }
            char why[2048];
            int ret = wl_verify(crash_path, w, &ex, run_qemu, why, sizeof(why));
            st->checked++;
            st->qemu_checks += run_qemu;
            if (ret == 0) {
                if (run_qemu)
                    cache_add(&seen, h);
                cache_add(&verified, key);
                continue;
            }
            if (reports++ < MAX_REPORTS) {
                char keep[4200];
                snprintf(keep, sizeof(keep), "%s/%s.k%zu.%s%u.qcow2", wl_dir(), w->name, k,
                         variant_names[v], sample);
                tf_buf_save(&state, keep);
                const struct tf_event *last = testfile_event(rec.tf, p - 1);
                char during[32];
                size_t op = op_of_event(&rec, p - 1);
                if (op < rec.nb_ops)
                    snprintf(during, sizeof(during), "op %zu", op);
                else
                    snprintf(during, sizeof(during), "close");
                CHECK_MSG(0,
                          "%s: crash after write k=%zu (event %zu: %s 0x%llx+%llu, during %s), "
                          "variant %s #%u (seed %u): %s [ops [0, %zu) durable, %zu uncertain; "
                          "state kept as %s; CRASH_TRACE=1 CRASH_ONLY=%s shows the log]",
                          w->name, k, p - 1, testfile_kind_name(last->kind),
                          (unsigned long long)last->offset, (unsigned long long)last->len,
                          during, variant_names[v], sample, g_seed, why, durable_ops, nb_unc,
                          keep, w->name);
            } else {
                t_failed++;
            }
        }
    }
    printf("     %s: %zu ops, %zu events, %zu writes\n", w->name, rec.nb_ops, nev, k);
out:
    free(uncertain);
    free(seen.hashes);
    free(verified.hashes);
    recording_free(&rec);
    tf_buf_free(&start);
    tf_buf_free(&base);
    tf_buf_free(&state);
    tf_buf_free(&durable);
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
        g_seed = (uint32_t)strtoul(seed_env, NULL, 0);
    if (full)
        g_samples = 4;
    const char *only = getenv("CRASH_ONLY");

    struct crash_stats st = {0};
    time_t t0 = time(NULL);
    /* The random workloads (full runs only) are run with a few seeds. */
    unsigned rounds = full ? 3 : 1;
    const uint32_t first_seed = g_seed;
    for (unsigned round = 0; round < rounds; round++) {
        g_seed = first_seed + 1000 * round;
        wl_make_random(g_seed, 120);
        for (size_t i = 0; i < wl_nb_workloads; i++) {
            const struct workload *w = &wl_workloads[i];
            if ((w->big && !full) || (round > 0 && !w->big) ||
                (only && *only && strcmp(only, w->name) != 0))
                continue;
            char label[256];
            if (w->big)
                snprintf(label, sizeof(label),
                         "crash_at_every_write_is_consistent (%s, seed %u)", w->name, g_seed);
            else
                snprintf(label, sizeof(label), "crash_at_every_write_is_consistent (%s)",
                         w->name);
            RUN(label, test_crash_at_every_write(w, i, &st));
        }
    }
    printf("%zu crash states, %zu verified, %zu distinct qemu-img checks, %lds\n", st.states,
           st.checked, st.qemu_checks, (long)(time(NULL) - t0));

    if (!getenv("KEEP_TMP") && !g_failed)
        wl_run_cmd("rm -rf '%s'", dir);
    else
        printf("test files kept in %s\n", dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
