#!/usr/bin/env bash
# man.sh - the man pages (man/*.scd, built by CMake with scdoc) cover what they document, and
# are well-formed:
#   a. qcow2(1) has a "## NAME" section for every subcommand in tools/qcow2.c's table;
#   b. libqcow2(3) has the prototype ("NAME(") and a description ("*NAME*()") of every function
#      declared in include/qcow2.h;
#   c. nbdkit-qcow2-plugin(1) has an entry ("*KEY=*") for every parameter the plugin accepts
#      (the strcmp(key, "KEY") tests in tools/nbdkit-plugin.c);
#   d. with scdoc installed, every page converts, `man --warnings` prints nothing about it and
#      lexgrog finds its NAME line (skipped without scdoc, man or lexgrog).
# The lists come from the sources, so a subcommand, function or parameter added without its
# page fails here, naming it.

. "$(dirname "$0")/lib.sh"

SRC=$(cd "$INTEROP_DIR/../.." && pwd)
MAN=$SRC/man

# covered WHAT PAGE PATTERN NAMES...: each NAME must match PATTERN (with @ for the name, an
# ERE over the page's source) in PAGE.
covered() {
    local what=$1 page=$2 pattern=$3 name re missing=()
    shift 3
    for name in "$@"; do
        re=${pattern//@/$name}
        grep -q -E -e "$re" "$page" || missing+=("$name")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        pass "$what: all $# documented"
    else
        fail "$what: not documented in $(basename "$page"): ${missing[*]}"
    fi
}

commands=$(sed -n -E 's/^[[:space:]]*\{ *"([a-z0-9-]+)", *cmd_[a-z0-9_]+,.*/\1/p' "$SRC/tools/qcow2.c")
# shellcheck disable=SC2086 # one word per command
[ -n "$commands" ] && set -- $commands && [ $# -ge 5 ] ||
    fail "harness: no subcommands found in tools/qcow2.c's table (has its format changed?)"
# shellcheck disable=SC2086
covered "qcow2(1) subcommands" "$MAN/qcow2.1.scd" '^## @$' $commands

# Declarations, not comments or macros: a line starting with a type, the name, "(".
functions=$(grep -v -E '^[[:space:]]*(/\*|\*|#)' "$SRC/include/qcow2.h" |
    sed -n -E 's/^[a-z].*[ *](qcow2_[a-z0-9_]+)\(.*/\1/p' | sort -u)
# shellcheck disable=SC2086
[ -n "$functions" ] && set -- $functions && [ $# -ge 10 ] ||
    fail "harness: no functions found in include/qcow2.h"
# shellcheck disable=SC2086
covered "libqcow2(3) prototypes" "$MAN/libqcow2.3.scd" '[ *]@\(' $functions
# shellcheck disable=SC2086
covered "libqcow2(3) descriptions" "$MAN/libqcow2.3.scd" '\*@\*\(\)' $functions

params=$(grep -o -E 'strcmp\(key, "[a-z0-9-]+"\)' "$SRC/tools/nbdkit-plugin.c" |
    sed -E 's/.*"(.*)".*/\1/' | sort -u)
# shellcheck disable=SC2086
[ -n "$params" ] || fail "harness: no parameters found in tools/nbdkit-plugin.c"
# shellcheck disable=SC2086
covered "nbdkit-qcow2-plugin(1) parameters" "$MAN/nbdkit-qcow2-plugin.1.scd" '^\*@=\*' $params

# The options every image-opening subcommand shares must be where the page says they are.
covered "qcow2(1) untrusted options" "$MAN/qcow2.1.scd" '^\*--@' untrusted allow-dir

if ! command -v scdoc >/dev/null 2>&1; then
    skip "page build: scdoc not found (apt-get install scdoc)"
    finish
fi
for src in "$MAN"/*.scd; do
    page=$T/$(basename "$src" .scd)
    if ! scdoc <"$src" >"$page" 2>"$T/scdoc.err"; then
        fail "scdoc $(basename "$src")" "$(cat "$T/scdoc.err")"
        continue
    fi
    pass "scdoc $(basename "$src")"
    if command -v man >/dev/null 2>&1; then
        # man prints groff's warnings (and nothing else) on stderr with --warnings
        MANWIDTH=80 man --warnings -E UTF-8 -l "$page" >/dev/null 2>"$T/man.err"
        if [ -s "$T/man.err" ]; then
            fail "man --warnings $(basename "$page")" "$(head -n 5 "$T/man.err")"
        else
            pass "man --warnings $(basename "$page")"
        fi
    fi
    if command -v lexgrog >/dev/null 2>&1; then
        if lexgrog "$page" >"$T/lexgrog.out" 2>&1; then
            pass "lexgrog $(basename "$page")"
        else
            fail "lexgrog $(basename "$page")" "$(cat "$T/lexgrog.out")"
        fi
    fi
done
finish
