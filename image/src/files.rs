//! The files an image maps, identified by content (issue 10): a private file region is
//! restored by mapping its file again and laying the stored (modified) pages over it, so
//! the bytes it maps must be the bytes the checkpointed process mapped. The writer records
//! the file's size and a SHA-256 of those bytes; [`verify`] checks both through the very
//! descriptors the restarter then maps, before anything is mapped. Any copy with the same
//! bytes passes (a node with its own `/usr/lib`); a file patched in place with its mtime
//! put back does not.

use crate::format::{ImageError, ImageHeader, Region, RegionKind, PAGE_SIZE};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Bytes of the file a region of `region_len` bytes at file offset `offset` maps, in a
/// file of `size` bytes: up to the region's end or the file's end.
pub fn mapped_len(region_len: u64, offset: u64, size: u64) -> u64 {
    size.saturating_sub(offset).min(region_len)
}

/// SHA-256 of `len` bytes of `f` from `offset`. A file shorter than that is an error.
pub fn hash_range(f: &File, offset: u64, len: u64) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; (256 << 10).min(len as usize)];
    let mut at = offset;
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = crate::format::read_full_at(f, &mut buf[..want], at)?;
        if n < want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file ends before the mapped range",
            ));
        }
        h.update(&buf[..want]);
        at += want as u64;
        left -= want as u64;
    }
    Ok(h.finalize().into())
}

/// The files of an image's private file regions, opened and verified ([`verify`]).
pub struct MappedFiles {
    files: HashMap<String, File>,
}

impl MappedFiles {
    /// The verified descriptor of `path` (a private file region's [`FileIdentity::path`]).
    ///
    /// [`FileIdentity::path`]: crate::format::FileIdentity::path
    pub fn get(&self, path: &str) -> Option<&File> {
        self.files.get(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn changed(image: &Path, r: &Region, file: &str, what: String) -> ImageError {
    ImageError::FileChanged {
        path: image.into(),
        file: file.into(),
        start: r.start,
        what,
    }
}

/// Opens every file a private file region of `h` maps and checks its size and the content
/// hash of the mapped bytes. `image` names the image in errors.
pub fn verify(h: &ImageHeader, image: &Path) -> Result<MappedFiles, ImageError> {
    verify_with(h, image, hash_range)
}

/// [`verify`] with `hash(file, offset, len)` in place of [`hash_range`] (the fuzz target
/// remembers the hashes of files it has read, which do not change between iterations).
pub fn verify_with(
    h: &ImageHeader,
    image: &Path,
    mut hash: impl FnMut(&File, u64, u64) -> std::io::Result<[u8; 32]>,
) -> Result<MappedFiles, ImageError> {
    let mut files: HashMap<String, File> = HashMap::new();
    for r in &h.regions {
        let RegionKind::FilePrivate(id) = &r.kind else {
            continue;
        };
        if !files.contains_key(&id.path) {
            // Non-blocking: a FIFO named by a crafted header must not hang the open.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&id.path)
                .map_err(|e| changed(image, r, &id.path, e.to_string()))?;
            files.insert(id.path.clone(), f);
        }
        let f = &files[&id.path];
        let md = f
            .metadata()
            .map_err(|e| changed(image, r, &id.path, e.to_string()))?;
        if !md.is_file() {
            return Err(changed(image, r, &id.path, "not a regular file".into()));
        }
        if md.len() != id.size {
            return Err(changed(
                image,
                r,
                &id.path,
                format!("{} bytes, was {}", md.len(), id.size),
            ));
        }
        let len = mapped_len(r.end - r.start, id.offset, id.size);
        let hash =
            hash(f, id.offset, len).map_err(|e| changed(image, r, &id.path, e.to_string()))?;
        if hash != id.sha256 {
            return Err(changed(
                image,
                r,
                &id.path,
                format!(
                    "its bytes {:#x}-{:#x} differ (content hash)",
                    id.offset,
                    id.offset + len
                ),
            ));
        }
    }
    Ok(MappedFiles { files })
}

/// Pages of a private file region that lie inside its file (page-rounded): stored pages
/// beyond would be written through a mapping past the end of the file (`SIGBUS`).
pub fn pages_in_file(region_len: u64, offset: u64, size: u64) -> u64 {
    mapped_len(region_len, offset, size).div_ceil(PAGE_SIZE)
}
