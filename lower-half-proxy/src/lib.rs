//! The lower half (DESIGN.md §2): a program linked against the real MPI library, loaded
//! into the process by MANA's own ELF loader with its own `ld.so` and libc, thrown away
//! and re-created at every restart. Its implementation is the work of the split-process
//! issue; until then non-MPI processes have no lower half and this crate holds only the
//! names shared with the restarter.

/// Environment variable naming the lower-half program the restart plugin loads.
pub const LOWER_HALF_ENV: &str = "MANA_LOWER_HALF";
