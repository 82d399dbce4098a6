//! Support for MANA-rs's end-to-end tests: everything a test needs to read like a session
//! at a terminal — build a C program, launch it under `mana_launch`, checkpoint it with
//! `mana_status`, kill it, restart it with `mana_restart`, compare with a native run.
//!
//! * [`programs`]: compiles the C programs of `tests/c/` (PIE, `-no-pie`, `-static`);
//! * [`process`]: a spawned process whose stdout/stderr are collected in the background,
//!   with waits for observable events (a line, an exit) under a deadline;
//! * [`mpi4py`]: the cached mpi4py venv and the Python scripts of `tests/python/`;
//! * [`session`]: one job — a private temp dir and status file, its own coordinator, and
//!   the five commands run against it;
//! * [`slurm`]: a real local Slurm (munged, slurmctld, slurmd) for `srun` tests;
//! * [`transcript`]: what a correct outcome looks like (a restarted job's output is the
//!   uninterrupted run's, byte for byte; an error is one line);
//! * [`ckpt`]: reading and damaging checkpoint directories, images, status files and
//!   memory maps;
//! * [`crashmodel`]: what a crash could leave of a checkpoint's writes (`strace`d);
//! * [`users`]: a second and third user (the product as an ordinary user, an attacker);
//! * [`tempdir`], [`rng`]: per-test directories and seeded, printed randomness.
//!
//! The commands are taken from the directory holding the running test executable's
//! parent (`target/<profile>/`), or from `MANA_BIN_DIR`: build the workspace first
//! (`cargo build --release --workspace`; `scripts/test.sh` does).

pub mod ckpt;
pub mod crashmodel;
pub mod mpi;
pub mod mpi4py;
pub mod process;
pub mod programs;
pub mod rng;
pub mod session;
pub mod slurm;
pub mod tempdir;
pub mod transcript;
pub mod users;

pub use ckpt::*;
pub use mpi::{
    assert_images_have_no_lower_half, checkpoint_and_kill, checkpoint_until_end, launch,
    launch_command, mpiexec_command, mpiexec_command_under, native, restart, result_line,
    wait_registered,
};
pub use mpi4py::*;
pub use process::*;
pub use programs::*;
pub use rng::Rng;
pub use session::*;
pub use slurm::Slurm;
pub use tempdir::TempDir;
pub use transcript::*;
pub use users::{as_user, chown, user};

use std::time::Duration;

/// Deadline for steps of small programs (a launch, a restart, a short run).
pub const SHORT: Duration = Duration::from_secs(60);
/// Deadline for steps that move hundreds of MiB or wait for a whole program to finish.
pub const LONG: Duration = Duration::from_secs(300);
