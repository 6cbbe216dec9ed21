/* compact.c - moving clusters from the end of the image file into free clusters lower down,
 * then truncating the file (qcow2 compact; qemu-img has no equivalent).
 * Owns the map from host cluster to what references it: an L2 entry, an L1 entry (active or a
 * snapshot's), a refcount table entry, the header. Data clusters and L2 tables may have many
 * referrers (internal snapshots share them): a moved one keeps its refcount and every
 * referrer is switched. Every move is crash-safe: the new cluster's refcount and its copy are
 * flushed before any reference is switched, the switches are flushed before the old cluster
 * is freed; a crash in between leaves both copies valid, each with the full refcount (leaks
 * at worst). Snapshot L1 tables and the snapshot table are written again low down by
 * snapshot.c, the bitmaps' storage by bitmap.c; compressed clusters stay where they are.
 * Calls cache.c, refcount.c, header_write.c, file.c, bitmap.c and snapshot.c; the guest view
 * of the image and of every snapshot never changes. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Moves of data clusters or L2 tables done between two rounds of flushes. */
#define COMPACT_BATCH 1024

/* Who references a host cluster. Clusters referenced from structures whose pointers we know
 * how to switch move; everything else is PINNED. */
enum owner_kind {
    OWN_FREE = 0,
    OWN_PINNED,   /* header, compressed data, snapshot and bitmap tables, unknown */
    OWN_DATA,     /* data cluster of L2 entry `idx` of the table of L1 entry `l1i` */
    OWN_L2,       /* the L2 table of L1 entry `l1i` */
    OWN_REFBLOCK, /* the refcount block of refcount table entry `idx` */
    OWN_L1,       /* a cluster of the active L1 table */
    OWN_REFTABLE, /* a cluster of the refcount table */
};

/* `shared`: DATA or L2 with referrers other than the one (l1i, idx) names (a snapshot's
 * tables): a move switches them all by a scan (repoint_shared_*), `idx` then holding the
 * destination while `moving`. */
struct owner {
    uint8_t kind;
    uint8_t shared;
    uint8_t moving;
    uint32_t l1i;
    uint64_t idx;
};

struct compact {
    struct qcow2_image *img;
    struct owner *own;
    uint64_t nb;  /* clusters in the file */
    uint64_t len; /* bytes in the file */
    uint8_t *buf;
    uint64_t top; /* no cluster above this one is in use */
    uint64_t moved, to_move;
    qcow2_progress_fn progress;
    void *opaque;
};

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* ------------------------------------------------------------------------------------------ */
/* The owner map. */

static int set_owner(struct compact *c, uint64_t host, enum owner_kind kind, uint64_t l1i,
                     uint64_t idx, bool shared)
{
    uint64_t k = host >> c->img->cluster_bits;
    if (k >= c->nb)
        return set_error(c->img, -EIO, "host offset 0x%llx lies past the end of the file",
                         ull(host));
    struct owner *o = &c->own[k];
    if (o->kind == OWN_FREE)
        *o = (struct owner){.kind = (uint8_t)kind, .shared = shared, .l1i = (uint32_t)l1i,
                            .idx = idx};
    else if (o->kind == kind && (kind == OWN_DATA || kind == OWN_L2))
        o->shared = 1; /* a second referrer */
    else
        o->kind = OWN_PINNED;
    return 0;
}

static int pin_range(struct compact *c, uint64_t offset, uint64_t len)
{
    struct qcow2_image *img = c->img;
    for (uint64_t k = offset >> img->cluster_bits;
         len && k <= (offset + len - 1) >> img->cluster_bits; k++) {
        if (k >= c->nb)
            return set_error(img, -EIO, "host offset 0x%llx lies past the end of the file",
                             ull(k << img->cluster_bits));
        c->own[k].kind = OWN_PINNED;
    }
    return 0;
}

static int map_l2_table(struct compact *c, uint64_t l1i, uint64_t l2, bool shared)
{
    struct qcow2_image *img = c->img;
    size_t slice_bytes = cache_table_size(img->l2_cache);
    for (uint64_t s = 0; s < img->cluster_size; s += slice_bytes) {
        const void *slice;
        int ret = cache_peek(img->l2_cache, l2 + s, &slice);
        if (ret < 0)
            return ret;
        uint64_t first = s / img->l2_entry_size;
        for (uint64_t j = 0; j < img->l2_slice_size; j++) {
            uint64_t e = l2_get_entry(img, slice, j);
            if (e & QCOW2_OFLAG_COMPRESSED) {
                uint64_t coff, clen;
                cluster_compressed_range(img, e, &coff, &clen);
                ret = pin_range(c, coff, clen);
            } else if (e & L2E_OFFSET_MASK) {
                ret = set_owner(c, e & L2E_OFFSET_MASK, OWN_DATA, l1i, first + j, shared);
            }
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

static int map_table(struct compact *c, uint64_t offset, uint64_t bytes, enum owner_kind kind)
{
    struct qcow2_image *img = c->img;
    for (uint64_t o = 0; o < bytes; o += img->cluster_size) {
        int ret = set_owner(c, offset + o, kind, 0, o >> img->cluster_bits, false);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* The L2 tables of the snapshots and what they reference. A table also in the active L1 (or
 * in an earlier snapshot) was mapped already: it gains a referrer, its entries none (the
 * refcounts count L1 paths, but the entries are in one place). */
static int map_snapshots(struct compact *c)
{
    struct qcow2_image *img = c->img;
    const struct snapshot_table *t;
    int ret = snapshot_table_get(img, &t);
    if (ret == 0 && t->nb)
        ret = pin_range(c, img->hdr.snapshots_offset, t->size);
    for (uint32_t i = 0; i < t->nb && ret == 0; i++) {
        uint64_t *l1 = NULL;
        ret = pin_range(c, t->sn[i].l1_table_offset, (uint64_t)t->sn[i].l1_size * 8);
        if (ret == 0)
            ret = snapshot_read_l1(img, &t->sn[i], &l1);
        for (uint32_t j = 0; j < t->sn[i].l1_size && ret == 0; j++) {
            uint64_t l2 = l1[j] & L1E_OFFSET_MASK;
            if (!l2)
                continue;
            uint64_t k = l2 >> img->cluster_bits;
            bool seen = k < c->nb && c->own[k].kind == OWN_L2;
            ret = set_owner(c, l2, OWN_L2, 0, 0, true);
            if (ret == 0 && !seen)
                ret = map_l2_table(c, 0, l2, true);
        }
        free(l1);
    }
    return ret;
}

/* Find the owner of every cluster; then pin what the refcounts say is used but nobody owns
 * (leaks, structures we do not move) and refuse what is owned but has no refcount. */
static int build_owner_map(struct compact *c)
{
    struct qcow2_image *img = c->img;
    memset(c->own, 0, c->nb * sizeof(*c->own));
    int ret = set_owner(c, 0, OWN_PINNED, 0, 0, false);
    if (ret == 0)
        ret = map_table(c, img->hdr.l1_table_offset, (uint64_t)img->l1_size * 8, OWN_L1);
    if (ret == 0)
        ret = map_table(c, img->hdr.refcount_table_offset, img->refcount_table_size * 8,
                        OWN_REFTABLE);
    for (uint64_t i = 0; i < img->refcount_table_size && ret == 0; i++) {
        uint64_t off = img->refcount_table[i] & REFT_OFFSET_MASK;
        if (off)
            ret = set_owner(c, off, OWN_REFBLOCK, 0, i, false);
    }
    for (uint64_t i = 0; i < img->l1_size && ret == 0; i++) {
        uint64_t l2 = img->l1_table[i] & L1E_OFFSET_MASK;
        if (!l2)
            continue;
        ret = set_owner(c, l2, OWN_L2, i, 0, false);
        if (ret == 0)
            ret = map_l2_table(c, i, l2, false);
    }
    if (ret == 0 && img->hdr.nb_snapshots)
        ret = map_snapshots(c);
    for (uint64_t k = 0; k < c->nb && ret == 0; k++) {
        uint64_t rc;
        ret = refcount_get(img, k, &rc);
        if (ret < 0)
            break;
        uint8_t kind = c->own[k].kind;
        if (rc == 0 && kind != OWN_FREE)
            ret = signal_corruption(img, "cluster at 0x%llx is in use but has refcount 0",
                                    ull(k << img->cluster_bits));
        else if ((rc > 1 && kind != OWN_DATA && kind != OWN_L2) || rc > INT32_MAX ||
                 (rc == 1 && kind == OWN_FREE))
            c->own[k].kind = OWN_PINNED;
    }
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Moves. */

static void progress_step(struct compact *c, uint64_t n)
{
    c->moved += n;
    if (c->progress && c->to_move)
        c->progress(c->opaque, MIN(c->moved, c->to_move), c->to_move);
}

/* Copy host clusters [src, src + n) to dst (through the file, which is flushed below). */
static int copy_clusters(struct compact *c, uint64_t src, uint64_t dst, uint64_t n)
{
    struct qcow2_image *img = c->img;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = i << img->cluster_bits;
        int ret = file_pread(img->file, c->buf, img->cluster_size, src + off);
        if (ret == 0)
            ret = file_pwrite(img->file, c->buf, img->cluster_size, dst + off);
        if (ret < 0)
            return set_error(img, ret, "copying the cluster at 0x%llx failed: %s",
                             ull(src + off), strerror(-ret));
    }
    return 0;
}

/* Take `n` clusters at `dst` (free in the map) with refcount 1. 0 when one turned out used
 * (a refcount block the allocation itself created): the map then pins it. */
static int claim(struct compact *c, uint64_t dst, uint64_t n)
{
    struct qcow2_image *img = c->img;
    int64_t got = refcount_alloc_clusters_at(img, dst, n);
    if (got < 0)
        return (int)got;
    if ((uint64_t)got == n)
        return 1;
    if (got > 0)
        refcount_free_clusters(img, dst, (uint64_t)got << img->cluster_bits);
    c->own[(dst >> img->cluster_bits) + (uint64_t)got].kind = OWN_PINNED;
    return 0;
}

static void move_owner(struct compact *c, uint64_t src_k, uint64_t dst_k)
{
    c->own[dst_k] = c->own[src_k];
    c->own[src_k] = (struct owner){ .kind = OWN_FREE };
}

struct move {
    uint64_t src, dst; /* cluster indexes */
    uint64_t refcount; /* of src, which dst gets */
};

/* The entry's new value, if it points at a shared data cluster on the move. */
static bool moved_data_entry(const struct compact *c, uint64_t e, uint64_t *out)
{
    uint64_t host = e & L2E_OFFSET_MASK;
    if ((e & QCOW2_OFLAG_COMPRESSED) || !host)
        return false;
    const struct owner *o = &c->own[host >> c->img->cluster_bits];
    if (o->kind != OWN_DATA || !o->moving)
        return false;
    *out = (e & ~L2E_OFFSET_MASK) | (o->idx << c->img->cluster_bits);
    return true;
}

/* Switch every L2 entry, in every L2 table, that names a shared data cluster on the move. */
static int repoint_shared_data(struct compact *c)
{
    struct qcow2_image *img = c->img;
    size_t slice_bytes = cache_table_size(img->l2_cache);
    uint64_t *tables = NULL;
    size_t n = 0;
    int ret = snapshot_l2_tables(img, &tables, &n);
    for (size_t t = 0; t < n && ret == 0; t++) {
        for (uint64_t s = 0; s < img->cluster_size && ret == 0; s += slice_bytes) {
            const void *peek;
            ret = cache_peek(img->l2_cache, tables[t] + s, &peek);
            bool hit = false;
            uint64_t e;
            for (uint64_t j = 0; ret == 0 && j < img->l2_slice_size && !hit; j++)
                hit = moved_data_entry(c, l2_get_entry(img, peek, j), &e);
            void *slice;
            if (ret < 0 || !hit || (ret = cache_get(img->l2_cache, tables[t] + s, &slice)) < 0)
                continue;
            for (uint64_t j = 0; j < img->l2_slice_size; j++)
                if (moved_data_entry(c, l2_get_entry(img, slice, j), &e))
                    l2_set_entry(img, slice, j, e);
            cache_mark_dirty(img->l2_cache, slice);
            cache_put(img->l2_cache, &slice);
        }
    }
    free(tables);
    return ret;
}

/* Point the L2 entries of moved data clusters at their new places. */
static int repoint_data(struct compact *c, const struct move *m, unsigned n)
{
    struct qcow2_image *img = c->img;
    uint64_t slice_bytes = cache_table_size(img->l2_cache);
    bool shared = false;
    for (unsigned i = 0; i < n; i++) {
        const struct owner *o = &c->own[m[i].src];
        if (o->shared) {
            shared = true;
            continue;
        }
        uint64_t l2 = img->l1_table[o->l1i] & L1E_OFFSET_MASK;
        uint64_t slice_off = l2 + (o->idx / img->l2_slice_size) * slice_bytes;
        uint64_t j = o->idx % img->l2_slice_size;
        void *slice;
        int ret = cache_get(img->l2_cache, slice_off, &slice);
        if (ret < 0)
            return ret;
        uint64_t e = l2_get_entry(img, slice, j);
        assert((e & L2E_OFFSET_MASK) == m[i].src << img->cluster_bits);
        l2_set_entry(img, slice, j, (e & ~L2E_OFFSET_MASK) | (m[i].dst << img->cluster_bits));
        cache_mark_dirty(img->l2_cache, slice);
        cache_put(img->l2_cache, &slice);
    }
    int ret = shared ? repoint_shared_data(c) : 0;
    return ret < 0 ? ret : cache_flush(img->l2_cache);
}

/* Switch the entries of every snapshot L1 table that name a shared L2 table on the move,
 * each table written in place (an entry is old or new after a crash: both valid), synced. */
static int repoint_snapshot_l1s(struct compact *c)
{
    struct qcow2_image *img = c->img;
    const struct snapshot_table *t;
    int ret = snapshot_table_get(img, &t);
    bool wrote = false;
    for (uint32_t i = 0; ret == 0 && i < t->nb; i++) {
        uint64_t *l1;
        ret = snapshot_read_l1(img, &t->sn[i], &l1);
        if (ret < 0)
            break;
        bool changed = false;
        for (uint32_t j = 0; j < t->sn[i].l1_size; j++) {
            uint64_t l2 = l1[j] & L1E_OFFSET_MASK;
            const struct owner *o = l2 ? &c->own[l2 >> img->cluster_bits] : NULL;
            if (o && o->kind == OWN_L2 && o->moving) {
                l1[j] = (l1[j] & ~L1E_OFFSET_MASK) | (o->idx << img->cluster_bits);
                changed = true;
            }
            be64_put(&l1[j], l1[j]);
        }
        if (changed && (ret = file_pwrite(img->file, l1, (size_t)t->sn[i].l1_size * 8,
                                          t->sn[i].l1_table_offset)) < 0)
            set_error(img, ret, "writing a snapshot L1 table failed: %s", strerror(-ret));
        wrote |= changed;
        free(l1);
    }
    if (ret == 0 && wrote && (ret = file_flush(img->file)) < 0)
        set_error(img, ret, "flush failed: %s", strerror(-ret));
    return ret;
}

/* Point the L1 entries of moved L2 tables at their new places: the whole L1 table is
 * written again, each entry old or new, both valid copies; so are snapshot L1 tables. */
static int repoint_l2(struct compact *c, const struct move *m, unsigned n)
{
    struct qcow2_image *img = c->img;
    bool shared = false;
    for (unsigned i = 0; i < n; i++) {
        const struct owner *o = &c->own[m[i].src];
        if (o->shared) {
            shared = true;
            continue;
        }
        uint64_t e = img->l1_table[o->l1i];
        img->l1_table[o->l1i] = (e & ~L1E_OFFSET_MASK) | (m[i].dst << img->cluster_bits);
    }
    if (shared) {
        for (uint32_t i = 0; i < img->l1_size; i++) {
            uint64_t l2 = img->l1_table[i] & L1E_OFFSET_MASK;
            const struct owner *o = l2 ? &c->own[l2 >> img->cluster_bits] : NULL;
            if (o && o->kind == OWN_L2 && o->moving)
                img->l1_table[i] = (img->l1_table[i] & ~L1E_OFFSET_MASK) |
                                   (o->idx << img->cluster_bits);
        }
    }
    img->l1_dirty = true;
    img->metadata_gen++;
    int ret = header_write_pending_switches(img);
    if (ret == 0 && shared)
        ret = repoint_snapshot_l1s(c);
    for (unsigned i = 0; i < n && ret == 0; i++)
        ret = cache_discard(img->l2_cache, m[i].src << img->cluster_bits);
    return ret;
}

/* One batch of data clusters or L2 tables (one kind): claim and copy all (a shared one gets
 * its full refcount), flush, repoint all, flush, free all, flush. */
static int move_batch(struct compact *c, struct move *m, unsigned n, enum owner_kind kind)
{
    struct qcow2_image *img = c->img;
    int ret = 0;
    for (unsigned i = 0; i < n && ret == 0; i++) {
        uint64_t rc;
        ret = refcount_get(img, m[i].src, &rc);
        m[i].refcount = rc;
        if (ret == 0 && rc > 1)
            ret = refcount_update(img, m[i].dst << img->cluster_bits, img->cluster_size,
                                  (int)(rc - 1));
        if (ret == 0)
            ret = copy_clusters(c, m[i].src << img->cluster_bits,
                                m[i].dst << img->cluster_bits, 1);
        struct owner *o = &c->own[m[i].src];
        if (ret == 0 && o->shared) {
            o->moving = 1;
            o->idx = m[i].dst;
        }
    }
    if (ret == 0)
        ret = cache_flush(img->refcount_cache); /* the claims, then fsync: the copies too */
    if (ret == 0)
        ret = kind == OWN_DATA ? repoint_data(c, m, n) : repoint_l2(c, m, n);
    for (unsigned i = 0; i < n; i++)
        c->own[m[i].src].moving = 0;
    if (ret < 0)
        return ret; /* the claimed clusters leak; nothing points at a freed one */
    for (unsigned i = 0; i < n && ret == 0; i++) {
        ret = refcount_update(img, m[i].src << img->cluster_bits, img->cluster_size,
                              -(int)m[i].refcount);
        move_owner(c, m[i].src, m[i].dst);
    }
    if (ret == 0)
        ret = cache_flush(img->refcount_cache);
    progress_step(c, n);
    return ret;
}

static int move_refblock(struct compact *c, uint64_t src_k, uint64_t dst_k)
{
    struct qcow2_image *img = c->img;
    uint64_t src = src_k << img->cluster_bits, dst = dst_k << img->cluster_bits;
    int ret = claim(c, dst, 1);
    if (ret <= 0)
        return ret;
    /* The block may hold the claim itself: on disk before it is copied. */
    ret = cache_flush(img->refcount_cache);
    if (ret == 0)
        ret = copy_clusters(c, src, dst, 1);
    if (ret == 0 && (ret = file_flush(img->file)) < 0)
        set_error(img, ret, "flush failed: %s", strerror(-ret));
    if (ret < 0)
        return ret;
    ret = cache_discard(img->refcount_cache, src);
    if (ret < 0)
        return ret;
    img->refcount_table[c->own[src_k].idx] = dst;
    img->reftable_dirty = true;
    img->metadata_gen++;
    ret = header_write_pending_switches(img);
    if (ret < 0)
        return ret;
    move_owner(c, src_k, dst_k);
    ret = refcount_free_clusters(img, src, img->cluster_size);
    if (ret == 0)
        ret = cache_flush(img->refcount_cache);
    progress_step(c, 1);
    return ret;
}

/* The lowest run of `n` free clusters below cluster `limit`, or 0. */
static uint64_t find_free_run(const struct compact *c, uint64_t n, uint64_t limit)
{
    uint64_t run = 0;
    for (uint64_t k = 1; k < limit; k++) {
        run = c->own[k].kind == OWN_FREE ? run + 1 : 0;
        if (run == n)
            return k + 1 - n;
    }
    return 0;
}

/* Move the L1 table or the refcount table whole, if a free run below it can take it:
 * claim, copy, flush, switch the header fields (one synced write), free. 0: no room. */
static int move_table(struct compact *c, enum owner_kind kind)
{
    struct qcow2_image *img = c->img;
    bool l1 = kind == OWN_L1;
    uint64_t offset = l1 ? img->hdr.l1_table_offset : img->hdr.refcount_table_offset;
    uint64_t bytes = l1 ? (uint64_t)img->l1_size * 8 : img->refcount_table_size * 8;
    uint64_t n = size_to_clusters(img, bytes);
    uint64_t dst_k = find_free_run(c, n, offset >> img->cluster_bits);
    if (!dst_k)
        return 0;
    uint64_t dst = dst_k << img->cluster_bits;
    int ret = claim(c, dst, n);
    if (ret <= 0)
        return ret;
    ret = cache_flush(img->refcount_cache);
    if (ret == 0)
        ret = copy_clusters(c, offset, dst, n);
    if (ret == 0 && (ret = file_flush(img->file)) < 0)
        set_error(img, ret, "flush failed: %s", strerror(-ret));
    if (ret < 0)
        return ret;
    uint8_t field[12]; /* l1_size + l1_table_offset, or reftable offset + clusters */
    if (l1) {
        be32_put(field, img->l1_size);
        be64_put(field + 4, dst);
        ret = header_write_field(img, HDR_L1_SIZE, field, sizeof(field));
        if (ret == 0)
            img->hdr.l1_table_offset = dst;
    } else {
        be64_put(field, dst);
        be32_put(field + 8, img->hdr.refcount_table_clusters);
        ret = header_write_field(img, HDR_REFCOUNT_TABLE_OFFSET, field, sizeof(field));
        if (ret == 0)
            img->hdr.refcount_table_offset = dst;
    }
    if (ret < 0)
        return ret;
    img->metadata_gen++;
    uint64_t src_k = offset >> img->cluster_bits;
    for (uint64_t i = 0; i < n; i++)
        move_owner(c, src_k + i, dst_k + i);
    ret = refcount_free_clusters(img, offset, n << img->cluster_bits);
    if (ret == 0)
        ret = cache_flush(img->refcount_cache);
    progress_step(c, n);
    return ret < 0 ? ret : 1;
}

/* ------------------------------------------------------------------------------------------ */

/* The highest cluster in use at or below c->top (which only goes down). */
static uint64_t highest_used(struct compact *c)
{
    while (c->top > 0 && c->own[c->top].kind == OWN_FREE)
        c->top--;
    return c->top;
}

static uint64_t lowest_free(const struct compact *c, uint64_t from)
{
    while (from < c->nb && c->own[from].kind != OWN_FREE)
        from++;
    return from;
}

/* Collect up to COMPACT_BATCH moves of clusters of `kind` from the top into the lowest free
 * clusters (claimed here), then move them. */
static int compact_batch(struct compact *c, struct move *m, enum owner_kind kind, uint64_t *lo)
{
    unsigned n = 0;
    int ret = 0;
    uint64_t hi = highest_used(c);
    while (n < COMPACT_BATCH && *lo < hi && c->own[hi].kind == kind) {
        ret = claim(c, *lo << c->img->cluster_bits, 1);
        if (ret < 0)
            break;
        if (ret == 1) {
            m[n++] = (struct move){ .src = hi, .dst = *lo };
            /* Both marked taken so that the scans pass over them. */
            c->own[*lo].kind = OWN_PINNED;
            do
                hi--;
            while (hi > *lo && c->own[hi].kind == OWN_FREE);
        }
        *lo = lowest_free(c, *lo);
    }
    for (unsigned i = 0; i < n; i++)
        c->own[m[i].dst].kind = OWN_FREE;
    if (ret >= 0)
        ret = move_batch(c, m, n, kind);
    return ret;
}

/* Fill the lowest free clusters with the highest used ones until they meet or a cluster
 * that cannot move is at the top. */
static int compact_moves(struct compact *c)
{
    struct move *m = malloc(COMPACT_BATCH * sizeof(*m));
    if (!m)
        return set_error(c->img, -ENOMEM, "out of memory");
    int ret = 0;
    uint64_t lo = 1;
    c->top = c->nb ? c->nb - 1 : 0;
    for (;;) {
        uint64_t hi = highest_used(c);
        lo = lowest_free(c, lo);
        if (lo >= hi)
            break;
        enum owner_kind kind = c->own[hi].kind;
        if (kind == OWN_DATA || kind == OWN_L2) {
            ret = compact_batch(c, m, kind, &lo);
        } else if (kind == OWN_REFBLOCK) {
            ret = move_refblock(c, hi, lo);
        } else if (kind == OWN_L1 || kind == OWN_REFTABLE) {
            ret = move_table(c, kind);
            if (ret == 0)
                break; /* no room below it */
        } else {
            break; /* pinned */
        }
        if (ret < 0)
            break;
        /* Clusters are only freed above `lo` (moves go down): it stays the lowest. */
    }
    free(m);
    return ret < 0 ? ret : 0;
}

static uint64_t count_movable_above(const struct compact *c)
{
    uint64_t used = 0, above = 0;
    for (uint64_t k = 0; k < c->nb; k++)
        used += c->own[k].kind != OWN_FREE;
    for (uint64_t k = used; k < c->nb; k++)
        above += c->own[k].kind != OWN_FREE;
    return above;
}

/* The owner map of the file as it is now. */
static int map_image(struct compact *c)
{
    struct qcow2_image *img = c->img;
    int64_t len = file_size(img->file);
    if (len < 0)
        return set_error(img, (int)len, "cannot get the file size: %s", strerror((int)-len));
    c->len = (uint64_t)len;
    c->nb = size_to_clusters(img, (uint64_t)len);
    free(c->own);
    c->own = calloc(c->nb ? c->nb : 1, sizeof(*c->own));
    if (!c->own)
        return set_error(img, -ENOMEM, "out of memory for the map of %llu clusters",
                         ull(c->nb));
    return build_owner_map(c);
}

/* Does a cluster that cannot move lie where the compacted image would end? */
static bool pinned_above_end(const struct compact *c)
{
    uint64_t used = 0;
    for (uint64_t k = 0; k < c->nb; k++)
        used += c->own[k].kind != OWN_FREE;
    for (uint64_t k = used; k < c->nb; k++)
        if (c->own[k].kind == OWN_PINNED)
            return true;
    return false;
}

static int compact_image(struct compact *c)
{
    struct qcow2_image *img = c->img;
    int ret = cluster_flush_metadata(img);
    c->buf = malloc(img->cluster_size);
    if (ret == 0 && !c->buf)
        ret = set_error(img, -ENOMEM, "out of memory");
    if (ret == 0)
        ret = map_image(c);
    /* The snapshots' L1 tables and table and the bitmaps' storage are written again by their
     * own layers (into the lowest free clusters) when one of them may be in the way. */
    if (ret == 0 && pinned_above_end(c) && (img->hdr.nb_snapshots || img->bitmaps)) {
        ret = bitmap_release_storage(img);
        if (ret == 0)
            ret = snapshot_relocate(img);
        if (ret == 0)
            ret = map_image(c);
    }
    if (ret < 0)
        return ret;
    c->to_move = count_movable_above(c);
    ret = compact_moves(c);
    if (ret < 0)
        return ret;
    /* Everything past the last used cluster is free: cut it off (all is flushed). */
    uint64_t end = (highest_used(c) + 1) << img->cluster_bits;
    if (end < c->len) {
        ret = file_truncate(img->file, end);
        if (ret < 0)
            return set_error(img, ret, "truncating the image file failed: %s",
                             strerror(-ret));
        img->free_byte_offset = 0;
    }
    return 0;
}

int qcow2_compact(struct qcow2_image *img, qcow2_progress_fn progress, void *opaque)
{
    if (img->format != QCOW2_FORMAT_QCOW2)
        return set_error(img, -ENOTSUP, "only qcow2 images can be compacted");
    if (img->read_only)
        return set_error(img, -EROFS, "cannot compact an image opened read-only");
    /* With a data file only metadata lives in the image file. */
    if (has_data_file(img))
        return set_error(img, -ENOTSUP, "cannot compact an image with an external data file");
    if (img->hdr.has_crypto_ext)
        return set_error(img, -ENOTSUP, "cannot compact an encrypted image");
    struct compact c = { .img = img, .progress = progress, .opaque = opaque };
    if (progress)
        progress(opaque, 0, 1);
    pthread_mutex_lock(&img->lock);
    int ret = compact_image(&c);
    pthread_mutex_unlock(&img->lock);
    free(c.own);
    free(c.buf);
    if (ret == 0)
        ret = qcow2_flush(img);
    if (ret == 0 && progress)
        progress(opaque, 1, 1);
    return ret;
}
