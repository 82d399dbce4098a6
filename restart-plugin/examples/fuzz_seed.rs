//! `cargo run --release -p mana-restart --example fuzz_seed -- IMAGE OUT`: writes the
//! compact fuzz corpus entry of a real image (`mana_restart_core::fuzz::seed_from_image`).
//! Used by `scripts/fuzz.sh --seed-from`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, out] = args.as_slice() else {
        eprintln!("usage: fuzz_seed IMAGE OUT");
        std::process::exit(2);
    };
    let bytes = std::fs::read(image).unwrap_or_else(|e| {
        eprintln!("fuzz_seed: {image}: {e}");
        std::process::exit(1)
    });
    match mana_restart_core::fuzz::seed_from_image(&bytes) {
        Ok(seed) => {
            std::fs::write(out, &seed).unwrap_or_else(|e| {
                eprintln!("fuzz_seed: {out}: {e}");
                std::process::exit(1)
            });
            println!("{out}: {} bytes", seed.len());
        }
        Err(e) => {
            eprintln!("fuzz_seed: {image}: {e}");
            std::process::exit(1)
        }
    }
}
