#!/usr/bin/env bash
# bale testbed: local multi-node test hosts for bale's SSH installer.
#
# Containers (default): systemd-nspawn nodes n1..nN at 10.77.0.11.. on bridge bale0.
# VMs (--vm):           QEMU (TCG) nodes v1..vN at 10.77.0.21.., for tests that need a
#                       real kernel (modprobe, IPVS).
#
# Run `scripts/testbed.sh --help` for the commands. Everything needs root.
set -Eeuo pipefail

# ----------------------------------------------------------------------------
# constants and paths
# ----------------------------------------------------------------------------
STATE=${BALE_TESTBED_STATE:-/var/lib/bale-testbed}
CACHE=${BALE_TESTBED_CACHE:-/var/cache/bale-testbed}
# Debian mirrors for the node images: BALE_TESTBED_MIRROR / BALE_TESTBED_SECURITY_MIRROR, else
# the ones this host's apt uses (resolve_mirrors).
MIRROR=
SECURITY_MIRROR=
SUITE=bookworm
BOOT_TIMEOUT=${BALE_TESTBED_BOOT_TIMEOUT:-60}          # seconds, container nodes
VM_BOOT_TIMEOUT=${BALE_TESTBED_VM_BOOT_TIMEOUT:-900}   # seconds, VM nodes (TCG is slow)
VM_SILENT_LIMIT=${BALE_TESTBED_VM_SILENT_LIMIT:-300}  # seconds without a console line before a VM is started again
VM_MEM=${BALE_TESTBED_VM_MEM:-1536}                    # MiB per VM
VM_CPUS=${BALE_TESTBED_VM_CPUS:-2}

BRIDGE=bale0
BRIDGE_MAC=02:62:61:6c:65:01      # fixed so the guard can recognise frames sent to the host
HOST_IP=10.77.0.1
SUBNET=10.77.0.0/24
GUARD_TABLE=bale_testbed_guard   # nft: table bridge bale_testbed_guard
MAX_NODES=10                     # n1..n10 -> .11-.20
MAX_VMS=20                       # v1..v20 -> .21-.40

SELF=$(readlink -f "${BASH_SOURCE[0]}")
KEY=$STATE/id_ed25519
KNOWN_HOSTS=$STATE/known_hosts
NODES=$STATE/nodes
VMS=$STATE/vms

# Packages of the container template. Changing this list (or the template
# customisation below) changes the cache key, so `prepare` rebuilds.
NODE_PACKAGES="openssh-server systemd-sysv dbus iproute2 nftables procps kmod sudo ca-certificates less iputils-ping ${BALE_TESTBED_EXTRA_PACKAGES:-}"
read -r -a node_package_list <<<"$NODE_PACKAGES"
NODE_PACKAGES="${node_package_list[*]}"   # normalise spaces
BASE_REV=1
HOST_ARCH=$(uname -m)
# arm64 container nodes (`up --arch NODE=aarch64`). Their programs run under qemu-user: qemu 10
# from Debian's SUITE-backports (7.2 lacks the prctl containerd's shim needs), unpacked into
# the cache and registered with binfmt_misc under the testbed's own name with the F flag (the
# kernel opens the interpreter once, so it works inside the nodes' root file systems). Two
# things cannot work under qemu-user: creating namespaces (so no OCI runtime runs) and netfilter
# netlink (so nft cannot talk to the kernel). Such a node therefore gets the host
# architecture's runc and nft in /usr/local/sbin (customize_foreign), found first on PATH: the
# testbed's substitution, shown by `status`; bale knows nothing of it and still installs and
# uses its own arm64 programs everywhere else (its runc goes to /usr/local/bin).
FOREIGN_ARCH=aarch64
BINFMT_NAME=bale-testbed-aarch64
BINFMT_MAGIC='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
BINFMT_MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
SUBSTITUTE_DIR=/usr/local/sbin
# The host's packages whose programs the substitution takes, with every library they load.
SUBSTITUTE_DEBS="runc libseccomp2 nftables libnftables1 libmnl0 libnftnl11 libxtables12 libjansson4 libgmp10 libedit2 libbsd0 libmd0 libtinfo6 libc6"
# Host packages: command -> Debian package.
HOST_PACKAGES="systemd-nspawn:systemd-container mmdebstrap:mmdebstrap arch-test:arch-test debootstrap:debootstrap ip:iproute2 tc:iproute2 nft:nftables ssh:openssh-client ssh-keygen:openssh-client sshpass:sshpass flock:util-linux unshare:util-linux nsenter:util-linux setsid:util-linux pgrep:procps mkfs.ext4:e2fsprogs"

# ----------------------------------------------------------------------------
# messages
# ----------------------------------------------------------------------------
say()  { printf 'testbed: %s\n' "$*" >&2; }
warn() { printf 'testbed: warning: %s\n' "$*" >&2; }
# die MESSAGE [HINT]
die() {
  printf 'testbed: error: %s\n' "$1" >&2
  [ $# -lt 2 ] || printf 'testbed: hint: %s\n' "$2" >&2
  exit 3   # 3 = already explained; the ERR trap stays quiet
}
# shellcheck disable=SC2154  # rc is assigned inside the trap string
trap 'rc=$?; [ $rc = 3 ] || printf "testbed: error: command failed (exit %s) at %s line %s: %s\n" "$rc" "${BASH_SOURCE[0]##*/}" "$LINENO" "$BASH_COMMAND" >&2' ERR

usage() {
  cat <<EOF
bale testbed: throw-away multi-node hosts on this machine for bale's SSH tests.

Usage: scripts/testbed.sh COMMAND [ARGS]     (as root)

Set up / tear down
  prepare [--vm] [--arch $FOREIGN_ARCH]
                        Install host packages, build the cached node image
                        (Debian $SUITE, ~1 min the first time, instant after), make
                        the testbed SSH key. --vm also builds the QEMU VM image,
                        --arch $FOREIGN_ARCH the arm64 node image (~8 min the first time).
  up [N] [OPTIONS]      Start nodes n1..nN (default 3) and wait until every one
                        answers SSH; nodes already running are left alone, nodes
                        stopped with 'kill' are booted again with their disk.
                        Prints name, IP and ssh command of every node.
      --vm              Start QEMU VMs v1..vN instead (real kernel: modprobe, IPVS).
                        Containers and VMs can run side by side.
      --arch NODE=ARCH  Make NODE an arm64 node (ARCH aarch64; NODE may be 'all';
                        repeatable; also BALE_TESTBED_ARCH="n3=aarch64 ..."): its
                        programs run under qemu-user 10 (from $SUITE-backports, via
                        binfmt_misc), 2-3x slower, ~16x per process start. No OCI
                        runtime creates namespaces and nft has no netfilter netlink
                        under qemu-user, so the testbed puts the host's runc and nft
                        in /usr/local/sbin of such a node (shown by 'status');
                        containerd, shims, containers and bale itself stay arm64.
      --bind NODE:HOST_DIR:NODE_DIR   Bind-mount a host dir into a node (repeatable;
                        NODE may be 'all'). Also: BALE_TESTBED_BINDS="n1:/a:/b ...".
      --tmpfs NODE:NODE_DIR:SIZE      Size-limited tmpfs in a node, e.g.
                        n2:/var/lib/bale:64M (repeatable; NODE may be 'all').
                        Also: BALE_TESTBED_TMPFS="n2:/var/lib/bale:64M ...".
  down                  Stop every node and VM, delete their disks, the bridge,
                        veths/taps, netns, cgroups and the guard table. Idempotent.

Use
  ssh NODE [CMD...]     Run CMD on NODE as root with the testbed key (login shell
                        without CMD). Arguments are joined like ssh does.
  ip NODE               Print NODE's IP.      key     Print the private key path.
  known-hosts           Print the known_hosts file that matches the nodes' host keys.
  status                List nodes and their state.

Faults
  link-down NODE | link-up NODE   Cut / restore NODE's network (host side of its link).
  link-rate NODE RATE|off         Shape what NODE receives to RATE (tc units, e.g.
                                  100mbit), so a fault can land mid-transfer; off
                                  lifts it. 'down' removes it with the link.
  kill NODE                       Power NODE off hard (SIGKILL everything in it).
  start NODE                      Boot a killed NODE again; its disk survives.
  freeze NODE | thaw NODE         Hang every process of NODE (cgroup freezer) / resume.
  cpu NODE [kernel]               CPU time NODE has used since it started, in ns (its cgroup;
                                  kernel: the part spent in the kernel).
  guard-counter                   Packets the guard dropped: anything the nodes sent
                                  towards an address outside $SUBNET (or to the host
                                  at any address but $HOST_IP). Use it to prove that
                                  an install was offline. The host's kernel log
                                  names each dropped packet ("bale-testbed-escaped",
                                  at most 10 a second): dmesg | grep bale-testbed.

Mirrors
  mirrors [--apt-root DIR]        The Debian mirrors the images are built from: those
                                  of the first Debian archive and security entries in
                                  the apt sources under DIR (default /), read as apt
                                  reads them. BALE_TESTBED_MIRROR and
                                  BALE_TESTBED_SECURITY_MIRROR override them.

Nodes: nK = container K at 10.77.0.(10+K); vK = VM K at 10.77.0.(20+K); the host is $HOST_IP.
Logins on every node: root (key, password root-pass), ops (key, password ops-pass,
sudo without password), opspw (key, password opspw-pass, sudo asks the password).
Each container node also gets the host dirs $NODES/nK/containerd and $NODES/nK/kubelet
bound at /var/lib/containerd and /var/lib/kubelet (overlayfs cannot be stacked on the
node's overlay root).
Host sysctls: kubelet sets vm.overcommit_memory=1, kernel.panic=10 and
kernel.panic_on_oops=1 and exits when it cannot, and they are global (read-only in a
container). 'up' of container nodes sets them on the host and saves the old values in
$STATE/host-sysctls; 'down' puts those back.

Raw ssh:  ssh -i $KEY -o UserKnownHostsFile=$KNOWN_HOSTS root@10.77.0.11
          (known_hosts holds the real host keys of every node: no prompts, no
          StrictHostKeyChecking=no needed; it is rewritten by up and removed by down)

What the faults look like from another node
  link-down   frames to and from the node are dropped at the bridge (no answers).
  kill        the node's network goes down with it: no ARP, ping or TCP answers.
  freeze      containers: every process hangs, but the kernel's network stack
              (shared with the host) still answers ping and TCP handshakes;
              VMs: QEMU is stopped, nothing answers at all.
The guard counts frames that a node sends to the host's MAC (to the host itself
or through it as its default gateway) whose IP destination is outside $SUBNET;
node-to-node traffic is bridged and never counted. Nodes have a default route via
$HOST_IP and no DNS servers, so an install that needs the internet fails fast
and shows up in the counter.

Limits
  Container nodes share the host kernel: no modprobe, and here no IPVS and no
  'dummy' links (the host kernel lacks them); use --vm for that. /dev/kmsg in a
  container is a link to /dev/console. One testbed per machine (the bridge name
  and addresses are fixed). VMs are TCG-emulated (KVM is not usable here): about
  2 minutes to SSH, everything inside 6-20x slower; --bind/--tmpfs are container-only.
  Failures exit non-zero (3 for explained errors) with a message and a hint.

Environment
  BALE_TESTBED_STATE   state dir (keys, known_hosts, node disks)  [$STATE]
  BALE_TESTBED_CACHE   cache dir (images, unpacked QEMU)           [$CACHE]
  BALE_TESTBED_MIRROR, BALE_TESTBED_SECURITY_MIRROR   Debian mirrors for image builds
                       [the host's own, from its apt sources: see 'mirrors']
  BALE_TESTBED_EXTRA_PACKAGES   more Debian packages for the container image
  BALE_TESTBED_BOOT_TIMEOUT / BALE_TESTBED_VM_BOOT_TIMEOUT   seconds [$BOOT_TIMEOUT / $VM_BOOT_TIMEOUT]
  BALE_TESTBED_VM_SILENT_LIMIT   seconds a VM may print nothing before it is started again, once [$VM_SILENT_LIMIT]
  BALE_TESTBED_VM_MEM (MiB) [$VM_MEM], BALE_TESTBED_VM_CPUS [$VM_CPUS]

Examples
  scripts/testbed.sh up 3 && scripts/testbed.sh ssh n1 systemctl is-system-running
  before=\$(scripts/testbed.sh guard-counter); ...install...; test "\$(scripts/testbed.sh guard-counter)" = "\$before"
  scripts/testbed.sh up 3 --tmpfs n2:/var/lib/bale:64M
  scripts/testbed.sh up 1 --vm && scripts/testbed.sh ssh v1 'modprobe ip_vs && cat /proc/net/ip_vs'
EOF
}

# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------
# shellcheck disable=SC2120
need_root() {
  [ "$(id -u)" = 0 ] || die "the testbed needs root (network namespaces, bridges, cgroups, mounts)" "run it as root, e.g. with sudo"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# node kind / number / ip from a name
node_kind() {
  case $1 in
    n[1-9]|n[1-9][0-9]) echo ct ;;
    v[1-9]|v[1-9][0-9]) echo vm ;;
    *) die "unknown node name '$1'" "container nodes are n1..n$MAX_NODES, VMs are v1..v$MAX_VMS (see 'status')" ;;
  esac
}
node_num() { echo "${1#?}"; }
node_ip() {
  local k n; k=$(node_kind "$1"); n=$(node_num "$1")
  if [ "$k" = ct ]; then
    [ "$n" -le "$MAX_NODES" ] || die "container node $1 is out of range" "use n1..n$MAX_NODES"
    echo "10.77.0.$((10 + n))"
  else
    [ "$n" -le "$MAX_VMS" ] || die "VM $1 is out of range" "use v1..v$MAX_VMS"
    echo "10.77.0.$((20 + n))"
  fi
}
node_dir() { if [ "$(node_kind "$1")" = ct ]; then echo "$NODES/$1"; else echo "$VMS/$1"; fi; }
host_if() { echo "bale-$1"; }       # host side veth / tap
netns_of() { echo "bale-$1"; }

lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 600 9 || die "another testbed command holds $STATE/.lock for 10 minutes" "wait for it or kill it"
}

# all node names that have a state dir, sorted
list_nodes() {
  local d
  for d in "$NODES"/n* "$VMS"/v*; do
    [ -d "$d" ] || continue
    basename "$d"
  done | sort -V
}

# ----------------------------------------------------------------------------
# host packages
# ----------------------------------------------------------------------------
APT_UPDATED=
apt_install() {
  [ $# -gt 0 ] || return 0
  export DEBIAN_FRONTEND=noninteractive
  local log; log=$(mktemp)
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update"
    apt-get update -q >"$log" 2>&1 \
      || { tail -n 15 "$log" >&2; rm -f "$log"; die "apt-get update failed" "check the network and /etc/apt/sources.list*"; }
    APT_UPDATED=1
  fi
  say "installing host packages: $*"
  apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1 \
    || { tail -n 15 "$log" >&2; rm -f "$log"; die "apt-get install $* failed" "see the apt output above; try 'apt-get install $*' by hand"; }
  rm -f "$log"
}

ensure_host_packages() {
  local pair missing=() cmd pkg
  for pair in $HOST_PACKAGES "$@"; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  # shellcheck disable=SC2046  # package names: split on purpose
  [ ${#missing[@]} -eq 0 ] || apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
}

# ----------------------------------------------------------------------------
# key, template image
# ----------------------------------------------------------------------------
ensure_key() {
  mkdir -p "$STATE"; chmod 700 "$STATE"
  if [ ! -s "$KEY" ] || [ ! -s "$KEY.pub" ]; then
    say "generating testbed SSH key $KEY"
    rm -f "$KEY" "$KEY.pub"
    ssh-keygen -q -t ed25519 -N '' -C bale-testbed -f "$KEY" || die "ssh-keygen failed" "check that $STATE is writable"
  fi
}

hash() { sha256sum | cut -c1-12; }
# The image keys take an architecture (default: the host's); a foreign one adds its own step.
base_key() { printf '%s|%s|%s|%s' "$SUITE" "$NODE_PACKAGES" "$BASE_REV" "${1:-$HOST_ARCH}" | hash; }
template_key() {
  local arch=${1:-$HOST_ARCH}
  { base_key "$arch"; declare -f customize_common customize_template
    [ "$arch" = "$HOST_ARCH" ] || declare -f customize_foreign; cat "$KEY.pub"; } | hash
}
template_dir() { echo "$CACHE/template-$(template_key "${1:-}")"; }
deb_arch() {
  case $1 in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) die "no Debian architecture for $1" "node architectures are $HOST_ARCH and $FOREIGN_ARCH" ;;
  esac
}
node_arch() { cat "$NODES/$1/arch" 2>/dev/null || echo "$HOST_ARCH"; }

# apt_deb_sources [ROOT]: every enabled binary ("deb") source of the apt configuration under
# ROOT (default /), in apt's order: sources.list, then the files of sources.list.d named
# *.list (one-line format) or *.sources (deb822), sorted; apt ignores other names.
# One line each: URI SUITE COMPONENT...
apt_deb_sources() {
  local root=${1:-} f files=()
  [ -f "$root/etc/apt/sources.list" ] && files+=("$root/etc/apt/sources.list")
  while IFS= read -r f; do
    [[ ${f##*/} =~ ^[A-Za-z0-9_.-]+\.(list|sources)$ ]] && files+=("$f")
  done < <({ find "$root/etc/apt/sources.list.d" -mindepth 1 -maxdepth 1 -type f 2>/dev/null || true; } | LC_ALL=C sort)
  [ ${#files[@]} -gt 0 ] || return 0
  awk '
    function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
    # the end of a deb822 stanza: one line per URI and suite
    function stanza(   i, j, n, m, u, w) {
      if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) != "no") {
        n = split(uris, u, /[ \t]+/); m = split(suites, w, /[ \t]+/)
        for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
          if (u[i] != "" && w[j] != "") print u[i], w[j], trim(comps)
      }
      types = uris = suites = comps = enabled = key = ""
    }
    FNR == 1 { if (deb822) stanza(); deb822 = (FILENAME ~ /\.sources$/) }
    deb822 {
      if ($0 ~ /^#/) next
      if ($0 ~ /^[ \t]*$/) { stanza(); next }
      if ($0 ~ /^[ \t]/) {              # a continuation line of the field before
        if (key == "uris") uris = uris " " trim($0)
        else if (key == "suites") suites = suites " " trim($0)
        else if (key == "components") comps = comps " " trim($0)
        next
      }
      c = index($0, ":"); if (c == 0) next
      key = tolower(trim(substr($0, 1, c - 1))); v = trim(substr($0, c + 1))
      if (key == "types") types = v
      else if (key == "uris") uris = v
      else if (key == "suites") suites = v
      else if (key == "components") comps = v
      else if (key == "enabled") enabled = v
      next
    }
    {                                   # one-line format: deb [OPTIONS] URI SUITE COMPONENT...
      line = $0; sub(/#.*/, "", line); line = trim(line)
      if (line !~ /^deb[ \t]/) next
      sub(/^deb[ \t]+/, "", line)
      if (line ~ /^\[/ && !sub(/^\[[^]]*\][ \t]*/, "", line)) next
      if (split(line, f, /[ \t]+/) >= 2) print line
    }
    END { if (deb822) stanza() }
  ' "${files[@]}"
}

# host_debian_mirrors [ROOT]: HOST_MIRROR and HOST_SECURITY_MIRROR, the URIs of the first
# http(s) entries of the apt sources under ROOT that carry Debian's main component for a
# Debian suite (security: SUITE-security, or SUITE/updates before bullseye). Empty if none.
host_debian_mirrors() {
  local uri suite comps
  HOST_MIRROR=''
  HOST_SECURITY_MIRROR=''
  while read -r uri suite comps; do
    case " $comps " in *" main "*) ;; *) continue ;; esac
    case $uri in http://*|https://*) ;; *) continue ;; esac
    case ${suite%%[-/]*} in
      buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable) ;;
      *) continue ;;
    esac
    case $suite in
      *-security|*/updates) [ -n "$HOST_SECURITY_MIRROR" ] || HOST_SECURITY_MIRROR=${uri%/} ;;
      *) [ -n "$HOST_MIRROR" ] || HOST_MIRROR=${uri%/} ;;
    esac
  done < <(apt_deb_sources "${1:-}")
}

# resolve_mirrors [ROOT]: MIRROR and SECURITY_MIRROR, from the environment or else the apt
# sources under ROOT (default /). Without a security mirror the images get no security
# updates (the nodes never reach outside the testbed, so they can do without).
resolve_mirrors() {
  host_debian_mirrors "${1:-}"
  MIRROR=${BALE_TESTBED_MIRROR:-$HOST_MIRROR}
  SECURITY_MIRROR=${BALE_TESTBED_SECURITY_MIRROR:-$HOST_SECURITY_MIRROR}
  [ -n "$MIRROR" ] || die "the apt sources under ${1:-/} name no Debian archive (etc/apt/sources.list, sources.list.d/*.list, *.sources)" \
    "set BALE_TESTBED_MIRROR to a Debian mirror, e.g. BALE_TESTBED_MIRROR=http://HOST/debian"
}

cmd_mirrors() {
  local root=
  while [ $# -gt 0 ]; do
    case $1 in
      --apt-root) [ $# -ge 2 ] || die "mirrors: --apt-root needs a directory"; root=$2; shift ;;
      *) die "mirrors: unknown argument '$1'" "usage: mirrors [--apt-root DIR]" ;;
    esac; shift
  done
  resolve_mirrors "$root"
  printf 'mirror %s\nsecurity %s\n' "$MIRROR" "${SECURITY_MIRROR:-none}"
}

# The apt sources the images are built from (after resolve_mirrors).
mm_sources() {
  printf '%s\n' "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main"
  [ -z "$SECURITY_MIRROR" ] || printf '%s\n' "deb $SECURITY_MIRROR $SUITE-security main"
}

build_base() {
  local dir=$1 arch=${2:-$HOST_ARCH} tmp=$1.tmp t0
  t0=$(now)
  resolve_mirrors
  [ -n "$SECURITY_MIRROR" ] || warn "no Debian security mirror in the apt sources: the image gets no security updates"
  rm -rf "$tmp"
  say "building base rootfs ($SUITE $(deb_arch "$arch") minbase + $NODE_PACKAGES) in $dir; takes about a minute ($HOST_ARCH), a few ($FOREIGN_ARCH, emulated)"
  mm_sources | mmdebstrap --variant=minbase --architectures="$(deb_arch "$arch")" --include="${NODE_PACKAGES// /,}" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$SUITE" "$tmp" - >"$CACHE/mmdebstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/mmdebstrap.log" >&2; rm -rf "$tmp"
         die "mmdebstrap failed (log: $CACHE/mmdebstrap.log)" "check that $MIRROR is reachable (or set BALE_TESTBED_MIRROR) and that the package list is valid"; }
  mv "$tmp" "$dir"
  say "base rootfs built in $(elapsed "$t0")s"
}

# What every node image (container template and VM image) gets. The source text
# of the customize_* functions is part of the cache keys: edit them and the next
# `prepare` rebuilds.
customize_common() {
  local r=$1 pub=$2 u
  # No host identity may leak in from the build host.
  rm -f "$r"/etc/ssh/ssh_host_* "$r/etc/hostname"
  : >"$r/etc/machine-id"
  # No name servers: the nodes must never try to reach anything outside the testbed.
  : >"$r/etc/resolv.conf"
  {
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    echo "$HOST_IP testbed-host"
    for i in $(seq 1 "$MAX_NODES"); do echo "10.77.0.$((10 + i)) n$i"; done
    for i in $(seq 1 "$MAX_VMS"); do echo "10.77.0.$((20 + i)) v$i"; done
  } >"$r/etc/hosts"

  # users
  chroot "$r" /usr/sbin/useradd -m -s /bin/bash ops
  chroot "$r" /usr/sbin/useradd -m -s /bin/bash opspw
  printf '%s\n' root:root-pass ops:ops-pass opspw:opspw-pass | chroot "$r" /usr/sbin/chpasswd
  echo 'ops ALL=(ALL) NOPASSWD: ALL' >"$r/etc/sudoers.d/ops"
  echo 'opspw ALL=(ALL) ALL' >"$r/etc/sudoers.d/opspw"
  chmod 440 "$r"/etc/sudoers.d/ops "$r"/etc/sudoers.d/opspw
  for u in root ops opspw; do
    local home=/home/$u; [ $u = root ] && home=/root
    install -d -m 700 "$r$home/.ssh"
    install -m 600 "$pub" "$r$home/.ssh/authorized_keys"
    chroot "$r" chown -R "$u:$u" "$home/.ssh"
  done

  # sshd: root and passwords allowed; host keys come from the node's first boot
  # (or are put in place by `up`, which also writes the matching known_hosts).
  cat >"$r/etc/ssh/sshd_config.d/bale-testbed.conf" <<'EOF'
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication yes
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
MaxSessions 64
MaxStartups 64:30:128
EOF
  mkdir -p "$r/etc/systemd/system/ssh.service.d"
  cat >"$r/etc/systemd/system/ssh.service.d/bale-testbed.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/local/sbin/bale-ssh-hostkeys
ExecStartPre=/usr/sbin/sshd -t
EOF
  cat >"$r/usr/local/sbin/bale-ssh-hostkeys" <<'EOF'
#!/bin/sh
# Host keys: containers get them in their disk from `up`; VMs get them from
# QEMU's fw_cfg (opt/bale/...). Whatever is still missing is generated.
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/bale
[ -d /sys/firmware/qemu_fw_cfg ] || modprobe -q qemu_fw_cfg 2>/dev/null || true
umask 077
for t in ed25519 ecdsa; do
  f=/etc/ssh/ssh_host_${t}_key
  if [ -r "$fw/ssh_host_${t}_key/raw" ] && [ -r "$fw/ssh_host_${t}_key.pub/raw" ]; then
    cat "$fw/ssh_host_${t}_key/raw" >"$f.tmp" && mv "$f.tmp" "$f"
    cat "$fw/ssh_host_${t}_key.pub/raw" >"$f.pub"; chmod 644 "$f.pub"
  fi
  [ -s "$f" ] || ssh-keygen -q -t "$t" -N '' -f "$f"
done
EOF
  chmod 755 "$r/usr/local/sbin/bale-ssh-hostkeys"

  # Nothing may phone home: mask timers that talk to mirrors or are useless here.
  for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
    ln -sf /dev/null "$r/etc/systemd/system/$u"
  done
}

# container template only
customize_template() {
  local r=$1 pub=$2
  customize_common "$r" "$pub"

  # nspawn mounts the cgroup v1 controller hierarchies read-only; container
  # runtimes need them writable (their root is the node's own cgroup, thanks to
  # the cgroup namespace, so this does not expose the host's tree).
  cat >"$r/etc/systemd/system/bale-cgroup-rw.service" <<'EOF'
[Unit]
Description=bale testbed: make cgroup hierarchies writable
DefaultDependencies=no
ConditionVirtualization=container
Before=sysinit.target
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/bale-cgroup-rw

[Install]
WantedBy=sysinit.target
EOF
  cat >"$r/usr/local/sbin/bale-cgroup-rw" <<'EOF'
#!/bin/sh
# remount (bind-level, so only this mount point changes) every cgroup hierarchy rw
mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts | while read -r m; do
  mount -o remount,bind,rw "$m" || echo "bale-cgroup-rw: cannot make $m writable" >&2
done
EOF
  chmod 755 "$r/usr/local/sbin/bale-cgroup-rw"
  mkdir -p "$r/etc/systemd/system/sysinit.target.wants"
  ln -sf ../bale-cgroup-rw.service "$r/etc/systemd/system/sysinit.target.wants/bale-cgroup-rw.service"
  # kubelet and friends read /dev/kmsg, which containers do not have.
  echo 'L /dev/kmsg - - - - /dev/console' >"$r/etc/tmpfiles.d/bale-kmsg.conf"
  # A node's disk is a directory on the host's file system, shared with all else on the
  # machine: kubelet's default eviction (pods go below 15 % free for images) would measure the
  # host's use, not the node's. bale's kubelet unit reads extra flags from this file.
  mkdir -p "$r/etc/default"
  echo 'KUBELET_EXTRA_ARGS=--eviction-hard=imagefs.available<1%,nodefs.available<1%,memory.available<100Mi' >"$r/etc/default/kubelet"
  # Pods whose PID 1 ignores SIGTERM would hold a node's shutdown for systemd's 90 s default.
  mkdir -p "$r/etc/systemd/system.conf.d"
  printf '[Manager]\nDefaultTimeoutStopSec=10s\n' >"$r/etc/systemd/system.conf.d/bale-testbed.conf"
}

# ---- foreign-architecture (arm64) nodes ----
# QEMU_USER: qemu-aarch64 from Debian's qemu-user in SUITE-backports, downloaded with apt
# reading a sources list of its own (the host's apt configuration is not touched) and
# unpacked into the cache; found there without apt afterwards.
QEMU_USER=
ensure_qemu_user() {
  local d apt tmp v opts
  [ -z "$QEMU_USER" ] || return 0
  for d in "$CACHE"/qemu-user-*; do
    [[ $d == *.tmp ]] && continue     # an unpacking that never finished
    [ -f "$d/.unpacked" ] && [ -x "$d/usr/bin/qemu-aarch64" ] && { QEMU_USER=$d/usr/bin/qemu-aarch64; return 0; }
  done
  resolve_mirrors
  apt=$CACHE/apt-$SUITE-backports
  mkdir -p "$apt"/{lists/partial,archives/partial,sources.list.d}
  echo "deb $MIRROR $SUITE-backports main" >"$apt/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::Archives=$apt/archives" -o APT::Get::List-Cleanup=0)
  say "qemu-user from $SUITE-backports (arm64 nodes run under it)"
  apt-get -q "${opts[@]}" update >"$apt/update.log" 2>&1 \
    || { tail -n 15 "$apt/update.log" >&2; die "apt-get update of $MIRROR $SUITE-backports failed" "check that the mirror carries $SUITE-backports (or set BALE_TESTBED_MIRROR)"; }
  v=$(apt-cache "${opts[@]}" policy qemu-user 2>/dev/null | awk '/Candidate:/ {print $2}')
  { [ -n "$v" ] && [ "$v" != "(none)" ]; } || die "$SUITE-backports has no qemu-user" "arm64 nodes need qemu 10 or later"
  d=$CACHE/qemu-user-${v//[^A-Za-z0-9.+-]/_}; tmp=$d.tmp
  rm -rf "$tmp"; mkdir -p "$tmp/debs"; chown _apt "$tmp/debs" 2>/dev/null || true
  (cd "$tmp/debs" && apt-get -q "${opts[@]}" download "qemu-user=$v" >/dev/null 2>"$tmp/download.log") \
    || { cat "$tmp/download.log" >&2; rm -rf "$tmp"; die "apt-get download qemu-user=$v failed" "check the mirror"; }
  dpkg -x "$tmp"/debs/qemu-user_*.deb "$tmp"
  rm -rf "$tmp/debs"
  "$tmp/usr/bin/qemu-aarch64" --version >/dev/null 2>&1 || { rm -rf "$tmp"; die "qemu-aarch64 $v does not run here" "delete $d and try again"; }
  echo "qemu-user $v" >"$tmp/.unpacked"
  rm -rf "$d"; mv "$tmp" "$d"
  QEMU_USER=$d/usr/bin/qemu-aarch64
}

# The testbed's binfmt_misc entry: aarch64 ELF files run under QEMU_USER, with P (argv[0] kept)
# and F (interpreter opened now, so nodes need no copy of it). Entries registered later are
# tried first, so it wins over any other aarch64 handler while it exists; 'down' removes it.
ensure_binfmt() {
  local bm=/proc/sys/fs/binfmt_misc
  ensure_qemu_user
  if [ ! -e "$bm/register" ]; then
    mount -t binfmt_misc binfmt_misc "$bm" || die "cannot mount binfmt_misc on $bm" "arm64 nodes need binfmt_misc (CONFIG_BINFMT_MISC)"
  fi
  if [ -f "$bm/$BINFMT_NAME" ]; then
    if grep -qxF "interpreter $QEMU_USER" "$bm/$BINFMT_NAME" && grep -q '^flags: .*F' "$bm/$BINFMT_NAME" \
       && grep -qx enabled "$bm/$BINFMT_NAME"; then return 0; fi
    echo -1 >"$bm/$BINFMT_NAME"
  fi
  printf ':%s:M::%s:%s:%s:PF' "$BINFMT_NAME" "$BINFMT_MAGIC" "$BINFMT_MASK" "$QEMU_USER" >"$bm/register" \
    || die "cannot register $QEMU_USER with binfmt_misc" "is $bm writable (root, not in a container)?"
  say "binfmt_misc: aarch64 programs run under $QEMU_USER ($BINFMT_NAME)"
}

# What the testbed's binfmt entry runs aarch64 programs with, for 'status'.
binfmt_qemu() {
  local f=/proc/sys/fs/binfmt_misc/$BINFMT_NAME q
  q=$(awk '$1 == "interpreter" {print $2}' "$f" 2>/dev/null)
  if [ -z "$q" ]; then echo "no binfmt entry ($BINFMT_NAME is not registered: such nodes cannot run)"; return; fi
  cat "${q%/usr/bin/qemu-aarch64}/.unpacked" 2>/dev/null || echo "$q"
}

remove_binfmt() {
  local f=/proc/sys/fs/binfmt_misc/$BINFMT_NAME
  [ -f "$f" ] || return 0
  echo -1 >"$f" && say "removed binfmt_misc entry $BINFMT_NAME"
}

# The host architecture's runc and nft in a foreign node's /usr/local/sbin, found there before
# bale's own (/usr/local/bin, /usr/sbin) on the PATH systemd gives services: Debian's packages
# in the host's versions, their libraries in the node's multiarch directory for the host.
customize_foreign() {
  local r=$1 tmp ma ld p
  ma=$(gcc -print-multiarch 2>/dev/null || echo "$HOST_ARCH-linux-gnu")
  tmp=$(mktemp -d); chown _apt "$tmp" 2>/dev/null || true
  # shellcheck disable=SC2086  # a list of package names: split on purpose
  (cd "$tmp" && apt-get download -q $SUBSTITUTE_DEBS >/dev/null 2>"$tmp/download.log") \
    || { cat "$tmp/download.log" >&2; rm -rf "$tmp"; return 1; }
  for p in "$tmp"/*.deb; do dpkg -x "$p" "$tmp/x"; done
  ld=$(find "$tmp/x" -path "*/lib64/ld-linux-*.so.2" -o -path "*/lib/ld-linux-*.so.*" | head -n1)
  [ -n "$ld" ] || { echo "no dynamic loader in libc6" >&2; rm -rf "$tmp"; return 1; }
  mkdir -p "$r/usr/lib/$ma" "$r/usr/local/sbin"
  cp -a "$tmp"/x/lib/"$ma"/. "$r/usr/lib/$ma/" 2>/dev/null || true
  [ ! -d "$tmp/x/usr/lib/$ma" ] || cp -a "$tmp"/x/usr/lib/"$ma"/. "$r/usr/lib/$ma/"
  p=${ld#"$tmp"/x}                               # /lib64/ld-linux-x86-64.so.2
  if [ ! -e "$r${p%/*}" ]; then mkdir -p "$r/usr${p%/*}"; ln -s "usr${p%/*}" "$r${p%/*}"; fi
  cp -L "$ld" "$r$p"
  install -m 0755 "$tmp/x/usr/sbin/runc" "$r$SUBSTITUTE_DIR/runc"
  install -m 0755 "$tmp/x/usr/sbin/nft" "$r$SUBSTITUTE_DIR/nft"
  rm -rf "$tmp"
  mkdir -p "$r/etc/bale-testbed"
  printf '%s\n' "This node is $FOREIGN_ARCH under qemu-user, which can neither create namespaces (no OCI" \
    "runtime runs) nor speak netfilter netlink (nft cannot reach the kernel). So $SUBSTITUTE_DIR/runc" \
    "and $SUBSTITUTE_DIR/nft are the host's $HOST_ARCH programs: the testbed's substitution. bale" \
    "installs its own arm64 runc at /usr/local/bin/runc, which containerd's shims find after this one." \
    >"$r/etc/bale-testbed/substitution"
  for p in runc nft; do
    chroot "$r" "$SUBSTITUTE_DIR/$p" --version >/dev/null || { echo "the substituted $p does not run in the node's root" >&2; return 1; }
  done
  # systemd cannot set up unit credentials under qemu-user ("Failed at step CREDENTIALS"),
  # and these units ask for some they never get here anyway.
  for p in systemd-sysctl systemd-sysusers systemd-tmpfiles-setup-dev systemd-tmpfiles-setup; do
    mkdir -p "$r/etc/systemd/system/$p.service.d"
    printf '[Service]\nLoadCredential=\n' >"$r/etc/systemd/system/$p.service.d/bale-testbed-qemu.conf"
  done
}

ensure_template() {
  local arch=${1:-$HOST_ARCH} base tpl tmp t0
  mkdir -p "$CACHE"
  base=$CACHE/rootfs-$(base_key "$arch")
  tpl=$(template_dir "$arch")
  [ "$arch" = "$HOST_ARCH" ] || ensure_binfmt
  [ -d "$base" ] || build_base "$base" "$arch"
  if [ ! -d "$tpl" ]; then
    t0=$(now)
    say "building node template $tpl ($arch)"
    tmp=$tpl.tmp; rm -rf "$tmp"
    cp -a "$base" "$tmp"
    customize_template "$tmp" "$KEY.pub" || { rm -rf "$tmp"; die "customising the node template failed" "see the messages above"; }
    if [ "$arch" != "$HOST_ARCH" ]; then
      customize_foreign "$tmp" || { rm -rf "$tmp"; die "substituting the host's runc in the $arch template failed" "see the messages above"; }
    fi
    mv "$tmp" "$tpl"
    say "template ready in $(elapsed "$t0")s"
  fi
  prune_cache
}

# Remove cached templates / rootfs that no node uses and that are not current.
prune_cache() {
  local d used keep_base keep_tpl
  local keep_fbase keep_ftpl
  keep_base=$CACHE/rootfs-$(base_key); keep_tpl=$(template_dir)
  keep_fbase=$CACHE/rootfs-$(base_key "$FOREIGN_ARCH"); keep_ftpl=$(template_dir "$FOREIGN_ARCH")
  used=$(cat "$NODES"/*/template 2>/dev/null || true)
  for d in "$CACHE"/rootfs-* "$CACHE"/template-*; do
    [ -d "$d" ] || continue
    case $d in "$keep_base"|"$keep_tpl"|"$keep_fbase"|"$keep_ftpl") continue ;; esac
    if ! grep -qxF "$d" <<<"$used"; then say "removing stale cache $d"; rm -rf "$d"; fi
  done
}

cmd_prepare() {
  local vm=0 arch=
  while [ $# -gt 0 ]; do
    case $1 in
      --vm) vm=1 ;;
      --arch) [ $# -ge 2 ] || die "prepare: --arch needs $FOREIGN_ARCH"; arch=$2; shift ;;
      *) die "prepare: unknown argument '$1'" "usage: prepare [--vm] [--arch $FOREIGN_ARCH]" ;;
    esac; shift
  done
  case $arch in ""|"$HOST_ARCH") arch= ;; arm64|"$FOREIGN_ARCH") arch=$FOREIGN_ARCH ;;
    *) die "prepare: no node images for $arch" "node architectures are $HOST_ARCH and $FOREIGN_ARCH" ;; esac
  need_root
  ensure_host_packages
  lock
  ensure_key
  ensure_template
  [ -z "$arch" ] || ensure_template "$arch"
  [ $vm = 0 ] || vm_prepare
  say "prepare done (state $STATE, cache $CACHE)"
}

# ----------------------------------------------------------------------------
# network: bridge, guard, per-node netns + veth
# ----------------------------------------------------------------------------
ensure_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    say "creating bridge $BRIDGE ($HOST_IP/24)"
    ip link add "$BRIDGE" address "$BRIDGE_MAC" type bridge || die "cannot create bridge $BRIDGE" "is the bridge driver available (CONFIG_BRIDGE)?"
  fi
  # The host takes no part in IPv6 on the testbed network.
  echo 1 >"/proc/sys/net/ipv6/conf/$BRIDGE/disable_ipv6" 2>/dev/null || true
  ip link set "$BRIDGE" address "$BRIDGE_MAC"
  ip addr replace "$HOST_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

# Frames the nodes send to the host's MAC (i.e. to the host or through it as
# their router) must be addressed to 10.77.0.1 or stay inside 10.77.0.0/24;
# anything else is counted and dropped. Node-to-node traffic is bridged and
# never touches the host's IP stack, so it is not affected (pod networks that
# route other prefixes between nodes keep working).
ensure_guard() {
  if ! nft list table bridge "$GUARD_TABLE" >/dev/null 2>&1; then
    say "installing nft guard (table bridge $GUARD_TABLE)"
    nft -f - <<EOF || die "cannot install the nft guard table" "is nf_tables with the bridge family available (CONFIG_NF_TABLES_BRIDGE)?"
table bridge $GUARD_TABLE {
  counter escaped { }
  chain prerouting {
    type filter hook prerouting priority -300; policy accept;
    iifname "bale-*" ether daddr $BRIDGE_MAC ip daddr != $SUBNET limit rate 10/second log prefix "bale-testbed-escaped "
    iifname "bale-*" ether daddr $BRIDGE_MAC ip daddr != $SUBNET counter name "escaped" drop
    iifname "bale-*" ether daddr $BRIDGE_MAC ip6 daddr != fe80::/10 counter name "escaped" drop
    iifname "bale-*" ether daddr $BRIDGE_MAC ip6 daddr fe80::/10 drop
  }
}
EOF
  fi
}

cmd_guard_counter() {
  local out
  out=$(nft list counter bridge "$GUARD_TABLE" escaped 2>/dev/null) \
    || die "the guard table is not installed" "run '$0 up' first"
  sed -n 's/.*packets \([0-9]*\).*/\1/p' <<<"$out" | head -n1
}

# create netns + veth for a container node, or a tap for a VM (idempotent)
ensure_node_net() {
  local name=$1 ip hif ns
  ip=$(node_ip "$name"); hif=$(host_if "$name")
  ensure_bridge
  if [ "$(node_kind "$name")" = ct ]; then
    ns=$(netns_of "$name")
    if [ ! -e "/run/netns/$ns" ]; then
      ip link del "$hif" 2>/dev/null || true
      ip netns add "$ns" || die "cannot create network namespace $ns" "check 'ip netns add test' by hand"
    fi
    if ! ip link show "$hif" >/dev/null 2>&1; then
      ip -n "$ns" link del eth0 2>/dev/null || true
      ip link add "$hif" type veth peer name eth0 netns "$ns" \
        || die "cannot create veth $hif for $name" "is CONFIG_VETH available?"
      echo 1 >"/proc/sys/net/ipv6/conf/$hif/disable_ipv6" 2>/dev/null || true
      ip link set "$hif" master "$BRIDGE"
      ip link set "$hif" up
      ip -n "$ns" link set lo up
      ip -n "$ns" addr add "$ip/24" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$ns" route add default via "$HOST_IP"
    fi
  else
    if ! ip link show "$hif" >/dev/null 2>&1; then
      ip tuntap add dev "$hif" mode tap || die "cannot create tap $hif for $name" "is /dev/net/tun available (CONFIG_TUN)?"
      echo 1 >"/proc/sys/net/ipv6/conf/$hif/disable_ipv6" 2>/dev/null || true
      ip link set "$hif" master "$BRIDGE"
      ip link set "$hif" up
    fi
  fi
}

remove_node_net() {
  local name=$1
  ip link del "$(host_if "$name")" 2>/dev/null || true
  [ "$(node_kind "$name")" != ct ] || ip netns del "$(netns_of "$name")" 2>/dev/null || true
}

# ----------------------------------------------------------------------------
# cgroups: every container node gets its own cgroup in every hierarchy
# ----------------------------------------------------------------------------
# Print "MOUNTPOINT RELPATH" for every hierarchy this process is in.
cgroup_hierarchies() {
  local _ ctrls path mnt
  while IFS=: read -r _ ctrls path; do
    if [ -z "$ctrls" ]; then
      mnt=$(awk '$3=="cgroup2"{print $2; exit}' /proc/self/mounts)
    else
      mnt=$(awk -v want="$ctrls" '$3=="cgroup" {
              n = split($4, o, ","); m = split(want, w, ","); ok = 1
              for (i = 1; i <= m; i++) { f = 0; for (j = 1; j <= n; j++) if (o[j] == w[i]) f = 1; if (!f) ok = 0 }
              if (ok) { print $2; exit } }' /proc/self/mounts)
    fi
    [ -n "$mnt" ] && [ -d "$mnt" ] && echo "$mnt ${path%/}"
  done </proc/self/cgroup
}

# Move the calling process (pid $2) into <hierarchy>/<its cgroup>/bale-testbed/<node>
# in every hierarchy, and record the directories in the node's state.
join_node_cgroups() {
  local name=$1 pid=$2 dir=$3 mnt rel parent cg list=()
  while read -r mnt rel; do
    parent=$mnt$rel/bale-testbed
    cg=$parent/$name
    mkdir -p "$cg" || die "cannot create cgroup $cg" "is $mnt writable?"
    if [ -f "$cg/cpuset.cpus" ]; then
      local p
      for p in "$parent" "$cg"; do
        [ -n "$(cat "$p/cpuset.cpus")" ] || cat "$(dirname "$p")/cpuset.cpus" >"$p/cpuset.cpus"
        [ -n "$(cat "$p/cpuset.mems")" ] || cat "$(dirname "$p")/cpuset.mems" >"$p/cpuset.mems"
      done
    fi
    if [ "$(stat -fc %T "$mnt")" = cgroup2fs ] && [ -f "$parent/cgroup.subtree_control" ]; then
      # delegate whatever controllers we have (pure cgroup v2 hosts)
      local c ctrls=()
      read -r -a ctrls <"$parent/cgroup.controllers" || true
      for c in "${ctrls[@]+"${ctrls[@]}"}"; do echo "+$c" >"$parent/cgroup.subtree_control" 2>/dev/null || true; done
    fi
    echo "$pid" >"$cg/cgroup.procs" || die "cannot move the launcher of $name into $cg" "check that $mnt allows it"
    list+=("$cg")
  done < <(cgroup_hierarchies)
  [ ${#list[@]} -gt 0 ] || die "found no cgroup hierarchy in /proc/self/cgroup" "is /sys/fs/cgroup mounted?"
  printf '%s\n' "${list[@]}" >"$dir/cgroups"
}

# the cgroup dir used to find/kill/freeze a node's processes
node_cg_main() {
  local f=$1/cgroups c
  [ -f "$f" ] || return 1
  while read -r c; do
    [ -f "$c/cgroup.kill" ] && { echo "$c"; return; }
  done <"$f"
  while read -r c; do
    case $c in */freezer/*) echo "$c"; return ;; esac
  done <"$f"
  head -n1 "$f"
}
node_cg_freezer() {
  local f=$1/cgroups c
  while read -r c; do [ -f "$c/cgroup.freeze" ] && { echo "$c"; return; }; done <"$f"
  while read -r c; do [ -f "$c/freezer.state" ] && { echo "$c"; return; }; done <"$f"
  return 1
}
cg_pids() { if [ -d "$1" ]; then find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi; }

# Is the node's launcher alive? Its PID is stable: the launcher execs through
# unshare into systemd-nspawn, which lives as long as the container. This is the
# liveness test to trust while a node boots: a walk of its cgroup tree can see
# no process at all while nspawn and systemd move theirs into new subgroups.
ct_launcher_alive() {
  local name=$1 pid stat
  pid=$(cat "$NODES/$name/pid" 2>/dev/null) || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ] || return 1
  # the PID could have been reused since: it must still be this node's launcher.
  # A process in the middle of execve (bash -> unshare -> bash -> nspawn) shows an
  # empty cmdline for a moment; that is the launcher, not a death (seen in CI).
  local cmdline
  cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [ -n "$cmdline" ] || return 0
  grep -qxE -- "$name|--machine=$name" <<<"$cmdline"
}

# Dead on two looks a second apart: one look can fall between two execs.
ct_launcher_dead() {
  ct_launcher_alive "$1" && return 1
  sleep 1
  ! ct_launcher_alive "$1"
}

# Does the node have any process left (its launcher, or anything in its cgroups)?
ct_running() {
  local dir cg
  dir=$NODES/$1
  ct_launcher_alive "$1" && return 0
  cg=$(node_cg_main "$dir" 2>/dev/null) || return 1
  [ -n "$(cg_pids "$cg")" ]
}

ct_frozen() {
  local cg
  cg=$(node_cg_freezer "$NODES/$1" 2>/dev/null) || return 1
  if [ -f "$cg/cgroup.freeze" ]; then [ "$(cat "$cg/cgroup.freeze")" = 1 ]
  else [ "$(cat "$cg/freezer.state")" != THAWED ]; fi
}

ct_kill() {
  local name=$1 dir cg fz i pids
  dir=$NODES/$name
  cg=$(node_cg_main "$dir" 2>/dev/null) || return 0
  # kill first and look afterwards: an empty walk of the tree is not proof (see ct_launcher_alive)
  for i in $(seq 1 100); do
    pids=$(cg_pids "$cg")
    [ "$i" = 1 ] || [ -n "$pids" ] || ct_launcher_alive "$name" || break
    if [ -f "$cg/cgroup.kill" ]; then
      echo 1 >"$cg/cgroup.kill" 2>/dev/null || true
    else
      # shellcheck disable=SC2086,SC2046  # lists of PIDs: split on purpose
      kill -9 $pids $(cat "$dir/pid" 2>/dev/null) 2>/dev/null || true
    fi
    # v1-frozen tasks only die once thawed
    if fz=$(node_cg_freezer "$dir" 2>/dev/null); then
      { if [ -f "$fz/cgroup.freeze" ]; then echo 0 >"$fz/cgroup.freeze"; else echo THAWED >"$fz/freezer.state"; fi; } 2>/dev/null || true
    fi
    sleep 0.1
  done
  if [ -n "$(cg_pids "$cg")" ] || ct_launcher_alive "$name"; then
    die "could not kill every process of $name (cgroup $cg)" "look at 'cat $cg/cgroup.procs'"
  fi
  rm -f "$dir/pid"
  # A powered-off machine does not answer ARP; without this the empty netns
  # would still reset TCP connections.
  ip -n "$(netns_of "$name")" link set eth0 down 2>/dev/null || true
}

remove_node_cgroups() {
  local dir=$1 c
  [ -f "$dir/cgroups" ] || return 0
  while read -r c; do
    if [ -d "$c" ]; then find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    rmdir "$(dirname "$c")" 2>/dev/null || true   # bale-testbed/, when empty
  done <"$dir/cgroups"
  rm -f "$dir/cgroups"
}

# ----------------------------------------------------------------------------
# container nodes
# ----------------------------------------------------------------------------
# node.conf holds extra nspawn args, one per line (binds, tmpfs)
ct_create() {
  local name=$1 extra=$2 arch=${3:-$HOST_ARCH} dir tpl
  dir=$NODES/$name; tpl=$(template_dir "$arch")
  rm -rf "$dir"
  mkdir -p "$dir"/{upper,work,root,containerd,kubelet}
  echo "$tpl" >"$dir/template"
  echo "$arch" >"$dir/arch"
  printf '%s' "$extra" >"$dir/nspawn-args"
  # node identity in its own upper layer
  mkdir -p "$dir/upper/etc/ssh"
  echo "$name" >"$dir/upper/etc/hostname"
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/upper/etc/machine-id"; echo >>"$dir/upper/etc/machine-id"
}

# host keys for a new node, made on the host so known_hosts can be exact
# (no RSA: slow to make, and every client bale may use speaks ed25519)
ct_hostkeys() {
  local d=$NODES/$1/upper/etc/ssh
  ssh-keygen -q -t ed25519 -N '' -C "root@$1" -f "$d/ssh_host_ed25519_key" >/dev/null &&
  ssh-keygen -q -t ecdsa -N '' -C "root@$1" -f "$d/ssh_host_ecdsa_key" >/dev/null
}

ct_launch() {
  local name=$1 dir
  dir=$NODES/$name
  [ -d "$(cat "$dir/template")" ] || die "$name was made from $(cat "$dir/template"), which is gone" "run '$0 down' and then 'up' again"
  [ "$(node_arch "$name")" = "$HOST_ARCH" ] || ensure_binfmt
  ensure_node_net "$name"
  ip -n "$(netns_of "$name")" link set eth0 up
  mkdir -p "$dir/containerd" "$dir/kubelet"   # nodes made before these binds existed
  remove_node_cgroups "$dir"
  rm -f "$dir/pid"
  echo "=== start $(date -Is)" >>"$dir/console.log"
  # 9>&-: the node must not inherit (and hold forever) the testbed lock
  setsid -f "$BASH" "$SELF" __launch "$name" </dev/null >>"$dir/console.log" 2>&1 9>&-
  date +%s >"$dir/launched"
}

# internal: runs detached; joins cgroups, then becomes nspawn
internal_launch() {
  local name=$1 dir
  dir=$NODES/$name
  join_node_cgroups "$name" "$BASHPID" "$dir"
  echo "$BASHPID" >"$dir/pid"
  exec unshare --mount --propagation private -- "$BASH" "$SELF" __nspawn "$name"
}

# internal: in a private mount namespace; mounts the overlay and execs nspawn
internal_nspawn() {
  local name=$1 dir tpl
  dir=$NODES/$name; tpl=$(cat "$dir/template")
  # nspawn wants to own /run/systemd/nspawn (propagation dir); give it a private one
  mkdir -p /run/systemd/nspawn
  mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
  mount -t overlay overlay -o "lowerdir=$tpl,upperdir=$dir/upper,workdir=$dir/work" "$dir/root" \
    || die "cannot mount the overlay root of $name" "the state dir $STATE must be on a filesystem that can hold overlayfs upper dirs (ext4, xfs; not overlayfs)"
  local args=()
  mapfile -t args <"$dir/nspawn-args"
  export SYSTEMD_NSPAWN_API_VFS_WRITABLE=network
  exec systemd-nspawn --quiet -D "$dir/root" --machine="$name" --hostname="$name" \
    --uuid="$(cat "$dir/upper/etc/machine-id")" \
    --register=no --keep-unit --capability=all --system-call-filter=@keyring \
    --network-namespace-path="/run/netns/$(netns_of "$name")" \
    --resolv-conf=off --timezone=off --link-journal=no --console=read-only \
    --bind="$dir/containerd:/var/lib/containerd" \
    --bind="$dir/kubelet:/var/lib/kubelet" \
    "${args[@]}" --boot
}

# ----------------------------------------------------------------------------
# ssh
# ----------------------------------------------------------------------------
ssh_opts() {
  printf '%s\n' -i "$KEY" -o IdentitiesOnly=yes -o UserKnownHostsFile="$KNOWN_HOSTS" \
    -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=8
}

# known_hosts from the host keys `up` made for every node (containers: in their
# upper dir; VMs: handed to the guest through QEMU's fw_cfg)
write_known_hosts() {
  local name dir ip tmp
  tmp=$KNOWN_HOSTS.tmp; : >"$tmp"
  for name in $(list_nodes); do
    dir=$(node_dir "$name"); ip=$(node_ip "$name")
    local f
    for f in "$dir"/upper/etc/ssh/ssh_host_*_key.pub "$dir"/hostkeys/ssh_host_*_key.pub; do
      [ -f "$f" ] || continue
      printf '%s,%s %s\n' "$ip" "$name" "$(cut -d' ' -f1,2 "$f")" >>"$tmp"
    done
  done
  mv "$tmp" "$KNOWN_HOSTS"
}

# ssh_ok IP [SECONDS]: does root@IP run `true` within SECONDS (TCG VMs need long)
ssh_ok() {
  local ip=$1 limit=${2:-20}
  local opts; mapfile -t opts < <(ssh_opts)
  timeout "$limit" ssh "${opts[@]}" -o BatchMode=yes -o ConnectTimeout=3 -n "root@$ip" true >/dev/null 2>&1
}

cmd_ssh() {
  [ $# -ge 1 ] || die "ssh: which node?" "usage: ssh NODE [CMD...], e.g. ssh n1 hostname"
  local name=$1 ip; shift
  ip=$(node_ip "$name")
  [ -d "$(node_dir "$name")" ] || die "$name does not exist" "run '$0 up' (or 'up N --vm' for v nodes)"
  [ -s "$KEY" ] || die "no testbed key at $KEY" "run '$0 prepare'"
  local opts; mapfile -t opts < <(ssh_opts)
  if [ $# -eq 0 ] && [ -t 0 ]; then opts+=(-t); fi
  exec ssh "${opts[@]}" "root@$ip" "$@"
}

# ----------------------------------------------------------------------------
# up / down / status
# ----------------------------------------------------------------------------
# Parse a NODE:REST spec into SPEC_NODES (names; 'all' = prefix1..prefixN) and SPEC_REST
SPEC_NODES=(); SPEC_REST=
expand_spec() {
  local spec=$1 prefix=$2 count=$3 who i
  who=${spec%%:*}; SPEC_REST=${spec#*:}; SPEC_NODES=()
  [ "$who" != "$spec" ] || die "bad spec '$spec'" "expected NODE:..., e.g. n2:/var/lib/bale:64M"
  if [ "$who" = all ]; then
    for i in $(seq 1 "$count"); do SPEC_NODES+=("$prefix$i"); done
  else
    node_kind "$who" >/dev/null
    SPEC_NODES+=("$who")
  fi
}

# The global sysctls kubelet insists on (it writes them when they differ, and a container
# node cannot). The host's own values are saved once and restored by `down`.
KUBELET_HOST_SYSCTLS="vm.overcommit_memory=1 kernel.panic=10 kernel.panic_on_oops=1"
set_host_sysctls() {
  local saved=$STATE/host-sysctls kv key tmp
  if [ ! -f "$saved" ]; then
    tmp=$saved.tmp; : >"$tmp"
    for kv in $KUBELET_HOST_SYSCTLS; do
      key=${kv%%=*}
      printf '%s=%s\n' "$key" "$(sysctl -n "$key")" >>"$tmp"
    done
    mv "$tmp" "$saved"
  fi
  for kv in $KUBELET_HOST_SYSCTLS; do
    sysctl -q -w "$kv" >/dev/null || die "cannot set $kv on the host" "kubelet in the nodes needs it; set it by hand"
  done
}
restore_host_sysctls() {
  local saved=$STATE/host-sysctls kv
  [ -f "$saved" ] || return 0
  while read -r kv; do
    [ -n "$kv" ] && { sysctl -q -w "$kv" >/dev/null || warn "cannot restore $kv"; }
  done <"$saved"
  rm -f "$saved"
  say "host sysctls restored"
}

cmd_up() {
  local count=3 vm=0 binds=() tmpfss=() archs=() t0
  while [ $# -gt 0 ]; do
    case $1 in
      --vm) vm=1 ;;
      --arch) [ $# -ge 2 ] || die "--arch needs NODE=ARCH, e.g. n3=$FOREIGN_ARCH"; archs+=("$2"); shift ;;
      --arch=*) archs+=("${1#--arch=}") ;;
      --bind) [ $# -ge 2 ] || die "--bind needs NODE:HOST_DIR:NODE_DIR"; binds+=("$2"); shift ;;
      --bind=*) binds+=("${1#--bind=}") ;;
      --tmpfs) [ $# -ge 2 ] || die "--tmpfs needs NODE:NODE_DIR:SIZE"; tmpfss+=("$2"); shift ;;
      --tmpfs=*) tmpfss+=("${1#--tmpfs=}") ;;
      -h|--help) usage; exit 0 ;;
      [0-9]*) [[ $1 =~ ^[0-9]+$ ]] || die "up: '$1' is not a number"; count=$1 ;;
      *) die "up: unknown argument '$1'" "usage: up [N] [--vm] [--arch NODE=ARCH] [--bind NODE:HOST:NODE_DIR] [--tmpfs NODE:DIR:SIZE]" ;;
    esac; shift
  done
  local s
  for s in ${BALE_TESTBED_BINDS:-}; do binds+=("$s"); done
  for s in ${BALE_TESTBED_TMPFS:-}; do tmpfss+=("$s"); done
  for s in ${BALE_TESTBED_ARCH:-}; do archs+=("$s"); done
  need_root
  if [ $vm = 1 ]; then
    [ ${#archs[@]} -eq 0 ] || die "--arch is for container nodes only" "arm64 nodes are nspawn containers under qemu-user"
    { [ "$count" -ge 1 ] && [ "$count" -le "$MAX_VMS" ]; } || die "up --vm: N must be 1..$MAX_VMS"
    vm_up "$count" "${binds[@]+"${binds[@]}"}" "${tmpfss[@]+"${tmpfss[@]}"}"
    return
  fi
  { [ "$count" -ge 1 ] && [ "$count" -le "$MAX_NODES" ]; } || die "up: N must be 1..$MAX_NODES (got $count)"

  ensure_host_packages
  lock
  ensure_key
  ensure_template
  t0=$(now)

  # per-node architecture
  declare -A arch_of=()
  local a
  for s in "${archs[@]+"${archs[@]}"}"; do
    a=${s#*=}
    [ "$a" != "$s" ] || die "bad --arch '$s'" "expected NODE=ARCH, e.g. n3=$FOREIGN_ARCH or all=$FOREIGN_ARCH"
    case $a in arm64) a=aarch64 ;; amd64) a=x86_64 ;; esac
    { [ "$a" = "$HOST_ARCH" ] || [ "$a" = "$FOREIGN_ARCH" ]; } || die "bad --arch '$s'" "node architectures are $HOST_ARCH and $FOREIGN_ARCH"
    expand_spec "${s%%=*}:x" n "$count"
    for who in "${SPEC_NODES[@]}"; do arch_of[$who]=$a; done
  done
  for a in "${arch_of[@]+"${arch_of[@]}"}"; do
    [ "$a" = "$HOST_ARCH" ] || { ensure_template "$a"; break; }
  done

  # per-node extra nspawn args
  declare -A extra=()
  local who rest hostdir nodedir size
  for s in "${binds[@]+"${binds[@]}"}"; do
    expand_spec "$s" n "$count"; rest=$SPEC_REST
    hostdir=${rest%%:*}; nodedir=${rest#*:}
    { [ -n "$hostdir" ] && [ -n "$nodedir" ] && [ "$nodedir" != "$rest" ] && [ "${hostdir:0:1}" = / ] && [ "${nodedir:0:1}" = / ]; } \
      || die "bad --bind '$s'" "expected NODE:/abs/host/dir:/abs/node/dir, e.g. n1:/tmp/data:/data"
    mkdir -p "$hostdir"
    for who in "${SPEC_NODES[@]}"; do extra[$who]+="--bind=$hostdir:$nodedir"$'\n'; done
  done
  for s in "${tmpfss[@]+"${tmpfss[@]}"}"; do
    expand_spec "$s" n "$count"; rest=$SPEC_REST
    nodedir=${rest%%:*}; size=${rest#*:}
    { [ "${nodedir:0:1}" = / ] && [ "$size" != "$rest" ] && [[ $size =~ ^[0-9]+[KkMmGg]?$ ]]; } \
      || die "bad --tmpfs '$s'" "expected NODE:/abs/node/dir:SIZE, e.g. n2:/var/lib/bale:64M"
    for who in "${SPEC_NODES[@]}"; do extra[$who]+="--tmpfs=$nodedir:size=$size,mode=0755"$'\n'; done
  done

  ensure_bridge
  ensure_guard
  set_host_sysctls
  local name i started=() keygen=()
  for i in $(seq 1 "$count"); do
    name=n$i
    if ct_running "$name"; then
      [ "${arch_of[$name]:-$HOST_ARCH}" = "$(node_arch "$name")" ] \
        || warn "$name is already running as $(node_arch "$name"); --arch is not changed (run 'down' first)"
      if [ -n "${extra[$name]:-}" ] && [ "${extra[$name]}" != "$(cat "$NODES/$name/nspawn-args" 2>/dev/null)" ]; then
        warn "$name is already running; its --bind/--tmpfs options are not changed (run 'down' first)"
      fi
      continue
    fi
    if [ -d "$NODES/$name/upper" ] && [ -f "$NODES/$name/template" ]; then
      say "booting $name again (its disk is kept)"
      [ -z "${extra[$name]:-}" ] || printf '%s' "${extra[$name]}" >"$NODES/$name/nspawn-args"
    else
      ct_create "$name" "${extra[$name]:-}" "${arch_of[$name]:-$HOST_ARCH}"
      ct_hostkeys "$name" & keygen+=("$!:$name")
      say "starting $name"
    fi
    started+=("$name")
  done
  for s in "${keygen[@]+"${keygen[@]}"}"; do
    wait "${s%%:*}" || die "ssh-keygen -A for ${s#*:} failed" "check that $NODES is writable"
  done
  write_known_hosts
  for name in "${started[@]+"${started[@]}"}"; do ct_launch "$name"; done
  wait_nodes "$BOOT_TIMEOUT" "${started[@]+"${started[@]}"}"
  [ ${#started[@]} -eq 0 ] || say "${#started[@]} node(s) up in $(elapsed "$t0")s"
  print_table
}

# wait until every named node answers ssh
wait_nodes() {
  local timeout=$1; shift
  local name ip deadline pending=("$@") left next_note
  deadline=$(( $(date +%s) + timeout )); next_note=$(( $(date +%s) + 30 ))
  while [ ${#pending[@]} -gt 0 ]; do
    left=()
    for name in "${pending[@]}"; do
      ip=$(node_ip "$name")
      if [ "$(node_kind "$name")" = ct ]; then ssh_ok "$ip" 20 && continue; else ssh_ok "$ip" 90 && continue; fi
      # a launcher that wrote its pid and died, or one that never got that far
      if [ "$(node_kind "$name")" = ct ] &&
         { [ -f "$NODES/$name/pid" ] || [ $(( $(date +%s) - $(cat "$NODES/$name/launched" 2>/dev/null || echo 0) )) -gt 15 ]; } &&
         ct_launcher_dead "$name"; then
        tail -n 25 "$NODES/$name/console.log" >&2 || true
        die "$name stopped while booting (console: $NODES/$name/console.log)" "read the console log above"
      fi
      if [ "$(node_kind "$name")" = vm ] && ! vm_running "$name"; then
        tail -n 25 "$VMS/$name/console.log" >&2 || true
        die "$name (QEMU) exited while booting (console: $VMS/$name/console.log)" "read the console log above"
      fi
      # Seen once under heavy load: a guest that never printed a line in 15 minutes (its
      # twin booted in 33 s). systemd greets within a minute or two here; one fresh start
      # of a silent guest is cheaper than a failed run.
      if [ "$(node_kind "$name")" = vm ] && [ ! -f "$VMS/$name/relaunched" ] &&
         [ $(( $(date +%s) - $(cat "$VMS/$name/launched" 2>/dev/null || date +%s) )) -gt "$VM_SILENT_LIMIT" ] &&
         tail -n 1 "$VMS/$name/console.log" | grep -q '^=== start'; then
        say "$name printed nothing in ${VM_SILENT_LIMIT}s: starting it again (once)"
        touch "$VMS/$name/relaunched"
        vm_kill "$name"
        vm_launch "$name"
      fi
      left+=("$name")
    done
    pending=("${left[@]+"${left[@]}"}")
    [ ${#pending[@]} -gt 0 ] || break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      for name in "${pending[@]}"; do
        say "--- last console lines of $name ($(node_dir "$name")/console.log)"
        tail -n 25 "$(node_dir "$name")/console.log" >&2 || true
      done
      die "no SSH answer from ${pending[*]} after ${timeout}s" "look at the console logs above; raise BALE_TESTBED_BOOT_TIMEOUT / BALE_TESTBED_VM_BOOT_TIMEOUT if the machine is just slow"
    fi
    if [ "$(date +%s)" -ge "$next_note" ]; then
      say "still waiting for SSH on: ${pending[*]} ($(( timeout - deadline + $(date +%s) ))s of ${timeout}s)"
      next_note=$(( $(date +%s) + 30 ))
    fi
    sleep 0.3
  done
}

node_state() {
  local name=$1 hif st
  hif=$(host_if "$name")
  if [ "$(node_kind "$name")" = ct ]; then
    if ct_running "$name"; then st=running; ct_frozen "$name" && st=frozen; else st=stopped; fi
  else
    if vm_running "$name"; then st=running; vm_frozen "$name" && st=frozen; else st=stopped; fi
  fi
  if [ "$st" != stopped ] && ! ip -o link show "$hif" 2>/dev/null | grep -q '<[^>]*[<,]UP[,>]'; then st="$st,link-down"; fi
  echo "$st"
}

print_table() {
  local name arch foreign=()
  printf '%-5s %-12s %-8s %-18s %s\n' NAME IP ARCH STATE SSH
  for name in $(list_nodes); do
    arch=$HOST_ARCH; [ "$(node_kind "$name")" = vm ] || arch=$(node_arch "$name")
    [ "$arch" = "$HOST_ARCH" ] || foreign+=("$name")
    printf '%-5s %-12s %-8s %-18s %s\n' "$name" "$(node_ip "$name")" "$arch" "$(node_state "$name")" \
      "ssh -i $KEY -o UserKnownHostsFile=$KNOWN_HOSTS root@$(node_ip "$name")"
  done
  [ ${#foreign[@]} -eq 0 ] || printf '%s\n' \
    "${foreign[*]}: $FOREIGN_ARCH under $(binfmt_qemu); runc and nft substituted by the testbed:" \
    "  $SUBSTITUTE_DIR/{runc,nft} are the host's $HOST_ARCH programs, found first on PATH (under qemu-user" \
    "  no OCI runtime can create namespaces and nft has no netfilter netlink); bale's own arm64 runc is not run"
}

cmd_status() {
  if [ -z "$(list_nodes)" ]; then echo "no nodes (state dir $STATE)"; return; fi
  print_table
}

# never rm -rf through a mount (e.g. an overlay that leaked into the host namespace)
safe_rm_node_dir() {
  local dir=$1 m
  while read -r m; do
    umount -l "$m" 2>/dev/null || die "cannot unmount $m" "unmount it by hand, then run down again"
  done < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
  rm -rf "$dir"
}

cmd_down() {
  need_root
  lock
  local name dir c
  for name in $(list_nodes); do
    dir=$(node_dir "$name")
    if [ "$(node_kind "$name")" = ct ]; then
      ct_kill "$name"
      remove_node_cgroups "$dir"
    else
      vm_kill "$name"
    fi
    remove_node_net "$name"
    safe_rm_node_dir "$dir"
    say "removed $name"
  done
  # leftovers of crashed runs
  for c in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^bale-[nv][0-9]*$' || true); do ip link del "$c" 2>/dev/null || true; done
  for c in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^bale-n[0-9]*$' || true); do ip netns del "$c" 2>/dev/null || true; done
  while read -r c; do
    find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done < <(find /sys/fs/cgroup -maxdepth 6 -type d -name bale-testbed 2>/dev/null)
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; say "removed bridge $BRIDGE"; fi
  if nft list table bridge "$GUARD_TABLE" >/dev/null 2>&1; then nft delete table bridge "$GUARD_TABLE"; say "removed guard table"; fi
  rmdir /run/systemd/nspawn 2>/dev/null || true
  restore_host_sysctls
  remove_binfmt
  rm -rf "$NODES" "$VMS" "$KNOWN_HOSTS"
  say "down: nothing left (key and image cache kept in $STATE, $CACHE)"
}

# ----------------------------------------------------------------------------
# faults
# ----------------------------------------------------------------------------
need_node() {
  [ $# -ge 1 ] || die "which node?" "give a node name such as n1 (see 'status')"
  node_kind "$1" >/dev/null
  [ -d "$(node_dir "$1")" ] || die "$1 does not exist" "start it with '$0 up'"
}

# The host side of a running node's link (a fault's handle on it).
existing_host_if() {
  local name=$1 hif
  need_root; need_node "$name"
  hif=$(host_if "$name")
  ip link show "$hif" >/dev/null 2>&1 || die "$name has no host link $hif" "is it up? see 'status'"
  echo "$hif"
}

cmd_link() {
  local updown=$1 name=$2 hif
  hif=$(existing_host_if "$name") || exit $?
  ip link set "$hif" "$updown"
  say "$name link $updown"
}

cmd_link_rate() {
  local name=$1 rate=$2 hif
  hif=$(existing_host_if "$name") || exit $?
  if [ "$rate" = off ]; then
    tc qdisc del dev "$hif" root 2>/dev/null || true
    say "$name link rate unlimited"
    return
  fi
  # Frames leave the host side of the link towards the node: shaping that side slows what
  # the node receives from the host and every other node alike.
  tc qdisc replace dev "$hif" root tbf rate "$rate" burst 256kb latency 100ms \
    || die "cannot shape $hif to $rate" "RATE is a tc rate such as 100mbit; the host kernel needs sch_tbf"
  say "$name receives at most $rate"
}

cmd_kill() {
  local name=$1
  need_root; need_node "$name"; lock
  if [ "$(node_kind "$name")" = ct ]; then ct_kill "$name"; else vm_kill "$name"; fi
  say "$name powered off (disk kept; 'start $name' boots it again)"
}

cmd_start() {
  local name=$1 t0
  need_root; need_node "$name"; lock
  t0=$(now)
  if [ "$(node_kind "$name")" = ct ]; then
    if ct_running "$name"; then say "$name is already running"; return; fi
    ensure_bridge; ensure_guard
    ct_launch "$name"
    wait_nodes "$BOOT_TIMEOUT" "$name"
  else
    if vm_running "$name"; then say "$name is already running"; return; fi
    ensure_bridge; ensure_guard
    vm_launch "$name"
    wait_nodes "$VM_BOOT_TIMEOUT" "$name"
  fi
  say "$name answers SSH again after $(elapsed "$t0")s"
}

# CPU time a container node has used since it started, in nanoseconds (every process in it, in
# user and kernel mode): the benchmarks read it before and after a step to say what the step
# would take with a core of its own per node.
cmd_cpu() {
  local name=$1 part=${2:-all} c v1 v2
  need_root; need_node "$name"
  case $part in
    all) v1=cpuacct.usage; v2=usage_usec ;;
    kernel) v1=cpuacct.usage_sys; v2=system_usec ;;
    *) die "cpu $name $part: unknown part" "give nothing (all) or kernel" ;;
  esac
  [ "$(node_kind "$name")" = ct ] || die "$name is a VM" "cpu reads a container node's cgroup"
  ct_running "$name" || die "$name is not running" "start it first"
  # v1's cpuacct first: a v1 cpu controller has a cpu.stat too, without the usage lines.
  while read -r c; do
    if [ -f "$c/$v1" ]; then cat "$c/$v1"; return; fi
  done <"$NODES/$name/cgroups"
  while read -r c; do
    if [ -f "$c/cpu.stat" ] && grep -q "^$v2 " "$c/cpu.stat"; then
      awk -v k="$v2" '$1 == k { printf "%.0f\n", $2 * 1000 }' "$c/cpu.stat"; return
    fi
  done <"$NODES/$name/cgroups"
  die "no CPU accounting for $name" "needs the cgroup v1 cpuacct controller or cgroup v2's cpu.stat"
}

cmd_freeze() {
  local what=$1 name=$2 cg i
  need_root; need_node "$name"
  if [ "$(node_kind "$name")" = vm ]; then vm_freeze "$what" "$name"; return; fi
  ct_running "$name" || die "$name is not running" "start it first"
  cg=$(node_cg_freezer "$NODES/$name") || die "no cgroup freezer for $name" "needs cgroup v2 cgroup.freeze or the v1 freezer controller"
  if [ -f "$cg/cgroup.freeze" ]; then
    if [ "$what" = freeze ]; then echo 1 >"$cg/cgroup.freeze"; else echo 0 >"$cg/cgroup.freeze"; fi
    for i in $(seq 1 100); do
      if [ "$what" = freeze ]; then grep -q '^frozen 1' "$cg/cgroup.events" && break
      else grep -q '^frozen 0' "$cg/cgroup.events" && break; fi
      sleep 0.05
    done
  else
    if [ "$what" = freeze ]; then echo FROZEN >"$cg/freezer.state"; else echo THAWED >"$cg/freezer.state"; fi
    for i in $(seq 1 100); do
      case $what:$(cat "$cg/freezer.state") in freeze:FROZEN|thaw:THAWED) break ;; esac
      sleep 0.05
    done
  fi
  if [ "$what" = freeze ]; then say "$name frozen"; else say "$name thawed"; fi
}

# ----------------------------------------------------------------------------
# VM nodes (QEMU, TCG)
# ----------------------------------------------------------------------------
# Debian 12's qemu-system-x86 (7.2) cannot be installed next to a newer
# qemu-utils, so its packages are unpacked into the cache and QEMU is pointed
# at its firmware with -L. The guest kernel is booted directly with a tiny
# busybox initrd that only loads the virtio disk and ext4 modules.
VM_PACKAGES="linux-image-amd64 systemd-sysv udev dbus openssh-server iproute2 nftables ipvsadm kmod procps sudo ca-certificates less iputils-ping busybox-static"
VM_REV=1
QEMU_DEBS="qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu"
VM_DISK_SIZE=${BALE_TESTBED_VM_DISK_SIZE:-10G}

vm_mac() { printf '52:54:00:77:00:%02d' "$((20 + $(node_num "$1")))"; }   # v1 -> ...:21 (= its IP's last octet)
vm_image_key() { { printf '%s|%s|%s|' "$SUITE" "$VM_PACKAGES" "$VM_REV"; declare -f customize_common customize_vm build_initrd; cat "$KEY.pub"; } | hash; }
vm_image_dir() { echo "$CACHE/vm-$(vm_image_key)"; }

# QEMU_DIR: an already unpacked QEMU in the cache if there is one (no apt call),
# else where apt's candidate version is to be unpacked. Call without $(...) to keep it.
QEMU_DIR=
resolve_qemu_dir() {
  local d v
  [ -z "$QEMU_DIR" ] || return 0
  for d in "$CACHE"/qemu-*; do
    [ "$(cat "$d/.unpacked" 2>/dev/null)" = "$QEMU_DEBS" ] && { QEMU_DIR=$d; return 0; }
  done
  v=$(apt-cache policy qemu-system-x86 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then
    apt-get update -q >/dev/null 2>&1 || true; APT_UPDATED=1
    v=$(apt-cache policy qemu-system-x86 2>/dev/null | awk '/Candidate:/ {print $2}')
    { [ -n "$v" ] && [ "$v" != "(none)" ]; } || die "apt knows no qemu-system-x86 package" "check /etc/apt/sources.list* (Debian main must be there) and run apt-get update"
  fi
  QEMU_DIR=$CACHE/qemu-${v//[^A-Za-z0-9.+-]/_}
}
qemu_dir() { resolve_qemu_dir; echo "$QEMU_DIR"; }

# does the unpacked QEMU start (its libraries and TCG module load)?
qemu_probe() {
  local dir=$1 out
  out=$(QEMU_MODULE_DIR=$dir/usr/lib/x86_64-linux-gnu/qemu "$dir/usr/bin/qemu-system-x86_64" -L "$dir/usr/share/qemu" \
        -machine pc -accel tcg -nodefaults -display none -S -no-user-config -monitor none -serial none \
        -device virtio-net-pci,romfile= -bios "$dir/usr/share/seabios/bios-256k.bin" \
        -daemonize -pidfile "$dir/.probe.pid" 2>&1) || { QEMU_PROBE_ERR=$out; return 1; }
  kill "$(cat "$dir/.probe.pid")" 2>/dev/null || true
  rm -f "$dir/.probe.pid"
}

ensure_qemu() {
  local dir tmp libs deb missing=()
  resolve_qemu_dir
  dir=$QEMU_DIR
  if [ "$(cat "$dir/.unpacked" 2>/dev/null)" = "$QEMU_DEBS" ] && qemu_probe "$dir"; then return 0; fi
  # its shared libraries come from ordinary Debian packages
  libs=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances qemu-system-x86 \
         | awk '/Depends:/ {print $2}' | grep -v -E '^(<|qemu-|seabios|ipxe)' | sort -u)
  for deb in $libs; do dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q 'ok installed' || missing+=("$deb"); done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  if [ "$(cat "$dir/.unpacked" 2>/dev/null)" != "$QEMU_DEBS" ]; then
    say "unpacking QEMU (Debian qemu-system-x86 ${dir#"$CACHE"/qemu-}) into $dir"
    tmp=$dir.tmp; rm -rf "$tmp"; mkdir -p "$tmp/debs"
    chown _apt "$tmp/debs" 2>/dev/null || true
    # shellcheck disable=SC2086  # a list of package names: split on purpose
    (cd "$tmp/debs" && apt-get download -q $QEMU_DEBS >/dev/null 2>"$tmp/download.log") \
      || { cat "$tmp/download.log" >&2; die "apt-get download $QEMU_DEBS failed" "check the Debian mirror in /etc/apt/sources.list*"; }
    for deb in "$tmp"/debs/*.deb; do dpkg -x "$deb" "$tmp"; done
    rm -rf "$tmp/debs"
    echo "$QEMU_DEBS" >"$tmp/.unpacked"
    rm -rf "$dir"; mv "$tmp" "$dir"
  fi
  qemu_probe "$dir" || die "the unpacked QEMU in $dir does not start: ${QEMU_PROBE_ERR:-}" "delete $dir and run 'prepare --vm' again"
}

# VM-only image changes
customize_vm() {
  local r=$1 pub=$2 i
  customize_common "$r" "$pub"
  # an address for every possible VM, picked by MAC (v1 = 52:54:00:77:00:21 -> 10.77.0.21)
  mkdir -p "$r/etc/systemd/network"
  for i in $(seq 1 "$MAX_VMS"); do
    cat >"$r/etc/systemd/network/10-bale-v$i.network" <<EOF
[Match]
MACAddress=$(printf '52:54:00:77:00:%02d' "$((20 + i))")

[Network]
Address=10.77.0.$((20 + i))/24
Gateway=$HOST_IP
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
  done
  chroot "$r" systemctl enable -q systemd-networkd.service >/dev/null 2>&1
  chroot "$r" systemctl mask -q systemd-networkd-wait-online.service >/dev/null 2>&1
  # ipvsadm's LSB service only restores saved rules (none) and costs boot time
  ln -sf /dev/null "$r/etc/systemd/system/ipvsadm.service"
  mkdir -p "$r/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\n' >"$r/etc/systemd/journald.conf.d/bale-testbed.conf"
  echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$r/etc/fstab"
  rm -f "$r"/boot/initrd.img* "$r"/initrd.img* "$r"/initrd.img.old
}

# build_initrd ROOTFS OUT: busybox + the modules needed to mount /dev/vda (ext4)
build_initrd() {
  local r=$1 out=$2 kver stage dep m f order=() seen=" "
  # shellcheck disable=SC2012  # kernel version directories: plain names
  kver=$(ls "$r/lib/modules" | sort -V | tail -n1)
  dep=$r/lib/modules/$kver/modules.dep
  stage=$(mktemp -d)
  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,root,mods}
  cp "$r/bin/busybox" "$stage/bin/busybox"
  add_mod() {   # add module $1 (by name) after its dependencies
    local name=$1 line path deps d
    line=$(grep -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$dep" | head -n1)
    [ -n "$line" ] || return 0     # built in
    path=${line%%:*}; deps=${line#*:}
    # shellcheck disable=SC2086  # the dependency list: split on purpose
    for d in $(echo $deps | tr ' ' '\n' | tac); do add_mod "$(basename "${d%%.ko*}")"; done
    case $seen in *" $path "*) return 0 ;; esac
    seen="$seen$path "; order+=("$path")
  }
  for m in virtio_pci virtio_blk crc32c_generic crc32c-intel ext4; do add_mod "$m"; done
  for f in "${order[@]}"; do cp "$r/lib/modules/$kver/$f" "$stage/mods/"; basename "$f" >>"$stage/mods/order"; done
  cat >"$stage/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/order); do insmod "/mods/$m" 2>/dev/null || true; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 -o rw /dev/vda /root; then
  echo "bale initrd: cannot mount /dev/vda; loaded: $(cat /proc/modules | cut -d' ' -f1 | tr '\n' ' ')"
  sleep 5; reboot -f
fi
umount /proc /sys
mount --move /dev /root/dev
exec switch_root /root /sbin/init
EOF
  chmod 755 "$stage/init"
  (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
  rm -rf "$stage"
}

vm_prepare() {
  ensure_host_packages cpio:cpio qemu-img:qemu-utils mkfs.ext4:e2fsprogs
  ensure_key
  ensure_qemu
  local img tmp t0 root
  img=$(vm_image_dir)
  if [ ! -f "$img/base.qcow2" ]; then
    t0=$(now)
    tmp=$img.tmp; root=$tmp/root
    rm -rf "$tmp"; mkdir -p "$tmp"
    say "building VM image ($SUITE + kernel) in $img; takes a few minutes"
    resolve_mirrors
    # The kernel's postinst would build a big initramfs we do not use: divert
    # update-initramfs to /bin/true while the image is built.
    # The hooks are run by mmdebstrap, which passes the root directory as $1.
    # shellcheck disable=SC2016
    mm_sources | mmdebstrap --variant=minbase --include="${VM_PACKAGES// /,}" \
        --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -sf /bin/true "$1/usr/sbin/update-initramfs"' \
        --customize-hook='rm -f "$1/usr/sbin/update-initramfs" && chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$root" - >"$CACHE/mmdebstrap-vm.log" 2>&1 \
      || { tail -n 20 "$CACHE/mmdebstrap-vm.log" >&2; rm -rf "$tmp"
           die "mmdebstrap for the VM image failed (log: $CACHE/mmdebstrap-vm.log)" "check that $MIRROR is reachable (or set BALE_TESTBED_MIRROR)"; }
    customize_vm "$root" "$KEY.pub" || { rm -rf "$tmp"; die "customising the VM image failed" "see the messages above"; }
    # shellcheck disable=SC2012  # kernel file names: plain
    cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)" "$tmp/vmlinuz"
    build_initrd "$root" "$tmp/initrd.img" || { rm -rf "$tmp"; die "building the VM initrd failed"; }
    say "making the ext4 disk image ($VM_DISK_SIZE, sparse)"
    mkfs.ext4 -q -F -L bale-root -d "$root" "$tmp/base.raw" "$VM_DISK_SIZE" \
      || { rm -rf "$tmp"; die "mkfs.ext4 -d failed" "needs e2fsprogs >= 1.43 and free space in $CACHE"; }
    rm -rf "$root"
    qemu-img convert -f raw -O qcow2 "$tmp/base.raw" "$tmp/base.qcow2" || { rm -rf "$tmp"; die "qemu-img convert failed"; }
    rm -f "$tmp/base.raw"
    mv "$tmp" "$img"
    say "VM image ready in $(elapsed "$t0")s"
  fi
  # drop VM images and QEMU builds no VM uses any more
  local d used keep_q
  used=$(cat "$VMS"/*/image 2>/dev/null || true); keep_q=$(qemu_dir)
  for d in "$CACHE"/vm-* "$CACHE"/qemu-*; do
    [ -d "$d" ] || continue
    # qemu-user-* is the arm64 nodes' interpreter, not a VM's QEMU: keep it.
    case $d in "$img"|"$keep_q"|*.tmp|"$CACHE"/qemu-user-*) continue ;; esac
    grep -qxF "$d" <<<"$used" || { say "removing stale cache $d"; rm -rf "$d"; }
  done
}

vm_pid() { cat "$VMS/$1/qemu.pid" 2>/dev/null; }
vm_running() {
  local pid st
  pid=$(vm_pid "$1") || return 1
  [ -r "/proc/$pid/stat" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "bale-$1" ] || return 1
  st=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$st" != Z ] && [ "$st" != X ]
}
vm_frozen() {
  local pid
  pid=$(vm_pid "$1") || return 1
  [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" = T ]
}
vm_kill() {
  local name=$1 pid i
  vm_running "$name" || { rm -f "$VMS/$name/qemu.pid"; return 0; }
  pid=$(vm_pid "$name")
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do vm_running "$name" || break; sleep 0.1; done
  vm_running "$name" && die "QEMU of $name (pid $pid) does not die" "look at 'ps -p $pid'"
  rm -f "$VMS/$name/qemu.pid"
}
vm_freeze() {
  local what=$1 name=$2 pid
  vm_running "$name" || die "$name is not running" "start it first"
  pid=$(vm_pid "$name")
  if [ "$what" = freeze ]; then kill -STOP "$pid"; say "$name frozen (QEMU stopped)"; else kill -CONT "$pid"; say "$name thawed"; fi
}

vm_launch() {
  local name=$1 dir img q ip mac
  dir=$VMS/$name; img=$(cat "$dir/image"); q=$(qemu_dir); ip=$(node_ip "$name"); mac=$(vm_mac "$name")
  [ -f "$img/base.qcow2" ] || die "$name was made from $img, which is gone" "run '$0 down' and 'up --vm' again"
  [ -x "$q/usr/bin/qemu-system-x86_64" ] || die "QEMU is not unpacked in $q" "run '$0 prepare --vm'"
  ensure_node_net "$name"
  rm -f "$dir/qemu.pid"
  echo "=== start $(date -Is)" >>"$dir/console.log"
  QEMU_MODULE_DIR=$q/usr/lib/x86_64-linux-gnu/qemu \
  "$q/usr/bin/qemu-system-x86_64" -L "$q/usr/share/qemu" -L "$q/usr/share/seabios" \
    -name "$name,process=bale-$name" \
    -machine pc -accel tcg,tb-size=256 -cpu max -smp "$VM_CPUS" -m "$VM_MEM" \
    -nodefaults -no-user-config -display none -vga none \
    -chardev "file,id=con,path=$dir/console.log,append=on" -serial chardev:con \
    -monitor "unix:$dir/monitor.sock,server=on,wait=off" \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw mitigations=off net.ifnames=0 systemd.hostname=$name loglevel=4" \
    -drive "file=$dir/disk.qcow2,if=virtio,format=qcow2,cache=writeback,discard=unmap" \
    -netdev "tap,id=n0,ifname=$(host_if "$name"),script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=" \
    -device virtio-rng-pci \
    -fw_cfg "name=opt/bale/ssh_host_ed25519_key,file=$dir/hostkeys/ssh_host_ed25519_key" \
    -fw_cfg "name=opt/bale/ssh_host_ed25519_key.pub,file=$dir/hostkeys/ssh_host_ed25519_key.pub" \
    -fw_cfg "name=opt/bale/ssh_host_ecdsa_key,file=$dir/hostkeys/ssh_host_ecdsa_key" \
    -fw_cfg "name=opt/bale/ssh_host_ecdsa_key.pub,file=$dir/hostkeys/ssh_host_ecdsa_key.pub" \
    -daemonize -pidfile "$dir/qemu.pid" </dev/null >>"$dir/qemu.log" 2>&1 9>&- \
    || { tail -n 20 "$dir/qemu.log" >&2; die "QEMU for $name did not start (log: $dir/qemu.log)" "read the log above"; }
  date +%s >"$dir/launched"
}

vm_up() {
  local count=$1 t0 name i img started=()
  shift
  [ $# -eq 0 ] || die "--bind/--tmpfs are for container nodes only" "drop them for --vm"
  ensure_host_packages
  lock
  ensure_key
  vm_prepare
  img=$(vm_image_dir)
  t0=$(now)
  ensure_bridge
  ensure_guard
  for i in $(seq 1 "$count"); do
    name=v$i
    vm_running "$name" && continue
    if [ -f "$VMS/$name/disk.qcow2" ] && [ -f "$VMS/$name/image" ]; then
      say "booting $name again (its disk is kept)"
    else
      rm -rf "${VMS:?}/$name"; mkdir -p "$VMS/$name/hostkeys"
      echo "$img" >"$VMS/$name/image"
      qemu-img create -q -f qcow2 -b "$img/base.qcow2" -F qcow2 "$VMS/$name/disk.qcow2" \
        || die "qemu-img create for $name failed" "check free space in $VMS"
      ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$VMS/$name/hostkeys/ssh_host_ed25519_key" >/dev/null
      ssh-keygen -q -t ecdsa -N '' -C "root@$name" -f "$VMS/$name/hostkeys/ssh_host_ecdsa_key" >/dev/null
      say "starting $name (QEMU/TCG: expect a few minutes until SSH answers)"
    fi
    started+=("$name")
  done
  write_known_hosts
  for name in "${started[@]+"${started[@]}"}"; do vm_launch "$name"; done
  wait_nodes "$VM_BOOT_TIMEOUT" "${started[@]+"${started[@]}"}"
  [ ${#started[@]} -eq 0 ] || say "${#started[@]} VM(s) up in $(elapsed "$t0")s"
  print_table
}

# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
main() {
  local cmd=${1:-}
  [ $# -eq 0 ] || shift
  case $cmd in
    ""|-h|--help|help) usage ;;
    prepare) cmd_prepare "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    ssh) cmd_ssh "$@" ;;
    ip) [ $# -eq 1 ] || die "usage: ip NODE"; node_ip "$1" ;;
    key) [ -s "$KEY" ] || die "no key yet at $KEY" "run '$0 prepare'"; echo "$KEY" ;;
    known-hosts) echo "$KNOWN_HOSTS" ;;
    status) cmd_status ;;
    link-down) [ $# -eq 1 ] || die "usage: link-down NODE"; cmd_link down "$1" ;;
    link-up) [ $# -eq 1 ] || die "usage: link-up NODE"; cmd_link up "$1" ;;
    link-rate) [ $# -eq 2 ] || die "usage: link-rate NODE RATE|off" "e.g. link-rate n2 100mbit"; cmd_link_rate "$1" "$2" ;;
    kill) [ $# -eq 1 ] || die "usage: kill NODE"; cmd_kill "$1" ;;
    start) [ $# -eq 1 ] || die "usage: start NODE"; cmd_start "$1" ;;
    freeze) [ $# -eq 1 ] || die "usage: freeze NODE"; cmd_freeze freeze "$1" ;;
    thaw) [ $# -eq 1 ] || die "usage: thaw NODE"; cmd_freeze thaw "$1" ;;
    cpu) case $# in 1|2) cmd_cpu "$@" ;; *) die "usage: cpu NODE [kernel]" ;; esac ;;
    guard-counter) cmd_guard_counter ;;
    mirrors) cmd_mirrors "$@" ;;
    __launch) internal_launch "$@" ;;
    __nspawn) internal_nspawn "$@" ;;
    *) usage >&2; die "unknown command '$cmd'" "see the list above" ;;
  esac
}

main "$@"
