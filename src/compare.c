/* compare.c - whole-image comparison and copy (qemu-img compare and dd).
 * Works only through the public calls of io.c (qcow2_block_status, qcow2_pread, qcow2_pwrite)
 * plus error.c and abi.c: it knows nothing of the on-disk format, so qcow2 and raw images and
 * whole backing chains are all alike to it. Holds no state between calls. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define COMPARE_PIECE (4u << 20) /* bytes read from each image at a time */
#define COMPARE_SECTOR 512u      /* qemu-img reports mismatches by 512-byte sector */
#define COPY_DEFAULT_CHUNK (1u << 20)

/* qemu-img compare -s compares QEMU's block status words; ours are mapped onto the bits that
 * exist in both (ALLOCATED is our PRESENT) plus these two, which QEMU keeps as bits. */
#define STATUS_OFFSET_VALID 0x100u
#define STATUS_EOF 0x200u

/* One image of a comparison and the extent that covers the current offset. */
struct side {
    struct qcow2_image *img;
    uint64_t size;
    struct qcow2_extent ext;
    uint8_t *buf;
    int number; /* 1 or 2, for the result */
};

static uint64_t ext_end(const struct qcow2_extent *e)
{
    return e->start + e->length;
}

static int fail(struct qcow2_compare_result *r, const struct side *s, enum qcow2_compare_step step,
                uint64_t offset, int ret)
{
    r->failed_image = s->number;
    r->failed_step = step;
    r->offset = offset;
    return ret;
}

/* Make s->ext cover `pos` (asking again only when the cached extent ends before it). */
static int side_status(struct side *s, uint64_t pos, struct qcow2_compare_result *r)
{
    if (s->ext.length && pos >= s->ext.start && pos < ext_end(&s->ext))
        return 0;
    s->ext = (struct qcow2_extent)QCOW2_EXTENT_INIT;
    int ret = qcow2_block_status(s->img, pos, s->size - pos, &s->ext);
    if (ret == 0 && (s->ext.start != pos || s->ext.length == 0))
        ret = set_error(s->img, -EIO, "block status at offset %llu returned an invalid range",
                        (unsigned long long)pos);
    return ret < 0 ? fail(r, s, QCOW2_COMPARE_STEP_BLOCK_STATUS, pos, ret) : 0;
}

/* QEMU's whole-chain block status (bdrv_block_status_above, which qemu-img compare uses)
 * calls a range allocated, reading zeros, where the walk down the chain passes the end of a
 * backing file shorter than the layer above it. qcow2_block_status, like qemu-img map, calls
 * it not present, answered by the layer (ext.depth) whose backing file ends before it. */
static bool past_backing_end(const struct side *s)
{
    if (s->ext.flags & QCOW2_BS_PRESENT)
        return false;
    struct qcow2_image *layer = s->img;
    for (int d = 0; d < s->ext.depth && layer; d++)
        layer = qcow2_get_backing(layer);
    struct qcow2_image *backing = layer ? qcow2_get_backing(layer) : NULL;
    return backing && s->ext.start >= qcow2_get_size(backing);
}

static unsigned status_word(const struct side *s)
{
    unsigned w = s->ext.flags &
                 (QCOW2_BS_DATA | QCOW2_BS_ZERO | QCOW2_BS_PRESENT | QCOW2_BS_COMPRESSED);
    if (past_backing_end(s))
        w |= QCOW2_BS_PRESENT;
    if (s->ext.offset >= 0)
        w |= STATUS_OFFSET_VALID;
    if (ext_end(&s->ext) == s->size)
        w |= STATUS_EOF;
    return w;
}

/* The range may hold something other than zeros: allocated somewhere in the chain and not
 * known to read as zeros. (A range allocated nowhere reads as zeros too.) */
static bool may_hold_data(const struct side *s)
{
    return (s->ext.flags & QCOW2_BS_PRESENT) && !(s->ext.flags & QCOW2_BS_ZERO);
}

/* Index of the first 512-byte sector of `a` that differs from `b` (b NULL: is not zero);
 * -1 if none. */
static int64_t first_differing_sector(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i += COMPARE_SECTOR) {
        size_t len = MIN(COMPARE_SECTOR, n - i);
        if (b ? memcmp(a + i, b + i, len) != 0 : !buffer_is_zero(a + i, len))
            return (int64_t)i;
    }
    return -1;
}

static void report(qcow2_progress_fn progress, void *opaque, uint64_t done, uint64_t total)
{
    if (progress)
        progress(opaque, done, total);
}

/* Compare [pos, end) of both images, or (b NULL) check that `a` reads as zeros there. Returns
 * 1 with r filled on a mismatch, 0 when equal, -errno. */
static int compare_range(struct side *a, struct side *b, uint64_t pos, uint64_t end,
                         struct qcow2_compare_result *r)
{
    while (pos < end) {
        size_t n = (size_t)MIN((uint64_t)COMPARE_PIECE, end - pos);
        int ret = qcow2_pread(a->img, a->buf, n, pos);
        if (ret < 0)
            return fail(r, a, QCOW2_COMPARE_STEP_READ, pos, ret);
        if (b) {
            ret = qcow2_pread(b->img, b->buf, n, pos);
            if (ret < 0)
                return fail(r, b, QCOW2_COMPARE_STEP_READ, pos, ret);
        }
        bool same = b ? memcmp(a->buf, b->buf, n) == 0 : buffer_is_zero(a->buf, n);
        if (!same) {
            r->outcome = QCOW2_COMPARE_CONTENT_MISMATCH;
            r->offset = pos + (uint64_t)first_differing_sector(a->buf, b ? b->buf : NULL, n);
            return 1;
        }
        pos += n;
    }
    return 0;
}

/* The common part [0, end): qemu-img compare's main loop. Returns 1 on a verdict other than
 * "identical so far", 0, or -errno. */
static int compare_common(struct side *s1, struct side *s2, uint64_t end, bool strict,
                          struct qcow2_compare_result *r, qcow2_progress_fn progress,
                          void *opaque, uint64_t total)
{
    uint64_t pos = 0;
    while (pos < end) {
        int ret = side_status(s1, pos, r);
        if (ret == 0)
            ret = side_status(s2, pos, r);
        if (ret < 0)
            return ret;
        uint64_t next = MIN(MIN(ext_end(&s1->ext), ext_end(&s2->ext)), end);
        if (strict && status_word(s1) != status_word(s2)) {
            r->outcome = QCOW2_COMPARE_STATUS_MISMATCH;
            r->offset = pos;
            return 1;
        }
        bool d1 = may_hold_data(s1), d2 = may_hold_data(s2);
        if (d1 || d2) {
            /* Where one side reads as zeros, only the other one needs reading. */
            ret = compare_range(d1 ? s1 : s2, d1 && d2 ? s2 : NULL, pos, next, r);
            if (ret != 0)
                return ret;
        }
        pos = next;
        report(progress, opaque, pos, total);
    }
    return 0;
}

/* The tail of the longer image, past the end of the shorter one, must read as zeros. */
static int compare_tail(struct side *s, uint64_t pos, struct qcow2_compare_result *r,
                        qcow2_progress_fn progress, void *opaque)
{
    while (pos < s->size) {
        int ret = side_status(s, pos, r);
        if (ret < 0)
            return ret;
        uint64_t next = ext_end(&s->ext);
        if (may_hold_data(s) && (ret = compare_range(s, NULL, pos, next, r)) != 0)
            return ret;
        pos = next;
        report(progress, opaque, pos, s->size);
    }
    return 0;
}

int qcow2_compare(struct qcow2_image *img1, struct qcow2_image *img2, unsigned flags,
                  struct qcow2_compare_result *res, qcow2_progress_fn progress, void *opaque)
{
    if (!img1 || !img2)
        return -EINVAL;
    int ret = abi_check_out(img1, &abi_compare_result, res);
    if (ret < 0)
        return ret;
    if (flags & ~QCOW2_COMPARE_STRICT)
        return set_error(img1, -EINVAL, "unknown compare flags 0x%x", flags);

    struct qcow2_compare_result r = {.struct_size = sizeof(r)};
    struct side s1 = {.img = img1, .size = qcow2_get_size(img1), .number = 1};
    struct side s2 = {.img = img2, .size = qcow2_get_size(img2), .number = 2};
    uint64_t total = MAX(s1.size, s2.size);
    bool strict = flags & QCOW2_COMPARE_STRICT;

    report(progress, opaque, 0, total);
    if (strict && s1.size != s2.size) {
        r.outcome = QCOW2_COMPARE_SIZE_MISMATCH;
        abi_copy_out(&abi_compare_result, res, &r);
        return 0;
    }
    s1.buf = malloc(COMPARE_PIECE);
    s2.buf = malloc(COMPARE_PIECE);
    if (!s1.buf || !s2.buf) {
        ret = set_error(img1, -ENOMEM, "out of memory for comparing");
        fail(&r, &s1, QCOW2_COMPARE_STEP_READ, 0, ret);
        goto out;
    }
    ret = compare_common(&s1, &s2, MIN(s1.size, s2.size), strict, &r, progress, opaque, total);
    if (ret == 0 && s1.size != s2.size) {
        r.size_mismatch = 1;
        ret = compare_tail(s1.size > s2.size ? &s1 : &s2, MIN(s1.size, s2.size), &r, progress,
                           opaque);
    }
    if (ret >= 0)
        ret = 0;
out:
    free(s1.buf);
    free(s2.buf);
    abi_copy_out(&abi_compare_result, res, &r);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Copy (qemu-img dd). */

int qcow2_copy_range(struct qcow2_image *src, uint64_t src_offset, struct qcow2_image *dst,
                     uint64_t dst_offset, uint64_t count, size_t chunk,
                     qcow2_progress_fn progress, void *opaque)
{
    if (!src || !dst)
        return -EINVAL;
    if (chunk == 0)
        chunk = COPY_DEFAULT_CHUNK;
    uint8_t *buf = malloc(MIN((uint64_t)chunk, MAX(count, 1)));
    if (!buf)
        return set_error(dst, -ENOMEM, "out of memory for copying");
    int ret = 0;
    report(progress, opaque, 0, count);
    for (uint64_t done = 0; done < count;) {
        size_t n = (size_t)MIN((uint64_t)chunk, count - done);
        ret = qcow2_pread(src, buf, n, src_offset + done);
        if (ret < 0) {
            ret = set_error(dst, ret, "error while reading from input image file: %s",
                            qcow2_error(src));
            break;
        }
        ret = qcow2_pwrite(dst, buf, n, dst_offset + done, 0);
        if (ret < 0)
            break;
        done += n;
        report(progress, opaque, done, count);
    }
    free(buf);
    return ret;
}
