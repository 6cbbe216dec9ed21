/* io.h - what the two halves of "qcow2 io" share: cmd_io.c (the qemu-io program: options,
 * opening images, the command loop, open/close/reopen/quit/help) and io_cmds.c (the commands
 * that work on an open image: read, write, map, ...). Both print what qemu-io 7.2 prints,
 * byte for byte except for timings. Nothing here knows the on-disk format. */
#ifndef QCOW2_IO_H
#define QCOW2_IO_H

#include <stdint.h>
#include <time.h>

#include "tool.h"

/* The program name in messages and in the prompt. qemu-io's scripts and the filters that
 * normalise their output (QEMU's iotests strip "qemu-io> ", match "qemu-io: can't open ...")
 * expect this name, so `qcow2 io` speaks as qemu-io does. */
#define IO_PROG "qemu-io"

/* qemu's BDRV_REQUEST_MAX_BYTES: the largest single request. */
#define IO_REQUEST_MAX 2147483136LL

/* Command flags. */
#define IO_NOFILE_OK 0x1u /* runs without an open image */
#define IO_GLOBAL 0x2u    /* runs without an open image */
#define IO_WRITE 0x4u     /* needs a writable image ("Block node is read-only") */
#define IO_POLLS 0x8u     /* waits for I/O: pending aio requests report first */

/* A request of readv, writev or an aio command, and what its report needs. This tool runs an
 * aio request when it is submitted; its report is printed when qemu-io would print it, at the
 * next command that waits for I/O (or at close and exit). */
struct io_aio {
    struct io_aio *next;
    const char *what; /* the command's name in "... failed: REASON" */
    int is_write, zero, ret;
    int qflag, vflag, Cflag, Pflag, pattern;
    int64_t offset, bytes;
    uint8_t *buf; /* read data, for -v and -P */
    struct timespec elapsed;
};

/* The open image and the settings that reopen and the commands need. */
struct io_session {
    struct qcow2_image *img;          /* NULL: no file open */
    enum qcow2_format format;         /* what the image is (probe resolved) */
    int read_only;
    int writethrough;                 /* cache=writethrough/directsync: flush every write */
    int no_flush;                     /* cache=unsafe: flushes do nothing */
    int discard_ignore;               /* discard=ignore: discards do nothing */
    int snapshot;                     /* -s: img is a temporary overlay over `path` */
    struct qcow2_open_opts opts;      /* as opened, for reopen */
    char *path;                       /* host file, for reopen */
    struct tool_trust trust;          /* --untrusted, --allow-dir: for every open */
    struct io_aio *aio_first, **aio_last;
    int quit;
};

struct io_cmd {
    const char *name, *altname;
    int (*run)(struct io_session *s, int argc, char **argv);
    int argmin, argmax; /* -1: no limit */
    unsigned flags;
    const char *args, *oneline;
    const char *help; /* long help, printed after the one-line summary; may be NULL */
};

/* The commands of io_cmds.c, in any order. */
extern const struct io_cmd io_image_cmds[];
extern const int io_image_ncmds;

/* "qemu-io: MESSAGE" (qemu's error_report) and "qemu-io: warning: MESSAGE" on stderr. */
void io_error_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void io_warn_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print the command's usage line; returns -EINVAL, as qemu-io's commands do. */
int io_usage(const struct io_cmd *ct);

/* getopt() for a command's argv, with glibc's messages for bad options printed under the
 * command's name (what qemu-io shows: "read: invalid option -- 'x'"). */
int io_getopt(int argc, char **argv, const char *optstring);

/* qemu's strtosz-based cvtnum(): 0 and the value, or -EINVAL / -ERANGE (printing nothing). */
int io_cvtnum(const char *s, int64_t *out);
/* "Parsing error: ..." for a cvtnum() failure, on stdout as qemu-io prints it. */
void io_print_cvtnum_err(int err, const char *arg);

/* qemu-io's cvtstr(): "512 bytes", "1.500 KiB", "830.763850 bytes". */
void io_cvtstr(double value, char *buf, size_t len);

/* Print the reports of finished aio requests, oldest first, and free them. */
void io_aio_drain(struct io_session *s);

#endif /* QCOW2_IO_H */
