#!/usr/bin/env bash
# MPICH's own test suite (test/mpi of the Debian mpich source) as a judge of MANA:
# every selected test runs natively (mpiexec.mpich) and/or under MANA, runtests judges each
# run (" No Errors" and exit status), and the pass sets are compared.
#
#   bash scripts/mpich-testsuite.sh [--mode MODE] [--dirs "pt2pt coll ..." | --list FILE]
#        [--bin DIR] [--out DIR] [--timeout SECONDS] [--testlists "testlist,..."]
#        [--interval SECONDS] [--sample N] [--seed S] [--attempts N] [--expected FILE]
#        [--trigger inside|outside] [--summary-only]
#
# Modes (--mode native|launch|ckpt|restart|all|both, or a comma-separated list):
#   native   mpiexec.mpich -n NP ./prog
#   launch   mpiexec.mpich -n NP mana_launch ./prog (a fresh mana_coordinator per test line)
#   ckpt     the same with `mana_coordinator --interval 0.05` (--interval) and one
#            checkpoint requested by rank 0's first MPI call after MPI_Init
#            (MANA_CKPT_AT_NS=0:0, see restart): checkpoints
#            without a kill during the test, one 50 ms after the previous one ended (MANA's
#            start-up before MPI_Init takes ~0.2 s here: the first lands in or just after
#            MPI_Init, which many tests leave for MPI_Finalize within a millisecond). Per line, OUT/ckpt-generations.tsv has: the generations
#            committed while MPI was initialized on every rank, the generations committed,
#            init and finalize lines, and the `strict` count. The runtime writes the
#            instants to $MANA_MPI_TIMES: MPI_Init returned, the application called
#            MPI_Finalize, MANA called MPICH's MPI_Finalize (a checkpoint pending when a rank
#            calls MPI_Finalize holds it at that call). A generation counts when its instant
#            (the MANIFEST's created_unix_ns: every rank is stopped) is after the last
#            MPI_Init returned and before any rank's MPICH MPI_Finalize; `strict` also
#            before any application call of MPI_Finalize. At least 90% of the lines must
#            have one.
#   restart  per line: a first run under mana_launch (the launch mode's, when it ran before
#            in the same invocation) measures the window W between the last rank's
#            MPI_Init returning and the first rank's MPI_Finalize call; a second run
#            is checkpointed and killed at an instant drawn uniformly in W after the last
#            MPI_Init (md5 of --seed, the line and the attempt; also the rank that triggers
#            it): that rank's first MPI call from then on sends it the checkpoint signal and
#            holds it until the checkpoint is under way (MANA_CKPT_AT_NS with
#            --checkpoint-signal USR2 and MANA_CHECKPOINT_ON_SIGNAL_KILL=1; an external
#            `mana_status --checkpoint --kill` came after the end of most tests;
#            --trigger outside uses it all the same: it reaches fewer instants, those
#            away from the end of the test); then
#            `mpiexec.mpich -n NP mana_restart CKPT`. runtests judges the pre-kill output
#            followed by the restarted output, with the restart's exit status (Hydra's
#            banner about the ranks `--kill` ended is not the program's: removed). A
#            checkpoint that fails (the job ended first) or is committed after a rank called
#            MPICH's MPI_Finalize is tried again with a new draw (--attempts, default 2; the
#            last is judged as it ends). OUT/restart-instants.tsv: each line's outcome (restarted,
#            late, missed, no-window), attempts, W and the drawn offset in ms, details.
#            --sample N: only the N tests (dir/name) with the smallest md5("SEED:dir/name")
#            among the selected ones (default: all).
#   all      native launch ckpt restart; both: native launch.
# --list FILE: lines `dir/testname` (e.g. `pt2pt/sendrecv2`, `f77/coll/allredint8f`); every
#   testlist line of that test is taken (np, args, env, timeLimit ...). `#` starts a comment.
# --dirs: whole testlist of each directory (default: the CI list tests/mpich/ci-list.txt).
# Every testlist timeLimit above --timeout (default 60 s) is lowered to it.
# Cache (source, configured and built suite): $MANA_SUITE_DIR, default /var/tmp/mana-mpich-suite
# (one run at a time per cache: the selection is written into its testlist directories).
# Results: OUT/<mode>/<dir>.xml (runtests' XML, with the output of every failure),
# OUT/<mode>.tsv (key, status, seconds), OUT/summary.txt; a failed MANA run keeps its
# coordinator log (and the restart mode's outputs) under OUT/<mode>/runs/.
# --summary-only: the summary and verdict of the results already in OUT.
# Exit status: non-zero when, for a mode run with native, a test line's outcome differs from
# native's (either way) and the difference is not in the expected-differences file
# (--expected, default tests/mpich/expected-differences.txt: `MODE KEY [intermittent] #
# cause`), when a listed difference does not occur (unless marked intermittent), or when
# ckpt's 90% is not reached.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=${MANA_SUITE_REPO:-$(cd "$(dirname "$SELF")/.." && pwd)}
if [[ ${1:-} != --mpiexec && -z ${MANA_SUITE_REPO:-} ]]; then
    # Run from a copy (also as runtests' mpiexec wrapper): bash reads a script as it goes,
    # and a run takes minutes, during which the checkout may be edited or switched.
    copy=$(mktemp "${TMPDIR:-/tmp}/mpich-testsuite.XXXXXX.sh")
    cp "$SELF" "$copy"
    MANA_SUITE_REPO=$REPO exec bash "$copy" "$@"
fi
if [[ ${1:-} != --mpiexec ]]; then
    # shellcheck disable=SC2064
    trap "rm -f '$SELF'" EXIT
fi

# ---------------------------------------------------------------------------------------
# The mpiexec wrapper runtests calls: `SELF --mpiexec -n NP [mpiexec args] ./prog [args]`.
# Environment: MODE (native|launch|ckpt|restart), MANA_BIN, MANA_SUITE_BUILD (the suite's
# build directory), MANA_SUITE_RUNS (where failed runs' logs go), MANA_SUITE_STATS (the
# ckpt/restart per-line table), MANA_SUITE_WINDOWS (launch's MPI_Init/MPI_Finalize
# instants, for restart), MANA_SUITE_INTERVAL, MANA_SUITE_SEED, MANA_SUITE_ATTEMPTS,
# MPIEXEC_TIMEOUT (set by runtests, honoured by Hydra).
# ---------------------------------------------------------------------------------------

# Nanoseconds since the epoch (bash 5 builtin, no fork).
now_ns() {
    local r=${EPOCHREALTIME/./}
    echo $((10#$r * 1000))
}

# Sleeps until the epoch-ns instant $1.
sleep_until() {
    local d=$(($1 - $(now_ns)))
    ((d > 0)) && sleep "$((d / 1000000000)).$(printf '%09d' $((d % 1000000000)))"
    return 0
}

# A MANA_MPI_TIMES file (lines `init|finalize_called|finalize RANK UNIX_NS`, written by
# MANA's MPI wrappers: MPI_Init returned / the application called MPI_Finalize / MANA calls
# MPICH's MPI_Finalize, which a pending checkpoint may delay) ->
# "N_INIT MAX_INIT N_FIN MIN_FIN MIN_FIN_CALLED" (a minimum is 0 when no such line).
# Only lines before $2 (epoch ns) when given.
times_summary() {
    local what rank t ni=0 mi=0 nf=0 mf=0 mc=0 before=${2:-0}
    if [[ -f $1 ]]; then
        while read -r what rank t; do
            [[ $t =~ ^[0-9]+$ ]] || continue
            ((before == 0 || t < before)) || continue
            case $what in
            init) ni=$((ni + 1)); ((t > mi)) && mi=$t ;;
            finalize) nf=$((nf + 1)); ((mf == 0 || t < mf)) && mf=$t ;;
            finalize_called) ((mc == 0 || t < mc)) && mc=$t ;;
            esac
        done <"$1"
    fi
    echo "$ni $mi $nf $mf $mc"
}

# A MANA_MPI_TIMES file -> "RANK:UNIX_NS,..." of the ranks' MPI_Init returns.
init_list() {
    [[ -f $1 ]] && awk '$1 == "init" { printf "%s:%s,", $2, $3 }' "$1"
    return 0
}

# The commit instant of generation $2 of checkpoint directory $1 (MANIFEST created_unix_ns).
gen_instant() {
    local m
    m=$(printf '%s/gen-%06d/MANIFEST' "$1" "$2")
    [[ -f $m ]] || m=$(printf '%s.manifests/gen-%06d' "$1" "$2")
    [[ -f $m ]] || { echo 0; return; }
    local line
    line=$(grep -m1 '"created_unix_ns"' "$m" || true)
    line=${line//[^0-9]/}
    echo "${line:-0}"
}

# Every half second while process $1 lives, and once after: the committed generations of
# checkpoint directory $2 older than its LATEST are removed, their MANIFEST kept in
# $2.manifests/ (a 4 GiB test checkpointed every 0.05 s would fill the disk).
prune_generations() {
    local pid=$1 dir=$2 latest d alive=1
    mkdir -p "$dir.manifests"
    while ((alive)); do
        kill -0 "$pid" 2>/dev/null && sleep 0.5 || alive=0
        latest=$(cat "$dir/LATEST" 2>/dev/null || true)
        [[ -n $latest ]] || continue
        for d in "$dir"/gen-*; do
            [[ -d $d && $(basename "$d") < $latest && -f $d/MANIFEST ]] || continue
            cp "$d/MANIFEST" "$dir.manifests/$(basename "$d")" && rm -rf "$d"
        done
    done
}

# A number in [0, 1e6) from md5 of the arguments (fixed-seed draws).
draw_ppm() {
    local h
    h=$(printf '%s' "$*" | md5sum)
    echo $((16#${h:0:8} % 1000000))
}

wrapper_main() {
    local mode=${MODE:-native}
    local limit=${MPIEXEC_TIMEOUT:-180}
    # Hydra honours MPIEXEC_TIMEOUT; the outer timeout only catches a launcher that hangs.
    local guard=(timeout -k 10 $((limit + 30)))
    if [[ $mode == native ]]; then
        exec "${guard[@]}" mpiexec.mpich "$@"
    fi
    # Split the command line at the program (runtests always writes ./prog).
    local pre=() post=() seen=0 a np=1 prev=""
    for a in "$@"; do
        if ((seen == 0)) && [[ $a == ./* ]]; then seen=1; fi
        if ((seen)); then post+=("$a"); else
            pre+=("$a")
            [[ $prev == -n || $prev == -np ]] && np=$a
            prev=$a
        fi
    done
    if ((seen == 0)); then
        echo "mpich-testsuite wrapper: no ./program in: $*" >&2
        exit 2
    fi
    # The line's key as in OUT/<mode>.tsv: dir/name np [args].
    local rel=${PWD#"${MANA_SUITE_BUILD:-}"/}
    local key="$rel/${post[0]#./} $np"
    ((${#post[@]} > 1)) && key+=" ${post[*]:1}"
    local bin=${MANA_BIN:?MANA_BIN not set}
    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/mana-suite.XXXXXX")
    local status=$tmp/status rc=0
    # An interrupted run (runtests killed) must not leave its coordinator behind.
    # shellcheck disable=SC2064
    trap "'$bin/mana_status' --status-file '$status' --quit >/dev/null 2>&1; rm -rf '$tmp'; exit 143" TERM INT HUP
    local coord=("$bin/mana_coordinator" --daemon --port 0 --status-file "$status")
    [[ $mode == ckpt ]] && coord+=(--interval "${MANA_SUITE_INTERVAL:-0.05}")
    if ! "${coord[@]}" >"$tmp/coordinator.out" 2>&1; then
        echo "mpich-testsuite wrapper: mana_coordinator failed to start:" >&2
        cat "$tmp/coordinator.out" >&2
        exit 3
    fi
    local launch=("$bin/mana_launch" --status-file "$status")
    case $mode in
    launch)
        MANA_MPI_TIMES=$tmp/times "${guard[@]}" mpiexec.mpich "${pre[@]}" \
            "${launch[@]}" --ckptdir "$tmp/ckpt" "${post[@]}" || rc=$?
        # The restart mode's measuring run, when it comes later in the same run.
        if [[ -n ${MANA_SUITE_WINDOWS:-} ]]; then
            printf '%s\t%d\t%s\t%s\n' "$key" "$rc" "$(times_summary "$tmp/times")" "$(init_list "$tmp/times")" \
                >>"$MANA_SUITE_WINDOWS"
        fi
        ;;
    ckpt)
        # Besides the coordinator's interval, one checkpoint requested from inside the job at
        # rank 0's first MPI call after MPI_Init (MANA_CKPT_AT_NS, as in the restart mode,
        # without the kill): a test that spends under a millisecond between MPI_Init and
        # MPI_Finalize is otherwise over before the interval's next checkpoint (86% of the
        # CI list's lines had one in an idle CI run, under the required 90%).
        MANA_CKPT_AT_NS=0:0 MANA_MPI_TIMES=$tmp/times "${guard[@]}" mpiexec.mpich "${pre[@]}" \
            "${launch[@]}" --checkpoint-signal USR2 --ckptdir "$tmp/ckpt" "${post[@]}" &
        local job=$!
        prune_generations "$job" "$tmp/ckpt" &
        local pruner=$!
        wait "$job" || rc=$?
        wait "$pruner" || true
        # Committed generations, and those whose instant (every rank stopped) lies after
        # the last rank's MPI_Init returned and before any rank called MPICH's MPI_Finalize
        # (every rank must have initialized); `strict`: also before any rank's application
        # called MPI_Finalize (MANA's wrapper holds a rank that calls it while a checkpoint
        # is pending: that image still has MPI initialized, and drained).
        local ni mi nf mf mc g t total=0 inside=0 strict=0
        read -r ni mi nf mf mc < <(times_summary "$tmp/times")
        for g in $(grep -o 'checkpoint committed generation=[0-9]*' "$status.log" 2>/dev/null | grep -o '[0-9]*$'); do
            total=$((total + 1))
            t=$(gen_instant "$tmp/ckpt" "$g")
            if ((ni == np && t > mi && (mf == 0 || t < mf))); then
                inside=$((inside + 1))
                ((mc == 0 || t < mc)) && strict=$((strict + 1))
            fi
        done
        [[ -n ${MANA_SUITE_STATS:-} ]] &&
            printf '%s\t%d\t%d\t%d\t%d\t%d\n' "$key" "$inside" "$total" "$ni" "$nf" "$strict" >>"$MANA_SUITE_STATS"
        ;;
    restart)
        restart_line || rc=$?
        ;;
    *)
        echo "mpich-testsuite wrapper: unknown MODE=$mode" >&2
        rc=2
        ;;
    esac
    "$bin/mana_status" --status-file "$status" --quit >/dev/null 2>&1 || true
    if ((rc != 0)) && [[ -n ${MANA_SUITE_RUNS:-} ]]; then
        # Keep the coordinator log of a failed run (the program's output is in runtests' XML).
        local keep
        keep="$MANA_SUITE_RUNS/$(basename "${post[0]}").$$"
        mkdir -p "$keep"
        cp -a "$tmp"/status.log "$tmp"/coordinator.out "$tmp"/times* "$tmp"/out* "$tmp"/*.log "$keep"/ 2>/dev/null || true
        echo "rc=$rc cmd=${pre[*]} ${post[*]}" >"$keep/cmd"
    fi
    rm -rf "$tmp"
    exit "$rc"
}

# The restart mode for one test line (variables of wrapper_main in scope). Writes the judged
# output to stdout and returns the judged exit status.
restart_line() {
    local rc1=0 ni mi nf mf mc k measured="" inits=""
    # 1. The measuring run: W = [last MPI_Init returned, first MPI_Finalize called]. The
    # launch mode's run of this line (the k-th with this key), when this run had one.
    k=$(($(awk -F'\t' -v k="$key" '$1 == k' "${MANA_SUITE_STATS:-/dev/null}" 2>/dev/null | wc -l) + 1))
    if [[ -n ${MANA_SUITE_WINDOWS:-} && -f $MANA_SUITE_WINDOWS ]]; then
        measured=$(awk -F'\t' -v k="$key" -v n="$k" '$1 == k && ++c == n { print $2, $3, $4 }' "$MANA_SUITE_WINDOWS")
    fi
    if [[ -n $measured ]]; then
        # No window there (it failed, or a rank finalized before another initialized):
        # the line's own measuring run decides (and is judged if it has none either).
        read -r rc1 ni mi nf mf mc inits <<<"$measured"
        if ((rc1 != 0 || ni != np || nf != np || mc <= mi)); then measured=""; fi
    fi
    if [[ -z $measured ]]; then
        rc1=0
        MANA_MPI_TIMES=$tmp/times1 "${guard[@]}" mpiexec.mpich "${pre[@]}" \
            "${launch[@]}" --ckptdir "$tmp/ckpt1" "${post[@]}" </dev/null >"$tmp/out1" 2>&1 || rc1=$?
        read -r ni mi nf mf mc < <(times_summary "$tmp/times1")
        inits=$(init_list "$tmp/times1")
    fi
    mf=$mc
    if ((rc1 != 0 || ni != np || nf != np || mf <= mi)); then
        # No window to draw from: the measuring run is the one judged.
        stat_line no-window 0 0 0 "rc=$rc1 init=$ni finalize=$nf"
        cat "$tmp/out1"
        return "$rc1"
    fi
    local window=$((mf - mi)) attempt offset rc2 n t0 g t outcome="" why rank own ns pid crc
    local attempts=${MANA_SUITE_ATTEMPTS:-2}
    for ((attempt = 1; attempt <= attempts; attempt++)); do
        offset=$((window / 1000 * $(draw_ppm "${MANA_SUITE_SEED:-42}:$key:$attempt") / 1000))
        rm -rf "$tmp/ckpt2" "$tmp/times2"
        rc2=0
        if [[ ${MANA_SUITE_TRIGGER:-inside} == inside ]]; then
            # 2. The run that is checkpointed and killed. The instant is triggered inside the
            # job (MANA_CKPT_AT_NS, mpi-wrappers/src/special.c): the drawn rank's first MPI
            # call at offset + (last MPI_Init - its own MPI_Init, measured) after its MPI_Init
            # returned sends it the checkpoint signal and holds it until the checkpoint is
            # under way — an external `mana_status --checkpoint --kill` came after the end
            # of most tests, which spend a few milliseconds in MPI.
            rank=$(($(draw_ppm "${MANA_SUITE_SEED:-42}:$key:$attempt:rank") * np / 1000000))
            own=$(tr ',' '\n' <<<"$inits" | awk -F: -v r="$rank" '$1 == r { print $2; exit }')
            ns=$((offset + mi - ${own:-$mi}))
            MANA_CKPT_AT_NS=$rank:$ns MANA_CHECKPOINT_ON_SIGNAL_KILL=1 MANA_MPI_TIMES=$tmp/times2 \
                "${guard[@]}" mpiexec.mpich "${pre[@]}" "${launch[@]}" --checkpoint-signal USR2 \
                --ckptdir "$tmp/ckpt2" "${post[@]}" </dev/null >"$tmp/out2" 2>&1 || rc2=$?
            read -r ni t0 nf mf mc < <(times_summary "$tmp/times2")
            if [[ ! -f $tmp/ckpt2/LATEST ]]; then
                outcome=missed why="no checkpoint committed (rank $rank, $((ns / 1000)) us after its MPI_Init; rc=$rc2)"
                continue
            fi
        else
            # 2'. The same with the trigger outside the job (--trigger outside): the
            # harness's own `mana_status --checkpoint --kill` at the drawn instant after the
            # last MPI_Init it sees.
            MANA_MPI_TIMES=$tmp/times2 "${guard[@]}" mpiexec.mpich "${pre[@]}" \
                "${launch[@]}" --ckptdir "$tmp/ckpt2" "${post[@]}" </dev/null >"$tmp/out2" 2>&1 &
            pid=$!
            while kill -0 "$pid" 2>/dev/null; do
                read -r ni t0 nf mf mc < <(times_summary "$tmp/times2")
                ((ni >= np)) && break
                sleep 0.01
            done
            if ((ni < np)); then
                wait "$pid" || rc2=$?
                outcome=missed why="the job ended before its last MPI_Init was seen (rc=$rc2)"
                continue
            fi
            sleep_until $((t0 + offset))
            crc=0
            "$bin/mana_status" --status-file "$status" --checkpoint --kill >"$tmp/ckpt.log" 2>&1 || crc=$?
            wait "$pid" || rc2=$?
            if ((crc != 0)); then
                outcome=missed why="checkpoint: $(tail -n1 "$tmp/ckpt.log")"
                continue
            fi
        fi
        g=$(grep -o 'gen-[0-9]*' "$tmp/ckpt2/LATEST" | tail -n1 || true)
        g=${g#gen-}
        g=$((10#${g:-0}))
        t=$(gen_instant "$tmp/ckpt2" "$g")
        # Lines written after the commit come from the restarted ranks: only those before
        # it tell where the ranks were stopped.
        read -r ni t0 nf mf mc < <(times_summary "$tmp/times2" "$t")
        if ((t == 0 || ni < np || nf > 0)); then
            outcome=late why="generation $g committed $(((t - t0) / 1000000)) ms after the last MPI_Init, after $nf rank(s) called MPICH's MPI_Finalize"
            # The last attempt is restarted all the same (and recorded as late).
            ((attempt < attempts)) && continue
        else
            outcome=restarted why="generation $g committed $(((t - t0) / 1000000)) ms after the last MPI_Init"
            ((mc > 0)) && why+=", a rank held at its MPI_Finalize call"
        fi
        # Hydra's banner about the ranks that `--kill` ended (they leave without
        # MPI_Finalize; Hydra reports it and cleans up the others) is the launcher's,
        # caused by the kill: not part of the program's pre-kill output.
        if strip_hydra_banner "$tmp/out2"; then why+=", Hydra's banner about the kill removed"; fi
        # 3. The restart.
        local rc3=0
        "${guard[@]}" mpiexec.mpich "${pre[@]}" "$bin/mana_restart" --status-file "$status" \
            "$tmp/ckpt2" </dev/null >"$tmp/out3" 2>&1 || rc3=$?
        stat_line "$outcome" "$attempt" "$window" "$offset" "$why; restart rc=$rc3"
        cat "$tmp/out2" "$tmp/out3"
        return "$rc3"
    done
    # Only misses: the last (uninterrupted) run is the one judged.
    stat_line "$outcome" "$attempts" "$window" "$offset" "$why"
    cat "$tmp/out2"
    return "$rc2"
}

# Removes from file $1 Hydra's "BAD TERMINATION" banner (and the blank lines before it);
# true if there was one.
strip_hydra_banner() {
    perl -i -ne '
        if (/^\s*$/) {
            $blank .= $_;
        } elsif (/^=+$/
            || /^=   (BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES|PID \d+ RUNNING AT |EXIT CODE: |CLEANING UP REMAINING PROCESSES|YOU CAN IGNORE THE BELOW CLEANUP MESSAGES)/
            || /^YOUR APPLICATION TERMINATED WITH THE EXIT STRING: /
            || /^This typically refers to a problem with your application\.$/
            || /^Please see the FAQ page for debugging suggestions$/) {
            $blank = ""; $n++;
        } else {
            print $blank, $_; $blank = "";
        }
        if (eof) { print $blank; open(my $f, ">", "$ARGV.banner") if $n }' "$1"
    [[ -e $1.banner ]] && rm -f "$1.banner"
}

# One line of OUT/restart-instants.tsv: key, outcome, attempts, window ms, offset ms, detail.
stat_line() {
    [[ -n ${MANA_SUITE_STATS:-} ]] || return 0
    printf '%s\t%s\t%s\t%d\t%d\t%s\n' "$key" "$1" "$2" $(($3 / 1000000)) $(($4 / 1000000)) "$5" \
        >>"$MANA_SUITE_STATS"
}

if [[ ${1:-} == --mpiexec ]]; then
    shift
    wrapper_main "$@"
fi

# ---------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------
MODE_OPT=both
DIRS=""
LIST=""
BIN="$REPO/target/release"
OUT=""
TIMEOUT=60
TESTLISTS=testlist
INTERVAL=0.05
SAMPLE=0
SEED=42
ATTEMPTS=2
EXPECTED="$REPO/tests/mpich/expected-differences.txt"
SUMMARY_ONLY=0
SUITE=${MANA_SUITE_DIR:-/var/tmp/mana-mpich-suite}
usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
    --mode) MODE_OPT=$2; shift 2 ;;
    --dirs) DIRS=$2; shift 2 ;;
    --list) LIST=$(readlink -f "$2"); shift 2 ;;
    --bin) BIN=$(readlink -f "$2"); shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --testlists) TESTLISTS=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --sample) SAMPLE=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --attempts) ATTEMPTS=$2; shift 2 ;;
    --trigger)
        case $2 in inside | outside) TRIGGER=$2 ;; *) echo "--trigger: inside or outside, not '$2'" >&2; exit 2 ;; esac
        shift 2 ;;
    --expected) EXPECTED=$(readlink -f "$2"); shift 2 ;;
    --summary-only) SUMMARY_ONLY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case $MODE_OPT in
both) MODES=(native launch) ;;
all) MODES=(native launch ckpt restart) ;;
*) IFS=, read -r -a MODES <<<"$MODE_OPT" ;;
esac
for m in "${MODES[@]}"; do
    case $m in
    native | launch | ckpt | restart) ;;
    *) echo "unknown mode $m" >&2; exit 2 ;;
    esac
done
if [[ -z $DIRS && -z $LIST ]]; then LIST="$REPO/tests/mpich/ci-list.txt"; fi
OUT=${OUT:-$SUITE/results}
mkdir -p "$OUT"
OUT=$(readlink -f "$OUT")
for m in "${MODES[@]}"; do
    if [[ $m != native ]]; then
        for b in mana_launch mana_coordinator mana_status mana_restart; do
            [[ -x $BIN/$b ]] || { echo "missing $BIN/$b (build first or pass --bin)" >&2; exit 2; }
        done
    fi
done
T0=$(date +%s)
log() { printf '[%4ds] %s\n' $(($(date +%s) - T0)) "$*"; }

if ((SUMMARY_ONLY)); then
    SRC=$(ls -d "$SUITE"/src/mpich-*/test/mpi 2>/dev/null | head -n1 || true)
    BUILD=$SUITE/build/mpi RUN_DIRS=()
else
# Everything up to the runs is skipped by --summary-only (the cache is left alone).
# ---------------------------------------------------------------------------------------
# Packages and source
# ---------------------------------------------------------------------------------------
need=()
for p in dpkg-dev gfortran mpich libmpich-dev make perl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

SRC=$(ls -d "$SUITE"/src/mpich-*/test/mpi 2>/dev/null | head -n1 || true)
if [[ -z $SRC ]]; then
    if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding the deb-src entry"
        cat >/etc/apt/sources.list.d/debian-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt-get update -qq
    fi
    log "apt-get source mpich"
    mkdir -p "$SUITE/src"
    (cd "$SUITE/src" && apt-get source -qq mpich >/dev/null)
    SRC=$(ls -d "$SUITE"/src/mpich-*/test/mpi | head -n1)
fi

BUILD=$SUITE/build/mpi
if [[ ! -f $BUILD/config.status || ! -x $BUILD/runtests ]]; then
    log "configuring the suite in $BUILD"
    rm -rf "$BUILD"
    mkdir -p "$(dirname "$BUILD")"
    cp -a "$SRC" "$BUILD"
    (cd "$BUILD" && ./configure --with-mpi=/usr \
        CC=mpicc.mpich F77=mpif77.mpich FC=mpif90.mpich CXX=mpicxx.mpich \
        MPICC=mpicc.mpich MPIF77=mpif77.mpich MPIFC=mpif90.mpich MPICXX=mpicxx.mpich \
        MPIEXEC=mpiexec.mpich --disable-spawn --disable-ft-tests --disable-perftest \
        >"$SUITE/configure.log" 2>&1) || { tail -20 "$SUITE/configure.log"; exit 1; }
fi
log "building util and dtpools"
make -C "$BUILD/util" -j2 >"$SUITE/build-util.log" 2>&1 || { tail -20 "$SUITE/build-util.log"; exit 1; }
make -C "$BUILD/dtpools" -j2 >"$SUITE/build-dtpools.log" 2>&1 || { tail -20 "$SUITE/build-dtpools.log"; exit 1; }

# ---------------------------------------------------------------------------------------
# Selection: RUN_DIRS (directories given to runtests -testdirs) and the list file name.
# ---------------------------------------------------------------------------------------
RUN_DIRS=()
LISTNAME=testlist.mana-selected
RLISTNAME=testlist.mana-restart
# testlist lines on stdin -> the same with timeLimit capped at TIMEOUT (a hang costs at most that).
cap() { awk -v cap="$TIMEOUT" '{ for (i = 1; i <= NF; i++) if ($i ~ /^timeLimit=/) { v = substr($i, 11) + 0; if (v > cap) $i = "timeLimit=" cap } print }'; }
if [[ -n $LIST ]]; then
    # Per directory, the testlist lines of the listed tests (in testlist order).
    declare -A want=()
    while read -r entry _; do
        entry=${entry%%#*}
        [[ -z $entry ]] && continue
        d=${entry%/*} t=${entry##*/}
        want[$d]+=" $t"
    done <"$LIST"
    mapfile -t sorted < <(printf '%s\n' "${!want[@]}" | sort)
    for d in "${sorted[@]}"; do
        [[ -f $BUILD/$d/testlist ]] || { echo "no $d/testlist" >&2; exit 2; }
        awk -v names="${want[$d]}" '
            BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) w[a[i]] = 1 }
            { line = $0; sub(/#.*/, "", line); split(line, f, " ") }
            (f[1] in w) { print line; got[f[1]] = 1 }
            END { for (k in w) if (!(k in got)) printf "%s not in testlist\n", k > "/dev/stderr" }
        ' "$BUILD/$d/testlist" | cap >"$BUILD/$d/$LISTNAME"
        RUN_DIRS+=("$d")
        progs=$(awk '{ print $1 }' "$BUILD/$d/$LISTNAME" | sort -u | tr '\n' ' ')
        log "building $d: $progs"
        # shellcheck disable=SC2086
        make -C "$BUILD/$d" -k -j2 $progs >"$OUT/build-${d//\//_}.log" 2>&1 || true
    done
else
    read -r -a RUN_DIRS <<<"$DIRS"
    for d in "${RUN_DIRS[@]}"; do
        [[ -d $BUILD/$d ]] || { echo "no directory $d in the suite" >&2; exit 2; }
        # Every testlist below d (subdirectory entries recurse with the same list name).
        while read -r tl; do
            IFS=, read -r -a names <<<"$TESTLISTS"
            for n in "${names[@]}"; do
                [[ -f $(dirname "$tl")/$n ]] && cat "$(dirname "$tl")/$n"
            done | cap >"$(dirname "$tl")/$LISTNAME"
        done < <(find "$BUILD/$d" -name testlist)
    done
fi

# The restart mode's sample: per list file, its lines of sampled tests (and its
# subdirectory entries). Tests are `reldir/name`; the N smallest md5("SEED:reldir/name").
if [[ " ${MODES[*]} " == *" restart "* ]]; then
    if [[ -n $LIST ]]; then
        mapfile -t lists < <(for d in "${RUN_DIRS[@]}"; do echo "$BUILD/$d/$LISTNAME"; done)
    else
        mapfile -t lists < <(for d in "${RUN_DIRS[@]}"; do find "$BUILD/$d" -name "$LISTNAME"; done | sort -u)
    fi
    all_tests=$(for l in "${lists[@]}"; do
        dir=$(dirname "$l")
        awk '{ sub(/#.*/, ""); if (NF) print $1 }' "$l" | sort -u | while read -r t; do
            [[ -d $dir/$t ]] || echo "${dir#"$BUILD"/}/$t"
        done
    done)
    if ((SAMPLE > 0)); then
        sampled=$(while read -r t; do
            [[ -n $t ]] && printf '%s %s\n' "$(printf '%s' "$SEED:$t" | md5sum | cut -c1-32)" "$t"
        done <<<"$all_tests" | sort | head -n "$SAMPLE" | awk '{ print $2 }')
    else
        sampled=$all_tests
    fi
    printf '%s\n' "$sampled" | sort >"$OUT/restart-sample.txt"
    for l in "${lists[@]}"; do
        dir=$(dirname "$l") rel=${l#"$BUILD"/}
        rel=$(dirname "$rel")
        awk -v rel="$rel" -v dir="$dir" -v s="$OUT/restart-sample.txt" '
            BEGIN { while ((getline x < s) > 0) want[x] = 1 }
            { line = $0; sub(/#.*/, "", line); if (split(line, f, " ") == 0) next }
            ((rel "/" f[1]) in want) { print line; next }
            { if (system("test -d \"" dir "/" f[1] "\"") == 0) print line }
        ' "$l" >"$dir/$RLISTNAME"
    done
    log "restart sample: $(wc -l <"$OUT/restart-sample.txt") tests of $(grep -c . <<<"$all_tests")"
fi
fi # SUMMARY_ONLY

# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------
# XML -> TSV: key (dir/name np args, #k for the k-th repetition), status, seconds.
xml2tsv() {
    perl -ne '
        if (/<NAME>(.*)<\/NAME>/) { $n = $1; $st = ""; $t = "" }
        if (/<ARGS>(.*)<\/ARGS>/) { $a = $1 }
        if (/<NP>(.*)<\/NP>/) { $np = $1 }
        if (/<WORKDIR>\.\/?(.*)<\/WORKDIR>/) { $w = $1 }
        if (/<STATUS>(.*)<\/STATUS>/) { $st = $1 }
        if (/<TIME>(.*)<\/TIME>/) { $t = sprintf("%.1f", $1) }
        if (/<\/MPITEST>/) {
            my $k = "$w/$n $np" . ($a ne "" ? " $a" : "");
            my $c = ++$seen{$k};
            $k .= " #$c" if $c > 1;
            print "$k\t$st\t$t\n";
        }' "$@"
}
# The same numbering (#k) for the per-line tables the wrapper writes.
number_keys() { awk -F'\t' 'BEGIN { OFS = "\t" } { c = ++seen[$1]; if (c > 1) $1 = $1 " #" c; print }' "$@"; }

# Every generation is kept by MANA (--keep 0): prune_generations removes them itself,
# keeping their MANIFESTs, which gen_instant reads; MANA's default pruning (2) removed
# them under its feet ("cp: cannot stat …/MANIFEST", a failed line; CI of a52eca0).
export MANA_KEEP=0
export MANA_BIN=$BIN MPITEST_TIMEOUT=$TIMEOUT MANA_SUITE_BUILD=$BUILD
export MANA_SUITE_INTERVAL=$INTERVAL MANA_SUITE_SEED=$SEED MANA_SUITE_ATTEMPTS=$ATTEMPTS
export MANA_SUITE_TRIGGER=${TRIGGER:-inside}
# Written by the launch mode (its runs' MPI_Init/MPI_Finalize instants), read by restart.
export MANA_SUITE_WINDOWS=$OUT/launch.windows
((SUMMARY_ONLY)) || rm -f "$MANA_SUITE_WINDOWS"
for mode in "${MODES[@]}"; do
    ((SUMMARY_ONLY)) && break
    mkdir -p "$OUT/$mode/runs"
    rm -f "$OUT/$mode"/*.xml "$OUT/$mode.tsv" "$OUT/$mode.stats" "$OUT/$mode.secs"
    : >"$OUT/$mode.tsv"
done
# Directory by directory, each in every mode (partial results stay comparable).
((SUMMARY_ONLY)) && RUN_DIRS=()
for d in ${RUN_DIRS[@]+"${RUN_DIRS[@]}"}; do
    if [[ -z $LIST ]]; then
        t1=$(date +%s)
        make -C "$BUILD/$d" -k -j2 >"$OUT/build-${d//\//_}.log" 2>&1 || true
        log "built $d ($(($(date +%s) - t1))s)"
    fi
    for mode in "${MODES[@]}"; do
        x="$OUT/$mode/${d//\//_}.xml"
        lname=$LISTNAME
        [[ $mode == restart ]] && lname=$RLISTNAME
        t1=$(date +%s)
        (cd "$BUILD" && MODE=$mode MANA_SUITE_RUNS="$OUT/$mode/runs" MANA_SUITE_STATS="$OUT/$mode.stats" \
            ./runtests -srcdir=. -tests="$lname" -testdirs="$d" \
            -mpiexec="bash $SELF --mpiexec" -xmlfile="$x" >"$OUT/$mode/${d//\//_}.log" 2>&1) || true
        [[ -f $x ]] || continue
        xml2tsv "$x" >>"$OUT/$mode.tsv"
        p=$(xml2tsv "$x" | awk -F'\t' '$2 == "pass"' | wc -l)
        n=$(xml2tsv "$x" | wc -l)
        echo $(($(date +%s) - t1)) >>"$OUT/$mode.secs"
        log "$(printf '%-7s %-14s %4d/%-4d passed (%ds)' "$mode" "$d" "$p" "$n" $(($(date +%s) - t1)))"
    done
done

# ---------------------------------------------------------------------------------------
# Summary and verdict
# ---------------------------------------------------------------------------------------
export LC_ALL=C
passset() { awk -F'\t' '$2 == "pass" { print $1 }' "$OUT/$1.tsv" | sort; }
keys() { awk -F'\t' '{ print $1 }' "$OUT/$1.tsv" | sort; }
# Lines run in both modes whose outcome differs: "key<TAB>native-status<TAB>mode-status".
differences() {
    join -t $'\t' <(sort -t $'\t' -k1,1 "$OUT/native.tsv" | cut -f1,2) \
        <(sort -t $'\t' -k1,1 "$OUT/$1.tsv" | cut -f1,2) |
        awk -F'\t' '($2 == "pass") != ($3 == "pass")'
}
# Expected differences: "MODE KEY [intermittent] # cause" -> "MODE<TAB>KEY<TAB>flag".
expected() {
    [[ -f $EXPECTED ]] || return 0
    # A comment is `#` then a blank or the end of the line (` #2` ends a repeated line's key).
    sed -E 's/(^|[[:space:]])#([[:space:]].*)?$//' "$EXPECTED" | awk 'NF >= 2 {
        last = NF; flag = ""
        if ($NF == "intermittent") { flag = "intermittent"; last = NF - 1 }
        k = $2; for (i = 3; i <= last; i++) k = k " " $i
        print $1 "\t" k "\t" flag }'
}
rc=0
{
    echo "MPICH test suite ($(basename "$(dirname "$(dirname "$SRC")")")), modes: ${MODES[*]}, timeout ${TIMEOUT}s"
    for mode in "${MODES[@]}"; do
        echo "$mode: $(passset "$mode" | wc -l) passed of $(wc -l <"$OUT/$mode.tsv") ($(awk '{ s += $1 } END { print s + 0 }' "$OUT/$mode.secs" 2>/dev/null || echo 0)s)"
    done
    if [[ " ${MODES[*]} " == *" ckpt "* && -f $OUT/ckpt.stats ]]; then
        number_keys "$OUT/ckpt.stats" >"$OUT/ckpt-generations.tsv"
        n=$(wc -l <"$OUT/ckpt.tsv")
        k=$(awk -F'\t' '$2 >= 1' "$OUT/ckpt-generations.tsv" | wc -l)
        g=$(awk -F'\t' '{ s += $2; t += $3 } END { printf "%d of %d", s, t }' "$OUT/ckpt-generations.tsv")
        ks=$(awk -F'\t' '$6 >= 1' "$OUT/ckpt-generations.tsv" | wc -l)
        pct=$((n ? 100 * k / n : 0))
        echo
        echo "ckpt (--interval $INTERVAL): $k of $n test lines ($pct%) had >= 1 generation committed between MPI_Init and MPI_Finalize (generations inside/committed: $g)"
        echo "  $ks of $n ($((n ? 100 * ks / n : 0))%) before any rank's application even called MPI_Finalize (the others had a rank held at that call by the pending checkpoint)"
        if ((n == 0 || 10 * k < 9 * n)); then
            echo "  below 90%: FAIL"
            rc=1
        fi
        echo "  lines without one:"
        join -t $'\t' -v1 <(keys ckpt) <(awk -F'\t' '$2 >= 1 { print $1 }' "$OUT/ckpt-generations.tsv" | sort) |
            while read -r l; do
                printf '    %s  (%s)\n' "$l" "$(awk -F'\t' -v k="$l" '$1 == k { printf "committed %d, init lines %d, finalize lines %d", $3, $4, $5 }' "$OUT/ckpt-generations.tsv" </dev/null)"
            done
    fi
    if [[ " ${MODES[*]} " == *" restart "* && -f $OUT/restart.stats ]]; then
        number_keys "$OUT/restart.stats" >"$OUT/restart-instants.tsv"
        echo
        echo "restart (seed $SEED, sample of $(wc -l <"$OUT/restart-sample.txt") tests, $(wc -l <"$OUT/restart.tsv") lines): outcomes" \
            "$(awk -F'\t' '{ c[$2]++ } END { for (o in c) printf "%s %d, ", o, c[o] }' "$OUT/restart-instants.tsv" | sed 's/, $//')"
        echo "  restarted inside the window and passed: $(join -t $'\t' <(awk -F'\t' '$2 == "restarted" { print $1 }' "$OUT/restart-instants.tsv" | sort) <(passset restart) | wc -l)"
        awk -F'\t' '$2 != "restarted" { printf "  %s: %s (%s)\n", $1, $2, $6 }' "$OUT/restart-instants.tsv"
    fi
    if [[ " ${MODES[*]} " == *" native "* ]]; then
        exp=$(expected)
        for mode in "${MODES[@]}"; do
            [[ $mode == native ]] && continue
            diffs=$(differences "$mode")
            echo
            echo "differences from native under $mode ($(grep -c . <<<"$diffs" || true)):"
            while IFS=$'\t' read -r k ns ms; do
                [[ -z $k ]] && continue
                if awk -F'\t' -v m="$mode" -v k="$k" '$1 == m && $2 == k { f = 1 } END { exit !f }' <<<"$exp"; then
                    echo "  $k: native $ns, $mode $ms (expected)"
                else
                    echo "  $k: native $ns, $mode $ms: NOT EXPECTED"
                    rc=1
                fi
            done <<<"$diffs"
            # Listed differences (of lines run in both modes) that did not occur.
            while IFS=$'\t' read -r m k flag; do
                [[ $m == "$mode" ]] || continue
                grep -qxF "$k" <(keys native) && grep -qxF "$k" <(keys "$mode") || continue
                cut -f1 <<<"$diffs" | grep -qxF "$k" && continue
                if [[ $flag == intermittent ]]; then
                    echo "  $k: listed as an intermittent difference, same as native this time"
                else
                    echo "  $k: listed in $(basename "$EXPECTED") but same as native: STALE ENTRY"
                    rc=1
                fi
            done <<<"$exp"
        done
    fi
    echo
    echo "total time $(($(date +%s) - T0))s; verdict: $( ((rc == 0)) && echo ok || echo FAIL)"
} | tee "$OUT/summary.txt"
# rc was set in a subshell of the pipeline: the summary's verdict line carries it.
tail -n1 "$OUT/summary.txt" | grep -q 'verdict: ok$'
