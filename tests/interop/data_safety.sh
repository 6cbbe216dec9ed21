#!/usr/bin/env bash
# data_safety.sh - regression tests for the data-safety defects of the December 2026 review
# (7abab63) that show through the CLI: defects 1, 2, 5, 7 and 8 (3, 4, 6, 9 and 10 are crash
# and session scenarios in tests/unit/test_data_safety.c). One function per defect; each
# prints its verdict ("ok" or the FAIL lines); the script fails if any check failed.
#   1. discard, `resize --shrink` and NBD trim keep an internal snapshot's data and its L2 table;
#   2. a write keeps persistent dirty bitmaps truthful: it is recorded in them (they stay
#      consistent for QEMU; first fixed by invalidating them, now bitmap.c maintains them);
#      read-only opens change nothing;
#   5. an in-place write whose (hostile) L2 entry points at the refcount table is refused and
#      the image marked corrupt;
#   7. with data_file_raw=on a discard zeroes the raw data file, as QEMU's does;
#   8. a hostile image whose refcount table is its L2 table fails a write with one clear
#      message, without an assertion.
# QCOW2=qemu-img runs cases 1 and 7 against QEMU itself (the reference; the others use
# commands of ours).

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-60}
cd "$T" || exit 1

HDR_INCOMPATIBLE=72    # header field offsets (qcow2 spec)
HDR_AUTOCLEAR=88
HDR_REFCOUNT_TABLE=48
HDR_L1_TABLE=40
INCOMPAT_CORRUPT=2     # incompatible bit 1
AUTOCLEAR_BITMAPS=1    # autoclear bit 0
OFLAG_COPIED=$((1 << 63))
OFFSET_MASK=0x00fffffffffffe00

# Our io command (qemu-io in reference mode).
IO=("$QCOW2" io)
[ "$QCOW2" = qemu-img ] && IO=(qemu-io)

# A test function's verdict: "ok NAME" when it added no failure since FAILED was $2.
verdict() {
    if [ "$FAILED" -eq "$2" ]; then
        echo "ok   $1"
    else
        echo "FAIL $1 ($((FAILED - $2)) checks failed)"
    fi
}

# reads_pattern IMG PATTERN OFF LEN [FORMAT]: QEMU reads the pattern there.
reads_pattern() {
    local out
    out=$(qemu-io -r -f "${5:-qcow2}" -c "read -P $2 $3 $4" "$1" 2>&1) &&
        ! grep -q 'Pattern verification failed' <<<"$out"
}

# check_clean NAME IMG: `qemu-img check` finds no error and no leak.
check_clean() {
    local out
    if out=$(qemu-img check "$2" 2>&1); then
        pass "$1: qemu-img check clean"
    else
        fail "$1: qemu-img check is not clean" "$(grep -E 'leak|ERROR|error' <<<"$out" | head -5)"
    fi
}

# snapshot_image IMG SIZE: SIZE bytes of 0xab from 0, then internal snapshot snap1.
# shellcheck disable=SC2317 # called through harness
snapshot_image() {
    rm -f "$1"
    qemu-img create -q -f qcow2 "$1" 4M &&
        qemu-io -c "write -P 0xab 0 $2" "$1" >/dev/null &&
        qemu-img snapshot -c snap1 "$1"
}

# snapshot_survives NAME IMG SIZE RC ERR WHAT: WHAT (our change to the active layer) exited
# with RC and stderr in ERR. It must have worked; then the image is clean and reverting to snap1
# brings back its SIZE bytes of 0xab (clean again).
snapshot_survives() {
    local name=$1 img=$2 size=$3 rc=$4 err=$5 what=$6
    if [ "$rc" != 0 ]; then
        fail "$name: $what exited $rc" "$(cat "$err")"
        return
    fi
    check_clean "$name" "$img"
    if ! harness "$name" qemu-img snapshot -a snap1 "$img"; then
        return
    fi
    if reads_pattern "$img" 0xab 0 "$size"; then
        pass "$name: snap1's data reads back after qemu-img snapshot -a"
    else
        fail "$name: snap1 lost its data: after qemu-img snapshot -a snap1, guest 0..$size does not read 0xab" \
            "$(qemu-io -r -c "read -P 0xab 0 $size" "$img" 2>&1 | head -1)"
    fi
    check_clean "$name (after snapshot -a)" "$img"
}

# ---- 1 ---------------------------------------------------------------------------------------

test_discard_keeps_snapshot_data() {
    local name=discard_keeps_snapshot_data before=$FAILED rc
    if harness "$name" snapshot_image s.qcow2 1M; then
        run_cli "$CLI_TIMEOUT" io.out io.err "${IO[@]}" -c "discard 0 1M" s.qcow2
        rc=$?
        if [ "$rc" = 0 ] && ! reads_pattern s.qcow2 0 0 1M; then
            fail "$name: the discarded range does not read zeros"
        fi
        snapshot_survives "$name" s.qcow2 1M "$rc" io.err discard
    fi
    verdict "$name" "$before"
}

test_shrink_keeps_snapshot_data() {
    local name=shrink_keeps_snapshot_data before=$FAILED resize=("$QCOW2" resize)
    [ "$QCOW2" = qemu-img ] && resize=(qemu-img resize)
    if harness "$name" snapshot_image s2.qcow2 4M; then
        run_cli "$CLI_TIMEOUT" rs.out rs.err "${resize[@]}" -q --shrink s2.qcow2 1M
        snapshot_survives "$name" s2.qcow2 4M $? rs.err "resize --shrink"
    fi
    verdict "$name" "$before"
}

# Through the nbdkit plugin: a trim from an NBD client (qemu-io over the socket).
test_nbd_trim_keeps_snapshot_data() {
    local name=nbd_trim_keeps_snapshot_data before=$FAILED pid rc i
    if [ "$QCOW2" = qemu-img ] || ! command -v nbdkit >/dev/null 2>&1 ||
        [ ! -f "${QCOW2_BUILD_DIR:-$(dirname "$QCOW2")}/nbdkit-qcow2-plugin.so" ]; then
        skip "$name: needs nbdkit and the plugin"
        return
    fi
    harness "$name" snapshot_image s3.qcow2 1M || { verdict "$name" "$before"; return; }
    if ! run_cli "$CLI_TIMEOUT" srv.out srv.err "$QCOW2" serve s3.qcow2 --socket "$T/s3.sock" \
        --background --pidfile "$T/s3.pid"; then
        fail "$name: the server did not start" "$(cat srv.err)"
        verdict "$name" "$before"
        return
    fi
    pid=$(cat "$T/s3.pid")
    run_cli "$CLI_TIMEOUT" trim.out trim.err qemu-io -f raw -c "discard 0 1M" \
        "nbd+unix:///?socket=$T/s3.sock"
    rc=$?
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        fail "$name: the server (pid $pid) did not stop within 15 s"
        kill -KILL "$pid"
    else
        snapshot_survives "$name" s3.qcow2 1M "$rc" trim.err "NBD trim"
    fi
    verdict "$name" "$before"
}

# ---- 2 ---------------------------------------------------------------------------------------

test_write_keeps_persistent_bitmaps_truthful() {
    local name=write_keeps_persistent_bitmaps_truthful before=$FAILED rc sum
    if [ "$QCOW2" = qemu-img ]; then
        skip "$name: uses qcow2 info"
        return
    fi
    if ! harness "$name" qemu-img create -q -f qcow2 bm.qcow2 4M ||
        ! harness "$name" qemu-img bitmap --add bm.qcow2 b0; then
        verdict "$name" "$before"
        return
    fi
    if [ $(($(peek_be64 bm.qcow2 $HDR_AUTOCLEAR) & AUTOCLEAR_BITMAPS)) = 0 ]; then
        fail "$name: harness: qemu-img bitmap --add left autoclear bit 0 clear"
    fi
    # Read-only opens change nothing.
    sum=$(sha256sum <bm.qcow2)
    run_cli "$CLI_TIMEOUT" info.out info.err "$QCOW2" info bm.qcow2
    run_cli "$CLI_TIMEOUT" ro.out ro.err "$QCOW2" io -r -c "read 0 64k" bm.qcow2
    if [ "$(sha256sum <bm.qcow2)" = "$sum" ]; then
        pass "$name: qcow2 info and qcow2 io -r leave the file unchanged"
    else
        fail "$name: a read-only open (qcow2 info, qcow2 io -r) changed the file"
    fi
    run_cli "$CLI_TIMEOUT" io.out io.err "$QCOW2" io -c "write -P 0x11 1M 64k" bm.qcow2
    rc=$?
    if [ "$rc" != 0 ]; then
        fail "$name: write exited $rc" "$(cat io.err)"
        verdict "$name" "$before"
        return
    fi
    # We maintain the bitmaps: the bit stays, and the bitmap records the write.
    if [ $(($(peek_be64 bm.qcow2 $HDR_AUTOCLEAR) & AUTOCLEAR_BITMAPS)) != 0 ]; then
        pass "$name: autoclear bit 0 (bitmaps) is still set after the write"
    else
        fail "$name: our write dropped the bitmaps (autoclear bit 0 clear)"
    fi
    qemu-img info --output=json bm.qcow2 >qinfo.json 2>qinfo.err
    if grep -q '"name": *"b0"' qinfo.json && ! grep -q in-use qinfo.json; then
        pass "$name: qemu-img info lists b0, not in use"
    else
        fail "$name: qemu-img info does not list b0 as a usable bitmap" "$(cat qinfo.json)"
    fi
    if reads_pattern bm.qcow2 0x11 1M 64k; then
        pass "$name: the write reads back"
    else
        fail "$name: the write does not read back"
    fi
    run_cli "$CLI_TIMEOUT" dump.out dump.err "$QCOW2" bitmap --dump bm.qcow2 b0
    if grep -Eq '^ +1048576 +65536 +1  dirty$' dump.out; then
        pass "$name: the bitmap records the write"
    else
        fail "$name: the bitmap does not record the write" "$(cat dump.out dump.err)"
    fi
    verdict "$name" "$before"
}

# ---- 5 ---------------------------------------------------------------------------------------

test_write_through_hostile_l2_entry_spares_refcount_table() {
    local name=write_through_hostile_l2_entry_spares_refcount_table before=$FAILED
    local rc rt l2 table_before
    if [ "$QCOW2" = qemu-img ]; then
        skip "$name: QEMU's own message differs"
        return
    fi
    if ! harness "$name" qemu-img create -q -f qcow2 h.qcow2 1M ||
        ! harness "$name" qemu-io -c "write -P 0x11 0 64k" h.qcow2; then
        verdict "$name" "$before"
        return
    fi
    # Guest cluster 0's L2 entry now says: in place (COPIED), at the refcount table.
    rt=$(peek_be64 h.qcow2 $HDR_REFCOUNT_TABLE)
    l2=$(($(peek_be64 h.qcow2 "$(peek_be64 h.qcow2 $HDR_L1_TABLE)") & OFFSET_MASK))
    poke_be64 h.qcow2 "$l2" $((OFLAG_COPIED | rt))
    table_before=$(peek_hex h.qcow2 "$rt" 512)
    run_cli "$CLI_TIMEOUT" io.out io.err "$QCOW2" io -c "write -P 0x22 0 4k" h.qcow2
    rc=$?
    if [ "$rc" = 0 ]; then
        fail "$name: the write succeeded (exit 0): an L2 entry pointing at the refcount table was written through" \
            "$(head -n 1 io.out)"
    elif [ "$rc" -ge 124 ] || sanitizer_text io.err >/dev/null; then
        fail "$name: the write crashed (exit $rc)" "$(tail -n 3 io.err)"
    elif ! grep -q 'h\.qcow2' io.err; then
        fail "$name: exit $rc, but no message naming the image" "$(cat io.err)"
    else
        pass "$name: the write is refused: $(cat io.err)"
    fi
    if [ "$(peek_hex h.qcow2 "$rt" 512)" = "$table_before" ]; then
        pass "$name: the refcount table is unchanged"
    else
        fail "$name: the refcount table at $(printf 0x%x "$rt") was overwritten with guest data" \
            "$(od -A x -t x1 -j "$rt" -N 16 h.qcow2 | head -1)"
    fi
    if [ $(($(peek_be64 h.qcow2 $HDR_INCOMPATIBLE) & INCOMPAT_CORRUPT)) != 0 ]; then
        pass "$name: the image is marked corrupt"
    else
        fail "$name: the image is not marked corrupt (incompatible bit 1 at header offset $HDR_INCOMPATIBLE), as QEMU marks it"
    fi
    verdict "$name" "$before"
}

# ---- 7 ---------------------------------------------------------------------------------------

test_discard_zeroes_raw_data_file() {
    local name=discard_zeroes_raw_data_file before=$FAILED rc
    if ! harness "$name" qemu-img create -q -f qcow2 -o data_file=df.raw,data_file_raw=on \
        df.qcow2 4M || ! harness "$name" qemu-io -c "write -P 0x11 0 1M" df.qcow2; then
        verdict "$name" "$before"
        return
    fi
    run_cli "$CLI_TIMEOUT" io.out io.err "${IO[@]}" -c "discard 0 256k" df.qcow2
    rc=$?
    if [ "$rc" != 0 ]; then
        fail "$name: discard exited $rc" "$(cat io.err)"
        verdict "$name" "$before"
        return
    fi
    if reads_pattern df.qcow2 0 0 256k; then
        pass "$name: the image reads zeros in the discarded range"
    else
        fail "$name: the image does not read zeros in the discarded range"
    fi
    if reads_pattern df.raw 0 0 256k raw; then
        pass "$name: the raw data file reads zeros in the discarded range"
    else
        fail "$name: the raw data file still holds the old data in the discarded range (QEMU's discard zeroes it)" \
            "$(od -A x -t x1 -N 16 df.raw | head -1)"
    fi
    if reads_pattern df.raw 0x11 256k 768k raw && reads_pattern df.qcow2 0x11 256k 768k; then
        pass "$name: the rest is untouched"
    else
        fail "$name: data after the discarded range changed"
    fi
    verdict "$name" "$before"
}

# ---- 8 ---------------------------------------------------------------------------------------

# A v3 image with 512-byte clusters, 64-bit refcounts (order 6), L1 at 0x200 whose one entry
# points at 0x400, and the refcount table at 0x400 too: it is also the L2 table. Its entries
# (0x600, as L2 entries: data at 0x600) point at the refcount block at 0x600 (all ones).
make_table_alias_image() {
    local f=$1 i table="" block=""
    head -c 2048 /dev/zero >"$f"
    poke_be32 "$f" 0 0x514649fb  # magic
    poke_be32 "$f" 4 3           # version
    poke_be32 "$f" 20 9          # cluster_bits
    poke_be64 "$f" 24 32768      # size
    poke_be32 "$f" 36 1          # l1_size
    poke_be64 "$f" $HDR_L1_TABLE 0x200
    poke_be64 "$f" $HDR_REFCOUNT_TABLE 0x400
    poke_be32 "$f" 56 1          # refcount_table_clusters
    poke_be32 "$f" 96 6          # refcount_order
    poke_be32 "$f" 100 112       # header_length
    poke_be64 "$f" 0x200 $((OFLAG_COPIED | 0x400))
    for ((i = 0; i < 64; i++)); do
        table=${table}0000000000000600
        block=${block}0000000000000001
    done
    poke_bytes "$f" 0x400 "$table"
    poke_bytes "$f" 0x600 "$block"
}

test_refcount_table_aliasing_l2_table_fails_cleanly() {
    local name=refcount_table_aliasing_l2_table_fails_cleanly before=$FAILED rc
    if [ "$QCOW2" = qemu-img ]; then
        skip "$name: QEMU 7.2 aborts here itself"
        return
    fi
    make_table_alias_image evil.qcow2
    # (bash's own "Aborted" report off: the abort is what this test looks for)
    { run_cli "$CLI_TIMEOUT" io.out io.err "$QCOW2" io -c "write -P 0x11 0 512" evil.qcow2; } 2>/dev/null
    rc=$?
    if [ "$rc" -ge 124 ] || grep -q 'Assertion' io.err || sanitizer_text io.err >/dev/null; then
        fail "$name: the write aborted (exit $rc)" "$(tail -n 2 io.err)" \
            "repro: build the image as make_table_alias_image in data_safety.sh; $(q "$QCOW2" io -c "write -P 0x11 0 512" evil.qcow2)"
    elif [ "$rc" = 0 ]; then
        fail "$name: the write succeeded on an image whose refcount table is its L2 table"
    elif [ "$(grep -c . io.err)" != 1 ] || ! grep -qi corrupt io.err; then
        fail "$name: exit $rc, but not one line saying the image is corrupt" "$(cat io.err)"
    else
        pass "$name: refused: $(cat io.err)"
    fi
    verdict "$name" "$before"
}

test_discard_keeps_snapshot_data
test_shrink_keeps_snapshot_data
test_nbd_trim_keeps_snapshot_data
test_write_keeps_persistent_bitmaps_truthful
test_write_through_hostile_l2_entry_spares_refcount_table
test_discard_zeroes_raw_data_file
test_refcount_table_aliasing_l2_table_fails_cleanly
finish
