//! The MPICH-ABI wrapper library (DESIGN.md §3).
//!
//! `build.rs` compiles `generated/wrappers.c` — produced by `gen/generate.py` from the MPI
//! standard's prototypes (`spec/mpi-5.0-iso-c.txt`, derived from pympistandard's
//! `apis.json` by `gen/derive_spec.py`) for exactly the symbols the real library exports
//! (`spec/libmpich.so.12.exports`, from `gen/exports.sh`) — into
//! `target/<profile>/mana-mpi/libmpich.so.12`. Each wrapper forwards to the lower half
//! through `libmana` (`mana_lower_fn`), switching the FS base around the call.
//!
//! Regenerate: `python3 mpi-wrappers/gen/generate.py` (and `gen/exports.sh`,
//! `gen/derive_spec.py` when MPICH or pympistandard change); `tests/` fails when any
//! committed output is stale.

/// Directory holding `libmpich.so.12` and `libmpi.so.12` for this build.
pub const LIB_DIR: &str = env!("MANA_MPI_LIB_DIR");
