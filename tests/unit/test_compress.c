/* test_compress.c - src/compress.c: zlib and zstd round trips at several cluster sizes, and the
 * incompressibility pre-check: it must recognise random data, must not be fooled by data that
 * deflate or zstd can shrink (periodic, long-distance repeats, mixed halves, small alphabets,
 * alphabets that change from piece to piece), and whenever it says "incompressible", a real
 * deflate must indeed fail to save more than a sliver. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "testharness.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint8_t rnd8(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 24);
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = rnd8();
}

static void fill_text(uint8_t *p, size_t n)
{
    size_t i = 0;
    for (unsigned line = 1; i < n; line++) {
        char s[96];
        int len = snprintf(s, sizeof(s), "%u: the quick brown fox jumps over the lazy dog\n",
                           line * 7919u);
        for (int k = 0; k < len && i < n; k++)
            p[i++] = (uint8_t)s[k];
    }
}

/* Kinds of cluster content; the second field says whether the pre-check may call it
 * incompressible. */
enum kind {
    K_RANDOM,
    K_PERIOD_2K,    /* random 2 KiB block repeated: deflate's window sees it */
    K_PERIOD_16K,   /* random 16 KiB repeated: beyond deflate's 4 KiB window, zstd sees it */
    K_NEAR_REPEAT,  /* random, with n/32 bytes repeated from 3 KiB (or n/4) before */
    K_HALF_ZERO,    /* random then zeros */
    K_ALPHABET_64,  /* random bytes from 64 symbols */
    K_SHIFTING,     /* each 16 KiB random over one of 4 disjoint sets of 64 symbols: the
                     * whole is uniform, but deflate's blocks adapt to each part */
    K_SEVEN_BITS,   /* random bytes below 128 */
    K_TEXT,
    K_COUNT
};

static const char *const kind_name[K_COUNT] = {
    "random", "period 2K", "period 16K", "near repeat", "half zero",
    "64 symbols", "shifting alphabets", "7 bits", "text",
};

static void fill_kind(enum kind k, uint8_t *p, size_t n)
{
    switch (k) {
    case K_RANDOM:
        fill_random(p, n);
        break;
    case K_PERIOD_2K:
    case K_PERIOD_16K: {
        size_t period = k == K_PERIOD_2K ? 2048 : 16384;
        period = period < n / 2 ? period : n / 2;
        fill_random(p, period);
        for (size_t i = period; i < n; i++)
            p[i] = p[i - period];
        break;
    }
    case K_NEAR_REPEAT:
        fill_random(p, n);
        for (size_t d = n / 2 < 3072 ? n / 4 : 3072, i = n / 2; i < n / 2 + n / 32; i++)
            p[i] = p[i - d]; /* forwards: a run deflate encodes as matches */
        break;
    case K_HALF_ZERO:
        fill_random(p, n / 2);
        memset(p + n / 2, 0, n - n / 2);
        break;
    case K_ALPHABET_64:
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)(rnd8() & 63);
        break;
    case K_SHIFTING:
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)((rnd8() & 63) | (((i / 16384) % 4) << 6));
        break;
    case K_SEVEN_BITS:
        for (size_t i = 0; i < n; i++)
            p[i] = rnd8() & 127;
        break;
    case K_TEXT:
    case K_COUNT:
        fill_text(p, n);
        break;
    }
}

static const size_t sizes[] = {4096, 65536, 2u << 20};

/* The pre-check's verdicts, per kind and cluster size. */
static void test_precheck_verdicts(void)
{
    uint8_t *buf = malloc(2u << 20);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        for (int k = 0; k < K_COUNT; k++) {
            fill_kind((enum kind)k, buf, n);
            int verdict = compress_looks_incompressible(buf, n);
            int want = k == K_RANDOM;
            CHECK_MSG(verdict == want, "%s, %zu bytes: pre-check says %d", kind_name[k], n,
                      verdict);
        }
    }
    /* Too short to judge: always "compress it". */
    fill_random(buf, 2048);
    CHECK(compress_looks_incompressible(buf, 2048) == 0);
    free(buf);
}

/* Whenever the pre-check says incompressible, real deflate (asked with room for any output,
 * which bypasses the pre-check) saves under 2%; and random input many times over. */
static void test_precheck_sound(void)
{
    size_t n = 65536;
    uint8_t *buf = malloc(n), *out = malloc(2 * n);
    int judged = 0;
    for (int round = 0; round < 64; round++) {
        fill_random(buf, n);
        /* Sprinkle a little structure into some rounds: a biased byte every `gap`. */
        size_t gap = round % 4 == 0 ? 0 : (size_t)(16 << (round % 4));
        for (size_t i = 0; gap && i < n; i += gap)
            buf[i] = 0;
        if (!compress_looks_incompressible(buf, n))
            continue;
        judged++;
        ssize_t clen = compress_compress(NULL, QCOW2_COMPRESSION_TYPE_ZLIB, buf, n, out, 2 * n);
        CHECK_MSG(clen > 0 && (size_t)clen * 100 >= n * 98,
                  "round %d: called incompressible but deflate made %zd of %zu bytes", round,
                  clen, n);
    }
    CHECK_MSG(judged >= 16, "only %d of 64 random clusters judged incompressible", judged);
    free(buf);
    free(out);
}

/* Compress with a cap of one byte less than the input (what a cluster write asks) and
 * decompress; incompressible input reports -ENOSPC. */
static void test_round_trip(int type, struct compress_cache *cache)
{
    size_t max = 2u << 20;
    uint8_t *buf = malloc(max), *out = malloc(max), *back = malloc(max);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        for (int k = 0; k < K_COUNT; k++) {
            fill_kind((enum kind)k, buf, n);
            ssize_t clen = compress_compress(cache, type, buf, n, out, n - 1);
            if (k == K_RANDOM) {
                CHECK_MSG(clen == -ENOSPC, "random, %zu bytes: %zd", n, clen);
                continue;
            }
            /* Either outcome is right where the compressor cannot see the structure:
             * deflate's 4 KiB window a 16 KiB period, zstd's one literal table per 128 KiB
             * block the shifting alphabets. A result must decompress all the same. */
            if (clen == -ENOSPC &&
                ((k == K_PERIOD_16K && type == QCOW2_COMPRESSION_TYPE_ZLIB && n > 4096) ||
                 (k == K_SHIFTING && type == QCOW2_COMPRESSION_TYPE_ZSTD)))
                continue;
            CHECK_MSG(clen > 0 && (size_t)clen < n, "%s, %zu bytes: %zd", kind_name[k], n, clen);
            if (clen <= 0)
                continue;
            memset(back, 0xa5, n);
            int ret = compress_decompress(cache, type, out, (size_t)clen, back, n);
            CHECK_MSG(ret == 0 && memcmp(back, buf, n) == 0, "%s, %zu bytes: round trip",
                      kind_name[k], n);
        }
    }
    free(buf);
    free(out);
    free(back);
}

/* Garbage and truncated input fail cleanly; the context given back still works. */
static void test_bad_input(struct compress_cache *cache)
{
    size_t n = 65536;
    uint8_t *buf = malloc(n), *out = malloc(n), *back = malloc(n);
    fill_text(buf, n);
    ssize_t clen = compress_compress(cache, QCOW2_COMPRESSION_TYPE_ZSTD, buf, n, out, n - 1);
    CHECK(clen > 16);
    if (clen > 16) {
        CHECK(compress_decompress(cache, QCOW2_COMPRESSION_TYPE_ZSTD, out, (size_t)clen / 2, back,
                                  n) < 0);
        uint8_t junk[512];
        fill_random(junk, sizeof(junk));
        CHECK(compress_decompress(cache, QCOW2_COMPRESSION_TYPE_ZSTD, junk, sizeof(junk), back,
                                  n) < 0);
        memset(back, 0, n);
        CHECK(compress_decompress(cache, QCOW2_COMPRESSION_TYPE_ZSTD, out, (size_t)clen, back,
                                  n) == 0 &&
              memcmp(back, buf, n) == 0);
    }
    free(buf);
    free(out);
    free(back);
}

int main(void)
{
    RUN("pre-check verdicts per kind and size", test_precheck_verdicts());
    RUN("pre-check agrees with real deflate", test_precheck_sound());
    RUN("zlib round trips", test_round_trip(QCOW2_COMPRESSION_TYPE_ZLIB, NULL));
    RUN("zstd round trips", test_round_trip(QCOW2_COMPRESSION_TYPE_ZSTD, NULL));
    /* The same through a context cache: contexts are reused from one cluster to the next,
     * also after a failed (incompressible) attempt and after a failed decompression. */
    struct compress_cache *cache = compress_cache_new();
    RUN("zstd round trips, cached contexts",
        test_round_trip(QCOW2_COMPRESSION_TYPE_ZSTD, cache));
    RUN("zstd round trips, cached contexts again",
        test_round_trip(QCOW2_COMPRESSION_TYPE_ZSTD, cache));
    RUN("a failed decompression leaves a usable context", test_bad_input(cache));
    compress_cache_free(cache);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
