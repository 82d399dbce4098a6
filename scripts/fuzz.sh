#!/usr/bin/env bash
# Fuzz what mana_restart does with an image before its first mapping (issue 10, item 4):
# decode, validation, the copies in memory, region checksums, mapped files, the vDSO
# plan, the collision check and the final stage's plan (restart-plugin/src/fuzz.rs).
#
#   scripts/fuzz.sh [RUNS]            # default 1,000,000 iterations (nightly toolchain)
#   scripts/fuzz.sh --save            # merge what the last run found into the corpus
#   scripts/fuzz.sh --seed-from DIR   # add real-* seeds from a checkpoint directory
#                                     # (its newest generation; a compact form of each)
#
# Committed: fuzz/seeds/ (compact real images) and fuzz/corpus/image_plan.tar.xz (the
# corpus, minimized with -set_cover_merge; xz because its entries share most bytes: 34 MB
# in 160 KB). `cargo test -p mana-restart --test fuzz_corpus` replays both on the stable
# toolchain in CI. New inputs go to target/fuzz-work; a crash leaves
# fuzz/artifacts/image_plan/crash-*.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=fuzz/seeds
archive=fuzz/corpus/image_plan.tar.xz
work=target/fuzz-work
corpus=target/fuzz-corpus
if [ "${1:-}" = "--seed-from" ]; then
    gen="$2/$(cat "$2/LATEST")"
    for img in "$gen"/*.mana; do
        name="real-$(basename "$(realpath "$2")")-$(basename "$img" .mana)"
        cargo run -q --release -p mana-restart --example fuzz_seed -- "$img" "$seeds/$name"
    done
    exit 0
fi
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz
cargo +nightly fuzz build image_plan
fuzzer=fuzz/target/x86_64-unknown-linux-gnu/release/image_plan
if [ "${1:-}" = "--save" ]; then
    rm -rf target/fuzz-merged && mkdir -p target/fuzz-merged
    "$fuzzer" -set_cover_merge=1 -max_len=262144 target/fuzz-merged "$corpus" "$work" "$seeds"
    tar -cJf "$archive" -C target/fuzz-merged .
    ls -l "$archive"
    exit 0
fi
runs=${1:-1000000}
rm -rf "$corpus" && mkdir -p "$corpus" "$work"
tar -xJf "$archive" -C "$corpus"
cargo +nightly fuzz run image_plan "$work" "$corpus" "$seeds" -- \
    -runs="$runs" -max_len=262144 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
