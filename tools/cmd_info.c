/* cmd_info.c - "qcow2 info": describe an image (and with --backing-chain, every image below
 * it) in qemu-img info's human or JSON output. Like qemu-img, each image of the chain is opened
 * by itself without its backing file, so a missing backing file does not hide the image.
 * With --untrusted it is an image inspector: the image alone is opened (inspect_only), what
 * it names is checked without being opened, and the JSON output gains an "inspection" object
 * with everything a service needs to decide whether to accept the image. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

/* Longest chain followed with --backing-chain (a guard against loops through links). */
#define INFO_MAX_CHAIN 256

static void info_usage(FILE *f)
{
    fprintf(f, "usage: " TOOL_NAME " info [-f FMT] [--output=human|json] [--backing-chain] [-U]\n"
               "                  [--untrusted [--allow-dir=DIR]] FILE\n"
               "\n"
               "Show the format, sizes, backing file and format-specific information of FILE.\n"
               "\n"
               "  -f FMT             image format (qcow2 or raw); probed if omitted\n"
               "  --output=FORMAT    human (default) or json, with qemu-img's field names\n"
               "  --backing-chain    also show every image of the backing chain\n"
               "  -U, --force-share  accepted for compatibility (images are opened read-only)\n"
               TOOL_TRUST_HELP
               "                     With --untrusted no other file is opened, and a backing\n"
               "                     or data file that would be refused fails the command; the\n"
               "                     JSON output gains an \"inspection\" object.\n");
}

/* What one image says, gathered before printing. */
struct info_item {
    const char *filename;       /* as opened */
    struct qcow2_image *img;
    struct qcow2_info info;
    char *full_backing;         /* backing file relative to `filename`, or NULL */
    int inspect;                /* --untrusted: add the "inspection" object */
};

/* The bits set in `bits`, as a JSON array of numbers. */
static void json_bits(struct tool_json *j, const char *key, uint64_t bits)
{
    tool_json_begin_array(j, key);
    for (int b = 0; b < 64; b++) {
        if (bits & (1ull << b)) {
            tool_json_int(j, NULL, b);
        }
    }
    tool_json_end_array(j);
}

/* Everything an inspector decides on, in one object with every key always present (qemu-img
 * leaves some out when false or absent). */
static void print_inspection(struct tool_json *j, const struct qcow2_info *in)
{
    tool_json_begin_object(j, "inspection");
    tool_json_str(j, "format", tool_format_name(in->format));
    tool_json_int(j, "virtual-size", (int64_t)in->virtual_size);
    tool_json_str(j, "backing-filename", in->backing_file ? in->backing_file : "");
    tool_json_str(j, "backing-format", in->backing_fmt ? in->backing_fmt : "");
    tool_json_str(j, "data-file", in->data_file ? in->data_file : "");
    tool_json_bool(j, "data-file-raw", in->data_file_raw);
    tool_json_bool(j, "encrypted", in->encrypted);
    tool_json_bool(j, "corrupt", in->corrupt);
    tool_json_bool(j, "dirty", in->dirty);
    tool_json_int(j, "snapshots", in->nb_snapshots);
    tool_json_int(j, "bitmaps", in->nb_bitmaps);
    tool_json_bool(j, "bitmaps-inconsistent", in->bitmaps_inconsistent);
    json_bits(j, "unknown-incompatible-features", in->unknown_incompatible_features);
    json_bits(j, "unknown-compatible-features", in->unknown_compatible_features);
    json_bits(j, "unknown-autoclear-features", in->unknown_autoclear_features);
    tool_json_end_object(j);
}


static void print_json(struct tool_json *j, const struct info_item *it)
{
    const struct qcow2_info *in = &it->info;
    int is_qcow2 = in->format == QCOW2_FORMAT_QCOW2;

    /* Key order is the iteration order of QEMU's QDict hash table, not the schema's. */
    tool_json_begin_object(j, NULL);
    if (in->backing_file && in->backing_fmt) {
        tool_json_str(j, "backing-filename-format", in->backing_fmt);
    }
    (void)tool_json_snapshots(j, it->img);
    tool_json_int(j, "virtual-size", (int64_t)in->virtual_size);
    tool_json_str(j, "filename", it->filename);
    if (is_qcow2 && in->cluster_size) {
        tool_json_int(j, "cluster-size", in->cluster_size);
    }
    tool_json_str(j, "format", tool_format_name(in->format));
    tool_json_int(j, "actual-size", (int64_t)in->actual_size);
    if (is_qcow2) {
        struct tool_spec_field f[TOOL_SPEC_MAX];
        int n = tool_qcow2_specific(it->img, in, f);

        tool_json_begin_object(j, "format-specific");
        tool_json_str(j, "type", "qcow2");
        tool_json_begin_object(j, "data");
        for (int i = 0; i < n; i++) {
            switch (f[i].kind) {
            case TOOL_SPEC_STR:
                tool_json_str(j, f[i].key, f[i].s);
                break;
            case TOOL_SPEC_INT:
                tool_json_int(j, f[i].key, f[i].i);
                break;
            case TOOL_SPEC_BOOL:
                tool_json_bool(j, f[i].key, (int)f[i].i);
                break;
            case TOOL_SPEC_BITMAPS:
                tool_json_bitmaps(j, f[i].img);
                break;
            }
        }
        tool_json_end_object(j);
        tool_json_end_object(j);
    }
    if (in->backing_file && it->full_backing) {
        tool_json_str(j, "full-backing-filename", it->full_backing);
    }
    if (in->encrypted) {
        tool_json_bool(j, "encrypted", 1);
    }
    if (in->backing_file) {
        tool_json_str(j, "backing-filename", in->backing_file);
    }
    tool_json_bool(j, "dirty-flag", is_qcow2 && in->dirty);
    if (it->inspect) {
        print_inspection(j, in);
    }
    tool_json_end_object(j);
}

static void print_human(const struct info_item *it)
{
    const struct qcow2_info *in = &it->info;
    char vsize[64], dsize[64];

    tool_human_size(vsize, sizeof(vsize), in->virtual_size);
    tool_human_size(dsize, sizeof(dsize), in->actual_size);
    printf("image: %s\n"
           "file format: %s\n"
           "virtual size: %s (%llu bytes)\n"
           "disk size: %s\n",
           it->filename, tool_format_name(in->format), vsize,
           (unsigned long long)in->virtual_size, dsize);
    if (in->encrypted) {
        printf("encrypted: yes\n");
    }
    if (in->format == QCOW2_FORMAT_QCOW2 && in->cluster_size) {
        printf("cluster_size: %u\n", in->cluster_size);
    }
    if (in->format == QCOW2_FORMAT_QCOW2 && in->dirty) {
        printf("cleanly shut down: no\n");
    }
    if (in->backing_file) {
        printf("backing file: %s", in->backing_file);
        if (!it->full_backing) {
            printf(" (cannot determine actual path)");
        } else if (strcmp(in->backing_file, it->full_backing) != 0) {
            printf(" (actual path: %s)", it->full_backing);
        }
        printf("\n");
        if (in->backing_fmt) {
            printf("backing file format: %s\n", in->backing_fmt);
        }
    }
    (void)tool_print_snapshots(it->img);
    if (in->format == QCOW2_FORMAT_QCOW2) {
        printf("Format specific information:\n");
        tool_print_format_specific(it->img, in, "    ");
    }
}

int cmd_info(int argc, char **argv)
{
    enum { OPT_OUTPUT = 256, OPT_BACKING_CHAIN };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
        { "force-share", no_argument, NULL, 'U' },
        { "format", required_argument, NULL, 'f' },
        TOOL_TRUST_LONGOPTS,
        { NULL, 0, NULL, 0 },
    };
    struct tool_trust trust = { 0 };
    enum tool_output output = TOOL_OUTPUT_HUMAN;
    const char *fmtname = NULL;
    int chain = 0, c, n = 0, ret = TOOL_EXIT_ERROR;
    struct qcow2_image *imgs[INFO_MAX_CHAIN] = { 0 };
    struct info_item items[INFO_MAX_CHAIN];
    enum qcow2_format fmt;
    struct tool_json j;
    const char *path;

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:U", longopts, NULL)) != -1) {
        if (tool_trust_option(&trust, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'h':
            info_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if (tool_parse_output(optarg, &output) < 0) {
                return TOOL_EXIT_ERROR;
            }
            break;
        case OPT_BACKING_CHAIN:
            chain = 1;
            break;
        default:
            return tool_usage_error("info", "invalid option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("info", "expecting one image file name");
    }
    if (tool_parse_format(fmtname, &fmt) < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (trust.untrusted && chain) {
        return tool_usage_error("info", "--backing-chain opens other files: not with --untrusted");
    }

    /* Gather everything first: an error half-way through prints nothing on stdout. */
    path = argv[optind];
    for (;;) {
        struct info_item *it = &items[n];
        int r;

        memset(it, 0, sizeof(*it));
        it->info = QCOW2_INFO_INIT;
        for (int i = 0; i < n; i++) {
            if (strcmp(items[i].filename, path) == 0) {
                tool_error("backing file '%s' creates an infinite loop", path);
                goto out;
            }
        }
        if (tool_open_trust(path, fmt,
                            TOOL_OPEN_NO_BACKING | (trust.untrusted ? TOOL_OPEN_INSPECT : 0),
                            &trust, &imgs[n]) < 0) {
            goto out;
        }
        n++;
        it->filename = path;
        it->inspect = trust.untrusted;
        it->img = imgs[n - 1];
        r = qcow2_get_info(imgs[n - 1], &it->info);
        if (r < 0) {
            tool_image_error(imgs[n - 1], r, "%s", path);
            goto out;
        }
        if (it->info.bitmaps_inconsistent) {
            tool_warn_disowned_bitmaps(&it->info);
        }
        if (it->info.backing_file) {
            it->full_backing = tool_path_combine(path, it->info.backing_file);
        }
        if (!chain || !it->info.backing_file || !it->full_backing) {
            break;
        }
        if (n == INFO_MAX_CHAIN) {
            tool_error("%s: backing chain longer than %d images", argv[optind], INFO_MAX_CHAIN);
            goto out;
        }
        path = it->full_backing;
        fmt = QCOW2_FORMAT_PROBE;
        if (it->info.backing_fmt && tool_parse_format(it->info.backing_fmt, &fmt) < 0) {
            goto out;
        }
    }

    if (output == TOOL_OUTPUT_JSON) {
        tool_json_init(&j, stdout);
        if (chain) {
            tool_json_begin_array(&j, NULL);
        }
        for (int i = 0; i < n; i++) {
            print_json(&j, &items[i]);
        }
        if (chain) {
            tool_json_end_array(&j);
        }
        tool_json_finish(&j);
    } else {
        for (int i = 0; i < n; i++) {
            if (i > 0) {
                printf("\n");
            }
            print_human(&items[i]);
        }
    }
    ret = TOOL_EXIT_OK;
out:
    for (int i = n - 1; i >= 0; i--) {
        free(items[i].full_backing);
        tool_close(imgs[i], items[i].filename);
    }
    return ret;
}
