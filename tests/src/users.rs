//! Other users, for tests that run the product as an ordinary user and an attacker as a
//! second one (root would bypass the permission checks under test). `useradd` makes them;
//! `setpriv` switches user without a fork, so the process is the program itself.

use std::path::Path;
use std::process::Command;

/// The uid and gid of `name`, created if missing (the tests run as root: CI does).
pub fn user(name: &str) -> (u32, u32) {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", name])
            .output()
            .expect("useradd (this test runs as root: CI does)");
        assert!(
            out.status.success() || id("-u").is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// `program args` as `uid:gid` (no fork: the process is the program).
pub fn as_user(who: (u32, u32), program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", who.0))
        .arg(format!("--regid={}", who.1))
        .arg("--clear-groups")
        .arg("--")
        .arg(program)
        .args(args);
    c
}

/// Gives `p` (not following a symlink) to `who`.
pub fn chown(p: &Path, who: (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(who.0), Some(who.1))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}
