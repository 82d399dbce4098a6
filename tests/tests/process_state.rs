//! Everything a real process holds (issue 11). Item 1, inherited descriptors: a program
//! started by a shell that hands it pipes beyond stdio (`7> >(cat > f) 8< <(printf …)`, as
//! bash's process substitution, a CI runner or Python's `subprocess` do) is checkpointed
//! and restarted; at restart each such descriptor is the restarting process's of the same
//! number when it has one of the same kind, else a stand-in on which reads see
//! end-of-file and writes succeed. The same for MPI ranks under `mpiexec.mpich`.
//! Items 6 and 7, names: every thread's name (`comm`) comes back, and the process shows as
//! its program, not `mana_restart`.

use mana_tests::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits until the file `path` (written by a `cat` of a process substitution, which may
/// lag behind its writer) ends with the line `last`; returns its content.
fn settled(path: &Path, last: &str) -> Vec<u8> {
    let deadline = Instant::now() + SHORT;
    loop {
        let text = fs::read(path).unwrap_or_default();
        if String::from_utf8_lossy(&text).lines().last() == Some(last) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never ended with {last:?}: {:?}",
            path.display(),
            String::from_utf8_lossy(&text)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the last `cat` got, once its writer has gone (nothing more comes).
fn quiet(path: &Path) -> Vec<u8> {
    let mut last = fs::read(path).unwrap_or_default();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = fs::read(path).unwrap_or_default();
        if now == last {
            return now;
        }
        last = now;
    }
}

const DATA: &str = "inherited input\\n";

#[test]
fn a_program_writing_and_reading_inherited_pipes_restarts_with_the_new_ones_or_stand_ins() {
    let s = Session::start("inherited");
    let program = compile("inherited_fds", Build::Pie, s.dir());
    let p = program.display();
    let steps = "300";
    let last = format!("line {}", 299);
    // $ ./inherited_fds 300 10 7> >(cat > native7) 8< <(printf …)
    let native = Proc::spawn(
        "native",
        s.shell(&format!(
            "exec {p} {steps} 10 7> >(cat > native7) 8< <(printf '{DATA}')"
        )),
    )
    .wait_output(LONG);
    native.assert_success();
    let native7 = settled(&s.dir().join("native7"), &last);

    let mut rng = Rng::seeded("inherited");
    // $ mana_launch --ckptdir ckpt ./inherited_fds … 7> >(cat > out7a) 8< <(printf …)
    let run = Proc::spawn(
        "mana_launch with inherited pipes",
        s.shell(&format!(
            "exec mana_launch --ckptdir ckpt {p} {steps} 10 7> >(cat > out7a) 8< <(printf '{DATA}')"
        )),
    );
    run.wait_for_stdout("inherited ready", SHORT);
    s.wait_registered(run.pid());
    std::thread::sleep(rng.duration_upto(Duration::from_millis(2000)));
    let gen = s
        .checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint of a program with inherited pipes: {e}"));
    let killed = run.wait_output(SHORT);
    let image = mana_image::ImageReader::open(&rank0_image(&gen)).unwrap();
    for fd in [7, 8] {
        let f = image.header.files.iter().find(|f| f.fd == fd);
        assert!(
            matches!(
                f.map(|f| &f.kind),
                Some(mana_image::FileKind::Inherited(
                    mana_image::InheritedKind::Pipe
                ))
            ),
            "descriptor {fd} saved as an inherited pipe: {f:?}"
        );
    }
    let out7a = quiet(&s.dir().join("out7a"));

    // Restarted with pipes of its own at 7 and 8: the program goes on with them.
    let restored = Proc::spawn(
        "mana_restart with new pipes",
        s.shell(&format!(
            "exec mana_restart ckpt 7> >(cat > out7b) 8< <(printf '{DATA}')"
        )),
    )
    .wait_output(LONG);
    restored.assert_success();
    assert_continues(
        &native.stdout,
        &[killed.stdout.clone(), restored.stdout.clone()],
    );
    let out7b = settled(&s.dir().join("out7b"), &last);
    assert_continues(&native7, &[out7a, out7b]);

    // Restarted again from the same generation with neither: writes to 7 succeed (a
    // drained stand-in; SIGPIPE would have killed it), 8 reads end-of-file at once.
    let bare = Proc::spawn(
        "mana_restart without them",
        s.shell("exec mana_restart ckpt 7>&- 8<&-"),
    )
    .wait_output(LONG);
    bare.assert_success();
    let expected: String = native
        .stdout_text()
        .lines()
        .map(|l| {
            if l.starts_with("read ") {
                "read 0 bytes hash 0000000000000000\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_continues(expected.as_bytes(), &[killed.stdout, bare.stdout.clone()]);
    assert!(
        !bare.stderr_text().contains("mana"),
        "nothing of MANA's on the program's stderr unless asked: {}",
        bare.describe()
    );
}

#[test]
fn mpi_ranks_writing_and_reading_inherited_pipes_restart_with_the_new_ones() {
    let s = Session::start("inherited-mpi");
    let program = compile_mpi("inherited_mpi", s.dir());
    let (p, launch, restart) = (
        program.display().to_string(),
        bin("mana_launch").display().to_string(),
        bin("mana_restart").display().to_string(),
    );
    let ranks = 2;
    let last = "line 299";
    let run_shell = |label: &str, line: String| {
        let script = format!("exec {line} 41< <(printf '{DATA}')");
        Proc::spawn(
            label,
            mpiexec_command(
                &s,
                ranks,
                &["/bin/bash".as_ref(), "-c".as_ref(), script.as_ref()],
                &[],
            ),
        )
    };
    let native = run_shell(
        "native",
        format!("{p} 300 10 40> >(cat > native7.$PMI_RANK)"),
    )
    .wait_output(LONG);
    native.assert_success();
    let done = |t: &str| result_line(t, "inherited_mpi done");
    assert!(
        done(&native.stdout_text()).is_some(),
        "{}",
        native.describe()
    );

    let mut rng = Rng::seeded("inherited-mpi");
    let run = run_shell(
        "mpiexec mana_launch",
        format!(
            "{launch} --ckptdir {} {p} 300 10 40> >(cat > out7a.$PMI_RANK)",
            s.ckpt_dir.display()
        ),
    );
    run.wait_for_stdout("inherited_mpi ready", LONG);
    wait_registered(&s, ranks);
    checkpoint_and_kill(&s, &mut rng, Duration::from_millis(2000), run);
    let restored = run_shell(
        "mpiexec mana_restart",
        format!(
            "{restart} {} 40> >(cat > out7b.$PMI_RANK)",
            s.ckpt_dir.display()
        ),
    )
    .wait_output(LONG);
    restored.assert_success();
    assert_eq!(
        done(&restored.stdout_text()),
        done(&native.stdout_text()),
        "the restarted job must end as the native run: {}",
        restored.describe()
    );
    for rank in 0..ranks {
        let native7 = settled(&s.dir().join(format!("native7.{rank}")), last);
        let a = quiet(&s.dir().join(format!("out7a.{rank}")));
        let b = settled(&s.dir().join(format!("out7b.{rank}")), last);
        assert_continues(&native7, &[a, b]);
    }
}

/// The names (`comm`) of the threads of `pid`, sorted.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    names.sort();
    names
}

/// The session's job `program ARGS…`, launched (until it prints `ready`), checkpointed
/// `quiet` times without a kill (each generation handed to `check`), then `kills` times
/// checkpointed, killed and restarted (each restored pid handed to `restored`), every
/// checkpoint at a random instant up to `within` after the one before; the last restart
/// runs to its end. Returns the stdout pieces ([`assert_continues`]).
#[allow(clippy::too_many_arguments)]
fn checkpoint_chain(
    s: &Session,
    program: &Path,
    args: &[&str],
    ready: &str,
    quiet: usize,
    kills: usize,
    within: Duration,
    mut check: impl FnMut(&Path),
    mut restored: impl FnMut(&mut Proc),
) -> Vec<Vec<u8>> {
    let mut rng = Rng::seeded(ready);
    let mut run = s.launch(program, args);
    run.wait_for_stdout(ready, SHORT);
    s.wait_registered(run.pid());
    for _ in 0..quiet {
        std::thread::sleep(rng.duration_upto(within));
        let gen = s.checkpoint().unwrap_or_else(|e| panic!("checkpoint: {e}"));
        check(&gen);
    }
    let mut pieces = Vec::new();
    for g in 0..kills {
        std::thread::sleep(rng.duration_upto(within));
        s.checkpoint_and_kill()
            .unwrap_or_else(|e| panic!("checkpoint --kill {g}: {e}"));
        pieces.push(run.wait_output(SHORT).stdout);
        run = s.restart(&s.ckpt_dir);
        s.wait_registered(run.pid());
        restored(&mut run);
    }
    let out = run.wait_output(LONG);
    out.assert_success();
    pieces.push(out.stdout);
    pieces
}

/// The kinds of the descriptors of rank 0's image in `gen`.
fn saved_kinds(gen: &Path) -> Vec<mana_image::FileKind> {
    let image = mana_image::ImageReader::open(&rank0_image(gen)).unwrap();
    image.header.files.into_iter().map(|f| f.kind).collect()
}

#[test]
fn every_thread_keeps_its_name_and_the_process_shows_as_its_program() {
    let s = Session::start("thread-names");
    let program = compile("threads", Build::Pie, s.dir());
    let args = ["4000"];
    let native = native_run(&program, &args);
    let run = s.launch(&program, &args);
    run.wait_for_stdout("threads ready", SHORT);
    s.wait_registered(run.pid());
    let comm = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim()
            .to_string()
    };
    let before = thread_names(run.pid());
    let name = comm(run.pid());
    for w in 0..4 {
        assert!(before.contains(&format!("worker-{w}")), "{before:?}");
    }
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint: {e}"));
    let killed = run.wait_output(SHORT);

    let restored = s.restart(&s.ckpt_dir);
    s.wait_registered(restored.pid());
    let after = thread_names(restored.program_pid());
    assert_eq!(
        comm(restored.program_pid()),
        name,
        "/proc/PID/comm after the restart"
    );
    let app = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| !n.starts_with("mana-") && **n != name)
            .cloned()
            .collect()
    };
    assert_eq!(app(&after), app(&before), "the application threads' names");
    assert!(
        !after.iter().any(|n| n.contains("mana_restart")),
        "no thread is called mana_restart: {after:?}"
    );
    let out = restored.wait_output(LONG);
    out.assert_success();
    assert_continues(&native.stdout, &[killed.stdout, out.stdout]);
}

/// A program that takes the runtime's thread-stop signal (62) for itself: the runtime
/// moves to another one and says so in its log; the program's handler sees exactly its
/// own signals, and checkpoints at random instants, with kills and restarts, end as the
/// uninterrupted run.
#[test]
fn a_program_handling_the_runtimes_signal_gets_it_and_the_runtime_moves() {
    let s = Session::start("rtsig");
    let program = compile("rtsig", Build::Pie, s.dir());
    let args = ["400"];
    let native = native_run(&program, &args);
    let mut rng = Rng::seeded("rtsig");
    let mut cmd = s.command("mana_launch");
    cmd.env("MANA_LOG", "mana=info")
        .arg("--ckptdir")
        .arg(&s.ckpt_dir)
        .arg(&program)
        .args(args);
    let run = Proc::spawn("mana_launch rtsig", cmd);
    run.wait_for_stdout("rtsig ready", SHORT);
    s.wait_registered(run.pid());
    // A checkpoint without a kill, then one with.
    std::thread::sleep(rng.duration_upto(Duration::from_millis(1000)));
    s.checkpoint().unwrap_or_else(|e| panic!("checkpoint: {e}"));
    std::thread::sleep(rng.duration_upto(Duration::from_millis(1000)));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill: {e}"));
    let killed = run.wait_output(SHORT);
    assert!(
        killed.stderr_text().contains("uses signal"),
        "the log names the signal the runtime moved to: {}",
        killed.describe()
    );
    let restored = s.restart(&s.ckpt_dir);
    s.wait_registered(restored.pid());
    // The restored runtime still stops threads with the signal it moved to.
    s.checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint after the restart: {e}"));
    let out = restored.wait_output(LONG);
    out.assert_success();
    assert_continues(&native.stdout, &[killed.stdout, out.stdout]);
}

/// Pipes between threads of one process (item 2): a 256 KiB pipe with unread data at
/// every checkpoint, a packet-mode pipe whose packets are read after the restart, a thread
/// blocked in `read`. Checkpoints without a kill lose nothing (the content is read with
/// `tee`); a chain of three kills and restarts ends as the uninterrupted run.
#[test]
fn pipes_between_threads_keep_their_unread_data_capacity_and_packets() {
    let s = Session::start("pipes");
    let program = compile("pipe_threads", Build::Pie, s.dir());
    let args = ["4000"];
    let native = native_run(&program, &args);
    let check = |gen: &Path| {
        let pipes: Vec<mana_image::PipeState> = saved_kinds(gen)
            .into_iter()
            .filter_map(|k| match k {
                mana_image::FileKind::Pipe(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(pipes.len(), 6, "three pipes, both ends each: {pipes:?}");
        assert!(
            pipes.iter().any(|p| p.capacity == 256 << 10),
            "the raised capacity is recorded"
        );
    };
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "pipes ready",
        2,
        3,
        Duration::from_millis(500),
        check,
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

#[test]
fn checkpoints_do_not_cut_timed_waits_short() {
    let s = Session::start("timed");
    let program = compile("timed_waits", Build::Pie, s.dir());
    let args = ["3"];
    let native = native_run(&program, &args);
    assert!(
        !native.stdout_text().contains("EARLY"),
        "{}",
        native.describe()
    );
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "timed ready",
        4,
        1,
        Duration::from_millis(1800),
        |_| {},
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

#[test]
fn sixty_four_threads_with_mutex_condvar_barrier_and_blocked_calls_restart() {
    let s = Session::start("many-threads");
    let program = compile("many_threads", Build::Pie, s.dir());
    let args = ["600"];
    let native = native_run(&program, &args);
    // The workers leave the barrier of their last round together: all 64 are there by
    // name after a restart, or (at the very end) none.
    let expected: Vec<String> = (0..64).map(|i| format!("t-{i:02}")).collect();
    let named = |run: &mut Proc| {
        let names = thread_names(run.program_pid());
        let workers: Vec<&String> = names.iter().filter(|n| n.starts_with("t-")).collect();
        assert!(
            workers.is_empty()
                || workers
                    .iter()
                    .map(|n| n.as_str())
                    .eq(expected.iter().map(String::as_str)),
            "the 64 workers keep their names: {names:?}"
        );
    };
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "many ready",
        2,
        3,
        Duration::from_millis(800),
        |_| {},
        named,
    );
    assert_continues(&native.stdout, &pieces);
}

#[test]
fn cwd_umask_limits_personality_and_affinity_come_back() {
    let s = Session::start("resources");
    let work = s.dir().join("work");
    fs::create_dir(&work).unwrap();
    let program = compile("resources", Build::Pie, s.dir());
    let args = [work.to_str().unwrap(), "60"];
    let native = native_run(&program, &args);
    let mut rng = Rng::seeded("resources");
    let mut cmd = s.command("mana_launch");
    cmd.env("MANA_LOG", "mana=info")
        .arg("--ckptdir")
        .arg(&s.ckpt_dir)
        .arg(&program)
        .args(args);
    let run = Proc::spawn("mana_launch resources", cmd);
    run.wait_for_stdout("resources ready", SHORT);
    s.wait_registered(run.pid());
    std::thread::sleep(rng.duration_upto(Duration::from_millis(1500)));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill: {e}"));
    let killed = run.wait_output(SHORT);
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_continues(&native.stdout, &[killed.stdout.clone(), restored.stdout]);

    // A node whose hard open-files limit (500) is below the program's soft one (777).
    let strict = Proc::spawn(
        "mana_restart under ulimit -n 500",
        s.shell("ulimit -n 500 && exec mana_restart ckpt"),
    )
    .wait_output(LONG);
    strict.assert_success();
    let text = strict.stdout_text();
    let steps: Vec<&str> = text.lines().filter(|l| l.starts_with("step ")).collect();
    assert!(!steps.is_empty(), "{}", strict.describe());
    for l in &steps {
        assert!(
            l.contains(" nofile=500 ") && l.contains(" persona=0x40000 "),
            "{l}"
        );
    }
    let log = strict.stderr_text();
    assert!(
        log.lines()
            .any(|l| l.contains("soft resource limit is lower") && l.contains("nofile")),
        "the log names the lowered limit: {log}"
    );

    // A node whose data limit is below what the image holds: refused in one line.
    let small = Proc::spawn(
        "mana_restart under ulimit -Sd 2000",
        s.shell("ulimit -Sd 2000 && exec mana_restart ckpt"),
    )
    .wait_output(LONG);
    let line = refusal_line(&small, "a restart under a small data limit");
    assert_mentions_any(&line, &["data limit"], "RLIMIT_DATA");
}

/// eventfd, timerfd and signalfd (item 2): a semaphore-mode eventfd with a backlog in
/// its counter, a periodic timerfd, a signalfd taking a blocked SIGUSR1 — checkpointed
/// without a kill, then killed and restarted twice: the counts and the timer go on.
#[test]
fn eventfd_timerfd_and_signalfd_restart() {
    let s = Session::start("counters");
    let program = compile("counters", Build::Pie, s.dir());
    let args = ["300"];
    let native = native_run(&program, &args);
    let check = |gen: &Path| {
        let kinds = saved_kinds(gen);
        assert!(
            kinds.iter().any(|k| matches!(
                k,
                mana_image::FileKind::EventFd {
                    semaphore: true,
                    ..
                }
            )) && kinds.iter().any(|k| matches!(
                k,
                mana_image::FileKind::TimerFd {
                    interval_ns: 20_000_000,
                    ..
                }
            )) && kinds
                .iter()
                .any(|k| matches!(k, mana_image::FileKind::SignalFd { mask: 0x200 })),
            "{kinds:?}"
        );
    };
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "counters ready",
        1,
        2,
        Duration::from_millis(800),
        check,
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

#[test]
fn a_socket_pair_between_threads_keeps_its_bytes_in_flight() {
    let s = Session::start("sockpair");
    let program = compile("sock_threads", Build::Pie, s.dir());
    let args = ["4000"];
    let native = native_run(&program, &args);
    let check = |gen: &Path| {
        let ends = saved_kinds(gen)
            .iter()
            .filter(|k| matches!(k, mana_image::FileKind::UnixPair(_)))
            .count();
        assert_eq!(ends, 2, "both ends of the pair are saved");
    };
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "sockets ready",
        2,
        3,
        Duration::from_millis(1000),
        check,
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

/// The runtime's own descriptors (coordinator connection, lease, image files) live in its
/// checkpoint thread's descriptor table, not the program's (which keeps the kernel's
/// single-user fast paths for its `read`/`write`): a program that closes every
/// descriptor above stdio — at start and every 20 steps, as daemons and process managers
/// do — is still checkpointed, without and with kills, and its images hold only its own
/// descriptors.
#[test]
fn a_program_closing_every_descriptor_above_stdio_is_still_checkpointed() {
    let s = Session::start("closes-fds");
    let program = compile("closes_fds", Build::Pie, s.dir());
    let args = ["300"];
    let native = native_run(&program, &args);
    let check = |gen: &Path| {
        let kinds = saved_kinds(gen);
        assert!(
            kinds.iter().all(|k| matches!(
                k,
                mana_image::FileKind::Stdio | mana_image::FileKind::Pipe(_)
            )),
            "only the program's stdio and pipe in its image: {kinds:?}"
        );
    };
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "closes_fds ready",
        2,
        3,
        Duration::from_millis(1200),
        check,
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

/// An MPI program started without a launcher (a world of one): its checkpoint thread
/// starts with a table of its own and gives way, at the first MPI call, to one sharing
/// the program's (the drain uses MPI's descriptors). Checkpointed right after `MPI_Init`
/// (the moment of the handover) and later, killed and restarted twice (a new lower half
/// each time): the same output as the uninterrupted run.
#[test]
fn an_mpi_program_without_a_launcher_is_checkpointed_after_its_thread_hands_over() {
    let s = Session::start("singleton");
    let program = compile_mpi("singleton", s.dir());
    let args = ["200"];
    let native = native_run(&program, &args);
    native.assert_success();
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "singleton ready",
        1,
        2,
        Duration::from_millis(600),
        |gen| {
            let image = mana_image::ImageReader::open(&rank0_image(gen)).unwrap();
            assert!(image.header.mpi.is_some(), "saved as an MPI process");
        },
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

/// Item 5 in a program started without a launcher (tests/mpi/singleton_kids.c: a child
/// forked before the first MPI call, answering over pipes). A checkpoint before
/// `MPI_Init` makes the socket children join in the checkpoint thread's own descriptor
/// table; at `MPI_Init` that thread gives way to one sharing the program's, and closes
/// those sockets as it goes (before: the child stayed joined to a socket the new thread
/// could not use, and every later checkpoint failed naming it). Checkpoints before and
/// after `MPI_Init` without a kill, then one with a kill and a restart: each succeeds and
/// the output is the uninterrupted run's.
#[test]
fn a_singleton_mpi_programs_child_stays_checkpointable_across_the_handover() {
    let s = Session::start("singleton-kids");
    let program = compile_mpi("singleton_kids", s.dir());
    let args = ["10", "20", "150"];
    let native = native_run(&program, &args);
    native.assert_success();
    let run = s.launch(&program, &args);
    run.wait_for_stdout("kids ready", SHORT);
    s.wait_registered(run.pid());
    s.checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint before MPI_Init: {e}"));
    run.wait_for_stdout("mpi ready", LONG);
    std::thread::sleep(Duration::from_millis(300));
    s.checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint after the handover: {e}"));
    let mut rng = Rng::seeded("singleton-kids");
    std::thread::sleep(rng.duration_upto(Duration::from_millis(1000)));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill: {e}"));
    let first = run.wait_output(LONG).stdout;
    let last = s.restart(&s.ckpt_dir).wait_output(LONG);
    last.assert_success();
    assert_continues(&native.stdout, &[first, last.stdout]);
}

/// POSIX timers of every kind (`SIGEV_SIGNAL` with a handler, `SIGEV_THREAD`, and
/// `SIGEV_THREAD_ID` to a worker taking its signal with `sigwaitinfo`) and `setitimer`
/// go on after checkpoints with and without a kill: a timer that did not come back, or
/// under another id, or notifying the wrong thread, hangs the program; each expiry's
/// `sigval` is checked. Then, every timer stopped, `sleep(5)` lasts 5 s although two
/// checkpoints (one with a kill and a restart) land in it.
#[test]
fn posix_timers_interval_timers_and_a_long_sleep_survive_checkpoints() {
    let s = Session::start("posix-timers");
    let program = compile("posix_timers", Build::Pie, s.dir());
    let args = ["16"];
    let native = native_run(&program, &args);
    native.assert_success();
    let mut rng = Rng::seeded("posix-timers");
    let run = s.launch(&program, &args);
    run.wait_for_stdout("timers ready", SHORT);
    s.wait_registered(run.pid());
    std::thread::sleep(rng.duration_upto(Duration::from_millis(1200)));
    s.checkpoint().unwrap_or_else(|e| panic!("checkpoint: {e}"));
    std::thread::sleep(rng.duration_upto(Duration::from_millis(1200)));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill: {e}"));
    let first = run.wait_output(SHORT).stdout;
    let run = s.restart(&s.ckpt_dir);
    s.wait_registered(run.pid());
    // Into the sleep: a checkpoint without a kill, then one with a kill and a restart.
    run.wait_for_stdout("round 16 ok", LONG);
    std::thread::sleep(Duration::from_millis(800));
    s.checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint in the sleep: {e}"));
    std::thread::sleep(Duration::from_millis(800));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill in the sleep: {e}"));
    let second = run.wait_output(SHORT).stdout;
    let t = Instant::now();
    let last = s.restart(&s.ckpt_dir).wait_output(LONG);
    last.assert_success();
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "the restored sleep went on for the seconds that were left ({:?})",
        t.elapsed()
    );
    assert_continues(&native.stdout, &[first, second, last.stdout]);
}

/// The POSIX-timer program as the two ranks of an MPI job under `mpiexec.mpich`
/// (`timers_mpi`: every rank runs the timers, rounds joined by an `MPI_Allreduce`):
/// checkpointed without and with a kill at random instants, restarted by
/// `mpiexec.mpich mana_restart` — rank 0's output equals the uninterrupted job's.
#[test]
fn posix_timers_in_mpi_ranks_survive_checkpoints() {
    mpi_ranks_restart_like_native("timers_mpi", &["12"], "timers ready", 1000);
}

/// `program` (tests/mpi) as 2 ranks under `mpiexec.mpich`: a checkpoint without a kill and
/// one with a kill at random instants (each within `within_ms` of the last), then
/// `mpiexec.mpich mana_restart`: rank 0's output equals the native job's.
fn mpi_ranks_restart_like_native(program: &str, args: &[&str], ready: &str, within_ms: u64) {
    let s = Session::start(&program.replace('_', "-"));
    let exe = compile_mpi(program, s.dir());
    let native = mana_tests::mpi::native(&s, 2, &exe, args);
    let mut rng = Rng::seeded(program);
    let run = mana_tests::mpi::launch(&s, 2, &exe, args, &[]);
    run.wait_for_stdout(ready, SHORT);
    mana_tests::mpi::wait_registered(&s, 2);
    let within = Duration::from_millis(within_ms);
    std::thread::sleep(rng.duration_upto(within));
    s.checkpoint().unwrap_or_else(|e| panic!("checkpoint: {e}"));
    std::thread::sleep(rng.duration_upto(within));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill: {e}"));
    // Hydra's report about the ranks the kill ended is the launcher's, not the program's.
    let first = mana_tests::mpi::without_launcher_report(&run.wait_output(SHORT).stdout).to_vec();
    let last = mana_tests::mpi::restart(&s, 2, &[]).wait_output(LONG);
    last.assert_success();
    assert_continues(native.as_bytes(), &[first, last.stdout]);
}

/// A loopback TCP connection between two threads and the listening socket it came from:
/// checkpointed twice without a kill (each socket saved once, the bytes in flight on one
/// descriptor of each end) and three times with a kill and a restart — the connection
/// is made anew by a rendezvous with its bytes in flight and its shutdown, the listener
/// listens again on its port (the program's client connects to it a second time at the
/// end): the hashes of the stream, the acknowledgements and the second connection equal
/// the uninterrupted run's.
#[test]
fn a_tcp_connection_between_threads_and_its_listener_come_back() {
    let s = Session::start("tcp-threads");
    let program = compile("tcp_threads", Build::Pie, s.dir());
    let args = ["3000"];
    let native = native_run(&program, &args);
    native.assert_success();
    let check = |gen: &Path| {
        let kinds = saved_kinds(gen);
        let listening = kinds
            .iter()
            .filter(|k| matches!(k, mana_image::FileKind::Tcp(t) if t.listening))
            .count();
        let connected = kinds
            .iter()
            .filter(|k| matches!(k, mana_image::FileKind::Tcp(t) if t.peer != 0))
            .count();
        assert_eq!(listening, 1, "the listening socket is saved: {kinds:?}");
        assert!(
            connected == 2 || connected == 0,
            "both ends of the connection, or none (between the two connections): {kinds:?}"
        );
    };
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "tcp ready",
        2,
        3,
        Duration::from_millis(900),
        check,
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

/// A TCP connection to a server outside the process: the checkpoint succeeds (the
/// runtime log names the connection), and after a restart the program's next read and
/// write on it fail with "Connection reset by peer", as after the peer's crash; the rest
/// of the program is untouched.
#[test]
fn a_tcp_connection_to_the_outside_comes_back_reset_by_its_peer() {
    let s = Session::start("tcp-outside");
    let program = compile("tcp_outside", Build::Pie, s.dir());
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    // Holds every connection it accepts, never writes.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in server.incoming() {
            held.push(c);
        }
    });
    let args = [port.as_str(), "30"];
    let native = native_run(&program, &args);
    native.assert_success();
    assert!(native.stdout_text().contains("read: would block"));
    let run = s.launch(&program, &args);
    run.wait_for_stdout("outside ready", SHORT);
    s.wait_registered(run.pid());
    std::thread::sleep(Duration::from_millis(700));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint of a process with an outside connection: {e}"));
    let killed = run.wait_output(SHORT).stdout;
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    let expected = native
        .stdout_text()
        .replace("read: would block", "read: Connection reset by peer")
        .replace("write: sent", "write: Broken pipe");
    assert_continues(expected.as_bytes(), &[killed, restored.stdout]);
    let log =
        fs::read_to_string(format!("{}.runtime.log", s.status_file.display())).unwrap_or_default();
    assert!(
        log.contains("is a connection to something outside the process"),
        "the checkpoint names the connection in the runtime log: {log}"
    );
}

/// Datagram sockets: UDP between two sockets of the process (bound to a port the kernel
/// picked, and connected to it) and an unbound Unix datagram socket connected to a
/// server's path outside the process (as libc's `syslog` keeps one to `/dev/log`): after
/// a checkpoint without a kill and two with kills and restarts the program's output
/// equals the uninterrupted run's (it sends a lost datagram again, as UDP programs do), and
/// the outside server still gets its messages from the restored process.
#[test]
fn udp_and_unix_datagram_sockets_come_back() {
    let s = Session::start("dgram");
    let program = compile("dgram", Build::Pie, s.dir());
    let path = s.dir().join("log.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok(n) = server.recv(&mut buf) {
            got2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let path = path.display().to_string();
    // 20 ms a step: longer than the chain's random pauses (three of up to 1.2 s) and the
    // restarts (found by CI: with 150 steps a seed of long pauses let the program end
    // before its last checkpoint).
    let args = [path.as_str(), "400"];
    let native = native_run(&program, &args);
    native.assert_success();
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "dgram ready",
        1,
        2,
        Duration::from_millis(1200),
        |gen| {
            let n = saved_kinds(gen)
                .iter()
                .filter(|k| matches!(k, mana_image::FileKind::Dgram(_)))
                .count();
            assert_eq!(n, 3, "three datagram sockets saved");
        },
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
    let last = got
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.as_str() == "log 149")
        .count();
    assert_eq!(
        last, 2,
        "the outside server got the last message of both runs"
    );
}

/// The pids a process has in the namespaces it is in, outermost first (`NSpid` of
/// /proc/PID/status).
fn ns_pids(pid: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Item 3, as an ordinary user (root may set ids where users cannot): `getpid`,
/// `getppid`, `gettid`, `syscall(SYS_gettid)` of the main thread and a worker stay what
/// they were at start; `raise`, `kill(getpid())`, `pthread_kill` and `tgkill` on the saved
/// ids reach their handlers; a forked child's `abort` ends it by SIGABRT; error-checking,
/// recursive and robust mutexes *held across* the checkpoints still know their owner
/// (`EDEADLK`) and unlock. One checkpoint without a kill and a chain of three with a kill
/// and a restart at random instants: output equal to the uninterrupted run's. After each
/// restart the program runs in a pid namespace of its own with its saved pid (NSpid).
#[test]
fn ids_signals_and_owned_mutexes_survive_restarts_as_a_user() {
    let s = Session::start_as("ids", user("mana-victim"));
    let program = compile("ids", Build::Pie, s.dir());
    let args = ["30", "150"];
    let native = native_run(&program, &args);
    native.assert_success();
    let ckpt = mana_image::CkptDir::new(&s.ckpt_dir);
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "ids ready",
        1,
        3,
        Duration::from_millis(900),
        |_| {},
        |run| {
            let gen = ckpt.gen_dir(ckpt.require_latest().unwrap());
            let saved = mana_image::ImageReader::open(&rank0_image(&gen))
                .unwrap()
                .header
                .pid as u32;
            let inner = ns_pids(run.program_pid());
            assert!(
                inner.len() == 2 && inner[1] == saved,
                "the restored process's pids (node, namespace): {inner:?}; saved pid {saved}"
            );
        },
    );
    assert_continues(&native.stdout, &pieces);
}

/// `ids` as the two ranks of an MPI job under `mpiexec.mpich` (`ids_mpi`): checkpointed
/// without and with a kill at random instants, restarted by `mpiexec.mpich mana_restart`:
/// rank 0's output (the problems of both ranks summed each round) equals the native job's.
#[test]
fn ids_in_mpi_ranks_survive_a_restart() {
    mpi_ranks_restart_like_native("ids_mpi", &["16", "150"], "ids ready", 800);
}

/// Item 4, pending signals and alternate stacks: SIGUSR1 and two SIGRTMIN+1 (values 7, 8)
/// pending on the process, SIGUSR2 (value 42) on a worker with an alternate signal stack,
/// all blocked over a wait where one checkpoint without a kill and a chain of three with a
/// kill and a restart land at random instants: afterwards each is still pending, arrives
/// once unblocked (the real-time ones twice, in order, with their values; SIGUSR2 on the
/// alternate stack, which is still set): output equal to the uninterrupted run's.
#[test]
fn pending_signals_and_alternate_stacks_survive_restarts() {
    let s = Session::start("pending-signals");
    let program = compile("pending_signals", Build::Pie, s.dir());
    let args = ["4500"];
    let native = native_run(&program, &args);
    native.assert_success();
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "pending ready",
        1,
        3,
        Duration::from_millis(700),
        |_| {},
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

/// Item 2, files without a name: a sealed memfd mapped shared, a `tmpfile()` and a file
/// unlinked after opening (a Fortran scratch file), with a read-only second descriptor.
/// One checkpoint without a kill and a chain of three with a kill and a restart at random
/// instants: each file comes back with its contents (sums of every round equal), the
/// memfd with its seals and its mapping sharing pages with its descriptor again, each
/// descriptor with its own offset: output equal to the uninterrupted run's. The images
/// hold each file once.
#[test]
fn memfd_and_deleted_files_come_back_with_their_contents() {
    let s = Session::start("unlinked");
    let program = compile("unlinked", Build::Pie, s.dir());
    let args = ["40", "60"];
    let native = native_run(&program, &args);
    native.assert_success();
    let check = |gen: &Path| {
        let kinds = saved_kinds(gen);
        let holders = kinds
            .iter()
            .filter(|k| matches!(k, mana_image::FileKind::Unlinked(u) if u.holds_data))
            .count();
        let shared_maps = kinds
            .iter()
            .filter_map(|k| match k {
                mana_image::FileKind::Unlinked(u) if u.memfd => Some(u.maps.len()),
                _ => None,
            })
            .sum::<usize>();
        assert_eq!(holders, 3, "{kinds:?}");
        assert_eq!(shared_maps, 1, "{kinds:?}");
    };
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "unlinked ready",
        1,
        3,
        Duration::from_millis(500),
        check,
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

/// Listening Unix sockets and a Unix connection to another process: a stream listener on
/// a path in the session directory and a seqpacket listener on an abstract name, each
/// connected to and answered every round by two threads of the program; and a connection
/// to a server of the test (another process) that never writes. One checkpoint without a
/// kill and a chain of three with a kill and a restart: both listeners listen again on
/// their address (the killed process's socket file taken over), every round answered;
/// the outside connection reads end-of-file and fails to write with `EPIPE` after the
/// restart, as after its peer's exit. Before, the checkpoint failed naming the listener.
#[test]
fn unix_listeners_listen_again_and_an_outside_connection_comes_back_closed() {
    let s = Session::start("unix-sockets");
    let program = compile("unix_sockets", Build::Pie, s.dir());
    let outside = s.dir().join("outside.sock");
    let server = std::os::unix::net::UnixListener::bind(&outside).unwrap();
    // Holds every connection it accepts, never writes.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in server.incoming() {
            held.push(c);
        }
    });
    let dir = s.dir().to_str().unwrap().to_string();
    let args = [dir.as_str(), outside.to_str().unwrap(), "30"];
    let native = native_run(&program, &args);
    native.assert_success();
    assert!(native.stdout_text().contains("read: would block"));
    let check = |gen: &Path| {
        let kinds = saved_kinds(gen);
        let listeners = kinds
            .iter()
            .filter(|k| matches!(k, mana_image::FileKind::UnixListener(_)))
            .count();
        assert!(listeners == 2, "{kinds:?}");
    };
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "unix ready",
        1,
        3,
        Duration::from_millis(700),
        check,
        |_| {},
    );
    let expected = native
        .stdout_text()
        .replace("read: would block", "read: end of file")
        .replace("write: sent", "write: Broken pipe");
    assert_continues(expected.as_bytes(), &pieces);
}

/// The descendants a MANIFEST entry lists (`members`) for rank 0 of generation `gen`.
fn members_of(gen: &Path) -> Vec<mana_image::MemberEntry> {
    let m = mana_image::Manifest::load(&gen.join("MANIFEST")).unwrap();
    m.images[0].members.clone()
}

/// Item 5, a process tree: a parent and two children connected by pipes — child 1
/// answers each number with a running sum, child 2 blocks in a read for the whole run —
/// and a third child that ended at once and is waited for only at the end (a zombie
/// all along). One checkpoint without a kill (the MANIFEST lists both children, each
/// with its image; the parent's image holds the zombie) and a chain of three with a
/// kill and a restart at random instants: the children come back as the parent's
/// children with their pids, the pipes between them with their unread bytes, child 2
/// still blocked, the zombie's exit code for waitpid — the uninterrupted run's output.
#[test]
fn a_parent_and_two_children_connected_by_pipes_restart_as_a_tree() {
    let s = Session::start("children");
    let program = compile("children", Build::Pie, s.dir());
    let args = ["50", "150"];
    let native = native_run(&program, &args);
    let pieces = checkpoint_chain(
        &s,
        &program,
        &args,
        "children ready",
        1,
        3,
        Duration::from_millis(800),
        |gen| {
            let members = members_of(gen);
            assert_eq!(members.len(), 2, "{members:?}");
            for m in &members {
                assert!(gen.join(&m.file).is_file(), "{m:?}");
            }
            let root = mana_image::ImageReader::open(&rank0_image(gen)).unwrap();
            assert!(members.iter().all(|m| m.ppid == root.header.pid));
            assert_eq!(root.header.zombies.len(), 1, "{:?}", root.header.zombies);
            assert_eq!(root.header.zombies[0].status >> 8, 42);
        },
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}

/// Items 2 and 5, a Unix socket pair between a parent and its child: each round two
/// numbers go to the child and two answers come back, with a wait between (bytes in
/// flight one way or the other at the checkpoints), then a shutdown the child reads as
/// end-of-file. One checkpoint without a kill and a chain of three with a kill and a
/// restart at random instants: the pair comes back connected between the restored
/// parent and child with its bytes in flight — the uninterrupted run's output (every
/// answer, the child's count as its exit code).
#[test]
fn a_socket_pair_between_parent_and_child_comes_back_connected() {
    chain_restarts_like_native("pair-child", "pair_child", &["50", "150"], "pair ready");
}

/// Items 2 and 5, a loopback TCP connection between a parent and its child (the parent
/// listened, the child connected; both closed the listener): the exchange of
/// `pair_child` over it. One checkpoint without a kill and a chain of three with a kill
/// and a restart at random instants: the connection comes back between the restored
/// parent and child (a rendezvous by the root's restarter) with its bytes in flight,
/// no warning about a connection to the outside — the uninterrupted run's output.
#[test]
fn a_tcp_connection_between_parent_and_child_comes_back_connected() {
    chain_restarts_like_native("tcp-child", "tcp_child", &["50", "150"], "tcp ready");
}

/// Items 2 and 5, a pre-forking server (tests/c/prefork.c): two workers accept on one
/// listening socket the parent keeps too (three processes hold it), and their sibling,
/// the client, connects each round, sends a number after the greeting and reads the
/// answer after a wait (bytes in flight between two siblings at the checkpoints). One
/// checkpoint without a kill and a chain of three with a kill and a restart at random
/// instants: the listening socket listens again once for all three, the connection
/// between the siblings comes back with its bytes — the uninterrupted run's output
/// (no answer lost; a connection still in the accept queue comes back reset, and the
/// client connects again before it sent anything).
#[test]
fn a_pre_forking_server_and_its_sibling_client_survive_restarts() {
    chain_restarts_like_native("prefork", "prefork", &["40", "150"], "prefork ready");
}

/// The pre-forking server without `SO_REUSEADDR` on its listening socket: its workers
/// close first, so the killed process's connections hold the port in TIME_WAIT, which
/// keeps a new listener off it (natively too). Checkpointed with a kill at a random
/// instant and restarted: the restart waits for the TIME_WAIT to end (logged, up to a
/// minute; before, it failed: "cannot listen on port N again: Address already in use")
/// and the output is the uninterrupted run's.
#[test]
fn a_server_without_so_reuseaddr_listens_again_after_time_wait() {
    let s = Session::start("prefork-noreuse");
    let program = compile("prefork", Build::Pie, s.dir());
    let args = ["30", "150", "noreuse"];
    let native = native_run(&program, &args);
    native.assert_success();
    let run = s.launch(&program, &args);
    run.wait_for_stdout("prefork ready", SHORT);
    s.wait_registered(run.pid());
    let mut rng = Rng::seeded("prefork-noreuse");
    std::thread::sleep(
        Duration::from_millis(1000) + rng.duration_upto(Duration::from_millis(1500)),
    );
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill: {e}"));
    let first = run.wait_output(SHORT).stdout;
    let last = s.restart(&s.ckpt_dir).wait_output(LONG);
    last.assert_success();
    assert_continues(&native.stdout, &[first, last.stdout]);
}

/// The same pre-forking server on a Unix socket listening on an abstract name: the
/// listening socket listens again once for its three holders, the connection between
/// the siblings comes back as a connected pair with its bytes.
#[test]
fn a_pre_forking_unix_server_and_its_sibling_client_survive_restarts() {
    chain_restarts_like_native(
        "prefork-unix",
        "prefork",
        &["40", "150", "unix"],
        "prefork ready",
    );
}

/// Item 5, fork safety (tests/c/fork_storm.c): 150 children forked one after another
/// while another thread creates and deletes SIGEV_THREAD timers all along (a lock
/// of the runtime's, which a child's checkpoint takes), each child living 40 ms. One checkpoint
/// without a kill and a chain of three with a kill and a restart at random instants:
/// every checkpoint finds its children able to stop and write (none inherited a lock held
/// for ever), and the output is the uninterrupted run's (every child's exit code; the
/// churning thread's timers, with ids in the hundred thousands, come back with them).
#[test]
fn forks_while_other_threads_hold_runtime_locks_stay_checkpointable() {
    chain_restarts_like_native("fork-storm", "fork_storm", &["150", "40"], "storm ready");
}

/// Item 2, a `SOCK_SEQPACKET` socket pair between two threads (tests/c/seqpacket.c: 1,000
/// messages of 1 to 3,000 bytes, the reader slower than the writer, so several messages
/// wait at the checkpoints). One checkpoint without a kill (the messages are read out
/// and sent again through the other end, in order) and a chain of three with a kill and
/// a restart at random instants: every message arrives whole and in order — the
/// uninterrupted run's output (every 50th length, the hash of all).
#[test]
fn a_seqpacket_pair_keeps_its_messages_across_restarts() {
    chain_restarts_like_native("seqpacket", "seqpacket", &["1000", "5"], "seqpacket ready");
}

/// Items 2 and 5, a child whose stdin and stdout are a Unix socket (tests/c/sock_stdio.c:
/// the parent execs itself as the child with its end of a socket pair as descriptors 0
/// and 1, as inetd-style helpers run). One checkpoint without a kill and a chain of three
/// with a kill and a restart at random instants: the child's standard streams come back
/// as the same connected pair with its bytes in flight — the uninterrupted run's output
/// (before, the restart refused the child's image: a socket at descriptor 0).
#[test]
fn a_socket_as_a_childs_stdio_comes_back_connected() {
    chain_restarts_like_native("sock-stdio", "sock_stdio", &["40", "150"], "stdio ready");
}

/// Items 2 and 5, memory a parent and its child share (`MAP_SHARED|MAP_ANONYMOUS` made
/// before the `fork`): each round the parent writes a number there, the child answers
/// next to it (pipes only poke). One checkpoint without a kill and a chain of three with
/// a kill and a restart at random instants: the memory comes back shared between the
/// restored parent and child (one memfd both map) — the uninterrupted run's output; two
/// private copies would show the child stale numbers.
#[test]
fn memory_shared_between_parent_and_child_comes_back_shared() {
    chain_restarts_like_native("shm-child", "shm_child", &["50", "150"], "shm ready");
}

/// Items 2 and 5, a `SysV` segment a parent and its child each attach after the `fork`,
/// at different addresses (tests/c/sysv_apart.c): the parent writes, the child answers
/// beside it. One checkpoint without a kill and a chain of three with a kill and a
/// restart at random instants: the segment comes back as one object both map (matched
/// by its inode, not its address) — the uninterrupted run's output.
#[test]
fn a_sysv_segment_attached_apart_comes_back_shared() {
    chain_restarts_like_native("sysv-apart", "sysv_apart", &["40", "150"], "sysv ready");
}

/// Item 5, `popen` and `system`: each round writes lines to `popen("sort")` and waits
/// with them unread or half read (the shell and sort are descendants, checkpointed and
/// restored with the pipe between them and the program), then `pclose` (sort prints
/// them sorted) and `system("exit 3")`. One checkpoint without a kill and a chain of
/// three with a kill and a restart at random instants: the uninterrupted run's output.
#[test]
fn popen_sort_in_a_loop_and_system_survive_restarts() {
    chain_restarts_like_native(
        "popen-sort",
        "popen_sort",
        &["24", "250", "20"],
        "popen ready",
    );
}

/// Item 5, a descendant without the runtime (statically linked: LD_PRELOAD cannot reach
/// it): the checkpoint fails with one line naming it, and the program runs on to the
/// uninterrupted run's output (nothing lost).
#[test]
fn a_child_without_the_runtime_fails_the_checkpoint_naming_it() {
    let s = Session::start("static-child");
    let program = compile("static_child", Build::Pie, s.dir());
    let child = compile("static_child", Build::Static, s.dir());
    let child = child.to_str().unwrap();
    let args = ["40", child];
    let native = native_run(&program, &args);
    let run = s.launch(&program, &args);
    run.wait_for_stdout("static child ready", SHORT);
    s.wait_registered(run.pid());
    let out = s.checkpoint_output();
    let err = out.stderr_text();
    assert!(!out.status.success(), "{}", out.describe());
    let name = Path::new(child).file_name().unwrap().to_str().unwrap();
    let line = err
        .lines()
        .find(|l| l.contains("runs without the runtime"))
        .unwrap_or_else(|| panic!("{}", out.describe()));
    assert!(line.contains(&name[..name.len().min(15)]), "{line}");
    let done = run.wait_output(LONG);
    done.assert_success();
    assert_eq!(done.stdout_text(), native.stdout_text());
}

/// Items 2 and 5, a TCP connection between a parent and its child whose receive window
/// is full (tests/c/full_window.c: the parent has written all it could, the child reads
/// nothing for 6 s): the bytes in the parent's send queue are in no image, so the
/// checkpoint fails in one line naming the descriptor, and the program runs on; once the
/// child has read everything, a checkpoint succeeds; the output is the uninterrupted
/// run's.
#[test]
fn bytes_stuck_between_processes_of_the_tree_fail_the_checkpoint_by_name() {
    let s = Session::start("full-window");
    let program = compile("full_window", Build::Pie, s.dir());
    let args = ["6000", "2000"];
    let native = native_run(&program, &args);
    let run = s.launch(&program, &args);
    run.wait_for_stdout("window full", SHORT);
    s.wait_registered(run.pid());
    let out = s.checkpoint_output();
    assert!(!out.status.success(), "{}", out.describe());
    let err = out.stderr_text();
    assert!(
        err.contains("(TCP connection to another process of the tree)")
            && err.contains("wait in its queue"),
        "{}",
        out.describe()
    );
    run.wait_for_stdout("drained", LONG);
    s.checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint after the drain: {e}"));
    let done = run.wait_output(LONG);
    done.assert_success();
    assert_eq!(done.stdout_text(), native.stdout_text());
}

/// Item 5 in MPI ranks: `children_mpi` (tests/c/children.c as 2 ranks under
/// `mpiexec.mpich`, each forking its children after `MPI_Init`, the sums added over the
/// ranks): checkpointed without and with a kill at random instants, restarted by
/// `mpiexec.mpich mana_restart` — each rank's tree comes back (the children's images
/// without the copy of the lower half they got from `fork`); rank 0's output equals the
/// uninterrupted job's.
#[test]
fn children_of_mpi_ranks_restart_with_them() {
    mpi_ranks_restart_like_native("children_mpi", &["40", "150"], "children ready", 1500);
}

/// Item 5 in MPI ranks: `popen_mpi` (tests/c/popen_sort.c as 2 ranks: `popen("sort")` and
/// `system()` in every rank; the sort's stdin a pipe from its rank, its stdout the job's):
/// checkpointed without and with a kill at random instants, restarted by
/// `mpiexec.mpich mana_restart`: rank 0's output equals the uninterrupted job's.
#[test]
fn popen_and_system_in_mpi_ranks_survive_restarts() {
    mpi_ranks_restart_like_native("popen_mpi", &["24", "250", "20"], "popen ready", 1500);
}

/// Item 2, a TCP connection between two ranks (`tcp_ranks`, tests/mpi: rank 0 listens on
/// the loopback, rank 1 connects; each round two numbers out and two answers back with a
/// wait between — bytes in flight either way at the checkpoints — and an `MPI_Allreduce`
/// every 5 rounds; a shutdown read as end-of-file at the end): checkpointed without and
/// with a kill at random instants, restarted by `mpiexec.mpich mana_restart`: the
/// connection comes back connected between the restored ranks (exchanged over the new
/// lower half) with its bytes — rank 0's output equals the uninterrupted job's.
#[test]
fn a_tcp_connection_between_mpi_ranks_comes_back_connected() {
    mpi_ranks_restart_like_native("tcp_ranks", &["40", "150", "5"], "tcp ranks ready", 2500);
}

/// The same connection restarted as if on two hosts: rank 1's restarter runs in a UTS
/// namespace of its own with another host name (`unshare -u`), so the exchange treats the
/// ranks as on two nodes and rank 1 connects to rank 0's listener over the node's own
/// address, not the loopback (the path a restart on two nodes takes). Checkpointed at a
/// random instant with a kill: the connection comes back connected with its bytes —
/// rank 0's output equals the uninterrupted job's, and rank 1's log names the address.
#[test]
fn a_tcp_connection_between_mpi_ranks_on_two_hosts_comes_back_connected() {
    let s = Session::start("tcp-ranks-hosts");
    let exe = compile_mpi("tcp_ranks", s.dir());
    let args = ["30", "150", "5"];
    let native = mana_tests::mpi::native(&s, 2, &exe, &args);
    let run = mana_tests::mpi::launch(&s, 2, &exe, &args, &[("MANA_LOG", "mana=debug")]);
    run.wait_for_stdout("tcp ranks ready", SHORT);
    mana_tests::mpi::wait_registered(&s, 2);
    let mut rng = Rng::seeded("tcp-ranks-hosts");
    std::thread::sleep(rng.duration_upto(Duration::from_millis(2500)));
    s.checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill: {e}"));
    let first = mana_tests::mpi::without_launcher_report(&run.wait_output(SHORT).stdout).to_vec();
    let restart = mana_tests::bin("mana_restart");
    let other_host = format!(
        "hostname mana-other-node && exec {} {}",
        restart.display(),
        s.ckpt_dir.display()
    );
    let args: Vec<&std::ffi::OsStr> = vec![
        restart.as_os_str(),
        s.ckpt_dir.as_os_str(),
        ":".as_ref(),
        "-n".as_ref(),
        "1".as_ref(),
        "unshare".as_ref(),
        "-u".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        other_host.as_ref(),
    ];
    let last = Proc::spawn(
        "mpiexec mana_restart on two host names",
        mana_tests::mpi::mpiexec_command(&s, 1, &args, &[]),
    )
    .wait_output(LONG);
    last.assert_success();
    let log = last.stderr_text();
    assert!(
        log.lines().any(
            |l| l.contains("connected to the rank's listener") && !l.contains("[127, 0, 0, 1]")
        ),
        "rank 1 did not connect over the node's address: {}",
        last.describe()
    );
    assert_eq!(
        log.matches("comes back connected").count(),
        2,
        "{}",
        last.describe()
    );
    assert_continues(native.as_bytes(), &[first, last.stdout]);
}

/// The same over a Unix stream connection between the two ranks (rank 0 listens on an
/// abstract name): matched by socket inodes, made again between the restored ranks on
/// this node with its bytes — rank 0's output equals the uninterrupted job's.
#[test]
fn a_unix_connection_between_mpi_ranks_comes_back_connected() {
    mpi_ranks_restart_like_native(
        "tcp_ranks",
        &["40", "150", "5", "unix"],
        "tcp ranks ready",
        2500,
    );
}

/// `program` (tests/c, PIE) with `args`, launched, checkpointed once without a kill and
/// in a chain of three with a kill and a restart at random instants (within 800 ms of
/// one another) once it printed `ready`: its output equals the uninterrupted run's.
fn chain_restarts_like_native(label: &str, program: &str, args: &[&str], ready: &str) {
    let s = Session::start(label);
    let program = compile(program, Build::Pie, s.dir());
    let native = native_run(&program, args);
    let pieces = checkpoint_chain(
        &s,
        &program,
        args,
        ready,
        1,
        3,
        Duration::from_millis(800),
        |_| {},
        |_| {},
    );
    assert_continues(&native.stdout, &pieces);
}
