#!/usr/bin/env bash
# compare.sh - `$QCOW2 compare` must answer as `qemu-img compare` does: the same exit code
# (0 identical, 1 different, 2 cannot open, ...) and the same stdout ("Images are identical.",
# "Content mismatch at offset N!", "Warning: Image size mismatch!", the strict-mode lines) for
# pairs of images made by qemu-img: standard and extended L2, compressed and zero clusters, raw
# and qcow2 backings, backings shorter and longer than the overlay, different sizes, with and
# without -s, -q and -f/-F. -p prints its progress line only on a terminal (checked with
# script(1) when it is installed).

. "$(dirname "$0")/lib.sh"

cd "$T" || exit 1
make_image_set || finish
for img in over-raw over-qcow2 short long; do
    harness "$img converted" qemu-img convert -O qcow2 $img.qcow2 $img-flat.qcow2 || finish
    harness "$img as raw" qemu-img convert -O raw $img.qcow2 $img-flat.raw || finish
done

compare_case() {
    same_as_qemu "compare $*" compare "$@" && pass "compare $*"
}

# Pairs compared plainly and, after the colon, with -s too.
PAIRS=(
    "std.qcow2 std.raw:s" "std.qcow2 ext.qcow2:s" "std.qcow2 comp.qcow2:s" "comp.qcow2 ext.qcow2"
    "std.qcow2 v2.qcow2" "std.qcow2 flip.qcow2" "flip.qcow2 comp.qcow2" "std.raw flip.qcow2"
    "std.qcow2 big-zero.qcow2:s" "big-zero.qcow2 std.raw" "big-data.qcow2 std.qcow2"
    "std.qcow2 big-data.qcow2" "big-zero.qcow2 big-data.qcow2"
    "over-raw.qcow2 over-raw-flat.qcow2:s" "over-raw.qcow2 over-raw-flat.raw"
    "over-qcow2.qcow2 over-qcow2-flat.qcow2:s" "over-qcow2.qcow2 over-raw.qcow2"
    "short.qcow2 short-flat.qcow2:s" "short.qcow2 short-flat.raw" "long.qcow2 long-flat.qcow2:s"
    "long.qcow2 long-flat.raw" "short.qcow2 long.qcow2" "long.qcow2 std.qcow2"
    "over-qcow2.qcow2 std.qcow2" "std.qcow2 std.qcow2:s" "ext.qcow2 ext.qcow2:s"
)
for pair in "${PAIRS[@]}"; do
    # shellcheck disable=SC2086 # two file names
    compare_case ${pair%:s}
    # shellcheck disable=SC2086
    [ "${pair%:s}" = "$pair" ] || compare_case -s ${pair%:s}
done
compare_case -q std.qcow2 flip.qcow2
compare_case -q -s std.qcow2 big-zero.qcow2
compare_case -f qcow2 -F raw std.qcow2 std.raw
compare_case -f raw -F raw std.qcow2 std.raw
compare_case -f raw std.qcow2 std.qcow2
compare_case -T none std.qcow2 ext.qcow2
compare_case -T bogus std.qcow2 ext.qcow2
compare_case -U std.qcow2 ext.qcow2
compare_case std.qcow2 missing.qcow2
compare_case missing.qcow2 std.qcow2
compare_case std.qcow2
compare_case std.qcow2 ext.qcow2 comp.qcow2

# -p: qemu-img prints its progress line into pipes too; we print it only on a terminal.
# (Checked only for our CLI: QCOW2=qemu-img runs the rest of the script against QEMU.)
[ "$(basename "$QCOW2")" = qemu-img ] && finish
run_cli 60 ours.stdout ours.stderr "$QCOW2" compare -p std.qcow2 flip.qcow2
rc=$?
if [ $rc != 1 ] || [ "$(cat ours.stdout)" != "Content mismatch at offset 69632!" ]; then
    fail "compare -p into a pipe: exit $rc" "$(cat -v ours.stdout ours.stderr)"
else
    pass "compare -p into a pipe: the verdict only"
fi
if command -v script >/dev/null 2>&1; then
    script -qec "$(q "$QCOW2" compare -p std.qcow2 ext.qcow2)" /dev/null >tty.out 2>&1
    if tr '\r' '\n' <tty.out | grep -q '^    (100.00/100%)$' && grep -q 'Images are identical.' tty.out; then
        pass "compare -p on a terminal prints the progress line"
    else
        fail "compare -p on a terminal" "$(cat -v tty.out)"
    fi
else
    skip "compare -p on a terminal (no script(1))"
fi
finish
