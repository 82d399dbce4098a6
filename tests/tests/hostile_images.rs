//! Images as hostile input (issue 10, item 4): every integer field of a real image's
//! header set in turn to hostile values, with the header and preamble checksums
//! recomputed as an attacker would, is refused — by the header's validation, by the
//! copies the runtime saved in memory (a digest of the header, each thread's registers),
//! by the mapped files' content hashes, or by the region checksums, which cover each
//! region's description — never a panic, a signal death or a hang of the reader
//! (`ImageReader::open`, which `mana_restart` and `mana_inspect` share); a sample goes
//! through `mana_inspect` and `mana_restart`, which refuse in one line naming the image.

use mana_image::{checksum, ImageReader, PREAMBLE_LEN};
use mana_tests::*;
use rmpv::Value;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

/// Index paths (map entry or array element, level by level) of every integer in `v`.
fn integer_paths(v: &Value, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    match v {
        Value::Integer(_) => out.push(path.clone()),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(i);
                integer_paths(x, path, out);
                path.pop();
            }
        }
        Value::Map(m) => {
            for (i, (_, x)) in m.iter().enumerate() {
                path.push(i);
                integer_paths(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[usize]) -> &'a mut Value {
    match (v, path.split_first()) {
        (v, None) => v,
        (Value::Array(a), Some((&i, rest))) => at(&mut a[i], rest),
        (Value::Map(m), Some((&i, rest))) => at(&mut m[i].1, rest),
        _ => unreachable!("paths come from integer_paths"),
    }
}

/// Field names along `path`, for messages (`regions.3.extents.0.first_page`).
fn describe(v: &Value, path: &[usize]) -> String {
    let mut names = Vec::new();
    let mut cur = v;
    for &i in path {
        cur = match cur {
            Value::Array(a) => {
                names.push(i.to_string());
                &a[i]
            }
            Value::Map(m) => {
                names.push(m[i].0.as_str().unwrap_or("?").to_string());
                &m[i].1
            }
            _ => break,
        };
    }
    names.join(".")
}

/// The hostile values for a field holding `v`.
fn hostile(v: u64) -> Vec<u64> {
    let mut out = vec![
        0,
        1,
        1 << 63,
        u64::MAX,
        v.wrapping_add(4096),
        v.wrapping_sub(4096),
        v.wrapping_mul(2).wrapping_add(1),
    ];
    out.extend([0, 12, 31, 47, 63].map(|b| v ^ (1u64 << b)));
    out.retain(|&x| x != v);
    out.sort_unstable();
    out.dedup();
    out
}

/// Writes `header` (encoded) as the header of `image`, whose region data ends at
/// `offset`, with the preamble's length and checksums recomputed.
fn write_header(image: &Path, offset: u64, header: &Value) {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, header).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    file.set_len(offset).unwrap();
    file.write_all_at(&bytes, offset).unwrap();
    let mut pre = [0u8; PREAMBLE_LEN];
    file.read_exact_at(&mut pre, 0).unwrap();
    pre[24..32].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    pre[32..40].copy_from_slice(&checksum(&bytes).to_le_bytes());
    let sum = checksum(&pre[0..40]);
    pre[40..48].copy_from_slice(&sum.to_le_bytes());
    file.write_all_at(&pre, 0).unwrap();
}

/// The checkpoint directory `dir` with its MANIFEST updated to `image`'s new header
/// checksum (as an attacker who rewrote the header would).
fn fix_manifest(image: &Path) {
    let mut pre = [0u8; PREAMBLE_LEN];
    fs::File::open(image)
        .unwrap()
        .read_exact_at(&mut pre, 0)
        .unwrap();
    let sum = u64::from_le_bytes(pre[32..40].try_into().unwrap());
    let manifest = image.parent().unwrap().join("MANIFEST");
    let mut m: mana_image::Manifest =
        serde_json::from_str(&fs::read_to_string(&manifest).unwrap()).unwrap();
    for e in m.images.iter_mut() {
        e.header_checksum = sum;
    }
    fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

/// A committed checkpoint of `threads` in the session's directory: about 4 s of work,
/// long enough to be checkpointed, short enough that a restart that went wrong
/// ends on its own.
fn checkpoint_threads(s: &Session) {
    let threads = compile("threads", Build::Pie, s.dir());
    s.checkpoint_of(&threads, &["1500"]);
}

#[test]
fn every_header_field_mutated_is_refused_never_a_crash() {
    let s = Session::start("hostile-images");
    checkpoint_threads(&s);

    let dir = s.dir().join("mutated");
    copy_tree(&s.ckpt_dir, &dir);
    let image = latest_image(&dir);
    fs::set_permissions(&image, fs::Permissions::from_mode(0o600)).unwrap();
    let mut pre = [0u8; PREAMBLE_LEN];
    fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut pre, 0)
        .unwrap();
    let offset = u64::from_le_bytes(pre[16..24].try_into().unwrap());
    let len = u64::from_le_bytes(pre[24..32].try_into().unwrap());
    let mut raw = vec![0u8; len as usize];
    fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut raw, offset)
        .unwrap();
    let original = rmpv::decode::read_value(&mut &raw[..]).unwrap();
    let mut paths = Vec::new();
    integer_paths(&original, &mut Vec::new(), &mut paths);
    assert!(
        paths.len() > 200,
        "a real header has hundreds of integers, found {}",
        paths.len()
    );

    // The unmodified header, re-encoded, is accepted.
    write_header(&image, offset, &original);
    ImageReader::open(&image).unwrap_or_else(|e| panic!("the real header must be accepted: {e}"));

    // Each mutation goes through everything a restart checks before it resumes the
    // program: the header (ImageReader::open: fields, the digest and thread records
    // saved in memory), the mapped files (files::verify) and the data (verify_data, as
    // the restarter's reads do region by region). Every one must be refused by one of
    // them: a single changed field that passes all three would be restored as a process
    // other than the one checkpointed.
    let (mut at_open, mut at_files, mut at_data, mut processes) = (0usize, 0, 0, 0);
    let mut passed = Vec::new();
    for (k, path) in paths.iter().enumerate() {
        let mut header = original.clone();
        let v = match at(&mut header, path) {
            Value::Integer(i) => i.as_u64().unwrap_or_else(|| i.as_i64().unwrap() as u64),
            _ => unreachable!(),
        };
        for (j, x) in hostile(v).into_iter().enumerate() {
            *at(&mut header, path) = Value::from(x);
            write_header(&image, offset, &header);
            let what = format!("{} = {x:#x} (was {v:#x})", describe(&original, path));
            // In this process: a panic or a signal here fails the test run.
            match ImageReader::open(&image) {
                Err(_) => at_open += 1,
                Ok(r) => {
                    if mana_image::files::verify(&r.header, &image).is_err() {
                        at_files += 1;
                    } else if r.verify_data().is_err() {
                        at_data += 1;
                    } else {
                        passed.push(what.clone());
                    }
                }
            }
            // Every 40th mutation also through the programs, as a user would run them:
            // each refuses in one line naming the image, and the program does not run.
            if (k * 13 + j) % 40 == 0 {
                processes += 1;
                let out = s.run("mana_inspect", &[image.to_str().unwrap()], SHORT);
                assert!(
                    out.status.signal().is_none() && out.status.code() == Some(1),
                    "mana_inspect, {what}: {}",
                    out.describe()
                );
                let line = refusal_line(&out, &format!("mana_inspect, {what}"));
                assert!(
                    line.contains("mana_inspect") && line.contains(image.to_str().unwrap()),
                    "mana_inspect, {what}: {line:?}"
                );
                fix_manifest(&image);
                let out = s.restart(&dir).wait_output(SHORT);
                assert!(
                    out.status.signal().is_none(),
                    "mana_restart, {what}: {}",
                    out.describe()
                );
                let line = refusal_line(&out, &format!("mana_restart, {what}"));
                assert!(
                    out.stdout.is_empty() && line.contains(image.to_str().unwrap()),
                    "mana_restart, {what}: must refuse naming the image: {}",
                    out.describe()
                );
            }
        }
    }
    eprintln!(
        "{} integer fields, {} mutations: refused by the header check {at_open}, by the \
         mapped files {at_files}, by the data {at_data}; {processes} also through \
         mana_inspect and mana_restart",
        paths.len(),
        at_open + at_files + at_data + passed.len()
    );
    assert!(
        passed.is_empty(),
        "{} mutations pass every check, e.g. {:?}",
        passed.len(),
        &passed[..passed.len().min(5)]
    );

    // Known attacks, each refused.
    for (what, field, value) in [
        ("an extent at page 2^64-1", "first_page", u64::MAX),
        ("a region ending before it starts", "end", 4096),
        ("the restart mailbox at 0", "restart_mailbox", 0),
    ] {
        let path = paths
            .iter()
            .find(|p| describe(&original, p).ends_with(field))
            .unwrap_or_else(|| panic!("no field {field}"));
        let mut header = original.clone();
        *at(&mut header, path) = Value::from(value);
        write_header(&image, offset, &header);
        let err = ImageReader::open(&image)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(err.to_string().contains("invalid"), "{what}: {err}");
    }
}

/// `mana_inspect DIR | head -0`: the reader is gone before the first line; `mana_inspect`
/// stops quietly (status 141, as a tool killed by SIGPIPE) instead of panicking on the
/// closed pipe.
#[test]
fn mana_inspect_stops_quietly_when_its_reader_is_gone() {
    use std::process::Stdio;
    let s = Session::start("inspect-pipe");
    checkpoint_threads(&s);
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = s
        .command("mana_inspect")
        .arg(&s.ckpt_dir)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), out.status.signal()),
        (Some(141), None),
        "mana_inspect with its reader gone: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
