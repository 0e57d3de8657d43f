#!/usr/bin/env bash
# Writes the Go module that builds one Kubernetes release: go.mod and go.sum in DIR, pinning
# k8s.io/kubernetes VERSION. Kubernetes' own go.mod points every staging module (k8s.io/api,
# client-go, kubelet, ...) at ./staging, which a dependent module cannot see, so each gets a
# replace to its published v0.MINOR.PATCH. The seven commands are `tool` lines, which keeps
# go.sum complete for them (go mod tidy would otherwise drop everything: no Go file imports them).
#
#   go/kubernetes-module.sh v1.36.3 go/kubernetes
#   go/kubernetes-module.sh v1.34.4 go/kubernetes-v1.34
#
# Needs the Go module proxy; build-inputs.sh then builds offline from the module cache.
set -euo pipefail
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: $0 VERSION DIR (e.g. v1.36.3 go/kubernetes)"
version="$1" dir="$2"
[[ "$version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "VERSION is v1.MINOR.PATCH, not $version"
staging="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
command -v go >/dev/null || die "go not found"

upstream="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -f "$upstream" ] || die "cannot download k8s.io/kubernetes@$version's go.mod"
# "k8s.io/api => ./staging/src/k8s.io/api" in kubernetes' go.mod, one per staging module.
mapfile -t modules < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$upstream" | sort -u)
[ ${#modules[@]} -gt 0 ] || die "k8s.io/kubernetes@$version's go.mod has no ./staging replaces"

mkdir -p "$dir"
cd "$dir"
rm -f go.mod go.sum
go mod init bale.local/inputs/kubernetes >/dev/null 2>&1
go mod edit -go=1.26.0
for m in "${modules[@]}"; do go mod edit -replace="$m=$m@$staging"; done
go mod edit -require="k8s.io/kubernetes@$version"
tools=()
for c in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    tools+=("k8s.io/kubernetes/cmd/$c@$version")
done
go get -tool "${tools[@]}"
printf '%s: k8s.io/kubernetes %s, %d staging modules at %s\n' "$dir" "$version" "${#modules[@]}" "$staging" >&2
