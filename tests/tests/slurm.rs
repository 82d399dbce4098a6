//! Unmodified MPICH programs under a real Slurm (started by the test on this machine):
//! `srun --mpi=pmi2 -n 2 mana_launch ./ring` prints what `srun --mpi=pmi2 -n 2 ./ring`
//! does, and every rank went through MANA.
//!
//! ```text
//! $ mpicc.mpich -o ring tests/mpi/ring.c
//! $ srun --mpi=pmi2 -n 2 ./ring > native.out
//! $ mana_coordinator --daemon; srun --mpi=pmi2 -n 2 mana_launch ./ring > mana.out
//! $ cmp native.out mana.out
//! ```

use mana_tests::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

fn srun(slurm: &Slurm, s: &Session, n: usize, program: &[&Path]) -> Output {
    let mut cmd = slurm.srun();
    cmd.current_dir(s.dir())
        .args(["--mpi=pmi2", "-n", &n.to_string()])
        .args(program)
        .env("HOME", &s.home)
        .env("MANA_STATUS_FILE", &s.status_file)
        .env("MANA_LOG", "mana::mpi=debug");
    Proc::spawn(&format!("srun --mpi=pmi2 -n {n}"), cmd).wait_output(LONG)
}

/// `srun --mpi=pmi2 SRUN_ARGS… TOOL ARGS…` (TOOL: mana_launch or mana_restart) in the
/// session with its coordinator and `MANA_LOG=mana=info`, not started.
fn srun_mana(
    slurm: &Slurm,
    s: &Session,
    srun_args: &[&str],
    tool: &str,
    args: &[&OsStr],
) -> Command {
    let mut cmd = slurm.srun();
    cmd.current_dir(s.dir())
        .arg("--mpi=pmi2")
        .args(srun_args)
        .arg(bin(tool))
        .args(args)
        .env("HOME", &s.home)
        .env("MANA_STATUS_FILE", &s.status_file)
        .env("MANA_LOG", "mana=info");
    cmd
}

#[test]
fn ring_under_srun_and_mana_launch_equals_native() {
    let slurm = Slurm::start();
    eprintln!("slurm on node {} up in {:.2?}", slurm.node, slurm.startup);
    let s = Session::start("slurm-ring");
    let ring = compile_mpi("ring", s.dir());
    let launch = bin("mana_launch");
    let n = 2;
    let native = srun(&slurm, &s, n, &[&ring]);
    assert!(
        native.status.success(),
        "native srun failed: {}\n{}",
        native.describe(),
        slurm.logs()
    );
    let under = srun(&slurm, &s, n, &[&launch, &ring]);
    assert!(
        under.status.success(),
        "srun mana_launch failed: {}\n{}",
        under.describe(),
        slurm.logs()
    );
    assert!(
        native.stdout_text().contains(&format!("ring size={n}")),
        "{}",
        native.describe()
    );
    assert_eq!(
        under.stdout_text(),
        native.stdout_text(),
        "output under srun mana_launch differs from native srun"
    );
    // Every rank really went through MANA: its lower half was loaded by libmana.
    let loaded = under.stderr_text().matches("lower half loaded").count();
    assert_eq!(loaded, n, "expected {n} lower halves: {}", under.describe());
}

/// The other test programs of tests/mpi (and the rsmpi one) under srun: point-to-point,
/// every collective, communicators and topologies, derived datatypes, callbacks, handle
/// and status semantics, MPI_THREAD_MULTIPLE — same output as native srun.
#[test]
fn every_test_program_under_srun_and_mana_launch_equals_native() {
    let slurm = Slurm::start();
    let s = Session::start("slurm-all");
    let launch = bin("mana_launch");
    let n = 2;
    let mut programs: Vec<(String, std::path::PathBuf)> = [
        "p2p",
        "collectives",
        "comms",
        "datatypes",
        "callbacks",
        "handles",
        "threads_multiple",
    ]
    .iter()
    .map(|name| (name.to_string(), compile_mpi(name, s.dir())))
    .collect();
    programs.push(("rsmpi_ring".into(), bin("rsmpi_ring")));
    for (name, program) in &programs {
        let native = srun(&slurm, &s, n, &[program]);
        assert!(
            native.status.success() && !native.stdout_text().is_empty(),
            "{name}: native srun failed: {}\n{}",
            native.describe(),
            slurm.logs()
        );
        let under = srun(&slurm, &s, n, &[&launch, program]);
        assert!(
            under.status.success(),
            "{name}: srun mana_launch failed: {}\n{}",
            under.describe(),
            slurm.logs()
        );
        assert_eq!(
            under.stdout_text(),
            native.stdout_text(),
            "{name}: output under srun mana_launch differs from native srun"
        );
        let loaded = under.stderr_text().matches("lower half loaded").count();
        assert_eq!(
            loaded,
            n,
            "{name}: expected {n} lower halves: {}",
            under.describe()
        );
    }
}

/// A job launched under Slurm (`srun --mpi=pmi2 -n 2 mana_launch`) is checkpointed and
/// killed, then restarted under the other launcher (`mpiexec.mpich -n 2 mana_restart`):
/// the new lower half takes its PMI connection from the restart's launcher.
#[test]
fn a_job_launched_under_srun_restarts_under_mpiexec() {
    let slurm = Slurm::start();
    let s = Session::start("slurm-restart");
    let program = compile_mpi("world_mix", s.dir());
    let native = srun(&slurm, &s, 2, &[&program, Path::new("300")]);
    native.assert_success();
    let ckpt = s.ckpt_dir.as_os_str();
    let args = [
        "--ckptdir".as_ref(),
        ckpt,
        program.as_os_str(),
        "300".as_ref(),
    ];
    let cmd = srun_mana(&slurm, &s, &["-n", "2"], "mana_launch", &args);
    let run = Proc::spawn("srun mana_launch world_mix", cmd);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, 2);
    let mut rng = Rng::seeded("slurm-restart");
    std::thread::sleep(rng.duration_upto(std::time::Duration::from_millis(700)));
    let gen = s
        .checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}\n{}", slurm.logs()));
    assert_committed(&s.ckpt_dir, &gen);
    let _ = run.wait_quietly(LONG);
    let out = restart(&s, 2, &[]).wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(
        done(&out.stdout_text()),
        done(&native.stdout_text()),
        "restarted under mpiexec: {}",
        out.describe()
    );
}

/// `slurm/mana-job.sbatch` as a user runs it: the first submission launches the job;
/// Slurm's warning signal before the time limit (sent here with `scancel --batch
/// --signal=USR1`, as `--signal=B:USR1@120` would) makes the script checkpoint and stop;
/// the second submission restarts from the checkpoint and prints the native result.
#[test]
fn the_sbatch_example_checkpoints_before_the_limit_and_continues_when_resubmitted() {
    let slurm = Slurm::start();
    let s = Session::start("slurm-sbatch");
    let program = compile_mpi("world_mix", s.dir());
    let native = srun(&slurm, &s, 2, &[&program, Path::new("500")]);
    native.assert_success();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../slurm/mana-job.sbatch");
    let out_file = s.dir().join("job.out");
    let submit = || {
        let mut cmd = slurm.command("sbatch");
        cmd.current_dir(s.dir())
            .args(["--parsable", "-n", "2", "-o"])
            .arg(&out_file)
            .arg(&script)
            .arg(&program)
            .arg("500")
            .env("HOME", &s.home)
            .env("MANA_BIN", bin_dir())
            .env("MANA_CKPT_DIR", &s.ckpt_dir)
            .env("MANA_LOG", "mana=info");
        let out = Proc::spawn("sbatch", cmd).wait_output(LONG);
        out.assert_success();
        out.stdout_text().trim().to_string()
    };
    let wait_job_gone = |id: &str| {
        let deadline = std::time::Instant::now() + LONG;
        loop {
            let mut q = slurm.command("squeue");
            q.args(["-h", "-j", id]);
            let o = Proc::spawn("squeue", q).wait_output(LONG);
            if o.stdout_text().trim().is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} did not end: {}",
                slurm.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let job = submit();
    let deadline = std::time::Instant::now() + LONG;
    while !std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .contains("world_mix ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not start: {}",
            slurm.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut cancel = slurm.command("scancel");
    cancel.args(["--batch", "--signal=USR1", &job]);
    Proc::spawn("scancel --signal=USR1", cancel)
        .wait_output(LONG)
        .assert_success();
    wait_job_gone(&job);
    let first = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(
        first.contains("stopped after a checkpoint") && !first.contains("world_mix done"),
        "the first part must stop after a checkpoint: {first}"
    );
    assert!(
        latest_generation(&s.ckpt_dir).is_some(),
        "no committed checkpoint"
    );
    let job2 = submit();
    wait_job_gone(&job2);
    let all = std::fs::read_to_string(&out_file).unwrap_or_default();
    let done = |t: &str| result_line(t, "world_mix done");
    assert!(all.contains("restarting from"), "{all}");
    assert_eq!(done(&all), done(&native.stdout_text()), "{all}");
}

/// A signal to the ranks (`srun --signal=USR1@T` before a time limit; sent here with
/// `scancel --signal=USR1`, which delivers it to the job's tasks the same way): with
/// `mana_launch --checkpoint-signal USR1` every rank asks the coordinator for a checkpoint
/// (one job-wide checkpoint results), the job runs on to the native result, and the
/// checkpoint it took restarts (under mpiexec) to the native result too.
#[test]
fn a_signal_to_the_ranks_checkpoints_the_job() {
    let slurm = Slurm::start();
    let s = Session::start("slurm-signal");
    let program = compile_mpi("world_mix", s.dir());
    let native = srun(&slurm, &s, 2, &[&program, Path::new("2000")]);
    native.assert_success();
    let args = [
        "--ckptdir".as_ref(),
        s.ckpt_dir.as_os_str(),
        "--checkpoint-signal".as_ref(),
        "USR1".as_ref(),
        program.as_os_str(),
        "2000".as_ref(),
    ];
    let cmd = srun_mana(&slurm, &s, &["-n", "2"], "mana_launch", &args);
    let run = Proc::spawn("srun mana_launch --checkpoint-signal USR1 world_mix", cmd);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, 2);
    let mut q = slurm.command("squeue");
    q.args(["-h", "-o", "%i"]);
    let ids = Proc::spawn("squeue", q).wait_output(LONG).stdout_text();
    let id = ids
        .lines()
        .next()
        .expect("the job is queued")
        .trim()
        .to_string();
    let mut cancel = slurm.command("scancel");
    cancel.args(["--signal=USR1", &id]);
    Proc::spawn("scancel --signal=USR1", cancel)
        .wait_output(LONG)
        .assert_success();
    let latest = s.ckpt_dir.join("LATEST");
    let deadline = std::time::Instant::now() + LONG;
    while !latest.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after the signal: {}",
            slurm.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = run.wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(done(&out.stdout_text()), done(&native.stdout_text()));
    assert!(
        out.stderr_text()
            .contains("checkpoint requested by a signal"),
        "{}",
        out.describe()
    );
    let gens: Vec<_> = std::fs::read_dir(&s.ckpt_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
        .collect();
    // Both ranks ask; a request that arrives while the first one's checkpoint runs joins
    // it (one that arrived after its commit would take a second, also valid, checkpoint).
    assert!(
        !gens.is_empty() && gens.len() <= 2,
        "{} checkpoints",
        gens.len()
    );
    let again = restart(&s, 2, &[]).wait_output(LONG);
    again.assert_success();
    assert_eq!(done(&again.stdout_text()), done(&native.stdout_text()));
}

/// Placement switch (three slurmd on this machine, nodes n1–n3): a job launched with both
/// ranks on n1 is checkpointed and killed, then restarted by `srun -N 2 -w n2,n3
/// mana_restart` with one rank on each of two other nodes; it ends like the native run.
#[test]
fn a_job_restarts_on_other_slurm_nodes() {
    let slurm = Slurm::start_nodes(3);
    let s = Session::start("slurm-nodes");
    let program = compile_mpi("world_mix", s.dir());
    // The native run on n1 too: n2 and n3 run nothing but the restart.
    let mut cmd = slurm.srun();
    cmd.current_dir(s.dir())
        .args(["--mpi=pmi2", "-N", "1", "-n", "2", "-w", "n1"])
        .arg(&program)
        .arg("400");
    let native = Proc::spawn("native srun -w n1", cmd).wait_output(LONG);
    native.assert_success();
    let ckpt = s.ckpt_dir.as_os_str();
    let args = [
        "--ckptdir".as_ref(),
        ckpt,
        program.as_os_str(),
        "400".as_ref(),
    ];
    let n1 = ["-N", "1", "-n", "2", "-w", "n1"];
    let cmd = srun_mana(&slurm, &s, &n1, "mana_launch", &args);
    let run = Proc::spawn("srun -w n1 mana_launch world_mix", cmd);
    run.wait_for_stdout("world_mix ready", LONG);
    wait_registered(&s, 2);
    let mut rng = Rng::seeded("slurm-nodes");
    checkpoint_and_kill(&s, &mut rng, std::time::Duration::from_millis(700), run);
    let n2_n3 = ["-N", "2", "-n", "2", "-w", "n2,n3"];
    let cmd = srun_mana(
        &slurm,
        &s,
        &n2_n3,
        "mana_restart",
        &[s.ckpt_dir.as_os_str()],
    );
    let out = Proc::spawn("srun -w n2,n3 mana_restart", cmd).wait_output(LONG);
    out.assert_success();
    let done = |t: &str| result_line(t, "world_mix done");
    assert_eq!(
        done(&out.stdout_text()),
        done(&native.stdout_text()),
        "{}",
        out.describe()
    );
    // n2 and n3 ran the restart's tasks (their slurmd logs say so).
    for node in ["n2", "n3"] {
        let log = std::fs::read_to_string(slurm.dir.path().join(format!("slurmd-{node}.log")))
            .unwrap_or_default();
        assert!(
            log.contains("launch task"),
            "{node} ran no task:\n{}",
            slurm.logs()
        );
    }
}
