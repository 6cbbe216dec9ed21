/* snapshot.c - internal snapshots: the snapshot table (parse, serialize, read, write at a new
 * place) and the operations on it: create, apply, delete, list, and the read-only view of one
 * snapshot. The one parser of the table: check.c reads and rewrites it through here. Calls
 * refcount.c for reference counts, cache.c for L2 tables, header_write.c for the header
 * switches, file.c for the table and L1 copies, io.c to flush before an operation. Never goes
 * through the data path: guest data is shared, never copied, by a snapshot.
 *
 * Refcounts follow QEMU: a host cluster holds one reference per L1 table that reaches it, so
 * a data cluster behind an L2 table shared by the active L1 and a snapshot counts 2. COPIED
 * is set in the active L1/L2 entries exactly where the refcount is 1 (readers of snapshot L1
 * copies ignore it).
 *
 * Crash safety: every new structure (L1 copy, table) is written and flushed before the header
 * points at it, in one sector-sized header write; references are added before the switch and
 * dropped after it, so a crash leaves the old or the new state with at worst leaked clusters.
 * The COPIED flags and the refcounts they mirror live in different clusters and cannot change
 * together; the order keeps every state in between one that loses no data:
 *  - create: L1 copy, flush; refcounts raised, flush; COPIED cleared (L2 tables, flush, L1);
 *    the table, flush; the header switch. Before the switch no snapshot exists: a cluster
 *    still marked COPIED with refcount 2 has one real reference (an over-count, a leak).
 *    After it every shared cluster has COPIED clear.
 *  - delete: the header switch to the table without the entry; refcounts dropped, flush;
 *    COPIED set where they reached 1. In between, COPIED is clear on clusters of refcount 1
 *    (the next write copies them needlessly) or set on ones counted once too often.
 *  - apply: the snapshot's refcounts raised; its L1 written to new clusters, flush; the
 *    header switch (size, L1 size and offset in one sector); the old state's refcounts
 *    dropped. Every cluster of the new active state is shared with the snapshot, so COPIED
 *    stays clear everywhere (fix_copied finds nothing to change on a consistent image).
 * A v3 image carries the dirty bit during the operation, so that the next writable open
 * repairs the flags (as after lazy refcounts). A v2 image has no dirty bit: a crash inside
 * the window leaves flags that `qemu-img check` reports as errors although they lose no
 * data, and `check -r all` repairs (the crash test's workload snapshot_ops_v2 accepts
 * exactly these and nothing else). No order of writes avoids them; only a new refcount
 * structure switched by the same header write as the L1 table could.
 * QEMU 7.2 has the same flag windows, and one more that we close: its apply
 * (qcow2_snapshot_goto) overwrites the active L1 table in place, so a crash during that
 * write, when it spans several sectors, leaves an L1 table mixing the two states. We write
 * the new L1 table to new clusters and switch to it with one header write. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Snapshot table entry fields (the fixed part, QCOW2_SNAPSHOT_HEADER_SIZE bytes). */
#define SN_L1_TABLE_OFFSET 0
#define SN_L1_SIZE 8
#define SN_ID_STR_SIZE 12
#define SN_NAME_SIZE 14
#define SN_DATE_SEC 16
#define SN_DATE_NSEC 20
#define SN_VM_CLOCK_NSEC 24
#define SN_VM_STATE_SIZE 32
#define SN_EXTRA_DATA_SIZE 36
/* Its extra data (offsets into the extra data). */
#define SN_EXTRA_VM_STATE_SIZE_LARGE 0
#define SN_EXTRA_DISK_SIZE 8
#define SN_EXTRA_ICOUNT 16

#define L1E_SIZE 8

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* ------------------------------------------------------------------------------------------ */
/* The table: parse and serialize. */

void snapshot_entry_free(struct snapshot *sn)
{
    free(sn->extra);
    free(sn->id);
    free(sn->name);
    memset(sn, 0, sizeof(*sn));
}

void snapshot_table_free(struct snapshot_table *t)
{
    for (uint32_t i = 0; i < t->nb; i++)
        snapshot_entry_free(&t->sn[i]);
    free(t->sn);
    memset(t, 0, sizeof(*t));
}

static char *read_string(struct qcow2_image *img, uint64_t offset, uint32_t len, int *ret)
{
    char *s = malloc((size_t)len + 1);
    if (!s) {
        *ret = -ENOMEM;
        return NULL;
    }
    *ret = file_pread(img->file, s, len, offset);
    s[len] = '\0';
    return s;
}

/* The known fields of the extra data, whole fields only; the rest take QEMU's defaults (the
 * 32-bit VM state size, the current disk size, no icount). */
static void parse_extra(const struct qcow2_image *img, struct snapshot *sn)
{
    sn->vm_state_size = sn->vm_state_size32;
    sn->disk_size = ROUND_UP(img->size, 512);
    sn->icount = UINT64_MAX;
    if (sn->extra_data_size >= SN_EXTRA_VM_STATE_SIZE_LARGE + 8)
        sn->vm_state_size = be64_get(sn->extra + SN_EXTRA_VM_STATE_SIZE_LARGE);
    if (sn->extra_data_size >= SN_EXTRA_DISK_SIZE + 8)
        sn->disk_size = be64_get(sn->extra + SN_EXTRA_DISK_SIZE);
    if (sn->extra_data_size >= SN_EXTRA_ICOUNT + 8)
        sn->icount = be64_get(sn->extra + SN_EXTRA_ICOUNT);
}

/* Read one entry at `pos`; on return *pos is just past it. */
static int read_entry(struct qcow2_image *img, struct snapshot *sn, uint64_t *pos,
                      bool truncate_extra)
{
    uint8_t h[QCOW2_SNAPSHOT_HEADER_SIZE];
    int ret = file_pread(img->file, h, sizeof(h), *pos);
    if (ret < 0)
        return ret;
    sn->l1_table_offset = be64_get(h + SN_L1_TABLE_OFFSET);
    sn->l1_size = be32_get(h + SN_L1_SIZE);
    sn->id_size = be16_get(h + SN_ID_STR_SIZE);
    sn->name_size = be16_get(h + SN_NAME_SIZE);
    sn->date_sec = be32_get(h + SN_DATE_SEC);
    sn->date_nsec = be32_get(h + SN_DATE_NSEC);
    sn->vm_clock_nsec = be64_get(h + SN_VM_CLOCK_NSEC);
    sn->vm_state_size32 = be32_get(h + SN_VM_STATE_SIZE);
    uint32_t extra_size = be32_get(h + SN_EXTRA_DATA_SIZE);
    sn->extra_data_size = extra_size;
    sn->extra_truncated_from = 0;
    if (extra_size > SNAPSHOT_MAX_EXTRA_DATA) {
        if (!truncate_extra)
            return -EFBIG;
        sn->extra_truncated_from = extra_size;
        sn->extra_data_size = SNAPSHOT_MAX_EXTRA_DATA;
    }
    *pos += sizeof(h);
    sn->extra = malloc(sn->extra_data_size ? sn->extra_data_size : 1);
    if (!sn->extra)
        return -ENOMEM;
    if ((ret = file_pread(img->file, sn->extra, sn->extra_data_size, *pos)) < 0)
        return ret;
    *pos += extra_size;
    sn->id = read_string(img, *pos, sn->id_size, &ret);
    if (ret < 0)
        return ret;
    *pos += sn->id_size;
    sn->name = read_string(img, *pos, sn->name_size, &ret);
    if (ret < 0)
        return ret;
    *pos += sn->name_size;
    parse_extra(img, sn);
    return 0;
}

int snapshot_table_read(struct qcow2_image *img, uint64_t offset, uint32_t nb,
                        bool truncate_extra, struct snapshot_table *t, uint32_t *bad_entry)
{
    memset(t, 0, sizeof(*t));
    *bad_entry = UINT32_MAX;
    if (nb == 0)
        return 0;
    t->sn = calloc(nb, sizeof(*t->sn));
    if (!t->sn)
        return set_error(img, -ENOMEM, "out of memory for %u snapshots", nb);
    uint64_t pos = offset, length = 0;
    for (uint32_t i = 0; i < nb; i++) {
        struct snapshot *sn = &t->sn[i];
        pos = ROUND_UP(pos, 8);
        t->nb = i + 1;
        int ret = read_entry(img, sn, &pos, truncate_extra);
        if (ret == -EFBIG) {
            *bad_entry = i;
            snapshot_table_free(t);
            return set_error(img, ret, "Too much extra metadata in snapshot table entry %u",
                             i);
        }
        if (ret < 0) {
            snapshot_table_free(t);
            if (ret == -ENOMEM)
                return set_error(img, ret, "out of memory reading the snapshot table");
            return set_error(img, ret, "reading the snapshot table failed: %s",
                             strerror(-ret));
        }
        /* QEMU 7.2 counts the padding before each entry and the extra data as kept. */
        length = ROUND_UP(length, 8) + QCOW2_SNAPSHOT_HEADER_SIZE + sn->extra_data_size +
                 sn->id_size + sn->name_size;
        if (length > SNAPSHOT_TABLE_MAX_BYTES) {
            snapshot_table_free(t);
            return set_error(img, -EFBIG, "Snapshot table is too big");
        }
    }
    t->size = pos - offset;
    return 0;
}

/* Bytes of one serialized entry, without the padding before it. */
static uint64_t entry_size(const struct snapshot *sn)
{
    return QCOW2_SNAPSHOT_HEADER_SIZE + MAX(SNAPSHOT_EXTRA_DATA_SIZE, sn->extra_data_size) +
           sn->id_size + sn->name_size;
}

uint64_t snapshot_table_size(const struct snapshot *sn, uint32_t nb)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < nb; i++)
        size = ROUND_UP(size, 8) + entry_size(&sn[i]);
    return size;
}

/* Serialize as QEMU writes the table: every entry with at least 24 bytes of extra data (the
 * known fields from the entry, unknown extra bytes kept verbatim), the 32-bit VM state size 0
 * when the real one does not fit (older readers then see a disk-only snapshot, not a cut
 * one), entries 8-byte aligned. `buf` holds snapshot_table_size() bytes, zeroed. */
static void serialize_table(const struct snapshot *sns, uint32_t nb, uint8_t *buf)
{
    uint64_t pos = 0;
    for (uint32_t i = 0; i < nb; i++) {
        const struct snapshot *sn = &sns[i];
        uint32_t extra_size = MAX(SNAPSHOT_EXTRA_DATA_SIZE, sn->extra_data_size);
        pos = ROUND_UP(pos, 8);
        uint8_t *h = buf + pos;
        be64_put(h + SN_L1_TABLE_OFFSET, sn->l1_table_offset);
        be32_put(h + SN_L1_SIZE, sn->l1_size);
        be16_put(h + SN_ID_STR_SIZE, sn->id_size);
        be16_put(h + SN_NAME_SIZE, sn->name_size);
        be32_put(h + SN_DATE_SEC, sn->date_sec);
        be32_put(h + SN_DATE_NSEC, sn->date_nsec);
        be64_put(h + SN_VM_CLOCK_NSEC, sn->vm_clock_nsec);
        be32_put(h + SN_VM_STATE_SIZE,
                 sn->vm_state_size <= UINT32_MAX ? (uint32_t)sn->vm_state_size : 0);
        be32_put(h + SN_EXTRA_DATA_SIZE, extra_size);
        pos += QCOW2_SNAPSHOT_HEADER_SIZE;
        if (sn->extra_data_size > SNAPSHOT_EXTRA_DATA_SIZE)
            memcpy(buf + pos, sn->extra, sn->extra_data_size);
        be64_put(buf + pos + SN_EXTRA_VM_STATE_SIZE_LARGE, sn->vm_state_size);
        be64_put(buf + pos + SN_EXTRA_DISK_SIZE, sn->disk_size);
        be64_put(buf + pos + SN_EXTRA_ICOUNT, sn->icount);
        pos += extra_size;
        memcpy(buf + pos, sn->id, sn->id_size);
        pos += sn->id_size;
        memcpy(buf + pos, sn->name, sn->name_size);
        pos += sn->name_size;
    }
}

/* Write nb_snapshots and snapshots_offset in one synced write: the switch. */
static int switch_table(struct qcow2_image *img, uint32_t nb, uint64_t offset)
{
    uint8_t field[HDR_SNAPSHOTS_OFFSET + 8 - HDR_NB_SNAPSHOTS];
    be32_put(field, nb);
    be64_put(field + (HDR_SNAPSHOTS_OFFSET - HDR_NB_SNAPSHOTS), offset);
    return header_write_field(img, HDR_NB_SNAPSHOTS, field, sizeof(field));
}

int snapshot_table_write(struct qcow2_image *img, const struct snapshot *sns, uint32_t nb,
                         uint64_t old_size)
{
    uint64_t size = snapshot_table_size(sns, nb);
    if (size > SNAPSHOT_TABLE_MAX_BYTES)
        return set_error(img, -EFBIG, "the snapshot table would be too big");
    int64_t offset = 0;
    int ret = 0;
    if (nb > 0) {
        uint8_t *buf = calloc(1, size);
        if (!buf)
            return set_error(img, -ENOMEM, "out of memory");
        serialize_table(sns, nb, buf);
        offset = refcount_alloc_clusters(img, size);
        ret = offset < 0 ? (int)offset : cache_flush(img->refcount_cache);
        if (ret == 0) {
            ret = file_pwrite(img->file, buf, size, (uint64_t)offset);
            if (ret == 0)
                ret = file_flush(img->file);
            if (ret < 0)
                set_error(img, ret, "writing the snapshot table failed: %s", strerror(-ret));
        }
        free(buf);
        if (ret < 0) {
            /* Nothing points at the new table yet. */
            if (offset > 0)
                (void)refcount_free_clusters(img, (uint64_t)offset, size);
            return ret;
        }
    }
    /* QEMU writes offset 0 for an empty table. */
    if (ret == 0)
        ret = switch_table(img, nb, (uint64_t)offset);
    if (ret < 0)
        return ret; /* the switch may have landed: the new table is kept (a leak at worst) */
    uint64_t old = img->hdr.snapshots_offset;
    img->hdr.snapshots_offset = (uint64_t)offset;
    img->hdr.nb_snapshots = nb;
    /* The switch is done: failing to free the old table only leaks it. A table past the end
     * of the file never had clusters to free. */
    int64_t fsize = file_size_cached(img->file);
    if (old && old_size && fsize >= 0 && old + old_size <= (uint64_t)fsize)
        (void)refcount_free_clusters(img, old, old_size);
    return cache_flush(img->refcount_cache);
}

/* The image's table, read once (callers hold img->lock). */
static int load_table(struct qcow2_image *img)
{
    if (img->snapshots_loaded)
        return 0;
    if (img->format != QCOW2_FORMAT_QCOW2) {
        img->snapshots_loaded = true;
        return 0;
    }
    uint32_t bad;
    int ret = snapshot_table_read(img, img->hdr.snapshots_offset, img->hdr.nb_snapshots, false,
                                  &img->snapshots, &bad);
    if (ret == 0)
        img->snapshots_loaded = true;
    return ret;
}

void snapshot_close(struct qcow2_image *img)
{
    snapshot_table_free(&img->snapshots);
    img->snapshots_loaded = false;
}

/* ------------------------------------------------------------------------------------------ */
/* Lookup. */

static int find_by_id(const struct snapshot_table *t, const char *id)
{
    for (uint32_t i = 0; i < t->nb; i++)
        if (strcmp(t->sn[i].id, id) == 0)
            return (int)i;
    return -1;
}

static int find_by_name(const struct snapshot_table *t, const char *name)
{
    for (uint32_t i = 0; i < t->nb; i++)
        if (strcmp(t->sn[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* QEMU's rules: both given, one entry must carry both; else the one given. */
static int find(const struct snapshot_table *t, const char *id, const char *name)
{
    if (id && name) {
        for (uint32_t i = 0; i < t->nb; i++)
            if (strcmp(t->sn[i].id, id) == 0 && strcmp(t->sn[i].name, name) == 0)
                return (int)i;
        return -1;
    }
    return id ? find_by_id(t, id) : name ? find_by_name(t, name) : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* References: what an L1 table holds, as host ranges. */

/* Host ranges to which one L1 table holds a reference each: its L2 tables and the clusters
 * their entries point at (compressed data by its byte range). Whole-cluster ranges that
 * follow each other are merged, so that a written disk is a few long runs. */
struct ref_run {
    uint64_t offset;
    uint64_t length;
};

struct ref_list {
    struct ref_run *r;
    size_t n, cap;
};

static int refs_add(struct qcow2_image *img, struct ref_list *l, uint64_t offset,
                    uint64_t length, bool whole_clusters)
{
    if (whole_clusters && l->n > 0) {
        struct ref_run *last = &l->r[l->n - 1];
        if (last->offset + last->length == offset && !offset_into_cluster(img, last->offset) &&
            !offset_into_cluster(img, last->length)) {
            last->length += length;
            return 0;
        }
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct ref_run *r = realloc(l->r, cap * sizeof(*r));
        if (!r)
            return set_error(img, -ENOMEM, "out of memory");
        l->r = r;
        l->cap = cap;
    }
    l->r[l->n++] = (struct ref_run){offset, length};
    return 0;
}

/* Add what L2 table `l2_offset` references. */
static int collect_l2(struct qcow2_image *img, uint64_t l2_offset, struct ref_list *l)
{
    size_t slice_bytes = cache_table_size(img->l2_cache);
    uint64_t per_slice = slice_bytes / img->l2_entry_size;
    for (uint64_t off = 0; off < img->cluster_size; off += slice_bytes) {
        const void *slice;
        int ret = cache_peek(img->l2_cache, l2_offset + off, &slice);
        if (ret < 0)
            return ret;
        /* Copy what we need before any other cache call (refs_add makes none). */
        for (uint64_t i = 0; i < per_slice; i++) {
            uint64_t e = l2_get_entry(img, slice, i);
            if (e & QCOW2_OFLAG_COMPRESSED) {
                uint64_t coffset, csize;
                cluster_compressed_range(img, e, &coffset, &csize);
                ret = refs_add(img, l, coffset, csize, false);
            } else {
                uint64_t host = e & L2E_OFFSET_MASK;
                if (!host)
                    continue;
                if (offset_into_cluster(img, host))
                    return signal_corruption(img,
                                             "cluster offset 0x%llx in L2 table 0x%llx is not "
                                             "cluster aligned",
                                             ull(host), ull(l2_offset));
                ret = refs_add(img, l, host, img->cluster_size, true);
            }
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

static int collect_l1(struct qcow2_image *img, const uint64_t *l1, uint32_t l1_size,
                      struct ref_list *l)
{
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2_offset = l1[i] & L1E_OFFSET_MASK;
        if (!l2_offset)
            continue;
        if (offset_into_cluster(img, l2_offset))
            return signal_corruption(img, "L2 table offset 0x%llx is not cluster aligned (L1 "
                                          "index %u)",
                                     ull(l2_offset), i);
        int ret = refs_add(img, l, l2_offset, img->cluster_size, true);
        if (ret == 0)
            ret = collect_l2(img, l2_offset, l);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Add `addend` to every run. An increase that fails part way is undone, so that a refused
 * create (refcount overflow) changes nothing; a decrease that fails leaves leaks. */
static int apply_refs(struct qcow2_image *img, const struct ref_list *l, int addend)
{
    for (size_t i = 0; i < l->n; i++) {
        int ret = refcount_update(img, l->r[i].offset, l->r[i].length, addend);
        if (ret < 0) {
            if (addend > 0)
                for (size_t j = 0; j < i; j++)
                    (void)refcount_update(img, l->r[j].offset, l->r[j].length, -addend);
            return ret;
        }
    }
    return 0;
}

/* Read an inactive L1 table (host byte order). */
static int read_l1(struct qcow2_image *img, uint64_t offset, uint32_t size, uint64_t **out)
{
    *out = NULL;
    if (offset_into_cluster(img, offset) || (uint64_t)size * L1E_SIZE > QCOW2_MAX_L1_BYTES)
        return signal_corruption(img, "snapshot L1 table at 0x%llx (%u entries) is invalid",
                                 ull(offset), size);
    uint64_t *l1 = calloc(MAX(size, 1u), L1E_SIZE);
    if (!l1)
        return set_error(img, -ENOMEM, "out of memory for a snapshot L1 table");
    int ret = file_pread(img->file, l1, (size_t)size * L1E_SIZE, offset);
    if (ret < 0) {
        free(l1);
        return set_error(img, ret, "reading the snapshot L1 table failed: %s", strerror(-ret));
    }
    for (uint32_t i = 0; i < size; i++)
        l1[i] = be64_get(&l1[i]);
    *out = l1;
    return 0;
}

/* Write `l1` (host order, `size` entries, `bytes` >= size * 8 on disk) to newly allocated
 * clusters, COPIED cleared (a snapshot's tables are shared), flushed. Returns the offset. */
static int64_t write_l1_copy(struct qcow2_image *img, const uint64_t *l1, uint32_t size,
                             uint64_t bytes)
{
    uint8_t *disk = calloc(1, MAX(bytes, 1u));
    if (!disk)
        return set_error(img, -ENOMEM, "out of memory");
    for (uint32_t i = 0; i < size; i++)
        be64_put(disk + (uint64_t)i * L1E_SIZE, l1[i] & ~QCOW2_OFLAG_COPIED);
    int64_t offset = 0;
    int ret = 0;
    if (bytes) {
        offset = refcount_alloc_clusters(img, bytes);
        ret = offset < 0 ? (int)offset : cache_flush(img->refcount_cache);
        if (ret == 0)
            ret = file_pwrite(img->file, disk, bytes, (uint64_t)offset);
        if (ret == 0)
            ret = file_flush(img->file);
        if (ret < 0 && offset > 0) {
            set_error(img, ret, "writing an L1 table copy failed: %s", strerror(-ret));
            (void)refcount_free_clusters(img, (uint64_t)offset, bytes);
        }
    }
    free(disk);
    return ret < 0 ? ret : offset;
}

/* fix_copied() for the entries of the L2 table at `l2_offset`: changed in the cache, marked
 * dirty, not written. */
static int fix_copied_l2(struct qcow2_image *img, uint64_t l2_offset)
{
    size_t slice_bytes = cache_table_size(img->l2_cache);
    uint64_t per_slice = slice_bytes / img->l2_entry_size;
    for (uint64_t off = 0; off < img->cluster_size; off += slice_bytes) {
        void *slice;
        int ret = cache_get(img->l2_cache, l2_offset + off, &slice);
        if (ret < 0)
            return ret;
        bool dirty = false;
        for (uint64_t j = 0; j < per_slice && ret == 0; j++) {
            uint64_t e = l2_get_entry(img, slice, j);
            uint64_t host = e & L2E_OFFSET_MASK;
            uint64_t copied = 0, rc;
            if (!(e & QCOW2_OFLAG_COMPRESSED) && host) {
                ret = refcount_get(img, host >> img->cluster_bits, &rc);
                copied = rc == 1 ? QCOW2_OFLAG_COPIED : 0;
            } else if (!(e & QCOW2_OFLAG_COMPRESSED)) {
                copied = e & QCOW2_OFLAG_COPIED; /* no host cluster: left as it is */
            }
            if (ret == 0 && (e & QCOW2_OFLAG_COPIED) != copied) {
                l2_set_entry(img, slice, j, (e & ~QCOW2_OFLAG_COPIED) | copied);
                dirty = true;
            }
        }
        if (dirty)
            cache_mark_dirty(img->l2_cache, slice);
        cache_put(img->l2_cache, &slice);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Make COPIED in the active L1 and L2 entries say "refcount 1" exactly, and write what
 * changed (L2 tables through the cache, then the L1 table, synced). The refcounts must be on
 * disk first: then no crash leaves a COPIED flag the on-disk refcount contradicts in the
 * direction that matters (COPIED on a shared cluster).
 * The L1 entries change in memory only once the L2 tables are on disk, and are marked for
 * writing as they change: after a failure memory says what the disk says, so a retry (a
 * snapshot create repeated after ENOSPC, say) finds the change still to do and writes it.
 * Changed earlier and left unwritten by a failed L2 flush, the retry found nothing to change
 * and never wrote the L1 table: COPIED stayed set on disk on tables the new snapshot shares,
 * and the next write through them would have changed the snapshot. */
static int fix_copied(struct qcow2_image *img)
{
    int ret = cache_flush(img->refcount_cache);
    for (uint32_t i = 0; i < img->l1_size && ret == 0; i++) {
        uint64_t l2_offset = img->l1_table[i] & L1E_OFFSET_MASK;
        if (l2_offset)
            ret = fix_copied_l2(img, l2_offset);
    }
    if (ret == 0)
        ret = cache_flush(img->l2_cache);
    bool l1_changed = false;
    for (uint32_t i = 0; i < img->l1_size && ret == 0; i++) {
        uint64_t l2_offset = img->l1_table[i] & L1E_OFFSET_MASK;
        uint64_t rc;
        if (!l2_offset || (ret = refcount_get(img, l2_offset >> img->cluster_bits, &rc)) < 0)
            continue;
        uint64_t want = rc == 1 ? QCOW2_OFLAG_COPIED : 0;
        if ((img->l1_table[i] & QCOW2_OFLAG_COPIED) != want) {
            img->l1_table[i] = (img->l1_table[i] & ~QCOW2_OFLAG_COPIED) | want;
            img->l1_dirty = true; /* written below, or again at the next flush if that fails */
            l1_changed = true;
        }
    }
    if (l1_changed)
        img->metadata_gen++;
    if (ret < 0 || !img->l1_dirty)
        return ret;
    return header_write_pending_switches(img);
}

/* ------------------------------------------------------------------------------------------ */
/* Operations. */

/* Before an operation: a writable qcow2 image without a data file, its table loaded. */
static int op_begin(struct qcow2_image *img, bool write)
{
    if (img->format != QCOW2_FORMAT_QCOW2)
        return set_error(img, -ENOTSUP, "raw images have no snapshots");
    if (write && img->read_only)
        return set_error(img, -EROFS, "the image is opened read-only");
    if (write && img->snapshot_view)
        return set_error(img, -EROFS, "a snapshot is opened for reading only");
    if (has_data_file(img))
        return set_error(img, -ENOTSUP, "snapshots are not supported with an external data "
                                        "file");
    if (write && (img->corrupt || img->layout_damaged))
        return set_error(img, -EIO, "the image is corrupt");
    /* Snapshot operations write the L1 table, or copies of it, from memory. */
    int ret = write ? cluster_link_new_tables(img) : 0;
    return ret < 0 ? ret : load_table(img);
}

/* The dirty bit covers the COPIED/refcount window on v3 images (see the top of the file).
 * Not when the session keeps the image dirty anyway (lazy refcounts). */
static int window_open(struct qcow2_image *img, bool *set_here)
{
    *set_here = false;
    if (img->dirty || img->hdr.version < 3)
        return 0;
    int ret = header_set_incompat_bits(img, QCOW2_INCOMPAT_DIRTY, 0);
    if (ret == 0)
        *set_here = true;
    return ret;
}

/* Everything on disk, then the dirty bit cleared. After a failure the bit stays: the next
 * writable open repairs the refcounts. */
static int window_close(struct qcow2_image *img, bool set_here, int ret)
{
    if (ret < 0 || !set_here)
        return ret;
    ret = header_write_pending_switches(img);
    if (ret == 0)
        ret = cache_flush(img->l2_cache);
    if (ret == 0)
        ret = cache_flush(img->refcount_cache);
    if (ret == 0)
        ret = header_set_incompat_bits(img, 0, QCOW2_INCOMPAT_DIRTY);
    return ret;
}

/* The next ID: the largest numeric ID plus one (QEMU's find_new_snapshot_id). */
static unsigned long next_id(const struct snapshot_table *t)
{
    unsigned long max = 0;
    for (uint32_t i = 0; i < t->nb; i++) {
        unsigned long v = strtoul(t->sn[i].id, NULL, 10);
        if (v > max)
            max = v;
    }
    return max + 1;
}

static int fill_new_entry(struct qcow2_image *img, const struct qcow2_snapshot_opts *o,
                          struct snapshot *sn)
{
    char idbuf[32];
    const char *id = o->id;
    if (!id) {
        snprintf(idbuf, sizeof(idbuf), "%lu", next_id(&img->snapshots));
        id = idbuf;
    }
    size_t id_len = strlen(id), name_len = strlen(o->name);
    if (id_len > UINT16_MAX || name_len > UINT16_MAX)
        return set_error(img, -EINVAL, "snapshot ID or name too long");
    memset(sn, 0, sizeof(*sn));
    sn->id = strdup(id);
    sn->name = strdup(o->name);
    sn->extra = calloc(1, SNAPSHOT_EXTRA_DATA_SIZE);
    if (!sn->id || !sn->name || !sn->extra) {
        snapshot_entry_free(sn);
        return set_error(img, -ENOMEM, "out of memory");
    }
    sn->id_size = (uint16_t)id_len;
    sn->name_size = (uint16_t)name_len;
    sn->extra_data_size = SNAPSHOT_EXTRA_DATA_SIZE;
    sn->date_sec = o->date_sec;
    sn->date_nsec = o->date_nsec;
    if (!o->date_sec && !o->date_nsec) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sn->date_sec = (uint32_t)ts.tv_sec;
        sn->date_nsec = (uint32_t)(ts.tv_nsec / 1000 * 1000); /* QEMU's microseconds */
    }
    sn->vm_clock_nsec = o->vm_clock_nsec;
    sn->icount = o->icount;
    sn->disk_size = img->size;
    sn->l1_size = img->l1_size;
    return 0;
}

static int create_locked(struct qcow2_image *img, const struct qcow2_snapshot_opts *o)
{
    if (img->snapshots.nb >= QCOW2_MAX_SNAPSHOTS)
        return set_error(img, -EFBIG, "too many snapshots (at most %u)", QCOW2_MAX_SNAPSHOTS);
    if (o->id && find_by_id(&img->snapshots, o->id) >= 0)
        return set_error(img, -EEXIST, "a snapshot with ID %s exists already", o->id);
    struct snapshot sn;
    int ret = fill_new_entry(img, o, &sn);
    if (ret < 0)
        return ret;
    uint32_t nb = img->snapshots.nb + 1;
    struct snapshot *sns = malloc(nb * sizeof(*sns));
    if (!sns) {
        snapshot_entry_free(&sn);
        return set_error(img, -ENOMEM, "out of memory");
    }
    if (img->snapshots.nb)
        memcpy(sns, img->snapshots.sn, img->snapshots.nb * sizeof(*sns));
    sns[nb - 1] = sn;
    if (snapshot_table_size(sns, nb) > SNAPSHOT_TABLE_MAX_BYTES) {
        ret = set_error(img, -EFBIG, "the snapshot table would be too big");
        goto out;
    }

    bool window;
    struct ref_list refs = {0};
    uint64_t l1_bytes = ROUND_UP((uint64_t)img->l1_size * L1E_SIZE, img->cluster_size);
    if ((ret = collect_l1(img, img->l1_table, img->l1_size, &refs)) < 0)
        goto out;
    if ((ret = window_open(img, &window)) < 0)
        goto out_refs;
    /* 1. The snapshot's L1 copy, on disk before anything points at it. */
    int64_t l1_offset = write_l1_copy(img, img->l1_table, img->l1_size, l1_bytes);
    if (l1_offset < 0) {
        ret = (int)l1_offset;
        goto out_refs;
    }
    sns[nb - 1].l1_table_offset = (uint64_t)l1_offset;
    /* 2. A reference for it to everything it reaches, then COPIED cleared where shared. */
    if ((ret = apply_refs(img, &refs, 1)) < 0) {
        /* Undone (refcount overflow, say): nothing references the copy, nothing changed. */
        if (l1_bytes)
            (void)refcount_free_clusters(img, (uint64_t)l1_offset, l1_bytes);
        (void)window_close(img, window, 0);
        goto out_refs;
    }
    if ((ret = fix_copied(img)) < 0)
        goto out_refs;
    /* 3. The table with the new entry, switched in by the header. */
    if ((ret = snapshot_table_write(img, sns, nb, img->snapshots.size)) < 0)
        goto out_refs;
    free(img->snapshots.sn);
    img->snapshots.sn = sns;
    img->snapshots.nb = nb;
    img->snapshots.size = snapshot_table_size(sns, nb);
    sns = NULL;
    ret = window_close(img, window, 0);
out_refs:
    free(refs.r);
out:
    if (sns) {
        snapshot_entry_free(&sns[nb - 1]);
        free(sns);
    }
    return ret;
}

static int apply_locked(struct qcow2_image *img, uint32_t index)
{
    const struct snapshot *sn = &img->snapshots.sn[index];
    /* QEMU 7.2 refuses whenever the image has bitmaps (bdrv_snapshot_goto), enabled or not,
     * but not for a bitmap extension a program without bitmap support has disowned (the
     * autoclear bit clear): QEMU ignores those bitmaps and applies. So do we. */
    if (bitmap_any(img))
        return set_error(img, -EBUSY, "Device has active dirty bitmaps");
    if (sn->disk_size > (1ull << 62) || size_to_l1(img, sn->disk_size) > QCOW2_MAX_L1_BYTES / 8)
        return set_error(img, -EFBIG, "snapshot %s has an invalid disk size %llu", sn->id,
                         ull(sn->disk_size));
    if (sn->disk_size != img->size && img->hdr.version < 3)
        return set_error(img, -ENOTSUP, "cannot resize a version 2 image with snapshots");
    uint64_t *sn_l1, *new_l1 = NULL;
    int ret = read_l1(img, sn->l1_table_offset, sn->l1_size, &sn_l1);
    if (ret < 0)
        return ret;
    uint32_t new_size = (uint32_t)MAX((uint64_t)sn->l1_size, size_to_l1(img, sn->disk_size));
    uint64_t new_bytes = ROUND_UP((uint64_t)new_size * L1E_SIZE, img->cluster_size);
    new_size = (uint32_t)MIN(new_bytes / L1E_SIZE, QCOW2_MAX_L1_BYTES / L1E_SIZE);
    struct ref_list add = {0}, drop = {0};
    bool window;
    new_l1 = calloc(MAX(new_size, 1u), L1E_SIZE);
    if (!new_l1) {
        ret = set_error(img, -ENOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        new_l1[i] = sn_l1[i] & ~QCOW2_OFLAG_COPIED;
    uint64_t old_bytes = ROUND_UP((uint64_t)img->l1_size * L1E_SIZE, img->cluster_size);
    if ((ret = collect_l1(img, sn_l1, sn->l1_size, &add)) < 0 ||
        (ret = collect_l1(img, img->l1_table, img->l1_size, &drop)) < 0)
        goto out;
    if (img->hdr.l1_table_offset && old_bytes &&
        (ret = refs_add(img, &drop, img->hdr.l1_table_offset, old_bytes, false)) < 0)
        goto out;
    if ((ret = window_open(img, &window)) < 0)
        goto out;
    /* 1. References for the new active state and its L1 table, on disk. */
    if ((ret = apply_refs(img, &add, 1)) < 0) {
        (void)window_close(img, window, 0); /* undone: nothing changed */
        goto out;
    }
    int64_t l1_offset = write_l1_copy(img, new_l1, new_size, new_bytes);
    if (l1_offset < 0) {
        ret = (int)l1_offset;
        (void)apply_refs(img, &add, -1);
        goto out;
    }
    /* 2. The switch: size, L1 size and L1 offset in one header write. */
    uint8_t field[HDR_L1_TABLE_OFFSET + 8 - HDR_SIZE];
    memset(field, 0, sizeof(field));
    be64_put(field, sn->disk_size);
    be32_put(field + (HDR_CRYPT_METHOD - HDR_SIZE), img->hdr.crypt_method);
    be32_put(field + (HDR_L1_SIZE - HDR_SIZE), new_size);
    be64_put(field + (HDR_L1_TABLE_OFFSET - HDR_SIZE), (uint64_t)l1_offset);
    int switched = header_write_field(img, HDR_SIZE, field, sizeof(field));
    /* The new L1 table is complete on disk and referenced. Even if the header write failed it
     * may have landed: use the new state from now on, write the header again at the next
     * flush, and keep the old state's references (a leak at worst). */
    free(img->l1_table);
    img->l1_table = new_l1;
    new_l1 = NULL;
    img->l1_size = new_size;
    img->hdr.l1_size = new_size;
    img->hdr.l1_table_offset = (uint64_t)l1_offset;
    img->hdr.size = sn->disk_size;
    img->size = sn->disk_size;
    img->metadata_gen++;
    if (switched < 0) {
        img->header_dirty = true;
        ret = switched;
        goto out;
    }
    /* 3. The old active state's references dropped, COPIED recomputed. */
    if ((ret = apply_refs(img, &drop, -1)) < 0)
        goto out;
    ret = fix_copied(img);
    ret = window_close(img, window, ret);
out:
    free(add.r);
    free(drop.r);
    free(sn_l1);
    free(new_l1);
    return ret;
}

static int delete_locked(struct qcow2_image *img, uint32_t index)
{
    struct snapshot victim = img->snapshots.sn[index];
    uint32_t nb = img->snapshots.nb - 1;
    struct snapshot *sns = malloc(MAX(nb, 1u) * sizeof(*sns));
    if (!sns)
        return set_error(img, -ENOMEM, "out of memory");
    memcpy(sns, img->snapshots.sn, index * sizeof(*sns));
    memcpy(sns + index, img->snapshots.sn + index + 1, (nb - index) * sizeof(*sns));
    uint64_t *l1;
    int ret = read_l1(img, victim.l1_table_offset, victim.l1_size, &l1);
    if (ret < 0) {
        free(sns);
        return ret;
    }
    struct ref_list drop = {0};
    bool window;
    uint64_t l1_bytes = ROUND_UP((uint64_t)victim.l1_size * L1E_SIZE, img->cluster_size);
    if ((ret = collect_l1(img, l1, victim.l1_size, &drop)) < 0 ||
        (l1_bytes && (ret = refs_add(img, &drop, victim.l1_table_offset, l1_bytes, false)) < 0) ||
        (ret = window_open(img, &window)) < 0) {
        free(sns);
        goto out;
    }
    /* 1. The table without the entry. */
    if ((ret = snapshot_table_write(img, sns, nb, img->snapshots.size)) < 0) {
        free(sns);
        goto out;
    }
    free(img->snapshots.sn);
    img->snapshots.sn = sns;
    img->snapshots.nb = nb;
    img->snapshots.size = snapshot_table_size(sns, nb);
    snapshot_entry_free(&victim);
    /* 2. Its references dropped (what nobody else references is freed), COPIED recomputed. */
    if ((ret = apply_refs(img, &drop, -1)) < 0)
        goto out;
    ret = fix_copied(img);
    ret = window_close(img, window, ret);
out:
    free(drop.r);
    free(l1);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* The read-only view of a snapshot (qcow2_open_opts.snapshot_id / snapshot_name). */

int snapshot_open_view(struct qcow2_image *img, const char *id, const char *name, char *err,
                       size_t errlen)
{
    if (!img->read_only)
        return format_error(err, errlen, -EINVAL,
                            "%s: a snapshot can only be opened read-only", img->filename);
    if (img->format != QCOW2_FORMAT_QCOW2)
        return format_error(err, errlen, -ENOTSUP, "%s: raw images have no snapshots",
                            img->filename);
    int ret = load_table(img);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s", img->err);
    int i = find(&img->snapshots, id, name);
    if (i < 0)
        return format_error(err, errlen, -ENOENT, "Can't find snapshot");
    const struct snapshot *sn = &img->snapshots.sn[i];
    uint64_t *l1;
    ret = read_l1(img, sn->l1_table_offset, sn->l1_size, &l1);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s", img->err);
    free(img->l1_table);
    img->l1_table = l1;
    img->l1_size = sn->l1_size;
    img->size = sn->disk_size;
    img->snapshot_view = true;
    img->metadata_gen++;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The public entry points. */

int qcow2_snapshot_count(struct qcow2_image *img)
{
    pthread_mutex_lock(&img->lock);
    int ret = img->format == QCOW2_FORMAT_QCOW2 && !has_data_file(img) ? load_table(img) : 0;
    if (ret == 0)
        ret = img->format == QCOW2_FORMAT_QCOW2 && !has_data_file(img)
                  ? (int)img->snapshots.nb
                  : 0;
    pthread_mutex_unlock(&img->lock);
    return ret;
}

int qcow2_snapshot_get(struct qcow2_image *img, unsigned index, struct qcow2_snapshot_info *out)
{
    int ret = abi_check_out(img, &abi_snapshot_info, out);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&img->lock);
    ret = op_begin(img, false);
    if (ret == 0 && index >= img->snapshots.nb)
        ret = set_error(img, -ENOENT, "no snapshot number %u (the image has %u)", index,
                        img->snapshots.nb);
    if (ret == 0) {
        const struct snapshot *sn = &img->snapshots.sn[index];
        struct qcow2_snapshot_info s = {
            .struct_size = sizeof(s),
            .id = sn->id,
            .name = sn->name,
            .vm_state_size = sn->vm_state_size,
            .date_sec = sn->date_sec,
            .date_nsec = sn->date_nsec,
            .vm_clock_nsec = sn->vm_clock_nsec,
            .icount = sn->icount,
            .disk_size = sn->disk_size,
        };
        abi_copy_out(&abi_snapshot_info, out, &s);
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}

int qcow2_snapshot_find(struct qcow2_image *img, const char *id, const char *name)
{
    if (!id && !name)
        return set_error(img, -EINVAL, "no snapshot ID or name given");
    pthread_mutex_lock(&img->lock);
    int ret = op_begin(img, false);
    if (ret == 0) {
        ret = find(&img->snapshots, id, name);
        if (ret < 0)
            ret = set_error(img, -ENOENT, "snapshot not found");
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}

int qcow2_snapshot_create(struct qcow2_image *img, const struct qcow2_snapshot_opts *opts)
{
    struct qcow2_snapshot_opts o;
    char err[QCOW2_ERROR_MAX];
    int ret = abi_copy_in(&abi_snapshot_opts, &o, opts, err, sizeof(err));
    if (ret < 0)
        return set_error(img, ret, "%s", err);
    if (!o.name)
        return set_error(img, -EINVAL, "no snapshot name given");
    /* Pending writes first: the snapshot holds what was written before the call. */
    if ((ret = qcow2_flush(img)) < 0)
        return ret;
    pthread_mutex_lock(&img->lock);
    ret = op_begin(img, true);
    if (ret == 0)
        ret = create_locked(img, &o);
    pthread_mutex_unlock(&img->lock);
    return ret;
}

static int index_op(struct qcow2_image *img, unsigned index,
                    int (*op)(struct qcow2_image *, uint32_t))
{
    int ret = qcow2_flush(img);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&img->lock);
    ret = op_begin(img, true);
    if (ret == 0 && index >= img->snapshots.nb)
        ret = set_error(img, -ENOENT, "no snapshot number %u (the image has %u)", index,
                        img->snapshots.nb);
    if (ret == 0)
        ret = op(img, index);
    pthread_mutex_unlock(&img->lock);
    return ret;
}

int qcow2_snapshot_apply(struct qcow2_image *img, unsigned index)
{
    return index_op(img, index, apply_locked);
}

int qcow2_snapshot_delete(struct qcow2_image *img, unsigned index)
{
    return index_op(img, index, delete_locked);
}

/* ------------------------------------------------------------------------------------------ */
/* For the layers above (compact.c, amend.c; callers hold img->lock). */

int snapshot_table_get(struct qcow2_image *img, const struct snapshot_table **t)
{
    *t = NULL;
    int ret = load_table(img);
    if (ret == 0)
        *t = &img->snapshots;
    return ret;
}

int snapshot_read_l1(struct qcow2_image *img, const struct snapshot *sn, uint64_t **l1)
{
    return read_l1(img, sn->l1_table_offset, sn->l1_size, l1);
}

static int add_l2_offsets(struct qcow2_image *img, const uint64_t *l1, uint32_t n,
                          uint64_t **v, size_t *len, size_t *cap)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
        if (!l2)
            continue;
        if (*len == *cap) {
            size_t ncap = *cap ? *cap * 2 : 64;
            uint64_t *nv = realloc(*v, ncap * sizeof(*nv));
            if (!nv)
                return set_error(img, -ENOMEM, "out of memory");
            *v = nv;
            *cap = ncap;
        }
        (*v)[(*len)++] = l2;
    }
    return 0;
}

int snapshot_l2_tables(struct qcow2_image *img, uint64_t **tables, size_t *count)
{
    uint64_t *v = NULL;
    size_t len = 0, cap = 0;
    int ret = add_l2_offsets(img, img->l1_table, img->l1_size, &v, &len, &cap);
    if (ret == 0 && img->hdr.nb_snapshots)
        ret = load_table(img);
    for (uint32_t i = 0; ret == 0 && img->hdr.nb_snapshots && i < img->snapshots.nb; i++) {
        const struct snapshot *sn = &img->snapshots.sn[i];
        uint64_t *l1 = NULL;
        ret = read_l1(img, sn->l1_table_offset, sn->l1_size, &l1);
        if (ret == 0)
            ret = add_l2_offsets(img, l1, sn->l1_size, &v, &len, &cap);
        free(l1);
    }
    if (ret < 0) {
        free(v);
        return ret;
    }
    qsort(v, len, sizeof(*v), cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < len; i++)
        if (u == 0 || v[u - 1] != v[i])
            v[u++] = v[i];
    *tables = v;
    *count = u;
    return 0;
}

/* New L1 copies first (each flushed by write_l1_copy), then the table naming them, written
 * and switched by snapshot_table_write, then the old copies freed: a crash before the switch
 * leaks the new copies, after it the old ones. */
int snapshot_relocate(struct qcow2_image *img)
{
    int ret = load_table(img);
    struct snapshot_table *t = &img->snapshots;
    if (ret < 0 || t->nb == 0)
        return ret;
    uint64_t *moved = calloc(t->nb, sizeof(*moved));
    if (!moved)
        return set_error(img, -ENOMEM, "out of memory");
    for (uint32_t i = 0; i < t->nb && ret == 0; i++) {
        const struct snapshot *sn = &t->sn[i];
        uint64_t *l1;
        ret = read_l1(img, sn->l1_table_offset, sn->l1_size, &l1);
        if (ret < 0)
            break;
        int64_t off = write_l1_copy(img, l1, sn->l1_size, (uint64_t)sn->l1_size * L1E_SIZE);
        free(l1);
        if (off < 0)
            ret = (int)off;
        else
            moved[i] = (uint64_t)off;
    }
    if (ret < 0) {
        /* Nothing names the new copies yet. */
        for (uint32_t i = 0; i < t->nb; i++)
            if (moved[i])
                (void)refcount_free_clusters(img, moved[i],
                                             (uint64_t)t->sn[i].l1_size * L1E_SIZE);
        free(moved);
        return ret;
    }
    for (uint32_t i = 0; i < t->nb; i++) {
        uint64_t old = t->sn[i].l1_table_offset;
        t->sn[i].l1_table_offset = moved[i];
        moved[i] = old; /* from here on: the copy to free once the switch is done */
    }
    ret = snapshot_table_write(img, t->sn, t->nb, t->size);
    if (ret < 0) {
        /* The switch may have landed: both copies stay (a leak at worst); memory forgets. */
        snapshot_close(img);
        free(moved);
        return ret;
    }
    t->size = snapshot_table_size(t->sn, t->nb);
    for (uint32_t i = 0; i < t->nb; i++)
        if (moved[i] && t->sn[i].l1_size)
            (void)refcount_free_clusters(img, moved[i], (uint64_t)t->sn[i].l1_size * L1E_SIZE);
    free(moved);
    return cache_flush(img->refcount_cache);
}

int snapshot_table_rewrite(struct qcow2_image *img)
{
    int ret = load_table(img);
    struct snapshot_table *t = &img->snapshots;
    if (ret < 0 || t->nb == 0)
        return ret;
    ret = snapshot_table_write(img, t->sn, t->nb, t->size);
    /* Read again on next use: the entries on disk now carry the extra data. */
    snapshot_close(img);
    return ret;
}
