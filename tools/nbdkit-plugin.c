/* nbdkit-plugin.c - an nbdkit plugin that exports a qcow2 (or raw) image through libqcow2.
 *   nbdkit -U SOCK build/nbdkit-qcow2-plugin.so file=IMAGE [readonly=1] [backing=0]
 *          [cache-size=SIZE] [untrusted=1 [allow-dir=DIR]] [snapshot=ID_OR_NAME]
 * One image is opened when nbdkit is ready and shared by every connection (the library is
 * thread-safe, so the thread model is PARALLEL and multi-conn is safe: a flush on any
 * connection makes all earlier writes durable). Thin over include/qcow2.h. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* nbdkit plugins keep their configuration in the plugin: one export per nbdkit process. */
static struct {
    char *file;
    int readonly;
    int backing;
    uint64_t cache_size;
    int untrusted;
    char *allow_dir;
    char *snapshot; /* export this internal snapshot (read-only) */
    struct qcow2_image *img;
} plugin = {.backing = 1};

static void qcow2_plugin_unload(void)
{
    if (plugin.img) {
        if (qcow2_close(plugin.img) < 0)
            nbdkit_error("%s: closing the image failed", plugin.file);
        plugin.img = NULL;
    }
    free(plugin.file);
    free(plugin.allow_dir);
    free(plugin.snapshot);
}

static int parse_bool_or_error(const char *key, const char *value, int *out)
{
    int r = nbdkit_parse_bool(value);
    if (r < 0)
        return -1; /* nbdkit printed the error */
    (void)key;
    *out = r;
    return 0;
}

static int qcow2_plugin_config(const char *key, const char *value)
{
    if (strcmp(key, "file") == 0) {
        free(plugin.file);
        plugin.file = nbdkit_realpath(value);
        return plugin.file ? 0 : -1;
    }
    if (strcmp(key, "readonly") == 0)
        return parse_bool_or_error(key, value, &plugin.readonly);
    if (strcmp(key, "backing") == 0)
        return parse_bool_or_error(key, value, &plugin.backing);
    if (strcmp(key, "untrusted") == 0)
        return parse_bool_or_error(key, value, &plugin.untrusted);
    if (strcmp(key, "allow-dir") == 0) {
        free(plugin.allow_dir);
        plugin.allow_dir = nbdkit_realpath(value);
        return plugin.allow_dir ? 0 : -1;
    }
    if (strcmp(key, "cache-size") == 0) {
        int64_t v = nbdkit_parse_size(value);
        if (v < 0)
            return -1;
        plugin.cache_size = (uint64_t)v;
        return 0;
    }
    if (strcmp(key, "snapshot") == 0) {
        free(plugin.snapshot);
        plugin.snapshot = strdup(value);
        if (!plugin.snapshot)
            nbdkit_error("out of memory");
        /* A snapshot is exported read-only, as qemu-nbd -l does. */
        plugin.readonly = 1;
        return plugin.snapshot ? 0 : -1;
    }
    nbdkit_error("unknown parameter '%s' (expected file, readonly, backing, cache-size, "
                 "untrusted, allow-dir, snapshot)",
                 key);
    return -1;
}

static int qcow2_plugin_config_complete(void)
{
    if (!plugin.file) {
        nbdkit_error("the file=IMAGE parameter is required");
        return -1;
    }
    if (plugin.snapshot && !plugin.readonly) {
        nbdkit_error("snapshot=%s: a snapshot is exported read-only (readonly=false given)",
                     plugin.snapshot);
        return -1;
    }
    return 0;
}

static int qcow2_plugin_get_ready(void)
{
    struct qcow2_open_opts o;
    char err[QCOW2_ERROR_MAX];
    o = QCOW2_OPEN_OPTS_INIT;
    o.read_only = plugin.readonly;
    o.no_backing = !plugin.backing;
    o.l2_cache_size = plugin.cache_size;
    o.untrusted = plugin.untrusted;
    o.allowed_dir = plugin.allow_dir;
    /* snapshot=X is an ID first, then a name, as qemu-img's and qemu-nbd's -l X. */
    o.snapshot_id = plugin.snapshot;
    int ret = qcow2_open(plugin.file, &o, &plugin.img, err, sizeof(err));
    if (ret == -ENOENT && plugin.snapshot) {
        o.snapshot_id = NULL;
        o.snapshot_name = plugin.snapshot;
        ret = qcow2_open(plugin.file, &o, &plugin.img, err, sizeof(err));
    }
    if (ret < 0) {
        nbdkit_error("%s", err);
        return -1;
    }
    return 0;
}

static void *qcow2_plugin_open(int readonly)
{
    (void)readonly;
    return plugin.img; /* every connection shares the one image */
}

/* Turn a library failure into an nbdkit error with the library's message. */
static int fail(int ret)
{
    nbdkit_error("%s", qcow2_error(plugin.img));
    nbdkit_set_error(-ret);
    return -1;
}

static int64_t qcow2_plugin_get_size(void *h)
{
    return (int64_t)qcow2_get_size(h);
}

static int qcow2_plugin_can_write(void *h)
{
    (void)h;
    return !plugin.readonly;
}

static int qcow2_plugin_can_zero(void *h)
{
    (void)h;
    return 1; /* zeroing is done natively (in metadata where possible) */
}

static int qcow2_plugin_can_fua(void *h)
{
    (void)h;
    return NBDKIT_FUA_NATIVE;
}

static int qcow2_plugin_can_cache(void *h)
{
    (void)h;
    return NBDKIT_CACHE_EMULATE;
}

static int qcow2_plugin_true(void *h)
{
    (void)h;
    return 1;
}

static int qcow2_plugin_pread(void *h, void *buf, uint32_t count, uint64_t offset,
                              uint32_t flags)
{
    (void)flags;
    int ret = qcow2_pread(h, buf, count, offset);
    return ret < 0 ? fail(ret) : 0;
}

static int qcow2_plugin_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset,
                               uint32_t flags)
{
    unsigned f = (flags & NBDKIT_FLAG_FUA) ? QCOW2_WRITE_FUA : 0;
    int ret = qcow2_pwrite(h, buf, count, offset, f);
    return ret < 0 ? fail(ret) : 0;
}

static int flush_if_fua(void *h, uint32_t flags)
{
    if (!(flags & NBDKIT_FLAG_FUA))
        return 0;
    int ret = qcow2_flush(h);
    return ret < 0 ? fail(ret) : 0;
}

static int qcow2_plugin_zero(void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
    unsigned f = 0;
    if (flags & NBDKIT_FLAG_MAY_TRIM)
        f |= QCOW2_ZERO_MAY_UNMAP;
    if (flags & NBDKIT_FLAG_FAST_ZERO)
        f |= QCOW2_ZERO_FAST;
    int ret = qcow2_pwrite_zeroes(h, offset, count, f);
    if (ret == -ENOTSUP && (flags & NBDKIT_FLAG_FAST_ZERO)) {
        nbdkit_set_error(ENOTSUP); /* not fast: the client will write zeros itself */
        return -1;
    }
    return ret < 0 ? fail(ret) : flush_if_fua(h, flags);
}

static int qcow2_plugin_trim(void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
    int ret = qcow2_discard(h, offset, count);
    /* NBD_CMD_TRIM is advisory: where the image cannot deallocate (a v2 image with a backing
     * file refuses with -ENOTSUP), keeping the data is a valid answer, as with qemu-nbd. */
    if (ret == -ENOTSUP)
        ret = 0;
    return ret < 0 ? fail(ret) : flush_if_fua(h, flags);
}

static int qcow2_plugin_flush(void *h, uint32_t flags)
{
    (void)flags;
    int ret = qcow2_flush(h);
    return ret < 0 ? fail(ret) : 0;
}

/* base:allocation: data ranges are allocated; zero ranges and ranges allocated nowhere in
 * the chain are holes that read as zeros. */
static int qcow2_plugin_extents(void *h, uint32_t count, uint64_t offset, uint32_t flags,
                                struct nbdkit_extents *extents)
{
    uint64_t end = offset + count;
    while (offset < end) {
        struct qcow2_extent e = QCOW2_EXTENT_INIT;
        int ret = qcow2_block_status(h, offset, end - offset, &e);
        if (ret < 0)
            return fail(ret);
        uint32_t type = 0;
        if (!(e.flags & QCOW2_BS_DATA))
            type |= NBDKIT_EXTENT_HOLE;
        if (e.flags & QCOW2_BS_ZERO)
            type |= NBDKIT_EXTENT_ZERO;
        if (nbdkit_add_extent(extents, offset, e.length, type) < 0)
            return -1;
        offset += e.length;
        if (flags & NBDKIT_FLAG_REQ_ONE)
            break;
    }
    return 0;
}

static struct nbdkit_plugin qcow2_nbdkit_plugin = {
    .name = "qcow2",
    .longname = "libqcow2 qcow2 image plugin",
    .version = QCOW2_VERSION_STRING,
    .description = "Export a qcow2 (or raw) image, with its backing chain, through libqcow2",
    .config_help = "file=<IMAGE>     (required) the image to export\n"
                   "readonly=<BOOL>  open read-only\n"
                   "backing=<BOOL>   open the backing chain (default true)\n"
                   "cache-size=<SIZE> L2 cache size\n"
                   "untrusted=<BOOL> the image comes from an untrusted source: regular files\n"
                   "                 only, smaller limits, no backing or data file outside\n"
                   "                 allow-dir (none at all without it)\n"
                   "allow-dir=<DIR>  backing and data files must resolve beneath DIR\n"
                   "snapshot=<ID|NAME> export this internal snapshot, read-only",
    .magic_config_key = "file",
    .unload = qcow2_plugin_unload,
    .config = qcow2_plugin_config,
    .config_complete = qcow2_plugin_config_complete,
    .get_ready = qcow2_plugin_get_ready,
    .open = qcow2_plugin_open,
    .get_size = qcow2_plugin_get_size,
    .can_write = qcow2_plugin_can_write,
    .can_flush = qcow2_plugin_true,
    .can_trim = qcow2_plugin_can_write,
    .can_zero = qcow2_plugin_can_zero,
    .can_fast_zero = qcow2_plugin_true,
    .can_fua = qcow2_plugin_can_fua,
    .can_multi_conn = qcow2_plugin_true,
    .can_extents = qcow2_plugin_true,
    .can_cache = qcow2_plugin_can_cache,
    .pread = qcow2_plugin_pread,
    .pwrite = qcow2_plugin_pwrite,
    .zero = qcow2_plugin_zero,
    .trim = qcow2_plugin_trim,
    .flush = qcow2_plugin_flush,
    .extents = qcow2_plugin_extents,
};

NBDKIT_REGISTER_PLUGIN(qcow2_nbdkit_plugin)
