#!/usr/bin/env bash
# The main job on the built-in example appliance: build bale, make the appliance's two container
# images from Debian packages, build the appliance bundle from its Kubefile (tree, images,
# install steps), and use the one file the way a site would. Installs what it needs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

need_apt busybox-static jq
scripts/build-release.sh x86_64
BALE="$ROOT/out/release/bale-x86_64"
APP="$ROOT/out/appliance.bale"

say "examples/appliance/make-images.sh (two OCI images from busybox-static)"
examples/appliance/make-images.sh
say "bale build -f examples/appliance/Kubefile --list-images"
"$BALE" build -f examples/appliance/Kubefile -t appliance:0.1.0 --offline --list-images examples/appliance
say "bale build -f examples/appliance/Kubefile -t appliance:0.1.0 -> out/appliance.bale"
"$BALE" build -f examples/appliance/Kubefile -t appliance:0.1.0 --offline -o "$APP" examples/appliance
say "./appliance.bale"
"$APP"
say "./appliance.bale info"
"$APP" info
say "./appliance.bale list --long"
"$APP" list --long
say "./appliance.bale verify"
"$APP" verify
say "./appliance.bale extract --to out/appliance-root"
rm -rf out/appliance-root
"$APP" extract --to out/appliance-root
diff -r --exclude=registry examples/appliance/rootfs out/appliance-root
say "extracted tree matches examples/appliance/rootfs; images in out/appliance-root/registry:"
jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"]' out/appliance-root/registry/index.json
