/* cmd_bitmap.c - "qcow2 bitmap": change the persistent dirty bitmaps of an image, as qemu-img
 * bitmap 7.2 (actions run in command-line order on one bitmap; the first failure stops the run,
 * earlier actions stay applied), plus --dump NAME, which prints a bitmap's extents in
 * nbdinfo --map's line format (QEMU serves them over NBD; our NBD export cannot, see README).
 * Thin over the qcow2_bitmap_* calls. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

enum bitmap_act { ACT_ADD, ACT_REMOVE, ACT_CLEAR, ACT_ENABLE, ACT_DISABLE, ACT_MERGE };

static const char *const act_names[] = {"add", "remove", "clear", "enable", "disable", "merge"};

struct action {
    enum bitmap_act act;
    const char *src; /* --merge SOURCE */
};

#define MAX_ACTIONS 64

static void bitmap_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " bitmap (--merge SOURCE | --add | --remove | --clear |\n"
            "           --enable | --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]]\n"
            "           [-g GRANULARITY] [-f FMT] FILE BITMAP\n"
            "       " TOOL_NAME " bitmap --dump [--output=human|json] [-f FMT] FILE BITMAP\n"
            "\n"
            "Change the persistent dirty bitmap BITMAP of FILE; actions run in order.\n"
            "\n"
            "  --add            create BITMAP (enabled; -g sets its granularity, default the\n"
            "                   cluster size within 4k..64k)\n"
            "  --remove         delete BITMAP\n"
            "  --clear          mark all of BITMAP clean\n"
            "  --enable         start recording writes in BITMAP\n"
            "  --disable        stop recording writes in BITMAP\n"
            "  --merge SOURCE   OR bitmap SOURCE (of FILE, or of -b SOURCE_FILE) into BITMAP\n"
            "  -g GRANULARITY   bytes per bit for --add (512 .. 2G, a power of two)\n"
            "  -b SOURCE_FILE   the image --merge takes SOURCE from (-F: its format)\n"
            "  -f FMT           image format (qcow2); probed if omitted\n"
            "  --dump           print BITMAP's extents (read-only), one line each as\n"
            "                   nbdinfo --map=qemu:dirty-bitmap:BITMAP does:\n"
            "                   \"OFFSET LENGTH TYPE dirty|clean\" (TYPE 1 = dirty); with\n"
            "                   --output=json, nbdinfo --json's array\n");
}

/* The library's message without its leading "FILE: ". */
static const char *reason(struct qcow2_image *img, const char *path, int ret)
{
    const char *m = qcow2_error(img);
    size_t n = strlen(path);
    if (!m || !*m)
        return strerror(-ret);
    if (strncmp(m, path, n) == 0 && m[n] == ':' && m[n + 1] == ' ')
        return m + n + 2;
    return m;
}

static int run_action(struct qcow2_image *img, struct qcow2_image *src_img,
                      const struct action *a, const char *bitmap, uint64_t gran)
{
    switch (a->act) {
    case ACT_ADD:
        return qcow2_bitmap_add(img, bitmap, gran, 0);
    case ACT_REMOVE:
        return qcow2_bitmap_remove(img, bitmap);
    case ACT_CLEAR:
        return qcow2_bitmap_clear(img, bitmap);
    case ACT_ENABLE:
        return qcow2_bitmap_enable(img, bitmap);
    case ACT_DISABLE:
        return qcow2_bitmap_disable(img, bitmap);
    case ACT_MERGE:
        return qcow2_bitmap_merge(img, bitmap, src_img, a->src);
    }
    return -EINVAL;
}

/* --dump: every extent of the bitmap over the whole disk. */
static int dump_bitmap(struct qcow2_image *img, const char *path, const char *bitmap,
                       enum tool_output output)
{
    uint64_t size = qcow2_get_size(img), len;
    int first = 1;
    if (output == TOOL_OUTPUT_JSON) {
        printf("[");
    }
    for (uint64_t off = 0; off < size; off += len) {
        int r = qcow2_bitmap_status(img, bitmap, off, size - off, &len);
        if (r < 0) {
            fflush(stdout);
            tool_error("%s: %s", path, reason(img, path, r));
            return r;
        }
        if (output == TOOL_OUTPUT_JSON) {
            printf("%s{ \"offset\": %" PRIu64 ", \"length\": %" PRIu64
                   ", \"type\": %d, \"description\": \"%s\"}",
                   first ? "" : ",\n", off, len, r, r ? "dirty" : "clean");
        } else {
            printf("%10" PRIu64 "  %10" PRIu64 "  %3d  %s\n", off, len, r,
                   r ? "dirty" : "clean");
        }
        first = 0;
    }
    if (output == TOOL_OUTPUT_JSON) {
        printf("]\n");
    }
    return 0;
}

static int parse_granularity(const char *s, uint64_t *gran)
{
    if (qcow2_parse_size(s, gran) < 0) {
        tool_error("Invalid granularity specified. You may use k, M, G, T, P or E suffixes for");
        tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -EINVAL;
    }
    return 0;
}

struct bitmap_args {
    struct action acts[MAX_ACTIONS];
    int n;
    int add, merge, dump;
    uint64_t gran;
    const char *fmtname, *src_file, *src_fmt;
    enum tool_output output;
};

static int parse_args(int argc, char **argv, struct bitmap_args *a)
{
    enum { OPT_ADD = 256, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE, OPT_MERGE, OPT_DUMP,
           OPT_OUTPUT };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "add", no_argument, NULL, OPT_ADD },
        { "remove", no_argument, NULL, OPT_REMOVE },
        { "clear", no_argument, NULL, OPT_CLEAR },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        { "merge", required_argument, NULL, OPT_MERGE },
        { "dump", no_argument, NULL, OPT_DUMP },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "format", required_argument, NULL, 'f' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hb:f:F:g:q", longopts, NULL)) != -1) {
        if (c >= OPT_ADD && c <= OPT_MERGE) {
            if (a->n == MAX_ACTIONS) {
                tool_error("too many actions (at most %d)", MAX_ACTIONS);
                return -EINVAL;
            }
            a->acts[a->n] = (struct action){ (enum bitmap_act)(c - OPT_ADD),
                                             c == OPT_MERGE ? optarg : NULL };
            a->add |= c == OPT_ADD;
            a->merge |= c == OPT_MERGE;
            a->n++;
            continue;
        }
        switch (c) {
        case 'h':
            bitmap_usage(stdout);
            exit(TOOL_EXIT_OK);
        case 'b':
            a->src_file = optarg;
            break;
        case 'f':
            a->fmtname = optarg;
            break;
        case 'F':
            a->src_fmt = optarg;
            break;
        case 'g':
            if (parse_granularity(optarg, &a->gran) < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            break;
        case OPT_DUMP:
            a->dump = 1;
            break;
        case OPT_OUTPUT:
            if (tool_parse_output(optarg, &a->output) < 0) {
                return -EINVAL;
            }
            break;
        default:
            tool_usage_error("bitmap", "invalid option");
            return -EINVAL;
        }
    }
    return 0;
}

/* qemu-img's argument checks, in its order. */
static int check_args(const struct bitmap_args *a, int nargs)
{
    const char *why = NULL;
    if (a->dump && a->n) {
        why = "--dump cannot be combined with other actions";
    } else if (!a->dump && a->n == 0) {
        why = "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge";
    } else if (a->gran && !a->add) {
        why = "granularity only supported with --add";
    } else if (a->src_fmt && !a->src_file) {
        why = "-F only supported with -b";
    } else if (a->src_file && !a->merge) {
        why = "Merge bitmap source file only supported with --merge";
    } else if (nargs != 2) {
        why = "Expecting filename and bitmap name";
    }
    if (why) {
        tool_error("%s", why);
        return -EINVAL;
    }
    return 0;
}

int cmd_bitmap(int argc, char **argv)
{
    struct bitmap_args a = { .output = TOOL_OUTPUT_HUMAN };
    enum qcow2_format fmt, src_fmt;
    struct qcow2_image *img = NULL, *src = NULL;
    int ret = TOOL_EXIT_ERROR;

    if (parse_args(argc, argv, &a) < 0 || check_args(&a, argc - optind) < 0 ||
        tool_parse_format(a.fmtname, &fmt) < 0 || tool_parse_format(a.src_fmt, &src_fmt) < 0) {
        return TOOL_EXIT_ERROR;
    }
    const char *path = argv[optind], *bitmap = argv[optind + 1];
    if (a.add && a.gran && (uint32_t)a.gran == 0) {
        /* QEMU's QMP field is 32 bits wide: 4G wraps to 0, which it refuses. */
        tool_error("Operation add on bitmap %s failed: Granularity must be power of 2 and at "
                   "least 512", bitmap);
        return TOOL_EXIT_ERROR;
    }
    if (tool_open(path, fmt, (a.dump ? 0 : TOOL_OPEN_WRITABLE) | TOOL_OPEN_NO_BACKING,
                  &img) < 0) {
        return TOOL_EXIT_ERROR;
    }
    if (a.dump) {
        ret = dump_bitmap(img, path, bitmap, a.output) < 0 ? TOOL_EXIT_ERROR : TOOL_EXIT_OK;
        goto out;
    }
    if (a.src_file && tool_open(a.src_file, src_fmt, TOOL_OPEN_NO_BACKING, &src) < 0) {
        goto out;
    }
    for (int i = 0; i < a.n; i++) {
        int r = run_action(img, src, &a.acts[i], bitmap, (uint32_t)a.gran);
        if (r < 0) {
            tool_error("Operation %s on bitmap %s failed: %s", act_names[a.acts[i].act], bitmap,
                       reason(img, path, r));
            if (r == -EBUSY) {
                fprintf(stderr, "Try block-dirty-bitmap-remove to delete this bitmap from "
                                "disk\n");
            }
            goto out;
        }
    }
    ret = TOOL_EXIT_OK;
out:
    if (tool_close(src, a.src_file) < 0) {
        ret = TOOL_EXIT_ERROR;
    }
    if (tool_close(img, path) < 0) {
        ret = TOOL_EXIT_ERROR;
    }
    return ret;
}
