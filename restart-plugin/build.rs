//! Builds the final restart stage (`restorer/restorer.rs`) as a freestanding static-pie
//! ELF with rustc; `mana_restart` embeds it (`include_bytes!`) and loads it itself.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let src =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("restorer/restorer.rs");
    println!("cargo:rerun-if-changed=restorer/restorer.rs");
    println!("cargo:rerun-if-changed=src/plan.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let bin = out.join("mana_restorer");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "mana_restorer",
        ])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=2",
            "-C",
            "relocation-model=pie",
        ])
        .args(["-C", "debuginfo=0", "-C", "codegen-units=1"])
        .args([
            "-C",
            "link-arg=-nostartfiles",
            "-C",
            "link-arg=-nostdlib",
            "-C",
            "link-arg=-static-pie",
        ])
        .args([
            "-C",
            "link-arg=-Wl,-e,mana_restorer_main",
            "-C",
            "link-arg=-Wl,-z,norelro",
        ])
        .args(["-C", "link-arg=-Wl,--build-id=none"])
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run rustc for the restorer");
    assert!(status.success(), "building the restorer failed");
}
