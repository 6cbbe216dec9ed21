/* cmd_io.c - "qcow2 io": qemu-io's command language over the library, so that one test
 * script runs through both tools. Commands: read, write (-P, -z, -u, -c), discard, flush,
 * truncate, map, info, sleep. Exit status is non-zero when any command failed, including a read -P
 * whose data does not match. Thin over include/qcow2.h; knows nothing of the format. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tool.h"

#define IO_MAX_ARGS 32

static void io_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " io [-f FMT] [-r] [-c CMD]... FILE\n"
            "\n"
            "Run qemu-io style commands on FILE.\n"
            "\n"
            "  -f FMT   image format (qcow2 or raw); probed if omitted\n"
            "  -r       open read-only\n"
            "  -c CMD   a command (repeatable), one of:\n"
            "             read [-P PAT] [-v] [-q] OFF LEN\n"
            "             write [-P PAT] [-q] OFF LEN\n"
            "             write -z [-u] OFF LEN      (zeros; -u may deallocate)\n"
            "             write -c [-P PAT] OFF LEN   (compressed)\n"
            "             discard OFF LEN\n"
            "             flush\n"
            "             truncate SIZE\n"
            "             map\n"
            "             info\n"
            "             sleep MS                  (a test aid: flush stdout, then pause)\n"
            "Numbers take k/M/G/T suffixes and 0x hex.\n");
}

/* qemu-io's cvtnum(): plain numbers, 0x hex, suffixes. */
static int io_num(const char *s, uint64_t *out)
{
    if (qcow2_parse_size(s, out) == 0)
        return 0;
    tool_error("invalid number '%s'", s);
    return -EINVAL;
}

static int split_args(char *line, char **argv)
{
    int argc = 0;
    for (char *tok = strtok(line, " \t"); tok && argc < IO_MAX_ARGS - 1;
         tok = strtok(NULL, " \t"))
        argv[argc++] = tok;
    argv[argc] = NULL;
    return argc;
}

/* qemu-io's "wrote N/N bytes at offset O" plus a summary line. */
static void report(const char *verb, uint64_t len, uint64_t off, int quiet)
{
    if (quiet)
        return;
    char human[32];
    tool_human_size(human, sizeof(human), len);
    printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", verb, len, len, off);
    printf("%s, 1 ops; 00.00 sec\n", human);
}

static void dump_hex(const uint8_t *buf, uint64_t len, uint64_t off)
{
    for (uint64_t i = 0; i < len; i += 16) {
        printf("%08" PRIx64 ": ", off + i);
        for (uint64_t j = i; j < i + 16 && j < len; j++)
            printf("%02x ", buf[j]);
        printf("\n");
    }
}

struct io_flags {
    int pattern; /* -1: none */
    int zero, unmap, compressed, verbose, quiet;
};

static int parse_io_flags(int argc, char **argv, const char *allowed, struct io_flags *fl)
{
    memset(fl, 0, sizeof(*fl));
    fl->pattern = -1;
    int c;
    optind = 0; /* glibc: 0 re-initialises getopt fully between commands */
    opterr = 0;
    while ((c = getopt(argc, argv, allowed)) != -1) {
        uint64_t v;
        switch (c) {
        case 'P':
            if (io_num(optarg, &v) < 0)
                return -1;
            fl->pattern = (int)(v & 0xff);
            break;
        case 'z': fl->zero = 1; break;
        case 'u': fl->unmap = 1; break;
        case 'c': fl->compressed = 1; break;
        case 'v': fl->verbose = 1; break;
        case 'q': fl->quiet = 1; break;
        default:
            tool_error("%s: unknown option -%c", argv[0], optopt);
            return -1;
        }
    }
    return optind;
}

static int off_len(int argc, char **argv, int first, uint64_t *off, uint64_t *len)
{
    if (argc - first != 2) {
        tool_error("%s: expected OFFSET and LENGTH", argv[0]);
        return -1;
    }
    return io_num(argv[first], off) < 0 || io_num(argv[first + 1], len) < 0 ? -1 : 0;
}

/* A request past the end of the image is refused before any buffer is allocated for it. */
static int in_image(struct qcow2_image *img, const char *cmd, uint64_t off, uint64_t len)
{
    uint64_t size = qcow2_get_size(img);
    if (off > size || len > size - off) {
        tool_error("%s: offset %" PRIu64 " length %" PRIu64 " is past the end of the image "
                   "(%" PRIu64 " bytes)", cmd, off, len, size);
        return -1;
    }
    return 0;
}

static uint8_t *alloc_buf(uint64_t len)
{
    uint8_t *b = malloc(len ? len : 1);
    if (!b)
        tool_error("out of memory for %" PRIu64 " bytes", len);
    return b;
}

static int io_read_cmd(struct qcow2_image *img, int argc, char **argv)
{
    struct io_flags fl;
    uint64_t off, len;
    int first = parse_io_flags(argc, argv, "P:vq", &fl);
    if (first < 0 || off_len(argc, argv, first, &off, &len) < 0 ||
        in_image(img, "read", off, len) < 0)
        return -1;
    uint8_t *buf = alloc_buf(len);
    if (!buf)
        return -1;
    int ret = qcow2_pread(img, buf, len, off);
    if (ret < 0) {
        tool_image_error(img, ret, "read failed");
        free(buf);
        return -1;
    }
    if (fl.pattern >= 0) {
        for (uint64_t i = 0; i < len; i++) {
            if (buf[i] != fl.pattern) {
                printf("Pattern verification failed at offset %" PRIu64 ", %" PRIu64
                       " bytes\n", off + i, len - i);
                tool_error("read -P: pattern 0x%02x expected at offset %" PRIu64
                           ", found 0x%02x", fl.pattern, off + i, buf[i]);
                free(buf);
                return -1;
            }
        }
    }
    if (fl.verbose)
        dump_hex(buf, len, off);
    free(buf);
    report("read", len, off, fl.quiet);
    return 0;
}

static int io_write_cmd(struct qcow2_image *img, int argc, char **argv)
{
    struct io_flags fl;
    uint64_t off, len;
    int first = parse_io_flags(argc, argv, "P:zucq", &fl);
    if (first < 0 || off_len(argc, argv, first, &off, &len) < 0 ||
        in_image(img, "write", off, len) < 0)
        return -1;
    if (fl.unmap && !fl.zero) {
        tool_error("write: -u needs -z");
        return -1;
    }
    int ret;
    if (fl.zero) {
        ret = qcow2_pwrite_zeroes(img, off, len, fl.unmap ? QCOW2_ZERO_MAY_UNMAP : 0);
    } else {
        uint8_t *buf = alloc_buf(len);
        if (!buf)
            return -1;
        memset(buf, fl.pattern >= 0 ? fl.pattern : 0xcd, len);
        ret = fl.compressed ? qcow2_pwrite_compressed(img, buf, len, off)
                            : qcow2_pwrite(img, buf, len, off, 0);
        free(buf);
    }
    if (ret < 0) {
        tool_image_error(img, ret, "write failed");
        return -1;
    }
    report("wrote", len, off, fl.quiet);
    return 0;
}

static int io_discard_cmd(struct qcow2_image *img, int argc, char **argv)
{
    struct io_flags fl;
    uint64_t off, len;
    int first = parse_io_flags(argc, argv, "q", &fl);
    if (first < 0 || off_len(argc, argv, first, &off, &len) < 0)
        return -1;
    int ret = qcow2_discard(img, off, len);
    if (ret < 0) {
        tool_image_error(img, ret, "discard failed");
        return -1;
    }
    report("discard", len, off, fl.quiet);
    return 0;
}

static int io_truncate_cmd(struct qcow2_image *img, int argc, char **argv)
{
    uint64_t size;
    if (argc != 2) {
        tool_error("truncate: expected SIZE");
        return -1;
    }
    if (io_num(argv[1], &size) < 0)
        return -1;
    unsigned flags = size < qcow2_get_size(img) ? QCOW2_TRUNCATE_SHRINK : 0;
    int ret = qcow2_truncate(img, size, QCOW2_PREALLOC_OFF, flags);
    if (ret < 0) {
        tool_image_error(img, ret, "truncate failed");
        return -1;
    }
    return 0;
}

/* qemu-io's map: allocated or not, per range of this image only. */
static int io_map_cmd(struct qcow2_image *img)
{
    uint64_t off = 0, size = qcow2_get_size(img);
    while (off < size) {
        struct qcow2_extent e = QCOW2_EXTENT_INIT;
        int ret = qcow2_block_status(img, off, size - off, &e);
        if (ret < 0) {
            tool_image_error(img, ret, "map failed");
            return -1;
        }
        int here = e.depth == 0 && (e.flags & QCOW2_BS_PRESENT);
        uint64_t len = e.length;
        /* merge following extents with the same answer */
        while (off + len < size) {
            struct qcow2_extent n = QCOW2_EXTENT_INIT;
            if (qcow2_block_status(img, off + len, size - off - len, &n) < 0)
                break;
            if ((n.depth == 0 && (n.flags & QCOW2_BS_PRESENT)) != here)
                break;
            len += n.length;
        }
        char h1[32], h2[32];
        tool_human_size(h1, sizeof(h1), len);
        tool_human_size(h2, sizeof(h2), off);
        printf("%s (0x%" PRIx64 ") bytes %9s allocated at offset %s (0x%" PRIx64 ")\n", h1, len,
               here ? "" : "not", h2, off);
        off += len;
    }
    return 0;
}

static int io_info_cmd(struct qcow2_image *img)
{
    struct qcow2_info info = QCOW2_INFO_INIT;
    qcow2_get_info(img, &info);
    char h[32];
    printf("format name: %s\n", tool_format_name(info.format));
    if (info.cluster_size) {
        tool_human_size(h, sizeof(h), info.cluster_size);
        printf("cluster size: %s\n", h);
    }
    tool_human_size(h, sizeof(h), info.virtual_size);
    printf("disk size: %s\n", h);
    return 0;
}

/* qemu-io's sleep: pause MS milliseconds. Output so far is flushed first, so that a test
 * watching stdout knows every earlier command has finished (and can kill the process while
 * it waits, image still open: a crash at a known point). */
static int io_sleep_cmd(int argc, char **argv)
{
    uint64_t ms;
    if (argc != 2) {
        tool_error("sleep: expected MILLISECONDS");
        return -1;
    }
    if (io_num(argv[1], &ms) < 0)
        return -1;
    fflush(stdout);
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return 0;
}

static int run_command(struct qcow2_image *img, const char *cmdline)
{
    char *line = strdup(cmdline);
    char *argv[IO_MAX_ARGS];
    if (!line)
        return -1;
    int argc = split_args(line, argv), ret;
    if (argc == 0)
        ret = 0;
    else if (!strcmp(argv[0], "read") || !strcmp(argv[0], "r"))
        ret = io_read_cmd(img, argc, argv);
    else if (!strcmp(argv[0], "write") || !strcmp(argv[0], "w"))
        ret = io_write_cmd(img, argc, argv);
    else if (!strcmp(argv[0], "discard") || !strcmp(argv[0], "d"))
        ret = io_discard_cmd(img, argc, argv);
    else if (!strcmp(argv[0], "flush") || !strcmp(argv[0], "f"))
        ret = qcow2_flush(img) < 0 ? (tool_image_error(img, -EIO, "flush failed"), -1) : 0;
    else if (!strcmp(argv[0], "truncate"))
        ret = io_truncate_cmd(img, argc, argv);
    else if (!strcmp(argv[0], "map"))
        ret = io_map_cmd(img);
    else if (!strcmp(argv[0], "info"))
        ret = io_info_cmd(img);
    else if (!strcmp(argv[0], "sleep"))
        ret = io_sleep_cmd(argc, argv);
    else {
        tool_error("unknown command '%s' (see 'qcow2 io --help')", argv[0]);
        ret = -1;
    }
    free(line);
    return ret;
}

int cmd_io(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                             {"format", required_argument, NULL, 'f'},
                                             {"read-only", no_argument, NULL, 'r'},
                                             {"cmd", required_argument, NULL, 'c'},
                                             {NULL, 0, NULL, 0}};
    enum qcow2_format fmt = QCOW2_FORMAT_PROBE;
    int read_only = 0, ncmds = 0, c;
    char **cmds = calloc((size_t)argc, sizeof(*cmds));
    if (!cmds)
        return TOOL_EXIT_ERROR;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hf:rc:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            io_usage(stdout);
            free(cmds);
            return TOOL_EXIT_OK;
        case 'f':
            if (tool_parse_format(optarg, &fmt) < 0) {
                free(cmds);
                return TOOL_EXIT_ERROR;
            }
            break;
        case 'r': read_only = 1; break;
        case 'c': cmds[ncmds++] = optarg; break;
        default:
            free(cmds);
            return tool_usage_error("io", "unknown option");
        }
    }
    if (optind != argc - 1) {
        free(cmds);
        return tool_usage_error("io", "expected exactly one FILE");
    }
    const char *path = argv[optind];
    struct qcow2_image *img;
    if (tool_open(path, fmt, read_only ? 0 : TOOL_OPEN_WRITABLE, &img) < 0) {
        free(cmds);
        return TOOL_EXIT_ERROR;
    }
    int failed = 0;
    for (int i = 0; i < ncmds; i++)
        if (run_command(img, cmds[i]) < 0)
            failed = 1;
    free(cmds);
    if (tool_close(img, path) < 0)
        failed = 1;
    return failed ? TOOL_EXIT_ERROR : TOOL_EXIT_OK;
}
