#!/usr/bin/env bash
# amend.sh - `$QCOW2 amend` must do what `qemu-img amend` does. Each case amends two copies of
# the same image (built by qemu-img/qemu-io: data, zero clusters, a compressed cluster, a
# discarded range; standard and extended L2, v2 and v3, refcount widths, with and without a
# backing file) with the same -o, one with each tool, then compares the exit code, the error
# message (prefix stripped), `qemu-img info --output=json` (all but file names and sizes on
# the host), `qemu-img check` (clean) and the guest view (`qemu-img compare`). Refused options
# must give qemu-img's message and exit code. Images with internal snapshots: each snapshot
# reads as after qemu-img's amend, and `qemu-img map` (present/data per cluster: zero clusters
# expanded alike, in the snapshots' L2 tables too) agrees. AMEND_FULL=1 (make stress) runs
# every change on every kind of image.

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-60}
cd "$T" || exit 1

# build NAME CREATE_OPTS [BACKING]: the source image of a kind, made once.
build() {
    local name=$1 opts=$2 backing=${3:-}
    local b=()
    [ -n "$backing" ] && b=(-b "$backing" -F qcow2)
    qemu-img create -q -f qcow2 -o "$opts" "${b[@]}" "$name.qcow2" 8M &&
        qemu-io -c "write -P 0x11 0 192k" -c "write -z 256k 128k" -c "write -P 0x22 1M 4k" \
            -c "write -c -P 0x33 2M 128k" -c "discard 64k 64k" -c "write -z 3M 4k" \
            "$name.qcow2" >/dev/null
}

# info without what differs between two files of the same content.
info_of() {
    qemu-img info --output=json "$1" | grep -v -E '"(filename|actual-size|dirty-flag)"'
}

# amend_case KIND OPTS: amend copies of KIND.qcow2 with each tool and compare.
amend_case() {
    local kind=$1 opts=$2 name="$1: amend -o $2"
    cp "$kind.qcow2" ours.qcow2 && cp "$kind.qcow2" qemu.qcow2 || { fail "$name: copy"; return; }
    local args=(-o "$opts")
    [ -z "$opts" ] && args=()
    run_cli "$CLI_TIMEOUT" ours.out ours.err "$QCOW2" amend "${args[@]}" ours.qcow2
    local rc_ours=$?
    run_cli "$CLI_TIMEOUT" qemu.out qemu.err qemu-img amend "${args[@]}" qemu.qcow2
    local rc_qemu=$?
    local repro="repro: $(q "$QCOW2" amend "${args[@]}" FILE) on a copy of $kind"
    if sanitizer_text ours.err >/dev/null; then
        fail "$name: sanitizer report" "$(cat ours.err)" "$repro"
        return
    fi
    if [ "$rc_ours" != "$rc_qemu" ]; then
        fail "$name: exit code $rc_ours, qemu-img $rc_qemu" "$(cat ours.err)" "$(cat qemu.err)" "$repro"
        return
    fi
    sed -e 's/^qcow2: //' -e 's/qcow2 --help/qemu-img --help/' -e "s/'qcow2 rebase'/'qemu-img rebase'/" ours.err >ours.msg
    sed -e 's/^qemu-img: //' qemu.err >qemu.msg
    if ! cmp -s ours.msg qemu.msg; then
        fail "$name: messages differ" "$(diff ours.msg qemu.msg)" "$repro"
        return
    fi
    if ! qemu-img compare -q ours.qcow2 qemu.qcow2; then
        fail "$name: guest views differ" "$repro"
        return
    fi
    if [ "$rc_ours" = 0 ]; then
        if ! qemu-img check ours.qcow2 >check.out 2>&1; then
            fail "$name: check not clean" "$(cat check.out)" "$repro"
            return
        fi
        info_of ours.qcow2 >ours.info
        info_of qemu.qcow2 | sed 's/qemu\.qcow2/ours.qcow2/' >qemu.info
        if ! cmp -s ours.info qemu.info; then
            fail "$name: info differs" "$(diff ours.info qemu.info)" "$repro"
            return
        fi
    fi
    pass "$name"
}

harness "base" build base "compat=1.1" || finish
harness "v3" build v3 "compat=1.1" || finish
harness "v2" build v2 "compat=0.10" || finish
harness "extl2" build extl2 "compat=1.1,extended_l2=on" || finish
harness "rb8" build rb8 "compat=1.1,refcount_bits=8" || finish
harness "lazy" build lazy "compat=1.1,lazy_refcounts=on" || finish
harness "small" build small "compat=1.1,cluster_size=4k" || finish
harness "overlay" build overlay "compat=1.1" base.qcow2 || finish

if [ "${AMEND_FULL:-0}" = 1 ]; then
    # Every kind with every change (make stress).
    for kind in v3 v2 extl2 rb8 lazy small overlay; do
        for opts in compat=0.10 compat=1.1 lazy_refcounts=on lazy_refcounts=off refcount_bits=1 \
            refcount_bits=64 "compat=1.1,refcount_bits=4" "refcount_bits=32,lazy_refcounts=on"; do
            amend_case "$kind" "$opts"
        done
    done
else
    amend_case v3 compat=0.10
    amend_case v3 refcount_bits=1
    amend_case v3 "refcount_bits=64,lazy_refcounts=on"
    amend_case v2 "compat=1.1,refcount_bits=4"
    amend_case extl2 compat=0.10
    amend_case extl2 refcount_bits=8
    amend_case rb8 compat=0.10
    amend_case lazy lazy_refcounts=off
    amend_case small compat=0.10
    amend_case small refcount_bits=2
    amend_case overlay compat=0.10
fi
amend_case v3 size=4M

# A downgrade drops persistent bitmaps (version 2 has none). qemu-img does so silently with exit
# 0 but leaks their clusters; ours must exit 0 too, read the same, check clean (amend_case) and
# keep no bitmap extension.
if harness "bitmaps" build bitmaps "compat=1.1" &&
    harness "bitmaps add" qemu-img bitmap --add bitmaps.qcow2 b0 &&
    harness "bitmaps add" qemu-img bitmap --add -g 512k bitmaps.qcow2 b1 &&
    harness "bitmaps write" qemu-io -c "write -P 0x44 5M 64k" bitmaps.qcow2; then
    amend_case bitmaps compat=0.10
    if qemu-img info ours.qcow2 2>&1 | grep -q -i bitmap; then
        fail "bitmaps: amend -o compat=0.10 left bitmaps behind" "$(qemu-img info ours.qcow2 2>&1 | tail -5)"
    else
        pass "bitmaps: amend -o compat=0.10 leaves no bitmap"
    fi
fi
if qemu_has_zstd && harness "zstd" build zstd "compat=1.1,compression_type=zstd"; then
    amend_case zstd compat=0.10 # refused: compressed clusters
    amend_case zstd refcount_bits=8
fi
amend_case overlay backing_file=base.qcow2,backing_fmt=qcow2
amend_case overlay backing_file=other.qcow2

# snap_build NAME OPTS [RAW_BACKING]: zero clusters (plain and preallocated) in L2 tables
# shared with snapshots, in a snapshot's own tables and in the active ones.
snap_build() {
    local name=$1 opts=$2 backing=${3:-} b=()
    [ -n "$backing" ] && b=(-b "$backing" -F raw)
    qemu-img create -q -f qcow2 -o "$opts" "${b[@]}" "$name.qcow2" 1M &&
        qemu-io -c "write -P 1 0 512k" -c "write -z 64k 64k" -c "write -z 600k 64k" \
            "$name.qcow2" >/dev/null &&
        qemu-img snapshot -c s1 "$name.qcow2" &&
        qemu-io -c "write -z 256k 64k" -c "write -P 2 0 4k" -c "write -z 700k 64k" \
            "$name.qcow2" >/dev/null &&
        qemu-img snapshot -c s2 "$name.qcow2" &&
        qemu-io -c "write -z 128k 64k" -c "write -z -u 320k 64k" "$name.qcow2" >/dev/null
}

# snap_amend_case KIND OPTS SNAPSHOTS: amend_case, then every snapshot and the map compared.
snap_amend_case() {
    local kind=$1 opts=$2 s before=$FAILED
    amend_case "$kind" "$opts"
    [ "$FAILED" = "$before" ] || return
    for s in $3; do
        qemu-img convert -l "snapshot.name=$s" -O raw ours.qcow2 ours.raw &&
            qemu-img convert -l "snapshot.name=$s" -O raw qemu.qcow2 qemu.raw
        if cmp -s ours.raw qemu.raw; then
            pass "$kind: amend -o $opts: snapshot $s reads as qemu-img's"
        else
            fail "$kind: amend -o $opts: snapshot $s differs from qemu-img's"
        fi
    done
    for f in ours qemu; do
        qemu-img map --output=json "$f.qcow2" | map_normalize 65536 |
            sed -e 's/ zero=[a-z]*//' -e 's/ offset=.*//' >"$f.map"
    done
    if cmp -s ours.map qemu.map; then
        pass "$kind: amend -o $opts: qemu-img map agrees"
    else
        fail "$kind: amend -o $opts: qemu-img map differs" "$(diff ours.map qemu.map | head)"
    fi
}

qemu-img create -q -f raw snapback.raw 1M && qemu-io -f raw -c "write -P 9 0 1M" snapback.raw >/dev/null
if harness "snap" snap_build snap "compat=1.1" && harness "snapb" snap_build snapb "compat=1.1" snapback.raw &&
    harness "snapv2" snap_build snapv2 "compat=0.10"; then
    snap_amend_case snap compat=0.10 "s1 s2"
    snap_amend_case snapb compat=0.10 "s1 s2"
    snap_amend_case snapv2 compat=1.1 "s1 s2"
    snap_amend_case snap refcount_bits=4 "s1 s2"
fi

# Refused: qemu-img's message and exit code.
for opts in cluster_size=4k compat=0.42 foo=1 refcount_bits=3 data_file=x data_file_raw=on \
    lazy_refcounts=maybe "compat=0.10,lazy_refcounts=on" "compat=0.10,refcount_bits=8" ""; do
    amend_case v3 "$opts"
done

# -o help lists the amendable options as qemu-img does.
cp v3.qcow2 ours.qcow2
"$QCOW2" amend -o help ours.qcow2 >ours.help 2>&1
qemu-img amend -o help ours.qcow2 >qemu.help 2>&1
if cmp -s ours.help qemu.help; then
    pass "amend -o help"
else
    fail "amend -o help differs" "$(diff ours.help qemu.help)"
fi
finish
