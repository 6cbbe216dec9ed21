/* testcrash.h - the crash model shared by the crash test (test_crash.c) and the I/O-error test
 * (test_ioerror.c): record a workload's run over the logging backend (testfile.c), then
 * rebuild the file as every power loss would have left it and require wl_verify() to accept
 * each state. A disk with a volatile write cache keeps every write a completed flush covered
 * and any subset of the writes issued since (in any order), some of them torn into 512-byte
 * sectors. A window of up to `exhaustive_max` such writes is enumerated subset by subset; a
 * larger one is sampled. Identical states with identical expectations are verified once. */
#ifndef QCOW2_TESTCRASH_H
#define QCOW2_TESTCRASH_H

#include "testworkload.h"

/* The longest window of writes since the last flush whose every subset is tried: 2^12 states
 * per window in a full run (make stress), 2^8 in the short one (make check) to stay within
 * its time budget. */
#define CRASH_EXHAUSTIVE_MAX_FULL 12
#define CRASH_EXHAUSTIVE_MAX_SHORT 8

/* When op i ran: the log length when it started and when it returned. */
struct crash_op {
    size_t start_ev;
    size_t end_ev;
};

/* After a successful flush (or FUA write, or close): ops [0, nb_ops) are durable once the
 * events [0, ev) happened. Ops are numbered so that the durable ones form a prefix. */
struct crash_mark {
    size_t ev;
    size_t nb_ops;
};

struct crash_recording {
    struct testfile *tf;
    struct qcow2_image *img; /* open while recording */
    struct crash_op *ops;    /* one per op of the workload */
    size_t nb_ops;
    struct crash_mark *marks;
    size_t nb_marks;
};

/* Write `start` to "<name>.work.qcow2" in the test directory and open it with the library
 * over a logging testfile. Returns 0, or -1 with a message in `why`. */
int crash_rec_open(struct crash_recording *rec, const struct workload *w,
                   const struct tf_buf *start, char *why, size_t whylen);
/* Run op `i` on rec->img, remembering its events; a successful flush or FUA write marks the
 * ops [0, i] durable. Returns what the library returned. */
int crash_rec_exec(struct crash_recording *rec, const struct workload *w, size_t i);
/* Record op `i` as started or returned now (for ops run by another thread). */
void crash_rec_started(struct crash_recording *rec, size_t i);
void crash_rec_returned(struct crash_recording *rec, size_t i);
/* Ops [0, nb_ops) are durable once the events so far happened. */
void crash_rec_mark(struct crash_recording *rec, size_t nb_ops);
/* Close the image (a completed close makes every op durable). Returns its result. */
int crash_rec_close(struct crash_recording *rec);
void crash_rec_free(struct crash_recording *rec);

/* Runs the ops of `w` on rec->img (with crash_rec_exec, or crash_rec_started/returned for
 * ops of other threads). Returns 0, or -1 with the reason in `why`. */
typedef int (*crash_recorder)(struct crash_recording *rec, const struct workload *w,
                              void *opaque, char *why, size_t whylen);
/* The plain recorder: every op in order, stopping at the first failure. */
int crash_rec_all_ops(struct crash_recording *rec, const struct workload *w, void *opaque,
                      char *why, size_t whylen);

struct crash_opts {
    unsigned exhaustive_max; /* CRASH_EXHAUSTIVE_MAX_* */
    unsigned samples;        /* random subsets and torn variants per crash point */
    uint32_t seed;
    size_t max_reports;      /* failing states described on stderr */
    bool trace;              /* print the ops and the log first */
    const char *rerun_hint;  /* how to rerun one case with its log, for reports */
};

struct crash_stats {
    size_t states, checked, qemu_checks, exhaustive_points, sampled_points;
};

/* Try every crash state of the recording. `start` is the file before the run, `base` its
 * guest content. Failing states are kept as <name>.k<K>.<variant>.qcow2 in the test
 * directory and described on stderr (the first max_reports). Returns the number of failing
 * states. */
size_t crash_check_states(const struct workload *w, const struct crash_recording *rec,
                          const struct tf_buf *start, const struct tf_buf *base,
                          const struct crash_opts *o, struct crash_stats *st);

/* The whole test of one workload: prepare its starting image, record a run with `record`,
 * close, check every crash state. Returns the number of wrong states, or -1 with the reason in
 * `why` when the run could not be recorded. */
long crash_test_workload(const struct workload *w, crash_recorder record, void *opaque,
                         const struct crash_opts *o, struct crash_stats *st, char *why,
                         size_t whylen);

#endif /* QCOW2_TESTCRASH_H */
