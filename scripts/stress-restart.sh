#!/usr/bin/env bash
# Stress a test program's checkpoint/kill/restart cycle (a developer's tool, not part of CI).
#
#   scripts/stress-restart.sh PROGRAM [RANKS] [ROUNDS] [CYCLES] [LOAD] [WITHIN_MS]
#   scripts/stress-restart.sh attrs 2 40 50 1
#
# PROGRAM is a tests/mpi/*.c program with a `--loop N` mode. Each cycle launches it under
# mana_launch (mpiexec.mpich, RANKS ranks, --loop ROUNDS), checkpoints it with --kill at a
# random instant up to WITHIN_MS (700) after its ready line, restarts it and compares its
# "PROGRAM done" line with a native run's. LOAD busy loops run beside it (0). It stops at
# the first difference or failure and keeps that cycle's directory (logs, images); when a
# checkpoint takes more than 15 s or a restart more than 30 s it writes every rank's thread
# backtraces there first (gdb, with the symbols of every file mapped in the process: a
# restored process's own link map is the restarter's). Core dumps are on (core_pattern
# permitting). Binaries: target/release (build first), or $MANA_BIN.
set -uo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
prog=$1 ranks=${2:-2} rounds=${3:-40} cycles=${4:-20} load=${5:-0} within=${6:-700}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MANA_BIN:-$root/target/release}
src=$root/tests/mpi/$prog.c
[ -f "$src" ] || { echo "stress-restart: no test program $src" >&2; exit 2; }
[ -x "$bin/mana_launch" ] || { echo "stress-restart: no $bin/mana_launch (cargo build --release first)" >&2; exit 2; }
ulimit -c unlimited
dir=${TMPDIR:-/tmp}/mana-stress-$prog
rm -rf "$dir" && mkdir -p "$dir"
mpicc.mpich -O2 -o "$dir/prog" "$src" 2>"$dir/cc.err" || { cat "$dir/cc.err" >&2; exit 2; }
expected=$(mpiexec.mpich -n "$ranks" "$dir/prog" --loop "$rounds" 2>/dev/null | grep "^$prog done")
[ -n "$expected" ] || { echo "stress-restart: no '$prog done' line natively" >&2; exit 2; }
echo "native: $expected"
for _ in $(seq 1 "$load"); do (while :; do :; done) & done
trap 'kill $(jobs -p) 2>/dev/null' EXIT

# Thread backtraces of process $1, symbols from every file it maps at offset 0.
stacks() {
    local args=() base path
    while read -r base path; do args+=(-ex "add-symbol-file $path -o 0x$base"); done < <(
        awk '$3 == "00000000" && $6 ~ /^\// && $6 !~ /^\/dev\// { split($1, r, "-"); if (!seen[$6]++) print r[1], $6 }' \
            "/proc/$1/maps" 2>/dev/null)
    timeout 90 gdb -nx -batch -p "$1" "${args[@]}" -ex "thread apply all bt 30" 2>&1 | grep -E "^#|^Thread"
}
# Waits up to $2 tenths of a second for pid $1; writes the ranks' stacks to $3 if it is
# still running then.
watch() {
    for _ in $(seq 1 "$2"); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    for p in $(pgrep -f "$dir/prog --loop"); do echo "=== $p"; stacks "$p"; done >"$3" 2>&1
    echo "  slow: stacks in $3"
}

for i in $(seq 1 "$cycles"); do
    w=$dir/cycle-$i
    mkdir -p "$w"
    "$bin/mana_coordinator" --daemon --port 0 --status-file "$w/status" >/dev/null 2>&1
    export MANA_STATUS_FILE=$w/status
    MANA_LOG=info mpiexec.mpich -n "$ranks" "$bin/mana_launch" --ckptdir "$w/ckpt" "$dir/prog" --loop "$rounds" \
        >"$w/run.out" 2>"$w/run.err" &
    run=$!
    until grep -q "$prog ready" "$w/run.out" 2>/dev/null; do
        kill -0 $run 2>/dev/null || { echo "cycle $i: the job ended before its ready line ($w)"; exit 1; }
        sleep 0.05
    done
    sleep "$(awk -v r=$RANDOM -v w="$within" 'BEGIN { print r % w / 1000 }')"
    "$bin/mana_status" --checkpoint --kill >"$w/checkpoint.out" 2>&1 &
    ck=$!
    watch $ck 150 "$w/checkpoint-stacks"
    wait $ck
    wait $run 2>/dev/null
    MANA_LOG=info timeout 120 mpiexec.mpich -n "$ranks" "$bin/mana_restart" "$w/ckpt" >"$w/restart.out" 2>"$w/restart.err" &
    rs=$!
    watch $rs 300 "$w/restart-stacks"
    wait $rs
    rc=$?
    got=$(grep "^$prog done" "$w/restart.out")
    "$bin/mana_status" --quit >/dev/null 2>&1
    if [ $rc -ne 0 ] || [ "$got" != "$expected" ]; then
        echo "cycle $i: DIFFERENT (exit $rc): ${got:-no done line}; kept $w"
        exit 1
    fi
    rm -rf "$w"
    echo "cycle $i: same"
done
