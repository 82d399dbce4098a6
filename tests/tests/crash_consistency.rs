//! Durability, proven (issue 10, item 6): whatever instant a crash strikes — inside an
//! image's write, inside the MANIFEST's, in the window of the `LATEST` rename — and whatever
//! unsynced writes the disk then drops, `LATEST` names a generation that restarts, and never
//! one older than a checkpoint `mana_status` reported committed.
//!
//! A 2-rank MPI job is checkpointed four times (with `--keep 2`, so older generations are
//! pruned as it goes) under `strace -f`; the model of tests/src/crashmodel.rs replays the
//! recorded file-system calls and writes out what a disk could hold after a crash at a
//! chosen point — synced state kept, each later change kept or dropped at random (file
//! writes page by page, directory entries one by one, in any combination). Every such
//! state is judged by `mana_inspect` (the verification `mana_restart` runs); some are
//! restarted for real and must end exactly as the uninterrupted run.

use mana_tests::crashmodel::{content_from, Keep, Model, Trace, CAPTURED, TRACED_CALLS};
use mana_tests::*;
use std::ffi::OsStr;
use std::fs;
use std::time::Duration;

const RANKS: usize = 2;
const ITERS: &str = "3000";
const GENERATIONS: usize = 4;

#[test]
fn no_crash_leaves_latest_naming_a_generation_that_cannot_restart() {
    let s = Session::start("crash-model");
    let program = compile_mpi("world_mix", s.dir());
    let expected = native(&s, RANKS, &program, &[ITERS]);
    let done = |t: &str| result_line(t, "world_mix done");

    // The job, its checkpoint-writing calls recorded.
    let trace_file = s.dir().join("trace");
    let captured = CAPTURED.to_string();
    let calls = format!("trace={TRACED_CALLS}");
    let options = [
        "strace",
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-y",
        "-xx",
        "-s",
        &captured,
        "-e",
        &calls,
        "-o",
    ];
    let strace: Vec<&OsStr> = options
        .iter()
        .map(OsStr::new)
        .chain([trace_file.as_os_str()])
        .collect();
    let launch = bin("mana_launch");
    let job: Vec<&OsStr> = vec![
        launch.as_os_str(),
        "--ckptdir".as_ref(),
        s.ckpt_dir.as_os_str(),
        program.as_os_str(),
        ITERS.as_ref(),
    ];
    let cmd = mpiexec_command_under(&s, &strace, RANKS, &job, &[("MANA_KEEP", "2")]);
    let run = Proc::spawn("strace mpiexec mana_launch", cmd);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, RANKS);
    // Every generation's files as committed (--keep 2 removes the older ones later; the
    // model needs their content for the states where they are still LATEST's).
    let store = s.dir().join("committed");
    for g in 0..GENERATIONS {
        std::thread::sleep(Duration::from_millis(500));
        let gen = if g + 1 < GENERATIONS {
            s.checkpoint()
        } else {
            s.checkpoint_and_kill()
        }
        .unwrap_or_else(|e| panic!("checkpoint {} failed: {e}", g + 1));
        copy_tree(&gen, &store.join(gen.file_name().unwrap()));
    }
    let _ = run.wait_quietly(LONG);

    let trace = Trace::parse(&fs::read_to_string(&trace_file).unwrap(), &s.ckpt_dir);
    let model = Model::replay(&trace);
    let generations: std::collections::BTreeSet<&str> =
        model.committed.iter().map(|(_, g)| g.as_str()).collect();
    assert_eq!(
        generations.len(),
        GENERATIONS,
        "the trace must show {GENERATIONS} commits: {:?}",
        model.committed
    );
    assert_eq!(
        model.phases.len(),
        3 * GENERATIONS,
        "images, MANIFEST and LATEST of each generation: {:?}",
        model.phases
    );

    // Crash points: every point of each MANIFEST's and LATEST's stretch with every way of
    // keeping its unsynced changes (none, all, at random, all directory changes but one,
    // only one); random points of each generation's image writes and of the whole trace.
    let mut rng = Rng::seeded("crash-model");
    let mut trials: Vec<(String, usize, Keep)> = Vec::new();
    for (phase, start, end) in &model.phases {
        if phase.ends_with("images") {
            for i in 0..12 {
                let at = start + (rng.next_u64() as usize) % (end - start + 1);
                let keep = [Keep::Nothing, Keep::Random(0.5), Keep::Everything][i % 3];
                trials.push((phase.clone(), at, keep));
            }
            continue;
        }
        for at in *start..=*end {
            let mut keeps = vec![Keep::Nothing, Keep::Everything, Keep::Random(0.5)];
            for k in 0..model.unsynced_dir_changes(at) {
                keeps.extend([Keep::AllBut(k), Keep::Only(k)]);
            }
            trials.extend(keeps.into_iter().map(|k| (phase.clone(), at, k)));
        }
    }
    for _ in 0..10 {
        let at = (rng.next_u64() as usize) % (model.len + 1);
        trials.push(("anywhere".into(), at, Keep::Random(0.5)));
    }

    let mut final_content = content_from(vec![store.clone(), s.ckpt_dir.clone()]);
    let mut failures = Vec::new();
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    let mut judged: std::collections::HashMap<u64, String> = Default::default();
    let mut to_restart: Vec<(std::path::PathBuf, String)> = Vec::new();
    for (i, (phase, at, keep)) in trials.iter().enumerate() {
        let state = model.crash_state(*at, *keep, &mut rng);
        let what = format!(
            "crash {i} ({phase}, after {at} of {} calls, {keep:?})",
            model.len
        );
        let committed = model.committed_before(*at);
        // A state judged before is judged the same (its LATEST and images are the same).
        let fingerprint = state.fingerprint() ^ committed.map_or(0, |c| c.len() as u64);
        if let Some(v) = judged.get(&fingerprint) {
            *outcomes.entry(v.clone()).or_default() += 1;
            continue;
        }
        let dir = s.dir().join(format!("crash-{i:04}"));
        model.materialize(&state, &dir, &mut final_content);
        let latest = fs::read_to_string(dir.join("LATEST"))
            .ok()
            .map(|t| t.trim().to_string());
        let number = |g: &str| g.trim_start_matches("gen-").parse::<u64>().unwrap_or(0);
        match (&latest, committed) {
            (None, Some(c)) => failures.push(format!("{what}: no LATEST, but {c} was committed")),
            (Some(l), Some(c)) if number(l) < number(c) => failures.push(format!(
                "{what}: LATEST names {l}, older than the committed {c}"
            )),
            _ => {}
        }
        let verdict = match &latest {
            None => "no LATEST (nothing committed yet)".to_string(),
            Some(l) => {
                let out = s.run("mana_inspect", &["--brief", dir.to_str().unwrap()], SHORT);
                if !out.status.success() {
                    failures.push(format!(
                        "{what}: LATEST names {l}, which mana_inspect refuses: {}",
                        out.stderr_text().trim()
                    ));
                    "unrestartable".to_string()
                } else {
                    if matches!(keep, Keep::Nothing) && !to_restart.iter().any(|(_, g)| g == l) {
                        to_restart.push((dir.clone(), l.clone()));
                    }
                    if committed == Some(l.as_str()) {
                        "the committed generation".to_string()
                    } else {
                        "a newer, complete generation".to_string()
                    }
                }
            }
        };
        judged.insert(fingerprint, verdict.clone());
        *outcomes.entry(verdict).or_default() += 1;
        if !to_restart.iter().any(|(d, _)| d == &dir) {
            let _ = fs::remove_dir_all(&dir);
        }
    }
    eprintln!(
        "crash-model: {} trials ({} distinct states judged) over {} recorded calls: {outcomes:?}",
        trials.len(),
        judged.len(),
        model.len
    );
    assert!(trials.len() >= 100);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Restarted for real: the harshest states (nothing unsynced kept), two generations.
    assert!(!to_restart.is_empty(), "no crash state named a generation");
    for (dir, gen) in to_restart.iter().take(2) {
        let restart = bin("mana_restart");
        let cmd = mpiexec_command(&s, RANKS, &[restart.as_os_str(), dir.as_os_str()], &[]);
        let out = Proc::spawn(&format!("mana_restart {gen} after a crash"), cmd).wait_output(LONG);
        out.assert_success();
        assert_eq!(
            done(&out.stdout_text()),
            done(&expected),
            "the job restarted from {gen} of a crashed disk must end as the native run"
        );
    }
}
