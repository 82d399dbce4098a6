//! Per-process image format, version 2 (version 1 identified mapped files by inode and
//! mtime; 2 by a content hash, [`FileIdentity::sha256`]).
//!
//! ```text
//! offset 0      preamble (64 bytes, little endian)
//!                 0  magic  "MANAIMG\0"
//!                 8  format version (u32)
//!                12  ELF machine of the image (u32, 62 = x86_64)
//!                16  header offset (u64)
//!                24  header length (u64)
//!                32  xxh3-64 of the header bytes (u64)
//!                40  xxh3-64 of bytes 0..40 (u64) — detects a torn/foreign preamble
//! offset 4096   region data: each stored extent page-aligned, in header order
//! header_offset ImageHeader, rmp-serde encoded
//! ```
//! The preamble is written last: a crash while writing leaves a file that fails the
//! magic or checksum test instead of one that looks valid.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 8] = *b"MANAIMG\0";
pub const FORMAT_VERSION: u32 = 2;
pub const EM_X86_64: u32 = 62;
pub const PAGE_SIZE: u64 = 4096;
pub const PREAMBLE_LEN: usize = 64;
/// Region data starts here (the preamble is padded to one page).
pub const DATA_START: u64 = PAGE_SIZE;
/// A header longer than this is refused before it is read (a real one is a few hundred
/// KiB for a process with tens of thousands of mappings).
pub const MAX_HEADER_LEN: u64 = 256 << 20;

/// Typed errors for everything that can be wrong with an image file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: truncated image ({what})")]
    Truncated { path: PathBuf, what: String },
    #[error("{path}: not a MANA image (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: image preamble is corrupt (checksum mismatch)")]
    PreambleChecksum { path: PathBuf },
    #[error("{path}: image format version {found} is not supported (this build reads version {expected})")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: image is for ELF machine {found}, this machine is x86_64 ({expected})")]
    Arch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: image header is corrupt (checksum mismatch)")]
    HeaderChecksum { path: PathBuf },
    #[error("{path}: image header cannot be decoded: {msg}")]
    Decode { path: PathBuf, msg: String },
    #[error("{file} changed since the checkpoint ({what}; it was mapped at {start:#x} by the process of {path}); restore the original file")]
    FileChanged {
        path: PathBuf,
        file: String,
        start: u64,
        what: String,
    },
    #[error("{}: image does not match the MANIFEST of {} (was it replaced?)", path.display(), path.parent().unwrap_or(Path::new(".")).display())]
    NotListed { path: PathBuf },
    #[error("{path}: image header is invalid: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: data of region {index} ({start:#x}-{end:#x} {name}) is corrupt (checksum mismatch)")]
    RegionChecksum {
        path: PathBuf,
        index: usize,
        start: u64,
        end: u64,
        name: String,
    },
}

impl ImageError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Protection bits of a region, as in `/proc/PID/maps`.
pub mod prot {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const EXEC: u8 = 4;
}

/// Identity of a file a region maps, so restart can refuse a file that changed: its size
/// and a SHA-256 of the bytes the region maps ([`crate::files`]). Any copy with the same
/// bytes will do (a node with its own `/usr/lib`); inode and mtime are not compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub path: String,
    /// Offset of the region's first byte in the file.
    pub offset: u64,
    pub size: u64,
    /// SHA-256 of the file's bytes from `offset` to the region's end or the file's end,
    /// whichever comes first ([`crate::files::mapped_len`]). Not checked for
    /// [`RegionKind::FileShared`], whose contents live in the file.
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegionKind {
    /// Private anonymous memory; stored pages are those ever touched.
    Anon,
    /// The brk heap (`[heap]`).
    Heap,
    /// The main thread's stack (`[stack]`), restored `MAP_GROWSDOWN`.
    Stack,
    /// `MAP_SHARED|MAP_ANONYMOUS` memory, or a shared mapping of a deleted file; all
    /// touched pages stored, restored as shared anonymous memory.
    SharedAnon,
    /// A private file mapping: restored by mapping the file again, then the pages the
    /// process modified (stored) are laid over it.
    FilePrivate(FileIdentity),
    /// A shared file mapping: its contents live in the file; nothing stored.
    FileShared(FileIdentity),
}

/// A run of stored pages of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Index of the first page, counted from the region start.
    pub first_page: u64,
    pub pages: u64,
    /// Where the data is in the image file (page aligned).
    pub file_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub prot: u8,
    /// Name as in `/proc/PID/maps` (path, `[heap]`, `[stack]`, or empty).
    pub name: String,
    pub kind: RegionKind,
    pub extents: Vec<Extent>,
    /// xxh3-64 over the region's description (everything above but the extents' file
    /// offsets, [`region_hasher`]) and then the stored bytes, extent after extent: a
    /// header whose region was moved, resized, given other protections, another file or
    /// other page positions fails it as data changed would.
    pub checksum: u64,
    /// Shared memory (`SharedAnon`): the inode of the object mapped (a `MAP_SHARED`
    /// anonymous mapping's, a `SysV` segment's, a deleted file's) — equal in every process
    /// of the tree mapping the same object, wherever each maps it. 0: not recorded (an
    /// earlier image; absent from the header then, and out of the checksum).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_inode: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The hasher of a region's checksum, seeded with its description (start, end,
/// protections, name, kind, and where its extents lie in it).
pub fn region_hasher(
    start: u64,
    end: u64,
    prot: u8,
    name: &str,
    kind: &RegionKind,
    extents: &[Extent],
    shared_inode: u64,
) -> RegionHasher {
    let pages: Vec<(u64, u64)> = extents.iter().map(|e| (e.first_page, e.pages)).collect();
    let desc = rmp_serde::to_vec(&(start, end, prot, name, kind, pages))
        .expect("a region description is always serializable");
    let mut h = RegionHasher::new();
    h.update(&desc);
    if shared_inode != 0 {
        h.update(&shared_inode.to_le_bytes());
    }
    h
}

impl Region {
    /// [`region_hasher`] of this region.
    pub fn hasher(&self) -> RegionHasher {
        region_hasher(
            self.start,
            self.end,
            self.prot,
            &self.name,
            &self.kind,
            &self.extents,
            self.shared_inode,
        )
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn stored_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.pages * PAGE_SIZE).sum()
    }
    pub fn prot_string(&self) -> String {
        let mut s = String::with_capacity(4);
        s.push(if self.prot & prot::READ != 0 {
            'r'
        } else {
            '-'
        });
        s.push(if self.prot & prot::WRITE != 0 {
            'w'
        } else {
            '-'
        });
        s.push(if self.prot & prot::EXEC != 0 {
            'x'
        } else {
            '-'
        });
        s.push(match self.kind {
            RegionKind::SharedAnon | RegionKind::FileShared(_) => 's',
            _ => 'p',
        });
        s
    }
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RegionKind::Anon => "anon",
            RegionKind::Heap => "heap",
            RegionKind::Stack => "stack",
            RegionKind::SharedAnon => "shared-anon",
            RegionKind::FilePrivate(_) => "file-private",
            RegionKind::FileShared(_) => "file-shared",
        }
    }
}

/// Callee-saved CPU state of a thread, as stored by the runtime's `save_context`. The
/// thread resumes as if `save_context` had returned a non-zero value; everything else
/// (caller-saved registers, full FPU state, signal mask) is restored by the
/// `rt_sigreturn` of the checkpoint signal handler it was stopped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuContext {
    pub rbx: u64,
    pub rbp: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rsp: u64,
    pub rip: u64,
    pub mxcsr: u32,
    pub fpu_cw: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub sig: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: i32,
    /// The thread-group leader (its tid was the pid).
    pub is_main: bool,
    pub ctx: CpuContext,
    pub fs_base: u64,
    /// Address the kernel clears at thread exit (glibc's `struct pthread` tid field).
    pub tid_address: u64,
    pub robust_list: u64,
    pub robust_len: u64,
    pub rseq: Option<Rseq>,
    /// Blocked signals while stopped (bit n-1 = signal n).
    pub sigmask: u64,
    pub altstack: Option<AltStack>,
    /// Where the runtime's record of this thread ([`thread_record`]) lies in the saved
    /// memory: a second copy of the fields above, covered by a region checksum, which
    /// [`crate::validate::check_memory_copies`] compares with them.
    pub record: u64,
}

/// The runtime's in-memory record of a stopped thread (the upper half's `ThreadSlot`,
/// `repr(C)`, whose layout is asserted against these offsets at compile time): the
/// header's [`ThreadState`] is copied from it, and it is saved with the rest of memory.
pub mod thread_record {
    pub const LEN: usize = 152;
    pub const TID: usize = 0;
    /// rbx, rbp, r12, r13, r14, r15, rsp, rip (u64 each), mxcsr (u32), x87 control word.
    pub const CTX: usize = 8;
    pub const FS_BASE: usize = 80;
    pub const TID_ADDRESS: usize = 88;
    pub const ROBUST_HEAD: usize = 96;
    pub const ROBUST_LEN: usize = 104;
    pub const RSEQ_ADDR: usize = 112;
    pub const SIGMASK: usize = 120;
    /// `stack_t`: sp (u64), flags (i32), size (u64 at +16).
    pub const ALTSTACK: usize = 128;
    /// `SS_DISABLE`.
    pub const SS_DISABLE: i32 = 2;

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    /// The record the runtime would hold for `t` (what a writer stores; tests and the fuzz
    /// target's attacker use it).
    pub fn encode(t: &super::ThreadState) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        let c = &t.ctx;
        put(TID, &t.tid.to_le_bytes());
        for (i, v) in [c.rbx, c.rbp, c.r12, c.r13, c.r14, c.r15, c.rsp, c.rip]
            .iter()
            .enumerate()
        {
            put(CTX + 8 * i, &v.to_le_bytes());
        }
        put(CTX + 64, &c.mxcsr.to_le_bytes());
        put(CTX + 68, &c.fpu_cw.to_le_bytes());
        put(FS_BASE, &t.fs_base.to_le_bytes());
        put(TID_ADDRESS, &t.tid_address.to_le_bytes());
        put(ROBUST_HEAD, &t.robust_list.to_le_bytes());
        put(ROBUST_LEN, &t.robust_len.to_le_bytes());
        put(RSEQ_ADDR, &t.rseq.map_or(0, |r| r.addr).to_le_bytes());
        put(SIGMASK, &t.sigmask.to_le_bytes());
        let (sp, flags, size) = t
            .altstack
            .map_or((0, SS_DISABLE, 0), |a| (a.sp, a.flags, a.size));
        put(ALTSTACK, &sp.to_le_bytes());
        put(ALTSTACK + 8, &flags.to_le_bytes());
        put(ALTSTACK + 16, &size.to_le_bytes());
        b
    }

    /// The first field of `t` that differs from the record `rec` ([`LEN`] bytes), if any.
    pub fn mismatch(t: &super::ThreadState, rec: &[u8; LEN]) -> Option<&'static str> {
        let c = &t.ctx;
        let regs = [
            ("rbx", c.rbx),
            ("rbp", c.rbp),
            ("r12", c.r12),
            ("r13", c.r13),
            ("r14", c.r14),
            ("r15", c.r15),
            ("rsp", c.rsp),
            ("rip", c.rip),
        ];
        if u32_at(rec, TID) as i32 != t.tid {
            return Some("tid");
        }
        for (i, (name, v)) in regs.iter().enumerate() {
            if u64_at(rec, CTX + 8 * i) != *v {
                return Some(name);
            }
        }
        if u32_at(rec, CTX + 64) != c.mxcsr {
            return Some("mxcsr");
        }
        if u16::from_le_bytes([rec[CTX + 68], rec[CTX + 69]]) != c.fpu_cw {
            return Some("x87 control word");
        }
        let words = [
            ("fs base", FS_BASE, t.fs_base),
            ("clear-tid address", TID_ADDRESS, t.tid_address),
            ("robust list", ROBUST_HEAD, t.robust_list),
            ("robust list length", ROBUST_LEN, t.robust_len),
            ("rseq area", RSEQ_ADDR, t.rseq.map_or(0, |r| r.addr)),
            ("signal mask", SIGMASK, t.sigmask),
        ];
        for (name, at, v) in words {
            if u64_at(rec, at) != v {
                return Some(name);
            }
        }
        let flags = u32_at(rec, ALTSTACK + 8) as i32;
        match &t.altstack {
            None if flags & SS_DISABLE == 0 => Some("alternate signal stack"),
            Some(a)
                if (u64_at(rec, ALTSTACK), flags, u64_at(rec, ALTSTACK + 16))
                    != (a.sp, a.flags, a.size) =>
            {
                Some("alternate signal stack")
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// stdin/stdout/stderr: the restarted process uses whatever the restarter has.
    Stdio,
    /// A regular file, reopened by path at the same descriptor number.
    Regular,
    /// A descriptor the process inherited (open before the runtime started) that cannot
    /// be reopened by path — a pipe from the launching shell, a socket, a terminal. At
    /// restart: the restarting process's descriptor of the same number if it is of the
    /// same kind (and, for a pipe, direction), as stdio is; else a stand-in on which
    /// reads see end-of-file and writes succeed (drained).
    Inherited(InheritedKind),
    /// One end of a pipe (or FIFO) the process made ([`PipeState`]); every descriptor of
    /// the same pipe names it by the same `pipe` number.
    Pipe(PipeState),
    /// An epoll instance the process made, with its interest list (restored once every
    /// other descriptor is in place).
    Epoll(Vec<EpollInterest>),
    /// An eventfd: its counter and whether it counts in semaphore mode.
    EventFd { count: u64, semaphore: bool },
    /// A timerfd: its clock, the expirations not yet read, the time to the next one and
    /// the period (0: one-shot; both 0: disarmed).
    TimerFd {
        clock: i32,
        ticks: u64,
        value_ns: u64,
        interval_ns: u64,
    },
    /// A signalfd and the signals it takes (bit n-1 for signal n).
    SignalFd { mask: u64 },
    /// One end of a connected Unix stream socket pair whose two ends the process holds
    /// ([`UnixPairState`]).
    UnixPair(UnixPairState),
    /// A TCP socket (IPv4 or IPv6): listening, connected — to another socket of the
    /// process or to something outside it — or neither ([`TcpState`]).
    Tcp(TcpState),
    /// A datagram socket: UDP (IPv4, IPv6) or an unbound Unix datagram socket (as libc's
    /// `syslog` keeps, connected to `/dev/log`) ([`DgramState`]). Datagrams queued at the
    /// checkpoint are not kept (a datagram service loses datagrams anyway).
    Dgram(DgramState),
    /// A file with no name left: a memfd, or a file deleted while open (a Fortran
    /// scratch file, `tmpfile()`), with its contents ([`UnlinkedState`]).
    Unlinked(UnlinkedState),
    /// A listening Unix socket ([`UnixListenerState`]): listens again on its address.
    UnixListener(UnixListenerState),
}

/// A file without a name, as one of its descriptors sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlinkedState {
    /// The file's inode at the checkpoint: equal for every descriptor of one file.
    pub file: u64,
    /// A memfd (`name`: its name), else a deleted file (`name`: the path it had).
    pub memfd: bool,
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
    /// A memfd's seals (`F_GET_SEALS`); 0 for a deleted file.
    pub seals: i32,
    /// Whether this record carries the contents (exactly one descriptor of each file).
    pub holds_data: bool,
    /// The file's bytes, `size` of them, on the descriptor that holds them.
    pub data: Vec<u8>,
    /// Where the process maps the file shared: (start, end, file offset); restored by
    /// mapping the new file there, so the mapping and the descriptor share pages again.
    pub maps: Vec<[u64; 3]>,
}

/// A datagram socket as one of its descriptors sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgramState {
    /// The socket's inode at the checkpoint (equal for the descriptors of one socket).
    pub socket: u64,
    /// `AF_UNIX`, `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// UDP: the address (4 or 16 bytes) and port it is bound to (port 0: not bound).
    /// Unix: the path (or abstract name, leading NUL) it is bound to; empty: not bound.
    pub local_ip: Vec<u8>,
    pub local_port: u16,
    /// What it is connected to (empty: nothing): UDP, an address and `remote_port`;
    /// Unix, the socket's path (a leading NUL: an abstract name).
    pub remote: Vec<u8>,
    pub remote_port: u16,
}

/// A TCP socket as one of its descriptors sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpState {
    /// The socket's inode at the checkpoint (equal for the descriptors of one socket).
    pub socket: u64,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Its own address (4 or 16 bytes) and port (0: not bound).
    pub local_ip: Vec<u8>,
    pub local_port: u16,
    /// Whether it listens.
    pub listening: bool,
    /// The address and port it is connected to (empty address: not connected).
    pub remote_ip: Vec<u8>,
    pub remote_port: u16,
    /// The inode of the socket of the process it is connected to (0: none — a
    /// connection to something outside the process comes back reset by its peer).
    pub peer: u64,
    /// Whether this record carries the bytes readable at this socket (one descriptor of
    /// each socket of a connection inside the process does).
    pub holds_data: bool,
    /// The bytes its peer sent and it has not read yet (the whole stream in flight).
    pub data: Vec<u8>,
    /// 2: it shut its sending side (`shutdown(SHUT_WR)`; its peer reads end-of-file after
    /// the bytes in flight); 1: its peer shut its own (a FIN arrived: this side reads
    /// end-of-file after the bytes in flight — for a connection to something outside the
    /// process, those bytes are kept and come back before the end-of-file).
    pub shutdown: u8,
    /// `TCP_NODELAY`.
    pub nodelay: bool,
}

/// One end of a Unix stream socket pair inside the process (`socketpair(2)`, or a
/// connection between two of its threads), as one descriptor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixPairState {
    /// The socket's inode at the checkpoint (equal for the descriptors of one end).
    pub socket: u64,
    /// The other end's inode.
    pub peer: u64,
    /// Whether this record carries the bytes readable at this end (one descriptor of
    /// each end does).
    pub holds_data: bool,
    /// The bytes sent by the other end and not yet read here, read without consuming
    /// them (`MSG_PEEK`).
    pub data: Vec<u8>,
    /// The kernel's shutdown bits of this end (1: no more receiving, 2: no more sending).
    pub shutdown: u8,
    /// The other end is in no process of the image (another process: outside what is
    /// checkpointed): restored with its other end closed — reads see end-of-file, writes
    /// fail with `EPIPE` — and no bytes kept.
    #[serde(default)]
    pub outside: bool,
    /// A `SOCK_SEQPACKET` pair (both ends in the process): message boundaries kept.
    /// Absent when false, so that earlier images' digests stay the same.
    #[serde(default, skip_serializing_if = "is_false")]
    pub seqpacket: bool,
    /// With `seqpacket`, on the descriptor holding `data`: each message's length, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packets: Vec<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A listening Unix socket (stream or seqpacket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixListenerState {
    /// The socket's inode at the checkpoint.
    pub socket: u64,
    pub seqpacket: bool,
    /// Its address: a path, or an abstract name (leading NUL), as `sun_path` holds it.
    pub path: Vec<u8>,
}

/// One descriptor an epoll instance watches (`EPOLL_CTL_ADD` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollInterest {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

/// A pipe the process made, as one of its descriptors sees it. The unread bytes and the
/// capacity are recorded once per pipe, on its lowest-numbered read end; the other
/// descriptors of that pipe carry `data` and `packets` empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeState {
    /// The pipe's inode at the checkpoint: equal for the descriptors of one pipe.
    pub pipe: u64,
    /// `F_GETPIPE_SZ`.
    pub capacity: u64,
    /// Whether this descriptor reads (else it writes).
    pub read_end: bool,
    /// Whether this record carries the pipe's content.
    pub holds_data: bool,
    /// The bytes written and not yet read, read without consuming them (`tee`).
    pub data: Vec<u8>,
    /// In packet mode (`O_DIRECT`): the size of each packet in `data`; else empty.
    pub packets: Vec<u32>,
}

/// What an inherited descriptor was ([`FileKind::Inherited`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InheritedKind {
    Pipe,
    Socket,
    /// A character device other than the stateless ones (a terminal).
    Device,
    /// Anything else (an eventfd, an epoll instance…): replaced by a stand-in.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub fd: i32,
    pub kind: FileKind,
    pub path: String,
    /// `open` flags as seen in `/proc/PID/fdinfo` (without `O_CREAT|O_TRUNC|O_EXCL`).
    pub flags: i32,
    pub offset: i64,
    pub cloexec: bool,
}

/// A signal disposition in the kernel's `struct sigaction` layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: i32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// The `mm_struct` fields restored with `prctl(PR_SET_MM, PR_SET_MM_MAP)`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MmLayout {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub auxv: Vec<u64>,
}

/// Where `[vvar]`, `[vvar_vclock]` and `[vdso]` were (one contiguous block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdsoInfo {
    pub block_start: u64,
    pub block_end: u64,
    /// Start of `[vdso]` inside the block; with `block_start`, the layout to reproduce.
    pub vdso_start: u64,
    pub vdso_len: u64,
    /// xxh3-64 of the vdso text: restart refuses a kernel whose vdso differs.
    pub vdso_hash: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHeader {
    pub generation: u64,
    pub rank: u32,
    pub world_size: u32,
    pub hostname: String,
    pub pid: i32,
    pub program: String,
    pub created_unix_ns: u64,
    pub cwd: String,
    pub umask: u32,
    pub regions: Vec<Region>,
    pub threads: Vec<ThreadState>,
    pub files: Vec<FileState>,
    pub signals: Vec<SigAction>,
    pub mm: MmLayout,
    pub vdso: Option<VdsoInfo>,
    /// Address of the runtime's restart mailbox (`upper-half`): the restorer writes the
    /// restart parameters there before resuming the threads.
    pub restart_mailbox: u64,
    /// Set when the process is part of an MPI job: it ran MPI through a lower half (split
    /// process), or an MPI launcher started it (also before `MPI_Init`: `lower_regions` is
    /// then empty). `mana_restart` hands such a process the restart launcher's PMI
    /// connection and environment.
    #[serde(default)]
    pub mpi: Option<MpiImage>,
    /// Where the runtime keeps, in the saved memory, the [`ImageHeader::state_digest`] of
    /// this header (a u64): the copy the validator compares the header with.
    pub state_digest_at: u64,
    /// Children that had ended and were not yet waited for (zombies): a restart makes
    /// each again, ended the same way, so that the program's `waitpid` finds it.
    #[serde(default)]
    pub zombies: Vec<Zombie>,
}

/// A child process that had ended, not yet waited for ([`ImageHeader::zombies`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zombie {
    pub pid: i32,
    /// Its wait status (`WIFEXITED`/`WIFSIGNALED` encoding).
    pub status: i32,
}

impl ImageHeader {
    /// xxh3-64 of every field but the regions (which their own checksums cover) and
    /// [`ImageHeader::state_digest_at`]. The writer stores it in memory before saving it.
    pub fn state_digest(&self) -> u64 {
        // Every field named: a field added later must be placed on one side or the other.
        let ImageHeader {
            generation,
            rank,
            world_size,
            hostname,
            pid,
            program,
            created_unix_ns,
            cwd,
            umask,
            regions: _,
            threads,
            files,
            signals,
            mm,
            vdso,
            restart_mailbox,
            mpi,
            state_digest_at: _,
            zombies,
        } = self;
        let first = (generation, rank, world_size, hostname, pid, program);
        let second = (created_unix_ns, cwd, umask, threads, files, signals);
        // Without zombies the digest is the one earlier images were written with.
        let bytes = if zombies.is_empty() {
            rmp_serde::to_vec(&(first, second, (mm, vdso, restart_mailbox, mpi)))
        } else {
            rmp_serde::to_vec(&(first, second, (mm, vdso, restart_mailbox, mpi, zombies)))
        }
        .expect("an image header is always serializable");
        checksum(&bytes)
    }
}

/// What an MPI process's image says about its lower half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpiImage {
    /// The lower half's ranges at checkpoint time: never saved (tests check that no region
    /// of the image overlaps them); a restart loads a fresh lower half.
    pub lower_regions: Vec<[u64; 2]>,
    /// Messages drained from the network into the upper half at this checkpoint.
    pub drained_messages: u32,
}

impl ImageHeader {
    pub fn stored_bytes(&self) -> u64 {
        self.regions.iter().map(Region::stored_bytes).sum()
    }
    pub fn mapped_bytes(&self) -> u64 {
        self.regions.iter().map(Region::len).sum()
    }
}

pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Streaming checksum used for region data.
pub type RegionHasher = xxhash_rust::xxh3::Xxh3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    pub version: u32,
    pub machine: u32,
    pub header_offset: u64,
    pub header_len: u64,
    pub header_checksum: u64,
}

impl Preamble {
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.machine.to_le_bytes());
        b[16..24].copy_from_slice(&self.header_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.header_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.header_checksum.to_le_bytes());
        let c = checksum(&b[0..40]);
        b[40..48].copy_from_slice(&c.to_le_bytes());
        b
    }

    pub fn decode(path: &Path, b: &[u8]) -> Result<Preamble, ImageError> {
        if b.len() < PREAMBLE_LEN {
            return Err(ImageError::Truncated {
                path: path.into(),
                what: format!(
                    "{} bytes, shorter than the {PREAMBLE_LEN}-byte preamble",
                    b.len()
                ),
            });
        }
        if b[0..8] != MAGIC {
            return Err(ImageError::BadMagic { path: path.into() });
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        if checksum(&b[0..40]) != u64_at(40) {
            return Err(ImageError::PreambleChecksum { path: path.into() });
        }
        let p = Preamble {
            version: u32_at(8),
            machine: u32_at(12),
            header_offset: u64_at(16),
            header_len: u64_at(24),
            header_checksum: u64_at(32),
        };
        if p.version != FORMAT_VERSION {
            return Err(ImageError::Version {
                path: path.into(),
                found: p.version,
                expected: FORMAT_VERSION,
            });
        }
        if p.machine != EM_X86_64 {
            return Err(ImageError::Arch {
                path: path.into(),
                found: p.machine,
                expected: EM_X86_64,
            });
        }
        Ok(p)
    }
}

pub fn encode_header(h: &ImageHeader) -> Vec<u8> {
    rmp_serde::to_vec_named(h).expect("image header is always serializable")
}

/// An opened image whose preamble and header have been verified. Region data is checked
/// as it is read ([`ImageReader::read_region`]) or all at once ([`ImageReader::verify_data`]).
pub struct ImageReader {
    pub path: PathBuf,
    pub file: File,
    pub header: ImageHeader,
    pub file_len: u64,
    /// xxh3-64 of the header's bytes (verified): what a MANIFEST entry records.
    pub header_checksum: u64,
}

impl ImageReader {
    pub fn open(path: &Path) -> Result<ImageReader, ImageError> {
        let file = File::open(path).map_err(|e| ImageError::io(path, e))?;
        Self::from_file(path, file, None)
    }

    /// [`ImageReader::open`] of an image a MANIFEST lists with header checksum `recorded`:
    /// an image whose header is not that one is refused before its header is read.
    pub fn open_listed(path: &Path, recorded: u64) -> Result<ImageReader, ImageError> {
        let file = File::open(path).map_err(|e| ImageError::io(path, e))?;
        Self::from_file(path, file, Some(recorded))
    }

    /// [`ImageReader::open`] of an already opened image; `path` names it in errors;
    /// `recorded` as for [`ImageReader::open_listed`].
    pub fn from_file(
        path: &Path,
        file: File,
        recorded: Option<u64>,
    ) -> Result<ImageReader, ImageError> {
        let file_len = file.metadata().map_err(|e| ImageError::io(path, e))?.len();
        let mut pre = [0u8; PREAMBLE_LEN];
        let n = read_full_at(&file, &mut pre, 0).map_err(|e| ImageError::io(path, e))?;
        let p = Preamble::decode(path, &pre[..n])?;
        if recorded.is_some_and(|c| c != p.header_checksum) {
            return Err(ImageError::NotListed { path: path.into() });
        }
        let header_end = p.header_offset.checked_add(p.header_len);
        if header_end.is_none_or(|e| e > file_len) {
            return Err(ImageError::Truncated {
                path: path.into(),
                what: format!(
                    "file is {file_len} bytes, header ends at {}",
                    p.header_offset.saturating_add(p.header_len)
                ),
            });
        }
        if p.header_len > MAX_HEADER_LEN {
            return Err(ImageError::Invalid {
                path: path.into(),
                what: format!(
                    "header of {} bytes (at most {MAX_HEADER_LEN})",
                    p.header_len
                ),
            });
        }
        let mut hb = vec![0u8; p.header_len as usize];
        read_full_at(&file, &mut hb, p.header_offset).map_err(|e| ImageError::io(path, e))?;
        if checksum(&hb) != p.header_checksum {
            return Err(ImageError::HeaderChecksum { path: path.into() });
        }
        let header: ImageHeader = rmp_serde::from_slice(&hb).map_err(|e| ImageError::Decode {
            path: path.into(),
            msg: e.to_string(),
        })?;
        crate::validate::validate(&header, p.header_offset).map_err(|what| {
            ImageError::Invalid {
                path: path.into(),
                what,
            }
        })?;
        let reader = ImageReader {
            path: path.into(),
            file,
            header,
            file_len,
            header_checksum: p.header_checksum,
        };
        crate::validate::check_memory_copies(&reader.header, |addr, buf| {
            reader.read_memory(addr, buf)
        })
        .map_err(|what| ImageError::Invalid {
            path: path.into(),
            what,
        })?;
        Ok(reader)
    }

    /// Reads the saved bytes at address `addr` of the checkpointed process into `buf`
    /// (not checksum-verified; [`ImageReader::read_region`] verifies). `Ok(false)` when a
    /// byte of the range is not stored in the image (validated headers only).
    pub fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<bool, String> {
        let file = &self.file;
        read_stored(&self.header, addr, buf, |off, b| {
            read_full_at(file, b, off)
                .map_err(|e| e.to_string())
                .map(|n| n == b.len())
        })
    }

    /// Reads every stored extent of region `index` into `dest` (`dest[0]` is the region's
    /// first byte; pages not stored are left as they are) and verifies the checksum.
    pub fn read_region(&self, index: usize, dest: &mut [u8]) -> Result<(), ImageError> {
        let r = &self.header.regions[index];
        let mut h = r.hasher();
        for e in &r.extents {
            let off = (e.first_page * PAGE_SIZE) as usize;
            let len = (e.pages * PAGE_SIZE) as usize;
            let buf = &mut dest[off..off + len];
            let n = read_full_at(&self.file, buf, e.file_offset)
                .map_err(|err| ImageError::io(&self.path, err))?;
            if n < len {
                return Err(ImageError::Truncated {
                    path: self.path.clone(),
                    what: format!("data of region {:#x}-{:#x} ends early", r.start, r.end),
                });
            }
            h.update(buf);
        }
        if h.digest() != r.checksum {
            return Err(ImageError::RegionChecksum {
                path: self.path.clone(),
                index,
                start: r.start,
                end: r.end,
                name: r.name.clone(),
            });
        }
        Ok(())
    }

    /// Reads all region data through a bounded buffer and verifies every checksum.
    pub fn verify_data(&self) -> Result<(), ImageError> {
        let mut buf = vec![0u8; 8 << 20];
        for (index, r) in self.header.regions.iter().enumerate() {
            let mut h = r.hasher();
            for e in &r.extents {
                let mut left = e.pages * PAGE_SIZE;
                let mut off = e.file_offset;
                while left > 0 {
                    let chunk = left.min(buf.len() as u64) as usize;
                    let n = read_full_at(&self.file, &mut buf[..chunk], off)
                        .map_err(|err| ImageError::io(&self.path, err))?;
                    if n < chunk {
                        return Err(ImageError::Truncated {
                            path: self.path.clone(),
                            what: format!("data of region {:#x}-{:#x} ends early", r.start, r.end),
                        });
                    }
                    h.update(&buf[..chunk]);
                    left -= chunk as u64;
                    off += chunk as u64;
                }
            }
            if h.digest() != r.checksum {
                return Err(ImageError::RegionChecksum {
                    path: self.path.clone(),
                    index,
                    start: r.start,
                    end: r.end,
                    name: r.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Reads the stored bytes at address `addr` of a validated header's memory into `buf`
/// through `read_at(file_offset, dest) -> complete?`; `Ok(false)` when a byte of the range
/// is not stored (or the file ends early).
pub fn read_stored(
    h: &ImageHeader,
    addr: u64,
    buf: &mut [u8],
    mut read_at: impl FnMut(u64, &mut [u8]) -> Result<bool, String>,
) -> Result<bool, String> {
    let mut done = 0usize;
    while done < buf.len() {
        let a = addr.checked_add(done as u64).ok_or("address overflows")?;
        let Some(r) = h.regions.iter().find(|r| r.start <= a && a < r.end) else {
            return Ok(false);
        };
        let page = (a - r.start) / PAGE_SIZE;
        let Some(e) = r
            .extents
            .iter()
            .find(|e| e.first_page <= page && page - e.first_page < e.pages)
        else {
            return Ok(false);
        };
        // Validated: the extent lies in the region and the data area, so no overflow.
        let ext_start = r.start + e.first_page * PAGE_SIZE;
        let ext_end = ext_start + e.pages * PAGE_SIZE;
        let n = ((ext_end - a) as usize).min(buf.len() - done);
        if !read_at(e.file_offset + (a - ext_start), &mut buf[done..done + n])? {
            return Ok(false);
        }
        done += n;
    }
    Ok(true)
}

/// `read_at` until `buf` is full or end of file; returns the bytes read.
pub fn read_full_at(f: &File, buf: &mut [u8], mut off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Restart parameters the restarter writes into the restored runtime (at
/// [`ImageHeader::restart_mailbox`]) before resuming its threads. Plain `repr(C)` data:
/// this is an ABI between `mana_restart` and `libmana`, not part of the file format.
#[repr(C)]
pub struct RestartMailbox {
    /// [`MAILBOX_MAGIC`] once written by the restarter.
    pub magic: u64,
    /// The restarter's final-stage area, which the runtime unmaps once every thread left it.
    pub restorer_start: u64,
    pub restorer_len: u64,
    /// Generation the process was restored from.
    pub generation: u64,
    /// NUL-terminated status file of the coordinator to reconnect to.
    pub status_file: [u8; 4096],
    /// NUL-terminated checkpoint directory for the next checkpoints.
    pub ckpt_dir: [u8; 4096],
    /// The restart's environment (NUL-separated `NAME=VALUE` strings) in a mapping of the
    /// restarter's that survives into the restored process (which unmaps it): an MPI
    /// process starts its new lower half with it (PMI, UCX transport, Slurm placement).
    pub env_start: u64,
    pub env_len: u64,
    /// The pid the node and the launcher see for this process (the restarter's outer
    /// process when the ids were restored in a pid namespace); 0: its own.
    pub visible_pid: i64,
    /// Non-zero: the process was restored as the first process of a pid namespace of its
    /// own (its parent there is the namespace's init).
    pub ns_root: u64,
}

pub const MAILBOX_MAGIC: u64 = 0x4d41_4e41_5245_5354; // "MANAREST"

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_round_trip_and_corruption() {
        let p = Preamble {
            version: FORMAT_VERSION,
            machine: EM_X86_64,
            header_offset: 8192,
            header_len: 100,
            header_checksum: 42,
        };
        let b = p.encode();
        let path = Path::new("x");
        assert_eq!(Preamble::decode(path, &b).unwrap(), p);
        let mut bad = b;
        bad[20] ^= 1;
        assert!(matches!(
            Preamble::decode(path, &bad),
            Err(ImageError::PreambleChecksum { .. })
        ));
        let mut bad = b;
        bad[0] = b'X';
        assert!(matches!(
            Preamble::decode(path, &bad),
            Err(ImageError::BadMagic { .. })
        ));
        let v2 = Preamble {
            version: FORMAT_VERSION + 1,
            ..p
        }
        .encode();
        assert!(matches!(
            Preamble::decode(path, &v2),
            Err(ImageError::Version { found, .. }) if found == FORMAT_VERSION + 1
        ));
        let arm = Preamble { machine: 183, ..p }.encode();
        assert!(matches!(
            Preamble::decode(path, &arm),
            Err(ImageError::Arch { found: 183, .. })
        ));
        assert!(matches!(
            Preamble::decode(path, &b[..10]),
            Err(ImageError::Truncated { .. })
        ));
    }
}
