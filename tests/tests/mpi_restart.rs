//! MPI checkpoint/restart: an unmodified MPI job is checkpointed at a random instant and
//! killed, then `mpiexec.mpich -n N mana_restart ckpt/` brings every rank back with a new
//! lower half (a fresh `MPI_Init`) — possibly over another transport — and the job
//! finishes with the native run's output, bit for bit.
//!
//! ```text
//! $ mpiexec.mpich -n 2 mana_launch --ckptdir ckpt ./world_mix
//! $ mana_status --checkpoint --kill
//! $ mpiexec.mpich -n 2 mana_restart ckpt
//! world_mix done: 0x1.97957e3356622p+21
//! ```

use mana_tests::*;
use std::process::Command;
use std::time::Duration;

fn mpiexec(s: &Session, n: usize, args: &[&std::ffi::OsStr], extra: &[(&str, &str)]) -> Command {
    mpiexec_command(s, n, args, extra)
}

/// A chain: launch, then checkpoint+kill and restart `generations` times at random
/// instants; the last restart runs to the end.
fn chain(label: &str, ranks: usize, iters: &str, generations: usize, within: Duration) {
    let s = Session::start(label);
    let program = compile_mpi("world_mix", s.dir());
    let expected = native(&s, ranks, &program, &[iters]);
    let mut rng = Rng::seeded(label);
    let mut run = launch(&s, ranks, &program, &[iters], &[]);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, ranks);
    let mut gens = Vec::new();
    for g in 0..generations {
        let gen = checkpoint_and_kill(&s, &mut rng, within, run);
        gens.push(gen);
        run = restart(&s, ranks, &[]);
        if g + 1 < generations {
            wait_registered(&s, ranks);
        }
    }
    let out = run.wait_output(LONG);
    out.assert_success();
    assert!(
        out.stderr_text()
            .matches("MPI restarted with a new lower half")
            .count()
            == ranks,
        "every rank restarted MPI: {}",
        out.describe()
    );
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(
        done(&out.stdout_text()),
        done(&expected),
        "the restarted job must end exactly as the native run"
    );
    for gen in &gens {
        assert_images_have_no_lower_half(gen, ranks);
    }
}

#[test]
fn two_ranks_restart_from_a_random_instant_like_native() {
    chain("mpi-restart-2", 2, "300", 1, Duration::from_millis(900));
}

#[test]
fn four_ranks_restart_from_a_random_instant_like_native() {
    chain("mpi-restart-4", 4, "200", 1, Duration::from_millis(700));
}

/// Five generations: each restarted job is checkpointed and killed again at a random
/// instant; the sixth incarnation finishes like the native run.
#[test]
fn a_chain_of_five_generations_restarts_like_native() {
    chain("mpi-restart-chain", 2, "600", 5, Duration::from_millis(300));
}

/// Twenty independent trials, each at its own random instant. 200 iterations (0.68 s
/// natively in all, 0.43 s for 120): with 120 the job could end within the 350 ms draw
/// plus the checkpoint's start (seen three times on 2026-12-04 while the first checkpoint
/// also hashed the lower half's libraries; 0.8 ms of hashing now).
#[test]
fn twenty_random_instants() {
    for trial in 0..20 {
        chain(
            &format!("mpi-restart-trial-{trial}"),
            2,
            "200",
            1,
            Duration::from_millis(350),
        );
    }
}

/// Checkpointed over shared memory (`UCX_TLS=sm,self`), restarted over TCP
/// (`UCX_TLS=tcp,self`): the new lower half is configured from the restart's environment.
/// The restarted ranks map no shared-memory transport segment (their region dump at
/// MPI_Finalize), and the result is the native one.
#[test]
fn restart_switches_from_shared_memory_to_tcp() {
    let s = Session::start("mpi-restart-tcp");
    let program = compile_mpi("world_mix", s.dir());
    let expected = native(&s, 2, &program, &["300"]);
    let dump = s.dir().join("regions");
    std::fs::create_dir_all(&dump).unwrap();
    let dump_s = dump.to_str().unwrap();
    let mut rng = Rng::seeded("mpi-restart-tcp");
    let run = launch(
        &s,
        2,
        &program,
        &["300"],
        &[("UCX_TLS", "sm,self"), ("MANA_DUMP_REGIONS", dump_s)],
    );
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, 2);
    checkpoint_and_kill(&s, &mut rng, Duration::from_millis(800), run);
    let out = restart(&s, 2, &[("UCX_TLS", "tcp,self")]).wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(done(&out.stdout_text()), done(&expected));
    let dumps: Vec<_> = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        dumps.len(),
        2,
        "one region dump per restarted rank: {dumps:?}"
    );
    for d in dumps {
        let text = std::fs::read_to_string(&d).unwrap();
        assert!(
            !text.contains("ucx_shm") && !text.contains("/SYSV"),
            "{}: the restarted rank still uses UCX shared memory",
            d.display()
        );
    }
}

/// A job restarted with a different number of processes is refused with one line saying
/// how many it needs, and nothing is lost: the right restart still works afterwards.
#[test]
fn restart_with_the_wrong_process_count_is_refused_clearly() {
    let s = Session::start("mpi-restart-count");
    let program = compile_mpi("world_mix", s.dir());
    let expected = native(&s, 2, &program, &["200"]);
    let mut rng = Rng::seeded("mpi-restart-count");
    let run = launch(&s, 2, &program, &["200"], &[]);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, 2);
    checkpoint_and_kill(&s, &mut rng, Duration::from_millis(500), run);
    let wrong = restart(&s, 3, &[]).wait_output(LONG);
    assert!(!wrong.status.success());
    assert!(
        wrong
            .stderr_text()
            .contains("the launcher started 3 processes (PMI_SIZE), but")
            && wrong.stderr_text().contains("restart with -n 2"),
        "{}",
        wrong.describe()
    );
    let out = restart(&s, 2, &[]).wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(done(&out.stdout_text()), done(&expected));
}

/// Communicators the application made (split and dup of the world), persistent requests,
/// wildcard receives on a duplicate, nonblocking collectives: `ckpt_mix` restarted from a
/// random instant, twice in a row, ends like the native run.
#[test]
fn split_and_duplicated_communicators_and_persistent_requests_restart_like_native() {
    let s = Session::start("mpi-restart-comms");
    let program = compile_mpi("ckpt_mix", s.dir());
    let expected = native(&s, 2, &program, &["500"]);
    let mut rng = Rng::seeded("mpi-restart-comms");
    let mut run = launch(&s, 2, &program, &["500"], &[]);
    run.wait_for_stdout("ckpt_mix ready", LONG);
    wait_registered(&s, 2);
    for g in 0..2 {
        let gen = checkpoint_and_kill(&s, &mut rng, Duration::from_millis(500), run);
        assert_images_have_no_lower_half(&gen, 2);
        run = restart(&s, 2, &[]);
        if g == 0 {
            wait_registered(&s, 2);
        }
    }
    let out = run.wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "ckpt_mix done");
    assert_eq!(
        done(&out.stdout_text()),
        done(&expected),
        "{}",
        out.describe()
    );
}

/// world_mix in `mode` (2 ranks, 400 iterations) checkpointed and killed at a random
/// instant of its first 800 ms, restarted: it ends like the native run.
fn world_mix_restarts_like_native(mode: &str) {
    let label = format!("mpi-restart-{mode}");
    let s = Session::start(&label);
    let program = compile_mpi("world_mix", s.dir());
    let expected = native(&s, 2, &program, &["400", mode]);
    let run = launch(&s, 2, &program, &["400", mode], &[]);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, 2);
    let mut rng = Rng::seeded(&label);
    checkpoint_and_kill(&s, &mut rng, Duration::from_millis(800), run);
    let out = restart(&s, 2, &[]).wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(
        done(&out.stdout_text()),
        done(&expected),
        "{}",
        out.describe()
    );
}

/// A derived datatype held across the checkpoint (world_mix "pair") is created again in
/// the new lower half, and the job ends like the native run.
#[test]
fn a_held_derived_datatype_restarts_like_native() {
    world_mix_restarts_like_native("pair");
}

/// A persistent MPI_Alltoallw_init request (datatype arrays mixing MPI_INT and a derived
/// type) held across the checkpoint and started every iteration (world_mix "pallw") is
/// initialized again in the new lower half from copies of its datatype arrays, and the
/// job ends like the native run. Until 2026-12-03 a restart refused it.
#[test]
fn a_persistent_alltoallw_restarts_like_native() {
    world_mix_restarts_like_native("pallw");
}

/// What a restart cannot re-create yet (here an MPI session the application holds; until
/// 2026-12-03 a persistent MPI_Alltoallw_init request, and before a dynamic window, which
/// both restart now) is said at the checkpoint (a warning: the job runs on) and refused at
/// restart with one clear line naming it — never a wrong answer.
#[test]
fn restarting_objects_not_supported_yet_is_refused_clearly() {
    let s = Session::start("mpi-restart-unsupported");
    let program = compile_mpi("world_mix", s.dir());
    let run = launch(&s, 2, &program, &["400", "session"], &[]);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, 2);
    let mut rng = Rng::seeded("mpi-restart-unsupported");
    let gen = checkpoint_and_kill(&s, &mut rng, Duration::from_millis(300), run);
    assert!(gen.exists());
    let out = restart(&s, 2, &[]).wait_output(LONG);
    assert!(!out.status.success());
    let line = "the application holds an MPI session, which a restart cannot create again yet";
    assert!(out.stderr_text().contains(line), "{}", out.describe());
}

/// `mana_launch --interval 1`: the coordinator checkpoints the MPI job every second while
/// it runs (each one a full agreement + drain); the job still ends like the native run,
/// and a restart from the newest interval checkpoint does too.
#[test]
fn interval_checkpoints_of_an_mpi_job() {
    let s = Session::start("mpi-interval");
    let program = compile_mpi("world_mix", s.dir());
    let expected = native(&s, 2, &program, &["700"]);
    let launch_bin = bin("mana_launch");
    let run = Proc::spawn(
        "mpiexec -n 2 mana_launch --interval 1 world_mix",
        mpiexec(
            &s,
            2,
            &[
                launch_bin.as_os_str(),
                "--ckptdir".as_ref(),
                s.ckpt_dir.as_os_str(),
                "--interval".as_ref(),
                "1".as_ref(),
                program.as_os_str(),
                "700".as_ref(),
            ],
            &[],
        ),
    );
    let out = run.wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(done(&out.stdout_text()), done(&expected));
    let latest = latest_generation(&s.ckpt_dir)
        .unwrap_or_else(|| panic!("no interval checkpoint was committed: {}", out.describe()));
    let again = restart(&s, 2, &[]).wait_output(LONG);
    again.assert_success();
    assert_eq!(
        done(&again.stdout_text()),
        done(&expected),
        "restart from {latest}: {}",
        again.describe()
    );
}

/// Fifteen messages the drain takes into the upper half (rank 0 waits outside MPI for a gate
/// file while they arrive), then met after the checkpoint by Iprobe, Mprobe+Mrecv,
/// Improbe+Imrecv, Irecv with every wait and test, a wildcard Probe, wildcard Recvs,
/// MPI_Isendrecv and MPI_Isendrecv_replace (whose sends rank 1 receives with MPI_Recv), and
/// two MPI_Isend's of rank 0 to itself on MPI_COMM_SELF (the drain used to leave those
/// alone and wait for the sends for ever: mpi4py's test_p2p_buf_matched hung CI): every
/// status (MPI_ERROR included: MPICH sets it in some calls only) and payload, and the order,
/// equal the native run's — after a restart, and after a checkpoint the job survives.
#[test]
fn drained_messages_meet_every_probe_and_receive_like_native() {
    for kill in [true, false] {
        let label = if kill {
            "mpi-drained-kill"
        } else {
            "mpi-drained"
        };
        let s = Session::start(label);
        let program = compile_mpi("drained", s.dir());
        let open_gate = s.dir().join("gate-open");
        std::fs::write(&open_gate, "").unwrap();
        let expected = native(&s, 2, &program, &[open_gate.to_str().unwrap()]);
        let gate = s.dir().join("gate");
        let run = launch(&s, 2, &program, &[gate.to_str().unwrap()], &[]);
        run.wait_for_stdout("drained ready", LONG);
        wait_registered(&s, 2);
        let (gen, out) = if kill {
            let gen = s
                .checkpoint_and_kill()
                .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}"));
            let _ = run.wait_quietly(LONG);
            std::fs::write(&gate, "").unwrap();
            (gen, restart(&s, 2, &[]).wait_output(LONG))
        } else {
            let gen = s
                .checkpoint()
                .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
            std::fs::write(&gate, "").unwrap();
            (gen, run.wait_output(LONG))
        };
        out.assert_success();
        let image = gen.join(mana_image::ckptdir::image_name(0));
        let reader = mana_image::ImageReader::open(&image).unwrap();
        assert_eq!(
            reader.header.mpi.as_ref().map(|m| m.drained_messages),
            Some(17),
            "rank 0's image holds the fifteen messages in flight and the two it sent itself"
        );
        let after_ready = |t: &str| -> String {
            t.lines()
                .skip_while(|l| *l != "drained ready")
                .skip(1)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let got = if kill {
            out.stdout_text()
        } else {
            after_ready(&out.stdout_text())
        };
        assert_eq!(
            got.trim_end(),
            after_ready(&expected),
            "{label}: statuses and payloads must equal the native run's\n{}",
            out.describe()
        );
        assert!(expected.contains("drained done"), "native: {expected}");
    }
}

/// 40 duplicates of MPI_COMM_WORLD and 100 of MPI_COMM_SELF alive on each rank, each with
/// messages in flight at the checkpoint (tests/mpi/comm_ids.c): the drain takes each on its
/// own communicator (180 per rank) and the restart delivers them like native. With the
/// first gid derivation two of these communicators had one gid and the checkpoint failed
/// after 120 s (mpi4py's suite, checkpointed, hung so in CI).
#[test]
fn many_communicators_keep_distinct_identities_across_a_restart() {
    let s = Session::start("mpi-comm-ids");
    let program = compile_mpi("comm_ids", s.dir());
    let open_gate = s.dir().join("gate-open");
    std::fs::write(&open_gate, "").unwrap();
    let expected = native(&s, 2, &program, &[open_gate.to_str().unwrap()]);
    assert!(expected.contains("failed 0"), "native: {expected}");
    let gate = s.dir().join("gate");
    let run = launch(&s, 2, &program, &[gate.to_str().unwrap()], &[]);
    run.wait_for_stdout("comm_ids ready", LONG);
    wait_registered(&s, 2);
    let gen = s
        .checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}"));
    let _ = run.wait_quietly(LONG);
    std::fs::write(&gate, "").unwrap();
    let out = restart(&s, 2, &[]).wait_output(LONG);
    out.assert_success();
    for rank in 0..2 {
        let image = gen.join(mana_image::ckptdir::image_name(rank));
        let reader = mana_image::ImageReader::open(&image).unwrap();
        assert_eq!(
            reader.header.mpi.as_ref().map(|m| m.drained_messages),
            Some(180),
            "rank {rank}'s image holds its 40 + 100 messages to itself and the 40 from its peer"
        );
    }
    assert_eq!(
        result_line(&out.stdout_text(), "comm_ids done"),
        result_line(&expected, "comm_ids done"),
        "{}",
        out.describe()
    );
}

/// Synchronous sends in flight at a checkpoint (tests/mpi/ssend_drain.c: on each rank an
/// MPI_Issend to the peer between two standard sends with the same tag, one to itself on a
/// duplicate communicator and one on MPI_COMM_SELF, and a thread blocked in MPI_Ssend) are
/// drained but stay incomplete until the receiver's application receives them — after a
/// checkpoint the job continues from, and after a restart. The drain used to complete all
/// eight ("early 8").
#[test]
fn synchronous_sends_stay_incomplete_until_received_across_a_checkpoint() {
    let s = Session::start("mpi-ssend-drain");
    let program = compile_mpi("ssend_drain", s.dir());
    let open_gate = s.dir().join("gate-open");
    std::fs::write(&open_gate, "").unwrap();
    let expected = native(&s, 2, &program, &[open_gate.to_str().unwrap()]);
    let done = |t: &str| result_line(t, "ssend_drain done");
    assert_eq!(
        done(&expected).as_deref(),
        Some("ssend_drain done: early 0 wrong 0"),
        "native: {expected}"
    );
    for kill in [false, true] {
        let gate = s.dir().join(format!("gate-{kill}"));
        let run = launch(&s, 2, &program, &[gate.to_str().unwrap()], &[]);
        run.wait_for_stdout("ssend ready", LONG);
        wait_registered(&s, 2);
        let out = if kill {
            s.checkpoint_and_kill()
                .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}"));
            let _ = run.wait_quietly(LONG);
            std::fs::write(&gate, "").unwrap();
            restart(&s, 2, &[]).wait_output(LONG)
        } else {
            s.checkpoint()
                .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
            std::fs::write(&gate, "").unwrap();
            run.wait_output(LONG)
        };
        out.assert_success();
        assert_eq!(
            done(&out.stdout_text()),
            done(&expected),
            "killed and restarted: {kill}; {}",
            out.describe()
        );
    }
}

/// Ranks free a communicator a second apart (MPI_Comm_free is local) and the checkpoint is
/// requested in between: it completes once every rank has freed it, and the restart, which
/// must not re-create it on one rank alone, ends like the native run.
#[test]
fn a_communicator_freed_at_different_times_restarts_like_native() {
    let s = Session::start("mpi-free-skew");
    let program = compile_mpi("free_skew", s.dir());
    let expected = native(&s, 2, &program, &[]);
    let run = launch(&s, 2, &program, &[], &[]);
    run.wait_for_stdout("free_skew ready", LONG);
    wait_registered(&s, 2);
    let gen = s
        .checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}"));
    let _ = run.wait_quietly(LONG);
    let out = restart(&s, 2, &[]).wait_output(Duration::from_secs(60));
    out.assert_success();
    let done = |t: &str| result_line(t, "free_skew done");
    assert_eq!(
        done(&out.stdout_text()),
        done(&expected),
        "{}",
        out.describe()
    );
    assert!(done(&expected).is_some(), "native: {expected}");
    assert_images_have_no_lower_half(&gen, 2);
}

/// Four nonblocking collective writes, then four reads, pending on one file at once and
/// waited for with MPI_Waitall (tests/mpi/mpiio_icoll.c), checkpointed every 30 ms: a
/// drain must move ROMIO's state machines on in the order every rank does — the oldest
/// first, as MANA's MPI_Waitall waits for them. A drain that tested them all in turn made
/// the ranks start their internal collectives in different orders: MPICH's
/// io/i_aggregation1 hung in the drain, and this program failed in MPI_Testall after a few
/// checkpoints (4 runs of 4 with the old wrappers). The job ends as the native run, and a
/// restart from a random instant too.
#[test]
fn pending_collective_io_survives_checkpoints_every_30_ms() {
    let s = Session::start_with("mpi-icoll-io", &["--interval", "0.03"]);
    let program = compile_mpi("mpiio_icoll", s.dir());
    let file = s.dir().join("mpiio_icoll.dat");
    let args = ["--loop", "40", file.to_str().unwrap()];
    let expected = result_line(&native(&s, 2, &program, &args), "mpiio_icoll done");
    assert!(expected.is_some());
    let out = launch(&s, 2, &program, &args, &[]).wait_output(LONG);
    out.assert_success();
    assert_eq!(
        result_line(&out.stdout_text(), "mpiio_icoll done"),
        expected,
        "{}",
        out.describe()
    );
    let latest = latest_generation(&s.ckpt_dir).unwrap_or_default();
    let n = latest
        .strip_prefix("gen-")
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(n >= 3, "only {n} checkpoints committed: {}", out.describe());

    // Long enough (300 rounds, over a second) that a random instant within 300 ms after the
    // ready line finds it running (40 rounds ended first once under CI's load).
    let s = Session::start("mpi-icoll-io-restart");
    let args = ["--loop", "300", file.to_str().unwrap()];
    let expected = result_line(&native(&s, 2, &program, &args), "mpiio_icoll done");
    assert!(expected.is_some());
    let mut rng = Rng::seeded("mpi-icoll-io");
    killed_and_restarted_ends_as_native(
        &s,
        &program,
        &args,
        "mpiio_icoll",
        &mut rng,
        300,
        &expected,
    );
}

/// `name ARGS` on 2 ranks under mana_launch, past its ready line, checkpointed and killed
/// within `within_ms` ms, restarted: it ends with the native run's done line, `expected`.
fn killed_and_restarted_ends_as_native(
    s: &Session,
    program: &std::path::Path,
    args: &[&str],
    name: &str,
    rng: &mut Rng,
    within_ms: u64,
    expected: &Option<String>,
) {
    let run = launch(s, 2, program, args, &[]);
    run.wait_for_stdout(&format!("{name} ready"), LONG);
    wait_registered(s, 2);
    checkpoint_and_kill(s, rng, Duration::from_millis(within_ms), run);
    let out = restart(s, 2, &[]).wait_output(LONG);
    out.assert_success();
    assert_eq!(
        &result_line(&out.stdout_text(), &format!("{name} done")),
        expected,
        "the restarted job must end exactly as the native run\n{}",
        out.describe()
    );
}

/// MPI-IO: a file open at the checkpoint (mpiio_view keeps one open with a strided view,
/// individual and shared file pointers, and holds the file's group twice) is synced by the
/// checkpoint, which leaves no trace in the job's result; a restart opens it again, puts
/// its view and pointers back, takes the group's two references again (before 2026-12-03
/// one: the second MPI_Group_free failed MPICH's "ref_count >= 0"), and the job ends as the
/// native run.
#[test]
fn an_open_mpi_file_survives_a_checkpoint_and_a_restart() {
    let s = Session::start("mpi-restart-mpiio");
    let program = compile_mpi("mpiio_view", s.dir());
    let args = ["--loop", "60"];
    let expected = result_line(&native(&s, 2, &program, &args), "mpiio_view done");
    assert!(expected.is_some());
    let run = launch(&s, 2, &program, &args, &[]);
    run.wait_for_stdout("mpiio_view ready", LONG);
    wait_registered(&s, 2);
    let mut rng = Rng::seeded("mpi-restart-mpiio");
    std::thread::sleep(rng.duration_upto(Duration::from_millis(400)));
    let gen = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
    assert!(gen.exists());
    let out = run.wait_output(LONG);
    out.assert_success();
    assert_eq!(
        result_line(&out.stdout_text(), "mpiio_view done"),
        expected,
        "{}",
        out.describe()
    );

    killed_and_restarted_ends_as_native(
        &s,
        &program,
        &args,
        "mpiio_view",
        &mut rng,
        300,
        &expected,
    );
}
