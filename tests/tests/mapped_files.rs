//! The files a process maps privately (its program and libraries) are identified by their
//! contents (issue 10, item 4): an image records each mapped range's size and SHA-256, and
//! `mana_restart` and `mana_inspect` check them before anything is mapped. A node with its
//! own copy of a library (another inode, another mtime, the same bytes) restarts; a
//! program patched in place with its mtime put back is refused in one line, and the image
//! is kept so the original file brings the job back.

use mana_tests::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `libuser` against its own `lib/libstep.so` (rpath), in `dir`.
fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let src = c_source_dir();
    let lib_dir = dir.join("lib");
    fs::create_dir_all(&lib_dir).unwrap();
    let lib = lib_dir.join("libstep.so");
    let program = dir.join("libuser");
    let gcc = |args: Vec<String>| {
        let out = Command::new("gcc").args(&args).output().expect("gcc");
        assert!(
            out.status.success(),
            "gcc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    gcc(vec![
        "-O2".into(),
        "-shared".into(),
        "-fPIC".into(),
        "-o".into(),
        lib.display().to_string(),
        src.join("libstep.c").display().to_string(),
    ]);
    gcc(vec![
        "-O2".into(),
        "-o".into(),
        program.display().to_string(),
        src.join("libuser.c").display().to_string(),
        format!("-L{}", lib_dir.display()),
        "-lstep".into(),
        format!("-Wl,-rpath,{}", lib_dir.display()),
    ]);
    (program, lib)
}

/// Replaces `path` by a copy of itself: a new inode and mtime, the same bytes (what a
/// node with its own copy of the file has).
fn replace_by_copy(path: &Path) {
    let before = fs::metadata(path).unwrap().ino();
    let tmp = path.with_extension("copy");
    fs::copy(path, &tmp).unwrap();
    fs::rename(&tmp, path).unwrap();
    assert_ne!(fs::metadata(path).unwrap().ino(), before);
}

/// Changes one byte of `path` in place (same inode) inside its first mapped page and
/// puts its mtime back; returns the original byte.
fn patch_in_place(path: &Path, at: u64, byte: u8) -> u8 {
    use std::os::unix::fs::FileExt;
    let md = fs::metadata(path).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut old = [0u8];
    f.read_exact_at(&mut old, at).unwrap();
    f.write_all_at(&[byte], at).unwrap();
    f.set_modified(md.modified().unwrap()).unwrap();
    drop(f);
    let after = fs::metadata(path).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
        (md.ino(), md.len(), md.mtime(), md.mtime_nsec()),
        "the patch keeps inode, size and mtime"
    );
    old[0]
}

/// One error line naming `file` and saying it changed.
fn refused(out: &Output, file: &Path, what: &str) {
    let line = refusal_line(out, what);
    assert!(
        line.contains(file.to_str().unwrap()) && line.contains("changed"),
        "{what}: the line should name {} and say it changed: {line:?}",
        file.display()
    );
}

#[test]
fn a_copied_library_restarts_and_a_patched_program_is_refused() {
    let s = Session::start("mapped-files");
    let (program, lib) = build(s.dir());
    let args = ["150", "20"];
    let native = native_run(&program, &args);

    // $ mana_launch --ckptdir ckpt ./libuser 150 20 &; mana_status --checkpoint; kill -9
    let run = s.launch(&program, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());
    let gen = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen);
    let killed = s.kill9(run);
    let image = rank0_image(&gen);
    let header = mana_image::ImageReader::open(&image)
        .unwrap_or_else(|e| panic!("{e}"))
        .header;
    let lib_path = lib.canonicalize().unwrap();
    assert!(
        header.regions.iter().any(|r| matches!(&r.kind,
            mana_image::RegionKind::FilePrivate(id) if Path::new(&id.path) == lib_path)),
        "the image maps {} privately",
        lib_path.display()
    );

    // The program patched in place, mtime put back: refused by both, before anything runs.
    let patched = patch_in_place(&program, 9, 0x5a); // e_ident padding: mapped, unused
    let out = s.restart(&s.ckpt_dir).wait_output(SHORT);
    refused(&out, &program, "restart of a patched program");
    assert!(
        out.stdout.is_empty(),
        "the program must not run: {}",
        out.describe()
    );
    assert_no_banner(&out);
    let out = s.run("mana_inspect", &[s.ckpt_dir.to_str().unwrap()], SHORT);
    refused(&out, &program, "mana_inspect of a patched program");
    patch_in_place(&program, 9, patched);

    // A copy of the library and of the program, as on a node with its own files.
    replace_by_copy(&lib);
    replace_by_copy(&program);
    let inspect = s.run("mana_inspect", &[s.ckpt_dir.to_str().unwrap()], SHORT);
    inspect.assert_success();
    assert!(
        inspect
            .stdout_text()
            .contains("have the checkpoint's contents"),
        "{}",
        inspect.describe()
    );
    let restored = s.restart(&s.ckpt_dir).wait_output(LONG);
    restored.assert_success();
    assert_no_banner(&restored);
    assert_continues(
        &native.stdout,
        &[killed.stdout.clone(), restored.stdout.clone()],
    );
}
