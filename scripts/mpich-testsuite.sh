#!/usr/bin/env bash
# MPICH's own test suite (test/mpi of the Debian mpich source) as a judge of MANA:
# every selected test runs natively (mpiexec.mpich) and/or under mana_launch, runtests
# judges each run (" No Errors" and exit status), and the pass sets are compared.
#
#   bash scripts/mpich-testsuite.sh [--mode native|launch|both] [--dirs "pt2pt coll ..." | --list FILE]
#                                   [--bin DIR] [--out DIR] [--timeout SECONDS] [--testlists "testlist,..."]
#
# --list FILE: lines `dir/testname` (e.g. `pt2pt/sendrecv2`, `f77/coll/allredint8f`); every
#   testlist line of that test is taken (np, args, env, timeLimit ...). `#` starts a comment.
# --dirs: whole testlist of each directory (default: the CI list tests/mpich/ci-list.txt).
# Every testlist timeLimit above --timeout (default 60 s) is lowered to it.
# Cache (source, configured and built suite): $MANA_SUITE_DIR, default /var/tmp/mana-mpich-suite.
# Results: OUT/<mode>/<dir>.xml (runtests' XML, with the output of every failure),
# OUT/<mode>.tsv (key, status, seconds), OUT/summary.txt; a failed MANA run keeps its
# coordinator log under OUT/<mode>/runs/.
# Exit status (mode both): non-zero iff a test passing natively does not pass under mana_launch.
#
# Modes are implemented by the mpiexec wrapper (this script called as `--mpiexec`, with MODE
# in the environment); new modes (ckpt, restart) only need a branch in wrapper_main.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)

# ---------------------------------------------------------------------------------------
# The mpiexec wrapper runtests calls: `SELF --mpiexec -n NP [mpiexec args] ./prog [args]`.
# Environment: MODE (native|launch|...), MANA_BIN, MANA_SUITE_RUNS (where failed runs' logs
# go), MPIEXEC_TIMEOUT (set by runtests, honoured by Hydra).
# ---------------------------------------------------------------------------------------
wrapper_main() {
    local mode=${MODE:-native}
    local limit=${MPIEXEC_TIMEOUT:-180}
    # Hydra honours MPIEXEC_TIMEOUT; the outer timeout only catches a launcher that hangs.
    local guard=(timeout -k 10 $((limit + 30)))
    if [[ $mode == native ]]; then
        exec "${guard[@]}" mpiexec.mpich "$@"
    fi
    # Split the command line at the program (runtests always writes ./prog).
    local pre=() post=() seen=0 a
    for a in "$@"; do
        if ((seen == 0)) && [[ $a == ./* ]]; then seen=1; fi
        if ((seen)); then post+=("$a"); else pre+=("$a"); fi
    done
    if ((seen == 0)); then
        echo "mpich-testsuite wrapper: no ./program in: $*" >&2
        exit 2
    fi
    local bin=${MANA_BIN:?MANA_BIN not set}
    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/mana-suite.XXXXXX")
    local status=$tmp/status rc=0
    # An interrupted run (runtests killed) must not leave its coordinator behind.
    # shellcheck disable=SC2064
    trap "'$bin/mana_status' --status-file '$status' --quit >/dev/null 2>&1; rm -rf '$tmp'; exit 143" TERM INT HUP
    case $mode in
    launch)
        if ! "$bin/mana_coordinator" --daemon --port 0 --status-file "$status" \
            >"$tmp/coordinator.out" 2>&1; then
            echo "mpich-testsuite wrapper: mana_coordinator failed to start:" >&2
            cat "$tmp/coordinator.out" >&2
            exit 3
        fi
        "${guard[@]}" mpiexec.mpich "${pre[@]}" \
            "$bin/mana_launch" --status-file "$status" --ckptdir "$tmp/ckpt" "${post[@]}" || rc=$?
        ;;
    # ckpt|restart) hook: start the coordinator as above, run under mana_launch, take
    #   `mana_status --checkpoint [--kill]` at some instant, then `mpiexec.mpich
    #   "${pre[@]}" "$bin/mana_restart" --status-file "$status" "$tmp/ckpt"`.
    *)
        echo "mpich-testsuite wrapper: unknown MODE=$mode" >&2
        exit 2
        ;;
    esac
    "$bin/mana_status" --status-file "$status" --quit >/dev/null 2>&1 || true
    if ((rc != 0)) && [[ -n ${MANA_SUITE_RUNS:-} ]]; then
        # Keep the coordinator log of a failed run (the program's output is in runtests' XML).
        local keep
        keep="$MANA_SUITE_RUNS/$(basename "${post[0]}").$$"
        mkdir -p "$keep"
        cp -a "$tmp"/status.log "$tmp"/coordinator.out "$keep"/ 2>/dev/null || true
        echo "rc=$rc cmd=${pre[*]} ${post[*]}" >"$keep/cmd"
    fi
    rm -rf "$tmp"
    exit "$rc"
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
SUITE=${MANA_SUITE_DIR:-/var/tmp/mana-mpich-suite}
usage() { sed -n '2,20p' "$SELF" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
    --mode) MODE_OPT=$2; shift 2 ;;
    --dirs) DIRS=$2; shift 2 ;;
    --list) LIST=$(readlink -f "$2"); shift 2 ;;
    --bin) BIN=$(readlink -f "$2"); shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --testlists) TESTLISTS=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case $MODE_OPT in
both) MODES=(native launch) ;;
*) MODES=("$MODE_OPT") ;;
esac
if [[ -z $DIRS && -z $LIST ]]; then LIST="$REPO/tests/mpich/ci-list.txt"; fi
OUT=${OUT:-$SUITE/results}
mkdir -p "$OUT"
OUT=$(readlink -f "$OUT")
for m in "${MODES[@]}"; do
    if [[ $m != native ]]; then
        for b in mana_launch mana_coordinator mana_status; do
            [[ -x $BIN/$b ]] || { echo "missing $BIN/$b (build first or pass --bin)" >&2; exit 2; }
        done
    fi
done
T0=$(date +%s)
log() { printf '[%4ds] %s\n' $(($(date +%s) - T0)) "$*"; }

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

export MANA_BIN=$BIN MPITEST_TIMEOUT=$TIMEOUT
for mode in "${MODES[@]}"; do
    mkdir -p "$OUT/$mode/runs"
    rm -f "$OUT/$mode"/*.xml "$OUT/$mode.tsv"
done
# Directory by directory, each in every mode (partial results stay comparable).
for d in "${RUN_DIRS[@]}"; do
    if [[ -z $LIST ]]; then
        t1=$(date +%s)
        make -C "$BUILD/$d" -k -j2 >"$OUT/build-${d//\//_}.log" 2>&1 || true
        log "built $d ($(($(date +%s) - t1))s)"
    fi
    for mode in "${MODES[@]}"; do
        x="$OUT/$mode/${d//\//_}.xml"
        t1=$(date +%s)
        (cd "$BUILD" && MODE=$mode MANA_SUITE_RUNS="$OUT/$mode/runs" \
            ./runtests -srcdir=. -tests="$LISTNAME" -testdirs="$d" \
            -mpiexec="bash $SELF --mpiexec" -xmlfile="$x" >"$OUT/$mode/${d//\//_}.log" 2>&1) || true
        xml2tsv "$x" >>"$OUT/$mode.tsv"
        p=$(xml2tsv "$x" | awk -F'\t' '$2 == "pass"' | wc -l)
        n=$(xml2tsv "$x" | wc -l)
        log "$(printf '%-7s %-14s %4d/%-4d passed (%ds)' "$mode" "$d" "$p" "$n" $(($(date +%s) - t1)))"
    done
done

# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
passset() { awk -F'\t' '$2 == "pass" { print $1 }' "$OUT/$1.tsv" | sort; }
{
    echo "MPICH test suite ($(basename "$(dirname "$(dirname "$SRC")")")), modes: ${MODES[*]}, timeout ${TIMEOUT}s"
    for mode in "${MODES[@]}"; do
        echo "$mode: $(passset "$mode" | wc -l) passed of $(wc -l <"$OUT/$mode.tsv")"
    done
    if [[ " ${MODES[*]} " == *" native "* ]] && ((${#MODES[@]} > 1)); then
        for mode in "${MODES[@]}"; do
            [[ $mode == native ]] && continue
            echo
            echo "passing natively but not under $mode ($(comm -23 <(passset native) <(passset "$mode") | wc -l)):"
            comm -23 <(passset native) <(passset "$mode") | sed 's/^/  /'
            echo "passing under $mode but not natively ($(comm -13 <(passset native) <(passset "$mode") | wc -l)):"
            comm -13 <(passset native) <(passset "$mode") | sed 's/^/  /'
        done
    fi
    echo
    echo "total time $(($(date +%s) - T0))s"
} | tee "$OUT/summary.txt"

rc=0
if [[ " ${MODES[*]} " == *" native "* && " ${MODES[*]} " == *" launch "* ]]; then
    if [[ -n $(comm -23 <(passset native) <(passset launch)) ]]; then rc=1; fi
fi
exit $rc
