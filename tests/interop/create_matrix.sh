#!/usr/bin/env bash
# create_matrix.sh - images made by `$QCOW2 create` must be accepted by QEMU as made.
# For each option combination: `qemu-img check` exits 0; `qemu-img info --output=json` reports
# the requested options; `qemu-img map` describes the same guest layout (present/zero/data/depth,
# host offsets ignored) as an image qemu-img creates with the same options; and QEMU can write
# into the image, check it again and read its writes back. Every value of every option appears,
# and the interesting pairs (refcount width x cluster size, preallocation x backing/extended L2/
# data file, v2 x everything v2 allows) are covered without the full cartesian product.
# Invalid combinations must be refused with a non-zero exit and a one-line message.

. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=${CLI_TIMEOUT:-60}
MiB=$((1024 * 1024))
start_time=$(date +%s)

# Backing files shared by the cases (copied into each case directory: names are relative).
mkdir -p "$T/bases"
cd "$T/bases" || exit 1
harness "base.qcow2" qemu-img create -f qcow2 -o cluster_size=65536 base.qcow2 4M &&
    harness "base.qcow2" qemu-io -c "write -P 0xb1 0 1M" -c "write -P 0xb2 3M 64k" base.qcow2
harness "base.raw" qemu-img create -f raw base.raw 4M &&
    harness "base.raw" qemu-io -f raw -c "write -P 0xb3 1M 1M" base.raw

# expected KEY: the value qemu-img info should print for the requested options.
# Uses the globals set by create_case: O_* (options), BACKING, SIZE_EXPECT.
declare -A O

# create_case NAME OPTS BACKING [SIZE]
#   OPTS: the -o list ("" for none). BACKING: none | qcow2 | raw | opt-qcow2 (backing given as
#   -o backing_file=...,backing_fmt=... instead of -b/-F). SIZE: as passed on the command line
#   ("" = take the backing file's size).
create_case() {
    local name=$1 opts=$2 backing=$3 size=${4-4M}
    local dir=$T/$name rc kv k v
    case $opts in *zstd*)
        if ! qemu_has_zstd; then
            skip "$name: qemu-img has no zstd"
            return
        fi ;;
    esac
    mkdir -p "$dir"
    cd "$dir" || exit 1

    # Parse the options into O[] with qemu-img's defaults.
    O=([cluster_size]=65536 [compat]=1.1 [extended_l2]=off [refcount_bits]=16 [lazy_refcounts]=off
        [compression_type]=zlib [preallocation]=off [data_file]="" [data_file_raw]=off
        [backing_file]="" [backing_fmt]="")
    local IFS=,
    for kv in $opts; do
        k=${kv%%=*}
        v=${kv#*=}
        O[$k]=$v
    done
    unset IFS
    case ${O[compat]} in v2) O[compat]=0.10 ;; v3) O[compat]=1.1 ;; esac
    case ${O[cluster_size]} in
        *k) O[cluster_size]=$((${O[cluster_size]%k} * 1024)) ;;
        *M) O[cluster_size]=$((${O[cluster_size]%M} * MiB)) ;;
    esac

    local args=(create -f qcow2)
    [ -n "$opts" ] && args+=(-o "$opts")
    case $backing in
        qcow2 | raw)
            cp --sparse=always "$T/bases/base.$backing" .
            args+=(-b "base.$backing" -F "$backing")
            O[backing_file]=base.$backing
            O[backing_fmt]=$backing
            ;;
        opt-qcow2)
            cp --sparse=always "$T/bases/base.qcow2" .
            ;;
    esac
    [ -n "${O[backing_file]}" ] && [ ! -e "${O[backing_file]}" ] && cp --sparse=always "$T/bases/${O[backing_file]}" .

    local expect_size
    if [ -n "$size" ]; then
        qcow2_size_bytes "$size" expect_size
    else
        expect_size=$((4 * MiB)) # both bases are 4 MiB
    fi

    local cmd=("$QCOW2" "${args[@]}" img.qcow2)
    [ -n "$size" ] && cmd+=("$size")
    local repro
    repro="repro: $(q "${cmd[@]}")"
    [ -n "${O[backing_file]}" ] && repro="repro (backing file ${O[backing_file]} must exist, 4 MiB): $(q "${cmd[@]}")"

    run_cli "$CLI_TIMEOUT" create.out create.err "${cmd[@]}"
    rc=$?
    if [ $rc -ne 0 ]; then
        fail "$name: create exited $rc" "$(head -n 3 create.err)" "$repro"
        return
    fi
    if sanitizer_text create.err >/dev/null; then
        fail "$name: create: sanitizer report" "$(head -n 20 create.err)" "$repro"
        return
    fi
    pass "$name: create"

    # 1. qemu-img check
    if qemu-img check img.qcow2 >check.out 2>&1; then
        pass "$name: check"
    else
        fail "$name: qemu-img check exited $?" "$(head -n 12 check.out)" "$repro" "qemu-img check img.qcow2"
    fi

    # 2. qemu-img info reports what was asked for
    if ! qemu-img info --output=json img.qcow2 >info.json 2>info.err; then
        fail "$name: qemu-img info failed" "$(head -n 3 info.err)" "$repro"
        return
    fi
    local bad=() got kv
    # Every key this case looks at, read with one process.
    local -A info=()
    while IFS= read -r kv; do
        info[${kv%%=*}]=${kv#*=}
    done < <(json_fields info.json format virtual-size cluster-size compat refcount-bits \
        compression-type extended-l2 lazy-refcounts corrupt backing-filename \
        backing-filename-format data-file data-file-raw dirty-flag)
    check_key() { # check_key KEY WANT (WANT "" = the key must be absent)
        got=${info[$1]-}
        if [ -z "$2" ]; then
            [ -n "${info[$1]+set}" ] && bad+=("$1: want absent, got '$got'")
        elif [ "$got" != "$2" ]; then
            bad+=("$1: want '$2', got '$got'")
        fi
        return 0
    }
    onoff() { [ "$1" = on ] && echo true || echo false; }
    check_key format qcow2
    check_key virtual-size "$expect_size"
    check_key cluster-size "${O[cluster_size]}"
    check_key compat "${O[compat]}"
    check_key refcount-bits "${O[refcount_bits]}"
    check_key compression-type "${O[compression_type]}"
    if [ "${O[compat]}" = 1.1 ]; then
        check_key extended-l2 "$(onoff "${O[extended_l2]}")"
        check_key lazy-refcounts "$(onoff "${O[lazy_refcounts]}")"
        check_key corrupt false
    fi
    check_key backing-filename "${O[backing_file]}"
    check_key backing-filename-format "${O[backing_fmt]}"
    check_key data-file "${O[data_file]}"
    if [ -n "${O[data_file]}" ]; then
        check_key data-file-raw "$(onoff "${O[data_file_raw]}")"
    fi
    check_key dirty-flag false
    if [ ${#bad[@]} -eq 0 ]; then
        pass "$name: info"
    else
        fail "$name: qemu-img info does not show the requested options" "${bad[@]}" "$repro" \
            "qemu-img info --output=json img.qcow2"
    fi

    # 3. preallocation: the data clusters exist on the host
    local datafile=img.qcow2
    [ -n "${O[data_file]}" ] && datafile=${O[data_file]}
    case ${O[preallocation]} in
        falloc | full)
            local blocks
            blocks=$(($(stat -c %b "$datafile") * $(stat -c %B "$datafile")))
            if [ "$blocks" -ge "$expect_size" ]; then
                pass "$name: preallocation"
            else
                fail "$name: preallocation=${O[preallocation]} but $datafile has only $blocks bytes allocated for $expect_size virtual" "$repro"
            fi
            ;;
    esac

    # 4. same guest layout as qemu-img's own image with the same options (offsets ignored)
    local twin_opts=$opts twin_args=(create -f qcow2)
    if [ -n "${O[data_file]}" ]; then
        twin_opts=${twin_opts//data_file=${O[data_file]}/data_file=twin.data}
    fi
    [ -n "$twin_opts" ] && twin_args+=(-o "$twin_opts")
    case $backing in qcow2 | raw) twin_args+=(-b "base.$backing" -F "$backing") ;; esac
    twin_args+=(twin.qcow2)
    [ -n "$size" ] && twin_args+=("$size")
    if ! qemu-img "${twin_args[@]}" >twin.out 2>&1; then
        fail "$name: harness: qemu-img refuses these options" "$(tail -n 2 twin.out)" "qemu-img $(q "${twin_args[@]}")"
    else
        local g=512
        while [ $((expect_size / g)) -gt 32768 ]; do g=$((g * 2)); done
        # Host offsets differ legitimately, and so does "zero" on data ranges: QEMU reports
        # preallocated data clusters as zero where the host file has a hole, which depends on
        # where the metadata went.
        local strip='s/ offset=.*//; s/zero=[a-z]* data=true/zero=? data=true/'
        qemu-img map --output=json twin.qcow2 2>&1 | map_normalize $g | sed "$strip" >twin.norm
        qemu-img map --output=json img.qcow2 2>&1 | map_normalize $g | sed "$strip" >img.norm
        if diff -u twin.norm img.norm >map.diff; then
            pass "$name: layout"
        else
            fail "$name: qemu-img map differs from qemu-img's own image (- theirs, + ours)" \
                "$(grep '^[-+][^-+]' map.diff | head -n 8)" "$repro" \
                "qemu-img $(q "${twin_args[@]}"); qemu-img map --output=json twin.qcow2; qemu-img map --output=json img.qcow2"
        fi
    fi

    # 5. QEMU can allocate in it (refcounts are right), stays consistent, reads its data back
    local end=$((expect_size - 4096))
    if qemu-io -c "write -P 0x5a 0 64k" -c "write -P 0x5b $end 4096" -c "write -z 128k 64k" img.qcow2 >io.out 2>&1 &&
        qemu-img check img.qcow2 >check2.out 2>&1 &&
        qemu-io -c "read -P 0x5a 0 64k" -c "read -P 0x5b $end 4096" -c "read -P 0 128k 64k" img.qcow2 >read.out 2>&1 &&
        ! grep -q 'Pattern verification failed' read.out; then
        pass "$name: qemu writes"
    else
        fail "$name: QEMU cannot use the image for writes" "$(tail -n 3 io.out)" "$(head -n 8 check2.out 2>/dev/null)" \
            "$(grep -m 2 -i fail read.out 2>/dev/null)" "$repro" \
            "qemu-io -c 'write -P 0x5a 0 64k' -c 'write -P 0x5b $end 4096' -c 'write -z 128k 64k' img.qcow2; qemu-img check img.qcow2"
    fi
}

# qcow2_size_bytes SIZE VAR: 4M -> 4194304 (k, M, G suffixes, powers of 1024).
qcow2_size_bytes() {
    local s=$1 n
    case $s in
        *k | *K) n=$((${s%?} * 1024)) ;;
        *M) n=$((${s%M} * MiB)) ;;
        *G) n=$((${s%G} * 1024 * MiB)) ;;
        *) n=$s ;;
    esac
    n=$(((n + 511) / 512 * 512)) # qemu-img rounds the size up to a sector
    printf -v "$2" '%s' "$n"
}

# --- valid combinations ----------------------------------------------------------------------

# A. Every refcount width with every cluster size; the other options rotate so each value
#    meets many others. Rules: preallocation with a backing file needs extended L2; extended L2
#    needs 16k clusters; data_file_raw is never combined with a backing file.
attachments=(none qcow2 raw df dfraw)
preallocs=(off metadata falloc full)
i=0
ri=0
for rb in 1 2 4 8 16 32 64; do
    ci=0
    for cs in 512 4096 65536 2097152; do
        i=$((i + 1))
        # The short form takes every other cell (a checkerboard): each refcount width meets two
        # cluster sizes and each cluster size three or four widths.
        if [ "$FULL" != 1 ] && [ $(((ci + ri) % 2)) = 1 ]; then
            ci=$((ci + 1))
            continue
        fi
        # Latin-square style rotation over (cluster size index ci, refcount index ri).
        ext=off
        [ $cs -ge 16384 ] && [ $(((ri + ci) % 2)) = 0 ] && ext=on
        lazy=off
        [ $((i % 3)) = 0 ] && lazy=on
        ct=zlib
        [ $(((ri + i) % 2)) = 1 ] && ct=zstd
        pre=${preallocs[(ci + ri) % 4]}
        att=${attachments[(ci + 2 * ri) % 5]}
        if [ "$att" = qcow2 ] || [ "$att" = raw ]; then
            if [ "$pre" != off ] && [ "$ext" = off ]; then
                if [ $cs -ge 16384 ]; then ext=on; else pre=off; fi
            fi
        fi
        opts="cluster_size=$cs,refcount_bits=$rb,extended_l2=$ext,lazy_refcounts=$lazy,compression_type=$ct,preallocation=$pre"
        backing=none
        case $att in
            qcow2 | raw) backing=$att ;;
            df) opts="$opts,data_file=img.data" ;;
            dfraw) opts="$opts,data_file=img.data,data_file_raw=on" ;;
        esac
        size=4M
        [ $cs = 2097152 ] && size=8M
        [ "$backing" != none ] && [ $((i % 3)) = 1 ] && size=""
        create_case "A$i-rb$rb-c$cs-extl2$ext-lazy$lazy-$ct-$pre-$att" "$opts" "$backing" "$size"
        ci=$((ci + 1))
    done
    ri=$((ri + 1))
done

# B. compat=0.10 with every cluster size and preallocation mode, and with backing files.
create_case "B1-v2-c512-off" "compat=0.10,cluster_size=512" none 4M
create_case "B2-v2-c4096-metadata" "compat=0.10,cluster_size=4096,preallocation=metadata" none 4M
create_case "B3-v2-c65536-falloc" "compat=0.10,cluster_size=65536,preallocation=falloc" none 4M
create_case "B4-v2-c2M-full" "compat=0.10,cluster_size=2M,preallocation=full" none 8M
create_case "B5-v2-backing-qcow2" "compat=0.10,refcount_bits=16" qcow2 ""
create_case "B6-v2-backing-raw-larger" "compat=0.10,cluster_size=4096" raw 16M
create_case "B7-v2-spelled-v2" "compat=v2,lazy_refcounts=off,extended_l2=off,compression_type=zlib" none 1M

# C. Extended L2 with every preallocation mode over a backing file, and at its limits.
create_case "C1-extl2-metadata-backing" "extended_l2=on,preallocation=metadata" qcow2 ""
create_case "C2-extl2-falloc-backing" "extended_l2=on,cluster_size=16k,preallocation=falloc" qcow2 4M
create_case "C3-extl2-full-backing-raw" "extended_l2=on,preallocation=full" raw 8M
create_case "C4-extl2-c16k" "extended_l2=on,cluster_size=16384,refcount_bits=64" none 4M
create_case "C5-extl2-c2M-zstd-lazy" "extended_l2=on,cluster_size=2M,compression_type=zstd,lazy_refcounts=on" none 8M
create_case "C6-extl2-off-backing-explicit" "extended_l2=off,preallocation=off" qcow2 4M

# D. External data files with every preallocation mode, raw and not, with extended L2, with a
#    backing file (not raw), lazy refcounts.
create_case "D1-df-off" "data_file=img.data" none 4M
create_case "D2-df-metadata" "data_file=img.data,preallocation=metadata" none 4M
create_case "D3-df-falloc" "data_file=img.data,preallocation=falloc,cluster_size=4096" none 4M
create_case "D4-df-full" "data_file=img.data,preallocation=full" none 4M
create_case "D5-dfraw-default" "data_file=img.data,data_file_raw=on" none 4M
create_case "D6-dfraw-metadata" "data_file=img.data,data_file_raw=on,preallocation=metadata,cluster_size=512" none 1M
create_case "D7-dfraw-falloc" "data_file=img.data,data_file_raw=on,preallocation=falloc" none 4M
create_case "D8-dfraw-full-extl2" "data_file=img.data,data_file_raw=on,preallocation=full,extended_l2=on" none 4M
create_case "D9-df-backing" "data_file=img.data,cluster_size=4096" qcow2 ""
create_case "D10-df-extl2-lazy-rb1" "data_file=img.data,extended_l2=on,lazy_refcounts=on,refcount_bits=1" none 4M
create_case "D11-dfraw-off-explicit" "data_file=img.data,data_file_raw=off,compat=1.1" none 4M

# E. Backing files: given as options, size taken from the backing file or larger, explicit v3.
create_case "E1-backing-as-options" "backing_file=base.qcow2,backing_fmt=qcow2" opt-qcow2 ""
create_case "E2-backing-raw-no-size" "cluster_size=512" raw ""
create_case "E3-backing-larger" "compat=1.1,lazy_refcounts=on" qcow2 64M
create_case "E4-backing-smaller" "cluster_size=4096" qcow2 1M

# F. Sizes and the rest: virtual size not a multiple of the cluster size with full
#    preallocation, a large sparse image, the defaults, zstd alone.
create_case "F1-unaligned-size-full" "cluster_size=65536,preallocation=full" none $((4 * MiB + 512))
create_case "F2-large-sparse" "cluster_size=512" none 1G
create_case "F3-defaults" "" none 4M
create_case "F4-zstd" "compression_type=zstd" none 4M
create_case "F5-size-in-bytes" "cluster_size=4096,preallocation=metadata" none 3000000

# --- invalid combinations --------------------------------------------------------------------

cd "$T" || exit 1
mkdir -p invalid
cd invalid || exit 1
cp --sparse=always "$T/bases/base.qcow2" .

refuse() { # refuse NAME ARGS...: `$QCOW2 create ARGS` must fail with one line on stderr
    local name=$1 rc lines
    shift
    rm -f bad.qcow2 bad.data
    run_cli "$CLI_TIMEOUT" refuse.out refuse.err "$QCOW2" create "$@"
    rc=$?
    lines=$(grep -c '' refuse.err)
    if [ $rc -eq 0 ]; then
        fail "invalid/$name: create accepted it" "repro: $(q "$QCOW2" create "$@")"
    elif [ $rc -ge 124 ]; then
        fail "invalid/$name: create exited $rc (timeout or signal)" "$(head -n 5 refuse.err)" \
            "repro: $(q "$QCOW2" create "$@")"
    elif sanitizer_text refuse.err >/dev/null; then
        fail "invalid/$name: sanitizer report" "$(head -n 20 refuse.err)" "repro: $(q "$QCOW2" create "$@")"
    elif [ "$lines" -ne 1 ] || ! grep -q '[^[:space:]]' refuse.err; then
        fail "invalid/$name: want a one-line message on stderr, got $lines lines" "$(head -n 5 refuse.err)" \
            "repro: $(q "$QCOW2" create "$@")"
    else
        pass "invalid/$name"
        [ "${VERBOSE:-0}" = 1 ] && echo "     $(cat refuse.err)"
    fi
}

refuse "cluster_size=1k-extended_l2" -f qcow2 -o cluster_size=1k,extended_l2=on bad.qcow2 4M
refuse "refcount_bits=3" -f qcow2 -o refcount_bits=3 bad.qcow2 4M
refuse "refcount_bits=128" -f qcow2 -o refcount_bits=128 bad.qcow2 4M
refuse "compat=0.10-refcount_bits=1" -f qcow2 -o compat=0.10,refcount_bits=1 bad.qcow2 4M
refuse "cluster_size=4M" -f qcow2 -o cluster_size=4M bad.qcow2 4M
refuse "cluster_size=256" -f qcow2 -o cluster_size=256 bad.qcow2 4M
refuse "cluster_size=1000" -f qcow2 -o cluster_size=1000 bad.qcow2 4M
refuse "compat=0.10-extended_l2" -f qcow2 -o compat=0.10,extended_l2=on bad.qcow2 4M
refuse "compat=0.10-lazy_refcounts" -f qcow2 -o compat=0.10,lazy_refcounts=on bad.qcow2 4M
refuse "compat=0.10-zstd" -f qcow2 -o compat=0.10,compression_type=zstd bad.qcow2 4M
refuse "compat=0.10-data_file" -f qcow2 -o compat=0.10,data_file=bad.data bad.qcow2 4M
refuse "compat=0.11" -f qcow2 -o compat=0.11 bad.qcow2 4M
refuse "backing-prealloc-full-no-extl2" -f qcow2 -o preallocation=full -b base.qcow2 -F qcow2 bad.qcow2
refuse "backing-prealloc-metadata-no-extl2" -f qcow2 -o preallocation=metadata -b base.qcow2 -F qcow2 bad.qcow2
refuse "backing-data_file_raw" -f qcow2 -o data_file=bad.data,data_file_raw=on -b base.qcow2 -F qcow2 bad.qcow2
refuse "data_file_raw-without-data_file" -f qcow2 -o data_file_raw=on bad.qcow2 4M
refuse "unknown-option" -f qcow2 -o frobnicate=1 bad.qcow2 4M
refuse "preallocation=bogus" -f qcow2 -o preallocation=bogus bad.qcow2 4M
refuse "compression_type=lz4" -f qcow2 -o compression_type=lz4 bad.qcow2 4M
refuse "extended_l2=maybe" -f qcow2 -o extended_l2=maybe bad.qcow2 4M

echo "# $TEST_NAME: $(($(date +%s) - start_time)) s"
finish
