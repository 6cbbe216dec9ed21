#!/usr/bin/env bash
# demo.sh - a short tour of the qcow2 CLI next to qemu-img, on a two-image backing chain.
# Usage: tools/demo.sh [BUILD_DIR]   (run by `make demo`). Works in a temporary directory and
# removes it afterwards. Fails (non-zero) if our output and qemu-img's disagree.
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
qcow2="$build/qcow2"
for tool in "$qcow2" qemu-img qemu-io; do
    if ! command -v "$tool" >/dev/null; then
        echo "demo: '$tool' not found (build first; qemu-img and qemu-io are in qemu-utils)" >&2
        exit 1
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/qcow2-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

# Show a command as one could type it (our CLI as plain "qcow2"), then run it.
run() {
    local arg shown=''
    for arg in "$@"; do
        [ "$arg" = "$qcow2" ] && arg=qcow2
        [[ "$arg" =~ [^A-Za-z0-9_./=,:+-] ]] && arg="'$arg'"
        shown+=" $arg"
    done
    printf '$%s\n' "$shown"
    "$@"
}
# qemu-io, without its timing lines.
qio() { run qemu-io "$@" | grep -v ' ops; '; }

step "1. A 64 MiB base image, made by our create; qemu-io fills its first 4 MiB with 0xab"
run "$qcow2" create -f qcow2 base.qcow2 64M
qio -f qcow2 -c 'write -P 0xab 0 4M' base.qcow2

step "2. An overlay with extended L2 entries (32 subclusters of 2 KiB per 64 KiB cluster)"
run "$qcow2" create -f qcow2 -o extended_l2=on,cluster_size=64k -b base.qcow2 -F qcow2 overlay.qcow2
echo "qemu-io writes into the overlay: 100 KiB of 0xcd at 1 MiB (whole subclusters, not whole"
echo "clusters), 64 KiB of zeros at 2 MiB (a zero flag, no data), and 1 MiB of 0xef at 40 MiB."
qio -f qcow2 -c 'write -P 0xcd 1M 100k' -c 'write -z 2M 64k' -c 'write -P 0xef 40M 1M' \
    overlay.qcow2

step "3. qcow2 info, with the backing chain"
run "$qcow2" info --backing-chain overlay.qcow2

step "4. qcow2 map: where each guest range comes from (depth 0 = overlay, 1 = base)"
run "$qcow2" map overlay.qcow2
echo
run "$qcow2" map --output=json overlay.qcow2
"$qcow2" map --output=json overlay.qcow2 >ours.map
qemu-img map --output=json overlay.qcow2 >qemu.map
if cmp -s ours.map qemu.map; then
    echo "-> same as qemu-img map --output=json"
else
    echo "-> DIFFERENT from qemu-img map --output=json:"
    diff -u qemu.map ours.map || true
    exit 1
fi

step "5. Convert the whole chain to raw, with our convert and with qemu-img convert"
run "$qcow2" convert -O raw overlay.qcow2 ours.raw
run qemu-img convert -O raw overlay.qcow2 qemu.raw
printf 'allocated on disk: ours %s KiB, qemu-img %s KiB (of %s KiB, both sparse)\n' \
    "$(du -k ours.raw | cut -f1)" "$(du -k qemu.raw | cut -f1)" "$(( $(stat -c %s ours.raw) / 1024 ))"
if cmp ours.raw qemu.raw; then
    echo "-> identical"
else
    echo "-> the two raw images DIFFER" >&2
    exit 1
fi

step "6. Our write path: qcow2 io writes through the overlay (qemu-io's syntax)"
echo "A 3 KiB write at 3 MiB + 1 KiB touches two 2 KiB subclusters: only those become allocated,"
echo "and only their untouched edges are copied from the base (copy-on-write). A zero write of"
echo "4 KiB makes two subclusters read as zeros. Map of the 3 MiB cluster before and after:"
run "$qcow2" map --output=json -s 3M -l 64k overlay.qcow2
run "$qcow2" io -c 'write -P 0x5a 3073k 3k' -c 'write -z 3080k 4k' -c 'read -P 0x5a 3073k 3k' \
    overlay.qcow2 | grep -v ' ops; '
run "$qcow2" map --output=json -s 3M -l 64k overlay.qcow2
run qemu-img check overlay.qcow2
qemu-io -r -c 'read -P 0x5a 3073k 3k' -c 'read -P 0 3080k 4k' -c 'read -P 0xab 3072k 1k' \
    overlay.qcow2 | grep -q 'Pattern verification failed' && { echo "-> qemu-io reads something else" >&2; exit 1; }
echo "-> qemu-img check is clean and qemu-io reads back what we wrote"

step "7. Internal snapshots: take one, change the disk, go back to it"
qemu-img convert -O raw overlay.qcow2 before.raw   # the disk now, for the checks below
run "$qcow2" snapshot -c before-change overlay.qcow2
run "$qcow2" snapshot -l overlay.qcow2
echo "qemu-io overwrites 64 KiB at 1 MiB: the cluster is shared with the snapshot, so the write"
echo "copies it first and the snapshot keeps the old data."
qio -f qcow2 -c 'write -P 0x77 1M 64k' overlay.qcow2
run "$qcow2" convert -O raw -l before-change overlay.qcow2 snap.raw
if cmp -s snap.raw before.raw; then
    echo "-> the snapshot (convert -l) still reads as the disk did before the write"
else
    echo "-> the snapshot CHANGED" >&2
    exit 1
fi
run "$qcow2" snapshot -a before-change overlay.qcow2
run qemu-img check overlay.qcow2
run qemu-img compare overlay.qcow2 before.raw
run "$qcow2" snapshot -d before-change overlay.qcow2
run qemu-img snapshot -l overlay.qcow2
echo "-> applied: the disk is back as it was; deleted: no snapshot left"

step "8. Serve the overlay over NBD: qcow2 serve runs nbdkit with our plugin (tools/nbdkit-plugin.c)"
if ! command -v nbdkit >/dev/null || ! command -v nbdinfo >/dev/null ||
    [ ! -f "$build/nbdkit-qcow2-plugin.so" ]; then
    echo "(skipped: needs nbdkit, libnbd-bin, and the plugin built with nbdkit-plugin-dev)"
    exit 0
fi
echo '$ qcow2 serve overlay.qcow2 --socket nbd.sock &'
timeout 120 "$qcow2" serve overlay.qcow2 --socket nbd.sock >serve.out 2>serve.err &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    [ -S nbd.sock ] && nbdinfo --size "nbd+unix:///?socket=$work/nbd.sock" >/dev/null 2>&1 && break
    sleep 0.05
done
uri=$(head -n 1 serve.out)
if ! kill -0 "$server" 2>/dev/null || [ -z "$uri" ]; then
    echo "demo: qcow2 serve did not start:" >&2
    cat serve.err >&2
    exit 1
fi
echo "$uri"
echo "Any NBD client can use it. nbdinfo --map shows base:allocation (hole = no data here,"
echo "zero = reads as zeros), the same answers as qcow2 map gives above:"
run nbdinfo --map "$uri"
echo "qemu-io writes through the export (64 KiB of data, 1 MiB of zeros), nbdcopy reads it back"
echo "with 4 connections at once (the plugin allows multi-conn):"
qio -f raw -c 'write -P 0x11 8M 64k' -c 'write -z 9M 1M' "$uri"
run nbdcopy --connections=4 "$uri" nbd.raw
echo '$ kill %1   (or Ctrl-C: the image is flushed and closed)'
kill "$server"
wait "$server" || true
trap 'rm -rf "$work"' EXIT
run qemu-img check overlay.qcow2
run qemu-img convert -O raw overlay.qcow2 after.raw
if cmp nbd.raw after.raw; then
    echo "-> what nbdcopy read over NBD is what qemu-img reads from the file"
else
    echo "-> nbdcopy's copy and qemu-img convert's DIFFER" >&2
    exit 1
fi
