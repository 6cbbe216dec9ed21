/* fuzz_beneath.c - libFuzzer target: a backing or data-file name from a hostile header,
 * resolved beneath a directory by file_open_beneath() (file.c), through openat2 and through
 * the fallback walk. The directory, made once, holds files, subdirectories and symbolic links
 * pointing inside and out (to a file, to a directory, absolute, to ".."). Whatever opens must
 * be one of the regular files inside, and the walk, which follows no symbolic link, must
 * never open a file that openat2 refuses. Any violation aborts (a crash for libFuzzer). */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_NAME 512

static char g_in[256];
static ino_t g_inside[3]; /* the regular files inside */

static void make(const char *rel, const char *link_target, bool dir)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", g_in, rel);
    int ret = link_target ? symlink(link_target, p) : dir ? mkdir(p, 0755) : 0;
    if (!link_target && !dir) {
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ret = fd < 0 ? -1 : close(fd);
    }
    if (ret < 0) {
        perror(p);
        abort();
    }
}

static void setup(void)
{
    char base[] = "/tmp/fuzz_beneath.XXXXXX";
    if (!mkdtemp(base))
        abort();
    char out[300];
    snprintf(out, sizeof(out), "%s/out", base);
    snprintf(g_in, sizeof(g_in), "%s/in", base);
    if (mkdir(out, 0755) < 0 || mkdir(g_in, 0755) < 0)
        abort();
    snprintf(out, sizeof(out), "%s/out/x", base);
    int fd = open(out, O_WRONLY | O_CREAT, 0600);
    if (fd < 0)
        abort();
    close(fd);
    static const char *const files[] = {"a", "sub/b", "sub/deeper/c"};
    make("sub", NULL, true);
    make("sub/deeper", NULL, true);
    for (int i = 0; i < 3; i++) {
        make(files[i], NULL, false);
        char p[512];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", g_in, files[i]);
        if (stat(p, &st) < 0)
            abort();
        g_inside[i] = st.st_ino;
    }
    make("in-link", "a", false);
    make("sub/up-link", "../a", false);
    make("out-link", "../out/x", false);
    make("dir-out", "../out", false);
    make("abs-link", "/etc/hostname", false);
    make("sub/updir", "..", false);
    make("sub/deeper/escape", "../../../out", false);
}

/* 1 opened (a file inside, checked), 0 refused. */
static int try_open(const char *name, unsigned flags)
{
    struct qcow2_file *f = NULL;
    char err[QCOW2_ERROR_MAX];
    if (file_open_beneath(g_in, name, FILE_READ_ONLY | flags, &f, err, sizeof(err)) < 0) {
        if (f)
            abort(); /* a failure leaves no handle */
        return 0;
    }
    bool inside = false;
    for (int i = 0; i < 3; i++)
        inside |= f->has_identity && f->ino == g_inside[i];
    if (!inside) {
        fprintf(stderr, "'%s' opened a file outside (flags 0x%x)\n", name, flags);
        abort();
    }
    file_close(f);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_in[0])
        setup();
    char name[MAX_NAME + 1];
    size_t n = size < MAX_NAME ? size : MAX_NAME;
    memcpy(name, data, n);
    name[n] = '\0';
    int by_openat2 = try_open(name, 0);
    int by_walk = try_open(name, FILE_NO_OPENAT2);
    if (by_walk && !by_openat2) {
        fprintf(stderr, "'%s': the walk opened what openat2 refused\n", name);
        abort();
    }
    return 0;
}
