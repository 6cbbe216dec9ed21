/* header.c - cluster 0: the fixed header, header extensions and the backing file name.
 * Pure functions over byte buffers: parse with every length and range checked before use,
 * serialize in QEMU's extension order. Does no I/O; image.c reads and writes the cluster. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every feature bit we know, in the order of the feature name table QEMU writes (which is
 * also ours). Two separate facts per bit: `parsed`, we read images that have it set, and
 * `maintained`, our writes keep what it promises true. */
static const struct qcow2_feature features[] = {
    /* Set while lazy refcounts are stale; repaired on a writable open, cleared on close. */
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, 0, "dirty bit", true, true},
    /* Set when we find corruption; writable opens are refused until a repair clears it. */
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, 1, "corrupt bit", true, true},
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, 2, "external data file", true, true},
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, 3, "compression type", true, true},
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, 4, "extended L2 entries", true, true},
    {QCOW2_FEAT_TYPE_COMPATIBLE, 0, "lazy refcounts", true, true},
    /* bitmap.c loads, marks and stores the bitmaps (in_use while open for writing). */
    {QCOW2_FEAT_TYPE_AUTOCLEAR, 0, "bitmaps", true, true},
    /* Our writes, zero writes and discards keep the data file a valid raw image. */
    {QCOW2_FEAT_TYPE_AUTOCLEAR, 1, "raw external data", true, true},
};
#define NB_FEATURES (sizeof(features) / sizeof(features[0]))

const struct qcow2_feature *header_feature(int type, int bit)
{
    for (size_t i = 0; i < NB_FEATURES; i++)
        if (features[i].type == type && features[i].bit == bit)
            return &features[i];
    return NULL;
}

uint64_t header_feature_mask(int type, bool maintained)
{
    uint64_t mask = 0;
    for (size_t i = 0; i < NB_FEATURES; i++)
        if (features[i].type == type && features[i].parsed &&
            (features[i].maintained || !maintained))
            mask |= 1ull << features[i].bit;
    return mask;
}

int header_parse_fixed(const uint8_t *buf, size_t len, struct qcow2_header *h, char *err,
                       size_t errlen)
{
    memset(h, 0, sizeof(*h));
    if (len < QCOW2_V2_HEADER_LENGTH)
        return format_error(err, errlen, -EINVAL, "file too short for a qcow2 header");
    if (be32_get(buf + HDR_MAGIC) != QCOW2_MAGIC)
        return format_error(err, errlen, -EINVAL, "not a qcow2 image (bad magic)");
    h->version = be32_get(buf + HDR_VERSION);
    if (h->version != 2 && h->version != 3)
        return format_error(err, errlen, -ENOTSUP, "unsupported qcow2 version %u",
                            h->version);
    h->backing_file_offset = be64_get(buf + HDR_BACKING_FILE_OFFSET);
    h->backing_file_size = be32_get(buf + HDR_BACKING_FILE_SIZE);
    h->cluster_bits = be32_get(buf + HDR_CLUSTER_BITS);
    h->size = be64_get(buf + HDR_SIZE);
    h->crypt_method = be32_get(buf + HDR_CRYPT_METHOD);
    h->l1_size = be32_get(buf + HDR_L1_SIZE);
    h->l1_table_offset = be64_get(buf + HDR_L1_TABLE_OFFSET);
    h->refcount_table_offset = be64_get(buf + HDR_REFCOUNT_TABLE_OFFSET);
    h->refcount_table_clusters = be32_get(buf + HDR_REFCOUNT_TABLE_CLUSTERS);
    h->nb_snapshots = be32_get(buf + HDR_NB_SNAPSHOTS);
    h->snapshots_offset = be64_get(buf + HDR_SNAPSHOTS_OFFSET);

    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return format_error(err, errlen, -EINVAL,
                            "unsupported cluster size: 2^%u (cluster_bits must be %d..%d)",
                            h->cluster_bits, QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);

    if (h->version == 2) {
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LENGTH;
        return 0;
    }
    if (len < QCOW2_V3_HEADER_MIN_LENGTH)
        return format_error(err, errlen, -EINVAL, "file too short for a qcow2 v3 header");
    h->incompatible_features = be64_get(buf + HDR_INCOMPATIBLE_FEATURES);
    h->compatible_features = be64_get(buf + HDR_COMPATIBLE_FEATURES);
    h->autoclear_features = be64_get(buf + HDR_AUTOCLEAR_FEATURES);
    h->refcount_order = be32_get(buf + HDR_REFCOUNT_ORDER);
    h->header_length = be32_get(buf + HDR_HEADER_LENGTH);
    if (h->refcount_order > 6)
        return format_error(err, errlen, -EINVAL, "refcount_order %u is out of range (0..6)",
                            h->refcount_order);
    if (h->header_length < QCOW2_V3_HEADER_MIN_LENGTH)
        return format_error(err, errlen, -EINVAL,
                            "header_length %u is too small (v3 needs at least %d)",
                            h->header_length, QCOW2_V3_HEADER_MIN_LENGTH);
    if (h->header_length > (1u << h->cluster_bits))
        return format_error(err, errlen, -EINVAL, "header_length %u exceeds the cluster size",
                            h->header_length);
    if (h->header_length > QCOW2_V3_HEADER_MIN_LENGTH) {
        if (len <= HDR_COMPRESSION_TYPE)
            return format_error(err, errlen, -EINVAL, "file too short for its header_length");
        h->compression_type = buf[HDR_COMPRESSION_TYPE];
    }
    return 0;
}

static int add_unknown_ext(struct qcow2_header *h, uint32_t type, uint32_t len,
                           const uint8_t *data)
{
    struct qcow2_unknown_ext *n =
        realloc(h->unknown_exts, sizeof(*n) * (h->nb_unknown_exts + 1));
    if (!n)
        return -ENOMEM;
    h->unknown_exts = n;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, data, len);
    n[h->nb_unknown_exts++] = (struct qcow2_unknown_ext){.type = type, .len = len, .data = copy};
    return 0;
}

static char *dup_string(const uint8_t *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

static int parse_feature_table(struct qcow2_header *h, const uint8_t *p, uint32_t len)
{
    unsigned n = len / QCOW2_FEATURE_NAME_ENTRY_SIZE;
    free(h->features);
    h->features = calloc(n ? n : 1, sizeof(*h->features));
    if (!h->features)
        return -ENOMEM;
    h->nb_features = n;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *e = p + i * QCOW2_FEATURE_NAME_ENTRY_SIZE;
        h->features[i].type = e[0];
        h->features[i].bit = e[1];
        memcpy(h->features[i].name, e + 2, QCOW2_FEATURE_NAME_LEN);
        h->features[i].name[QCOW2_FEATURE_NAME_LEN] = '\0';
    }
    return 0;
}

static int parse_one_ext(struct qcow2_header *h, uint32_t type, uint32_t len,
                         const uint8_t *data, char *err, size_t errlen)
{
    switch (type) {
    case QCOW2_EXT_BACKING_FORMAT:
        if (len > QCOW2_MAX_BACKING_FMT_LEN)
            return format_error(err, errlen, -EINVAL, "backing format name too long (%u)", len);
        free(h->backing_fmt);
        h->backing_fmt = dup_string(data, len);
        return h->backing_fmt ? 0 : -ENOMEM;
    case QCOW2_EXT_FEATURE_TABLE:
        return parse_feature_table(h, data, len);
    case QCOW2_EXT_BITMAPS:
        if (len != 24)
            return format_error(err, errlen, -EINVAL,
                                "bitmaps extension has length %u (expected 24)", len);
        h->has_bitmaps_ext = true;
        h->nb_bitmaps = be32_get(data);
        h->bitmap_directory_size = be64_get(data + 8);
        h->bitmap_directory_offset = be64_get(data + 16);
        return 0;
    case QCOW2_EXT_CRYPTO_HEADER:
        if (len != 16)
            return format_error(err, errlen, -EINVAL,
                                "encryption header extension has length %u (expected 16)",
                                len);
        h->has_crypto_ext = true;
        h->crypto_offset = be64_get(data);
        h->crypto_length = be64_get(data + 8);
        return 0;
    case QCOW2_EXT_DATA_FILE:
        free(h->data_file);
        h->data_file = dup_string(data, len);
        return h->data_file ? 0 : -ENOMEM;
    default:
        return add_unknown_ext(h, type, len, data);
    }
}

int header_parse_extensions(const uint8_t *c0, size_t cluster_size, struct qcow2_header *h,
                            char *err, size_t errlen)
{
    /* Unknown header fields past the ones we know are kept for rewrite. */
    if (h->version >= 3 && h->header_length > QCOW2_V3_HEADER_LENGTH) {
        h->unknown_fields_len = h->header_length - QCOW2_V3_HEADER_LENGTH;
        h->unknown_fields = malloc(h->unknown_fields_len);
        if (!h->unknown_fields)
            return -ENOMEM;
        memcpy(h->unknown_fields, c0 + QCOW2_V3_HEADER_LENGTH, h->unknown_fields_len);
    }

    /* Extensions end at the backing file name if there is one, else at the cluster end. */
    uint64_t ext_end = cluster_size;
    if (h->backing_file_offset) {
        if (h->backing_file_offset > cluster_size)
            return format_error(err, errlen, -EINVAL,
                                "backing file name offset 0x%llx is outside the first cluster",
                                (unsigned long long)h->backing_file_offset);
        ext_end = h->backing_file_offset;
    }
    uint64_t off = h->header_length;
    while (off + 8 <= ext_end) {
        uint32_t type = be32_get(c0 + off);
        uint32_t len = be32_get(c0 + off + 4);
        off += 8;
        if (type == QCOW2_EXT_END)
            break;
        if (len > ext_end - off)
            return format_error(err, errlen, -EINVAL,
                                "header extension 0x%08x too large (%u bytes)", type, len);
        int ret = parse_one_ext(h, type, len, c0 + off, err, errlen);
        if (ret < 0)
            return ret == -ENOMEM ? format_error(err, errlen, ret, "out of memory") : ret;
        off += ROUND_UP((uint64_t)len, 8);
    }

    if (h->backing_file_offset) {
        if (h->backing_file_size > QCOW2_MAX_BACKING_FILE_SIZE ||
            h->backing_file_size > cluster_size - h->backing_file_offset)
            return format_error(err, errlen, -EINVAL, "backing file name too long (%u bytes)",
                                h->backing_file_size);
        h->backing_file = dup_string(c0 + h->backing_file_offset, h->backing_file_size);
        if (!h->backing_file)
            return format_error(err, errlen, -ENOMEM, "out of memory");
    } else {
        /* A format without a file (left by a backing file removed in one sector write,
         * header_write.c) names nothing. */
        free(h->backing_fmt);
        h->backing_fmt = NULL;
    }
    return 0;
}

const char *header_feature_name(const struct qcow2_header *h, int type, int bit)
{
    for (unsigned i = 0; i < h->nb_features; i++)
        if (h->features[i].type == type && h->features[i].bit == bit && h->features[i].name[0])
            return h->features[i].name;
    const struct qcow2_feature *f = header_feature(type, bit);
    return f ? f->name : NULL;
}

int header_set_default_feature_table(struct qcow2_header *h)
{
    free(h->features);
    h->features = calloc(NB_FEATURES, sizeof(*h->features));
    if (!h->features)
        return -ENOMEM;
    for (size_t i = 0; i < NB_FEATURES; i++) {
        h->features[i].type = features[i].type;
        h->features[i].bit = features[i].bit;
        snprintf(h->features[i].name, sizeof(h->features[i].name), "%s", features[i].name);
    }
    h->nb_features = NB_FEATURES;
    return 0;
}

/* Appends one extension at *off; fails with -ENOSPC when it would not fit. */
static int put_ext(uint8_t *c0, size_t end, size_t *off, uint32_t type, const void *data,
                   uint32_t len)
{
    size_t need = 8 + ROUND_UP((size_t)len, 8);
    if (*off + need > end)
        return -ENOSPC;
    be32_put(c0 + *off, type);
    be32_put(c0 + *off + 4, len);
    if (len)
        memcpy(c0 + *off + 8, data, len);
    *off += need; /* the padding is already zero */
    return 0;
}

static int put_exts(const struct qcow2_header *h, uint8_t *c0, size_t end, size_t *off)
{
    int ret = 0;
    if (h->backing_fmt)
        ret = put_ext(c0, end, off, QCOW2_EXT_BACKING_FORMAT, h->backing_fmt,
                      (uint32_t)strlen(h->backing_fmt));
    if (!ret && h->data_file)
        ret = put_ext(c0, end, off, QCOW2_EXT_DATA_FILE, h->data_file,
                      (uint32_t)strlen(h->data_file));
    if (!ret && h->has_crypto_ext) {
        uint8_t b[16];
        be64_put(b, h->crypto_offset);
        be64_put(b + 8, h->crypto_length);
        ret = put_ext(c0, end, off, QCOW2_EXT_CRYPTO_HEADER, b, sizeof(b));
    }
    if (!ret && h->version >= 3 && h->nb_features) {
        size_t len = (size_t)h->nb_features * QCOW2_FEATURE_NAME_ENTRY_SIZE;
        uint8_t *t = calloc(1, len);
        if (!t)
            return -ENOMEM;
        for (unsigned i = 0; i < h->nb_features; i++) {
            uint8_t *e = t + (size_t)i * QCOW2_FEATURE_NAME_ENTRY_SIZE;
            e[0] = h->features[i].type;
            e[1] = h->features[i].bit;
            memcpy(e + 2, h->features[i].name, strnlen(h->features[i].name,
                                                       QCOW2_FEATURE_NAME_LEN));
        }
        ret = put_ext(c0, end, off, QCOW2_EXT_FEATURE_TABLE, t, (uint32_t)len);
        free(t);
    }
    if (!ret && h->has_bitmaps_ext) {
        uint8_t b[24] = {0};
        be32_put(b, h->nb_bitmaps);
        be64_put(b + 8, h->bitmap_directory_size);
        be64_put(b + 16, h->bitmap_directory_offset);
        ret = put_ext(c0, end, off, QCOW2_EXT_BITMAPS, b, sizeof(b));
    }
    for (unsigned i = 0; !ret && i < h->nb_unknown_exts; i++)
        ret = put_ext(c0, end, off, h->unknown_exts[i].type, h->unknown_exts[i].data,
                      h->unknown_exts[i].len);
    if (!ret)
        ret = put_ext(c0, end, off, QCOW2_EXT_END, NULL, 0);
    return ret;
}

static void put_fixed(const struct qcow2_header *h, uint8_t *c0)
{
    be32_put(c0 + HDR_MAGIC, QCOW2_MAGIC);
    be32_put(c0 + HDR_VERSION, h->version);
    be64_put(c0 + HDR_BACKING_FILE_OFFSET, h->backing_file_offset);
    be32_put(c0 + HDR_BACKING_FILE_SIZE, h->backing_file_size);
    be32_put(c0 + HDR_CLUSTER_BITS, h->cluster_bits);
    be64_put(c0 + HDR_SIZE, h->size);
    be32_put(c0 + HDR_CRYPT_METHOD, h->crypt_method);
    be32_put(c0 + HDR_L1_SIZE, h->l1_size);
    be64_put(c0 + HDR_L1_TABLE_OFFSET, h->l1_table_offset);
    be64_put(c0 + HDR_REFCOUNT_TABLE_OFFSET, h->refcount_table_offset);
    be32_put(c0 + HDR_REFCOUNT_TABLE_CLUSTERS, h->refcount_table_clusters);
    be32_put(c0 + HDR_NB_SNAPSHOTS, h->nb_snapshots);
    be64_put(c0 + HDR_SNAPSHOTS_OFFSET, h->snapshots_offset);
    if (h->version < 3)
        return;
    be64_put(c0 + HDR_INCOMPATIBLE_FEATURES, h->incompatible_features);
    be64_put(c0 + HDR_COMPATIBLE_FEATURES, h->compatible_features);
    be64_put(c0 + HDR_AUTOCLEAR_FEATURES, h->autoclear_features);
    be32_put(c0 + HDR_REFCOUNT_ORDER, h->refcount_order);
    be32_put(c0 + HDR_HEADER_LENGTH, h->header_length);
    c0[HDR_COMPRESSION_TYPE] = h->compression_type;
    if (h->unknown_fields_len)
        memcpy(c0 + QCOW2_V3_HEADER_LENGTH, h->unknown_fields, h->unknown_fields_len);
}

int header_serialize(struct qcow2_header *h, uint8_t *c0, size_t cluster_size, char *err,
                     size_t errlen)
{
    memset(c0, 0, cluster_size);
    if (h->version >= 3)
        h->header_length = QCOW2_V3_HEADER_LENGTH + h->unknown_fields_len;
    else
        h->header_length = QCOW2_V2_HEADER_LENGTH;
    size_t off = h->header_length;
    if (off > cluster_size)
        return format_error(err, errlen, -ENOSPC, "header does not fit in one cluster");
    int ret = put_exts(h, c0, cluster_size, &off);
    if (ret == -ENOSPC)
        return format_error(err, errlen, ret, "header extensions do not fit in one cluster");
    if (ret < 0)
        return format_error(err, errlen, ret, "out of memory");
    h->backing_file_offset = 0;
    h->backing_file_size = 0;
    if (h->backing_file) {
        size_t len = strlen(h->backing_file);
        if (len > QCOW2_MAX_BACKING_FILE_SIZE || off + len > cluster_size)
            return format_error(err, errlen, -ENOSPC,
                                "backing file name does not fit in the header cluster");
        memcpy(c0 + off, h->backing_file, len);
        h->backing_file_offset = off;
        h->backing_file_size = (uint32_t)len;
    }
    put_fixed(h, c0);
    return 0;
}

void header_free(struct qcow2_header *h)
{
    free(h->unknown_fields);
    free(h->backing_file);
    free(h->backing_fmt);
    free(h->data_file);
    free(h->features);
    for (unsigned i = 0; i < h->nb_unknown_exts; i++)
        free(h->unknown_exts[i].data);
    free(h->unknown_exts);
    memset(h, 0, sizeof(*h));
}
