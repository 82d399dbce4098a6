//! A lost coordinator is replaced (issue 10, item 5): after `kill -9` of the coordinator
//! the job runs on; a new coordinator started with the same status file keeps its secret,
//! the processes (and every rank of an MPI job) register with it again on their own, and
//! the job checkpoints and restarts to the uninterrupted run's output.

use mana_coordinator::status::StatusFile;
use mana_tests::*;
use std::time::{Duration, Instant};

/// `kill -9` of the session's coordinator, then `mana_coordinator --daemon` again with the
/// same status file; returns once the new one answers.
fn replace_coordinator(s: &Session) {
    let old = StatusFile::read(&s.status_file).unwrap();
    // SAFETY: a signal to the coordinator's pid (a child of this test's session).
    assert_eq!(unsafe { libc::kill(old.pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + SHORT;
    while std::path::Path::new(&format!("/proc/{}", old.pid)).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", old.pid))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(Instant::now() < deadline, "the coordinator did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = s.run(
        "mana_coordinator",
        &[
            "--daemon",
            "--port",
            "0",
            "--status-file",
            s.status_file.to_str().unwrap(),
        ],
        SHORT,
    );
    out.assert_success();
    let new = StatusFile::read(&s.status_file).unwrap();
    assert_ne!(new.pid, old.pid);
    assert_eq!(
        new.secret, old.secret,
        "the replacement keeps the job's secret"
    );
}

#[test]
fn a_replacement_coordinator_adopts_a_running_program() {
    // The product as an ordinary user (root would bypass the status file's privacy
    // check a replacement makes before it adopts the secret).
    let s = Session::start_as("replaced", user("mana-victim"));
    let program = compile("bigmem", Build::Pie, s.dir());
    let args = ["16", "400", "20"];
    let native = native_run(&program, &args);
    let run = s.launch(&program, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());

    replace_coordinator(&s);
    let t = Instant::now();
    s.wait_registered(run.pid());
    eprintln!(
        "re-registered {:.2} s after the replacement started",
        t.elapsed().as_secs_f64()
    );

    let gen = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint through the replacement failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen);
    let killed = s.kill9(run);
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);
    assert_continues(&native.stdout, &[killed.stdout, restored.stdout]);
}

#[test]
fn a_replacement_coordinator_adopts_every_rank_of_an_mpi_job() {
    let s = Session::start("replaced-mpi");
    let program = compile_mpi("world_mix", s.dir());
    let iters = "2000";
    let expected = native(&s, 2, &program, &[iters]);
    let run = launch(&s, 2, &program, &[iters], &[]);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, 2);

    replace_coordinator(&s);
    wait_registered(&s, 2);

    let gen = s
        .checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill through the replacement failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen);
    let _ = run.wait_quietly(LONG);
    let out = restart(&s, 2, &[]).wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(
        done(&out.stdout_text()),
        done(&expected),
        "the restarted job must end exactly as the native run"
    );
}
