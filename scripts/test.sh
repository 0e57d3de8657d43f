#!/usr/bin/env bash
# Runs every test of bale: formatting, lints (shellcheck on the scripts too), unit and
# integration tests, the static release builds for x86_64 and aarch64, and the aarch64 bundle
# under qemu-user. Installs what it needs. Every test runs here: one that cannot fails
# (BALE_REQUIRE_ALL=1) instead of skipping.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

# Real peers the tests drive: nftables and netns (lvscare), skopeo and containerd (registry),
# busybox-static (test images), docker-registry and apache2-utils (image pulls), podman (a
# mirror client that asks without the registry host), helm (charts), xz and bzip2 (Kubefile
# ADD of compressed archives), shellcheck (the scripts).
need_apt time diffutils zstd xz-utils bzip2 openssl bc jq curl nftables iproute2 skopeo containerd \
    busybox-static docker-registry apache2-utils podman shellcheck
need_release_toolchain
for c in clippy rustfmt; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done

# Each step says how far into the run it starts, so a slow first run shows where its time went.
step() { say "[$((SECONDS / 60))m$(printf %02d $((SECONDS % 60)))s] $*"; }

# A run from a clean clone builds everything once: incremental state would only take disk
# (several GiB) that the test nodes need.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# The test nodes share this machine's disk (each Kubernetes node holds about 2 GiB); say how
# much there is, so a run that fills it shows that first.
disk() { step "disk: $(df -h --output=avail / | tail -1 | tr -d ' ') free on / ($1)"; }
disk "at the start"

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "shellcheck"
# -x -P SCRIPTDIR: follow `. "$(dirname "$0")/lib.sh"` into the file beside each script.
shellcheck -x -P SCRIPTDIR scripts/*.sh examples/*/*.sh
# The test nodes' images are made while the release builds run: on a first run they are mostly
# downloads and the arm64 image's emulated package scripts, and each target's link-time
# optimisation uses one core. The QEMU VM image too (lvscare's IPVS test needs a real kernel), and
# the arm64 node image (qemu-user from bookworm-backports). All cached after the first run.
prepare_log="$(mktemp /tmp/bale-testbed-prepare.XXXXXX)"
step "test nodes' images, beside the release builds (scripts/testbed.sh prepare; output below when done)"
(scripts/testbed.sh prepare && scripts/testbed.sh prepare --vm --arch aarch64) >"$prepare_log" 2>&1 &
prepare_pid=$!
# A failed build must not leave a half-made image behind a running debootstrap: wait for it.
trap 'wait "$prepare_pid" 2>/dev/null || true; rm -f "$prepare_log"' EXIT
step "static release builds"
scripts/build-release.sh
step "waiting for the test nodes' images"
prepare_rc=0
wait "$prepare_pid" || prepare_rc=$?
cat "$prepare_log" >&2
rm -f "$prepare_log"
[ "$prepare_rc" -eq 0 ] || die "scripts/testbed.sh prepare failed (exit $prepare_rc; its output above)"
trap 'scripts/testbed.sh down >/dev/null 2>&1 || true' EXIT
step "the example appliance's inputs (amd64 + arm64 images from busybox-static, runtime from Debian packages)"
examples/appliance/make-images.sh
examples/appliance/fetch-runtime.sh
examples/appliance/fetch-runtime.sh --arch arm64
step "the Kubernetes base bundle's inputs, compiled from Go modules (cached outside the clone)"
examples/kubernetes/build-inputs.sh
# arm64's too, cross-built, for the mixed-architecture cluster test (cached the same way)
examples/kubernetes/build-inputs.sh --arch arm64 --out examples/kubernetes/arm64
step "kubeadm v1.20.2 for the v1beta2 rendering, from Debian's source package (cached outside the clone)"
kubeadm_v1beta2=$(scripts/kubeadm-v1beta2.sh | tail -n 1)
step "the 2 GB image set of the scale test (scripts/scale-set.sh: cached by its parameters)"
scale_set=$(scripts/scale-set.sh 2 | tail -n 1)
step "helm for the chart tests"
helm=$(need_helm)
step "Python clients for the SBOM and push/pull tests"
py=$(need_py_tools)
step "tests"
disk "before the tests"
trap 'disk "after the tests"; scripts/testbed.sh down >/dev/null 2>&1 || true' EXIT
# Every test must run here, not skip: cross-architecture, multi-node, real-helm and the rest.
BALE_REQUIRE_ALL=1 BALE_AARCH64_BIN="$ROOT/out/release/bale-aarch64" BALE_TEST_HELM="$helm" \
    BALE_TEST_PYTHON="$py" BALE_SCALE_SET="$scale_set" BALE_KUBEADM_V1BETA2="$kubeadm_v1beta2" \
    cargo test --workspace --locked
