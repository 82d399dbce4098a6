//! Which MPI a file carries: the facts `mana_launch` and the runtime (`libmana`) use to
//! keep the real MPI library out of the upper half.
//!
//! MANA serves the MPICH ABI (`libmpich.so.12`, also called `libmpi.so.12`) from its
//! wrapper library and runs the real MPICH in the lower half. A library is recognised by
//! what it is — its ELF `DT_SONAME`, read from the file — not by the name it was asked
//! for: `dlopen("/opt/x/mpi.so")` of a symlink to MPICH is MPICH. Programs that cannot be
//! served are refused before they compute: another MPI family (Open MPI's `libmpi.so.40`,
//! the MPI-5 standard ABI's `libmpi_abi.so.1`), or MPICH linked statically into the
//! executable (`libmpich.a`), whose calls never reach a wrapper.
//!
//! Files are read with `pread` of the few structures needed (headers, the dynamic
//! section, one string), never whole: `libmpich.so.12` is 40 MB, and the runtime asks for
//! every library a program `dlopen`s. Every offset and size read from a file is checked:
//! a file is input, not trusted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What an ELF object is, as far as MPI goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MpiLibrary {
    /// An MPICH-ABI library (`libmpich.so.12`/`libmpi.so.12`): the wrapper library serves it.
    MpichAbi,
    /// An MPI library of another ABI: `family` names it for the user.
    Foreign {
        soname: String,
        family: &'static str,
    },
    /// Not an MPI library (or not an ELF shared object at all).
    Other,
}

/// The MPI family of a shared object named `soname`.
pub fn classify_soname(soname: &str) -> MpiLibrary {
    match soname {
        "libmpich.so.12" | "libmpi.so.12" => MpiLibrary::MpichAbi,
        s if s.starts_with("libmpi_abi.so") => MpiLibrary::Foreign {
            soname: s.into(),
            family: "the MPI-5 standard ABI",
        },
        s if s.starts_with("libmpi.so.")
            || s.starts_with("libmpi_mpifh.so")
            || s.starts_with("libmpi_usempi")
            || s.starts_with("libmpi_cxx.so")
            || s.starts_with("libopen-rte.so")
            || s.starts_with("libopen-pal.so") =>
        {
            MpiLibrary::Foreign {
                soname: s.into(),
                family: "Open MPI",
            }
        }
        s if s.starts_with("libmpich")
            && !s.starts_with("libmpichfort")
            && !s.starts_with("libmpichcxx") =>
        {
            MpiLibrary::Foreign {
                soname: s.into(),
                family: "an MPICH of another ABI version",
            }
        }
        _ => MpiLibrary::Other,
    }
}

/// What the file at `path` is (`Other` when it cannot be read or has no `DT_SONAME`).
pub fn classify_file(path: &Path) -> MpiLibrary {
    match soname(path) {
        Some(s) => classify_soname(&s),
        None => MpiLibrary::Other,
    }
}

/// Little-endian fields of a byte slice; `None` past its end.
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Reads exactly `len` bytes at `off` (bounded by `MAX_READ`).
fn read_at(f: &File, off: u64, len: usize) -> Option<Vec<u8>> {
    const MAX_READ: usize = 1 << 20;
    if len > MAX_READ {
        return None;
    }
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off).ok()?;
    Some(buf)
}

/// The parts of a 64-bit little-endian ELF file this module needs.
struct Elf {
    file: File,
    /// (p_type, p_offset, p_vaddr, p_filesz) of every program header.
    phdrs: Vec<(u32, u64, u64, u64)>,
    /// (sh_type, sh_offset, sh_size, sh_link, sh_entsize) of every section header.
    shdrs: Vec<(u32, u64, u64, u32, u64)>,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;
const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;

impl Elf {
    fn open(path: &Path) -> Option<Elf> {
        let file = File::open(path).ok()?;
        let h = read_at(&file, 0, 64)?;
        // ELF magic, 64-bit, little-endian, x86-64 or any machine: we only read tables.
        if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
            return None;
        }
        let phoff = u64_at(&h, 0x20)?;
        let shoff = u64_at(&h, 0x28)?;
        let phentsize = usize::from(u16_at(&h, 0x36)?);
        let phnum = usize::from(u16_at(&h, 0x38)?);
        let shentsize = usize::from(u16_at(&h, 0x3a)?);
        let shnum = usize::from(u16_at(&h, 0x3c)?);
        let mut phdrs = Vec::new();
        if phnum > 0 && phentsize >= 56 {
            let t = read_at(&file, phoff, phnum.checked_mul(phentsize)?)?;
            for i in 0..phnum {
                let b = i * phentsize;
                phdrs.push((
                    u32_at(&t, b)?,
                    u64_at(&t, b + 8)?,
                    u64_at(&t, b + 16)?,
                    u64_at(&t, b + 32)?,
                ));
            }
        }
        let mut shdrs = Vec::new();
        if shnum > 0 && shentsize >= 64 && shoff != 0 {
            if let Some(t) = read_at(&file, shoff, shnum.checked_mul(shentsize)?) {
                for i in 0..shnum {
                    let b = i * shentsize;
                    shdrs.push((
                        u32_at(&t, b + 4)?,
                        u64_at(&t, b + 24)?,
                        u64_at(&t, b + 32)?,
                        u32_at(&t, b + 40)?,
                        u64_at(&t, b + 56)?,
                    ));
                }
            }
        }
        Some(Elf { file, phdrs, shdrs })
    }

    /// The file offset of virtual address `vaddr` (through the `PT_LOAD` that holds it).
    fn offset_of(&self, vaddr: u64) -> Option<u64> {
        self.phdrs
            .iter()
            .filter(|p| p.0 == PT_LOAD)
            .find(|p| vaddr >= p.2 && vaddr - p.2 < p.3)
            .map(|p| p.1 + (vaddr - p.2))
    }

    /// A NUL-terminated string of at most 4 KiB at file offset `off`.
    fn string_at(&self, off: u64) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = self.file.read_at(&mut buf, off).ok()?;
        let s = &buf[..n];
        let end = s.iter().position(|&c| c == 0)?;
        String::from_utf8(s[..end].to_vec()).ok()
    }

    fn soname(&self) -> Option<String> {
        let dynamic = self.phdrs.iter().find(|p| p.0 == PT_DYNAMIC)?;
        let d = read_at(&self.file, dynamic.1, usize::try_from(dynamic.3).ok()?)?;
        let (mut strtab, mut soname) = (None, None);
        for e in d.chunks_exact(16) {
            let tag = u64_at(e, 0)?;
            let val = u64_at(e, 8)?;
            match tag {
                DT_NULL => break,
                DT_STRTAB => strtab = Some(val),
                DT_SONAME => soname = Some(val),
                _ => {}
            }
        }
        let base = self.offset_of(strtab?)?;
        self.string_at(base.checked_add(soname?)?)
    }

    /// Whether a symbol table of the file defines one of `names` (a defined symbol: section
    /// index not `SHN_UNDEF`).
    fn defines_any(&self, names: &[&str]) -> bool {
        for &(ty, off, size, link, entsize) in &self.shdrs {
            if ty != SHT_SYMTAB && ty != SHT_DYNSYM || entsize < 24 {
                continue;
            }
            let Some(&(_, str_off, str_size, _, _)) = self.shdrs.get(link as usize) else {
                continue;
            };
            // Symbol and string tables of a big executable run to tens of MB; read them
            // in bounded pieces.
            const CHUNK: u64 = 1 << 20;
            let Some(strings) = read_chunked(&self.file, str_off, str_size) else {
                continue;
            };
            let mut at = 0;
            while at < size {
                let len = CHUNK.min(size - at) / entsize * entsize;
                if len == 0 {
                    break;
                }
                let Some(syms) = read_at(&self.file, off + at, len as usize) else {
                    break;
                };
                for s in syms.chunks_exact(entsize as usize) {
                    let (Some(name), Some(shndx)) = (u32_at(s, 0), u16_at(s, 6)) else {
                        continue;
                    };
                    if shndx == 0 {
                        continue;
                    }
                    let start = name as usize;
                    let Some(rest) = strings.get(start..) else {
                        continue;
                    };
                    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                    if names.iter().any(|n| n.as_bytes() == &rest[..end]) {
                        return true;
                    }
                }
                at += len;
            }
        }
        false
    }
}

/// A whole table of at most 256 MiB, read in 1 MiB pieces.
fn read_chunked(f: &File, off: u64, size: u64) -> Option<Vec<u8>> {
    if size > 256 << 20 {
        return None;
    }
    let mut out = Vec::with_capacity(size as usize);
    let mut at = 0;
    while at < size {
        let len = (1u64 << 20).min(size - at);
        out.extend_from_slice(&read_at(f, off + at, len as usize)?);
        at += len;
    }
    Some(out)
}

/// The `DT_SONAME` of the ELF file at `path`, if it has one.
pub fn soname(path: &Path) -> Option<String> {
    Elf::open(path)?.soname()
}

/// Symbols only an MPI library defines (MPICH's internal entry points included, which a
/// program that calls nothing but `MPI_*` still links in).
const MPI_DEFINITIONS: [&str; 4] = [
    "PMPI_Init",
    "MPI_Init",
    "MPIR_Init_thread",
    "PMPI_Init_thread",
];

/// Marker strings of MPICH's own code, for executables without a symbol table
/// (stripped): names of MPICH's control variables that `libmpich.a` carries as text.
const MPICH_TEXT_MARKERS: [&[u8]; 2] = [b"MPIR_CVAR_CH4_NETMOD", b"MPIR_CVAR_ASYNC_PROGRESS"];

/// Whether the executable at `path` has an MPI library linked into it (a `libmpich.a`
/// build): its own symbol tables define `MPI_Init`, or, stripped, it carries MPICH's
/// control-variable names. Such a program's MPI calls never reach a wrapper.
pub fn has_static_mpi(path: &Path) -> bool {
    let Some(elf) = Elf::open(path) else {
        return false;
    };
    if elf.defines_any(&MPI_DEFINITIONS) {
        return true;
    }
    if elf.shdrs.iter().any(|s| s.0 == SHT_SYMTAB) {
        return false;
    }
    // Stripped: look for MPICH's text, a MiB at a time (with an overlap for strings
    // across a boundary).
    let Ok(meta) = elf.file.metadata() else {
        return false;
    };
    // memchr's vectorised search: a byte-by-byte window comparison took ~80 ms of
    // mana_launch's start for NWChem's 65 MB executable (9% of a 1 s run's CPU time).
    let finders = MPICH_TEXT_MARKERS.map(memchr::memmem::Finder::new);
    let mut at = 0u64;
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    while at < meta.len() {
        let len = CHUNK.min((meta.len() - at) as usize);
        let buf = &mut buf[..len];
        if elf.file.read_exact_at(buf, at).is_err() {
            return false;
        }
        if finders.iter().any(|f| f.find(buf).is_some()) {
            return true;
        }
        if len < CHUNK {
            break;
        }
        at += (CHUNK - 64) as u64;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonames_are_classified_by_family() {
        assert_eq!(classify_soname("libmpich.so.12"), MpiLibrary::MpichAbi);
        assert_eq!(classify_soname("libmpi.so.12"), MpiLibrary::MpichAbi);
        assert!(matches!(
            classify_soname("libmpi.so.40"),
            MpiLibrary::Foreign {
                family: "Open MPI",
                ..
            }
        ));
        assert!(matches!(
            classify_soname("libmpi_abi.so.1"),
            MpiLibrary::Foreign { .. }
        ));
        assert_eq!(classify_soname("libmpichfort.so.12"), MpiLibrary::Other);
        assert_eq!(classify_soname("libc.so.6"), MpiLibrary::Other);
    }

    #[test]
    fn the_soname_of_libc_is_read_from_the_file() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libc.so.6");
        assert_eq!(soname(Path::new(libc)).as_deref(), Some("libc.so.6"));
        assert_eq!(classify_file(Path::new(libc)), MpiLibrary::Other);
        assert!(!has_static_mpi(Path::new(libc)));
    }

    #[test]
    fn garbage_and_truncated_files_are_not_libraries() {
        let dir = std::env::temp_dir().join(format!("mana-mpi-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.so");
        // An ELF header claiming huge tables past the end of a 64-byte file.
        let mut h = vec![0u8; 64];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        h[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        h[0x38..0x3a].copy_from_slice(&u16::MAX.to_le_bytes());
        std::fs::write(&junk, &h).unwrap();
        assert_eq!(soname(&junk), None);
        assert!(!has_static_mpi(&junk));
        std::fs::write(&junk, b"not an ELF file").unwrap();
        assert_eq!(classify_file(&junk), MpiLibrary::Other);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
