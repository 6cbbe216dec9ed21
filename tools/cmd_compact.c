/* cmd_compact.c - "qcow2 compact": move clusters from the end of a qcow2 image file into the
 * free clusters lower down and truncate the file (qemu-img has no equivalent; the syntax
 * follows its other commands). Thin over qcow2_compact(). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void compact_usage(FILE *f)
{
    fprintf(f, "usage: " TOOL_NAME " compact [-f FMT] [-p] [-q] FILE\n"
               "\n"
               "Move clusters from the end of FILE into free space lower down and shrink the\n"
               "file. The guest view does not change; the image must not be in use.\n"
               "\n"
               "  -f FMT  image format (qcow2); probed if omitted\n"
               "  -p      show progress\n"
               "  -q      quiet: print nothing on success\n");
}

int cmd_compact(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum qcow2_format fmt = QCOW2_FORMAT_PROBE;
    const char *fmtname = NULL, *path;
    int quiet = 0, progress = 0, c, ret;
    struct qcow2_image *img;
    struct tool_progress p;

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:pq", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            compact_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'p':
            progress = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        default:
            return tool_usage_error("compact", "invalid option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("compact", "Expecting one image file name");
    }
    path = argv[optind];
    if (tool_parse_format(fmtname, &fmt) < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (tool_open(path, fmt, TOOL_OPEN_WRITABLE, &img) < 0) {
        return TOOL_EXIT_ERROR;
    }
    tool_progress_init(&p, progress && !quiet, 1.0f);
    ret = qcow2_compact(img, tool_progress_cb, &p);
    tool_progress_end(&p);
    if (ret < 0) {
        tool_error("%s", qcow2_error(img)[0] ? qcow2_error(img) : strerror(-ret));
    }
    if (tool_close(img, path) < 0) {
        ret = -1;
    }
    return ret < 0 ? TOOL_EXIT_ERROR : TOOL_EXIT_OK;
}
