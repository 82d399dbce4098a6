//! The C test programs of `tests/c/`, compiled with gcc into a test's own directory, and
//! where the MANA-rs commands are.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How a test program is linked. Every program is tested both [`Build::Pie`] and
/// [`Build::NoPie`]: they load at different addresses (random vs fixed) and the restarter
/// must stay clear of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `gcc -O2 -fPIE -pie`
    Pie,
    /// `gcc -O2 -no-pie`
    NoPie,
    /// `gcc -O2 -static` (only to check that `mana_launch` refuses it)
    Static,
}

impl Build {
    pub const BOTH: [Build; 2] = [Build::Pie, Build::NoPie];

    pub fn name(self) -> &'static str {
        match self {
            Build::Pie => "pie",
            Build::NoPie => "no-pie",
            Build::Static => "static",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Build::Pie => &["-fPIE", "-pie"],
            Build::NoPie => &["-no-pie"],
            Build::Static => &["-static"],
        }
    }
}

/// The directory of the C sources (`tests/c/`).
pub fn c_source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c")
}

/// `gcc -O2 <build flags> -pthread -o OUT_DIR/NAME-BUILD tests/c/NAME.c`
pub fn compile(name: &str, build: Build, out_dir: &Path) -> PathBuf {
    let src = c_source_dir().join(format!("{name}.c"));
    let out = out_dir.join(format!("{name}-{}", build.name()));
    let result = Command::new("gcc")
        .args(["-O2", "-Wall"])
        .args(build.flags())
        .arg("-pthread")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc (install it: scripts/setup.sh): {e}"));
    assert!(
        result.status.success(),
        "gcc failed to build {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// Where the built commands are: `$MANA_BIN_DIR`, else `target/<profile>/` — the parent
/// of the `deps/` directory holding the running test executable.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MANA_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let deps = exe.parent().expect("test executable has a directory");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    dir.to_path_buf()
}

/// The path of one command (`mana_launch`, …), which must have been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace with the same profile first \
         (cargo build --release --workspace), or point MANA_BIN_DIR at the binaries",
        p.display()
    );
    p
}

/// An unmodified MPICH program of `tests/mpi/`, built into `OUT_DIR/NAME` with the
/// compiler its language takes: `NAME.c` with `mpicc.mpich`, `NAME.f90` with
/// `mpif90.mpich` (it links `libmpichfort.so.12`), `NAME.cpp` with `mpicxx.mpich`.
pub fn compile_mpi(name: &str, out_dir: &Path) -> PathBuf {
    compile_mpi_with(name, out_dir, &[])
}

/// [`compile_mpi`] with extra compiler or linker flags (`-Wl,-rpath,…`).
pub fn compile_mpi_with(name: &str, out_dir: &Path, flags: &[&str]) -> PathBuf {
    compile_mpi_linked(name, out_dir, flags, &[])
}

/// [`compile_mpi_with`], plus `libs` after the source (`-L… -lhdf5`: libraries the
/// program's objects need come after them on the link line).
pub fn compile_mpi_linked(name: &str, out_dir: &Path, flags: &[&str], libs: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mpi");
    let (src, compiler) = [
        ("c", "mpicc.mpich"),
        ("f90", "mpif90.mpich"),
        ("cpp", "mpicxx.mpich"),
    ]
    .iter()
    .map(|(ext, cc)| (dir.join(format!("{name}.{ext}")), *cc))
    .find(|(p, _)| p.is_file())
    .unwrap_or_else(|| panic!("no source tests/mpi/{name}.{{c,f90,cpp}}"));
    let out = out_dir.join(name);
    let result = Command::new(compiler)
        .arg("-O2")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(libs)
        // Fortran modules (mpi_f08 programs with modules of their own) go beside the program.
        .current_dir(out_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler} (install MPICH: scripts/setup.sh): {e}"));
    assert!(
        result.status.success(),
        "{compiler} {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// A parallel-HDF5 program of `tests/mpi/` (`NAME.c`), built with `mpicc.mpich` against
/// Debian's MPICH build of HDF5 (`libhdf5-mpich-dev`: headers in
/// `/usr/include/hdf5/mpich`, `libhdf5_mpich.so` behind `…/hdf5/mpich/libhdf5.so`), as
/// `h5pcc.mpich -shlib` would: the program needs `libhdf5_mpich.so.103`, which needs
/// `libmpich.so.12` — MPI reached through a library.
pub fn compile_hdf5(name: &str, out_dir: &Path) -> PathBuf {
    let pkg = |what: &str| -> Vec<String> {
        let out = Command::new("pkg-config")
            .args([what, "hdf5-mpich"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run pkg-config (scripts/setup.sh): {e}"));
        assert!(
            out.status.success(),
            "pkg-config {what} hdf5-mpich failed (install libhdf5-mpich-dev: scripts/setup.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let cflags = pkg("--cflags-only-I");
    let mut libs = pkg("--libs-only-L");
    libs.push("-lhdf5".to_string());
    let cflags: Vec<&str> = cflags.iter().map(String::as_str).collect();
    let libs: Vec<&str> = libs.iter().map(String::as_str).collect();
    compile_mpi_linked(name, out_dir, &cflags, &libs)
}
