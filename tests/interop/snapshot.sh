#!/usr/bin/env bash
# snapshot.sh - internal snapshots against qemu-img, both ways, on copies of the same image.
#  1. Lifecycle, per image kind (v3, v2, extended L2, refcount widths 1/16/64, a backing file,
#     compressed clusters in all): one tool creates a snapshot, the other changes the disk and
#     creates another, lists, reads every snapshot, applies, deletes; then the same with the
#     tools swapped. After every step `qemu-img check` must be clean, the active disk and every
#     snapshot (`qemu-img convert -l` and `$QCOW2 convert -l`) must equal the model, and
#     `snapshot -l` and `info` (human and JSON) must print what qemu-img prints.
#  2. The CLI: messages and exit codes of both tools on the same mistakes.
#  3. A randomized run: writes, zero writes, discards and snapshot create/apply/delete through
#     either tool at random, against raw models (SNAPSHOT_RANDOM_STEPS, default 16,
#     verified every SNAPSHOT_VERIFY_EVERY=4;
#     `make stress` sets more; SNAPSHOT_SEED picks the sequence). SNAPSHOT_FULL=1 (make
#     stress) adds more image kinds to 1.

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-60}
export TZ=UTC
cd "$T" || exit 1

SIZE=$((4 * 1024 * 1024))

# snap_tool WHO: the snapshot-capable CLI of one side ("ours" or "qemu").
snap_tool() { if [ "$1" = ours ]; then echo "$QCOW2"; else echo qemu-img; fi; }
# io WHO ARGS...: qemu-io or our drop-in for it.
io() {
    local who=$1
    shift
    if [ "$who" = ours ]; then "$QCOW2" io "$@"; else qemu-io "$@"; fi
}
other() { if [ "$1" = ours ]; then echo qemu; else echo ours; fi; }

# model_io RAW CMDS...: apply qemu-io commands to a raw model.
model_io() {
    local raw=$1 c args=()
    shift
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -f raw "${args[@]}" "$raw" >/dev/null
}

# both_io WHO IMG RAW CMDS...: the same commands on the image (through WHO) and its model.
both_io() {
    local who=$1 img=$2 raw=$3 c args=()
    shift 3
    for c in "$@"; do args+=(-c "$c"); done
    io "$who" "${args[@]}" "$img" >io.out 2>&1 || { cat io.out; return 1; }
    model_io "$raw" "$@"
}

# verify NAME IMG: qemu-img check clean, the active disk equals IMG.raw, every snapshot
# (model IMG.snap.NAME.raw) reads the same through both tools.
verify() {
    local name=$1 img=$2 f sn ok=1
    if ! qemu-img check "$img" >check.out 2>&1; then
        fail "$name: qemu-img check" "$(head -n 8 check.out)"
        return 1
    fi
    if ! qemu-img compare -q -f qcow2 -F raw "$img" "$img.raw"; then
        fail "$name: active disk differs from the model"
        return 1
    fi
    for f in "$img".snap.*.raw; do
        [ -e "$f" ] || continue
        sn=${f#"$img".snap.}
        sn=${sn%.raw}
        rm -f q.raw o.raw
        if ! qemu-img convert -O raw -l "snapshot.name=$sn" "$img" q.raw 2>conv.err ||
            ! cmp -s q.raw "$f"; then
            fail "$name: qemu-img reads snapshot $sn wrong" "$(cat conv.err)"
            ok=0
        fi
        if ! "$QCOW2" convert -O raw -l "$sn" "$img" o.raw 2>conv.err || ! cmp -s o.raw "$f"; then
            fail "$name: $QCOW2 reads snapshot $sn wrong" "$(cat conv.err)"
            ok=0
        fi
    done
    [ $ok = 1 ] && pass "$name"
}

# same_listing NAME IMG: snapshot -l, info and info --output=json agree with qemu-img.
same_listing() {
    local name=$1 img=$2
    qemu-img snapshot -l "$img" >q.list 2>&1
    "$QCOW2" snapshot -l "$img" >o.list 2>&1
    if ! diff -u q.list o.list >list.diff; then
        fail "$name: snapshot -l differs" "$(head -n 12 list.diff)"
        return
    fi
    qemu-img info --output=json "$img" | sed '/actual-size/d' >q.json
    "$QCOW2" info --output=json "$img" | sed '/actual-size/d' >o.json
    if ! diff -u q.json o.json >json.diff; then
        fail "$name: info --output=json differs" "$(head -n 20 json.diff)"
        return
    fi
    qemu-img info "$img" | sed '/^disk size/d' >q.info
    "$QCOW2" info "$img" | sed '/^disk size/d' >o.info
    if ! diff -u q.info o.info >info.diff; then
        fail "$name: info differs" "$(head -n 20 info.diff)"
        return
    fi
    pass "$name: listing"
}

# snap WHO OP NAME IMG: snapshot -OP NAME through WHO; keeps the models in step.
snap() {
    local who=$1 op=$2 sn=$3 img=$4
    if ! "$(snap_tool "$who")" snapshot "-$op" "$sn" "$img" >snap.out 2>&1; then
        fail "$who snapshot -$op $sn $img" "$(cat snap.out)"
        return 1
    fi
    case $op in
        c) cp "$img.raw" "$img.snap.$sn.raw" ;;
        a) cp "$img.snap.$sn.raw" "$img.raw" ;;
        d) rm -f "$img.snap.$sn.raw" ;;
    esac
}

# new_image IMG OPTS [BACKING]: data written by qemu-io, compressed clusters included.
new_image() {
    local img=$1 opts=$2 backing=${3:-}
    rm -f "$img" "$img".*raw
    if [ -n "$backing" ]; then
        harness "create $img" qemu-img create -f qcow2 -o "$opts" -b "$backing" -F qcow2 "$img" \
            || return 1
    else
        harness "create $img" qemu-img create -f qcow2 -o "$opts" "$img" $SIZE || return 1
    fi
    harness "model of $img" qemu-img convert -O raw "$img" "$img.raw" || return 1
    both_io qemu "$img" "$img.raw" "write -P 0x11 0 192k" "write -P 0x12 1M 8k" \
        "write -P 0x13 3M 1k" || return 1
    # Compressed clusters (qemu-io writes them only into unallocated clusters).
    io qemu -c "write -c -P 0x14 2M 64k" -c "write -c -P 0x15 2112k 64k" "$img" >/dev/null &&
        model_io "$img.raw" "write -P 0x14 2M 64k" "write -P 0x15 2112k 64k"
}

# lifecycle NAME OPTS A [BACKING]: the two-snapshot story with tools A and B = other(A).
lifecycle() {
    local name=$1 opts=$2 a=$3 backing=${4:-} img=img.qcow2
    local b
    b=$(other "$a")
    name="$name ($a first)"
    new_image "$img" "$opts" "$backing" || return
    snap "$a" c s1 "$img" && verify "$name: $a creates s1" "$img" || return
    both_io "$b" "$img" "$img.raw" "write -P 0x21 0 4k" "write -P 0x22 130k 3k" \
        "write -P 0x23 2M 4k" "write -z 1M 64k" || return
    # Discard is a hint: on a version 2 image with a backing file QEMU and we leave the
    # clusters alone (freeing them would show the backing file), so the model keeps them.
    if [ -n "$backing" ] && [[ $opts == *compat=0.10* ]]; then
        io "$b" -c "discard 3M 64k" "$img" >io.out 2>&1 || { cat io.out; return; }
    else
        both_io "$b" "$img" "$img.raw" "discard 3M 64k" || return
    fi
    verify "$name: $b writes over shared clusters" "$img" || return
    snap "$b" c s2 "$img" && verify "$name: $b creates s2" "$img" || return
    both_io "$a" "$img" "$img.raw" "write -P 0x31 64k 64k" "write -P 0x32 2112k 1k" \
        "write -z 0 32k" || return
    verify "$name: $a writes" "$img" || return
    same_listing "$name" "$img"
    snap "$b" a s1 "$img" && verify "$name: $b applies s1" "$img" || return
    both_io "$a" "$img" "$img.raw" "write -P 0x41 8k 8k" || return
    snap "$a" d s1 "$img" && verify "$name: $a deletes s1" "$img" || return
    snap "$a" a s2 "$img" && verify "$name: $a applies s2" "$img" || return
    snap "$b" d s2 "$img" && verify "$name: $b deletes s2" "$img" || return
    same_listing "$name: none left" "$img"
}

# ---- 1. lifecycles ----------------------------------------------------------------------------

harness "backing file" qemu-img create -q -f qcow2 base.qcow2 $SIZE &&
    harness "backing data" qemu-io -c "write -P 0x51 0 4M" base.qcow2

lifecycle "v3" "compat=1.1" ours
lifecycle "v2" "compat=0.10" qemu
for who in ours qemu; do
    lifecycle "backing, extended L2, refcount_bits=64" "extended_l2=on,refcount_bits=64" \
        "$who" base.qcow2
done
if [ "${SNAPSHOT_FULL:-0}" = 1 ]; then
    lifecycle "v3" "compat=1.1" qemu
    lifecycle "v2" "compat=0.10" ours
    lifecycle "small clusters, refcount_bits=8" "cluster_size=4k,refcount_bits=8" ours
    for who in ours qemu; do
        lifecycle "extended L2" "extended_l2=on,cluster_size=64k" "$who"
        lifecycle "refcount_bits=64" "refcount_bits=64" "$who"
        lifecycle "v2, backing" "compat=0.10" "$who" base.qcow2
        lifecycle "refcount_bits=4, zstd" "refcount_bits=4,compression_type=zstd" "$who"
        lifecycle "refcount_bits=32, 512-byte clusters" "refcount_bits=32,cluster_size=512" \
            "$who"
    done
fi

# refcount_bits=1: a snapshot of written clusters would need refcount 2. qemu-img refuses
# (and leaks the L1 copy); we refuse and leak nothing.
for who in ours qemu; do
    new_image r1.qcow2 "refcount_bits=1" || continue
    "$(snap_tool "$who")" snapshot -c s r1.qcow2 >r1.out 2>&1
    rc=$?
    msg=$(sed 's/^[a-z0-9-]*: //' r1.out)
    if [ $rc = 1 ] && [ "$msg" = "Could not create snapshot 's': -22 (Invalid argument)" ]; then
        pass "refcount_bits=1: $who refuses"
    else
        fail "refcount_bits=1: $who: rc $rc" "$(cat r1.out)"
    fi
    if [ "$who" = ours ]; then
        qemu-img check r1.qcow2 >check.out 2>&1 && pass "refcount_bits=1: nothing leaked" ||
            fail "refcount_bits=1: check after the refusal" "$(cat check.out)"
    fi
done
# ... but an empty image has nothing to share.
harness "empty r1" qemu-img create -q -f qcow2 -o refcount_bits=1 e1.qcow2 1M
"$QCOW2" snapshot -c s e1.qcow2 && qemu-img check -q e1.qcow2 &&
    pass "refcount_bits=1: empty image" || fail "refcount_bits=1: empty image"

# ---- 2. the CLI -----------------------------------------------------------------------------

# cli NAME SETUP ARGS...: run snapshot ARGS (FILE = the image) with both tools on copies made
# by SETUP; compare exit codes, stdout and stderr (prefix stripped).
cli() {
    local name=$1 setup=$2
    shift 2
    local a_o=() a_q=() x
    for x in "$@"; do
        case $x in
            FILE) a_o+=(o.qcow2); a_q+=(q.qcow2) ;;
            *) a_o+=("$x"); a_q+=("$x") ;;
        esac
    done
    rm -f o.qcow2 q.qcow2
    harness "$name setup" qemu-img create -q -f qcow2 q.qcow2 1M || return
    if [ -n "$setup" ]; then
        for x in $setup; do qemu-img snapshot -c "$x" q.qcow2 || return; done
    fi
    cp q.qcow2 o.qcow2
    run_cli "$CLI_TIMEOUT" o.out o.err "$QCOW2" snapshot "${a_o[@]}"
    local rc_o=$?
    run_cli "$CLI_TIMEOUT" q.out q.err qemu-img snapshot "${a_q[@]}"
    local rc_q=$?
    sed -e 's/^qcow2: //' -e 's/o\.qcow2/FILE/g' -e "s/ (try 'qcow2 snapshot --help')//" o.err >o.e
    sed -e 's/^qemu-img: //' -e 's/q\.qcow2/FILE/g' -e "/^Try 'qemu-img --help'/d" q.err >q.e
    if [ $rc_o != $rc_q ] || ! cmp -s o.out q.out || ! cmp -s o.e q.e; then
        fail "cli: $name: rc $rc_o vs qemu-img $rc_q" "ours: $(cat o.out o.e)" \
            "qemu-img: $(cat q.out q.e)"
        return
    fi
    # The images must agree too (snapshot IDs and names).
    if [ $rc_o = 0 ] && ! diff <(qemu-img snapshot -l o.qcow2 | cut -c1-27) \
        <(qemu-img snapshot -l q.qcow2 | cut -c1-27) >/dev/null; then
        fail "cli: $name: the tables differ"
        return
    fi
    pass "cli: $name"
}

cli "list, none" "" -l FILE
cli "list" "a b" -l FILE
cli "list -U" "a" -U -l FILE
cli "no action" "" FILE
cli "-q create" "" -q -c x FILE
cli "duplicate names" "x" -c x FILE
cli "empty name" "" -c "" FILE
cli "ID after a gap" "a b c" -d b FILE
cli "apply by ID" "xxx 1" -a 1 FILE
cli "apply by name" "a b" -a b FILE
cli "apply missing" "a" -a nosuch FILE
cli "delete missing" "a" -d nosuch FILE
cli "delete by ID is by name" "a b" -d 2 FILE
cli "delete the first of two" "a a" -d a FILE
cli "mixed actions" "" -l -c x FILE
cli "missing argument" "" -c
cli "no file" "" -l
cli "two files" "" -l FILE FILE
cli "-U with create" "" -U -c x FILE
long=$(printf 'n%.0s' $(seq 1 300))
cli "name cut to 255 bytes" "" -c "$long" FILE

# Raw images have none: -l prints nothing, -c is refused.
harness "raw" qemu-img create -q -f raw r.raw 1M
"$QCOW2" snapshot -f raw -l r.raw >o.out 2>&1 && [ ! -s o.out ] && pass "cli: raw -l" ||
    fail "cli: raw -l" "$(cat o.out)"
"$QCOW2" snapshot -f raw -c x r.raw >o.out 2>&1
[ $? = 1 ] && grep -q "Could not create snapshot 'x': -95 (Operation not supported)" o.out &&
    pass "cli: raw -c" || fail "cli: raw -c" "$(cat o.out)"

# Persistent bitmaps: qemu-img 7.2 refuses apply whenever the image has bitmaps, enabled or
# disabled (bdrv_snapshot_goto), and we refuse the same way, leaving the image unchanged. A
# bitmap extension that a program without bitmap support has disowned (autoclear bit clear)
# does not count: both warn on opening it, then apply. Create and delete always work.
bitmap_apply() { # NAME SETUP...: SETUP (shell commands on $1.qcow2) then apply s on copies
    local name=$1 rc_o rc_q
    shift
    rm -f bm.qcow2 bm-o.qcow2 bm-q.qcow2
    harness "$name: image" qemu-img create -q -f qcow2 bm.qcow2 1M &&
        harness "$name: data" qemu-io -c "write -P 0x61 0 64k" bm.qcow2 &&
        harness "$name: snapshot" qemu-img snapshot -c s bm.qcow2 &&
        harness "$name: more data" qemu-io -c "write -P 0x62 0 4k" bm.qcow2 || return
    harness "$name: bitmap" qemu-img bitmap --add bm.qcow2 b0 || return
    while [ $# -gt 0 ]; do
        harness "$name: $1" eval "$1" || return
        shift
    done
    cp bm.qcow2 bm-o.qcow2
    cp bm.qcow2 bm-q.qcow2
    run_cli "$CLI_TIMEOUT" ours.out ours.err "$QCOW2" snapshot -a s bm-o.qcow2
    rc_o=$?
    run_cli "$CLI_TIMEOUT" qemu.out qemu.err qemu-img snapshot -a s bm-q.qcow2
    rc_q=$?
    # qemu-img ends its warning without a newline; ours ends the line.
    sed -i -e '$a\' qemu.err
    sed -i -e 's/fix\.qemu-img: /fix.\nqemu-img: /' qemu.err
    same_outcome "cli: apply with bitmaps: $name" $rc_o $rc_q "" || return
    # Both tools store the bitmaps again at close (elsewhere): compare what the image says.
    local want=bm-q.qcow2 st
    [ $rc_o != 0 ] && want=bm.qcow2
    # (A disowned bitmap's clusters are leaks, before and after: qemu-img drops its extension
    # when it rewrites the header, we keep it so that other readers still see the warning.)
    qemu-img check bm-o.qcow2 >check.out 2>&1
    st=$?
    if [ $st != 0 ] && [ $st != 3 ]; then
        fail "cli: apply with bitmaps: $name: qemu-img check" "$(cat check.out)"
        return
    fi
    if ! qemu-img compare -q bm-o.qcow2 "$want" 2>/dev/null ||
        ! diff <(qemu-img info bm-o.qcow2 2>&1 | sed -n '/^Snapshot list/,$p') \
            <(qemu-img info "$want" 2>&1 | sed -n '/^Snapshot list/,$p') >/dev/null; then
        fail "cli: apply with bitmaps: $name: the image is not the one expected ($want)"
        return
    fi
    pass "cli: apply with bitmaps: $name ($( [ $rc_o = 0 ] && echo applied || echo refused))"
}
bitmap_apply "an enabled bitmap"
bitmap_apply "a disabled bitmap" "qemu-img bitmap --disable bm.qcow2 b0"
# Byte 95 holds the autoclear bit of bitmaps (bit 0 of the 64-bit field at 88).
bitmap_apply "a disowned bitmap" "printf '\\0' | dd of=bm.qcow2 bs=1 seek=95 conv=notrunc 2>/dev/null"

# A snapshot is exported read-only by the nbdkit plugin.
PLUGIN=${QCOW2_BUILD_DIR:-$INTEROP_DIR/../../build}/nbdkit-qcow2-plugin.so
if command -v nbdkit >/dev/null && command -v nbdcopy >/dev/null && [ -e "$PLUGIN" ]; then
    new_image p.qcow2 "compat=1.1" && snap qemu c s1 p.qcow2 &&
        both_io qemu p.qcow2 p.qcow2.raw "write -P 0x77 0 1M" &&
        nbdkit -U - "$PLUGIN" file=p.qcow2 snapshot=s1 \
            --run 'nbdcopy "$uri" plug.raw && nbdinfo "$uri" >plug.info' >/dev/null 2>&1
    cmp -s plug.raw p.qcow2.snap.s1.raw && grep -q 'is_read_only: true' plug.info &&
        pass "plugin snapshot=s1" || fail "plugin snapshot=s1"
else
    skip "plugin snapshot=: nbdkit, nbdcopy or the plugin missing"
fi

# ---- 3. randomized ---------------------------------------------------------------------------

STEPS=${SNAPSHOT_RANDOM_STEPS:-16}
VERIFY_EVERY=${SNAPSHOT_VERIFY_EVERY:-4}
RANDOM=${SNAPSHOT_SEED:-$$}
seed=$RANDOM
RANDOM=$seed

random_run() {
    local opts=$1 img=rnd.qcow2 step who op sn names=() next=1 off len
    new_image "$img" "$opts" || return
    for ((step = 0; step < STEPS; step++)); do
        who=$([ $((RANDOM % 2)) = 0 ] && echo ours || echo qemu)
        op=$((RANDOM % 8))
        off=$(((RANDOM % 64) * 64 * 1024 + (RANDOM % 4) * 512))
        len=$(((RANDOM % 3 + 1) * 4096 + (RANDOM % 2) * 65536))
        [ $((off + len)) -gt $SIZE ] && len=$((SIZE - off))
        case $op in
            # (a pattern is a byte: make stress runs 300 steps)
            0 | 1) both_io "$who" "$img" "$img.raw" "write -P $((step % 255 + 1)) $off $len" ;;
            2) both_io "$who" "$img" "$img.raw" "write -z $off $len" ;;
            3) both_io "$who" "$img" "$img.raw" \
                   "discard $((off / 65536 * 65536)) 65536" ;;
            4 | 5) sn="r$next"; next=$((next + 1)); snap "$who" c "$sn" "$img" && names+=("$sn") ;;
            6) if [ ${#names[@]} -gt 0 ]; then
                   snap "$who" a "${names[RANDOM % ${#names[@]}]}" "$img"
               fi ;;
            7) if [ ${#names[@]} -gt 0 ]; then
                   local i=$((RANDOM % ${#names[@]}))
                   snap "$who" d "${names[i]}" "$img" &&
                       names=("${names[@]:0:i}" "${names[@]:i+1}")
               fi ;;
        esac || { fail "random (seed $seed, $opts): step $step failed"; return; }
        [ $((step % VERIFY_EVERY)) = $((VERIFY_EVERY - 1)) ] || [ $step = $((STEPS - 1)) ] ||
            continue
        if ! verify "random (seed $seed, $opts): step $step op $op by $who" "$img" >/dev/null; then
            fail "random (seed $seed, $opts): wrong after step $step (op $op by $who)"
            return
        fi
    done
    pass "random (seed $seed, $opts): $STEPS steps"
}

# QEMU's limit of 65536 snapshots: an image whose table is full (written here with perl, every
# entry sharing the active L1 table) refuses one more with qemu-img's message, and is unchanged.
full_table() { # FILE: give FILE a table of 65536 snapshots
    perl -e '
        open(my $f, "+<", $ARGV[0]) or die; binmode $f;
        read($f, my $h, 104) == 104 or die;
        my ($size) = unpack("Q>", substr($h, 24, 8));
        my ($l1_size, $l1_off) = unpack("N Q>", substr($h, 36, 12));
        my $off = (-s $f) + 65535 & ~65535;
        my $t = "";
        for my $i (1 .. 65536) {
            my ($id, $name) = ($i, "s$i");
            my $e = pack("Q> N n n N N Q> N N", $l1_off, $l1_size, length $id, length $name,
                         0, 0, 0, 0, 24) . pack("Q> Q> Q>", 0, $size, ~0) . $id . $name;
            $t .= $e . ("\0" x ((8 - length($e) % 8) % 8));
        }
        seek($f, $off, 0); print $f $t;
        seek($f, 60, 0); print $f pack("N Q>", 65536, $off);
        close($f) or die;' "$1"
}
limit_case() {
    rm -f lim-o.qcow2 lim-q.qcow2
    harness "limit setup" qemu-img create -q -f qcow2 lim-q.qcow2 1M &&
        harness "limit table" full_table lim-q.qcow2 || return
    cp lim-q.qcow2 lim-o.qcow2
    cp lim-q.qcow2 lim-before.qcow2
    run_cli "$CLI_TIMEOUT" o.out o.err "$QCOW2" snapshot -c one-more lim-o.qcow2
    local rc_o=$?
    run_cli "$CLI_TIMEOUT" q.out q.err qemu-img snapshot -c one-more lim-q.qcow2
    local rc_q=$?
    sed -e 's/^qcow2: //' o.err >o.e
    sed -e 's/^qemu-img: //' q.err >q.e
    if [ $rc_o != 1 ] || [ $rc_q != 1 ] || ! cmp -s o.e q.e; then
        fail "cli: the 65537th snapshot is refused as qemu-img refuses it" \
            "ours ($rc_o): $(cat o.e)" "qemu-img ($rc_q): $(cat q.e)"
    elif ! cmp -s lim-o.qcow2 lim-before.qcow2; then
        fail "cli: the 65537th snapshot is refused as qemu-img refuses it" "the image changed"
    else
        pass "cli: the 65537th snapshot is refused as qemu-img refuses it"
    fi
    rm -f lim-o.qcow2 lim-q.qcow2 lim-before.qcow2
}
limit_case

# QEMU's limit of 64 MiB for the table (QCOW_MAX_SNAPSHOTS_SIZE), counted as qemu-img 7.2
# counts it: the padding before every entry, at least 24 bytes of extra data each. big_table
# FILE FIT fills FILE's table (written with perl: about 1030 disk-only entries without an L1
# table, names of up to 65535 bytes, the table's clusters given refcount 1, so that `check`
# is clean) so that one more entry, ID 4 digits long, with a FIT-byte name ends exactly at
# the limit. Prints FIT, raised by up to 7 so that the table ends on an 8-byte boundary.
big_table() {
    perl -e '
open(my $f, "+<", $ARGV[0]) or die; binmode $f;
my $fit = $ARGV[1];
read($f, my $h, 104) == 104 or die;
my ($size) = unpack("Q>", substr($h, 24, 8));
my ($rt_off) = unpack("Q>", substr($h, 48, 8));
my $limit = 64 * 1024 * 1024;
my ($t, $n) = ("", 0);
my $entry = sub {
    my ($id, $len) = @_;
    my $e = pack("Q> N n n N N Q> N N", 0, 0, length $id, $len, 0, 0, 0, 0, 24) .
            pack("Q> Q> Q>", 0, $size, ~0) . $id . ("n" x $len);
    $t .= ("\0" x ((8 - length($t) % 8) % 8)) . $e;
};
# The table ends where the new entry must start for it to end at the limit. The ID of the
# new entry has 4 digits (checked below); $fit grows by up to 7 so that the table ends on an
# 8-byte boundary, where the new entry starts.
my $end = $limit - 64 - 4 - $fit;
$fit += $end % 8;
$end -= $end % 8;
for (;;) {
    my $id = $n + 1;
    my $left = $end - length($t) - ((8 - length($t) % 8) % 8) - 64 - length $id;
    last if $left < 0;
    my $len = $left > 2 * 65000 ? 65000 : $left <= 65535 ? $left : int($left / 2);
    $entry->($id, $len);
    $n++;
}
die "table ends at " . length($t) . ", want $end" unless length($t) == $end && length($n + 1) == 4;
my $off = (-s $f) + 65535 & ~65535;
seek($f, $off, 0); print $f $t;
seek($f, 60, 0); print $f pack("N Q>", $n, $off);
seek($f, $rt_off, 0); read($f, my $rb, 8) == 8 or die;
my ($rb_off) = unpack("Q>", $rb);
for (my $c = $off >> 16; $c <= ($off + length($t) - 1) >> 16; $c++) {
    seek($f, $rb_off + 2 * $c, 0); print $f pack("n", 1);
}
close($f) or die;
print "$fit\n";' "$1" "$2"
}
# table_limit_case: a FIT-byte name fits through both tools, one byte more is refused by
# both with the same message; ours leaves the image unchanged (qemu-img has raised refcounts and
# written an L1 copy by then: it leaks them). Both tools list the result alike.
table_limit_case() {
    local fit more name rc_o rc_q pid what
    rm -f tl*.qcow2
    harness "table limit setup" qemu-img create -q -f qcow2 tl.qcow2 1M || return
    fit=$(big_table tl.qcow2 200) || { fail "table limit: writing the table"; return; }
    for more in 0 1; do
        what="a table of exactly 64 MiB is accepted"
        [ $more = 1 ] && what="a table 1 byte over 64 MiB is refused"
        name=$(printf "x%.0s" $(seq $((fit + more))))
        cp tl.qcow2 tl-o.qcow2
        cp tl.qcow2 tl-q.qcow2
        # Side by side: each reads and writes 64 MiB.
        run_cli "$CLI_TIMEOUT" ours.out ours.err "$QCOW2" snapshot -c "$name" tl-o.qcow2 &
        pid=$!
        run_cli "$CLI_TIMEOUT" qemu.out qemu.err qemu-img snapshot -c "$name" tl-q.qcow2
        rc_q=$?
        wait $pid
        rc_o=$?
        same_outcome "cli: $what" $rc_o $rc_q "FIT=$fit" || continue
        if [ $rc_o != $more ] || { [ $more = 1 ] &&
            ! grep -q "Could not create snapshot '$name': -27 (File too large)" ours.err; }; then
            fail "cli: $what" "rc $rc_o: $(cat ours.err)"
            continue
        fi
        if [ $more = 1 ] && ! cmp -s tl.qcow2 tl-o.qcow2; then
            fail "cli: $what" "ours changed the image"
            continue
        fi
        # The table written by perl is clean: a refused create left it so (cmp above).
        if [ $more = 0 ] && ! qemu-img check tl-o.qcow2 >check.out 2>&1; then
            fail "cli: $what: qemu-img check" "$(tail -n 4 check.out)"
            continue
        fi
        for who in "$QCOW2" qemu-img; do
            "$who" snapshot -l tl-o.qcow2 | md5sum
            [ $more = 1 ] && "$who" info --output=json tl-o.qcow2 | grep -v actual-size | md5sum
        done >sums
        if [ "$(sort -u sums | wc -l)" != $((more + 1)) ]; then
            fail "cli: $what: the tools list the image differently"
            continue
        fi
        pass "cli: $what"
    done
    rm -f tl*.qcow2
}
table_limit_case

random_run "extended_l2=on,refcount_bits=64"
[ "${SNAPSHOT_FULL:-0}" = 1 ] && random_run "compat=1.1"

finish
