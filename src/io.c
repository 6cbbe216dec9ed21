/* io.c - the data path: guest requests split into mapped parts, read, write, zero, discard,
 * compressed writes, block status and flush.
 * Holds img->lock only around metadata work (cluster.c, refcount.c, cache.c) and never
 * across guest data I/O, which goes straight to file.c with positional calls. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An image opened for check may have tables over the header or past the end of the file
 * (image.c): only the check may look at them. */
static int check_layout_intact(struct qcow2_image *img)
{
    if (img->layout_damaged)
        return set_error(img, -EIO, "image was opened for check with tables an ordinary open "
                                    "refuses; no guest I/O through this handle");
    if (img->opts.inspect_only)
        return set_error(img, -EPERM, "image was opened for inspection only; no guest I/O "
                                      "through this handle");
    return 0;
}

static int check_request_slow(struct qcow2_image *img, uint64_t offset, uint64_t count);

/* Every request asks: the usual answer inlined (an intact image, a range inside it). */
static inline int check_request(struct qcow2_image *img, uint64_t offset, uint64_t count)
{
    if (!img->layout_damaged && !img->opts.inspect_only && offset <= img->size &&
        count <= img->size - offset)
        return 0;
    return check_request_slow(img, offset, count);
}

static int check_request_slow(struct qcow2_image *img, uint64_t offset, uint64_t count)
{
    int ret = check_layout_intact(img);
    if (ret < 0)
        return ret;
    if (offset > img->size || count > img->size - offset)
        return set_error(img, -EINVAL,
                         "request at offset %llu length %llu is past the end of the image "
                         "(%llu bytes)",
                         (unsigned long long)offset, (unsigned long long)count,
                         (unsigned long long)img->size);
    return 0;
}

/* Unallocated ranges read from the backing file, or zeros past its end or without one. */
static int read_backing(struct qcow2_image *img, uint8_t *buf, uint64_t count, uint64_t offset)
{
    uint64_t n = 0;
    if (img->backing && offset < img->backing->size) {
        n = MIN(count, img->backing->size - offset);
        int ret = io_read(img->backing, buf, n, offset);
        if (ret < 0)
            return set_error(img, ret, "%s", qcow2_error(img->backing));
    }
    memset(buf + n, 0, count - n);
    return 0;
}

static int read_compressed(struct qcow2_image *img, uint8_t *buf, uint64_t count,
                           uint64_t offset, uint64_t l2_entry)
{
    uint64_t coffset, csize;
    cluster_compressed_range(img, l2_entry, &coffset, &csize);
    int64_t fsize = file_size_cached(img->file);
    if (fsize >= 0 && coffset >= (uint64_t)fsize)
        return set_error(img, -EIO, "compressed cluster at 0x%llx lies past the end of the "
                                    "file (guest offset 0x%llx)",
                         (unsigned long long)coffset, (unsigned long long)offset);
    uint8_t *cbuf = malloc(csize);
    uint8_t *cluster = malloc(img->cluster_size);
    int ret = -ENOMEM;
    if (!cbuf || !cluster) {
        set_error(img, ret, "out of memory");
        goto out;
    }
    ret = file_pread(img->file, cbuf, csize, coffset);
    if (ret < 0) {
        set_error(img, ret, "reading compressed cluster at 0x%llx failed: %s",
                  (unsigned long long)coffset, strerror(-ret));
        goto out;
    }
    ret = compress_decompress(img->compress_cache, img->hdr.compression_type, cbuf, csize,
                              cluster, img->cluster_size);
    if (ret < 0) {
        set_error(img, -EIO, "compressed cluster at 0x%llx does not decompress (guest offset "
                             "0x%llx)",
                  (unsigned long long)coffset, (unsigned long long)offset);
        ret = -EIO;
        goto out;
    }
    memcpy(buf, cluster + offset_into_cluster(img, offset), count);
out:
    free(cbuf);
    free(cluster);
    return ret;
}

static int read_part(struct qcow2_image *img, uint8_t *buf, uint64_t n, uint64_t offset,
                     enum subcluster_type type, uint64_t host)
{
    int ret;
    switch (type) {
    case SC_UNALLOCATED_PLAIN:
    case SC_UNALLOCATED_ALLOC:
        return read_backing(img, buf, n, offset);
    case SC_ZERO_PLAIN:
    case SC_ZERO_ALLOC:
        memset(buf, 0, n);
        return 0;
    case SC_NORMAL:
        ret = file_pread(img->data_file, buf, n, host);
        if (ret < 0)
            return set_error(img, ret, "read at host offset 0x%llx failed: %s",
                             (unsigned long long)host, strerror(-ret));
        return 0;
    case SC_COMPRESSED:
        return read_compressed(img, buf, n, offset, host);
    case SC_INVALID:
        break;
    }
    return set_error(img, -EIO, "invalid cluster type");
}

int io_read(struct qcow2_image *img, void *buf, size_t count, uint64_t offset)
{
    if (img->format == QCOW2_FORMAT_RAW) {
        int ret = file_pread(img->file, buf, count, offset);
        return ret < 0 ? set_error(img, ret, "read failed: %s", strerror(-ret)) : 0;
    }
    uint8_t *p = buf;
    while (count > 0) {
        uint64_t n = count, host;
        enum subcluster_type type;
        struct data_guard guard;
        pthread_mutex_lock(&img->lock);
        int ret = cluster_get_host_offset(img, offset, &n, &host, &type);
        /* Host data is read: guard it (reads never wait for each other). */
        bool guarded = ret == 0 && (type == SC_NORMAL || type == SC_COMPRESSED);
        if (guarded)
            cluster_data_guard_start(img, &guard, offset, n);
        pthread_mutex_unlock(&img->lock);
        if (ret < 0)
            return ret;
        assert(n > 0 && n <= count);
        ret = read_part(img, p, n, offset, type, host);
        if (guarded)
            cluster_data_guard_end(img, &guard);
        if (ret < 0)
            return ret;
        p += n;
        offset += n;
        count -= n;
    }
    return 0;
}

int qcow2_pread(struct qcow2_image *img, void *buf, size_t count, uint64_t offset)
{
    int ret = check_request(img, offset, count);
    return ret < 0 ? ret : io_read(img, buf, count, offset);
}

/* ---------------------------------------------------------------------------------------- */
/* Block status. */

static int block_status(struct qcow2_image *img, int depth, uint64_t offset, uint64_t count,
                        struct qcow2_extent *ext);

static int status_raw(struct qcow2_image *img, int depth, uint64_t offset, uint64_t count,
                      struct qcow2_extent *ext)
{
    bool data;
    uint64_t n = count;
    int ret = file_status(img->file, offset, &n, &data);
    if (ret < 0)
        return set_error(img, ret, "block status failed: %s", strerror(-ret));
    *ext = (struct qcow2_extent){
        .start = offset,
        .length = n,
        .flags = QCOW2_BS_PRESENT | (data ? QCOW2_BS_DATA : QCOW2_BS_ZERO),
        .depth = depth,
        .offset = (int64_t)offset,
        .filename = img->filename,
    };
    return 0;
}

/* Does the image reference clearly more clusters than the host file stores? Then it was
 * preallocated in metadata and data clusters may be holes: the same heuristic as QEMU's
 * qcow2_detect_metadata_preallocation(), so that block status answers alike. */
static int detect_metadata_prealloc(struct qcow2_image *img)
{
    int64_t stored = file_allocated_bytes(img->file);
    int64_t fsize = file_size(img->file);
    if (stored < 0 || fsize < 0)
        return 0;
    uint64_t real_clusters = (uint64_t)stored / img->cluster_size;
    uint64_t threshold = MAX(real_clusters * 10 / 9, real_clusters + 2);
    uint64_t nb = size_to_clusters(img, (uint64_t)fsize), used = 0;
    for (uint64_t i = 0; i < nb; i++) {
        uint64_t rc;
        if (refcount_get(img, i, &rc) < 0)
            return 0;
        if (rc > 0 && ++used >= threshold) /* (at the threshold, as QEMU's) */
            return 1;
    }
    return 0;
}

/* An unallocated range: the backing file answers, else it reads as zeros from this layer. */
static int status_fall_through(struct qcow2_image *img, int depth, uint64_t offset,
                               uint64_t n, int64_t host, struct qcow2_extent *ext)
{
    if (img->backing && offset < img->backing->size) {
        int ret = block_status(img->backing, depth + 1, offset,
                               MIN(n, img->backing->size - offset), ext);
        return ret < 0 ? set_error(img, ret, "%s", qcow2_error(img->backing)) : 0;
    }
    *ext = (struct qcow2_extent){.start = offset, .length = n, .flags = QCOW2_BS_ZERO,
                                 .depth = depth, .offset = host, .filename = img->filename};
    return 0;
}

static int block_status(struct qcow2_image *img, int depth, uint64_t offset, uint64_t count,
                        struct qcow2_extent *ext)
{
    if (img->format == QCOW2_FORMAT_RAW)
        return status_raw(img, depth, offset, count, ext);
    uint64_t n = count, host;
    enum subcluster_type type;
    pthread_mutex_lock(&img->lock);
    int ret = cluster_block_status(img, offset, &n, &host, &type);
    pthread_mutex_unlock(&img->lock);
    if (ret < 0)
        return ret;
    *ext = (struct qcow2_extent){.start = offset, .length = n, .depth = depth, .offset = -1,
                                 .filename = img->data_file->path};
    switch (type) {
    case SC_UNALLOCATED_PLAIN:
        return status_fall_through(img, depth, offset, n, -1, ext);
    case SC_UNALLOCATED_ALLOC:
        return status_fall_through(img, depth, offset, n, (int64_t)host, ext);
    case SC_ZERO_PLAIN:
        ext->flags = QCOW2_BS_PRESENT | QCOW2_BS_ZERO;
        return 0;
    case SC_ZERO_ALLOC:
        ext->flags = QCOW2_BS_PRESENT | QCOW2_BS_ZERO;
        ext->offset = (int64_t)host;
        return 0;
    case SC_NORMAL: {
        /* On preallocated images, ask the host file too: a hole there reads as zeros. */
        bool data = true;
        uint64_t len = ext->length;
        if (img->metadata_prealloc < 0) {
            pthread_mutex_lock(&img->lock);
            if (img->metadata_prealloc < 0)
                img->metadata_prealloc = detect_metadata_prealloc(img);
            pthread_mutex_unlock(&img->lock);
        }
        if (img->metadata_prealloc == 1 &&
            file_status(img->data_file, host, &len, &data) == 0 && len > 0)
            ext->length = len;
        ext->flags = QCOW2_BS_PRESENT | QCOW2_BS_DATA | (data ? 0 : QCOW2_BS_ZERO);
        ext->offset = (int64_t)host;
        return 0;
    }
    case SC_COMPRESSED:
        ext->flags = QCOW2_BS_PRESENT | QCOW2_BS_DATA | QCOW2_BS_COMPRESSED;
        return 0;
    case SC_INVALID:
        break;
    }
    return set_error(img, -EIO, "invalid cluster type");
}

int qcow2_block_status(struct qcow2_image *img, uint64_t offset, uint64_t count,
                       struct qcow2_extent *ext)
{
    int ret = check_request(img, offset, count);
    if (ret < 0)
        return ret;
    if (count == 0)
        return set_error(img, -EINVAL, "block status of an empty range");
    if ((ret = abi_check_out(img, &abi_extent, ext)) < 0)
        return ret;
    struct qcow2_extent e;
    ret = block_status(img, 0, offset, count, &e);
    if (ret == 0)
        abi_copy_out(&abi_extent, ext, &e);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Writes. */

static int check_writable_slow(struct qcow2_image *img);

/* Every write asks: the usual answer (a writable image opened plainly, nothing in the way) in
 * one test of the flags that could say no, inlined. */
static inline int check_writable(struct qcow2_image *img)
{
    if (!img->read_only && !img->corrupt && !img->layout_damaged && !img->opts.inspect_only &&
        !img->opts.repair && !img->bitmaps)
        return 0;
    return check_writable_slow(img);
}

static int check_writable_slow(struct qcow2_image *img)
{
    if (img->read_only)
        return set_error(img, -EROFS, "image is opened read-only");
    if (img->corrupt && !img->opts.repair)
        return set_error(img, -EIO, "image is marked corrupt; not writing to it");
    int ret = check_layout_intact(img);
    if (ret < 0)
        return ret;
    if (img->bitmaps && bitmap_writes_unrecorded(img))
        return set_error(img, -EPERM, "image is opened for repair and has dirty bitmaps that "
                                      "guest writes would make stale; not writing to it");
    /* A repair open keeps the autoclear bits (image.c): guest data must not change. */
    if (img->opts.repair && img->format == QCOW2_FORMAT_QCOW2 &&
        (img->hdr.autoclear_features &
         ~header_feature_mask(QCOW2_FEAT_TYPE_AUTOCLEAR, true)))
        return set_error(img, -EPERM, "image is opened for repair and has autoclear features "
                                      "that guest writes would invalidate; not writing to it");
    return 0;
}

static int read_cow_data(struct qcow2_image *img, const struct l2_meta *m,
                         const struct cow_region *r, uint8_t **buf, bool *is_zero);

/* Read one COW region through our own read path (old cluster, compressed data, backing file
 * or zeros). *is_zero tells whether there is anything to copy. An empty region (most writes
 * with extended L2) costs two stores here, inlined, not a call. */
static inline int read_cow_region(struct qcow2_image *img, const struct l2_meta *m,
                                  const struct cow_region *r, uint8_t **buf, bool *is_zero)
{
    *buf = NULL;
    *is_zero = true;
    return r->nb_bytes == 0 ? 0 : read_cow_data(img, m, r, buf, is_zero);
}

static int read_cow_data(struct qcow2_image *img, const struct l2_meta *m,
                         const struct cow_region *r, uint8_t **buf, bool *is_zero)
{
    *buf = malloc(r->nb_bytes);
    if (!*buf)
        return set_error(img, -ENOMEM, "out of memory for copy-on-write");
    int ret = io_read(img, *buf, r->nb_bytes, m->offset + r->offset);
    if (ret < 0)
        return ret;
    *is_zero = buffer_is_zero(*buf, r->nb_bytes);
    return 0;
}

/* When every COW region of `m` reads as zeros and its clusters are new, zero its whole
 * COW-to-COW span in the host file at once (fallocate) instead of writing zeros, as QEMU does
 * (handle_alloc_space). Where
 * the new clusters lie past everything ever written to the file they read as zeros already:
 * on a disk file system the span is only allocated, as QEMU stores it (contiguous with the
 * data, its space reserved); on tmpfs it is left a hole, since allocating there costs a
 * page of RAM per 4K and buys no contiguity (one 4K write into a new 64K cluster would cost
 * 4.4x the same write into a sparse raw file; issue 16). Such an image reads the same; when
 * it references clearly more clusters than it stores, QEMU's map takes it for
 * metadata-preallocated and reports the holes as zero ranges, and so does ours
 * (detect_metadata_prealloc). Returns 1 when done (only the guest data is left to write), 0
 * when the regions must be written. */
static int zero_cow_span(struct qcow2_image *img, const struct l2_meta *m, bool head_zero,
                         bool tail_zero)
{
    /* (Called only with COW regions: write_meta_data() writes the data alone otherwise.) */
    assert(m->cow_start.nb_bytes || m->cow_end.nb_bytes);
    /* Zeroing the span zeroes the guest data's place too, before the data is written. That
     * place must hold nothing anyone reads: only new clusters qualify. In clusters we keep
     * (keep_old_clusters: subclusters allocated in a cluster that has some already) the data
     * may overwrite allocated subclusters, in this cluster or in the next one of the run; a
     * crash between the zeroing and the data write would turn their old contents into zeros,
     * neither the old data nor the new (found by test_crash, random_backing_extl2). There the
     * zero regions are written as data, in the one vectored write. */
    if (!head_zero || !tail_zero || m->keep_old_clusters)
        return 0;
    uint64_t at = m->alloc_offset + m->cow_start.offset;
    uint64_t span = m->cow_end.offset + m->cow_end.nb_bytes - m->cow_start.offset;
    /* New clusters past everything written read as zeros already: allocating is enough, or
     * nothing at all in memory (file_allocate_zeroed). */
    int ret = m->dest_zero ? file_allocate_zeroed(img->data_file, at, span)
                           : file_zero(img->data_file, at, span);
    if (ret == -ENOTSUP)
        return 0;
    if (ret < 0)
        return set_error(img, ret, "zeroing host range at 0x%llx failed: %s",
                         (unsigned long long)at, strerror(-ret));
    return 1;
}

/* Read the COW regions of `m` into *head and *tail (NULL: nothing to read there), or zero
 * them in the host file at once. Returns 1 when zeroed (only the guest data is left to
 * write), 0 when the regions must be written with it, or -errno. */
static int read_or_zero_cow(struct qcow2_image *img, const struct l2_meta *m, uint8_t **head,
                            uint8_t **tail)
{
    bool head_zero, tail_zero;
    /* Regions known to read as zeros are not read to find that out (a cluster's worth of
     * memset and compare per write without extended L2). */
    int ret = m->cow_zero ? zero_cow_span(img, m, true, true) : 0;
    if (ret != 0)
        return ret;
    ret = read_cow_region(img, m, &m->cow_start, head, &head_zero);
    if (ret == 0)
        ret = read_cow_region(img, m, &m->cow_end, tail, &tail_zero);
    if (ret == 0 && !m->cow_zero) /* (tried already) */
        ret = zero_cow_span(img, m, head_zero, tail_zero);
    return ret;
}

static int host_write_failed(struct qcow2_image *img, int ret, uint64_t at)
{
    return set_error(img, ret, "write at host offset 0x%llx failed: %s",
                     (unsigned long long)at, strerror(-ret));
}

/* Write `iov` at host offset `at` of the data file. */
static int write_host(struct qcow2_image *img, const struct iovec *iov, int cnt, uint64_t at)
{
    int ret = cnt ? file_pwritev(img->data_file, iov, cnt, at) : 0;
    return ret < 0 ? host_write_failed(img, ret, at) : ret;
}

/* write_host() for one buffer (most guest writes): no vector. */
static int write_host_buf(struct qcow2_image *img, const void *buf, uint64_t len, uint64_t at)
{
    int ret = len ? file_pwrite(img->data_file, buf, (size_t)len, at) : 0;
    return ret < 0 ? host_write_failed(img, ret, at) : ret;
}

/* write_meta_data() with COW regions. */
static int write_with_cow(struct qcow2_image *img, const struct l2_meta *m, const uint8_t *data,
                          uint64_t len)
{
    uint8_t *head = NULL, *tail = NULL;
    int ret = read_or_zero_cow(img, m, &head, &tail);
    if (ret < 0)
        goto out;
    if (ret == 1) { /* zeroed in the host file: only the guest data is left to write */
        ret = write_host_buf(img, data, len,
                             m->alloc_offset + m->cow_start.offset + m->cow_start.nb_bytes);
        goto out;
    }

    /* Otherwise the regions are written as data, zeros too, as QEMU does. */
    struct iovec iov[3];
    int cnt = 0;
    if (m->cow_start.nb_bytes)
        iov[cnt++] = (struct iovec){head, m->cow_start.nb_bytes};
    if (len)
        iov[cnt++] = (struct iovec){(void *)data, len};
    if (m->cow_end.nb_bytes)
        iov[cnt++] = (struct iovec){tail, m->cow_end.nb_bytes};
    ret = write_host(img, iov, cnt, m->alloc_offset + m->cow_start.offset);
out:
    /* (Most writes read nothing: no calls to free nothing.) */
    if (head || tail) {
        free(head);
        free(tail);
    }
    return ret;
}

/* Write the COW regions and the guest data of `m`: one vectored write where they are
 * contiguous on the host. The guest data lies exactly between the two regions. */
static int write_meta_data(struct qcow2_image *img, const struct l2_meta *m,
                           const uint8_t *data, uint64_t len)
{
    /* (m itself was checked when it was made: cluster_assert_meta().) */
    assert(m->cow_start.offset + m->cow_start.nb_bytes + len == m->cow_end.offset);
    if (m->cow_start.nb_bytes || m->cow_end.nb_bytes)
        return write_with_cow(img, m, data, len);
    /* Most writes with extended L2 fill whole subclusters: only the guest data. */
    return write_host_buf(img, data, len, m->alloc_offset + m->cow_start.offset);
}

/* Write one host-contiguous part of a request; returns its length or -errno. */
static int64_t write_part(struct qcow2_image *img, const uint8_t *buf, uint64_t count,
                          uint64_t offset)
{
    struct l2_meta m;
    uint64_t n;
    int ret;
    pthread_mutex_lock(&img->lock);
    do {
        n = count;
        ret = cluster_wait_dependencies(img, offset, &n, false);
    } while (ret == -EAGAIN);
    if (ret == 0)
        ret = cluster_prepare_write(img, offset, &n, &m, false);
    if (ret < 0) {
        pthread_mutex_unlock(&img->lock);
        return ret;
    }
    /* A plain overwrite of allocated subclusters changes no metadata: a data guard (like a
     * read's) keeps the clusters from being freed or rewritten meanwhile, and gives itself
     * back without the lock. */
    bool in_place = m.keep_old_clusters && !m.needs_link && !m.cow_start.nb_bytes &&
                    !m.cow_end.nb_bytes;
    struct data_guard guard;
    if (in_place)
        cluster_data_guard_start(img, &guard, offset, n);
    else
        cluster_meta_start(img, &m);
    pthread_mutex_unlock(&img->lock);

    ret = write_meta_data(img, &m, buf, n);
    if (in_place) {
        cluster_data_guard_end(img, &guard);
        return ret < 0 ? ret : (int64_t)n;
    }

    pthread_mutex_lock(&img->lock);
    if (ret == 0)
        ret = cluster_link_l2(img, &m);
    if (ret < 0)
        cluster_abort(img, &m);
    cluster_meta_finish(img, &m);
    pthread_mutex_unlock(&img->lock);
    return ret < 0 ? ret : (int64_t)n;
}

static int write_raw(struct qcow2_image *img, const void *buf, size_t count, uint64_t offset)
{
    int ret = file_pwrite(img->file, buf, count, offset);
    return ret < 0 ? set_error(img, ret, "write failed: %s", strerror(-ret)) : 0;
}

int qcow2_pwrite(struct qcow2_image *img, const void *buf, size_t count, uint64_t offset,
                 unsigned flags)
{
    int ret = check_writable(img);
    if (ret == 0)
        ret = check_request(img, offset, count);
    if (ret < 0)
        return ret;
    /* Marked before the write, not after: a crash or failure half-way leaves the range
     * dirty, which costs a backup a few more bytes and never misses one. */
    if (img->bitmaps)
        bitmap_mark(img, offset, count);
    if (img->format == QCOW2_FORMAT_RAW) {
        ret = write_raw(img, buf, count, offset);
    } else {
        const uint8_t *p = buf;
        while (count > 0) {
            int64_t n = write_part(img, p, count, offset);
            if (n < 0)
                return (int)n;
            p += n;
            offset += (uint64_t)n;
            count -= (size_t)n;
        }
    }
    if (ret == 0 && (flags & QCOW2_WRITE_FUA))
        ret = qcow2_flush(img);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Flush and close. */

static int write_caches(struct qcow2_image *img)
{
    int ret = cluster_write_switches(img);
    if (ret == 0)
        ret = cache_write(img->l2_cache);
    /* With lazy refcounts the refcounts stay in memory until close; the dirty bit covers
     * them. */
    if (ret == 0 && !img->dirty)
        ret = cache_write(img->refcount_cache);
    return ret;
}

int qcow2_flush(struct qcow2_image *img)
{
    if (img->read_only)
        return 0;
    int ret = 0;
    uint64_t free_gen = 0;
    if (img->format == QCOW2_FORMAT_QCOW2) {
        pthread_mutex_lock(&img->lock);
        free_gen = img->free_gen; /* frees up to here have their L2 changes written below */
        ret = write_caches(img);
        pthread_mutex_unlock(&img->lock);
    }
    if (ret < 0)
        return ret; /* some L2 change may not be written: nothing freed becomes reusable */
    if ((ret = file_flush(img->file)) < 0)
        return set_error(img, ret, "flush failed: %s", strerror(-ret));
    if (img->format == QCOW2_FORMAT_QCOW2) {
        /* The L2 changes written above are durable: the clusters they freed may be reused.
         * Only here, after both steps succeeded. */
        pthread_mutex_lock(&img->lock);
        if (free_gen > img->synced_gen)
            img->synced_gen = free_gen;
        pthread_mutex_unlock(&img->lock);
    }
    if (ret == 0 && img->data_file && img->data_file != img->file &&
        (ret = file_flush(img->data_file)) < 0)
        return set_error(img, ret, "flushing the data file failed: %s", strerror(-ret));
    return ret;
}

int io_close_writable(struct qcow2_image *img)
{
    pthread_mutex_lock(&img->lock);
    int ret = cluster_write_switches(img);
    /* Before the final flush: the data the bitmaps describe is written by then. */
    if (ret == 0)
        ret = bitmap_store(img);
    if (ret == 0)
        ret = cluster_flush_metadata(img);
    /* A close is a flush (as in QEMU): guest data written in place, which no metadata write
     * waits for, becomes durable too, though the caches had nothing left to sync. */
    if (ret == 0 && (ret = file_flush(img->data_file)) < 0)
        set_error(img, ret, "flush failed: %s", strerror(-ret));
    if (ret == 0 && img->data_file != img->file && (ret = file_flush(img->file)) < 0)
        set_error(img, ret, "flush failed: %s", strerror(-ret));
    /* Everything is on disk: a lazy-refcounts image is consistent again. */
    if (ret == 0 && img->dirty && img->lazy_refcounts) {
        ret = header_set_incompat_bits(img, 0, QCOW2_INCOMPAT_DIRTY);
        if (ret == 0)
            img->dirty = false;
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Zero writes and discard: metadata only, done under the lock after in-flight allocations
 * that touch the same clusters have finished. */

#define ZERO_FALLBACK 1 /* a part that metadata cannot express: write zeros as data */

enum zero_mode { ZERO_WRITE, ZERO_DISCARD, ZERO_FULL_DISCARD };

/* New L2 entry and bitmap for a whole cluster being zeroed or discarded. Sets *free_old when
 * the old host cluster loses its reference. */
static void zeroed_cluster_entry(const struct qcow2_image *img, enum zero_mode mode,
                                 bool may_unmap, uint64_t old, uint64_t old_bitmap,
                                 uint64_t *entry, uint64_t *bitmap, bool *free_old)
{
    bool compressed = (old & QCOW2_OFLAG_COMPRESSED) != 0;
    bool has_host = compressed || (old & L2E_OFFSET_MASK) != 0;
    *entry = old;
    *bitmap = old_bitmap;
    *free_old = false;
    /* A discard (as QEMU's) leaves a cluster alone that holds nothing and has no backing file
     * to hide: it reads zeros already. */
    if (mode == ZERO_DISCARD && !has_host && !has_backing_file(img))
        return;
    bool unmap = mode != ZERO_WRITE || compressed || (may_unmap && has_host);
    if (has_data_file(img))
        unmap = false; /* host == guest: the mapping stays, there is nothing to free */
    *entry = unmap ? 0 : old;
    *free_old = unmap && has_host;
    *bitmap = 0;
    if (mode == ZERO_FULL_DISCARD || img->hdr.version < 3)
        return;
    if (img->extended_l2)
        *bitmap = QCOW2_SC_ALL_ZERO;
    else
        *entry |= QCOW2_OFLAG_ZERO;
}

/* Zero or discard clusters [start, end) (cluster aligned, except that `end` may be the image
 * end) inside one L2 slice. Returns bytes done, or -errno; a compressed cluster that is only
 * partly zeroed returns ZERO_FALLBACK via *fallback. */
static int64_t zero_in_slice(struct qcow2_image *img, uint64_t start, uint64_t end,
                             enum zero_mode mode, bool may_unmap, bool *fallback)
{
    void *slice;
    uint64_t idx;
    /* Without a table the range reads zeros only when there is no backing file (opened in
     * this session or not). A full discard (a shrink's tail, emptying) leaves entries
     * unallocated whatever lies beneath: without a table it has nothing to do (creating
     * tables for a shrink's tail would write one per L1 entry of a sparse disk of terabytes,
     * only to free them). A shared table is copied before any change (cluster.c). */
    enum l2_need need = mode == ZERO_WRITE || (mode != ZERO_FULL_DISCARD && has_backing_file(img))
                            ? L2_CREATE
                            : L2_IF_PRESENT;
    int ret = cluster_get_l2_slice(img, start, need, &slice, &idx);
    if (ret < 0)
        return ret;
    uint64_t slice_bytes = img->l2_slice_size << img->cluster_bits;
    uint64_t stop = MIN(end, align_down_pow2(start, slice_bytes) + slice_bytes);
    if (!slice) /* nothing to do where no table is: skip every missing one in one step */
        return (int64_t)(cluster_end_of_missing_tables(img, start, end) - start);
    ret = cluster_mark_dirty_for_update(img);
    if (ret < 0) {
        cache_put(img->l2_cache, &slice);
        return ret;
    }
    uint64_t to_free[64];
    unsigned nfree = 0;
    uint64_t pos = start;
    while (pos < stop && nfree < 64) {
        uint64_t i = idx + ((pos - start_of_cluster(img, start)) >> img->cluster_bits);
        uint64_t cstart = start_of_cluster(img, pos);
        uint64_t cend = MIN(cstart + img->cluster_size, stop);
        uint64_t old = l2_get_entry(img, slice, i), old_bitmap = l2_get_bitmap(img, slice, i);
        uint64_t entry, bitmap;
        bool whole = pos == cstart && (cend == cstart + img->cluster_size || cend == img->size);
        if (whole) {
            bool free_old;
            zeroed_cluster_entry(img, mode, may_unmap, old, old_bitmap, &entry, &bitmap,
                                 &free_old);
            if (free_old)
                to_free[nfree++] = old;
        } else {
            /* Part of a cluster (extended L2: whole subclusters). */
            assert(img->extended_l2 && mode == ZERO_WRITE);
            if (old & QCOW2_OFLAG_COMPRESSED) {
                *fallback = true; /* the caller writes zeros from `pos` */
                break;
            }
            unsigned a = offset_to_sc_index(img, pos);
            unsigned b = (unsigned)(align_up_pow2(cend - cstart, img->subcluster_size) >>
                                    img->subcluster_bits);
            entry = old;
            bitmap = (old_bitmap | QCOW2_SC_ZERO_RANGE(a, b)) & ~QCOW2_SC_ALLOC_RANGE(a, b);
        }
        if (entry != old || (img->extended_l2 && bitmap != old_bitmap)) {
            l2_set_entry(img, slice, i, entry);
            if (img->extended_l2)
                l2_set_bitmap(img, slice, i, bitmap);
            cache_mark_dirty(img->l2_cache, slice);
        }
        pos = cend;
    }
    cache_put(img->l2_cache, &slice);
    /* The L2 entries no longer point there: now the references may go. */
    for (unsigned k = 0; k < nfree; k++) {
        ret = refcount_free_l2_entry(img, to_free[k]);
        if (ret < 0)
            return ret;
    }
    return (int64_t)(pos - start);
}

/* Zero or discard [start, end) in metadata. Parts that need data are reported through
 * *fallback_start/end (the first one only; the caller writes zeros there and calls again). */
static int zero_range(struct qcow2_image *img, uint64_t start, uint64_t end, enum zero_mode mode,
                      bool may_unmap, uint64_t *fallback_at)
{
    *fallback_at = UINT64_MAX;
    pthread_mutex_lock(&img->lock);
    int ret = 0;
    uint64_t pos = start;
    while (pos < end) {
        uint64_t n = end - pos;
        ret = cluster_wait_dependencies(img, pos, &n, true);
        if (ret == -EAGAIN) {
            ret = 0;
            continue;
        }
        if (ret < 0)
            break;
        if (n == 0) { /* blocked further on: wait for it from its start */
            continue;
        }
        bool fallback = false;
        int64_t done = zero_in_slice(img, pos, pos + n, mode, may_unmap, &fallback);
        if (done < 0) {
            ret = (int)done;
            break;
        }
        if (fallback) {
            *fallback_at = pos + (uint64_t)done;
            break;
        }
        pos += (uint64_t)done;
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}

static int write_zero_buffer(struct qcow2_image *img, uint64_t offset, uint64_t count)
{
    size_t chunk = (size_t)MIN(count, 1u << 20);
    uint8_t *z = calloc(1, chunk);
    if (!z)
        return set_error(img, -ENOMEM, "out of memory");
    int ret = 0;
    while (count > 0 && ret == 0) {
        size_t n = (size_t)MIN(count, chunk);
        ret = qcow2_pwrite(img, z, n, offset, 0);
        offset += n;
        count -= n;
    }
    free(z);
    return ret;
}

/* With data_file_raw the data file is itself a raw image of the disk (host offset == guest
 * offset): a range that the qcow2 metadata makes read as zeros must read as zeros there
 * too, written as data where the file cannot zero a range. */
static int zero_raw_data_file(struct qcow2_image *img, uint64_t offset, uint64_t count)
{
    int ret = file_zero(img->data_file, offset, count);
    if (ret == -ENOTSUP) {
        size_t chunk = (size_t)MIN(count, 1u << 20);
        uint8_t *z = calloc(1, chunk);
        if (!z)
            return set_error(img, -ENOMEM, "out of memory");
        for (ret = 0; count > 0 && ret == 0;) {
            size_t n = (size_t)MIN(count, chunk);
            ret = file_pwrite(img->data_file, z, n, offset);
            offset += n;
            count -= n;
        }
        free(z);
    }
    return ret < 0 ? set_error(img, ret, "zeroing the raw data file at 0x%llx failed: %s",
                               (unsigned long long)offset, strerror(-ret))
                   : 0;
}

/* Does guest [offset, offset + count) read as zeros through the whole chain? (QEMU's is_zero:
 * block status, not the data.) */
static int reads_as_zero(struct qcow2_image *img, uint64_t offset, uint64_t count, bool *zero)
{
    *zero = true;
    count = offset < img->size ? MIN(count, img->size - offset) : 0;
    while (count > 0 && *zero) {
        struct qcow2_extent ext;
        int ret = block_status(img, 0, offset, count, &ext);
        if (ret < 0)
            return ret;
        *zero = (ext.flags & QCOW2_BS_ZERO) != 0;
        offset += ext.length;
        count -= ext.length;
    }
    return 0;
}

/* QEMU's rule for a zero write [s, e) that covers part of one subcluster: when that
 * subcluster holds no data of this image (unallocated or already zero) and the rest of it
 * reads as zeros through the whole chain, the whole subcluster is zeroed in metadata (*done);
 * else the caller writes the part as zeros (data). Decided and done under the lock, after
 * in-flight requests on the cluster finished, so that no write into the rest of the
 * subcluster can land between the decision and the zeroing. */
static int zero_partial_subcluster(struct qcow2_image *img, uint64_t s, uint64_t e,
                                   enum zero_mode mode, bool may_unmap, bool *done)
{
    uint64_t sc_start = align_down_pow2(s, img->subcluster_size);
    uint64_t sc_end = MIN(sc_start + img->subcluster_size, img->size);
    *done = false;
    pthread_mutex_lock(&img->lock);
    int ret;
    uint64_t n;
    do {
        n = sc_end - sc_start;
        ret = cluster_wait_dependencies(img, sc_start, &n, true);
    } while (ret == -EAGAIN || (ret == 0 && n < sc_end - sc_start));
    uint64_t host;
    enum subcluster_type type = SC_INVALID;
    if (ret == 0) {
        n = sc_end - sc_start;
        ret = cluster_get_host_offset(img, sc_start, &n, &host, &type);
    }
    bool empty = type == SC_ZERO_PLAIN || type == SC_ZERO_ALLOC;
    if (ret == 0 && (type == SC_UNALLOCATED_PLAIN || type == SC_UNALLOCATED_ALLOC)) {
        /* The rest reads the backing file: it must read zeros there (its own lock). A
         * session without its backing file cannot know, and must not hide it. */
        bool before = true, after = true;
        if (img->backing) {
            ret = reads_as_zero(img->backing, sc_start, s - sc_start, &before);
            if (ret == 0 && before)
                ret = reads_as_zero(img->backing, e, sc_end - e, &after);
        }
        empty = (img->backing || !has_backing_file(img)) && before && after;
    }
    if (ret == 0 && empty) {
        bool fallback = false;
        int64_t z = zero_in_slice(img, sc_start, sc_end, mode, may_unmap, &fallback);
        ret = z < 0 ? (int)z : 0;
        *done = ret == 0 && !fallback && (uint64_t)z == sc_end - sc_start;
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}

static int zero_raw(struct qcow2_image *img, uint64_t offset, uint64_t count, unsigned flags)
{
    /* May unmap: a hole, as QEMU's file driver punches one (convert into an existing raw
     * target leaves its zero ranges sparse). */
    if ((flags & QCOW2_ZERO_MAY_UNMAP) && file_discard(img->file, offset, count) == 0)
        return 0;
    int ret = file_zero(img->file, offset, count);
    if (ret == -ENOTSUP && !(flags & QCOW2_ZERO_FAST))
        return write_zero_buffer(img, offset, count);
    return ret < 0 ? set_error(img, ret, "zeroing failed: %s", strerror(-ret)) : 0;
}

int qcow2_pwrite_zeroes(struct qcow2_image *img, uint64_t offset, uint64_t count,
                        unsigned flags)
{
    int ret = check_writable(img);
    if (ret == 0)
        ret = check_request(img, offset, count);
    if (ret < 0 || count == 0)
        return ret;
    bitmap_mark(img, offset, count);
    if (img->format == QCOW2_FORMAT_RAW)
        return zero_raw(img, offset, count, flags);
    bool fast = (flags & QCOW2_ZERO_FAST) != 0;
    /* Version 2 has no zero flag: only "unallocated without a backing file" reads zeros. */
    if (img->hdr.version < 3 && has_backing_file(img))
        return fast ? set_error(img, -ENOTSUP, "zero writes need data on this image")
                    : write_zero_buffer(img, offset, count);
    if (data_file_is_raw(img) && (ret = zero_raw_data_file(img, offset, count)) < 0)
        return ret;
    uint64_t end = offset + count;
    uint64_t align = img->subcluster_size;
    uint64_t a = MIN(ROUND_UP(offset, align), end);
    uint64_t b = end == img->size ? end : MAX(ROUND_DOWN(end, align), a);
    /* The partial subclusters at either end: zeroed whole in metadata where QEMU does so,
     * else written as data. (A request inside one subcluster is all head: a == b == end.) */
    enum zero_mode mode = img->hdr.version < 3 ? ZERO_FULL_DISCARD : ZERO_WRITE;
    bool may_unmap = (flags & QCOW2_ZERO_MAY_UNMAP) != 0, head_done = false, tail_done = false;
    if (a > offset &&
        (ret = zero_partial_subcluster(img, offset, a, mode, may_unmap, &head_done)) < 0)
        return ret;
    if (b < end && (ret = zero_partial_subcluster(img, b, end, mode, may_unmap, &tail_done)) < 0)
        return ret;
    if (((a > offset && !head_done) || (b < end && !tail_done)) && fast)
        return set_error(img, -ENOTSUP, "unaligned zero write needs data");
    if (a > offset && !head_done && (ret = write_zero_buffer(img, offset, a - offset)) < 0)
        return ret;
    if (tail_done)
        end = b;
    while (a < b) {
        uint64_t fb;
        ret = zero_range(img, a, b, mode, (flags & QCOW2_ZERO_MAY_UNMAP) != 0, &fb);
        if (ret < 0)
            return ret;
        if (fb == UINT64_MAX)
            break;
        /* A partly zeroed compressed cluster: write zeros into that cluster's part. */
        uint64_t fe = MIN(start_of_cluster(img, fb) + img->cluster_size, b);
        if (fast)
            return set_error(img, -ENOTSUP, "zeroing part of a compressed cluster needs data");
        if ((ret = write_zero_buffer(img, fb, fe - fb)) < 0)
            return ret;
        a = fe;
    }
    if (b < end && (ret = write_zero_buffer(img, b, end - b)) < 0)
        return ret;
    return 0;
}

int qcow2_discard(struct qcow2_image *img, uint64_t offset, uint64_t count)
{
    int ret = check_writable(img);
    if (ret == 0)
        ret = check_request(img, offset, count);
    if (ret < 0 || count == 0)
        return ret;
    if (img->bitmaps)
        bitmap_mark(img, offset, count);
    if (img->format == QCOW2_FORMAT_RAW) {
        ret = file_discard(img->file, offset, count);
        return ret == -ENOTSUP ? 0 : ret;
    }
    /* Discard is a hint. On a version 2 image with a backing file (opened or not) a freed
     * cluster would show the backing file, and there is no zero flag to hide it: do nothing,
     * successfully, as QEMU does. */
    if (img->hdr.version < 3 && has_backing_file(img))
        return 0;
    /* Only whole clusters (and the partial cluster at the image end). */
    uint64_t end = offset + count;
    uint64_t a = ROUND_UP(offset, img->cluster_size);
    uint64_t b = end == img->size ? end : ROUND_DOWN(end, img->cluster_size);
    if (a >= b)
        return 0;
    /* A raw data file must stay a valid raw image of the disk: what now reads as zeros
     * reads as zeros there too. */
    if (data_file_is_raw(img) && (ret = zero_raw_data_file(img, a, b - a)) < 0)
        return ret;
    uint64_t fb;
    return zero_range(img, a, b, ZERO_DISCARD, true, &fb);
}

/* Every cluster unallocated, as on a new overlay: only existing L2 tables hold entries
 * to clear (a missing table is unallocated already), and each cluster's entry goes from its
 * old value to 0 in one slice write, its host cluster freed after that. A crash leaves each
 * cluster either as it was or unallocated. */
int qcow2_make_empty(struct qcow2_image *img)
{
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    if (img->format == QCOW2_FORMAT_RAW)
        return set_error(img, -ENOTSUP, "a raw image cannot be emptied");
    if (has_data_file(img))
        return set_error(img, -ENOTSUP, "an image with an external data file cannot be emptied");
    uint64_t l2_bytes = img->l2_size << img->cluster_bits;
    for (uint64_t i = 0; i < size_to_l1(img, img->size) && ret == 0; i++) {
        pthread_mutex_lock(&img->lock);
        bool present = i < img->l1_size && (img->l1_table[i] & L1E_OFFSET_MASK) != 0;
        pthread_mutex_unlock(&img->lock);
        uint64_t fb;
        if (present)
            ret = zero_range(img, i * l2_bytes, MIN(img->size, (i + 1) * l2_bytes),
                             ZERO_FULL_DISCARD, true, &fb);
    }
    return ret < 0 ? ret : qcow2_flush(img);
}

/* ---------------------------------------------------------------------------------------- */
/* Compressed writes. */

/* Link one compressed cluster at guest `offset` whose `clen` bytes are at `host`. */
static int link_compressed(struct qcow2_image *img, uint64_t offset, uint64_t host,
                           uint64_t clen)
{
    int ret = cluster_mark_dirty_for_update(img);
    void *slice = NULL;
    uint64_t idx;
    if (ret == 0)
        ret = cluster_get_l2_slice(img, offset, L2_CREATE, &slice, &idx);
    if (ret < 0)
        return ret;
    uint64_t nsec = (host + clen - 1) / QCOW2_COMPRESSED_SECTOR_SIZE -
                    host / QCOW2_COMPRESSED_SECTOR_SIZE;
    l2_set_entry(img, slice, idx,
                 host | QCOW2_OFLAG_COMPRESSED | (nsec << img->csize_shift));
    if (img->extended_l2)
        l2_set_bitmap(img, slice, idx, 0);
    cluster_publish_l2(img, slice);
    cache_put(img->l2_cache, &slice);
    return 0;
}

/* Is the cluster at `offset` free for a compressed write (no host cluster)? */
static int compressed_target_ok(struct qcow2_image *img, uint64_t offset)
{
    void *slice;
    uint64_t idx;
    int ret = cluster_get_l2_slice(img, offset, L2_CREATE, &slice, &idx);
    if (ret < 0)
        return ret;
    uint64_t e = l2_get_entry(img, slice, idx);
    cache_put(img->l2_cache, &slice);
    if ((e & QCOW2_OFLAG_COMPRESSED) || (e & L2E_OFFSET_MASK))
        return set_error(img, -EIO,
                         "compressed write to an allocated cluster (guest offset 0x%llx)",
                         (unsigned long long)offset);
    return 0;
}

/* Store `clen` bytes of compressed data for the cluster at guest `offset`. */
static int store_compressed(struct qcow2_image *img, const uint8_t *cbuf, uint64_t clen,
                            uint64_t offset)
{
    struct l2_meta m = {.offset = offset, .nb_clusters = 1, .keep_old_clusters = false,
                        .cow_start = {0, 0}, .cow_end = {img->cluster_size, 0}};
    cluster_assert_meta(img, &m);
    pthread_mutex_lock(&img->lock);
    uint64_t n = img->cluster_size;
    int ret;
    while ((ret = cluster_wait_dependencies(img, offset, &n, true)) == -EAGAIN)
        n = img->cluster_size;
    if (ret == 0 && n < img->cluster_size)
        ret = set_error(img, -EBUSY, "compressed write overlaps a write in progress");
    if (ret == 0)
        ret = compressed_target_ok(img, offset);
    int64_t host = ret < 0 ? ret : refcount_alloc_bytes(img, clen);
    if (host < 0) {
        pthread_mutex_unlock(&img->lock);
        return (int)host;
    }
    m.alloc_offset = (uint64_t)host;
    cluster_meta_start(img, &m);
    pthread_mutex_unlock(&img->lock);

    ret = file_pwrite(img->file, cbuf, (size_t)clen, (uint64_t)host);
    if (ret < 0)
        set_error(img, ret, "writing compressed data at 0x%llx failed: %s",
                  (unsigned long long)host, strerror(-ret));

    pthread_mutex_lock(&img->lock);
    if (ret == 0)
        ret = link_compressed(img, offset, (uint64_t)host, clen);
    if (ret < 0)
        refcount_update(img, (uint64_t)host, clen, -1);
    cluster_meta_finish(img, &m);
    pthread_mutex_unlock(&img->lock);
    return ret;
}

int64_t qcow2_compress_cluster(struct qcow2_image *img, const void *cluster, void *out)
{
    if (img->format != QCOW2_FORMAT_QCOW2)
        return set_error(img, -ENOTSUP, "compression needs a qcow2 image");
    /* Output limited to less than a cluster: compression must save something. */
    ssize_t clen = compress_compress(img->compress_cache, img->hdr.compression_type, cluster,
                                     img->cluster_size, out, img->cluster_size - 1);
    if (clen < 0 && clen != -ENOSPC)
        return set_error(img, (int)clen, "compression failed");
    return clen;
}

static int check_compressed_target(struct qcow2_image *img, uint64_t offset, uint64_t count)
{
    int ret = check_writable(img);
    if (ret == 0)
        ret = check_request(img, offset, count);
    if (ret < 0)
        return ret;
    if (img->format != QCOW2_FORMAT_QCOW2 || has_data_file(img))
        return set_error(img, -ENOTSUP, "compressed writes need a qcow2 image without an "
                                        "external data file");
    if (offset_into_cluster(img, offset) ||
        (count % img->cluster_size && offset + count != img->size))
        return set_error(img, -EINVAL, "compressed writes must cover whole clusters");
    bitmap_mark(img, offset, count);
    return 0;
}

int qcow2_pwrite_compressed_data(struct qcow2_image *img, const void *cdata, size_t clen,
                                 uint64_t offset)
{
    int ret = check_compressed_target(img, offset, MIN(img->cluster_size, img->size - offset));
    if (ret < 0)
        return ret;
    if (clen == 0 || clen >= img->cluster_size)
        return set_error(img, -EINVAL, "compressed data of %zu bytes for a %llu-byte cluster",
                         clen, (unsigned long long)img->cluster_size);
    return store_compressed(img, cdata, clen, offset);
}

static int write_compressed_cluster(struct qcow2_image *img, const uint8_t *data,
                                    uint64_t offset, uint8_t *cbuf)
{
    int64_t clen = qcow2_compress_cluster(img, data, cbuf);
    if (clen == -ENOSPC) /* incompressible: store it as is */
        return qcow2_pwrite(img, data, MIN(img->cluster_size, img->size - offset), offset, 0);
    if (clen < 0)
        return (int)clen;
    return store_compressed(img, cbuf, (uint64_t)clen, offset);
}

/* Packed compressed data leaves the file end mid-sector: end on a sector boundary, as QEMU
 * does, so that the last compressed cluster's sector count covers whole sectors. */
static int align_compressed_end(struct qcow2_image *img)
{
    int64_t fsize = file_size(img->file);
    int ret = 0;
    if (fsize > 0 && fsize % QCOW2_COMPRESSED_SECTOR_SIZE &&
        (ret = file_truncate(img->file,
                             ROUND_UP((uint64_t)fsize, QCOW2_COMPRESSED_SECTOR_SIZE))) < 0)
        set_error(img, ret, "extending the file to a whole sector failed: %s", strerror(-ret));
    return ret;
}

int qcow2_pwrite_compressed(struct qcow2_image *img, const void *buf, size_t count,
                            uint64_t offset)
{
    if (count == 0) { /* "finish": as QEMU's empty compressed write */
        int ret = check_writable(img);
        return ret < 0 || img->format != QCOW2_FORMAT_QCOW2 ? ret : align_compressed_end(img);
    }
    int ret = check_compressed_target(img, offset, count);
    if (ret < 0)
        return ret;
    uint8_t *cbuf = malloc(img->cluster_size);
    uint8_t *pad = malloc(img->cluster_size);
    if (!cbuf || !pad) {
        free(cbuf);
        free(pad);
        return set_error(img, -ENOMEM, "out of memory");
    }
    const uint8_t *p = buf;
    while (count > 0 && ret == 0) {
        uint64_t n = MIN(count, img->cluster_size);
        const uint8_t *data = p;
        if (n < img->cluster_size) { /* the last cluster of the image: pad with zeros */
            memcpy(pad, p, n);
            memset(pad + n, 0, img->cluster_size - n);
            data = pad;
        }
        ret = write_compressed_cluster(img, data, offset, cbuf);
        p += n;
        offset += n;
        count -= n;
    }
    free(cbuf);
    free(pad);
    return ret == 0 ? align_compressed_end(img) : ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Preallocation and truncate. */

/* Give [m's clusters] their data blocks as the mode asks. */
static int prealloc_data(struct qcow2_image *img, const struct l2_meta *m,
                         enum qcow2_prealloc mode)
{
    uint64_t host = m->alloc_offset, len = (uint64_t)m->nb_clusters << img->cluster_bits;
    int ret = 0;
    if (mode == QCOW2_PREALLOC_FULL) {
        size_t chunk = (size_t)MIN(len, 1u << 20);
        uint8_t *z = calloc(1, chunk);
        if (!z)
            return set_error(img, -ENOMEM, "out of memory");
        for (uint64_t o = 0; o < len && ret == 0; o += chunk)
            ret = file_pwrite(img->data_file, z, (size_t)MIN(chunk, len - o), host + o);
        free(z);
    } else if (mode == QCOW2_PREALLOC_FALLOC || (!m->dest_zero && !img->extended_l2)) {
        /* falloc reserves blocks; reused clusters that will read as data must read zeros */
        ret = file_zero(img->data_file, host, len);
        if (ret == -ENOTSUP && mode != QCOW2_PREALLOC_FALLOC)
            ret = 0;
    }
    if (ret == 0) {
        int64_t fsize = file_size(img->data_file);
        if (fsize >= 0 && (uint64_t)fsize < host + len)
            ret = file_truncate(img->data_file, host + len);
    }
    return ret < 0 ? set_error(img, ret, "preallocating host range 0x%llx failed: %s",
                               (unsigned long long)host, strerror(-ret))
                   : 0;
}

int io_preallocate(struct qcow2_image *img, uint64_t offset, uint64_t end,
                   enum qcow2_prealloc mode)
{
    if (mode == QCOW2_PREALLOC_OFF)
        return 0;
    offset = start_of_cluster(img, offset);
    while (offset < end) {
        struct l2_meta m;
        uint64_t n = end - offset;
        pthread_mutex_lock(&img->lock);
        int ret;
        while ((ret = cluster_wait_dependencies(img, offset, &n, true)) == -EAGAIN)
            n = end - offset;
        if (ret == 0)
            ret = cluster_prepare_write(img, offset, &n, &m, true);
        if (ret < 0) {
            pthread_mutex_unlock(&img->lock);
            return ret;
        }
        cluster_meta_start(img, &m);
        pthread_mutex_unlock(&img->lock);
        if (!m.keep_old_clusters)
            ret = prealloc_data(img, &m, mode);
        pthread_mutex_lock(&img->lock);
        if (ret == 0 && !m.keep_old_clusters) {
            m.needs_link = true;
            ret = cluster_link_l2(img, &m);
        }
        if (ret < 0)
            cluster_abort(img, &m);
        cluster_meta_finish(img, &m);
        pthread_mutex_unlock(&img->lock);
        if (ret < 0)
            return ret;
        offset += n;
    }
    return 0;
}

static int write_size(struct qcow2_image *img, uint64_t size)
{
    uint8_t b[8];
    be64_put(b, size);
    int ret = header_write_field(img, HDR_SIZE, b, sizeof(b));
    if (ret == 0)
        img->hdr.size = img->size = size;
    return ret;
}

/* What the area [old, size) must be made to read as zeros over: stale bytes past the old end
 * inside its last cluster, and whatever a longer backing file holds there (as in QEMU). */
static int grow_zero_end(struct qcow2_image *img, uint64_t old, uint64_t size,
                         uint64_t *zero_end)
{
    *zero_end = MIN(size, ROUND_UP(old, img->cluster_size));
    if (!has_backing_file(img))
        return 0;
    if (!img->backing) /* its length decides what the new area must hide */
        return set_error(img, -ENOTSUP, "growing the image needs its backing file, which "
                                        "this session did not open");
    if (img->backing->size > old)
        *zero_end = MAX(*zero_end, MIN(size, img->backing->size));
    return 0;
}

/* Data clusters that tables still map in [from, to) (past the old end: a shrink that stopped
 * before it dropped them) are zeroed; unallocated and zero ranges read as they must already. */
static int hide_mapped_past_end(struct qcow2_image *img, uint64_t from, uint64_t to)
{
    while (from < to) {
        uint64_t n = to - from, host;
        enum subcluster_type type;
        pthread_mutex_lock(&img->lock);
        int ret = cluster_get_host_offset(img, from, &n, &host, &type);
        pthread_mutex_unlock(&img->lock);
        if (ret == 0 && (type == SC_NORMAL || type == SC_COMPRESSED))
            ret = qcow2_pwrite_zeroes(img, from, n, 0);
        if (ret < 0)
            return ret;
        from += n;
    }
    return 0;
}

/* Crash safety: everything that makes the new area read as it must (L1 growth, preallocated
 * clusters, the zero flags that hide a longer backing file) is durable before the new size,
 * which alone makes the area reachable. A crash before the size is written leaves the old
 * size, with at worst leaked clusters. The zero writes run with the new size in memory only;
 * it goes back to the old one if anything fails. */
static int grow_qcow2(struct qcow2_image *img, uint64_t old, uint64_t size,
                      enum qcow2_prealloc prealloc)
{
    uint64_t zero_end;
    int ret = grow_zero_end(img, old, size, &zero_end);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&img->lock);
    ret = cluster_ensure_l1_size(img, size_to_l1(img, size));
    pthread_mutex_unlock(&img->lock);
    img->size = size;
    if (ret == 0 && zero_end < size)
        ret = hide_mapped_past_end(img, MAX(zero_end, old), size);
    if (ret == 0)
        ret = io_preallocate(img, ROUND_UP(old, img->cluster_size), size, prealloc);
    if (ret == 0 && zero_end > old)
        ret = qcow2_pwrite_zeroes(img, old, zero_end - old, 0);
    if (ret == 0) {
        pthread_mutex_lock(&img->lock);
        ret = write_caches(img);
        pthread_mutex_unlock(&img->lock);
    }
    if (ret == 0 && (ret = file_flush(img->file)) < 0)
        set_error(img, ret, "flush failed: %s", strerror(-ret));
    if (ret == 0)
        ret = write_size(img, size);
    if (ret < 0)
        img->size = old;
    return ret;
}

/* After a shrink, as QEMU's qcow2_co_truncate: cut the image file after its last used
 * cluster (everything is written and synced, so nothing past it is referenced). Never below
 * the tables in memory that a damaged image might not count. A failure leaves a longer
 * file, which is still valid: not an error (QEMU only warns). Called with img->lock held. */
static void trim_file_tail(struct qcow2_image *img)
{
    int64_t len = file_size(img->file);
    if (len <= 0)
        return;
    int64_t last = refcount_last_used(img, DIV_ROUND_UP((uint64_t)len, img->cluster_size));
    if (last < 0)
        return;
    uint64_t end = ((uint64_t)last + 1) << img->cluster_bits;
    end = MAX(end, img->hdr.l1_table_offset + (uint64_t)img->l1_size * 8);
    end = MAX(end, img->hdr.refcount_table_offset +
                       ((uint64_t)img->hdr.refcount_table_clusters << img->cluster_bits));
    for (uint64_t i = 0; i < img->refcount_table_size; i++)
        if (img->refcount_table[i] & REFT_OFFSET_MASK)
            end = MAX(end, (img->refcount_table[i] & REFT_OFFSET_MASK) + img->cluster_size);
    if (end < (uint64_t)len && file_truncate(img->file, end) == 0)
        img->free_byte_offset = 0;
}

static int truncate_qcow2(struct qcow2_image *img, uint64_t size, enum qcow2_prealloc prealloc,
                          unsigned flags)
{
    uint64_t old = img->size;
    int ret;
    if (size < old) {
        if (!(flags & QCOW2_TRUNCATE_SHRINK))
            return set_error(img, -EINVAL, "shrinking the image needs the shrink flag "
                                           "(--shrink): data past the new end is lost");
        if (prealloc != QCOW2_PREALLOC_OFF)
            return set_error(img, -EINVAL, "preallocation is not possible when shrinking");
        /* Crash safety: the new size is durable first, then the clusters past it are
         * dropped. A crash in between leaves them mapped past the end, still referenced (no
         * leak, no corruption), and growing hides them again (grow_qcow2). Dropping them
         * first would let a crash leave the old size reading the backing file, or zeros,
         * where the guest had data. */
        if ((ret = write_size(img, size)) < 0)
            return ret;
        /* Whole clusters up to the old end's cluster end: img->size is already the new
         * size, so an unaligned old end would look like part of a cluster to zero_in_slice. */
        uint64_t a = ROUND_UP(size, img->cluster_size), b = ROUND_UP(old, img->cluster_size), fb;
        if (a < b && (ret = zero_range(img, a, b, ZERO_FULL_DISCARD, true, &fb)) < 0)
            return ret;
        /* Then, as QEMU does: the L2 tables wholly past the end go, the refcount blocks
         * that count nothing go, and the file is cut after its last used cluster. */
        pthread_mutex_lock(&img->lock);
        ret = cluster_shrink_l1(img, size_to_l1(img, size)); /* caches written first, if any */
        if (ret == 0)
            ret = write_caches(img);
        if (ret == 0)
            ret = refcount_shrink_table(img);
        if (ret == 0 && (ret = file_flush(img->file)) < 0)
            set_error(img, ret, "flush failed: %s", strerror(-ret));
        if (ret == 0)
            trim_file_tail(img);
        pthread_mutex_unlock(&img->lock);
        return ret;
    }
    return grow_qcow2(img, old, size, prealloc);
}

int qcow2_truncate(struct qcow2_image *img, uint64_t size, enum qcow2_prealloc prealloc,
                   unsigned flags)
{
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    if (size % 512)
        return set_error(img, -EINVAL, "image size must be a multiple of 512 bytes");
    if (img->format == QCOW2_FORMAT_RAW) {
        if (size < img->size && !(flags & QCOW2_TRUNCATE_SHRINK))
            return set_error(img, -EINVAL, "shrinking the image needs the shrink flag");
        ret = file_truncate(img->file, size);
        if (ret == 0 && size > img->size && prealloc >= QCOW2_PREALLOC_FALLOC)
            ret = file_zero(img->file, img->size, size - img->size);
        if (ret < 0)
            return set_error(img, ret, "resize failed: %s", strerror(-ret));
        img->size = size;
        return 0;
    }
    if (img->hdr.nb_snapshots && img->hdr.version < 3)
        return set_error(img, -ENOTSUP, "cannot resize a version 2 image with snapshots");
    uint64_t old = img->size;
    ret = truncate_qcow2(img, size, prealloc, flags);
    /* The bitmaps follow the new size (as in QEMU 7.2, which resizes them too). */
    if (ret == 0 && size != old)
        ret = bitmap_resize(img, old, size);
    return ret;
}
