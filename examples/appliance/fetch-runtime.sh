#!/usr/bin/env bash
# Lays out the example appliance's container runtime from Debian packages, extracted (never
# installed) with dpkg-deb:
#
#   runtime/bin/{containerd,containerd-shim-runc-v2,ctr,runc}   from containerd and runc
#   runtime/cni/bin/*                                          from containernetworking-plugins
#
#   fetch-runtime.sh [--arch amd64|arm64]   (default: this machine's architecture)
#
# The Kubefile copies them to bin/ and cni/bin/ in the bundle, which is where `bale agent step
# runtime` installs them from (/usr/local/bin and /opt/cni/bin on each node). For another
# architecture than this machine's the layout goes to runtime-ARCH/ instead, which the Kubefile
# takes with --build-arg RUNTIME=runtime-ARCH. The .debs are cached in $BALE_EXAMPLES_CACHE
# (default /var/cache/bale-examples, see ../debs.sh), so a second run is quick and needs no
# network.
#
# These binaries are dynamically linked against the glibc (and runc against libseccomp2) of
# Debian bookworm, which the test nodes run; a real appliance would ship static builds.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../../scripts/lib.sh
. "$HERE/../../scripts/lib.sh"
# shellcheck source=../debs.sh
. "$HERE/../debs.sh"
PACKAGES="containerd runc containernetworking-plugins"
for t in apt-get dpkg-deb dpkg sha256sum; do
    command -v "$t" >/dev/null || die "$t not found (this script needs Debian's apt and dpkg)"
done
ARCH="$(dpkg --print-architecture)"
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) [ $# -ge 2 ] || die "--arch needs amd64 or arm64"; ARCH="$2"; shift 2 ;;
        --arch=*) ARCH="${1#--arch=}"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$ARCH" in amd64 | arm64) ;; *) die "--arch is amd64 or arm64, not $ARCH" ;; esac
OUT="$HERE/runtime"
[ "$ARCH" = "$(dpkg --print-architecture)" ] || OUT="$HERE/runtime-$ARCH"
declare -A DEB
for p in $PACKAGES; do DEB[$p]="$(example_deb "$p" "$ARCH")"; done

# Up to date when the stamp names the same .debs.
STAMP="$OUT/.debs"
want="$(for p in $PACKAGES; do basename "${DEB[$p]}"; done)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    printf 'fetch-runtime: %s is up to date\n' "$OUT" >&2
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for p in $PACKAGES; do dpkg-deb -x "${DEB[$p]}" "$WORK/root"; done

# Find a file in the extracted packages by its name under one of the usual directories.
pick() {
    local name="$1" d
    for d in usr/bin usr/sbin bin sbin; do
        [ -f "$WORK/root/$d/$name" ] && { printf '%s\n' "$WORK/root/$d/$name"; return 0; }
    done
    die "the Debian packages hold no $name"
}
rm -rf "$OUT.new"
mkdir -p "$OUT.new/bin" "$OUT.new/cni/bin"
for b in containerd containerd-shim-runc-v2 ctr runc; do
    install -m 0755 "$(pick "$b")" "$OUT.new/bin/$b"
done
CNI_DIR="$WORK/root/usr/lib/cni"
[ -d "$CNI_DIR" ] || die "containernetworking-plugins holds no usr/lib/cni"
for f in "$CNI_DIR"/*; do
    [ -f "$f" ] && install -m 0755 "$f" "$OUT.new/cni/bin/"
done
printf '%s\n' "$want" >"$OUT.new/.debs"
rm -rf "$OUT"
mv "$OUT.new" "$OUT"
printf 'fetch-runtime: %s: %s binaries, %s CNI plugins (%s)\n' "$OUT" \
    "$(find "$OUT/bin" -mindepth 1 -maxdepth 1 | wc -l)" "$(find "$OUT/cni/bin" -mindepth 1 -maxdepth 1 | wc -l)" "$ARCH" >&2
