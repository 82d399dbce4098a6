//! Checkpoint/restart throughput of a large process, as a ratio to this disk's measured
//! sequential bandwidth, plus image size vs touched memory and the fixed cost for a tiny
//! process.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/ckpt_bench [--gib 2] [--dir DIR]
//! ```
//! Checkpoint time runs from the request (`mana_status --checkpoint`) until LATEST is
//! renamed (that command returns only after the commit, fsync included). Restart time
//! runs from starting `mana_restart` (image evicted from the page cache with
//! `posix_fadvise(DONTNEED)`) until the restored program has resumed and read every
//! touched byte of its memory.
mod common;
use common::{arg, bin_dir};

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
static double now(void){ struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9; }
int main(int argc, char **argv) {
    size_t touched = strtoull(argv[1], 0, 10), untouched = strtoull(argv[2], 0, 10);
    unsigned long *m = mmap(0, touched, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
    char *spare = mmap(0, untouched, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED || spare == MAP_FAILED) { perror("mmap"); return 1; }
    unsigned long x = 88172645463325252UL;
    for (size_t i = 0; i < touched / 8; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; m[i] = x; }
    printf("ready\n"); fflush(stdout);
    char c;
    while (read(0, &c, 1) == 1) {
        double t0 = now();
        unsigned long s = 0;
        for (size_t i = 0; i < touched / 8; i += 512) s += m[i];
        printf("resumed %.6f touched %.6f sum %lu\n", t0, now(), s); fflush(stdout);
    }
    return 0;
}
"#;

fn now_mono() -> f64 {
    // SAFETY: zeroed timespec is a valid out-buffer.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn drop_cache(path: &Path) {
    if let Ok(f) = File::open(path) {
        // SAFETY: advisory call on our own descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Sequential write (with fsync) and cold read bandwidth of `dir`, bytes per second.
fn disk_bandwidth(dir: &Path, bytes: u64) -> (f64, f64) {
    let path = dir.join("dd.tmp");
    let mut buf = vec![0u8; 8 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    let t = Instant::now();
    let mut f = File::create(&path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
    let w = bytes as f64 / t.elapsed().as_secs_f64();
    drop(f);
    drop_cache(&path);
    let t = Instant::now();
    let mut f = File::open(&path).unwrap();
    let mut total = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let r = total as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path).ok();
    (w, r)
}

fn wait_line(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("program ended before printing {prefix:?}");
        }
        if line.starts_with(prefix) {
            return line;
        }
    }
}

struct Run {
    ckpt_s: f64,
    /// Of which: streaming memory into the page cache, and fsync (from libmana's log).
    write_s: f64,
    sync_s: f64,
    restart_resume_s: f64,
    restart_touched_s: f64,
    image_bytes: u64,
}

fn spawn(cmd: &mut Command) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut c = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let i = c.stdin.take().unwrap();
    let o = BufReader::new(c.stdout.take().unwrap());
    (c, i, o)
}

fn one(dir: &Path, prog: &Path, status: &Path, touched: u64, untouched: u64) -> Run {
    let ckpt = dir.join(format!("ckpt-{touched}"));
    let _ = std::fs::remove_dir_all(&ckpt);
    let b = bin_dir();
    let log = dir.join(format!("launch-{touched}.log"));
    let (mut child, _stdin, mut out) = spawn(
        Command::new(b.join("mana_launch"))
            .env("MANA_LOG", "info")
            .stderr(File::create(&log).unwrap())
            .arg("--status-file")
            .arg(status)
            .arg("--ckptdir")
            .arg(&ckpt)
            .arg(prog)
            .arg(touched.to_string())
            .arg(untouched.to_string()),
    );
    wait_line(&mut out, "ready");
    let t = Instant::now();
    let st = Command::new(b.join("mana_status"))
        .arg("--status-file")
        .arg(status)
        .arg("--checkpoint")
        .output()
        .unwrap();
    let ckpt_s = t.elapsed().as_secs_f64();
    assert!(
        st.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let gen_dir = PathBuf::from(String::from_utf8_lossy(&st.stdout).trim().to_string());
    let image = gen_dir.join("rank-00000.mana");
    let image_bytes = std::fs::metadata(&image).unwrap().len();
    child.kill().unwrap();
    child.wait().unwrap();
    let field = |name: &str| -> f64 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("image written"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|v| v.parse().ok())
            })
            .next_back()
            .unwrap_or(f64::NAN)
    };
    let (write_s, sync_s) = (field("write_s="), field("sync_s="));
    drop_cache(&image);
    let t0 = now_mono();
    let (mut child, mut stdin, mut out) = spawn(
        Command::new(b.join("mana_restart"))
            .arg("--status-file")
            .arg(status)
            .arg(&ckpt),
    );
    stdin.write_all(b"x").unwrap();
    stdin.flush().unwrap();
    let line = wait_line(&mut out, "resumed");
    let f: Vec<&str> = line.split_whitespace().collect();
    let resumed: f64 = f[1].parse().unwrap();
    let touched_at: f64 = f[3].parse().unwrap();
    drop(stdin);
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&ckpt);
    Run {
        ckpt_s,
        write_s,
        sync_s,
        restart_resume_s: resumed - t0,
        restart_touched_s: touched_at - t0,
        image_bytes,
    }
}

fn main() {
    let gib: f64 = arg("--gib").map(|v| v.parse().unwrap()).unwrap_or(2.0);
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|| "bench-tmp".into()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = std::path::absolute(&dir).unwrap();
    let touched = (gib * (1u64 << 30) as f64) as u64;
    let untouched = 1u64 << 30;

    let src = dir.join("bench_prog.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let prog = dir.join("bench_prog");
    let cc = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&prog)
        .arg(&src)
        .status()
        .unwrap();
    assert!(cc.success(), "gcc failed");

    let status = dir.join("bench.rc");
    let _ = Command::new(bin_dir().join("mana_status"))
        .arg("--status-file")
        .arg(&status)
        .arg("--quit")
        .output();
    let st = Command::new(bin_dir().join("mana_coordinator"))
        .args(["--daemon", "--port", "0", "--status-file"])
        .arg(&status)
        .status()
        .unwrap();
    assert!(st.success(), "cannot start the coordinator");

    println!(
        "MANA-rs checkpoint/restart benchmark ({gib} GiB touched + 1 GiB untouched, dir {})",
        dir.display()
    );
    // This VM's disk varies a lot from minute to minute: measure it right before and right
    // after the checkpoint/restart and compare against the mean.
    let (w1, r1) = disk_bandwidth(&dir, touched);
    let big = one(&dir, &prog, &status, touched, untouched);
    let (w2, r2) = disk_bandwidth(&dir, touched);
    let (w, r) = ((w1 + w2) / 2.0, (r1 + r2) / 2.0);
    println!(
        "disk: sequential write+fsync {:.0} MiB/s before, {:.0} after; cold read {:.0} before, {:.0} after",
        w1 / 1048576.0,
        w2 / 1048576.0,
        r1 / 1048576.0,
        r2 / 1048576.0
    );
    let ckpt_bw = big.image_bytes as f64 / big.ckpt_s;
    let rst_bw = big.image_bytes as f64 / big.restart_touched_s;
    println!(
        "checkpoint: {:.3} s, {:.0} MiB/s = {:.2}x mean disk write bandwidth",
        big.ckpt_s,
        ckpt_bw / 1048576.0,
        ckpt_bw / w
    );
    println!(
        "  of which: writing memory into the page cache {:.3} s ({:.0} MiB/s), fsync {:.3} s",
        big.write_s,
        big.image_bytes as f64 / big.write_s / 1048576.0,
        big.sync_s
    );
    println!(
        "restart:    {:.3} s to resume, {:.3} s until all memory was read = {:.0} MiB/s = {:.2}x mean disk read bandwidth",
        big.restart_resume_s,
        big.restart_touched_s,
        rst_bw / 1048576.0,
        rst_bw / r
    );
    println!(
        "image size: {:.1} MiB for {:.1} MiB touched (+{:.0} MiB mapped but untouched) = {:.3}x touched\n",
        big.image_bytes as f64 / 1048576.0,
        touched as f64 / 1048576.0,
        untouched as f64 / 1048576.0,
        big.image_bytes as f64 / touched as f64
    );
    let tiny = one(&dir, &prog, &status, 1 << 20, 4096);
    println!(
        "tiny process (1 MiB): checkpoint {:.3} s (write {:.3} s, fsync {:.3} s), restart {:.3} s, image {:.1} MiB",
        tiny.ckpt_s,
        tiny.write_s,
        tiny.sync_s,
        tiny.restart_touched_s,
        tiny.image_bytes as f64 / 1048576.0
    );
    let _ = Command::new(bin_dir().join("mana_status"))
        .arg("--status-file")
        .arg(&status)
        .arg("--quit")
        .output();
}
