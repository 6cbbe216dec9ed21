/* testworkload.h - workloads, a guest-content model and the consistency verdict shared by the
 * crash test (test_crash.c) and the I/O-error test (test_ioerror.c).
 * A workload is a starting image made by qemu-img/qemu-io (the reference writer) plus a list
 * of guest operations run through the library. The model knows what every byte must read
 * after any prefix of those operations; wl_verify() opens a file with the library, compares
 * it with the model, runs qcow2_check and `qemu-img check`. */
#ifndef QCOW2_TESTWORKLOAD_H
#define QCOW2_TESTWORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "testfile.h"

enum wl_kind {
    WL_END = 0,
    WL_WRITE,      /* offset, len: pattern data */
    WL_WRITE_FUA,  /* as WL_WRITE, with QCOW2_WRITE_FUA */
    WL_ZERO,       /* offset, len; flags = QCOW2_ZERO_* */
    WL_DISCARD,    /* offset, len */
    WL_COMPRESSED, /* offset, len: compressible pattern data, whole clusters */
    WL_FLUSH,
    WL_TRUNCATE,   /* offset = new size (shrinks with QCOW2_TRUNCATE_SHRINK) */
    /* Whole-image operations that leave the guest view alone and end with a flush: */
    WL_AMEND_REFCOUNT_BITS, /* len = the new refcount width */
    WL_AMEND_DOWNGRADE,     /* compat=0.10 */
    WL_COMPACT,
    WL_SNAP_CREATE, /* internal snapshot "w<offset>" of the active disk (no guest change) */
    WL_SNAP_DELETE, /* delete snapshot "w<offset>" (no guest change) */
    WL_SNAP_APPLY,  /* apply the workload's prep snapshot (w->snapshot): the disk becomes it */
    WL_COMMIT,     /* qcow2_commit into the backing file, which empties the image; the guest
                    * view does not change */
    WL_REBASE,     /* safe qcow2_rebase onto "<name>.new.qcow2" (flags WL_REBASE_NONE: onto
                    * nothing); the guest view does not change */
};

#define WL_REBASE_NONE 0x1u

struct wl_op {
    enum wl_kind kind;
    uint64_t offset;
    uint64_t len;
    unsigned flags;
};

struct workload {
    const char *name;
    const char *create_opts;  /* qemu-img create -o for the image under test */
    const char *size;
    uint32_t cluster_size;    /* must match create_opts (the model's discard granularity) */
    const char *backing_size; /* NULL: no backing file */
    const char *backing_fmt;  /* of the backing file: NULL for qcow2, or "raw" */
    const char *backing_opts; /* its qemu-img create -o (NULL: none) */
    const char *backing_io;   /* qemu-io commands for the backing file, ';'-separated */
    const char *new_backing_io; /* with it, a second file "<name>.new.qcow2" for WL_REBASE,
                                 * made like the backing file (qcow2, backing_opts) */
    const char *prep_io;      /* qemu-io commands on the image before the workload */
    const char *prep_cmd;     /* then qemu-img commands on it, ';'-separated, each given the
                               * image's path as its last argument ("snapshot -c s1") */
    const char *snapshot;     /* an internal snapshot (made by prep_cmd) whose content
                               * wl_verify requires unchanged */
    const char *bitmap;       /* an enabled persistent bitmap (512-byte granularity) added
                               * after prep_io: wl_verify requires it in use (inconsistent)
                               * or dirty wherever the guest differs from the start */
    bool data_file;           /* an external data file "<name>.data.raw", data_file_raw=on */
    const struct wl_op *ops;  /* ends with WL_END */
    bool big;                 /* only with CRASH_FULL=1 (make stress) */
    uint64_t l2_cache_size;   /* the recording's L2 cache (0: the default); a cache smaller
                               * than the disk's tables splits them into 4 KiB slices */
    bool crash_aimed;         /* written for the crash model: test_ioerror sweeps it only
                               * with IOERROR_FULL=1, to keep make check's time */
    bool copied_window;       /* a version 2 image (no dirty bit) under snapshot operations:
                               * wl_verify also accepts COPIED flags that disagree with the
                               * refcounts where no data can be lost (wl_copied_harmless) */
    bool memory_backed;       /* the recording's file taken for one on tmpfs: zero spans of
                               * new clusters past the end of the file are left holes */
};

/* Every workload: tens of operations each, so that a test can afford every crash point. The
 * `big` ones are seeded random mixes, filled by wl_make_random(). */
extern const struct workload wl_workloads[];
extern const size_t wl_nb_workloads;
#define WL_RANDOM_MAX_OPS 1024
#define WL_RANDOM_MAX_SNAPSHOTS 4 /* internal snapshots alive at once in random_snapshots */
void wl_make_random(uint32_t seed, size_t nb_ops);

/* ---- files ---- */

/* The test's directory and helpers around it. */
void wl_set_dir(const char *dir);
const char *wl_dir(void);
void wl_path(char *out, size_t len, const char *name);
int wl_run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool wl_have_qemu(void);
/* ';'-separated qemu-io commands "cmd1;cmd2" (a trailing ';' allowed) as qemu-io arguments
 * " -c 'cmd1' -c 'cmd2'"; aborts when `len` is too short. */
void wl_io_args(char *out, size_t len, const char *cmds);
/* The longest qemu-io argument string a workload's prep_io may make. */
#define WL_PREP_ARGS_MAX 65536

/* Create the backing file (if any) and the starting image "<name>.start.qcow2" in the test
 * directory; load its bytes into *start and its guest content (via qemu-img convert) into
 * *base; keep the content of w->snapshot as "<name>.snapshot.raw". Returns 0 or -1 with a
 * message on stderr. The data file of a w->data_file image is not in *start: every run
 * changes the one file. */
int wl_prepare(const struct workload *w, struct tf_buf *start, struct tf_buf *base);

/* ---- running ---- */

size_t wl_nb_ops(const struct workload *w);
/* The data of write op `i` (len bytes), a function of the op index and the guest offset. */
void wl_fill(const struct workload *w, size_t i, uint8_t *buf);
/* Run op `i` on the image; returns what the library returned. */
int wl_exec(struct qcow2_image *img, const struct workload *w, size_t i);

/* ---- model ---- */

/* Apply op `i` to a guest content buffer (resizing it on truncate). */
void wl_apply(const struct workload *w, size_t i, struct tf_buf *guest);

/* ---- verdict ---- */

struct wl_expect {
    const struct tf_buf *durable;     /* content that must be there */
    const struct tf_buf *alternative; /* or, byte by byte, this content (NULL: none) */
    const size_t *uncertain;          /* ops that may or may not (or partly) have happened */
    size_t nb_uncertain;
    uint64_t start_size;              /* guest size before op 0 */
    const struct tf_buf *base;        /* guest content before op 0 (for w->bitmap; NULL:
                                       * the bitmap is not checked) */
};

/* Open `path` read-write with the library (a dirty image is repaired by the open), read every
 * guest byte and require each one to equal the durable content or a value an uncertain op
 * wrote there; require qcow2_check to find no corruption; close; with `qemu_check` require
 * `qemu-img check` to exit 0 or 3 (leaks only) and w->snapshot to read as it did in the
 * starting image (both depend on the file's bytes alone). On failure returns -1 and
 * describes the first problem in `why`. */
int wl_verify(const char *path, const struct workload *w, const struct wl_expect *ex,
              bool qemu_check, char *why, size_t whylen);
/* False under QCOW2_TEST_NO_QEMU_CHECK=1: wl_verify then skips qemu-img check. */
bool wl_qemu_checks_wanted(void);
/* Is the state whose file hashes to `h` one that goes past qemu-img check? Every state under
 * make stress (CRASH_FULL, IOERROR_FULL or QCOW2_TEST_FULL set), one in
 * QCOW2_QEMU_CHECK_EVERY (default 3) picked by its hash under make check, none under
 * QCOW2_TEST_NO_QEMU_CHECK=1. Every state still gets our own check and the content check. */
bool wl_qemu_check_due(uint64_t h);

/* Read every guest byte through `img` and compare as wl_verify does. */
int wl_check_content(struct qcow2_image *img, const struct workload *w,
                     const struct wl_expect *ex, char *why, size_t whylen);

/* `qemu-img check` exit status for `path`: 0 clean, 3 leaks, 2 corrupt, ... Output of a
 * failing check goes to stderr. */
int wl_qemu_check(const char *path);

/* A check report (QEMU's wording, one message a line, "Leaked cluster" lines included) whose
 * every error is an OFLAG_COPIED mismatch that cannot lose data: COPIED set on a cluster
 * whose only reference is that entry (its refcount counts one more: a leak), or COPIED clear
 * on a cluster whose refcount is 1 (the next write copies it needlessly). `qemu-img check -r
 * all` repairs both; a crash inside a snapshot operation on a v2 image can leave them (see
 * src/snapshot.c). Returns how many there are, or -1 with the first other error in `why`. */
int wl_copied_harmless(const char *report, uint32_t cluster_size, char *why, size_t whylen);

#endif /* QCOW2_TESTWORKLOAD_H */
