//! The committed fuzz corpus (`fuzz/corpus/image_plan.tar.xz`, grown by
//! `scripts/fuzz.sh`, unpacked here with `tar`) and seeds (`fuzz/seeds`) replayed on the
//! stable toolchain: every entry goes through everything `mana_restart`
//! does with an image before its first mapping without a panic. The entries made from
//! real images (`real-*`; the `forged` ones rewritten by the harness's attacker, which
//! for an untouched image changes nothing) must be accepted by the header and data checks
//! — the validator refuses nothing a real process holds.

use mana_restart_core::fuzz::check_image_bytes;
use std::path::Path;

#[test]
fn fuzz_corpus_replays_without_a_panic_and_real_images_pass() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let unpacked = std::env::temp_dir().join(format!("mana-fuzz-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xJf")
        .arg(fuzz.join("corpus/image_plan.tar.xz"))
        .arg("-C")
        .arg(&unpacked)
        .status()
        .expect("tar (with xz) unpacks the corpus");
    assert!(tar.success(), "tar -xJf failed");
    let mut entries: Vec<_> = [unpacked.clone(), fuzz.join("seeds")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap_or_else(|e| panic!("{}: {e}", d.display())))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let (mut real, mut opened) = (0, 0);
    for p in &entries {
        let data = std::fs::read(p).unwrap();
        let r = check_image_bytes(&data);
        opened += r.open.is_ok() as usize;
        let name = p.file_name().unwrap().to_string_lossy();
        if name.starts_with("real-") {
            real += 1;
            assert!(
                r.open.is_ok() && r.data.is_ok(),
                "{name}: a real image must pass the header and data checks: {r:?}"
            );
        }
    }
    eprintln!(
        "{} corpus entries replayed, {opened} accepted by the header check, {real} real images",
        entries.len()
    );
    let _ = std::fs::remove_dir_all(&unpacked);
    assert!(
        real >= 2 && entries.len() >= real + 1000,
        "the corpus holds real images and what fuzzing found: {} entries, {real} real",
        entries.len()
    );
}
