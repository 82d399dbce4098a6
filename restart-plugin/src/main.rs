//! `mana_restart`: the checkpointed process comes back (as the calling process's child in
//! a pid namespace with its saved ids, ns.rs; or, with `--new-ids`, as the calling
//! process itself).
//!
//! First stage (this program, ordinary Rust): `locate → verify → reserve → plugin →
//! descriptors → plan`, then it hands a plain-data plan to the final stage
//! (`restorer/restorer.rs`), which runs `unmap self → mm/signals/fds → threads → resume`
//! with raw syscalls only. If any of the restarter's own mappings lies where the image
//! needs memory, the first stage re-executes itself (a new random layout) before touching
//! anything.

mod hook;
mod loader;
mod ns;
mod sys;

mod tcp;
mod tree;
mod unlinked;

use mana_restart_core::plan;
use mana_restart_core::prepare::{self, VdsoPlan};

use clap::Parser;
use mana_image::{
    CkptDir, ImageHeader, ImageReader, Region, RegionKind, RestartMailbox, MAILBOX_MAGIC, PAGE_SIZE,
};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tracing::{debug, info};

/// How often the restarter re-executes itself to get a layout that does not collide.
const MAX_ATTEMPTS: u32 = 12;
const ATTEMPT_ENV: &str = "MANA_RESTART_ATTEMPT";

#[derive(Parser, Debug)]
#[command(
    name = "mana_restart",
    about = "Restart a checkpointed process from its newest committed generation",
    long_about = "Restart a checkpointed process. The restored process gets back its pid and \
thread ids in a pid namespace of its own, as this process's child: it keeps this terminal's \
stdin/stdout/stderr and continues where the checkpoint was taken; this process passes on \
the signals sent to it and exits as the program does (--new-ids: this process becomes the \
restored one, with new ids). The image is taken from the newest committed generation in CKPT_DIR (the one \
LATEST names); under srun/mpiexec each rank restores its own image.\n\nThe restored process \
reconnects to the coordinator named by --status-file (or $MANA_STATUS_FILE, or the default \
status file); if none is reachable and none was named, one is started."
)]
struct Args {
    /// Coordinator status file (default: $MANA_STATUS_FILE, else ~/.mana.rc or
    /// ~/.mana-slurm-$SLURM_JOB_ID.rc).
    #[arg(long, value_name = "F")]
    status_file: Option<PathBuf>,
    /// Checkpoint directory (default: $MANA_CKPT_DIR, else ./ckpt).
    #[arg(value_name = "CKPT_DIR")]
    ckpt_dir: Option<PathBuf>,
    /// Give the restored process new process and thread ids instead of its saved ones.
    /// By default the ids come back: the process is restored in a pid namespace of its
    /// own (inside a user namespace of its own unless run as root), under two small
    /// processes: this one, which the launcher sees, passes signals on and ends as the
    /// restored process ends, and the namespace's init (`mana-init`).
    #[arg(long)]
    new_ids: bool,
}

fn main() {
    let args = Args::parse();
    mana_coordinator::init_logging("warn", true);
    if let Err(e) = restart(args) {
        eprintln!("mana_restart: {e}");
        // Under an MPI launcher the other ranks would wait for this one forever (in
        // MPI_Init): end abnormally, so that the launcher ends the whole job.
        if mana_coordinator::launcher_rank_var().is_some() {
            // Give the launcher time to forward this line before it tears the job down.
            std::thread::sleep(std::time::Duration::from_millis(300));
            sys::kill_self();
        }
        std::process::exit(1);
    }
}

/// The rank of this process from the launcher's environment (0 without a launcher).
fn launcher_rank() -> Result<u32, String> {
    match mana_coordinator::launcher_rank_var() {
        Some((var, v)) => v
            .parse()
            .map_err(|_| format!("{var}={v} is not a rank number")),
        None => Ok(0),
    }
}

fn restart(args: Args) -> Result<(), String> {
    // locate
    let dir = args
        .ckpt_dir
        .or_else(|| std::env::var_os("MANA_CKPT_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("ckpt"));
    let dir = std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ckpt = CkptDir::new(&dir);
    let generation = ckpt.require_latest().map_err(|e| e.to_string())?;
    let manifest = ckpt.read_manifest(generation).map_err(|e| e.to_string())?;
    // Every rank of a restart with the wrong process count says the same thing, before any
    // looks for its image.
    check_launcher_world_size(manifest.world_size, &ckpt.gen_dir(generation))?;
    let rank = launcher_rank()?;
    // A descendant of the launched process, made by its parent's restarter (tree.rs).
    let member = tree::member()?;
    let entry = manifest
        .images
        .iter()
        .find(|e| e.rank == rank)
        .ok_or_else(|| {
            format!(
            "{}: generation {generation} has no image for rank {rank} (it holds {} process(es))",
            ckpt.gen_dir(generation).display(),
            manifest.images.len()
        )
        })?;
    let (file, listed) = match member {
        None => (&entry.file, entry.header_checksum),
        Some(pid) => entry
            .members
            .iter()
            .find(|m| m.pid == pid)
            .map(|m| (&m.file, m.header_checksum))
            .ok_or_else(|| {
                format!("generation {generation} has no image for rank {rank}'s process {pid}")
            })?,
    };
    let image_path = ckpt.gen_dir(generation).join(file);

    // verify
    let reader = ImageReader::open_listed(&image_path, listed).map_err(|e| e.to_string())?;
    // SAFETY: an advisory call on our own descriptor (the image is read front to back).
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&reader.file),
            0,
            0,
            libc::POSIX_FADV_SEQUENTIAL,
        )
    };
    let h = &reader.header;
    info!(image = %image_path.display(), regions = h.regions.len(), threads = h.threads.len(), "restarting");
    let vdso_moves = prepare::plan_vdso(
        h,
        prepare::own_maps()?,
        |s, e| {
            // SAFETY: our own [vdso] is mapped readable.
            mana_image::checksum(unsafe { sys::slice(s, e - s) })
        },
        |len| {
            sys::map_anywhere(len, libc::PROT_NONE)
                .map_err(|e| format!("cannot map a temporary vdso area: {e}"))
        },
    )?;
    prepare::check_threads(h)?;
    // The files private regions map: the same bytes as at the checkpoint, checked through
    // the descriptors mapped below.
    let mapped = mana_image::files::verify(h, &image_path).map_err(|e| e.to_string())?;
    // The descendants' images (the pipes between them are made once, by the root).
    let members = if member.is_none() && !entry.members.is_empty() {
        tree::load(&ckpt.gen_dir(generation), h.pid, &entry.members)?
    } else {
        Vec::new()
    };
    // A descendant is checkpointed through the launched process, not the coordinator.
    let status_file = if member.is_none() {
        mana_coordinator::ensure_coordinator(args.status_file.as_deref(), None, "mana_restart")
            .map_err(|e| e.to_string())?
    } else {
        PathBuf::new()
    };

    // reserve: every range of the image is mapped with its contents, which also keeps
    // anything else from landing there.
    avoid_collisions(h, &vdso_moves)?;
    // From here on this may be the restored process in a pid namespace of its own, the
    // launcher's process waiting outside (ns.rs).
    let ids = if member.is_some() {
        // Made with its saved pid by its parent's restarter, in the namespace already.
        if std::process::id() as i32 == h.pid {
            ns::Ids::Kept {
                visible_pid: h.pid,
                drop_caps: tree::inherited_caps(),
                ns_root: false,
            }
        } else {
            ns::Ids::New
        }
    } else if args.new_ids {
        ns::Ids::New
    } else {
        ns::enter(
            h,
            manifest.images.iter().map(|e| e.max_id).max().unwrap_or(0),
            &ckpt.gen_dir(generation),
        )
    };
    // The process tree: the pipes between its processes (made by the root), then this
    // process's children, each restoring its own image.
    let shared = if member.is_some() {
        tree::inherited()
    } else if !members.is_empty() {
        if let ns::Ids::Kept { drop_caps, .. } = &ids {
            tree::pass_caps(drop_caps.as_ref());
        }
        let mut all = vec![h.clone()];
        all.extend(members.iter().map(|r| r.header.clone()));
        let mut readers = vec![&reader];
        readers.extend(members.iter());
        tree::make_shared(&all, &readers)?
    } else {
        tree::Shared::default()
    };
    tree::make_children(
        h.pid,
        &entry.members,
        &h.zombies,
        matches!(ids, ns::Ids::Kept { .. }),
        &dir,
    )?;
    for (i, r) in h.regions.iter().enumerate() {
        restore_region(&reader, &mapped, i, r, &shared.memory)?;
    }
    for m in &vdso_moves.placeholders {
        sys::map_fixed(
            m.0,
            m.1,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
        .map_err(|e| format!("cannot reserve {:#x}-{:#x} for [vdso]: {e}", m.0, m.0 + m.1))?;
    }

    // plugin
    hook::restart_plugin_hook(&mut hook::PluginContext {
        header: h,
        rank,
        world_size: manifest.world_size,
    })
    .map_err(|e| format!("restart plugin: {e}"))?;

    // descriptors, working directory. An MPI process's PMI connection (the launcher's)
    // moves out of the way of the application's descriptors first; the restored process
    // hands it to its new lower half.
    let header = reader.header.clone();
    drop(reader);
    drop(mapped);
    let pmi_fd = if header.mpi.is_some() {
        move_pmi_fd(&header)?
    } else {
        None
    };
    let mut keep_fds = restore_files(&header, &shared)?;
    shared.close();
    keep_fds.extend(pmi_fd);
    let env = if header.mpi.is_some() {
        Some(EnvBlob::new(pmi_fd)?)
    } else {
        None
    };
    if !header.cwd.is_empty() && std::env::set_current_dir(&header.cwd).is_err() {
        tracing::warn!(cwd = %header.cwd, "cannot enter the checkpointed working directory; staying here");
    }
    // SAFETY: umask only changes the file-creation mask.
    unsafe { libc::umask(header.umask as libc::mode_t) };

    // plan
    let mut restorer = loader::Restorer::load(header.threads.len())?;
    write_mailbox(
        &header,
        &restorer,
        generation,
        &status_file,
        &dir,
        env.as_ref(),
        &ids,
    )?;
    let stacks: Vec<u64> = (0..header.threads.len())
        .map(|i| restorer.thread_stack_top(i))
        .collect();
    prepare::fill_plan(restorer.plan(), &stacks, &header, &vdso_moves, &keep_fds)?;
    if let ns::Ids::Kept { drop_caps, .. } = &ids {
        let plan = restorer.plan();
        for (pt, t) in plan.threads.iter_mut().zip(&header.threads) {
            if !t.is_main {
                pt.set_tid = t.tid;
            }
            if let Some(caps) = drop_caps {
                pt.drop_caps = 1;
                pt.caps = *caps;
            }
        }
    }
    let mut keep = keep_ranges(&header, &restorer, &vdso_moves);
    if let Some(e) = &env {
        keep.push((e.start, e.start + e.len));
        keep.sort_unstable();
    }
    let mut maps_buf = vec![0u8; 1 << 20];
    let n = read_maps(&mut maps_buf)?;
    for_each_unmap(&maps_buf[..n], &keep, |s, e, name| {
        debug!(
            "restarter mapping {s:#x}-{e:#x} {}",
            String::from_utf8_lossy(name)
        );
    });
    debug!(
        "restarter mapping {:#x}-{:#x} [final stage]",
        restorer.base,
        restorer.base + restorer.len
    );
    info!(generation, "entering the final stage");

    // unmap self and resume (final stage). From here on: no allocation, so the map list
    // read last is exactly what exists.
    sys::block_all_signals();
    sys::unregister_rseq();
    let n = read_maps(&mut maps_buf)?;
    let plan = restorer.plan();
    plan.n_unmap = 0;
    let mut overflow = false;
    for_each_unmap(&maps_buf[..n], &keep, |s, e, _| {
        let i = plan.n_unmap as usize;
        if i < plan::MAX_UNMAP {
            plan.unmap[i] = plan::Range {
                start: s,
                len: e - s,
            };
            plan.n_unmap += 1;
        } else {
            overflow = true;
        }
    });
    if overflow {
        return Err(format!(
            "the restarter has more than {} mappings",
            plan::MAX_UNMAP
        ));
    }
    // SAFETY: the plan is complete; nothing of the first stage is used afterwards.
    unsafe { restorer.enter() }
}

/// Re-executes the restarter if any of its own mappings lies where the image needs memory.
fn avoid_collisions(h: &ImageHeader, vp: &VdsoPlan) -> Result<(), String> {
    let maps = prepare::own_maps()?;
    let Some(what) = prepare::first_collision(h, vp, &maps) else {
        return Ok(());
    };
    let attempt: u32 = std::env::var(ATTEMPT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if attempt + 1 >= MAX_ATTEMPTS {
        return Err(format!(
            "{what} (still after {MAX_ATTEMPTS} attempts; is address space randomization off?)"
        ));
    }
    debug!("{what}; re-executing for another layout");
    reexec(attempt + 1)
}

fn reexec(attempt: u32) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // A layout without randomization would collide again: turn it back on for the retry.
    // SAFETY: querying and setting this process's personality flags.
    unsafe {
        let cur = libc::personality(0xffff_ffff);
        if cur != -1 && cur & libc::ADDR_NO_RANDOMIZE != 0 {
            libc::personality((cur & !libc::ADDR_NO_RANDOMIZE) as libc::c_ulong);
        }
    }
    let err = std::process::Command::new(exe)
        .args(args)
        .env(ATTEMPT_ENV, attempt.to_string())
        .exec();
    Err(format!("cannot re-execute the restarter: {err}"))
}

pub(crate) fn prot_flags(p: u8) -> i32 {
    use mana_image::prot::*;
    (if p & READ != 0 { libc::PROT_READ } else { 0 })
        | (if p & WRITE != 0 { libc::PROT_WRITE } else { 0 })
        | (if p & EXEC != 0 { libc::PROT_EXEC } else { 0 })
}

/// Maps one region at its address (`MAP_FIXED_NOREPLACE`), fills in its stored pages,
/// verifies their checksum and applies the saved protection.
fn restore_region(
    reader: &ImageReader,
    mapped: &mana_image::files::MappedFiles,
    index: usize,
    r: &Region,
    shared: &std::collections::HashMap<(u64, u64, u64), i32>,
) -> Result<(), String> {
    let len = r.len();
    // Memory shared with other processes of the tree: their common memfd, its contents
    // already in it (tree.rs).
    if let (RegionKind::SharedAnon, Some(&fd)) =
        (&r.kind, shared.get(&(r.start, r.end, r.shared_inode)))
    {
        sys::map_fixed(r.start, len, prot_flags(r.prot), libc::MAP_SHARED, fd, 0).map_err(|e| {
            format!(
                "cannot map {:#x}-{:#x} ({}) shared: {e}",
                r.start, r.end, r.name
            )
        })?;
        return Ok(());
    }
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // Mostly-stored regions are populated in one go instead of faulting page by page
    // while the image is read into them.
    let populate = if r.stored_bytes() * 2 >= len {
        libc::MAP_POPULATE
    } else {
        0
    };
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | populate;
    let collide = |e: std::io::Error| {
        // ENOMEM under a data limit smaller than the image's private writable memory (the
        // kernel counts it against RLIMIT_DATA): say so, it is the usual cause.
        let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit into a valid rlimit.
            unsafe { libc::getrlimit(libc::RLIMIT_DATA, &mut l) };
            if l.rlim_cur != libc::RLIM_INFINITY {
                format!(
                    " (this node's data limit, `ulimit -d`, is {} KiB: the checkpointed process needs more; raise it to restart)",
                    l.rlim_cur / 1024
                )
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        format!(
            "cannot reserve {:#x}-{:#x} ({}) for the image: {e}{hint}",
            r.start, r.end, r.name
        )
    };
    let mut file_holder = None;
    match &r.kind {
        RegionKind::Anon | RegionKind::Heap => {
            sys::map_fixed(r.start, len, rw, anon, -1, 0).map_err(collide)?
        }
        RegionKind::Stack => {
            sys::map_fixed(r.start, len, rw, anon | libc::MAP_GROWSDOWN, -1, 0).map_err(collide)?
        }
        RegionKind::SharedAnon => sys::map_fixed(
            r.start,
            len,
            rw,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
        .map_err(collide)?,
        RegionKind::FilePrivate(id) => {
            // Verified by mana_image::files::verify (same bytes as at the checkpoint).
            let f = mapped
                .get(&id.path)
                .ok_or_else(|| format!("{}: not verified", id.path))?;
            use std::os::fd::AsRawFd;
            sys::map_fixed(
                r.start,
                len,
                rw,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                id.offset,
            )
            .map_err(collide)?;
        }
        RegionKind::FileShared(id) => {
            let writable = r.prot & mana_image::prot::WRITE != 0;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&id.path)
                .map_err(|e| {
                    format!(
                        "{}: {e} (mapped at {:#x} by the checkpointed process)",
                        id.path, r.start
                    )
                })?;
            use std::os::fd::AsRawFd;
            sys::map_fixed(
                r.start,
                len,
                prot_flags(r.prot),
                libc::MAP_SHARED,
                f.as_raw_fd(),
                id.offset,
            )
            .map_err(collide)?;
            file_holder = Some(f);
        }
    }
    drop(file_holder);
    if !r.extents.is_empty() {
        // SAFETY: the region was just mapped writable by us at exactly this range.
        let dest = unsafe { sys::slice_mut(r.start, len) };
        reader.read_region(index, dest).map_err(|e| e.to_string())?;
    }
    if !matches!(r.kind, RegionKind::FileShared(_)) {
        // SAFETY: our own freshly restored mapping gets its saved protection.
        unsafe { sys::protect(r.start, len, prot_flags(r.prot)) }
            .map_err(|e| format!("mprotect {:#x}-{:#x}: {e}", r.start, r.end))?;
    }
    Ok(())
}

/// Re-opens regular files at their descriptor numbers and puts back inherited ones (see
/// [`restore_inherited`]); returns the descriptors to keep.
fn restore_files(h: &ImageHeader, shared: &tree::Shared) -> Result<Vec<i32>, String> {
    let mut keep = vec![0, 1, 2];
    let above = h.files.iter().map(|f| f.fd).max().unwrap_or(2) + 1;
    let mut drain = Vec::new();
    let pipes = make_pipes(h, above, &shared.pipes)?;
    let sockets = make_socket_pairs(h, above, &shared.sockets)?;
    let tcp = tcp::make(h, above, &shared.tcp)?;
    let dgrams = tcp::make_dgram(h, above)?;
    let nameless = unlinked::make(h, above)?;
    let listeners = tcp::make_unix_listeners(h, above, &shared.sockets)?;
    for f in &h.files {
        if let mana_image::FileKind::Inherited(kind) = f.kind {
            restore_inherited(f, kind, above, &mut drain)?;
            keep.push(f.fd);
            continue;
        }
        if matches!(
            f.kind,
            mana_image::FileKind::EventFd { .. }
                | mana_image::FileKind::TimerFd { .. }
                | mana_image::FileKind::SignalFd { .. }
        ) {
            restore_counter(f)?;
            keep.push(f.fd);
            continue;
        }
        if let mana_image::FileKind::UnixPair(u) = &f.kind {
            let end = sockets
                .get(&u.socket)
                .unwrap_or_else(|| &shared.sockets[&u.socket]);
            place_pipe_end(f, *end)?;
            keep.push(f.fd);
            continue;
        }
        if let mana_image::FileKind::Tcp(t) = &f.kind {
            let end = tcp.get(&t.socket).unwrap_or_else(|| &shared.tcp[&t.socket]);
            place_pipe_end(f, *end)?;
            keep.push(f.fd);
            continue;
        }
        if let mana_image::FileKind::Dgram(d) = &f.kind {
            place_pipe_end(f, dgrams[&d.socket])?;
            keep.push(f.fd);
            continue;
        }
        if let mana_image::FileKind::UnixListener(l) = &f.kind {
            let end = listeners
                .get(&l.socket)
                .unwrap_or_else(|| &shared.sockets[&l.socket]);
            place_pipe_end(f, *end)?;
            keep.push(f.fd);
            continue;
        }
        if let mana_image::FileKind::Pipe(p) = &f.kind {
            let ends = pipes.get(&p.pipe).unwrap_or_else(|| &shared.pipes[&p.pipe]);
            let end = if p.read_end { ends[0] } else { ends[1] };
            place_pipe_end(f, end)?;
            keep.push(f.fd);
            continue;
        }
        if let mana_image::FileKind::Unlinked(u) = &f.kind {
            let fd = unlinked::open_again(nameless[&u.file], f.flags, f.offset)
                .map_err(|e| format!("descriptor {} ({}): {e}", f.fd, f.path))?;
            place(fd, f)?;
            keep.push(f.fd);
            continue;
        }
        if f.kind != mana_image::FileKind::Regular {
            continue;
        }
        let c = CString::new(f.path.as_bytes()).map_err(|_| format!("bad path {:?}", f.path))?;
        let flags = (f.flags & mana_image::validate::REOPEN_FLAGS) | libc::O_CLOEXEC;
        // SAFETY: `c` is NUL-terminated; `flags` come from an allow-list without
        // O_CREAT/O_TRUNC/O_EXCL.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(format!(
                "cannot reopen {} as descriptor {}: {}",
                f.path,
                f.fd,
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: lseek on a descriptor we own.
        if unsafe { libc::lseek(fd, f.offset, libc::SEEK_SET) } < 0 {
            return Err(format!(
                "cannot seek {} to {}: {}",
                f.path,
                f.offset,
                std::io::Error::last_os_error()
            ));
        }
        place(fd, f)?;
        keep.push(f.fd);
    }
    // Epoll instances last: every descriptor they watch is in place now.
    for f in &h.files {
        if let mana_image::FileKind::Epoll(list) = &f.kind {
            restore_epoll(f, list)?;
            keep.push(f.fd);
        }
    }
    for &end in sockets
        .values()
        .chain(tcp.values())
        .chain(dgrams.values())
        .chain(nameless.values())
        .chain(listeners.values())
    {
        // SAFETY: our temporary (every descriptor of that socket is placed).
        unsafe { libc::close(end) };
    }
    for ends in pipes.values() {
        // SAFETY: our temporaries (every descriptor of the pipe is placed).
        unsafe {
            libc::close(ends[0]);
            libc::close(ends[1]);
        }
    }
    for some in drain.chunks(64) {
        start_drainer(some)?;
    }
    keep.sort_unstable();
    keep.dedup();
    Ok(keep)
}

/// Makes each pipe of the image ([`mana_image::FileKind::Pipe`]) once — but those in
/// `shared` (made by the tree's root for several processes, tree.rs): its capacity, its
/// unread bytes written back (packet by packet in packet mode); both ends moved to
/// `above` or higher, out of every restored descriptor's way. Returns [read, write] by
/// the pipe's number.
fn make_pipes(
    h: &ImageHeader,
    above: i32,
    shared: &std::collections::HashMap<u64, [i32; 2]>,
) -> Result<std::collections::HashMap<u64, [i32; 2]>, String> {
    let mut pipes = std::collections::HashMap::new();
    for f in &h.files {
        let mana_image::FileKind::Pipe(p) = &f.kind else {
            continue;
        };
        if pipes.contains_key(&p.pipe) || shared.contains_key(&p.pipe) {
            continue;
        }
        let ends = new_pipe(std::slice::from_ref(h), p.pipe, above, true)
            .map_err(|e| format!("descriptor {} (pipe {}): {e}", f.fd, p.pipe))?;
        pipes.insert(p.pipe, ends);
    }
    Ok(pipes)
}

/// Makes pipe `pipe` as the images `hs` recorded it (capacity, packet mode, the unread
/// bytes of whichever holds them), its ends at `above` or higher; [read, write].
pub(crate) fn new_pipe(
    hs: &[ImageHeader],
    pipe: u64,
    above: i32,
    cloexec: bool,
) -> Result<[i32; 2], String> {
    let records = || {
        hs.iter()
            .flat_map(|h| &h.files)
            .filter_map(move |g| match &g.kind {
                mana_image::FileKind::Pipe(q) if q.pipe == pipe => Some((g, q)),
                _ => None,
            })
    };
    let holder = records().find(|(_, q)| q.holds_data).map(|(_, q)| q);
    let capacity = records().map(|(_, q)| q.capacity).max().unwrap_or(4096);
    let err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let packet = holder.is_some_and(|q| !q.packets.is_empty())
        || records().any(|(g, _)| g.flags & libc::O_DIRECT != 0);
    let mut two = [-1i32; 2];
    let direct = if packet { libc::O_DIRECT } else { 0 };
    // SAFETY: `two` is a valid out-array of two.
    if unsafe { libc::pipe2(two.as_mut_ptr(), libc::O_CLOEXEC | direct) } != 0 {
        return Err(err("cannot make the pipe"));
    }
    // SAFETY: F_SETPIPE_SZ on our new pipe.
    if unsafe { libc::fcntl(two[1], libc::F_SETPIPE_SZ, capacity as libc::c_int) } < 0 {
        return Err(err(&format!(
            "cannot give it its capacity of {capacity} bytes"
        )));
    }
    if let Some(q) = holder {
        let whole = [q.data.len() as u32];
        let sizes: &[u32] = if q.packets.is_empty() {
            &whole
        } else {
            &q.packets
        };
        let mut at = 0usize;
        for &n in sizes.iter().filter(|&&n| n > 0) {
            let piece = &q.data[at..at + n as usize];
            // SAFETY: writing our own pipe, emptier than its capacity (validated: the
            // content fits it), so this never blocks.
            let w = unsafe { libc::write(two[1], piece.as_ptr().cast(), piece.len()) };
            if w != piece.len() as isize {
                return Err(err("cannot write its unread bytes back"));
            }
            at += n as usize;
        }
    }
    let mut high = [-1i32; 2];
    let dup = if cloexec {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    for i in 0..2 {
        // SAFETY: F_DUPFD(_CLOEXEC) on our descriptor, then close the low one.
        high[i] = unsafe { libc::fcntl(two[i], dup, above) };
        // SAFETY: our temporary.
        unsafe { libc::close(two[i]) };
        if high[i] < 0 {
            return Err(err("cannot move it out of the way"));
        }
    }
    Ok(high)
}

/// An eventfd (its counter, semaphore mode), timerfd (its clock, pending expirations, time
/// to the next and period: re-armed relative to now) or signalfd (its mask), at the
/// descriptor number `f` had, with its flags.
fn restore_counter(f: &mana_image::FileState) -> Result<(), String> {
    use mana_image::FileKind;
    let err = |what: &str| {
        format!(
            "descriptor {} ({}): {what}: {}",
            f.fd,
            f.path,
            std::io::Error::last_os_error()
        )
    };
    let nonblock = f.flags & libc::O_NONBLOCK;
    // SAFETY: each call makes a new descriptor of ours from plain values.
    let fd = unsafe {
        match f.kind {
            FileKind::EventFd { count, semaphore } => {
                let sem = if semaphore { libc::EFD_SEMAPHORE } else { 0 };
                let fd = libc::eventfd(0, libc::EFD_CLOEXEC | nonblock | sem);
                if fd >= 0 && count > 0 {
                    let w = libc::write(fd, (&count as *const u64).cast(), 8);
                    if w != 8 {
                        return Err(err("cannot give it its count back"));
                    }
                }
                fd
            }
            FileKind::TimerFd {
                clock,
                ticks,
                value_ns,
                interval_ns,
            } => {
                let fd = libc::timerfd_create(clock, libc::TFD_CLOEXEC | nonblock);
                let ts = |ns: u64| libc::timespec {
                    tv_sec: (ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (ns % 1_000_000_000) as i64,
                };
                // A periodic timer whose expiration was due but not yet read shows 0 left:
                // its next one is a period away.
                let next = if value_ns == 0 { interval_ns } else { value_ns };
                if fd >= 0 && next > 0 {
                    let its = libc::itimerspec {
                        it_interval: ts(interval_ns),
                        it_value: ts(next),
                    };
                    if libc::timerfd_settime(fd, 0, &its, std::ptr::null_mut()) != 0 {
                        return Err(err("cannot arm it again"));
                    }
                }
                if fd >= 0 && ticks > 0 {
                    // TFD_IOC_SET_TICKS (CONFIG_CHECKPOINT_RESTORE): the expirations not
                    // yet read.
                    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
                    if libc::ioctl(fd, TFD_IOC_SET_TICKS, &ticks) != 0 {
                        tracing::warn!(
                            fd = f.fd,
                            ticks,
                            "cannot give a timerfd its unread expirations back"
                        );
                    }
                }
                fd
            }
            FileKind::SignalFd { mask } => {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for sig in 1..=64 {
                    if mask & (1u64 << (sig - 1)) != 0 {
                        libc::sigaddset(&mut set, sig);
                    }
                }
                libc::signalfd(-1, &set, libc::SFD_CLOEXEC | nonblock)
            }
            _ => return Ok(()),
        }
    };
    if fd < 0 {
        return Err(err("cannot make it again"));
    }
    place(fd, f)
}

/// Moves our temporary descriptor `tmp` to the number `f` had (closing `tmp`), with its
/// close-on-exec flag.
fn place(tmp: i32, f: &mana_image::FileState) -> Result<(), String> {
    if tmp != f.fd {
        let flags = if f.cloexec { libc::O_CLOEXEC } else { 0 };
        // SAFETY: dup3 of our descriptor onto the saved number, then close the temporary.
        unsafe {
            if libc::dup3(tmp, f.fd, flags) < 0 {
                return Err(format!(
                    "cannot place descriptor {} ({}): {}",
                    f.fd,
                    f.path,
                    std::io::Error::last_os_error()
                ));
            }
            libc::close(tmp);
        }
    } else {
        let v = if f.cloexec { libc::FD_CLOEXEC } else { 0 };
        // SAFETY: F_SETFD on our descriptor.
        unsafe { libc::fcntl(tmp, libc::F_SETFD, v) };
    }
    Ok(())
}

/// An epoll instance with its interest list, at the descriptor number `f` had.
fn restore_epoll(
    f: &mana_image::FileState,
    list: &[mana_image::EpollInterest],
) -> Result<(), String> {
    let err = |what: &str| {
        format!(
            "descriptor {} (epoll): {what}: {}",
            f.fd,
            std::io::Error::last_os_error()
        )
    };
    // SAFETY: creating an epoll instance.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(err("cannot make it"));
    }
    place(ep, f)?;
    let at = f.fd;
    for i in list {
        let mut ev = libc::epoll_event {
            events: i.events,
            u64: i.data,
        };
        // SAFETY: EPOLL_CTL_ADD of a restored descriptor with its saved event.
        if unsafe { libc::epoll_ctl(at, libc::EPOLL_CTL_ADD, i.fd, &mut ev) } != 0 {
            return Err(err(&format!("cannot watch descriptor {} again", i.fd)));
        }
    }
    Ok(())
}

/// Makes each Unix socket pair of the image ([`mana_image::FileKind::UnixPair`]) once and
/// sends each end's bytes in flight through the other, so they are readable where they
/// were; both ends moved to `above` or higher. Returns the new descriptor by socket.
fn make_socket_pairs(
    h: &ImageHeader,
    above: i32,
    shared: &std::collections::HashMap<u64, i32>,
) -> Result<std::collections::HashMap<u64, i32>, String> {
    let mut made = std::collections::HashMap::new();
    for f in &h.files {
        let mana_image::FileKind::UnixPair(u) = &f.kind else {
            continue;
        };
        if made.contains_key(&u.socket) || shared.contains_key(&u.socket) {
            continue;
        }
        let ends = new_socket_pair(std::slice::from_ref(h), u, above, true)
            .map_err(|e| format!("descriptor {} (socket {}): {e}", f.fd, u.socket))?;
        made.insert(u.socket, ends[0]);
        if !u.outside {
            made.insert(u.peer, ends[1]);
        }
    }
    Ok(made)
}

/// Makes the socket pair of end `u` as the images `hs` recorded its ends (the bytes
/// readable at each, their shutdowns); [this end, the peer] at `above` or higher. An
/// end whose peer is in none of `hs` gets its bytes back, then end-of-file (its peer
/// closed; the second descriptor is -1).
pub(crate) fn new_socket_pair(
    hs: &[ImageHeader],
    u: &mana_image::UnixPairState,
    above: i32,
    cloexec: bool,
) -> Result<[i32; 2], String> {
    let records = || {
        hs.iter()
            .flat_map(|h| &h.files)
            .filter_map(|g| match &g.kind {
                mana_image::FileKind::UnixPair(v) => Some(v),
                _ => None,
            })
    };
    let data_of = |socket: u64| {
        records()
            .find(|v| v.socket == socket && v.holds_data)
            .map(|v| v.data.as_slice())
    };
    let peer_here = records().any(|v| v.socket == u.peer);
    let dup = if cloexec {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    {
        let err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
        let mut two = [-1i32; 2];
        let kind = if u.seqpacket {
            libc::SOCK_SEQPACKET
        } else {
            libc::SOCK_STREAM
        };
        // SAFETY: `two` is a valid out-array of two.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
                two.as_mut_ptr(),
            )
        } != 0
        {
            return Err(err("cannot make the socket pair"));
        }
        if !peer_here {
            // Its peer was another process's, outside what is restored: the bytes that
            // were readable here, then end-of-file (EPIPE on writing).
            let bytes = data_of(u.socket).unwrap_or(&[]);
            let mut at = 0;
            while at < bytes.len() {
                // SAFETY: writing our own new socket (non-blocking).
                let w =
                    unsafe { libc::write(two[1], bytes[at..].as_ptr().cast(), bytes.len() - at) };
                if w <= 0 {
                    return Err(err("cannot put its bytes back"));
                }
                at += w as usize;
            }
            // SAFETY: closing our temporary; moving the kept end high.
            let high = unsafe {
                libc::close(two[1]);
                libc::fcntl(two[0], libc::F_SETFL, 0);
                let high = libc::fcntl(two[0], dup, above);
                libc::close(two[0]);
                high
            };
            if high < 0 {
                return Err(err("cannot move it out of the way"));
            }
            return Ok([high, -1]);
        }
        // two[0] is this end, two[1] the peer: bytes readable here are sent from there
        // (a seqpacket pair's message by message).
        let packets_of = |socket: u64| {
            records()
                .find(|v| v.socket == socket && v.holds_data)
                .map_or(&[][..], |v| v.packets.as_slice())
        };
        for (from, socket) in [(two[1], u.socket), (two[0], u.peer)] {
            let bytes = data_of(socket).unwrap_or(&[]);
            if u.seqpacket {
                let mut at = 0usize;
                for &n in packets_of(socket) {
                    let msg = &bytes[at..at + n as usize];
                    // SAFETY: sending one message from our buffer on our new socket.
                    let w = unsafe { libc::send(from, msg.as_ptr().cast(), msg.len(), 0) };
                    if w != msg.len() as isize {
                        return Err(err(&format!(
                            "cannot put its {} messages in flight back",
                            packets_of(socket).len()
                        )));
                    }
                    at += n as usize;
                }
                continue;
            }
            let mut at = 0;
            while at < bytes.len() {
                // SAFETY: writing our own new socket (non-blocking).
                let w = unsafe { libc::write(from, bytes[at..].as_ptr().cast(), bytes.len() - at) };
                if w <= 0 {
                    return Err(err(&format!(
                        "cannot put its {} bytes in flight back",
                        bytes.len()
                    )));
                }
                at += w as usize;
            }
        }
        let shutdown_of = |socket: u64| records().find(|v| v.socket == socket).map(|v| v.shutdown);
        let (mine, theirs) = (
            shutdown_of(u.socket).unwrap_or(0),
            shutdown_of(u.peer).unwrap_or(0),
        );
        // After the bytes in flight: an end that stopped sending (its peer then reads
        // end-of-file after them), an end that stopped receiving on its own.
        for (end, own, other) in [(two[0], mine, theirs), (two[1], theirs, mine)] {
            // SAFETY: shutdown of our new socket.
            unsafe {
                if own & 2 != 0 {
                    libc::shutdown(end, libc::SHUT_WR);
                }
                if own & 1 != 0 && other & 2 == 0 {
                    libc::shutdown(end, libc::SHUT_RD);
                }
            }
        }
        let mut high = [-1i32; 2];
        for (i, end) in two.into_iter().enumerate() {
            // SAFETY: blocking again (each descriptor's own flags are set when placed);
            // moved high, the low one closed.
            high[i] = unsafe {
                libc::fcntl(end, libc::F_SETFL, 0);
                let h = libc::fcntl(end, dup, above);
                libc::close(end);
                h
            };
            if high[i] < 0 {
                return Err(err("cannot move it out of the way"));
            }
        }
        Ok(high)
    }
}

/// Puts one end `end` of a remade pipe at the descriptor number `f` had, with its flags.
fn place_pipe_end(f: &mana_image::FileState, end: i32) -> Result<(), String> {
    let flags = if f.cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 of our descriptor onto the saved number, then its status flags.
    unsafe {
        if libc::dup3(end, f.fd, flags) < 0 {
            return Err(format!(
                "cannot place descriptor {}: {}",
                f.fd,
                std::io::Error::last_os_error()
            ));
        }
        libc::fcntl(
            f.fd,
            libc::F_SETFL,
            f.flags & (libc::O_NONBLOCK | libc::O_DIRECT),
        );
    }
    Ok(())
}

/// An inherited descriptor ([`mana_image::FileKind::Inherited`]): the restarting
/// process's own descriptor of that number if it is of the same kind (a pipe: the same
/// direction) — as stdio is taken — else a stand-in: a pipe whose write end is closed
/// (reads see end-of-file) or whose read end `drain` collects (writes succeed; default
/// SIGPIPE never fires), a socket pair whose other end is shut for writing and drained,
/// or `/dev/null`. Stand-in ends kept for draining are moved to `above` or higher, out of
/// every restored descriptor's way.
fn restore_inherited(
    f: &mana_image::FileState,
    kind: mana_image::InheritedKind,
    above: i32,
    drain: &mut Vec<i32>,
) -> Result<(), String> {
    use mana_image::InheritedKind;
    let access = f.flags & libc::O_ACCMODE;
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of any number into a valid out-buffer is harmless.
    let open = unsafe { libc::fstat(f.fd, &mut st) } == 0;
    let own = if open {
        // SAFETY: F_GETFL on an open descriptor.
        let own_access = unsafe { libc::fcntl(f.fd, libc::F_GETFL) } & libc::O_ACCMODE;
        match (kind, st.st_mode & libc::S_IFMT) {
            (InheritedKind::Pipe, libc::S_IFIFO) => own_access == access,
            (InheritedKind::Socket, libc::S_IFSOCK) | (InheritedKind::Device, libc::S_IFCHR) => {
                true
            }
            _ => false,
        }
    } else {
        false
    };
    let set_cloexec = |fd: i32| {
        let v = if f.cloexec { libc::FD_CLOEXEC } else { 0 };
        // SAFETY: F_SETFD on a descriptor we hold.
        unsafe { libc::fcntl(fd, libc::F_SETFD, v) };
    };
    if own {
        set_cloexec(f.fd);
        tracing::info!(fd = f.fd, was = %f.path, "inherited descriptor: the restarting process's own descriptor of that number");
        return Ok(());
    }
    let err = |what: &str| {
        format!(
            "descriptor {} ({}): {what}: {}",
            f.fd,
            f.path,
            std::io::Error::last_os_error()
        )
    };
    let mut two = [-1i32; 2];
    // SAFETY: plain descriptor operations; `two` is a valid out-array of two.
    let (stand_in, other, said) = unsafe {
        match kind {
            InheritedKind::Pipe => {
                if libc::pipe2(two.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                    return Err(err("cannot make a stand-in pipe"));
                }
                if access == libc::O_RDONLY {
                    libc::close(two[1]);
                    (two[0], -1, "reads see end-of-file")
                } else {
                    (two[1], two[0], "writes go to a pipe that is drained")
                }
            }
            InheritedKind::Socket => {
                if libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    two.as_mut_ptr(),
                ) != 0
                {
                    return Err(err("cannot make a stand-in socket"));
                }
                libc::shutdown(two[1], libc::SHUT_WR);
                (two[0], two[1], "reads see end-of-file, writes are drained")
            }
            InheritedKind::Device | InheritedKind::Other => {
                let fd = libc::open(c"/dev/null".as_ptr(), access | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(err("cannot open /dev/null as its stand-in"));
                }
                (
                    fd,
                    -1,
                    "/dev/null: reads see end-of-file, writes are discarded",
                )
            }
        }
    };
    if other >= 0 {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold.
        let high = unsafe { libc::fcntl(other, libc::F_DUPFD_CLOEXEC, above) };
        // SAFETY: our temporary.
        unsafe { libc::close(other) };
        if high < 0 {
            return Err(err("cannot move the stand-in's other end"));
        }
        drain.push(high);
    }
    place(stand_in, f)?;
    tracing::info!(fd = f.fd, was = %f.path, "inherited descriptor: the restarting process has no compatible one; a stand-in: {said}");
    Ok(())
}

/// A process that reads and discards everything written to the stand-ins' other ends
/// `fds` until each is closed by the restored program: double-forked, so it is no child
/// of the program (a `waitpid(-1)` never sees it); named `mana-drain`. Holds nothing else;
/// at most 64 descriptors (one more for each 64 more).
fn start_drainer(fds: &[i32]) -> Result<(), String> {
    // SAFETY: fork in the single-threaded restarter; the child only makes system calls
    // and exits without returning.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!(
            "cannot start the drain process: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        // SAFETY: the intermediate child forks once more and exits at once; the grandchild
        // closes every descriptor but `fds` and drains them (raw system calls only).
        unsafe {
            if libc::fork() != 0 {
                libc::_exit(0);
            }
            libc::setsid();
            libc::prctl(libc::PR_SET_NAME, c"mana-drain".as_ptr());
            let mut fds_all = [0i32; 64];
            let n = fds.len().min(64);
            fds_all[..n].copy_from_slice(&fds[..n]);
            for fd in 0..(fds_all[..n].iter().copied().max().unwrap_or(0)) {
                if !fds_all[..n].contains(&fd) {
                    libc::close(fd);
                }
            }
            libc::syscall(
                libc::SYS_close_range,
                fds_all[..n].iter().copied().max().unwrap_or(0) + 1,
                u32::MAX,
                0,
            );
            // No allocation here (a forked child of a process that may have threads).
            let mut polls = [libc::pollfd {
                fd: -1,
                events: libc::POLLIN,
                revents: 0,
            }; 64];
            for (p, &fd) in polls.iter_mut().zip(&fds_all[..n]) {
                p.fd = fd;
            }
            let polls = &mut polls[..n];
            let mut buf = [0u8; 65536];
            while polls.iter().any(|p| p.fd >= 0) {
                if libc::poll(polls.as_mut_ptr(), n as libc::nfds_t, -1) < 0 {
                    continue;
                }
                for p in polls.iter_mut().filter(|p| p.fd >= 0 && p.revents != 0) {
                    let r = libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len());
                    if r == 0 || (r < 0 && *libc::__errno_location() != libc::EINTR) {
                        libc::close(p.fd);
                        p.fd = -1;
                    }
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: reaps the intermediate child; our copies of the drained ends are closed
    // (the drainer holds them).
    unsafe {
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        for &fd in fds {
            libc::close(fd);
        }
    }
    Ok(())
}

fn write_mailbox(
    h: &ImageHeader,
    r: &loader::Restorer,
    generation: u64,
    status_file: &Path,
    ckpt_dir: &Path,
    env: Option<&EnvBlob>,
    ids: &ns::Ids,
) -> Result<(), String> {
    let at = h.restart_mailbox;
    let size = std::mem::size_of::<RestartMailbox>() as u64;
    // The mailbox may straddle two adjacent regions (e.g. .data and .bss): check coverage.
    let mut covered = at;
    let mut writable: Vec<&Region> = h
        .regions
        .iter()
        .filter(|r| r.prot & mana_image::prot::WRITE != 0)
        .collect();
    writable.sort_by_key(|r| r.start);
    for reg in writable {
        if reg.start <= covered && covered < reg.end {
            covered = reg.end;
        }
    }
    let ok = covered >= at + size;
    if !ok || !at.is_multiple_of(8) {
        return Err(format!(
            "image's runtime mailbox {at:#x} is not in a writable region (corrupt image?)"
        ));
    }
    let mut mb = RestartMailbox {
        magic: MAILBOX_MAGIC,
        restorer_start: r.base,
        restorer_len: r.len,
        generation,
        status_file: [0; 4096],
        ckpt_dir: [0; 4096],
        env_start: env.map_or(0, |e| e.start),
        env_len: env.map_or(0, |e| e.len),
        visible_pid: match ids {
            ns::Ids::Kept { visible_pid, .. } => *visible_pid as i64,
            ns::Ids::New => 0,
        },
        // A descendant's parent is restored with it: its getppid needs no help.
        ns_root: matches!(ids, ns::Ids::Kept { ns_root: true, .. }) as u64,
    };
    let put = |dst: &mut [u8; 4096], p: &Path| -> Result<(), String> {
        let b = p.as_os_str().as_bytes();
        if b.len() >= dst.len() {
            return Err(format!("path too long: {}", p.display()));
        }
        dst[..b.len()].copy_from_slice(b);
        Ok(())
    };
    put(&mut mb.status_file, status_file)?;
    put(&mut mb.ckpt_dir, ckpt_dir)?;
    // SAFETY: `at` lies in a restored writable region (checked above), aligned.
    unsafe { std::ptr::write(at as *mut RestartMailbox, mb) };
    Ok(())
}

/// Ranges the final stage must not unmap: the restored regions, the final stage itself,
/// and the special mappings it moves.
/// An MPI job must restart with as many processes as it had: the launcher says how many
/// it started (`PMI_SIZE`, `SLURM_NTASKS`, `OMPI_COMM_WORLD_SIZE`).
fn check_launcher_world_size(world_size: u32, gen_dir: &Path) -> Result<(), String> {
    for var in ["PMI_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"] {
        if let Ok(v) = std::env::var(var) {
            let n: u32 = v
                .parse()
                .map_err(|_| format!("{var}={v} is not a process count"))?;
            if n != world_size {
                return Err(format!(
                    "the launcher started {n} processes ({var}), but {} holds a job of {world_size} ranks: restart with -n {world_size}",
                    gen_dir.display()
                ));
            }
            return Ok(());
        }
    }
    Ok(())
}

/// Moves the launcher's PMI connection (`PMI_FD`) above every descriptor the image
/// restores; returns its new number.
fn move_pmi_fd(h: &ImageHeader) -> Result<Option<i32>, String> {
    let Some(fd) = std::env::var("PMI_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return Ok(None);
    };
    let above = h.files.iter().map(|f| f.fd).max().unwrap_or(2).max(1000) + 1;
    // SAFETY: duplicating a descriptor we inherited; the original is closed below.
    let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD, above) };
    if moved < 0 {
        return Err(format!(
            "cannot move the launcher's PMI connection (descriptor {fd}): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: closing the original number, which the image may need.
    unsafe { libc::close(fd) };
    Ok(Some(moved))
}

/// The restart's environment, for the restored process's new lower half, in a mapping of
/// its own that the final stage keeps (NUL-separated `NAME=VALUE` strings).
struct EnvBlob {
    start: u64,
    len: u64,
}

impl EnvBlob {
    fn new(pmi_fd: Option<i32>) -> Result<EnvBlob, String> {
        let mut blob = Vec::new();
        for (k, v) in std::env::vars_os() {
            let v = if k == "PMI_FD" {
                pmi_fd.map_or(v, |fd| fd.to_string().into())
            } else {
                v
            };
            blob.extend_from_slice(k.as_bytes());
            blob.push(b'=');
            blob.extend_from_slice(v.as_bytes());
            blob.push(0);
        }
        let len = blob.len().div_ceil(4096) * 4096;
        // SAFETY: a fresh anonymous mapping, filled below.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len.max(4096),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err("cannot map the restart environment".into());
        }
        // SAFETY: `p` has room for `blob.len()` bytes.
        unsafe { core::ptr::copy_nonoverlapping(blob.as_ptr(), p as *mut u8, blob.len()) };
        Ok(EnvBlob {
            start: p as u64,
            len: len.max(4096) as u64,
        })
    }
}

fn keep_ranges(h: &ImageHeader, r: &loader::Restorer, vp: &VdsoPlan) -> Vec<(u64, u64)> {
    let mut keep: Vec<(u64, u64)> = h.regions.iter().map(|r| (r.start, r.end)).collect();
    keep.push((r.base, r.base + r.len));
    keep.extend(vp.own.iter().copied());
    if let Some(t) = vp.target {
        keep.push(t);
    }
    keep.sort_unstable();
    keep
}

fn read_maps(buf: &mut [u8]) -> Result<usize, String> {
    let mut f = std::fs::File::open(c"/proc/self/maps".to_str().unwrap())
        .map_err(|e| format!("/proc/self/maps: {e}"))?;
    let mut n = 0;
    loop {
        match f.read(&mut buf[n..]) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) => return Err(format!("/proc/self/maps: {e}")),
        }
        if n == buf.len() {
            return Err("/proc/self/maps is larger than 1 MiB".into());
        }
    }
}

/// Calls `f(start, end, name)` for every piece of the restarter's own mappings that is
/// not in `keep` (sorted). Allocation-free.
fn for_each_unmap(maps: &[u8], keep: &[(u64, u64)], mut f: impl FnMut(u64, u64, &[u8])) {
    for line in maps.split(|&c| c == b'\n') {
        let Some(dash) = line.iter().position(|&c| c == b'-') else {
            continue;
        };
        let Some(sp) = line.iter().position(|&c| c == b' ') else {
            continue;
        };
        let (Some(s), Some(e)) = (parse_hex(&line[..dash]), parse_hex(&line[dash + 1..sp])) else {
            continue;
        };
        // name = sixth whitespace-separated field
        let mut fields = 0;
        let mut i = 0;
        while i < line.len() && fields < 5 {
            while i < line.len() && line[i] != b' ' {
                i += 1;
            }
            while i < line.len() && line[i] == b' ' {
                i += 1;
            }
            fields += 1;
        }
        let name = &line[i.min(line.len())..];
        if name == b"[vsyscall]" {
            continue;
        }
        let mut cur = s;
        for &(ks, ke) in keep {
            if ke <= cur || ks >= e {
                continue;
            }
            if ks > cur {
                f(cur, ks, name);
            }
            cur = cur.max(ke);
            if cur >= e {
                break;
            }
        }
        if cur < e {
            f(cur, e, name);
        }
    }
}

fn parse_hex(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    if b.is_empty() {
        return None;
    }
    for &c in b {
        v = v.checked_mul(16)? + (c as char).to_digit(16)? as u64;
    }
    Some(v)
}

#[allow(dead_code)]
const _: u64 = PAGE_SIZE;
