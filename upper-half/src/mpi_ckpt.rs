//! `libmana`'s side of the MPI checkpoint: the entry point through which the wrapper
//! library registers its operations (exported from `libmana.so`), and the restart step
//! that needs this crate's lower-half loader. The logic is in the `mana-drain` crate.

pub use mana_drain::{finish, prepare, take_round_end, MpiOps, Prepared};

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
/// MPI back in it. A process checkpointed before `MPI_Init` or after `MPI_Finalize` gets
/// no lower half now: its next MPI call loads one with `env`, as at start-up.
pub fn restart(env: Vec<(String, String)>, rank: u32, world_size: u32) -> Result<(), String> {
    if mana_drain::phase() == mana_drain::Phase::Initialized {
        mana_drain::restart(|| crate::mpi::restart_lower(env), rank, world_size)
    } else {
        mana_drain::restart_without_mpi();
        crate::mpi::defer_lower(env);
        Ok(())
    }
}

/// Whether this process takes part in its job's MPI checkpoint protocol: it has a lower
/// half, or it was started by an MPI launcher under `mana_launch` (the wrapper library
/// registered) and may still be before `MPI_Init` — every rank of a job must take part
/// in the agreement, whichever side of `MPI_Init` it is on.
pub fn in_mpi_job(under_launcher: bool) -> bool {
    crate::mpi::loaded() || (under_launcher && mana_drain::registered())
}
