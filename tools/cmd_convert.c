/* cmd_convert.c - "qcow2 convert": copy the guest view of an image (its whole backing chain
 * merged) into a new raw or qcow2 image, as qemu-img convert.
 * A thin layer: parses qemu-img's options, creates and opens the target through the library
 * and runs qcow2_convert() (src/convert.c: the copy loop, parallel copy, compression, -B,
 * zero detection, salvage), printing its progress and warnings. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"

#define CONVERT_SECTOR 512u
/* Bytes of a new raw target QEMU allocates up front (its MAX_BLOCKSIZE). */
#define RAW_FIRST_BLOCK 4096u

static void convert_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " convert [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-B BACKING [-F FMT]] [-c] [-p] [-q]\n"
            "                     [-n] [--target-is-zero] [--salvage] [-S SIZE] [-W] [-m N] [-U]\n"
            "                     [-l SNAPSHOT] [--bitmaps [--skip-broken-bitmaps]]\n"
            "                     [--untrusted [--allow-dir=DIR]] SRC DST\n"
            "\n"
            "Copy SRC (with its backing chain merged) to DST.\n"
            "\n"
            "  -f FMT      source format (qcow2 or raw); probed if omitted\n"
            "  -O FMT      target format: raw (default) or qcow2\n"
            "  -o OPTIONS  target creation options, as for 'create' ('-o help' lists them),\n"
            "              preallocation=off|metadata|falloc|full among them\n"
            "  -B BACKING  create DST (qcow2) over BACKING and write only what differs from it\n"
            "  -F FMT      the format of BACKING (probed if omitted)\n"
            "  -c          compress the target's clusters (qcow2 only)\n"
            "  -p          show progress (on a terminal)\n"
            "  -q          quiet\n"
            "  -n          do not create DST: write into an existing image of at least SRC's size\n"
            "  --target-is-zero  with -n: DST reads zeros already, zero ranges are not written\n"
            "  --salvage   sectors that cannot be read are written as zeros (with a warning)\n"
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

/* What the command line asked for. */
struct convert_args {
    const char *src_path, *dst_path;
    enum qcow2_format src_fmt, out_fmt;
    const char *outname;
    char *optlist;
    const char *backing, *backing_fmt; /* -B, -F */
    int no_create;
    const char *snapshot;              /* -l */
    const struct tool_trust *trust;    /* --untrusted, --allow-dir: for SRC */
    int bitmaps, skip_broken;          /* --bitmaps, --skip-broken-bitmaps */
    struct qcow2_convert_opts o;
    double last_pct; /* progress last printed */
};

/* qemu-img's progress line, "    (NN.NN/100%)", redrawn in place; only on a terminal. */
static void print_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct convert_args *a = opaque;
    double pct = total ? (double)done * 100.0 / (double)total : 100.0;

    if (pct - a->last_pct >= 1.0 || done == total || done == 0) {
        printf("    (%3.2f/100%%)\r", pct);
        fflush(stdout);
        a->last_pct = pct;
    }
}

static void print_warning(void *opaque, const char *msg)
{
    (void)opaque;
    tool_warning("%s", msg);
}

static const char *const raw_target_options[] = { "size", "preallocation", NULL };

/* Create (unless -n) and open a raw target. */
static int open_raw_target(struct convert_args *a, uint64_t size, struct qcow2_image **dst)
{
    struct qcow2_create_opts o = QCOW2_CREATE_OPTS_INIT;
    char err[QCOW2_ERROR_MAX] = "";
    char *bad;
    int ret;

    if (!a->no_create) {
        bad = tool_options_unknown_key(a->optlist, raw_target_options);
        if (bad) {
            tool_error("format 'raw' does not support option '%s'", bad);
            free(bad);
            return -EINVAL;
        }
        o.format = QCOW2_FORMAT_RAW;
        if (a->optlist && qcow2_create_opts_parse(&o, a->optlist, err, sizeof(err)) < 0) {
            tool_error("%s: %s", a->dst_path, err[0] ? err : "invalid options");
            return -EINVAL;
        }
        enum qcow2_prealloc p = o.preallocation;
        o.size = size;
        /* metadata: nothing to preallocate in a raw file; full: every byte is copied. */
        if (p == QCOW2_PREALLOC_METADATA || p == QCOW2_PREALLOC_FULL) {
            o.preallocation = QCOW2_PREALLOC_OFF;
        }
        if (p == QCOW2_PREALLOC_FULL) {
            a->o.fully_allocate = 1;
        }
        if (qcow2_create(a->dst_path, &o, err, sizeof(err)) < 0) {
            tool_error("%s", err[0] ? err : "image creation failed");
            return -EIO;
        }
        a->o.target_is_zero = 1;
        ret = tool_open(a->dst_path, QCOW2_FORMAT_RAW, TOOL_OPEN_WRITABLE, dst);
        if (ret < 0) {
            return ret;
        }
        if (p == QCOW2_PREALLOC_OFF || p == QCOW2_PREALLOC_METADATA) {
            /* QEMU allocates the first block of a new raw file (allocate_first_block() in
             * file-posix.c, for alignment probing); so do we, so that our targets are
             * allocated exactly like qemu-img's. */
            static const uint8_t zeros[RAW_FIRST_BLOCK];
            size_t first = size < RAW_FIRST_BLOCK ? CONVERT_SECTOR : RAW_FIRST_BLOCK;

            if (first > size) {
                first = (size_t)size;
            }
            if (first && (ret = qcow2_pwrite(*dst, zeros, first, 0, 0)) < 0) {
                tool_image_error(*dst, ret, "%s: could not allocate the first block",
                                 a->dst_path);
                return ret;
            }
        }
        return 0;
    }
    return tool_open(a->dst_path, QCOW2_FORMAT_RAW, TOOL_OPEN_WRITABLE, dst);
}

/* -B without -F: qemu-img requires the format; probe it as create does. */
static int probe_backing_fmt(const char *dst_path, const char *backing, const char **fmt)
{
    struct qcow2_image *b;
    struct qcow2_info bi = QCOW2_INFO_INIT;
    char *path = tool_path_combine(dst_path, backing);
    int ret = path ? tool_open(path, QCOW2_FORMAT_PROBE, TOOL_OPEN_NO_BACKING, &b) : -ENOMEM;

    free(path);
    if (ret < 0) {
        return ret;
    }
    qcow2_get_info(b, &bi);
    *fmt = bi.format == QCOW2_FORMAT_QCOW2 ? "qcow2" : "raw";
    qcow2_close(b);
    return 0;
}

/* Create (unless -n) and open a qcow2 target. */
static int open_qcow2_target(struct convert_args *a, uint64_t size, struct qcow2_image **dst)
{
    struct qcow2_create_opts o = QCOW2_CREATE_OPTS_INIT;
    char err[QCOW2_ERROR_MAX] = "";

    if (!a->no_create) {
        o.format = QCOW2_FORMAT_QCOW2;
        if (a->optlist && qcow2_create_opts_parse(&o, a->optlist, err, sizeof(err)) < 0) {
            tool_error("%s: %s", a->dst_path, err[0] ? err : "invalid options");
            return -EINVAL;
        }
        if (a->backing) {
            o.backing_file = a->backing;
            o.backing_fmt = a->backing_fmt;
        }
        if (o.backing_file && !o.backing_fmt &&
            probe_backing_fmt(a->dst_path, o.backing_file, &o.backing_fmt) < 0) {
            return -EIO;
        }
        /* Only what differs from the backing file is written (-B, or -o backing_file). */
        a->o.target_backed = o.backing_file != NULL;
        /* A new image without a backing file reads zeros everywhere (preallocated or not). */
        a->o.target_is_zero = !o.backing_file;
        o.format = QCOW2_FORMAT_QCOW2;
        o.size = size;
        if (qcow2_create(a->dst_path, &o, err, sizeof(err)) < 0) {
            tool_error("%s", err[0] ? err : "image creation failed");
            return -EIO;
        }
    }
    return tool_open(a->dst_path, QCOW2_FORMAT_QCOW2, TOOL_OPEN_WRITABLE, dst);
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

/* Open the source, create and open the target, copy. */
static int run_convert(struct convert_args *a)
{
    struct qcow2_image *src = NULL, *dst = NULL;
    char err[QCOW2_ERROR_MAX] = "";
    int ret;

    /* --untrusted applies to the source, the image a user supplied; DST is ours. */
    ret = a->snapshot ? tool_open_snapshot(a->src_path, a->src_fmt, a->snapshot, a->trust, &src)
                      : tool_open_trust(a->src_path, a->src_fmt, 0, a->trust, &src);
    if (ret == 0 && a->bitmaps) {
        ret = check_bitmaps(src, a->skip_broken);
    }
    if (ret == 0) {
        uint64_t size = qcow2_get_size(src);

        ret = a->out_fmt == QCOW2_FORMAT_RAW ? open_raw_target(a, size, &dst)
                                             : open_qcow2_target(a, size, &dst);
    }
    if (ret == 0 && a->bitmaps && !target_supports_bitmaps(dst)) {
        tool_error("Format driver 'qcow2' does not support bitmaps");
        ret = -ENOTSUP;
    }
    if (ret == 0) {
        ret = qcow2_convert(src, dst, &a->o, err, sizeof(err));
        if (ret < 0) {
            tool_error("%s", err);
        }
    }
    if (ret == 0 && a->bitmaps) {
        ret = copy_bitmaps(src, dst, a->dst_path);
    }
    if (ret == 0 && a->o.progress) {
        printf("\n");
    }
    if (tool_close(dst, a->dst_path) < 0 && ret == 0) {
        ret = -EIO;
    }
    tool_close(src, a->src_path);
    return ret;
}

int cmd_convert(int argc, char **argv)
{
    enum { OPT_TARGET_IS_ZERO = 256, OPT_SALVAGE, OPT_BITMAPS, OPT_SKIP_BROKEN };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        { "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
        { "salvage", no_argument, NULL, OPT_SALVAGE },
        TOOL_TRUST_LONGOPTS,
        { "bitmaps", no_argument, NULL, OPT_BITMAPS },
        { "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN },
        { NULL, 0, NULL, 0 },
    };
    struct convert_args a = { .outname = "raw", .o = QCOW2_CONVERT_OPTS_INIT,
                              .last_pct = -100.0 };
    const char *fmtname = NULL;
    int quiet = 0, progress = 0, target_is_zero = 0, ch, ret = TOOL_EXIT_ERROR;
    uint64_t sparse;
    char *end;
    long m;
    struct tool_trust trust = { 0 };

    optind = 0;
    while ((ch = getopt_long(argc, argv, "+hf:O:o:B:F:cpqnS:Wm:Ul:", longopts, NULL)) != -1) {
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
            a.outname = optarg;
            break;
        case 'o':
            if (tool_append_options(&a.optlist, optarg) < 0) {
                goto out;
            }
            break;
        case 'B':
            a.backing = optarg;
            break;
        case 'F':
            a.backing_fmt = optarg;
            break;
        case 'c':
            a.o.compress = 1;
            break;
        case 'p':
            progress = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'n':
            a.no_create = 1;
            break;
        case 'S':
            if (tool_parse_size(optarg, "-S", &sparse) < 0) {
                goto out;
            }
            if (sparse % CONVERT_SECTOR || sparse > QCOW2_CONVERT_MAX_SPARSE) {
                tool_error("invalid buffer size for sparse output specified (-S): a multiple "
                           "of 512 bytes, at most 16 MiB");
                goto out;
            }
            a.o.min_sparse = sparse;
            a.o.fully_allocate = sparse == 0;
            break;
        case 'W':
            a.o.out_of_order = 1;
            break;
        case 'm':
            errno = 0;
            m = strtol(optarg, &end, 10);
            if (errno || *end || m < 1 || m > QCOW2_CONVERT_MAX_WORKERS) {
                tool_error("invalid number of coroutines: allowed is 1 to %d",
                           QCOW2_CONVERT_MAX_WORKERS);
                goto out;
            }
            a.o.workers = (int)m;
            break;
        case 'U':
            break;
        case OPT_TARGET_IS_ZERO:
            target_is_zero = 1;
            break;
        case OPT_BITMAPS:
            a.bitmaps = 1;
            break;
        case OPT_SKIP_BROKEN:
            a.skip_broken = 1;
            break;
        case 'l':
            a.snapshot = optarg;
            break;
        case OPT_SALVAGE:
            a.o.salvage = 1;
            break;
        default:
            ret = tool_usage_error("convert", "invalid option");
            goto out;
        }
    }
    if (tool_parse_format(a.outname, &a.out_fmt) < 0 || tool_parse_format(fmtname, &a.src_fmt) < 0) {
        goto out;
    }
    if (a.out_fmt == QCOW2_FORMAT_PROBE) {
        tool_error("-O needs a format");
        goto out;
    }
    if (a.no_create && a.optlist) {
        tool_error("-o has no effect when skipping image creation");
        goto out;
    }
    if (target_is_zero && !a.no_create) {
        tool_error("--target-is-zero requires use of -n flag");
        goto out;
    }
    if (tool_options_want_help(a.optlist)) {
        /* The target options are create's: let create print them. */
        char *args[] = { "create", "-f", (char *)a.outname, "-o", "help", NULL };

        ret = cmd_create(5, args);
        goto out;
    }
    if (optind != argc - 2) {
        ret = tool_usage_error("convert", "expecting a source and a target file name");
        goto out;
    }
    if (a.o.compress && a.out_fmt != QCOW2_FORMAT_QCOW2) {
        tool_error("compression is not supported for format '%s'", a.outname);
        goto out;
    }
    if (a.skip_broken && !a.bitmaps) {
        tool_error("Use of --skip-broken-bitmaps requires --bitmaps");
        goto out;
    }
    if (a.bitmaps && a.out_fmt != QCOW2_FORMAT_QCOW2) {
        tool_error("Format driver '%s' does not support bitmaps", a.outname);
        goto out;
    }
    if (a.backing && (a.out_fmt != QCOW2_FORMAT_QCOW2 || a.no_create)) {
        tool_error("-B needs a new qcow2 target (-O qcow2, without -n)");
        goto out;
    }
    if (a.backing_fmt && !a.backing) {
        tool_error("%s: error while converting %s: Backing format cannot be used without "
                   "backing file", argv[argc - 1], a.outname);
        goto out;
    }
    if (a.backing_fmt && strcmp(a.backing_fmt, "qcow2") != 0 && strcmp(a.backing_fmt, "raw") != 0) {
        tool_error("unknown backing format '%s' (supported: qcow2, raw)", a.backing_fmt);
        goto out;
    }
    a.src_path = argv[optind];
    a.dst_path = argv[optind + 1];
    a.o.target_is_zero = target_is_zero;
    /* qemu-img's progress line, on a terminal only: in a log it is noise. */
    if (progress && !quiet && isatty(STDOUT_FILENO)) {
        a.o.progress = print_progress;
    }
    if (!quiet) {
        a.o.warning = print_warning;
    }
    a.o.opaque = &a;
    a.trust = &trust;
    if (run_convert(&a) == 0) {
        ret = TOOL_EXIT_OK;
    }
out:
    free(a.optlist);
    return ret;
}
