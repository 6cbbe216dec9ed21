/* convert.c - copying one image's guest view into another: the engine of qemu-img convert.
 * Owns the copy loop (qemu-img's convert_iteration_sectors and convert_co_write in qemu-img.c,
 * so that the target is allocated the same way): the source is asked for its block status in
 * long runs; ranges it reports as zeros are never read, and are written only when the target
 * does not read zeros already; inside data, runs of zero sectors of at least min_sparse bytes
 * are not written either. Parallel copy on threads with an ordered write window, the
 * compression window, -B (write only what differs from the target's backing file), salvage.
 * Calls only the public entry points of io.c and image.c, on two open images: the caller
 * creates and opens the target (raw or qcow2), so this file does no file I/O of its own. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONVERT_SECTOR 512u
/* Largest piece of data read and written at once (qemu-img's IO_BUF_SIZE). */
#define CONVERT_CHUNK (2u << 20)
/* Largest range the source is asked about at once: block status answers a sparse disk's
 * unallocated terabytes in one call, so this is only a bound on arithmetic. */
#define CONVERT_MAX_QUERY (1ull << 62)
/* Defaults and bounds (as qemu-img). */
#define CONVERT_DEFAULT_SPARSE 4096u
#define CONVERT_DEFAULT_WORKERS 8
#define CONVERT_BUFFER_BUDGET (8u << 20)

struct convert {
    struct qcow2_image *src, *dst;
    const struct qcow2_convert_opts *o;
    uint64_t size;

    bool zero_init;        /* the target reads zeros wherever we do not write */
    bool compress;
    uint32_t cluster_size; /* of a qcow2 target */
    uint64_t min_sparse;   /* 0 = copy everything as data */
    uint64_t alignment;    /* end data writes on multiples of this (power of two) */
    uint64_t src_alignment; /* the source's cluster size (or a sector) */
    uint64_t chunk;        /* largest piece of data copied at once */
    const char *src_name;  /* for messages */

    /* Progress, as qemu-img counts it: bytes of the ranges that are copied as data. */
    uint64_t progress_total, progress_done;

    /* Parallel copy. Tasks are cut in order by next_task() under gen_lock; with `ordered`
     * (no -W, or compression) their writes happen in that order too (a window of slots,
     * see struct slot, under win_lock), so the target's layout does not depend on thread
     * timing. Two locks: cutting a task asks the source for block status (reads of its L2
     * tables), which must not hold up the writer or the workers handing in their tasks. */
    int workers;
    bool ordered;
    pthread_mutex_t gen_lock;  /* next_seq, gen_*, progress_done */
    pthread_mutex_t win_lock;  /* slots' ready flags, writing, turn */
    struct slot *slots;
    int nslots;
    bool writing;              /* a worker is draining ready slots */
    uint64_t next_seq, turn;   /* next task to cut; next task to write */
    uint64_t gen_off, gen_next_status;
    bool gen_data;
    bool failed;               /* set under win_lock, read anywhere (atomic) */

    /* The first failure's message (any thread), for the caller's buffer. */
    pthread_mutex_t err_lock;
    char err[QCOW2_ERROR_MAX];
    int err_ret;
};

/* Data runs of a sparse source are short and far apart (one 64 KiB cluster per GiB): a task
 * gathers several, up to a chunk, so that the hand-over between threads (which costs more
 * than copying 64 KiB) happens once per chunk, not once per run. Only when nothing is
 * written between them (zeros_are_written()); every other task is one run. */
#define TASK_MAX_RUNS 32

struct run {
    uint64_t off, n;
};

struct task {
    uint64_t seq, off, n; /* off: where the first run starts; n: the bytes of all runs */
    bool data;
    unsigned nb_runs;     /* >= 1; the runs lie one after another in the slot's buffer */
    struct run runs[TASK_MAX_RUNS];
};

/* Record a failure (the first one wins) and return `ret`. */
__attribute__((format(printf, 3, 4))) static int fail(struct convert *c, int ret,
                                                      const char *fmt, ...)
{
    pthread_mutex_lock(&c->err_lock);
    if (!c->err_ret) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof(c->err), fmt, ap);
        va_end(ap);
        c->err_ret = ret < 0 ? ret : -EIO;
    }
    pthread_mutex_unlock(&c->err_lock);
    return ret < 0 ? ret : -EIO;
}

/* ---- the target -------------------------------------------------------------------------- */

/* Write data (never zero-detected again). */
static int target_write(struct convert *c, const uint8_t *buf, size_t n, uint64_t off)
{
    int ret = qcow2_pwrite(c->dst, buf, n, off, 0);
    if (ret < 0)
        return fail(c, ret, "error while writing at byte %llu: %s", (unsigned long long)off,
                    qcow2_error(c->dst));
    return 0;
}

/* Make [off, off+n) of the target read as zeros (a hole where the target can). */
static int target_zero(struct convert *c, uint64_t off, uint64_t n, unsigned flags)
{
    if (c->zero_init)
        return 0;
    int ret = qcow2_pwrite_zeroes(c->dst, off, n, flags);
    if (ret < 0)
        return fail(c, ret, "error while zeroing at offset %llu: %s", (unsigned long long)off,
                    qcow2_error(c->dst));
    return 0;
}

/* ---- zero detection, as qemu-img ------------------------------------------------------------ */

/* qemu-img's is_allocated_sectors(): whether the first sector of `buf` (n bytes, at guest
 * offset `off`) holds data, and in *pnum how many bytes from the start share that state. The
 * end of a run is moved to a multiple of `alignment` where that is possible: data runs grow
 * to it, zero runs shrink to it (the tail is rewritten with the next data anyway). */
static bool is_allocated_sectors(const uint8_t *buf, size_t n, size_t *pnum, uint64_t off,
                                 uint64_t alignment)
{
    if (n == 0) {
        *pnum = 0;
        return false;
    }
    bool is_zero = buffer_is_zero(buf, MIN(n, CONVERT_SECTOR));
    size_t i;
    for (i = CONVERT_SECTOR; i < n; i += CONVERT_SECTOR)
        if (is_zero != buffer_is_zero(buf + i, MIN(n - i, CONVERT_SECTOR)))
            break;
    if (i >= n) {
        *pnum = n;
        return !is_zero;
    }
    size_t tail = (size_t)((off + i) & (alignment - 1));
    if (tail) {
        if (is_zero && i <= tail)
            is_zero = false; /* the data right after rewrites this tail anyway */
        if (!is_zero)
            i = MIN(i + alignment - tail, n);
        else
            i -= tail;
    }
    *pnum = i;
    return !is_zero;
}

/* qemu-img's is_allocated_sectors_min(): as above, but a run that starts with data swallows
 * zero runs shorter than `min` bytes, so small holes do not split writes. */
static bool is_allocated_sectors_min(const uint8_t *buf, size_t n, size_t *pnum, uint64_t min,
                                     uint64_t off, uint64_t alignment)
{
    min = MIN(min, n);
    if (!is_allocated_sectors(buf, n, pnum, off, alignment))
        return false;
    size_t num_used = *pnum, num_checked = *pnum;
    buf += *pnum;
    off += *pnum;
    n -= *pnum;
    while (n > 0) {
        bool data = is_allocated_sectors(buf, n, pnum, off, alignment);
        buf += *pnum;
        off += *pnum;
        n -= *pnum;
        num_checked += *pnum;
        if (data)
            num_used = num_checked;
        else if (*pnum >= min)
            break;
    }
    *pnum = num_used;
    return true;
}

/* ---- the copy ---------------------------------------------------------------------------- */

static int source_status(struct convert *c, uint64_t off, uint64_t count, struct qcow2_extent *e)
{
    *e = QCOW2_EXTENT_INIT;
    int ret = qcow2_block_status(c->src, off, count, e);
    if (ret < 0)
        return fail(c, ret, "could not read the status of offset %llu: %s",
                    (unsigned long long)off, qcow2_error(c->src));
    if (e->start != off || e->length == 0 || e->length > count)
        return fail(c, -EIO, "%s: block status at offset %llu returned an invalid range",
                    c->src_name, (unsigned long long)off);
    return 0;
}

/* One write of a data task: `len` bytes at guest `off`, data or zeros. */
struct piece {
    uint64_t off;
    uint32_t len;
    bool data;
};

/* Cut `n` bytes of source data at `off` into pieces (qemu-img's convert_co_write for
 * BLK_DATA): what holds data is written, long enough zero runs are treated as zeros. Run by
 * the worker right after its read, while the bytes are still in the CPU's cache: scanned
 * later by the writer, after other tasks' reads, each sector's first bytes were a miss.
 * `pieces` has room for every sector of the buffer (plus one per run). */
static void plan_pieces(const struct convert *c, const uint8_t *buf, uint64_t off, size_t n,
                        struct piece *pieces, unsigned *nb)
{
    while (n > 0) {
        size_t len = n;
        bool data = !c->min_sparse ||
                    is_allocated_sectors_min(buf, n, &len, c->min_sparse, off, c->alignment);
        pieces[(*nb)++] = (struct piece){off, (uint32_t)len, data};
        buf += len;
        off += len;
        n -= len;
    }
}

/* The status run starting at `off`, cut at a source cluster boundary so that the next run
 * starts on one: sets gen_data and gen_next_status. */
static int next_status(struct convert *c, uint64_t off)
{
    struct qcow2_extent e;
    int ret = source_status(c, off, MIN(c->size - off, CONVERT_MAX_QUERY), &e);
    if (ret < 0)
        return ret;
    uint64_t n = MIN(ROUND_UP(e.length, CONVERT_SECTOR), c->size - off);
    uint64_t tail = (off + n) % c->src_alignment;
    if (n > tail)
        n -= tail;
    c->gen_data = !(e.flags & QCOW2_BS_ZERO);
    c->gen_next_status = off + n;
    return 0;
}

/* Does a zero run of the source lead to any write? Not when the target reads zeros already
 * (write_task() would call target_zero(), which does nothing then), unless -B compares it
 * with the backing file or compression turns short runs into data. */
static bool zeros_are_written(const struct convert *c)
{
    return !c->zero_init || c->o->target_backed || c->compress;
}

/* Move c->gen_off to the next status run that leads to a write, skipping zero runs that need
 * none (no task, so that a sparse disk of terabytes costs no hand-over per hole): sets
 * gen_data and gen_next_status. Returns 1, 0 at the end, or -errno. */
static int next_run(struct convert *c)
{
    for (;;) {
        uint64_t off = c->gen_off;
        if (off >= c->size)
            return 0;
        if (!c->min_sparse) {
            /* -S 0: the source is not scanned; everything is data. */
            c->gen_next_status = c->size;
            c->gen_data = true;
        } else if (c->gen_next_status <= off) {
            int ret = next_status(c, off);
            if (ret < 0)
                return ret;
        }
        if (c->gen_data || zeros_are_written(c))
            return 1;
        c->gen_off = c->gen_next_status;
    }
}

/* Add the following data runs to data task `t` while they fit in its chunk (see struct
 * task). */
static int gather_runs(struct convert *c, struct task *t)
{
    while (!zeros_are_written(c) && t->n < c->chunk && t->nb_runs < TASK_MAX_RUNS) {
        int ret = next_run(c);
        if (ret <= 0)
            return ret;
        uint64_t n = MIN(c->gen_next_status - c->gen_off, c->chunk - t->n);
        t->runs[t->nb_runs++] = (struct run){c->gen_off, n};
        t->n += n;
        c->gen_off += n;
    }
    return 0;
}

/* qemu-img's convert_iteration_sectors() and its caller, one step: the next range of one
 * status; data in pieces of at most `chunk` bytes (one cluster when compressing). Returns 1
 * with a task, 0 at the end, or -errno. Called under gen_lock (or before the workers run). */
static int next_task(struct convert *c, struct task *t)
{
    int ret = next_run(c);
    if (ret <= 0)
        return ret;
    uint64_t off = c->gen_off;
    bool data = c->gen_data;
    uint64_t n = c->gen_next_status - off;
    /* Data is read into a chunk buffer; with -B zero ranges are compared through it too. */
    if ((data || c->o->target_backed) && n > c->chunk)
        n = c->chunk;
    if (c->compress) {
        /* Compressed clusters are written whole: a shorter range counts as data. */
        if (n < c->cluster_size) {
            n = MIN(c->size - off, c->cluster_size);
            data = true;
        } else {
            n = ROUND_DOWN(n, c->cluster_size);
        }
    }
    t->seq = c->next_seq++;
    t->off = off;
    t->n = n;
    t->data = data;
    t->nb_runs = 1;
    t->runs[0] = (struct run){off, n};
    c->gen_off = off + n;
    if (data && (ret = gather_runs(c, t)) < 0)
        return ret;
    return 1;
}

static void report_progress(struct convert *c, const struct task *t)
{
    if (!c->o->progress || !t->data)
        return;
    c->progress_done += t->n;
    c->o->progress(c->o->opaque, c->progress_done, c->progress_total);
}

/* The bytes the copy will read as data (qemu-img's allocated_sectors), for progress: one
 * pass over the block status, which costs as little as the map of the image. */
static int count_data(struct convert *c)
{
    struct task t;
    int ret;
    c->progress_total = 0;
    while ((ret = next_task(c, &t)) > 0)
        if (t.data)
            c->progress_total += t.n;
    c->gen_off = c->gen_next_status = 0;
    c->next_seq = 0;
    return ret;
}

/* A task's buffers and results. Ordered copies keep a window of slots: task `seq` uses slot
 * seq % nslots, is prepared (read, compared, compressed) by any worker in parallel with the
 * others, and is written when every earlier task has been: whichever worker finds the next
 * task in order ready takes the writer's role and drains every consecutive ready slot. A
 * worker waits only when its task would run more than nslots ahead of the writer. Unordered
 * copies (-W) give each worker one slot and write at once. */
struct slot {
    struct task t;
    uint8_t *buf;  /* chunk bytes of source data (a whole cluster when compressing) */
    uint8_t *tbuf; /* -B: chunk bytes of what the target reads (its backing file) */
    uint8_t *cbuf; /* one compressed cluster */
    int64_t clen;  /* compressed length, or -ENOSPC: did not shrink */
    struct piece *pieces; /* a plain data task's writes, in order (plan_pieces) */
    unsigned nb_pieces;
    bool skip;     /* nothing to write */
    bool ready;    /* prepared, waiting for its turn (ordered copies) */
    /* Signalled when this slot's task is written (or on failure): wakes only the worker
     * whose next task uses the slot. One condition for all woke every waiting worker on
     * each write, which on a sparse disk cost more than the copy. */
    pthread_cond_t written;
};

struct worker {
    struct convert *c;
    struct slot *own; /* unordered copies */
    pthread_t tid;
};

/* --salvage: read sector by sector where a read failed; sectors that cannot be read count
 * as zeros, each with a warning (qemu-img's convert_co_read). */
static int read_salvaging(struct convert *c, uint8_t *buf, uint64_t n, uint64_t off)
{
    for (uint64_t i = 0; i < n; i += CONVERT_SECTOR) {
        size_t len = (size_t)MIN(n - i, CONVERT_SECTOR);
        int ret = qcow2_pread(c->src, buf + i, len, off + i);
        if (ret < 0) {
            if (c->o->warning) {
                char msg[QCOW2_ERROR_MAX];
                snprintf(msg, sizeof(msg), "error while reading offset %llu: %s",
                         (unsigned long long)(off + i), strerror(-ret));
                c->o->warning(c->o->opaque, msg);
            }
            memset(buf + i, 0, len);
        }
    }
    return 0;
}

static int read_source(struct convert *c, uint8_t *buf, uint64_t n, uint64_t off)
{
    int ret = qcow2_pread(c->src, buf, (size_t)n, off);
    if (ret < 0 && c->o->salvage)
        return read_salvaging(c, buf, n, off);
    if (ret < 0)
        return fail(c, ret, "error while reading at byte %llu: %s", (unsigned long long)off,
                    qcow2_error(c->src));
    return 0;
}

/* -B: write only the sectors where the source differs from what the new target already
 * reads through its backing file; differing runs of zeros become zero writes. */
static int write_differences(struct convert *c, const uint8_t *src, const uint8_t *cur,
                             uint64_t off, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t len = MIN(n - i, CONVERT_SECTOR);
        if (memcmp(src + i, cur + i, len) == 0) {
            i += len;
            continue;
        }
        /* a run of differing sectors, all zero or all data in the source */
        bool zero = buffer_is_zero(src + i, len);
        size_t j = i + len;
        while (j < n) {
            size_t l = MIN(n - j, CONVERT_SECTOR);
            if (memcmp(src + j, cur + j, l) == 0 || buffer_is_zero(src + j, l) != zero)
                break;
            j += l;
        }
        int ret = zero ? target_zero(c, off + i, j - i, 0)
                       : target_write(c, src + i, j - i, off + i);
        if (ret < 0)
            return ret;
        i = j;
    }
    return 0;
}

/* Read the task's data (and what the target has, with -B), and compress it: no writes. */
static int prepare_task(struct convert *c, struct slot *s)
{
    const struct task *t = &s->t;
    s->clen = 0;
    s->skip = false;
    if (c->o->target_backed) {
        /* Zero ranges too: the backing file may hold data there. */
        int ret = t->data ? read_source(c, s->buf, t->n, t->off) : 0;
        if (!t->data)
            memset(s->buf, 0, t->n);
        if (ret < 0)
            return ret;
        ret = qcow2_pread(c->dst, s->tbuf, t->n, t->off);
        if (ret < 0)
            return fail(c, ret, "error while reading at byte %llu: %s",
                        (unsigned long long)t->off, qcow2_error(c->dst));
        if (memcmp(s->buf, s->tbuf, t->n) == 0)
            s->skip = true; /* the backing file has it already */
    } else if (t->data) {
        uint8_t *p = s->buf;
        s->nb_pieces = 0;
        for (unsigned i = 0; i < t->nb_runs; p += t->runs[i++].n) {
            int ret = read_source(c, p, t->runs[i].n, t->runs[i].off);
            if (ret < 0)
                return ret;
            if (!c->compress)
                plan_pieces(c, p, t->runs[i].off, (size_t)t->runs[i].n, s->pieces,
                            &s->nb_pieces);
        }
    }
    if (!t->data || s->skip || !c->compress)
        return 0;
    if (c->min_sparse && !c->o->target_backed && buffer_is_zero(s->buf, t->n)) {
        s->skip = true; /* an all-zero cluster stays unallocated */
        return 0;
    }
    if (t->n < c->cluster_size) /* the image's tail: pad the cluster */
        memset(s->buf + t->n, 0, c->cluster_size - t->n);
    s->clen = qcow2_compress_cluster(c->dst, s->buf, s->cbuf);
    if (s->clen < 0 && s->clen != -ENOSPC)
        return fail(c, (int)s->clen, "compression failed: %s", qcow2_error(c->dst));
    return 0;
}

/* Write a prepared task to the target. */
static int write_task(struct convert *c, const struct slot *s)
{
    const struct task *t = &s->t;
    if (s->skip)
        return 0;
    if (c->o->target_backed && !(c->compress && s->clen > 0))
        return c->compress ? target_write(c, s->buf, t->n, t->off)
                           : write_differences(c, s->buf, s->tbuf, t->off, (size_t)t->n);
    if (!t->data) /* (-S 0 makes every task data) */
        return target_zero(c, t->off, t->n, QCOW2_ZERO_MAY_UNMAP);
    if (c->compress && s->clen > 0) {
        int ret = qcow2_pwrite_compressed_data(c->dst, s->cbuf, (size_t)s->clen, t->off);
        if (ret < 0)
            return fail(c, ret, "error while compressing at offset %llu: %s",
                        (unsigned long long)t->off, qcow2_error(c->dst));
        return 0;
    }
    if (c->compress) /* did not shrink: stored as is */
        return target_write(c, s->buf, t->n, t->off);
    const uint8_t *p = s->buf;
    for (unsigned i = 0; i < s->nb_pieces; p += s->pieces[i++].len) {
        const struct piece *pc = &s->pieces[i];
        int ret = pc->data ? target_write(c, p, pc->len, pc->off)
                           : target_zero(c, pc->off, pc->len, QCOW2_ZERO_MAY_UNMAP);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Stop every worker (called under win_lock): those waiting for window space would wait
 * forever behind a task that failed. */
static void fail_locked(struct convert *c)
{
    __atomic_store_n(&c->failed, true, __ATOMIC_RELAXED);
    for (int i = 0; i < c->nslots; i++)
        pthread_cond_broadcast(&c->slots[i].written);
}

static void stop_workers(struct convert *c)
{
    pthread_mutex_lock(&c->win_lock);
    fail_locked(c);
    pthread_mutex_unlock(&c->win_lock);
}

static bool failed(struct convert *c)
{
    return __atomic_load_n(&c->failed, __ATOMIC_RELAXED);
}

/* Ordered copies, under win_lock: unless another worker is writing already, write every
 * consecutive ready slot from `turn` on. The lock is dropped around each write. */
static void drain_locked(struct convert *c)
{
    if (c->writing)
        return; /* the writer will find our slot when it looks again */
    c->writing = true;
    while (!failed(c)) {
        struct slot *s = &c->slots[c->turn % c->nslots];
        if (!s->ready || s->t.seq != c->turn)
            break;
        pthread_mutex_unlock(&c->win_lock);
        int ret = write_task(c, s);
        pthread_mutex_lock(&c->win_lock);
        s->ready = false;
        c->turn++;
        if (ret < 0)
            fail_locked(c);
        pthread_cond_broadcast(&s->written);
    }
    c->writing = false;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct convert *c = w->c;

    for (;;) {
        struct task t;
        struct slot *s = w->own;
        pthread_mutex_lock(&c->gen_lock);
        int r = failed(c) ? 0 : next_task(c, &t);
        if (r > 0)
            report_progress(c, &t);
        pthread_mutex_unlock(&c->gen_lock);
        if (r < 0)
            stop_workers(c); /* next_task() recorded the error */
        if (r <= 0)
            break;
        if (c->ordered) {
            s = &c->slots[t.seq % (uint64_t)c->nslots];
            pthread_mutex_lock(&c->win_lock);
            while (!failed(c) && t.seq >= c->turn + (uint64_t)c->nslots)
                pthread_cond_wait(&s->written, &c->win_lock);
            pthread_mutex_unlock(&c->win_lock);
            if (failed(c))
                break;
        }

        s->t = t;
        int ret = prepare_task(c, s);
        if (ret == 0 && !c->ordered)
            ret = write_task(c, s);
        if (ret < 0) {
            stop_workers(c);
            break;
        }
        if (c->ordered) {
            pthread_mutex_lock(&c->win_lock);
            s->ready = true;
            drain_locked(c);
            pthread_mutex_unlock(&c->win_lock);
        }
    }
    return NULL;
}

/* Window slots for an ordered copy: twice the workers when compressing (so that workers
 * rarely wait for the writer), within the buffer budget; one per worker otherwise. */
static int slot_count(const struct convert *c, size_t slot_bytes)
{
    int n = c->workers;
    if (c->ordered && c->compress) {
        n = 2 * c->workers;
        while (n > c->workers && (uint64_t)n * slot_bytes > CONVERT_BUFFER_BUDGET)
            n--;
    }
    return n;
}

static void free_slots(struct slot *slots, int n)
{
    for (int i = 0; slots && i < n; i++) {
        free(slots[i].buf);
        free(slots[i].tbuf);
        free(slots[i].cbuf);
        free(slots[i].pieces);
        pthread_cond_destroy(&slots[i].written);
    }
    free(slots);
}

/* Copy the whole image with c->workers threads. */
static int copy_image(struct convert *c)
{
    /* a chunk, and a whole cluster when compressing (padding of the image's tail) */
    size_t bufsize = MAX(c->chunk, c->cluster_size);
    size_t cbufsize = c->compress ? c->cluster_size : 0;
    bool backed = c->o->target_backed;
    int nslots = slot_count(c, bufsize * (backed ? 2 : 1) + cbufsize);
    struct worker *ws = calloc((size_t)c->workers, sizeof(*ws));
    struct slot *slots = calloc((size_t)nslots, sizeof(*slots));
    int started = 0;

    c->slots = slots;
    c->nslots = slots ? nslots : 0;
    for (int i = 0; i < c->nslots; i++)
        pthread_cond_init(&slots[i].written, NULL);
    if (!ws || !slots)
        c->failed = true;
    for (int i = 0; i < nslots && !c->failed; i++) {
        slots[i].buf = malloc(bufsize);
        slots[i].tbuf = backed ? malloc(bufsize) : NULL;
        slots[i].cbuf = cbufsize ? malloc(cbufsize) : NULL;
        slots[i].pieces = malloc(sizeof(struct piece) * (bufsize / CONVERT_SECTOR + TASK_MAX_RUNS));
        if (!slots[i].buf || (backed && !slots[i].tbuf) || (cbufsize && !slots[i].cbuf) ||
            !slots[i].pieces)
            c->failed = true;
    }
    if (c->failed)
        fail(c, -ENOMEM, "out of memory for the copy buffers");
    for (int i = 0; i < c->workers && !failed(c); i++) {
        ws[i].c = c;
        ws[i].own = &slots[i % nslots];
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            fail(c, -EAGAIN, "cannot start a worker thread");
            stop_workers(c);
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].tid, NULL);
    free_slots(slots, nslots);
    c->slots = NULL;
    c->nslots = 0;
    free(ws);
    if (failed(c))
        return c->err_ret ? c->err_ret : -EIO;
    if (c->compress && qcow2_pwrite_compressed(c->dst, NULL, 0, 0) < 0)
        return fail(c, -EIO, "finishing compressed writes: %s", qcow2_error(c->dst));
    return 0;
}

/* The engine's settings from the options and both images; -errno on a bad combination. */
static int setup(struct convert *c)
{
    const struct qcow2_convert_opts *o = c->o;
    struct qcow2_info si = QCOW2_INFO_INIT, di = QCOW2_INFO_INIT;
    if (qcow2_get_info(c->src, &si) < 0)
        return fail(c, -EIO, "%s", qcow2_error(c->src));
    if (qcow2_get_info(c->dst, &di) < 0)
        return fail(c, -EIO, "%s", qcow2_error(c->dst));
    c->size = si.virtual_size;
    c->src_name = si.filename;
    if (di.virtual_size < c->size)
        return fail(c, -EINVAL, "%s: target is smaller than the source (%llu < %llu bytes)",
                    di.filename, (unsigned long long)di.virtual_size,
                    (unsigned long long)c->size);
    if (o->workers < 0 || o->workers > QCOW2_CONVERT_MAX_WORKERS)
        return fail(c, -EINVAL, "invalid number of workers %d (1 to %d)", o->workers,
                    QCOW2_CONVERT_MAX_WORKERS);
    if (o->min_sparse % CONVERT_SECTOR || o->min_sparse > QCOW2_CONVERT_MAX_SPARSE)
        return fail(c, -EINVAL, "invalid min_sparse %llu: a multiple of 512 bytes, at most "
                    "16 MiB", (unsigned long long)o->min_sparse);
    c->compress = o->compress;
    if (c->compress && di.format != QCOW2_FORMAT_QCOW2)
        return fail(c, -ENOTSUP, "%s: compression needs a qcow2 target", di.filename);
    if (o->target_backed && o->target_is_zero)
        return fail(c, -EINVAL, "Cannot use --target-is-zero with a backing file");
    c->zero_init = o->target_is_zero;
    c->cluster_size = di.format == QCOW2_FORMAT_QCOW2 ? di.cluster_size : 0;
    c->min_sparse = o->fully_allocate ? 0 : o->min_sparse ? o->min_sparse
                                                          : CONVERT_DEFAULT_SPARSE;
    c->workers = o->workers ? o->workers : CONVERT_DEFAULT_WORKERS;
    c->src_alignment = CONVERT_SECTOR;
    if (si.format == QCOW2_FORMAT_QCOW2 && si.cluster_size > CONVERT_SECTOR)
        c->src_alignment = si.cluster_size;
    c->alignment = CONVERT_SECTOR;
    while (c->alignment * 2 <= c->min_sparse)
        c->alignment *= 2; /* the largest power of two <= -S, as qemu-img */
    /* Bound the data in flight: about 8 MiB over all workers (qemu-img's budget too). */
    c->chunk = CONVERT_CHUNK;
    while (c->chunk > 64 * 1024 && c->chunk * (uint64_t)c->workers > CONVERT_BUFFER_BUDGET)
        c->chunk /= 2;
    if (c->compress) {
        /* One cluster at a time: each is compressed on its own. */
        if (c->cluster_size < CONVERT_SECTOR || c->cluster_size > CONVERT_CHUNK)
            return fail(c, -EINVAL, "%s: unexpected cluster size %u", di.filename,
                        c->cluster_size);
        c->chunk = c->cluster_size;
        /* Compressing is CPU-bound: threads beyond the CPUs only contend for locks (measured
         * on 2 CPUs, zstd: -m 8 threads 0.18 s, 2 threads 0.11 s for 256 MiB). */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        if (ncpu > 0 && c->workers > ncpu)
            c->workers = (int)ncpu;
    }
    c->ordered = !o->out_of_order || c->compress;
    return 0;
}

static int convert(struct convert *c)
{
    int ret = setup(c);
    if (ret < 0)
        return ret;
    if (c->o->progress) {
        ret = count_data(c);
        if (ret == 0)
            c->o->progress(c->o->opaque, 0, c->progress_total);
    }
    if (ret == 0)
        ret = copy_image(c);
    if (ret == 0 && c->o->progress)
        c->o->progress(c->o->opaque, c->progress_total, c->progress_total);
    if (ret == 0 && (ret = qcow2_flush(c->dst)) < 0)
        fail(c, ret, "could not flush: %s", qcow2_error(c->dst));
    return ret;
}

int qcow2_convert(struct qcow2_image *src, struct qcow2_image *dst,
                  const struct qcow2_convert_opts *opts, char *err, size_t errlen)
{
    struct qcow2_convert_opts o;
    int ret = abi_copy_in(&abi_convert_opts, &o, opts, err, errlen);
    if (ret < 0)
        return ret;
    if (!src || !dst)
        return format_error(err, errlen, -EINVAL, "convert: no source or target image");
    struct convert c = {.src = src, .dst = dst, .o = &o};
    pthread_mutex_init(&c.gen_lock, NULL);
    pthread_mutex_init(&c.win_lock, NULL);
    pthread_mutex_init(&c.err_lock, NULL);
    ret = convert(&c);
    if (ret < 0)
        format_error(err, errlen, ret, "%s", c.err[0] ? c.err : strerror(-ret));
    pthread_mutex_destroy(&c.err_lock);
    pthread_mutex_destroy(&c.win_lock);
    pthread_mutex_destroy(&c.gen_lock);
    return ret;
}
