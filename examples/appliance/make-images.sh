#!/usr/bin/env bash
# Builds the example appliance's two container images from Debian packages, with local tools
# only (tar, gzip, sha256sum, jq), as OCI image layouts in examples/appliance/images/:
#
#   images/busybox  docker.io/library/busybox:1.36      busybox-static, applets as symlinks
#   images/web      docker.io/appliance/web:1.0         the same layer, plus a web root in /www
#
# The web image shares its first layer with busybox, so a bundle stores it once. The output is
# reproducible (sorted tars, zero times and owners, gzip -n) and gitignored. `bale build` finds
# these layouts in the context's images/ directory.
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

# A layer from a directory: prints "<digest of tar.gz> <diff_id> <size>".
layer() {
    local dir="$1" name="$2"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=ustar \
        -C "$dir" -cf "$WORK/$name.tar" .
    gzip -n -9 -c "$WORK/$name.tar" >"$WORK/$name.tar.gz"
    printf '%s %s %s\n' \
        "$(sha256sum "$WORK/$name.tar.gz" | cut -d' ' -f1)" \
        "$(sha256sum "$WORK/$name.tar" | cut -d' ' -f1)" \
        "$(stat -c %s "$WORK/$name.tar.gz")"
}

# Puts a file into a layout's blobs; prints its hex digest.
blob() {
    local file="$1" layout="$2" d
    d="$(sha256sum "$file" | cut -d' ' -f1)"
    mkdir -p "$layout/blobs/sha256"
    cp "$file" "$layout/blobs/sha256/$d"
    echo "$d"
}

# image LAYOUT REF CMD_JSON LAYER_NAME...
image() {
    local layout="$1" ref="$2" cmd="$3"
    shift 3
    rm -rf "$layout"
    mkdir -p "$layout"
    local layers='[]' diffs='[]' name d diff size
    for name in "$@"; do
        read -r d diff size < <(layer "$WORK/$name" "$name")
        blob "$WORK/$name.tar.gz" "$layout" >/dev/null
        layers="$(jq -c --arg d "sha256:$d" --argjson s "$size" \
            '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<<"$layers")"
        diffs="$(jq -c --arg d "sha256:$diff" '. + [$d]' <<<"$diffs")"
    done
    jq -cn --arg arch "$ARCH" --argjson diffs "$diffs" --argjson cmd "$cmd" \
        '{architecture: $arch, os: "linux", config: {Cmd: $cmd, Env: ["PATH=/bin"]},
          rootfs: {type: "layers", diff_ids: $diffs}}' >"$WORK/config.json"
    local cfg cfg_size
    cfg="$(blob "$WORK/config.json" "$layout")"
    cfg_size="$(stat -c %s "$WORK/config.json")"
    jq -cn --arg c "sha256:$cfg" --argjson cs "$cfg_size" --argjson layers "$layers" \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
          layers: $layers}' >"$WORK/manifest.json"
    local m m_size
    m="$(blob "$WORK/manifest.json" "$layout")"
    m_size="$(stat -c %s "$WORK/manifest.json")"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    jq -cn --arg m "sha256:$m" --argjson ms "$m_size" --arg ref "$ref" --arg arch "$ARCH" \
        '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: $m, size: $ms, platform: {architecture: $arch, os: "linux"},
          annotations: {"org.opencontainers.image.ref.name": $ref}}]}' >"$layout/index.json"
    echo "$ref ($ARCH): $layout" >&2
}

mkdir -p "$OUT"
image "$OUT/busybox" docker.io/library/busybox:1.36 '["sh"]' bb
image "$OUT/web" docker.io/appliance/web:1.0 '["httpd", "-f", "-p", "8080", "-h", "/www"]' bb www
