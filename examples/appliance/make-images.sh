#!/usr/bin/env bash
# Builds the example appliance's two container images from Debian packages, with local tools
# only (tar, gzip, sha256sum, jq), as OCI image layouts in examples/appliance/images/:
#
#   images/busybox  docker.io/library/busybox:1.36      busybox-static, applets as symlinks
#   images/web      docker.io/appliance/web:1.0         the same layer, plus a web root in /www
#
# The web image shares its first layer with busybox, so a bundle stores it once. The output is
# reproducible (sorted tars, zero times and owners, gzip -n) and gitignored. `bale build` finds
# these layouts in the context's images/ directory. The layout functions are in ../oci-layout.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/images"
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
for t in tar gzip sha256sum jq dpkg-deb dpkg; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install tar gzip coreutils jq dpkg)"
done
ARCH="$(dpkg --print-architecture)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=../oci-layout.sh
. "$HERE/../oci-layout.sh"
OCI_WORK="$WORK" OCI_ARCH="$ARCH"

# busybox from the busybox-static package: the installed one, else the .deb from apt.
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
    BB="$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)"
else
    (cd "$WORK" && apt-get download busybox-static >/dev/null) ||
        die "cannot get busybox-static: apt-get install busybox-static (or apt-get update first)"
    dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/deb"
    BB="$(find "$WORK/deb" -path '*/bin/busybox' -type f | head -n1)"
fi
{ [ -n "$BB" ] && [ -f "$BB" ]; } || die "busybox-static holds no bin/busybox"

# Root file systems.
mkdir -p "$WORK/bb/bin" "$WORK/www/www"
install -m 0755 "$BB" "$WORK/bb/bin/busybox"
for a in sh ls cat echo env sleep wget httpd nc ps; do ln -s busybox "$WORK/bb/bin/$a"; done
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

mkdir -p "$OUT"
image "$OUT/busybox" docker.io/library/busybox:1.36 '["sh"]' bb
image "$OUT/web" docker.io/appliance/web:1.0 '["httpd", "-f", "-p", "8080", "-h", "/www"]' bb www
