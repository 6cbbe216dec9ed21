/* cmd_convert.c - "qcow2 convert": copy the guest view of an image (its whole backing chain
 * merged) into a new raw or qcow2 image, as qemu-img convert.
 * The source is read through the library; ranges that read as zeros (qcow2_block_status) are
 * not copied, and data blocks that turn out to be zero are not written either (-S), so the
 * target stays sparse. A raw target is a plain file written with POSIX calls; a qcow2 target
 * is created and written through the library. Copies sequentially: -W and -m are accepted for
 * qemu-img compatibility but do not parallelise anything yet. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"

/* Bytes read from the source at a time; a multiple of every cluster size (at most 2 MiB). */
#define CONVERT_CHUNK (2u << 20)
/* Ask the source about at most this many bytes at a time (as qemu-img). */
#define CONVERT_MAX_QUERY (1ULL << 30)
/* -S: default granularity of zero detection in data, and its limit (as qemu-img). */
#define CONVERT_DEFAULT_SPARSE 4096u
#define CONVERT_MAX_SPARSE (16u << 20)
#define CONVERT_SECTOR 512u
/* -m: qemu-img's range of parallel requests. */
#define CONVERT_MAX_COROUTINES 16

static void convert_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " convert [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-c] [-p] [-q] [-n]\n"
            "                     [-S SIZE] [-W] [-m N] [-U] SRC DST\n"
            "\n"
            "Copy SRC (with its backing chain merged) to DST.\n"
            "\n"
            "  -f FMT      source format (qcow2 or raw); probed if omitted\n"
            "  -O FMT      target format: raw (default) or qcow2\n"
            "  -o OPTIONS  target creation options, as for 'create' ('-o help' lists them)\n"
            "  -c          compress the target's clusters (qcow2 only)\n"
            "  -p          show progress\n"
            "  -q          quiet\n"
            "  -n          do not create DST: write into an existing image of at least SRC's size\n"
            "  -S SIZE     write only SIZE-aligned blocks that are not all zeros (default 4k);\n"
            "              -S 0 writes everything: a fully allocated target\n"
            "  -W, -m N    accepted for qemu-img compatibility (the copy is sequential)\n"
            "  -U          accepted for compatibility (the source is opened read-only)\n");
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
    uint64_t min_sparse;     /* -S; 0 = write zeros as data */

    uint8_t *buf;            /* CONVERT_CHUNK bytes */
    const uint8_t *zeros;    /* CONVERT_CHUNK zero bytes */

    int progress;
    double last_pct;
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

        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            tool_error("%s: error while writing at offset %" PRIu64 ": %s", c->dst_path, off,
                       strerror(errno));
            return -errno;
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

    if (c->min_sparse == 0) {
        /* -S 0: a fully allocated target, zeros written as data. */
        while (n > 0) {
            size_t len = n < CONVERT_CHUNK ? (size_t)n : CONVERT_CHUNK;

            ret = target_write(c, c->zeros, len, off);
            if (ret < 0) {
                return ret;
            }
            off += len;
            n -= len;
        }
        return 0;
    }
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

/* Write `n` bytes of source data at `off`, skipping (or zeroing) blocks of min_sparse bytes,
 * aligned to guest offsets, that are all zeros. */
static int target_write_sparse(struct convert *c, const uint8_t *buf, size_t n, uint64_t off)
{
    size_t pos = 0;

    if (c->min_sparse == 0) {
        return target_write(c, buf, n, off);
    }
    while (pos < n) {
        /* A run of blocks that are all zero, or all not. */
        int zero = -1;
        size_t end = pos;
        int ret;

        while (end < n) {
            uint64_t blk_end = (off + end) / c->min_sparse * c->min_sparse + c->min_sparse;
            size_t len = (size_t)(blk_end - (off + end));
            int z;

            if (len > n - end) {
                len = n - end;
            }
            z = buffer_is_zero(buf + end, len);
            if (zero >= 0 && z != zero) {
                break;
            }
            zero = z;
            end += len;
        }
        ret = zero ? target_zero(c, off + pos, end - pos)
                   : target_write(c, buf + pos, end - pos, off + pos);
        if (ret < 0) {
            return ret;
        }
        pos = end;
    }
    return 0;
}

/* ---- the copy ---------------------------------------------------------------------------- */

static int source_status(struct convert *c, uint64_t off, uint64_t count, struct qcow2_extent *e)
{
    int ret;

    if (count > CONVERT_MAX_QUERY) {
        count = CONVERT_MAX_QUERY;
    }
    memset(e, 0, sizeof(*e));
    ret = qcow2_block_status(c->src, off, count, e);
    if (ret < 0) {
        tool_image_error(c->src, ret, "%s: could not read the status of offset %" PRIu64,
                         c->src_path, off);
        return ret;
    }
    if (e->start != off || e->length == 0 || e->length > count) {
        tool_error("%s: block status at offset %" PRIu64 " returned an invalid range", c->src_path,
                   off);
        return -EIO;
    }
    return 0;
}

static int source_read(struct convert *c, uint8_t *buf, size_t n, uint64_t off)
{
    int ret = qcow2_pread(c->src, buf, n, off);

    if (ret < 0) {
        tool_image_error(c->src, ret, "%s: error while reading at offset %" PRIu64, c->src_path,
                         off);
    }
    return ret;
}

/* Uncompressed: follow the source's extents; copy data in chunks, skip zeros. */
static int copy_plain(struct convert *c)
{
    uint64_t off = 0;
    int ret;

    while (off < c->size) {
        struct qcow2_extent e;
        uint64_t end;

        ret = source_status(c, off, c->size - off, &e);
        if (ret < 0) {
            return ret;
        }
        end = off + e.length;
        if (e.flags & QCOW2_BS_ZERO) {
            ret = target_zero(c, off, e.length);
            if (ret < 0) {
                return ret;
            }
            off = end;
        }
        while (off < end) {
            /* Chunks aligned to CONVERT_CHUNK in guest offsets. */
            uint64_t lim = off / CONVERT_CHUNK * CONVERT_CHUNK + CONVERT_CHUNK;
            size_t n = (size_t)((lim < end ? lim : end) - off);

            ret = source_read(c, c->buf, n, off);
            if (ret < 0) {
                return ret;
            }
            ret = target_write_sparse(c, c->buf, n, off);
            if (ret < 0) {
                return ret;
            }
            off += n;
            progress_print(c, off, 0);
        }
        progress_print(c, off, 0);
    }
    return 0;
}

/* Does [off, off+n) of the source read as zeros according to its metadata? */
static int source_range_is_zero(struct convert *c, uint64_t off, uint64_t n, int *zero)
{
    uint64_t end = off + n;

    while (off < end) {
        struct qcow2_extent e;
        int ret = source_status(c, off, end - off, &e);

        if (ret < 0) {
            return ret;
        }
        if (!(e.flags & QCOW2_BS_ZERO)) {
            *zero = 0;
            return 0;
        }
        off += e.length;
    }
    *zero = 1;
    return 0;
}

/* Compressed (-c): whole clusters, each compressed on its own; zero clusters are skipped. */
static int copy_compressed(struct convert *c)
{
    uint64_t off = 0;
    int ret;

    while (off < c->size) {
        size_t n = c->size - off < CONVERT_CHUNK ? (size_t)(c->size - off) : CONVERT_CHUNK;
        int zero;

        ret = source_range_is_zero(c, off, n, &zero);
        if (ret < 0) {
            return ret;
        }
        if (zero && c->min_sparse) {
            ret = target_zero(c, off, n);
            if (ret < 0) {
                return ret;
            }
        } else {
            ret = source_read(c, c->buf, n, off);
            if (ret < 0) {
                return ret;
            }
            for (size_t pos = 0; pos < n; pos += c->cluster_size) {
                size_t len = n - pos < c->cluster_size ? n - pos : c->cluster_size;

                if (c->min_sparse && buffer_is_zero(c->buf + pos, len)) {
                    ret = target_zero(c, off + pos, len);
                } else {
                    ret = qcow2_pwrite_compressed(c->dst, c->buf + pos, len, off + pos);
                    if (ret < 0) {
                        tool_image_error(c->dst, ret,
                                         "%s: error while compressing at offset %" PRIu64,
                                         c->dst_path, off + pos);
                    }
                }
                if (ret < 0) {
                    return ret;
                }
            }
        }
        off += n;
        progress_print(c, off, 0);
    }
    return 0;
}

/* ---- setting up the target --------------------------------------------------------------- */

static const char *const raw_target_options[] = { "size", "preallocation", NULL };

static int open_raw_target(struct convert *c, char *optlist, int no_create)
{
    struct qcow2_create_opts o;
    char err[QCOW2_ERROR_MAX] = "";
    char *bad;

    if (no_create) {
        off_t end;

        c->fd = open(c->dst_path, O_WRONLY);
        if (c->fd < 0) {
            tool_error("could not open '%s': %s", c->dst_path, strerror(errno));
            return -errno;
        }
        end = lseek(c->fd, 0, SEEK_END);
        if (end < 0) {
            tool_error("%s: %s", c->dst_path, strerror(errno));
            return -errno;
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
    qcow2_create_opts_init(&o);
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
        tool_error("could not create '%s': %s", c->dst_path, strerror(errno));
        return -errno;
    }
    if (ftruncate(c->fd, (off_t)c->size) < 0) {
        tool_error("%s: could not resize to %" PRIu64 " bytes: %s", c->dst_path, c->size,
                   strerror(errno));
        return -errno;
    }
    switch (o.preallocation) {
    case QCOW2_PREALLOC_OFF:
    case QCOW2_PREALLOC_METADATA: /* nothing to preallocate in a raw file */
        break;
    case QCOW2_PREALLOC_FALLOC:
        if (c->size && (errno = posix_fallocate(c->fd, 0, (off_t)c->size)) != 0) {
            tool_error("%s: could not preallocate: %s", c->dst_path, strerror(errno));
            return -errno;
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
    struct qcow2_info info;
    char err[QCOW2_ERROR_MAX] = "";
    int ret;

    if (!no_create) {
        qcow2_create_opts_init(&o);
        o.format = QCOW2_FORMAT_QCOW2;
        if (optlist && qcow2_create_opts_parse(&o, optlist, err, sizeof(err)) < 0) {
            tool_error("%s: %s", c->dst_path, err[0] ? err : "invalid options");
            return -EINVAL;
        }
        if (o.backing_file) {
            /* The target would need only what differs from the backing file: not done yet. */
            tool_error("%s: convert does not support a backing file for the target yet",
                       c->dst_path);
            return -ENOTSUP;
        }
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
    c->zero_init = !no_create;
    return 0;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    struct convert c = { .fd = -1, .min_sparse = CONVERT_DEFAULT_SPARSE, .last_pct = -100.0 };
    const char *fmtname = NULL, *outname = "raw";
    char *optlist = NULL;
    int no_create = 0, quiet = 0, ch, ret = TOOL_EXIT_ERROR;
    enum qcow2_format fmt;
    uint64_t sparse;
    uint8_t *zeros = NULL;
    char *end;
    long m;

    optind = 0;
    while ((ch = getopt_long(argc, argv, "+hf:O:o:cpqnS:Wm:U", longopts, NULL)) != -1) {
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
            break;
        case 'm':
            errno = 0;
            m = strtol(optarg, &end, 10);
            if (errno || *end || m < 1 || m > CONVERT_MAX_COROUTINES) {
                tool_error("invalid number of coroutines: allowed is 1 to %d",
                           CONVERT_MAX_COROUTINES);
                goto out;
            }
            break;
        case 'U':
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

    if (tool_open(c.src_path, fmt, 0, &c.src) < 0) {
        goto out;
    }
    c.size = qcow2_get_size(c.src);
    if (c.out_fmt == QCOW2_FORMAT_RAW ? open_raw_target(&c, optlist, no_create) < 0
                                      : open_qcow2_target(&c, optlist, no_create) < 0) {
        goto out;
    }

    progress_print(&c, 0, 1);
    if ((c.compress ? copy_compressed(&c) : copy_plain(&c)) < 0) {
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
