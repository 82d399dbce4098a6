#!/usr/bin/env bash
# Everything CI checks: formatting, lints, and every test of the workspace (unit tests and
# the end-to-end checkpoint/restart tests of tests/), then MPICH's own test suite (the CI
# list of tests/mpich/). The end-to-end tests use the binaries
# `cargo build --release --workspace` (run by setup.sh) put in target/release/.
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

# MPICH 4.0.2's own test suite, the CI list, natively and under MANA (launch, checkpoints
# during each test — one from inside the job at rank 0's first MPI call, then every 0.05 s —,
# and for 60 of its tests a kill + restart at a random instant, triggered from inside the
# job): fails on
# a difference from native not in tests/mpich/expected-differences.txt, or when fewer than
# 90% of the lines get a checkpoint inside their MPI lifetime
# (docs/mpich-testsuite-results.md).
set +e
bash scripts/mpich-testsuite.sh --list tests/mpich/ci-list.txt --mode all --sample 60 --trigger inside --interval 0.05
suite=$?
set -e
if [[ $status -ne 0 ]]; then
    exit "$status"
fi
exit "$suite"
