//! The committed generator inputs and output are current: the export list matches the
//! installed MPICH, the spec matches pympistandard, the C source matches the generator.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn export_list_matches_the_installed_libmpich() {
    let out = Command::new("bash")
        .arg(root().join("gen/exports.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen/exports.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(root().join("spec/libmpich.so.12.exports")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        committed,
        "spec/libmpich.so.12.exports is stale: bash mpi-wrappers/gen/exports.sh > mpi-wrappers/spec/libmpich.so.12.exports"
    );
}

#[test]
fn wrappers_c_is_what_the_generator_makes() {
    let st = Command::new("python3")
        .arg(root().join("gen/generate.py"))
        .arg("--check")
        .status()
        .unwrap();
    assert!(
        st.success(),
        "generated/wrappers.c is stale: python3 mpi-wrappers/gen/generate.py"
    );
}

#[test]
fn spec_is_what_pympistandard_gives() {
    let st = Command::new("python3")
        .arg(root().join("gen/derive_spec.py"))
        .arg("--check")
        .status()
        .unwrap();
    assert!(
        st.success(),
        "spec/mpi-5.0-iso-c.txt is stale (or pympistandard is missing: setup.sh installs it)"
    );
}

#[test]
fn wrapper_library_exports_exactly_what_libmpich_exports() {
    let names = |lib: &Path| -> Vec<String> {
        let out = Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(lib)
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let ours = names(&Path::new(mana_mpi_wrappers::LIB_DIR).join("libmpich.so.12"));
    let real = names(Path::new("/usr/lib/x86_64-linux-gnu/libmpich.so.12"));
    let missing: Vec<&String> = real.iter().filter(|n| !ours.contains(n)).collect();
    let extra: Vec<&String> = ours.iter().filter(|n| !real.contains(n)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:?}\nextra: {extra:?}"
    );
}

/// In every generated wrapper, what depends on the lower half — a handle's real value, a
/// weights sentinel's lower address — is computed after `mana_gate_enter()`: a thread held
/// at a collective's entry or parked at the gate may go on in a restarted process with a
/// new lower half. (The weights were once translated before the hold: a rank restarted
/// from there handed the old lower half's MPI_UNWEIGHTED to the new one, SIGSEGV — MPICH's
/// suite, f90/topo/dgraph_unwgtf90.)
#[test]
fn lower_values_are_taken_while_holding_the_gate() {
    let text = std::fs::read_to_string(root().join("generated/wrappers.c")).unwrap();
    let mut bad = Vec::new();
    for body in text.split("__attribute__((used)) static ").skip(1) {
        let name = body.split('(').next().unwrap_or("").to_string();
        let Some(gate) = body.find("mana_gate_enter();") else {
            continue;
        };
        for lower in ["mana_translate_weights(", "mana_h_real(", "mana_lower_fn("] {
            if body[..gate].contains(lower) {
                bad.push(format!("{name}: {lower}…) before mana_gate_enter()"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
