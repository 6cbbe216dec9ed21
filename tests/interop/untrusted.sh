#!/usr/bin/env bash
# untrusted.sh - images from untrusted sources (include/qcow2.h, "Untrusted images"): a corpus
# of hostile images, made here at test time, goes through `info --untrusted --output=json`,
# `convert`, `check` and `map` with --untrusted --allow-dir=IN, and through the nbdkit plugin
# with untrusted=1 allow-dir=IN. Each must be refused: non-zero exit, exactly one line on
# stderr naming the reason, and the content of the outside file (a sentinel string) nowhere
# in the output or in convert's target. The corpus: backing files named absolutely (our
# sentinel, /etc/hostname), through "..", through a symlink, through a symlinked directory;
# data files named absolutely and through a symlink; device nodes and a FIFO as backing file,
# data file or image; a chain that leaves the directory at depth 2; L1, refcount and snapshot
# tables and a bitmap directory above the untrusted limits. Legitimate images (backing files
# and data files inside the directory, also from a subdirectory through "..") still work, and
# --untrusted without --allow-dir refuses any backing file. Needs nbdkit and nbdinfo for the
# plugin part (skipped without them).

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-20}
[ "$QCOW2" = qemu-img ] && skip_all "--untrusted is ours: qemu-img has no such mode"

PLUGIN=${QCOW2_NBDKIT_PLUGIN:-$(dirname "$QCOW2")/nbdkit-qcow2-plugin.so}
HAVE_NBD=0
if command -v nbdkit >/dev/null 2>&1 && command -v nbdinfo >/dev/null 2>&1 && [ -f "$PLUGIN" ]; then
    HAVE_NBD=1
fi

SENTINEL="SENTINEL-$$-$RANDOM-OUTSIDE"
IN=$T/in
OUT=$T/out
mkdir -p "$IN/sub" "$OUT"

# The outside: a raw file full of the sentinel, and a qcow2 image whose data is the sentinel.
harness "outside raw" qemu-img create -q -f raw "$OUT/secret.raw" 1M || finish
for off in 0 65536 524288; do
    printf '%s' "$SENTINEL" | dd of="$OUT/secret.raw" bs=1 seek=$off conv=notrunc status=none
done
harness "outside qcow2" qemu-img convert -q -f raw -O qcow2 "$OUT/secret.raw" "$OUT/secret.qcow2" || finish
HOSTNAME_TEXT=$(head -c 64 /etc/hostname 2>/dev/null | tr -d '\n')

# over NAME BACKING FMT: an image IN/NAME over BACKING (stored as given, not checked).
over() {
    harness "make $1" qemu-img create -q -f qcow2 -b "$2" -F "$3" -u "$IN/$1" 1M
}

# data_over NAME DATAFILE: an image IN/NAME whose raw external data file is DATAFILE, with
# every cluster allocated (so that reading the image reads the data file).
data_over() {
    harness "make $1" qemu-img create -q -f qcow2 -o data_file="$IN/$1.data",data_file_raw=on "$IN/$1" 1M &&
        harness "fill $1" qemu-io -f qcow2 -c 'write -P 0x41 0 1M' "$IN/$1" &&
        harness "point $1" qemu-img amend -f qcow2 -o data_file="$2" "$IN/$1" &&
        rm -f "$IN/$1.data"
}

# A fixed image whose header field at OFF (big-endian, N bytes) is set to VALUE.
patched() {
    local name=$1 n=$2 off=$3 value=$4
    harness "make $name" qemu-img create -q -f qcow2 "$IN/$name" 1M &&
        poke_be "$n" "$IN/$name" "$off" "$value"
}

# ---- the hostile corpus ----------------------------------------------------------------------
over abs.qcow2 "$OUT/secret.raw" raw
over etc.qcow2 /etc/hostname raw
over dotdot.qcow2 ../out/secret.raw raw
ln -s ../out/secret.raw "$IN/link.raw"
over symlink.qcow2 link.raw raw
ln -s "$OUT" "$IN/linkdir"
over symdir.qcow2 linkdir/secret.qcow2 qcow2
ln -s /dev/zero "$IN/zero-link"
over devlink.qcow2 zero-link raw
over devzero.qcow2 /dev/zero raw
mkfifo "$IN/fifo"
over fifo.qcow2 fifo raw
if mknod "$IN/zero-node" c 1 5 2>/dev/null; then
    over devnode.qcow2 zero-node raw
fi
over mid.qcow2 ../out/secret.qcow2 qcow2
over chain2.qcow2 mid.qcow2 qcow2 # mid.qcow2 is inside; its backing file is not
data_over data-abs.qcow2 "$OUT/secret.raw"
ln -s ../out/secret.raw "$IN/data-link.raw"
data_over data-link.qcow2 data-link.raw
data_over data-fifo.qcow2 fifo
data_over data-devzero.qcow2 /dev/zero
patched l1.qcow2 4 36 $((2 * 1024 * 1024))      # l1_size: 16 MiB of L1 table
patched reftable.qcow2 4 56 64                  # refcount_table_clusters: 4 MiB
patched snapshots.qcow2 4 60 5000               # nb_snapshots

# A bitmaps extension announcing 1000 bitmaps (the limit is 64 in untrusted mode).
harness "make bitmaps.qcow2" qemu-img create -q -f qcow2 "$IN/bitmaps.qcow2" 1M &&
    harness "add a bitmap" qemu-img bitmap --add "$IN/bitmaps.qcow2" b0
off=$(peek_be32 "$IN/bitmaps.qcow2" 100) # header_length: the extensions follow
while [ "$off" -lt 4096 ]; do
    type=$(peek_hex "$IN/bitmaps.qcow2" "$off" 4)
    len=$(peek_be32 "$IN/bitmaps.qcow2" $((off + 4)))
    [ "$type" = 00000000 ] && break
    if [ "$type" = 23852875 ]; then
        poke_be32 "$IN/bitmaps.qcow2" $((off + 8)) 1000
        break
    fi
    off=$((off + 8 + (len + 7) / 8 * 8))
done

# ---- the legitimate ones ---------------------------------------------------------------------
LEGIT="LEGIT-DATA-$$"
harness "base" qemu-img create -q -f raw "$IN/base.raw" 1M
printf '%s' "$LEGIT" | dd of="$IN/base.raw" bs=1 seek=4096 conv=notrunc status=none
over good.qcow2 base.raw raw
harness "sub/good" qemu-img create -q -f qcow2 -b ../good.qcow2 -F qcow2 -u "$IN/sub/good.qcow2" 1M
harness "gooddata" qemu-img create -q -f qcow2 -o data_file="$IN/gooddata.raw",data_file_raw=on "$IN/gooddata.qcow2" 1M
harness "fill gooddata" qemu-io -f qcow2 -c "write -P 0x4c 0 64k" "$IN/gooddata.qcow2"
harness "relative data file" qemu-img amend -f qcow2 -o data_file=gooddata.raw "$IN/gooddata.qcow2"

# ---- checks ----------------------------------------------------------------------------------

# leaks FILE...: does the sentinel (or the host's hostname) appear in any of the files?
leaks() {
    local f files=()
    for f in "$@"; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 1
    if [ -n "$HOSTNAME_TEXT" ]; then
        grep -a -q -F -e "$SENTINEL" -e "$HOSTNAME_TEXT" "${files[@]}"
    else
        grep -a -q -F -e "$SENTINEL" "${files[@]}"
    fi
}

# refused WHAT PATTERN CMD...: CMD must fail with one line of stderr matching PATTERN (an ERE)
# and leak nothing. (Bash builtins where possible: this runs some 120 times on a busy machine.)
refused() {
    local what=$1 pattern=$2 rc lines
    shift 2
    [ -e "$T/conv.out" ] && rm -f "$T/conv.out"
    run_cli "$CLI_TIMEOUT" "$T/out.txt" "$T/err.txt" "$@"
    rc=$?
    mapfile -t lines <"$T/err.txt"
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
        fail "$what: exit $rc, expected a refusal" "${lines[@]:0:3}"
    elif [ ${#lines[@]} -ne 1 ]; then
        fail "$what: expected one line on stderr" "${lines[@]:0:5}"
    elif ! [[ ${lines[0]} =~ $pattern ]]; then
        fail "$what: message does not match /$pattern/" "${lines[0]}"
    elif leaks "$T/out.txt" "$T/err.txt" "$T/conv.out"; then
        fail "$what: the outside file's content leaked"
    else
        pass "$what"
    fi
}

# works WHAT CMD...: CMD must succeed.
works() {
    local what=$1
    shift
    if run_cli "$CLI_TIMEOUT" "$T/out.txt" "$T/err.txt" "$@"; then
        pass "$what"
    else
        fail "$what: exit $?" "$(head -n 3 "$T/err.txt")"
    fi
}

OUTSIDE='outside the allowed directory|leads outside'
declare -A WHY=(
    [abs.qcow2]="$OUTSIDE" [etc.qcow2]="$OUTSIDE" [dotdot.qcow2]="$OUTSIDE"
    [symlink.qcow2]="$OUTSIDE" [symdir.qcow2]="$OUTSIDE" [devlink.qcow2]="$OUTSIDE"
    [devzero.qcow2]="$OUTSIDE" [fifo.qcow2]='is a FIFO' [devnode.qcow2]='is a character device'
    [data-abs.qcow2]="$OUTSIDE" [data-link.qcow2]="$OUTSIDE" [data-fifo.qcow2]='is a FIFO' [data-devzero.qcow2]="$OUTSIDE"
    [l1.qcow2]='L1 table is too large.*untrusted' [reftable.qcow2]='refcount table is too large.*untrusted'
    [snapshots.qcow2]='too many snapshots.*untrusted' [bitmaps.qcow2]='too many bitmaps.*untrusted'
)
CORPUS="abs etc dotdot symlink symdir devlink devzero fifo data-abs data-link data-fifo data-devzero l1 reftable snapshots bitmaps"
[ -e "$IN/devnode.qcow2" ] && CORPUS="$CORPUS devnode"

U=(--untrusted --allow-dir "$IN")
for c in $CORPUS; do
    img=$IN/$c.qcow2
    why=${WHY[$c.qcow2]}
    refused "info $c" "$why" "$QCOW2" info "${U[@]}" --output=json "$img"
    refused "convert $c" "$why" "$QCOW2" convert "${U[@]}" -O raw "$img" "$T/conv.out"
    refused "check $c" "$why" "$QCOW2" check "${U[@]}" "$img"
    refused "map $c" "$why" "$QCOW2" map "${U[@]}" --output=json "$img"
done
# qcow2 io opens through the same call: a few routes are enough (the test is short).
for c in abs symlink data-link fifo l1; do
    refused "io $c" "${WHY[$c.qcow2]}" "$QCOW2" io "${U[@]}" -r -c 'read -v 0 64' "$IN/$c.qcow2"
done

# The chain that leaves at depth 2: info describes the top image alone (its backing file is
# inside), everything that reads the chain refuses it.
works "info chain2 (its own backing file is inside)" "$QCOW2" info "${U[@]}" --output=json "$IN/chain2.qcow2"
for cmd in "convert -O raw" check map; do
    # shellcheck disable=SC2086 # the command's words
    refused "$cmd chain2" "$OUTSIDE" "$QCOW2" $cmd "${U[@]}" "$IN/chain2.qcow2" \
        $([ "$cmd" = "convert -O raw" ] && echo "$T/conv.out")
done

# Non-regular files as the image itself: refused without opening (a FIFO must not hang).
refused "info of a FIFO" 'is a FIFO' "$QCOW2" info --untrusted --output=json "$IN/fifo"
refused "info of /dev/zero" 'is a character device' "$QCOW2" info --untrusted /dev/zero
refused "convert of a FIFO" 'is a FIFO' "$QCOW2" convert --untrusted -O raw "$IN/fifo" "$T/conv.out"

# Without --allow-dir, an untrusted image may name no file at all, even inside.
refused "untrusted without --allow-dir" 'no allowed directory' "$QCOW2" info --untrusted "$IN/good.qcow2"
refused "convert without --allow-dir" 'no allowed directory' "$QCOW2" convert --untrusted -O raw "$IN/good.qcow2" "$T/conv.out"

# Trusted mode is unchanged: the absolute backing file is read (the test can fail).
if run_cli "$CLI_TIMEOUT" "$T/out.txt" "$T/err.txt" "$QCOW2" convert -O raw "$IN/abs.qcow2" "$T/conv.out" &&
    leaks "$T/conv.out"; then
    pass "trusted mode still follows the backing file"
else
    fail "trusted mode: the absolute backing file was not read" "$(head -n 3 "$T/err.txt")"
fi

# ---- legitimate images work ------------------------------------------------------------------
works "info good" "$QCOW2" info "${U[@]}" --output=json "$IN/good.qcow2"
for key in '"backing-filename": "base.raw"' '"backing-format": "raw"' '"unknown-incompatible-features": \[' '"snapshots": 0' '"encrypted": false'; do
    if grep -q -E -e "$key" "$T/out.txt"; then
        pass "info good: $key"
    else
        fail "info good: no $key in the inspection" "$(cat "$T/out.txt")"
    fi
done
for img in good.qcow2 sub/good.qcow2; do
    works "convert $img" "$QCOW2" convert "${U[@]}" -O raw "$IN/$img" "$T/conv.out"
    if grep -a -q -F -e "$LEGIT" "$T/conv.out"; then
        pass "convert $img: the backing data is there"
    else
        fail "convert $img: the backing data is missing"
    fi
    works "check $img" "$QCOW2" check "${U[@]}" "$IN/$img"
    works "map $img" "$QCOW2" map "${U[@]}" "$IN/$img"
done
works "convert gooddata" "$QCOW2" convert "${U[@]}" -O raw "$IN/gooddata.qcow2" "$T/conv.out"
if [ "$(head -c 4 "$T/conv.out")" = LLLL ]; then
    pass "gooddata: data from the data file inside"
else
    fail "gooddata: the data file's data is missing"
fi

# An unknown incompatible feature: an inspector reports it, a reader refuses it.
patched incompat.qcow2 8 72 $((1 << 20))
works "info of an unknown incompatible feature" "$QCOW2" info --untrusted --output=json "$IN/incompat.qcow2"
if tr -d ' \n' <"$T/out.txt" | grep -q '"unknown-incompatible-features":\[20\]'; then
    pass "info reports unknown incompatible bit 20"
else
    fail "info does not report unknown incompatible bit 20" "$(cat "$T/out.txt")"
fi
refused "convert of an unknown incompatible feature" 'unsupported feature' \
    "$QCOW2" convert --untrusted -O raw "$IN/incompat.qcow2" "$T/conv.out"

# Encryption likewise: reported by the inspector (the image is not decrypted, nor refused).
# QEMU times its PBKDF iterations with the thread's CPU clock and, on a loaded machine, now and
# then gives up ("Unable to get accurate CPU usage"): a second and third try.
make_enc() {
    qemu-img create -q --object secret,id=s0,data=pw -f qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 "$IN/enc.qcow2" 1M \
        >/dev/null 2>&1 ||
        qemu-img create -q --object secret,id=s0,data=pw -f qcow2 \
            -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=50 "$IN/enc.qcow2" 1M \
            >/dev/null 2>&1 ||
        qemu-img create -q --object secret,id=s0,data=pw -f qcow2 \
            -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=200 "$IN/enc.qcow2" 1M
}
if harness "make enc.qcow2" make_enc; then
    works "info of an encrypted image" "$QCOW2" info --untrusted --output=json "$IN/enc.qcow2"
    if grep -q '"encrypted": true' "$T/out.txt"; then
        pass "info reports the encryption"
    else
        fail "info does not report the encryption" "$(cat "$T/out.txt")"
    fi
fi

# ---- the nbdkit plugin -----------------------------------------------------------------------
if [ "$HAVE_NBD" = 1 ]; then
    for c in $CORPUS; do
        refused "plugin $c" "${WHY[$c.qcow2]}" nbdkit -U - "$PLUGIN" file="$IN/$c.qcow2" \
            untrusted=1 allow-dir="$IN" --run 'nbdcopy "$uri" -'
    done
    refused "plugin chain2" "$OUTSIDE" nbdkit -U - "$PLUGIN" file="$IN/chain2.qcow2" \
        untrusted=1 allow-dir="$IN" --run 'nbdcopy "$uri" -'
    refused "serve symlink" "$OUTSIDE" "$QCOW2" serve "${U[@]}" -k "$T/s.sock" "$IN/symlink.qcow2"
    refused "plugin without allow-dir" 'no allowed directory' nbdkit -U - "$PLUGIN" \
        file="$IN/good.qcow2" untrusted=1 --run 'nbdcopy "$uri" -'
    if run_cli "$CLI_TIMEOUT" "$T/out.txt" "$T/err.txt" nbdkit -U - "$PLUGIN" \
        file="$IN/sub/good.qcow2" untrusted=1 allow-dir="$IN" --run 'nbdcopy "$uri" -' &&
        grep -a -q -F -e "$LEGIT" "$T/out.txt"; then
        pass "plugin serves a legitimate chain"
    else
        fail "plugin: legitimate chain" "$(head -n 3 "$T/err.txt")"
    fi
else
    skip "plugin part: nbdkit, nbdinfo or the plugin missing"
fi

finish
