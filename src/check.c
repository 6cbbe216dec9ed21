/* check.c - consistency check and repair of a qcow2 image, as `qemu-img check`.
 * Rebuilds every host cluster's reference count in memory from the metadata (header, L1/L2
 * tables, snapshots, refcount structures, bitmaps, LUKS area), compares it with the refcounts
 * on disk and repairs leaks, too-low refcounts, COPIED flags and, when it is unusable, the
 * whole refcount structure. Reads tables straight from the file after flushing the caches and
 * refcount blocks through the refcount cache; never goes through the data path. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Entry sizes of the 64-bit tables. */
#define L1E_SIZE 8
#define REFTABLE_ENTRY_SIZE 8


/* The cluster type of an L2 entry as a whole (subclusters are looked at separately). */
enum l2_cluster_type {
    CT_UNALLOCATED,
    CT_ZERO_PLAIN,
    CT_ZERO_ALLOC,
    CT_NORMAL,
    CT_COMPRESSED,
};

/* The computed refcounts: 4 bits per host cluster, so that a check of a large file stays
 * small (a file of 1 TiB in 64 KiB clusters takes 8 MiB, where one refcount_bits-wide entry per
 * cluster would take 32 MiB). A nibble of REFS_BIG means "REFS_BIG or more": the count is in
 * `big`, an open-addressing table of the few clusters with that many references (snapshots).
 * A count never exceeds img->refcount_max, so the table saturates exactly where the on-disk
 * entries would overflow. */
#define REFS_BIG 15u

struct refs_big {
    uint64_t *key; /* cluster index + 1; 0 = empty slot */
    uint64_t *count;
    uint64_t mask; /* slots - 1 (a power of two), or 0 before the first entry */
    uint64_t used;
};

/* A COPIED verdict of the active tables found during the count of a plain check, printed
 * after the refcount comparison (where QEMU's second pass prints it). */
struct copied_error {
    uint64_t entry;
    uint64_t refcount;
    uint32_t l1_index; /* UINT32_MAX: the entry is an L2 entry */
};

/* At most this many verdicts are kept (24 bytes each); past that, the COPIED flags are checked
 * in a second pass over the active tables instead, as before. */
#define COPIED_DEFER_MAX 65536

/* One check pass. */
struct check {
    struct qcow2_image *img;
    void (*report)(void *opaque, const char *msg);
    void *opaque;

    uint8_t *refs; /* two clusters per byte, the even one in the low nibble */
    struct refs_big big;
    uint64_t nb_clusters;
    uint64_t capacity;

    uint64_t file_len;
    uint8_t *l2_buf;  /* the L2 table being checked: points into l2_run */
    uint8_t *l2_run;  /* L2 tables read together (contiguous on disk), run_cap bytes */
    uint64_t run_offset, run_len; /* what l2_run holds */
    size_t run_cap;

    /* memo_refcount(): the refcount block of table entry rb_index (NULL: none) */
    bool rb_valid;
    uint64_t rb_index;
    const void *rb_block;

    struct snapshot_table snaps; /* read through snapshot.c, kept whole for a rewrite */

    bool rebuild;
    uint64_t highest_cluster;

    /* Plain check: COPIED is checked against the on-disk refcounts while counting (nothing
     * changes them), each table read once; the verdicts wait in `copied`. */
    bool copied_inline;
    bool copied_overflow; /* too many: check them in a second pass */
    struct copied_error *copied;
    size_t nb_copied, copied_cap;
};

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

static void report(struct check *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(struct check *ck, const char *fmt, ...)
{
    if (!ck->report)
        return;
    char msg[QCOW2_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ck->report(ck->opaque, msg);
}

static const char *repairing(unsigned fix, unsigned needed)
{
    return (fix & needed) ? "Repairing" : "ERROR";
}

/* ------------------------------------------------------------------------------------------ */
/* The in-memory refcount table. */

static uint64_t big_slot(const struct refs_big *b, uint64_t cluster)
{
    uint64_t h = (cluster + 1) * 0x9e3779b97f4a7c15ull;
    uint64_t i = (h >> 20) & b->mask;
    while (b->key[i] && b->key[i] != cluster + 1)
        i = (i + 1) & b->mask;
    return i;
}

static uint64_t big_get(const struct refs_big *b, uint64_t cluster)
{
    if (!b->mask)
        return REFS_BIG;
    uint64_t i = big_slot(b, cluster);
    return b->key[i] ? b->count[i] : REFS_BIG;
}

/* Entries are never removed: a cluster whose count drops below REFS_BIG keeps a stale slot,
 * ignored because its nibble no longer says REFS_BIG. */
static int big_set(struct refs_big *b, uint64_t cluster, uint64_t count)
{
    if (b->mask == 0 || (b->used + 1) * 4 > (b->mask + 1) * 3) {
        uint64_t slots = b->mask ? (b->mask + 1) * 2 : 1024;
        struct refs_big n = {.mask = slots - 1};
        n.key = calloc(slots, sizeof(*n.key));
        n.count = malloc(slots * sizeof(*n.count));
        if (!n.key || !n.count) {
            free(n.key);
            free(n.count);
            return -ENOMEM;
        }
        for (uint64_t i = 0; b->mask && i <= b->mask; i++) {
            if (b->key[i]) {
                uint64_t j = big_slot(&n, b->key[i] - 1);
                n.key[j] = b->key[i];
                n.count[j] = b->count[i];
                n.used++;
            }
        }
        free(b->key);
        free(b->count);
        *b = n;
    }
    uint64_t i = big_slot(b, cluster);
    if (!b->key[i]) {
        b->key[i] = cluster + 1;
        b->used++;
    }
    b->count[i] = count;
    return 0;
}

static unsigned refs_nibble(const struct check *ck, uint64_t i)
{
    return (ck->refs[i >> 1] >> ((i & 1) * 4)) & 0xf;
}

static void refs_set_nibble(struct check *ck, uint64_t i, unsigned v)
{
    unsigned shift = (unsigned)(i & 1) * 4;
    ck->refs[i >> 1] = (uint8_t)((ck->refs[i >> 1] & ~(0xfu << shift)) | (v << shift));
}

static uint64_t refs_get(const struct check *ck, uint64_t i)
{
    unsigned n = refs_nibble(ck, i);
    return n < REFS_BIG ? n : big_get(&ck->big, i);
}

static int refs_set(struct check *ck, uint64_t i, uint64_t v)
{
    if (v < REFS_BIG) {
        refs_set_nibble(ck, i, (unsigned)v);
        return 0;
    }
    int ret = big_set(&ck->big, i, v);
    if (ret == 0)
        refs_set_nibble(ck, i, REFS_BIG);
    return ret;
}

/* Make the table cover clusters [0, n). New entries are 0. */
static int refs_grow(struct check *ck, uint64_t n)
{
    if (n <= ck->nb_clusters)
        return 0;
    if (n > ck->capacity) {
        uint64_t cap = ROUND_UP(MAX(n, ck->capacity + ck->capacity / 4), 2);
        if (cap / 2 > SIZE_MAX)
            return -ENOMEM;
        uint8_t *p = realloc(ck->refs, (size_t)(cap / 2));
        if (!p)
            return -ENOMEM;
        memset(p + ck->capacity / 2, 0, (size_t)((cap - ck->capacity) / 2));
        ck->refs = p;
        ck->capacity = cap;
    }
    ck->nb_clusters = n;
    return 0;
}

static void refs_clear(struct check *ck)
{
    if (ck->refs)
        memset(ck->refs, 0, (size_t)(ck->capacity / 2));
    if (ck->big.mask)
        memset(ck->big.key, 0, (size_t)(ck->big.mask + 1) * sizeof(*ck->big.key));
    ck->big.used = 0;
}

static void refs_free(struct check *ck)
{
    free(ck->refs);
    free(ck->big.key);
    free(ck->big.count);
}

/* Count one reference to every cluster touched by [offset, offset + size). A range that
 * reaches a whole cluster or more past the end of the file is a corruption, not a reason to
 * grow the table: only the last, partly written cluster may lie beyond EOF. */
static int count_range(struct check *ck, struct qcow2_check_result *res, uint64_t offset,
                       uint64_t size)
{
    struct qcow2_image *img = ck->img;
    if (size == 0)
        return 0;
    uint64_t limit = ck->file_len + img->cluster_size;
    if (offset >= limit || size >= limit - offset) {
        report(ck,
               "ERROR: counting reference for region exceeding the end of the file by one "
               "cluster or more: offset 0x%llx size 0x%llx",
               ull(offset), ull(size));
        res->corruptions++;
        return 0;
    }
    uint64_t first = offset >> img->cluster_bits;
    uint64_t last = (offset + size - 1) >> img->cluster_bits;
    if (refs_grow(ck, last + 1) < 0) {
        res->check_errors++;
        return set_error(img, -ENOMEM, "out of memory for the refcounts of %llu clusters",
                         ull(last + 1));
    }
    for (uint64_t k = first; k <= last; k++) {
        uint64_t v = refs_get(ck, k);
        if (v >= img->refcount_max) {
            report(ck, "ERROR: overflow cluster offset=0x%llx", ull(k << img->cluster_bits));
            report(ck, "Use qemu-img amend to increase the refcount entry width or "
                       "qemu-img convert to create a clean copy if the image cannot be "
                       "opened for writing");
            res->corruptions++;
            continue;
        }
        if (refs_set(ck, k, v + 1) < 0) {
            res->check_errors++;
            return set_error(img, -ENOMEM, "out of memory for the refcount of cluster %llu",
                             ull(k));
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* On-disk refcounts, through the refcount cache. */

/* The offset of refcount block `rt` in *off (0 if there is none); -EIO if the table entry
 * cannot be followed. */
static int refblock_offset(struct qcow2_image *img, uint64_t rt, uint64_t *off)
{
    *off = 0;
    if (rt >= img->refcount_table_size)
        return 0;
    *off = img->refcount_table[rt] & REFT_OFFSET_MASK;
    if (*off && offset_into_cluster(img, *off))
        return set_error(img, -EIO,
                         "refcount block offset 0x%llx is not cluster aligned (refcount table "
                         "entry %llu)",
                         ull(*off), ull(rt));
    return 0;
}

static int disk_refcount(struct qcow2_image *img, uint64_t cluster, uint64_t *refcount)
{
    uint64_t off;
    *refcount = 0;
    int ret = refblock_offset(img, cluster >> img->refcount_block_bits, &off);
    if (ret < 0 || off == 0)
        return ret;
    void *block;
    ret = cache_get(img->refcount_cache, off, &block);
    if (ret < 0)
        return ret;
    *refcount = refcount_block_get(img, block,
                                   cluster & ((1ull << img->refcount_block_bits) - 1));
    cache_put(img->refcount_cache, &block);
    return 0;
}

/* Set the on-disk refcount of an existing block's cluster (written back when the refcount
 * cache is flushed). */
static int set_disk_refcount(struct qcow2_image *img, uint64_t cluster, uint64_t value)
{
    uint64_t off;
    int ret = refblock_offset(img, cluster >> img->refcount_block_bits, &off);
    if (ret < 0)
        return ret;
    if (off == 0)
        return set_error(img, -EIO, "no refcount block for host cluster 0x%llx",
                         ull(cluster << img->cluster_bits));
    void *block;
    ret = cache_get(img->refcount_cache, off, &block);
    if (ret < 0)
        return ret;
    refcount_block_set(img, block, cluster & ((1ull << img->refcount_block_bits) - 1), value);
    cache_mark_dirty(img->refcount_cache, block);
    cache_put(img->refcount_cache, &block);
    if (value == 0) {
        uint64_t host = cluster << img->cluster_bits;
        if (cluster < img->free_cluster_index)
            img->free_cluster_index = cluster;
        if (img->free_byte_offset && img->free_byte_offset >> img->cluster_bits == cluster)
            img->free_byte_offset = 0;
        cache_discard(img->l2_cache, host);
        if (off != host)
            cache_discard(img->refcount_cache, host);
        /* As qemu-img check: space of a repaired leak goes back to the host. */
        (void)file_discard(img->file, host, img->cluster_size);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* L1 and L2 tables. */

static enum l2_cluster_type cluster_type(const struct qcow2_image *img, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return CT_COMPRESSED;
    if ((entry & QCOW2_OFLAG_ZERO) && !img->extended_l2)
        return (entry & L2E_OFFSET_MASK) ? CT_ZERO_ALLOC : CT_ZERO_PLAIN;
    if (!(entry & L2E_OFFSET_MASK))
        return has_data_file(img) && (entry & QCOW2_OFLAG_COPIED) ? CT_NORMAL : CT_UNALLOCATED;
    return CT_NORMAL;
}

/* Make an unaligned entry without data read as zeros (a zero cluster, or zero subclusters
 * where subclusters were allocated), so that it holds no host cluster any more. */
static int fix_entry_by_zero(struct check *ck, struct qcow2_check_result *res,
                             uint64_t l2_offset, uint64_t i)
{
    struct qcow2_image *img = ck->img;
    uint8_t *e = ck->l2_buf + i * img->l2_entry_size;
    if (img->extended_l2) {
        uint64_t bitmap = l2_get_bitmap(img, ck->l2_buf, i);
        bitmap = (bitmap | (bitmap << 32)) & QCOW2_SC_ALL_ZERO;
        l2_set_bitmap(img, ck->l2_buf, i, bitmap);
        l2_set_entry(img, ck->l2_buf, i, 0);
    } else {
        l2_set_entry(img, ck->l2_buf, i, QCOW2_OFLAG_ZERO);
    }
    uint64_t where = l2_offset + i * img->l2_entry_size;
    int ret = file_pwrite(img->file, e, img->l2_entry_size, where);
    if (ret == 0)
        ret = file_flush(img->file);
    if (ret < 0) {
        report(ck, "ERROR: Failed to overwrite L2 table entry: %s", strerror(-ret));
        res->check_errors++;
        return ret;
    }
    if (!offset_into_cluster(img, l2_offset))
        cache_discard(img->l2_cache, l2_offset);
    res->corruptions--;
    res->corruptions_fixed++;
    return 0;
}

/* The on-disk refcount of `cluster` while counting, through a one-block memo (a scan looks each
 * refcount block up once, not once per cluster). The memo holds an unpinned cache table: it
 * is forgotten (rb_valid = false) before anything else uses the refcount cache. */
static int memo_refcount(struct check *ck, uint64_t cluster, uint64_t *refcount)
{
    struct qcow2_image *img = ck->img;
    uint64_t rt = cluster >> img->refcount_block_bits;
    *refcount = 0;
    if (!ck->rb_valid || ck->rb_index != rt) {
        uint64_t off;
        ck->rb_valid = false;
        int ret = refblock_offset(img, rt, &off);
        if (ret < 0)
            return ret;
        ck->rb_block = NULL;
        if (off) {
            ret = cache_peek(img->refcount_cache, off, &ck->rb_block);
            if (ret < 0)
                return ret;
        }
        ck->rb_index = rt;
        ck->rb_valid = true;
    }
    if (ck->rb_block)
        *refcount = refcount_block_get(img, ck->rb_block,
                                       cluster & ((1ull << img->refcount_block_bits) - 1));
    return 0;
}

/* Keep a COPIED verdict of the active tables for the report after the comparison. When there
 * are too many (or no memory for them), they are dropped and a second pass finds them. */
static void defer_copied(struct check *ck, uint32_t l1_index, uint64_t entry, uint64_t refcount)
{
    if (ck->copied_overflow)
        return;
    if (ck->nb_copied == ck->copied_cap) {
        size_t cap = ck->copied_cap ? ck->copied_cap * 2 : 64;
        struct copied_error *p =
            cap <= COPIED_DEFER_MAX ? realloc(ck->copied, cap * sizeof(*p)) : NULL;
        if (!p) {
            ck->copied_overflow = true;
            free(ck->copied);
            ck->copied = NULL;
            ck->nb_copied = ck->copied_cap = 0;
            return;
        }
        ck->copied = p;
        ck->copied_cap = cap;
    }
    ck->copied[ck->nb_copied++] =
        (struct copied_error){.entry = entry, .refcount = refcount, .l1_index = l1_index};
}

/* COPIED of an active L2 entry that holds a host cluster: set exactly when its on-disk
 * refcount is 1 (with a data file, every such cluster is the image's alone). */
static void inline_copied_l2(struct check *ck, uint64_t entry)
{
    struct qcow2_image *img = ck->img;
    uint64_t rc = 1;
    if (!has_data_file(img) &&
        memo_refcount(ck, (entry & L2E_OFFSET_MASK) >> img->cluster_bits, &rc) < 0)
        return; /* reported by the comparison */
    if ((rc == 1) != ((entry & QCOW2_OFLAG_COPIED) != 0))
        defer_copied(ck, UINT32_MAX, entry, rc);
}

/* Check the L2 table in ck->l2_buf, found at `l2_offset`. `copied`: it is an active table
 * whose COPIED flags are checked now (plain check). */
static int check_l2(struct check *ck, struct qcow2_check_result *res, uint64_t l2_offset,
                    bool frag_info, bool copied, unsigned fix)
{
    struct qcow2_image *img = ck->img;
    uint64_t cs = img->cluster_size;
    int ret;

    uint64_t next_contiguous = 0;
    for (uint64_t i = 0; i < img->l2_size; i++) {
        /* Unallocated entries (all zero) hold nothing to count or check: skipped in runs. */
        if (!l2_get_entry(img, ck->l2_buf, i) && !l2_get_bitmap(img, ck->l2_buf, i)) {
            i = l2_skip_identical(img, ck->l2_buf, i, i + 1, img->l2_size) - 1;
            continue;
        }
        uint64_t entry = l2_get_entry(img, ck->l2_buf, i);
        uint64_t bitmap = l2_get_bitmap(img, ck->l2_buf, i);
        enum l2_cluster_type type = cluster_type(img, entry);

        if (type != CT_COMPRESSED && (entry & L2E_STD_RESERVED_MASK)) {
            report(ck, "ERROR found l2 entry with reserved bits set: %llx", ull(entry));
            res->corruptions++;
        }

        switch (type) {
        case CT_COMPRESSED: {
            if (entry & QCOW2_OFLAG_COPIED) {
                report(ck,
                       "ERROR: coffset=0x%llx: copied flag must never be set for compressed "
                       "clusters",
                       ull(entry & img->cluster_offset_mask));
                entry &= ~QCOW2_OFLAG_COPIED;
                res->corruptions++;
            }
            if (has_data_file(img)) {
                report(ck, "ERROR compressed cluster %llu with data file, entry=0x%llx", ull(i),
                       ull(entry));
                res->corruptions++;
                break;
            }
            if (bitmap) {
                report(ck,
                       "ERROR compressed cluster %llu with non-zero subcluster allocation "
                       "bitmap, entry=0x%llx",
                       ull(i), ull(entry));
                res->corruptions++;
                break;
            }
            uint64_t coffset, csize;
            cluster_compressed_range(img, entry, &coffset, &csize);
            ret = count_range(ck, res, coffset, csize);
            if (ret < 0)
                return ret;
            if (frag_info) {
                /* Compressed clusters share sectors: fragmented by nature. */
                res->allocated_clusters++;
                res->compressed_clusters++;
                res->fragmented_clusters++;
            }
            break;
        }

        case CT_ZERO_ALLOC:
        case CT_NORMAL: {
            uint64_t offset = entry & L2E_OFFSET_MASK;
            if (copied)
                inline_copied_l2(ck, entry);
            if ((bitmap >> 32) & bitmap) {
                res->corruptions++;
                report(ck,
                       "ERROR offset=%llx: Allocated cluster has corrupted subcluster "
                       "allocation bitmap",
                       ull(offset));
            }
            if (offset_into_cluster(img, offset)) {
                res->corruptions++;
                bool has_data = img->extended_l2 ? (bitmap & QCOW2_SC_ALL_ALLOC) != 0
                                                 : !(entry & QCOW2_OFLAG_ZERO);
                if (!has_data) {
                    report(ck,
                           "%s offset=%llx: Preallocated cluster is not properly aligned; L2 "
                           "entry corrupted.",
                           repairing(fix, QCOW2_CHECK_FIX_ERRORS), ull(offset));
                    if (fix & QCOW2_CHECK_FIX_ERRORS) {
                        if (fix_entry_by_zero(ck, res, l2_offset, i) == 0)
                            continue; /* it holds no cluster any more */
                    }
                } else {
                    report(ck,
                           "ERROR offset=%llx: Data cluster is not properly aligned; L2 entry "
                           "corrupted.",
                           ull(offset));
                }
            }
            if (frag_info) {
                res->allocated_clusters++;
                if (next_contiguous && offset != next_contiguous)
                    res->fragmented_clusters++;
                next_contiguous = offset + cs;
            }
            if (!has_data_file(img)) {
                ret = count_range(ck, res, offset, cs);
                if (ret < 0)
                    return ret;
            }
            break;
        }

        case CT_ZERO_PLAIN:
            break;

        case CT_UNALLOCATED:
            if (bitmap & QCOW2_SC_ALL_ALLOC) {
                res->corruptions++;
                report(ck, "ERROR: Unallocated cluster has non-zero subcluster allocation map");
            }
            break;
        }
    }
    return 0;
}

/* Point ck->l2_buf at the L2 table at `l2_offset`, entry `i` of `l1`: from the tables read
 * last, or read now together with the tables the next L1 entries name right after it on disk
 * (a converted or preallocated image lays them out so): one request for a run. */
static int read_l2(struct check *ck, const uint64_t *l1, uint32_t l1_size, uint32_t i,
                   uint64_t l2_offset)
{
    struct qcow2_image *img = ck->img;
    uint64_t cs = img->cluster_size;
    if (ck->run_len && l2_offset >= ck->run_offset &&
        l2_offset - ck->run_offset <= ck->run_len - cs &&
        !offset_into_cluster(img, l2_offset - ck->run_offset)) {
        ck->l2_buf = ck->l2_run + (l2_offset - ck->run_offset);
        return 0;
    }
    uint64_t n = 1;
    if (!offset_into_cluster(img, l2_offset)) {
        while (n < ck->run_cap / cs && i + n < l1_size &&
               (be64_get(&l1[i + n]) & L1E_OFFSET_MASK) == l2_offset + n * cs)
            n++;
    }
    ck->run_len = 0;
    ck->l2_buf = ck->l2_run;
    int ret = file_pread(img->file, ck->l2_run, n * cs, l2_offset);
    if (ret < 0 && n > 1) {
        n = 1; /* the error, if any, is the first table's own */
        ret = file_pread(img->file, ck->l2_run, cs, l2_offset);
    }
    if (ret == 0) {
        ck->run_offset = l2_offset;
        ck->run_len = n * cs;
    }
    return ret;
}

static int check_l1(struct check *ck, struct qcow2_check_result *res, uint64_t l1_offset,
                    uint32_t l1_size, bool frag_info, unsigned fix)
{
    struct qcow2_image *img = ck->img;
    if (l1_size == 0)
        return 0;
    size_t bytes = (size_t)l1_size * L1E_SIZE;
    int ret = count_range(ck, res, l1_offset, bytes);
    if (ret < 0)
        return ret;
    uint64_t *l1 = malloc(bytes);
    if (!l1) {
        res->check_errors++;
        return set_error(img, -ENOMEM, "out of memory for an L1 table of %u entries", l1_size);
    }
    ret = file_pread(img->file, l1, bytes, l1_offset);
    if (ret < 0) {
        report(ck, "ERROR: I/O error reading the L1 table at 0x%llx: %s", ull(l1_offset),
               strerror(-ret));
        res->check_errors++;
        free(l1);
        return set_error(img, ret, "reading the L1 table at 0x%llx failed: %s", ull(l1_offset),
                         strerror(-ret));
    }
    ck->run_len = 0; /* tables read for another L1 may have been repaired since */
    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t entry = be64_get(&l1[i]);
        if (!entry)
            continue;
        if (entry & L1E_RESERVED_MASK) {
            report(ck, "ERROR found L1 entry with reserved bits set: %llx", ull(entry));
            res->corruptions++;
        }
        uint64_t l2_offset = entry & L1E_OFFSET_MASK;
        ret = count_range(ck, res, l2_offset, img->cluster_size);
        if (ret < 0)
            break;
        if (offset_into_cluster(img, l2_offset)) {
            report(ck, "ERROR l2_offset=%llx: Table is not cluster aligned; L1 entry corrupted",
                   ull(l2_offset));
            res->corruptions++;
        }
        /* COPIED of the active tables, against the on-disk refcounts (as QEMU's second pass
         * does; a table whose own refcount cannot be read is skipped there too). */
        bool copied = false;
        uint64_t rc;
        if (frag_info && ck->copied_inline && l2_offset &&
            memo_refcount(ck, l2_offset >> img->cluster_bits, &rc) == 0) {
            copied = true;
            if ((rc == 1) != ((entry & QCOW2_OFLAG_COPIED) != 0))
                defer_copied(ck, i, entry, rc);
        }
        ret = read_l2(ck, l1, l1_size, i, l2_offset);
        if (ret < 0) {
            report(ck, "ERROR: I/O error reading the L2 table at 0x%llx: %s", ull(l2_offset),
                   strerror(-ret));
            res->check_errors++;
            ret = set_error(img, ret, "reading the L2 table at 0x%llx failed: %s",
                            ull(l2_offset), strerror(-ret));
            break;
        }
        ret = check_l2(ck, res, l2_offset, frag_info, copied, fix);
    }
    free(l1);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Snapshot table. */

/* Read the snapshot table (snapshot.c parses it). A table that cannot be read stops the
 * check, as in QEMU; with FIX_ERRORS, extra data beyond the maximum is dropped (the table is
 * rewritten later). */
static int read_snapshots(struct check *ck, struct qcow2_check_result *res, unsigned fix)
{
    struct qcow2_image *img = ck->img;
    uint32_t nb = img->hdr.nb_snapshots;
    uint64_t start = img->hdr.snapshots_offset;
    const char *why = NULL;
    int ret = 0;

    if (nb == 0)
        return 0;
    /* The fixed parts must fit the limits and a 64-bit offset; a table past the end of the
     * file reads as zeros (what is wrong with that is found below and when counting). */
    if (nb > QCOW2_MAX_SNAPSHOTS) {
        why = "snapshot table too large";
        ret = -EFBIG;
    } else if (offset_into_cluster(img, start) ||
               start > INT64_MAX - (uint64_t)nb * QCOW2_SNAPSHOT_HEADER_SIZE) {
        why = "snapshot table offset invalid";
        ret = -EINVAL;
    }
    if (why) {
        report(ck, "ERROR %s", why);
        if (nb > QCOW2_MAX_SNAPSHOTS)
            report(ck, "You can force-remove all %u overhanging snapshots with check -r all",
                   nb - QCOW2_MAX_SNAPSHOTS);
        res->check_errors++;
        return set_error(img, ret, "%s", why);
    }

    uint32_t bad;
    ret = snapshot_table_read(img, start, nb, (fix & QCOW2_CHECK_FIX_ERRORS) != 0, &ck->snaps,
                              &bad);
    if (ret < 0) {
        res->check_errors++;
        if (ret == -ENOMEM)
            return ret;
        if (ret != -EFBIG) {
            report(ck, "ERROR failed to read the snapshot table: %s", strerror(-ret));
        } else if (bad != UINT32_MAX) {
            report(ck, "ERROR failed to read the snapshot table: Too much extra metadata in "
                       "snapshot table entry %u", bad);
            report(ck, "You can force-remove this extra metadata with check -r all");
        } else {
            report(ck, "ERROR failed to read the snapshot table: Snapshot table is too big");
        }
        return ret;
    }
    for (uint32_t i = 0; i < nb; i++) {
        const struct snapshot *sn = &ck->snaps.sn[i];
        if (sn->extra_truncated_from) {
            report(ck,
                   "Discarding too much extra metadata in snapshot table entry %u (%u > %u)", i,
                   sn->extra_truncated_from, SNAPSHOT_MAX_EXTRA_DATA);
            res->corruptions++;
        }
    }

    /* Every entry of a v3 image carries at least vm_state_size_large and disk_size. */
    if (img->hdr.version >= 3) {
        for (uint32_t i = 0; i < nb; i++) {
            if (ck->snaps.sn[i].extra_data_size < SNAPSHOT_MIN_V3_EXTRA_DATA) {
                res->corruptions++;
                report(ck, "%s snapshot table entry %u is incomplete",
                       repairing(fix, QCOW2_CHECK_FIX_ERRORS), i);
            }
        }
    }
    return 0;
}

/* Rewrite the snapshot table at a new place, every entry with at least the extra data QEMU
 * writes (missing fields get their defaults: the 32-bit VM state size, the current disk
 * size, no icount). Refcounts must be right: this allocates and frees clusters. */
static int rewrite_snapshots(struct check *ck)
{
    struct qcow2_image *img = ck->img;
    uint64_t old_size = img->hdr.snapshots_offset + ck->snaps.size <= ck->file_len
                            ? ck->snaps.size
                            : 0; /* past the end of the file: never had clusters to free */
    int ret = snapshot_table_write(img, ck->snaps.sn, ck->snaps.nb, old_size);
    snapshot_close(img); /* the image's own copy, if it read one, is stale */
    if (ret == 0)
        ck->snaps.size = snapshot_table_size(ck->snaps.sn, ck->snaps.nb);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Bitmaps. */

static int count_bitmap_table(struct check *ck, struct qcow2_check_result *res,
                              uint64_t table_offset, uint32_t table_size)
{
    struct qcow2_image *img = ck->img;
    size_t bytes = (size_t)table_size * BME_TABLE_ENTRY_SIZE;
    int ret = count_range(ck, res, table_offset, bytes);
    if (ret < 0)
        return ret;
    uint8_t *table = malloc(bytes);
    if (!table) {
        res->check_errors++;
        return set_error(img, -ENOMEM, "out of memory for a bitmap table");
    }
    ret = file_pread(img->file, table, bytes, table_offset);
    if (ret < 0) {
        res->corruptions++;
        free(table);
        return set_error(img, ret, "reading the bitmap table at 0x%llx failed: %s",
                         ull(table_offset), strerror(-ret));
    }
    for (uint32_t i = 0; i < table_size && ret == 0; i++) {
        uint64_t entry = be64_get(table + (size_t)i * BME_TABLE_ENTRY_SIZE);
        uint64_t offset = entry & BME_TABLE_ENTRY_OFFSET_MASK;
        if ((entry & BME_TABLE_ENTRY_RESERVED_MASK) ||
            (offset && ((entry & BME_TABLE_ENTRY_ALL_ONES) || offset_into_cluster(img, offset)))) {
            res->corruptions++;
            continue;
        }
        if (offset)
            ret = count_range(ck, res, offset, img->cluster_size);
    }
    free(table);
    return ret;
}

/* The bitmap directory, every bitmap table and every bitmap data cluster. Bitmaps count only
 * while the autoclear bit says they are consistent (otherwise nobody uses their clusters: they
 * are leaks, as for QEMU). A directory that cannot be parsed is a corruption that stops the
 * check. */
static int count_bitmaps(struct check *ck, struct qcow2_check_result *res)
{
    struct qcow2_image *img = ck->img;
    const struct qcow2_header *h = &img->hdr;
    if (!h->has_bitmaps_ext || !(h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) ||
        h->nb_bitmaps == 0)
        return 0;
    int ret = count_range(ck, res, h->bitmap_directory_offset, h->bitmap_directory_size);
    if (ret < 0)
        return ret;

    uint64_t size = h->bitmap_directory_size;
    uint8_t *dir = NULL;
    const char *why = NULL;
    if (size > BME_MAX_DIRECTORY_SIZE || size < BME_HEADER_SIZE) {
        why = "bad bitmap directory size";
        goto bad;
    }
    dir = malloc(size);
    if (!dir) {
        res->check_errors++;
        return set_error(img, -ENOMEM, "out of memory for the bitmap directory");
    }
    ret = file_pread(img->file, dir, size, h->bitmap_directory_offset);
    if (ret < 0) {
        why = "cannot read the bitmap directory";
        goto bad;
    }
    uint64_t pos = 0;
    uint32_t n = 0;
    while (pos < size) {
        if (size - pos < BME_HEADER_SIZE) {
            why = "truncated bitmap directory entry";
            goto bad;
        }
        const uint8_t *e = dir + pos;
        uint64_t table_offset = be64_get(e + BME_TABLE_OFFSET);
        uint32_t table_size = be32_get(e + BME_TABLE_SIZE);
        uint32_t flags = be32_get(e + BME_FLAGS);
        uint8_t type = e[BME_TYPE];
        uint8_t gran_bits = e[BME_GRANULARITY_BITS];
        uint16_t name_size = be16_get(e + BME_NAME_SIZE);
        uint32_t extra = be32_get(e + BME_EXTRA_DATA_SIZE);
        uint64_t len = ROUND_UP(BME_HEADER_SIZE + (uint64_t)extra + name_size, 8);
        if (len > size - pos) {
            why = "bitmap directory entry runs past the directory";
            goto bad;
        }
        if (extra != 0 || (flags & BME_RESERVED_FLAGS) || table_size == 0 ||
            table_offset == 0 || offset_into_cluster(img, table_offset) ||
            table_size > BME_MAX_TABLE_SIZE || name_size == 0 ||
            name_size > BME_MAX_NAME_SIZE || type != BME_TYPE_DIRTY_TRACKING ||
            gran_bits > 63) {
            why = "invalid bitmap directory entry";
            goto bad;
        }
        uint64_t phys = (uint64_t)table_size * img->cluster_size;
        /* A consistent bitmap must cover the whole disk (phys * 8 bits of 2^gran bytes). */
        if (phys > BME_MAX_PHYS_SIZE ||
            (!(flags & BME_FLAG_IN_USE) && gran_bits <= 31 &&
             img->size > ((phys * 8) << gran_bits))) {
            why = "bitmap table too small for the disk";
            goto bad;
        }
        pos += len;
        n++;
    }
    if (n != h->nb_bitmaps) {
        why = "bitmap count does not match the directory";
        goto bad;
    }
    for (pos = 0; pos < size && ret == 0;) {
        const uint8_t *e = dir + pos;
        ret = count_bitmap_table(ck, res, be64_get(e + BME_TABLE_OFFSET),
                                 be32_get(e + BME_TABLE_SIZE));
        pos += ROUND_UP(BME_HEADER_SIZE + (uint64_t)be32_get(e + BME_EXTRA_DATA_SIZE) +
                            be16_get(e + BME_NAME_SIZE),
                        8);
    }
    free(dir);
    return ret;

bad:
    free(dir);
    report(ck, "ERROR bitmap directory at 0x%llx: %s", ull(h->bitmap_directory_offset), why);
    res->corruptions++;
    return set_error(img, -EINVAL, "bitmap directory at 0x%llx: %s",
                     ull(h->bitmap_directory_offset), why);
}

/* ------------------------------------------------------------------------------------------ */
/* Refcount blocks. */

static int check_refblocks(struct check *ck, struct qcow2_check_result *res, unsigned fix)
{
    struct qcow2_image *img = ck->img;
    for (uint64_t i = 0; i < img->refcount_table_size; i++) {
        uint64_t entry = img->refcount_table[i];
        uint64_t offset = entry & REFT_OFFSET_MASK;
        uint64_t cluster = offset >> img->cluster_bits;
        if (entry & REFT_RESERVED_MASK) {
            report(ck, "ERROR refcount table entry %llu has reserved bits set", ull(i));
            res->corruptions++;
            ck->rebuild = true;
            continue;
        }
        if (offset_into_cluster(img, offset)) {
            report(ck,
                   "ERROR refcount block %llu is not cluster aligned; refcount table entry "
                   "corrupted",
                   ull(i));
            res->corruptions++;
            ck->rebuild = true;
            continue;
        }
        if (cluster >= ck->nb_clusters) {
            res->corruptions++;
            report(ck, "%s refcount block %llu is outside image",
                   repairing(fix, QCOW2_CHECK_FIX_ERRORS), ull(i));
            if (!(fix & QCOW2_CHECK_FIX_ERRORS))
                continue;
            /* Grow the file to include the block (it reads as zeros: all free). An offset
             * no image can reach is a file too large, as the host would say. */
            int ret = -EFBIG;
            if (offset <= QCOW2_MAX_CLUSTER_OFFSET)
                ret = file_truncate(img->file, offset + img->cluster_size);
            if (ret < 0)
                report(ck, "Could not resize file: %s", strerror(-ret));
            int64_t len = ret == 0 ? file_size(img->file) : ret;
            if (len >= 0) {
                ck->file_len = (uint64_t)len;
                if (refs_grow(ck, size_to_clusters(img, (uint64_t)len)) < 0) {
                    res->check_errors++;
                    return set_error(img, -ENOMEM, "out of memory");
                }
            }
            if (len < 0 || cluster >= ck->nb_clusters) {
                ck->rebuild = true;
                report(ck, "ERROR could not resize image: %s",
                       strerror(len < 0 ? (int)-len : EINVAL));
                continue;
            }
            res->corruptions--;
            res->corruptions_fixed++;
            ret = count_range(ck, res, offset, img->cluster_size);
            if (ret < 0)
                return ret;
            continue;
        }
        if (offset != 0) {
            int ret = count_range(ck, res, offset, img->cluster_size);
            if (ret < 0)
                return ret;
            uint64_t rc = refs_get(ck, cluster);
            if (rc != 1) {
                report(ck, "ERROR refcount block %llu refcount=%llu", ull(i), ull(rc));
                res->corruptions++;
                ck->rebuild = true;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The whole computation. */

static int calculate_refcounts(struct check *ck, struct qcow2_check_result *res, unsigned fix)
{
    struct qcow2_image *img = ck->img;
    int ret;

    ck->rb_valid = false;
    ck->run_len = 0;
    ck->nb_copied = 0;
    ck->copied_overflow = false;
    /* header */
    if ((ret = count_range(ck, res, 0, img->cluster_size)) < 0)
        return ret;
    /* active L1 and what it references */
    ret = check_l1(ck, res, img->hdr.l1_table_offset, img->l1_size, true, fix);
    if (ret < 0)
        return ret;
    /* snapshots */
    if (has_data_file(img) && ck->snaps.nb) {
        report(ck, "ERROR %u snapshots in image with data file", ck->snaps.nb);
        res->corruptions++;
    }
    for (uint32_t i = 0; i < ck->snaps.nb; i++) {
        const struct snapshot *sn = &ck->snaps.sn[i];
        if (offset_into_cluster(img, sn->l1_table_offset)) {
            report(ck,
                   "ERROR snapshot %s (%s) l1_offset=%#llx: L1 table is not cluster aligned; "
                   "snapshot table entry corrupted",
                   sn->id, sn->name, ull(sn->l1_table_offset));
            res->corruptions++;
            continue;
        }
        if ((uint64_t)sn->l1_size * L1E_SIZE > QCOW2_MAX_L1_BYTES) {
            report(ck,
                   "ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table "
                   "entry corrupted",
                   sn->id, sn->name, sn->l1_size);
            res->corruptions++;
            continue;
        }
        ret = check_l1(ck, res, sn->l1_table_offset, sn->l1_size, false, fix);
        if (ret < 0)
            return ret;
    }
    if ((ret = count_range(ck, res, img->hdr.snapshots_offset, ck->snaps.size)) < 0)
        return ret;
    /* the refcount table */
    ret = count_range(ck, res, img->hdr.refcount_table_offset,
                      img->refcount_table_size * REFTABLE_ENTRY_SIZE);
    if (ret < 0)
        return ret;
    /* the LUKS header area */
    if (img->hdr.has_crypto_ext && img->hdr.crypto_length) {
        ret = count_range(ck, res, img->hdr.crypto_offset, img->hdr.crypto_length);
        if (ret < 0)
            return ret;
    }
    if ((ret = count_bitmaps(ck, res)) < 0)
        return ret;
    ret = check_refblocks(ck, res, fix);
    ck->rb_valid = false;
    return ret;
}

/* Compare the on-disk refcounts with the computed ones. With fix flags, set the on-disk
 * value where allowed: LEAKS lowers, ERRORS raises. A used cluster without any on-disk
 * refcount means the refcount structure itself is unreliable: it needs a rebuild. */
static void compare_refcounts(struct check *ck, struct qcow2_check_result *res, unsigned fix)
{
    struct qcow2_image *img = ck->img;
    ck->highest_cluster = 0;
    ck->rb_valid = false;
    for (uint64_t i = 0; i < ck->nb_clusters; i++) {
        uint64_t disk;
        int ret = memo_refcount(ck, i, &disk);
        if (ret < 0) {
            report(ck, "Can't get refcount for cluster %llu: %s", ull(i), strerror(-ret));
            res->check_errors++;
            continue;
        }
        uint64_t computed = refs_get(ck, i);
        if (disk > 0 || computed > 0)
            ck->highest_cluster = i;
        if (disk == computed)
            continue;

        int64_t *fixed = NULL;
        if (disk == 0)
            ck->rebuild = true;
        else if (disk > computed && (fix & QCOW2_CHECK_FIX_LEAKS))
            fixed = &res->leaks_fixed;
        else if (disk < computed && (fix & QCOW2_CHECK_FIX_ERRORS))
            fixed = &res->corruptions_fixed;
        report(ck, "%s cluster %llu refcount=%llu reference=%llu",
               fixed ? "Repairing" : disk < computed ? "ERROR" : "Leaked", ull(i), ull(disk),
               ull(computed));
        ck->rb_valid = false; /* set_disk_refcount() uses the cache */
        if (fixed && set_disk_refcount(img, i, computed) == 0) {
            (*fixed)++;
            continue;
        }
        if (disk < computed)
            res->corruptions++;
        else
            res->leaks++;
    }
    ck->rb_valid = false;
}

/* ------------------------------------------------------------------------------------------ */
/* Rebuilding the refcount structure. */

/* Write a new refcount table and the refcount blocks it needs after everything in use
 * (they describe themselves), then switch the header to it with one synced write. The old
 * table and blocks are left behind as leaks for the caller to free. The blocks are written
 * with img->refcount_order; when that differs from the order on disk (`new_order`: a width
 * change, hdr.refcount_order already set to it), the switch writes the header bytes from the
 * table pointer to the order, all in the first sector, in one write. */
static int rebuild_refcount_structure(struct check *ck, bool new_order)
{
    struct qcow2_image *img = ck->img;
    uint64_t cs = img->cluster_size;
    uint64_t per_block = 1ull << img->refcount_block_bits;
    uint64_t per_table_cluster = cs / REFTABLE_ENTRY_SIZE;
    int ret;

    /* Cached blocks of the old structure must never be written again. */
    ret = cache_flush(img->refcount_cache);
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < img->refcount_table_size; i++) {
        uint64_t off = img->refcount_table[i] & REFT_OFFSET_MASK;
        if (off && !offset_into_cluster(img, off))
            cache_discard(img->refcount_cache, off);
    }

    /* Which blocks the clusters in use need, and where the new structures go. */
    uint64_t start = MAX(ck->nb_clusters, size_to_clusters(img, ck->file_len));
    uint64_t used_blocks = DIV_ROUND_UP(ck->nb_clusters, per_block);
    bool *need = calloc(used_blocks ? used_blocks : 1, sizeof(*need));
    if (!need)
        return set_error(img, -ENOMEM, "out of memory");
    uint64_t base = 0;
    for (uint64_t c = 0; c < ck->nb_clusters; c++) {
        if (refs_get(ck, c) && !need[c / per_block]) {
            need[c / per_block] = true;
            base++;
        }
    }
    /* Fixed point: the new blocks and table also need refcount blocks. */
    uint64_t nb_blocks = base, table_clusters = 1, end;
    for (;;) {
        end = start + nb_blocks + table_clusters;
        uint64_t extra = 0;
        for (uint64_t b = start / per_block; b <= (end - 1) / per_block; b++)
            if (b >= used_blocks || !need[b])
                extra++;
        uint64_t entries = (end - 1) / per_block + 1;
        uint64_t tc = DIV_ROUND_UP(entries, per_table_cluster);
        if (base + extra == nb_blocks && tc == table_clusters)
            break;
        nb_blocks = MAX(nb_blocks, base + extra);
        table_clusters = MAX(table_clusters, tc);
    }
    uint64_t entries = table_clusters * per_table_cluster;
    if (table_clusters * cs > QCOW2_MAX_REFTABLE_BYTES ||
        end > (QCOW2_MAX_CLUSTER_OFFSET >> img->cluster_bits)) {
        free(need);
        return set_error(img, -EFBIG, "the rebuilt refcount table would be too large");
    }
    if (refs_grow(ck, end) < 0) {
        free(need);
        return set_error(img, -ENOMEM, "out of memory");
    }
    for (uint64_t c = start; c < end; c++)
        (void)refs_set(ck, c, 1); /* below REFS_BIG: cannot fail */

    uint64_t *table = calloc(entries, sizeof(*table));
    uint8_t *buf = malloc(MAX(cs, entries * REFTABLE_ENTRY_SIZE));
    if (!table || !buf) {
        free(need);
        free(table);
        free(buf);
        return set_error(img, -ENOMEM, "out of memory");
    }

    /* The refcount blocks, in table order. */
    uint64_t next = start;
    ret = 0;
    for (uint64_t b = 0; b * per_block < end && ret == 0; b++) {
        bool wanted = b < used_blocks ? need[b] : false;
        if (!wanted && !(b >= start / per_block && b <= (end - 1) / per_block))
            continue;
        uint64_t off = next++ << img->cluster_bits;
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < per_block && b * per_block + j < end; j++) {
            uint64_t v = refs_get(ck, b * per_block + j);
            if (v)
                refcount_block_set(img, buf, j, v);
        }
        table[b] = off;
        cache_discard(img->refcount_cache, off);
        cache_discard(img->l2_cache, off);
        ret = file_pwrite(img->file, buf, cs, off);
    }
    free(need);
    assert(ret < 0 || next == start + nb_blocks);

    uint64_t table_offset = (start + nb_blocks) << img->cluster_bits;
    if (ret == 0) {
        for (uint64_t i = 0; i < entries; i++)
            be64_put(buf + i * REFTABLE_ENTRY_SIZE, table[i]);
        for (uint64_t o = table_offset; o < table_offset + table_clusters * cs; o += cs)
            cache_discard(img->l2_cache, o);
        ret = file_pwrite(img->file, buf, entries * REFTABLE_ENTRY_SIZE, table_offset);
    }
    if (ret == 0)
        ret = file_flush(img->file);
    free(buf);
    if (ret < 0) {
        free(table);
        return set_error(img, ret, "writing the new refcount structure failed: %s",
                         strerror(-ret));
    }

    if (new_order) {
        /* The new structure is complete on disk: from here on memory uses it, and a failed
         * header write is written again at the next flush. The table pointer and the order
         * change in one write of the header bytes from the one to the other (the fields in
         * between written as they are), inside the first sector: never torn. */
        img->hdr.refcount_table_offset = table_offset;
        img->hdr.refcount_table_clusters = (uint32_t)table_clusters;
        assert(img->hdr.version >= 3); /* bytes 72.. are extensions in v2 */
        uint8_t *c0 = malloc(cs);
        char msg[256];
        ret = c0 ? header_serialize(&img->hdr, c0, cs, msg, sizeof(msg)) : -ENOMEM;
        if (ret == 0)
            ret = header_write_field(img, HDR_REFCOUNT_TABLE_OFFSET,
                                     c0 + HDR_REFCOUNT_TABLE_OFFSET,
                                     HDR_REFCOUNT_ORDER + 4 - HDR_REFCOUNT_TABLE_OFFSET);
        else
            set_error(img, ret, "%s", c0 ? msg : "out of memory");
        free(c0);
        if (ret < 0)
            img->header_dirty = true;
    } else {
        /* refcount_table_offset and refcount_table_clusters, in one write */
        uint8_t field[HDR_REFCOUNT_TABLE_CLUSTERS + 4 - HDR_REFCOUNT_TABLE_OFFSET];
        be64_put(field, table_offset);
        be32_put(field + (HDR_REFCOUNT_TABLE_CLUSTERS - HDR_REFCOUNT_TABLE_OFFSET),
                 (uint32_t)table_clusters);
        ret = header_write_field(img, HDR_REFCOUNT_TABLE_OFFSET, field, sizeof(field));
        if (ret < 0) {
            free(table);
            return ret;
        }
        img->hdr.refcount_table_offset = table_offset;
        img->hdr.refcount_table_clusters = (uint32_t)table_clusters;
    }
    free(img->refcount_table);
    img->refcount_table = table;
    img->refcount_table_size = entries;
    img->metadata_gen++;
    img->free_cluster_index = 0;
    img->free_byte_offset = 0;
    ck->file_len = MAX(ck->file_len, end << img->cluster_bits);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* COPIED flags. */

static int write_l1_entry(struct qcow2_image *img, uint32_t index)
{
    uint8_t b[L1E_SIZE];
    be64_put(b, img->l1_table[index]);
    uint64_t where = img->hdr.l1_table_offset + (uint64_t)index * L1E_SIZE;
    int ret = file_pwrite(img->file, b, sizeof(b), where);
    if (ret == 0)
        ret = file_flush(img->file);
    if (ret < 0)
        return set_error(img, ret, "writing L1 entry %u failed: %s", index, strerror(-ret));
    return 0;
}

/* The COPIED verdicts of a plain check's count, worded as check_oflag_copied() words them. */
static void report_copied(struct check *ck, struct qcow2_check_result *res)
{
    for (size_t k = 0; k < ck->nb_copied; k++) {
        const struct copied_error *c = &ck->copied[k];
        res->corruptions++;
        if (c->l1_index != UINT32_MAX)
            report(ck, "ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu",
                   c->l1_index, ull(c->entry), ull(c->refcount));
        else
            report(ck, "ERROR OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
                   ull(c->entry), ull(c->refcount));
    }
}

/* COPIED must be set exactly on the active L1/L2 entries whose cluster has refcount 1. A plain
 * check finds these while counting (report_copied); this second pass reads the active tables
 * again for a repair, which must see the repaired refcounts, and for a plain check with too
 * many verdicts to keep. */
static int check_oflag_copied(struct check *ck, struct qcow2_check_result *res, unsigned fix)
{
    struct qcow2_image *img = ck->img;
    bool repair;
    if (fix & QCOW2_CHECK_FIX_ERRORS)
        repair = true;
    else if (fix & QCOW2_CHECK_FIX_LEAKS)
        /* The refcounts were just repaired: trust them only if that fully worked. */
        repair = !res->check_errors && !res->corruptions && !res->leaks;
    else
        repair = false;

    for (uint32_t i = 0; i < img->l1_size; i++) {
        uint64_t l1_entry = img->l1_table[i];
        uint64_t l2_offset = l1_entry & L1E_OFFSET_MASK;
        if (!l2_offset)
            continue;
        uint64_t rc;
        if (disk_refcount(img, l2_offset >> img->cluster_bits, &rc) < 0)
            continue; /* already reported by the comparison */
        if ((rc == 1) != ((l1_entry & QCOW2_OFLAG_COPIED) != 0)) {
            res->corruptions++;
            report(ck, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu",
                   repair ? "Repairing" : "ERROR", i, ull(l1_entry), ull(rc));
            if (repair) {
                img->l1_table[i] = rc == 1 ? l1_entry | QCOW2_OFLAG_COPIED
                                           : l1_entry & ~QCOW2_OFLAG_COPIED;
                int ret = write_l1_entry(img, i);
                if (ret < 0) {
                    /* Memory has the fix: the next flush writes the whole table again. */
                    img->l1_dirty = true;
                    res->check_errors++;
                    return ret;
                }
                res->corruptions--;
                res->corruptions_fixed++;
            }
        }

        ck->run_len = 0;
        ck->l2_buf = ck->l2_run;
        int ret = file_pread(img->file, ck->l2_buf, img->cluster_size, l2_offset);
        if (ret < 0) {
            report(ck, "ERROR: Could not read L2 table: %s", strerror(-ret));
            res->check_errors++;
            return set_error(img, ret, "reading the L2 table at 0x%llx failed: %s",
                             ull(l2_offset), strerror(-ret));
        }
        int64_t dirty = 0;
        for (uint64_t j = 0; j < img->l2_size; j++) {
            uint64_t entry = l2_get_entry(img, ck->l2_buf, j);
            if (!entry) { /* unallocated: skipped in runs */
                j = l2_skip_identical(img, ck->l2_buf, j, j + 1, img->l2_size) - 1;
                continue;
            }
            enum l2_cluster_type type = cluster_type(img, entry);
            if (type != CT_NORMAL && type != CT_ZERO_ALLOC)
                continue;
            if (has_data_file(img))
                rc = 1;
            else if (disk_refcount(img, (entry & L2E_OFFSET_MASK) >> img->cluster_bits, &rc) < 0)
                continue;
            if ((rc == 1) != ((entry & QCOW2_OFLAG_COPIED) != 0)) {
                res->corruptions++;
                report(ck, "%s OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
                       repair ? "Repairing" : "ERROR", ull(entry), ull(rc));
                if (repair) {
                    l2_set_entry(img, ck->l2_buf, j,
                                 rc == 1 ? entry | QCOW2_OFLAG_COPIED
                                         : entry & ~QCOW2_OFLAG_COPIED);
                    dirty++;
                }
            }
        }
        if (dirty > 0) {
            ret = file_pwrite(img->file, ck->l2_buf, img->cluster_size, l2_offset);
            if (ret == 0)
                ret = file_flush(img->file);
            if (ret < 0) {
                report(ck, "ERROR: Could not write L2 table: %s", strerror(-ret));
                res->check_errors++;
                return set_error(img, ret, "writing the L2 table at 0x%llx failed: %s",
                                 ull(l2_offset), strerror(-ret));
            }
            if (!offset_into_cluster(img, l2_offset))
                cache_discard(img->l2_cache, l2_offset);
            res->corruptions -= dirty;
            res->corruptions_fixed += dirty;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* One pass. */

static void add_result(struct qcow2_check_result *out, const struct qcow2_check_result *in,
                       bool with_allocation_info)
{
    out->corruptions += in->corruptions;
    out->leaks += in->leaks;
    out->check_errors += in->check_errors;
    out->corruptions_fixed += in->corruptions_fixed;
    out->leaks_fixed += in->leaks_fixed;
    if (with_allocation_info) {
        out->image_end_offset = in->image_end_offset;
        out->total_clusters = in->total_clusters;
        out->allocated_clusters = in->allocated_clusters;
        out->fragmented_clusters = in->fragmented_clusters;
        out->compressed_clusters = in->compressed_clusters;
    }
}

/* Count every reference, compare, repair, and check COPIED. */
static int check_refcounts(struct check *ck, struct qcow2_check_result *res, unsigned fix)
{
    struct qcow2_image *img = ck->img;
    int64_t len = file_size(img->file);
    if (len < 0) {
        res->check_errors++;
        return set_error(img, (int)len, "cannot get the file size: %s", strerror((int)-len));
    }
    ck->file_len = (uint64_t)len;
    uint64_t nb = size_to_clusters(img, ck->file_len);
    if (nb > INT32_MAX) {
        res->check_errors++;
        return set_error(img, -EFBIG, "the image file is too large to check (%llu clusters)",
                         ull(nb));
    }
    res->total_clusters = size_to_clusters(img, ROUND_UP(img->size, 512));
    if (refs_grow(ck, nb) < 0) {
        res->check_errors++;
        return set_error(img, -ENOMEM, "out of memory for the refcounts of %llu clusters",
                         ull(nb));
    }

    ck->copied_inline = fix == 0;
    int ret = calculate_refcounts(ck, res, fix);
    ck->copied_inline = false;
    if (ret < 0)
        return ret;

    /* When nothing needs a rebuild, the comparison runs again below with the fix flags and
     * its result replaces this one. */
    struct qcow2_check_result pre_compare = *res;
    compare_refcounts(ck, res, 0);

    if (ck->rebuild && (fix & QCOW2_CHECK_FIX_ERRORS)) {
        struct qcow2_check_result old = *res;
        int64_t fresh_leaks = 0;
        report(ck, "Rebuilding refcount structure");
        ret = rebuild_refcount_structure(ck, false);
        if (ret < 0) {
            report(ck, "ERROR rebuilding the refcount structure failed: %s", qcow2_error(img));
            res->check_errors++;
            return ret;
        }
        res->corruptions = 0;
        res->leaks = 0;
        /* The table moved: count again against the new structure. */
        ck->rebuild = false;
        refs_clear(ck);
        ret = calculate_refcounts(ck, res, 0);
        if (ret < 0)
            return ret;
        if (fix & QCOW2_CHECK_FIX_LEAKS) {
            /* The old structures are leaked now: free them. Leaks left over were made by
             * the rebuild itself. */
            struct qcow2_check_result saved = *res;
            memset(res, 0, sizeof(*res));
            compare_refcounts(ck, res, QCOW2_CHECK_FIX_LEAKS);
            if (ck->rebuild)
                report(ck, "ERROR rebuilt refcount structure is still broken");
            fresh_leaks = res->leaks;
            *res = saved;
        }
        if (res->corruptions < old.corruptions)
            res->corruptions_fixed += old.corruptions - res->corruptions;
        if (res->leaks < old.leaks)
            res->leaks_fixed += old.leaks - res->leaks;
        res->leaks += fresh_leaks;
    } else if (fix) {
        if (ck->rebuild) {
            report(ck, "ERROR need to rebuild refcount structures");
            res->check_errors++;
            return set_error(img, -EIO,
                             "the refcount structure is broken and must be rebuilt (repair "
                             "all errors to do that)");
        }
        if (res->leaks || res->corruptions) {
            *res = pre_compare;
            compare_refcounts(ck, res, fix);
        }
    }
    /* Refcount repairs reach the disk before any COPIED flag that relies on them. */
    if (fix) {
        ret = cache_flush(img->refcount_cache);
        if (ret < 0) {
            res->check_errors++;
            return ret;
        }
    }

    if (fix == 0 && !ck->copied_overflow)
        report_copied(ck, res);
    else if ((ret = check_oflag_copied(ck, res, fix)) < 0)
        return ret;
    res->image_end_offset = (ck->highest_cluster + 1) << img->cluster_bits;
    return 0;
}

/* L2 tables are read up to this many bytes at a time when they lie one after the other. */
#define L2_RUN_BYTES (1u << 20)

static int check_alloc(struct check *ck)
{
    ck->run_cap = MAX(ck->img->cluster_size, L2_RUN_BYTES);
    ck->l2_run = malloc(ck->run_cap);
    ck->l2_buf = ck->l2_run;
    return ck->l2_run ? 0 : -ENOMEM;
}

static void check_free(struct check *ck)
{
    free(ck->l2_run);
    free(ck->copied);
    refs_free(ck);
    snapshot_table_free(&ck->snaps);
}

static int check_pass(struct qcow2_image *img, unsigned fix, struct qcow2_check_result *result,
                      void (*report_fn)(void *, const char *), void *opaque)
{
    struct check ck = {
        .img = img,
        .report = report_fn,
        .opaque = opaque,
    };
    struct qcow2_check_result snap_res = {0}, rc_res = {0};
    memset(result, 0, sizeof(*result));

    if (check_alloc(&ck) < 0) {
        result->check_errors++;
        return set_error(img, -ENOMEM, "out of memory");
    }
    int64_t len = file_size(img->file);
    ck.file_len = len > 0 ? (uint64_t)len : 0;

    int ret = read_snapshots(&ck, &snap_res, fix);
    if (ret < 0) {
        add_result(result, &snap_res, false);
        goto out;
    }
    ret = check_refcounts(&ck, &rc_res, fix);
    add_result(result, &rc_res, true);
    if (ret < 0) {
        add_result(result, &snap_res, false);
        goto out;
    }
    /* A snapshot table with broken entries is rewritten once the refcounts are right. */
    if (snap_res.corruptions && (fix & QCOW2_CHECK_FIX_ERRORS)) {
        ret = rewrite_snapshots(&ck);
        if (ret < 0) {
            report(&ck, "ERROR failed to update snapshot table: %s", qcow2_error(img));
            snap_res.check_errors++;
            add_result(result, &snap_res, false);
            goto out;
        }
        snap_res.corruptions_fixed += snap_res.corruptions;
        snap_res.corruptions = 0;
    }
    add_result(result, &snap_res, false);

    /* Writes done by the repairs are on disk before the image is declared clean. */
    if (fix) {
        ret = cache_flush(img->l2_cache);
        if (ret == 0)
            ret = cache_flush(img->refcount_cache);
        if (ret < 0) {
            result->check_errors++;
            goto out;
        }
    }
    if (fix && result->check_errors == 0 && result->corruptions == 0) {
        ret = header_set_incompat_bits(img, 0, QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
        if (ret < 0)
            goto out;
        img->dirty = false;
        img->corrupt = false;
    }
out:
    check_free(&ck);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */

static int check_image(struct qcow2_image *img, unsigned fix, struct qcow2_check_result *res,
                       void (*report_fn)(void *opaque, const char *msg), void *opaque)
{
    if (img->format != QCOW2_FORMAT_QCOW2)
        return set_error(img, -ENOTSUP, "format does not support checks");
    if (fix & ~(QCOW2_CHECK_FIX_LEAKS | QCOW2_CHECK_FIX_ERRORS))
        return set_error(img, -EINVAL, "unknown check flags 0x%x", fix);
    if (fix && img->read_only)
        return set_error(img, -EROFS, "cannot repair an image opened read-only");

    pthread_mutex_lock(&img->lock);
    int ret = 0;
    if (!img->read_only) {
        /* What memory holds is what the image says: put it on disk first. */
        ret = cluster_flush_metadata(img);
    }
    if (ret == 0)
        ret = check_pass(img, fix, res, report_fn, opaque);
    if (ret == 0 && (res->corruptions_fixed || res->leaks_fixed)) {
        /* Report what is left, as a fresh check sees it. */
        int64_t corruptions_fixed = res->corruptions_fixed;
        int64_t leaks_fixed = res->leaks_fixed;
        ret = check_pass(img, 0, res, report_fn, opaque);
        res->corruptions_fixed = corruptions_fixed;
        res->leaks_fixed = leaks_fixed;
    }
    img->metadata_gen++; /* repairs may have moved tables: rebuild the overlap index */
    pthread_mutex_unlock(&img->lock);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Changing the refcount width (qemu-img amend -o refcount_bits). */

/* The references counted from the metadata, on a flushed image; refuses a damaged one. */
static int count_references(struct check *ck)
{
    struct qcow2_image *img = ck->img;
    struct qcow2_check_result res = {0};
    int64_t len = file_size(img->file);
    if (len < 0)
        return set_error(img, (int)len, "cannot get the file size: %s", strerror((int)-len));
    ck->file_len = (uint64_t)len;
    ck->highest_cluster = 0;
    int ret = read_snapshots(ck, &res, 0);
    if (ret == 0 && refs_grow(ck, size_to_clusters(img, ck->file_len)) < 0)
        ret = set_error(img, -ENOMEM, "out of memory");
    if (ret == 0)
        ret = calculate_refcounts(ck, &res, 0);
    if (ret == 0 && (res.corruptions || res.check_errors))
        ret = set_error(img, -EIO,
                        "the image has %lld errors: repair it first (qemu-img check -r all)",
                        (long long)(res.corruptions + res.check_errors));
    return ret;
}

/* Build the refcount table and blocks at the new width after everything in use, flush,
 * switch the header (width and table together), flush, then free the old structure. A crash
 * leaves either structure complete, at worst with the other one leaked. */
static int change_refcount_order(struct check *ck, unsigned new_order)
{
    struct qcow2_image *img = ck->img;
    int ret = count_references(ck);
    if (ret < 0)
        return ret;
    uint64_t new_max = new_order == 6 ? UINT64_MAX : (1ull << (1u << new_order)) - 1;
    for (uint64_t c = 0; c < ck->nb_clusters; c++) {
        uint64_t v = refs_get(ck, c);
        if (v > new_max)
            return set_error(img, -EINVAL,
                             "Cannot decrease refcount entry width to %u bits: Cluster at "
                             "offset %#llx has a refcount of %llu",
                             1u << new_order, ull(c << img->cluster_bits), ull(v));
    }
    unsigned old_order = img->refcount_order;
    uint64_t old_table = img->hdr.refcount_table_offset;
    refcount_set_order(img, new_order);
    img->hdr.refcount_order = new_order;
    ret = rebuild_refcount_structure(ck, true);
    if (ret < 0 && img->hdr.refcount_table_offset == old_table) {
        /* Failed before the switch: the old structure is still the one in use. */
        refcount_set_order(img, old_order);
        img->hdr.refcount_order = old_order;
        return ret;
    }
    if (ret < 0)
        return ret;
    /* The old table and blocks are leaks now: free them. */
    struct qcow2_check_result res = {0};
    refs_clear(ck);
    ret = calculate_refcounts(ck, &res, 0);
    if (ret == 0) {
        compare_refcounts(ck, &res, QCOW2_CHECK_FIX_LEAKS);
        ret = cache_flush(img->refcount_cache);
    }
    return ret;
}

int check_change_refcount_order(struct qcow2_image *img, unsigned new_order)
{
    if (new_order == img->refcount_order)
        return 0;
    struct check ck = {
        .img = img,
    };
    if (check_alloc(&ck) < 0)
        return set_error(img, -ENOMEM, "out of memory");
    pthread_mutex_lock(&img->lock);
    int ret = cluster_flush_metadata(img);
    if (ret == 0)
        ret = change_refcount_order(&ck, new_order);
    img->metadata_gen++;
    pthread_mutex_unlock(&img->lock);
    check_free(&ck);
    return ret;
}

int qcow2_check(struct qcow2_image *img, unsigned fix, struct qcow2_check_result *res,
                void (*report_fn)(void *opaque, const char *msg), void *opaque)
{
    int ret = res ? abi_check_out(img, &abi_check_result, res) : 0;
    if (ret < 0)
        return ret;
    struct qcow2_check_result full = QCOW2_CHECK_RESULT_INIT;
    ret = check_image(img, fix, &full, report_fn, opaque);
    if (res)
        abi_copy_out(&abi_check_result, res, &full); /* zeros when the check could not run */
    return ret;
}
