#!/usr/bin/env bash
# A checkpoint/restart at a terminal, step by step: run a 4-rank MPI job (an unmodified
# program built with plain mpicc.mpich) under MANA, checkpoint it, kill every rank with
# SIGKILL, restart it with a fresh MPI_Init, and see it end exactly like a run that was
# never interrupted.
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
    mana_status --kill >/dev/null 2>&1 || true
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

say "Build the MPI program: mpicc.mpich -O2 -o world_mix tests/mpi/world_mix.c"
mpicc.mpich -O2 -o "$work/world_mix" tests/mpi/world_mix.c
echo "world_mix ITERATIONS: a ring of Isend/Irecv, Sendrecv, wildcard receives, Allreduce,"
echo "Iallreduce and Bcast, with a message always in flight; prints a checksum at the end."

say "Reference: an uninterrupted run without MANA (mpiexec.mpich -n 4 world_mix 800)"
mpiexec.mpich -n 4 "$work/world_mix" 800 >"$work/native.out"
echo "its last line: $(tail -n 1 "$work/native.out")"

say "Start a coordinator: mana_coordinator --daemon --port 0 --status-file \$MANA_STATUS_FILE"
(clean_exec mana_coordinator --daemon --port 0 --status-file "$MANA_STATUS_FILE")

say "Launch under MANA: mpiexec.mpich -n 4 mana_launch --ckptdir $work/ckpt world_mix 800 &"
clean_exec mpiexec.mpich -n 4 mana_launch --ckptdir "$work/ckpt" "$work/world_mix" 800 \
    >"$work/run.out" 2>"$work/run.err" &
pid=$!
wait_for 60 grep -q ready "$work/run.out"
wait_for 60 bash -c '[ "$(mana_status --list 2>/dev/null | wc -l)" -ge 5 ]'
mana_status --list
sleep 1 # let it run for a while

say "Checkpoint: mana_status --checkpoint (the ranks agree on a point between collectives,"
echo "    drain the messages in flight into their own memory, and write their images)"
gen=$(mana_status --checkpoint)
echo "committed generation: $gen"
echo "LATEST -> $(cat "$work/ckpt/LATEST")"
ls -l "$gen"
mana_inspect "$gen" >"$work/inspect.txt"
head -n 12 "$work/inspect.txt"

say "Kill every rank: kill -9 on each process mana_status --list shows"
for rank_pid in $(mana_status --list | awk 'NR > 1 { print $3 }'); do
    kill -9 "$rank_pid" 2>/dev/null || true
done
wait "$pid" 2>/dev/null || true
pid=
echo "the job died without its result: $(grep -c done "$work/run.out" || true) result lines"

say "Restart: mpiexec.mpich -n 4 mana_restart $work/ckpt (a fresh MPI_Init in every rank)"
(clean_exec mpiexec.mpich -n 4 mana_restart "$work/ckpt") >"$work/restart.out" 2>"$work/restart.err" || {
    echo "mana_restart failed:" >&2
    cat "$work/restart.err" >&2
    exit 1
}
echo "the restarted job ended with: $(tail -n 1 "$work/restart.out")"

say "Compare with the uninterrupted run"
if [ "$(tail -n 1 "$work/restart.out")" = "$(tail -n 1 "$work/native.out")" ]; then
    echo "SAME final line: the checkpointed, killed and restarted MPI job ended exactly like the native one."
else
    echo "DIFFERENT final lines:" >&2
    echo "  native:    $(tail -n 1 "$work/native.out")" >&2
    echo "  restarted: $(tail -n 1 "$work/restart.out")" >&2
    exit 1
fi
