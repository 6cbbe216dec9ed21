/* overlap.c - metadata overlap detection: would a write land on the header, the L1 table,
 * an L2 table, the refcount table, a refcount block or the snapshot table?
 * Reads only the in-memory tables of the image (L1, refcount table, header), so that every
 * layer that writes (cache.c for metadata, io.c for data) can ask before it writes. A hit
 * means the refcounts lie about what is in use: the image is marked corrupt. */
#include "internal.h"

static bool hits(uint64_t off, uint64_t size, uint64_t start, uint64_t len)
{
    return len && off < start + len && start < off + size;
}

/* Which structure (OVERLAP_*) [offset, offset + size) touches, or 0. */
unsigned overlap_find(const struct qcow2_image *img, uint64_t offset, uint64_t size,
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
    if (!(ignore & OVERLAP_L2)) {
        for (uint32_t i = 0; i < img->l1_size; i++) {
            uint64_t l2 = img->l1_table[i] & L1E_OFFSET_MASK;
            if (hits(offset, size, l2, l2 ? cs : 0))
                return OVERLAP_L2;
        }
    }
    if (!(ignore & OVERLAP_REFCOUNT_BLOCK) && img->refcount_table) {
        for (uint64_t i = 0; i < img->refcount_table_size; i++) {
            uint64_t rb = img->refcount_table[i] & REFT_OFFSET_MASK;
            if (hits(offset, size, rb, rb ? cs : 0))
                return OVERLAP_REFCOUNT_BLOCK;
        }
    }
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

int overlap_check(struct qcow2_image *img, uint64_t offset, uint64_t size, unsigned ignore)
{
    unsigned what = overlap_find(img, offset, size, ignore);
    if (!what)
        return 0;
    return signal_corruption(img, "preventing a write at 0x%llx (%llu bytes) that would "
                                  "overwrite %s",
                             (unsigned long long)offset, (unsigned long long)size,
                             overlap_name(what));
}
