//! The fuzz entry point (issue 10, item 4): an image built from arbitrary bytes goes
//! through everything `mana_restart` does with an image before it maps memory, and must
//! come out accepted or refused — never a panic, an overflow or a hang.
//!
//! Input layout: `[flags: u8][data length L: u32 LE][L bytes: region data][header]`. The
//! harness writes a valid preamble (an attacker can recompute checksums), the data at
//! [`DATA_START`] and the header after it. With bit 0 of `flags` set it also plays the
//! strongest attacker: it decodes the header, writes the copies the validator compares
//! with (each thread's record, the header digest) into the stored data where the header
//! says they are, recomputes every region checksum and encodes the header again — so the
//! range checks alone must hold.
//!
//! Run by `cargo fuzz run image_plan` (`fuzz/`, nightly) and, over the committed corpus,
//! by `restart-plugin/tests/fuzz_corpus.rs` on the stable toolchain.

use crate::plan::Plan;
use crate::prepare;
use mana_image::{
    checksum, encode_header, read_stored, thread_record, ImageHeader, ImageReader, Preamble,
    DATA_START, EM_X86_64, FORMAT_VERSION,
};
use std::cell::RefCell;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Data areas above this are cut (keeps one iteration fast; real seeds are smaller).
const MAX_DATA: usize = 16 << 20;

thread_local! {
    static IMAGE: RefCell<Option<File>> = const { RefCell::new(None) };
    static PLAN: RefCell<Option<Box<Plan>>> = const { RefCell::new(None) };
}

fn memfd() -> File {
    // SAFETY: a NUL-terminated name; the new descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(c"mana-fuzz-image".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: `fd` was just created and is owned by nothing else.
    unsafe { File::from_raw_fd(fd) }
}

fn zeroed_plan() -> Box<Plan> {
    let layout = std::alloc::Layout::new::<Plan>();
    // SAFETY: Plan is plain `repr(C)` integers and arrays of them: all-zero is a valid
    // value; the allocation has Plan's layout and is handed to a Box of Plan.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut Plan;
        assert!(!p.is_null(), "out of memory");
        Box::from_raw(p)
    }
}

/// Splits an input into (flags, data, header bytes).
fn split(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&flags, rest) = input.split_first()?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let rest = &rest[4..];
    let len = len.min(rest.len()).min(MAX_DATA);
    Some((flags, &rest[..len], &rest[len..]))
}

/// The inverse of [`split`]: a corpus entry from a real image's data and header.
pub fn join(flags: u8, data: &[u8], header: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + data.len() + header.len());
    v.push(flags);
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v.extend_from_slice(header);
    v
}

/// The attacker of the module comment: copies rewritten to agree with the header, region
/// checksums recomputed. `None` when the header does not decode.
fn forge(data: &mut [u8], header: &[u8]) -> Option<Vec<u8>> {
    let mut h: ImageHeader = rmp_serde::from_slice(header).ok()?;
    // Where `len` bytes at `addr` are in `data` (pieces), if stored.
    let locate = |h: &ImageHeader, addr: u64, len: usize| -> Option<Vec<(usize, usize)>> {
        let mut pieces = Vec::new();
        let mut scratch = vec![0u8; len];
        let stored = read_stored(h, addr, &mut scratch, |off, b| {
            let at = off.checked_sub(DATA_START).ok_or("before the data")? as usize;
            pieces.push((at, b.len()));
            Ok(true)
        })
        .ok()?;
        stored.then_some(pieces)
    };
    let data_end = DATA_START + data.len() as u64;
    let mut write = |pieces: Vec<(usize, usize)>, bytes: &[u8]| {
        let mut done = 0;
        for (at, n) in pieces {
            if let Some(dst) = data.get_mut(at..at.saturating_add(n)) {
                dst.copy_from_slice(&bytes[done..done + n]);
            }
            done += n;
        }
    };
    // Only headers whose extents make sense can be located; others are left as they are.
    if mana_image::validate::validate(&h, data_end).is_ok() {
        for t in &h.threads {
            if let Some(p) = locate(&h, t.record, thread_record::LEN) {
                write(p, &thread_record::encode(t));
            }
        }
        if let Some(p) = locate(&h, h.state_digest_at, 8) {
            write(p, &h.state_digest().to_le_bytes());
        }
    }
    for r in &mut h.regions {
        let mut sum = r.hasher();
        for e in &r.extents {
            let at = e.file_offset.saturating_sub(DATA_START) as usize;
            let n = e.pages.saturating_mul(mana_image::PAGE_SIZE) as usize;
            if let Some(b) = data.get(at..at.saturating_add(n)) {
                sum.update(b);
            }
        }
        r.checksum = sum.digest();
    }
    Some(encode_header(&h))
}

/// What each step said of one input (`Err` = refused, with the user's message).
#[derive(Debug)]
pub struct Report {
    /// `ImageReader::from_file`: preamble, header decode, validation, copies in memory.
    pub open: Result<(), String>,
    /// Region checksums (`verify_data`).
    pub data: Result<(), String>,
    /// The mapped files on this node (`files::verify`).
    pub files: Result<(), String>,
    /// vDSO plan, thread limit, collision check and the final stage's plan.
    pub plan: Result<(), String>,
}

/// Builds the image of `input` and runs the restarter's pre-mapping steps on it. The
/// steps after the header check run whatever the ones before them said (the plan does not
/// depend on the files or the data), so the fuzzer reaches them with seeds whose files
/// are not on this node.
pub fn check_image_bytes(input: &[u8]) -> Report {
    let refused = |what: &str| Report {
        open: Err(what.into()),
        data: Err("not run".into()),
        files: Err("not run".into()),
        plan: Err("not run".into()),
    };
    let Some((flags, data, header)) = split(input) else {
        return refused("input too short");
    };
    let mut data = data.to_vec();
    let forged;
    let header = if flags & 1 != 0 {
        forged = forge(&mut data, header);
        forged.as_deref().unwrap_or(header)
    } else {
        header
    };
    let header_offset = DATA_START + data.len() as u64;
    let pre = Preamble {
        version: FORMAT_VERSION,
        machine: EM_X86_64,
        header_offset,
        header_len: header.len() as u64,
        header_checksum: checksum(header),
    };
    let file = IMAGE.with(|f| {
        let mut f = f.borrow_mut();
        let file = f.get_or_insert_with(memfd);
        file.set_len(0).and_then(|_| {
            file.write_all_at(&pre.encode(), 0)?;
            file.write_all_at(&data, DATA_START)?;
            file.write_all_at(header, header_offset)?;
            file.try_clone()
        })
    });
    let file = match file {
        Ok(f) => f,
        Err(e) => return refused(&format!("memfd: {e}")),
    };
    let path = Path::new("fuzz-image");
    let reader = match ImageReader::from_file(path, file, None) {
        Ok(r) => r,
        Err(e) => return refused(&e.to_string()),
    };
    let h = &reader.header;
    Report {
        open: Ok(()),
        data: reader.verify_data().map_err(|e| e.to_string()),
        files: mana_image::files::verify_with(h, path, remembered_hash)
            .map(drop)
            .map_err(|e| e.to_string()),
        plan: plan(h),
    }
}

/// [`mana_image::files::hash_range`], remembered per (device, inode, size, mtime,
/// offset, length): the fuzz target would otherwise spend its time hashing the libraries
/// its seeds map, which do not change while it runs.
fn remembered_hash(f: &File, offset: u64, len: u64) -> std::io::Result<[u8; 32]> {
    type Key = (u64, u64, u64, i64, i64, u64, u64);
    thread_local! {
        static SEEN: RefCell<std::collections::HashMap<Key, [u8; 32]>> = RefCell::default();
    }
    use std::os::unix::fs::MetadataExt;
    let md = f.metadata()?;
    let key = (
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        offset,
        len,
    );
    if let Some(h) = SEEN.with(|s| s.borrow().get(&key).copied()) {
        return Ok(h);
    }
    let h = mana_image::files::hash_range(f, offset, len)?;
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < 4096 {
            s.insert(key, h);
        }
    });
    Ok(h)
}

/// What `mana_restart` decides from a validated header before its first mapping, against
/// this process's own mappings.
fn plan(h: &ImageHeader) -> Result<(), String> {
    let maps = prepare::own_maps()?;
    let vdso_moves = prepare::plan_vdso(
        h,
        maps.clone(),
        |s, e| {
            // SAFETY: [s, e) is this process's own [vdso], mapped readable.
            mana_image::checksum(unsafe {
                core::slice::from_raw_parts(s as *const u8, (e - s) as usize)
            })
        },
        // No temporary mapping: an address the plan only records.
        |_| Ok(0x1000_0000),
    )?;
    prepare::check_threads(h)?;
    let _ = prepare::first_collision(h, &vdso_moves, &maps);
    let stacks: Vec<u64> = (0..h.threads.len() as u64)
        .map(|i| 0x2000_0000 + i * 0x10000)
        .collect();
    PLAN.with(|p| {
        let mut p = p.borrow_mut();
        let plan = p.get_or_insert_with(zeroed_plan);
        prepare::fill_plan(plan, &stacks, h, &vdso_moves, &[0, 1, 2])
    })
}

/// A compact corpus entry from a real image file: the header with only the pages the
/// validator reads from memory kept (those holding the thread records and the header
/// digest, one extent per page), every region checksum recomputed for that. The result
/// passes the header and data checks as the image does, in a few tens of KiB instead of
/// megabytes (libFuzzer hashes every input it runs).
pub fn seed_from_image(image: &[u8]) -> Result<Vec<u8>, String> {
    let pre = image
        .get(..mana_image::PREAMBLE_LEN)
        .ok_or("not an image")?;
    let p = Preamble::decode(Path::new("seed"), pre).map_err(|e| e.to_string())?;
    let (off, len) = (p.header_offset as usize, p.header_len as usize);
    let header = image.get(off..off + len).ok_or("header past the end")?;
    let mut h: ImageHeader = rmp_serde::from_slice(header).map_err(|e| e.to_string())?;
    let page = mana_image::PAGE_SIZE;
    let mut wanted: Vec<u64> = h
        .threads
        .iter()
        .flat_map(|t| {
            let first = t.record / page;
            let last = (t.record + thread_record::LEN as u64 - 1) / page;
            (first..=last).map(move |p| p * page)
        })
        .chain([h.state_digest_at / page * page])
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut data = Vec::new();
    let mut kept: Vec<(usize, mana_image::Extent)> = Vec::new();
    for &addr in &wanted {
        let mut buf = vec![0u8; page as usize];
        let stored = read_stored(&h, addr, &mut buf, |o, b| {
            let o = o as usize;
            let src = image.get(o..o + b.len()).ok_or("data past the end")?;
            b.copy_from_slice(src);
            Ok(true)
        })?;
        if !stored {
            return Err(format!("page {addr:#x} is not stored"));
        }
        let ri = h
            .regions
            .iter()
            .position(|r| r.start <= addr && addr < r.end)
            .ok_or("page outside the regions")?;
        kept.push((
            ri,
            mana_image::Extent {
                first_page: (addr - h.regions[ri].start) / page,
                pages: 1,
                file_offset: DATA_START + data.len() as u64,
            },
        ));
        data.extend_from_slice(&buf);
    }
    for (i, r) in h.regions.iter_mut().enumerate() {
        r.extents = kept
            .iter()
            .filter(|(ri, _)| *ri == i)
            .map(|(_, e)| *e)
            .collect();
        let mut sum = r.hasher();
        for e in &r.extents {
            let at = (e.file_offset - DATA_START) as usize;
            sum.update(&data[at..at + page as usize]);
        }
        r.checksum = sum.digest();
    }
    Ok(join(0, &data, &encode_header(&h)))
}
