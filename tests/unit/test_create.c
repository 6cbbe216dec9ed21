/* test_create.c - create.c: size parsing as qemu-img reads sizes, the -o option parser, the
 * option rules qemu-img enforces, and new images. qemu-img is the reference: for the same
 * options our image must be byte-for-byte the file `qemu-img create` writes (preallocated
 * images: the same guest map), pass `qemu-img check`, and report the options in
 * `qemu-img info`; our library must open it and read zeros (or the backing file). Tests that
 * need qemu-img are skipped, with a message, when it is not installed. */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testharness.h"

#define QEMU_TEST(label, call)                                                             \
    do {                                                                                   \
        if (g_have_qemu)                                                                   \
            RUN(label, call);                                                              \
        else                                                                               \
            printf("skip %s (qemu-img not installed)\n", label);                           \
    } while (0)

static char g_dir[4096];
static bool g_have_qemu;

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers. */

/* A fresh directory under the test directory (each case gets its own: names are relative). */
static const char *case_dir(const char *name)
{
    static char buf[8][4200];
    static int next;
    char *d = buf[next++ % 8];
    snprintf(d, sizeof(buf[0]), "%s/%s", g_dir, name);
    char cmd[4400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", d, d);
    if (system(cmd) != 0)
        fprintf(stderr, "  cannot make %s\n", d);
    return d;
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Run a command and return its stdout (malloc'd, NUL-terminated). */
static char *capture(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *capture(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return strdup("");
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    size_t n;
    while (out && (n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *bigger = realloc(out, cap * 2);
            if (!bigger)
                break;
            out = bigger;
            cap *= 2;
        }
    }
    pclose(p);
    if (out)
        out[len] = '\0';
    return out ? out : strdup("");
}

static int64_t file_length(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static int64_t file_blocks_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_blocks * 512 : -1;
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Compare two files; on a difference, describe the first differing byte in `why`. */
static bool same_file(const char *a, const char *b, char *why, size_t whylen)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    if (!same)
        snprintf(why, whylen, "cannot open %s or %s", a, b);
    uint64_t off = 0;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) {
            snprintf(why, whylen, "first difference at byte 0x%llx (cluster-relative: see "
                     "hexdump), ours %d, qemu-img's %d (EOF = -1)", ull(off), ca, cb);
            same = false;
        }
        if (ca == EOF || cb == EOF)
            break;
        off++;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

/* Create `dir/name` with our library from a -o list and a size. */
static int create_ours(const char *dir, const char *name, const char *optlist, uint64_t size,
                       char *err, size_t errlen)
{
    struct qcow2_create_opts o;
    o = QCOW2_CREATE_OPTS_INIT;
    char *copy = strdup(optlist ? optlist : "");
    int ret = 0;
    if (copy[0])
        ret = qcow2_create_opts_parse(&o, copy, err, errlen);
    if (ret == 0) {
        o.size = size;
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        ret = qcow2_create(path, &o, err, errlen);
    }
    free(copy);
    return ret;
}

/* The same with qemu-img, run inside `dir` (qemu-img 7.2 resolves data files against the
 * current directory, the library against the image's directory: same place here). */
static int create_qemu(const char *dir, const char *name, const char *optlist, uint64_t size)
{
    return run("cd '%s' && qemu-img create -q -f qcow2 %s%s%s '%s' %llu >/dev/null 2>&1", dir,
               optlist && optlist[0] ? "-o '" : "", optlist && optlist[0] ? optlist : "",
               optlist && optlist[0] ? "'" : "", name, ull(size));
}

static int qemu_check(const char *dir, const char *name)
{
    return run("cd '%s' && qemu-img check -q '%s' >/dev/null 2>&1", dir, name);
}

/* Does qemu-img info's JSON contain `"key": value`? */
static bool json_has(const char *json, const char *key, const char *value)
{
    char want[512];
    snprintf(want, sizeof(want), "\"%s\": %s", key, value);
    return strstr(json, want) != NULL;
}

/* qemu-img map --output=json without host offsets (layouts may differ, the guest view not). */
static char *guest_map(const char *dir, const char *name)
{
    return capture("cd '%s' && qemu-img map --output=json '%s' 2>&1 | "
                   "sed -e 's/, \"offset\": [0-9]*//g'",
                   dir, name);
}

/* Open with our library and check that [0, size) reads as `pattern` at a few places. */
static void check_reads(const char *path, uint64_t size, int pattern)
{
    struct qcow2_image *img;
    char err[QCOW2_ERROR_MAX];
    int ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "open %s: %s", path, err);
    if (ret < 0)
        return;
    CHECK_MSG(qcow2_get_size(img) == size, "size %llu, want %llu", ull(qcow2_get_size(img)),
              ull(size));
    uint8_t buf[4096];
    uint64_t at[] = {0, size / 2, size >= sizeof(buf) ? size - sizeof(buf) : 0};
    for (size_t i = 0; i < 3 && size >= sizeof(buf); i++) {
        memset(buf, 0xa5, sizeof(buf));
        ret = qcow2_pread(img, buf, sizeof(buf), at[i] & ~511ull);
        CHECK_MSG(ret == 0, "read at %llu: %s", ull(at[i]), qcow2_error(img));
        bool ok = true;
        for (size_t j = 0; j < sizeof(buf); j++)
            ok = ok && buf[j] == pattern;
        CHECK_MSG(ok, "%s at %llu does not read as 0x%02x", path, ull(at[i]), pattern);
    }
    qcow2_close(img);
}

/* ------------------------------------------------------------------------------------------ */
/* Sizes. */

static void test_parse_size_accepts_what_qemu_img_accepts(void)
{
    static const struct {
        const char *s;
        uint64_t v;
    } cases[] = {
        {"0", 0},
        {"512", 512},
        {"1k", 1024},
        {"1K", 1024},
        {"64M", 64ull << 20},
        {"64m", 64ull << 20},
        {"1G", 1ull << 30},
        {"1g", 1ull << 30},
        {"1T", 1ull << 40},
        {"1t", 1ull << 40},
        {"1P", 1ull << 50},
        {"7E", 7ull << 60},
        {"1.5G", 3ull << 29},
        {"1.5k", 1536},
        {"1.25k", 1280},
        {"1.3k", 1331},               /* 1331.2, rounded */
        {"1.1111111111111k", 1138},   /* 1137.78, rounded up */
        {"0.5k", 512},
        {"1.k", 1024},
        {"1.0", 1},                   /* a zero fraction needs no unit */
        {"1.", 1},
        {"512.0", 512},
        {"1.5e", 3ull << 59},         /* 'e' is the exabyte suffix, not an exponent */
        {"0x1000", 4096},
        {"0X10", 16},
        {"0x10k", 16384},             /* accepted by qemu-img (with a warning) */
        {" 1k", 1024},
        {"+5k", 5120},
        {"1b", 1},
        {"1B", 1},
        {"00012", 12},
        {"012k", 12288},              /* decimal, not octal */
        {"8191P", 8191ull << 50},
        {"9223372036854775807", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        int ret = qcow2_parse_size(cases[i].s, &v);
        CHECK_MSG(ret == 0 && v == cases[i].v, "'%s': ret %d value %llu, want %llu",
                  cases[i].s, ret, ull(v), ull(cases[i].v));
    }
}

static void test_parse_size_rejects_garbage_negative_and_overflow(void)
{
    static const char *const bad[] = {
        "", " ", "abc", "k", "-1", " -1", "-0", "1.5", "1.5b", ".5k", "1 k", "1k ", "1kB",
        "1k0", "1M1", "0x", "0xg", "0x1.8k", "1__", "17.5", "1024.5", "1e3", "1.5e3k", "1.5E+3",
        "8E", "16E", "9223372036854775808", "18446744073709551616",
        "100000000000000000000000", "0x8000000000000000", "1,5k", "1Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 777;
        int ret = qcow2_parse_size(bad[i], &v);
        CHECK_MSG(ret == -EINVAL && v == 777, "'%s' accepted (ret %d, value %llu)", bad[i], ret,
                  ull(v));
    }
    uint64_t v;
    CHECK(qcow2_parse_size(NULL, &v) == -EINVAL);
}

/* ------------------------------------------------------------------------------------------ */
/* Options. */

/* The defaults stay in the library: INIT sets struct_size and nothing else. */
static void test_opts_init_sets_only_the_struct_size(void)
{
    struct qcow2_create_opts o;
    memset(&o, 0xff, sizeof(o));
    o = QCOW2_CREATE_OPTS_INIT;
    CHECK(o.struct_size == sizeof(o));
    CHECK(o.format == QCOW2_FORMAT_PROBE && o.version == 0 && o.cluster_size == 0);
    CHECK(o.refcount_bits == 0 && o.compression_type == QCOW2_COMPRESSION_ZLIB);
    CHECK(o.preallocation == QCOW2_PREALLOC_OFF);
    CHECK(o.size == 0 && !o.extended_l2 && !o.lazy_refcounts && !o.data_file_raw);
    CHECK(!o.backing_file && !o.backing_fmt && !o.data_file);
}

static void test_opts_set_accepts_every_qemu_img_option(void)
{
    struct qcow2_create_opts o;
    o = QCOW2_CREATE_OPTS_INIT;
    char err[256] = "";
#define SET(k, v) CHECK_MSG(qcow2_create_opts_set(&o, k, v, err, sizeof(err)) == 0, \
                            "%s=%s: %s", k, v ? v : "(none)", err)
    SET("size", "1.5G");
    CHECK(o.size == 3ull << 29);
    SET("compat", "0.10");
    CHECK(o.version == 2);
    SET("compat", "1.1");
    CHECK(o.version == 3);
    SET("compat", "v2");
    CHECK(o.version == 2);
    SET("compat", "v3");
    CHECK(o.version == 3);
    SET("cluster_size", "4k");
    CHECK(o.cluster_size == 4096);
    SET("cluster_size", "0x10000");
    CHECK(o.cluster_size == 65536);
    SET("cluster_size", "2M");
    CHECK(o.cluster_size == 2u << 20);
    SET("cluster_size", "512");
    CHECK(o.cluster_size == 512);
    SET("extended_l2", "on");
    CHECK(o.extended_l2 == 1);
    SET("extended_l2", "off");
    CHECK(o.extended_l2 == 0);
    SET("extended_l2", "true");
    CHECK(o.extended_l2 == 1);
    SET("extended_l2", "no");
    CHECK(o.extended_l2 == 0);
    SET("extended_l2", "yes");
    CHECK(o.extended_l2 == 1);
    SET("extended_l2", "false");
    CHECK(o.extended_l2 == 0);
    SET("lazy_refcounts", NULL); /* a bare boolean means on */
    CHECK(o.lazy_refcounts == 1);
    SET("refcount_bits", "1");
    CHECK(o.refcount_bits == 1);
    SET("refcount_bits", "64");
    CHECK(o.refcount_bits == 64);
    SET("refcount_bits", "0x10");
    CHECK(o.refcount_bits == 16);
    SET("compression_type", "zstd");
    CHECK(o.compression_type == QCOW2_COMPRESSION_ZSTD);
    SET("compression_type", "zlib");
    CHECK(o.compression_type == QCOW2_COMPRESSION_ZLIB);
    SET("preallocation", "metadata");
    CHECK(o.preallocation == QCOW2_PREALLOC_METADATA);
    SET("preallocation", "falloc");
    CHECK(o.preallocation == QCOW2_PREALLOC_FALLOC);
    SET("preallocation", "full");
    CHECK(o.preallocation == QCOW2_PREALLOC_FULL);
    SET("preallocation", "off");
    CHECK(o.preallocation == QCOW2_PREALLOC_OFF);
    const char *bf = "base.qcow2", *fmt = "qcow2", *df = "data.raw";
    SET("backing_file", bf);
    CHECK(o.backing_file == bf); /* not copied */
    SET("backing_fmt", fmt);
    CHECK(o.backing_fmt == fmt);
    SET("data_file", df);
    CHECK(o.data_file == df);
    SET("data_file_raw", "on");
    CHECK(o.data_file_raw == 1);
    SET("encryption", "off"); /* qemu-img accepts "no encryption" */
    SET("nocow", "on");       /* host file-system hints qemu-img accepts: no effect */
    SET("extent_size_hint", "1M");
#undef SET
}

static void test_opts_set_refuses_bad_values_naming_option_and_value(void)
{
    static const struct {
        const char *key, *value, *msg;
    } cases[] = {
        {"foo", "bar", "Invalid parameter 'foo'"},
        {"", "5", "Invalid parameter ''"},
        {"Cluster_size", "4k", "Invalid parameter 'Cluster_size'"},
        {"size", "abc", "'size'"},
        {"size", "-1", "'-1'"},
        {"size", "16E", "'16E'"},
        {"size", NULL, "'size' expects a value"},
        {"compat", "1.2", "'1.2'"},
        {"compat", "V3", "'compat'"},
        {"cluster_size", "1000", "power of two between 512 and 2048k (cluster_size=1000)"},
        {"cluster_size", "256", "cluster_size=256"},
        {"cluster_size", "4M", "cluster_size=4M"},
        {"cluster_size", "", "'cluster_size'"},
        {"cluster_size", NULL, "'cluster_size' expects a value"},
        {"refcount_bits", "3", "Refcount width must be a power of two"},
        {"refcount_bits", "128", "refcount_bits=128"},
        {"refcount_bits", "0", "refcount_bits=0"},
        {"refcount_bits", "16k", "expects a number, got '16k'"},
        {"refcount_bits", "", "expects a number"},
        {"refcount_bits", "-16", "'-16'"},
        {"lazy_refcounts", "maybe", "'lazy_refcounts' expects 'on' or 'off', got 'maybe'"},
        {"extended_l2", "ON", "'ON'"},
        {"data_file_raw", "1", "'data_file_raw'"},
        {"compression_type", "lz4", "'lz4'"},
        {"compression_type", "ZSTD", "'ZSTD'"},
        {"preallocation", "bogus", "'bogus'"},
        {"preallocation", "OFF", "'OFF'"},
        {"encryption", "on", "encryption is not supported"},
        {"encryption", NULL, "encryption is not supported"},
        {"encrypt.format", "luks", "encryption is not supported (encrypt.format=luks)"},
        {"encrypt.format", "aes", "encryption is not supported"},
        {"encrypt.key-secret", "sec0", "encryption is not supported"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qcow2_create_opts o, before;
        o = QCOW2_CREATE_OPTS_INIT;
        before = o;
        char err[256] = "";
        int ret = qcow2_create_opts_set(&o, cases[i].key, cases[i].value, err, sizeof(err));
        CHECK_MSG(ret < 0, "%s=%s accepted", cases[i].key, cases[i].value ? cases[i].value : "");
        CHECK_MSG(strstr(err, cases[i].msg) != NULL, "%s=%s: message '%s' lacks '%s'",
                  cases[i].key, cases[i].value ? cases[i].value : "", err, cases[i].msg);
        CHECK_MSG(strchr(err, '\n') == NULL, "message is not one line: '%s'", err);
        CHECK_MSG(memcmp(&o, &before, sizeof(o)) == 0, "%s=%s changed the options",
                  cases[i].key, cases[i].value ? cases[i].value : "");
    }
}

static void test_opts_parse_splits_unescapes_and_last_wins(void)
{
    struct qcow2_create_opts o;
    o = QCOW2_CREATE_OPTS_INIT;
    char err[256] = "";
    char list[] = "cluster_size=4k,lazy_refcounts,backing_file=a,,b,,,,c,backing_fmt=raw,"
                  "cluster_size=8k,data_file=x=y,size=1M";
    int ret = qcow2_create_opts_parse(&o, list, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    CHECK(o.cluster_size == 8192);
    CHECK(o.lazy_refcounts == 1);
    CHECK_MSG(o.backing_file && strcmp(o.backing_file, "a,b,,c") == 0, "backing_file '%s'",
              o.backing_file ? o.backing_file : "(null)");
    CHECK(o.backing_fmt && strcmp(o.backing_fmt, "raw") == 0);
    CHECK(o.data_file && strcmp(o.data_file, "x=y") == 0); /* split at the first '=' only */
    CHECK(o.size == 1 << 20);
    /* The strings point into the list. */
    CHECK(o.backing_file >= list && o.backing_file < list + sizeof(list));

    char escaped_at_end[] = "backing_file=x,,";
    o = QCOW2_CREATE_OPTS_INIT;
    CHECK(qcow2_create_opts_parse(&o, escaped_at_end, err, sizeof(err)) == 0);
    CHECK(o.backing_file && strcmp(o.backing_file, "x,") == 0);

    char one[] = "compat=0.10";
    o = QCOW2_CREATE_OPTS_INIT;
    CHECK(qcow2_create_opts_parse(&o, one, err, sizeof(err)) == 0 && o.version == 2);
}

static void test_opts_parse_refuses_empty_items_and_stops_at_the_first_error(void)
{
    static const struct {
        const char *list, *msg;
    } cases[] = {
        {",cluster_size=4k", "Invalid option list: ,cluster_size=4k"},
        {"cluster_size=4k,", "Invalid option list: cluster_size=4k,"},
        {"", "Invalid option list"},
        {",", "Invalid option list"},
        {"cluster_size=4k,,lazy_refcounts=on", "'4k,lazy_refcounts=on'"}, /* escaped comma */
        {"size=1M,foo=bar,compat=0.10", "Invalid parameter 'foo'"},
        {"=5", "Invalid parameter ''"},
        {"encryption=on", "encryption is not supported"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qcow2_create_opts o;
        o = QCOW2_CREATE_OPTS_INIT;
        char err[256] = "";
        char *copy = strdup(cases[i].list);
        int ret = qcow2_create_opts_parse(&o, copy, err, sizeof(err));
        CHECK_MSG(ret < 0, "'%s' accepted", cases[i].list);
        CHECK_MSG(strstr(err, cases[i].msg) != NULL, "'%s': message '%s' lacks '%s'",
                  cases[i].list, err, cases[i].msg);
        if (strncmp(cases[i].list, "size=1M,foo", 11) == 0) /* compat=0.10 after it: not set */
            CHECK(o.size == 1 << 20 && o.version == 0);
        free(copy);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Validation. */

static void test_create_refuses_invalid_combinations_like_qemu_img(void)
{
    const char *dir = case_dir("invalid");
    static const struct {
        const char *opts, *msg;
        uint64_t size;
    } cases[] = {
        {"compat=0.10,refcount_bits=8", "Different refcount widths than 16 bits", 1 << 20},
        {"compat=0.10,refcount_bits=1", "compatibility level 1.1", 1 << 20},
        {"compat=0.10,extended_l2=on", "Extended L2 entries are only supported with "
                                       "compatibility level 1.1", 1 << 20},
        {"compat=0.10,lazy_refcounts=on", "Lazy refcounts only supported", 1 << 20},
        {"compat=0.10,compression_type=zstd", "Non-zlib compression type", 1 << 20},
        {"compat=0.10,data_file=d.raw", "External data files are only supported", 1 << 20},
        {"extended_l2=on,cluster_size=8k", "at least 16384 bytes (cluster_size=8192)", 1 << 20},
        {"extended_l2=on,cluster_size=512", "at least 16384 bytes", 1 << 20},
        {"backing_fmt=raw", "Backing format cannot be used without backing file", 1 << 20},
        {"data_file_raw=on", "data_file_raw requires data_file", 1 << 20},
        {"backing_file=base.qcow2,backing_fmt=qcow2,data_file=d.raw,data_file_raw=on",
         "Backing file and data_file_raw cannot be used at the same time", 1 << 20},
        {"backing_file=base.qcow2,backing_fmt=qcow2,preallocation=metadata",
         "Backing file and preallocation can only be used at the same time if extended_l2 is "
         "on", 1 << 20},
        {"backing_file=base.qcow2,backing_fmt=qcow2,preallocation=full",
         "extended_l2 is on", 1 << 20},
        {"backing_file=,backing_fmt=qcow2", "Expected backing file name, got empty string",
         1 << 20},
        {"backing_file=bad.qcow2,backing_fmt=qcow2", "same filename as the backing file",
         1 << 20},
        {"backing_file=base.qcow2,backing_fmt=vmdk", "unsupported backing format 'vmdk'",
         1 << 20},
        {"data_file=", "Expected data file name", 1 << 20},
        {"cluster_size=512", "The image size is too large for file format 'qcow2' (try using a "
                             "larger cluster size)", (128ull << 30) + 512},
        {"cluster_size=2M", "too large", (2ull << 60) + 512},
        {"cluster_size=2M,extended_l2=on", "too large", 2ull << 60},
        {"", "too large", 4ull << 60},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qcow2_create_opts o;
        o = QCOW2_CREATE_OPTS_INIT;
        char err[QCOW2_ERROR_MAX] = "";
        char *copy = strdup(cases[i].opts);
        int ret = copy[0] ? qcow2_create_opts_parse(&o, copy, err, sizeof(err)) : 0;
        CHECK_MSG(ret == 0, "parse '%s': %s", cases[i].opts, err);
        char path[8192], bad_same[8192];
        snprintf(path, sizeof(path), "%s/bad.qcow2", dir);
        snprintf(bad_same, sizeof(bad_same), "%s/bad.qcow2", dir);
        if (strstr(cases[i].opts, "backing_file=bad.qcow2"))
            o.backing_file = bad_same; /* the very same name as the image */
        o.size = cases[i].size;
        ret = qcow2_create(path, &o, err, sizeof(err));
        CHECK_MSG(ret < 0, "'%s' accepted", cases[i].opts);
        CHECK_MSG(strstr(err, cases[i].msg) != NULL, "'%s': message '%s' lacks '%s'",
                  cases[i].opts, err, cases[i].msg);
        CHECK_MSG(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':',
                  "message '%s' does not start with the file name", err);
        CHECK_MSG(strchr(err, '\n') == NULL, "message is not one line: '%s'", err);
        CHECK_MSG(!exists(path), "'%s': the image was created although refused", cases[i].opts);
        free(copy);
        if (g_have_qemu && !strstr(cases[i].opts, "backing_file=") &&
            !strstr(cases[i].opts, "data_file="))
            CHECK_MSG(create_qemu(dir, "twin.qcow2", cases[i].opts, cases[i].size) != 0,
                      "qemu-img accepts '%s' %llu", cases[i].opts, ull(cases[i].size));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Images, compared with qemu-img's. */

struct twin_case {
    const char *opts;
    uint64_t size;
};

/* Create ours and qemu-img's twin in separate directories under the same name, compare the
 * files byte for byte, check ours with qemu-img and read it with the library. */
static void compare_with_qemu(const char *label, const struct twin_case *c, bool check_read)
{
    const char *ours = case_dir("ours"), *theirs = case_dir("theirs");
    char err[QCOW2_ERROR_MAX] = "";
    int ret = create_ours(ours, "img.qcow2", c->opts, c->size, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s: '%s' %llu: %s", label, c->opts, ull(c->size), err);
    ret = create_qemu(theirs, "img.qcow2", c->opts, c->size);
    CHECK_MSG(ret == 0, "%s: qemu-img refuses '%s' %llu", label, c->opts, ull(c->size));
    char a[8192], b[8192], why[256] = "";
    snprintf(a, sizeof(a), "%s/img.qcow2", ours);
    snprintf(b, sizeof(b), "%s/img.qcow2", theirs);
    CHECK_MSG(same_file(a, b, why, sizeof(why)), "%s: '%s' %llu differs from qemu-img's: %s",
              label, c->opts, ull(c->size), why);
    CHECK_MSG(qemu_check(ours, "img.qcow2") == 0, "%s: qemu-img check fails on '%s' %llu",
              label, c->opts, ull(c->size));
    if (check_read)
        check_reads(a, ROUND_UP(c->size, 512), 0);
}

static void test_create_is_byte_identical_to_qemu_img(void)
{
    static const struct twin_case cases[] = {
        {"", 1ull << 30},
        {"", 0},
        {"", 1000}, /* rounded up to 1024, as qemu-img does */
        {"", 1},
        {"", 64ull << 40},
        {"compat=0.10", 1ull << 30},
        {"compat=v2,cluster_size=512", 10 << 20},
        {"cluster_size=512", 100 << 20},
        {"cluster_size=4k", 1 << 20},   /* no feature name table at 4 KiB clusters */
        {"cluster_size=8k", 1 << 20},   /* ... but above */
        {"cluster_size=2M", 1ull << 40},
        {"extended_l2=on", 10ull << 30},
        {"extended_l2=on,cluster_size=16k", 1ull << 30},
        {"extended_l2=on,cluster_size=2M", 1ull << 50},
        {"compression_type=zstd", 1ull << 30},
        {"lazy_refcounts=on", 1ull << 30},
        {"compression_type=zstd,lazy_refcounts=on,extended_l2=on,refcount_bits=64", 1 << 30},
        {"refcount_bits=1", 1ull << 30},
        {"refcount_bits=2", 1ull << 30},
        {"refcount_bits=4", 1ull << 30},
        {"refcount_bits=8", 1ull << 30},
        {"refcount_bits=32", 1ull << 30},
        {"refcount_bits=64", 1ull << 30},
        {"cluster_size=2M", 2ull << 60}, /* the largest L1 table: 32 MiB */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        compare_with_qemu("plain", &cases[i], cases[i].size <= (1ull << 40));
}

static void test_create_info_reports_the_options(void)
{
    const char *dir = case_dir("info");
    char err[QCOW2_ERROR_MAX] = "";
    int ret = create_ours(dir, "i.qcow2",
                          "compression_type=zstd,lazy_refcounts=on,extended_l2=on,"
                          "refcount_bits=8,cluster_size=32k",
                          5 << 20, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    char *json = capture("cd '%s' && qemu-img info --output=json i.qcow2", dir);
    CHECK_MSG(json_has(json, "virtual-size", "5242880"), "%s", json);
    CHECK(json_has(json, "cluster-size", "32768"));
    CHECK(json_has(json, "format", "\"qcow2\""));
    CHECK(json_has(json, "compat", "\"1.1\""));
    CHECK(json_has(json, "compression-type", "\"zstd\""));
    CHECK(json_has(json, "lazy-refcounts", "true"));
    CHECK(json_has(json, "refcount-bits", "8"));
    CHECK(json_has(json, "extended-l2", "true"));
    CHECK(json_has(json, "corrupt", "false"));
    CHECK(json_has(json, "dirty-flag", "false"));
    free(json);

    ret = create_ours(dir, "v2.qcow2", "compat=0.10", 1 << 20, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    json = capture("cd '%s' && qemu-img info --output=json v2.qcow2", dir);
    CHECK_MSG(json_has(json, "compat", "\"0.10\""), "%s", json);
    CHECK(json_has(json, "refcount-bits", "16"));
    free(json);

    /* And our own view of it. */
    char path[8192];
    snprintf(path, sizeof(path), "%s/i.qcow2", dir);
    struct qcow2_image *img;
    ret = qcow2_open(path, NULL, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    if (ret == 0) {
        struct qcow2_info info = QCOW2_INFO_INIT;
        CHECK(qcow2_get_info(img, &info) == 0);
        CHECK(info.version == 3 && info.cluster_size == 32768 && info.extended_l2);
        CHECK(info.refcount_bits == 8 && info.lazy_refcounts);
        CHECK(info.compression_type == QCOW2_COMPRESSION_ZSTD);
        CHECK(info.incompatible_features ==
              (QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2));
        CHECK(info.compatible_features == QCOW2_COMPAT_LAZY_REFCOUNTS);
        CHECK(info.autoclear_features == 0 && !info.dirty && !info.corrupt);
        qcow2_close(img);
    }
}

/* Small clusters and wide refcounts need refcount blocks beyond the first, and eventually a
 * bigger refcount table: qemu-img places them in a particular order, and so must we. (Bigger
 * cases, such as 64G with 512-byte clusters and 64-bit refcounts, match too, but qemu-img
 * needs tens of seconds for them.) */
static void test_create_layout_with_many_refcount_blocks_matches_qemu_img(void)
{
    static const struct twin_case cases[] = {
        {"cluster_size=512", 512ull << 20},                  /* 2 refcount blocks */
        {"cluster_size=512", 1ull << 30},                    /* 3, out of order */
        {"cluster_size=512", 4ull << 30},                    /* 9 */
        {"cluster_size=512,refcount_bits=64", 1ull << 30},
        {"cluster_size=512,refcount_bits=64", 9ull << 30},   /* refcount table moves */
        {"cluster_size=512,refcount_bits=32", 20ull << 30},
        {"cluster_size=512,refcount_bits=64", 16ull << 30},  /* 4 table clusters with the
                                                              * 50% slack, 3 without */
        {"cluster_size=1k,refcount_bits=64", 128ull << 30},
        {"cluster_size=2k,refcount_bits=16", 1ull << 40},
        {"cluster_size=512,refcount_bits=1", 128ull << 30},  /* the largest L1 at 512 bytes */
        {"cluster_size=512,refcount_bits=64,compat=1.1,extended_l2=off", 3ull << 30},
        {"compat=0.10,cluster_size=512", 20ull << 30},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        compare_with_qemu("refcount blocks", &cases[i], false);
}

static void test_create_with_backing_file_takes_its_size_and_names_it(void)
{
    const char *ours = case_dir("bours"), *theirs = case_dir("btheirs");
    const char *dirs[] = {ours, theirs};
    for (int i = 0; i < 2; i++) {
        CHECK(run("cd '%s' && qemu-img create -q -f qcow2 base.qcow2 10M && "
                  "qemu-io -c 'write -P 0x5a 0 1M' base.qcow2 >/dev/null && "
                  "qemu-img create -q -f raw base.raw 1000 && "
                  "printf 'xyz' | dd of=base.raw conv=notrunc 2>/dev/null && "
                  "mkdir -p sub && cp base.qcow2 sub/", dirs[i]) == 0);
    }
    static const struct {
        const char *name, *opts;
        uint64_t size, want_size;
    } cases[] = {
        {"o1.qcow2", "backing_file=base.qcow2,backing_fmt=qcow2", 0, 10 << 20},
        {"o2.qcow2", "backing_file=base.qcow2,backing_fmt=qcow2", 20 << 20, 20 << 20},
        {"o3.qcow2", "backing_file=base.qcow2,backing_fmt=qcow2", 1 << 20, 1 << 20},
        {"o4.qcow2", "backing_file=base.raw,backing_fmt=raw", 0, 1024}, /* rounded up */
        {"o5.qcow2", "backing_file=base.qcow2,backing_fmt=qcow2,compat=0.10", 0, 10 << 20},
        {"o6.qcow2", "backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=512", 0, 10 << 20},
        {"o7.qcow2", "backing_file=base.qcow2,backing_fmt=raw", 0, 0}, /* size of the file */
        {"sub/o8.qcow2", "backing_file=base.qcow2,backing_fmt=qcow2", 0, 10 << 20},
        {"o9.qcow2", "backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on,"
                     "preallocation=metadata", 0, 10 << 20},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[QCOW2_ERROR_MAX] = "";
        int ret = create_ours(ours, cases[i].name, cases[i].opts, cases[i].size, err,
                              sizeof(err));
        CHECK_MSG(ret == 0, "%s: %s", cases[i].opts, err);
        char path[8192], twin[8192], why[256] = "";
        snprintf(path, sizeof(path), "%s/%s", ours, cases[i].name);
        snprintf(twin, sizeof(twin), "%s/%s", theirs, cases[i].name);
        /* (qemu-img takes the size from the backing file when none is given) */
        if (cases[i].size == 0)
            run("cd '%s' && rm -f '%s' && qemu-img create -q -f qcow2 -o '%s' '%s' >/dev/null "
                "2>&1", theirs, cases[i].name, cases[i].opts, cases[i].name);
        else
            run("cd '%s' && rm -f '%s' && qemu-img create -q -f qcow2 -o '%s' '%s' %llu "
                ">/dev/null 2>&1", theirs, cases[i].name, cases[i].opts, cases[i].name,
                ull(cases[i].size));
        bool prealloc = strstr(cases[i].opts, "preallocation") != NULL;
        if (!prealloc)
            CHECK_MSG(same_file(path, twin, why, sizeof(why)), "%s %s: differs from qemu-img's: "
                      "%s", cases[i].name, cases[i].opts, why);
        char *m1 = guest_map(ours, cases[i].name), *m2 = guest_map(theirs, cases[i].name);
        CHECK_MSG(strcmp(m1, m2) == 0, "%s %s: map differs:\n%s\nqemu-img's:\n%s",
                  cases[i].name, cases[i].opts, m1, m2);
        free(m1);
        free(m2);
        CHECK_MSG(qemu_check(ours, cases[i].name) == 0, "%s: qemu-img check fails",
                  cases[i].name);
        struct qcow2_image *img;
        ret = qcow2_open(path, NULL, &img, err, sizeof(err));
        CHECK_MSG(ret == 0, "%s", err);
        if (ret == 0) {
            struct qcow2_info info = QCOW2_INFO_INIT;
            qcow2_get_info(img, &info);
            if (cases[i].want_size)
                CHECK_MSG(info.virtual_size == cases[i].want_size, "%s: size %llu want %llu",
                          cases[i].name, ull(info.virtual_size), ull(cases[i].want_size));
            CHECK(info.backing_file && strstr(cases[i].opts, info.backing_file));
            CHECK(info.backing_fmt && strstr(cases[i].opts, info.backing_fmt));
            if (strstr(cases[i].opts, "base.qcow2,backing_fmt=qcow2")) {
                uint8_t buf[512];
                CHECK(qcow2_pread(img, buf, sizeof(buf), 0) == 0);
                CHECK_MSG(buf[0] == 0x5a && buf[511] == 0x5a, "%s: backing data not visible",
                          cases[i].name);
            }
            qcow2_close(img);
        }
    }
}

static void test_create_backing_file_errors(void)
{
    const char *dir = case_dir("berr");
    CHECK(run("cd '%s' && qemu-img create -q -f qcow2 base.qcow2 1M && "
              "qemu-img create -q -f raw base.raw 1M && "
              "qemu-img create -q -f qcow2 gone.qcow2 1M && "
              "qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 mid.qcow2 && rm gone.qcow2",
              dir) == 0);
    static const struct {
        const char *opts;
        uint64_t size;
        const char *msg;
    } cases[] = {
        /* qemu-img 7.2 refuses to guess the backing format; we say what it looks like. */
        {"backing_file=base.qcow2", 1 << 20, "without backing format"},
        {"backing_file=base.qcow2", 0, "'base.qcow2' looks like qcow2"},
        {"backing_file=base.raw", 0, "looks like raw"},
        {"backing_file=nonexistent.qcow2", 1 << 20, "without backing format"},
        {"backing_file=nonexistent.qcow2,backing_fmt=qcow2", 0, "nonexistent.qcow2"},
        {"backing_file=base.raw,backing_fmt=qcow2", 0, "base.raw"},
        {"backing_file=mid.qcow2,backing_fmt=qcow2", 0, "gone.qcow2"}, /* whole chain */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[QCOW2_ERROR_MAX] = "";
        int ret = create_ours(dir, "new.qcow2", cases[i].opts, cases[i].size, err, sizeof(err));
        CHECK_MSG(ret < 0, "'%s' %llu accepted", cases[i].opts, ull(cases[i].size));
        CHECK_MSG(strstr(err, cases[i].msg) != NULL, "'%s': message '%s' lacks '%s'",
                  cases[i].opts, err, cases[i].msg);
        CHECK_MSG(strchr(err, '\n') == NULL, "not one line: '%s'", err);
        char path[8192];
        snprintf(path, sizeof(path), "%s/new.qcow2", dir);
        CHECK_MSG(!exists(path), "'%s': image created anyway", cases[i].opts);
    }
    /* With a size and a format the backing file is not opened (qemu-img -u): it may be
     * missing, and is recorded as given. */
    char err[QCOW2_ERROR_MAX] = "";
    int ret = create_ours(dir, "unsafe.qcow2", "backing_file=later.qcow2,backing_fmt=qcow2",
                          1 << 20, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    char *json = capture("cd '%s' && qemu-img info --output=json -U --backing-chain "
                         "unsafe.qcow2 2>/dev/null; qemu-img info unsafe.qcow2 2>&1", dir);
    CHECK_MSG(strstr(json, "later.qcow2") != NULL, "%s", json);
    free(json);
}

static void test_create_with_data_file_matches_qemu_img(void)
{
    static const struct twin_case cases[] = {
        {"data_file=img.data", 1 << 20},
        {"data_file=img.data,data_file_raw=on", 1 << 20},   /* metadata preallocated */
        {"data_file=img.data,data_file_raw=on,extended_l2=on", 10 << 20},
        {"data_file=img.data,compression_type=zstd,extended_l2=on,lazy_refcounts=on", 1 << 20},
        {"data_file=img.data,preallocation=falloc", 10 << 20},
        {"data_file=img.data,preallocation=full", 3 << 20},
        {"data_file=img.data,data_file_raw=on,preallocation=full", 3 << 20},
        {"data_file=img.data,cluster_size=512", 1 << 20},
        {"data_file=img.data", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *ours = case_dir("dours"), *theirs = case_dir("dtheirs");
        char err[QCOW2_ERROR_MAX] = "";
        int ret = create_ours(ours, "img.qcow2", cases[i].opts, cases[i].size, err,
                              sizeof(err));
        CHECK_MSG(ret == 0, "'%s': %s", cases[i].opts, err);
        CHECK(create_qemu(theirs, "img.qcow2", cases[i].opts, cases[i].size) == 0);
        char a[8192], b[8192], da[8192], db[8192], why[256] = "";
        snprintf(a, sizeof(a), "%s/img.qcow2", ours);
        snprintf(b, sizeof(b), "%s/img.qcow2", theirs);
        snprintf(da, sizeof(da), "%s/img.data", ours);
        snprintf(db, sizeof(db), "%s/img.data", theirs);
        CHECK_MSG(same_file(a, b, why, sizeof(why)), "'%s': differs from qemu-img's: %s",
                  cases[i].opts, why);
        CHECK_MSG(file_length(da) == file_length(db), "'%s': data file %lld bytes, qemu-img's "
                  "%lld", cases[i].opts, (long long)file_length(da), (long long)file_length(db));
        if (strstr(cases[i].opts, "preallocation=f"))
            CHECK_MSG(file_blocks_bytes(da) >= (int64_t)cases[i].size,
                      "'%s': data file not preallocated (%lld bytes)", cases[i].opts,
                      (long long)file_blocks_bytes(da));
        CHECK_MSG(qemu_check(ours, "img.qcow2") == 0, "'%s': qemu-img check fails",
                  cases[i].opts);
        char *m1 = guest_map(ours, "img.qcow2"), *m2 = guest_map(theirs, "img.qcow2");
        CHECK_MSG(strcmp(m1, m2) == 0, "'%s': map differs:\n%s\nqemu-img's:\n%s", cases[i].opts,
                  m1, m2);
        free(m1);
        free(m2);
        check_reads(a, cases[i].size, 0);
    }
    /* The data file lies next to the image, not in the current directory. */
    const char *sub = case_dir("dsub/deeper");
    char err[QCOW2_ERROR_MAX] = "";
    CHECK(create_ours(sub, "x.qcow2", "data_file=x.data", 1 << 20, err, sizeof(err)) == 0);
    char p[8192];
    snprintf(p, sizeof(p), "%s/x.data", sub);
    CHECK_MSG(file_length(p) == 1 << 20, "%s: %lld", p, (long long)file_length(p));
    /* The data file is not the image. */
    CHECK(create_ours(sub, "y.qcow2", "data_file=y.qcow2", 1 << 20, err, sizeof(err)) < 0);
    CHECK_MSG(strstr(err, "cannot be the image itself"), "%s", err);
}

static void test_create_preallocation_modes(void)
{
    static const struct twin_case cases[] = {
        {"preallocation=metadata", 10 << 20},
        {"preallocation=falloc", 10 << 20},
        {"preallocation=full", 10 << 20},
        {"preallocation=metadata,compat=0.10", 10 << 20},
        {"preallocation=metadata,extended_l2=on", 10 << 20},
        {"preallocation=falloc,extended_l2=on,cluster_size=16k", 3 << 20},
        {"preallocation=metadata,cluster_size=512", 1 << 20},
        {"preallocation=full,cluster_size=4k,refcount_bits=1", 2 << 20},
        {"preallocation=metadata", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *ours = case_dir("pours"), *theirs = case_dir("ptheirs");
        char err[QCOW2_ERROR_MAX] = "";
        int ret = create_ours(ours, "img.qcow2", cases[i].opts, cases[i].size, err,
                              sizeof(err));
        CHECK_MSG(ret == 0, "'%s': %s", cases[i].opts, err);
        CHECK(create_qemu(theirs, "img.qcow2", cases[i].opts, cases[i].size) == 0);
        CHECK_MSG(qemu_check(ours, "img.qcow2") == 0, "'%s': qemu-img check fails",
                  cases[i].opts);
        char *m1 = guest_map(ours, "img.qcow2"), *m2 = guest_map(theirs, "img.qcow2");
        CHECK_MSG(strcmp(m1, m2) == 0, "'%s': map differs:\n%s\nqemu-img's:\n%s", cases[i].opts,
                  m1, m2);
        free(m1);
        free(m2);
        char a[8192];
        snprintf(a, sizeof(a), "%s/img.qcow2", ours);
        if (strstr(cases[i].opts, "=f"))
            CHECK_MSG(file_blocks_bytes(a) >= (int64_t)cases[i].size,
                      "'%s': only %lld bytes allocated", cases[i].opts,
                      (long long)file_blocks_bytes(a));
        check_reads(a, cases[i].size, 0);
    }
}

/* refcount.c encodes refcounts of live images; create.c has its own encoder for new ones. */
static void test_refcount_encoding_agrees_with_refcount_c(void)
{
    const char *dir = case_dir("encoding");
    for (unsigned order = 0; order <= 6; order++) {
        char opts[64], name[32], path[8192], err[QCOW2_ERROR_MAX] = "";
        snprintf(opts, sizeof(opts), "cluster_size=512,refcount_bits=%u", 1u << order);
        snprintf(name, sizeof(name), "r%u.qcow2", order);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        /* 512 B clusters: 4 MiB of guest space needs a 2-cluster L1 (clusters 0-4 used). */
        CHECK_MSG(create_ours(dir, name, opts, 4 << 20, err, sizeof(err)) == 0, "%s", err);
        uint8_t block[512];
        FILE *f = fopen(path, "rb");
        CHECK(f && fseek(f, 2 * 512, SEEK_SET) == 0 && fread(block, 1, 512, f) == 512);
        if (f)
            fclose(f);

        struct qcow2_image fake;
        memset(&fake, 0, sizeof(fake));
        fake.cluster_bits = 9;
        fake.cluster_size = 512;
        fake.refcount_order = order;
        fake.refcount_bits = 1u << order;
        fake.refcount_max = order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
        fake.refcount_block_bits = 9 + 3 - order;
        uint64_t entries = 512ull * 8 >> order;
        uint8_t expect[512] = {0};
        bool ok = true;
        for (uint64_t i = 0; i < entries; i++) {
            uint64_t want = i < 5 ? 1 : 0;
            ok = ok && refcount_block_get(&fake, block, i) == want;
            refcount_block_set(&fake, expect, i, want);
        }
        CHECK_MSG(ok, "order %u: refcount.c decodes our block differently", order);
        CHECK_MSG(memcmp(expect, block, sizeof(block)) == 0,
                  "order %u: refcount.c encodes the block differently", order);
        if (g_have_qemu)
            CHECK_MSG(qemu_check(dir, name) == 0, "order %u: qemu-img check fails", order);
    }
}

static void test_create_raw_images(void)
{
    const char *dir = case_dir("raw");
    static const struct {
        const char *opts;
        uint64_t size, want;
    } cases[] = {
        {"", 1 << 20, 1 << 20},
        {"", 1000, 1024},     /* qemu-img rounds raw sizes up to 512 too */
        {"", 0, 0},
        {"preallocation=falloc", 3 << 20, 3 << 20},
        {"preallocation=full", 3 << 20, 3 << 20},
        {"preallocation=falloc", 0, 0},
        {"preallocation=full", 0, 0},
        {"preallocation=off", 5ull << 40, 5ull << 40}, /* sparse */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qcow2_create_opts o;
        o = QCOW2_CREATE_OPTS_INIT;
        char err[QCOW2_ERROR_MAX] = "", *copy = strdup(cases[i].opts);
        if (copy[0])
            CHECK(qcow2_create_opts_parse(&o, copy, err, sizeof(err)) == 0);
        o.format = QCOW2_FORMAT_RAW;
        o.size = cases[i].size;
        char path[8192];
        snprintf(path, sizeof(path), "%s/r%zu.raw", dir, i);
        int ret = qcow2_create(path, &o, err, sizeof(err));
        CHECK_MSG(ret == 0, "'%s': %s", cases[i].opts, err);
        CHECK_MSG(file_length(path) == (int64_t)cases[i].want, "'%s': %lld bytes",
                  cases[i].opts, (long long)file_length(path));
        if (o.preallocation != QCOW2_PREALLOC_OFF)
            CHECK_MSG(file_blocks_bytes(path) >= (int64_t)cases[i].want,
                      "'%s': %lld bytes allocated", cases[i].opts,
                      (long long)file_blocks_bytes(path));
        else
            CHECK(file_blocks_bytes(path) < 1 << 20);
        if (cases[i].want <= 64 << 20) {
            struct qcow2_open_opts oo;
            oo = QCOW2_OPEN_OPTS_INIT;
            oo.format = QCOW2_FORMAT_RAW;
            struct qcow2_image *img;
            CHECK(qcow2_open(path, &oo, &img, err, sizeof(err)) == 0);
            if (img) {
                CHECK(qcow2_get_size(img) == cases[i].want);
                qcow2_close(img);
            }
        }
        free(copy);
    }
    /* Overwriting an existing file truncates it. */
    char path[8192], err[QCOW2_ERROR_MAX] = "";
    snprintf(path, sizeof(path), "%s/r1.raw", dir);
    CHECK(run("printf 'old data' > '%s'", path) == 0);
    struct qcow2_create_opts o;
    o = QCOW2_CREATE_OPTS_INIT;
    o.format = QCOW2_FORMAT_RAW;
    o.size = 512;
    CHECK(qcow2_create(path, &o, err, sizeof(err)) == 0);
    char *head = capture("head -c 8 '%s' | od -An -c | tr -d ' \\n'", path);
    CHECK_MSG(strcmp(head, "\\0\\0\\0\\0\\0\\0\\0\\0") == 0, "old data kept: '%s'", head);
    free(head);
    /* What raw cannot do. */
    static const struct {
        const char *opts, *msg;
    } bad[] = {
        {"preallocation=metadata", "Unsupported preallocation mode: metadata"},
        {"backing_file=x.raw,backing_fmt=raw", "does not support backing files"},
        {"data_file=x.data", "does not support external data files"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o = QCOW2_CREATE_OPTS_INIT;
        char *copy = strdup(bad[i].opts);
        CHECK(qcow2_create_opts_parse(&o, copy, err, sizeof(err)) == 0);
        o.format = QCOW2_FORMAT_RAW;
        o.size = 1 << 20;
        snprintf(path, sizeof(path), "%s/bad.raw", dir);
        CHECK_MSG(qcow2_create(path, &o, err, sizeof(err)) < 0, "'%s' accepted", bad[i].opts);
        CHECK_MSG(strstr(err, bad[i].msg) != NULL, "'%s': '%s'", bad[i].opts, err);
        CHECK(!exists(path));
        free(copy);
    }
}

static void test_create_overwrites_and_handles_odd_inputs(void)
{
    const char *dir = case_dir("odd");
    char path[8192], err[QCOW2_ERROR_MAX] = "";
    snprintf(path, sizeof(path), "%s/over.qcow2", dir);
    /* A bigger file in the way is truncated: the result is exactly a new image. */
    CHECK(run("head -c 3000000 /dev/urandom > '%s'", path) == 0);
    CHECK(create_ours(dir, "over.qcow2", "", 1 << 20, err, sizeof(err)) == 0);
    CHECK_MSG(file_length(path) == 3 * 65536 + 8, "%lld", (long long)file_length(path));
    if (g_have_qemu)
        CHECK(qemu_check(dir, "over.qcow2") == 0);
    check_reads(path, 1 << 20, 0);

    /* Zero fields (QCOW2_CREATE_OPTS_INIT) mean qemu-img's defaults. */
    struct qcow2_create_opts z = QCOW2_CREATE_OPTS_INIT;
    z.size = 1 << 20;
    snprintf(path, sizeof(path), "%s/zeroed.qcow2", dir);
    CHECK_MSG(qcow2_create(path, &z, err, sizeof(err)) == 0, "%s", err);
    struct qcow2_image *img;
    if (qcow2_open(path, NULL, &img, err, sizeof(err)) == 0) {
        struct qcow2_info info = QCOW2_INFO_INIT;
        qcow2_get_info(img, &info);
        CHECK(info.format == QCOW2_FORMAT_QCOW2 && info.version == 3);
        CHECK(info.cluster_size == 65536 && info.refcount_bits == 16);
        qcow2_close(img);
    } else {
        CHECK_MSG(false, "%s", err);
    }

    /* Errors. */
    struct qcow2_create_opts o;
    o = QCOW2_CREATE_OPTS_INIT;
    o.size = 1 << 20;
    CHECK(qcow2_create(NULL, &o, err, sizeof(err)) == -EINVAL);
    CHECK(qcow2_create("", &o, err, sizeof(err)) == -EINVAL);
    CHECK(qcow2_create(path, NULL, err, sizeof(err)) == -EINVAL);
    CHECK(qcow2_create(path, &o, NULL, 0) == 0); /* no error buffer is fine */
    int ret = qcow2_create(dir, &o, err, sizeof(err)); /* a directory */
    CHECK_MSG(ret < 0 && strstr(err, dir), "%d '%s'", ret, err);
    snprintf(path, sizeof(path), "%s/no/such/dir/x.qcow2", dir);
    ret = qcow2_create(path, &o, err, sizeof(err));
    CHECK_MSG(ret == -ENOENT && strstr(err, path), "%d '%s'", ret, err);

    /* A backing file name that does not fit the header cluster. */
    char longname[1024];
    memset(longname, 'b', 1000);
    strcpy(longname + 1000, ".qcow2");
    o = QCOW2_CREATE_OPTS_INIT;
    o.cluster_size = 512;
    o.size = 1 << 20;
    o.backing_file = longname;
    o.backing_fmt = "qcow2";
    snprintf(path, sizeof(path), "%s/long.qcow2", dir);
    ret = qcow2_create(path, &o, err, sizeof(err));
    CHECK_MSG(ret < 0 && strstr(err, "does not fit"), "%d '%s'", ret, err);
    o.cluster_size = 65536; /* fits in 64 KiB */
    ret = qcow2_create(path, &o, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    longname[0] = 'c';
    memset(longname, 'c', 1023);
    longname[1023] = '\0';
    char toolong[1100];
    snprintf(toolong, sizeof(toolong), "%s.qcow2", longname);
    o.backing_file = toolong;
    ret = qcow2_create(path, &o, err, sizeof(err));
    CHECK_MSG(ret < 0 && strstr(err, "too long"), "%d '%s'", ret, err);
}

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_create.XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    g_have_qemu = run("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null "
                      "2>&1") == 0;
    if (!g_have_qemu)
        printf("# qemu-img/qemu-io not found: the comparisons with QEMU are skipped\n");

    RUN("parse_size accepts what qemu-img accepts", test_parse_size_accepts_what_qemu_img_accepts());
    RUN("parse_size rejects garbage, negative and overflow",
        test_parse_size_rejects_garbage_negative_and_overflow());
    RUN("opts INIT sets only the struct size", test_opts_init_sets_only_the_struct_size());
    RUN("opts_set accepts every qemu-img option", test_opts_set_accepts_every_qemu_img_option());
    RUN("opts_set refuses bad values, naming option and value",
        test_opts_set_refuses_bad_values_naming_option_and_value());
    RUN("opts_parse splits, unescapes ',,' and the last value wins",
        test_opts_parse_splits_unescapes_and_last_wins());
    RUN("opts_parse refuses empty items and stops at the first error",
        test_opts_parse_refuses_empty_items_and_stops_at_the_first_error());
    RUN("create refuses invalid combinations like qemu-img",
        test_create_refuses_invalid_combinations_like_qemu_img());
    RUN("refcount encoding agrees with refcount.c",
        test_refcount_encoding_agrees_with_refcount_c());
    RUN("raw images", test_create_raw_images());
    RUN("overwriting and odd inputs", test_create_overwrites_and_handles_odd_inputs());
    QEMU_TEST("create is byte-identical to qemu-img", test_create_is_byte_identical_to_qemu_img());
    QEMU_TEST("qemu-img info reports the options", test_create_info_reports_the_options());
    QEMU_TEST("layout with many refcount blocks matches qemu-img",
              test_create_layout_with_many_refcount_blocks_matches_qemu_img());
    QEMU_TEST("backing file: size, name, format",
              test_create_with_backing_file_takes_its_size_and_names_it());
    QEMU_TEST("backing file errors", test_create_backing_file_errors());
    QEMU_TEST("external data files match qemu-img", test_create_with_data_file_matches_qemu_img());
    QEMU_TEST("preallocation modes", test_create_preallocation_modes());

    if (g_failed == 0 && !getenv("KEEP_TMP"))
        run("rm -rf '%s'", g_dir);
    else
        printf("# scratch directory kept: %s\n", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
