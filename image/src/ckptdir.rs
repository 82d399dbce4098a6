//! Checkpoint directory layout:
//!
//! ```text
//! ckpt/
//!   gen-000003/
//!     rank-00000.mana ...   one image per process
//!     MANIFEST              JSON: generation, world size, one entry per image
//!   LATEST                  "gen-000003\n": the newest committed generation
//! ```
//! `LATEST` is replaced by writing `LATEST.tmp`, `fsync`, `rename`, `fsync` of the
//! directory — only after every image and the `MANIFEST` are synced — so it never names
//! an incomplete generation.

use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
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
        for e in &m.images {
            let f = e.file.as_str();
            if f.is_empty() || f.len() > 255 || f.contains(['/', '\0']) || f == "." || f == ".." {
                return Err(CkptDirError::BadManifest {
                    path: path.to_path_buf(),
                    msg: format!(
                        "image file {f:?} of rank {} is not a file name inside the generation",
                        e.rank
                    ),
                });
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

    /// Creates `gen-NNNNNN/` (and the root) for a generation being written.
    pub fn create_gen_dir(&self, generation: u64) -> Result<PathBuf, CkptDirError> {
        let d = self.gen_dir(generation);
        fs::create_dir_all(&d).map_err(io(&d))?;
        Ok(d)
    }

    /// Writes the MANIFEST, then atomically points `LATEST` at the generation. Call only
    /// after every image of the generation has been written and synced.
    pub fn commit(&self, manifest: &Manifest) -> Result<PathBuf, CkptDirError> {
        let gdir = self.gen_dir(manifest.generation);
        let mpath = gdir.join("MANIFEST");
        let text = serde_json::to_string_pretty(manifest).expect("manifest serializes");
        write_synced(&mpath, text.as_bytes())?;
        sync_dir(&gdir)?;
        let tmp = self.root.join("LATEST.tmp");
        write_synced(
            &tmp,
            format!("{}\n", gen_name(manifest.generation)).as_bytes(),
        )?;
        let latest = self.latest_path();
        fs::rename(&tmp, &latest).map_err(io(&latest))?;
        sync_dir(&self.root)?;
        Ok(gdir)
    }

    /// Removes an uncommitted generation's directory (after a failed checkpoint).
    pub fn discard(&self, generation: u64) {
        if self.latest().ok().flatten() != Some(generation) {
            let _ = fs::remove_dir_all(self.gen_dir(generation));
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CkptDirError> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(())
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
}
