/* cache.c - caches of fixed-size metadata tables (L2 slices, refcount blocks) by host offset.
 * Owns the LRU policy, dirty tracking and write-back order between caches (a cache may depend
 * on another cache being flushed first, or on a flush of the image file). Reads and writes the
 * image file through file.c only; knows nothing of what the tables mean. Callers hold
 * img->lock. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define NO_ENTRY UINT32_MAX

struct cache_entry {
    uint64_t offset; /* 0 = empty slot (offset 0 is the header: never a table) */
    uint64_t lru;
    uint32_t hnext;  /* next entry in the same hash bucket */
    int ref;
    bool dirty;
};

struct table_cache {
    struct cache_head head; /* first: internal.h reads it inline (cache_hot) */
    struct qcow2_image *img;
    const char *what;
    size_t table_size;
    unsigned table_bits; /* log2(table_size): slot arithmetic shifts, it does not divide */
    unsigned nb_entries;
    struct cache_entry *entries;
    uint8_t *tables;
    uint32_t *buckets;
    unsigned nb_buckets; /* power of two */
    uint64_t lru_clock;
    uint32_t hand; /* where find_victim() looks first: just past the last slot it took */
    /* The slot cache_find() found last, a hint checked against the offset before use:
     * consecutive requests mostly map through the same slice and count in the same refcount
     * block, so one compare replaces the hash and the chain walk. */
    uint32_t last_found;
    struct table_cache *depends; /* must be flushed before we write */
    /* Before any of our tables is written, `sync_file` must be durable up to `sync_point`
     * (0: nothing to wait for): the guest data that changed L2 entries make readable. */
    struct qcow2_file *sync_file;
    uint64_t sync_point;
    /* Our tables written so far are durable once the image file is synced up to here
     * (0: none written). */
    uint64_t written_point;
    unsigned nb_dirty;
    unsigned overlap_ignore; /* structures this cache's tables may overlap (their own kind) */
    bool overlap_checks;
};

_Static_assert(offsetof(struct table_cache, head) == 0, "cache_hot() reads the head in place");

/* Something a hot table (struct cache_head) relies on may have changed: a slot took or
 * dropped a table, a dirty table was written or dropped, or an entry was stamped, so the hot
 * one may no longer be the youngest. */
static void head_changed(struct table_cache *c)
{
    c->head.stamp++;
}

/* Stamp entry `i` as the most recently used. */
static void stamp_entry(struct table_cache *c, uint32_t i)
{
    c->entries[i].lru = ++c->lru_clock;
    head_changed(c);
}

void cache_set_overlap_ignore(struct table_cache *c, unsigned ignore)
{
    c->overlap_ignore = ignore;
    c->overlap_checks = true;
}

static unsigned bucket_of(const struct table_cache *c, uint64_t offset)
{
    /* Tables sit on multiples of 512 bytes at least; a shift, not a division, on every
     * lookup (the high bits of a multiplicative hash spread any stride). */
    uint64_t h = (offset >> 9) * 0x9e3779b97f4a7c15ull;
    return (unsigned)(h >> 32) & (c->nb_buckets - 1);
}

static uint8_t *table_of(const struct table_cache *c, uint32_t i)
{
    return c->tables + ((size_t)i << c->table_bits);
}

/* Memory for the tables. A big cache is backed by huge pages where the system offers them
 * (transparent huge pages in "madvise" mode): filling 32 MiB of 4 KiB slices otherwise takes
 * 8192 page faults, which cost more than the tables' reads in a virtual machine that
 * shadows page tables (a convert of a sparse 16 TiB disk fills two such caches). */
static uint8_t *alloc_tables(size_t bytes)
{
    enum { HUGE_PAGE = 2u << 20 };
    size_t align = bytes >= HUGE_PAGE ? HUGE_PAGE : 4096;
    void *mem = NULL;
    if (posix_memalign(&mem, align, bytes) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE)
        (void)madvise(mem, bytes, MADV_HUGEPAGE); /* a hint: 4 KiB pages otherwise */
#endif
    return mem;
}

struct table_cache *cache_new(struct qcow2_image *img, const char *what, size_t table_size,
                              unsigned nb_entries)
{
    assert(IS_POWER_OF_2(table_size)); /* lookups mask, they do not divide */
    assert(nb_entries > 0);            /* cache_find() looks at slot 0 before any lookup */
    struct table_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->head.stamp = 1; /* hot_stamp 0: no hot table yet */
    c->img = img;
    c->what = what;
    c->table_size = table_size;
    c->table_bits = (unsigned)__builtin_ctzll(table_size);
    c->nb_entries = nb_entries;
    c->nb_buckets = 1;
    while (c->nb_buckets < nb_entries * 2)
        c->nb_buckets <<= 1;
    c->entries = calloc(nb_entries, sizeof(*c->entries));
    c->buckets = malloc(sizeof(*c->buckets) * c->nb_buckets);
    c->tables = alloc_tables(table_size * nb_entries);
    if (!c->entries || !c->buckets || !c->tables) {
        cache_free(c);
        return NULL;
    }
    for (unsigned i = 0; i < c->nb_buckets; i++)
        c->buckets[i] = NO_ENTRY;
    return c;
}

void cache_free(struct table_cache *c)
{
    if (!c)
        return;
    free(c->entries);
    free(c->buckets);
    free(c->tables);
    free(c);
}

size_t cache_table_size(const struct table_cache *c)
{
    return c->table_size;
}

bool cache_is_dirty(const struct table_cache *c)
{
    return c->nb_dirty > 0;
}

static uint32_t lookup(const struct table_cache *c, uint64_t offset)
{
    for (uint32_t i = c->buckets[bucket_of(c, offset)]; i != NO_ENTRY; i = c->entries[i].hnext)
        if (c->entries[i].offset == offset)
            return i;
    return NO_ENTRY;
}

static void unhash(struct table_cache *c, uint32_t i)
{
    uint32_t *link = &c->buckets[bucket_of(c, c->entries[i].offset)];
    while (*link != i) {
        assert(*link != NO_ENTRY);
        link = &c->entries[*link].hnext;
    }
    *link = c->entries[i].hnext;
    c->entries[i].offset = 0;
    head_changed(c);
}

static void hash_in(struct table_cache *c, uint32_t i, uint64_t offset)
{
    unsigned b = bucket_of(c, offset);
    c->entries[i].offset = offset;
    c->entries[i].hnext = c->buckets[b];
    c->buckets[b] = i;
    head_changed(c);
}

/* What must reach the disk before any of our tables may be written. The two needs are
 * separate facts, each satisfied by its own test: flushing the dependency cache may need no
 * fsync at all (nothing dirty, or another thread synced it), which says nothing about the
 * guest data our entries point to. */
static int write_prerequisites(struct table_cache *c)
{
    if (c->depends) {
        int ret = cache_flush(c->depends);
        if (ret < 0)
            return ret;
        c->depends = NULL;
    }
    if (c->sync_point) {
        int ret = file_sync_to(c->sync_file, c->sync_point);
        if (ret < 0)
            return set_error(c->img, ret, "flush before writing %s failed: %s", c->what,
                             strerror(-ret));
        c->sync_point = 0;
    }
    return 0;
}

/* Is the table at `offset` cached and dirty? Its slot in *i. */
static bool dirty_at(const struct table_cache *c, uint64_t offset, uint32_t *i)
{
    *i = lookup(c, offset);
    return *i != NO_ENTRY && c->entries[*i].dirty;
}

/* Write table `i` if dirty, together with the dirty tables cached next to it in the same
 * cluster (the slices of one L2 table): one request for what a new table made dirty at once,
 * not one per slice. Same writes, so the same ordering: nothing is flushed between them. */
static int write_entry(struct table_cache *c, uint32_t i)
{
    struct cache_entry *e = &c->entries[i];
    if (!e->dirty)
        return 0;
    int ret = write_prerequisites(c);
    if (ret < 0)
        return ret;
    uint64_t cluster = c->img->cluster_size;
    enum { RUN_MAX = 64 };
    uint64_t first = e->offset;
    uint32_t slot[RUN_MAX], n = 0, j;
    for (unsigned back = 1; back < RUN_MAX / 2 && (first & (cluster - 1)) &&
                            dirty_at(c, first - c->table_size, &j);
         back++)
        first -= c->table_size;
    for (uint64_t o = first; n < RUN_MAX && (o == first || (o & (cluster - 1)));
         o += c->table_size) {
        if (o != e->offset && !dirty_at(c, o, &j))
            break;
        slot[n++] = o == e->offset ? i : j;
    }
    struct iovec iov[RUN_MAX];
    for (uint32_t k = 0; k < n; k++) {
        if (c->overlap_checks &&
            (ret = overlap_check(c->img, c->entries[slot[k]].offset, c->table_size,
                                 c->overlap_ignore)) < 0)
            return ret;
        iov[k] = (struct iovec){.iov_base = table_of(c, slot[k]), .iov_len = c->table_size};
    }
    ret = file_pwritev(c->img->file, iov, (int)n, first);
    if (ret < 0)
        return set_error(c->img, ret, "writing %s at 0x%llx failed: %s", c->what,
                         (unsigned long long)first, strerror(-ret));
    for (uint32_t k = 0; k < n; k++) {
        c->entries[slot[k]].dirty = false;
        c->nb_dirty--;
    }
    head_changed(c);
    c->written_point = file_sync_point(c->img->file);
    return 0;
}

static int cmp_by_offset(const void *a, const void *b, void *arg)
{
    const struct table_cache *c = arg;
    uint64_t x = c->entries[*(const uint32_t *)a].offset;
    uint64_t y = c->entries[*(const uint32_t *)b].offset;
    return x < y ? -1 : x > y;
}

/* Write the dirty tables last used at or before `stamp` (all: UINT64_MAX). */
static int write_used_before(struct table_cache *c, uint64_t stamp)
{
    if (c->nb_dirty == 0)
        return 0;
    uint32_t *order = malloc(sizeof(*order) * c->nb_dirty);
    if (!order)
        return set_error(c->img, -ENOMEM, "out of memory");
    unsigned n = 0;
    for (uint32_t i = 0; i < c->nb_entries; i++)
        if (c->entries[i].dirty && c->entries[i].lru <= stamp)
            order[n++] = i;
    /* Ascending host offsets: kinder to the disk, and deterministic for crash tests. */
    qsort_r(order, n, sizeof(*order), cmp_by_offset, c);
    int ret = 0;
    for (unsigned k = 0; k < n && ret == 0; k++)
        ret = write_entry(c, order[k]);
    free(order);
    return ret;
}

int cache_write(struct table_cache *c)
{
    return write_used_before(c, UINT64_MAX);
}

int cache_flush(struct table_cache *c)
{
    int ret = cache_write(c);
    if (ret < 0)
        return ret;
    /* Tables written earlier without an fsync (cache_write) count too: a cache that depends
     * on us needs them on disk, not just written. A flush by anyone since then will do. */
    if (!c->written_point)
        return 0;
    ret = file_sync_to(c->img->file, c->written_point);
    if (ret < 0)
        return set_error(c->img, ret, "flush failed: %s", strerror(-ret));
    return 0;
}

static __attribute__((noinline)) int change_dependency(struct table_cache *c,
                                                       struct table_cache *dep);

int cache_set_dependency(struct table_cache *c, struct table_cache *dep)
{
    /* Every allocating write asks again: the usual answer in two loads, with none of the
     * registers the change needs. */
    return c->depends == dep && !dep->depends ? 0 : change_dependency(c, dep);
}

static int change_dependency(struct table_cache *c, struct table_cache *dep)
{
    /* Only one level of dependency is kept: resolve deeper chains now. */
    if (dep->depends) {
        int ret = cache_flush(dep->depends);
        if (ret < 0)
            return ret;
        dep->depends = NULL;
    }
    if (c->depends && c->depends != dep) {
        int ret = cache_flush(c->depends);
        if (ret < 0)
            return ret;
    }
    c->depends = dep;
    return 0;
}

void cache_depends_on_flush(struct table_cache *c, struct qcow2_file *f)
{
    /* One file per cache: an L2 cache waits only for the image's data file. */
    assert(!c->sync_point || c->sync_file == f);
    c->sync_file = f;
    c->sync_point = MAX(c->sync_point, file_sync_point(f));
}

/* Find a slot for a new table: a free one, else an old unpinned one. Looking at every slot on
 * each miss made a scan through more tables than the cache holds quadratic (8192 slots
 * compared for each of the 262144 slices of a 16 TiB disk), so the search starts at a clock
 * hand, just past the slot taken last, and stops at the first free slot or the first table
 * stamped in the older half of the stamps still in the cache, taking the oldest unpinned
 * table seen up to there. Filling the cache and streaming through it then cost one step per
 * miss; tables in use are restamped (cache_find) and skipped. */
static int find_victim(struct table_cache *c, uint32_t *out)
{
    uint32_t best = NO_ENTRY, i = c->hand;
    uint64_t half = c->nb_entries / 2;
    uint64_t old_enough = c->lru_clock > half ? c->lru_clock - half : 0;
    for (unsigned k = 0; k < c->nb_entries; k++, i++) {
        if (i >= c->nb_entries)
            i = 0;
        struct cache_entry *e = &c->entries[i];
        if (e->offset == 0) {
            best = i;
            break;
        }
        if (e->ref != 0)
            continue;
        if (best == NO_ENTRY || e->lru < c->entries[best].lru)
            best = i;
        if (e->lru <= old_enough)
            break;
    }
    if (best == NO_ENTRY)
        return set_error(c->img, -ENOMEM, "%s cache is full (all entries in use)", c->what);
    if (c->entries[best].offset) {
        /* A dirty victim from the older half: write that whole half back with it, so that
         * its prerequisites (a refcount flush, a sync of the data) are paid once for many
         * tables, and the next misses find clean victims. Writing tables in a cluster of new
         * data (a copy of a sparse disk) otherwise costs a sync for every table. */
        int ret = c->entries[best].dirty && c->entries[best].lru <= old_enough
                      ? write_used_before(c, old_enough)
                      : 0;
        if (ret == 0)
            ret = write_entry(c, best);
        if (ret < 0)
            return ret;
        unhash(c, best);
    }
    c->hand = best + 1 < c->nb_entries ? best + 1 : 0;
    *out = best;
    return 0;
}

static int do_get(struct table_cache *c, uint64_t offset, void **table, bool read)
{
    assert(offset != 0 && (offset & (c->table_size - 1)) == 0);
    uint32_t i = lookup(c, offset);
    if (i == NO_ENTRY) {
        int ret = find_victim(c, &i);
        if (ret < 0)
            return ret;
        if (read) {
            ret = file_pread(c->img->file, table_of(c, i), c->table_size, offset);
            if (ret < 0)
                return set_error(c->img, ret, "reading %s at 0x%llx failed: %s", c->what,
                                 (unsigned long long)offset, strerror(-ret));
        }
        hash_in(c, i, offset);
        c->entries[i].dirty = false;
    }
    c->entries[i].ref++;
    stamp_entry(c, i);
    *table = table_of(c, i);
    return 0;
}

int cache_get(struct table_cache *c, uint64_t offset, void **table)
{
    return do_get(c, offset, table, true);
}

int cache_get_empty(struct table_cache *c, uint64_t offset, void **table)
{
    return do_get(c, offset, table, false);
}

const void *cache_find(struct table_cache *c, uint64_t offset)
{
    /* A hit writes nothing unless the entry's stamp is old: lookups from several threads then
     * only read the entries, and their cache lines stay shared between CPUs instead of
     * moving with every request. An entry stamped within the last eighth of the cache's
     * stamps is young enough that no eviction would pick it anyway. */
    uint32_t i = c->last_found;
    if (offset == 0 || c->entries[i].offset != offset) {
        i = lookup(c, offset);
        if (i == NO_ENTRY)
            return NULL;
        c->last_found = i;
    }
    if (c->lru_clock - c->entries[i].lru > c->nb_entries / 8)
        stamp_entry(c, i);
    return table_of(c, i);
}

int cache_peek(struct table_cache *c, uint64_t offset, const void **table)
{
    *table = cache_find(c, offset);
    if (*table)
        return 0;
    void *t;
    int ret = do_get(c, offset, &t, true);
    if (ret < 0)
        return ret;
    *table = t;
    cache_put(c, &t); /* the caller makes no other cache call while it looks */
    return 0;
}

int cache_read_ahead(struct table_cache *c, uint64_t offset, unsigned count)
{
    assert(offset != 0 && (offset & (c->table_size - 1)) == 0);
    count = MIN(count, c->nb_entries / 4);
    if (count < 2)
        return 0;
    /* Slots for the tables up to the first one cached already, pinned so that the search
     * for the next slot cannot take them again. */
    uint32_t slot[count];
    unsigned n = 0;
    int ret = 0;
    for (; n < count; n++) {
        uint64_t o = offset + (uint64_t)n * c->table_size;
        if (lookup(c, o) != NO_ENTRY || (ret = find_victim(c, &slot[n])) < 0)
            break;
        hash_in(c, slot[n], o);
        c->entries[slot[n]].dirty = false;
        c->entries[slot[n]].ref++;
    }
    /* Streaming through a table, the victim search hands out slots one after another: read
     * straight into them, not through a buffer and a copy. */
    bool adjacent = true;
    for (unsigned k = 1; k < n && adjacent; k++)
        adjacent = slot[k] == slot[0] + k;
    size_t bytes = (size_t)n * c->table_size;
    uint8_t *buf = adjacent || n == 0 ? NULL : malloc(bytes);
    bool ok = n > 0 && (adjacent || buf) &&
              file_pread(c->img->file, adjacent ? table_of(c, slot[0]) : buf, bytes, offset) == 0;
    for (unsigned k = 0; k < n; k++) {
        struct cache_entry *e = &c->entries[slot[k]];
        e->ref--;
        if (!ok) {
            unhash(c, slot[k]); /* left to the table's own read, which reports what fails */
            continue;
        }
        if (buf)
            memcpy(table_of(c, slot[k]), buf + (size_t)k * c->table_size, c->table_size);
        stamp_entry(c, slot[k]);
    }
    free(buf);
    return ret;
}

static uint32_t index_of(const struct table_cache *c, const void *table)
{
    size_t d = (size_t)((const uint8_t *)table - c->tables);
    assert((d & (c->table_size - 1)) == 0 && (d >> c->table_bits) < c->nb_entries);
    return (uint32_t)(d >> c->table_bits);
}

bool cache_holds(const struct table_cache *c, const void *table, uint64_t offset)
{
    return table && c->entries[index_of(c, table)].offset == offset;
}

void cache_put(struct table_cache *c, void **table)
{
    if (!*table)
        return;
    uint32_t i = index_of(c, *table);
    assert(c->entries[i].ref > 0);
    c->entries[i].ref--;
    *table = NULL;
}

void cache_mark_dirty_slow(struct table_cache *c, void *table)
{
    uint32_t i = index_of(c, table);
    assert(c->entries[i].offset != 0);
    if (!c->entries[i].dirty) {
        c->entries[i].dirty = true;
        c->nb_dirty++;
    }
    /* The table becomes the hot one: stamped youngest, so that while it stays hot, skipping
     * the stamp a lookup would give it (cache_hot) changes no eviction. */
    stamp_entry(c, i);
    c->head.hot_offset = c->entries[i].offset;
    c->head.hot_table = table;
    c->head.hot_stamp = c->head.stamp;
}

/* Every table of the cluster at `offset`: a refcount block is one cluster, an L2 table
 * several slices. */
#define for_each_table_of_cluster(c, o, offset)                                                \
    for (uint64_t o = (offset); o < (offset) + MAX((c)->img->cluster_size, (c)->table_size);   \
         o += (c)->table_size)

bool cache_pinned(const struct table_cache *c, uint64_t offset)
{
    for_each_table_of_cluster(c, o, offset) {
        uint32_t i = lookup(c, o);
        if (i != NO_ENTRY && c->entries[i].ref > 0)
            return true;
    }
    return false;
}

int cache_discard(struct table_cache *c, uint64_t offset)
{
    int ret = 0;
    for_each_table_of_cluster(c, o, offset) {
        uint32_t i = lookup(c, o);
        if (i == NO_ENTRY)
            continue;
        /* Someone holds this table while its cluster is freed: on a valid image the
         * refcounts never free a table in use, so they lie (a hostile image can make one
         * cluster two tables at once). Leave the entry to its holder. */
        if (c->entries[i].ref > 0) {
            ret = signal_corruption(c->img, "host cluster 0x%llx was freed while it is in use "
                                            "as %s",
                                    (unsigned long long)o, c->what);
            continue;
        }
        if (c->entries[i].dirty)
            c->nb_dirty--;
        c->entries[i].dirty = false;
        unhash(c, i); /* (head_changed) */
    }
    return ret;
}

bool cache_contains(const struct table_cache *c, uint64_t offset)
{
    return lookup(c, offset) != NO_ENTRY;
}
