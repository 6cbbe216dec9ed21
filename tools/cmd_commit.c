/* cmd_commit.c - "qcow2 commit": write an overlay's data into its backing file (or a base
 * further down), then empty the overlay, as qemu-img commit, with its options, messages and
 * exit codes. Thin over qcow2_commit(); knows nothing of the format. */
#include <getopt.h>

#include "tool.h"

static void commit_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] FILE\n"
            "\n"
            "Write the data of FILE into its backing file, or into BASE further down its\n"
            "backing chain (with every layer in between), then empty FILE.\n"
            "\n"
            "  -f FMT    image format (qcow2 or raw); probed if omitted\n"
            "  -t CACHE  cache mode (accepted for compatibility)\n"
            "  -b BASE   the layer to commit into (implies -d)\n"
            "  -d        do not empty FILE afterwards\n"
            "  -p        show progress (on a terminal)\n"
            "  -q        quiet: print nothing on success\n");
}

int cmd_commit(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { NULL, 0, NULL, 0 },
    };
    struct qcow2_commit_opts opts = QCOW2_COMMIT_OPTS_INIT;
    enum qcow2_format fmt = QCOW2_FORMAT_PROBE;
    const char *fmtname = NULL, *path;
    int quiet = 0, progress = 0, c, ret;
    struct tool_progress prog;
    struct qcow2_image *img;

    optind = 0;
    while ((c = getopt_long(argc, argv, "hf:t:b:dpqr:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            commit_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 't': /* qemu-img's cache mode: accepted, the library has one */
        case 'r': /* rate limit: the copy runs at full speed */
            break;
        case 'b':
            opts.base = optarg;
            /* qemu-img: "-b implies -d", the layers above the base stay valid */
            opts.keep = 1;
            break;
        case 'd':
            opts.keep = 1;
            break;
        case 'p':
            progress = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        default:
            return tool_usage_error("commit", "invalid option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("commit", "Expecting one image file name");
    }
    path = argv[optind];
    if (tool_parse_format(fmtname, &fmt) < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (tool_open(path, fmt, opts.keep ? 0 : TOOL_OPEN_WRITABLE, &img) < 0) {
        return TOOL_EXIT_ERROR;
    }
    tool_progress_init(&prog, progress && !quiet, 1.0f);
    opts.progress = tool_progress_cb;
    opts.progress_opaque = &prog;
    ret = qcow2_commit(img, &opts);
    tool_progress_end(&prog);
    ret = tool_finish(img, path, ret);
    if (ret < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (!quiet) {
        printf("Image committed.\n");
    }
    return TOOL_EXIT_OK;
}
