/* amend.c - changing the options of an existing image, as qemu-img amend: compat 0.10 <-> 1.1
 * (the downgrade materialises zero clusters, in every snapshot's L2 tables too; the upgrade
 * writes the snapshot table again when an entry lacks v3's extra data), lazy_refcounts,
 * refcount_bits (check.c rebuilds the refcount structure at the new width), the data file
 * name and data_file_raw, and size. Each step is crash-safe on its own: new data is flushed
 * before the metadata that points to it, and the header changes last. Calls the layers below
 * (check.c, snapshot.c, io.c, cluster.c, refcount.c, cache.c, header_write.c, file.c);
 * nothing calls it. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QCOW2_AMEND_ALL                                                                       \
    (QCOW2_AMEND_COMPAT | QCOW2_AMEND_LAZY_REFCOUNTS | QCOW2_AMEND_REFCOUNT_BITS |             \
     QCOW2_AMEND_SIZE | QCOW2_AMEND_BACKING_FILE | QCOW2_AMEND_BACKING_FMT |                  \
     QCOW2_AMEND_DATA_FILE | QCOW2_AMEND_DATA_FILE_RAW)

/* Feature table threshold, as create.c: qemu-img omits the table with clusters below 8 KiB. */
#define FEATURE_TABLE_MIN_CLUSTER 8192u

static void progress_report(qcow2_progress_fn progress, void *opaque, uint64_t done,
                            uint64_t total)
{
    if (progress)
        progress(opaque, done, total);
}

static bool str_equal(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Everything in memory on disk, and a lazy-refcounts image marked clean (qcow2_mark_clean). */
static int amend_mark_clean(struct qcow2_image *img)
{
    int ret = cluster_flush_metadata(img);
    if (ret == 0)
        ret = file_flush(img->data_file);
    if (ret == 0)
        ret = header_set_incompat_bits(img, 0, QCOW2_INCOMPAT_DIRTY);
    if (ret == 0)
        img->dirty = false;
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Walking every L2 table once (the active L1's and every snapshot's), slice by slice. */

/* Called with a copy of one slice, at `slice_offset`, of an L2 table. */
typedef int (*slice_fn)(struct qcow2_image *img, uint64_t slice_offset, const uint8_t *slice,
                        void *opaque);

static int walk_l2_slices(struct qcow2_image *img, slice_fn fn, void *opaque,
                          qcow2_progress_fn progress, void *popaque)
{
    size_t slice_bytes = cache_table_size(img->l2_cache);
    uint64_t *tables = NULL;
    size_t n = 0;
    uint8_t *copy = malloc(slice_bytes);
    int ret = copy ? snapshot_l2_tables(img, &tables, &n)
                   : set_error(img, -ENOMEM, "out of memory");
    for (size_t i = 0; i < n && ret == 0; i++) {
        for (uint64_t s = 0; s < img->cluster_size && ret == 0; s += slice_bytes) {
            const void *slice;
            ret = cache_peek(img->l2_cache, tables[i] + s, &slice);
            if (ret == 0) {
                memcpy(copy, slice, slice_bytes);
                ret = fn(img, tables[i] + s, copy, opaque);
            }
        }
        progress_report(progress, popaque, i + 1, n);
    }
    free(tables);
    free(copy);
    return ret;
}

static int find_compressed(struct qcow2_image *img, uint64_t slice_offset, const uint8_t *slice,
                           void *opaque)
{
    (void)slice_offset;
    for (uint64_t j = 0; j < img->l2_slice_size; j++) {
        if (l2_get_entry(img, slice, j) & QCOW2_OFLAG_COMPRESSED) {
            *(bool *)opaque = true;
            return 1; /* stop */
        }
    }
    return 0;
}

/* Write zeros over host cluster `host` (fallocate when the file system can). */
static int zero_host_cluster(struct qcow2_image *img, uint64_t host, const uint8_t *zeros)
{
    int ret = file_zero(img->file, host, img->cluster_size);
    if (ret == -ENOTSUP || ret == -EOPNOTSUPP)
        ret = file_pwrite(img->file, zeros, img->cluster_size, host);
    return ret;
}

/* qcow2_expand_zero_clusters for one slice: v2 has no zero flag, so a zero cluster becomes
 * unallocated (no backing file: it reads zeros anyway) or a cluster that holds zeros. The
 * zeros are written and flushed (and a new cluster's refcount too) before the L2 entries
 * change: a crash leaves the zero flag (still valid in v3) or a leaked cluster. */
static int expand_zero_slice(struct qcow2_image *img, uint64_t slice_offset,
                             const uint8_t *slice, void *opaque)
{
    const uint8_t *zeros = opaque;
    uint64_t n = img->l2_slice_size;
    uint64_t *entries = calloc(n, sizeof(*entries));
    if (!entries)
        return set_error(img, -ENOMEM, "out of memory");
    bool changed = false;
    int ret = 0;
    for (uint64_t j = 0; j < n && ret == 0; j++) {
        uint64_t e = l2_get_entry(img, slice, j);
        entries[j] = e;
        if ((e & QCOW2_OFLAG_COMPRESSED) || !(e & QCOW2_OFLAG_ZERO))
            continue;
        uint64_t host = e & L2E_OFFSET_MASK;
        changed = true;
        if (!host && !has_backing_file(img)) {
            entries[j] = 0;
            continue;
        }
        if (!host) {
            /* One reference per L1 table that reaches the L2 table (QEMU does the same). */
            uint64_t l2_refcount = 1;
            ret = refcount_get(img, slice_offset >> img->cluster_bits, &l2_refcount);
            int64_t h = ret < 0 ? ret : refcount_alloc_clusters(img, img->cluster_size);
            if (h < 0) {
                ret = (int)h;
                break;
            }
            host = (uint64_t)h;
            if (l2_refcount > 1 && l2_refcount <= INT32_MAX)
                ret = refcount_update(img, host, img->cluster_size, (int)l2_refcount - 1);
            if (ret < 0)
                break;
        }
        ret = zero_host_cluster(img, host, zeros);
        if (ret < 0) {
            set_error(img, ret, "writing zeros at 0x%llx failed: %s", (unsigned long long)host,
                      strerror(-ret));
            break;
        }
        /* COPIED from the cluster's own refcount: QEMU 7.2 takes the L2 table's, and sets
         * it on a preallocated zero cluster still shared with a snapshot (qemu-img check
         * then reports "OFLAG_COPIED data cluster" errors). */
        uint64_t refcount = 0;
        ret = refcount_get(img, host >> img->cluster_bits, &refcount);
        entries[j] = host | (refcount == 1 ? QCOW2_OFLAG_COPIED : 0);
    }
    if (ret == 0 && changed) {
        ret = cache_flush(img->refcount_cache); /* new clusters' refcounts, and the zeros */
        if (ret == 0)
            ret = file_flush(img->file);
        void *live = NULL;
        if (ret == 0)
            ret = cache_get(img->l2_cache, slice_offset, &live);
        if (ret == 0) {
            for (uint64_t j = 0; j < n; j++)
                l2_set_entry(img, live, j, entries[j]);
            cache_mark_dirty(img->l2_cache, live);
            cache_put(img->l2_cache, &live);
            ret = cache_flush(img->l2_cache);
        }
    }
    free(entries);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* compat */

static int amend_upgrade(struct qcow2_image *img)
{
    /* v3 snapshot entries need the extra data (VM state size, disk size) that v2 ones may
     * lack: QEMU writes the table again then, before the header (qcow2_upgrade). */
    const struct snapshot_table *t = NULL;
    int ret = img->hdr.nb_snapshots ? snapshot_table_get(img, &t) : 0;
    bool rewrite = false;
    for (uint32_t i = 0; ret == 0 && t && i < t->nb; i++)
        rewrite |= t->sn[i].extra_data_size < SNAPSHOT_MIN_V3_EXTRA_DATA;
    if (ret == 0 && rewrite)
        ret = snapshot_table_rewrite(img);
    if (ret < 0)
        return ret;
    img->hdr.version = 3;
    if (img->cluster_size >= FEATURE_TABLE_MIN_CLUSTER && !img->hdr.nb_features) {
        ret = header_set_default_feature_table(&img->hdr);
        if (ret < 0)
            return set_error(img, ret, "out of memory");
    }
    return header_rewrite_synced(img);
}

static int amend_downgrade(struct qcow2_image *img, qcow2_progress_fn progress, void *opaque)
{
    if (img->refcount_order != 4)
        return set_error(img, -ENOTSUP, "compat=0.10 requires refcount_bits=16");
    if (has_data_file(img))
        return set_error(img, -ENOTSUP, "Cannot downgrade an image with a data file");
    int ret = amend_mark_clean(img);
    if (ret < 0)
        return ret;
    uint64_t incompat = img->hdr.incompatible_features & ~(uint64_t)QCOW2_INCOMPAT_COMPRESSION;
    if (incompat)
        return set_error(img, -ENOTSUP,
                         "Cannot downgrade an image with incompatible features 0x%llx set",
                         (unsigned long long)incompat);
    /* Checked before anything changes (QEMU checks after expanding the zero clusters). */
    if (img->hdr.compression_type != QCOW2_COMPRESSION_TYPE_ZLIB) {
        bool found = false;
        ret = walk_l2_slices(img, find_compressed, &found, NULL, NULL);
        if (ret < 0)
            return ret;
        if (found)
            return set_error(img, -ENOTSUP,
                             "Cannot downgrade an image with zstd compression type and "
                             "existing compressed clusters");
    }
    /* Version 2 has no bitmaps: qemu-img 7.2 drops them too (silently, exit 0), but leaks
     * their clusters and keeps the extension in the v2 header, which its next open calls
     * inconsistent; we remove them properly first, so the result checks clean. Only once
     * nothing else can refuse the downgrade. */
    ret = bitmap_drop_all(img);
    if (ret < 0)
        return ret;
    uint8_t *zeros = calloc(1, img->cluster_size);
    if (!zeros)
        return set_error(img, -ENOMEM, "out of memory");
    ret = walk_l2_slices(img, expand_zero_slice, zeros, progress, opaque);
    free(zeros);
    if (ret < 0)
        return ret;

    struct qcow2_header *h = &img->hdr;
    h->version = 2;
    h->compatible_features = 0;
    h->autoclear_features = 0;
    h->incompatible_features = 0;
    h->compression_type = QCOW2_COMPRESSION_TYPE_ZLIB;
    img->lazy_refcounts = false;
    return header_rewrite_synced(img);
}

/* ------------------------------------------------------------------------------------------ */

/* What QEMU refuses before changing anything (the option loop of qcow2_amend_options). */
static int amend_validate(struct qcow2_image *img, const struct qcow2_create_opts *o,
                          unsigned which)
{
    if ((which & QCOW2_AMEND_COMPAT) && o->version != 2 && o->version != 3)
        return set_error(img, -EINVAL, "Unknown compatibility level %d", o->version);
    if ((which & QCOW2_AMEND_REFCOUNT_BITS) &&
        (o->refcount_bits == 0 || o->refcount_bits > 64 || !IS_POWER_OF_2(o->refcount_bits)))
        return set_error(img, -EINVAL,
                         "Refcount width must be a power of two and may not exceed 64 bits");
    if ((which & QCOW2_AMEND_DATA_FILE) && o->data_file && !has_data_file(img))
        return set_error(img, -EINVAL,
                         "data-file can only be set for images that use an external data "
                         "file");
    if ((which & QCOW2_AMEND_DATA_FILE_RAW) && o->data_file_raw && !data_file_is_raw(img))
        return set_error(img, -EINVAL, "data-file-raw cannot be set on existing images");
    return 0;
}

static int amend_data_file(struct qcow2_image *img, const struct qcow2_create_opts *o,
                           unsigned which)
{
    struct qcow2_header *h = &img->hdr;
    if ((which & QCOW2_AMEND_DATA_FILE_RAW) && !o->data_file_raw)
        h->autoclear_features &= ~(uint64_t)QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    if ((which & QCOW2_AMEND_DATA_FILE) && o->data_file) {
        char *name = o->data_file[0] ? strdup(o->data_file) : NULL;
        if (o->data_file[0] && !name)
            return set_error(img, -ENOMEM, "out of memory");
        free(h->data_file);
        h->data_file = name;
    }
    return header_rewrite_synced(img);
}

static int amend_lazy_refcounts(struct qcow2_image *img, bool on, int new_version)
{
    if (on == ((img->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0))
        return 0;
    if (on && new_version < 3)
        return set_error(img, -EINVAL,
                         "Lazy refcounts only supported with compatibility level 1.1 and "
                         "above (use compat=1.1 or greater)");
    if (on) {
        img->hdr.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    } else {
        int ret = amend_mark_clean(img);
        if (ret < 0)
            return ret;
        img->hdr.compatible_features &= ~(uint64_t)QCOW2_COMPAT_LAZY_REFCOUNTS;
    }
    img->lazy_refcounts = on;
    return header_rewrite_synced(img);
}

/* The steps in QEMU's order: upgrade, refcount width, data file, backing check,
 * lazy_refcounts, size, downgrade last. */
static int amend_image(struct qcow2_image *img, const struct qcow2_create_opts *o,
                       unsigned which, qcow2_progress_fn progress, void *opaque)
{
    int old_version = (int)img->hdr.version;
    int new_version = (which & QCOW2_AMEND_COMPAT) ? o->version : old_version;
    int ret;

    pthread_mutex_lock(&img->lock);
    ret = amend_validate(img, o, which);
    if (ret == 0 && new_version > old_version)
        ret = amend_upgrade(img);
    pthread_mutex_unlock(&img->lock);
    if (ret < 0)
        return ret;

    if ((which & QCOW2_AMEND_REFCOUNT_BITS) && o->refcount_bits != img->refcount_bits) {
        if (new_version < 3 && o->refcount_bits != 16)
            return set_error(img, -EINVAL,
                             "Refcount widths other than 16 bits require compatibility level "
                             "1.1 or above (use compat=1.1 or greater)");
        unsigned order = 0;
        while ((1u << order) < o->refcount_bits)
            order++;
        ret = check_change_refcount_order(img, order);
        if (ret < 0)
            return ret;
    }

    pthread_mutex_lock(&img->lock);
    if (which & (QCOW2_AMEND_DATA_FILE | QCOW2_AMEND_DATA_FILE_RAW))
        ret = amend_data_file(img, o, which);
    /* The backing file is changed by rebase, never here: only its current values pass. */
    if (ret == 0 && (which & (QCOW2_AMEND_BACKING_FILE | QCOW2_AMEND_BACKING_FMT))) {
        const char *file = (which & QCOW2_AMEND_BACKING_FILE) ? o->backing_file : NULL;
        const char *fmt = (which & QCOW2_AMEND_BACKING_FMT) ? o->backing_fmt : NULL;
        if (!str_equal(file, img->hdr.backing_file) || !str_equal(fmt, img->hdr.backing_fmt))
            ret = set_error(img, -EINVAL, "Cannot amend the backing file");
    }
    if (ret == 0 && (which & QCOW2_AMEND_LAZY_REFCOUNTS))
        ret = amend_lazy_refcounts(img, o->lazy_refcounts != 0, new_version);
    pthread_mutex_unlock(&img->lock);
    if (ret < 0)
        return ret;

    if ((which & QCOW2_AMEND_SIZE) && o->size && o->size != img->size) {
        ret = qcow2_truncate(img, o->size, QCOW2_PREALLOC_OFF, QCOW2_TRUNCATE_SHRINK);
        if (ret < 0)
            return ret;
    }

    if (new_version < old_version) {
        pthread_mutex_lock(&img->lock);
        ret = amend_downgrade(img, progress, opaque);
        pthread_mutex_unlock(&img->lock);
    }
    return ret;
}

int qcow2_amend(struct qcow2_image *img, const struct qcow2_create_opts *opts, unsigned which,
                qcow2_progress_fn progress, void *opaque)
{
    if (img->format != QCOW2_FORMAT_QCOW2)
        return set_error(img, -ENOTSUP, "only qcow2 images can be amended");
    if (img->read_only)
        return set_error(img, -EROFS, "cannot amend an image opened read-only");
    if (which & ~(unsigned)QCOW2_AMEND_ALL)
        return set_error(img, -EINVAL, "unknown amend flags 0x%x", which & ~QCOW2_AMEND_ALL);
    struct qcow2_create_opts o;
    char err[QCOW2_ERROR_MAX];
    int ret = abi_copy_in(&abi_create_opts, &o, opts, err, sizeof(err));
    if (ret < 0)
        return set_error(img, ret, "%s", err);
    progress_report(progress, opaque, 0, 1);
    ret = amend_image(img, &o, which, progress, opaque);
    if (ret == 0)
        ret = qcow2_flush(img);
    if (ret == 0)
        progress_report(progress, opaque, 1, 1);
    return ret;
}
