//! The one place that defines MANA-rs's on-disk layout.
//!
//! * [`format`]: a per-process image — a fixed 64-byte preamble (magic, format version,
//!   architecture, where the header is), page-aligned region data, and an `rmp-serde`
//!   header ([`ImageHeader`]) stored after the data, so the writer can stream memory
//!   straight to disk and fill in checksums as it goes.
//! * [`ckptdir`]: the checkpoint directory — `gen-NNNNNN/` generations, each with one
//!   image per process and a `MANIFEST`, and `LATEST`, replaced by atomic rename only
//!   when a generation is complete.
//!
//! Both the checkpoint writer (`upper-half`) and the restarter (`restart-plugin`) use
//! these types; nothing else defines on-disk layout.

pub mod ckptdir;
pub mod files;
pub mod format;
pub mod validate;

pub use ckptdir::{CkptDir, Manifest, ManifestEntry, MemberEntry};
pub use format::*;
