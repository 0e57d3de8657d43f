#!/usr/bin/env bash
# The main job on the built-in examples, from a fresh machine:
#   1. build bale (static musl);
#   2. build the Kubernetes base bundle's inputs from source (examples/kubernetes/build-inputs.sh:
#      Kubernetes v1.36.3, etcd, CoreDNS, containerd, runc, CNI plugins, crictl and helm from
#      their Go modules; the first run compiles for about half an hour on 2 cores, later runs
#      reuse the cache in /var/cache/bale-kubernetes) and the base bundle;
#   3. build the appliance on it (FROM kubernetes.bale): a DaemonSet applied with kubectl and a
#      chart installed with helm, two images made from busybox-static;
#   4. bring up three test nodes (systemd-nspawn, scripts/testbed.sh);
#   5. ./appliance-k8s.bale install --masters n1 --nodes n2,n3;
#   6. show kubectl get nodes -o wide, the pods, and the app answering on every node;
#   7. tear the nodes down (KEEP_NODES=1 keeps them: `scripts/testbed.sh ssh n1` to look around,
#      `scripts/testbed.sh down` when done).
# Installs what it needs. Needs root (the test nodes).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

[ "$(id -u)" -eq 0 ] || die "the demo starts test nodes: run it as root"
need_apt busybox-static jq curl
scripts/build-release.sh x86_64
BALE="$ROOT/out/release/bale-x86_64"
BASE="$ROOT/out/kubernetes.bale"
APP="$ROOT/out/appliance-k8s.bale"

say "the Kubernetes base bundle's inputs, compiled from Go modules (cached after the first run)"
examples/kubernetes/build-inputs.sh
say "bale build -f examples/kubernetes/Kubefile -t kubernetes:v1.36.3 -> out/kubernetes.bale"
"$BALE" build -f examples/kubernetes/Kubefile -t kubernetes:v1.36.3 --offline -o "$BASE" examples/kubernetes

say "the appliance on it: two OCI images from busybox-static, a DaemonSet and a helm chart"
examples/appliance/make-images.sh
# FROM names the base relative to the build context.
cp "$BASE" examples/appliance/kubernetes.bale
say "bale build -f examples/appliance/Kubefile.kubernetes -t appliance-k8s:0.1.0 -> out/appliance-k8s.bale"
"$BALE" build -f examples/appliance/Kubefile.kubernetes -t appliance-k8s:0.1.0 --offline -o "$APP" examples/appliance
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

say "./appliance-k8s.bale install --masters $N1 --nodes $N2,$N3"
"$APP" install --masters "$N1" --nodes "$N2,$N3" --key "$KEY" --known-hosts "$KH"

kubectl_n1() { scripts/testbed.sh ssh n1 "KUBECONFIG=/etc/kubernetes/admin.conf /usr/local/bin/kubectl $*"; }
say "kubectl get nodes -o wide (on n1)"
for _ in $(seq 1 60); do
    [ "$(kubectl_n1 get nodes --no-headers | grep -c ' Ready ')" = 3 ] && break
    sleep 2
done
kubectl_n1 get nodes -o wide
kubectl_n1 version
say "kubectl get pods -A -o wide"
kubectl_n1 get pods -A -o wide
say "the app answers on every node: the DaemonSet (kubectl) on the workers' :8080, the helm release on every node's NodePort :30080"
for ip in $N2 $N3; do
    printf '%s:8080   ' "$ip"
    curl -fsS --max-time 5 --retry 30 --retry-delay 1 --retry-all-errors "http://$ip:8080/" | grep -o 'The example appliance is up.'
done
for ip in $N1 $N2 $N3; do
    printf '%s:30080  ' "$ip"
    curl -fsS --max-time 5 --retry 30 --retry-delay 1 --retry-all-errors "http://$ip:30080/" | grep -o 'The example appliance is up.'
done
say "nothing left the test network: guard counter $(scripts/testbed.sh guard-counter) packets"
