#!/usr/bin/env bash
# write_diff.sh - differential test of the write path against qemu-io and a reference model.
# For each configuration (cluster size, extended L2, refcount width, version, backing) and
# seed, a random sequence of writes, zero writes (with and without -u), discards and flushes
# over a small region runs through `qcow2 io` and through `qemu-io` on identical images, and
# through qemu-io on a raw reference model (discard modelled as zeroing the whole clusters it
# covers). Afterwards our image is qemu-img-check clean, reads back equal to the model through
# qemu-img and through our own convert, and qemu-io's image equals the model too. Half-and-half
# runs (qemu-io then us, us then qemu-io) check cross-tool consistency.
. "$(dirname "$0")/lib.sh"

# make check: one seed per configuration (a different one for each); make stress: 16.
if [ "$FULL" = 1 ]; then SEEDS=${WRITE_DIFF_SEEDS:-4}; else SEEDS=${WRITE_DIFF_SEEDS:-1}; fi
OPS=${WRITE_DIFF_OPS:-200}

# gen_ops SEED SIZE CLUSTER SUBCLUSTER ALLOW_DISCARD -> lines "ours|model" on stdout
gen_ops() {
    awk -v seed="$1" -v size="$2" -v cs="$3" -v sc="$4" -v disc="$5" -v ops="$OPS" '
    function rnd(n) { return int(rand() * n) }
    function pick_off(   g) {
        g = rnd(3)
        if (g == 0) return rnd(size - 1)
        if (g == 1) return rnd(size / 512) * 512
        return rnd(size / sc) * sc
    }
    function pick_len(off,   g, l, max) {
        g = rnd(4)
        if (g == 0) l = 1 + rnd(4096)
        else if (g == 1) l = (1 + rnd(8)) * 512
        else if (g == 2) l = (1 + rnd(4)) * sc
        else l = 1 + rnd(3 * cs)
        if (l > 262144 + rnd(4096)) l = 262144 + rnd(4096)
        max = size - off
        if (l > max) l = max
        return l
    }
    BEGIN {
        srand(seed)
        for (i = 0; i < ops; i++) {
            k = rnd(20); off = pick_off(); len = pick_len(off)
            if (len < 1) continue
            if (k < 10) {
                p = 1 + rnd(254)
                printf "write -P %d %d %d|write -P %d %d %d\n", p, off, len, p, off, len
            } else if (k < 13) {
                printf "write -z %d %d|write -z %d %d\n", off, len, off, len
            } else if (k < 16) {
                printf "write -z -u %d %d|write -z %d %d\n", off, len, off, len
            } else if (k < 19 && disc) {
                a = int((off + cs - 1) / cs) * cs
                e = off + len
                b = (e == size) ? e : int(e / cs) * cs
                if (b > a) printf "discard %d %d|write -z %d %d\n", off, len, a, b - a
                else printf "discard %d %d|\n", off, len
            } else {
                printf "flush|\n"
            }
        }
    }'
}

# run_tool TOOL IMG FMT OPSFILE FIELD [FROM TO]: run ops (field 1 = ours, 2 = model) in one
# process, lines FROM..TO.
run_tool() {
    local tool=$1 img=$2 fmt=$3 opsfile=$4 field=$5 from=${6:-1} to=${7:-999999}
    local -a args=()
    local line
    while IFS= read -r line; do
        [ -n "$line" ] && args+=(-c "$line")
    done < <(awk -F'|' -v f="$field" -v a="$from" -v b="$to" 'NR >= a && NR <= b { print $f }' "$opsfile")
    [ ${#args[@]} -eq 0 ] && return 0
    if [ "$tool" = ours ]; then
        timeout 300 "$QCOW2" io -f "$fmt" "${args[@]}" "$img" >/dev/null 2>"$T/err"
    else
        timeout 300 qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null 2>"$T/err"
    fi
}

# make_image NAME CREATE_OPTS BACKING_KIND SIZE
make_image() {
    local name=$1 opts=$2 kind=$3 size=$4
    case "$kind" in
    none) qemu-img create -q -f qcow2 -o "$opts" "$T/$name" "$size" ;;
    raw) qemu-img create -q -f qcow2 -o "$opts" -b base.raw -F raw "$T/$name" "$size" ;;
    chain) qemu-img create -q -f qcow2 -o "$opts" -b mid.qcow2 -F qcow2 "$T/$name" "$size" ;;
    esac
}

prepare_backing() {
    local size=$1
    rm -f "$T/base.raw" "$T/mid.qcow2"
    qemu-img create -q -f raw "$T/base.raw" "$size"
    qemu-io -f raw -c "write -P 0x11 0 $((size / 2))" "$T/base.raw" >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4k -b base.raw -F raw "$T/mid.qcow2" "$size"
    qemu-io -c "write -P 0x22 $((size / 4)) $((size / 2))" -c "write -z $((size / 8)) 65536" \
        "$T/mid.qcow2" >/dev/null
}

model_base() {
    local kind=$1 size=$2
    case "$kind" in
    none) qemu-img create -q -f raw "$T/model.raw" "$size" ;;
    raw) qemu-img convert -O raw "$T/base.raw" "$T/model.raw" ;;
    chain) qemu-img convert -O raw "$T/mid.qcow2" "$T/model.raw" ;;
    esac
}

verify() { # verify NAME IMG
    local name=$1 img=$2 out
    if ! out=$(qemu-img check "$img" 2>&1); then
        fail "$name: qemu-img check" "$out"
        return
    fi
    if ! out=$(qemu-img compare -f qcow2 -F raw "$img" "$T/model.raw" 2>&1); then
        fail "$name: qemu-img compare with the model" "$out"
        return
    fi
    rm -f "$T/ours.raw"
    if ! "$QCOW2" convert -O raw "$img" "$T/ours.raw" 2>"$T/err" || ! cmp -s "$T/ours.raw" "$T/model.raw"; then
        fail "$name: our read-back differs from the model" "$(cat "$T/err")" "$(cmp "$T/ours.raw" "$T/model.raw" 2>&1)"
        return
    fi
    pass "$name"
}

one_config() { # one_config OPTS KIND SIZE SEED
    local opts=$1 kind=$2 size=$3 seed=$4
    local cs sc=0 disc=1 name="[$opts backing=$kind seed=$seed]"
    cs=$(echo "$opts" | sed -n 's/.*cluster_size=\([0-9]*\).*/\1/p')
    [ -z "$cs" ] && cs=65536
    sc=$cs
    case "$opts" in *extended_l2=on*) sc=$((cs / 32)) ;; esac
    case "$opts" in *compat=0.10*) [ "$kind" != none ] && disc=0 ;; esac
    gen_ops "$seed" "$size" "$cs" "$sc" "$disc" >"$T/ops"
    local n
    n=$(wc -l <"$T/ops")
    local half=$((n / 2))

    model_base "$kind" "$size"
    if ! run_tool qemu "$T/model.raw" raw "$T/ops" 2; then
        fail "$name: model run failed" "$(cat "$T/err")"
        return
    fi
    qemu-img resize -q -f raw "$T/model.raw" "$size" 2>/dev/null

    make_image ours.qcow2 "$opts" "$kind" "$size"
    if ! run_tool ours "$T/ours.qcow2" qcow2 "$T/ops" 1; then
        fail "$name: qcow2 io failed" "$(tail -3 "$T/err")"
        return
    fi
    verify "$name ours" "$T/ours.qcow2"

    make_image theirs.qcow2 "$opts" "$kind" "$size"
    run_tool qemu "$T/theirs.qcow2" qcow2 "$T/ops" 1 || { fail "$name: qemu-io failed" "$(tail -3 "$T/err")"; return; }
    if qemu-img compare "$T/ours.qcow2" "$T/theirs.qcow2" >/dev/null 2>&1; then
        pass "$name ours == qemu-io"
    else
        fail "$name: ours and qemu-io's images differ"
    fi

    # Cross-tool: qemu-io writes the first half, we write the second, and the reverse.
    make_image x1.qcow2 "$opts" "$kind" "$size"
    run_tool qemu "$T/x1.qcow2" qcow2 "$T/ops" 1 1 "$half" &&
        run_tool ours "$T/x1.qcow2" qcow2 "$T/ops" 1 $((half + 1)) ||
        { fail "$name: cross qemu->ours failed" "$(tail -3 "$T/err")"; return; }
    verify "$name qemu-io then ours" "$T/x1.qcow2"
    make_image x2.qcow2 "$opts" "$kind" "$size"
    run_tool ours "$T/x2.qcow2" qcow2 "$T/ops" 1 1 "$half" &&
        run_tool qemu "$T/x2.qcow2" qcow2 "$T/ops" 1 $((half + 1)) ||
        { fail "$name: cross ours->qemu failed" "$(tail -3 "$T/err")"; return; }
    verify "$name ours then qemu-io" "$T/x2.qcow2"
}

cd "$T" || exit 1
CONFIGS=(
    "cluster_size=512 none 1M"
    "cluster_size=512,refcount_bits=1 none 2M"
    "cluster_size=4096 raw 2M"
    "cluster_size=4096,refcount_bits=64 chain 2M"
    "cluster_size=65536 none 4M"
    "cluster_size=65536 raw 4M"
    "cluster_size=65536 chain 4M"
    "cluster_size=65536,extended_l2=on none 4M"
    "cluster_size=65536,extended_l2=on raw 4M"
    "cluster_size=65536,extended_l2=on,refcount_bits=1 chain 4M"
    "cluster_size=16384,extended_l2=on chain 2M"
    "cluster_size=65536,compat=0.10 none 4M"
    "cluster_size=65536,compat=0.10 raw 4M"
    "cluster_size=4096,compat=0.10 chain 2M"
    "cluster_size=65536,lazy_refcounts=on raw 4M"
    "cluster_size=2097152 none 8M"
    "cluster_size=2097152,extended_l2=on raw 8M"
    "cluster_size=65536,refcount_bits=8 none 3M"
)
ci=0
for cfg in "${CONFIGS[@]}"; do
    read -r opts kind size <<<"$cfg"
    bytes=$(numfmt --from=iec "$size")
    [ "$kind" = none ] || prepare_backing "$bytes"
    # With one seed, each configuration gets its own, so the short run still sees 18 scripts.
    first=1
    [ "$SEEDS" = 1 ] && first=$((ci + 1))
    for seed in $(seq "$first" $((first + SEEDS - 1))); do
        one_config "$opts" "$kind" "$bytes" "$seed"
    done
    ci=$((ci + 1))
done

# A 4K write into a new cluster past everything written: the rest of the cluster reads as
# zeros already. On a disk file system it is allocated, as QEMU stores it (contiguous, space
# reserved); in memory (tmpfs) it is left a hole: one page stored per write, not a cluster.
# Same contents and a clean check either way. Tried in the scratch directory and in /dev/shm.
sparse_alloc() { # sparse_alloc DIR ours|qemu
    local img=$1/sparse-$2.qcow2 args=() i
    qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" 16M
    for ((i = 0; i < 64; i++)); do args+=(-c "write -P $((i + 1)) $((i * 65536 + 8192)) 4k"); done
    if [ "$2" = ours ]; then "$QCOW2" io "${args[@]}" "$img" >/dev/null
    else qemu-io "${args[@]}" "$img" >/dev/null; fi
}
sparse_dirs=("$T")
if [ -d /dev/shm ] && [ -w /dev/shm ] && shm=$(mktemp -d /dev/shm/qcow2-write_diff.XXXXXX); then
    sparse_dirs+=("$shm")
fi
for dir in "${sparse_dirs[@]}"; do
    fs=$(stat -f -c %T "$dir")
    label="4K writes into new clusters on $fs"
    if ! sparse_alloc "$dir" ours || ! sparse_alloc "$dir" qemu; then
        fail "$label: a tool failed"
        continue
    fi
    if out=$(qemu-img compare "$dir/sparse-qemu.qcow2" "$dir/sparse-ours.qcow2" 2>&1) &&
        out=$(qemu-img check "$dir/sparse-ours.qcow2" 2>&1); then
        pass "$label: same contents, clean"
    else fail "$label" "$out"; fi
    ours_kib=$(du -k "$dir/sparse-ours.qcow2" | cut -f1)
    qemu_kib=$(du -k "$dir/sparse-qemu.qcow2" | cut -f1)
    # 64 clusters of 64K (4 MiB) allocated by QEMU; 64 pages plus metadata in a hole layout.
    case $fs in
        tmpfs | ramfs) [ "$ours_kib" -lt 1024 ] ;;
        *) [ "$ours_kib" -ge 4096 ] ;;
    esac && pass "$label: $ours_kib KiB stored (QEMU's image: $qemu_kib KiB)" ||
        fail "$label: $ours_kib KiB stored (QEMU's image: $qemu_kib KiB)"
done
[ -n "${shm:-}" ] && rm -rf "$shm"
finish
