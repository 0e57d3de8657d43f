#!/usr/bin/env bash
# Runs every test of bale: formatting, lints, unit and integration tests, the static release
# builds for x86_64 and aarch64, and the aarch64 bundle under qemu-user. Installs what it needs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

# Real peers the tests drive: nftables and netns (lvscare), skopeo and containerd (registry),
# busybox-static (test images), docker-registry and apache2-utils (image pulls), podman (a
# mirror client that asks without the registry host), helm (charts).
need_apt time diffutils zstd openssl bc jq nftables iproute2 skopeo containerd busybox-static \
    docker-registry apache2-utils podman
need_release_toolchain
for c in clippy rustfmt; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "static release builds"
scripts/build-release.sh
say "test nodes (scripts/testbed.sh prepare: cached after the first run)"
scripts/testbed.sh prepare
# The QEMU VM image too (lvscare's IPVS test needs a real kernel; cached after the first run).
scripts/testbed.sh prepare --vm
trap 'scripts/testbed.sh down >/dev/null 2>&1 || true' EXIT
say "the example appliance's inputs (images from busybox-static, runtime from Debian packages)"
examples/appliance/make-images.sh
examples/appliance/fetch-runtime.sh
say "helm for the chart tests"
helm=$(need_helm)
say "tests"
# Cross-architecture, multi-node and real-helm tests must run here, not skip.
BALE_REQUIRE_CROSS=1 BALE_AARCH64_BIN="$ROOT/out/release/bale-aarch64" BALE_REQUIRE_TESTBED=1 \
    BALE_TEST_HELM="$helm" BALE_REQUIRE_HELM=1 cargo test --workspace --locked
