#!/bin/bash
# make_corpus.sh OUTDIR - seed corpora for the libFuzzer targets, made by qemu-img and qemu-io
# (the reference writer): small images in every layout we read, their first clusters for the
# header target, and command scripts for the `qcow2 io` target.
#   OUTDIR/open/    whole images (512-byte to 16 KiB clusters, so that inputs stay small)
#   OUTDIR/header/  the first cluster of each image
#   OUTDIR/io/      qemu-io command lists, one command per line
#   OUTDIR/beneath/ file names for fuzz_beneath
#   OUTDIR/bitmap/  bitmap directories of qemu-img's images, behind fuzz_bitmap's preamble
set -euo pipefail
out=${1:?usage: make_corpus.sh OUTDIR}
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || {
    echo "make_corpus.sh: qemu-img and qemu-io are needed" >&2
    exit 1
}
mkdir -p "$out/open" "$out/header" "$out/io" "$out/bitmap"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

n=0
# img NAME CREATE_OPTS SIZE [QEMU-IO COMMANDS...]
img() {
    local name=$1 opts=$2 size=$3
    shift 3
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    qemu-img create -q -f qcow2 -o "$opts" "$name.qcow2" "$size"
    if [ ${#args[@]} -gt 0 ]; then
        qemu-io -f qcow2 "${args[@]}" "$name.qcow2" >/dev/null
    fi
    cp "$name.qcow2" "$out/open/$name.qcow2"
    n=$((n + 1))
}

# A raw data file for the external-data images: the fuzz target provides one as data.raw.
truncate -s 64k data.raw
qemu-img create -q -f qcow2 -o cluster_size=512 base.qcow2 64k
cp base.qcow2 image.qcow2

img empty_v3_512 cluster_size=512 64k
img empty_v2_512 compat=0.10,cluster_size=512 64k
img data_512 cluster_size=512 128k "write -P 0x11 0 3k" "write -P 0x22 40k 1k"
img data_v2_512 compat=0.10,cluster_size=512 128k "write -P 0x11 512 2k" "write -z 4k 1k"
img zero_clusters_512 cluster_size=512 64k "write -P 0x33 0 4k" "write -z 1k 2k" \
    "write -z -u 2k 1k"
img discarded_512 cluster_size=512 64k "write -P 0x44 0 8k" "discard 2k 4k"
img compressed_4k cluster_size=4096 64k "write -c -P 0x55 0 8k" "write -c -P 0x66 16k 4k"
img zstd_4k cluster_size=4096,compression_type=zstd 32k "write -c -P 0x77 0 4k"
for rb in 1 2 4 8 32 64; do
    img "refcount${rb}_512" "cluster_size=512,refcount_bits=$rb" 64k "write -P 0x88 0 6k"
done
img lazy_512 cluster_size=512,lazy_refcounts=on 64k "write -P 0x99 0 2k"
img big_l1_512 cluster_size=512 16M "write -P 0xaa 0 1k" "write -P 0xab 8M 1k" \
    "write -P 0xac 15M 512"
img refblocks_512 cluster_size=512,refcount_bits=64 256k "write -P 0xbb 0 40k"
img extl2_16k cluster_size=16384,extended_l2=on 256k "write -P 0xcc 1k 2k" \
    "write -z 4k 1k" "write -P 0xcd 20k 512"
img backing_name_512 cluster_size=512,backing_file=base.qcow2,backing_fmt=qcow2 64k
img backing_raw_512 cluster_size=512,backing_file=data.raw,backing_fmt=raw 64k "write -P 0x15 1k 1k"
img backing_self_512 cluster_size=512,backing_file=image.qcow2,backing_fmt=qcow2 64k
img data_file_512 cluster_size=512,data_file=data.raw 64k "write -P 0xdd 0 2k"
img data_file_raw_512 cluster_size=512,data_file=data.raw,data_file_raw=on 64k
img prealloc_512 cluster_size=512,preallocation=metadata 16k
img snapshot_512 cluster_size=512 32k "write -P 0xee 0 2k"
qemu-img snapshot -c snap1 snapshot_512.qcow2
qemu-io -f qcow2 -c "write -P 0xef 0 1k" snapshot_512.qcow2 >/dev/null
cp snapshot_512.qcow2 "$out/open/"
img bitmap_512 cluster_size=512 32k "write -P 0x12 0 2k"
qemu-img bitmap --add bitmap_512.qcow2 b0
cp bitmap_512.qcow2 "$out/open/"
# A dirty lazy-refcounts image: the writer stops without closing.
img dirty_512 cluster_size=512,lazy_refcounts=on 64k
{ qemu-io -f qcow2 -c "write -P 0x13 0 4k" -c "sigraise 9" dirty_512.qcow2 >/dev/null 2>&1 || true; } 2>/dev/null
cp dirty_512.qcow2 "$out/open/"
# A corrupt-marked image: the corrupt bit (incompatible bit 1) set by hand.
img corrupt_512 cluster_size=512 64k "write -P 0x14 0 1k"
printf '\x00\x00\x00\x00\x00\x00\x00\x02' |
    dd of="$out/open/corrupt_512.qcow2" bs=1 seek=72 conv=notrunc status=none

for f in "$out"/open/*.qcow2; do
    cs=$(qemu-img info --output=json "$f" | sed -n 's/.*"cluster-size": \([0-9]*\).*/\1/p')
    head -c "${cs:-512}" "$f" >"$out/header/$(basename "$f" .qcow2).hdr"
done

# bitmap_seed NAME IMAGE: fuzz_bitmap's input for IMAGE's bitmap directory (python-free: the
# extension's fields are read with od).
be() { od -An -t u1 -j "$2" -N "$3" "$1" | awk '{for (i = 1; i <= NF; i++) v = v * 256 + $i} END {printf "%.0f", v}'; }
bitmap_seed() {
    local f=$2 off len t nb dsize doff cbits
    off=$(be "$f" 100 4)
    while :; do
        t=$(be "$f" "$off" 4)
        len=$(be "$f" $((off + 4)) 4)
        [ "$t" = 0 ] && return 0
        if [ "$t" = $((0x23852875)) ]; then
            nb=$(be "$f" $((off + 8)) 4)
            dsize=$(be "$f" $((off + 16)) 8)
            doff=$(be "$f" $((off + 24)) 8)
            cbits=$(be "$f" 20 4)
            {
                head -c 4 <(tail -c +$((off + 9)) "$f")
                printf "\\$(printf %03o $((cbits - 9)))\0\0\0"
                head -c 8 <(tail -c +25 "$f")
                tail -c +$((doff + 1)) "$f" | head -c "$dsize"
            } >"$out/bitmap/$1.bin"
            return 0
        fi
        off=$((off + 8 + (len + 7) / 8 * 8))
    done
}
qemu-img create -q -f qcow2 -o cluster_size=512 bm2.qcow2 1M
qemu-img bitmap --add bm2.qcow2 b0
qemu-img bitmap --add -g 512 --disable bm2.qcow2 "a longer bitmap name"
qemu-io -f qcow2 -c "write 0 4k" bm2.qcow2 >/dev/null
bitmap_seed one "$out/open/bitmap_512.qcow2"
bitmap_seed two bm2.qcow2

cat >"$out/io/basic.txt" <<'IO'
write -P 0x41 0 4k
read -P 0x41 0 4k
read -v 4k 512
flush
map
info
IO
cat >"$out/io/zero_discard.txt" <<'IO'
write -P 0x42 0 64k
write -z 4k 8k
write -z -u 16k 16k
discard 32k 16k
read -P 0 4k 8k
map
IO
cat >"$out/io/compressed.txt" <<'IO'
write -c -P 0x43 0 4k
write -c 8k 8k
read -P 0x43 0 4k
write -P 0x44 1k 1
map
IO
cat >"$out/io/truncate.txt" <<'IO'
write -P 0x45 512k 4k
truncate 256k
truncate 2M
read -P 0 512k 4k
w -q 0x1f0000 0x10000
r -q 1M 0
IO
cat >"$out/io/errors.txt" <<'IO'
read 0 2M
write -u 0 1
write -x 0 1
bogus
read
flush extra
IO
# Names for fuzz_beneath (its directory: a, sub/b, sub/deeper/c and links in and out).
mkdir -p "$out/beneath"
i=0
for name in a sub/b sub/deeper/c ./sub/../a in-link sub/up-link out-link dir-out/x abs-link \
    sub/updir/a sub/deeper/escape/x ../out/x /etc/hostname sub//deeper/./c; do
    printf '%s' "$name" >"$out/beneath/name$i"
    i=$((i + 1))
done
echo "make_corpus.sh: $n images, $(ls "$out/io" | wc -l) command scripts, $i names in $out"
