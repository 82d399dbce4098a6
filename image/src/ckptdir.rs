//! Checkpoint directory layout:
//!
//! ```text
//! ckpt/
//!   gen-000003/
//!     rank-00000.mana ...   one image per process
//!     MANIFEST              JSON: generation, world size, one entry per image
//!   LATEST                  "gen-000003\n": the newest committed generation
//! ```
//! `LATEST` is replaced by writing a fresh temporary, `fsync`, `rename`, `fsync` of the
//! directory — only after every image and the `MANIFEST` are synced — so it never names
//! an incomplete generation.
//!
//! The directory is someone's data (issue 10, item 2): checkpoints are only written into a
//! root owned by the user and not writable by every user ([`check_private`]; group write
//! is the user's choice); generation
//! directories are made with mode 0700 and, when they exist already (another rank made
//! them), accepted only as real directories of the user's with that mode; every file is
//! created with `openat` relative to the generation's descriptor, `O_CREAT|O_EXCL|
//! O_NOFOLLOW`, mode 0600, and MANIFEST and LATEST under a fresh temporary name renamed
//! into place — so no planted file, symlink or directory is ever written through.

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CkptDirError {
    #[error("checkpoint directory {0} does not exist")]
    Missing(PathBuf),
    #[error("checkpoint directory {0} has no committed generation (no LATEST file)")]
    NoCommitted(PathBuf),
    #[error("{path}: {msg}")]
    BadLatest { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    BadManifest { path: PathBuf, msg: String },
    /// A directory or file someone other than the user could have placed or could change.
    #[error("{path}: {why}; MANA writes checkpoints only into a directory of yours that not everyone can write (chmod o-w, or choose another --ckptdir)")]
    Unsafe { path: PathBuf, why: String },
    #[error("checkpoint directory {} is in use by another job: {holder}; give each job its own --ckptdir", path.display())]
    InUse { path: PathBuf, holder: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CkptDirError + '_ {
    move |source| CkptDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub rank: u32,
    pub host: String,
    pub pid: i32,
    pub file: String,
    pub bytes: u64,
    /// xxh3-64 of the image's header (identifies the exact image written).
    pub header_checksum: u64,
    /// The largest process or thread id the image holds: a restart moves the next id its
    /// pid namespace hands out past every image's (ranks of a node share a namespace).
    #[serde(default)]
    pub max_id: i32,
    /// The descendants of the launched process (child processes, theirs…) checkpointed
    /// with it in this generation, one image each (issue 11, item 5).
    #[serde(default)]
    pub members: Vec<MemberEntry>,
}

/// One descendant of a job member's launched process ([`ManifestEntry::members`]): its
/// image `rank-RRRRR.pPID.mana` ([`member_image_name`]) and where it hangs in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// Its process id (the one a restart gives back).
    pub pid: i32,
    /// Its parent: the launched process's saved pid or another member's.
    pub ppid: i32,
    pub file: String,
    pub bytes: u64,
    pub header_checksum: u64,
    pub max_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub generation: u64,
    pub world_size: u32,
    pub created_unix_ns: u64,
    /// MPI library and transport used (empty for non-MPI processes).
    pub mpi: String,
    pub images: Vec<ManifestEntry>,
}

impl Manifest {
    /// Reads and checks the MANIFEST at `path`: every image it names is a plain file name
    /// inside its generation (never `..`, a path, or empty) — a MANIFEST is input that
    /// someone else may have written.
    pub fn load(path: &Path) -> Result<Manifest, CkptDirError> {
        let text = fs::read_to_string(path).map_err(io(path))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| CkptDirError::BadManifest {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let bad = |msg: String| CkptDirError::BadManifest {
            path: path.to_path_buf(),
            msg,
        };
        let plain = |f: &str| {
            !(f.is_empty() || f.len() > 255 || f.contains(['/', '\0']) || f == "." || f == "..")
        };
        // PID_MAX_LIMIT on 64-bit Linux.
        let id = |v: i32| (0..4 << 20).contains(&v);
        for e in &m.images {
            let f = e.file.as_str();
            if !plain(f) {
                return Err(bad(format!(
                    "image file {f:?} of rank {} is not a file name inside the generation",
                    e.rank
                )));
            }
            if !id(e.max_id) {
                return Err(bad(format!(
                    "rank {}: max_id {} is no process id",
                    e.rank, e.max_id
                )));
            }
            if e.members.len() > MAX_MEMBERS {
                return Err(bad(format!(
                    "rank {}: {} descendant processes (at most {MAX_MEMBERS})",
                    e.rank,
                    e.members.len()
                )));
            }
            for (i, c) in e.members.iter().enumerate() {
                if !plain(&c.file) || c.file == f {
                    return Err(bad(format!(
                        "image file {:?} of rank {}'s process {} is not a file name inside the generation",
                        c.file, e.rank, c.pid
                    )));
                }
                if c.pid <= 1 || !id(c.pid) || c.ppid <= 0 || !id(c.ppid) || !id(c.max_id) {
                    return Err(bad(format!(
                        "rank {}: descendant ids pid {} ppid {} max_id {} are no process ids",
                        e.rank, c.pid, c.ppid, c.max_id
                    )));
                }
                if e.members[..i]
                    .iter()
                    .any(|d| d.pid == c.pid || d.file == c.file)
                {
                    return Err(bad(format!(
                        "rank {}: descendant process {} is listed twice",
                        e.rank, c.pid
                    )));
                }
            }
        }
        Ok(m)
    }
}

#[derive(Debug, Clone)]
pub struct CkptDir {
    pub root: PathBuf,
}

pub fn gen_name(generation: u64) -> String {
    format!("gen-{generation:06}")
}

pub fn image_name(rank: u32) -> String {
    format!("rank-{rank:05}.mana")
}

/// Descendant processes a job member may have checkpointed with it.
pub const MAX_MEMBERS: usize = 256;

/// The image of a descendant `pid` of rank `rank`'s launched process.
pub fn member_image_name(rank: u32, pid: i32) -> String {
    format!("rank-{rank:05}.p{pid}.mana")
}

impl CkptDir {
    pub fn new(root: impl Into<PathBuf>) -> CkptDir {
        CkptDir { root: root.into() }
    }

    pub fn gen_dir(&self, generation: u64) -> PathBuf {
        self.root.join(gen_name(generation))
    }

    pub fn image_path(&self, generation: u64, rank: u32) -> PathBuf {
        self.gen_dir(generation).join(image_name(rank))
    }

    pub fn latest_path(&self) -> PathBuf {
        self.root.join("LATEST")
    }

    /// The newest committed generation, or `None` if there is none yet.
    pub fn latest(&self) -> Result<Option<u64>, CkptDirError> {
        if !self.root.is_dir() {
            return Err(CkptDirError::Missing(self.root.clone()));
        }
        let p = self.latest_path();
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&p)(e)),
        };
        let name = text.trim();
        let n = name
            .strip_prefix("gen-")
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| CkptDirError::BadLatest {
                path: p.clone(),
                msg: format!("does not name a generation (found {name:?})"),
            })?;
        if !self.gen_dir(n).is_dir() {
            return Err(CkptDirError::BadLatest {
                path: p,
                msg: format!("names {name}, which does not exist"),
            });
        }
        Ok(Some(n))
    }

    /// The highest generation number in the directory: of its `gen-NNNNNN` entries and
    /// of the one `LATEST` names (0 if none, or if the directory cannot be read).
    pub fn highest_generation(&self) -> u64 {
        let named = fs::read_to_string(self.latest_path())
            .ok()
            .and_then(|t| t.trim().strip_prefix("gen-")?.parse::<u64>().ok());
        fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("gen-")?
                    .parse::<u64>()
                    .ok()
            })
            .chain(named)
            .max()
            .unwrap_or(0)
    }

    /// The newest committed generation; an error if there is none.
    pub fn require_latest(&self) -> Result<u64, CkptDirError> {
        self.latest()?
            .ok_or_else(|| CkptDirError::NoCommitted(self.root.clone()))
    }

    pub fn read_manifest(&self, generation: u64) -> Result<Manifest, CkptDirError> {
        let p = self.gen_dir(generation).join("MANIFEST");
        let m = Manifest::load(&p)?;
        if m.generation != generation {
            return Err(CkptDirError::BadManifest {
                path: p,
                msg: format!(
                    "describes generation {}, expected {generation}",
                    m.generation
                ),
            });
        }
        Ok(m)
    }

    /// The root (made with mode 0700 if missing), checked private, opened.
    fn open_root(&self) -> Result<File, CkptDirError> {
        if !self.root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(io(&self.root))?;
        }
        // Opened first, then checked through the descriptor every later openat uses.
        let root = open_dir(&self.root, true)?;
        check_private_file(&root, &self.root, true)?;
        Ok(root)
    }

    /// Creates `gen-NNNNNN/` for a generation being written (and the root, mode 0700, if
    /// missing) and returns its directory descriptor; see the module comment.
    pub fn create_gen_dir(&self, generation: u64) -> Result<File, CkptDirError> {
        let root = self.open_root()?;
        let d = self.gen_dir(generation);
        let name = cstr(&gen_name(generation));
        // SAFETY: `name` is NUL-terminated; `root` is an open directory.
        if unsafe { libc::mkdirat(root.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(io(&d)(e));
            }
            // Another process of the job made it: only ever a real directory of ours.
        }
        let gdir = open_dir_at(&root, &gen_name(generation), &d)?;
        check_private_file(&gdir, &d, true)?;
        // A generation with a MANIFEST was written to the end by someone: never added to.
        let manifest = cstr("MANIFEST");
        // SAFETY: an all-zero stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `manifest` is NUL-terminated, `st` a valid out-buffer, `gdir` open.
        if unsafe {
            libc::fstatat(
                gdir.as_raw_fd(),
                manifest.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } == 0
        {
            return Err(CkptDirError::Unsafe {
                path: d,
                why: "this generation exists already, with a MANIFEST (written by another job?): generation numbers are never reused".into(),
            });
        }
        Ok(gdir)
    }

    /// Creates this process's image of `generation` (see [`CkptDir::create_gen_dir`]):
    /// `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600. A file in the way is refused, never
    /// replaced: generation numbers are not reused in a directory, so it belongs to
    /// someone else (another job writing here, or a planted file).
    pub fn create_image(&self, generation: u64, rank: u32) -> Result<File, CkptDirError> {
        self.create_named_image(generation, &image_name(rank))
    }

    /// Creates the image `name` (a plain file name) in the generation's directory.
    pub fn create_named_image(&self, generation: u64, name: &str) -> Result<File, CkptDirError> {
        let gdir = self.create_gen_dir(generation)?;
        let path = self.gen_dir(generation).join(name);
        create_at(&gdir, name, &path).map_err(|e| match e {
            CkptDirError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                CkptDirError::Unsafe {
                    path: path.clone(),
                    why: "exists already (another job writing into this directory?); it is not replaced".into(),
                }
            }
            e => e,
        })
    }

    /// Claims the directory for the job `job` (a token every process of the job derives
    /// from its secret, [`job_token`]): one writer per directory (issue 10, item 3). Every
    /// process of the job holds the returned lease as long as it lives. A directory
    /// leased by another live job is refused, naming it; one whose holders are gone (a
    /// finished or killed job) is taken over.
    ///
    /// Two kinds of lease ([`LeaseMode`]): a shared `flock` on `.lease`, released by the
    /// kernel when the holders end; where the file system does not honour `flock` (Lustre
    /// mounted without `-o flock` says `ENOSYS`), or where it honours it only on one node
    /// (`localflock`, NFS `local_lock=flock`: ask for [`LeaseMode::Heartbeat`]), a
    /// heartbeat: `.lease` names the job, host and pid and a time the job renews every
    /// [`HEARTBEAT`] ([`CkptDir::beat`]); a lease not renewed for [`LEASE_STALE`] is
    /// taken over. Each kind respects the other's live holder.
    pub fn claim(
        &self,
        job: &str,
        host: &str,
        pid: i32,
        mode: LeaseMode,
    ) -> Result<Lease, CkptDirError> {
        let root = self.open_root()?;
        let lease_path = self.root.join(".lease");
        // Claims are serialized by a second lock, held only while claiming.
        let gate = open_at(&root, ".lease.lock", &self.root.join(".lease.lock"))?;
        let flocks = mode == LeaseMode::Flock && flock(&gate, libc::LOCK_EX)? == Flock::Locked;
        let _claiming = if flocks {
            None
        } else {
            Some(ClaimMarker::take(&root, &self.root)?)
        };
        let lease = open_at(&root, ".lease", &lease_path)?;
        check_private_file(&lease, &lease_path, false)?;
        let holder = fs::read_to_string(&lease_path).unwrap_or_default();
        if field(&holder, "job=") != Some(job) {
            if let Some(age) = heartbeat_age(&holder).filter(|a| *a < LEASE_STALE) {
                return Err(CkptDirError::InUse {
                    path: self.root.clone(),
                    holder: format!(
                        "{} (its heartbeat {} s ago)",
                        describe_holder(&holder),
                        age.as_secs()
                    ),
                });
            }
            // A flock holder's processes may be exiting (a restart right after --kill): a
            // second to let go before the directory is called in use.
            let mut busy = true;
            for _ in 0..20 {
                if flock(&lease, libc::LOCK_EX | libc::LOCK_NB)? != Flock::Busy {
                    busy = false;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if busy {
                return Err(CkptDirError::InUse {
                    path: self.root.clone(),
                    holder: describe_holder(&holder),
                });
            }
            // Nobody holds it: ours now.
            let since = now_unix();
            let beat = if flocks {
                String::new()
            } else {
                format!("heartbeat_unix={since}\n")
            };
            let text = format!("job={job}\nhost={host}\npid={pid}\nsince_unix={since}\n{beat}");
            lease.set_len(0).map_err(io(&lease_path))?;
            (&lease)
                .write_all(text.as_bytes())
                .and_then(|_| lease.sync_all())
                .map_err(io(&lease_path))?;
        }
        if !flocks {
            return Ok(Lease { file: None });
        }
        // Held shared by every process of the job (the claim lock keeps others out of the
        // moment between the exclusive and the shared lock).
        flock(&lease, libc::LOCK_SH)?;
        Ok(Lease { file: Some(lease) })
    }

    /// Renews a heartbeat lease of `job` ([`CkptDir::claim`]) if it is due: by the
    /// process it names every [`HEARTBEAT`], by any other process of the job once it is
    /// three heartbeats late (its process ended). Call about every [`HEARTBEAT`].
    pub fn beat(&self, job: &str, host: &str, pid: i32) -> Result<(), CkptDirError> {
        let lease_path = self.root.join(".lease");
        let holder = fs::read_to_string(&lease_path).map_err(io(&lease_path))?;
        if field(&holder, "job=") != Some(job) {
            return Err(CkptDirError::InUse {
                path: self.root.clone(),
                holder: describe_holder(&holder),
            });
        }
        let age = heartbeat_age(&holder).unwrap_or(LEASE_STALE);
        let ours = field(&holder, "host=") == Some(host)
            && field(&holder, "pid=") == Some(pid.to_string().as_str());
        let due = if ours { HEARTBEAT / 2 } else { HEARTBEAT * 3 };
        if age < due {
            return Ok(());
        }
        let root = self.open_root()?;
        let since = field(&holder, "since_unix=").unwrap_or("0");
        let text = format!(
            "job={job}\nhost={host}\npid={pid}\nsince_unix={since}\nheartbeat_unix={}\n",
            now_unix()
        );
        // Replaced whole (a reader on another node never sees half of it); not synced: a
        // heartbeat lost in a crash is as good as a late one.
        let tmp = format!(".lease.beat.{pid}");
        let _ = unlinkat(&root, &tmp);
        let mut f = create_at(&root, &tmp, &self.root.join(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&lease_path))?;
        drop(f);
        let (from, to) = (cstr(&tmp), cstr(".lease"));
        // SAFETY: both names are NUL-terminated and relative to the same open directory.
        if unsafe {
            libc::renameat(
                root.as_raw_fd(),
                from.as_ptr(),
                root.as_raw_fd(),
                to.as_ptr(),
            )
        } != 0
        {
            let e = std::io::Error::last_os_error();
            let _ = unlinkat(&root, &tmp);
            return Err(io(&lease_path)(e));
        }
        Ok(())
    }

    /// After `committed` was committed: removes the committed generations older than the
    /// `keep` newest (`keep == 0` keeps all) and every generation below `committed`
    /// without a MANIFEST (a failed or abandoned attempt). Returns what it removed, each
    /// with the error that stopped it, if any. Only the job holding the lease calls it.
    pub fn prune(&self, keep: usize, committed: u64) -> Vec<(u64, Option<std::io::Error>)> {
        let mut gens: Vec<(u64, bool)> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let n = name.to_str()?.strip_prefix("gen-")?.parse::<u64>().ok()?;
                // Real directories only (a symlink named like one is not followed).
                e.file_type().ok()?.is_dir().then_some(n)
            })
            .filter(|&n| n < committed)
            .map(|n| (n, self.gen_dir(n).join("MANIFEST").is_file()))
            .collect();
        gens.sort_unstable_by(|a, b| b.cmp(a));
        let mut kept = 1; // `committed` itself
        let mut removed = Vec::new();
        for (n, complete) in gens {
            if complete && (keep == 0 || kept < keep) {
                kept += 1;
                continue;
            }
            let err = fs::remove_dir_all(self.gen_dir(n)).err();
            removed.push((n, err));
        }
        removed
    }

    /// Who holds the directory's lease, if it is held by a live job other than `job`
    /// (`mana_launch` asks before the program starts).
    pub fn leased_by_other(&self, job: &str) -> Option<String> {
        let lease_path = self.root.join(".lease");
        let holder = fs::read_to_string(&lease_path).ok()?;
        if field(&holder, "job=")? == job {
            return None;
        }
        if let Some(age) = heartbeat_age(&holder).filter(|a| *a < LEASE_STALE) {
            return Some(format!(
                "{} (its heartbeat {} s ago)",
                describe_holder(&holder),
                age.as_secs()
            ));
        }
        // Under the claim lock (a claim in progress is not mistaken for a holder), and
        // read-write: NFS emulates flock with byte-range locks, whose exclusive kind needs
        // a descriptor open for writing.
        let rw = |p: &Path| File::options().read(true).write(true).open(p).ok();
        let gate = rw(&self.root.join(".lease.lock"))?;
        if flock(&gate, libc::LOCK_EX).ok()? != Flock::Locked {
            return None;
        }
        let f = rw(&lease_path)?;
        match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(Flock::Busy) => Some(describe_holder(&holder)),
            _ => None,
        }
    }

    /// Writes the MANIFEST, then atomically points `LATEST` at the generation. Call only
    /// after every image of the generation has been written and synced.
    pub fn commit(&self, manifest: &Manifest) -> Result<PathBuf, CkptDirError> {
        let gdir = self.gen_dir(manifest.generation);
        let root = self.open_root()?;
        let gfd = open_dir_at(&root, &gen_name(manifest.generation), &gdir)?;
        check_private_file(&gfd, &gdir, true)?;
        let text = serde_json::to_string_pretty(manifest).expect("manifest serializes");
        replace_at(&gfd, &gdir, "MANIFEST", text.as_bytes())?;
        replace_at(
            &root,
            &self.root,
            "LATEST",
            format!("{}\n", gen_name(manifest.generation)).as_bytes(),
        )?;
        Ok(gdir)
    }

    /// Removes an uncommitted generation's directory (after a failed checkpoint).
    pub fn discard(&self, generation: u64) {
        if self.latest().ok().flatten() != Some(generation) {
            let _ = fs::remove_dir_all(self.gen_dir(generation));
        }
    }
}

/// A job's hold on its checkpoint directory ([`CkptDir::claim`]): a `flock` released when
/// dropped or when the process ends, or a heartbeat lease the job renews.
#[derive(Debug)]
pub struct Lease {
    /// The descriptor holding the `flock`; `None` for a heartbeat lease.
    file: Option<File>,
}

impl Lease {
    /// The descriptor holding the lease (the runtime keeps it out of images); -1 for a
    /// heartbeat lease.
    pub fn fd(&self) -> i32 {
        self.file.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// A heartbeat lease: the holder must call [`CkptDir::beat`] every [`HEARTBEAT`].
    pub fn needs_heartbeat(&self) -> bool {
        self.file.is_none()
    }
}

/// How a job holds its directory ([`CkptDir::claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseMode {
    /// `flock`, or a heartbeat where the file system refuses `flock`.
    Flock,
    /// A heartbeat, always (`MANA_LEASE=heartbeat`): for mounts whose `flock` is honoured
    /// on one node only.
    Heartbeat,
}

impl LeaseMode {
    /// From `MANA_LEASE` (`flock`, the default, or `heartbeat`).
    pub fn from_env() -> Result<LeaseMode, String> {
        match std::env::var("MANA_LEASE").as_deref() {
            Err(_) | Ok("") | Ok("flock") => Ok(LeaseMode::Flock),
            Ok("heartbeat") => Ok(LeaseMode::Heartbeat),
            Ok(other) => Err(format!(
                "MANA_LEASE={other:?}: expected \"flock\" or \"heartbeat\""
            )),
        }
    }
}

/// How often a heartbeat lease is renewed.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
/// A heartbeat lease not renewed for this long is taken over (its job is gone).
pub const LEASE_STALE: std::time::Duration = std::time::Duration::from_secs(120);

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key))
}

/// How long ago a heartbeat lease was renewed (`None`: a `flock` lease, or no time).
fn heartbeat_age(text: &str) -> Option<std::time::Duration> {
    let at: u64 = field(text, "heartbeat_unix=")?.parse().ok()?;
    Some(std::time::Duration::from_secs(
        now_unix().saturating_sub(at),
    ))
}

fn unlinkat(dir: &File, name: &str) -> std::io::Result<()> {
    let c = cstr(name);
    // SAFETY: `c` is NUL-terminated and relative to an open directory.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `.lease.claim`, made with `O_EXCL` (atomic on NFS and Lustre too): serializes claims
/// where `flock` cannot; removed when dropped. One older than 10 s is a dead claimer's.
struct ClaimMarker<'a> {
    root: &'a File,
}

impl<'a> ClaimMarker<'a> {
    fn take(root: &'a File, root_path: &Path) -> Result<ClaimMarker<'a>, CkptDirError> {
        let path = root_path.join(".lease.claim");
        let started = std::time::Instant::now();
        loop {
            match openat(
                root,
                ".lease.claim",
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            ) {
                Ok(_) => return Ok(ClaimMarker { root }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let old = fs::symlink_metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|a| a > std::time::Duration::from_secs(10));
                    if old || started.elapsed() > std::time::Duration::from_secs(15) {
                        let _ = unlinkat(root, ".lease.claim");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(io(&path)(e)),
            }
        }
    }
}

impl Drop for ClaimMarker<'_> {
    fn drop(&mut self) {
        let _ = unlinkat(self.root, ".lease.claim");
    }
}

/// The token of a job: the first 16 hex digits of the SHA-256 of its secret (the same in
/// every process of the job, and for a replacement coordinator; reveals nothing of it).
pub fn job_token(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn describe_holder(text: &str) -> String {
    let get = |k: &str| field(text, k).unwrap_or("?").to_string();
    format!(
        "job {} (host {}, pid {})",
        get("job="),
        get("host="),
        get("pid=")
    )
}

/// What `flock` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flock {
    Locked,
    /// `LOCK_NB` and another holder.
    Busy,
    /// The file system does not support it (`ENOLCK`, `ENOSYS`, `EOPNOTSUPP`, `EINVAL`).
    Unsupported,
}

fn flock(f: &File, op: libc::c_int) -> Result<Flock, CkptDirError> {
    loop {
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(Flock::Locked);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(Flock::Busy),
            Some(libc::ENOLCK)
            | Some(libc::ENOSYS)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::EINVAL) => return Ok(Flock::Unsupported),
            _ => {
                return Err(CkptDirError::Io {
                    path: PathBuf::from(".lease"),
                    source: e,
                })
            }
        }
    }
}

/// Opens (creating, 0600) the file `name` in `dir` for reading and writing, without
/// following a symlink.
fn open_at(dir: &File, name: &str, path: &Path) -> Result<File, CkptDirError> {
    openat(dir, name, libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW).map_err(io(path))
}

fn cstr(name: &str) -> CString {
    CString::new(name).expect("MANA's file names have no NUL")
}

/// Refuses `path` (followed if `follow`) unless it is a directory owned by this user that
/// not every user can write.
pub fn check_private(path: &Path, follow: bool) -> Result<(), CkptDirError> {
    let md = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    }
    .map_err(io(path))?;
    check_metadata(&md, path, true)
}

fn check_private_file(f: &File, path: &Path, dir: bool) -> Result<(), CkptDirError> {
    check_metadata(&f.metadata().map_err(io(path))?, path, dir)
}

fn check_metadata(md: &fs::Metadata, path: &Path, dir: bool) -> Result<(), CkptDirError> {
    let unsafe_ = |why: String| {
        Err(CkptDirError::Unsafe {
            path: path.to_path_buf(),
            why,
        })
    };
    if dir && !md.is_dir() {
        return unsafe_("not a directory".into());
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        return unsafe_(format!("owned by user {}, not by you ({me})", md.uid()));
    }
    // Group write is left to the user (umask 002 with a private group, or a project's
    // group, are common on clusters); write by anyone is not.
    if md.mode() & 0o002 != 0 {
        return unsafe_(format!(
            "writable by every user (mode {:04o})",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

fn open_dir(path: &Path, follow: bool) -> Result<File, CkptDirError> {
    let c =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| CkptDirError::Unsafe {
            path: path.to_path_buf(),
            why: "path has a NUL byte".into(),
        })?;
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    // SAFETY: `c` is NUL-terminated; the descriptor is owned by the File.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | nofollow,
        )
    };
    if fd < 0 {
        return Err(io(path)(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `openat(dir, name, flags | O_CLOEXEC, 0600)` as a File.
fn openat(dir: &File, name: &str, flags: libc::c_int) -> std::io::Result<File> {
    let c = cstr(name);
    // SAFETY: `c` is NUL-terminated, `dir` an open directory; the descriptor is owned by
    // the File.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens the directory `name` inside `dir` without following a symlink.
fn open_dir_at(dir: &File, name: &str, path: &Path) -> Result<File, CkptDirError> {
    openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
            CkptDirError::Unsafe {
                path: path.to_path_buf(),
                why: "not a directory (a symbolic link or a file is in its place)".into(),
            }
        } else {
            io(path)(e)
        }
    })
}

/// Creates the new file `name` in `dir`: `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600.
fn create_at(dir: &File, name: &str, path: &Path) -> Result<File, CkptDirError> {
    openat(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
    )
    .map_err(io(path))
}

/// Writes `bytes` to a fresh temporary in `dir`, syncs it and the directory, renames it to
/// `name` and syncs the directory again. The first directory sync makes every entry made
/// before (a generation's directory, its images) durable before the rename can be: a file
/// system may write a directory's changes in any order (POSIX allows it; ext4's journal
/// keeps them in order, others need not), and `LATEST` renamed onto disk before its
/// generation's `mkdir` would name a generation a crash lost (found by the crash model,
/// tests/tests/crash_consistency.rs).
fn replace_at(dir: &File, dir_path: &Path, name: &str, bytes: &[u8]) -> Result<(), CkptDirError> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = format!(".{name}.tmp.{}.{nonce:09}", std::process::id());
    let tmp_path = dir_path.join(&tmp);
    let path = dir_path.join(name);
    let result = (|| {
        let mut f = create_at(dir, &tmp, &tmp_path)?;
        f.write_all(bytes).map_err(io(&tmp_path))?;
        f.sync_all().map_err(io(&tmp_path))?;
        dir.sync_all().map_err(io(dir_path))?;
        let (from, to) = (cstr(&tmp), cstr(name));
        // SAFETY: both names are NUL-terminated and relative to the same open directory.
        if unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) }
            != 0
        {
            return Err(io(&path)(std::io::Error::last_os_error()));
        }
        dir.sync_all().map_err(io(dir_path))
    })();
    if result.is_err() {
        let c = cstr(&tmp);
        // SAFETY: removes our own temporary, if it is still there.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    }
    result
}

pub fn sync_dir(dir: &Path) -> Result<(), CkptDirError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_moves_latest_only_when_asked() {
        let root = std::env::temp_dir().join(format!("mana-ckptdir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        assert!(matches!(
            CkptDir::new(&root).latest(),
            Err(CkptDirError::Missing(_))
        ));
        fs::create_dir_all(&root).unwrap();
        let d = CkptDir::new(&root);
        assert_eq!(d.latest().unwrap(), None);
        assert!(matches!(
            d.require_latest(),
            Err(CkptDirError::NoCommitted(_))
        ));
        d.create_gen_dir(1).unwrap();
        let m = Manifest {
            generation: 1,
            world_size: 1,
            created_unix_ns: 0,
            mpi: String::new(),
            images: vec![],
        };
        d.commit(&m).unwrap();
        assert_eq!(d.latest().unwrap(), Some(1));
        d.create_gen_dir(2).unwrap();
        d.discard(2);
        assert!(!d.gen_dir(2).exists());
        assert_eq!(d.latest().unwrap(), Some(1));
        assert_eq!(d.read_manifest(1).unwrap(), m);
        fs::write(d.latest_path(), "garbage").unwrap();
        assert!(matches!(d.latest(), Err(CkptDirError::BadLatest { .. })));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_heartbeat_lease_refuses_others_until_stale_and_mixes_with_flock() {
        let root = std::env::temp_dir().join(format!("mana-lease-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let d = CkptDir::new(&root);
        let a = d.claim("aaaa", "h1", 11, LeaseMode::Heartbeat).unwrap();
        assert!(a.needs_heartbeat() && a.fd() == -1);
        // Another job, either kind: refused while the heartbeat is fresh.
        for mode in [LeaseMode::Heartbeat, LeaseMode::Flock] {
            let e = d.claim("bbbb", "h2", 22, mode).unwrap_err().to_string();
            assert!(
                e.contains("job aaaa (host h1, pid 11)") && e.contains("heartbeat"),
                "{e}"
            );
        }
        assert!(d.leased_by_other("bbbb").is_some());
        assert!(d.leased_by_other("aaaa").is_none());
        // The same job's processes join; a beat by the holder is not due yet.
        d.claim("aaaa", "h1", 12, LeaseMode::Heartbeat).unwrap();
        let text = |d: &CkptDir| fs::read_to_string(d.root.join(".lease")).unwrap();
        d.beat("aaaa", "h1", 11).unwrap();
        // Stale (back-dated): another process of the job takes the beat over, and
        // another job takes the lease.
        let stale = text(&d).replace(
            &format!(
                "heartbeat_unix={}",
                field(&text(&d), "heartbeat_unix=").unwrap()
            ),
            &format!("heartbeat_unix={}", now_unix() - 200),
        );
        fs::write(d.root.join(".lease"), &stale).unwrap();
        d.beat("aaaa", "h1", 12).unwrap();
        assert!(text(&d).contains("pid=12") && heartbeat_age(&text(&d)).unwrap().as_secs() < 5);
        fs::write(d.root.join(".lease"), &stale).unwrap();
        let b = d.claim("bbbb", "h2", 22, LeaseMode::Flock).unwrap();
        assert!(!b.needs_heartbeat(), "this file system honours flock");
        assert!(
            d.beat("aaaa", "h1", 11).is_err(),
            "the lease is not A's any more"
        );
        // A flock holder refuses a heartbeat claimant.
        let e = d
            .claim("cccc", "h3", 33, LeaseMode::Heartbeat)
            .unwrap_err()
            .to_string();
        assert!(e.contains("job bbbb"), "{e}");
        assert!(
            !root.join(".lease.claim").exists(),
            "the claim marker is removed"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
