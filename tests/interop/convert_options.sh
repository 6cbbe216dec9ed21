#!/usr/bin/env bash
# convert_options.sh - the qemu-img convert options over the library's qcow2_convert():
# --target-is-zero, -o preallocation=..., -B with -F, --salvage, -p (a terminal only), and a
# sparse source whose unallocated terabytes are never read. Each case runs qemu-img on a copy
# of the same input and compares contents, allocation (qemu-img map), messages and exit codes.
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

same() { # same NAME A B
    if out=$(qemu-img compare "$2" "$3" 2>&1); then pass "$1"; else fail "$1" "$out"; fi
}
clean() { # clean NAME IMG
    if out=$(qemu-img check "$2" 2>&1); then pass "$1: check"; else fail "$1: check" "$out"; fi
}
# same_run NAME ARGS...: ours and qemu-img with the same arguments exit alike and print the
# same stderr (program names aside).
same_run() {
    local name=$1 ro rq
    shift
    "$QCOW2" "$@" >ours.out 2>ours.err; ro=$?
    qemu-img "$@" >qemu.out 2>qemu.err; rq=$?
    sed -i 's/^[^:]*: //' ours.err qemu.err
    if [ "$ro" = "$rq" ] && cmp -s ours.err qemu.err; then pass "$name"
    else fail "$name: exit $ro vs qemu's $rq" "$(diff ours.err qemu.err | head -n 6)"; fi
}

head -c 6M /dev/urandom >src.raw
dd if=/dev/zero of=src.raw bs=1M seek=2 count=2 conv=notrunc status=none
qemu-img convert -O qcow2 src.raw src.qcow2

# --target-is-zero: refused without -n; with -n into a zeroed target, zero ranges stay holes.
same_run "--target-is-zero without -n" convert --target-is-zero -O raw src.qcow2 x.raw
for side in ours qemu; do
    truncate -s 6M $side.raw
    tool=$QCOW2; [ $side = qemu ] && tool=qemu-img
    $tool convert -n --target-is-zero -O raw src.qcow2 $side.raw 2>err || fail "-n --target-is-zero: $side" "$(cat err)"
done
cmp -s ours.raw src.raw && pass "--target-is-zero: content" || fail "--target-is-zero: content"
if diff <(qemu-img map --output=json -f raw ours.raw) <(qemu-img map --output=json -f raw qemu.raw) >/dev/null
then pass "--target-is-zero: allocation as qemu-img's"
else fail "--target-is-zero: allocation differs" "$(qemu-img map -f raw ours.raw)"; fi

# -o preallocation: the target is allocated as qemu-img allocates it.
for p in off metadata falloc full; do
    for fmt in qcow2 raw; do
        [ $fmt = raw ] && [ $p = metadata ] && continue
        rm -f ours.$fmt qemu.$fmt
        "$QCOW2" convert -O $fmt -o preallocation=$p src.qcow2 ours.$fmt 2>err ||
            { fail "preallocation=$p -O $fmt" "$(cat err)"; continue; }
        qemu-img convert -O $fmt -o preallocation=$p src.qcow2 qemu.$fmt
        same "preallocation=$p -O $fmt" src.qcow2 ours.$fmt
        [ $fmt = qcow2 ] && clean "preallocation=$p" ours.qcow2
        if diff <(qemu-img map --output=json ours.$fmt) <(qemu-img map --output=json qemu.$fmt) >/dev/null
        then pass "preallocation=$p -O $fmt: map as qemu-img's"
        else fail "preallocation=$p -O $fmt: map differs" "$(qemu-img map ours.$fmt | head -n 5)"; fi
    done
done

# -B with -F: the backing format is recorded as given; only the differences are written.
qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 7 1M 64k' top.qcow2 >/dev/null
rm -f new.qcow2
if "$QCOW2" convert -O qcow2 -B src.qcow2 -F qcow2 top.qcow2 new.qcow2 2>err; then
    same "-B -F" top.qcow2 new.qcow2; clean "-B -F" new.qcow2
    if qemu-img info new.qcow2 | grep -q "^backing file format: qcow2"; then pass "-F recorded"
    else fail "-F recorded" "$(qemu-img info new.qcow2)"; fi
else fail "-B -F" "$(cat err)"; fi
same_run "-F without -B" convert -O qcow2 -F qcow2 top.qcow2 n2.qcow2

# --salvage: unreadable (corrupt compressed) sectors become zeros, one warning each.
seq 1 200000 | head -c 1M >text.raw
qemu-img convert -c -O qcow2 text.raw bad.qcow2
size=$(stat -c %s bad.qcow2)
# Fixed garbage, not /dev/urandom: now and then random bytes decode as a valid deflate stream
# (a 64K cluster of fixed-Huffman literals needs no end marker), and neither tool sees an error.
LC_ALL=C awk 'BEGIN { srand(42); for (i = 0; i < 3000; i++) printf "%c", int(rand() * 256) }' |
    dd of=bad.qcow2 bs=1 seek=$((size - 60000)) conv=notrunc status=none
same_run "--salvage" convert --salvage -O raw bad.qcow2 salvaged.raw
mv salvaged.raw ours-salvaged.raw 2>/dev/null
qemu-img convert --salvage -O raw bad.qcow2 qemu-salvaged.raw 2>/dev/null
"$QCOW2" convert --salvage -O raw bad.qcow2 ours-salvaged.raw 2>/dev/null
cmp -s ours-salvaged.raw qemu-salvaged.raw && pass "--salvage: output as qemu-img's" ||
    fail "--salvage: output differs"
# Without it, the first error stops the copy: qemu-img's words, then what we know more.
"$QCOW2" convert -O raw bad.qcow2 failed.raw 2>ours.err; ro=$?
qemu-img convert -O raw bad.qcow2 failed.raw 2>qemu.err; rq=$?
if [ $ro = $rq ] && grep -q "^qcow2: error while reading at byte 786432: .*decompress" ours.err &&
    grep -q "error while reading at byte 786432" qemu.err; then pass "without --salvage"
else fail "without --salvage: exit $ro vs $rq" "$(cat ours.err qemu.err)"; fi

# -p: the progress line on a terminal only (not in a pipe or a log).
"$QCOW2" convert -p -O raw src.qcow2 p.raw >p.out 2>&1
[ ! -s p.out ] && pass "-p into a pipe prints nothing" || fail "-p into a pipe" "$(od -c p.out | head -n 3)"
if command -v script >/dev/null 2>&1; then
    script -qc "'$QCOW2' convert -p -O raw src.qcow2 p.raw" /dev/null >p.tty 2>&1
    if grep -q "(100.00/100%)" p.tty; then pass "-p on a terminal"
    else fail "-p on a terminal" "$(od -c p.tty | head -n 3)"; fi
else skip "-p on a terminal: no script(1)"; fi

# A sparse 64 TiB source with two data clusters: the copy follows the data (a whole read of
# the virtual size would not end in this test's lifetime).
qemu-img create -q -f qcow2 big.qcow2 64T
qemu-io -c 'write -P 9 0 64k' -c 'write -P 8 40T 64k' big.qcow2 >/dev/null
rm -f bigout.qcow2
if run_cli 120 out err "$QCOW2" convert -O qcow2 big.qcow2 bigout.qcow2; then
    same "sparse 64T -> qcow2" big.qcow2 bigout.qcow2
else fail "sparse 64T -> qcow2" "$(cat err)"; fi
finish
