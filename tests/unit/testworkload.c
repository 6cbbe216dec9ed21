/* testworkload.c - workloads, the guest-content model and the verdict for the crash and
 * I/O-error tests (see testworkload.h). Starting images are made by qemu-img and qemu-io so
 * that the library is tested on images it did not lay out itself; verdicts use both our
 * qcow2_check and `qemu-img check`. */
#include "testworkload.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char g_dir[4096];

void wl_set_dir(const char *dir)
{
    snprintf(g_dir, sizeof(g_dir), "%s", dir);
}

const char *wl_dir(void)
{
    return g_dir;
}

void wl_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", g_dir, name);
}

int wl_run_cmd(const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    fflush(stdout);
    fflush(stderr);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

bool wl_have_qemu(void)
{
    return wl_run_cmd("command -v qemu-img >/dev/null 2>&1 && "
                      "command -v qemu-io >/dev/null 2>&1") == 0;
}

/* "cmd1;cmd2" -> " -c 'cmd1' -c 'cmd2'" */
static void io_args(char *out, size_t len, const char *cmds)
{
    out[0] = '\0';
    if (!cmds)
        return;
    size_t at = 0;
    const char *p = cmds;
    while (*p) {
        const char *e = strchr(p, ';');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        at += (size_t)snprintf(out + at, len - at, " -c '%.*s'", (int)n, p);
        if (at >= len)
            abort();
        p += n + (e ? 1 : 0);
    }
}

int wl_prepare(const struct workload *w, struct tf_buf *start, struct tf_buf *base)
{
    char top[4200], back[4200], raw[4200], args[4096];
    snprintf(back, sizeof(back), "%s/%s.backing.qcow2", g_dir, w->name);
    snprintf(top, sizeof(top), "%s/%s.start.qcow2", g_dir, w->name);
    snprintf(raw, sizeof(raw), "%s/%s.start.raw", g_dir, w->name);
    if (w->backing_opts) {
        if (wl_run_cmd("qemu-img create -q -f qcow2 -o '%s' '%s' %s", w->backing_opts, back,
                       w->backing_size) != 0)
            goto fail;
        io_args(args, sizeof(args), w->backing_io);
        if (args[0] && wl_run_cmd("qemu-io -f qcow2%s '%s' >/dev/null", args, back) != 0)
            goto fail;
        if (wl_run_cmd("qemu-img create -q -f qcow2 -o '%s,backing_file=%s.backing.qcow2,"
                       "backing_fmt=qcow2' '%s' %s",
                       w->create_opts, w->name, top, w->size) != 0)
            goto fail;
    } else if (wl_run_cmd("qemu-img create -q -f qcow2 -o '%s' '%s' %s", w->create_opts, top,
                          w->size) != 0) {
        goto fail;
    }
    io_args(args, sizeof(args), w->prep_io);
    if (args[0] && wl_run_cmd("qemu-io -f qcow2%s '%s' >/dev/null", args, top) != 0)
        goto fail;
    if (wl_run_cmd("qemu-img convert -f qcow2 -O raw '%s' '%s'", top, raw) != 0)
        goto fail;
    if (tf_buf_load(start, top) < 0 || tf_buf_load(base, raw) < 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "  %s: preparing the starting image failed\n", w->name);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Operations. */

size_t wl_nb_ops(const struct workload *w)
{
    size_t n = 0;
    while (w->ops[n].kind != WL_END)
        n++;
    return n;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

void wl_fill(const struct workload *w, size_t i, uint8_t *buf)
{
    const struct wl_op *op = &w->ops[i];
    for (uint64_t k = 0; k < op->len; k++) {
        uint64_t o = op->offset + k;
        if (op->kind == WL_COMPRESSED) /* runs of 64 equal bytes: compresses well */
            buf[k] = (uint8_t)(mix((i + 1) * 1000003 + o / 64) | 1);
        else
            buf[k] = (uint8_t)(mix(((i + 1) << 40) ^ (o >> 3)) >> ((o & 7) * 8));
    }
}

int wl_exec(struct qcow2_image *img, const struct workload *w, size_t i)
{
    const struct wl_op *op = &w->ops[i];
    uint8_t *buf = NULL;
    int ret = 0;
    switch (op->kind) {
    case WL_WRITE:
    case WL_WRITE_FUA:
    case WL_COMPRESSED:
        buf = malloc(op->len);
        if (!buf)
            return -ENOMEM;
        wl_fill(w, i, buf);
        if (op->kind == WL_COMPRESSED)
            ret = qcow2_pwrite_compressed(img, buf, op->len, op->offset);
        else
            ret = qcow2_pwrite(img, buf, op->len, op->offset,
                               op->kind == WL_WRITE_FUA ? QCOW2_WRITE_FUA : 0);
        free(buf);
        return ret;
    case WL_ZERO:
        return qcow2_pwrite_zeroes(img, op->offset, op->len, op->flags);
    case WL_DISCARD:
        return qcow2_discard(img, op->offset, op->len);
    case WL_FLUSH:
        return qcow2_flush(img);
    case WL_TRUNCATE:
        return qcow2_truncate(img, op->offset, QCOW2_PREALLOC_OFF,
                              op->offset < qcow2_get_size(img) ? QCOW2_TRUNCATE_SHRINK : 0);
    case WL_END:
        break;
    }
    return -EINVAL;
}

/* The guest size before op `i`, starting from `start_size`. */
static uint64_t size_before(const struct workload *w, size_t i, uint64_t start_size)
{
    uint64_t s = start_size;
    for (size_t k = 0; k < i; k++)
        if (w->ops[k].kind == WL_TRUNCATE)
            s = w->ops[k].offset;
    return s;
}

/* The range op `i` changes and whether it writes zeros (else wl_fill data). */
static void op_effect(const struct workload *w, size_t i, uint64_t size, uint64_t *a,
                      uint64_t *b, bool *zero)
{
    const struct wl_op *op = &w->ops[i];
    uint64_t end = op->offset + op->len;
    *a = op->offset;
    *b = end;
    *zero = op->kind == WL_ZERO || op->kind == WL_DISCARD || op->kind == WL_TRUNCATE;
    switch (op->kind) {
    case WL_DISCARD:
        *a = ROUND_UP(op->offset, w->cluster_size);
        *b = end == size ? end : ROUND_DOWN(end, w->cluster_size);
        if (*a > *b)
            *a = *b;
        break;
    case WL_TRUNCATE: /* what lies between the old and the new end reads zeros afterwards */
        *a = MIN(size, op->offset);
        *b = MAX(size, op->offset);
        break;
    case WL_FLUSH:
        *a = *b = 0;
        break;
    default:
        break;
    }
}

void wl_apply(const struct workload *w, size_t i, struct tf_buf *guest)
{
    const struct wl_op *op = &w->ops[i];
    uint64_t a, b;
    bool zero;
    op_effect(w, i, guest->size, &a, &b, &zero);
    if (op->kind == WL_TRUNCATE) {
        struct tf_event e = {.kind = TF_TRUNCATE, .offset = op->offset};
        tf_buf_apply(guest, &e, NULL, NULL);
        return;
    }
    if (a >= b)
        return;
    assert(b <= guest->size);
    if (zero) {
        memset(guest->data + a, 0, b - a);
    } else {
        wl_fill(w, i, guest->data + a);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Verdict. */

int wl_qemu_check(const char *path)
{
    int st = wl_run_cmd("qemu-img check -q '%s' >/dev/null 2>&1", path);
    if (st != 0 && st != 3)
        wl_run_cmd("qemu-img check '%s' 1>&2", path);
    return st;
}

struct report_buf {
    char text[1024];
    size_t len;
};

static void collect_report(void *opaque, const char *msg)
{
    struct report_buf *r = opaque;
    if (strncmp(msg, "Leaked", 6) == 0 || r->len + 8 >= sizeof(r->text))
        return;
    r->len += (size_t)snprintf(r->text + r->len, sizeof(r->text) - r->len, "%s%s",
                               r->len ? " | " : "", msg);
    if (r->len >= sizeof(r->text))
        r->len = sizeof(r->text) - 1;
}

/* Does every byte of `got` equal the durable content or a value an uncertain op gives it? */
static int compare(const struct workload *w, const struct wl_expect *ex, uint64_t start_size,
                   const uint8_t *got, uint64_t got_size, char *why, size_t whylen)
{
    const struct tf_buf *d = ex->durable;
    bool size_ok = got_size == d->size;
    for (size_t k = 0; k < ex->nb_uncertain && !size_ok; k++) {
        const struct wl_op *op = &w->ops[ex->uncertain[k]];
        size_ok = op->kind == WL_TRUNCATE && op->offset == got_size;
    }
    if (!size_ok) {
        snprintf(why, whylen, "virtual size %llu, expected %llu", (unsigned long long)got_size,
                 (unsigned long long)d->size);
        return -1;
    }
    uint8_t *ok = calloc(1, got_size ? got_size : 1);
    uint8_t *val = NULL;
    if (!ok)
        abort();
    for (uint64_t i = 0; i < got_size; i++)
        ok[i] = i < d->size && got[i] == d->data[i];
    for (size_t k = 0; k < ex->nb_uncertain; k++) {
        size_t opi = ex->uncertain[k];
        uint64_t a, b;
        bool zero;
        op_effect(w, opi, size_before(w, opi, start_size), &a, &b, &zero);
        if (a >= b)
            continue;
        if (!zero) {
            val = realloc(val, w->ops[opi].len);
            if (!val)
                abort();
            wl_fill(w, opi, val);
        }
        for (uint64_t i = a; i < MIN(b, got_size); i++)
            if (!ok[i] && got[i] == (zero ? 0 : val[i - w->ops[opi].offset]))
                ok[i] = 1;
    }
    int ret = 0;
    for (uint64_t i = 0; i < got_size; i++) {
        if (ok[i])
            continue;
        uint64_t j = i;
        while (j < got_size && !ok[j])
            j++;
        snprintf(why, whylen,
                 "guest bytes [0x%llx, 0x%llx) are wrong: 0x%02x at 0x%llx, expected 0x%02x%s",
                 (unsigned long long)i, (unsigned long long)j, got[i], (unsigned long long)i,
                 i < d->size ? d->data[i] : 0,
                 ex->nb_uncertain ? " or the value of an unflushed operation" : "");
        ret = -1;
        break;
    }
    free(ok);
    free(val);
    return ret;
}

int wl_verify(const char *path, const struct workload *w, const struct wl_expect *ex,
              bool qemu_check, char *why, size_t whylen)
{
    char err[QCOW2_ERROR_MAX];
    struct qcow2_image *img;
    int ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    if (ret < 0) {
        snprintf(why, whylen, "open failed: %s", err);
        return -1;
    }
    uint64_t got_size = qcow2_get_size(img);
    uint8_t *got = malloc(got_size ? got_size : 1);
    if (!got)
        abort();
    ret = 0;
    for (uint64_t off = 0; off < got_size && ret == 0;) {
        uint64_t n = MIN(got_size - off, 1u << 20);
        ret = qcow2_pread(img, got + off, n, off);
        off += n;
    }
    if (ret < 0) {
        snprintf(why, whylen, "read failed: %s", qcow2_error(img));
        goto fail;
    }
    if (compare(w, ex, ex->start_size, got, got_size, why, whylen) < 0)
        goto fail;
    struct qcow2_check_result res;
    struct report_buf rep = {.len = 0};
    rep.text[0] = '\0';
    ret = qcow2_check(img, 0, &res, collect_report, &rep);
    if (ret < 0 || res.corruptions || res.check_errors) {
        snprintf(why, whylen, "qcow2_check: ret %d, %lld corruptions, %lld check errors: %s",
                 ret, (long long)res.corruptions, (long long)res.check_errors, rep.text);
        goto fail;
    }
    free(got);
    got = NULL;
    ret = qcow2_close(img);
    img = NULL;
    if (ret < 0) {
        snprintf(why, whylen, "close failed: %s", strerror(-ret));
        return -1;
    }
    int st = qemu_check ? wl_qemu_check(path) : 0;
    if (st != 0 && st != 3) {
        snprintf(why, whylen, "qemu-img check exit status %d", st);
        return -1;
    }
    return 0;
fail:
    free(got);
    if (img)
        qcow2_close(img);
    return -1;
}
