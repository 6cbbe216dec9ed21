#!/usr/bin/env bash
# dirty_repair.sh - crash a writer of a lazy-refcounts image, then open it again.
# With lazy refcounts the refcounts on disk are stale while the image is open (the DIRTY bit
# says so) and a crash leaves them stale. The writer is `$QCOW2 io` (or qemu-io) killed with
# SIGKILL while the image is open:
#   A. at a known point: allocating writes, zero writes, a discard, `flush`, more writes, then
#      `sleep` (which flushes stdout first, so that we know where it is) - killed while asleep;
#   B. at a random point of a run of write groups, each ended by `flush` and a marker;
#   C. qemu-io as the writer, our open as the repairer.
# Then: the DIRTY bit is set and qemu-img says "cleanly shut down: no"; `qemu-img check`
# reports errors or leaks (exit 2 or 3) and so does `$QCOW2 check`; a read-only open by us
# reads every write completed before the last flush and leaves the file untouched (sha256);
# a writable open (`$QCOW2 io -c 'read 0 512'`) repairs it: afterwards the DIRTY bit is clear,
# `qemu-img check` is clean, the flushed writes read back, and the image is the same as the
# one QEMU makes by repairing a copy (qemu-io's writable open). The repaired image takes more
# writes and stays clean.

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-120}
cd "$T" || exit 1

# qemu-io's output is block buffered into a file: line buffering shows the marker at once.
# (Our `sleep` flushes stdout itself; stdbuf's preload would also upset a sanitizer build.)
STDBUF=()
command -v stdbuf >/dev/null 2>&1 && STDBUF=(stdbuf -oL)

M=$((1024 * 1024))
SIZE=$((64 * M))
MARK=$((SIZE - 512)) # never written: the marker reads here

dirty_bit() { echo $(($(peek_be64 "$1" 72) & 1)); }

# crash_writer TOOL IMG OUT MARKERS CMD...: run TOOL (ours or qemu) on IMG with the commands,
# a marker read and a long sleep in the background; once OUT shows MARKERS marker lines (and
# then after a random pause of up to RANDOM_MS milliseconds, if set), kill -9 it. Returns 1 if
# the writer did not get there.
crash_writer() {
    local tool=$1 img=$2 out=$3 markers=$4 args=() c pid i n=0
    shift 4
    for c in "$@" "read -P 0 $MARK 512" "sleep 60000"; do
        args+=(-c "$c")
    done
    rm -f "$out" # not a stale marker from an earlier run
    if [ "$tool" = ours ]; then
        "$QCOW2" io "${args[@]}" "$img" >"$out" 2>&1 &
    else
        "${STDBUF[@]}" qemu-io "${args[@]}" "$img" >"$out" 2>&1 &
    fi
    pid=$!
    for ((i = 0; i < 600; i++)); do
        n=$(grep -c "^read 512/512 bytes at offset $MARK\$" "$out" 2>/dev/null)
        n=${n:-0}
        [ "$n" -ge "$markers" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ "${RANDOM_MS:-0}" -gt 0 ]; then
        sleep "0.0$((RANDOM % RANDOM_MS))"
    fi
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    [ "$n" -ge "$markers" ]
}

# The state right after the crash: dirty, inconsistent refcounts, readable read-only.
# check_dirty NAME IMG MODEL PREFIX: the first PREFIX bytes must read as MODEL.
check_dirty() {
    local name=$1 img=$2 model=$3 prefix=$4 sum rc out
    if [ "$(dirty_bit "$img")" = 1 ]; then
        pass "$name: dirty bit set after the crash"
    else
        fail "$name: the dirty bit is not set after the crash"
    fi
    if qemu-img info "$img" 2>&1 | grep -q '^cleanly shut down: no$'; then
        pass "$name: qemu-img info: cleanly shut down: no"
    else
        fail "$name: qemu-img info does not say 'cleanly shut down: no'" \
            "$(qemu-img info "$img" 2>&1)"
    fi
    sum=$(sha256sum <"$img")
    qemu-img check "$img" >qcheck.out 2>&1
    rc=$?
    if [ $rc -eq 2 ] || [ $rc -eq 3 ]; then
        pass "$name: qemu-img check finds the stale refcounts (exit $rc)"
    else
        fail "$name: qemu-img check exits $rc on the crashed image" "$(tail -n 5 qcheck.out)"
    fi
    run_cli "$CLI_TIMEOUT" ocheck.out ocheck.err "$QCOW2" check "$img"
    local orc=$?
    if [ $orc -eq $rc ]; then
        pass "$name: $QCOW2 check agrees (exit $orc)"
    else
        fail "$name: $QCOW2 check exits $orc, qemu-img check $rc" "$(tail -n 5 ocheck.out)" \
            "$(tail -n 5 ocheck.err)"
    fi
    # Read-only: readable, and not modified.
    rm -f ro.raw
    if ! run_cli "$CLI_TIMEOUT" ro.out ro.err "$QCOW2" convert -O raw "$img" ro.raw; then
        fail "$name: read-only convert of the dirty image failed" "$(cat ro.err)"
    elif ! cmp -s -n "$prefix" ro.raw "$model"; then
        fail "$name: flushed writes do not read back from the dirty image (read-only)" \
            "$(cmp -n "$prefix" ro.raw "$model" 2>&1)"
    else
        pass "$name: read-only open reads the flushed writes"
    fi
    run_cli "$CLI_TIMEOUT" ro.out ro.err "$QCOW2" io -r -c "read -P 0 $MARK 512" "$img"
    rc=$?
    if [ $rc -ne 0 ]; then
        fail "$name: $QCOW2 io -r on the dirty image exits $rc" "$(cat ro.err)"
    elif [ "$(sha256sum <"$img")" != "$sum" ]; then
        fail "$name: a read-only open modified the dirty image"
    elif [ "$(dirty_bit "$img")" != 1 ]; then
        fail "$name: a read-only open cleared the dirty bit"
    else
        pass "$name: read-only open leaves the file untouched (sha256)"
    fi
}

# Repair by a writable open, compared with QEMU repairing a copy.
# check_repaired NAME IMG MODEL PREFIX
check_repaired() {
    local name=$1 img=$2 model=$3 prefix=$4 out rc
    cp "$img" qemu-repaired.qcow2
    qemu-io -c "read -P 0 $MARK 512" qemu-repaired.qcow2 >qrepair.out 2>&1
    run_cli "$CLI_TIMEOUT" rep.out rep.err "$QCOW2" io -c "read -P 0 $MARK 512" "$img"
    rc=$?
    if sanitizer_text rep.err >/dev/null; then
        fail "$name: sanitizer report while repairing" "$(cat rep.err)"
        return
    fi
    if [ $rc -ne 0 ]; then
        fail "$name: opening the dirty image writable failed (exit $rc)" "$(cat rep.err)" \
            "repro: $(q "$QCOW2" io -c 'read 0 512' "$img") on the crashed image"
        return
    fi
    pass "$name: writable open of the dirty image succeeds"
    if [ "$(dirty_bit "$img")" = 0 ]; then
        pass "$name: dirty bit clear after the repair"
    else
        fail "$name: the dirty bit is still set after a writable open and close"
    fi
    if out=$(qemu-img check "$img" 2>&1); then
        pass "$name: qemu-img check clean after the repair"
    else
        fail "$name: qemu-img check after our repair" "$out"
    fi
    rm -f repaired.raw
    qemu-img convert -O raw "$img" repaired.raw
    if cmp -s -n "$prefix" repaired.raw "$model"; then
        pass "$name: flushed writes read back after the repair"
    else
        fail "$name: flushed writes lost by the repair" \
            "$(cmp -n "$prefix" repaired.raw "$model" 2>&1)"
    fi
    if out=$(qemu-img compare "$img" qemu-repaired.qcow2 2>&1); then
        pass "$name: same data as QEMU's repair of the same crash"
    else
        fail "$name: our repair and QEMU's differ" "$out"
    fi
    # Still a working image.
    run_cli "$CLI_TIMEOUT" w.out w.err "$QCOW2" io -c "write -P 0x7e $((SIZE - M)) 200000" \
        -c "write -P 0x7f 12345 70000" "$img"
    qemu-io -c "write -P 0x7e $((SIZE - M)) 200000" -c "write -P 0x7f 12345 70000" \
        qemu-repaired.qcow2 >/dev/null 2>&1
    # A crash can leave a refcount for a cluster past the end of the file, which no check
    # looks at (QEMU's neither) until the file grows over it: then it is a leak. QEMU's
    # repaired copy shows the same, so only more than QEMU's leaks is a failure.
    local ours_rc qemu_rc ours_leaks qemu_leaks
    qemu-img check --output=json "$img" >ours.json 2>/dev/null
    ours_rc=$?
    qemu-img check --output=json qemu-repaired.qcow2 >qemu.json 2>/dev/null
    qemu_rc=$?
    ours_leaks=$(json_get leaks ours.json)
    qemu_leaks=$(json_get leaks qemu.json)
    if [ $ours_rc -ne 0 ] && { [ $ours_rc -ne 3 ] || [ $qemu_rc -ne 3 ] ||
        [ "${ours_leaks:-0}" -gt "${qemu_leaks:-0}" ]; }; then
        fail "$name: qemu-img check after writing to the repaired image: exit $ours_rc (QEMU's copy: $qemu_rc)" \
            "$(qemu-img check "$img" 2>&1)"
    elif ! out=$(qemu-img compare "$img" qemu-repaired.qcow2 2>&1); then
        fail "$name: writes after the repair" "$out"
    else
        pass "$name: the repaired image takes writes"
    fi
}

# The raw model: qemu-io runs the same commands on a raw file.
make_model() {
    local model=$1 args=() c
    shift
    rm -f "$model"
    qemu-img create -q -f raw "$model" "$SIZE"
    for c in "$@"; do
        args+=(-c "$c")
    done
    [ ${#args[@]} -eq 0 ] || qemu-io -f raw "${args[@]}" "$model" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# A. Killed while asleep after a flush. Writes before the flush live in [0, 32M), after it in
# [32M, 64M). The last writes before the flush allocate data clusters under L2 tables that
# exist already, and a discard frees clusters: the L2 tables are flushed, the refcounts are
# not (a new L2 table would flush them), so on disk the new clusters have refcount 0 (errors)
# and the discarded ones 1 (leaks). The writes after the flush, too, go under existing L2
# tables.
# ---------------------------------------------------------------------------------------------
PREFIX=$((32 * M))
pre_flush_commands() {
    local i off len
    for ((i = 0; i < 12; i++)); do # L2 tables for the writes after the flush
        echo "write -P 0x40 $((32 * M + i * 2 * M)) 512"
    done
    echo "write -P 0x52 $((16 * M)) 512"
    for ((i = 1; i <= 40; i++)); do
        off=$(((i * 7919 * 4096 + i * 1000) % (30 * M)))
        len=$((512 * (i % 9 + 1) + (i % 4) * 333 + (i % 5 == 0 ? 200000 : 0)))
        echo "write -P $i $off $len"
    done
    echo "write -P 0x50 $((30 * M)) $((2 * M))"
    echo "write -z $((30 * M + 1536 * 1024)) 100000"
    echo "write -P 0x51 4096 8192"                     # in place over data already there
    echo "write -P 0x53 $((16 * M + 8192)) 16384"      # new clusters under an existing L2 table
    echo "discard $((30 * M + 256 * 1024)) 1M"          # whole clusters freed
}
post_flush_commands() {
    local i
    for ((i = 0; i < 12; i++)); do
        echo "write -P $((0xa0 + i)) $((32 * M + i * 2 * M + 1024 + i * 512)) $((4096 + i * 300))"
    done
}

for opts in cluster_size=65536 cluster_size=4096 cluster_size=65536,extended_l2=on \
    cluster_size=512,refcount_bits=1 cluster_size=16384,refcount_bits=64,extended_l2=on; do
    name="A [$opts]"
    mapfile -t PRE < <(pre_flush_commands)
    mapfile -t POST < <(post_flush_commands)
    rm -f a.qcow2
    qemu-img create -q -f qcow2 -o "lazy_refcounts=on,$opts" a.qcow2 "$SIZE"
    if ! crash_writer ours a.qcow2 a.out 1 "${PRE[@]}" flush "${POST[@]}"; then
        fail "$name: the writer did not reach the sleep" "$(tail -n 5 a.out)"
        continue
    fi
    make_model a.raw "${PRE[@]}"
    check_dirty "$name" a.qcow2 a.raw "$PREFIX"
    check_repaired "$name" a.qcow2 a.raw "$PREFIX"
done

# ---------------------------------------------------------------------------------------------
# B. Killed at a random point. Group g writes only in [g*2M, g*2M+2M), then flushes, then
# reads the marker (and sleeps 20 ms, which makes the marker visible): every group whose
# marker was seen is durable.
# ---------------------------------------------------------------------------------------------
GROUPS_B=24
group_commands() {
    local g=$1 k base=$(($1 * 2 * M))
    for ((k = 0; k < 6; k++)); do
        echo "write -P $((g * 6 + k + 1)) $((base + (k * 340000 + g * 777) % (2 * M - 200000))) $((4096 + k * 30000 + g * 100))"
    done
}
for round in 1 2 3; do
    for opts in cluster_size=65536 cluster_size=4096,refcount_bits=8 cluster_size=65536,extended_l2=on; do
        name="B$round [$opts]"
        CMDS=()
        for ((g = 0; g < GROUPS_B; g++)); do
            mapfile -t G < <(group_commands $g)
            CMDS+=("${G[@]}" flush "read -P 0 $MARK 512" "sleep 20")
        done
        rm -f b.qcow2
        qemu-img create -q -f qcow2 -o "lazy_refcounts=on,$opts" b.qcow2 "$SIZE"
        RANDOM_MS=40 crash_writer ours b.qcow2 b.out $((3 + round * 4)) "${CMDS[@]}"
        done_groups=$(grep -c "^read 512/512 bytes at offset $MARK\$" b.out)
        if [ "$done_groups" -lt 3 ]; then
            fail "$name: the writer did not get going" "$(tail -n 5 b.out)"
            continue
        fi
        [ "$done_groups" -gt "$GROUPS_B" ] && done_groups=$GROUPS_B
        DONE=()
        for ((g = 0; g < done_groups; g++)); do
            mapfile -t G < <(group_commands $g)
            DONE+=("${G[@]}")
        done
        make_model b.raw "${DONE[@]}"
        if [ "$(dirty_bit b.qcow2)" != 1 ]; then
            fail "$name: not dirty after the crash"
        fi
        check_repaired "$name (crashed after $done_groups groups)" b.qcow2 b.raw \
            $((done_groups * 2 * M))
    done
done

# ---------------------------------------------------------------------------------------------
# C. QEMU crashes, we repair.
# ---------------------------------------------------------------------------------------------
for opts in cluster_size=65536 cluster_size=4096 cluster_size=65536,extended_l2=on; do
    name="C qemu-io crashed [$opts]"
    mapfile -t PRE < <(pre_flush_commands)
    mapfile -t POST < <(post_flush_commands)
    rm -f c.qcow2
    qemu-img create -q -f qcow2 -o "lazy_refcounts=on,$opts" c.qcow2 "$SIZE"
    if ! crash_writer qemu c.qcow2 c.out 1 "${PRE[@]}" flush "${POST[@]}"; then
        fail "$name: qemu-io did not reach the sleep" "$(tail -n 5 c.out)"
        continue
    fi
    make_model c.raw "${PRE[@]}"
    check_dirty "$name" c.qcow2 c.raw "$PREFIX"
    check_repaired "$name" c.qcow2 c.raw "$PREFIX"
done

finish
