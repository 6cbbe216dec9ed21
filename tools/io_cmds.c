/* io_cmds.c - the commands of "qcow2 io" that work on an open image (read, readv, write,
 * writev, aio_read, aio_write, aio_flush, flush, discard, truncate, length, info, alloc, map,
 * sleep, sigraise, abort and the blkdebug breakpoint commands), with qemu-io 7.2's options,
 * messages, report lines and return values. The session commands (open, close, reopen, quit,
 * help) and the command loop are in cmd_io.c. Calls only include/qcow2.h; knows nothing of
 * the on-disk format. Messages that qemu-io prints with printf go to stdout here too. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <getopt.h>
#include <unistd.h>

#include "io.h"

/* ---- messages, numbers and reports shared with cmd_io.c ---------------------------------- */

static void io_vreport(const char *prefix, const char *fmt, va_list ap)
{
    fputs(prefix, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void io_error_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    io_vreport(IO_PROG ": ", fmt, ap);
    va_end(ap);
}

void io_warn_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    io_vreport(IO_PROG ": warning: ", fmt, ap);
    va_end(ap);
}

int io_usage(const struct io_cmd *ct)
{
    printf("%s %s -- %s\n", ct->name, ct->args ? ct->args : "", ct->oneline);
    return -EINVAL;
}

int io_getopt(int argc, char **argv, const char *optstring)
{
    int c;

    opterr = 0;
    c = getopt(argc, argv, optstring);
    if (c == '?') {
        /* glibc's own wording, under the command's name, as qemu-io (opterr=1) shows it */
        if (optopt && strchr(optstring, optopt)) {
            fprintf(stderr, "%s: option requires an argument -- '%c'\n", argv[0], optopt);
        } else {
            fprintf(stderr, "%s: invalid option -- '%c'\n", argv[0], optopt);
        }
    }
    return c;
}

/* Does `s` have the shape of a size (as qemu_strtosz reads one), whatever its value? Used to
 * tell an overflow (-ERANGE, "argument too large") from a malformed number (-EINVAL), which
 * qcow2_parse_size() does not distinguish. *unit is set when a multiplier suffix is present,
 * *frac when a fraction has a nonzero digit. */
static int size_shaped(const char *s, int *unit, int *frac, int *hex)
{
    const char *p = s;

    *unit = *frac = *hex = 0;
    while (isspace((unsigned char)*p)) {
        p++;
    }
    if (*p == '+') {
        p++;
    }
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        *hex = 1;
        p += 2;
        if (!isxdigit((unsigned char)*p)) {
            return 0;
        }
        while (isxdigit((unsigned char)*p)) {
            p++;
        }
    } else {
        if (!isdigit((unsigned char)*p)) {
            return 0;
        }
        while (isdigit((unsigned char)*p)) {
            p++;
        }
        if (*p == '.') {
            for (p++; isdigit((unsigned char)*p); p++) {
                *frac |= *p != '0';
            }
        }
    }
    if (*p && strchr("bBkKmMgGtTpPeE", *p)) {
        *unit = *p != 'b' && *p != 'B';
        p++;
    }
    return *p == '\0';
}

int io_cvtnum(const char *s, int64_t *out)
{
    uint64_t v;
    int unit, frac, hex;
    int shaped = size_shaped(s, &unit, &frac, &hex);

    if (qcow2_parse_size(s, &v) < 0) {
        /* a well-formed number that does not parse is one that does not fit */
        return shaped && (unit || !frac) ? -ERANGE : -EINVAL;
    }
    if (v > INT64_MAX) {
        return -ERANGE;
    }
    if (hex && unit) {
        io_warn_report("Using a multiplier suffix on hex numbers is deprecated: %s", s);
    }
    *out = (int64_t)v;
    return 0;
}

void io_print_cvtnum_err(int err, const char *arg)
{
    if (err == -ERANGE) {
        printf("Parsing error: argument too large -- %s\n", arg);
    } else {
        printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n",
               arg);
    }
}

void io_cvtstr(double value, char *buf, size_t len)
{
    static const struct {
        int shift;
        const char *suffix;
    } units[] = { { 60, " EiB" }, { 50, " PiB" }, { 40, " TiB" },
                  { 30, " GiB" }, { 20, " MiB" }, { 10, " KiB" } };
    const char *suffix = " bytes";
    char *trim;

    snprintf(buf, len - 6, "%f", value);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        double scale = (double)(1ULL << units[i].shift);

        if (value >= scale) {
            suffix = units[i].suffix;
            snprintf(buf, len - 4, "%.3f", value / scale);
            break;
        }
    }
    /* qemu-io drops a ".000" wherever it appears ("1.000977" becomes "1 bytes"), and so do we */
    trim = strstr(buf, ".000");
    if (trim) {
        strcpy(trim, suffix);
    } else {
        strcat(buf, suffix);
    }
}

static struct timespec now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static struct timespec since(struct timespec t1)
{
    struct timespec t2 = now();

    t2.tv_sec -= t1.tv_sec;
    t2.tv_nsec -= t1.tv_nsec;
    if (t2.tv_nsec < 0) {
        t2.tv_nsec += 1000000000L;
        t2.tv_sec--;
    }
    return t2;
}

/* "00.04 sec", or "0:00:01.25" past a second and in the -C format. */
static void timestr(struct timespec t, char *buf, size_t len, int verbose)
{
    double sec = (double)(t.tv_sec % 60) + (double)t.tv_nsec / 1e9;

    if (verbose || t.tv_sec) {
        snprintf(buf, len, "%u:%02u:%05.2f", (unsigned)(t.tv_sec / 3600),
                 (unsigned)(t.tv_sec % 3600 / 60), sec);
    } else {
        snprintf(buf, len, "%05.2f sec", sec);
    }
}

static void print_report(const char *op, struct timespec t, int64_t offset, int64_t count,
                         int64_t total, int Cflag)
{
    char s1[64], s2[64], ts[64];
    double secs = (double)t.tv_sec + (double)t.tv_nsec / 1e9;

    timestr(t, ts, sizeof(ts), Cflag);
    if (!Cflag) {
        io_cvtstr((double)total, s1, sizeof(s1));
        io_cvtstr((double)total / secs, s2, sizeof(s2));
        printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op, total, count,
               offset);
        printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, 1, ts, s2, 1.0 / secs);
    } else {
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", total, 1, ts, (double)total / secs, 1.0 / secs);
    }
}

/* "00000000:  01 02 ...  ab.." - 16 bytes a line, letters and digits shown as themselves. */
static void dump_buffer(const uint8_t *buf, int64_t offset, int64_t len)
{
    for (int64_t i = 0; i < len; i += 16) {
        int64_t n = len - i < 16 ? len - i : 16;

        printf("%08" PRIx64 ":  ", (uint64_t)(offset + i));
        for (int64_t j = 0; j < n; j++) {
            printf("%02x ", buf[i + j]);
        }
        putchar(' ');
        for (int64_t j = 0; j < n; j++) {
            putchar(isalnum(buf[i + j]) ? buf[i + j] : '.');
        }
        putchar('\n');
    }
}

/* ---- helpers of the commands -------------------------------------------------------------- */

/* The -P argument: one byte, in any base strtol reads. */
static int parse_pattern(const char *arg)
{
    char *end;
    long v = strtol(arg, &end, 0);

    if (v < 0 || v > UCHAR_MAX || *end != '\0') {
        printf("%s is not a valid pattern byte\n", arg);
        return -1;
    }
    return (int)v;
}

/* Parse a number argument; on failure print qemu-io's message and return the error. */
static int num_arg(const char *arg, int64_t *out)
{
    int ret = io_cvtnum(arg, out);

    if (ret < 0) {
        io_print_cvtnum_err(ret, arg);
    }
    return ret;
}

static int length_arg(const char *arg, int64_t *out)
{
    int ret = num_arg(arg, out);

    if (ret == 0 && *out > IO_REQUEST_MAX) {
        printf("length cannot exceed %" PRIu64 ", given %s\n", (uint64_t)IO_REQUEST_MAX, arg);
        ret = -EINVAL;
    }
    return ret;
}

static int sector_aligned(int64_t offset, int64_t count)
{
    if (offset % 512) {
        printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", offset);
        return 0;
    }
    if (count % 512) {
        printf("%" PRId64 " is not a sector-aligned value for 'count'\n", count);
        return 0;
    }
    return 1;
}

static uint8_t *alloc_filled(int64_t len, int pattern)
{
    uint8_t *b = malloc(len ? (size_t)len : 1);

    if (b) {
        memset(b, pattern, (size_t)len);
    }
    return b;
}

/* The lengths of readv/writev/aio_*: their sum, or -EINVAL after the message. */
static int64_t iovec_total(char **argv, int n)
{
    int64_t total = 0, len;

    for (int i = 0; i < n; i++) {
        if (num_arg(argv[i], &len) < 0) {
            return -EINVAL;
        }
        if (len > IO_REQUEST_MAX) {
            printf("Argument '%s' exceeds maximum size %" PRIu64 "\n", argv[i],
                   (uint64_t)IO_REQUEST_MAX);
            return -EINVAL;
        }
        if (total > IO_REQUEST_MAX - len) {
            printf("The total number of bytes exceed the maximum size %" PRIu64 "\n",
                   (uint64_t)IO_REQUEST_MAX);
            return -EINVAL;
        }
        total += len;
    }
    return total;
}

/* The result of a library call. When it found the image damaged, say so on stderr as QEMU's
 * qcow2 driver does ("qcow2: Marking image as corrupt: ..."), here with the library's own
 * sentence, which names the file and what is wrong; the command then prints qemu-io's usual
 * "... failed: Input/output error". */
static int lib_result(struct io_session *s, int ret)
{
    const char *m;

    if (ret == -EIO && (m = qcow2_error(s->img)) != NULL && strstr(m, "corrupt")) {
        fprintf(stderr, "qcow2: %s\n", m);
    }
    return ret;
}

/* The size the commands see. QEMU sees a raw file in whole 512-byte sectors: a file of 1000
 * bytes is 1 KiB long there, and its last 24 bytes read as zeros. */
static uint64_t io_size(struct io_session *s)
{
    uint64_t size = qcow2_get_size(s->img);

    return s->format == QCOW2_FORMAT_RAW ? (size + 511) / 512 * 512 : size;
}

/* "OFF LEN" of read and discard: the usage line unless exactly two arguments are left, else
 * the offset and the length (at most a request's maximum). Returns 0 or the error, printed. */
static int offset_and_length(int cmd, int argc, char **argv, int64_t *offset, int64_t *len)
{
    int ret;

    if (optind != argc - 2) {
        return io_usage(&io_image_cmds[cmd]);
    }
    if ((ret = num_arg(argv[optind], offset)) < 0) {
        return ret;
    }
    return length_arg(argv[optind + 1], len);
}

/* "OFF LEN [LEN..]" of readv, writev and aio_*: the usage line when there are too few
 * arguments, else the offset and the sum of the lengths. Returns 0 or the error, printed. */
static int offset_and_lengths(int cmd, int argc, char **argv, int64_t *offset, int64_t *total)
{
    int ret;

    if (optind > argc - 2) {
        return io_usage(&io_image_cmds[cmd]);
    }
    if ((ret = num_arg(argv[optind], offset)) < 0) {
        return ret;
    }
    *total = iovec_total(argv + optind + 1, argc - optind - 1);
    return *total < 0 ? (int)*total : 0;
}

/* QEMU's block layer refuses a request that ends past the image with EIO. */
static int in_range(struct io_session *s, int64_t offset, int64_t count)
{
    uint64_t size = io_size(s);

    return (uint64_t)offset <= size && (uint64_t)count <= size - (uint64_t)offset;
}

static int do_read(struct io_session *s, uint8_t *buf, int64_t offset, int64_t count)
{
    uint64_t size = qcow2_get_size(s->img), n = (uint64_t)count;

    if (!in_range(s, offset, count)) {
        return -EIO;
    }
    if ((uint64_t)offset + n > size) { /* the tail of a raw file's last sector */
        n = (uint64_t)offset < size ? size - (uint64_t)offset : 0;
        memset(buf + n, 0, (size_t)((uint64_t)count - n));
    }
    return n ? lib_result(s, qcow2_pread(s->img, buf, (size_t)n, (uint64_t)offset)) : 0;
}

enum write_kind { WRITE_DATA, WRITE_ZEROES, WRITE_COMPRESSED };

/* Every write of every command goes through here: range check, the write, and the flush that
 * cache=writethrough/directsync asks for. */
static int do_write(struct io_session *s, enum write_kind kind, const uint8_t *buf,
                    int64_t offset, int64_t count, unsigned flags)
{
    int ret;

    if (!in_range(s, offset, count)) {
        return -EIO;
    }
    switch (kind) {
    case WRITE_ZEROES:
        if (s->discard_ignore) {
            flags &= ~QCOW2_ZERO_MAY_UNMAP;
        }
        ret = count ? qcow2_pwrite_zeroes(s->img, (uint64_t)offset, (uint64_t)count, flags) : 0;
        break;
    case WRITE_COMPRESSED:
        ret = qcow2_pwrite_compressed(s->img, buf, (size_t)count, (uint64_t)offset);
        break;
    default:
        ret = count ? qcow2_pwrite(s->img, buf, (size_t)count, (uint64_t)offset, flags) : 0;
        break;
    }
    if (ret >= 0 && s->writethrough && !s->no_flush) {
        ret = qcow2_flush(s->img);
    }
    return ret < 0 ? lib_result(s, ret) : 0;
}

/* write -s FILE: the file's bytes, repeated to fill `len`. NULL after the message. */
static uint8_t *alloc_from_file(const char *name, int64_t len)
{
    FILE *f = fopen(name, "r");
    uint8_t *buf;
    size_t got;

    if (!f) {
        perror(name);
        return NULL;
    }
    buf = malloc(len ? (size_t)len : 1);
    if (!buf) {
        fclose(f);
        perror(name);
        return NULL;
    }
    got = fread(buf, 1, (size_t)len, f);
    if (ferror(f)) {
        perror(name);
        goto fail;
    }
    if (got == 0) {
        fprintf(stderr, "%s: file is empty\n", name);
        goto fail;
    }
    fclose(f);
    for (size_t done = got; done < (size_t)len;) {
        size_t n = (size_t)len - done < got ? (size_t)len - done : got;

        memcpy(buf + done, buf, n);
        done += n;
    }
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* ---- read, readv, write, writev -------------------------------------------------------- */

#define CMD_READ 0
#define CMD_READV 1
#define CMD_WRITE 2
#define CMD_WRITEV 3
#define CMD_AIO_READ 4
#define CMD_AIO_WRITE 5
#define CMD_TRUNCATE 6
#define CMD_DISCARD 7

static int read_f(struct io_session *s, int argc, char **argv)
{
    int Cflag = 0, qflag = 0, vflag = 0, Pflag = 0, sflag = 0, lflag = 0, bflag = 0;
    int c, pattern = 0, ret;
    int64_t offset, count, pattern_offset = 0, pattern_count = 0;
    struct timespec t1, t;
    uint8_t *buf;

    while ((c = io_getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b': bflag = 1; break;
        case 'C': Cflag = 1; break;
        case 'l':
            lflag = 1;
            if ((ret = num_arg(optarg, &pattern_count)) < 0) {
                return ret;
            }
            break;
        case 'p': break; /* ignored for backwards compatibility */
        case 'P':
            Pflag = 1;
            if ((pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'q': qflag = 1; break;
        case 's':
            sflag = 1;
            if ((ret = num_arg(optarg, &pattern_offset)) < 0) {
                return ret;
            }
            break;
        case 'v': vflag = 1; break;
        default: return io_usage(&io_image_cmds[CMD_READ]);
        }
    }
    if ((ret = offset_and_length(CMD_READ, argc, argv, &offset, &count)) < 0) {
        return ret;
    }
    if (!Pflag && (lflag || sflag)) {
        return io_usage(&io_image_cmds[CMD_READ]);
    }
    if (!lflag) {
        pattern_count = count - pattern_offset;
    }
    if (pattern_count < 0 || pattern_count + pattern_offset > count) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    if (bflag && !sector_aligned(offset, count)) {
        return -EINVAL;
    }
    buf = alloc_filled(count, 0xab);
    t1 = now();
    /* -b reads the VM state area, which this library does not implement */
    ret = !buf ? -ENOMEM : bflag ? -ENOTSUP : do_read(s, buf, offset, count);
    t = since(t1);
    if (ret < 0) {
        printf("read failed: %s\n", strerror(-ret));
        goto out;
    }
    if (Pflag) {
        for (int64_t i = 0; i < pattern_count; i++) {
            if (buf[pattern_offset + i] != pattern) {
                printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
                       offset + pattern_offset, pattern_count);
                ret = -EINVAL;
                break;
            }
        }
    }
    if (qflag) {
        goto out;
    }
    if (vflag) {
        dump_buffer(buf, offset, count);
    }
    print_report("read", t, offset, count, count, Cflag);
out:
    free(buf);
    return ret;
}

static int mismatch(const uint8_t *buf, int64_t len, int pattern)
{
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != pattern) {
            return 1;
        }
    }
    return 0;
}


static int write_f(struct io_session *s, int argc, char **argv)
{
    int Cflag = 0, qflag = 0, bflag = 0, Pflag = 0, zflag = 0, cflag = 0, sflag = 0;
    int fua = 0, no_fallback = 0, unmap = 0, c, pattern = 0xcd, ret;
    const char *file = NULL;
    int64_t offset, count;
    struct timespec t1, t;
    uint8_t *buf = NULL;

    while ((c = io_getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b': bflag = 1; break;
        case 'c': cflag = 1; break;
        case 'C': Cflag = 1; break;
        case 'f': fua = 1; break;
        case 'n': no_fallback = 1; break;
        case 'p': break; /* ignored for backwards compatibility */
        case 'P':
            Pflag = 1;
            if ((pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'q': qflag = 1; break;
        case 's': sflag = 1; file = optarg; break;
        case 'u': unmap = 1; break;
        case 'z': zflag = 1; break;
        default: return io_usage(&io_image_cmds[CMD_WRITE]);
        }
    }
    if (optind != argc - 2) {
        return io_usage(&io_image_cmds[CMD_WRITE]);
    }
    if (bflag && zflag) {
        printf("-b and -z cannot be specified at the same time\n");
        return -EINVAL;
    }
    if (fua && (bflag || cflag)) {
        printf("-f and -b or -c cannot be specified at the same time\n");
        return -EINVAL;
    }
    if (no_fallback && !zflag) {
        printf("-n requires -z to be specified\n");
        return -EINVAL;
    }
    if (unmap && !zflag) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if (zflag + Pflag + sflag > 1) {
        printf("Only one of -z, -P, and -s can be specified at the same time\n");
        return -EINVAL;
    }
    if ((ret = num_arg(argv[optind], &offset)) < 0 ||
        (ret = num_arg(argv[optind + 1], &count)) < 0) {
        return ret;
    }
    if (count > IO_REQUEST_MAX && !no_fallback) {
        printf("length cannot exceed %" PRIu64 " without -n, given %s\n",
               (uint64_t)IO_REQUEST_MAX, argv[optind + 1]);
        return -EINVAL;
    }
    if ((bflag || cflag) && !sector_aligned(offset, count)) {
        return -EINVAL;
    }
    if (!zflag) {
        buf = sflag ? alloc_from_file(file, count) : alloc_filled(count, pattern);
        if (!buf) {
            return sflag ? -EINVAL : -ENOMEM;
        }
    }
    t1 = now();
    if (bflag) {
        ret = -ENOTSUP; /* the VM state area is not implemented */
    } else if (zflag) {
        ret = do_write(s, WRITE_ZEROES, NULL, offset, count,
                       (unmap ? QCOW2_ZERO_MAY_UNMAP : 0) | (no_fallback ? QCOW2_ZERO_FAST : 0));
    } else {
        ret = do_write(s, cflag ? WRITE_COMPRESSED : WRITE_DATA, buf, offset, count,
                       fua ? QCOW2_WRITE_FUA : 0);
    }
    t = since(t1);
    free(buf);
    if (ret < 0) {
        printf("write failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!qflag) {
        print_report("wrote", t, offset, count, count, Cflag);
    }
    return 0;
}


/* ---- requests with reports: readv, writev, aio_read, aio_write ------------------------------ */

/* Run a request of readv/writev/aio_*: a read into a new buffer (kept for the report), a write
 * of `pattern` bytes, or with a->zero a zero write. */
static void run_request(struct io_session *s, struct io_aio *a, int pattern, unsigned flags)
{
    struct timespec t1;

    if (!a->zero && !(a->buf = alloc_filled(a->bytes, pattern))) {
        a->ret = -ENOMEM;
        return;
    }
    t1 = now();
    if (!a->is_write) {
        a->ret = do_read(s, a->buf, a->offset, a->bytes);
    } else {
        a->ret = do_write(s, a->zero ? WRITE_ZEROES : WRITE_DATA, a->buf, a->offset, a->bytes,
                          flags);
        free(a->buf);
        a->buf = NULL;
    }
    a->elapsed = since(t1);
}

/* Print what a finished request says; returns its result (the I/O error, -EINVAL for data
 * that does not match the -P pattern, else 0). */
static int report_request(const struct io_aio *a)
{
    int ret = 0;

    if (a->ret < 0) {
        printf("%s failed: %s\n", a->what, strerror(-a->ret));
        return a->ret;
    }
    if (!a->is_write && a->Pflag && mismatch(a->buf, a->bytes, a->pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
               a->offset, a->bytes);
        ret = -EINVAL;
    }
    if (!a->qflag) {
        if (a->vflag) {
            dump_buffer(a->buf, a->offset, a->bytes);
        }
        print_report(a->is_write ? "wrote" : "read", a->elapsed, a->offset, a->bytes, a->bytes,
                     a->Cflag);
    }
    return ret;
}

static int readv_f(struct io_session *s, int argc, char **argv)
{
    struct io_aio a = { .what = "readv" };
    int c, ret;

    while ((c = io_getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C': a.Cflag = 1; break;
        case 'P':
            a.Pflag = 1;
            if ((a.pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'q': a.qflag = 1; break;
        case 'v': a.vflag = 1; break;
        default: return io_usage(&io_image_cmds[CMD_READV]);
        }
    }
    if ((ret = offset_and_lengths(CMD_READV, argc, argv, &a.offset, &a.bytes)) < 0) {
        return ret;
    }
    run_request(s, &a, 0xab, 0);
    ret = report_request(&a);
    free(a.buf);
    return ret;
}

static int writev_f(struct io_session *s, int argc, char **argv)
{
    struct io_aio a = { .is_write = 1, .what = "writev" };
    int c, ret, pattern = 0xcd;
    unsigned flags = 0;

    while ((c = io_getopt(argc, argv, "CfqP:")) != -1) {
        switch (c) {
        case 'C': a.Cflag = 1; break;
        case 'f': flags = QCOW2_WRITE_FUA; break;
        case 'q': a.qflag = 1; break;
        case 'P':
            if ((pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        default: return io_usage(&io_image_cmds[CMD_WRITEV]);
        }
    }
    if ((ret = offset_and_lengths(CMD_WRITEV, argc, argv, &a.offset, &a.bytes)) < 0) {
        return ret;
    }
    run_request(s, &a, pattern, flags);
    return report_request(&a);
}

/* ---- aio_read, aio_write, aio_flush ------------------------------------------------------ */

static void aio_queue(struct io_session *s, struct io_aio *a)
{
    if (!s->aio_last) {
        s->aio_last = &s->aio_first;
    }
    *s->aio_last = a;
    s->aio_last = &a->next;
}

void io_aio_drain(struct io_session *s)
{
    struct io_aio *a;

    while ((a = s->aio_first) != NULL) {
        s->aio_first = a->next;
        report_request(a);
        free(a->buf);
        free(a);
    }
    s->aio_last = &s->aio_first;
}

/* As qemu-io documents, an aio command succeeds once submitted: its I/O errors and pattern
 * mismatches are printed but do not make the command (or the exit status) fail. */
static int aio_read_f(struct io_session *s, int argc, char **argv)
{
    struct io_aio *a = calloc(1, sizeof(*a));
    int c, ret;

    if (!a) {
        return -ENOMEM;
    }
    while ((c = io_getopt(argc, argv, "CP:iqv")) != -1) {
        switch (c) {
        case 'C': a->Cflag = 1; break;
        case 'P':
            a->Pflag = 1;
            if ((a->pattern = parse_pattern(optarg)) < 0) {
                free(a);
                return -EINVAL;
            }
            break;
        case 'i':
            printf("injecting invalid read request\n");
            free(a);
            return 0;
        case 'q': a->qflag = 1; break;
        case 'v': a->vflag = 1; break;
        default:
            free(a);
            return io_usage(&io_image_cmds[CMD_AIO_READ]);
        }
    }
    if ((ret = offset_and_lengths(CMD_AIO_READ, argc, argv, &a->offset, &a->bytes)) < 0) {
        free(a);
        return ret;
    }
    a->what = "readv"; /* (sic: qemu-io's word for a failed aio_read) */
    run_request(s, a, 0xab, 0);
    aio_queue(s, a);
    return 0;
}

static int aio_write_f(struct io_session *s, int argc, char **argv)
{
    struct io_aio *a = calloc(1, sizeof(*a));
    int c, ret, zflag = 0, fua = 0, unmap = 0, pattern = 0xcd;

    if (!a) {
        return -ENOMEM;
    }
    a->is_write = 1;
    while ((c = io_getopt(argc, argv, "CfiqP:uz")) != -1) {
        switch (c) {
        case 'C': a->Cflag = 1; break;
        case 'f': fua = 1; break;
        case 'q': a->qflag = 1; break;
        case 'u': unmap = 1; break;
        case 'P':
            if ((pattern = parse_pattern(optarg)) < 0) {
                free(a);
                return -EINVAL;
            }
            break;
        case 'i':
            printf("injecting invalid write request\n");
            free(a);
            return 0;
        case 'z': zflag = 1; break;
        default:
            free(a);
            return io_usage(&io_image_cmds[CMD_AIO_WRITE]);
        }
    }
    if (optind > argc - 2) {
        free(a);
        return io_usage(&io_image_cmds[CMD_AIO_WRITE]);
    }
    if (zflag && optind != argc - 2) {
        printf("-z supports only a single length parameter\n");
        free(a);
        return -EINVAL;
    }
    if (unmap && !zflag) {
        printf("-u requires -z to be specified\n");
        free(a);
        return -EINVAL;
    }
    /* (qemu-io 7.2 also means to refuse -z with -P, but its check never fires: -P is ignored
     * with -z there, and here too.) */
    if ((ret = num_arg(argv[optind], &a->offset)) < 0) {
        free(a);
        return ret;
    }
    if (zflag) {
        if ((ret = num_arg(argv[optind + 1], &a->bytes)) < 0) {
            free(a);
            return ret;
        }
    } else if ((a->bytes = iovec_total(argv + optind + 1, argc - optind - 1)) < 0) {
        free(a);
        return -EINVAL;
    }
    a->what = "aio_write";
    a->zero = zflag;
    run_request(s, a, pattern,
                zflag ? (unmap ? QCOW2_ZERO_MAY_UNMAP : 0) : (fua ? QCOW2_WRITE_FUA : 0));
    aio_queue(s, a);
    return 0;
}

/* The dispatcher has already drained the finished requests (IO_POLLS). */
static int aio_flush_f(struct io_session *s, int argc, char **argv)
{
    (void)s, (void)argc, (void)argv;
    return 0;
}

/* ---- flush, discard, truncate, length, info --------------------------------------------- */

static int flush_f(struct io_session *s, int argc, char **argv)
{
    int ret;

    (void)argc, (void)argv;
    if (s->no_flush) {
        return 0;
    }
    ret = lib_result(s, qcow2_flush(s->img));
    if (ret < 0) {
        /* qemu-io 7.2 fails silently here; say why */
        printf("flush failed: %s\n", strerror(-ret));
    }
    return ret;
}

static int discard_f(struct io_session *s, int argc, char **argv)
{
    int Cflag = 0, qflag = 0, c, ret;
    int64_t offset, bytes;
    struct timespec t1, t;

    while ((c = io_getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C': Cflag = 1; break;
        case 'q': qflag = 1; break;
        default: return io_usage(&io_image_cmds[CMD_DISCARD]);
        }
    }
    if ((ret = offset_and_length(CMD_DISCARD, argc, argv, &offset, &bytes)) < 0) {
        return ret;
    }
    t1 = now();
    if (!in_range(s, offset, bytes)) {
        ret = -EIO;
    } else if (s->discard_ignore || bytes == 0) {
        ret = 0;
    } else {
        ret = lib_result(s, qcow2_discard(s->img, (uint64_t)offset, (uint64_t)bytes));
    }
    t = since(t1);
    if (ret < 0) {
        printf("discard failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!qflag) {
        print_report("discard", t, offset, bytes, bytes, Cflag);
    }
    return 0;
}

static int truncate_f(struct io_session *s, int argc, char **argv)
{
    static const char *const modes[] = { "off", "metadata", "falloc", "full" };
    enum qcow2_prealloc prealloc = QCOW2_PREALLOC_OFF;
    int64_t size;
    int c, ret;

    while ((c = io_getopt(argc, argv, "m:")) != -1) {
        size_t i;

        switch (c) {
        case 'm':
            for (i = 0; i < 4 && strcmp(optarg, modes[i]) != 0; i++) {
            }
            if (i == 4) {
                io_error_report("Invalid preallocation mode '%s'", optarg);
                return -EINVAL;
            }
            prealloc = (enum qcow2_prealloc)i;
            break;
        default: return io_usage(&io_image_cmds[CMD_TRUNCATE]);
        }
    }
    if (optind >= argc) {
        /* qemu-io 7.2 reads past its arguments here ("truncate -m full" crashes it) */
        return io_usage(&io_image_cmds[CMD_TRUNCATE]);
    }
    if ((ret = num_arg(argv[optind], &size)) < 0) {
        return ret;
    }
    if (s->format == QCOW2_FORMAT_QCOW2 && size % 512) {
        io_error_report("The new size must be a multiple of 512");
        return -EINVAL;
    }
    ret = qcow2_truncate(s->img, (uint64_t)size, prealloc,
                         (uint64_t)size < qcow2_get_size(s->img) ? QCOW2_TRUNCATE_SHRINK : 0);
    if (ret < 0) {
        const char *m = qcow2_error(s->img);
        const char *colon = m ? strstr(m, ": ") : NULL;

        io_error_report("%s", colon ? colon + 2 : m && *m ? m : strerror(-ret));
    }
    return ret;
}

static int length_f(struct io_session *s, int argc, char **argv)
{
    char s1[64];

    (void)argc, (void)argv;
    io_cvtstr((double)io_size(s), s1, sizeof(s1));
    printf("%s\n", s1);
    return 0;
}

static int info_f(struct io_session *s, int argc, char **argv)
{
    struct qcow2_info in = QCOW2_INFO_INIT;
    char s1[64], s2[64];
    double vm_state = 0;

    (void)argc, (void)argv;
    qcow2_get_info(s->img, &in);
    printf("format name: %s\n", tool_format_name(in.format));
    if (in.format == QCOW2_FORMAT_QCOW2) {
        /* qcow2 keeps the VM state after the guest disk, at the first L1 entry past it */
        double span = (double)in.cluster_size * (in.cluster_size / (in.extended_l2 ? 16 : 8));
        uint64_t entries = (in.virtual_size + (uint64_t)span - 1) / (uint64_t)span;

        vm_state = (double)entries * span;
    }
    io_cvtstr(in.format == QCOW2_FORMAT_QCOW2 ? in.cluster_size : 0, s1, sizeof(s1));
    io_cvtstr(vm_state, s2, sizeof(s2));
    printf("cluster size: %s\n", s1);
    printf("vm state offset: %s\n", s2);
    if (in.format == QCOW2_FORMAT_QCOW2) {
        printf("Format specific information:\n");
        tool_print_format_specific(s->img, &in, "    ");
    }
    return 0;
}

/* ---- alloc, map ---------------------------------------------------------------------------- */

/* bdrv_is_allocated(): is [offset, offset + *num) decided by this image rather than a backing
 * file? *num is the length of the run with one answer (0 at the end of the image). Every byte
 * of a raw image is its own. */
static int is_allocated(struct io_session *s, int64_t offset, int64_t bytes, int64_t *num)
{
    uint64_t size = io_size(s);
    struct qcow2_extent e = QCOW2_EXTENT_INIT;
    int ret;

    if ((uint64_t)offset >= size || bytes == 0) {
        *num = 0;
        return 0;
    }
    if ((uint64_t)bytes > size - (uint64_t)offset) {
        bytes = (int64_t)(size - (uint64_t)offset);
    }
    if (s->format == QCOW2_FORMAT_RAW) {
        *num = bytes;
        return 1;
    }
    ret = qcow2_block_status(s->img, (uint64_t)offset, (uint64_t)bytes, &e);
    if (ret < 0) {
        return lib_result(s, ret);
    }
    *num = (int64_t)e.length < bytes ? (int64_t)e.length : bytes;
    return e.depth == 0 && (e.flags & QCOW2_BS_PRESENT);
}

static int alloc_f(struct io_session *s, int argc, char **argv)
{
    int64_t offset, start, count = 512, remaining, num, sum_alloc = 0;
    char s1[64];
    int ret;

    if ((ret = num_arg(argv[1], &offset)) < 0 ||
        (argc == 3 && (ret = num_arg(argv[2], &count)) < 0)) {
        return ret;
    }
    start = offset;
    for (remaining = count; remaining > 0;) {
        ret = is_allocated(s, offset, remaining, &num);
        if (ret < 0) {
            printf("is_allocated failed: %s\n", strerror(-ret));
            return ret;
        }
        offset += num;
        remaining -= num;
        if (ret) {
            sum_alloc += num;
        }
        if (num == 0) {
            count -= remaining;
            remaining = 0;
        }
    }
    io_cvtstr((double)start, s1, sizeof(s1));
    printf("%" PRId64 "/%" PRId64 " bytes allocated at offset %s\n", sum_alloc, count, s1);
    return 0;
}

static int map_f(struct io_session *s, int argc, char **argv)
{
    int64_t offset = 0, bytes = (int64_t)io_size(s), num, more;
    char s1[64], s2[64];

    (void)argc, (void)argv;
    while (bytes > 0) {
        int ret = is_allocated(s, offset, bytes, &num), next = ret;

        /* merge the following runs with the same answer */
        while (ret >= 0 && num < bytes && next == ret) {
            next = is_allocated(s, offset + num, bytes - num, &more);
            if (next != ret || more == 0) {
                break;
            }
            num += more;
        }
        if (ret < 0 || next < 0) {
            io_error_report("Failed to get allocation status: %s",
                            strerror(-(ret < 0 ? ret : next)));
            return ret < 0 ? ret : next;
        }
        if (num == 0) {
            io_error_report("Unexpected end of image");
            return -EIO;
        }
        io_cvtstr((double)num, s1, sizeof(s1));
        io_cvtstr((double)offset, s2, sizeof(s2));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n", s1, (uint64_t)num,
               ret ? "    allocated" : "not allocated", s2, (uint64_t)offset);
        offset += num;
        bytes -= num;
    }
    return 0;
}

/* ---- sleep, sigraise, abort, breakpoints -------------------------------------------------- */

/* Output so far is flushed first, so that a test watching stdout knows every earlier command
 * has finished (and can kill the process while it waits, image still open). */
static int sleep_f(struct io_session *s, int argc, char **argv)
{
    char *end;
    long ms = strtol(argv[1], &end, 0);
    struct timespec ts;

    (void)s, (void)argc;
    if (ms < 0 || *end != '\0') {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    fflush(stdout);
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = ms % 1000 * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    return 0;
}

static int sigraise_f(struct io_session *s, int argc, char **argv)
{
    int64_t sig;
    int ret;

    (void)s, (void)argc;
    if ((ret = num_arg(argv[1], &sig)) < 0) {
        return ret;
    }
    if (sig > NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n", argv[1]);
        return -EINVAL;
    }
    fflush(stdout);
    fflush(stderr);
    raise((int)sig);
    return 0;
}

static int abort_f(struct io_session *s, int argc, char **argv)
{
    (void)s, (void)argc, (void)argv;
    abort();
}

/* Breakpoints belong to QEMU's blkdebug driver, which this tool does not have: break,
 * remove_break and resume answer what qemu-io answers for an image without blkdebug.
 * wait_break fails likewise, where qemu-io 7.2 waits forever for a request that no blkdebug
 * layer can ever suspend. */
static int no_blkdebug_f(struct io_session *s, int argc, char **argv)
{
    const char *why = strerror(ENOTSUP);

    (void)s, (void)argc;
    if (strcmp(argv[0], "break") == 0) {
        printf("Could not set breakpoint: %s\n", why);
    } else if (strcmp(argv[0], "remove_break") == 0) {
        printf("Could not remove breakpoint %s: %s\n", argv[1], why);
    } else if (strcmp(argv[0], "resume") == 0) {
        printf("Could not resume request: %s\n", why);
    } else {
        printf("Could not wait for breakpoint %s: %s\n", argv[1], why);
    }
    return -ENOTSUP;
}

/* ---- the table ----------------------------------------------------------------------------- */

/* Long help, as qemu-io 7.2 prints it. */
static const char aio_read_help[] =
    "\n"
    " asynchronously reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " The read is performed asynchronously and the aio_flush command must be\n"
    " used to ensure all outstanding aio requests have been completed.\n"
    " Note that due to its asynchronous nature, this command will be\n"
    " considered successful once the request is submitted, independently\n"
    " of potential I/O errors or pattern mismatches.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -i, -- treat request as invalid, for exercising stats\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n"
    ;
static const char aio_write_help[] =
    "\n"
    " asynchronously writes a range of bytes from the given offset source\n"
    " from multiple buffers\n"
    "\n"
    " Example:\n"
    " 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " The write is performed asynchronously and the aio_flush command must be\n"
    " used to ensure all outstanding aio requests have been completed.\n"
    " Note that due to its asynchronous nature, this command will be\n"
    " considered successful once the request is submitted, independently\n"
    " of potential I/O errors or pattern mismatches.\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -i, -- treat request as invalid, for exercising stats\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes using blk_aio_pwrite_zeroes\n"
    "\n"
    ;
static const char discard_help[] =
    "\n"
    " discards a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
    "\n"
    " Discards a segment of the currently open file.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n"
    ;
static const char read_help[] =
    "\n"
    " reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " -b, -- read from the VM state rather than the virtual disk\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -l, -- length for pattern verification (only with -P)\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use a pattern to verify read data\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -s, -- start offset for pattern verification (only with -P)\n"
    " -v, -- dump buffer to standard output\n"
    "\n"
    ;
static const char readv_help[] =
    "\n"
    " reads a range of bytes from the given offset into multiple buffers\n"
    "\n"
    " Example:\n"
    " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " Uses multiple iovec buffers if more than one byte range is specified.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n"
    ;
static const char sigraise_help[] =
    "\n"
    " raises the given signal\n"
    "\n"
    " Example:\n"
    " 'sigraise 15' - raises SIGTERM\n"
    "\n"
    " Invokes raise(signal), where \"signal\" is the mandatory integer argument\n"
    " given to sigraise.\n"
    "\n"
    ;
static const char write_help[] =
    "\n"
    " writes a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -b, -- write to the VM state rather than the virtual disk\n"
    " -c, -- write compressed data with blk_write_compressed\n"
    " -f, -- use Force Unit Access semantics\n"
    " -n, -- with -z, don't allow slow fallback\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use different pattern to fill file\n"
    " -s, -- use a pattern file to fill the write buffer\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes using blk_co_pwrite_zeroes\n"
    "\n"
    ;
static const char writev_help[] =
    "\n"
    " writes a range of bytes from the given offset source from multiple buffers\n"
    "\n"
    " Example:\n"
    " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n"
    ;

/* The first entries are referred to by index (CMD_*) for their usage lines. */
const struct io_cmd io_image_cmds[] = {
    [CMD_READ] = { "read", "r", read_f, 2, -1, IO_POLLS,
                   "[-abCqv] [-P pattern [-s off] [-l len]] off len",
                   "reads a number of bytes at a specified offset", read_help },
    [CMD_READV] = { "readv", NULL, readv_f, 2, -1, IO_POLLS, "[-Cqv] [-P pattern] off len [len..]",
                    "reads a number of bytes at a specified offset", readv_help },
    [CMD_WRITE] = { "write", "w", write_f, 2, -1, IO_POLLS | IO_WRITE,
                    "[-bcCfnquz] [-P pattern | -s source_file] off len",
                    "writes a number of bytes at a specified offset", write_help },
    [CMD_WRITEV] = { "writev", NULL, writev_f, 2, -1, IO_POLLS | IO_WRITE,
                     "[-Cfq] [-P pattern] off len [len..]",
                     "writes a number of bytes at a specified offset", writev_help },
    [CMD_AIO_READ] = { "aio_read", NULL, aio_read_f, 2, -1, 0,
                       "[-Ciqv] [-P pattern] off len [len..]",
                       "asynchronously reads a number of bytes", aio_read_help },
    [CMD_AIO_WRITE] = { "aio_write", NULL, aio_write_f, 2, -1, IO_WRITE,
                        "[-Cfiquz] [-P pattern] off len [len..]",
                        "asynchronously writes a number of bytes", aio_write_help },
    [CMD_TRUNCATE] = { "truncate", "t", truncate_f, 1, 3, IO_POLLS | IO_WRITE,
                       "[-m prealloc_mode] off",
                       "truncates the current file at the given offset", NULL },
    [CMD_DISCARD] = { "discard", "d", discard_f, 2, -1, IO_POLLS | IO_WRITE, "[-Cq] off len",
      "discards a number of bytes at a specified offset", discard_help },
    { "aio_flush", NULL, aio_flush_f, 0, 0, IO_POLLS, NULL,
      "completes all outstanding aio requests", NULL },
    { "flush", "f", flush_f, 0, 0, IO_POLLS, NULL, "flush all in-core file state to disk", NULL },
    { "length", "l", length_f, 0, 0, 0, NULL, "gets the length of the current file", NULL },
    { "info", "i", info_f, 0, 0, 0, NULL, "prints information about the current file", NULL },
    { "alloc", "a", alloc_f, 1, 2, IO_POLLS, "offset [count]",
      "checks if offset is allocated in the file", NULL },
    { "map", NULL, map_f, 0, 0, IO_POLLS, "", "prints the allocated areas of a file", NULL },
    { "sleep", NULL, sleep_f, 1, 1, IO_NOFILE_OK | IO_POLLS, NULL,
      "waits for the given value in milliseconds", NULL },
    { "sigraise", NULL, sigraise_f, 1, 1, IO_NOFILE_OK, "signal", "raises a signal",
      sigraise_help },
    { "abort", NULL, abort_f, 0, 0, IO_NOFILE_OK, NULL, "simulate a program crash using abort(3)",
      NULL },
    { "break", NULL, no_blkdebug_f, 2, 2, 0, "event tag",
      "sets a breakpoint on event and tags the stopped request as tag", NULL },
    { "remove_break", NULL, no_blkdebug_f, 1, 1, 0, "tag", "remove a breakpoint by tag", NULL },
    { "resume", NULL, no_blkdebug_f, 1, 1, 0, "tag", "resumes the request tagged as tag", NULL },
    { "wait_break", NULL, no_blkdebug_f, 1, 1, 0, "tag", "waits for the suspension of a request",
      NULL },
};

const int io_image_ncmds = (int)(sizeof(io_image_cmds) / sizeof(io_image_cmds[0]));
