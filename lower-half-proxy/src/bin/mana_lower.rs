//! The lower-half proxy program.
//!
//! `#![no_main]` with a C `main` that never returns: Rust's `fn main` runtime would install
//! process-wide signal handlers and ignore SIGPIPE from lower-half code (DESIGN.md §3).
//! It exports the `malloc` family so that its whole world allocates with mmap only,
//! never with `brk`, which belongs to the application's libc, and `mmap`, `munmap`,
//! `mremap`, `shmat`, `shmdt` so that those mappings land in one reserved arena
//! (DESIGN.md rule 2).

#![no_main]

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mana_lower::abi::{LowerTable, CALLBACK_ENV, PREPARED_TCBS, TABLE_MAGIC};

struct Heap {
    lock: AtomicBool,
    inner: core::cell::UnsafeCell<dlmalloc::Dlmalloc>,
}
// SAFETY: `inner` is only used while `lock` is held.
unsafe impl Sync for Heap {}

static HEAP: Heap = Heap {
    lock: AtomicBool::new(false),
    inner: core::cell::UnsafeCell::new(dlmalloc::Dlmalloc::new()),
};

fn with_heap<R>(f: impl FnOnce(&mut dlmalloc::Dlmalloc) -> R) -> R {
    while HEAP
        .lock
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    // SAFETY: the lock is held.
    let r = f(unsafe { &mut *HEAP.inner.get() });
    HEAP.lock.store(false, Ordering::Release);
    r
}

/// A per-thread cache of small freed blocks in front of the locked dlmalloc heap: MPICH
/// and UCX allocate and free small objects per message (a derived datatype per BLACS
/// message), where glibc's per-thread cache serves a native run; measured on ScaLAPACK's
/// xdlu, the locked heap was 2 % of all CPU samples. Classes of 16 bytes up to 512, at most
/// [`CACHE_DEPTH`] blocks each; a block's class is read from its dlmalloc chunk header
/// (usable size, as `malloc_usable_size`), so any block may come back, from any thread.
/// Blocks cached by a thread that exits stay allocated (the lower world's threads are few
/// and live as long as MPI).
const CACHE_CLASSES: usize = 32;
const CACHE_GRAIN: usize = 16;
const CACHE_DEPTH: usize = 32;

struct Cache {
    n: [u8; CACHE_CLASSES],
    blocks: [[*mut c_void; CACHE_DEPTH]; CACHE_CLASSES],
}

thread_local! {
    static CACHE: core::cell::UnsafeCell<Cache> = const {
        core::cell::UnsafeCell::new(Cache {
            n: [0; CACHE_CLASSES],
            blocks: [[core::ptr::null_mut(); CACHE_DEPTH]; CACHE_CLASSES],
        })
    };
}

/// The class serving requests of `size` bytes (blocks of `(class + 1) * CACHE_GRAIN`).
fn class_of_request(size: usize) -> Option<usize> {
    let c = size.max(1).div_ceil(CACHE_GRAIN) - 1;
    (c < CACHE_CLASSES).then_some(c)
}

/// The class a block of `usable` bytes can serve (the largest not above it).
fn class_of_block(usable: usize) -> Option<usize> {
    let c = (usable / CACHE_GRAIN).checked_sub(1)?;
    (c < CACHE_CLASSES).then_some(c)
}

/// Runs `f` on this thread's cache.
fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    // SAFETY: the thread's own cache; `f` neither allocates nor reenters the allocator.
    CACHE.with(|cache| f(unsafe { &mut *cache.get() }))
}

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    if let Some(c) = class_of_request(size) {
        let hit = with_cache(|cache| {
            let n = cache.n[c] as usize;
            (n > 0).then(|| {
                cache.n[c] -= 1;
                cache.blocks[c][n - 1]
            })
        });
        if let Some(p) = hit {
            return p;
        }
        // A full class-sized block, so that it serves any request of its class later.
        // SAFETY: dlmalloc's C-shaped API.
        return with_heap(|h| unsafe { h.c_malloc((c + 1) * CACHE_GRAIN) }).cast();
    }
    // SAFETY: dlmalloc's C-shaped API; any size is accepted.
    with_heap(|h| unsafe { h.c_malloc(size) }).cast()
}

#[no_mangle]
pub extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    if let Some(c) = class_of_block(malloc_usable_size(p)) {
        let cached = with_cache(|cache| {
            let n = cache.n[c] as usize;
            (n < CACHE_DEPTH).then(|| {
                cache.blocks[c][n] = p;
                cache.n[c] += 1;
            })
        });
        if cached.is_some() {
            return;
        }
    }
    // SAFETY: `p` came from this allocator (the whole lower world binds to it).
    with_heap(|h| unsafe { h.c_free(p.cast()) })
}

#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        return core::ptr::null_mut();
    };
    let p = malloc(total);
    if !p.is_null() {
        // SAFETY: `p` is valid for `total` bytes.
        unsafe { core::ptr::write_bytes(p.cast::<u8>(), 0, total) };
    }
    p
}

#[no_mangle]
pub extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: `p` came from this allocator or is null.
    with_heap(|h| unsafe { h.c_realloc(p.cast(), size) }).cast()
}

#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return core::ptr::null_mut();
    }
    // SAFETY: `align` is a power of two.
    with_heap(|h| unsafe { h.c_memalign(align, size) }).cast()
}

#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    memalign(4096, size)
}

#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    memalign(4096, size.div_ceil(4096) * 4096)
}

#[no_mangle]
/// # Safety
/// `out` must be valid for a pointer write (the C contract).
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    let p = memalign(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a valid out-pointer.
    unsafe { *out = p };
    0
}

#[no_mangle]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // dlmalloc keeps the chunk size (low 3 bits: flags) in the word before the payload.
    // SAFETY: `p` is a live allocation of this allocator.
    let head = unsafe { *(p as *const usize).sub(1) };
    (head & !7).saturating_sub(2 * core::mem::size_of::<usize>())
}

unsafe extern "C" fn lookup(name: *const c_char) -> *const c_void {
    // SAFETY: `name` is a NUL-terminated symbol name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name) as *const c_void }
}

thread_local! {
    static CALLS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Uses this world's allocator, formatting, TLS and errno; the result depends on `x` and
/// on how often it was called on this thread.
unsafe extern "C" fn probe(x: u64) -> u64 {
    let n = CALLS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let v: Vec<String> = (0..64).map(|i| format!("{x}-{i}")).collect();
    let total: u64 = v.iter().map(|s| s.len() as u64).sum();
    // SAFETY: errno of this (lower) thread.
    unsafe { *libc::__errno_location() = 7 };
    total * 1000 + n
}

// ---- Mappings of the lower world (DESIGN.md rule 2 and 3) ----
//
// The proxy exports `mmap`, `mmap64`, `munmap`, `mremap`, `shmat` and `shmdt`, so every
// library of the lower world maps through them. They place mappings in the arena (below)
// and record the few that land outside it (fixed addresses, a full arena), as does the
// start routine of every lower thread for its stack. The arena, these records, the link
// map's segments and the lower main stack are the lower-half region set. (Mappings made
// by raw syscalls or inside libc itself are not seen: to the checkpointer they are
// unknown, hence saved.)

const MAX_RANGES: usize = 8192;
struct Ranges {
    lock: AtomicBool,
    n: core::cell::UnsafeCell<usize>,
    r: core::cell::UnsafeCell<[[u64; 2]; MAX_RANGES]>,
}
// SAFETY: all access goes through `Ranges::with`, which holds `lock`.
unsafe impl Sync for Ranges {}
static RANGES: Ranges = Ranges::new();

impl Ranges {
    const fn new() -> Ranges {
        Ranges {
            lock: AtomicBool::new(false),
            n: core::cell::UnsafeCell::new(0),
            r: core::cell::UnsafeCell::new([[0; 2]; MAX_RANGES]),
        }
    }

    /// Runs `f` on the table (its length and entries) holding the spin lock.
    fn with<R>(&self, f: impl FnOnce(&mut usize, &mut [[u64; 2]; MAX_RANGES]) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held.
        let r = unsafe { f(&mut *self.n.get(), &mut *self.r.get()) };
        self.lock.store(false, Ordering::Release);
        r
    }
}

fn with_ranges<R>(f: impl FnOnce(&mut usize, &mut [[u64; 2]; MAX_RANGES]) -> R) -> R {
    RANGES.with(f)
}

/// Removes `[s, e)` from the recorded ranges (splitting where needed).
fn forget(s: u64, e: u64) {
    with_ranges(|n, r| {
        let mut i = 0;
        while i < *n {
            let [a, b] = r[i];
            if b <= s || a >= e {
                i += 1;
                continue;
            }
            if a < s && b > e && *n < MAX_RANGES {
                r[i] = [a, s];
                r[*n] = [e, b];
                *n += 1;
                i += 1;
            } else if a < s {
                r[i] = [a, s];
                i += 1;
            } else if b > e {
                r[i] = [e, b];
                i += 1;
            } else {
                *n -= 1;
                r[i] = r[*n];
            }
        }
    })
}

fn remember(s: u64, e: u64) {
    forget(s, e);
    with_ranges(|n, r| {
        if *n < MAX_RANGES {
            r[*n] = [s, e];
            *n += 1;
        }
    })
}

fn page_end(addr: u64, len: u64) -> u64 {
    (addr + len + 4095) & !4095
}

// ---- The arena (DESIGN.md rule 2) ----
//
// One large PROT_NONE reservation, made on the first mapping request of this world (a
// library constructor's, before `main`). Every mapping the world asks for without a fixed
// address is placed in it; an unmapped piece becomes PROT_NONE again and goes back to the
// free list (lower_half::arena). When the arena is full (or cannot be reserved), mappings
// go wherever the kernel puts them and are recorded individually (with a warning).

/// Size of the arena's reservation (address space only: PROT_NONE, MAP_NORESERVE).
const ARENA_BYTES: u64 = 32 << 30;
const PAGE: u64 = 4096;

struct Arena {
    lock: AtomicBool,
    /// `[base, end)`; base 0 = not reserved yet, u64::MAX = could not be reserved.
    bounds: core::cell::UnsafeCell<[u64; 2]>,
    free: core::cell::UnsafeCell<mana_lower::arena::FreeList<4096>>,
    /// Mappings placed outside the arena because it was full (`arena_overflows`).
    overflows: AtomicU64,
}
// SAFETY: `bounds` and `free` are only used while `lock` is held.
unsafe impl Sync for Arena {}
static ARENA: Arena = Arena {
    lock: AtomicBool::new(false),
    bounds: core::cell::UnsafeCell::new([0, 0]),
    free: core::cell::UnsafeCell::new(mana_lower::arena::FreeList::new()),
    overflows: AtomicU64::new(0),
};

fn raw_mmap(addr: u64, len: u64, prot: c_int, flags: c_int, fd: c_int, off: i64) -> i64 {
    // SAFETY: the raw system call; callers own the range they name (arena pieces) or pass
    // the application-of-this-world's own arguments.
    unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) }
}

/// Makes `[start, end)` of the arena PROT_NONE again (it was mapped, or is a hole).
fn reserve(start: u64, end: u64) -> bool {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED;
    raw_mmap(start, end - start, libc::PROT_NONE, flags, -1, 0) == start as i64
}

/// Runs `f` on the arena's bounds and free list, reserving the arena first if needed.
fn with_arena<R>(f: impl FnOnce([u64; 2], &mut mana_lower::arena::FreeList<4096>) -> R) -> R {
    while ARENA
        .lock
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    // SAFETY: the lock is held.
    let (bounds, free) = unsafe { (&mut *ARENA.bounds.get(), &mut *ARENA.free.get()) };
    if bounds[0] == 0 {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let r = raw_mmap(0, ARENA_BYTES, libc::PROT_NONE, flags, -1, 0);
        *bounds = if r == -1 {
            [u64::MAX, u64::MAX]
        } else {
            [r as u64, r as u64 + ARENA_BYTES]
        };
        free.reset(bounds[0], bounds[1]);
    }
    let r = f(*bounds, free);
    ARENA.lock.store(false, Ordering::Release);
    r
}

fn in_arena(start: u64, end: u64) -> bool {
    with_arena(|[a, b], _| a <= start && end <= b)
}

fn arena_take(len: u64) -> Option<u64> {
    let slot = with_arena(|_, free| free.take(len));
    if slot.is_none() {
        ARENA.overflows.fetch_add(1, Ordering::Relaxed);
    }
    slot
}

/// Mappings placed outside the arena so far: the upper half logs them (the program's
/// stderr is not ours to write to).
unsafe extern "C" fn arena_overflows() -> u64 {
    ARENA.overflows.load(Ordering::Relaxed)
}

/// Gives `[start, end)` of the arena back: PROT_NONE, then free.
fn arena_give(start: u64, end: u64) {
    if reserve(start, end) {
        with_arena(|_, free| free.give(start, end));
    }
}

fn page_up(len: u64) -> u64 {
    (len + PAGE - 1) & !(PAGE - 1)
}

/// # Safety
/// The `mmap(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> *mut c_void {
    let len_p = page_up(len as u64);
    let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
    if !fixed && len > 0 {
        if let Some(slot) = arena_take(len_p) {
            let r = raw_mmap(slot, len as u64, prot, flags | libc::MAP_FIXED, fd, off);
            if r == -1 {
                arena_give(slot, slot + len_p);
                return libc::MAP_FAILED;
            }
            return r as *mut c_void;
        }
    }
    let r = raw_mmap(addr as u64, len as u64, prot, flags, fd, off);
    if r == -1 {
        return libc::MAP_FAILED;
    }
    let (s, e) = (r as u64, r as u64 + len_p);
    if in_arena(s, e) {
        with_arena(|_, free| free.claim(s, e));
    } else {
        remember(s, e);
    }
    r as *mut c_void
}

/// # Safety
/// The `mmap(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

/// # Safety
/// The `munmap(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    let (s, e) = (addr as u64, addr as u64 + page_up(len as u64));
    if s % PAGE == 0 && len > 0 && in_arena(s, e) {
        arena_give(s, e);
        return 0;
    }
    // SAFETY: the raw system call with the caller's arguments.
    let r = unsafe { libc::syscall(libc::SYS_munmap, addr, len) };
    if r == 0 {
        forget(s, e);
    }
    r as c_int
}

/// `mremap(old, old_size, new_size, flags, ... new_address)`: on x86-64 the optional fifth
/// argument arrives in the same register whether or not the caller saw a prototype.
/// A mapping in the arena stays in it: it shrinks in place, or moves to a new piece.
///
/// # Safety
/// The `mremap(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_size: usize,
    new_size: usize,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    let remap = |to: u64, flags: c_int| -> i64 {
        // SAFETY: the raw system call; `to` is a piece of the arena we own, or the caller's.
        unsafe { libc::syscall(libc::SYS_mremap, old, old_size, new_size, flags, to) }
    };
    let (o, old_p, new_p) = (
        old as u64,
        page_up(old_size as u64),
        page_up(new_size as u64),
    );
    let arena_old = o % PAGE == 0 && old_size > 0 && in_arena(o, o + old_p);
    if arena_old && flags & libc::MREMAP_FIXED == 0 && new_size > 0 {
        // No piece of the arena may be unmapped even for a moment: the upper half maps
        // memory at addresses the kernel chooses, concurrently, and a mapping placed in
        // such a hole would then be overwritten by the arena's PROT_NONE (a checkpoint
        // thread's heap segment died that way while MPI_Finalize detached shared memory).
        // A shrink therefore maps PROT_NONE over the tail in one step, and a mapping
        // never moves (the kernel's move leaves its old range unmapped until it is
        // reserved again): growing fails with ENOMEM, after which our only caller, the
        // allocator, copies (neither MPICH nor UCX calls mremap with memory hooks off).
        if new_p < old_p {
            if !reserve(o + new_p, o + old_p) {
                return libc::MAP_FAILED;
            }
            with_arena(|_, free| free.give(o + new_p, o + old_p));
        }
        if new_p <= old_p {
            return old;
        }
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
        return libc::MAP_FAILED;
    }
    let r = remap(new_addr as u64, flags);
    if r == -1 {
        return libc::MAP_FAILED;
    }
    if arena_old {
        arena_give(o, o + old_p);
    } else {
        forget(o, o + old_p);
    }
    let (s, e) = (r as u64, r as u64 + new_p);
    if in_arena(s, e) {
        with_arena(|_, free| free.claim(s, e));
    } else {
        remember(s, e);
    }
    r as *mut c_void
}

// System V shared memory (UCX's `sysv` transport): attached into the arena as well.
const MAX_SHM: usize = 1024;
static SHM: Ranges = Ranges::new();

fn with_shm<R>(f: impl FnOnce(&mut usize, &mut [[u64; 2]; MAX_RANGES]) -> R) -> R {
    SHM.with(f)
}

/// # Safety
/// The `shmat(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn shmat(id: c_int, addr: *const c_void, flags: c_int) -> *mut c_void {
    let attach = |at: u64, flags: c_int| -> i64 {
        // SAFETY: the raw system call; `at` is a piece of the arena we own, or the caller's.
        unsafe { libc::syscall(libc::SYS_shmat, id, at, flags) }
    };
    let mut size = 0u64;
    if addr.is_null() {
        // SAFETY: IPC_STAT fills a shmid_ds.
        let mut ds: libc::shmid_ds = unsafe { core::mem::zeroed() };
        // SAFETY: the raw system call with a valid out-pointer.
        if unsafe { libc::syscall(libc::SYS_shmctl, id, libc::IPC_STAT, &mut ds) } == 0 {
            size = page_up(ds.shm_segsz as u64);
        }
    }
    let mut r = -1;
    if size > 0 {
        if let Some(slot) = arena_take(size) {
            r = attach(slot, flags | libc::SHM_REMAP);
            if r == -1 {
                arena_give(slot, slot + size);
                return -1isize as *mut c_void;
            }
        }
    }
    if r == -1 {
        r = attach(addr as u64, flags);
        if r == -1 {
            return -1isize as *mut c_void;
        }
        if size == 0 {
            // SAFETY: IPC_STAT fills a shmid_ds.
            let mut ds: libc::shmid_ds = unsafe { core::mem::zeroed() };
            // SAFETY: the raw system call with a valid out-pointer.
            unsafe { libc::syscall(libc::SYS_shmctl, id, libc::IPC_STAT, &mut ds) };
            size = page_up(ds.shm_segsz as u64);
        }
        let (s, e) = (r as u64, r as u64 + size);
        if in_arena(s, e) {
            with_arena(|_, free| free.claim(s, e));
        } else {
            remember(s, e);
        }
    }
    with_shm(|n, t| {
        if *n < MAX_SHM {
            t[*n] = [r as u64, size];
            *n += 1;
        }
    });
    r as *mut c_void
}

/// # Safety
/// The `shmdt(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn shmdt(addr: *const c_void) -> c_int {
    let a = addr as u64;
    let size = with_shm(|n, t| {
        let i = (0..*n).find(|&i| t[i][0] == a)?;
        let size = t[i][1];
        *n -= 1;
        t[i] = t[*n];
        Some(size)
    });
    if let Some(size) = size.filter(|&n| n > 0 && in_arena(a, a + n)) {
        // Mapping the arena's PROT_NONE over the attachment detaches it (the kernel
        // closes a System V mapping that another replaces, as shmdt does) without the
        // moment in which the range is unmapped and an upper-half mmap could land there
        // (see mremap). Should that mapping fail, detach the ordinary way.
        if reserve(a, a + size) {
            with_arena(|_, free| free.give(a, a + size));
            return 0;
        }
    }
    // SAFETY: the raw system call with the caller's argument.
    let r = unsafe { libc::syscall(libc::SYS_shmdt, addr) };
    if r == 0 {
        if let Some(size) = size {
            if in_arena(a, a + size) {
                arena_give(a, a + size);
            } else {
                forget(a, a + size);
            }
        }
    }
    r as c_int
}

// ---- Threads of the lower world ----
//
// Every thread the lower world creates (UCX's progress thread, MPICH's, ours) blocks all
// signals before it runs: a process-directed signal must be delivered to an application
// thread, never run an application handler on a lower thread (DESIGN.md §3).

type PthreadCreate = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    extern "C" fn(*mut c_void) -> *mut c_void,
    *mut c_void,
) -> c_int;

struct Start {
    f: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
}

/// A running lower thread: its id (the checkpointer must not try to stop it) and its
/// stack with the guard page (recorded as lower half while the thread runs: libc maps
/// thread stacks internally, past our `mmap`). Both are forgotten when it exits (libc may
/// then cache or unmap the stack without telling us; an unrecorded mapping is merely
/// saved, DESIGN.md rule 3).
struct RecordedThread {
    stack: [u64; 2],
    tid: i32,
}

impl Drop for RecordedThread {
    fn drop(&mut self) {
        forget(self.stack[0], self.stack[1]);
        for t in &TIDS {
            if t.load(Ordering::Relaxed) == self.tid {
                t.store(0, Ordering::Release);
            }
        }
    }
}

const MAX_TIDS: usize = 4096;
static TIDS: [core::sync::atomic::AtomicI32; MAX_TIDS] =
    [const { core::sync::atomic::AtomicI32::new(0) }; MAX_TIDS];

thread_local! {
    static THIS_THREAD: core::cell::RefCell<Option<RecordedThread>> = const { core::cell::RefCell::new(None) };
}

unsafe extern "C" fn tids(out: *mut i32, cap: usize) -> usize {
    let mut n = 0;
    for t in &TIDS {
        let tid = t.load(Ordering::Acquire);
        if tid != 0 {
            if n < cap {
                // SAFETY: the caller provides `cap` entries.
                unsafe { *out.add(n) = tid };
            }
            n += 1;
        }
    }
    n
}

fn record_this_thread() {
    // SAFETY: pthread_getattr_np initialises `attr` for the calling thread; the getters
    // only read it; it is destroyed before returning.
    let range = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let (mut addr, mut size, mut guard) = (core::ptr::null_mut(), 0usize, 0usize);
        libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_getguardsize(&attr, &mut guard);
        libc::pthread_attr_destroy(&mut attr);
        let start = (addr as u64).saturating_sub(guard as u64) & !4095;
        [start, page_end(addr as u64, size as u64)]
    };
    remember(range[0], range[1]);
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for t in &TIDS {
        if t.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            break;
        }
    }
    THIS_THREAD.with(|s| *s.borrow_mut() = Some(RecordedThread { stack: range, tid }));
}

extern "C" fn lower_thread_start(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the Box<Start> leaked by pthread_create below; taken back once.
    let start = unsafe { Box::from_raw(p as *mut Start) };
    // SAFETY: a valid, full signal set blocked for this thread.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, core::ptr::null_mut());
    }
    record_this_thread();
    (start.f)(start.arg)
}

/// # Safety
/// The `pthread_create(3)` contract.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    f: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: the next definition is the lower libc's pthread_create.
    let real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) };
    if real.is_null() {
        return libc::EAGAIN;
    }
    // SAFETY: libc's pthread_create has this signature.
    let real: PthreadCreate = unsafe { core::mem::transmute(real) };
    let start = Box::into_raw(Box::new(Start { f, arg }));
    // SAFETY: forwarded with our start routine; `start` is reclaimed by it or below.
    let r = unsafe { real(thread, attr, lower_thread_start, start as *mut c_void) };
    if r != 0 {
        // SAFETY: the thread was not created; nobody else owns `start`.
        drop(unsafe { Box::from_raw(start) });
    }
    r
}

unsafe extern "C" fn regions(out: *mut [u64; 2], cap: usize) -> usize {
    let mut v: Vec<[u64; 2]> = with_ranges(|n, r| r[..*n].to_vec());
    let arena = with_arena(|bounds, _| bounds);
    if arena[0] != u64::MAX {
        v.push(arena);
    }
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
        // SAFETY: called by dl_iterate_phdr with valid pointers.
        let (info, v) = unsafe { (&*info, &mut *(data as *mut Vec<[u64; 2]>)) };
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr has dlpi_phnum entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                let s = (info.dlpi_addr + ph.p_vaddr) & !4095;
                v.push([s, page_end(info.dlpi_addr + ph.p_vaddr, ph.p_memsz)]);
            }
        }
        0
    }
    // SAFETY: `each` matches dl_iterate_phdr's contract; `v` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut v as *mut Vec<[u64; 2]> as *mut c_void) };
    for (i, r) in v.iter().take(cap).enumerate() {
        // SAFETY: the caller provides `cap` entries.
        unsafe { *out.add(i) = *r };
    }
    v.len()
}

static mut TABLE: LowerTable = LowerTable {
    magic: TABLE_MAGIC,
    fs_base: 0,
    lookup,
    probe,
    regions,
    n_tcbs: 0,
    tcbs: [0; PREPARED_TCBS],
    new_tcb,
    tids,
    fds,
    arena_overflows,
};

// ---- Descriptors of the lower world ----
//
// The calls that create descriptors are interposed (the proxy is its world's executable,
// so its definitions come first) and the descriptors recorded, so that the checkpointer
// knows them as lower half: not saved, not an error. Descriptors libc opens internally
// (hwloc's short reads of /proc and /sys through fopen) are not seen; they are closed
// again before any checkpoint can happen (MPI calls are never inside one then).

const MAX_FDS: usize = 65536;
static FDS: [core::sync::atomic::AtomicU64; MAX_FDS / 64] =
    [const { core::sync::atomic::AtomicU64::new(0) }; MAX_FDS / 64];

fn mark_fd(fd: c_int) {
    if fd >= 0 && (fd as usize) < MAX_FDS {
        FDS[fd as usize / 64].fetch_or(1 << (fd % 64), Ordering::AcqRel);
    }
}

fn unmark_fd(fd: c_int) {
    if fd >= 0 && (fd as usize) < MAX_FDS {
        FDS[fd as usize / 64].fetch_and(!(1 << (fd % 64)), Ordering::AcqRel);
    }
}

unsafe extern "C" fn fds(out: *mut i32, cap: usize) -> usize {
    let mut n = 0;
    for (w, word) in FDS.iter().enumerate() {
        let mut bits = word.load(Ordering::Acquire);
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if n < cap {
                // SAFETY: the caller provides `cap` entries.
                unsafe { *out.add(n) = (w * 64 + b) as i32 };
            }
            n += 1;
        }
    }
    n
}

/// The next definition of `name` (the lower libc's), looked up once.
macro_rules! next_fn {
    ($name:literal, $ty:ty) => {{
        static F: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        let mut f = F.load(Ordering::Acquire);
        if f == 0 {
            // SAFETY: dlsym with a NUL-terminated name.
            f = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr().cast()) }
                as usize;
            F.store(f, Ordering::Release);
        }
        if f == 0 {
            None
        } else {
            // SAFETY: the libc function of that name has this signature.
            Some(unsafe { core::mem::transmute::<usize, $ty>(f) })
        }
    }};
}

/// Defines an interposed descriptor-creating function `$name($args) -> c_int` that
/// records the descriptor it returns.
macro_rules! fd_creator {
    ($name:ident, $lit:literal, ($($arg:ident: $t:ty),*)) => {
        /// # Safety
        /// The libc function's contract.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $t),*) -> c_int {
            let Some(f) = next_fn!($lit, unsafe extern "C" fn($($t),*) -> c_int) else {
                // SAFETY: this thread's errno.
                unsafe { *libc::__errno_location() = libc::ENOSYS };
                return -1;
            };
            // SAFETY: forwarded with the caller's arguments.
            let fd = unsafe { f($($arg),*) };
            mark_fd(fd);
            fd
        }
    };
}

fd_creator!(open, "open", (path: *const c_char, flags: c_int, mode: libc::c_uint));
fd_creator!(open64, "open64", (path: *const c_char, flags: c_int, mode: libc::c_uint));
fd_creator!(openat, "openat", (dir: c_int, path: *const c_char, flags: c_int, mode: libc::c_uint));
fd_creator!(openat64, "openat64", (dir: c_int, path: *const c_char, flags: c_int, mode: libc::c_uint));
fd_creator!(creat, "creat", (path: *const c_char, mode: libc::mode_t));
fd_creator!(shm_open, "shm_open", (name: *const c_char, flags: c_int, mode: libc::mode_t));
fd_creator!(socket, "socket", (domain: c_int, ty: c_int, proto: c_int));
fd_creator!(accept, "accept", (fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t));
fd_creator!(accept4, "accept4", (fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t, flags: c_int));
fd_creator!(eventfd, "eventfd", (initval: libc::c_uint, flags: c_int));
fd_creator!(epoll_create, "epoll_create", (size: c_int));
fd_creator!(epoll_create1, "epoll_create1", (flags: c_int));
fd_creator!(dup, "dup", (fd: c_int));
fd_creator!(dup2, "dup2", (fd: c_int, to: c_int));
fd_creator!(dup3, "dup3", (fd: c_int, to: c_int, flags: c_int));
fd_creator!(memfd_create, "memfd_create", (name: *const c_char, flags: libc::c_uint));
fd_creator!(timerfd_create, "timerfd_create", (clock: c_int, flags: c_int));
fd_creator!(signalfd, "signalfd", (fd: c_int, mask: *const libc::sigset_t, flags: c_int));
fd_creator!(inotify_init, "inotify_init", ());
fd_creator!(inotify_init1, "inotify_init1", (flags: c_int));

/// `fcntl(fd, cmd, arg)`: on x86-64 the optional argument arrives in the same register
/// whether or not the caller saw a prototype. Records descriptors made by F_DUPFD*.
///
/// # Safety
/// The `fcntl(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    let Some(f) = next_fn!("fcntl", unsafe extern "C" fn(c_int, c_int, usize) -> c_int) else {
        return -1;
    };
    // SAFETY: forwarded with the caller's arguments.
    let r = unsafe { f(fd, cmd, arg) };
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        mark_fd(r);
    }
    r
}

/// # Safety
/// The `socketpair(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    proto: c_int,
    sv: *mut c_int,
) -> c_int {
    let Some(f) = next_fn!(
        "socketpair",
        unsafe extern "C" fn(c_int, c_int, c_int, *mut c_int) -> c_int
    ) else {
        return -1;
    };
    // SAFETY: forwarded with the caller's arguments.
    let r = unsafe { f(domain, ty, proto, sv) };
    if r == 0 {
        // SAFETY: on success `sv` holds two descriptors.
        unsafe { (mark_fd(*sv), mark_fd(*sv.add(1))) };
    }
    r
}

/// # Safety
/// The `pipe2(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    let Some(f) = next_fn!("pipe2", unsafe extern "C" fn(*mut c_int, c_int) -> c_int) else {
        return -1;
    };
    // SAFETY: forwarded with the caller's arguments.
    let r = unsafe { f(fds, flags) };
    if r == 0 {
        // SAFETY: on success `fds` holds two descriptors.
        unsafe { (mark_fd(*fds), mark_fd(*fds.add(1))) };
    }
    r
}

/// # Safety
/// The `pipe(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    // SAFETY: the same contract.
    unsafe { pipe2(fds, 0) }
}

/// # Safety
/// The `close(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let Some(f) = next_fn!("close", unsafe extern "C" fn(c_int) -> c_int) else {
        return -1;
    };
    unmark_fd(fd);
    // SAFETY: forwarded.
    unsafe { f(fd) }
}

fn current_fs() -> u64 {
    let mut fs: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64) };
    fs
}

/// A lower thread whose only job is to own a TCB that an upper thread borrows for its MPI
/// calls: it reports its FS base and sleeps forever with every signal blocked (upper
/// handlers must never run on it).
extern "C" fn parked(slot: *mut c_void) -> *mut c_void {
    // SAFETY: a valid, full signal set blocked for this thread.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, core::ptr::null_mut());
    }
    // SAFETY: `slot` points at an AtomicU64 the creator waits on.
    unsafe {
        (*(slot as *const core::sync::atomic::AtomicU64)).store(current_fs(), Ordering::Release)
    };
    loop {
        // SAFETY: sleeping; no signal can wake it (all blocked).
        unsafe { libc::pause() };
    }
}

/// Starts a parked lower thread; its TCB, or 0 if no thread could be created.
unsafe extern "C" fn new_tcb() -> u64 {
    let slot = Box::leak(Box::new(core::sync::atomic::AtomicU64::new(0)));
    let mut tid: libc::pthread_t = 0;
    // SAFETY: a detached-by-neglect thread running `parked` with a leaked slot.
    let r = unsafe {
        libc::pthread_create(
            &mut tid,
            core::ptr::null(),
            parked,
            slot as *mut _ as *mut c_void,
        )
    };
    if r != 0 {
        return 0;
    }
    while slot.load(Ordering::Acquire) == 0 {
        std::thread::yield_now();
    }
    slot.load(Ordering::Acquire)
}

/// Prepares the TCBs to lend: ours, plus PREPARED_TCBS-1 parked lower threads.
fn prepare_tcbs(table: &mut LowerTable) {
    table.tcbs[0] = table.fs_base;
    let mut n = 1;
    while n < PREPARED_TCBS {
        // SAFETY: runs on the proxy's main thread, before anyone else uses the table.
        let fs = unsafe { new_tcb() };
        if fs == 0 {
            break;
        }
        table.tcbs[n] = fs;
        n += 1;
    }
    table.n_tcbs = n as u64;
}

/// Entered by the lower `ld.so` after it loaded this world. Reports to the upper half and
/// never returns (its stack stays as it is; it is the lower world's main thread).
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    let Some(cb) = std::env::var(CALLBACK_ENV)
        .ok()
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
    else {
        eprintln!("mana_lower: not started by MANA's loader ({CALLBACK_ENV} unset)");
        std::process::exit(2);
    };
    // The launcher's PMI connection belongs to MPI.
    if let Some(fd) = std::env::var("PMI_FD")
        .ok()
        .and_then(|v| v.parse::<c_int>().ok())
    {
        mark_fd(fd);
    }
    let mut fs: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64) };
    // SAFETY: written once, before the upper half reads it.
    unsafe {
        TABLE.fs_base = fs;
        let table = &raw mut TABLE;
        prepare_tcbs(&mut *table);
    }
    // SAFETY: the loader put the address of its `extern "C" fn(*const LowerTable) -> !` there.
    let cb: extern "C" fn(*const LowerTable) -> ! = unsafe { core::mem::transmute(cb as usize) };
    cb(&raw const TABLE)
}
