//! Process state beyond memory: open files and their offsets, threads stopped anywhere
//! (inside malloc or printf), signal handlers, the signal mask and glibc's rseq area —
//! each program checkpointed at a random instant, killed, restarted, and compared with an
//! uninterrupted run. Every program is built PIE and `-no-pie`.

use mana_tests::*;
use std::fs;
use std::path::Path;

/// launch → random instant → checkpoint → kill -9 → restart; returns the stdout of the
/// killed and of the restored process, after checking the restored one ran to a clean end
/// without starting over.
fn checkpoint_kill_restart(
    s: &Session,
    program: &Path,
    args: &[&str],
    native: &Output,
    label: &str,
) -> Vec<Vec<u8>> {
    // $ mana_launch --ckptdir ckpt PROGRAM ARGS &
    let run = s.launch(program, args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());

    // ... a random instant later: $ mana_status --checkpoint; kill -9 %1
    let mut rng = Rng::seeded(label);
    std::thread::sleep(rng.duration_upto(native.elapsed.mul_f64(0.4)));
    let gen = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen);
    let killed = s.kill9(run);
    assert_banner_once(&killed);

    // $ mana_restart ckpt
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);
    vec![killed.stdout, restored.stdout]
}

fn files_keep_their_offsets(build: Build) {
    let s = Session::start(&format!("files-{}", build.name()));
    let files = compile("files", build, s.dir());
    let input = s.dir().join("input.bin");
    let mut rng = 0x1234_5678_9abc_def1_u64;
    let bytes: Vec<u8> = (0..40_000)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    fs::write(&input, bytes).unwrap();
    let native_out = s.dir().join("native.out");
    let native = native_run(
        &files,
        &[native_out.to_str().unwrap(), input.to_str().unwrap(), "150"],
    );

    let out = s.dir().join("checkpointed.out");
    let pieces = checkpoint_kill_restart(
        &s,
        &files,
        &[out.to_str().unwrap(), input.to_str().unwrap(), "150"],
        &native,
        &format!("files-{}", build.name()),
    );
    assert_continues(&native.stdout, &pieces);
    assert!(
        fs::read(&out).unwrap() == fs::read(&native_out).unwrap(),
        "the file written across checkpoint, kill and restart differs from the uninterrupted run's"
    );
}

#[test]
fn files_pie_keep_their_offsets_across_restart() {
    files_keep_their_offsets(Build::Pie);
}

#[test]
fn files_no_pie_keep_their_offsets_across_restart() {
    files_keep_their_offsets(Build::NoPie);
}

fn threads_continue(build: Build) {
    let s = Session::start(&format!("threads-{}", build.name()));
    let threads = compile("threads", build, s.dir());
    let native = native_run(&threads, &["600"]);
    let pieces = checkpoint_kill_restart(
        &s,
        &threads,
        &["600"],
        &native,
        &format!("threads-{}", build.name()),
    );
    assert_continues(&native.stdout, &pieces);
}

#[test]
fn threads_pie_continue_after_restart() {
    threads_continue(Build::Pie);
}

#[test]
fn threads_no_pie_continue_after_restart() {
    threads_continue(Build::NoPie);
}

/// The rseq line is `rseq registered` natively. Under MANA it may be `rseq disabled`
/// (glibc told not to register, `glibc.pthread.rseq=0`), never `lost` — a registration
/// glibc believes in but the kernel forgot.
fn signals_keep_their_state(build: Build) {
    let s = Session::start(&format!("signals-{}", build.name()));
    let signals = compile("signals", build, s.dir());
    let native = native_run(&signals, &["100"]);
    assert!(
        native.stdout_text().contains("rseq registered\n"),
        "natively glibc registers rseq: {}",
        native.describe()
    );

    let mut pieces = checkpoint_kill_restart(
        &s,
        &signals,
        &["100"],
        &native,
        &format!("signals-{}", build.name()),
    );
    let restored = String::from_utf8(pieces.pop().unwrap()).unwrap();
    let rseq = restored
        .lines()
        .find(|l| l.starts_with("rseq "))
        .unwrap_or("(no rseq line)")
        .to_string();
    assert!(
        rseq == "rseq registered" || rseq == "rseq disabled",
        "after restart glibc's rseq area must be registered with the kernel again (or rseq disabled from the start), got {rseq:?}"
    );
    pieces.push(restored.replace(&rseq, "rseq registered").into_bytes());
    assert_continues(&native.stdout, &pieces);
}

#[test]
fn signals_pie_keep_handlers_mask_and_rseq() {
    signals_keep_their_state(Build::Pie);
}

#[test]
fn signals_no_pie_keep_handlers_mask_and_rseq() {
    signals_keep_their_state(Build::NoPie);
}

/// Legitimate layouts the image validator must accept (issue 10, item 4): an RWX JIT
/// mapping, a PROT_NONE reservation with used pages inside, a guard page, and threads
/// running on stacks in the bss and in the malloc heap when checkpointed.
#[test]
fn odd_memory_jit_reservations_and_foreign_stacks_restart() {
    let s = Session::start("odd-memory");
    let program = compile("odd_memory", Build::Pie, s.dir());
    let args = ["150", "20"];
    let native = native_run(&program, &args);
    let pieces = checkpoint_kill_restart(&s, &program, &args, &native, "odd-memory");
    assert_continues(&native.stdout, &pieces);

    let image =
        mana_image::ImageReader::open(&latest_image(&s.ckpt_dir)).unwrap_or_else(|e| panic!("{e}"));
    let h = &image.header;
    let prots: Vec<String> = h.regions.iter().map(|r| r.prot_string()).collect();
    assert!(
        prots.iter().any(|p| p.starts_with("rwx")) && prots.iter().any(|p| p.starts_with("---")),
        "the image holds an RWX and a PROT_NONE region: {prots:?}"
    );
    let named = |rsp: u64| {
        h.regions
            .iter()
            .find(|r| r.start <= rsp && rsp < r.end)
            .map(|r| r.name.clone())
    };
    let off_stack = h
        .threads
        .iter()
        .filter(|t| named(t.ctx.rsp).is_some_and(|n| n != "[stack]"))
        .count();
    assert!(
        off_stack >= 2,
        "threads saved running off [stack]: {off_stack}"
    );
}
