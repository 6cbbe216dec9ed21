/* testshapes.c - the write-path matrix's requests and states (see testshapes.h). */
#include "testshapes.h"

#include <stdio.h>
#include <stdlib.h>

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

const struct shape_geom geoms[G_COUNT] = {
    [G_1SC_CL_TO_SC] = {"1sc_cl_to_sc", 0x0, 0x800},
    [G_1SC_CL_TO_MID] = {"1sc_cl_to_mid", 0x0, 0x2bc},
    [G_1SC_SC_TO_SC] = {"1sc_sc_to_sc", 0x1800, 0x800},
    [G_1SC_SC_TO_MID] = {"1sc_sc_to_mid", 0x1800, 0x2bc},
    [G_1SC_SC_TO_CL] = {"1sc_sc_to_cl", 0xf800, 0x800},
    [G_1SC_MID_TO_SC] = {"1sc_mid_to_sc", 0x1a00, 0x600},
    [G_1SC_MID_TO_MID] = {"1sc_mid_to_mid", 0x1a00, 0x3e8},
    [G_1SC_MID_TO_CL] = {"1sc_mid_to_cl", 0xfa00, 0x600},
    [G_NSC_CL_TO_SC] = {"nsc_cl_to_sc", 0x0, 0x2800},
    [G_NSC_CL_TO_MID] = {"nsc_cl_to_mid", 0x0, 0x292c},
    [G_NSC_CL_TO_CL] = {"nsc_cl_to_cl", 0x0, 0x10000},
    [G_NSC_SC_TO_SC] = {"nsc_sc_to_sc", 0x1800, 0x2000},
    [G_NSC_SC_TO_MID] = {"nsc_sc_to_mid", 0x1800, 0x1be8},
    [G_NSC_SC_TO_CL] = {"nsc_sc_to_cl", 0x2800, 0xd800},
    [G_NSC_MID_TO_SC] = {"nsc_mid_to_sc", 0x1a00, 0x1e00},
    [G_NSC_MID_TO_MID] = {"nsc_mid_to_mid", 0x1a00, 0x1a00},
    [G_NSC_MID_TO_CL] = {"nsc_mid_to_cl", 0x2864, 0xd79c},
    [G_X1_CL_TO_CL] = {"x1_cl_to_cl", 0x0, 0x20000},
    [G_X1_CL_TO_SC] = {"x1_cl_to_sc", 0x0, 0x11800},
    [G_X1_CL_TO_MID] = {"x1_cl_to_mid", 0x0, 0x11abc},
    [G_X1_SC_TO_CL] = {"x1_sc_to_cl", 0xe800, 0x11800},
    [G_X1_SC_TO_SC] = {"x1_sc_to_sc", 0xe800, 0x3000},
    [G_X1_SC_TO_MID] = {"x1_sc_to_mid", 0xe800, 0x32bc},
    [G_X1_MID_TO_CL] = {"x1_mid_to_cl", 0xe92c, 0x116d4},
    [G_X1_MID_TO_SC] = {"x1_mid_to_sc", 0xe92c, 0x2ed4},
    [G_X1_MID_TO_MID] = {"x1_mid_to_mid", 0xe92c, 0x3190},
    [G_X2_CL_TO_CL] = {"x2_cl_to_cl", 0x0, 0x30000},
    [G_X2_CL_TO_SC] = {"x2_cl_to_sc", 0x0, 0x22000},
    [G_X2_CL_TO_MID] = {"x2_cl_to_mid", 0x0, 0x2212c},
    [G_X2_SC_TO_CL] = {"x2_sc_to_cl", 0xa000, 0x26000},
    [G_X2_SC_TO_SC] = {"x2_sc_to_sc", 0xa000, 0x18000},
    [G_X2_SC_TO_MID] = {"x2_sc_to_mid", 0xa000, 0x1812c},
    [G_X2_MID_TO_CL] = {"x2_mid_to_cl", 0xa064, 0x25f9c},
    [G_X2_MID_TO_SC] = {"x2_mid_to_sc", 0xa064, 0x17f9c},
    [G_X2_MID_TO_MID] = {"x2_mid_to_mid", 0xa064, 0x180c8},
};

const char *const state_names[ST_COUNT] = {
    "unalloc", "normal", "partial", "zero_plain", "zero_alloc", "compressed", "shared",
    "shared_partial", "mixed", "reversed",
};

size_t shape_prep_commands(char *out, size_t len, enum state st, bool ext, uint64_t r,
                           const char *src)
{
    size_t n = 0;
#define ADD(...) (n += (size_t)snprintf(out + n, n < len ? len - n : 0, __VA_ARGS__))
#define WRITE(off, l) ADD("write -q %s %llu %llu;", src, ull(off), ull(l))
#define ZERO(off, l) ADD("write -q -z %llu %llu;", ull(off), ull(l))
    /* One cluster in the PARTIAL (extended) or NORMAL (standard) state. */
#define PARTIAL_OR_NORMAL(c)                                                               \
    do {                                                                                   \
        if (ext) {                                                                         \
            WRITE((c) + 2 * SC, 2 * SC);                                                   \
            WRITE((c) + 28 * SC, 2 * SC);                                                  \
            ZERO((c) + 10 * SC, 2 * SC);                                                   \
        } else {                                                                           \
            WRITE((c), CS);                                                                \
        }                                                                                  \
    } while (0)
    out[0] = 0;
    switch (st) {
    case ST_UNALLOC:
        break;
    case ST_NORMAL:
    case ST_SHARED:
        WRITE(r, 3 * CS);
        break;
    case ST_PARTIAL:
    case ST_SHARED_PARTIAL:
        for (unsigned k = 0; k < 3; k++)
            PARTIAL_OR_NORMAL(r + k * CS);
        break;
    case ST_ZERO_PLAIN:
        ZERO(r, 3 * CS);
        break;
    case ST_ZERO_ALLOC:
        WRITE(r, 3 * CS);
        ZERO(r, 3 * CS);
        break;
    case ST_COMPRESSED:
        for (unsigned k = 0; k < 3; k++)
            ADD("write -q -c %s %llu %u;", src, ull(r + k * CS), CS);
        break;
    case ST_MIXED:
        PARTIAL_OR_NORMAL(r);
        WRITE(r + 2 * CS, CS);
        ZERO(r + 2 * CS, CS);
        break;
    case ST_REVERSED:
        for (int k = 2; k >= 0; k--)
            PARTIAL_OR_NORMAL(r + (unsigned)k * CS);
        break;
    case ST_COUNT:
        break;
    }
#undef PARTIAL_OR_NORMAL
#undef ZERO
#undef WRITE
#undef ADD
    if (n >= len)
        abort();
    return n;
}

