//! The write phase: turn the stopped process into an image file.
//!
//! Runs on the checkpoint thread inside the write window (see [`crate::alloc`]), after
//! every other thread is parked. Memory is streamed straight from the process to the
//! file: for each region only pages the kernel reports as touched (present or swapped in
//! `/proc/self/pagemap`; for private file mappings only the privately modified ones) are
//! read and written.

use crate::procfs::{self, MapLine};
use crate::sys;
use mana_image::{
    checksum, encode_header, Extent, FileIdentity, ImageHeader, Preamble, Region, RegionHasher,
    RegionKind, VdsoInfo, DATA_START, EM_X86_64, FORMAT_VERSION, PAGE_SIZE,
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
}

fn classify(m: &MapLine) -> Option<(RegionKind, Store)> {
    match m.name.as_str() {
        "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]" => return None,
        "[heap]" => return Some((RegionKind::Heap, Store::Touched)),
        "[stack]" => return Some((RegionKind::Stack, Store::Touched)),
        _ => {}
    }
    if m.name.starts_with('/') && m.inode != 0 {
        let deleted = m.name.ends_with(" (deleted)");
        let ident = if deleted { None } else { file_identity(m) };
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

fn file_identity(m: &MapLine) -> Option<FileIdentity> {
    let c = std::ffi::CString::new(m.name.as_str()).ok()?;
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated, `st` valid.
    if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 || st.st_ino != m.inode {
        return None;
    }
    Some(FileIdentity {
        path: m.name.clone(),
        offset: m.offset,
        size: st.st_size as u64,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        inode: st.st_ino,
    })
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
            let checksum = write_extents(job.fd, start, m, &extents, volatile, &mut bounce)?;
            job.header.regions.push(Region {
                start,
                end,
                prot: prot_bits(m),
                name: m.name.clone(),
                kind: match &kind {
                    RegionKind::FilePrivate(id) | RegionKind::FileShared(id) => {
                        let id = FileIdentity {
                            offset: id.offset + (start - m.start),
                            ..id.clone()
                        };
                        if m.shared {
                            RegionKind::FileShared(id)
                        } else {
                            RegionKind::FilePrivate(id)
                        }
                    }
                    k => k.clone(),
                },
                extents,
                checksum,
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
) -> Result<u64, String> {
    let mut h = RegionHasher::new();
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
