/* fuzz_header.c - libFuzzer target: the header parser (src/header.c) on arbitrary bytes.
 * The input is cluster 0 of an image: header_parse_fixed() gets exactly the input bytes (so
 * ASan sees any read past them), header_parse_extensions() the input zero-padded to the
 * cluster size the header names. A header that parses is serialized again, and what we write
 * must parse back to the same fields. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void same_or_die(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_header: serialized header differs in %s\n", what);
        abort();
    }
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qcow2_header h;
    char err[256];
    uint8_t *fixed = malloc(size ? size : 1);
    if (!fixed)
        return 0;
    memcpy(fixed, data, size);
    int ret = header_parse_fixed(fixed, size, &h, err, sizeof(err));
    free(fixed);
    if (ret < 0) {
        header_free(&h);
        return 0;
    }
    size_t cs = (size_t)1 << h.cluster_bits;
    uint8_t *c0 = calloc(1, cs);
    if (!c0) {
        header_free(&h);
        return 0;
    }
    memcpy(c0, data, MIN(size, cs));
    ret = header_parse_extensions(c0, cs, &h, err, sizeof(err));
    if (ret == 0) {
        (void)header_feature_name(&h, QCOW2_FEAT_TYPE_INCOMPATIBLE, 5);
        /* Round trip: what we write must read back as the same header. */
        uint8_t *out = calloc(1, cs);
        struct qcow2_header h2;
        if (out && header_serialize(&h, out, cs, err, sizeof(err)) == 0) {
            ret = header_parse_fixed(out, cs, &h2, err, sizeof(err));
            if (ret == 0)
                ret = header_parse_extensions(out, cs, &h2, err, sizeof(err));
            if (ret < 0) {
                fprintf(stderr, "fuzz_header: a header we serialized does not parse: %s\n",
                        err);
                abort();
            }
            same_or_die(h2.version == h.version && h2.cluster_bits == h.cluster_bits &&
                            h2.size == h.size && h2.l1_size == h.l1_size &&
                            h2.l1_table_offset == h.l1_table_offset &&
                            h2.refcount_table_offset == h.refcount_table_offset &&
                            h2.refcount_table_clusters == h.refcount_table_clusters &&
                            h2.nb_snapshots == h.nb_snapshots &&
                            h2.snapshots_offset == h.snapshots_offset,
                        "fixed fields");
            same_or_die(h2.incompatible_features == h.incompatible_features &&
                            h2.compatible_features == h.compatible_features &&
                            h2.autoclear_features == h.autoclear_features &&
                            h2.refcount_order == h.refcount_order &&
                            h2.compression_type == h.compression_type,
                        "feature fields");
            same_or_die(same_str(h2.backing_file, h.backing_file), "backing file");
            same_or_die(same_str(h2.backing_fmt, h.backing_fmt), "backing format");
            same_or_die(same_str(h2.data_file, h.data_file), "data file");
            same_or_die(h2.nb_unknown_exts == h.nb_unknown_exts, "unknown extensions");
            header_free(&h2);
        }
        free(out);
    }
    free(c0);
    header_free(&h);
    return 0;
}
