#!/usr/bin/env bash
# rebase.sh - `$QCOW2 rebase` must do what `qemu-img rebase` does. Each case builds a chain
# base <- mid <- top (lib_chain.sh) and a new backing file with other data, rebases a copy
# with each tool and compares exit code, output, message, and every file's guest view, check
# and info. Safe mode onto another file, onto a layer of the old chain, onto nothing
# (flatten), raw and qcow2 new backings shorter and longer than the image, unsafe mode, and
# -c (ours only: qemu-img 7.2 has no -c; compared with qemu-img's uncompressed result).

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_chain.sh"
cd "$T" || exit 1

# Ours: refused before any data is copied (qemu-img copies, then refuses); the loop is
# refused by name (qemu-img trips over its own image lock).
OWN_MESSAGES='could not open|\(try .qcow2 rebase --help.\)|Expecting one image file name|loop back'

# make_new FMT SIZE: new.FMT with data unlike the chain's, some of it equal to base's.
make_new() {
    local fmt=$1 size=$2
    rm -f new.*
    qemu-img create -q -f "$fmt" "new.$fmt" "$size" &&
        qio "new.$fmt" "write -P 0x11 0 $((size / 4))" "write -P 0x41 $((size / 4)) 300k" \
            "write -P 0x42 $((size - 5000)) 5000"
}

# rebase_setup OPTS BASEFMT BS MS TS NEWFMT NEWSIZE
rebase_setup() {
    make_chain "$1" "$2" "$3" "$4" "$5" && make_new "$6" "$7"
}

# rebase_cases OPTS BASEFMT NEWFMT NEWSIZE: onto new, onto base (a layer of the old chain),
# onto nothing, unsafe.
rebase_cases() {
    local opts=$1 bfmt=$2 nfmt=$3 ns=$4
    eval "setup() { rebase_setup '$opts' $bfmt $((4 * M)) $((3 * M)) $((4 * M)) $nfmt $ns; }"
    local tag="[$opts base=$bfmt new=$nfmt $((ns / M))M]"
    chain_case "$tag rebase onto new" setup rebase -b "new.$nfmt" -F "$nfmt" top.qcow2
    chain_case "$tag rebase onto base" setup rebase -b "base.$bfmt" -F "$bfmt" top.qcow2
    chain_case "$tag rebase -b ''" setup rebase -b "" top.qcow2
    chain_case "$tag rebase -u" setup rebase -u -b "new.$nfmt" -F "$nfmt" top.qcow2
}

if [ -n "${CHAIN_FULL:-}" ]; then # make stress: every layout with every backing and size
    for opts in cluster_size=65536 cluster_size=65536,extended_l2=on cluster_size=4096 \
        compat=0.10; do
        for bfmt in qcow2 raw; do
            for nfmt in qcow2 raw; do
                rebase_cases "$opts" "$bfmt" "$nfmt" $((2 * M))
                rebase_cases "$opts" "$bfmt" "$nfmt" $((6 * M))
            done
        done
    done
else # each layout, format and size relation at least once
    rebase_cases cluster_size=65536 qcow2 qcow2 $((6 * M))
    eval "setup() { rebase_setup cluster_size=65536,extended_l2=on raw $((4 * M)) $((3 * M)) $((4 * M)) raw $((2 * M)); }"
    chain_case "[extended_l2 base=raw new=raw 2M] rebase onto new" setup \
        rebase -b new.raw -F raw top.qcow2
    eval "setup() { rebase_setup compat=0.10 qcow2 $((2 * M)) $((3 * M)) $((4 * M)) qcow2 $((6 * M)); }"
    chain_case "[compat=0.10 new 6M] rebase onto new" setup rebase -b new.qcow2 -F qcow2 top.qcow2
    chain_case "[compat=0.10] rebase -b ''" setup rebase -b "" top.qcow2
    eval "setup() { rebase_setup cluster_size=4096 qcow2 $((4 * M)) $((3 * M)) $((4 * M)) qcow2 $((2 * M)); }"
    chain_case "[4k clusters] rebase onto mid" setup rebase -b mid.qcow2 -F qcow2 top.qcow2
fi

# Options and bad input.
eval "setup() { rebase_setup cluster_size=65536 qcow2 $((4 * M)) $((3 * M)) $((4 * M)) qcow2 $((4 * M)); }"
chain_case "rebase -q -f qcow2 -t none -T none" setup \
    rebase -q -f qcow2 -t none -T none -b new.qcow2 -F qcow2 top.qcow2
chain_case "rebase of the middle layer" setup rebase -b new.qcow2 -F qcow2 mid.qcow2
chain_case "rebase -u -b ''" setup rebase -u -b "" top.qcow2
chain_case "rebase -u onto a missing file" setup rebase -u -b nosuch.qcow2 -F qcow2 top.qcow2
chain_case "neither -b nor -u" setup rebase top.qcow2
chain_case "-b without -F" setup rebase -b new.qcow2 top.qcow2
chain_case "-u -b without -F" setup rebase -u -b new.qcow2 top.qcow2
chain_case "new backing file missing" setup rebase -b nosuch.qcow2 -F qcow2 top.qcow2
chain_case "onto itself (a loop)" setup rebase -b top.qcow2 -F qcow2 top.qcow2
chain_case "missing image" setup rebase -b new.qcow2 -F qcow2 nosuch.qcow2

# -c: the copied clusters compressed; the guest view as qemu-img's uncompressed rebase.
setup
cp top.qcow2 q.qcow2
if ! out=$("$QCOW2" rebase -c -b new.qcow2 -F qcow2 top.qcow2 2>&1); then
    fail "rebase -c failed" "$out"
elif ! qemu-img rebase -q -b new.qcow2 -F qcow2 q.qcow2 ||
    ! out=$(qemu-img compare top.qcow2 q.qcow2 2>&1); then
    fail "rebase -c: guest view differs from qemu-img rebase's" "$out"
elif ! out=$(qemu-img check top.qcow2 2>&1); then
    fail "rebase -c: qemu-img check" "$out"
elif ! echo "$out" | grep -Eq '[1-9][0-9.]*% compressed clusters'; then
    fail "rebase -c: no compressed clusters" "$out"
else
    pass "rebase -c"
fi

finish
