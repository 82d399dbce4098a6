//! An image header is hostile input (issue 10): [`validate`] checks every field the
//! restarter and `mana_inspect` use before either uses it, with checked arithmetic, so a
//! crafted header (checksums recomputed by whoever crafted it) is refused with one line
//! naming the field instead of panicking, overflowing or mapping memory where it must not.
//!
//! Legitimate state stays accepted: RWX regions (JITs), `PROT_NONE` reservations and guard
//! pages, a stack pointer in any writable region, a thread's instruction pointer in any
//! executable region. Register values that cannot be range-checked (rbx, rbp, r12–r15,
//! mxcsr, the FS base, the rseq and clear-tid addresses) are compared by
//! [`check_memory_copies`] with the runtime's own copy saved in memory, which a region
//! checksum covers; so is a digest of every other field but the regions. A region's
//! checksum covers its description (addresses, protections, kind, file, page positions)
//! as well as its data.

use crate::format::{FileKind, ImageHeader, RegionKind, PAGE_SIZE};
use crate::format::{RestartMailbox, DATA_START};

/// Above every user-space address of x86_64 (57-bit with 5-level paging).
pub const USER_TOP: u64 = 1 << 56;
/// More than any process has (`vm.max_map_count` is 65,530 by default).
pub const MAX_REGIONS: usize = 1 << 20;
/// More than any process runs (`kernel.threads-max` is in the hundreds of thousands for
/// the whole machine; one process with this many would not have been checkpointed).
pub const MAX_THREADS: usize = 1 << 16;
/// Descriptors: `fs.nr_open` is at most 2^20 + a little.
pub const MAX_FD: i32 = 1 << 21;
/// `PATH_MAX`.
pub const MAX_PATH: usize = 4096;
/// Entries of the saved auxiliary vector (the kernel's `AT_VECTOR_SIZE` is far below).
pub const MAX_AUXV: usize = 1024;
/// Open flags a restored descriptor is reopened with (the restarter masks the saved flags
/// with these): what `open` accepts for reopening an existing file, never `O_CREAT`,
/// `O_TRUNC` or `O_EXCL` — an image that carries one of those three was not written by
/// MANA and is refused.
pub const REOPEN_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_LARGEFILE
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NOATIME
    | libc::O_NOCTTY
    | libc::O_ASYNC;

fn page_aligned(v: u64) -> bool {
    v.is_multiple_of(PAGE_SIZE)
}

/// `len` bytes from `at` lie in writable regions without a gap (a variable of a library
/// may straddle its `.data` mapping and the `.bss` one after it).
fn writable(h: &ImageHeader, at: u64, len: u64) -> bool {
    let Some(end) = at.checked_add(len) else {
        return false;
    };
    let Some(first) = h.regions.iter().position(|r| r.start <= at && at < r.end) else {
        return false;
    };
    let mut covered = at;
    for r in &h.regions[first..] {
        if r.start > covered || r.prot & crate::format::prot::WRITE == 0 {
            return false;
        }
        covered = r.end;
        if covered >= end {
            return true;
        }
    }
    false
}

fn path_ok(p: &str) -> bool {
    p.len() <= MAX_PATH && !p.contains('\0')
}

/// Checks `h`, whose region data must lie between [`DATA_START`] and `data_end` (the
/// header's offset in the file). `Err` names the first field found wrong.
pub fn validate(h: &ImageHeader, data_end: u64) -> Result<(), String> {
    if h.regions.len() > MAX_REGIONS {
        return Err(format!(
            "{} regions (at most {MAX_REGIONS})",
            h.regions.len()
        ));
    }
    let mut prev_end = 0u64;
    for (i, r) in h.regions.iter().enumerate() {
        let what = || format!("region {i} ({:#x}-{:#x})", r.start, r.end);
        if !page_aligned(r.start) || !page_aligned(r.end) || r.start >= r.end || r.end > USER_TOP {
            return Err(format!("{}: not a page-aligned user-space range", what()));
        }
        if r.start < prev_end {
            return Err(format!(
                "{}: overlaps or precedes the region before it",
                what()
            ));
        }
        prev_end = r.end;
        if r.prot & !7 != 0 {
            return Err(format!("{}: protection bits {:#x}", what(), r.prot));
        }
        if !path_ok(&r.name) {
            return Err(format!(
                "{}: name longer than {MAX_PATH} bytes or with a NUL",
                what()
            ));
        }
        if let RegionKind::FilePrivate(f) | RegionKind::FileShared(f) = &r.kind {
            if !path_ok(&f.path) || !f.path.starts_with('/') {
                return Err(format!(
                    "{}: mapped file path is not an absolute path",
                    what()
                ));
            }
            if !page_aligned(f.offset) || f.offset.checked_add(r.end - r.start).is_none() {
                return Err(format!("{}: file offset {:#x}", what(), f.offset));
            }
        }
        if r.extents.is_empty() && r.checksum != r.hasher().digest() {
            // Nothing stored: the checksum is that of the description alone (the
            // restarter, which reads no data for such a region, and `mana_inspect` agree).
            return Err(format!(
                "{}: checksum of a region without stored data",
                what()
            ));
        }
        let pages = (r.end - r.start) / PAGE_SIZE;
        let mut next_page = 0u64;
        for e in &r.extents {
            let bytes = e.pages.checked_mul(PAGE_SIZE);
            let file_end = bytes.and_then(|b| e.file_offset.checked_add(b));
            if e.pages == 0
                || file_end.is_none_or(|end| end > data_end)
                || e.file_offset < DATA_START
                || !page_aligned(e.file_offset)
            {
                return Err(format!(
                    "{}: an extent points outside the data area",
                    what()
                ));
            }
            if e.first_page < next_page
                || e.first_page
                    .checked_add(e.pages)
                    .is_none_or(|end| end > pages)
            {
                return Err(format!(
                    "{}: an extent lies outside the region or overlaps another",
                    what()
                ));
            }
            next_page = e.first_page + e.pages;
        }
        if let RegionKind::FilePrivate(f) = &r.kind {
            // Stored pages are written through a private mapping of the file: one past the
            // file's end would be SIGBUS.
            if next_page > crate::files::pages_in_file(r.end - r.start, f.offset, f.size) {
                return Err(format!(
                    "{}: stored pages past the end of its file ({} bytes)",
                    what(),
                    f.size
                ));
            }
        }
    }
    // Whether `a` lies in a region with protection bit `bit`.
    let in_memory = |a: u64, bit: u8| {
        h.regions
            .iter()
            .any(|r| r.start <= a && a < r.end && r.prot & bit != 0)
    };
    if h.threads.is_empty() || h.threads.len() > MAX_THREADS {
        return Err(format!("{} threads (1 to {MAX_THREADS})", h.threads.len()));
    }
    if h.threads.iter().filter(|t| t.is_main).count() > 1 {
        return Err("more than one main thread".into());
    }
    // A restart gives the ids back (clone3 set_tid): each must be one the kernel can hand
    // out, once; the leader's is the pid.
    const PID_MAX_LIMIT: i32 = 4 << 20;
    if h.pid <= 0 || h.pid >= PID_MAX_LIMIT {
        return Err(format!("pid {} (1 to {})", h.pid, PID_MAX_LIMIT - 1));
    }
    let mut tids: Vec<i32> = h.threads.iter().map(|t| t.tid).collect();
    tids.sort_unstable();
    if let Some(w) = tids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("thread id {} appears twice", w[0]));
    }
    if h.zombies.len() > crate::ckptdir::MAX_MEMBERS {
        return Err(format!("{} ended children (zombies)", h.zombies.len()));
    }
    for (i, z) in h.zombies.iter().enumerate() {
        if z.pid <= 1 || z.pid >= PID_MAX_LIMIT || z.pid == h.pid {
            return Err(format!("ended child {i}: pid {}", z.pid));
        }
        if tids.binary_search(&z.pid).is_ok() || h.zombies[..i].iter().any(|y| y.pid == z.pid) {
            return Err(format!("ended child {i}: pid {} is taken", z.pid));
        }
    }
    for (i, t) in h.threads.iter().enumerate() {
        if t.tid <= 0 || t.tid >= PID_MAX_LIMIT {
            return Err(format!("thread {i}: tid {}", t.tid));
        }
        if t.is_main && t.tid != h.pid {
            return Err(format!(
                "thread {i}: the main thread's id {} is not the pid {}",
                t.tid, h.pid
            ));
        }
        // The stack pointer points into writable memory (any: a thread may run on a stack
        // of its own allocation); the saved context sits just below it.
        if !in_memory(t.ctx.rsp.wrapping_sub(8), crate::format::prot::WRITE) {
            return Err(format!(
                "thread {i} (tid {}): stack pointer {:#x} is not in writable memory",
                t.tid, t.ctx.rsp
            ));
        }
        if !in_memory(t.ctx.rip, crate::format::prot::EXEC) {
            return Err(format!(
                "thread {i} (tid {}): instruction pointer {:#x} is not in executable memory",
                t.tid, t.ctx.rip
            ));
        }
        if t.robust_list.checked_add(t.robust_len).is_none() {
            return Err(format!(
                "thread {i} (tid {}): robust list {:#x}+{}",
                t.tid, t.robust_list, t.robust_len
            ));
        }
        if let Some(rs) = t.rseq {
            if rs
                .addr
                .checked_add(u64::from(rs.len))
                .is_none_or(|e| e > USER_TOP)
            {
                return Err(format!(
                    "thread {i} (tid {}): rseq area {:#x}+{}",
                    t.tid, rs.addr, rs.len
                ));
            }
        }
        if let Some(a) = t.altstack {
            if a.sp.checked_add(a.size).is_none_or(|e| e > USER_TOP) {
                return Err(format!(
                    "thread {i} (tid {}): alternate signal stack {:#x}+{}",
                    t.tid, a.sp, a.size
                ));
            }
        }
    }
    let mut fds = std::collections::HashSet::new();
    for f in &h.files {
        if !(0..MAX_FD).contains(&f.fd) || !fds.insert(f.fd) {
            return Err(format!(
                "descriptor {}: number out of range or listed twice",
                f.fd
            ));
        }
        if f.flags & (libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL) != 0 {
            return Err(format!(
                "descriptor {}: open flags {:#o} include O_CREAT, O_TRUNC or O_EXCL",
                f.fd, f.flags
            ));
        }
        if f.offset < 0
            || !path_ok(&f.path)
            || (f.kind == FileKind::Regular && !f.path.starts_with('/'))
            || (matches!(
                f.kind,
                FileKind::Inherited(_)
                    | FileKind::Epoll(_)
                    | FileKind::EventFd { .. }
                    | FileKind::TimerFd { .. }
                    | FileKind::SignalFd { .. }
                    | FileKind::Dgram(_)
                    | FileKind::UnixListener(_)
            ) && (f.fd <= 2 || f.offset != 0))
            // A pipe, a socket pair's end or a TCP connection may be a descendant's
            // stdio (`popen`'s pipe; a socket given as a child's stdin and stdout).
            || (matches!(
                f.kind,
                FileKind::Pipe(_) | FileKind::UnixPair(_) | FileKind::Tcp(_)
            ) && f.offset != 0)
            || (matches!(f.kind, FileKind::Unlinked(_)) && f.fd <= 2)
            || matches!(f.kind, FileKind::TimerFd { clock, value_ns, interval_ns, .. }
                if ![0, 1, 7, 8, 9].contains(&clock) || value_ns >= 1 << 62 || interval_ns >= 1 << 62)
        {
            return Err(format!("descriptor {}: offset {} or path", f.fd, f.offset));
        }
    }
    check_pipes(&h.files)?;
    check_unix_pairs(&h.files)?;
    check_tcp(&h.files)?;
    check_unlinked(h)?;
    for f in &h.files {
        if let FileKind::UnixListener(l) = &f.kind {
            let p = &l.path;
            let abstract_name = p.first() == Some(&0);
            if p.is_empty() || p.len() > 107 || (!abstract_name && p.contains(&0)) {
                return Err(format!(
                    "descriptor {} (listening Unix socket {}): address of {} bytes",
                    f.fd,
                    l.socket,
                    p.len()
                ));
            }
        }
    }
    for f in &h.files {
        if let FileKind::Dgram(d) = &f.kind {
            check_dgram(d).map_err(|e| format!("descriptor {} (datagram socket): {e}", f.fd))?;
        }
    }
    for f in &h.files {
        if let FileKind::Epoll(list) = &f.kind {
            let listed = |fd: i32| h.files.iter().any(|g| g.fd == fd);
            if list.len() > MAX_FD as usize
                || list
                    .iter()
                    .any(|i| !(0..MAX_FD).contains(&i.fd) || !listed(i.fd))
            {
                return Err(format!(
                    "descriptor {} (epoll): an interest in a descriptor the image does not hold",
                    f.fd
                ));
            }
        }
    }
    let mut signals = 0u64;
    for s in &h.signals {
        if !(1..=64).contains(&s.signo) || signals & (1 << (s.signo - 1)) != 0 {
            return Err(format!("signal disposition for signal {}", s.signo));
        }
        signals |= 1 << (s.signo - 1);
    }
    let m = &h.mm;
    if m.auxv.len() > MAX_AUXV || !m.auxv.len().is_multiple_of(2) {
        return Err(format!("auxiliary vector of {} words", m.auxv.len()));
    }
    for (name, lo, hi) in [
        ("code", m.start_code, m.end_code),
        ("data", m.start_data, m.end_data),
        ("brk", m.start_brk, m.brk),
        ("arguments", m.arg_start, m.arg_end),
        ("environment", m.env_start, m.env_end),
    ] {
        if lo > hi || hi > USER_TOP {
            return Err(format!("memory layout: {name} {lo:#x}-{hi:#x}"));
        }
    }
    if m.start_stack > USER_TOP {
        return Err(format!("memory layout: stack {:#x}", m.start_stack));
    }
    if let Some(v) = &h.vdso {
        let vdso_end = v.vdso_start.checked_add(v.vdso_len);
        if !page_aligned(v.block_start)
            || !page_aligned(v.block_end)
            || v.block_start >= v.block_end
            || v.vdso_start < v.block_start
            || vdso_end.is_none_or(|e| e > v.block_end)
        {
            return Err(format!(
                "vdso block {:#x}-{:#x}",
                v.block_start, v.block_end
            ));
        }
    }
    if !writable(
        h,
        h.restart_mailbox,
        std::mem::size_of::<RestartMailbox>() as u64,
    ) {
        return Err(format!(
            "restart mailbox {:#x} is not in writable memory",
            h.restart_mailbox
        ));
    }
    if !path_ok(&h.program) || !path_ok(&h.cwd) || h.hostname.len() > 255 {
        return Err("program, working directory or host name too long".into());
    }
    if let Some(mpi) = &h.mpi {
        if h.world_size == 0 || h.rank >= h.world_size {
            return Err(format!("MPI rank {} of {}", h.rank, h.world_size));
        }
        for [lo, hi] in &mpi.lower_regions {
            if lo >= hi || *hi > USER_TOP {
                return Err(format!("lower-half range {lo:#x}-{hi:#x}"));
            }
        }
    }
    Ok(())
}

/// Compares a validated header `h` with the runtime's copies in the saved memory, read
/// through `read(addr, buf) -> stored?`: all of it but the regions with the digest at
/// [`ImageHeader::state_digest_at`], then each thread with the runtime's record of it ([`crate::format::thread_record`] at [`ThreadState::record`]), read
/// through `read(addr, buf) -> stored?`. A header whose registers were changed without the
/// memory they were copied from is refused, naming the register.
///
/// [`ThreadState::record`]: crate::format::ThreadState::record
pub fn check_memory_copies(
    h: &ImageHeader,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<bool, String>,
) -> Result<(), String> {
    use crate::format::thread_record::{mismatch, LEN};
    // The whole header but its regions, against the digest the writer kept in memory.
    let mut digest = [0u8; 8];
    if !h.state_digest_at.is_multiple_of(8)
        || !writable(h, h.state_digest_at, 8)
        || !read(h.state_digest_at, &mut digest)?
    {
        return Err(format!(
            "the header's digest at {:#x} is not in the saved memory",
            h.state_digest_at
        ));
    }
    if u64::from_le_bytes(digest) != h.state_digest() {
        return Err("the header differs from the digest of it saved in memory".into());
    }
    for t in &h.threads {
        if !t.record.is_multiple_of(8) || !writable(h, t.record, LEN as u64) {
            return Err(format!(
                "thread {}: its record at {:#x} is not in writable memory",
                t.tid, t.record
            ));
        }
        let mut rec = [0u8; LEN];
        if !read(t.record, &mut rec)? {
            return Err(format!(
                "thread {}: its record at {:#x} is not stored in the image",
                t.tid, t.record
            ));
        }
        if let Some(field) = mismatch(t, &rec) {
            return Err(format!(
                "thread {}: {field} differs from the copy saved in memory",
                t.tid
            ));
        }
        // Reserved MXCSR bits set make the restorer's LDMXCSR fault.
        if t.ctx.mxcsr & !0xffff != 0 {
            return Err(format!("thread {}: mxcsr {:#x}", t.tid, t.ctx.mxcsr));
        }
    }
    Ok(())
}

/// The largest pipe capacity accepted (the kernel's own limit for root is 2^31).
pub const MAX_PIPE_CAPACITY: u64 = 1 << 30;

/// Pipes ([`FileKind::Pipe`]): a sane capacity, content no larger than it and recorded on
/// exactly one descriptor of each pipe, packet sizes that add up to it.
fn check_pipes(files: &[crate::FileState]) -> Result<(), String> {
    let mut holders: std::collections::HashMap<u64, (u64, usize)> = Default::default();
    for f in files {
        let FileKind::Pipe(p) = &f.kind else { continue };
        let bad = |why: &str| Err(format!("descriptor {} (pipe {}): {why}", f.fd, p.pipe));
        if p.capacity == 0 || p.capacity > MAX_PIPE_CAPACITY || !p.capacity.is_power_of_two() {
            return bad("capacity");
        }
        if (p.data.len() as u64) > p.capacity || (!p.holds_data && !p.data.is_empty()) {
            return bad("content larger than the pipe, or on a descriptor that does not hold it");
        }
        let sum = p.packets.iter().map(|&n| n as u64).sum::<u64>();
        if !p.packets.is_empty() && (sum != p.data.len() as u64 || p.packets.contains(&0)) {
            return bad("packet sizes");
        }
        if (!p.holds_data || !p.read_end) && !p.packets.is_empty() {
            return bad("packets on a descriptor that does not hold the content");
        }
        let e = holders.entry(p.pipe).or_insert((p.capacity, 0));
        if e.0 != p.capacity {
            return bad("two capacities for one pipe");
        }
        e.1 += p.holds_data as usize;
    }
    if let Some((pipe, _)) = holders.iter().find(|(_, (_, n))| *n > 1) {
        return Err(format!("pipe {pipe}: content recorded twice"));
    }
    Ok(())
}

/// The largest file without a name whose contents an image carries.
pub const MAX_UNLINKED: u64 = 64 << 20;

/// Files without a name ([`FileKind::Unlinked`]): a bounded size, contents recorded once
/// per file and of that size, a name without NUL, mode and seal bits that exist, shared
/// mappings that lie on shared regions of the image.
fn check_unlinked(h: &ImageHeader) -> Result<(), String> {
    let mut holders: std::collections::HashMap<u64, (u64, usize)> = Default::default();
    for f in &h.files {
        let FileKind::Unlinked(u) = &f.kind else {
            continue;
        };
        let bad = |why: &str| {
            Err(format!(
                "descriptor {} (file without a name {}): {why}",
                f.fd, u.file
            ))
        };
        if u.size > MAX_UNLINKED {
            return bad("larger than 64 MiB");
        }
        if u.name.len() > 4096 || u.name.contains('\0') {
            return bad("name");
        }
        if u.mode > 0o7777 || u.seals & !0x3f != 0 || (!u.memfd && u.seals != 0) {
            return bad("mode or seals");
        }
        if (u.holds_data && u.data.len() as u64 != u.size) || (!u.holds_data && !u.data.is_empty())
        {
            return bad(
                "contents not of the file's size, or on a descriptor that does not hold them",
            );
        }
        if u.maps.len() > 1024 {
            return bad("too many mappings");
        }
        for &[start, end, off] in &u.maps {
            let inside = h
                .regions
                .iter()
                .any(|r| r.start <= start && end <= r.end && r.kind == RegionKind::SharedAnon);
            if start >= end
                || start % PAGE_SIZE != 0
                || end % PAGE_SIZE != 0
                || off % PAGE_SIZE != 0
                || !inside
            {
                return bad("a mapping that is no shared region of the image");
            }
        }
        let e = holders.entry(u.file).or_insert((u.size, 0));
        if e.0 != u.size {
            return bad("two sizes for one file");
        }
        e.1 += u.holds_data as usize;
    }
    if let Some((file, _)) = holders.iter().find(|(_, (_, n))| *n != 1) {
        return Err(format!(
            "file without a name {file}: contents not recorded exactly once"
        ));
    }
    Ok(())
}

/// The most bytes in flight recorded for one end of a socket pair.
pub const MAX_SOCKET_DATA: usize = 64 << 20;

/// Socket pairs ([`FileKind::UnixPair`]): each end's peer is an end of the image whose
/// peer is it; content bounded and recorded on exactly one descriptor of each end.
fn check_unix_pairs(files: &[crate::FileState]) -> Result<(), String> {
    let ends: Vec<(i32, &crate::UnixPairState)> = files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::UnixPair(u) => Some((f.fd, u)),
            _ => None,
        })
        .collect();
    for (fd, u) in &ends {
        let bad = |why: &str| Err(format!("descriptor {fd} (socket {}): {why}", u.socket));
        let sum = u.packets.iter().map(|&n| n as u64).sum::<u64>();
        if (!u.seqpacket || !u.holds_data) && !u.packets.is_empty()
            || (!u.packets.is_empty() && sum != u.data.len() as u64)
            || u.packets.len() > MAX_SOCKET_DATA
            || (u.seqpacket && u.packets.is_empty() && !u.data.is_empty())
        {
            return bad("message lengths that do not cut its bytes in flight");
        }
        if u.seqpacket && u.outside {
            return bad("a seqpacket connection to another process");
        }
        if u.outside {
            // The bytes readable at this end (its peer may be another process of the
            // tree, restored with it), on one descriptor of the end.
            let holders = ends
                .iter()
                .filter(|(_, v)| v.socket == u.socket && v.holds_data)
                .count();
            if u.data.len() > MAX_SOCKET_DATA
                || (!u.holds_data && !u.data.is_empty())
                || holders > 1
                || u.shutdown > 3
            {
                return bad("bytes kept for a connection to outside the process");
            }
            continue;
        }
        if u.socket == u.peer
            || !ends
                .iter()
                .any(|(_, v)| v.socket == u.peer && v.peer == u.socket)
        {
            return bad("its other end is not in the image");
        }
        if u.data.len() > MAX_SOCKET_DATA || (!u.holds_data && !u.data.is_empty()) || u.shutdown > 3
        {
            return bad("bytes in flight too many, or on a descriptor that does not hold them");
        }
        let holders = ends
            .iter()
            .filter(|(_, v)| v.socket == u.socket && v.holds_data)
            .count();
        if holders != 1 {
            return bad("bytes in flight recorded on more or fewer than one descriptor");
        }
    }
    Ok(())
}

/// TCP sockets ([`FileKind::Tcp`]): an address of the family's length; a listening socket
/// connected to nothing; a connection inside the process names a socket of the image that
/// names it back with the addresses crossed, and exactly one descriptor of each such
/// socket carries its bytes in flight (at most [`MAX_SOCKET_DATA`]); other sockets carry
/// none.
fn check_tcp(files: &[crate::FileState]) -> Result<(), String> {
    let socks: Vec<(i32, &crate::TcpState)> = files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::Tcp(t) => Some((f.fd, t)),
            _ => None,
        })
        .collect();
    for (fd, t) in &socks {
        let bad = |why: &str| Err(format!("descriptor {fd} (TCP socket {}): {why}", t.socket));
        let len = match t.family as i32 {
            libc::AF_INET => 4,
            libc::AF_INET6 => 16,
            _ => return bad("not IPv4 or IPv6"),
        };
        if t.local_ip.len() != len
            || !(t.remote_ip.is_empty() || t.remote_ip.len() == len)
            || (t.remote_ip.is_empty() && (t.remote_port != 0 || t.peer != 0))
        {
            return bad("addresses of the wrong length");
        }
        if t.listening && (!t.remote_ip.is_empty() || t.peer != 0) {
            return bad("listening and connected");
        }
        if t.data.len() > MAX_SOCKET_DATA || (!t.holds_data && !t.data.is_empty()) || t.shutdown > 3
        {
            return bad("bytes in flight too many, or on a descriptor that does not hold them");
        }
        if t.peer == 0 {
            // A connection to another process of the tree keeps the bytes readable at
            // it, on one descriptor of the socket; anything else keeps none.
            let holders = socks
                .iter()
                .filter(|(_, u)| u.socket == t.socket && u.holds_data)
                .count();
            if t.holds_data && (t.remote_ip.is_empty() || t.listening || holders > 1) {
                return bad("bytes in flight on a socket without a peer in the process");
            }
            continue;
        }
        if t.peer == t.socket
            || !socks.iter().any(|(_, u)| {
                u.socket == t.peer
                    && u.peer == t.socket
                    && u.local_ip == t.remote_ip
                    && u.local_port == t.remote_port
                    && u.remote_ip == t.local_ip
                    && u.remote_port == t.local_port
            })
        {
            return bad("its peer is not in the image");
        }
        let holders = socks
            .iter()
            .filter(|(_, u)| u.socket == t.socket && u.holds_data)
            .count();
        if holders != 1 {
            return bad("bytes in flight recorded on more or fewer than one descriptor");
        }
    }
    Ok(())
}

/// A datagram socket ([`FileKind::Dgram`]): UDP addresses of the family's length; a Unix
/// one unbound, connected to a path of at most 107 bytes without NUL (or an abstract name).
fn check_dgram(d: &crate::DgramState) -> Result<(), String> {
    match d.family as i32 {
        libc::AF_UNIX => {
            let path_ok = |p: &[u8]| p.len() <= 107 && (p.first() == Some(&0) || !p.contains(&0));
            if !path_ok(&d.local_ip)
                || d.local_port != 0
                || d.remote_port != 0
                || !path_ok(&d.remote)
            {
                return Err("a Unix datagram socket bound or connected to a bad path".into());
            }
        }
        libc::AF_INET | libc::AF_INET6 => {
            let len = if d.family as i32 == libc::AF_INET {
                4
            } else {
                16
            };
            if d.local_ip.len() != len || !(d.remote.is_empty() || d.remote.len() == len) {
                return Err("addresses of the wrong length".into());
            }
        }
        _ => return Err("not Unix, IPv4 or IPv6".into()),
    }
    Ok(())
}
