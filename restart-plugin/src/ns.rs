//! Restoring the process's ids (issue 11, item 3; docs/process-state.md "Ids").
//!
//! The restored process is made in a pid namespace with the pid it had (`clone3` with
//! `set_tid`), and the final stage re-creates every thread with its thread id. Setting
//! ids needs `CAP_CHECKPOINT_RESTORE` in the user namespace that owns the pid namespace:
//! root has it; anybody else gets it in a user namespace of their own, made together with
//! the pid namespace (their own uid and gid mapped onto themselves). The owner of a user
//! namespace may enter it from outside, so a user's other processes can join.
//!
//! Processes:
//! * the namespace's **init** (pid 1 there, named `mana-init`), made by the first
//!   restarter: it mounts a `/proc` of the namespace (so `/proc/PID` and
//!   `/proc/self/task/TID` agree with `getpid` and `gettid`), reaps orphans, and ends
//!   when no other process is left in the namespace;
//! * the **outer** process of each restart — the one the launcher (`srun`, `mpiexec`, a
//!   shell) started: it enters the namespace's pid and mount namespaces for its children,
//!   makes the restored process there as its child, passes on the signals sent to it,
//!   and ends as the restored process ended (its exit code, or killed by the same signal);
//! * the **restored** process (dies with the outer one: `PR_SET_PDEATHSIG`).
//!
//! The MPI ranks restored from one generation on one machine share one namespace — the
//! MPI library's shared-memory transports name their peers by pid (UCX reads
//! `/proc/PID/stat` of each and copies between processes with `process_vm_readv`), and
//! take peers on the same machine for shared-memory peers even when a launcher calls them
//! nodes — found through a rendezvous file in `/tmp` named after the generation's
//! directory. Any other process gets a namespace of its own.
//!
//! Anything that fails before the restored process exists leaves the restart going on
//! with new ids, after one warning naming the cause.

use mana_image::ImageHeader;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use tracing::warn;

/// What the restart goes on with.
pub enum Ids {
    /// This is the restored process, in its own pid namespace with the saved pid.
    Kept {
        /// The pid the launcher and the node see: the outer process's.
        visible_pid: i32,
        /// Capabilities to go back to (`capset` data: effective, permitted, inheritable
        /// for bits 0–31 then 32–63) when a user namespace gave this process more.
        drop_caps: Option<[u32; 6]>,
        /// Whether it is the namespace's root process (its parent is outside): false
        /// for a descendant restored with it (tree.rs).
        ns_root: bool,
    },
    /// New ids (asked for, or the namespace could not be made).
    New,
}

use mana_restart_core::plan::CloneArgs;

/// Largest pid the kernel ever hands out (`PID_MAX_LIMIT` on 64-bit).
pub const PID_MAX_LIMIT: i32 = 4 << 20;

/// Signals the outer and init processes pass on (those a user or a launcher sends to
/// stop, suspend or notify a job). Terminal-generated ones reach the restored process
/// directly (same process group) and are not passed on twice.
const FORWARDED: [i32; 9] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGXCPU,
];

/// Where a forwarding handler sends what it receives.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Makes (or joins) the namespace and the restored process in it, or says why not. Must
/// be called while the restarter is single-threaded, before it maps the image.
pub fn enter(h: &ImageHeader, manifest_max_id: i32, gen_dir: &Path) -> Ids {
    match try_enter(h, manifest_max_id, gen_dir) {
        Ok(ids) => ids,
        Err(why) => {
            warn!("the restored process gets new process and thread ids: {why}");
            Ids::New
        }
    }
}

fn try_enter(h: &ImageHeader, manifest_max_id: i32, gen_dir: &Path) -> Result<Ids, String> {
    let wanted = wanted_ids(h)?;
    // Every id saved in the generation (the ranks restored on this node share the
    // namespace): new ids are handed out above all of them.
    let top = wanted.iter().copied().fold(manifest_max_id, i32::max);
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(PID_MAX_LIMIT);
    if let Some(&big) = wanted.iter().find(|&&t| t >= pid_max) {
        return Err(format!("id {big} is above this node's pid_max {pid_max}"));
    }
    let visible_pid = std::process::id() as i32;
    let caps = capget()?;
    let shared = h.mpi.is_some() && mana_coordinator::launcher_rank_var().is_some();
    let (init, rendezvous) = if shared {
        join_or_create(gen_dir)?
    } else {
        (create(None)?, None)
    };
    let user_ns = join(init)?;
    // The restored process, as this process's child in the namespace.
    let set_tid = [h.pid];
    let mut args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: set_tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    let mut child = clone3(&args);
    let mut kept = true;
    if child == Err(libc::EEXIST) {
        // Another rank restored on this node had this pid on its own node.
        warn!(
            pid = h.pid,
            "the saved pid is taken in this node's namespace (another process restored here had it): new ids"
        );
        args.set_tid = 0;
        args.set_tid_size = 0;
        child = clone3(&args);
        kept = false;
    }
    let child = child.map_err(|e| {
        format!(
            "cannot make pid {} in the namespace: {}",
            h.pid,
            std::io::Error::from_raw_os_error(e)
        )
    })?;
    if child == 0 {
        // SAFETY: the restored process dies with the outer process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if !kept {
            return Ok(Ids::New);
        }
        // Ids handed out from now on (the restarter's helper processes, threads, the
        // program's later children) come after every saved one.
        raise_last_pid(top, rendezvous.as_deref());
        return Ok(Ids::Kept {
            visible_pid,
            drop_caps: user_ns.then_some(caps),
            ns_root: true,
        });
    }
    supervise(child)
}

/// The ids to restore: the pid, then every thread's id (the leader's is the pid).
/// An image that names impossible ids is refused by the validator before this.
fn wanted_ids(h: &ImageHeader) -> Result<Vec<i32>, String> {
    if h.pid <= 1 {
        return Err(format!("the image's pid {} cannot be given back", h.pid));
    }
    let mut ids = vec![h.pid];
    ids.extend(h.threads.iter().filter(|t| !t.is_main).map(|t| t.tid));
    Ok(ids)
}

pub(crate) fn clone3(args: &CloneArgs) -> Result<i32, i32> {
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this
    // single-threaded process and continues with its own memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        Err(errno().raw_os_error().unwrap_or(libc::EINVAL))
    } else {
        Ok(r as i32)
    }
}

/// Makes a namespace and its init; returns the init's pid (on this node). `publish`: the
/// rendezvous file the init removes when it ends.
fn create(publish: Option<&Path>) -> Result<i32, String> {
    let (to_init, from_outer) = pipe()?;
    let (to_outer, from_init) = pipe()?;
    // Root makes the pid namespace directly; anybody else inside a user namespace.
    let ns_args = |flags: i32| CloneArgs {
        flags: flags as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    let mut user_ns = false;
    let mut init = clone3(&ns_args(libc::CLONE_NEWPID | libc::CLONE_NEWNS));
    if init == Err(libc::EPERM) {
        user_ns = true;
        init = clone3(&ns_args(
            libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS,
        ));
    }
    let init = init.map_err(|e| {
        format!(
            "cannot make a pid namespace: {}",
            std::io::Error::from_raw_os_error(e)
        )
    })?;
    if init == 0 {
        close(to_init);
        close(from_init);
        let e = init_main(from_outer, to_outer, publish);
        let _ = write_all(to_outer, format!("E{e}").as_bytes());
        // SAFETY: ends this child without running the parent's exit handlers.
        unsafe { libc::_exit(1) }
    }
    close(from_outer);
    close(to_outer);
    let granted = if user_ns { map_ids(init) } else { Ok(()) };
    let _ = write_all(to_init, if granted.is_ok() { b"G" } else { b"X" });
    close(to_init);
    let mut first = [0u8; 1];
    let got = read_some(from_init, &mut first);
    if got == 1 && first[0] == b'R' {
        close(from_init);
        return Ok(init);
    }
    let mut why = Vec::new();
    if got == 1 && first[0] == b'E' {
        let mut buf = [0u8; 512];
        loop {
            let n = read_some(from_init, &mut buf);
            if n == 0 {
                break;
            }
            why.extend_from_slice(&buf[..n]);
        }
    }
    close(from_init);
    let status = wait_for(init);
    granted?;
    if why.is_empty() {
        return Err(format!(
            "the namespace's first process ended early (wait status {status:#x})"
        ));
    }
    Err(String::from_utf8_lossy(&why).into_owned())
}

/// Maps the user's own uid and gid onto themselves in the child's user namespace (all
/// an unprivileged user may map); supplementary groups stay as they are.
fn map_ids(child: i32) -> Result<(), String> {
    // SAFETY: plain queries of this process's ids.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let put = |file: &str, text: String| {
        std::fs::write(format!("/proc/{child}/{file}"), text)
            .map_err(|e| format!("cannot write /proc/{child}/{file}: {e}"))
    };
    put("uid_map", format!("{uid} {uid} 1\n"))?;
    put("setgroups", "deny".to_string())?;
    put("gid_map", format!("{gid} {gid} 1\n"))
}

/// The namespace's init; returns only to report why it cannot serve.
fn init_main(from_outer: i32, to_outer: i32, publish: Option<&Path>) -> String {
    // SAFETY: prctl on this process: a name for ps.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"mana-init".as_ptr()) };
    // The outer process says when the user namespace's ids are written (or that they
    // could not be); end of file: it is gone.
    let mut go = [0u8; 1];
    if read_some(from_outer, &mut go) != 1 || go[0] != b'G' {
        // SAFETY: nothing to report to; end.
        unsafe { libc::_exit(1) }
    }
    close(from_outer);
    // Mounts made here stay here: the copy of the mount tree receives mounts from the
    // node but never sends any back.
    if let Err(e) = mount(None, "/", None, libc::MS_REC | libc::MS_SLAVE) {
        return e;
    }
    if let Err(e) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    ) {
        return e;
    }
    let publish = publish.map(Path::to_path_buf);
    let _ = write_all(to_outer, b"R");
    close(to_outer);
    // Nothing of the job's: stdio on /dev/null (a reader of the job's output sees its end
    // when the job's processes end), every other descriptor closed.
    keep_only(-1);
    // SAFETY: opening /dev/null and moving it onto stdio.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    // SAFETY: the init does not take part in the job: no terminal signals.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    // Reap orphans; end when alone (after a first member came, or 30 s).
    let started = std::time::Instant::now();
    let mut seen = false;
    loop {
        loop {
            let mut st = 0;
            // SAFETY: reaping any child of this process without blocking.
            if unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) } <= 0 {
                break;
            }
        }
        let others = others_in_namespace();
        seen |= others;
        if !others && (seen || started.elapsed() > std::time::Duration::from_secs(30)) {
            if let Some(p) = &publish {
                let _ = std::fs::remove_file(p);
            }
            // SAFETY: ends the init, the namespace with it (empty by now).
            unsafe { libc::_exit(0) }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether any process but the init lives in the namespace (its own `/proc`).
fn others_in_namespace() -> bool {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|p| p != 1)
            })
        })
        .unwrap_or(false)
}

/// Enters the namespaces of `init` for this process's children (pid) and itself (user,
/// mount). Returns whether a user namespace was entered.
fn join(init: i32) -> Result<bool, String> {
    let open = |what: &str| {
        std::fs::File::open(format!("/proc/{init}/ns/{what}"))
            .map_err(|e| format!("cannot open the namespace's {what} namespace: {e}"))
    };
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let user = open("user")?;
    let own_user =
        std::fs::metadata("/proc/self/ns/user").map_err(|e| format!("/proc/self/ns/user: {e}"))?;
    let other_user = user.metadata().map_err(|e| e.to_string())?.ino() != own_user.ino();
    let (pid, mnt) = (open("pid")?, open("mnt")?);
    let enter = |f: &std::fs::File, kind: i32, what: &str| {
        // SAFETY: setns on a namespace descriptor we opened.
        if unsafe { libc::setns(f.as_raw_fd(), kind) } != 0 {
            return Err(format!(
                "cannot enter the namespace's {what} namespace: {}",
                errno()
            ));
        }
        Ok(())
    };
    if other_user {
        enter(&user, libc::CLONE_NEWUSER, "user")?;
    }
    enter(&pid, libc::CLONE_NEWPID, "pid")?;
    enter(&mnt, libc::CLONE_NEWNS, "mount")?;
    Ok(other_user)
}

/// The namespace of the MPI ranks restored from the generation `gen_dir` on this machine:
/// joined if another rank made it, else made and published.
fn join_or_create(gen_dir: &Path) -> Result<(i32, Option<PathBuf>), String> {
    // SAFETY: a plain query.
    let uid = unsafe { libc::geteuid() };
    let key = mana_image::checksum(gen_dir.as_os_str().as_encoded_bytes());
    let path = PathBuf::from(format!("/tmp/mana-ns-{uid}-{key:016x}"));
    let claim = path.with_extension("claim");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(init) = published(&path, uid) {
            return Ok((init, Some(path)));
        }
        let mine = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&claim);
        if mine.is_ok() {
            // Another rank may have published and dropped its claim between our look and
            // our claim: look again before making a second namespace.
            if let Some(init) = published(&path, uid) {
                let _ = std::fs::remove_file(&claim);
                return Ok((init, Some(path)));
            }
            let made = create(Some(&path));
            if let Ok(init) = made {
                let tmp = path.with_extension("tmp");
                let text = format!("{init} {}\n", start_time(init).unwrap_or(0));
                let _ = std::fs::remove_file(&tmp);
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    warn!(path = %path.display(), "cannot publish this node's namespace for the other ranks: {e}");
                }
            }
            let _ = std::fs::remove_file(&claim);
            return made.map(|init| (init, Some(path)));
        }
        // A claim left by a restarter that died making the namespace goes after 10 s.
        let stale = std::fs::metadata(&claim)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 10));
        if stale {
            let _ = std::fs::remove_file(&claim);
            continue;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "{} never named the namespace another rank of this node makes",
                path.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The init a rendezvous file names, if the file is ours and its init alive.
fn published(path: &Path, uid: u32) -> Option<i32> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if meta.uid() != uid || meta.mode() & 0o022 != 0 || meta.len() > 64 {
        return None;
    }
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (init, start) = (it.next()??, it.next()??);
    let init = i32::try_from(init).ok().filter(|&p| p > 1)?;
    let comm = std::fs::read_to_string(format!("/proc/{init}/comm")).ok()?;
    (comm.trim() == "mana-init" && start_time(init) == Some(start)).then_some(init)
}

/// Field 22 of /proc/PID/stat: the process's start time (clock ticks after boot).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Moves the namespace's last handed-out id up to `top` (ranks sharing a namespace take
/// turns: a lock on their rendezvous file; each raises it to the same value).
fn raise_last_pid(top: i32, rendezvous: Option<&Path>) {
    use std::os::fd::AsRawFd;
    let lock = rendezvous.and_then(|p| std::fs::File::open(p).ok());
    if let Some(f) = &lock {
        // SAFETY: an advisory lock on a descriptor we hold.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    }
    let now = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    if top > now {
        if let Err(e) = std::fs::write("/proc/sys/kernel/ns_last_pid", top.to_string()) {
            warn!("cannot move the namespace's next id past the saved ones: {e}");
        }
    }
}

/// The outer process from here on: passes signals on to the restored process, waits,
/// and ends as it did.
fn supervise(child: i32) -> ! {
    // Only stdio is kept: the restored process owns the rest.
    keep_only(-1);
    forward_signals(child);
    end_like(wait_for(child))
}

pub(crate) fn end_like(st: i32) -> ! {
    if libc::WIFSIGNALED(st) {
        let sig = libc::WTERMSIG(st);
        // SAFETY: this process ends by the signal that ended the restored one, without a
        // core file of its own (the restored process wrote its own, if any).
        unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig)
        }
    }
    let code = if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        1
    };
    // SAFETY: ends the process with the restored process's exit code.
    unsafe { libc::_exit(code) }
}

extern "C" fn pass_on(sig: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // Sent by a process (kill, sigqueue, tgkill): pass on. Sent by the kernel (a
    // terminal's ^C to the process group): the restored process got it too.
    if code <= 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(FORWARD_TO.load(Ordering::Relaxed), sig) };
    }
}

fn forward_signals(to: i32) {
    FORWARD_TO.store(to, Ordering::Relaxed);
    for sig in FORWARDED {
        // SAFETY: installs an async-signal-safe handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = pass_on as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Closes every descriptor above stdio but `fd` (-1: all of them).
fn keep_only(fd: i32) {
    // SAFETY: closes descriptors of this process only (a waiter or the init).
    unsafe {
        if fd > 3 {
            libc::syscall(libc::SYS_close_range, 3, fd - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, fd.max(2) + 1, u32::MAX, 0);
    }
}

fn wait_for(pid: i32) -> i32 {
    loop {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            return st;
        }
        if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
            return 0;
        }
    }
}

pub(crate) fn capget() -> Result<[u32; 6], String> {
    let mut hdr = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this process
    let mut data = [0u32; 6];
    // SAFETY: capget with a v3 header fills two 12-byte records.
    let r = unsafe { libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) };
    if r != 0 {
        return Err(format!("capget: {}", errno()));
    }
    // The kernel's layout is [eff0, perm0, inh0, eff1, perm1, inh1].
    Ok(data)
}

fn mount(src: Option<&str>, target: &str, fstype: Option<&str>, flags: u64) -> Result<(), String> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in a constant");
    let (src_c, target_c, fs_c) = (src.map(c), c(target), fstype.map(c));
    // SAFETY: mount with valid C strings (or null) in this namespace's mount tree.
    let r = unsafe {
        libc::mount(
            src_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fs_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot mount {} on {target} in the namespace: {}",
            fstype.unwrap_or("(propagation)"),
            errno()
        ));
    }
    Ok(())
}

fn pipe() -> Result<(i32, i32), String> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", errno()));
    }
    Ok((p[1], p[0]))
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor this module made.
    unsafe { libc::close(fd) };
}

fn write_all(fd: i32, mut b: &[u8]) -> Result<(), ()> {
    while !b.is_empty() {
        // SAFETY: writing from a valid buffer.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n < 0 && errno().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return Err(());
        }
        b = &b[n as usize..];
    }
    Ok(())
}

fn read_some(fd: i32, b: &mut [u8]) -> usize {
    loop {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
        if n < 0 && errno().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return n.max(0) as usize;
    }
}
