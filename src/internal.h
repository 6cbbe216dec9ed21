/* internal.h - the in-memory image and the interfaces between the library's layers.
 * Layers, bottom up: each file may call only the files listed before it (tests/interop/
 * layers.sh checks this from the object files' symbols):
 *   error.c         error messages (the image's last error, a caller's buffer)
 *   abi.c           the caller's struct versions: struct_size checks and copies
 *   file.c          host file I/O (the only place that touches a file descriptor)
 *   header.c        header and extension parse/serialize, the feature table (pure, no I/O)
 *   header_write.c  header updates on disk, corrupt/dirty bits, the L1/refcount table switches
 *   overlap.c       does a host range touch metadata? (in-memory tables only)
 *   cache.c         L2-slice and refcount-block caches over file.c
 *   refcount.c      refcounts and host cluster allocation
 *   cluster.c       guest->host mapping, L2 meta records, L2 linking
 *   compress.c      zlib / zstd cluster (de)compression (pure)
 *   bitmap.c        persistent dirty bitmaps: load, mark, store, the bitmap API
 *   io.c            the data path: split requests, read/write/zero/discard, block status
 *   snapshot.c      internal snapshots: the snapshot table, create/apply/delete, views
 *   check.c         consistency check and repair
 *   image.c         open/close, backing chain, feature gating, info
 *   create.c        creating images (opens them through image.c to preallocate)
 *   compare.c       comparing and copying whole images through the public I/O calls
 *   measure.c       the size a new image needs (qemu-img measure)
 *   compact.c       moving clusters down and truncating the file (qcow2_compact)
 *   amend.c         changing an image's options in place (qcow2_amend)
 *   convert.c       copying one image into another (qemu-img convert's engine), over the
 *                   public calls of io.c and image.c
 *   chain.c         whole-chain operations: commit, rebase, changing the backing file
 */
#ifndef QCOW2_INTERNAL_H
#define QCOW2_INTERNAL_H

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "format.h"
#include "qcow2.h"

#define QCOW2_DEFAULT_CHAIN_DEPTH 16
#define L1_PENDING_BLOCK 4096u /* granularity of the L1 writes that link new L2 tables */
#define QCOW2_UNTRUSTED_CHAIN_DEPTH 8
#define QCOW2_DEFAULT_L2_CACHE_MAX (32u * 1024 * 1024)
#define QCOW2_REFCOUNT_CACHE_MIN_ENTRIES 4

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define ROUND_UP(n, d) (DIV_ROUND_UP(n, d) * (d))
#define ROUND_DOWN(n, d) ((n) / (d) * (d))
#define IS_POWER_OF_2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)
/* qsort/bsearch order of uint64_t values (host offsets). */
static inline int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The same for a power of two `p` (cluster, subcluster and slice sizes): a mask, not the
 * 64-bit division the general forms compile to, which costs tens of cycles per request. */
static inline uint64_t align_down_pow2(uint64_t n, uint64_t p)
{
    return n & ~(p - 1);
}
static inline uint64_t align_up_pow2(uint64_t n, uint64_t p)
{
    return (n + p - 1) & ~(p - 1);
}

/* True when all `n` bytes at `p` are zero: the first bytes, then the buffer compared with
 * itself shifted (memcmp is vectorised; a byte loop is not). */
static inline bool buffer_is_zero(const uint8_t *p, size_t n)
{
    size_t head = MIN(n, 16);
    for (size_t i = 0; i < head; i++)
        if (p[i])
            return false;
    return n <= 16 || memcmp(p, p + 16, n - 16) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* file.c: the host file. A backend is a table of operations so that tests can record writes,
 * drop them (crash simulation) or fail them (I/O errors) behind the same interface. Every
 * operation transfers the whole range or returns -errno: short transfers never escape. Reads
 * past the end of the file return zeros, as a block device layer would. */

struct qcow2_file_ops {
    int (*pread)(void *ctx, void *buf, size_t count, uint64_t offset);
    int (*pwritev)(void *ctx, const struct iovec *iov, int iovcnt, uint64_t offset);
    /* One buffer: what pwritev does with one iovec, cheaper. Optional (NULL: pwritev). */
    int (*pwrite)(void *ctx, const void *buf, size_t count, uint64_t offset);
    int (*flush)(void *ctx);
    int64_t (*size)(void *ctx);
    int (*truncate)(void *ctx, uint64_t size);
    /* Make the range read as zeros without writing data (fallocate), leaving it allocated
     * (stored, not a hole) and extending the file when it ends past it; -ENOTSUP if it
     * cannot. */
    int (*zero)(void *ctx, uint64_t offset, uint64_t count);
    /* Allocate the range without changing what it reads (fallocate mode 0), extending the
     * file when it ends past it; -ENOTSUP if it cannot. Optional (NULL: zero is used). */
    int (*allocate)(void *ctx, uint64_t offset, uint64_t count);
    /* Release the range's storage (punch a hole); contents afterwards are zeros. May fail. */
    int (*discard)(void *ctx, uint64_t offset, uint64_t count);
    /* Host allocation status: sets *data false when [offset, offset+*count) is a hole.
     * May shorten *count. Optional (NULL = all data). */
    int (*status)(void *ctx, uint64_t offset, uint64_t *count, bool *data);
    int64_t (*allocated_bytes)(void *ctx);
    void (*close)(void *ctx);
};

struct qcow2_file {
    const struct qcow2_file_ops *ops;
    void *ctx;
    char *path;
    bool read_only;
    uint64_t written_end; /* highest end of any write through this handle (atomic) */
    int64_t known_size;   /* file size as of our last fstat/write/truncate; -1 unknown */
    uint64_t flush_begun; /* flushes begun (atomic): see file_sync_point() */
    uint64_t flush_done;  /* highest numbered flush that succeeded (atomic) */
    bool has_identity;    /* dev/ino of the open file are known (the POSIX backend) */
    dev_t dev;
    ino_t ino;
    /* On a file system in memory (tmpfs, ramfs): allocating a range costs RAM and buys no
     * contiguity, so file_allocate_zeroed() leaves a hole there. */
    bool memory_backed;
};

int file_open(const char *path, bool read_only, bool create, struct qcow2_file **out,
              char *err, size_t errlen);

#define FILE_READ_ONLY 0x1u
#define FILE_CREATE 0x2u
/* Refuse anything but a regular file (devices, FIFOs, sockets): looked at before opening,
 * opened O_NONBLOCK (a FIFO cannot block the open) and checked again on the descriptor. */
#define FILE_REGULAR_ONLY 0x4u
/* file_open_beneath: resolve and check the name only; open nothing for I/O (*out = NULL). */
#define FILE_PATH_ONLY 0x8u
/* file_open_beneath: take the fallback even where openat2 exists (tests). */
#define FILE_NO_OPENAT2 0x10u
int file_open_flags(const char *path, unsigned flags, struct qcow2_file **out, char *err,
                    size_t errlen);
/* Open `name`, relative, beneath the directory `dir` without ever leaving it: openat2 with
 * RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS, or where that is missing a walk that opens each
 * component with O_NOFOLLOW (".." only back down the walk). Always FILE_REGULAR_ONLY. An
 * escape is -EPERM with a message naming `name` and `dir`. The handle's path is dir/name. */
int file_open_beneath(const char *dir, const char *name, unsigned flags,
                      struct qcow2_file **out, char *err, size_t errlen);
struct qcow2_file *file_new(const struct qcow2_file_ops *ops, void *ctx, const char *path,
                            bool read_only);
void file_close(struct qcow2_file *f);
int file_pread(struct qcow2_file *f, void *buf, size_t count, uint64_t offset);
int file_pwrite(struct qcow2_file *f, const void *buf, size_t count, uint64_t offset);
int file_pwritev(struct qcow2_file *f, const struct iovec *iov, int iovcnt, uint64_t offset);
int file_flush(struct qcow2_file *f);
/* Durability points. file_sync_point() names "every write to `f` completed so far": those
 * writes are durable once file_is_synced(f, point), which a successful file_flush() begun
 * after the call makes true, whichever thread issues it. file_sync_to() flushes only when no
 * such flush has completed yet. Safe without any lock. */
static inline uint64_t file_sync_point(struct qcow2_file *f)
{
    /* A flush numbered above the ones begun so far begins after this call. (Inline: every
     * allocating write asks once.) */
    return __atomic_load_n(&f->flush_begun, __ATOMIC_SEQ_CST) + 1;
}
bool file_is_synced(struct qcow2_file *f, uint64_t point);
int file_sync_to(struct qcow2_file *f, uint64_t point);
int64_t file_size(struct qcow2_file *f);
/* The file size without a system call: what file_size() said last, grown by our own writes
 * and truncates (nobody else writes an open image). For validating offsets on hot paths. */
int64_t file_size_cached(struct qcow2_file *f);
int file_truncate(struct qcow2_file *f, uint64_t size);
int file_zero(struct qcow2_file *f, uint64_t offset, uint64_t count);
/* file_zero() for a range the caller knows reads as zeros already (never written since it
 * lay past the end of the file): on a disk file system it is only allocated (one system
 * call: the range stays contiguous with its cluster and its space reserved, as QEMU stores
 * it); on a memory-backed one it is left as it is (a hole, or past the end of the file).
 * Falls back to file_zero(). */
int file_allocate_zeroed(struct qcow2_file *f, uint64_t offset, uint64_t count);
int file_discard(struct qcow2_file *f, uint64_t offset, uint64_t count);
int file_status(struct qcow2_file *f, uint64_t offset, uint64_t *count, bool *data);
int64_t file_allocated_bytes(struct qcow2_file *f);
/* Host bytes at or past this offset were never written through this handle: they read as
 * zeros if they were past the end of the file when it was opened (`initial_end`). */
static inline uint64_t file_zero_from(struct qcow2_file *f, uint64_t initial_end)
{
    return MAX(initial_end, __atomic_load_n(&f->written_end, __ATOMIC_RELAXED));
}

/* ------------------------------------------------------------------------------------------ */
/* header.c: cluster 0, parsed. */

struct qcow2_feature_name {
    uint8_t type; /* QCOW2_FEAT_TYPE_* */
    uint8_t bit;
    char name[QCOW2_FEATURE_NAME_LEN + 1];
};

struct qcow2_unknown_ext {
    uint32_t type;
    uint32_t len;
    uint8_t *data;
};

struct qcow2_header {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
    /* Header bytes past the 112 we know, kept verbatim for rewrite. */
    uint8_t *unknown_fields;
    uint32_t unknown_fields_len;

    char *backing_file; /* NUL-terminated copies; NULL when absent */
    char *backing_fmt;
    char *data_file;
    struct qcow2_feature_name *features;
    unsigned nb_features;
    bool has_bitmaps_ext;
    uint32_t nb_bitmaps;
    uint64_t bitmap_directory_size;
    uint64_t bitmap_directory_offset;
    bool has_crypto_ext;
    uint64_t crypto_offset;
    uint64_t crypto_length;
    struct qcow2_unknown_ext *unknown_exts;
    unsigned nb_unknown_exts;
};

/* Parse the fixed header from `buf` (at least 112 bytes or `len`, zero padded by the caller)
 * and validate what does not need the file: magic, version, cluster_bits, header_length. */
int header_parse_fixed(const uint8_t *buf, size_t len, struct qcow2_header *h, char *err,
                       size_t errlen);
/* Parse extensions and the backing file name from the whole first cluster. */
int header_parse_extensions(const uint8_t *cluster0, size_t cluster_size,
                            struct qcow2_header *h, char *err, size_t errlen);
/* Write the complete first cluster (header, extensions in QEMU's order, end marker, backing
 * name). Returns -ENOSPC when it does not fit in one cluster. Sets h->backing_file_offset. */
int header_serialize(struct qcow2_header *h, uint8_t *cluster0, size_t cluster_size,
                     char *err, size_t errlen);
void header_free(struct qcow2_header *h);
/* A feature bit we know. `parsed`: we read images that have it set (an incompatible bit we
 * do not parse refuses every open). `maintained`: our writes keep what it promises true. A
 * writable open refuses a set incompatible bit we do not maintain (naming it) and clears
 * every set autoclear bit we do not maintain, unknown ones included, as the spec provides
 * for a program that does not know them (image.c). Compatible bits may be ignored by any
 * writer (spec): theirs is for the record. */
struct qcow2_feature {
    uint8_t type; /* QCOW2_FEAT_TYPE_* */
    uint8_t bit;
    const char *name; /* as QEMU's feature name table spells it */
    bool parsed;
    bool maintained;
};
/* Our entry for a feature bit; NULL for a bit we do not know. */
const struct qcow2_feature *header_feature(int type, int bit);
/* The bits of `type` we parse; with `maintained`, only those we also maintain. */
uint64_t header_feature_mask(int type, bool maintained);
/* The name of a feature bit: from the image's feature table, else our own, else NULL. */
const char *header_feature_name(const struct qcow2_header *h, int type, int bit);
/* Fill h->features with the table QEMU writes (all features we know). */
int header_set_default_feature_table(struct qcow2_header *h);

/* ------------------------------------------------------------------------------------------ */
/* overlap.c: does a host range touch metadata? (reads in-memory tables only) */

#define OVERLAP_HEADER 0x01u
#define OVERLAP_L1 0x02u
#define OVERLAP_L2 0x04u
#define OVERLAP_REFCOUNT_TABLE 0x08u
#define OVERLAP_REFCOUNT_BLOCK 0x10u
#define OVERLAP_SNAPSHOT_TABLE 0x20u

unsigned overlap_find(struct qcow2_image *img, uint64_t offset, uint64_t size,
                      unsigned ignore);
void overlap_index_free(struct qcow2_image *img);
/* An active L1 entry now names the L2 table at `new_offset` instead of `old_offset` (0 for
 * none): bumps metadata_gen, updating the index in place instead of rebuilding it (a copy
 * into a sparse disk of terabytes links thousands of new tables, one after another). */
void overlap_l2_replaced(struct qcow2_image *img, uint64_t old_offset, uint64_t new_offset);
/* 0, or: mark the image corrupt and fail with -EIO naming the structure. */
int overlap_check(struct qcow2_image *img, uint64_t offset, uint64_t size, unsigned ignore);

/* ------------------------------------------------------------------------------------------ */
/* cache.c: fixed-size tables (L2 slices, refcount blocks) cached by host offset, LRU. */

struct table_cache;

/* The start of every cache, read inline by the write path: the hot table is the one marked
 * dirty last. While `stamp` still equals `hot_stamp` (every change that could matter bumps
 * `stamp`: a slot taking or dropping a table, a dirty table written or dropped, an entry
 * stamped as used), the table at `hot_offset` is cached at `hot_table`, dirty, and the
 * youngest in the cache: a caller that changes it again needs no lookup and no mark, and a
 * lookup would change nothing. Callers hold img->lock, as for every cache call. */
struct cache_head {
    uint64_t stamp;
    uint64_t hot_stamp;
    uint64_t hot_offset;
    void *hot_table;
};
/* The hot table if it is the one at host `offset`, else NULL (then ask cache_find). */
static inline void *cache_hot(const struct table_cache *c, uint64_t offset)
{
    const struct cache_head *h = (const struct cache_head *)(const void *)c;
    return h->hot_stamp == h->stamp && h->hot_offset == offset ? h->hot_table : NULL;
}

/* `what` names the tables in messages ("L2 table", "refcount block"). */
struct table_cache *cache_new(struct qcow2_image *img, const char *what, size_t table_size,
                              unsigned nb_entries);
/* Write-back checks each table against metadata overlaps except `ignore` (its own kind). */
void cache_set_overlap_ignore(struct table_cache *c, unsigned ignore);
void cache_free(struct table_cache *c);
/* Get the table at host `offset`, reading it on a miss. Pins it until cache_put(). */
int cache_get(struct table_cache *c, uint64_t offset, void **table);
/* Get a pinned entry for a new table without reading it (contents undefined). */
int cache_get_empty(struct table_cache *c, uint64_t offset, void **table);
void cache_put(struct table_cache *c, void **table);
/* Look at the table at host `offset` (read on a miss) without pinning it: for a caller that
 * holds the image lock and makes no other cache call until it is done with the table. */
int cache_peek(struct table_cache *c, uint64_t offset, const void **table);
/* Read `count` consecutive tables from host `offset` in one request and cache those not cached
 * yet (a cached one may be newer than the disk), unpinned; at most a quarter of the cache. For
 * scans: one system call instead of one per table. */
int cache_read_ahead(struct table_cache *c, uint64_t offset, unsigned count);
/* cache_peek() on a hit; NULL (and no read) on a miss. */
const void *cache_find(struct table_cache *c, uint64_t offset);
/* Is `table` (a table pointer this cache handed out, or NULL) still the cached table of host
 * `offset`? A table looked at without a pin (cache_find, cache_peek) stays valid only while
 * nothing could evict it; a caller that dropped the image lock since asks here before it uses
 * the pointer again. The slot holding `offset` is that table's only copy in memory, so a yes
 * means the pointer shows what a fresh lookup would. */
bool cache_holds(const struct table_cache *c, const void *table, uint64_t offset);
void cache_mark_dirty_slow(struct table_cache *c, void *table);
/* Mark a table handed out by `c` dirty (it becomes the hot table). The hot one is dirty
 * already: inline, no call. */
static inline void cache_mark_dirty(struct table_cache *c, void *table)
{
    const struct cache_head *h = (const struct cache_head *)(const void *)c;
    if (h->hot_stamp != h->stamp || h->hot_table != table)
        cache_mark_dirty_slow(c, table);
}
/* Write all dirty entries (after the dependency), without fsync. */
int cache_write(struct table_cache *c);
/* cache_write, then fsync the image file. */
int cache_flush(struct table_cache *c);
/* Before any entry of `c` is written, all of `dep` must be on disk (flushed). */
int cache_set_dependency(struct table_cache *c, struct table_cache *dep);
/* Before any entry of `c` is written, every write to `f` completed so far must be durable
 * (flushed, by anyone). */
void cache_depends_on_flush(struct table_cache *c, struct qcow2_file *f);
/* Forget the tables of the cluster at `offset` (it was freed); dirty ones are dropped. A
 * pinned table is kept for its holder, and the image is marked corrupt (-EIO): only lying
 * refcounts free a table in use. */
int cache_discard(struct table_cache *c, uint64_t offset);
/* Is a table of the cluster at `offset` pinned (between cache_get and cache_put)? */
bool cache_pinned(const struct table_cache *c, uint64_t offset);
size_t cache_table_size(const struct table_cache *c);
bool cache_contains(const struct table_cache *c, uint64_t offset);
bool cache_is_dirty(const struct table_cache *c);

/* ------------------------------------------------------------------------------------------ */
/* snapshot.c: one snapshot table entry, parsed. */

#define SNAPSHOT_MAX_EXTRA_DATA 1024      /* QEMU refuses more (check -r all truncates) */
#define SNAPSHOT_MIN_V3_EXTRA_DATA 16     /* vm_state_size_large + disk_size */
#define SNAPSHOT_EXTRA_DATA_SIZE 24       /* ... + icount: what QEMU (and we) write */
#define SNAPSHOT_TABLE_MAX_BYTES (64u * 1024 * 1024)

struct snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    uint16_t id_size;
    uint16_t name_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint32_t vm_state_size32;  /* the 32-bit field as read */
    uint32_t extra_data_size;  /* bytes in `extra` (a repair truncates to the maximum) */
    uint32_t extra_truncated_from; /* the size on disk when truncated, else 0 */
    uint8_t *extra;            /* the extra data verbatim: unknown bytes are written back */
    /* From the extra data, or QEMU's defaults when the entry is too short for them. */
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint64_t icount;           /* UINT64_MAX: none */
    char *id;                  /* NUL-terminated copies */
    char *name;
};

struct snapshot_table {
    struct snapshot *sn;
    uint32_t nb;
    uint64_t size; /* bytes on disk (padding between entries included) */
};

/* ------------------------------------------------------------------------------------------ */
/* The image. */

enum subcluster_type {
    SC_UNALLOCATED_PLAIN, /* no host cluster; reads fall through to the backing file */
    SC_UNALLOCATED_ALLOC, /* host cluster reserved, subcluster not allocated: falls through */
    SC_ZERO_PLAIN,        /* reads zeros, no host cluster */
    SC_ZERO_ALLOC,        /* reads zeros, host cluster reserved */
    SC_NORMAL,            /* data at the host offset */
    SC_COMPRESSED,        /* compressed cluster */
    SC_INVALID,           /* contradictory entry: corruption */
};

/* A region to copy on write, relative to l2_meta.offset. */
struct cow_region {
    uint64_t offset;
    uint64_t nb_bytes;
};

/* An L2 meta record: one host-contiguous run of clusters of a guest write that needs new L2
 * entries (new clusters, or new subclusters of an existing cluster with extended L2).
 *
 * Invariants (cluster_assert_meta(), where the record is made; where COW runs, that the guest
 * data fills the gap between the regions):
 *  - offset is cluster aligned; the run is nb_clusters clusters long, within one L2 slice.
 *  - cow_start.offset <= cow_start.offset + cow_start.nb_bytes <= cow_end.offset
 *    <= cow_end.offset + cow_end.nb_bytes <= nb_clusters * cluster_size. Both offsets are valid
 *    even when nb_bytes is 0: the guest data starts exactly at cow_start.offset +
 *    cow_start.nb_bytes and ends exactly at cow_end.offset.
 *  - the COW regions and the data are written before the L2 entries are linked;
 *  - while the record is in img->inflight, no other request may allocate, COW or link any
 *    cluster in [offset + cow_start.offset, offset + cow_end.offset + cow_end.nb_bytes)
 *    rounded out to clusters (it waits on img->inflight_cond). */
struct l2_meta {
    uint64_t offset;       /* guest offset of the first cluster */
    uint64_t alloc_offset; /* host offset of the first cluster */
    unsigned nb_clusters;
    bool keep_old_clusters; /* the host clusters existed already (COPIED): nothing to free */
    bool prealloc;          /* preallocation: link without setting subcluster alloc bits */
    bool needs_link;        /* L2 entries or bitmaps change (false: a plain overwrite) */
    bool dest_zero;         /* the new host clusters are known to read as zeros */
    bool cow_zero;          /* the COW regions are known to read as zeros (no need to read
                             * them): new clusters for entries without data, no backing file */
    bool is_guard;          /* a data guard (struct data_guard) that overflowed the slots */
    uint64_t guard_gen;     /* data guards: img->guard_gen when the request mapped its clusters */
    struct cow_region cow_start;
    struct cow_region cow_end;
    struct l2_meta *next_in_flight; /* img->inflight list */
    struct l2_meta **pprev_in_flight; /* the link pointing at us: O(1) removal */
    /* Where cluster_prepare_write() found the L2 slice (l2_slice_at 0: not known), so that
     * cluster_link_l2() need not look it up again. Not pinned: the lock is dropped in between,
     * so link uses it only while the L1 entry still reads l2_l1_entry and the cache still
     * holds the slice there (cache_holds()); otherwise it looks the slice up afresh. */
    void *l2_slice;
    uint64_t l2_slice_at;
    uint64_t l2_l1_entry;
};

struct qcow2_image {
    char *filename;
    enum qcow2_format format;
    bool read_only;
    struct qcow2_open_opts opts;
    struct qcow2_file *file;
    struct qcow2_file *data_file; /* == file unless an external data file is used */
    struct qcow2_image *backing;
    char *backing_path;           /* resolved path of the backing file */
    unsigned chain_depth;         /* 0 for the top image */
    uint64_t size;                /* virtual size */
    /* Confinement (opts.allowed_dir, confine_paths): the allowed directory (owned; NULL
     * when backing and data files may be anywhere), and this image's directory relative to
     * it ("." for itself; NULL when the image lies outside it, so it may name no file). */
    char *allowed_dir;
    char *confine_base;
    struct image_limits {         /* what the header may make us allocate or read */
        uint64_t l1_bytes;
        uint64_t reftable_bytes;
        uint32_t snapshots;
        uint32_t bitmaps;
        uint64_t bitmap_directory_bytes;
        unsigned unknown_exts;
        unsigned chain_depth;
    } limits;

    /* qcow2 state (format == QCOW2_FORMAT_QCOW2) */
    struct qcow2_header hdr;
    unsigned cluster_bits;
    uint64_t cluster_size;
    bool extended_l2;
    unsigned l2_entry_size;       /* 8 or 16 bytes */
    unsigned l2_bits;             /* log2 of entries per L2 table */
    uint64_t l2_size;             /* entries per L2 table */
    unsigned l2_slice_bits;       /* log2 of entries per cached slice */
    uint64_t l2_slice_size;       /* entries per cached slice */
    unsigned subcluster_bits;
    uint64_t subcluster_size;
    unsigned subclusters_per_cluster; /* 32 with extended L2, else 1 */
    unsigned refcount_order;
    unsigned refcount_bits;
    uint64_t refcount_max;
    unsigned refcount_block_bits; /* log2 of entries per refcount block */
    unsigned csize_shift;
    uint64_t csize_mask;
    uint64_t cluster_offset_mask;

    uint64_t *l1_table;           /* host byte order, l1_size entries */
    uint32_t l1_size;
    uint64_t *refcount_table;     /* host byte order */
    uint64_t refcount_table_size; /* entries */
    struct table_cache *l2_cache;
    struct table_cache *refcount_cache;
    /* Sorted host offsets of the active L2 tables and refcount blocks, for overlap checks;
     * rebuilt when `metadata_gen` (bumped wherever an L1 or refcount table entry changes)
     * differs from the one it was built for. */
    uint64_t metadata_gen;
    struct {
        uint64_t *l2, *refblocks;
        size_t nb_l2, nb_refblocks;
        uint64_t tables_end; /* end of the highest L2 table or refcount block */
        size_t cap_l2; /* entries allocated for l2 (the L1 size when built) */
        uint64_t gen;
        bool valid;
    } overlap_index;
    uint64_t free_cluster_index;  /* no free cluster below this one */
    uint64_t free_byte_offset;    /* packing position for compressed clusters, 0 = none */
    uint64_t zero_from;           /* end of the image file when opened (cluster aligned) */
    int metadata_prealloc;        /* -1 unknown; 1: more clusters referenced than stored on
                                   * the host, so data clusters may be holes (block status
                                   * asks the host file, as QEMU does) */
    bool lazy_refcounts;
    /* Pointer switches (L1 entry, refcount table entry, header fields) whose synced write
     * failed after the new structure was on disk: memory already uses the new structure
     * (the disk may or may not), and the next flush writes them again. */
    bool l1_dirty;
    bool reftable_dirty;
    bool header_dirty;
    /* New L2 tables not linked on disk yet (cluster.c, cluster_link_new_tables): their L1
     * entries are set in memory only: which blocks of L1_PENDING_BLOCK bytes of the L1 table
     * hold such entries, and whether any does. */
    uint64_t l1_pending[QCOW2_MAX_L1_BYTES / L1_PENDING_BLOCK / 64];
    bool l1_pending_any;
    bool dirty;                   /* DIRTY bit set on disk by us */
    /* Clusters are freed (free_gen++) before the L2/L1 change that freed them is on disk;
     * they must not be reused before an L2 flush covers them (synced_gen == free_gen), else a
     * crash could leave them referenced and reused. */
    uint64_t free_gen;
    uint64_t synced_gen;
    bool corrupt;
    /* Opened for check (opts.repair) although the header places a table where an ordinary
     * open refuses it (image.c check_layout): qcow2_check reports the damage, guest I/O
     * through the handle is refused. */
    bool layout_damaged;
    /* The snapshot table, read on first use (snapshot.c). */
    struct snapshot_table snapshots;
    bool snapshots_loaded;
    /* Opened on a snapshot (qcow2_open_opts.snapshot_id/name): l1_table and size are the
     * snapshot's, the handle is read-only. */
    bool snapshot_view;

    /* Concurrency: `lock` protects all metadata above and below; it is never held across
     * guest data I/O. `inflight` lists the L2 meta records of allocations in progress; a
     * request that overlaps one waits on `inflight_cond` and then re-reads the mapping. */
    /* `lock` and the slot words the fast paths touch with it share one cache line (the
     * image is allocated on a line boundary): a read then moves one line between CPUs, not
     * three. */
    _Alignas(64) pthread_mutex_t lock;
    uint64_t guard_slots_used;
    unsigned guard_slot_waiters;
    /* Bumped (under `lock`) when a write links new clusters in place of old ones it will
     * free: guards of an older generation may still be reading the old clusters. */
    uint64_t guard_gen;
    pthread_cond_t inflight_cond;
    struct l2_meta *inflight;
    unsigned nb_waiters;          /* threads waiting on inflight_cond */
    /* Data guards in slots (cluster.c): a read or an in-place overwrite claims a free slot
     * under `lock` and gives it back without the lock, so it takes the lock once. Bit i of
     * `guard_slots_used` (atomic) says slot i holds a request in progress on guest range
     * [start, end); the range is written only while claiming, under `lock`.
     * `guard_slot_waiters` (atomic) counts requests waiting for a slot to be given back: the
     * releasing request then takes the lock to wake them. Beyond the slots, guards are
     * l2_meta records in `inflight`. A slot has a cache line to itself, so that requests on
     * different CPUs do not write to each other's lines. */
    struct guard_slot {
        _Alignas(64) uint64_t start;
        uint64_t end;
        uint64_t gen; /* guard_gen when the request mapped its clusters */
    } guard_slots[64];
    uint64_t guard_slots_enabled; /* all 64; tests narrow it to reach the overflow path */
    struct compress_cache *compress_cache; /* zstd contexts kept between clusters */
    struct bitmap_set *bitmaps;   /* persistent dirty bitmaps (bitmap.c), NULL if none */
    pthread_mutex_t err_lock;
    char err[QCOW2_ERROR_MAX];
};

/* error.c */

/* Set the image's error message: "<filename>: <message>". Returns `ret` (a -errno) so that
 * callers can write `return set_error(img, -EIO, "...")`. */
int set_error(struct qcow2_image *img, int ret, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Format into a caller buffer (open/create). Returns ret. */
int format_error(char *err, size_t errlen, int ret, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------------------------------------------ */
/* header_write.c */

/* Mark the image corrupt on disk (if writable) and fail with -EIO and the message. */
/* Mark the image corrupt on disk (if writable) and fail with -EIO and the message. */
int signal_corruption(struct qcow2_image *img, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Rewrite the whole first cluster from img->hdr (not synced). */
int header_rewrite(struct qcow2_image *img);
/* Rewrite the first cluster from img->hdr and sync it, crash-safe when the new header fits in
 * the first sector (written alone first); on failure header_dirty is set. */
int header_rewrite_synced(struct qcow2_image *img);
/* Write a few header bytes in place (a single sync write). */
int header_write_field(struct qcow2_image *img, uint64_t offset, const void *buf, size_t len);
/* Write again the pointer switches that failed earlier (l1_dirty, reftable_dirty,
 * header_dirty). Called first by every flush. */
int header_write_pending_switches(struct qcow2_image *img);
/* Write the autoclear feature bits `v` to disk (sync) and memory. */
int header_set_autoclear(struct qcow2_image *img, uint64_t v);
/* Set or clear the dirty / corrupt incompatible bits on disk (sync). */
int header_set_incompat_bits(struct qcow2_image *img, uint64_t set, uint64_t clear);
/* Name another backing file (`name` NULL or "": none) and format (NULL: none) in the header,
 * synced. A crash leaves the old or the new header: dropping the file and renaming it with
 * the same format switch in one sector, after the new name is durable where the old header
 * does not look; another format rewrites the first cluster in one write (as QEMU always
 * does). -ENOSPC ("No space left in the file header") when the name does not fit; on any
 * failure memory keeps the old names. Changes neither the open chain nor any data. */
int header_set_backing(struct qcow2_image *img, const char *name, const char *fmt);


/* Geometry helpers. */
static inline uint64_t offset_into_cluster(const struct qcow2_image *img, uint64_t off)
{
    return off & (img->cluster_size - 1);
}

/* The end of the structures the header places (header, L1 table, refcount table, snapshot
 * table): nothing of theirs lies at or above it (overlap.c). */
static inline uint64_t overlap_end_of_header_structures(const struct qcow2_image *img)
{
    uint64_t end = MAX(img->cluster_size,
                       img->hdr.l1_table_offset + (uint64_t)img->l1_size * 8);
    end = MAX(end, img->hdr.refcount_table_offset +
                       ((uint64_t)img->hdr.refcount_table_clusters << img->cluster_bits));
    if (img->hdr.nb_snapshots)
        end = MAX(end, img->hdr.snapshots_offset +
                           (uint64_t)img->hdr.nb_snapshots * QCOW2_SNAPSHOT_HEADER_SIZE);
    return end;
}

/* Above every structure (where new clusters usually come from), whatever `ignore` says, no
 * metadata is hit: one bound instead of a test per structure (overlap.c). Inline: every
 * allocating write asks before overlap_check(). */
static inline bool overlap_above_all(const struct qcow2_image *img, uint64_t offset)
{
    return img->overlap_index.valid && img->overlap_index.gen == img->metadata_gen &&
           offset >= img->overlap_index.tables_end &&
           offset >= overlap_end_of_header_structures(img);
}

/* The invariants of struct l2_meta that hold for every record (cluster.c, io.c). Checked
 * where a record is made (cluster_prepare_write(), a compressed write, a data guard), and
 * only there: its owner changes none of the fields afterwards, so the checks once paid at
 * every later step of a write (start, data write, link) would repeat the same answer. */
static inline void cluster_assert_meta(const struct qcow2_image *img, const struct l2_meta *m)
{
    (void)img;
    assert((m->offset & (img->cluster_size - 1)) == 0);
    assert(m->nb_clusters > 0);
    assert(m->cow_start.offset + m->cow_start.nb_bytes <= m->cow_end.offset);
    assert(m->cow_end.offset + m->cow_end.nb_bytes <=
           (uint64_t)m->nb_clusters << img->cluster_bits);
}

static inline uint64_t start_of_cluster(const struct qcow2_image *img, uint64_t off)
{
    return off & ~(img->cluster_size - 1);
}
static inline uint64_t size_to_clusters(const struct qcow2_image *img, uint64_t size)
{
    return (size + img->cluster_size - 1) >> img->cluster_bits;
}
static inline uint64_t offset_to_l1_index(const struct qcow2_image *img, uint64_t off)
{
    return off >> (img->l2_bits + img->cluster_bits);
}
static inline uint64_t offset_to_l2_index(const struct qcow2_image *img, uint64_t off)
{
    return (off >> img->cluster_bits) & (img->l2_size - 1);
}
static inline uint64_t offset_to_l2_slice_index(const struct qcow2_image *img, uint64_t off)
{
    return (off >> img->cluster_bits) & (img->l2_slice_size - 1);
}
static inline unsigned offset_to_sc_index(const struct qcow2_image *img, uint64_t off)
{
    return (unsigned)((off >> img->subcluster_bits) & (img->subclusters_per_cluster - 1));
}
static inline uint64_t size_to_l1(const struct qcow2_image *img, uint64_t size)
{
    unsigned shift = img->cluster_bits + img->l2_bits;
    return (size + (1ull << shift) - 1) >> shift;
}
/* Does the image have a backing file, opened in this session or not (a session may run
 * without it: no_backing)? What an unallocated cluster reads is decided by this, never by
 * whether img->backing is open, or the chain would later show backing data where the
 * session wrote zeros. */
static inline bool has_backing_file(const struct qcow2_image *img)
{
    return img->hdr.backing_file != NULL;
}
static inline bool has_data_file(const struct qcow2_image *img)
{
    return (img->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
}
static inline bool data_file_is_raw(const struct qcow2_image *img)
{
    return (img->hdr.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) != 0;
}

/* Decode a compressed L2 entry into host byte offset and length (format knowledge: used by
 * the mapping, the refcounts and the check alike). */
static inline void cluster_compressed_range(const struct qcow2_image *img, uint64_t l2_entry,
                                            uint64_t *coffset, uint64_t *csize)
{
    uint64_t off = l2_entry & img->cluster_offset_mask;
    uint64_t nsec = ((l2_entry >> img->csize_shift) & img->csize_mask) + 1;
    *coffset = off;
    *csize = nsec * QCOW2_COMPRESSED_SECTOR_SIZE - (off & (QCOW2_COMPRESSED_SECTOR_SIZE - 1));
}

/* L2 entries inside a slice (host byte order conversions). */
static inline uint64_t l2_get_entry(const struct qcow2_image *img, const void *slice, uint64_t i)
{
    return be64_get((const uint8_t *)slice + i * img->l2_entry_size);
}
static inline uint64_t l2_get_bitmap(const struct qcow2_image *img, const void *slice, uint64_t i)
{
    return img->extended_l2 ? be64_get((const uint8_t *)slice + i * 16 + 8) : 0;
}
/* Index of the first entry in [from, to) of `slice` that differs from the raw entry `like`
 * (entry and, with extended L2, bitmap): a compare of raw words, no decoding, so that a scan
 * of a sparse disk's tables runs at memory speed. Slices and table buffers are 8-byte
 * aligned. */
static inline uint64_t l2_skip_identical(const struct qcow2_image *img, const void *slice,
                                         uint64_t like, uint64_t from, uint64_t to)
{
    const uint64_t *w = (const uint64_t *)slice;
    if (img->l2_entry_size == sizeof(uint64_t)) {
        uint64_t v = w[like];
        while (from < to && w[from] == v)
            from++;
        return from;
    }
    uint64_t v0 = w[2 * like], v1 = w[2 * like + 1];
    while (from < to && w[2 * from] == v0 && w[2 * from + 1] == v1)
        from++;
    return from;
}
static inline void l2_set_entry(const struct qcow2_image *img, void *slice, uint64_t i,
                                uint64_t v)
{
    be64_put((uint8_t *)slice + i * img->l2_entry_size, v);
}
static inline void l2_set_bitmap(const struct qcow2_image *img, void *slice, uint64_t i,
                                 uint64_t v)
{
    assert(img->extended_l2);
    be64_put((uint8_t *)slice + i * 16 + 8, v);
}

/* ------------------------------------------------------------------------------------------ */
/* refcount.c (callers hold img->lock) */

int refcount_init(struct qcow2_image *img);  /* load the refcount table */
void refcount_close(struct qcow2_image *img);
int refcount_get(struct qcow2_image *img, uint64_t cluster_index, uint64_t *refcount);
/* Allocate `size` bytes worth of contiguous clusters, refcount 1. Returns host offset. */
int64_t refcount_alloc_clusters(struct qcow2_image *img, uint64_t size);
/* The run of `n` clusters from free_cluster_index on, if the fast allocation paths may take
 * it: nothing freed awaits a sync before reuse, the run lies within one refcount block that
 * has a refcount table entry, and it ends below the largest host offset. Returns the run's
 * first cluster index (never 0: cluster 0 holds the header) and sets *rt and *first to its
 * refcount table index and its index in the block, or returns 0. Shared by
 * refcount_alloc_hot() and refcount.c's alloc_in_free_block(). */
static inline uint64_t refcount_fast_run(const struct qcow2_image *img, uint64_t n, uint64_t *rt,
                                         uint64_t *first)
{
    uint64_t idx = MAX(img->free_cluster_index, 1);
    uint64_t per_block = 1ull << img->refcount_block_bits;
    *rt = idx >> img->refcount_block_bits;
    *first = idx & (per_block - 1);
    if (img->free_gen != img->synced_gen || *first + n > per_block ||
        *rt >= img->refcount_table_size ||
        idx + n - 1 > QCOW2_MAX_CLUSTER_OFFSET >> img->cluster_bits)
        return 0;
    return idx;
}

/* The common allocation, inline (every allocating write makes one): the refcount_fast_run()
 * is free in the refcount block the previous allocation counted in, which is still the hot
 * table of the refcount cache (struct cache_head: cached, dirty), with 16-bit refcounts. Those
 * clusters are then what refcount_alloc_clusters() would take (alloc_in_free_block) and are
 * set to 1 here with no cache call. Returns the host offset, or 0 when
 * refcount_alloc_clusters() must decide (another block, another width, a used cluster in the
 * way, or no fast run). Cannot fail. */
static inline int64_t refcount_alloc_hot(struct qcow2_image *img, uint64_t n)
{
    uint64_t rt, first, idx = refcount_fast_run(img, n, &rt, &first);
    if (!idx || img->refcount_order != 4)
        return 0;
    /* The hot block's offset is cluster aligned (a cached table's is): a refcount table entry
     * equal to it names it and has no reserved bits. An empty entry (0) is never hot. */
    uint8_t *block = cache_hot(img->refcount_cache, img->refcount_table[rt]);
    if (!block)
        return 0;
    for (uint64_t k = first; k < first + n; k++)
        if (be16_get(block + k * 2) != 0)
            return 0;
    for (uint64_t k = first; k < first + n; k++)
        be16_put(block + k * 2, 1);
    img->free_cluster_index = idx + n;
    return (int64_t)(idx << img->cluster_bits);
}
/* Allocate up to `n` clusters at exactly `host` (stops at the first used one). Returns how
 * many were allocated (0 if the first is used) or -errno. */
int64_t refcount_alloc_clusters_at(struct qcow2_image *img, uint64_t host, uint64_t n);
/* Allocate `size` bytes for compressed data, packed after the previous allocation. */
int64_t refcount_alloc_bytes(struct qcow2_image *img, uint64_t size);
/* Add `addend` (+1 / -1) to the refcount of every cluster touched by [offset, offset+len). */
int refcount_update(struct qcow2_image *img, uint64_t offset, uint64_t length, int addend);
/* Drop a reference held by L2 entry `l2_entry` (normal or compressed); frees host space. */
int refcount_free_l2_entry(struct qcow2_image *img, uint64_t l2_entry);
int refcount_free_clusters(struct qcow2_image *img, uint64_t offset, uint64_t size);
/* The highest cluster below cluster index `end` with a nonzero refcount, -1 if none. */
int64_t refcount_last_used(struct qcow2_image *img, uint64_t end);
/* Shrinking: drop the refcount blocks that count nothing but themselves (synced). */
int refcount_shrink_table(struct qcow2_image *img);
/* Set the refcount width (order 0..6) and what derives from it (needs img->cluster_bits). */
void refcount_set_order(struct qcow2_image *img, unsigned order);
/* Refcount entry accessors for any order (used by check.c too). */
uint64_t refcount_block_get(const struct qcow2_image *img, const void *block, uint64_t index);
void refcount_block_set(const struct qcow2_image *img, void *block, uint64_t index,
                        uint64_t value);

/* ------------------------------------------------------------------------------------------ */
/* cluster.c (callers hold img->lock) */

enum subcluster_type subcluster_type(const struct qcow2_image *img, uint64_t l2_entry,
                                     uint64_t l2_bitmap, unsigned sc_index);
/* Map guest [offset, offset + *bytes): on return *bytes is the length of the prefix that has
 * one subcluster type and (for NORMAL/ZERO_ALLOC) contiguous host offsets, within one L2
 * slice. *host is the host offset of `offset` (0 when there is none); for COMPRESSED it is the
 * raw L2 entry. */
int cluster_get_host_offset(struct qcow2_image *img, uint64_t offset, uint64_t *bytes,
                            uint64_t *host, enum subcluster_type *type);
/* cluster_get_host_offset() for block status, which scans on: an L2 table missing from the
 * cache is read in one request from the slice on (cache_read_ahead). */
int cluster_block_status(struct qcow2_image *img, uint64_t offset, uint64_t *bytes,
                         uint64_t *host, enum subcluster_type *type);
/* Load the L2 slice holding guest `offset` for changing its entries. A table shared with a
 * snapshot is always copied first (never changed in place); a missing one is created only
 * with L2_CREATE, else *slice is NULL and it returns 0. */
enum l2_need {
    L2_IF_PRESENT, /* change entries of an existing table (copied first when shared) */
    L2_CREATE,     /* the same, creating the table when there is none */
};
/* Where the run of L1 entries without an L2 table from `offset` on ends (at most `stop`). */
uint64_t cluster_end_of_missing_tables(const struct qcow2_image *img, uint64_t offset,
                                       uint64_t stop);
int cluster_get_l2_slice(struct qcow2_image *img, uint64_t offset, enum l2_need need,
                         void **slice, uint64_t *slice_index);
/* THE ORDERING RULE for L2 changes: an L2 change that makes host bytes readable (a new
 * cluster, a kept cluster whose entry changes, new subclusters, a compressed cluster, a
 * preallocated cluster) waits for a flush of those bytes. Call this, instead of marking the
 * slice dirty, for every such change: the slice is not written back before the data file
 * is durable up to now. (Changes that only hide bytes, zero flags and deallocation, need
 * no flush and mark the slice dirty directly.) */
void cluster_publish_l2(struct qcow2_image *img, void *slice);
/* Give L1 entry `l1_index` a fresh L2 table with refcount 1 (COPIED), copying the old table if
 * there was one (and dropping its reference). Grows the L1 table when needed. */
int cluster_alloc_l2_table(struct qcow2_image *img, uint64_t l1_index);
/* A brand-new L2 table (its L1 entry was empty) is linked in memory at once but on disk
 * only here, in a batch: refcounts flushed, L2 tables flushed (synced), then the L1 blocks
 * holding the new entries written (not synced: nothing depends on them but the caller's
 * flush). So a new table costs no flush of its own and is written once, with its entries,
 * not zero-filled first. Called before anything writes the L1 table or a copy of it from
 * memory: every metadata flush (cluster_flush_metadata, qcow2_flush), L1 growth, snapshot
 * operations. Under `lock`. */
int cluster_link_new_tables(struct qcow2_image *img);
/* New L2 tables linked (above), then the pending header and table switches written
 * (header_write_pending_switches): the first metadata step of every flush and close. */
int cluster_write_switches(struct qcow2_image *img);
int cluster_ensure_l1_size(struct qcow2_image *img, uint64_t min_size);
/* Shrinking: unlink (synced) and free the L2 tables of L1 entries [new_l1_size, l1_size). */
int cluster_shrink_l1(struct qcow2_image *img, uint64_t new_l1_size);

/* Write path, in call order: wait for overlapping in-flight records (may return -EAGAIN after
 * waiting: look again), prepare a record for the longest writable prefix (allocating host
 * clusters), start it (in flight), write COW and data (io.c, unlocked), link, finish. */
int cluster_wait_dependencies_slow(struct qcow2_image *img, uint64_t start, uint64_t *bytes,
                                   bool whole_clusters);
/* (The steps every write takes around its own work are inline: nothing in flight and no
 * guard, one request at a time, is nothing to wait for, in two loads.) */
static inline int cluster_wait_dependencies(struct qcow2_image *img, uint64_t start,
                                            uint64_t *bytes, bool whole_clusters)
{
    if (!img->inflight && !__atomic_load_n(&img->guard_slots_used, __ATOMIC_SEQ_CST))
        return 0;
    return cluster_wait_dependencies_slow(img, start, bytes, whole_clusters);
}
int cluster_prepare_write(struct qcow2_image *img, uint64_t offset, uint64_t *bytes,
                          struct l2_meta *m, bool prealloc);
static inline void cluster_meta_start(struct qcow2_image *img, struct l2_meta *m)
{
    /* (m was checked when it was made: cluster_assert_meta().) */
    m->next_in_flight = img->inflight;
    m->pprev_in_flight = &img->inflight;
    if (img->inflight)
        img->inflight->pprev_in_flight = &m->next_in_flight;
    img->inflight = m;
}
int cluster_link_l2(struct qcow2_image *img, struct l2_meta *m);
void cluster_abort(struct qcow2_image *img, struct l2_meta *m);
static inline void cluster_meta_finish(struct qcow2_image *img, struct l2_meta *m)
{
    assert(m->pprev_in_flight && *m->pprev_in_flight == m);
    *m->pprev_in_flight = m->next_in_flight;
    if (m->next_in_flight)
        m->next_in_flight->pprev_in_flight = m->pprev_in_flight;
    m->next_in_flight = NULL;
    m->pprev_in_flight = NULL;
    if (img->nb_waiters)
        pthread_cond_broadcast(&img->inflight_cond);
}

/* Data guards: while guest range [offset, offset + n) is read from, or overwritten in place
 * in, its host clusters, no other write, zero or discard of the range may start
 * (cluster_wait_dependencies waits) and the clusters are not freed, so a read returns old or
 * new data, never a cluster freed and reused under it, and an overwrite never lands in a
 * freed cluster. Reads never wait for guards. Start under `lock`; end without it (it locks
 * only when a request waits). */
struct data_guard {
    int slot;          /* guard_slots index, or -1: `meta` is in img->inflight */
    struct l2_meta meta;
};
void cluster_data_guard_start(struct qcow2_image *img, struct data_guard *g, uint64_t offset,
                              uint64_t n);
void cluster_data_guard_end(struct qcow2_image *img, struct data_guard *g);
/* Everything the metadata caches hold on disk and synced: the pending header/L1/refcount
 * table switches, the L2 slices, the refcount blocks (also those lazy refcounts hold back). */
int cluster_flush_metadata(struct qcow2_image *img);
/* Before changing L2 entries: set the dirty bit (lazy refcounts) or order L2 after refcounts. */
int cluster_mark_dirty_for_update(struct qcow2_image *img);

/* ------------------------------------------------------------------------------------------ */
/* compress.c (pure) */

/* Compression contexts kept for reuse (thread-safe; NULL works everywhere and makes a context
 * per call): creating a zstd context costs about as much as compressing a 64 KiB cluster. */
struct compress_cache;
struct compress_cache *compress_cache_new(void);
void compress_cache_free(struct compress_cache *cache);
/* Decompress `src` into exactly `dst_len` bytes. Trailing input bytes are ignored. */
int compress_decompress(struct compress_cache *cache, int compression_type, const void *src,
                        size_t src_len, void *dst, size_t dst_len);
/* Compress into at most `dst_cap` bytes. Returns the compressed length, -ENOSPC if it does not
 * fit (for zlib with `dst_cap` < `src_len` also when the pre-check below says it cannot shrink,
 * without trying), other -errno on failure. */
ssize_t compress_compress(struct compress_cache *cache, int compression_type, const void *src,
                          size_t src_len, void *dst, size_t dst_cap);
/* 1 if `len` bytes (>= 4 KiB) are certainly not worth compressing: near-uniform byte
 * histograms in every 4 KiB piece and almost no repeated strings. A cheap, conservative test. */
int compress_looks_incompressible(const void *src, size_t len);

/* ------------------------------------------------------------------------------------------ */
/* bitmap.c: persistent dirty bitmaps */

/* A bitmap directory entry as parsed (name malloc'd, NUL-terminated). */
struct bitmap_dir_entry {
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;
    uint8_t type;
    uint8_t gran_bits;
    char *name;
};
/* Parse and validate a whole bitmap directory of `size` bytes holding `nb_bitmaps` entries
 * (QEMU's constraints; a bitmap not in use must cover exactly `disk_size`). Pure. */
int bitmap_parse_directory(const uint8_t *dir, uint64_t size, uint32_t nb_bitmaps,
                           unsigned cluster_bits, uint64_t disk_size,
                           struct bitmap_dir_entry **out, char *err, size_t errlen);
void bitmap_dir_free(struct bitmap_dir_entry *e, unsigned n);
/* Load the bitmaps the header vouches for (open). */
int bitmap_load(struct qcow2_image *img);
/* Writable open: set in_use on disk for every bitmap, before any guest write. */
int bitmap_mark_in_use(struct qcow2_image *img);
/* Writable close: store the bitmaps and clear in_use (caller holds the lock). */
int bitmap_store(struct qcow2_image *img);
/* While every bitmap is in_use on disk (a writable open): store empty tables and directory
 * anew in the lowest free clusters and free the old data (compact.c). */
int bitmap_release_storage(struct qcow2_image *img);
void bitmap_close(struct qcow2_image *img);
/* Mark guest [offset, offset+len) dirty in every enabled bitmap (lock-free, any thread). */
void bitmap_mark(struct qcow2_image *img, uint64_t offset, uint64_t len);
/* The virtual size changed (truncate): resize the bitmaps; a grown area is clean (QEMU). */
int bitmap_resize(struct qcow2_image *img, uint64_t old_size, uint64_t new_size);
/* Would a guest write go unrecorded (consistent bitmaps not in_use on disk: a repair open)? */
bool bitmap_writes_unrecorded(const struct qcow2_image *img);
/* Does the image have bitmaps, as QEMU counts them (loaded, vouched for by the autoclear bit,
 * or added in this session; consistent or not)? */
bool bitmap_any(const struct qcow2_image *img);
int bitmap_drop_all(struct qcow2_image *img);

/* ------------------------------------------------------------------------------------------ */
/* io.c */

/* Flush everything and mark a lazy-refcounts image clean: the last step of a writable close. */
int io_close_writable(struct qcow2_image *img);
/* Read guest data of this image into buf: the one read path, used by COW too. */
int io_read(struct qcow2_image *img, void *buf, size_t count, uint64_t offset);
/* Preallocate guest [offset, end) (mode metadata/falloc/full): host clusters and L2 entries,
 * data left reading as before (zeros, or the backing file with extended L2). */
int io_preallocate(struct qcow2_image *img, uint64_t offset, uint64_t end,
                   enum qcow2_prealloc mode);

/* ------------------------------------------------------------------------------------------ */
/* snapshot.c (callers hold img->lock, except for the public entry points) */

/* Read `nb` entries at `offset`. Extra data past the maximum: with `truncate_extra` the entry
 * keeps the first SNAPSHOT_MAX_EXTRA_DATA bytes (extra_truncated_from says so), else -EFBIG
 * with *bad_entry set to the entry. A table past 64 MiB: -EFBIG, *bad_entry = UINT32_MAX.
 * Messages as QEMU's ("Too much extra metadata in snapshot table entry N", "Snapshot table
 * is too big") in the image's error. */
int snapshot_table_read(struct qcow2_image *img, uint64_t offset, uint32_t nb,
                        bool truncate_extra, struct snapshot_table *t, uint32_t *bad_entry);
void snapshot_table_free(struct snapshot_table *t);
void snapshot_entry_free(struct snapshot *sn);
/* Bytes the entries take on disk, as snapshot_table_write writes them. */
uint64_t snapshot_table_size(const struct snapshot *sn, uint32_t nb);
/* Write the entries as QEMU does (at least 24 bytes of extra data each) at a newly allocated
 * place, flush, switch the header (nb_snapshots + snapshots_offset, one write), free the old
 * table of `old_size` bytes. Refcounts must be right: this allocates and frees clusters. Does
 * not touch img->snapshots. */
int snapshot_table_write(struct qcow2_image *img, const struct snapshot *sn, uint32_t nb,
                         uint64_t old_size);
/* Forget the loaded table (closing, or the table was rewritten by a check). */
void snapshot_close(struct qcow2_image *img);
/* The image's table, loaded on first use (*t stays valid until the table changes). */
int snapshot_table_get(struct qcow2_image *img, const struct snapshot_table **t);
/* A snapshot's L1 table, host byte order (malloc'd; the caller frees it). */
int snapshot_read_l1(struct qcow2_image *img, const struct snapshot *sn, uint64_t **l1);
/* Every distinct L2 table offset of the active L1 table and of every snapshot's, sorted
 * (malloc'd; the caller frees it). */
int snapshot_l2_tables(struct qcow2_image *img, uint64_t **tables, size_t *count);
/* Write every snapshot's L1 table and the table itself again into newly allocated (the
 * lowest free) clusters, switch the header, free the old ones (compact.c). */
int snapshot_relocate(struct qcow2_image *img);
/* Write the table again (at a new place, as snapshot_table_write): every entry then has the
 * extra data a v3 image needs (amend's upgrade, as QEMU's qcow2_upgrade). */
int snapshot_table_rewrite(struct qcow2_image *img);
/* Make a read-only handle show the snapshot (id and/or name, as qcow2_snapshot_find). */
int snapshot_open_view(struct qcow2_image *img, const char *id, const char *name, char *err,
                       size_t errlen);

/* check.c */

/* Rewrite the refcount table and blocks at width 1 << new_order (crash-safe: new structure,
 * flush, header switch, flush, old structure freed). -EINVAL when a refcount does not fit. */
int check_change_refcount_order(struct qcow2_image *img, unsigned new_order);

/* ------------------------------------------------------------------------------------------ */
/* image.c */

/* qcow2_open with the top image's host file supplied by the caller (a test backend that
 * records, drops or fails I/O). The image takes ownership of `file`, also on failure. */
int image_open_with_file(const char *path, const struct qcow2_open_opts *opts,
                         struct qcow2_file *file, struct qcow2_image **img, char *err,
                         size_t errlen);
/* Resolve a backing/data-file name relative to the image's directory (malloc'd). */
char *image_resolve_path(const char *image_path, const char *name);

/* ------------------------------------------------------------------------------------------ */
/* create.c */

/* The caller's creation options in this library's struct version, zero fields at their
 * defaults (qcow2, version 3, 64 KiB clusters, 16-bit refcounts). Used by measure.c too. */
int create_opts_copy_in(struct qcow2_create_opts *o, const struct qcow2_create_opts *opts,
                        char *err, size_t errlen);

/* ------------------------------------------------------------------------------------------ */
/* abi.c: the public structs of every version (qcow2.h, "Extensible structs"). An entry point
 * copies the caller's options into a full struct of ours (abi_copy_in), or checks the caller's
 * result struct first (abi_check_out) and fills it last (abi_copy_out). */

struct abi_struct {
    const char *name;  /* "struct qcow2_info" */
    size_t size;       /* sizeof here */
    size_t first_size; /* the smallest struct_size a caller can have */
};
extern const struct abi_struct abi_open_opts, abi_create_opts, abi_extent, abi_info,
    abi_check_result, abi_compare_result, abi_measure_result, abi_bitmap_info,
    abi_snapshot_info, abi_snapshot_opts, abi_convert_opts, abi_commit_opts, abi_rebase_opts;

/* `ours` (t->size bytes) := the caller's options, later fields at their zero defaults, and
 * struct_size = t->size. NULL `theirs` means every default. -EINVAL for a bad struct_size,
 * -ENOTSUP for a field set past t->size (message in err). */
int abi_copy_in(const struct abi_struct *t, void *ours, const void *theirs, char *err,
                size_t errlen);
/* 0 if `theirs` is a result struct we may fill; else -EINVAL with the image's error set. */
int abi_check_out(struct qcow2_image *img, const struct abi_struct *t, const void *theirs);
/* Copy the fields of `ours` that fit in the caller's struct_size (which is kept). */
void abi_copy_out(const struct abi_struct *t, void *theirs, const void *ours);
/* abi_copy_out for options the library changes in the caller's struct (qcow2_create_opts_set):
 * -ENOTSUP, naming `what`, when a field set in `ours` lies past the caller's struct_size. */
int abi_copy_back(const struct abi_struct *t, void *theirs, const void *ours, const char *what,
                  char *err, size_t errlen);

#endif /* QCOW2_INTERNAL_H */
