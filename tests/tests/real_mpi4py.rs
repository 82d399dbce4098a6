//! mpi4py as a real client (issue 9 item 6): mpi4py built from its PyPI sdist against
//! Debian's MPICH (scripts/setup.sh), unmodified, reaching MPICH through its extension
//! module's `DT_NEEDED` — under mana_launch it gets MANA's wrapper library.
//!
//! ```text
//! $ mpiexec.mpich -n 2 mana_launch --ckptdir ckpt python allreduce.py 400
//! $ mana_status --checkpoint --kill
//! $ mpiexec.mpich -n 2 mana_restart ckpt
//! allreduce done size=2 rounds=400 sum=… digest=…
//! ```
//!
//! mpi4py's own test suite (modules of its sdist's `test/`) passes under mana_launch test
//! for test as natively, also while checkpoints are taken one after another.

use mana_tests::*;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const RANKS: usize = 2;

/// `mana_launch --ckptdir CKPT ARGS…` under `mpiexec.mpich -n 2`, started.
fn launch_args(s: &Session, args: &[&OsStr], label: &str) -> Proc {
    Proc::spawn(label, launch_command(s, RANKS, args, &[]))
}

/// A numpy job (Allreduce on numpy buffers, Sendrecv, a pickled bcast every round) gives
/// the native result under mana_launch, and when checkpointed at a random instant of its
/// rounds, killed and restarted.
#[test]
fn numpy_allreduce_runs_and_restarts_like_native() {
    let t0 = Instant::now();
    let s = Session::start("mpi4py-allreduce");
    let python = mpi4py_python();
    let script = python_script("allreduce.py");
    let args: Vec<&OsStr> = vec![python.as_os_str(), script.as_os_str(), "400".as_ref()];
    let native = Proc::spawn("native", mpiexec_command(&s, RANKS, &args, &[])).wait_output(LONG);
    native.assert_success();
    let expected = result_line(&native.stdout_text(), "allreduce done");
    assert!(expected.is_some(), "{}", native.describe());

    let plain = launch_args(&s, &args, "mana_launch allreduce").wait_output(LONG);
    plain.assert_success();
    assert_eq!(
        result_line(&plain.stdout_text(), "allreduce done"),
        expected,
        "under mana_launch: {}",
        plain.describe()
    );

    let run = launch_args(&s, &args, "mana_launch allreduce (checkpointed)");
    wait_for_lines(&run, "allreduce ready", RANKS, LONG);
    wait_registered(&s, RANKS);
    let mut rng = Rng::seeded("mpi4py-allreduce");
    let gen = checkpoint_and_kill(&s, &mut rng, Duration::from_millis(1000), run);
    assert_images_have_no_lower_half(&gen, RANKS);
    let out = restart(&s, RANKS, &[]).wait_output(LONG);
    out.assert_success();
    assert_eq!(
        out.stderr_text()
            .matches("MPI restarted with a new lower half")
            .count(),
        RANKS,
        "the checkpoint landed among the rounds: {}",
        out.describe()
    );
    assert_eq!(
        result_line(&out.stdout_text(), "allreduce done"),
        expected,
        "the restarted job must end as the native run\n{}",
        out.describe()
    );
    eprintln!("numpy allreduce: {:.1?} in all", t0.elapsed());
}

/// The modules of mpi4py's test suite these tests run: point-to-point (buffers, objects,
/// matched probes, partitioned), collectives (buffers, objects, vectors, nonblocking,
/// persistent, neighbourhood), communicators (topologies, intercommunicators), groups,
/// datatypes, packing, operations, requests (generalized too), statuses, info, error
/// handlers, attributes, windows, RMA (request-based too), MPI-IO, message specs and
/// pickle-5 messages.
const SUITE_MODULES: [&str; 33] = [
    "test_cco_pr_buf",
    "test_cco_pr_vec",
    "test_cco_pr_ngh_buf",
    "test_cco_nb_buf",
    "test_cco_nb_vec",
    "test_cco_ngh_buf",
    "test_cco_vec",
    "test_p2p_buf_part",
    "test_rma_nb",
    "test_comm_topo",
    "test_comm_inter",
    "test_grequest",
    "test_io",
    "test_msgspec",
    "test_pack",
    "test_p2p_obj_matched",
    "test_util_pkl5",
    "test_comm",
    "test_p2p_buf",
    "test_p2p_obj",
    "test_p2p_buf_matched",
    "test_cco_buf",
    "test_cco_obj",
    "test_datatype",
    "test_op",
    "test_request",
    "test_status",
    "test_group",
    "test_info",
    "test_errhandler",
    "test_attributes",
    "test_win",
    "test_rma",
];

/// Tests left out for time only (each takes 5–100 s on a loaded 2-core machine, natively
/// as under MANA: busy-polling ranks share the cores).
const SUITE_EXCLUDED: [&str; 5] = [
    "*TestDatatypePickle*",
    "*TestRMAWorld.testGetAccumulate",
    "*TestRMAWorld.testPutGet",
    "*TestRMAWorld.testAccumulate",
    "*World*.testPersistent",
];

/// What one run of the suite left: per rank, test id → outcome; and each rank's log.
struct SuiteRun {
    outcomes: Vec<BTreeMap<String, String>>,
    logs: Vec<String>,
}

/// `suite.py` of tests/python on 2 ranks, natively or under mana_launch (`s` then its
/// session). `during` runs while the job runs (with the job, until it returns).
fn run_suite(
    s: &Session,
    label: &str,
    under_mana: bool,
    during: impl FnOnce(&mut Proc),
) -> SuiteRun {
    let out_dir = s.dir().join(label);
    std::fs::create_dir_all(&out_dir).unwrap();
    let python = mpi4py_python();
    let script = python_script("suite.py");
    let test_dir = mpi4py_test_dir();
    let mut args: Vec<OsString> = vec![
        python.into_os_string(),
        script.into_os_string(),
        test_dir.into_os_string(),
        out_dir.clone().into_os_string(),
    ];
    for x in SUITE_EXCLUDED {
        args.push("-x".into());
        args.push(x.into());
    }
    args.extend(SUITE_MODULES.iter().map(OsString::from));
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    let t = Instant::now();
    let mut run = if under_mana {
        launch_args(s, &args, &format!("mana_launch suite ({label})"))
    } else {
        Proc::spawn("native suite", mpiexec_command(s, RANKS, &args, &[]))
    };
    during(&mut run);
    let out = run.wait_output(LONG);
    out.assert_success();
    eprintln!(
        "{label}: {:.1?}; {}",
        t.elapsed(),
        sorted_lines(&out.stdout_text(), "suite rank=").join("; ")
    );
    read_suite(&out_dir, &out)
}

fn read_suite(dir: &Path, out: &Output) -> SuiteRun {
    let mut outcomes = Vec::new();
    let mut logs = Vec::new();
    for rank in 0..RANKS {
        let text = std::fs::read_to_string(dir.join(format!("rank-{rank}.txt")))
            .unwrap_or_else(|e| panic!("rank {rank} wrote no outcomes ({e}): {}", out.describe()));
        let map: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.nth(1)?.to_string(), l.split(' ').next()?.to_string()))
            })
            .collect();
        outcomes.push(map);
        logs.push(
            std::fs::read_to_string(dir.join(format!("rank-{rank}.log"))).unwrap_or_default(),
        );
    }
    SuiteRun { outcomes, logs }
}

/// The native run, once per test binary (both suite tests compare with it).
fn native_suite() -> &'static SuiteRun {
    static NATIVE: OnceLock<SuiteRun> = OnceLock::new();
    NATIVE.get_or_init(|| {
        let s = Session::start("mpi4py-suite-native");
        let n = run_suite(&s, "native", false, |_| {});
        for (rank, o) in n.outcomes.iter().enumerate() {
            let ok = o.values().filter(|v| *v == "ok").count();
            assert!(
                ok >= 1300,
                "natively rank {rank} passed {ok} tests of mpi4py's suite only (is the venv broken? \
                 scripts/setup.sh)"
            );
        }
        n
    })
}

/// Every rank ran the same tests with the same outcomes as natively; the differences
/// otherwise, with the rank's log.
fn assert_same_outcomes(native: &SuiteRun, mana: &SuiteRun, what: &str) {
    for rank in 0..RANKS {
        let (n, m) = (&native.outcomes[rank], &mana.outcomes[rank]);
        let diff: Vec<String> = n
            .keys()
            .chain(m.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| n.get(*k) != m.get(*k))
            .map(|k| format!("{k}: native {:?}, {what} {:?}", n.get(k), m.get(k)))
            .collect();
        assert!(
            diff.is_empty(),
            "rank {rank}: {} test(s) differ {what}:\n{}\n--- rank {rank}'s log ({what}) ---\n{}",
            diff.len(),
            diff.join("\n"),
            tail_of(&mana.logs[rank], 8000)
        );
    }
}

fn tail_of(s: &str, n: usize) -> &str {
    let mut cut = s.len().saturating_sub(n);
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

/// mpi4py's own tests pass under mana_launch exactly as natively, test for test.
#[test]
fn mpi4py_test_suite_passes_under_mana_as_natively() {
    let native = native_suite();
    let s = Session::start("mpi4py-suite");
    let mana = run_suite(&s, "mana", true, |_| {});
    assert_same_outcomes(native, &mana, "under mana_launch");
}

/// The same with checkpoints taken one after another (none killed) from the interpreter's
/// start to its end: every one commits, and every test's outcome is the native run's.
/// Only the newest generation is kept (about 45 MB each; a run commits 200 or more).
#[test]
fn mpi4py_test_suite_checkpointed_repeatedly_passes_as_natively() {
    let native = native_suite();
    let s = Session::start("mpi4py-suite-ckpt");
    let mut committed = 0;
    let mut took = Duration::ZERO;
    let mut previous: Option<std::path::PathBuf> = None;
    let mana = run_suite(&s, "mana-ckpt", true, |run| {
        std::thread::sleep(Duration::from_millis(300));
        while run.is_running() {
            let t = Instant::now();
            match s.checkpoint() {
                Ok(gen) => {
                    committed += 1;
                    took += t.elapsed();
                    if let Some(old) = previous.replace(gen) {
                        std::fs::remove_dir_all(&old)
                            .unwrap_or_else(|e| panic!("removing {}: {e}", old.display()));
                    }
                }
                // A checkpoint that the job's end interrupts (a rank leaving in the instant
                // before its checkpoint thread took the request) fails; the job must then
                // be ending (found by CI: mpiexec still ran 4 ms after the failure).
                Err(e) => {
                    let t = Instant::now();
                    while run.is_running() && t.elapsed() < Duration::from_secs(5) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    assert!(!run.is_running(), "a checkpoint failed: {e}");
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    eprintln!(
        "{committed} checkpoints committed, {:.0?} each on average",
        took / committed.max(1)
    );
    assert!(committed >= 5, "only {committed} checkpoints committed");
    assert_same_outcomes(native, &mana, "with checkpoints");
}

/// Item 2 of issue 11 with a client stack nobody here wrote: two ranks talking over
/// CPython's `socket` module beside mpi4py (tests/python/socket_ranks.py: rank 0 listens
/// on the loopback, rank 1 connects, numbers out and answers back with a wait between,
/// an allreduce every 5 rounds, a shutdown read as end-of-file). Checkpointed without a
/// kill and with one at random instants, restarted by `mpiexec.mpich mana_restart`: the
/// connection comes back connected between the restored interpreters with its bytes in
/// flight — rank 0's output equals the uninterrupted job's.
#[test]
fn python_sockets_between_ranks_come_back_connected() {
    let s = Session::start("mpi4py-sockets");
    let python = mpi4py_python();
    let script = python_script("socket_ranks.py");
    let args: Vec<&OsStr> = vec![
        python.as_os_str(),
        script.as_os_str(),
        "40".as_ref(),
        "150".as_ref(),
    ];
    let native = Proc::spawn("native", mpiexec_command(&s, RANKS, &args, &[])).wait_output(LONG);
    native.assert_success();
    let run = launch_args(&s, &args, "mana_launch socket_ranks");
    run.wait_for_stdout("socket ranks ready", LONG);
    wait_registered(&s, RANKS);
    let mut rng = Rng::seeded("mpi4py-sockets");
    std::thread::sleep(rng.duration_upto(Duration::from_millis(2000)));
    s.checkpoint().unwrap_or_else(|e| panic!("checkpoint: {e}"));
    std::thread::sleep(rng.duration_upto(Duration::from_millis(2000)));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill: {e}"));
    let first = mana_tests::mpi::without_launcher_report(&run.wait_output(LONG).stdout).to_vec();
    let last = restart(&s, RANKS, &[]).wait_output(LONG);
    last.assert_success();
    assert_continues(&native.stdout, &[first, last.stdout]);
}
