/* test_abi.c - abi.c: the public structs of any version (qcow2.h, "Extensible structs").
 * A program built against an older header (a smaller struct_size) must never have its memory
 * read or written past its struct; one built against a newer header (a larger struct) works as
 * long as the options this library does not know are at their zero defaults, and gets the
 * fields this library knows; a struct_size no version ever had is refused with a message that
 * names the INIT macro. Older callers cannot exist yet (this is the first version), so they are
 * played through abi.c's internals with a smaller struct_size; newer callers are the public
 * structs followed by extra fields. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testharness.h"

#define SENTINEL 0x5a
#define MIB (1u << 20)

static char g_dir[4096];
static char g_image[4200]; /* a 1 MiB qcow2 image with data in its first cluster */

/* A program built against a newer header: our struct, then fields we do not know. */
struct newer_open_opts {
    struct qcow2_open_opts o;
    uint64_t newer[4];
};
struct newer_create_opts {
    struct qcow2_create_opts o;
    uint64_t newer[4];
};
struct newer_info {
    struct qcow2_info i;
    uint64_t newer[4];
};
struct newer_extent {
    struct qcow2_extent e;
    uint64_t newer[4];
};
struct newer_check_result {
    struct qcow2_check_result r;
    uint64_t newer[4];
};

static bool all_bytes(const void *p, size_t n, unsigned char c)
{
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i] != c)
            return false;
    return true;
}

static struct qcow2_image *open_image(int writable)
{
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = !writable;
    struct qcow2_image *img = NULL;
    char err[QCOW2_ERROR_MAX];
    int ret = qcow2_open(g_image, &o, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "open: %s", err);
    return img;
}

static void test_init_sets_struct_size_and_zeroes_the_rest(void)
{
    struct qcow2_open_opts o;
    memset(&o, SENTINEL, sizeof(o));
    o = QCOW2_OPEN_OPTS_INIT;
    CHECK(o.struct_size == sizeof(o));
    CHECK(o.format == QCOW2_FORMAT_PROBE && !o.read_only && !o.no_backing && !o.l2_cache_size);
    CHECK(!o.confine_paths && !o.max_chain_depth && o.lazy_refcounts == QCOW2_AUTO && !o.repair);
    struct qcow2_info i = QCOW2_INFO_INIT;
    struct qcow2_extent e = QCOW2_EXTENT_INIT;
    struct qcow2_check_result r = QCOW2_CHECK_RESULT_INIT;
    CHECK(i.struct_size == sizeof(i) && e.struct_size == sizeof(e) && r.struct_size == sizeof(r));
}

/* An uninitialised struct: 0, garbage, a size below the first version or not a multiple of
 * the word size. Refused before anything is read or written; the message names the macro. */
static void test_struct_size_no_version_had_is_refused_naming_the_macro(void)
{
    /* (the first version ended at `repair`: 8 bytes less is below every version) */
    static const size_t bad[] = {0, 8, 7, offsetof(struct qcow2_open_opts, repair) + 4 - 8,
                                 sizeof(struct qcow2_open_opts) + 1, 4104, (size_t)-1};
    char err[QCOW2_ERROR_MAX];
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
        o.struct_size = bad[k];
        struct qcow2_image *img = (struct qcow2_image *)&o; /* must be overwritten with NULL */
        int ret = qcow2_open(g_image, &o, &img, err, sizeof(err));
        CHECK_MSG(ret == -EINVAL && img == NULL, "struct_size %zu: %d", bad[k], ret);
        CHECK_MSG(strstr(err, "QCOW2_OPEN_OPTS_INIT") && strstr(err, "struct qcow2_open_opts"),
                  "struct_size %zu: '%s'", bad[k], err);
    }

    struct qcow2_create_opts c;
    memset(&c, 0, sizeof(c)); /* all zeros: the INIT macro was forgotten */
    c.size = MIB;
    char path[4300];
    snprintf(path, sizeof(path), "%s/never.qcow2", g_dir);
    CHECK(qcow2_create(path, &c, err, sizeof(err)) == -EINVAL);
    CHECK_MSG(strstr(err, "QCOW2_CREATE_OPTS_INIT"), "'%s'", err);
    CHECK(qcow2_create_opts_set(&c, "compat", "0.10", err, sizeof(err)) == -EINVAL);
    CHECK(c.version == 0);

    struct qcow2_image *img = open_image(0);
    if (!img)
        return;
    struct qcow2_info i;
    memset(&i, SENTINEL, sizeof(i));
    CHECK(qcow2_get_info(img, &i) == -EINVAL);
    CHECK_MSG(strstr(qcow2_error(img), "QCOW2_INFO_INIT"), "'%s'", qcow2_error(img));
    CHECK(all_bytes(&i, sizeof(i), SENTINEL));
    struct qcow2_extent e;
    memset(&e, 0, sizeof(e));
    CHECK(qcow2_block_status(img, 0, MIB, &e) == -EINVAL);
    CHECK_MSG(strstr(qcow2_error(img), "QCOW2_EXTENT_INIT"), "'%s'", qcow2_error(img));
    CHECK(qcow2_block_status(img, 0, MIB, NULL) == -EINVAL);
    struct qcow2_check_result r;
    memset(&r, 0, sizeof(r));
    CHECK(qcow2_check(img, 0, &r, NULL, NULL) == -EINVAL);
    CHECK_MSG(strstr(qcow2_error(img), "QCOW2_CHECK_RESULT_INIT"), "'%s'", qcow2_error(img));
    CHECK(all_bytes(&r, sizeof(r), 0));
    CHECK(qcow2_check(img, 0, NULL, NULL, NULL) == 0); /* no result wanted */
    qcow2_close(img);
}

/* A newer program whose extra options are at their defaults works; one that sets an option we
 * do not know is refused rather than silently given something else. */
static void test_newer_caller_options_work_when_unknown_fields_are_zero(void)
{
    char err[QCOW2_ERROR_MAX];
    struct newer_open_opts n;
    memset(&n, 0, sizeof(n));
    n.o.struct_size = sizeof(n);
    n.o.read_only = 1;
    struct qcow2_image *img;
    int ret = qcow2_open(g_image, &n.o, &img, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    if (ret == 0) {
        char buf[512] = {0};
        CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == -EROFS); /* read_only was read */
        qcow2_close(img);
    }
    n.newer[2] = 1;
    ret = qcow2_open(g_image, &n.o, &img, err, sizeof(err));
    CHECK_MSG(ret == -ENOTSUP && img == NULL, "%d", ret);
    char want[64];
    snprintf(want, sizeof(want), "at byte %zu", sizeof(n.o) + 2 * sizeof(uint64_t));
    CHECK_MSG(strstr(err, want) && strstr(err, "struct qcow2_open_opts"), "'%s'", err);

    struct newer_create_opts c;
    memset(&c, 0, sizeof(c));
    c.o.struct_size = sizeof(c);
    CHECK(qcow2_create_opts_set(&c.o, "cluster_size", "4k", err, sizeof(err)) == 0);
    char list[] = "compat=0.10,size=2M";
    CHECK(qcow2_create_opts_parse(&c.o, list, err, sizeof(err)) == 0);
    CHECK(c.o.struct_size == sizeof(c) && c.o.cluster_size == 4096 && c.o.version == 2);
    CHECK(c.o.size == 2 * MIB && all_bytes(c.newer, sizeof(c.newer), 0));
    char path[4300];
    snprintf(path, sizeof(path), "%s/newer.qcow2", g_dir);
    ret = qcow2_create(path, &c.o, err, sizeof(err));
    CHECK_MSG(ret == 0, "%s", err);
    c.newer[0] = 7;
    CHECK(qcow2_create(path, &c.o, err, sizeof(err)) == -ENOTSUP);
    CHECK(qcow2_create_opts_set(&c.o, "compat", "1.1", err, sizeof(err)) == -ENOTSUP);
    CHECK(c.o.version == 2);
}

/* A newer program's result fields that we do not know are left as they were (zero, from its
 * INIT macro); ours are filled; struct_size is kept, so one struct serves a loop. */
static void test_newer_caller_results_are_filled_and_the_rest_left_alone(void)
{
    struct qcow2_image *img = open_image(1);
    if (!img)
        return;
    struct newer_info i;
    memset(&i, SENTINEL, sizeof(i));
    i.i.struct_size = sizeof(i);
    CHECK(qcow2_get_info(img, &i.i) == 0);
    CHECK(i.i.struct_size == sizeof(i) && i.i.virtual_size == MIB && i.i.cluster_size == 65536);
    CHECK(i.i.format == QCOW2_FORMAT_QCOW2 && i.i.backing_file == NULL);
    CHECK(all_bytes(i.newer, sizeof(i.newer), SENTINEL));

    struct newer_extent e;
    memset(&e, SENTINEL, sizeof(e));
    e.e.struct_size = sizeof(e);
    uint64_t off = 0;
    int n = 0;
    while (off < MIB && n < 16) {
        CHECK(qcow2_block_status(img, off, MIB - off, &e.e) == 0);
        CHECK(e.e.struct_size == sizeof(e) && e.e.start == off && e.e.length > 0);
        CHECK(n > 0 || (e.e.flags & QCOW2_BS_DATA));
        off += e.e.length;
        n++;
    }
    CHECK(off == MIB && all_bytes(e.newer, sizeof(e.newer), SENTINEL));

    struct newer_check_result r;
    memset(&r, SENTINEL, sizeof(r));
    r.r.struct_size = sizeof(r);
    CHECK(qcow2_check(img, 0, &r.r, NULL, NULL) == 0);
    CHECK(r.r.struct_size == sizeof(r) && r.r.corruptions == 0 && r.r.leaks == 0);
    CHECK(r.r.allocated_clusters == 1);
    CHECK(all_bytes(r.newer, sizeof(r.newer), SENTINEL));
    qcow2_close(img);
}

/* An older program (played here with a smaller struct_size and a table entry that accepts it):
 * nothing past its struct is read as options or written as results. */
static void test_older_caller_memory_past_its_struct_is_never_touched(void)
{
    const size_t old_size = offsetof(struct qcow2_open_opts, l2_cache_size);
    struct abi_struct old_open = abi_open_opts;
    old_open.first_size = old_size;
    struct qcow2_open_opts theirs;
    memset(&theirs, SENTINEL, sizeof(theirs)); /* past old_size: someone else's memory */
    theirs.struct_size = old_size;
    theirs.format = QCOW2_FORMAT_QCOW2;
    theirs.read_only = 1;
    theirs.no_backing = 1;
    struct qcow2_open_opts ours;
    char err[QCOW2_ERROR_MAX] = "";
    CHECK_MSG(abi_copy_in(&old_open, &ours, &theirs, err, sizeof(err)) == 0, "%s", err);
    CHECK(ours.struct_size == sizeof(ours) && ours.format == QCOW2_FORMAT_QCOW2);
    CHECK(ours.read_only == 1 && ours.no_backing == 1);
    CHECK(ours.l2_cache_size == 0 && ours.confine_paths == 0 && ours.max_chain_depth == 0);
    CHECK(ours.lazy_refcounts == QCOW2_AUTO && ours.repair == 0); /* defaults, not 0x5a */

    const size_t old_info = offsetof(struct qcow2_info, version);
    struct qcow2_info full = QCOW2_INFO_INIT;
    full.filename = "x.qcow2";
    full.virtual_size = 42;
    full.version = 3;
    full.autoclear_features = 1;
    struct qcow2_info out;
    memset(&out, SENTINEL, sizeof(out));
    out.struct_size = old_info;
    abi_copy_out(&abi_info, &out, &full);
    CHECK(out.struct_size == old_info && out.filename == full.filename);
    CHECK(out.virtual_size == 42);
    CHECK(all_bytes((unsigned char *)&out + old_info, sizeof(out) - old_info, SENTINEL));

    /* An option set by name that the older struct has no field for. */
    const size_t old_create = offsetof(struct qcow2_create_opts, data_file);
    struct qcow2_create_opts set = QCOW2_CREATE_OPTS_INIT;
    set.data_file = "d.raw";
    struct qcow2_create_opts c;
    memset(&c, SENTINEL, sizeof(c));
    c.struct_size = old_create;
    CHECK(abi_copy_back(&abi_create_opts, &c, &set, "data_file", err, sizeof(err)) == -ENOTSUP);
    CHECK_MSG(strstr(err, "data_file") && strstr(err, "older libqcow2"), "'%s'", err);
    CHECK(all_bytes((unsigned char *)&c + sizeof(size_t), sizeof(c) - sizeof(size_t),
                    SENTINEL));
    set.data_file = NULL;
    set.version = 2;
    CHECK(abi_copy_back(&abi_create_opts, &c, &set, "compat", err, sizeof(err)) == 0);
    CHECK(c.version == 2 && c.struct_size == old_create);
    CHECK(all_bytes((unsigned char *)&c + old_create, sizeof(c) - old_create, SENTINEL));
}

static int make_image(void)
{
    snprintf(g_image, sizeof(g_image), "%s/img.qcow2", g_dir);
    struct qcow2_create_opts o = QCOW2_CREATE_OPTS_INIT;
    o.size = MIB;
    char err[QCOW2_ERROR_MAX];
    struct qcow2_image *img;
    if (qcow2_create(g_image, &o, err, sizeof(err)) < 0 ||
        qcow2_open(g_image, NULL, &img, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    char buf[4096];
    memset(buf, 1, sizeof(buf));
    int ret = qcow2_pwrite(img, buf, sizeof(buf), 0, 0);
    if (qcow2_close(img) < 0 || ret < 0)
        return -1;
    return 0;
}

/* The chain calls' options: a forgotten INIT and a newer caller's unknown option are refused
 * before anything is touched (the image has no backing file: a call that got past the struct
 * would fail differently). */
static void test_chain_options_are_checked_first(void)
{
    struct qcow2_image *img = open_image(0);
    if (!img)
        return;
    struct qcow2_commit_opts c;
    memset(&c, 0, sizeof(c));
    CHECK(qcow2_commit(img, &c) == -EINVAL);
    CHECK_MSG(strstr(qcow2_error(img), "QCOW2_COMMIT_OPTS_INIT"), "'%s'", qcow2_error(img));
    struct qcow2_rebase_opts r;
    memset(&r, 0, sizeof(r));
    CHECK(qcow2_rebase(img, &r) == -EINVAL);
    CHECK_MSG(strstr(qcow2_error(img), "QCOW2_REBASE_OPTS_INIT"), "'%s'", qcow2_error(img));
    struct {
        struct qcow2_rebase_opts o;
        uint64_t newer;
    } n;
    memset(&n, 0, sizeof(n));
    n.o.struct_size = sizeof(n);
    n.newer = 1;
    CHECK(qcow2_rebase(img, &n.o) == -ENOTSUP);
    c = QCOW2_COMMIT_OPTS_INIT;
    CHECK(qcow2_commit(img, &c) == -EINVAL);
    CHECK_MSG(strstr(qcow2_error(img), "does not have a backing file"), "'%s'",
              qcow2_error(img));
    qcow2_close(img);
}

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_abi.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (make_image() < 0)
        return 1;
    RUN("INIT sets struct_size and zeroes the rest",
        test_init_sets_struct_size_and_zeroes_the_rest());
    RUN("a struct_size no version had is refused, naming the macro",
        test_struct_size_no_version_had_is_refused_naming_the_macro());
    RUN("newer caller: options work when the unknown fields are zero",
        test_newer_caller_options_work_when_unknown_fields_are_zero());
    RUN("newer caller: results filled, the rest left alone",
        test_newer_caller_results_are_filled_and_the_rest_left_alone());
    RUN("older caller: memory past its struct is never touched",
        test_older_caller_memory_past_its_struct_is_never_touched());
    RUN("chain calls check their options first", test_chain_options_are_checked_first());

    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
