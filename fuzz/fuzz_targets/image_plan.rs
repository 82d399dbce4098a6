//! An image from arbitrary bytes through everything `mana_restart` does before its first
//! mapping (`mana_restart_core::fuzz`): any outcome but a panic, a crash or a hang passes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mana_restart_core::fuzz::check_image_bytes(data);
});
