#!/usr/bin/env bash
# Builds the example appliance's two container images from Debian packages, with local tools
# only (tar, gzip, sha256sum, jq), as OCI image layouts in examples/appliance/images/:
#
#   images/busybox  docker.io/library/busybox:1.36      busybox-static, applets as symlinks
#   images/web      docker.io/appliance/web:1.0         the same layer, plus a web root in /www
#
# Each name is an image index over an amd64 and an arm64 image (busybox-static of that
# architecture), so one set of layouts serves bundles for either, and a bundle for both. The web
# image shares its first layer with busybox, so a bundle stores it once. The output is
# reproducible (sorted tars, zero times and owners, gzip -n) and gitignored. `bale build` finds
# these layouts in the context's images/ directory. The layout functions are in ../oci-layout.sh;
# the .debs are cached in $BALE_EXAMPLES_CACHE (../debs.sh).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/images"
# shellcheck source=../../scripts/lib.sh
. "$HERE/../../scripts/lib.sh"
# shellcheck source=../debs.sh
. "$HERE/../debs.sh"
for t in tar gzip sha256sum jq dpkg-deb dpkg; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install tar gzip coreutils jq dpkg)"
done
ARCHES="amd64 arm64"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=../oci-layout.sh
. "$HERE/../oci-layout.sh"
OCI_WORK="$WORK"

# Root file systems: busybox of each architecture, and the web root.
for arch in $ARCHES; do
    dpkg-deb -x "$(example_deb busybox-static "$arch")" "$WORK/deb-$arch"
    BB="$(find "$WORK/deb-$arch" -path '*/bin/busybox' -type f | head -n1)"
    { [ -n "$BB" ] && [ -f "$BB" ]; } || die "busybox-static ($arch) holds no bin/busybox"
    mkdir -p "$WORK/bb-$arch/bin"
    install -m 0755 "$BB" "$WORK/bb-$arch/bin/busybox"
    for a in sh ls cat echo env sleep wget httpd nc ps; do ln -s busybox "$WORK/bb-$arch/bin/$a"; done
done
mkdir -p "$WORK/www/www"
cat >"$WORK/www/www/index.html" <<'EOF'
<!doctype html>
<title>appliance</title>
<p>The example appliance is up.</p>
EOF

# image LAYOUT REF CMD_JSON LAYER_NAME...: the layers are directories in $WORK.
image() {
    local layout="$1" ref="$2" cmd="$3" name dirs=()
    shift 3
    for name in "$@"; do dirs+=("$WORK/$name"); done
    oci_image "$layout" "$ref" "$(jq -cn --argjson cmd "$cmd" '{Cmd: $cmd, Env: ["PATH=/bin"]}')" "${dirs[@]}"
}

# multiarch NAME REF CMD_JSON LAYER_NAME...: one image per architecture (layer bb is that
# architecture's busybox), merged into $OUT/NAME under REF.
multiarch() {
    local name="$1" ref="$2" cmd="$3" arch layer layers srcs=()
    shift 3
    for arch in $ARCHES; do
        layers=()
        for layer in "$@"; do
            if [ "$layer" = bb ]; then layers+=("bb-$arch"); else layers+=("$layer"); fi
        done
        OCI_ARCH="$arch" image "$WORK/$name-$arch" "$ref" "$cmd" "${layers[@]}"
        srcs+=("$WORK/$name-$arch")
    done
    oci_merge "$OUT/$name" "$ref" "${srcs[@]}"
}

mkdir -p "$OUT"
multiarch busybox docker.io/library/busybox:1.36 '["sh"]' bb
multiarch web docker.io/appliance/web:1.0 '["httpd", "-f", "-p", "8080", "-h", "/www"]' bb www
