#!/usr/bin/env bash
# io_compat.sh - `qcow2 io` as a drop-in for qemu-io: the same command lines (and the same
# standard input) run through qemu-io and through `$QCOW2 io`, each on its own copy of the same
# images, from a directory where the images have the same names. Standard output and standard
# error must be equal once timings are normalised (filter_times: only the elapsed time and the
# two rates of the summary lines, never sizes or offsets), the exit statuses must be equal, and
# so must the images afterwards (qemu-img compare), which checks that writes wrote the same.
# Deliberate differences (where qemu-io hangs or crashes) are tested against our own expected
# output at the end.
. "$(dirname "$0")/lib.sh"

# The summary lines' times and rates, in both layouts:
#   "512 bytes, 1 ops; 00.01 sec (41.7 KiB/sec and 83.4491 ops/sec)"  (0:00:01.25 past 1 s)
#   "512,1,0:00:00.00,173877.429,339.604"                              (-C)
# filter_times FILE...: in place, one process for the lot (the test runs ~300 commands).
filter_times() {
    sed -i -E \
        -e 's#ops; [0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{2} \(#ops; TIME (#' \
        -e 's#ops; [0-9]{2}\.[0-9]{2} sec \(#ops; TIME (#' \
        -e 's#\((inf|[0-9.]+) (bytes|[KMGTPE]iB)/sec and (inf|[0-9.]+) ops/sec\)#(RATE/sec and RATE ops/sec)#' \
        -e 's#^([0-9]+),([0-9]+),[0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{2},(inf|[0-9.]+),(inf|[0-9.]+)$#\1,\2,TIME,RATE,RATE#' \
        "$@"
}

# The images every case starts from (copied afresh into qemu/ and ours/ for each case).
make_images() {
    local d=$1
    mkdir -p "$d" && cd "$d" || return 1
    harness "make q.qcow2" qemu-img create -q -f qcow2 q.qcow2 1M || return 1
    harness "fill q.qcow2" qemu-io -c 'write -P 0x41 0 64k' -c 'write -P 0x62 100000 300' \
        -c 'write -z 128k 64k' -c 'write -c -P 0x33 192k 64k' q.qcow2 || return 1
    harness "make base.raw" qemu-img create -q -f raw base.raw 4M || return 1
    harness "fill base.raw" qemu-io -f raw -c 'write -P 0x61 0 1M' base.raw || return 1
    harness "make ov.qcow2" qemu-img create -q -f qcow2 -b base.raw -F raw ov.qcow2 4M || return 1
    harness "fill ov.qcow2" qemu-io -c 'write -P 0x7a 512k 64k' -c 'write -z 2M 128k' \
        -c 'discard 1M 64k' -c 'write -P 0x30 3M 4k' ov.qcow2 || return 1
    harness "make r.raw" qemu-img create -q -f raw r.raw 100k || return 1
    harness "fill r.raw" qemu-io -f raw -c 'write -P 0x5a 4k 8k' r.raw || return 1
    harness "make v2.qcow2" qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M || return 1
    harness "make el2.qcow2" qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k \
        el2.qcow2 2M || return 1
    harness "fill el2.qcow2" qemu-io -c 'write -P 0x11 4k 4k' -c 'write -P 0x12 64k 2k' \
        el2.qcow2 || return 1
    printf 'pattern-file\n' >pat.txt
    : >empty.txt
    cd "$T" || return 1
}

# run_one TOOL DIR INPUT ARGS...: run in DIR on fresh images; output in DIR/out, DIR/err, DIR/rc.
run_one() {
    local tool=$1 dir=$2 input=$3 rc cmd=(qemu-io)
    shift 3
    [ "$tool" = qemu ] || cmd=("$QCOW2" io)
    rm -rf "$dir" && cp -r "$T/base" "$dir" && cd "$dir" || return 1
    if [ -n "$input" ]; then
        printf '%s' "$input" | timeout -k 5 60 "${cmd[@]}" "$@" >out 2>err
    else
        timeout -k 5 60 "${cmd[@]}" "$@" >out 2>err </dev/null
    fi
    rc=$?
    echo "$rc" >rc
    filter_times out err
    cd "$T" || return 1
}

# The files a case compares between qemu/ and ours/.
COMPARED=(out err rc q.qcow2 ov.qcow2 r.raw v2.qcow2 el2.qcow2)

# check NAME INPUT ARGS...: one case (INPUT is fed to standard input; usually empty).
check() {
    local name=$1 input=$2 img why=() sums i n=${#COMPARED[@]}
    shift 2
    run_one qemu "$T/qemu" "$input" "$@"
    run_one ours "$T/ours" "$input" "$@"
    # One checksum process for every file of both sides; only a difference costs more.
    md5sum "${COMPARED[@]/#/qemu/}" "${COMPARED[@]/#/ours/}" >sums 2>/dev/null
    mapfile -t sums <sums
    for ((i = 0; i < n; i++)); do
        [ ${#sums[@]} = $((2 * n)) ] && [ "${sums[i]%% *}" = "${sums[i + n]%% *}" ] && continue
        case ${COMPARED[i]} in
            out|err) cmp -s "qemu/${COMPARED[i]}" "ours/${COMPARED[i]}" ||
                why+=("std${COMPARED[i]} differs:" \
                      "$(diff "qemu/${COMPARED[i]}" "ours/${COMPARED[i]}" | head -n 20)") ;;
            rc) cmp -s qemu/rc ours/rc || why+=("exit status: qemu-io $(cat qemu/rc), ours $(cat ours/rc)") ;;
            *) img=${COMPARED[i]}
               cmp -s "qemu/$img" "ours/$img" ||
                   qemu-img compare -q -U "qemu/$img" "ours/$img" >/dev/null 2>&1 ||
                   why+=("$img: contents differ after the commands") ;;
        esac
    done
    if [ ${#why[@]} -eq 0 ]; then
        pass "$name"
    else
        fail "$name: $(q "$@")${input:+ <<< $(printf '%q' "$input")}" "${why[@]}"
    fi
}

# c NAME ARGS...: a case without standard input.
c() {
    local name=$1
    shift
    check "$name" "" "$@"
}

cd "$T" || exit 1
make_images "$T/base" || finish

# ---- read -------------------------------------------------------------------------------------
c "read" -c 'read 0 64k' -c 'read 64k 512' -c 'r 1k 1k' q.qcow2
c "read -P match and mismatch" -c 'read -P 0x41 0 64k' -c 'read -P 0x42 0 4k' -c 'read -P 0 64k 64k' q.qcow2
c "read -P -s -l" -c 'read -P 0x41 -s 512 -l 1k 0 4k' -c 'read -P 0 -s 2 -l 4 65532 8' q.qcow2
c "read -P range errors" -c 'read -P 0 -s 4 -l 8 0 8' -c 'read -l 4 0 8' -c 'read -s 4 0 8' q.qcow2
c "read -v dump with ASCII column" -c 'read -v 65528 24' -c 'read -v 99990 40' -c 'read -v 0 0' q.qcow2
c "read -v letters and digits" -c 'read -v 3M 20' -c 'read -v 524280 20' ov.qcow2
c "read -q -C -p" -c 'read -q 0 512' -c 'read -C 0 512' -c 'read -p 0 512' -c 'read -q -P 1 0 512' q.qcow2
c "read compressed and zero clusters" -c 'read -P 0x33 192k 64k' -c 'read -P 0 128k 64k' q.qcow2
c "read past the end" -c 'read 1M 1' -c 'read 1023k 2k' -c 'read 1M 0' -c 'read 2M 0' q.qcow2
c "read sizes" -c 'read 0 1.5k' -c 'read 0 0x10' -c 'read 0 1b' -c 'read 0 010' -c 'read 0 1K' -c 'read 0 0.5k' q.qcow2
c "read bad numbers" -c 'read 0 x' -c 'read x 1' -c 'read 0 1.5' -c 'read 0 9E' -c 'read 0 3G' -c 'read 0 1e3' -c 'read 0 1kB' q.qcow2
c "read bad options" -c 'read' -c 'read 0' -c 'read -x 0 1' -c 'read 0 1 2' -c 'read 0 -1' -c 'read -P' q.qcow2
c "read bad patterns" -c 'read -P 300 0 1' -c 'read -P x 0 1' -c 'read -P -1 0 1' -c 'read -P 0x1ff 0 1' q.qcow2
c "read -b (vm state) alignment" -c 'read -b 1 512' -c 'read -b 0 511' q.qcow2
c "hex suffix warning" -c 'read 0x2k 512' q.qcow2

# ---- write ------------------------------------------------------------------------------------
c "write and read back" -c 'write -P 0x55 300k 70000' -c 'read -P 0x55 300k 70000' -c 'w 1000 1' -c 'read -v 992 16' q.qcow2
c "write default pattern 0xcd" -c 'write 0 512' -c 'read -P 0xcd 0 512' q.qcow2
c "write -z and -z -u" -c 'write -z 0 64k' -c 'write -z -u 64k 64k' -c 'read -P 0 0 128k' -c 'map' q.qcow2
c "write -c compressed" -c 'write -c -P 0x77 256k 64k' -c 'read -P 0x77 256k 64k' -c 'write -c 320k 64k' q.qcow2
c "write -c over allocated clusters, -z -n" -c 'write -c 0 64k' -c 'write -P 1 320k 512' -c 'write -c 320k 64k' \
    -c 'write -c 960k 64k' -c 'write -z -n 0 512' -c 'write -z -n 0 64k' -c 'write -z -n 448k 64k' -c 'write -c 1M 0' q.qcow2
c "write -c alignment" -c 'write -c 1 512' -c 'write -c 0 511' -c 'write -c 384k 1k' q.qcow2
c "write -f -q -C -p" -c 'write -f 0 512' -c 'write -q 512 512' -c 'write -C 1k 512' -c 'write -p 2k 512' q.qcow2
c "write -s pattern file" -c 'write -s pat.txt 0 100' -c 'read -v 0 32' -c 'write -s nonexist.txt 0 4' -c 'write -s empty.txt 0 4' q.qcow2
c "write option conflicts" -c 'write -z -P 1 0 512' -c 'write -u 0 512' -c 'write -n 0 512' -c 'write -b -z 0 1' \
    -c 'write -f -c 0 512' -c 'write -s pat.txt -P 1 0 4' -c 'write -s pat.txt -z 0 4' q.qcow2
c "write past the end" -c 'write 1M 1' -c 'write 1023k 2k' -c 'write -z 1023k 2k' -c 'write 0 0' -c 'write -z 0 0' q.qcow2
c "write bad" -c 'write' -c 'write 0 1 2' -c 'write -y 0 1' -c 'write 0 3G' -c 'write x 1' q.qcow2
c "write on extended L2" -c 'write -P 0x21 6k 1k' -c 'read -P 0x21 6k 1k' -c 'read -P 0x11 4k 2k' -c 'map' el2.qcow2
c "write on v2 image" -c 'write -z 0 64k' -c 'write -P 3 64k 4k' -c 'map' -c 'info' v2.qcow2

# ---- readv, writev ---------------------------------------------------------------------------
c "writev and readv" -c 'writev 0 512 1k' -c 'writev -P 7 4k 512 513' -c 'readv -P 7 4k 512 513' -c 'readv -v 0 16 16' q.qcow2
c "readv mismatch and -q" -c 'readv -P 8 0 512' -c 'readv -q 0 1 2' -c 'writev -q 0 512' -c 'readv -C 0 512' q.qcow2
c "readv/writev errors" -c 'writev 0' -c 'writev 1M 512' -c 'readv 1M 1' -c 'readv 0 x' -c 'writev 0 3G' \
    -c 'writev 0 1G 1G 1G' -c 'readv -x 0 1' q.qcow2

# ---- aio --------------------------------------------------------------------------------------
c "aio_write then aio_flush" -c 'aio_write -P 9 0 64k' -c 'aio_flush' -c 'read -P 9 0 64k' q.qcow2
c "aio_read then aio_flush" -c 'aio_read -P 0x41 0 512' -c 'aio_flush' -c 'aio_read -v 0 16' -c 'aio_flush' q.qcow2
c "aio reports wait for a command that polls" -c 'aio_read 0 512' -c 'length' -c 'info' -c 'flush' q.qcow2
c "aio reports at exit" -c 'aio_write -P 3 0 4k' -c 'length' q.qcow2
c "aio failures and mismatches" -c 'aio_read 1M 512' -c 'aio_flush' -c 'aio_write 1M 512' -c 'aio_flush' \
    -c 'aio_read -P 7 0 512' -c 'aio_flush' q.qcow2
c "aio options" -c 'aio_write -z 0 512 512' -c 'aio_write -u 0 512' -c 'aio_write -i 0 512' -c 'aio_read -i 0 512' \
    -c 'aio_write -z -u 0 64k' -c 'aio_flush' -c 'aio_write -q -P 4 0 512' -c 'aio_flush' -c 'aio_read -q -P 4 0 512' \
    -c 'aio_flush' -c 'aio_flush x' q.qcow2
c "-C reports everywhere" -c 'readv -C 0 512' -c 'writev -C -f 0 512' -c 'aio_write -C -f 0 512' -c 'aio_flush' \
    -c 'aio_read -C 0 512' -c 'aio_flush' -c 'write -z -C 0 512' -c 'discard -C -q 0 512' -c 'read -C -q 0 512' \
    -c 'read -q -v 0 16' q.qcow2
c "aio multiple lengths" -c 'aio_write -P 5 0 512 1k' -c 'aio_flush' -c 'aio_read -P 5 0 1k 512' -c 'aio_flush' q.qcow2

# ---- discard, flush, truncate, length, info -------------------------------------------------
c "discard" -c 'discard 0 64k' -c 'discard -q 64k 64k' -c 'discard -C 0 512' -c 'discard 10 20' -c 'map' q.qcow2
c "discard errors" -c 'discard' -c 'discard 1M 1' -c 'discard 0 2M' -c 'discard 0 3G' -c 'd 0 x' q.qcow2
c "discard over backing" -c 'discard 512k 64k' -c 'map' -c 'read -P 0 512k 64k' ov.qcow2
c "flush" -c 'write 0 1' -c 'flush' -c 'f' -c 'flush x' q.qcow2
c "truncate" -c 'truncate 2M' -c 'length' -c 'truncate 512k' -c 'length' -c 't 1M' -c 'map' q.qcow2
c "truncate -m and errors" -c 'truncate -m full 3M' -c 'length' -c 'truncate -m foo 3M' -c 'truncate' \
    -c 'truncate x' -c 'truncate 1000' -c 'truncate -m metadata 4M' -c 'map' q.qcow2
c "length" -c 'length' -c 'l' -c 'length x' q.qcow2
c "length of raw images" -f raw -c 'length' -c 'truncate 3M' -c 'length' r.raw
c "raw view of a file that does not end on a sector" -f raw -c 'length' -c 'read -v 458816 32' -c 'map' q.qcow2
c "info qcow2" -c 'info' -c 'i' -c 'info x' q.qcow2
c "info extended L2, v2, raw" -c 'info' el2.qcow2
c "info v2" -c 'info' v2.qcow2
c "info raw" -f raw -c 'info' r.raw

# ---- alloc, map ------------------------------------------------------------------------------
c "map qcow2" -c 'map' q.qcow2
c "map overlay" -c 'map' ov.qcow2
c "map raw" -f raw -c 'map' r.raw
c "map extended L2" -c 'map' el2.qcow2
c "alloc" -c 'alloc 0' -c 'alloc 0 1M' -c 'alloc 0 2M' -c 'alloc 1M' -c 'alloc 1' -c 'a 64k 64k' -c 'alloc 100000 1' q.qcow2
c "alloc overlay" -c 'alloc 0 4M' -c 'alloc 512k 64k' -c 'alloc 2M 1M' -c 'alloc 1M 64k' -c 'alloc 1.5M' ov.qcow2
c "alloc raw" -f raw -c 'alloc 0 100k' -c 'alloc 0 1M' r.raw
c "alloc errors" -c 'alloc' -c 'alloc 0 x' -c 'alloc 0 1 2' -c 'alloc -1' -c 'alloc 9E' q.qcow2
c "map errors" -c 'map x' q.qcow2

# ---- the command loop, help, misc ------------------------------------------------------------
c "unknown commands" -c 'foo' -c 'read0 1' -c 'length' q.qcow2
c "quit stops the commands" -c 'length' -c 'quit' -c 'length' q.qcow2
c "q with arguments" -c 'q x y' -c 'length' q.qcow2
c "sleep" -c 'sleep 10' -c 'sleep x' -c 'sleep -1' -c 'sleep' -c 'sleep 0x5' q.qcow2
c "sigraise" -c 'sigraise 0' -c 'sigraise 100' -c 'sigraise x' -c 'length' q.qcow2
c "abort argument count" -c 'abort x' q.qcow2
c "breakpoints without blkdebug" -c 'break a b' -c 'remove_break a' -c 'resume a' -c 'break a' q.qcow2
c "help" -c 'help' -c 'help a b' -c '? read' q.qcow2
help_args=()
for cmd in abort aio_flush aio_read aio_write alloc break close discard flush help info length map \
    open quit read readv remove_break reopen resume sigraise sleep truncate wait_break write writev \
    r w foo; do
    help_args+=(-c "help $cmd")
done
c "help for each command" "${help_args[@]}" q.qcow2
c "commands split on spaces only" -c 'read  -P  0x41   0  512 ' -c "$(printf 'length\tx')" q.qcow2

# ---- standard input --------------------------------------------------------------------------
check "stdin commands" $'length\nread -P 0x41 0 512\n\n   \nfoo\nwrite  -P  3   0  512\nread -v 0 16\n' q.qcow2
check "stdin quit" $'length\nquit\nlength\n' q.qcow2
check "stdin without final newline" 'length' q.qcow2
check "stdin carriage return" $'length\r\nlength\n' q.qcow2
check "stdin failure sets the exit status" $'read -P 1 0 1\nlength\n' q.qcow2
check "stdin ignored with -c" $'write 0 1\n' -c length q.qcow2
check "stdin without a file" $'length\nopen q.qcow2\nlength\nclose\nlength\n'
check "stdin long line" "read $(printf '%01100d' 0) 1"$'\n' q.qcow2

# ---- open, close, reopen -------------------------------------------------------------------
c "no file" -c 'length'
c "no file: open, commands, close" -c 'open q.qcow2' -c 'length' -c 'close' -c 'length' -c 'map'
c "open while open" -c 'open q.qcow2' -c 'length' r.raw
c "open -r" -c 'open -r q.qcow2' -c 'write 0 1' -c 'read -P 0x41 0 1' -c 'discard 0 1' -c 'truncate 1' -c 'writev 0 1' -c 'aio_write 0 1'
c "open -o driver" -c 'open -o driver=qcow2 q.qcow2' -c 'length' -c 'close' -c 'open -o driver=raw q.qcow2' -c 'length'
c "open -o errors" -c 'open -o driver=qcow2,foo=bar q.qcow2' -c 'length' -c 'open -o driver=qcow2 -o read-only=on q.qcow2' \
    -c 'open nonexist' -c 'open' -c 'open -x q.qcow2' -c 'open q.qcow2 b'
c "open -o file.filename" -c 'open -o driver=qcow2,file.filename=q.qcow2' -c 'length' -c 'close' \
    -c 'open -o driver=qcow2,file.driver=file,file.filename=q.qcow2' -c 'info'
c "open -o bad file options" -c 'open -o driver=qcow2' -c 'open -o driver=qcow2,file.foo=1,file.filename=q.qcow2' \
    -c 'open -o filename=q.qcow2' -c 'length'
c "open -t, -d, -n, -U, -k" -c 'open -t none q.qcow2' -c 'close' -c 'open -t foo q.qcow2' -c 'open -d foo q.qcow2' \
    -c 'open -n -d unmap q.qcow2' -c 'close' -c 'open -U q.qcow2' -c 'open -r -U q.qcow2' -c 'close' -c 'open -k q.qcow2' \
    -c 'open -k -n q.qcow2' -c 'length'
c "open raw probe warning" -c 'open r.raw' -c 'length' -c 'close' -c 'open -r r.raw' -c 'length'
c "close" -c 'close' -c 'close' -c 'length' -c 'close x' q.qcow2
c "reopen -r/-w" -c 'reopen -r' -c 'write 0 1' -c 'reopen -w' -c 'write 0 1' -c 'read -P 0xcd 0 1' q.qcow2
c "reopen errors" -c 'reopen -r -w' -c 'reopen x' -c 'reopen -c foo' -c 'reopen -o foo=bar' -c 'reopen -c none' \
    -c 'reopen -c writethrough' -c 'write 0 512' -c 'reopen -r -o read-only=on' q.qcow2
c "reopen -o lazy-refcounts" -c 'reopen -o lazy-refcounts=on' -c 'write 0 512' -c 'info' -c 'reopen -o lazy-refcounts=off' -c 'info' q.qcow2
c "reopen without a file" -c 'close' -c 'reopen'

# ---- program options -------------------------------------------------------------------------
c "-r" -r -c 'write 0 1' -c 'read 0 1' q.qcow2
c "-f qcow2 on raw" -f qcow2 -c length r.raw
c "-f unknown" -f foo -c length r.raw
c "-f raw on qcow2" -f raw -c length -c 'read -v 0 4' q.qcow2
c "nonexistent file" -c length nonexist
c "probed raw warns" -c length r.raw
c "probed raw read-only does not warn" -r -c length r.raw
c "-s: writes go to a temporary overlay" -s -c 'write -P 7 0 64k' -c 'read -P 7 0 64k' -c map -c 'alloc 0 1M' \
    -c info -c length q.qcow2
c "open -s over a backing chain" -c 'close' -c 'open -s ov.qcow2' -c 'write -P 1 0 4k' -c 'read -P 0x61 4k 4k' -c map \
    -c 'close' -c 'open -s -r r.raw' -c 'write 0 1' -c length q.qcow2
c "-t and --cache" -t none -c 'write 0 1' -c 'read -P 0xcd 0 1' q.qcow2
c "--cache=unsafe" --cache=unsafe -c 'write 0 1' -c flush q.qcow2
c "-t writethrough, directsync, writeback" -t writethrough -c 'write 0 1' -c 'close' -c 'open -t directsync q.qcow2' \
    -c 'write 0 1' -c 'close' -c 'open -t writeback q.qcow2' -c 'write 0 1' q.qcow2
c "-t invalid" -t foo -c length q.qcow2
c "-n" -n -c length q.qcow2
c "-U without -r" -U -c length q.qcow2
c "-U -r" -U -r -c length q.qcow2
c "-d" -d unmap -c 'discard 0 64k' -c map q.qcow2
c "-d ignore" -d ignore -c 'discard 0 64k' -c map -c 'write -z -u 192k 64k' -c map q.qcow2
c "-d invalid" -d foo -c length q.qcow2
c "-m" -m -c 'read -P 0x41 0 512' q.qcow2
c "-k" -k -c length q.qcow2
c "-k -t none" -k -t none -c length q.qcow2
c "-i" -i threads -c length q.qcow2
c "-i invalid" -i foo -c length q.qcow2
c "long options" --format=qcow2 --read-only --cmd=length q.qcow2
c "options after the file" q.qcow2 -c length

# ---- json: names and --image-opts -------------------------------------------------------------
c "json: nested" -c length -c 'read -P 0x41 0 64k' 'json:{"driver":"qcow2","file":{"driver":"file","filename":"q.qcow2"}}'
c "json: flat" -c length -c 'write -P 1 0 1' 'json:{"driver":"qcow2","file.driver":"file","file.filename":"q.qcow2"}'
c "json: file.filename only" -c length 'json:{"file.filename":"q.qcow2"}'
c "json: file without driver" -c length 'json:{"driver":"qcow2","file":{"filename":"q.qcow2"}}'
c "json: driver raw" -c length 'json:{"driver":"raw","file":{"driver":"file","filename":"q.qcow2"}}'
c "json: -f overrides" -f raw -c length 'json:{"driver":"qcow2","file":{"driver":"file","filename":"q.qcow2"}}'
c "json: lazy-refcounts string" -c 'write 0 1' 'json:{"driver":"qcow2","file":{"driver":"file","filename":"q.qcow2"},"lazy-refcounts":"on"}'
c "json: read-only without -r" -c length 'json:{"driver":"qcow2","file":{"driver":"file","filename":"q.qcow2"},"read-only":true}'
c "json: read-only with -r" -r -c length 'json:{"driver":"qcow2","file":{"driver":"file","filename":"q.qcow2"},"read-only":true}'
c "json: backing null" -c 'map' -c 'read -P 0 0 64k' 'json:{"driver":"qcow2","file":{"driver":"file","filename":"ov.qcow2"},"backing":null}'
c "json: unknown option" -c length 'json:{"driver":"qcow2","file":{"driver":"file","filename":"q.qcow2"},"foo":1}'
c "json: node reference" -c length 'json:{"driver":"qcow2","file":"q.qcow2"}'
c "json: nonexistent" -c length 'json:{"driver":"qcow2","file":{"driver":"file","filename":"nonexist"}}'
c "json: premature end" -c length 'json:{"driver":"qcow2","file":{"driver":"file","filename":"q.qcow2"}'
c "json: empty" -c length 'json:'
c "json: not an object" -c length 'json:[]'
c "json: bad keyword" -c length 'json:{bad'
c "json: in open" -c "open json:{\"driver\":\"qcow2\",\"file.filename\":\"q.qcow2\"}" -c length
c "--image-opts" --image-opts -c length -c 'read -P 0x41 0 512' driver=qcow2,file.filename=q.qcow2
c "--image-opts file.driver" --image-opts -c length driver=qcow2,file.driver=file,file.filename=q.qcow2
c "--image-opts without driver" --image-opts -c length file.filename=q.qcow2
c "--image-opts short-form boolean" --image-opts -c length q.qcow2
c "--image-opts and -f" --image-opts -f qcow2 -c length driver=qcow2,file.filename=q.qcow2
c "--image-opts read-only" --image-opts -c 'write 0 1' driver=qcow2,file.filename=q.qcow2,read-only=on
c "--image-opts read-only -r" --image-opts -r -c 'write 0 1' -c 'read 0 1' driver=qcow2,file.filename=q.qcow2,read-only=on
c "--image-opts bad file option" --image-opts -c length driver=qcow2,file.filename=q.qcow2,file.x=1
c "--image-opts open" --image-opts -c 'open driver=qcow2,file.filename=q.qcow2' -c length -c 'close' \
    -c 'open -o driver=qcow2 q.qcow2'
c "--image-opts raw" --image-opts -c length -c map driver=raw,file.filename=r.raw

# ---- deliberate differences: where qemu-io 7.2 crashes or hangs, ours must answer -------------
# wait_break: qemu-io waits forever for a blkdebug breakpoint that cannot exist.
run_one ours "$T/ours" "" -c 'wait_break a' -c length q.qcow2
if [ "$(cat ours/rc)" = 1 ] && [ "$(cat ours/out)" = $'Could not wait for breakpoint a: Operation not supported\n1 MiB' ]; then
    pass "wait_break answers (qemu-io hangs)"
else
    fail "wait_break answers (qemu-io hangs)" "rc $(cat ours/rc)" "$(cat ours/out ours/err)"
fi
# truncate -m MODE without a size: qemu-io reads past its arguments.
run_one ours "$T/ours" "" -c 'truncate -m full' -c length q.qcow2
if [ "$(cat ours/rc)" = 1 ] && grep -q '^truncate \[-m prealloc_mode\] off -- ' ours/out; then
    pass "truncate -m without a size prints the usage"
else
    fail "truncate -m without a size prints the usage" "rc $(cat ours/rc)" "$(cat ours/out ours/err)"
fi

finish
