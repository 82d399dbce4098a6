//! Under `mpiexec.mpich -n N`: starts the proxy (argv[1]) in its own loader world, where
//! MPICH lives, and runs `MPI_Init`, rank/size, an `MPI_Allreduce` and `MPI_Finalize`
//! through function pointers looked up in that world, switching the FS base around each
//! call. The upper world (this program) is not linked with MPI at all. Prints
//! `rank R of N: sum S` (S = 0 + 1 + … + N-1, checked) and exits 0.

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
    // SAFETY: as above.
    assert_eq!(unsafe { loader::in_lower(fs, || finalize()) }, MPI_SUCCESS);
}
