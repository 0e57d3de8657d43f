#!/bin/sh
# The appliance's web server: a container of the bundled image docker.io/appliance/web:1.0,
# pulled by its original name (containerd's hosts.toml sends docker.io to this node's bale
# registry) and kept running by systemd.
#   sh scripts/web.sh start   pull, install appliance-web.service, start it
#   sh scripts/web.sh stop    stop and remove the service, the container and the image
set -eu
IMAGE=docker.io/appliance/web:1.0
PORT=${APP_PORT:-8080}
NS=appliance
UNIT=/etc/systemd/system/appliance-web.service
CTR="ctr -n $NS"

case "${1:-}" in
start)
    $CTR images pull --hosts-dir /etc/containerd/certs.d "$IMAGE" >/dev/null
    cat >"$UNIT.tmp" <<UNIT
[Unit]
Description=Example appliance web server (container $IMAGE)
After=containerd.service bale-registry.service
Requires=containerd.service

[Service]
ExecStartPre=-/usr/local/bin/ctr -n $NS task kill -s KILL web
ExecStartPre=-/usr/local/bin/ctr -n $NS container rm web
ExecStart=/usr/local/bin/ctr -n $NS run --rm --net-host $IMAGE web httpd -f -p $PORT -h /www
# httpd as PID 1 of its container ignores SIGTERM: stop the task itself.
ExecStop=/usr/local/bin/ctr -n $NS task kill -s KILL web
TimeoutStopSec=15
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
UNIT
    mv -f "$UNIT.tmp" "$UNIT"
    systemctl daemon-reload
    systemctl enable --now appliance-web.service
    echo "web server started on port $PORT"
    ;;
stop)
    systemctl disable --now appliance-web.service 2>/dev/null || true
    rm -f "$UNIT"
    systemctl daemon-reload
    if command -v ctr >/dev/null && $CTR version >/dev/null 2>&1; then
        $CTR task kill -s KILL web 2>/dev/null || true
        $CTR container rm web 2>/dev/null || true
        $CTR images rm "$IMAGE" >/dev/null 2>&1 || true
    fi
    echo "web server removed"
    ;;
*)
    echo "usage: sh scripts/web.sh start|stop" >&2
    exit 2
    ;;
esac
