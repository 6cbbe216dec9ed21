# lib.sh - helpers shared by the interop scripts (sourced, never run by itself).
# shellcheck shell=bash
# Owns the scratch directory, the pass/fail counters and the final "N passed, M failed" line,
# running a command under a timeout with its output captured, reading fields out of qemu-img
# style JSON, normalizing `map --output=json`, and peeking/poking big-endian header fields.
# Needs only bash, coreutils, awk (POSIX; mawk is fine), cmp, diff, qemu-img and qemu-io.
#
# Environment:
#   QCOW2            path of the qcow2 CLI under test (default: $QCOW2_BUILD_DIR/qcow2, or
#                    build/qcow2 next to the source tree). QCOW2=qemu-img runs a script against
#                    QEMU itself, which checks the script (everything should pass).
#   QCOW2_BUILD_DIR  the build directory (used only to find the CLI).
#   QCOW2_TEST_TMPDIR where the scratch directory goes (default $TMPDIR or /tmp).
#   KEEP_TMP=1       keep the scratch directory for a post-mortem.
#   VERBOSE=1        also print the commands that passed.
#   QCOW2_TEST_FULL=1 the long variants (`make stress` sets it): every combination of the
#                    matrices and more random seeds. `make check` runs each script's short form,
#                    which still covers every value of every dimension at least once.

set -u

INTEROP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ -z "${QCOW2:-}" ]; then
    if [ -n "${QCOW2_BUILD_DIR:-}" ]; then
        QCOW2=$QCOW2_BUILD_DIR/qcow2
    else
        QCOW2=$INTEROP_DIR/../../build/qcow2
    fi
fi

# FULL=1: the long variants (see QCOW2_TEST_FULL above).
FULL=0
case "${QCOW2_TEST_FULL:-0}" in "" | 0) ;; *) FULL=1 ;; esac

# one_or_all I WORD...: every WORD with FULL=1, otherwise only WORD number I mod N. A matrix
# that rotates I over its other dimension still meets every value in its short form.
one_or_all() {
    local i=$1
    shift
    if [ "$FULL" = 1 ]; then
        echo "$@"
    else
        local words=("$@")
        echo "${words[i % ${#words[@]}]}"
    fi
}

PASSED=0
FAILED=0
SKIPPED=0
TEST_NAME=$(basename "$0" .sh)

# Exit code for "cannot run here" (ask CTest for SKIP_RETURN_CODE 77).
skip_all() {
    echo "SKIP: $TEST_NAME: $*"
    exit 77
}

for tool in qemu-img qemu-io awk cmp diff sha256sum od dd timeout; do
    command -v "$tool" >/dev/null 2>&1 || skip_all "$tool not found"
done
if [ "$QCOW2" != qemu-img ] && [ ! -x "$QCOW2" ]; then
    echo "FAIL: the qcow2 CLI '$QCOW2' does not exist or is not executable (set QCOW2)"
    echo "0 passed, 1 failed"
    exit 1
fi
# The scripts cd into scratch directories: make the path absolute.
case $QCOW2 in
    /*) ;;
    */*) QCOW2=$(cd "$(dirname "$QCOW2")" && pwd)/$(basename "$QCOW2") ;;
esac

T=$(mktemp -d "${QCOW2_TEST_TMPDIR:-${TMPDIR:-/tmp}}/qcow2-$TEST_NAME.XXXXXX") || exit 1
cleanup() {
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "# scratch directory kept: $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Bash goes on after an error in the script itself (an unset variable under set -u, a command
# not found): it abandons the whole top-level command, which may be a loop over every case,
# and the script would still end in "N passed, 0 failed". The script's standard error goes
# through a filter that notes bash's own messages ("x.sh: line N: ..."); finish() fails the
# script when there were any.
# (A bash loop, not awk: mawk reads a pipe in blocks and would see the sync line only at the
# end.)
exec 2> >(
    set +x
    errs=""
    while IFS= read -r line || [ -n "$line" ]; do
        if [ "$line" = __lib_sh_sync__ ]; then
            printf '%s' "$errs" >"$T/.bash-errors" && : >"$T/.stderr-synced"
            continue
        fi
        printf '%s\n' "$line" >&2
        [[ $line =~ ^[^\ ]*\.sh:\ line\ [0-9]+:\  ]] && errs+="$line"$'\n'
    done
)

# Wait until the filter has seen everything written to standard error so far, then count
# bash's errors as a failure.
check_bash_errors() {
    local i=0
    echo "__lib_sh_sync__" >&2
    while [ ! -e "$T/.stderr-synced" ] && [ $i -lt 200 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    rm -f "$T/.stderr-synced"
    if [ -s "$T/.bash-errors" ]; then
        FAILED=$((FAILED + 1))
        echo "FAIL: the script itself went wrong (bash skipped the rest of a command):"
        sed 's/^/    /' "$T/.bash-errors"
    fi
}

# Does this qemu-img handle zstd-compressed qcow2 (built with CONFIG_ZSTD)?
qemu_has_zstd() {
    if [ -z "${QEMU_HAS_ZSTD:-}" ]; then
        QEMU_HAS_ZSTD=no
        qemu-img create -f qcow2 -o compression_type=zstd "$T/zstd-probe.qcow2" 1M >/dev/null 2>&1 &&
            QEMU_HAS_ZSTD=yes
        rm -f "$T/zstd-probe.qcow2"
    fi
    [ "$QEMU_HAS_ZSTD" = yes ]
}
qemu_has_zstd || true # decide once, outside any subshell

pass() {
    PASSED=$((PASSED + 1))
    [ "${VERBOSE:-0}" = 1 ] && echo "ok   $*"
    return 0
}

# fail NAME [DETAIL...]: count a failure; DETAIL lines are printed indented.
fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL $1"
    shift
    local line
    for line in "$@"; do
        printf '%s\n' "$line" | sed 's/^/     /'
    done
    return 0
}

skip() {
    SKIPPED=$((SKIPPED + 1))
    echo "skip $*"
}

# Print the summary line and exit non-zero if anything failed.
finish() {
    check_bash_errors
    [ "$SKIPPED" -gt 0 ] && echo "# $SKIPPED skipped"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit
}

# Harness problems (qemu-img refused to make a test image, ...) are failures too: they mean
# the script is wrong or the environment differs, and either way nothing was tested.
harness() {
    local what=$1
    shift
    "$@" >"$T/harness.out" 2>&1 && return 0
    fail "$what: harness command failed: $*" "$(tail -n 5 "$T/harness.out")"
    return 1
}

# run_cli SECONDS OUT ERR CMD ARGS...: run with a timeout, stdout to OUT, stderr to ERR.
# Returns the command's exit code (124 on timeout).
run_cli() {
    local secs=$1 out=$2 err=$3
    shift 3
    timeout -k 5 "$secs" "$@" >"$out" 2>"$err"
}

# Text that must never appear in the CLI's stderr.
sanitizer_text() {
    grep -E 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|Segmentation fault|core dumped|Assertion .* failed' "$1"
}

# q CMD...: print a command with its arguments quoted, for "repro:" lines.
q() {
    local out="" a
    for a in "$@"; do
        case $a in
            *[!A-Za-z0-9_./=:,+-]*|'') out="$out '${a//\'/\'\\\'\'}'" ;;
            *) out="$out $a" ;;
        esac
    done
    printf '%s' "${out# }"
}

# ---------------------------------------------------------------------------------------------
# JSON (qemu-img info --output=json style). Values are looked up by key anywhere in the text,
# first occurrence; strings lose their quotes. Prints nothing if the key is absent.
# ---------------------------------------------------------------------------------------------
json_get() {
    json_awk get "$2" "$1"
}

# json_fields FILE KEY...: "KEY=VALUE" for each KEY present (as json_get finds it), in one
# process.
json_fields() {
    local file=$1
    shift
    json_awk fields "$file" "$*"
}

# json_has KEY FILE: the key is present.
json_has() {
    [ -n "$(json_awk has "$2" "$1")" ]
}

# json_top FILE: the JSON on one line without any "children": [...] arrays (QEMU 8 and later
# nest the protocol layer's info there, with its own "format", "virtual-size", ...).
json_top() {
    json_awk top "$1" ""
}

# json_awk MODE FILE KEYS: the one awk program behind the helpers above (one process per call:
# these run thousands of times in the matrices). MODE: top | get | fields | has.
json_awk() {
    awk -v mode="$1" -v keys="$3" '
        { doc = doc $0 }
        END {
            gsub(/\r/, "", doc)
            out = ""
            while ((i = index(doc, "\"children\"")) > 0) {
                out = out substr(doc, 1, i - 1)
                rest = substr(doc, i)
                j = index(rest, "[")
                depth = 0
                for (k = j; k <= length(rest); k++) {
                    c = substr(rest, k, 1)
                    if (c == "[") depth++
                    else if (c == "]" && --depth == 0) break
                }
                doc = substr(rest, k + 1)
                sub(/^[[:space:]]*,/, "", doc)
            }
            doc = out doc
            if (mode == "top") { print doc; exit }
            n = split(keys, key, " ")
            for (i = 1; i <= n; i++) {
                re = "\"" key[i] "\"[[:space:]]*:[[:space:]]*(\"[^\"]*\"|[^,}[:space:]]*)"
                if (!match(doc, re)) continue
                v = substr(doc, RSTART, RLENGTH)
                sub(/^"[^"]*"[[:space:]]*:[[:space:]]*/, "", v)
                if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
                if (mode == "get") print v
                else if (mode == "fields") print key[i] "=" v
                else print "yes"
            }
        }' "$2"
}

# ---------------------------------------------------------------------------------------------
# map normalizer. Reads `map --output=json` (any layout: one object per line or not, extra
# fields ignored) and prints one record per GRAN bytes:
#     <guest offset> depth=D present=P zero=Z data=D offset=O
# where O is the host offset of that granule (the range's offset plus the distance into the
# range) or "-" when the range has none. So two maps that split the disk into different
# ranges but say the same thing about every byte normalize to the same text. It also prints
# a line for ranges that do not start where the previous one ended (gaps, overlaps, order),
# for ranges not aligned to GRAN, and a final "end <offset>".
# ---------------------------------------------------------------------------------------------
map_normalize() {
    local gran=$1
    awk -v G="$gran" '
        function field(rec, key,    i, rest, v) {
            i = index(rec, "\"" key "\":")
            if (i == 0) return "-"
            rest = substr(rec, i + length(key) + 3)
            v = rest
            sub(/[,\]].*$/, "", v)
            gsub(/"/, "", v)
            return v
        }
        BEGIN { RS = "}"; expect = 0 }
        {
            rec = $0
            gsub(/[ \t\r\n]/, "", rec)
            if (index(rec, "\"start\":") == 0) next
            start = field(rec, "start") + 0
            len = field(rec, "length") + 0
            depth = field(rec, "depth"); present = field(rec, "present")
            zero = field(rec, "zero"); data = field(rec, "data"); off = field(rec, "offset")
            if (start != expect)
                printf "range-start-mismatch expected=%.0f got=%.0f\n", expect, start
            if (start % G != 0 || len <= 0)
                printf "range-misaligned start=%.0f length=%.0f granularity=%d\n", start, len, G
            for (s = start; s < start + len; s += G) {
                if (off == "-") o = "-"; else o = sprintf("%.0f", off + (s - start))
                printf "%.0f depth=%s present=%s zero=%s data=%s offset=%s\n", s, depth, present, zero, data, o
            }
            expect = start + len
        }
        END { printf "end %.0f\n", expect }'
}

# ---------------------------------------------------------------------------------------------
# Byte patching of image files.
# ---------------------------------------------------------------------------------------------

# poke_bytes FILE OFF HEXSTRING: write raw bytes (hex digits, e.g. "514649fb") at OFF.
poke_bytes() {
    local file=$1 off=$2 hex=$3 fmt="" i
    for ((i = 0; i < ${#hex}; i += 2)); do
        fmt="$fmt\\x${hex:i:2}"
    done
    # shellcheck disable=SC2059 # the format is the data: \xNN escapes built above
    printf "$fmt" | dd of="$file" bs=1 seek="$((off))" conv=notrunc status=none
}

# poke_be16/32/64 FILE OFF VALUE: VALUE is anything bash arithmetic reads (0x.., decimal).
poke_be() {
    local n=$1 file=$2 off=$3 v=$(($4)) hex="" i
    for ((i = n - 1; i >= 0; i--)); do
        hex="$hex$(printf '%02x' $(((v >> (8 * i)) & 0xff)))"
    done
    poke_bytes "$file" "$off" "$hex"
}
poke_u8() { poke_be 1 "$@"; }
poke_be16() { poke_be 2 "$@"; }
poke_be32() { poke_be 4 "$@"; }
poke_be64() { poke_be 8 "$@"; }

# peek_hex FILE OFF LEN: the bytes as lowercase hex digits.
peek_hex() {
    local hex
    hex=$(od -An -v -tx1 -j "$(($2))" -N "$(($3))" "$1")
    printf '%s' "${hex//[$' \n']/}"
}
# peek_be32/64 FILE OFF: the value in decimal (64-bit values above 2^63 come out negative).
peek_be32() { echo $((16#$(peek_hex "$1" "$2" 4))); }
peek_be64() { echo $((16#$(peek_hex "$1" "$2" 8))); }

# Byte offset of the first occurrence of a string in a file, or nothing.
find_string_offset() {
    grep -a -b -o -F -- "$2" "$1" | head -n 1 | cut -d: -f1
}

# ---------------------------------------------------------------------------------------------
# Whole-image commands (compare, measure, dd): one set of images and one runner.
# ---------------------------------------------------------------------------------------------

# make_image_set: in the current directory, images made by qemu-img and qemu-io covering the
# layouts these commands meet (4 MiB unless said):
#   std.qcow2   standard L2: data, a zero cluster over data, an unaligned write, unallocated
#   ext.qcow2   the same writes with extended L2 (subcluster allocation, 128k clusters)
#   comp.qcow2  std.qcow2 converted with compressed clusters
#   std.raw     std.qcow2 as raw (sparse where std.qcow2 reads zeros)
#   over-raw.qcow2    overlay over base.raw (raw backing), with its own data and a zero cluster
#   over-qcow2.qcow2  overlay over base.qcow2 (qcow2 backing, extended L2 overlay)
#   short.qcow2  6 MiB overlay over a 2 MiB backing (reads zeros past the backing's end)
#   long.qcow2   2 MiB overlay over a 6 MiB backing
#   big-zero.qcow2  6 MiB: std.qcow2's data, a zero tail (explicit zero clusters in it)
#   big-data.qcow2  6 MiB: std.qcow2's data, data in the tail
#   flip.qcow2  std.qcow2 with one byte changed at 70001
#   v2.qcow2    compat=0.10, 4k clusters, std.qcow2's data
# Returns non-zero (after counting a harness failure) when qemu-img could not build them.
make_image_set() {
    local w='-c "write -P 0x61 0 1M" -c "write -z 1M 64k" -c "write -P 0x62 1100000 70001" -c "write -P 0x63 3M 4k"'
    harness "std.qcow2" qemu-img create -q -f qcow2 std.qcow2 4M &&
        harness "std writes" eval "qemu-io $w std.qcow2" &&
        harness "ext.qcow2" qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k ext.qcow2 4M &&
        harness "ext writes" eval "qemu-io $w ext.qcow2" &&
        harness "comp.qcow2" qemu-img convert -c -O qcow2 std.qcow2 comp.qcow2 &&
        harness "std.raw" qemu-img convert -O raw std.qcow2 std.raw &&
        harness "base.raw" qemu-img convert -O raw std.qcow2 base.raw &&
        harness "base.qcow2" cp std.qcow2 base.qcow2 &&
        harness "over-raw" qemu-img create -q -f qcow2 -b base.raw -F raw over-raw.qcow2 &&
        harness "over-raw writes" qemu-io -c "write -P 0x71 64k 64k" -c "write -z 3M 64k" over-raw.qcow2 &&
        harness "over-qcow2" qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 over-qcow2.qcow2 &&
        harness "over-qcow2 writes" qemu-io -c "write -P 0x72 2048 4k" -c "write -z 1M 2M" over-qcow2.qcow2 &&
        harness "short base" qemu-img create -q -f qcow2 short-base.qcow2 2M &&
        harness "short base data" qemu-io -c "write -P 0x73 1M 1M" short-base.qcow2 &&
        harness "short.qcow2" qemu-img create -q -f qcow2 -b short-base.qcow2 -F qcow2 short.qcow2 6M &&
        harness "short writes" qemu-io -c "write -P 0x74 5M 4k" short.qcow2 &&
        harness "long base" qemu-img create -q -f qcow2 long-base.qcow2 6M &&
        harness "long base data" qemu-io -c "write -P 0x75 1M 4M" long-base.qcow2 &&
        harness "long.qcow2" qemu-img create -q -f qcow2 -b long-base.qcow2 -F qcow2 long.qcow2 2M &&
        harness "big-zero" qemu-img create -q -f qcow2 big-zero.qcow2 6M &&
        harness "big-zero writes" eval "qemu-io $w -c 'write -z 5M 128k' big-zero.qcow2" &&
        harness "big-data" cp big-zero.qcow2 big-data.qcow2 &&
        harness "big-data writes" qemu-io -c "write -P 0x76 5M 512" big-data.qcow2 &&
        harness "flip.qcow2" cp std.qcow2 flip.qcow2 &&
        harness "flip write" qemu-io -c "write -P 0x77 70001 1" flip.qcow2 &&
        harness "v2.qcow2" qemu-img convert -O qcow2 -o compat=0.10,cluster_size=4k std.qcow2 v2.qcow2
}

# same_as_qemu NAME SUBCOMMAND ARGS...: run `$QCOW2 SUBCOMMAND ARGS` and `qemu-img SUBCOMMAND
# ARGS`; their exit codes and stdout must be equal, and our stderr free of sanitizer reports.
# An argument OUT stands for an output file: ours.out.img for us, qemu.out.img for qemu-img
# (both removed first). Returns 0 when equal (without counting a pass: the caller may check
# more), 1 after counting a failure.
same_as_qemu() {
    local name=$1 sub=$2 a a_ours=() a_qemu=()
    shift 2
    for a in "$@"; do
        case $a in
            OUT) a_ours+=(ours.out.img); a_qemu+=(qemu.out.img) ;;
            *=OUT) a_ours+=("${a%OUT}ours.out.img"); a_qemu+=("${a%OUT}qemu.out.img") ;;
            *) a_ours+=("$a"); a_qemu+=("$a") ;;
        esac
    done
    rm -f ours.out.img qemu.out.img
    local repro
    repro="repro: $(q "$QCOW2" "$sub" "${a_ours[@]}")"
    run_cli "${CLI_TIMEOUT:-60}" ours.stdout ours.stderr "$QCOW2" "$sub" "${a_ours[@]}"
    local rc_ours=$?
    run_cli "${CLI_TIMEOUT:-60}" qemu.stdout qemu.stderr qemu-img "$sub" "${a_qemu[@]}"
    local rc_qemu=$?
    if sanitizer_text ours.stderr >/dev/null; then
        fail "$name: sanitizer report" "$(cat ours.stderr)" "$repro"
        return 1
    fi
    if [ "$rc_ours" != "$rc_qemu" ]; then
        fail "$name: exit $rc_ours, qemu-img exits $rc_qemu" "ours: $(cat ours.stdout ours.stderr)" \
            "qemu-img: $(cat qemu.stdout qemu.stderr)" "$repro"
        return 1
    fi
    if ! cmp -s ours.stdout qemu.stdout; then
        fail "$name: stdout differs" "$(diff ours.stdout qemu.stdout | head -n 10)" "$repro"
        return 1
    fi
    return 0
}

# same_outcome NAME RC_OURS RC_QEMU REPRO [SED...]: after a command ran through both tools with
# its output in ours.out/ours.err and qemu.out/qemu.err (current directory): no sanitizer
# report, the same exit status and stdout, and the same message once the program names are
# dropped (SED: extra sed arguments for qemu's stderr), unless ours matches $OWN_MESSAGES
# (messages that are ours by design). Reports the first difference and returns 1.
same_outcome() {
    local name=$1 rc_ours=$2 rc_qemu=$3 repro=$4
    shift 4
    if sanitizer_text ours.err >/dev/null; then
        fail "$name: sanitizer report" "$(cat ours.err)" "$repro"
        return 1
    fi
    if [ "$rc_ours" != "$rc_qemu" ]; then
        fail "$name: exit $rc_ours, qemu-img exits $rc_qemu" "ours: $(cat ours.err)" \
            "qemu-img: $(cat qemu.err)" "$repro"
        return 1
    fi
    if ! cmp -s ours.out qemu.out; then
        fail "$name: stdout differs" "ours: $(cat ours.out)" "qemu-img: $(cat qemu.out)" "$repro"
        return 1
    fi
    sed -E -e 's/^(qcow2|qemu-img): //' -e '/^Try .* --help/d' ours.err >ours.msg
    sed -E -e 's/^(qcow2|qemu-img): //' -e '/^Try .* --help/d' "$@" qemu.err >qemu.msg
    if ! cmp -s ours.msg qemu.msg &&
        ! { [ -n "${OWN_MESSAGES:-}" ] && grep -Eq "$OWN_MESSAGES" ours.msg; }; then
        fail "$name: message differs" "ours: $(cat ours.err)" "qemu-img: $(cat qemu.err)" "$repro"
        return 1
    fi
    return 0
}
