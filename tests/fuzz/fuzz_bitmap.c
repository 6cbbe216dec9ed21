/* fuzz_bitmap.c - libFuzzer target: the bitmap directory parser (src/bitmap.c) on arbitrary
 * bytes. The input is a 16-byte preamble (the header's nb_bitmaps, a cluster_bits byte
 * folded into 9..21, three unused bytes, the disk size) and then the directory itself, which
 * bitmap_parse_directory() gets exactly (so ASan sees any read past it). A directory that
 * parses must satisfy what the loader relies on: the announced count, names of 1..1023 bytes,
 * granularities 2^9..2^31, cluster-aligned tables of 1..0x8000000 entries. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREAMBLE 16

static void require(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_bitmap: a parsed directory breaks: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREAMBLE)
        return 0;
    uint32_t nb = be32_get(data);
    unsigned cluster_bits = QCOW2_MIN_CLUSTER_BITS +
                            data[4] % (QCOW2_MAX_CLUSTER_BITS - QCOW2_MIN_CLUSTER_BITS + 1);
    uint64_t disk_size = be64_get(data + 8) & ((1ull << 62) - 1);
    size_t len = size - PREAMBLE;
    uint8_t *dir = malloc(len ? len : 1);
    if (!dir)
        return 0;
    memcpy(dir, data + PREAMBLE, len);
    struct bitmap_dir_entry *e = NULL;
    char err[256];
    if (bitmap_parse_directory(dir, len, nb, cluster_bits, disk_size, &e, err, sizeof(err)) ==
        0) {
        require(e != NULL && nb > 0, "no entries");
        for (uint32_t i = 0; i < nb; i++) {
            size_t n = strlen(e[i].name);
            require(n >= 1 && n <= 1023, "name length");
            require(e[i].gran_bits >= 9 && e[i].gran_bits <= 31, "granularity");
            require(e[i].table_offset && !(e[i].table_offset & ((1ull << cluster_bits) - 1)),
                    "table offset");
            require(e[i].table_size >= 1 && e[i].table_size <= 0x8000000u, "table size");
        }
        bitmap_dir_free(e, nb);
    } else {
        require(e == NULL && err[0] != '\0', "a failure without a message");
    }
    free(dir);
    return 0;
}
