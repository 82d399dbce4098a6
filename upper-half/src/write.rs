//! The write phase: turn the stopped process into an image file.
//!
//! Runs on the checkpoint thread inside the write window (see [`crate::alloc`]), after
//! every other thread is parked. Memory is streamed straight from the process to the
//! file: for each region only pages the kernel reports as touched (present or swapped in
//! `/proc/self/pagemap`; for private file mappings only the privately modified ones) are
//! read and written.

use crate::procfs::{self, MapLine};
use crate::sys;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::BTreeMap;

/// The [`ImageHeader::state_digest`] of the image being written, saved with the memory.
static STATE_DIGEST: AtomicU64 = AtomicU64::new(0);
use mana_image::{
    checksum, encode_header, region_hasher, Extent, FileIdentity, ImageHeader, Preamble, Region,
    RegionHasher, RegionKind, VdsoInfo, DATA_START, EM_X86_64, FORMAT_VERSION, PAGE_SIZE,
};

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
const CHUNK: usize = 1 << 20;

/// Which pages of a region the image stores.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    /// Touched pages (present or swapped).
    Touched,
    /// Pages the process modified privately (anonymous pages of a private file mapping).
    PrivateCopies,
    /// Every page (the backing file is gone).
    All,
    /// Nothing (contents live in a file).
    Nothing,
}

pub struct Job {
    pub fd: i32,
    pub pagemap_fd: i32,
    pub header: ImageHeader,
    /// Ranges written to during the write itself (this thread's stack, the runtime's
    /// data, parked threads' stacks: their handlers wake up from a timed futex wait and
    /// write below the saved context): copied through a buffer so that checksum and data
    /// agree.
    pub volatile: Vec<(u64, u64)>,
    /// The lower half's ranges (sorted): never saved.
    pub lower: Vec<(u64, u64)>,
}

pub struct Written {
    /// Time to stream memory into the file (page cache), and to make it durable.
    pub write_secs: f64,
    pub sync_secs: f64,
    pub bytes: u64,
    pub header_checksum: u64,
    pub stored: u64,
    pub mapped: u64,
    /// The largest process or thread id of the image (for the MANIFEST).
    pub max_id: i32,
}

fn classify(m: &MapLine) -> Option<(RegionKind, Store)> {
    match m.name.as_str() {
        "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]" => return None,
        "[heap]" => return Some((RegionKind::Heap, Store::Touched)),
        "[stack]" => return Some((RegionKind::Stack, Store::Touched)),
        _ => {}
    }
    if m.name.starts_with('/') && m.inode != 0 {
        // A placeholder identity: each piece of the mapping gets its own
        // ([`file_identity`]); a file that cannot be identified is stored whole.
        let ident = (is_file(m) && open_mapped(m).is_some()).then(|| FileIdentity {
            path: m.name.clone(),
            offset: m.offset,
            size: 0,
            sha256: [0; 32],
        });
        return Some(match (m.shared, ident) {
            (true, Some(id)) => (RegionKind::FileShared(id), Store::Nothing),
            (true, None) => (RegionKind::SharedAnon, Store::All),
            (false, Some(id)) => (RegionKind::FilePrivate(id), Store::PrivateCopies),
            (false, None) => (RegionKind::Anon, Store::All),
        });
    }
    Some(if m.shared {
        (RegionKind::SharedAnon, Store::Touched)
    } else {
        (RegionKind::Anon, Store::Touched)
    })
}

/// What tells a file's version apart without reading it: device, inode, size, mtime and
/// ctime (which no one can put back after changing the file).
type FileKey = (u64, u64, i64, i64, i64, i64, i64);
/// A range of a file version: (key, offset, length).
type RangeKey = (FileKey, u64, u64);

/// Content hashes of the mapped file ranges, kept between checkpoints in the runtime heap
/// (filled outside the write window by [`warm_hashes`]; only read inside it, where
/// allocations are transient).
static HASHES: std::sync::Mutex<BTreeMap<RangeKey, [u8; 32]>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The file `m` maps, if the path still names it: opened, with its version key and size.
fn open_mapped(m: &MapLine) -> Option<(std::fs::File, FileKey, u64)> {
    // Non-blocking: the path may name a FIFO by now (all application threads stopped).
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&m.name)
        .ok()?;
    let md = f.metadata().ok()?;
    use std::os::unix::fs::MetadataExt;
    if md.ino() != m.inode || !md.is_file() {
        return None;
    }
    let key = (
        md.dev(),
        md.ino(),
        md.size() as i64,
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
    );
    Some((f, key, md.size()))
}

/// The identity of the piece `[start, end)` of the private or shared file mapping `m`: its
/// size and the content hash of the bytes it maps (from the cache, else read now).
fn file_identity(m: &MapLine, start: u64, end: u64) -> Option<FileIdentity> {
    let (f, key, size) = open_mapped(m)?;
    let offset = m.offset + (start - m.start);
    let len = mana_image::files::mapped_len(end - start, offset, size);
    // A shared mapping's contents live in the file (not compared at restart).
    let cached = if m.shared {
        Some([0; 32])
    } else {
        // `try_lock`: in a child made by `fork` while the parent's checkpoint thread was
        // warming the cache (at registration, when programs tend to fork), the copy of
        // the lock stays taken for ever (found by CI: a descendant's checkpoint hung
        // here); a busy cache is a miss.
        HASHES
            .try_lock()
            .ok()
            .and_then(|c| c.get(&(key, offset, len)).copied())
    };
    let sha256 = match cached {
        Some(h) => h,
        None => mana_image::files::hash_range(&f, offset, len).ok()?,
    };
    Some(FileIdentity {
        path: m.name.clone(),
        offset,
        size,
        sha256,
    })
}

/// Hashes the private file mappings of the process into [`HASHES`] ahead of the write,
/// while the application still runs (the first checkpoint reads each mapped library once;
/// later ones find them cached). Entries of files no longer mapped are dropped.
/// Mappings inside `lower` (the MPI lower half's ranges, never saved) are skipped: its
/// libraries are tens of MiB.
pub fn warm_hashes(lower: &[(u64, u64)]) {
    let Ok(maps) = procfs::own_maps() else {
        return;
    };
    let Ok(mut cache) = HASHES.lock() else {
        return;
    };
    let mut next = BTreeMap::new();
    let in_lower = |m: &MapLine| lower.iter().any(|&(s, e)| s < m.end && m.start < e);
    for m in maps
        .iter()
        .filter(|m| is_file(m) && !m.shared && !in_lower(m))
    {
        let Some((f, key, size)) = open_mapped(m) else {
            continue;
        };
        let len = mana_image::files::mapped_len(m.end - m.start, m.offset, size);
        let k = (key, m.offset, len);
        let hash = match cache.get(&k) {
            Some(&h) => h,
            None => match mana_image::files::hash_range(&f, m.offset, len) {
                Ok(h) => h,
                Err(_) => continue,
            },
        };
        next.insert(k, hash);
    }
    *cache = next;
}

fn is_file(m: &MapLine) -> bool {
    m.name.starts_with('/') && m.inode != 0 && !m.name.ends_with(" (deleted)")
}

fn prot_bits(m: &MapLine) -> u8 {
    use mana_image::prot::*;
    (if m.read { READ } else { 0 })
        | (if m.write { WRITE } else { 0 })
        | (if m.exec { EXEC } else { 0 })
}

/// Calls `f` with each piece of `[start, end)` outside the sorted ranges `cut`.
fn subtract(start: u64, end: u64, cut: &[(u64, u64)], mut f: impl FnMut(u64, u64)) {
    let mut cur = start;
    for &(s, e) in cut {
        if e <= cur || s >= end {
            continue;
        }
        if s > cur {
            f(cur, s);
        }
        cur = cur.max(e);
    }
    if cur < end {
        f(cur, end);
    }
}

/// Runs the write. On success the file is complete and synced.
pub fn write_image(job: &mut Job) -> Result<Written, String> {
    let t0 = std::time::Instant::now();
    let maps = procfs::own_maps()?;
    job.header.vdso = vdso_info(&maps);
    // The header is complete but for its regions: its digest goes into memory before the
    // memory is saved (the copy a restart compares the header with).
    job.header.state_digest_at = STATE_DIGEST.as_ptr() as u64;
    STATE_DIGEST.store(job.header.state_digest(), Ordering::Release);
    let mut pm = vec![0u64; 1 << 16];
    let mut bounce = vec![0u8; CHUNK];
    let mut data_off = DATA_START;
    seek(job.fd, DATA_START)?;
    for m in &maps {
        let Some((kind, store)) = classify(m) else {
            continue;
        };
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        crate::exclude::for_each_kept(m.start, m.end, |s, e| {
            subtract(s, e, &job.lower, |s, e| pieces.push((s, e)))
        });
        for (start, end) in pieces {
            if store == Store::Nothing {
                // SAFETY: msync on a mapped shared range only flushes it.
                unsafe {
                    libc::msync(
                        start as *mut libc::c_void,
                        (end - start) as usize,
                        libc::MS_SYNC,
                    )
                };
            }
            let extents = select_pages(job.pagemap_fd, start, end, store, &mut pm, &mut data_off)?;
            let volatile = job.volatile.iter().any(|&(s, e)| s < end && e > start);
            let kind = match &kind {
                RegionKind::FilePrivate(_) | RegionKind::FileShared(_) => {
                    let id = file_identity(m, start, end)
                        .ok_or_else(|| format!("{} changed while it was being saved", m.name))?;
                    if m.shared {
                        RegionKind::FileShared(id)
                    } else {
                        RegionKind::FilePrivate(id)
                    }
                }
                k => k.clone(),
            };
            let prot = prot_bits(m);
            // Shared memory names its object: processes of the tree mapping one object
            // (at the same or other addresses) share it again after a restart.
            let shared_inode = if kind == RegionKind::SharedAnon {
                m.inode
            } else {
                0
            };
            let hasher = region_hasher(start, end, prot, &m.name, &kind, &extents, shared_inode);
            let checksum =
                write_extents(job.fd, start, m, &extents, volatile, &mut bounce, hasher)?;
            job.header.regions.push(Region {
                start,
                end,
                prot,
                name: m.name.clone(),
                kind,
                extents,
                checksum,
                shared_inode,
            });
        }
    }
    let header_bytes = encode_header(&job.header);
    let header_checksum = checksum(&header_bytes);
    write_all_at(job.fd, &header_bytes, data_off)?;
    let pre = Preamble {
        version: FORMAT_VERSION,
        machine: EM_X86_64,
        header_offset: data_off,
        header_len: header_bytes.len() as u64,
        header_checksum,
    }
    .encode();
    write_all_at(job.fd, &pre, 0)?;
    let write_secs = t0.elapsed().as_secs_f64();
    // SAFETY: fsync on our own descriptor.
    if unsafe { libc::fsync(job.fd) } != 0 {
        return Err(format!("fsync failed: {}", std::io::Error::last_os_error()));
    }
    Ok(Written {
        write_secs,
        sync_secs: t0.elapsed().as_secs_f64() - write_secs,
        bytes: data_off + header_bytes.len() as u64,
        header_checksum,
        stored: job.header.stored_bytes(),
        mapped: job.header.mapped_bytes(),
        max_id: job
            .header
            .threads
            .iter()
            .map(|t| t.tid)
            .fold(job.header.pid, i32::max),
    })
}

fn vdso_info(maps: &[MapLine]) -> Option<VdsoInfo> {
    let special: Vec<&MapLine> = maps
        .iter()
        .filter(|m| matches!(m.name.as_str(), "[vvar]" | "[vvar_vclock]" | "[vdso]"))
        .collect();
    let vdso = special.iter().find(|m| m.name == "[vdso]")?;
    let start = special.iter().map(|m| m.start).min()?;
    let end = special.iter().map(|m| m.end).max()?;
    // SAFETY: [vdso] is mapped readable for the life of the process.
    let text = unsafe {
        core::slice::from_raw_parts(vdso.start as *const u8, (vdso.end - vdso.start) as usize)
    };
    Some(VdsoInfo {
        block_start: start,
        block_end: end,
        vdso_start: vdso.start,
        vdso_len: vdso.end - vdso.start,
        vdso_hash: checksum(text),
    })
}

fn select_pages(
    pagemap_fd: i32,
    start: u64,
    end: u64,
    store: Store,
    pm: &mut [u64],
    data_off: &mut u64,
) -> Result<Vec<Extent>, String> {
    let npages = (end - start) / PAGE_SIZE;
    let mut extents: Vec<Extent> = Vec::new();
    if store == Store::Nothing {
        return Ok(extents);
    }
    let mut push = |page: u64, extents: &mut Vec<Extent>| {
        if let Some(last) = extents.last_mut() {
            if last.first_page + last.pages == page {
                last.pages += 1;
                *data_off += PAGE_SIZE;
                return;
            }
        }
        extents.push(Extent {
            first_page: page,
            pages: 1,
            file_offset: *data_off,
        });
        *data_off += PAGE_SIZE;
    };
    if store == Store::All {
        if npages > 0 {
            extents.push(Extent {
                first_page: 0,
                pages: npages,
                file_offset: *data_off,
            });
            *data_off += npages * PAGE_SIZE;
        }
        return Ok(extents);
    }
    let mut page = 0u64;
    while page < npages {
        let n = ((npages - page) as usize).min(pm.len());
        let bytes = n * 8;
        // SAFETY: `pm` is a u64 buffer of at least `n` entries, viewed as bytes.
        let buf = unsafe { core::slice::from_raw_parts_mut(pm.as_mut_ptr().cast::<u8>(), bytes) };
        let off = ((start / PAGE_SIZE) + page) * 8;
        let got = sys::pread(pagemap_fd, buf, off)
            .map_err(|e| format!("cannot read /proc/self/pagemap (errno {e})"))?;
        if got < bytes {
            return Err("short read from /proc/self/pagemap".into());
        }
        for (i, &e) in pm[..n].iter().enumerate() {
            let keep = match store {
                Store::Touched => e & (PM_PRESENT | PM_SWAPPED) != 0,
                Store::PrivateCopies => {
                    (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAPPED != 0
                }
                Store::All | Store::Nothing => unreachable!(),
            };
            if keep {
                push(page + i as u64, &mut extents);
            }
        }
        page += n as u64;
    }
    Ok(extents)
}

fn write_extents(
    fd: i32,
    start: u64,
    m: &MapLine,
    extents: &[Extent],
    volatile: bool,
    bounce: &mut [u8],
    mut h: RegionHasher,
) -> Result<u64, String> {
    if extents.is_empty() {
        return Ok(h.digest());
    }
    let unreadable = !m.read;
    if unreadable {
        let prot = libc::PROT_READ
            | if m.write { libc::PROT_WRITE } else { 0 }
            | if m.exec { libc::PROT_EXEC } else { 0 };
        // SAFETY: adds read permission to stopped memory; restored below.
        unsafe { sys::mprotect(start, extents_end(start, extents) - start, prot) }
            .map_err(|e| format!("cannot make {start:#x} readable (errno {e})"))?;
    }
    let mut result = Ok(());
    'outer: for e in extents {
        let mut addr = start + e.first_page * PAGE_SIZE;
        let end = addr + e.pages * PAGE_SIZE;
        while addr < end {
            let len = ((end - addr) as usize).min(CHUNK);
            let r = if volatile {
                // SAFETY: `addr..addr+len` is readable mapped memory of this region.
                let src = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
                bounce[..len].copy_from_slice(src);
                h.update(&bounce[..len]);
                write_all(fd, bounce.as_ptr() as u64, len)
            } else {
                // SAFETY: as above; the memory does not change (its threads are stopped).
                let src = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
                h.update(src);
                write_all(fd, addr, len)
            };
            if let Err(e) = r {
                result = Err(e);
                break 'outer;
            }
            addr += len as u64;
        }
    }
    if unreadable {
        let prot =
            if m.write { libc::PROT_WRITE } else { 0 } | if m.exec { libc::PROT_EXEC } else { 0 };
        // SAFETY: puts back the original protection.
        let _ = unsafe { sys::mprotect(start, extents_end(start, extents) - start, prot) };
    }
    result.map(|_| h.digest())
}

fn extents_end(start: u64, extents: &[Extent]) -> u64 {
    extents
        .last()
        .map(|e| start + (e.first_page + e.pages) * PAGE_SIZE)
        .unwrap_or(start)
}

fn write_all(fd: i32, mut addr: u64, mut len: usize) -> Result<(), String> {
    while len > 0 {
        // SAFETY: the range is readable memory (checked by the caller).
        match unsafe { sys::write_raw(fd, addr, len) } {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => {
                addr += n as u64;
                len -= n;
            }
            Err(libc::EINTR) => {}
            Err(e) => return Err(std::io::Error::from_raw_os_error(e).to_string()),
        }
    }
    Ok(())
}

fn write_all_at(fd: i32, mut buf: &[u8], mut off: u64) -> Result<(), String> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid slice.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off as libc::off_t) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        buf = &buf[n as usize..];
        off += n as u64;
    }
    Ok(())
}

fn seek(fd: i32, off: u64) -> Result<(), String> {
    // SAFETY: lseek on our own descriptor.
    if unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_SET) } < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}
