#!/usr/bin/env bash
# Builds the inputs of the Kubernetes base bundle from source (Go modules through the Go module
# proxy, pinned in go/*/go.mod and go.sum; C from Debian), and lays them out in this directory
# for `bale build -f examples/kubernetes/Kubefile -t kubernetes:v1.36.3 examples/kubernetes`:
#
#   bin/        kubeadm kubelet kubectl crictl helm containerd containerd-shim-runc-v2 ctr runc
#   cni/bin/    the standard CNI plugins (bridge, host-local, loopback, portmap, ...)
#   images/     one OCI image layout per image kubeadm wants, named as kubeadm names it
#   imageList   those image names, which tells bale build which images the bundle carries
#
#   build-inputs.sh [--arch amd64|arm64] [--out DIR]
#     --arch   the architecture to build for (default: this machine's)
#     --out    where to lay them out (default: this directory); a bundle of both
#              architectures takes arm64's from another directory, e.g. --out arm64
#
# Every binary is static. runc is the one cgo program: glibc and libseccomp (the .a from
# Debian's libseccomp-dev, extracted into a sysroot, never installed) linked in. The images are
# the static binary in /usr/local/bin on a small /etc (passwd, group, nsswitch.conf, the CA
# bundle); kube-proxy's adds iptables (nft backend), conntrack and nft with their libraries from
# Debian bookworm's .debs; pause is `gcc -Os -static` of Kubernetes' pause.c.
#
# Every component is cached outside the clone, in
# ${BALE_K8S_CACHE:-/var/cache/bale-kubernetes}/<arch>/<component>-<hash>, the hash covering
# what makes it: its go.mod and go.sum, versions, architecture, toolchain and the recipe's own
# text (the shell function below). Components are built in a temporary directory renamed when
# complete, so a killed build never looks done; a second run with nothing changed only copies.
#
# Versions: Kubernetes K8S_VERSION (default v1.36.3) from go/kubernetes/, or from
# go/kubernetes-v1.MINOR/ for another minor (make one with go/kubernetes-module.sh); the rest
# from their go/<component>/go.mod. The etcd, coredns and pause tags are the versions built.
set -euo pipefail
umask 022 # the modes go into the image layers
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../../scripts/lib.sh
. "$HERE/../../scripts/lib.sh"
# shellcheck source=../oci-layout.sh
. "$HERE/../oci-layout.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
ARCH="$(dpkg --print-architecture)"
OUT="$HERE"
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) [ $# -ge 2 ] || die "--arch needs amd64 or arm64"; ARCH="$2"; shift 2 ;;
        --arch=*) ARCH="${1#--arch=}"; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$ARCH" in
    amd64) TRIPLET=x86_64-linux-gnu ;;
    arm64) TRIPLET=aarch64-linux-gnu ;;
    *) die "--arch is amd64 or arm64, not $ARCH" ;;
esac
HOST_ARCH="$(dpkg --print-architecture)"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
if [ "$ARCH" = "$HOST_ARCH" ]; then CC=gcc STRIP=strip; else CC="$TRIPLET-gcc" STRIP="$TRIPLET-strip"; fi

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
[[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || die "K8S_VERSION is v1.MINOR.PATCH, not $K8S_VERSION"
K8S_MINOR="${BASH_REMATCH[1]}"
CACHE="${BALE_K8S_CACHE:-/var/cache/bale-kubernetes}/$ARCH"
GODIR="$HERE/go"
export GOFLAGS="-buildvcs=false -mod=readonly" GOOS=linux GOARCH="$ARCH"
export OCI_GZIP_LEVEL=6 OCI_ARCH="$ARCH"

# --- tools --------------------------------------------------------------------------------

need_apt jq gcc libc6-dev pkgconf binutils ca-certificates
if [ "$ARCH" != "$HOST_ARCH" ]; then
    if [ "$ARCH" != arm64 ] || [ "$HOST_ARCH" != amd64 ]; then die "cross builds go from amd64 to arm64 only"; fi
    need_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
    # Debian's arm64 .debs (libseccomp-dev, kube-proxy's netfilter tools) are downloaded,
    # never installed; apt only needs to know the architecture.
    need_foreign_arch arm64
fi
command -v go >/dev/null || die "go not found: install Go 1.26 or later (go.dev/dl) and put it on PATH"
GO_VERSION="$(go env GOVERSION)"
mkdir -p "$CACHE"
# Go's build cache grows by about 15 GB while Kubernetes compiles. The outputs are cached here
# by hash, so that cache is worth nothing afterwards: it lives in a temporary directory that
# goes when the script ends, instead of filling the disk the test nodes' kubelets watch.
GOCACHE="$(mktemp -d "${TMPDIR:-/var/tmp}/bale-go-build.XXXXXX")"
export GOCACHE

# apt_show PKG...: "PACKAGE ARCHITECTURE VERSION" per package apt would download. The package
# lists are refreshed once when they lack one. One apt-cache call: each costs a second.
apt_show() {
    local out
    if ! out="$(apt-cache show --no-all-versions "$@" 2>/dev/null)"; then
        [ -z "${BALE_APT_UPDATED:-}" ] || die "apt knows none of: $* (check the apt sources)"
        say "apt-get update (the package lists lack one of: $*)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        export BALE_APT_UPDATED=1
        out="$(apt-cache show --no-all-versions "$@")" || die "apt knows none of: $* (check the apt sources)"
    fi
    awk '/^Package:/ { p = $2 } /^Architecture:/ { a = $2 } /^Version:/ { v = $2 }
        /^$/ && p != "" { print p, a, v; p = "" } END { if (p != "") print p, a, v }' <<<"$out"
}
# apt_versions PKG...: "NAME=VERSION" per package for ARCH, NAME being what apt-get download
# takes: PKG:ARCH, or PKG for an arch-independent one (apt has no netbase:arm64).
apt_versions() {
    local p a v arch_pkgs=()
    while read -r p a v; do
        if [ "$a" = all ]; then printf '%s=%s\n' "$p" "$v"; else arch_pkgs+=("$p:$ARCH"); fi
    done < <(apt_show "$@")
    [ ${#arch_pkgs[@]} -eq 0 ] || apt_show "${arch_pkgs[@]}" | while read -r p a v; do printf '%s:%s=%s\n' "$p" "$a" "$v"; done
}
# apt-get download into the current directory, which apt's sandbox user (_apt) cannot write.
apt_download() {
    if [ "$(id -u)" -eq 0 ]; then apt-get -o APT::Sandbox::User=root download "$@"; else apt-get download "$@"; fi
}

# --- cache --------------------------------------------------------------------------------

TMPS=("$GOCACHE")
cleanup() { [ ${#TMPS[@]} -eq 0 ] || rm -rf "${TMPS[@]}"; }
trap cleanup EXIT
fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
fmt_size() { du -sb "$1" | awk '{ printf "%.1f MB", $1 / 1000000 }'; }

declare -A DIR STATUS TIME
ORDER=()

# component NAME KEY RECIPE [ARGS...]: DIR[NAME] is the cached output of `RECIPE OUT ARGS...`,
# made when missing. KEY is what makes it besides the recipe's text (file contents, versions, and
# what ARGS mean: they are not hashed, being paths that change from run to run).
component() {
    local name="$1" key="$2" fn="$3"
    shift 3
    local hash dir tmp start
    hash="$({ printf '%s\n' "$name" "$ARCH" "$GO_VERSION" "$key"; declare -f "$fn" go_build; } |
        sha256sum | cut -c1-16)"
    dir="$CACHE/$name-$hash"
    ORDER+=("$name")
    DIR[$name]="$dir"
    if [ -d "$dir" ]; then
        STATUS[$name]=cached TIME[$name]=0
        say "$name: cached ($(fmt_size "$dir"), ${dir#"$CACHE/"})"
        return 0
    fi
    say "$name: building"
    start=$SECONDS
    tmp="$(mktemp -d "$CACHE/.tmp.$name.XXXXXX")"
    TMPS+=("$tmp")
    "$fn" "$tmp" "$@" || die "$name: the build failed (log above)"
    chmod 0755 "$tmp"
    # Another run may have finished it meanwhile: then keep that one.
    mv -T "$tmp" "$dir" 2>/dev/null || [ -d "$dir" ] || die "$name: cannot rename $tmp to $dir"
    rm -rf "$tmp"
    STATUS[$name]=built TIME[$name]=$((SECONDS - start))
    say "$name: built in $(fmt_time "${TIME[$name]}") ($(fmt_size "$dir"))"
}

# The contents of files, for a component's key.
files_key() { local f; for f in "$@"; do printf '%s\n' "${f#"$HERE/"}"; cat "$f"; done; }

# --- Go -----------------------------------------------------------------------------------

# mod_version MODDIR PATH: the version go.mod pins.
mod_version() {
    (cd "$1" && go mod edit -json) | jq -r --arg p "$2" '.Require[] | select(.Path == $p) | .Version'
}
# mod_info MODDIR PATH FIELD: Time or Dir of the pinned module (downloaded when missing), or the
# commit the proxy recorded (Origin.Hash; empty when it has none).
mod_info() {
    (cd "$1" && go mod download -json "$2@$(mod_version "$1" "$2")") |
        jq -r --arg f "$3" 'if $f == "Hash" then (.Origin.Hash // "") else .[$f] end'
}

# go_build MODDIR OUTDIR LDFLAGS [GO BUILD ARGS...] PACKAGES...: stripped, reproducible builds.
go_build() {
    local mod="$1" out="$2" ldflags="$3"
    shift 3
    mkdir -p "$out"
    (cd "$mod" && CGO_ENABLED="${CGO_ENABLED:-0}" go build -trimpath -ldflags "-s -w $ldflags" -o "$out/" "$@")
}

# Kubernetes: the module dir for K8S_VERSION and the seven commands.
K8S_MOD="$GODIR/kubernetes"
if [ "$(mod_version "$K8S_MOD" k8s.io/kubernetes)" != "$K8S_VERSION" ]; then
    K8S_MOD="$GODIR/kubernetes-v1.$K8S_MINOR"
    if [ ! -f "$K8S_MOD/go.mod" ] || [ "$(mod_version "$K8S_MOD" k8s.io/kubernetes)" != "$K8S_VERSION" ]; then
        die "no Go module pins k8s.io/kubernetes $K8S_VERSION: make one with
    $HERE/go/kubernetes-module.sh $K8S_VERSION $K8S_MOD"
    fi
fi
recipe_kubernetes() {
    local out="$1" date commit ld="" p
    date="$(mod_info "$K8S_MOD" k8s.io/kubernetes Time)"
    commit="$(mod_info "$K8S_MOD" k8s.io/kubernetes Hash)"
    # kubeadm derives the control-plane image tags from gitVersion; kubectl version prints it.
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
        ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date -X $p.gitCommit=$commit"
    done
    go_build "$K8S_MOD" "$out/bin" "$ld" \
        k8s.io/kubernetes/cmd/{kubeadm,kubelet,kubectl,kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy}
}

recipe_etcd() {
    local out="$1"
    go_build "$GODIR/etcd" "$out/bin" \
        "-X go.etcd.io/etcd/api/v3/version.GitSHA=$(mod_info "$GODIR/etcd" go.etcd.io/etcd/server/v3 Hash)" .
}

recipe_coredns() {
    local out="$1"
    go_build "$GODIR/coredns" "$out/bin" \
        "-X github.com/coredns/coredns/coremain.GitCommit=$(mod_info "$GODIR/coredns" github.com/coredns/coredns Hash)" \
        github.com/coredns/coredns
}

recipe_containerd() {
    local out="$1" m=github.com/containerd/containerd/v2 v c
    v="$(mod_version "$GODIR/containerd" "$m")"
    c="$(mod_info "$GODIR/containerd" "$m" Hash)"
    go_build "$GODIR/containerd" "$out/bin" \
        "-X $m/version.Version=$v -X $m/version.Revision=$c -X $m/version.Package=$m" \
        -tags "urfave_cli_no_docs no_btrfs netgo osusergo" \
        "$m/cmd/containerd" "$m/cmd/containerd-shim-runc-v2" "$m/cmd/ctr"
}

# libseccomp-dev's headers and libseccomp.a for ARCH, extracted from the .deb.
recipe_seccomp() {
    local out="$1" pkg="$2" dl
    dl="$(mktemp -d)"
    TMPS+=("$dl")
    (cd "$dl" && apt_download "$pkg" >/dev/null) || die "apt-get download $pkg failed"
    dpkg-deb -x "$dl"/*.deb "$out"
    [ -f "$out/usr/lib/$TRIPLET/libseccomp.a" ] || die "$pkg holds no usr/lib/$TRIPLET/libseccomp.a"
}

recipe_runc() {
    local out="$1" sysroot="$2" m=github.com/opencontainers/runc
    # runc's Makefile `static` target, without PIE: cgo for nsenter, libseccomp linked in.
    CGO_ENABLED=1 CC="$CC" \
        CGO_CFLAGS="-I$sysroot/usr/include" CGO_LDFLAGS="-L$sysroot/usr/lib/$TRIPLET" \
        PKG_CONFIG_LIBDIR="$sysroot/usr/lib/$TRIPLET/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$sysroot" \
        go_build "$GODIR/runc" "$out/bin" \
        "-X main.gitCommit=$(mod_info "$GODIR/runc" "$m" Hash) -extldflags -static" \
        -tags "seccomp urfave_cli_no_docs netgo osusergo" "$m"
}

recipe_cni_plugins() {
    local out="$1" m=github.com/containernetworking/plugins p pkgs=()
    for p in ipam/{dhcp,host-local,static} main/{bridge,dummy,host-device,ipvlan,loopback,macvlan,ptp,tap,vlan} \
        meta/{bandwidth,firewall,portmap,sbr,tuning,vrf}; do
        pkgs+=("$m/plugins/$p")
    done
    go_build "$GODIR/cni-plugins" "$out/bin" \
        "-X $m/pkg/utils/buildversion.BuildVersion=$(mod_version "$GODIR/cni-plugins" "$m")" "${pkgs[@]}"
}

recipe_cri_tools() {
    local out="$1" m=sigs.k8s.io/cri-tools
    go_build "$GODIR/cri-tools" "$out/bin" "-X $m/pkg/version.Version=$(mod_version "$GODIR/cri-tools" "$m")" \
        "$m/cmd/crictl"
}

recipe_helm() {
    local out="$1" m=helm.sh/helm/v4
    go_build "$GODIR/helm" "$out/bin" \
        "-X $m/internal/version.version=$(mod_version "$GODIR/helm" "$m") -X $m/internal/version.gitCommit=$(mod_info "$GODIR/helm" "$m" Hash) -X $m/internal/version.gitTreeState=clean" \
        "$m/cmd/helm"
}

# pause from Kubernetes' own source, as build/pause/Makefile builds it.
recipe_pause() {
    local out="$1" src="$2" version="$3"
    mkdir -p "$out/bin"
    "$CC" -Os -Wall -Werror -static -DVERSION="v$version" -o "$out/bin/pause" "$src"
    "$STRIP" "$out/bin/pause"
}

# kube-proxy's netfilter tools from Debian's .debs: iptables (nft backend, with -save/-restore
# and ip6tables), conntrack and nft, with the libraries they and iptables' extensions load.
# Only what those files need is kept.
NETFILTER_PACKAGES=(iptables conntrack nftables)
recipe_netfilter() {
    local out="$1" debs="$2" dl x f lib
    dl="$(mktemp -d)"
    TMPS+=("$dl")
    x="$dl/x"
    # shellcheck disable=SC2086 # the package names are words
    (cd "$dl" && apt_download $debs >/dev/null) || die "apt-get download failed for: $debs"
    for f in "$dl"/*.deb; do dpkg-deb -x "$f" "$x"; done
    mkdir -p "$out/usr/sbin" "$out/etc" "$out/usr/lib/$TRIPLET"
    for f in xtables-nft-multi nft conntrack; do
        cp "$x/usr/sbin/$f" "$out/usr/sbin/$f"
    done
    # kube-proxy runs iptables, iptables-save and iptables-restore (and the ip6tables ones).
    for f in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -s xtables-nft-multi "$out/usr/sbin/$f"
        ln -s xtables-nft-multi "$out/usr/sbin/${f/tables/tables-nft}"
    done
    # iptables loads its matches and targets (-m comment, -j MASQUERADE, ...) from here.
    cp -a "$x/usr/lib/$TRIPLET/xtables" "$out/usr/lib/$TRIPLET/xtables"
    for f in protocols services ethertypes; do
        [ ! -f "$x/etc/$f" ] || cp "$x/etc/$f" "$out/etc/"
    done
    # The shared libraries, followed from each file's NEEDED entries, and the loader.
    local -a todo seen=()
    mapfile -t todo < <(find "$out" -type f -name '*' -perm -u+r | while read -r f; do
        readelf -h "$f" >/dev/null 2>&1 && echo "$f"; done)
    while [ ${#todo[@]} -gt 0 ]; do
        f="${todo[0]}"
        todo=("${todo[@]:1}")
        local interp
        interp="$(readelf -l "$f" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')"
        if [ -n "$interp" ] && [ ! -e "$out$interp" ]; then
            [ -e "$x$interp" ] || die "no loader $interp in the .debs"
            mkdir -p "$out$(dirname "$interp")"
            if [ -L "$x$interp" ]; then
                # /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...: keep the link.
                local target
                target="$(readlink "$x$interp")"
                [[ "$target" == /* ]] || target="$(dirname "$interp")/$target"
                mkdir -p "$out$(dirname "$target")"
                [ -e "$out$target" ] || cp -L "$x$target" "$out$target"
                ln -s "$(readlink "$x$interp")" "$out$interp"
            else
                cp "$x$interp" "$out$interp"
            fi
        fi
        for lib in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            [[ " ${seen[*]} " == *" $lib "* ]] && continue
            seen+=("$lib")
            local d found=""
            for d in "lib/$TRIPLET" "usr/lib/$TRIPLET"; do
                if [ -e "$x/$d/$lib" ]; then
                    mkdir -p "$out/$d"
                    [ -e "$out/$d/$lib" ] || cp -L "$x/$d/$lib" "$out/$d/$lib"
                    todo+=("$out/$d/$lib")
                    found=1
                    break
                fi
            done
            [ -n "$found" ] || die "$lib (needed by ${f#"$out/"}) is in none of the .debs: $debs"
        done
    done
    # Check them: the loader finds every library of every file (ld.so --list), and they run.
    # Natively in a chroot. For the other architecture only the loader runs, under qemu-user:
    # qemu-user has no netfilter netlink sockets, and iptables, nft and conntrack all open one
    # first, even for --version.
    local run=() prefix="" loader names=(iptables ip6tables-save nft conntrack) missing
    if [ "$ARCH" != "$HOST_ARCH" ]; then
        run=(qemu-aarch64-static -L "$out") prefix="$out" names=()
    elif [ "$(id -u)" -eq 0 ]; then
        run=(chroot "$out")
    else
        say "netfilter: not root, so the tools are not test-run in a chroot"
        return 0
    fi
    loader="$(readelf -l "$out/usr/sbin/xtables-nft-multi" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')"
    while read -r f; do
        missing="$("${run[@]}" "$prefix$loader" --list "$prefix/${f#"$out/"}" 2>&1 | grep 'not found' || true)"
        [ -z "$missing" ] || die "${f#"$out/"}: $missing"
    done < <(find "$out" -type f -exec sh -c 'readelf -h "$1" >/dev/null 2>&1' _ {} \; -print)
    for f in "${names[@]}"; do
        "${run[@]}" "$prefix/usr/sbin/$f" --version >/dev/null || die "$f does not run in the image tree"
    done
}

# --- the components -----------------------------------------------------------------------

BUILD_START=$SECONDS
component kubernetes "$K8S_VERSION $(files_key "$K8S_MOD/go.mod" "$K8S_MOD/go.sum")" recipe_kubernetes
component etcd "$(files_key "$GODIR"/etcd/{go.mod,go.sum,main.go})" recipe_etcd
component coredns "$(files_key "$GODIR"/coredns/go.{mod,sum})" recipe_coredns
component containerd "$(files_key "$GODIR"/containerd/go.{mod,sum})" recipe_containerd
SECCOMP_PKG="libseccomp-dev:$ARCH"
component seccomp "$(apt_versions libseccomp-dev)" recipe_seccomp "$SECCOMP_PKG"
component runc "$(files_key "$GODIR"/runc/go.{mod,sum}) $("$CC" --version | head -n1) ${DIR[seccomp]}" \
    recipe_runc "${DIR[seccomp]}"
component cni-plugins "$(files_key "$GODIR"/cni-plugins/go.{mod,sum})" recipe_cni_plugins
component cri-tools "$(files_key "$GODIR"/cri-tools/go.{mod,sum})" recipe_cri_tools
component helm "$(files_key "$GODIR"/helm/go.{mod,sum})" recipe_helm

# The etcd, coredns and pause versions kubeadm asks for, from its source.
K8S_DIR="$(mod_info "$K8S_MOD" k8s.io/kubernetes Dir)"
constant() {
    sed -n "s/^[[:space:]]*$1 = \"\(.*\)\"/\1/p" "$K8S_DIR/cmd/kubeadm/app/constants/constants.go" | head -n1
}
WANT_ETCD="$(constant DefaultEtcdVersion)" WANT_COREDNS="$(constant CoreDNSVersion)" PAUSE_VERSION="$(constant PauseVersion)"
if [ -z "$WANT_ETCD" ] || [ -z "$WANT_COREDNS" ] || [ -z "$PAUSE_VERSION" ]; then
    die "cannot read kubeadm's image versions from $K8S_DIR/cmd/kubeadm/app/constants/constants.go"
fi
PAUSE_SRC="$K8S_DIR/build/pause/linux/pause.c"
component pause "$PAUSE_VERSION $(files_key "$PAUSE_SRC") $("$CC" --version | head -n1)" \
    recipe_pause "$PAUSE_SRC" "$PAUSE_VERSION"

# The Debian packages of the netfilter tools and everything they depend on, with versions.
NETFILTER_DEBS=""
for p in $(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${NETFILTER_PACKAGES[@]}" 2>/dev/null | grep -v '^[ <]' | sed 's/:.*//' | sort -u); do
    NETFILTER_DEBS+="$p "
done
# shellcheck disable=SC2086 # the package names are words
NETFILTER_KEY="$(apt_versions $NETFILTER_DEBS)"
component netfilter "$NETFILTER_KEY" recipe_netfilter "$(cut -d= -f1 <<<"$NETFILTER_KEY" | tr '\n' ' ')"

# --- the images ---------------------------------------------------------------------------

ETCD_TAG="$(mod_version "$GODIR/etcd" go.etcd.io/etcd/server/v3)"
ETCD_TAG="${ETCD_TAG#v}-0"
COREDNS_TAG="$(mod_version "$GODIR/coredns" github.com/coredns/coredns)"
NOTES=()
[ "$ETCD_TAG" = "$WANT_ETCD" ] ||
    NOTES+=("kubeadm $K8S_VERSION asks for etcd $WANT_ETCD; this is $ETCD_TAG: set etcd.local.imageTag: $ETCD_TAG")
[ "$COREDNS_TAG" = "$WANT_COREDNS" ] ||
    NOTES+=("kubeadm $K8S_VERSION asks for coredns $WANT_COREDNS; this is $COREDNS_TAG: set dns.imageTag: $COREDNS_TAG")

WORK="$(mktemp -d)"
TMPS+=("$WORK")
# The /etc every image starts from.
BASE="$WORK/base"
mkdir -p "$BASE/etc/ssl/certs" "$BASE/tmp" "$BASE/root"
chmod 1777 "$BASE/tmp"
chmod 0700 "$BASE/root"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$BASE/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$BASE/etc/group"
printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' 'networks: files' \
    'protocols: files' 'services: files' >"$BASE/etc/nsswitch.conf"
[ -f /etc/ssl/certs/ca-certificates.crt ] || die "no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates)"
cp /etc/ssl/certs/ca-certificates.crt "$BASE/etc/ssl/certs/"
chmod -R u=rwX,go=rX "$BASE/etc"

PATH_ENV="PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
recipe_image() {
    local out="$1" ref="$2" config="$3"
    shift 3
    OCI_WORK="$(mktemp -d)"
    TMPS+=("$OCI_WORK")
    oci_image "$out/layout" "$ref" "$config" "$@" 2>/dev/null
}

# image SHORT REF ENTRYPOINT LAYER_DIR...: the layout is cached under the content of its layers
# (the digest of each layer's tar, which is its diff_id), its name and its config.
IMAGES=()
image() {
    local short="$1" ref="$2" entry="$3" config key d
    shift 3
    if [ "$short" = pause ]; then
        config="$(jq -cn --arg e "$entry" --arg p "$PATH_ENV" '{User: "65535:65535", Entrypoint: [$e], Env: [$p]}')"
    else
        config="$(jq -cn --arg e "$entry" --arg p "$PATH_ENV" '{Entrypoint: [$e], Env: [$p]}')"
    fi
    key="$(for d in "$@"; do
        tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=ustar -C "$d" -cf - . | sha256sum
    done; printf '%s\n' "$ref" "$config"; declare -f oci_image oci_layer oci_blob; echo "$OCI_GZIP_LEVEL")"
    component "image-$short" "$key" recipe_image "$ref" "$config" "$@"
    IMAGES+=("$short=$ref")
}
# A layer holding FILE at usr/local/bin/NAME (or at PATH_IN_IMAGE).
bin_layer() {
    local file="$1" at="${2:-/usr/local/bin/$(basename "$1")}" d
    d="$WORK/layer-$(basename "$file")"
    rm -rf "$d"
    mkdir -p "$d$(dirname "$at")"
    install -m 0755 "$file" "$d$at"
    echo "$d"
}

R=registry.k8s.io
K8S_BIN="${DIR[kubernetes]}/bin"
for c in kube-apiserver kube-controller-manager kube-scheduler; do
    image "$c" "$R/$c:$K8S_VERSION" "/usr/local/bin/$c" "$BASE" "$(bin_layer "$K8S_BIN/$c")"
done
image kube-proxy "$R/kube-proxy:$K8S_VERSION" /usr/local/bin/kube-proxy \
    "$BASE" "${DIR[netfilter]}" "$(bin_layer "$K8S_BIN/kube-proxy")"
image etcd "$R/etcd:$ETCD_TAG" /usr/local/bin/etcd "$BASE" "$(bin_layer "${DIR[etcd]}/bin/etcd")"
image coredns "$R/coredns/coredns:$COREDNS_TAG" /usr/local/bin/coredns \
    "$BASE" "$(bin_layer "${DIR[coredns]}/bin/coredns")"
image pause "$R/pause:$PAUSE_VERSION" /pause "$BASE" "$(bin_layer "${DIR[pause]}/bin/pause" /pause)"

# --- the layout in OUT (this directory by default) ---------------------------------------

say "laying out bin/, cni/bin/, images/ and imageList in $OUT"
copy_start=$SECONDS
rm -rf "${OUT:?}/bin" "$OUT/cni" "$OUT/images" "$OUT/imageList"
mkdir -p "$OUT/bin" "$OUT/cni/bin" "$OUT/images"
for f in kubeadm kubelet kubectl; do cp "$K8S_BIN/$f" "$OUT/bin/"; done
cp "${DIR[cri-tools]}/bin/crictl" "${DIR[helm]}/bin/helm" "${DIR[runc]}/bin/runc" "$OUT/bin/"
cp "${DIR[containerd]}"/bin/* "$OUT/bin/"
cp "${DIR[cni-plugins]}"/bin/* "$OUT/cni/bin/"
{
    printf '# The images of the Kubernetes %s base bundle (linux/%s), made by build-inputs.sh.\n' "$K8S_VERSION" "$ARCH"
    for i in "${IMAGES[@]}"; do
        cp -a "${DIR[image-${i%%=*}]}/layout" "$OUT/images/${i%%=*}"
        printf '%s\n' "${i#*=}"
    done
} >"$OUT/imageList"
say "laid out in $(fmt_time $((SECONDS - copy_start)))"

# --- summary ------------------------------------------------------------------------------

{
    printf '\n%-28s %-7s %9s %10s\n' component status time size
    for n in "${ORDER[@]}"; do
        printf '%-28s %-7s %9s %10s\n' "$n" "${STATUS[$n]}" "$(fmt_time "${TIME[$n]}")" "$(fmt_size "${DIR[$n]}")"
    done
    printf '\nlinux/%s, Kubernetes %s; in %s:\n' "$ARCH" "$K8S_VERSION" "$OUT"
    printf '  bin/      %s: %s\n' "$(fmt_size "$OUT/bin")" "$(cd "$OUT/bin" && echo *)"
    printf '  cni/bin/  %s: %s\n' "$(fmt_size "$OUT/cni/bin")" "$(cd "$OUT/cni/bin" && echo *)"
    printf '  images/   %s\n' "$(fmt_size "$OUT/images")"
    for i in "${IMAGES[@]}"; do printf '    %-38s %s\n' "${i#*=}" "$(fmt_size "$OUT/images/${i%%=*}")"; done
    for n in "${NOTES[@]}"; do printf 'note: %s\n' "$n"; done
    printf 'total %s\n' "$(fmt_time $((SECONDS - BUILD_START)))"
} >&2
