#!/usr/bin/env bash
# deb.sh - the Debian packages (debian/): they build with dpkg-buildpackage, lintian finds no
# errors in them, and on this machine they install and work: `qcow2 --version`, a program
# built with pkg-config against libqcow2-dev that creates and reads an image, nbdkit finding
# the plugin by name, the bash completion. Installing needs root (the CI machine); the
# packages are removed again at the end. Run by `make package-check` (and .ci/run).
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/qcow2-deb.XXXXXX")
PKGS="libqcow2-0 libqcow2-dev qcow2-utils nbdkit-qcow2-plugin"
installed=0
cleanup() {
    if [ "$installed" = 1 ]; then dpkg -r $PKGS >/dev/null 2>&1 || true; fi
    for p in $PKGS; do
        if dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok'; then
            echo "deb: could not remove $p" >&2
        fi
    done
    rm -rf "$W"
}
trap cleanup EXIT
die() { echo "FAIL: deb: $*" >&2; exit 1; }

# dpkg-buildpackage writes next to the source tree: build a clean copy of what git tracks.
mkdir "$W/src"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$SRC" ls-files -z --cached --others --exclude-standard |
        (cd "$SRC" && xargs -0 cp --parents -t "$W/src")
else
    cp -a "$SRC/." "$W/src"
fi
(cd "$W/src" && dpkg-buildpackage -us -uc -b >"$W/build.log" 2>&1) ||
    { tail -n 40 "$W/build.log"; die "dpkg-buildpackage failed"; }
for p in $PKGS; do
    ls "$W"/"${p}"_*.deb >/dev/null 2>&1 || die "package $p was not built"
done
echo "ok   dpkg-buildpackage -us -uc -b builds $PKGS"

lintian --fail-on error "$W"/*.changes >"$W/lintian.log" 2>&1 ||
    { cat "$W/lintian.log"; die "lintian reports errors"; }
echo "ok   lintian: no errors ($(grep -c '^W:' "$W/lintian.log" || true) warnings)"

if [ "$(id -u)" != 0 ]; then
    echo "skip installing the packages: not root"
    exit 0
fi
for p in $PKGS; do
    if dpkg -s "$p" >/dev/null 2>&1; then die "$p is already installed here; remove it first"; fi
done
installed=1
# The four packages only: the -dbgsym ones would depend on them and keep them installed.
debs=()
for p in $PKGS; do debs+=("$W"/"${p}"_*.deb); done
dpkg -i "${debs[@]}" >"$W/install.log" 2>&1 || { cat "$W/install.log"; die "dpkg -i failed"; }
/usr/bin/qcow2 --version | grep -q libqcow2 || die "qcow2 --version"
echo "ok   the packages install; /usr/bin/qcow2 --version runs"

cat >"$W/demo.c" <<'C'
#include <qcow2.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
    struct qcow2_create_opts o = QCOW2_CREATE_OPTS_INIT;
    struct qcow2_image *img;
    char err[QCOW2_ERROR_MAX], buf[4096];
    (void)argc;
    o.size = 1 << 20;
    if (qcow2_create(argv[1], &o, err, sizeof(err)) < 0 ||
        qcow2_open(argv[1], NULL, &img, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    memset(buf, 0x5a, sizeof(buf));
    int ret = qcow2_pwrite(img, buf, sizeof(buf), 8192, 0);
    memset(buf, 0, sizeof(buf));
    if (ret == 0)
        ret = qcow2_pread(img, buf, sizeof(buf), 8192);
    if (qcow2_close(img) < 0 || ret < 0 || buf[4095] != 0x5a)
        return 1;
    return 0;
}
C
# shellcheck disable=SC2046
gcc -o "$W/demo" "$W/demo.c" $(pkg-config --cflags --libs qcow2) ||
    die "a program does not build with pkg-config --cflags --libs qcow2"
"$W/demo" "$W/demo.qcow2" || die "the program built against libqcow2-dev fails"
if command -v qemu-img >/dev/null; then
    qemu-img check -q "$W/demo.qcow2" || die "qemu-img check fails on the program's image"
fi
echo "ok   a program built with pkg-config against libqcow2-dev creates, writes and reads"

nbdkit --dump-plugin qcow2 >/dev/null 2>&1 || die "nbdkit does not find the qcow2 plugin by name"
echo "ok   nbdkit finds the plugin: nbdkit --dump-plugin qcow2"
[ -r /usr/share/bash-completion/completions/qcow2 ] || die "the bash completion is not installed"
echo "ok   the bash completion is installed"
echo "deb: all passed"
