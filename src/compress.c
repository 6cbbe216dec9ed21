/* compress.c - cluster compression: raw deflate (qcow2's "zlib") and zstd.
 * Functions over buffers; the only state is an optional cache of zstd contexts (struct
 * compress_cache, owned by an image), because making a zstd context costs as much as
 * compressing a cluster. Decompression stops once the output cluster is full, because the
 * stored range may end with sector padding or the start of the next compressed cluster.
 * Calls nothing else in the library. */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#define DEFLATE_WINDOW_BITS (-12) /* raw deflate, 4 KiB window: what QEMU writes */

/* ---- the context cache ---- */

#define COMPRESS_CACHE_MAX 16 /* contexts kept per kind: more threads make their own */

struct compress_cache {
    pthread_mutex_t lock;
    ZSTD_CCtx *cctx[COMPRESS_CACHE_MAX];
    unsigned nb_cctx;
    ZSTD_DCtx *dctx[COMPRESS_CACHE_MAX];
    unsigned nb_dctx;
};

struct compress_cache *compress_cache_new(void)
{
    struct compress_cache *c = calloc(1, sizeof(*c));
    if (c)
        pthread_mutex_init(&c->lock, NULL);
    return c;
}

void compress_cache_free(struct compress_cache *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->nb_cctx; i++)
        ZSTD_freeCCtx(c->cctx[i]);
    for (unsigned i = 0; i < c->nb_dctx; i++)
        ZSTD_freeDCtx(c->dctx[i]);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* A context from the cache, or a new one (NULL when out of memory). */
static void *cache_take(struct compress_cache *c, bool compress)
{
    void *ctx = NULL;
    if (c) {
        pthread_mutex_lock(&c->lock);
        if (compress && c->nb_cctx)
            ctx = c->cctx[--c->nb_cctx];
        else if (!compress && c->nb_dctx)
            ctx = c->dctx[--c->nb_dctx];
        pthread_mutex_unlock(&c->lock);
    }
    if (!ctx)
        return compress ? (void *)ZSTD_createCCtx() : (void *)ZSTD_createDCtx();
    /* A context that failed mid-frame last time starts clean. */
    if (!compress)
        ZSTD_DCtx_reset(ctx, ZSTD_reset_session_only);
    return ctx;
}

/* Give a context back to the cache, or free it when the cache is full (or absent). */
static void cache_give(struct compress_cache *c, bool compress, void *ctx)
{
    if (c && ctx) {
        pthread_mutex_lock(&c->lock);
        if (compress && c->nb_cctx < COMPRESS_CACHE_MAX) {
            c->cctx[c->nb_cctx++] = ctx;
            ctx = NULL;
        } else if (!compress && c->nb_dctx < COMPRESS_CACHE_MAX) {
            c->dctx[c->nb_dctx++] = ctx;
            ctx = NULL;
        }
        pthread_mutex_unlock(&c->lock);
    }
    if (compress)
        ZSTD_freeCCtx(ctx);
    else
        ZSTD_freeDCtx(ctx);
}

/* ---- decompression ---- */

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

static int unzstd(struct compress_cache *cache, const void *src, size_t src_len, void *dst,
                  size_t dst_len)
{
    ZSTD_DCtx *d = cache_take(cache, false);
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
    cache_give(cache, false, d);
    return ret;
}

int compress_decompress(struct compress_cache *cache, int compression_type, const void *src,
                        size_t src_len, void *dst, size_t dst_len)
{
    switch (compression_type) {
    case QCOW2_COMPRESSION_TYPE_ZLIB:
        return inflate_raw(src, src_len, dst, dst_len);
    case QCOW2_COMPRESSION_TYPE_ZSTD:
        return unzstd(cache, src, src_len, dst, dst_len);
    default:
        return -ENOTSUP;
    }
}

/* Incompressibility pre-check. deflate spends about twice as long on random or already
 * compressed data as on text, only to fail; one cheap pass recognises most such clusters.
 * It is conservative: it says "incompressible" only when neither of deflate's two tools could
 * help. Literal coding: every 4 KiB piece has a near-uniform byte histogram (sum of squared
 * counts at most 1.1 x a uniform one's: collision entropy >= 7.86 bits per byte, so Huffman
 * codes cannot save 2%; random data sits at 1.06, > 6 standard deviations away). String
 * matching: a greedy scan for repeated 4-byte strings finds them covering less than 1/256 of
 * the cluster. Its 4096-entry table remembers positions within deflate's 4 KiB window with
 * probability > 1/e, and a repeat found once is followed to its end, so repeats deflate can
 * use are found; repeats farther away may be missed, which is why only zlib uses the check.
 * A wrong "compressible" only costs time; a wrong "incompressible" could cost at most ~2% of
 * one cluster's size, never data. */
#define PRECHECK_PIECE 4096u
#define PRECHECK_HASH_BITS 12

static int piece_is_uniform(const uint8_t *p, size_t n)
{
    uint32_t count[256] = {0};
    for (size_t i = 0; i < n; i++)
        count[p[i]]++;
    uint64_t sum = 0;
    for (int b = 0; b < 256; b++)
        sum += (uint64_t)count[b] * count[b];
    /* sum / (n * n / 256) <= 1.1 */
    return 2560 * sum <= 11 * (uint64_t)n * n;
}

static uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Bytes covered by repeats of earlier 4-byte strings (greedy, one candidate per hash), counting
 * stops at `limit`. A repeat found once is extended as far as it goes, so long-period data is
 * caught even though the small table forgets most positions. */
static size_t repeated_bytes(const uint8_t *p, size_t n, size_t limit)
{
    uint32_t last[1u << PRECHECK_HASH_BITS] = {0}; /* position + 1, 0 = none */
    size_t covered = 0, i = 0;
    while (i + 4 <= n && covered < limit) {
        uint32_t v = load32(p + i);
        uint32_t h = (v * 2654435761u) >> (32 - PRECHECK_HASH_BITS);
        size_t cand = last[h];
        last[h] = (uint32_t)i + 1;
        if (cand && load32(p + cand - 1) == v) {
            size_t len = 4;
            while (i + len < n && p[cand - 1 + len] == p[i + len])
                len++;
            covered += len;
            i += len;
        } else {
            i++;
        }
    }
    return covered;
}

int compress_looks_incompressible(const void *src, size_t len)
{
    const uint8_t *p = src;
    if (len < PRECHECK_PIECE)
        return 0; /* too few bytes for the histogram test to mean anything */
    for (size_t off = 0; off + PRECHECK_PIECE <= len; off += PRECHECK_PIECE) {
        if (!piece_is_uniform(p + off, PRECHECK_PIECE))
            return 0;
    }
    size_t limit = len / 256;
    return repeated_bytes(p, len, limit) < limit;
}

static ssize_t deflate_raw(const void *src, size_t src_len, void *dst, size_t dst_cap)
{
    /* Only when the caller needs a saving (output smaller than the input) can a pre-check
     * stand in for the real attempt. zstd needs none: it bails out of random data quickly. */
    if (dst_cap < src_len && compress_looks_incompressible(src, src_len))
        return -ENOSPC;
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

static ssize_t zstd_compress(struct compress_cache *cache, const void *src, size_t src_len,
                             void *dst, size_t dst_cap)
{
    ZSTD_CCtx *c = cache_take(cache, true);
    if (!c)
        return -ENOMEM;
    /* compressCCtx starts a new frame whatever the context did before. */
    size_t r = ZSTD_compressCCtx(c, dst, dst_cap, src, src_len, ZSTD_CLEVEL_DEFAULT);
    cache_give(cache, true, c);
    if (ZSTD_isError(r))
        return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
    return (ssize_t)r;
}

ssize_t compress_compress(struct compress_cache *cache, int compression_type, const void *src,
                          size_t src_len, void *dst, size_t dst_cap)
{
    switch (compression_type) {
    case QCOW2_COMPRESSION_TYPE_ZLIB:
        return deflate_raw(src, src_len, dst, dst_cap);
    case QCOW2_COMPRESSION_TYPE_ZSTD:
        return zstd_compress(cache, src, src_len, dst, dst_cap);
    default:
        return -ENOTSUP;
    }
}
