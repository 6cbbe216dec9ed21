/* cmd_dd.c - "qcow2 dd": qemu-img dd over qcow2_create() and qcow2_copy_range(). Parses
 * dd's operands (bs, count, skip, if, of) with qemu-img's messages, creates the output image
 * the size qemu-img makes it, and copies block by block. */
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "tool.h"

#define DD_DEFAULT_BS 512u
#define DD_MAX_BS 2147483647u /* qemu-img takes bs up to INT_MAX */

static void dd_usage(FILE *f)
{
    fprintf(f, "usage: " TOOL_NAME " dd [-f FMT] [-O OUTPUT_FMT] [-U] [bs=BLOCK_SIZE] [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT\n"
               "\n"
               "Copy INPUT's guest data into a new image OUTPUT, as qemu-img dd: from block\n"
               "SKIP up to block COUNT of INPUT (blocks of BLOCK_SIZE bytes, default 512).\n"
               "OUTPUT is created (or overwritten) with format OUTPUT_FMT (default raw).\n"
               "\n"
               "  -f FMT         format of INPUT (qcow2 or raw); probed if omitted\n"
               "  -O OUTPUT_FMT  format of OUTPUT (qcow2 or raw)\n"
               "  -U             accepted for compatibility\n");
}

struct dd_args {
    uint64_t bs, count, skip;
    int has_count, has_skip;
    const char *in, *out;
};

/* qemu-img's cvtnum_full(): a size in [min, max], or its two messages. */
static int dd_number(const char *name, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (qcow2_parse_size(s, out) < 0) {
        tool_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name);
        tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    if (*out < min || *out > max) {
        tool_error("Invalid %s specified. Must be between %" PRIu64 " and %" PRIu64 ".", name,
                   min, max);
        return -1;
    }
    return 0;
}

/* One "key=value" operand. */
static int dd_operand(char *arg, struct dd_args *a)
{
    char *value = strchr(arg, '=');

    if (value) {
        *value++ = '\0';
    }
    if (value && strcmp(arg, "bs") == 0) {
        return dd_number("bs", value, 1, DD_MAX_BS, &a->bs);
    }
    if (value && strcmp(arg, "count") == 0) {
        a->has_count = 1;
        return dd_number("count", value, 0, INT64_MAX, &a->count);
    }
    if (value && strcmp(arg, "skip") == 0) {
        a->has_skip = 1;
        return dd_number("skip", value, 0, INT64_MAX, &a->skip);
    }
    if (value && strcmp(arg, "if") == 0) {
        a->in = value;
        return 0;
    }
    if (value && strcmp(arg, "of") == 0) {
        a->out = value;
        return 0;
    }
    tool_error("unrecognized operand %s", arg);
    return -1;
}

/* The bytes of input to copy end at min(count * bs, input size) (counted from the start of
 * the input, not from skip: qemu-img's behaviour, kept); they start at skip * bs. Sets
 * *start past *end when skip lies beyond them. */
static void dd_range(const struct dd_args *a, uint64_t in_size, uint64_t *start, uint64_t *end)
{
    *end = in_size;
    if (a->has_count && a->count <= INT64_MAX / a->bs && a->count * a->bs < in_size) {
        *end = a->count * a->bs;
    }
    *start = 0;
    if (a->has_skip) {
        *start = a->skip > INT64_MAX / a->bs ? UINT64_MAX : a->skip * a->bs;
    }
}

static int dd_create(const char *path, enum qcow2_format fmt, uint64_t size)
{
    struct qcow2_create_opts o = QCOW2_CREATE_OPTS_INIT;
    char err[QCOW2_ERROR_MAX] = "";

    o.format = fmt;
    o.size = size;
    if (qcow2_create(path, &o, err, sizeof(err)) < 0) {
        tool_error("%s: error while creating output image: %s", path, err);
        return -1;
    }
    return 0;
}

int cmd_dd(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    struct dd_args a = { .bs = DD_DEFAULT_BS };
    const char *fmtname = NULL, *out_fmtname = "raw";
    struct qcow2_image *in = NULL, *out = NULL;
    enum qcow2_format fmt, out_fmt;
    uint64_t start, end;
    int c, ret = TOOL_EXIT_ERROR;

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:O:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            dd_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'O':
            out_fmtname = optarg;
            break;
        case 'U':
            break;
        default:
            return tool_usage_error("dd", "invalid option");
        }
    }
    for (int i = optind; i < argc; i++) {
        if (dd_operand(argv[i], &a) < 0) {
            return TOOL_EXIT_ERROR;
        }
    }
    if (!a.in || !a.out) {
        tool_error("Must specify both input and output files");
        return TOOL_EXIT_ERROR;
    }
    if (tool_parse_format(fmtname, &fmt) < 0 || tool_open(a.in, fmt, 0, &in) < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (tool_parse_format(out_fmtname, &out_fmt) < 0 || out_fmt == QCOW2_FORMAT_PROBE) {
        goto out;
    }
    dd_range(&a, qcow2_get_size(in), &start, &end);
    if (dd_create(a.out, out_fmt, start <= end ? end - start : 0) < 0 ||
        tool_open(a.out, out_fmt, TOOL_OPEN_WRITABLE | TOOL_OPEN_NO_BACKING, &out) < 0) {
        goto out;
    }
    if (start > end) {
        /* As dd(1): an empty output image and a message, but success. */
        tool_error("%s: cannot skip to specified offset", a.in);
        start = end;
    }
    ret = qcow2_copy_range(in, start, out, 0, end - start, (size_t)a.bs, NULL, NULL);
    if (ret < 0) {
        tool_image_error(out, ret, "error while copying");
        ret = TOOL_EXIT_ERROR;
    } else {
        ret = TOOL_EXIT_OK;
    }
out:
    if (out && tool_close(out, a.out) < 0) {
        ret = TOOL_EXIT_ERROR;
    }
    tool_close(in, a.in);
    return ret;
}
