//! What both benchmark programs need: their command line and where the MANA commands are.

use std::path::PathBuf;

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// The directory of this benchmark's binary, where `cargo build` put the MANA commands.
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}
