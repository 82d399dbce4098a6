//! `libmana`'s side of the MPI checkpoint: the entry point through which the wrapper
//! library registers its operations (exported from `libmana.so`), and the restart step
//! that needs this crate's lower-half loader. The logic is in the `mana-drain` crate.

pub use mana_drain::{finish, prepare, MpiOps, Prepared};

/// Called by the wrapper library's constructor with its (static) operations table.
///
/// # Safety
/// `ops` must point to a `struct mana_mpi_ops` that lives as long as the process.
#[no_mangle]
pub unsafe extern "C" fn mana_register_mpi_ops(ops: *const MpiOps) {
    // SAFETY: the caller's contract.
    unsafe { mana_drain::register(ops) }
}

/// In the restored process: a new lower half with the restart's environment `env`, then
/// MPI back in it.
pub fn restart(env: Vec<(String, String)>, rank: u32, world_size: u32) -> Result<(), String> {
    mana_drain::restart(|| crate::mpi::restart_lower(env), rank, world_size)
}
