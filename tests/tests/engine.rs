//! The engine's promise, told as terminal sessions: a process checkpointed at any instant,
//! killed and restarted continues where it was and ends exactly as an uninterrupted run.
//!
//! ```text
//! $ mana_coordinator --daemon --port 0 --status-file status
//! $ mana_launch --ckptdir ckpt ./bigmem 256 200 &
//! $ mana_status --checkpoint          # at a random instant
//! $ kill -9 %1
//! $ mana_restart ckpt                 # continues; same final line as a native run
//! ```

use mana_tests::*;

/// 256 MiB of incompressible heap plus bss, brk heap and stack state, checkpointed at a
/// random instant, killed, restarted.
fn big_process_survives_kill_at_a_random_instant(build: Build) {
    let s = Session::start(&format!("bigmem256-{}", build.name()));
    let bigmem = compile("bigmem", build, s.dir());
    let args = ["256", "200"];

    // The reference: an uninterrupted run.
    let native = native_run(&bigmem, &args);

    // $ mana_launch --ckptdir ckpt ./bigmem 256 200 &
    let run = s.launch(&bigmem, &args);
    run.wait_for_stdout("ready", LONG);
    s.wait_registered(run.pid());

    // ... a random instant later: $ mana_status --checkpoint
    let mut rng = Rng::seeded("bigmem-256");
    std::thread::sleep(rng.duration_upto(native.elapsed.mul_f64(0.4)));
    let gen = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen);

    // $ kill -9 %1
    let killed = s.kill9(run);
    assert_banner_once(&killed);

    // $ mana_restart ckpt
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);
    assert_continues(&native.stdout, &[killed.stdout, restored.stdout]);
}

#[test]
fn bigmem_256mib_pie_continues_after_kill_at_a_random_instant() {
    big_process_survives_kill_at_a_random_instant(Build::Pie);
}

#[test]
fn bigmem_256mib_no_pie_continues_after_kill_at_a_random_instant() {
    big_process_survives_kill_at_a_random_instant(Build::NoPie);
}

/// checkpoint → kill → restart, ten times over; every restart continues from the newest
/// generation and the last process ends like an uninterrupted run.
#[test]
fn ten_generations_of_checkpoint_kill_restart() {
    let s = Session::start("chain");
    let bigmem = compile("bigmem", Build::NoPie, s.dir());
    let args = ["4", "600"];
    let native = native_run(&bigmem, &args);

    let mut proc = s.launch(&bigmem, &args);
    proc.wait_for_stdout("ready", SHORT);
    let mut pieces = Vec::new();
    let mut last_generation = 0;
    for round in 1..=10 {
        s.wait_registered(proc.pid());
        let gen = s
            .checkpoint()
            .unwrap_or_else(|e| panic!("round {round}: checkpoint failed: {e}"));
        assert_committed(&s.ckpt_dir, &gen);
        let n = generation_number(&gen);
        assert!(
            n > last_generation,
            "round {round}: LATEST did not advance ({n} after {last_generation})"
        );
        last_generation = n;

        let killed = s.kill9(proc);
        if round == 1 {
            assert_banner_once(&killed);
        } else {
            assert_no_banner(&killed);
        }
        pieces.push(killed.stdout);

        proc = s.restart(&s.ckpt_dir);
        // It runs again: wait for its first line before the next checkpoint.
        proc.wait_for_stdout("", SHORT);
    }
    let last = proc.wait_output(LONG);
    last.assert_success();
    assert_no_banner(&last);
    pieces.push(last.stdout);
    assert_continues(&native.stdout, &pieces);
}

/// A checkpoint does not disturb the process: two in a row, then it runs on to the same
/// output as an uninterrupted run. The second generation restarts too.
#[test]
fn checkpoint_without_kill_twice_in_a_row() {
    let s = Session::start("no-kill");
    let bigmem = compile("bigmem", Build::Pie, s.dir());
    let args = ["32", "150"];
    let native = native_run(&bigmem, &args);

    let run = s.launch(&bigmem, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());

    let first = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("first checkpoint failed: {e}"));
    assert_committed(&s.ckpt_dir, &first);
    let second = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("second checkpoint failed: {e}"));
    assert_committed(&s.ckpt_dir, &second);
    assert!(
        generation_number(&second) > generation_number(&first),
        "the second checkpoint must be a newer generation: {} then {}",
        first.display(),
        second.display()
    );

    let done = run.wait_output(LONG);
    done.assert_success();
    assert_banner_once(&done);
    assert_eq!(
        done.stdout_text(),
        native.stdout_text(),
        "a checkpointed process must print exactly what an uninterrupted run prints"
    );

    // $ mana_restart ckpt   (from the second generation, after the job ended)
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);
    assert_continues(&native.stdout, &[done.stdout, restored.stdout]);
}

/// `mana_status --checkpoint --kill` — the batch script's "checkpoint and exit" before a
/// time limit — ends the job once the generation is committed; a restart finishes it.
#[test]
fn checkpoint_and_kill_then_restart_finishes_the_job() {
    let s = Session::start("ckpt-kill");
    let bigmem = compile("bigmem", Build::Pie, s.dir());
    let args = ["8", "150"];
    let native = native_run(&bigmem, &args);

    let run = s.launch(&bigmem, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());

    let gen = s
        .checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen);
    let ended = run.wait_output(SHORT);
    assert!(
        !ended.stdout_text().contains("final"),
        "the job should have been ended after the commit, not run to its end: {}",
        ended.describe()
    );
    assert_banner_once(&ended);

    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);
    assert_continues(&native.stdout, &[ended.stdout, restored.stdout]);
}

/// On one machine without a launcher, `mana_launch ./a.out` starts a coordinator itself
/// when none is reachable and no status file is named; `mana_status` finds it through the
/// default status file.
#[test]
fn launch_starts_its_own_coordinator_when_none_runs() {
    let s = Session::without_coordinator("autostart");
    let bigmem = compile("bigmem", Build::Pie, s.dir());
    let args = ["4", "100"];
    let native = native_run(&bigmem, &args);

    let run = s.launch(&bigmem, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());
    assert!(
        s.status_file.is_file(),
        "no status file at {}",
        s.status_file.display()
    );
    let gen = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen);

    let done = run.wait_output(LONG);
    done.assert_success();
    assert_banner_once(&done);
    assert_eq!(done.stdout_text(), native.stdout_text());
}

/// `mana_launch --interval 1`: the coordinator takes checkpoints on its own; the job is
/// killed after the second one and restarted from the newest.
#[test]
fn interval_checkpoints_are_taken_and_restart_from_the_newest() {
    let s = Session::start("interval");
    let bigmem = compile("bigmem", Build::Pie, s.dir());
    let args = ["8", "400"];
    let native = native_run(&bigmem, &args);

    // $ mana_launch --interval 1 --ckptdir ckpt ./bigmem 8 400 &
    let mut cmd = s.command("mana_launch");
    cmd.args(["--interval", "1", "--ckptdir"])
        .arg(&s.ckpt_dir)
        .arg(&bigmem)
        .args(args);
    let run = Proc::spawn("mana_launch --interval 1", cmd);
    run.wait_for_stdout("ready", SHORT);

    // No command asks for a checkpoint: wait until two generations were committed.
    let deadline = std::time::Instant::now() + LONG;
    let newest = loop {
        let n = latest_generation(&s.ckpt_dir)
            .map(|g| generation_number(&s.ckpt_dir.join(g)))
            .unwrap_or(0);
        if n >= 2 {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second timed checkpoint within {LONG:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let killed = s.kill9(run);
    let latest = latest_generation(&s.ckpt_dir).expect("LATEST");
    assert!(generation_number(&s.ckpt_dir.join(&latest)) >= newest);

    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);
    assert_continues(&native.stdout, &[killed.stdout, restored.stdout]);
}
