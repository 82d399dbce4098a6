//! MPI call overhead of the split process: OSU-style ping-pong latency (8 B … 1 MiB),
//! windowed bandwidth and 8 B `MPI_Allreduce` latency, natively and under `mana_launch`,
//! in one run, with the differences and ratios printed.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/mpi_bench [--ranks 2] [--runs 3]
//! ```
//! Goal (split-process issue): ≤ native + 100 ns at 8 B, ≥ 0.99× native bandwidth at 1 MiB.
//! Each configuration runs `--runs` times alternately and the best figure counts (the
//! machine has 2 cores and is shared: the minimum is the least disturbed run).
mod common;
use common::{arg, bin_dir};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

type Figures = BTreeMap<(String, u64), f64>;

/// The UCX settings the lower half runs with (mana_lower::loader::default_env): a native
/// run with the same settings isolates the cost of crossing into the lower half.
const LOWER_UCX_ENV: [(&str, &str); 3] = [
    ("UCX_MEM_EVENTS", "no"),
    ("UCX_ERROR_SIGNALS", ""),
    ("UCX_DEBUG_SIGNO", "0"),
];

fn run(
    ranks: &str,
    program: &[&std::path::Path],
    status: &std::path::Path,
    env: &[(&str, &str)],
) -> Figures {
    let out = Command::new("mpiexec.mpich")
        .args(["-bind-to", "core", "-n", ranks])
        .args(program)
        .env("MANA_STATUS_FILE", status)
        .envs(env.iter().copied())
        .output()
        .expect("mpiexec.mpich (install MPICH: scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut f = Figures::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let p: Vec<&str> = l.split_whitespace().collect();
        if p.len() == 3 {
            f.insert(
                (p[0].to_string(), p[1].parse().unwrap()),
                p[2].parse().unwrap(),
            );
        }
    }
    f
}

fn best(into: &mut Figures, from: Figures) {
    for (k, v) in from {
        let higher_is_better = k.0 == "bandwidth";
        let e = into.entry(k).or_insert(v);
        *e = if higher_is_better { e.max(v) } else { e.min(v) };
    }
}

fn main() {
    let ranks = arg("--ranks").unwrap_or_else(|| "2".into());
    let runs: usize = arg("--runs").map(|v| v.parse().unwrap()).unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("mana-mpi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mpi/osu.c");
    let prog = dir.join("osu");
    let st = Command::new("mpicc.mpich")
        .args(["-O2", "-Wno-stringop-overflow", "-o"])
        .arg(&prog)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "mpicc.mpich failed");
    let status = dir.join("status");
    let st = Command::new(bin_dir().join("mana_coordinator"))
        .args(["--daemon", "--port", "0", "--status-file"])
        .arg(&status)
        .status()
        .unwrap();
    assert!(st.success());
    let launch = bin_dir().join("mana_launch");
    let (mut native, mut same_ucx, mut mana) = (Figures::new(), Figures::new(), Figures::new());
    for _ in 0..runs {
        best(&mut native, run(&ranks, &[&prog], &status, &[]));
        best(
            &mut same_ucx,
            run(&ranks, &[&prog], &status, &LOWER_UCX_ENV),
        );
        best(&mut mana, run(&ranks, &[&launch, &prog], &status, &[]));
    }
    let _ = Command::new(bin_dir().join("mana_status"))
        .arg("--status-file")
        .arg(&status)
        .arg("--quit")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    println!("MANA-rs MPI overhead, {ranks} ranks bound to cores, best of {runs} runs");
    println!("-- native vs under mana_launch");
    compare(&native, &mana);
    println!("-- native with the lower half's UCX settings (UCX_MEM_EVENTS=no, ...) vs under mana_launch");
    println!("   (the cost of crossing into the lower half alone)");
    compare(&same_ucx, &mana);
}

fn compare(native: &Figures, mana: &Figures) {
    for (k, n) in native {
        let m = mana[k];
        match k.0.as_str() {
            "bandwidth" => println!(
                "bandwidth {:>8} B: {n:>10.1} vs {m:>10.1} MB/s  = {:.3}x native",
                k.1,
                m / n
            ),
            _ => println!(
                "{:<9} {:>8} B: {n:>10.3} vs {m:>10.3} us   = native + {:.0} ns",
                k.0,
                k.1,
                (m - n) * 1000.0
            ),
        }
    }
}
