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

#[test]
fn ring_and_collectives_under_mana_launch_equal_native() {
    let s = Session::start("mpi-ring");
    let ring = compile_mpi("ring", s.dir());
    let launch = bin("mana_launch");
    for n in [2, 4] {
        let native = mpiexec(&s, n, &[&ring]);
        native.assert_success();
        let under = mpiexec(&s, n, &[&launch, &ring]);
        under.assert_success();
        assert_eq!(
            under.stdout_text(),
            native.stdout_text(),
            "-n {n}: output under mana_launch differs from native"
        );
        assert!(native.stdout_text().contains(&format!("ring size={n}")));
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
