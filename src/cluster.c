/* cluster.c - guest-to-host mapping and L2 updates.
 * Owns subcluster classification, L2 slice lookup and allocation, and the L2 meta records of
 * in-flight allocations (computing COW regions, linking new entries). Reads and writes L2
 * slices only through cache.c; allocates host clusters only through refcount.c. Does no guest
 * data I/O itself except through io_read()/file.c for copy-on-write. Callers hold img->lock. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum subcluster_type subcluster_type(const struct qcow2_image *img, uint64_t l2_entry,
                                     uint64_t l2_bitmap, unsigned sc)
{
    if (l2_entry & QCOW2_OFLAG_COMPRESSED)
        return SC_COMPRESSED;
    uint64_t host = l2_entry & L2E_OFFSET_MASK;
    bool has_host = host != 0 || (has_data_file(img) && (l2_entry & QCOW2_OFLAG_COPIED));
    if (!img->extended_l2) {
        if (l2_entry & QCOW2_OFLAG_ZERO)
            return has_host ? SC_ZERO_ALLOC : SC_ZERO_PLAIN;
        return has_host ? SC_NORMAL : SC_UNALLOCATED_PLAIN;
    }
    bool alloc = (l2_bitmap & QCOW2_SC_ALLOC(sc)) != 0;
    bool zero = (l2_bitmap & QCOW2_SC_ZERO(sc)) != 0;
    if (has_host) {
        if ((l2_bitmap >> 32) & l2_bitmap)
            return SC_INVALID;
        return zero ? SC_ZERO_ALLOC : alloc ? SC_NORMAL : SC_UNALLOCATED_ALLOC;
    }
    if (l2_bitmap & QCOW2_SC_ALL_ALLOC)
        return SC_INVALID;
    return zero ? SC_ZERO_PLAIN : SC_UNALLOCATED_PLAIN;
}

/* Validate an L1 entry before following it. */
static int check_l1_entry(struct qcow2_image *img, uint64_t l1_index, uint64_t l1_entry)
{
    uint64_t l2_offset = l1_entry & L1E_OFFSET_MASK;
    if (l2_offset & (img->cluster_size - 1))
        return signal_corruption(img, "L2 table offset 0x%llx is not cluster aligned "
                                      "(L1 index %llu)",
                                 (unsigned long long)l2_offset, (unsigned long long)l1_index);
    /* The cheap test first: almost every table lies inside the file. A cached table past
     * the end is one we allocated and have not written yet. */
    int64_t fsize = file_size_cached(img->file);
    if (fsize < 0 || l2_offset < (uint64_t)fsize || cache_contains(img->l2_cache, l2_offset))
        return 0;
    return signal_corruption(img, "L2 table offset 0x%llx lies past the end of the file "
                                  "(L1 index %llu)",
                             (unsigned long long)l2_offset, (unsigned long long)l1_index);
}

static uint64_t l1_entry_of(const struct qcow2_image *img, uint64_t l1_index)
{
    return l1_index < img->l1_size ? img->l1_table[l1_index] : 0;
}

/* Host offset of the slice of L2 table `l2_offset` that maps guest `offset`. */
static uint64_t slice_offset_in(const struct qcow2_image *img, uint64_t l2_offset,
                                uint64_t offset)
{
    uint64_t slice_start = offset_to_l2_index(img, offset) & ~(img->l2_slice_size - 1);
    return l2_offset + slice_start * img->l2_entry_size;
}

/* Host offset of the L2 slice that maps guest `offset` (0: no L2 table), for a caller that
 * will change entries in it. Two separate decisions: a table we do not own alone (shared with
 * a snapshot: L1 entry without COPIED) is always copied first, because changing it in place
 * would change the snapshot; a missing table (or COPIED without an offset, which is nonsense)
 * is created only for L2_CREATE. */
static int locate_l2_slice(struct qcow2_image *img, uint64_t offset, enum l2_need need,
                           uint64_t *slice_offset)
{
    *slice_offset = 0;
    uint64_t l1_index = offset_to_l1_index(img, offset);
    uint64_t l1_entry = l1_entry_of(img, l1_index);
    bool missing = !(l1_entry & L1E_OFFSET_MASK);
    bool shared = !missing && !(l1_entry & QCOW2_OFLAG_COPIED);
    if (shared || (missing && need == L2_CREATE)) {
        int ret = cluster_alloc_l2_table(img, l1_index);
        if (ret < 0)
            return ret;
        l1_entry = img->l1_table[l1_index];
    }
    uint64_t l2_offset = l1_entry & L1E_OFFSET_MASK;
    if (!l2_offset)
        return 0;
    int ret = check_l1_entry(img, l1_index, l1_entry);
    if (ret < 0)
        return ret;
    *slice_offset = slice_offset_in(img, l2_offset, offset);
    return 0;
}

int cluster_get_l2_slice(struct qcow2_image *img, uint64_t offset, enum l2_need need,
                         void **slice, uint64_t *slice_index)
{
    *slice = NULL;
    *slice_index = offset_to_l2_slice_index(img, offset);
    uint64_t at;
    int ret = locate_l2_slice(img, offset, need, &at);
    return ret < 0 || !at ? ret : cache_get(img->l2_cache, at, slice);
}

/* The L2 slice mapping guest `offset` for a writer that will change entries in it (created or
 * copied first like cluster_get_l2_slice(L2_CREATE) would), only looked at: no pin, so the
 * caller makes no cache call that could evict it while it uses the slice. Every allocating
 * write looks up its slice twice (to plan, to link): a table we own (COPIED) whose slice is
 * cached needs neither the pin nor the past-EOF test, which it passed when it was read (or
 * it is a table we allocated), as for reads (peek_l2_slice). */
static __attribute__((noinline)) int get_l2_slice_for_write(struct qcow2_image *img,
                                                             uint64_t offset, void **slice,
                                                             uint64_t *slice_index);

static inline int find_l2_slice_for_write(struct qcow2_image *img, uint64_t offset,
                                          void **slice, uint64_t *slice_index,
                                          struct l2_meta *remember)
{
    *slice_index = offset_to_l2_slice_index(img, offset);
    uint64_t l1_entry = l1_entry_of(img, offset_to_l1_index(img, offset));
    uint64_t l2_offset = l1_entry & L1E_OFFSET_MASK;
    if ((l1_entry & QCOW2_OFLAG_COPIED) && l2_offset && !(l2_offset & (img->cluster_size - 1))) {
        uint64_t at = slice_offset_in(img, l2_offset, offset);
        /* Mostly the slice the previous write linked into: hot, no lookup. */
        *slice = cache_hot(img->l2_cache, at);
        if (!*slice)
            *slice = (void *)cache_find(img->l2_cache, at);
        if (*slice) {
            if (remember) { /* see struct l2_meta: checked again by remembered_slice() */
                remember->l2_slice = *slice;
                remember->l2_slice_at = at;
                remember->l2_l1_entry = l1_entry;
            }
            return 0;
        }
    }
    return get_l2_slice_for_write(img, offset, slice, slice_index);
}

/* find_l2_slice_for_write() for a table to create or copy, or a slice not cached. */
static int get_l2_slice_for_write(struct qcow2_image *img, uint64_t offset, void **slice,
                                  uint64_t *slice_index)
{
    void *pinned;
    int ret = cluster_get_l2_slice(img, offset, L2_CREATE, &pinned, slice_index);
    *slice = pinned;
    cache_put(img->l2_cache, &pinned);
    return ret;
}

/* The slice remembered in `m`, if it is still the one find_l2_slice_for_write() would find:
 * the same L1 entry (so the same table, still ours) and the slice still cached where it was.
 * NULL otherwise. */
static void *remembered_slice(struct qcow2_image *img, const struct l2_meta *m)
{
    if (!m->l2_slice_at ||
        l1_entry_of(img, offset_to_l1_index(img, m->offset)) != m->l2_l1_entry)
        return NULL;
    /* Still the hot table (no other write linked meanwhile): held, and dirty already. */
    if (cache_hot(img->l2_cache, m->l2_slice_at) == m->l2_slice)
        return m->l2_slice;
    return cache_holds(img->l2_cache, m->l2_slice, m->l2_slice_at) ? m->l2_slice : NULL;
}

/* Host offset of a NORMAL / ZERO_ALLOC / UNALLOCATED_ALLOC entry, validated. */
static int entry_host_offset(struct qcow2_image *img, uint64_t entry, uint64_t guest,
                             uint64_t *host)
{
    *host = entry & L2E_OFFSET_MASK;
    if (*host & (img->cluster_size - 1))
        return signal_corruption(img, "cluster offset 0x%llx is not cluster aligned (guest "
                                      "offset 0x%llx)",
                                 (unsigned long long)*host, (unsigned long long)guest);
    return 0;
}

static bool type_has_host(enum subcluster_type t)
{
    return t == SC_NORMAL || t == SC_ZERO_ALLOC || t == SC_UNALLOCATED_ALLOC;
}

/* The L2 slice that maps guest `offset` (NULL: no L2 table), only looked at: no pin, so the
 * caller makes no other cache call while it reads the slice. Every read maps through here,
 * so a cached slice skips the past-EOF test: it passed that test when it was read, or it is
 * a table we allocated. The alignment test stays: an unaligned L1 entry could point into a
 * slice of another table that happens to be cached. */
static int peek_l2_slice(struct qcow2_image *img, uint64_t offset, const void **slice,
                         bool scan)
{
    *slice = NULL;
    uint64_t l1_index = offset_to_l1_index(img, offset);
    uint64_t l1_entry = l1_entry_of(img, l1_index);
    uint64_t l2_offset = l1_entry & L1E_OFFSET_MASK;
    if (!l2_offset)
        return 0;
    uint64_t at = slice_offset_in(img, l2_offset, offset);
    if (!(l2_offset & (img->cluster_size - 1)) && (*slice = cache_find(img->l2_cache, at)))
        return 0;
    int ret = check_l1_entry(img, l1_index, l1_entry);
    if (ret < 0)
        return ret;
    /* A scan (block status) goes on through the rest of this table: read it in one request,
     * not a system call per slice. */
    size_t slice_bytes = cache_table_size(img->l2_cache);
    if (scan && slice_bytes < img->cluster_size) {
        uint64_t left = (l2_offset + img->cluster_size - at) / slice_bytes;
        ret = cache_read_ahead(img->l2_cache, at, (unsigned)left);
        if (ret < 0)
            return ret;
    }
    return cache_peek(img->l2_cache, at, slice);
}

/* Type and host offset (data at guest `pos`) of the subcluster that entry `i` of `slice`
 * maps `pos` into; refuses what a valid image cannot hold. */
static inline int map_subcluster(struct qcow2_image *img, const void *slice, uint64_t i,
                                 uint64_t pos, enum subcluster_type *type, uint64_t *host,
                                 uint64_t *entry)
{
    *entry = l2_get_entry(img, slice, i);
    uint64_t bitmap = l2_get_bitmap(img, slice, i);
    enum subcluster_type t = subcluster_type(img, *entry, bitmap, offset_to_sc_index(img, pos));
    if (t == SC_INVALID)
        return signal_corruption(img, "invalid subcluster bitmap 0x%016llx (guest offset "
                                      "0x%llx)",
                                 (unsigned long long)bitmap, (unsigned long long)pos);
    if (!img->extended_l2 && img->hdr.version < 3 && t != SC_COMPRESSED &&
        (*entry & QCOW2_OFLAG_ZERO))
        return signal_corruption(img, "zero cluster entry in a version 2 image (guest offset "
                                      "0x%llx)",
                                 (unsigned long long)pos);
    *type = t;
    *host = 0;
    if (!type_has_host(t))
        return 0;
    int ret = entry_host_offset(img, *entry, pos, host);
    *host += pos & (img->cluster_size - 1);
    return ret;
}

/* Where a range without an L2 table ends: the end of this L1 entry's range and of every
 * following L1 entry without a table, in one step (a sparse disk of terabytes has millions of
 * them), bounded by `stop`. */
uint64_t cluster_end_of_missing_tables(const struct qcow2_image *img, uint64_t offset,
                                       uint64_t stop)
{
    uint64_t l1_bytes = 1ull << (img->l2_bits + img->cluster_bits);
    uint64_t pos = align_down_pow2(offset, l1_bytes) + l1_bytes;
    for (uint64_t i = offset_to_l1_index(img, pos); pos < stop && i < img->l1_size; i++) {
        if (img->l1_table[i] & L1E_OFFSET_MASK)
            break;
        pos += l1_bytes;
    }
    if (offset_to_l1_index(img, pos) >= img->l1_size)
        pos = stop; /* past the L1 table: nothing is mapped there */
    return MIN(pos, stop);
}

/* Is every subcluster of the cluster entry `i` maps of the type its first one has, with no
 * host cluster? Then identical entries after it map the same: l2_skip_identical(). */
static bool entry_maps_uniform_nothing(const struct qcow2_image *img, const void *slice,
                                       uint64_t i, enum subcluster_type t)
{
    if (t != SC_UNALLOCATED_PLAIN && t != SC_ZERO_PLAIN)
        return false;
    /* Without extended L2 the entry decides alone; with it, only an all-zero entry and
     * bitmap is sure to be one type throughout. */
    return !img->extended_l2 || (l2_get_entry(img, slice, i) == 0 && l2_get_bitmap(img, slice, i) == 0);
}

/* cluster_get_host_offset() within the L2 slice (or the missing table) holding `offset`;
 * `scan`: reading on through the table is likely (read ahead). */
static int map_in_slice(struct qcow2_image *img, uint64_t offset, uint64_t *bytes,
                        uint64_t *host, enum subcluster_type *type, bool scan)
{
    uint64_t want = *bytes;
    const void *slice;
    uint64_t idx = offset_to_l2_slice_index(img, offset);
    *host = 0;
    int ret = peek_l2_slice(img, offset, &slice, scan);
    if (ret < 0)
        return ret;
    if (!slice) {
        *type = SC_UNALLOCATED_PLAIN;
        *bytes = cluster_end_of_missing_tables(img, offset, offset + want) - offset;
        return 0;
    }
    /* The slice bounds how far one lookup can see. */
    uint64_t slice_bytes = img->l2_slice_size << img->cluster_bits;
    uint64_t slice_end = align_down_pow2(offset, slice_bytes) + slice_bytes;
    uint64_t end = offset + MIN(want, slice_end - offset);

    /* The first subcluster; most requests end inside it. */
    enum subcluster_type first = SC_INVALID, t = SC_INVALID;
    uint64_t h = 0, entry = 0;
    ret = map_subcluster(img, slice, idx, offset, &first, &h, &entry);
    if (ret < 0)
        return ret;
    *type = first;
    *host = first == SC_COMPRESSED ? entry : h;
    uint64_t cluster_base = start_of_cluster(img, offset);
    if (first == SC_COMPRESSED) { /* one compressed cluster at a time */
        *bytes = MIN(cluster_base + img->cluster_size, end) - offset;
        return 0;
    }
    if (entry_maps_uniform_nothing(img, slice, idx, first)) {
        /* Runs of entries that map nothing cost a compare each, not a classification. */
        uint64_t stop = idx + ((end - cluster_base + img->cluster_size - 1) >> img->cluster_bits);
        uint64_t i = l2_skip_identical(img, slice, idx, idx + 1, stop);
        *bytes = MIN(cluster_base + ((i - idx) << img->cluster_bits), end) - offset;
        return 0;
    }
    /* Then as many more as continue it: same type, and contiguous on the host if mapped. */
    uint64_t pos = (offset | (img->subcluster_size - 1)) + 1;
    uint64_t expect_host = h + (pos - offset);
    while (pos < end) {
        uint64_t i = idx + ((pos - cluster_base) >> img->cluster_bits);
        ret = map_subcluster(img, slice, i, pos, &t, &h, &entry);
        if (ret < 0)
            return ret;
        if (t != first || (type_has_host(t) && h != expect_host) || t == SC_COMPRESSED)
            break;
        pos += img->subcluster_size;
        expect_host = h + img->subcluster_size;
    }
    *bytes = MIN(pos, end) - offset;
    return 0;
}

static int get_host_offset(struct qcow2_image *img, uint64_t offset, uint64_t *bytes,
                           uint64_t *host, enum subcluster_type *type, bool scan)
{
    uint64_t want = *bytes, done = want;
    int ret = map_in_slice(img, offset, &done, host, type, scan);
    if (ret < 0 || type_has_host(*type) || *type == SC_COMPRESSED) {
        *bytes = done;
        return ret;
    }
    /* A run that maps nothing goes on into the next slices while they continue it, so that
     * a scan of a sparse disk gets one answer per run, not one per slice. A run cut short
     * by its type, not by the slice end, is complete. An error further on is left for the
     * next call, which starts there. */
    uint64_t slice_bytes = img->l2_slice_size << img->cluster_bits;
    while (done < want && ((offset + done) & (slice_bytes - 1)) == 0) {
        uint64_t n = want - done, h;
        enum subcluster_type t;
        if (map_in_slice(img, offset + done, &n, &h, &t, scan) < 0 || t != *type)
            break;
        done += n;
    }
    *bytes = done;
    return 0;
}

int cluster_get_host_offset(struct qcow2_image *img, uint64_t offset, uint64_t *bytes,
                            uint64_t *host, enum subcluster_type *type)
{
    return get_host_offset(img, offset, bytes, host, type, false);
}

int cluster_block_status(struct qcow2_image *img, uint64_t offset, uint64_t *bytes,
                         uint64_t *host, enum subcluster_type *type)
{
    return get_host_offset(img, offset, bytes, host, type, true);
}

/* ---------------------------------------------------------------------------------------- */
/* L1 growth and L2 table allocation. */

/* Replace the L1 table with a larger copy. Crash safety: the new table is on disk before the
 * header points to it (one synced 12-byte write), and the old one is freed only after. */
static int grow_l1_table(struct qcow2_image *img, uint64_t min_size)
{
    uint64_t max_entries = QCOW2_MAX_L1_BYTES / 8;
    if (min_size > max_entries)
        return set_error(img, -EFBIG, "L1 table would need %llu entries (at most %llu)",
                         (unsigned long long)min_size, (unsigned long long)max_entries);
    /* The copy is written from memory: new tables it names must be on disk first. */
    int ret = cluster_link_new_tables(img);
    if (ret < 0)
        return ret;
    uint64_t new_size = MAX(min_size, (uint64_t)img->l1_size * 3 / 2);
    new_size = MIN(new_size, max_entries);
    uint64_t bytes = ROUND_UP(new_size * 8, img->cluster_size);
    new_size = MIN(bytes / 8, max_entries);
    uint64_t *table = calloc(bytes / 8, 8);
    uint8_t *disk = calloc(1, bytes);
    ret = -ENOMEM;
    if (!table || !disk) {
        set_error(img, ret, "out of memory growing the L1 table");
        goto out;
    }
    memcpy(table, img->l1_table, (size_t)img->l1_size * 8);
    for (uint64_t i = 0; i < new_size; i++)
        be64_put(disk + i * 8, table[i]);
    int64_t new_offset = refcount_alloc_clusters(img, bytes);
    if (new_offset < 0) {
        ret = (int)new_offset;
        goto out;
    }
    ret = cache_flush(img->refcount_cache);
    if (ret == 0)
        ret = file_pwrite(img->file, disk, bytes, (uint64_t)new_offset);
    if (ret == 0)
        ret = file_flush(img->file);
    if (ret < 0) {
        set_error(img, ret, "writing the new L1 table failed: %s", strerror(-ret));
        refcount_free_clusters(img, (uint64_t)new_offset, bytes);
        goto out;
    }
    uint8_t field[12];
    be32_put(field, (uint32_t)new_size);
    be64_put(field + 4, (uint64_t)new_offset);
    int switched = header_write_field(img, HDR_L1_SIZE, field, sizeof(field));
    /* The new table is on disk. Even if the header write failed it may have landed: use the
     * new table from now on, write the header again at the next flush, and keep the old
     * table (a leak at worst). */
    uint64_t old_offset = img->hdr.l1_table_offset;
    uint64_t old_bytes = ROUND_UP((uint64_t)img->l1_size * 8, img->cluster_size);
    free(img->l1_table);
    img->l1_table = table;
    table = NULL;
    img->l1_size = (uint32_t)new_size;
    img->hdr.l1_size = (uint32_t)new_size;
    img->hdr.l1_table_offset = (uint64_t)new_offset;
    img->metadata_gen++;
    if (switched < 0) {
        img->header_dirty = true;
        ret = switched;
        goto out;
    }
    if (old_offset && old_bytes)
        ret = refcount_free_clusters(img, old_offset, old_bytes);
out:
    free(table);
    free(disk);
    return ret;
}

int cluster_ensure_l1_size(struct qcow2_image *img, uint64_t min_size)
{
    return min_size <= img->l1_size ? 0 : grow_l1_table(img, min_size);
}

/* Write one L1 entry to disk, synced: the switch that makes a new L2 table live. */
static int write_l1_entry(struct qcow2_image *img, uint64_t l1_index)
{
    uint8_t b[8];
    be64_put(b, img->l1_table[l1_index]);
    int ret = file_pwrite(img->file, b, 8, img->hdr.l1_table_offset + l1_index * 8);
    if (ret == 0)
        ret = file_flush(img->file);
    if (ret < 0)
        return set_error(img, ret, "writing L1 entry %llu failed: %s",
                         (unsigned long long)l1_index, strerror(-ret));
    return 0;
}

/* Fill the new L2 table at `new_offset` from the old one (or zeros), slice by slice, and mark
 * it dirty. A zero-filled table whose cluster reads as zeros on disk already (past the end of
 * the file when opened and never written since) needs only its first slice cached and dirty:
 * the other slices read as zeros from the disk whether they are written or not, and the
 * first one, written before the table is linked (cluster_link_new_tables), puts the table's
 * start inside the file, as a valid image needs. A sparse disk's new tables then cost one
 * slice each in the cache and on the disk, not a cluster. */
static int fill_new_l2_table(struct qcow2_image *img, uint64_t new_offset, uint64_t old_offset)
{
    size_t slice_bytes = cache_table_size(img->l2_cache);
    bool disk_zero = !old_offset && new_offset >= file_zero_from(img->file, img->zero_from);
    uint64_t fill = disk_zero ? slice_bytes : img->cluster_size;
    for (uint64_t off = 0; off < fill; off += slice_bytes) {
        void *dst, *src = NULL;
        int ret = cache_get_empty(img->l2_cache, new_offset + off, &dst);
        if (ret < 0)
            return ret;
        if (old_offset) {
            ret = cache_get(img->l2_cache, old_offset + off, &src);
            if (ret < 0) {
                cache_put(img->l2_cache, &dst);
                return ret;
            }
            memcpy(dst, src, slice_bytes);
            cache_put(img->l2_cache, &src);
        } else {
            memset(dst, 0, slice_bytes);
        }
        cache_mark_dirty(img->l2_cache, dst);
        cache_put(img->l2_cache, &dst);
    }
    return 0;
}

static bool l1_block_pending(const struct qcow2_image *img, uint64_t b)
{
    return (img->l1_pending[b / 64] >> (b % 64)) & 1;
}

/* Write L1 entries [first, end) from memory in one request. */
static int write_l1_entries(struct qcow2_image *img, uint64_t first, uint64_t end)
{
    size_t bytes = (size_t)(end - first) * 8;
    uint8_t *buf = malloc(bytes);
    if (!buf)
        return set_error(img, -ENOMEM, "out of memory");
    for (uint64_t i = first; i < end; i++)
        be64_put(buf + (i - first) * 8, img->l1_table[i]);
    int ret = file_pwrite(img->file, buf, bytes, img->hdr.l1_table_offset + first * 8);
    free(buf);
    if (ret < 0)
        return set_error(img, ret, "writing L1 entries %llu to %llu failed: %s",
                         (unsigned long long)first, (unsigned long long)end - 1, strerror(-ret));
    return 0;
}

/* Shrinking, as QEMU's qcow2_shrink_l1_table: the L2 tables wholly past the new end go. The
 * L1 size in the header stays; the entries become 0. Order: everything cached is written
 * first (the discard of what the tables mapped, with its refcounts), then the zeroed entries
 * (synced), and only then do the tables leave the cache and their references go. A crash in
 * between leaks them; a failed L1 write keeps them too (the entries are written again at the
 * next flush). A table shared with a snapshot only loses our reference. */
int cluster_shrink_l1(struct qcow2_image *img, uint64_t new_l1_size)
{
    uint64_t end = img->l1_size, n = 0;
    for (uint64_t i = new_l1_size; i < end; i++)
        n += (img->l1_table[i] & L1E_OFFSET_MASK) != 0;
    if (n == 0)
        return 0;
    int ret = cluster_flush_metadata(img);
    uint64_t *tables = ret == 0 ? malloc(n * sizeof(*tables)) : NULL;
    if (ret < 0)
        return ret;
    if (!tables)
        return set_error(img, -ENOMEM, "out of memory");
    n = 0;
    for (uint64_t i = new_l1_size; i < end; i++) {
        if (img->l1_table[i] & L1E_OFFSET_MASK)
            tables[n++] = img->l1_table[i] & L1E_OFFSET_MASK;
        img->l1_table[i] = 0;
    }
    ret = write_l1_entries(img, new_l1_size, end);
    if (ret == 0 && (ret = file_flush(img->file)) < 0)
        set_error(img, ret, "flush failed: %s", strerror(-ret));
    for (uint64_t k = 0; k < n && ret == 0; k++) {
        overlap_l2_replaced(img, tables[k], 0);
        ret = cache_discard(img->l2_cache, tables[k]);
        if (ret == 0)
            ret = refcount_free_clusters(img, tables[k], img->cluster_size);
    }
    if (ret < 0)
        img->l1_dirty = true;
    free(tables);
    return ret;
}

int cluster_link_new_tables(struct qcow2_image *img)
{
    if (!img->l1_pending_any)
        return 0;
    /* Order: the tables' refcounts, then the tables (synced, after the data their entries
     * point to: the cache's own prerequisites), then the L1 entries. A dirty image (lazy
     * refcounts) keeps its refcounts in memory until close, as write_caches() does: the dirty
     * bit has every opener rebuild them, and a crash must leave them as stale as the bit
     * says (dirty_repair.sh repairs such an image). */
    int ret = img->dirty ? 0 : cache_flush(img->refcount_cache);
    if (ret == 0)
        ret = cache_flush(img->l2_cache);
    if (ret < 0)
        return ret;
    uint64_t per_block = L1_PENDING_BLOCK / 8;
    uint64_t nb_blocks = DIV_ROUND_UP((uint64_t)img->l1_size, per_block);
    for (uint64_t b = 0; b < nb_blocks;) {
        if (!img->l1_pending[b / 64]) {
            b = ROUND_DOWN(b, 64) + 64;
            continue;
        }
        if (!l1_block_pending(img, b)) {
            b++;
            continue;
        }
        uint64_t e = b;
        while (e < nb_blocks && l1_block_pending(img, e))
            e++;
        /* On failure the blocks stay pending: written again by the next call. */
        ret = write_l1_entries(img, b * per_block, MIN(e * per_block, (uint64_t)img->l1_size));
        if (ret < 0)
            return ret;
        for (; b < e; b++)
            img->l1_pending[b / 64] &= ~(1ull << (b % 64));
    }
    img->l1_pending_any = false; /* (every bit was cleared as its block was written) */
    return 0;
}

/* A brand-new table: linked in memory now, on disk by cluster_link_new_tables(). */
static int start_new_l2_table(struct qcow2_image *img, uint64_t l1_index, uint64_t new_offset)
{
    int ret = fill_new_l2_table(img, new_offset, 0);
    if (ret < 0) {
        cache_discard(img->l2_cache, new_offset);
        refcount_free_clusters(img, new_offset, img->cluster_size);
        return ret;
    }
    img->l1_table[l1_index] = new_offset | QCOW2_OFLAG_COPIED;
    overlap_l2_replaced(img, 0, new_offset);
    uint64_t b = l1_index * 8 / L1_PENDING_BLOCK;
    img->l1_pending[b / 64] |= 1ull << (b % 64);
    img->l1_pending_any = true;
    return 0;
}

int cluster_alloc_l2_table(struct qcow2_image *img, uint64_t l1_index)
{
    int ret = cluster_ensure_l1_size(img, l1_index + 1);
    if (ret < 0)
        return ret;
    uint64_t old_entry = img->l1_table[l1_index];
    uint64_t old_offset = old_entry & L1E_OFFSET_MASK;
    if (old_offset) {
        ret = check_l1_entry(img, l1_index, old_entry);
        if (ret < 0)
            return ret;
    }
    int64_t new_offset = refcount_alloc_clusters(img, img->cluster_size);
    if (new_offset < 0)
        return (int)new_offset;
    if (!old_offset)
        return start_new_l2_table(img, l1_index, (uint64_t)new_offset);
    /* A copy of a table shared with a snapshot. Order: refcount of the new table, then the
     * table, then the L1 entry, then the old table's reference is dropped. A crash in
     * between leaks at most one cluster. */
    ret = cache_flush(img->refcount_cache);
    if (ret == 0)
        ret = fill_new_l2_table(img, (uint64_t)new_offset, old_offset);
    if (ret == 0)
        ret = cache_flush(img->l2_cache);
    if (ret < 0)
        goto fail;
    img->l1_table[l1_index] = (uint64_t)new_offset | QCOW2_OFLAG_COPIED;
    overlap_l2_replaced(img, old_offset, (uint64_t)new_offset);
    ret = write_l1_entry(img, l1_index);
    if (ret < 0) {
        /* The new table is complete on disk and the entry may have landed: keep using it,
         * write the L1 table again at the next flush, and keep the old table (a leak). */
        img->l1_dirty = true;
        return ret;
    }
    return refcount_free_clusters(img, old_offset, img->cluster_size);
fail:
    cache_discard(img->l2_cache, (uint64_t)new_offset);
    refcount_free_clusters(img, (uint64_t)new_offset, img->cluster_size);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Write preparation: L2 meta records. */

#define CLUSTER_MAX_META_CLUSTERS 2048

static bool ranges_overlap(uint64_t a, uint64_t a_end, uint64_t b, uint64_t b_end)
{
    return a < b_end && b < a_end;
}

/* The guest range an in-flight record protects: its exact COW-to-COW range when it reuses
 * existing clusters (other parts of those clusters may be written in parallel), else whole
 * clusters. */
/* Round [*start, *end) out to whole clusters. */
static void widen_to_clusters(const struct qcow2_image *img, uint64_t *start, uint64_t *end)
{
    *start = start_of_cluster(img, *start);
    *end = align_up_pow2(*end, img->cluster_size);
}

static void meta_guard_range(const struct qcow2_image *img, const struct l2_meta *m,
                             uint64_t *start, uint64_t *end)
{
    *start = m->offset + m->cow_start.offset;
    *end = m->offset + m->cow_end.offset + m->cow_end.nb_bytes;
    if (!m->keep_old_clusters)
        widen_to_clusters(img, start, end);
}

/* Wait (under `lock`, which the wait releases) until the request in slot `i` gives its slot
 * back, or at least until something in flight finishes. Announce ourselves before looking at
 * the bit again: a request clears its bit and then reads the waiter count, both sequentially
 * consistent, so either we see the slot free or it sees us and wakes us (it must take `lock`,
 * which we hold until pthread_cond_wait releases it). */
static void wait_guard_slot(struct qcow2_image *img, int i)
{
    __atomic_fetch_add(&img->guard_slot_waiters, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&img->guard_slots_used, __ATOMIC_SEQ_CST) & (1ull << i))
        pthread_cond_wait(&img->inflight_cond, &img->lock);
    __atomic_fetch_sub(&img->guard_slot_waiters, 1, __ATOMIC_SEQ_CST);
}

/* Guards in slots overlapping [s, e): clip *bytes before the first one, or, when our first
 * byte is guarded, wait until a slot is given back and return -EAGAIN. Under `lock`. */
static int wait_guard_slots(struct qcow2_image *img, uint64_t start, uint64_t *bytes,
                           bool whole_clusters, uint64_t s, uint64_t *e)
{
    uint64_t used = __atomic_load_n(&img->guard_slots_used, __ATOMIC_SEQ_CST);
    while (used) {
        int i = __builtin_ctzll(used);
        used &= used - 1;
        /* start/end change only under `lock` (we hold it): a slot being given back right now
         * still shows the range of the request that is ending. */
        uint64_t ms = img->guard_slots[i].start, me = img->guard_slots[i].end;
        if (whole_clusters)
            widen_to_clusters(img, &ms, &me);
        if (!ranges_overlap(s, *e, ms, me))
            continue;
        if (ms > start) {
            *bytes = MIN(*bytes, ms - start);
            *e = start + *bytes;
            continue;
        }
        wait_guard_slot(img, i);
        return -EAGAIN;
    }
    return 0;
}

int cluster_wait_dependencies_slow(struct qcow2_image *img, uint64_t start, uint64_t *bytes,
                                   bool whole_clusters)
{
    uint64_t s = start, e = start + *bytes;
    if (whole_clusters)
        widen_to_clusters(img, &s, &e);
    int ret = wait_guard_slots(img, start, bytes, whole_clusters, s, &e);
    if (ret < 0)
        return ret;
    for (struct l2_meta *m = img->inflight; m; m = m->next_in_flight) {
        uint64_t ms, me;
        meta_guard_range(img, m, &ms, &me);
        if (whole_clusters && m->keep_old_clusters)
            widen_to_clusters(img, &ms, &me);
        if (!ranges_overlap(s, e, ms, me))
            continue;
        if (ms <= start) {
            /* Our very first byte depends on it: wait, then the caller looks again. */
            img->nb_waiters++;
            pthread_cond_wait(&img->inflight_cond, &img->lock);
            img->nb_waiters--;
            return -EAGAIN;
        }
        *bytes = MIN(*bytes, ms - start);
        e = start + *bytes;
    }
    return 0;
}

void cluster_data_guard_start(struct qcow2_image *img, struct data_guard *g, uint64_t offset,
                              uint64_t n)
{
    uint64_t free_slots =
        ~__atomic_load_n(&img->guard_slots_used, __ATOMIC_RELAXED) & img->guard_slots_enabled;
    if (free_slots) {
        /* Slots are claimed only under `lock`, so this free one stays ours to take; others
         * may only clear their own bits meanwhile. */
        g->slot = __builtin_ctzll(free_slots);
        img->guard_slots[g->slot].start = offset;
        img->guard_slots[g->slot].end = offset + n;
        img->guard_slots[g->slot].gen = img->guard_gen;
        __atomic_fetch_or(&img->guard_slots_used, 1ull << g->slot, __ATOMIC_SEQ_CST);
        return;
    }
    /* All slots busy: an in-flight record, exact range (keep_old_clusters). */
    uint64_t base = start_of_cluster(img, offset);
    g->slot = -1;
    g->meta = (struct l2_meta){
        .offset = base,
        .nb_clusters = (unsigned)(align_up_pow2(offset + n - base, img->cluster_size) >>
                                  img->cluster_bits),
        .keep_old_clusters = true,
        .is_guard = true,
        .guard_gen = img->guard_gen,
        .cow_start = {offset - base, 0},
        .cow_end = {offset + n - base, 0},
    };
    cluster_assert_meta(img, &g->meta);
    cluster_meta_start(img, &g->meta);
}

void cluster_data_guard_end(struct qcow2_image *img, struct data_guard *g)
{
    if (g->slot < 0) {
        pthread_mutex_lock(&img->lock);
        cluster_meta_finish(img, &g->meta);
        pthread_mutex_unlock(&img->lock);
        return;
    }
    __atomic_fetch_and(&img->guard_slots_used, ~(1ull << g->slot), __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&img->guard_slot_waiters, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&img->lock);
        pthread_cond_broadcast(&img->inflight_cond);
        pthread_mutex_unlock(&img->lock);
    }
}

/* Does this L2 entry need a new host cluster before it can be written? Only clusters that
 * we own alone (COPIED) with a host offset can be written in place. */
static bool needs_new_cluster(const struct qcow2_image *img, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return true;
    if (!(entry & QCOW2_OFLAG_COPIED))
        return true;
    return (entry & L2E_OFFSET_MASK) == 0 && !has_data_file(img);
}

/* Is `entry` compressed or does it name a host cluster? If not, every subcluster it maps is
 * ZERO_PLAIN, UNALLOCATED_PLAIN or INVALID (subcluster_type()), which the COW bounds below
 * treat alike: a first write to a cluster needs no classification. */
static inline bool entry_may_have_host(const struct qcow2_image *img, uint64_t entry)
{
    return (entry & (QCOW2_OFLAG_COMPRESSED | L2E_OFFSET_MASK)) ||
           (has_data_file(img) && (entry & QCOW2_OFLAG_COPIED));
}

/* Where head COW starts (bytes into the first cluster) for an entry that may have a host
 * cluster (entry_may_have_host()); any other starts it at its subcluster, as the default case
 * below would, whatever its bitmap says. */
static uint64_t cow_start_from(const struct qcow2_image *img, uint64_t entry, uint64_t bitmap,
                               unsigned sc, bool keep_old, uint64_t written_from)
{
    uint64_t sc_start = (uint64_t)sc << img->subcluster_bits;
    enum subcluster_type t = subcluster_type(img, entry, bitmap, sc);
    switch (t) {
    case SC_COMPRESSED:
        return 0;
    case SC_NORMAL:
    case SC_ZERO_ALLOC:
    case SC_UNALLOCATED_ALLOC:
        if (keep_old)
            return t == SC_NORMAL ? written_from : sc_start;
        if (img->extended_l2) {
            /* A shared cluster: copy from its first allocated subcluster on. */
            uint32_t alloc = (uint32_t)(bitmap & QCOW2_SC_ALL_ALLOC);
            unsigned first = alloc ? (unsigned)__builtin_ctz(alloc) : 32;
            return (uint64_t)MIN(sc, first) << img->subcluster_bits;
        }
        return 0;
    default: /* ZERO_PLAIN, UNALLOCATED_PLAIN: only the partial subcluster */
        return sc_start;
    }
}

/* Where tail COW ends (bytes into the last cluster, exclusive), for an entry that may have a
 * host cluster; any other ends it with its subcluster. */
static uint64_t cow_end_to(const struct qcow2_image *img, uint64_t entry, uint64_t bitmap,
                           unsigned sc, bool keep_old, uint64_t written_to)
{
    uint64_t sc_end = (uint64_t)(sc + 1) << img->subcluster_bits;
    enum subcluster_type t = subcluster_type(img, entry, bitmap, sc);
    switch (t) {
    case SC_COMPRESSED:
        return img->cluster_size;
    case SC_NORMAL:
    case SC_ZERO_ALLOC:
    case SC_UNALLOCATED_ALLOC:
        if (keep_old)
            return t == SC_NORMAL ? written_to : sc_end;
        if (img->extended_l2) {
            uint32_t alloc = (uint32_t)(bitmap & QCOW2_SC_ALL_ALLOC);
            unsigned last = alloc ? 31u - (unsigned)__builtin_clz(alloc) : 0;
            return (uint64_t)(MAX(sc, last) + 1) << img->subcluster_bits;
        }
        return img->cluster_size;
    default:
        return sc_end;
    }
}

/* Are all subclusters written by [from, to) of this cluster already NORMAL? */
static bool all_written_normal(const struct qcow2_image *img, uint64_t entry, uint64_t bitmap,
                               uint64_t from, uint64_t to)
{
    unsigned a = (unsigned)(from >> img->subcluster_bits);
    unsigned b = (unsigned)((to - 1) >> img->subcluster_bits);
    for (unsigned sc = a; sc <= b; sc++)
        if (subcluster_type(img, entry, bitmap, sc) != SC_NORMAL)
            return false;
    return true;
}

/* set_cow_regions() where the first or last entry may have a host cluster: move the bounds
 * [*cs_from, *cs_to) of the written subclusters out to what those entries need copied. Out
 * of line: a first write to a cluster needs none of it, nor the registers it takes. */
static __attribute__((noinline)) void cow_bounds_of_entries(const struct qcow2_image *img,
                                                            const struct l2_meta *m,
                                                            const void *slice, uint64_t idx,
                                                            uint64_t data_from, uint64_t data_to,
                                                            uint64_t *cs_from, uint64_t *cs_to)
{
    uint64_t last = idx + m->nb_clusters - 1;
    uint64_t last_base = (last - idx) << img->cluster_bits;
    bool keep = m->keep_old_clusters;
    uint64_t e = l2_get_entry(img, slice, idx);
    if (entry_may_have_host(img, e))
        *cs_from = cow_start_from(img, e, l2_get_bitmap(img, slice, idx),
                                  offset_to_sc_index(img, data_from), keep, data_from);
    e = l2_get_entry(img, slice, last);
    if (entry_may_have_host(img, e))
        *cs_to = last_base + cow_end_to(img, e, l2_get_bitmap(img, slice, last),
                                        offset_to_sc_index(img, data_to - 1), keep,
                                        data_to - last_base);
}

/* The COW regions of `m` (nb_clusters, keep_old_clusters and prealloc set) for guest data
 * [data_from, data_to) relative to m->offset, from the first and last written subclusters;
 * entry `idx` of `slice` maps the first cluster. */
static inline __attribute__((always_inline)) void
set_cow_regions(const struct qcow2_image *img, struct l2_meta *m, const void *slice, uint64_t idx,
                uint64_t data_from, uint64_t data_to)
{
    uint64_t last = idx + m->nb_clusters - 1;
    bool hosts = entry_may_have_host(img, l2_get_entry(img, slice, idx)) ||
                 entry_may_have_host(img, l2_get_entry(img, slice, last));
    uint64_t cs_from = data_from, cs_to = data_to;
    if (!m->prealloc) {
        /* Most writes go to clusters without one (a first write): the regions are the rest
         * of the written subclusters (data_from lies in the first cluster, data_to in the
         * last), and no bitmap is read. */
        cs_from = align_down_pow2(data_from, img->subcluster_size);
        cs_to = align_up_pow2(data_to, img->subcluster_size);
        if (hosts)
            cow_bounds_of_entries(img, m, slice, idx, data_from, data_to, &cs_from, &cs_to);
    }
    /* The COW regions lie in the first and last cluster: with no data there (unallocated or
     * zero entries, nothing compressed) and nothing below this image, they read as zeros. */
    m->cow_zero = !m->keep_old_clusters && !img->backing && !has_data_file(img) && !hosts;
    m->cow_start = (struct cow_region){.offset = cs_from, .nb_bytes = data_from - cs_from};
    m->cow_end = (struct cow_region){.offset = data_to, .nb_bytes = cs_to - data_to};
}

/* cluster_prepare_write() for clusters written in place (entry `idx` of `slice` is COPIED
 * with a host cluster): as many as continue it on the host, up to `max_clusters`. */
static int prepare_in_place(struct qcow2_image *img, struct l2_meta *m, const void *slice,
                            uint64_t idx, uint64_t offset, uint64_t *bytes,
                            uint64_t max_clusters)
{
    uint64_t in_cluster = offset - m->offset, host0;
    int ret = entry_host_offset(img, l2_get_entry(img, slice, idx), offset, &host0);
    if (ret < 0)
        return ret;
    uint64_t n = 1;
    while (n < max_clusters) {
        uint64_t e = l2_get_entry(img, slice, idx + n);
        if (needs_new_cluster(img, e) || (e & L2E_OFFSET_MASK) != host0 + (n << img->cluster_bits))
            break;
        n++;
    }
    /* The clusters are written in place: a hostile L2 entry must not aim guest data at
     * metadata (QEMU refuses too). An external data file holds no metadata. */
    if (!has_data_file(img)) {
        ret = overlap_check(img, host0, n << img->cluster_bits, 0);
        if (ret < 0)
            return ret;
    }
    uint64_t len = MIN(*bytes, (n << img->cluster_bits) - in_cluster);
    uint64_t data_from = in_cluster, data_to = in_cluster + len;
    m->nb_clusters = (unsigned)n;
    m->alloc_offset = host0;
    set_cow_regions(img, m, slice, idx, data_from, data_to);
    /* A link is needed only where an entry changes: a zero flag to clear, subclusters to
     * mark allocated. */
    m->needs_link = false;
    for (uint64_t i = 0; i < n && !m->prealloc && !m->needs_link; i++) {
        uint64_t e = l2_get_entry(img, slice, idx + i);
        if (!img->extended_l2) {
            m->needs_link = (e & QCOW2_OFLAG_ZERO) != 0;
            continue;
        }
        uint64_t base = i << img->cluster_bits;
        uint64_t from = MAX(data_from, base) - base;
        uint64_t to = MIN(data_to, base + img->cluster_size) - base;
        m->needs_link = !all_written_normal(img, e, l2_get_bitmap(img, slice, idx + i), from, to);
    }
    *bytes = len;
    return 0;
}

/* Host clusters for the run of `m` (nb_clusters set): alloc_offset and dest_zero. Inlined
 * into the preparation of every allocating write. */
static inline __attribute__((always_inline)) int alloc_data(struct qcow2_image *img,
                                                            struct l2_meta *m)
{
    uint64_t bytes = (uint64_t)m->nb_clusters << img->cluster_bits;
    if (has_data_file(img)) {
        /* External data: the host offset is the guest offset, nothing is refcounted. */
        m->alloc_offset = m->offset;
        m->dest_zero = false;
        return 0;
    }
    int64_t host = refcount_alloc_hot(img, m->nb_clusters);
    if (host == 0)
        host = refcount_alloc_clusters(img, bytes);
    if (host < 0)
        return (int)host;
    m->alloc_offset = (uint64_t)host;
    /* Free clusters per the refcounts must not hold metadata: if they do, stop here. (The
     * usual answer, above every structure, inline.) */
    int ret = overlap_above_all(img, (uint64_t)host)
                  ? 0
                  : overlap_check(img, (uint64_t)host, bytes, 0);
    if (ret < 0)
        return ret; /* leaked on purpose: freeing would touch the metadata it holds */
    /* Clusters past the end of the file that nothing has written yet read as zeros: COW of
     * zeros can be skipped there. (Checked here, under the lock, before anyone writes.) */
    m->dest_zero = (uint64_t)host >= file_zero_from(img->file, img->zero_from);
    return 0;
}

/* cluster_prepare_write() for new clusters (entry `idx` of `slice` needs one): as many as
 * follow that need one too, up to `max_clusters`, allocated in one run. */
static int prepare_new_clusters(struct qcow2_image *img, struct l2_meta *m, const void *slice,
                                uint64_t idx, uint64_t offset, uint64_t *bytes,
                                uint64_t max_clusters)
{
    uint64_t in_cluster = offset - m->offset;
    uint64_t n = 1;
    while (n < max_clusters && needs_new_cluster(img, l2_get_entry(img, slice, idx + n)))
        n++;
    uint64_t len = MIN(*bytes, (n << img->cluster_bits) - in_cluster);
    m->nb_clusters = (unsigned)n;
    m->needs_link = true;
    set_cow_regions(img, m, slice, idx, in_cluster, in_cluster + len);
    int ret = alloc_data(img, m);
    if (ret < 0)
        return ret;
    *bytes = len;
    return 0;
}

/* The fields of a new record that cluster_prepare_write() may leave as they are: set one by
 * one, not by zeroing the whole record, which every allocating write makes. The others are
 * always set on success: offset and keep_old_clusters by cluster_prepare_write(), the run
 * (nb_clusters, alloc_offset, needs_link, dest_zero for new clusters) by prepare_in_place()
 * or prepare_new_clusters(), the COW regions and cow_zero by set_cow_regions(), the remembered
 * slice by find_l2_slice_for_write() when it sets l2_slice_at, the list links by
 * cluster_meta_start(). guard_gen means something only with is_guard. */
static void start_meta(struct l2_meta *m, bool prealloc)
{
    m->prealloc = prealloc;
    m->dest_zero = false;
    m->is_guard = false;
    m->l2_slice_at = 0;
}

int cluster_prepare_write(struct qcow2_image *img, uint64_t offset, uint64_t *bytes,
                          struct l2_meta *m, bool prealloc)
{
    void *slice;
    uint64_t idx;
    /* The L2 table comes first (as in QEMU, so that both lay out files alike): a cluster
     * whose L1 entry is not COPIED is never written in place, so it will be linked. The
     * slice is not pinned: it is read only before alloc_data(), whose refcount
     * updates may write L2 slices (flushes) but never evict one. */
    start_meta(m, prealloc);
    int ret = find_l2_slice_for_write(img, offset, &slice, &idx, m);
    if (ret < 0)
        return ret;
    assert(slice); /* created when missing */
    uint64_t in_cluster = offset_into_cluster(img, offset);
    uint64_t want_clusters =
        align_up_pow2(in_cluster + *bytes, img->cluster_size) >> img->cluster_bits;
    /* One record covers at most one L2 slice, and a bounded number of clusters. */
    uint64_t max_clusters = MIN(MIN(want_clusters, img->l2_slice_size - idx),
                                CLUSTER_MAX_META_CLUSTERS);
    bool keep = !needs_new_cluster(img, l2_get_entry(img, slice, idx));
    m->offset = offset - in_cluster;
    m->keep_old_clusters = keep;
    ret = keep ? prepare_in_place(img, m, slice, idx, offset, bytes, max_clusters)
               : prepare_new_clusters(img, m, slice, idx, offset, bytes, max_clusters);
    if (ret == 0)
        cluster_assert_meta(img, m);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Linking. */

/* Make the subclusters m writes (COW regions and data) allocated, and no longer zero, in the
 * bitmaps of its clusters (entry `idx` of `slice` on). */
static inline __attribute__((always_inline)) void
set_linked_bitmaps(const struct qcow2_image *img, const struct l2_meta *m, void *slice,
                   uint64_t idx)
{
    /* [a, b): the written subclusters, counted from the start of the cluster at hand. They
     * begin in the first cluster (the guest data does) and end in the last one. */
    uint64_t per = img->subclusters_per_cluster;
    uint64_t a = m->cow_start.offset >> img->subcluster_bits;
    uint64_t b = align_up_pow2(m->cow_end.offset + m->cow_end.nb_bytes, img->subcluster_size) >>
                 img->subcluster_bits;
    assert(a < per && b <= per * m->nb_clusters);
    for (uint64_t i = idx; a < b; i++) {
        uint64_t to = MIN(b, per);
        /* QCOW2_SC_ALLOC_RANGE(a, to) without its branch: here 0 <= a < to <= 32. */
        uint64_t alloc = (QCOW2_SC_ALL_ALLOC >> (32 - (to - a))) << a;
        uint64_t old = l2_get_bitmap(img, slice, i);
        l2_set_bitmap(img, slice, i, (old | alloc) & ~(alloc << 32)); /* zero bits: 32 up */
        a = 0;
        b -= to;
    }
}

/* cluster_mark_dirty_for_update(), inlined into the link of every allocating write. */
static inline __attribute__((always_inline)) int mark_dirty_for_update(struct qcow2_image *img)
{
    if (img->lazy_refcounts && !img->dirty) {
        int ret = header_set_incompat_bits(img, QCOW2_INCOMPAT_DIRTY, 0);
        if (ret < 0)
            return ret;
        img->dirty = true;
    }
    if (!img->dirty)
        return cache_set_dependency(img->l2_cache, img->refcount_cache);
    return 0;
}

int cluster_mark_dirty_for_update(struct qcow2_image *img)
{
    return mark_dirty_for_update(img);
}

/* A write checks for guarded requests when it starts, but it drops `lock` while its data
 * goes to disk, and reads that begin meanwhile map the old clusters of its range. Once the
 * new entries are linked, new reads see the new clusters; before the old ones lose their
 * reference (and could be reused by any allocation), wait for the guards of guest range
 * [start, end) that mapped them, those of an older generation. Under `lock` (released while
 * waiting). Never waits for reads that begin later, so readers cannot starve it. */
static void wait_older_guards(struct qcow2_image *img, uint64_t start, uint64_t end)
{
    uint64_t gen = ++img->guard_gen;
    for (;;) {
        int slot = -1;
        uint64_t used = __atomic_load_n(&img->guard_slots_used, __ATOMIC_SEQ_CST);
        while (used && slot < 0) {
            int i = __builtin_ctzll(used);
            used &= used - 1;
            const struct guard_slot *r = &img->guard_slots[i];
            if (r->gen < gen && ranges_overlap(start, end, r->start, r->end))
                slot = i;
        }
        if (slot >= 0) {
            wait_guard_slot(img, slot);
            continue;
        }
        const struct l2_meta *g = img->inflight;
        for (; g; g = g->next_in_flight) {
            uint64_t gs, ge;
            meta_guard_range(img, g, &gs, &ge);
            if (g->is_guard && g->guard_gen < gen && ranges_overlap(start, end, gs, ge))
                break;
        }
        if (!g)
            return;
        img->nb_waiters++; /* cluster_meta_finish() wakes us */
        pthread_cond_wait(&img->inflight_cond, &img->lock);
        img->nb_waiters--;
    }
}

void cluster_publish_l2(struct qcow2_image *img, void *slice)
{
    cache_depends_on_flush(img->l2_cache, img->data_file);
    cache_mark_dirty(img->l2_cache, slice);
}

/* Point the entries of `m` at its clusters (entry `idx` of `slice` on) and publish the
 * slice: it may be written only after the data the entries now make readable. New clusters,
 * a kept cluster whose entry changes (a zero flag cleared, new subclusters), preallocated
 * clusters: in every case the entries make host bytes readable that were just written. */
static inline __attribute__((always_inline)) void
set_linked_entries(struct qcow2_image *img, const struct l2_meta *m, void *slice, uint64_t idx)
{
    /* (Locals: the stores into the slice could alias m and img for the compiler.) */
    uint64_t host = m->alloc_offset, end = idx + m->nb_clusters, cs = img->cluster_size;
    for (uint64_t i = idx; i < end; i++, host += cs)
        l2_set_entry(img, slice, i, host | QCOW2_OFLAG_COPIED);
    if (img->extended_l2 && !m->prealloc)
        set_linked_bitmaps(img, m, slice, idx);
    cluster_publish_l2(img, slice);
}

/* Does any of entries [idx, idx + n) of `slice` hold data (compressed, or a host cluster)? */
static bool entries_hold_data(const struct qcow2_image *img, const void *slice, uint64_t idx,
                              uint64_t n)
{
    for (uint64_t i = idx; i < idx + n; i++)
        if (l2_get_entry(img, slice, i) & (QCOW2_OFLAG_COMPRESSED | L2E_OFFSET_MASK))
            return true;
    return false;
}

/* cluster_link_l2() for clusters that replace others holding data (compressed, or shared
 * with a snapshot): link, then wait for the reads that mapped the old ones, then free them. */
static __attribute__((noinline)) int link_replacing(struct qcow2_image *img,
                                                     const struct l2_meta *m, void *slice,
                                                     uint64_t idx)
{
    uint64_t old[m->nb_clusters];
    for (uint64_t i = 0; i < m->nb_clusters; i++)
        old[i] = l2_get_entry(img, slice, idx + i);
    set_linked_entries(img, m, slice, idx);
    slice = NULL; /* not pinned: unusable once the lock may be dropped below */
    wait_older_guards(img, m->offset,
                      m->offset + ((uint64_t)m->nb_clusters << img->cluster_bits));
    /* Only now may the replaced clusters lose their reference. The entries are linked: from
     * here on the write has succeeded, and a failure to free only leaks the old clusters
     * (the caller must not abort and free the new ones). */
    for (uint64_t i = 0; i < m->nb_clusters; i++) {
        if (!(old[i] & QCOW2_OFLAG_COMPRESSED) && !(old[i] & L2E_OFFSET_MASK))
            continue;
        (void)refcount_free_l2_entry(img, old[i]);
    }
    return 0;
}

int cluster_link_l2(struct qcow2_image *img, struct l2_meta *m)
{
    /* The COW regions and the guest data are written: now the entries may point there. (m
     * was made by cluster_prepare_write(), which checked it: cluster_assert_meta().) */
    if (!m->needs_link)
        return 0;
    int ret = mark_dirty_for_update(img);
    if (ret < 0)
        return ret;
    uint64_t idx = offset_to_l2_slice_index(img, m->offset);
    void *slice = remembered_slice(img, m);
    if (!slice) {
        ret = find_l2_slice_for_write(img, m->offset, &slice, &idx, NULL);
        if (ret < 0)
            return ret;
    }
    assert(slice && idx + m->nb_clusters <= img->l2_slice_size);
    /* Clusters replaced (not kept) that held data must lose their reference once linked. */
    if (!m->keep_old_clusters && entries_hold_data(img, slice, idx, m->nb_clusters))
        return link_replacing(img, m, slice, idx);
    set_linked_entries(img, m, slice, idx);
    return 0;
}

void cluster_abort(struct qcow2_image *img, struct l2_meta *m)
{
    if (!m->keep_old_clusters && !has_data_file(img))
        refcount_free_clusters(img, m->alloc_offset, (uint64_t)m->nb_clusters << img->cluster_bits);
}

int cluster_write_switches(struct qcow2_image *img)
{
    int ret = cluster_link_new_tables(img);
    return ret < 0 ? ret : header_write_pending_switches(img);
}

int cluster_flush_metadata(struct qcow2_image *img)
{
    int ret = cluster_write_switches(img);
    if (ret == 0)
        ret = cache_flush(img->l2_cache);
    if (ret == 0)
        ret = cache_flush(img->refcount_cache);
    return ret;
}
