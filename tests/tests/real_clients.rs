//! Real MPI clients nobody here wrote, as Debian ships them: ScaLAPACK's test programs
//! (`scalapack-mpi-test`: `xdqr` and `xdlu`, Fortran over PBLAS and BLACS; `xFbtest`, the
//! BLACS tester, which reaches MPICH through `libmpichfort`) and NWChem (`nwchem-mpich`:
//! Global Arrays over ARMCI-MPI, that is MPI windows in passive-target epochs, plus
//! ScaLAPACK). Each runs natively, under `mana_launch`, and checkpointed at a random
//! instant of its computation, every rank killed and restarted under `mpiexec.mpich`; the
//! *values* it prints must be the native run's: every result line of the ScaLAPACK testers
//! (sizes, grid, PASSED, residual) with the timing columns removed, and their summaries;
//! NWChem's final DFT energy within 1e-10 Eh.
//!
//! ```text
//! $ cat QR.dat                      # written by the test: 2 ranks, matrices up to 300
//! $ mpiexec.mpich -n 2 mana_launch --ckptdir ckpt /usr/lib/x86_64-linux-gnu/scalapack/mpich-tests/xdqr
//! $ mana_status --checkpoint --kill
//! $ mpiexec.mpich -n 2 mana_restart ckpt
//! WALL    300    310   8   8     2     1      0.04      992.96 PASSED   0.4E-01
//! …
//! Finished     72 tests, with the following results:
//!    68 tests completed and passed residual checks.
//! ```
//!
//! Two ranks: the machine has two cores, and MPICH's ranks poll (four ranks took the
//! Debian inputs minutes). The inputs are bigger than Debian's so that the computation
//! lasts a few seconds (2–8 s natively on two idle cores, several times that under load);
//! the instant is chosen by progress (after a random one of the first half of the result
//! lines or SCF iterations, plus a random fraction of the time between two), so that it
//! falls inside the computation however loaded the machine is.

use mana_tests::*;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

const RANKS: usize = 2;
const SCALAPACK_TESTS: &str = "/usr/lib/x86_64-linux-gnu/scalapack/mpich-tests";
const NWCHEM: &str = "/usr/bin/nwchem.mpich";

/// An installed program of a Debian package; a missing one fails the test (never a skip).
fn installed(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.is_file(),
        "{path} is missing: install the Debian package {package} (scripts/setup.sh does)"
    );
    p
}

/// One real client: its program, arguments, the input files it reads from its working
/// directory (the session directory) and its environment.
struct Client {
    label: &'static str,
    program: PathBuf,
    args: &'static [&'static str],
    inputs: &'static [(&'static str, &'static str)],
    env: &'static [(&'static str, &'static str)],
    /// A stdout line printed once the computation has begun (after `MPI_Init` and the
    /// input).
    started: &'static str,
    /// What the lines that show its progress contain (one per result, per SCF iteration):
    /// the random instant is chosen among them.
    progress: &'static str,
}

impl Client {
    /// A new session (its own coordinator and directory), with the inputs written into
    /// the directory, the jobs' working directory.
    fn session(&self) -> Session {
        let s = Session::start(&format!("real-{}", self.label));
        for (name, text) in self.inputs {
            std::fs::write(s.dir().join(name), text).unwrap();
        }
        s
    }

    /// The native run, which must succeed.
    fn native(&self, s: &Session) -> Output {
        let mut all: Vec<&OsStr> = vec![self.program.as_os_str()];
        all.extend(self.args.iter().map(OsStr::new));
        let out = Proc::spawn(
            &format!("native {}", self.label),
            mpiexec_command(s, RANKS, &all, self.env),
        )
        .wait_output(LONG);
        out.assert_success();
        eprintln!("{}: native run took {:.1?}", self.label, out.elapsed);
        out
    }

    /// `mpiexec.mpich -n 2 mana_launch --ckptdir CKPT PROGRAM ARGS…`, started.
    fn launch(&self, s: &Session) -> Proc {
        launch(s, RANKS, &self.program, self.args, self.env)
    }

    /// Launches the client under MANA, checkpoints it at a random instant of the first
    /// half of its computation and kills every rank, restarts it; returns the killed run's
    /// and the restarted run's output. The instant is chosen by progress, not by the clock
    /// (this machine's load changes run times tenfold from one run to the next): after a
    /// random one of the first half of the native run's progress lines (or its `started`
    /// line), plus a random part of the time between two of them (this run's mean so far,
    /// or its start-up time before the first; at most the native run's mean).
    fn checkpoint_kill_restart(&self, s: &Session, native: &Output) -> (Output, Output) {
        let mut rng = Rng::seeded(self.label);
        let steps = count_lines(&native.stdout, self.progress);
        let after = (rng.next_u64() % (steps as u64 / 2 + 1)) as usize;
        let per_mille = (rng.next_u64() % 1001) as u32;
        let spawned = std::time::Instant::now();
        let mut run = self.launch(s);
        run.wait_for_stdout(self.started, LONG);
        let started = std::time::Instant::now();
        wait_registered(s, RANKS);
        wait_for_lines(&mut run, self.progress, after);
        let gap = if after > 0 {
            started.elapsed() / after as u32
        } else {
            started - spawned
        };
        let jitter = gap.min(native.elapsed / (steps as u32 + 1)) * per_mille / 1000;
        std::thread::sleep(jitter);
        let gen = match s.checkpoint_and_kill() {
            Ok(gen) => gen,
            Err(e) => panic!(
                "{}: checkpoint --kill failed: {e}\n{}",
                self.label,
                run.kill9().describe()
            ),
        };
        assert_committed(&s.ckpt_dir, &gen);
        let killed = run.wait_output(LONG);
        let killed_text = killed.stdout_text();
        let last = killed_text.lines().rev().find(|l| !l.trim().is_empty());
        eprintln!(
            "{}: checkpointed {jitter:.1?} after progress line {after} of {steps} ({:?}), \
             killed after {:.1?}; its last line: {:?}",
            self.label,
            self.progress,
            killed.elapsed,
            last.unwrap_or_default().trim()
        );
        let restarted = restart(s, RANKS, self.env).wait_output(LONG);
        restarted.assert_success();
        assert_eq!(
            restarted
                .stderr_text()
                .matches("MPI restarted with a new lower half")
                .count(),
            RANKS,
            "{}: every rank restarted MPI: {}",
            self.label,
            restarted.describe()
        );
        eprintln!(
            "{}: restarted run took {:.1?}",
            self.label, restarted.elapsed
        );
        assert_images_have_no_lower_half(&gen, RANKS);
        (killed, restarted)
    }
}

/// How many complete lines of `stdout` contain `needle`.
fn count_lines(stdout: &[u8], needle: &str) -> usize {
    let text = String::from_utf8_lossy(stdout);
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().filter(|l| l.contains(needle)).count()
}

/// The last few thousand characters of `text`.
fn tail(text: &str) -> &str {
    let mut cut = text.len().saturating_sub(4000);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    &text[cut..]
}

/// Waits until the running job has printed `n` complete lines containing `needle`.
fn wait_for_lines(run: &mut Proc, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + LONG;
    while count_lines(&run.stdout(), needle) < n {
        let ended = !run.is_running();
        if ended || std::time::Instant::now() >= deadline {
            panic!(
                "{}: {} before printing {n} lines containing {needle:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                run.label(),
                if ended { "ended" } else { "timed out" },
                tail(&String::from_utf8_lossy(&run.stdout())),
                tail(&run.stderr_text())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// ScaLAPACK

/// `xdqr`'s input: the six orthogonal factorizations, three sizes up to 300×310, two block
/// sizes, on the grids 1×2 and 2×1 (72 tests, 68 of them computed; TZ skips M > N).
/// Debian's QR.dat is too short for a checkpoint to land inside it and asks for up to 8
/// ranks.
const QR_DAT: &str = "\
'ScaLAPACK, Orthogonal factorizations input file'
'MPI machine'
'QR.out'                        output file name (if any)
6                               device out
6                               number of factorizations
'QR' 'QL' 'LQ' 'RQ' 'QP' 'TZ'   factorizations: QR, QL, LQ, RQ, QP, TZ
3                               number of problems sizes
100 200 300                     values of M
120 150 310                     values of N
2                               number of blocking sizes
8 32                            values of MB
8 32                            values of NB
2                               number of process grids (ordered pairs P & Q)
1 2                             values of P
2 1                             values of Q
5.0                             threshold
";

/// `xdlu`'s input: LU factorization and solve of four sizes up to 800, two block sizes, 1
/// and 9 right-hand sides, grids 1×2 and 2×1 (64 tests). Without the condition estimate
/// and iterative refinement (`F` on the last line): with them, Debian's xdlu fails natively
/// about one run in three (`On entry to PDGETRS parameter number 1 had an illegal value`
/// on both ranks, then an abort or a hang: 6 of 20 native runs here, none of 28 without).
const LU_DAT: &str = "\
'SCALAPACK, LU factorization input file'
'MPI Machine'
'LU.out'                output file name (if any)
6                       device out
4                       number of problems sizes
200 400 600 800         values of M
200 400 600 800         values of N
2                       number of NB's
8 32                    values of NB
2                       number of NRHS's
1 9                     values of NRHS
2                       Number of NBRHS's
1 5                     values of NBRHS
2                       number of process grids (ordered pairs of P & Q)
1 2                     values of P
2 1                     values of Q
1.0                     threshold
F                       (T or F) Test Cond. Est. and Iter. Ref. Routines
";

/// The BLACS tester's main input: send/receive, broadcast and combine tests in the five
/// precisions. The auxiliary tests are off: they end with a test of `BLACS_ABORT`, which
/// kills the job on purpose.
const BT_DAT: &str = "\
'BLACS tester run on 2 processes'       Comment line
6                               device out
'blacstest.out'                 output fname
'T'                             Run SDRV?
'T'                             Run BSBR?
'T'                             Run COMB?
'F'                             Run AUX?
5                               Number of precisions
'I' 'S' 'D' 'C' 'Z'             Values for precision
0                               Verbosity level
";

/// Point-to-point tests between the processes of the grids 1×2 and 2×1.
const SDRV_DAT: &str = "\
5                       Number of shapes
'G' 'U' 'U' 'L' 'L'     UPLO
'E' 'U' 'N' 'U' 'N'     DIAG
5                       Number of matrices
2 1 25 13 0             M
2 7 19 32 0             N
2 3 25 14 1             LDASRC
3 2 25 22 1             LDADEST
4                       Number of src/dest pairs
0 0 0 1                 RSRC
0 1 0 0                 CSRC
0 0 1 0                 RDEST
1 0 0 0                 CDEST
2                       Number of grids
1 2                     NPROW
2 1                     NPCOL
";

/// Broadcasts of every topology and scope on the grids 1×2 and 2×1.
const BSBR_DAT: &str = "\
3                       Number of scopes
'R' 'C' 'A'             values for scopes
8                       Number of topologies
'I' 'S' '1' 'd' 'm' ' ' 'T' 'H'   TOP
5                       Number of shapes
'G' 'U' 'U' 'L' 'L'     UPLO
'E' 'U' 'N' 'U' 'N'     DIAG
5                       Number of matrices
2 1 25 13 0             M
2 7 19 32 0             N
3 3 25 14 1             LDASRC
2 2 25 22 1             LDADEST
3                       Number of src/dest pairs
0 0 1                   RSRC
0 1 0                   CSRC
2                       Number of grids
1 2                     NPROW
2 1                     NPCOL
";

/// Combines (sum, max, min; repeatable and coherent or not) on the grids 1×2 and 2×1.
const COMB_DAT: &str = "\
3                       Number of OPs
'+' '>' '<'             Combine operations to perform
3                       Number of scopes
'R' 'C' 'A'             values for scopes
2                       Repeatability flag (0=no-rep, 1=rep, 2=both)
2                       Coherence flag (0=no-coh, 1=coh, 2=both)
4                       Number of topologies
' ' 'T' 'H' 'f' 'M'     TOP
6                       Number of matrices
3 1 2  25 13 0          M
5 1 3  19 32 0          N
5 1 4  25 14 1          LDASRC
9 1 5  25 22 1          LDADEST
4 1 -1 25 22 1          LDI
4                       Number of dests
0 -1 0 1                RDEST
0 -1 1 0                CDEST
2                       Number of grids
1 2                     NPROW
2 1                     NPCOL
";

/// A ScaLAPACK tester: its client, which columns of its result lines are timings, and the
/// line its summary prints when no check failed.
struct Tester {
    client: Client,
    /// 0-based columns of the `WALL`/`CPU` result lines that are timings or rates.
    timing_columns: &'static [usize],
    success: &'static str,
}

fn xdqr() -> Tester {
    Tester {
        client: Client {
            label: "xdqr",
            program: installed(&format!("{SCALAPACK_TESTS}/xdqr"), "scalapack-mpi-test"),
            args: &[],
            inputs: &[("QR.dat", QR_DAT)],
            env: &[],
            started: "QR factorization tests.",
            progress: "PASSED",
        },
        // TIME M N MB NB P Q "Fact Time" MFLOPS CHECK Residual
        timing_columns: &[7, 8],
        success: "0 tests completed and failed residual checks.",
    }
}

fn xdlu() -> Tester {
    Tester {
        client: Client {
            label: "xdlu",
            program: installed(&format!("{SCALAPACK_TESTS}/xdlu"), "scalapack-mpi-test"),
            args: &[],
            inputs: &[("LU.dat", LU_DAT)],
            env: &[],
            started: "LU Time Sol Time",
            progress: "PASSED",
        },
        // TIME M N NB NRHS NBRHS P Q "LU Time" "Sol Time" MFLOPS CHECK (residuals are
        // printed on lines of their own, and only for a failed check)
        timing_columns: &[8, 9, 10],
        success: "0 tests completed and failed residual checks.",
    }
}

fn xfbtest() -> Tester {
    Tester {
        client: Client {
            label: "xFbtest",
            program: installed(&format!("{SCALAPACK_TESTS}/xFbtest"), "scalapack-mpi-test"),
            args: &[],
            inputs: &[
                ("bt.dat", BT_DAT),
                ("sdrv.dat", SDRV_DAT),
                ("bsbr.dat", BSBR_DAT),
                ("comb.dat", COMB_DAT),
            ],
            env: &[],
            started: "BEGINNING BLACS TESTING",
            progress: " TESTS;",
        },
        timing_columns: &[],
        success: "THERE WERE NO FAILURES IN THIS TEST RUN",
    }
}

impl Tester {
    /// The complete, non-blank lines of the tester's stdout, with the timing columns of
    /// its result lines removed: what must be the same in every run.
    fn normalise(&self, stdout: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(stdout);
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                if l.starts_with("WALL") || l.starts_with("CPU ") {
                    l.split_whitespace()
                        .enumerate()
                        .filter(|(i, _)| !self.timing_columns.contains(i))
                        .map(|(_, f)| f)
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    l.to_string()
                }
            })
            .collect()
    }

    /// The native run's normalised lines, checked to be a successful test run.
    fn native(&self, s: &Session) -> (Vec<String>, Output) {
        let out = self.client.native(s);
        let lines = self.normalise(&out.stdout);
        let label = self.client.label;
        assert!(
            lines.iter().any(|l| l.contains(self.success)),
            "{label}: the native run did not pass: {}",
            out.describe()
        );
        let passed = lines.iter().filter(|l| l.contains("PASSED")).count();
        assert!(passed > 0, "{label}: no PASSED line: {}", out.describe());
        eprintln!("{label}: native: {}", summary(&lines));
        (lines, out)
    }

    /// Under `mana_launch` without a checkpoint: the same lines as the native run.
    fn runs_under_mana_launch_like_native(&self) {
        let s = self.client.session();
        let (expected, _) = self.native(&s);
        let out = self.client.launch(&s).wait_output(LONG);
        out.assert_success();
        eprintln!(
            "{}: under mana_launch took {:.1?}",
            self.client.label, out.elapsed
        );
        assert_lines_eq(
            &expected,
            &self.normalise(&out.stdout),
            &format!("{} under mana_launch", self.client.label),
        );
    }

    /// Checkpointed at a random instant of the first half of its computation, every rank
    /// killed, restarted: the killed run printed the
    /// beginning of the native run's lines, the restarted run prints the rest of them
    /// (from the checkpoint on; a line printed between the checkpoint and the kill is
    /// printed again), including at least one result.
    fn restarts_like_native(&self) {
        let s = self.client.session();
        let (expected, native) = self.native(&s);
        let (killed, restarted) = self.client.checkpoint_kill_restart(&s, &native);
        let label = self.client.label;
        let before = self.normalise(mana_tests::mpi::without_launcher_report(&killed.stdout));
        let after = self.normalise(&restarted.stdout);
        assert!(
            expected.starts_with(&before),
            "{label}: the killed run's output is not the native run's beginning\n{}",
            first_difference(&expected, &before)
        );
        assert!(
            expected.ends_with(&after),
            "{label}: the restarted run's output is not the end of the native run's\n\
             --- native ---\n{}\n--- restarted ---\n{}",
            expected.join("\n"),
            after.join("\n")
        );
        assert!(
            before.len() + after.len() >= expected.len(),
            "{label}: lines are missing between the killed run ({} lines) and the restarted \
             run ({} lines) of the native run's {}",
            before.len(),
            after.len(),
            expected.len()
        );
        let results_after = after.iter().filter(|l| l.contains("PASSED")).count();
        assert!(
            results_after > 0,
            "{label}: the checkpoint came after the last result: {}",
            restarted.describe()
        );
        eprintln!(
            "{label}: restarted: {results_after} result lines after the checkpoint; {}",
            summary(&after)
        );
    }
}

/// The summary lines of a tester's output, for the log.
fn summary(lines: &[String]) -> String {
    let keep: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| {
            l.starts_with("Finished")
                || l.contains("tests completed")
                || l.contains("tests skipped")
                || l.contains("FAILURES")
        })
        .collect();
    if keep.is_empty() {
        let tests = lines.iter().filter(|l| l.contains(" TESTS;")).count();
        format!("{tests} test groups")
    } else {
        keep.join(" | ")
    }
}

fn first_difference(a: &[String], b: &[String]) -> String {
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    format!(
        "line {}: native {:?}, MANA {:?}",
        i + 1,
        a.get(i).map(String::as_str).unwrap_or("(end)"),
        b.get(i).map(String::as_str).unwrap_or("(end)")
    )
}

fn assert_lines_eq(expected: &[String], got: &[String], what: &str) {
    assert!(
        expected == got,
        "{what}: not the native run's output\n{}",
        first_difference(expected, got)
    );
}

/// ScaLAPACK's orthogonal factorizations under mana_launch: the native run's lines.
#[test]
fn scalapack_xdqr_runs_under_mana_launch_like_native() {
    xdqr().runs_under_mana_launch_like_native();
}

/// ScaLAPACK's orthogonal factorizations checkpointed at a random instant, killed,
/// restarted: the rest of the native run's results and residuals.
#[test]
fn scalapack_xdqr_restarts_like_native() {
    xdqr().restarts_like_native();
}

/// ScaLAPACK's LU factorization and solve under mana_launch.
#[test]
fn scalapack_xdlu_runs_under_mana_launch_like_native() {
    xdlu().runs_under_mana_launch_like_native();
}

/// ScaLAPACK's LU factorization and solve checkpointed at a random instant, killed,
/// restarted.
#[test]
fn scalapack_xdlu_restarts_like_native() {
    xdlu().restarts_like_native();
}

/// The BLACS tester (Fortran, libmpichfort) under mana_launch.
#[test]
fn blacs_xfbtest_runs_under_mana_launch_like_native() {
    xfbtest().runs_under_mana_launch_like_native();
}

/// The BLACS tester checkpointed at a random instant, killed, restarted: the pass counts
/// of every test group after the checkpoint are the native run's.
#[test]
fn blacs_xfbtest_restarts_like_native() {
    xfbtest().restarts_like_native();
}

// ---------------------------------------------------------------------------------------
// NWChem

/// B3LYP/aug-cc-pVTZ on water (105 basis functions), converged to 1e-10 Eh: about 8 s on
/// two idle cores (a minute under load), two seconds of setup and eight SCF iterations.
/// Scratch and permanent files go to the session directory; the basis library is Debian's
/// default (/usr/share/nwchem/libraries, compiled in).
const WATER_NW: &str = "\
start water
scratch_dir ./scratch
permanent_dir ./perm
echo
geometry units angstrom
  O   0.000000   0.000000   0.117790
  H   0.000000   0.755453  -0.471161
  H   0.000000  -0.755453  -0.471161
end
basis
  * library aug-cc-pvtz
end
dft
  xc b3lyp
  convergence energy 1e-10
end
task dft energy
";

/// The energies of NWChem's final DFT summary (`Total DFT energy = …`, `One electron
/// energy = …`, …), by name.
fn dft_energies(stdout: &str) -> Vec<(String, f64)> {
    let mut found = Vec::new();
    let mut in_summary = false;
    for l in stdout.lines() {
        if l.contains("Total DFT energy =") {
            in_summary = true;
        }
        if !in_summary {
            continue;
        }
        let Some((name, value)) = l.split_once('=') else {
            if !found.is_empty() && l.trim().is_empty() {
                break;
            }
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            found.push((name.trim().to_string(), v));
        }
    }
    found
}

/// NWChem (Global Arrays over ARMCI-MPI: windows locked for passive-target access all
/// run long, plus ScaLAPACK) computing water's B3LYP energy, checkpointed at a random
/// instant of the DFT module, every rank killed, restarted: the total energy is the native
/// run's within 1e-10 Eh (GA's dynamic load balancing makes the summation order, and so the
/// last digits, vary from run to run; natively the runs agree to ~1e-12), the other terms
/// within 1e-8.
#[test]
fn nwchem_dft_energy_restarts_like_native() {
    let client = Client {
        label: "nwchem",
        program: installed(NWCHEM, "nwchem-mpich"),
        args: &["water.nw"],
        inputs: &[("water.nw", WATER_NW)],
        // MPICH 4.0.2 gives ARMCI-MPI's MPI_Win_allocate windows wrong contents (Debian's
        // /usr/share/doc/nwchem-mpich/README.Debian; nwchem issue 633): its fix.
        env: &[("ARMCI_USE_WIN_ALLOCATE", "0")],
        started: "NWChem DFT Module",
        progress: ",diis ",
    };
    let s = client.session();
    for d in ["scratch", "perm"] {
        std::fs::create_dir_all(s.dir().join(d)).unwrap();
    }
    let native = client.native(&s);
    let expected = dft_energies(&native.stdout_text());
    assert!(
        expected
            .first()
            .is_some_and(|(n, _)| n == "Total DFT energy"),
        "nwchem: no DFT energy natively: {}",
        native.describe()
    );
    eprintln!("nwchem: native: {expected:?}");

    let (killed, restarted) = client.checkpoint_kill_restart(&s, &native);
    assert!(
        !killed.stdout_text().contains("Total DFT energy"),
        "nwchem: the checkpoint came after the energy was printed: {}",
        killed.describe()
    );
    let got = dft_energies(&restarted.stdout_text());
    eprintln!("nwchem: restarted: {got:?}");
    assert_eq!(
        got.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "nwchem: the restarted run's energy summary: {}",
        restarted.describe()
    );
    for ((name, want), (_, have)) in expected.iter().zip(&got) {
        let tolerance = if name == "Total DFT energy" {
            1e-10
        } else {
            1e-8
        };
        assert!(
            (want - have).abs() <= tolerance,
            "nwchem: {name}: native {want:.12}, restarted {have:.12} (more than {tolerance:e} apart)"
        );
    }
}

/// What mpiexec.mpich prints when a killed rank dies is cut from the killed run's output;
/// the application's own banners of `=` (the BLACS tester's) stay.
#[test]
fn the_launchers_termination_report_is_not_the_applications_output() {
    let app = "==============================================\nBEGINNING BLACS TESTING\nINTEGER SDRV TESTS: BEGIN.\n";
    let report = "\n===================================================================================\n\
                  =   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n\
                  =   PID 123 RUNNING AT vm\n\
                  =   EXIT CODE: 9\n\
                  ===================================================================================\n\
                  YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)\n";
    let killed = format!("{app}{report}");
    assert_eq!(
        mana_tests::mpi::without_launcher_report(killed.as_bytes()),
        app.as_bytes()
    );
    assert_eq!(
        mana_tests::mpi::without_launcher_report(app.as_bytes()),
        app.as_bytes()
    );
    assert_eq!(count_lines(killed.as_bytes(), "BEGIN"), 2);
    assert_eq!(count_lines(b"a PASSED\nb PASSED", "PASSED"), 1);
}
