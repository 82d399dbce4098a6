//! What `mana_launch` and `mana_restart` share: finding (or starting) the job's
//! coordinator, telling whether we run under a parallel launcher, and checking that a
//! program can take the runtime through `LD_PRELOAD`.

use crate::client::{probe, ClientError, Probe};
use crate::status;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variables through which launchers give each process its rank.
pub const LAUNCHER_RANK_VARS: [&str; 4] = [
    "SLURM_PROCID",
    "PMI_RANK",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_RANK",
];

/// Seconds an auto-started coordinator waits for its first process before it gives up.
pub const AUTO_IDLE_TIMEOUT_SECS: u64 = 300;

/// The first launcher rank variable that is set, with its value: `Some` means this
/// process is one rank of a job started by `srun`/`mpiexec`.
pub fn launcher_rank_var() -> Option<(&'static str, String)> {
    LAUNCHER_RANK_VARS.iter().find_map(|&v| {
        std::env::var(v)
            .ok()
            .filter(|s| !s.is_empty())
            .map(|s| (v, s))
    })
}

/// True when running under a parallel launcher (Slurm, Hydra, PMIx, Open MPI).
pub fn under_launcher() -> bool {
    launcher_rank_var().is_some()
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Coordinator(#[from] ClientError),
    #[error("no coordinator reachable: status file {} does not exist (start one with `mana_coordinator --daemon --status-file {}`)", .0.display(), .0.display())]
    NoStatusFile(PathBuf),
    #[error("no coordinator reachable (status file {}), and {var} is set, so this is one rank of a parallel job, where every rank would start its own coordinator: run `mana_coordinator --daemon` before the job step (e.g. in the batch script){detail}", path.display())]
    UnderLauncher {
        path: PathBuf,
        var: &'static str,
        detail: String,
    },
    #[error("cannot find mana_coordinator at {} (it is expected beside {tool})", path.display())]
    NoCoordinatorBinary { path: PathBuf, tool: String },
    #[error("cannot start {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a coordinator failed: {0}")]
    StartFailed(String),
    #[error("program {0} not found in PATH")]
    ProgramNotFound(String),
    #[error("program {}: {msg}", path.display())]
    Program { path: PathBuf, msg: String },
    #[error("{} is statically linked; MANA injects its runtime with LD_PRELOAD and needs a dynamically linked program", .0.display())]
    Static(PathBuf),
}

/// Finds the job's coordinator and returns the absolute path of its status file.
///
/// * `explicit` (a `--status-file` the user gave): it must name a reachable coordinator.
/// * otherwise [`status::default_path`]; if no coordinator answers there, start
///   `mana_coordinator --daemon --port 0 --exit-on-last` from the directory of the
///   running executable — but never under a launcher (see [`under_launcher`]), where
///   every rank would start its own: that is an error telling the user what to run.
///
/// `tool` names the calling program in messages (`mana_launch`, `mana_restart`).
pub fn ensure_coordinator(
    explicit: Option<&Path>,
    interval: Option<u64>,
    tool: &str,
) -> Result<PathBuf, LaunchError> {
    let path = status::absolute(&explicit.map_or_else(status::default_path, Path::to_path_buf));
    let stale = match probe(&path) {
        Probe::Running(s) => {
            tracing::debug!(addr = %s.addr(), status_file = %path.display(), "using the running coordinator");
            return Ok(path);
        }
        Probe::Missing => None,
        Probe::Stale(e) => Some(e),
    };
    if explicit.is_some() {
        return Err(match stale {
            Some(e) => e.into(),
            None => LaunchError::NoStatusFile(path),
        });
    }
    if let Some((var, _)) = launcher_rank_var() {
        return Err(LaunchError::UnderLauncher {
            detail: stale.map_or_else(String::new, |e| format!(" ({e})")),
            path,
            var,
        });
    }
    start_coordinator(&path, interval, tool)?;
    Ok(path)
}

/// Runs `mana_coordinator --daemon` (beside the current executable) and waits until it
/// listens.
fn start_coordinator(path: &Path, interval: Option<u64>, tool: &str) -> Result<(), LaunchError> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let bin = exe_dir.join("mana_coordinator");
    if !bin.is_file() {
        return Err(LaunchError::NoCoordinatorBinary {
            path: bin,
            tool: tool.to_string(),
        });
    }
    let mut cmd = Command::new(&bin);
    // Loopback only: a coordinator a tool starts by itself serves this one process (a
    // parallel job is refused above and starts its own with --daemon).
    // A fresh secret: a stale status file here may belong to another job whose processes
    // wait for a replacement of their own coordinator (issue 10: only an explicit
    // `mana_coordinator` adopts a job).
    cmd.args([
        "--daemon",
        "--fresh-secret",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--exit-on-last",
        "--idle-timeout",
    ])
    .arg(AUTO_IDLE_TIMEOUT_SECS.to_string())
    .arg("--status-file")
    .arg(path);
    if let Some(i) = interval {
        cmd.arg("--interval").arg(i.to_string());
    }
    tracing::info!(command = ?cmd, "starting a coordinator");
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| LaunchError::Spawn {
            path: bin.clone(),
            source,
        })?;
    match probe(path) {
        Probe::Running(s) => {
            tracing::info!(addr = %s.addr(), status_file = %path.display(), "coordinator started");
            Ok(())
        }
        // Another launch may have won the race to start one; the probe above covers
        // that. Otherwise report what the coordinator said.
        other => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            Err(LaunchError::StartFailed(
                if !out.status.success() && !said.is_empty() {
                    said.to_string()
                } else {
                    match other {
                        Probe::Stale(e) => e.to_string(),
                        _ => format!(
                            "{} exited with {} but wrote no status file {}",
                            bin.display(),
                            out.status,
                            path.display()
                        ),
                    }
                },
            ))
        }
    }
}

/// Resolves `program` like `execvp` does: a name with a slash is a path, anything else is
/// searched in `$PATH`. The result must be an executable file.
pub fn resolve_program(program: &str) -> Result<PathBuf, LaunchError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        let meta = p.metadata().map_err(|e| LaunchError::Program {
            path: p.clone(),
            msg: if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".into()
            } else {
                e.to_string()
            },
        })?;
        if !meta.is_file() || !executable(&p) {
            return Err(LaunchError::Program {
                path: p,
                msg: "is not an executable file".into(),
            });
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
            .join(program)
        })
        .find(|p| executable(p))
        .ok_or_else(|| LaunchError::ProgramNotFound(program.to_string()))
}

/// Refuses programs that cannot take `LD_PRELOAD`: a statically linked ELF (no
/// `PT_INTERP`, static-pie included). Scripts (`#!`) are accepted: their interpreter
/// takes the runtime.
pub fn check_dynamic(path: &Path) -> Result<(), LaunchError> {
    use goblin::container::{Container, Ctx, Endian};
    use goblin::elf::{program_header::PT_INTERP, Elf, ProgramHeader};
    let err = |msg: String| LaunchError::Program {
        path: path.to_path_buf(),
        msg,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut head = Vec::with_capacity(64 * 1024);
    (&mut f)
        .take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|e| err(e.to_string()))?;
    if head.starts_with(b"#!") {
        return Ok(());
    }
    if !head.starts_with(b"\x7fELF") {
        return Err(err("is neither an ELF executable nor a script".into()));
    }
    let header = Elf::parse_header(&head).map_err(|e| err(format!("bad ELF header: {e}")))?;
    let elf = Elf::lazy_parse(header).map_err(|e| err(format!("bad ELF header: {e}")))?;
    let ctx = Ctx::new(
        if elf.is_64 {
            Container::Big
        } else {
            Container::Little
        },
        Endian::from(elf.little_endian),
    );
    let end = header.e_phoff as usize + header.e_phnum as usize * header.e_phentsize as usize;
    if end > head.len() {
        // Program headers beyond the first 64 KiB: rare, read the whole file.
        f.read_to_end(&mut head).map_err(|e| err(e.to_string()))?;
    }
    let phdrs = ProgramHeader::parse(&head, header.e_phoff as usize, header.e_phnum as usize, ctx)
        .map_err(|e| err(format!("bad ELF program headers: {e}")))?;
    if phdrs.iter().any(|ph| ph.p_type == PT_INTERP) {
        Ok(())
    } else {
        Err(LaunchError::Static(path.to_path_buf()))
    }
}
