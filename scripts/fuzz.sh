#!/usr/bin/env bash
# Runs every cargo-fuzz target of tests/fuzz (the Kubefile parser, the Clusterfile reader) and
# of payload/fuzz (the bundle reader, when that crate exists) for SECONDS each (default 60),
# then prints the executions and crashes of each target; exits non-zero when any target
# crashed (a panic, a timeout or running out of memory: the inputs are kept under
# <fuzz-dir>/artifacts/<target>/).
#
# Installs what it needs: the nightly toolchain (rustup) and cargo-fuzz. The seed corpus of
# tests/fuzz comes from the repository's own Kubefiles and YAML files, copied here at each
# run; what the fuzzer adds stays in <fuzz-dir>/corpus/<target> (git-ignored).
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail

secs="${1:-60}"
case "$secs" in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! rustup toolchain list | grep -q '^nightly'; then
	rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
	cargo +nightly install cargo-fuzz --locked
fi

# The seeds of one target: every file matching the find expression, flattened into the corpus.
seed() {
	local corpus="$1"
	shift
	mkdir -p "$corpus"
	local f
	while IFS= read -r -d '' f; do
		cp "$f" "$corpus/seed-$(printf '%s' "$f" | tr '/' '_')"
	done < <(find "$@" -print0)
}
seed tests/fuzz/corpus/kubefile examples bundler/tests/fixtures -type f -name 'Kubefile*'
seed tests/fuzz/corpus/clusterfile tests/fuzz/seeds/clusterfile examples bundler/tests/fixtures \
	-type f \( -name '*.yaml' -o -name '*.yml' -o -name 'Clusterfile*' \)

dirs=(tests/fuzz)
if [ -d payload/fuzz ]; then
	dirs+=(payload/fuzz)
fi

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=0
summary=()
for dir in "${dirs[@]}"; do
	mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir "$dir")
	for t in "${targets[@]}"; do
		corpus="$dir/corpus/$t"
		mkdir -p "$corpus"
		log="$logs/$t.log"
		echo "== $dir $t: ${secs}s"
		# Safe Rust needs no AddressSanitizer: panics, timeouts and memory are what is looked
		# for, and without it the build is faster and the executions more numerous.
		status=0
		cargo +nightly fuzz run --fuzz-dir "$dir" --sanitizer none "$t" "$corpus" -- \
			-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			>"$log" 2>&1 || status=$?
		execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)"
		crashes=0
		if [ "$status" -ne 0 ]; then
			crashes=1
			failed=1
			tail -n 30 "$log"
		fi
		summary+=("$dir $t executions=${execs:-0} crashes=$crashes")
	done
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
