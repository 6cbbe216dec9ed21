/* cmd_amend.c - "qcow2 amend": change the format options of an image, as qemu-img amend, with
 * its syntax, its messages and its exit codes. Values go through the library's one -o parser
 * (qcow2_create_opts_set); this file only knows which keys qemu-img accepts for amend, and
 * passes the ones given to qcow2_amend(). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void amend_usage(FILE *f)
{
    fprintf(f, "usage: " TOOL_NAME " amend [-f FMT] [-p] [-q] -o OPTIONS FILE\n"
               "\n"
               "Change the format options of FILE in place ('-o help' lists them).\n"
               "\n"
               "  -f FMT      image format (qcow2); probed if omitted\n"
               "  -o OPTIONS  comma-separated key=value options, as qemu-img amend\n"
               "  -p          show progress\n"
               "  -q          quiet\n");
}

/* qemu-img 7.2's list, encryption options included (refused here: no encryption). */
static void print_amend_help(void)
{
    static const char *const lines[][2] = {
        { "backing_file=<str>", "File name of a base image" },
        { "backing_fmt=<str>", "Image format of the base image" },
        { "compat=<str>", "Compatibility level (v2 [0.10] or v3 [1.1])" },
        { "data_file=<str>", "File name of an external data file" },
        { "data_file_raw=<bool (on/off)>", "The external data file must stay valid as a raw image" },
        { "encrypt.iter-time=<num>", "Time to spend in PBKDF in milliseconds" },
        { "encrypt.keyslot=<num>", "Select a single keyslot to modify explicitly" },
        { "encrypt.new-secret=<str>",
          "New secret to set in the matching keyslots. Empty string to erase" },
        { "encrypt.old-secret=<str>", "Select all keyslots that match this password" },
        { "encrypt.state=<str>", "Select new state of affected keyslots (active/inactive)" },
        { "lazy_refcounts=<bool (on/off)>", "Postpone refcount updates" },
        { "refcount_bits=<num>", "Width of a reference count entry in bits" },
        { "size=<size>", "Virtual disk size" },
    };

    printf("Amend options for 'qcow2':\n");
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        printf("  %-22s - %s\n", lines[i][0], lines[i][1]);
    }
}

/* The amendable keys and the fields they set. */
static const struct {
    const char *key;
    unsigned flag;
} amend_keys[] = {
    { "compat", QCOW2_AMEND_COMPAT },
    { "lazy_refcounts", QCOW2_AMEND_LAZY_REFCOUNTS },
    { "refcount_bits", QCOW2_AMEND_REFCOUNT_BITS },
    { "size", QCOW2_AMEND_SIZE },
    { "backing_file", QCOW2_AMEND_BACKING_FILE },
    { "backing_fmt", QCOW2_AMEND_BACKING_FMT },
    { "data_file", QCOW2_AMEND_DATA_FILE },
    { "data_file_raw", QCOW2_AMEND_DATA_FILE_RAW },
};

/* qcow2 creation options that amend refuses with a hint. */
static const char *const create_only[] = {
    "cluster_size", "compression_type", "extended_l2", "preallocation", "encryption",
    "encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode",
    "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg", NULL,
};

static int in_list(const char *const *list, const char *key)
{
    for (; *list; list++) {
        if (strcmp(*list, key) == 0) {
            return 1;
        }
    }
    return 0;
}

/* One -o item into `o`, with qemu-img's messages for what it refuses. Returns its flag, or 0
 * after printing the error. */
static unsigned amend_option(struct qcow2_create_opts *o, const char *key, const char *value)
{
    char err[QCOW2_ERROR_MAX];
    unsigned flag = 0;

    for (size_t i = 0; i < sizeof(amend_keys) / sizeof(amend_keys[0]); i++) {
        if (strcmp(amend_keys[i].key, key) == 0) {
            flag = amend_keys[i].flag;
        }
    }
    if (!flag) {
        tool_error("Invalid parameter '%s'", key);
        if (in_list(create_only, key)) {
            fprintf(stderr, "This option is only supported for image creation\n");
        }
        return 0;
    }
    if (flag == QCOW2_AMEND_COMPAT && value && strcmp(value, "0.10") && strcmp(value, "v2") &&
        strcmp(value, "1.1") && strcmp(value, "v3")) {
        tool_error("Unknown compatibility level %s", value);
        return 0;
    }
    if (qcow2_create_opts_set(o, key, value, err, sizeof(err)) < 0) {
        if (flag == QCOW2_AMEND_LAZY_REFCOUNTS || flag == QCOW2_AMEND_DATA_FILE_RAW) {
            tool_error("Parameter '%s' expects 'on' or 'off'", key);
        } else if (flag == QCOW2_AMEND_REFCOUNT_BITS && strncmp(err, "Refcount width", 14) == 0) {
            tool_error("Refcount width must be a power of two and may not exceed 64 bits");
        } else {
            tool_error("%s", err);
        }
        return 0;
    }
    return flag;
}

/* The image's message without the library's "FILE: " prefix (qemu-img prints none). */
static const char *strip_path(const char *msg, const char *path)
{
    size_t n = strlen(path);

    if (strncmp(msg, path, n) == 0 && strncmp(msg + n, ": ", 2) == 0) {
        return msg + n + 2;
    }
    return msg;
}

static int amend_image(struct qcow2_image *img, const char *path, char *list, int progress)
{
    struct qcow2_create_opts o = QCOW2_CREATE_OPTS_INIT;
    struct tool_progress p;
    unsigned which = 0;
    char *cursor = list, *key, *value;
    const char *msg;
    int ret;

    if (list[0] == '\0') {
        tool_error("Invalid option list: %s", list);
        return -EINVAL;
    }
    while ((key = tool_options_next(&cursor, &value))) {
        unsigned flag = amend_option(&o, key, value);

        if (!flag) {
            return -EINVAL;
        }
        which |= flag;
    }
    tool_progress_init(&p, progress, 1.0f);
    ret = qcow2_amend(img, &o, which, tool_progress_cb, &p);
    tool_progress_end(&p);
    if (ret < 0) {
        msg = strip_path(qcow2_error(img), path);
        tool_error("%s", *msg ? msg : strerror(-ret));
        if (strcmp(msg, "Cannot amend the backing file") == 0) {
            fprintf(stderr, "You can use '" TOOL_NAME " rebase' instead.\n");
        }
    }
    return ret;
}

int cmd_amend(int argc, char **argv)
{
    enum { OPT_FORCE = 256 };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force", no_argument, NULL, OPT_FORCE },
        { NULL, 0, NULL, 0 },
    };
    enum qcow2_format fmt = QCOW2_FORMAT_PROBE;
    const char *fmtname = NULL, *path = NULL;
    char *optlist = NULL;
    int quiet = 0, progress = 0, c, ret = TOOL_EXIT_ERROR;
    struct qcow2_image *img = NULL;

    optind = 0;
    while ((c = getopt_long(argc, argv, "+hf:o:pqt:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            amend_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'o':
            if (tool_append_options(&optlist, optarg) < 0) {
                goto out;
            }
            break;
        case 'p':
            progress = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 't':        /* cache mode: the library has one */
        case OPT_FORCE:  /* only matters for LUKS keyslots */
            break;
        default:
            return tool_usage_error("amend", "invalid option");
        }
    }
    if (!optlist) {
        tool_error("Must specify options (-o)");
        fprintf(stderr, "Try '" TOOL_NAME " --help' for more information\n");
        goto out;
    }
    if (quiet) {
        progress = 0;
    }
    if (optind != argc - 1) {
        tool_error("Expecting one image file name");
        goto out;
    }
    path = argv[optind];
    if (tool_parse_format(fmtname, &fmt) < 0) {
        goto out;
    }
    if (fmt == QCOW2_FORMAT_RAW) {
        tool_error("Format driver 'raw' does not support option amendment");
        goto out;
    }
    if (fmtname && tool_options_want_help(optlist)) {
        print_amend_help();
        ret = TOOL_EXIT_OK;
        goto out;
    }
    if (tool_open(path, fmt, TOOL_OPEN_WRITABLE, &img) < 0) {
        goto out;
    }
    {
        struct qcow2_info info = QCOW2_INFO_INIT;

        if (qcow2_get_info(img, &info) == 0 && info.format == QCOW2_FORMAT_RAW) {
            tool_error("Format driver 'raw' does not support option amendment");
            goto out;
        }
    }
    if (tool_options_want_help(optlist)) {
        print_amend_help();
        ret = TOOL_EXIT_OK;
        goto out;
    }
    if (amend_image(img, path, optlist, progress) == 0) {
        ret = TOOL_EXIT_OK;
    }
out:
    if (img && tool_close(img, path) < 0) {
        ret = TOOL_EXIT_ERROR;
    }
    free(optlist);
    return ret;
}
