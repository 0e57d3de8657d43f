#!/usr/bin/env bash
# Benchmarks of a Kubernetes install on the test nodes, from nodes that have nothing:
#
#   - `install` to every node Ready, for 1 master + 2 workers and for 3 masters + 1 worker, with
#     each phase's time (the installer's own "phase times" line), against the 90 s target and as
#     a ratio to the time kubeadm itself took (kube-init + kube-join: the floor bale adds to);
#   - the working set (memory cgroup usage minus inactive file pages) of a master and of a
#     worker after the install, read from the node's cgroup on this host;
#   - the base bundle's size, and the time of a cached build of its inputs and of the bundle.
#
#   scripts/bench-kubernetes.sh        BALE=/path/to/bale to use a given build
#
# Needs root; holds the machine-wide testbed lock for the whole run (a few minutes).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

[ "$(id -u)" -eq 0 ] || die "run as root (the test nodes need it)"
need_apt bc
if [ -z "${BALE:-}" ]; then
    scripts/build-release.sh x86_64 >&2
    BALE="$ROOT/out/release/bale-x86_64"
fi
TB=scripts/testbed.sh
OUT="${BALE_BENCH_DIR:-/var/tmp/bale-bench}/kubernetes"
mkdir -p "$OUT"
secs() { echo "$2 - $1" | bc -l | xargs printf '%.1f'; }

t0=$(now)
examples/kubernetes/build-inputs.sh >"$OUT/inputs.log" 2>&1 || die "build-inputs.sh failed: see $OUT/inputs.log"
t_inputs=$(secs "$t0" "$(now)")
t0=$(now)
"$BALE" build -f examples/kubernetes/Kubefile -t kubernetes:v1.36.3 --offline -o "$OUT/kubernetes.bale" examples/kubernetes >/dev/null
t_base=$(secs "$t0" "$(now)")
examples/appliance/make-images.sh >/dev/null 2>&1
ctx="$OUT/app"
rm -rf "$ctx"; mkdir -p "$ctx/rootfs"
cp -a examples/appliance/{images,charts,imageList,Kubefile.kubernetes} "$ctx/"
cp -a examples/appliance/rootfs/{etc,manifests} "$ctx/rootfs/"
cp "$OUT/kubernetes.bale" "$ctx/kubernetes.bale"
"$BALE" build -f "$ctx/Kubefile.kubernetes" -t appliance-k8s:0.1.0 --offline -o "$OUT/app.bale" "$ctx" >/dev/null
say "inputs (cached) ${t_inputs} s, base bundle ${t_base} s, $(stat -c %s "$OUT/kubernetes.bale" | awk '{printf "%.1f MiB", $1/1048576}')"

mkdir -p /var/lib/bale-testbed
exec 9>/var/lib/bale-testbed/.test-lock
flock 9
trap '$TB down >/dev/null 2>&1 || true' EXIT

# The working set of a node, from its memory cgroup on this host (cgroup v1 or v2).
working_set() {
    local f=/var/lib/bale-testbed/nodes/$1/cgroups cg usage inactive
    while read -r cg; do
        if [ -f "$cg/memory.usage_in_bytes" ]; then
            usage=$(cat "$cg/memory.usage_in_bytes")
            inactive=$(awk '$1=="total_inactive_file"{print $2}' "$cg/memory.stat")
        elif [ -f "$cg/memory.current" ]; then
            usage=$(cat "$cg/memory.current")
            inactive=$(awk '$1=="inactive_file"{print $2}' "$cg/memory.stat")
        else continue; fi
        echo "$usage $inactive" | awk '{printf "%.0f MiB", ($1-$2)/1048576}'
        return
    done <"$f"
    echo "?"
}

run() { # label count masters workers
    local label=$1 count=$2 masters=$3 workers=$4 t0 took ready log floor
    $TB down >/dev/null 2>&1 || true
    $TB up "$count" >/dev/null
    KEY=$($TB key)
    log="$OUT/install-$label.log"
    t0=$(now)
    "$OUT/app.bale" install --masters "$masters" --nodes "$workers" --key "$KEY" \
        --known-hosts /var/lib/bale-testbed/known_hosts >"$log" 2>&1 || die "install failed: see $log"
    took=$(secs "$t0" "$(now)")
    for _ in $(seq 1 240); do
        [ "$($TB ssh n1 "KUBECONFIG=/etc/kubernetes/admin.conf /usr/local/bin/kubectl get nodes --no-headers" | grep -c ' Ready ')" = "$count" ] && break
        sleep 0.5
    done
    ready=$(secs "$t0" "$(now)")
    floor=$(grep -o 'kube-init [0-9.]*s, kube-join [0-9.]*s' "$log" | tr -dc '0-9. ' | awk '{print $1 + $2}')
    printf '%-22s install %6s s, every node Ready %6s s (target 90 s); kubeadm itself %s s, ratio %.2f\n' \
        "$label" "$took" "$ready" "$floor" "$(echo "$ready / $floor" | bc -l)"
    grep 'phase times' "$log" | sed 's/^/    /'
    printf '    working set: master n1 %s, worker %s %s\n' "$(working_set n1)" "n$count" "$(working_set "n$count")"
}

run "1 master + 2 workers" 3 10.77.0.11 10.77.0.12,10.77.0.13
run "3 masters + 1 worker" 4 10.77.0.11,10.77.0.12,10.77.0.13 10.77.0.14
