/* testcrash.c - the crash model (see testcrash.h): recording a run over the logging backend
 * and rebuilding, from its log, every state a power loss could leave. Verdicts are
 * wl_verify()'s (testworkload.c); this file only decides which states exist and what each
 * must read. */
#include "testcrash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------------------------ */
/* Recording. */

int crash_rec_open(struct crash_recording *rec, const struct workload *w,
                   const struct tf_buf *start, char *why, size_t whylen)
{
    char path[4200], err[QCOW2_ERROR_MAX];
    snprintf(path, sizeof(path), "%s/%s.work.qcow2", wl_dir(), w->name);
    *rec = (struct crash_recording){0};
    if (tf_buf_save(start, path) < 0) {
        snprintf(why, whylen, "cannot write %.1000s", path);
        return -1;
    }
    rec->tf = testfile_open(path, false, err, sizeof(err));
    if (!rec->tf) {
        snprintf(why, whylen, "%s", err);
        return -1;
    }
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.l2_cache_size = w->l2_cache_size;
    struct qcow2_file *f = testfile_attach(rec->tf);
    if (f)
        f->memory_backed = w->memory_backed;
    if (image_open_with_file(path, &o, f, &rec->img, err, sizeof(err)) < 0) {
        snprintf(why, whylen, "open: %s", err);
        return -1;
    }
    rec->nb_ops = wl_nb_ops(w);
    rec->ops = calloc(rec->nb_ops + 1, sizeof(*rec->ops));
    rec->marks = calloc(rec->nb_ops + 2, sizeof(*rec->marks));
    if (!rec->ops || !rec->marks)
        abort();
    return 0;
}

void crash_rec_started(struct crash_recording *rec, size_t i)
{
    rec->ops[i].start_ev = testfile_nb_events(rec->tf);
}

void crash_rec_returned(struct crash_recording *rec, size_t i)
{
    rec->ops[i].end_ev = testfile_nb_events(rec->tf);
}

void crash_rec_mark(struct crash_recording *rec, size_t nb_ops)
{
    assert(rec->nb_marks < rec->nb_ops + 2);
    rec->marks[rec->nb_marks++] =
        (struct crash_mark){.ev = testfile_nb_events(rec->tf), .nb_ops = nb_ops};
}

int crash_rec_exec(struct crash_recording *rec, const struct workload *w, size_t i)
{
    crash_rec_started(rec, i);
    int ret = wl_exec(rec->img, w, i);
    crash_rec_returned(rec, i);
    enum wl_kind k = w->ops[i].kind;
    /* amend, compact, commit and rebase end with a flush */
    if (ret == 0 && (k == WL_FLUSH || k == WL_WRITE_FUA || k == WL_AMEND_REFCOUNT_BITS ||
                     k == WL_AMEND_DOWNGRADE || k == WL_COMPACT || k == WL_COMMIT ||
                     k == WL_REBASE))
        crash_rec_mark(rec, i + 1);
    return ret;
}

int crash_rec_all_ops(struct crash_recording *rec, const struct workload *w, void *opaque,
                      char *why, size_t whylen)
{
    (void)opaque;
    for (size_t i = 0; i < rec->nb_ops; i++) {
        if (crash_rec_exec(rec, w, i) < 0) {
            snprintf(why, whylen, "op %zu failed: %s", i, qcow2_error(rec->img));
            return -1;
        }
    }
    return 0;
}

int crash_rec_close(struct crash_recording *rec)
{
    int ret = qcow2_close(rec->img);
    rec->img = NULL;
    if (ret == 0)
        crash_rec_mark(rec, rec->nb_ops);
    return ret;
}

void crash_rec_free(struct crash_recording *rec)
{
    if (rec->img)
        qcow2_close(rec->img);
    testfile_free(rec->tf);
    free(rec->ops);
    free(rec->marks);
    *rec = (struct crash_recording){0};
}

/* ------------------------------------------------------------------------------------------ */
/* Sets of 64-bit hashes (open addressing; 0 is stored as 1): verdicts already known. */

struct hash_set {
    uint64_t *slots;
    size_t n, cap;
};

static bool set_has(const struct hash_set *s, uint64_t h)
{
    if (!s->cap)
        return false;
    h = h ? h : 1;
    for (size_t i = h & (s->cap - 1); s->slots[i]; i = (i + 1) & (s->cap - 1))
        if (s->slots[i] == h)
            return true;
    return false;
}

static void set_add(struct hash_set *s, uint64_t h)
{
    if (2 * (s->n + 1) > s->cap) { /* at most half full: short probes */
        struct hash_set bigger = {.cap = s->cap ? 2 * s->cap : 1024};
        bigger.slots = calloc(bigger.cap, sizeof(*bigger.slots));
        if (!bigger.slots)
            abort();
        for (size_t i = 0; i < s->cap; i++)
            if (s->slots[i])
                set_add(&bigger, s->slots[i]);
        free(s->slots);
        *s = bigger;
    }
    h = h ? h : 1;
    size_t i = h & (s->cap - 1);
    while (s->slots[i] && s->slots[i] != h)
        i = (i + 1) & (s->cap - 1);
    s->n += !s->slots[i];
    s->slots[i] = h;
}

/* ------------------------------------------------------------------------------------------ */
/* Crash states. */

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

static uint64_t mix_key(size_t a, size_t b)
{
    uint64_t x = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 29);
}

/* What became of one write of the window in a crash state. */
enum fate { LOST, SURVIVED, TORN };

/* The state of the check of one recording. */
struct checker {
    const struct workload *w;
    const struct crash_recording *rec;
    const struct crash_opts *o;
    struct crash_stats *st;
    struct tf_buf flushed; /* the file with events [0, flushed_ev) applied */
    size_t flushed_ev;
    size_t *window;        /* the mutating events since the last flush, in log order */
    size_t nb_window;
    enum fate *fates;      /* one per window event */
    struct tf_buf durable; /* guest content of the durable ops */
    size_t durable_ops;
    size_t *uncertain;     /* ops that had started and are not durable */
    size_t nb_uncertain;
    uint64_t base_size;
    const struct tf_buf *base;
    struct tf_buf state;
    struct hash_set seen;     /* file contents that passed qemu-img check */
    struct hash_set verified; /* (content, expectations) pairs that passed */
    char path[4200];
    size_t failures;
};

/* The op during which event `i` happened (nb_ops: during close). */
static size_t op_of_event(const struct crash_recording *rec, size_t i)
{
    size_t op = 0;
    while (op < rec->nb_ops && rec->ops[op].end_ev <= i)
        op++;
    return op;
}

static void describe_op(const struct crash_recording *rec, size_t ev, char *out, size_t len)
{
    size_t op = op_of_event(rec, ev);
    if (op < rec->nb_ops)
        snprintf(out, len, "op %zu", op);
    else
        snprintf(out, len, "close");
}

static void print_trace(const struct workload *w, const struct crash_recording *rec)
{
    static const char *const kinds[] = {"end", "write", "write-fua", "zero", "discard",
                                        "compressed", "flush", "truncate"};
    for (size_t i = 0; i < rec->nb_ops; i++)
        printf("     op %3zu %-10s 0x%llx+%llu flags %u (events %zu..%zu)\n", i,
               kinds[w->ops[i].kind], (unsigned long long)w->ops[i].offset,
               (unsigned long long)w->ops[i].len, w->ops[i].flags, rec->ops[i].start_ev,
               rec->ops[i].end_ev);
    for (size_t i = 0; i < testfile_nb_events(rec->tf); i++) {
        const struct tf_event *e = testfile_event(rec->tf, i);
        char during[32];
        describe_op(rec, i, during, sizeof(during));
        printf("     event %3zu %-6s %-8s 0x%llx+%llu\n", i, during,
               testfile_kind_name(e->kind), (unsigned long long)e->offset,
               (unsigned long long)e->len);
    }
}

/* Move the crash point to right after event p-1: the flushed prefix, the window and the
 * guest model. */
static void move_to(struct checker *c, size_t p)
{
    const struct crash_recording *rec = c->rec;
    size_t last_flush = c->flushed_ev;
    for (size_t i = p; i > c->flushed_ev; i--) {
        if (testfile_event(rec->tf, i - 1)->kind == TF_FLUSH) {
            last_flush = i;
            break;
        }
    }
    for (; c->flushed_ev < last_flush; c->flushed_ev++)
        tf_buf_apply(&c->flushed, testfile_event(rec->tf, c->flushed_ev), NULL, NULL);
    c->nb_window = 0;
    for (size_t i = last_flush; i < p; i++)
        if (testfile_event(rec->tf, i)->kind & TF_MUTATING)
            c->window[c->nb_window++] = i;

    size_t want_ops = 0;
    for (size_t m = 0; m < rec->nb_marks; m++)
        if (rec->marks[m].ev <= p)
            want_ops = MAX(want_ops, rec->marks[m].nb_ops);
    for (; c->durable_ops < want_ops; c->durable_ops++)
        wl_apply(c->w, c->durable_ops, &c->durable);
    /* Ops of other threads may have started before ops numbered lower: no early stop. */
    c->nb_uncertain = 0;
    for (size_t i = c->durable_ops; i < rec->nb_ops; i++)
        if (rec->ops[i].start_ev < p)
            c->uncertain[c->nb_uncertain++] = i;
}

/* Verify the state made of the flushed prefix and the window's writes by c->fates.
 * `variant` names it in reports; `rng` tears the TORN ones. */
static void try_state(struct checker *c, size_t k, const char *variant, struct rng *rng)
{
    tf_buf_copy(&c->state, &c->flushed);
    for (size_t j = 0; j < c->nb_window; j++) {
        const struct tf_event *e = testfile_event(c->rec->tf, c->window[j]);
        if (c->fates[j] == SURVIVED)
            tf_buf_apply(&c->state, e, NULL, NULL);
        else if (c->fates[j] == TORN)
            tf_buf_apply(&c->state, e, keep_sector, rng);
    }
    c->st->states++;
    uint64_t h = tf_buf_hash(&c->state);
    /* The same bytes with the same expectations were verified already. */
    uint64_t key = h ^ mix_key(c->durable_ops, c->nb_uncertain);
    if (set_has(&c->verified, key))
        return;
    bool run_qemu = !set_has(&c->seen, h) && wl_qemu_check_due(h);
    char why[2048];
    int ret = -1;
    struct wl_expect ex = {.durable = &c->durable, .uncertain = c->uncertain,
                           .nb_uncertain = c->nb_uncertain, .start_size = c->base_size,
                           .base = c->base};
    if (tf_buf_save(&c->state, c->path) < 0)
        snprintf(why, sizeof(why), "cannot write %.1000s", c->path);
    else
        ret = wl_verify(c->path, c->w, &ex, run_qemu, why, sizeof(why));
    c->st->checked++;
    c->st->qemu_checks += run_qemu;
    if (ret == 0) {
        if (run_qemu)
            set_add(&c->seen, h);
        set_add(&c->verified, key);
        return;
    }
    if (c->failures++ >= c->o->max_reports)
        return;
    char keep[4200], during[32];
    snprintf(keep, sizeof(keep), "%s/%s.k%zu.%s.qcow2", wl_dir(), c->w->name, k, variant);
    tf_buf_save(&c->state, keep);
    size_t last_ev = c->window[c->nb_window - 1];
    const struct tf_event *last = testfile_event(c->rec->tf, last_ev);
    describe_op(c->rec, last_ev, during, sizeof(during));
    fprintf(stderr,
            "  %s: crash after write k=%zu (event %zu: %s 0x%llx+%llu, during %s), %zu writes "
            "since the last flush, variant %s (seed %u): %s [ops [0, %zu) durable, %zu "
            "uncertain; state kept as %s; %s%s shows the log]\n",
            c->w->name, k, last_ev, testfile_kind_name(last->kind),
            (unsigned long long)last->offset, (unsigned long long)last->len, during,
            c->nb_window, variant, c->o->seed, why, c->durable_ops, c->nb_uncertain, keep,
            c->o->rerun_hint, c->w->name);
}

/* Every state of the crash right after the k-th write (event p-1, the window's last). */
static void try_crash_point(struct checker *c, size_t p, size_t k)
{
    move_to(c, p);
    size_t n = c->nb_window;
    char variant[64];
    struct rng rng = {((uint64_t)c->o->seed << 40) ^ ((uint64_t)k << 8) ^ 0x5bd1e995u};
    rng_next(&rng);
    if (n == 1) { /* nothing since the flush survived: once per window */
        c->fates[0] = LOST;
        try_state(c, k, "drop", &rng);
    }
    /* The last write survived (a state where it was lost is one of an earlier crash point,
     * checked there against fewer uncertain ops). */
    c->fates[n - 1] = SURVIVED;
    if (n <= c->o->exhaustive_max) {
        c->st->exhaustive_points++;
        for (uint64_t mask = 0; mask < 1ull << (n - 1); mask++) {
            for (size_t j = 0; j + 1 < n; j++)
                c->fates[j] = mask >> j & 1 ? SURVIVED : LOST;
            snprintf(variant, sizeof(variant), "subset-0x%llx",
                     (unsigned long long)(mask | 1ull << (n - 1)));
            try_state(c, k, variant, &rng);
        }
    } else {
        c->st->sampled_points++;
        for (size_t j = 0; j < n; j++)
            c->fates[j] = SURVIVED;
        try_state(c, k, "keep", &rng);
        for (unsigned s = 0; s < c->o->samples; s++) {
            for (size_t j = 0; j + 1 < n; j++)
                c->fates[j] = rng_next(&rng) & 1 ? SURVIVED : LOST;
            snprintf(variant, sizeof(variant), "random%u", s);
            try_state(c, k, variant, &rng);
        }
    }
    for (unsigned s = 0; s < c->o->samples; s++) {
        for (size_t j = 0; j < n; j++)
            c->fates[j] = TORN;
        snprintf(variant, sizeof(variant), "torn%u", s);
        try_state(c, k, variant, &rng);
    }
}

size_t crash_check_states(const struct workload *w, const struct crash_recording *rec,
                          const struct tf_buf *start, const struct tf_buf *base,
                          const struct crash_opts *o, struct crash_stats *st)
{
    if (o->trace)
        print_trace(w, rec);
    const size_t nev = testfile_nb_events(rec->tf);
    struct checker c = {.w = w, .rec = rec, .o = o, .st = st, .base_size = base->size,
                        .base = base};
    c.window = calloc(nev + 1, sizeof(*c.window));
    c.fates = calloc(nev + 1, sizeof(*c.fates));
    c.uncertain = calloc(rec->nb_ops + 1, sizeof(*c.uncertain));
    if (!c.window || !c.fates || !c.uncertain)
        abort();
    tf_buf_copy(&c.flushed, start);
    tf_buf_copy(&c.durable, base);
    snprintf(c.path, sizeof(c.path), "%s/%s.crash.qcow2", wl_dir(), w->name);
    /* Crash right after event p-1, for every mutating event p-1. */
    size_t k = 0, states_before = st->states;
    time_t t0 = time(NULL);
    for (size_t p = 1; p <= nev; p++)
        if (testfile_event(rec->tf, p - 1)->kind & TF_MUTATING)
            try_crash_point(&c, p, ++k);
    printf("     %s: %zu ops, %zu events, %zu writes, %zu crash states, %lds\n", w->name,
           rec->nb_ops, nev, k, st->states - states_before, (long)(time(NULL) - t0));
    free(c.window);
    free(c.fates);
    free(c.uncertain);
    free(c.seen.slots);
    free(c.verified.slots);
    tf_buf_free(&c.flushed);
    tf_buf_free(&c.durable);
    tf_buf_free(&c.state);
    return c.failures;
}

long crash_test_workload(const struct workload *w, crash_recorder record, void *opaque,
                         const struct crash_opts *o, struct crash_stats *st, char *why,
                         size_t whylen)
{
    struct tf_buf start = {0}, base = {0};
    struct crash_recording rec = {0};
    long bad = -1;
    if (wl_prepare(w, &start, &base) < 0)
        snprintf(why, whylen, "cannot prepare the starting image");
    else if (crash_rec_open(&rec, w, &start, why, whylen) < 0 ||
             record(&rec, w, opaque, why, whylen) < 0)
        ; /* `why` says it */
    else if (crash_rec_close(&rec) < 0)
        snprintf(why, whylen, "close failed");
    else
        bad = (long)crash_check_states(w, &rec, &start, &base, o, st);
    crash_rec_free(&rec);
    tf_buf_free(&start);
    tf_buf_free(&base);
    return bad;
}
