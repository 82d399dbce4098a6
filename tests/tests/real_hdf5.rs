//! MPI-IO as real clients use it, across a checkpoint (issue 9): parallel HDF5
//! (`h5_parallel.c`, the MPI-IO driver with collective and independent transfers, built
//! against Debian's `libhdf5_mpich.so`) and a plain MPI-IO program (`mpiio_restart.c`:
//! views the application freed at once, individual and shared pointers, split
//! collectives, atomicity, set_size/preallocate, an iwrite pending across the pause). Both
//! keep their files open across every round of `--loop`, so the checkpoint lands with the
//! files open; their done lines checksum everything read, the files' contents and every
//! piece of file state, so whatever a restart loses shows.
//!
//! ```text
//! $ mpiexec.mpich -n 2 mana_launch --ckptdir ckpt ./mpiio_restart --loop 40
//! $ mana_status --checkpoint --kill
//! $ mpiexec.mpich -n 2 mana_restart ckpt
//! mpiio_restart done: …
//! ```
//!
//! A file changed between the checkpoint and the restart: removed or shorter, the restart
//! is refused with one line (per rank) naming it; grown (appended to), it is accepted.

use mana_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const H5: &str = "h5_parallel";
const IO: &str = "mpiio_restart";
/// The files the programs open by default, in the session directory (their cwd).
const H5_FILE: &str = "h5_parallel.h5";
const IO_FILE: &str = "mpiio_restart.dat";
/// mpiio_restart's second file (shared file pointer), `IO_FILE` + `.shared`.
const IO_SHARED_FILE: &str = "mpiio_restart.dat.shared";

const ROUNDS: &str = "40";
const WITHIN: Duration = Duration::from_millis(700);

fn build(name: &str, dir: &Path) -> PathBuf {
    if name == H5 {
        compile_hdf5(name, dir)
    } else {
        compile_mpi(name, dir)
    }
}

/// The native run's stdout (`--loop rounds`), which must hold a done line without failed
/// checks.
fn native_ok(s: &Session, ranks: usize, program: &Path, name: &str, rounds: &str) -> String {
    let out = native(s, ranks, program, &["--loop", rounds]);
    let done = result_line(&out, &format!("{name} done"))
        .unwrap_or_else(|| panic!("{name}: no done line natively:\n{out}"));
    assert!(
        done.ends_with("failed checks: 0"),
        "{name} on {ranks} ranks natively: {out}"
    );
    out
}

/// What a job must end with: the native run's done line, and its state line if it has one
/// (`mpiio_restart state: …`, every rank's file pointers, views, atomicity, amode, hints).
#[derive(Debug)]
struct Expected {
    done: Option<String>,
    state: Option<String>,
}

/// A `name --loop ROUNDS` job on `ranks` ranks under mana_launch, past its ready line and
/// registered, with what the native run printed and a seeded generator.
struct Started {
    s: Session,
    run: Proc,
    expected: Expected,
    rng: Rng,
}

fn start(label: &str, name: &str, ranks: usize) -> Started {
    let s = Session::start(label);
    let program = build(name, s.dir());
    let native = native_ok(&s, ranks, &program, name, ROUNDS);
    let expected = Expected {
        done: result_line(&native, &format!("{name} done")),
        state: result_line(&native, &format!("{name} state")),
    };
    let run = launch(&s, ranks, &program, &["--loop", ROUNDS], &[]);
    run.wait_for_stdout(&format!("{name} ready"), LONG);
    wait_registered(&s, ranks);
    Started {
        rng: Rng::seeded(label),
        s,
        run,
        expected,
    }
}

/// `mpiexec.mpich -n N mana_restart <session ckpt>` without `MANA_LOG`: the runtime's
/// warnings go to the status file's log, stderr holds only what a user would see.
fn restart_quiet(s: &Session, ranks: usize) -> Proc {
    let restart = bin("mana_restart");
    let mut cmd = mpiexec_command(
        s,
        ranks,
        &[restart.as_os_str(), s.ckpt_dir.as_os_str()],
        &[],
    );
    cmd.env_remove("MANA_LOG");
    Proc::spawn(&format!("mpiexec -n {ranks} mana_restart (quiet)"), cmd)
}

/// The restart ended like the native run: every rank restarted MPI, same state and done
/// lines, and MPICH reports no leaked object at `MPI_Finalize` (the application freed
/// every datatype and info it made; the native run prints no such warning).
fn assert_restarted_like_native(out: &Output, name: &str, ranks: usize, expected: &Expected) {
    out.assert_success();
    assert_eq!(
        out.stderr_text()
            .matches("MPI restarted with a new lower half")
            .count(),
        ranks,
        "every rank restarted MPI: {}",
        out.describe()
    );
    if expected.state.is_some() {
        assert_eq!(
            result_line(&out.stdout_text(), &format!("{name} state")),
            expected.state,
            "{name}: the file state after the restart must be the native run's\n{}",
            out.describe()
        );
    }
    assert_eq!(
        result_line(&out.stdout_text(), &format!("{name} done")),
        expected.done,
        "{name}: the restarted job must end exactly as the native run\n{}",
        out.describe()
    );
    assert!(
        !out.stderr_text().contains("leaked"),
        "{name}: MPICH reports objects leaked by the restarted job: {}",
        out.describe()
    );
}

/// A refused restart: a non-zero exit, no done line, and on stderr one line per rank at
/// most (at least one), each naming `file` (and not another file whose name starts with
/// it) and saying `word`; no crash.
fn assert_refused_naming(out: &Output, ranks: usize, file: &str, other: Option<&str>, word: &str) {
    assert!(
        !out.status.success(),
        "the restart must be refused: {}",
        out.describe()
    );
    assert!(
        !out.stdout_text().contains(" done: "),
        "the refused job must not run to its end: {}",
        out.describe()
    );
    let text = out.stderr_text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !lines.is_empty() && lines.len() <= ranks,
        "expected one error line (per rank) on stderr: {}",
        out.describe()
    );
    for l in &lines {
        assert!(
            l.contains(file) && !other.is_some_and(|o| l.contains(o)),
            "the error line must name {file}: {l:?}\n{}",
            out.describe()
        );
        assert_mentions_any(l, &[word], "a changed MPI file");
        assert!(
            !l.contains("SIGSEGV") && !l.contains("signal 11"),
            "{}",
            out.describe()
        );
    }
}

/// Both programs are correct (no failed check) and deterministic (the same stdout twice),
/// on 2 and on 4 ranks (fewer rounds: 4 busy-polling ranks on 2 cores are slow).
#[test]
fn both_programs_are_correct_and_deterministic_natively() {
    let s = Session::start("real-io-native");
    for name in [H5, IO] {
        let program = build(name, s.dir());
        for (ranks, rounds) in [(2, ROUNDS), (4, "10")] {
            let a = native_ok(&s, ranks, &program, name, rounds);
            let b = native_ok(&s, ranks, &program, name, rounds);
            assert_eq!(a, b, "{name} on {ranks} ranks: two native runs differ");
        }
    }
}

/// Under mana_launch, without a checkpoint, each prints exactly what it prints natively.
#[test]
fn both_programs_under_mana_launch_print_what_they_print_natively() {
    let s = Session::start("real-io-launch");
    for name in [H5, IO] {
        let program = build(name, s.dir());
        let expected = native_ok(&s, 2, &program, name, ROUNDS);
        let out = launch(&s, 2, &program, &["--loop", ROUNDS], &[]).wait_output(LONG);
        out.assert_success();
        assert_eq!(out.stdout_text(), expected, "{name}: {}", out.describe());
    }
}

/// Checkpointed at a random instant with their files open and left running: the job ends
/// like the native run (the checkpoint changes nothing in the files or the file state).
#[test]
fn both_programs_checkpointed_without_kill_run_on_like_native() {
    for name in [H5, IO] {
        let mut j = start(&format!("real-io-{name}-nokill"), name, 2);
        std::thread::sleep(j.rng.duration_upto(WITHIN));
        let gen =
            j.s.checkpoint()
                .unwrap_or_else(|e| panic!("{name}: checkpoint failed: {e}"));
        let out = j.run.wait_output(LONG);
        out.assert_success();
        let stdout = out.stdout_text();
        assert_eq!(
            result_line(&stdout, &format!("{name} state")),
            j.expected.state,
            "{name}: {}",
            out.describe()
        );
        assert_eq!(
            result_line(&stdout, &format!("{name} done")),
            j.expected.done,
            "{name}: {}",
            out.describe()
        );
        assert_images_have_no_lower_half(&gen, 2);
    }
}

/// `name --loop 40` on 2 ranks: checkpoint+kill at a random instant with the file(s)
/// open, restart: the state and done lines must be the native run's.
fn restarts_like_native(name: &str) {
    let Started {
        s,
        run,
        expected,
        mut rng,
    } = start(&format!("real-io-{name}-restart"), name, 2);
    let gen = checkpoint_and_kill(&s, &mut rng, WITHIN, run);
    let out = restart(&s, 2, &[]).wait_output(LONG);
    assert_restarted_like_native(&out, name, 2, &expected);
    assert_images_have_no_lower_half(&gen, 2);
}

/// Parallel HDF5 restarted from a random instant with its file open (HDF5's MPI_File,
/// its duplicated communicator and info, the metadata cache in the upper half) ends
/// like the native run.
#[test]
fn parallel_hdf5_restarts_like_native() {
    restarts_like_native(H5);
}

/// Plain MPI-IO restarted from a random instant: views (filetypes the application freed),
/// individual and shared pointers, atomicity, hints and the pending iwrite carried over.
#[test]
fn mpiio_state_restarts_like_native() {
    restarts_like_native(IO);
}

/// A job checkpointed at a random instant and killed, then its file changed by `change`
/// before the restart: the session and the native run's done line.
fn killed_then_changed(
    label: &str,
    name: &str,
    file: &str,
    change: impl FnOnce(&Path),
) -> (Session, Expected) {
    let Started {
        s,
        run,
        mut rng,
        expected,
    } = start(label, name, 2);
    checkpoint_and_kill(&s, &mut rng, WITHIN, run);
    let path = s.dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing after the kill",
        path.display()
    );
    change(&path);
    (s, expected)
}

/// The main file of mpiio_restart removed after the checkpoint: the restart is refused
/// with one line naming it ("vanished"), not a crash in the next MPI_File call.
#[test]
fn an_mpi_file_removed_after_the_checkpoint_is_refused_by_the_restart() {
    let (s, _) = killed_then_changed("real-io-removed", IO, IO_FILE, |p| {
        std::fs::remove_file(p).unwrap()
    });
    let out = restart_quiet(&s, 2).wait_output(LONG);
    assert_refused_naming(&out, 2, IO_FILE, Some(IO_SHARED_FILE), "vanished");
}

/// The same for parallel HDF5's file.
#[test]
fn an_hdf5_file_removed_after_the_checkpoint_is_refused_by_the_restart() {
    let (s, _) = killed_then_changed("real-io-h5-removed", H5, H5_FILE, |p| {
        std::fs::remove_file(p).unwrap()
    });
    let out = restart_quiet(&s, 2).wait_output(LONG);
    assert_refused_naming(&out, 2, H5_FILE, None, "vanished");
}

/// The main file truncated below its size at the checkpoint (128 bytes: its 256-byte
/// header was written before the ready line): refused with one line naming it
/// ("shorter").
#[test]
fn an_mpi_file_shorter_than_at_the_checkpoint_is_refused_by_the_restart() {
    let (s, _) = killed_then_changed("real-io-shorter", IO, IO_FILE, |p| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(128).unwrap();
    });
    let out = restart_quiet(&s, 2).wait_output(LONG);
    assert_refused_naming(&out, 2, IO_FILE, Some(IO_SHARED_FILE), "shorter");
}

/// The main file grown after the checkpoint (4 KiB appended): accepted, and the job ends
/// like the native run (mpiio_restart overwrites everything past the checkpoint's end of
/// file and sets the file's size to its logical end before it reads it back).
#[test]
fn an_mpi_file_grown_after_the_checkpoint_is_accepted_by_the_restart() {
    let (s, expected) = killed_then_changed("real-io-grown", IO, IO_FILE, |p| {
        let before = std::fs::metadata(p).unwrap().len();
        let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(&[0xa5; 4096]).unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(p).unwrap().len(), before + 4096);
    });
    let out = restart(&s, 2, &[]).wait_output(LONG);
    assert_restarted_like_native(&out, IO, 2, &expected);
}
