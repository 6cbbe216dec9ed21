/* measure.c - how large a new image would be (qemu-img measure), computed as QEMU 7.2 does
 * (block/qcow2.c qcow2_measure and qcow2_calc_prealloc_size, block/raw-format.c raw_measure).
 * Reads the source only through qcow2_block_status and, for the persistent bitmaps a qcow2
 * source carries, its bitmap directory through file.c. Writes nothing. */
#include "internal.h"

#include <stdlib.h>

#define MEASURE_SECTOR 512u
#define MEASURE_DEFAULT_REFCOUNT_BITS 16u
#define MEASURE_TABLE_ENTRY 8u          /* L1 and refcount table entries */
#define MEASURE_L2E_NORMAL 8u
#define MEASURE_L2E_EXTENDED 16u
#define MEASURE_MAX_L1_BYTES (32u << 20) /* QEMU's QCOW_MAX_L1_SIZE */
#define MEASURE_MIN_CLUSTER_EXTL2 (1u << QCOW2_MIN_CLUSTER_BITS_EXTL2)
#define BITMAP_TABLE_ENTRY 8u
#define BITMAP_DIR_ENTRY_FIXED 24u      /* the fixed part of a bitmap directory entry */
#define BITMAP_DIR_ALIGN 8u
#define BITMAP_DIR_MAX (64u << 20)       /* the spec's limit on the bitmap directory */

/* Bytes of refcount blocks and table needed for `clusters` clusters plus themselves: the
 * fixed point QEMU computes (qcow2_refcount_metadata_size, no generous increase). */
static uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cluster_size,
                                       unsigned refcount_bits)
{
    uint64_t per_table_cluster = cluster_size / MEASURE_TABLE_ENTRY;
    uint64_t per_block = cluster_size * 8 / refcount_bits;
    uint64_t blocks = 0, table = 0, n = 0, last;
    do {
        last = n;
        blocks = DIV_ROUND_UP(clusters + table + blocks, per_block);
        table = DIV_ROUND_UP(blocks, per_table_cluster);
        n = blocks + table;
    } while (n != last);
    return n * cluster_size;
}

/* Every byte of a fully allocated image of `size` (cluster aligned) bytes: header cluster,
 * L2 tables, L1 table, refcount metadata, data (QEMU's qcow2_calc_prealloc_size). */
static uint64_t prealloc_size(uint64_t size, uint64_t cs, unsigned refcount_bits, bool extl2)
{
    uint64_t l2e = extl2 ? MEASURE_L2E_EXTENDED : MEASURE_L2E_NORMAL;
    uint64_t meta = cs;
    uint64_t nl2e = ROUND_UP(size / cs, cs / l2e);
    meta += nl2e * l2e;
    uint64_t nl1e = ROUND_UP(nl2e * l2e / cs, cs / MEASURE_TABLE_ENTRY);
    meta += nl1e * MEASURE_TABLE_ENTRY;
    meta += refcount_metadata_size((meta + size) / cs, cs, refcount_bits);
    return meta + size;
}

/* Bytes of the source's guest data a copy needs, cluster for cluster: every cluster that
 * holds data somewhere in the chain and does not read as zeros. */
static int data_size(struct qcow2_image *src, uint64_t cs, uint64_t *out, char *err,
                     size_t errlen)
{
    uint64_t size = qcow2_get_size(src), required = 0;
    for (uint64_t offset = 0; offset < size;) {
        struct qcow2_extent e = QCOW2_EXTENT_INIT;
        int ret = qcow2_block_status(src, offset, size - offset, &e);
        if (ret < 0)
            return format_error(err, errlen, ret, "Unable to get block status: %s",
                                qcow2_error(src));
        uint64_t n = e.length;
        if (!(e.flags & QCOW2_BS_ZERO) &&
            (e.flags & (QCOW2_BS_DATA | QCOW2_BS_PRESENT)) ==
                (QCOW2_BS_DATA | QCOW2_BS_PRESENT)) {
            /* Count from the start of the first cluster to the end of the last one; the
             * next extent then starts on a cluster boundary. */
            n = ROUND_UP(offset + n, cs) - offset;
            required += offset % cs + n;
        }
        offset += n;
    }
    *out = required;
    return 0;
}

/* The persistent bitmaps of a qcow2 source as a copy would store them: each bitmap's data
 * clusters and its table, plus the directory (QEMU's qcow2_get_persistent_dirty_bitmap_size).
 * Bitmaps QEMU does not trust (autoclear bit clear) it does not load, and they count 0. */
static int bitmaps_size(struct qcow2_image *src, uint64_t cs, uint64_t *out, char *err,
                        size_t errlen)
{
    const struct qcow2_header *h = &src->hdr;
    *out = 0;
    if (!h->has_bitmaps_ext || h->nb_bitmaps == 0 ||
        !(h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
        return 0;
    if (h->bitmap_directory_size > BITMAP_DIR_MAX)
        return format_error(err, errlen, -EINVAL, "%s: bitmap directory too large",
                            src->filename);
    uint8_t *dir = malloc(h->bitmap_directory_size ? h->bitmap_directory_size : 1);
    if (!dir)
        return format_error(err, errlen, -ENOMEM, "out of memory");
    int ret = file_pread(src->file, dir, h->bitmap_directory_size, h->bitmap_directory_offset);
    if (ret < 0) {
        free(dir);
        return format_error(err, errlen, ret, "%s: could not read the bitmap directory: %s",
                            src->filename, strerror(-ret));
    }
    uint64_t total = 0, dir_bytes = 0, pos = 0;
    for (uint32_t i = 0; i < h->nb_bitmaps; i++) {
        if (pos + BITMAP_DIR_ENTRY_FIXED > h->bitmap_directory_size)
            break;
        const uint8_t *e = dir + pos;
        unsigned granularity_bits = e[17];
        uint64_t name_size = be16_get(e + 18), extra = be32_get(e + 20);
        uint64_t entry = ROUND_UP(BITMAP_DIR_ENTRY_FIXED + extra + name_size, BITMAP_DIR_ALIGN);
        if (granularity_bits < 63) {
            uint64_t bits = DIV_ROUND_UP(src->size, 1ull << granularity_bits);
            uint64_t clusters = DIV_ROUND_UP(DIV_ROUND_UP(bits, 8), cs);
            total += clusters * cs + ROUND_UP(clusters * BITMAP_TABLE_ENTRY, cs);
        }
        /* The copy's directory entries carry no extra data. */
        dir_bytes += ROUND_UP(BITMAP_DIR_ENTRY_FIXED + name_size, BITMAP_DIR_ALIGN);
        pos += entry;
    }
    free(dir);
    *out = total + ROUND_UP(dir_bytes, cs);
    return 0;
}

/* The qcow2 option rules qcow2_measure enforces (it validates fewer than create does). */
static int check_qcow2_options(const struct qcow2_create_opts *o, char *err, size_t errlen)
{
    uint64_t cs = o->cluster_size;
    if (cs < (1u << QCOW2_MIN_CLUSTER_BITS) || cs > (1u << QCOW2_MAX_CLUSTER_BITS) ||
        !IS_POWER_OF_2(cs))
        return format_error(err, errlen, -EINVAL,
                            "Cluster size must be a power of two between %u and %uk",
                            1u << QCOW2_MIN_CLUSTER_BITS, 1u << (QCOW2_MAX_CLUSTER_BITS - 10));
    if (o->extended_l2 && cs < MEASURE_MIN_CLUSTER_EXTL2)
        return format_error(err, errlen, -EINVAL,
                            "Extended L2 entries are only supported with cluster sizes of at "
                            "least %u bytes",
                            MEASURE_MIN_CLUSTER_EXTL2);
    if (o->version != 2 && o->version != 3)
        return format_error(err, errlen, -EINVAL, "Invalid compatibility level: %d",
                            o->version);
    if (!IS_POWER_OF_2(o->refcount_bits) || o->refcount_bits > 64)
        return format_error(err, errlen, -EINVAL,
                            "Refcount width must be a power of two and may not exceed 64 bits");
    if (o->version < 3 && o->refcount_bits != MEASURE_DEFAULT_REFCOUNT_BITS)
        return format_error(err, errlen, -EINVAL,
                            "Different refcount widths than 16 bits require compatibility "
                            "level 1.1 or above (use compat=1.1 or greater)");
    if ((unsigned)o->preallocation > QCOW2_PREALLOC_FULL)
        return format_error(err, errlen, -EINVAL, "unknown preallocation mode %d",
                            (int)o->preallocation);
    return 0;
}

static int measure_qcow2(struct qcow2_image *src, struct qcow2_create_opts *o,
                         struct qcow2_measure_result *r, char *err, size_t errlen)
{
    int ret = check_qcow2_options(o, err, errlen);
    if (ret < 0)
        return ret;
    uint64_t cs = o->cluster_size;
    uint64_t l2e = o->extended_l2 ? MEASURE_L2E_EXTENDED : MEASURE_L2E_NORMAL;
    /* As QEMU: the limit is checked on the size option, before a source replaces it. */
    if (o->size > UINT64_MAX - cs)
        return format_error(err, errlen, -EFBIG, "The image size is too large (try using a "
                                                 "larger cluster size)");
    uint64_t size = ROUND_UP(o->size, cs);
    if (DIV_ROUND_UP(size / cs, cs / l2e) * MEASURE_TABLE_ENTRY > MEASURE_MAX_L1_BYTES)
        return format_error(err, errlen, -EFBIG, "The image size is too large (try using a "
                                                 "larger cluster size)");
    uint64_t data = 0;
    if (src) {
        size = ROUND_UP(qcow2_get_size(src), cs);
        if (o->backing_file)
            data = size; /* the new backing file may share nothing with the source */
        else if ((ret = data_size(src, cs, &data, err, errlen)) < 0)
            return ret;
    }
    if (o->preallocation == QCOW2_PREALLOC_FULL || o->preallocation == QCOW2_PREALLOC_FALLOC)
        data = size;
    r->fully_allocated = prealloc_size(size, cs, o->refcount_bits, o->extended_l2);
    r->required = r->fully_allocated - size + data;
    r->has_bitmaps = o->version >= 3 && src && src->format == QCOW2_FORMAT_QCOW2 &&
                     src->hdr.version >= 3;
    if (r->has_bitmaps)
        return bitmaps_size(src, cs, &r->bitmaps, err, errlen);
    return 0;
}

int qcow2_measure(struct qcow2_image *src, const struct qcow2_create_opts *target,
                  struct qcow2_measure_result *res, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!target || !res)
        return format_error(err, errlen, -EINVAL, "no target options or result given");
    struct qcow2_create_opts o;
    int ret = create_opts_copy_in(&o, target, err, errlen);
    if (ret < 0)
        return ret;
    struct qcow2_measure_result r;
    ret = abi_copy_in(&abi_measure_result, &r, res, err, errlen);
    if (ret < 0)
        return ret;
    memset(&r, 0, sizeof(r));
    r.struct_size = sizeof(r);

    switch (o.format) {
    case QCOW2_FORMAT_RAW: {
        /* Every byte counts in a raw file, allocated or not; sizes are whole sectors. */
        uint64_t size = src ? qcow2_get_size(src) : o.size;
        if (size > UINT64_MAX - MEASURE_SECTOR)
            return format_error(err, errlen, -EFBIG, "image size %llu is too large",
                                (unsigned long long)size);
        r.required = r.fully_allocated = ROUND_UP(size, MEASURE_SECTOR);
        break;
    }
    case QCOW2_FORMAT_QCOW2:
        ret = measure_qcow2(src, &o, &r, err, errlen);
        break;
    default:
        ret = format_error(err, errlen, -EINVAL, "unknown image format %d", (int)o.format);
    }
    if (ret == 0)
        abi_copy_out(&abi_measure_result, res, &r);
    return ret;
}
