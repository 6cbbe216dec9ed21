/* qcow2.c - entry point of the qcow2 command-line tool: global options and the table of
 * subcommands. Each subcommand lives in its own tools/cmd_NAME.c and parses its own options;
 * this file only dispatches. */
#include <stdlib.h>
#include <string.h>

#include "tool.h"

/* Adding a subcommand: write tools/cmd_NAME.c, declare cmd_NAME in tool.h, add one line here. */
static const struct tool_cmd commands[] = {
    { "create", cmd_create, "create a new image" },
    { "info", cmd_info, "show information about an image (and its backing chain)" },
    { "map", cmd_map, "show how guest ranges map to files, as qemu-img map" },
    { "convert", cmd_convert, "copy an image, converting its format" },
    { "io", cmd_io, "a drop-in for qemu-io: its commands, options and output" },
    { "check", cmd_check, "check an image for errors and repair them, as qemu-img check" },
    { "resize", cmd_resize, "change the virtual size of an image, as qemu-img resize" },
    { "snapshot", cmd_snapshot, "list, create, apply or delete internal snapshots" },
    { "commit", cmd_commit, "write an overlay's data into its backing file, as qemu-img commit" },
    { "rebase", cmd_rebase, "put another backing file under an image, as qemu-img rebase" },
    { "bench", cmd_bench, "measure request throughput, as qemu-img bench" },
    { "compare", cmd_compare, "compare the guest view of two images, as qemu-img compare" },
    { "measure", cmd_measure, "how large a new image would be, as qemu-img measure" },
    { "dd", cmd_dd, "copy a range of an image into a new image, as qemu-img dd" },
    { "bitmap", cmd_bitmap, "change persistent dirty bitmaps, as qemu-img bitmap" },
    { "serve", cmd_serve, "export an image over NBD (runs nbdkit with the libqcow2 plugin)" },
    { "amend", cmd_amend, "change the format options of an image, as qemu-img amend" },
    { "compact", cmd_compact, "move clusters down and shrink the image file" },
};

#define NB_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " COMMAND [OPTIONS] ...\n"
            "       " TOOL_NAME " COMMAND --help\n"
            "       " TOOL_NAME " --help | --version\n"
            "\n"
            "Work with qcow2 and raw disk images (libqcow2 " QCOW2_VERSION_STRING
            "). The syntax follows qemu-img.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < NB_COMMANDS; i++) {
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(f, "\n"
               "Sizes take an optional suffix: k, M, G, T, P, E (powers of 1024).\n"
               "Image formats (-f, -F, -O): qcow2, raw.\n");
}

int main(int argc, char **argv)
{
    const char *name;

    if (argc < 2) {
        usage(stderr);
        return TOOL_EXIT_ERROR;
    }
    name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return TOOL_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf(TOOL_NAME " (libqcow2) version " QCOW2_VERSION_STRING "\n");
        return TOOL_EXIT_OK;
    }
    for (size_t i = 0; i < NB_COMMANDS; i++) {
        if (strcmp(name, commands[i].name) == 0) {
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    return tool_usage_error(NULL, "unknown command '%s'", name);
}
