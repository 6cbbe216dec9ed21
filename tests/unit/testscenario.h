/* testscenario.h - every crash state of one recorded session, for short scenario tests
 * (test_data_safety.c) that drive the library by hand, several threads included; workloads
 * described as op lists go through testcrash.h instead.
 * A session is an image opened over the logging backend (testfile.h) together with the file's
 * bytes at open. A crash state is the file as a power loss may leave it on a disk with a
 * volatile write cache: every write before the last completed flush is there, and of the
 * writes issued since, any subset. Builds states through tf_buf_*; opens nothing itself. */
#ifndef QCOW2_TESTSCENARIO_H
#define QCOW2_TESTSCENARIO_H

#include <stddef.h>

#include "qcow2.h"
#include "testfile.h"

struct scenario {
    struct testfile *tf;
    struct qcow2_image *img;
    struct tf_buf start; /* the file before the session opened it */
    char path[4096];
};

/* Open `path` read-write over a logging testfile (`opts` may be NULL). Returns 0, or -errno
 * with a message in `err`. */
int scenario_open(struct scenario *s, const char *path,
                       const struct qcow2_open_opts *opts, char *err, size_t errlen);
/* Close the image (if still open) and free the log. */
void scenario_end(struct scenario *s);

/* Judges one crash state saved at `state_path`: returns true if it is acceptable, else false
 * with a sentence in `why`. */
typedef bool (*scenario_verdict_fn)(const char *state_path, void *opaque, char *why,
                                 size_t whylen);

/* The most writes between two flushes that scenario_check_states() enumerates (2^N states). */
#define SCENARIO_MAX_WINDOW 14

/* Rebuild every crash state that the events [0, end) of the log allow (a crash after any
 * event, with any subset of the writes since the last flush before it), save each as
 * `state_path` and judge it. Bad states are reported on stderr (at most `max_reports`, with
 * the events they kept); the first stays as `state_path`.first-bad. Returns the number of bad states (a window wider than
 * SCENARIO_MAX_WINDOW counts as one); *nb_states says how many were judged. */
unsigned scenario_check_states(const struct scenario *s, size_t end, const char *state_path,
                            scenario_verdict_fn verdict, void *opaque, unsigned max_reports,
                            unsigned *nb_states);

/* Print the session's log from event `from` on, one line each, to stderr. */
void scenario_dump_log(const struct scenario *s, size_t from);

#endif /* QCOW2_TESTSCENARIO_H */
