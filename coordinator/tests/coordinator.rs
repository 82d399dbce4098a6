//! The coordinator as a user and as the runtime meet it: started as a daemon, driven by
//! `mana_status`, with fake processes that play the runtime's side of the protocol.

mod support;

use mana_coordinator::{ClientError, Connection, FromCoord, Role, StatusFile, ToCoord};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use support::*;

#[test]
fn daemon_returns_listening_with_a_private_status_file() {
    let c = Coord::start("daemon", &[]);
    let mode = std::fs::metadata(&c.status_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "status file mode {mode:o}");
    assert_ne!(c.status.port, 0, "--port 0 must record the real port");
    assert_eq!(c.status.secret.len(), 64);
    assert!(pid_alive(c.status.pid));
    assert_ne!(c.status.pid as u32, std::process::id());
    // The port answers right away: --daemon returned only once it listens.
    let _ = c.command();
    assert!(mana_coordinator::reachable(&c.status_path));

    // A second coordinator on the same status file refuses to start.
    let out = Command::new(COORDINATOR)
        .args(["--daemon", "--port", "0", "--status-file"])
        .arg(&c.status_path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains(&format!(
            "mana_coordinator: a coordinator is already running at {} (status file {})",
            c.status.addr(),
            c.status_path.display()
        )),
        "{}",
        show(&out)
    );
    assert_eq!(
        StatusFile::read(&c.status_path).unwrap(),
        c.status,
        "status file must be untouched"
    );

    // The daemon logs into <status file>.log.
    let log = mana_coordinator::status::log_path(&c.status_path);
    wait_for("the daemon's log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("coordinator listening"))
    });

    let out = c.mana_status(&["--quit"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("coordinator stopping"),
        "{}",
        show(&out)
    );
    c.wait_exit();
}

#[test]
fn stale_status_file_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.path().join("status.rc");
    let stale = StatusFile {
        host: "127.0.0.1".into(),
        port: free_port(),
        secret: "00".into(),
        pid: 999_999,
    };
    stale.write(&path).unwrap();
    let out = Command::new(COORDINATOR)
        .args(["--daemon", "--port", "0", "--status-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let fresh = StatusFile::read(&path).unwrap();
    assert_ne!(fresh, stale);
    let (mut conn, _) = Connection::open(&path, Role::Command).unwrap();
    assert_eq!(
        conn.request(&ToCoord::Quit).unwrap(),
        FromCoord::Done {
            message: "coordinator stopping; sent kill to 0 processes".into()
        }
    );
    wait_for("the coordinator to exit", || !pid_alive(fresh.pid));
    assert!(!path.exists());
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn wrong_secret_is_refused_with_a_clear_message() {
    let c = Coord::start("secret", &[]);
    let forged_path = c.dir.path().join("forged.rc");
    StatusFile {
        secret: "f".repeat(64),
        ..c.status.clone()
    }
    .write(&forged_path)
    .unwrap();

    let out = Command::new(STATUS)
        .arg("--status-file")
        .arg(&forged_path)
        .arg("--list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    // With mutual authentication the coordinator proves the secret first: a client with
    // another secret sees a coordinator that cannot prove its own, and sends nothing.
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "mana_status: the coordinator at {} (status file {}) did not prove the job's secret: the status file is stale or another program holds that port (nothing was sent to it)",
            c.status.addr(),
            forged_path.display()
        )
    );
    // Same through the library.
    let err = Connection::open(&forged_path, Role::Command).unwrap_err();
    assert!(matches!(err, ClientError::Impostor { .. }), "{err:?}");
    // The coordinator is unharmed.
    let out = c.mana_status(&["--list"]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn unreachable_coordinator_is_named() {
    let dir = TempDir::new("unreach");
    let path = dir.path().join("status.rc");
    let port = free_port();
    StatusFile {
        host: "127.0.0.1".into(),
        port,
        secret: "00".into(),
        pid: 1,
    }
    .write(&path)
    .unwrap();
    let out = Command::new(STATUS)
        .arg("--status-file")
        .arg(&path)
        .arg("--list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "mana_status: no coordinator reachable at 127.0.0.1:{port} (status file {}): connection refused",
            path.display()
        )
    );
    assert!(!mana_coordinator::reachable(&path));

    let missing = dir.path().join("missing.rc");
    let out = Command::new(STATUS)
        .arg("--status-file")
        .arg(&missing)
        .arg("--list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("status file {} does not exist", missing.display())),
        "{}",
        show(&out)
    );
}

#[test]
fn status_file_from_the_environment() {
    let c = Coord::start("env", &[]);
    let out = Command::new(STATUS)
        .env("MANA_STATUS_FILE", &c.status_path)
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn checkpoint_with_no_processes_is_an_error() {
    let c = Coord::start("noproc", &[]);
    let out = c.mana_status(&["--checkpoint"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        stderr(&out).trim(),
        "mana_status: no processes are registered with the coordinator"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn mana_status_needs_exactly_one_action() {
    let c = Coord::start("usage", &[]);
    for args in [&[][..], &["--list", "--quit"], &["--kill", "--list"]] {
        let out = c.mana_status(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(stderr(&out).contains("exactly one of"), "{}", show(&out));
    }
    assert!(pid_alive(c.status.pid));
}

/// A whole round: two ranks registered out of order, `mana_status --checkpoint`
/// blocking until the leader (rank 0) commits, a second command joining the round, then
/// a second round with `--kill`.
#[test]
fn checkpoint_round_commits_and_resumes() {
    let c = Coord::start("round", &[]);
    // Rank 1 first, so the leader (rank 0) is not the lowest id.
    let mut r1 = c.process(1, 2, 0);
    let mut r0 = c.process(0, 2, 4); // restored from generation 4
    assert_eq!((r1.id, r0.id), (1, 2));

    let user = Command::new(STATUS)
        .arg("--status-file")
        .arg(&c.status_path)
        .arg("--checkpoint")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let generation = r0.expect_checkpoint();
    assert_eq!(generation, 5, "max(last generations) + 1");
    assert_eq!(r1.expect_checkpoint(), 5);

    // A second request while the round runs joins it.
    let mut second = c.command();
    second
        .send(&ToCoord::Checkpoint { kill_after: false })
        .unwrap();

    let rows = list(&c);
    assert_eq!(states(&rows), ["checkpointing", "checkpointing"]);

    r1.written(5);
    wait_for("rank 1 to show as written", || {
        states(&list(&c)) == ["written", "checkpointing"]
    });
    r0.written(5);

    let FromCoord::Commit { manifest } = r0.recv() else {
        panic!("the leader (rank 0) must be asked to commit")
    };
    assert_eq!(manifest.generation, 5);
    assert_eq!(manifest.world_size, 2);
    assert_eq!(manifest.mpi, "");
    assert!(manifest.created_unix_ns > 0);
    let ranks: Vec<u32> = manifest.images.iter().map(|e| e.rank).collect();
    assert_eq!(ranks, [0, 1], "images sorted by rank");
    assert_eq!(manifest.images[1].file, "rank-00001.mana");
    assert_eq!(states(&list(&c)), ["written", "committing"]);

    let dir = "/nonexistent/ckpt/gen-000005";
    r0.send(ToCoord::CommitDone {
        generation: 5,
        dir: dir.into(),
    });
    for p in [&mut r0, &mut r1] {
        assert_eq!(
            p.recv(),
            FromCoord::Resume {
                generation: 5,
                committed: true,
                exit: false
            }
        );
    }
    let out = user.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), format!("{dir}\n"));
    second.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        second.recv().unwrap(),
        FromCoord::Checkpointed {
            generation: 5,
            dir: dir.into()
        }
    );

    // --list: header and one row per process, last generation updated.
    let out = c.mana_status(&["--list"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["ID", "HOST", "PID", "RANK", "STATE", "LAST-GEN", "PROGRAM"]
    );
    assert_eq!(
        lines[1],
        [
            "1",
            "testhost",
            "100001",
            "1",
            "running",
            "5",
            "fake-rank-1"
        ]
    );
    assert_eq!(
        lines[2],
        [
            "2",
            "testhost",
            "100000",
            "0",
            "running",
            "5",
            "fake-rank-0"
        ]
    );
    assert_eq!(lines.len(), 3, "{text}");

    // Checkpoint and exit: the next generation, Resume with exit.
    let mut cmd = c.command();
    cmd.send(&ToCoord::Checkpoint { kill_after: true }).unwrap();
    assert_eq!(r0.expect_checkpoint(), 6);
    assert_eq!(r1.expect_checkpoint(), 6);
    r0.written(6);
    r1.written(6);
    assert!(matches!(r0.recv(), FromCoord::Commit { .. }));
    r0.send(ToCoord::CommitDone {
        generation: 6,
        dir: "d6".into(),
    });
    for p in [&mut r0, &mut r1] {
        assert_eq!(
            p.recv(),
            FromCoord::Resume {
                generation: 6,
                committed: true,
                exit: true
            }
        );
    }
    cmd.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        cmd.recv().unwrap(),
        FromCoord::Checkpointed {
            generation: 6,
            dir: "d6".into()
        }
    );
}

fn list(c: &Coord) -> Vec<mana_coordinator::ProcessRow> {
    match c.command().request(&ToCoord::List).unwrap() {
        FromCoord::Rows(rows) => rows,
        other => panic!("expected Rows, got {other:?}"),
    }
}

fn states(rows: &[mana_coordinator::ProcessRow]) -> Vec<String> {
    rows.iter().map(|r| r.state.clone()).collect()
}

#[test]
fn failing_process_fails_the_round_and_everyone_resumes() {
    let c = Coord::start("fail", &[]);
    let mut r0 = c.process(0, 2, 0);
    let mut r1 = c.process(1, 2, 0);
    let user = Command::new(STATUS)
        .arg("--status-file")
        .arg(&c.status_path)
        .arg("--checkpoint")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(r0.expect_checkpoint(), 1);
    assert_eq!(r1.expect_checkpoint(), 1);
    r0.written(1);
    r1.send(ToCoord::CheckpointFailed {
        generation: 1,
        reason: "No space left on device".into(),
    });
    for p in [&mut r0, &mut r1] {
        assert_eq!(
            p.recv(),
            FromCoord::Resume {
                generation: 1,
                committed: false,
                exit: false
            }
        );
    }
    let out = user.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        stderr(&out).trim(),
        "mana_status: checkpoint of generation 1 failed: process 2 (testhost:100001 rank 1): No space left on device"
    );
    assert!(stdout(&out).is_empty());
    assert_eq!(states(&list(&c)), ["running", "running"]);

    // A failed commit fails the round too. A failed attempt's number is never used
    // again (issue 10: its files may be left in the directory): this round is 2.
    let mut cmd = c.command();
    cmd.send(&ToCoord::Checkpoint { kill_after: true }).unwrap();
    assert_eq!(r0.expect_checkpoint(), 2);
    assert_eq!(r1.expect_checkpoint(), 2);
    r0.written(2);
    r1.written(2);
    assert!(matches!(r0.recv(), FromCoord::Commit { .. }));
    r0.send(ToCoord::CommitFailed {
        generation: 2,
        reason: "cannot rename LATEST".into(),
    });
    for p in [&mut r0, &mut r1] {
        assert_eq!(
            p.recv(),
            FromCoord::Resume {
                generation: 2,
                committed: false,
                exit: false
            }
        );
    }
    cmd.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        cmd.recv().unwrap(),
        FromCoord::Error(
            "checkpoint of generation 2 failed: process 1 (testhost:100000 rank 0): commit failed: cannot rename LATEST"
                .into()
        )
    );
}

#[test]
fn process_disconnecting_mid_checkpoint_fails_the_round() {
    let c = Coord::start("disc", &[]);
    let mut r0 = c.process(0, 2, 0);
    let mut r1 = c.process(1, 2, 0);
    let mut cmd = c.command();
    cmd.send(&ToCoord::Checkpoint { kill_after: false })
        .unwrap();
    assert_eq!(r0.expect_checkpoint(), 1);
    assert_eq!(r1.expect_checkpoint(), 1);
    r0.written(1);
    drop(r1); // the process died while writing its image
    assert_eq!(
        r0.recv(),
        FromCoord::Resume {
            generation: 1,
            committed: false,
            exit: false
        }
    );
    cmd.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        cmd.recv().unwrap(),
        FromCoord::Error(
            "checkpoint of generation 1 failed: process 2 (testhost:100001 rank 1): disconnected during the checkpoint"
                .into()
        )
    );
    assert_eq!(list(&c).len(), 1, "the dead process is unregistered");

    // With rank 1 gone, a new checkpoint would make an incomplete generation.
    let out = c.mana_status(&["--checkpoint"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "mana_status: cannot checkpoint: only 1 of 2 ranks are registered (missing rank 1)"
    );
}

#[test]
fn duplicate_ranks_are_refused() {
    let c = Coord::start("dup", &[]);
    let _a = c.process(0, 1, 0);
    let _b = c.process(0, 1, 0);
    let out = c.mana_status(&["--checkpoint"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("process 1 and process 2 (testhost:100000 rank 0) both registered as rank 0"),
        "{}",
        show(&out)
    );
}

#[test]
fn kill_reaches_every_process_and_quit_stops_the_coordinator() {
    let c = Coord::start("kill", &[]);
    let mut r0 = c.process(0, 2, 0);
    let mut r1 = c.process(1, 2, 0);
    let out = c.mana_status(&["--kill"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "sent kill to 2 processes\n");
    assert_eq!(r0.recv(), FromCoord::Kill);
    assert_eq!(r1.recv(), FromCoord::Kill);
    assert!(pid_alive(c.status.pid), "--kill keeps the coordinator");

    let out = c.mana_status(&["--quit"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(r0.recv(), FromCoord::Kill);
    assert_eq!(r1.recv(), FromCoord::Kill);
    c.wait_exit();
}

#[test]
fn exit_on_last_process() {
    let c = Coord::start("last", &["--exit-on-last"]);
    let r0 = c.process(0, 2, 0);
    let r1 = c.process(1, 2, 0);
    drop(r0);
    wait_for("rank 0 to be unregistered", || list(&c).len() == 1);
    assert!(pid_alive(c.status.pid));
    drop(r1);
    c.wait_exit();
}

#[test]
fn exit_on_last_after_checkpoint_and_kill_answers_the_command_first() {
    let c = Coord::start("lastkill", &["--exit-on-last"]);
    let mut r0 = c.process(0, 1, 0);
    let user = Command::new(STATUS)
        .arg("--status-file")
        .arg(&c.status_path)
        .args(["--checkpoint", "--kill"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(r0.expect_checkpoint(), 1);
    r0.written(1);
    assert!(matches!(r0.recv(), FromCoord::Commit { .. }));
    r0.send(ToCoord::CommitDone {
        generation: 1,
        dir: "/ck/gen-000001".into(),
    });
    assert_eq!(
        r0.recv(),
        FromCoord::Resume {
            generation: 1,
            committed: true,
            exit: true
        }
    );
    drop(r0); // the process exits as told
    let out = user.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "/ck/gen-000001\n");
    c.wait_exit();
}

#[test]
fn idle_timeout_without_any_process() {
    let c = Coord::start("idle", &["--exit-on-last", "--idle-timeout", "1"]);
    c.wait_exit();
}

#[test]
fn interval_from_the_command_line() {
    let c = Coord::start("interval", &["--interval", "1"]);
    let mut r0 = c.process(0, 1, 0);
    // No command asked: the timer starts the round.
    assert_eq!(r0.expect_checkpoint(), 1);
    r0.written(1);
    assert!(matches!(r0.recv(), FromCoord::Commit { .. }));
    r0.send(ToCoord::CommitDone {
        generation: 1,
        dir: "d1".into(),
    });
    assert!(matches!(
        r0.recv(),
        FromCoord::Resume {
            committed: true,
            ..
        }
    ));
    assert_eq!(r0.expect_checkpoint(), 2);
}

#[test]
fn interval_asked_for_by_the_first_process() {
    let c = Coord::start("pinterval", &[]);
    let mut r0 = FakeProcess::register(&c.status_path, 0, 1, 7, Some(1));
    assert_eq!(r0.expect_checkpoint(), 8);
}

/// Also when the signal comes the moment `--daemon` returns (before the daemon's signal
/// thread runs: the signals are blocked before the fork).
#[test]
fn sigterm_removes_the_status_file() {
    for _ in 0..20 {
        let c = Coord::start("term", &[]);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.status.pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        c.wait_exit();
    }
}

#[test]
fn help_explains_the_status_file() {
    for bin in [COORDINATOR, STATUS, LAUNCH] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success(), "{bin}: {}", show(&out));
        assert!(
            stdout(&out).contains("status file"),
            "{bin}: {}",
            show(&out)
        );
    }
    let out = Command::new(COORDINATOR).arg("--help").output().unwrap();
    for opt in [
        "--port",
        "--status-file",
        "--daemon",
        "--interval",
        "--exit-on-last",
    ] {
        assert!(stdout(&out).contains(opt), "{opt} missing from --help");
    }
}
