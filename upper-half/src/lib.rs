//! `libmana.so`: the upper-half runtime, injected by `mana_launch` with `LD_PRELOAD`.
//!
//! At load time it installs the checkpoint signal handler and starts the checkpoint
//! thread, which registers with the coordinator and, on request, runs a checkpoint as a
//! sequence of named phases (`runtime::checkpoint`):
//! `prepare → quiesce → write → commit → resume`. After a restart the same thread returns
//! from the write phase a second time and runs `restarted` instead.
//!
//! `unsafe` is confined to: [`sys`] (raw syscalls), [`context`] (saving registers),
//! [`threads`] and [`sigguard`] (signal handling), [`alloc`] (the runtime's allocator) and the few
//! places that read the process's own memory in [`write`].

pub mod alloc;
pub mod ckpt_signal;
pub mod context;
pub mod exclude;
pub mod fork;
pub mod ids;
pub mod members;
pub mod mpi;
pub mod mpi_ckpt;
pub mod mpi_guard;
pub mod pending;
pub mod posix_timers;
pub mod procfs;
pub mod rank_links;
pub mod runtime;
pub mod sigguard;
pub mod sys;
pub mod threads;
pub mod timed;
pub mod write;

#[global_allocator]
static ALLOC: alloc::RuntimeAlloc = alloc::RuntimeAlloc::new();

extern "C" fn mana_init() {
    runtime::start();
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = mana_init;
