/* cmd_bench.c - "qcow2 bench": qemu-img bench over the library, so that one command line
 * measures both tools. Same options, same request sequence (request i goes to
 * (OFFSET + i * STEP) mod image size), same output, plus a line with IOPS and MiB/s.
 * The queue depth is real concurrency: DEPTH threads share one atomic request counter. As in
 * qemu-img bench (every request goes from or to its first buffer), all requests share one
 * buffer; only --verify gives each thread its own. Thin over include/qcow2.h: knows nothing
 * of the format. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tool.h"

/* qemu-img bench's defaults. */
#define BENCH_DEFAULT_COUNT 75000
#define BENCH_DEFAULT_DEPTH 64
#define BENCH_DEFAULT_SIZE 4096
/* Buffers are aligned as for O_DIRECT, as blk_blockalign() would. */
#define BENCH_BUF_ALIGN 4096

enum bench_opt {
    OPT_FLUSH_INTERVAL = 256,
    OPT_PATTERN,
    OPT_NO_DRAIN,
    OPT_VERIFY,
};

static void bench_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N]\n"
            "                   [-i AIO] [-n] [--no-drain] [-o OFFSET] [--pattern=N] [-q]\n"
            "                   [-s SIZE] [-S STEP] [-t CACHE] [-w] [-U] [--verify] FILE\n"
            "\n"
            "Send COUNT read (or, with -w, write) requests of SIZE bytes to FILE, DEPTH at a\n"
            "time, and print the run time, as qemu-img bench. Request i goes to offset\n"
            "(OFFSET + i * STEP) modulo the image size.\n"
            "\n"
            "  -c COUNT            number of requests (default %d)\n"
            "  -d DEPTH            requests in flight: DEPTH threads (default %d)\n"
            "  -f FMT              image format (qcow2 or raw); probed if omitted\n"
            "  -s SIZE             bytes per request (default 4k)\n"
            "  -S STEP             distance between request offsets (default SIZE)\n"
            "  -o OFFSET           offset of the first request (default 0)\n"
            "  -w                  write instead of read\n"
            "  --pattern=N         byte the write buffers are filled with (default 0)\n"
            "  --flush-interval=N  flush every N requests (writes only; N >= DEPTH); the\n"
            "                      requests in flight are drained first unless --no-drain\n"
            "  -t CACHE            none, writeback (default), writethrough, directsync, unsafe;\n"
            "                      writethrough and directsync make every write durable (FUA),\n"
            "                      unsafe ignores flushes; O_DIRECT is not used\n"
            "  -i AIO, -n, -U, -q  accepted for qemu-img compatibility (no effect)\n"
            "  --verify            (not in qemu-img) reads check that every byte equals the\n"
            "                      --pattern byte; a mismatch fails the run\n",
            BENCH_DEFAULT_COUNT, BENCH_DEFAULT_DEPTH);
}

struct bench {
    struct qcow2_image *img;
    const char *path;
    uint64_t image_size;
    uint64_t offset; /* -o */
    uint64_t step;   /* -S, or the request size */
    size_t bufsize;  /* -s */
    int64_t count;
    int depth;
    bool write;
    int pattern;
    unsigned write_flags;   /* QCOW2_WRITE_FUA for writethrough modes */
    bool ignore_flush;      /* -t unsafe */
    int64_t flush_interval; /* 0: none */
    bool drain;
    bool verify;

    /* Requests are numbered 0..count-1 in issue order. */
    _Atomic int64_t next;
    _Atomic int failed;

    /* With --flush-interval and draining: a flush happens when the number of requests issued
     * reaches a boundary (count - k * interval, as qemu-img counts them from the end) and
     * none is in flight. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t issued;
    int in_flight;
    int64_t flushed_at; /* the boundary of the last flush, or -1 */
};

struct bench_worker {
    struct bench *b;
    pthread_t thread;
    uint8_t *buf; /* the shared buffer, or (--verify) this thread's own */
};

static uint64_t request_offset(const struct bench *b, int64_t i)
{
    /* qemu-img: offset += step; offset %= image_size, starting at OFFSET unreduced. */
    if (i == 0) {
        return b->offset;
    }
    return (b->offset % b->image_size + ((uint64_t)i % b->image_size) *
            (b->step % b->image_size) % b->image_size) % b->image_size;
}

static int do_flush(struct bench *b)
{
    int ret;

    if (b->ignore_flush) {
        return 0;
    }
    ret = qcow2_flush(b->img);
    if (ret < 0) {
        tool_image_error(b->img, ret, "%s: failed flush request", b->path);
    }
    return ret;
}

static int do_request(struct bench *b, uint8_t *buf, int64_t i)
{
    uint64_t off = request_offset(b, i);
    int ret;

    if (b->write) {
        ret = qcow2_pwrite(b->img, buf, b->bufsize, off, b->write_flags);
    } else {
        ret = qcow2_pread(b->img, buf, b->bufsize, off);
    }
    if (ret < 0) {
        tool_image_error(b->img, ret, "%s: failed %s request at offset %" PRIu64, b->path,
                         b->write ? "write" : "read", off);
        return ret;
    }
    if (b->verify && !b->write) {
        for (size_t k = 0; k < b->bufsize; k++) {
            if (buf[k] != (uint8_t)b->pattern) {
                tool_error("%s: read at offset %" PRIu64 ": byte %zu is 0x%02x, expected "
                           "0x%02x", b->path, off, k, buf[k], b->pattern);
                return -EIO;
            }
        }
    }
    return 0;
}

/* Is `issued` a point where qemu-img bench flushes? */
static bool flush_boundary(const struct bench *b, int64_t issued)
{
    int64_t first = b->count < b->depth ? b->count : b->depth;

    return issued >= first && (b->count - issued) % b->flush_interval == 0;
}

/* Without draining flushes: take numbers from the counter; the request that reaches a
 * boundary is followed by a flush from its thread while the others carry on. */
static void run_free(struct bench_worker *w)
{
    struct bench *b = w->b;

    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&b->next, 1, memory_order_relaxed);

        if (i >= b->count || atomic_load_explicit(&b->failed, memory_order_relaxed)) {
            return;
        }
        if (do_request(b, w->buf, i) < 0) {
            atomic_store(&b->failed, 1);
            return;
        }
        if (b->flush_interval && flush_boundary(b, i + 1) && i + 1 < b->count &&
            do_flush(b) < 0) {
            atomic_store(&b->failed, 1);
            return;
        }
    }
}

/* Draining flushes: issuing stops at each boundary until the queue is empty; the thread that
 * finds it empty flushes, then issuing resumes. */
static void run_drained(struct bench_worker *w)
{
    struct bench *b = w->b;

    pthread_mutex_lock(&b->lock);
    for (;;) {
        int64_t i;

        if (b->issued >= b->count || atomic_load(&b->failed)) {
            break;
        }
        if (flush_boundary(b, b->issued) && b->flushed_at != b->issued) {
            if (b->in_flight > 0) {
                pthread_cond_wait(&b->cond, &b->lock);
                continue;
            }
            /* Nothing in flight and nobody can issue until flushed_at moves. */
            b->in_flight++;
            pthread_mutex_unlock(&b->lock);
            int ret = do_flush(b);
            pthread_mutex_lock(&b->lock);
            b->in_flight--;
            b->flushed_at = b->issued;
            if (ret < 0) {
                atomic_store(&b->failed, 1);
            }
            pthread_cond_broadcast(&b->cond);
            continue;
        }
        i = b->issued++;
        b->in_flight++;
        pthread_mutex_unlock(&b->lock);
        int ret = do_request(b, w->buf, i);
        pthread_mutex_lock(&b->lock);
        b->in_flight--;
        if (ret < 0) {
            atomic_store(&b->failed, 1);
        }
        if (b->in_flight == 0) {
            pthread_cond_broadcast(&b->cond);
        }
    }
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

static void *bench_thread(void *opaque)
{
    struct bench_worker *w = opaque;

    if (w->b->flush_interval && w->b->drain) {
        run_drained(w);
    } else {
        run_free(w);
    }
    return NULL;
}

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_int(const char *s, const char *what, int64_t min, int64_t max, int64_t *out)
{
    uint64_t v;

    if (tool_parse_size(s, what, &v) < 0) {
        return -EINVAL;
    }
    if (v < (uint64_t)min || v > (uint64_t)max) {
        tool_error("invalid %s '%s': must be between %" PRId64 " and %" PRId64, what, s, min,
                   max);
        return -EINVAL;
    }
    *out = (int64_t)v;
    return 0;
}

static int parse_cache(struct bench *b, const char *mode)
{
    if (strcmp(mode, "writeback") == 0 || strcmp(mode, "none") == 0) {
        b->write_flags = 0;
    } else if (strcmp(mode, "writethrough") == 0 || strcmp(mode, "directsync") == 0) {
        b->write_flags = QCOW2_WRITE_FUA;
    } else if (strcmp(mode, "unsafe") == 0) {
        b->ignore_flush = true;
    } else {
        tool_error("invalid cache option '%s' (none, writeback, writethrough, directsync, "
                   "unsafe)", mode);
        return -EINVAL;
    }
    return 0;
}

static int run_bench(struct bench *b)
{
    struct bench_worker *workers;
    int nthreads = b->depth;
    double t0, t1;
    int ret = 0;
    int started = 0;

    if ((int64_t)nthreads > b->count) {
        nthreads = (int)b->count; /* the others would find nothing to do */
    }
    workers = calloc((size_t)nthreads, sizeof(*workers));
    if (!workers) {
        tool_error("out of memory");
        return -ENOMEM;
    }
    for (int k = 0; k < nthreads; k++) {
        workers[k].b = b;
        if (k > 0 && !b->verify) {
            workers[k].buf = workers[0].buf; /* the data is never looked at: share it */
            continue;
        }
        if (posix_memalign((void **)&workers[k].buf, BENCH_BUF_ALIGN, b->bufsize) != 0) {
            tool_error("out of memory for a buffer of %zu bytes", b->bufsize);
            ret = -ENOMEM;
            goto out;
        }
        memset(workers[k].buf, b->pattern, b->bufsize);
    }

    t0 = now_seconds();
    for (; started < nthreads; started++) {
        int err = pthread_create(&workers[started].thread, NULL, bench_thread,
                                 &workers[started]);
        if (err) {
            tool_error("cannot start thread: %s", strerror(err));
            atomic_store(&b->failed, 1);
            ret = -err;
            break;
        }
    }
    for (int k = 0; k < started; k++) {
        pthread_join(workers[k].thread, NULL);
    }
    /* qemu-img bench ends with a flush when the count is a flush boundary (always). */
    if (!atomic_load(&b->failed) && b->flush_interval && do_flush(b) < 0) {
        atomic_store(&b->failed, 1);
    }
    t1 = now_seconds();

    if (atomic_load(&b->failed)) {
        ret = ret ? ret : -EIO;
        goto out;
    }
    double secs = t1 - t0;
    double bytes = (double)b->count * (double)b->bufsize;
    printf("Run completed in %3.3f seconds.\n", secs);
    printf("%.0f IOPS, %.2f MiB/s\n", secs > 0 ? (double)b->count / secs : 0.0,
           secs > 0 ? bytes / secs / (1024.0 * 1024.0) : 0.0);
out:
    for (int k = 0; k < nthreads; k++) {
        if (k == 0 || b->verify) {
            free(workers[k].buf);
        }
    }
    free(workers);
    return ret;
}

int cmd_bench(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
        { "pattern", required_argument, NULL, OPT_PATTERN },
        { "no-drain", no_argument, NULL, OPT_NO_DRAIN },
        { "force-share", no_argument, NULL, 'U' },
        { "verify", no_argument, NULL, OPT_VERIFY },
        { NULL, 0, NULL, 0 },
    };
    struct bench b = {
        .count = BENCH_DEFAULT_COUNT,
        .depth = BENCH_DEFAULT_DEPTH,
        .bufsize = BENCH_DEFAULT_SIZE,
        .drain = true,
        .flushed_at = -1,
    };
    const char *fmt_name = NULL;
    enum qcow2_format fmt;
    int64_t v;
    int c, ret;

    optind = 0;
    while ((c = getopt_long(argc, argv, "hc:d:f:ni:o:qs:S:t:wU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            bench_usage(stdout);
            return TOOL_EXIT_OK;
        case 'c':
            if (parse_int(optarg, "request count", 1, INT_MAX, &b.count) < 0) {
                return TOOL_EXIT_ERROR;
            }
            break;
        case 'd':
            if (parse_int(optarg, "queue depth", 1, INT_MAX, &v) < 0) {
                return TOOL_EXIT_ERROR;
            }
            b.depth = (int)v;
            break;
        case 'f':
            fmt_name = optarg;
            break;
        case 'i':
            if (strcmp(optarg, "threads") != 0 && strcmp(optarg, "native") != 0 &&
                strcmp(optarg, "io_uring") != 0) {
                tool_error("invalid aio option '%s' (threads, native, io_uring)", optarg);
                return TOOL_EXIT_ERROR;
            }
            break;
        case 'n':
        case 'q':
        case 'U':
            break;
        case 'o':
            if (parse_int(optarg, "offset", 0, INT64_MAX, &v) < 0) {
                return TOOL_EXIT_ERROR;
            }
            b.offset = (uint64_t)v;
            break;
        case 's':
            if (parse_int(optarg, "buffer size", 1, INT_MAX, &v) < 0) {
                return TOOL_EXIT_ERROR;
            }
            b.bufsize = (size_t)v;
            break;
        case 'S':
            if (parse_int(optarg, "step size", 0, INT_MAX, &v) < 0) {
                return TOOL_EXIT_ERROR;
            }
            b.step = (uint64_t)v;
            break;
        case 't':
            if (parse_cache(&b, optarg) < 0) {
                return TOOL_EXIT_ERROR;
            }
            break;
        case 'w':
            b.write = true;
            break;
        case OPT_PATTERN:
            if (parse_int(optarg, "pattern", 0, 0xff, &v) < 0) {
                return TOOL_EXIT_ERROR;
            }
            b.pattern = (int)v;
            break;
        case OPT_FLUSH_INTERVAL:
            if (parse_int(optarg, "flush interval", 0, INT_MAX, &b.flush_interval) < 0) {
                return TOOL_EXIT_ERROR;
            }
            break;
        case OPT_NO_DRAIN:
            b.drain = false;
            break;
        case OPT_VERIFY:
            b.verify = true;
            break;
        default:
            return tool_usage_error("bench", "unknown option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("bench", "expected exactly one FILE");
    }
    b.path = argv[optind];
    if (!b.write && b.flush_interval) {
        tool_error("--flush-interval is only available in write tests");
        return TOOL_EXIT_ERROR;
    }
    if (b.flush_interval && b.flush_interval < b.depth) {
        tool_error("Flush interval can't be smaller than depth");
        return TOOL_EXIT_ERROR;
    }
    if (b.verify && b.write) {
        tool_error("--verify checks reads; it does not apply to -w");
        return TOOL_EXIT_ERROR;
    }
    if (tool_parse_format(fmt_name, &fmt) < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (b.step == 0) {
        b.step = b.bufsize;
    }
    if (tool_open(b.path, fmt, b.write ? TOOL_OPEN_WRITABLE : 0, &b.img) < 0) {
        return TOOL_EXIT_ERROR;
    }
    b.image_size = qcow2_get_size(b.img);
    if (b.image_size == 0) {
        tool_error("%s: the image is empty", b.path);
        tool_close(b.img, b.path);
        return TOOL_EXIT_ERROR;
    }
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);

    printf("Sending %" PRId64 " %s requests, %zu bytes each, %d in parallel "
           "(starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
           b.count, b.write ? "write" : "read", b.bufsize, b.depth, b.offset, b.step);
    if (b.flush_interval) {
        printf("Sending flush every %" PRId64 " requests\n", b.flush_interval);
    }
    fflush(stdout);

    ret = run_bench(&b);

    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);
    if (tool_close(b.img, b.path) < 0) {
        ret = ret ? ret : -EIO;
    }
    return ret < 0 ? TOOL_EXIT_ERROR : TOOL_EXIT_OK;
}
