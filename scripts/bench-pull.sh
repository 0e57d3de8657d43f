#!/usr/bin/env bash
# Three nodes pulling all of a bundle's images at once, each from the registry bale runs on that
# node (what `install` sets up), against all three pulling the same images from one node's
# registry (a central registry, the usual offline set-up), measured in the same run on the
# nspawn test nodes of scripts/testbed.sh.
#
#   scripts/bench-pull.sh
#   BENCH_PULL_MIB=1024 scripts/bench-pull.sh     size of the image (4 random layers; default 512)
#   BALE=/path/to/bale                            a given build (default: the static release)
#
# The bundle is the example appliance (containerd, runc, CNI, two small images) plus one image
# of BENCH_PULL_MIB MiB. The client is containerd's own `ctr content fetch` on each node (every
# blob of the image, digests checked; no unpack, the layers are random bytes), started on the
# three nodes together; the time is until the last one finishes. Between runs the image is
# removed and its content collected, so each run fetches every byte.
# Printed: seconds for all three nodes, MiB/s per node, and central / local.
# Read with care: the test nodes share this machine's cores and their bridge has no bandwidth
# limit, so the central registry's one uplink is not the bottleneck it is on a real network,
# and the nodes' containerd (hashing and writing every blob) bounds both cases alike.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || die "run as root (the test nodes need it)"
need_apt bc jq

B="${BALE_BENCH_DIR:-/var/tmp/bale-bench}/pull"
MIB="${BENCH_PULL_MIB:-512}"
REF=docker.io/bench/pull:1
mkdir -p "$B"
if [ -z "${BALE:-}" ]; then
    scripts/build-release.sh x86_64 >&2
    BALE="$ROOT/out/release/bale-x86_64"
fi

say "the example appliance (the base of the bench bundle)"
examples/appliance/make-images.sh >&2
examples/appliance/fetch-runtime.sh >&2
"$BALE" build -f examples/appliance/Kubefile -t appliance:0.1.0 --offline -o "$B/appliance.bale" examples/appliance >&2

CTX="$B/ctx-$MIB"
if [ ! -f "$CTX/.complete" ]; then
    say "an image of $MIB MiB in 4 random layers, as an OCI layout in $CTX"
    rm -rf "$CTX"; mkdir -p "$CTX/images/pull/blobs/sha256"
    L="$CTX/images/pull"
    layers="" diff_ids=""
    for _ in 1 2 3 4; do
        head -c "$((MIB * 1024 * 1024 / 4))" /dev/urandom >"$L/layer"
        d=$(sha256sum "$L/layer" | cut -d' ' -f1); n=$(stat -c %s "$L/layer")
        mv "$L/layer" "$L/blobs/sha256/$d"
        layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$d\",\"size\":$n}"
        diff_ids="$diff_ids${diff_ids:+,}\"sha256:$d\""
    done
    printf '{"architecture":"%s","os":"linux","rootfs":{"type":"layers","diff_ids":[%s]},"config":{}}' \
        "$(dpkg --print-architecture)" "$diff_ids" >"$L/config"
    cfg_d=$(sha256sum "$L/config" | cut -d' ' -f1); cfg_n=$(stat -c %s "$L/config")
    mv "$L/config" "$L/blobs/sha256/$cfg_d"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
        "$cfg_d" "$cfg_n" "$layers" >"$L/manifest"
    man_d=$(sha256sum "$L/manifest" | cut -d' ' -f1); man_n=$(stat -c %s "$L/manifest")
    mv "$L/manifest" "$L/blobs/sha256/$man_d"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
        "$man_d" "$man_n" "$REF" >"$L/index.json"
    printf '%s\n' "$REF" >"$CTX/imageList"
    touch "$CTX/.complete"
fi
printf 'FROM %s\n' "$B/appliance.bale" >"$CTX/Kubefile"
BUNDLE="$B/pull-$MIB.bale"
say "bale build -> $BUNDLE"
"$BALE" build -f "$CTX/Kubefile" -t pullbench:1 --offline --image-cache "$B/cache" -o "$BUNDLE" "$CTX" >&2
BYTES=$(du -sb "$CTX/images/pull/blobs" | cut -f1)

# The test nodes are one per machine: wait for a test run that is using them.
mkdir -p /var/lib/bale-testbed
exec 9>/var/lib/bale-testbed/.test-lock
flock 9
TB="$ROOT/scripts/testbed.sh"
trap '"$TB" down >/dev/null 2>&1 || true' EXIT
"$TB" down >/dev/null 2>&1 || true
"$TB" up 3 >/dev/null
KEY=$("$TB" key)
KH=/var/lib/bale-testbed/known_hosts
NODES=(n1 n2 n3)
say "install on 3 nodes"
t0=$(date +%s.%N)
"$BUNDLE" install --masters 10.77.0.11 --nodes 10.77.0.12,10.77.0.13 --key "$KEY" --known-hosts "$KH" >"$B/install.log" 2>&1 \
    || die "the install failed: see $B/install.log"
say "installed in $(echo "$(date +%s.%N) - $t0" | bc) s"

# A hosts dir on every node that sends docker.io to n1's registry: the central case.
for n in "${NODES[@]}"; do
    "$TB" ssh "$n" 'mkdir -p /root/central/docker.io && cat > /root/central/docker.io/hosts.toml' <<'EOF'
server = "http://10.77.0.11:5050"
[host."http://10.77.0.11:5050"]
  capabilities = ["pull", "resolve"]
EOF
done

# fetch_all HOSTS_DIR: every node fetches the image at once; prints the seconds until all are done
fetch_all() {
    local dir=$1 n pids=() t0 t1
    for n in "${NODES[@]}"; do
        "$TB" ssh "$n" "ctr -n bench images rm --sync $REF >/dev/null 2>&1; ctr -n bench content ls -q | xargs -r ctr -n bench content rm >/dev/null 2>&1; true"
    done
    t0=$(date +%s.%N)
    for n in "${NODES[@]}"; do
        "$TB" ssh "$n" "ctr -n bench content fetch --hosts-dir $dir $REF >/dev/null" &
        pids+=("$!")
    done
    for p in "${pids[@]}"; do wait "$p" || die "a fetch with hosts dir $dir failed"; done
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

RESULTS="$B/results.txt"; : >"$RESULTS"
row() { printf '%-52s %10s %10s %8s\n' "$@" | tee -a "$RESULTS"; }
say "3 nodes fetch $REF ($((BYTES >> 20)) MiB) at once; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
fetch_all /etc/containerd/certs.d >/dev/null # warm the page caches of both cases
fetch_all /root/central >/dev/null
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
loc=$(for _ in 1 2 3; do fetch_all /etc/containerd/certs.d; done | median)
cen=$(for _ in 1 2 3; do fetch_all /root/central; done | median)
rate() { echo "scale=0; $BYTES / 1048576 / $1" | bc -l; }
row "3 nodes fetching all images (s): own node | n1 only" "$loc" "$cen" "$(echo "scale=2; $cen / $loc" | bc -l)x"
row "  MiB/s per node: own node | n1 only" "$(rate "$loc")" "$(rate "$cen")" ""
"$TB" guard-counter | grep -qx 0 || die "the nodes sent traffic off the test network"
say "results in $RESULTS"
