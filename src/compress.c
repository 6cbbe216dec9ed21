/* compress.c - cluster compression: raw deflate (qcow2's "zlib") and zstd.
 * Pure functions over buffers. Decompression stops once the output cluster is full, because
 * the stored range may end with sector padding or the start of the next compressed cluster. */
#include "internal.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#define DEFLATE_WINDOW_BITS (-12) /* raw deflate, 4 KiB window: what QEMU writes */

static int inflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len)
{
    z_stream z = {0};
    if (inflateInit2(&z, DEFLATE_WINDOW_BITS) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_len;
    z.next_out = dst;
    z.avail_out = (uInt)dst_len;
    int r = inflate(&z, Z_FINISH);
    int ret = ((r == Z_STREAM_END || r == Z_BUF_ERROR) && z.avail_out == 0) ? 0 : -EIO;
    inflateEnd(&z);
    return ret;
}

static int unzstd(const void *src, size_t src_len, void *dst, size_t dst_len)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return -ENOMEM;
    ZSTD_inBuffer in = {src, src_len, 0};
    ZSTD_outBuffer out = {dst, dst_len, 0};
    int ret = 0;
    /* Several frames may follow each other; stop when the cluster is full. */
    while (out.pos < out.size) {
        size_t last_in = in.pos, last_out = out.pos;
        size_t r = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(r)) {
            ret = -EIO;
            break;
        }
        if (in.pos == last_in && out.pos == last_out) {
            ret = -EIO; /* no progress: truncated input */
            break;
        }
    }
    ZSTD_freeDCtx(d);
    return ret;
}

int compress_decompress(int compression_type, const void *src, size_t src_len, void *dst,
                        size_t dst_len)
{
    switch (compression_type) {
    case QCOW2_COMPRESSION_TYPE_ZLIB:
        return inflate_raw(src, src_len, dst, dst_len);
    case QCOW2_COMPRESSION_TYPE_ZSTD:
        return unzstd(src, src_len, dst, dst_len);
    default:
        return -ENOTSUP;
    }
}

static ssize_t deflate_raw(const void *src, size_t src_len, void *dst, size_t dst_cap)
{
    z_stream z = {0};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, DEFLATE_WINDOW_BITS, 9,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_len;
    z.next_out = dst;
    z.avail_out = (uInt)dst_cap;
    int r = deflate(&z, Z_FINISH);
    ssize_t ret = r == Z_STREAM_END ? (ssize_t)(dst_cap - z.avail_out)
                                    : (r == Z_OK || r == Z_BUF_ERROR ? -ENOSPC : -EIO);
    deflateEnd(&z);
    return ret;
}

static ssize_t zstd_compress(const void *src, size_t src_len, void *dst, size_t dst_cap)
{
    size_t r = ZSTD_compress(dst, dst_cap, src, src_len, ZSTD_CLEVEL_DEFAULT);
    if (ZSTD_isError(r))
        return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
    return (ssize_t)r;
}

ssize_t compress_compress(int compression_type, const void *src, size_t src_len, void *dst,
                          size_t dst_cap)
{
    switch (compression_type) {
    case QCOW2_COMPRESSION_TYPE_ZLIB:
        return deflate_raw(src, src_len, dst, dst_cap);
    case QCOW2_COMPRESSION_TYPE_ZSTD:
        return zstd_compress(src, src_len, dst, dst_cap);
    default:
        return -ENOTSUP;
    }
}
