//! Files without a name (memfd, files deleted while open) made again with their contents
//! (issue 11, item 2; docs/process-state.md "Files without a name").

use mana_image::{FileKind, ImageHeader, UnlinkedState};
use std::collections::HashMap;
use std::ffi::CString;
use tracing::info;

fn os_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Makes each file once — a memfd of the same name and seals, or an unnamed file
/// (`O_TMPFILE`) in the directory the deleted file was in (in memory if that is not
/// possible) — with its contents and permissions, maps it where the process mapped it
/// shared, and returns its descriptor (moved to `above` or higher) by file number.
pub fn make(h: &ImageHeader, above: i32) -> Result<HashMap<u64, i32>, String> {
    let mut made = HashMap::new();
    for f in &h.files {
        let FileKind::Unlinked(u) = &f.kind else {
            continue;
        };
        if !u.holds_data {
            continue;
        }
        let what = |e: String| format!("descriptor {} ({}): {e}", f.fd, f.path);
        let fd = create(u).map_err(what)?;
        fill(fd, u).map_err(what)?;
        for &[start, end, off] in &u.maps {
            let prot = h
                .regions
                .iter()
                .find(|r| r.start <= start && end <= r.end)
                .map_or(libc::PROT_READ, |r| crate::prot_flags(r.prot));
            // SAFETY: replaces the restored copy of this shared mapping (a region of the
            // image, checked by the validator) with the file itself at the same place.
            let r = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    (end - start) as usize,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    off as libc::off_t,
                )
            };
            if r == libc::MAP_FAILED {
                return Err(what(format!(
                    "cannot map it again at {start:#x}-{end:#x}: {}",
                    os_err()
                )));
            }
        }
        if u.seals != 0 {
            // SAFETY: F_ADD_SEALS on our memfd, after its contents and mappings.
            if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, u.seals) } != 0 {
                return Err(what(format!("cannot seal it again: {}", os_err())));
            }
        }
        // SAFETY: moving our descriptor out of the way of the restored ones.
        let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
        // SAFETY: closing our temporary.
        unsafe { libc::close(fd) };
        if moved < 0 {
            return Err(what(format!("cannot move it: {}", os_err())));
        }
        made.insert(u.file, moved);
    }
    Ok(made)
}

fn create(u: &UnlinkedState) -> Result<i32, String> {
    let memfd = |name: &str| {
        // memfd names are at most 249 bytes.
        let name: String = name.chars().filter(|&c| c != '\0').take(200).collect();
        let c = CString::new(name).expect("NUL removed");
        // SAFETY: memfd_create with a NUL-terminated name.
        let fd =
            unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            Err(format!("cannot make a memfd: {}", os_err()))
        } else {
            Ok(fd)
        }
    };
    if u.memfd {
        return memfd(&u.name);
    }
    let dir = std::path::Path::new(&u.name)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("/tmp"));
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| "bad path".to_string())?;
    // SAFETY: open with a NUL-terminated directory path; O_TMPFILE makes an unnamed file.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            (u.mode & 0o7777) | 0o600,
        )
    };
    if fd >= 0 {
        return Ok(fd);
    }
    info!(
        file = %u.name,
        dir = %dir.display(),
        "cannot make the deleted file again in its directory ({}): it is kept in memory",
        os_err()
    );
    memfd(&u.name)
}

fn fill(fd: i32, u: &UnlinkedState) -> Result<(), String> {
    let mut done = 0usize;
    while done < u.data.len() {
        // SAFETY: writing from our buffer.
        let n = unsafe {
            libc::pwrite(
                fd,
                u.data[done..].as_ptr().cast(),
                u.data.len() - done,
                done as libc::off_t,
            )
        };
        if n < 0 && os_err().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return Err(format!("cannot write its contents: {}", os_err()));
        }
        done += n as usize;
    }
    // SAFETY: ftruncate and fchmod on our descriptor.
    unsafe {
        if libc::ftruncate(fd, u.size as libc::off_t) != 0 {
            return Err(format!("cannot size it: {}", os_err()));
        }
        libc::fchmod(fd, u.mode & 0o7777);
    }
    Ok(())
}

/// A descriptor of its own (its own offset and open flags) on the file made for `u`.
pub fn open_again(tmp: i32, flags: i32, offset: i64) -> Result<i32, String> {
    let path = CString::new(format!("/proc/self/fd/{tmp}")).expect("no NUL");
    // A file made by O_TMPFILE shows O_TMPFILE (which includes O_DIRECTORY) in its flags.
    let flags = (flags & mana_image::validate::REOPEN_FLAGS & !libc::O_TMPFILE) | libc::O_CLOEXEC;
    // SAFETY: opening our own descriptor's file again through /proc.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err(format!("cannot open it again: {}", os_err()));
    }
    // SAFETY: lseek on our new descriptor.
    if unsafe { libc::lseek(fd, offset, libc::SEEK_SET) } < 0 {
        return Err(format!("cannot seek to {offset}: {}", os_err()));
    }
    Ok(fd)
}
