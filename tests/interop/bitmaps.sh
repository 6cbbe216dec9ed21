#!/usr/bin/env bash
# bitmaps.sh - persistent dirty bitmaps, against QEMU on copies of the same images. QEMU reads
# bitmaps back through `qemu-nbd -B NAME` + `nbdinfo --map=qemu:dirty-bitmap:NAME`; ours come
# from `$QCOW2 bitmap --dump`, which prints nbdinfo's lines.
#   A. Bitmaps made by qemu-img are listed by `$QCOW2 info` exactly as qemu-img info lists them
#      (human and JSON), and read-only commands change no byte of the file.
#   B. The same writes, zero writes, discards and a grow, by qemu-io on one copy and by
#      `$QCOW2 io`/`resize` on the other: QEMU reads identical bitmaps from both, our --dump
#      reads the same, `qemu-img check` is clean.
#   C. `$QCOW2 bitmap` and `qemu-img bitmap` agree: the same action sequence (add with -g,
#      merge, merge from another file, clear, disable, enable, remove, add --disable) gives the
#      same info and the same bitmaps, as does convert --bitmaps; errors give qemu-img's
#      messages and exit codes.
#   D. A writer that dies (qemu-nbd, kill -9) leaves bitmaps in use: we list them as qemu-img
#      does, refuse to use them as it does (with its hint) and remove them.
#   E. Writes through our NBD export (`$QCOW2 serve`) are recorded: QEMU reads the bitmaps as
#      after the same writes by qemu-io.
# (Granularities, extended L2 and a 4 TiB image: bitmaps_geometry.sh.)

. "$(dirname "$0")/lib.sh"

cd "$T" || exit 1

. "$INTEROP_DIR/lib_bitmaps.sh"

# --- A. listing ---
harness "create" qemu-img create -q -f qcow2 a.qcow2 64M || finish
harness "bitmaps" qemu-img bitmap --add a.qcow2 b0 || finish
harness "bitmaps" qemu-img bitmap --add -g 1M a.qcow2 b1 || finish
harness "bitmaps" qemu-img bitmap --add -g 512k --disable a.qcow2 b2 || finish
harness "data" qemu-io -c "write -P 0x11 0 4k" -c "write 40M 128k" a.qcow2 || finish
sum=$(sha256sum <a.qcow2)
for out in human json; do
    if cli "A: info $out" "$QCOW2" info --output=$out a.qcow2; then
        qemu-img info --output=$out a.qcow2 >qi.out
        if diff <(grep -v -e 'disk size' -e actual-size cli.out) \
            <(grep -v -e 'disk size' -e actual-size qi.out) >diff.out; then
            pass "A: info --output=$out lists the bitmaps as qemu-img does"
        else
            fail "A: info --output=$out differs from qemu-img" "$(head -n 10 diff.out)"
        fi
    fi
done
cli "A: dump" "$QCOW2" bitmap --dump a.qcow2 b1
cli "A: check" "$QCOW2" check a.qcow2
cli "A: map" "$QCOW2" map a.qcow2
if [ "$(sha256sum <a.qcow2)" = "$sum" ]; then
    pass "A: read-only commands leave the file as it was"
else
    fail "A: a read-only command changed the file"
fi

# --- B. our writes update the bitmaps as QEMU's do ---
cp a.qcow2 ref.qcow2
cp a.qcow2 ours.qcow2
ops=(-c "write -P 0x22 5M 4k" -c "write -P 0x33 8M 3M" -c "write -z 20M 64k"
    -c "write -z 24M 4k" -c "discard 32M 2M" -c "write 63M 1M")
harness "B: qemu-io" qemu-io "${ops[@]}" ref.qcow2
harness "B: resize" qemu-img resize -q ref.qcow2 80M
cli "B: io" "$QCOW2" io "${ops[@]}" ours.qcow2
cli "B: resize" "$QCOW2" resize -q ours.qcow2 80M
same_bitmaps B ref.qcow2 ours.qcow2 b0 b1 b2
check_clean B ours.qcow2
same_info B ref.qcow2 ours.qcow2
if qemu-img compare -q ref.qcow2 ours.qcow2; then
    pass "B: same guest data"
else
    fail "B: guest data differs"
fi

# --- C. bitmap commands agree with qemu-img ---
cp ours.qcow2 other.qcow2
harness "C: other" qemu-img bitmap --add other.qcow2 ob
harness "C: other" qemu-io -c "write 70M 64k" other.qcow2
cp ours.qcow2 cref.qcow2
cp ours.qcow2 cours.qcow2
steps=("--add -g 128k IMG b3" "--merge b0 IMG b3" "--merge ob -b other.qcow2 -F qcow2 IMG b3"
    "--clear IMG b1" "--disable IMG b0" "--enable IMG b2" "--remove IMG b1"
    "--add --disable -g 64M IMG b4" "--merge b3 IMG b4" "--add --merge b2 IMG b5")
for s in "${steps[@]}"; do
    # shellcheck disable=SC2086
    harness "C: qemu-img bitmap $s" qemu-img bitmap ${s//IMG/cref.qcow2}
    # shellcheck disable=SC2086
    cli "C: bitmap $s" "$QCOW2" bitmap ${s//IMG/cours.qcow2}
done
same_info C cref.qcow2 cours.qcow2
same_bitmaps C cref.qcow2 cours.qcow2 b0 b2 b3 b4 b5
check_clean C cours.qcow2

# convert --bitmaps copies them as qemu-img convert --bitmaps does
harness "C: qemu-img convert" qemu-img convert --bitmaps -O qcow2 cref.qcow2 conv_ref.qcow2
cli "C: convert" "$QCOW2" convert --bitmaps -O qcow2 cours.qcow2 conv_ours.qcow2
same_info "C: convert --bitmaps" conv_ref.qcow2 conv_ours.qcow2
same_bitmaps "C: convert --bitmaps" conv_ref.qcow2 conv_ours.qcow2 b0 b4
check_clean "C: convert --bitmaps" conv_ours.qcow2

# errors: same message (but the program name) and exit code
errs=("--add IMG b0" "--remove IMG nosuch" "--add -g 3000 IMG x" "--add -g 4G IMG x"
    "IMG x" "--clear -g 1M IMG b0" "--merge b0 -F qcow2 IMG b3" "--clear -b other.qcow2 IMG b0"
    "--clear IMG" "--merge nosuch IMG b0" "--merge ob -b other.qcow2 IMG nosuch" "--add IMG ''"
    "--clear -g abc IMG b0")
for s in "${errs[@]}"; do
    cp cours.qcow2 e1.qcow2
    cp cours.qcow2 e2.qcow2
    eval "qemu-img bitmap ${s//IMG/e1.qcow2}" >qe.out 2>qe.err
    qrc=$?
    eval "$(q "$QCOW2") bitmap ${s//IMG/e2.qcow2}" >oe.out 2>oe.err
    orc=$?
    if [ $qrc = $orc ] && diff <(sed 's/^qemu-img: //' qe.err) <(sed 's/^qcow2: //' oe.err) \
        >/dev/null; then
        pass "C: bitmap $s: exit $orc and qemu-img's message"
    else
        fail "C: bitmap $s: exit $orc (qemu-img $qrc)" "$(cat qe.err)" "ours:" "$(cat oe.err)"
    fi
done

# --- D. a writer killed while the bitmaps are in use ---
cp cours.qcow2 crash.qcow2
# (--fork: a daemon, not a job of this shell, which would report its death)
qemu-nbd --fork --pid-file="$T/crash.pid" -f qcow2 -k "$T/crash.sock" crash.qcow2 2>/dev/null
kill -9 "$(cat "$T/crash.pid")"
for i in $(seq 100); do
    kill -0 "$(cat "$T/crash.pid")" 2>/dev/null || break
    sleep 0.02
done
for out in human json; do
    qemu-img info --output=$out crash.qcow2 2>&1 | grep -v -e 'disk size' -e actual-size >qi.out
    if cli "D: info" "$QCOW2" info --output=$out crash.qcow2 &&
        diff <(grep -v -e 'disk size' -e actual-size cli.out) qi.out >diff.out &&
        grep -q in-use cli.out; then
        pass "D: info --output=$out shows the bitmaps in use, as qemu-img"
    else
        fail "D: info --output=$out after a crash differs from qemu-img" "$(head diff.out)"
    fi
done
cp crash.qcow2 crash2.qcow2
for s in "--clear IMG b0" "--merge b2 IMG b3" "--enable IMG b0" "--disable IMG b2"; do
    # shellcheck disable=SC2086
    qemu-img bitmap ${s//IMG/crash.qcow2} >qe.out 2>qe.err
    qrc=$?
    # shellcheck disable=SC2086
    "$QCOW2" bitmap ${s//IMG/crash2.qcow2} >oe.out 2>oe.err
    orc=$?
    if [ $qrc = 1 ] && [ $orc = 1 ] &&
        diff <(sed 's/^qemu-img: //' qe.err) <(sed 's/^qcow2: //' oe.err) >/dev/null; then
        pass "D: bitmap $s refused as qemu-img refuses it"
    else
        fail "D: bitmap $s: exit $orc (qemu-img $qrc)" "$(cat qe.err)" "ours:" "$(cat oe.err)"
    fi
done
cli "D: write" "$QCOW2" io -c "write 1M 64k" crash2.qcow2
cli "D: remove" "$QCOW2" bitmap --remove crash2.qcow2 b0
if qemu-img info crash2.qcow2 | grep -q 'name: b0'; then
    fail "D: b0 still listed after --remove"
elif qemu-img info crash2.qcow2 | grep -q 'in-use'; then
    pass "D: b0 removed; the other bitmaps stay in use (inconsistent)"
else
    fail "D: the inconsistent bitmaps became trusted" "$(qemu-img info crash2.qcow2)"
fi
qemu-img check crash2.qcow2 >qc.out 2>&1
qrc=$?
"$QCOW2" check crash2.qcow2 >oc.out 2>&1
orc=$?
if [ $qrc = 0 ] && [ $orc = 0 ] && diff qc.out oc.out >/dev/null; then
    pass "D: check agrees with qemu-img check and finds nothing after the removal"
else
    fail "D: check after the removal: exit $orc (qemu-img $qrc)" "$(diff qc.out oc.out | head)"
fi

# --- E. writes through our NBD export ---
plugin=${QCOW2_BUILD_DIR:-$(dirname "$QCOW2")}/nbdkit-qcow2-plugin.so
if ! command -v nbdkit >/dev/null 2>&1 || [ ! -f "$plugin" ]; then
    skip "E: nbdkit or the plugin is missing"
else
    cp a.qcow2 nref.qcow2
    cp a.qcow2 nours.qcow2
    nops=(-c "write -P 0x44 2M 8k" -c "write -z 10M 1M" -c "discard 40M 1M")
    harness "E: qemu-io" qemu-io "${nops[@]}" nref.qcow2
    QCOW2_NBDKIT_PLUGIN=$plugin timeout -k 5 60 "$QCOW2" serve nours.qcow2 \
        --socket "$T/serve.sock" >serve.out 2>serve.err &
    spid=$!
    for i in $(seq 200); do
        [ -S "$T/serve.sock" ] && nbdinfo --size "nbd+unix:///?socket=$T/serve.sock" \
            >/dev/null 2>&1 && break
        sleep 0.05
    done
    harness "E: NBD writes" qemu-io -f raw "${nops[@]}" "nbd+unix:///?socket=$T/serve.sock"
    kill -TERM $spid
    wait $spid
    rc=$?
    if [ $rc = 0 ]; then
        pass "E: the server stopped cleanly"
    else
        fail "E: the server exited $rc" "$(tail -n 5 serve.err)"
    fi
    same_bitmaps E nref.qcow2 nours.qcow2 b0 b1
    check_clean E nours.qcow2
fi

finish
