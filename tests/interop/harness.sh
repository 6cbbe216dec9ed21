#!/usr/bin/env bash
# harness.sh - lib.sh itself: a script that bash abandons midway must fail. Bash goes on after
# an unset variable (set -u) inside a function called from a condition, or a command that is not
# found: it drops the rest of that top-level command (often a whole loop of cases) and the
# script still reached finish() with "0 failed". Each child script here makes one such error
# after a passing case; it must exit non-zero and name the error. A clean child must pass.

. "$(dirname "$0")/lib.sh"

# child NAME BODY: run BODY as a script that sources lib.sh; its output in $T/NAME.out.
child() {
    local name=$1 body=$2
    printf '. %q\n%s\nfinish\n' "$INTEROP_DIR/lib.sh" "$body" >"$T/$name.sh"
    QCOW2_TEST_TMPDIR=$T bash "$T/$name.sh" >"$T/$name.out" 2>&1
}

expect_failure() { # NAME WHAT BODY
    local name=$1 what=$2
    if child "$name" "$3"; then
        fail "$what: the script passed" "$(cat "$T/$name.out")"
    elif ! grep -q "^FAIL: the script itself went wrong" "$T/$name.out" ||
        ! grep -q "$name.sh: line [0-9]*: " "$T/$name.out"; then
        fail "$what: no report naming the error" "$(cat "$T/$name.out")"
    else
        pass "$what"
    fi
}

expect_failure unset_in_condition "unset variable in a function called from an if" '
declare -A seen
f() { local n=${#seen[@]}; echo "$n"; }
pass first
for i in 1 2 3; do
    if ! f; then fail "f"; fi
    pass "case $i"
done'

expect_failure not_found "command not found inside a loop" '
pass first
for i in 1 2; do
    no_such_helper_xyz "$i" && pass "case $i"
done'

if child clean 'pass one
pass two' && grep -q "^2 passed, 0 failed" "$T/clean.out"; then
    pass "a clean script passes"
else
    fail "a clean script fails" "$(cat "$T/clean.out")"
fi

finish
