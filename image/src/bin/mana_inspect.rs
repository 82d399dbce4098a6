//! `mana_inspect IMAGE|CKPT_DIR`: print an image's header and verify every checksum.

use clap::Parser;
use mana_image::{CkptDir, ImageReader, Manifest, RegionKind, PAGE_SIZE};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "mana_inspect",
    about = "Print a MANA checkpoint image's header and verify its checksums",
    long_about = "Print a MANA checkpoint image's header (regions with address range, \
permissions, kind and bytes stored; threads; descriptors; signal handlers) and verify the \
preamble, header and every region's checksum. Given a checkpoint directory, inspects every \
image its MANIFEST lists of the newest committed generation (the one LATEST names) — each \
job member's launched process (rank-RRRRR.mana) followed by its descendant processes \
(rank-RRRRR.pPID.mana) — and checks each against the header checksum the MANIFEST recorded, as mana_restart does. Then checks, as \
mana_restart does before it maps anything, that every file the process mapped privately \
(program, libraries) has on this node the size and content (SHA-256 of the mapped bytes) it \
had at the checkpoint. Exits non-zero if anything is corrupt or changed."
)]
struct Args {
    /// An image file (rank-NNNNN.mana, rank-NNNNN.pPID.mana), a generation directory, or a
    /// checkpoint directory.
    path: PathBuf,
    /// Do not list the regions, only the summary and checksum verdicts.
    #[arg(long)]
    brief: bool,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {}
        Err(Failure::ReaderGone) => std::process::exit(141),
        Err(Failure::Error(e)) => {
            eprintln!("mana_inspect: {e}");
            std::process::exit(1);
        }
    }
}

/// The images to inspect, each with the header checksum its generation's MANIFEST
/// records (none for an image file given alone): a checkpoint directory's newest committed
/// generation, or a generation directory, is read through its MANIFEST, as `mana_restart`
/// reads it.
fn images(path: &Path) -> Result<Vec<(PathBuf, Option<u64>)>, String> {
    if path.is_file() {
        return Ok(vec![(path.to_path_buf(), None)]);
    }
    let dir = if path.join("LATEST").is_file() || !path.join("MANIFEST").is_file() {
        let c = CkptDir::new(path);
        let g = c.require_latest().map_err(|e| e.to_string())?;
        c.gen_dir(g)
    } else {
        path.to_path_buf()
    };
    let manifest = Manifest::load(&dir.join("MANIFEST")).map_err(|e| e.to_string())?;
    if manifest.images.is_empty() {
        return Err(format!("{}: the MANIFEST lists no images", dir.display()));
    }
    // Each job member's launched process, then its descendants (issue 11, item 5).
    Ok(manifest
        .images
        .iter()
        .flat_map(|e| {
            std::iter::once((dir.join(&e.file), Some(e.header_checksum))).chain(
                e.members
                    .iter()
                    .map(|m| (dir.join(&m.file), Some(m.header_checksum))),
            )
        })
        .collect())
}

/// Why `run` stopped.
enum Failure {
    /// The listing's reader went away (`mana_inspect DIR | head`): stop quietly, as a
    /// tool killed by `SIGPIPE` would (status 141).
    ReaderGone,
    /// Anything else: one line.
    Error(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Error(e)
    }
}

fn write_error(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::ReaderGone
    } else {
        Failure::Error(format!("writing the listing: {e}"))
    }
}

/// `writeln!` to the listing, returning its error from `run`.
macro_rules! out {
    ($o:expr, $($arg:tt)*) => {
        writeln!($o, $($arg)*).map_err(write_error)?
    };
}

fn run(args: &Args) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut o = stdout.lock();
    for (p, recorded) in images(&args.path)? {
        let r = match recorded {
            Some(c) => ImageReader::open_listed(&p, c),
            None => ImageReader::open(&p),
        }
        .map_err(|e| e.to_string())?;
        let h = &r.header;
        out!(o, "image      {}", p.display());
        out!(
            o,
            "process    {} pid {} on {}, rank {} of {}, generation {}",
            h.program,
            h.pid,
            h.hostname,
            h.rank,
            h.world_size,
            h.generation
        );
        if !h.zombies.is_empty() {
            let z: Vec<String> = h
                .zombies
                .iter()
                .map(|z| format!("{} (wait status {:#x})", z.pid, z.status))
                .collect();
            out!(
                o,
                "ended      children not yet waited for: {}",
                z.join(", ")
            );
        }
        out!(
            o,
            "memory     {} regions, {} MiB mapped, {} MiB stored, file {} MiB",
            h.regions.len(),
            h.mapped_bytes() >> 20,
            h.stored_bytes() >> 20,
            r.file_len >> 20
        );
        if !args.brief {
            out!(o, "regions:");
            for reg in &h.regions {
                let extra = match &reg.kind {
                    RegionKind::FilePrivate(id) | RegionKind::FileShared(id) => {
                        format!(" @{:#x}", id.offset)
                    }
                    _ => String::new(),
                };
                out!(
                    o,
                    "  {:#014x}-{:#014x} {} {:<12} {:>10} stored  {}{}",
                    reg.start,
                    reg.end,
                    reg.prot_string(),
                    reg.kind_name(),
                    reg.extents.iter().map(|e| e.pages).sum::<u64>() * PAGE_SIZE,
                    reg.name,
                    extra
                );
            }
            out!(o, "threads:");
            for t in &h.threads {
                out!(
                    o,
                    "  tid {:<8} {} rip {:#x} rsp {:#x} fs {:#x}",
                    t.tid,
                    if t.is_main { "main" } else { "    " },
                    t.ctx.rip,
                    t.ctx.rsp,
                    t.fs_base
                );
            }
            out!(o, "descriptors:");
            for f in &h.files {
                let kind = match &f.kind {
                    mana_image::FileKind::Pipe(p) => format!(
                        "Pipe ({} end, capacity {}{})",
                        if p.read_end { "read" } else { "write" },
                        p.capacity,
                        if p.holds_data {
                            format!(
                                ", {} unread bytes{}",
                                p.data.len(),
                                if p.packets.is_empty() {
                                    String::new()
                                } else {
                                    format!(" in {} packets", p.packets.len())
                                }
                            )
                        } else {
                            String::new()
                        }
                    ),
                    k => format!("{k:?}"),
                };
                out!(o, "  {:>4} {kind} {} (offset {})", f.fd, f.path, f.offset);
            }
            let handled = h.signals.iter().filter(|s| s.handler > 1).count();
            out!(o, "signals:   {handled} handlers installed");
        }
        r.verify_data().map_err(|e| e.to_string())?;
        out!(
            o,
            "checksums  preamble, header and {} regions verified",
            h.regions.len()
        );
        // The check mana_restart makes before it maps anything, on this node's files.
        let files = mana_image::files::verify(h, &p).map_err(|e| e.to_string())?;
        out!(
            o,
            "files      {} mapped files here have the checkpoint's contents (size, SHA-256)",
            files.len()
        );
    }
    o.flush().map_err(write_error)
}
