#!/usr/bin/env bash
# read_matrix.sh - images written by QEMU (qemu-img create/convert -c, qemu-io) must read back
# through our CLI exactly as qemu-img reads them.
# For every image:  `$QCOW2 convert -O raw` == `qemu-img convert -O raw` (cmp), `$QCOW2 map
# --output=json` says the same as `qemu-img map --output=json` about every byte (normalized by
# map_normalize in lib.sh), `$QCOW2 info --output=json` agrees with qemu-img on the geometry and
# features, and none of our commands changes the image file.
# Covers cluster sizes 512..2M, extended L2, refcount widths, v2/v3, zlib/zstd compression, zero
# clusters and subclusters, discards, unaligned writes, several L2 tables, backing chains mixing
# raw and qcow2, overlays larger than their backing, external data files, preallocation, dirty
# (lazy refcounts) images and internal snapshots.

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-60}

# --- case bookkeeping ------------------------------------------------------------------------
# Each case runs in its own directory with relative file names, and every command that builds
# the images is remembered, so a failure can print a self-contained recipe.

CASE=""
RECIPE=""
CASE_OK=1

begin_case() {
    CASE=$1
    CASE_OK=1
    RECIPE=""
    mkdir -p "$T/$CASE"
    cd "$T/$CASE" || exit 1
}

# gen CMD...: run an image-building command (qemu-img, qemu-io, dd, ...) and record it.
gen() {
    RECIPE="$RECIPE$(q "$@")
"
    [ "$CASE_OK" = 1 ] || return 1
    if ! "$@" >gen.out 2>&1; then
        fail "$CASE: building the image failed: $(q "$@")" "$(tail -n 3 gen.out)"
        CASE_OK=0
        return 1
    fi
}

# io IMG CMD...: qemu-io with one -c per command.
io() {
    local img=$1 args=() c
    shift
    for c in "$@"; do
        args+=(-c "$c")
    done
    gen qemu-io "${args[@]}" "$img"
}

recipe() {
    printf 'repro (in an empty directory):\n%s' "$RECIPE"
}

# --- the checks ------------------------------------------------------------------------------

# same_raw A B: byte-identical. Large sparse files go through `qemu-img compare`, which skips
# holes (cmp would read gigabytes of zeros); it is exact for raw files of equal size.
same_raw() {
    local sa sb
    sa=$(stat -c %s "$1") sb=$(stat -c %s "$2")
    if [ "$sa" != "$sb" ]; then
        echo "sizes differ: $1 $sa, $2 $sb"
        return 1
    fi
    if [ "$sa" -le $((256 * 1024 * 1024)) ]; then
        cmp "$1" "$2"
    else
        qemu-img compare -f raw -F raw "$1" "$2" >/dev/null || {
            qemu-img compare -f raw -F raw "$1" "$2" | head -n 1
            return 1
        }
    fi
}

# check_read IMG GRAN: run all checks on IMG, normalizing maps to GRAN-byte granules.
check_read() {
    local img=$1 gran=$2 sum_before sum_after rc
    [ "$CASE_OK" = 1 ] || return 0

    if ! qemu-img convert -O raw "$img" ref.raw 2>ref.err; then
        fail "$CASE: qemu-img convert failed (harness)" "$(cat ref.err)"
        return 0
    fi
    sum_before=$(sha256sum <"$img")

    # 1. contents
    rm -f out.raw
    run_cli "$CLI_TIMEOUT" convert.out convert.err "$QCOW2" convert -O raw "$img" out.raw
    rc=$?
    if [ $rc -ne 0 ]; then
        fail "$CASE: convert exited $rc" "$(head -n 5 convert.err)" "$(recipe)" \
            "$(q "$QCOW2" convert -O raw "$img" out.raw)"
    elif [ -s convert.err ] && sanitizer_text convert.err >/dev/null; then
        fail "$CASE: convert: sanitizer report" "$(head -n 20 convert.err)" "$(recipe)"
    elif ! same_raw ref.raw out.raw >cmp.out 2>&1; then
        fail "$CASE: convert output differs from qemu-img's" "$(head -n 1 cmp.out)" \
            "first differing bytes (offset ref ours, octal):" \
            "$(cmp -l ref.raw out.raw 2>/dev/null | head -n 5)" \
            "sizes: ref $(stat -c %s ref.raw) ours $(stat -c %s out.raw)" "$(recipe)" \
            "qemu-img convert -O raw $img ref.raw; $(q "$QCOW2" convert -O raw "$img" out.raw); cmp ref.raw out.raw"
    else
        pass "$CASE: convert"
    fi

    # 2. map
    qemu-img map --output=json "$img" >ref.map 2>ref.err || {
        fail "$CASE: qemu-img map failed (harness)" "$(cat ref.err)"
        return 0
    }
    map_normalize "$gran" <ref.map >ref.norm
    if grep -q '^range-' ref.norm; then
        fail "$CASE: harness: granularity $gran too coarse for qemu-img's map" "$(grep '^range-' ref.norm | head -n 3)"
    fi
    run_cli "$CLI_TIMEOUT" out.map map.err "$QCOW2" map --output=json "$img"
    rc=$?
    if [ $rc -ne 0 ]; then
        fail "$CASE: map exited $rc" "$(head -n 5 map.err)" "$(recipe)" \
            "$(q "$QCOW2" map --output=json "$img")"
    elif sanitizer_text map.err >/dev/null; then
        fail "$CASE: map: sanitizer report" "$(head -n 20 map.err)" "$(recipe)"
    else
        map_normalize "$gran" <out.map >out.norm
        if diff -u ref.norm out.norm >map.diff; then
            pass "$CASE: map"
        else
            fail "$CASE: map differs from qemu-img's (granule $gran bytes; - qemu-img, + ours)" \
                "$(grep '^[-+][^-+]' map.diff | head -n 16)" \
                "($(grep -c '^[-+][^-+]' map.diff) differing lines)" "$(recipe)" \
                "qemu-img map --output=json $img; $(q "$QCOW2" map --output=json "$img")"
        fi
    fi

    # 3. info
    qemu-img info --output=json "$img" >ref.info 2>ref.err || {
        fail "$CASE: qemu-img info failed (harness)" "$(cat ref.err)"
        return 0
    }
    run_cli "$CLI_TIMEOUT" out.info info.err "$QCOW2" info --output=json "$img"
    rc=$?
    if [ $rc -ne 0 ]; then
        fail "$CASE: info exited $rc" "$(head -n 5 info.err)" "$(recipe)" \
            "$(q "$QCOW2" info --output=json "$img")"
    elif sanitizer_text info.err >/dev/null; then
        fail "$CASE: info: sanitizer report" "$(head -n 20 info.err)" "$(recipe)"
    else
        local keys="virtual-size cluster-size format compat extended-l2 refcount-bits \
            compression-type lazy-refcounts data-file data-file-raw backing-filename \
            backing-filename-format corrupt" bad=() line
        # Every key qemu-img prints must be there with the same value.
        json_fields out.info $keys >out.fields
        while IFS= read -r line; do
            bad+=("${line%%=*}: qemu-img '${line#*=}', ours '$(sed -n "s/^${line%%=*}=//p" out.fields)'")
        done < <(json_fields ref.info $keys | grep -vxF -f out.fields)
        if [ ${#bad[@]} -eq 0 ]; then
            pass "$CASE: info"
        else
            fail "$CASE: info disagrees with qemu-img" "${bad[@]}" "$(recipe)" \
                "qemu-img info --output=json $img; $(q "$QCOW2" info --output=json "$img")"
        fi
    fi

    # 4. read-only: nothing we ran may have touched the image
    sum_after=$(sha256sum <"$img")
    if [ "$sum_before" = "$sum_after" ]; then
        pass "$CASE: unmodified"
    else
        fail "$CASE: the image file changed while we only read it" "$(recipe)"
    fi
}

# --- image recipes ---------------------------------------------------------------------------

# The standard pattern for a cluster size C on a virtual size V (both in bytes). Distinct
# byte patterns per write, so a misplaced cluster shows as a content difference.
#   full clusters, unaligned writes (one crossing a cluster boundary), zero clusters over
#   nothing, zero clusters over data (kept allocation), a discard of allocated data, a write
#   near the end, and writes past (and across) the end of the first L2 table when V allows.
pattern_writes() {
    local img=$1 c=$2 v=$3 l2cover=$4
    local cmds=(
        "write -P 0x11 0 $((2 * c))"
        "write -P 0x22 $((3 * c + 100)) 1000"
        "write -P 0x23 $((6 * c - 7)) 14"
        "write -z $((7 * c)) $((2 * c))"
        "write -P 0x33 $((10 * c)) $((4 * c))"
        "write -z $((11 * c)) $c"
        "discard $((12 * c)) $c"
        "write -P 0x34 $((v - 2 * c + 5)) $((c + 100))"
    )
    if [ $((l2cover + 2 * c)) -lt $((v - 2 * c)) ]; then
        cmds+=("write -P 0x55 $((l2cover - 100)) 200" "write -P 0x56 $((l2cover + c)) $c")
    fi
    io "$img" "${cmds[@]}"
}

# Subcluster pattern for extended L2 (subcluster S = C/32), in clusters 16.. of the image:
# zero subclusters inside an allocated cluster, a partial-subcluster write into an unallocated
# cluster, zero subclusters on an unallocated cluster, and a discard of a whole cluster.
subcluster_writes() {
    local img=$1 c=$2
    local s=$((c / 32)) b=$((16 * c))
    io "$img" \
        "write -P 0x61 $b $c" \
        "write -z $((b + 2 * s)) $s" \
        "write -z $((b + 6 * s)) $((3 * s))" \
        "write -P 0x62 $((b + c + 3 * s + 10)) 20" \
        "write -P 0x63 $((b + c + 9 * s)) $((2 * s))" \
        "write -z $((b + 2 * c + 4 * s)) $((4 * s))" \
        "write -P 0x64 $((b + 3 * c)) $((2 * c))" \
        "discard $((b + 3 * c)) $c"
}

size_for() {
    case $1 in
        512) echo $((1024 * 1024)) ;;
        4096) echo $((8 * 1024 * 1024)) ;;
        16384) echo $((40 * 1024 * 1024)) ;;
        65536) echo $((8 * 1024 * 1024)) ;;
        2097152) echo $((64 * 1024 * 1024)) ;;
    esac
}

# Map granule: the subcluster (or cluster), at most 64 KiB.
gran_for() {
    local c=$1 ext=$2 g
    g=$c
    [ "$ext" = on ] && g=$((c / 32))
    [ "$g" -gt 65536 ] && g=65536
    echo "$g"
}

start_time=$(date +%s)

# 1. Plain qcow2 v3, every cluster size x refcount width {1,16,64} (one width per cluster size
#    in the short form: reading never depends on the refcount width).
ci=0
for c in 512 4096 65536 2097152; do
    v=$(size_for $c)
    ci=$((ci + 1))
    for rb in $(one_or_all $ci 1 16 64); do
        begin_case "v3-c$c-rb$rb"
        gen qemu-img create -f qcow2 -o cluster_size=$c,refcount_bits=$rb img.qcow2 "$v"
        pattern_writes img.qcow2 $c "$v" $((c * c / 8))
        check_read img.qcow2 "$(gran_for $c off)"
    done
done

# 2. Extended L2 (cluster sizes >= 16k), with the subcluster pattern on top.
ci=0
for c in 16384 65536 2097152; do
    v=$(size_for $c)
    ci=$((ci + 1))
    for rb in $(one_or_all $ci 16 64 1); do
        [ $c = 2097152 ] && [ $rb = 1 ] && continue
        [ $c = 16384 ] && [ $rb = 1 ] && continue
        begin_case "v3-extl2-c$c-rb$rb"
        gen qemu-img create -f qcow2 -o cluster_size=$c,extended_l2=on,refcount_bits=$rb img.qcow2 "$v"
        pattern_writes img.qcow2 $c "$v" $((c * c / 16))
        subcluster_writes img.qcow2 $c
        check_read img.qcow2 "$(gran_for $c on)"
    done
done

# 3. compat=0.10 (v2: no zero flag, zero writes become deallocation).
for c in 512 4096 65536 2097152; do
    v=$(size_for $c)
    begin_case "v2-c$c"
    gen qemu-img create -f qcow2 -o compat=0.10,cluster_size=$c img.qcow2 "$v"
    pattern_writes img.qcow2 $c "$v" $((c * c / 8))
    check_read img.qcow2 "$(gran_for $c off)"
done

# 4. Compressed clusters: qemu-img convert -c from a raw source holding patterns, zeros, a
#    random (incompressible) stretch and a partial last cluster.
make_source() { # make_source FILE SIZE
    gen qemu-img create -f raw "$1" "$2"
    io_raw "$1" "write -P 0x71 0 300k" "write -P 0x72 400k 123k" "write -P 0x73 1M 1M" \
        "write -P 0x74 $(($2 - 1536)) 1536"
    gen dd if=/dev/urandom of="$1" bs=64k count=2 seek=40 conv=notrunc status=none
}
io_raw() {
    local img=$1 args=() c
    shift
    for c in "$@"; do
        args+=(-c "$c")
    done
    gen qemu-io -f raw "${args[@]}" "$img"
}
src_size=$((4 * 1024 * 1024 + 1536))
for spec in 512:zlib:16:1.1:off 4096:zlib:1:1.1:off 4096:zstd:64:1.1:off 65536:zlib:16:1.1:off \
    65536:zstd:16:1.1:off 65536:zlib:16:0.10:off 16384:zlib:16:1.1:on 65536:zstd:2:1.1:on \
    2097152:zlib:16:1.1:off 2097152:zstd:16:1.1:on; do
    IFS=: read -r c ct rb compat ext <<<"$spec"
    if [ "$ct" = zstd ] && ! qemu_has_zstd; then
        skip "compressed-c$c-$ct: qemu-img has no zstd"
        continue
    fi
    begin_case "compressed-c$c-$ct-rb$rb-v$compat-extl2$ext"
    make_source src.raw $src_size
    opts=cluster_size=$c,refcount_bits=$rb,compat=$compat
    [ "$ct" = zstd ] && opts=$opts,compression_type=zstd
    [ "$ext" = on ] && opts=$opts,extended_l2=on
    gen qemu-img convert -c -f raw -O qcow2 -o "$opts" src.raw img.qcow2
    check_read img.qcow2 "$(gran_for "$c" "$ext")"
done

# 4b. Compressed image rewritten by qemu-io: partial overwrite (COW of a compressed cluster),
#     zeroing and discarding compressed clusters, a new write next to them.
for spec in 4096:zlib:off 65536:zstd:off 65536:zlib:on; do
    IFS=: read -r c ct ext <<<"$spec"
    if [ "$ct" = zstd ] && ! qemu_has_zstd; then
        skip "compressed-rewritten-c$c-$ct: qemu-img has no zstd"
        continue
    fi
    begin_case "compressed-rewritten-c$c-$ct-extl2$ext"
    make_source src.raw $src_size
    opts=cluster_size=$c,compression_type=$ct,extended_l2=$ext
    gen qemu-img convert -c -f raw -O qcow2 -o "$opts" src.raw img.qcow2
    io img.qcow2 "write -P 0x81 $((c + 300)) 100" "write -z $((3 * c)) $c" "discard $((5 * c)) $c" \
        "write -P 0x82 $((1024 * 1024 + 2 * c)) $((c / 2))"
    check_read img.qcow2 "$(gran_for "$c" "$ext")"
done

# 5. Zero subclusters hiding backing data, partial-subcluster writes that fall through to the
#    backing file, and zero subclusters over allocated data (64k clusters, 2k subclusters).
begin_case "extl2-zero-subclusters-over-backing"
gen qemu-img create -f qcow2 -o cluster_size=65536 base.qcow2 4M
io base.qcow2 "write -P 0xa1 0 4M"
gen qemu-img create -f qcow2 -o cluster_size=65536,extended_l2=on -b base.qcow2 -F qcow2 img.qcow2
io img.qcow2 "write -z 2k 2k" "write -z 10k 6k" "write -P 0xb1 68k 2k" "write -P 0xb2 $((128 * 1024 + 5000)) 3000" \
    "write -P 0xb3 192k 64k" "write -z 198k 2k" "write -z 250k 4k" "write -z 320k 128k" \
    "discard 512k 64k" "write -P 0xb4 1M 1"
check_read img.qcow2 2048

# 6. A 3-deep chain: raw base <- qcow2 (4k clusters) <- qcow2 with extended L2 (64k); the top is
#    larger than the chain below it, and the raw base is sparse and ends mid-cluster.
begin_case "chain3-raw-qcow2-extl2"
gen qemu-img create -f raw base.raw $((3 * 1024 * 1024 + 4096 * 5))
io_raw base.raw "write -P 0xc1 0 512k" "write -P 0xc2 1M 256k" "write -P 0xc3 3M 20k"
gen qemu-img create -f qcow2 -o cluster_size=4096 -b base.raw -F raw mid.qcow2
io mid.qcow2 "write -P 0xd1 64k 8k" "write -z 128k 64k" "discard 256k 16k" "write -P 0xd2 1100k 3000" \
    "write -P 0xd3 2M 64k" "write -z 3M 8k"
gen qemu-img create -f qcow2 -o cluster_size=65536,extended_l2=on -b mid.qcow2 -F qcow2 img.qcow2 6M
io img.qcow2 "write -P 0xe1 66k 2k" "write -z 130k 2k" "write -P 0xe2 $((3 * 1024 * 1024 + 10 * 1024)) 30k" \
    "write -P 0xe3 5M 64k" "write -z 4M 128k" "discard 2M 64k" "write -P 0xe4 $((6 * 1024 * 1024 - 512)) 512"
check_read img.qcow2 512

# 7. Overlay larger than its qcow2 backing, backing size not a multiple of the overlay's
#    cluster size; zero write straddling the backing's end.
begin_case "overlay-larger-than-backing"
gen qemu-img create -f qcow2 -o cluster_size=4096 base.qcow2 $((1024 * 1024 + 2560))
io base.qcow2 "write -P 0xf1 0 $((1024 * 1024 + 2560))"
gen qemu-img create -f qcow2 -o cluster_size=65536 -b base.qcow2 -F qcow2 img.qcow2 3M
io img.qcow2 "write -P 0xf2 2M 100k" "write -P 0xf3 100k 1k" "write -z $((1024 * 1024 - 64 * 1024)) 128k" \
    "write -P 0xf4 $((1024 * 1024 + 64 * 1024)) 10"
check_read img.qcow2 512

# 8. A v2 overlay over a v3 backing file, read through the chain.
begin_case "v2-overlay-over-v3"
gen qemu-img create -f qcow2 -o cluster_size=4096 base.qcow2 2M
io base.qcow2 "write -P 0x91 0 1M" "write -z 1M 512k"
gen qemu-img create -f qcow2 -o compat=0.10,cluster_size=512 -b base.qcow2 -F qcow2 img.qcow2
io img.qcow2 "write -P 0x92 1000 5000" "write -P 0x93 $((1024 * 1024 + 4096)) 4096"
check_read img.qcow2 512

# 9. External data files: plain, data_file_raw=on, and with extended L2.
for spec in off:off raw:off off:on; do
    IFS=: read -r raw ext <<<"$spec"
    begin_case "data-file-raw$raw-extl2$ext"
    opts=data_file=img.data,cluster_size=65536,extended_l2=$ext
    [ "$raw" = raw ] && opts=$opts,data_file_raw=on
    gen qemu-img create -f qcow2 -o "$opts" img.qcow2 4M
    pattern_writes img.qcow2 65536 $((4 * 1024 * 1024)) $((1 << 30))
    [ "$ext" = on ] && subcluster_writes img.qcow2 65536
    check_read img.qcow2 "$(gran_for 65536 "$ext")"
done

# 10. Preallocated images with writes: metadata (4k), full (512), and falloc with extended L2
#     over a backing file (unallocated-but-reserved subclusters read from the backing file).
begin_case "prealloc-metadata-c4096"
gen qemu-img create -f qcow2 -o cluster_size=4096,preallocation=metadata img.qcow2 2M
io img.qcow2 "write -P 0x41 4k 4k" "write -P 0x42 10000 100" "write -z 64k 8k" "discard 128k 8k"
check_read img.qcow2 4096

begin_case "prealloc-full-c512"
gen qemu-img create -f qcow2 -o cluster_size=512,preallocation=full img.qcow2 256k
io img.qcow2 "write -P 0x43 4k 4k" "write -z 64k 8k" "discard 128k 8k"
check_read img.qcow2 512

begin_case "prealloc-falloc-extl2-backing"
gen qemu-img create -f qcow2 -o cluster_size=65536 base.qcow2 2M
io base.qcow2 "write -P 0x44 0 2M"
gen qemu-img create -f qcow2 -o cluster_size=65536,extended_l2=on,preallocation=falloc -b base.qcow2 -F qcow2 img.qcow2
io img.qcow2 "write -P 0x45 4k 2k" "write -z 70k 4k" "write -P 0x46 1M 64k"
check_read img.qcow2 2048

# 11. Lazy refcounts left dirty (qemu-io aborts without a clean close): readable read-only.
begin_case "lazy-refcounts-dirty"
gen qemu-img create -f qcow2 -o lazy_refcounts=on,cluster_size=4096 img.qcow2 4M
# qemu-io dies on SIGABRT here by design; the inner shell keeps the "Aborted" notice quiet.
gen bash -c 'ulimit -c 0; qemu-io "$@" >/dev/null 2>&1; true' _ -c "write -P 0x51 0 64k" -c "write -P 0x52 1M 4k" \
    -c "write -z 8k 4k" -c abort img.qcow2
if [ "$CASE_OK" = 1 ] && [ $(($(peek_be64 img.qcow2 72) & 1)) -ne 1 ]; then
    fail "$CASE: harness: qemu-io abort did not leave the dirty bit set"
    CASE_OK=0
fi
check_read img.qcow2 4096

# 12. Internal snapshots: the active layer after overwrites of shared clusters.
begin_case "snapshots-active-layer"
gen qemu-img create -f qcow2 -o cluster_size=4096 img.qcow2 4M
io img.qcow2 "write -P 0x57 0 256k"
gen qemu-img snapshot -c s1 img.qcow2
io img.qcow2 "write -P 0x58 4k 4k" "write -z 64k 64k" "discard 128k 64k" "write -P 0x59 1M 8k"
gen qemu-img snapshot -c s2 img.qcow2
io img.qcow2 "write -P 0x5a 6k 100"
check_read img.qcow2 4096

# 13. Virtual size not a multiple of the cluster size, data in the partial last cluster.
begin_case "unaligned-virtual-size"
gen qemu-img create -f qcow2 -o cluster_size=65536 img.qcow2 $((1000 * 1024 + 512))
io img.qcow2 "write -P 0x61 $((960 * 1024)) $((40 * 1024 + 512))" "write -P 0x62 0 512"
check_read img.qcow2 512

# 14. Guest offsets beyond 4 GiB (sparse; nothing here is large on disk): writes crossing the
#     4 GiB boundary, in a plain image and with 2 MiB extended-L2 clusters.
begin_case "beyond-4GiB-c65536"
gen qemu-img create -f qcow2 img.qcow2 6G
io img.qcow2 "write -P 0x91 0 64k" "write -P 0x92 $((4 * 1024 * 1024 * 1024 - 100)) 200" \
    "write -P 0x93 5G 1M" "write -z $((5 * 1024 * 1024 * 1024 + 64 * 1024)) 64k" "write -P 0x94 $((6 * 1024 * 1024 * 1024 - 512)) 512"
check_read img.qcow2 65536

begin_case "beyond-4GiB-extl2-c2M"
gen qemu-img create -f qcow2 -o cluster_size=2M,extended_l2=on img.qcow2 5G
io img.qcow2 "write -P 0x95 $((4 * 1024 * 1024 * 1024 - 4096)) 8k" "write -z $((4 * 1024 * 1024 * 1024 + 128 * 1024)) 64k" \
    "write -P 0x96 $((4 * 1024 * 1024 * 1024 + 3 * 1024 * 1024)) 100"
check_read img.qcow2 65536

# 15. An overlay over a compressed backing file (reads fall through to compressed clusters).
begin_case "overlay-over-compressed"
make_source src.raw $src_size
gen qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 src.raw base.qcow2
gen qemu-img create -f qcow2 -o cluster_size=65536,extended_l2=on -b base.qcow2 -F qcow2 img.qcow2
io img.qcow2 "write -P 0x97 2k 2k" "write -z 66k 4k" "write -P 0x98 1M 64k"
check_read img.qcow2 2048

# 16. Grown and shrunk images: the L1 table is moved and enlarged by a resize, then written past
#     the old end; and a shrink that drops data.
begin_case "resized-grown"
gen qemu-img create -f qcow2 -o cluster_size=512 img.qcow2 64k
io img.qcow2 "write -P 0xa1 0 64k"
gen qemu-img resize img.qcow2 4M
io img.qcow2 "write -P 0xa2 $((64 * 1024 - 256)) 1k" "write -P 0xa3 3M 100k"
check_read img.qcow2 512

begin_case "resized-shrunk"
gen qemu-img create -f qcow2 -o cluster_size=4096 img.qcow2 4M
io img.qcow2 "write -P 0xa4 0 4M"
gen qemu-img resize --shrink img.qcow2 $((3 * 1024 * 1024 + 512))
check_read img.qcow2 512

# 17. Refcount table growth: 512-byte clusters with 64-bit refcounts (one refcount block covers
#     32 KiB) and a few MiB of data, so the table is reallocated several times.
begin_case "reftable-growth-c512-rb64"
gen qemu-img create -f qcow2 -o cluster_size=512,refcount_bits=64 img.qcow2 8M
io img.qcow2 "write -P 0xa5 0 3M" "write -P 0xa6 5M 1M"
check_read img.qcow2 512

# 18. Backing file names: a relative path into a subdirectory, "../" from an overlay in another
#     directory, and an absolute path.
begin_case "backing-paths"
gen mkdir -p sub other
gen qemu-img create -f qcow2 sub/base.qcow2 2M
io sub/base.qcow2 "write -P 0xa7 0 2M"
gen qemu-img create -f qcow2 -b base.qcow2 -F qcow2 sub/mid.qcow2
io sub/mid.qcow2 "write -P 0xa8 64k 64k"
gen qemu-img create -f qcow2 -b ../sub/mid.qcow2 -F qcow2 other/up.qcow2
io other/up.qcow2 "write -P 0xa9 128k 64k"
gen qemu-img create -f qcow2 -b "$PWD/other/up.qcow2" -F qcow2 img.qcow2
io img.qcow2 "write -P 0xaa 192k 64k"
check_read img.qcow2 65536

# 19. No backing format stored (the extension's type is patched to an unknown one, which must
#     be skipped): the backing file's format is probed. Plus a persistent bitmap (bitmaps
#     extension, autoclear bit 0) in the overlay.
begin_case "backing-format-probed-unknown-ext-bitmap"
gen qemu-img create -f qcow2 base.qcow2 2M
io base.qcow2 "write -P 0xab 0 1M"
gen qemu-img create -f qcow2 -b base.qcow2 -F qcow2 img.qcow2
io img.qcow2 "write -P 0xac 64k 64k"
gen qemu-img bitmap --add img.qcow2 b0
if [ "$CASE_OK" = 1 ]; then
    if [ "$(peek_hex img.qcow2 112 4)" = e2792aca ]; then
        gen poke_be32 img.qcow2 112 0x7a7a7a7a
    else
        fail "$CASE: harness: the backing format extension is not the first one"
        CASE_OK=0
    fi
fi
check_read img.qcow2 65536

# 20. A plain raw file (sparse, size not a multiple of 4k), read directly.
begin_case "raw-image"
gen qemu-img create -f raw img.raw $((2 * 1024 * 1024 + 1536))
io_raw img.raw "write -P 0xad 4k 8k" "write -P 0xae 1M 1536" "write -P 0xaf $((2 * 1024 * 1024)) 1536"
check_read img.raw 512

cd "$T" || exit 1
echo "# $TEST_NAME: $(($(date +%s) - start_time)) s"
finish
