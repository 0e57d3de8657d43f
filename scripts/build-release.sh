#!/usr/bin/env bash
# Builds stripped static bale binaries for x86_64 and aarch64 (musl) into out/release/.
#   scripts/build-release.sh            both architectures
#   scripts/build-release.sh x86_64     one of them
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)
need_release_toolchain
mkdir -p out/release
targets=()
for a in "${arches[@]}"; do
    case "$a" in x86_64|aarch64) ;; *) die "unknown architecture $a (x86_64 or aarch64)";; esac
    targets+=(--target "$a-unknown-linux-musl")
done
# One cargo run for every target: each link-time optimisation of the whole program runs on one
# core, so two targets built together keep both cores busy.
say "building bale for ${arches[*]} (musl, static)"
cargo build --release --locked "${targets[@]}" -p bale
for a in "${arches[@]}"; do
    t="$a-unknown-linux-musl"
    install -m 0755 "target/$t/release/bale" "out/release/bale-$a.tmp"
    mv -f "out/release/bale-$a.tmp" "out/release/bale-$a"
    file "out/release/bale-$a" 2>/dev/null | sed 's/^/    /' >&2 || true
    printf '    %s bytes\n' "$(stat -c %s "out/release/bale-$a")" >&2
done
