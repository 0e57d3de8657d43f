#!/bin/sh
# Writes the seed corpus of the `reader` fuzz target into payload/fuzz/corpus/reader (small
# bundles made by the real writer, see payload/examples/fuzz_seeds.rs). Run from anywhere.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
cargo run --quiet -p bale-payload --example fuzz_seeds -- "$here/corpus/reader"
ls "$here/corpus/reader"
