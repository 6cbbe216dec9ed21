/* cmd_resize.c - "qcow2 resize": change an image's virtual size, as qemu-img resize, with its
 * syntax (absolute, +SIZE or -SIZE; --shrink; --preallocation), its checks in its order and
 * its messages. Thin over qcow2_truncate(); knows nothing of the format. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void resize_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " resize [-f FMT] [--shrink] [--preallocation=MODE] [-q] FILE "
            "[+|-]SIZE\n"
            "\n"
            "Change the virtual size of FILE to SIZE, or grow (+SIZE) or shrink (-SIZE) it by\n"
            "that much. SIZE takes an optional k, M, G, T, P or E suffix.\n"
            "\n"
            "  -f FMT               image format (qcow2 or raw); probed if omitted\n"
            "  --shrink             allow shrinking: data past the new end is lost\n"
            "  --preallocation=MODE how to allocate the new area when growing: off (default),\n"
            "                       metadata, falloc or full\n"
            "  -q                   quiet: print nothing on success\n");
}

static int parse_prealloc(const char *s, enum qcow2_prealloc *out)
{
    static const char *const names[] = {"off", "metadata", "falloc", "full"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum qcow2_prealloc)i;
            return 0;
        }
    }
    tool_error("Invalid preallocation mode '%s'", s);
    return -EINVAL;
}

int cmd_resize(int argc, char **argv)
{
    enum { OPT_SHRINK = 256, OPT_PREALLOC };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "quiet", no_argument, NULL, 'q' },
        { "shrink", no_argument, NULL, OPT_SHRINK },
        { "preallocation", required_argument, NULL, OPT_PREALLOC },
        { NULL, 0, NULL, 0 },
    };
    enum qcow2_prealloc prealloc = QCOW2_PREALLOC_OFF;
    enum qcow2_format fmt = QCOW2_FORMAT_PROBE;
    const char *fmtname = NULL, *size_arg, *path;
    int quiet = 0, shrink = 0, relative = 0, c, ret;
    uint64_t n, current, total;
    struct qcow2_image *img;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            resize_usage(stdout);
            return TOOL_EXIT_OK;
        }
    }
    /* As qemu-img: the size is the last argument, taken off before option parsing so that
     * "-1M" is not read as an option. */
    if (argc < 3) {
        return tool_usage_error("resize", "Not enough arguments");
    }
    size_arg = argv[--argc];

    optind = 0;
    while ((c = getopt_long(argc, argv, "hf:q", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmtname = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case OPT_SHRINK:
            shrink = 1;
            break;
        case OPT_PREALLOC:
            if (parse_prealloc(optarg, &prealloc) < 0) {
                return TOOL_EXIT_ERROR;
            }
            break;
        default:
            return tool_usage_error("resize", "invalid option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("resize", "Expecting image file name and size");
    }
    path = argv[optind];
    if (tool_parse_format(fmtname, &fmt) < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (size_arg[0] == '+' || size_arg[0] == '-') {
        relative = size_arg[0] == '+' ? 1 : -1;
        size_arg++;
    }
    if (tool_parse_size(size_arg, "size", &n) < 0) {
        return TOOL_EXIT_ERROR;
    }

    if (tool_open(path, fmt, TOOL_OPEN_WRITABLE, &img) < 0) {
        return TOOL_EXIT_ERROR;
    }
    current = qcow2_get_size(img);
    if (relative > 0) {
        total = n > UINT64_MAX - current ? 0 : current + n;
    } else if (relative < 0) {
        total = n >= current ? 0 : current - n;
    } else {
        total = n;
    }
    /* qemu-img's checks, in its order. */
    ret = -EINVAL;
    if (total == 0 || total > (uint64_t)INT64_MAX) {
        tool_error("New image size must be positive");
    } else if (total <= current && prealloc != QCOW2_PREALLOC_OFF) {
        tool_error("Preallocation can only be used for growing images");
    } else if (total < current && !shrink) {
        tool_error("Use the --shrink option to perform a shrink operation.");
        tool_error("warning: Shrinking an image will delete all data beyond the shrunken "
                   "image's end. Before performing such an operation, make sure there is no "
                   "important data there.");
    } else {
        ret = qcow2_truncate(img, total, prealloc, shrink ? QCOW2_TRUNCATE_SHRINK : 0);
        if (ret < 0) {
            tool_error("%s", qcow2_error(img)[0] ? qcow2_error(img) : strerror(-ret));
        }
    }
    if (tool_close(img, path) < 0 && ret == 0) {
        ret = -EIO;
    }
    if (ret < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (!quiet) {
        printf("Image resized.\n");
    }
    return TOOL_EXIT_OK;
}
