#!/usr/bin/env bash
# A checkpoint/restart at a terminal, step by step: run a 64 MiB program under MANA,
# checkpoint it, kill it with SIGKILL, restart it, and see it end exactly like a run that
# was never interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if ! command -v cargo >/dev/null; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
export PATH="$bin:$PATH"
work=$(mktemp -d /tmp/mana-demo.XXXXXX)
export MANA_STATUS_FILE="$work/status"
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    mana_status --quit >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n==> %s\n' "$*"; }
# A descriptor beyond stdio leaked by whatever started this script (a CI runner's pipe,
# say) would be inherited by the program, and a checkpoint rightly refuses descriptors it
# cannot restore: `clean_exec CMD...` execs CMD with only the descriptors a terminal has.
clean_exec() {
    local fd closes=""
    for fd in /proc/$$/fd/*; do
        fd=${fd##*/}
        case $fd in 0 | 1 | 2 | 255) ;; *) closes+=" $fd>&-" ;; esac
    done
    eval 'exec "$@"'"$closes"
}
wait_for() { # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then
            echo "demo: timed out waiting for: $*" >&2
            exit 1
        fi
        sleep 0.1
    done
}

say "Build the test program: gcc -O2 -o bigmem tests/c/bigmem.c"
gcc -O2 -o "$work/bigmem" tests/c/bigmem.c
echo "bigmem MiB STEPS: fills MiB of heap with random data, then mutates heap, bss and stack"
echo "for STEPS steps of 20 ms, and prints a hash of all its state at the end."

say "Reference: an uninterrupted run without MANA (bigmem 64 150)"
"$work/bigmem" 64 150 >"$work/native.out" 2>/dev/null
echo "its last line: $(tail -n 1 "$work/native.out")"

say "Start a coordinator: mana_coordinator --daemon --port 0 --status-file \$MANA_STATUS_FILE"
(clean_exec mana_coordinator --daemon --port 0 --status-file "$MANA_STATUS_FILE")

say "Launch under MANA: mana_launch --ckptdir $work/ckpt bigmem 64 150 &"
clean_exec mana_launch --ckptdir "$work/ckpt" "$work/bigmem" 64 150 >"$work/run.out" 2>"$work/run.err" &
pid=$!
wait_for 60 grep -q ready "$work/run.out"
wait_for 60 bash -c "mana_status --list 2>/dev/null | grep -qw $pid"
mana_status --list
sleep 1 # let it run for a while
echo "so far it printed: $(tail -n 1 "$work/run.out")"

say "Checkpoint: mana_status --checkpoint"
gen=$(mana_status --checkpoint)
echo "committed generation: $gen"
echo "LATEST -> $(cat "$work/ckpt/LATEST")"
ls -l "$gen"
mana_inspect "$gen" >"$work/inspect.txt"
head -n 25 "$work/inspect.txt"

say "Kill it: kill -9 $pid"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
pid=
echo "the last line it printed before dying: $(tail -n 1 "$work/run.out")"

say "Restart: mana_restart $work/ckpt (this shell's process becomes the program again)"
(clean_exec mana_restart "$work/ckpt") >"$work/restart.out" 2>"$work/restart.err" || {
    echo "mana_restart failed:" >&2
    cat "$work/restart.err" >&2
    exit 1
}
echo "the restarted process continued from: $(head -n 1 "$work/restart.out")"
echo "and ended with:                       $(tail -n 1 "$work/restart.out")"

say "Compare with the uninterrupted run"
if [ "$(tail -n 1 "$work/restart.out")" = "$(tail -n 1 "$work/native.out")" ]; then
    echo "SAME final line: the checkpointed, killed and restarted run ended exactly like the native one."
else
    echo "DIFFERENT final lines:" >&2
    echo "  native:    $(tail -n 1 "$work/native.out")" >&2
    echo "  restarted: $(tail -n 1 "$work/restart.out")" >&2
    exit 1
fi
