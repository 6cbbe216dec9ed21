/* test_growth.c - an image that grows, through the public API only: guest writes that push
 * the refcount table past several growths (512-byte clusters, 1/16/64-bit refcounts), virtual
 * size growth with qcow2_truncate that moves the L1 table several times, preallocated growth
 * (metadata, falloc, full), and shrinking. Every image is checked against a raw model that the
 * test writes alongside (our read, `qemu-img compare`), `qemu-img check` and, where QEMU can do
 * the same thing (`qemu-img resize`), against QEMU's result. Skipped (77) without qemu-img. */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testharness.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)

static char g_dir[4096];

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
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(cmd))
        return -1;
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* The output of a shell command (at most `len` - 1 bytes); returns its exit status. */
static int capture(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int capture(char *out, size_t len, const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    out[0] = 0;
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    size_t n = fread(out, 1, len - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define HARNESS(...)                                                                       \
    do {                                                                                   \
        int rc_ = run_cmd(__VA_ARGS__);                                                    \
        if (rc_ != 0) {                                                                    \
            t_failed++;                                                                    \
            fprintf(stderr, "  %s:%d: harness command failed (exit %d)\n", __FILE__,       \
                    __LINE__, rc_);                                                        \
        }                                                                                  \
    } while (0)

static long long json_field(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* `qemu-img check` finds nothing: exit 0, no leaks, no corruptions. */
#define CHECK_CLEAN(name)                                                                  \
    do {                                                                                   \
        char out_[8192];                                                                   \
        int st_ = capture(out_, sizeof(out_), "qemu-img check --output=json '%s/%s' 2>&1", \
                          g_dir, name);                                                    \
        CHECK_MSG(st_ == 0 && json_field(out_, "leaks") <= 0 &&                            \
                      json_field(out_, "corruptions") <= 0,                                \
                  "qemu-img check %s: exit %d\n%s", name, st_, out_);                      \
    } while (0)

static struct qcow2_image *open_image(const char *name, bool read_only)
{
    char p[4400], err[QCOW2_ERROR_MAX] = "";
    path_of(p, sizeof(p), name);
    struct qcow2_open_opts opts;
    opts = QCOW2_OPEN_OPTS_INIT;
    opts.read_only = read_only;
    struct qcow2_image *img = NULL;
    int ret = qcow2_open(p, &opts, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "opening %s: %s", name, err);
    return ret == 0 ? img : NULL;
}

static uint64_t peek_be(const char *name, uint64_t offset, unsigned bytes)
{
    char p[4400];
    path_of(p, sizeof(p), name);
    uint8_t b[8] = {0};
    int fd = open(p, O_RDONLY);
    if (fd >= 0) {
        if (pread(fd, b, bytes, (off_t)offset) != (ssize_t)bytes)
            memset(b, 0, sizeof(b));
        close(fd);
    }
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++)
        v = v << 8 | b[i];
    return v;
}

/* The raw model: a sparse file that receives every write the image receives. */
struct model {
    int fd;
    char name[128];
    uint64_t size;
};

static void model_open(struct model *m, const char *name, uint64_t size)
{
    char p[4400];
    snprintf(m->name, sizeof(m->name), "%s", name);
    path_of(p, sizeof(p), name);
    m->fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(m->fd >= 0 && ftruncate(m->fd, (off_t)size) == 0);
    m->size = size;
}

static void model_write(struct model *m, const void *buf, size_t len, uint64_t off)
{
    CHECK(pwrite(m->fd, buf, len, (off_t)off) == (ssize_t)len);
}

static void model_resize(struct model *m, uint64_t size)
{
    CHECK(ftruncate(m->fd, (off_t)size) == 0);
    m->size = size;
}

static void model_close(struct model *m)
{
    if (m->fd >= 0)
        close(m->fd);
    m->fd = -1;
}

/* Different bytes for every write and every position. */
static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)(x >> 32);
    }
}

/* Our read of the whole image equals the model. */
static void compare_with_model(struct qcow2_image *img, struct model *m, const char *what)
{
    CHECK_MSG(qcow2_get_size(img) == m->size, "%s: size %llu, model %llu", what,
              ull(qcow2_get_size(img)), ull(m->size));
    size_t chunk = 4 * MIB;
    uint8_t *a = malloc(chunk), *b = malloc(chunk);
    for (uint64_t off = 0; a && b && off < m->size; off += chunk) {
        size_t n = (size_t)MIN(chunk, m->size - off);
        int ret = qcow2_pread(img, a, n, off);
        CHECK_MSG(ret == 0, "%s: read at %llu: %s", what, ull(off), qcow2_error(img));
        CHECK(pread(m->fd, b, n, (off_t)off) == (ssize_t)n);
        if (ret == 0 && memcmp(a, b, n) != 0) {
            size_t i = 0;
            while (a[i] == b[i])
                i++;
            CHECK_MSG(false, "%s: our read differs from the model at %llu", what,
                      ull(off + i));
            break;
        }
    }
    free(a);
    free(b);
}

/* QEMU reads the image as the model. */
static void qemu_compare(const char *name, const struct model *m)
{
    char out[4096];
    int st = capture(out, sizeof(out), "cd '%s' && qemu-img compare -f qcow2 -F raw '%s' '%s' 2>&1",
                     g_dir, name, m->name);
    CHECK_MSG(st == 0, "qemu-img compare %s %s: exit %d: %s", name, m->name, st, out);
}

/* The image reads as the model (ours, then QEMU's after close) and check is clean. */
static void close_and_verify(struct qcow2_image *img, struct model *m, const char *name)
{
    compare_with_model(img, m, name);
    CHECK(qcow2_close(img) == 0);
    CHECK_CLEAN(name);
    qemu_compare(name, m);
}

/* ------------------------------------------------------------------------------------------ */
/* Growth by writing. */

/* Write until the refcount table has grown `min_rt_growths` times and the L1 table (moved by
 * growing the virtual size) `min_l1_growths` times. Each round grows the image by about half,
 * then writes runs of clusters into the new area and some back into the old one. */
static void test_writes_grow_refcount_and_l1_tables(unsigned refcount_bits,
                                                    unsigned min_rt_growths,
                                                    unsigned min_l1_growths,
                                                    uint64_t max_bytes)
{
    char name[64], model_name[64];
    snprintf(name, sizeof(name), "grow-rc%u.qcow2", refcount_bits);
    snprintf(model_name, sizeof(model_name), "grow-rc%u.raw", refcount_bits);
    uint64_t size = 1 * MIB;
    HARNESS("qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=%u '%s/%s' %llu",
            refcount_bits, g_dir, name, ull(size));
    struct qcow2_image *img = open_image(name, false);
    if (!img)
        return;
    struct model m;
    model_open(&m, model_name, size);

    unsigned rt_growths = 0, l1_growths = 0;
    uint32_t rt_clusters = img->hdr.refcount_table_clusters;
    uint64_t rt_offset = img->hdr.refcount_table_offset;
    uint32_t l1_size = img->l1_size;
    uint64_t l1_offset = peek_be(name, HDR_L1_TABLE_OFFSET, 8);
    uint64_t written = 0, seq = 0;
    size_t bufsize = 256 * KIB;
    uint8_t *buf = malloc(bufsize);
    while ((rt_growths < min_rt_growths || l1_growths < min_l1_growths) && written < max_bytes &&
           t_failed == 0) {
        /* Grow the virtual size; the new area needs more L1 entries. */
        uint64_t old = size;
        size = ROUND_UP(size + size / 2 + 3 * KIB, 512);
        int ret = qcow2_truncate(img, size, QCOW2_PREALLOC_OFF, 0);
        CHECK_MSG(ret == 0, "truncate to %llu: %s", ull(size), qcow2_error(img));
        model_resize(&m, size);
        CHECK(qcow2_get_size(img) == size);
        CHECK(img->l1_size >= size_to_l1(img, size));
        CHECK(peek_be(name, HDR_SIZE, 8) == size);
        CHECK(peek_be(name, HDR_L1_SIZE, 4) == img->l1_size);
        uint64_t new_l1_offset = peek_be(name, HDR_L1_TABLE_OFFSET, 8);
        CHECK(new_l1_offset == img->hdr.l1_table_offset);
        if (img->l1_size != l1_size) {
            CHECK_MSG(img->l1_size > l1_size, "L1 shrank from %u to %u", l1_size, img->l1_size);
            CHECK_MSG(new_l1_offset != l1_offset, "L1 grew from %u to %u entries in place",
                      l1_size, img->l1_size);
            l1_growths++;
            l1_size = img->l1_size;
            l1_offset = new_l1_offset;
        }
        /* Write into the new area: every third run of up to 256 KiB, unaligned edges, the
         * last byte included; then a few writes into the old area. */
        uint64_t pos = old;
        while (pos < size && ret == 0) {
            size_t n = (size_t)MIN(bufsize - (seq % 7) * 512 - 100 * (seq % 3), size - pos);
            fill(buf, n, ++seq);
            ret = qcow2_pwrite(img, buf, n, pos, 0);
            CHECK_MSG(ret == 0, "write %llu at %llu: %s", ull(n), ull(pos), qcow2_error(img));
            model_write(&m, buf, n, pos);
            written += n;
            pos += n + (seq % 3 == 0 ? n : 0);
        }
        for (unsigned k = 0; k < 4 && ret == 0; k++) {
            uint64_t at = (seq * 7919 * 512 + k * 33333) % old;
            size_t n = (size_t)MIN(3000 + k * 512, old - at);
            fill(buf, n, ++seq);
            ret = qcow2_pwrite(img, buf, n, at, 0);
            CHECK_MSG(ret == 0, "write into the old area: %s", qcow2_error(img));
            model_write(&m, buf, n, at);
        }
        if (img->hdr.refcount_table_clusters != rt_clusters) {
            CHECK(img->hdr.refcount_table_clusters > rt_clusters);
            CHECK(img->hdr.refcount_table_offset != rt_offset);
            rt_growths++;
            rt_clusters = img->hdr.refcount_table_clusters;
            rt_offset = img->hdr.refcount_table_offset;
        }
    }
    free(buf);
    CHECK_MSG(rt_growths >= min_rt_growths, "refcount table grew %u times (wanted %u) after "
              "%llu bytes", rt_growths, min_rt_growths, ull(written));
    CHECK_MSG(l1_growths >= min_l1_growths, "L1 table grew %u times (wanted %u)", l1_growths,
              min_l1_growths);
    /* The header on disk describes the tables in memory. */
    CHECK(peek_be(name, HDR_REFCOUNT_TABLE_OFFSET, 8) == img->hdr.refcount_table_offset);
    CHECK(peek_be(name, HDR_REFCOUNT_TABLE_CLUSTERS, 4) == img->hdr.refcount_table_clusters);
    close_and_verify(img, &m, name);
    /* Reopened, it reads the same. */
    img = open_image(name, true);
    if (img) {
        compare_with_model(img, &m, name);
        qcow2_close(img);
    }
    model_close(&m);
    if (!t_failed && !getenv("KEEP_TMP"))
        run_cmd("rm -f '%s/%s' '%s/%s'", g_dir, name, g_dir, model_name);
}

/* ------------------------------------------------------------------------------------------ */
/* Truncate. */

static const char *const prealloc_names[] = {"off", "metadata", "falloc", "full"};

/* `qemu-img map --output=json` of an image from guest offset `from` on, reduced to what two
 * writers must agree on: "start+length present data" per range, plus "zero" where there is no
 * data (where there is, "zero" only says whether the host file has a hole there, which is up
 * to the writer). Host offsets are left out; adjacent equal ranges are merged. */
static void map_of(const char *name, uint64_t from, char *out, size_t len)
{
    static char raw[1 << 16];
    capture(raw, sizeof(raw), "qemu-img map --output=json '%s/%s'", g_dir, name);
    size_t n = 0;
    uint64_t cur_start = 0, cur_end = 0;
    char cur[64] = "";
    out[0] = 0;
    for (char *line = strtok(raw, "\n"); line; line = strtok(NULL, "\n")) {
        const char *s = strstr(line, "\"start\": "), *l = strstr(line, "\"length\": ");
        if (!s || !l)
            continue;
        uint64_t start = strtoull(s + 9, NULL, 10), end = start + strtoull(l + 10, NULL, 10);
        if (end <= from)
            continue;
        start = MAX(start, from);
        bool present = strstr(line, "\"present\": true") != NULL;
        bool data = strstr(line, "\"data\": true") != NULL;
        bool zero = strstr(line, "\"zero\": true") != NULL;
        char key[64];
        snprintf(key, sizeof(key), "present=%d data=%d%s", present, data,
                 data ? "" : zero ? " zero=1" : " zero=0");
        if (cur[0] && strcmp(key, cur) == 0 && start == cur_end) {
            cur_end = end;
            continue;
        }
        if (cur[0])
            n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%llu+%llu %s\n",
                                  ull(cur_start), ull(cur_end - cur_start), cur);
        snprintf(cur, sizeof(cur), "%s", key);
        cur_start = start;
        cur_end = end;
    }
    if (cur[0])
        snprintf(out + n, n < len ? len - n : 0, "%llu+%llu %s\n", ull(cur_start),
                 ull(cur_end - cur_start), cur);
}

/* Grow with preallocation: QEMU's `qemu-img resize --preallocation=MODE` on a copy is the
 * reference for the map; the new area reads zeros; the file covers the new clusters. */
static void test_grow_with_preallocation(enum qcow2_prealloc mode, bool ext)
{
    char name[64], ref[64], model_name[64];
    const char *mn = prealloc_names[mode];
    snprintf(name, sizeof(name), "prealloc-%s-%d.qcow2", mn, ext);
    snprintf(ref, sizeof(ref), "prealloc-%s-%d.qemu.qcow2", mn, ext);
    snprintf(model_name, sizeof(model_name), "prealloc-%s-%d.raw", mn, ext);
    uint64_t cs = ext ? 32 * KIB : 64 * KIB;
    uint64_t old = 3 * MIB + 5 * 512, size = 9 * MIB + 3 * 512;
    /* The same image twice (not a copy: cp may punch holes where the file has zeros). */
    for (int i = 0; i < 2; i++)
        HARNESS("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=%llu,extended_l2=%s "
                "'%s' %llu && qemu-io -c 'write -P 0x5c 0 %llu' -c 'write -P 0x5d %llu 512' "
                "'%s' >/dev/null",
                g_dir, ull(cs), ext ? "on" : "off", i ? ref : name, ull(old),
                ull(old - 100 * KIB), ull(old - 512), i ? ref : name);
    HARNESS("cd '%s' && qemu-img resize -q --preallocation=%s '%s' %llu", g_dir, mn, ref,
            ull(size));
    struct model m;
    model_open(&m, model_name, old);
    uint8_t *buf = malloc(old);
    memset(buf, 0x5c, old - 100 * KIB);
    model_write(&m, buf, old - 100 * KIB, 0);
    memset(buf, 0x5d, 512);
    model_write(&m, buf, 512, old - 512);
    free(buf);

    struct qcow2_image *img = open_image(name, false);
    if (!img)
        return;
    int64_t fsize_before = file_size(img->file);
    int ret = qcow2_truncate(img, size, mode, 0);
    CHECK_MSG(ret == 0, "truncate %s: %s", mn, qcow2_error(img));
    model_resize(&m, size);
    compare_with_model(img, &m, name);
    /* Every new cluster has a host cluster (its L2 entry has an offset), unless off. */
    uint64_t first_new = ROUND_UP(old, cs), missing = 0;
    for (uint64_t off = first_new; off < size; off += cs) {
        void *slice;
        uint64_t idx, e = 0;
        pthread_mutex_lock(&img->lock);
        if (cluster_get_l2_slice(img, off, false, &slice, &idx) == 0 && slice) {
            e = l2_get_entry(img, slice, idx);
            cache_put(img->l2_cache, &slice);
        }
        pthread_mutex_unlock(&img->lock);
        missing += (e & L2E_OFFSET_MASK) == 0;
        if (mode == QCOW2_PREALLOC_OFF)
            CHECK_MSG(e == 0, "cluster at %llu: entry 0x%llx after growing without "
                      "preallocation", ull(off), ull(e));
    }
    if (mode != QCOW2_PREALLOC_OFF) {
        CHECK_MSG(missing == 0, "%llu new clusters without a host cluster", ull(missing));
        uint64_t new_clusters = DIV_ROUND_UP(size, cs) - first_new / cs;
        int64_t fsize = file_size(img->file);
        CHECK_MSG((uint64_t)(fsize - fsize_before) >= new_clusters * cs,
                  "the file grew by %lld bytes for %llu new clusters",
                  (long long)(fsize - fsize_before), ull(new_clusters));
    }
    CHECK(qcow2_close(img) == 0);
    CHECK_CLEAN(name);
    qemu_compare(name, &m);
    /* qemu-img map of the new clusters: as after `qemu-img resize --preallocation`. (The
     * tail of the old last cluster is left out: we make it read zeros explicitly, which QEMU
     * does not do.) */
    char ours[16384], qemu[16384];
    map_of(name, first_new, ours, sizeof(ours));
    map_of(ref, first_new, qemu, sizeof(qemu));
    CHECK_MSG(strcmp(ours, qemu) == 0, "qemu-img map after our truncate:\n%safter qemu-img "
              "resize:\n%s", ours, qemu);
    if (mode != QCOW2_PREALLOC_OFF && !ext) {
        char want[128];
        snprintf(want, sizeof(want), "%llu+%llu present=1 data=1\n", ull(first_new),
                 ull(size - first_new));
        CHECK_MSG(strcmp(ours, want) == 0, "map of the new area:\n%s", ours);
    }
    /* The host space follows the mode: falloc reserves it, full writes it. */
    char p[4400];
    path_of(p, sizeof(p), name);
    struct stat st;
    if (mode >= QCOW2_PREALLOC_FALLOC && stat(p, &st) == 0)
        CHECK_MSG((uint64_t)st.st_blocks * 512 >= size - first_new,
                  "only %lld bytes allocated on the host", (long long)st.st_blocks * 512);
    model_close(&m);
    if (!t_failed && !getenv("KEEP_TMP"))
        run_cmd("cd '%s' && rm -f '%s' '%s' '%s'", g_dir, name, ref, model_name);
}

/* Shrinking frees what lies beyond (check is clean: no leaks), keeps what is before, and a
 * later growth reads zeros in the new area - including the tail of a last cluster that was
 * cut in the middle, and even where a backing file has data. */
static void test_shrink_then_regrow_reads_zeros(bool ext, bool backing)
{
    char name[64], model_name[64];
    snprintf(name, sizeof(name), "shrink-%d-%d.qcow2", ext, backing);
    snprintf(model_name, sizeof(model_name), "shrink-%d-%d.raw", ext, backing);
    uint64_t cs = ext ? 32 * KIB : 64 * KIB;
    uint64_t size = 8 * MIB, small = 3 * MIB + 7 * 512 + 9 * KIB; /* mid-cluster */
    if (backing)
        HARNESS("cd '%s' && qemu-img create -q -f raw shrink-back.raw %llu && "
                "qemu-io -f raw -c 'write -P 0xbb 0 %llu' shrink-back.raw >/dev/null",
                g_dir, ull(size), ull(size));
    HARNESS("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=%llu,extended_l2=%s%s '%s' "
            "%llu",
            g_dir, ull(cs), ext ? "on" : "off",
            backing ? ",backing_file=shrink-back.raw,backing_fmt=raw" : "", name, ull(size));
    struct qcow2_image *img = open_image(name, false);
    if (!img)
        return;
    struct model m;
    model_open(&m, model_name, size);
    if (backing) {
        uint8_t *bb = malloc(size);
        memset(bb, 0xbb, size);
        model_write(&m, bb, size, 0);
        free(bb);
    }
    /* Data everywhere, including across the cut and in the last cluster before it. */
    uint8_t *buf = malloc(MIB);
    for (uint64_t off = 0; off < size; off += 2 * MIB) {
        fill(buf, MIB, off);
        CHECK(qcow2_pwrite(img, buf, MIB, off, 0) == 0);
        model_write(&m, buf, MIB, off);
    }
    fill(buf, 64 * KIB, 77);
    uint64_t across = small - 20 * KIB;
    CHECK(qcow2_pwrite(img, buf, 64 * KIB, across, 0) == 0);
    model_write(&m, buf, 64 * KIB, across);

    /* Without the flag, shrinking is refused and changes nothing. */
    int ret = qcow2_truncate(img, small, QCOW2_PREALLOC_OFF, 0);
    CHECK_MSG(ret == -EINVAL, "shrink without QCOW2_TRUNCATE_SHRINK returned %d", ret);
    CHECK(qcow2_get_size(img) == size);
    /* Nor with preallocation. */
    ret = qcow2_truncate(img, small, QCOW2_PREALLOC_METADATA, QCOW2_TRUNCATE_SHRINK);
    CHECK_MSG(ret == -EINVAL, "shrink with preallocation returned %d", ret);
    CHECK(qcow2_get_size(img) == size);

    ret = qcow2_truncate(img, small, QCOW2_PREALLOC_OFF, QCOW2_TRUNCATE_SHRINK);
    CHECK_MSG(ret == 0, "shrink: %s", qcow2_error(img));
    model_resize(&m, small);
    CHECK(qcow2_get_size(img) == small);
    CHECK(peek_be(name, HDR_SIZE, 8) == small);
    uint8_t one;
    CHECK(qcow2_pread(img, &one, 1, small) == -EINVAL); /* beyond the end now */
    close_and_verify(img, &m, name);

    /* Grow again: everything past `small` reads zeros (the model was truncated, which is what
     * QEMU does too: it zeroes the new area when a backing file would show through). */
    img = open_image(name, false);
    if (!img) {
        free(buf);
        return;
    }
    ret = qcow2_truncate(img, size, QCOW2_PREALLOC_OFF, 0);
    CHECK_MSG(ret == 0, "regrow: %s", qcow2_error(img));
    model_resize(&m, size);
    uint64_t tail = ROUND_UP(small, cs) - small;
    memset(buf, 0xff, tail);
    CHECK(qcow2_pread(img, buf, tail, small) == 0);
    bool zero = true;
    for (uint64_t i = 0; i < tail; i++)
        zero &= buf[i] == 0;
    CHECK_MSG(zero, "the tail of the cut cluster does not read zeros after regrowing");
    close_and_verify(img, &m, name);
    free(buf);
    model_close(&m);
    if (!t_failed && !getenv("KEEP_TMP"))
        run_cmd("cd '%s' && rm -f '%s' '%s' shrink-back.raw", g_dir, name, model_name);
}

/* Shrinking an image whose old end is inside a cluster frees that last cluster too (fuzz_io
 * found this: the old end looked like part of a cluster to the zeroing code and tripped its
 * assertion). Both ends mid-cluster; check is clean (no leak) and the data before the new end
 * stays. */
static void test_shrink_from_unaligned_end(bool ext)
{
    char name[64], model_name[64];
    snprintf(name, sizeof(name), "shrink-unaligned-%d.qcow2", ext);
    snprintf(model_name, sizeof(model_name), "shrink-unaligned-%d.raw", ext);
    uint64_t cs = ext ? 32 * KIB : 64 * KIB;
    uint64_t size = 891 * KIB, small = 256 * KIB + 512;
    HARNESS("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=%llu,extended_l2=%s '%s' %llu",
            g_dir, ull(cs), ext ? "on" : "off", name, ull(size));
    struct qcow2_image *img = open_image(name, false);
    if (!img)
        return;
    struct model m;
    model_open(&m, model_name, size);
    uint8_t *buf = malloc(size);
    fill(buf, size, 5);
    CHECK(qcow2_pwrite(img, buf, size, 0, 0) == 0);
    model_write(&m, buf, size, 0);
    int ret = qcow2_truncate(img, small, QCOW2_PREALLOC_OFF, QCOW2_TRUNCATE_SHRINK);
    CHECK_MSG(ret == 0, "shrink: %s", qcow2_error(img));
    model_resize(&m, small);
    CHECK(qcow2_get_size(img) == small);
    close_and_verify(img, &m, name);
    free(buf);
    model_close(&m);
    if (!t_failed && !getenv("KEEP_TMP"))
        run_cmd("cd '%s' && rm -f '%s' '%s'", g_dir, name, model_name);
}

static uint64_t file_length(const char *name)
{
    char p[4400];
    struct stat st;
    path_of(p, sizeof(p), name);
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Shrinking drops what lies wholly past the new end, as qemu-img resize --shrink does: the
 * L2 tables (64 KiB clusters: one per 512 MiB) or the refcount blocks too (512-byte clusters:
 * one per 128 KiB of file), and cuts the file after its last used cluster. Our file is no
 * longer than QEMU's (it can be shorter: QEMU leaves a cluster it allocates while dropping
 * a self-describing refcount block), reads the same and checks clean. */
static void test_shrink_trims_like_qemu(unsigned cluster_size)
{
    char name[64], theirs[64];
    snprintf(name, sizeof(name), "trim-%u.qcow2", cluster_size);
    snprintf(theirs, sizeof(theirs), "trim-%u-qemu.qcow2", cluster_size);
    bool small = cluster_size == 512;
    uint64_t size = small ? 8 * MIB : 2048 * MIB, to = small ? 512 * KIB + 512 : 256 * MIB;
    HARNESS("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=%u '%s' %llu && "
            "qemu-io -c 'write -P 0x33 0 64k' -c 'write -P 0x44 %llu 200k' '%s' >/dev/null && "
            "cp '%s' '%s' && qemu-img resize -q --shrink '%s' %llu",
            g_dir, cluster_size, name, ull(size), ull(size - 2 * MIB), name, name, theirs,
            theirs, ull(to));
    uint64_t before = file_length(name);
    struct qcow2_image *img = open_image(name, false);
    if (!img)
        return;
    int ret = qcow2_truncate(img, to, QCOW2_PREALLOC_OFF, QCOW2_TRUNCATE_SHRINK);
    CHECK_MSG(ret == 0, "shrink: %s", qcow2_error(img));
    CHECK(qcow2_close(img) == 0);
    uint64_t ours = file_length(name), qemu = file_length(theirs);
    CHECK_MSG(ours < before && ours <= qemu,
              "file of %llu bytes after the shrink (before %llu, qemu-img's %llu)", ull(ours),
              ull(before), ull(qemu));
    CHECK_CLEAN(name);
    int st = run_cmd("cd '%s' && qemu-img compare -q '%s' '%s'", g_dir, name, theirs);
    CHECK_MSG(st == 0, "the shrunk image does not read as qemu-img's");
    if (!t_failed && !getenv("KEEP_TMP"))
        run_cmd("cd '%s' && rm -f '%s' '%s'", g_dir, name, theirs);
}

/* Growing over a longer backing file: the new area reads zeros, not the backing data (QEMU
 * zero-fills it: bdrv_co_truncate with a backing file that covers the new area). */
/* An image grown from 1 MiB to 4 MiB reads zeros in [1 MiB, 4 MiB); `what` names what a
 * wrong byte would be. */
static void check_grown_to_4m_reads_zeros(struct qcow2_image *img, const char *what)
{
    uint8_t *buf = malloc(3 * MIB);
    CHECK(qcow2_pread(img, buf, 3 * MIB, 1 * MIB) == 0);
    uint64_t i = 0;
    while (i < 3 * MIB && buf[i] == 0)
        i++;
    CHECK_MSG(i == 3 * MIB, "byte %llu of the new area reads 0x%02x (%s)", ull(1 * MIB + i),
              i < 3 * MIB ? buf[i] : 0, what);
    free(buf);
}

static void test_grow_over_longer_backing_file_reads_zeros(bool ext)
{
    char name[64];
    snprintf(name, sizeof(name), "overback-%d.qcow2", ext);
    HARNESS("cd '%s' && qemu-img create -q -f raw over-back.raw 4M && "
            "qemu-io -f raw -c 'write -P 0xbb 0 4M' over-back.raw >/dev/null && "
            "qemu-img create -q -f qcow2 -o cluster_size=%u,extended_l2=%s,"
            "backing_file=over-back.raw,backing_fmt=raw '%s' 1M",
            g_dir, ext ? 32768 : 65536, ext ? "on" : "off", name);
    struct qcow2_image *img = open_image(name, false);
    if (!img)
        return;
    CHECK(qcow2_truncate(img, 4 * MIB, QCOW2_PREALLOC_OFF, 0) == 0);
    check_grown_to_4m_reads_zeros(img, "backing data");
    CHECK(qcow2_close(img) == 0);
    CHECK_CLEAN(name);
    /* What QEMU reads. */
    int st = run_cmd("cd '%s' && qemu-io -c 'read -q -P 0 1M 3M' '%s' >/dev/null 2>&1", g_dir,
                     name);
    CHECK_MSG(st == 0, "qemu-io does not read zeros in the new area");
    if (!t_failed && !getenv("KEEP_TMP"))
        run_cmd("cd '%s' && rm -f '%s' over-back.raw", g_dir, name);
}

/* A shrink writes the new size first and drops the clusters past it after: a crash in between
 * leaves data clusters mapped past the end (simulated here by writing only the size field).
 * Growing again must not show them: the new area reads zeros, and no cluster leaks. */
static void test_regrow_after_interrupted_shrink_reads_zeros(bool ext)
{
    char name[64];
    snprintf(name, sizeof(name), "halfshrunk-%d.qcow2", ext);
    HARNESS("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=%u,extended_l2=%s '%s' 4M "
            "&& qemu-io -c 'write -P 0x6d 0 3M' -c 'write -c -P 0x6e 3M 64k' '%s' >/dev/null "
            "&& qemu-io -f raw -c 'write -q -P 0 24 8' -c 'write -q -P 0x10 29 1' '%s'",
            g_dir, ext ? 32768 : 65536, ext ? "on" : "off", name, name, name);
    CHECK_MSG(peek_be(name, HDR_SIZE, 8) == 1 * MIB, "harness: size field not rewritten");
    struct qcow2_image *img = open_image(name, false);
    if (!img)
        return;
    CHECK(qcow2_truncate(img, 4 * MIB, QCOW2_PREALLOC_OFF, 0) == 0);
    check_grown_to_4m_reads_zeros(img, "data dropped by the shrink");
    CHECK(qcow2_close(img) == 0);
    CHECK_CLEAN(name);
    int st = run_cmd("cd '%s' && qemu-io -c 'read -q -P 0 1M 3M' -c 'read -q -P 0x6d 0 1M' "
                     "'%s' >/dev/null 2>&1", g_dir, name);
    CHECK_MSG(st == 0, "qemu-io does not read zeros in the regrown area (or lost the data)");
    if (!t_failed && !getenv("KEEP_TMP"))
        run_cmd("cd '%s' && rm -f '%s'", g_dir, name);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    if (run_cmd("command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1")) {
        printf("SKIP: qemu-img/qemu-io not found\n0 passed, 0 failed\n");
        return 77;
    }
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_growth.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }

    char label[160];
    /* 512-byte clusters. 64-bit refcounts: a block covers 64 clusters, the first table
     * 2 MiB of file; 16 bits: 8 MiB; 1 bit: 128 MiB, so one growth needs that much data. */
    static const struct {
        unsigned bits, rt_growths, l1_growths;
        uint64_t max_bytes;
    } grow[] = {{64, 4, 4, 64 * MIB}, {16, 2, 4, 64 * MIB}, {1, 1, 4, 200 * MIB}};
    for (size_t i = 0; i < sizeof(grow) / sizeof(grow[0]); i++) {
        snprintf(label, sizeof(label),
                 "writes_grow_refcount_and_l1_tables (512-byte clusters, refcount_bits %u: "
                 ">= %u refcount table and %u L1 growths)",
                 grow[i].bits, grow[i].rt_growths, grow[i].l1_growths);
        RUN(label, test_writes_grow_refcount_and_l1_tables(grow[i].bits, grow[i].rt_growths,
                                                           grow[i].l1_growths,
                                                           grow[i].max_bytes));
    }
    for (int ext = 0; ext < 2; ext++)
        for (int mode = QCOW2_PREALLOC_OFF; mode <= QCOW2_PREALLOC_FULL; mode++) {
            snprintf(label, sizeof(label), "grow_with_preallocation (%s, %s L2)",
                     prealloc_names[mode], ext ? "extended" : "standard");
            RUN(label, test_grow_with_preallocation((enum qcow2_prealloc)mode, ext));
        }
    for (int ext = 0; ext < 2; ext++)
        for (int b = 0; b < 2; b++) {
            snprintf(label, sizeof(label), "shrink_then_regrow_reads_zeros (%s L2, %s)",
                     ext ? "extended" : "standard", b ? "backing file" : "no backing file");
            RUN(label, test_shrink_then_regrow_reads_zeros(ext, b));
        }
    for (int ext = 0; ext < 2; ext++) {
        snprintf(label, sizeof(label), "shrink_from_unaligned_end (%s L2)",
                 ext ? "extended" : "standard");
        RUN(label, test_shrink_from_unaligned_end(ext));
    }
    RUN("shrink_trims_like_qemu (64 KiB clusters: L2 tables)", test_shrink_trims_like_qemu(65536));
    RUN("shrink_trims_like_qemu (512-byte clusters: refcount blocks)",
        test_shrink_trims_like_qemu(512));
    for (int ext = 0; ext < 2; ext++) {
        snprintf(label, sizeof(label), "grow_over_longer_backing_file_reads_zeros (%s L2)",
                 ext ? "extended" : "standard");
        RUN(label, test_grow_over_longer_backing_file_reads_zeros(ext));
    }

    for (int ext = 0; ext < 2; ext++) {
        snprintf(label, sizeof(label), "regrow_after_interrupted_shrink_reads_zeros (%s L2)",
                 ext ? "extended" : "standard");
        RUN(label, test_regrow_after_interrupted_shrink_reads_zeros(ext));
    }
    if (!getenv("KEEP_TMP"))
        run_cmd("rm -rf '%s'", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
