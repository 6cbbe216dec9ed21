/* header_write.c - changes to cluster 0 on disk: header fields written in place (synced), the
 * whole first cluster rewritten, the dirty and corrupt bits, marking the image corrupt, and
 * the pointer switches that hang off the header (L1 table, refcount table) written again
 * after a failed write. Serializes through header.c and writes through file.c only; knows
 * nothing of what L2 tables or refcount blocks hold. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int signal_corruption(struct qcow2_image *img, const char *fmt, ...)
{
    char msg[QCOW2_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Stop further damage: a corrupt image is not written again until repaired. */
    if (!img->read_only && !img->corrupt && !img->opts.repair) {
        img->corrupt = true;
        header_set_incompat_bits(img, QCOW2_INCOMPAT_CORRUPT, 0);
        return set_error(img, -EIO, "image marked corrupt: %s", msg);
    }
    return set_error(img, -EIO, "corrupt image: %s", msg);
}

int header_write_field(struct qcow2_image *img, uint64_t offset, const void *buf,
                             size_t len)
{
    int ret = file_pwrite(img->file, buf, len, offset);
    if (ret == 0)
        ret = file_flush(img->file);
    if (ret < 0)
        return set_error(img, ret, "updating the header failed: %s", strerror(-ret));
    return 0;
}

static int write_table_be64(struct qcow2_image *img, const uint64_t *table, uint64_t n,
                            uint64_t offset, const char *what)
{
    uint8_t *buf = malloc(n > 0 ? n * 8 : 1);
    if (!buf)
        return set_error(img, -ENOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++)
        be64_put(buf + i * 8, table[i]);
    int ret = file_pwrite(img->file, buf, n * 8, offset);
    free(buf);
    if (ret == 0)
        ret = file_flush(img->file);
    if (ret < 0)
        return set_error(img, ret, "writing the %s failed: %s", what, strerror(-ret));
    return 0;
}

int header_write_pending_switches(struct qcow2_image *img)
{
    int ret = 0;
    /* The L1 table in memory names new L2 tables that may not be on disk yet (cluster.c
     * links them in batches, and always before it calls us from a flush): not now, then.
     * Memory is right, and the disk as it was before the failed switch is consistent. */
    if (img->l1_dirty && !img->l1_pending_any) {
        ret = write_table_be64(img, img->l1_table, img->l1_size, img->hdr.l1_table_offset,
                               "L1 table");
        if (ret < 0)
            return ret;
        img->l1_dirty = false;
    }
    if (img->reftable_dirty) {
        ret = write_table_be64(img, img->refcount_table, img->refcount_table_size,
                               img->hdr.refcount_table_offset, "refcount table");
        if (ret < 0)
            return ret;
        img->reftable_dirty = false;
    }
    if (img->header_dirty) {
        ret = header_rewrite_synced(img);
        if (ret < 0)
            return ret;
        img->header_dirty = false;
    }
    return 0;
}

/* A 64-bit feature field of the header: on disk (sync), then in memory. */
static int write_features(struct qcow2_image *img, uint64_t offset, uint64_t *field, uint64_t v)
{
    uint8_t b[8];
    be64_put(b, v);
    int ret = header_write_field(img, offset, b, sizeof(b));
    if (ret == 0)
        *field = v;
    return ret;
}

int header_set_autoclear(struct qcow2_image *img, uint64_t v)
{
    return write_features(img, HDR_AUTOCLEAR_FEATURES, &img->hdr.autoclear_features, v);
}

int header_set_incompat_bits(struct qcow2_image *img, uint64_t set, uint64_t clear)
{
    if (img->hdr.version < 3)
        return 0;
    uint64_t v = (img->hdr.incompatible_features | set) & ~clear;
    if (v == img->hdr.incompatible_features)
        return 0;
    return write_features(img, HDR_INCOMPATIBLE_FEATURES, &img->hdr.incompatible_features, v);
}

/* Cluster 0 as img->hdr describes it, in a new buffer (NULL with the error set). */
static uint8_t *serialize_cluster0(struct qcow2_image *img, int *ret)
{
    uint8_t *c0 = malloc(img->cluster_size);
    if (!c0) {
        *ret = set_error(img, -ENOMEM, "out of memory");
        return NULL;
    }
    char msg[256];
    *ret = header_serialize(&img->hdr, c0, img->cluster_size, msg, sizeof(msg));
    if (*ret < 0) {
        free(c0);
        set_error(img, *ret, "%s", msg);
        return NULL;
    }
    return c0;
}

int header_rewrite(struct qcow2_image *img)
{
    int ret;
    uint8_t *c0 = serialize_cluster0(img, &ret);
    if (!c0)
        return ret;
    ret = file_pwrite(img->file, c0, img->cluster_size, 0);
    free(c0);
    if (ret < 0)
        return set_error(img, ret, "writing the header failed: %s", strerror(-ret));
    return 0;
}

/* The smallest write a disk does atomically (the crash model tears larger ones into these). */
#define HEADER_ATOMIC_SECTOR 512u

int header_rewrite_synced(struct qcow2_image *img)
{
    int ret;
    uint8_t *c0 = serialize_cluster0(img, &ret);
    if (!c0)
        return ret;
    size_t used = img->cluster_size;
    while (used > 0 && c0[used - 1] == 0)
        used--;
    /* Fits in the first sector: that sector alone switches to the new header (whatever it
     * referenced beyond it is no longer referenced), then the rest is cleared. Otherwise one
     * write of the whole cluster, as QEMU does. */
    size_t first = used <= HEADER_ATOMIC_SECTOR ? HEADER_ATOMIC_SECTOR : img->cluster_size;
    ret = file_pwrite(img->file, c0, first, 0);
    if (ret == 0)
        ret = file_flush(img->file);
    if (ret == 0 && first < img->cluster_size) {
        ret = file_pwrite(img->file, c0 + first, img->cluster_size - first, first);
        if (ret == 0)
            ret = file_flush(img->file);
    }
    free(c0);
    if (ret < 0) {
        img->header_dirty = true; /* memory has the new header: write it at the next flush */
        return set_error(img, ret, "writing the header failed: %s", strerror(-ret));
    }
    return 0;
}

/* Strings for the header, or NULL for "none" (an empty name is none too). */
static int dup_or_null(const char *s, char **out)
{
    *out = NULL;
    if (!s || !*s)
        return 0;
    *out = strdup(s);
    return *out ? 0 : -ENOMEM;
}

/* The backing file fields of the fixed header (offset and size, both in its first sector):
 * one write of 12 bytes, synced, which a crash keeps or drops whole. */
static int write_backing_fields(struct qcow2_image *img, uint64_t offset, uint32_t size)
{
    uint8_t b[12];
    be64_put(b, offset);
    be32_put(b + 8, size);
    _Static_assert(HDR_BACKING_FILE_SIZE == HDR_BACKING_FILE_OFFSET + 8, "adjacent fields");
    return header_write_field(img, HDR_BACKING_FILE_OFFSET, b, sizeof(b));
}

/* Where in the first cluster a new name of `len` bytes can go without touching anything the
 * current header reads: past its name, which lies past its extensions (as every writer puts
 * it; `ext_end` is where ours end when serialized). 0 when there is no room there. */
static uint64_t free_name_offset(const struct qcow2_image *img, uint64_t ext_end,
                                 uint64_t old_off, uint64_t old_len, uint64_t len)
{
    if (old_off < ext_end)
        return 0; /* a layout we do not know: rewrite the cluster */
    uint64_t after = ROUND_UP(old_off + old_len, 8);
    return after + len <= img->cluster_size ? after : 0;
}

/* The extensions stay as they are (same backing format): the new name goes where the current
 * header does not look, is flushed, and then the fixed header's offset and size switch to it
 * in one sector. Returns 1 when there is no room for that (the caller rewrites the cluster). */
static int switch_name_in_place(struct qcow2_image *img, const char *name)
{
    struct qcow2_header *h = &img->hdr;
    uint8_t *c0 = malloc(img->cluster_size);
    if (!c0)
        return set_error(img, -ENOMEM, "out of memory");
    /* The extension area ends where a serialized header would put the name. */
    struct qcow2_header tmp = *h;
    char msg[256];
    int ret = header_serialize(&tmp, c0, img->cluster_size, msg, sizeof(msg));
    free(c0);
    if (ret < 0)
        return ret == -ENOSPC ? 1 : set_error(img, ret, "%s", msg);
    uint64_t ext_end = tmp.backing_file_offset ? tmp.backing_file_offset
                                               : tmp.header_length; /* not reached: has a name */
    uint64_t len = strlen(name);
    uint64_t off = free_name_offset(img, ext_end, h->backing_file_offset, h->backing_file_size,
                                    len);
    if (off == 0 || len > QCOW2_MAX_BACKING_FILE_SIZE)
        return 1;
    ret = file_pwrite(img->file, name, len, off);
    if (ret == 0)
        ret = file_flush(img->file);
    if (ret < 0)
        return set_error(img, ret, "writing the backing file name failed: %s", strerror(-ret));
    ret = write_backing_fields(img, off, (uint32_t)len);
    if (ret < 0)
        return ret;
    h->backing_file_offset = off;
    h->backing_file_size = (uint32_t)len;
    return 0;
}

static bool same_string(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* Crash safety. Dropping the backing file is one sector write (offset and size zero; the old
 * name and format stay behind unread). Another name with the same format goes in two steps
 * (switch_name_in_place). Only a change of the extensions (another format, a first backing
 * file) rewrites the whole first cluster in one write, as QEMU always does: a write torn in
 * between its sectors could mix the two headers. */
int header_set_backing(struct qcow2_image *img, const char *name, const char *fmt)
{
    char *new_name, *new_fmt = NULL;
    if (dup_or_null(name, &new_name) < 0 || (new_name && dup_or_null(fmt, &new_fmt) < 0)) {
        free(new_name);
        return set_error(img, -ENOMEM, "out of memory");
    }
    struct qcow2_header *h = &img->hdr;
    char *old_name = h->backing_file, *old_fmt = h->backing_fmt;
    uint64_t old_offset = h->backing_file_offset;
    uint32_t old_size = h->backing_file_size;
    int ret = 1;
    if (!new_name) {
        ret = write_backing_fields(img, 0, 0);
        if (ret == 0)
            h->backing_file_offset = h->backing_file_size = 0;
    } else if (old_name && same_string(new_fmt, old_fmt)) {
        ret = switch_name_in_place(img, new_name);
    }
    if (ret == 1) {
        h->backing_file = new_name;
        h->backing_fmt = new_fmt;
        ret = header_rewrite(img);
        if (ret == -ENOSPC)
            ret = set_error(img, ret, "No space left in the file header");
        if (ret == 0 && (ret = file_flush(img->file)) < 0)
            ret = set_error(img, ret, "flush failed: %s", strerror(-ret));
    }
    if (ret < 0) {
        /* Memory keeps describing the old header; the disk holds the old one or, after a
         * write that landed but failed to flush, the new one: both are whole headers. */
        h->backing_file = old_name;
        h->backing_fmt = old_fmt;
        h->backing_file_offset = old_offset;
        h->backing_file_size = old_size;
        free(new_name);
        free(new_fmt);
        return ret;
    }
    h->backing_file = new_name;
    h->backing_fmt = new_fmt;
    if (old_name != new_name)
        free(old_name);
    if (old_fmt != new_fmt)
        free(old_fmt);
    return 0;
}
