# lib_bitmaps.sh - helpers of the bitmaps*.sh interop scripts (sourced after lib.sh, in the
# scratch directory): run our CLI, read bitmaps as QEMU reads them (qemu-nbd -B + nbdinfo
# --map), compare two images' bitmaps, info and check results.
# shellcheck shell=bash

CLI_TIMEOUT=${CLI_TIMEOUT:-60}
for tool in qemu-nbd nbdinfo; do
    command -v "$tool" >/dev/null 2>&1 || skip_all "$tool not found"
done

# cli NAME CMD...: run our CLI; a failure or a sanitizer report fails NAME.
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

# qemu_maps IMG PREFIX NAME...: QEMU's view of bitmaps NAME... of IMG (one qemu-nbd), in
# nbdinfo --map's lines, into PREFIX.NAME.
qemu_maps() {
    local img=$1 prefix=$2 sock=$T/nbd.sock pid i b args=()
    shift 2
    for b in "$@"; do
        args+=(-B "$b")
    done
    rm -f "$sock"
    qemu-nbd -r -t -f qcow2 "${args[@]}" -k "$sock" "$img" 2>qnbd.err &
    pid=$!
    for i in $(seq 200); do
        [ -S "$sock" ] && break
        sleep 0.02
    done
    for b in "$@"; do
        nbdinfo --map="qemu:dirty-bitmap:$b" "nbd+unix:///?socket=$sock" >"$prefix.$b" 2>&1
    done
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# same_bitmaps STEP REF OURS NAME...: QEMU reads each bitmap identically from both images,
# and our --dump of OURS says the same.
same_bitmaps() {
    local step=$1 ref=$2 ours=$3 b
    shift 3
    qemu_maps "$ref" ref.map "$@"
    qemu_maps "$ours" ours.map "$@"
    for b in "$@"; do
        if [ -s "ref.map.$b" ] && cmp -s "ref.map.$b" "ours.map.$b"; then
            pass "$step: QEMU reads bitmap $b as from its own writes"
        else
            fail "$step: QEMU reads bitmap $b differently" \
                "$(diff "ref.map.$b" "ours.map.$b" | head -n 10)"
        fi
        if cli "$step: dump $b" "$QCOW2" bitmap --dump "$ours" "$b"; then
            if cmp -s cli.out "ours.map.$b"; then
                pass "$step: bitmap --dump $b prints what nbdinfo prints"
            else
                fail "$step: bitmap --dump $b differs from nbdinfo" "$(head -n 8 cli.out)"
            fi
        fi
    done
}

# check_clean STEP IMG: qemu-img check finds nothing, not even leaks.
check_clean() {
    if qemu-img check "$2" >check.out 2>&1; then
        pass "$1: qemu-img check is clean"
    else
        fail "$1: qemu-img check $2" "$(head -n 5 check.out)"
    fi
}

# same_info STEP REF OURS: qemu-img info (JSON, bitmaps included) agrees but for names/sizes.
same_info() {
    qemu-img info --output=json "$2" | grep -v -e actual-size -e '"filename"' >ref.info
    qemu-img info --output=json "$3" | grep -v -e actual-size -e '"filename"' >ours.info
    if cmp -s ref.info ours.info; then
        pass "$1: qemu-img info agrees"
    else
        fail "$1: qemu-img info differs" "$(diff ref.info ours.info | head -n 10)"
    fi
}

