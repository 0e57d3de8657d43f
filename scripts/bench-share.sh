#!/usr/bin/env bash
# Push and pull of a whole bundle through a registry: `bale push` / `bale pull` of a bundle
# against `skopeo copy` of the same bytes as a one-layer OCI image (oci: layout -> docker://
# for the push, docker:// -> oci: layout for the pull), both to the same loopback
# docker-registry (distribution 2.8, filesystem storage), measured in the same run.
# Printed: seconds of each, and skopeo / bale (above 1 means bale is faster; target >= 1.0x).
#
#   scripts/bench-share.sh                  a bundle of 1 GiB of random bytes (incompressible,
#                                           so the sizes are honest)
#   BENCH_SHARE_MIB=512 scripts/bench-share.sh
#   BALE=/path/to/bale                      a given build (default: the static release)
#
# Each push goes to a registry with empty storage (restarted untimed before each run); each
# pull starts with no output. The pull of bale includes what skopeo's does not: the check of
# every byte against the bundle's own digest chain and an fsync before the rename.
# Data lives in $BALE_BENCH_DIR/share (default /var/tmp/bale-bench/share), reused between runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

need_apt bc coreutils docker-registry skopeo
B="${BALE_BENCH_DIR:-/var/tmp/bale-bench}/share"
MIB="${BENCH_SHARE_MIB:-1024}"
RUNS="${BENCH_RUNS:-3}"
PORT="${BENCH_SHARE_PORT:-5098}"
HOST="127.0.0.1:$PORT"
[ "$MIB" -ge 256 ] || die "BENCH_SHARE_MIB must be at least 256 (a smaller bundle measures start-up)"
mkdir -p "$B"

if [ -z "${BALE:-}" ]; then
    scripts/build-release.sh x86_64 >&2
    BALE="$ROOT/out/release/bale-x86_64"
fi

# ---- a bundle of MIB MiB of random bytes, and the same file as a one-layer OCI image ------
BUNDLE="$B/share-$MIB.bale"
L="$B/layout-$MIB"
if [ ! -f "$L/.complete" ]; then
    say "a bundle with $MIB MiB of random bytes, and the same file as an OCI layout"
    rm -rf "$B/tree" "$L" "$BUNDLE"; mkdir -p "$B/tree" "$L/blobs/sha256"
    head -c "$((MIB << 20))" /dev/urandom >"$B/tree/random.bin"
    "$BALE" build "$B/tree" -o "$BUNDLE" --name sharebench --version 1 >&2
    rm -rf "$B/tree"
    d=$(sha256sum "$BUNDLE" | cut -d' ' -f1); n=$(stat -c %s "$BUNDLE")
    # The layer is the bundle's bytes: a hard link, not a second GiB on disk.
    ln "$BUNDLE" "$L/blobs/sha256/$d" 2>/dev/null || cp "$BUNDLE" "$L/blobs/sha256/$d"
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}' "$d" >"$L/config"
    cd_=$(sha256sum "$L/config" | cut -d' ' -f1); cn=$(stat -c %s "$L/config")
    mv "$L/config" "$L/blobs/sha256/$cd_"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$cd_" "$cn" "$d" "$n" >"$L/manifest"
    md=$(sha256sum "$L/manifest" | cut -d' ' -f1); mn=$(stat -c %s "$L/manifest")
    mv "$L/manifest" "$L/blobs/sha256/$md"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' \
        "$md" "$mn" >"$L/index.json"
    touch "$L/.complete"
fi
SIZE=$(stat -c %s "$BUNDLE")

# ---- the registry -----------------------------------------------------------------------------
# The pid lives in a file: the timed runs start registries inside $(...) subshells.
PIDFILE="$B/registry.pid"
stop_registry() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    # A registry started in a subshell is not this shell's child: wait for it to be gone.
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$PIDFILE"
}
trap stop_registry EXIT
start_registry() { # wipe: empty storage first
    stop_registry
    [ "${1:-}" = wipe ] && rm -rf "$B/registry-data"
    cat >"$B/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $B/registry-data
http:
  addr: $HOST
EOF
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "$HOST is taken by another program; set BENCH_SHARE_PORT"
    docker-registry serve "$B/registry.yml" >"$B/registry.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$PIDFILE"
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || die "docker-registry did not start: see $B/registry.log"
        sleep 0.05
    done
    die "docker-registry did not listen on $HOST"
}

# ---- results (timing: now, median_time, ratio, check in scripts/lib.sh) -------------------------
RESULTS="$B/results.txt"; : >"$RESULTS"
row() { printf '%-52s %10s %10s %8s %s\n' "$@" | tee -a "$RESULTS"; }

say "push and pull of $((SIZE >> 20)) MiB to docker-registry on $HOST; $(nproc) cores, load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$BUNDLE" >/dev/null # both read the same bytes from a warm page cache

fresh() { start_registry wipe; }
SETUP=fresh t_bale_push=$(median_time "$BALE" push "$BUNDLE" "$HOST/bench/bundle:1")
SETUP=fresh t_skopeo_push=$(median_time skopeo copy -q --dest-tls-verify=false "oci:$L:bench" "docker://$HOST/bench/image:1")
row "push (s): bale push | skopeo copy oci: -> docker://" "$t_bale_push" "$t_skopeo_push" \
    "$(ratio "$t_skopeo_push" "$t_bale_push")x" "target >= 1.0x: $(check "$t_skopeo_push / $t_bale_push" '>=' 1.0)"

# Both in the registry for the pulls.
start_registry wipe
"$BALE" push "$BUNDLE" "$HOST/bench/bundle:1" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$L:bench" "docker://$HOST/bench/image:1" >/dev/null
OUT="$B/pulled"
clean_out() { rm -rf "$OUT"; mkdir -p "$OUT"; sync; }
SETUP=clean_out t_bale_pull=$(median_time "$BALE" pull "$HOST/bench/bundle:1" -o "$OUT/app.bale")
cmp -s "$BUNDLE" "$OUT/app.bale" || die "bale pull gave other bytes"
SETUP=clean_out t_skopeo_pull=$(median_time skopeo copy -q --src-tls-verify=false "docker://$HOST/bench/image:1" "oci:$OUT/layout:bench")
row "pull (s): bale pull | skopeo copy docker:// -> oci:" "$t_bale_pull" "$t_skopeo_pull" \
    "$(ratio "$t_skopeo_pull" "$t_bale_pull")x" "target >= 1.0x: $(check "$t_skopeo_pull / $t_bale_pull" '>=' 1.0)"
rm -rf "$OUT"
stop_registry
say "results in $RESULTS"
