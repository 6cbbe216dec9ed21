/* bitmap.c - persistent dirty bitmaps (the bitmaps extension, autoclear bit 0).
 * Owns the in-memory bitmaps of an image: loaded from the bitmap directory at open, marked
 * by every write, zero write, discard and compressed write (io.c calls bitmap_mark; a
 * truncate calls bitmap_resize), and
 * stored exactly as QEMU stores them at close. While a writable handle is open every bitmap
 * carries `in_use` on disk, so a crash leaves them inconsistent, never stale and trusted.
 * Calls file.c for I/O, header_write.c for header updates and refcount.c for clusters; knows
 * nothing of L1/L2 tables or the data path. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One bitmap. Bit i covers guest bytes [i << gran_bits, (i + 1) << gran_bits), stored in
 * `words` least significant bit first: on disk that is byte i/8, bit i%8 (LSB first), so a
 * word is the little-endian reading of 8 bytes of bitmap data. */
struct bitmap {
    char *name;
    unsigned gran_bits;
    bool enabled;      /* the auto flag: writes are recorded */
    bool inconsistent; /* in_use on disk when loaded: never used, only removed (as QEMU) */
    uint64_t table_offset; /* on disk (0: not stored yet) */
    uint32_t table_size;
    uint64_t nbits;
    uint64_t *words;   /* NULL when inconsistent */
};

/* Where a stored bitmap's table lies (to free it once nothing names it). */
struct old_table {
    uint64_t offset;
    uint32_t size;
};

struct bitmap_set {
    struct bitmap **bm;
    unsigned n;
    bool in_use_on_disk; /* we set in_use on disk at open: store at close clears it */
    bool changed;        /* the directory must be written at close */
    /* Clusters of stored structures that the next store replaces (old tables, data and
     * directory): freed only once the new directory is in the header. */
    uint64_t old_dir_offset, old_dir_size;
    struct old_table *removed; /* stored tables of removed bitmaps */
    unsigned nb_removed;
};

/* ------------------------------------------------------------------------------------------ */
/* Parsing (pure: tests/fuzz/fuzz_bitmap.c feeds it arbitrary bytes). */

static uint64_t bitmap_data_bytes(uint64_t disk_size, unsigned gran_bits)
{
    uint64_t nbits = gran_bits >= 64 ? 1 : DIV_ROUND_UP(disk_size, 1ull << gran_bits);
    return DIV_ROUND_UP(nbits, 8);
}

void bitmap_dir_free(struct bitmap_dir_entry *e, unsigned n)
{
    if (!e)
        return;
    for (unsigned i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

int bitmap_parse_directory(const uint8_t *dir, uint64_t size, uint32_t nb_bitmaps,
                           unsigned cluster_bits, uint64_t disk_size,
                           struct bitmap_dir_entry **out, char *err, size_t errlen)
{
    *out = NULL;
    if (nb_bitmaps == 0 || nb_bitmaps > BME_MAX_BITMAPS || size > BME_MAX_DIRECTORY_SIZE ||
        size < BME_HEADER_SIZE)
        return format_error(err, errlen, -EINVAL,
                            "bitmaps extension: bad bitmap count (%u) or directory size (%llu)",
                            nb_bitmaps, (unsigned long long)size);
    struct bitmap_dir_entry *e = calloc(nb_bitmaps, sizeof(*e));
    if (!e)
        return format_error(err, errlen, -ENOMEM, "out of memory for the bitmap directory");
    uint64_t pos = 0;
    unsigned n = 0;
    int ret = 0;
    while (pos < size) {
        if (n == nb_bitmaps || size - pos < BME_HEADER_SIZE) {
            ret = format_error(err, errlen, -EINVAL, "Broken bitmap directory");
            break;
        }
        const uint8_t *p = dir + pos;
        struct bitmap_dir_entry *d = &e[n];
        d->table_offset = be64_get(p + BME_TABLE_OFFSET);
        d->table_size = be32_get(p + BME_TABLE_SIZE);
        d->flags = be32_get(p + BME_FLAGS);
        d->type = p[BME_TYPE];
        d->gran_bits = p[BME_GRANULARITY_BITS];
        uint32_t name_size = be16_get(p + BME_NAME_SIZE);
        uint32_t extra = be32_get(p + BME_EXTRA_DATA_SIZE);
        uint64_t len = ROUND_UP(BME_HEADER_SIZE + (uint64_t)extra + name_size, 8);
        if (len > size - pos) {
            ret = format_error(err, errlen, -EINVAL, "Broken bitmap directory");
            break;
        }
        d->name = malloc(name_size + 1);
        if (!d->name) {
            ret = format_error(err, errlen, -ENOMEM, "out of memory");
            break;
        }
        memcpy(d->name, p + BME_HEADER_SIZE + extra, name_size);
        d->name[name_size] = '\0';
        n++;
        /* A NUL inside the name would make it another (shorter, maybe duplicate) name. */
        if (memchr(d->name, '\0', name_size)) {
            ret = format_error(err, errlen, -EINVAL, "Bitmap name contains a NUL byte");
            break;
        }
        if (extra != 0) {
            ret = format_error(err, errlen, -ENOTSUP, "Bitmap extra data is not supported");
            break;
        }
        uint64_t phys = (uint64_t)d->table_size << cluster_bits;
        bool bad = d->type != BME_TYPE_DIRTY_TRACKING || name_size == 0 ||
                   name_size > BME_MAX_NAME_SIZE || (d->flags & BME_RESERVED_FLAGS) ||
                   d->gran_bits < BME_MIN_GRANULARITY_BITS ||
                   d->gran_bits > BME_MAX_GRANULARITY_BITS || d->table_offset == 0 ||
                   (d->table_offset & ((1ull << cluster_bits) - 1)) ||
                   d->table_offset > QCOW2_MAX_CLUSTER_OFFSET || d->table_size == 0 ||
                   d->table_size > BME_MAX_TABLE_SIZE || phys > BME_MAX_PHYS_SIZE;
        /* A bitmap that is not in use covers exactly the disk (in_use ones may be stale). */
        if (!bad && !(d->flags & BME_FLAG_IN_USE))
            bad = DIV_ROUND_UP(bitmap_data_bytes(disk_size, d->gran_bits),
                               1ull << cluster_bits) != d->table_size;
        if (bad) {
            ret = format_error(err, errlen, -EINVAL,
                               "Bitmap '%s' doesn't satisfy the constraints", d->name);
            break;
        }
        for (unsigned i = 0; i + 1 < n && ret == 0; i++)
            if (strcmp(e[i].name, d->name) == 0)
                ret = format_error(err, errlen, -EINVAL, "Duplicate bitmap name '%s'",
                                   d->name);
        for (uint64_t i = BME_HEADER_SIZE + extra + name_size; i < len && ret == 0; i++)
            if (p[i])
                ret = format_error(err, errlen, -EINVAL,
                                   "Bitmap '%s': non-zero padding in the directory", d->name);
        if (ret < 0)
            break;
        pos += len;
    }
    if (ret == 0 && n != nb_bitmaps)
        ret = format_error(err, errlen, -EINVAL,
                           "bitmaps extension: %u bitmaps announced, %u in the directory",
                           nb_bitmaps, n);
    if (ret < 0) {
        bitmap_dir_free(e, n);
        return ret;
    }
    *out = e;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* In-memory bitmaps. */

static uint64_t nb_words(uint64_t nbits)
{
    return DIV_ROUND_UP(nbits, 64);
}

static void bitmap_free_one(struct bitmap *b)
{
    if (!b)
        return;
    free(b->name);
    free(b->words);
    free(b);
}

void bitmap_close(struct qcow2_image *img)
{
    struct bitmap_set *s = img->bitmaps;
    if (!s)
        return;
    for (unsigned i = 0; i < s->n; i++)
        bitmap_free_one(s->bm[i]);
    free(s->bm);
    free(s->removed);
    free(s);
    img->bitmaps = NULL;
}

static uint64_t bits_for(const struct qcow2_image *img, unsigned gran_bits)
{
    return DIV_ROUND_UP(img->size, 1ull << gran_bits);
}

static struct bitmap_set *bitmap_set_get(struct qcow2_image *img)
{
    if (!img->bitmaps)
        img->bitmaps = calloc(1, sizeof(*img->bitmaps));
    return img->bitmaps;
}

static struct bitmap *bitmap_find(struct qcow2_image *img, const char *name)
{
    struct bitmap_set *s = img->bitmaps;
    for (unsigned i = 0; s && i < s->n; i++)
        if (strcmp(s->bm[i]->name, name) == 0)
            return s->bm[i];
    return NULL;
}

static int bitmap_append(struct qcow2_image *img, struct bitmap *b)
{
    struct bitmap_set *s = bitmap_set_get(img);
    if (!s)
        return -ENOMEM;
    struct bitmap **bm = realloc(s->bm, (s->n + 1) * sizeof(*bm));
    if (!bm)
        return -ENOMEM;
    s->bm = bm;
    s->bm[s->n++] = b;
    return 0;
}

static void set_bits(struct bitmap *b, uint64_t first, uint64_t last)
{
    for (uint64_t w = first / 64; w <= last / 64; w++) {
        uint64_t lo = w == first / 64 ? first % 64 : 0;
        uint64_t hi = w == last / 64 ? last % 64 : 63;
        uint64_t mask = (hi == 63 ? ~0ull : (1ull << (hi + 1)) - 1) & ~((1ull << lo) - 1);
        /* Concurrent writers mark the same words: an atomic OR, skipped when the bits are
         * set already (the common case for a hot region), so the line stays shared. */
        if ((__atomic_load_n(&b->words[w], __ATOMIC_RELAXED) & mask) != mask)
            __atomic_fetch_or(&b->words[w], mask, __ATOMIC_RELAXED);
    }
}

static void mark_one(struct bitmap *b, uint64_t offset, uint64_t len)
{
    if (!b->words || len == 0 || b->nbits == 0)
        return;
    uint64_t first = offset >> b->gran_bits;
    uint64_t last = (offset + len - 1) >> b->gran_bits;
    if (first >= b->nbits)
        return;
    set_bits(b, first, MIN(last, b->nbits - 1));
}

void bitmap_mark(struct qcow2_image *img, uint64_t offset, uint64_t len)
{
    struct bitmap_set *s = img->bitmaps;
    if (!s)
        return;
    for (unsigned i = 0; i < s->n; i++)
        if (s->bm[i]->enabled)
            mark_one(s->bm[i], offset, len);
}

static bool test_bit(const struct bitmap *b, uint64_t i)
{
    return (__atomic_load_n(&b->words[i / 64], __ATOMIC_RELAXED) >> (i % 64)) & 1;
}

/* The first bit at or after `i` (below `end`) whose value is not `v`; `end` if none. */
static uint64_t next_change(const struct bitmap *b, uint64_t i, uint64_t end, bool v)
{
    while (i < end) {
        uint64_t w = __atomic_load_n(&b->words[i / 64], __ATOMIC_RELAXED);
        if (v)
            w = ~w;
        w &= ~0ull << (i % 64);
        if (w) {
            uint64_t at = (i & ~63ull) + (uint64_t)__builtin_ctzll(w);
            return MIN(at, end);
        }
        i = (i & ~63ull) + 64;
    }
    return end;
}

int bitmap_resize(struct qcow2_image *img, uint64_t old_size, uint64_t new_size)
{
    struct bitmap_set *s = img->bitmaps;
    for (unsigned i = 0; s && i < s->n; i++) {
        struct bitmap *b = s->bm[i];
        if (!b->words)
            continue;
        uint64_t nbits = DIV_ROUND_UP(new_size, 1ull << b->gran_bits);
        uint64_t ow = nb_words(b->nbits), nw = nb_words(nbits);
        if (nw != ow) {
            uint64_t *w = realloc(b->words, MAX(nw, 1) * 8);
            if (!w)
                return set_error(img, -ENOMEM, "out of memory resizing bitmap '%s'", b->name);
            b->words = w;
            if (nw > ow)
                memset(w + ow, 0, (nw - ow) * 8);
        }
        /* Bits past the new end must be 0 (spec: unused tail bits). */
        if (nbits < b->nbits && nbits % 64)
            b->words[nbits / 64] &= (1ull << (nbits % 64)) - 1;
        b->nbits = nbits;
    }
    if (s && s->n)
        s->changed = true;
    /* A grown area is clean, as in QEMU 7.2 (observed: qemu-img resize marks nothing); it
     * reads as zeros, which a backup that copied the old size cannot have yet, but it holds
     * no guest write either. */
    (void)old_size;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading. */

static int read_table(struct qcow2_image *img, uint64_t offset, uint32_t size, uint64_t **out)
{
    uint64_t *t = malloc((size_t)size * BME_TABLE_ENTRY_SIZE);
    if (!t)
        return set_error(img, -ENOMEM, "out of memory for a bitmap table");
    int ret = file_pread(img->file, t, (size_t)size * BME_TABLE_ENTRY_SIZE, offset);
    if (ret < 0) {
        free(t);
        return set_error(img, ret, "reading a bitmap table failed: %s", strerror(-ret));
    }
    for (uint32_t i = 0; i < size; i++)
        t[i] = be64_get(&t[i]);
    *out = t;
    return 0;
}

static void le_bytes_to_words(uint64_t *words, const uint8_t *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        words[i / 8] |= (uint64_t)bytes[i] << (8 * (i % 8));
}

static void words_to_le_bytes(uint8_t *bytes, const uint64_t *words, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bytes[i] = (uint8_t)(words[i / 8] >> (8 * (i % 8)));
}

static int load_data(struct qcow2_image *img, struct bitmap *b)
{
    uint64_t bytes = DIV_ROUND_UP(b->nbits, 8);
    b->words = calloc(MAX(nb_words(b->nbits), 1), 8);
    if (!b->words)
        return set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);
    uint64_t *table;
    int ret = read_table(img, b->table_offset, b->table_size, &table);
    if (ret < 0)
        return ret;
    uint8_t *buf = malloc(img->cluster_size);
    if (!buf) {
        free(table);
        return set_error(img, -ENOMEM, "out of memory");
    }
    int64_t fsize = file_size_cached(img->file);
    for (uint32_t i = 0; i < b->table_size && ret == 0; i++) {
        uint64_t e = table[i], off = e & BME_TABLE_ENTRY_OFFSET_MASK;
        uint64_t at = (uint64_t)i << img->cluster_bits;
        size_t n = (size_t)MIN(img->cluster_size, bytes - at);
        if ((e & BME_TABLE_ENTRY_RESERVED_MASK) || (off && (e & BME_TABLE_ENTRY_ALL_ONES)) ||
            (off && (uint64_t)fsize < off + img->cluster_size)) {
            ret = set_error(img, -EINVAL, "Bitmap '%s': bad bitmap table entry 0x%llx",
                            b->name, (unsigned long long)e);
            break;
        }
        if (off == 0 && !(e & BME_TABLE_ENTRY_ALL_ONES))
            continue; /* all zeros */
        if (off == 0)
            memset(buf, 0xff, n);
        else if ((ret = file_pread(img->file, buf, n, off)) < 0)
            ret = set_error(img, ret, "reading bitmap '%s' failed: %s", b->name,
                            strerror(-ret));
        if (ret == 0)
            le_bytes_to_words(b->words + at / 8, buf, n);
    }
    /* Unused tail bits are 0 (the all-ones entry sets them; the spec wants them clear). */
    if (ret == 0 && b->nbits % 64)
        b->words[b->nbits / 64] &= (1ull << (b->nbits % 64)) - 1;
    free(buf);
    free(table);
    return ret;
}

static int load_entry(struct qcow2_image *img, struct bitmap_dir_entry *d)
{
    struct bitmap *b = calloc(1, sizeof(*b));
    if (!b)
        return set_error(img, -ENOMEM, "out of memory");
    b->name = d->name;
    d->name = NULL;
    b->gran_bits = d->gran_bits;
    b->enabled = (d->flags & BME_FLAG_AUTO) != 0;
    b->inconsistent = (d->flags & BME_FLAG_IN_USE) != 0;
    b->table_offset = d->table_offset;
    b->table_size = d->table_size;
    b->nbits = bits_for(img, b->gran_bits);
    int ret = b->inconsistent ? 0 : load_data(img, b);
    if (ret == 0)
        ret = bitmap_append(img, b) < 0 ? set_error(img, -ENOMEM, "out of memory") : 0;
    if (ret < 0)
        bitmap_free_one(b);
    return ret;
}

/* Are the bitmaps in the header to be believed? Only with the autoclear bit on a v3 image
 * (else a program without bitmap support wrote the image after them: QEMU ignores them). */
static bool bitmaps_vouched(const struct qcow2_image *img)
{
    const struct qcow2_header *h = &img->hdr;
    return h->has_bitmaps_ext && h->version >= 3 &&
           (h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
}

int bitmap_load(struct qcow2_image *img)
{
    const struct qcow2_header *h = &img->hdr;
    if (!bitmaps_vouched(img))
        return 0;
    uint64_t size = h->bitmap_directory_size;
    if (h->bitmap_directory_offset & (img->cluster_size - 1) || h->bitmap_directory_offset == 0)
        return set_error(img, -EINVAL, "bitmaps_ext: invalid bitmap directory offset");
    if (size > BME_MAX_DIRECTORY_SIZE || size == 0)
        return set_error(img, -EINVAL, "bitmaps_ext: bitmap directory size %llu is invalid",
                         (unsigned long long)size);
    uint8_t *dir = malloc(size);
    if (!dir)
        return set_error(img, -ENOMEM, "out of memory for the bitmap directory");
    int ret = file_pread(img->file, dir, size, h->bitmap_directory_offset);
    if (ret < 0) {
        free(dir);
        return set_error(img, ret, "Failed to read bitmap directory: %s", strerror(-ret));
    }
    struct bitmap_dir_entry *e;
    char msg[QCOW2_ERROR_MAX];
    ret = bitmap_parse_directory(dir, size, h->nb_bitmaps, img->cluster_bits, img->size, &e,
                                 msg, sizeof(msg));
    free(dir);
    if (ret < 0)
        return set_error(img, ret, "%s", msg);
    for (uint32_t i = 0; i < h->nb_bitmaps && ret == 0; i++)
        ret = load_entry(img, &e[i]);
    bitmap_dir_free(e, h->nb_bitmaps);
    if (ret == 0 && img->bitmaps) {
        img->bitmaps->old_dir_offset = h->bitmap_directory_offset;
        img->bitmaps->old_dir_size = size;
    }
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Storing. */

static size_t dir_entry_size(const struct bitmap *b)
{
    return ROUND_UP(BME_HEADER_SIZE + strlen(b->name), 8);
}

static size_t dir_size(const struct bitmap_set *s)
{
    size_t n = 0;
    for (unsigned i = 0; i < s->n; i++)
        n += dir_entry_size(s->bm[i]);
    return n;
}

/* Serialize the directory; `in_use` sets the flag on every bitmap (inconsistent ones carry
 * it anyway). */
static void dir_serialize(const struct bitmap_set *s, uint8_t *dir, bool in_use)
{
    size_t pos = 0;
    for (unsigned i = 0; i < s->n; i++) {
        const struct bitmap *b = s->bm[i];
        size_t len = dir_entry_size(b), nlen = strlen(b->name);
        uint8_t *p = dir + pos;
        memset(p, 0, len);
        uint32_t flags = (b->enabled ? BME_FLAG_AUTO : 0) |
                         (in_use || b->inconsistent ? BME_FLAG_IN_USE : 0);
        be64_put(p + BME_TABLE_OFFSET, b->table_offset);
        be32_put(p + BME_TABLE_SIZE, b->table_size);
        be32_put(p + BME_FLAGS, flags);
        p[BME_TYPE] = BME_TYPE_DIRTY_TRACKING;
        p[BME_GRANULARITY_BITS] = (uint8_t)b->gran_bits;
        be16_put(p + BME_NAME_SIZE, (uint16_t)nlen);
        memcpy(p + BME_HEADER_SIZE, b->name, nlen);
        pos += len;
    }
}

static int flush_file(struct qcow2_image *img)
{
    int ret = file_flush(img->file);
    return ret < 0 ? set_error(img, ret, "flush failed: %s", strerror(-ret)) : 0;
}

/* On a writable open: every bitmap gets in_use on disk before any guest write, so that a crash
 * leaves them inconsistent. The directory is rewritten in place, which a crash could tear:
 * the autoclear bit is cleared around it (all bitmaps then inconsistent), as QEMU does
 * (update_ext_header_and_dir_in_place). */
int bitmap_mark_in_use(struct qcow2_image *img)
{
    struct bitmap_set *s = img->bitmaps;
    if (!s || s->n == 0 || img->read_only)
        return 0;
    size_t size = dir_size(s);
    if (size != img->hdr.bitmap_directory_size)
        return set_error(img, -EIO, "bitmap directory size changed on load");
    uint8_t *dir = malloc(size);
    if (!dir)
        return set_error(img, -ENOMEM, "out of memory");
    dir_serialize(s, dir, true);
    uint64_t ac = img->hdr.autoclear_features;
    int ret = header_set_autoclear(img, ac & ~QCOW2_AUTOCLEAR_BITMAPS);
    if (ret == 0 && (ret = file_pwrite(img->file, dir, size,
                                       img->hdr.bitmap_directory_offset)) < 0)
        set_error(img, ret, "writing the bitmap directory failed: %s", strerror(-ret));
    if (ret == 0)
        ret = flush_file(img);
    if (ret == 0)
        ret = header_set_autoclear(img, ac | QCOW2_AUTOCLEAR_BITMAPS);
    free(dir);
    if (ret == 0)
        s->in_use_on_disk = true;
    return ret;
}

static bool chunk_is_zero(const uint64_t *w, size_t nwords)
{
    for (size_t i = 0; i < nwords; i++)
        if (w[i])
            return false;
    return true;
}

/* Write the data clusters and the table of `b` to new clusters; on success b->table_* name
 * them. `empty`: the table only, every entry 0 (no data: all bits clear). Clusters of a
 * partial store are leaked on failure (never referenced). */
static int store_one(struct qcow2_image *img, struct bitmap *b, uint8_t *buf, bool empty)
{
    uint64_t bytes = DIV_ROUND_UP(b->nbits, 8);
    uint64_t tsize = MAX(DIV_ROUND_UP(bytes, img->cluster_size), 1);
    uint64_t *table = calloc(tsize, 8);
    if (!table)
        return set_error(img, -ENOMEM, "out of memory");
    int ret = 0;
    for (uint64_t i = 0; i < tsize && ret == 0; i++) {
        uint64_t at = i << img->cluster_bits;
        if (at >= bytes)
            break;
        size_t n = (size_t)MIN(img->cluster_size, bytes - at);
        /* Only chunks with a bit set get a cluster (store_bitmap_data). */
        if (empty || chunk_is_zero(b->words + at / 8, DIV_ROUND_UP(n, 8)))
            continue;
        int64_t off = refcount_alloc_clusters(img, img->cluster_size);
        if (off < 0) {
            ret = (int)off;
            break;
        }
        memset(buf, 0, img->cluster_size);
        words_to_le_bytes(buf, b->words + at / 8, n);
        table[i] = (uint64_t)off;
        if ((ret = file_pwrite(img->file, buf, img->cluster_size, (uint64_t)off)) < 0)
            set_error(img, ret, "writing bitmap '%s' failed: %s", b->name, strerror(-ret));
    }
    int64_t toff = ret == 0 ? refcount_alloc_clusters(img, tsize * 8) : 0;
    if (toff < 0)
        ret = (int)toff;
    if (ret == 0) {
        uint8_t *t = calloc(1, ROUND_UP(tsize * 8, img->cluster_size));
        if (!t)
            ret = set_error(img, -ENOMEM, "out of memory");
        for (uint64_t i = 0; t && i < tsize; i++)
            be64_put(t + i * 8, table[i]);
        if (t && (ret = file_pwrite(img->file, t, ROUND_UP(tsize * 8, img->cluster_size),
                                    (uint64_t)toff)) < 0)
            set_error(img, ret, "writing the table of bitmap '%s' failed: %s", b->name,
                      strerror(-ret));
        free(t);
    }
    free(table);
    if (ret == 0) {
        b->table_offset = (uint64_t)toff;
        b->table_size = (uint32_t)tsize;
    }
    return ret;
}

/* Free the clusters of a stored bitmap (table and the data it points to). */
static int free_stored(struct qcow2_image *img, uint64_t table_offset, uint32_t table_size)
{
    if (!table_offset)
        return 0;
    uint64_t *table;
    int ret = read_table(img, table_offset, table_size, &table);
    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < table_size && ret == 0; i++) {
        uint64_t off = table[i] & BME_TABLE_ENTRY_OFFSET_MASK;
        if (off && !(table[i] & BME_TABLE_ENTRY_RESERVED_MASK))
            ret = refcount_free_clusters(img, off, img->cluster_size);
    }
    free(table);
    if (ret == 0)
        ret = refcount_free_clusters(img, table_offset, (uint64_t)table_size * 8);
    return ret;
}

/* Point the header at the new directory (or drop the extension): the switch. */
static int switch_directory(struct qcow2_image *img, uint64_t offset, uint64_t size,
                            uint32_t n)
{
    struct qcow2_header *h = &img->hdr;
    struct qcow2_header saved = *h;
    h->has_bitmaps_ext = n > 0;
    h->nb_bitmaps = n;
    h->bitmap_directory_offset = offset;
    h->bitmap_directory_size = size;
    if (n > 0)
        h->autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    else
        h->autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    int ret = header_rewrite_synced(img);
    if (ret < 0) {
        h->has_bitmaps_ext = saved.has_bitmaps_ext;
        h->nb_bitmaps = saved.nb_bitmaps;
        h->bitmap_directory_offset = saved.bitmap_directory_offset;
        h->bitmap_directory_size = saved.bitmap_directory_size;
        h->autoclear_features = saved.autoclear_features;
    }
    return ret;
}

/* New data, tables and directory in new clusters, flushed together with their refcounts;
 * then the header switch (sync); then the old clusters are freed. A crash before the switch
 * leaves the old directory, whose bitmaps carry in_use (inconsistent), and leaked clusters;
 * after it, the new one. `in_use`: empty tables and every bitmap in_use (the bitmaps stay in
 * memory only, as while a writable handle is open). Caller holds img->lock. */
static int store_all(struct qcow2_image *img, bool in_use)
{
    struct bitmap_set *s = img->bitmaps;
    struct old_table *old = calloc(MAX(s->n, 1), sizeof(*old));
    uint8_t *buf = malloc(img->cluster_size);
    uint8_t *dir = NULL;
    int ret = old && buf ? 0 : set_error(img, -ENOMEM, "out of memory");
    for (unsigned i = 0; i < s->n && ret == 0; i++) {
        struct bitmap *b = s->bm[i];
        if (b->inconsistent)
            continue; /* kept as it is on disk, in_use */
        old[i] = (struct old_table){b->table_offset, b->table_size};
        ret = store_one(img, b, buf, in_use);
    }
    size_t size = dir_size(s);
    int64_t dir_off = 0;
    if (ret == 0 && s->n > 0) {
        dir_off = refcount_alloc_clusters(img, size);
        if (dir_off < 0)
            ret = (int)dir_off;
    }
    if (ret == 0 && s->n > 0) {
        size_t alloc = ROUND_UP(size, img->cluster_size);
        dir = calloc(1, alloc);
        if (!dir)
            ret = set_error(img, -ENOMEM, "out of memory");
        else
            dir_serialize(s, dir, in_use);
        if (ret == 0 && (ret = file_pwrite(img->file, dir, alloc, (uint64_t)dir_off)) < 0)
            set_error(img, ret, "writing the bitmap directory failed: %s", strerror(-ret));
    }
    /* The new structures and their refcounts are durable before the header names them. */
    if (ret == 0)
        ret = cache_flush(img->refcount_cache);
    if (ret == 0)
        ret = switch_directory(img, (uint64_t)dir_off, s->n ? size : 0, s->n);
    if (ret < 0) {
        /* The old tables stay what the disk names; memory forgets the new ones. */
        for (unsigned i = 0; i < s->n && old; i++)
            if (!s->bm[i]->inconsistent) {
                s->bm[i]->table_offset = old[i].offset;
                s->bm[i]->table_size = old[i].size;
            }
        goto out;
    }
    /* Freeing is best effort: a failure leaks clusters, nothing worse. */
    for (unsigned i = 0; i < s->n; i++)
        if (!s->bm[i]->inconsistent && old[i].offset)
            free_stored(img, old[i].offset, old[i].size);
    for (unsigned i = 0; s->removed && i < s->nb_removed; i++)
        free_stored(img, s->removed[i].offset, s->removed[i].size);
    if (s->old_dir_offset)
        refcount_free_clusters(img, s->old_dir_offset, s->old_dir_size);
    s->old_dir_offset = s->n ? (uint64_t)dir_off : 0;
    s->old_dir_size = s->n ? size : 0;
    free(s->removed);
    s->removed = NULL;
    s->nb_removed = 0;
    if (!in_use) {
        s->in_use_on_disk = false;
        s->changed = false;
    }
out:
    free(old);
    free(buf);
    free(dir);
    return ret;
}

/* At close of a writable handle. */
int bitmap_store(struct qcow2_image *img)
{
    struct bitmap_set *s = img->bitmaps;
    if (!s || img->read_only || (!s->in_use_on_disk && !s->changed))
        return 0;
    return store_all(img, false);
}

/* While the bitmaps are in_use on disk, what is stored says nothing: compact.c has it
 * replaced by the smallest valid structure, in the lowest free clusters (close stores the
 * real data). Bitmaps stored without in_use (a repair open) are left alone. */
int bitmap_release_storage(struct qcow2_image *img)
{
    struct bitmap_set *s = img->bitmaps;
    if (!s || img->read_only || !s->in_use_on_disk || s->n == 0)
        return 0;
    return store_all(img, true);
}

bool bitmap_writes_unrecorded(const struct qcow2_image *img)
{
    const struct bitmap_set *s = img->bitmaps;
    if (!s || s->in_use_on_disk)
        return false;
    /* Only stored ones: a bitmap added in this session is not on disk until close. */
    for (unsigned i = 0; i < s->n; i++)
        if (!s->bm[i]->inconsistent && s->bm[i]->table_offset)
            return true;
    return false;
}

/* Every bitmap removed, the extension gone from the header and the bitmaps' clusters freed
 * after that switch (amend's downgrade: a version 2 image has no bitmaps). A crash leaves the
 * old directory, whose bitmaps are then in_use (inconsistent), or none, at worst with leaked
 * clusters. A directory we did not load (disowned by a program without bitmap support) is
 * only unlinked: its clusters leak. Caller holds img->lock. */
int bitmap_drop_all(struct qcow2_image *img)
{
    struct bitmap_set *s = img->bitmaps;
    if (!s)
        return img->hdr.has_bitmaps_ext ? switch_directory(img, 0, 0, 0) : 0;
    while (s->n > 0) {
        int ret = qcow2_bitmap_remove(img, s->bm[0]->name);
        if (ret < 0)
            return ret;
    }
    return store_all(img, false);
}

bool bitmap_any(const struct qcow2_image *img)
{
    return img->bitmaps && img->bitmaps->n > 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The public API (include/qcow2.h, "Persistent dirty bitmaps"). Not concurrent with I/O on
 * the same image: marking reads the list without the lock. */

/* Bitmap `name` of `img`; a failure is reported on `err_img` (the image of the call). */
static int find_in(struct qcow2_image *err_img, struct qcow2_image *img, const char *name,
                   bool usable, struct bitmap **out)
{
    *out = NULL;
    if (!name)
        return set_error(err_img, -EINVAL, "no bitmap name given");
    struct bitmap *b = bitmap_find(img, name);
    if (!b)
        return set_error(err_img, -ENOENT, "Dirty bitmap '%s' not found", name);
    if (usable && b->inconsistent)
        return set_error(err_img, -EBUSY, "Bitmap '%s' is inconsistent and cannot be used",
                         name);
    *out = b;
    return 0;
}

static int need_bitmap(struct qcow2_image *img, const char *name, bool usable,
                       struct bitmap **out)
{
    return find_in(img, img, name, usable, out);
}

static int need_writable(struct qcow2_image *img)
{
    if (img->read_only)
        return set_error(img, -EROFS, "image is opened read-only");
    if (img->format != QCOW2_FORMAT_QCOW2)
        return set_error(img, -ENOTSUP, "Format driver 'raw' does not support bitmaps");
    return 0;
}

int qcow2_bitmap_count(struct qcow2_image *img)
{
    return img->bitmaps ? (int)img->bitmaps->n : 0;
}

int qcow2_bitmap_get_info(struct qcow2_image *img, unsigned index, struct qcow2_bitmap_info *info)
{
    int ret = abi_check_out(img, &abi_bitmap_info, info);
    if (ret < 0)
        return ret;
    if (index >= (unsigned)qcow2_bitmap_count(img))
        return set_error(img, -ENOENT, "no bitmap number %u", index);
    const struct bitmap *b = img->bitmaps->bm[index];
    struct qcow2_bitmap_info full = QCOW2_BITMAP_INFO_INIT;
    full.name = b->name;
    full.granularity = 1u << b->gran_bits;
    full.enabled = b->enabled;
    full.in_use = b->inconsistent;
    full.recording = b->enabled && !b->inconsistent;
    abi_copy_out(&abi_bitmap_info, info, &full);
    return 0;
}

/* QEMU's qcow2_co_can_store_new_dirty_bitmap and bdrv_create_dirty_bitmap checks. */
static int check_new_bitmap(struct qcow2_image *img, const char *name, uint64_t gran)
{
    if (!name || !*name)
        return set_error(img, -EINVAL, "Bitmap name cannot be empty");
    if (bitmap_find(img, name))
        return set_error(img, -EEXIST, "Bitmap already exists: %s", name);
    if (gran < 512 || !IS_POWER_OF_2(gran) || gran > (1ull << BME_MAX_GRANULARITY_BITS))
        return set_error(img, -EINVAL, "Granularity must be power of 2 and at least 512");
    const char *why = NULL;
    struct bitmap_set *s = img->bitmaps;
    size_t nlen = strlen(name);
    unsigned gbits = (unsigned)__builtin_ctzll(gran);
    uint64_t bytes = bitmap_data_bytes(img->size, gbits);
    if (img->hdr.version < 3)
        why = "Cannot store dirty bitmaps in qcow2 v2 files";
    else if (nlen > BME_MAX_NAME_SIZE)
        why = "Name length exceeds maximum (1023 characters)";
    else if (s && s->n >= BME_MAX_BITMAPS)
        why = "Maximum number of persistent bitmaps is already reached";
    else if ((s ? dir_size(s) : 0) + ROUND_UP(BME_HEADER_SIZE + nlen, 8) >
             BME_MAX_DIRECTORY_SIZE)
        why = "Not enough space in the bitmap directory";
    else if (bytes > BME_MAX_PHYS_SIZE ||
             DIV_ROUND_UP(bytes, img->cluster_size) > BME_MAX_TABLE_SIZE)
        why = "Too much space will be occupied by the bitmap. Use larger granularity";
    /* (A long name is cut in the message, so that the reason fits.) */
    if (why)
        return set_error(img, -EINVAL, "Can't make bitmap '%.64s%s' persistent in '%s': %s",
                         name, nlen > 64 ? "..." : "", img->filename, why);
    return 0;
}

int qcow2_bitmap_add(struct qcow2_image *img, const char *name, uint64_t granularity,
                     unsigned flags)
{
    int ret = need_writable(img);
    if (ret < 0)
        return ret;
    /* QEMU's default: the cluster size, within 4 KiB .. 64 KiB. */
    uint64_t gran = granularity ? granularity : MIN(MAX(img->cluster_size, 4096), 65536);
    if ((ret = check_new_bitmap(img, name, gran)) < 0)
        return ret;
    struct bitmap *b = calloc(1, sizeof(*b));
    if (b)
        b->name = strdup(name);
    if (b && b->name) {
        b->gran_bits = (unsigned)__builtin_ctzll(gran);
        b->enabled = !(flags & QCOW2_BITMAP_DISABLED);
        b->nbits = bits_for(img, b->gran_bits);
        b->words = calloc(MAX(nb_words(b->nbits), 1), 8);
    }
    if (!b || !b->name || !b->words || bitmap_append(img, b) < 0) {
        bitmap_free_one(b);
        return set_error(img, -ENOMEM, "out of memory for bitmap '%s'", name);
    }
    img->bitmaps->changed = true;
    return 0;
}

int qcow2_bitmap_remove(struct qcow2_image *img, const char *name)
{
    struct bitmap *b;
    int ret = need_writable(img);
    if (ret == 0)
        ret = need_bitmap(img, name, false, &b);
    if (ret < 0)
        return ret;
    struct bitmap_set *s = img->bitmaps;
    if (b->table_offset) {
        struct old_table *r = realloc(s->removed, (s->nb_removed + 1) * sizeof(*r));
        if (!r)
            return set_error(img, -ENOMEM, "out of memory");
        s->removed = r;
        s->removed[s->nb_removed++] = (struct old_table){b->table_offset, b->table_size};
    }
    unsigned i = 0;
    while (s->bm[i] != b)
        i++;
    memmove(&s->bm[i], &s->bm[i + 1], (s->n - i - 1) * sizeof(s->bm[0]));
    s->n--;
    bitmap_free_one(b);
    s->changed = true;
    return 0;
}

static int change_bitmap(struct qcow2_image *img, const char *name, struct bitmap **b)
{
    int ret = need_writable(img);
    if (ret == 0)
        ret = need_bitmap(img, name, true, b);
    if (ret == 0)
        img->bitmaps->changed = true;
    return ret;
}

int qcow2_bitmap_clear(struct qcow2_image *img, const char *name)
{
    struct bitmap *b;
    int ret = change_bitmap(img, name, &b);
    if (ret == 0)
        memset(b->words, 0, MAX(nb_words(b->nbits), 1) * 8);
    return ret;
}

static int set_enabled(struct qcow2_image *img, const char *name, bool enabled)
{
    struct bitmap *b;
    int ret = change_bitmap(img, name, &b);
    if (ret == 0)
        b->enabled = enabled;
    return ret;
}

int qcow2_bitmap_enable(struct qcow2_image *img, const char *name)
{
    return set_enabled(img, name, true);
}

int qcow2_bitmap_disable(struct qcow2_image *img, const char *name)
{
    return set_enabled(img, name, false);
}

/* Is bit `i` of `b` the first of a run of `v`? The run's end (bits). */
static uint64_t run_end(const struct bitmap *b, uint64_t i, bool *v)
{
    *v = test_bit(b, i);
    return next_change(b, i, b->nbits, *v);
}

int qcow2_bitmap_status(struct qcow2_image *img, const char *name, uint64_t offset,
                        uint64_t count, uint64_t *length)
{
    struct bitmap *b;
    int ret = need_bitmap(img, name, true, &b);
    if (ret < 0)
        return ret;
    if (offset >= img->size || count == 0 || count > img->size - offset)
        return set_error(img, -EINVAL, "bitmap range 0x%llx+0x%llx is outside the image",
                         (unsigned long long)offset, (unsigned long long)count);
    bool dirty;
    uint64_t end = run_end(b, offset >> b->gran_bits, &dirty);
    uint64_t end_bytes = end >= (UINT64_MAX >> b->gran_bits) ? UINT64_MAX : end << b->gran_bits;
    *length = MIN(end_bytes, offset + count) - offset;
    return dirty ? 1 : 0;
}

int qcow2_bitmap_merge(struct qcow2_image *img, const char *dst, struct qcow2_image *src_img,
                       const char *src)
{
    struct bitmap *d, *s;
    if (!src_img)
        src_img = img;
    int ret = change_bitmap(img, dst, &d);
    if (ret < 0)
        return ret;
    if ((ret = find_in(img, src_img, src, true, &s)) < 0)
        return ret;
    if (src_img->size != img->size)
        return set_error(img, -EINVAL,
                         "Bitmaps are of different sizes (destination size is %llu, source "
                         "size is %llu) and can't be merged",
                         (unsigned long long)img->size, (unsigned long long)src_img->size);
    /* Granularities may differ (as in QEMU): every dirty source run marks the destination
     * granules it touches. */
    for (uint64_t i = 0; i < s->nbits;) {
        bool v;
        uint64_t end = run_end(s, i, &v);
        if (v) {
            uint64_t from = i << s->gran_bits;
            uint64_t to = MIN(end << s->gran_bits, img->size);
            mark_one(d, from, to - from);
        }
        i = end;
    }
    return 0;
}
