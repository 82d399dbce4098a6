#!/usr/bin/env bash
# Everything CI checks: formatting, lints, and every test of the workspace (unit tests and
# the end-to-end checkpoint/restart tests of tests/). The end-to-end tests use the
# binaries `cargo build --release --workspace` (run by setup.sh) put in target/release/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if ! command -v cargo >/dev/null; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
# Two test threads: the machine has 2 cores and the heavy tests move 256 MiB each.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --release --no-fail-fast -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
