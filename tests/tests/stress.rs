//! Long stress runs, not part of CI: `cargo test --release -p mana-tests --test stress`.

use mana_tests::*;
use std::fs;
use std::path::Path;

/// Stress, not in CI (`cargo test --release -p mana-tests --test stress`): a 4-thread
/// malloc- and printf-heavy program checkpointed 100 times in a row, then killed and
/// restarted, ends like an uninterrupted run.
#[test]
fn threads_survive_100_checkpoints_in_a_row() {
    let s = Session::start("threads-100");
    let threads = compile("threads", Build::Pie, s.dir());
    let args = ["8000"];
    let native = native_run(&threads, &args);

    let run = s.launch(&threads, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());
    let mut last = 0;
    for i in 1..=100 {
        let gen = s
            .checkpoint()
            .unwrap_or_else(|e| panic!("checkpoint {i} failed: {e}"));
        assert_committed(&s.ckpt_dir, &gen);
        let n = generation_number(&gen);
        assert!(n > last, "checkpoint {i}: LATEST did not advance");
        last = n;
    }
    let killed = s.kill9(run);
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);
    assert_continues(&native.stdout, &[killed.stdout, restored.stdout]);
}
