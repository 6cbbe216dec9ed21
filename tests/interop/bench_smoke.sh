#!/usr/bin/env bash
# bench_smoke.sh - the benchmark suite as a smoke test: `bench/run --quick` runs every workload
# (W1-W8) once on small images, for libqcow2 and for QEMU, and verifies the data each run
# produced; then bench/split, the diagnosis of W1's time, for one pair. Passes when every
# workload completes and verifies and split prints its three lines; timings are not looked at.
# Skips (77) when QEMU's tools are missing. Registered with the label "bench".
set -u

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${QCOW2_BUILD_DIR:-$SRC_DIR/build}
export QCOW2=${QCOW2:-$BUILD_DIR/qcow2}
export QCOW2_PLUGIN=${QCOW2_PLUGIN:-$BUILD_DIR/nbdkit-qcow2-plugin.so}
export BUILD=$BUILD_DIR

for tool in qemu-img qemu-io; do
    command -v $tool >/dev/null 2>&1 || { echo "SKIP: bench_smoke: $tool not found"; exit 77; }
done

bash "$SRC_DIR/bench/run" --quick \
    --json "${QCOW2_TEST_TMPDIR:-${TMPDIR:-/tmp}}/bench-quick.json" || exit 1

out=$(bash "$SRC_DIR/bench/split" --row W1 --pairs 1 2>&1)
echo "$out"
[ "$(grep -cE '^(total|inside_pwrite|outside_pwrite) +[0-9]+ +[0-9]+ +[0-9.]+$' <<<"$out")" = 3 ] ||
    { echo "FAIL: bench/split printed no per-write split"; exit 1; }
