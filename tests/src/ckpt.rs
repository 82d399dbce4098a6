//! Checkpoint directories, images, status files and memory maps: reading them, and
//! damaging copies of them the way a full disk, a bit flip, another machine or a
//! stranger would.

use mana_image::{checksum, encode_header, ImageHeader, ImageReader, Manifest, PREAMBLE_LEN};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The generation `CKPT/LATEST` names (`gen-NNNNNN`), if there is a LATEST.
pub fn latest_generation(ckpt_dir: &Path) -> Option<String> {
    fs::read_to_string(ckpt_dir.join("LATEST"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// `N` of a `gen-NNNNNN` directory.
pub fn generation_number(gen_dir: &Path) -> u64 {
    let name = gen_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.strip_prefix("gen-")
        .filter(|d| d.len() == 6)
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{} is not named gen-NNNNNN", gen_dir.display()))
}

/// The image of the one process of a non-MPI job (rank 0) in a generation directory.
pub fn rank0_image(gen_dir: &Path) -> PathBuf {
    gen_dir.join(mana_image::ckptdir::image_name(0))
}

/// The rank-0 image of the generation `CKPT/LATEST` names.
pub fn latest_image(ckpt_dir: &Path) -> PathBuf {
    let gen = latest_generation(ckpt_dir)
        .unwrap_or_else(|| panic!("{} has no LATEST", ckpt_dir.display()));
    rank0_image(&ckpt_dir.join(gen))
}

/// Asserts that `gen_dir` is a committed generation: `LATEST` names it and it holds a
/// MANIFEST and an image.
pub fn assert_committed(ckpt_dir: &Path, gen_dir: &Path) {
    let name = gen_dir.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        latest_generation(ckpt_dir).as_deref(),
        Some(name.as_str()),
        "LATEST of {} must name the generation just committed",
        ckpt_dir.display()
    );
    assert_eq!(
        gen_dir.parent(),
        Some(ckpt_dir),
        "{} is not inside {}",
        gen_dir.display(),
        ckpt_dir.display()
    );
    assert!(
        gen_dir.join("MANIFEST").is_file(),
        "{} has no MANIFEST",
        gen_dir.display()
    );
    assert!(
        rank0_image(gen_dir).is_file(),
        "{} has no {}",
        gen_dir.display(),
        mana_image::ckptdir::image_name(0)
    );
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Bytes of disk the files under `dir` occupy (allocated blocks, so sparse files count
/// for what they really use).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// Changes the image's 64-byte preamble with `edit` and then recomputes the preamble
/// checksum (bytes 40..48: xxh3-64 of bytes 0..40), so that only the edited field is
/// wrong — as in an image written by another version or on another machine.
pub fn edit_preamble(image: &Path, edit: impl FnOnce(&mut [u8])) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut pre = [0u8; PREAMBLE_LEN];
    file.read_exact_at(&mut pre, 0).unwrap();
    edit(&mut pre);
    let sum = checksum(&pre[0..40]);
    pre[40..48].copy_from_slice(&sum.to_le_bytes());
    file.write_all_at(&pre, 0).unwrap();
}

/// Flips one byte inside the stored data of the image's largest region; returns the
/// region's description.
pub fn corrupt_region_data(image: &Path) -> String {
    let reader =
        ImageReader::open(image).unwrap_or_else(|e| panic!("the good image must open: {e}"));
    let region = reader
        .header
        .regions
        .iter()
        .filter(|r| !r.extents.is_empty())
        .max_by_key(|r| r.stored_bytes())
        .expect("an image stores some region data")
        .clone();
    let offset = region.extents[0].file_offset + 1234;
    drop(reader);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    file.write_all_at(&b, offset).unwrap();
    format!("{:#x}-{:#x} {}", region.start, region.end, region.name)
}

/// Rewrites the image's header with `edit` applied, keeping it self-consistent (preamble
/// length and checksum, and the MANIFEST entry's header checksum) — as a header written by
/// a buggy or foreign writer would be: only the edited content is wrong.
pub fn rewrite_header(image: &Path, edit: impl FnOnce(&mut ImageHeader)) {
    let reader =
        ImageReader::open(image).unwrap_or_else(|e| panic!("the good image must open: {e}"));
    let mut header = reader.header.clone();
    drop(reader);
    edit(&mut header);
    let bytes = encode_header(&header);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut pre = [0u8; PREAMBLE_LEN];
    file.read_exact_at(&mut pre, 0).unwrap();
    let offset = u64::from_le_bytes(pre[16..24].try_into().unwrap());
    file.write_all_at(&bytes, offset).unwrap();
    file.set_len(offset + bytes.len() as u64).unwrap();
    drop(file);
    let sum = checksum(&bytes);
    edit_preamble(image, |p| {
        p[24..32].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        p[32..40].copy_from_slice(&sum.to_le_bytes());
    });
    let manifest_path = image.parent().unwrap().join("MANIFEST");
    let mut m: Manifest =
        serde_json::from_str(&fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let name = image.file_name().unwrap().to_str().unwrap();
    for e in m.images.iter_mut().filter(|e| e.file == name) {
        e.header_checksum = sum;
    }
    fs::write(&manifest_path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

/// Cuts the image to half its length.
pub fn truncate_to_half(image: &Path) {
    let file = fs::OpenOptions::new().write(true).open(image).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
}

/// One mapping of an address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Path, `[heap]`, `[stack]`, `[vdso]`…, or empty for anonymous memory.
    pub name: String,
}

impl Mapping {
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }

    /// Mappings the kernel gives every process (`[vdso]`, `[vvar]`, `[vsyscall]`…):
    /// not the restarter's own, and `[vsyscall]` is at the same address in every process.
    pub fn is_kernel_special(&self) -> bool {
        matches!(
            self.name.as_str(),
            "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
        )
    }
}

impl std::fmt::Display for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}-{:x} {}", self.start, self.end, self.name)
    }
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok();
    Some((hex(a)?, hex(b)?))
}

/// Parses `/proc/PID/maps`.
pub fn parse_proc_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            // start-end perms offset dev inode [name]
            let mut rest = line;
            let mut fields = Vec::new();
            for _ in 0..5 {
                let t = rest.trim_start();
                let end = t.find(char::is_whitespace).unwrap_or(t.len());
                fields.push(&t[..end]);
                rest = &t[end..];
            }
            let (start, end) = parse_range(fields[0])?;
            Some(Mapping {
                start,
                end,
                name: rest.trim().to_string(),
            })
        })
        .collect()
}

/// The restarter's own mappings, from its `MANA_LOG=debug` log: lines containing
/// `restarter mapping START-END NAME` (hex addresses, `0x` optional, NAME possibly empty).
pub fn restarter_mappings(log: &str) -> Vec<Mapping> {
    const KEY: &str = "restarter mapping ";
    strip_ansi(log)
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find(KEY)? + KEY.len()..];
            let rest = rest.trim_start();
            let (range, name) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let (start, end) = parse_range(range)?;
            Some(Mapping {
                start,
                end,
                name: name.trim().to_string(),
            })
        })
        .collect()
}

/// Removes terminal colour sequences (`ESC [ … letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes to `dest` a copy of the status file whose secret differs in one character —
/// what a stranger who guessed everything but the secret would present. Works for any
/// text format that has the word `secret` followed by separators and the value.
pub fn forge_secret(status_file: &Path, dest: &Path) {
    let text = fs::read_to_string(status_file).unwrap();
    let lower = text.to_ascii_lowercase();
    let at = lower.find("secret").unwrap_or_else(|| {
        panic!(
            "no secret in the status file {}:\n{text}",
            status_file.display()
        )
    });
    let mut i = at + "secret".len();
    let bytes = text.as_bytes();
    while i < bytes.len() && matches!(bytes[i], b'"' | b'\'' | b' ' | b'\t' | b':' | b'=') {
        i += 1;
    }
    assert!(
        i < bytes.len() && bytes[i].is_ascii_alphanumeric(),
        "cannot find the secret's value in the status file {}:\n{text}",
        status_file.display()
    );
    let mut forged = text.into_bytes();
    forged[i] = if forged[i] == b'a' { b'b' } else { b'a' };
    fs::write(dest, forged).unwrap();
    // As private as a real one (a readable status file is warned about).
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o600)).unwrap();
}

/// The coordinator's port as the status file records it (after the word `port`, or as
/// `host:PORT`), if it can be found.
pub fn status_file_port(text: &str) -> Option<u16> {
    let lower = text.to_ascii_lowercase();
    let digits_at = |s: &str| -> Option<u16> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok().filter(|p| *p > 0)
    };
    if let Some(at) = lower.find("port") {
        let after = &text[at + 4..];
        let skip = after.find(|c: char| c.is_ascii_digit())?;
        if skip <= 4 {
            return digits_at(&after[skip..]);
        }
    }
    text.match_indices(':').find_map(|(i, _)| {
        let d = &text[i + 1..];
        let n = d.chars().take_while(char::is_ascii_digit).count();
        if (2..=5).contains(&n) {
            digits_at(d)
        } else {
            None
        }
    })
}

/// Whether this test runs as root (needed to mount a small tmpfs).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A tmpfs mounted for one test (a disk that can be made full), unmounted on drop.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=SIZE tmpfs DIR`
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        run_ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `mount -o remount,size=KiBk DIR`
    pub fn resize_kib(&self, kib: u64) {
        run_ok(
            "mount",
            &[
                "-o",
                &format!("remount,size={kib}k"),
                self.path.to_str().unwrap(),
            ],
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

fn run_ok(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_maps_and_restarter_log() {
        let maps = "55d0c0000000-55d0c0001000 r--p 00000000 fe:01 123   /usr/bin/x y (deleted)\n\
                    7ffc1000-7ffc2000 rw-p 00000000 00:00 0                          [stack]\n\
                    7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n";
        let m = parse_proc_maps(maps);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "/usr/bin/x y (deleted)");
        assert_eq!(
            (m[1].start, m[1].end, m[1].name.as_str()),
            (0x7ffc1000, 0x7ffc2000, "[stack]")
        );
        assert_eq!(m[2].name, "");
        let log = "2024 \u{1b}[34mDEBUG\u{1b}[0m mana_restart: restarter mapping 0x1000-0x3000 /work/target/release/mana_restart\n\
                   other line\nDEBUG restarter mapping 5000-6000\n";
        let r = restarter_mappings(log);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "/work/target/release/mana_restart");
        assert_eq!(
            (r[1].start, r[1].end, r[1].name.as_str()),
            (0x5000, 0x6000, "")
        );
        assert!(r[0].overlaps(0x2fff, 0x4000) && !r[0].overlaps(0x3000, 0x4000));
    }

    #[test]
    fn finds_port_and_forges_secret() {
        assert_eq!(
            status_file_port("{\"host\":\"127.0.0.1\",\"port\": 41234}"),
            Some(41234)
        );
        assert_eq!(status_file_port("MANA_COORD=127.0.0.1:7779\n"), Some(7779));
        let dir = crate::TempDir::new("forge");
        for text in [
            "{\"secret\":\"abc123\"}",
            "secret=a9\n",
            "MANA_SECRET = \"zz\"\n",
        ] {
            let f = dir.path().join("s");
            fs::write(&f, text).unwrap();
            forge_secret(&f, &dir.path().join("forged"));
            let forged = fs::read_to_string(dir.path().join("forged")).unwrap();
            assert_ne!(forged, text);
            assert_eq!(forged.len(), text.len());
        }
    }
}
