/* fuzz_io.c - libFuzzer target: the command language of `qcow2 io` (tools/cmd_io.c), driven
 * through cmd_io(argc, argv) on a fresh 1 MiB image. The input is a list of commands, one per
 * line, each passed as a -c argument. The output of the commands is discarded (stdout here,
 * stderr by -close_fd_mask=2 in the Makefile).
 *
 * Inputs with a number above MAX_NUMBER are skipped: a "write 0 2G" is an allocation as large as
 * the user asks (up to qemu-io's 2 GiB limit per request; build with -DFUZZ_IO_ALLOW_HUGE to see
 * it), and "truncate 1P; map" walks a petabyte. Skipped too: "sleep MS", "abort" and
 * "sigraise N" (a pause, a crash or a signal on purpose), "open" (any file on the machine,
 * writable), and inputs without a command (cmd_io would read standard input). */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"

#define MAX_COMMANDS 64
#define MAX_NUMBER (64ull * 1024 * 1024)

static char g_dir[256], g_image[300];
static uint8_t *g_template;
static size_t g_template_size;

static void cleanup(void)
{
    unlink(g_image);
    rmdir(g_dir);
}

static int load(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(n > 0 ? (size_t)n : 1);
    *size = (size_t)n;
    int ok = *data && fread(*data, 1, *size, f) == *size;
    fclose(f);
    return ok ? 0 : -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/fuzz_io.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(g_image, sizeof(g_image), "%s/image.qcow2", g_dir);
    atexit(cleanup);
    struct qcow2_create_opts o;
    o = QCOW2_CREATE_OPTS_INIT;
    o.size = 1024 * 1024;
    o.cluster_size = 4096;
    char err[QCOW2_ERROR_MAX];
    if (qcow2_create(g_image, &o, err, sizeof(err)) < 0 ||
        load(g_image, &g_template, &g_template_size) < 0) {
        fprintf(stderr, "fuzz_io: cannot create the image: %s\n", err);
        exit(1);
    }
    /* Command output is noise here. (Its error messages go to stderr: run with
     * -close_fd_mask=2, which keeps libFuzzer's and the sanitizers' reports.) */
    if (!freopen("/dev/null", "w", stdout))
        exit(1);
    return 0;
}

/* Commands skipped (see above): huge numbers, sleep, abort, sigraise, open. */
static bool is_slow(const char *line)
{
    char *copy = strdup(line), *save = NULL;
    bool slow = false;
    if (!copy)
        return true;
    char *t = strtok_r(copy, " \t", &save);
    slow = t && (strcmp(t, "sleep") == 0 || strcmp(t, "abort") == 0 ||
                 strcmp(t, "sigraise") == 0 || strcmp(t, "open") == 0 || strcmp(t, "o") == 0);
#ifndef FUZZ_IO_ALLOW_HUGE
    for (; t && !slow; t = strtok_r(NULL, " \t", &save)) {
        uint64_t v;
        slow = qcow2_parse_size(t, &v) == 0 && v > MAX_NUMBER;
    }
#endif
    free(copy);
    return slow;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *argv[MAX_COMMANDS * 2 + 5];
    int argc = 0;
    argv[argc++] = "io";
    argv[argc++] = "-f";
    argv[argc++] = "qcow2";
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && argc < MAX_COMMANDS * 2 + 3;
         line = strtok_r(NULL, "\n", &save)) {
        if (is_slow(line)) {
            free(text);
            return 0;
        }
        argv[argc++] = "-c";
        argv[argc++] = line;
    }
    if (argc == 3) { /* no -c: cmd_io would read commands from standard input */
        free(text);
        return 0;
    }
    argv[argc++] = g_image;
    argv[argc] = NULL;

    int fd = open(g_image, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, g_template, g_template_size) == (ssize_t)g_template_size)
            (void)cmd_io(argc, argv);
        close(fd);
    }
    free(text);
    return 0;
}
