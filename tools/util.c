/* util.c - helpers shared by the subcommands: messages, argument parsing, opening images,
 * and the output formats qemu-img uses (human sizes, QEMU's JSON layout and escaping).
 * Calls only the public API; holds no state between calls. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* ---- images ------------------------------------------------------------------------------ */

int tool_open_quiet(const char *path, enum qcow2_format fmt, unsigned flags,
                    struct qcow2_image **img, char *msg, size_t msglen)
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

int tool_open(const char *path, enum qcow2_format fmt, unsigned flags,
              struct qcow2_image **img)
{
    char msg[QCOW2_ERROR_MAX];
    int ret = tool_open_quiet(path, fmt, flags, img, msg, sizeof(msg));

    if (ret < 0) {
        tool_error("could not open '%s': %s", path, msg);
    }
    return ret;
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

/* ---- output ------------------------------------------------------------------------------ */

int tool_qcow2_specific(const struct qcow2_info *in, struct tool_spec_field *f)
{
    int v3 = in->version >= 3, n = 0;

    f[n++] = (struct tool_spec_field){ "compat", TOOL_SPEC_STR, v3 ? "1.1" : "0.10", 0 };
    f[n++] = (struct tool_spec_field){
        "compression-type", TOOL_SPEC_STR,
        in->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib", 0
    };
    if (v3) {
        f[n++] = (struct tool_spec_field){ "lazy-refcounts", TOOL_SPEC_BOOL, NULL,
                                           !!in->lazy_refcounts };
    }
    /* Where QEMU lists the bitmaps (it reads their directory, we do not): how many, and
     * whether they can be trusted. QEMU shows nothing for inconsistent ones. */
    if (in->nb_bitmaps > 0 || in->bitmaps_inconsistent) {
        f[n++] = (struct tool_spec_field){ "bitmaps-count", TOOL_SPEC_INT, NULL, in->nb_bitmaps };
        f[n++] = (struct tool_spec_field){
            "bitmaps-state", TOOL_SPEC_STR,
            in->bitmaps_inconsistent ? "inconsistent" : "consistent", 0
        };
    }
    f[n++] = (struct tool_spec_field){ "refcount-bits", TOOL_SPEC_INT, NULL, in->refcount_bits };
    if (in->data_file) {
        f[n++] = (struct tool_spec_field){ "data-file", TOOL_SPEC_STR, in->data_file, 0 };
        f[n++] = (struct tool_spec_field){ "data-file-raw", TOOL_SPEC_BOOL, NULL,
                                           !!in->data_file_raw };
    }
    if (v3) {
        f[n++] = (struct tool_spec_field){ "corrupt", TOOL_SPEC_BOOL, NULL, !!in->corrupt };
        f[n++] = (struct tool_spec_field){ "extended-l2", TOOL_SPEC_BOOL, NULL,
                                           !!in->extended_l2 };
    }
    return n;
}

void tool_print_format_specific(const struct qcow2_info *in, const char *indent)
{
    struct tool_spec_field f[TOOL_SPEC_MAX];
    int n = tool_qcow2_specific(in, f);

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

/* ---- progress ---------------------------------------------------------------------------- */

static void progress_print(struct tool_progress *p, double pct)
{
    printf("    (%3.2f/100%%)\r", pct);
    fflush(stdout);
    p->last = pct;
}

void tool_progress_init(struct tool_progress *p, int wanted, double min_skip)
{
    p->on = wanted && isatty(STDOUT_FILENO);
    p->min_skip = min_skip;
    p->last = 0;
    if (p->on) {
        progress_print(p, 0);
    }
}

void tool_progress_update(void *opaque, uint64_t done, uint64_t total)
{
    struct tool_progress *p = opaque;
    double pct = total ? (double)done * 100.0 / (double)total : 100.0;

    if (p->on && pct - p->last > p->min_skip) {
        progress_print(p, pct);
    }
}

void tool_progress_end(struct tool_progress *p)
{
    if (p->on) {
        progress_print(p, 100.0);
        printf("\n");
        fflush(stdout);
    }
}
