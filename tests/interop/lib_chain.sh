# lib_chain.sh - backing chains for the chain commands' scripts (commit.sh, rebase.sh), sourced
# after lib.sh. Builds one chain with qemu-img/qemu-io, copies it into ours/ and qemu/, runs a
# command in each directory through each tool, and compares what qemu-img sees afterwards:
# exit code, stdout, the message (prefix stripped), every layer's guest view (qemu-img
# compare), qemu-img check and qemu-img info --output=json (all but actual-size).
# shellcheck shell=bash

CLI_TIMEOUT=${CLI_TIMEOUT:-60}
M=$((1024 * 1024))

# qio FILE CMD...: qemu-io commands on FILE (qcow2 or raw), quietly.
qio() {
    local f=$1 fmt=qcow2
    shift
    case $f in *.raw) fmt=raw ;; esac
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -f "$fmt" "${args[@]}" "$f" >/dev/null
}

# make_chain OPTS BASEFMT BASESIZE MIDSIZE TOPSIZE: in the current directory, base.$BASEFMT
# <- mid.qcow2 <- top.qcow2 with data, zero clusters and a compressed cluster in each qcow2
# layer, ranges that overlap between layers, and unaligned writes (OPTS: qemu-img -o).
make_chain() {
    local opts=$1 bfmt=$2 bs=$3 ms=$4 ts=$5 cz=64k
    case $opts in *cluster_size=512*) cz=512 ;; *cluster_size=4096*) cz=4k ;; esac
    rm -f base.* mid.qcow2 top.qcow2
    if [ "$bfmt" = raw ]; then
        qemu-img create -q -f raw base.raw "$bs" || return 1
    else
        qemu-img create -q -f qcow2 -o "$opts" base.qcow2 "$bs" || return 1
    fi
    qio "base.$bfmt" "write -P 0x11 0 $((bs / 2))" "write -P 0x12 $((bs - 3 * 65536)) 3000" || return 1
    qemu-img create -q -f qcow2 -o "$opts" -b "base.$bfmt" -F "$bfmt" mid.qcow2 "$ms" || return 1
    qio mid.qcow2 "write -P 0x21 64k 256k" "write -z 512k 128k" "write -P 0x22 $((ms - 70000)) 70000" \
        "write -c -P 0x23 $((ms / 2)) $cz" || return 1
    qemu-img create -q -f qcow2 -o "$opts" -b mid.qcow2 -F qcow2 top.qcow2 "$ts" || return 1
    qio top.qcow2 "write -P 0x31 100k 200k" "write -z 1M 64k" "write -z 96k 8k" \
        "write -P 0x32 $((ts - 65536)) 65536" "write -c -P 0x33 $((ts / 2)) $cz" \
        "write -P 0x34 1537 3000" || return 1
}

# info_of FILE: qemu-img info --output=json without what depends on host allocation; opened
# without its backing file when that does not open (rebase -u onto a file not there).
info_of() {
    if qemu-img compare "$1" "$1" >/dev/null 2>&1; then
        qemu-img info --output=json "$1"
    else
        qemu-img info --output=json \
            "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$1\"}}"
    fi 2>&1 | grep -v '"actual-size"'
}

# chain_case NAME SETUP-FN CMD ARGS...: SETUP-FN builds the chain in the current directory;
# the command (qcow2/qemu-img subcommand and arguments) runs in ours/ and qemu/. Messages
# matching $OWN_MESSAGES are ours and need not be qemu-img's word for word.
chain_case() {
    local name=$1 setup=$2
    shift 2
    rm -rf ours qemu && mkdir ours qemu || return
    if ! (cd ours && "$setup") >"$T/setup.out" 2>&1; then
        fail "$name: building the chain failed" "$(tail -n 5 "$T/setup.out")"
        return
    fi
    cp -a ours/. qemu/
    local repro="repro: $setup; $(q "$QCOW2" "$@")"
    (cd ours && run_cli "$CLI_TIMEOUT" ../ours.out ../ours.err "$QCOW2" "$@")
    local rc_ours=$?
    (cd qemu && run_cli "$CLI_TIMEOUT" ../qemu.out ../qemu.err qemu-img "$@")
    local rc_qemu=$?
    same_outcome "$name" "$rc_ours" "$rc_qemu" "$repro" || return
    local f out
    for f in top.qcow2 mid.qcow2 base.qcow2 base.raw new.qcow2 new.raw; do
        [ -e "qemu/$f" ] || continue
        if ! qemu-img compare "qemu/$f" "qemu/$f" >/dev/null 2>&1; then
            : # qemu-img's result does not open (a missing backing file): info only
        elif ! out=$(qemu-img compare "ours/$f" "qemu/$f" 2>&1); then
            fail "$name: $f reads differently from qemu-img's" "$out" "$repro"
            return
        fi
        case $f in *.raw) continue ;; esac
        if ! out=$(qemu-img check "ours/$f" 2>&1) && qemu-img check "qemu/$f" >/dev/null 2>&1; then
            fail "$name: qemu-img check $f" "$out" "$repro"
            return
        fi
        (cd ours && info_of "$f") >ours.info
        (cd qemu && info_of "$f") >qemu.info
        if ! out=$(diff ours.info qemu.info); then
            fail "$name: qemu-img info $f differs (< ours, > qemu-img)" "$out" "$repro"
            return
        fi
    done
    pass "$name"
}
