//! The runtime's own allocator, separate from the application's `malloc`.
//!
//! * Normally every Rust allocation of the runtime goes to a private `dlmalloc` heap
//!   (mmapped, saved in images like any other upper-half memory). The checkpoint thread
//!   therefore never takes the application's malloc locks, which a stopped thread may hold.
//! * During the *write window* (from just before the checkpoint thread saves its context
//!   until the image is written) allocations come from a transient bump arena that is
//!   excluded from the image, and frees of older objects are deferred. The runtime heap is
//!   thus byte-for-byte the same from the context save to the end of the write, so the
//!   saved heap is consistent with the saved context.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use parking_lot_free::SpinLock;

/// Size of the transient arena's reservation (`MAP_NORESERVE`: costs only what is used).
pub const ARENA_SIZE: usize = 1 << 30;

static WINDOW: AtomicBool = AtomicBool::new(false);
static ARENA_BASE: AtomicUsize = AtomicUsize::new(0);
static ARENA_NEXT: AtomicUsize = AtomicUsize::new(0);
static ARENA_END: AtomicUsize = AtomicUsize::new(0);

const MAX_DEFERRED: usize = 4096;
struct Deferred {
    n: usize,
    items: [(usize, usize, usize); MAX_DEFERRED],
}
static DEFERRED: SpinLock<Deferred> = SpinLock::new(Deferred {
    n: 0,
    items: [(0, 0, 0); MAX_DEFERRED],
});

pub struct RuntimeAlloc {
    heap: dlmalloc::GlobalDlmalloc,
}

impl RuntimeAlloc {
    pub const fn new() -> Self {
        RuntimeAlloc {
            heap: dlmalloc::GlobalDlmalloc,
        }
    }
}

impl Default for RuntimeAlloc {
    fn default() -> Self {
        Self::new()
    }
}

fn in_arena(p: *mut u8) -> bool {
    let a = p as usize;
    let base = ARENA_BASE.load(Ordering::Relaxed);
    base != 0 && a >= base && a < ARENA_END.load(Ordering::Relaxed)
}

fn bump(layout: Layout) -> *mut u8 {
    let align = layout.align().max(16);
    let mut cur = ARENA_NEXT.load(Ordering::Relaxed);
    loop {
        let start = (cur + align - 1) & !(align - 1);
        let end = start + layout.size().max(1);
        if end > ARENA_END.load(Ordering::Relaxed) {
            return core::ptr::null_mut();
        }
        match ARENA_NEXT.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return start as *mut u8,
            Err(c) => cur = c,
        }
    }
}

// SAFETY: every path returns memory valid for `layout` or null; deallocation routes each
// pointer back to the allocator that produced it (arena pointers are recognised by address).
unsafe impl GlobalAlloc for RuntimeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WINDOW.load(Ordering::Acquire) {
            bump(layout)
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { self.heap.alloc(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_arena(ptr) {
            return;
        }
        if WINDOW.load(Ordering::Acquire) {
            let mut d = DEFERRED.lock();
            if d.n < MAX_DEFERRED {
                let i = d.n;
                d.items[i] = (ptr as usize, layout.size(), layout.align());
                d.n += 1;
            }
            return;
        }
        // SAFETY: `ptr` came from the dlmalloc heap with this layout.
        unsafe { self.heap.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_arena(ptr) && !WINDOW.load(Ordering::Acquire) {
            // SAFETY: `ptr` came from the dlmalloc heap with this layout.
            return unsafe { self.heap.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_size` with the old alignment is a valid layout (GlobalAlloc contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: valid layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` is live and owned by the caller.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

/// Opens the write window. The arena is registered as excluded from the image.
pub fn begin_window() -> Result<(), i32> {
    let base = crate::sys::map_anon(ARENA_SIZE)? as usize;
    ARENA_BASE.store(base, Ordering::Relaxed);
    ARENA_NEXT.store(base, Ordering::Relaxed);
    ARENA_END.store(base + ARENA_SIZE, Ordering::Relaxed);
    crate::exclude::add(base as u64, (base + ARENA_SIZE) as u64);
    WINDOW.store(true, Ordering::Release);
    Ok(())
}

/// Closes the write window: deferred frees happen now and the arena is unmapped. Nothing
/// allocated in the window may be used afterwards.
pub fn end_window(heap: &RuntimeAlloc) {
    WINDOW.store(false, Ordering::Release);
    let mut d = DEFERRED.lock();
    for i in 0..d.n {
        let (p, size, align) = d.items[i];
        // SAFETY: recorded from a dealloc of a dlmalloc pointer with this layout.
        unsafe {
            heap.heap
                .dealloc(p as *mut u8, Layout::from_size_align_unchecked(size, align))
        };
    }
    d.n = 0;
    drop(d);
    let base = ARENA_BASE.swap(0, Ordering::Relaxed);
    if base != 0 {
        crate::exclude::remove(base as u64);
        // SAFETY: the arena is ours and, per this function's contract, unused now.
        unsafe { crate::sys::unmap(base as *mut u8, ARENA_SIZE) };
    }
}

/// After a restart the arena no longer exists (it was not in the image) and the deferred
/// frees refer to a timeline that did not happen: forget both.
pub fn forget_window() {
    WINDOW.store(false, Ordering::Release);
    DEFERRED.lock().n = 0;
    ARENA_BASE.store(0, Ordering::Relaxed);
    crate::exclude::clear();
}

/// Bytes used in the arena (for the debug log after a checkpoint).
pub fn arena_used() -> usize {
    ARENA_NEXT
        .load(Ordering::Relaxed)
        .saturating_sub(ARENA_BASE.load(Ordering::Relaxed))
}

mod parking_lot_free {
    //! A minimal spin lock: the allocator cannot use a lock that allocates or parks
    //! through the application's libc.
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    pub struct SpinLock<T> {
        locked: AtomicBool,
        value: UnsafeCell<T>,
    }
    // SAFETY: access to `value` is serialized by `locked`.
    unsafe impl<T: Send> Sync for SpinLock<T> {}

    impl<T> SpinLock<T> {
        pub const fn new(value: T) -> Self {
            SpinLock {
                locked: AtomicBool::new(false),
                value: UnsafeCell::new(value),
            }
        }
        pub fn lock(&self) -> Guard<'_, T> {
            while self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
            Guard { lock: self }
        }
    }

    pub struct Guard<'a, T> {
        lock: &'a SpinLock<T>,
    }
    impl<T> core::ops::Deref for Guard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: we hold the lock.
            unsafe { &*self.lock.value.get() }
        }
    }
    impl<T> core::ops::DerefMut for Guard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: we hold the lock exclusively.
            unsafe { &mut *self.lock.value.get() }
        }
    }
    impl<T> Drop for Guard<'_, T> {
        fn drop(&mut self) {
            self.lock.locked.store(false, Ordering::Release);
        }
    }
}
