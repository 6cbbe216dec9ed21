/* qcow2.h - the public API of libqcow2, and its manual.
 *
 * libqcow2 reads and writes qcow2 disk images (versions 2 and 3, standard and extended L2,
 * zlib and zstd compression, backing chains, external data files) and raw images through one
 * interface. Everything a program needs is declared here; nothing else is installed.
 *
 * Conventions (as in libnbd and zstd):
 *  - Handles are opaque. A `struct qcow2_image` is one open image (qcow2 or raw) together with
 *    its backing chain.
 *  - Every function that can fail returns a negative errno value (-EINVAL, -EIO, -ENOTSUP, ...)
 *    and leaves a one-line human message, naming the file and the problem, in the image's error
 *    buffer: read it with qcow2_error(). Functions that have no image yet (open, create) take a
 *    caller-supplied buffer `err` of `errlen` bytes instead.
 *  - Offsets and lengths are guest bytes unless named `host`.
 *  - One image may be used from several threads at once for I/O (pread, pwrite, pwrite_zeroes,
 *    discard, flush, block_status). Opening, closing, truncating and checking are not concurrent
 *    with anything else on the same image.
 *  - Structs that cross the API (options in, results out) can grow: see "Extensible structs".
 *
 * Licence: MIT.
 */
#ifndef QCOW2_H
#define QCOW2_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QCOW2_VERSION_MAJOR 0
#define QCOW2_VERSION_MINOR 1
#define QCOW2_VERSION_STRING "0.1.0"

/* Largest message qcow2_error() can return, including the terminating NUL. */
#define QCOW2_ERROR_MAX 512

struct qcow2_image;

/* ---------------------------------------------------------------------------------------------
 * Extensible structs
 *
 * Every struct the library reads from or writes into the caller's memory (struct
 * qcow2_open_opts, qcow2_create_opts, qcow2_info, qcow2_extent, qcow2_check_result,
 * qcow2_commit_opts, qcow2_rebase_opts) starts with `size_t struct_size`, the sizeof of the
 * struct the caller was compiled with, and is initialised with its QCOW2_<NAME>_INIT macro,
 * which sets struct_size and zeroes the rest:
 *
 *     struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;    (or o = QCOW2_OPEN_OPTS_INIT;)
 *     o.read_only = 1;
 *
 * The library then reads and writes only the first struct_size bytes, so a program built
 * against this header keeps working with a later libqcow2.so.0 whose structs have grown:
 *  - options (in): fields past the caller's struct_size take their defaults. A struct larger
 *    than the library's (a program built for a newer libqcow2) is accepted when the fields
 *    this library does not know are zero, i.e. at their defaults, and refused with -ENOTSUP
 *    otherwise: an option is never silently ignored.
 *  - results (out): the library fills the fields that fit in struct_size and leaves the rest,
 *    and struct_size itself, untouched, so one struct serves a loop of calls.
 *  - A struct_size that no version of the struct ever had (0: the INIT macro was forgotten) is
 *    refused with -EINVAL and a message naming the macro.
 * The zero value of every option means "the default", so the INIT macros bake no defaults into
 * programs: the library keeps them.
 *
 * The rules for growing a struct (enforced by static assertions in src/abi.c): new fields are
 * only appended; no field is removed, moved or retyped; a struct never ends in padding, so a
 * new field never lands in bytes an older struct_size covered; a new option's zero means what
 * the library did before the option existed.
 *
 * Why a size member rather than opaque option objects with setters (as libnbd has): the
 * structs stay plain data that C callers fill with designated names, on the stack, with no
 * allocation to fail and free and no getter per result field, and bindings can mirror them
 * directly. The cost is one macro per declaration, and forgetting it is caught at run time
 * with -EINVAL. (Linux's extensible system calls, clone3, openat2 and perf_event_open, work
 * the same way: the caller states its struct's size, zero is the default, and a newer caller's
 * unknown non-zero fields are refused.) C++ callers, which lack designated initialisers before
 * C++20, can write `qcow2_open_opts o{}; o.struct_size = sizeof o;`.
 *
 * `make check` holds the library to this: tests/interop/abi.sh compares its ABI with the
 * committed baseline (abi/libqcow2.so.0.abi) using abidiff, and fails on anything but added
 * functions and fields appended to these structs.
 * ------------------------------------------------------------------------------------------- */

/* ---------------------------------------------------------------------------------------------
 * Opening and closing
 * ------------------------------------------------------------------------------------------- */

enum qcow2_format {
    QCOW2_FORMAT_PROBE = 0, /* qcow2 if the magic matches, else raw */
    QCOW2_FORMAT_QCOW2 = 1,
    QCOW2_FORMAT_RAW = 2,
};

/* An option the zero value of which leaves the choice to the image (or the library). */
enum qcow2_tristate { QCOW2_AUTO = 0, QCOW2_ON = 1, QCOW2_OFF = 2 };

struct qcow2_open_opts {
    size_t struct_size;       /* sizeof(struct qcow2_open_opts): use QCOW2_OPEN_OPTS_INIT */
    enum qcow2_format format; /* default QCOW2_FORMAT_PROBE */
    int read_only;            /* open the file O_RDONLY; all writes fail with -EROFS */
    int no_backing;           /* do not open the backing file: unallocated ranges read zeros */
    uint64_t l2_cache_size;   /* bytes of L2 slices to cache; 0 = enough for the whole disk,
                               * at most 32 MiB */
    int confine_paths;        /* refuse backing and data-file names that are absolute or
                               * contain "..": for images from untrusted sources */
    unsigned max_chain_depth; /* longest backing chain accepted; 0 = default (16) */
    enum qcow2_tristate lazy_refcounts; /* QCOW2_AUTO = as the image says, QCOW2_ON, QCOW2_OFF
                                         * (v3 only) */
    int repair;               /* open for qcow2_check() and its repair: tables over the
                               * header or past the end of the file, no refcount table and a
                               * broken snapshot table are left for the check to report
                               * (guest I/O through such a handle fails); a corrupt image may
                               * be opened writable, a dirty one is not repaired
                               * automatically */
};

/* Every option at its default. */
#define QCOW2_OPEN_OPTS_INIT \
    ((struct qcow2_open_opts){.struct_size = sizeof(struct qcow2_open_opts)})

/* Open `path`. `opts` may be NULL for defaults. On success stores a new handle in *img and
 * returns 0. On failure returns -errno, stores NULL in *img, and writes a message into `err`
 * (if not NULL).
 *
 * Images are refused by name when they cannot be handled fully: an unknown incompatible
 * feature ("unsupported feature: NAME (incompatible bit N)"), encryption, a corrupt image
 * opened for writing. A dirty image (lazy refcounts) opened for writing has its refcounts
 * repaired first; opened read-only it is readable as is. */
int qcow2_open(const char *path, const struct qcow2_open_opts *opts, struct qcow2_image **img,
               char *err, size_t errlen);

/* Flush (if writable), release everything and close the whole chain. Marks a lazy-refcounts
 * image clean. Returns 0 or -errno; the handle is freed either way. */
int qcow2_close(struct qcow2_image *img);

/* The message describing the last failure on this image ("" if none): the calling thread's
 * own last failure on it when there is one, so concurrent failures do not mix. Valid until the
 * thread's next call on the image. */
const char *qcow2_error(const struct qcow2_image *img);

/* ---------------------------------------------------------------------------------------------
 * Creating
 * ------------------------------------------------------------------------------------------- */

enum qcow2_compression { QCOW2_COMPRESSION_ZLIB = 0, QCOW2_COMPRESSION_ZSTD = 1 };

enum qcow2_prealloc {
    QCOW2_PREALLOC_OFF = 0,
    QCOW2_PREALLOC_METADATA = 1, /* L2 tables and host clusters reserved, data reads as before */
    QCOW2_PREALLOC_FALLOC = 2,   /* as metadata, plus fallocate of the data clusters */
    QCOW2_PREALLOC_FULL = 3,     /* as metadata, plus zeros written to the data clusters */
};

/* Zero fields mean qemu-img's defaults: a v3 qcow2 image with 64 KiB clusters, 16-bit
 * refcounts, zlib, no preallocation. */
struct qcow2_create_opts {
    size_t struct_size;           /* sizeof(struct qcow2_create_opts): QCOW2_CREATE_OPTS_INIT */
    enum qcow2_format format;     /* QCOW2_FORMAT_QCOW2 (default; also for PROBE) or _RAW */
    uint64_t size;                /* virtual size in bytes; 0 with a backing file = its size */
    int version;                  /* 2 (compat=0.10) or 3 (compat=1.1); 0 = 3 */
    uint32_t cluster_size;        /* 512 .. 2 MiB, power of two; 0 = 65536 */
    int extended_l2;              /* subclusters (v3, cluster_size >= 16 KiB) */
    unsigned refcount_bits;       /* 1, 2, 4, 8, 16, 32, 64; 0 = 16; v2 needs 16 */
    int lazy_refcounts;           /* v3 only */
    enum qcow2_compression compression_type;
    const char *backing_file;     /* stored as given; relative names resolve against FILE */
    const char *backing_fmt;      /* "qcow2" or "raw"; required with a backing file (as
                                   * qemu-img; the CLI probes it when -F is not given) */
    enum qcow2_prealloc preallocation;
    int data_file_raw;            /* the data file is a valid raw image by itself */
    const char *data_file;        /* external data file (v3); created or truncated */
};

/* Every option at its default. */
#define QCOW2_CREATE_OPTS_INIT \
    ((struct qcow2_create_opts){.struct_size = sizeof(struct qcow2_create_opts)})

/* Set one option by its qemu-img name ("cluster_size", "extended_l2", "refcount_bits",
 * "compat", "lazy_refcounts", "compression_type", "backing_file", "backing_fmt",
 * "preallocation", "data_file", "data_file_raw", "size"). String values are not copied: they
 * must outlive `opts`. Returns 0, or -EINVAL with a message in `err` (-ENOTSUP for options
 * we know but do not support, such as encryption, and for options newer than the caller's
 * struct_size). On failure `opts` is unchanged. */
int qcow2_create_opts_set(struct qcow2_create_opts *opts, const char *key, const char *value,
                          char *err, size_t errlen);

/* Parse a comma-separated "key=value,key=value" list (qemu-img's -o) into `opts`. `list` is
 * modified in place (the strings point into it). Stops at the first bad item: the items
 * before it are applied. */
int qcow2_create_opts_parse(struct qcow2_create_opts *opts, char *list, char *err,
                            size_t errlen);

/* Create (or overwrite) `path` as a new image. */
int qcow2_create(const char *path, const struct qcow2_create_opts *opts, char *err,
                 size_t errlen);

/* Parse a size with optional suffix (b, k/K, M, G, T, P, E; powers of 1024) or 0x hex.
 * Returns 0 and stores the value, or -EINVAL. */
int qcow2_parse_size(const char *s, uint64_t *out);

/* ---------------------------------------------------------------------------------------------
 * I/O. Each call transfers the whole range or fails; there are no short reads or writes.
 * ------------------------------------------------------------------------------------------- */

uint64_t qcow2_get_size(const struct qcow2_image *img);

/* Read `count` bytes at guest `offset`. Reading past the end of the image is -EINVAL. */
int qcow2_pread(struct qcow2_image *img, void *buf, size_t count, uint64_t offset);

#define QCOW2_WRITE_FUA 0x1u /* the data is durable when the call returns */

/* Write `count` bytes at guest `offset`. */
int qcow2_pwrite(struct qcow2_image *img, const void *buf, size_t count, uint64_t offset,
                 unsigned flags);

#define QCOW2_ZERO_MAY_UNMAP 0x2u /* whole clusters may be deallocated */
#define QCOW2_ZERO_FAST 0x4u      /* fail with -ENOTSUP rather than write zeros as data */

/* Make `count` bytes at `offset` read as zeros, in metadata where possible. */
int qcow2_pwrite_zeroes(struct qcow2_image *img, uint64_t offset, uint64_t count,
                        unsigned flags);

/* Deallocate whole clusters inside the range (partial clusters are left alone). Discard is a
 * hint, as in QEMU: afterwards those clusters read as zeros, except on a version 2 image with
 * a backing file, where freeing them would expose the backing file and nothing is done (the
 * call still succeeds). With a raw external data file, the range is zeroed there too. */
int qcow2_discard(struct qcow2_image *img, uint64_t offset, uint64_t count);

/* Write `count` bytes compressed. `offset` must be cluster aligned, `count` a multiple of the
 * cluster size (or reach the end of the image), and the clusters unallocated. Clusters that
 * do not shrink are written uncompressed. A call with `count` 0 finishes a series of
 * compressed writes (the file is made to end on a whole sector, as qemu-img does). */
int qcow2_pwrite_compressed(struct qcow2_image *img, const void *buf, size_t count,
                            uint64_t offset);

/* Compressed writes in two steps, so that a program can compress clusters on several threads
 * and still write them in an order of its choosing (deterministic layout):
 * qcow2_compress_cluster() compresses one whole cluster (cluster-size bytes) into `out` (at
 * least cluster-size bytes) without any I/O and returns the compressed length, or -ENOSPC
 * when the data does not shrink (write it with qcow2_pwrite instead), or -errno.
 * qcow2_pwrite_compressed_data() then stores that result for the cluster at `offset` (cluster
 * aligned, unallocated). */
int64_t qcow2_compress_cluster(struct qcow2_image *img, const void *cluster, void *out);
int qcow2_pwrite_compressed_data(struct qcow2_image *img, const void *cdata, size_t clen,
                                 uint64_t offset);

/* Make everything written before the call durable. */
int qcow2_flush(struct qcow2_image *img);

#define QCOW2_TRUNCATE_SHRINK 0x1u /* allow shrinking; data beyond the new end is freed */

/* Change the virtual size. Growing is always allowed; `prealloc` applies to the new area. */
int qcow2_truncate(struct qcow2_image *img, uint64_t size, enum qcow2_prealloc prealloc,
                   unsigned flags);

/* ---------------------------------------------------------------------------------------------
 * Mapping (block status), as qemu-img map reports it.
 * ------------------------------------------------------------------------------------------- */

#define QCOW2_BS_DATA 0x1u      /* the range holds data (it is read from a file) */
#define QCOW2_BS_ZERO 0x2u      /* the range reads as zeros */
#define QCOW2_BS_PRESENT 0x4u   /* allocated in some layer of the chain (else: reads from
                                 * nothing, zeros) */
#define QCOW2_BS_COMPRESSED 0x8u

struct qcow2_extent {
    size_t struct_size; /* sizeof(struct qcow2_extent): QCOW2_EXTENT_INIT */
    uint64_t start;   /* guest offset */
    uint64_t length;  /* bytes */
    unsigned flags;   /* QCOW2_BS_* */
    int depth;        /* layer that answers: 0 = this image, 1 = its backing file, ... */
    int64_t offset;   /* host offset of the data in `filename`, or -1 (compressed, zero,
                       * unallocated) */
    const char *filename; /* the file at `offset` (the data file for external data); valid
                           * until the image is closed */
};

#define QCOW2_EXTENT_INIT ((struct qcow2_extent){.struct_size = sizeof(struct qcow2_extent)})

/* Describe the range starting at `offset`: fills `ext` with the longest prefix of
 * [offset, offset+count) that has one status and, for data, is contiguous on the host. */
int qcow2_block_status(struct qcow2_image *img, uint64_t offset, uint64_t count,
                       struct qcow2_extent *ext);

/* ---------------------------------------------------------------------------------------------
 * Information
 * ------------------------------------------------------------------------------------------- */

struct qcow2_info {
    size_t struct_size;        /* sizeof(struct qcow2_info): QCOW2_INFO_INIT */
    const char *filename;
    enum qcow2_format format;  /* QCOW2_FORMAT_QCOW2 or QCOW2_FORMAT_RAW */
    uint64_t virtual_size;
    uint64_t actual_size;      /* bytes the file occupies on the host (st_blocks * 512) */
    /* qcow2 only (zero for raw): */
    int version;               /* 2 or 3 */
    uint32_t cluster_size;
    int extended_l2;
    unsigned refcount_bits;
    int lazy_refcounts;
    enum qcow2_compression compression_type;
    int corrupt;
    int dirty;
    int encrypted;
    unsigned nb_snapshots;
    int nb_bitmaps;                  /* from the bitmaps extension, or 0 */
    /* The bitmaps extension is there but not vouched for (autoclear bit clear, or a v2
     * image): a program without bitmap support wrote the image, the bitmaps are stale and
     * QEMU ignores them. A writable open by this library does that too: it does not update
     * bitmaps. */
    int bitmaps_inconsistent;
    const char *backing_file;        /* as stored in the image, or NULL */
    const char *backing_fmt;         /* as stored, or NULL */
    const char *full_backing_filename; /* resolved path of the backing file, or NULL */
    const char *data_file;           /* as stored, or NULL */
    int data_file_raw;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
};

#define QCOW2_INFO_INIT ((struct qcow2_info){.struct_size = sizeof(struct qcow2_info)})

/* Fill `info`. Strings stay valid until the image is closed. */
int qcow2_get_info(struct qcow2_image *img, struct qcow2_info *info);

/* The backing image of `img` (owned by img), or NULL. */
struct qcow2_image *qcow2_get_backing(struct qcow2_image *img);

/* ---------------------------------------------------------------------------------------------
 * Consistency check and repair, as qemu-img check.
 * ------------------------------------------------------------------------------------------- */

#define QCOW2_CHECK_FIX_LEAKS 0x1u
#define QCOW2_CHECK_FIX_ERRORS 0x2u

struct qcow2_check_result {
    size_t struct_size;         /* sizeof(struct qcow2_check_result): QCOW2_CHECK_RESULT_INIT */
    int64_t corruptions;        /* found (after repair: remaining) */
    int64_t leaks;
    int64_t check_errors;       /* internal errors: the check could not complete */
    int64_t corruptions_fixed;
    int64_t leaks_fixed;
    uint64_t image_end_offset;
    uint64_t total_clusters;
    uint64_t allocated_clusters;
    uint64_t fragmented_clusters;
    uint64_t compressed_clusters;
};

#define QCOW2_CHECK_RESULT_INIT \
    ((struct qcow2_check_result){.struct_size = sizeof(struct qcow2_check_result)})

/* Check the image; with fix flags (image opened writable) repair what is found. Messages about
 * each problem are passed to `report` (may be NULL). `res` may be NULL. Returns 0 when the
 * check ran (look at the result), -errno when it could not. */
int qcow2_check(struct qcow2_image *img, unsigned fix, struct qcow2_check_result *res,
                void (*report)(void *opaque, const char *msg), void *opaque);

/* ---------------------------------------------------------------------------------------------
 * Reshaping a backing chain: commit, rebase, the backing file in the header.
 * Not concurrent with anything else on the same chain.
 * ------------------------------------------------------------------------------------------- */

/* Called now and then with bytes done out of `total` (guest bytes of the image walked). The
 * work runs on several threads: the callback may be called from any of them, but never from
 * two at once, and `done` only grows. */
typedef void (*qcow2_progress_fn)(void *opaque, uint64_t done, uint64_t total);

/* Make every guest range unallocated, so that the image reads its backing file (or zeros)
 * everywhere; qcow2 images without an external data file only (-ENOTSUP otherwise). The
 * image must be writable. Flushed on return. A crash leaves each cluster as it was or
 * unallocated (never a reference to a freed cluster). */
int qcow2_make_empty(struct qcow2_image *img);

/* Name another backing file in the header without touching any data: qemu-img rebase -u.
 * `backing_file` is stored as given (a relative name resolves against the image's
 * directory), NULL or "" removes the backing file; `backing_fmt` is "qcow2", "raw" or NULL
 * (then none is recorded). The image must be a writable qcow2 image. The open chain follows:
 * the old backing image is closed and the new one opened when it can be (else the image
 * reads zeros where it is unallocated, until reopened). A crash leaves the old or the new
 * header: with the same format (or none left) the new name is written and flushed where the
 * old header does not look, then two fields of the first sector switch to it; another
 * format rewrites the first cluster in one write, as QEMU does. -ENOSPC with "No space
 * left in the file header" when the name does not fit. */
int qcow2_change_backing_file(struct qcow2_image *img, const char *backing_file,
                              const char *backing_fmt);

struct qcow2_commit_opts {
    size_t struct_size;   /* sizeof(struct qcow2_commit_opts): QCOW2_COMMIT_OPTS_INIT */
    /* The layer to commit into: NULL = the image's backing file; else a backing file name as
     * a layer of the chain stores it, or a path naming the same file (relative paths resolve
     * against the directory of the layer that names it). */
    const char *base;
    /* Leave the top image as it is (qemu-img commit -d). Otherwise, when the base is the
     * image's own backing file, the image is emptied afterwards; with a deeper base it is
     * always left as it is (emptying it would expose the intermediate layers' stale data). */
    int keep;
    qcow2_progress_fn progress; /* may be NULL */
    void *progress_opaque;
};

#define QCOW2_COMMIT_OPTS_INIT \
    ((struct qcow2_commit_opts){.struct_size = sizeof(struct qcow2_commit_opts)})

/* Write the data of `img` and of every layer between it and the base into the base, as
 * qemu-img commit does: ranges that read zeros stay zeros in the base (zero clusters or
 * write-zeroes, not written zeros), and a base shorter than the image is grown to its size
 * first. The base (qcow2 or raw) is reopened writable and takes the place of its read-only
 * handle in the open chain; `img` needs to be writable only to be emptied.
 *
 * Crash safety: the base is grown (qcow2_truncate's guarantees), then written range by range;
 * until the image is emptied its guest view never changes (it shadows every range written),
 * and the base's own view (which qemu-img calls invalid after a commit) holds, per range,
 * its old or its new data. The base is flushed before the image is emptied, so a crash while
 * emptying leaves each cluster either in the image or unallocated over a base that already
 * holds the same data. Errors: -EINVAL "Image does not have a backing file", -ENOENT "Did
 * not find 'BASE' in the backing chain of 'IMG'". */
int qcow2_commit(struct qcow2_image *img, const struct qcow2_commit_opts *opts);

struct qcow2_rebase_opts {
    size_t struct_size;   /* sizeof(struct qcow2_rebase_opts): QCOW2_REBASE_OPTS_INIT */
    /* The new backing file, stored in the header as given and resolved against the image's
     * directory; NULL or "" = none (the image then stands alone). */
    const char *backing_file;
    /* Its format, recorded in the header. QCOW2_FORMAT_PROBE: probed, and the format found
     * is recorded. */
    enum qcow2_format backing_format;
    int unsafe;           /* only rewrite the header (qemu-img rebase -u) */
    int compress;         /* write copied whole clusters compressed (qemu-img 8.2's -c) */
    qcow2_progress_fn progress; /* may be NULL */
    void *progress_opaque;
};

#define QCOW2_REBASE_OPTS_INIT \
    ((struct qcow2_rebase_opts){.struct_size = sizeof(struct qcow2_rebase_opts)})

/* Put another backing file under `img` (writable, opened with its backing chain) so that the
 * guest sees the same disk, as qemu-img rebase does: every range that `img` does not
 * allocate itself and where the old and the new chain read differently is copied from the
 * old chain into `img` (512-byte sectors compared; ranges that read zeros written as zeros).
 * When the new backing file is already part of the old chain, only the layers above it are
 * looked at. Then the header names the new file (qcow2_change_backing_file), and the open
 * chain is the new one. With `unsafe`, only the header changes (the old chain need not
 * open). The new backing file may not be the image itself or have it in its chain
 * (-ELOOP).
 *
 * Crash safety: the copied data lands in ranges the image did not allocate, with exactly
 * the data the old chain reads there, so until the header switches every range reads as
 * before; the copy is flushed before the header is rewritten (one write, flushed). A crash
 * leaves the old backing file named and the guest view unchanged, or the new one named and
 * the copy complete (see qcow2_change_backing_file for the header write). Errors name the problem: "Could not open new backing file 'X': ...",
 * "Could not change the backing file to 'X': ...". */
int qcow2_rebase(struct qcow2_image *img, const struct qcow2_rebase_opts *opts);

#ifdef __cplusplus
}
#endif

#endif /* QCOW2_H */
