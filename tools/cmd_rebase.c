/* cmd_rebase.c - "qcow2 rebase": put another backing file under an image, copying what the
 * old and new chains read differently (safe mode) or only rewriting the header (-u), as
 * qemu-img rebase, with its options, messages and exit codes. Thin over qcow2_rebase(). */
#include <getopt.h>

#include "tool.h"

static void rebase_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " rebase [-f FMT] [-u] -b NEW|-b \"\" [-F FMT] [-p] [-q] [-c] "
            "FILE\n"
            "\n"
            "Make NEW the backing file of FILE. Safe mode copies into FILE whatever the old and\n"
            "the new backing chain read differently, so that the guest sees the same disk;\n"
            "-b \"\" makes FILE stand alone.\n"
            "\n"
            "  -f FMT    format of FILE (qcow2); probed if omitted\n"
            "  -b NEW    the new backing file, relative to FILE's directory\n"
            "  -F FMT    format of NEW (qcow2 or raw)\n"
            "  -u        unsafe: only rewrite the backing file name in the header\n"
            "  -c        write the copied clusters compressed\n"
            "  -p        show progress (on a terminal)\n"
            "  -q        quiet\n");
}

int cmd_rebase(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { NULL, 0, NULL, 0 },
    };
    struct qcow2_rebase_opts opts = QCOW2_REBASE_OPTS_INIT;
    enum qcow2_format fmt = QCOW2_FORMAT_PROBE;
    const char *fmtname = NULL, *bfmtname = NULL, *path;
    int quiet = 0, progress = 0, c, ret;
    struct tool_progress prog;
    struct qcow2_image *img;

    optind = 0;
    while ((c = getopt_long(argc, argv, "hf:F:b:upqct:T:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            rebase_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'F':
            bfmtname = optarg;
            break;
        case 'b':
            opts.backing_file = optarg;
            break;
        case 'u':
            opts.unsafe = 1;
            break;
        case 'c':
            opts.compress = 1;
            break;
        case 'p':
            progress = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 't': /* cache modes and -U: accepted, the library has one behaviour */
        case 'T':
        case 'U':
            break;
        default:
            return tool_usage_error("rebase", "invalid option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("rebase", "Expecting one image file name");
    }
    path = argv[optind];
    if (!opts.unsafe && !opts.backing_file) {
        return tool_usage_error("rebase", "Must specify backing file (-b) or use unsafe mode "
                                          "(-u)");
    }
    if (tool_parse_format(fmtname, &fmt) < 0 ||
        tool_parse_format(bfmtname, &opts.backing_format) < 0) {
        return TOOL_EXIT_ERROR;
    }
    /* qemu-img 7.2 copies the data first and only then refuses a new backing file without
     * a format; refusing before anything is written leaves the image as it was. */
    if (opts.backing_file && *opts.backing_file && !bfmtname) {
        tool_error("Could not change the backing file to '%s': backing format must be "
                   "specified",
                   opts.backing_file);
        return TOOL_EXIT_ERROR;
    }
    if (tool_open(path, fmt, TOOL_OPEN_WRITABLE | (opts.unsafe ? TOOL_OPEN_NO_BACKING : 0),
                  &img) < 0) {
        return TOOL_EXIT_ERROR;
    }
    tool_progress_init(&prog, progress && !quiet, 2.0f);
    opts.progress = tool_progress_cb;
    opts.progress_opaque = &prog;
    ret = qcow2_rebase(img, &opts);
    tool_progress_end(&prog);
    ret = tool_finish(img, path, ret);
    return ret < 0 ? TOOL_EXIT_ERROR : TOOL_EXIT_OK;
}
