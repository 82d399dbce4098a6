//! The proxy starts in a second loader world inside a running process and both worlds
//! work side by side (see `src/bin/lower_smoke.rs` for what is checked).

use std::process::Command;

#[test]
fn proxy_runs_in_its_own_loader_world_beside_the_program() {
    let out = Command::new(env!("CARGO_BIN_EXE_lower_smoke"))
        .arg(env!("CARGO_BIN_EXE_mana_lower"))
        .output()
        .expect("run lower_smoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("lower world ok"),
        "lower_smoke failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn proxy_refuses_to_run_on_its_own() {
    let out = Command::new(env!("CARGO_BIN_EXE_mana_lower"))
        .output()
        .expect("run mana_lower");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not started by MANA's loader"));
}

/// Runs `cmd`, killing it after `secs` seconds (an MPI job that hangs must not hang CI).
fn output_within(mut cmd: Command, secs: u64) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// MPICH lives only in the lower world: `MPI_Init`, rank/size, `MPI_Allreduce` and
/// `MPI_Finalize` called from a program that is not linked with MPI, under Hydra.
#[test]
fn mpi_runs_in_the_lower_world_under_mpiexec() {
    for n in [1, 2, 4] {
        let mut cmd = Command::new("mpiexec.mpich");
        cmd.args(["-n", &n.to_string()])
            .arg(env!("CARGO_BIN_EXE_lower_mpi_smoke"))
            .arg(env!("CARGO_BIN_EXE_mana_lower"));
        let out = output_within(cmd, 120);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "mpiexec -n {n} failed: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines: Vec<&str> = stdout.lines().collect();
        lines.sort();
        let sum = n * (n - 1) / 2;
        let expected: Vec<String> = (0..n)
            .map(|r| format!("rank {r} of {n}: sum {sum}"))
            .collect();
        assert_eq!(lines, expected, "mpiexec -n {n}");
    }
}
