/* testshapes.h - the write requests and target-cluster states of the write-path matrix:
 * test_cluster checks the L2 meta records, entries and bitmaps over it (against QEMU), and
 * test_crash crashes at every write of it. Images have 64 KiB clusters (2 KiB subclusters
 * with extended L2); every request gets its own 256 KiB region of three target clusters and a
 * gap, put into one state by qemu-io before the writes. */
#ifndef QCOW2_TESTSHAPES_H
#define QCOW2_TESTSHAPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format.h"

#define CS 0x10000u              /* cluster size */
#define SC 0x800u                /* subcluster size with extended L2 */
#define REGION (4 * CS)          /* one write case: three target clusters and a gap */

/* Write requests, relative to the start of their region, named SPAN_START_TO_END:
 *   SPAN  1SC  inside one subcluster (with standard L2: inside one cluster)
 *         NSC  several subclusters of one cluster
 *         X1   crossing one cluster boundary (two clusters)
 *         X2   crossing two cluster boundaries (three clusters)
 *   START/END  CL at the cluster boundary, SC at a subcluster boundary, MID inside a
 *              subcluster. */
enum geom {
    G_1SC_CL_TO_SC, G_1SC_CL_TO_MID, G_1SC_SC_TO_SC, G_1SC_SC_TO_MID, G_1SC_SC_TO_CL,
    G_1SC_MID_TO_SC, G_1SC_MID_TO_MID, G_1SC_MID_TO_CL,
    G_NSC_CL_TO_SC, G_NSC_CL_TO_MID, G_NSC_CL_TO_CL, G_NSC_SC_TO_SC, G_NSC_SC_TO_MID,
    G_NSC_SC_TO_CL, G_NSC_MID_TO_SC, G_NSC_MID_TO_MID, G_NSC_MID_TO_CL,
    G_X1_CL_TO_CL, G_X1_CL_TO_SC, G_X1_CL_TO_MID, G_X1_SC_TO_CL, G_X1_SC_TO_SC,
    G_X1_SC_TO_MID, G_X1_MID_TO_CL, G_X1_MID_TO_SC, G_X1_MID_TO_MID,
    G_X2_CL_TO_CL, G_X2_CL_TO_SC, G_X2_CL_TO_MID, G_X2_SC_TO_CL, G_X2_SC_TO_SC,
    G_X2_SC_TO_MID, G_X2_MID_TO_CL, G_X2_MID_TO_SC, G_X2_MID_TO_MID,
    G_COUNT
};

struct shape_geom {
    const char *name;
    uint32_t off, len;
};
extern const struct shape_geom geoms[G_COUNT];

/* The state the three target clusters of every region are put in before the writes. */
enum state {
    ST_UNALLOC,        /* nothing: no L2 entry */
    ST_NORMAL,         /* written whole: NORMAL, COPIED, host contiguous */
    ST_PARTIAL,        /* extended L2: subclusters 2-3 and 28-29 written, 10-11 zeroed, the
                        * rest unallocated; COPIED, host contiguous */
    ST_ZERO_PLAIN,     /* write -z on nothing: zero flag / all zero bits, no host cluster */
    ST_ZERO_ALLOC,     /* written, then write -z: zero flag / all zero bits, host kept, COPIED */
    ST_COMPRESSED,     /* write -c */
    ST_SHARED,         /* as NORMAL, then a snapshot: refcount 2, no COPIED */
    ST_SHARED_PARTIAL, /* as PARTIAL, then a snapshot */
    ST_MIXED,          /* cluster 0 NORMAL (PARTIAL with extended L2), 1 unallocated,
                        * 2 ZERO_ALLOC */
    ST_REVERSED,       /* all NORMAL (PARTIAL with extended L2), but written last to first:
                        * host clusters in descending order */
    ST_COUNT
};

extern const char *const state_names[ST_COUNT];

/* The bitmap of a cluster in the PARTIAL state (extended L2). */
#define PARTIAL_BITMAP                                                                     \
    (QCOW2_SC_ALLOC_RANGE(2, 4) | QCOW2_SC_ALLOC_RANGE(28, 30) | QCOW2_SC_ZERO_RANGE(10, 12))


/* Append to `out` the qemu-io commands, each ended by ';', that put the region at `r` into
 * state `st`; `src` is the data option of their writes ("-s FILE" or "-P BYTE"). The
 * SHARED states also need `qemu-img snapshot -c` afterwards. Returns the length appended;
 * aborts when `len` is too short. */
size_t shape_prep_commands(char *out, size_t len, enum state st, bool ext, uint64_t r,
                           const char *src);

#endif
