#!/usr/bin/env bash
# Registry blob throughput: `bale registry serve` sending one large layer to a loopback client
# (curl -o /dev/null; scripts/http-drain.py, which only drains the socket, copying each byte
# into one buffer; and the same client with SPLICE=1, which moves the bytes into /dev/null
# without copying them), against `cat blob > /dev/null` of the same bytes, both from a warm page
# cache, measured in the same run; and the loopback ceiling (a bare kernel sendfile to the same
# clients). Target: the registry at >= 80% of cat.
#
#   scripts/bench-registry.sh                  a 1 GiB layer
#   BENCH_REGISTRY_MIB=512 scripts/bench-registry.sh
#
# Data lives in $BALE_BENCH_DIR/registry (default /var/tmp/bale-bench/registry), reused between
# runs. BALE=/path/to/bale benchmarks a given build instead of building a static one.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

need_apt curl bc coreutils time python3
B="${BALE_BENCH_DIR:-/var/tmp/bale-bench}/registry"
MIB="${BENCH_REGISTRY_MIB:-1024}"
RUNS="${BENCH_RUNS:-5}"
PORT="${BENCH_REGISTRY_PORT:-5099}"
[ "$MIB" -ge 512 ] || die "BENCH_REGISTRY_MIB must be at least 512 (a smaller blob measures start-up, not throughput)"
mkdir -p "$B"

if [ -z "${BALE:-}" ]; then
    scripts/build-release.sh x86_64 >&2
    BALE="$ROOT/out/release/bale-x86_64"
fi

# ---- an image with one large layer, as an OCI layout, and a bundle carrying it --------------
CTX="$B/ctx-$MIB"
BUNDLE="$B/big-$MIB.bale"
if [ ! -f "$CTX/.complete" ]; then
    say "making a $MIB MiB layer (random bytes) in $CTX"
    rm -rf "$CTX"; mkdir -p "$CTX/images/big/blobs/sha256"
    L="$CTX/images/big"
    head -c "$((MIB << 20))" /dev/urandom >"$L/layer"
    layer_d=$(sha256sum "$L/layer" | cut -d' ' -f1); layer_n=$(stat -c %s "$L/layer")
    mv "$L/layer" "$L/blobs/sha256/$layer_d"
    arch=$(dpkg --print-architecture)
    printf '{"architecture":"%s","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}' \
        "$arch" "$layer_d" >"$L/config"
    cfg_d=$(sha256sum "$L/config" | cut -d' ' -f1); cfg_n=$(stat -c %s "$L/config")
    mv "$L/config" "$L/blobs/sha256/$cfg_d"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$cfg_d" "$cfg_n" "$layer_d" "$layer_n" >"$L/manifest"
    man_d=$(sha256sum "$L/manifest" | cut -d' ' -f1); man_n=$(stat -c %s "$L/manifest")
    mv "$L/manifest" "$L/blobs/sha256/$man_d"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"docker.io/bench/big:1"}}]}' \
        "$man_d" "$man_n" >"$L/index.json"
    printf 'docker.io/bench/big:1\n' >"$CTX/imageList"
    printf 'FROM scratch\n' >"$CTX/Kubefile"
    echo "$layer_d" >"$CTX/.layer"
    rm -f "$BUNDLE"
    touch "$CTX/.complete"
fi
LAYER_D=$(cat "$CTX/.layer")
LAYER="$CTX/images/big/blobs/sha256/$LAYER_D"
BYTES=$(stat -c %s "$LAYER")
if [ ! -f "$BUNDLE" ]; then
    say "bale build -> $BUNDLE"
    "$BALE" build -f "$CTX/Kubefile" -t bench:1 --offline --image-cache "$B/cache" -o "$BUNDLE.tmp" "$CTX" >&2
    mv "$BUNDLE.tmp" "$BUNDLE"
fi

# ---- the registry ------------------------------------------------------------------------
"$BALE" registry serve --bundle "$BUNDLE" --listen "127.0.0.1:$PORT" 2>"$B/serve.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
URL="http://127.0.0.1:$PORT/v2/bench/big/blobs/sha256:$LAYER_D"
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/v2/" && break; sleep 0.1; done
curl -fs -o /dev/null "http://127.0.0.1:$PORT/v2/" || die "the registry did not start: $(cat "$B/serve.log")"
got=$(curl -fsS "$URL" | sha256sum | cut -d' ' -f1)
[ "$got" = "$LAYER_D" ] || die "the registry sent other bytes than the layer (sha256 $got)"

# ---- measure: warm cache for both (each read once before timing) ----------------------------
cat "$LAYER" >/dev/null
curl -fs -o /dev/null "$URL"
# Wall time of each run (the ratio), and CPU seconds (user + system), which the load of other
# processes on the machine disturbs less: the server's from /proc, cat's and curl's from time(1).
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
TIMES="$B/times"
timed() { # label command...: appends "label wall cpu" to $TIMES
    local label=$1; shift
    /usr/bin/time -f "$label %e %U %S" -a -o "$TIMES" "$@" >/dev/null
}
: >"$TIMES"
server_cpu() { awk '{print ($14 + $15) / 100}' "/proc/$SERVER/stat"; }
for _ in $(seq 1 "$RUNS"); do timed cat cat "$LAYER"; done
s0=$(server_cpu)
for _ in $(seq 1 "$RUNS"); do timed curl curl -fs -o /dev/null "$URL"; done
s1=$(server_cpu)
# curl spends more CPU per byte than the server does: also time a client that only drains the
# socket (scripts/http-drain.py), and the same client against a bare kernel sendfile of the
# file, the most any server can give it over loopback here. Runs interleaved, so that a change
# in the machine's load touches all three alike.
DRAIN="$ROOT/scripts/http-drain.py"
python3 "$DRAIN" get 127.0.0.1 "$PORT" "${URL#http://127.0.0.1:"$PORT"}" >/dev/null
for _ in $(seq 1 "$RUNS"); do
    timed cat2 cat "$LAYER"
    {
        echo "drain $(python3 "$DRAIN" get 127.0.0.1 "$PORT" "${URL#http://127.0.0.1:"$PORT"}")"
        echo "ceiling $(python3 "$DRAIN" ceiling "$LAYER")"
        echo "splice $(SPLICE=1 python3 "$DRAIN" get 127.0.0.1 "$PORT" "${URL#http://127.0.0.1:"$PORT"}")"
        echo "splice_ceiling $(SPLICE=1 python3 "$DRAIN" ceiling "$LAYER")"
    } >>"$TIMES"
done
wall() { awk -v l="$1" '$1 == l {print $2}' "$TIMES" | median; }
cpu() { awk -v l="$1" '$1 == l {print $3 + $4}' "$TIMES" | median; }
mibps() { echo "scale=0; $BYTES / 1048576 / $1" | bc -l; }
# row LABEL REF_NAME REF_SECONDS NAME SECONDS NOTE: the second as a percentage of the first's
# speed; a NOTE of "target" prints the verdict against 80% of cat.
row() {
    local pct note=$6
    pct=$(echo "scale=1; 100 * $3 / $5" | bc -l)
    if [ "$note" = target ]; then
        note="target >= 80% of cat: $(if [ "$(echo "$pct >= 80" | bc -l)" = 1 ]; then echo PASS; else echo MISS; fi)"
    fi
    printf '%-52s %10s %10s %8s %s\n' "$1" "$2 $(mibps "$3")" "$4 $(mibps "$5")" "$pct%" "$note"
}
srv_cpu=$(echo "scale=2; ($s1 - $s0) / $RUNS" | bc -l)
say "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (the wall-time ratio needs an idle machine)"
row "registry blob throughput ($MIB MiB, loopback, MiB/s)" cat "$(wall cat)" bale "$(wall curl)" target
printf '%-52s %10s %10s %8s\n' "CPU seconds per blob: cat | bale server, curl client" \
    "$(cpu cat)" "$srv_cpu" "$(cpu curl)"
cat2_s=$(wall cat2)
row "registry blob throughput, draining client (MiB/s)" cat "$cat2_s" bale "$(wall drain)" target
row "loopback ceiling: kernel sendfile, same client" cat "$cat2_s" tcp "$(wall ceiling)" \
    "(no server can beat this here)"
row "registry / loopback ceiling, draining client" tcp "$(wall ceiling)" bale "$(wall drain)" \
    "(what the server itself costs)"
row "registry blob throughput, zero-copy client (MiB/s)" cat "$cat2_s" bale "$(wall splice)" target
row "registry / loopback ceiling, zero-copy client" tcp "$(wall splice_ceiling)" bale "$(wall splice)" \
    "(what the server itself costs)"
