#!/usr/bin/env bash
# layers.sh - every call in the library points down the layer list of src/internal.h.
# The list (the "Layers, bottom up" comment) orders the library's files; a file may call only
# files listed before it. Checked on the object files: for each undefined symbol of one object
# that another object defines, the definer must come earlier in the list. A library file that
# the list does not name fails too (every file has its place).
source "$(dirname "$0")/lib.sh"

SRC=$(cd "$INTEROP_DIR/../.." && pwd)
BUILD=${QCOW2_BUILD_DIR:-$SRC/build}
OBJDIR=$BUILD/CMakeFiles/qcow2-objects.dir/src
command -v nm >/dev/null || skip_all "nm not found"
[ -d "$OBJDIR" ] || skip_all "no object files in $OBJDIR (build first)"

# The layer list: the lines " *   name.c   ..." after "Layers, bottom up" in internal.h.
mapfile -t LAYERS < <(awk '/Layers, bottom up/ { on = 1; next }
    on && /^ \*\/$/ { exit }
    on && match($0, /^ \*   [a-z_]+\.c/) { print substr($0, 6, RLENGTH - 5) }' \
    "$SRC/src/internal.h")
[ ${#LAYERS[@]} -ge 5 ] || { fail "layer list" "no layer list found in src/internal.h"; finish; }
declare -A RANK
for i in "${!LAYERS[@]}"; do RANK[${LAYERS[$i]}]=$i; done

for src in "$SRC"/src/*.c; do
    name=$(basename "$src")
    [ -n "${RANK[$name]:-}" ] || fail "layer list names $name" "src/$name is not in internal.h"
done

# symbol -> defining file
declare -A DEF
for obj in "$OBJDIR"/*.c.o; do
    file=$(basename "$obj" .o)
    while read -r _ type sym; do
        case $type in [TDBR]) DEF[$sym]=$file ;; esac
    done < <(nm --defined-only "$obj")
done

bad=0
for obj in "$OBJDIR"/*.c.o; do
    file=$(basename "$obj" .o)
    [ -n "${RANK[$file]:-}" ] || continue
    while read -r _ sym; do
        def=${DEF[$sym]:-}
        [ -n "$def" ] && [ "$def" != "$file" ] || continue
        if [ "${RANK[$def]:-99}" -gt "${RANK[$file]}" ]; then
            fail "$file calls up" "$file calls $sym, defined in $def (above it in the list)"
            bad=1
        fi
    done < <(nm -u "$obj")
done
[ $bad = 0 ] && pass "every call points down the layer list (${LAYERS[*]})"
finish
