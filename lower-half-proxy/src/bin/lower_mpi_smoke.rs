//! Under `mpiexec.mpich -n N`: starts the proxy (argv[1]) in its own loader world, where
//! MPICH lives, and runs `MPI_Init`, rank/size, an `MPI_Allreduce` and `MPI_Finalize`
//! through function pointers looked up in that world, switching the FS base around each
//! call. The upper world (this program) is not linked with MPI at all. Prints
//! `rank R of N: sum S` (S = 0 + 1 + … + N-1, checked), checks that the lower arena never
//! has a hole (see `arena_never_has_holes`) and exits 0.

use mana_lower::loader;
use std::ffi::{c_int, c_void, CStr};

// MPICH ABI constants (mpi.h of MPICH 4).
const MPI_COMM_WORLD: c_int = 0x4400_0000;
const MPI_INT: c_int = 0x4c00_0405;
const MPI_SUM: c_int = 0x5800_0003;
const MPI_SUCCESS: c_int = 0;

fn main() {
    let proxy = std::env::args()
        .nth(1)
        .expect("usage: lower_mpi_smoke PATH/TO/mana_lower");
    let world = loader::load(proxy.as_ref(), &loader::default_env()).unwrap_or_else(|e| {
        eprintln!("lower_mpi_smoke: {e}");
        std::process::exit(1)
    });
    let t = world.table;
    let fs = t.fs_base;
    let sym = |name: &CStr| -> *const c_void {
        // SAFETY: `lookup` is a lower-world function taking a C string.
        let p = unsafe { loader::call_ptr(fs, t.lookup, name.as_ptr()) };
        assert!(!p.is_null(), "{name:?} not found in the lower world");
        p
    };
    type Init = unsafe extern "C" fn(*mut c_int, *mut *mut *mut i8) -> c_int;
    type CommQuery = unsafe extern "C" fn(c_int, *mut c_int) -> c_int;
    type Allreduce =
        unsafe extern "C" fn(*const c_void, *mut c_void, c_int, c_int, c_int, c_int) -> c_int;
    type Finalize = unsafe extern "C" fn() -> c_int;
    // SAFETY: the symbols are MPICH's functions with these C signatures.
    let (init, rank_fn, size_fn, allreduce, finalize) = unsafe {
        (
            std::mem::transmute::<*const c_void, Init>(sym(c"MPI_Init")),
            std::mem::transmute::<*const c_void, CommQuery>(sym(c"MPI_Comm_rank")),
            std::mem::transmute::<*const c_void, CommQuery>(sym(c"MPI_Comm_size")),
            std::mem::transmute::<*const c_void, Allreduce>(sym(c"MPI_Allreduce")),
            std::mem::transmute::<*const c_void, Finalize>(sym(c"MPI_Finalize")),
        )
    };
    let (mut rank, mut size, mut sum): (c_int, c_int, c_int) = (-1, -1, -1);
    // SAFETY: MPICH calls made in the lower world with valid upper buffers.
    unsafe {
        assert_eq!(
            loader::in_lower(fs, || init(std::ptr::null_mut(), std::ptr::null_mut())),
            MPI_SUCCESS
        );
        assert_eq!(
            loader::in_lower(fs, || rank_fn(MPI_COMM_WORLD, &mut rank)),
            MPI_SUCCESS
        );
        assert_eq!(
            loader::in_lower(fs, || size_fn(MPI_COMM_WORLD, &mut size)),
            MPI_SUCCESS
        );
        let mine = rank;
        let r = loader::in_lower(fs, || {
            allreduce(
                &mine as *const c_int as *const c_void,
                &mut sum as *mut c_int as *mut c_void,
                1,
                MPI_INT,
                MPI_SUM,
                MPI_COMM_WORLD,
            )
        });
        assert_eq!(r, MPI_SUCCESS);
    }
    assert_eq!(sum, size * (size - 1) / 2, "allreduce gave a wrong sum");
    println!("rank {rank} of {size}: sum {sum}");
    // With UCX loaded and initialized as in a rank (its memory hooks off: default_env).
    arena_never_has_holes(&world);
    // SAFETY: as above.
    assert_eq!(unsafe { loader::in_lower(fs, || finalize()) }, MPI_SUCCESS);
}

/// The lower world's arena is never unmapped, not even for a moment, while it detaches
/// System V shared memory, shrinks a mapping or unmaps one: an upper thread maps memory at
/// kernel-chosen addresses meanwhile, and a mapping placed in such a hole would be
/// overwritten when the arena is reserved again (a checkpoint thread's heap died that way
/// while MPI_Finalize detached UCX's shared memory). An upper thread keeps trying to map
/// exactly the range being released (`MAP_FIXED_NOREPLACE`, which succeeds only on a hole)
/// while this thread attaches and detaches, shrinks and unmaps through the lower world.
fn arena_never_has_holes(world: &loader::LowerWorld) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    const ROUNDS: usize = 3000;
    let page = 4096usize;
    let fs = world.table.fs_base;
    let sym = |name: &std::ffi::CStr| -> *const libc::c_void {
        // SAFETY: `lookup` is a lower-world function taking a C string.
        let p = unsafe { loader::call_ptr(fs, world.table.lookup, name.as_ptr()) };
        assert!(!p.is_null(), "{name:?} not found in the lower world");
        p
    };
    type Shmat = unsafe extern "C" fn(i32, *const libc::c_void, i32) -> *mut libc::c_void;
    type Shmdt = unsafe extern "C" fn(*const libc::c_void) -> i32;
    type Mmap =
        unsafe extern "C" fn(*mut libc::c_void, usize, i32, i32, i32, i64) -> *mut libc::c_void;
    type Munmap = unsafe extern "C" fn(*mut libc::c_void, usize) -> i32;
    type Mremap = unsafe extern "C" fn(
        *mut libc::c_void,
        usize,
        usize,
        i32,
        *mut libc::c_void,
    ) -> *mut libc::c_void;
    // SAFETY: the proxy's exports with these C signatures.
    let (shmat, shmdt, mmap, munmap, mremap) = unsafe {
        (
            core::mem::transmute::<*const libc::c_void, Shmat>(sym(c"shmat")),
            core::mem::transmute::<*const libc::c_void, Shmdt>(sym(c"shmdt")),
            core::mem::transmute::<*const libc::c_void, Mmap>(sym(c"mmap")),
            core::mem::transmute::<*const libc::c_void, Munmap>(sym(c"munmap")),
            core::mem::transmute::<*const libc::c_void, Mremap>(sym(c"mremap")),
        )
    };
    // SAFETY: a private segment, removed below.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 64 * page, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());

    let target = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut hits = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = target.load(Ordering::Relaxed);
                if t == 0 {
                    continue;
                }
                let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
                // SAFETY: NOREPLACE never touches an existing mapping; one placed in a
                // hole of the arena is left for the arena to take back.
                let r = unsafe {
                    libc::mmap(t as *mut libc::c_void, page, libc::PROT_READ, flags, -1, 0)
                };
                if r as u64 == t {
                    hits.push(t);
                }
            }
            hits
        })
    };
    for _ in 0..ROUNDS {
        // SAFETY: lower-world calls with plain arguments, in the lower world.
        unsafe {
            let a = loader::in_lower(fs, || shmat(id, std::ptr::null(), 0));
            assert_ne!(a as isize, -1, "lower shmat failed");
            target.store(a as u64 + 8 * page as u64, Ordering::Relaxed);
            assert_eq!(loader::in_lower(fs, || shmdt(a)), 0, "lower shmdt failed");

            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            let m = loader::in_lower(fs, || {
                mmap(std::ptr::null_mut(), 16 * page, prot, flags, -1, 0)
            });
            assert_ne!(m, libc::MAP_FAILED, "lower mmap failed");
            target.store(m as u64 + 8 * page as u64, Ordering::Relaxed);
            let r = loader::in_lower(fs, || {
                mremap(m, 16 * page, 4 * page, 0, std::ptr::null_mut())
            });
            assert_eq!(r, m, "lower mremap did not shrink in place");
            target.store(m as u64, Ordering::Relaxed);
            assert_eq!(
                loader::in_lower(fs, || munmap(m, 4 * page)),
                0,
                "lower munmap failed"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    // SAFETY: removes the segment (no attachment is left).
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    let hits = racer.join().unwrap();
    assert!(
        hits.is_empty(),
        "an upper mmap was placed inside the lower arena while it released memory, {} times in {ROUNDS} rounds (first at {:#x})",
        hits.len(),
        hits[0]
    );
}
