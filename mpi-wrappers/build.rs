//! Compiles the generated wrappers (`generated/wrappers.c`) and the hand-written ones
//! (`src/*.c`) with gcc against MPICH's `mpi.h` into `libmpich.so.12`, placed in
//! `target/<profile>/mana-mpi/` (with a `libmpi.so.12` stub, MPICH's other soname), which
//! `mana_launch` preloads into every program it starts.

use std::path::PathBuf;
use std::process::Command;

/// The hand-written wrappers and runtime (`src/`), compiled with the generated ones.
const HAND_WRITTEN: &[&str] = &[
    "special.c",
    "handles.c",
    "gate.c",
    "p2p.c",
    "ckpt.c",
    "rebuild.c",
    "files.c",
    "mpi1.c",
    "ssend.c",
    "typecache.c",
];

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=generated/wrappers.c");
    for f in HAND_WRITTEN.iter().chain(&["mana_ops.h", "mana_wrap.h"]) {
        println!("cargo:rerun-if-changed=src/{f}");
    }
    check_lower_ids(&dir);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    let profile_dir = out
        .ancestors()
        .nth(3)
        .expect("target/<profile>")
        .to_path_buf();
    let lib_dir = profile_dir.join("mana-mpi");
    std::fs::create_dir_all(&lib_dir).unwrap();
    let cflags = Command::new("pkg-config")
        .args(["--cflags", "mpich"])
        .output()
        .expect("pkg-config (apt-get install pkg-config libmpich-dev)");
    assert!(
        cflags.status.success(),
        "pkg-config --cflags mpich failed: install libmpich-dev"
    );
    let cflags = String::from_utf8(cflags.stdout).unwrap();
    let lib = lib_dir.join("libmpich.so.12");
    let status = Command::new("gcc")
        .args([
            "-O2",
            "-fPIC",
            "-shared",
            "-fno-stack-protector",
            "-Wall",
            "-Werror",
        ])
        .args(cflags.split_whitespace())
        .arg("-I")
        .arg(dir.join("src"))
        .arg("-Wl,-soname,libmpich.so.12")
        .arg("-o")
        .arg(&lib)
        .arg(dir.join("generated/wrappers.c"))
        .args(HAND_WRITTEN.iter().map(|f| dir.join("src").join(f)))
        .status()
        .expect("run gcc");
    assert!(status.success(), "compiling the MPI wrappers failed");
    // libmpi.so.12, MPICH's other soname (a source-built MPICH, the PyPI wheel, Intel MPI):
    // an empty library with that soname that needs libmpich.so.12. mana_launch preloads
    // it, so a program or library asking for libmpi.so.12 gets it — and through it the
    // wrapper — whatever its RPATH says (a symlink would not do: the loader matches
    // requests against sonames).
    let alias = lib_dir.join("libmpi.so.12");
    let _ = std::fs::remove_file(&alias);
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libmpi.so.12"])
        .arg("-Wl,--no-as-needed")
        .arg("-Wl,-rpath,$ORIGIN")
        .arg("-o")
        .arg(&alias)
        .args(["-x", "c", "/dev/null", "-x", "none"])
        .arg(&lib)
        .status()
        .expect("run gcc");
    assert!(status.success(), "linking the libmpi.so.12 stub failed");
    println!("cargo:rustc-env=MANA_MPI_LIB_DIR={}", lib_dir.display());
}

/// The hand-written sources name lower functions by (cache slot, name) pairs — `LOWER_FN(ID,
/// "PMPI_X")`, `MANA_LOWER_FUNCTION(f, ID, "PMPI_X", …)`, `{ID, "PMPI_X"}` — and libmana
/// caches the function of each slot: one slot for two names would call the wrong one.
fn check_lower_ids(dir: &std::path::Path) {
    let mut seen: std::collections::HashMap<u32, (String, String)> = Default::default();
    for f in HAND_WRITTEN {
        let text = std::fs::read_to_string(dir.join("src").join(f)).unwrap();
        let b = text.as_bytes();
        let mut i = 0;
        while let Some(q) = text[i..].find(", \"") {
            let at = i + q;
            i = at + 3;
            let mut d = at;
            while d > 0 && b[d - 1].is_ascii_digit() {
                d -= 1;
            }
            let (Ok(id), Some(end)) = (text[d..at].parse::<u32>(), text[i..].find('"')) else {
                continue;
            };
            let name = &text[i..i + end];
            if !(name.starts_with("PMPI") || name.starts_with("MPI")) || d == at {
                continue;
            }
            let here = format!("src/{f}");
            if let Some((other, file)) = seen.get(&id) {
                assert!(
                    other == name,
                    "lower function slot {id} names both {other} ({file}) and {name} ({here})"
                );
            }
            seen.insert(id, (name.to_string(), here));
        }
    }
}
