/* fuzz_open.c - libFuzzer target: a hostile image through the public API.
 * The input is written to a file in a private directory (so that backing and data-file names,
 * confined to it, resolve to nothing but a small raw "data.raw"). Then:
 *   read-only: open, block status over the disk, read every allocated extent, qcow2_check
 *              (also in untrusted mode); an inspect_only open and its info;
 *   writable:  open for repair, qcow2_check with every fix, close;
 *              open normally, write / zero / discard a few clusters, shrink to half and
 *              grow back, flush, close.
 * Work per input is bounded here (extents walked, bytes read); memory is not: the library
 * must bound its own allocations (libFuzzer's -malloc_limit_mb reports any that it does
 * not). Failures of the library are fine; crashes, sanitizer reports and hangs are not. */
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_EXTENTS 4096            /* block status calls per pass */
#define MAX_READ (8u * 1024 * 1024) /* guest bytes read per pass */
#define READ_CHUNK (256u * 1024)
/* Repairs may grow the file to hold what a hostile header points at (QEMU's check -r all
 * does the same: one 11 KB input grows to 24 GB). Growth past this fails with EFBIG. */
#define MAX_FILE_SIZE (64ull * 1024 * 1024)

static char g_dir[256], g_image[300], g_data[300];
static uint8_t *g_buf;

static int write_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    size_t at = 0;
    while (at < size) {
        ssize_t n = write(fd, data + at, size - at);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        at += (size_t)n;
    }
    close(fd);
    return 0;
}

static void cleanup(void)
{
    unlink(g_image);
    unlink(g_data);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/fuzz_open.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(g_image, sizeof(g_image), "%s/image.qcow2", g_dir);
    snprintf(g_data, sizeof(g_data), "%s/data.raw", g_dir);
    g_buf = malloc(READ_CHUNK);
    if (!g_buf)
        exit(1);
    struct rlimit fsize = {MAX_FILE_SIZE, MAX_FILE_SIZE};
    if (setrlimit(RLIMIT_FSIZE, &fsize) < 0)
        perror("setrlimit");
    atexit(cleanup);
    return 0;
}

static void walk(struct qcow2_image *img)
{
    uint64_t size = qcow2_get_size(img), off = 0, read = 0;
    for (unsigned i = 0; i < MAX_EXTENTS && off < size; i++) {
        struct qcow2_extent e = QCOW2_EXTENT_INIT;
        if (qcow2_block_status(img, off, size - off, &e) < 0 || e.length == 0 ||
            e.start != off || e.length > size - off)
            break;
        if ((e.flags & QCOW2_BS_DATA) && read < MAX_READ) {
            uint64_t n = e.length < READ_CHUNK ? e.length : READ_CHUNK;
            (void)qcow2_pread(img, g_buf, (size_t)n, off);
            read += n;
        }
        off += e.length;
    }
    /* The last cluster and a range across the end are read too. */
    if (size)
        (void)qcow2_pread(img, g_buf, size < 512 ? (size_t)size : 512, size - (size < 512 ? size : 512));
    (void)qcow2_pread(img, g_buf, 1024, size > 512 ? size - 512 : 0);
}

/* untrusted: its limits, and names resolved beneath g_dir; inspect: what `qcow2 info
 * --untrusted` does (an inspect_only open, the info, and guest I/O must be refused). */
static void read_only_pass(bool backing, bool untrusted, bool inspect)
{
    struct qcow2_open_opts o;
    o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = 1;
    o.no_backing = !backing;
    o.confine_paths = 1;
    o.untrusted = untrusted;
    o.allowed_dir = untrusted ? g_dir : NULL;
    o.inspect_only = inspect;
    struct qcow2_image *img;
    char err[QCOW2_ERROR_MAX];
    if (qcow2_open(g_image, &o, &img, err, sizeof(err)) < 0)
        return;
    struct qcow2_info info = QCOW2_INFO_INIT;
    (void)qcow2_get_info(img, &info);
    if (inspect) {
        if (qcow2_pread(img, g_buf, 512, 0) != -EPERM)
            abort();
        qcow2_close(img);
        return;
    }
    walk(img);
    struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
    (void)qcow2_check(img, 0, &res, NULL, NULL);
    qcow2_close(img);
}

static void writable_pass(void)
{
    struct qcow2_open_opts o;
    o = QCOW2_OPEN_OPTS_INIT;
    o.no_backing = 1;
    o.confine_paths = 1;
    o.repair = 1;
    struct qcow2_image *img;
    char err[QCOW2_ERROR_MAX];
    if (qcow2_open(g_image, &o, &img, err, sizeof(err)) == 0) {
        struct qcow2_check_result res = QCOW2_CHECK_RESULT_INIT;
        (void)qcow2_check(img, QCOW2_CHECK_FIX_LEAKS | QCOW2_CHECK_FIX_ERRORS, &res, NULL,
                          NULL);
        qcow2_close(img);
    }
    o.repair = 0;
    if (qcow2_open(g_image, &o, &img, err, sizeof(err)) < 0)
        return;
    uint64_t size = qcow2_get_size(img);
    memset(g_buf, 0xa5, 65536);
    const uint64_t offs[] = {0, 4096 + 100, size / 2, size > 70000 ? size - 70000 : 0};
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        uint64_t off = offs[i];
        uint64_t n = size - off < 65536 ? size - off : 65536;
        if (off >= size)
            continue;
        (void)qcow2_pwrite(img, g_buf, (size_t)n, off, 0);
    }
    (void)qcow2_pwrite_zeroes(img, 0, size < 131072 ? size : 131072, QCOW2_ZERO_MAY_UNMAP);
    (void)qcow2_discard(img, size / 2, size < 131072 ? size : 131072);
    /* A shrink drops tables and refcount blocks and cuts the file; growing back reads zeros. */
    if (qcow2_truncate(img, size / 2 / 512 * 512, QCOW2_PREALLOC_OFF, QCOW2_TRUNCATE_SHRINK) == 0)
        (void)qcow2_truncate(img, size, QCOW2_PREALLOC_OFF, 0);
    (void)qcow2_flush(img);
    walk(img);
    qcow2_close(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t zeros[65536];
    static bool once;
    if (!once) { /* after libFuzzer's own handlers: growth past the limit is just EFBIG */
        signal(SIGXFSZ, SIG_IGN);
        once = true;
    }
    if (write_file(g_image, data, size) < 0 || write_file(g_data, zeros, sizeof(zeros)) < 0)
        return 0;
    read_only_pass(false, false, false);
    read_only_pass(true, false, false); /* backing names: data.raw, the image itself, nothing */
    read_only_pass(true, true, false);
    read_only_pass(false, true, true);
    writable_pass();
    return 0;
}
