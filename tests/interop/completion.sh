#!/usr/bin/env bash
# completion.sh - the bash completion (tools/qcow2.bash-completion) completes subcommands,
# their options, option values and files, from the program's own --help: a new subcommand or
# option completes without touching the completion script.
source "$(dirname "$0")/lib.sh"
SRC=$(cd "$INTEROP_DIR/../.." && pwd)
BC=/usr/share/bash-completion/bash_completion
[ -r "$BC" ] || skip_all "$BC not found (Debian package bash-completion; make check installs it)"
[ "$QCOW2" != qemu-img ] || skip_all "completes the qcow2 command only"

# complete LINE: what <TAB> at the end of LINE offers (the program is $QCOW2), sorted, one line.
complete_line() {
    # shellcheck disable=SC2016
    (cd "$T" && bash --norc --noprofile -c '
        source "$1" && source "$2" || exit 1
        read -r -a COMP_WORDS <<<"$3"
        [[ $3 == *" " ]] && COMP_WORDS+=("")
        COMP_WORDS[0]=$4
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE="$4${3#qcow2}"
        COMP_POINT=${#COMP_LINE}
        _qcow2 "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "
    ' _ "$BC" "$SRC/tools/qcow2.bash-completion" "$1" "$QCOW2")
}

# expect NAME LINE WORDS...: every WORD is offered.
expect() {
    local name=$1 line=$2 got w
    shift 2
    got=" $(complete_line "$line")"
    for w in "$@"; do
        if [[ $got != *" $w "* ]]; then
            fail "$name" "'$line<TAB>' offers [$got], not '$w'"
            return
        fi
    done
    pass "$name"
}

# expect_none NAME LINE: nothing is offered.
expect_none() {
    local got
    got=$(complete_line "$2")
    if [ -n "${got// /}" ]; then fail "$1" "'$2<TAB>' offers [$got], expected nothing"; else pass "$1"; fi
}

touch "$T/disk.qcow2" "$T/base.raw"
commands=$("$QCOW2" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z0-9-]*\) .*/\1/p')
[ -n "$commands" ] || fail "qcow2 --help lists the commands" "no command list in its output"
# shellcheck disable=SC2086
expect "every subcommand of --help completes" "qcow2 " $commands --help
expect "a prefix completes to its subcommand" "qcow2 conv" convert
expect "convert's options come from its --help" "qcow2 convert -" -O -f -c -B
expect "check's long option" "qcow2 check --" --output
expect "formats after -f" "qcow2 info -f " qcow2 raw
expect "formats after -O" "qcow2 convert -O " qcow2 raw
expect "image files after the options" "qcow2 info -f qcow2 d" disk.qcow2
expect "backing files after -b" "qcow2 create -f qcow2 -b b" base.raw
expect_none "no guess for a size" "qcow2 measure --size "
for c in $commands; do
    opts=$(complete_line "qcow2 $c -")
    [[ " $opts " == *" -"* ]] || fail "$c has options to complete" "'qcow2 $c -<TAB>' offers nothing"
done
pass "every subcommand offers its options"
finish
