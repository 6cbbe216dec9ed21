/* cmd_compare.c - "qcow2 compare": qemu-img compare over qcow2_compare(). Parses qemu-img's
 * options, opens both images (whole chains), prints qemu-img's verdict lines and returns its
 * exit codes: 0 identical, 1 different (or a usage error), 2 an image could not be opened,
 * 3 block status failed, 4 a read failed. */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "tool.h"

#define COMPARE_EXIT_DIFFERENT 1
#define COMPARE_EXIT_OPEN 2
#define COMPARE_EXIT_STATUS 3
#define COMPARE_EXIT_READ 4

static void compare_usage(FILE *f)
{
    fprintf(f, "usage: " TOOL_NAME " compare [-f FMT] [-F FMT] [-T SRC_CACHE] [-p] [-q] [-s] [-U] FILE1 FILE2\n"
               "\n"
               "Compare what a guest sees in FILE1 and FILE2 (backing chains included), as\n"
               "qemu-img compare. Exit status: 0 identical, 1 different, 2 cannot open,\n"
               "3 block status failed, 4 read failed.\n"
               "\n"
               "  -f FMT        format of FILE1 (qcow2 or raw); probed if omitted\n"
               "  -F FMT        format of FILE2\n"
               "  -s            strict: sizes and allocation must match too\n"
               "  -p            show progress (on a terminal)\n"
               "  -q            quiet: no output, only the exit status\n"
               "  -T SRC_CACHE  accepted for compatibility\n"
               "  -U            accepted for compatibility\n");
}

/* qemu-img's cache modes: -T is checked, then has no effect here (no host page cache
 * choices in this tool). */
static int cache_mode_valid(const char *s)
{
    static const char *const modes[] = { "none", "off", "writeback", "writethrough",
                                          "directsync", "unsafe", NULL };
    for (const char *const *m = modes; *m; m++) {
        if (strcmp(s, *m) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Print the verdict in `r` as qemu-img does; returns the exit status. */
static int print_verdict(const struct qcow2_compare_result *r, int quiet)
{
    if (r->size_mismatch && !quiet) {
        printf("Warning: Image size mismatch!\n");
    }
    switch (r->outcome) {
    case QCOW2_COMPARE_IDENTICAL:
        if (!quiet) {
            printf("Images are identical.\n");
        }
        return TOOL_EXIT_OK;
    case QCOW2_COMPARE_CONTENT_MISMATCH:
        if (!quiet) {
            printf("Content mismatch at offset %" PRIu64 "!\n", r->offset);
        }
        break;
    case QCOW2_COMPARE_STATUS_MISMATCH:
        if (!quiet) {
            printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", r->offset);
        }
        break;
    case QCOW2_COMPARE_SIZE_MISMATCH:
        if (!quiet) {
            printf("Strict mode: Image size mismatch!\n");
        }
        break;
    }
    return COMPARE_EXIT_DIFFERENT;
}

/* A failed comparison, in qemu-img's words and exit codes. */
static int report_failure(const struct qcow2_compare_result *r, struct qcow2_image *img,
                          const char *path, int ret)
{
    if (r->failed_step == QCOW2_COMPARE_STEP_BLOCK_STATUS) {
        tool_error("Sector allocation test failed for %s", path);
        return COMPARE_EXIT_STATUS;
    }
    tool_image_error(img, ret, "Error while reading offset %" PRIu64 " of %s", r->offset, path);
    return COMPARE_EXIT_READ;
}

int cmd_compare(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    const char *fmt1 = NULL, *fmt2 = NULL, *path[2];
    int progress = 0, quiet = 0, strict = 0, c, ret;
    struct qcow2_image *img[2] = { NULL, NULL };
    struct qcow2_compare_result res = QCOW2_COMPARE_RESULT_INIT;
    struct tool_progress prog;
    enum qcow2_format fmt[2];

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:F:T:pqsU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            compare_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmt1 = optarg;
            break;
        case 'F':
            fmt2 = optarg;
            break;
        case 'T':
            if (!cache_mode_valid(optarg)) {
                tool_error("Invalid source cache option: %s", optarg);
                return COMPARE_EXIT_OPEN;
            }
            break;
        case 'p':
            progress = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 's':
            strict = 1;
            break;
        case 'U':
            break;
        default:
            return tool_usage_error("compare", "invalid option");
        }
    }
    if (optind != argc - 2) {
        return tool_usage_error("compare", "Expecting two image file names");
    }
    path[0] = argv[optind];
    path[1] = argv[optind + 1];
    if (tool_parse_format(fmt1, &fmt[0]) < 0 || tool_parse_format(fmt2, &fmt[1]) < 0) {
        return COMPARE_EXIT_OPEN;
    }
    for (int i = 0; i < 2; i++) {
        if (tool_open(path[i], fmt[i], 0, &img[i]) < 0) {
            ret = COMPARE_EXIT_OPEN;
            goto out;
        }
    }

    tool_progress_init(&prog, progress && !quiet, 2.0f);
    ret = qcow2_compare(img[0], img[1], strict ? QCOW2_COMPARE_STRICT : 0, &res,
                        tool_progress_cb, &prog);
    if (ret < 0) {
        int i = res.failed_image == 2 ? 1 : 0;
        ret = report_failure(&res, img[i], path[i], ret);
    } else {
        ret = print_verdict(&res, quiet);
    }
    tool_progress_end(&prog);
out:
    tool_close(img[0], path[0]);
    tool_close(img[1], path[1]);
    return ret;
}
