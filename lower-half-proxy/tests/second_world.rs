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
