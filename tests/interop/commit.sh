#!/usr/bin/env bash
# commit.sh - `$QCOW2 commit` must do what `qemu-img commit` does. Each case builds a chain
# base <- mid <- top (lib_chain.sh: data, zero and compressed clusters, unaligned writes),
# commits a copy with each tool and compares exit code, output, message, and every layer's
# guest view, check and info. Layouts: standard and extended L2, small clusters, compat=0.10,
# raw and qcow2 bases, a base shorter (grown by the commit) and longer than the overlay.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_chain.sh"
cd "$T" || exit 1

OWN_MESSAGES='could not open|\(try .qcow2 commit --help.\)|Expecting one image file name'

# commit_cases OPTS BASEFMT BS MS TS: commit, commit -d and commit -b base on one chain.
commit_cases() {
    local opts=$1 bfmt=$2 bs=$3 ms=$4 ts=$5
    eval "setup() { make_chain '$opts' $bfmt $bs $ms $ts; }"
    local tag="[$opts base=$bfmt sizes=$((bs / M))M/$((ms / M))M/$((ts / M))M]"
    chain_case "$tag commit" setup commit top.qcow2
    chain_case "$tag commit -d" setup commit -d top.qcow2
    chain_case "$tag commit -b base" setup commit -b "base.$bfmt" top.qcow2
}

if [ -n "${CHAIN_FULL:-}" ]; then # make stress: every layout with every base and size
    for opts in cluster_size=65536 cluster_size=65536,extended_l2=on cluster_size=4096 \
        compat=0.10; do
        for bfmt in qcow2 raw; do
            commit_cases "$opts" "$bfmt" $((4 * M)) $((4 * M)) $((4 * M))
            commit_cases "$opts" "$bfmt" $((2 * M)) $((3 * M)) $((4 * M))
            commit_cases "$opts" "$bfmt" $((8 * M)) $((4 * M)) $((4 * M))
        done
    done
else # each layout, base format and size relation at least once
    commit_cases cluster_size=65536 qcow2 $((4 * M)) $((4 * M)) $((4 * M))
    eval "setup() { make_chain cluster_size=65536,extended_l2=on raw $((2 * M)) $((3 * M)) $((4 * M)); }"
    chain_case "[extended_l2 base=raw, shorter] commit" setup commit top.qcow2
    eval "setup() { make_chain compat=0.10 qcow2 $((8 * M)) $((4 * M)) $((4 * M)); }"
    chain_case "[compat=0.10 base longer] commit" setup commit top.qcow2
    eval "setup() { make_chain cluster_size=4096 qcow2 $((2 * M)) $((3 * M)) $((4 * M)); }"
    chain_case "[4k clusters, base shorter] commit -b base" setup commit -b base.qcow2 top.qcow2
fi

# Options and bad input.
eval "setup() { make_chain cluster_size=65536 qcow2 $((4 * M)) $((4 * M)) $((4 * M)); }"
chain_case "commit -q -f qcow2 -t none" setup commit -q -f qcow2 -t none top.qcow2
chain_case "commit of the middle layer" setup commit mid.qcow2
chain_case "base not in the chain" setup commit -b nosuch top.qcow2
chain_case "image without backing file" setup commit base.qcow2
chain_case "missing file" setup commit nosuch.qcow2
chain_case "no file" setup commit

# -p: qemu-img's progress line on a terminal (script(1) provides one), nothing otherwise.
if command -v script >/dev/null 2>&1; then
    rm -rf ours && mkdir ours && (cd ours && setup) >/dev/null 2>&1
    (cd ours && script -qc "$(q "$QCOW2" commit -p top.qcow2)" /dev/null) >progress.out 2>&1
    if grep -q '    (0.00/100%)'$'\r' progress.out && grep -q '    (100.00/100%)'$'\r' progress.out &&
        grep -q '^Image committed.' progress.out; then
        pass "commit -p on a terminal"
    else
        fail "commit -p on a terminal: no progress line" "$(od -c progress.out | head -n 5)"
    fi
    rm -rf ours && mkdir ours && (cd ours && setup) >/dev/null 2>&1
    if out=$(cd ours && "$QCOW2" commit -p top.qcow2) && [ "$out" = "Image committed." ]; then
        pass "commit -p without a terminal prints no progress"
    else
        fail "commit -p without a terminal" "$out"
    fi
else
    skip "commit -p on a terminal (no script(1))"
fi

finish
