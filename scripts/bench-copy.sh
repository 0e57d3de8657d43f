#!/usr/bin/env bash
# The self-copy of `bale install` (node-to-node fan-out) against one plain `scp` of the same
# file to one node, measured in the same run, on the nspawn test nodes of scripts/testbed.sh.
#
#   scripts/bench-copy.sh                 1, 3 and 6 nodes (6 only with room for six copies)
#   BENCH_COPY_NODES="1 3" scripts/bench-copy.sh
#   BENCH_COPY_MIB=1024                   size of the incompressible content (default 1 GiB)
#   BALE=/path/to/bale                    a given build (default: the static release build)
#
# The copy time is the upload phase of `bale install --json`: the longest `done` of the phase on
# any node (the phase starts on every node at once, after connect and preflight). The install
# goes on with its later phases afterwards (quick for this plain bundle); they are not counted.
# scp gets the same file, warm in the page cache as for bale, to the same kind of node.
# Printed: seconds and the ratio copy / scp (target for 3 nodes: <= 1.3x), and the bytes that
# left the installer (about one bundle, whatever the number of nodes).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || die "run as root (the test nodes need it)"
need_apt bc openssh-client jq

B="${BALE_BENCH_DIR:-/var/tmp/bale-bench}/copy"
MIB="${BENCH_COPY_MIB:-1024}"
mkdir -p "$B"
if [ -z "${BALE:-}" ]; then
    scripts/build-release.sh x86_64 >&2
    BALE="$ROOT/out/release/bale-x86_64"
fi
if [ ! -f "$B/tree-$MIB/.complete" ]; then
    say "generating $MIB MiB of incompressible content"
    rm -rf "$B/tree-$MIB"; mkdir -p "$B/tree-$MIB"
    head -c "$((MIB << 20))" /dev/urandom > "$B/tree-$MIB/noise.bin"
    touch "$B/tree-$MIB/.complete"
fi
BUNDLE="$B/copy-$MIB.bale"
rm -f "$BUNDLE"
"$BALE" build "$B/tree-$MIB" -o "$BUNDLE" --name copybench --version 1 >&2
SIZE=$(stat -c %s "$BUNDLE")
cat "$BUNDLE" > /dev/null

nodes_list="${BENCH_COPY_NODES:-1 3 6}"
free_kib=$(df -k --output=avail /var/lib | tail -1)
RESULTS="$B/results.txt"; : > "$RESULTS"
row() { printf '%-46s %10s %10s %8s %s\n' "$@" | tee -a "$RESULTS"; }
say "bundle $SIZE bytes; nodes: $nodes_list; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

one_size() { # nodes
    local n=$1
    local tb="$ROOT/scripts/testbed.sh"
    "$tb" down >/dev/null 2>&1 || true
    "$tb" up "$n" >/dev/null
    local key kh ips=() i
    key=$("$tb" key); kh=/var/lib/bale-testbed/known_hosts
    for i in $(seq 1 "$n"); do ips+=("10.77.0.$((10 + i))"); done
    # One scp of the same file to one node.
    local t0 t1 t_scp
    t0=$(now)
    scp -q -i "$key" -o UserKnownHostsFile="$kh" "$BUNDLE" "root@${ips[0]}:/root/scp.bale"
    t1=$(now); t_scp=$(echo "$t1 - $t0" | bc -l)
    "$tb" ssh n1 rm -f /root/scp.bale
    # The install's copy.
    local masters=${ips[0]} others
    others=$(IFS=,; echo "${ips[*]:1}")
    local args=(install --json --masters "$masters" --key "$key" --known-hosts "$kh")
    [ -n "$others" ] && args+=(--nodes "$others")
    local log="$B/install-$n.jsonl"
    "$BUNDLE" "${args[@]}" > "$log" 2>"$B/install-$n.err" || say "install on $n node(s) did not finish (see $log); the copy is timed anyway"
    local t_copy done_n from_installer
    t_copy=$(jq -r 'select(.event=="done" and .phase=="upload") | .seconds' "$log" | sort -g | tail -1)
    done_n=$(jq -r 'select(.event=="done" and .phase=="upload") | .node' "$log" | wc -l)
    [ "$done_n" -eq "$n" ] || die "the upload finished on $done_n of $n node(s): see $log and $B/install-$n.err"
    from_installer=$(jq -r 'select(.event=="info") | .message' "$log" \
        | sed -n 's/.*bytes from the installer \([0-9]*\),.*/\1/p' | paste -sd+ | bc)
    "$tb" down >/dev/null
    row "copy to $n node(s) / one scp (s)" "$t_copy" "$t_scp" "$(echo "scale=2; $t_copy / $t_scp" | bc -l)x" \
        "$([ "$n" -eq 3 ] && { [ "$(echo "$t_copy / $t_scp <= 1.3" | bc -l)" = 1 ] && echo 'target <= 1.3x: PASS' || echo 'target <= 1.3x: MISS'; })"
    row "  bytes from the installer / bundle" "$from_installer" "$SIZE" "$(echo "scale=2; $from_installer / $SIZE" | bc -l)" ""
}

# The test nodes are shared by every test on this machine: hold their lock throughout.
mkdir -p /var/lib/bale-testbed
exec 9>/var/lib/bale-testbed/.test-lock
flock 9
for n in $nodes_list; do
    # Each node keeps a copy (and a partial while copying) on the host's disk.
    if [ "$free_kib" -lt $(( (SIZE / 1024) * (n + 2) )) ]; then
        say "skipping $n nodes: not enough free disk for $n copies"; continue
    fi
    one_size "$n"
done
say "results in $RESULTS"
