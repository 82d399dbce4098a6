//! mpi4py as a real client: `scripts/setup.sh` builds mpi4py from its PyPI sdist against
//! Debian's MPICH (`MPICC=mpicc.mpich`) into a cached venv at [`MPI4PY_VENV`], with numpy,
//! and unpacks the sdist's own test suite beside it. The tests' Python scripts live in
//! `tests/python/`. Nothing here skips: a missing venv is a failure naming the command that
//! makes it.

use crate::Proc;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The venv `scripts/setup.sh` builds (keep in step with its `MPI4PY_VENV`).
pub const MPI4PY_VENV: &str = "/var/tmp/mana-mpi4py";
/// The mpi4py release it holds (keep in step with `MPI4PY_VERSION` in `scripts/setup.sh`).
pub const MPI4PY_VERSION: &str = "4.1.2";

/// The venv's Python (it has numpy and mpi4py built against MPICH).
pub fn mpi4py_python() -> PathBuf {
    let p = Path::new(MPI4PY_VENV).join("bin/python");
    let stamp = Path::new(MPI4PY_VENV).join(".mana-setup");
    assert!(
        p.is_file() && stamp.is_file(),
        "mpi4py's venv {MPI4PY_VENV} is missing or incomplete: run scripts/setup.sh (it builds \
         mpi4py {MPI4PY_VERSION} from its sdist against MPICH)"
    );
    p
}

/// mpi4py's own test suite (the `test/` directory of its sdist).
pub fn mpi4py_test_dir() -> PathBuf {
    let d = Path::new(MPI4PY_VENV).join(format!("src/mpi4py-{MPI4PY_VERSION}/test"));
    assert!(
        d.join("mpiunittest.py").is_file(),
        "mpi4py's test suite is not in {}: run scripts/setup.sh",
        d.display()
    );
    d
}

/// A script of `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// The lines of `text` that contain `needle`, sorted (ranks print in any order).
pub fn sorted_lines(text: &str, needle: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Waits until `run` has printed `needle` `n` times (one per rank; counted as occurrences,
/// not lines: Hydra may forward two ranks' lines into one when a rank's text and its
/// newline arrive apart — seen in CI: "… ready rank=1py_phases post ready rank=0").
pub fn wait_for_lines(run: &Proc, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&run.stdout()).into_owned();
        if text.matches(needle).count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {n} lines containing {needle:?} did not come within {timeout:?}\n--- stdout ---\n{text}--- stderr ---\n{}",
            run.label(),
            run.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
