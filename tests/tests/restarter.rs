//! The restarter leaves no trace: after `mana_restart`, nothing of it — its text, data,
//! heap, stack or anything else it mapped — is in the restored process, so it is not in
//! the next generation's image either, and ckpt → restart → ckpt → … works at any depth.
//!
//! The restarter tells what it owns: at `MANA_LOG=debug` it logs each of its own mappings
//! as `restarter mapping START-END NAME` on stderr before it unmaps itself.

use mana_image::ImageReader;
use mana_tests::*;

#[test]
fn restored_process_and_next_generation_hold_nothing_of_the_restarter() {
    let s = Session::start("no-trace");
    let bigmem = compile("bigmem", Build::Pie, s.dir());
    let args = ["8", "250"];
    let native = native_run(&bigmem, &args);

    // $ mana_launch --ckptdir ckpt ./bigmem 8 250 &; mana_status --checkpoint; kill -9 %1
    let run = s.launch(&bigmem, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());
    let gen_n = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
    let killed = s.kill9(run);

    // $ MANA_LOG=debug mana_restart ckpt
    let restored = s.restart_with_env(&s.ckpt_dir, &[("MANA_LOG", "debug")]);
    restored.wait_for_stdout("", SHORT); // the program runs again
    let pid = restored.pid();
    let restarter_bin = bin("mana_restart").canonicalize().unwrap();
    let restarter_bin = restarter_bin.to_str().unwrap();
    let logged: Vec<Mapping> = restarter_mappings(&restored.stderr_text())
        .into_iter()
        .filter(|m| !m.is_kernel_special())
        .collect();
    assert!(
        logged.iter().any(|m| m.name == restarter_bin) && logged.len() >= 3,
        "the restarter must log its own mappings (`restarter mapping START-END NAME`), its text among them; stderr:\n{}",
        restored.stderr_text()
    );

    // Its mappings are gone from the restored process.
    // (`mana_restart` itself waits outside the restored process's pid namespace.)
    let maps_text =
        std::fs::read_to_string(format!("/proc/{}/maps", restored.program_pid())).unwrap();
    let maps = parse_proc_maps(&maps_text);
    for m in &maps {
        assert!(
            m.name != restarter_bin && !m.name.ends_with("/mana_restart"),
            "the restarter's binary is still mapped in the restored process: {m}\n{maps_text}"
        );
        assert!(
            !logged.iter().any(|l| l.start == m.start && l.end == m.end),
            "a mapping of the restarter survived into the restored process: {m}\n{maps_text}"
        );
    }

    // $ mana_status --checkpoint   (generation N+1, taken from the restored process)
    s.wait_registered(pid);
    let gen_n1 = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint after restart failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen_n1);
    assert!(generation_number(&gen_n1) > generation_number(&gen_n));
    let image = ImageReader::open(&rank0_image(&gen_n1)).unwrap_or_else(|e| panic!("{e}"));
    for r in &image.header.regions {
        assert!(
            r.name != restarter_bin && !r.name.ends_with("/mana_restart"),
            "generation N+1 saved the restarter's binary: {:#x}-{:#x} {}",
            r.start,
            r.end,
            r.name
        );
        if let Some(l) = logged.iter().find(|l| l.overlaps(r.start, r.end)) {
            panic!(
                "generation N+1 saved region {:#x}-{:#x} {:?} ({}), which overlaps the restarter's mapping {l}",
                r.start,
                r.end,
                r.name,
                r.kind_name()
            );
        }
    }

    let rest = restored.wait_output(LONG);
    rest.assert_success();
    assert_no_banner(&rest);
    assert_continues(&native.stdout, &[killed.stdout, rest.stdout]);
}
