#!/usr/bin/env bash
# dd.sh - `$QCOW2 dd` must do what `qemu-img dd` does: the same exit code and output image
# (created with the size qemu-img gives it: min(count*bs, input size) - skip*bs, the quirk
# kept), the same bytes in it (raw: cmp; qcow2: virtual size, `qemu-img compare` with
# qemu-img's output, `qemu-img check` clean), from sources with standard and extended L2,
# compressed and zero clusters, raw and qcow2 backings and short and long backings; then the
# operand errors.

. "$(dirname "$0")/lib.sh"

cd "$T" || exit 1
make_image_set || finish

virtual_size() {
    qemu-img info --output=json "$1" >info.json 2>/dev/null && json_get virtual-size info.json
}

# dd_case ARGS...: run both; then compare the two output images when qemu-img made one.
dd_case() {
    local name="dd $*" out
    same_as_qemu "$name" dd "$@" || return
    if [ ! -e qemu.out.img ]; then
        [ -e ours.out.img ] && { fail "$name: we created an output image, qemu-img did not"; return; }
        pass "$name"
        return
    fi
    case " $* " in
        *" -O qcow2 "*)
            if [ "$(virtual_size ours.out.img)" != "$(virtual_size qemu.out.img)" ]; then
                fail "$name: virtual size $(virtual_size ours.out.img), qemu-img's $(virtual_size qemu.out.img)"
            elif ! out=$(qemu-img check ours.out.img 2>&1); then
                fail "$name: qemu-img check" "$out"
            elif ! out=$(qemu-img compare -f qcow2 -F qcow2 ours.out.img qemu.out.img 2>&1); then
                fail "$name: output differs from qemu-img's" "$out"
            else
                pass "$name"
            fi
            ;;
        *)
            if ! out=$(cmp ours.out.img qemu.out.img 2>&1) ||
                [ "$(stat -c %s ours.out.img)" != "$(stat -c %s qemu.out.img)" ]; then
                fail "$name: raw output differs" "$out" "$(ls -l ours.out.img qemu.out.img)"
            else
                pass "$name"
            fi
            ;;
    esac
}

for src in ext.qcow2 over-raw.qcow2 short.qcow2; do
    dd_case bs=64k if=$src of=OUT
done
for src in comp.qcow2 over-qcow2.qcow2 long.qcow2; do
    dd_case -O qcow2 bs=1M count=3 skip=1 if=$src of=OUT
done
dd_case bs=64k count=4 skip=2 if=std.qcow2 of=OUT
dd_case bs=4k count=3 if=ext.qcow2 of=OUT
dd_case bs=1000 count=3 if=std.qcow2 of=OUT
dd_case -O qcow2 bs=1000 count=3 if=std.qcow2 of=OUT
dd_case bs=1000 count=1 skip=1 if=std.qcow2 of=OUT
dd_case bs=1k skip=4096 if=std.qcow2 of=OUT
dd_case skip=99999 if=std.qcow2 of=OUT
dd_case count=0 if=std.qcow2 of=OUT
dd_case -f raw bs=1M if=std.qcow2 of=OUT
dd_case -f raw -O qcow2 bs=256k if=std.raw of=OUT
dd_case if=std.qcow2 bs=8M of=OUT
# Errors.
dd_case bs=0 if=std.qcow2 of=OUT
dd_case bs=3G if=std.qcow2 of=OUT
dd_case bs=1k count=abc if=std.qcow2 of=OUT
dd_case skip=-1 if=std.qcow2 of=OUT
dd_case conv=notrunc if=std.qcow2 of=OUT
dd_case extra if=std.qcow2 of=OUT
dd_case if=std.qcow2
dd_case of=OUT
dd_case if=missing.qcow2 of=OUT
dd_case -O bogus if=std.qcow2 of=OUT
finish
