//! Generation numbers belong to the checkpoint directory, not to a coordinator (issue 10,
//! item 3, first part): a new job in a directory an earlier job used numbers its
//! checkpoints above everything there and leaves the earlier generations alone; a
//! generation that exists already with a MANIFEST is never written into (that attempt
//! fails in one line), and a failed attempt's number is not used again.

use mana_tests::*;
use std::fs;

#[test]
fn a_new_job_numbers_above_the_directory_and_never_reuses_a_number() {
    // Job A: one generation in the directory.
    let a = Session::start("gen-job-a");
    let program = compile("bigmem", Build::Pie, a.dir());
    let args = ["8", "3000", "20"];
    let g1 = a.checkpoint_of(&program, &args);
    assert_eq!(generation_number(&g1), 1);
    let image1 = fs::read(rank0_image(&g1)).unwrap();
    let shared = a.ckpt_dir.clone();

    // Job B: another coordinator (its own count starts afresh), the same directory.
    let mut b = Session::start("gen-job-b");
    b.ckpt_dir = shared.clone();
    let run = b.launch(&program, &args);
    run.wait_for_stdout("ready", SHORT);
    b.wait_registered(run.pid());
    // Someone else's generation 2 appears after B registered.
    let planted = shared.join("gen-000002");
    fs::create_dir(&planted).unwrap();
    fs::write(planted.join("MANIFEST"), "{}").unwrap();

    let out = b.checkpoint_output();
    let line = refusal_line(&out, "checkpoint into an existing generation");
    assert_mentions_any(&line, &["exists already"], "existing generation");
    let g3 = b
        .checkpoint()
        .unwrap_or_else(|e| panic!("the next attempt must succeed: {e}"));
    assert_eq!(
        generation_number(&g3),
        3,
        "above the directory's generations and the failed attempt's number"
    );
    assert_committed(&shared, &g3);
    assert_eq!(fs::read_to_string(planted.join("MANIFEST")).unwrap(), "{}");
    assert_eq!(
        fs::read_dir(&planted).unwrap().count(),
        1,
        "nothing added to it"
    );
    assert!(
        fs::read(rank0_image(&g1)).unwrap() == image1,
        "job A's generation 1 must be untouched"
    );
    drop(b.kill9(run));
}
