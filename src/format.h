/* format.h - the qcow2 on-disk layout, named as docs/interop/qcow2.rst names it.
 * Header fields and offsets, feature bits, L1/L2/refcount entry masks, header extension magics,
 * and the only big-endian helpers in the project. Pure definitions: no I/O, no state. */
#ifndef QCOW2_FORMAT_H
#define QCOW2_FORMAT_H

#include <stdint.h>
#include <string.h>

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MIN_CLUSTER_BITS_EXTL2 14 /* subclusters must be >= 512 bytes */

#define QCOW2_V2_HEADER_LENGTH 72
#define QCOW2_V3_HEADER_MIN_LENGTH 104
#define QCOW2_V3_HEADER_LENGTH 112 /* what we (and QEMU) write */

/* Fixed header field offsets. */
#define HDR_MAGIC 0
#define HDR_VERSION 4
#define HDR_BACKING_FILE_OFFSET 8
#define HDR_BACKING_FILE_SIZE 16
#define HDR_CLUSTER_BITS 20
#define HDR_SIZE 24
#define HDR_CRYPT_METHOD 32
#define HDR_L1_SIZE 36
#define HDR_L1_TABLE_OFFSET 40
#define HDR_REFCOUNT_TABLE_OFFSET 48
#define HDR_REFCOUNT_TABLE_CLUSTERS 56
#define HDR_NB_SNAPSHOTS 60
#define HDR_SNAPSHOTS_OFFSET 64
#define HDR_INCOMPATIBLE_FEATURES 72
#define HDR_COMPATIBLE_FEATURES 80
#define HDR_AUTOCLEAR_FEATURES 88
#define HDR_REFCOUNT_ORDER 96
#define HDR_HEADER_LENGTH 100
#define HDR_COMPRESSION_TYPE 104

#define QCOW2_MAX_BACKING_FILE_SIZE 1023
#define QCOW2_MAX_BACKING_FMT_LEN 15
#define QCOW2_MAX_L1_BYTES (32u * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES (8u * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS 65536
#define QCOW2_MAX_BITMAPS 65535
#define QCOW2_MAX_BITMAP_DIRECTORY_SIZE (64u * 1024 * 1024)
/* The smaller limits of untrusted mode (qcow2.h, "Untrusted images", documents them). */
#define QCOW2_UNTRUSTED_MAX_L1_BYTES (4u * 1024 * 1024)
#define QCOW2_UNTRUSTED_MAX_REFTABLE_BYTES (1u * 1024 * 1024)
#define QCOW2_UNTRUSTED_MAX_SNAPSHOTS 1024
#define QCOW2_UNTRUSTED_MAX_BITMAPS 64
#define QCOW2_UNTRUSTED_MAX_BITMAP_DIRECTORY_SIZE (1u * 1024 * 1024)
#define QCOW2_UNTRUSTED_MAX_UNKNOWN_EXTS 64
#define QCOW2_MAX_CLUSTER_OFFSET ((1ull << 56) - 1)

/* crypt_method */
#define QCOW2_CRYPT_NONE 0
#define QCOW2_CRYPT_AES 1
#define QCOW2_CRYPT_LUKS 2

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)
/* Which of these bits we read and which our writes keep true: the feature table in
 * header.c (header_feature_mask). */

/* Feature name table entry types. */
#define QCOW2_FEAT_TYPE_INCOMPATIBLE 0
#define QCOW2_FEAT_TYPE_COMPATIBLE 1
#define QCOW2_FEAT_TYPE_AUTOCLEAR 2
#define QCOW2_FEATURE_NAME_ENTRY_SIZE 48
#define QCOW2_FEATURE_NAME_LEN 46

/* compression_type */
#define QCOW2_COMPRESSION_TYPE_ZLIB 0
#define QCOW2_COMPRESSION_TYPE_ZSTD 1

/* Header extension magics. */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO_HEADER 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* L1 entries. */
#define L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define L1E_RESERVED_MASK 0x7f000000000001ffull
/* L2 entries (the first 64 bits; with extended L2 a 64-bit subcluster bitmap follows). */
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0)
#define L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define L2E_STD_RESERVED_MASK 0x3f000000000001feull
/* Refcount table entries. */
#define REFT_OFFSET_MASK 0xfffffffffffffe00ull
#define REFT_RESERVED_MASK 0x1ffull

/* Extended L2 subcluster bitmap. */
#define QCOW2_SUBCLUSTERS_PER_CLUSTER 32
#define QCOW2_SC_ALLOC(x) (1ull << (x))
#define QCOW2_SC_ZERO(x) (1ull << ((x) + 32))
/* Bits for subclusters [x, y), 0 <= x <= y <= 32. */
#define QCOW2_SC_ALLOC_RANGE(x, y) \
    ((y) - (x) >= 32 ? 0xffffffffull : (((1ull << ((y) - (x))) - 1) << (x)))
#define QCOW2_SC_ZERO_RANGE(x, y) (QCOW2_SC_ALLOC_RANGE(x, y) << 32)
#define QCOW2_SC_ALL_ALLOC 0x00000000ffffffffull
#define QCOW2_SC_ALL_ZERO 0xffffffff00000000ull

/* Compressed data is counted in these sectors. */
#define QCOW2_COMPRESSED_SECTOR_SIZE 512

/* Snapshot table entry (fixed part). */
#define QCOW2_SNAPSHOT_HEADER_SIZE 40

/* Bitmap directory entry (spec "Bitmap directory"): fields of the fixed part, flags, type. */
#define BME_TABLE_OFFSET 0
#define BME_TABLE_SIZE 8
#define BME_FLAGS 12
#define BME_TYPE 16
#define BME_GRANULARITY_BITS 17
#define BME_NAME_SIZE 18
#define BME_EXTRA_DATA_SIZE 20
#define BME_HEADER_SIZE 24
#define BME_FLAG_IN_USE 0x1u
#define BME_FLAG_AUTO 0x2u
#define BME_RESERVED_FLAGS 0xfffffffcu
#define BME_TYPE_DIRTY_TRACKING 1
/* The limits QEMU puts on bitmaps (block/qcow2-bitmap.c). */
#define BME_MIN_GRANULARITY_BITS 9
#define BME_MAX_GRANULARITY_BITS 31
#define BME_MAX_NAME_SIZE 1023
#define BME_MAX_TABLE_SIZE 0x8000000u
#define BME_MAX_PHYS_SIZE 0x20000000ull /* 512 MiB of bitmap data */
#define BME_MAX_BITMAPS 65535u
#define BME_MAX_DIRECTORY_SIZE (1024ull * BME_MAX_BITMAPS)
/* Bitmap table entries. */
#define BME_TABLE_ENTRY_SIZE 8
#define BME_TABLE_ENTRY_OFFSET_MASK 0x00fffffffffffe00ull
#define BME_TABLE_ENTRY_RESERVED_MASK 0xff000000000001feull
#define BME_TABLE_ENTRY_ALL_ONES 0x1ull

/* Big-endian helpers: the only place that knows the byte order. One unaligned load or store
 * and a byte swap (a single instruction each), not a byte at a time: the L2 and refcount
 * entries of every request go through here. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define QCOW2_BE16(v) (v)
#define QCOW2_BE32(v) (v)
#define QCOW2_BE64(v) (v)
#else
#define QCOW2_BE16(v) __builtin_bswap16(v)
#define QCOW2_BE32(v) __builtin_bswap32(v)
#define QCOW2_BE64(v) __builtin_bswap64(v)
#endif
static inline uint16_t be16_get(const void *p)
{
    uint16_t v;
    __builtin_memcpy(&v, p, sizeof(v));
    return QCOW2_BE16(v);
}
static inline uint32_t be32_get(const void *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, sizeof(v));
    return QCOW2_BE32(v);
}
static inline uint64_t be64_get(const void *p)
{
    uint64_t v;
    __builtin_memcpy(&v, p, sizeof(v));
    return QCOW2_BE64(v);
}
static inline void be16_put(void *p, uint16_t v)
{
    v = QCOW2_BE16(v);
    __builtin_memcpy(p, &v, sizeof(v));
}
static inline void be32_put(void *p, uint32_t v)
{
    v = QCOW2_BE32(v);
    __builtin_memcpy(p, &v, sizeof(v));
}
static inline void be64_put(void *p, uint64_t v)
{
    v = QCOW2_BE64(v);
    __builtin_memcpy(p, &v, sizeof(v));
}

#endif /* QCOW2_FORMAT_H */
