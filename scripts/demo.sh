#!/usr/bin/env bash
# The main job on the built-in example appliance: build bale, pack examples/appliance into one
# self-verifying executable, and use it the way a site would. Installs what it needs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

scripts/build-release.sh x86_64
BALE="$ROOT/out/release/bale-x86_64"
APP="$ROOT/out/appliance.bale"

say "bale build examples/appliance/rootfs -> out/appliance.bale"
"$BALE" build examples/appliance/rootfs -o "$APP" --name appliance --version 0.1.0
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
diff -r examples/appliance/rootfs out/appliance-root && say "extracted tree matches the source"
