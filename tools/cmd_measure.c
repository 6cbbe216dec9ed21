/* cmd_measure.c - "qcow2 measure": qemu-img measure over qcow2_measure(). Parses qemu-img's
 * options and -o list (through the library's one parser), opens the source when there is
 * one, and prints the sizes in qemu-img's human or JSON layout. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void measure_usage(FILE *f)
{
    fprintf(f, "usage: " TOOL_NAME " measure [--output=human|json] [-O FMT] [-o OPTIONS] [--size N | [-f FMT] [-l SNAPSHOT] FILE]\n"
               "\n"
               "Print how many bytes a new image needs, as qemu-img measure: for a copy of FILE\n"
               "(converted to FMT with OPTIONS), or for an empty image of N bytes.\n"
               "\n"
               "  --output=FORMAT  human (default) or json\n"
               "  -O FMT           format of the new image (qcow2 or raw; default raw)\n"
               "  -o OPTIONS       its creation options, as for create (cluster_size, compat,\n"
               "                   refcount_bits, extended_l2, preallocation, backing_file, ...)\n"
               "  --size N         measure an empty image of N bytes instead of a file\n"
               "  -f FMT           format of FILE (qcow2 or raw); probed if omitted\n"
               "  -l SNAPSHOT      measure internal snapshot SNAPSHOT (snapshot.id=ID[,snapshot.name=NAME],\n"
               "                   or an ID or name)\n"
               "  -U               accepted for compatibility\n");
}

/* The -o keys each target accepts (qemu-img checks them against the format's creation
 * options even though measure reads only a few). */
static const char *const raw_keys[] = { "size", "preallocation", NULL };
static const char *const qcow2_keys[] = {
    "size", "compat", "backing_file", "backing_fmt", "data_file", "data_file_raw",
    "cluster_size", "preallocation", "lazy_refcounts", "refcount_bits", "compression_type",
    "extended_l2", NULL
};

/* Fill `o` from the -o list for target format `fmt`. Prints the error itself. */
static int parse_target(enum qcow2_format fmt, char *list, struct qcow2_create_opts *o)
{
    const char *const *keys = fmt == QCOW2_FORMAT_RAW ? raw_keys : qcow2_keys;
    char err[QCOW2_ERROR_MAX] = "";
    char *bad;

    *o = QCOW2_CREATE_OPTS_INIT;
    o->format = fmt;
    if (!list) {
        return 0;
    }
    bad = tool_options_unknown_key(list, keys);
    if (bad && fmt == QCOW2_FORMAT_QCOW2 && strncmp(bad, "encrypt", 7) == 0) {
        /* qemu-img measures LUKS images (their header adds to both sizes); we make none. */
        tool_error("%s: encrypted images are not supported", bad);
        free(bad);
        return -1;
    } else if (bad) {
        tool_error("Invalid parameter '%s'", bad);
        free(bad);
    } else if (qcow2_create_opts_parse(o, list, err, sizeof(err)) == 0) {
        return 0;
    } else {
        tool_error("%s", err[0] ? err : "invalid options");
    }
    tool_error("Invalid options for file format '%s'", tool_format_name(fmt));
    return -1;
}

static void print_result(const struct qcow2_measure_result *r, enum tool_output output)
{
    struct tool_json j;

    if (output == TOOL_OUTPUT_HUMAN) {
        printf("required size: %" PRIu64 "\n", r->required);
        printf("fully allocated size: %" PRIu64 "\n", r->fully_allocated);
        if (r->has_bitmaps) {
            printf("bitmaps size: %" PRIu64 "\n", r->bitmaps);
        }
        return;
    }
    /* BlockMeasureInfo in the order QEMU's QDict prints it. */
    tool_json_init(&j, stdout);
    tool_json_begin_object(&j, NULL);
    if (r->has_bitmaps) {
        tool_json_int(&j, "bitmaps", (int64_t)r->bitmaps);
    }
    tool_json_int(&j, "required", (int64_t)r->required);
    tool_json_int(&j, "fully-allocated", (int64_t)r->fully_allocated);
    tool_json_end_object(&j);
    tool_json_finish(&j);
}

int cmd_measure(int argc, char **argv)
{
    enum { OPT_OUTPUT = 256, OPT_SIZE };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "size", required_argument, NULL, OPT_SIZE },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    enum tool_output output = TOOL_OUTPUT_HUMAN;
    const char *fmtname = NULL, *out_fmtname = "raw", *snapshot = NULL, *path = NULL;
    char *optlist = NULL;
    uint64_t size = 0;
    int has_size = 0, c, ret = TOOL_EXIT_ERROR;
    struct qcow2_image *img = NULL;
    struct qcow2_create_opts target;
    struct qcow2_measure_result res = QCOW2_MEASURE_RESULT_INIT;
    enum qcow2_format fmt, out_fmt;
    char err[QCOW2_ERROR_MAX] = "";

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:O:o:l:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            measure_usage(stdout);
            ret = TOOL_EXIT_OK;
            goto out;
        case 'f':
            fmtname = optarg;
            break;
        case 'O':
            out_fmtname = optarg;
            break;
        case 'o':
            if (tool_append_options(&optlist, optarg) < 0) {
                goto out;
            }
            break;
        case 'l':
            snapshot = optarg;
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if (tool_parse_output(optarg, &output) < 0) {
                goto out;
            }
            break;
        case OPT_SIZE:
            if (tool_parse_size(optarg, "image size", &size) < 0) {
                goto out;
            }
            has_size = 1;
            break;
        default:
            ret = tool_usage_error("measure", "invalid option");
            goto out;
        }
    }
    if (argc - optind > 1) {
        tool_error("At most one filename argument is allowed.");
        goto out;
    }
    path = optind < argc ? argv[optind] : NULL;
    if (!path && (fmtname || snapshot)) {
        tool_error("--image-opts, -f, and -l require a filename argument.");
        goto out;
    }
    if (path && has_size) {
        tool_error("--size N cannot be used together with a filename.");
        goto out;
    }
    if (!path && !has_size) {
        tool_error("Either --size N or one filename must be specified.");
        goto out;
    }
    if (path) {
        if (tool_parse_format(fmtname, &fmt) < 0 ||
            (snapshot ? tool_open_snapshot(path, fmt, snapshot, NULL, &img)
                      : tool_open(path, fmt, 0, &img)) < 0) {
            goto out;
        }
    }
    if (tool_parse_format(out_fmtname, &out_fmt) < 0 || out_fmt == QCOW2_FORMAT_PROBE ||
        parse_target(out_fmt, optlist, &target) < 0) {
        goto out;
    }
    if (has_size) {
        target.size = size;
    }
    if (qcow2_measure(img, &target, &res, err, sizeof(err)) < 0) {
        tool_error("%s", err);
        goto out;
    }
    print_result(&res, output);
    ret = TOOL_EXIT_OK;
out:
    free(optlist);
    if (img && tool_close(img, path) < 0) {
        ret = TOOL_EXIT_ERROR;
    }
    return ret;
}
