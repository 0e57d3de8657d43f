#!/usr/bin/env bash
# Benchmarks of `bale lvscare` (nftables backend) on the test nodes, with real HTTPS servers:
#
#   - failover: a server is stopped -> it is out of the DNAT rotation on the guardian's node,
#     median (and min/max) of 10 runs, against the bound fall x interval + timeout;
#   - connection throughput through the VIP vs straight to one server (ab, HTTPS, one
#     connection per request), as a ratio;
#   - the guardian's idle CPU over 60 s (from /proc/PID/stat) and its RSS, with 3 servers and a
#     1 s interval.
#
# n1..n3 run `openssl s_server -WWW` (in the node image), n4 the guardian and the load client
# (ab and its two APR libraries, copied from this host: same Debian release as the nodes).
#
#   scripts/bench-lvscare.sh                 BALE=/path/to/bale to use a given build
#   BENCH_RUNS=10 BENCH_REQUESTS=2000 BENCH_IDLE_SECONDS=60
#
# Holds the machine-wide testbed lock for the whole run (a few minutes).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

[ "$(id -u)" -eq 0 ] || die "run as root (the test nodes need it)"
need_apt apache2-utils bc
RUNS="${BENCH_RUNS:-10}"
REQUESTS="${BENCH_REQUESTS:-2000}"
IDLE="${BENCH_IDLE_SECONDS:-60}"
INTERVAL_MS=1000 TIMEOUT_MS=1000 FALL=2
VS=10.103.97.2:6443
TB=scripts/testbed.sh

if [ -z "${BALE:-}" ]; then
    scripts/build-release.sh x86_64 >&2
    BALE="$ROOT/out/release/bale-x86_64"
fi
KIT=$(mktemp -d /tmp/bale-bench-lvscare.XXXXXX)
trap 'rm -rf "$KIT"' EXIT
cp "$BALE" "$KIT/bale"
cp /usr/bin/ab "$KIT/ab"
mkdir -p "$KIT/lib"
for l in libapr-1.so.0 libaprutil-1.so.0; do
    cp -L "$(ldd /usr/bin/ab | awk -v l="$l" '$1 == l {print $3}')" "$KIT/lib/"
done

on() { local n=$1; shift; "$TB" ssh "$n" "$*"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bench() {
    say "bringing up n1..n4 (guardian and client on n4)"
    "$TB" down >/dev/null 2>&1 || true
    "$TB" up 4 --bind "n4:$KIT:/opt/lvt" >/dev/null
    trap '"$TB" down >/dev/null 2>&1 || true; rm -rf "$KIT"' EXIT
    for n in n1 n2 n3; do
        on "$n" "mkdir -p /srv/www && cd /srv/www && echo $n > who && echo ok > healthz && \
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
              -subj /CN=$n -keyout key.pem -out cert.pem 2>/dev/null && \
            printf '[Service]\nWorkingDirectory=/srv/www\nExecStart=/usr/bin/openssl s_server -quiet -WWW -accept 6443 -cert cert.pem -key key.pem\n' \
              > /etc/systemd/system/web.service && systemctl daemon-reload && systemctl start web"
    done
    on n4 "systemd-run --unit=lvs /opt/lvt/bale lvscare --backend nftables --vs $VS \
        --rs 10.77.0.11:6443 --rs 10.77.0.12:6443 --rs 10.77.0.13:6443 --insecure-skip-verify \
        --interval ${INTERVAL_MS}ms --health-timeout ${TIMEOUT_MS}ms --fall $FALL --rise 1" >/dev/null
    # The nodes share the host's kernel clock, so a time taken here and one taken on n4 compare.
    rotation() { on n4 "nft list chain ip bale_lvscare output 2>/dev/null | grep dnat || true"; }
    wait_all() {
        for _ in $(seq 100); do
            r=$(rotation)
            [[ $r == *10.77.0.11* && $r == *10.77.0.12* && $r == *10.77.0.13* ]] && return 0
            sleep 0.2
        done
        die "the three servers are not all in rotation: $r"
    }
    wait_all

    say "failover: $RUNS runs (interval ${INTERVAL_MS}ms, timeout ${TIMEOUT_MS}ms, fall $FALL)"
    local times=() i n ip t0 t1
    for i in $(seq 1 "$RUNS"); do
        n=$(( (i - 1) % 3 + 1 )); ip=10.77.0.1$n
        # Start at a random point of the probe interval, as a real failure would.
        sleep "0.$(( RANDOM % 10 ))"
        on "n$n" "systemctl kill -s KILL web"
        t0=$(now)
        t1=$(on n4 "while nft list chain ip bale_lvscare output | grep dnat | grep -q '$ip '; do sleep 0.01; done; date +%s.%N")
        times+=("$(echo "$t1 - $t0" | bc -l)")
        on "n$n" "systemctl reset-failed web 2>/dev/null; systemctl start web"
        wait_all
    done
    local med min max bound
    med=$(printf '%s\n' "${times[@]}" | median)
    min=$(printf '%s\n' "${times[@]}" | sort -g | head -1)
    max=$(printf '%s\n' "${times[@]}" | sort -g | tail -1)
    bound=$(echo "($FALL * $INTERVAL_MS + $TIMEOUT_MS) / 1000" | bc -l)
    printf '%-52s %8.3fs  (min %.3fs, max %.3fs; bound fall x interval + timeout = %.1fs)\n' \
        "failover, server killed -> out of rotation (median)" "$med" "$min" "$max" "$bound"

    say "throughput: ab -n $REQUESTS, HTTPS, a new connection per request"
    local c vip direct
    for c in 1 4; do
        vip=$(on n4 "LD_LIBRARY_PATH=/opt/lvt/lib /opt/lvt/ab -q -n $REQUESTS -c $c https://$VS/who" \
            | awk '/^Failed requests/ {f=$3} /^Requests per second/ {r=$4} END {print r, f}')
        direct=$(on n4 "LD_LIBRARY_PATH=/opt/lvt/lib /opt/lvt/ab -q -n $REQUESTS -c $c https://10.77.0.11:6443/who" \
            | awk '/^Failed requests/ {f=$3} /^Requests per second/ {r=$4} END {print r, f}')
        printf '%-52s %8s req/s (failed %s) vs direct %s req/s (failed %s): ratio %.2f\n' \
            "through the VIP, concurrency $c" "${vip% *}" "${vip#* }" "${direct% *}" "${direct#* }" \
            "$(echo "${vip% *} / ${direct% *}" | bc -l)"
    done

    say "idle guardian: CPU over ${IDLE}s and RSS (3 servers, ${INTERVAL_MS}ms interval)"
    local pid cpu rss
    pid=$(on n4 "systemctl show -p MainPID --value lvs")
    local hz a b
    hz=$(on n4 "getconf CLK_TCK")
    a=$(on n4 "awk '{print \$14 + \$15}' /proc/$pid/stat")
    sleep "$IDLE"
    b=$(on n4 "awk '{print \$14 + \$15}' /proc/$pid/stat")
    cpu=$(echo "($b - $a) * 100 / $hz / $IDLE" | bc -l)
    rss=$(on n4 "awk '/^VmRSS/ {print \$2}' /proc/$pid/status")
    printf '%-52s %8.3f%% of one core\n' "guardian idle CPU" "$cpu"
    printf '%-52s %8.1f MiB\n' "guardian RSS" "$(echo "$rss / 1024" | bc -l)"
    on n4 "systemctl stop lvs; /opt/lvt/bale lvscare --clean --vs $VS" >/dev/null 2>&1
    "$TB" down >/dev/null 2>&1
}

mkdir -p /var/lib/bale-testbed
exec 9>/var/lib/bale-testbed/.test-lock
say "waiting for the testbed lock"
flock 9
bench
