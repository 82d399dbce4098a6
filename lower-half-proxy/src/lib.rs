//! The lower half (DESIGN.md §2).
//!
//! * [`abi`]: the table the proxy hands to the upper half.
//! * [`arena`]: the free list of the arena every lower-world mapping is placed in.
//! * [`loader`]: starts the proxy inside the running process in a *second loader world* —
//!   its own `ld.so`, libc and dependencies, mapped by our ELF loader, never by the
//!   application's `ld.so` (rule 1) — and returns with the table.
//!
//! Design decisions and measurements: `docs/lower-half.md`.

pub mod abi;
pub mod arena;
pub mod loader;

/// Environment variable naming the lower-half program the restart plugin loads.
pub const LOWER_HALF_ENV: &str = "MANA_LOWER_HALF";
