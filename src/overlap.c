/* overlap.c - metadata overlap detection: would a write land on the header, the L1 table,
 * an L2 table, the refcount table, a refcount block or the snapshot table?
 * Reads only the in-memory tables of the image (L1, refcount table, header), so that every
 * layer that writes (cache.c for metadata, io.c for data) can ask before it writes. A hit
 * means the refcounts lie about what is in use: the image is marked corrupt. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static bool hits(uint64_t off, uint64_t size, uint64_t start, uint64_t len)
{
    return len && off < start + len && start < off + size;
}

void overlap_index_free(struct qcow2_image *img)
{
    free(img->overlap_index.l2);
    free(img->overlap_index.refblocks);
    memset(&img->overlap_index, 0, sizeof(img->overlap_index));
}

/* Collect the non-zero offsets of `table` (masked), sorted. */
static uint64_t *collect(const uint64_t *table, uint64_t n, uint64_t mask, size_t *count)
{
    uint64_t *out = malloc(sizeof(*out) * (n ? n : 1));
    size_t k = 0;
    if (!out)
        return NULL;
    for (uint64_t i = 0; i < n; i++)
        if (table[i] & mask)
            out[k++] = table[i] & mask;
    qsort(out, k, sizeof(*out), cmp_u64);
    *count = k;
    return out;
}

/* The index is rebuilt only when a table entry changed (rare: new L2 tables and refcount
 * blocks), so a check costs two binary searches instead of a walk over both tables. */
static bool index_ready(struct qcow2_image *img)
{
    if (img->overlap_index.valid && img->overlap_index.gen == img->metadata_gen)
        return true;
    overlap_index_free(img);
    size_t n1 = 0, n2 = 0;
    uint64_t *l2 = collect(img->l1_table, img->l1_size, L1E_OFFSET_MASK, &n1);
    uint64_t *rb = img->refcount_table
                       ? collect(img->refcount_table, img->refcount_table_size,
                                 REFT_OFFSET_MASK, &n2)
                       : calloc(1, sizeof(uint64_t));
    if (!l2 || !rb) {
        free(l2);
        free(rb);
        return false;
    }
    img->overlap_index.l2 = l2;
    img->overlap_index.nb_l2 = n1;
    img->overlap_index.cap_l2 = img->l1_size;
    img->overlap_index.refblocks = rb;
    img->overlap_index.nb_refblocks = n2;
    uint64_t top = MAX(n1 ? l2[n1 - 1] : 0, n2 ? rb[n2 - 1] : 0);
    img->overlap_index.tables_end = top ? top + img->cluster_size : 0;
    img->overlap_index.gen = img->metadata_gen;
    img->overlap_index.valid = true;
    return true;
}

/* Index of the first of the sorted `offs` (n of them) not below `v`. */
static size_t lower_bound(const uint64_t *offs, size_t n, uint64_t v)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (offs[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void overlap_l2_replaced(struct qcow2_image *img, uint64_t old_offset, uint64_t new_offset)
{
    bool current = img->overlap_index.valid && img->overlap_index.gen == img->metadata_gen;
    img->metadata_gen++;
    uint64_t *l2 = img->overlap_index.l2;
    size_t n = img->overlap_index.nb_l2;
    old_offset &= L1E_OFFSET_MASK;
    new_offset &= L1E_OFFSET_MASK;
    if (!current)
        return; /* rebuilt at the next check */
    if (old_offset) {
        /* One copy goes (another entry may name the same table: a damaged image). */
        size_t i = lower_bound(l2, n, old_offset);
        if (i < n && l2[i] == old_offset) {
            memmove(l2 + i, l2 + i + 1, (n - i - 1) * sizeof(*l2));
            n--;
        }
    }
    if (new_offset) {
        if (n >= img->overlap_index.cap_l2)
            return; /* cannot happen (at most one per L1 entry); rebuilt at the next check */
        size_t i = lower_bound(l2, n, new_offset);
        memmove(l2 + i + 1, l2 + i, (n - i) * sizeof(*l2));
        l2[i] = new_offset;
        n++;
        /* The shortcut above every table must not skip the new one (a removed table may
         * leave the bound high: that only costs a search). */
        img->overlap_index.tables_end =
            MAX(img->overlap_index.tables_end, new_offset + img->cluster_size);
    }
    img->overlap_index.nb_l2 = n;
    img->overlap_index.gen = img->metadata_gen;
}

/* Does any cluster starting at one of the sorted `offs` intersect [off, off + size)? */
static bool sorted_hits(const uint64_t *offs, size_t n, uint64_t cs, uint64_t off,
                        uint64_t size)
{
    /* first entry whose cluster ends after `off` */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (offs[mid] + cs <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && offs[lo] < off + size;
}

/* overlap_find() below the bound: a test per structure. Kept out of line, so that the
 * common answer above the bound pays for none of its registers. */
static __attribute__((noinline)) unsigned find_below(struct qcow2_image *img, uint64_t offset,
                                                     uint64_t size, unsigned ignore);

unsigned overlap_find(struct qcow2_image *img, uint64_t offset, uint64_t size,
                      unsigned ignore)
{
    return overlap_above_all(img, offset) ? 0 : find_below(img, offset, size, ignore);
}

static unsigned find_below(struct qcow2_image *img, uint64_t offset, uint64_t size,
                           unsigned ignore)
{
    uint64_t cs = img->cluster_size;
    if (!(ignore & OVERLAP_HEADER) && hits(offset, size, 0, cs))
        return OVERLAP_HEADER;
    if (!(ignore & OVERLAP_L1) &&
        hits(offset, size, img->hdr.l1_table_offset, (uint64_t)img->l1_size * 8))
        return OVERLAP_L1;
    if (!(ignore & OVERLAP_REFCOUNT_TABLE) &&
        hits(offset, size, img->hdr.refcount_table_offset,
             (uint64_t)img->hdr.refcount_table_clusters << img->cluster_bits))
        return OVERLAP_REFCOUNT_TABLE;
    if (!(ignore & OVERLAP_SNAPSHOT_TABLE) && img->hdr.nb_snapshots &&
        hits(offset, size, img->hdr.snapshots_offset,
             (uint64_t)img->hdr.nb_snapshots * QCOW2_SNAPSHOT_HEADER_SIZE))
        return OVERLAP_SNAPSHOT_TABLE;
    if ((ignore & (OVERLAP_L2 | OVERLAP_REFCOUNT_BLOCK)) ==
        (OVERLAP_L2 | OVERLAP_REFCOUNT_BLOCK))
        return 0;
    if (!index_ready(img))
        return 0; /* out of memory: the check is a safety net, not a requirement */
    /* Above every table (where new clusters usually come from): no search. */
    if (offset >= img->overlap_index.tables_end)
        return 0;
    if (!(ignore & OVERLAP_L2) &&
        sorted_hits(img->overlap_index.l2, img->overlap_index.nb_l2, cs, offset, size))
        return OVERLAP_L2;
    if (!(ignore & OVERLAP_REFCOUNT_BLOCK) &&
        sorted_hits(img->overlap_index.refblocks, img->overlap_index.nb_refblocks, cs, offset,
                    size))
        return OVERLAP_REFCOUNT_BLOCK;
    return 0;
}

static const char *overlap_name(unsigned what)
{
    switch (what) {
    case OVERLAP_HEADER: return "the header";
    case OVERLAP_L1: return "the active L1 table";
    case OVERLAP_L2: return "an active L2 table";
    case OVERLAP_REFCOUNT_TABLE: return "the refcount table";
    case OVERLAP_REFCOUNT_BLOCK: return "a refcount block";
    case OVERLAP_SNAPSHOT_TABLE: return "the snapshot table";
    default: return "metadata";
    }
}

static __attribute__((noinline)) int check_below(struct qcow2_image *img, uint64_t offset,
                                                 uint64_t size, unsigned ignore);

/* Every allocating write asks: the usual answer with none of the registers a report needs. */
int overlap_check(struct qcow2_image *img, uint64_t offset, uint64_t size, unsigned ignore)
{
    return overlap_above_all(img, offset) ? 0 : check_below(img, offset, size, ignore);
}

static int check_below(struct qcow2_image *img, uint64_t offset, uint64_t size, unsigned ignore)
{
    unsigned what = find_below(img, offset, size, ignore);
    if (!what)
        return 0;
    return signal_corruption(img, "preventing a write at 0x%llx (%llu bytes) that would "
                                  "overwrite %s",
                             (unsigned long long)offset, (unsigned long long)size,
                             overlap_name(what));
}
