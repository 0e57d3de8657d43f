#!/usr/bin/env bash
# Builds kubeadm v1.20.2, a real kubeadm that reads the kubeadm.k8s.io/v1beta2 configuration
# bale renders for Kubernetes 1.15-1.21, for the unit test kubeadm_reads_the_v1beta2_rendering
# (installer/src/kube/kubeadm_config.rs, which takes its path from BALE_KUBEADM_V1BETA2).
#
#   scripts/kubeadm-v1beta2.sh [--help]
#
# The Go module proxy serves no Kubernetes this old; Debian's source package does, and builds
# offline from its vendor tree:
#
#   source  kubernetes 1.20.5+really1.20.2-1.1+deb12u1 (bookworm): upstream v1.20.2 and
#           Debian's three patches
#   Go      golang-1.15-go and golang-1.15-src 1.15.15-1~deb11u4 (bullseye), unpacked, never
#           installed: the vendored code breaks with Go 1.18 and later
#
# Both come from the Debian mirror of this host's apt sources (`scripts/testbed.sh mirrors`, so
# BALE_TESTBED_MIRROR overrides it) through apt with a configuration of its own: its sources
# list and package lists live in the build's temporary directory, and the machine's apt
# configuration is left as it is. apt checks what it downloads against Debian's signed indexes.
#
# Only kubeadm is built, with the source's own hack/make-rules/build.sh (what `make` runs after
# regenerating code the source already carries): static (CGO_ENABLED=0), stripped (-s -w), and
# versioned v1.20.2 by the tag hack/lib/version.sh carries from the git archive the source was
# made from. The Go build runs under `nice -n 10`.
#
# The result is cached outside the clone, in
#   ${BALE_K8S_CACHE:-/var/cache/bale-kubernetes}/<arch>/kubeadm-v1.20.2-<hash>/kubeadm
# the hash covering the source package's version, the Go toolchain's version and the recipe
# (the two shell functions below). It is built in a temporary directory renamed when complete,
# so a killed build never looks done; a run with nothing changed only prints the path. The first
# build takes 1.5-2 minutes on 2 cores (downloads of about 100 MB included) and at most 1.5 GB
# of temporary disk in ${TMPDIR:-/var/tmp}. The last line of stdout is the path of kubeadm; the
# rest goes to stderr.
set -euo pipefail
umask 022
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

KUBE_VERSION=v1.20.2
SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
SRC_SUITE=bookworm
GO_VERSION=1.15.15-1~deb11u4
GO_SUITE=bullseye
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
ARCH="$(dpkg --print-architecture)"
CACHE="${BALE_K8S_CACHE:-/var/cache/bale-kubernetes}/$ARCH"

# fetch WORK: the source package and the Go .debs, downloaded into WORK/dl.
fetch() {
    local work="$1" apt="$1/apt" mirror
    mirror="$("$ROOT/scripts/testbed.sh" mirrors | awk '$1 == "mirror" { print $2 }')"
    [ -n "$mirror" ] || die "no Debian mirror (scripts/testbed.sh mirrors): set BALE_TESTBED_MIRROR"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/none" "$work/dl"
    printf '%s\n' "deb-src [signed-by=$KEYRING] $mirror $SRC_SUITE main" \
        "deb [arch=$ARCH signed-by=$KEYRING] $mirror $GO_SUITE main" >"$apt/sources.list"
    local opts=(-q -o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts="$apt/none"
        -o Dir::Etc::Preferences="$apt/none/preferences" -o Dir::Etc::PreferencesParts="$apt/none"
        -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache")
    # apt's sandbox user (_apt) cannot write the private directories.
    [ "$(id -u)" -ne 0 ] || opts+=(-o APT::Sandbox::User=root)
    say "apt-get update (private lists: $SRC_SUITE sources, $GO_SUITE $ARCH packages, from $mirror)"
    apt-get "${opts[@]}" update >&2 || die "apt-get update failed for $mirror"
    say "downloading kubernetes $SRC_VERSION (source) and golang-1.15 $GO_VERSION"
    (cd "$work/dl" && apt-get "${opts[@]}" source --download-only "kubernetes=$SRC_VERSION" >&2) ||
        die "cannot download the source kubernetes=$SRC_VERSION from $SRC_SUITE (gone from the mirror? update SRC_VERSION)"
    (cd "$work/dl" && apt-get "${opts[@]}" download "golang-1.15-go=$GO_VERSION" "golang-1.15-src=$GO_VERSION" >&2) ||
        die "cannot download golang-1.15 $GO_VERSION from $GO_SUITE (gone from the mirror? update GO_VERSION)"
}

# recipe WORK OUT: kubeadm from WORK/dl into OUT.
recipe() {
    local work="$1" out="$2" deb goroot src
    for deb in "$work"/dl/golang-1.15-*.deb; do dpkg-deb -x "$deb" "$work/go"; done
    goroot="$work/go/usr/lib/go-1.15"
    src="$work/src"
    # Applies Debian's patches; the signature is not checked here (apt checked the files'
    # hashes against the signed index), hence dpkg-source's warning.
    dpkg-source -q -x "$work/dl/kubernetes_$SRC_VERSION.dsc" "$src" >&2
    (
        cd "$src"
        # Nothing from the caller's Go setup: its GOFLAGS and go env file (HOME) are for a
        # newer Go. build.sh sets GOPATH and GOCACHE inside _output and works in GOPATH mode.
        # Go's own temporary files go with the work directory too, even when it is killed.
        unset GOPATH GOCACHE GOBIN GOTOOLCHAIN GO111MODULE GOOS GOARCH
        mkdir -p "$work/gotmp"
        export PATH="$goroot/bin:$PATH" GOROOT="$goroot" HOME="$work/home" GOENV=off GOFLAGS=
        export GOTMPDIR="$work/gotmp"
        export GOPROXY=off CGO_ENABLED=0 KUBE_BUILD_PLATFORMS="linux/$ARCH"
        export GOLDFLAGS="-s -w -buildid=" KUBE_VERBOSE=1
        # The build date kubeadm reports: the Debian changelog's, not the day of the build.
        SOURCE_DATE_EPOCH="$(dpkg-parsechangelog -l debian/changelog -STimestamp)"
        export SOURCE_DATE_EPOCH
        say "$(go version) in $goroot"
        nice -n 10 hack/make-rules/build.sh cmd/kubeadm
    ) >&2
    install -m 0755 "$src/_output/local/bin/linux/$ARCH/kubeadm" "$out/kubeadm"
    printf 'kubeadm %s from Debian source kubernetes %s (%s), Go golang-1.15 %s (%s), %s\n' \
        "$KUBE_VERSION" "$SRC_VERSION" "$SRC_SUITE" "$GO_VERSION" "$GO_SUITE" "$ARCH" >"$out/SOURCE"
}

# What the cache entry depends on: the versions and the recipe's text.
hash="$({ printf '%s\n' "$KUBE_VERSION" "$SRC_VERSION" "$GO_VERSION" "$ARCH"; declare -f fetch recipe; } |
    sha256sum | cut -c1-16)"
dir="$CACHE/kubeadm-$KUBE_VERSION-$hash"
if [ -x "$dir/kubeadm" ]; then
    say "kubeadm $KUBE_VERSION: cached (${dir})"
    echo "$dir/kubeadm"
    exit 0
fi

need_apt dpkg-dev xz-utils rsync binutils
mkdir -p "$CACHE"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/bale-kubeadm-$KUBE_VERSION.XXXXXX")"
tmp="$(mktemp -d "$CACHE/.tmp.kubeadm-$KUBE_VERSION.XXXXXX")"
trap 'rm -rf "$work" "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start=$SECONDS
say "kubeadm $KUBE_VERSION: building (work in $work)"
fetch "$work"
recipe "$work" "$tmp"

# The result is what the test needs: the version, and no dynamic loader.
got="$("$tmp/kubeadm" version -o short)" || die "the built kubeadm does not run"
[ "$got" = "$KUBE_VERSION" ] || die "the built kubeadm says it is $got, not $KUBE_VERSION"
if readelf -l "$tmp/kubeadm" | grep -q INTERP; then die "the built kubeadm is not static"; fi

chmod 0755 "$tmp"
# Another run may have finished it meanwhile: then keep that one.
mv -T "$tmp" "$dir" 2>/dev/null || [ -d "$dir" ] || die "cannot rename $tmp to $dir"
t=$((SECONDS - start))
say "kubeadm $KUBE_VERSION: built in $((t / 60))m$(printf %02d $((t % 60)))s ($dir)"
echo "$dir/kubeadm"
