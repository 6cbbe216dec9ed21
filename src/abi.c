/* abi.c - the boundary between the caller's version of a public struct and ours.
 * Owns the struct_size rules of include/qcow2.h ("Extensible structs"): which sizes are valid,
 * copying options in (missing fields at their defaults, unknown fields refused unless zero)
 * and results out (never past the caller's struct_size). Knows no field by name: the entry
 * points in image.c, create.c, io.c and check.c work on full structs of this library's size. */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* Bytes of a struct up to the end of its member `last`. */
#define SIZE_THROUGH(type, last) (offsetof(type, last) + sizeof(((type *)0)->last))

/* The rules that keep old callers working when a struct grows: struct_size comes first, and a
 * struct never ends in padding, so a field appended later starts at or after every older
 * sizeof and no older struct_size covers part of it. Appending a field means updating `last`
 * below; if the assertion then fails, pad the struct explicitly (a named reserved field). */
#define ABI_STRUCT(var, type, last, first_last)                                             \
    _Static_assert(offsetof(type, struct_size) == 0, #type ": struct_size must come first"); \
    _Static_assert(sizeof(type) == SIZE_THROUGH(type, last),                               \
                   #type " must not end in padding (see abi.c)");                          \
    const struct abi_struct var = {#type, sizeof(type), SIZE_THROUGH(type, first_last)}

/* For each struct: its last member now, and its last member in the first published version
 * (libqcow2.so.0 as of 0.1.0), which fixes the smallest struct_size a caller can have and
 * never changes. */
ABI_STRUCT(abi_open_opts, struct qcow2_open_opts, snapshot_name, repair);
ABI_STRUCT(abi_create_opts, struct qcow2_create_opts, data_file, data_file);
ABI_STRUCT(abi_extent, struct qcow2_extent, filename, filename);
ABI_STRUCT(abi_info, struct qcow2_info, unknown_autoclear_features, autoclear_features);
ABI_STRUCT(abi_bitmap_info, struct qcow2_bitmap_info, recording, recording);
ABI_STRUCT(abi_convert_opts, struct qcow2_convert_opts, opaque, opaque);
ABI_STRUCT(abi_check_result, struct qcow2_check_result, compressed_clusters,
           compressed_clusters);
ABI_STRUCT(abi_compare_result, struct qcow2_compare_result, failed_step, failed_step);
ABI_STRUCT(abi_measure_result, struct qcow2_measure_result, bitmaps, bitmaps);
ABI_STRUCT(abi_snapshot_info, struct qcow2_snapshot_info, disk_size, disk_size);
ABI_STRUCT(abi_snapshot_opts, struct qcow2_snapshot_opts, icount, icount);
/* New in 0.2: first published with these members. */
ABI_STRUCT(abi_commit_opts, struct qcow2_commit_opts, progress_opaque, progress_opaque);
ABI_STRUCT(abi_rebase_opts, struct qcow2_rebase_opts, progress_opaque, progress_opaque);

/* Far above any struct we will have; a struct_size beyond it is garbage (an uninitialised
 * struct), not a newer caller, and is refused before anything is read past the known size. */
#define ABI_STRUCT_SIZE_MAX 4096u

static size_t abi_struct_size(const void *s)
{
    size_t n;
    memcpy(&n, s, sizeof(n)); /* the caller's struct may be of any version: no typed access */
    return n;
}

static bool abi_size_valid(const struct abi_struct *t, size_t n)
{
    return n >= t->first_size && n <= ABI_STRUCT_SIZE_MAX && n % sizeof(size_t) == 0;
}

static void abi_size_message(const struct abi_struct *t, size_t n, char *msg, size_t len)
{
    /* "struct qcow2_info" is initialised by QCOW2_INFO_INIT */
    char init[64];
    size_t i = 0;
    for (const char *p = t->name + strlen("struct "); *p && i < sizeof(init) - 1; p++)
        init[i++] = (char)toupper((unsigned char)*p);
    init[i] = '\0';
    snprintf(msg, len, "%s: struct_size %zu is not a size this struct ever had (initialise it "
                       "with %s_INIT)",
             t->name, n, init);
}

int abi_copy_in(const struct abi_struct *t, void *ours, const void *theirs, char *err,
                size_t errlen)
{
    memset(ours, 0, t->size);
    size_t n = theirs ? abi_struct_size(theirs) : t->size;
    if (theirs) {
        if (!abi_size_valid(t, n)) {
            char msg[QCOW2_ERROR_MAX];
            abi_size_message(t, n, msg, sizeof(msg));
            return format_error(err, errlen, -EINVAL, "%s", msg);
        }
        memcpy(ours, theirs, MIN(n, t->size));
        /* A newer program's options that this library does not know: fine at their zero
         * defaults, refused when set (ignoring them would do something else than asked). */
        for (size_t i = t->size; i < n; i++)
            if (((const unsigned char *)theirs)[i])
                return format_error(err, errlen, -ENOTSUP,
                                    "%s: the program sets a field at byte %zu, which this "
                                    "libqcow2 (%s, %zu-byte struct) does not know",
                                    t->name, i, QCOW2_VERSION_STRING, t->size);
    }
    memcpy(ours, &t->size, sizeof(t->size)); /* from here on, a full struct of ours */
    return 0;
}

int abi_check_out(struct qcow2_image *img, const struct abi_struct *t, const void *theirs)
{
    if (!theirs)
        return set_error(img, -EINVAL, "%s: no struct given", t->name);
    size_t n = abi_struct_size(theirs);
    if (!abi_size_valid(t, n)) {
        char msg[QCOW2_ERROR_MAX];
        abi_size_message(t, n, msg, sizeof(msg));
        return set_error(img, -EINVAL, "%s", msg);
    }
    return 0;
}

void abi_copy_out(const struct abi_struct *t, void *theirs, const void *ours)
{
    /* struct_size stays the caller's; fields past it do not exist in the caller's struct,
     * fields past ours (a newer caller) are left as the caller set them: zero by INIT. */
    size_t n = MIN(abi_struct_size(theirs), t->size);
    memcpy((unsigned char *)theirs + sizeof(size_t), (const unsigned char *)ours + sizeof(size_t),
           n - sizeof(size_t));
}

int abi_copy_back(const struct abi_struct *t, void *theirs, const void *ours, const char *what,
                  char *err, size_t errlen)
{
    size_t n = MIN(abi_struct_size(theirs), t->size);
    for (size_t i = n; i < t->size; i++)
        if (((const unsigned char *)ours)[i])
            return format_error(err, errlen, -ENOTSUP,
                                "%s: this program's %s (%zu bytes) has no field for it: it "
                                "was built for an older libqcow2",
                                what, t->name, n);
    abi_copy_out(t, theirs, ours);
    return 0;
}

void qcow2_open_opts_init(struct qcow2_open_opts *opts)
{
    *opts = QCOW2_OPEN_OPTS_INIT;
}
