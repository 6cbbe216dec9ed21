#!/usr/bin/env bash
# resize.sh - `$QCOW2 resize` must do what `qemu-img resize` does. Every case runs both tools
# on two identical images (built by qemu-img/qemu-io) with the same arguments, then compares:
# the exit code, stdout ("Image resized." or nothing with -q), the error message (with the
# "qemu-img:"/"qcow2:" prefix stripped; a few messages of our own are listed below), the virtual
# size (`qemu-img info --output=json`), `qemu-img check` (clean after a success) and the guest
# data (`qemu-img compare` of the two results, and the part before the old end against a raw
# model). Sizes: absolute, +N, -N (with and without "--"), growth with every preallocation mode,
# shrinking to a mid-cluster size and regrowing (the new area reads zeros).

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-60}
cd "$T" || exit 1

# Messages that are ours and not qemu-img's word for word (same meaning, same exit code).
OWN_MESSAGES='image size must be a multiple of 512 bytes|could not open|invalid size|\(try .qcow2 resize --help.\)|Not enough arguments|Expecting image file name and size'

# make IMG OPTS SIZE: an image with data in it (the same bytes every time: built once per
# layout by qemu-img and qemu-io, with its raw copy base-N.raw, and copied for each case).
declare -A BASES=()
NBASES=0
make_image() {
    local img=$1 opts=$2 size=$3 base
    base=${BASES["$opts $size"]:-}
    if [ -z "$base" ]; then
        base=base-$NBASES
        NBASES=$((NBASES + 1))
        qemu-img create -q -f qcow2 -o "$opts" "$base.qcow2" "$size" &&
            qemu-io -c "write -P 0x61 0 64k" -c "write -P 0x62 1m 1536" \
                -c "write -P 0x63 $((size - 70000)) 70000" "$base.qcow2" >/dev/null &&
            qemu-img convert -O raw "$base.qcow2" "$base.raw" || return 1
        BASES["$opts $size"]=$base
    fi
    rm -f "$img"
    cp "$base.qcow2" "$img" && cp "$base.raw" "${img%.qcow2}.before.raw"
}

virtual_size() {
    qemu-img info --output=json "$1" >"$T/info.json" 2>/dev/null && json_get virtual-size "$T/info.json"
}

# case NAME OPTS SIZE ARGS...: resize a copy with each tool (ARGS with FILE standing for the
# image) and compare everything.
resize_case() {
    local name=$1 opts=$2 size=$3
    shift 3
    local a_ours=() a_qemu=() a
    for a in "$@"; do
        if [ "$a" = FILE ]; then
            a_ours+=(ours.qcow2)
            a_qemu+=(qemu.qcow2)
        else
            a_ours+=("$a")
            a_qemu+=("$a")
        fi
    done
    if ! make_image ours.qcow2 "$opts" "$size" || ! make_image qemu.qcow2 "$opts" "$size"; then
        fail "$name: building the image failed"
        return
    fi
    local repro
    repro="repro: qemu-img create -f qcow2 -o $opts x.qcow2 $size; $(q "$QCOW2" resize "${a_ours[@]}")"
    run_cli "$CLI_TIMEOUT" ours.out ours.err "$QCOW2" resize "${a_ours[@]}"
    local rc_ours=$?
    run_cli "$CLI_TIMEOUT" qemu.out qemu.err qemu-img resize "${a_qemu[@]}"
    local rc_qemu=$?
    same_outcome "$name" "$rc_ours" "$rc_qemu" "$repro" -e "s/qemu\.qcow2/ours.qcow2/g" || return
    local vs_ours vs_qemu
    vs_ours=$(virtual_size ours.qcow2)
    vs_qemu=$(virtual_size qemu.qcow2)
    if [ -z "$vs_ours" ] || [ "$vs_ours" != "$vs_qemu" ]; then
        fail "$name: virtual size $vs_ours, qemu-img's $vs_qemu" "$repro"
        return
    fi
    local out
    if ! out=$(qemu-img check ours.qcow2 2>&1); then
        fail "$name: qemu-img check after our resize" "$out" "$repro"
        return
    fi
    # The data: what was there up to the (new or old) end is still there, the rest reads
    # zeros - as after qemu-img resize.
    if ! out=$(qemu-img compare ours.qcow2 qemu.qcow2 2>&1); then
        fail "$name: data differs from qemu-img resize's result" "$out" "$repro"
        return
    fi
    # The model: the old content up to the smaller end, zeros after it.
    local keep=$((vs_ours < size ? vs_ours : size))
    truncate -s "$keep" ours.before.raw && truncate -s "$vs_ours" ours.before.raw
    if ! out=$(qemu-img compare -f qcow2 -F raw ours.qcow2 ours.before.raw 2>&1); then
        fail "$name: the data up to the old end changed or the new area does not read zeros" \
            "$out" "$repro"
        return
    fi
    pass "$name"
}

M=$((1024 * 1024))
first=1
for opts in cluster_size=65536 cluster_size=512 cluster_size=65536,extended_l2=on \
    cluster_size=4096,refcount_bits=1,lazy_refcounts=on compat=0.10; do
    S=$((8 * M))
    # What only parses arguments runs on the first layout (every layout with QCOW2_TEST_FULL).
    args_too=0
    [ "$first" = 1 ] || [ "$FULL" = 1 ] && args_too=1
    first=0
    resize_case "[$opts] grow absolute" "$opts" $S FILE 12M
    resize_case "[$opts] grow +" "$opts" $S FILE +3M
    resize_case "[$opts] grow + unaligned to clusters" "$opts" $S FILE +1536
    [ $args_too = 1 ] && resize_case "[$opts] same size" "$opts" $S FILE 8M
    [ $args_too = 1 ] && resize_case "[$opts] grow +0" "$opts" $S FILE +0
    [ $args_too = 1 ] && resize_case "[$opts] shrink without --shrink" "$opts" $S FILE 4M
    [ $args_too = 1 ] && resize_case "[$opts] shrink - without --shrink" "$opts" $S FILE -1M
    resize_case "[$opts] shrink to mid-cluster" "$opts" $S --shrink FILE $((4 * M + 3 * 512))
    resize_case "[$opts] shrink -" "$opts" $S --shrink FILE -1M
    [ $args_too = 1 ] && resize_case "[$opts] shrink - after --" "$opts" $S --shrink FILE -- -1536
    [ $args_too = 1 ] && resize_case "[$opts] options after FILE" "$opts" $S FILE --shrink -2M
    resize_case "[$opts] shrink to nothing" "$opts" $S --shrink FILE -8M
    [ $args_too = 1 ] && resize_case "[$opts] shrink past zero" "$opts" $S --shrink FILE -- -9M
    [ $args_too = 1 ] && resize_case "[$opts] quiet" "$opts" $S -q FILE 9M
    [ $args_too = 1 ] && resize_case "[$opts] -f qcow2" "$opts" $S -f qcow2 FILE 9M
    for mode in off metadata falloc full; do
        resize_case "[$opts] grow --preallocation=$mode" "$opts" $S --preallocation=$mode FILE +5M
    done
    [ $args_too = 1 ] && resize_case "[$opts] preallocation when shrinking" "$opts" $S --shrink --preallocation=full FILE 4M
    [ $args_too = 1 ] && resize_case "[$opts] preallocation at the same size" "$opts" $S --preallocation=metadata FILE 8M
    [ $args_too = 1 ] && resize_case "[$opts] bad preallocation mode" "$opts" $S --preallocation=bogus FILE +1M
    [ $args_too = 1 ] && resize_case "[$opts] size not a multiple of 512" "$opts" $S FILE 9000000
    [ $args_too = 1 ] && resize_case "[$opts] bad size" "$opts" $S FILE 12Q
    [ $args_too = 1 ] && resize_case "[$opts] no size" "$opts" $S FILE
    [ $args_too = 1 ] && resize_case "[$opts] two sizes" "$opts" $S FILE 12M 13M
done

# Shrink, then grow again: the tail of the cut cluster and everything after read zeros.
for opts in cluster_size=65536 cluster_size=65536,extended_l2=on; do
    make_image ours.qcow2 "$opts" $((8 * M))
    mv ours.before.raw model.raw
    run_cli "$CLI_TIMEOUT" o1 e1 "$QCOW2" resize -q --shrink ours.qcow2 $((3 * M + 2560)) &&
        run_cli "$CLI_TIMEOUT" o2 e2 "$QCOW2" resize -q ours.qcow2 8M
    rc=$?
    truncate -s $((3 * M + 2560)) model.raw && truncate -s $((8 * M)) model.raw
    if [ $rc -ne 0 ]; then
        fail "[$opts] shrink then regrow: exit $rc" "$(cat e1 e2 2>/dev/null)"
    elif ! out=$(qemu-img check ours.qcow2 2>&1); then
        fail "[$opts] shrink then regrow: qemu-img check" "$out"
    elif ! out=$(qemu-img compare -f qcow2 -F raw ours.qcow2 model.raw 2>&1); then
        fail "[$opts] shrink then regrow: data" "$out"
    else
        pass "[$opts] shrink then regrow reads zeros past the cut"
    fi
done

# Raw images resize too (no qcow2 metadata involved).
qemu-img create -q -f raw ours.raw 1M && qemu-img create -q -f raw qemu.raw 1M
run_cli "$CLI_TIMEOUT" o e "$QCOW2" resize -f raw ours.raw +1M
rc=$?
qemu-img resize -q -f raw qemu.raw +1M
if [ $rc -eq 0 ] && [ "$(stat -c %s ours.raw)" = "$(stat -c %s qemu.raw)" ] && [ "$(cat o)" = "Image resized." ]; then
    pass "raw grow"
else
    fail "raw grow: exit $rc, size $(stat -c %s ours.raw) vs $(stat -c %s qemu.raw)" "$(cat e)"
fi

finish
