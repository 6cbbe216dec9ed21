#!/usr/bin/env bash
# make_targets.sh - the README's two commands do what a newcomer on a fresh machine needs.
# `make demo` is the first command the README shows: like `make check`, it must install the
# missing packages (DEPS) before it builds, or it stops at the first missing -dev package.
# Checked with `make -n` (what make would run), so nothing is installed or built here.
source "$(dirname "$0")/lib.sh"

SRC=$(cd "$INTEROP_DIR/../.." && pwd)
command -v make >/dev/null || skip_all "make not found"

# step_line TARGET PATTERN: the first line of `make -n TARGET` matching PATTERN (0: none).
step_line() {
    make -n -C "$SRC" BUILD="$T/build-$1" "$1" 2>/dev/null | grep -n -m1 -E "$2" | cut -d: -f1
}

for target in demo check; do
    deps=$(step_line "$target" 'dpkg -s')
    build=$(step_line "$target" '^cmake ')
    if [ -z "$deps" ]; then
        fail "make $target installs missing packages" "no package check in: make -n $target"
    elif [ -n "$build" ] && [ "$build" -lt "$deps" ]; then
        fail "make $target installs missing packages" \
            "it builds (line $build) before it checks the packages (line $deps)"
    else
        pass "make $target installs missing packages"
    fi
done
finish
