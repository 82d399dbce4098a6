//! Bad input: every mistake a user, a disk or another machine can make gives a non-zero
//! exit and one error line naming the thing — never a crash, never a half-restored
//! process — and a failed checkpoint leaves the previous generation committed.

use mana_image::{ImageReader, EM_X86_64, FORMAT_VERSION};
use mana_tests::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A committed checkpoint directory of a small program (which is then killed).
fn good_checkpoint(s: &Session) -> PathBuf {
    let bigmem = compile("bigmem", Build::NoPie, s.dir());
    s.checkpoint_of(&bigmem, &["4", "300"]);
    s.ckpt_dir.clone()
}

/// `mana_restart DIR` must refuse: one line that names `names` and mentions one of
/// `words`, and nothing of the program ran.
fn restart_refuses(s: &Session, dir: &Path, names: &Path, words: &[&str], what: &str) {
    let out = s.restart(dir).wait_output(SHORT);
    let line = refusal_line(&out, what);
    assert!(
        line.contains(names.to_str().unwrap()),
        "{what}: the error line should name {}: {line:?}",
        names.display()
    );
    assert_mentions_any(&line, words, what);
    assert!(
        out.stdout.is_empty(),
        "{what}: the program must not run: {}",
        out.describe()
    );
    assert_no_banner(&out);
}

/// `mana_inspect IMAGE` must refuse the same way.
fn inspect_refuses(s: &Session, image: &Path, words: &[&str], what: &str) {
    let out = s.run("mana_inspect", &[image.to_str().unwrap()], SHORT);
    let line = refusal_line(&out, &format!("mana_inspect, {what}"));
    assert!(
        line.contains(image.to_str().unwrap()),
        "mana_inspect, {what}: should name {}: {line:?}",
        image.display()
    );
    assert_mentions_any(&line, words, &format!("mana_inspect, {what}"));
}

/// A copy of the good checkpoint directory whose latest image `damage` changed.
fn damaged_copy(
    s: &Session,
    good: &Path,
    name: &str,
    damage: impl FnOnce(&Path),
) -> (PathBuf, PathBuf) {
    let dir = s.dir().join(name);
    copy_tree(good, &dir);
    let image = latest_image(&dir);
    damage(&image);
    (dir, image)
}

#[test]
fn restart_refuses_bad_checkpoints_with_one_clear_line() {
    let s = Session::start("bad-restart");
    let good = good_checkpoint(&s);

    // The good image is readable and complete: mana_inspect lists its regions.
    let good_image = latest_image(&good);
    let header = ImageReader::open(&good_image)
        .unwrap_or_else(|e| panic!("{e}"))
        .header;
    let inspect = s.run("mana_inspect", &[good_image.to_str().unwrap()], SHORT);
    inspect.assert_success();
    let listing = inspect.stdout_text().to_ascii_lowercase();
    for r in &header.regions {
        assert!(
            listing.contains(&format!("{:x}", r.start)),
            "mana_inspect does not list region {:#x}-{:#x} {}: {}",
            r.start,
            r.end,
            r.name,
            inspect.describe()
        );
    }

    // $ mana_restart no-such-dir
    let missing = s.dir().join("no-such-ckpt");
    restart_refuses(
        &s,
        &missing,
        &missing,
        &["exist", "no such", "not found", "missing"],
        "missing directory",
    );

    // $ mana_restart empty-dir       (nothing committed: no LATEST)
    let empty = s.dir().join("empty-ckpt");
    fs::create_dir_all(&empty).unwrap();
    restart_refuses(
        &s,
        &empty,
        &empty,
        &["LATEST", "committed", "generation"],
        "no committed generation",
    );

    // A truncated image (a copy cut in half).
    let (dir, image) = damaged_copy(&s, &good, "truncated", truncate_to_half);
    restart_refuses(&s, &dir, &image, &["truncated"], "truncated image");
    inspect_refuses(&s, &image, &["truncated"], "truncated image");

    // A flipped byte in region data.
    let (dir, image) = damaged_copy(&s, &good, "bitflip", |i| {
        corrupt_region_data(i);
    });
    restart_refuses(
        &s,
        &dir,
        &image,
        &["checksum", "corrupt"],
        "checksum mismatch",
    );
    inspect_refuses(&s, &image, &["checksum", "corrupt"], "checksum mismatch");

    // Not an image at all (wrong magic).
    let (dir, image) = damaged_copy(&s, &good, "magic", |i| {
        edit_preamble(i, |p| p[0..8].copy_from_slice(b"NOTMANA\0"))
    });
    restart_refuses(
        &s,
        &dir,
        &image,
        &["magic", "not a mana image"],
        "wrong magic",
    );

    // An image of another format version (preamble checksum fixed up).
    let (dir, image) = damaged_copy(&s, &good, "version", |i| {
        edit_preamble(i, |p| {
            p[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes())
        })
    });
    restart_refuses(&s, &dir, &image, &["version"], "wrong version");
    inspect_refuses(&s, &image, &["version"], "wrong version");

    // An image of another architecture (ELF machine 183 = aarch64).
    let (dir, image) = damaged_copy(&s, &good, "arch", |i| {
        edit_preamble(i, |p| p[12..16].copy_from_slice(&183u32.to_le_bytes()))
    });
    assert_ne!(183, EM_X86_64);
    restart_refuses(
        &s,
        &dir,
        &image,
        &["machine", "architecture", "x86_64", "183"],
        "wrong architecture",
    );

    // An image that needs memory where the restarter always is (a region over the whole
    // area where the kernel puts stacks and libraries, in place of the image's own regions
    // there, and RWX so that the threads' stack and instruction pointers still pass the
    // header's validation; it keeps their stored pages, so that the runtime's thread
    // records there still match the header): the restarter re-executes itself for other
    // layouts, then gives up naming both ranges.
    let (dir, image) = damaged_copy(&s, &good, "unreservable", |i| {
        let data = fs::read(i).unwrap();
        rewrite_header(i, |h| {
            let (start, end) = (0x7e00_0000_0000, 0x7fff_f000_0000);
            let mut extents = vec![];
            let mut sum = mana_image::RegionHasher::new();
            for r in h
                .regions
                .iter()
                .filter(|r| r.start >= start && r.end <= end)
            {
                for e in &r.extents {
                    let at = e.file_offset as usize;
                    sum.update(&data[at..at + (e.pages * mana_image::PAGE_SIZE) as usize]);
                    extents.push(mana_image::Extent {
                        first_page: (r.start - start) / mana_image::PAGE_SIZE + e.first_page,
                        ..*e
                    });
                }
            }
            h.regions.retain(|r| r.end <= start || r.start >= end);
            let at = h
                .regions
                .iter()
                .position(|r| r.start >= end)
                .unwrap_or(h.regions.len());
            h.regions.insert(
                at,
                mana_image::Region {
                    start,
                    end,
                    prot: mana_image::prot::READ | mana_image::prot::WRITE | mana_image::prot::EXEC,
                    name: "forged".into(),
                    kind: mana_image::RegionKind::Anon,
                    extents,
                    checksum: sum.digest(),
                    shared_inode: 0,
                },
            )
        })
    });
    let out = s.restart(&dir).wait_output(LONG);
    let line = refusal_line(&out, "unreservable range");
    assert!(
        line.contains("0x7e0000000000-0x7ffff0000000")
            && line.contains("collides with the restarter's mapping 0x"),
        "the error should name the image range and the restarter's mapping: {line:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "unreservable range: the program must not run"
    );
    let _ = image;

    // A MANIFEST naming an image outside its generation (a restorable copy put there):
    // refused by name, never followed.
    let (dir, image) = damaged_copy(&s, &good, "manifest-escape", |i| {
        let gen = i.parent().unwrap();
        fs::copy(
            i,
            gen.parent().unwrap().parent().unwrap().join("escaped.mana"),
        )
        .unwrap();
        let path = gen.join("MANIFEST");
        let mut m: mana_image::Manifest =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        m.images[0].file = "../../escaped.mana".into();
        fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    });
    let manifest = image.parent().unwrap().join("MANIFEST");
    let words = ["not a file name inside the generation"];
    restart_refuses(
        &s,
        &dir,
        &manifest,
        &words,
        "MANIFEST naming ../../escaped.mana",
    );
    inspect_refuses(&s, &dir, &words, "MANIFEST naming ../../escaped.mana");

    // An image replaced after its generation was committed (its header differs from the
    // one the MANIFEST recorded): mana_restart and mana_inspect both refuse it.
    let (dir, image) = damaged_copy(&s, &good, "replaced", |i| {
        let path = i.parent().unwrap().join("MANIFEST");
        let recorded = fs::read(&path).unwrap();
        rewrite_header(i, |h| h.created_unix_ns ^= 1);
        fs::write(&path, recorded).unwrap();
    });
    let words = ["does not match the MANIFEST"];
    restart_refuses(&s, &dir, &image, &words, "image replaced after the commit");
    inspect_refuses(&s, &dir, &words, "image replaced after the commit");

    // The good directory is untouched by all this and still restarts.
    let restored = s.restart(&good).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);

    // The program changed since the checkpoint (rebuilt, here one byte longer): its code
    // in the image would not match the file mapped again. One line naming the program.
    let program = compile("bigmem", Build::NoPie, s.dir());
    let mut bytes = fs::read(&program).unwrap();
    bytes.push(0);
    fs::write(&program, bytes).unwrap();
    restart_refuses(&s, &good, &program, &["changed"], "changed program");
    assert!(latest_image(&good).exists(), "the image is kept");
}

#[test]
fn status_without_a_reachable_coordinator_fails_with_one_line() {
    let s = Session::start("unreachable");
    let stale = s.dir().join("stale-status");
    fs::copy(&s.status_file, &stale).unwrap();
    let port = status_file_port(&fs::read_to_string(&stale).unwrap());
    // $ mana_status --quit      (the coordinator is gone; the stale status file remains)
    s.quit().assert_success();

    for cmd in ["--list", "--checkpoint"] {
        let out = s.run(
            "mana_status",
            &["--status-file", stale.to_str().unwrap(), cmd],
            SHORT,
        );
        let line = refusal_line(&out, &format!("mana_status {cmd} without a coordinator"));
        let port = port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "coordinator".into());
        assert_mentions_any(&line, &[&port, "coordinator"], "unreachable coordinator");
    }
}

/// A stranger who has everything but the job's secret can neither kill nor checkpoint
/// the job; the job runs on undisturbed.
#[test]
fn status_with_a_wrong_secret_is_refused_and_the_job_runs_on() {
    let s = Session::start("wrong-secret");
    let bigmem = compile("bigmem", Build::Pie, s.dir());
    let args = ["4", "100"];
    let native = native_run(&bigmem, &args);
    let run = s.launch(&bigmem, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());

    let forged = s.dir().join("forged-status");
    forge_secret(&s.status_file, &forged);
    for cmd in ["--kill", "--checkpoint"] {
        let out = s.run(
            "mana_status",
            &["--status-file", forged.to_str().unwrap(), cmd],
            SHORT,
        );
        let line = refusal_line(&out, &format!("mana_status {cmd} with a wrong secret"));
        assert_mentions_any(&line, &["secret", "auth"], "wrong secret");
    }

    let done = run.wait_output(LONG);
    done.assert_success();
    assert_eq!(
        done.stdout_text(),
        native.stdout_text(),
        "the job must run on undisturbed"
    );
    assert_eq!(
        latest_generation(&s.ckpt_dir),
        None,
        "no checkpoint may have been taken"
    );
}

/// A checkpoint onto a full disk fails with one line; LATEST still names the previous
/// generation, whose image is intact, and the process runs on to the right output.
#[test]
fn failed_checkpoint_keeps_the_previous_generation_and_the_process_runs_on() {
    assert!(
        is_root(),
        "this test mounts a small tmpfs and needs root (CI runs as root)"
    );
    let mut s = Session::start("disk-full");
    let disk = Tmpfs::mount(&s.dir().join("small-disk"), "256m");
    s.ckpt_dir = disk.path().join("ckpt");
    let bigmem = compile("bigmem", Build::Pie, s.dir());
    let args = ["16", "300"];
    let native = native_run(&bigmem, &args);

    let run = s.launch(&bigmem, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());
    let first = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("first checkpoint failed: {e}"));
    assert_committed(&s.ckpt_dir, &first);

    // The disk now has room for half a generation more.
    let used = disk_usage(disk.path());
    disk.resize_kib((used * 3 / 2).div_ceil(1 << 20) * 1024);

    // $ mana_status --checkpoint     (disk full)
    let out = s.checkpoint_output();
    let line = refusal_line(&out, "checkpoint onto a full disk");
    assert_mentions_any(
        &line,
        &["space", "full", "ENOSPC"],
        "checkpoint onto a full disk",
    );
    assert_committed(&s.ckpt_dir, &first);
    ImageReader::open(&rank0_image(&first))
        .and_then(|r| r.verify_data())
        .unwrap_or_else(|e| panic!("the previous generation must be intact: {e}"));

    let done = run.wait_output(LONG);
    done.assert_success();
    assert_banner_once(&done);
    assert_eq!(
        done.stdout_text(),
        native.stdout_text(),
        "the process must run on after a failed checkpoint"
    );
    // Quiet by default: the runtime said nothing on the program's stderr (only the
    // program's banner is there); the failure is in the job's runtime log.
    let said: Vec<String> = done
        .stderr_text()
        .lines()
        .filter(|l| !l.starts_with("BANNER "))
        .map(str::to_string)
        .collect();
    assert!(
        said.is_empty(),
        "the runtime wrote to the program's stderr: {said:?}"
    );
    let mut log_path = s.status_file.as_os_str().to_os_string();
    log_path.push(".runtime.log"); // mana_coordinator::runtime_log_path
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        log.contains("checkpoint failed"),
        "the job's runtime log must tell of the failed checkpoint: {log:?}"
    );
    // `disk` is unmounted before the session's directory is removed (reverse declaration order).
}

#[test]
fn launch_refuses_a_static_binary() {
    let s = Session::start("static");
    let hello = compile("static_hello", Build::Static, s.dir());
    let out = s.launch(&hello, &[]).wait_output(SHORT);
    let line = refusal_line(&out, "mana_launch of a static binary");
    let name = hello.file_name().unwrap().to_str().unwrap();
    assert!(
        line.contains(name),
        "the error line should name the program {name}: {line:?}"
    );
    assert_mentions_any(&line, &["static"], "static binary");
    assert!(
        out.stdout.is_empty(),
        "the static program must not run: {}",
        out.describe()
    );
}
