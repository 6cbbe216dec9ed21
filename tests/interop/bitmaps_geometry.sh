#!/usr/bin/env bash
# bitmaps_geometry.sh - persistent dirty bitmaps at the edges of their geometry, against QEMU:
# granularities 512 B and 64 MiB, extended L2, and a 4 TiB image (4 KiB clusters) whose bitmap
# table spans two clusters. The same bitmap and writes by qemu-io on one copy and by
# `$QCOW2 io` on the other: QEMU reads identical bitmaps back, `qemu-img check` is clean.

. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
. "$INTEROP_DIR/lib_bitmaps.sh"

# e_case NAME SIZE CREATE_OPTS GRAN OPS...: the same bitmap and writes, by QEMU and by us.
e_case() {
    local name=$1 size=$2 opts=$3 gran=$4
    shift 4
    harness "E $name" qemu-img create -q -f qcow2 -o "$opts" e.qcow2 "$size" || return
    harness "E $name" qemu-img bitmap --add -g "$gran" e.qcow2 g || return
    cp e.qcow2 eref.qcow2
    harness "E $name: qemu-io" qemu-io "$@" eref.qcow2 || return
    cli "E $name: io" "$QCOW2" io "$@" e.qcow2 || return
    same_bitmaps "E $name" eref.qcow2 e.qcow2 g
    check_clean "E $name" e.qcow2
}
e_case "512 B granularity" 8M cluster_size=65536 512 -c "write 0 1" -c "write 4095 2" \
    -c "write 1M 100k" -c "write -z 7M 512"
e_case "64 MiB granularity" 1G cluster_size=65536 64M -c "write 0 4k" -c "write 200M 4k"
e_case "extended L2" 64M cluster_size=65536,extended_l2=on 4k -c "write 4k 4k" \
    -c "write -z 1M 2k" -c "discard 8M 1M"
e_case "4 TiB, table over 2 clusters" 4T cluster_size=4096 128k -c "write 0 4k" \
    -c "write 2T 1M" -c "write 4398046507008 4k"

finish
