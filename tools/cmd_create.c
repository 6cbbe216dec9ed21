/* cmd_create.c - "qcow2 create": make a new qcow2 or raw image, as qemu-img create.
 * Options go through the library's one -o parser (qcow2_create_opts_parse); this file only adds
 * qemu-img's command-line conventions: -b/-F/-u, the backing file's size as default size, and
 * the "Formatting ..." line. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void create_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " create [-q] [-f FMT] [-o OPTIONS] [-b BACKING_FILE [-F BACKING_FMT]]\n"
            "                    [-u] FILE [SIZE]\n"
            "\n"
            "Create FILE of SIZE bytes (suffixes k, M, G, T, P, E).\n"
            "\n"
            "  -f FMT          image format: qcow2 (default) or raw\n"
            "  -o OPTIONS      comma-separated key=value format options; '-o help' lists them\n"
            "  -b BACKING_FILE backing file (relative names are relative to FILE's directory);\n"
            "                  without SIZE the new image takes the backing file's size\n"
            "  -F BACKING_FMT  format of the backing file (qcow2 or raw; probed if omitted)\n"
            "  -u              do not open the backing file (SIZE is then required)\n"
            "  -q              quiet: do not print the 'Formatting' line\n");
}

static void print_option_help(enum qcow2_format fmt)
{
    static const struct {
        const char *name;
        const char *help;
    } qcow2_opts[] = {
        { "backing_file=<str>", "File name of a base image" },
        { "backing_fmt=<str>", "Image format of the base image" },
        { "cluster_size=<size>", "qcow2 cluster size" },
        { "compat=<str>", "Compatibility level (v2 [0.10] or v3 [1.1])" },
        { "compression_type=<str>", "Compression method used for image cluster compression" },
        { "data_file=<str>", "File name of an external data file" },
        { "data_file_raw=<bool (on/off)>",
          "The external data file must stay valid as a raw image" },
        { "extended_l2=<bool (on/off)>", "Extended L2 tables" },
        { "lazy_refcounts=<bool (on/off)>", "Postpone refcount updates" },
        { "preallocation=<str>",
          "Preallocation mode (allowed values: off, metadata, falloc, full)" },
        { "refcount_bits=<num>", "Width of a reference count entry in bits" },
        { "size=<size>", "Virtual disk size" },
    };

    if (fmt == QCOW2_FORMAT_RAW) {
        printf("Supported raw options:\n");
        printf("  %-22s - %s\n", "preallocation=<str>",
               "Preallocation mode (allowed values: off, falloc, full)");
        printf("  %-22s - %s\n", "size=<size>", "Virtual disk size");
        return;
    }
    printf("Supported qcow2 options:\n");
    for (size_t i = 0; i < sizeof(qcow2_opts) / sizeof(qcow2_opts[0]); i++) {
        printf("  %-22s - %s\n", qcow2_opts[i].name, qcow2_opts[i].help);
    }
}

/* The options the user gave explicitly, by name, with the text given: qemu-img prints some
 * options only when given, and prints given values as typed. */
#define MAX_GIVEN 32

struct given_opts {
    char *copy; /* the items point into this copy of the -o list */
    int n;
    const char *key[MAX_GIVEN];
    const char *value[MAX_GIVEN];
};

static void given_parse(struct given_opts *g, const char *list)
{
    char *cursor, *key, *value;

    memset(g, 0, sizeof(*g));
    if (!list || !(g->copy = strdup(list))) {
        return;
    }
    cursor = g->copy;
    while (g->n < MAX_GIVEN && (key = tool_options_next(&cursor, &value))) {
        g->key[g->n] = key;
        g->value[g->n] = value ? value : "on";
        g->n++;
    }
}

static const char *given_get(const struct given_opts *g, const char *key)
{
    for (int i = g->n - 1; i >= 0; i--) {
        if (strcmp(g->key[i], key) == 0) {
            return g->value[i];
        }
    }
    return NULL;
}

static const char *prealloc_name(enum qcow2_prealloc p)
{
    switch (p) {
    case QCOW2_PREALLOC_OFF:
        return "off";
    case QCOW2_PREALLOC_METADATA:
        return "metadata";
    case QCOW2_PREALLOC_FALLOC:
        return "falloc";
    case QCOW2_PREALLOC_FULL:
        return "full";
    }
    return "?";
}

/* qemu-img's "Formatting 'FILE', fmt=..." line: the options in QEMU's order, defaults included,
 * some only when given. */
static void print_formatting(const char *path, const struct qcow2_create_opts *o,
                             const struct given_opts *g)
{
    const char *v;

    printf("Formatting '%s', fmt=%s", path, tool_format_name(o->format));
    if (o->format == QCOW2_FORMAT_RAW) {
        printf(" size=%llu", (unsigned long long)o->size);
        if (given_get(g, "preallocation")) {
            printf(" preallocation=%s", prealloc_name(o->preallocation));
        }
        printf("\n");
        return;
    }
    printf(" cluster_size=%u", o->cluster_size ? o->cluster_size : 65536u);
    v = given_get(g, "extended_l2");
    printf(" extended_l2=%s", v ? v : (o->extended_l2 ? "on" : "off"));
    if (given_get(g, "preallocation")) {
        printf(" preallocation=%s", prealloc_name(o->preallocation));
    }
    v = given_get(g, "compression_type");
    printf(" compression_type=%s",
           v ? v : (o->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib"));
    printf(" size=%llu", (unsigned long long)o->size);
    if ((v = given_get(g, "compat"))) {
        printf(" compat=%s", v);
    }
    if (o->backing_file) {
        printf(" backing_file=%s", o->backing_file);
    }
    if (o->backing_fmt) {
        printf(" backing_fmt=%s", o->backing_fmt);
    }
    if (o->data_file) {
        printf(" data_file=%s", o->data_file);
    }
    if ((v = given_get(g, "data_file_raw"))) {
        printf(" data_file_raw=%s", v);
    }
    v = given_get(g, "lazy_refcounts");
    printf(" lazy_refcounts=%s", v ? v : (o->lazy_refcounts ? "on" : "off"));
    v = given_get(g, "refcount_bits");
    if (v) {
        printf(" refcount_bits=%s", v);
    } else {
        printf(" refcount_bits=%u", o->refcount_bits ? o->refcount_bits : 16u);
    }
    printf("\n");
}

/* Options a raw image accepts; everything else is qcow2's. */
static const char *const raw_options[] = { "size", "preallocation", NULL };

static int check_raw_options(const char *list, const char *backing)
{
    char *bad;

    if (backing) {
        tool_error("format 'raw' does not support backing files");
        return -EINVAL;
    }
    bad = tool_options_unknown_key(list, raw_options);
    if (bad) {
        tool_error("format 'raw' does not support option '%s'", bad);
        free(bad);
        return -EINVAL;
    }
    return 0;
}

/* Open the backing file as the new image will (relative to FILE's directory) to check it
 * exists, learn its size and, without -F, its format. */
static int inspect_backing(const char *path, struct qcow2_create_opts *o, int size_given)
{
    char err[QCOW2_ERROR_MAX];
    enum qcow2_format fmt;
    struct qcow2_image *bimg;
    struct qcow2_info info = QCOW2_INFO_INIT;
    char *full;
    int ret;

    if (tool_parse_format(o->backing_fmt, &fmt) < 0) {
        return -EINVAL;
    }
    full = tool_path_combine(path, o->backing_file);
    if (!full) {
        tool_error("out of memory");
        return -ENOMEM;
    }
    ret = tool_open_quiet(full, fmt, TOOL_OPEN_NO_BACKING, &bimg, err, sizeof(err));
    if (ret < 0) {
        tool_error("%s: could not open backing file '%s': %s", path, full, err);
        free(full);
        return ret;
    }
    ret = qcow2_get_info(bimg, &info);
    if (ret < 0) {
        tool_image_error(bimg, ret, "%s", full);
    } else {
        if (!size_given) {
            o->size = info.virtual_size;
        }
        if (!o->backing_fmt) {
            /* Record what we found, so that the image never has to be probed again. */
            o->backing_fmt = info.format == QCOW2_FORMAT_RAW ? "raw" : "qcow2";
        }
    }
    tool_close(bimg, full);
    free(full);
    return ret < 0 ? ret : 0;
}

int cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct qcow2_create_opts o;
    struct given_opts given = { 0 };
    char err[QCOW2_ERROR_MAX] = "";
    const char *fmtname = "qcow2", *backing = NULL, *backing_fmt = NULL, *path;
    char *optlist = NULL, *parse_buf = NULL;
    int quiet = 0, unsafe = 0, size_given = 0, size_arg = 0, c, ret = TOOL_EXIT_ERROR;
    enum qcow2_format fmt;
    uint64_t size = 0;

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:o:b:F:uq", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            create_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'o':
            if (tool_append_options(&optlist, optarg) < 0) {
                goto out;
            }
            break;
        case 'b':
            backing = optarg;
            break;
        case 'F':
            backing_fmt = optarg;
            break;
        case 'u':
            unsafe = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        default:
            return tool_usage_error("create", "invalid option");
        }
    }
    if (tool_parse_format(fmtname, &fmt) < 0) {
        goto out;
    }
    if (fmt == QCOW2_FORMAT_PROBE) {
        tool_error("create needs a format");
        goto out;
    }
    if (tool_options_want_help(optlist)) {
        print_option_help(fmt);
        ret = TOOL_EXIT_OK;
        goto out;
    }
    if (optind >= argc) {
        ret = tool_usage_error("create", "expecting image file name");
        goto out;
    }
    path = argv[optind++];
    if (optind < argc) {
        if (tool_parse_size(argv[optind++], "image size", &size) < 0) {
            goto out;
        }
        size_given = size_arg = 1;
    }
    if (optind < argc) {
        ret = tool_usage_error("create", "unexpected argument '%s'", argv[optind]);
        goto out;
    }

    given_parse(&given, optlist);
    o = QCOW2_CREATE_OPTS_INIT;
    o.format = fmt;
    if (fmt == QCOW2_FORMAT_RAW && check_raw_options(optlist, backing) < 0) {
        goto out;
    }
    if (optlist) {
        parse_buf = strdup(optlist);
        if (!parse_buf) {
            tool_error("out of memory");
            goto out;
        }
        if (qcow2_create_opts_parse(&o, parse_buf, err, sizeof(err)) < 0) {
            tool_error("%s: %s", path, err[0] ? err : "invalid options");
            goto out;
        }
    }
    o.format = fmt; /* -f wins over anything -o might say */
    if (size_arg && given_get(&given, "size")) {
        tool_error("%s: the image size must be specified only once", path);
        goto out;
    }
    if (!size_arg && given_get(&given, "size")) {
        /* SIZE on the command line wins over -o size, as in qemu-img. */
        size = o.size;
        size_given = 1;
    }
    if (backing && qcow2_create_opts_set(&o, "backing_file", backing, err, sizeof(err)) < 0) {
        tool_error("%s: %s", path, err);
        goto out;
    }
    if (backing_fmt &&
        qcow2_create_opts_set(&o, "backing_fmt", backing_fmt, err, sizeof(err)) < 0) {
        tool_error("%s: %s", path, err);
        goto out;
    }
    o.size = size;
    if (o.backing_fmt && !o.backing_file) {
        tool_error("%s: a backing format (-F) needs a backing file (-b)", path);
        goto out;
    }

    if (o.backing_file && !unsafe) {
        if (inspect_backing(path, &o, size_given) < 0) {
            goto out;
        }
    } else if (!size_given) {
        tool_error("%s: image creation needs a size parameter", path);
        goto out;
    }

    if (!quiet) {
        print_formatting(path, &o, &given);
        fflush(stdout);
    }
    if (qcow2_create(path, &o, err, sizeof(err)) < 0) {
        tool_error("%s", err[0] ? err : "image creation failed");
        goto out;
    }
    ret = TOOL_EXIT_OK;
out:
    free(given.copy);
    free(parse_buf);
    free(optlist);
    return ret;
}
