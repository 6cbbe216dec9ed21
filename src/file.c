/* file.c - the host file: the one place that does I/O on a file descriptor.
 * Owns the POSIX backend of struct qcow2_file_ops and the thin wrappers every other layer uses.
 * Every call transfers the whole range or fails: short reads past EOF are zero-filled, short
 * writes are retried, EINTR is retried. Knows nothing about qcow2. */
#include "internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/falloc.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#endif

struct posix_file {
    int fd;
    /* FALLOC_FL_ZERO_RANGE failed as unsupported (tmpfs): not asked again (atomic), as
     * QEMU's file driver does; else every zeroed range costs a failing system call. */
    bool no_zero_range;
    /* The first failed fdatasync's -errno (atomic), returned by every later flush. */
    int flush_error;
};

static int posix_pread(void *ctx, void *buf, size_t count, uint64_t offset)
{
    struct posix_file *pf = ctx;
    uint8_t *p = buf;
    while (count > 0) {
        ssize_t n = pread(pf->fd, p, count, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) { /* past EOF: reads as zeros */
            memset(p, 0, count);
            return 0;
        }
        p += n;
        count -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static __attribute__((noinline)) int pwritev_all(struct posix_file *pf,
                                                  const struct iovec *iov, int iovcnt,
                                                  uint64_t offset);

/* One buffer written whole (most guest writes), with no vector to build or walk. A short or
 * failed write is done again by pwritev_all(): the same bytes at the same place, which
 * reports the error or finishes the rest. */
static int posix_pwrite(void *ctx, const void *buf, size_t count, uint64_t offset)
{
    struct posix_file *pf = ctx;
    if (count > 0 && pwrite(pf->fd, buf, count, (off_t)offset) == (ssize_t)count)
        return 0;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = count};
    return pwritev_all(pf, &iov, 1, offset);
}

static int posix_pwritev(void *ctx, const struct iovec *iov, int iovcnt, uint64_t offset)
{
    struct posix_file *pf = ctx;
    /* One buffer written whole (most guest writes): no copy of the vector to walk. A short
     * or failed write is done again by pwritev_all(): the same bytes at the same place,
     * which reports the error or finishes the rest. */
    if (iovcnt == 1 && iov[0].iov_len > 0 &&
        pwrite(pf->fd, iov[0].iov_base, iov[0].iov_len, (off_t)offset) ==
            (ssize_t)iov[0].iov_len)
        return 0;
    return pwritev_all(pf, iov, iovcnt, offset);
}

/* Write the whole vector, through short writes and interruptions. */
static int pwritev_all(struct posix_file *pf, const struct iovec *iov, int iovcnt,
                       uint64_t offset)
{
    struct iovec local[64];
    struct iovec *v = local;
    if (iovcnt > 64) {
        v = malloc(sizeof(*v) * (size_t)iovcnt);
        if (!v)
            return -ENOMEM;
    }
    memcpy(v, iov, sizeof(*v) * (size_t)iovcnt);
    struct iovec *cur = v;
    int left = iovcnt;
    int ret = 0;
    while (left > 0) {
        if (cur->iov_len == 0) {
            cur++;
            left--;
            continue;
        }
        /* One buffer (most guest writes): pwrite spares the kernel importing a vector. */
        ssize_t n = left == 1 ? pwrite(pf->fd, cur->iov_base, cur->iov_len, (off_t)offset)
                              : pwritev(pf->fd, cur, MIN(left, IOV_MAX), (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            break;
        }
        if (n == 0) {
            ret = -EIO;
            break;
        }
        offset += (uint64_t)n;
        /* A short write: advance through the vector and retry the rest. */
        while (n > 0 && left > 0) {
            if ((size_t)n >= cur->iov_len) {
                n -= (ssize_t)cur->iov_len;
                cur++;
                left--;
            } else {
                cur->iov_base = (uint8_t *)cur->iov_base + n;
                cur->iov_len -= (size_t)n;
                n = 0;
            }
        }
    }
    if (v != local)
        free(v);
    return ret;
}

/* A failed fdatasync is final for this descriptor, as in QEMU's file driver (its
 * page_cache_inconsistent): Linux may mark the pages whose writeback failed clean, so a later
 * fdatasync can succeed without them ever reaching the disk, and a flush or FUA write after
 * it would be acknowledged durable wrongly. Every later flush fails with the first error;
 * reopening the image starts afresh. */
static int posix_flush(void *ctx)
{
    struct posix_file *pf = ctx;
    int err = __atomic_load_n(&pf->flush_error, __ATOMIC_SEQ_CST);
    if (err)
        return err;
    if (fdatasync(pf->fd) == 0)
        return 0;
    err = -errno;
    __atomic_store_n(&pf->flush_error, err, __ATOMIC_SEQ_CST);
    return err;
}

static int64_t posix_size(void *ctx)
{
    struct posix_file *pf = ctx;
    struct stat st;
    if (fstat(pf->fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(pf->fd, 0, SEEK_END);
        return end < 0 ? -errno : (int64_t)end;
    }
    return st.st_size;
}

static int posix_truncate(void *ctx, uint64_t size)
{
    struct posix_file *pf = ctx;
    return ftruncate(pf->fd, (off_t)size) < 0 ? -errno : 0;
}

#ifdef __linux__
/* fallocate(2) in `mode`: 0, -ENOTSUP where the file system cannot, or -errno. */
static int falloc(int fd, int mode, uint64_t offset, uint64_t count)
{
    if (fallocate(fd, mode, (off_t)offset, (off_t)count) == 0)
        return 0;
    return (errno == EOPNOTSUPP || errno == ENOSYS) ? -ENOTSUP : -errno;
}
#endif

static int posix_zero(void *ctx, uint64_t offset, uint64_t count)
{
#ifdef FALLOC_FL_ZERO_RANGE
    struct posix_file *pf = ctx;
    if (!__atomic_load_n(&pf->no_zero_range, __ATOMIC_RELAXED)) {
        if (fallocate(pf->fd, FALLOC_FL_ZERO_RANGE, (off_t)offset, (off_t)count) == 0)
            return 0;
        if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
            return -errno;
        if (errno != EINVAL) /* EINVAL may be this range only (alignment) */
            __atomic_store_n(&pf->no_zero_range, true, __ATOMIC_RELAXED);
    }
    /* As QEMU's file driver: punch, then allocate again, so that the range is stored (a
     * hole would change what block status and allocated-size heuristics see). */
    int ret = falloc(pf->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, count);
    return ret < 0 ? ret : falloc(pf->fd, 0, offset, count);
#else
    (void)ctx;
    (void)offset;
    (void)count;
    return -ENOTSUP;
#endif
}

/* fallocate in `mode` on the file of `ctx`; -ENOTSUP where there is no fallocate(2). */
static int posix_falloc(void *ctx, int mode, uint64_t offset, uint64_t count)
{
#ifdef __linux__
    struct posix_file *pf = ctx;
    return falloc(pf->fd, mode, offset, count);
#else
    (void)ctx;
    (void)mode;
    (void)offset;
    (void)count;
    return -ENOTSUP;
#endif
}

static int posix_allocate(void *ctx, uint64_t offset, uint64_t count)
{
    return posix_falloc(ctx, 0, offset, count);
}

static int posix_discard(void *ctx, uint64_t offset, uint64_t count)
{
#ifdef FALLOC_FL_PUNCH_HOLE
    return posix_falloc(ctx, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, count);
#else
    return posix_falloc(ctx, -1, offset, count);
#endif
}

static int posix_status(void *ctx, uint64_t offset, uint64_t *count, bool *data)
{
    struct posix_file *pf = ctx;
    off_t d = lseek(pf->fd, (off_t)offset, SEEK_DATA);
    if (d < 0) {
        if (errno == ENXIO) { /* no data after offset: a hole up to EOF */
            *data = false;
            return 0;
        }
        *data = true; /* SEEK_DATA unsupported: assume data */
        return 0;
    }
    if ((uint64_t)d > offset) {
        *data = false;
        *count = MIN(*count, (uint64_t)d - offset);
        return 0;
    }
    off_t h = lseek(pf->fd, (off_t)offset, SEEK_HOLE);
    *data = true;
    if (h > (off_t)offset)
        *count = MIN(*count, (uint64_t)h - offset);
    return 0;
}

static int64_t posix_allocated_bytes(void *ctx)
{
    struct posix_file *pf = ctx;
    struct stat st;
    if (fstat(pf->fd, &st) < 0)
        return -errno;
    return (int64_t)st.st_blocks * 512;
}

static void posix_close(void *ctx)
{
    struct posix_file *pf = ctx;
    close(pf->fd);
    free(pf);
}

static const struct qcow2_file_ops posix_ops = {
    .pread = posix_pread,
    .pwritev = posix_pwritev,
    .pwrite = posix_pwrite,
    .flush = posix_flush,
    .size = posix_size,
    .truncate = posix_truncate,
    .zero = posix_zero,
    .discard = posix_discard,
    .status = posix_status,
    .allocate = posix_allocate,
    .allocated_bytes = posix_allocated_bytes,
    .close = posix_close,
};

struct qcow2_file *file_new(const struct qcow2_file_ops *ops, void *ctx, const char *path,
                            bool read_only)
{
    struct qcow2_file *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->path = strdup(path ? path : "");
    if (!f->path) {
        free(f);
        return NULL;
    }
    f->ops = ops;
    f->ctx = ctx;
    f->read_only = read_only;
    f->known_size = -1;
    return f;
}

/* Is `fd` on a file system that keeps files in memory (tmpfs, ramfs)? */
static bool on_memory_fs(int fd)
{
#ifdef __linux__
    struct statfs sfs;
    return fstatfs(fd, &sfs) == 0 &&
           (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
#else
    (void)fd;
    return false;
#endif
}

/* Wrap an open descriptor (the handle owns it from here, also on failure). */
static int file_wrap_fd(int fd, const struct stat *st, const char *path, bool read_only,
                        struct qcow2_file **out, char *err, size_t errlen)
{
    struct posix_file *pf = calloc(1, sizeof(*pf));
    struct qcow2_file *f = pf ? file_new(&posix_ops, pf, path, read_only) : NULL;
    if (!f) {
        free(pf);
        close(fd);
        return format_error(err, errlen, -ENOMEM, "%s: out of memory", path);
    }
    pf->fd = fd;
    f->memory_backed = on_memory_fs(fd);
    f->has_identity = true;
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    *out = f;
    return 0;
}

static const char *file_kind(mode_t mode)
{
    return S_ISDIR(mode)    ? "a directory"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISFIFO(mode) ? "a FIFO"
           : S_ISSOCK(mode) ? "a socket"
           : S_ISLNK(mode)  ? "a symbolic link"
                            : "not a regular file";
}

/* The descriptor's file is one we may use: never a directory; with FILE_REGULAR_ONLY, only a
 * regular file (devices, FIFOs and sockets are refused before any byte is read). */
static int file_check_fd(int fd, unsigned flags, struct stat *st, const char *path, char *err,
                         size_t errlen)
{
    if (fstat(fd, st) < 0) {
        int e = errno;
        return format_error(err, errlen, -e, "%s: %s", path, strerror(e));
    }
    if (S_ISDIR(st->st_mode))
        return format_error(err, errlen, -EISDIR, "%s: is a directory", path);
    if ((flags & FILE_REGULAR_ONLY) && !S_ISREG(st->st_mode))
        return format_error(err, errlen, -EPERM,
                            "%s: is %s, not a regular file (refused in untrusted mode)", path,
                            file_kind(st->st_mode));
    return 0;
}

/* A descriptor opened O_NONBLOCK (so that opening a FIFO cannot hang) works as usual again. */
static void file_clear_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK))
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

int file_open_flags(const char *path, unsigned flags, struct qcow2_file **out, char *err,
                    size_t errlen)
{
    bool read_only = (flags & FILE_READ_ONLY) != 0;
    int oflags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (flags & FILE_CREATE)
        oflags |= O_CREAT | O_TRUNC;
    struct stat st;
    if (flags & FILE_REGULAR_ONLY) {
        /* Look before opening: opening a device can act on it (a tape rewinds). */
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
            return format_error(err, errlen, -EPERM,
                                "%s: is %s, not a regular file (refused in untrusted mode)",
                                path, file_kind(st.st_mode));
        oflags |= O_NONBLOCK;
    }
    int fd = open(path, oflags, 0644);
    if (fd < 0) {
        int e = errno;
        return format_error(err, errlen, -e, "%s: cannot open: %s", path, strerror(e));
    }
    int ret = file_check_fd(fd, flags, &st, path, err, errlen);
    if (ret < 0) {
        close(fd);
        return ret;
    }
    file_clear_nonblock(fd);
    return file_wrap_fd(fd, &st, path, read_only, out, err, errlen);
}

int file_open(const char *path, bool read_only, bool create, struct qcow2_file **out,
              char *err, size_t errlen)
{
    return file_open_flags(path, (read_only ? FILE_READ_ONLY : 0) | (create ? FILE_CREATE : 0),
                           out, err, errlen);
}

/* openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): the kernel resolves `name` and fails with
 * EXDEV when any step (an absolute name, "..", a symlink) would leave `dirfd`. -ENOSYS where
 * the kernel or the C library lacks it. */
static int beneath_openat2(int dirfd, const char *name, int oflags)
{
#if defined(__linux__) && defined(SYS_openat2)
    struct open_how how = {
        .flags = (uint64_t)oflags,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd;
    do
        fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : (int)fd;
#else
    (void)dirfd;
    (void)name;
    (void)oflags;
    return -ENOSYS;
#endif
}

#define BENEATH_MAX_DEPTH 64

/* The fallback: `name` split on '/', each directory opened with O_NOFOLLOW from the one
 * before, "." skipped, ".." going back down the walk (never above `dirfd`: no symbolic link
 * was followed, so the name's text is the truth), the last component opened with O_NOFOLLOW.
 * Stricter than openat2 (a symbolic link is refused even when it points inside), never
 * laxer. */
static int beneath_walk(int dirfd, const char *name, int oflags)
{
    if (name[0] == '/')
        return -EXDEV;
    if (name[0] == '\0')
        return -ENOENT;
    char *copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    int stack[BENEATH_MAX_DEPTH + 1]; /* stack[0] = dirfd, then the directories walked */
    int depth = 0, ret = 0;
    /* "a/" names a directory, as the kernel reads it: never the file a (found by fuzzing) */
    int last_flags = name[strlen(name) - 1] == '/' ? O_DIRECTORY : 0;
    stack[0] = dirfd;
    char *save = NULL;
    char *comp = strtok_r(copy, "/", &save);
    while (comp && ret == 0) {
        char *next = strtok_r(NULL, "/", &save);
        if (strcmp(comp, "..") == 0 || (strcmp(comp, ".") == 0 && next)) {
            if (comp[1] == '.' && depth == 0)
                ret = -EXDEV;
            else if (comp[1] == '.')
                close(stack[depth--]);
            if (!next && ret == 0)
                ret = -EISDIR;
        } else if (depth == BENEATH_MAX_DEPTH) {
            ret = -ENAMETOOLONG;
        } else {
            int fl = next ? O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
                          : oflags | O_NOFOLLOW | last_flags;
            int fd = openat(stack[depth], comp, fl);
            struct stat st;
            if (fd >= 0)
                stack[++depth] = fd;
            else /* a symbolic link in the middle shows as ENOTDIR: say what it is */
                ret = errno == ENOTDIR &&
                              fstatat(stack[depth], comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                              S_ISLNK(st.st_mode)
                          ? -ELOOP
                          : -errno;
        }
        comp = next;
    }
    free(copy);
    if (ret == 0 && depth == 0)
        ret = -EISDIR;
    int fd = ret == 0 ? stack[depth--] : -1;
    while (depth > 0)
        close(stack[depth--]);
    return ret < 0 ? ret : fd;
}

/* Why resolving `name` beneath `dir` failed, as a sentence (the caller names the file). */
static int beneath_error(int ret, const char *dir, const char *name, char *err, size_t errlen)
{
    if (ret == -EXDEV)
        return format_error(err, errlen, -EPERM,
                            "leads outside the allowed directory '%s' (an absolute name, '..' "
                            "or a symbolic link)",
                            dir);
    if (ret == -ELOOP)
        return format_error(err, errlen, -EPERM,
                            "goes through a symbolic link, which is not followed in the "
                            "allowed directory '%s'",
                            dir);
    return format_error(err, errlen, ret, "cannot open '%s/%s': %s", dir, name, strerror(-ret));
}

static int beneath_open(int dirfd, const char *name, int oflags, unsigned flags)
{
    int fd = (flags & FILE_NO_OPENAT2) ? -ENOSYS : beneath_openat2(dirfd, name, oflags);
    return fd == -ENOSYS ? beneath_walk(dirfd, name, oflags) : fd;
}

int file_open_beneath(const char *dir, const char *name, unsigned flags,
                      struct qcow2_file **out, char *err, size_t errlen)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return format_error(err, errlen, -ENOMEM, "out of memory");
    int dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        int e = errno;
        free(path);
        return format_error(err, errlen, -e, "allowed directory '%s': %s", dir, strerror(e));
    }
    /* First resolve without opening (O_PATH): a device or FIFO is refused unopened. */
    struct stat st;
    int fd = beneath_open(dirfd, name, O_PATH | O_CLOEXEC, flags);
    int ret = fd < 0 ? beneath_error(fd, dir, name, err, errlen)
                     : file_check_fd(fd, flags | FILE_REGULAR_ONLY, &st, path, err, errlen);
    if (fd >= 0)
        close(fd);
    fd = -1;
    if (ret == 0 && !(flags & FILE_PATH_ONLY)) {
        /* Then open for I/O, and look again: the name may have changed in between. */
        int oflags = ((flags & FILE_READ_ONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
        fd = beneath_open(dirfd, name, oflags, flags);
        ret = fd < 0 ? beneath_error(fd, dir, name, err, errlen)
                     : file_check_fd(fd, flags | FILE_REGULAR_ONLY, &st, path, err, errlen);
    }
    close(dirfd);
    if (ret < 0 || (flags & FILE_PATH_ONLY)) {
        if (fd >= 0)
            close(fd);
        free(path);
        if (out)
            *out = NULL;
        return ret;
    }
    file_clear_nonblock(fd);
    ret = file_wrap_fd(fd, &st, path, (flags & FILE_READ_ONLY) != 0, out, err, errlen);
    free(path);
    return ret;
}

void file_close(struct qcow2_file *f)
{
    if (!f)
        return;
    if (f->ops->close)
        f->ops->close(f->ctx);
    free(f->path);
    free(f);
}

int file_pread(struct qcow2_file *f, void *buf, size_t count, uint64_t offset)
{
    if (count == 0)
        return 0;
    if (offset > (uint64_t)INT64_MAX - count)
        return -EINVAL;
    return f->ops->pread(f->ctx, buf, count, offset);
}

/* The file reaches at least `end` now (a write or an allocation there). */
static void grow_known_size(struct qcow2_file *f, uint64_t end)
{
    int64_t known = __atomic_load_n(&f->known_size, __ATOMIC_RELAXED);
    while (known >= 0 && (int64_t)end > known &&
           !__atomic_compare_exchange_n(&f->known_size, &known, (int64_t)end, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* A write up to `end` is made: even a failed one may land in part, so from now on the range
 * is not known zero. (Noting it before the write begins says no more than after.) */
static void note_written(struct qcow2_file *f, uint64_t end)
{
    uint64_t cur = __atomic_load_n(&f->written_end, __ATOMIC_RELAXED);
    while (end > cur && !__atomic_compare_exchange_n(&f->written_end, &cur, end, true,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    grow_known_size(f, end);
}

int file_pwrite(struct qcow2_file *f, const void *buf, size_t count, uint64_t offset)
{
    if (f->read_only)
        return -EROFS;
    /* Noted first: the write is then the last call, with nothing to keep across it. */
    note_written(f, offset + count);
    if (f->ops->pwrite)
        return f->ops->pwrite(f->ctx, buf, count, offset);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = count};
    return f->ops->pwritev(f->ctx, &iov, 1, offset);
}

int file_pwritev(struct qcow2_file *f, const struct iovec *iov, int iovcnt, uint64_t offset)
{
    if (f->read_only)
        return -EROFS;
    int ret = f->ops->pwritev(f->ctx, iov, iovcnt, offset);
    uint64_t end = offset;
    for (int i = 0; i < iovcnt; i++)
        end += iov[i].iov_len;
    note_written(f, end);
    return ret;
}

/* Flushes are numbered when they begin: flush number t covers every write that completed
 * before t was handed out. `flush_begun` counts the numbers handed out, `flush_done` is the
 * highest number whose flush succeeded (a failed flush proves nothing, not even for the writes
 * before it; a later successful one covers them). */
int file_flush(struct qcow2_file *f)
{
    if (f->read_only)
        return 0;
    uint64_t t = __atomic_add_fetch(&f->flush_begun, 1, __ATOMIC_SEQ_CST);
    int ret = f->ops->flush(f->ctx);
    if (ret == 0) {
        uint64_t cur = __atomic_load_n(&f->flush_done, __ATOMIC_SEQ_CST);
        while (t > cur && !__atomic_compare_exchange_n(&f->flush_done, &cur, t, true,
                                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            ;
    }
    return ret;
}

bool file_is_synced(struct qcow2_file *f, uint64_t point)
{
    return __atomic_load_n(&f->flush_done, __ATOMIC_SEQ_CST) >= point;
}

int file_sync_to(struct qcow2_file *f, uint64_t point)
{
    return file_is_synced(f, point) ? 0 : file_flush(f);
}

int64_t file_size(struct qcow2_file *f)
{
    int64_t size = f->ops->size(f->ctx);
    if (size >= 0)
        __atomic_store_n(&f->known_size, size, __ATOMIC_RELAXED);
    return size;
}

int64_t file_size_cached(struct qcow2_file *f)
{
    int64_t known = __atomic_load_n(&f->known_size, __ATOMIC_RELAXED);
    return known >= 0 ? known : file_size(f);
}

int file_truncate(struct qcow2_file *f, uint64_t size)
{
    if (f->read_only)
        return -EROFS;
    int ret = f->ops->truncate(f->ctx, size);
    __atomic_store_n(&f->known_size, ret == 0 ? (int64_t)size : -1, __ATOMIC_RELAXED);
    return ret;
}

int file_zero(struct qcow2_file *f, uint64_t offset, uint64_t count)
{
    if (f->read_only)
        return -EROFS;
    int ret = f->ops->zero ? f->ops->zero(f->ctx, offset, count) : -ENOTSUP;
    if (ret == 0) /* zeroing past the end extends the file (reading zeros, still) */
        grow_known_size(f, offset + count);
    return ret;
}

int file_allocate_zeroed(struct qcow2_file *f, uint64_t offset, uint64_t count)
{
    if (f->read_only)
        return -EROFS;
    if (f->memory_backed)
        return 0; /* reads as zeros already; allocating would only spend memory */
    int ret = f->ops->allocate ? f->ops->allocate(f->ctx, offset, count) : -ENOTSUP;
    if (ret == -ENOTSUP)
        return file_zero(f, offset, count);
    if (ret == 0)
        grow_known_size(f, offset + count);
    return ret;
}

int file_discard(struct qcow2_file *f, uint64_t offset, uint64_t count)
{
    if (f->read_only)
        return -EROFS;
    return f->ops->discard ? f->ops->discard(f->ctx, offset, count) : -ENOTSUP;
}

int file_status(struct qcow2_file *f, uint64_t offset, uint64_t *count, bool *data)
{
    if (!f->ops->status) {
        *data = true;
        return 0;
    }
    return f->ops->status(f->ctx, offset, count, data);
}

int64_t file_allocated_bytes(struct qcow2_file *f)
{
    return f->ops->allocated_bytes ? f->ops->allocated_bytes(f->ctx) : 0;
}
