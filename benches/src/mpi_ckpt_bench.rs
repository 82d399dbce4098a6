//! MPI checkpoint and restart times (issue: MPI checkpoint/restart, benchmark).
//!
//! For 2, 4 and 8 ranks with 64 MiB and 1 GiB of incompressible memory per rank
//! (`benches/mpi/ckpt_mem.c`, messages in flight all the time), under `mpiexec.mpich`:
//!
//! * checkpoint time — from `mana_status --checkpoint` until it returns (LATEST renamed,
//!   fsync included) — split into *drain* (agreement between collectives + message drain,
//!   slowest rank), *write* (image write + fsync, slowest rank) and *commit* (the rest:
//!   stopping threads, coordinator round trips, MANIFEST and LATEST);
//! * restart time — from `mpiexec -n N mana_restart` until every rank has resumed, with
//!   the images evicted from the page cache first — split into *restore* (until the
//!   restored runtime runs: reading and mapping the image) and *MPI* (new lower half and
//!   everything below, slowest rank), of which *MPI_Init* (`MPI_Init_thread` in the new
//!   lower half) and *rebuild* (the application's objects created again and their handles
//!   rebound, pending receives posted again) are shown apart.
//!
//! `target/release/mpi_ckpt_bench [--ranks 2,4,8] [--mib 64,1024] [--dir DIR]`

#[path = "common.rs"]
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches(',');
    for (suffix, scale) in [
        ("ms", 1e-3),
        ("µs", 1e-6),
        ("us", 1e-6),
        ("ns", 1e-9),
        ("s", 1.0),
    ] {
        if let Some(v) = s.strip_suffix(suffix) {
            return v.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// The value of `key=` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Job {
    dir: PathBuf,
    status: PathBuf,
    bin: PathBuf,
}

impl Job {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("MANA_STATUS_FILE", &self.status)
            .current_dir(&self.dir);
        c
    }

    fn mpiexec(&self, ranks: usize, args: &[&std::ffi::OsStr], out: &str) -> Child {
        let mut c = self.cmd("mpiexec.mpich");
        c.args(["-n", &ranks.to_string()])
            .args(args)
            .env("MANA_LOG", "mana=debug")
            .stdout(std::fs::File::create(self.dir.join(format!("{out}.out"))).unwrap())
            .stderr(std::fs::File::create(self.dir.join(format!("{out}.err"))).unwrap());
        c.spawn().expect("mpiexec.mpich")
    }

    fn status(&self, args: &[&str]) -> String {
        let out = self
            .cmd(self.bin.join("mana_status").to_str().unwrap())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mana_status {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Evicts a file from the page cache (it was fsynced by the checkpoint).
fn evict(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: advice on our own descriptor.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

struct Figures {
    ckpt: f64,
    drain: f64,
    write: f64,
    image_bytes: u64,
    restart: f64,
    mpi: f64,
    init: f64,
    rebuild: f64,
}

fn one(base: &Path, bin: &Path, program: &Path, ranks: usize, mib: u64) -> Figures {
    let dir = base.join(format!("r{ranks}-m{mib}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let job = Job {
        status: dir.join("status"),
        dir: dir.clone(),
        bin: bin.to_path_buf(),
    };
    let st = job
        .cmd(bin.join("mana_coordinator").to_str().unwrap())
        .args(["--daemon", "--port", "0", "--status-file"])
        .arg(&job.status)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mana_coordinator");
    let ckpt = dir.join("ckpt");
    let stop = dir.join("stop");
    let mib_s = mib.to_string();
    let launch = bin.join("mana_launch");
    let mut run = job.mpiexec(
        ranks,
        &[
            launch.as_os_str(),
            "--ckptdir".as_ref(),
            ckpt.as_os_str(),
            program.as_os_str(),
            mib_s.as_ref(),
            stop.as_os_str(),
        ],
        "launch",
    );
    wait_until("ready", Duration::from_secs(300), || {
        read(&dir.join("launch.out")).contains("ready")
    });
    wait_until("registration", Duration::from_secs(60), || {
        job.status(&["--list"]).lines().count() > ranks
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let gen_line = job.status(&["--checkpoint"]);
    let ckpt_s = t0.elapsed().as_secs_f64();
    let gen = dir.join(gen_line.trim());
    let err = read(&dir.join("launch.err"));
    let mut drain: f64 = 0.0;
    let mut write: f64 = 0.0;
    for line in err.lines() {
        if line.contains("MPI quiet") {
            let a = field(line, "agree").and_then(parse_duration).unwrap_or(0.0);
            let d = field(line, "drain").and_then(parse_duration).unwrap_or(0.0);
            drain = drain.max(a + d);
        }
        if line.contains("image written") {
            let w: f64 = field(line, "write_s")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            let s: f64 = field(line, "sync_s")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            write = write.max(w + s);
        }
    }
    let mut image_bytes = 0;
    for e in std::fs::read_dir(&gen).unwrap() {
        let p = e.unwrap().path();
        image_bytes += p.metadata().map(|m| m.len()).unwrap_or(0);
        evict(&p);
    }
    job.status(&["--kill"]);
    let _ = run.wait();
    for e in std::fs::read_dir(&gen).unwrap() {
        evict(&e.unwrap().path());
    }
    let restart_bin = bin.join("mana_restart");
    let t1 = Instant::now();
    let mut rs = job.mpiexec(
        ranks,
        &[restart_bin.as_os_str(), ckpt.as_os_str()],
        "restart",
    );
    let restarted_all = || {
        read(&dir.join("restart.err"))
            .lines()
            .filter(|l| l.contains("mana::runtime: restarted"))
            .count()
            >= ranks
    };
    wait_until("restart", Duration::from_secs(600), restarted_all);
    let restart_s = t1.elapsed().as_secs_f64();
    let (mut mpi, mut init, mut rebuild) = (0f64, 0f64, 0f64);
    for line in read(&dir.join("restart.err")).lines() {
        if line.contains("MPI restarted with a new lower half") {
            let get = |k: &str| field(line, k).and_then(parse_duration).unwrap_or(0.0);
            mpi = mpi.max(get("total"));
            init = init.max(get("init"));
            rebuild = rebuild.max(get("rebuild"));
        }
    }
    std::fs::write(&stop, b"").unwrap();
    let _ = rs.wait();
    let _ = job.status(&["--quit"]);
    let _ = std::fs::remove_dir_all(&ckpt);
    Figures {
        ckpt: ckpt_s,
        drain,
        write,
        image_bytes,
        restart: restart_s,
        mpi,
        init,
        rebuild,
    }
}

fn list(name: &str, default: &str) -> Vec<u64> {
    common::arg(name)
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|v| v.parse().expect("a number"))
        .collect()
}

fn main() {
    let bin = common::bin_dir();
    let ranks = list("--ranks", "2,4,8");
    let mibs = list("--mib", "64,1024");
    let base =
        PathBuf::from(common::arg("--dir").unwrap_or_else(|| "/tmp/mana-mpi-ckpt-bench".into()));
    std::fs::create_dir_all(&base).unwrap();
    let program = base.join("ckpt_mem");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("mpi/ckpt_mem.c");
    let st = Command::new("mpicc.mpich")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(&src)
        .status()
        .expect("mpicc.mpich");
    assert!(st.success());
    let mut buf = String::new();
    let _ = std::fs::File::open("/proc/cpuinfo").and_then(|mut f| f.read_to_string(&mut buf));
    println!(
        "MANA-rs MPI checkpoint/restart under mpiexec.mpich, {} cores, images in {}",
        buf.matches("processor\t").count(),
        base.display()
    );
    println!("ranks  MiB/rank | checkpoint   drain    write   commit |  image MiB | restart  restore      MPI (MPI_Init  rebuild)");
    for &r in &ranks {
        for &m in &mibs {
            let f = one(&base, &bin, &program, r as usize, m);
            println!(
                "{:5} {:9} | {:9.3}s {:7.3}s {:7.3}s {:7.3}s | {:10.0} | {:6.3}s {:7.3}s {:7.3}s ({:7.3}s {:7.3}s)",
                r,
                m,
                f.ckpt,
                f.drain,
                f.write,
                (f.ckpt - f.drain - f.write).max(0.0),
                f.image_bytes as f64 / (1 << 20) as f64,
                f.restart,
                (f.restart - f.mpi).max(0.0),
                f.mpi,
                f.init,
                f.rebuild
            );
        }
    }
}
