#!/usr/bin/env bash
# check_repair.sh - `$QCOW2 check` must judge and repair images as `qemu-img check` does.
# Every case builds an image with qemu-img/qemu-io, optionally damages it by poking bytes
# (refcounts, L1/L2 entries, refcount table entries, header bits), then:
#   1. check without -r: same exit code, same JSON (every count), same human output and the
#      same messages as qemu-img check; the image file is left untouched;
#   2. for -r leaks and -r all, on two copies (one repaired by us, one by qemu-img): same exit
#      code and the same leak/corruption counts (remaining and fixed); afterwards `qemu-img
#      check` says the same about both copies, and both copies read the same guest data.
# After a refcount rebuild the new structures may sit elsewhere than QEMU puts them, so only
# image-end-offset and the "Repairing" lines about the old structures may differ then.
# Images whose header places a table where an ordinary open refuses it (L1 or refcount table
# at offset 0 or past the end of the file, a snapshot table past the end) must be checked and
# repaired like that too, while `$QCOW2 info` and `$QCOW2 io` keep refusing them with one
# line; a backing file that cannot be opened fails the check (exit 1) in both tools.

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-120}

CASE=""
RECIPE=""
CASE_OK=1

begin_case() {
    CASE=$1
    CASE_OK=1
    RECIPE=""
    LAX_END=""
    mkdir -p "$T/$CASE"
    cd "$T/$CASE" || exit 1
}

# gen CMD...: run an image-building (or damaging) command and record it for the repro recipe.
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

# ---------------------------------------------------------------------------------------------
# Finding metadata in an image (from the header fields, as the spec lays them out).
# ---------------------------------------------------------------------------------------------

L2E_OFFSET_MASK=$((0x00fffffffffffe00))

hdr_cluster_bits() { peek_be32 "$1" 20; }
hdr_version() { peek_be32 "$1" 4; }
hdr_refcount_order() {
    if [ "$(hdr_version "$1")" -ge 3 ]; then peek_be32 "$1" 96; else echo 4; fi
}
hdr_extended_l2() {
    [ "$(hdr_version "$1")" -ge 3 ] && [ $(($(peek_be64 "$1" 72) & 16)) -ne 0 ]
}
l2_entry_size() { if hdr_extended_l2 "$1"; then echo 16; else echo 8; fi; }

# l1_entry_pos IMG GUEST_OFFSET: file offset of the L1 entry covering GUEST_OFFSET.
l1_entry_pos() {
    local img=$1 g=$2 cb esz l2b
    cb=$(hdr_cluster_bits "$img")
    esz=$(l2_entry_size "$img")
    l2b=$((cb - (esz == 16 ? 4 : 3)))
    echo $(($(peek_be64 "$img" 40) + 8 * (g >> (cb + l2b))))
}

# l2_entry_pos IMG GUEST_OFFSET: file offset of the L2 entry mapping GUEST_OFFSET (its
# subcluster bitmap, with extended L2, follows 8 bytes later).
l2_entry_pos() {
    local img=$1 g=$2 cb esz l2b l2
    cb=$(hdr_cluster_bits "$img")
    esz=$(l2_entry_size "$img")
    l2b=$((cb - (esz == 16 ? 4 : 3)))
    l2=$(($(peek_be64 "$img" "$(l1_entry_pos "$img" "$g")") & L2E_OFFSET_MASK))
    echo $((l2 + esz * ((g >> cb) & ((1 << l2b) - 1))))
}

# host_cluster IMG GUEST_OFFSET: index of the host cluster holding that guest cluster.
host_cluster() {
    local img=$1
    echo $((($(peek_be64 "$img" "$(l2_entry_pos "$img" "$2")") & L2E_OFFSET_MASK) >>
        $(hdr_cluster_bits "$img")))
}

# l2_cluster IMG GUEST_OFFSET: index of the host cluster holding the L2 table.
l2_cluster() {
    local img=$1
    echo $((($(peek_be64 "$img" "$(l1_entry_pos "$img" "$2")") & L2E_OFFSET_MASK) >>
        $(hdr_cluster_bits "$img")))
}

reftable_pos() { peek_be64 "$1" 48; }

# snapshot_entry_pos IMG N: file offset of snapshot table entry N (0-based).
snapshot_entry_pos() {
    local img=$1 n=$2 pos i
    pos=$(peek_be64 "$img" 64)
    for ((i = 0; i < n; i++)); do
        pos=$((pos + 40 + $(peek_be32 "$img" $((pos + 36))) +
            $((16#$(peek_hex "$img" $((pos + 12)) 2))) + $((16#$(peek_hex "$img" $((pos + 14)) 2)))))
        pos=$(((pos + 7) / 8 * 8))
    done
    echo "$pos"
}

# resize_snapshot_extra IMG N SIZE: give the last snapshot table entry N an extra data size of
# SIZE bytes, moving its id and name (the bytes in between keep whatever they were).
resize_snapshot_extra() {
    local img=$1 n=$2 size=$3 pos old idlen namelen strings
    pos=$(snapshot_entry_pos "$img" "$n")
    old=$(peek_be32 "$img" $((pos + 36)))
    idlen=$((16#$(peek_hex "$img" $((pos + 12)) 2)))
    namelen=$((16#$(peek_hex "$img" $((pos + 14)) 2)))
    strings=$(peek_hex "$img" $((pos + 40 + old)) $((idlen + namelen)))
    RECIPE="${RECIPE}# snapshot table entry $n: extra data size $old -> $size, id and name moved
"
    poke_be32 "$img" $((pos + 36)) "$size"
    poke_bytes "$img" $((pos + 40 + size)) "$strings"
}

# refcount_pos IMG CLUSTER: "BYTE_OFFSET BITS SHIFT" of that cluster's refcount entry.
refcount_pos() {
    local img=$1 k=$2 cb bits per rb idx
    cb=$(hdr_cluster_bits "$img")
    bits=$((1 << $(hdr_refcount_order "$img")))
    per=$(((1 << cb) * 8 / bits))
    rb=$(($(peek_be64 "$img" $(($(reftable_pos "$img") + 8 * (k / per)))) & ~0x1ff))
    idx=$((k % per))
    echo $((rb + idx * bits / 8)) $bits $(((idx * bits) % 8))
}

get_refcount() {
    local pos bits shift
    read -r pos bits shift < <(refcount_pos "$1" "$2")
    if [ "$bits" -lt 8 ]; then
        echo $(((16#$(peek_hex "$1" "$pos" 1) >> shift) & ((1 << bits) - 1)))
    else
        echo $((16#$(peek_hex "$1" "$pos" $((bits / 8)))))
    fi
}

# set_refcount IMG CLUSTER VALUE (any refcount width; sub-byte entries LSB first).
set_refcount() {
    local pos bits shift b
    read -r pos bits shift < <(refcount_pos "$1" "$2")
    if [ "$bits" -lt 8 ]; then
        b=$((16#$(peek_hex "$1" "$pos" 1)))
        b=$(((b & ~(((1 << bits) - 1) << shift)) | (($3) << shift)))
        poke_u8 "$1" "$pos" "$b"
    else
        poke_be $((bits / 8)) "$1" "$pos" "$3"
    fi
}

# Damage helpers, recorded in the recipe as the equivalent poke.
damage_set_refcount() {
    local img=$1 k=$2 v=$3
    [ "$CASE_OK" = 1 ] || return 1
    RECIPE="${RECIPE}# refcount of host cluster $k := $v (was $(get_refcount "$img" "$k"))
"
    set_refcount "$img" "$k" "$v"
}
damage_be64() {
    local img=$1 pos=$2 v=$3 what=$4
    [ "$CASE_OK" = 1 ] || return 1
    RECIPE="${RECIPE}# $what: be64 at $pos := $(printf '0x%x' $((v))) (was 0x$(peek_hex "$img" "$pos" 8))
"
    poke_be64 "$img" "$pos" "$v"
}

# ---------------------------------------------------------------------------------------------
# The comparisons.
# ---------------------------------------------------------------------------------------------

# Messages without the program name prefix. Why a check failed is worded our own way, and
# hints do not name a program.
# QEMU's complaint about freeing clusters it never allocated (a snapshot table past the end of
# the file, after the repair has rewritten it) has no counterpart: we do not try.
norm_err() {
    sed -e 's/^qemu-img: //' -e 's/^qcow2: //' -e 's/^Check failed: .*/Check failed/' \
        -e 's/with qemu-img check -r all/with check -r all/' \
        -e '/^qcow2_free_clusters failed: /d' "$1"
}

# Everything of a check --output=json except the file name (the keys present); `lax` also
# drops the image end offset (it depends on where a rebuilt refcount structure was placed).
json_counts() {
    local f=$1 lax=${2:-}
    json_fields "$f" check-errors corruptions leaks corruptions-fixed leaks-fixed total-clusters \
        allocated-clusters fragmented-clusters compressed-clusters image-end-offset format |
        if [ "$lax" = lax ]; then grep -v '^image-end-offset='; else cat; fi
}

# check_plain IMG: no repair; exit code, JSON, human output and messages must all match, and
# our check must not modify the file.
check_plain() {
    local img=$1 before rq ro
    [ "$CASE_OK" = 1 ] || return 0
    before=$(sha256sum <"$img")

    qemu-img check --output=json "$img" >q.json 2>q.jerr
    rq=$?
    PLAIN_RC=$rq
    run_cli "$CLI_TIMEOUT" o.json o.jerr "$QCOW2" check --output=json "$img"
    ro=$?
    if [ $rq -ne $ro ]; then
        fail "$CASE: check exit code $ro, qemu-img check says $rq" "$(norm_err o.jerr | head -n 5)" \
            "$(recipe)" "$(q "$QCOW2" check "$img")"
        return 0
    fi
    if sanitizer_text o.jerr >/dev/null; then
        fail "$CASE: check: sanitizer report" "$(head -n 20 o.jerr)" "$(recipe)"
    fi
    if ! diff -u <(grep -v '"filename"' q.json) <(grep -v '"filename"' o.json) >json.diff; then
        fail "$CASE: check --output=json differs from qemu-img's" "$(head -n 20 json.diff)" \
            "$(recipe)"
    else
        pass "$CASE: check --output=json"
    fi
    if ! diff -u <(norm_err q.jerr) <(norm_err o.jerr) >err.diff; then
        fail "$CASE: check messages differ from qemu-img's" "$(head -n 20 err.diff)" "$(recipe)"
    else
        pass "$CASE: check messages"
    fi

    qemu-img check "$img" >q.human 2>/dev/null
    run_cli "$CLI_TIMEOUT" o.human o.herr "$QCOW2" check "$img"
    if ! diff -u q.human o.human >human.diff; then
        fail "$CASE: check (human output) differs from qemu-img's" "$(head -n 20 human.diff)" \
            "$(recipe)"
    else
        pass "$CASE: check (human output)"
    fi
    if [ "$(sha256sum <"$img")" != "$before" ]; then
        fail "$CASE: check without -r modified the image" "$(recipe)"
    fi
}

# check_repair IMG MODE: repair one copy with qemu-img and one with us, then compare.
check_repair() {
    local img=$1 mode=$2 rq ro lax="" aq ao
    [ "$CASE_OK" = 1 ] || return 0
    cp "$img" "q-$mode.qcow2" && cp "$img" "o-$mode.qcow2" || return 0
    [ -e "$img.data" ] && { cp "$img.data" "q-$mode.data"; cp "$img.data" "o-$mode.data"; }

    qemu-img check -r "$mode" --output=json "q-$mode.qcow2" >"q-$mode.json" 2>"q-$mode.err"
    rq=$?
    run_cli "$CLI_TIMEOUT" "o-$mode.json" "o-$mode.err" "$QCOW2" check -r "$mode" \
        --output=json "o-$mode.qcow2"
    ro=$?
    if sanitizer_text "o-$mode.err" >/dev/null; then
        fail "$CASE: check -r $mode: sanitizer report" "$(head -n 20 "o-$mode.err")" "$(recipe)"
    fi
    if [ $rq -eq 1 ] && [ $ro -eq 0 ] && grep -q '^qemu-img: ERROR writing' "q-$mode.err"; then
        # QEMU's rebuild can trip over its own overlap check (a refcount table entry with
        # reserved bits still counts as a refcount block there); ours must then be clean.
        if qemu-img check "o-$mode.qcow2" >after.out 2>&1; then
            pass "$CASE: check -r $mode repaired what qemu-img could not"
        else
            fail "$CASE: check -r $mode exits 0 but qemu-img check disagrees" \
                "$(head -n 8 after.out)" "$(recipe)"
        fi
        return 0
    fi
    if [ $rq -ne $ro ]; then
        fail "$CASE: check -r $mode exit code $ro, qemu-img check -r $mode says $rq" \
            "$(norm_err "o-$mode.err" | head -n 8)" "$(recipe)" \
            "$(q "$QCOW2" check -r "$mode" "$img")"
        return 0
    fi
    pass "$CASE: check -r $mode exit code ($ro)"

    grep -q '^Rebuilding refcount structure' "q-$mode.err" && lax=lax
    [ -n "$LAX_END" ] && lax=lax
    if [ -s "q-$mode.json" ] || [ -s "o-$mode.json" ]; then
        if ! diff -u <(json_counts "q-$mode.json" $lax) <(json_counts "o-$mode.json" $lax) \
            >repair.diff; then
            fail "$CASE: check -r $mode results differ from qemu-img's" \
                "$(head -n 20 repair.diff)" "$(norm_err "o-$mode.err" | head -n 8)" "$(recipe)"
        else
            pass "$CASE: check -r $mode results"
        fi
    fi
    # The messages of the repair; after a rebuild only up to the rebuild.
    if [ -n "$lax" ]; then
        diff -u <(norm_err "q-$mode.err" | sed '/^Rebuilding refcount structure/q') \
            <(norm_err "o-$mode.err" | sed '/^Rebuilding refcount structure/q') >msg.diff
    else
        diff -u <(norm_err "q-$mode.err") <(norm_err "o-$mode.err") >msg.diff
    fi
    if [ -s msg.diff ]; then
        fail "$CASE: check -r $mode messages differ from qemu-img's" "$(head -n 20 msg.diff)" \
            "$(recipe)"
    else
        pass "$CASE: check -r $mode messages"
    fi

    # What a fresh qemu-img check thinks of the two repaired copies.
    qemu-img check "q-$mode.qcow2" >/dev/null 2>&1
    aq=$?
    qemu-img check --output=json "o-$mode.qcow2" >"after-$mode.json" 2>"after-$mode.err"
    ao=$?
    if [ $aq -ne $ao ]; then
        fail "$CASE: after our check -r $mode, qemu-img check exits $ao (after its own repair: $aq)" \
            "$(head -n 8 "after-$mode.err")" "$(recipe)" "$(q "$QCOW2" check -r "$mode" "$img")"
    else
        pass "$CASE: qemu-img check after check -r $mode ($ao)"
    fi
    # Same guest data, where QEMU's repair left something it can read.
    if [ $aq -ne 0 ] && [ $aq -ne 3 ]; then
        return 0
    fi
    if qemu-img compare -U "q-$mode.qcow2" "o-$mode.qcow2" >cmp.out 2>&1; then
        pass "$CASE: guest data after check -r $mode"
    else
        fail "$CASE: guest data after our check -r $mode differs from qemu-img's repair" \
            "$(head -n 5 cmp.out)" "$(recipe)"
    fi
}

# check_all IMG: the plain check and both repair modes. On an image qemu-img finds clean the
# two modes do the same (nothing): the short form repairs it with -r all only.
check_all() {
    PLAIN_RC=""
    check_plain "$1"
    [ "$FULL" = 1 ] || [ "$PLAIN_RC" != 0 ] && check_repair "$1" leaks
    check_repair "$1" all
}

# ---------------------------------------------------------------------------------------------
# Cases.
# ---------------------------------------------------------------------------------------------

# A default image with data in two L2 tables' worth of guest space.
make_basic() {
    gen qemu-img create -q -f qcow2 "$@" img.qcow2 1G
    io img.qcow2 "write -P 1 0 128k" "write -P 2 1M 64k" "write -P 3 600M 64k"
}

# --- clean images: both tools must find nothing, and agree on the statistics ---

begin_case clean_default
make_basic
check_all img.qcow2

begin_case clean_v2
make_basic -o compat=0.10
check_all img.qcow2

begin_case clean_compressed
gen qemu-img create -q -f raw src.raw 16M
io src.raw "write -P 7 0 1M" "write -P 9 4M 2M" "write -P 0 8M 64k"
gen qemu-img convert -c -O qcow2 src.raw img.qcow2
io img.qcow2 "write -P 5 128k 64k"
check_all img.qcow2

begin_case clean_snapshots
make_basic
gen qemu-img snapshot -c one img.qcow2
io img.qcow2 "write -P 4 64k 64k" "write -P 5 2M 64k"
gen qemu-img snapshot -c two img.qcow2
io img.qcow2 "write -P 6 0 64k"
check_all img.qcow2

begin_case clean_extended_l2
gen qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k img.qcow2 256M
io img.qcow2 "write -P 1 0 4k" "write -P 2 132k 8k" "write -z 140k 4k" "write -P 3 1M 128k" \
    "write -z 2M 128k"
check_all img.qcow2

begin_case clean_zero_clusters
make_basic
io img.qcow2 "write -z 0 64k" "write -z -u 1M 64k" "write -z 5M 64k" "discard 600M 64k"
check_all img.qcow2

begin_case clean_small_clusters
gen qemu-img create -q -f qcow2 -o cluster_size=512 img.qcow2 64M
io img.qcow2 "write -P 1 0 300k" "write -P 2 20M 4k" "write -P 3 63M 1k"
check_all img.qcow2

begin_case clean_refcount_bits_64
make_basic -o refcount_bits=64
check_all img.qcow2

begin_case clean_bitmaps
gen qemu-img create -q -f qcow2 img.qcow2 64M
gen qemu-img bitmap --add img.qcow2 b0
gen qemu-img bitmap --add -g 512k img.qcow2 b1
io img.qcow2 "write -P 1 0 1M" "write -P 2 30M 64k"
check_all img.qcow2

begin_case clean_data_file
gen qemu-img create -q -f qcow2 -o data_file=img.qcow2.data img.qcow2 64M
io img.qcow2 "write -P 1 0 1M" "write -P 2 30M 64k"
check_all img.qcow2

begin_case clean_preallocated
gen qemu-img create -q -f qcow2 -o preallocation=metadata img.qcow2 32M
io img.qcow2 "write -P 1 0 64k"
check_all img.qcow2

# --- (a) leaks ---

begin_case leak_l2_entry_cleared
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)" 0 "L2 entry of guest 64k"
check_all img.qcow2

begin_case leak_refcount_raised
make_basic
[ "$CASE_OK" = 1 ] && damage_set_refcount img.qcow2 "$(host_cluster img.qcow2 1048576)" 2
check_all img.qcow2

begin_case leak_free_cluster_counted
make_basic
io img.qcow2 "discard 64k 64k"
[ "$CASE_OK" = 1 ] && damage_set_refcount img.qcow2 5 1
check_all img.qcow2

begin_case leak_v2
make_basic -o compat=0.10
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 0)" 0 "L2 entry of guest 0"
check_all img.qcow2

begin_case leak_small_clusters
gen qemu-img create -q -f qcow2 -o cluster_size=512 img.qcow2 64M
io img.qcow2 "write -P 1 0 300k"
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 4096)" 0 "L2 entry of guest 4k"
check_all img.qcow2

# --- (e) leaks with 1-bit refcounts ---

begin_case leak_refcount_bits_1
make_basic -o refcount_bits=1
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)" 0 "L2 entry of guest 64k"
check_all img.qcow2

begin_case leak_refcount_bits_1_free_cluster
make_basic -o refcount_bits=1
io img.qcow2 "discard 0 64k"
[ "$CASE_OK" = 1 ] && damage_set_refcount img.qcow2 5 1
check_all img.qcow2

# --- (b) refcounts too low ---

begin_case low_refcount_zero
make_basic
[ "$CASE_OK" = 1 ] && damage_set_refcount img.qcow2 "$(host_cluster img.qcow2 0)" 0
check_all img.qcow2

begin_case low_refcount_shared
make_basic
gen qemu-img snapshot -c snap img.qcow2
[ "$CASE_OK" = 1 ] && damage_set_refcount img.qcow2 "$(host_cluster img.qcow2 0)" 1
check_all img.qcow2

begin_case low_refcount_l2_table
make_basic
gen qemu-img snapshot -c snap img.qcow2
[ "$CASE_OK" = 1 ] && damage_set_refcount img.qcow2 "$(l2_cluster img.qcow2 0)" 1
check_all img.qcow2

begin_case low_refcount_bits_2
make_basic -o refcount_bits=2
gen qemu-img snapshot -c snap img.qcow2
[ "$CASE_OK" = 1 ] && damage_set_refcount img.qcow2 "$(host_cluster img.qcow2 1048576)" 1
check_all img.qcow2

# --- (c) COPIED flags ---

begin_case copied_cleared_l2
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 0)" \
    $(($(peek_be64 img.qcow2 "$(l2_entry_pos img.qcow2 0)") & ~(1 << 63))) "L2 entry of guest 0"
check_all img.qcow2

begin_case copied_cleared_l1
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l1_entry_pos img.qcow2 0)" \
    $(($(peek_be64 img.qcow2 "$(l1_entry_pos img.qcow2 0)") & ~(1 << 63))) "L1 entry 0"
check_all img.qcow2

begin_case copied_set_on_shared
make_basic
gen qemu-img snapshot -c snap img.qcow2
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 0)" \
    $(($(peek_be64 img.qcow2 "$(l2_entry_pos img.qcow2 0)") | (1 << 63))) "L2 entry of guest 0"
check_all img.qcow2

# More COPIED errors than a plain check keeps from its single pass (65536): the flags are
# checked in a second pass then, with the same messages. 512-byte clusters, metadata
# preallocated: 69632 data clusters in 1088 L2 tables, COPIED cleared in every L2 entry.
begin_case copied_cleared_everywhere
gen qemu-img create -q -f qcow2 -o cluster_size=512,preallocation=metadata img.qcow2 34M
gen perl -e '
    open(my $f, "+<", $ARGV[0]) or die "$ARGV[0]: $!";
    binmode $f;
    sub rd { my ($o, $n) = @_; seek($f, $o, 0); read($f, my $b, $n) == $n or die "short read"; $b }
    my $h = rd(0, 48);
    my ($cb, $l1n) = (unpack("N", substr($h, 20, 4)), unpack("N", substr($h, 36, 4)));
    my $l1o = unpack("Q>", substr($h, 40, 8));
    for my $e (unpack("Q>*", rd($l1o, 8 * $l1n))) {
        my $l2 = $e & 0x00fffffffffffe00;
        next unless $l2;
        my @t = map { $_ & ~(1 << 63) } unpack("Q>*", rd($l2, 1 << $cb));
        seek($f, $l2, 0);
        print $f pack("Q>*", @t);
    }
    close($f) or die "$ARGV[0]: $!";' img.qcow2
check_plain img.qcow2
check_repair img.qcow2 all

# --- (d) the refcount structure itself ---

begin_case reftable_entry_cleared
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(reftable_pos img.qcow2)" 0 "refcount table entry 0"
check_all img.qcow2

begin_case reftable_entry_cleared_small_clusters
gen qemu-img create -q -f qcow2 -o cluster_size=512 img.qcow2 64M
io img.qcow2 "write -P 1 0 300k" "write -P 2 40M 8k"
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 $(($(reftable_pos img.qcow2) + 8)) 0 \
    "refcount table entry 1"
check_all img.qcow2

begin_case refblock_overlaps_l2
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(reftable_pos img.qcow2)" \
    $(($(l2_cluster img.qcow2 0) << 16)) "refcount table entry 0 -> the first L2 table"
check_all img.qcow2

begin_case refblock_reserved_bits
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(reftable_pos img.qcow2)" \
    $(($(peek_be64 img.qcow2 "$(reftable_pos img.qcow2)") | 1)) "refcount table entry 0"
check_all img.qcow2

begin_case lazy_refcounts_dirty
gen qemu-img create -q -f qcow2 -o lazy_refcounts=on img.qcow2 1G
RECIPE="${RECIPE}qemu-io -c 'write -P 1 0 128k' -c 'write -P 2 600M 64k' -c 'sigraise 9' img.qcow2
"
(qemu-io -c "write -P 1 0 128k" -c "write -P 2 600M 64k" -c "sigraise 9" img.qcow2 \
    >/dev/null 2>&1; true) 2>/dev/null # "; true": the shell reports the kill, not qemu-io
if [ $(($(peek_be64 img.qcow2 72) & 1)) -eq 0 ]; then
    fail "$CASE: harness: the killed qemu-io did not leave the image dirty" "$(recipe)"
    CASE_OK=0
fi
check_all img.qcow2
# A writable open repairs a dirty image by itself (prepare_for_writing -> check).
if [ "$CASE_OK" = 1 ]; then
    cp img.qcow2 open.qcow2
    if [ "$QCOW2" = qemu-img ]; then
        qemu-io -c flush open.qcow2 >open.out 2>&1
    else
        run_cli "$CLI_TIMEOUT" open.out open.err "$QCOW2" io -c flush open.qcow2
    fi
    if [ $(($(peek_be64 open.qcow2 72) & 1)) -ne 0 ]; then
        fail "$CASE: a writable open left the dirty bit set" "$(recipe)"
    elif ! qemu-img check open.qcow2 >open.check 2>&1; then
        fail "$CASE: after a writable open, qemu-img check is not clean" \
            "$(head -n 8 open.check)" "$(recipe)"
    elif ! qemu-img compare -U open.qcow2 q-all.qcow2 >open.cmp 2>&1; then
        fail "$CASE: a writable open changed the guest data" "$(head -n 5 open.cmp)"
    else
        pass "$CASE: writable open repairs the image"
    fi
fi

begin_case corrupt_bit_set
make_basic
[ "$CASE_OK" = 1 ] && poke_be64 img.qcow2 72 $(($(peek_be64 img.qcow2 72) | 2))
RECIPE="${RECIPE}# incompatible feature bit 1 (corrupt) set
"
check_all img.qcow2
if [ "$CASE_OK" = 1 ] && [ $(($(peek_be64 o-all.qcow2 72) & 2)) -ne 0 ]; then
    fail "$CASE: check -r all left the corrupt bit set" "$(recipe)"
fi

begin_case refblock_past_eof
gen qemu-img create -q -f qcow2 -o cluster_size=4k img.qcow2 1G
io img.qcow2 "write -P 1 0 64k" "write -P 2 500M 64k"
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 $(($(reftable_pos img.qcow2) + 8)) $((64 << 20)) \
    "refcount table entry 1 -> 64 MiB, past the end of the file"
check_all img.qcow2

begin_case l2_table_past_eof
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l1_entry_pos img.qcow2 629145600)" \
    $(((1 << 63) | (1 << 30))) "L1 entry of guest 600M -> 1 GiB, past the end of the file"
check_all img.qcow2

begin_case l2_table_unaligned
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l1_entry_pos img.qcow2 629145600)" \
    $(($(peek_be64 img.qcow2 "$(l1_entry_pos img.qcow2 629145600)") + 0x200)) \
    "L1 entry of guest 600M, 512 bytes off"
check_all img.qcow2

begin_case snapshot_l1_unaligned
make_basic
gen qemu-img snapshot -c one img.qcow2
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(snapshot_entry_pos img.qcow2 0)" \
    $(($(peek_be64 img.qcow2 "$(snapshot_entry_pos img.qcow2 0)") + 0x200)) \
    "L1 table offset of snapshot 0, 512 bytes off"
check_all img.qcow2

# --- snapshot table entries ---

begin_case snapshot_entry_incomplete
make_basic
gen qemu-img snapshot -c one img.qcow2
gen qemu-img snapshot -c two img.qcow2
[ "$CASE_OK" = 1 ] && resize_snapshot_extra img.qcow2 1 8
check_all img.qcow2

begin_case snapshot_entry_too_much_extra_data
make_basic
gen qemu-img snapshot -c one img.qcow2
gen qemu-img snapshot -c two img.qcow2
[ "$CASE_OK" = 1 ] && resize_snapshot_extra img.qcow2 1 2048
check_all img.qcow2

# --- table entries ---

begin_case l2_reserved_bits
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 0)" \
    $(($(peek_be64 img.qcow2 "$(l2_entry_pos img.qcow2 0)") | 2)) "L2 entry of guest 0"
check_all img.qcow2

begin_case l1_reserved_bits
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l1_entry_pos img.qcow2 0)" \
    $(($(peek_be64 img.qcow2 "$(l1_entry_pos img.qcow2 0)") | (1 << 56))) "L1 entry 0"
check_all img.qcow2

begin_case unaligned_zero_cluster
make_basic
io img.qcow2 "write -z 64k 64k"
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)" \
    $(($(peek_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)") + 0x2a00)) "L2 entry of guest 64k"
check_all img.qcow2

begin_case unaligned_data_cluster
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)" \
    $(($(peek_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)") + 0x2a00)) "L2 entry of guest 64k"
check_all img.qcow2

begin_case reference_past_eof
make_basic
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)" \
    $(((1 << 63) | (1 << 40))) "L2 entry of guest 64k -> 1 TiB"
check_all img.qcow2

begin_case compressed_with_copied
gen qemu-img create -q -f raw src.raw 4M
io src.raw "write -P 7 0 1M"
gen qemu-img convert -c -O qcow2 src.raw img.qcow2
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)" \
    $(($(peek_be64 img.qcow2 "$(l2_entry_pos img.qcow2 65536)") | (1 << 63))) "L2 entry of guest 64k"
check_all img.qcow2

# --- (f) extended L2 subcluster bitmaps ---

begin_case extl2_alloc_and_zero
gen qemu-img create -q -f qcow2 -o extended_l2=on img.qcow2 64M
io img.qcow2 "write -P 1 0 64k" "write -P 2 1M 8k"
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 $(($(l2_entry_pos img.qcow2 1048576) + 8)) \
    $(((1 << 32) | 1)) "bitmap of guest 1M: subcluster 0 allocated and zero"
check_all img.qcow2

begin_case extl2_unallocated_with_alloc_bits
gen qemu-img create -q -f qcow2 -o extended_l2=on img.qcow2 64M
io img.qcow2 "write -P 1 0 64k"
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 $(($(l2_entry_pos img.qcow2 131072) + 8)) 3 \
    "bitmap of unallocated guest 128k"
check_all img.qcow2

begin_case extl2_compressed_with_bitmap
gen qemu-img create -q -f raw src.raw 4M
io src.raw "write -P 7 0 1M"
gen qemu-img convert -c -O qcow2 -o extended_l2=on src.raw img.qcow2
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 $(($(l2_entry_pos img.qcow2 65536) + 8)) 1 \
    "bitmap of compressed guest 64k"
check_all img.qcow2

begin_case extl2_leak
gen qemu-img create -q -f qcow2 -o extended_l2=on img.qcow2 64M
io img.qcow2 "write -P 1 0 64k" "write -P 2 1M 8k"
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$(l2_entry_pos img.qcow2 1048576)" 0 \
    "L2 entry of guest 1M"
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 $(($(l2_entry_pos img.qcow2 1048576) + 8)) 0 \
    "bitmap of guest 1M"
check_all img.qcow2

# --- (g) tables an ordinary open refuses: the check describes them (open for check) ---

# A small image: L1 at 0x30000, L2 at 0x40000, data in clusters 5..7.
make_small() {
    gen qemu-img create -q -f qcow2 "$@" img.qcow2 4M
    io img.qcow2 "write -P 0x11 0 128k" "write -P 0x22 1M 64k"
}

# ordinary_open_refuses IMG: `info` and a read through `io` fail with exactly one line on
# stderr and leave the image as it was. (qemu-img opens these images: nothing to compare.)
ordinary_open_refuses() {
    local img=$1 before what rc
    [ "$CASE_OK" = 1 ] && [ "$QCOW2" != qemu-img ] || return 0
    before=$(sha256sum <"$img")
    for what in info io; do
        if [ $what = info ]; then
            run_cli "$CLI_TIMEOUT" open.out open.err "$QCOW2" info "$img"
        else
            run_cli "$CLI_TIMEOUT" open.out open.err "$QCOW2" io -c "read 0 512" "$img"
        fi
        rc=$?
        if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ "$(wc -l <open.err)" -ne 1 ]; then
            fail "$CASE: $what opened the damaged image (exit $rc) or said more than one line" \
                "$(head -n 5 open.err)" "$(recipe)"
        else
            pass "$CASE: $what refuses the image: $(cat open.err)"
        fi
    done
    if [ "$(sha256sum <"$img")" != "$before" ]; then
        fail "$CASE: an ordinary open modified the damaged image" "$(recipe)"
    fi
}

# layout_case NAME OFFSET VALUE WHAT: a small image whose 64-bit header field at OFFSET is
# VALUE, checked and repaired by both tools, and refused by our ordinary opens.
layout_case() {
    begin_case "$1"
    make_small
    [ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 "$2" "$3" "$4"
    check_all img.qcow2
    ordinary_open_refuses img.qcow2
}

layout_case l1_table_at_offset_0 40 0 "l1_table_offset"
layout_case l1_table_past_eof 40 $((1 << 32)) "l1_table_offset -> 4 GiB"
layout_case refcount_table_at_offset_0 48 0 "refcount_table_offset"
layout_case refcount_table_past_eof 48 $((1 << 32)) "refcount_table_offset -> 4 GiB"

begin_case refcount_table_no_clusters
make_small
[ "$CASE_OK" = 1 ] && poke_be32 img.qcow2 56 0 &&
    RECIPE="${RECIPE}# refcount_table_clusters: be32 at 56 := 0
"
check_all img.qcow2
ordinary_open_refuses img.qcow2

begin_case snapshot_table_past_eof
make_small
gen qemu-img snapshot -c one img.qcow2
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 64 $((1 << 32)) "snapshots_offset -> 4 GiB"
# QEMU's repair, freeing the old table at 4 GiB, makes a refcount block for it there (and
# fails): its image ends one cluster later than ours.
LAX_END=1
check_all img.qcow2
ordinary_open_refuses img.qcow2

begin_case snapshot_table_unaligned
make_small
gen qemu-img snapshot -c one img.qcow2
[ "$CASE_OK" = 1 ] && damage_be64 img.qcow2 64 $(($(peek_be64 img.qcow2 64) + 0x200)) \
    "snapshots_offset, 512 bytes off"
check_all img.qcow2

# --- a backing file that cannot be opened fails the check, as in qemu-img ---

# check_backing_fails IMG NAME: `check`, `check -r leaks` and `check -r all` exit 1 (qemu-img
# too, unless SKIP_QEMU: it never returns) with one line on stderr that names NAME. Each runs
# on a copy of the same name in a directory of its own (backing names resolve as for IMG).
check_backing_fails() {
    local img=$1 name=$2 mode rq ro r
    [ "$CASE_OK" = 1 ] || return 0
    for mode in none leaks all; do
        r=()
        [ $mode != none ] && r=(-r $mode)
        rm -rf o q && mkdir o q && cp "$img" o/ && cp "$img" q/ || return 0
        run_cli "$CLI_TIMEOUT" o.out o.err "$QCOW2" check "${r[@]}" "o/$img"
        ro=$?
        rq=1
        if [ -z "${SKIP_QEMU:-}" ]; then
            qemu-img check "${r[@]}" "q/$img" >q.out 2>q.err
            rq=$?
        fi
        if [ $ro -ne $rq ] || [ "$(wc -l <o.err)" -ne 1 ] || ! grep -q -F "$name" o.err; then
            fail "$CASE: check ${r[*]} exits $ro (qemu-img: $rq), wanted one line naming $name" \
                "$(head -n 5 o.err)" "$(recipe)"
        else
            pass "$CASE: check ${r[*]} exits $ro: $(cat o.err)"
        fi
    done
}

begin_case backing_file_missing
gen qemu-img create -q -f qcow2 base.qcow2 4M
gen qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 img.qcow2
gen rm base.qcow2
check_backing_fails img.qcow2 base.qcow2

begin_case backing_file_is_itself
# Made with a same-length name, then renamed in the header (qemu-img refuses a direct one).
# qemu-img check recurses without end on it: only ours runs, and must stop at once.
gen qemu-img create -q -f qcow2 -u -b selx.qcow2 -F qcow2 img.qcow2 4M
if [ "$CASE_OK" = 1 ]; then
    gen mv img.qcow2 self.qcow2
    gen poke_bytes self.qcow2 "$(find_string_offset self.qcow2 selx.qcow2)" 73656c66 # "self"
fi
if [ "$QCOW2" != qemu-img ]; then
    SKIP_QEMU=1 check_backing_fails self.qcow2 "loops back to itself"
fi

# --- formats without checks ---

begin_case raw_not_supported
gen qemu-img create -q -f raw img.raw 1M
if [ "$CASE_OK" = 1 ]; then
    qemu-img check img.raw >/dev/null 2>&1
    rq=$?
    run_cli "$CLI_TIMEOUT" o.out o.err "$QCOW2" check img.raw
    ro=$?
    if [ $rq -ne $ro ]; then
        fail "$CASE: check of a raw image exits $ro, qemu-img check $rq" "$(head -n 3 o.err)"
    else
        pass "$CASE: check of a raw image exits $ro"
    fi
fi

finish
