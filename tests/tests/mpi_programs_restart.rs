//! Every MPI test program of the split-process issue, checkpointed at a random instant of
//! its `--loop` mode (the MPI objects it exercises are alive across the rounds), every
//! rank killed, and restarted with a new lower half: the final line equals the native
//! run's byte for byte, and no image holds a lower-half or restarter region.
//!
//! ```text
//! $ mpiexec.mpich -n 2 mana_launch --ckptdir ckpt ./datatypes --loop 40
//! $ mana_status --checkpoint --kill
//! $ mpiexec.mpich -n 2 mana_restart ckpt
//! datatypes done: …
//! ```

use mana_tests::*;
use std::time::Duration;

/// A `name --loop rounds` job on `ranks` ranks under mana_launch, past its ready line and
/// registered, with the native run's `done` line and a random generator for the instant.
struct Started {
    s: Session,
    run: Proc,
    expected: Option<String>,
    rng: Rng,
}

fn start(label: &str, name: &str, ranks: usize, rounds: &str) -> Started {
    let s = Session::start(label);
    let program = compile_mpi(name, s.dir());
    let args = ["--loop", rounds];
    let expected = result_line(&native(&s, ranks, &program, &args), &format!("{name} done"));
    assert!(expected.is_some(), "{name}: no done line natively");
    // The instants of MPI_Init and MPI_Finalize calls (mpi-wrappers/src/special.c).
    let times = s.dir().join("mpi-times");
    let run = launch(
        &s,
        ranks,
        &program,
        &args,
        &[("MANA_MPI_TIMES", times.to_str().unwrap())],
    );
    run.wait_for_stdout(&format!("{name} ready"), LONG);
    wait_registered(&s, ranks);
    Started {
        rng: Rng::seeded(label),
        s,
        run,
        expected,
    }
}

/// `out` is a successful run whose `name done` line is the native run's, `expected`.
fn ends_like_native(out: &Output, name: &str, expected: &Option<String>) {
    out.assert_success();
    assert_eq!(
        &result_line(&out.stdout_text(), &format!("{name} done")),
        expected,
        "{name}: the job must end exactly as the native run\n{}",
        out.describe()
    );
}

/// `name --loop rounds` on `ranks` ranks: checkpoint+kill at a random instant within
/// `within` of its ready line, restart, compare the `done` line with the native run's.
fn restarts_like_native(name: &str, ranks: usize, rounds: &str, within: Duration) {
    let mut j = start(&format!("mpi-prog-{name}-{ranks}"), name, ranks, rounds);
    let gen = checkpoint_and_kill(&j.s, &mut j.rng, within, j.run);
    let out = restart(&j.s, ranks, &[]).wait_output(LONG);
    out.assert_success();
    assert_eq!(
        out.stderr_text()
            .matches("MPI restarted with a new lower half")
            .count(),
        ranks,
        "every rank restarted MPI: {}",
        out.describe()
    );
    assert_eq!(
        result_line(&out.stdout_text(), &format!("{name} done")),
        j.expected,
        "{name}: the restarted job must end exactly as the native run\n{}",
        out.describe()
    );
    assert_images_have_no_lower_half(&gen, ranks);
}

/// The same job checkpointed at a random instant without being killed: it runs on (the
/// snapshot's extra fences and the drain leave no trace in its result).
fn checkpoint_without_kill_like_native(name: &str, ranks: usize, rounds: &str, within: Duration) {
    let mut j = start(
        &format!("mpi-prog-{name}-{ranks}-nokill"),
        name,
        ranks,
        rounds,
    );
    std::thread::sleep(j.rng.duration_upto(within));
    let gen =
        j.s.checkpoint()
            .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
    let out = j.run.wait_output(LONG);
    out.assert_success();
    assert_eq!(
        result_line(&out.stdout_text(), &format!("{name} done")),
        j.expected,
        "{name}: {}",
        out.describe()
    );
    assert_images_have_no_lower_half(&gen, ranks);
}

const WITHIN: Duration = Duration::from_millis(700);

/// The split-process issue's programs that have a `--loop` mode (signals_mpi has none: its
/// POSIX timer is not restored by design, docs/engine.md; unsupported has nothing to keep;
/// dgraph_rush's 40 rounds end within milliseconds: its own test checkpoints it).
const PROGRAMS: [&str; 18] = [
    "rma",
    "rma_sync",
    "status_error",
    "threads_multiple",
    "datatypes",
    "attrs",
    "callbacks",
    "info_errors",
    "comms",
    "collectives",
    "p2p",
    "handles",
    "f_attrs",
    "f08_types",
    "f_bottom",
    "cxx_ops",
    "req_error",
    "type_reuse",
];

/// Windows of every flavour (create, allocate, allocate_c, Alloc_mem, allocate_shared on a
/// shared-memory communicator) in fence epochs across the checkpoint.
#[test]
fn rma_restarts_like_native() {
    restarts_like_native("rma", 2, "40", WITHIN);
}

/// Statuses (MPI_ERROR, counts) of every completion call on a duplicated communicator.
#[test]
fn status_error_restarts_like_native() {
    restarts_like_native("status_error", 2, "40", WITHIN);
}

/// MPI_THREAD_MULTIPLE: four threads per rank exchanging messages across the checkpoint.
#[test]
fn threads_multiple_restarts_like_native() {
    restarts_like_native("threads_multiple", 2, "40", WITHIN);
}

/// MPI_Isendrecv(_replace) answered by MPI_Recv/MPI_Send/MPI_Sendrecv, checkpointed at a
/// random instant (most land while an MPI_Isendrecv with a rendezvous-sized send waits for
/// its receive), killed and restarted like the native run.
#[test]
fn isendrecv_restarts_like_native() {
    restarts_like_native("isendrecv", 3, "100", WITHIN);
}

/// The same checkpointed every 100 ms and left running: every checkpoint commits and the
/// result is the native run's. Before, MANA counted neither half of an MPI_Isendrecv, and
/// the first checkpoint after one failed ("a rank received more messages than were sent to
/// it").
#[test]
fn isendrecv_answered_by_plain_calls_checkpointed_every_100_ms_like_native() {
    let mut j = start("mpi-prog-isendrecv", "isendrecv", 3, "150");
    let committed = checkpoint_until_end(&j.s, &mut j.run, Duration::from_millis(100)).len();
    let out = j.run.wait_output(LONG);
    ends_like_native(&out, "isendrecv", &j.expected);
    assert!(committed >= 3, "only {committed} checkpoints committed");
    assert!(
        j.expected.as_deref().is_some_and(|l| l.ends_with("bad=0")),
        "native: {:?}",
        j.expected
    );
}

/// MPI_Comm_create_group from four threads of each of three ranks at once (MPICH's
/// threads/comm/comm_create_group_threads), checkpointed every 100 ms and left running,
/// then checkpointed at a random instant, killed and restarted: both end as the native run.
/// Before, such a call was held at its entry while a checkpoint was pending, a peer's
/// thread inside it waited for the held one, and the MPICH test's checkpoints stopped
/// converging within a few generations.
#[test]
fn comm_create_group_from_threads_checkpointed_every_100_ms_and_restarted_like_native() {
    every_100_ms_then_restarted_like_native("cg_threads", 3, "40", Duration::from_millis(1500));
}

/// `name --loop rounds` (whose native run ends with `bad=0`) checkpointed every 100 ms and
/// left running, then checkpointed at a random instant within `within`, killed and
/// restarted: both end as the native run.
fn every_100_ms_then_restarted_like_native(
    name: &str,
    ranks: usize,
    rounds: &str,
    within: Duration,
) {
    let mut j = start(&format!("mpi-prog-{name}"), name, ranks, rounds);
    let committed = checkpoint_until_end(&j.s, &mut j.run, Duration::from_millis(100)).len();
    let out = j.run.wait_output(LONG);
    ends_like_native(&out, name, &j.expected);
    assert!(committed >= 3, "only {committed} checkpoints committed");
    assert!(
        j.expected.as_deref().is_some_and(|l| l.ends_with("bad=0")),
        "native: {:?}",
        j.expected
    );
    restarts_like_native(name, ranks, rounds, within);
}

/// Receives that complete with an error (a message longer than the buffer) while their
/// rank sleeps, checkpointed every 100 ms and left running, then checkpointed at a random
/// instant, killed and restarted: MPI_Request_get_status, MPI_Wait, MPI_Testall,
/// MPI_Waitany and MPI_Testsome report each error as natively; every fifth round the
/// sender runs a round ahead, so that receives also take too-long drained messages. Before, the drain took such a request (MPI had completed
/// and freed it, reporting the error) for unfinished and tested it again: MPICH aborted
/// (`ref_count >= 0` in mpir_request.h; MPICH's errors/comm/too_many_icomms2 under
/// checkpoints, an MPI_Comm_idup out of context ids).
#[test]
fn requests_failing_while_checkpointed_report_their_errors_like_native() {
    every_100_ms_then_restarted_like_native("req_error", 2, "60", Duration::from_millis(1000));
}

/// Every program checkpointed at a random instant and left running (fences added by the
/// snapshot, the drain and the gate leave no trace in the result).
#[test]
fn every_program_checkpointed_without_kill_runs_on_like_native() {
    for name in PROGRAMS {
        checkpoint_without_kill_like_native(name, 2, "40", WITHIN);
    }
}

/// Derived datatypes of every constructor (some built from types already freed).
#[test]
fn datatypes_restart_like_native() {
    restarts_like_native("datatypes", 2, "40", WITHIN);
}

/// Vector datatypes made and freed per message, kept by MANA for reuse: a restart brings
/// a new lower half, whose objects the cache must not mix with the old one's.
#[test]
fn type_reuse_restarts_like_native() {
    restarts_like_native("type_reuse", 2, "60", WITHIN);
}

/// Keyvals of every kind with attributes on communicators, datatypes and windows; the
/// copy/delete callback counts must not change (a restart calls none of them).
#[test]
fn attrs_restart_like_native() {
    restarts_like_native("attrs", 2, "40", WITHIN);
}

/// User operations, user error handlers on communicators and windows.
#[test]
fn callbacks_restart_like_native() {
    restarts_like_native("callbacks", 2, "40", WITHIN);
}

/// Info objects, hints, user error classes/codes/strings.
#[test]
fn info_errors_restart_like_native() {
    restarts_like_native("info_errors", 2, "40", WITHIN);
}

/// Split/dup/create/create_group communicators, Cartesian, graph and distributed-graph
/// topologies, an intercommunicator and its merge, names, keyvals.
#[test]
fn comms_restart_like_native() {
    restarts_like_native("comms", 2, "40", WITHIN);
}

/// Blocking and nonblocking collectives on sub-communicators with user operations.
#[test]
fn collectives_restart_like_native() {
    restarts_like_native("collectives", 2, "40", WITHIN);
}

/// Every send mode, persistent requests, a Bsend buffer, wildcards, pending receives.
#[test]
fn p2p_restart_like_native() {
    restarts_like_native("p2p", 2, "40", WITHIN);
}

/// Virtual handles: held communicators, groups, datatypes, operations, error handlers.
#[test]
fn handles_restart_like_native() {
    restarts_like_native("handles", 2, "40", WITHIN);
}

/// Fortran (`use mpi`, mpif90.mpich): keyvals with Fortran copy/delete callbacks (through
/// libmpichfort's proxies), attributes with INTEGER values (MPI-1 MPI_ATTR_PUT) and
/// address-sized ones, on communicators, datatypes and windows; the callback counts and
/// values after the restart must be the native run's.
///
/// An instant inside a window's life used to restart to one comm and one MPI-1 delete
/// callback fewer per rank: MPICH copies the window communicator's attributes (with the
/// application's callbacks) into an internal communicator, which a restart created with
/// none (docs/mpi-checkpoint.md, "Attribute copies into a window's communicator").
#[test]
fn fortran_attributes_restart_like_native() {
    restarts_like_native("f_attrs", 2, "40", WITHIN);
}

/// `f_attrs` checkpointed again and again while it runs (no kill), then every committed
/// generation restarted on its own. Random instants find a short window of the program
/// (such as the life of its short-lived MPI window) one run in many; every generation of
/// one run covers its rounds.
#[test]
fn fortran_attributes_every_generation_restarts_like_native() {
    every_generation_restarts_like_native("f_attrs", 2, "60", 5, usize::MAX);
}

/// `name --loop rounds` on `ranks` ranks checkpointed every 30 ms until it ends (at least
/// `min_gens` generations), then up to `most` of the generations, evenly spread, each
/// restarted on its own: each ends with the native line. A generation taken after rank 0
/// called `MPI_Finalize` (held there by the pending checkpoint, or leaving `main`, which
/// waits for a checkpoint under way) comes after the done line, which rank 0 prints and
/// flushes just before: restored, the ranks end without printing more. (The programs must
/// flush it: a C program's stdout into a pipe is fully buffered and leaves the process at
/// exit, after such an image, so a restored rank 0 rightly prints it — CI saw that of
/// dgraph_rush, whose restart from its 25th generation printed the line; gfortran writes
/// each statement's output out.)
fn every_generation_restarts_like_native(
    name: &str,
    ranks: usize,
    rounds: &str,
    min_gens: usize,
    most: usize,
) {
    let mut j = start(&format!("mpi-prog-{name}-gens"), name, ranks, rounds);
    let gens = checkpoint_until_end(&j.s, &mut j.run, Duration::from_millis(30));
    ends_like_native(&j.run.wait_output(LONG), name, &j.expected);
    assert!(
        gens.len() >= min_gens,
        "only {} generations committed",
        gens.len()
    );
    let times = std::fs::read_to_string(j.s.dir().join("mpi-times")).unwrap_or_default();
    let finalize_called: u64 = times
        .lines()
        .find_map(|l| l.strip_prefix("finalize_called 0 "))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no finalize_called line for rank 0 in {times:?}"));
    let step = gens.len().div_ceil(most.max(1)).max(1);
    let (mut restarted, mut after_finalize) = (0, 0);
    for gen in gens.iter().step_by(step) {
        let gen_name = gen.file_name().unwrap().to_str().unwrap().to_string();
        let r = Session::start(&format!("{name}-{gen_name}"));
        let into = r.ckpt_dir.join(&gen_name);
        std::fs::create_dir_all(&into).unwrap();
        for f in std::fs::read_dir(gen).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, into.join(f.file_name().unwrap())).unwrap();
        }
        std::fs::write(r.ckpt_dir.join("LATEST"), format!("{gen_name}\n")).unwrap();
        let image = gen.join(mana_image::ckptdir::image_name(0));
        let stopped = mana_image::ImageReader::open(&image)
            .unwrap()
            .header
            .created_unix_ns;
        let out = restart(&r, ranks, &[]).wait_output(LONG);
        if stopped > finalize_called {
            out.assert_success();
            assert_eq!(
                result_line(&out.stdout_text(), &format!("{name} done")),
                None,
                "{gen_name}: restored after rank 0 called MPI_Finalize, the job must end without the done line\n{}",
                out.describe()
            );
            after_finalize += 1;
        } else {
            ends_like_native(&out, name, &j.expected);
        }
        restarted += 1;
    }
    eprintln!(
        "{restarted} of {} generations restarted like native ({after_finalize} after rank 0 called MPI_Finalize)",
        gens.len()
    );
}

/// One-sided synchronisation across checkpoints (tests/mpi/rma_sync.c, 3 ranks): PSCW
/// epochs (closed by MPI_Win_wait or MPI_Win_test), a dynamic window with regions attached
/// for the whole run and for each round, and MPI_Rput/MPI_Raccumulate/MPI_Rget requests
/// left pending over a sleep. Checkpoint+kill at a random instant, restart. Before, a
/// restart refused every image of this program (a dynamic window), those taken inside a
/// PSCW epoch and those with a pending request.
#[test]
fn rma_sync_restarts_like_native() {
    restarts_like_native("rma_sync", 3, "60", WITHIN);
}

/// The same checkpointed every 30 ms, and eight of its generations restarted: instants
/// inside every part of a round (no image holds an open PSCW epoch: the checkpoint waits
/// for it to close; pending request-based operations are complete once the snapshot has
/// flushed their window).
#[test]
fn rma_sync_every_generation_restarts_like_native() {
    every_generation_restarts_like_native("rma_sync", 3, "60", 8, 8);
}

/// Distributed graphs made back to back with MPI_UNWEIGHTED and MPI_WEIGHTS_EMPTY and
/// queried with MPI_UNWEIGHTED (tests/mpi/dgraph_rush.c), checkpointed every 30 ms, eight
/// generations restarted like native. The wrappers used to translate the sentinels to the
/// lower library's before a collective's entry hold, so a rank restarted from there passed
/// the old lower half's MPI_UNWEIGHTED to the new one, which read it as an array: SIGSEGV
/// (MPICH's suite, f90/topo/dgraph_unwgtf90 from an early instant). Few instants are
/// there (with the old wrappers, 4 of about 110 generations of this program crashed), so
/// the guard against that bug is mpi-wrappers' `lower_values_are_taken_while_holding_the_gate`.
#[test]
fn dgraph_rush_every_generation_restarts_like_native() {
    every_generation_restarts_like_native("dgraph_rush", 2, "6000", 6, 8);
}

/// Persistent collectives started in opposite orders on even and odd ranks
/// (tests/mpi/pcoll_order.c; MPI 4.0 allows it, MPICH's coll/p_order does it), plus one
/// initialized, started and freed on a fresh communicator every 25 rounds; checkpointed and
/// killed at a random instant, restarted like native. Starts counted per communicator let
/// an agreement converge with rank 0 inside one and rank 1 inside another, and the drain
/// waited for both for ever (the old code failed the first checkpoint of every run); each
/// persistent collective now counts its own starts. Known remaining bug: checkpointed every
/// 30 ms, about 1 run in 15 still ends in a drain that waits for ever with equal counts
/// everywhere (docs/mpi-checkpoint.md, "Known problems", says how to reproduce it).
#[test]
fn pcoll_order_restarts_like_native() {
    restarts_like_native("pcoll_order", 2, "2000", WITHIN);
}

/// `f_attrs` creates a keyval with callbacks every round and frees it while an attribute
/// with it remains (on the rolling communicator, freed the next round). MANA gives each
/// such keyval one of 64 callback slots; it used to take a freed keyval's slot back only
/// at a checkpoint, so 100 rounds without one aborted the job ("more than 64 attribute
/// keyvals with callbacks alive at once", then MPI_KEYVAL_INVALID) — natively it ends.
#[test]
fn fortran_keyvals_freed_in_use_every_round_give_their_slots_back() {
    let j = start("mpi-prog-f_attrs-100", "f_attrs", 2, "100");
    ends_like_native(&j.run.wait_output(LONG), "f_attrs", &j.expected);
}

/// `use mpi_f08`: a derived type of a Fortran type, statuses, a Fortran user operation,
/// requests pending across the checkpoint.
#[test]
fn fortran_f08_types_restart_like_native() {
    restarts_like_native("f08_types", 2, "40", WITHIN);
}

/// MPI_BOTTOM with absolute-address datatypes (in flight at the checkpoint, persistent,
/// Sendrecv_replace) and MPI_IN_PLACE, from Fortran.
#[test]
fn fortran_mpi_bottom_restarts_like_native() {
    restarts_like_native("f_bottom", 2, "40", WITHIN);
}

/// C++ (mpicxx.mpich): lambdas and static members as user operations, an error handler.
#[test]
fn cxx_ops_restart_like_native() {
    restarts_like_native("cxx_ops", 2, "40", WITHIN);
}

/// Fortran scratch files (tests/mpi/f_scratch.f90): gfortran's runtime unlinks a
/// `STATUS='SCRATCH'` file as soon as it opens it, so each rank holds two files without a
/// name (a formatted sequential one read back whole each round, an unformatted
/// direct-access one). Checkpointed and killed at a random instant, restarted: the sums
/// over both files equal the native run's. Before, the checkpoint failed naming the
/// descriptor ("/tmp/gfortrantmp… (deleted)").
#[test]
fn fortran_scratch_files_restart_like_native() {
    restarts_like_native("f_scratch", 2, "60", WITHIN);
}
