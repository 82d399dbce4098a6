//! One job per checkpoint directory, and generation numbers that belong to it (issue 10,
//! item 3): a new job in a directory an earlier job used numbers its checkpoints above
//! everything there and leaves the earlier generations alone; a generation that exists
//! already with a MANIFEST is never written into (that attempt fails in one line), and a
//! failed attempt's number is not used again; a second live job is refused.

use mana_tests::*;
use std::fs;
use std::time::Duration;

#[test]
fn a_new_job_numbers_above_the_directory_and_never_reuses_a_number() {
    // Job A: one generation in the directory.
    let a = Session::start("gen-job-a");
    let program = compile("bigmem", Build::Pie, a.dir());
    let args = ["8", "3000", "20"];
    let g1 = a.checkpoint_of(&program, &args);
    assert_eq!(generation_number(&g1), 1);
    let image1 = fs::read(rank0_image(&g1)).unwrap();
    let shared = a.ckpt_dir.clone();

    // Job B: another coordinator (its own count starts afresh), the same directory.
    let mut b = Session::start("gen-job-b");
    b.ckpt_dir = shared.clone();
    let run = b.launch(&program, &args);
    run.wait_for_stdout("ready", SHORT);
    b.wait_registered(run.pid());
    // Someone else's generation 2 appears after B registered.
    let planted = shared.join("gen-000002");
    fs::create_dir(&planted).unwrap();
    fs::write(planted.join("MANIFEST"), "{}").unwrap();

    let out = b.checkpoint_output();
    let line = refusal_line(&out, "checkpoint into an existing generation");
    assert_mentions_any(&line, &["exists already"], "existing generation");
    let g3 = b
        .checkpoint()
        .unwrap_or_else(|e| panic!("the next attempt must succeed: {e}"));
    assert_eq!(
        generation_number(&g3),
        3,
        "above the directory's generations and the failed attempt's number"
    );
    assert_committed(&shared, &g3);
    assert_eq!(fs::read_to_string(planted.join("MANIFEST")).unwrap(), "{}");
    assert_eq!(
        fs::read_dir(&planted).unwrap().count(),
        1,
        "nothing added to it"
    );
    assert!(
        fs::read(rank0_image(&g1)).unwrap() == image1,
        "job A's generation 1 must be untouched"
    );
    drop(b.kill9(run));
}

/// One writer per checkpoint directory (issue 10, item 3): every process of a job holds a
/// shared lease on the directory (`flock` on `.lease`, which names the job by a token of
/// its secret, its host and pid); a second job launched into it while the first runs is
/// refused in one line before its program starts; once the first has ended, jobs one after
/// another — each with its own coordinator — share the directory.
#[test]
fn a_second_live_job_is_refused_and_jobs_one_after_another_share_the_directory() {
    // Both jobs are the same ordinary user's (root would bypass the directory checks).
    let victim = user("mana-victim");
    let a = Session::start_as("lease-a", victim);
    let program = compile("bigmem", Build::Pie, a.dir());
    let args = ["8", "3000", "20"];
    let run_a = a.launch(&program, &args);
    run_a.wait_for_stdout("ready", SHORT);
    a.wait_registered(run_a.pid());
    let shared = a.ckpt_dir.clone();

    // $ mana_launch --ckptdir A's-directory ./bigmem   (another job, its own coordinator)
    let mut b = Session::start_as("lease-b", victim);
    b.ckpt_dir = shared.clone();
    let out = b.launch(&program, &args).wait_output(SHORT);
    let line = refusal_line(&out, "a second job on a leased directory");
    assert_mentions_any(&line, &["in use by another job"], "leased directory");
    assert!(line.contains(shared.to_str().unwrap()), "{line}");
    assert!(
        out.stdout.is_empty(),
        "B's program must not run: {}",
        out.describe()
    );

    // A is undisturbed.
    let ga = a
        .checkpoint()
        .unwrap_or_else(|e| panic!("A's checkpoint failed: {e}"));
    drop(a.kill9(run_a));

    // Jobs one after another, each with its own coordinator, in the same directory.
    let mut last = generation_number(&ga);
    for i in 0..3 {
        let mut s = Session::start_as(&format!("lease-seq-{i}"), victim);
        s.ckpt_dir = shared.clone();
        let run = s.launch(&program, &args);
        run.wait_for_stdout("ready", SHORT);
        s.wait_registered(run.pid());
        let g = s
            .checkpoint()
            .unwrap_or_else(|e| panic!("sequential job {i}: {e}"));
        assert!(generation_number(&g) > last, "numbers go on rising");
        last = generation_number(&g);
        drop(s.kill9(run));
    }
    assert_eq!(
        latest_generation(&shared).as_deref(),
        Some(format!("gen-{last:06}").as_str())
    );
    drop(b);
}

/// `--keep` (issue 10, item 3): by default the two newest committed generations stay and
/// older ones go after each commit, with the leftovers of a failed attempt; the newest
/// restarts to the uninterrupted run's output.
#[test]
fn the_default_keep_prunes_old_generations_and_failed_attempts() {
    let s = Session::start("keep");
    let program = compile("bigmem", Build::Pie, s.dir());
    let args = ["8", "400", "20"];
    let native = native_run(&program, &args);
    // $ mana_launch --ckptdir ckpt ./bigmem …   (no --keep, no MANA_KEEP)
    let mut cmd = s.command("mana_launch");
    cmd.env_remove("MANA_KEEP")
        .arg("--ckptdir")
        .arg(&s.ckpt_dir)
        .arg(&program)
        .args(args);
    let run = Proc::spawn("mana_launch (default --keep)", cmd);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());

    let g1 = s.checkpoint().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(generation_number(&g1), 1);
    // Attempt 2 fails (a file is in its image's way) and leaves its directory behind.
    let g2 = s.ckpt_dir.join("gen-000002");
    fs::create_dir(&g2).unwrap();
    fs::write(g2.join("rank-00000.mana"), "in the way").unwrap();
    let out = s.checkpoint_output();
    refusal_line(&out, "an attempt whose image is in the way");
    for expect in [3, 4, 5] {
        let g = s.checkpoint().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(generation_number(&g), expect);
    }
    // The leader prunes once the round is committed, after mana_status has its answer.
    let gens = || {
        let mut left: Vec<String> = fs::read_dir(&s.ckpt_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("gen-"))
            .collect();
        left.sort();
        left
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gens() != ["gen-000004", "gen-000005"] && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gens(), ["gen-000004", "gen-000005"], "the two newest stay");

    let killed = s.kill9(run);
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_continues(&native.stdout, &[killed.stdout, restored.stdout]);
}

/// The heartbeat lease (issue 10, item 3), for file systems whose `flock` is refused (Lustre
/// without `-o flock`) or honoured on one node only (`--lease heartbeat`): `.lease` names
/// the job and is renewed every 10 s while the job lives; a second job is refused in one
/// line naming the holder and its heartbeat's age, whichever lease kind it asks for; a
/// lease not renewed for 120 s (its job gone: the test back-dates it instead of waiting)
/// is taken over, and the new job checkpoints and restarts to the uninterrupted output.
#[test]
fn a_heartbeat_lease_is_renewed_refuses_a_second_job_and_is_taken_over_when_stale() {
    let victim = user("mana-victim");
    let a = Session::start_as("heartbeat-a", victim);
    let program = compile("bigmem", Build::Pie, a.dir());
    let args = ["8", "400", "20"];
    let native = native_run(&program, &args);
    let long = ["8", "3000", "20"];
    let launch = |s: &Session, kind: Option<&str>, args: &[&str]| {
        let mut cmd = s.command("mana_launch");
        if let Some(k) = kind {
            cmd.args(["--lease", k]);
        }
        cmd.arg("--ckptdir")
            .arg(&s.ckpt_dir)
            .arg(&program)
            .args(args);
        Proc::spawn(&format!("mana_launch --lease {kind:?}"), cmd)
    };
    let run_a = launch(&a, Some("heartbeat"), &long);
    run_a.wait_for_stdout("ready", SHORT);
    a.wait_registered(run_a.pid());
    let shared = a.ckpt_dir.clone();
    let lease = shared.join(".lease");
    let beat = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("heartbeat_unix="))
            .unwrap_or_else(|| panic!("no heartbeat in .lease: {text:?}"))
            .parse()
            .unwrap()
    };
    let first = fs::read_to_string(&lease).unwrap();
    assert!(
        first.contains(&format!("pid={}", run_a.pid())),
        "the lease names A's process: {first}"
    );
    let first_beat = beat(&first);
    // Nothing but the heartbeat guards the directory: no flock is held on .lease.
    let f = fs::File::open(&lease).unwrap();
    // SAFETY: flock on an open descriptor, released when `f` closes.
    let r = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(r, 0, "a heartbeat lease holds no flock");
    drop(f);

    // A second job (its own coordinator), with either kind of lease, is refused.
    let mut b = Session::start_as("heartbeat-b", victim);
    b.ckpt_dir = shared.clone();
    for kind in [None, Some("heartbeat")] {
        let out = launch(&b, kind, &args).wait_output(SHORT);
        let line = refusal_line(&out, "a second job on a heartbeat-leased directory");
        assert_mentions_any(&line, &["in use by another job"], "leased directory");
        assert!(
            line.contains("heartbeat") && line.contains(&format!("pid {}", run_a.pid())),
            "{line}"
        );
        assert!(
            out.stdout.is_empty(),
            "B's program must not run: {}",
            out.describe()
        );
    }

    // Renewed while A lives (every 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while beat(&fs::read_to_string(&lease).unwrap()) <= first_beat {
        assert!(
            std::time::Instant::now() < deadline,
            "the heartbeat was not renewed in 30 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let ga = a
        .checkpoint()
        .unwrap_or_else(|e| panic!("A's checkpoint failed: {e}"));
    drop(a.kill9(run_a));

    // A is gone; its lease goes stale (back-dated by 200 s rather than waited for).
    let text = fs::read_to_string(&lease).unwrap();
    let stale = beat(&text) - 200;
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("heartbeat_unix=") {
                format!("heartbeat_unix={stale}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect::<String>();
    fs::write(&lease, text).unwrap();
    let run_b = launch(&b, Some("heartbeat"), &args);
    run_b.wait_for_stdout("ready", SHORT);
    b.wait_registered(run_b.pid());
    let now_held = fs::read_to_string(&lease).unwrap();
    assert!(
        now_held.contains(&format!("pid={}", run_b.pid())),
        "B took the lease over: {now_held}"
    );
    let gb = b
        .checkpoint()
        .unwrap_or_else(|e| panic!("B's checkpoint failed: {e}"));
    assert!(generation_number(&gb) > generation_number(&ga));
    let killed = b.kill9(run_b);
    let restored = b.restart(&shared).wait_output(LONG);
    restored.assert_success();
    assert_continues(&native.stdout, &[killed.stdout, restored.stdout]);
}
