#!/usr/bin/env bash
# bitmaps.sh - persistent dirty bitmaps, which we parse but do not maintain.
# An image gets two bitmaps from `qemu-img bitmap --add` (autoclear bit 0 set: consistent).
#   A. Read-only commands (info, info --output=json, map, check, convert, io -r) change no
#      byte of the file, and `$QCOW2 info` shows the bitmaps as consistent, without warning.
#   B. A write through `$QCOW2 io` clears autoclear bit 0 and keeps the bitmaps extension in
#      the header, as a program without bitmap support must: qemu-img info then warns that the
#      bitmaps are inconsistent and lists none, `qemu-img check` finds at most leaks, the data
#      reads back, and `$QCOW2 info` says "inconsistent" (human and JSON) with qemu-img's
#      warning on stderr.
#   C. `$QCOW2 check -r all` (an open for repair) leaves the bitmaps consistent: qemu-img
#      still lists them.

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-60}
cd "$T" || exit 1

WARNING="a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent"
BITMAPS_EXT=23852875

autoclear() { echo $(($(peek_be64 "$1" 88))); }
# has_bitmaps_ext IMG: the header extensions (from header_length to the end marker) include
# the bitmaps extension.
has_bitmaps_ext() {
    local off t len
    off=$(peek_be32 "$1" 100)
    while [ "$off" -lt 65536 ]; do
        t=$(peek_hex "$1" "$off" 4)
        len=$(peek_be32 "$1" $((off + 4)))
        [ "$t" = 00000000 ] && return 1
        [ "$t" = "$BITMAPS_EXT" ] && return 0
        off=$((off + 8 + (len + 7) / 8 * 8))
    done
    return 1
}

# cli NAME CMD...: run our CLI; a failure or a sanitizer report fails NAME. Output in cli.out,
# cli.err.
cli() {
    local name=$1 rc
    shift
    run_cli "$CLI_TIMEOUT" cli.out cli.err "$@"
    rc=$?
    if [ $rc -ne 0 ] || sanitizer_text cli.err >/dev/null; then
        fail "$name: $(q "$@") exited $rc" "$(head -n 5 cli.err)"
        return 1
    fi
}

# expect_info STEP STATE: `$QCOW2 info` shows the 2 bitmaps as STATE (human and JSON), and
# warns as qemu-img does exactly when they are inconsistent.
expect_info() {
    local step=$1 state=$2 warned=no want=no
    [ "$state" = inconsistent ] && want=yes
    if cli "$step: info" "$QCOW2" info img.qcow2; then
        grep -qxF "qcow2: warning: $WARNING" cli.err && warned=yes
        if grep -qx "    bitmaps state: $state" cli.out &&
            grep -qx '    bitmaps count: 2' cli.out && [ $warned = $want ]; then
            pass "$step: info shows 2 $state bitmaps (warning: $want)"
        else
            fail "$step: info does not show 2 $state bitmaps (warning: $want)" \
                "$(cat cli.out cli.err)"
        fi
    fi
    if cli "$step: info json" "$QCOW2" info --output=json img.qcow2; then
        if [ "$(json_get bitmaps-state cli.out)" = "$state" ]; then
            pass "$step: info --output=json: bitmaps-state $state"
        else
            fail "$step: info --output=json: bitmaps-state is not $state" "$(cat cli.out)"
        fi
    fi
}

harness "create" qemu-img create -q -f qcow2 img.qcow2 4M || finish
harness "bitmap b0" qemu-img bitmap --add img.qcow2 b0 || finish
harness "bitmap b1" qemu-img bitmap --add -g 512k img.qcow2 b1 || finish
harness "data" qemu-io -c "write -P 0x11 0 1M" img.qcow2 || finish
if [ $(($(autoclear img.qcow2) & 1)) -ne 1 ] || ! has_bitmaps_ext img.qcow2; then
    fail "harness: qemu-img made no consistent bitmaps"
    finish
fi
cp img.qcow2 repair.qcow2

# --- A. read-only commands ---
sum=$(sha256sum <img.qcow2)
expect_info A consistent
cli "A: map" "$QCOW2" map img.qcow2
cli "A: check" "$QCOW2" check img.qcow2
cli "A: convert" "$QCOW2" convert -O raw img.qcow2 out.raw
cli "A: io -r" "$QCOW2" io -r -c "read -P 0x11 0 1M" img.qcow2
if [ "$(sha256sum <img.qcow2)" = "$sum" ]; then
    pass "A: read-only commands leave the file as it was"
else
    fail "A: a read-only command changed the file"
fi

# --- B. a write ---
cli "B: write" "$QCOW2" io -c "write -P 0x22 2M 64k" img.qcow2
if [ $(($(autoclear img.qcow2) & 1)) -eq 0 ]; then
    pass "B: the write cleared autoclear bit 0"
else
    fail "B: autoclear bit 0 is still set after our write: the bitmaps claim to be up to date"
fi
if has_bitmaps_ext img.qcow2; then
    pass "B: the bitmaps extension is kept"
else
    fail "B: the bitmaps extension was dropped"
fi
qemu-img info img.qcow2 >qi.out 2>qi.err
if grep -qF "$WARNING" qi.err && ! grep -q 'bitmaps:' qi.out; then
    pass "B: qemu-img info calls the bitmaps inconsistent and lists none"
else
    fail "B: qemu-img info still trusts the bitmaps" "$(cat qi.out qi.err)"
fi
qemu-img check img.qcow2 >qc.out 2>&1
rc=$?
if [ $rc -eq 0 ] || [ $rc -eq 3 ]; then
    pass "B: qemu-img check finds at most leaks (the bitmaps' clusters)"
else
    fail "B: qemu-img check exited $rc" "$(cat qc.out)"
fi
# (-r: a writable QEMU open would drop the extension of the inconsistent bitmaps)
if qemu-io -r -c "read -P 0x11 0 1M" -c "read -P 0x22 2M 64k" img.qcow2 |
    grep -q 'verification failed'; then
    fail "B: the data does not read back"
else
    pass "B: the data reads back"
fi
expect_info B inconsistent

# --- C. repair ---
cli "C: check -r all" "$QCOW2" check -r all repair.qcow2
if [ $(($(autoclear repair.qcow2) & 1)) -eq 1 ] &&
    qemu-img info repair.qcow2 2>&1 | grep -q 'name: b1'; then
    pass "C: check -r all leaves the bitmaps consistent"
else
    fail "C: check -r all invalidated the bitmaps" "$(qemu-img info repair.qcow2 2>&1)"
fi

finish
