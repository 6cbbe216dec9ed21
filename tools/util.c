/* util.c - helpers shared by the subcommands: messages, argument parsing, opening images,
 * and the output formats qemu-img uses (human sizes, QEMU's JSON layout and escaping).
 * Calls only the public API; holds no state between calls. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "tool.h"

/* ---- messages ---------------------------------------------------------------------------- */

static void vmessage(const char *prefix, const char *fmt, va_list ap)
{
    fflush(stdout);
    fputs(prefix, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void tool_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage(TOOL_NAME ": ", fmt, ap);
    va_end(ap);
}

void tool_warning(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage(TOOL_NAME ": warning: ", fmt, ap);
    va_end(ap);
}

void tool_image_error(struct qcow2_image *img, int ret, const char *fmt, ...)
{
    const char *msg = img ? qcow2_error(img) : "";
    va_list ap;

    fflush(stdout);
    fputs(TOOL_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s\n", msg && *msg ? msg : strerror(-ret));
}

void tool_image_error_bare(struct qcow2_image *img, const char *path, int ret)
{
    const char *msg = qcow2_error(img);
    size_t plen = strlen(path);

    if (!msg[0]) {
        msg = strerror(-ret);
    } else if (strncmp(msg, path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0) {
        msg += plen + 2;
    }
    tool_error("%s", msg);
}

int tool_finish(struct qcow2_image *img, const char *path, int ret)
{
    if (ret < 0) {
        tool_image_error_bare(img, path, ret);
    }
    if (tool_close(img, path) < 0 && ret == 0) {
        ret = -EIO;
    }
    return ret;
}

int tool_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs(TOOL_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (try '" TOOL_NAME "%s%s --help')\n", cmd ? " " : "", cmd ? cmd : "");
    return TOOL_EXIT_ERROR;
}

/* ---- parsing ----------------------------------------------------------------------------- */

int tool_parse_size(const char *s, const char *what, uint64_t *out)
{
    if (qcow2_parse_size(s, out) < 0) {
        tool_error("invalid %s '%s': use a number of bytes with an optional k, M, G, T, P or "
                   "E suffix",
                   what, s);
        return -EINVAL;
    }
    return 0;
}

int tool_parse_format(const char *s, enum qcow2_format *fmt)
{
    if (!s) {
        *fmt = QCOW2_FORMAT_PROBE;
    } else if (strcmp(s, "qcow2") == 0) {
        *fmt = QCOW2_FORMAT_QCOW2;
    } else if (strcmp(s, "raw") == 0) {
        *fmt = QCOW2_FORMAT_RAW;
    } else {
        tool_error("unknown image format '%s' (supported: qcow2, raw)", s);
        return -EINVAL;
    }
    return 0;
}

const char *tool_format_name(enum qcow2_format fmt)
{
    switch (fmt) {
    case QCOW2_FORMAT_QCOW2:
        return "qcow2";
    case QCOW2_FORMAT_RAW:
        return "raw";
    case QCOW2_FORMAT_PROBE:
        break;
    }
    return "probe";
}

int tool_parse_output(const char *s, enum tool_output *out)
{
    if (strcmp(s, "human") == 0) {
        *out = TOOL_OUTPUT_HUMAN;
    } else if (strcmp(s, "json") == 0) {
        *out = TOOL_OUTPUT_JSON;
    } else {
        tool_error("--output must be used with human or json as argument");
        return -EINVAL;
    }
    return 0;
}

int tool_append_options(char **list, const char *arg)
{
    size_t old = *list ? strlen(*list) : 0;
    char *n = realloc(*list, old + strlen(arg) + 2);

    if (!n) {
        tool_error("out of memory");
        return -ENOMEM;
    }
    if (old) {
        n[old++] = ',';
    }
    strcpy(n + old, arg);
    *list = n;
    return 0;
}

int tool_options_want_help(const char *list)
{
    const char *p = list;

    while (p && *p) {
        size_t n = strcspn(p, ",");

        if ((n == 4 && strncmp(p, "help", 4) == 0) || (n == 1 && *p == '?')) {
            return 1;
        }
        p += n;
        if (*p == ',') {
            p++;
        }
    }
    return 0;
}

char *tool_options_unknown_key(const char *list, const char *const *allowed)
{
    const char *p = list;

    while (p && *p) {
        /* One item ends at a ',' that is not part of ",,". */
        const char *item = p;
        size_t keylen;
        int ok = 0;

        while (*p && !(p[0] == ',' && p[1] != ',')) {
            p += (p[0] == ',' && p[1] == ',') ? 2 : 1;
        }
        keylen = strcspn(item, "=,");
        if (keylen > (size_t)(p - item)) {
            keylen = (size_t)(p - item);
        }
        for (const char *const *a = allowed; *a; a++) {
            if (strlen(*a) == keylen && strncmp(*a, item, keylen) == 0) {
                ok = 1;
            }
        }
        if (!ok && keylen > 0) {
            return strndup(item, keylen);
        }
        if (*p == ',') {
            p++;
        }
    }
    return NULL;
}

char *tool_options_next(char **cursor, char **value)
{
    char *r = *cursor, *w = *cursor, *item = *cursor, *eq;

    if (!r || !*r) {
        return NULL;
    }
    /* Unescape ",," in place; the write position never passes the read position. */
    while (*r) {
        if (r[0] == ',' && r[1] == ',') {
            *w++ = ',';
            r += 2;
        } else if (r[0] == ',') {
            r++;
            break;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    *cursor = r;
    eq = strchr(item, '=');
    if (eq) {
        *eq = '\0';
    }
    *value = eq ? eq + 1 : NULL;
    return item;
}

/* ---- images ------------------------------------------------------------------------------ */

int tool_trust_option(struct tool_trust *t, int c, const char *arg)
{
    if (c == TOOL_OPT_UNTRUSTED) {
        t->untrusted = 1;
        return 1;
    }
    if (c == TOOL_OPT_ALLOW_DIR) {
        t->allow_dir = arg;
        return 1;
    }
    return 0;
}

void tool_trust_apply(const struct tool_trust *t, struct qcow2_open_opts *o)
{
    if (t) {
        o->untrusted = t->untrusted;
        o->allowed_dir = t->allow_dir;
    }
}

static int open_quiet(const char *path, enum qcow2_format fmt, unsigned flags,
                      const struct tool_trust *t, struct qcow2_image **img, char *msg,
                      size_t msglen)
{
    struct qcow2_open_opts opts;
    char err[QCOW2_ERROR_MAX] = "";
    const char *m = err;
    size_t plen = strlen(path);
    int ret;

    opts = QCOW2_OPEN_OPTS_INIT;
    opts.format = fmt;
    opts.read_only = !(flags & TOOL_OPEN_WRITABLE);
    opts.no_backing = !!(flags & TOOL_OPEN_NO_BACKING);
    opts.inspect_only = !!(flags & TOOL_OPEN_INSPECT);
    tool_trust_apply(t, &opts);
    ret = qcow2_open(path, &opts, img, err, sizeof(err));
    if (ret < 0) {
        *img = NULL;
        /* The caller names the file: drop the library's "PATH: " prefix. */
        if (strncmp(err, path, plen) == 0 && strncmp(err + plen, ": ", 2) == 0) {
            m = err + plen + 2;
        }
        snprintf(msg, msglen, "%s", *m ? m : strerror(-ret));
    }
    return ret;
}

int tool_open_quiet(const char *path, enum qcow2_format fmt, unsigned flags,
                    struct qcow2_image **img, char *msg, size_t msglen)
{
    return open_quiet(path, fmt, flags, NULL, img, msg, msglen);
}

int tool_open_trust(const char *path, enum qcow2_format fmt, unsigned flags,
                    const struct tool_trust *t, struct qcow2_image **img)
{
    char msg[QCOW2_ERROR_MAX];
    int ret = open_quiet(path, fmt, flags, t, img, msg, sizeof(msg));

    if (ret < 0) {
        tool_error("could not open '%s': %s", path, msg);
    }
    return ret;
}

int tool_open(const char *path, enum qcow2_format fmt, unsigned flags,
              struct qcow2_image **img)
{
    return tool_open_trust(path, fmt, flags, NULL, img);
}

int tool_close(struct qcow2_image *img, const char *path)
{
    int ret;

    if (!img) {
        return 0;
    }
    ret = qcow2_close(img);
    if (ret < 0) {
        /* The handle is gone: only the errno is left to report. */
        tool_error("%s: error while closing the image: %s", path, strerror(-ret));
    }
    return ret;
}

char *tool_path_combine(const char *base, const char *name)
{
    const char *slash = strrchr(base, '/');
    size_t dirlen;
    char *out;

    if (name[0] == '/' || !slash) {
        return strdup(name);
    }
    dirlen = (size_t)(slash - base) + 1;
    out = malloc(dirlen + strlen(name) + 1);
    if (out) {
        memcpy(out, base, dirlen);
        strcpy(out + dirlen, name);
    }
    return out;
}

/* ---- progress (-p) ------------------------------------------------------------------------ */

void tool_progress_init(struct tool_progress *p, int requested, float min_skip)
{
    memset(p, 0, sizeof(*p));
    p->enabled = requested && isatty(STDOUT_FILENO);
    p->min_skip = min_skip;
}

void tool_progress_set(struct tool_progress *p, float percent)
{
    p->current = percent > 100.0f ? 100.0f : percent;
    if (!p->enabled) {
        return;
    }
    /* qemu_progress_print(): print at 0, at 100 and after each move of more than min_skip. */
    if (p->current > p->last_print + p->min_skip || p->current == 100.0f ||
        p->current == 0.0f) {
        p->last_print = p->current;
        printf("    (%3.2f/100%%)\r", (double)p->current);
        fflush(stdout);
    }
}

void tool_progress_cb(void *opaque, uint64_t done, uint64_t total)
{
    tool_progress_set(opaque, total ? (float)((double)done * 100.0 / (double)total) : 100.0f);
}

void tool_progress_end(struct tool_progress *p)
{
    if (p->enabled) {
        putchar('\n');
        fflush(stdout);
    }
}

/* ---- output ------------------------------------------------------------------------------ */

int tool_qcow2_specific(struct qcow2_image *img, const struct qcow2_info *in,
                        struct tool_spec_field *f)
{
    int v3 = in->version >= 3, n = 0;

    f[n++] = (struct tool_spec_field){ "compat", TOOL_SPEC_STR, v3 ? "1.1" : "0.10", 0, NULL };
    f[n++] = (struct tool_spec_field){
        "compression-type", TOOL_SPEC_STR,
        in->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib", 0, NULL };
    if (v3) {
        f[n++] = (struct tool_spec_field){ "lazy-refcounts", TOOL_SPEC_BOOL, NULL,
                                           !!in->lazy_refcounts, NULL };
    }
    /* Consistent bitmaps only: QEMU ignores inconsistent ones (it warns on stderr). */
    if (img && qcow2_bitmap_count(img) > 0) {
        f[n++] = (struct tool_spec_field){ "bitmaps", TOOL_SPEC_BITMAPS, NULL, 0, img };
    }
    f[n++] = (struct tool_spec_field){ "refcount-bits", TOOL_SPEC_INT, NULL, in->refcount_bits,
                                       NULL };
    if (in->data_file) {
        f[n++] = (struct tool_spec_field){ "data-file", TOOL_SPEC_STR, in->data_file, 0, NULL };
        f[n++] = (struct tool_spec_field){ "data-file-raw", TOOL_SPEC_BOOL, NULL,
                                           !!in->data_file_raw, NULL };
    }
    if (v3) {
        f[n++] = (struct tool_spec_field){ "corrupt", TOOL_SPEC_BOOL, NULL, !!in->corrupt,
                                           NULL };
        f[n++] = (struct tool_spec_field){ "extended-l2", TOOL_SPEC_BOOL, NULL,
                                           !!in->extended_l2, NULL };
    }
    return n;
}

/* The flags QEMU lists for a bitmap (Qcow2BitmapInfoFlags), in its order. */
static int bitmap_flags(struct qcow2_image *img, unsigned i, struct qcow2_bitmap_info *bi,
                        const char *flags[2])
{
    int n = 0;

    *bi = QCOW2_BITMAP_INFO_INIT;
    if (qcow2_bitmap_get_info(img, i, bi) < 0) {
        return -1;
    }
    if (bi->in_use) {
        flags[n++] = "in-use";
    }
    if (bi->enabled) {
        flags[n++] = "auto";
    }
    return n;
}

/* One bitmap's lines of qemu-img info, under `indent`. */
static void print_bitmap_human(const struct qcow2_bitmap_info *bi, const char *const *flags,
                               int nf, int i, void *opaque)
{
    const char *indent = opaque;

    printf("%s    [%d]:\n%s        flags:\n", indent, i, indent);
    for (int k = 0; k < nf; k++) {
        printf("%s            [%d]: %s\n", indent, k, flags[k]);
    }
    printf("%s        name: %s\n%s        granularity: %u\n", indent, bi->name, indent,
           bi->granularity);
}

static void print_bitmap_json(const struct qcow2_bitmap_info *bi, const char *const *flags,
                              int nf, int i, void *opaque)
{
    struct tool_json *j = opaque;

    (void)i;
    tool_json_begin_object(j, NULL);
    tool_json_begin_array(j, "flags");
    for (int k = 0; k < nf; k++) {
        tool_json_str(j, NULL, flags[k]);
    }
    tool_json_end_array(j);
    tool_json_str(j, "name", bi->name);
    tool_json_int(j, "granularity", bi->granularity);
    tool_json_end_object(j);
}

/* Call `fn` for each bitmap of `img` with the flags QEMU lists for it. */
static void for_each_bitmap(struct qcow2_image *img,
                            void (*fn)(const struct qcow2_bitmap_info *, const char *const *,
                                       int, int, void *),
                            void *opaque)
{
    int count = qcow2_bitmap_count(img);

    for (int i = 0; i < count; i++) {
        struct qcow2_bitmap_info bi;
        const char *flags[2];
        int nf = bitmap_flags(img, (unsigned)i, &bi, flags);

        if (nf >= 0) {
            fn(&bi, flags, nf, i, opaque);
        }
    }
}

void tool_json_bitmaps(struct tool_json *j, struct qcow2_image *img)
{
    tool_json_begin_array(j, "bitmaps");
    for_each_bitmap(img, print_bitmap_json, j);
    tool_json_end_array(j);
}

void tool_print_format_specific(struct qcow2_image *img, const struct qcow2_info *in,
                                const char *indent)
{
    struct tool_spec_field f[TOOL_SPEC_MAX];
    int n = tool_qcow2_specific(img, in, f);

    for (int i = 0; i < n; i++) {
        fputs(indent, stdout);
        for (const char *k = f[i].key; *k; k++) {
            putchar(*k == '-' ? ' ' : *k);
        }
        switch (f[i].kind) {
        case TOOL_SPEC_STR:
            printf(": %s\n", f[i].s);
            break;
        case TOOL_SPEC_INT:
            printf(": %lld\n", (long long)f[i].i);
            break;
        case TOOL_SPEC_BOOL:
            printf(": %s\n", f[i].i ? "true" : "false");
            break;
        case TOOL_SPEC_BITMAPS:
            printf(":\n");
            for_each_bitmap(f[i].img, print_bitmap_human, (void *)indent);
            break;
        }
    }
}

void tool_human_size(char *buf, size_t len, uint64_t val)
{
    static const char *const suffixes[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
    int exp;

    /* As QEMU: the exponent minus one is floor(log2(val * 1024 / 1000)), which switches to the
     * next unit once the integer part reaches 1000. */
    frexp((double)val / (1000.0 / 1024.0), &exp);
    exp = (exp - 1) / 10;
    snprintf(buf, len, "%0.3g %sB", (double)val / (double)(1ULL << (exp * 10)), suffixes[exp]);
}

/* QEMU's mod_utf8_codepoint(): decode one (modified) UTF-8 sequence of at most `n` bytes at
 * `s`. Returns the code point, or -1 for an invalid sequence; *end points past what was read. */
static int utf8_codepoint(const char *s, size_t n, const char **end)
{
    static const int min_cp[5] = { 0x80, 0x800, 0x10000, 0x200000, 0x4000000 };
    const unsigned char *p = (const unsigned char *)s;
    unsigned byte, mask, len, i;
    int cp;

    if (n == 0 || *s == 0) {
        *end = s;
        return -1;
    }
    byte = *p++;
    if (byte < 0x80) {
        cp = (int)byte;
    } else if (byte >= 0xFE) {
        cp = -1; /* impossible bytes */
    } else if ((byte & 0x40) == 0) {
        cp = -1; /* unexpected continuation byte */
    } else {
        len = 0;
        for (mask = 0x80; byte & mask; mask >>= 1) {
            len++;
        }
        cp = (int)(byte & (mask - 1));
        for (i = 1; i < len; i++) {
            byte = i < n ? *p : 0;
            if ((byte & 0xC0) != 0x80) {
                cp = -1; /* missing continuation byte */
                break;
            }
            p++;
            cp = (int)(((unsigned)cp << 6) | (byte & 0x3F));
        }
        if (cp == -1) {
            /* nothing more to check */
        } else if (cp > 0x10FFFF) {
            cp = -1;
        } else if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) {
            cp = -1; /* noncharacter */
        } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            cp = -1; /* surrogate */
        } else if (len >= 2 && cp < min_cp[len - 2] && !(len == 2 && cp == 0)) {
            cp = -1; /* overlong, except \xC0\x80 */
        }
    }
    *end = (const char *)p;
    return cp;
}

void tool_json_string(FILE *f, const char *s)
{
    const char *end;
    int cp;

    fputc('"', f);
    for (; *s; s = end) {
        cp = utf8_codepoint(s, 6, &end);
        switch (cp) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\b':
            fputs("\\b", f);
            break;
        case '\f':
            fputs("\\f", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (cp < 0) {
                cp = 0xFFFD;
            }
            if (cp > 0xFFFF) {
                fprintf(f, "\\u%04X\\u%04X", 0xD800 + ((cp - 0x10000) >> 10),
                        0xDC00 + ((cp - 0x10000) & 0x3FF));
            } else if (cp < 0x20 || cp >= 0x7F) {
                fprintf(f, "\\u%04X", cp);
            } else {
                fputc(cp, f);
            }
        }
    }
    fputc('"', f);
}

#define JSON_MAX_DEPTH ((int)(sizeof(((struct tool_json *)0)->count) / sizeof(int)))

void tool_json_init(struct tool_json *j, FILE *f)
{
    memset(j, 0, sizeof(*j));
    j->f = f;
}

static void json_indent(struct tool_json *j, int depth)
{
    fputc('\n', j->f);
    for (int i = 0; i < depth; i++) {
        fputs("    ", j->f);
    }
}

/* Start a member (object key or array element) at the current depth. */
static void json_member(struct tool_json *j, const char *key)
{
    if (j->depth > 0) {
        if (j->count[j->depth]++ > 0) {
            fputc(',', j->f);
        }
        json_indent(j, j->depth);
    }
    if (key) {
        tool_json_string(j->f, key);
        fputs(": ", j->f);
    }
}

static void json_open(struct tool_json *j, const char *key, char c)
{
    json_member(j, key);
    fputc(c, j->f);
    if (j->depth + 1 < JSON_MAX_DEPTH) {
        j->depth++;
    }
    j->count[j->depth] = 0;
}

static void json_close(struct tool_json *j, char c)
{
    if (j->depth > 0) {
        j->depth--;
    }
    json_indent(j, j->depth);
    fputc(c, j->f);
}

void tool_json_begin_object(struct tool_json *j, const char *key)
{
    json_open(j, key, '{');
}

void tool_json_end_object(struct tool_json *j)
{
    json_close(j, '}');
}

void tool_json_begin_array(struct tool_json *j, const char *key)
{
    json_open(j, key, '[');
}

void tool_json_end_array(struct tool_json *j)
{
    json_close(j, ']');
}

void tool_json_str(struct tool_json *j, const char *key, const char *val)
{
    json_member(j, key);
    tool_json_string(j->f, val);
}

void tool_json_int(struct tool_json *j, const char *key, int64_t val)
{
    json_member(j, key);
    fprintf(j->f, "%lld", (long long)val);
}

void tool_json_bool(struct tool_json *j, const char *key, int val)
{
    json_member(j, key);
    fputs(val ? "true" : "false", j->f);
}

void tool_json_finish(struct tool_json *j)
{
    fputc('\n', j->f);
}

/* ---- snapshots --------------------------------------------------------------------------- */

/* What qemu-img says on opening an image whose bitmaps a program without bitmap support
 * disowned (qcow2_read_extensions, QEMU 7.2). */
void tool_warn_disowned_bitmaps(const struct qcow2_info *in)
{
    if (in->version < 3) {
        tool_warning("This qcow2 v2 image contains bitmaps, but they may have been modified by "
                     "a program without persistent bitmap support; so now they must all be "
                     "considered inconsistent");
    } else {
        tool_warning("a program lacking bitmap support modified this file, so all bitmaps are "
                     "now considered inconsistent");
    }
    fprintf(stderr, "Some clusters may be leaked, run 'qemu-img check -r' on the image file to "
                    "fix.\n");
}


/* One row of qemu's bdrv_snapshot_dump(); `sn` NULL prints the header. */
static void print_snapshot_row(const struct qcow2_snapshot_info *sn)
{
    char size[64], date[32] = "", clock[64], icount[32] = "";
    time_t t;
    struct tm tm;
    uint64_t secs;

    if (!sn) {
        printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
               "ICOUNT");
        return;
    }
    tool_human_size(size, sizeof(size), sn->vm_state_size);
    t = (time_t)sn->date_sec;
    if (localtime_r(&t, &tm)) {
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    }
    secs = sn->vm_clock_nsec / 1000000000u;
    snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
             (int)((secs / 60) % 60), (int)(secs % 60),
             (int)((sn->vm_clock_nsec / 1000000u) % 1000));
    if (sn->icount != QCOW2_SNAPSHOT_NO_ICOUNT) {
        snprintf(icount, sizeof(icount), "%" PRId64, (int64_t)sn->icount);
    }
    printf("%-9.*s %-16.*s %8s%20s%13s%11s\n", TOOL_SNAPSHOT_ID_MAX, sn->id,
           TOOL_SNAPSHOT_NAME_MAX, sn->name, size, date, clock, icount);
}

int tool_print_snapshots(struct qcow2_image *img)
{
    int n = qcow2_snapshot_count(img);
    struct qcow2_snapshot_info sn = QCOW2_SNAPSHOT_INFO_INIT;

    if (n <= 0) {
        return n;
    }
    printf("Snapshot list:\n");
    print_snapshot_row(NULL);
    for (int i = 0; i < n; i++) {
        int ret = qcow2_snapshot_get(img, (unsigned)i, &sn);
        if (ret < 0) {
            return ret;
        }
        print_snapshot_row(&sn);
    }
    return 0;
}

int tool_json_snapshots(struct tool_json *j, struct qcow2_image *img)
{
    int n = qcow2_snapshot_count(img);
    struct qcow2_snapshot_info sn = QCOW2_SNAPSHOT_INFO_INIT;
    char name[TOOL_SNAPSHOT_NAME_MAX + 1], id[TOOL_SNAPSHOT_ID_MAX + 1];

    if (n <= 0) {
        return n;
    }
    /* QEMU's SnapshotInfo members in its QDict's order. */
    tool_json_begin_array(j, "snapshots");
    for (int i = 0; i < n; i++) {
        int ret = qcow2_snapshot_get(img, (unsigned)i, &sn);
        if (ret < 0) {
            return ret;
        }
        tool_json_begin_object(j, NULL);
        if (sn.icount != QCOW2_SNAPSHOT_NO_ICOUNT) {
            tool_json_int(j, "icount", (int64_t)sn.icount);
        }
        tool_json_int(j, "vm-clock-nsec", (int64_t)(sn.vm_clock_nsec % 1000000000u));
        snprintf(name, sizeof(name), "%s", sn.name);
        tool_json_str(j, "name", name);
        tool_json_int(j, "date-sec", sn.date_sec);
        tool_json_int(j, "date-nsec", sn.date_nsec);
        tool_json_int(j, "vm-clock-sec", (int64_t)(sn.vm_clock_nsec / 1000000000u));
        snprintf(id, sizeof(id), "%s", sn.id);
        tool_json_str(j, "id", id);
        tool_json_int(j, "vm-state-size", (int64_t)sn.vm_state_size);
        tool_json_end_object(j);
    }
    tool_json_end_array(j);
    return 0;
}

/* qemu-img's -l: "snapshot.id=ID[,snapshot.name=NAME]" (either key alone too) or a bare
 * ID_OR_NAME. Fills *id / *name pointing into `buf` (a copy of `param`); a bare value is
 * both. Returns 0 or -EINVAL. */
static int parse_snapshot_param(const char *param, char *buf, size_t len, const char **id,
                                const char **name)
{
    static const char base[] = "snapshot.";

    *id = *name = NULL;
    snprintf(buf, len, "%s", param);
    if (strncmp(buf, base, sizeof(base) - 1) != 0) {
        *id = *name = buf;
        return 0;
    }
    for (char *item = buf, *next; item; item = next) {
        next = strchr(item, ',');
        if (next) {
            *next++ = '\0';
        }
        if (strncmp(item, "snapshot.id=", 12) == 0) {
            *id = item + 12;
        } else if (strncmp(item, "snapshot.name=", 14) == 0) {
            *name = item + 14;
        } else {
            return -EINVAL;
        }
    }
    return 0;
}

int tool_open_snapshot(const char *path, enum qcow2_format fmt, const char *param,
                       const struct tool_trust *t, struct qcow2_image **img)
{
    struct qcow2_open_opts opts = QCOW2_OPEN_OPTS_INIT;
    char buf[1024], err[QCOW2_ERROR_MAX] = "";
    const char *id, *name;
    int ret;

    *img = NULL;
    if (parse_snapshot_param(param, buf, sizeof(buf), &id, &name) < 0) {
        tool_error("Failed in parsing snapshot param '%s'", param);
        return -EINVAL;
    }
    opts.format = fmt;
    opts.read_only = 1;
    tool_trust_apply(t, &opts);
    /* A bare value is an ID first, then a name (bdrv_snapshot_load_tmp_by_id_or_name). */
    opts.snapshot_id = id;
    opts.snapshot_name = id == name ? NULL : name;
    ret = qcow2_open(path, &opts, img, err, sizeof(err));
    if (ret == -ENOENT && id == name) {
        opts.snapshot_id = NULL;
        opts.snapshot_name = name;
        ret = qcow2_open(path, &opts, img, err, sizeof(err));
    }
    if (ret == -ENOENT && strcmp(err, "Can't find snapshot") == 0) {
        tool_error("Failed to load snapshot: %s", err);
    } else if (ret < 0) {
        tool_error("could not open '%s': %s", path, err);
    }
    return ret;
}
