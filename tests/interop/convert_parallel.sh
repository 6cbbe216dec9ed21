#!/usr/bin/env bash
# convert_parallel.sh - qcow2 convert's parallel copy (-m, -W), compressed convert written in
# source order whatever the thread count, and -B (write only what differs from the backing
# file). Every target is qemu-img-check clean and compares identical to its source.
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

head -c 24M /dev/urandom >src.raw
dd if=/dev/zero of=src.raw bs=1M count=6 seek=4 conv=notrunc status=none   # 25% zeros
qemu-io -f raw -c 'write -P 0x33 16M 2M' src.raw >/dev/null
# 3 MiB of text, so that compressed converts store compressed and uncompressed clusters mixed
seq -f "%g: line of text that compresses well" 1 200000 | head -c 3M |
    dd of=src.raw bs=1M seek=19 conv=notrunc status=none

same() { # same NAME A B
    if out=$(qemu-img compare "$2" "$3" 2>&1); then pass "$1"; else fail "$1" "$out"; fi
}
clean() { # clean NAME IMG
    if out=$(qemu-img check "$2" 2>&1); then pass "$1: check"; else fail "$1: check" "$out"; fi
}

for m in 1 4 16; do
    for w in "" -W; do
        name="raw->qcow2 -m $m $w"
        rm -f t.qcow2
        if "$QCOW2" convert $w -m "$m" -O qcow2 src.raw t.qcow2 2>err; then
            same "$name" src.raw t.qcow2; clean "$name" t.qcow2
        else fail "$name" "$(cat err)"; fi
        name="qcow2->raw -m $m $w"
        rm -f back.raw
        if "$QCOW2" convert $w -m "$m" -O raw t.qcow2 back.raw 2>err && cmp -s back.raw src.raw; then
            pass "$name"; else fail "$name" "$(cat err)"; fi
    done
done

for ctype in zlib zstd; do
    rm -f c1.qcow2 c8.qcow2
    "$QCOW2" convert -c -m 1 -O qcow2 -o compression_type=$ctype src.raw c1.qcow2 2>err ||
        fail "-c $ctype -m 1" "$(cat err)"
    "$QCOW2" convert -c -m 8 -W -O qcow2 -o compression_type=$ctype src.raw c8.qcow2 2>err ||
        fail "-c $ctype -m 8" "$(cat err)"
    same "-c $ctype" src.raw c8.qcow2
    clean "-c $ctype" c8.qcow2
    if qemu-img check c8.qcow2 | grep -q " [1-9][0-9.]*% compressed clusters"; then
        pass "-c $ctype: compressed clusters stored"
    else fail "-c $ctype: no compressed clusters" "$(qemu-img check c8.qcow2)"; fi
    if cmp -s c1.qcow2 c8.qcow2; then pass "-c $ctype: same file with 1 and 8 threads"
    else fail "-c $ctype: the layout depends on the thread count"; fi
done

# -B: a chain converted onto the same base writes only the overlay's differences.
head -c 8M /dev/urandom >base.raw
qemu-img convert -O qcow2 base.raw base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 1 1M 64k' -c 'write -z 3M 128k' -c 'write -P 2 7M 4k' top.qcow2 >/dev/null
for opt in "" -c; do
    name="-B $opt"
    rm -f new.qcow2
    if "$QCOW2" convert $opt -O qcow2 -B base.qcow2 top.qcow2 new.qcow2 2>err; then
        same "$name" top.qcow2 new.qcow2; clean "$name" new.qcow2
        n=$(qemu-img map --output=json new.qcow2 | grep -c '"depth": 0')
        if [ "$n" -le 3 ]; then pass "$name: only the differences are allocated"
        else fail "$name: $n ranges allocated in the target" "$(qemu-img map new.qcow2)"; fi
    else fail "$name" "$(cat err)"; fi
done
if "$QCOW2" convert -O raw -B base.qcow2 top.qcow2 x.raw 2>err; then
    fail "-B with a raw target is refused"
else pass "-B with a raw target is refused"; fi
finish
