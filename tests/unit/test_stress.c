/* test_stress.c - many threads on one image: overlapping and disjoint writes, zero writes,
 * discards and reads over a small region of an extended-L2 overlay with a backing file, so
 * that allocations collide all the time. Every write carries a per-operation tag; at the end
 * each byte must hold what some operation that was not overtaken left there (an operation B
 * overtakes A when B started after A had returned), or the backing data if none touched it.
 * Reads are checked too: each sampled byte is the backing data, zero, or what a write that
 * began before the read ended left at that very place (a read guard keeps clusters from being
 * freed and reused while they are read; one configuration has only 2 guard slots, so most
 * reads overflow into in-flight records).
 * The image must then be `qemu-img check` clean and read the same through qemu-img. Runs
 * under ThreadSanitizer too (build-tsan). Env STRESS_OPS scales the work.
 * Fault configurations open the image through the test file backend and make every write
 * and flush fail with EIO for a while in the middle of the run: operations may fail then
 * (their effect is uncertain: they may or may not show), but nothing deadlocks, later
 * operations work, and the image stays consistent (leaks allowed). */
#include "internal.h"
#include "qcow2.h"
#include "testfile.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define REGION (512 * 1024)

enum op_kind { OP_WRITE, OP_ZERO, OP_ZERO_UNMAP, OP_DISCARD, OP_READ };

struct op {
    enum op_kind kind;
    uint64_t off, len;     /* bytes covered (discard: the whole clusters inside) */
    uint32_t tag;
    uint64_t begin, end;   /* global sequence numbers before the call / after it returned */
    int failed;            /* returned an error (only expected with injected faults) */
    uint8_t *data;         /* reads: sampled bytes of what was read (READ_SAMPLES) */
};

/* Bytes of each read kept for checking: enough to catch data from a wrong place (a cluster
 * freed and reused while being read) with near certainty. */
#define READ_SAMPLES 16

struct config {
    const char *name;
    const char *create_opts;
    uint64_t cluster;
    int threads;
    int ops_per_thread;
    int faults; /* inject EIO on writes and flushes for a while */
    int guard_slots; /* 0: all; else so few read-guard slots that reads overflow them */
};

struct shared {
    struct qcow2_image *img;
    const struct config *cfg;
    atomic_uint_fast64_t seq;
    struct op *ops; /* threads * ops_per_thread */
    atomic_int errors;
};

struct worker {
    struct shared *sh;
    int id;
    uint64_t rng;
};

static int failures, passes;

static void check(int cond, const char *what)
{
    if (cond) {
        passes++;
    } else {
        failures++;
        printf("FAIL %s\n", what);
    }
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint8_t tag_byte(uint32_t tag, uint64_t pos)
{
    uint64_t h = (tag * 0x9e3779b97f4a7c15ull) ^ (pos * 0xff51afd7ed558ccdull);
    h ^= h >> 29;
    return (uint8_t)(h | 1); /* never zero: a tagged byte differs from a zeroed one */
}

static uint8_t base_byte(uint64_t pos)
{
    return (uint8_t)(0x40 + pos / 4096 % 64);
}

/* Where read sample j of a read lies: its first and last byte and points in between. */
static uint64_t read_sample_pos(const struct op *op, int j)
{
    return op->off + (op->len - 1) * (uint64_t)j / (READ_SAMPLES - 1);
}

static void pick_range(uint64_t *s, uint64_t cluster, uint64_t *off, uint64_t *len)
{
    uint64_t sub = cluster / 32 ? cluster / 32 : 512;
    switch (rnd(s) % 3) {
    case 0: *off = rnd(s) % REGION; *len = 1 + rnd(s) % 8192; break;
    case 1: *off = rnd(s) % (REGION / sub) * sub; *len = (1 + rnd(s) % 6) * sub; break;
    default: *off = rnd(s) % (REGION / cluster) * cluster; *len = (1 + rnd(s) % 3) * cluster; break;
    }
    if (*off + *len > REGION)
        *len = REGION - *off;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    const struct config *cfg = sh->cfg;
    uint8_t *buf = malloc(4 * cfg->cluster + 8192);
    for (int i = 0; i < cfg->ops_per_thread; i++) {
        struct op *op = &sh->ops[(size_t)w->id * cfg->ops_per_thread + i];
        uint64_t k = rnd(&w->rng) % 20;
        op->kind = k < 10 ? OP_WRITE : k < 12 ? OP_ZERO : k < 14 ? OP_ZERO_UNMAP
                 : k < 16 ? OP_DISCARD : OP_READ;
        pick_range(&w->rng, cfg->cluster, &op->off, &op->len);
        op->tag = (uint32_t)(w->id * 100000 + i + 1);
        int ret = 0;
        if (op->kind == OP_WRITE)
            for (uint64_t j = 0; j < op->len; j++)
                buf[j] = tag_byte(op->tag, op->off + j);
        op->begin = atomic_fetch_add(&sh->seq, 1);
        switch (op->kind) {
        case OP_WRITE: ret = qcow2_pwrite(sh->img, buf, op->len, op->off, 0); break;
        case OP_ZERO: ret = qcow2_pwrite_zeroes(sh->img, op->off, op->len, 0); break;
        case OP_ZERO_UNMAP:
            ret = qcow2_pwrite_zeroes(sh->img, op->off, op->len, QCOW2_ZERO_MAY_UNMAP);
            break;
        case OP_DISCARD: ret = qcow2_discard(sh->img, op->off, op->len); break;
        case OP_READ: ret = qcow2_pread(sh->img, buf, op->len, op->off); break;
        }
        op->end = atomic_fetch_add(&sh->seq, 1);
        if (op->kind == OP_READ && ret == 0 && (op->data = malloc(READ_SAMPLES)))
            for (int j = 0; j < READ_SAMPLES; j++)
                op->data[j] = buf[read_sample_pos(op, j) - op->off];
        if (op->kind == OP_DISCARD) { /* only whole clusters are discarded */
            uint64_t a = (op->off + cfg->cluster - 1) / cfg->cluster * cfg->cluster;
            uint64_t b = (op->off + op->len) / cfg->cluster * cfg->cluster;
            op->off = a;
            op->len = b > a ? b - a : 0;
        }
        if (ret < 0) {
            op->failed = 1;
            if (!cfg->faults) {
                printf("thread %d op %d failed: %s\n", w->id, i, qcow2_error(sh->img));
                atomic_fetch_add(&sh->errors, 1);
            }
        }
        if (i % 37 == 0 && qcow2_flush(sh->img) < 0 && !cfg->faults)
            atomic_fetch_add(&sh->errors, 1);
    }
    free(buf);
    return NULL;
}

/* Every byte must come from an operation that no other covering operation overtook. */
static int verify_serialization(const struct shared *sh, const uint8_t *final)
{
    size_t nops = (size_t)sh->cfg->threads * sh->cfg->ops_per_thread;
    uint64_t *latest_begin = calloc(REGION, sizeof(uint64_t));
    uint8_t *covered = calloc(REGION, 1), *ok = calloc(REGION, 1);
    for (size_t i = 0; i < nops; i++) {
        const struct op *op = &sh->ops[i];
        if (op->kind == OP_READ)
            continue;
        for (uint64_t b = op->off; b < op->off + op->len; b++) {
            covered[b] = 1;
            /* a failed operation may not have happened: it overtakes nothing */
            if (!op->failed && op->begin + 1 > latest_begin[b])
                latest_begin[b] = op->begin + 1;
        }
    }
    for (size_t i = 0; i < nops; i++) {
        const struct op *op = &sh->ops[i];
        if (op->kind == OP_READ)
            continue;
        for (uint64_t b = op->off; b < op->off + op->len; b++) {
            if (op->end + 1 < latest_begin[b])
                continue; /* overtaken at this byte */
            uint8_t want = op->kind == OP_WRITE ? tag_byte(op->tag, b) : 0;
            if (final[b] == want)
                ok[b] = 1;
        }
    }
    int bad = 0;
    for (uint64_t b = 0; b < REGION; b++) {
        /* bytes whose only writers failed may still hold the backing data */
        int good = covered[b] ? ok[b] || (latest_begin[b] == 0 && final[b] == base_byte(b))
                              : final[b] == base_byte(b);
        if (!good && bad++ < 5)
            printf("  byte %" PRIu64 " = 0x%02x matches no admissible operation\n", b, final[b]);
    }
    free(latest_begin);
    free(covered);
    free(ok);
    return bad;
}

/* Every sampled byte of every read is the backing data, zero, or what a write that began
 * before the read ended put at that very position (not data of another place: a read must
 * never see a cluster that was freed and reused while it read). */
static int verify_reads(const struct shared *sh)
{
    size_t nops = (size_t)sh->cfg->threads * sh->cfg->ops_per_thread;
    int bad = 0;
    for (size_t r = 0; r < nops; r++) {
        const struct op *rd = &sh->ops[r];
        if (rd->kind != OP_READ || !rd->data)
            continue;
        for (int j = 0; j < READ_SAMPLES; j++) {
            uint64_t b = read_sample_pos(rd, j);
            uint8_t v = rd->data[j];
            int good = v == base_byte(b) || v == 0;
            for (size_t i = 0; i < nops && !good; i++) {
                const struct op *w = &sh->ops[i];
                good = w->kind == OP_WRITE && w->begin < rd->end && b >= w->off &&
                       b < w->off + w->len && tag_byte(w->tag, b) == v;
            }
            if (!good && bad++ < 5)
                printf("  read %zu: byte %" PRIu64 " = 0x%02x matches no write there\n", r, b,
                       v);
        }
    }
    return bad;
}

static int shell(const char *fmt, const char *a, const char *b)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), fmt, a, b);
    return system(cmd);
}

static void run_config(const struct config *cfg, const char *dir)
{
    char base[512], top[512], err[QCOW2_ERROR_MAX];
    snprintf(base, sizeof(base), "%s/stress-base.raw", dir);
    snprintf(top, sizeof(top), "%s/stress-%s.qcow2", dir, cfg->name);

    /* Backing file with a known pattern, then an empty overlay. */
    FILE *f = fopen(base, "wb");
    for (uint64_t b = 0; b < 2 * REGION; b++)
        fputc(base_byte(b), f);
    fclose(f);
    char opts[1024];
    snprintf(opts, sizeof(opts), "%s,backing_file=%s,backing_fmt=raw", cfg->create_opts, base);
    if (shell("qemu-img create -q -f qcow2 -o %s %s 2M", opts, top) != 0) {
        check(0, "qemu-img create");
        return;
    }

    struct shared sh = {.cfg = cfg};
    struct qcow2_open_opts o;
    o = QCOW2_OPEN_OPTS_INIT;
    struct testfile *tf = NULL;
    int ret;
    if (cfg->faults) {
        tf = testfile_open(top, false, err, sizeof(err));
        ret = tf ? image_open_with_file(top, &o, testfile_attach(tf), &sh.img, err, sizeof(err))
                 : -EIO;
        if (tf)
            testfile_set_logging(tf, false);
    } else {
        ret = qcow2_open(top, &o, &sh.img, err, sizeof(err));
    }
    if (ret < 0) {
        printf("open: %s\n", err);
        check(0, "open");
        return;
    }
    if (cfg->guard_slots)
        sh.img->guard_slots_enabled = (1ull << cfg->guard_slots) - 1;
    sh.ops = calloc((size_t)cfg->threads * cfg->ops_per_thread, sizeof(struct op));
    pthread_t tids[64];
    struct worker ws[64];
    for (int t = 0; t < cfg->threads; t++) {
        ws[t] = (struct worker){.sh = &sh, .id = t, .rng = 0x1234567ull * (t + 1) + 99};
        pthread_create(&tids[t], NULL, worker_main, &ws[t]);
    }
    if (tf) { /* in the middle of the run, writes and flushes fail for a while */
        usleep(20000);
        testfile_fail(tf, TF_PWRITE | TF_FLUSH | TF_ZERO, 1, EIO, TF_FAIL_STICKY, false);
        usleep(30000);
        testfile_heal(tf);
    }
    for (int t = 0; t < cfg->threads; t++)
        pthread_join(tids[t], NULL);
    if (tf) {
        printf("# %s: %llu injected failures\n", cfg->name,
               (unsigned long long)testfile_nb_failures(tf));
        check(qcow2_flush(sh.img) == 0, "flush works again after the faults");
    }
    char name[256];
    snprintf(name, sizeof(name), "%s: no operation failed", cfg->name);
    check(atomic_load(&sh.errors) == 0, name);

    uint8_t *final = malloc(REGION);
    ret = qcow2_pread(sh.img, final, REGION, 0);
    snprintf(name, sizeof(name), "%s: final read", cfg->name);
    check(ret == 0, name);
    snprintf(name, sizeof(name), "%s: final content is a serialization of the operations",
             cfg->name);
    check(ret == 0 && verify_serialization(&sh, final) == 0, name);
    snprintf(name, sizeof(name), "%s: every read returned data of its own place", cfg->name);
    check(verify_reads(&sh) == 0, name);
    snprintf(name, sizeof(name), "%s: close", cfg->name);
    check(qcow2_close(sh.img) == 0, name);
    testfile_free(tf);

    snprintf(name, sizeof(name), "%s: qemu-img check clean%s", cfg->name,
             cfg->faults ? " (leaks allowed)" : "");
    int st = shell("qemu-img check -q %s%s >/dev/null 2>&1", top, "");
    st = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    check(st == 0 || (cfg->faults && st == 3), name);
    /* qemu reads the same bytes as we did */
    char out[512];
    snprintf(out, sizeof(out), "%s/stress-%s.raw", dir, cfg->name);
    check(shell("qemu-img convert -O raw %s %s", top, out) == 0, "qemu-img convert");
    f = fopen(out, "rb");
    uint8_t *theirs = malloc(REGION);
    size_t got = f ? fread(theirs, 1, REGION, f) : 0;
    if (f)
        fclose(f);
    snprintf(name, sizeof(name), "%s: qemu reads what we read", cfg->name);
    check(got == REGION && memcmp(theirs, final, REGION) == 0, name);
    free(theirs);
    free(final);
    for (size_t i = 0; i < (size_t)cfg->threads * cfg->ops_per_thread; i++)
        free(sh.ops[i].data);
    free(sh.ops);
    unlink(out);
    unlink(top);
    unlink(base);
}

/* ---- a slow read and a write that replaces the clusters it reads ---------------------- */

#define SLOW_CLUSTER 65536u

struct slow_read {
    struct qcow2_image *img;
    uint64_t offset;
    size_t len;
    uint8_t *buf;
    const void *wbuf; /* writes */
    int ret;
    atomic_int done;
};

static void *slow_reader(void *arg)
{
    struct slow_read *r = arg;
    r->ret = qcow2_pread(r->img, r->buf, r->len, r->offset);
    atomic_store(&r->done, 1);
    return NULL;
}

static void *slow_writer(void *arg)
{
    struct slow_read *r = arg;
    r->ret = qcow2_pwrite(r->img, r->wbuf, r->len, r->offset, 0);
    atomic_store(&r->done, 1);
    return NULL;
}

/* A write to a compressed cluster COWs it into a new one and stalls in its COW read; a read
 * of the cluster starts then (the write has passed its check for reads in progress, and the
 * entry is not linked yet: the read maps the compressed data) and stalls in its pread. The
 * write goes on and links the copy; other writes allocate clusters after a flush. Had the
 * write freed the compressed cluster while the read still had to read it, those allocations
 * would reuse it and the read would decompress foreign data. The read must return the old
 * data, and the image stay consistent. */
static void test_slow_read_of_replaced_cluster(const char *dir)
{
    char path[512], err[QCOW2_ERROR_MAX];
    snprintf(path, sizeof(path), "%s/stress-slowread.qcow2", dir);
    if (shell("qemu-img create -q -f qcow2 -o cluster_size=65536 %s %s", path, "4M") != 0) {
        check(0, "slow read: qemu-img create");
        return;
    }
    uint8_t *a = malloc(SLOW_CLUSTER), *got = malloc(SLOW_CLUSTER), *c = malloc(SLOW_CLUSTER);
    uint8_t b[4096];
    for (uint32_t i = 0; i < SLOW_CLUSTER; i++) {
        a[i] = (uint8_t)(i % 251); /* compresses well */
        c[i] = 0xcc;
    }
    memset(b, 0xbb, sizeof(b));
    struct testfile *tf = testfile_open(path, false, err, sizeof(err));
    struct qcow2_image *img = NULL;
    struct qcow2_open_opts o;
    o = QCOW2_OPEN_OPTS_INIT;
    if (!tf || image_open_with_file(path, &o, testfile_attach(tf), &img, err, sizeof(err)) < 0) {
        printf("slow read: open: %s\n", err);
        check(0, "slow read: open");
        testfile_free(tf);
        return;
    }
    testfile_set_logging(tf, false);
    check(qcow2_pwrite_compressed(img, a, SLOW_CLUSTER, 0) == 0 &&
              qcow2_pwrite_compressed(img, NULL, 0, 0) == 0 && qcow2_flush(img) == 0,
          "slow read: a compressed cluster written");

    /* Where the compressed data lies: the read stalls there. */
    uint64_t n = SLOW_CLUSTER, entry = 0, coffset = 0, csize = 0;
    enum subcluster_type type;
    pthread_mutex_lock(&img->lock);
    int ret = cluster_get_host_offset(img, 0, &n, &entry, &type);
    pthread_mutex_unlock(&img->lock);
    check(ret == 0 && type == SC_COMPRESSED, "slow read: cluster 0 is compressed");
    cluster_compressed_range(img, entry, &coffset, &csize);
    testfile_pause_read(tf, coffset);

    struct slow_read rd = {.img = img, .offset = 0, .len = SLOW_CLUSTER, .buf = got};
    struct slow_read wr = {.img = img, .offset = 0, .len = sizeof(b), .wbuf = b};
    pthread_t rt, wt;
    pthread_create(&wt, NULL, slow_writer, &wr);
    testfile_wait_paused(tf); /* the write, in its COW read */
    testfile_pause_read(tf, coffset);
    pthread_create(&rt, NULL, slow_reader, &rd);
    testfile_wait_paused(tf); /* the read */
    testfile_resume(tf);      /* the write goes on */
    usleep(100000); /* the write links the copy (and waits for the read to free the old) */
    /* A flush first: freed clusters become reusable only once the L2 change is on disk. */
    int others_ok = qcow2_flush(img) == 0;
    for (uint64_t off = SLOW_CLUSTER; off < 8 * SLOW_CLUSTER; off += SLOW_CLUSTER)
        others_ok &= qcow2_pwrite(img, c, SLOW_CLUSTER, off, 0) == 0;
    others_ok &= qcow2_flush(img) == 0;
    check(others_ok, "slow read: other clusters written meanwhile");
    testfile_resume(tf);
    pthread_join(rt, NULL);
    pthread_join(wt, NULL);
    check(rd.ret == 0 && memcmp(got, a, SLOW_CLUSTER) == 0,
          "slow read: the read returned the data it mapped, not a reused cluster");
    check(wr.ret == 0, "slow read: the write finished once the read had");
    memcpy(a, b, sizeof(b));
    ret = qcow2_pread(img, got, SLOW_CLUSTER, 0);
    check(ret == 0 && memcmp(got, a, SLOW_CLUSTER) == 0, "slow read: cluster 0 holds the write");
    check(qcow2_close(img) == 0, "slow read: close");
    testfile_free(tf);
    int st = shell("qemu-img check -q %s%s >/dev/null 2>&1", path, "");
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "slow read: qemu-img check clean");
    unlink(path);
    free(a);
    free(got);
    free(c);
}

int main(void)
{
    if (system("qemu-img --version >/dev/null 2>&1") != 0) {
        printf("SKIP: qemu-img not installed\n");
        return 77;
    }
    const char *dir = getenv("QCOW2_TEST_TMPDIR");
    if (!dir)
        dir = "/tmp";
    int scale = getenv("STRESS_OPS") ? atoi(getenv("STRESS_OPS")) : 150;
    const struct config configs[] = {
        {"extl2-16k", "cluster_size=16384,extended_l2=on", 16384, 16, scale, 0, 0},
        {"extl2-64k", "cluster_size=65536,extended_l2=on", 65536, 8, scale, 0, 0},
        {"std-4k", "cluster_size=4096", 4096, 32, scale / 2, 0, 0},
        {"std-64k-lazy", "cluster_size=65536,lazy_refcounts=on", 65536, 16, scale, 0, 0},
        {"extl2-16k-faults", "cluster_size=16384,extended_l2=on", 16384, 16, scale, 1, 0},
        {"std-4k-faults", "cluster_size=4096", 4096, 16, scale, 1, 0},
        {"std-4k-2slots", "cluster_size=4096", 4096, 16, scale, 0, 2},
    };
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
        run_config(&configs[i], dir);
    test_slow_read_of_replaced_cluster(dir);
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
