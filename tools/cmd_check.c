/* cmd_check.c - "qcow2 check": check an image's consistency and optionally repair it, as
 * qemu-img check, with the same output (human or JSON) and the same exit codes:
 * 0 consistent, 1 check not completed, 2 corruptions, 3 leaks only, 63 no checks for the
 * format. The messages about each problem come from the library and go to stderr. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

#define CHECK_EXIT_CORRUPT 2
#define CHECK_EXIT_LEAKS 3
#define CHECK_EXIT_NOT_SUPPORTED 63

static void check_usage(FILE *f)
{
    fprintf(f, "usage: " TOOL_NAME " check [-q] [-f FMT] [--output=human|json] [-r leaks|all]\n"
               "                   FILE\n"
               "\n"
               "Check FILE for consistency (refcounts, table entries, COPIED flags) and, with -r,\n"
               "repair what is found.\n"
               "\n"
               "  -f FMT            image format (qcow2 or raw); probed if omitted\n"
               "  -r leaks          free leaked clusters (opens the image writable)\n"
               "  -r all            repair every kind of error, rebuilding the refcount\n"
               "                    structure if needed (opens the image writable)\n"
               "  --output=FORMAT   human (default) or json, with qemu-img's field names\n"
               "  -q                quiet: print nothing on stdout\n"
               "  -U, --force-share accepted for compatibility\n"
               TOOL_TRUST_HELP
               "\n"
               "Exit status: 0 consistent (possibly after repair), 1 check not completed,\n"
               "2 corruptions, 3 leaked clusters only, 63 format does not support checks.\n");
}

/* The library's messages about each problem, one line each on stderr. */
static void print_report(void *opaque, const char *msg)
{
    (void)opaque;
    fflush(stdout);
    fprintf(stderr, "%s\n", msg);
}

static void print_human(const struct qcow2_check_result *r, int quiet)
{
    if (quiet) {
        return;
    }
    if (!(r->corruptions || r->leaks || r->check_errors)) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions) {
            printf("\n%lld errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   (long long)r->corruptions);
        }
        if (r->leaks) {
            printf("\n%lld leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   (long long)r->leaks);
        }
        if (r->check_errors) {
            printf("\n%lld internal errors have occurred during the check.\n",
                   (long long)r->check_errors);
        }
    }
    if (r->total_clusters != 0 && r->allocated_clusters != 0) {
        printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               (unsigned long long)r->allocated_clusters,
               (unsigned long long)r->total_clusters,
               r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    }
    if (r->image_end_offset) {
        printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
    }
}

/* ImageCheck as QEMU prints it: optional members only when non-zero, in the order of QEMU's
 * QDict hash buckets. */
static void print_json(const struct qcow2_check_result *r, const char *filename,
                       const char *format, int quiet)
{
    struct tool_json j;

    if (quiet) {
        return;
    }
    tool_json_init(&j, stdout);
    tool_json_begin_object(&j, NULL);
    if (r->image_end_offset) {
        tool_json_int(&j, "image-end-offset", (int64_t)r->image_end_offset);
    }
    if (r->compressed_clusters) {
        tool_json_int(&j, "compressed-clusters", (int64_t)r->compressed_clusters);
    }
    if (r->total_clusters) {
        tool_json_int(&j, "total-clusters", (int64_t)r->total_clusters);
    }
    if (r->corruptions) {
        tool_json_int(&j, "corruptions", r->corruptions);
    }
    if (r->corruptions_fixed) {
        tool_json_int(&j, "corruptions-fixed", r->corruptions_fixed);
    }
    tool_json_int(&j, "check-errors", r->check_errors);
    if (r->leaks) {
        tool_json_int(&j, "leaks", r->leaks);
    }
    if (r->leaks_fixed) {
        tool_json_int(&j, "leaks-fixed", r->leaks_fixed);
    }
    if (r->allocated_clusters) {
        tool_json_int(&j, "allocated-clusters", (int64_t)r->allocated_clusters);
    }
    tool_json_str(&j, "filename", filename);
    tool_json_str(&j, "format", format);
    if (r->fragmented_clusters) {
        tool_json_int(&j, "fragmented-clusters", (int64_t)r->fragmented_clusters);
    }
    tool_json_end_object(&j);
    tool_json_finish(&j);
}

int cmd_check(int argc, char **argv)
{
    enum { OPT_OUTPUT = 256 };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "format", required_argument, NULL, 'f' },
        { "repair", required_argument, NULL, 'r' },
        { "quiet", no_argument, NULL, 'q' },
        { "force-share", no_argument, NULL, 'U' },
        TOOL_TRUST_LONGOPTS,
        { NULL, 0, NULL, 0 },
    };
    enum tool_output output = TOOL_OUTPUT_HUMAN;
    const char *fmtname = NULL, *path;
    unsigned fix = 0;
    int quiet = 0, c, ret;
    struct qcow2_open_opts opts;
    struct qcow2_image *img = NULL;
    struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
    char err[QCOW2_ERROR_MAX] = "";
    enum qcow2_format fmt;
    struct tool_trust trust = { 0 };

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:r:qUT:", longopts, NULL)) != -1) {
        if (tool_trust_option(&trust, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'h':
            check_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'r':
            if (strcmp(optarg, "leaks") == 0) {
                fix = QCOW2_CHECK_FIX_LEAKS;
            } else if (strcmp(optarg, "all") == 0) {
                fix = QCOW2_CHECK_FIX_LEAKS | QCOW2_CHECK_FIX_ERRORS;
            } else {
                return tool_usage_error("check", "invalid -r argument '%s' (leaks or all)",
                                        optarg);
            }
            break;
        case 'q':
            quiet = 1;
            break;
        case 'U':
        case 'T': /* qemu-img's cache mode: accepted, the library has one */
            break;
        case OPT_OUTPUT:
            if (tool_parse_output(optarg, &output) < 0) {
                return TOOL_EXIT_ERROR;
            }
            break;
        default:
            return tool_usage_error("check", "invalid option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("check", "expecting one image file name");
    }
    if (tool_parse_format(fmtname, &fmt) < 0) {
        return TOOL_EXIT_ERROR;
    }
    path = argv[optind];

    /* An open for check: it accepts tables an ordinary open refuses (the check reports
     * them), may write a corrupt image and does not repair a dirty one by itself. The check
     * reads only this image's metadata, but the backing chain is opened as qemu-img check
     * opens it, so that a missing backing file fails the check (exit 1) there too. A chain
     * that loops back (an image naming itself) fails at once with a line saying so, where
     * qemu-img 7.2 recurses without end. */
    opts = QCOW2_OPEN_OPTS_INIT;
    opts.format = fmt;
    opts.read_only = fix == 0;
    opts.repair = 1;
    tool_trust_apply(&trust, &opts);
    ret = qcow2_open(path, &opts, &img, err, sizeof(err));
    if (ret < 0) {
        tool_error("Could not open '%s': %s", path, err[0] ? err : strerror(-ret));
        return TOOL_EXIT_ERROR;
    }

    ret = qcow2_check(img, fix, &res, print_report, NULL);
    if (ret == -ENOTSUP) {
        tool_error("This image format does not support checks");
        tool_close(img, path);
        return CHECK_EXIT_NOT_SUPPORTED;
    }
    if (ret == 0 && (res.corruptions_fixed || res.leaks_fixed) &&
        output == TOOL_OUTPUT_HUMAN && !quiet) {
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %lld leaked clusters\n"
               "    %lld corruptions\n\n"
               "Double checking the fixed image now...\n",
               (long long)res.leaks_fixed, (long long)res.corruptions_fixed);
    }
    if (ret == 0) {
        if (output == TOOL_OUTPUT_JSON) {
            struct qcow2_info info = QCOW2_INFO_INIT;

            qcow2_get_info(img, &info);
            print_json(&res, path, tool_format_name(info.format), quiet);
        } else {
            print_human(&res, quiet);
        }
    }
    if (ret < 0) {
        tool_error("Check failed: %s", qcow2_error(img)[0] ? qcow2_error(img) : strerror(-ret));
    } else if (res.check_errors) {
        tool_error("Check failed");
    }
    if (tool_close(img, path) < 0 && ret == 0) {
        ret = -EIO;
    }
    if (ret < 0 || res.check_errors) {
        return TOOL_EXIT_ERROR;
    }
    if (res.corruptions) {
        return CHECK_EXIT_CORRUPT;
    }
    return res.leaks ? CHECK_EXIT_LEAKS : TOOL_EXIT_OK;
}
