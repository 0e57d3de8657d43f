#!/usr/bin/env bash
# A realistic container image set of a chosen size, for the scale benchmark (issue 18). Run with
# --help for what it makes; the work is done by scripts/scale_set.py.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() {
    cat <<'EOF'
scripts/scale-set.sh GB [--seed N] [--out DIR] [--jobs N]

Makes, offline and deterministically from the seed, an image set of about GB gigabytes
(GB = 10^9 bytes, decimal; fractions such as 0.5 are fine) and prints its directory on the
last line of stdout. The same GB and seed give byte-identical output.

What is in DIR:
  images/scale/   one OCI image layout: about 300 images (fewer below 1 GB), each named in
                  index.json by its full original name (docker.io/library/nginx:1.27.3,
                  quay.io/prometheus/node-exporter:v1.8.2, registry.k8s.io/..., ghcr.io/acme/...,
                  harbor.corp.example/team-07/svc-123:1.4.2, ...). Layers are gzip-compressed ustar
                  archives with real files, shared the way real images share them: six distro-like
                  base layers under most images, twenty runtime layers shared by a few, and mostly
                  unique application layers (1-8 layers per image); content is a mix of text, JSON,
                  ELF-like code and random (incompressible) bytes. One image
                  (harbor.corp.example/ml/model-server:2.3.0) has one layer of 30% of the set, and
                  one name is a multi-arch index (linux/amd64 + linux/arm64).
  imageList       every image name, one a line
  manifests/      Deployments, a DaemonSet, a CronJob and a StatefulSet using every image
  Kubefile        FROM scratch, the manifests, and $RUNTIME/bin + $RUNTIME/cni: copy (or cp -al)
                  examples/appliance/runtime in beside it before building
  set.json        parameters, image/layer counts, total bytes, the largest layer, bytes of the
                  shared and the unique layers

Options:
  --seed N     the seed (default 1)
  --out DIR    where to write it (default: the cache, below); DIR must not exist yet
  --jobs N     worker processes (default: every core); the output does not depend on it

Cache: without --out the set goes to
  ${BALE_SCALE_CACHE:-/var/cache/bale-scale}/set-<GB>g-s<seed>-<first 12 hex of sha256 of scale_set.py>
and a second run with the same parameters only prints that path. Sets are written to DIR.tmp and
renamed when complete, so an interrupted run never looks finished (the next run starts over).

Time and memory: both cores, about 30 s per GB on a busy 2-core machine; peak RSS about 30 MiB per
process whatever the size (every layer is streamed to its blob).

Examples:
  scripts/scale-set.sh 2                    # the CI set, cached
  scripts/scale-set.sh 0.5 --out /tmp/set   # a quick one for development
EOF
}

GB_ARG='' SEED=1 OUT='' JOBS=''
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --seed) SEED=${2:?--seed needs a number}; shift 2 ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --jobs) JOBS=${2:?--jobs needs a number}; shift 2 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$GB_ARG" ] || die "one size only (see --help)"; GB_ARG=$1; shift ;;
    esac
done
[ -n "$GB_ARG" ] || { usage >&2; exit 2; }
[[ "$GB_ARG" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "GB must be a number such as 2 or 0.5, not '$GB_ARG'"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "--seed must be a whole number, not '$SEED'"
command -v python3 >/dev/null || need_apt python3

PY="$ROOT/scripts/scale_set.py"
HASH=$(sha256sum "$PY" | cut -c1-12)
if [ -z "$OUT" ]; then
    OUT="${BALE_SCALE_CACHE:-/var/cache/bale-scale}/set-${GB_ARG}g-s${SEED}-${HASH}"
    if [ -f "$OUT/set.json" ]; then
        echo "$OUT"
        exit 0
    fi
fi
[ ! -e "$OUT" ] || die "$OUT exists already (remove it, or leave out --out to use the cache)"
mkdir -p "$(dirname "$OUT")"
rm -rf "$OUT.tmp"
say "generating a ${GB_ARG} GB image set (seed $SEED) in $OUT"
python3 "$PY" "$GB_ARG" --seed "$SEED" --out "$OUT.tmp" --script-hash "$HASH" ${JOBS:+--jobs "$JOBS"} \
    || { rm -rf "$OUT.tmp"; die "scale_set.py failed"; }
mv "$OUT.tmp" "$OUT"
echo "$OUT"
