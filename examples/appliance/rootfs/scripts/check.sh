#!/bin/sh
# Waits until the appliance's web server answers on every node of the cluster (BALE_MASTERS
# and BALE_NODES, set by bale for install steps), asking from a container of the bundled
# busybox image, since the hosts themselves need not have an HTTP client.
set -eu
PORT=${APP_PORT:-8080}
NODES=$(echo "${BALE_MASTERS:-127.0.0.1},${BALE_NODES:-}" | tr ',' ' ')
BUSYBOX=docker.io/library/busybox:1.36
ctr -n appliance images pull --hosts-dir /etc/containerd/certs.d "$BUSYBOX" >/dev/null
for ip in $NODES; do
    n=0
    until ctr -n appliance run --rm --net-host "$BUSYBOX" "check-$$" \
        wget -q -O /dev/null "http://$ip:$PORT/" 2>/dev/null; do
        n=$((n + 1))
        if [ "$n" -ge 30 ]; then
            echo "the web server on $ip:$PORT does not answer" >&2
            exit 1
        fi
        sleep 1
    done
    echo "web server answers on $ip:$PORT"
done
