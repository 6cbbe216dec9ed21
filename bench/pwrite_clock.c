/* bench/pwrite_clock.c - an LD_PRELOAD shim for bench/split: times every pwrite/pwritev the
 * process makes (CLOCK_MONOTONIC around the libc call) and prints, at exit, how many there were
 * and the nanoseconds spent inside them. Subtracted from a run's time, it leaves what the
 * process did outside the system call: for W1-W4, the library's own work per write, apart
 * from the host's page allocation, which is where this VM's run-to-run swings are.
 * Owns nothing but its two counters; calls only libc (dlsym for the real functions). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* One process, one writer thread in the runs bench/split makes (depth 1): plain counters. */
static uint64_t calls, nanos;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef ssize_t pwrite_fn(int, const void *, size_t, off_t);
typedef ssize_t pwritev_fn(int, const struct iovec *, int, off_t);

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
    static pwrite_fn *real;
    if (!real)
        real = (pwrite_fn *)dlsym(RTLD_NEXT, "pwrite64");
    uint64_t t = now_ns();
    ssize_t ret = real(fd, buf, count, offset);
    nanos += now_ns() - t;
    calls++;
    return ret;
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    return pwrite64(fd, buf, count, offset);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    static pwritev_fn *real;
    if (!real)
        real = (pwritev_fn *)dlsym(RTLD_NEXT, "pwritev64");
    uint64_t t = now_ns();
    ssize_t ret = real(fd, iov, iovcnt, offset);
    nanos += now_ns() - t;
    calls++;
    return ret;
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    return pwritev64(fd, iov, iovcnt, offset);
}

__attribute__((destructor)) static void report(void)
{
    fprintf(stderr, "pwrite_clock: %llu calls, %llu ns\n", (unsigned long long)calls,
            (unsigned long long)nanos);
}
