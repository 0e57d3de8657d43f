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
for a in "${arches[@]}"; do
    case "$a" in x86_64|aarch64) ;; *) die "unknown architecture $a (x86_64 or aarch64)";; esac
    t="$a-unknown-linux-musl"
    say "building bale for $t"
    cargo build --release --locked --target "$t" -p bale
    install -m 0755 "target/$t/release/bale" "out/release/bale-$a.tmp"
    mv -f "out/release/bale-$a.tmp" "out/release/bale-$a"
    file "out/release/bale-$a" 2>/dev/null | sed 's/^/    /' >&2 || true
    printf '    %s bytes\n' "$(stat -c %s "out/release/bale-$a")" >&2
done
