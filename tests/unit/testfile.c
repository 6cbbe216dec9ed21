/* testfile.c - the test-only host file backend: a POSIX file whose writes and flushes are
 * logged (for crash simulation) and whose I/O can be failed on demand (for error tests).
 * Implements struct qcow2_file_ops as src/file.c does, with the same contract: every call
 * transfers the whole range or returns -errno, reads past the end of the file return zeros.
 * Also replays a log onto an in-memory copy of a file (struct tf_buf). */
#include "testfile.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/falloc.h>
#endif

#define TF_SECTOR 512u
#define TF_NB_KINDS 6 /* bits of enum tf_kind */

struct testfile {
    int fd;
    bool read_only;
    bool logging;
    bool trace; /* TESTFILE_TRACE=1: print every I/O on stderr */
    pthread_mutex_t lock;

    struct tf_event *events;
    size_t nb_events, cap_events;

    uint64_t counts[TF_NB_KINDS]; /* by kind bit */
    /* Failure injection. */
    unsigned fail_mask;
    uint64_t fail_left; /* matching I/Os until the failing one; 0 = disarmed */
    int fail_err;
    enum tf_fail_mode fail_mode;
    bool fail_torn;
    bool failing; /* sticky mode: the failure fired and is not healed */
    uint64_t nb_failures;
    enum tf_kind failed_kind;
    uint64_t failed_offset, failed_len; /* of the first failed I/O */
    bool failed_rewritten; /* a later pwrite covered the first failed pwrite's range */
    bool failed_repaired;  /* and a flush came after that */
    int flush_error;       /* a flush failed: later ones fail too until healed (the posix
                            * backend's rule: after a failed fdatasync nothing is certain) */
    /* Holding I/O (testfile_pause): held I/Os are numbered 1, 2, ... in the order they
     * blocked and released in that order. */
    pthread_cond_t pause_cond;
    unsigned pause_kinds; /* the next I/O of these kinds covering pause_at blocks; 0: none */
    uint64_t pause_at;    /* or TF_ANY_OFFSET */
    uint64_t nb_paused;   /* I/Os that blocked so far */
    uint64_t nb_resumed;  /* I/Os released so far */
};

static unsigned kind_index(enum tf_kind k)
{
    return (unsigned)__builtin_ctz((unsigned)k);
}

const char *testfile_kind_name(enum tf_kind kind)
{
    switch (kind) {
    case TF_PREAD: return "pread";
    case TF_PWRITE: return "pwrite";
    case TF_FLUSH: return "flush";
    case TF_TRUNCATE: return "truncate";
    case TF_ZERO: return "zero";
    case TF_DISCARD: return "discard";
    }
    return "none";
}

/* Count an I/O of `kind` and decide whether it fails: returns 0 or -errno. Called with the
 * lock held. */
static int account(struct testfile *tf, enum tf_kind kind, uint64_t offset, uint64_t len)
{
    tf->counts[kind_index(kind)]++;
    if (tf->trace) {
        uint64_t n = 0;
        for (unsigned i = 0; i < TF_NB_KINDS; i++)
            n += tf->counts[i];
        fprintf(stderr, "    testfile: I/O %llu: %s 0x%llx+%llu\n", (unsigned long long)n,
                testfile_kind_name(kind), (unsigned long long)offset, (unsigned long long)len);
    }
    if (kind == TF_FLUSH && tf->flush_error) {
        tf->nb_failures++;
        return tf->flush_error;
    }
    if (tf->nb_failures && !tf->failing && tf->failed_kind == TF_PWRITE) {
        if (kind == TF_PWRITE && offset <= tf->failed_offset &&
            offset + len >= tf->failed_offset + tf->failed_len)
            tf->failed_rewritten = true;
        else if (kind == TF_FLUSH && tf->failed_rewritten)
            tf->failed_repaired = true;
    }
    if (!(tf->fail_mask & kind))
        return 0;
    bool fail = false;
    if (tf->failing) {
        fail = true;
    } else if (tf->fail_left) {
        if (--tf->fail_left == 0) {
            fail = true;
            if (tf->fail_mode == TF_FAIL_STICKY)
                tf->failing = true;
            else
                tf->fail_mask = 0;
        }
    }
    if (!fail)
        return 0;
    if (!tf->nb_failures) {
        tf->failed_kind = kind;
        tf->failed_offset = offset;
        tf->failed_len = len;
    }
    tf->nb_failures++;
    if (kind == TF_FLUSH)
        tf->flush_error = -tf->fail_err;
    return -tf->fail_err;
}

static void log_event(struct testfile *tf, enum tf_kind kind, uint64_t offset, uint64_t len,
                      const struct iovec *iov, int iovcnt, uint64_t limit)
{
    if (!tf->logging)
        return;
    if (tf->nb_events == tf->cap_events) {
        size_t cap = tf->cap_events ? tf->cap_events * 2 : 256;
        struct tf_event *e = realloc(tf->events, cap * sizeof(*e));
        if (!e)
            abort();
        tf->events = e;
        tf->cap_events = cap;
    }
    struct tf_event *e = &tf->events[tf->nb_events++];
    *e = (struct tf_event){.kind = kind, .offset = offset, .len = len};
    if (kind == TF_PWRITE) {
        e->data = malloc(len ? len : 1);
        if (!e->data)
            abort();
        uint64_t at = 0;
        for (int i = 0; i < iovcnt && at < limit; i++) {
            uint64_t n = MIN((uint64_t)iov[i].iov_len, limit - at);
            memcpy(e->data + at, iov[i].iov_base, n);
            at += n;
        }
    }
}

/* If a testfile_pause() matches this I/O, block until it is resumed, as a slow disk or a
 * descheduled thread would. Called with the lock held, before the I/O is counted or done. */
static void hold(struct testfile *tf, enum tf_kind kind, uint64_t offset, uint64_t len)
{
    if (!(tf->pause_kinds & kind))
        return;
    bool covers = kind == TF_FLUSH || tf->pause_at == TF_ANY_OFFSET ||
                  (tf->pause_at >= offset && tf->pause_at < offset + len);
    if (!covers)
        return;
    tf->pause_kinds = 0;
    uint64_t ticket = ++tf->nb_paused;
    pthread_cond_broadcast(&tf->pause_cond);
    while (tf->nb_resumed < ticket)
        pthread_cond_wait(&tf->pause_cond, &tf->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* The operations. */

static int tf_pread(void *ctx, void *buf, size_t count, uint64_t offset)
{
    struct testfile *tf = ctx;
    pthread_mutex_lock(&tf->lock);
    hold(tf, TF_PREAD, offset, count);
    int ret = account(tf, TF_PREAD, offset, count);
    pthread_mutex_unlock(&tf->lock);
    if (ret < 0)
        return ret;
    uint8_t *p = buf;
    while (count > 0) {
        ssize_t n = pread(tf->fd, p, count, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            memset(p, 0, count);
            return 0;
        }
        p += n;
        count -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

/* Write `limit` bytes of the vector at `offset` with plain pwrite calls. */
static int write_vector(int fd, const struct iovec *iov, int iovcnt, uint64_t offset,
                        uint64_t limit)
{
    for (int i = 0; i < iovcnt && limit > 0; i++) {
        const uint8_t *p = iov[i].iov_base;
        uint64_t left = MIN((uint64_t)iov[i].iov_len, limit);
        limit -= left;
        while (left > 0) {
            ssize_t n = pwrite(fd, p, left, (off_t)offset);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (n == 0)
                return -EIO;
            p += n;
            left -= (uint64_t)n;
            offset += (uint64_t)n;
        }
    }
    return 0;
}

static int tf_pwritev(void *ctx, const struct iovec *iov, int iovcnt, uint64_t offset)
{
    struct testfile *tf = ctx;
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    pthread_mutex_lock(&tf->lock);
    hold(tf, TF_PWRITE, offset, len);
    int ret = account(tf, TF_PWRITE, offset, len);
    uint64_t limit = len;
    if (ret < 0) {
        if (!tf->fail_torn || len == 0) {
            pthread_mutex_unlock(&tf->lock);
            return ret;
        }
        limit = len / 2 >= TF_SECTOR ? ROUND_DOWN(len / 2, TF_SECTOR) : MAX(len / 2, 1);
    }
    /* While logging, the log order must be the write order: write under the lock. Otherwise
     * writes run in parallel, as on a real file. */
    bool logging = tf->logging;
    if (!logging)
        pthread_mutex_unlock(&tf->lock);
    int wret = write_vector(tf->fd, iov, iovcnt, offset, limit);
    if (logging) {
        if (wret == 0)
            log_event(tf, TF_PWRITE, offset, limit, iov, iovcnt, limit);
        pthread_mutex_unlock(&tf->lock);
    }
    return ret < 0 ? ret : wret;
}

static int tf_flush(void *ctx)
{
    struct testfile *tf = ctx;
    pthread_mutex_lock(&tf->lock);
    hold(tf, TF_FLUSH, 0, 0);
    int ret = account(tf, TF_FLUSH, 0, 0);
    /* No fdatasync: the log, not the disk, is what the crash test trusts, and tests stay
     * fast. The order of events is the order of this log. */
    if (ret == 0)
        log_event(tf, TF_FLUSH, 0, 0, NULL, 0, 0);
    pthread_mutex_unlock(&tf->lock);
    return ret;
}

static int64_t tf_size(void *ctx)
{
    struct testfile *tf = ctx;
    struct stat st;
    if (fstat(tf->fd, &st) < 0)
        return -errno;
    return st.st_size;
}

static int tf_truncate(void *ctx, uint64_t size)
{
    struct testfile *tf = ctx;
    pthread_mutex_lock(&tf->lock);
    hold(tf, TF_TRUNCATE, size, 0);
    int ret = account(tf, TF_TRUNCATE, size, 0);
    if (ret == 0) {
        ret = ftruncate(tf->fd, (off_t)size) < 0 ? -errno : 0;
        if (ret == 0)
            log_event(tf, TF_TRUNCATE, size, 0, NULL, 0, 0);
    }
    pthread_mutex_unlock(&tf->lock);
    return ret;
}

/* Zero [offset, offset+count): fallocate where it works, else written zeros. Extends the
 * file like FALLOC_FL_ZERO_RANGE does. */
static int zero_range(int fd, uint64_t offset, uint64_t count)
{
#ifdef FALLOC_FL_ZERO_RANGE
    if (fallocate(fd, FALLOC_FL_ZERO_RANGE, (off_t)offset, (off_t)count) == 0)
        return 0;
#endif
    static const uint8_t zeros[65536];
    while (count > 0) {
        size_t n = (size_t)MIN(count, sizeof(zeros));
        struct iovec v = {(void *)zeros, n};
        int ret = write_vector(fd, &v, 1, offset, n);
        if (ret < 0)
            return ret;
        offset += n;
        count -= n;
    }
    return 0;
}

static int tf_zero(void *ctx, uint64_t offset, uint64_t count)
{
    struct testfile *tf = ctx;
    pthread_mutex_lock(&tf->lock);
    hold(tf, TF_ZERO, offset, count);
    int ret = account(tf, TF_ZERO, offset, count);
    if (ret == 0) {
        ret = zero_range(tf->fd, offset, count);
        if (ret == 0)
            log_event(tf, TF_ZERO, offset, count, NULL, 0, 0);
    }
    pthread_mutex_unlock(&tf->lock);
    return ret;
}

static int tf_discard(void *ctx, uint64_t offset, uint64_t count)
{
    struct testfile *tf = ctx;
    pthread_mutex_lock(&tf->lock);
    hold(tf, TF_DISCARD, offset, count);
    int ret = account(tf, TF_DISCARD, offset, count);
    if (ret == 0) {
        /* Inside the file only, like FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE. */
        int64_t size = tf_size(tf);
        if (size < 0) {
            ret = (int)size;
        } else if (offset < (uint64_t)size) {
            uint64_t n = MIN(count, (uint64_t)size - offset);
            ret = 0;
#ifdef FALLOC_FL_PUNCH_HOLE
            if (fallocate(tf->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                          (off_t)n) < 0)
#endif
                ret = zero_range(tf->fd, offset, n);
        }
        if (ret == 0)
            log_event(tf, TF_DISCARD, offset, count, NULL, 0, 0);
    }
    pthread_mutex_unlock(&tf->lock);
    return ret;
}

static int tf_status(void *ctx, uint64_t offset, uint64_t *count, bool *data)
{
    struct testfile *tf = ctx;
    off_t d = lseek(tf->fd, (off_t)offset, SEEK_DATA);
    if (d < 0) {
        *data = errno != ENXIO;
        return 0;
    }
    if ((uint64_t)d > offset) {
        *data = false;
        *count = MIN(*count, (uint64_t)d - offset);
        return 0;
    }
    off_t h = lseek(tf->fd, (off_t)offset, SEEK_HOLE);
    *data = true;
    if (h > (off_t)offset)
        *count = MIN(*count, (uint64_t)h - offset);
    return 0;
}

static int64_t tf_allocated_bytes(void *ctx)
{
    struct testfile *tf = ctx;
    struct stat st;
    if (fstat(tf->fd, &st) < 0)
        return -errno;
    return (int64_t)st.st_blocks * 512;
}

static void tf_close(void *ctx)
{
    struct testfile *tf = ctx;
    if (tf->fd >= 0)
        close(tf->fd);
    tf->fd = -1;
}

static const struct qcow2_file_ops testfile_ops = {
    .pread = tf_pread,
    .pwritev = tf_pwritev,
    .flush = tf_flush,
    .size = tf_size,
    .truncate = tf_truncate,
    .zero = tf_zero,
    .discard = tf_discard,
    .status = tf_status,
    .allocated_bytes = tf_allocated_bytes,
    .close = tf_close,
};

/* ------------------------------------------------------------------------------------------ */
/* Life cycle, log and failure control. */

struct testfile *testfile_open(const char *path, bool read_only, char *err, size_t errlen)
{
    int fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct testfile *tf = calloc(1, sizeof(*tf));
    if (!tf) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    tf->fd = fd;
    tf->read_only = read_only;
    tf->logging = true;
    const char *trace = getenv("TESTFILE_TRACE");
    tf->trace = trace && *trace && strcmp(trace, "0") != 0;
    pthread_mutex_init(&tf->lock, NULL);
    pthread_cond_init(&tf->pause_cond, NULL);
    return tf;
}

struct qcow2_file *testfile_attach(struct testfile *tf)
{
    return file_new(&testfile_ops, tf, "", tf->read_only);
}

void testfile_free(struct testfile *tf)
{
    if (!tf)
        return;
    tf_close(tf);
    for (size_t i = 0; i < tf->nb_events; i++)
        free(tf->events[i].data);
    free(tf->events);
    pthread_mutex_destroy(&tf->lock);
    pthread_cond_destroy(&tf->pause_cond);
    free(tf);
}

void testfile_set_logging(struct testfile *tf, bool on)
{
    pthread_mutex_lock(&tf->lock);
    tf->logging = on;
    pthread_mutex_unlock(&tf->lock);
}

size_t testfile_nb_events(const struct testfile *tf)
{
    return tf->nb_events;
}

const struct tf_event *testfile_event(const struct testfile *tf, size_t i)
{
    assert(i < tf->nb_events);
    return &tf->events[i];
}

void testfile_fail(struct testfile *tf, unsigned mask, uint64_t nth, int err,
                   enum tf_fail_mode mode, bool torn)
{
    pthread_mutex_lock(&tf->lock);
    tf->fail_mask = mask;
    tf->fail_left = nth;
    tf->fail_err = err;
    tf->fail_mode = mode;
    tf->fail_torn = torn;
    tf->failing = false;
    pthread_mutex_unlock(&tf->lock);
}

void testfile_heal(struct testfile *tf)
{
    pthread_mutex_lock(&tf->lock);
    tf->fail_mask = 0;
    tf->fail_left = 0;
    tf->failing = false;
    tf->flush_error = 0;
    pthread_mutex_unlock(&tf->lock);
}

/* The counters change under the lock; readers may run beside I/O threads. */
uint64_t testfile_nb_failures(const struct testfile *tf)
{
    struct testfile *t = (struct testfile *)tf;
    pthread_mutex_lock(&t->lock);
    uint64_t n = t->nb_failures;
    pthread_mutex_unlock(&t->lock);
    return n;
}

enum tf_kind testfile_failed_kind(const struct testfile *tf)
{
    struct testfile *t = (struct testfile *)tf;
    pthread_mutex_lock(&t->lock);
    enum tf_kind k = t->failed_kind;
    pthread_mutex_unlock(&t->lock);
    return k;
}

bool testfile_failure_repaired(const struct testfile *tf)
{
    struct testfile *t = (struct testfile *)tf;
    pthread_mutex_lock(&t->lock);
    bool r = t->failed_repaired;
    pthread_mutex_unlock(&t->lock);
    return r;
}

uint64_t testfile_io_count(const struct testfile *tf, unsigned mask)
{
    struct testfile *t = (struct testfile *)tf;
    uint64_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (unsigned i = 0; i < TF_NB_KINDS; i++)
        if (mask & (1u << i))
            n += t->counts[i];
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Replay. */

static void buf_reserve(struct tf_buf *b, uint64_t size)
{
    if (size <= b->cap)
        return;
    uint64_t cap = MAX(size, b->cap * 2);
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        abort();
    b->data = p;
    b->cap = cap;
}

static void buf_resize(struct tf_buf *b, uint64_t size)
{
    buf_reserve(b, size);
    if (size > b->size)
        memset(b->data + b->size, 0, size - b->size);
    b->size = size;
}

int tf_buf_load(struct tf_buf *b, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -errno;
    }
    b->size = 0;
    buf_resize(b, (uint64_t)st.st_size);
    uint64_t at = 0;
    while (at < b->size) {
        ssize_t n = pread(fd, b->data + at, b->size - at, (off_t)at);
        if (n <= 0) {
            close(fd);
            return n < 0 ? -errno : -EIO;
        }
        at += (uint64_t)n;
    }
    close(fd);
    return 0;
}

int tf_buf_save(const struct tf_buf *b, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    struct iovec v = {b->data, b->size};
    int ret = write_vector(fd, &v, 1, 0, b->size);
    close(fd);
    return ret;
}

void tf_buf_copy(struct tf_buf *dst, const struct tf_buf *src)
{
    dst->size = 0;
    buf_resize(dst, src->size);
    memcpy(dst->data, src->data, src->size);
}

void tf_buf_free(struct tf_buf *b)
{
    free(b->data);
    *b = (struct tf_buf){0};
}

void tf_buf_apply(struct tf_buf *b, const struct tf_event *e,
                  bool (*keep_sector)(void *opaque, uint64_t sector), void *opaque)
{
    uint64_t start = e->offset, end = e->offset + e->len;
    switch (e->kind) {
    case TF_TRUNCATE:
        buf_resize(b, e->offset);
        return;
    case TF_DISCARD:
        end = MIN(end, b->size);
        break;
    case TF_PWRITE:
    case TF_ZERO:
        break;
    default:
        return;
    }
    if (start >= end)
        return;
    /* Sector by sector (512-byte pieces of the range, aligned to absolute offsets). */
    uint64_t pos = start;
    while (pos < end) {
        uint64_t next = MIN(ROUND_DOWN(pos, TF_SECTOR) + TF_SECTOR, end);
        if (!keep_sector || keep_sector(opaque, pos / TF_SECTOR)) {
            if (b->size < next)
                buf_resize(b, next);
            if (e->kind == TF_PWRITE)
                memcpy(b->data + pos, e->data + (pos - start), next - pos);
            else
                memset(b->data + pos, 0, next - pos);
        }
        pos = next;
    }
}

uint64_t tf_buf_hash(const struct tf_buf *b)
{
    /* FNV-1a, 8 bytes at a time, with the size mixed in. */
    uint64_t h = 0xcbf29ce484222325ull ^ b->size;
    uint64_t i = 0;
    for (; i + 8 <= b->size; i += 8) {
        uint64_t w;
        memcpy(&w, b->data + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < b->size; i++)
        h = (h ^ b->data[i]) * 0x100000001b3ull;
    return h;
}

void testfile_pause(struct testfile *tf, unsigned kinds, uint64_t host_offset)
{
    pthread_mutex_lock(&tf->lock);
    tf->pause_kinds = kinds;
    tf->pause_at = host_offset;
    pthread_mutex_unlock(&tf->lock);
}

void testfile_pause_read(struct testfile *tf, uint64_t host_offset)
{
    testfile_pause(tf, TF_PREAD, host_offset);
}

void testfile_wait_paused(struct testfile *tf)
{
    pthread_mutex_lock(&tf->lock);
    while (tf->pause_kinds)
        pthread_cond_wait(&tf->pause_cond, &tf->lock);
    pthread_mutex_unlock(&tf->lock);
}

void testfile_resume(struct testfile *tf)
{
    pthread_mutex_lock(&tf->lock);
    if (tf->nb_resumed < tf->nb_paused)
        tf->nb_resumed++;
    pthread_cond_broadcast(&tf->pause_cond);
    pthread_mutex_unlock(&tf->lock);
}
