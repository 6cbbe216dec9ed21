/* refcount.c - reference counts and host cluster allocation.
 * Owns the in-memory refcount table, the encoding of refcount entries (orders 0..6), creation
 * of refcount blocks (self-describing when they can be), refcount table growth at the end of
 * the image, and the free-space policy (first fit from img->free_cluster_index, byte packing
 * for compressed data). Reads and writes refcount blocks only through cache.c and writes the
 * refcount table and its header fields itself (synced). Knows nothing of L1/L2 contents. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes per refcount table entry. */
#define REFTABLE_ENTRY_SIZE 8

static uint64_t entries_per_block(const struct qcow2_image *img)
{
    return 1ull << img->refcount_block_bits;
}

static uint64_t block_index_of(const struct qcow2_image *img, uint64_t cluster_index)
{
    return cluster_index & (entries_per_block(img) - 1);
}

static uint64_t table_index_of(const struct qcow2_image *img, uint64_t cluster_index)
{
    return cluster_index >> img->refcount_block_bits;
}

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* ------------------------------------------------------------------------------------------ */
/* Entry encoding. Widths below a byte are packed LSB first (entry 0 in bit 0 of byte 0);
 * 16, 32 and 64 bit entries are big-endian. */

/* Entries of every width but the default one (16 bits): out of line, so that the allocation
 * fast path (alloc_in_free_block), which inlines block_get/set, does not set up their
 * sub-byte arithmetic before every loop. */
static __attribute__((noinline)) uint64_t block_get_other(const struct qcow2_image *img,
                                                          const void *block, uint64_t index)
{
    const uint8_t *b = block;
    switch (img->refcount_order) {
    case 0:
    case 1:
    case 2: {
        unsigned bits = 1u << img->refcount_order;
        unsigned shift = (unsigned)((index << img->refcount_order) & 7);
        return (b[index >> (3 - img->refcount_order)] >> shift) & ((1u << bits) - 1);
    }
    case 3:
        return b[index];
    case 4:
        return be16_get(b + index * 2);
    case 5:
        return be32_get(b + index * 4);
    case 6:
        return be64_get(b + index * 8);
    }
    assert(!"refcount_order out of range");
    return 0;
}

static __attribute__((noinline)) void block_set_other(const struct qcow2_image *img,
                                                      void *block, uint64_t index,
                                                      uint64_t value)
{
    uint8_t *b = block;
    switch (img->refcount_order) {
    case 0:
    case 1:
    case 2: {
        unsigned bits = 1u << img->refcount_order;
        unsigned shift = (unsigned)((index << img->refcount_order) & 7);
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        uint8_t *p = &b[index >> (3 - img->refcount_order)];
        *p = (uint8_t)((*p & ~mask) | ((value << shift) & mask));
        return;
    }
    case 3:
        b[index] = (uint8_t)value;
        return;
    case 4:
        be16_put(b + index * 2, (uint16_t)value);
        return;
    case 5:
        be32_put(b + index * 4, (uint32_t)value);
        return;
    case 6:
        be64_put(b + index * 8, value);
        return;
    }
    assert(!"refcount_order out of range");
}

/* refcount_block_get/set, inlined into the allocation fast path (alloc_in_free_block). */
static inline uint64_t block_get(const struct qcow2_image *img, const void *block,
                                 uint64_t index)
{
    assert(index < entries_per_block(img));
    if (img->refcount_order == 4) /* the default width first: no sub-byte arithmetic */
        return be16_get((const uint8_t *)block + index * 2);
    return block_get_other(img, block, index);
}

static inline void block_set(const struct qcow2_image *img, void *block, uint64_t index,
                             uint64_t value)
{
    assert(index < entries_per_block(img));
    assert(value <= img->refcount_max);
    if (img->refcount_order == 4) /* the default width first */
        be16_put((uint8_t *)block + index * 2, (uint16_t)value);
    else
        block_set_other(img, block, index, value);
}

uint64_t refcount_block_get(const struct qcow2_image *img, const void *block, uint64_t index)
{
    return block_get(img, block, index);
}

void refcount_block_set(const struct qcow2_image *img, void *block, uint64_t index,
                        uint64_t value)
{
    block_set(img, block, index, value);
}

void refcount_set_order(struct qcow2_image *img, unsigned order)
{
    assert(order <= 6); /* 64-bit entries at most (spec) */
    img->refcount_order = order;
    img->refcount_bits = 1u << order;
    img->refcount_max = img->refcount_bits == 64 ? UINT64_MAX : (1ull << img->refcount_bits) - 1;
    img->refcount_block_bits = img->cluster_bits + 3 - order;
}

/* ------------------------------------------------------------------------------------------ */
/* The refcount table. */

int refcount_init(struct qcow2_image *img)
{
    uint64_t offset = img->hdr.refcount_table_offset;
    uint64_t bytes = (uint64_t)img->hdr.refcount_table_clusters << img->cluster_bits;
    if (bytes > QCOW2_MAX_REFTABLE_BYTES)
        return set_error(img, -EFBIG, "refcount table at 0x%llx is too large (%u clusters)",
                         ull(offset), img->hdr.refcount_table_clusters);
    if (offset_into_cluster(img, offset))
        return set_error(img, -EINVAL, "refcount table offset 0x%llx is not cluster aligned",
                         ull(offset));
    uint64_t n = bytes / REFTABLE_ENTRY_SIZE;
    uint64_t *table = calloc(n ? n : 1, sizeof(*table));
    if (!table)
        return set_error(img, -ENOMEM, "out of memory for the refcount table (%llu entries)",
                         ull(n));
    if (n) {
        int ret = file_pread(img->file, table, bytes, offset);
        if (ret < 0) {
            free(table);
            return set_error(img, ret, "reading the refcount table at 0x%llx failed: %s",
                             ull(offset), strerror(-ret));
        }
    }
    for (uint64_t i = 0; i < n; i++)
        table[i] = be64_get(&table[i]);

    /* Entries are validated when they are used (load_block), as QEMU does: an image with a
     * broken entry opens, reads what it can, and is marked corrupt only when a write needs
     * that entry. */
    img->refcount_table = table;
    img->refcount_table_size = n;
    img->metadata_gen++;
    return 0;
}

void refcount_close(struct qcow2_image *img)
{
    free(img->refcount_table);
    img->refcount_table = NULL;
    img->refcount_table_size = 0;
}

/* The refcount block for table index `rt`, pinned in the cache; *block = NULL when the block
 * does not exist (every refcount it covers is 0). */
static int load_block(struct qcow2_image *img, uint64_t rt, void **block)
{
    *block = NULL;
    if (rt >= img->refcount_table_size)
        return 0;
    uint64_t entry = img->refcount_table[rt];
    uint64_t offset = entry & REFT_OFFSET_MASK;
    if (offset == 0)
        return 0;
    if ((entry & REFT_RESERVED_MASK) || offset_into_cluster(img, offset))
        return signal_corruption(img,
                                 "refcount block offset 0x%llx is invalid (refcount table "
                                 "entry %llu is 0x%llx)",
                                 ull(offset), ull(rt), ull(entry));
    int64_t fsize = file_size_cached(img->file);
    if (fsize >= 0 && offset + img->cluster_size > (uint64_t)fsize)
        return set_error(img, -EIO,
                         "refcount block at 0x%llx (refcount table entry %llu) is past the "
                         "end of the file (0x%llx)",
                         ull(offset), ull(rt), ull((uint64_t)fsize));
    return cache_get(img->refcount_cache, offset, block);
}

/* A cursor over refcount blocks: keeps the block of the last lookup pinned, so that a scan
 * fetches each block once. Release it before calling anything else that uses the cache. */
struct rc_cursor {
    bool valid;
    uint64_t rt;
    void *block;
};

static void cursor_release(struct qcow2_image *img, struct rc_cursor *c)
{
    if (c->block)
        cache_put(img->refcount_cache, &c->block);
    c->valid = false;
}

static int cursor_get(struct qcow2_image *img, struct rc_cursor *c, uint64_t cluster_index,
                      uint64_t *refcount)
{
    uint64_t rt = table_index_of(img, cluster_index);
    if (!c->valid || c->rt != rt) {
        cursor_release(img, c);
        int ret = load_block(img, rt, &c->block);
        if (ret < 0)
            return ret;
        c->rt = rt;
        c->valid = true;
    }
    *refcount = c->block ? refcount_block_get(img, c->block, block_index_of(img, cluster_index))
                         : 0;
    return 0;
}

int refcount_get(struct qcow2_image *img, uint64_t cluster_index, uint64_t *refcount)
{
    struct rc_cursor c = {0};
    int ret = cursor_get(img, &c, cluster_index, refcount);
    cursor_release(img, &c);
    return ret;
}

/* Does refcount block `rt` (at host `offset`) count nothing but, perhaps, itself? */
static bool block_counts_nothing(const struct qcow2_image *img, const void *block, uint64_t rt,
                                 uint64_t offset)
{
    uint64_t own = table_index_of(img, offset >> img->cluster_bits) == rt
                       ? block_index_of(img, offset >> img->cluster_bits)
                       : UINT64_MAX;
    for (uint64_t k = 0; k < entries_per_block(img); k++)
        if (k != own && block_get(img, block, k) != 0)
            return false;
    return true;
}

/* Shrinking, as QEMU's qcow2_shrink_reftable: the refcount blocks that count nothing but
 * (perhaps) themselves go, so that the file can end after its last used cluster. Order: the
 * refcount table without them is written and synced (header_write.c), then they leave the
 * cache, then the reference another block holds on one goes (a self-describing block's went
 * with it). A crash in between leaks such a block; a failed table write is retried at the
 * next flush and keeps the blocks (leaked). With lazy refcounts (a dirty image) the blocks
 * in memory are the truth until close: nothing is done. The table keeps its size, as QEMU's. */
int refcount_shrink_table(struct qcow2_image *img)
{
    if (img->dirty)
        return 0;
    int ret = cache_flush(img->refcount_cache);
    uint64_t *gone = ret == 0 ? calloc(img->refcount_table_size, sizeof(*gone)) : NULL;
    if (ret < 0)
        return ret;
    if (!gone)
        return set_error(img, -ENOMEM, "out of memory");
    uint64_t n = 0;
    for (uint64_t rt = 0; rt < img->refcount_table_size && ret == 0; rt++) {
        void *block;
        uint64_t offset = img->refcount_table[rt] & REFT_OFFSET_MASK;
        if (!offset || (ret = load_block(img, rt, &block)) < 0)
            continue;
        if (block_counts_nothing(img, block, rt, offset)) {
            gone[rt] = offset;
            n++;
        }
        cache_put(img->refcount_cache, &block);
    }
    for (uint64_t rt = 0; rt < img->refcount_table_size && ret == 0 && n; rt++)
        if (gone[rt])
            img->refcount_table[rt] = 0;
    if (ret == 0 && n) {
        img->metadata_gen++;
        img->reftable_dirty = true;
        ret = header_write_pending_switches(img);
    }
    for (uint64_t rt = 0; rt < img->refcount_table_size && ret == 0 && n; rt++) {
        if (!gone[rt])
            continue;
        ret = cache_discard(img->refcount_cache, gone[rt]);
        if (ret == 0 && table_index_of(img, gone[rt] >> img->cluster_bits) != rt)
            ret = refcount_free_clusters(img, gone[rt], img->cluster_size);
    }
    free(gone);
    return ret;
}

/* The highest cluster below cluster index `end` with a nonzero refcount, -1 if none, or
 * -errno. Scans down, one refcount block at a time; a range without a block is skipped whole.
 * (QEMU's qcow2_get_last_cluster, for trimming the file after a shrink.) */
int64_t refcount_last_used(struct qcow2_image *img, uint64_t end)
{
    struct rc_cursor c = {0};
    int64_t found = -1;
    for (uint64_t i = end; i > 0;) {
        uint64_t rc;
        int ret = cursor_get(img, &c, --i, &rc);
        if (ret < 0) {
            found = ret;
            break;
        }
        if (rc) {
            found = (int64_t)i;
            break;
        }
        if (!c.block)
            i = c.rt * entries_per_block(img); /* the first cluster this block would count */
    }
    cursor_release(img, &c);
    return found;
}

/* ------------------------------------------------------------------------------------------ */
/* Free space. */

/* First fit: the first run of `n` clusters with refcount 0 at or after free_cluster_index
 * (never cluster 0). Leaves free_cluster_index just past the run, as QEMU does: a free
 * cluster skipped because the run it started was too short is found again only after a free
 * lowers the index. Does not change any refcount. Returns the host offset. */
static int64_t find_free_clusters(struct qcow2_image *img, uint64_t n, uint64_t max_offset)
{
    struct rc_cursor c = {0};
    uint64_t idx = MAX(img->free_cluster_index, 1);
    uint64_t run = idx, count = 0;
    uint64_t limit = max_offset >> img->cluster_bits;
    while (count < n) {
        if (idx > limit + 1)
            break;
        uint64_t rc;
        int ret = cursor_get(img, &c, idx, &rc);
        if (ret < 0) {
            cursor_release(img, &c);
            return ret;
        }
        if (!c.block) {
            /* No block: the rest of its range is free. */
            uint64_t room = entries_per_block(img) - block_index_of(img, idx);
            uint64_t take = MIN(room, n - count);
            count += take;
            idx += take;
            continue;
        }
        idx++;
        if (rc != 0) {
            run = idx;
            count = 0;
        } else {
            count++;
        }
    }
    cursor_release(img, &c);
    if (idx - 1 > limit)
        return set_error(img, -EFBIG,
                         "no room for %llu clusters below host offset 0x%llx", ull(n),
                         ull(max_offset));
    img->free_cluster_index = idx;
    return (int64_t)(run << img->cluster_bits);
}

/* Bookkeeping when the refcount of `cluster_index` reached 0. */
static void cluster_freed(struct qcow2_image *img, uint64_t cluster_index)
{
    if (cluster_index < img->free_cluster_index)
        img->free_cluster_index = cluster_index;
    img->free_gen++;
    /* The compressed packing cluster is gone: do not pack into it any more. */
    if (img->free_byte_offset &&
        img->free_byte_offset >> img->cluster_bits == cluster_index)
        img->free_byte_offset = 0;
    /* No host discard here, deliberately: QEMU's default for frees that are not guest
     * discard requests (pass-discard-other) is off. Passing a guest discard down is for the
     * caller, which knows what kind of request freed the cluster. */
}

static int ensure_block(struct qcow2_image *img, uint64_t cluster_index);

/* Before an allocation may hand out a cluster freed since the last L2 flush, the change that
 * dropped its last reference must be on disk: otherwise a crash could leave the old L2 entry
 * pointing at the cluster while it already holds new data. One flush per free-then-allocate
 * sequence; none while nothing was freed. */
static int sync_before_reuse(struct qcow2_image *img)
{
    if (img->free_gen == img->synced_gen || !img->l2_cache)
        return 0;
    uint64_t gen = img->free_gen;
    int ret = header_write_pending_switches(img);
    if (ret == 0)
        ret = cache_flush(img->l2_cache);
    if (ret == 0)
        img->synced_gen = gen;
    return ret;
}

/* Add `addend` to refcounts [first, last] (cluster indexes); every block must exist and
 * every result must be in range (checked by the caller). Stops at the first failure and
 * stores in *done the first cluster not updated. */
static int apply_range(struct qcow2_image *img, uint64_t first, uint64_t last, int64_t addend,
                       uint64_t *done)
{
    uint64_t c = first;
    int ret = 0;
    while (c <= last && ret == 0) {
        uint64_t rt = table_index_of(img, c);
        uint64_t chunk_last = MIN(last, ((rt + 1) << img->refcount_block_bits) - 1);
        void *block;
        ret = load_block(img, rt, &block);
        if (ret < 0)
            break;
        if (!block) {
            ret = set_error(img, -EIO, "refcount block for host offset 0x%llx vanished",
                            ull(c << img->cluster_bits));
            break;
        }
        uint64_t block_offset = img->refcount_table[rt] & REFT_OFFSET_MASK;
        bool block_freed = false;
        for (; c <= chunk_last && ret == 0; c++) {
            uint64_t i = block_index_of(img, c);
            uint64_t old = refcount_block_get(img, block, i);
            /* The caller validated the range, but a hostile image can make a cluster freed
             * here a refcount block of the same range, read again from disk below. */
            if (addend < 0 ? old < (uint64_t)-addend
                           : (uint64_t)addend > img->refcount_max - old) {
                ret = signal_corruption(img, "refcount of host cluster 0x%llx (%llu) changed "
                                             "while it was being updated",
                                        ull(c << img->cluster_bits), ull(old));
                break;
            }
            uint64_t v = old + (uint64_t)addend;
            refcount_block_set(img, block, i, v);
            if (v != 0)
                continue;
            cluster_freed(img, c);
            uint64_t off = c << img->cluster_bits;
            /* A freed cluster may have held a cached table: its contents are garbage now. */
            if (img->l2_cache)
                ret = cache_discard(img->l2_cache, off);
            if (off == block_offset)
                block_freed = true; /* pinned: dropped below, once released */
            else if (ret == 0)
                ret = cache_discard(img->refcount_cache, off);
        }
        cache_mark_dirty(img->refcount_cache, block);
        cache_put(img->refcount_cache, &block);
        if (block_freed) {
            int r = cache_discard(img->refcount_cache, block_offset);
            ret = ret < 0 ? ret : r;
        }
    }
    *done = c;
    return ret;
}

/* Before cluster `cluster_index` is freed: on a valid image nobody holds a table it contains
 * (the cursor's own refcount block aside: apply_range drops it once released). A table in
 * use there means the refcounts lie; refuse before anything changes. */
static int check_not_in_use(struct qcow2_image *img, const struct rc_cursor *cur,
                            uint64_t cluster_index)
{
    uint64_t off = cluster_index << img->cluster_bits;
    const char *what = NULL;
    if (img->l2_cache && cache_pinned(img->l2_cache, off))
        what = "an L2 table";
    else if (cache_pinned(img->refcount_cache, off) &&
             !(cur->block && off == (img->refcount_table[cur->rt] & REFT_OFFSET_MASK)))
        what = "a refcount block";
    if (!what)
        return 0;
    return signal_corruption(img, "refusing to free host cluster 0x%llx: it is in use as %s",
                             ull(off), what);
}

/* Add `addend` to the refcount of every cluster touched by [offset, offset + length).
 * For increases, missing refcount blocks are created first; creating one may take a cluster
 * the caller considered free, so then nothing is changed, free_cluster_index is lowered to
 * the start of the range ("try the same clusters again") and -EAGAIN is returned. Otherwise
 * the update is all or nothing: overflow (-EINVAL) and underflow (corruption, -EIO) are
 * detected before any refcount changes, and a failure part way is undone. */
static int update_refcounts(struct qcow2_image *img, uint64_t offset, uint64_t length,
                            int64_t addend)
{
    if (length == 0 || addend == 0)
        return 0;
    if (offset > QCOW2_MAX_CLUSTER_OFFSET || length > QCOW2_MAX_CLUSTER_OFFSET - offset + 1)
        return set_error(img, -EINVAL, "refcount update of 0x%llx bytes at 0x%llx is out of range",
                         ull(length), ull(offset));
    uint64_t first = offset >> img->cluster_bits;
    uint64_t last = (offset + length - 1) >> img->cluster_bits;

    if (addend > 0) {
        for (uint64_t rt = table_index_of(img, first); rt <= table_index_of(img, last); rt++) {
            int ret = ensure_block(img, MAX(first, rt << img->refcount_block_bits));
            if (ret == -EAGAIN && img->free_cluster_index > first)
                img->free_cluster_index = first;
            if (ret < 0)
                return ret;
        }
    }

    /* Validate the whole range before touching anything. */
    struct rc_cursor cur = {0};
    for (uint64_t c = first; c <= last; c++) {
        uint64_t rc;
        int ret = cursor_get(img, &cur, c, &rc);
        if (ret < 0) {
            cursor_release(img, &cur);
            return ret;
        }
        if (addend < 0 && rc < (uint64_t)-addend) {
            cursor_release(img, &cur);
            return signal_corruption(img,
                                     "refcount of host cluster 0x%llx would drop below zero "
                                     "(it is %llu; freeing 0x%llx bytes at 0x%llx)",
                                     ull(c << img->cluster_bits), ull(rc), ull(length),
                                     ull(offset));
        }
        if (addend < 0 && rc == (uint64_t)-addend)
            ret = check_not_in_use(img, &cur, c);
        if (ret < 0) {
            cursor_release(img, &cur);
            return ret;
        }
        if (addend > 0 && (uint64_t)addend > img->refcount_max - rc) {
            cursor_release(img, &cur);
            return set_error(img, -EINVAL,
                             "refcount overflow: host cluster 0x%llx already has refcount %llu "
                             "(maximum %llu with %u-bit refcounts)",
                             ull(c << img->cluster_bits), ull(rc), ull(img->refcount_max),
                             img->refcount_bits);
        }
        if (addend > 0 && c == 0 && rc == 0) {
            cursor_release(img, &cur);
            return signal_corruption(img, "refusing to allocate host cluster 0 (the header)");
        }
        if (addend > 0 && !cur.block) {
            cursor_release(img, &cur);
            return set_error(img, -EIO, "no refcount block for host offset 0x%llx",
                             ull(c << img->cluster_bits));
        }
    }
    cursor_release(img, &cur);

    /* A decrease must not reach the disk before the L2/L1 change that dropped the
     * reference. Under lazy refcounts (dirty image) refcounts are rebuilt anyway. */
    if (addend < 0 && !img->dirty && img->l2_cache) {
        int ret = cache_set_dependency(img->refcount_cache, img->l2_cache);
        if (ret < 0)
            return ret;
    }

    uint64_t done;
    int ret = apply_range(img, first, last, addend, &done);
    if (ret < 0 && done > first) {
        uint64_t undone;
        (void)apply_range(img, first, done - 1, -addend, &undone);
    }
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Refcount blocks and table growth. */

/* How many refcount blocks cover `clusters` clusters plus the refcount blocks and table
 * clusters themselves (a fixed point). With `slack`, room for half the table again is
 * added, so that the table does not have to grow again soon. */
static uint64_t refblocks_needed(const struct qcow2_image *img, uint64_t clusters, bool slack)
{
    uint64_t per_block = entries_per_block(img);
    uint64_t per_table_cluster = img->cluster_size / REFTABLE_ENTRY_SIZE;
    uint64_t blocks = 0, table = 0;
    for (;;) {
        uint64_t b = DIV_ROUND_UP(clusters + blocks + table, per_block);
        uint64_t t = DIV_ROUND_UP(b, per_table_cluster);
        if (b == blocks && t == table) {
            if (!slack)
                return blocks;
            clusters += DIV_ROUND_UP(table, 2);
            slack = false;
        }
        blocks = b;
        table = t;
    }
}

/* Drop cached new refcount blocks of a failed table growth, so that they are never written
 * over whatever is allocated there later. */
static void discard_new_blocks(struct qcow2_image *img, uint64_t start, uint64_t end)
{
    for (uint64_t o = start; o < end; o += img->cluster_size)
        cache_discard(img->refcount_cache, o);
}

/* Grow the refcount table. `new_block` (already written) becomes entry `new_rt`, which is
 * beyond the current table; `cluster_index` is the cluster whose block it is. A new table and
 * the refcount blocks covering it are placed at the first refcount-block boundary after
 * everything in use, describe themselves, and are written before the header is switched in
 * one synced write. The old table is freed afterwards. */
static int grow_table(struct qcow2_image *img, uint64_t new_rt, uint64_t new_block,
                      uint64_t cluster_index)
{
    uint64_t cs = img->cluster_size;
    uint64_t per_block = entries_per_block(img);
    uint64_t per_table_cluster = cs / REFTABLE_ENTRY_SIZE;
    uint64_t max_entries = QCOW2_MAX_REFTABLE_BYTES / REFTABLE_ENTRY_SIZE;

    uint64_t covered = DIV_ROUND_UP(MAX(cluster_index + 1, (new_block >> img->cluster_bits) + 1),
                                    per_block);
    if (covered > max_entries)
        goto too_big;
    uint64_t start = (covered * per_block) << img->cluster_bits; /* first cluster of the area */
    uint64_t total = refblocks_needed(img, start >> img->cluster_bits, true);
    uint64_t entries = ROUND_UP(total + DIV_ROUND_UP(total, 2), per_table_cluster);
    if (total > max_entries || entries > max_entries)
        goto too_big;
    uint64_t table_clusters = entries / per_table_cluster;
    assert(new_rt < total && new_rt < covered);

    uint64_t *table = calloc(entries, sizeof(*table));
    uint8_t *buf = malloc(entries * REFTABLE_ENTRY_SIZE);
    if (!table || !buf) {
        free(table);
        free(buf);
        return set_error(img, -ENOMEM, "out of memory growing the refcount table");
    }
    memcpy(table, img->refcount_table, MIN(img->refcount_table_size, entries) * sizeof(*table));
    table[new_rt] = new_block;

    uint64_t area_rt = covered; /* first table index of the new area */
    uint64_t nb_new_blocks = 0;
    for (uint64_t i = area_rt; i < total; i++)
        if (!table[i])
            nb_new_blocks++;
    uint64_t table_offset = start + nb_new_blocks * cs;
    uint64_t end = table_offset + table_clusters * cs;
    uint64_t block_offset = start;
    int ret = 0;

    /* The new blocks: zeroed, with refcount 1 for every cluster of [start, end). */
    for (uint64_t i = area_rt; i < total && ret == 0; i++) {
        void *block;
        if (table[i]) {
            ret = load_block(img, i, &block);
            if (ret == 0 && !block)
                ret = set_error(img, -EIO, "refcount block %llu disappeared", ull(i));
            if (ret < 0)
                break;
        } else {
            ret = cache_get_empty(img->refcount_cache, block_offset, &block);
            if (ret < 0)
                break;
            memset(block, 0, cs);
            table[i] = block_offset;
            block_offset += cs;
        }
        uint64_t first_covered = (i * per_block) << img->cluster_bits;
        if (first_covered < end) {
            uint64_t j = start > first_covered ? (start - first_covered) >> img->cluster_bits : 0;
            uint64_t j_end = MIN((end - first_covered) >> img->cluster_bits, per_block);
            for (; j < j_end; j++) {
                assert(refcount_block_get(img, block, j) == 0);
                refcount_block_set(img, block, j, 1);
            }
        }
        cache_mark_dirty(img->refcount_cache, block);
        cache_put(img->refcount_cache, &block);
    }
    if (ret == 0)
        ret = cache_flush(img->refcount_cache);
    if (ret < 0) {
        discard_new_blocks(img, start, block_offset);
        free(table);
        free(buf);
        return ret;
    }
    assert(block_offset == table_offset);

    for (uint64_t i = 0; i < entries; i++)
        be64_put(buf + i * REFTABLE_ENTRY_SIZE, table[i]);
    ret = file_pwrite(img->file, buf, entries * REFTABLE_ENTRY_SIZE, table_offset);
    if (ret == 0)
        ret = file_flush(img->file);
    free(buf);
    if (ret < 0) {
        free(table);
        return set_error(img, ret, "writing the new refcount table at 0x%llx failed: %s",
                         ull(table_offset), strerror(-ret));
    }

    uint8_t field[12];
    be64_put(field, table_offset);
    be32_put(field + 8, (uint32_t)table_clusters);
    assert(HDR_REFCOUNT_TABLE_CLUSTERS == HDR_REFCOUNT_TABLE_OFFSET + 8);
    ret = header_write_field(img, HDR_REFCOUNT_TABLE_OFFSET, field, sizeof(field));
    /* The new table is on disk and the header may point to it even if the write failed:
     * use it from now on; the header is written again at the next flush, and the old table
     * is kept (a leak at worst). */
    if (ret < 0)
        img->header_dirty = true;

    uint64_t old_offset = img->hdr.refcount_table_offset;
    uint64_t old_bytes = (uint64_t)img->hdr.refcount_table_clusters << img->cluster_bits;
    img->hdr.refcount_table_offset = table_offset;
    img->hdr.refcount_table_clusters = (uint32_t)table_clusters;
    free(img->refcount_table);
    img->refcount_table = table;
    img->refcount_table_size = entries;
    img->metadata_gen++;

    if (ret < 0)
        return ret;
    /* The switch is done; failing to free the old table only leaks it, unless that found
     * the image corrupt (the old table doubles as another table in use): then stop. */
    bool was_corrupt = img->corrupt;
    ret = update_refcounts(img, old_offset, old_bytes, -1);
    return ret < 0 && img->corrupt && !was_corrupt ? ret : 0;

too_big:
    return set_error(img, -EFBIG,
                     "the refcount table would exceed %u MiB (needed for host offset 0x%llx)",
                     QCOW2_MAX_REFTABLE_BYTES >> 20, ull(cluster_index << img->cluster_bits));
}

/* Make sure the refcount block covering `cluster_index` exists. Returns 0 if it did, -EAGAIN
 * after creating it (the new block, or a new refcount table, may sit where the caller meant
 * to allocate), or -errno. */
static int ensure_block(struct qcow2_image *img, uint64_t cluster_index)
{
    uint64_t rt = table_index_of(img, cluster_index);
    if (rt < img->refcount_table_size && (img->refcount_table[rt] & REFT_OFFSET_MASK))
        return 0;

    /* We are about to write the refcount table: what L2 tables already reference must be
     * on disk first. */
    int ret = img->l2_cache ? cache_flush(img->l2_cache) : 0;
    if (ret < 0)
        return ret;

    int64_t found = find_free_clusters(img, 1, REFT_OFFSET_MASK & INT64_MAX);
    if (found < 0)
        return (int)found;
    uint64_t new_block = (uint64_t)found;
    if (new_block == 0)
        return signal_corruption(img, "refusing to place a refcount block at offset 0");
    uint64_t new_index = new_block >> img->cluster_bits;

    void *block;
    if (table_index_of(img, new_index) == rt) {
        /* Self-describing: the block covers its own cluster. */
        ret = cache_get_empty(img->refcount_cache, new_block, &block);
        if (ret < 0)
            return ret;
        memset(block, 0, img->cluster_size);
        refcount_block_set(img, block, block_index_of(img, new_index), 1);
    } else {
        /* Counted by another block, which may have to be created first (then -EAGAIN). */
        ret = update_refcounts(img, new_block, img->cluster_size, 1);
        if (ret < 0)
            return ret;
        ret = cache_flush(img->refcount_cache);
        if (ret < 0)
            return ret;
        ret = cache_get_empty(img->refcount_cache, new_block, &block);
        if (ret < 0)
            return ret;
        memset(block, 0, img->cluster_size);
    }
    cache_mark_dirty(img->refcount_cache, block);
    ret = cache_flush(img->refcount_cache);
    cache_put(img->refcount_cache, &block);
    if (ret < 0) {
        cache_discard(img->refcount_cache, new_block);
        return ret;
    }

    if (rt < img->refcount_table_size) {
        uint8_t entry[REFTABLE_ENTRY_SIZE];
        be64_put(entry, new_block);
        uint64_t where = img->hdr.refcount_table_offset + rt * REFTABLE_ENTRY_SIZE;
        ret = file_pwrite(img->file, entry, sizeof(entry), where);
        if (ret == 0)
            ret = file_flush(img->file);
        /* The block is on disk; the entry may have landed even if the write failed: use the
         * block from now on and write the table again at the next flush. */
        img->refcount_table[rt] = new_block;
        img->metadata_gen++;
        if (ret < 0) {
            img->reftable_dirty = true;
            return set_error(img, ret,
                             "writing refcount table entry %llu at 0x%llx (refcount block 0x%llx) "
                             "failed: %s",
                             ull(rt), ull(where), ull(new_block), strerror(-ret));
        }
        return -EAGAIN;
    }

    ret = grow_table(img, rt, new_block, cluster_index);
    return ret < 0 ? ret : -EAGAIN;
}

/* ------------------------------------------------------------------------------------------ */
/* Allocation and freeing. */

/* The common case of an allocation, in one look at one refcount block: the `n` clusters from
 * free_cluster_index on lie in one cached block and are all free. Then they are what
 * find_free_clusters() would find, and every test update_refcounts() makes before an increase
 * passes (the block exists, no count overflows from 0, cluster 0 is never in the run), so
 * they are set to 1 here directly; the general path looks the block up three times for this.
 * The cached block was checked when it was read (load_block) and is looked at without a pin:
 * nothing here calls the cache again before it is marked dirty. Returns the host offset, or 0
 * when the general path must decide (nothing freed may be reused before a sync, no block or
 * not cached, a used cluster in the way, a run crossing blocks). Cannot fail. */
static int64_t alloc_in_free_block(struct qcow2_image *img, uint64_t n)
{
    uint64_t rt, first, idx = refcount_fast_run(img, n, &rt, &first);
    if (!idx)
        return 0;
    uint64_t entry = img->refcount_table[rt];
    uint64_t offset = entry & REFT_OFFSET_MASK;
    if (!offset || (entry & REFT_RESERVED_MASK) || offset_into_cluster(img, offset))
        return 0;
    void *block = (void *)cache_find(img->refcount_cache, offset);
    if (!block)
        return 0;
    for (uint64_t k = 0; k < n; k++)
        if (block_get(img, block, first + k) != 0)
            return 0;
    for (uint64_t k = 0; k < n; k++)
        block_set(img, block, first + k, 1);
    cache_mark_dirty(img->refcount_cache, block);
    img->free_cluster_index = idx + n;
    return (int64_t)(idx << img->cluster_bits);
}

/* Everything refcount_alloc_clusters() does when the fast path cannot. */
static int64_t alloc_clusters_general(struct qcow2_image *img, uint64_t n)
{
    int ret = sync_before_reuse(img);
    if (ret < 0)
        return ret;
    int64_t offset;
    do {
        offset = find_free_clusters(img, n, QCOW2_MAX_CLUSTER_OFFSET);
        if (offset < 0)
            return offset;
        ret = update_refcounts(img, (uint64_t)offset, n << img->cluster_bits, 1);
    } while (ret == -EAGAIN);
    return ret < 0 ? ret : offset;
}

int64_t refcount_alloc_clusters(struct qcow2_image *img, uint64_t size)
{
    if (size == 0 || size > QCOW2_MAX_CLUSTER_OFFSET)
        return set_error(img, -EINVAL, "cannot allocate 0x%llx bytes of clusters", ull(size));
    uint64_t n = size_to_clusters(img, size);
    int64_t offset = alloc_in_free_block(img, n);
    return offset != 0 ? offset : alloc_clusters_general(img, n);
}

int64_t refcount_alloc_clusters_at(struct qcow2_image *img, uint64_t host, uint64_t n)
{
    if (offset_into_cluster(img, host) || host == 0 || host > QCOW2_MAX_CLUSTER_OFFSET ||
        n > (QCOW2_MAX_CLUSTER_OFFSET - host) >> img->cluster_bits)
        return set_error(img, -EINVAL, "cannot allocate %llu clusters at host offset 0x%llx",
                         ull(n), ull(host));
    if (n == 0)
        return 0;
    int sync = sync_before_reuse(img);
    if (sync < 0)
        return sync;
    uint64_t first = host >> img->cluster_bits;
    uint64_t count;
    int ret;
    do {
        struct rc_cursor c = {0};
        for (count = 0; count < n; count++) {
            uint64_t rc;
            ret = cursor_get(img, &c, first + count, &rc);
            if (ret < 0) {
                cursor_release(img, &c);
                return ret;
            }
            if (rc != 0)
                break;
        }
        cursor_release(img, &c);
        ret = update_refcounts(img, host, count << img->cluster_bits, 1);
    } while (ret == -EAGAIN);
    return ret < 0 ? ret : (int64_t)count;
}

int64_t refcount_alloc_bytes(struct qcow2_image *img, uint64_t size)
{
    uint64_t cs = img->cluster_size;
    if (size == 0 || size > cs)
        return set_error(img, -EINVAL, "cannot allocate %llu bytes for a compressed cluster",
                         ull(size));
    assert(!img->free_byte_offset || offset_into_cluster(img, img->free_byte_offset));
    int sync = sync_before_reuse(img);
    if (sync < 0)
        return sync;
    uint64_t max = MIN(img->cluster_offset_mask, QCOW2_MAX_CLUSTER_OFFSET);

    uint64_t offset = img->free_byte_offset;
    if (offset) {
        /* Start a new cluster when this one cannot take another reference (or was freed). */
        uint64_t rc;
        int ret = refcount_get(img, offset >> img->cluster_bits, &rc);
        if (ret < 0)
            return ret;
        if (rc == img->refcount_max || rc == 0)
            offset = 0;
    }
    uint64_t free_in_cluster = offset ? cs - offset_into_cluster(img, offset) : 0;
    int ret;
    do {
        if (!offset || free_in_cluster < size) {
            int64_t found = find_free_clusters(img, 1, max);
            if (found < 0)
                return found;
            if (found == 0)
                return signal_corruption(img, "refusing to place compressed data at offset 0");
            if (offset && ROUND_UP(offset, cs) == (uint64_t)found) {
                free_in_cluster += cs; /* contiguous: spill over into it */
            } else {
                offset = (uint64_t)found;
                free_in_cluster = cs;
            }
        }
        ret = update_refcounts(img, offset, size, 1);
        if (ret < 0)
            offset = 0; /* after -EAGAIN, start over in a fresh cluster */
    } while (ret == -EAGAIN);
    if (ret < 0)
        return ret;

    /* The caller's L2 entry must not reach the disk before these refcounts. */
    if (!img->dirty && img->l2_cache) {
        ret = cache_set_dependency(img->l2_cache, img->refcount_cache);
        if (ret < 0)
            return ret;
    }
    img->free_byte_offset = offset + size;
    if (offset_into_cluster(img, img->free_byte_offset) == 0)
        img->free_byte_offset = 0;
    return (int64_t)offset;
}

int refcount_update(struct qcow2_image *img, uint64_t offset, uint64_t length, int addend)
{
    /* Increases normally apply to clusters that are already referenced, whose blocks exist.
     * Clusters with refcount 0 must be taken with the refcount_alloc_* functions, which
     * search again when a new refcount block lands in the range. */
    int ret;
    do
        ret = update_refcounts(img, offset, length, addend);
    while (ret == -EAGAIN);
    return ret;
}

int refcount_free_clusters(struct qcow2_image *img, uint64_t offset, uint64_t size)
{
    return update_refcounts(img, offset, size, -1);
}

int refcount_free_l2_entry(struct qcow2_image *img, uint64_t l2_entry)
{
    if (l2_entry & QCOW2_OFLAG_COMPRESSED) {
        /* Compressed data always lives in the image file and is refcounted byte range by
         * byte range: every host cluster it touches holds one reference. */
        uint64_t coffset, csize;
        cluster_compressed_range(img, l2_entry, &coffset, &csize);
        return update_refcounts(img, coffset, csize, -1);
    }
    uint64_t offset = l2_entry & L2E_OFFSET_MASK;
    if (offset == 0)
        return 0; /* unallocated or zero cluster: nothing held */
    if (has_data_file(img))
        return 0; /* data clusters in an external data file are not refcounted */
    if (offset_into_cluster(img, offset))
        return signal_corruption(img, "cannot free unaligned cluster 0x%llx (L2 entry 0x%llx)",
                                 ull(offset), ull(l2_entry));
    return update_refcounts(img, offset, img->cluster_size, -1);
}
