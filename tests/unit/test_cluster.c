/* test_cluster.c - cluster.c's write preparation: the L2 meta records (keep_old_clusters,
 * nb_clusters, COW regions, needs_link) that cluster_prepare_write computes, and the L2 entries
 * and subcluster bitmaps that a write leaves behind.
 *
 * Method. Each scenario is one image (64 KiB clusters; standard L2, or extended L2 with 2 KiB
 * subclusters; with or without a raw backing file full of random bytes) whose target clusters
 * are put into one state by qemu-io (unallocated, allocated COPIED, allocated with unallocated
 * and zero subclusters, zero plain/alloc, compressed, shared after `qemu-img snapshot`, mixed,
 * host-discontiguous). Every write request gets its own 256 KiB region (three target clusters
 * and a gap), so one image holds many independent cases (the shapes and states are in
 * testshapes.h: test_crash crashes at every write of the same matrix). Then:
 *   1. on a copy, cluster_prepare_write is called under img->lock the way io.c's write_part
 *      does (repeatedly, one record per host-contiguous part), each record is compared with
 *      the table below, and cluster_abort drops it;
 *   2. the same writes go through qcow2_pwrite on the image; a record without needs_link must
 *      leave the L2 entries untouched;
 *   3. qemu-io does the same writes on another copy: the L2 entries, subcluster bitmaps and
 *      host offsets we leave must be QEMU's (it is the reference for notes section 5.4);
 *   4. `qemu-img check` is clean and `qemu-img compare` (and our own read) see exactly the
 *      image qemu-img convert saw before, with the writes applied.
 * The expected records are explicit numbers, from QEMU's calculate_l2_meta rules (notes 5.3,
 * 5.4); QEMU's own result in step 3 is the cross-check that the numbers are the right ones.
 * Skipped (77) without qemu-img and qemu-io. */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testharness.h"
#include "testshapes.h"
#include "testworkload.h"

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* ------------------------------------------------------------------------------------------ */
/* Geometry of every scenario. */

#define MAX_CASES 36
#define IMG_SIZE ((uint64_t)MAX_CASES * REGION)
#define PAT_SIZE (4 * CS)        /* pattern files: at least the longest write */
#define MAX_METAS 3

/* What cluster k (0..2) of a region holds before the writes. host_rank orders the host
 * clusters of one region by allocation (-1: none): contiguous ranks are adjacent clusters. */
struct pre_state {
    bool host, copied, compressed, zero_flag;
    uint64_t bitmap;
    int host_rank;
};

static struct pre_state pre_state_of(enum state st, bool ext, unsigned k)
{
    struct pre_state p = {.host_rank = -1};
    uint64_t all_alloc = ext ? QCOW2_SC_ALL_ALLOC : 0;
    uint64_t partial = ext ? PARTIAL_BITMAP : 0;
    switch (st) {
    case ST_UNALLOC:
        break;
    case ST_NORMAL:
    case ST_SHARED:
        p = (struct pre_state){true, st == ST_NORMAL, false, false, all_alloc, (int)k};
        break;
    case ST_PARTIAL:
    case ST_SHARED_PARTIAL:
        p = (struct pre_state){true, st == ST_PARTIAL, false, false, partial, (int)k};
        break;
    case ST_ZERO_PLAIN:
        p = (struct pre_state){false, false, false, !ext, ext ? QCOW2_SC_ALL_ZERO : 0, -1};
        break;
    case ST_ZERO_ALLOC:
        p = (struct pre_state){true, true, false, !ext, ext ? QCOW2_SC_ALL_ZERO : 0, (int)k};
        break;
    case ST_COMPRESSED:
        p = (struct pre_state){false, false, true, false, 0, -1};
        break;
    case ST_MIXED:
        if (k == 0)
            p = (struct pre_state){true, true, false, false, ext ? partial : 0, 0};
        else if (k == 2)
            p = (struct pre_state){true, true, false, !ext, ext ? QCOW2_SC_ALL_ZERO : 0, 1};
        break;
    case ST_REVERSED:
        p = (struct pre_state){true, true, false, false, ext ? partial : 0, 2 - (int)k};
        break;
    case ST_COUNT:
        break;
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* Expected L2 meta records. */

struct cow {
    uint32_t offset, nb_bytes;
};

/* One record: `at` is its guest offset relative to the region (m->offset - region); the COW
 * regions are relative to m->offset, as in struct l2_meta. nb_clusters 0 ends a list. */
struct meta_expect {
    uint32_t at;
    unsigned nb_clusters;
    bool keep_old;
    struct cow cow_start, cow_end;
    bool needs_link;
};

struct row {
    bool ext;
    enum state state;
    enum geom geom;
    struct meta_expect m[MAX_METAS];
};

#define STD false
#define EXT true
#define KEEP true
#define NEW false
#define LINK true
#define NO_LINK false

/* Every geometry over every state, standard and extended L2. How to read a row, e.g.
 *   {EXT, ST_UNALLOC, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x1800, 0x200}, {0x1de8, 0x218}, LINK}}}
 * A write of 0x3e8 bytes at 0x1a00 into an unallocated cluster with extended L2 allocates one
 * new cluster and copies only the rest of subcluster 3: 0x200 bytes before the data starting
 * at 0x1800, 0x218 bytes after it up to 0x2000. The rules (notes 5.4): a new cluster copies
 * from the start of the first written subcluster (plain) or the first allocated subcluster
 * (shared) or the whole cluster (compressed, or any shared cluster with standard L2); a kept
 * cluster copies nothing around NORMAL subclusters and rounds out to subclusters otherwise;
 * records split where the need for a new cluster changes or host clusters stop being
 * contiguous. */
static const struct row rows[] = {
    /* standard L2, unalloc */
    {STD, ST_UNALLOC, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0xf800}, LINK}}},
    {STD, ST_UNALLOC, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0xfd44}, LINK}}},
    {STD, ST_UNALLOC, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_UNALLOC, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x1abc, 0xe544}, LINK}}},
    {STD, ST_UNALLOC, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0xf800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_UNALLOC, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}}},
    {STD, ST_UNALLOC, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0xfa00}, {0x10000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0xd800}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0xd6d4}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x33e8, 0xcc18}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0x2800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3400, 0xcc00}, LINK}}},
    {STD, ST_UNALLOC, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0x2864}, {0x10000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_UNALLOC, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_UNALLOC, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0x0, 0xe800}, {0x20000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_UNALLOC, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_UNALLOC, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x20000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_UNALLOC, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_UNALLOC, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_UNALLOC, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_UNALLOC, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0x0, 0xa000}, {0x30000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0x0, 0xa000}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_UNALLOC, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0x0, 0xa000}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_UNALLOC, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0x0, 0xa064}, {0x30000, 0x0}, LINK}}},
    {STD, ST_UNALLOC, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0x0, 0xa064}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_UNALLOC, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0x0, 0xa064}, {0x2212c, 0xded4}, LINK}}},
    /* standard L2, normal */
    {STD, ST_NORMAL, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0xfa00, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x3800, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x33e8, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3800, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3400, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x2864, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_CL_TO_CL, {{0x0, 2, KEEP, {0x0, 0x0}, {0x20000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_CL_TO_SC, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11800, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_CL_TO_MID, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11abc, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_SC_TO_CL, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x20000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_SC_TO_SC, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x11800, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_SC_TO_MID, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x11abc, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_MID_TO_CL, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x20000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_MID_TO_SC, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x11800, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X1_MID_TO_MID, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x11abc, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_CL_TO_CL, {{0x0, 3, KEEP, {0x0, 0x0}, {0x30000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_CL_TO_SC, {{0x0, 3, KEEP, {0x0, 0x0}, {0x22000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_CL_TO_MID, {{0x0, 3, KEEP, {0x0, 0x0}, {0x2212c, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_SC_TO_CL, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x30000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_SC_TO_SC, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x22000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_SC_TO_MID, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x2212c, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_MID_TO_CL, {{0x0, 3, KEEP, {0xa064, 0x0}, {0x30000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_MID_TO_SC, {{0x0, 3, KEEP, {0xa064, 0x0}, {0x22000, 0x0}, NO_LINK}}},
    {STD, ST_NORMAL, G_X2_MID_TO_MID, {{0x0, 3, KEEP, {0xa064, 0x0}, {0x2212c, 0x0}, NO_LINK}}},
    /* standard L2, zero_plain */
    {STD, ST_ZERO_PLAIN, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0xf800}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0xfd44}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x1abc, 0xe544}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0xf800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0xfa00}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0xd800}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0xd6d4}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x33e8, 0xcc18}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0x2800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3400, 0xcc00}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0x2864}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0x0, 0xe800}, {0x20000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x20000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0x0, 0xa000}, {0x30000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0x0, 0xa000}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0x0, 0xa000}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0x0, 0xa064}, {0x30000, 0x0}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0x0, 0xa064}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_ZERO_PLAIN, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0x0, 0xa064}, {0x2212c, 0xded4}, LINK}}},
    /* standard L2, zero_alloc */
    {STD, ST_ZERO_ALLOC, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0xf800}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0xfd44}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x0, 0x1800}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x0, 0x1800}, {0x1abc, 0xe544}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0x0, 0xf800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x0, 0x1a00}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0x0, 0xfa00}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0xd800}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0xd6d4}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x0, 0x1800}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x0, 0x1800}, {0x33e8, 0xcc18}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x0, 0x2800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x0, 0x1a00}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x0, 0x1a00}, {0x3400, 0xcc00}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x0, 0x2864}, {0x10000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_CL_TO_CL, {{0x0, 2, KEEP, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_CL_TO_SC, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_CL_TO_MID, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_SC_TO_CL, {{0x0, 2, KEEP, {0x0, 0xe800}, {0x20000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_SC_TO_SC, {{0x0, 2, KEEP, {0x0, 0xe800}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_SC_TO_MID, {{0x0, 2, KEEP, {0x0, 0xe800}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_MID_TO_CL, {{0x0, 2, KEEP, {0x0, 0xe92c}, {0x20000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_MID_TO_SC, {{0x0, 2, KEEP, {0x0, 0xe92c}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X1_MID_TO_MID, {{0x0, 2, KEEP, {0x0, 0xe92c}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_CL_TO_CL, {{0x0, 3, KEEP, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_CL_TO_SC, {{0x0, 3, KEEP, {0x0, 0x0}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_CL_TO_MID, {{0x0, 3, KEEP, {0x0, 0x0}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_SC_TO_CL, {{0x0, 3, KEEP, {0x0, 0xa000}, {0x30000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_SC_TO_SC, {{0x0, 3, KEEP, {0x0, 0xa000}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_SC_TO_MID, {{0x0, 3, KEEP, {0x0, 0xa000}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_MID_TO_CL, {{0x0, 3, KEEP, {0x0, 0xa064}, {0x30000, 0x0}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_MID_TO_SC, {{0x0, 3, KEEP, {0x0, 0xa064}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_ZERO_ALLOC, G_X2_MID_TO_MID, {{0x0, 3, KEEP, {0x0, 0xa064}, {0x2212c, 0xded4}, LINK}}},
    /* standard L2, compressed */
    {STD, ST_COMPRESSED, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0xf800}, LINK}}},
    {STD, ST_COMPRESSED, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0xfd44}, LINK}}},
    {STD, ST_COMPRESSED, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_COMPRESSED, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x1abc, 0xe544}, LINK}}},
    {STD, ST_COMPRESSED, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0xf800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_COMPRESSED, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}}},
    {STD, ST_COMPRESSED, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0xfa00}, {0x10000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0xd800}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0xd6d4}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x33e8, 0xcc18}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0x2800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3400, 0xcc00}, LINK}}},
    {STD, ST_COMPRESSED, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0x2864}, {0x10000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0x0, 0xe800}, {0x20000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x20000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_COMPRESSED, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0x0, 0xa000}, {0x30000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0x0, 0xa000}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0x0, 0xa000}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0x0, 0xa064}, {0x30000, 0x0}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0x0, 0xa064}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_COMPRESSED, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0x0, 0xa064}, {0x2212c, 0xded4}, LINK}}},
    /* standard L2, shared */
    {STD, ST_SHARED, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0xf800}, LINK}}},
    {STD, ST_SHARED, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0xfd44}, LINK}}},
    {STD, ST_SHARED, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_SHARED, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x1abc, 0xe544}, LINK}}},
    {STD, ST_SHARED, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0xf800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_SHARED, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}}},
    {STD, ST_SHARED, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0xfa00}, {0x10000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0xd800}, LINK}}},
    {STD, ST_SHARED, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0xd6d4}, LINK}}},
    {STD, ST_SHARED, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_SHARED, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x33e8, 0xcc18}, LINK}}},
    {STD, ST_SHARED, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0x2800}, {0x10000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3800, 0xc800}, LINK}}},
    {STD, ST_SHARED, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3400, 0xcc00}, LINK}}},
    {STD, ST_SHARED, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0x2864}, {0x10000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_SHARED, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_SHARED, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0x0, 0xe800}, {0x20000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_SHARED, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_SHARED, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x20000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11800, 0xe800}, LINK}}},
    {STD, ST_SHARED, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11abc, 0xe544}, LINK}}},
    {STD, ST_SHARED, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_SHARED, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_SHARED, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0x0, 0xa000}, {0x30000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0x0, 0xa000}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_SHARED, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0x0, 0xa000}, {0x2212c, 0xded4}, LINK}}},
    {STD, ST_SHARED, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0x0, 0xa064}, {0x30000, 0x0}, LINK}}},
    {STD, ST_SHARED, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0x0, 0xa064}, {0x22000, 0xe000}, LINK}}},
    {STD, ST_SHARED, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0x0, 0xa064}, {0x2212c, 0xded4}, LINK}}},
    /* standard L2, mixed */
    {STD, ST_MIXED, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0xfa00, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x3800, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x33e8, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3800, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3400, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x2864, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_MIXED, G_X1_CL_TO_CL, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_MIXED, G_X1_CL_TO_SC, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1800, 0xe800}, LINK}}},
    {STD, ST_MIXED, G_X1_CL_TO_MID, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1abc, 0xe544}, LINK}}},
    {STD, ST_MIXED, G_X1_SC_TO_CL, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_MIXED, G_X1_SC_TO_SC, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1800, 0xe800}, LINK}}},
    {STD, ST_MIXED, G_X1_SC_TO_MID, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1abc, 0xe544}, LINK}}},
    {STD, ST_MIXED, G_X1_MID_TO_CL, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_MIXED, G_X1_MID_TO_SC, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1800, 0xe800}, LINK}}},
    {STD, ST_MIXED, G_X1_MID_TO_MID, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1abc, 0xe544}, LINK}}},
    {STD, ST_MIXED, G_X2_CL_TO_CL, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_MIXED, G_X2_CL_TO_SC, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_MIXED, G_X2_CL_TO_MID, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0xded4}, LINK}}},
    {STD, ST_MIXED, G_X2_SC_TO_CL, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_MIXED, G_X2_SC_TO_SC, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_MIXED, G_X2_SC_TO_MID, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0xded4}, LINK}}},
    {STD, ST_MIXED, G_X2_MID_TO_CL, {
        {0x0, 1, KEEP, {0xa064, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {STD, ST_MIXED, G_X2_MID_TO_SC, {
        {0x0, 1, KEEP, {0xa064, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0xe000}, LINK}}},
    {STD, ST_MIXED, G_X2_MID_TO_MID, {
        {0x0, 1, KEEP, {0xa064, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0xded4}, LINK}}},
    /* standard L2, reversed */
    {STD, ST_REVERSED, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0xfa00, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x3800, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x33e8, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3800, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3400, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x2864, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_CL_TO_CL, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_CL_TO_SC, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1800, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_CL_TO_MID, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_SC_TO_CL, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_SC_TO_SC, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1800, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_SC_TO_MID, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_MID_TO_CL, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_MID_TO_SC, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1800, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X1_MID_TO_MID, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_CL_TO_CL, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_CL_TO_SC, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_CL_TO_MID, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_SC_TO_CL, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_SC_TO_SC, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_SC_TO_MID, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_MID_TO_CL, {
        {0x0, 1, KEEP, {0xa064, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_MID_TO_SC, {
        {0x0, 1, KEEP, {0xa064, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {STD, ST_REVERSED, G_X2_MID_TO_MID, {
        {0x0, 1, KEEP, {0xa064, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x0}, NO_LINK}}},
    /* extended L2, unalloc */
    {EXT, ST_UNALLOC, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0x544}, LINK}}},
    {EXT, ST_UNALLOC, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x1800, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x1800, 0x0}, {0x1abc, 0x544}, LINK}}},
    {EXT, ST_UNALLOC, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0xf800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x1800, 0x200}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x1800, 0x200}, {0x1de8, 0x218}, LINK}}},
    {EXT, ST_UNALLOC, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0xf800, 0x200}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0x6d4}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x1800, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x1800, 0x0}, {0x33e8, 0x418}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x2800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x1800, 0x200}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x1800, 0x200}, {0x3400, 0x400}, LINK}}},
    {EXT, ST_UNALLOC, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x2800, 0x64}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0xe800, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0xe800, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0xe800, 0x0}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0xe800, 0x12c}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0xe800, 0x12c}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0xe800, 0x12c}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0x6d4}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0xa000, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0xa000, 0x0}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0xa000, 0x0}, {0x2212c, 0x6d4}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0xa000, 0x64}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0xa000, 0x64}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_UNALLOC, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0xa000, 0x64}, {0x2212c, 0x6d4}, LINK}}},
    /* extended L2, normal */
    {EXT, ST_NORMAL, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0xfa00, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x3800, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x33e8, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3800, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3400, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x2864, 0x0}, {0x10000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_CL_TO_CL, {{0x0, 2, KEEP, {0x0, 0x0}, {0x20000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_CL_TO_SC, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11800, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_CL_TO_MID, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11abc, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_SC_TO_CL, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x20000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_SC_TO_SC, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x11800, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_SC_TO_MID, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x11abc, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_MID_TO_CL, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x20000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_MID_TO_SC, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x11800, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X1_MID_TO_MID, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x11abc, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_CL_TO_CL, {{0x0, 3, KEEP, {0x0, 0x0}, {0x30000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_CL_TO_SC, {{0x0, 3, KEEP, {0x0, 0x0}, {0x22000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_CL_TO_MID, {{0x0, 3, KEEP, {0x0, 0x0}, {0x2212c, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_SC_TO_CL, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x30000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_SC_TO_SC, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x22000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_SC_TO_MID, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x2212c, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_MID_TO_CL, {{0x0, 3, KEEP, {0xa064, 0x0}, {0x30000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_MID_TO_SC, {{0x0, 3, KEEP, {0xa064, 0x0}, {0x22000, 0x0}, NO_LINK}}},
    {EXT, ST_NORMAL, G_X2_MID_TO_MID, {{0x0, 3, KEEP, {0xa064, 0x0}, {0x2212c, 0x0}, NO_LINK}}},
    /* extended L2, partial */
    {EXT, ST_PARTIAL, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0x544}, LINK}}},
    {EXT, ST_PARTIAL, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {EXT, ST_PARTIAL, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {EXT, ST_PARTIAL, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {EXT, ST_PARTIAL, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}}},
    {EXT, ST_PARTIAL, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x200}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0x6d4}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x33e8, 0x418}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3400, 0x400}, LINK}}},
    {EXT, ST_PARTIAL, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x64}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_CL_TO_CL, {{0x0, 2, KEEP, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_CL_TO_SC, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_CL_TO_MID, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11abc, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_SC_TO_CL, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_SC_TO_SC, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_SC_TO_MID, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x11abc, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_MID_TO_CL, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_MID_TO_SC, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X1_MID_TO_MID, {{0x0, 2, KEEP, {0xe92c, 0x0}, {0x11abc, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_CL_TO_CL, {{0x0, 3, KEEP, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_CL_TO_SC, {{0x0, 3, KEEP, {0x0, 0x0}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_CL_TO_MID, {{0x0, 3, KEEP, {0x0, 0x0}, {0x2212c, 0x6d4}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_SC_TO_CL, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_SC_TO_SC, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_SC_TO_MID, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x2212c, 0x6d4}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_MID_TO_CL, {{0x0, 3, KEEP, {0xa000, 0x64}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_MID_TO_SC, {{0x0, 3, KEEP, {0xa000, 0x64}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_PARTIAL, G_X2_MID_TO_MID, {{0x0, 3, KEEP, {0xa000, 0x64}, {0x2212c, 0x6d4}, LINK}}},
    /* extended L2, zero_plain */
    {EXT, ST_ZERO_PLAIN, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0x544}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x1800, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x1800, 0x0}, {0x1abc, 0x544}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0xf800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x1800, 0x200}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x1800, 0x200}, {0x1de8, 0x218}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0xf800, 0x200}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0x6d4}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x1800, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x1800, 0x0}, {0x33e8, 0x418}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x2800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x1800, 0x200}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x1800, 0x200}, {0x3400, 0x400}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x2800, 0x64}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0xe800, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0xe800, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0xe800, 0x0}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0xe800, 0x12c}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0xe800, 0x12c}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0xe800, 0x12c}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0x6d4}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0xa000, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0xa000, 0x0}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0xa000, 0x0}, {0x2212c, 0x6d4}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0xa000, 0x64}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0xa000, 0x64}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_ZERO_PLAIN, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0xa000, 0x64}, {0x2212c, 0x6d4}, LINK}}},
    /* extended L2, zero_alloc */
    {EXT, ST_ZERO_ALLOC, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0x544}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x1abc, 0x544}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x200}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x200}, {0x1de8, 0x218}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x200}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0x6d4}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x33e8, 0x418}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x200}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x200}, {0x3400, 0x400}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x64}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_CL_TO_CL, {{0x0, 2, KEEP, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_CL_TO_SC, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_CL_TO_MID, {{0x0, 2, KEEP, {0x0, 0x0}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_SC_TO_CL, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_SC_TO_SC, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_SC_TO_MID, {{0x0, 2, KEEP, {0xe800, 0x0}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_MID_TO_CL, {{0x0, 2, KEEP, {0xe800, 0x12c}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_MID_TO_SC, {{0x0, 2, KEEP, {0xe800, 0x12c}, {0x11800, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X1_MID_TO_MID, {{0x0, 2, KEEP, {0xe800, 0x12c}, {0x11abc, 0x544}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_CL_TO_CL, {{0x0, 3, KEEP, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_CL_TO_SC, {{0x0, 3, KEEP, {0x0, 0x0}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_CL_TO_MID, {{0x0, 3, KEEP, {0x0, 0x0}, {0x2212c, 0x6d4}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_SC_TO_CL, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_SC_TO_SC, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_SC_TO_MID, {{0x0, 3, KEEP, {0xa000, 0x0}, {0x2212c, 0x6d4}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_MID_TO_CL, {{0x0, 3, KEEP, {0xa000, 0x64}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_MID_TO_SC, {{0x0, 3, KEEP, {0xa000, 0x64}, {0x22000, 0x0}, LINK}}},
    {EXT, ST_ZERO_ALLOC, G_X2_MID_TO_MID, {{0x0, 3, KEEP, {0xa000, 0x64}, {0x2212c, 0x6d4}, LINK}}},
    /* extended L2, compressed */
    {EXT, ST_COMPRESSED, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0xf800}, LINK}}},
    {EXT, ST_COMPRESSED, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0xfd44}, LINK}}},
    {EXT, ST_COMPRESSED, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x2000, 0xe000}, LINK}}},
    {EXT, ST_COMPRESSED, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x1abc, 0xe544}, LINK}}},
    {EXT, ST_COMPRESSED, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0xf800}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x2000, 0xe000}, LINK}}},
    {EXT, ST_COMPRESSED, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}}},
    {EXT, ST_COMPRESSED, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0xfa00}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0xd800}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0xd6d4}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x3800, 0xc800}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x33e8, 0xcc18}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0x2800}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3800, 0xc800}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3400, 0xcc00}, LINK}}},
    {EXT, ST_COMPRESSED, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0x2864}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0xe800}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0xe544}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0x0, 0xe800}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11800, 0xe800}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11abc, 0xe544}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11800, 0xe800}, LINK}}},
    {EXT, ST_COMPRESSED, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11abc, 0xe544}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0xe000}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0xded4}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0x0, 0xa000}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0x0, 0xa000}, {0x22000, 0xe000}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0x0, 0xa000}, {0x2212c, 0xded4}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0x0, 0xa064}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0x0, 0xa064}, {0x22000, 0xe000}, LINK}}},
    {EXT, ST_COMPRESSED, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0x0, 0xa064}, {0x2212c, 0xded4}, LINK}}},
    /* extended L2, shared */
    {EXT, ST_SHARED, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0xf800}, LINK}}},
    {EXT, ST_SHARED, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0xfd44}, LINK}}},
    {EXT, ST_SHARED, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x2000, 0xe000}, LINK}}},
    {EXT, ST_SHARED, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x1abc, 0xe544}, LINK}}},
    {EXT, ST_SHARED, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0xf800}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x2000, 0xe000}, LINK}}},
    {EXT, ST_SHARED, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}}},
    {EXT, ST_SHARED, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0xfa00}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0xd800}, LINK}}},
    {EXT, ST_SHARED, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0xd6d4}, LINK}}},
    {EXT, ST_SHARED, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x0, 0x1800}, {0x3800, 0xc800}, LINK}}},
    {EXT, ST_SHARED, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x0, 0x1800}, {0x33e8, 0xcc18}, LINK}}},
    {EXT, ST_SHARED, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x0, 0x2800}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3800, 0xc800}, LINK}}},
    {EXT, ST_SHARED, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x0, 0x1a00}, {0x3400, 0xcc00}, LINK}}},
    {EXT, ST_SHARED, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x0, 0x2864}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0xe800}, LINK}}},
    {EXT, ST_SHARED, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0xe544}, LINK}}},
    {EXT, ST_SHARED, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0x0, 0xe800}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11800, 0xe800}, LINK}}},
    {EXT, ST_SHARED, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0x0, 0xe800}, {0x11abc, 0xe544}, LINK}}},
    {EXT, ST_SHARED, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11800, 0xe800}, LINK}}},
    {EXT, ST_SHARED, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0x0, 0xe92c}, {0x11abc, 0xe544}, LINK}}},
    {EXT, ST_SHARED, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0xe000}, LINK}}},
    {EXT, ST_SHARED, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0xded4}, LINK}}},
    {EXT, ST_SHARED, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0x0, 0xa000}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0x0, 0xa000}, {0x22000, 0xe000}, LINK}}},
    {EXT, ST_SHARED, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0x0, 0xa000}, {0x2212c, 0xded4}, LINK}}},
    {EXT, ST_SHARED, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0x0, 0xa064}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_SHARED, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0x0, 0xa064}, {0x22000, 0xe000}, LINK}}},
    {EXT, ST_SHARED, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0x0, 0xa064}, {0x2212c, 0xded4}, LINK}}},
    /* extended L2, shared_partial */
    {EXT, ST_SHARED_PARTIAL, G_1SC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x800, 0xe800}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_1SC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x2bc, 0xed44}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_1SC_SC_TO_SC, {{0x0, 1, NEW, {0x1000, 0x800}, {0x2000, 0xd000}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_1SC_SC_TO_MID, {{0x0, 1, NEW, {0x1000, 0x800}, {0x1abc, 0xd544}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_1SC_SC_TO_CL, {{0x0, 1, NEW, {0x1000, 0xe800}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_1SC_MID_TO_SC, {{0x0, 1, NEW, {0x1000, 0xa00}, {0x2000, 0xd000}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_1SC_MID_TO_MID, {{0x0, 1, NEW, {0x1000, 0xa00}, {0x1de8, 0xd218}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_1SC_MID_TO_CL, {{0x0, 1, NEW, {0x1000, 0xea00}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_CL_TO_SC, {{0x0, 1, NEW, {0x0, 0x0}, {0x2800, 0xc800}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_CL_TO_MID, {{0x0, 1, NEW, {0x0, 0x0}, {0x292c, 0xc6d4}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_CL_TO_CL, {{0x0, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_SC_TO_SC, {{0x0, 1, NEW, {0x1000, 0x800}, {0x3800, 0xb800}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_SC_TO_MID, {{0x0, 1, NEW, {0x1000, 0x800}, {0x33e8, 0xbc18}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_SC_TO_CL, {{0x0, 1, NEW, {0x1000, 0x1800}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_MID_TO_SC, {{0x0, 1, NEW, {0x1000, 0xa00}, {0x3800, 0xb800}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_MID_TO_MID, {{0x0, 1, NEW, {0x1000, 0xa00}, {0x3400, 0xbc00}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_NSC_MID_TO_CL, {{0x0, 1, NEW, {0x1000, 0x1864}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_CL_TO_CL, {{0x0, 2, NEW, {0x0, 0x0}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_CL_TO_SC, {{0x0, 2, NEW, {0x0, 0x0}, {0x11800, 0xd800}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_CL_TO_MID, {{0x0, 2, NEW, {0x0, 0x0}, {0x11abc, 0xd544}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_SC_TO_CL, {{0x0, 2, NEW, {0x1000, 0xd800}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_SC_TO_SC, {{0x0, 2, NEW, {0x1000, 0xd800}, {0x11800, 0xd800}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_SC_TO_MID, {{0x0, 2, NEW, {0x1000, 0xd800}, {0x11abc, 0xd544}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_MID_TO_CL, {{0x0, 2, NEW, {0x1000, 0xd92c}, {0x20000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_MID_TO_SC, {{0x0, 2, NEW, {0x1000, 0xd92c}, {0x11800, 0xd800}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X1_MID_TO_MID, {{0x0, 2, NEW, {0x1000, 0xd92c}, {0x11abc, 0xd544}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_CL_TO_CL, {{0x0, 3, NEW, {0x0, 0x0}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_CL_TO_SC, {{0x0, 3, NEW, {0x0, 0x0}, {0x22000, 0xd000}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_CL_TO_MID, {{0x0, 3, NEW, {0x0, 0x0}, {0x2212c, 0xced4}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_SC_TO_CL, {{0x0, 3, NEW, {0x1000, 0x9000}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_SC_TO_SC, {{0x0, 3, NEW, {0x1000, 0x9000}, {0x22000, 0xd000}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_SC_TO_MID, {{0x0, 3, NEW, {0x1000, 0x9000}, {0x2212c, 0xced4}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_MID_TO_CL, {{0x0, 3, NEW, {0x1000, 0x9064}, {0x30000, 0x0}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_MID_TO_SC, {{0x0, 3, NEW, {0x1000, 0x9064}, {0x22000, 0xd000}, LINK}}},
    {EXT, ST_SHARED_PARTIAL, G_X2_MID_TO_MID, {{0x0, 3, NEW, {0x1000, 0x9064}, {0x2212c, 0xced4}, LINK}}},
    /* extended L2, mixed */
    {EXT, ST_MIXED, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0x544}, LINK}}},
    {EXT, ST_MIXED, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {EXT, ST_MIXED, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {EXT, ST_MIXED, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {EXT, ST_MIXED, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}}},
    {EXT, ST_MIXED, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x200}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0x6d4}, LINK}}},
    {EXT, ST_MIXED, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x33e8, 0x418}, LINK}}},
    {EXT, ST_MIXED, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3400, 0x400}, LINK}}},
    {EXT, ST_MIXED, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x64}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X1_CL_TO_CL, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X1_CL_TO_SC, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1800, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X1_CL_TO_MID, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1abc, 0x544}, LINK}}},
    {EXT, ST_MIXED, G_X1_SC_TO_CL, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X1_SC_TO_SC, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1800, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X1_SC_TO_MID, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1abc, 0x544}, LINK}}},
    {EXT, ST_MIXED, G_X1_MID_TO_CL, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X1_MID_TO_SC, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1800, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X1_MID_TO_MID, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x1abc, 0x544}, LINK}}},
    {EXT, ST_MIXED, G_X2_CL_TO_CL, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X2_CL_TO_SC, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X2_CL_TO_MID, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x6d4}, LINK}}},
    {EXT, ST_MIXED, G_X2_SC_TO_CL, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X2_SC_TO_SC, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X2_SC_TO_MID, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x6d4}, LINK}}},
    {EXT, ST_MIXED, G_X2_MID_TO_CL, {
        {0x0, 1, KEEP, {0xa000, 0x64}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X2_MID_TO_SC, {
        {0x0, 1, KEEP, {0xa000, 0x64}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_MIXED, G_X2_MID_TO_MID, {
        {0x0, 1, KEEP, {0xa000, 0x64}, {0x10000, 0x0}, LINK},
        {0x10000, 1, NEW, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x6d4}, LINK}}},
    /* extended L2, reversed */
    {EXT, ST_REVERSED, G_1SC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x800, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_1SC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2bc, 0x544}, LINK}}},
    {EXT, ST_REVERSED, G_1SC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {EXT, ST_REVERSED, G_1SC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x1abc, 0x0}, NO_LINK}}},
    {EXT, ST_REVERSED, G_1SC_SC_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_1SC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x2000, 0x0}, NO_LINK}}},
    {EXT, ST_REVERSED, G_1SC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}}},
    {EXT, ST_REVERSED, G_1SC_MID_TO_CL, {{0x0, 1, KEEP, {0xf800, 0x200}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_CL_TO_SC, {{0x0, 1, KEEP, {0x0, 0x0}, {0x2800, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_CL_TO_MID, {{0x0, 1, KEEP, {0x0, 0x0}, {0x292c, 0x6d4}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_CL_TO_CL, {{0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_SC_TO_SC, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_SC_TO_MID, {{0x0, 1, KEEP, {0x1800, 0x0}, {0x33e8, 0x418}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_SC_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_MID_TO_SC, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3800, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_MID_TO_MID, {{0x0, 1, KEEP, {0x1a00, 0x0}, {0x3400, 0x400}, LINK}}},
    {EXT, ST_REVERSED, G_NSC_MID_TO_CL, {{0x0, 1, KEEP, {0x2800, 0x64}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_CL_TO_CL, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_CL_TO_SC, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1800, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_CL_TO_MID, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1abc, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_SC_TO_CL, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_SC_TO_SC, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1800, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_SC_TO_MID, {
        {0x0, 1, KEEP, {0xe800, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1abc, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_MID_TO_CL, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_MID_TO_SC, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1800, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X1_MID_TO_MID, {
        {0x0, 1, KEEP, {0xe92c, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x1abc, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X2_CL_TO_CL, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X2_CL_TO_SC, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X2_CL_TO_MID, {
        {0x0, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x6d4}, LINK}}},
    {EXT, ST_REVERSED, G_X2_SC_TO_CL, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X2_SC_TO_SC, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X2_SC_TO_MID, {
        {0x0, 1, KEEP, {0xa000, 0x0}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x6d4}, LINK}}},
    {EXT, ST_REVERSED, G_X2_MID_TO_CL, {
        {0x0, 1, KEEP, {0xa000, 0x64}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X2_MID_TO_SC, {
        {0x0, 1, KEEP, {0xa000, 0x64}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x2000, 0x0}, LINK}}},
    {EXT, ST_REVERSED, G_X2_MID_TO_MID, {
        {0x0, 1, KEEP, {0xa000, 0x64}, {0x10000, 0x0}, LINK},
        {0x10000, 1, KEEP, {0x0, 0x0}, {0x10000, 0x0}, LINK},
        {0x20000, 1, KEEP, {0x0, 0x0}, {0x212c, 0x6d4}, LINK}}},
};

#define NB_ROWS (sizeof(rows) / sizeof(rows[0]))

/* ------------------------------------------------------------------------------------------ */
/* Helpers. */

static char g_dir[4096];

static int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_cmd(const char *fmt, ...)
{
    static char cmd[65536];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(cmd))
        return -1;
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* Like run_cmd, but a non-zero exit is a failure of the current test, with the output. */
#define HARNESS(...)                                                                       \
    do {                                                                                   \
        int rc_ = run_cmd(__VA_ARGS__);                                                    \
        if (rc_ != 0) {                                                                    \
            t_failed++;                                                                    \
            fprintf(stderr, "  %s:%d: harness command failed (exit %d)\n", __FILE__,       \
                    __LINE__, rc_);                                                        \
        }                                                                                  \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint8_t rng_byte(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint8_t)(g_rng >> 24);
}

static int write_file(const char *name, const uint8_t *buf, size_t len)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(buf, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

static uint8_t *read_file(const char *name, size_t len)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/%s", g_dir, name);
    uint8_t *buf = calloc(1, len);
    FILE *f = fopen(p, "rb");
    if (!buf || !f) {
        free(buf);
        if (f)
            fclose(f);
        return NULL;
    }
    size_t n = fread(buf, 1, len, f);
    fclose(f);
    if (n != len) {
        free(buf);
        return NULL;
    }
    return buf;
}

static uint8_t *g_write_pat; /* the data of every test write: random bytes */

/* Pattern files: prep.pat (compressible, different in every sector) for the state set-up,
 * write.pat (random) for the writes under test, back.raw (random) as the backing file. */
static int make_pattern_files(void)
{
    uint8_t *p = malloc(IMG_SIZE);
    if (!p)
        return -1;
    for (uint64_t i = 0; i < PAT_SIZE; i++)
        p[i] = (uint8_t)((i >> 9) * 7 + (i & 7));
    int ret = write_file("prep.pat", p, PAT_SIZE);
    g_write_pat = malloc(PAT_SIZE);
    if (!g_write_pat)
        ret = -1;
    for (uint64_t i = 0; ret == 0 && i < PAT_SIZE; i++)
        g_write_pat[i] = rng_byte();
    if (ret == 0)
        ret = write_file("write.pat", g_write_pat, PAT_SIZE);
    for (uint64_t i = 0; ret == 0 && i < IMG_SIZE; i++)
        p[i] = rng_byte();
    if (ret == 0)
        ret = write_file("back.raw", p, IMG_SIZE);
    free(p);
    return ret;
}

static struct qcow2_image *open_image(const char *name, bool read_only)
{
    char p[4400], err[QCOW2_ERROR_MAX] = "";
    snprintf(p, sizeof(p), "%s/%s", g_dir, name);
    struct qcow2_open_opts opts;
    opts = QCOW2_OPEN_OPTS_INIT;
    opts.format = QCOW2_FORMAT_QCOW2;
    opts.read_only = read_only;
    struct qcow2_image *img = NULL;
    int ret = qcow2_open(p, &opts, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "opening %s: %s", name, err);
    return ret == 0 ? img : NULL;
}

/* L2 entry and bitmap of guest `offset`, read through the L2 cache (0, 0 without a table). */
static int l2_entry_at(struct qcow2_image *img, uint64_t offset, uint64_t *entry,
                       uint64_t *bitmap)
{
    void *slice;
    uint64_t idx;
    *entry = *bitmap = 0;
    pthread_mutex_lock(&img->lock);
    int ret = cluster_get_l2_slice(img, offset, false, &slice, &idx);
    if (ret == 0 && slice) {
        *entry = l2_get_entry(img, slice, idx);
        *bitmap = l2_get_bitmap(img, slice, idx);
        cache_put(img->l2_cache, &slice);
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}

struct check_out {
    int status;
    long long leaks, corruptions, check_errors;
};

static long long json_field(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : 0;
}

/* Our own check of `name`, reported as qemu-img check's exit status would be. */
static struct check_out our_check(const char *name)
{
    struct check_out r = {.status = -1};
    struct qcow2_image *img = open_image(name, true);
    if (!img)
        return r;
    struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
    if (qcow2_check(img, 0, &res, NULL, NULL) == 0) {
        r.leaks = res.leaks;
        r.corruptions = res.corruptions;
        r.check_errors = res.check_errors;
        r.status = res.check_errors ? 1 : res.corruptions ? 2 : res.leaks ? 3 : 0;
    }
    qcow2_close(img);
    return r;
}

/* Under QCOW2_TEST_NO_QEMU_CHECK=1 (make check-asan, wl_qemu_checks_wanted) the sanitized
 * tree checks our records, entries and data, and leaves QEMU's side of each case (its own
 * writes, its check, its compare) to the normal tree, which runs every case through it. */
static struct check_out qemu_check(const char *name)
{
    struct check_out r = {.status = -1};
    if (!wl_qemu_checks_wanted())
        return our_check(name);
    char cmd[8400];
    snprintf(cmd, sizeof(cmd), "qemu-img check --output=json '%s/%s' 2>/dev/null", g_dir, name);
    FILE *f = popen(cmd, "r");
    if (!f)
        return r;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    int st = pclose(f);
    r.status = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
    r.leaks = json_field(buf, "leaks");
    r.corruptions = json_field(buf, "corruptions");
    r.check_errors = json_field(buf, "check-errors");
    return r;
}

#define CHECK_CLEAN(name)                                                                  \
    do {                                                                                   \
        struct check_out c_ = qemu_check(name);                                            \
        CHECK_MSG(c_.status == 0 && c_.leaks == 0 && c_.corruptions == 0 &&                \
                      c_.check_errors == 0,                                                \
                  "qemu-img check %s: exit %d, %lld leaks, %lld corruptions, %lld errors", \
                  name, c_.status, c_.leaks, c_.corruptions, c_.check_errors);             \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* The scenario engine. */

/* One write case: a request in its own region, what it must prepare and (optionally) the
 * entry flags and bitmap it must leave in the region's first cluster. */
struct wcase {
    const char *label;
    uint32_t off, len;
    const struct meta_expect *m; /* MAX_METAS entries, nb_clusters 0 ends early */
    bool check_after;
    uint64_t flags_after;  /* entry & ~L2E_OFFSET_MASK of cluster 0 */
    uint64_t bitmap_after; /* bitmap of cluster 0 (extended L2) */
    bool offset_kept;      /* cluster 0 keeps its host cluster */
};

static const char *l2_name(bool ext)
{
    return ext ? "ext" : "std";
}

/* Create the image and put every region in state `st`. */
static void build_image(const char *name, bool ext, enum state st, bool backing,
                        unsigned nb_cases)
{
    HARNESS("cd '%s' && rm -f '%s' && qemu-img create -q -f qcow2 -o cluster_size=%u,"
            "extended_l2=%s%s '%s' %llu",
            g_dir, name, CS, ext ? "on" : "off",
            backing ? ",backing_file=back.raw,backing_fmt=raw" : "", name, ull(IMG_SIZE));
    static char cmds[60000], args[80000];
    size_t n = 0;
    for (unsigned i = 0; i < nb_cases; i++)
        n += shape_prep_commands(cmds + n, sizeof(cmds) - n, st, ext, (uint64_t)i * REGION,
                                 "-s prep.pat");
    wl_io_args(args, sizeof(args), cmds);
    if (n)
        HARNESS("cd '%s' && qemu-io -f qcow2%s '%s' >/dev/null", g_dir, args, name);
    if (st == ST_SHARED || st == ST_SHARED_PARTIAL)
        HARNESS("cd '%s' && qemu-img snapshot -c snap '%s'", g_dir, name);
}

/* The harness itself: the regions are in the state the table assumes. */
static void verify_pre_state(struct qcow2_image *img, bool ext, enum state st,
                             unsigned nb_cases)
{
    for (unsigned i = 0; i < nb_cases; i++) {
        uint64_t r = (uint64_t)i * REGION, host_rank0 = 0;
        for (unsigned k = 0; k < 4; k++) {
            struct pre_state p = k < 3 ? pre_state_of(st, ext, k) : (struct pre_state){0};
            uint64_t e, b;
            CHECK(l2_entry_at(img, r + k * CS, &e, &b) == 0);
            uint64_t host = e & L2E_OFFSET_MASK;
            bool ok = (host != 0 && !(e & QCOW2_OFLAG_COMPRESSED)) == p.host &&
                      ((e & QCOW2_OFLAG_COPIED) != 0) == p.copied &&
                      ((e & QCOW2_OFLAG_COMPRESSED) != 0) == p.compressed &&
                      (p.compressed || ((e & QCOW2_OFLAG_ZERO) != 0) == p.zero_flag) &&
                      b == p.bitmap;
            if (ok && p.host_rank == 0)
                host_rank0 = host;
            CHECK_MSG(ok, "%s %s region %u cluster %u: set-up left entry 0x%016llx bitmap "
                          "0x%016llx", l2_name(ext), state_names[st], i, k, ull(e), ull(b));
        }
        for (unsigned k = 0; k < 3 && host_rank0; k++) {
            struct pre_state p = pre_state_of(st, ext, k);
            uint64_t e, b;
            l2_entry_at(img, r + k * CS, &e, &b);
            if (p.host_rank > 0)
                CHECK_MSG((e & L2E_OFFSET_MASK) == host_rank0 + (uint64_t)p.host_rank * CS,
                          "%s %s region %u cluster %u: host clusters not in the assumed order",
                          l2_name(ext), state_names[st], i, k);
        }
    }
}

/* Step 1: the records cluster_prepare_write makes, compared with the expectation. */
static void probe_records(struct qcow2_image *img, const char *what, uint64_t r,
                          const struct wcase *c)
{
    struct l2_meta got[MAX_METAS + 1];
    unsigned n = 0;
    uint64_t pos = r + c->off, end = pos + c->len;
    pthread_mutex_lock(&img->lock);
    while (pos < end && n <= MAX_METAS) {
        uint64_t bytes = end - pos;
        int ret;
        do /* as write_part: nothing is in flight here, so this returns at once */
            ret = cluster_wait_dependencies(img, pos, &bytes, false);
        while (ret == -EAGAIN);
        if (ret == 0)
            ret = cluster_prepare_write(img, pos, &bytes, &got[n], false);
        if (ret < 0) {
            CHECK_MSG(ret == 0, "%s: cluster_prepare_write at 0x%llx: %s", what, ull(pos),
                      qcow2_error(img));
            break;
        }
        CHECK_MSG(bytes > 0, "%s: empty part", what);
        if (bytes == 0)
            break;
        pos += bytes;
        n++;
    }
    unsigned want = 0;
    while (want < MAX_METAS && c->m[want].nb_clusters)
        want++;
    CHECK_MSG(n == want, "%s: %u records, expected %u", what, n, want);
    for (unsigned i = 0; i < n && i < want; i++) {
        const struct l2_meta *m = &got[i];
        const struct meta_expect *x = &c->m[i];
        bool same = m->offset == r + x->at && m->nb_clusters == x->nb_clusters &&
                    m->keep_old_clusters == x->keep_old &&
                    m->cow_start.offset == x->cow_start.offset &&
                    m->cow_start.nb_bytes == x->cow_start.nb_bytes &&
                    m->cow_end.offset == x->cow_end.offset &&
                    m->cow_end.nb_bytes == x->cow_end.nb_bytes &&
                    m->needs_link == x->needs_link && !m->prealloc;
        CHECK_MSG(same,
                  "%s record %u:\n"
                  "      got      {0x%llx, %u, %s, {0x%llx, 0x%llx}, {0x%llx, 0x%llx}, %s}\n"
                  "      expected {0x%x, %u, %s, {0x%x, 0x%x}, {0x%x, 0x%x}, %s}",
                  what, i, ull(m->offset - r), m->nb_clusters,
                  m->keep_old_clusters ? "KEEP" : "NEW", ull(m->cow_start.offset),
                  ull(m->cow_start.nb_bytes), ull(m->cow_end.offset), ull(m->cow_end.nb_bytes),
                  m->needs_link ? "LINK" : "NO_LINK", x->at, x->nb_clusters,
                  x->keep_old ? "KEEP" : "NEW", x->cow_start.offset, x->cow_start.nb_bytes,
                  x->cow_end.offset, x->cow_end.nb_bytes, x->needs_link ? "LINK" : "NO_LINK");
        /* The invariants of struct l2_meta. */
        CHECK(m->cow_start.offset + m->cow_start.nb_bytes <= m->cow_end.offset);
        CHECK(m->cow_end.offset + m->cow_end.nb_bytes <= (uint64_t)m->nb_clusters * CS);
        CHECK(offset_into_cluster(img, m->offset) == 0);
        if (!m->keep_old_clusters)
            CHECK(offset_into_cluster(img, m->alloc_offset) == 0 && m->alloc_offset != 0);
    }
    while (n > 0)
        cluster_abort(img, &got[--n]);
    pthread_mutex_unlock(&img->lock);
}

/* QEMU does the writes of `cases` on `oracle` (a copy of the starting image): every L2 entry
 * and bitmap of each case's four clusters must equal ours in `name`. */
static void compare_with_qemu(const char *name, const char *oracle, const char *tag,
                              const struct wcase *cases, unsigned nb,
                              uint64_t pre_e[][4], uint64_t pre_b[][4])
{
    static char cmds[60000];
    size_t n = 0;
    for (unsigned i = 0; i < nb && n < sizeof(cmds); i++)
        n += (size_t)snprintf(cmds + n, sizeof(cmds) - n, " -c 'write -q -s write.pat %llu %u'",
                              ull((uint64_t)i * REGION + cases[i].off), cases[i].len);
    HARNESS("cd '%s' && qemu-io -f qcow2%s '%s' >/dev/null", g_dir, cmds, oracle);
    struct qcow2_image *ours = open_image(name, true), *qemu = open_image(oracle, true);
    for (unsigned i = 0; ours && qemu && i < nb; i++) {
        uint64_t r = (uint64_t)i * REGION;
        for (unsigned k = 0; k < 4; k++) {
            uint64_t oe, ob, qe, qb;
            CHECK(l2_entry_at(ours, r + k * CS, &oe, &ob) == 0);
            CHECK(l2_entry_at(qemu, r + k * CS, &qe, &qb) == 0);
            CHECK_MSG(oe == qe && ob == qb,
                      "%s %s cluster %u: we leave entry 0x%016llx bitmap 0x%016llx, QEMU "
                      "0x%016llx 0x%016llx (before: 0x%016llx 0x%016llx)",
                      tag, cases[i].label, k, ull(oe), ull(ob), ull(qe), ull(qb),
                      ull(pre_e[i][k]), ull(pre_b[i][k]));
        }
    }
    if (ours)
        qcow2_close(ours);
    if (qemu)
        qcow2_close(qemu);
}

/* Run `nb` cases, case i in region i, on an image in state `st`. */
static void run_cases(bool ext, enum state st, bool backing, const struct wcase *cases,
                      unsigned nb)
{
    char tag[96], name[128], probe[128], oracle[128], model[128];
    snprintf(tag, sizeof(tag), "%s-%s-%s", l2_name(ext), state_names[st],
             backing ? "backing" : "alone");
    snprintf(name, sizeof(name), "%s.qcow2", tag);
    snprintf(probe, sizeof(probe), "%s.probe.qcow2", tag);
    snprintf(oracle, sizeof(oracle), "%s.qemu.qcow2", tag);
    snprintf(model, sizeof(model), "%s.model.raw", tag);
    assert(nb <= MAX_CASES);

    build_image(name, ext, st, backing, nb);
    if (t_failed)
        return;
    HARNESS("cd '%s' && cp '%s' '%s' && cp '%s' '%s' && qemu-img convert -O raw '%s' '%s'",
            g_dir, name, probe, name, oracle, name, model);
    uint8_t *expect = read_file(model, IMG_SIZE);
    CHECK_MSG(expect != NULL, "reading %s", model);
    if (!expect)
        return;

    /* Step 1: records, on a copy. */
    struct qcow2_image *img = open_image(probe, false);
    if (img) {
        verify_pre_state(img, ext, st, nb);
        for (unsigned i = 0; i < nb; i++) {
            char what[256];
            snprintf(what, sizeof(what), "%s %s", tag, cases[i].label);
            probe_records(img, what, (uint64_t)i * REGION, &cases[i]);
        }
        CHECK(qcow2_close(img) == 0);
    }

    /* Step 2: the writes, through the public API. */
    uint64_t pre_e[MAX_CASES][4], pre_b[MAX_CASES][4];
    img = open_image(name, false);
    if (!img) {
        free(expect);
        return;
    }
    for (unsigned i = 0; i < nb; i++) {
        const struct wcase *c = &cases[i];
        uint64_t r = (uint64_t)i * REGION;
        bool link = false;
        for (unsigned j = 0; j < MAX_METAS && c->m[j].nb_clusters; j++)
            link |= c->m[j].needs_link;
        for (unsigned k = 0; k < 4; k++)
            l2_entry_at(img, r + k * CS, &pre_e[i][k], &pre_b[i][k]);
        int64_t fsize = file_size(img->file);
        int ret = qcow2_pwrite(img, g_write_pat, c->len, r + c->off, 0);
        CHECK_MSG(ret == 0, "%s %s: qcow2_pwrite: %s", tag, c->label, qcow2_error(img));
        memcpy(expect + r + c->off, g_write_pat, c->len);
        if (!link) { /* a plain overwrite: no metadata changes, nothing allocated */
            for (unsigned k = 0; k < 4; k++) {
                uint64_t e, b;
                l2_entry_at(img, r + k * CS, &e, &b);
                CHECK_MSG(e == pre_e[i][k] && b == pre_b[i][k],
                          "%s %s: cluster %u changed without a link", tag, c->label, k);
            }
            CHECK_MSG(file_size(img->file) == fsize, "%s %s: the file grew", tag, c->label);
        }
        if (c->check_after) {
            uint64_t e, b;
            l2_entry_at(img, r, &e, &b);
            CHECK_MSG((e & ~L2E_OFFSET_MASK) == c->flags_after,
                      "%s %s: entry flags 0x%016llx, expected 0x%016llx", tag, c->label,
                      ull(e & ~L2E_OFFSET_MASK), ull(c->flags_after));
            CHECK_MSG(b == c->bitmap_after, "%s %s: bitmap 0x%016llx, expected 0x%016llx", tag,
                      c->label, ull(b), ull(c->bitmap_after));
            CHECK_MSG(((e & L2E_OFFSET_MASK) == (pre_e[i][0] & L2E_OFFSET_MASK)) ==
                          c->offset_kept,
                      "%s %s: host cluster %s, expected it %s", tag, c->label,
                      (e & L2E_OFFSET_MASK) == (pre_e[i][0] & L2E_OFFSET_MASK) ? "kept"
                                                                               : "replaced",
                      c->offset_kept ? "kept" : "replaced");
        }
    }
    CHECK_MSG(qcow2_close(img) == 0, "%s: close", tag);

    /* Step 3: QEMU does the same writes and leaves the same entries. */
    if (wl_qemu_checks_wanted())
        compare_with_qemu(name, oracle, tag, cases, nb, pre_e, pre_b);
    /* Step 4: consistency and data. */
    struct qcow2_image *ours = open_image(name, true);
    if (ours) {
        uint8_t *got = malloc(IMG_SIZE);
        CHECK(got && qcow2_pread(ours, got, IMG_SIZE, 0) == 0);
        if (got && memcmp(got, expect, IMG_SIZE) != 0) {
            uint64_t at = 0;
            while (got[at] == expect[at])
                at++;
            CHECK_MSG(false, "%s: our read differs from the model at 0x%llx (case %llu)", tag,
                      ull(at), ull(at / REGION));
        }
        free(got);
        qcow2_close(ours);
    }
    CHECK_CLEAN(name);
    if (wl_qemu_checks_wanted()) {
        CHECK(write_file(model, expect, IMG_SIZE) == 0);
        int rc = run_cmd("cd '%s' && qemu-img compare -q -f qcow2 -F raw '%s' '%s'", g_dir,
                         name, model);
        CHECK_MSG(rc == 0, "%s: qemu-img compare with the model: exit %d", tag, rc);
        rc = run_cmd("cd '%s' && qemu-img compare -q -f qcow2 -F raw '%s' '%s'", g_dir, oracle,
                     model);
        CHECK_MSG(rc == 0, "%s: harness: QEMU's own image differs from the model (exit %d)",
                  tag, rc);
    }
    free(expect);
    if (!t_failed && !getenv("KEEP_TMP"))
        run_cmd("cd '%s' && rm -f '%s' '%s' '%s' '%s'", g_dir, name, probe, oracle, model);
}

/* The whole table for one L2 kind and state. */
static void test_prepare_write_table(bool ext, enum state st, bool backing)
{
    struct wcase cases[G_COUNT];
    unsigned nb = 0;
    for (size_t i = 0; i < NB_ROWS; i++) {
        if (rows[i].ext != ext || rows[i].state != st)
            continue;
        enum geom g = rows[i].geom;
        cases[nb++] = (struct wcase){.label = geoms[g].name, .off = geoms[g].off,
                                     .len = geoms[g].len, .m = rows[i].m};
    }
    CHECK_MSG(nb == G_COUNT, "the table has %u rows for %s %s", nb, l2_name(ext),
              state_names[st]);
    run_cases(ext, st, backing, cases, nb);
}

/* ------------------------------------------------------------------------------------------ */
/* The rules one by one, with the L2 entry they leave. */

#define ONE(...) ((const struct meta_expect[MAX_METAS]){__VA_ARGS__})
#define COPIED QCOW2_OFLAG_COPIED

/* Rewriting data that is there already (NORMAL subclusters of a COPIED cluster) is a plain
 * overwrite: no record to link, no COW, no metadata write. */
static void test_overwrite_of_allocated_subcluster_changes_no_metadata(bool backing)
{
    const struct wcase ext_cases[] = {
        {"sc3 (allocated) middle", 0x1a00, 0x3e8,
         ONE({0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}), true, COPIED,
         PARTIAL_BITMAP, true},
        {"sc2-3 (allocated) whole", 0x1000, 0x1000,
         ONE({0x0, 1, KEEP, {0x1000, 0x0}, {0x2000, 0x0}, NO_LINK}), true, COPIED,
         PARTIAL_BITMAP, true},
    };
    run_cases(EXT, ST_PARTIAL, backing, ext_cases, 2);
    const struct wcase std_cases[] = {
        {"mid-cluster", 0x1a00, 0x3e8,
         ONE({0x0, 1, KEEP, {0x1a00, 0x0}, {0x1de8, 0x0}, NO_LINK}), true, COPIED, 0, true},
    };
    run_cases(STD, ST_NORMAL, backing, std_cases, 1);
}

/* Writing an unallocated subcluster of a COPIED cluster keeps the cluster, copies only the
 * partial head and tail subclusters and ORs their bits into the bitmap; the zero subclusters
 * 10-11 and the other allocated ones are untouched. */
static void test_partial_write_to_unallocated_subcluster_of_copied_cluster_cows_only_edges(
    bool backing)
{
    const struct wcase cases[] = {
        {"sc5+0x64 .. sc7+0x12c", 0x2864, 0x10c8,
         ONE({0x0, 1, KEEP, {0x2800, 0x64}, {0x392c, 0x6d4}, LINK}), true, COPIED,
         PARTIAL_BITMAP | QCOW2_SC_ALLOC_RANGE(5, 8), true},
        {"sc0 head, aligned start", 0x0, 0x100,
         ONE({0x0, 1, KEEP, {0x0, 0x0}, {0x100, 0x700}, LINK}), true, COPIED,
         PARTIAL_BITMAP | QCOW2_SC_ALLOC(0), true},
        /* ends in allocated sc2: no tail COW */
        {"sc1+0x10 .. sc2+0x10", 0x810, 0x800,
         ONE({0x0, 1, KEEP, {0x800, 0x10}, {0x1010, 0x0}, LINK}), true, COPIED,
         PARTIAL_BITMAP | QCOW2_SC_ALLOC(1), true},
        /* over zero subclusters 10-11: they become allocated, no longer zero */
        {"sc10+0x100 .. sc11+0x100", 0x5100, 0x800,
         ONE({0x0, 1, KEEP, {0x5000, 0x100}, {0x5900, 0x700}, LINK}), true, COPIED,
         (PARTIAL_BITMAP | QCOW2_SC_ALLOC_RANGE(10, 12)) & ~QCOW2_SC_ZERO_RANGE(10, 12), true},
    };
    run_cases(EXT, ST_PARTIAL, backing, cases, 4);
}

/* A new cluster for an unallocated one: only the touched subclusters get allocated, the COW
 * covers the rest of the first and last of them (from the backing file or zeros). */
static void test_partial_write_allocates_only_touched_subclusters(bool backing)
{
    const struct wcase cases[] = {
        {"sc3+0x200 .. sc7+0x600", 0x1a00, 0x2400,
         ONE({0x0, 1, NEW, {0x1800, 0x200}, {0x3e00, 0x200}, LINK}), true, COPIED,
         QCOW2_SC_ALLOC_RANGE(3, 8), false},
        {"sc31 tail", 0xfa00, 0x600,
         ONE({0x0, 1, NEW, {0xf800, 0x200}, {0x10000, 0x0}, LINK}), true, COPIED,
         QCOW2_SC_ALLOC(31), false},
    };
    run_cases(EXT, ST_UNALLOC, backing, cases, 2);
}

/* Zero subclusters outside the written ones stay zero, whether the cluster is new
 * (ZERO_PLAIN) or kept (ZERO_ALLOC). */
static void test_zero_subclusters_outside_the_write_stay_zero(bool backing)
{
    const struct wcase plain[] = {
        {"sc3 middle", 0x1a00, 0x3e8,
         ONE({0x0, 1, NEW, {0x1800, 0x200}, {0x1de8, 0x218}, LINK}), true, COPIED,
         (QCOW2_SC_ALL_ZERO & ~QCOW2_SC_ZERO(3)) | QCOW2_SC_ALLOC(3), false},
    };
    run_cases(EXT, ST_ZERO_PLAIN, backing, plain, 1);
    const struct wcase alloc[] = {
        {"sc3 middle", 0x1a00, 0x3e8,
         ONE({0x0, 1, KEEP, {0x1800, 0x200}, {0x1de8, 0x218}, LINK}), true, COPIED,
         (QCOW2_SC_ALL_ZERO & ~QCOW2_SC_ZERO(3)) | QCOW2_SC_ALLOC(3), true},
    };
    run_cases(EXT, ST_ZERO_ALLOC, backing, alloc, 1);
    /* Standard L2: the whole cluster is copied (zeros) and the zero flag goes. */
    const struct wcase std_alloc[] = {
        {"mid-cluster", 0x1a00, 0x3e8,
         ONE({0x0, 1, KEEP, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}), true, COPIED, 0, true},
    };
    run_cases(STD, ST_ZERO_ALLOC, backing, std_alloc, 1);
}

/* A compressed cluster is replaced by a new one: the whole cluster is copied. */
static void test_compressed_target_cows_the_whole_cluster(bool backing)
{
    const struct wcase ext_cases[] = {
        {"sc3 middle", 0x1a00, 0x3e8,
         ONE({0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}), true, COPIED,
         QCOW2_SC_ALL_ALLOC, false},
    };
    run_cases(EXT, ST_COMPRESSED, backing, ext_cases, 1);
    const struct wcase std_cases[] = {
        {"mid-cluster", 0x1a00, 0x3e8,
         ONE({0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}), true, COPIED, 0, false},
    };
    run_cases(STD, ST_COMPRESSED, backing, std_cases, 1);
}

/* A shared cluster (refcount 2 after a snapshot) gets a new cluster; with extended L2 the COW
 * covers the written subclusters and everything from the first to the last allocated one
 * (2..29), not the unallocated edges. */
static void test_shared_cluster_cow_starts_at_first_allocated_subcluster(bool backing)
{
    const struct wcase cases[] = {
        {"sc5+0x64 .. sc7+0x64", 0x2864, 0x1000,
         ONE({0x0, 1, NEW, {0x1000, 0x1864}, {0x3864, 0xb79c}, LINK}), true, COPIED,
         QCOW2_SC_ALLOC_RANGE(2, 30), false},
        {"sc0 middle (before the first allocated)", 0x100, 0x200,
         ONE({0x0, 1, NEW, {0x0, 0x100}, {0x300, 0xed00}, LINK}), true, COPIED,
         QCOW2_SC_ALLOC_RANGE(0, 30), false},
        {"sc31 middle (after the last allocated)", 0xf900, 0x100,
         ONE({0x0, 1, NEW, {0x1000, 0xe900}, {0xfa00, 0x600}, LINK}), true, COPIED,
         QCOW2_SC_ALLOC_RANGE(2, 32), false},
    };
    run_cases(EXT, ST_SHARED_PARTIAL, backing, cases, 3);
    const struct wcase std_cases[] = {
        {"mid-cluster", 0x1a00, 0x3e8,
         ONE({0x0, 1, NEW, {0x0, 0x1a00}, {0x1de8, 0xe218}, LINK}), true, COPIED, 0, false},
    };
    run_cases(STD, ST_SHARED, backing, std_cases, 1);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    if (run_cmd("command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1")) {
        printf("SKIP: qemu-img/qemu-io not found\n0 passed, 0 failed\n");
        return 77;
    }
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_cluster.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (make_pattern_files() < 0) {
        fprintf(stderr, "cannot write the pattern files in %s\n", g_dir);
        return 1;
    }

    char label[160];
    for (int b = 0; b < 2; b++) {
        const char *bk = b ? "with backing file" : "no backing file";
#define NAMED(fn)                                                                          \
    do {                                                                                   \
        snprintf(label, sizeof(label), "%s (%s)", #fn + strlen("test_"), bk);             \
        RUN(label, fn(b));                                                                 \
    } while (0)
        NAMED(test_overwrite_of_allocated_subcluster_changes_no_metadata);
        NAMED(test_partial_write_to_unallocated_subcluster_of_copied_cluster_cows_only_edges);
        NAMED(test_partial_write_allocates_only_touched_subclusters);
        NAMED(test_zero_subclusters_outside_the_write_stay_zero);
        NAMED(test_compressed_target_cows_the_whole_cluster);
        NAMED(test_shared_cluster_cow_starts_at_first_allocated_subcluster);
#undef NAMED
    }
    for (int ext = 0; ext < 2; ext++)
        for (int st = 0; st < ST_COUNT; st++) {
            if (!ext && (st == ST_PARTIAL || st == ST_SHARED_PARTIAL))
                continue;
            for (int b = 0; b < 2; b++) {
                snprintf(label, sizeof(label),
                         "prepare_write_table (%s L2, %s, %s: %d requests)", l2_name(ext),
                         state_names[st], b ? "backing file" : "no backing", G_COUNT);
                RUN(label, test_prepare_write_table(ext, (enum state)st, b));
            }
        }

    if (!getenv("KEEP_TMP"))
        run_cmd("rm -rf '%s'", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
