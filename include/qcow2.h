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
 * qcow2_compare_result, qcow2_measure_result, qcow2_bitmap_info, qcow2_snapshot_info,
 * qcow2_snapshot_opts, qcow2_convert_opts, qcow2_commit_opts, qcow2_rebase_opts) starts
 * with `size_t struct_size`, the sizeof of the struct the caller was compiled with, and is
 * initialised with its QCOW2_<NAME>_INIT macro, which sets struct_size and zeroes the rest:
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
    int confine_paths;        /* confine backing and data files to the directory of the
                               * image: as `allowed_dir` set to that directory (below) */
    unsigned max_chain_depth; /* longest backing chain accepted; 0 = default (16) */
    enum qcow2_tristate lazy_refcounts; /* QCOW2_AUTO = as the image says, QCOW2_ON, QCOW2_OFF
                                         * (v3 only) */
    int repair;               /* open for qcow2_check() and its repair: tables over the
                               * header or past the end of the file, no refcount table and a
                               * broken snapshot table are left for the check to report
                               * (guest I/O through such a handle fails); a corrupt image may
                               * be opened writable, a dirty one is not repaired
                               * automatically */
    /* Images from untrusted sources (appended after 0.1.0): see "Untrusted images" below. */
    int untrusted;            /* untrusted mode: regular files only, smaller limits, backing
                               * and data files only beneath `allowed_dir` (none without it) */
    int inspect_only;         /* open to describe the image (qcow2_get_info, qcow2_check):
                               * read-only, the backing and data files are checked but never
                               * opened, guest I/O fails; unknown incompatible features and
                               * encryption are accepted (reported by qcow2_get_info) */
    const char *allowed_dir;  /* backing and data files must resolve beneath this directory,
                               * symlinks included (NULL: anywhere, or in untrusted mode
                               * nowhere). Copied: need not outlive the call */
    /* Open an internal snapshot instead of the active disk: the handle reads the snapshot's
     * content at the snapshot's disk size, and must be read_only (-EINVAL otherwise). With
     * only snapshot_id, the snapshot with that ID; with only snapshot_name, the first with
     * that name; with both, one snapshot must have both. -ENOENT ("Can't find snapshot")
     * when there is none. qemu-img's bare `-l ID_OR_NAME` is the ID first, then the name:
     * open with snapshot_id and, on -ENOENT, again with snapshot_name. */
    const char *snapshot_id;
    const char *snapshot_name;
};

/* Untrusted images.
 *
 * A qcow2 header names other host files (a backing file, an external data file): opening an
 * image from an untrusted source can make a program read /etc/shadow or a block device into a
 * guest disk. With `untrusted` set, qcow2_open():
 *  - opens the image and every file it names only when it is a regular file: devices, FIFOs
 *    and sockets are refused (looked at before opening, checked again on the open descriptor;
 *    a FIFO is opened non-blocking and never read);
 *  - opens a backing or data file only when `allowed_dir` is set and the name, taken relative
 *    to the directory of the image that names it (which must lie inside `allowed_dir`),
 *    resolves beneath `allowed_dir`: the kernel resolves it with openat2(RESOLVE_BENEATH |
 *    RESOLVE_NO_MAGICLINKS), so an absolute name, ".." or a symbolic link leading out fails;
 *    where openat2 is missing (ENOSYS), each component is opened with O_NOFOLLOW from the one
 *    before and ".." only within the walk, so no symbolic link is followed at all. Without
 *    `allowed_dir` an image that names either file is refused (-EPERM), unless `no_backing`
 *    (or `inspect_only`) spares the backing file;
 *  - bounds what the header can make the library allocate or read, smaller than the limits
 *    that always apply (QEMU's):
 *        limit                          always            untrusted
 *        L1 table                       32 MiB            4 MiB
 *        refcount table                 8 MiB             1 MiB
 *        snapshots                      65536             1024
 *        bitmaps / bitmap directory     65535 / 64 MiB    64 / 1 MiB
 *        unknown header extensions      (one cluster)     64
 *        backing chain depth            16                8   (max_chain_depth may lower it)
 *    (a 4 MiB L1 table maps 256 TiB with 64 KiB clusters, 16 GiB with 512-byte clusters).
 * Each refusal is -EPERM (a file outside, a non-regular file), -EFBIG (a limit) or -ELOOP
 * (chain depth) with one line naming the image, the file and the reason.
 * `allowed_dir` without `untrusted` confines backing and data files the same way (regular
 * files only, beneath the directory) and leaves the rest as usual; `confine_paths` is
 * `allowed_dir` set to the image's own directory.
 * An inspector that must not open any other file opens with `untrusted` and `inspect_only`:
 * the names the header gives are checked (resolved beneath `allowed_dir` without being
 * opened; a name that resolves to nothing inside is no refusal), the image is described by
 * qcow2_get_info(), and nothing else is touched. The snapshot table and bitmap directory
 * themselves are read only by the functions that need them (qcow2_check), within the limits. */

/* Every option at its default. */
#define QCOW2_OPEN_OPTS_INIT \
    ((struct qcow2_open_opts){.struct_size = sizeof(struct qcow2_open_opts)})

/* The same as `*opts = QCOW2_OPEN_OPTS_INIT` (every option at its default, struct_size set),
 * for callers that cannot use compound literals and for programs written against 0.1.0's
 * first interface, which had only this call. */
void qcow2_open_opts_init(struct qcow2_open_opts *opts);

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
     * QEMU ignores them (so do we: qcow2_bitmap_count() is 0). */
    int bitmaps_inconsistent;
    const char *backing_file;        /* as stored in the image, or NULL */
    const char *backing_fmt;         /* as stored, or NULL */
    const char *full_backing_filename; /* resolved path of the backing file, or NULL */
    const char *data_file;           /* as stored, or NULL */
    int data_file_raw;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    /* The bits of the three feature fields this library does not know (appended): an
     * incompatible one makes every open but an inspect_only one fail. */
    uint64_t unknown_incompatible_features;
    uint64_t unknown_compatible_features;
    uint64_t unknown_autoclear_features;
};

#define QCOW2_INFO_INIT ((struct qcow2_info){.struct_size = sizeof(struct qcow2_info)})

/* Fill `info`. Strings stay valid until the image is closed. */
int qcow2_get_info(struct qcow2_image *img, struct qcow2_info *info);

/* The backing image of `img` (owned by img), or NULL. */
struct qcow2_image *qcow2_get_backing(struct qcow2_image *img);

/* ---------------------------------------------------------------------------------------------
 * Persistent dirty bitmaps (qcow2 v3), as QEMU keeps them.
 *
 * A bitmap records which guest ranges were written since it was created or cleared, in units
 * of its granularity: an incremental backup copies only the dirty ranges, then clears the
 * bitmap (or starts a new one). Bitmaps are loaded at open. Every write, zero write, discard,
 * compressed write and grow through a writable handle marks the enabled ones in memory; they
 * are stored at qcow2_close() (not at qcow2_flush(), as in QEMU). While a writable handle is
 * open the bitmaps carry the in_use flag on disk, so after a crash they are inconsistent:
 * listed with `in_use` set, refused by every call but qcow2_bitmap_remove(), never silently
 * used. A bitmap found in_use at open is such a bitmap (QEMU reports it the same way).
 *
 * Changes (add, remove, clear, enable, disable, merge) are made in memory and stored at
 * close; they need a writable handle and must not run concurrently with other calls on the
 * same image. Errors are QEMU's messages ("Dirty bitmap 'x' not found", "Bitmap already
 * exists: x", "Bitmap 'x' is inconsistent and cannot be used" with -EBUSY, ...).
 * ------------------------------------------------------------------------------------------- */

#define QCOW2_BITMAP_DISABLED 0x1u /* qcow2_bitmap_add: created not recording */

struct qcow2_bitmap_info {
    size_t struct_size;   /* sizeof(struct qcow2_bitmap_info): QCOW2_BITMAP_INFO_INIT */
    const char *name;     /* valid until the bitmap is removed or the image closed */
    uint32_t granularity; /* bytes per bit: 512 .. 2 GiB, a power of two */
    int enabled;          /* the "auto" flag: writes are recorded */
    int in_use;           /* inconsistent (in_use on disk when opened: a crash, or another
                           * program has it open): unusable, only removable */
    int recording;        /* enabled and consistent: writes through this handle mark it */
};

#define QCOW2_BITMAP_INFO_INIT \
    ((struct qcow2_bitmap_info){.struct_size = sizeof(struct qcow2_bitmap_info)})

/* How many bitmaps the image has (0 for raw images and images without any). */
int qcow2_bitmap_count(struct qcow2_image *img);

/* Describe bitmap number `index` (0 .. count-1, directory order). -ENOENT past the end. */
int qcow2_bitmap_get_info(struct qcow2_image *img, unsigned index,
                          struct qcow2_bitmap_info *info);

/* Add an empty bitmap. `granularity` 0 means QEMU's default (the cluster size, within 4 KiB
 * .. 64 KiB); otherwise a power of two from 512 bytes to 2 GiB. `flags`: QCOW2_BITMAP_*. */
int qcow2_bitmap_add(struct qcow2_image *img, const char *name, uint64_t granularity,
                     unsigned flags);

/* Remove a bitmap (also an inconsistent one). Its clusters are freed at close. */
int qcow2_bitmap_remove(struct qcow2_image *img, const char *name);

/* Mark every range clean. */
int qcow2_bitmap_clear(struct qcow2_image *img, const char *name);

/* Start or stop recording writes (the "auto" flag). */
int qcow2_bitmap_enable(struct qcow2_image *img, const char *name);
int qcow2_bitmap_disable(struct qcow2_image *img, const char *name);

/* OR bitmap `src` of `src_img` (NULL: `img` itself; another open image of the same virtual
 * size otherwise) into bitmap `dst` of `img`. Granularities may differ: each dirty source
 * range marks every destination granule it touches. */
int qcow2_bitmap_merge(struct qcow2_image *img, const char *dst, struct qcow2_image *src_img,
                       const char *src);

/* The call a backup tool makes. Describe [offset, offset+count) in bitmap `name`: stores in
 * *length the longest prefix that is all dirty or all clean and returns 1 (dirty) or 0
 * (clean), or -errno. Runs end on granule boundaries (or at the end of the range). Loop:
 *
 *     for (uint64_t off = 0, len; off < size; off += len)
 *         if ((r = qcow2_bitmap_status(img, "b0", off, size - off, &len)) < 0) ... ;
 *         else if (r) copy(off, len);
 */
int qcow2_bitmap_status(struct qcow2_image *img, const char *name, uint64_t offset,
                        uint64_t count, uint64_t *length);

/* ---------------------------------------------------------------------------------------------
 * Internal snapshots, as qemu-img snapshot.
 *
 * A snapshot keeps the disk as it was when it was taken, inside the image: the active disk
 * and the snapshot share every cluster until one of them is written, then the write copies
 * the cluster (and its L2 table) first. The snapshot table is written as QEMU 7.2 writes it,
 * extra data included, so either tool can create, list, apply, delete and read the others'
 * snapshots, VM-state snapshots of QEMU included (their VM state is kept, never loaded).
 *
 * Snapshots are indexed 0 .. qcow2_snapshot_count() - 1 in table order; an index is valid
 * until the next create, apply or delete on the handle. Create, apply and delete are each
 * crash-safe: a power loss at any point leaves the image before or after the call, at worst
 * with leaked clusters (on a version 3 image the dirty bit is set during the call, so that
 * the next writable open repairs the refcounts; on a version 2 image, which has no dirty bit,
 * `qcow2 check -r all` may be needed after such a crash, as with QEMU).
 *
 * Concurrency: create, apply and delete flush the image first and then hold it for their
 * whole run. The caller must make sure no other thread reads, writes or flushes the image
 * during them (writes that overlap the call would land on one side of the snapshot or the
 * other, and a read during apply could see the old or the new disk); QEMU's monitor, which
 * allows I/O around a snapshot, pauses the guest's I/O for the same reason. Listing may run
 * beside reads.
 *
 * Images with an external data file have no snapshots (-ENOTSUP). Apply is refused on an
 * image with persistent bitmaps (-EBUSY, "Device has active dirty bitmaps"), as QEMU does.
 * ------------------------------------------------------------------------------------------- */

#define QCOW2_SNAPSHOT_NO_ICOUNT UINT64_MAX

struct qcow2_snapshot_info {
    size_t struct_size;     /* sizeof(struct qcow2_snapshot_info): QCOW2_SNAPSHOT_INFO_INIT */
    const char *id;         /* "1", "2", ...: valid until the next create, apply, delete or
                             * close on the handle */
    const char *name;
    uint64_t vm_state_size; /* bytes of saved VM state; 0 for a disk-only snapshot */
    uint32_t date_sec;      /* when it was taken, seconds since the epoch (UTC) */
    uint32_t date_nsec;
    uint64_t vm_clock_nsec; /* guest run time at the snapshot */
    uint64_t icount;        /* instruction counter, or QCOW2_SNAPSHOT_NO_ICOUNT */
    uint64_t disk_size;     /* virtual size when the snapshot was taken */
};

#define QCOW2_SNAPSHOT_INFO_INIT \
    ((struct qcow2_snapshot_info){.struct_size = sizeof(struct qcow2_snapshot_info)})

/* Options of qcow2_snapshot_create; zero fields are what qemu-img snapshot -c writes. */
struct qcow2_snapshot_opts {
    size_t struct_size;     /* sizeof(struct qcow2_snapshot_opts): QCOW2_SNAPSHOT_OPTS_INIT */
    const char *name;       /* required; names need not be unique (QEMU allows duplicates) */
    const char *id;         /* NULL: the largest numeric ID + 1; else must be unused */
    uint32_t date_sec;      /* 0 and date_nsec 0: now */
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t icount;        /* qemu-img writes 0 */
};

#define QCOW2_SNAPSHOT_OPTS_INIT \
    ((struct qcow2_snapshot_opts){.struct_size = sizeof(struct qcow2_snapshot_opts)})

/* Number of snapshots (0 for raw images and images with a data file), or -errno when the
 * snapshot table cannot be read. */
int qcow2_snapshot_count(struct qcow2_image *img);

/* Describe snapshot `index`. -ENOENT past the end. */
int qcow2_snapshot_get(struct qcow2_image *img, unsigned index, struct qcow2_snapshot_info *sn);

/* The index of a snapshot, by QEMU's rules: with only `id` the one with that ID, with only
 * `name` the first with that name, with both one that has both. -ENOENT when there is none
 * ("snapshot not found"), -EINVAL when both are NULL. qemu-img snapshot -a looks up by ID
 * and then by name; -d by name only. */
int qcow2_snapshot_find(struct qcow2_image *img, const char *id, const char *name);

/* Take a snapshot of the active disk (writable image). The new snapshot is the last index.
 * Fails with -EFBIG at 65536 snapshots or when the table would pass 64 MiB (QEMU's limits),
 * -EINVAL when a refcount would overflow (narrow refcount_bits: 1-bit refcounts allow no
 * shared cluster), -EEXIST for an ID in use. */
int qcow2_snapshot_create(struct qcow2_image *img, const struct qcow2_snapshot_opts *opts);

/* Make snapshot `index` the active disk again; the snapshot stays. What was written since
 * is dropped. The virtual size becomes the snapshot's (as QEMU 7.2 does). -EBUSY ("Device has
 * active dirty bitmaps") when the image has persistent bitmaps, enabled or not, as QEMU 7.2
 * refuses (they would no longer describe what changed); bitmaps disowned by a program
 * without bitmap support (autoclear bit clear) do not count. */
int qcow2_snapshot_apply(struct qcow2_image *img, unsigned index);

/* Delete snapshot `index`, freeing the clusters only it referenced. */
int qcow2_snapshot_delete(struct qcow2_image *img, unsigned index);

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
 * Whole-image operations: compare, measure, copy (qemu-img compare, measure and dd)
 * ------------------------------------------------------------------------------------------- */

/* Progress of a long operation: `done` of `total` units (bytes unless said otherwise), called
 * from the calling thread, in increasing order, at least once at the start (done = 0) and once
 * at the end (done = total) when the operation succeeds. Every call that takes one accepts
 * NULL. */
typedef void (*qcow2_progress_fn)(void *opaque, uint64_t done, uint64_t total);

#define QCOW2_COMPARE_STRICT 0x1u /* allocation counts too: sizes and block status must match */

enum qcow2_compare_outcome {
    QCOW2_COMPARE_IDENTICAL = 0,        /* the guest sees the same bytes */
    QCOW2_COMPARE_CONTENT_MISMATCH = 1, /* they differ; `offset` is the first differing
                                         * 512-byte sector (qemu-img's "Content mismatch at
                                         * offset N!") */
    QCOW2_COMPARE_STATUS_MISMATCH = 2,  /* strict: block status differs at `offset` */
    QCOW2_COMPARE_SIZE_MISMATCH = 3,    /* strict: the virtual sizes differ */
};

/* Which step of a comparison failed (when qcow2_compare returns -errno). */
enum qcow2_compare_step {
    QCOW2_COMPARE_STEP_NONE = 0,
    QCOW2_COMPARE_STEP_BLOCK_STATUS = 1, /* qemu-img compare exits 3 */
    QCOW2_COMPARE_STEP_READ = 2,         /* qemu-img compare exits 4 */
};

struct qcow2_compare_result {
    size_t struct_size;                 /* sizeof(struct qcow2_compare_result):
                                         * QCOW2_COMPARE_RESULT_INIT */
    enum qcow2_compare_outcome outcome;
    /* The sizes differ and the common part matched, so the longer image's tail was checked
     * for zeros (qemu-img prints "Warning: Image size mismatch!" before the verdict). */
    int size_mismatch;
    uint64_t offset;                    /* see `outcome`; on failure, where it failed */
    int failed_image;                   /* on failure: 1 or 2 (the image whose error is set) */
    enum qcow2_compare_step failed_step;
};

#define QCOW2_COMPARE_RESULT_INIT \
    ((struct qcow2_compare_result){.struct_size = sizeof(struct qcow2_compare_result)})

/* Compare the guest view of two images (whole backing chains, qcow2 or raw), as qemu-img
 * compare: ranges that both images report as zeros, or that neither has allocated anywhere in
 * its chain, are never read; where one side reads as zeros only the other is read; the rest is
 * read in large pieces. Images of different sizes are equal when the common part matches and
 * the longer image's tail reads as zeros. With QCOW2_COMPARE_STRICT the sizes must be equal
 * and the block status (data, zero, allocated, host offset valid, compressed, reaching the end)
 * must match at every offset. `progress` (may be NULL) counts bytes of the larger size.
 * The reads run on up to two threads of the call's own (started and joined inside it), so
 * the images see concurrent reads, which every image allows.
 * Returns 0 when the comparison ran (the verdict is in `res`), or -errno with the message in
 * the failing image's qcow2_error() and res->failed_image/failed_step/offset set. */
int qcow2_compare(struct qcow2_image *img1, struct qcow2_image *img2, unsigned flags,
                  struct qcow2_compare_result *res, qcow2_progress_fn progress, void *opaque);

struct qcow2_measure_result {
    size_t struct_size;       /* sizeof(struct qcow2_measure_result): QCOW2_MEASURE_RESULT_INIT */
    uint64_t required;        /* bytes a new image needs for the source's data and metadata */
    uint64_t fully_allocated; /* bytes with every cluster allocated */
    int has_bitmaps;          /* `bitmaps` applies: a qcow2 v3 target and a v3 qcow2 source */
    uint64_t bitmaps;         /* bytes the source's persistent bitmaps would take */
};

#define QCOW2_MEASURE_RESULT_INIT \
    ((struct qcow2_measure_result){.struct_size = sizeof(struct qcow2_measure_result)})

/* How large a new image of the format and options in `target` would be (qemu-img measure):
 * for a copy of `src` (its whole chain; target->size is then ignored) or, with `src` NULL, for
 * an empty image of target->size bytes. For qcow2 the options that count are cluster_size,
 * extended_l2, refcount_bits, compat, preallocation (falloc and full count every cluster as
 * required) and backing_file (a copy onto a backing file may need every cluster); the other
 * fields are ignored. Computed exactly as QEMU 7.2 computes it (block/qcow2.c qcow2_measure).
 * Returns 0 or -errno with a message in `err`. */
int qcow2_measure(struct qcow2_image *src, const struct qcow2_create_opts *target,
                  struct qcow2_measure_result *res, char *err, size_t errlen);

/* Copy `count` guest bytes of `src` from `src_offset` into `dst` at `dst_offset` (qemu-img
 * dd), reading and writing at most `chunk` bytes at a time (0: 1 MiB). Every byte is written
 * as data, zeros included, as dd does. `progress` counts bytes copied. Returns 0 or -errno
 * with the message in qcow2_error(dst) (a read failure names `src`). */
int qcow2_copy_range(struct qcow2_image *src, uint64_t src_offset, struct qcow2_image *dst,
                     uint64_t dst_offset, uint64_t count, size_t chunk,
                     qcow2_progress_fn progress, void *opaque);

/* ---------------------------------------------------------------------------------------------
 * Changing an image in place: amend (qemu-img amend) and compact. Both need an image opened
 * writable and nothing else using it; both are crash-safe at every step (a crash leaves the
 * old or the new state, at worst with leaked clusters).
 * ------------------------------------------------------------------------------------------- */

/* Which fields of struct qcow2_create_opts qcow2_amend applies (the options given). */
#define QCOW2_AMEND_COMPAT 0x1u          /* version: 3 upgrades, 2 downgrades */
#define QCOW2_AMEND_LAZY_REFCOUNTS 0x2u  /* lazy_refcounts */
#define QCOW2_AMEND_REFCOUNT_BITS 0x4u   /* refcount_bits */
#define QCOW2_AMEND_SIZE 0x8u            /* size (shrinks too, as qemu-img amend) */
#define QCOW2_AMEND_BACKING_FILE 0x10u   /* backing_file: must equal the current one */
#define QCOW2_AMEND_BACKING_FMT 0x20u    /* backing_fmt: must equal the current one */
#define QCOW2_AMEND_DATA_FILE 0x40u      /* data_file: renames the external data file ("" drops
                                          * the name); only for images that have one */
#define QCOW2_AMEND_DATA_FILE_RAW 0x80u  /* data_file_raw: may only be cleared */

/* Change the options named by `which` to the values in `opts`, as qemu-img amend does, with
 * its messages: in QEMU's order, upgrade, refcount width, data file, backing file check,
 * lazy refcounts, size, downgrade last.
 *  - compat=1.1 -> 0.10 (version 2) marks the image clean, expands zero clusters (unallocated
 *    without a backing file, else clusters of zeros), in every internal snapshot's L2 tables
 *    too, and drops the v3 features; refused with refcount widths other than 16, a data file,
 *    extended L2, zstd with compressed clusters, and (unlike QEMU, which loses them and leaks
 *    their clusters) persistent bitmaps.
 *  - compat=0.10 -> 1.1 writes the snapshot table again when an entry lacks v3's extra data.
 *  - refcount_bits: a new refcount table and blocks at the new width are written after the
 *    end of the image, flushed, switched to in one header write, and the old ones freed.
 * Returns 0 or -errno; a failure may leave the steps before it done. `progress` may be NULL. */
int qcow2_amend(struct qcow2_image *img, const struct qcow2_create_opts *opts, unsigned which,
                qcow2_progress_fn progress, void *opaque);

/* Move clusters from the end of the image file into free clusters lower down (data clusters,
 * L2 tables, refcount blocks, the L1 and refcount tables), repoint their references and
 * truncate the file. Each move copies, flushes, repoints, flushes, then frees. The guest view
 * never changes, nor does any internal snapshot's: a cluster shared with snapshots keeps its
 * refcount and every reference to it is switched; snapshot L1 tables and the snapshot table
 * are written again low down when in the way, and so are the tables of persistent bitmaps
 * (empty while the image is open; close stores the bitmaps). Clusters holding compressed
 * data stay where they are (the file cannot shrink below the last of them). Refused
 * (-ENOTSUP) for images with an external data file or encryption. `progress` may be NULL. */
int qcow2_compact(struct qcow2_image *img, qcow2_progress_fn progress, void *opaque);

/* ---------------------------------------------------------------------------------------------
 * Convert: copy one image's guest view (its whole backing chain merged) into another, as
 * qemu-img convert does.
 * ------------------------------------------------------------------------------------------- */

#define QCOW2_CONVERT_MAX_WORKERS 16          /* qemu-img's -m range: 1 to 16 */
#define QCOW2_CONVERT_MAX_SPARSE (16u << 20)  /* qemu-img's largest -S */

struct qcow2_convert_opts {
    size_t struct_size;     /* sizeof(struct qcow2_convert_opts): QCOW2_CONVERT_OPTS_INIT */
    uint64_t min_sparse;    /* -S: runs of zeros inside data at least this long (a multiple of
                             * 512, at most QCOW2_CONVERT_MAX_SPARSE) are not written; 0 = the
                             * default, 4 KiB */
    int fully_allocate;     /* -S 0: write every byte as data, zeros too */
    int workers;            /* -m: threads copying in parallel, 0 = 8 */
    int out_of_order;       /* -W: write as reads complete (the layout may vary) */
    int compress;           /* -c: compress every cluster (qcow2 target) */
    int target_is_zero;     /* the target reads zeros everywhere (a new image without a
                             * backing file, or --target-is-zero): zero ranges are not
                             * written */
    int target_backed;      /* -B: the target was created over a backing file; only what
                             * differs from what the target reads already is written */
    int salvage;            /* --salvage: a sector that cannot be read counts as zeros (each
                             * one reported through `warning`) instead of failing */
    /* Called as the copy goes on: `done` of `total` bytes of the ranges copied as data
     * (qemu-img's progress). May be NULL. Called from the copy's threads, one at a time. */
    qcow2_progress_fn progress;
    /* Non-fatal messages (salvaged read errors). May be NULL. */
    void (*warning)(void *opaque, const char *msg);
    void *opaque;
    /* Later: -l (a snapshot as the source) and --bitmaps are added here by appending. */
};

#define QCOW2_CONVERT_OPTS_INIT \
    ((struct qcow2_convert_opts){.struct_size = sizeof(struct qcow2_convert_opts)})

/* Copy all of `src` into `dst` (open writable, raw or qcow2, at least as large; the caller
 * creates it and says with target_is_zero what it reads). The source's block status is asked
 * for long runs: unallocated and zero ranges are never read, and not written either when the
 * target reads zeros, so the cost follows the data, not the virtual size. `dst` is flushed at
 * the end. Returns 0, or -errno with a message in `err`. */
int qcow2_convert(struct qcow2_image *src, struct qcow2_image *dst,
                  const struct qcow2_convert_opts *opts, char *err, size_t errlen);

/* ---------------------------------------------------------------------------------------------
 * Reshaping a backing chain: commit, rebase, the backing file in the header.
 * Not concurrent with anything else on the same chain.
 * ------------------------------------------------------------------------------------------- */

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
