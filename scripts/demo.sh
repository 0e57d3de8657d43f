#!/usr/bin/env bash
# The main job on the built-in example appliance, from a fresh machine:
#   1. build bale (static musl);
#   2. build the appliance bundle from its Kubefile: containerd, runc and the CNI plugins from
#      Debian packages, two container images made from busybox-static, a web app started by
#      the Kubefile's CMD lines and a hook;
#   3. bring up three test nodes (systemd-nspawn, scripts/testbed.sh);
#   4. ./appliance.bale install --masters n1 --nodes n2,n3;
#   5. show the app answering on every node, and `check`;
#   6. tear the nodes down (KEEP_NODES=1 keeps them: `scripts/testbed.sh ssh n1` to look around,
#      `scripts/testbed.sh down` when done).
# Installs what it needs. Needs root (the test nodes).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

[ "$(id -u)" -eq 0 ] || die "the demo starts test nodes: run it as root"
need_apt busybox-static jq curl
scripts/build-release.sh x86_64
BALE="$ROOT/out/release/bale-x86_64"
APP="$ROOT/out/appliance.bale"

say "the appliance's inputs: two OCI images from busybox-static, containerd/runc/CNI from Debian packages"
examples/appliance/make-images.sh
examples/appliance/fetch-runtime.sh
say "bale build -f examples/appliance/Kubefile --list-images"
"$BALE" build -f examples/appliance/Kubefile -t appliance:0.1.0 --offline --list-images examples/appliance
say "bale build -f examples/appliance/Kubefile -t appliance:0.1.0 -> out/appliance.bale"
"$BALE" build -f examples/appliance/Kubefile -t appliance:0.1.0 --offline -o "$APP" examples/appliance
"$APP" info
"$APP" verify

say "three test nodes (the first run builds their image: a few minutes)"
scripts/testbed.sh prepare
# The test nodes are one per machine: wait for a test run that is using them.
mkdir -p /var/lib/bale-testbed
exec 9>/var/lib/bale-testbed/.test-lock
flock 9
[ -n "${KEEP_NODES:-}" ] || trap 'say "tearing the test nodes down"; scripts/testbed.sh down >/dev/null 2>&1 || true' EXIT
scripts/testbed.sh down >/dev/null 2>&1 || true
scripts/testbed.sh up 3
KEY=$(scripts/testbed.sh key)
KH=/var/lib/bale-testbed/known_hosts
N1=10.77.0.11 N2=10.77.0.12 N3=10.77.0.13

say "./appliance.bale install --masters $N1 --nodes $N2,$N3"
"$APP" install --masters "$N1" --nodes "$N2,$N3" --key "$KEY" --known-hosts "$KH"

say "the app answers on every node"
for ip in $N1 $N2 $N3; do
    printf '%s:8080  ' "$ip"
    curl -fsS --max-time 5 --retry 10 --retry-delay 1 --retry-all-errors "http://$ip:8080/" | grep -o 'The example appliance is up.'
done
say "./appliance.bale check"
"$APP" check --masters "$N1" --nodes "$N2,$N3" --key "$KEY" --known-hosts "$KH"
say "nothing left the test network: guard counter $(scripts/testbed.sh guard-counter) packets"
