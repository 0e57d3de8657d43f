#!/usr/bin/env bash
# Lays out the example appliance's container runtime from Debian packages, extracted (never
# installed) with dpkg-deb:
#
#   runtime/bin/{containerd,containerd-shim-runc-v2,ctr,runc}   from containerd and runc
#   runtime/cni/bin/*                                          from containernetworking-plugins
#
# The Kubefile copies them to bin/ and cni/bin/ in the bundle, which is where `bale agent step
# runtime` installs them from (/usr/local/bin and /opt/cni/bin on each node). The .debs are
# cached in $BALE_EXAMPLES_CACHE (default /var/cache/bale-examples), so a second run is quick
# and needs no network. The packages are for this machine's architecture (dpkg
# --print-architecture); the example is tested on x86_64 (amd64) only.
#
# These binaries are dynamically linked against the glibc (and runc against libseccomp2) of
# Debian bookworm, which the test nodes run; a real appliance would ship static builds.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/runtime"
CACHE="${BALE_EXAMPLES_CACHE:-/var/cache/bale-examples}"
PACKAGES="containerd runc containernetworking-plugins"
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
for t in apt-get dpkg-deb dpkg sha256sum; do
    command -v "$t" >/dev/null || die "$t not found (this script needs Debian's apt and dpkg)"
done
ARCH="$(dpkg --print-architecture)"
mkdir -p "$CACHE/$ARCH"

# One .deb per package in the cache; downloaded only when missing.
deb_of() { find "$CACHE/$ARCH" -maxdepth 1 -name "$1_*_$ARCH.deb" 2>/dev/null | sort | head -n1; }
for p in $PACKAGES; do
    [ -n "$(deb_of "$p")" ] && continue
    printf 'fetch-runtime: apt-get download %s\n' "$p" >&2
    if ! (cd "$CACHE/$ARCH" && apt-get download "$p:$ARCH" >/dev/null 2>&1); then
        # Package lists may be missing on a fresh machine.
        apt-get update -qq >/dev/null 2>&1 || true
        (cd "$CACHE/$ARCH" && apt-get download "$p:$ARCH" >/dev/null) ||
            die "cannot download the Debian package $p for $ARCH (check apt sources, or put the .deb in $CACHE/$ARCH)"
    fi
done

# Up to date when the stamp names the same .debs.
STAMP="$OUT/.debs"
want="$(for p in $PACKAGES; do basename "$(deb_of "$p")"; done)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    printf 'fetch-runtime: %s is up to date\n' "$OUT" >&2
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for p in $PACKAGES; do dpkg-deb -x "$(deb_of "$p")" "$WORK/root"; done

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
