//! The status file: where the job's coordinator listens and which secret a client must
//! present. A small text file, mode 0600, replaced atomically:
//!
//! ```text
//! host=node17
//! port=7779
//! secret=5f0c…(64 hex digits)
//! pid=41234
//! ```
//!
//! Every command finds it through `--status-file`, else [`default_path`].

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Environment variable naming the status file (set by `mana_launch` for the runtime).
pub const STATUS_FILE_ENV: &str = "MANA_STATUS_FILE";

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status file {0} does not exist (is a coordinator running? start one with `mana_coordinator --daemon`)")]
    Missing(PathBuf),
    #[error("status file {path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("status file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read random bytes for the secret from /dev/urandom: {0}")]
    Random(std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFile {
    pub host: String,
    pub port: u16,
    pub secret: String,
    pub pid: i32,
}

impl StatusFile {
    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Addresses to try, IPv4 first (the coordinator binds `0.0.0.0`); `127.0.0.1` if
    /// the host name does not resolve.
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = match (self.host.as_str(), self.port).to_socket_addrs() {
            Ok(it) => it.collect(),
            Err(e) => {
                tracing::debug!(host = %self.host, error = %e, "host does not resolve; using 127.0.0.1");
                Vec::new()
            }
        };
        addrs.sort_by_key(|a| !a.is_ipv4());
        addrs.dedup();
        if addrs.is_empty() {
            addrs.push(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)));
        }
        addrs
    }

    /// Reads and parses a status file; the error names the file.
    pub fn read(path: &Path) -> Result<StatusFile, StatusError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StatusError::Missing(path.to_path_buf()))
            }
            Err(source) => {
                return Err(StatusError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let status = Self::parse(&text).map_err(|msg| StatusError::Parse {
            path: path.to_path_buf(),
            msg,
        })?;
        // The secret is the job's key: a file others can read gives it away.
        if let Ok(md) = fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:04o}"),
                    "the status file can be read or written by other users, who can then checkpoint or kill the job (chmod 600 it)"
                );
            }
        }
        Ok(status)
    }

    fn parse(text: &str) -> Result<StatusFile, String> {
        let (mut host, mut port, mut secret, mut pid) = (None, None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected key=value, found {line:?}", n + 1))?;
            let bad = |what: &str| format!("line {}: {what} {value:?} is not valid", n + 1);
            match key.trim() {
                "host" => host = Some(value.trim().to_string()),
                "port" => port = Some(value.trim().parse::<u16>().map_err(|_| bad("port"))?),
                "secret" => secret = Some(value.trim().to_string()),
                "pid" => pid = Some(value.trim().parse::<i32>().map_err(|_| bad("pid"))?),
                _ => {} // unknown keys are ignored, so later versions may add some
            }
        }
        let missing = |k: &str| format!("no {k}= line (not a MANA status file?)");
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or_else(|| missing("host"))?;
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("secret"))?;
        Ok(StatusFile {
            host,
            port: port.ok_or_else(|| missing("port"))?,
            secret,
            pid: pid.ok_or_else(|| missing("pid"))?,
        })
    }

    pub fn to_text(&self) -> String {
        format!(
            "host={}\nport={}\nsecret={}\npid={}\n",
            self.host, self.port, self.secret, self.pid
        )
    }

    /// Writes the file with mode 0600: a temporary file beside it, `fsync`, `rename`.
    pub fn write(&self, path: &Path) -> Result<(), StatusError> {
        let io = |source| StatusError::Io {
            path: path.to_path_buf(),
            source,
        };
        // A fresh temporary that cannot be a planted file or symlink (O_EXCL, O_NOFOLLOW),
        // under a name no one can guess ahead.
        let mut suffix = [0u8; 8];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut suffix))
            .map_err(StatusError::Random)?;
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".tmp.{}", u64::from_le_bytes(suffix)));
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&tmp)?;
            // The mode above applies only to a new file; make sure of it anyway.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            f.write_all(self.to_text().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// Removes `path` if it still describes the coordinator with `pid` (another
    /// coordinator may have replaced it since).
    pub fn remove_if_owned(path: &Path, pid: i32) {
        match StatusFile::read(path) {
            Ok(s) if s.pid == pid => match fs::remove_file(path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed status file"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove status file")
                }
            },
            Ok(s) => {
                tracing::info!(path = %path.display(), other_pid = s.pid, "status file names another coordinator; left in place")
            }
            Err(_) => {}
        }
    }
}

/// A fresh secret: 32 random bytes from `/dev/urandom`, as 64 hex digits.
pub fn new_secret() -> Result<String, StatusError> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(StatusError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `$MANA_STATUS_FILE` if set; else inside a Slurm job `~/.mana-slurm-$SLURM_JOB_ID.rc`;
/// else `~/.mana.rc`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os(STATUS_FILE_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = home_dir();
    match std::env::var("SLURM_JOB_ID") {
        Ok(job) if !job.is_empty() => home.join(format!(".mana-slurm-{job}.rc")),
        _ => home.join(".mana.rc"),
    }
}

fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(u)) => u.dir,
        _ => PathBuf::from("/tmp"),
    }
}

/// `path` made absolute against the current directory (not canonicalized: the file may
/// not exist yet).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The log file of a daemonized coordinator: `<status file>.log`.
pub fn log_path(status_path: &Path) -> PathBuf {
    let mut name = status_path.as_os_str().to_os_string();
    name.push(".log");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_read_round_trip_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("mana-status-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("status.rc");
        let s = StatusFile {
            host: "node1".into(),
            port: 4242,
            secret: new_secret().unwrap(),
            pid: 77,
        };
        assert_eq!(s.secret.len(), 64);
        s.write(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(StatusFile::read(&p).unwrap(), s);
        StatusFile::remove_if_owned(&p, 78);
        assert!(p.exists());
        StatusFile::remove_if_owned(&p, 77);
        assert!(!p.exists());
        let e = StatusFile::read(&p).unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("does not exist"),
            "{e}"
        );
        fs::write(&p, "host=a\nport=zz\n").unwrap();
        let e = StatusFile::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("port") && e.contains(&p.display().to_string()),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unresolvable_host_falls_back_to_loopback() {
        let s = StatusFile {
            host: "no-such-host.invalid".into(),
            port: 9,
            secret: "x".into(),
            pid: 1,
        };
        assert_eq!(
            s.socket_addrs(),
            vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 9))]
        );
    }
}
