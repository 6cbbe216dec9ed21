/* create.c - making new images: qemu-img's -o options, sizes, validation, and the first layout.
 * Owns the one "-o key=value,..." parser (used by create, convert and amend), size parsing, the
 * option rules qemu-img enforces, and the initial metadata of a new qcow2 image (header,
 * refcount table and blocks, L1 table) placed cluster for cluster where qemu-img places it.
 * Writes only through file.c and builds cluster 0 with header.c. Preallocation is io.c's job
 * (io_preallocate) on the image opened afterwards; this file never touches caches or L2. */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CLUSTER_SIZE 65536u
#define DEFAULT_REFCOUNT_BITS 16u
#define MIN_CLUSTER_SIZE (1u << QCOW2_MIN_CLUSTER_BITS)
#define MAX_CLUSTER_SIZE (1u << QCOW2_MAX_CLUSTER_BITS)
#define MIN_CLUSTER_SIZE_EXTL2 (1u << QCOW2_MIN_CLUSTER_BITS_EXTL2)
#define SECTOR_SIZE 512u
#define MAX_REFCOUNT_BITS 64u
#define TABLE_ENTRY_SIZE 8u            /* bytes per L1 and refcount table entry */
#define FEATURE_TABLE_MIN_CLUSTER 8192u /* qemu-img omits the feature table below this */
#define ZERO_CHUNK (1u << 20)          /* bytes of zeros written per call */

/* ------------------------------------------------------------------------------------------ */
/* Sizes, as QEMU's qemu_strtosz() reads them: decimal digits, optionally a fraction (only with
 * a suffix, unless it is zero), or 0x hex (no fraction); then one optional suffix b/k/M/G/T/P/E
 * in either case (powers of 1024). A fraction is rounded to the nearest byte, halves up.
 * Leading blanks and a '+' are accepted, a '-' never; nothing may follow the suffix. */

static uint64_t suffix_multiplier(char c)
{
    switch (c) {
    case 'b': case 'B': return 1;
    case 'k': case 'K': return 1ull << 10;
    case 'm': case 'M': return 1ull << 20;
    case 'g': case 'G': return 1ull << 30;
    case 't': case 'T': return 1ull << 40;
    case 'p': case 'P': return 1ull << 50;
    case 'e': case 'E': return 1ull << 60;
    default: return 0;
    }
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int qcow2_parse_size(const char *s, uint64_t *out)
{
    if (!s || !out)
        return -EINVAL;
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;

    uint64_t val = 0;
    uint64_t frac = 0; /* the fraction as a 0.64 fixed-point number */
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        p += 2;
        if (hex_digit(*p) < 0)
            return -EINVAL;
        for (; hex_digit(*p) >= 0; p++) {
            if (val > (UINT64_MAX >> 4))
                return -EINVAL;
            val = (val << 4) | (uint64_t)hex_digit(*p);
        }
        if (*p == '.')
            return -EINVAL;
    } else {
        for (; isdigit((unsigned char)*p); p++) {
            uint64_t d = (uint64_t)(*p - '0');
            if (val > (UINT64_MAX - d) / 10)
                return -EINVAL;
            val = val * 10 + d;
        }
        if (*p == '.') {
            const char *f = p++;
            while (isdigit((unsigned char)*p))
                p++;
            /* An exponent ("1.5e3") makes the whole input invalid; a lone 'e' is a suffix. */
            if ((*p == 'e' || *p == 'E') &&
                (isdigit((unsigned char)p[1]) ||
                 ((p[1] == '+' || p[1] == '-') && isdigit((unsigned char)p[2]))))
                return -EINVAL;
            char digits[64];
            size_t n = MIN((size_t)(p - f), sizeof(digits) - 1);
            memcpy(digits, f, n);
            digits[n] = '\0';
            double fraction = n > 1 ? strtod(digits, NULL) : 0.0;
            frac = fraction >= 1.0 ? UINT64_MAX : (uint64_t)(fraction * 0x1p64);
        }
    }

    uint64_t mul = suffix_multiplier(*p);
    if (mul)
        p++;
    else
        mul = 1;
    if (*p != '\0')
        return -EINVAL; /* (a suffix on a hex number is accepted: QEMU only warns) */

    if (mul == 1) {
        if (frac != 0)
            return -EINVAL; /* "1.5" bytes: a fraction needs a unit */
    } else {
        unsigned __int128 r = (unsigned __int128)val * mul;
        unsigned __int128 fr = (unsigned __int128)frac * mul; /* 64.64 fixed point */
        r += (uint64_t)(fr >> 64);
        r += ((uint64_t)fr >> 63); /* round half up */
        if (r > UINT64_MAX)
            return -EINVAL;
        val = (uint64_t)r;
    }
    /* Sizes and offsets are signed 64-bit everywhere (as in QEMU's block layer). */
    if (val > (uint64_t)INT64_MAX)
        return -EINVAL;
    *out = val;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Options. */

static bool cluster_size_valid(uint64_t cs)
{
    return IS_POWER_OF_2(cs) && cs >= MIN_CLUSTER_SIZE && cs <= MAX_CLUSTER_SIZE;
}

static bool refcount_bits_valid(uint64_t bits)
{
    return IS_POWER_OF_2(bits) && bits <= MAX_REFCOUNT_BITS;
}

/* QEMU's boolean spellings. Returns 0/1, or -1 for anything else. */
static int parse_bool(const char *v)
{
    static const char *const yes[] = {"on", "yes", "true", "y"};
    static const char *const no[] = {"off", "no", "false", "n"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(v, yes[i]) == 0)
            return 1;
        if (strcmp(v, no[i]) == 0)
            return 0;
    }
    return -1;
}

/* A plain number as strtoull(base 0) reads it (decimal, 0x hex, 0 octal), without a sign. */
static int parse_number(const char *v, uint64_t *out)
{
    const char *p = v;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(p, &end, 0);
    if (errno || *end != '\0')
        return -EINVAL;
    *out = n;
    return 0;
}

#define SIZE_SYNTAX "a number below 2^63 with an optional suffix k, M, G, T, P or E"

/* Set one option in a full struct of ours (a copy of the caller's). */
static int set_option(struct qcow2_create_opts *opts, const char *key, const char *value,
                      char *err, size_t errlen)
{
    bool is_bool = strcmp(key, "extended_l2") == 0 || strcmp(key, "lazy_refcounts") == 0 ||
                   strcmp(key, "data_file_raw") == 0 || strcmp(key, "encryption") == 0 ||
                   strcmp(key, "nocow") == 0;
    int b = 0;
    if (is_bool) {
        /* A bare boolean key means "on", as in QEMU's option syntax. */
        b = value ? parse_bool(value) : 1;
        if (b < 0)
            return format_error(err, errlen, -EINVAL,
                                "Parameter '%s' expects 'on' or 'off', got '%s'", key, value);
    }

    if (strcmp(key, "encryption") == 0) {
        if (b)
            return format_error(err, errlen, -ENOTSUP,
                                "encryption is not supported (encryption=%s)",
                                value ? value : "on");
        return 0; /* encryption=off is what we do anyway */
    }
    if (strncmp(key, "encrypt.", 8) == 0)
        return format_error(err, errlen, -ENOTSUP, "encryption is not supported (%s=%s)", key,
                            value ? value : "");
    if (is_bool) {
        if (strcmp(key, "extended_l2") == 0)
            opts->extended_l2 = b;
        else if (strcmp(key, "lazy_refcounts") == 0)
            opts->lazy_refcounts = b;
        else if (strcmp(key, "data_file_raw") == 0)
            opts->data_file_raw = b;
        /* nocow: a host file-system hint qemu-img accepts; it changes nothing in the image. */
        return 0;
    }

    bool known = strcmp(key, "size") == 0 || strcmp(key, "cluster_size") == 0 ||
                 strcmp(key, "extent_size_hint") == 0 || strcmp(key, "refcount_bits") == 0 ||
                 strcmp(key, "compat") == 0 || strcmp(key, "compression_type") == 0 ||
                 strcmp(key, "preallocation") == 0 || strcmp(key, "backing_file") == 0 ||
                 strcmp(key, "backing_fmt") == 0 || strcmp(key, "data_file") == 0;
    if (!known)
        return format_error(err, errlen, -EINVAL, "Invalid parameter '%s'", key);
    if (!value)
        return format_error(err, errlen, -EINVAL, "Parameter '%s' expects a value", key);

    if (strcmp(key, "size") == 0 || strcmp(key, "cluster_size") == 0 ||
        strcmp(key, "extent_size_hint") == 0) {
        uint64_t v;
        if (qcow2_parse_size(value, &v) < 0)
            return format_error(err, errlen, -EINVAL,
                                "Parameter '%s' expects " SIZE_SYNTAX ", got '%s'", key, value);
        if (strcmp(key, "size") == 0) {
            opts->size = v;
        } else if (strcmp(key, "cluster_size") == 0) {
            if (!cluster_size_valid(v))
                return format_error(err, errlen, -EINVAL,
                                    "Cluster size must be a power of two between 512 and "
                                    "2048k (cluster_size=%s)",
                                    value);
            opts->cluster_size = (uint32_t)v;
        }
        /* extent_size_hint: a host file-system hint qemu-img accepts; no effect here. */
        return 0;
    }
    if (strcmp(key, "refcount_bits") == 0) {
        uint64_t v;
        if (parse_number(value, &v) < 0)
            return format_error(err, errlen, -EINVAL,
                                "Parameter 'refcount_bits' expects a number, got '%s'", value);
        if (!refcount_bits_valid(v))
            return format_error(err, errlen, -EINVAL,
                                "Refcount width must be a power of two and may not exceed 64 "
                                "bits (refcount_bits=%s)",
                                value);
        opts->refcount_bits = (unsigned)v;
        return 0;
    }
    if (strcmp(key, "compat") == 0) {
        if (strcmp(value, "0.10") == 0 || strcmp(value, "v2") == 0)
            opts->version = 2;
        else if (strcmp(value, "1.1") == 0 || strcmp(value, "v3") == 0)
            opts->version = 3;
        else
            return format_error(err, errlen, -EINVAL,
                                "Parameter 'compat' does not accept value '%s' (use 0.10, v2, "
                                "1.1 or v3)",
                                value);
        return 0;
    }
    if (strcmp(key, "compression_type") == 0) {
        if (strcmp(value, "zlib") == 0)
            opts->compression_type = QCOW2_COMPRESSION_ZLIB;
        else if (strcmp(value, "zstd") == 0)
            opts->compression_type = QCOW2_COMPRESSION_ZSTD;
        else
            return format_error(err, errlen, -EINVAL,
                                "Parameter 'compression_type' does not accept value '%s' (use "
                                "zlib or zstd)",
                                value);
        return 0;
    }
    if (strcmp(key, "preallocation") == 0) {
        static const char *const names[] = {"off", "metadata", "falloc", "full"};
        for (int i = 0; i < 4; i++) {
            if (strcmp(value, names[i]) == 0) {
                opts->preallocation = (enum qcow2_prealloc)i;
                return 0;
            }
        }
        return format_error(err, errlen, -EINVAL,
                            "Parameter 'preallocation' does not accept value '%s' (use off, "
                            "metadata, falloc or full)",
                            value);
    }
    /* The strings: checked by qcow2_create, where the whole set of options is known. */
    if (strcmp(key, "backing_file") == 0)
        opts->backing_file = value;
    else if (strcmp(key, "backing_fmt") == 0)
        opts->backing_fmt = value;
    else
        opts->data_file = value;
    return 0;
}

int qcow2_create_opts_set(struct qcow2_create_opts *opts, const char *key, const char *value,
                          char *err, size_t errlen)
{
    if (!opts || !key)
        return format_error(err, errlen, -EINVAL, "no option name given");
    struct qcow2_create_opts o;
    int ret = abi_copy_in(&abi_create_opts, &o, opts, err, errlen);
    if (ret == 0)
        ret = set_option(&o, key, value, err, errlen);
    if (ret == 0)
        ret = abi_copy_back(&abi_create_opts, opts, &o, key, err, errlen);
    return ret;
}

/* Is `list` a well-formed option list: no empty item (leading, trailing or doubled separator,
 * where ",," inside an item is an escaped comma, not a separator)? */
static bool option_list_valid(const char *list)
{
    if (list[0] == '\0' || (list[0] == ',' && list[1] != ','))
        return false;
    for (const char *p = list; *p; p++) {
        if (p[0] != ',')
            continue;
        if (p[1] == ',') {
            p++; /* escaped comma */
            continue;
        }
        if (p[1] == '\0')
            return false; /* trailing separator */
    }
    return true;
}

int qcow2_create_opts_parse(struct qcow2_create_opts *opts, char *list, char *err,
                            size_t errlen)
{
    if (!opts || !list)
        return format_error(err, errlen, -EINVAL, "no option list given");
    if (!option_list_valid(list))
        return format_error(err, errlen, -EINVAL, "Invalid option list: %s", list);
    /* Split in place: items are unescaped ("," for ",,") and NUL-terminated where they lie;
     * the write position never passes the read position. */
    char *r = list, *w = list;
    while (*r) {
        char *item = w;
        while (*r) {
            if (r[0] == ',' && r[1] == ',') {
                *w++ = ',';
                r += 2;
            } else if (r[0] == ',') {
                r++;
                break;
            } else {
                *w++ = *r++;
            }
        }
        *w++ = '\0';
        char *eq = strchr(item, '=');
        if (eq)
            *eq = '\0';
        int ret = qcow2_create_opts_set(opts, item, eq ? eq + 1 : NULL, err, errlen);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The layout of a new qcow2 image.
 *
 * qemu-img builds a new image in steps: a header at cluster 0, a one-cluster refcount table at
 * cluster 1 and an empty refcount block at cluster 2; it allocates clusters 0-2, then allocates
 * the L1 table with its ordinary cluster allocator. When the L1 table reaches past what the
 * first refcount block covers, that allocator adds refcount blocks in a particular order, and
 * when the refcount table is full it moves to a bigger one placed after everything else (the
 * old table's cluster becomes free). We replay those allocation decisions on an in-memory model
 * (every refcount is 0 or 1 here) so that our images are laid out exactly as qemu-img lays them
 * out. Nothing is written until the plan is complete. */

struct old_reftable {
    uint64_t cluster;  /* where it lay */
    uint64_t clusters;
    uint64_t *entries; /* its contents when it was retired (cluster indices, 0 = none) */
};

struct plan {
    unsigned cluster_bits;
    uint64_t cluster_size;
    uint64_t rb_entries;      /* refcounts per refcount block */
    uint8_t *used;            /* refcount (0/1) per cluster index */
    uint64_t used_len;        /* clusters covered by `used`; beyond: 0 */
    uint64_t free_index;      /* no free cluster below this one (QEMU's free_cluster_index) */
    uint64_t *reftable;       /* refcount block cluster per table index, 0 = none */
    uint64_t reftable_len;    /* entries */
    uint64_t reftable_cluster;
    uint64_t reftable_clusters;
    struct old_reftable *old;
    unsigned nb_old;
    uint64_t steps;           /* guards against a plan that does not converge */
};

#define PLAN_MAX_STEPS (1ull << 26)

static void plan_free(struct plan *p)
{
    free(p->used);
    free(p->reftable);
    for (unsigned i = 0; i < p->nb_old; i++)
        free(p->old[i].entries);
    free(p->old);
    memset(p, 0, sizeof(*p));
}

static uint64_t plan_refcount(const struct plan *p, uint64_t c)
{
    return c < p->used_len ? p->used[c] : 0;
}

static int plan_set(struct plan *p, uint64_t c, uint8_t v)
{
    if (c >= p->used_len) {
        if (!v)
            return 0;
        uint64_t len = MAX(c + 1, p->used_len * 2);
        len = MAX(len, 1024);
        uint8_t *n = realloc(p->used, len);
        if (!n)
            return -ENOMEM;
        memset(n + p->used_len, 0, len - p->used_len);
        p->used = n;
        p->used_len = len;
    }
    p->used[c] = v;
    return 0;
}

/* First fit from free_index, as QEMU scans: the index moves past every cluster looked at. */
static uint64_t plan_alloc_noref(struct plan *p, uint64_t n)
{
    uint64_t run = 0;
    while (run < n) {
        uint64_t c = p->free_index++;
        run = plan_refcount(p, c) ? 0 : run + 1;
    }
    return p->free_index - n;
}

/* How many refcount blocks cover `clusters` clusters plus the refcount blocks and table that
 * describe them all (a fixed point). `generous` adds room for half the table again, as QEMU
 * does when it grows the table. */
static uint64_t refblocks_needed(uint64_t clusters, const struct plan *p, bool generous)
{
    uint64_t per_table_cluster = p->cluster_size / TABLE_ENTRY_SIZE;
    uint64_t blocks = 0, table = 0, n = 0, last;
    do {
        last = n;
        blocks = DIV_ROUND_UP(clusters + table + blocks, p->rb_entries);
        table = DIV_ROUND_UP(blocks, per_table_cluster);
        n = clusters + blocks + table;
        if (n == last && generous) {
            clusters += DIV_ROUND_UP(table, 2);
            n = 0;
            generous = false;
        }
    } while (n != last);
    return blocks;
}

static int plan_update(struct plan *p, uint64_t first, uint64_t n, bool inc);

/* The refcount table is full: put new refcount blocks and a bigger table after everything in
 * use, each block describing itself and the table, and hook refcount block `nb` (for table
 * index `index`) into the new table. `c` is the cluster whose refcount was being set. */
static int plan_grow_reftable(struct plan *p, uint64_t c, uint64_t index, uint64_t nb)
{
    uint64_t blocks_used = DIV_ROUND_UP(MAX(c + 1, nb + 1), p->rb_entries);
    uint64_t meta_start = blocks_used * p->rb_entries;
    uint64_t total = refblocks_needed(meta_start, p, true);
    uint64_t per_cluster = p->cluster_size / TABLE_ENTRY_SIZE;
    uint64_t table_len = ROUND_UP(total + DIV_ROUND_UP(total, 2), per_cluster);
    uint64_t table_clusters = table_len / per_cluster;
    if (table_len * TABLE_ENTRY_SIZE > QCOW2_MAX_REFTABLE_BYTES || index >= total)
        return -EFBIG;

    uint64_t *table = calloc(table_len, sizeof(*table));
    struct old_reftable *olds = realloc(p->old, sizeof(*olds) * (p->nb_old + 1));
    if (!table || !olds) {
        free(table);
        if (olds)
            p->old = olds;
        return -ENOMEM;
    }
    p->old = olds;
    memcpy(table, p->reftable, sizeof(*table) * MIN(p->reftable_len, table_len));
    table[index] = nb;

    uint64_t additional = 0;
    for (uint64_t i = blocks_used; i < total; i++)
        additional += table[i] == 0;
    uint64_t table_start = meta_start + additional;
    uint64_t end = table_start + table_clusters;
    uint64_t next_block = meta_start;
    for (uint64_t i = blocks_used; i < total; i++)
        if (table[i] == 0)
            table[i] = next_block++;
    assert(next_block == table_start);
    assert(DIV_ROUND_UP(end, p->rb_entries) <= total);
    for (uint64_t k = meta_start; k < end; k++) {
        /* QEMU asserts this area is free; a plan that breaks the rule is refused, not written */
        int ret = plan_refcount(p, k) ? -EIO : plan_set(p, k, 1);
        if (ret < 0) {
            free(table);
            return ret;
        }
    }

    /* Retire the old table (its contents stay in the file, as qemu-img leaves them). */
    p->old[p->nb_old++] = (struct old_reftable){
        .cluster = p->reftable_cluster,
        .clusters = p->reftable_clusters,
        .entries = p->reftable,
    };
    uint64_t old_cluster = p->reftable_cluster, old_clusters = p->reftable_clusters;
    p->reftable = table;
    p->reftable_len = table_len;
    p->reftable_cluster = table_start;
    p->reftable_clusters = table_clusters;
    return plan_update(p, old_cluster, old_clusters, false);
}

/* Make sure the refcount block covering cluster `c` exists. Returns 0 if it did; -EAGAIN after
 * adding one (the new block may sit where the caller meant to allocate: look again). */
static int plan_need_block(struct plan *p, uint64_t c)
{
    uint64_t index = c / p->rb_entries;
    if (index < p->reftable_len && p->reftable[index])
        return 0;
    uint64_t nb = plan_alloc_noref(p, 1);
    if (nb / p->rb_entries == index) {
        if (plan_set(p, nb, 1) < 0) /* the block describes itself */
            return -ENOMEM;
    } else {
        int ret = plan_update(p, nb, 1, true);
        if (ret < 0)
            return ret;
    }
    if (index < p->reftable_len) {
        p->reftable[index] = nb;
        return -EAGAIN;
    }
    int ret = plan_grow_reftable(p, c, index, nb);
    return ret < 0 ? ret : -EAGAIN;
}

/* Set (inc) or clear the refcount of clusters [first, first + n). On failure, the clusters
 * already changed are changed back, which (for an increment) frees them again. */
static int plan_update(struct plan *p, uint64_t first, uint64_t n, bool inc)
{
    uint64_t block = UINT64_MAX;
    for (uint64_t c = first; c < first + n; c++) {
        if (++p->steps > PLAN_MAX_STEPS)
            return -ELOOP;
        if (c / p->rb_entries != block) {
            int ret = plan_need_block(p, c);
            if (ret < 0) {
                if (c > first) {
                    int undo = plan_update(p, first, c - first, !inc);
                    if (undo < 0 && undo != -EAGAIN)
                        return undo;
                }
                return ret;
            }
            block = c / p->rb_entries;
        }
        if (plan_set(p, c, inc) < 0)
            return -ENOMEM;
        if (!inc && c < p->free_index)
            p->free_index = c;
    }
    return 0;
}

/* Allocate `n` contiguous clusters with refcount 1. Returns the first one, or -errno. */
static int64_t plan_alloc(struct plan *p, uint64_t n)
{
    for (;;) {
        uint64_t first = plan_alloc_noref(p, n);
        int ret = plan_update(p, first, n, true);
        if (ret == 0)
            return (int64_t)first;
        if (ret != -EAGAIN)
            return ret;
    }
}

/* Plan the metadata of an image with `l1_bytes` of L1 table. *l1_cluster is 0 without one. */
static int plan_layout(struct plan *p, unsigned cluster_bits, unsigned refcount_order,
                       uint64_t l1_bytes, uint64_t *l1_cluster)
{
    memset(p, 0, sizeof(*p));
    p->cluster_bits = cluster_bits;
    p->cluster_size = 1ull << cluster_bits;
    p->rb_entries = p->cluster_size * 8 >> refcount_order;
    p->reftable_len = p->cluster_size / TABLE_ENTRY_SIZE;
    p->reftable = calloc(p->reftable_len, sizeof(*p->reftable));
    if (!p->reftable)
        return -ENOMEM;
    p->reftable_cluster = 1;
    p->reftable_clusters = 1;
    p->reftable[0] = 2;
    int64_t first = plan_alloc(p, 3); /* header, refcount table, refcount block */
    if (first < 0)
        return (int)first;
    assert(first == 0);
    *l1_cluster = 0;
    if (l1_bytes) {
        int64_t l1 = plan_alloc(p, DIV_ROUND_UP(l1_bytes, p->cluster_size));
        if (l1 < 0)
            return (int)l1;
        *l1_cluster = (uint64_t)l1;
    }
    return 0;
}

/* Store `value` at entry `index` of a refcount block of 2^order-bit entries: widths below a
 * byte packed LSB first, 8 bits and more big-endian. refcount.c encodes live images the same
 * way (refcount_block_set); the unit tests check that the two agree. */
static void refblock_put(uint8_t *block, uint64_t index, unsigned order, uint64_t value)
{
    unsigned bits = 1u << order;
    if (bits < 8) {
        unsigned per_byte = 8 / bits;
        unsigned shift = (unsigned)(index % per_byte) * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        uint8_t *b = &block[index / per_byte];
        *b = (uint8_t)((*b & ~mask) | ((value << shift) & mask));
        return;
    }
    switch (bits) {
    case 8:
        block[index] = (uint8_t)value;
        break;
    case 16:
        be16_put(block + index * 2, (uint16_t)value);
        break;
    case 32:
        be32_put(block + index * 4, (uint32_t)value);
        break;
    default:
        be64_put(block + index * 8, value);
        break;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Writing. */

static int write_zeros(struct qcow2_file *f, uint64_t offset, uint64_t len)
{
    if (len == 0)
        return 0;
    size_t chunk = (size_t)MIN(len, ZERO_CHUNK);
    uint8_t *z = calloc(1, chunk);
    if (!z)
        return -ENOMEM;
    int ret = 0;
    for (uint64_t done = 0; done < len && ret == 0; done += chunk)
        ret = file_pwrite(f, z, (size_t)MIN(chunk, len - done), offset + done);
    free(z);
    return ret;
}

/* Reserve space for [offset, offset + len), which reads as zeros (a freshly sized file):
 * fallocate where the file system can, else write the zeros (as posix_fallocate() would). */
static int reserve_zeroed(struct qcow2_file *f, uint64_t offset, uint64_t len)
{
    if (len == 0)
        return 0;
    int64_t before = file_allocated_bytes(f);
    int ret = file_zero(f, offset, len);
    if (ret == 0) {
        int64_t after = file_allocated_bytes(f);
        if (before >= 0 && after >= before && (uint64_t)(after - before) >= len)
            return 0;
        /* The file layer punched a hole instead of reserving space: write the zeros. */
    } else if (ret != -ENOTSUP) {
        return ret;
    }
    return write_zeros(f, offset, len);
}

static int write_table(struct qcow2_file *f, const uint64_t *entries, uint64_t nb_entries,
                       uint64_t clusters, const struct plan *p, uint64_t at_cluster)
{
    size_t bytes = (size_t)(clusters << p->cluster_bits);
    uint8_t *buf = calloc(1, bytes);
    if (!buf)
        return -ENOMEM;
    for (uint64_t i = 0; i < nb_entries && i < bytes / TABLE_ENTRY_SIZE; i++)
        be64_put(buf + i * TABLE_ENTRY_SIZE, entries[i] << p->cluster_bits);
    int ret = file_pwrite(f, buf, bytes, at_cluster << p->cluster_bits);
    free(buf);
    return ret;
}

/* Write everything the plan placed, then cluster 0, then make it durable. */
static int write_metadata(struct qcow2_file *f, const struct plan *p, unsigned refcount_order,
                          uint64_t l1_cluster, uint64_t l1_bytes, const uint8_t *cluster0)
{
    int ret = 0;
    /* Retired refcount tables first: anything reusing their clusters is written after. */
    for (unsigned i = 0; i < p->nb_old && ret == 0; i++)
        ret = write_table(f, p->old[i].entries,
                          p->old[i].clusters * p->cluster_size / TABLE_ENTRY_SIZE,
                          p->old[i].clusters, p, p->old[i].cluster);
    uint8_t *block = malloc(p->cluster_size);
    if (!block)
        return -ENOMEM;
    for (uint64_t i = 0; i < p->reftable_len && ret == 0; i++) {
        if (!p->reftable[i])
            continue;
        memset(block, 0, p->cluster_size);
        uint64_t first = i * p->rb_entries;
        for (uint64_t j = 0; j < p->rb_entries && first + j < p->used_len; j++)
            if (p->used[first + j])
                refblock_put(block, j, refcount_order, 1);
        ret = file_pwrite(f, block, p->cluster_size, p->reftable[i] << p->cluster_bits);
    }
    free(block);
    if (ret == 0)
        ret = write_table(f, p->reftable, p->reftable_len, p->reftable_clusters, p,
                          p->reftable_cluster);
    if (ret == 0)
        ret = write_zeros(f, l1_cluster << p->cluster_bits, l1_bytes);
    if (ret == 0)
        ret = file_pwrite(f, cluster0, p->cluster_size, 0);
    if (ret == 0)
        ret = file_flush(f);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Creating. */

static int create_raw(const char *path, const struct qcow2_create_opts *o, char *err,
                      size_t errlen)
{
    if (o->backing_file)
        return format_error(err, errlen, -EINVAL, "%s: format 'raw' does not support backing "
                            "files", path);
    if (o->data_file)
        return format_error(err, errlen, -EINVAL, "%s: format 'raw' does not support external "
                            "data files", path);
    if (o->preallocation == QCOW2_PREALLOC_METADATA)
        return format_error(err, errlen, -EINVAL, "%s: Unsupported preallocation mode: metadata",
                            path);
    struct qcow2_file *f;
    int ret = file_open(path, false, true, &f, err, errlen);
    if (ret < 0)
        return ret;
    const char *what = "setting the size";
    ret = file_truncate(f, o->size);
    if (ret == 0 && o->preallocation == QCOW2_PREALLOC_FALLOC) {
        what = "preallocating";
        ret = reserve_zeroed(f, 0, o->size);
    } else if (ret == 0 && o->preallocation == QCOW2_PREALLOC_FULL) {
        what = "writing zeros";
        ret = write_zeros(f, 0, o->size);
    }
    if (ret == 0) {
        what = "flushing";
        ret = file_flush(f);
    }
    file_close(f);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s: %s failed: %s", path, what, strerror(-ret));
    return 0;
}

/* The qemu-img rules for a qcow2 image (notes §6.3), checked before any file is touched. */
static int validate_qcow2(const char *path, const struct qcow2_create_opts *o, char *err,
                          size_t errlen)
{
#define REFUSE(...) return format_error(err, errlen, -EINVAL, __VA_ARGS__)
    if (o->version != 2 && o->version != 3)
        REFUSE("%s: unsupported qcow2 version %d (use compat=0.10 or compat=1.1)", path,
               o->version);
    if (!cluster_size_valid(o->cluster_size))
        REFUSE("%s: Cluster size must be a power of two between 512 and 2048k "
               "(cluster_size=%u)", path, o->cluster_size);
    if (o->extended_l2 && o->version < 3)
        REFUSE("%s: Extended L2 entries are only supported with compatibility level 1.1 and "
               "above (use compat=1.1)", path);
    if (o->extended_l2 && o->cluster_size < MIN_CLUSTER_SIZE_EXTL2)
        REFUSE("%s: Extended L2 entries are only supported with cluster sizes of at least "
               "%u bytes (cluster_size=%u)", path, MIN_CLUSTER_SIZE_EXTL2, o->cluster_size);
    if ((unsigned)o->preallocation > QCOW2_PREALLOC_FULL)
        REFUSE("%s: unknown preallocation mode %d", path, (int)o->preallocation);
    if (o->backing_file && o->preallocation != QCOW2_PREALLOC_OFF && !o->extended_l2)
        REFUSE("%s: Backing file and preallocation can only be used at the same time if "
               "extended_l2 is on", path);
    if (o->backing_fmt && !o->backing_file)
        REFUSE("%s: Backing format cannot be used without backing file", path);
    if (o->lazy_refcounts && o->version < 3)
        REFUSE("%s: Lazy refcounts only supported with compatibility level 1.1 and above "
               "(use compat=1.1)", path);
    if (!refcount_bits_valid(o->refcount_bits))
        REFUSE("%s: Refcount width must be a power of two and may not exceed 64 bits "
               "(refcount_bits=%u)", path, o->refcount_bits);
    if (o->version < 3 && o->refcount_bits != DEFAULT_REFCOUNT_BITS)
        REFUSE("%s: Different refcount widths than 16 bits require compatibility level 1.1 "
               "or above (use compat=1.1)", path);
    if (o->data_file && o->version < 3)
        REFUSE("%s: External data files are only supported with compatibility level 1.1 and "
               "above (use compat=1.1)", path);
    if (o->data_file_raw && !o->data_file)
        REFUSE("%s: data_file_raw requires data_file", path);
    if (o->data_file_raw && o->backing_file)
        REFUSE("%s: Backing file and data_file_raw cannot be used at the same time", path);
    if ((unsigned)o->compression_type > QCOW2_COMPRESSION_ZSTD)
        REFUSE("%s: unknown compression type %d", path, (int)o->compression_type);
    if (o->compression_type != QCOW2_COMPRESSION_ZLIB && o->version < 3)
        REFUSE("%s: Non-zlib compression type is only supported with compatibility level 1.1 "
               "and above (use compat=1.1)", path);
    if (o->backing_file) {
        if (!o->backing_file[0])
            REFUSE("%s: Expected backing file name, got empty string", path);
        if (strcmp(o->backing_file, path) == 0)
            REFUSE("%s: Trying to create an image with the same filename as the backing file",
                   path);
        if (strlen(o->backing_file) > QCOW2_MAX_BACKING_FILE_SIZE)
            REFUSE("%s: backing file name is too long (%zu bytes, at most %d)", path,
                   strlen(o->backing_file), QCOW2_MAX_BACKING_FILE_SIZE);
    }
    if (o->backing_fmt && strcmp(o->backing_fmt, "qcow2") != 0 &&
        strcmp(o->backing_fmt, "raw") != 0)
        REFUSE("%s: unsupported backing format '%s' (use qcow2 or raw)", path, o->backing_fmt);
    if (o->data_file && !o->data_file[0])
        REFUSE("%s: Expected data file name, got empty string", path);
    return 0;
#undef REFUSE
}

/* What the backing file looks like, for messages: "qcow2", "raw", or NULL (unreadable). */
static const char *probe_format(const char *full)
{
    struct qcow2_file *f;
    if (file_open(full, true, false, &f, NULL, 0) < 0)
        return NULL;
    uint8_t magic[4] = {0};
    int ret = file_pread(f, magic, sizeof(magic), 0);
    file_close(f);
    if (ret < 0)
        return NULL;
    return be32_get(magic) == QCOW2_MAGIC ? "qcow2" : "raw";
}

/* The backing file's format must be named (qemu-img 7.2 refuses to guess). Without a size the
 * new image takes the backing image's size: then the backing chain is opened, as qemu-img does,
 * and must be readable. With a size, the backing file is not opened (qemu-img -u). */
static int inspect_backing(const char *path, struct qcow2_create_opts *o, char *err,
                           size_t errlen)
{
    char *full = image_resolve_path(path, o->backing_file);
    if (!full)
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", path);
    int ret = 0;
    if (!o->backing_fmt) {
        const char *fmt = probe_format(full);
        if (fmt)
            ret = format_error(err, errlen, -EINVAL,
                               "%s: Backing file specified without backing format (set "
                               "backing_fmt; '%s' looks like %s)",
                               path, o->backing_file, fmt);
        else
            ret = format_error(err, errlen, -EINVAL,
                               "%s: Backing file specified without backing format (set "
                               "backing_fmt)",
                               path);
    } else if (o->size == 0) {
        struct qcow2_open_opts oo = QCOW2_OPEN_OPTS_INIT;
        oo.read_only = 1;
        oo.format = strcmp(o->backing_fmt, "raw") == 0 ? QCOW2_FORMAT_RAW : QCOW2_FORMAT_QCOW2;
        struct qcow2_image *b;
        char msg[QCOW2_ERROR_MAX];
        ret = qcow2_open(full, &oo, &b, msg, sizeof(msg));
        if (ret < 0) {
            format_error(err, errlen, ret, "%s: could not open the backing file: %s", path,
                         msg);
        } else {
            o->size = qcow2_get_size(b);
            qcow2_close(b);
        }
    }
    free(full);
    return ret;
}

/* cluster 0 of the new image. */
static int build_header(const char *path, const struct qcow2_create_opts *o,
                        unsigned cluster_bits, unsigned refcount_order, uint32_t l1_size,
                        uint64_t l1_cluster, const struct plan *p, uint8_t *cluster0,
                        char *err, size_t errlen)
{
    struct qcow2_header h;
    memset(&h, 0, sizeof(h));
    h.version = (uint32_t)o->version;
    h.cluster_bits = cluster_bits;
    h.size = o->size;
    h.crypt_method = QCOW2_CRYPT_NONE;
    h.l1_size = l1_size;
    h.l1_table_offset = l1_size ? l1_cluster << cluster_bits : 0;
    h.refcount_table_offset = p->reftable_cluster << cluster_bits;
    h.refcount_table_clusters = (uint32_t)p->reftable_clusters;
    h.refcount_order = refcount_order;
    if (o->data_file)
        h.incompatible_features |= QCOW2_INCOMPAT_DATA_FILE;
    if (o->compression_type == QCOW2_COMPRESSION_ZSTD) {
        h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
        h.compression_type = QCOW2_COMPRESSION_TYPE_ZSTD;
    }
    if (o->extended_l2)
        h.incompatible_features |= QCOW2_INCOMPAT_EXTL2;
    if (o->lazy_refcounts)
        h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    if (o->data_file_raw)
        h.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;

    int ret = 0;
    if ((o->backing_file && !(h.backing_file = strdup(o->backing_file))) ||
        (o->backing_fmt && !(h.backing_fmt = strdup(o->backing_fmt))) ||
        (o->data_file && !(h.data_file = strdup(o->data_file))))
        ret = -ENOMEM;
    /* qemu-img writes the feature name table into v3 images with clusters above 4 KiB. */
    if (ret == 0 && o->version >= 3 && (1u << cluster_bits) >= FEATURE_TABLE_MIN_CLUSTER)
        ret = header_set_default_feature_table(&h);
    if (ret < 0) {
        header_free(&h);
        return format_error(err, errlen, ret, "%s: out of memory", path);
    }
    char msg[QCOW2_ERROR_MAX];
    ret = header_serialize(&h, cluster0, (size_t)1 << cluster_bits, msg, sizeof(msg));
    header_free(&h);
    if (ret < 0)
        return format_error(err, errlen, ret, "%s: %s (cluster_size=%u)", path, msg,
                            1u << cluster_bits);
    return 0;
}

/* Create (or truncate) the external data file with the image's size, as qemu-img does. The
 * name is resolved against the image's directory, as it is when the image is opened. */
static int create_data_file(const char *path, const struct qcow2_create_opts *o, char *err,
                            size_t errlen)
{
    char *full = image_resolve_path(path, o->data_file);
    if (!full)
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", path);
    if (strcmp(full, path) == 0) {
        free(full);
        return format_error(err, errlen, -EINVAL,
                            "%s: the external data file cannot be the image itself", path);
    }
    struct qcow2_file *f;
    char msg[QCOW2_ERROR_MAX];
    int ret = file_open(full, false, true, &f, msg, sizeof(msg));
    if (ret < 0) {
        free(full);
        return format_error(err, errlen, ret, "%s: external data file: %s", path, msg);
    }
    ret = file_truncate(f, o->size);
    if (ret == 0)
        ret = file_flush(f);
    file_close(f);
    if (ret < 0)
        format_error(err, errlen, ret, "%s: sizing the external data file %s failed: %s", path,
                     full, strerror(-ret));
    free(full);
    return ret;
}

static int preallocate(const char *path, const struct qcow2_create_opts *o, char *err,
                       size_t errlen)
{
    struct qcow2_open_opts oo = QCOW2_OPEN_OPTS_INIT;
    oo.format = QCOW2_FORMAT_QCOW2;
    oo.no_backing = 1; /* preallocated clusters never read the backing file */
    struct qcow2_image *img;
    char msg[QCOW2_ERROR_MAX];
    int ret = qcow2_open(path, &oo, &img, msg, sizeof(msg));
    if (ret < 0)
        return format_error(err, errlen, ret, "%s: reopening for preallocation failed: %s",
                            path, msg);
    ret = io_preallocate(img, 0, o->size, o->preallocation);
    if (ret < 0)
        format_error(err, errlen, ret, "%s", qcow2_error(img));
    int cret = qcow2_close(img);
    if (ret == 0 && cret < 0)
        ret = format_error(err, errlen, cret, "%s: closing after preallocation failed: %s",
                           path, strerror(-cret));
    return ret;
}

static int create_qcow2(const char *path, struct qcow2_create_opts *o, char *err,
                        size_t errlen)
{
    int ret = validate_qcow2(path, o, err, errlen);
    if (ret < 0)
        return ret;
    if (o->data_file_raw && o->preallocation == QCOW2_PREALLOC_OFF)
        o->preallocation = QCOW2_PREALLOC_METADATA; /* the data file must be a raw image */
    if (o->backing_file && (ret = inspect_backing(path, o, err, errlen)) < 0)
        return ret;
    if (o->size > (uint64_t)INT64_MAX - (SECTOR_SIZE - 1))
        return format_error(err, errlen, -EFBIG, "%s: image size %llu is too large", path,
                            (unsigned long long)o->size);
    o->size = ROUND_UP(o->size, SECTOR_SIZE); /* qemu-img rounds up to whole sectors */

    unsigned cluster_bits = (unsigned)__builtin_ctz(o->cluster_size);
    unsigned refcount_order = (unsigned)__builtin_ctz(o->refcount_bits);
    unsigned l2_bits = cluster_bits - (o->extended_l2 ? 4 : 3);
    uint64_t l1_size = DIV_ROUND_UP(o->size, 1ull << (cluster_bits + l2_bits));
    if (l1_size > QCOW2_MAX_L1_BYTES / TABLE_ENTRY_SIZE)
        return format_error(err, errlen, -EFBIG,
                            "%s: The image size is too large for file format 'qcow2' (try "
                            "using a larger cluster size)",
                            path);

    struct plan p;
    uint64_t l1_cluster;
    uint64_t l1_bytes = l1_size * TABLE_ENTRY_SIZE;
    ret = plan_layout(&p, cluster_bits, refcount_order, l1_bytes, &l1_cluster);
    if (ret < 0) {
        plan_free(&p);
        return format_error(err, errlen, ret == -ELOOP ? -EIO : ret,
                            "%s: planning the metadata layout failed: %s", path,
                            ret == -ELOOP ? "it does not converge" : strerror(-ret));
    }
    uint8_t *cluster0 = malloc(o->cluster_size);
    if (!cluster0) {
        plan_free(&p);
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", path);
    }
    ret = build_header(path, o, cluster_bits, refcount_order, (uint32_t)l1_size, l1_cluster,
                       &p, cluster0, err, errlen);
    if (ret == 0 && o->data_file)
        ret = create_data_file(path, o, err, errlen);
    if (ret == 0) {
        struct qcow2_file *f;
        ret = file_open(path, false, true, &f, err, errlen);
        if (ret == 0) {
            ret = write_metadata(f, &p, refcount_order, l1_cluster, l1_bytes, cluster0);
            file_close(f);
            if (ret < 0)
                format_error(err, errlen, ret, "%s: writing the image failed: %s", path,
                             strerror(-ret));
        }
    }
    free(cluster0);
    plan_free(&p);
    if (ret == 0 && o->preallocation != QCOW2_PREALLOC_OFF && o->size > 0)
        ret = preallocate(path, o, err, errlen);
    return ret;
}

int create_opts_copy_in(struct qcow2_create_opts *o, const struct qcow2_create_opts *opts,
                        char *err, size_t errlen)
{
    int ret = abi_copy_in(&abi_create_opts, o, opts, err, errlen);
    if (ret < 0)
        return ret;
    /* Zero fields mean the defaults. */
    if (o->format == QCOW2_FORMAT_PROBE)
        o->format = QCOW2_FORMAT_QCOW2;
    if (o->version == 0)
        o->version = 3;
    if (o->cluster_size == 0)
        o->cluster_size = DEFAULT_CLUSTER_SIZE;
    if (o->refcount_bits == 0)
        o->refcount_bits = DEFAULT_REFCOUNT_BITS;
    return 0;
}

int qcow2_create(const char *path, const struct qcow2_create_opts *opts, char *err,
                 size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!path || !path[0])
        return format_error(err, errlen, -EINVAL, "no file name given");
    if (!opts)
        return format_error(err, errlen, -EINVAL, "%s: no options given", path);
    struct qcow2_create_opts o; /* the caller's options in this library's struct version */
    int ret = create_opts_copy_in(&o, opts, err, errlen);
    if (ret < 0)
        return ret;

    switch (o.format) {
    case QCOW2_FORMAT_RAW:
        if (o.size > (uint64_t)INT64_MAX - (SECTOR_SIZE - 1))
            return format_error(err, errlen, -EFBIG, "%s: image size %llu is too large", path,
                                (unsigned long long)o.size);
        o.size = ROUND_UP(o.size, SECTOR_SIZE);
        return create_raw(path, &o, err, errlen);
    case QCOW2_FORMAT_QCOW2:
        return create_qcow2(path, &o, err, errlen);
    default:
        return format_error(err, errlen, -EINVAL, "%s: unknown image format %d", path,
                            (int)o.format);
    }
}
