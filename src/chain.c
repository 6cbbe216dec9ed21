/* chain.c - operations on a whole backing chain: commit (an image's data into a lower layer),
 * rebase (another backing file under an image, the guest view kept) and naming another
 * backing file in the header. Moves guest data only through the public I/O calls (io.c),
 * opens and closes layers through image.c, switches the header through header_write.c; knows
 * nothing of L2 tables or refcounts. Crash safety comes from ordering: data first, flushed,
 * then the one pointer (the header, or the emptying of the overlay) that makes it matter. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Guest bytes handled per step: large enough for sequential I/O, small enough for progress. */
#define CHAIN_CHUNK (2u * 1024 * 1024)
/* Rebase compares old and new data in sectors of this size, as qemu-img does. */
#define CHAIN_SECTOR 512u

static void report_progress(qcow2_progress_fn fn, void *opaque, uint64_t done, uint64_t total)
{
    if (fn)
        fn(opaque, done, total);
}

/* ------------------------------------------------------------------------------------------ */
/* The walk: the image in windows of CHAIN_CHUNK guest bytes, handed out in order to
 * CHAIN_THREADS threads (the library's I/O calls are thread-safe), each with two buffers of a
 * window. The first failure stops the walk; its message, which the failing thread left on
 * the image (messages are per thread), is carried over to the caller's thread. Progress is
 * reported under the walk's lock, so the callback runs on one thread at a time with `done`
 * growing. */

#define CHAIN_THREADS 4

typedef int (*chain_window_fn)(void *ctx, uint64_t offset, uint64_t len, uint8_t *buf,
                               uint8_t *buf2);

struct chain_walk {
    struct qcow2_image *img;
    chain_window_fn fn;
    void *ctx;
    qcow2_progress_fn progress;
    void *progress_opaque;
    pthread_mutex_t lock;
    uint64_t next, done; /* under lock */
    int ret;             /* under lock */
    char msg[QCOW2_ERROR_MAX];
};

static void *chain_worker(void *arg)
{
    struct chain_walk *w = arg;
    uint8_t *buf = malloc(CHAIN_CHUNK), *buf2 = malloc(CHAIN_CHUNK);
    uint64_t size = w->img->size;
    int ret = buf && buf2 ? 0 : -ENOMEM;
    if (ret < 0)
        snprintf(w->msg, sizeof(w->msg), "out of memory");
    for (;;) {
        pthread_mutex_lock(&w->lock);
        if (ret < 0 && w->ret == 0) {
            w->ret = ret;
            if (ret != -ENOMEM)
                snprintf(w->msg, sizeof(w->msg), "%s", qcow2_error(w->img));
        }
        uint64_t off = w->next;
        bool stop = w->ret < 0 || off >= size;
        if (!stop)
            w->next = off + MIN(CHAIN_CHUNK, size - off);
        pthread_mutex_unlock(&w->lock);
        if (stop)
            break;
        uint64_t len = MIN(CHAIN_CHUNK, size - off);
        ret = w->fn(w->ctx, off, len, buf, buf2);
        if (ret == 0) {
            pthread_mutex_lock(&w->lock);
            w->done += len;
            report_progress(w->progress, w->progress_opaque, w->done, size);
            pthread_mutex_unlock(&w->lock);
        }
    }
    free(buf);
    free(buf2);
    return NULL;
}

/* Run `fn` over every window of `img` on `threads` threads (1: this thread only). */
static int chain_walk(struct qcow2_image *img, unsigned threads, chain_window_fn fn, void *ctx,
                      qcow2_progress_fn progress, void *progress_opaque)
{
    struct chain_walk w = {.img = img, .fn = fn, .ctx = ctx, .progress = progress,
                           .progress_opaque = progress_opaque};
    pthread_mutex_init(&w.lock, NULL);
    report_progress(progress, progress_opaque, 0, img->size);
    pthread_t tid[CHAIN_THREADS];
    unsigned started = 0;
    uint64_t windows = DIV_ROUND_UP(img->size, CHAIN_CHUNK);
    threads = (unsigned)MIN((uint64_t)MIN(threads, CHAIN_THREADS), MAX(windows, 1));
    while (started + 1 < threads && pthread_create(&tid[started], NULL, chain_worker, &w) == 0)
        started++;
    chain_worker(&w); /* this thread works too (and alone when threads cannot start) */
    for (unsigned i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&w.lock);
    if (w.ret < 0)
        return set_error(img, w.ret, "%s", w.msg);
    return 0;
}

/* Do two paths name the same file? */
static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* A layer's chain_depth counts the layers above it (the open-time depth limit uses it). */
static void set_chain_depth(struct qcow2_image *img, unsigned depth)
{
    for (; img; img = img->backing)
        img->chain_depth = depth++;
}

/* Replace the open backing image of `parent` by `fresh` (which takes its place in the chain). */
static void replace_backing(struct qcow2_image *parent, struct qcow2_image *fresh)
{
    struct qcow2_image *old = parent->backing;
    parent->backing = fresh;
    if (fresh)
        set_chain_depth(fresh, parent->chain_depth + 1);
    if (old)
        qcow2_close(old); /* read-only: nothing to lose */
}

/* The format name recorded for `img` as a backing file. */
static const char *format_name(enum qcow2_format f)
{
    return f == QCOW2_FORMAT_RAW ? "raw" : "qcow2";
}

/* ------------------------------------------------------------------------------------------ */
/* The backing file in the header. */

/* Options for opening another layer of `img`'s chain: the image's own (cache size, path
 * confinement, depth limit), with its whole chain, never for repair. */
static struct qcow2_open_opts layer_opts(const struct qcow2_image *img, bool read_only,
                                         enum qcow2_format format)
{
    struct qcow2_open_opts o = img->opts;
    o.read_only = read_only;
    o.repair = 0;
    o.no_backing = 0;
    o.format = format;
    return o;
}

/* The backing file at `path` opened read-only as the chain below `img` would open it, or
 * NULL when it does not open (a backing file that is not there yet: the image then reads
 * zeros where it is unallocated, until reopened). */
static struct qcow2_image *try_open_backing(struct qcow2_image *img, const char *path,
                                            enum qcow2_format format)
{
    struct qcow2_open_opts o = layer_opts(img, true, format);
    struct qcow2_image *b = NULL;
    return qcow2_open(path, &o, &b, NULL, 0) == 0 ? b : NULL;
}

/* Name `name` (format `fmt`) in the header and make `fresh` (NULL: none) the open backing
 * image, resolved at `path`. Takes `path` and `fresh`, also on failure. */
static int switch_backing(struct qcow2_image *img, const char *name, const char *fmt,
                          char *path, struct qcow2_image *fresh)
{
    int ret = header_set_backing(img, name, fmt);
    if (ret < 0) {
        free(path);
        if (fresh)
            qcow2_close(fresh);
        return ret;
    }
    replace_backing(img, NULL);
    free(img->backing_path);
    img->backing_path = path;
    if (fresh)
        replace_backing(img, fresh);
    return 0;
}

/* Was the image opened with its chain (so that a new backing file should be opened too)? */
static bool opens_chain(const struct qcow2_image *img)
{
    return img->backing != NULL || !img->opts.no_backing;
}

static enum qcow2_format format_by_name(const char *name)
{
    if (!name)
        return QCOW2_FORMAT_PROBE;
    return strcmp(name, "raw") == 0 ? QCOW2_FORMAT_RAW : QCOW2_FORMAT_QCOW2;
}

/* The path of backing file `name` (relative to the image's directory), or NULL for none. */
static int resolve_backing(struct qcow2_image *img, const char *name, char **path)
{
    *path = NULL;
    if (!name || !*name)
        return 0;
    *path = image_resolve_path(img->filename, name);
    return *path ? 0 : set_error(img, -ENOMEM, "out of memory");
}

static int check_backing_target(struct qcow2_image *img)
{
    if (img->format != QCOW2_FORMAT_QCOW2)
        return set_error(img, -ENOTSUP, "only qcow2 images name a backing file");
    if (img->read_only)
        return set_error(img, -EROFS, "image is opened read-only");
    return 0;
}

int qcow2_change_backing_file(struct qcow2_image *img, const char *backing_file,
                              const char *backing_fmt)
{
    int ret = check_backing_target(img);
    if (ret < 0)
        return ret;
    if (backing_fmt && strcmp(backing_fmt, "qcow2") != 0 && strcmp(backing_fmt, "raw") != 0)
        return set_error(img, -EINVAL, "unsupported backing format '%s'", backing_fmt);
    bool has = backing_file && *backing_file;
    char *path;
    if ((ret = resolve_backing(img, backing_file, &path)) < 0)
        return ret;
    struct qcow2_image *fresh =
        has && opens_chain(img) ? try_open_backing(img, path, format_by_name(backing_fmt))
                                : NULL;
    return switch_backing(img, backing_file, has ? backing_fmt : NULL, path, fresh);
}

/* ------------------------------------------------------------------------------------------ */
/* Commit. */

/* The layer of `img`'s chain that `name` designates (qemu's bdrv_find_backing_image): a
 * backing file name as some layer stores it, or a path to the same file, relative to the
 * layer naming it. Sets *parent to the layer above it. */
static struct qcow2_image *find_base(struct qcow2_image *img, const char *name,
                                     struct qcow2_image **parent)
{
    for (struct qcow2_image *l = img; l->backing; l = l->backing) {
        *parent = l;
        if (l->hdr.backing_file && strcmp(l->hdr.backing_file, name) == 0)
            return l->backing;
        char *path = image_resolve_path(l->filename, name);
        bool same = path && same_file(path, l->backing->filename);
        free(path);
        if (same)
            return l->backing;
    }
    return NULL;
}

/* A writable handle on `base`, with the format it was opened with. */
static int open_writable(struct qcow2_image *img, struct qcow2_image *base,
                         struct qcow2_image **out)
{
    struct qcow2_open_opts o = layer_opts(img, false, base->format);
    char msg[QCOW2_ERROR_MAX];
    int ret = qcow2_open(base->filename, &o, out, msg, sizeof(msg));
    if (ret < 0)
        return set_error(img, ret, "%s", msg);
    return 0;
}

/* Copy the range `ext` of `img` (a layer above the base answers there) into `base`: zeros
 * as zeros, data as data. A range that reads zeros because a layer above the base ends
 * before it needs zeros in the base only where the base was not grown (`base_end`): the
 * grown part reads zeros already. */
static int commit_range(struct qcow2_image *img, struct qcow2_image *base, uint64_t base_end,
                        const struct qcow2_extent *ext, uint8_t *buf)
{
    int ret = 0;
    if (!(ext->flags & QCOW2_BS_PRESENT)) {
        if (ext->start < base_end)
            ret = qcow2_pwrite_zeroes(base, ext->start,
                                      MIN(ext->length, base_end - ext->start), 0);
    } else if (ext->flags & QCOW2_BS_ZERO) {
        ret = qcow2_pwrite_zeroes(base, ext->start, ext->length, QCOW2_ZERO_MAY_UNMAP);
    } else {
        if ((ret = qcow2_pread(img, buf, ext->length, ext->start)) < 0)
            return ret;
        ret = qcow2_pwrite(base, buf, ext->length, ext->start, 0);
    }
    return ret < 0 ? set_error(img, ret, "%s", qcow2_error(base)) : 0;
}

struct commit {
    struct qcow2_image *img, *base;
    int base_depth;    /* the base's depth below the image */
    uint64_t base_end; /* the base's size before it was grown */
};

/* Every range of the window that a layer above the base answers (depth < base_depth) goes
 * into the base. */
static int commit_window(void *ctx, uint64_t offset, uint64_t len, uint8_t *buf, uint8_t *buf2)
{
    struct commit *c = ctx;
    (void)buf2;
    int ret = 0;
    for (uint64_t off = offset, end = offset + len; off < end && ret == 0;) {
        struct qcow2_extent ext = QCOW2_EXTENT_INIT;
        ret = qcow2_block_status(c->img, off, end - off, &ext);
        if (ret == 0 && ext.depth < c->base_depth)
            ret = commit_range(c->img, c->base, c->base_end, &ext, buf);
        off += ext.length;
    }
    return ret;
}

int qcow2_commit(struct qcow2_image *img, const struct qcow2_commit_opts *opts)
{
    struct qcow2_commit_opts o;
    char msg[QCOW2_ERROR_MAX];
    int ret = abi_copy_in(&abi_commit_opts, &o, opts, msg, sizeof(msg));
    if (ret < 0)
        return set_error(img, ret, "%s", msg);
    if (!has_backing_file(img))
        return set_error(img, -EINVAL, "Image does not have a backing file");
    if (!img->backing)
        return set_error(img, -EINVAL, "the backing file of '%s' is not open", img->filename);
    struct qcow2_image *parent = img, *base = img->backing;
    if (o.base && !(base = find_base(img, o.base, &parent)))
        return set_error(img, -ENOENT, "Did not find '%s' in the backing chain of '%s'",
                         o.base, img->filename);
    bool empty = !o.keep && parent == img;
    if (empty && img->read_only)
        return set_error(img, -EROFS, "image is opened read-only: it cannot be emptied after "
                                      "the commit (keep it, or open it writable)");
    int base_depth = (int)(base->chain_depth - img->chain_depth);
    struct qcow2_image *wbase;
    if ((ret = open_writable(img, base, &wbase)) < 0)
        return ret;
    /* qemu-img grows the base to the image's size (the commit job does); never shrinks it. */
    uint64_t base_end = wbase->size;
    if (wbase->size < img->size &&
        (ret = qcow2_truncate(wbase, img->size, QCOW2_PREALLOC_OFF, 0)) < 0)
        ret = set_error(img, ret, "%s", qcow2_error(wbase));
    struct commit c = {.img = img, .base = wbase, .base_depth = base_depth,
                       .base_end = base_end};
    if (ret == 0)
        ret = chain_walk(img, CHAIN_THREADS, commit_window, &c, o.progress,
                         o.progress_opaque);
    /* The base's data must be durable before the image stops shadowing it. */
    if (ret == 0 && (ret = qcow2_flush(wbase)) < 0)
        ret = set_error(img, ret, "%s", qcow2_error(wbase));
    if (ret < 0) {
        qcow2_close(wbase);
        return ret;
    }
    replace_backing(parent, wbase);
    if (empty) {
        ret = qcow2_make_empty(img);
        if (ret == -ENOTSUP) /* as qemu-img: an image that cannot be emptied stays as is */
            ret = 0;
    }
    if (ret == 0)
        report_progress(o.progress, o.progress_opaque, img->size, img->size);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Rebase. */

struct rebase {
    struct qcow2_image *img;
    struct qcow2_image *fresh; /* the new backing image, or NULL (none) */
    int prefix_depth;          /* the new backing file is this layer of the old chain, or 0 */
    const struct qcow2_rebase_opts *o;
    uint8_t *old_buf, *new_buf; /* a window each: the thread's (rebase_window) */
};

/* Read what the new chain holds at [offset, offset + n): zeros past its end. */
static int read_new(struct rebase *r, uint64_t offset, uint64_t n)
{
    uint64_t have = 0;
    if (r->fresh && offset < r->fresh->size) {
        have = MIN(n, r->fresh->size - offset);
        int ret = qcow2_pread(r->fresh, r->new_buf, have, offset);
        if (ret < 0)
            return set_error(r->img, ret, "%s", qcow2_error(r->fresh));
    }
    memset(r->new_buf + have, 0, n - have);
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Write the old data of [offset, offset + n) (at r->old_buf + rel) into the image. */
static int write_old(struct rebase *r, uint64_t offset, uint64_t n, size_t rel)
{
    struct qcow2_image *img = r->img;
    if (all_zero(r->old_buf + rel, n))
        return qcow2_pwrite_zeroes(img, offset, n, 0);
    return qcow2_pwrite(img, r->old_buf + rel, n, offset, 0);
}

/* Copy the sectors of [offset, offset + n) where the chains differ. */
static int copy_differences(struct rebase *r, uint64_t offset, uint64_t n)
{
    int ret = 0;
    uint64_t i = 0;
    while (i < n && ret == 0) {
        uint64_t s = MIN(CHAIN_SECTOR, n - i);
        if (memcmp(r->old_buf + i, r->new_buf + i, s) == 0) {
            i += s;
            continue;
        }
        uint64_t j = i + s;
        while (j < n) {
            uint64_t t = MIN(CHAIN_SECTOR, n - j);
            if (memcmp(r->old_buf + j, r->new_buf + j, t) == 0)
                break;
            j += t;
        }
        ret = write_old(r, offset + i, j - i, i);
        i = j;
    }
    return ret;
}

/* With compression: each whole cluster of the range (or the image's last, partial one) that
 * differs is written compressed; the rest as copy_differences. */
static int copy_compressed(struct rebase *r, uint64_t offset, uint64_t n)
{
    struct qcow2_image *img = r->img;
    uint64_t cs = img->cluster_size, end = offset + n, pos = offset;
    int ret = 0;
    while (pos < end && ret == 0) {
        uint64_t cend = MIN(start_of_cluster(img, pos) + cs, img->size);
        size_t rel = (size_t)(pos - offset);
        if (pos != start_of_cluster(img, pos) || cend > end) {
            uint64_t m = MIN(cend, end) - pos;
            if (memcmp(r->old_buf + rel, r->new_buf + rel, m) != 0) {
                /* copy_differences on the piece, with buffers shifted to it */
                struct rebase piece = *r;
                piece.old_buf += rel;
                piece.new_buf += rel;
                ret = copy_differences(&piece, pos, m);
            }
            pos += m;
            continue;
        }
        uint64_t m = cend - pos;
        if (memcmp(r->old_buf + rel, r->new_buf + rel, m) != 0) {
            if (all_zero(r->old_buf + rel, m))
                ret = qcow2_pwrite_zeroes(img, pos, m, 0);
            else
                ret = qcow2_pwrite_compressed(img, r->old_buf + rel, m, pos);
        }
        pos = cend;
    }
    return ret;
}

/* Does the range `ext` describes (block status of the image, old chain) need a look? */
static bool rebase_needs_look(const struct rebase *r, const struct qcow2_extent *ext)
{
    if (ext->depth == 0 && (ext->flags & QCOW2_BS_PRESENT))
        return false; /* the image's own data: the backing file does not show through */
    /* The new backing file is a layer of the old chain: what it and the layers below answer
     * is the same in both chains. */
    return !(r->prefix_depth > 0 && ext->depth >= r->prefix_depth);
}

/* The window's ranges that need a look: compared, and the differences copied. */
static int rebase_window(void *ctx, uint64_t offset, uint64_t len, uint8_t *buf, uint8_t *buf2)
{
    struct rebase r = *(const struct rebase *)ctx; /* with this thread's buffers */
    r.old_buf = buf;
    r.new_buf = buf2;
    int ret = 0;
    for (uint64_t off = offset, end = offset + len; off < end && ret == 0;) {
        struct qcow2_extent ext = QCOW2_EXTENT_INIT;
        ret = qcow2_block_status(r.img, off, end - off, &ext);
        if (ret < 0)
            break;
        if (rebase_needs_look(&r, &ext)) {
            ret = qcow2_pread(r.img, r.old_buf, ext.length, off);
            if (ret == 0)
                ret = read_new(&r, off, ext.length);
            if (ret == 0)
                ret = r.o->compress ? copy_compressed(&r, off, ext.length)
                                    : copy_differences(&r, off, ext.length);
        }
        off += ext.length;
    }
    return ret;
}

/* Compressed writes go one at a time, in guest order (the layout stays deterministic). */
static int rebase_copy(struct rebase *r)
{
    struct qcow2_image *img = r->img;
    int ret = chain_walk(img, r->o->compress ? 1 : CHAIN_THREADS, rebase_window, r,
                         r->o->progress, r->o->progress_opaque);
    if (ret == 0 && r->o->compress)
        ret = qcow2_pwrite_compressed(img, NULL, 0, 0);
    /* Everything copied is durable before the header names the new file. */
    if (ret == 0)
        ret = qcow2_flush(img);
    return ret;
}

/* The layer of the old chain that is the file `path`: its depth, or 0. */
static int depth_in_chain(struct qcow2_image *img, const char *path)
{
    for (struct qcow2_image *l = img->backing; l; l = l->backing)
        if (same_file(l->filename, path))
            return (int)(l->chain_depth - img->chain_depth);
    return 0;
}

/* Open the new backing file read-only; refuse one whose chain holds the image. */
static int open_new_backing(struct qcow2_image *img, const struct qcow2_rebase_opts *o,
                            const char *path, struct qcow2_image **out)
{
    struct qcow2_open_opts oo = layer_opts(img, true, o->backing_format);
    char msg[QCOW2_ERROR_MAX];
    int ret = qcow2_open(path, &oo, out, msg, sizeof(msg));
    if (ret < 0) {
        /* "PATH: reason" as qemu's "Could not open 'PATH': reason" */
        size_t plen = strlen(path);
        if (strncmp(msg, path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0)
            return set_error(img, ret, "Could not open new backing file '%s': Could not open "
                                       "'%s': %s",
                             o->backing_file, path, msg + plen + 2);
        return set_error(img, ret, "Could not open new backing file '%s': %s", o->backing_file,
                         msg);
    }
    for (struct qcow2_image *l = *out; l; l = l->backing) {
        if (same_file(l->filename, img->filename)) {
            qcow2_close(*out);
            *out = NULL;
            return set_error(img, -ELOOP, "Could not open new backing file '%s': backing "
                                          "chain would loop back to '%s'",
                             o->backing_file, img->filename);
        }
    }
    return 0;
}

static int rebase_safe(struct qcow2_image *img, const struct qcow2_rebase_opts *o,
                       const char *path, struct qcow2_image **fresh)
{
    if (has_backing_file(img) && !img->backing)
        return set_error(img, -EINVAL, "Could not open old backing file '%s': not opened",
                         img->hdr.backing_file);
    struct rebase r = {.img = img, .o = o};
    int ret = 0;
    if (path && (ret = open_new_backing(img, o, path, &r.fresh)) < 0)
        return ret;
    r.prefix_depth = path ? depth_in_chain(img, path) : 0;
    ret = rebase_copy(&r);
    if (ret < 0) {
        if (r.fresh)
            qcow2_close(r.fresh);
        return ret;
    }
    *fresh = r.fresh;
    return 0;
}

int qcow2_rebase(struct qcow2_image *img, const struct qcow2_rebase_opts *opts)
{
    struct qcow2_rebase_opts o;
    char msg[QCOW2_ERROR_MAX];
    int ret = abi_copy_in(&abi_rebase_opts, &o, opts, msg, sizeof(msg));
    if (ret < 0)
        return set_error(img, ret, "%s", msg);
    if ((ret = check_backing_target(img)) < 0)
        return ret;
    bool has = o.backing_file && *o.backing_file;
    char *path;
    if ((ret = resolve_backing(img, o.backing_file, &path)) < 0)
        return ret;
    struct qcow2_image *fresh = NULL;
    if (!o.unsafe && (ret = rebase_safe(img, &o, path, &fresh)) < 0) {
        free(path);
        return ret;
    }
    if (o.unsafe && has && opens_chain(img))
        fresh = try_open_backing(img, path, o.backing_format);
    /* The format asked for, else the one found. */
    const char *fmt = !has                                        ? NULL
                      : o.backing_format != QCOW2_FORMAT_PROBE ? format_name(o.backing_format)
                      : fresh                                  ? format_name(fresh->format)
                                                               : NULL;
    ret = switch_backing(img, o.backing_file, fmt, path, fresh);
    if (ret < 0) {
        snprintf(msg, sizeof(msg), "%s", qcow2_error(img));
        return set_error(img, ret, "Could not change the backing file to '%s': %s",
                         has ? o.backing_file : "", msg);
    }
    report_progress(o.progress, o.progress_opaque, img->size, img->size);
    return 0;
}
