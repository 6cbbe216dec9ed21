/* test_refcount.c - refcount.c: entry encoding for every refcount order, allocation (first fit,
 * refcount block creation, refcount table growth, byte packing, allocation at an offset),
 * freeing, overflow/underflow detection and refcount table validation. Images are created by
 * qemu-img and checked by `qemu-img check` afterwards; QEMU's own allocation layout is the
 * reference for the refcount structures. Image tests are skipped when qemu-img is missing. */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testharness.h"

static char g_dir[4096];
static bool g_have_qemu;

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers. */

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", g_dir, name);
}

static int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_cmd(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

static int create_image(const char *name, unsigned cluster_size, unsigned refcount_bits,
                        const char *size)
{
    char p[4200];
    path_of(p, sizeof(p), name);
    return run_cmd("qemu-img create -q -f qcow2 -o cluster_size=%u,refcount_bits=%u '%s' %s",
                   cluster_size, refcount_bits, p, size);
}

struct check_out {
    int status;
    long long leaks, corruptions, check_errors;
};

static long long json_field(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : 0;
}

static struct check_out qemu_check(const char *name)
{
    struct check_out r = {.status = -1};
    char p[4200], cmd[8400];
    path_of(p, sizeof(p), name);
    snprintf(cmd, sizeof(cmd), "qemu-img check --output=json '%s' 2>/dev/null", p);
    FILE *f = popen(cmd, "r");
    if (!f)
        return r;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    int st = pclose(f);
    r.status = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
    r.leaks = json_field(buf, "leaks");
    r.corruptions = json_field(buf, "corruptions");
    r.check_errors = json_field(buf, "check-errors");
    return r;
}

static struct qcow2_image *open_image(const char *name, bool read_only, char *err, size_t errlen)
{
    char p[4200];
    path_of(p, sizeof(p), name);
    struct qcow2_open_opts opts;
    opts = QCOW2_OPEN_OPTS_INIT;
    opts.format = QCOW2_FORMAT_QCOW2;
    opts.read_only = read_only;
    struct qcow2_image *img = NULL;
    char local[QCOW2_ERROR_MAX];
    if (!err) {
        err = local;
        errlen = sizeof(local);
    }
    err[0] = 0;
    int ret = qcow2_open(p, &opts, &img, err, errlen);
    if (ret < 0)
        return NULL;
    return img;
}

static int set_file_size_at_least(const char *name, uint64_t size)
{
    char p[4200];
    path_of(p, sizeof(p), name);
    struct stat st;
    if (stat(p, &st) < 0)
        return -1;
    if ((uint64_t)st.st_size >= size)
        return 0;
    return truncate(p, (off_t)size);
}

static int poke_be64(const char *name, uint64_t offset, uint64_t value)
{
    char p[4200];
    path_of(p, sizeof(p), name);
    int fd = open(p, O_WRONLY);
    if (fd < 0)
        return -1;
    uint8_t b[8];
    be64_put(b, value);
    ssize_t n = pwrite(fd, b, 8, (off_t)offset);
    close(fd);
    return n == 8 ? 0 : -1;
}

static uint64_t peek_be64(const char *name, uint64_t offset)
{
    char p[4200];
    path_of(p, sizeof(p), name);
    int fd = open(p, O_RDONLY);
    uint8_t b[8] = {0};
    if (fd >= 0) {
        if (pread(fd, b, 8, (off_t)offset) != 8)
            memset(b, 0, sizeof(b));
        close(fd);
    }
    return be64_get(b);
}

static uint64_t rc_of(struct qcow2_image *img, uint64_t cluster_index)
{
    uint64_t rc = UINT64_MAX;
    if (refcount_get(img, cluster_index, &rc) < 0)
        return UINT64_MAX;
    return rc;
}

/* A fake image with just the geometry the entry accessors need. */
static void fake_geometry(struct qcow2_image *img, unsigned cluster_bits, unsigned order)
{
    memset(img, 0, sizeof(*img));
    img->cluster_bits = cluster_bits;
    img->cluster_size = 1ull << cluster_bits;
    img->refcount_order = order;
    img->refcount_bits = 1u << order;
    img->refcount_max = order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
    img->refcount_block_bits = cluster_bits + 3 - order;
}

/* ------------------------------------------------------------------------------------------ */
/* Entry encoding. */

static uint64_t pattern_value(uint64_t i, uint64_t max)
{
    uint64_t v = (i + 1) * 0x9e3779b97f4a7c15ull;
    v ^= v >> 29;
    return max == UINT64_MAX ? v : v % (max + 1);
}

static void test_entries_round_trip_at_every_index_kind(unsigned cluster_bits, unsigned order)
{
    struct qcow2_image img;
    fake_geometry(&img, cluster_bits, order);
    uint64_t n = 1ull << img.refcount_block_bits;
    uint64_t max = img.refcount_max;
    uint8_t *block = calloc(1, img.cluster_size);

    /* Every entry distinct-ish, written then read back. */
    for (uint64_t i = 0; i < n; i++)
        refcount_block_set(&img, block, i, pattern_value(i, max));
    for (uint64_t i = 0; i < n; i++)
        CHECK_MSG(refcount_block_get(&img, block, i) == pattern_value(i, max),
                  "order %u index %llu", order, ull(i));

    /* Setting one entry leaves its neighbours alone, including the last entry. */
    uint64_t idx[] = {0, 1, 2, 7, 8, 9, n / 2, n - 2, n - 1};
    for (size_t k = 0; k < sizeof(idx) / sizeof(idx[0]); k++) {
        memset(block, 0xff, img.cluster_size);
        refcount_block_set(&img, block, idx[k], 0);
        CHECK(refcount_block_get(&img, block, idx[k]) == 0);
        for (uint64_t j = 0; j < n; j++)
            if (j != idx[k] && refcount_block_get(&img, block, j) != max) {
                CHECK_MSG(false, "order %u: setting %llu changed %llu", order, ull(idx[k]),
                          ull(j));
                break;
            }
        refcount_block_set(&img, block, idx[k], max);
        CHECK(refcount_block_get(&img, block, idx[k]) == max);
        refcount_block_set(&img, block, idx[k], 1);
        CHECK(refcount_block_get(&img, block, idx[k]) == 1);
    }

    /* The last entry lives in the last bits of the cluster. */
    memset(block, 0, img.cluster_size);
    refcount_block_set(&img, block, n - 1, max);
    uint64_t nonzero = 0;
    for (uint64_t b = 0; b < img.cluster_size; b++)
        nonzero += block[b] != 0;
    CHECK(nonzero == (img.refcount_bits >= 8 ? img.refcount_bits / 8 : 1));
    if (img.refcount_bits < 8)
        CHECK(block[img.cluster_size - 1] == (uint8_t)(max << (8 - img.refcount_bits)));
    else
        CHECK(block[img.cluster_size - 1] == 0xff &&
              block[img.cluster_size - img.refcount_bits / 8] == 0xff);
    free(block);
}

static void test_entries_use_the_on_disk_encoding(void)
{
    struct qcow2_image img;
    uint8_t b[512];

    /* Sub-byte widths: LSB first within the byte. */
    fake_geometry(&img, 9, 0);
    memset(b, 0, sizeof(b));
    refcount_block_set(&img, b, 9, 1);
    CHECK(b[1] == 0x02);
    refcount_block_set(&img, b, 0, 1);
    CHECK(b[0] == 0x01);
    refcount_block_set(&img, b, 7, 1);
    CHECK(b[0] == 0x81);

    fake_geometry(&img, 9, 1);
    memset(b, 0, sizeof(b));
    refcount_block_set(&img, b, 5, 2);
    CHECK(b[1] == 0x08);
    refcount_block_set(&img, b, 7, 3);
    CHECK(b[1] == 0xc8);
    CHECK(refcount_block_get(&img, b, 4) == 0 && refcount_block_get(&img, b, 5) == 2);

    fake_geometry(&img, 9, 2);
    memset(b, 0, sizeof(b));
    refcount_block_set(&img, b, 3, 0xa);
    CHECK(b[1] == 0xa0);
    refcount_block_set(&img, b, 2, 0x5);
    CHECK(b[1] == 0xa5);

    fake_geometry(&img, 9, 3);
    memset(b, 0, sizeof(b));
    refcount_block_set(&img, b, 3, 0xab);
    CHECK(b[3] == 0xab);

    /* 16, 32, 64 bits: big-endian. */
    fake_geometry(&img, 9, 4);
    memset(b, 0, sizeof(b));
    refcount_block_set(&img, b, 1, 0x0102);
    CHECK(b[2] == 0x01 && b[3] == 0x02);

    fake_geometry(&img, 9, 5);
    memset(b, 0, sizeof(b));
    refcount_block_set(&img, b, 1, 0x01020304);
    CHECK(b[4] == 0x01 && b[5] == 0x02 && b[6] == 0x03 && b[7] == 0x04);

    fake_geometry(&img, 9, 6);
    memset(b, 0, sizeof(b));
    refcount_block_set(&img, b, 63, 0x0102030405060708ull);
    CHECK(b[504] == 0x01 && b[511] == 0x08);
    CHECK(refcount_block_get(&img, b, 63) == 0x0102030405060708ull);
}

/* ------------------------------------------------------------------------------------------ */
/* Image tests. */

/* Expected refcounts, kept by the test: what it allocated plus the image's metadata. */
struct expect {
    uint32_t *rc;
    uint64_t n;
};

static void expect_add(struct expect *e, uint64_t cluster, int64_t delta)
{
    if (cluster >= e->n) {
        uint64_t n = MAX(e->n * 2, cluster + 1024);
        e->rc = realloc(e->rc, n * sizeof(*e->rc));
        memset(e->rc + e->n, 0, (n - e->n) * sizeof(*e->rc));
        e->n = n;
    }
    e->rc[cluster] = (uint32_t)((int64_t)e->rc[cluster] + delta);
}

static uint32_t expect_get(const struct expect *e, uint64_t cluster)
{
    return cluster < e->n ? e->rc[cluster] : 0;
}

/* The metadata of an image nobody wrote guest data to: header, L1, refcount table, blocks. */
static void expect_metadata(struct qcow2_image *img, struct expect *meta)
{
    memset(meta->rc, 0, meta->n * sizeof(*meta->rc));
    expect_add(meta, 0, 1);
    uint64_t l1 = img->hdr.l1_table_offset >> img->cluster_bits;
    for (uint64_t i = 0; i < size_to_clusters(img, (uint64_t)img->l1_size * 8); i++)
        expect_add(meta, l1 + i, 1);
    uint64_t rt = img->hdr.refcount_table_offset >> img->cluster_bits;
    for (uint64_t i = 0; i < img->hdr.refcount_table_clusters; i++)
        expect_add(meta, rt + i, 1);
    for (uint64_t i = 0; i < img->refcount_table_size; i++)
        if (img->refcount_table[i])
            expect_add(meta, img->refcount_table[i] >> img->cluster_bits, 1);
}

/* Every refcount up to `end` (cluster index) is what the test expects; the test's
 * allocations never overlap the metadata. */
static void verify_refcounts(struct qcow2_image *img, const struct expect *mine, uint64_t end)
{
    struct expect meta = {0};
    expect_add(&meta, end, 0);
    expect_metadata(img, &meta);
    uint64_t bad = 0;
    for (uint64_t c = 0; c < end; c++) {
        uint64_t want = expect_get(mine, c) + expect_get(&meta, c);
        uint64_t got = rc_of(img, c);
        if (expect_get(mine, c) && expect_get(&meta, c)) {
            if (bad++ < 5)
                CHECK_MSG(false, "cluster %llu both allocated by the test and metadata",
                          ull(c));
        } else if (got != want) {
            if (bad++ < 5)
                CHECK_MSG(false, "cluster %llu (0x%llx): refcount %llu, expected %llu", ull(c),
                          ull(c << img->cluster_bits), ull(got), ull(want));
        }
    }
    CHECK_MSG(bad == 0, "%llu clusters wrong", ull(bad));
    free(meta.rc);
}

struct run {
    uint64_t offset;
    uint64_t n;
};

static void test_alloc_free_across_block_creation_and_table_growth(unsigned refcount_bits,
                                                                   unsigned min_growths)
{
    const char *name = "alloc.qcow2";
    CHECK(create_image(name, 512, refcount_bits, "64M") == 0);
    char err[QCOW2_ERROR_MAX];
    struct qcow2_image *img = open_image(name, false, err, sizeof(err));
    CHECK_MSG(img != NULL, "%s", err);
    if (!img)
        return;
    pthread_mutex_lock(&img->lock);
    uint64_t cs = img->cluster_size;
    uint64_t epb = 1ull << img->refcount_block_bits;

    struct expect mine = {0};
    struct run *runs = NULL;
    size_t nruns = 0, cap = 0;
    unsigned growths = 0;
    uint64_t table_offset = img->hdr.refcount_table_offset;
    uint64_t blocks_before = 0;
    for (uint64_t i = 0; i < img->refcount_table_size; i++)
        blocks_before += img->refcount_table[i] != 0;
    static const uint64_t sizes[] = {1, 64, 3, 200, 1, 4096, 17, 2, 511, 1000};
    uint64_t total = 0, end = 0;
    for (size_t k = 0; growths < min_growths && total < 4000000; k++) {
        uint64_t n = sizes[k % (sizeof(sizes) / sizeof(sizes[0]))];
        int64_t off = refcount_alloc_clusters(img, n * cs);
        if (off < 0) {
            CHECK_MSG(off >= 0, "allocation %zu of %llu clusters: %s", k, ull(n),
                      qcow2_error(img));
            break;
        }
        CHECK(off > 0 && offset_into_cluster(img, (uint64_t)off) == 0);
        if (nruns == cap) {
            cap = cap ? cap * 2 : 256;
            runs = realloc(runs, cap * sizeof(*runs));
        }
        runs[nruns++] = (struct run){(uint64_t)off, n};
        for (uint64_t c = 0; c < n; c++)
            expect_add(&mine, ((uint64_t)off >> img->cluster_bits) + c, 1);
        total += n;
        end = MAX(end, ((uint64_t)off >> img->cluster_bits) + n);
        if (img->hdr.refcount_table_offset != table_offset) {
            growths++;
            table_offset = img->hdr.refcount_table_offset;
        }
    }
    uint64_t blocks_after = 0;
    for (uint64_t i = 0; i < img->refcount_table_size; i++)
        blocks_after += img->refcount_table[i] != 0;
    CHECK_MSG(growths >= min_growths, "only %u refcount table growths", growths);
    CHECK(blocks_after >= blocks_before + 3);
    CHECK(img->refcount_table_size * 8 ==
          (uint64_t)img->hdr.refcount_table_clusters << img->cluster_bits);
    /* Table and header were written through (synced), not just changed in memory. */
    CHECK(peek_be64(name, HDR_REFCOUNT_TABLE_OFFSET) == img->hdr.refcount_table_offset);
    CHECK((peek_be64(name, HDR_REFCOUNT_TABLE_CLUSTERS - 4) & 0xffffffffu) ==
          (uint64_t)img->hdr.refcount_table_clusters);
    for (uint64_t i = 0; i < img->refcount_table_size; i++)
        if (peek_be64(name, img->hdr.refcount_table_offset + i * 8) != img->refcount_table[i]) {
            CHECK_MSG(false, "refcount table entry %llu differs on disk", ull(i));
            break;
        }
    verify_refcounts(img, &mine, end + epb);

    /* Free every third run. The lowest freed cluster is where first fit looks next. */
    uint64_t lowest = UINT64_MAX;
    for (size_t r = 0; r < nruns; r += 3) {
        CHECK(refcount_free_clusters(img, runs[r].offset, runs[r].n * cs) == 0);
        for (uint64_t c = 0; c < runs[r].n; c++)
            expect_add(&mine, (runs[r].offset >> img->cluster_bits) + c, -1);
        lowest = MIN(lowest, runs[r].offset >> img->cluster_bits);
        runs[r].n = 0;
    }
    CHECK(img->free_cluster_index <= lowest);
    verify_refcounts(img, &mine, end + epb);

    int64_t one = refcount_alloc_clusters(img, cs);
    CHECK_MSG((uint64_t)one == lowest << img->cluster_bits, "got 0x%llx, lowest free 0x%llx",
              ull((uint64_t)one), ull(lowest << img->cluster_bits));
    if (one > 0)
        expect_add(&mine, (uint64_t)one >> img->cluster_bits, 1);
    /* A run larger than any hole goes past them. */
    int64_t big = refcount_alloc_clusters(img, 5000 * cs);
    CHECK(big > 0);
    if (big > 0) {
        for (uint64_t c = 0; c < 5000; c++)
            expect_add(&mine, ((uint64_t)big >> img->cluster_bits) + c, 1);
        end = MAX(end, ((uint64_t)big >> img->cluster_bits) + 5000);
    }
    verify_refcounts(img, &mine, end + epb);

    /* Overflow is refused and changes nothing. (Underflow marks the image corrupt: it has a
     * test of its own.) */
    uint64_t victim = runs[1].offset;
    if (refcount_bits == 1) {
        CHECK(refcount_update(img, victim, cs, 1) == -EINVAL);
        CHECK(strstr(qcow2_error(img), "overflow") != NULL);
        CHECK(rc_of(img, victim >> img->cluster_bits) == 1);
    } else {
        CHECK(refcount_update(img, victim, cs, 1) == 0);
        CHECK(rc_of(img, victim >> img->cluster_bits) == 2);
        CHECK(refcount_update(img, victim, cs, -1) == 0);
        CHECK(rc_of(img, victim >> img->cluster_bits) == 1);
    }

    uint64_t leaked = 0;
    for (uint64_t c = 0; c < mine.n; c++)
        leaked += mine.rc[c];
    CHECK(cache_flush(img->refcount_cache) == 0);
    pthread_mutex_unlock(&img->lock);
    CHECK(qcow2_close(img) == 0);

    /* Our clusters are referenced by nothing: exactly they are leaks (QEMU only counts
     * clusters inside the file, so make it long enough). */
    CHECK(set_file_size_at_least(name, (end + 1) * cs) == 0);
    struct check_out co = qemu_check(name);
    CHECK_MSG(co.status == 3 && co.corruptions == 0 && co.check_errors == 0 &&
                  co.leaks == (long long)leaked,
              "qemu-img check: status %d, leaks %lld (expected %llu), corruptions %lld",
              co.status, co.leaks, ull(leaked), co.corruptions);
    free(mine.rc);
    free(runs);
}

/* The same allocation sequence as `qemu-io -c 'write 0 SIZE'` on a fresh image (an L2 table,
 * then the data clusters it maps, per L2 table's worth of guest data) gives exactly
 * QEMU's refcount structures: same blocks at the same places, same table, same refcounts. */
static void test_layout_matches_qemu(unsigned cluster_size, unsigned refcount_bits, unsigned mib)
{
    CHECK(create_image("q.qcow2", cluster_size, refcount_bits, "64M") == 0);
    CHECK(create_image("us.qcow2", cluster_size, refcount_bits, "64M") == 0);
    char p[4200];
    path_of(p, sizeof(p), "q.qcow2");
    CHECK(run_cmd("qemu-io -c 'write 0 %uM' '%s' >/dev/null", mib, p) == 0);

    char err[QCOW2_ERROR_MAX];
    struct qcow2_image *img = open_image("us.qcow2", false, err, sizeof(err));
    CHECK_MSG(img != NULL, "%s", err);
    if (!img)
        return;
    pthread_mutex_lock(&img->lock);
    /* One L2 table per cluster_size/8 data clusters. */
    uint64_t per_l2 = cluster_size / 8;
    uint64_t l2_span = per_l2 * cluster_size;
    for (uint64_t done = 0; done < (uint64_t)mib << 20; done += l2_span) {
        CHECK(refcount_alloc_clusters(img, cluster_size) > 0);
        CHECK(refcount_alloc_clusters(img, MIN(l2_span, ((uint64_t)mib << 20) - done)) > 0);
    }
    CHECK(cache_flush(img->refcount_cache) == 0);
    pthread_mutex_unlock(&img->lock);
    CHECK(qcow2_close(img) == 0);

    struct qcow2_image *q = open_image("q.qcow2", true, err, sizeof(err));
    struct qcow2_image *u = open_image("us.qcow2", true, err, sizeof(err));
    CHECK(q && u);
    if (q && u) {
        CHECK_MSG(q->hdr.refcount_table_offset == u->hdr.refcount_table_offset &&
                      q->hdr.refcount_table_clusters == u->hdr.refcount_table_clusters,
                  "refcount table: QEMU 0x%llx/%u, ours 0x%llx/%u",
                  ull(q->hdr.refcount_table_offset), q->hdr.refcount_table_clusters,
                  ull(u->hdr.refcount_table_offset), u->hdr.refcount_table_clusters);
        uint64_t n = MIN(q->refcount_table_size, u->refcount_table_size);
        unsigned bad = 0;
        for (uint64_t i = 0; i < n; i++)
            if (q->refcount_table[i] != u->refcount_table[i] && bad++ < 5)
                CHECK_MSG(false, "refcount table entry %llu: QEMU 0x%llx, ours 0x%llx", ull(i),
                          ull(q->refcount_table[i]), ull(u->refcount_table[i]));
        uint64_t end = ((uint64_t)mib << 20) / cluster_size * 2 + 4096;
        for (uint64_t c = 0; c < end; c++) {
            uint64_t a = rc_of(q, c), b = rc_of(u, c);
            if (a != b && bad++ < 10)
                CHECK_MSG(false, "cluster %llu: QEMU refcount %llu, ours %llu", ull(c), ull(a),
                          ull(b));
        }
    }
    if (q)
        qcow2_close(q);
    if (u)
        qcow2_close(u);
}

/* Compressed data is packed byte by byte; a cluster holds as many pieces as its refcount
 * allows, and a piece may spill into the next cluster only if that one is contiguous and
 * new. Freeing the compressed L2 entries releases every touched cluster. */
static void test_alloc_bytes_packs_and_frees(unsigned refcount_bits)
{
    const char *name = "bytes.qcow2";
    CHECK(create_image(name, 512, refcount_bits, "64M") == 0);
    char err[QCOW2_ERROR_MAX];
    struct qcow2_image *img = open_image(name, false, err, sizeof(err));
    CHECK_MSG(img != NULL, "%s", err);
    if (!img)
        return;
    pthread_mutex_lock(&img->lock);
    uint64_t cs = img->cluster_size;
    enum { N = 40 };
    uint64_t off[N], len[N];
    uint64_t first_cluster = UINT64_MAX, last_cluster = 0;
    unsigned spills = 0, fresh = 0;
    for (int i = 0; i < N; i++) {
        len[i] = 100 + (uint64_t)(i * 37) % 300;
        int64_t o = refcount_alloc_bytes(img, len[i]);
        CHECK_MSG(o > 0, "%s", qcow2_error(img));
        off[i] = (uint64_t)o;
        first_cluster = MIN(first_cluster, off[i] >> img->cluster_bits);
        last_cluster = MAX(last_cluster, (off[i] + len[i] - 1) >> img->cluster_bits);
        if (i == 0)
            continue;
        /* Right after the previous piece, unless its last cluster is full (refcount at the
         * maximum, or the previous piece ended exactly at the cluster end). */
        uint64_t prev_end = off[i - 1] + len[i - 1];
        uint64_t prev_last = (prev_end - 1) >> img->cluster_bits;
        uint64_t holders = 0;
        for (int j = 0; j < i; j++)
            holders += (off[j] >> img->cluster_bits) <= prev_last &&
                       ((off[j] + len[j] - 1) >> img->cluster_bits) >= prev_last;
        bool full = holders == img->refcount_max || offset_into_cluster(img, prev_end) == 0;
        if (full) {
            CHECK_MSG(offset_into_cluster(img, off[i]) == 0 &&
                          off[i] >> img->cluster_bits == prev_last + 1,
                      "piece %d at 0x%llx, expected the next cluster after 0x%llx", i,
                      ull(off[i]), ull(prev_end));
            fresh++;
        } else {
            CHECK_MSG(off[i] == prev_end, "piece %d at 0x%llx, previous ends 0x%llx", i,
                      ull(off[i]), ull(prev_end));
            spills += (off[i] >> img->cluster_bits) != ((off[i] + len[i] - 1) >> img->cluster_bits);
        }
    }
    if (refcount_bits == 1)
        CHECK(fresh == N - 1 && spills == 0);
    else
        CHECK(spills > 0);
    /* Refcount = number of pieces touching the cluster. */
    for (uint64_t c = first_cluster; c <= last_cluster; c++) {
        uint64_t touching = 0;
        for (int i = 0; i < N; i++)
            touching += (off[i] >> img->cluster_bits) <= c &&
                        ((off[i] + len[i] - 1) >> img->cluster_bits) >= c;
        CHECK_MSG(rc_of(img, c) == touching, "cluster %llu: refcount %llu, %llu pieces",
                  ull(c), ull(rc_of(img, c)), ull(touching));
    }
    /* A cluster allocated normally in between breaks contiguity: no spill into it. */
    int64_t plain = refcount_alloc_clusters(img, cs);
    CHECK(plain > 0);
    int64_t after = refcount_alloc_bytes(img, cs);
    CHECK(after > 0 && offset_into_cluster(img, (uint64_t)after) == 0 && after != plain);
    CHECK(img->free_byte_offset == 0); /* it ended at a cluster end: nothing left to pack into */

    /* Free through compressed L2 entries. */
    for (int i = 0; i < N; i++) {
        uint64_t nb_csectors = (off[i] + len[i] - 1) / 512 - off[i] / 512;
        uint64_t e = off[i] | QCOW2_OFLAG_COMPRESSED | (nb_csectors << img->csize_shift);
        CHECK(refcount_free_l2_entry(img, e) == 0);
    }
    for (uint64_t c = first_cluster; c <= last_cluster; c++)
        CHECK(rc_of(img, c) == 0);
    /* Normal and unallocated entries. */
    CHECK(refcount_free_l2_entry(img, (uint64_t)plain | QCOW2_OFLAG_COPIED) == 0);
    CHECK(rc_of(img, (uint64_t)plain >> img->cluster_bits) == 0);
    CHECK(refcount_free_l2_entry(img, 0) == 0);
    CHECK(refcount_free_l2_entry(img, QCOW2_OFLAG_ZERO) == 0);
    CHECK(refcount_free_l2_entry(img, (uint64_t)after) == 0);

    CHECK(cache_flush(img->refcount_cache) == 0);
    pthread_mutex_unlock(&img->lock);
    CHECK(qcow2_close(img) == 0);
    struct check_out co = qemu_check(name);
    CHECK_MSG(co.status == 0, "qemu-img check status %d, leaks %lld, corruptions %lld",
              co.status, co.leaks, co.corruptions);
}

static void test_alloc_at_takes_only_free_clusters(void)
{
    const char *name = "at.qcow2";
    CHECK(create_image(name, 512, 16, "64M") == 0);
    char err[QCOW2_ERROR_MAX];
    struct qcow2_image *img = open_image(name, false, err, sizeof(err));
    CHECK_MSG(img != NULL, "%s", err);
    if (!img)
        return;
    pthread_mutex_lock(&img->lock);
    uint64_t cs = img->cluster_size;
    uint64_t epb = 1ull << img->refcount_block_bits;
    uint64_t table_offset = img->hdr.refcount_table_offset;

    /* Far beyond everything: needs a new block and a bigger table first. */
    uint64_t host = (img->refcount_table_size * epb + 10) * cs;
    CHECK(refcount_alloc_clusters_at(img, host, 5) == 5);
    CHECK(img->hdr.refcount_table_offset != table_offset);
    for (uint64_t i = 0; i < 5; i++)
        CHECK(rc_of(img, host / cs + i) == 1);
    CHECK(rc_of(img, host / cs + 5) == 0);
    CHECK(refcount_alloc_clusters_at(img, host, 5) == 0);
    CHECK(refcount_alloc_clusters_at(img, host - 2 * cs, 5) == 2);
    CHECK(rc_of(img, host / cs - 2) == 1 && rc_of(img, host / cs - 1) == 1);
    CHECK(refcount_alloc_clusters_at(img, host + 3, 1) == -EINVAL);
    CHECK(refcount_alloc_clusters_at(img, 0, 1) == -EINVAL);
    uint64_t end = host / cs + 5;

    CHECK(cache_flush(img->refcount_cache) == 0);
    pthread_mutex_unlock(&img->lock);
    CHECK(qcow2_close(img) == 0);
    CHECK(set_file_size_at_least(name, (end + 1) * cs) == 0);
    struct check_out co = qemu_check(name);
    CHECK_MSG(co.status == 3 && co.leaks == 7 && co.corruptions == 0,
              "qemu-img check status %d, leaks %lld, corruptions %lld", co.status, co.leaks,
              co.corruptions);
}

static void test_freeing_a_free_cluster_is_corruption(void)
{
    const char *name = "under.qcow2";
    CHECK(create_image(name, 512, 16, "64M") == 0);
    struct qcow2_image *img = open_image(name, false, NULL, 0);
    CHECK(img != NULL);
    if (!img)
        return;
    pthread_mutex_lock(&img->lock);
    int64_t a = refcount_alloc_clusters(img, 2 * 512);
    CHECK(a > 0);
    /* [a, a+3 clusters): the third is free, so nothing may change. */
    CHECK(refcount_free_clusters(img, (uint64_t)a, 3 * 512) == -EIO);
    CHECK(strstr(qcow2_error(img), "below zero") != NULL);
    CHECK(rc_of(img, (uint64_t)a / 512) == 1 && rc_of(img, (uint64_t)a / 512 + 1) == 1);
    CHECK(img->corrupt);
    pthread_mutex_unlock(&img->lock);
    qcow2_close(img);
}

static void test_refcount_of_uncovered_clusters_is_zero(void)
{
    CHECK(create_image("zero.qcow2", 4096, 16, "1M") == 0);
    struct qcow2_image *img = open_image("zero.qcow2", true, NULL, 0);
    CHECK(img != NULL);
    if (!img)
        return;
    pthread_mutex_lock(&img->lock);
    CHECK(rc_of(img, 0) == 1);
    CHECK(rc_of(img, 1) == 1); /* refcount table */
    CHECK(rc_of(img, 1000) == 0);
    CHECK(rc_of(img, 1ull << 40) == 0); /* beyond the table */
    pthread_mutex_unlock(&img->lock);
    qcow2_close(img);
}

/* A broken entry is found when it is used, not at open (as in QEMU): a writer opens the
 * image, and the first write that needs the entry fails and marks the image corrupt. */
static void bad_entry_fails_when_used(const char *path, const char *what)
{
    char err[QCOW2_ERROR_MAX];
    struct qcow2_image *img = open_image(path, false, err, sizeof(err));
    CHECK_MSG(img != NULL, "%s: %s", what, err);
    if (!img)
        return;
    uint8_t buf[4096] = {0x5a};
    CHECK_MSG(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == -EIO, "%s", what);
    CHECK_MSG(strstr(qcow2_error(img), "refcount block offset") &&
                  strstr(qcow2_error(img), "corrupt"),
              "%s: %s", what, qcow2_error(img));
    qcow2_close(img);
    CHECK_MSG(peek_be64(path, HDR_INCOMPATIBLE_FEATURES) & QCOW2_INCOMPAT_CORRUPT, "%s", what);
    /* A reader still opens it; using the entry is then an error. */
    img = open_image(path, true, err, sizeof(err));
    CHECK_MSG(img != NULL, "%s: %s", what, err);
    if (img) {
        uint64_t rc;
        pthread_mutex_lock(&img->lock);
        CHECK(refcount_get(img, 0, &rc) == -EIO);
        pthread_mutex_unlock(&img->lock);
        qcow2_close(img);
    }
}

static void test_bad_refcount_table_entries_fail_when_used(void)
{
    char err[QCOW2_ERROR_MAX];
    CHECK(create_image("bad.qcow2", 4096, 16, "64M") == 0);
    uint64_t rt = peek_be64("bad.qcow2", HDR_REFCOUNT_TABLE_OFFSET);
    uint64_t e0 = peek_be64("bad.qcow2", rt);
    CHECK(rt == 4096 && e0 == 8192);

    CHECK(poke_be64("bad.qcow2", rt, e0 + 0x200) == 0);
    bad_entry_fails_when_used("bad.qcow2", "unaligned block offset");

    CHECK(create_image("bad.qcow2", 4096, 16, "64M") == 0);
    CHECK(poke_be64("bad.qcow2", rt, e0 | 1) == 0);
    bad_entry_fails_when_used("bad.qcow2", "reserved bits");

    CHECK(create_image("bad.qcow2", 4096, 16, "64M") == 0);
    struct qcow2_image *img;
    /* A block past the end of the file: fine until it is used. */
    CHECK(poke_be64("bad.qcow2", rt, e0) == 0);
    CHECK(poke_be64("bad.qcow2", rt + 8, 1ull << 30) == 0);
    img = open_image("bad.qcow2", false, err, sizeof(err));
    CHECK_MSG(img != NULL, "%s", err);
    if (img) {
        uint64_t rc;
        pthread_mutex_lock(&img->lock);
        CHECK(refcount_get(img, 5, &rc) == 0 && rc == 0);
        CHECK(refcount_get(img, 2048, &rc) == -EIO); /* 4096 * 8 / 16 entries per block */
        CHECK_MSG(strstr(qcow2_error(img), "past the end"), "%s", qcow2_error(img));
        pthread_mutex_unlock(&img->lock);
        qcow2_close(img);
    }
}

static bool host_bytes_are(const char *name, uint64_t offset, uint8_t value, size_t len)
{
    char p[4200];
    path_of(p, sizeof(p), name);
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return false;
    uint8_t *b = calloc(1, len);
    bool ok = pread(fd, b, len, (off_t)offset) >= 0;
    for (size_t i = 0; ok && i < len; i++)
        ok = b[i] == value;
    free(b);
    close(fd);
    return ok;
}

/* A new 64 MiB image (4 KiB clusters, 16-bit refcounts) opened writable, its lock held. */
static struct qcow2_image *open_fresh_locked(const char *name)
{
    CHECK(create_image(name, 4096, 16, "64M") == 0);
    struct qcow2_image *img = open_image(name, false, NULL, 0);
    CHECK(img != NULL);
    if (img)
        pthread_mutex_lock(&img->lock);
    return img;
}

/* A freed cluster may have been a cached table: its dirty contents must never be written. */
static void test_freeing_drops_cached_tables(void)
{
    const char *name = "drop.qcow2";
    struct qcow2_image *img = open_fresh_locked(name);
    if (!img)
        return;
    uint64_t cs = img->cluster_size;
    int64_t keep = refcount_alloc_clusters(img, cs);
    int64_t gone = refcount_alloc_clusters(img, cs);
    CHECK(keep > 0 && gone > 0);
    CHECK(cache_flush(img->refcount_cache) == 0);
    /* Two "L2 tables", both dirty in the cache. */
    int64_t offs[2] = {keep, gone};
    for (int k = 0; k < 2; k++)
        for (uint64_t o = 0; o < cs; o += cache_table_size(img->l2_cache)) {
            void *t;
            CHECK(cache_get_empty(img->l2_cache, (uint64_t)offs[k] + o, &t) == 0);
            memset(t, 0xaa, cache_table_size(img->l2_cache));
            cache_mark_dirty(img->l2_cache, t);
            cache_put(img->l2_cache, &t);
        }
    CHECK(refcount_free_clusters(img, (uint64_t)gone, cs) == 0);
    CHECK(cache_flush(img->l2_cache) == 0);
    CHECK(host_bytes_are(name, (uint64_t)keep, 0xaa, cs));
    CHECK(!host_bytes_are(name, (uint64_t)gone, 0xaa, 1));
    CHECK(refcount_free_clusters(img, (uint64_t)keep, cs) == 0);
    CHECK(cache_flush(img->refcount_cache) == 0);
    pthread_mutex_unlock(&img->lock);
    qcow2_close(img);
    CHECK(qemu_check(name).status == 0);
}

/* Write ordering: a refcount decrease reaches the disk only after the L2 change that dropped
 * the reference (the refcount cache depends on the L2 cache), unless refcounts are lazy. */
static void test_decrease_waits_for_l2(bool lazy)
{
    const char *name = "order.qcow2";
    struct qcow2_image *img = open_fresh_locked(name);
    if (!img)
        return;
    uint64_t cs = img->cluster_size;
    int64_t l2 = refcount_alloc_clusters(img, cs);
    int64_t data = refcount_alloc_clusters(img, cs);
    CHECK(l2 > 0 && data > 0);
    CHECK(cache_flush(img->refcount_cache) == 0);
    void *t;
    CHECK(cache_get_empty(img->l2_cache, (uint64_t)l2, &t) == 0);
    memset(t, 0xbb, cache_table_size(img->l2_cache));
    cache_mark_dirty(img->l2_cache, t);
    cache_put(img->l2_cache, &t);

    img->dirty = lazy; /* what the lazy-refcounts path sets after marking the image dirty */
    CHECK(refcount_free_clusters(img, (uint64_t)data, cs) == 0);
    CHECK(cache_write(img->refcount_cache) == 0);
    bool l2_on_disk = host_bytes_are(name, (uint64_t)l2, 0xbb, cache_table_size(img->l2_cache));
    CHECK_MSG(l2_on_disk == !lazy, "L2 slice %s written before the refcount block",
              l2_on_disk ? "was" : "was not");
    img->dirty = false;
    CHECK(refcount_free_clusters(img, (uint64_t)l2, cs) == 0);
    CHECK(cache_flush(img->refcount_cache) == 0);
    pthread_mutex_unlock(&img->lock);
    qcow2_close(img);
    CHECK(qemu_check(name).status == 0);
}

/* With an external data file, guest data clusters are not refcounted: freeing them is a
 * no-op for the image file's refcounts. */
static void test_data_file_clusters_are_not_refcounted(void)
{
    char p[4200], d[4200];
    path_of(p, sizeof(p), "df.qcow2");
    path_of(d, sizeof(d), "df.raw");
    CHECK(run_cmd("qemu-img create -q -f qcow2 -o data_file='%s' '%s' 1M", d, p) == 0);
    struct qcow2_image *img = open_image("df.qcow2", false, NULL, 0);
    CHECK(img != NULL);
    if (!img)
        return;
    pthread_mutex_lock(&img->lock);
    CHECK(has_data_file(img));
    uint64_t l1 = img->hdr.l1_table_offset;
    CHECK(rc_of(img, l1 >> img->cluster_bits) == 1);
    CHECK(refcount_free_l2_entry(img, l1 | QCOW2_OFLAG_COPIED) == 0);
    CHECK(rc_of(img, l1 >> img->cluster_bits) == 1);
    pthread_mutex_unlock(&img->lock);
    qcow2_close(img);
    CHECK(qemu_check("df.qcow2").status == 0);
}

/* Freeing a cluster whose table someone holds (pinned in a cache) means the refcounts lie:
 * refused as a corruption before any refcount changes, and the table stays cached. */
static void test_freeing_a_table_in_use_is_corruption(void)
{
    const char *name = "inuse.qcow2";
    struct qcow2_image *img = open_fresh_locked(name);
    if (!img)
        return;
    uint64_t cs = img->cluster_size;
    int64_t t = refcount_alloc_clusters(img, 2 * cs);
    CHECK(t > 0);
    void *slice;
    CHECK(cache_get_empty(img->l2_cache, (uint64_t)t + cs, &slice) == 0);
    CHECK(refcount_free_clusters(img, (uint64_t)t, 2 * cs) == -EIO);
    CHECK_MSG(strstr(qcow2_error(img), "in use as an L2 table") != NULL, "%s", qcow2_error(img));
    CHECK(img->corrupt);
    CHECK(rc_of(img, (uint64_t)t / cs) == 1 && rc_of(img, (uint64_t)t / cs + 1) == 1);
    CHECK(cache_contains(img->l2_cache, (uint64_t)t + cs));
    cache_put(img->l2_cache, &slice);
    pthread_mutex_unlock(&img->lock);
    qcow2_close(img);
}

/* A hostile image whose refcount table is also its L2 table (512-byte clusters, 64-bit
 * refcounts, every refcount table entry naming one refcount block that says "1" for every
 * cluster). The first write finds no free cluster, grows the refcount table and frees the
 * old one while its L2 slice is pinned: that once aborted on an assertion in cache_discard
 * (QEMU 7.2 aborts the same way). Now the write fails and the image is marked corrupt. */
static void test_refcount_table_doubling_as_l2_table_is_corruption(void)
{
    enum { CS = 512, L1 = 0x200, REFTABLE = 0x400, REFBLOCK = 0x600 };
    uint8_t file[4 * CS] = {0};
    be32_put(file + HDR_MAGIC, QCOW2_MAGIC);
    be32_put(file + HDR_VERSION, 3);
    be32_put(file + HDR_CLUSTER_BITS, 9);
    be64_put(file + HDR_SIZE, 64 * CS);
    be32_put(file + HDR_L1_SIZE, 1);
    be64_put(file + HDR_L1_TABLE_OFFSET, L1);
    be64_put(file + HDR_REFCOUNT_TABLE_OFFSET, REFTABLE);
    be32_put(file + HDR_REFCOUNT_TABLE_CLUSTERS, 1);
    be32_put(file + HDR_REFCOUNT_ORDER, 6);
    be32_put(file + HDR_HEADER_LENGTH, QCOW2_V3_HEADER_LENGTH);
    be64_put(file + L1, REFTABLE | QCOW2_OFLAG_COPIED);
    for (unsigned i = 0; i < CS / 8; i++) {
        be64_put(file + REFTABLE + i * 8, REFBLOCK);
        be64_put(file + REFBLOCK + i * 8, 1);
    }
    char p[4200], err[QCOW2_ERROR_MAX];
    path_of(p, sizeof(p), "hostile.qcow2");
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite(file, sizeof(file), 1, f) == 1);
    if (f)
        fclose(f);
    struct qcow2_image *img = open_image("hostile.qcow2", false, err, sizeof(err));
    CHECK_MSG(img != NULL, "%s", err);
    if (!img)
        return;
    uint8_t buf[CS];
    memset(buf, 0x11, sizeof(buf));
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == -EIO);
    CHECK_MSG(strstr(qcow2_error(img), "corrupt") != NULL, "%s", qcow2_error(img));
    CHECK(img->corrupt);
    qcow2_close(img);
    CHECK(peek_be64("hostile.qcow2", HDR_INCOMPATIBLE_FEATURES) & QCOW2_INCOMPAT_CORRUPT);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_refcount.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    g_have_qemu = run_cmd("command -v qemu-img >/dev/null 2>&1 && "
                          "command -v qemu-io >/dev/null 2>&1") == 0;

    char label[128];
    for (unsigned order = 0; order <= 6; order++) {
        for (unsigned cb = 9; cb <= 21; cb += 6) {
            snprintf(label, sizeof(label),
                     "entries_round_trip_at_every_index_kind (cluster_bits %u, refcount_bits %u)",
                     cb, 1u << order);
            RUN(label, test_entries_round_trip_at_every_index_kind(cb, order));
        }
    }
    RUN("entries_use_the_on_disk_encoding", test_entries_use_the_on_disk_encoding());
    RUN("refcount_table_doubling_as_l2_table_is_corruption",
        test_refcount_table_doubling_as_l2_table_is_corruption());

    if (g_have_qemu) {
        RUN("refcount_of_uncovered_clusters_is_zero",
            test_refcount_of_uncovered_clusters_is_zero());
        RUN("bad_refcount_table_entries_are_refused",
            test_bad_refcount_table_entries_fail_when_used());
        static const unsigned growth_cases[][2] = {{64, 4}, {16, 3}, {1, 2}};
        for (size_t i = 0; i < 3; i++) {
            snprintf(label, sizeof(label),
                     "alloc_free_across_block_creation_and_table_growth (refcount_bits %u, "
                     "%u growths)",
                     growth_cases[i][0], growth_cases[i][1]);
            RUN(label, test_alloc_free_across_block_creation_and_table_growth(
                           growth_cases[i][0], growth_cases[i][1]));
        }
        static const unsigned layout_cases[][3] = {
            {512, 64, 3}, {512, 16, 9}, {512, 1, 5}, {512, 8, 3}, {4096, 64, 10}, {2048, 32, 12},
        };
        for (size_t i = 0; i < sizeof(layout_cases) / sizeof(layout_cases[0]); i++) {
            snprintf(label, sizeof(label),
                     "layout_matches_qemu (cluster_size %u, refcount_bits %u, qemu-io write 0 %uM)",
                     layout_cases[i][0], layout_cases[i][1], layout_cases[i][2]);
            RUN(label, test_layout_matches_qemu(layout_cases[i][0], layout_cases[i][1],
                                                layout_cases[i][2]));
        }
        static const unsigned bytes_cases[] = {1, 2, 16, 64};
        for (size_t i = 0; i < 4; i++) {
            snprintf(label, sizeof(label), "alloc_bytes_packs_and_frees (refcount_bits %u)",
                     bytes_cases[i]);
            RUN(label, test_alloc_bytes_packs_and_frees(bytes_cases[i]));
        }
        RUN("alloc_at_takes_only_free_clusters", test_alloc_at_takes_only_free_clusters());
        RUN("freeing_a_free_cluster_is_corruption",
            test_freeing_a_free_cluster_is_corruption());
        RUN("freeing_drops_cached_tables", test_freeing_drops_cached_tables());
        RUN("freeing_a_table_in_use_is_corruption", test_freeing_a_table_in_use_is_corruption());
        RUN("decrease_waits_for_l2 (accurate refcounts)", test_decrease_waits_for_l2(false));
        RUN("decrease_does_not_wait_for_l2 (lazy refcounts)", test_decrease_waits_for_l2(true));
        RUN("data_file_clusters_are_not_refcounted",
            test_data_file_clusters_are_not_refcounted());
    } else {
        printf("skip image tests: qemu-img/qemu-io not found\n");
    }

    if (!getenv("KEEP_TMP"))
        run_cmd("rm -rf '%s'", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
