/* testscenario.c - every crash state of one recorded session (see testscenario.h).
 * Rebuilds file images from the testfile log with tf_buf_apply(); the caller judges them. */
#include "testscenario.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int scenario_open(struct scenario *s, const char *path,
                       const struct qcow2_open_opts *opts, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->path, sizeof(s->path), "%s", path);
    int ret = tf_buf_load(&s->start, path);
    if (ret < 0) {
        snprintf(err, errlen, "%s: cannot read it: %s", path, strerror(-ret));
        return ret;
    }
    s->tf = testfile_open(path, false, err, errlen);
    if (!s->tf) {
        tf_buf_free(&s->start);
        return -EIO;
    }
    ret = image_open_with_file(path, opts, testfile_attach(s->tf), &s->img, err, errlen);
    if (ret < 0) {
        testfile_free(s->tf);
        tf_buf_free(&s->start);
        s->tf = NULL;
    }
    return ret;
}

void scenario_end(struct scenario *s)
{
    if (s->img)
        qcow2_close(s->img);
    s->img = NULL;
    testfile_free(s->tf);
    s->tf = NULL;
    tf_buf_free(&s->start);
}

void scenario_dump_log(const struct scenario *s, size_t from)
{
    for (size_t i = from; i < testfile_nb_events(s->tf); i++) {
        const struct tf_event *e = testfile_event(s->tf, i);
        fprintf(stderr, "    event %3zu %-8s 0x%llx+%llu\n", i, testfile_kind_name(e->kind),
                (unsigned long long)e->offset, (unsigned long long)e->len);
    }
}

/* "kept events 3, 5; dropped 4" for the writes of [from, to) selected by `mask`. */
static void describe_subset(const struct scenario *s, size_t from, size_t to,
                            uint64_t mask, char *out, size_t len)
{
    size_t at = (size_t)snprintf(out, len, "kept events");
    unsigned bit = 0;
    for (int keep = 1; keep >= 0; keep--) {
        if (!keep && at < len)
            at += (size_t)snprintf(out + at, len - at, "; dropped");
        bit = 0;
        for (size_t i = from; i < to && at < len; i++) {
            if (!(testfile_event(s->tf, i)->kind & TF_MUTATING))
                continue;
            if (((mask >> bit) & 1) == (uint64_t)keep)
                at += (size_t)snprintf(out + at, len - at, " %zu", i);
            bit++;
        }
    }
}

/* The first bad state stays as <state_path>.first-bad for a post-mortem. */
static void keep_first_bad(const char *state_path)
{
    char keep[4200];
    snprintf(keep, sizeof(keep), "%s.first-bad", state_path);
    if (rename(state_path, keep) == 0)
        fprintf(stderr, "  (the first bad state is kept as %s)\n", keep);
}

unsigned scenario_check_states(const struct scenario *s, size_t end, const char *state_path,
                            scenario_verdict_fn verdict, void *opaque, unsigned max_reports,
                            unsigned *nb_states)
{
    unsigned bad = 0, judged = 0;
    struct tf_buf durable = {0}, state = {0};
    tf_buf_copy(&durable, &s->start);
    size_t from = 0; /* first event of the current window (after the last flush) */
    for (size_t i = 0; i <= end; i++) {
        if (i < end && testfile_event(s->tf, i)->kind != TF_FLUSH)
            continue;
        /* The window [from, i): crashes after any of its events. */
        unsigned n = 0;
        for (size_t j = from; j < i; j++)
            n += (testfile_event(s->tf, j)->kind & TF_MUTATING) != 0;
        if (n > SCENARIO_MAX_WINDOW) {
            fprintf(stderr, "  crash states: %u writes between events %zu and %zu, more than "
                            "the %u this helper enumerates\n", n, from, i, SCENARIO_MAX_WINDOW);
            bad++;
            n = 0;
        }
        /* The empty subset of a later window is the full one of the window before. */
        for (uint64_t mask = from == 0 ? 0 : 1; n && mask < (1ull << n); mask++) {
            tf_buf_copy(&state, &durable);
            unsigned bit = 0;
            for (size_t j = from; j < i; j++) {
                const struct tf_event *e = testfile_event(s->tf, j);
                if (!(e->kind & TF_MUTATING))
                    continue;
                if ((mask >> bit++) & 1)
                    tf_buf_apply(&state, e, NULL, NULL);
            }
            char why[1024] = "";
            judged++;
            if (tf_buf_save(&state, state_path) < 0) {
                snprintf(why, sizeof(why), "cannot write %s", state_path);
            } else if (verdict(state_path, opaque, why, sizeof(why))) {
                continue;
            }
            if (bad++ < max_reports) {
                char kept[512];
                describe_subset(s, from, i, mask, kept, sizeof(kept));
                fprintf(stderr, "  crash state (events before %zu durable; %s): %s\n", from,
                        kept, why);
            }
            if (bad == 1)
                keep_first_bad(state_path);
        }
        if (from == 0 && n == 0) {
            judged++;
            char why[1024] = "";
            if (tf_buf_save(&durable, state_path) < 0 ||
                !verdict(state_path, opaque, why, sizeof(why))) {
                if (bad++ < max_reports)
                    fprintf(stderr, "  crash state (nothing written): %s\n", why);
                if (bad == 1)
                    keep_first_bad(state_path);
            }
        }
        for (size_t j = from; j < i; j++)
            if (testfile_event(s->tf, j)->kind & TF_MUTATING)
                tf_buf_apply(&durable, testfile_event(s->tf, j), NULL, NULL);
        from = i + 1;
    }
    tf_buf_free(&durable);
    tf_buf_free(&state);
    if (nb_states)
        *nb_states = judged;
    return bad;
}
