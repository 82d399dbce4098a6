//! Restoring the process's ids (issue 11, item 3; docs/process-state.md "Ids").
//!
//! The restored process is made in a pid namespace of its own, with the pid it had
//! (`clone3` with `set_tid`), and the final stage re-creates every thread with its thread
//! id. Setting ids needs `CAP_CHECKPOINT_RESTORE` in the user namespace that owns the pid
//! namespace: root has it; anybody else gets it in a user namespace of their own, made
//! together with the pid namespace (their own uid and gid mapped onto themselves).
//!
//! Three processes:
//! * the **outer** one — the process the launcher (`srun`, `mpiexec`, a shell) started.
//!   It never changes namespaces: it waits, forwards the signals sent to it, and ends as
//!   the restored process ended (its exit code, or killed by the same signal);
//! * the namespace's **init** (pid 1, named `mana-init`): mounts a `/proc` of the
//!   namespace (so `/proc/PID` and `/proc/self/task/TID` agree with `getpid` and
//!   `gettid`), makes the restored process with its pid, forwards signals to it, reaps
//!   orphans, and reports the restored process's end to the outer one. It dies with the
//!   outer one (`PR_SET_PDEATHSIG`), and the kernel ends every process of the namespace
//!   with it;
//! * the **restored** process, which goes on with the restart.
//!
//! Anything that fails before the restored process exists leaves the outer process as it
//! was: the restart goes on there with new ids, after one warning naming the cause.

use mana_image::ImageHeader;
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
    },
    /// New ids (asked for, or the namespace could not be made).
    New,
}

/// `struct clone_args` of the kernel (v2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

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

/// Makes the namespace and the restored process, or says why not. Must be called while
/// the restarter is single-threaded, before it maps the image.
pub fn enter(h: &ImageHeader) -> Ids {
    match try_enter(h) {
        Ok(ids) => ids,
        Err(why) => {
            warn!("the restored process gets new process and thread ids: {why}");
            Ids::New
        }
    }
}

fn try_enter(h: &ImageHeader) -> Result<Ids, String> {
    let wanted = wanted_ids(h)?;
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(PID_MAX_LIMIT);
    if let Some(&big) = wanted.iter().find(|&&t| t >= pid_max) {
        return Err(format!("id {big} is above this node's pid_max {pid_max}"));
    }
    let visible_pid = std::process::id() as i32;
    let caps = capget()?;
    let (to_init, from_outer) = pipe()?;
    let (to_outer, from_init) = pipe()?;
    // Root makes the pid namespace directly; anybody else inside a user namespace.
    let mut user_ns = false;
    let mut init = clone_ns(libc::CLONE_NEWPID | libc::CLONE_NEWNS);
    if init == Err(libc::EPERM) {
        user_ns = true;
        init = clone_ns(libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS);
    }
    let init = init.map_err(|e| {
        format!(
            "cannot make a pid namespace: {}",
            std::io::Error::from_raw_os_error(e)
        )
    })?;
    if init == 0 {
        // The namespace's init: never returns but as the restored process.
        close(to_init);
        close(from_init);
        match init_main(from_outer, to_outer, h.pid, &wanted) {
            Ok(()) => {
                return Ok(Ids::Kept {
                    visible_pid,
                    drop_caps: user_ns.then_some(caps),
                })
            }
            Err(e) => {
                let _ = write_all(to_outer, format!("E{e}").as_bytes());
                // SAFETY: ends this child without running the parent's exit handlers.
                unsafe { libc::_exit(1) }
            }
        }
    }
    close(from_outer);
    close(to_outer);
    let granted = if user_ns {
        map_ids(init)
    } else {
        Ok(())
    };
    let go = match &granted {
        Ok(()) => b"G",
        Err(_) => b"X",
    };
    let _ = write_all(to_init, go);
    let mut first = [0u8; 1];
    let got = read_some(from_init, &mut first);
    if got == 1 && first[0] == b'R' {
        close(to_init);
        supervise(init, from_init)
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
    close(to_init);
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

fn clone_ns(flags: i32) -> Result<i32, i32> {
    let args = CloneArgs {
        flags: flags as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this
    // single-threaded process and continues below with its own memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        Err(errno().raw_os_error().unwrap_or(libc::EINVAL))
    } else {
        Ok(r as i32)
    }
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

/// The namespace's init. Returns in the restored process (its child), never in itself.
fn init_main(from_outer: i32, to_outer: i32, pid: i32, wanted: &[i32]) -> Result<(), String> {
    // SAFETY: prctl on this process: die with the outer process; a name for ps.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        libc::prctl(libc::PR_SET_NAME, c"mana-init".as_ptr());
    }
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
    mount(None, "/", None, libc::MS_REC | libc::MS_SLAVE)?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    // Ids handed out from now on (the restarter's helper processes, threads, the
    // program's later children) come after every saved one.
    let top = wanted.iter().copied().max().unwrap_or(pid);
    std::fs::write("/proc/sys/kernel/ns_last_pid", top.to_string())
        .map_err(|e| format!("cannot write ns_last_pid in the namespace: {e}"))?;
    let set_tid = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: set_tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: a fork (no CLONE_VM) of this single-threaded process with a chosen pid.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if child < 0 {
        return Err(format!("cannot make pid {pid} in the namespace: {}", errno()));
    }
    if child == 0 {
        close(to_outer);
        // SAFETY: the restored process goes with the namespace's init.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        return Ok(());
    }
    let child = child as i32;
    let _ = write_all(to_outer, b"R");
    forward_signals(child);
    // Reap everything; report the restored process's end and go (the kernel then ends
    // the rest of the namespace).
    loop {
        let mut st = 0;
        // SAFETY: waiting for any child of this process.
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r == child {
            let _ = write_all(to_outer, &st.to_ne_bytes());
            // SAFETY: ends init (and with it the namespace).
            unsafe { libc::_exit(0) }
        }
        if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
            // SAFETY: as above: nothing left to wait for.
            unsafe { libc::_exit(0) }
        }
    }
}

/// The outer process from here on: passes signals on to the namespace's init, waits,
/// and ends as the restored process did.
fn supervise(init: i32, from_init: i32) -> ! {
    // Only the report pipe and stdio are kept: the restored process owns the rest.
    keep_only(from_init);
    forward_signals(init);
    let status = wait_for(init);
    let mut st = [0u8; 4];
    let st = if read_exact(from_init, &mut st) {
        i32::from_ne_bytes(st)
    } else {
        status
    };
    end_like(st)
}

fn end_like(st: i32) -> ! {
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

fn keep_only(fd: i32) {
    // SAFETY: closes descriptors of this (waiting) process only.
    unsafe {
        if fd > 3 {
            libc::syscall(libc::SYS_close_range, 3, fd - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, fd + 1, u32::MAX, 0);
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

fn capget() -> Result<[u32; 6], String> {
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

fn read_exact(fd: i32, b: &mut [u8]) -> bool {
    let mut got = 0;
    while got < b.len() {
        let n = read_some(fd, &mut b[got..]);
        if n == 0 {
            return false;
        }
        got += n;
    }
    true
}
