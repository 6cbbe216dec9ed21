#!/usr/bin/env bash
# abi.sh - the ABI of the built libqcow2.so against the committed baseline, abi/libqcow2.so.0.abi,
# compared by abidiff (libabigail; Debian package abigail-tools).
#
# Fails when a program built against the baseline could break: an exported function removed or
# its type changed (parameters, return value), a public struct or enum reachable from one
# changed (a field inserted, removed, moved or retyped, an enumerator's value changed). Passes
# when functions are added, and when fields are appended at the end of the extensible structs
# (include/qcow2.h, "Extensible structs": callers pass struct_size). A different SONAME (a
# deliberate break: the major version in CMakeLists.txt) passes with the differences shown,
# until the baseline is refreshed.
#
# abidiff reports an appended field as a change like any other, and its suppression rule for
# them (has_data_member_inserted_at = end) also hides every other change to the same struct
# (libabigail 2.2), so the appends are recognised here instead, in abidiff's leaf-change
# report: a struct of the EXTENSIBLE list whose only changes are a larger size and members
# inserted at or past its old size. Every other line of the report fails the test.
#
#   bash tests/interop/abi.sh            check; as CTest's interop_abi, with QCOW2_BUILD_DIR
#   bash tests/interop/abi.sh --update   rewrite the baseline from the built library: this is
#                                        `make abi-baseline`. Commit the new baseline together
#                                        with the change, saying why the ABI may change.
#
# The baseline is abidw's XML for the exported interface only (types from include/ only, no
# source locations, hashed type ids, source paths made relative), so it is small and the same
# from any checkout. abidw reads the types from DWARF: the library is always built with -g.
set -u

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${QCOW2_BUILD_DIR:-$SRC/build}
BASELINE=$SRC/abi/libqcow2.so.0.abi
LIB=$BUILD/libqcow2.so
# The structs that carry struct_size (src/abi.c): they may grow at the end.
EXTENSIBLE='qcow2_(open_opts|create_opts|info|extent|check_result|compare_result|measure_result|bitmap_info|snapshot_info|snapshot_opts|convert_opts|commit_opts|rebase_opts)'

skip() {
    echo "SKIP: abi: $*"
    exit 77
}
fail() {
    echo "FAIL: abi: $*"
    echo "0 passed, 1 failed"
    exit 1
}

for tool in abidw abidiff readelf; do
    command -v "$tool" >/dev/null 2>&1 ||
        skip "$tool not found (Debian: apt-get install abigail-tools binutils; make check does)"
done
[ -e "$LIB" ] || fail "$LIB not found: build first (make)"
LIB=$(readlink -f "$LIB")
readelf -S --wide "$LIB" | grep -q '\.debug_info' ||
    fail "$LIB has no DWARF debug info, which abidw needs (is -g missing from the build flags?)"

T=$(mktemp -d "${QCOW2_TEST_TMPDIR:-${TMPDIR:-/tmp}}/qcow2-abi.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT

# dump LIB OUT: the ABI of LIB as XML, independent of where the tree is checked out.
dump() {
    local src_re
    src_re=$(printf '%s' "$SRC" | sed 's/[][\.*^$|]/\\&/g')
    abidw --no-corpus-path --no-comp-dir-path --no-show-locs --no-elf-needed \
        --exported-interfaces-only --drop-undefined-syms --type-id-style hash \
        --headers-dir "$SRC/include" --drop-private-types "$1" >"$2.raw" || return 1
    sed "s|path='$src_re/|path='|" "$2.raw" >"$2"
}

# only_appends REPORT: is abidiff's leaf-change report nothing but fields appended to the
# extensible structs? Prints the first line that is something else.
only_appends() {
    awk -v ext="^'struct $EXTENSIBLE' changed:\$" '
        /^(Leaf changes summary|Changed leaf types summary):/ { next }
        /^Removed\/Changed\/Added (functions|variables) summary: 0 Removed, 0 Changed, / { next }
        /^$/ { next }
        /^[^ ]/ { in_struct = ($0 ~ ext); old = -1; if (in_struct) next }
        in_struct && /^  type size changed from [0-9]+ to [0-9]+ \(in bits\)$/ {
            old = $5 + 0; if ($7 + 0 > old) next
        }
        in_struct && old >= 0 && /^  [0-9]+ data member insertions?:$/ { next }
        in_struct && old >= 0 && /^    .*, at offset [0-9]+ \(in bits\)$/ {
            if ($(NF - 2) + 0 >= old) next
        }
        { print; bad = 1; exit }
        END { exit bad }
    ' "$1"
}

# attr NAME FILE: an attribute of the abi-corpus element (soname, architecture).
attr() {
    sed -n "s/.*<abi-corpus [^>]*$1='\([^']*\)'.*/\1/p" "$2" | head -n1
}

dump "$LIB" "$T/current.abi" || fail "abidw could not read $LIB"

if [ "${1:-}" = --update ]; then
    mkdir -p "$(dirname "$BASELINE")"
    cp "$T/current.abi" "$BASELINE"
    echo "abi: wrote $BASELINE ($(attr soname "$BASELINE"), $(grep -c '<elf-symbol ' "$BASELINE") functions)"
    exit 0
fi

[ -f "$BASELINE" ] || fail "no baseline $BASELINE: make one with 'make abi-baseline'"
old_soname=$(attr soname "$BASELINE")
new_soname=$(attr soname "$T/current.abi")
old_arch=$(attr architecture "$BASELINE")
new_arch=$(attr architecture "$T/current.abi")
[ "$old_arch" = "$new_arch" ] ||
    skip "the baseline is for $old_arch, this build is $new_arch: layouts differ by nature"

abidiff --no-added-syms "$BASELINE" "$T/current.abi" >"$T/report" 2>&1
rc=$?
abidiff --no-added-syms --leaf-changes-only "$BASELINE" "$T/current.abi" >"$T/leaf" 2>&1
leaf_rc=$?
# Everything, additions included (allowed, shown for the record).
abidiff "$BASELINE" "$T/current.abi" >"$T/all" 2>&1
added=$(grep -E "^  \[A\] " "$T/all")

if [ "$old_soname" != "$new_soname" ]; then
    echo "abi: SONAME $old_soname -> $new_soname: a deliberate break, not checked against the" \
        "baseline. Refresh it with 'make abi-baseline'. Differences:"
    cat "$T/all"
    echo "1 passed, 0 failed"
    exit 0
fi
if [ $((rc & 1)) -ne 0 ] || [ $((leaf_rc & 1)) -ne 0 ]; then
    cat "$T/report" "$T/leaf"
    fail "abidiff could not compare (exit status $rc, $leaf_rc)"
fi
appended=no
if [ "$rc" -ne 0 ] && [ $((rc & 8)) -eq 0 ] && [ "$leaf_rc" -eq "$rc" ] &&
    bad_line=$(only_appends "$T/leaf"); then
    appended=yes
fi
if [ "$rc" -ne 0 ] && [ "$appended" = no ]; then
    cat "$T/report"
    [ -n "${bad_line:-}" ] && echo "(not an appended field: $bad_line)"
    echo "FAIL: abi: this change breaks the ABI of $old_soname (abidiff exit status $rc)."
    echo "  Keep old programs working: append fields at the end of the extensible structs, add"
    echo "  a new function rather than change an old one. For a deliberate break, raise the"
    echo "  major version in CMakeLists.txt (the SONAME) and refresh the baseline with"
    echo "  'make abi-baseline'."
    echo "0 passed, 1 failed"
    exit 1
fi
echo "ok   abi: compatible with the baseline ($old_soname)"
if [ "$appended" = yes ]; then
    echo "     fields appended to extensible structs (compatible):"
    grep -E "^'struct |^ +" "$T/leaf"
fi
if [ -n "$added" ]; then
    echo "     added since the baseline (compatible):"
    echo "$added"
fi
echo "1 passed, 0 failed"
exit 0
