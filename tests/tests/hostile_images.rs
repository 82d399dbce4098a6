//! Images as hostile input (issue 10, item 4): every integer field of a real image's
//! header set in turn to hostile values, with the header and preamble checksums
//! recomputed as an attacker would, is either accepted or refused with one line — never a
//! panic, a signal death or a hang of the reader (`ImageReader::open`, which
//! `mana_restart` and `mana_inspect` share) or of `mana_inspect`; a sample of the refused
//! ones is also given to `mana_restart`, which must refuse them the same way.

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
/// long enough to be checkpointed, short enough that a restart of an accepted mutation
/// ends on its own.
fn checkpoint_threads(s: &Session) {
    let threads = compile("threads", Build::Pie, s.dir());
    s.checkpoint_of(&threads, &["1500"]);
}

#[test]
fn every_header_field_mutated_is_accepted_or_refused_never_a_crash() {
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

    let (mut accepted, mut refused, mut processes) = (0usize, 0usize, 0usize);
    for (k, path) in paths.iter().enumerate() {
        let mut header = original.clone();
        let v = match at(&mut header, path) {
            Value::Integer(i) => i.as_u64().unwrap_or_else(|| i.as_i64().unwrap() as u64),
            _ => unreachable!(),
        };
        for (j, x) in hostile(v).into_iter().enumerate() {
            *at(&mut header, path) = Value::from(x);
            write_header(&image, offset, &header);
            // In this process: a panic or a signal here fails the test run.
            match ImageReader::open(&image) {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
            // Every 40th mutation also through the programs, as a user would run them.
            if (k * 13 + j) % 40 == 0 {
                processes += 1;
                let what = format!("{} = {x:#x} (was {v:#x})", describe(&original, path));
                let out = s.run("mana_inspect", &[image.to_str().unwrap()], SHORT);
                assert!(
                    out.status.signal().is_none() && matches!(out.status.code(), Some(0 | 1)),
                    "mana_inspect, {what}: {}",
                    out.describe()
                );
                if !out.status.success() {
                    let line = refusal_line(&out, &format!("mana_inspect, {what}"));
                    assert!(
                        line.contains("mana_inspect"),
                        "mana_inspect, {what}: {line:?}"
                    );
                    fix_manifest(&image);
                    let out = s.restart(&dir).wait_output(SHORT);
                    let line = refusal_line(&out, &format!("mana_restart, {what}"));
                    assert!(
                        out.stdout.is_empty() && line.contains(image.to_str().unwrap()),
                        "mana_restart, {what}: must refuse naming the image: {}",
                        out.describe()
                    );
                }
            }
        }
    }
    eprintln!(
        "{} integer fields, {} mutations: {accepted} accepted, {refused} refused; {processes} also through mana_inspect",
        paths.len(),
        accepted + refused
    );
    assert!(
        refused > accepted / 4,
        "most hostile values must be refused: {accepted} accepted, {refused} refused"
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
