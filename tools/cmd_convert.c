/* cmd_convert.c - "qcow2 convert": copy the guest view of an image (its whole backing chain
 * merged) into a new raw or qcow2 image, as qemu-img convert.
 * The source is read through the library. The copy loop follows qemu-img's (convert_iteration_
 * sectors and convert_co_write in qemu-img.c) so that the target is allocated the same way:
 * ranges the source reports as zeros are not copied, and inside data, runs of zero sectors of
 * at least -S bytes are not written either. A raw target is a plain file written with POSIX
 * calls; a qcow2 target is created and written through the library. -m N threads copy in
 * parallel; without -W (and always when compressing) writes are issued in source order. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "tool.h"

#define CONVERT_SECTOR 512u
/* Largest piece of data read and written at once (qemu-img's IO_BUF_SIZE). */
#define CONVERT_CHUNK (2u << 20)
/* Largest range the source is asked about at once (qemu-img's BDRV_REQUEST_MAX_BYTES). */
#define CONVERT_MAX_QUERY ((uint64_t)(INT_MAX / CONVERT_SECTOR) * CONVERT_SECTOR)
/* -S: default and largest run of zeros inside data that is left unwritten (as qemu-img). */
#define CONVERT_DEFAULT_SPARSE 4096u
#define CONVERT_MAX_SPARSE (16u << 20)
/* Bytes of a new raw target QEMU allocates up front (its MAX_BLOCKSIZE). */
#define RAW_FIRST_BLOCK 4096u
/* -m: qemu-img's range of parallel requests (and its default), done here with threads. */
#define CONVERT_MAX_COROUTINES 16
#define CONVERT_DEFAULT_WORKERS 8
#define CONVERT_BUFFER_BUDGET (8u << 20)

static void convert_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " convert [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-B BACKING] [-c] [-p] [-q] [-n]\n"
            "                     [-S SIZE] [-W] [-m N] [-U] [-l SNAPSHOT]\n"
            "                     [--bitmaps [--skip-broken-bitmaps]] SRC DST\n"
            "\n"
            "Copy SRC (with its backing chain merged) to DST.\n"
            "\n"
            "  -f FMT      source format (qcow2 or raw); probed if omitted\n"
            "  -O FMT      target format: raw (default) or qcow2\n"
            "  -o OPTIONS  target creation options, as for 'create' ('-o help' lists them)\n"
            "  -B BACKING  create DST (qcow2) over BACKING and write only what differs from it\n"
            "  -c          compress the target's clusters (qcow2 only)\n"
            "  -p          show progress\n"
            "  -q          quiet\n"
            "  -n          do not create DST: write into an existing image of at least SRC's size\n"
            "  -S SIZE     leave runs of at least SIZE zero bytes unwritten (default 4k);\n"
            "              -S 0 copies everything: a fully allocated target\n"
            "  -W          write out of order (faster; the target's layout may vary)\n"
            "  -m N        N requests in parallel (threads), 1 to 16, default 8; with -c at most\n"
            "              one thread per CPU compresses, and clusters are written in order\n"
            "  -U          accepted for compatibility (the source is opened read-only)\n"
            "  -l SNAPSHOT copy internal snapshot SNAPSHOT of SRC instead of its current disk:\n"
            "              snapshot.id=ID[,snapshot.name=NAME], or an ID or name\n"
            "  --bitmaps   also copy SRC's persistent dirty bitmaps (qcow2 to qcow2)\n"
            "  --skip-broken-bitmaps  with --bitmaps: skip inconsistent bitmaps (warning)\n"
            TOOL_TRUST_HELP
            "              (both apply to SRC)\n");
}

struct convert {
    struct qcow2_image *src;
    const char *src_path;
    uint64_t size;

    const char *dst_path;
    enum qcow2_format out_fmt;
    int fd;                  /* raw target, or -1 */
    struct qcow2_image *dst; /* qcow2 target, or NULL */
    int zero_init;           /* the target reads zeros wherever we do not write */
    int compress;
    uint32_t cluster_size;   /* of a qcow2 target */
    uint64_t min_sparse;     /* -S; 0 = copy everything as data */
    uint64_t alignment;      /* end data writes on multiples of this (power of two) */
    uint64_t src_alignment;  /* the source's cluster size (or a sector) */
    uint64_t chunk;          /* largest piece of data copied at once */

    uint8_t *buf;            /* CONVERT_CHUNK bytes */
    const uint8_t *zeros;    /* CONVERT_CHUNK zero bytes */

    int progress;
    double last_pct;

    /* Parallel copy (-m N workers). Tasks are cut in order by next_task() under gen_lock;
     * with `ordered` (no -W, or compression) their writes happen in that order too (a window
     * of slots, see struct slot), so the target's layout does not depend on thread timing. */
    const char *out_backing; /* -B: the target's backing file; only differences are written */
    int workers;
    int ordered;
    pthread_mutex_t gen_lock;
    pthread_cond_t space_cond; /* signalled when `turn` moves or on failure */
    struct slot *slots;
    int nslots;
    int writing;               /* a worker is draining ready slots */
    uint64_t next_seq, turn;   /* next task to cut; next task to write */
    uint64_t gen_off, gen_next_status;
    int gen_data;
    int failed;
};

struct task {
    uint64_t seq, off, n;
    int data;
};

static int buffer_is_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static void progress_print(struct convert *c, uint64_t done, int force)
{
    double pct;

    if (!c->progress) {
        return;
    }
    pct = c->size ? (double)done * 100.0 / (double)c->size : 100.0;
    if (force || pct - c->last_pct >= 1.0) {
        printf("    (%3.2f/100%%)\r", pct);
        fflush(stdout);
        c->last_pct = pct;
    }
}

/* ---- the target -------------------------------------------------------------------------- */

static int raw_pwrite_all(struct convert *c, const uint8_t *buf, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(c->fd, buf, n, (off_t)off);

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int err = w < 0 ? errno : EIO;

            tool_error("%s: error while writing at offset %" PRIu64 ": %s", c->dst_path, off,
                       strerror(err));
            return -err;
        }
        buf += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write data (never zero-detected again). */
static int target_write(struct convert *c, const uint8_t *buf, size_t n, uint64_t off)
{
    int ret;

    if (c->fd >= 0) {
        return raw_pwrite_all(c, buf, n, off);
    }
    ret = qcow2_pwrite(c->dst, buf, n, off, 0);
    if (ret < 0) {
        tool_image_error(c->dst, ret, "%s: error while writing at offset %" PRIu64, c->dst_path,
                         off);
    }
    return ret;
}

/* Make [off, off+n) of the target read as zeros. */
static int target_zero(struct convert *c, uint64_t off, uint64_t n)
{
    int ret;

    if (c->zero_init) {
        return 0;
    }
    if (c->dst) {
        ret = qcow2_pwrite_zeroes(c->dst, off, n, QCOW2_ZERO_MAY_UNMAP);
        if (ret < 0) {
            tool_image_error(c->dst, ret, "%s: error while zeroing at offset %" PRIu64,
                             c->dst_path, off);
        }
        return ret;
    }
    if (fallocate(c->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)n) == 0) {
        return 0;
    }
    /* No hole punching here (e.g. a block device): write the zeros. */
    while (n > 0) {
        size_t len = n < CONVERT_CHUNK ? (size_t)n : CONVERT_CHUNK;

        ret = raw_pwrite_all(c, c->zeros, len, off);
        if (ret < 0) {
            return ret;
        }
        off += len;
        n -= len;
    }
    return 0;
}

/* ---- zero detection, as qemu-img ------------------------------------------------------------ */

/* qemu-img's is_allocated_sectors(): whether the first sector of `buf` (n bytes, at guest
 * offset `off`) holds data, and in *pnum how many bytes from the start share that state. The
 * end of a run is moved to a multiple of `alignment` where that is possible: data runs grow
 * to it, zero runs shrink to it (the tail is rewritten with the next data anyway). */
static int is_allocated_sectors(const uint8_t *buf, size_t n, size_t *pnum, uint64_t off,
                                uint64_t alignment)
{
    size_t i, tail;
    int is_zero;

    if (n == 0) {
        *pnum = 0;
        return 0;
    }
    is_zero = buffer_is_zero(buf, n < CONVERT_SECTOR ? n : CONVERT_SECTOR);
    for (i = CONVERT_SECTOR; i < n; i += CONVERT_SECTOR) {
        size_t len = n - i < CONVERT_SECTOR ? n - i : CONVERT_SECTOR;

        if (is_zero != buffer_is_zero(buf + i, len)) {
            break;
        }
    }
    if (i >= n) {
        *pnum = n;
        return !is_zero;
    }
    tail = (size_t)((off + i) & (alignment - 1));
    if (tail) {
        if (is_zero && i <= tail) {
            is_zero = 0; /* the data right after rewrites this tail anyway */
        }
        if (!is_zero) {
            i += alignment - tail;
            if (i > n) {
                i = n;
            }
        } else {
            i -= tail;
        }
    }
    *pnum = i;
    return !is_zero;
}

/* qemu-img's is_allocated_sectors_min(): as above, but a run that starts with data swallows
 * zero runs shorter than `min` bytes, so small holes do not split writes. */
static int is_allocated_sectors_min(const uint8_t *buf, size_t n, size_t *pnum, uint64_t min,
                                    uint64_t off, uint64_t alignment)
{
    size_t num_used, num_checked;
    int ret;

    if (n < min) {
        min = n;
    }
    ret = is_allocated_sectors(buf, n, pnum, off, alignment);
    if (!ret) {
        return ret;
    }
    num_used = num_checked = *pnum;
    buf += *pnum;
    off += *pnum;
    n -= *pnum;
    while (n > 0) {
        ret = is_allocated_sectors(buf, n, pnum, off, alignment);
        buf += *pnum;
        off += *pnum;
        n -= *pnum;
        num_checked += *pnum;
        if (ret) {
            num_used = num_checked;
        } else if (*pnum >= min) {
            break;
        }
    }
    *pnum = num_used;
    return 1;
}

/* ---- the copy ---------------------------------------------------------------------------- */

static int source_status(struct convert *c, uint64_t off, uint64_t count, struct qcow2_extent *e)
{
    int ret;

    *e = QCOW2_EXTENT_INIT;
    ret = qcow2_block_status(c->src, off, count, e);
    if (ret < 0) {
        tool_image_error(c->src, ret, "%s: could not read the status of offset %" PRIu64,
                         c->src_path, off);
        return ret;
    }
    if (e->start != off || e->length == 0 || e->length > count) {
        tool_error("%s: block status at offset %" PRIu64 " returned an invalid range",
                   c->src_path, off);
        return -EIO;
    }
    return 0;
}

/* Write `n` bytes of source data at `off` from `buf` (qemu-img's convert_co_write for
 * BLK_DATA): write what holds data, treat long enough zero runs as zeros. */
static int write_data(struct convert *c, const uint8_t *buf, uint64_t off, size_t n)
{
    int ret = 0;
    while (n > 0) {
        size_t len = n;

        if (!c->min_sparse ||
            is_allocated_sectors_min(buf, n, &len, c->min_sparse, off, c->alignment)) {
            ret = target_write(c, buf, len, off);
        } else {
            ret = target_zero(c, off, len);
        }
        if (ret < 0) {
            return ret;
        }
        buf += len;
        off += len;
        n -= len;
    }
    return 0;
}

/* qemu-img's convert_iteration_sectors() and its caller, one step: the next range of one
 * status, cut at the source's cluster boundaries; data in pieces of at most `chunk` bytes
 * (one cluster when compressing). Returns 1 with a task, 0 at the end, or -errno. Called
 * under gen_lock. */
static int next_task(struct convert *c, struct task *t)
{
    uint64_t off = c->gen_off, n;
    int ret;

    if (off >= c->size) {
        return 0;
    }
    if (!c->min_sparse) {
        /* -S 0: the source is not scanned; everything is data. */
        c->gen_next_status = c->size;
        c->gen_data = 1;
    } else if (c->gen_next_status <= off) {
        struct qcow2_extent e = QCOW2_EXTENT_INIT;
        uint64_t count = c->size - off, tail;

        ret = source_status(c, off, count < CONVERT_MAX_QUERY ? count : CONVERT_MAX_QUERY, &e);
        if (ret < 0) {
            return ret;
        }
        n = (e.length + CONVERT_SECTOR - 1) / CONVERT_SECTOR * CONVERT_SECTOR;
        if (n > c->size - off) {
            n = c->size - off;
        }
        /* End on a source cluster boundary, so the next range starts on one. */
        tail = (off + n) % c->src_alignment;
        if (n > tail) {
            n -= tail;
        }
        c->gen_data = !(e.flags & QCOW2_BS_ZERO);
        c->gen_next_status = off + n;
    }

    int data = c->gen_data;
    n = c->gen_next_status - off;
    /* Data is read into a chunk buffer; with -B zero ranges are compared through it too. */
    if ((data || c->out_backing) && n > c->chunk) {
        n = c->chunk;
    }
    if (c->compress) {
        /* Compressed clusters are written whole: a shorter range counts as data. */
        if (n < c->cluster_size) {
            n = c->size - off < c->cluster_size ? c->size - off : c->cluster_size;
            data = 1;
        } else {
            n = n / c->cluster_size * c->cluster_size;
        }
    }
    *t = (struct task){ .seq = c->next_seq++, .off = off, .n = n, .data = data };
    c->gen_off = off + n;
    progress_print(c, off, 0);
    return 1;
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
    int skip;      /* nothing to write */
    int ready;     /* prepared, waiting for its turn (ordered copies) */
};

struct worker {
    struct convert *c;
    struct slot *own; /* unordered copies */
    pthread_t tid;
};

/* -B: write only the sectors where the source differs from what the new target already
 * reads through its backing file; differing runs of zeros become zero writes. */
static int write_differences(struct convert *c, const uint8_t *src, const uint8_t *cur,
                             uint64_t off, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t len = n - i < CONVERT_SECTOR ? n - i : CONVERT_SECTOR;
        if (memcmp(src + i, cur + i, len) == 0) {
            i += len;
            continue;
        }
        /* a run of differing sectors, all zero or all data in the source */
        int zero = buffer_is_zero(src + i, len);
        size_t j = i + len;
        while (j < n) {
            size_t l = n - j < CONVERT_SECTOR ? n - j : CONVERT_SECTOR;
            if (memcmp(src + j, cur + j, l) == 0 || buffer_is_zero(src + j, l) != zero) {
                break;
            }
            j += l;
        }
        int ret;
        if (zero) {
            ret = qcow2_pwrite_zeroes(c->dst, off + i, j - i, 0);
            if (ret < 0) {
                tool_image_error(c->dst, ret, "%s: error while zeroing at offset %" PRIu64,
                                 c->dst_path, off + i);
            }
        } else {
            ret = target_write(c, src + i, j - i, off + i);
        }
        if (ret < 0) {
            return ret;
        }
        i = j;
    }
    return 0;
}

/* Read the task's data (and what the target has, with -B), and compress it: no writes. */
static int prepare_task(struct convert *c, struct slot *s)
{
    const struct task *t = &s->t;
    int ret = 0;

    s->clen = 0;
    s->skip = 0;
    if (c->out_backing) {
        /* Zero ranges too: the backing file may hold data there. */
        ret = t->data ? qcow2_pread(c->src, s->buf, t->n, t->off) : 0;
        if (!t->data) {
            memset(s->buf, 0, t->n);
        }
        if (ret == 0) {
            ret = qcow2_pread(c->dst, s->tbuf, t->n, t->off);
        }
        if (ret < 0) {
            tool_error("%s: error while reading at offset %" PRIu64, c->src_path, t->off);
            return ret;
        }
        if (memcmp(s->buf, s->tbuf, t->n) == 0) {
            s->skip = 1; /* the backing file has it already */
        }
    } else if (t->data) {
        ret = qcow2_pread(c->src, s->buf, t->n, t->off);
        if (ret < 0) {
            tool_image_error(c->src, ret, "%s: error while reading at offset %" PRIu64,
                             c->src_path, t->off);
            return ret;
        }
    }
    if (!t->data || s->skip || !c->compress) {
        return 0;
    }
    if (c->min_sparse && !c->out_backing && buffer_is_zero(s->buf, t->n)) {
        s->skip = 1; /* an all-zero cluster stays unallocated */
        return 0;
    }
    if (t->n < c->cluster_size) { /* the image's tail: pad the cluster */
        memset(s->buf + t->n, 0, c->cluster_size - t->n);
    }
    s->clen = qcow2_compress_cluster(c->dst, s->buf, s->cbuf);
    if (s->clen < 0 && s->clen != -ENOSPC) {
        tool_image_error(c->dst, (int)s->clen, "%s: compression failed", c->dst_path);
        return (int)s->clen;
    }
    return 0;
}

/* Write a prepared task to the target. */
static int write_task(struct convert *c, const struct slot *s)
{
    const struct task *t = &s->t;
    int ret;

    if (s->skip) {
        ret = 0;
    } else if (c->out_backing && !(c->compress && s->clen > 0)) {
        ret = c->compress ? target_write(c, s->buf, t->n, t->off)
                          : write_differences(c, s->buf, s->tbuf, t->off, (size_t)t->n);
    } else if (!t->data) {
        ret = target_zero(c, t->off, t->n);
    } else if (c->compress && s->clen > 0) {
        ret = qcow2_pwrite_compressed_data(c->dst, s->cbuf, (size_t)s->clen, t->off);
        if (ret < 0) {
            tool_image_error(c->dst, ret, "%s: error while compressing at offset %" PRIu64,
                             c->dst_path, t->off);
        }
    } else if (c->compress) { /* did not shrink: stored as is */
        ret = target_write(c, s->buf, t->n, t->off);
    } else {
        ret = write_data(c, s->buf, t->off, (size_t)t->n);
    }
    return ret;
}

/* Stop every worker (called under gen_lock): those waiting for window space would wait
 * forever behind a task that failed. */
static void fail_locked(struct convert *c)
{
    c->failed = 1;
    pthread_cond_broadcast(&c->space_cond);
}

/* Ordered copies, under gen_lock: unless another worker is writing already, write every
 * consecutive ready slot from `turn` on. The lock is dropped around each write. */
static void drain_locked(struct convert *c)
{
    if (c->writing) {
        return; /* the writer will find our slot when it looks again */
    }
    c->writing = 1;
    while (!c->failed) {
        struct slot *s = &c->slots[c->turn % c->nslots];
        if (!s->ready || s->t.seq != c->turn) {
            break;
        }
        pthread_mutex_unlock(&c->gen_lock);
        int ret = write_task(c, s);
        pthread_mutex_lock(&c->gen_lock);
        s->ready = 0;
        c->turn++;
        if (ret < 0) {
            fail_locked(c);
        }
        pthread_cond_broadcast(&c->space_cond);
    }
    c->writing = 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct convert *c = w->c;

    pthread_mutex_lock(&c->gen_lock);
    for (;;) {
        struct task t;
        struct slot *s = w->own;

        int r = c->failed ? 0 : next_task(c, &t);
        if (r < 0) {
            fail_locked(c); /* next_task() reported the error */
        }
        if (r <= 0) {
            break;
        }
        if (c->ordered) {
            while (!c->failed && t.seq >= c->turn + c->nslots) {
                pthread_cond_wait(&c->space_cond, &c->gen_lock);
            }
            if (c->failed) {
                break;
            }
            s = &c->slots[t.seq % c->nslots];
        }
        pthread_mutex_unlock(&c->gen_lock);

        s->t = t;
        int ret = prepare_task(c, s);
        if (ret == 0 && !c->ordered) {
            ret = write_task(c, s);
        }
        pthread_mutex_lock(&c->gen_lock);
        if (ret < 0) {
            fail_locked(c);
            break;
        }
        if (c->ordered) {
            s->ready = 1;
            drain_locked(c);
        }
    }
    pthread_mutex_unlock(&c->gen_lock);
    return NULL;
}

/* Window slots for an ordered copy: twice the workers when compressing (so that workers
 * rarely wait for the writer), within the buffer budget; one per worker otherwise. */
static int slot_count(const struct convert *c, size_t slot_bytes)
{
    int n = c->workers;
    if (c->ordered && c->compress) {
        n = 2 * c->workers;
        while (n > c->workers && (uint64_t)n * slot_bytes > CONVERT_BUFFER_BUDGET) {
            n--;
        }
    }
    return n;
}

/* Copy the whole image with c->workers threads. */
static int copy_image(struct convert *c)
{
    /* a chunk, and a whole cluster when compressing (padding of the image's tail) */
    size_t bufsize = c->chunk > c->cluster_size ? c->chunk : c->cluster_size;
    size_t cbufsize = c->compress ? c->cluster_size : 0;
    int nslots = slot_count(c, bufsize * (c->out_backing ? 2 : 1) + cbufsize);
    struct worker *ws = calloc((size_t)c->workers, sizeof(*ws));
    struct slot *slots = calloc((size_t)nslots, sizeof(*slots));
    int started = 0, ret = 0;

    pthread_mutex_init(&c->gen_lock, NULL);
    pthread_cond_init(&c->space_cond, NULL);
    c->slots = slots;
    c->nslots = nslots;
    if (!ws || !slots) {
        tool_error("out of memory");
        c->failed = 1;
    }
    for (int i = 0; i < nslots && !c->failed; i++) {
        slots[i].buf = malloc(bufsize);
        slots[i].tbuf = c->out_backing ? malloc(bufsize) : NULL;
        slots[i].cbuf = cbufsize ? malloc(cbufsize) : NULL;
        if (!slots[i].buf || (c->out_backing && !slots[i].tbuf) ||
            (cbufsize && !slots[i].cbuf)) {
            tool_error("out of memory");
            c->failed = 1;
        }
    }
    for (int i = 0; i < c->workers && !c->failed; i++) {
        ws[i].c = c;
        ws[i].own = &slots[i % nslots];
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            tool_error("cannot start a worker thread");
            pthread_mutex_lock(&c->gen_lock);
            fail_locked(c);
            pthread_mutex_unlock(&c->gen_lock);
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(ws[i].tid, NULL);
    }
    for (int i = 0; slots && i < nslots; i++) {
        free(slots[i].buf);
        free(slots[i].tbuf);
        free(slots[i].cbuf);
    }
    free(slots);
    c->slots = NULL;
    c->nslots = 0;
    free(ws);
    if (c->failed) {
        ret = -EIO;
    } else if (c->compress && qcow2_pwrite_compressed(c->dst, NULL, 0, 0) < 0) {
        tool_image_error(c->dst, -EIO, "%s: finishing compressed writes", c->dst_path);
        ret = -EIO;
    }
    pthread_mutex_destroy(&c->gen_lock);
    pthread_cond_destroy(&c->space_cond);
    return ret;
}

/* Report a failed system call on the raw target; returns -err. */
static int raw_error(struct convert *c, const char *what, int err)
{
    tool_error("%s: %s: %s", c->dst_path, what, strerror(err));
    return -err;
}

static const char *const raw_target_options[] = { "size", "preallocation", NULL };

static int open_raw_target(struct convert *c, char *optlist, int no_create)
{
    struct qcow2_create_opts o;
    char err[QCOW2_ERROR_MAX] = "";
    size_t first;
    char *bad;
    int ret;

    if (no_create) {
        off_t end;

        c->fd = open(c->dst_path, O_WRONLY);
        if (c->fd < 0) {
            return raw_error(c, "could not open", errno);
        }
        end = lseek(c->fd, 0, SEEK_END);
        if (end < 0) {
            return raw_error(c, "could not find the size", errno);
        }
        if ((uint64_t)end < c->size) {
            tool_error("%s: target is smaller than the source (%lld < %" PRIu64 " bytes)",
                       c->dst_path, (long long)end, c->size);
            return -EINVAL;
        }
        c->zero_init = 0;
        return 0;
    }

    /* -o for raw: parsed by the library's one parser; we honour preallocation. */
    o = QCOW2_CREATE_OPTS_INIT;
    o.format = QCOW2_FORMAT_RAW;
    bad = tool_options_unknown_key(optlist, raw_target_options);
    if (bad) {
        tool_error("format 'raw' does not support option '%s'", bad);
        free(bad);
        return -EINVAL;
    }
    if (optlist && qcow2_create_opts_parse(&o, optlist, err, sizeof(err)) < 0) {
        tool_error("%s: %s", c->dst_path, err[0] ? err : "invalid options");
        return -EINVAL;
    }
    c->fd = open(c->dst_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (c->fd < 0) {
        return raw_error(c, "could not create", errno);
    }
    if (ftruncate(c->fd, (off_t)c->size) < 0) {
        return raw_error(c, "could not set the size", errno);
    }
    switch (o.preallocation) {
    case QCOW2_PREALLOC_OFF:
    case QCOW2_PREALLOC_METADATA: /* nothing to preallocate in a raw file */
        /* QEMU allocates the first block of a new raw file (allocate_first_block() in
         * file-posix.c, for alignment probing); do the same so that our targets are allocated
         * exactly like qemu-img's. */
        first = c->size < RAW_FIRST_BLOCK ? CONVERT_SECTOR : RAW_FIRST_BLOCK;
        if (first > c->size) {
            first = (size_t)c->size;
        }
        if (first && raw_pwrite_all(c, c->zeros, first, 0) < 0) {
            return -EIO;
        }
        break;
    case QCOW2_PREALLOC_FALLOC:
        if (c->size && (ret = posix_fallocate(c->fd, 0, (off_t)c->size)) != 0) {
            return raw_error(c, "could not preallocate", ret);
        }
        break;
    case QCOW2_PREALLOC_FULL:
        c->min_sparse = 0; /* every byte written */
        break;
    }
    c->zero_init = 1;
    return 0;
}

static int open_qcow2_target(struct convert *c, char *optlist, int no_create)
{
    struct qcow2_create_opts o;
    struct qcow2_info info = QCOW2_INFO_INIT;
    char err[QCOW2_ERROR_MAX] = "";
    int ret;

    if (!no_create) {
        o = QCOW2_CREATE_OPTS_INIT;
        o.format = QCOW2_FORMAT_QCOW2;
        if (optlist && qcow2_create_opts_parse(&o, optlist, err, sizeof(err)) < 0) {
            tool_error("%s: %s", c->dst_path, err[0] ? err : "invalid options");
            return -EINVAL;
        }
        if (c->out_backing) {
            o.backing_file = c->out_backing;
        }
        if (o.backing_file && !o.backing_fmt) {
            /* qemu-img requires the format; probe it as create does. */
            struct qcow2_image *b;
            struct qcow2_info bi = QCOW2_INFO_INIT;
            char *path = tool_path_combine(c->dst_path, o.backing_file);
            int r = path ? tool_open(path, QCOW2_FORMAT_PROBE, TOOL_OPEN_NO_BACKING, &b) : -ENOMEM;
            free(path);
            if (r < 0) {
                return r;
            }
            qcow2_get_info(b, &bi);
            o.backing_fmt = bi.format == QCOW2_FORMAT_QCOW2 ? "qcow2" : "raw";
            qcow2_close(b);
        }
        c->out_backing = o.backing_file;
        o.format = QCOW2_FORMAT_QCOW2;
        o.size = c->size;
        if (qcow2_create(c->dst_path, &o, err, sizeof(err)) < 0) {
            tool_error("%s", err[0] ? err : "image creation failed");
            return -EIO;
        }
    }
    ret = tool_open(c->dst_path, QCOW2_FORMAT_QCOW2, TOOL_OPEN_WRITABLE, &c->dst);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_get_info(c->dst, &info);
    if (ret < 0) {
        tool_image_error(c->dst, ret, "%s", c->dst_path);
        return ret;
    }
    if (info.virtual_size < c->size) {
        tool_error("%s: target is smaller than the source (%" PRIu64 " < %" PRIu64 " bytes)",
                   c->dst_path, info.virtual_size, c->size);
        return -EINVAL;
    }
    c->cluster_size = info.cluster_size;
    /* A new image without a backing file reads zeros everywhere (preallocated or not). */
    c->zero_init = !no_create && !c->out_backing;
    return 0;
}

/* --bitmaps, before the target is made: qemu-img's refusals (convert_check_bitmaps). */
static int check_bitmaps(struct qcow2_image *src, int skip_broken)
{
    int n = qcow2_bitmap_count(src);

    for (int i = 0; i < n; i++) {
        struct qcow2_bitmap_info bi = QCOW2_BITMAP_INFO_INIT;

        if (qcow2_bitmap_get_info(src, (unsigned)i, &bi) < 0 || !bi.in_use || skip_broken) {
            continue;
        }
        tool_error("Cannot copy inconsistent bitmap '%s'", bi.name);
        fprintf(stderr, "Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete "
                        "it\n");
        return -EINVAL;
    }
    return 0;
}

/* Only v3 images store bitmaps. */
static int target_supports_bitmaps(struct qcow2_image *dst)
{
    struct qcow2_info in = QCOW2_INFO_INIT;

    return qcow2_get_info(dst, &in) == 0 && in.version >= 3;
}

/* --bitmaps, after the copy: each bitmap of the source again on the target, with its
 * granularity and state, filled by a merge (qemu-img's convert_copy_bitmap). */
static int copy_bitmaps(struct qcow2_image *src, struct qcow2_image *dst, const char *dst_path)
{
    int n = qcow2_bitmap_count(src);

    for (int i = 0; i < n; i++) {
        struct qcow2_bitmap_info bi = QCOW2_BITMAP_INFO_INIT;
        int r = qcow2_bitmap_get_info(src, (unsigned)i, &bi);

        if (r == 0 && bi.in_use) {
            tool_warning("Skipping inconsistent bitmap '%s'", bi.name);
            continue;
        }
        if (r == 0) {
            r = qcow2_bitmap_add(dst, bi.name, bi.granularity,
                                 bi.enabled ? 0 : QCOW2_BITMAP_DISABLED);
        }
        if (r == 0) {
            r = qcow2_bitmap_merge(dst, bi.name, src, bi.name);
        }
        if (r < 0) {
            tool_image_error(dst, r, "%s: copying bitmap '%s'", dst_path, bi.name);
            return r;
        }
    }
    return 0;
}

int cmd_convert(int argc, char **argv)
{
    enum { OPT_BITMAPS = 256, OPT_SKIP_BROKEN };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        TOOL_TRUST_LONGOPTS,
        { "bitmaps", no_argument, NULL, OPT_BITMAPS },
        { "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN },
        { NULL, 0, NULL, 0 },
    };
    struct convert c = { .fd = -1, .min_sparse = CONVERT_DEFAULT_SPARSE, .last_pct = -100.0,
                         .workers = CONVERT_DEFAULT_WORKERS };
    const char *fmtname = NULL, *outname = "raw", *snapshot = NULL;
    char *optlist = NULL;
    int no_create = 0, quiet = 0, out_of_order = 0, ch, ret = TOOL_EXIT_ERROR;
    int bitmaps = 0, skip_broken = 0;
    struct qcow2_info src_info = QCOW2_INFO_INIT;
    enum qcow2_format fmt;
    uint64_t sparse;
    uint8_t *zeros = NULL;
    char *end;
    long m;
    struct tool_trust trust = { 0 };

    optind = 0;
    while ((ch = getopt_long(argc, argv, "+hf:O:o:B:cpqnS:Wm:Ul:", longopts, NULL)) != -1) {
        if (tool_trust_option(&trust, ch, optarg)) {
            continue;
        }
        switch (ch) {
        case 'h':
            convert_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'O':
            outname = optarg;
            break;
        case 'o':
            if (tool_append_options(&optlist, optarg) < 0) {
                tool_error("out of memory");
                goto out;
            }
            break;
        case 'B':
            c.out_backing = optarg;
            break;
        case 'c':
            c.compress = 1;
            break;
        case 'p':
            c.progress = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'n':
            no_create = 1;
            break;
        case 'S':
            if (tool_parse_size(optarg, "-S", &sparse) < 0) {
                goto out;
            }
            if (sparse % CONVERT_SECTOR || sparse > CONVERT_MAX_SPARSE) {
                tool_error("invalid buffer size for sparse output specified (-S): a multiple "
                           "of 512 bytes, at most 16 MiB");
                goto out;
            }
            c.min_sparse = sparse;
            break;
        case 'W':
            out_of_order = 1;
            break;
        case 'm':
            errno = 0;
            m = strtol(optarg, &end, 10);
            if (errno || *end || m < 1 || m > CONVERT_MAX_COROUTINES) {
                tool_error("invalid number of coroutines: allowed is 1 to %d",
                           CONVERT_MAX_COROUTINES);
                goto out;
            }
            c.workers = (int)m;
            break;
        case 'U':
            break;
        case OPT_BITMAPS:
            bitmaps = 1;
            break;
        case OPT_SKIP_BROKEN:
            skip_broken = 1;
            break;
        case 'l':
            snapshot = optarg;
            break;
        default:
            ret = tool_usage_error("convert", "invalid option");
            goto out;
        }
    }
    if (quiet) {
        c.progress = 0;
    }
    if (tool_parse_format(outname, &c.out_fmt) < 0 || tool_parse_format(fmtname, &fmt) < 0) {
        goto out;
    }
    if (c.out_fmt == QCOW2_FORMAT_PROBE) {
        tool_error("-O needs a format");
        goto out;
    }
    if (tool_options_want_help(optlist)) {
        /* The target options are create's: let create print them. */
        char *args[] = { "create", "-f", (char *)outname, "-o", "help", NULL };

        ret = cmd_create(5, args);
        goto out;
    }
    if (optind != argc - 2) {
        ret = tool_usage_error("convert", "expecting a source and a target file name");
        goto out;
    }
    if (c.compress && c.out_fmt != QCOW2_FORMAT_QCOW2) {
        tool_error("compression is not supported for format '%s'", outname);
        goto out;
    }
    if (skip_broken && !bitmaps) {
        tool_error("Use of --skip-broken-bitmaps requires --bitmaps");
        goto out;
    }
    if (bitmaps && c.out_fmt != QCOW2_FORMAT_QCOW2) {
        tool_error("Format driver '%s' does not support bitmaps", outname);
        goto out;
    }
    if (c.out_backing && (c.out_fmt != QCOW2_FORMAT_QCOW2 || no_create)) {
        tool_error("-B needs a new qcow2 target (-O qcow2, without -n)");
        goto out;
    }
    if (no_create && optlist) {
        tool_error("-o cannot be used with -n (the target is not created)");
        goto out;
    }
    c.src_path = argv[optind];
    c.dst_path = argv[optind + 1];

    c.buf = malloc(CONVERT_CHUNK);
    zeros = calloc(1, CONVERT_CHUNK);
    if (!c.buf || !zeros) {
        tool_error("out of memory");
        goto out;
    }
    c.zeros = zeros;

    /* --untrusted applies to the source, the image a user supplied; DST is ours. */
    if (snapshot ? tool_open_snapshot(c.src_path, fmt, snapshot, &trust, &c.src) < 0
                 : tool_open_trust(c.src_path, fmt, 0, &trust, &c.src) < 0) {
        goto out;
    }
    c.size = qcow2_get_size(c.src);
    if (bitmaps && check_bitmaps(c.src, skip_broken) < 0) {
        goto out;
    }
    if (c.out_fmt == QCOW2_FORMAT_RAW ? open_raw_target(&c, optlist, no_create) < 0
                                      : open_qcow2_target(&c, optlist, no_create) < 0) {
        goto out;
    }

    if (bitmaps && !target_supports_bitmaps(c.dst)) {
        tool_error("Format driver 'qcow2' does not support bitmaps");
        goto out;
    }
    if (qcow2_get_info(c.src, &src_info) < 0) {
        tool_image_error(c.src, -EIO, "%s", c.src_path);
        goto out;
    }
    c.src_alignment = CONVERT_SECTOR;
    if (src_info.format == QCOW2_FORMAT_QCOW2 && src_info.cluster_size > CONVERT_SECTOR) {
        c.src_alignment = src_info.cluster_size;
    }
    c.alignment = CONVERT_SECTOR;
    while (c.alignment * 2 <= c.min_sparse) {
        c.alignment *= 2; /* the largest power of two <= -S, as qemu-img */
    }
    /* Bound the data in flight: about 8 MiB over all workers (qemu-img's budget too). */
    c.chunk = CONVERT_CHUNK;
    while (c.chunk > 64 * 1024 && c.chunk * (uint64_t)c.workers > CONVERT_BUFFER_BUDGET) {
        c.chunk /= 2;
    }
    if (c.compress) {
        /* One cluster at a time: each is compressed on its own. */
        if (c.cluster_size < CONVERT_SECTOR || c.cluster_size > CONVERT_CHUNK) {
            tool_error("%s: unexpected cluster size %u", c.dst_path, c.cluster_size);
            goto out;
        }
        c.chunk = c.cluster_size;
    }

    if (c.compress) {
        /* Compressing is CPU-bound: threads beyond the CPUs only contend for locks (measured
         * on 2 CPUs, zstd: -m 8 threads 0.18 s, 2 threads 0.11 s for 256 MiB). */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        if (ncpu > 0 && c.workers > ncpu) {
            c.workers = (int)ncpu;
        }
    }
    c.ordered = !out_of_order || c.compress;
    progress_print(&c, 0, 1);
    if (copy_image(&c) < 0) {
        goto out;
    }
    if (bitmaps && copy_bitmaps(c.src, c.dst, c.dst_path) < 0) {
        goto out;
    }
    if (c.fd >= 0 && fsync(c.fd) < 0) {
        tool_error("%s: could not flush: %s", c.dst_path, strerror(errno));
        goto out;
    }
    if (c.progress) {
        progress_print(&c, c.size, 1);
        printf("\n");
    }
    ret = TOOL_EXIT_OK;
out:
    if (c.fd >= 0 && close(c.fd) < 0 && ret == TOOL_EXIT_OK) {
        tool_error("%s: %s", c.dst_path, strerror(errno));
        ret = TOOL_EXIT_ERROR;
    }
    if (tool_close(c.dst, c.dst_path) < 0) {
        ret = TOOL_EXIT_ERROR;
    }
    tool_close(c.src, c.src_path);
    free(c.buf);
    free(zeros);
    free(optlist);
    return ret;
}
