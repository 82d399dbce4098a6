//! A checkpoint outside a program's MPI lifetime (issue 9 item 5): before `MPI_Init` (a C
//! program still computing, Python still importing) and after `MPI_Finalize`
//! (post-processing). Each image is valid and restarts to the native answer; the restored
//! process gets no lower half then — its next MPI call loads one with the restart's
//! environment (docs/mpi-checkpoint.md, "Before MPI_Init and after MPI_Finalize").
//!
//! ```text
//! $ mpiexec.mpich -n 2 mana_launch --ckptdir ckpt ./init_phases 300 100
//! init_phases pre ready rank=0 …
//! $ mana_status --checkpoint --kill          # while both ranks compute before MPI_Init
//! $ mpiexec.mpich -n 2 mana_restart ckpt
//! init_phases done rank=0 initialized=1 finalized=1 result=…
//! ```

use mana_tests::*;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::{Duration, Instant};

const RANKS: usize = 2;

/// A job under mana_launch (`program ARGS…` or `python script ARGS…`), with the native
/// run's sorted `done` lines.
struct Job {
    s: Session,
    run: Proc,
    expected: Vec<String>,
    done: &'static str,
    rng: Rng,
}

/// Starts `cmd(session dir)` natively (for the expected `done` lines) and then under
/// mana_launch, registered with the session's coordinator.
fn start(label: &str, cmd: impl FnOnce(&Path) -> Vec<OsString>, done: &'static str) -> Job {
    let s = Session::start(label);
    let cmd = cmd(s.dir());
    let cmd: Vec<&OsStr> = cmd.iter().map(OsString::as_os_str).collect();
    let native = Proc::spawn("native", mpiexec_command(&s, RANKS, &cmd, &[])).wait_output(LONG);
    native.assert_success();
    let expected = sorted_lines(&native.stdout_text(), done);
    assert_eq!(expected.len(), RANKS, "{}", native.describe());
    let run = Proc::spawn(
        &format!("mpiexec -n {RANKS} mana_launch {label}"),
        launch_command(&s, RANKS, &cmd, &[]),
    );
    wait_registered(&s, RANKS);
    Job {
        rng: Rng::seeded(label),
        s,
        run,
        expected,
        done,
    }
}

/// `tests/mpi/init_phases.c ARGS…`
fn c_job(label: &str, args: &[&str]) -> Job {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    start(
        label,
        |dir| {
            let mut cmd = vec![compile_mpi("init_phases", dir).into_os_string()];
            cmd.extend(args);
            cmd
        },
        "init_phases done",
    )
}

/// `tests/python/init_phases.py ARGS…` with mpi4py's venv.
fn py_job(label: &str, args: &[&str]) -> Job {
    let mut cmd = vec![
        mpi4py_python().into_os_string(),
        python_script("init_phases.py").into_os_string(),
    ];
    cmd.extend(args.iter().map(OsString::from));
    start(label, |_| cmd, "py_phases done")
}

/// The lower-half ranges each rank's image of generation `gen` records.
fn lower_regions(gen: &Path) -> Vec<usize> {
    (0..RANKS)
        .map(|rank| {
            let image = gen.join(mana_image::ckptdir::image_name(rank as u32));
            let reader = mana_image::ImageReader::open(&image)
                .unwrap_or_else(|e| panic!("{}: {e}", image.display()));
            reader
                .header
                .mpi
                .as_ref()
                .unwrap_or_else(|| panic!("{}: not an MPI image", image.display()))
                .lower_regions
                .len()
        })
        .collect()
}

/// How the restored ranks brought MPI back: (new lower half + MPI_Init, deferred).
fn restart_kinds(out: &Output) -> (usize, usize) {
    let err = out.stderr_text();
    (
        err.matches("MPI restarted with a new lower half").count(),
        err.matches("restarted outside MPI's lifetime").count(),
    )
}

/// Checkpoint + kill now, restart, compare with the native run. Returns the lower-half
/// ranges each rank's image records (read before the session and its directory go) and
/// the restart's output.
fn kill_and_restart(j: Job) -> (Vec<usize>, Output) {
    let gen =
        j.s.checkpoint_and_kill()
            .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}"));
    assert_committed(&j.s.ckpt_dir, &gen);
    let _ = j.run.wait_quietly(LONG);
    assert_images_have_no_lower_half(&gen, RANKS);
    let lower = lower_regions(&gen);
    let t = Instant::now();
    let out = restart(&j.s, RANKS, &[]).wait_output(LONG);
    out.assert_success();
    assert_eq!(
        sorted_lines(&out.stdout_text(), j.done),
        j.expected,
        "the restarted job must end as the native run\n{}",
        out.describe()
    );
    eprintln!("restart to the end: {:.2?}", t.elapsed());
    (lower, out)
}

/// A C job checkpointed at a random instant while both ranks compute before `MPI_Init`
/// (no MPI call yet: no lower half), killed, restarted: the restored ranks call
/// `MPI_Init` for the first time in the restart's job.
#[test]
fn c_checkpointed_before_mpi_init_restarts_like_native() {
    let mut j = c_job("phases-c-pre", &["300", "100"]);
    j.run.wait_for_stdout("init_phases pre ready", LONG);
    std::thread::sleep(j.rng.duration_upto(Duration::from_millis(1000)));
    let (lower, out) = kill_and_restart(j);
    assert_eq!(lower, vec![0; RANKS], "no lower half before MPI_Init");
    assert_eq!(restart_kinds(&out), (0, RANKS), "{}", out.describe());
}

/// The same, but the program asked `MPI_Initialized` and `MPI_Get_version` first (as
/// Python bindings do at import): a lower half exists, MPI is not initialized.
#[test]
fn c_checkpointed_before_mpi_init_with_a_lower_half_restarts_like_native() {
    let mut j = c_job("phases-c-query", &["300", "100", "--query"]);
    wait_for_lines(&j.run, "init_phases pre ready", RANKS, LONG);
    assert!(String::from_utf8_lossy(&j.run.stdout()).contains("initialized=0 version=4.0"));
    std::thread::sleep(j.rng.duration_upto(Duration::from_millis(1000)));
    let (lower, out) = kill_and_restart(j);
    assert!(
        lower.iter().all(|&n| n > 0),
        "MPI_Get_version loaded a lower half"
    );
    assert_eq!(restart_kinds(&out), (0, RANKS), "{}", out.describe());
}

/// Rank 0 waits inside `MPI_Init` while rank 1 still computes: the checkpoint requested
/// then converges once rank 1 has come through `MPI_Init` too (both count it as a
/// collective), so the image is of an initialized job and restarts MPI.
#[test]
fn c_checkpoint_while_a_rank_waits_in_mpi_init_restarts_like_native() {
    let j = c_job("phases-c-skew", &["300", "100", "--skew"]);
    j.run.wait_for_stdout("init_phases init rank=0", LONG);
    std::thread::sleep(Duration::from_millis(300));
    let before = String::from_utf8_lossy(&j.run.stdout()).into_owned();
    assert!(
        !before.contains("init_phases init rank=1"),
        "rank 1 reached MPI_Init already (machine too slow for this test?): {before}"
    );
    let (_, out) = kill_and_restart(j);
    assert_eq!(restart_kinds(&out), (RANKS, 0), "{}", out.describe());
}

/// Checkpointed at a random instant of the post-processing after `MPI_Finalize`, killed,
/// restarted: `MPI_Initialized` and `MPI_Finalized` still say 1 (the done line has them).
#[test]
fn c_checkpointed_after_mpi_finalize_restarts_like_native() {
    let mut j = c_job("phases-c-post", &["30", "300"]);
    wait_for_lines(&j.run, "init_phases post ready", RANKS, LONG);
    std::thread::sleep(j.rng.duration_upto(Duration::from_millis(1000)));
    let (_, out) = kill_and_restart(j);
    assert_eq!(restart_kinds(&out), (0, RANKS), "{}", out.describe());
    assert!(
        out.stderr_text().contains("phase=Finalized"),
        "{}",
        out.describe()
    );
}

/// A checkpoint requested while rank 0 still computes before its `MPI_Finalize` and
/// rank 1 waits inside MPICH's: the agreement lets rank 0 finalize, and both ranks then
/// leave `main` at once, while the checkpoint is still under way. Their exit waits for it
/// (before: "disconnected during the checkpoint", the generation failed — MPICH's suite,
/// pt2pt/bsendfrag with an in-job trigger). The restored ranks resume in their exit and
/// end at once: the killed run's output and the restart's together are the native run's.
#[test]
fn c_ranks_exiting_during_a_checkpoint_wait_for_it() {
    let mut j = c_job("phases-c-exit", &["5", "0", "--late0=300"]);
    wait_for_lines(&j.run, "init_phases late rank=0", 1, LONG);
    std::thread::sleep(j.rng.duration_upto(Duration::from_millis(1500)));
    let gen =
        j.s.checkpoint_and_kill()
            .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}"));
    assert_committed(&j.s.ckpt_dir, &gen);
    let first = j
        .run
        .wait_quietly(LONG)
        .expect("the killed job ended")
        .stdout_text();
    let out = restart(&j.s, RANKS, &[]).wait_output(LONG);
    out.assert_success();
    assert_eq!(restart_kinds(&out), (0, RANKS), "{}", out.describe());
    let joined = format!("{first}{}", out.stdout_text());
    assert_eq!(
        sorted_lines(&joined, j.done),
        j.expected,
        "the killed run and the restart together must end as the native run\n{}",
        out.describe()
    );
}

/// Checkpoints one after another from start to end (before, during and after MPI), none
/// killed: every one commits and the result is the native run's.
#[test]
fn c_checkpoints_in_every_phase_leave_the_result_alone() {
    let mut j = c_job("phases-c-every", &["100", "100"]);
    let committed = checkpoint_until_end(&j.s, &mut j.run, Duration::from_millis(200)).len();
    let out = j.run.wait_output(LONG);
    out.assert_success();
    assert_eq!(
        sorted_lines(&out.stdout_text(), j.done),
        j.expected,
        "{}",
        out.describe()
    );
    assert!(committed >= 3, "only {committed} checkpoints committed");
    eprintln!("{committed} checkpoints committed");
}

/// A Python job checkpointed at a random instant between its start and well before
/// `from mpi4py import MPI` (interpreter start-up, numpy's import, computing), killed and
/// restarted: mpi4py's import then initializes MPI in the restart's job.
#[test]
fn python_checkpointed_before_importing_mpi4py_restarts_like_native() {
    let mut j = py_job("phases-py-pre", &["300", "100"]);
    std::thread::sleep(j.rng.duration_upto(Duration::from_millis(1500)));
    assert!(
        !String::from_utf8_lossy(&j.run.stdout()).contains("py_phases mpi"),
        "MPI was initialized before the checkpoint (machine too slow for this test?)"
    );
    let (lower, out) = kill_and_restart(j);
    assert_eq!(lower, vec![0; RANKS], "no lower half before MPI_Init");
    assert_eq!(restart_kinds(&out), (0, RANKS), "{}", out.describe());
}

/// A Python job checkpointed at a random instant after `MPI.Finalize()`, killed and
/// restarted: its post-processing ends as natively, and mpi4py still reports MPI as
/// initialized and finalized.
#[test]
fn python_checkpointed_after_finalize_restarts_like_native() {
    let mut j = py_job("phases-py-post", &["30", "300"]);
    wait_for_lines(&j.run, "py_phases post ready", RANKS, LONG);
    std::thread::sleep(j.rng.duration_upto(Duration::from_millis(1000)));
    let (_, out) = kill_and_restart(j);
    assert_eq!(restart_kinds(&out), (0, RANKS), "{}", out.describe());
}
