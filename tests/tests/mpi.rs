//! Unmodified MPI programs (built with plain `mpicc.mpich`) run under `mana_launch`: their
//! MPI calls go through MANA's generated `libmpich.so.12` into the lower half, where the
//! real MPICH runs. Output equals the native run's.
//!
//! ```text
//! $ mpicc.mpich -o ring tests/mpi/ring.c
//! $ mpiexec.mpich -n 4 ./ring > native.out
//! $ mana_coordinator --daemon; mpiexec.mpich -n 4 mana_launch ./ring > mana.out
//! $ cmp native.out mana.out
//! ```

use mana_tests::*;
use std::process::Command;

fn mpiexec(s: &Session, n: usize, program: &[&std::path::Path]) -> Output {
    let mut cmd = Command::new("mpiexec.mpich");
    cmd.current_dir(s.dir())
        .args(["-n", &n.to_string()])
        .args(program);
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd.env("HOME", &s.home)
        .env("MANA_STATUS_FILE", &s.status_file)
        .env("MANA_LOG", "mana::mpi=debug");
    Proc::spawn(&format!("mpiexec -n {n}"), cmd).wait_output(LONG)
}

/// `mpiexec -n N PROGRAM` with and without `mana_launch`: same output, and every rank
/// went through its own lower half.
fn equals_native_under_mana_launch(name: &str, ranks: &[usize]) {
    let s = Session::start(&format!("mpi-{name}"));
    let ring = compile_mpi(name, s.dir());
    let launch = bin("mana_launch");
    for &n in ranks {
        let native = mpiexec(&s, n, &[&ring]);
        native.assert_success();
        let under = mpiexec(&s, n, &[&launch, &ring]);
        under.assert_success();
        assert_eq!(
            under.stdout_text(),
            native.stdout_text(),
            "-n {n}: output under mana_launch differs from native"
        );
        assert!(!native.stdout_text().is_empty(), "{name} printed nothing");
        // Every rank really went through MANA: its lower half was loaded by libmana.
        let loaded = under.stderr_text().matches("lower half loaded").count();
        assert_eq!(
            loaded,
            n,
            "-n {n}: expected {n} lower halves: {}",
            under.describe()
        );
    }
}

/// Ring with status checks, nonblocking halo exchange with Waitall, Allreduce, Reduce,
/// Bcast, Gather, Barrier, Wtime.
#[test]
fn ring_and_collectives_under_mana_launch_equal_native() {
    equals_native_under_mana_launch("ring", &[2, 4]);
}

/// Callbacks from MPI into the application (a user reduction, a user error handler) run
/// on the application's own thread-local state; MPI_ERRORS_RETURN returns the error.
#[test]
fn user_ops_and_error_handlers_under_mana_launch_equal_native() {
    equals_native_under_mana_launch("callbacks", &[2]);
}
