#!/usr/bin/env bash
# Fuzz what mana_restart does with an image before its first mapping (issue 10, item 4):
# decode, validation, the copies in memory, region checksums, mapped files, the vDSO
# plan, the collision check and the final stage's plan (restart-plugin/src/fuzz.rs).
#
#   scripts/fuzz.sh [RUNS]            # default 1,000,000 iterations, nightly toolchain
#   scripts/fuzz.sh --seed-from DIR   # add real-* seeds from the images of a checkpoint dir
#                                     # (its newest generation; a compact form of each)
#
# New inputs go to target/fuzz-work (not committed); the committed corpus,
# fuzz/corpus/image_plan, is read, and `cargo test -p mana-restart --test fuzz_corpus`
# replays it on the stable toolchain in CI. A crash leaves fuzz/artifacts/image_plan/.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus/image_plan
if [ "${1:-}" = "--seed-from" ]; then
    # One compact entry per image of the newest generation (the pages the validator
    # reads kept, the rest dropped): real-<dir>-<image>.
    gen="$2/$(cat "$2/LATEST")"
    for img in "$gen"/*.mana; do
        name="real-$(basename "$(realpath "$2")")-$(basename "$img" .mana)"
        cargo run -q --release -p mana-restart --example fuzz_seed -- "$img" "$corpus/$name"
    done
    exit 0
fi
runs=${1:-1000000}
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz
mkdir -p target/fuzz-work
cargo +nightly fuzz run image_plan target/fuzz-work "$corpus" -- \
    -runs="$runs" -max_len=262144 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
