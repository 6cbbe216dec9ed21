/* test_cache.c - cache.c: tables are read on a miss and shared on a hit, pinned tables are never
 * evicted, eviction takes the least recently used table, dirty tables are written before their
 * entry is reused (and dropped, unwritten, when discarded), cache_peek() looks without
 * pinning while keeping eviction order for tables it has not seen lately, and a table pointer
 * kept without a pin (cache_find's remembered slot, cluster_link_l2's remembered slice) is
 * trusted only while its slot still holds that table.
 * Each test builds a cache of 4 KiB tables over an image file (made by qcow2_create) whose
 * blocks past the image's own clusters hold known bytes: block k is filled with k + 1. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testharness.h"

#define TABLE 4096u
#define BASE (1u << 20) /* first test block: past the new image's clusters */
#define NBLOCKS 64u

static char g_dir[4096];

static uint64_t block_offset(unsigned k)
{
    return BASE + (uint64_t)k * TABLE;
}

/* A new image "name" with NBLOCKS test blocks appended; opened writable. */
static struct qcow2_image *make_image(const char *name)
{
    char p[4200], err[QCOW2_ERROR_MAX];
    snprintf(p, sizeof(p), "%s/%s", g_dir, name);
    struct qcow2_create_opts co;
    co = QCOW2_CREATE_OPTS_INIT;
    co.size = 64 << 20;
    int ret = qcow2_create(p, &co, err, sizeof(err));
    CHECK_MSG(ret == 0, "create: %s", err);
    if (ret < 0)
        return NULL;
    int fd = open(p, O_WRONLY);
    CHECK(fd >= 0);
    if (fd < 0)
        return NULL;
    uint8_t buf[TABLE];
    for (unsigned k = 0; k < NBLOCKS; k++) {
        memset(buf, (int)(k + 1), sizeof(buf));
        CHECK(pwrite(fd, buf, sizeof(buf), (off_t)block_offset(k)) == (ssize_t)sizeof(buf));
    }
    close(fd);
    struct qcow2_open_opts oo;
    oo = QCOW2_OPEN_OPTS_INIT;
    struct qcow2_image *img = NULL;
    ret = qcow2_open(p, &oo, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "open: %s", err);
    return ret == 0 ? img : NULL;
}

/* A cache of `entries` test tables over a new image "name"; NULL on failure. */
static struct table_cache *open_cache(const char *name, unsigned entries,
                                      struct qcow2_image **img)
{
    *img = make_image(name);
    struct table_cache *c = *img ? cache_new(*img, "test table", TABLE, entries) : NULL;
    CHECK(!*img || c);
    if (!c && *img)
        qcow2_close(*img);
    return c;
}

static void close_cache(struct table_cache *c, struct qcow2_image *img)
{
    cache_free(c);
    qcow2_close(img);
}

/* The byte block k holds on disk now. */
static int disk_byte(struct qcow2_image *img, unsigned k)
{
    uint8_t b = 0;
    CHECK(file_pread(img->file, &b, 1, block_offset(k)) == 0);
    return b;
}

/* Get and put block k; returns its first byte (-1 on error). */
static int touch(struct table_cache *c, unsigned k)
{
    void *t;
    if (cache_get(c, block_offset(k), &t) < 0)
        return -1;
    int b = ((uint8_t *)t)[0];
    cache_put(c, &t);
    return b;
}

/* Overwrite block k's cached table with `byte` and mark it dirty. */
static void dirty_table(struct table_cache *c, unsigned k, int byte)
{
    void *t;
    CHECK(cache_get(c, block_offset(k), &t) == 0);
    if (!t)
        return;
    memset(t, byte, TABLE);
    cache_mark_dirty(c, t);
    cache_put(c, &t);
}

static void test_get_reads_on_miss_and_shares_on_hit(void)
{
    struct qcow2_image *img;
    struct table_cache *c = open_cache("get.qcow2", 4, &img);
    if (!c)
        return;
    void *a, *b;
    CHECK(cache_get(c, block_offset(3), &a) == 0);
    CHECK(((uint8_t *)a)[0] == 4 && ((uint8_t *)a)[TABLE - 1] == 4);
    CHECK(cache_get(c, block_offset(3), &b) == 0);
    CHECK(a == b); /* one copy, pinned twice */
    CHECK(cache_contains(c, block_offset(3)) && !cache_contains(c, block_offset(4)));
    cache_put(c, &a);
    CHECK(a == NULL);
    cache_put(c, &b);
    close_cache(c, img);
}

static void test_eviction_takes_least_recently_used(void)
{
    struct qcow2_image *img;
    struct table_cache *c = open_cache("lru.qcow2", 4, &img);
    if (!c)
        return;
    for (unsigned k = 0; k < 4; k++)
        CHECK(touch(c, k) == (int)k + 1);
    CHECK(touch(c, 0) == 1); /* 1 is now the oldest */
    CHECK(touch(c, 4) == 5);
    CHECK(!cache_contains(c, block_offset(1)));
    CHECK(cache_contains(c, block_offset(0)) && cache_contains(c, block_offset(2)) &&
          cache_contains(c, block_offset(3)) && cache_contains(c, block_offset(4)));
    close_cache(c, img);
}

static void test_pinned_tables_are_never_evicted(void)
{
    struct qcow2_image *img;
    struct table_cache *c = open_cache("pin.qcow2", 2, &img);
    if (!c)
        return;
    void *a, *b, *x = NULL;
    CHECK(cache_get(c, block_offset(0), &a) == 0);
    CHECK(touch(c, 1) == 2);
    CHECK(touch(c, 2) == 3); /* evicts 1, the only unpinned table */
    CHECK(cache_contains(c, block_offset(0)) && !cache_contains(c, block_offset(1)));
    CHECK(cache_get(c, block_offset(2), &b) == 0);
    /* both pinned: no room, and the error names the cache */
    CHECK(cache_get(c, block_offset(5), &x) == -ENOMEM);
    CHECK(x == NULL);
    CHECK_MSG(strstr(qcow2_error(img), "test table cache is full") != NULL, "error: %s",
              qcow2_error(img));
    CHECK(((uint8_t *)a)[0] == 1 && ((uint8_t *)b)[0] == 3); /* untouched */
    cache_put(c, &a);
    cache_put(c, &b);
    CHECK(touch(c, 5) == 6);
    close_cache(c, img);
}

static void test_dirty_table_is_written_before_reuse(void)
{
    struct qcow2_image *img;
    struct table_cache *c = open_cache("dirty.qcow2", 2, &img);
    if (!c)
        return;
    dirty_table(c, 7, 0xa5);
    CHECK(cache_is_dirty(c));
    CHECK(disk_byte(img, 7) == 8); /* write-back: not yet on disk */
    CHECK(touch(c, 8) == 9);
    CHECK(touch(c, 9) == 10); /* evicts 7 */
    CHECK(!cache_contains(c, block_offset(7)));
    CHECK(disk_byte(img, 7) == 0xa5);
    CHECK(!cache_is_dirty(c));
    CHECK(touch(c, 7) == 0xa5); /* read back as written */
    close_cache(c, img);
}

static void test_discarded_dirty_table_is_not_written(void)
{
    struct qcow2_image *img;
    struct table_cache *c = open_cache("discard.qcow2", 2, &img);
    if (!c)
        return;
    dirty_table(c, 16, 0x5a); /* block 16 starts a cluster (64 KiB), as discards do */
    cache_discard(c, block_offset(16));
    CHECK(!cache_contains(c, block_offset(16)) && !cache_is_dirty(c));
    CHECK(cache_write(c) == 0);
    CHECK(disk_byte(img, 16) == 17);
    close_cache(c, img);
}

/* A table pinned while its cluster is freed: only lying refcounts do that. The entry stays
 * for its holder and the image is marked corrupt, where this once aborted on an assertion. */
static void test_discarding_a_pinned_table_is_corruption(void)
{
    struct qcow2_image *img;
    struct table_cache *c = open_cache("discard_pinned.qcow2", 2, &img);
    if (!c)
        return;
    void *t;
    CHECK(cache_get(c, block_offset(16), &t) == 0);
    CHECK(cache_pinned(c, block_offset(16)));
    CHECK(cache_discard(c, block_offset(16)) == -EIO);
    CHECK(img->corrupt && strstr(qcow2_error(img), "in use") != NULL);
    CHECK(cache_contains(c, block_offset(16)));
    cache_put(c, &t);
    CHECK(!cache_pinned(c, block_offset(16)));
    CHECK(cache_discard(c, block_offset(16)) == 0);
    CHECK(!cache_contains(c, block_offset(16)));
    close_cache(c, img);
}

/* cache_peek(): a hit returns the cached table and pins nothing; a miss reads the table; a
 * table it has not looked at for a while is stamped again, so eviction still takes the tables
 * nobody used. */
static void test_peek_looks_without_pinning(void)
{
    enum { N = 16 };
    struct qcow2_image *img;
    struct table_cache *c = open_cache("peek.qcow2", N, &img);
    if (!c)
        return;
    const void *p;
    CHECK(cache_peek(c, block_offset(20), &p) == 0); /* miss: read */
    CHECK(((const uint8_t *)p)[0] == 21 && cache_contains(c, block_offset(20)));
    void *g;
    CHECK(cache_get(c, block_offset(20), &g) == 0);
    CHECK(g == p);
    cache_put(c, &g);
    /* fill the cache: 20 is now the oldest; peeking it makes 21 the oldest */
    for (unsigned k = 21; k < 20 + N; k++)
        CHECK(touch(c, k) == (int)k + 1);
    CHECK(cache_peek(c, block_offset(20), &p) == 0 && ((const uint8_t *)p)[0] == 21);
    CHECK(touch(c, 40) == 41);
    CHECK(cache_contains(c, block_offset(20)));
    CHECK(!cache_contains(c, block_offset(21)));
    /* nothing pinned: a cache full of peeked tables still makes room */
    for (unsigned k = 41; k < 41 + N + 2; k++) /* 18 misses: all 16 tables go */
        CHECK(cache_peek(c, block_offset(k), &p) == 0 && ((const uint8_t *)p)[0] == k + 1);
    CHECK(!cache_contains(c, block_offset(20)));
    CHECK(touch(c, 0) == 1);
    close_cache(c, img);
}

/* cache_find() remembers the slot it found last and cache_holds() checks a table pointer
 * against an offset: both must follow what the slot holds now, not what it held. */
static void test_find_and_holds_follow_the_slot_not_the_pointer(void)
{
    struct qcow2_image *img;
    struct table_cache *c = open_cache("holds.qcow2", 2, &img);
    if (!c)
        return;
    CHECK(touch(c, 0) == 1);
    const uint8_t *t0 = cache_find(c, block_offset(0));
    CHECK(t0 && t0[0] == 1);
    CHECK(cache_holds(c, t0, block_offset(0)) && !cache_holds(c, t0, block_offset(1)));
    CHECK(!cache_holds(c, NULL, block_offset(0)));
    /* Block 0 leaves the cache; its slot takes another table. */
    CHECK(touch(c, 1) == 2);
    CHECK(touch(c, 2) == 3);
    CHECK(!cache_contains(c, block_offset(0)));
    CHECK(!cache_holds(c, t0, block_offset(0)));
    CHECK(cache_find(c, block_offset(0)) == NULL);
    const uint8_t *t2 = cache_find(c, block_offset(2));
    CHECK(t2 && t2[0] == 3 && cache_holds(c, t2, block_offset(2)));
    /* A discarded table is gone for both too. */
    CHECK(touch(c, 16) == 17);
    const uint8_t *t16 = cache_find(c, block_offset(16));
    CHECK(t16 && t16[0] == 17);
    CHECK(cache_discard(c, block_offset(16)) == 0);
    CHECK(!cache_holds(c, t16, block_offset(16)) && cache_find(c, block_offset(16)) == NULL);
    close_cache(c, img);
}

/* The hot table (cache_hot, read inline by the write path instead of a lookup) is the table
 * marked dirty last, and only while nothing could have changed that: a write-back, another
 * table stamped as used, an eviction or a discard each end it. A stale hot table would let a
 * write change a table no longer cached, or one already written, and lose the change. */
static void test_hot_table_is_the_dirty_one_marked_last(void)
{
    struct qcow2_image *img;
    struct table_cache *c = open_cache("hot.qcow2", 2, &img);
    if (!c)
        return;
    CHECK(cache_hot(c, block_offset(0)) == NULL); /* nothing marked yet */
    dirty_table(c, 0, 0x55);
    const void *t0 = cache_find(c, block_offset(0));
    CHECK(t0 && cache_hot(c, block_offset(0)) == t0);
    CHECK(cache_hot(c, block_offset(1)) == NULL);
    cache_mark_dirty(c, (void *)t0); /* marking the hot table again keeps it hot */
    CHECK(cache_hot(c, block_offset(0)) == t0 && cache_is_dirty(c));
    /* Written back: clean, no longer hot. */
    CHECK(cache_write(c) == 0);
    CHECK(!cache_is_dirty(c) && cache_hot(c, block_offset(0)) == NULL);
    CHECK(disk_byte(img, 0) == 0x55);
    /* Another table stamped as used: the hot one is no longer the youngest. */
    dirty_table(c, 0, 0x66);
    CHECK(cache_hot(c, block_offset(0)) != NULL);
    CHECK(touch(c, 1) == 2);
    CHECK(cache_hot(c, block_offset(0)) == NULL);
    /* Evicted: block 1 is hot, then block 0 (older) and block 1 make room for 2 and 3. */
    dirty_table(c, 1, 0x77);
    CHECK(cache_hot(c, block_offset(1)) != NULL);
    CHECK(touch(c, 2) == 3 && touch(c, 3) == 4);
    CHECK(!cache_contains(c, block_offset(1)) && cache_hot(c, block_offset(1)) == NULL);
    CHECK(disk_byte(img, 1) == 0x77 && disk_byte(img, 0) == 0x66);
    /* Discarded. */
    dirty_table(c, 16, 0x11);
    CHECK(cache_hot(c, block_offset(16)) != NULL);
    CHECK(cache_discard(c, block_offset(16)) == 0);
    CHECK(cache_hot(c, block_offset(16)) == NULL && !cache_is_dirty(c));
    close_cache(c, img);
}

/* cluster_link_l2() uses the L2 slice cluster_prepare_write() found only while the cache
 * still holds it there: a slice that left the cache while the data was written (the lock
 * is dropped in between) is looked up again, or the new entry would land in a stale slot
 * and the data would be lost. */
static void test_link_after_the_slice_left_the_cache(void)
{
    enum { CS = 65536 };
    struct qcow2_image *img = make_image("link.qcow2");
    if (!img)
        return;
    uint8_t *buf = malloc(CS), *back = malloc(CS);
    CHECK(buf && back);
    if (!buf || !back)
        goto out;
    memset(buf, 0x11, CS);
    CHECK(qcow2_pwrite(img, buf, CS, 0, 0) == 0); /* the L2 table exists and is cached */
    CHECK(qcow2_flush(img) == 0);
    memset(buf, 0x77, CS);

    /* What io.c's write_part does, with the slice evicted while the data goes to disk. */
    struct l2_meta m;
    uint64_t n = CS;
    pthread_mutex_lock(&img->lock);
    CHECK(cluster_prepare_write(img, CS, &n, &m, false) == 0);
    CHECK(n == CS && m.needs_link && !m.cow_start.nb_bytes && !m.cow_end.nb_bytes);
    CHECK(m.l2_slice_at != 0); /* the slice was found in the cache and remembered */
    cluster_meta_start(img, &m);
    pthread_mutex_unlock(&img->lock);
    CHECK(file_pwrite(img->data_file, buf, CS, m.alloc_offset) == 0);
    pthread_mutex_lock(&img->lock);
    uint64_t l2 = img->l1_table[0] & L1E_OFFSET_MASK;
    CHECK(cache_flush(img->l2_cache) == 0 && cache_discard(img->l2_cache, l2) == 0);
    CHECK(!cache_contains(img->l2_cache, m.l2_slice_at));
    CHECK(cluster_link_l2(img, &m) == 0);
    cluster_meta_finish(img, &m);
    pthread_mutex_unlock(&img->lock);

    CHECK(qcow2_pread(img, back, CS, CS) == 0);
    CHECK_MSG(memcmp(back, buf, CS) == 0, "the write linked through a stale slice was lost");
    CHECK(qcow2_pread(img, back, CS, 0) == 0 && back[0] == 0x11 && back[CS - 1] == 0x11);
out:
    free(buf);
    free(back);
    qcow2_close(img);
}

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_cache.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN("get_reads_on_miss_and_shares_on_hit", test_get_reads_on_miss_and_shares_on_hit());
    RUN("eviction_takes_least_recently_used", test_eviction_takes_least_recently_used());
    RUN("pinned_tables_are_never_evicted", test_pinned_tables_are_never_evicted());
    RUN("dirty_table_is_written_before_reuse", test_dirty_table_is_written_before_reuse());
    RUN("discarded_dirty_table_is_not_written", test_discarded_dirty_table_is_not_written());
    RUN("discarding_a_pinned_table_is_corruption",
        test_discarding_a_pinned_table_is_corruption());
    RUN("peek_looks_without_pinning", test_peek_looks_without_pinning());
    RUN("find_and_holds_follow_the_slot_not_the_pointer",
        test_find_and_holds_follow_the_slot_not_the_pointer());
    RUN("link_after_the_slice_left_the_cache", test_link_after_the_slice_left_the_cache());
    RUN("hot_table_is_the_dirty_one_marked_last", test_hot_table_is_the_dirty_one_marked_last());

    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
