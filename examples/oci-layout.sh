# shellcheck shell=bash
# OCI image layouts from directories, with local tools only (tar, gzip, sha256sum, stat, jq).
# Sourced by examples/appliance/make-images.sh and examples/kubernetes/build-inputs.sh.
#
# The output is reproducible: sorted ustar archives with zero times and owners, `gzip -n`, and
# compact JSON in a fixed key order. The caller sets, before calling oci_image:
#   OCI_WORK        a scratch directory (layer tars and JSON documents are made there)
#   OCI_ARCH        the image's architecture as OCI names it (amd64, arm64)
#   OCI_GZIP_LEVEL  optional, gzip's level for the layers (default 9)

# A layer from a directory: makes $OCI_WORK/NAME.tar and NAME.tar.gz and prints
# "<digest of tar.gz> <diff_id> <size of tar.gz>".
oci_layer() {
    local dir="$1" name="$2"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=ustar \
        -C "$dir" -cf "$OCI_WORK/$name.tar" .
    gzip -n "-${OCI_GZIP_LEVEL:-9}" -c "$OCI_WORK/$name.tar" >"$OCI_WORK/$name.tar.gz"
    printf '%s %s %s\n' \
        "$(sha256sum "$OCI_WORK/$name.tar.gz" | cut -d' ' -f1)" \
        "$(sha256sum "$OCI_WORK/$name.tar" | cut -d' ' -f1)" \
        "$(stat -c %s "$OCI_WORK/$name.tar.gz")"
}

# Puts a file into a layout's blobs; prints its hex digest.
oci_blob() {
    local file="$1" layout="$2" d
    d="$(sha256sum "$file" | cut -d' ' -f1)"
    mkdir -p "$layout/blobs/sha256"
    cp "$file" "$layout/blobs/sha256/$d"
    echo "$d"
}

# oci_image LAYOUT REF CONFIG DIR...
# Writes a one-image OCI layout at LAYOUT (replacing what is there) named REF in index.json's
# org.opencontainers.image.ref.name, with one layer per DIR, bottom first. CONFIG is the JSON
# object that goes into the image config's "config" (Entrypoint, Cmd, Env, ...), kept as given.
oci_image() {
    local layout="$1" ref="$2" config="$3"
    shift 3
    rm -rf "$layout"
    mkdir -p "$layout"
    local layers='[]' diffs='[]' dir d diff size n=0
    for dir in "$@"; do
        n=$((n + 1))
        read -r d diff size < <(oci_layer "$dir" "layer$n")
        oci_blob "$OCI_WORK/layer$n.tar.gz" "$layout" >/dev/null
        rm -f "$OCI_WORK/layer$n.tar" "$OCI_WORK/layer$n.tar.gz"
        layers="$(jq -c --arg d "sha256:$d" --argjson s "$size" \
            '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<<"$layers")"
        diffs="$(jq -c --arg d "sha256:$diff" '. + [$d]' <<<"$diffs")"
    done
    jq -cn --arg arch "$OCI_ARCH" --argjson diffs "$diffs" --argjson config "$config" \
        '{architecture: $arch, os: "linux", config: $config,
          rootfs: {type: "layers", diff_ids: $diffs}}' >"$OCI_WORK/config.json"
    local cfg cfg_size
    cfg="$(oci_blob "$OCI_WORK/config.json" "$layout")"
    cfg_size="$(stat -c %s "$OCI_WORK/config.json")"
    jq -cn --arg c "sha256:$cfg" --argjson cs "$cfg_size" --argjson layers "$layers" \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
          layers: $layers}' >"$OCI_WORK/manifest.json"
    local m m_size
    m="$(oci_blob "$OCI_WORK/manifest.json" "$layout")"
    m_size="$(stat -c %s "$OCI_WORK/manifest.json")"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    jq -cn --arg m "sha256:$m" --argjson ms "$m_size" --arg ref "$ref" --arg arch "$OCI_ARCH" \
        '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: $m, size: $ms, platform: {architecture: $arch, os: "linux"},
          annotations: {"org.opencontainers.image.ref.name": $ref}}]}' >"$layout/index.json"
    echo "$ref ($OCI_ARCH): $layout" >&2
}

# oci_merge LAYOUT REF SRC...
# One layout at LAYOUT (replacing what is there) whose index.json names REF as an image index
# over the images of the one-image layouts SRC (each made by oci_image for one architecture,
# its platform recorded); blobs the architectures share are stored once.
oci_merge() {
    local layout="$1" ref="$2" src manifests='[]' d size
    shift 2
    rm -rf "$layout"
    mkdir -p "$layout/blobs/sha256"
    for src in "$@"; do
        cp -n "$src"/blobs/sha256/* "$layout/blobs/sha256/"
        manifests="$(jq -c --slurpfile i "$src/index.json" '. + [$i[0].manifests[0] | del(.annotations)]' <<<"$manifests")"
    done
    jq -cn --argjson m "$manifests" \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: $m}' \
        >"$OCI_WORK/image-index.json"
    d="$(oci_blob "$OCI_WORK/image-index.json" "$layout")"
    size="$(stat -c %s "$OCI_WORK/image-index.json")"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    jq -cn --arg d "sha256:$d" --argjson s "$size" --arg ref "$ref" \
        '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.index.v1+json",
          digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": $ref}}]}' \
        >"$layout/index.json"
    echo "$ref (index of $#): $layout" >&2
}
