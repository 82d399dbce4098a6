//! The lower half (DESIGN.md §2).
//!
//! * [`abi`]: the table the proxy hands to the upper half.
//! * [`loader`]: starts the proxy inside the running process in a *second loader world* —
//!   its own `ld.so`, libc and dependencies, mapped by our ELF loader, never by the
//!   application's `ld.so` (rule 1) — and returns with the table.
//!
//! Status: see `docs/lower-half.md` (MPICH runs in the lower world and serves the
//! generated wrappers; the arena of rule 2 and per-thread TCBs are still to come).

pub mod abi;
pub mod loader;

/// Environment variable naming the lower-half program the restart plugin loads.
pub const LOWER_HALF_ENV: &str = "MANA_LOWER_HALF";
