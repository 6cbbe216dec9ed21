/* testworkload.c - workloads, the guest-content model and the verdict for the crash and
 * I/O-error tests (see testworkload.h). Starting images are made by qemu-img and qemu-io so
 * that the library is tested on images it did not lay out itself; verdicts use both our
 * qcow2_check and `qemu-img check`. */
#include "testworkload.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define KB 1024ull
#define MB (1024ull * 1024)

static char g_dir[4096];

void wl_set_dir(const char *dir)
{
    snprintf(g_dir, sizeof(g_dir), "%s", dir);
}

const char *wl_dir(void)
{
    return g_dir;
}

void wl_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", g_dir, name);
}

int wl_run_cmd(const char *fmt, ...)
{
    char *cmd;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    int st = system(cmd);
    free(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

bool wl_have_qemu(void)
{
    return wl_run_cmd("command -v qemu-img >/dev/null 2>&1 && "
                      "command -v qemu-io >/dev/null 2>&1") == 0;
}

void wl_io_args(char *out, size_t len, const char *cmds)
{
    out[0] = '\0';
    if (!cmds)
        return;
    size_t at = 0;
    const char *p = cmds;
    while (*p) {
        const char *e = strchr(p, ';');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        at += (size_t)snprintf(out + at, len - at, " -c '%.*s'", (int)n, p);
        if (at >= len)
            abort();
        p += n + (e ? 1 : 0);
    }
}

/* The backing file "<name>.backing.<fmt>" with its data (`io`). */
static int make_backing(const struct workload *w, const char *path, const char *fmt,
                        const char *io)
{
    char args[4096];
    if (wl_run_cmd("qemu-img create -q -f %s%s%s%s '%s' %s", fmt, w->backing_opts ? " -o '" : "",
                   w->backing_opts ? w->backing_opts : "", w->backing_opts ? "'" : "", path,
                   w->backing_size) != 0)
        return -1;
    wl_io_args(args, sizeof(args), io);
    if (args[0] && wl_run_cmd("qemu-io -f %s%s '%s' >/dev/null", fmt, args, path) != 0)
        return -1;
    return 0;
}

/* Run each of the ';'-separated qemu-img commands `cmds` on `path`. */
static int run_qemu_img_cmds(const char *cmds, const char *path)
{
    for (const char *p = cmds; p && *p;) {
        const char *e = strchr(p, ';');
        int n = e ? (int)(e - p) : (int)strlen(p);
        if (wl_run_cmd("qemu-img %.*s '%s' >/dev/null", n, p, path) != 0)
            return -1;
        p += n + (e ? 1 : 0);
    }
    return 0;
}

int wl_prepare(const struct workload *w, struct tf_buf *start, struct tf_buf *base)
{
    char top[4200], back[4200], raw[4200], snap[4200], opts[1024];
    static char args[WL_PREP_ARGS_MAX]; /* (the tests prepare one workload at a time) */
    const char *fmt = w->backing_fmt ? w->backing_fmt : "qcow2";
    snprintf(back, sizeof(back), "%s/%s.backing.%s", g_dir, w->name, fmt);
    snprintf(top, sizeof(top), "%s/%s.start.qcow2", g_dir, w->name);
    snprintf(raw, sizeof(raw), "%s/%s.start.raw", g_dir, w->name);
    snprintf(snap, sizeof(snap), "%s/%s.snapshot.raw", g_dir, w->name);
    /* Names relative to the image's directory, where the library and qemu-img look. */
    size_t n = (size_t)snprintf(opts, sizeof(opts), "%s", w->create_opts);
    if (w->backing_size)
        n += (size_t)snprintf(opts + n, sizeof(opts) - n,
                              ",backing_file=%s.backing.%s,backing_fmt=%s", w->name, fmt, fmt);
    if (w->data_file) /* absolute: qemu-io looks for a relative one in its working dir */
        n += (size_t)snprintf(opts + n, sizeof(opts) - n,
                              ",data_file=%s/%s.data.raw,data_file_raw=on", g_dir, w->name);
    if (n >= sizeof(opts))
        abort();
    if (w->backing_size && make_backing(w, back, fmt, w->backing_io) < 0)
        goto fail;
    if (w->new_backing_io) {
        char newb[4200];
        snprintf(newb, sizeof(newb), "%s/%s.new.qcow2", g_dir, w->name);
        if (make_backing(w, newb, "qcow2", w->new_backing_io) < 0)
            goto fail;
    }
    if (wl_run_cmd("cd '%s' && qemu-img create -q -f qcow2 -o '%s' '%s' %s", g_dir, opts, top,
                   w->size) != 0)
        goto fail;
    wl_io_args(args, sizeof(args), w->prep_io);
    if (args[0] && wl_run_cmd("qemu-io -f qcow2%s '%s' >/dev/null", args, top) != 0)
        goto fail;
    if (run_qemu_img_cmds(w->prep_cmd, top) < 0)
        goto fail;
    if (w->bitmap && wl_run_cmd("qemu-img bitmap --add -g 512 '%s' '%s'", top, w->bitmap) != 0)
        goto fail;
    if (wl_run_cmd("qemu-img convert -f qcow2 -O raw '%s' '%s'", top, raw) != 0)
        goto fail;
    if (w->snapshot && wl_run_cmd("qemu-img convert -f qcow2 -l snapshot.name=%s -O raw "
                                  "'%s' '%s'", w->snapshot, top, snap) != 0)
        goto fail;
    if (tf_buf_load(start, top) < 0 || tf_buf_load(base, raw) < 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "  %s: preparing the starting image failed\n", w->name);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* The workloads. Offsets are chosen to hit partial clusters (COW), cluster-spanning writes,
 * new L2 tables, in-place rewrites, reuse of freed clusters, and flushes in between. */

static const struct wl_op ops_alloc_write[] = {
    {WL_WRITE, 1000, 3000, 0},          /* partial cluster: head and tail COW of zeros */
    {WL_WRITE, 5000, 10000, 0},         /* three clusters, both ends partial */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 2 * MB + 100, 5000, 0},  /* second L2 table */
    {WL_WRITE, 0, 4096, 0},             /* in place over an allocated cluster */
    {WL_WRITE, 6 * MB, 8192, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 3 * 4096 + 17, 50, 0},   /* in place, partial */
    {WL_WRITE, 7 * MB - 100, 300, 0},   /* crosses into a new L2 table */
    {WL_WRITE_FUA, 2 * MB, 12288, 0},
    {WL_WRITE, 100, 100, 0},
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_alloc_write_64k[] = {
    {WL_WRITE, 70000, 1000, 0},
    {WL_WRITE, 200000, 150000, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 65536, 65536, 0},
    {WL_WRITE, 1 * MB + 3, 70000, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 70500, 20000, 0},
    {WL_END, 0, 0, 0},
};

/* Over a backing file with data in [0, 3M) and [5M, 6M): COW copies from it. */
static const struct wl_op ops_backing_write[] = {
    {WL_WRITE, 1000, 3000, 0},
    {WL_WRITE, 4 * MB - 2048, 8192, 0}, /* half over backing data, half over a hole */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 2 * MB + 100, 5000, 0},
    {WL_WRITE, 5 * MB + 4000, 200, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 1500, 100, 0},           /* in place */
    {WL_WRITE, 6 * MB - 300, 600, 0},
    {WL_WRITE_FUA, 7 * MB, 4096, 0},
    {WL_END, 0, 0, 0},
};

/* Extended L2, 16 KiB clusters of 32 512-byte subclusters. */
static const struct wl_op ops_extl2_write[] = {
    {WL_WRITE, 600, 300, 0},            /* one subcluster, partial: COW inside it only */
    {WL_WRITE, 16384 + 1024, 2048, 0},  /* subcluster aligned: no COW */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 2000, 1000, 0},          /* more subclusters of an allocated cluster */
    {WL_WRITE, 40000, 30000, 0},        /* spans clusters */
    {WL_ZERO, 16384 + 1024, 1024, 0},   /* zero subclusters */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 16384 + 1500, 100, 0},   /* over a zero subcluster */
    {WL_WRITE, 3 * MB, 512, 0},         /* new L2 table */
    {WL_ZERO, 48 * 1024, 16384, QCOW2_ZERO_MAY_UNMAP},
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_zero_write[] = {
    {WL_ZERO, 0, 8192, 0},                      /* allocated: zero flag, cluster kept */
    {WL_ZERO, 16384, 8192, QCOW2_ZERO_MAY_UNMAP}, /* allocated: unmapped */
    {WL_FLUSH, 0, 0, 0},
    {WL_ZERO, 40000, 10000, 0},                 /* partial clusters: data for the ends */
    {WL_ZERO, 3 * MB, 1 * MB, QCOW2_ZERO_MAY_UNMAP}, /* unallocated */
    {WL_WRITE, 16384, 5000, 0},                 /* reallocate an unmapped cluster */
    {WL_WRITE, 100, 100, 0},                    /* over a zero cluster with a host cluster */
    {WL_FLUSH, 0, 0, 0},
    {WL_ZERO, 0, 1 * MB, QCOW2_ZERO_MAY_UNMAP},
    {WL_WRITE, 500000, 20000, 0},
    {WL_END, 0, 0, 0},
};

/* Partial writes into new clusters, first into a freed cluster that still holds data (its
 * zero spans must be written), then past the end of the file (left holes in memory). */
static const struct wl_op ops_alloc_write_mem[] = {
    {WL_WRITE, 0, 65536, 0},
    {WL_WRITE, 3 * 65536, 65536, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_DISCARD, 0, 65536, 0},          /* frees a cluster full of data */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 5 * 65536 + 1000, 3000, 0}, /* reuses it: the rest must read zeros */
    {WL_WRITE, 6 * 65536 + 70, 100, 0},    /* past the end of the file */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 8 * 65536 + 60000, 5536, 0},
    {WL_WRITE, 6 * 65536 + 4096, 8192, 0}, /* in place, into the hole */
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_discard[] = {
    {WL_DISCARD, 0, 16384, 0},
    {WL_WRITE, 3 * MB + 4096, 8192, 0}, /* allocates: reuses the freed clusters */
    {WL_FLUSH, 0, 0, 0},
    {WL_DISCARD, 30000, 20000, 0},      /* partial clusters stay */
    {WL_WRITE, 1 * MB + 4096, 12288, 0},
    {WL_DISCARD, 100 * 1024, 400 * 1024, 0},
    {WL_WRITE, 2 * MB + 7, 9000, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_DISCARD, 0, 4 * MB, 0},
    {WL_WRITE, 8192, 4096, 0},
    {WL_END, 0, 0, 0},
};

/* 512-byte clusters: the starting image ends just below a refcount block (1-bit refcounts:
 * one block covers 2 MiB of file) or a refcount table (64-bit: one table cluster covers
 * 2 MiB of file) boundary, so that the workload's allocations cross it. */
static const struct wl_op ops_refcount_growth[] = {
    {WL_WRITE, 1900 * KB, 60 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 2100 * KB + 100, 40 * KB, 0},
    {WL_WRITE, 100, 1000, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 2500 * KB, 30 * KB, 0},
    {WL_END, 0, 0, 0},
};

/* 512-byte clusters: one L2 table maps 32 KiB, one L1 cluster 2 MiB. */
static const struct wl_op ops_l1_growth[] = {
    {WL_WRITE, 0, 1000, 0},
    {WL_TRUNCATE, 4 * MB, 0, 0},        /* L1 grows to two clusters */
    {WL_WRITE, 3 * MB, 2000, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 40 * KB, 1000, 0},
    {WL_TRUNCATE, 8 * MB, 0, 0},
    {WL_WRITE, 7 * MB + 100, 1000, 0},
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_lazy_refcounts[] = {
    {WL_WRITE, 1000, 3000, 0},
    {WL_WRITE, 2 * MB + 100, 5000, 0},
    {WL_DISCARD, 1 * MB, 64 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 1 * MB + 4096, 8192, 0},
    {WL_ZERO, 1 * MB + 32 * KB, 16 * KB, QCOW2_ZERO_MAY_UNMAP},
    {WL_WRITE, 5 * MB, 4096, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 100, 100, 0},
    {WL_END, 0, 0, 0},
};

/* Every kind of change a persistent bitmap must record, across flushes. */
static const struct wl_op ops_bitmap[] = {
    {WL_WRITE, 1000, 3000, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_ZERO, 64 * 1024, 8192, 0},
    {WL_DISCARD, 128 * 1024, 64 * 1024, 0},
    {WL_WRITE, 512 * 1024 + 7, 5000, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 900 * 1024, 4096, 0},
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_resize[] = {
    {WL_WRITE, 3 * MB, 8192, 0},
    {WL_TRUNCATE, 2 * MB, 0, 0},        /* shrink: frees the data past the end */
    {WL_WRITE, 1 * MB, 4096, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_TRUNCATE, 6 * MB, 0, 0},        /* grow: the new area reads zeros */
    {WL_WRITE, 5 * MB, 8192, 0},
    {WL_TRUNCATE, 1 * MB + 512, 0, 0},  /* unaligned shrink */
    {WL_TRUNCATE, 3 * MB, 0, 0},
    {WL_WRITE, 1 * MB, 8192, 0},
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_compressed[] = {
    {WL_COMPRESSED, 0, 16384, 0},
    {WL_COMPRESSED, 64 * KB, 8192, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 4096 + 100, 200, 0},     /* COW out of a compressed cluster */
    {WL_DISCARD, 8192, 4096, 0},
    {WL_ZERO, 12288, 1000, 0},          /* part of a compressed cluster: data */
    {WL_COMPRESSED, 128 * KB, 4096, 0},
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_v2[] = {
    {WL_WRITE, 1000, 3000, 0},
    {WL_ZERO, 8192, 8192, QCOW2_ZERO_MAY_UNMAP},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 2 * MB + 100, 5000, 0},
    {WL_DISCARD, 0, 8192, 0},
    {WL_WRITE, 100, 100, 0},
    {WL_END, 0, 0, 0},
};

/* amend and compact (the guest view stays): writes around each, so that the states before,
 * inside and after are all verified. */
static const struct wl_op ops_amend_refcount_bits[] = {
    {WL_WRITE, 100 * KB, 20 * KB, 0},
    {WL_AMEND_REFCOUNT_BITS, 0, 8, 0},  /* narrower: blocks cover more clusters */
    {WL_WRITE, 3 * MB, 8 * KB, 0},
    {WL_AMEND_REFCOUNT_BITS, 0, 64, 0}, /* wider: more blocks */
    {WL_DISCARD, 0, 64 * KB, 0},
    {WL_WRITE, 2 * MB, 4 * KB, 0},
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_amend_downgrade[] = {
    {WL_WRITE, 64 * KB + 100, 1000, 0},
    {WL_AMEND_DOWNGRADE, 0, 0, 0},      /* zero clusters expanded, then the v2 header */
    {WL_WRITE, 3 * 64 * KB, 4 * KB, 0},
    {WL_END, 0, 0, 0},
};

/* 512-byte clusters: one L2 table maps 32 KiB. */
static const struct wl_op ops_compact[] = {
    {WL_DISCARD, 0, 8 * KB, 0},
    {WL_COMPACT, 0, 0, 0},              /* data and an L2 table move down */
    {WL_WRITE, 1 * KB + 100, 2 * KB, 0},
    {WL_DISCARD, 40 * KB, 4 * KB, 0},
    {WL_COMPACT, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

/* Over snapshot snap1 (taken by qemu-img after clusters low in the file were discarded) and
 * bitmap b0: data clusters and an L2 table shared with it (refcount 2, then 3 with the
 * library's snapshot w1), data named by two L2 tables, an L2 table only snap1 holds.
 * Compact moves them down, every referrer switched, and writes the snapshot L1 tables and
 * table again and the bitmap's storage (as an empty table) low down. The small image moves
 * data named by two L2 tables; the big one (make stress) an L2 table only snap1 names too. */
static const struct wl_op ops_compact_snapshot[] = {
    {WL_WRITE, 2 * KB, 2 * KB, 0},      /* COW of a shared table */
    {WL_WRITE, 46 * KB, 1 * KB, 0},     /* again: 40k..44k in two L2 tables now */
    {WL_SNAP_CREATE, 1, 0, 0},
    {WL_DISCARD, 42 * KB, 2 * KB, 0},   /* the snapshots keep these */
    {WL_COMPACT, 0, 0, 0},
    {WL_WRITE, 1 * KB + 100, 1 * KB, 0},
    {WL_END, 0, 0, 0},
};

/* The same on a bigger image: hundreds of moves per batch (make stress). */
static const struct wl_op ops_compact_big[] = {
    {WL_DISCARD, 0, 1 * MB, 0},
    {WL_COMPACT, 0, 0, 0},
    {WL_WRITE, 100 * KB, 8 * KB, 0},
    {WL_DISCARD, 3 * MB, 512 * KB, 0},
    {WL_COMPACT, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

/* Writes into host clusters that are kept while their L2 entry changes: the COW and the data
 * must be on disk before the L2 entry that makes them visible. 64 KiB clusters, zero-flagged
 * with their host clusters kept (ZERO_ALLOC), still holding the old data on the host. */
static const struct wl_op ops_zero_alloc_rewrite[] = {
    {WL_WRITE, 0, 3 * 64 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_ZERO, 0, 3 * 64 * KB, 0},           /* no unmap: ZERO_ALLOC, old data on the host */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 4096, 4096, 0},              /* partial: COW of zeros, zero flag cleared */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 64 * KB + 60000, 10000, 0},  /* spans two ZERO_ALLOC clusters */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 100, 100, 0},                /* in place again */
    {WL_END, 0, 0, 0},
};

/* Extended L2 (64 KiB clusters of 2 KiB subclusters) over a raw backing file: a new subcluster
 * of an allocated cluster copies the rest of it from the backing file. */
static const struct wl_op ops_extl2_new_subcluster[] = {
    {WL_WRITE, 0, 2048, 0},                      /* allocates the cluster: subcluster 0 */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 3 * 2048 + 512, 512, 0},          /* new subcluster 3: COW from backing */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 64 * KB + 100, 200, 0},           /* new cluster, partial subcluster */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 64 * KB + 10 * 2048 + 1000, 3000, 0}, /* two new subclusters, both partial */
    {WL_FLUSH, 0, 0, 0},
    {WL_ZERO, 5 * 2048, 2048, 0},                /* a zero subcluster in an allocated one */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 5 * 2048 + 100, 100, 0},          /* over it: COW of zeros */
    {WL_END, 0, 0, 0},
};

/* Extended L2, 16 KiB clusters of 512-byte subclusters, no backing file. A write that starts
 * in an unallocated subcluster needs a COW head of zeros, and its data also overwrites
 * allocated subclusters: of the next cluster of a host-contiguous run (qemu-io lays guest
 * clusters 0 and 1 out back to back), or of the same cluster. Zeroing the whole COW span
 * before the data write would let a crash in between read zeros in those allocated
 * subclusters, neither old data nor new (found in random_backing_extl2). */
static const struct wl_op ops_extl2_keep_old_span[] = {
    {WL_WRITE, 8192 + 100, 16384, 0},    /* cluster 0 (new subclusters) into cluster 1 */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 32 * KB + 1000, 11 * KB, 0}, /* cluster 2: new subclusters, then old ones */
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

/* Metadata preallocation: host clusters and L2 entries exist before the first write. */
static const struct wl_op ops_prealloc_write[] = {
    {WL_WRITE, 4096, 4096, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 64 * KB + 1000, 3000, 0},
    {WL_WRITE, 200 * KB, 100 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_ZERO, 512 * KB, 64 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 512 * KB + 5000, 1000, 0},
    {WL_END, 0, 0, 0},
};

/* Over an internal snapshot (taken by qemu-img after 2M of data): L1, L2 tables and data
 * clusters are shared with it (refcount 2) and must be copied, never changed in place. */
static const struct wl_op ops_snapshot_shared[] = {
    {WL_DISCARD, 0, 64 * KB, 0},
    {WL_ZERO, 128 * KB, 64 * KB, QCOW2_ZERO_MAY_UNMAP},
    {WL_ZERO, 256 * KB, 16 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 300 * KB + 100, 5000, 0},  /* COW of a shared cluster in a shared table */
    {WL_WRITE, 2 * MB + 100, 1000, 0},    /* a new L2 table */
    {WL_FLUSH, 0, 0, 0},
    {WL_TRUNCATE, 1 * MB, 0, 0},          /* shrink: drops shared clusters */
    {WL_WRITE, 512 * KB, 4096, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

/* Snapshot operations of the library over a snapshot taken by qemu-img: create (L1 copy,
 * refcounts, COPIED cleared, table switch), writes into the clusters now shared, delete
 * (table switch, references dropped, COPIED set again), apply (references added, L1 switch,
 * the old state's dropped). */
static const struct wl_op ops_snapshot_ops[] = {
    {WL_WRITE, 64 * KB + 100, 5000, 0},
    {WL_SNAP_CREATE, 1, 0, 0},
    {WL_WRITE, 64 * KB + 8000, 3000, 0},  /* COW of a cluster shared with w1 */
    {WL_SNAP_CREATE, 2, 0, 0},
    {WL_ZERO, 512 * KB, 8 * KB, 0},
    {WL_SNAP_DELETE, 1, 0, 0},
    {WL_SNAP_APPLY, 0, 0, 0},
    {WL_WRITE, 4000, 200, 0},
    {WL_SNAP_DELETE, 2, 0, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

/* An external raw data file: guest offset = data file offset. */
static const struct wl_op ops_data_file_raw[] = {
    {WL_WRITE, 1000, 3000, 0},
    {WL_ZERO, 64 * KB, 64 * KB, QCOW2_ZERO_MAY_UNMAP},
    {WL_DISCARD, 256 * KB, 128 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 2 * MB, 8192, 0},
    {WL_ZERO, 3 * MB, 4096, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

/* A 1 MiB image over a 2 MiB backing file: growing it, the new area reads zeros, not the
 * backing file. */
/* 512-byte clusters: an L2 table maps 32 KiB, a refcount block counts 128 KiB of the file.
 * The shrink drops the tables past the new end and the refcount blocks that then count
 * nothing, and cuts the file after its last used cluster; the writes after it reuse the
 * space. */
static const struct wl_op ops_shrink_drops_tables[] = {
    {WL_WRITE, 6 * MB, 200 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_TRUNCATE, 512 * KB + 512, 0, 0},  /* from an aligned end, to mid-table */
    {WL_WRITE, 100 * KB, 4096, 0},
    {WL_TRUNCATE, 2 * MB + 512, 0, 0},
    {WL_WRITE, 2 * MB - 4096, 4608, 0},   /* into the new area, up to the unaligned end */
    {WL_FLUSH, 0, 0, 0},
    {WL_TRUNCATE, 1 * MB, 0, 0},          /* from the unaligned end */
    {WL_END, 0, 0, 0},
};

static const struct wl_op ops_grow_over_backing[] = {
    {WL_WRITE, 1000, 500, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_TRUNCATE, 2 * MB, 0, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 1 * MB + 512 * KB, 4096, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_TRUNCATE, 512 * KB, 0, 0},        /* shrink below the old size, grow again */
    {WL_TRUNCATE, 2 * MB, 0, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

/* Filled by make_random_ops() for CRASH_FULL. */
static struct wl_op ops_random[WL_RANDOM_MAX_OPS + 1] = {{WL_END, 0, 0, 0}};
/* Commit (the backing file gets the overlay's data, then the overlay is emptied), a write
 * after it. The commit comes first: the backing file is not behind the logging backend, so
 * every crash state sees it committed, which is what a crash after the commit began sees
 * wherever the overlay does not shadow it. */
static const struct wl_op ops_commit[] = {
    {WL_COMMIT, 0, 0, 0},
    {WL_WRITE, 8 * KB, 4 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};

/* Rebase onto another file (copying what differs), then onto nothing (flattening). */
static const struct wl_op ops_rebase[] = {
    {WL_WRITE, 900 * KB, 5000, 0},
    {WL_REBASE, 0, 0, 0},
    {WL_WRITE, 0, 4 * KB, 0},
    {WL_FLUSH, 0, 0, 0},
    {WL_END, 0, 0, 0},
};
static const struct wl_op ops_rebase_flatten[] = {
    {WL_ZERO, 32 * KB, 4 * KB, 0},
    {WL_REBASE, 0, 0, WL_REBASE_NONE},
    {WL_END, 0, 0, 0},
};

/* What a copy of a sparse disk does (qcow2 convert into a new image): one cluster in each
 * of several new L2 tables, whose L1 entries reach the disk only in a batch at the flush
 * (cluster_link_new_tables), after the tables and their refcounts. 8 KiB clusters and a
 * small L2 cache: 4 KiB slices, two per table; the entries sit in the second slice, and new
 * tables past the end of the file are cached and written from their first slice only. The
 * first new table reuses a freed cluster that still holds data: an L1 entry on disk before
 * that table is would name garbage. */
static const struct wl_op ops_sparse_copy[] = {
    {WL_DISCARD, 0, 24 * KB, 0},         /* frees three clusters of data (prep_io) */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 4 * MB + 8192, 8192, 0},  /* table 0, second slice */
    {WL_WRITE, 12 * MB, 8192, 0},        /* table 1, in a freed cluster */
    {WL_WRITE, 20 * MB + 100, 3000, 0},  /* table 2, a partial cluster */
    {WL_FLUSH, 0, 0, 0},
    {WL_WRITE, 1 * MB, 8192, 0},         /* first slice of table 0 */
    {WL_WRITE, 28 * MB - 8192, 8192, 0}, /* table 3, its last entry */
    {WL_WRITE, 12 * MB + 8192, 8192, 0},
    {WL_END, 0, 0, 0},
};

static struct wl_op ops_random_backing[WL_RANDOM_MAX_OPS + 1] = {{WL_END, 0, 0, 0}};
/* With compressed writes (each after a discard of its clusters), over 64 KiB clusters with
 * extended L2, 16-bit refcounts (the inline allocation path) and an L2 cache of 4 KiB slices. */
static struct wl_op ops_random_compressed[WL_RANDOM_MAX_OPS + 1] = {{WL_END, 0, 0, 0}};
/* With internal snapshots made, deleted and applied among the writes: clusters shared by up
 * to five snapshots, COW of shared clusters, COPIED flags set and cleared, freeing on delete
 * and apply. The prep snapshot's content is verified in every crash state. */
static struct wl_op ops_random_snapshots[WL_RANDOM_MAX_OPS + 1] = {{WL_END, 0, 0, 0}};
/* Under an enabled persistent bitmap, with lazy refcounts (the dirty bit, and refcounts
 * rebuilt on open after a crash). */
static struct wl_op ops_random_bitmap[WL_RANDOM_MAX_OPS + 1] = {{WL_END, 0, 0, 0}};

const struct workload wl_workloads[] = {
    {.name = "alloc_write", .create_opts = "cluster_size=4096", .size = "8M",
     .cluster_size = 4096, .ops = ops_alloc_write},
    {.name = "alloc_write_64k", .create_opts = "cluster_size=65536", .size = "2M",
     .cluster_size = 65536, .ops = ops_alloc_write_64k},
    /* Where the file system is in memory: partial writes into new clusters leave the rest of
     * each cluster a hole, or past the end of the file (io.c zero_cow_span), but not in a
     * reused cluster. */
    {.name = "alloc_write_mem", .create_opts = "cluster_size=65536", .size = "2M",
     .cluster_size = 65536, .ops = ops_alloc_write_mem, .memory_backed = true},
    {.name = "sparse_copy", .create_opts = "cluster_size=8192", .size = "28M",
     .cluster_size = 8192, .l2_cache_size = 16384, .prep_io = "write -P 0x5a 0 24k",
     .ops = ops_sparse_copy,
     .crash_aimed = true},
    {.name = "alloc_write_backing", .create_opts = "cluster_size=4096", .size = "8M",
     .cluster_size = 4096, .backing_opts = "cluster_size=65536", .backing_size = "8M",
     .backing_io = "write -P 0x11 0 3M;write -P 0x22 5M 1M", .ops = ops_backing_write},
    {.name = "extl2_write", .create_opts = "cluster_size=16384,extended_l2=on", .size = "8M",
     .cluster_size = 16384, .ops = ops_extl2_write},
    {.name = "extl2_write_backing", .create_opts = "cluster_size=16384,extended_l2=on",
     .size = "8M", .cluster_size = 16384, .backing_opts = "cluster_size=4096",
     .backing_size = "8M", .backing_io = "write -P 0x33 0 3M;write -P 0x44 5M 1M",
     .ops = ops_extl2_write},
    {.name = "zero_write", .create_opts = "cluster_size=4096", .size = "4M",
     .cluster_size = 4096, .prep_io = "write -P 0x55 0 2M", .ops = ops_zero_write},
    {.name = "zero_write_backing", .create_opts = "cluster_size=4096", .size = "4M",
     .cluster_size = 4096, .backing_opts = "cluster_size=4096", .backing_size = "4M",
     .backing_io = "write -P 0x66 0 4M", .prep_io = "write -P 0x77 0 1M",
     .ops = ops_zero_write},
    {.name = "discard", .create_opts = "cluster_size=4096", .size = "4M", .cluster_size = 4096,
     .prep_io = "write -P 0x88 0 3M", .ops = ops_discard},
    {.name = "refcount_block_growth", .create_opts = "cluster_size=512,refcount_bits=1",
     .size = "4M", .cluster_size = 512, .prep_io = "write -P 0x99 0 1800k",
     .ops = ops_refcount_growth},
    {.name = "refcount_table_growth", .create_opts = "cluster_size=512,refcount_bits=64",
     .size = "4M", .cluster_size = 512, .prep_io = "write -P 0xaa 0 1800k",
     .ops = ops_refcount_growth},
    {.name = "l1_growth", .create_opts = "cluster_size=512", .size = "64k",
     .cluster_size = 512, .ops = ops_l1_growth},
    {.name = "lazy_refcounts", .create_opts = "cluster_size=4096,lazy_refcounts=on",
     .size = "8M", .cluster_size = 4096, .prep_io = "write -P 0xbb 1M 1M",
     .ops = ops_lazy_refcounts},
    {.name = "resize", .create_opts = "cluster_size=4096", .size = "4M", .cluster_size = 4096,
     .prep_io = "write -P 0xcc 0 4M", .ops = ops_resize},
    {.name = "compressed", .create_opts = "cluster_size=4096", .size = "1M",
     .cluster_size = 4096, .ops = ops_compressed},
    {.name = "v2", .create_opts = "compat=0.10,cluster_size=4096", .size = "4M",
     .cluster_size = 4096, .prep_io = "write -P 0xdd 0 64k", .ops = ops_v2},
    {.name = "zero_alloc_rewrite", .create_opts = "cluster_size=65536", .size = "1M",
     .cluster_size = 65536, .ops = ops_zero_alloc_rewrite,
     .crash_aimed = true},
    {.name = "extl2_new_subcluster", .create_opts = "cluster_size=65536,extended_l2=on",
     .size = "1M", .cluster_size = 65536, .backing_size = "1M", .backing_fmt = "raw",
     .backing_io = "write -P 0xcc 0 1M", .ops = ops_extl2_new_subcluster,
     .crash_aimed = true},
    {.name = "extl2_keep_old_span", .create_opts = "cluster_size=16384,extended_l2=on",
     .size = "1M", .cluster_size = 16384,
     .prep_io = "write -P 0xa1 0 4k;write -P 0xa2 16k 16k;write -P 0xa3 40k 4k",
     .ops = ops_extl2_keep_old_span, .crash_aimed = true},
    {.name = "prealloc_metadata", .create_opts = "cluster_size=65536,preallocation=metadata",
     .size = "1M", .cluster_size = 65536, .ops = ops_prealloc_write,
     .crash_aimed = true},
    {.name = "prealloc_metadata_extl2_backing",
     .create_opts = "cluster_size=65536,extended_l2=on,preallocation=metadata", .size = "1M",
     .cluster_size = 65536, .backing_size = "1M", .backing_fmt = "raw",
     .backing_io = "write -P 0xc5 0 1M", .ops = ops_prealloc_write,
     .crash_aimed = true},
    {.name = "snapshot_shared", .create_opts = "cluster_size=4096", .size = "4M",
     .cluster_size = 4096, .prep_io = "write -P 0x5c 0 2M", .prep_cmd = "snapshot -c snap1",
     .snapshot = "snap1", .ops = ops_snapshot_shared,
     .crash_aimed = true},
    {.name = "snapshot_ops", .create_opts = "cluster_size=4096", .size = "1M",
     .cluster_size = 4096, .prep_io = "write -P 0x6d 0 768k;write -c -P 0x6e 768k 64k",
     .prep_cmd = "snapshot -c snap1", .snapshot = "snap1", .ops = ops_snapshot_ops,
     .crash_aimed = true},
    {.name = "snapshot_ops_v2", .create_opts = "compat=0.10,cluster_size=4096", .size = "1M",
     .cluster_size = 4096, .prep_io = "write -P 0x6d 0 768k;write -c -P 0x6e 768k 64k",
     .prep_cmd = "snapshot -c snap1", .snapshot = "snap1", .ops = ops_snapshot_ops,
     .crash_aimed = true, .copied_window = true},
    {.name = "snapshot_ops_extl2_rc64",
     .create_opts = "cluster_size=16384,extended_l2=on,refcount_bits=64",
     .size = "1M", .cluster_size = 16384,
     .prep_io = "write -P 0x6d 0 512k;write -P 0x6f 600k 3k",
     .prep_cmd = "snapshot -c snap1", .snapshot = "snap1", .ops = ops_snapshot_ops,
     .big = true},
    {.name = "data_file_raw", .create_opts = "cluster_size=65536", .size = "4M",
     .cluster_size = 65536, .data_file = true, .prep_io = "write -P 0x3d 0 1M",
     .ops = ops_data_file_raw,
     .crash_aimed = true},
    {.name = "shrink_drops_tables", .create_opts = "cluster_size=512", .size = "8M",
     .cluster_size = 512, .prep_io = "write -P 0x3c 0 64k", .ops = ops_shrink_drops_tables,
     .crash_aimed = true},
    {.name = "grow_over_backing", .create_opts = "cluster_size=65536", .size = "1M",
     .cluster_size = 65536, .backing_size = "2M", .backing_fmt = "raw",
     .backing_io = "write -P 0x99 0 2M", .ops = ops_grow_over_backing,
     .crash_aimed = true},
    {.name = "amend_refcount_bits", .create_opts = "cluster_size=4096", .size = "4M",
     .cluster_size = 4096, .prep_io = "write -P 0xa1 0 1M;write -c -P 0xa2 1M 64k",
     .ops = ops_amend_refcount_bits, .crash_aimed = true},
    {.name = "amend_downgrade", .create_opts = "cluster_size=65536", .size = "1M",
     .cluster_size = 65536,
     .prep_io = "write -P 0xa3 0 512k;write -z 64k 128k;write -z 512k 128k;write -z -u 256k 64k",
     .ops = ops_amend_downgrade, .crash_aimed = true},
    {.name = "amend_downgrade_backing", .create_opts = "cluster_size=65536", .size = "1M",
     .cluster_size = 65536, .backing_size = "1M", .backing_fmt = "raw",
     .backing_io = "write -P 0xa4 0 1M",
     .prep_io = "write -P 0xa5 0 256k;write -z 64k 64k;write -z 512k 128k",
     .ops = ops_amend_downgrade, .crash_aimed = true},
    {.name = "amend_downgrade_snapshot", .create_opts = "cluster_size=65536", .size = "1M",
     .cluster_size = 65536, .backing_size = "1M", .backing_fmt = "raw",
     .backing_io = "write -P 0xa4 0 1M",
     .prep_io = "write -P 0xa5 0 256k;write -z 64k 64k;write -z 512k 128k",
     .prep_cmd = "snapshot -c snap1", .snapshot = "snap1", .ops = ops_amend_downgrade,
     .crash_aimed = true, .big = true}, /* zero clusters in a table shared with snap1 */
    {.name = "compact", .create_opts = "cluster_size=512", .size = "64k", .cluster_size = 512,
     .prep_io = "write -P 0xa6 0 12k;write -P 0xa7 40k 12k;write -P 0xa8 30k 1k",
     .ops = ops_compact, .crash_aimed = true},
    {.name = "compact_snapshot", .create_opts = "cluster_size=512", .size = "64k",
     .cluster_size = 512, .prep_io = "write -P 0xb1 0 8k;write -P 0xb2 40k 4k;discard 0 4k",
     .prep_cmd = "snapshot -c snap1", .snapshot = "snap1", .bitmap = "b0",
     .ops = ops_compact_snapshot, .crash_aimed = true},
    {.name = "compact_snapshot_big", .create_opts = "cluster_size=512", .size = "64k",
     .cluster_size = 512, .prep_io = "write -P 0xb1 0 16k;write -P 0xb2 40k 4k;discard 0 12k",
     .prep_cmd = "snapshot -c snap1", .snapshot = "snap1", .bitmap = "b0",
     .ops = ops_compact_snapshot, .crash_aimed = true, .big = true},
    {.name = "compact_big", .create_opts = "cluster_size=4096", .size = "4M",
     .cluster_size = 4096, .prep_io = "write -P 0xa6 0 2M;write -P 0xa7 3M 1M;write -P 0xa8 2M 4k",
     .ops = ops_compact_big, .crash_aimed = true, .big = true},
    {.name = "bitmap", .create_opts = "cluster_size=4096", .size = "1M", .cluster_size = 4096,
     .prep_io = "write -P 0x5a 0 256k", .bitmap = "b0", .ops = ops_bitmap,
     .crash_aimed = true},
    {.name = "commit", .create_opts = "cluster_size=4096", .size = "1M",
     .cluster_size = 4096, .backing_opts = "cluster_size=4096", .backing_size = "1M",
     .backing_io = "write -P 0x21 0 1M",
     .prep_io = "write -P 0x31 0 64k;write -z 128k 64k;write -c -P 0x32 256k 4k;"
                "write -P 0x35 300k 10000;write -z 400k 8k",
     .ops = ops_commit},
    {.name = "commit_extl2_raw_backing", .create_opts = "cluster_size=65536,extended_l2=on",
     .size = "1M", .cluster_size = 65536, .backing_size = "512k", .backing_fmt = "raw",
     .backing_io = "write -P 0x22 0 512k",
     .prep_io = "write -P 0x33 4k 6k;write -z 192k 64k;write -P 0x34 600k 100k",
     .ops = ops_commit, .crash_aimed = true},
    {.name = "rebase", .create_opts = "cluster_size=4096", .size = "1M",
     .cluster_size = 4096, .backing_opts = "cluster_size=4096", .backing_size = "1M",
     .backing_io = "write -P 0x41 0 512k",
     .new_backing_io = "write -P 0x41 0 256k;write -P 0x42 768k 128k",
     .prep_io = "write -P 0x51 64k 64k;write -z 300k 8k", .ops = ops_rebase},
    {.name = "rebase_flatten", .create_opts = "cluster_size=65536,extended_l2=on",
     .size = "1M", .cluster_size = 65536, .backing_opts = "cluster_size=4096",
     .backing_size = "1M", .backing_io = "write -P 0x43 0 700k",
     .prep_io = "write -P 0x52 10k 3k", .ops = ops_rebase_flatten, .crash_aimed = true},
    {.name = "random", .create_opts = "cluster_size=4096,refcount_bits=4", .size = "16M",
     .cluster_size = 4096, .prep_io = "write -P 0xee 0 2M", .ops = ops_random, .big = true},
    {.name = "random_backing_extl2", .create_opts = "cluster_size=16384,extended_l2=on",
     .size = "16M", .cluster_size = 16384, .backing_opts = "cluster_size=4096",
     .backing_size = "16M", .backing_io = "write -P 0x12 0 8M",
     .ops = ops_random_backing, .big = true},
    {.name = "random_compressed_extl2", .create_opts = "cluster_size=65536,extended_l2=on",
     .size = "16M", .cluster_size = 65536, .l2_cache_size = 16384,
     .prep_io = "write -P 0xcd 0 3M;write -z 5M 1M", .ops = ops_random_compressed,
     .big = true},
    {.name = "random_snapshots", .create_opts = "cluster_size=4096", .size = "16M",
     .cluster_size = 4096, .prep_io = "write -P 0xa7 0 3M;write -c -P 0xa8 3M 256k",
     .prep_cmd = "snapshot -c snap1", .snapshot = "snap1", .ops = ops_random_snapshots,
     .big = true},
    {.name = "random_bitmap_lazy", .create_opts = "cluster_size=65536,lazy_refcounts=on",
     .size = "16M", .cluster_size = 65536, .prep_io = "write -P 0xb3 1M 4M", .bitmap = "b0",
     .ops = ops_random_bitmap, .big = true},
};

const size_t wl_nb_workloads = sizeof(wl_workloads) / sizeof(wl_workloads[0]);

/* A seeded mix of every operation over a disk of `disk` bytes. With `compressed_cluster`
 * (the image's cluster size), one draw in twenty becomes a compressed write of one or two
 * whole clusters, preceded by a discard of them (a compressed write needs unallocated
 * clusters): 4-8 of them in 120 operations. With `snapshots`, seven in a hundred (taken from
 * the zero writes) become internal snapshot operations: create "w<i>", delete one of those
 * alive (always when WL_RANDOM_MAX_SNAPSHOTS are), now and then apply the prep snapshot. 0 and
 * false leave the older workloads' sequences as they were. */
static void make_random_ops(struct wl_op *ops, size_t n, uint32_t seed, uint64_t disk,
                            uint64_t compressed_cluster, bool snapshots)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    uint64_t live[WL_RANDOM_MAX_SNAPSHOTS]; /* the snapshots made so far and not deleted */
    size_t nb_live = 0;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned r = (unsigned)(x % 100);
        uint64_t off = (x >> 8) % disk;
        uint64_t len = 1 + ((x >> 40) % (r < 50 ? 20000 : 200000));
        len = MIN(len, disk - off);
        if (snapshots && r >= 55 && r < 62) {
            /* Named after the op's index: "w<i>". Delete when full, or one time in three. */
            if (nb_live == WL_RANDOM_MAX_SNAPSHOTS || (nb_live && (x >> 20) % 3 == 0)) {
                size_t k = (size_t)((x >> 24) % nb_live);
                ops[i] = (struct wl_op){WL_SNAP_DELETE, live[k], 0, 0};
                live[k] = live[--nb_live];
            } else if (r == 61) {
                ops[i] = (struct wl_op){WL_SNAP_APPLY, 0, 0, 0}; /* back to snap1 */
            } else {
                ops[i] = (struct wl_op){WL_SNAP_CREATE, i, 0, 0};
                live[nb_live++] = i;
            }
        } else if (compressed_cluster && r >= 50 && r < 55 && i + 1 < n) {
            uint64_t at = ROUND_DOWN(off, compressed_cluster);
            uint64_t clen = MIN(((x >> 40) & 1) + 1, (disk - at) / compressed_cluster);
            ops[i++] = (struct wl_op){WL_DISCARD, at, clen * compressed_cluster, 0};
            ops[i] = (struct wl_op){WL_COMPRESSED, at, clen * compressed_cluster, 0};
        } else if (r < 55)
            ops[i] = (struct wl_op){WL_WRITE, off, len, 0};
        else if (r < 65)
            ops[i] = (struct wl_op){WL_ZERO, off, len, (x >> 3) & 1 ? QCOW2_ZERO_MAY_UNMAP : 0};
        else if (r < 75)
            ops[i] = (struct wl_op){WL_DISCARD, off, len, 0};
        else if (r < 88)
            ops[i] = (struct wl_op){WL_FLUSH, 0, 0, 0};
        else if (r < 92)
            ops[i] = (struct wl_op){WL_WRITE_FUA, off, MIN(len, 8192), 0};
        else
            ops[i] = (struct wl_op){WL_WRITE, ROUND_DOWN(off, 512), 512, 0};
    }
    ops[n] = (struct wl_op){WL_END, 0, 0, 0};
}

void wl_make_random(uint32_t seed, size_t nb_ops)
{
    nb_ops = MIN(nb_ops, WL_RANDOM_MAX_OPS);
    make_random_ops(ops_random, nb_ops, seed, 16 * MB, 0, false);
    make_random_ops(ops_random_backing, nb_ops, seed + 1, 16 * MB, 0, false);
    make_random_ops(ops_random_compressed, nb_ops, seed + 2, 16 * MB, 64 * KB, false);
    make_random_ops(ops_random_snapshots, nb_ops, seed + 3, 16 * MB, 0, true);
    make_random_ops(ops_random_bitmap, nb_ops, seed + 4, 16 * MB, 0, false);
}

/* ------------------------------------------------------------------------------------------ */
/* Operations. */

size_t wl_nb_ops(const struct workload *w)
{
    size_t n = 0;
    while (w->ops[n].kind != WL_END)
        n++;
    return n;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

void wl_fill(const struct workload *w, size_t i, uint8_t *buf)
{
    const struct wl_op *op = &w->ops[i];
    for (uint64_t k = 0; k < op->len; k++) {
        uint64_t o = op->offset + k;
        if (op->kind == WL_COMPRESSED) /* runs of 64 equal bytes: compresses well */
            buf[k] = (uint8_t)(mix((i + 1) * 1000003 + o / 64) | 1);
        else
            buf[k] = (uint8_t)(mix(((i + 1) << 40) ^ (o >> 3)) >> ((o & 7) * 8));
    }
}

static int exec_snapshot_op(struct qcow2_image *img, const struct workload *w,
                            const struct wl_op *op)
{
    char name[32];
    snprintf(name, sizeof(name), "w%llu", (unsigned long long)op->offset);
    if (op->kind == WL_SNAP_CREATE) {
        struct qcow2_snapshot_opts o = QCOW2_SNAPSHOT_OPTS_INIT;
        o.name = name;
        return qcow2_snapshot_create(img, &o);
    }
    int i = qcow2_snapshot_find(img, NULL, op->kind == WL_SNAP_APPLY ? w->snapshot : name);
    if (i < 0)
        return i;
    return op->kind == WL_SNAP_APPLY ? qcow2_snapshot_apply(img, (unsigned)i)
                                     : qcow2_snapshot_delete(img, (unsigned)i);
}

/* The content of w->snapshot, as wl_prepare saved it (read once per workload). */
static const struct tf_buf *snapshot_content(const struct workload *w)
{
    static struct tf_buf buf;
    static char loaded[256]; /* by name: a test may build workloads on its stack */
    if (buf.data && strcmp(loaded, w->name) == 0)
        return &buf;
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s.snapshot.raw", g_dir, w->name);
    FILE *f = fopen(path, "rb");
    if (!f)
        abort();
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf.data = realloc(buf.data, n > 0 ? (size_t)n : 1);
    if (!buf.data || (n > 0 && fread(buf.data, 1, (size_t)n, f) != (size_t)n))
        abort();
    buf.size = (uint64_t)n;
    fclose(f);
    snprintf(loaded, sizeof(loaded), "%s", w->name);
    return &buf;
}

int wl_exec(struct qcow2_image *img, const struct workload *w, size_t i)
{
    const struct wl_op *op = &w->ops[i];
    uint8_t *buf = NULL;
    int ret = 0;
    switch (op->kind) {
    case WL_WRITE:
    case WL_WRITE_FUA:
    case WL_COMPRESSED:
        buf = malloc(op->len);
        if (!buf)
            return -ENOMEM;
        wl_fill(w, i, buf);
        if (op->kind == WL_COMPRESSED)
            ret = qcow2_pwrite_compressed(img, buf, op->len, op->offset);
        else
            ret = qcow2_pwrite(img, buf, op->len, op->offset,
                               op->kind == WL_WRITE_FUA ? QCOW2_WRITE_FUA : 0);
        free(buf);
        return ret;
    case WL_ZERO:
        return qcow2_pwrite_zeroes(img, op->offset, op->len, op->flags);
    case WL_DISCARD:
        return qcow2_discard(img, op->offset, op->len);
    case WL_FLUSH:
        return qcow2_flush(img);
    case WL_TRUNCATE:
        return qcow2_truncate(img, op->offset, QCOW2_PREALLOC_OFF,
                              op->offset < qcow2_get_size(img) ? QCOW2_TRUNCATE_SHRINK : 0);
    case WL_AMEND_REFCOUNT_BITS:
    case WL_AMEND_DOWNGRADE: {
        struct qcow2_create_opts o = QCOW2_CREATE_OPTS_INIT;
        o.refcount_bits = (unsigned)op->len;
        o.version = 2;
        return qcow2_amend(img, &o,
                           op->kind == WL_AMEND_DOWNGRADE ? QCOW2_AMEND_COMPAT
                                                          : QCOW2_AMEND_REFCOUNT_BITS,
                           NULL, NULL);
    }
    case WL_COMPACT:
        return qcow2_compact(img, NULL, NULL);
    case WL_SNAP_CREATE:
    case WL_SNAP_DELETE:
    case WL_SNAP_APPLY:
        return exec_snapshot_op(img, w, op);
    case WL_COMMIT:
        return qcow2_commit(img, NULL);
    case WL_REBASE: {
        char name[512];
        snprintf(name, sizeof(name), "%s.new.qcow2", w->name);
        struct qcow2_rebase_opts o = QCOW2_REBASE_OPTS_INIT;
        o.backing_file = op->flags & WL_REBASE_NONE ? "" : name;
        o.backing_format = QCOW2_FORMAT_QCOW2;
        return qcow2_rebase(img, &o);
    }
    case WL_END:
        break;
    }
    return -EINVAL;
}

/* The guest size before op `i`, starting from `start_size`. */
static uint64_t size_before(const struct workload *w, size_t i, uint64_t start_size)
{
    uint64_t s = start_size;
    for (size_t k = 0; k < i; k++)
        if (w->ops[k].kind == WL_TRUNCATE)
            s = w->ops[k].offset;
    return s;
}

/* The range op `i` changes and whether it writes zeros (else wl_fill data). */
static void op_effect(const struct workload *w, size_t i, uint64_t size, uint64_t *a,
                      uint64_t *b, bool *zero)
{
    const struct wl_op *op = &w->ops[i];
    uint64_t end = op->offset + op->len;
    *a = op->offset;
    *b = end;
    *zero = op->kind == WL_ZERO || op->kind == WL_DISCARD || op->kind == WL_TRUNCATE;
    switch (op->kind) {
    case WL_DISCARD:
        *a = ROUND_UP(op->offset, w->cluster_size);
        *b = end == size ? end : ROUND_DOWN(end, w->cluster_size);
        if (*a > *b)
            *a = *b;
        break;
    case WL_TRUNCATE: /* what lies between the old and the new end reads zeros afterwards */
        *a = MIN(size, op->offset);
        *b = MAX(size, op->offset);
        break;
    case WL_FLUSH:
    case WL_AMEND_REFCOUNT_BITS:
    case WL_AMEND_DOWNGRADE:
    case WL_COMPACT:
    case WL_SNAP_CREATE:
    case WL_SNAP_DELETE:
    case WL_COMMIT: /* the guest view stays */
    case WL_REBASE:
        *a = *b = 0;
        break;
    case WL_SNAP_APPLY: /* the whole disk (its values: the snapshot's content) */
        *a = 0;
        *b = size;
        break;
    default:
        break;
    }
}

void wl_apply(const struct workload *w, size_t i, struct tf_buf *guest)
{
    const struct wl_op *op = &w->ops[i];
    uint64_t a, b;
    bool zero;
    op_effect(w, i, guest->size, &a, &b, &zero);
    if (op->kind == WL_TRUNCATE) {
        struct tf_event e = {.kind = TF_TRUNCATE, .offset = op->offset};
        tf_buf_apply(guest, &e, NULL, NULL);
        return;
    }
    if (op->kind == WL_SNAP_APPLY) {
        tf_buf_copy(guest, snapshot_content(w));
        return;
    }
    if (a >= b)
        return;
    assert(b <= guest->size);
    if (zero) {
        memset(guest->data + a, 0, b - a);
    } else {
        wl_fill(w, i, guest->data + a);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Verdict. */

int wl_qemu_check(const char *path)
{
    int st = wl_run_cmd("qemu-img check -q '%s' >/dev/null 2>&1", path);
    if (st != 0 && st != 3)
        wl_run_cmd("qemu-img check '%s' 1>&2", path);
    return st;
}

struct report_buf {
    char text[1024];
    size_t len;
};

/* Every message of a check, one a line (for wl_copied_harmless). */
struct full_report {
    char text[65536];
    size_t len;
};

static void collect_all(void *opaque, const char *msg)
{
    struct full_report *r = opaque;
    if (r->len + strlen(msg) + 2 < sizeof(r->text))
        r->len += (size_t)snprintf(r->text + r->len, sizeof(r->text) - r->len, "%s\n", msg);
}

/* Is host cluster `cluster` leaked with exactly one real reference in `report`? */
static bool leaked_once(const char *report, unsigned long long cluster)
{
    for (const char *l = report; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        unsigned long long c, rc, refs;
        if (sscanf(l, "Leaked cluster %llu refcount=%llu reference=%llu", &c, &rc, &refs) == 3 &&
            c == cluster && refs == 1)
            return true;
    }
    return false;
}

int wl_copied_harmless(const char *report, uint32_t cluster_size, char *why, size_t whylen)
{
    int harmless = 0;
    for (const char *l = report; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *end = strchr(l, '\n');
        int len = end ? (int)(end - l) : (int)strlen(l);
        char line[512];
        snprintf(line, sizeof(line), "%.*s", len, l);
        unsigned long long entry, rc;
        int index;
        bool parsed =
            sscanf(l, "ERROR OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu", &entry,
                   &rc) == 2 ||
            sscanf(l, "ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%llx refcount=%llu",
                   &index, &entry, &rc) == 3;
        if (!parsed) {
            /* Every error of both checks is one "ERROR ..." line (summaries are not). */
            if (strncmp(line, "ERROR", 5) == 0) {
                snprintf(why, whylen, "check: %s", line);
                return -1;
            }
            continue;
        }
        bool copied = entry & (1ull << 63);
        unsigned long long cluster = (entry & L2E_OFFSET_MASK) / cluster_size;
        if (copied ? !leaked_once(report, cluster) : rc != 1) {
            snprintf(why, whylen, "check: %s (%s)", line,
                     copied ? "COPIED on a cluster with more than one reference"
                            : "COPIED clear, refcount not 1");
            return -1;
        }
        harmless++;
    }
    return harmless;
}

static void collect_report(void *opaque, const char *msg)
{
    struct report_buf *r = opaque;
    if (strncmp(msg, "Leaked", 6) == 0 || r->len + 8 >= sizeof(r->text))
        return;
    r->len += (size_t)snprintf(r->text + r->len, sizeof(r->text) - r->len, "%s%s",
                               r->len ? " | " : "", msg);
    if (r->len >= sizeof(r->text))
        r->len = sizeof(r->text) - 1;
}

/* What an uncertain op may have left in its range: zeros, or its fill pattern. */
struct maybe_op {
    uint64_t a, b; /* guest range */
    uint64_t fill_offset;
    uint8_t *val;         /* its fill pattern (owned), or NULL */
    const uint8_t *ref;   /* or content it may show (not owned: a snapshot's), or NULL: zeros */
};

/* The expectation against which guest bytes are judged, one piece at a time. */
struct judge {
    const struct wl_expect *ex;
    struct maybe_op *ops;
    size_t nb_ops;
};

static void judge_init(struct judge *j, const struct workload *w, const struct wl_expect *ex)
{
    j->ex = ex;
    j->nb_ops = 0;
    j->ops = calloc(ex->nb_uncertain ? ex->nb_uncertain : 1, sizeof(*j->ops));
    if (!j->ops)
        abort();
    for (size_t k = 0; k < ex->nb_uncertain; k++) {
        size_t opi = ex->uncertain[k];
        struct maybe_op *m = &j->ops[j->nb_ops];
        bool zero;
        op_effect(w, opi, size_before(w, opi, ex->start_size), &m->a, &m->b, &zero);
        if (m->a >= m->b)
            continue;
        m->fill_offset = w->ops[opi].offset;
        m->val = NULL;
        m->ref = NULL;
        if (w->ops[opi].kind == WL_SNAP_APPLY) {
            /* the whole disk may read as the snapshot */
            const struct tf_buf *sn = snapshot_content(w);
            m->a = 0;
            m->b = MIN(m->b, sn->size);
            m->fill_offset = 0;
            m->ref = sn->data;
            j->nb_ops++;
            continue;
        }
        if (!zero) {
            m->val = malloc(w->ops[opi].len ? w->ops[opi].len : 1);
            if (!m->val)
                abort();
            wl_fill(w, opi, m->val);
        }
        j->nb_ops++;
    }
}

static void judge_free(struct judge *j)
{
    for (size_t k = 0; k < j->nb_ops; k++)
        free(j->ops[k].val);
    free(j->ops);
}

/* May guest byte `i` read `v`: the durable content, the failed operation's value, or a value
 * an uncertain op gives it? */
static bool byte_ok(const struct judge *j, uint64_t i, uint8_t v)
{
    const struct tf_buf *d = j->ex->durable, *alt = j->ex->alternative;
    if (i < d->size && d->data[i] == v)
        return true;
    if (alt && i < alt->size && alt->data[i] == v)
        return true;
    for (size_t k = 0; k < j->nb_ops; k++) {
        const struct maybe_op *m = &j->ops[k];
        if (i < m->a || i >= m->b)
            continue;
        uint8_t want = m->val ? m->val[i - m->fill_offset] : m->ref ? m->ref[i] : 0;
        if (v == want)
            return true;
    }
    return false;
}

static bool size_ok(const struct workload *w, const struct wl_expect *ex, uint64_t got_size)
{
    const struct tf_buf *d = ex->durable, *alt = ex->alternative;
    bool ok = got_size == d->size || (alt && got_size == alt->size);
    for (size_t k = 0; k < ex->nb_uncertain && !ok; k++) {
        const struct wl_op *op = &w->ops[ex->uncertain[k]];
        ok = op->kind == WL_TRUNCATE && op->offset == got_size;
    }
    return ok;
}

/* Judge `n` guest bytes read at `off`: whole 4 KiB chunks equal to the durable content pass
 * at memcmp speed; byte by byte only where they differ. Describes the first wrong run (within
 * the piece) in `why`. */
static int judge_piece(const struct judge *j, const uint8_t *got, uint64_t off, uint64_t n,
                       char *why, size_t whylen)
{
    const struct tf_buf *d = j->ex->durable;
    for (uint64_t c = 0; c < n; c += 4096) {
        uint64_t len = MIN(4096, n - c);
        if (off + c + len <= d->size && memcmp(got + c, d->data + off + c, len) == 0)
            continue;
        for (uint64_t i = c; i < c + len; i++) {
            if (byte_ok(j, off + i, got[i]))
                continue;
            uint64_t e = i;
            while (e < n && !byte_ok(j, off + e, got[e]))
                e++;
            uint64_t g = off + i;
            snprintf(why, whylen,
                     "guest bytes [0x%llx, 0x%llx) are wrong: 0x%02x at 0x%llx, expected "
                     "0x%02x%s",
                     (unsigned long long)g, (unsigned long long)(off + e), got[i],
                     (unsigned long long)g, g < d->size ? d->data[g] : 0,
                     j->ex->alternative && g < j->ex->alternative->size
                         ? " or the failed operation's value"
                     : j->ex->nb_uncertain ? " or the value of an unflushed operation"
                                           : "");
            return -1;
        }
    }
    return 0;
}

/* Reads the disk in pieces through one buffer: a whole-disk buffer per verdict (thousands of
 * verdicts per test) cost more in page faults than the reads and compares themselves. */
int wl_check_content(struct qcow2_image *img, const struct workload *w,
                     const struct wl_expect *ex, char *why, size_t whylen)
{
    const uint64_t piece = 1u << 20;
    uint64_t got_size = qcow2_get_size(img);
    if (!size_ok(w, ex, got_size)) {
        snprintf(why, whylen, "virtual size %llu, expected %llu", (unsigned long long)got_size,
                 (unsigned long long)ex->durable->size);
        return -1;
    }
    uint8_t *got = malloc(piece);
    if (!got)
        abort();
    struct judge j;
    judge_init(&j, w, ex);
    int ret = 0;
    for (uint64_t off = 0; off < got_size && ret == 0;) {
        uint64_t n = MIN(got_size - off, piece);
        ret = qcow2_pread(img, got, n, off);
        if (ret < 0)
            snprintf(why, whylen, "read failed: %s", qcow2_error(img));
        else
            ret = judge_piece(&j, got, off, n, why, whylen);
        off += n;
    }
    judge_free(&j);
    free(got);
    return ret < 0 ? -1 : 0;
}

/* A consistent bitmap w->bitmap must be dirty wherever the guest reads otherwise than at the
 * start: "never stale and trusted". An inconsistent (in use) one is what a crash leaves. */
static int check_bitmap(struct qcow2_image *img, const struct workload *w,
                        const struct tf_buf *base, char *why, size_t whylen)
{
    struct qcow2_bitmap_info bi = QCOW2_BITMAP_INFO_INIT;
    int n = qcow2_bitmap_count(img), i;
    for (i = 0; i < n; i++)
        if (qcow2_bitmap_get_info(img, (unsigned)i, &bi) == 0 && strcmp(bi.name, w->bitmap) == 0)
            break;
    if (i == n) {
        /* Fine only when all bitmaps are disowned (autoclear bit clear): inconsistent. */
        struct qcow2_info info = QCOW2_INFO_INIT;
        if (qcow2_get_info(img, &info) == 0 && info.bitmaps_inconsistent)
            return 0;
        snprintf(why, whylen, "bitmap %s is gone", w->bitmap);
        return -1;
    }
    if (bi.in_use)
        return 0;
    uint64_t size = MIN(qcow2_get_size(img), base->size);
    uint8_t buf[512];
    for (uint64_t off = 0; off + sizeof(buf) <= size; off += sizeof(buf)) {
        uint64_t len;
        if (qcow2_pread(img, buf, sizeof(buf), off) < 0) {
            snprintf(why, whylen, "read failed: %s", qcow2_error(img));
            return -1;
        }
        if (memcmp(buf, base->data + off, sizeof(buf)) != 0 &&
            qcow2_bitmap_status(img, w->bitmap, off, sizeof(buf), &len) != 1) {
            snprintf(why, whylen, "bitmap %s is consistent but clean at 0x%llx, which was "
                     "written", w->bitmap, (unsigned long long)off);
            return -1;
        }
    }
    return 0;
}

/* `qemu-img check` of `path` for a w->copied_window workload: its exit status, 0 for
 * corruptions that are all harmless COPIED flags, -1 (reason in `why`) for others. */
static int qemu_check_copied(const char *path, const struct workload *w, char *why,
                             size_t whylen)
{
    char cmd[8400];
    snprintf(cmd, sizeof(cmd), "qemu-img check '%s' 2>&1", path);
    struct full_report *out = calloc(1, sizeof(*out));
    fflush(stdout);
    FILE *f = out ? popen(cmd, "r") : NULL;
    if (!f) {
        free(out);
        snprintf(why, whylen, "cannot run qemu-img check");
        return -1;
    }
    out->len = fread(out->text, 1, sizeof(out->text) - 1, f);
    out->text[out->len] = '\0';
    int st = pclose(f);
    st = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (st == 2) {
        int harmless = wl_copied_harmless(out->text, w->cluster_size, why, whylen);
        const char *total = strstr(out->text, " errors were found on the image");
        while (total && total > out->text && total[-1] >= '0' && total[-1] <= '9')
            total--;
        st = harmless < 0 ? -1 : 0;
        if (harmless >= 0 && (!total || atoi(total) != harmless)) {
            snprintf(why, whylen, "qemu-img check: more errors than %d harmless COPIED flags",
                     harmless);
            st = -1;
        }
    }
    free(out);
    return st;
}

/* Does w->snapshot in `path` read otherwise than in the starting image? (qemu-img reads it:
 * the library has no API for snapshots.) It is applied on a copy, which brings back its own
 * disk size: `convert -l` would read it at the image's current size, which a shrink changed. */
static bool snapshot_changed(const char *path, const struct workload *w, char *why,
                             size_t whylen)
{
    /* qemu-img refuses to apply a snapshot with bitmaps: then read it in place (no shrink
     * there). */
    int st = w->bitmap ? wl_run_cmd("qemu-img convert -f qcow2 -l snapshot.name=%s -O raw "
                                    "'%s' '%s.snap' >/dev/null 2>&1", w->snapshot, path, path)
                       : wl_run_cmd("cp '%s' '%s.applied' && qemu-img snapshot -a %s "
                                    "'%s.applied' && qemu-img convert -f qcow2 -O raw "
                                    "'%s.applied' '%s.snap' >/dev/null 2>&1",
                                    path, path, w->snapshot, path, path, path);
    if (st != 0) {
        snprintf(why, whylen, "snapshot %s cannot be read by qemu-img convert", w->snapshot);
        return true;
    }
    if (wl_run_cmd("cmp -s '%s.snap' '%s/%s.snapshot.raw'", path, g_dir, w->name) != 0) {
        snprintf(why, whylen, "snapshot %s reads otherwise than before the workload",
                 w->snapshot);
        return true;
    }
    return false;
}

static bool env_set(const char *name)
{
    const char *e = getenv(name);
    return e && *e && strcmp(e, "0") != 0;
}

/* QCOW2_TEST_NO_QEMU_CHECK=1 (make check-asan): the states are verified by our own check and
 * by content, not by qemu-img. The sanitizers look for memory errors on our paths; the normal
 * tree runs the same states past qemu-img check, which is where nearly all the time goes. */
bool wl_qemu_checks_wanted(void)
{
    return !env_set("QCOW2_TEST_NO_QEMU_CHECK");
}

/* A qemu-img process costs ~35 ms of CPU to start, and test_crash verified 2220 distinct states
 * (nearly all of its 177 s under make check). States differ in a write or two: a write-order
 * bug shows in many of them, so one in three still meets it; make stress checks them all. */
bool wl_qemu_check_due(uint64_t h)
{
    if (!wl_qemu_checks_wanted())
        return false;
    if (env_set("CRASH_FULL") || env_set("IOERROR_FULL") || env_set("QCOW2_TEST_FULL"))
        return true;
    const char *e = getenv("QCOW2_QEMU_CHECK_EVERY");
    unsigned long every = e && *e ? strtoul(e, NULL, 10) : 3;
    if (every <= 1)
        return true;
    h ^= h >> 33; /* the low bits of the content hash alone may be poorly mixed */
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h % every == 0;
}

int wl_verify(const char *path, const struct workload *w, const struct wl_expect *ex,
              bool qemu_check, char *why, size_t whylen)
{
    qemu_check = qemu_check && wl_qemu_checks_wanted();
    char err[QCOW2_ERROR_MAX];
    struct qcow2_image *img;
    int ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    if (ret < 0) {
        snprintf(why, whylen, "open failed: %s", err);
        return -1;
    }
    if (wl_check_content(img, w, ex, why, whylen) < 0)
        goto fail;
    if (w->bitmap && ex->base && check_bitmap(img, w, ex->base, why, whylen) < 0)
        goto fail;
    struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
    struct report_buf rep = {.len = 0};
    rep.text[0] = '\0';
    struct full_report *all = w->copied_window ? calloc(1, sizeof(*all)) : NULL;
    if (w->copied_window && !all) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    ret = qcow2_check(img, 0, &res, all ? collect_all : collect_report,
                      all ? (void *)all : (void *)&rep);
    if (all && ret == 0 && !res.check_errors && res.corruptions) {
        int harmless = wl_copied_harmless(all->text, w->cluster_size, why, whylen);
        if (harmless >= 0 && harmless != res.corruptions)
            snprintf(why, whylen, "qcow2_check: %lld corruptions, %d harmless COPIED flags: %s",
                     (long long)res.corruptions, harmless, all->text);
        if (harmless != res.corruptions) {
            free(all);
            goto fail;
        }
    }
    free(all);
    if (ret < 0 || res.check_errors || (res.corruptions && !w->copied_window)) {
        snprintf(why, whylen, "qcow2_check: ret %d, %lld corruptions, %lld check errors: %s",
                 ret, (long long)res.corruptions, (long long)res.check_errors, rep.text);
        goto fail;
    }
    ret = qcow2_close(img);
    img = NULL;
    if (ret < 0) {
        snprintf(why, whylen, "close failed: %s", strerror(-ret));
        return -1;
    }
    int st = !qemu_check ? 0
             : w->copied_window ? qemu_check_copied(path, w, why, whylen)
                                : wl_qemu_check(path);
    if (st < 0)
        return -1;
    if (st != 0 && st != 3) {
        snprintf(why, whylen, "qemu-img check exit status %d", st);
        return -1;
    }
    if (qemu_check && w->snapshot && snapshot_changed(path, w, why, whylen))
        return -1;
    return 0;
fail:
    if (img)
        qcow2_close(img);
    return -1;
}
