/* testcrash.h - every crash state of one recorded session, for scenario tests (test_crash.c
 * samples crash points of long workloads; this enumerates all of them for short scenarios).
 * A session is an image opened over the logging backend (testfile.h) together with the file's
 * bytes at open. A crash state is the file as a power loss may leave it on a disk with a
 * volatile write cache: every write before the last completed flush is there, and of the
 * writes issued since, any subset. Builds states through tf_buf_*; opens nothing itself. */
#ifndef QCOW2_TESTCRASH_H
#define QCOW2_TESTCRASH_H

#include <stddef.h>

#include "qcow2.h"
#include "testfile.h"

struct crash_session {
    struct testfile *tf;
    struct qcow2_image *img;
    struct tf_buf start; /* the file before the session opened it */
    char path[4096];
};

/* Open `path` read-write over a logging testfile (`opts` may be NULL). Returns 0, or -errno
 * with a message in `err`. */
int crash_session_open(struct crash_session *s, const char *path,
                       const struct qcow2_open_opts *opts, char *err, size_t errlen);
/* Close the image (if still open) and free the log. */
void crash_session_end(struct crash_session *s);

/* Judges one crash state saved at `state_path`: returns true if it is acceptable, else false
 * with a sentence in `why`. */
typedef bool (*crash_verdict_fn)(const char *state_path, void *opaque, char *why,
                                 size_t whylen);

/* The most writes between two flushes that crash_check_states() enumerates (2^N states). */
#define CRASH_MAX_WINDOW 14

/* Rebuild every crash state that the events [0, end) of the log allow (a crash after any
 * event, with any subset of the writes since the last flush before it), save each as
 * `state_path` and judge it. Bad states are reported on stderr (at most `max_reports`, with
 * the events they kept); the first stays as `state_path`.first-bad. Returns the number of bad states (a window wider than
 * CRASH_MAX_WINDOW counts as one); *nb_states says how many were judged. */
unsigned crash_check_states(const struct crash_session *s, size_t end, const char *state_path,
                            crash_verdict_fn verdict, void *opaque, unsigned max_reports,
                            unsigned *nb_states);

/* Print the session's log from event `from` on, one line each, to stderr. */
void crash_dump_log(const struct crash_session *s, size_t from);

#endif /* QCOW2_TESTCRASH_H */
