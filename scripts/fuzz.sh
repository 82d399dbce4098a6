#!/usr/bin/env bash
# Fuzz what mana_restart does with an image before its first mapping (issue 10, item 4):
# decode, validation, the copies in memory, region checksums, mapped files, the vDSO
# plan, the collision check and the final stage's plan (restart-plugin/src/fuzz.rs).
#
#   scripts/fuzz.sh [RUNS]            # default 1,000,000 iterations, nightly toolchain
#   scripts/fuzz.sh --seed-from DIR   # add real-* seeds from the images of a checkpoint dir
#
# New inputs go to target/fuzz-work (not committed); the committed corpus,
# fuzz/corpus/image_plan, is read, and `cargo test -p mana-restart --test fuzz_corpus`
# replays it on the stable toolchain in CI. A crash leaves fuzz/artifacts/image_plan/.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus/image_plan
if [ "${1:-}" = "--seed-from" ]; then
    python3 - "$2" "$corpus" <<'PY'
import os, struct, sys
src, out = sys.argv[1], sys.argv[2]
latest = open(os.path.join(src, "LATEST")).read().strip()
gen = os.path.join(src, latest)
for name in sorted(os.listdir(gen)):
    if not name.endswith(".mana"):
        continue
    b = open(os.path.join(gen, name), "rb").read()
    off, ln = struct.unpack_from("<QQ", b, 16)
    data, header = b[4096:off], b[off:off + ln]
    tag = os.path.basename(os.path.normpath(src)) + "-" + name[:-5]
    for flags, kind in ((0, "plain"), (1, "forged")):
        blob = bytes([flags]) + struct.pack("<I", len(data)) + data + header
        open(os.path.join(out, f"real-{tag}-{kind}"), "wb").write(blob)
        print(f"real-{tag}-{kind}: {len(blob)} bytes")
PY
    exit 0
fi
runs=${1:-1000000}
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz
mkdir -p target/fuzz-work
cargo +nightly fuzz run image_plan target/fuzz-work "$corpus" -- \
    -runs="$runs" -max_len=4194304 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
