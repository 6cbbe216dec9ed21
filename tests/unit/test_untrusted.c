/* test_untrusted.c - confinement of the files an image names (file.c file_open_beneath, image.c)
 * and untrusted mode. Every name is resolved twice, through openat2 and through the fallback
 * walk (FILE_NO_OPENAT2), which must agree on what leaves the directory: absolute names, "..",
 * symlinks to files or directories outside, and refuse devices and FIFOs (without hanging).
 * The fallback is stricter: it follows no symlink, even one that stays inside. Then the
 * library: confine_paths no longer lets a symlink out (the old check compared names as text),
 * untrusted mode limits the chain depth and accepts a legitimate chain, and an inspect_only open
 * checks names without opening them and refuses guest I/O. */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testharness.h"
#include "testworkload.h"

static char g_dir[4096]; /* g_dir/in is the allowed directory, g_dir/out the outside */
static char g_in[4200];

static void put_file(const char *rel, const char *text)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/%s", g_dir, rel);
    FILE *f = fopen(p, "w");
    CHECK_MSG(f != NULL, "creating %s", p);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void put_link(const char *target, const char *rel)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/%s", g_dir, rel);
    CHECK_MSG(symlink(target, p) == 0, "symlink %s", p);
}

static int open_beneath(const char *name, unsigned flags)
{
    struct qcow2_file *f = NULL;
    char err[QCOW2_ERROR_MAX];
    int ret = file_open_beneath(g_in, name, FILE_READ_ONLY | flags, &f, err, sizeof(err));
    CHECK_MSG((ret == 0) == (f != NULL), "%s: ret %d but file %p", name, ret, (void *)f);
    file_close(f);
    return ret;
}

static void setup(void)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/in/sub", g_dir);
    CHECK(mkdir(g_in, 0755) == 0 && mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/out", g_dir);
    CHECK(mkdir(p, 0755) == 0);
    put_file("in/a.raw", "inside");
    put_file("in/sub/b.raw", "inside too");
    put_file("out/secret", "outside");
    put_link("a.raw", "in/link-in");
    put_link("../out/secret", "in/link-out");
    put_link("../out", "in/dir-out");
    put_link("/dev/zero", "in/dev-link");
    snprintf(p, sizeof(p), "%s/in/fifo", g_dir);
    CHECK(mkfifo(p, 0644) == 0);
}

/* What both resolutions must say. */
static void test_both_resolutions_confine_to_the_directory(void)
{
    static const struct {
        const char *name;
        int ret;
    } cases[] = {
        {"a.raw", 0},
        {"sub/b.raw", 0},
        {"./sub/../a.raw", 0},
        {"sub//b.raw", 0},
        {"../out/secret", -EPERM},
        {"sub/../../out/secret", -EPERM},
        {"/etc/hostname", -EPERM},
        {"link-out", -EPERM},
        {"dir-out/secret", -EPERM},
        {"dev-link", -EPERM},
        {"fifo", -EPERM},
        {"sub", -EISDIR},
        {"sub/..", -EISDIR},
        {"missing", -ENOENT},
        {"a.raw/", -ENOTDIR},
        {"", -ENOENT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int a = open_beneath(cases[i].name, 0);
        int b = open_beneath(cases[i].name, FILE_NO_OPENAT2);
        CHECK_MSG(a == cases[i].ret, "openat2 %s: %d, expected %d", cases[i].name, a,
                  cases[i].ret);
        CHECK_MSG(b == cases[i].ret, "walk %s: %d, expected %d", cases[i].name, b,
                  cases[i].ret);
    }
}

static void test_fallback_follows_no_symlink_even_inside(void)
{
    CHECK(open_beneath("link-in", 0) == 0);
    CHECK(open_beneath("link-in", FILE_NO_OPENAT2) == -EPERM);
}

static void test_path_only_opens_nothing(void)
{
    struct qcow2_file *f = (struct qcow2_file *)g_dir;
    char err[QCOW2_ERROR_MAX];
    CHECK(file_open_beneath(g_in, "a.raw", FILE_READ_ONLY | FILE_PATH_ONLY, &f, err,
                            sizeof(err)) == 0 &&
          f == NULL);
    CHECK(file_open_beneath(g_in, "link-out", FILE_PATH_ONLY, &f, err, sizeof(err)) == -EPERM);
    CHECK_MSG(strstr(err, "outside the allowed directory") != NULL, "%s", err);
}

static void test_regular_only_refuses_a_device_by_its_own_name(void)
{
    struct qcow2_file *f = NULL;
    char err[QCOW2_ERROR_MAX];
    CHECK(file_open_flags("/dev/zero", FILE_READ_ONLY | FILE_REGULAR_ONLY, &f, err,
                          sizeof(err)) == -EPERM);
    CHECK_MSG(strstr(err, "character device") != NULL, "%s", err);
    char p[4400];
    snprintf(p, sizeof(p), "%s/fifo", g_in);
    CHECK(file_open_flags(p, FILE_READ_ONLY | FILE_REGULAR_ONLY, &f, err, sizeof(err)) ==
          -EPERM);
    CHECK_MSG(strstr(err, "FIFO") != NULL, "%s", err);
    CHECK(f == NULL);
}

/* in/NAME, a qcow2 image over BACKING (stored as given). */
static void make_overlay(const char *name, const char *backing)
{
    char p[4400], err[QCOW2_ERROR_MAX];
    snprintf(p, sizeof(p), "%s/%s", g_in, name);
    struct qcow2_create_opts o = QCOW2_CREATE_OPTS_INIT;
    o.size = 1 << 20;
    o.backing_file = backing;
    o.backing_fmt = "raw";
    int ret = qcow2_create(p, &o, err, sizeof(err));
    CHECK_MSG(ret == 0, "create %s: %s", name, err);
}

static int open_in(const char *name, const struct qcow2_open_opts *o, char *err, size_t len)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/%s", g_in, name);
    struct qcow2_image *img = NULL;
    int ret = qcow2_open(p, o, &img, err, len);
    qcow2_close(img);
    return ret;
}

static void test_confine_paths_does_not_follow_a_symlink_out(void)
{
    char err[QCOW2_ERROR_MAX];
    make_overlay("over-link.qcow2", "link-out");
    make_overlay("over-a.qcow2", "a.raw");
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = 1;
    CHECK(open_in("over-link.qcow2", &o, err, sizeof(err)) == 0); /* trusted: followed */
    o.confine_paths = 1;
    CHECK(open_in("over-link.qcow2", &o, err, sizeof(err)) == -EPERM);
    CHECK_MSG(strstr(err, "outside the allowed directory") != NULL, "%s", err);
    CHECK_MSG(open_in("over-a.qcow2", &o, err, sizeof(err)) == 0, "%s", err);
}

static void test_untrusted_chain_depth_is_limited(void)
{
    char err[QCOW2_ERROR_MAX], name[64], below[64] = "a.raw";
    /* c1 over a.raw, c2 over c1, ...: c9 is a chain of 10 files */
    for (int i = 1; i <= QCOW2_UNTRUSTED_CHAIN_DEPTH + 1; i++) {
        snprintf(name, sizeof(name), "c%d.qcow2", i);
        char p[4400];
        snprintf(p, sizeof(p), "%s/%s", g_in, name);
        struct qcow2_create_opts c = QCOW2_CREATE_OPTS_INIT;
        c.size = 1 << 20;
        c.backing_file = below;
        c.backing_fmt = i == 1 ? "raw" : "qcow2";
        CHECK_MSG(qcow2_create(p, &c, err, sizeof(err)) == 0, "%s: %s", name, err);
        snprintf(below, sizeof(below), "%s", name);
    }
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = 1;
    o.untrusted = 1;
    o.allowed_dir = g_in;
    CHECK_MSG(open_in(below, &o, err, sizeof(err)) == -ELOOP, "%s", err);
    CHECK_MSG(open_in("c6.qcow2", &o, err, sizeof(err)) == 0, "%s", err);
    o.untrusted = 0; /* the default depth (16) takes the longer chain */
    CHECK_MSG(open_in(below, &o, err, sizeof(err)) == 0, "%s", err);
}

/* An image that names itself, opened beneath the directory: the loop is found from the open
 * file (never its name), and the file opened for it is not leaked (ASan). */
static void test_confined_chain_that_loops_is_refused(void)
{
    char err[QCOW2_ERROR_MAX];
    make_overlay("self.qcow2", "self.qcow2");
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = 1;
    o.untrusted = 1;
    o.allowed_dir = g_in;
    CHECK_MSG(open_in("self.qcow2", &o, err, sizeof(err)) == -ELOOP, "%s", err);
    CHECK_MSG(strstr(err, "loops back") != NULL, "%s", err);
}

/* An inspection checks the names without opening the files, and does no guest I/O. */
static void test_inspect_only_checks_names_and_refuses_guest_io(void)
{
    char p[4400], err[QCOW2_ERROR_MAX];
    struct qcow2_open_opts o = QCOW2_OPEN_OPTS_INIT;
    o.untrusted = 1;
    o.inspect_only = 1;
    o.allowed_dir = g_in;
    CHECK(open_in("over-link.qcow2", &o, err, sizeof(err)) == -EPERM);
    snprintf(p, sizeof(p), "%s/over-a.qcow2", g_in);
    struct qcow2_image *img = NULL;
    CHECK_MSG(qcow2_open(p, &o, &img, err, sizeof(err)) == 0, "%s", err);
    if (!img)
        return;
    struct qcow2_info info = QCOW2_INFO_INIT;
    CHECK(qcow2_get_info(img, &info) == 0 && info.backing_file &&
          strcmp(info.backing_file, "a.raw") == 0);
    CHECK(qcow2_get_backing(img) == NULL);
    char buf[512];
    CHECK(qcow2_pread(img, buf, sizeof(buf), 0) == -EPERM);
    CHECK(qcow2_pwrite(img, buf, sizeof(buf), 0, 0) == -EROFS);
    qcow2_close(img);
}

int main(void)
{
    const char *base = getenv("QCOW2_TEST_TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_untrusted.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_in, sizeof(g_in), "%s/in", g_dir);
    RUN("setup", setup());
    RUN("both_resolutions_confine_to_the_directory",
        test_both_resolutions_confine_to_the_directory());
    RUN("fallback_follows_no_symlink_even_inside", test_fallback_follows_no_symlink_even_inside());
    RUN("path_only_opens_nothing", test_path_only_opens_nothing());
    RUN("regular_only_refuses_a_device_by_its_own_name",
        test_regular_only_refuses_a_device_by_its_own_name());
    RUN("confine_paths_does_not_follow_a_symlink_out",
        test_confine_paths_does_not_follow_a_symlink_out());
    RUN("untrusted_chain_depth_is_limited", test_untrusted_chain_depth_is_limited());
    RUN("confined_chain_that_loops_is_refused", test_confined_chain_that_loops_is_refused());
    RUN("inspect_only_checks_names_and_refuses_guest_io",
        test_inspect_only_checks_names_and_refuses_guest_io());
    if (!getenv("KEEP_TMP"))
        wl_run_cmd("rm -rf '%s'", g_dir);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
