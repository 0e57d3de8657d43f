#!/usr/bin/env bash
# Container images into a bundle, against the reference pipeline, measured in the same run:
#
#   1. `bale build` of a Kubefile whose images (about 1 GiB, many layers: random and therefore
#      incompressible layers, and compressible layers made of real files) come from an OCI
#      layout in the build context, with a fresh image cache each run;
#      against `skopeo copy` of the same images into an OCI layout followed by
#      `tar | zstd -T0 -3`. Ratio = reference time / bale time (target >= 1.0).
#   2. "Layers already in a FROM base cost no time": an app built `FROM base.bale` (the bundle
#      of step 1) that adds a manifest naming the same images, against building the base
#      itself, and against `cp` + `sync` of the base file (the floor: the app copies the base's
#      stored frames and flushes the file, as every build does). Ratios = other / app build.
#
#   scripts/bench-images.sh
#   BENCH_IMAGES_MIB=256 scripts/bench-images.sh     a smaller set (for a quick look)
#
# Data lives in $BALE_BENCH_DIR/images (default /var/tmp/bale-bench/images), reused between
# runs. BALE=/path/to/bale benchmarks a given build instead of building a static one.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

need_apt skopeo zstd tar bc coreutils
B="${BALE_BENCH_DIR:-/var/tmp/bale-bench}/images"
MIB="${BENCH_IMAGES_MIB:-1024}"
RUNS="${BENCH_RUNS:-3}"
IMAGES=4
LAYERS=8 # per image, plus one base layer shared by all images
mkdir -p "$B"

if [ -z "${BALE:-}" ]; then
    scripts/build-release.sh x86_64 >&2
    BALE="$ROOT/out/release/bale-x86_64"
fi
say "benchmarking $BALE on $(nproc) cores; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- the images: one OCI layout, made by hand ------------------------------------------------
LAYOUT="$B/src-$MIB"
blob() { # file -> prints "digest size", moves the file into the layout
    local f=$1 d s
    d=$(sha256sum "$f" | cut -d' ' -f1); s=$(stat -c %s "$f")
    mv "$f" "$LAYOUT/blobs/sha256/$d"
    echo "sha256:$d $s"
}
json_blob() { # text -> "digest size"
    local t; t=$(mktemp "$B/tmp.XXXXXX")
    printf '%s' "$1" > "$t"
    blob "$t"
}
# A compressible layer: real files (libraries, docs) from this machine, as a tar of about
# $2 MiB; a random layer: one file of $2 MiB from /dev/urandom.
make_layer() { # kind mib seed -> path of a tar
    local kind=$1 mib=$2 seed=$3 dir t
    dir=$(mktemp -d "$B/layer.XXXXXX"); t="$dir.tar"
    if [ "$kind" = random ]; then
        mkdir -p "$dir/data"; head -c "$((mib << 20))" /dev/urandom > "$dir/data/blob-$seed.bin"
    else
        mkdir -p "$dir/files"
        # Different slices of /usr for different layers, until the size is reached.
        find /usr/lib /usr/share -xdev -type f -size -4M 2>/dev/null | sort \
            | awk -v s="$seed" 'NR % 7 == s % 7 && NR > s * 13' \
            | head -c 10000000 \
            | tar -cf - -T - 2>/dev/null | head -c "$((mib << 20))" > "$dir/raw.tar" || true
        # A truncated tar is fine as content: the layer is the tar of the directory below.
        mv "$dir/raw.tar" "$dir/files/raw-$seed.tar"
    fi
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$t" -C "$dir" .
    rm -rf "$dir"
    echo "$t"
}

if [ ! -f "$LAYOUT/.complete" ]; then
    say "generating $IMAGES images x $((LAYERS + 1)) layers, about $MIB MiB, in $LAYOUT"
    rm -rf "$LAYOUT"; mkdir -p "$LAYOUT/blobs/sha256"
    per=$((MIB / (IMAGES * LAYERS + 1)))
    [ "$per" -ge 1 ] || die "BENCH_IMAGES_MIB too small"
    read -r shared_d shared_s < <(blob "$(make_layer compressible "$per" 0)")
    manifests=()
    for i in $(seq 1 "$IMAGES"); do
        layers="{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$shared_d\",\"size\":$shared_s}"
        diffs="\"$shared_d\""
        for l in $(seq 1 "$LAYERS"); do
            kind=compressible; [ $((l % 2)) = 0 ] && kind=random
            read -r d s < <(blob "$(make_layer "$kind" "$per" $((i * 100 + l)))")
            layers="$layers,{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$d\",\"size\":$s}"
            diffs="$diffs,\"$d\""
        done
        read -r cd cs < <(json_blob "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diffs]}}")
        read -r md ms < <(json_blob "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$cd\",\"size\":$cs},\"layers\":[$layers]}")
        manifests+=("{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$md\",\"size\":$ms,\"annotations\":{\"org.opencontainers.image.ref.name\":\"bench.example/img$i:1\"}}")
    done
    printf '{"schemaVersion":2,"manifests":[%s]}' "$(IFS=,; echo "${manifests[*]}")" > "$LAYOUT/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' > "$LAYOUT/oci-layout"
    touch "$LAYOUT/.complete"
fi
bytes=$(du -sb "$LAYOUT/blobs" | cut -f1)
say "image set: $IMAGES images, $(find "$LAYOUT/blobs" -type f | wc -l) blobs, $(echo "scale=2; $bytes/1048576" | bc) MiB"

# ---- build contexts ----------------------------------------------------------------------------
CTX="$B/ctx-$MIB"; APP="$B/app-$MIB"
rm -rf "$CTX" "$APP"; mkdir -p "$CTX/images" "$CTX/manifests" "$APP/manifests"
ln -s "$LAYOUT" "$CTX/images/bench"
printf 'FROM scratch\nCOPY manifests/ manifests/\n' > "$CTX/Kubefile"
for i in $(seq 1 "$IMAGES"); do echo "bench.example/img$i:1"; done > "$CTX/manifests/imageList"
printf 'FROM base.bale\nCOPY manifests/ manifests/app/\nCMD kubectl apply -f manifests/app/\n' > "$APP/Kubefile"
cp "$CTX/manifests/imageList" "$APP/manifests/imageList"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {a: "1"}\n' > "$APP/manifests/app.yaml"

# ---- results (timing: now, median_time, ratio, check in scripts/lib.sh) ------------------------
RESULTS="$B/results.txt"; : > "$RESULTS"
row() { printf '%-50s %12s %12s %8s %s\n' "$@" | tee -a "$RESULTS"; }

# ---- 1. images into a bundle vs skopeo copy + tar | zstd -T0 -------------------------------------
OUT="$B/out"; mkdir -p "$OUT"
fresh_bale() { rm -rf "$OUT/cache" "$OUT/base.bale"; sync; }
bale_build() { "$BALE" build -t base:1 --offline --image-cache "$OUT/cache" -o "$OUT/base.bale" "$CTX"; }
fresh_ref() { rm -rf "$OUT/ref" "$OUT/ref.tar.zst"; sync; }
reference() {
    for i in $(seq 1 "$IMAGES"); do
        skopeo copy -q "oci:$LAYOUT:bench.example/img$i:1" "oci:$OUT/ref:bench.example/img$i:1" || return 1
    done
    tar -cf - -C "$OUT/ref" . | zstd -T0 -3 -q -o "$OUT/ref.tar.zst"
}
SETUP=fresh_bale t_bale=$(median_time bale_build)
SETUP=fresh_ref t_ref=$(median_time reference)
stub=$(stat -c %s "$BALE")
sz_bale=$(( $(stat -c %s "$OUT/base.bale") - stub )); sz_ref=$(stat -c %s "$OUT/ref.tar.zst")
row "images: bale build / skopeo copy + tar|zstd -T0" "${t_bale}s" "${t_ref}s" "$(ratio "$t_ref" "$t_bale")x" \
    "target >= 1.0x: $(check "$t_ref / $t_bale" '>=' 1.0)"
row "images: size payload / tar.zst" "$sz_bale" "$sz_ref" "$(ratio "$sz_bale" "$sz_ref")" ""
"$BALE" verify "$OUT/base.bale" >/dev/null || die "the bundle does not verify"

# ---- 2. an app FROM the base: the base's layers cost no compression ------------------------------
cp "$OUT/base.bale" "$APP/base.bale"
fresh_app() { rm -f "$OUT/app.bale"; sync; }
fresh_cp() { rm -f "$OUT/cp.bale"; sync; }
app_build() { "$BALE" build -t app:1 --offline --image-cache "$OUT/cache" -o "$OUT/app.bale" "$APP"; }
SETUP=fresh_app t_app=$(median_time app_build)
# A bundle is flushed to disk before it is renamed into place; the floor does the same.
SETUP=fresh_cp t_cp=$(median_time sh -c "cp '$APP/base.bale' '$OUT/cp.bale' && sync '$OUT/cp.bale'")
"$BALE" verify "$OUT/app.bale" >/dev/null || die "the app bundle does not verify"
row "FROM base: base build / app build" "${t_bale}s" "${t_app}s" "$(ratio "$t_bale" "$t_app")x" \
    "(the app copies the base's frames)"
row "FROM base: cp+sync of the base / app build" "${t_cp}s" "${t_app}s" "$(ratio "$t_cp" "$t_app")x" \
    "(1.0 = as fast as copying the file)"
say "results in $RESULTS"
