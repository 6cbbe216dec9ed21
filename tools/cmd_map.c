/* cmd_map.c - "qcow2 map": which guest ranges hold data, zeros or nothing, in which layer of
 * the backing chain and at which host offset, printed exactly as qemu-img map prints them.
 * Asks the library with qcow2_block_status and merges neighbouring answers the way qemu-img
 * does (entry_mergeable() in qemu-img.c), so the output does not depend on how finely the
 * library splits its answers. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

/* qemu-img asks for at most 1 GiB at a time; entries are merged alike whatever the split,
 * so we ask for more and let a sparse disk of terabytes take a few calls, not thousands. */
#define MAP_MAX_QUERY (1ULL << 40)

static void map_usage(FILE *f)
{
    fprintf(f, "usage: " TOOL_NAME " map [-f FMT] [--output=human|json] [-s OFFSET] [-l LENGTH] [-U] FILE\n"
               "\n"
               "Show the allocation of FILE's guest ranges, as qemu-img map.\n"
               "\n"
               "  -f FMT                image format (qcow2 or raw); probed if omitted\n"
               "  --output=FORMAT       human (default: data ranges with their host offsets)\n"
               "                        or json (every range: depth, present, zero, data, offset)\n"
               "  -s, --start-offset=N  start at guest offset N\n"
               "  -l, --max-length=N    stop after N bytes\n"
               "  -U, --force-share     accepted for compatibility\n"
               TOOL_TRUST_HELP);
}

/* qemu-img's MapEntry. */
struct map_entry {
    uint64_t start;
    uint64_t length;
    int depth;
    int present, zero, data;
    int has_offset;
    uint64_t offset;
    const char *filename; /* only with has_offset; owned by the image */
};

static int entry_mergeable(const struct map_entry *curr, const struct map_entry *next)
{
    if (curr->length == 0) {
        return 0;
    }
    if (curr->zero != next->zero || curr->data != next->data || curr->depth != next->depth ||
        curr->present != next->present || !curr->filename != !next->filename ||
        curr->has_offset != next->has_offset) {
        return 0;
    }
    if (curr->filename && strcmp(curr->filename, next->filename) != 0) {
        return 0;
    }
    if (curr->has_offset && curr->offset + curr->length != next->offset) {
        return 0;
    }
    return 1;
}

/* Print one entry; `last` ends the JSON list. Returns -1 when human output cannot describe
 * the entry (data without a host offset, as qemu-img refuses it). */
static int dump_entry(enum tool_output output, const struct map_entry *e, int last)
{
    if (output == TOOL_OUTPUT_HUMAN) {
        if (e->data && !e->has_offset) {
            tool_error("file contains external, encrypted or compressed clusters");
            return -1;
        }
        if (e->data && !e->zero) {
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start, e->length,
                   e->has_offset ? e->offset : 0, e->filename ? e->filename : "");
        }
        return 0;
    }
    printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d,"
           " \"present\": %s, \"zero\": %s, \"data\": %s",
           e->start, e->length, e->depth, e->present ? "true" : "false",
           e->zero ? "true" : "false", e->data ? "true" : "false");
    if (e->has_offset) {
        printf(", \"offset\": %" PRIu64, e->offset);
    }
    putchar('}');
    if (!last) {
        puts(",");
    }
    return 0;
}

static int get_entry(struct qcow2_image *img, const char *path, uint64_t offset, uint64_t count,
                     struct map_entry *e)
{
    struct qcow2_extent ext = QCOW2_EXTENT_INIT;
    int ret;

    ret = qcow2_block_status(img, offset, count, &ext);
    if (ret < 0) {
        tool_image_error(img, ret, "%s: could not read the status of offset %" PRIu64, path,
                         offset);
        return ret;
    }
    if (ext.start != offset || ext.length == 0 || ext.length > count) {
        tool_error("%s: block status at offset %" PRIu64 " returned an invalid range "
                   "(start %" PRIu64 ", length %" PRIu64 ")",
                   path, offset, ext.start, ext.length);
        return -EIO;
    }
    *e = (struct map_entry){
        .start = offset,
        .length = ext.length,
        .depth = ext.depth,
        .present = !!(ext.flags & QCOW2_BS_PRESENT),
        .zero = !!(ext.flags & QCOW2_BS_ZERO),
        .data = !!(ext.flags & QCOW2_BS_DATA),
        .has_offset = ext.offset >= 0,
        .offset = ext.offset >= 0 ? (uint64_t)ext.offset : 0,
    };
    if (e->has_offset) {
        e->filename = ext.filename;
    }
    return 0;
}

int cmd_map(int argc, char **argv)
{
    enum { OPT_OUTPUT = 256 };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "start-offset", required_argument, NULL, 's' },
        { "max-length", required_argument, NULL, 'l' },
        { "force-share", no_argument, NULL, 'U' },
        { "format", required_argument, NULL, 'f' },
        TOOL_TRUST_LONGOPTS,
        { NULL, 0, NULL, 0 },
    };
    enum tool_output output = TOOL_OUTPUT_HUMAN;
    const char *fmtname = NULL, *path;
    uint64_t start = 0, max_length = 0, length;
    int has_max = 0, c, ret = TOOL_EXIT_ERROR;
    struct qcow2_image *img = NULL;
    struct map_entry curr, next;
    enum qcow2_format fmt;
    struct tool_trust trust = { 0 };

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:s:l:U", longopts, NULL)) != -1) {
        if (tool_trust_option(&trust, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'h':
            map_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 's':
            if (tool_parse_size(optarg, "start offset", &start) < 0) {
                return TOOL_EXIT_ERROR;
            }
            break;
        case 'l':
            if (tool_parse_size(optarg, "length", &max_length) < 0) {
                return TOOL_EXIT_ERROR;
            }
            has_max = 1;
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if (tool_parse_output(optarg, &output) < 0) {
                return TOOL_EXIT_ERROR;
            }
            break;
        default:
            return tool_usage_error("map", "invalid option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("map", "expecting one image file name");
    }
    path = argv[optind];
    if (tool_parse_format(fmtname, &fmt) < 0 || tool_open_trust(path, fmt, 0, &trust, &img) < 0) {
        return TOOL_EXIT_ERROR;
    }

    length = qcow2_get_size(img);
    if (has_max && max_length < length - (start < length ? start : length)) {
        length = start + max_length;
    }

    if (output == TOOL_OUTPUT_HUMAN) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    } else {
        putchar('[');
    }

    /* As qemu-img: extend `curr` while the next answer is mergeable, print it when not. */
    memset(&curr, 0, sizeof(curr));
    curr.start = start;
    while (curr.start + curr.length < length) {
        uint64_t offset = curr.start + curr.length;
        uint64_t n = length - offset;

        if (n > MAP_MAX_QUERY) {
            n = MAP_MAX_QUERY;
        }
        if (get_entry(img, path, offset, n, &next) < 0) {
            goto out;
        }
        if (entry_mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0 && dump_entry(output, &curr, 0) < 0) {
            goto out;
        }
        curr = next;
    }
    if (dump_entry(output, &curr, 1) < 0) {
        goto out;
    }
    if (output == TOOL_OUTPUT_JSON) {
        printf("]\n");
    }
    ret = TOOL_EXIT_OK;
out:
    fflush(stdout);
    if (tool_close(img, path) < 0) {
        ret = TOOL_EXIT_ERROR;
    }
    return ret;
}
