//! `mana_launch` as a user runs it: it refuses what cannot work, finds or starts the
//! coordinator, and becomes the program (same pid, arguments, exit code, signals) with
//! the runtime in `LD_PRELOAD`. The runtime here is a real but empty shared object.

mod support;

use mana_coordinator::StatusFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

const LAUNCHER_VARS: [&str; 4] = [
    "SLURM_PROCID",
    "PMI_RANK",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_RANK",
];

fn gcc(args: &[&str], cwd: &Path) {
    let out = Command::new("gcc")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc {args:?}: {}", show(&out));
}

/// An installation: copies of mana_launch, mana_coordinator and mana_status beside a
/// `libmana.so` and the MPI wrapper libraries `mana-mpi/libmpich.so.12` and
/// `mana-mpi/libmpi.so.12` (compiled from an empty C file) and a `mana_lower`.
/// `current_exe()` resolves symlinks, so the binaries are copied, not linked.
fn install(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for exe in [LAUNCH, COORDINATOR, STATUS] {
        let name = Path::new(exe).file_name().unwrap();
        std::fs::copy(exe, bin.join(name)).unwrap();
    }
    std::fs::write(bin.join("empty.c"), "").unwrap();
    gcc(&["-shared", "-fPIC", "-o", "libmana.so", "empty.c"], &bin);
    std::fs::create_dir_all(bin.join("mana-mpi")).unwrap();
    for lib in ["libmpich.so.12", "libmpi.so.12"] {
        let out = format!("mana-mpi/{lib}");
        gcc(&["-shared", "-fPIC", "-o", &out, "empty.c"], &bin);
    }
    std::fs::write(bin.join("mana_lower"), "").unwrap();
    bin
}

/// mana_launch from `bin` with a clean MANA/launcher environment.
fn launch(bin: &Path) -> Command {
    let mut c = Command::new(bin.join("mana_launch"));
    for v in LAUNCHER_VARS.iter().chain(&[
        "MANA_STATUS_FILE",
        "MANA_CKPT_DIR",
        "MANA_INTERVAL",
        "LD_PRELOAD",
    ]) {
        c.env_remove(v);
    }
    c
}

#[test]
fn refuses_a_statically_linked_program() {
    let dir = TempDir::new("static");
    std::fs::write(dir.path().join("main.c"), "int main(void) { return 0; }\n").unwrap();
    gcc(&["-static", "-o", "static-prog", "main.c"], dir.path());
    let prog = dir.path().join("static-prog");
    let status_path = dir.path().join("status.rc");
    let out = launch(Path::new(LAUNCH).parent().unwrap())
        .env("MANA_STATUS_FILE", &status_path)
        .arg(&prog)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "mana_launch: {} is statically linked; MANA injects its runtime with LD_PRELOAD and needs a dynamically linked program",
            prog.display()
        )
    );
    assert!(
        !status_path.exists(),
        "no coordinator may be started for a program that cannot run"
    );
}

#[test]
fn refuses_a_missing_or_non_executable_program() {
    let dir = TempDir::new("missing");
    let out = launch(Path::new(LAUNCH).parent().unwrap())
        .arg("no-such-program-for-mana")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out).trim(),
        "mana_launch: program no-such-program-for-mana not found in PATH"
    );

    let missing = dir.path().join("nope");
    let out = launch(Path::new(LAUNCH).parent().unwrap())
        .arg(&missing)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out).trim(),
        format!("mana_launch: program {}: no such file", missing.display())
    );

    let plain = dir.path().join("data.txt");
    std::fs::write(&plain, "x").unwrap();
    let out = launch(Path::new(LAUNCH).parent().unwrap())
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "mana_launch: program {}: is not an executable file",
            plain.display()
        )
    );
}

#[test]
fn refuses_to_run_without_the_runtime() {
    let dir = TempDir::new("noruntime");
    let bin = install(dir.path());
    std::fs::remove_file(bin.join("libmana.so")).unwrap();
    let out = launch(&bin).arg("/bin/true").output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "mana_launch: cannot find the MANA runtime {}: it must be installed beside mana_launch",
            bin.join("libmana.so").display()
        )
    );
}

#[test]
fn becomes_the_program_with_the_runtime_injected() {
    let c = Coord::start("exec", &[]);
    let bin = install(c.dir.path());
    gcc(&["-shared", "-fPIC", "-o", "libother.so", "empty.c"], &bin);
    let other = bin.join("libother.so");
    let ckpt = c.dir.path().join("ck");
    let script = r#"echo "$$|$0|$1|$2|$3|$4|$LD_PRELOAD|$MANA_STATUS_FILE|$MANA_CKPT_DIR|${MANA_INTERVAL-unset}"; exit 7"#;
    let child = launch(&bin)
        .env("LD_PRELOAD", &other)
        .arg("--status-file")
        .arg(&c.status_path)
        .arg("--ckptdir")
        .arg(&ckpt)
        .args([
            "/bin/sh",
            "-c",
            script,
            "arg0",
            "--ckptdir",
            "--help",
            "--",
            "two words",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    let text = stdout(&out);
    let f: Vec<&str> = text.trim_end().split('|').collect();
    assert_eq!(f[0], pid.to_string(), "same pid: execve, not a child");
    assert_eq!(&f[1..6], ["arg0", "--ckptdir", "--help", "--", "two words"]);
    assert_eq!(
        f[6],
        format!(
            "{}:{}:{}:{}",
            bin.join("libmana.so").display(),
            bin.join("mana-mpi/libmpich.so.12").display(),
            bin.join("mana-mpi/libmpi.so.12").display(),
            other.display()
        )
    );
    assert_eq!(f[7], c.status_path.display().to_string());
    assert_eq!(f[8], ckpt.display().to_string());
    assert_eq!(f[9], "unset");
    assert!(ckpt.is_dir(), "checkpoint directory created");
    assert!(stderr(&out).is_empty(), "{}", show(&out));
}

#[test]
fn starts_a_coordinator_outside_a_launcher_and_reuses_it() {
    let dir = TempDir::new("auto");
    let bin = install(dir.path());
    let status_path = dir.path().join("auto.rc");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let run = || {
        launch(&bin)
            .env("MANA_STATUS_FILE", &status_path)
            .current_dir(&work)
            .args([
                "--interval",
                "30",
                "/bin/sh",
                "-c",
                r#"echo "$MANA_CKPT_DIR $MANA_INTERVAL""#,
            ])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        stdout(&out),
        format!("{} 30\n", work.join("ckpt").display())
    );
    assert!(work.join("ckpt").is_dir());
    let status = StatusFile::read(&status_path).unwrap();
    assert!(mana_coordinator::reachable(&status_path));

    // A second launch uses the running coordinator.
    let out = run();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(StatusFile::read(&status_path).unwrap(), status);

    // Our runtime is empty, so nothing registers: stop the coordinator ourselves.
    let out = Command::new(bin.join("mana_status"))
        .arg("--status-file")
        .arg(&status_path)
        .arg("--quit")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    wait_for("the auto-started coordinator to exit", || {
        !pid_alive(status.pid)
    });
    assert!(!status_path.exists());
}

#[test]
fn never_starts_a_coordinator_under_a_launcher_or_for_an_explicit_status_file() {
    let dir = TempDir::new("nolaunch");
    let bin = install(dir.path());
    let status_path = dir.path().join("none.rc");
    let out = launch(&bin)
        .env("MANA_STATUS_FILE", &status_path)
        .env("PMI_RANK", "3")
        .arg("/bin/true")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.starts_with("mana_launch: no coordinator reachable"),
        "{err}"
    );
    assert!(
        err.contains("PMI_RANK") && err.contains("mana_coordinator --daemon"),
        "{err}"
    );
    assert!(!status_path.exists());

    let out = launch(&bin)
        .arg("--status-file")
        .arg(&status_path)
        .arg("/bin/true")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).starts_with(&format!(
            "mana_launch: no coordinator reachable: status file {} does not exist",
            status_path.display()
        )),
        "{}",
        show(&out)
    );
    assert!(!status_path.exists());
}

/// The program sees the signal state a native run would: what the parent ignored stays
/// ignored (here HUP and USR1, like `nohup`), and SIGPIPE is not ignored just because
/// mana_launch is written in Rust.
#[test]
fn program_inherits_native_signal_state() {
    let c = Coord::start("signals", &[]);
    let bin = install(c.dir.path());
    let show_sigs = [
        "/bin/sh",
        "-c",
        "grep -E '^Sig(Ign|Blk|Cgt)' /proc/self/status",
    ];
    let wrapped = |cmd: &mut Command| {
        cmd.args(["-c", r#"trap "" HUP USR1; exec "$@""#, "wrap"]);
    };
    let mut native = Command::new("/bin/sh");
    wrapped(&mut native);
    let native = native.args(show_sigs).output().unwrap();
    let mut under = Command::new("/bin/sh");
    wrapped(&mut under);
    let under = under
        .arg(bin.join("mana_launch"))
        .arg("--status-file")
        .arg(&c.status_path)
        .args(show_sigs)
        .output()
        .unwrap();
    assert!(
        native.status.success() && under.status.success(),
        "{}\n{}",
        show(&native),
        show(&under)
    );
    assert_eq!(stdout(&under), stdout(&native));
    let ign = stdout(&native)
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    let bit = |sig: i32| 1u64 << (sig - 1);
    assert_ne!(ign & bit(libc::SIGHUP), 0);
    assert_ne!(ign & bit(libc::SIGUSR1), 0);
    assert_eq!(ign & bit(libc::SIGPIPE), 0, "SIGPIPE must not be ignored");
}
