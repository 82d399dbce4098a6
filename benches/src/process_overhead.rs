//! Runtime overhead of `mana_launch` on a syscall- and malloc-heavy loop (issue 11's
//! benchmark): `benches/c/syscall_mix.c` — per iteration a 64-byte pipe round trip,
//! `getpid`, two `clock_gettime`, eight malloc/free pairs of 16 B to 64 KiB, and every
//! 64th a `nanosleep` of 1 µs — run natively and under `mana_launch`, in turn, `--runs`
//! times each, in one run of this program. Also, as controls: the program with one extra
//! thread that only waits (what any second thread costs such a loop), and `mana_launch`
//! with `MANA_SHARED_FDS=1` (the checkpoint thread sharing the application's descriptor
//! table, as an MPI rank's does). Every variant must print the native run's checksum.
//! Separately (its own pair, each against its native run): N/2000 child processes running
//! `/bin/true` (fork, exec, waitpid) — every descendant runs the runtime since item 5.
//!
//! ```text
//! $ target/release/process_overhead [--runs 8] [--iterations 1000000]
//! ```
//!
//! The goal is ≤ 1.01× native (issue 11). Figures: docs/benchmarks.md.

mod common;
mod stats;
use common::{arg, bin_dir};
use stats::{median, paired_ratio, verdict};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const GOAL: f64 = 1.01;
const SOURCE: &str = include_str!("../c/syscall_mix.c");

struct Variant {
    name: &'static str,
    mana: bool,
    env: &'static [(&'static str, &'static str)],
    extra: &'static [&'static str],
    /// The variant it is compared with (its native run).
    baseline: usize,
}

const VARIANTS: [Variant; 6] = [
    Variant {
        name: "native",
        mana: false,
        env: &[],
        extra: &[],
        baseline: 0,
    },
    Variant {
        name: "mana_launch",
        mana: true,
        env: &[],
        extra: &[],
        baseline: 0,
    },
    Variant {
        name: "native + idle thread",
        mana: false,
        env: &[],
        extra: &["thread"],
        baseline: 0,
    },
    Variant {
        name: "mana_launch, shared fd table",
        mana: true,
        env: &[("MANA_SHARED_FDS", "1")],
        extra: &[],
        baseline: 0,
    },
    Variant {
        name: "native, children",
        mana: false,
        env: &[],
        extra: &["spawn"],
        baseline: 4,
    },
    Variant {
        name: "mana_launch, children",
        mana: true,
        env: &[],
        extra: &["spawn"],
        baseline: 4,
    },
];

fn run(v: &Variant, program: &Path, iterations: &str, dir: &Path) -> (Duration, String) {
    let mut cmd = if v.mana {
        let mut c = Command::new(bin_dir().join("mana_launch"));
        c.arg("--ckptdir").arg(dir.join("ckpt")).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.arg(iterations)
        .args(v.extra)
        .env("MANA_STATUS_FILE", dir.join("status"))
        .envs(v.env.iter().copied());
    let t = Instant::now();
    let out = cmd.output().expect("run the benchmark program");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{} failed: {}",
        v.name,
        String::from_utf8_lossy(&out.stderr)
    );
    (
        took,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn main() {
    let runs: usize = arg("--runs").map(|v| v.parse().unwrap()).unwrap_or(8);
    let iterations = arg("--iterations").unwrap_or_else(|| "1000000".into());
    let dir = std::env::temp_dir().join(format!("mana-process-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("syscall_mix.c"), SOURCE).unwrap();
    let program = dir.join("syscall_mix");
    let st = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&program)
        .arg(dir.join("syscall_mix.c"))
        .status()
        .expect("cc (install build-essential: scripts/setup.sh)");
    assert!(st.success(), "cannot compile syscall_mix.c");
    let st = Command::new(bin_dir().join("mana_coordinator"))
        .args(["--daemon", "--port", "0", "--status-file"])
        .arg(dir.join("status"))
        .status()
        .unwrap();
    assert!(st.success(), "mana_coordinator did not start");
    println!(
        "syscall_mix {iterations} iterations, {runs} runs of each variant in turn (wall-clock)"
    );
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); VARIANTS.len()];
    // The loop's checksum, and the children's count.
    let mut reference: [Option<String>; 2] = [None, None];
    for r in 0..runs {
        for (i, v) in VARIANTS.iter().enumerate() {
            let (took, out) = run(v, &program, &iterations, &dir);
            let reference = &mut reference[v.baseline.min(1)];
            match reference {
                None => *reference = Some(out),
                Some(want) => assert_eq!(&out, want, "{} computed something else", v.name),
            }
            times[i].push(took);
        }
        eprint!("\rrun {}/{runs}", r + 1);
    }
    eprintln!();
    let _ = Command::new(bin_dir().join("mana_status"))
        .arg("--quit")
        .env("MANA_STATUS_FILE", dir.join("status"))
        .output();
    println!(
        "{:<30} {:>10} {:>10} {:>17}",
        "variant", "median s", "paired", "95% interval"
    );
    let mut goal_line = String::new();
    for (i, v) in VARIANTS.iter().enumerate() {
        let (ratio, ci) = paired_ratio(&times[v.baseline], &times[i]);
        let interval = ci.map_or("-".into(), |(lo, hi)| format!("{lo:.4}-{hi:.4}"));
        println!(
            "{:<30} {:>10.3} {:>9.4}x {:>17}",
            v.name,
            median(&mut times[i].clone()).as_secs_f64(),
            ratio,
            interval
        );
        if v.name == "mana_launch" {
            goal_line = format!(
                "mana_launch vs native: goal <= {GOAL}x {}",
                verdict(ci, GOAL)
            );
        }
    }
    println!("{goal_line}");
    let _ = std::fs::remove_dir_all(&dir);
}
