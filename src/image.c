/* image.c - opening and closing images: header validation, feature gating, geometry, the
 * backing chain and the external data file; raw images as a trivial format; info. Calls
 * header.c to parse, header_write.c for header updates, file.c for I/O, cache.c and
 * refcount.c to set up the metadata layers, check.c to repair a dirty image. Does no guest
 * data I/O (io.c does). */
#include "internal.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PROBE_BYTES 512



char *image_resolve_path(const char *image_path, const char *name)
{
    if (name[0] == '/' || !strchr(image_path, '/'))
        return strdup(name);
    char *copy = strdup(image_path);
    if (!copy)
        return NULL;
    char *dir = dirname(copy);
    char *out = NULL;
    if (asprintf(&out, "%s/%s", dir, name) < 0)
        out = NULL;
    free(copy);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* Confinement and limits (qcow2.h, "Untrusted images"). */

static void set_limits(struct qcow2_image *img)
{
    bool u = img->opts.untrusted != 0;
    struct image_limits *l = &img->limits;
    l->l1_bytes = u ? QCOW2_UNTRUSTED_MAX_L1_BYTES : QCOW2_MAX_L1_BYTES;
    l->reftable_bytes = u ? QCOW2_UNTRUSTED_MAX_REFTABLE_BYTES : QCOW2_MAX_REFTABLE_BYTES;
    l->snapshots = u ? QCOW2_UNTRUSTED_MAX_SNAPSHOTS : QCOW2_MAX_SNAPSHOTS;
    l->bitmaps = u ? QCOW2_UNTRUSTED_MAX_BITMAPS : QCOW2_MAX_BITMAPS;
    l->bitmap_directory_bytes =
        u ? QCOW2_UNTRUSTED_MAX_BITMAP_DIRECTORY_SIZE : QCOW2_MAX_BITMAP_DIRECTORY_SIZE;
    l->unknown_exts = u ? QCOW2_UNTRUSTED_MAX_UNKNOWN_EXTS : UINT32_MAX;
    l->chain_depth = u ? QCOW2_UNTRUSTED_CHAIN_DEPTH : QCOW2_DEFAULT_CHAIN_DEPTH;
    if (img->opts.max_chain_depth && (!u || img->opts.max_chain_depth < l->chain_depth))
        l->chain_depth = img->opts.max_chain_depth;
}

/* The directory of `path` relative to `dir` (both as the kernel resolves them: the caller
 * named both), "." for `dir` itself, or NULL when it lies outside. */
static char *dir_relative_to(const char *path, const char *dir)
{
    char *copy = strdup(path);
    char *real_dir = realpath(dir, NULL);
    char *real_img = copy ? realpath(dirname(copy), NULL) : NULL;
    char *rel = NULL;
    if (real_dir && real_img) {
        size_t n = strcmp(real_dir, "/") == 0 ? 0 : strlen(real_dir);
        if (strcmp(real_img, real_dir) == 0)
            rel = strdup(".");
        else if (strncmp(real_img, real_dir, n) == 0 && real_img[n] == '/')
            rel = strdup(real_img + n + 1);
    }
    free(copy);
    free(real_dir);
    free(real_img);
    return rel;
}

/* The image's confinement: the allowed directory (opts.allowed_dir, or for confine_paths
 * the top image's own directory) and where the image lies in it: for the top image as the
 * kernel resolves its name, for a backing image `base`, the directory of the name it was
 * reached by. */
static int setup_confinement(struct qcow2_image *img, const char *path, const char *base,
                             char *err, size_t errlen)
{
    const char *dir = img->opts.allowed_dir;
    char *own = NULL;
    img->opts.allowed_dir = NULL; /* the caller's string need not outlive the call */
    if (!dir && img->opts.confine_paths && img->chain_depth == 0) {
        char *copy = strdup(path);
        own = copy ? strdup(dirname(copy)) : NULL;
        free(copy);
        if (!own)
            return format_error(err, errlen, -ENOMEM, "%s: out of memory", path);
        dir = own;
    }
    if (!dir)
        return 0;
    img->allowed_dir = own ? own : strdup(dir);
    if (!img->allowed_dir)
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", path);
    img->opts.allowed_dir = img->allowed_dir;
    /* NULL: the image lies outside, and may name no file */
    img->confine_base = img->chain_depth == 0 ? dir_relative_to(path, dir)
                        : base                ? strdup(base)
                                              : NULL;
    return 0;
}

/* Is the image confined (its backing and data files opened only beneath a directory)? */
static bool is_confined(const struct qcow2_image *img)
{
    return img->allowed_dir || img->opts.untrusted;
}

/* `name` (a backing or data file, `what`) relative to the allowed directory, or -EPERM with
 * the reason: untrusted without a directory, an absolute name, an image outside. */
static int confined_name(struct qcow2_image *img, const char *what, const char *name,
                         char **rel, char *err, size_t errlen)
{
    *rel = NULL;
    if (!img->allowed_dir)
        return format_error(err, errlen, -EPERM,
                            "%s: %s '%s' refused: untrusted images may name no other file "
                            "(no allowed directory given)",
                            img->filename, what, name);
    if (name[0] == '/' || !img->confine_base)
        return format_error(err, errlen, -EPERM,
                            "%s: %s '%s' is outside the allowed directory '%s'%s",
                            img->filename, what, name, img->allowed_dir,
                            name[0] == '/' ? " (an absolute name)"
                                           : " (the image itself lies outside it)");
    int n = strcmp(img->confine_base, ".") == 0
                ? asprintf(rel, "%s", name)
                : asprintf(rel, "%s/%s", img->confine_base, name);
    if (n < 0) {
        *rel = NULL;
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", img->filename);
    }
    return 0;
}

/* Open (or with FILE_PATH_ONLY just resolve and check) the file `name` the image names,
 * beneath the allowed directory. *rel gets its name relative to that directory. */
static int open_confined(struct qcow2_image *img, const char *what, const char *name,
                         unsigned flags, struct qcow2_file **out, char **rel, char *err,
                         size_t errlen)
{
    int ret = confined_name(img, what, name, rel, err, errlen);
    if (ret < 0)
        return ret;
    char msg[QCOW2_ERROR_MAX];
    ret = file_open_beneath(img->allowed_dir, *rel, flags, out, msg, sizeof(msg));
    if (ret < 0)
        return format_error(err, errlen, ret, "%s: %s '%s': %s", img->filename, what, name,
                            msg);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Opening. */

struct chain_seen {
    dev_t dev;
    ino_t ino;
    const struct chain_seen *child;
};

static int open_image(const char *path, const struct qcow2_open_opts *opts, unsigned depth,
                      const struct chain_seen *seen, struct qcow2_file *file,
                      const char *base, struct qcow2_image **out, char *err, size_t errlen);

static struct qcow2_image *image_alloc(const char *path)
{
    /* aligned: struct qcow2_image lays its lock out on a cache line of its own */
    struct qcow2_image *img = aligned_alloc(_Alignof(struct qcow2_image), sizeof(*img));
    if (!img)
        return NULL;
    memset(img, 0, sizeof(*img));
    img->filename = strdup(path);
    if (!img->filename) {
        free(img);
        return NULL;
    }
    pthread_mutex_init(&img->lock, NULL);
    pthread_mutex_init(&img->err_lock, NULL);
    pthread_cond_init(&img->inflight_cond, NULL);
    img->guard_slots_enabled = ~0ull;
    /* NULL on failure: compression then makes a context per call, slower but correct. */
    img->compress_cache = compress_cache_new();
    return img;
}

static void image_free(struct qcow2_image *img)
{
    if (!img)
        return;
    if (img->backing)
        qcow2_close(img->backing);
    cache_free(img->l2_cache);
    cache_free(img->refcount_cache);
    refcount_close(img);
    overlap_index_free(img);
    bitmap_close(img);
    snapshot_close(img);
    free(img->l1_table);
    if (img->data_file && img->data_file != img->file)
        file_close(img->data_file);
    file_close(img->file);
    header_free(&img->hdr);
    free(img->backing_path);
    free(img->allowed_dir);
    free(img->confine_base);
    compress_cache_free(img->compress_cache);
    pthread_mutex_destroy(&img->lock);
    pthread_mutex_destroy(&img->err_lock);
    pthread_cond_destroy(&img->inflight_cond);
    free(img->filename);
    free(img);
}

static int check_features(struct qcow2_image *img, char *err, size_t errlen)
{
    struct qcow2_header *h = &img->hdr;
    uint64_t unknown =
        h->incompatible_features & ~header_feature_mask(QCOW2_FEAT_TYPE_INCOMPATIBLE, false);
    /* An inspection reads no guest data: it describes what it cannot read (qcow2_get_info). */
    if (img->opts.inspect_only)
        unknown = 0;
    if (unknown) {
        int bit = __builtin_ctzll(unknown);
        const char *name = header_feature_name(h, QCOW2_FEAT_TYPE_INCOMPATIBLE, bit);
        if (name)
            return format_error(err, errlen, -ENOTSUP,
                                "%s: unsupported feature: %s (incompatible bit %d)",
                                img->filename, name, bit);
        return format_error(err, errlen, -ENOTSUP,
                            "%s: unsupported feature: incompatible bit %d", img->filename, bit);
    }
    /* One we read but whose promise our writes would break: reading is all we can do. */
    uint64_t unmaintained =
        h->incompatible_features & ~header_feature_mask(QCOW2_FEAT_TYPE_INCOMPATIBLE, true);
    if (unmaintained && !img->read_only) {
        int bit = __builtin_ctzll(unmaintained);
        return format_error(err, errlen, -ENOTSUP,
                            "%s: feature '%s' (incompatible bit %d) is supported read-only; "
                            "open the image read-only",
                            img->filename,
                            header_feature_name(h, QCOW2_FEAT_TYPE_INCOMPATIBLE, bit), bit);
    }
    if (h->crypt_method != QCOW2_CRYPT_NONE && !img->opts.inspect_only)
        return format_error(err, errlen, -ENOTSUP,
                            "%s: encrypted images are not supported yet (%s encryption)",
                            img->filename,
                            h->crypt_method == QCOW2_CRYPT_AES    ? "AES"
                            : h->crypt_method == QCOW2_CRYPT_LUKS ? "LUKS"
                                                                  : "unknown");
    if (h->has_crypto_ext && h->crypt_method == QCOW2_CRYPT_NONE)
        return format_error(err, errlen, -EINVAL,
                            "%s: encryption header extension in an unencrypted image",
                            img->filename);
    bool ctype_bit = (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) != 0;
    if (h->compression_type > QCOW2_COMPRESSION_TYPE_ZSTD)
        return format_error(err, errlen, -ENOTSUP, "%s: unknown compression type %u",
                            img->filename, h->compression_type);
    if (ctype_bit != (h->compression_type != QCOW2_COMPRESSION_TYPE_ZLIB))
        return format_error(err, errlen, -EINVAL,
                            "%s: compression type %u does not match the compression type "
                            "feature bit",
                            img->filename, h->compression_type);
    if ((h->incompatible_features & QCOW2_INCOMPAT_EXTL2) &&
        h->cluster_bits < QCOW2_MIN_CLUSTER_BITS_EXTL2)
        return format_error(err, errlen, -EINVAL,
                            "%s: extended L2 entries need clusters of at least 16 KiB",
                            img->filename);
    if ((h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && !img->read_only &&
        !img->opts.repair)
        return format_error(err, errlen, -EACCES,
                            "%s: image is marked corrupt; open it read-only, or repair it "
                            "with 'qcow2 check -r all'",
                            img->filename);
    if (data_file_is_raw(img) && !has_data_file(img))
        return format_error(err, errlen, -EINVAL,
                            "%s: raw external data bit set without an external data file",
                            img->filename);
    return 0;
}

static void compute_geometry(struct qcow2_image *img)
{
    struct qcow2_header *h = &img->hdr;
    img->cluster_bits = h->cluster_bits;
    img->cluster_size = 1ull << h->cluster_bits;
    img->extended_l2 = (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) != 0;
    img->l2_entry_size = img->extended_l2 ? 16 : 8;
    img->l2_bits = img->cluster_bits - (img->extended_l2 ? 4 : 3);
    img->l2_size = 1ull << img->l2_bits;
    img->subclusters_per_cluster = img->extended_l2 ? QCOW2_SUBCLUSTERS_PER_CLUSTER : 1;
    img->subcluster_bits = img->cluster_bits - (img->extended_l2 ? 5 : 0);
    img->subcluster_size = 1ull << img->subcluster_bits;
    refcount_set_order(img, h->refcount_order);
    img->csize_shift = 62 - (img->cluster_bits - 8);
    img->csize_mask = (1ull << (img->cluster_bits - 8)) - 1;
    img->cluster_offset_mask = (1ull << img->csize_shift) - 1;
    img->size = h->size;
}

/* Is the table at [offset, offset+len) cluster aligned, with an end a 64-bit file offset can
 * express? Every open refuses it otherwise, as QEMU's do (even its opens for check). */
static int check_table_offset(struct qcow2_image *img, const char *what, uint64_t offset,
                              uint64_t len, char *err, size_t errlen)
{
    if (offset & (img->cluster_size - 1))
        return format_error(err, errlen, -EINVAL,
                            "%s: %s offset 0x%llx is not cluster aligned", img->filename, what,
                            (unsigned long long)offset);
    if (offset > INT64_MAX || len > INT64_MAX - offset)
        return format_error(err, errlen, -EINVAL, "%s: %s offset 0x%llx is invalid",
                            img->filename, what, (unsigned long long)offset);
    return 0;
}

/* Does the table at [offset, offset+len) lie inside a file of `file_size` bytes, clear of
 * the header? */
static int check_table_place(struct qcow2_image *img, const char *what, uint64_t offset,
                             uint64_t len, int64_t file_size, char *err, size_t errlen)
{
    if (offset == 0 && len > 0)
        return format_error(err, errlen, -EINVAL, "%s: %s overlaps the header", img->filename,
                            what);
    if (offset > (uint64_t)file_size || len > (uint64_t)file_size - offset)
        return format_error(err, errlen, -EINVAL,
                            "%s: %s at 0x%llx (%llu bytes) lies past the end of the file",
                            img->filename, what, (unsigned long long)offset,
                            (unsigned long long)len);
    return 0;
}

/* Damage that an ordinary open refuses but an open for check accepts, so that qcow2_check
 * can describe it (as QEMU's BDRV_O_CHECK opens do): a table overlapping the header or past
 * the end of the file (read there as zeros), no refcount table, a broken snapshot table. */
static int layout_damage(struct qcow2_image *img, int ret, char *err, size_t errlen)
{
    if (ret < 0 && img->opts.repair) {
        img->layout_damaged = true;
        if (err && errlen)
            err[0] = '\0';
        return 0;
    }
    return ret;
}

/* " in untrusted mode" after a limit that untrusted mode lowered. */
static const char *untrusted_note(const struct qcow2_image *img)
{
    return img->opts.untrusted ? " in untrusted mode" : "";
}

static int check_snapshot_table(struct qcow2_image *img, int64_t fsize, char *err,
                                size_t errlen)
{
    struct qcow2_header *h = &img->hdr;
    if (h->nb_snapshots > img->limits.snapshots)
        return format_error(err, errlen, -EFBIG, "%s: too many snapshots (%u, at most %u%s)",
                            img->filename, h->nb_snapshots, img->limits.snapshots,
                            untrusted_note(img));
    if (h->nb_snapshots == 0)
        return 0;
    uint64_t len = (uint64_t)h->nb_snapshots * QCOW2_SNAPSHOT_HEADER_SIZE;
    int ret = check_table_offset(img, "snapshot table", h->snapshots_offset, len, err, errlen);
    if (ret == 0)
        ret = check_table_place(img, "snapshot table", h->snapshots_offset, len, fsize, err,
                                errlen);
    return ret;
}

/* The bitmap directory and the header extensions: what a later reader of them (bitmaps) would
 * allocate is bounded here, at open, as QEMU bounds it (qcow2_read_extensions). */
static int check_header_bounds(struct qcow2_image *img, char *err, size_t errlen)
{
    const struct qcow2_header *h = &img->hdr;
    if (h->has_bitmaps_ext && h->nb_bitmaps > img->limits.bitmaps)
        return format_error(err, errlen, -EFBIG, "%s: too many bitmaps (%u, at most %u%s)",
                            img->filename, h->nb_bitmaps, img->limits.bitmaps,
                            untrusted_note(img));
    if (h->has_bitmaps_ext && h->bitmap_directory_size > img->limits.bitmap_directory_bytes)
        return format_error(err, errlen, -EFBIG,
                            "%s: bitmap directory is too large (%llu bytes, at most %llu%s)",
                            img->filename, (unsigned long long)h->bitmap_directory_size,
                            (unsigned long long)img->limits.bitmap_directory_bytes,
                            untrusted_note(img));
    /* (the snapshot table's own checks let an open for check through; this bound does not) */
    if (img->opts.untrusted && h->nb_snapshots > img->limits.snapshots)
        return format_error(err, errlen, -EFBIG, "%s: too many snapshots (%u, at most %u%s)",
                            img->filename, h->nb_snapshots, img->limits.snapshots,
                            untrusted_note(img));
    if (h->nb_unknown_exts > img->limits.unknown_exts)
        return format_error(err, errlen, -EFBIG,
                            "%s: too many unknown header extensions (%u, at most %u%s)",
                            img->filename, h->nb_unknown_exts, img->limits.unknown_exts,
                            untrusted_note(img));
    return 0;
}

static int check_layout(struct qcow2_image *img, char *err, size_t errlen)
{
    struct qcow2_header *h = &img->hdr;
    int ret;
    int64_t fsize = file_size(img->file);
    if (fsize < 0)
        return format_error(err, errlen, (int)fsize, "%s: cannot get the file size",
                            img->filename);
    if (h->size > (1ull << 62))
        return format_error(err, errlen, -EFBIG, "%s: virtual size %llu is too large",
                            img->filename, (unsigned long long)h->size);
    if ((uint64_t)h->l1_size * 8 > img->limits.l1_bytes)
        return format_error(err, errlen, -EFBIG,
                            "%s: L1 table is too large (%u entries, at most %llu%s)",
                            img->filename, h->l1_size,
                            (unsigned long long)img->limits.l1_bytes / 8, untrusted_note(img));
    if (h->l1_size < size_to_l1(img, h->size))
        return format_error(err, errlen, -EINVAL,
                            "%s: L1 table is too small (%u entries) for virtual size %llu",
                            img->filename, h->l1_size, (unsigned long long)h->size);
    uint64_t l1_bytes = (uint64_t)h->l1_size * 8;
    ret = check_table_offset(img, "L1 table", h->l1_table_offset, l1_bytes, err, errlen);
    if (ret == 0 && h->l1_size)
        ret = layout_damage(img, check_table_place(img, "L1 table", h->l1_table_offset,
                                                   l1_bytes, fsize, err, errlen),
                            err, errlen);
    if (ret < 0)
        return ret;
    if ((uint64_t)h->refcount_table_clusters << img->cluster_bits > img->limits.reftable_bytes)
        return format_error(err, errlen, -EFBIG,
                            "%s: refcount table is too large (%u clusters, at most %llu bytes%s)",
                            img->filename, h->refcount_table_clusters,
                            (unsigned long long)img->limits.reftable_bytes, untrusted_note(img));
    if ((ret = check_header_bounds(img, err, errlen)) < 0)
        return ret;
    uint64_t rt_bytes = (uint64_t)h->refcount_table_clusters << img->cluster_bits;
    ret = check_table_offset(img, "refcount table", h->refcount_table_offset, rt_bytes, err,
                             errlen);
    if (ret < 0)
        return ret;
    if (h->refcount_table_clusters == 0)
        ret = layout_damage(img, format_error(err, errlen, -EINVAL,
                                              "%s: refcount table has no clusters",
                                              img->filename),
                            err, errlen);
    else
        ret = layout_damage(img, check_table_place(img, "refcount table",
                                                   h->refcount_table_offset, rt_bytes, fsize,
                                                   err, errlen),
                            err, errlen);
    if (ret < 0)
        return ret;
    /* A check reads the snapshot table itself and reports what is wrong with it. */
    return layout_damage(img, check_snapshot_table(img, fsize, err, errlen), err, errlen);
}

static int load_l1_table(struct qcow2_image *img, char *err, size_t errlen)
{
    img->l1_size = img->hdr.l1_size;
    if (img->l1_size == 0)
        return 0;
    size_t bytes = (size_t)img->l1_size * 8;
    img->l1_table = malloc(bytes);
    if (!img->l1_table)
        return format_error(err, errlen, -ENOMEM, "%s: out of memory for the L1 table",
                            img->filename);
    int ret = file_pread(img->file, img->l1_table, bytes, img->hdr.l1_table_offset);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s: reading the L1 table failed: %s",
                            img->filename, strerror(-ret));
    for (uint32_t i = 0; i < img->l1_size; i++)
        img->l1_table[i] = be64_get(&img->l1_table[i]);
    return 0;
}

static int setup_caches(struct qcow2_image *img, char *err, size_t errlen)
{
    /* Enough L2 to map the whole disk, bounded by the option or 32 MiB. */
    uint64_t whole = ROUND_UP(size_to_clusters(img, img->size) * img->l2_entry_size,
                              img->cluster_size);
    uint64_t want = img->opts.l2_cache_size ? img->opts.l2_cache_size
                                            : MIN(whole, QCOW2_DEFAULT_L2_CACHE_MAX);
    uint64_t slice_bytes = want >= whole ? img->cluster_size : MIN(img->cluster_size, 4096);
    uint64_t n = MAX(want / slice_bytes, 16);
    img->l2_slice_size = slice_bytes / img->l2_entry_size;
    img->l2_slice_bits = (unsigned)__builtin_ctzll(img->l2_slice_size);
    img->l2_cache = cache_new(img, "L2 table", slice_bytes, (unsigned)MIN(n, 1u << 20));
    img->refcount_cache =
        cache_new(img, "refcount block", img->cluster_size, QCOW2_REFCOUNT_CACHE_MIN_ENTRIES * 4);
    if (!img->l2_cache || !img->refcount_cache)
        return format_error(err, errlen, -ENOMEM, "%s: out of memory for the caches",
                            img->filename);
    cache_set_overlap_ignore(img->l2_cache, OVERLAP_L2);
    cache_set_overlap_ignore(img->refcount_cache, OVERLAP_REFCOUNT_BLOCK);
    return 0;
}

/* An inspect_only open resolves the names the image gives but leaves a file that is not there
 * alone: a missing file inside the allowed directory reads nothing outside. */
static int inspect_tolerates(struct qcow2_image *img, int ret, char *err, size_t errlen)
{
    if (ret == -ENOENT && img->opts.inspect_only) {
        if (err && errlen)
            err[0] = '\0';
        return 0;
    }
    return ret;
}

static int open_data_file(struct qcow2_image *img, char *err, size_t errlen)
{
    img->data_file = img->file;
    if (!has_data_file(img))
        return 0;
    const char *name = img->hdr.data_file;
    if (!name)
        return format_error(err, errlen, -EINVAL,
                            "%s: image needs an external data file but names none",
                            img->filename);
    if (is_confined(img)) {
        struct qcow2_file *f = NULL;
        char *rel = NULL;
        unsigned flags = (img->read_only ? FILE_READ_ONLY : 0) |
                         (img->opts.inspect_only ? FILE_PATH_ONLY : 0);
        int ret = open_confined(img, "data file", name, flags, &f, &rel, err, errlen);
        free(rel);
        if (f)
            img->data_file = f;
        return inspect_tolerates(img, ret, err, errlen);
    }
    if (img->opts.inspect_only)
        return 0; /* guest I/O is refused (io.c): the data file is never needed */
    char *path = image_resolve_path(img->filename, name);
    if (!path)
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", img->filename);
    char msg[QCOW2_ERROR_MAX];
    int ret = file_open(path, img->read_only, false, &img->data_file, msg, sizeof(msg));
    free(path);
    if (ret < 0) {
        img->data_file = img->file;
        return format_error(err, errlen, ret, "%s: external data file: %s", img->filename,
                            msg);
    }
    return 0;
}

static enum qcow2_format format_by_name(const char *name)
{
    if (!name)
        return QCOW2_FORMAT_PROBE;
    if (strcmp(name, "qcow2") == 0)
        return QCOW2_FORMAT_QCOW2;
    if (strcmp(name, "raw") == 0)
        return QCOW2_FORMAT_RAW;
    return (enum qcow2_format)-1;
}

/* The backing file of a confined image: resolved (and opened, unless no_backing) beneath the
 * allowed directory. Stores its display path in img->backing_path, the open file in *file
 * (NULL with no_backing) and in *base the directory it was named from, for its own names. */
static int resolve_backing_confined(struct qcow2_image *img, struct qcow2_file **file,
                                    char **base, char *err, size_t errlen)
{
    char *rel = NULL;
    unsigned flags = FILE_READ_ONLY | (img->opts.no_backing ? FILE_PATH_ONLY : 0);
    int ret = open_confined(img, "backing file", img->hdr.backing_file, flags, file, &rel, err,
                            errlen);
    if (ret == 0) {
        if (asprintf(&img->backing_path, "%s/%s", img->allowed_dir, rel) < 0)
            img->backing_path = NULL;
        char *copy = strdup(rel);
        *base = copy ? strdup(dirname(copy)) : NULL;
        free(copy);
        if (!img->backing_path || !*base) {
            file_close(*file);
            *file = NULL;
            ret = format_error(err, errlen, -ENOMEM, "%s: out of memory", img->filename);
        }
    }
    free(rel);
    return inspect_tolerates(img, ret, err, errlen);
}

static int open_backing(struct qcow2_image *img, const struct chain_seen *seen, char *err,
                        size_t errlen)
{
    const char *name = img->hdr.backing_file;
    if (!name)
        return 0;
    bool confined = is_confined(img) && (!img->opts.no_backing || img->opts.inspect_only);
    if (!img->opts.no_backing && img->chain_depth + 1 >= img->limits.chain_depth)
        return format_error(err, errlen, -ELOOP, "%s: backing chain is deeper than %u images",
                            img->filename, img->limits.chain_depth);
    struct qcow2_file *file = NULL;
    char *base = NULL;
    int ret = confined ? resolve_backing_confined(img, &file, &base, err, errlen) : 0;
    if (ret < 0)
        return ret;
    if (!img->backing_path)
        img->backing_path = image_resolve_path(img->filename, name);
    if (!img->backing_path) {
        file_close(file);
        free(base);
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", img->filename);
    }
    if (img->opts.no_backing) {
        free(base);
        return 0;
    }
    struct qcow2_open_opts bopts = img->opts;
    bopts.read_only = 1;
    bopts.repair = 0;
    bopts.snapshot_id = bopts.snapshot_name = NULL; /* the snapshot is the top image's */
    bopts.format = format_by_name(img->hdr.backing_fmt);
    if ((int)bopts.format < 0) {
        file_close(file);
        free(base);
        return format_error(err, errlen, -ENOTSUP, "%s: unsupported backing format '%s'",
                            img->filename, img->hdr.backing_fmt);
    }
    char msg[QCOW2_ERROR_MAX];
    ret = open_image(img->backing_path, &bopts, img->chain_depth + 1, seen, file, base,
                     &img->backing, msg, sizeof(msg));
    free(base);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s: backing file: %s", img->filename, msg);
    return 0;
}

/* A bitmap directory QEMU refuses fails the open as in QEMU; an open for check ignores the
 * bitmaps instead (the check reports what is wrong with them). */
static int load_bitmaps(struct qcow2_image *img, char *err, size_t errlen)
{
    int ret = bitmap_load(img);
    if (ret < 0 && img->opts.repair) {
        bitmap_close(img);
        return 0;
    }
    if (ret < 0)
        return format_error(err, errlen, ret, "%s", img->err);
    return 0;
}

static int open_qcow2(struct qcow2_image *img, const uint8_t *probe, size_t probe_len,
                      const struct chain_seen *seen, char *err, size_t errlen)
{
    char msg[QCOW2_ERROR_MAX];
    int ret = header_parse_fixed(probe, probe_len, &img->hdr, msg, sizeof(msg));
    if (ret < 0)
        return format_error(err, errlen, ret, "%s: %s", img->filename, msg);
    size_t cs = (size_t)1 << img->hdr.cluster_bits;
    uint8_t *c0 = malloc(cs);
    if (!c0)
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", img->filename);
    ret = file_pread(img->file, c0, cs, 0);
    if (ret == 0)
        ret = header_parse_extensions(c0, cs, &img->hdr, msg, sizeof(msg));
    else
        snprintf(msg, sizeof(msg), "reading the header failed: %s", strerror(-ret));
    free(c0);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s: %s", img->filename, msg);
    compute_geometry(img);
    int64_t fsize = file_size(img->file);
    img->zero_from = fsize > 0 ? ROUND_UP((uint64_t)fsize, img->cluster_size) : 0;
    if ((ret = check_features(img, err, errlen)) < 0 ||
        (ret = check_layout(img, err, errlen)) < 0 ||
        (ret = load_l1_table(img, err, errlen)) < 0 ||
        (ret = setup_caches(img, err, errlen)) < 0)
        return ret;
    img->corrupt = (img->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT) != 0;
    img->dirty = (img->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0;
    img->lazy_refcounts =
        img->opts.lazy_refcounts != QCOW2_AUTO
            ? (img->opts.lazy_refcounts == QCOW2_ON && img->hdr.version >= 3)
            : (img->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0;
    ret = refcount_init(img);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s", img->err);
    if ((ret = open_data_file(img, err, errlen)) < 0 ||
        (ret = open_backing(img, seen, err, errlen)) < 0)
        return ret;
    return load_bitmaps(img, err, errlen);
}

/* Autoclear bits promise something about data our writes change (bitmaps that record every
 * write, a data file that is a valid raw image): before the first write, clear each one we
 * do not maintain, unknown ones included, as the spec provides for a program that does not
 * know them. The extensions they vouch for stay on disk as they are: another program then
 * finds them and knows not to trust them (QEMU: "a program lacking bitmap support modified
 * this file"). One synced 8-byte write; v2 images have no autoclear bits. */
static int clear_unmaintained_autoclear(struct qcow2_image *img)
{
    struct qcow2_header *h = &img->hdr;
    uint64_t keep = h->autoclear_features & header_feature_mask(QCOW2_FEAT_TYPE_AUTOCLEAR, true);
    if (keep == h->autoclear_features)
        return 0;
    return header_set_autoclear(img, keep);
}

/* Writable opens clean up what the header says must not survive a writer, before anything
 * else is written (the repair of a dirty image too). An open for repair keeps the autoclear
 * bits: qcow2_check's repairs leave guest data as it is, so what the bits vouch for stays
 * true (and the check counts the bitmaps' clusters as used, as QEMU's does); guest writes
 * through such a handle are refused while it keeps one we do not maintain (io.c). */
static int prepare_for_writing(struct qcow2_image *img, char *err, size_t errlen)
{
    if (img->read_only || img->format != QCOW2_FORMAT_QCOW2)
        return 0;
    int ret = img->opts.repair ? 0 : clear_unmaintained_autoclear(img);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s", img->err);
    if (img->dirty && !img->opts.repair) {
        struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
        ret = qcow2_check(img, QCOW2_CHECK_FIX_LEAKS | QCOW2_CHECK_FIX_ERRORS, &res, NULL,
                          NULL);
        if (ret == 0 && (res.corruptions > 0 || res.check_errors > 0))
            ret = set_error(img, -EIO, "repairing the refcounts of a dirty image failed");
        if (ret < 0)
            return format_error(err, errlen, ret, "%s", img->err);
    }
    /* From here on a crash leaves the bitmaps inconsistent, never stale and trusted. An open
     * for repair leaves them alone (io.c refuses its guest writes while they exist). */
    if (!img->opts.repair && (ret = bitmap_mark_in_use(img)) < 0)
        return format_error(err, errlen, ret, "%s", img->err);
    return 0;
}

static int open_image(const char *path, const struct qcow2_open_opts *opts, unsigned depth,
                      const struct chain_seen *seen, struct qcow2_file *file,
                      const char *base, struct qcow2_image **out, char *err, size_t errlen)
{
    *out = NULL;
    struct stat st;
    if (file && file->has_identity) { /* opened beneath a directory: never by its path */
        st.st_dev = file->dev;
        st.st_ino = file->ino;
    } else if (stat(path, &st) < 0) {
        int e = errno;
        file_close(file);
        return format_error(err, errlen, -e, "%s: %s", path, strerror(e));
    }
    for (const struct chain_seen *s = seen; s; s = s->child)
        if (s->dev == st.st_dev && s->ino == st.st_ino) {
            file_close(file); /* ours from the call on, also on failure */
            return format_error(err, errlen, -ELOOP, "%s: backing chain loops back to itself",
                                path);
        }
    struct chain_seen me = {.dev = st.st_dev, .ino = st.st_ino, .child = seen};

    struct qcow2_image *img = image_alloc(path);
    if (!img) {
        file_close(file);
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", path);
    }
    img->opts = *opts;
    if (opts->inspect_only) {
        img->opts.read_only = 1;
        img->opts.no_backing = 1;
    }
    img->read_only = img->opts.read_only != 0;
    img->chain_depth = depth;
    img->metadata_prealloc = -1;
    set_limits(img);
    int ret = setup_confinement(img, path, base, err, errlen);
    if (ret < 0) {
        file_close(file);
        goto fail;
    }
    if (file) /* a caller's backend (tests), or a backing file opened beneath a directory */
        img->file = file; /* the image owns it from here */
    else
        ret = file_open_flags(path,
                              (img->read_only ? FILE_READ_ONLY : 0) |
                                  (img->opts.untrusted ? FILE_REGULAR_ONLY : 0),
                              &img->file, err, errlen);
    if (ret < 0)
        goto fail;

    uint8_t probe[PROBE_BYTES];
    ret = file_pread(img->file, probe, sizeof(probe), 0);
    if (ret < 0) {
        format_error(err, errlen, ret, "%s: read failed: %s", path, strerror(-ret));
        goto fail;
    }
    int64_t fsize = file_size(img->file);
    if (fsize < 0) {
        ret = (int)fsize;
        format_error(err, errlen, ret, "%s: cannot get the file size", path);
        goto fail;
    }
    img->format = opts->format;
    if (img->format == QCOW2_FORMAT_PROBE)
        img->format = fsize >= 4 && be32_get(probe) == QCOW2_MAGIC ? QCOW2_FORMAT_QCOW2
                                                                    : QCOW2_FORMAT_RAW;
    if (img->format == QCOW2_FORMAT_RAW) {
        img->size = (uint64_t)fsize;
        img->data_file = img->file;
    } else {
        ret = open_qcow2(img, probe, MIN(sizeof(probe), (size_t)fsize), &me, err, errlen);
        if (ret < 0)
            goto fail;
    }
    ret = prepare_for_writing(img, err, errlen);
    if (ret == 0 && depth == 0 && (opts->snapshot_id || opts->snapshot_name))
        ret = snapshot_open_view(img, opts->snapshot_id, opts->snapshot_name, err, errlen);
    if (ret < 0)
        goto fail;
    *out = img;
    return 0;
fail:
    image_free(img);
    return ret;
}

int qcow2_open(const char *path, const struct qcow2_open_opts *opts, struct qcow2_image **img,
               char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (img)
        *img = NULL;
    if (!path || !img)
        return format_error(err, errlen, -EINVAL, "no file name given");
    struct qcow2_open_opts o; /* the caller's options in this library's struct version */
    int ret = abi_copy_in(&abi_open_opts, &o, opts, err, errlen);
    if (ret < 0)
        return ret;
    return open_image(path, &o, 0, NULL, NULL, NULL, img, err, errlen);
}

int image_open_with_file(const char *path, const struct qcow2_open_opts *opts,
                         struct qcow2_file *file, struct qcow2_image **img, char *err,
                         size_t errlen)
{
    struct qcow2_open_opts o;
    int ret = abi_copy_in(&abi_open_opts, &o, opts, err, errlen);
    if (ret < 0) {
        file_close(file); /* the image owns it, also on failure */
        return ret;
    }
    return open_image(path, &o, 0, NULL, file, NULL, img, err, errlen);
}

int qcow2_close(struct qcow2_image *img)
{
    if (!img)
        return 0;
    int ret = 0;
    if (!img->read_only && img->format == QCOW2_FORMAT_QCOW2)
        ret = io_close_writable(img);
    image_free(img);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Information. */

uint64_t qcow2_get_size(const struct qcow2_image *img)
{
    return img->size;
}

struct qcow2_image *qcow2_get_backing(struct qcow2_image *img)
{
    return img->backing;
}

static void get_info(struct qcow2_image *img, struct qcow2_info *info)
{
    info->filename = img->filename;
    info->format = img->format;
    info->virtual_size = img->size;
    int64_t alloc = file_allocated_bytes(img->file);
    info->actual_size = alloc > 0 ? (uint64_t)alloc : 0; /* the image file only, as qemu-img */
    if (img->format != QCOW2_FORMAT_QCOW2)
        return;
    const struct qcow2_header *h = &img->hdr;
    info->version = (int)h->version;
    info->cluster_size = (uint32_t)img->cluster_size;
    info->extended_l2 = img->extended_l2;
    info->refcount_bits = img->refcount_bits;
    info->lazy_refcounts = (h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0;
    info->compression_type = (enum qcow2_compression)h->compression_type;
    info->corrupt = (h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) != 0;
    info->dirty = (h->incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0;
    info->encrypted = h->crypt_method != 0;
    info->nb_snapshots = h->nb_snapshots;
    info->nb_bitmaps = h->has_bitmaps_ext ? (int)h->nb_bitmaps : 0;
    /* v2 has no autoclear bits: QEMU never trusts bitmaps there either. */
    info->bitmaps_inconsistent =
        h->has_bitmaps_ext && !(h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
    info->backing_file = h->backing_file;
    info->backing_fmt = h->backing_fmt;
    info->full_backing_filename = img->backing_path;
    info->data_file = h->data_file;
    info->data_file_raw = data_file_is_raw(img);
    info->incompatible_features = h->incompatible_features;
    info->compatible_features = h->compatible_features;
    info->autoclear_features = h->autoclear_features;
    info->unknown_incompatible_features =
        h->incompatible_features & ~header_feature_mask(QCOW2_FEAT_TYPE_INCOMPATIBLE, false);
    info->unknown_compatible_features =
        h->compatible_features & ~header_feature_mask(QCOW2_FEAT_TYPE_COMPATIBLE, false);
    info->unknown_autoclear_features =
        h->autoclear_features & ~header_feature_mask(QCOW2_FEAT_TYPE_AUTOCLEAR, false);
}

int qcow2_get_info(struct qcow2_image *img, struct qcow2_info *info)
{
    int ret = abi_check_out(img, &abi_info, info);
    if (ret < 0)
        return ret;
    struct qcow2_info full = QCOW2_INFO_INIT;
    get_info(img, &full);
    abi_copy_out(&abi_info, info, &full);
    return 0;
}
