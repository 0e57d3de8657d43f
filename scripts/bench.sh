#!/usr/bin/env bash
# Benchmarks of the bundle file against the reference tools, measured in the same run and
# printed as ratios (reference time / bale time: above 1 means bale is faster).
#
#   scripts/bench.sh            every part: the bundle file (1 GiB and 4 GiB payloads), then
#                               scripts/bench-{images,copy,registry,pull,share,lvscare,kubernetes}.sh
#   BENCH_QUICK=1 scripts/bench.sh   the bundle file with 1 GiB only
#   BENCH_PARTS=copy,registry scripts/bench.sh   only those parts (payload images copy pull
#                               registry share lvscare kubernetes)
#   scripts/bench.sh scale GB   the scale benchmark only (scripts/bench-scale.sh): a ~300-image
#                               set of GB gigabytes built, verified, installed on three test
#                               nodes and served (BENCH_NODES=0: without the nodes)
#
# Data lives in $BALE_BENCH_DIR (default /var/tmp/bale-bench) and is reused between runs.
# The payload is a real tree (parts of /usr/lib, copied three times) plus incompressible blobs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

if [ "${1:-}" = scale ]; then
    [ -n "${2:-}" ] || die "usage: scripts/bench.sh scale GB (e.g. scale 2)"
    exec bash "$ROOT/scripts/bench-scale.sh" "$2"
fi
[ $# -eq 0 ] || die "unknown arguments: $* (no arguments, or: scale GB)"

need_apt time zstd openssl coreutils tar makeself
B="${BALE_BENCH_DIR:-/var/tmp/bale-bench}"
RUNS="${BENCH_RUNS:-3}"
mkdir -p "$B"

# BALE=/path/to/bale benchmarks a given static build instead of building one.
if [ -z "${BALE:-}" ]; then
    scripts/build-release.sh x86_64 >&2
    BALE="$ROOT/out/release/bale-x86_64"
fi
say "benchmarking $BALE on $(nproc) cores; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- data --------------------------------------------------------------------------------
make_tree() { # dir copies blob_mib blobs
    local dir=$1 copies=$2 blob_mib=$3 blobs=$4
    [ -f "$dir/.complete" ] && return 0
    say "generating $dir ($copies copies of a real tree, $blobs x $blob_mib MiB random blobs)"
    rm -rf "$dir"; mkdir -p "$dir"
    for i in $(seq 1 "$copies"); do
        mkdir -p "$dir/tree$i"
        for src in /usr/lib/python3.11 /usr/lib/gcc /usr/lib/git-core; do
            [ -d "$src" ] && cp -a "$src" "$dir/tree$i/"
        done
    done
    # Bundles refuse symlinks that leave the tree; the reference gets the same tree.
    find "$dir" -type l -lname '/*' -delete
    find "$dir" -xtype l -delete
    mkdir -p "$dir/blobs"
    for i in $(seq 1 "$blobs"); do
        head -c "$((blob_mib << 20))" /dev/urandom > "$dir/blobs/blob$i.bin"
    done
    touch "$dir/.complete"
}

# ---- timing helpers (now, median_time, ratio, check: scripts/lib.sh) -------------------------
peak_rss_mib() { # peak RSS of "$@" in MiB
    local f; f=$(mktemp)
    /usr/bin/time -f '%M' -o "$f" "$@" >/dev/null 2>&1 || die "command failed: $*"
    awk '{printf "%.1f", $1/1024}' "$f"; rm -f "$f"
}

need_apt bc
RESULTS="$B/results.txt"; : > "$RESULTS"
row() { printf '%-44s %12s %12s %8s %s\n' "$@" | tee -a "$RESULTS"; }

bench_set() { # name dir
    local name=$1 dir=$2 out="$B/$1"
    mkdir -p "$out"
    local bytes; bytes=$(du -sb --exclude=.complete "$dir" | cut -f1)
    say "[$name] $(echo "scale=2; $bytes/1073741824" | bc) GiB of content"
    sync
    # build
    # Each timed command starts as on an idle machine (quiet_memory, scripts/lib.sh).
    rm_bundle() { rm -f "$out/app.bale"; sync; quiet_memory; }
    rm_tar() { rm -f "$out/payload.tar.zst"; sync; quiet_memory; }
    SETUP=rm_bundle t_build=$(median_time "$BALE" build "$dir" -o "$out/app.bale" --name bench --version 1)
    SETUP=rm_tar t_tar=$(median_time sh -c "tar -cf - -C '$dir' . | zstd -T0 -3 -q -o '$out/payload.tar.zst'")
    local sz_bale sz_tar stub
    stub=$(stat -c %s "$BALE")
    sz_bale=$(( $(stat -c %s "$out/app.bale") - stub ))
    sz_tar=$(stat -c %s "$out/payload.tar.zst")
    row "[$name] build: bale / tar|zstd -T0 -3" "${t_build}s" "${t_tar}s" "$(ratio "$t_tar" "$t_build")x" \
        "target >= 1.5x (issue 18): $(check "$t_tar / $t_build" '>=' 1.5)"
    row "[$name] size: payload / tar.zst" "$sz_bale" "$sz_tar" "$(ratio "$sz_bale" "$sz_tar")" \
        "target <= 1.0: $(check "$sz_bale / $sz_tar" '<=' 1.0)"
    # makeself, the self-extracting archive a shell script heads (zstd on both cores, SHA-256
    # of the archive): the whole files against each other, bale's program included, and the
    # size goal holds only at equal speed or better.
    rm_run() { rm -f "$out/app.run"; sync; quiet_memory; }
    SETUP=rm_run t_makeself=$(median_time makeself --quiet --zstd --threads 2 --sha256 --nomd5 --nocrc \
        "$dir" "$out/app.run" bench true)
    local sz_file sz_run
    sz_file=$(stat -c %s "$out/app.bale")
    sz_run=$(stat -c %s "$out/app.run")
    row "[$name] build: bale / makeself --zstd" "${t_build}s" "${t_makeself}s" "$(ratio "$t_makeself" "$t_build")x" \
        "target >= 1.0x: $(check "$t_makeself / $t_build" '>=' 1.0)"
    row "[$name] size: bale file / makeself file" "$sz_file" "$sz_run" "$(ratio "$sz_file" "$sz_run")" \
        "target <= 1.0: $(check "$sz_file / $sz_run" '<=' 1.0)"
    rm -f "$out/app.run"
    # verify
    cat "$out/app.bale" >/dev/null
    t_verify=$(SETUP='' median_time "$BALE" verify "$out/app.bale")
    t_openssl=$(SETUP='' median_time openssl dgst -sha256 "$out/app.bale")
    t_sha256sum=$(SETUP='' median_time sha256sum "$out/app.bale")
    row "[$name] verify: bale / openssl dgst -sha256" "${t_verify}s" "${t_openssl}s" "$(ratio "$t_openssl" "$t_verify")x" \
        "target >= 1.6x: $(check "$t_openssl / $t_verify" '>=' 1.6)"
    row "[$name] verify: bale / sha256sum" "${t_verify}s" "${t_sha256sum}s" "$(ratio "$t_sha256sum" "$t_verify")x" ""
    # extract
    clean_x() { rm -rf "$out/x"; mkdir -p "$out/x"; sync; quiet_memory; }
    SETUP=clean_x t_extract=$(median_time "$BALE" extract "$out/app.bale" --to "$out/x")
    SETUP=clean_x t_untar=$(median_time sh -c "zstd -dc '$out/payload.tar.zst' | tar -xf - -C '$out/x'")
    row "[$name] extract: bale / zstd -dc | tar -x" "${t_extract}s" "${t_untar}s" "$(ratio "$t_untar" "$t_extract")x" \
        "target >= 1.5x (issue 18): $(check "$t_untar / $t_extract" '>=' 1.5)"
    # memory
    rm -f "$out/rss.bale"
    local r_build r_verify r_extract
    r_build=$(peak_rss_mib "$BALE" build "$dir" -o "$out/rss.bale" --name bench --version 1)
    r_verify=$(peak_rss_mib "$BALE" verify "$out/app.bale")
    clean_x; r_extract=$(peak_rss_mib "$BALE" extract "$out/app.bale" --to "$out/x")
    rm -rf "$out/x" "$out/rss.bale"
    for m in "build:$r_build" "verify:$r_verify" "extract:$r_extract"; do
        row "[$name] peak RSS ${m%%:*} (MiB)" "${m#*:}" "" "" "target < 64: $(check "${m#*:}" '<' 64)"
    done
    # info
    local t0 t1 n=50
    t0=$(now); for _ in $(seq 1 $n); do "$BALE" info "$out/app.bale" >/dev/null; done; t1=$(now)
    local ms; ms=$(echo "($t1 - $t0) * 1000 / $n" | bc -l | xargs printf '%.2f')
    row "[$name] info (ms per run, process start included)" "$ms" "" "" "target < 20: $(check "$ms" '<' 20)"
}

want_part() { case ",${BENCH_PARTS:-payload,images,copy,registry,pull,share,lvscare,kubernetes}," in *",$1,"*) return 0;; esac; return 1; }

if want_part payload; then
make_tree "$B/data-1g" 3 112 4
bench_set 1g "$B/data-1g"
# The copies above deduplicate in bale but not in tar: the same tree once, for a fair view.
make_tree "$B/data-unique" 1 112 4
bench_set unique "$B/data-unique"
if [ -z "${BENCH_QUICK:-}" ]; then
    make_tree "$B/data-4g" 3 256 13
    RUNS=1 bench_set 4g "$B/data-4g"
fi
size=$(stat -c %s "$BALE")
row "stripped static bale (bytes)" "$size" "" "" "target < 10 MiB: $(check "$size" '<' 10485760)"
say "results in $RESULTS"
fi

# The other parts live in their own scripts and print their own ratios.
for part in images copy registry pull share lvscare kubernetes; do
    want_part "$part" || continue
    s="$ROOT/scripts/bench-$part.sh"
    [ -f "$s" ] || { say "scripts/bench-$part.sh: not there, skipped"; continue; }
    say "scripts/bench-$part.sh"
    BALE="$BALE" bash "$s"
done
