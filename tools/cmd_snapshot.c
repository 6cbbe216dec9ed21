/* cmd_snapshot.c - "qcow2 snapshot": list, create, apply or delete internal snapshots, as
 * qemu-img snapshot: its options (-l | -c | -a | -d, -q, -U, -f), its lookups (-a by ID then
 * name, -d by name), its -l table and its messages and exit codes. Thin over the
 * qcow2_snapshot_* functions; knows nothing of the format. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

enum snapshot_action { ACT_NONE, ACT_LIST, ACT_CREATE, ACT_APPLY, ACT_DELETE };

static void snapshot_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " snapshot [-f FMT] [-U] [-q] [-l | -a SNAPSHOT | -c SNAPSHOT |"
            " -d SNAPSHOT] FILE\n"
            "\n"
            "Manage the internal snapshots of FILE:\n"
            "  -l           list the snapshots\n"
            "  -c SNAPSHOT  create a snapshot named SNAPSHOT of the current disk\n"
            "  -a SNAPSHOT  apply SNAPSHOT (an ID or a name): the disk goes back to it\n"
            "  -d SNAPSHOT  delete the snapshot named SNAPSHOT\n"
            "  -f FMT       image format (qcow2); probed if omitted\n"
            "  -U           open shared (only with -l)\n"
            "  -q           quiet\n");
}

/* The library's message without its "FILE: " prefix (qemu-img names the snapshot instead). */
static const char *reason(struct qcow2_image *img, const char *path)
{
    const char *msg = qcow2_error(img);
    size_t n = strlen(path);

    if (strncmp(msg, path, n) == 0 && strncmp(msg + n, ": ", 2) == 0) {
        return msg + n + 2;
    }
    return msg;
}

static int run_create(struct qcow2_image *img, const char *name)
{
    char cut[TOOL_SNAPSHOT_NAME_MAX + 1];
    struct qcow2_snapshot_opts o = QCOW2_SNAPSHOT_OPTS_INIT;
    int ret;

    snprintf(cut, sizeof(cut), "%s", name);
    o.name = cut;
    ret = qcow2_snapshot_create(img, &o);
    if (ret < 0) {
        /* qemu-img's format: the negative errno, then its text. */
        tool_error("Could not create snapshot '%s': %d (%s)", name, ret, strerror(-ret));
    }
    return ret;
}

static int run_apply(struct qcow2_image *img, const char *path, const char *name)
{
    int i = qcow2_snapshot_find(img, name, NULL);

    if (i == -ENOENT) {
        i = qcow2_snapshot_find(img, NULL, name);
    }
    if (i == -ENOENT) {
        tool_error("Could not apply snapshot '%s': Failed to load snapshot: %s", name,
                   strerror(ENOENT));
        return i;
    }
    if (i >= 0) {
        i = qcow2_snapshot_apply(img, (unsigned)i);
    }
    if (i < 0) {
        tool_error("Could not apply snapshot '%s': %s", name, reason(img, path));
    }
    return i;
}

static int run_delete(struct qcow2_image *img, const char *path, const char *name)
{
    int i = qcow2_snapshot_find(img, NULL, name);

    if (i == -ENOENT) {
        tool_error("Could not delete snapshot '%s': snapshot not found", name);
        return i;
    }
    if (i >= 0) {
        i = qcow2_snapshot_delete(img, (unsigned)i);
    }
    if (i < 0) {
        tool_error("Could not delete snapshot '%s': %s", name, reason(img, path));
    }
    return i;
}

int cmd_snapshot(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    enum snapshot_action action = ACT_NONE;
    enum qcow2_format fmt = QCOW2_FORMAT_PROBE;
    const char *fmtname = NULL, *name = NULL, *path;
    int force_share = 0, c, ret;
    struct qcow2_image *img;
    char msg[QCOW2_ERROR_MAX];
    struct qcow2_info info = QCOW2_INFO_INIT;

    optind = 0;
    while ((c = getopt_long(argc, argv, ":la:c:d:hf:qU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            snapshot_usage(stdout);
            return TOOL_EXIT_OK;
        case 'f':
            fmtname = optarg;
            break;
        case 'q':
            break; /* success prints nothing anyway */
        case 'U':
            force_share = 1;
            break;
        case 'l':
        case 'a':
        case 'c':
        case 'd':
            if (action != ACT_NONE) {
                return tool_usage_error("snapshot", "Cannot mix '-l', '-a', '-c', '-d'");
            }
            action = c == 'l' ? ACT_LIST : c == 'a' ? ACT_APPLY : c == 'c' ? ACT_CREATE
                                                                            : ACT_DELETE;
            name = c == 'l' ? NULL : optarg;
            break;
        case ':':
            return tool_usage_error("snapshot", "missing argument for option '-%c'", optopt);
        default:
            return tool_usage_error("snapshot", "unrecognized option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("snapshot", "Expecting one image file name");
    }
    path = argv[optind];
    if (tool_parse_format(fmtname, &fmt) < 0) {
        return TOOL_EXIT_ERROR;
    }
    /* As qemu-img: only -l opens read-only; no action at all opens read-write and does
     * nothing. */
    if (force_share && action != ACT_LIST) {
        tool_error("Could not open '%s': force-share=on can only be used with read-only "
                   "images",
                   path);
        return TOOL_EXIT_ERROR;
    }
    ret = tool_open_quiet(path, fmt, action == ACT_LIST ? 0 : TOOL_OPEN_WRITABLE, &img, msg,
                          sizeof(msg));
    if (ret < 0) {
        tool_error("Could not open '%s': %s", path, msg);
        return TOOL_EXIT_ERROR;
    }
    /* qemu-img warns on every open of such an image (and then applies: its bitmaps do not
     * count). */
    if (qcow2_get_info(img, &info) == 0 && info.bitmaps_inconsistent) {
        tool_warn_disowned_bitmaps(&info);
    }
    switch (action) {
    case ACT_LIST:
        ret = tool_print_snapshots(img);
        if (ret < 0) {
            tool_image_error(img, ret, "%s", path);
        }
        break;
    case ACT_CREATE:
        ret = run_create(img, name);
        break;
    case ACT_APPLY:
        ret = run_apply(img, path, name);
        break;
    case ACT_DELETE:
        ret = run_delete(img, path, name);
        break;
    case ACT_NONE:
        ret = 0;
        break;
    }
    if (tool_close(img, path) < 0) {
        ret = -EIO;
    }
    return ret < 0 ? TOOL_EXIT_ERROR : TOOL_EXIT_OK;
}
