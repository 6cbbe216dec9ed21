/* cmd_io.c - "qcow2 io": a drop-in for qemu-io 7.2. This file is the program around the
 * commands: its options, opening images (plain names, json:{...} names, --image-opts and
 * open -o option strings), the command loop (-c strings, or standard input one line at a
 * time), and the session commands open, close, reopen, quit and help. The commands that work
 * on an open image are in io_cmds.c. Messages, return values and the exit status are
 * qemu-io's; where qemu-io is wrong (a crash, a silent error) we do better and say so. Calls
 * only include/qcow2.h. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

/* fgets() buffer of qemu-io's non-interactive input: longer lines arrive in pieces, there
 * and here. */
#define IO_LINE_MAX 1024

static int image_opts; /* --image-opts: file names (here and in "open") are option strings */

/* ---- option dictionaries ------------------------------------------------------------------ */

/* Open options as QEMU's flattened dictionary: "driver", "file.filename", "read-only", ...
 * A NULL value is JSON's null. */
#define IO_MAX_OPTS 32

struct io_opts {
    int n;
    char *key[IO_MAX_OPTS];
    char *val[IO_MAX_OPTS];
    int is_null[IO_MAX_OPTS];
};

static void opts_free(struct io_opts *o)
{
    for (int i = 0; i < o->n; i++) {
        free(o->key[i]);
        free(o->val[i]);
    }
    o->n = 0;
}

/* Set key (replacing an earlier value); takes `val` (malloc'ed, or NULL for null). */
static int opts_put(struct io_opts *o, const char *key, size_t keylen, char *val)
{
    int i;

    for (i = 0; i < o->n; i++) {
        if (strlen(o->key[i]) == keylen && strncmp(o->key[i], key, keylen) == 0) {
            break;
        }
    }
    if (i == o->n) {
        if (o->n == IO_MAX_OPTS || !(o->key[i] = strndup(key, keylen))) {
            free(val);
            return -ENOMEM;
        }
        o->n++;
    } else {
        free(o->val[i]);
    }
    o->val[i] = val;
    o->is_null[i] = val == NULL;
    return 0;
}

/* Copy every option of `from` into `to`, overriding. */
static int opts_merge(struct io_opts *to, const struct io_opts *from)
{
    for (int i = 0; i < from->n; i++) {
        char *v = from->val[i] ? strdup(from->val[i]) : NULL;

        if ((from->val[i] && !v) || opts_put(to, from->key[i], strlen(from->key[i]), v) < 0) {
            return -ENOMEM;
        }
    }
    return 0;
}

/* QemuOpts syntax: "key=value,key2=value2", ",," for a comma in a value. A key without "="
 * is QEMU's deprecated short-form boolean. Prints QEMU's messages; returns 0 or -EINVAL. */
static int opts_parse_keyval(struct io_opts *o, const char *str)
{
    const char *p = str;

    while (*p) {
        size_t keylen = strcspn(p, "=,");
        char *val, *v;

        if (p[keylen] != '=') {
            /* "foo" means foo=on, "nofoo" foo=off */
            int off = strncmp(p, "no", 2) == 0;
            const char *k = off ? p + 2 : p;
            size_t klen = off ? keylen - 2 : keylen;

            io_warn_report("short-form boolean option '%.*s' deprecated", (int)keylen, p);
            fprintf(stderr, "Please use %.*s=%s instead\n", (int)klen, k, off ? "off" : "on");
            if (opts_put(o, k, klen, strdup(off ? "off" : "on")) < 0) {
                return -ENOMEM;
            }
            p += keylen;
            p += *p == ',';
            continue;
        }
        val = v = malloc(strlen(p) + 1);
        if (!val) {
            return -ENOMEM;
        }
        const char *q = p + keylen + 1;
        for (; *q; q++) {
            if (*q == ',') {
                if (q[1] != ',') {
                    break;
                }
                q++;
            }
            *v++ = *q;
        }
        *v = '\0';
        if (opts_put(o, p, keylen, val) < 0) {
            return -ENOMEM;
        }
        p = *q ? q + 1 : q;
    }
    return 0;
}

/* ---- json: file names ---------------------------------------------------------------------- */

/* A small JSON reader for json:{...} names: objects are flattened into dotted keys
 * ({"file":{"filename":"x"}} gives file.filename=x), booleans become on/off, numbers keep
 * their text. QEMU's single-quoted strings are accepted too. */
struct json_in {
    const char *p;
    const char *err; /* the first error, QEMU's wording where we know it */
    char word[64];
};

static void json_ws(struct json_in *j)
{
    while (isspace((unsigned char)*j->p)) {
        j->p++;
    }
}

static char *json_string(struct json_in *j)
{
    char quote = *j->p++;
    char *out = malloc(strlen(j->p) + 1), *w = out;

    if (!out) {
        j->err = "out of memory";
        return NULL;
    }
    while (*j->p && *j->p != quote) {
        char c = *j->p++;

        if (c == '\\') {
            c = *j->p++;
            switch (c) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                unsigned cp = 0;

                for (int i = 0; i < 4 && isxdigit((unsigned char)*j->p); i++, j->p++) {
                    cp = cp * 16 + (unsigned)(isdigit((unsigned char)*j->p)
                                                  ? *j->p - '0'
                                                  : (tolower((unsigned char)*j->p) - 'a' + 10));
                }
                c = cp < 0x80 ? (char)cp : '?';
                break;
            }
            case '\0':
                j->p--;
                break;
            default:
                break; /* \" \\ \/ \' */
            }
        }
        *w++ = c;
    }
    *w = '\0';
    if (*j->p != quote) {
        j->err = "JSON parse error, premature EOI";
        free(out);
        return NULL;
    }
    j->p++;
    return out;
}

/* Parse one value; objects go into `o` under `prefix`, scalars are returned in *scalar
 * (*is_null for null). Returns 1 for an object, 0 for a scalar, -1 on error. */
static int json_value(struct json_in *j, struct io_opts *o, const char *prefix, char **scalar,
                      int *is_null)
{
    json_ws(j);
    *scalar = NULL;
    *is_null = 0;
    if (*j->p == '\0') {
        j->err = prefix ? "JSON parse error, premature EOI" : "Expecting a JSON value";
        return -1;
    }
    if (*j->p == '{') {
        j->p++;
        json_ws(j);
        if (*j->p == '}') {
            j->p++;
            return 1;
        }
        for (;;) {
            char *key, *full, *val;
            int null, kind;

            json_ws(j);
            if (*j->p == '\0') {
                j->err = "JSON parse error, premature EOI";
                return -1;
            }
            if (isalpha((unsigned char)*j->p)) {
                size_t n = strspn(j->p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");

                snprintf(j->word, sizeof(j->word), "%.*s", (int)n, j->p);
                j->err = "invalid keyword";
                return -1;
            }
            if (*j->p != '"' && *j->p != '\'') {
                j->err = "JSON parse error, key is not a string in object";
                return -1;
            }
            if (!(key = json_string(j))) {
                return -1;
            }
            json_ws(j);
            if (*j->p != ':') {
                free(key);
                j->err = *j->p ? "JSON parse error, missing : in object pair"
                               : "JSON parse error, premature EOI";
                return -1;
            }
            j->p++;
            full = malloc(strlen(prefix ? prefix : "") + strlen(key) + 2);
            if (!full) {
                free(key);
                j->err = "out of memory";
                return -1;
            }
            sprintf(full, "%s%s%s", prefix ? prefix : "", prefix ? "." : "", key);
            free(key);
            kind = json_value(j, o, full, &val, &null);
            if (kind == 0 && opts_put(o, full, strlen(full), val) < 0) {
                j->err = "too many options";
                kind = -1;
            }
            free(full);
            if (kind < 0) {
                return -1;
            }
            json_ws(j);
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p == '}') {
                j->p++;
                return 1;
            }
            j->err = *j->p ? "JSON parse error, expected separator in dict"
                           : "JSON parse error, premature EOI";
            return -1;
        }
    }
    if (*j->p == '"' || *j->p == '\'') {
        *scalar = json_string(j);
        return *scalar ? 0 : -1;
    }
    if (*j->p == '[') {
        j->err = "Invalid JSON object given";
        return -1;
    }
    size_t n = strspn(j->p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    if (n) {
        snprintf(j->word, sizeof(j->word), "%.*s", (int)n, j->p);
        j->p += n;
        if (strcmp(j->word, "true") == 0 || strcmp(j->word, "false") == 0) {
            *scalar = strdup(j->word[0] == 't' ? "on" : "off");
            return *scalar ? 0 : -1;
        }
        if (strcmp(j->word, "null") == 0) {
            *is_null = 1;
            return 0;
        }
        j->err = "invalid keyword";
        return -1;
    }
    n = strspn(j->p, "+-0123456789.eE");
    if (n) {
        *scalar = strndup(j->p, n);
        j->p += n;
        return *scalar ? 0 : -1;
    }
    j->err = "JSON parse error, invalid character";
    return -1;
}

/* Parse the text after "json:". Prints nothing; on failure *msg says why. */
static int json_parse(const char *text, struct io_opts *o, char *msg, size_t msglen)
{
    struct json_in j = { .p = text, .err = NULL, .word = "" };
    char *scalar;
    int is_null, kind = json_value(&j, o, NULL, &scalar, &is_null);

    if (kind == 0) {
        free(scalar);
        snprintf(msg, msglen, "Invalid JSON object given");
        return -EINVAL;
    }
    if (kind < 0) {
        if (j.err && strcmp(j.err, "invalid keyword") == 0) {
            snprintf(msg, msglen,
                     "Could not parse the JSON options: JSON parse error, invalid keyword '%s'",
                     j.word);
        } else if (j.err && strcmp(j.err, "Invalid JSON object given") == 0) {
            snprintf(msg, msglen, "%s", j.err);
        } else {
            snprintf(msg, msglen, "Could not parse the JSON options: %s",
                     j.err ? j.err : "JSON parse error");
        }
        return -EINVAL;
    }
    return 0;
}

/* ---- opening -------------------------------------------------------------------------------- */

/* How an image is to be opened: the command line's or the open command's flags. */
struct io_flags {
    int read_only, writethrough, direct, no_flush, discard_ignore, force_share, native_aio;
    int snapshot; /* -s: writes go to a temporary overlay */
};

static void flags_init(struct io_flags *f)
{
    memset(f, 0, sizeof(*f));
}

/* qemu's cache modes. This library has no O_DIRECT path: "none" and "directsync" behave as
 * "writeback" and "writethrough" (the data is the same, only the host cache differs). */
static int parse_cache(const char *mode, struct io_flags *f)
{
    static const struct {
        const char *name;
        int direct, writethrough, no_flush;
    } modes[] = { { "none", 1, 0, 0 },       { "off", 1, 0, 0 },    { "directsync", 1, 1, 0 },
                  { "writeback", 0, 0, 0 },  { "unsafe", 0, 0, 1 }, { "writethrough", 0, 1, 0 } };

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(mode, modes[i].name) == 0) {
            f->direct = modes[i].direct;
            f->writethrough = modes[i].writethrough;
            f->no_flush = modes[i].no_flush;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_discard(const char *mode, int *ignore)
{
    if (strcmp(mode, "off") == 0 || strcmp(mode, "ignore") == 0) {
        *ignore = 1;
    } else if (strcmp(mode, "on") == 0 || strcmp(mode, "unmap") == 0) {
        *ignore = 0;
    } else {
        return -EINVAL;
    }
    return 0;
}

static int parse_aio(const char *mode, int *native)
{
    if (strcmp(mode, "native") == 0) {
        *native = 1;
    } else if (strcmp(mode, "threads") != 0 && strcmp(mode, "io_uring") != 0) {
        return -EINVAL;
    }
    return 0;
}

/* The options that the command line and the open command share: -n, -r, -s, -k, -U, -t, -d, -i.
 * Returns 0 when `c` was one of them, 1 when it is not, -EINVAL (message printed) for a bad
 * mode. */
static int flag_option(int c, const char *arg, struct io_flags *f)
{
    switch (c) {
    case 'n': f->direct = 1; f->writethrough = 0; return 0;
    case 'r': f->read_only = 1; return 0;
    case 's': f->snapshot = 1; return 0;
    case 'k': f->native_aio = 1; return 0;
    case 'U': f->force_share = 1; return 0;
    case 't':
        if (parse_cache(arg, f) < 0) {
            io_error_report("Invalid cache option: %s", arg);
            return -EINVAL;
        }
        return 0;
    case 'd':
        if (parse_discard(arg, &f->discard_ignore) < 0) {
            io_error_report("Invalid discard option: %s", arg);
            return -EINVAL;
        }
        return 0;
    case 'i':
        if (parse_aio(arg, &f->native_aio) < 0) {
            io_error_report("Invalid aio option: %s", arg);
            return -EINVAL;
        }
        return 0;
    default:
        return 1;
    }
}

static int parse_bool(const char *v, int *out)
{
    if (v && (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "y"))) {
        *out = 1;
    } else if (v && (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false") ||
                     !strcmp(v, "n"))) {
        *out = 0;
    } else {
        return -EINVAL;
    }
    return 0;
}

/* Options that only tune QEMU's own machinery, accepted and ignored. */
static const char *const ignored_keys[] = { "node-name", "file.node-name", "file.locking",
                                            "file.aio", "auto-read-only", "cache-clean-interval",
                                            NULL };

/* The options this tool understands, applied to `o` (library options) and `f`. On failure a
 * message (without the "can't open" prefix) is left in `msg`. Keys left for later (the format's
 * unknown options are reported once the format is known) are marked in `used`. */
static int opts_apply(const struct io_opts *d, struct qcow2_open_opts *o, struct io_flags *f,
                      const char **path, enum qcow2_format *fmt, int *ro_opt, int *used,
                      char *msg, size_t msglen)
{
    int b, i;

    *path = NULL;
    *ro_opt = -1;
    for (i = 0; i < d->n; i++) {
        const char *k = d->key[i], *v = d->val[i];

        used[i] = 1;
        if (strcmp(k, "driver") == 0) {
            if (v && strcmp(v, "qcow2") == 0) {
                *fmt = QCOW2_FORMAT_QCOW2;
            } else if (v && (strcmp(v, "raw") == 0 || strcmp(v, "file") == 0)) {
                *fmt = QCOW2_FORMAT_RAW; /* "file" is the raw protocol layer itself */
            } else {
                snprintf(msg, msglen, "Unknown driver '%s'", v ? v : "");
                return -EINVAL;
            }
        } else if (strcmp(k, "file.filename") == 0 || strcmp(k, "filename") == 0) {
            *path = v;
        } else if (strcmp(k, "file") == 0) {
            /* a string here names another block node; this tool has none */
            snprintf(msg, msglen, "Cannot find device='%s' nor node-name='%s'", v ? v : "",
                     v ? v : "");
            return -EINVAL;
        } else if (strcmp(k, "file.driver") == 0) {
            if (!v || strcmp(v, "file") != 0) {
                snprintf(msg, msglen, "Unknown protocol '%s'", v ? v : "");
                return -EINVAL;
            }
        } else if (strcmp(k, "read-only") == 0 && parse_bool(v, &b) == 0) {
            *ro_opt = b;
        } else if (strcmp(k, "force-share") == 0 && parse_bool(v, &b) == 0) {
            f->force_share = b;
        } else if (strcmp(k, "backing") == 0 && (!v || !*v)) {
            o->no_backing = 1;
        } else if (strcmp(k, "lazy-refcounts") == 0 && parse_bool(v, &b) == 0) {
            o->lazy_refcounts = b ? QCOW2_ON : QCOW2_OFF;
        } else if (strcmp(k, "l2-cache-size") == 0 && v) {
            int64_t n;

            if (io_cvtnum(v, &n) < 0) {
                snprintf(msg, msglen, "Parameter 'l2-cache-size' expects a non-negative number");
                return -EINVAL;
            }
            o->l2_cache_size = (uint64_t)n;
        } else if (strcmp(k, "cache.direct") == 0 && parse_bool(v, &b) == 0) {
            f->direct = b;
        } else if (strcmp(k, "cache.no-flush") == 0 && parse_bool(v, &b) == 0) {
            f->no_flush = b;
        } else if (strcmp(k, "discard") == 0 && v && parse_discard(v, &f->discard_ignore) == 0) {
        } else {
            int known = 0;

            for (const char *const *ik = ignored_keys; *ik; ik++) {
                known |= strcmp(*ik, k) == 0;
            }
            if (!known && strncmp(k, "file.", 5) == 0) {
                snprintf(msg, msglen, "Block protocol 'file' doesn't support the option '%s'",
                         k + 5);
                return -EINVAL;
            }
            used[i] = known;
        }
    }
    return 0;
}

/* -s, as QEMU's snapshot mode: a temporary qcow2 overlay over the image (which is only read)
 * takes the writes and is deleted when the image is closed; it lives in $TMPDIR or /var/tmp.
 * `base` is the image, open; on success *img is the overlay. */
static int open_snapshot(const char *path, struct qcow2_image *base,
                         const struct qcow2_open_opts *o, int read_only,
                         struct qcow2_image **img, char *msg, size_t msglen)
{
    const char *dir = getenv("TMPDIR");
    char tmp[4096], err[QCOW2_ERROR_MAX] = "";
    struct qcow2_create_opts c = QCOW2_CREATE_OPTS_INIT;
    struct qcow2_open_opts oo = *o;
    struct qcow2_info in = QCOW2_INFO_INIT;
    char *abs = realpath(path, NULL);
    int fd, ret;

    snprintf(tmp, sizeof(tmp), "%s/vl.XXXXXX", dir && *dir ? dir : "/var/tmp");
    fd = mkstemp(tmp);
    if (fd < 0 || !abs) {
        ret = -errno;
        snprintf(msg, msglen, "Could not get temporary filename: %s", strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(abs);
        return ret;
    }
    close(fd);
    qcow2_get_info(base, &in);
    c.size = in.virtual_size;
    c.backing_file = abs;
    c.backing_fmt = tool_format_name(in.format);
    ret = qcow2_create(tmp, &c, err, sizeof(err));
    if (ret == 0) {
        oo.format = QCOW2_FORMAT_QCOW2;
        oo.read_only = read_only;
        ret = qcow2_open(tmp, &oo, img, err, sizeof(err));
    }
    unlink(tmp); /* the open handle keeps it until close */
    free(abs);
    if (ret < 0) {
        snprintf(msg, msglen, "%s", err);
    }
    return ret;
}

/* A "filename" option (not file.filename) names the file only together with a driver. */
static int opts_has_only_filename(const struct io_opts *d)
{
    int has = 0;

    for (int i = 0; i < d->n; i++) {
        if (strcmp(d->key[i], "file.filename") == 0) {
            return 0;
        }
        has |= strcmp(d->key[i], "filename") == 0;
    }
    return has;
}

/* qemu-io's openfile(): open `name` (a file name, a json: name, or NULL with everything in
 * `opts`) into the session. Prints qemu-io's messages; returns 0 or 1 as qemu-io does. */
static int io_open(struct io_session *s, const char *name, const struct io_opts *opts,
                   struct io_flags f)
{
    struct io_opts d = { 0 };
    struct qcow2_open_opts o;
    enum qcow2_format fmt = QCOW2_FORMAT_PROBE;
    const char *path = NULL;
    char msg[QCOW2_ERROR_MAX + 64] = "", err[QCOW2_ERROR_MAX] = "";
    int used[IO_MAX_OPTS] = { 0 }, ro_opt, fd, ret = -EINVAL;
    struct qcow2_image *img = NULL;

    if (s->img) {
        io_error_report("file open already, try 'help close'");
        return 1;
    }
    o = QCOW2_OPEN_OPTS_INIT;
    tool_trust_apply(&s->trust, &o);
    if (name && strncmp(name, "json:", 5) == 0) {
        if (json_parse(name + 5, &d, msg, sizeof(msg)) < 0) {
            goto fail;
        }
    }
    /* options given beside a json: name override it (qemu-io -f raw json:{"driver":"qcow2"}) */
    if (opts && opts_merge(&d, opts) < 0) {
        goto fail;
    }
    if (opts_apply(&d, &o, &f, &path, &fmt, &ro_opt, used, msg, sizeof(msg)) < 0) {
        goto fail;
    }
    if (name && strncmp(name, "json:", 5) != 0) {
        path = name;
    }
    if (!path || (fmt == QCOW2_FORMAT_PROBE && opts_has_only_filename(&d))) {
        snprintf(msg, sizeof(msg), fmt == QCOW2_FORMAT_PROBE
                                       ? "Must specify either driver or file"
                                       : "A block device must be specified for \"file\"");
        goto fail;
    }
    if (ro_opt == 1 && !f.read_only) {
        /* qemu-io wants to write unless -r: a read-only node cannot serve it */
        snprintf(msg, sizeof(msg), "Block node is read-only");
        goto fail;
    }
    if (f.force_share && !f.read_only) {
        snprintf(msg, sizeof(msg), "force-share=on can only be used with read-only images");
        goto fail;
    }
    if (f.native_aio && !f.direct) {
        snprintf(msg, sizeof(msg), "aio=native was specified, but it requires cache.direct=on, "
                                   "which was not specified.");
        goto fail;
    }
    /* (non-blocking for an untrusted image: a FIFO must not hang us; the library refuses it) */
    fd = open(path, (f.read_only || f.snapshot ? O_RDONLY : O_RDWR) |
                        (s->trust.untrusted ? O_NONBLOCK : 0));
    if (fd < 0) {
        ret = -errno;
        snprintf(msg, sizeof(msg), "Could not open '%s': %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    o.format = fmt;
    o.read_only = f.read_only || f.snapshot;
    ret = qcow2_open(path, &o, &img, err, sizeof(err));
    if (ret < 0) {
        struct qcow2_image *probe = NULL;
        struct qcow2_open_opts po;
        const char *m = err;
        size_t plen = strlen(path);

        /* forced qcow2 on a file that probes as raw: QEMU's words for it */
        po = QCOW2_OPEN_OPTS_INIT;
        po.read_only = 1;
        po.no_backing = 1;
        tool_trust_apply(&s->trust, &po);
        if (fmt == QCOW2_FORMAT_QCOW2 && qcow2_open(path, &po, &probe, NULL, 0) == 0) {
            struct qcow2_info pi = QCOW2_INFO_INIT;

            qcow2_get_info(probe, &pi);
            if (pi.format == QCOW2_FORMAT_RAW) {
                m = "Image is not in qcow2 format";
            }
            qcow2_close(probe);
        }
        if (m == err && strncmp(err, path, plen) == 0 && strncmp(err + plen, ": ", 2) == 0) {
            m = err + plen + 2;
        }
        snprintf(msg, sizeof(msg), "%s", *m ? m : strerror(-ret));
        goto fail;
    }
    struct qcow2_info in = QCOW2_INFO_INIT;
    qcow2_get_info(img, &in);
    for (int i = 0; i < d.n; i++) {
        if (!used[i]) {
            snprintf(msg, sizeof(msg), "Block format '%s' does not support the option '%s'",
                     tool_format_name(in.format), d.key[i]);
            qcow2_close(img);
            ret = -EINVAL;
            goto fail;
        }
    }
    if (f.snapshot) {
        struct qcow2_image *overlay;

        ret = open_snapshot(path, img, &o, f.read_only, &overlay, msg, sizeof(msg));
        qcow2_close(img);
        if (ret < 0) {
            goto fail;
        }
        img = overlay;
        qcow2_get_info(img, &in);
    } else if (fmt == QCOW2_FORMAT_PROBE && in.format == QCOW2_FORMAT_RAW && !f.read_only) {
        /* (QEMU also refuses writes to block 0 of such an image that would make it probe as
         * another format; this tool does not.) */
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                "         Automatically detecting the format is dangerous for raw images, "
                "write operations on block 0 will be restricted.\n"
                "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                path);
    }
    s->img = img;
    s->format = in.format;
    s->read_only = f.read_only;
    s->writethrough = f.writethrough;
    s->no_flush = f.no_flush;
    s->discard_ignore = f.discard_ignore;
    s->snapshot = f.snapshot;
    s->opts = o;
    s->opts.format = in.format;
    free(s->path);
    s->path = strdup(path);
    opts_free(&d);
    return 0;
fail:
    if (name) {
        io_error_report("can't open device %s: %s", name, msg);
    } else {
        io_error_report("can't open: %s", msg);
    }
    opts_free(&d);
    (void)ret;
    return 1;
}

static int io_close_image(struct io_session *s)
{
    int ret = 0;

    io_aio_drain(s);
    if (s->img) {
        ret = qcow2_close(s->img);
        s->img = NULL;
        if (ret < 0) {
            /* qemu-io says nothing when closing fails; a failed flush loses data */
            io_error_report("error while closing the image: %s", strerror(-ret));
        }
    }
    return ret;
}

/* ---- open, close, reopen, quit, help ------------------------------------------------------- */

static const char open_help[] =
    "\n"
    " opens a new file in the requested mode\n"
    "\n"
    " Example:\n"
    " 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached\n"
    "\n"
    " Opens a file for subsequent use by all of the other qemu-io commands.\n"
    " -r, -- open file read-only\n"
    " -s, -- use snapshot file\n"
    " -C, -- use copy-on-read\n"
    " -n, -- disable host cache, short for -t none\n"
    " -U, -- force shared permissions\n"
    " -k, -- use kernel AIO implementation (Linux only, prefer use of -i)\n"
    " -i, -- use AIO mode (threads, native or io_uring)\n"
    " -t, -- use the given cache mode for the image\n"
    " -d, -- use the given discard mode for the image\n"
    " -o, -- options to be given to the block driver\n";

static const char reopen_help[] =
    "\n"
    " Changes the open options of an already opened image\n"
    "\n"
    " Example:\n"
    " 'reopen -o lazy-refcounts=on' - activates lazy refcount writeback on a qcow2 image\n"
    "\n"
    " -r, -- Reopen the image read-only\n"
    " -w, -- Reopen the image read-write\n"
    " -c, -- Change the cache mode to the given value\n"
    " -o, -- Changes block driver options (cf. 'open' command)\n"
    "\n";

static int open_f(struct io_session *s, int argc, char **argv);
static int close_f(struct io_session *s, int argc, char **argv);
static int reopen_f(struct io_session *s, int argc, char **argv);
static int quit_f(struct io_session *s, int argc, char **argv);
static int help_f(struct io_session *s, int argc, char **argv);

static const struct io_cmd session_cmds[] = {
    { "open", "o", open_f, 1, -1, IO_NOFILE_OK,
      "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]", "open the file specified by path",
      open_help },
    { "close", "c", close_f, 0, 0, IO_POLLS, NULL, "close the current open file", NULL },
    { "reopen", NULL, reopen_f, 0, -1, IO_POLLS, "[(-r|-w)] [-c cache] [-o options]",
      "reopens an image with new options", reopen_help },
    { "quit", "q", quit_f, -1, -1, IO_GLOBAL, NULL, "exit the program", NULL },
    { "help", "?", help_f, 0, 1, IO_GLOBAL, "[command]", "help for one or all commands", NULL },
};
#define NB_SESSION_CMDS ((int)(sizeof(session_cmds) / sizeof(session_cmds[0])))

/* All commands, sorted by name as qemu-io lists them. */
static const struct io_cmd *cmdtab[64];
static int ncmds;

static int cmp_cmd(const void *a, const void *b)
{
    const struct io_cmd *x = *(const struct io_cmd *const *)a;
    const struct io_cmd *y = *(const struct io_cmd *const *)b;

    return strcmp(x->name, y->name);
}

static void init_cmdtab(void)
{
    ncmds = 0;
    for (int i = 0; i < NB_SESSION_CMDS; i++) {
        cmdtab[ncmds++] = &session_cmds[i];
    }
    for (int i = 0; i < io_image_ncmds; i++) {
        cmdtab[ncmds++] = &io_image_cmds[i];
    }
    qsort(cmdtab, (size_t)ncmds, sizeof(cmdtab[0]), cmp_cmd);
}

static const struct io_cmd *find_cmd(const char *name)
{
    for (int i = 0; i < ncmds; i++) {
        if (strcmp(cmdtab[i]->name, name) == 0 ||
            (cmdtab[i]->altname && strcmp(cmdtab[i]->altname, name) == 0)) {
            return cmdtab[i];
        }
    }
    return NULL;
}

static int open_f(struct io_session *s, int argc, char **argv)
{
    struct io_flags f;
    struct io_opts opts = { 0 };
    int c, ret;

    flags_init(&f);
    while ((c = io_getopt(argc, argv, "snCro:ki:t:d:U")) != -1) {
        switch (c) {
        case 'C':
            /* copy-on-read copies what reads find in backing files: not here */
            io_error_report("open -C is not supported by this tool");
            opts_free(&opts);
            return -ENOTSUP;
        case 'o':
            if (image_opts) {
                printf("--image-opts and 'open -o' are mutually exclusive\n");
                opts_free(&opts);
                return -EINVAL;
            }
            if (opts_parse_keyval(&opts, optarg) < 0) {
                opts_free(&opts);
                return -EINVAL;
            }
            break;
        default:
            if ((ret = flag_option(c, optarg, &f)) <= 0) {
                if (ret < 0) {
                    opts_free(&opts);
                    return ret;
                }
                break;
            }
            opts_free(&opts);
            return io_usage(&session_cmds[0]);
        }
    }
    if (image_opts && optind == argc - 1) {
        if (opts_parse_keyval(&opts, argv[optind]) < 0) {
            opts_free(&opts);
            return -EINVAL;
        }
        optind++;
    }
    if (optind == argc - 1) {
        ret = io_open(s, argv[optind], &opts, f);
    } else if (optind == argc) {
        ret = io_open(s, NULL, &opts, f);
    } else {
        opts_free(&opts);
        return io_usage(&session_cmds[0]);
    }
    opts_free(&opts);
    return ret ? -EINVAL : 0;
}

static int close_f(struct io_session *s, int argc, char **argv)
{
    (void)argc, (void)argv;
    return io_close_image(s);
}

/* Reopen with other settings: closed, then opened again with the changes (and with the old
 * settings again if that fails). */
static int reopen_f(struct io_session *s, int argc, char **argv)
{
    struct io_opts d = { 0 };
    struct io_flags f = { .read_only = s->read_only, .writethrough = s->writethrough,
                          .no_flush = s->no_flush, .discard_ignore = s->discard_ignore };
    struct qcow2_open_opts o = s->opts, old = s->opts;
    int c, rw_given = 0, ret = -EINVAL;
    char err[QCOW2_ERROR_MAX] = "";

    while ((c = io_getopt(argc, argv, "c:o:rw")) != -1) {
        switch (c) {
        case 'c':
            if (parse_cache(optarg, &f) < 0) {
                io_error_report("Invalid cache option: %s", optarg);
                goto out;
            }
            break;
        case 'o':
            if (opts_parse_keyval(&d, optarg) < 0) {
                goto out;
            }
            break;
        case 'r':
        case 'w':
            if (rw_given) {
                io_error_report("Only one -r/-w option may be given");
                goto out;
            }
            f.read_only = c == 'r';
            rw_given = 1;
            break;
        default:
            opts_free(&d);
            return io_usage(&session_cmds[2]);
        }
    }
    if (optind != argc) {
        opts_free(&d);
        return io_usage(&session_cmds[2]);
    }
    if (s->snapshot) {
        /* reopening would lose the temporary overlay and its writes */
        io_error_report("reopen is not supported for an image opened with -s");
        goto out;
    }
    for (int i = 0; i < d.n; i++) {
        const char *k = d.key[i], *v = d.val[i];
        int b;

        if (strcmp(k, "read-only") == 0 && parse_bool(v, &b) == 0) {
            if (rw_given) {
                io_error_report("Cannot set both -r/-w and 'read-only'");
                goto out;
            }
            f.read_only = b;
        } else if (strcmp(k, "lazy-refcounts") == 0 && parse_bool(v, &b) == 0) {
            o.lazy_refcounts = b ? QCOW2_ON : QCOW2_OFF;
        } else if (strcmp(k, "cache.direct") == 0 && parse_bool(v, &b) == 0) {
            f.direct = b;
        } else if (strcmp(k, "cache.no-flush") == 0 && parse_bool(v, &b) == 0) {
            f.no_flush = b;
        } else if (strcmp(k, "discard") == 0 && v && parse_discard(v, &f.discard_ignore) == 0) {
        } else if (strcmp(k, "l2-cache-size") == 0 && v) {
            int64_t n;

            if (io_cvtnum(v, &n) < 0) {
                io_error_report("Parameter 'l2-cache-size' expects a non-negative number");
                goto out;
            }
            o.l2_cache_size = (uint64_t)n;
        } else {
            io_error_report("Cannot change the option '%s'", k);
            goto out;
        }
    }
    io_close_image(s);
    o.read_only = f.read_only;
    if (qcow2_open(s->path, &o, &s->img, err, sizeof(err)) < 0) {
        io_error_report("%s", err);
        old.read_only = s->read_only;
        if (qcow2_open(s->path, &old, &s->img, NULL, 0) < 0) {
            s->img = NULL;
        }
        goto out;
    }
    s->opts = o;
    s->read_only = f.read_only;
    s->writethrough = f.writethrough;
    s->no_flush = f.no_flush;
    s->discard_ignore = f.discard_ignore;
    ret = 0;
out:
    opts_free(&d);
    return ret;
}

static int quit_f(struct io_session *s, int argc, char **argv)
{
    (void)argc, (void)argv;
    s->quit = 1;
    return 0;
}

static void help_oneline(const char *name, const struct io_cmd *ct)
{
    printf("%s ", name);
    if (ct->args) {
        printf("%s ", ct->args);
    }
    printf("-- %s\n", ct->oneline);
}

static int help_f(struct io_session *s, int argc, char **argv)
{
    const struct io_cmd *ct;

    (void)s;
    if (argc == 1) {
        for (int i = 0; i < ncmds; i++) {
            help_oneline(cmdtab[i]->name, cmdtab[i]);
        }
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    ct = find_cmd(argv[1]);
    if (!ct) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], ct);
    if (ct->help) {
        fputs(ct->help, stdout);
    }
    return 0;
}

/* ---- the command loop ----------------------------------------------------------------------- */

/* One command line: words separated by spaces (only spaces, as qemu-io splits them). Returns
 * the command's result: negative for a failure. */
static int io_command(struct io_session *s, const char *line)
{
    char *copy = strdup(line), *p, *word;
    char **argv;
    int argc = 0, ret;
    const struct io_cmd *ct;

    if (!copy || !(argv = calloc(strlen(line) / 2 + 2, sizeof(*argv)))) {
        free(copy);
        return -ENOMEM;
    }
    for (p = copy; (word = strsep(&p, " ")) != NULL;) {
        if (*word) {
            argv[argc++] = word;
        }
    }
    argv[argc] = NULL;
    ret = 0;
    if (argc == 0) {
        goto out;
    }
    ct = find_cmd(argv[0]);
    if (!ct) {
        fprintf(stderr, "command \"%s\" not found\n", argv[0]);
        ret = -EINVAL;
        goto out;
    }
    if (!(ct->flags & (IO_GLOBAL | IO_NOFILE_OK)) && !s->img) {
        fprintf(stderr, "no file open, try 'help open'\n");
        ret = -EINVAL;
        goto out;
    }
    if (argc - 1 < ct->argmin || (ct->argmax != -1 && argc - 1 > ct->argmax)) {
        if (ct->argmax == -1) {
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n",
                    argc - 1, argv[0], ct->argmin);
        } else if (ct->argmin == ct->argmax) {
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", argc - 1,
                    argv[0], ct->argmin);
        } else {
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n",
                    argc - 1, argv[0], ct->argmin, ct->argmax);
        }
        ret = -EINVAL;
        goto out;
    }
    if ((ct->flags & IO_WRITE) && s->img && s->read_only) {
        io_error_report("Block node is read-only");
        ret = -EPERM;
        goto out;
    }
    if (ct->flags & IO_POLLS) {
        io_aio_drain(s);
    }
    optind = 0; /* glibc: 0 re-initialises getopt fully between commands */
    ret = ct->run(s, argc, argv);
out:
    free(argv);
    free(copy);
    return ret;
}

/* -c strings, or else standard input a line at a time after a "qemu-io> " prompt (printed
 * whether or not the input is a terminal, as qemu-io does). Returns the last failure. */
static int io_command_loop(struct io_session *s, char **cmds, int ncmds_given)
{
    int last_error = 0, ret;
    char line[IO_LINE_MAX];

    for (int i = 0; i < ncmds_given && !s->quit; i++) {
        ret = io_command(s, cmds[i]);
        if (ret < 0) {
            last_error = ret;
        }
    }
    if (ncmds_given) {
        return last_error;
    }
    while (!s->quit) {
        size_t n;

        printf("%s> ", IO_PROG);
        fflush(stdout);
        if (!fgets(line, sizeof(line), stdin)) {
            break;
        }
        n = strlen(line);
        if (n && line[n - 1] == '\n') {
            line[n - 1] = '\0';
        }
        ret = io_command(s, line);
        if (ret < 0) {
            last_error = ret;
        }
    }
    return last_error;
}

/* ---- the program -------------------------------------------------------------------------- */

static void io_usage_text(FILE *f)
{
    fprintf(f,
            "Usage: " TOOL_NAME " io [OPTIONS]... [-c STRING]... [file]\n"
            "qemu-io for qcow2 and raw images (libqcow2 " QCOW2_VERSION_STRING "): the same\n"
            "options, commands and output as qemu-io 7.2, so that qemu-io scripts run unchanged.\n"
            "Without -c, commands are read from standard input, one per line.\n"
            "\n"
            "  --image-opts         treat file as option string\n"
            "                       (driver=qcow2,file.filename=FILE,...)\n"
            "  -c, --cmd STRING     execute command with its arguments\n"
            "                       from the given string\n"
            "  -f, --format FMT     specifies the block driver to use (qcow2, raw)\n"
            "  -r, --read-only      export read-only\n"
            "  -s, --snapshot       use snapshot file (a temporary overlay in $TMPDIR or\n"
            "                       /var/tmp takes the writes; deleted at close)\n"
            "  -n, --nocache        disable host cache, short for -t none\n"
            "  -m, --misalign       accepted; no effect\n"
            "  -k, --native-aio     as -i native (which needs -n or -t none, as in qemu-io)\n"
            "  -i, --aio=MODE       threads, native or io_uring; no effect\n"
            "  -t, --cache=MODE     none|off, writeback (default), writethrough, directsync,\n"
            "                       unsafe (writethrough: a flush after every write;\n"
            "                       unsafe: flushes do nothing; no mode bypasses the host cache)\n"
            "  -d, --discard=MODE   unmap|on (default) or ignore|off\n"
            "  -T, --trace OPTS     accepted; no effect\n"
            "  -U, --force-share    force shared permissions (with -r)\n"
            "  --untrusted          the image comes from an untrusted source: refuse devices,\n"
            "                       FIFOs, sockets, oversized tables and any backing or data\n"
            "                       file outside --allow-dir (any at all without it)\n"
            "  --allow-dir=DIR      backing and data files must resolve beneath DIR\n"
            "  -h, --help           display this help and exit\n"
            "  -V, --version        output version information and exit\n"
            "\n"
            "FILE may be json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\","
            "\"filename\":\"F\"}}\n"
            "(or the flat form json:{\"driver\":\"qcow2\",\"file.filename\":\"F\"}).\n"
            "Options for -o, --image-opts and json: names: driver, file.filename, filename,\n"
            "file.driver=file, read-only, backing=null (json) or backing= (no backing file),\n"
            "lazy-refcounts, l2-cache-size, cache.direct, cache.no-flush, discard, force-share.\n"
            "Not supported: -C/--copy-on-read, --object.\n"
            "\n"
            "See '" TOOL_NAME " io -c help' for information on available commands.\n");
}

int cmd_io(int argc, char **argv)
{
    enum { OPT_OBJECT = 256, OPT_IMAGE_OPTS };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "cmd", required_argument, NULL, 'c' },
        { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },
        { "snapshot", no_argument, NULL, 's' },
        { "nocache", no_argument, NULL, 'n' },
        { "copy-on-read", no_argument, NULL, 'C' },
        { "misalign", no_argument, NULL, 'm' },
        { "native-aio", no_argument, NULL, 'k' },
        { "aio", required_argument, NULL, 'i' },
        { "discard", required_argument, NULL, 'd' },
        { "cache", required_argument, NULL, 't' },
        { "trace", required_argument, NULL, 'T' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        TOOL_TRUST_LONGOPTS,
        { NULL, 0, NULL, 0 },
    };
    struct io_session s;
    struct io_flags f;
    struct io_opts opts = { 0 };
    const char *format = NULL;
    char **cmds = calloc((size_t)argc + 1, sizeof(*cmds));
    int ncmd = 0, c, ret = TOOL_EXIT_ERROR;

    if (!cmds) {
        return TOOL_EXIT_ERROR;
    }
    memset(&s, 0, sizeof(s));
    s.aio_last = &s.aio_first;
    flags_init(&f);
    image_opts = 0;
    init_cmdtab();
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hVc:d:f:rsnCmki:t:T:U", longopts, NULL)) != -1) {
        if (tool_trust_option(&s.trust, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'h':
            io_usage_text(stdout);
            ret = TOOL_EXIT_OK;
            goto out;
        case 'V':
            printf(TOOL_NAME " io (libqcow2) version " QCOW2_VERSION_STRING "\n");
            ret = TOOL_EXIT_OK;
            goto out;
        case 'c': cmds[ncmd++] = optarg; break;
        case 'f': format = optarg; break;
        case 'm': /* misalign: no effect */
        case 'T': /* trace: no effect */
            break;
        case 'C':
        case OPT_OBJECT:
            io_error_report("%s is not supported by this tool",
                            c == 'C' ? "-C (copy-on-read)" : "--object");
            goto out;
        case OPT_IMAGE_OPTS: image_opts = 1; break;
        default:
            if (c != '?' && (c = flag_option(c, optarg, &f)) <= 0) {
                if (c < 0) {
                    goto out;
                }
                break;
            }
            if (optopt && optopt < 256 && strchr("cdfitT", optopt)) {
                io_error_report("option requires an argument -- '%c'", optopt);
            } else if (optopt) {
                io_error_report("invalid option -- '%c'", optopt);
            } else {
                io_error_report("unrecognized option '%s'", argv[optind - 1]);
            }
            io_usage_text(stdout);
            goto out;
        }
    }
    if (argc - optind > 1) {
        io_usage_text(stdout);
        goto out;
    }
    if (format && image_opts) {
        io_error_report("--image-opts and -f are mutually exclusive");
        goto out;
    }
    if (argc - optind == 1) {
        const char *name = argv[optind];

        if (image_opts) {
            if (opts_parse_keyval(&opts, name) < 0) {
                goto out;
            }
            name = NULL;
        } else if (format && opts_put(&opts, "driver", 6, strdup(format)) < 0) {
            goto out;
        }
        if (io_open(&s, name, &opts, f)) {
            goto out;
        }
    }
    ret = io_command_loop(&s, cmds, ncmd) < 0 ? TOOL_EXIT_ERROR : TOOL_EXIT_OK;
    if (io_close_image(&s) < 0) {
        ret = TOOL_EXIT_ERROR;
    }
out:
    opts_free(&opts);
    free(s.path);
    free(cmds);
    return ret;
}
