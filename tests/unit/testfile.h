/* testfile.h - a test-only host file backend behind struct qcow2_file_ops (src/internal.h).
 * It wraps a POSIX file and, unlike src/file.c, remembers what happened: every write-like
 * operation (pwritev with a copy of its data, zero, discard, truncate) and every flush goes
 * into a log, so that a crash test can rebuild the file as a machine that lost power after
 * any write would have left it. It can also fail the k-th I/O (EIO, ENOSPC, or a torn write
 * that persists part of the data and then fails), once or until healed, and hold one I/O
 * while other threads run, for deterministic multi-thread schedules.
 *
 * Ownership: the test owns the struct testfile; testfile_attach() makes a struct qcow2_file
 * over it that an image may own (image_open_with_file). Closing the image closes the file
 * descriptor but keeps the log, which the test frees with testfile_free() afterwards.
 * TESTFILE_TRACE=1 in the environment prints every I/O, numbered as testfile_fail() counts. */
#ifndef QCOW2_TESTFILE_H
#define QCOW2_TESTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* Kinds of I/O, as bits for the failure mask. */
enum tf_kind {
    TF_PREAD = 1u << 0,
    TF_PWRITE = 1u << 1,
    TF_FLUSH = 1u << 2,
    TF_TRUNCATE = 1u << 3,
    TF_ZERO = 1u << 4,
    TF_DISCARD = 1u << 5,
};
#define TF_ALL_IO (TF_PREAD | TF_PWRITE | TF_FLUSH | TF_TRUNCATE | TF_ZERO | TF_DISCARD)
/* The kinds that change the file (and are logged with TF_FLUSH). */
#define TF_MUTATING (TF_PWRITE | TF_TRUNCATE | TF_ZERO | TF_DISCARD)

/* One logged event. For TF_TRUNCATE the new size is in `offset` and `len` is 0. */
struct tf_event {
    enum tf_kind kind;
    uint64_t offset;
    uint64_t len;
    uint8_t *data; /* TF_PWRITE only: a copy of the written bytes */
};

enum tf_fail_mode {
    TF_FAIL_ONCE,   /* only the k-th I/O fails; the ones after it work */
    TF_FAIL_STICKY, /* the k-th and every later matching I/O fail until testfile_heal() */
};

struct testfile;

/* Open `path` (read-write unless `read_only`). Returns NULL with a message in `err`. */
struct testfile *testfile_open(const char *path, bool read_only, char *err, size_t errlen);
/* A struct qcow2_file over `tf` for image_open_with_file(). The image owns the returned
 * struct; `tf` stays the test's. Call at most once per open. */
struct qcow2_file *testfile_attach(struct testfile *tf);
/* Close the descriptor if still open, free the log and `tf`. */
void testfile_free(struct testfile *tf);

/* ---- the log ---- */

/* Logging is on from open. Off, only counting and failing are done: cheaper, and writes from
 * several threads then run in parallel instead of one at a time. */
void testfile_set_logging(struct testfile *tf, bool on);
size_t testfile_nb_events(const struct testfile *tf);
const struct tf_event *testfile_event(const struct testfile *tf, size_t i);

/* ---- failures ---- */

/* Fail the `nth` (1-based, counted from this call) I/O whose kind is in `mask` with -`err`.
 * With `torn` a failing pwritev first writes a prefix of its data (half, rounded down to 512
 * bytes, at least one byte when it is shorter), as a disk that lost the rest would. */
void testfile_fail(struct testfile *tf, unsigned mask, uint64_t nth, int err,
                   enum tf_fail_mode mode, bool torn);
/* Stop failing: later I/O works. */
void testfile_heal(struct testfile *tf);
/* How many injected failures were returned so far. */
uint64_t testfile_nb_failures(const struct testfile *tf);
/* The kind of the I/O that failed first (0 if none). */
enum tf_kind testfile_failed_kind(const struct testfile *tf);
/* Was the first failed I/O a pwrite whose whole range a later pwrite wrote again, with a
 * flush after that? (Its bytes are then durable after all: the writer kept them and retried.
 * Not for sticky failures, under which nothing succeeds until healed.) */
bool testfile_failure_repaired(const struct testfile *tf);
/* How many I/Os of the kinds in `mask` were issued since open (failed ones included). */
uint64_t testfile_io_count(const struct testfile *tf, unsigned mask);
const char *testfile_kind_name(enum tf_kind kind);

/* ---- holding one I/O ---- */

/* For deterministic schedules of several threads: the next I/O whose kind is in `kinds` and
 * whose range covers `host_offset` (any range with TF_ANY_OFFSET; a flush has no range and
 * matches any offset) blocks before it happens until testfile_resume();
 * testfile_wait_paused() returns once it is blocked. Several I/Os may be held (arm, wait, arm
 * again); each testfile_resume() releases the one that blocked first. A held write is logged
 * when it is released, so the log keeps the order in which writes reached the file. */
#define TF_ANY_OFFSET UINT64_MAX
void testfile_pause(struct testfile *tf, unsigned kinds, uint64_t host_offset);
/* testfile_pause(tf, TF_PREAD, host_offset): a slow read. */
void testfile_pause_read(struct testfile *tf, uint64_t host_offset);
void testfile_wait_paused(struct testfile *tf);
void testfile_resume(struct testfile *tf);

/* ---- replay ---- */

/* A file image in memory. */
struct tf_buf {
    uint8_t *data;
    uint64_t size;
    uint64_t cap;
};

int tf_buf_load(struct tf_buf *b, const char *path);
int tf_buf_save(const struct tf_buf *b, const char *path);
void tf_buf_copy(struct tf_buf *dst, const struct tf_buf *src);
void tf_buf_free(struct tf_buf *b);
/* Apply one mutating event; with a `sector_mask` callback only the 512-byte sectors of a
 * pwritev/zero/discard for which it returns true are applied (a torn write). */
void tf_buf_apply(struct tf_buf *b, const struct tf_event *e,
                  bool (*keep_sector)(void *opaque, uint64_t sector), void *opaque);
uint64_t tf_buf_hash(const struct tf_buf *b);

#endif /* QCOW2_TESTFILE_H */
