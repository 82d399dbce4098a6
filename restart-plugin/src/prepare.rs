//! What the restarter's first stage decides from an image before it maps anything, as
//! functions of the (validated) header and of this process's own mappings: how `[vdso]`
//! moves, whether the image collides with the restarter, and the final stage's plan. Kept
//! apart from `main.rs` so the fuzz target (`fuzz/`, [`crate::fuzz`]) runs them too.

use crate::plan::{self, Plan};
use mana_image::ImageHeader;

pub struct VdsoPlan {
    pub moves: Vec<plan::VdsoMove>,
    /// Ranges to reserve so the first stage cannot map anything where [vdso] goes.
    pub placeholders: Vec<(u64, u64)>,
    /// The restarter's own special mappings (kept: they are moved, not unmapped).
    pub own: Vec<(u64, u64)>,
    /// Where the block ends up (checked against the restarter's own mappings).
    pub target: Option<(u64, u64)>,
}

/// This process's mappings (start, end, name).
pub fn own_maps() -> Result<Vec<(u64, u64, String)>, String> {
    let text =
        std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    Ok(parse_maps(&text))
}

/// `/proc/PID/maps` text as (start, end, name).
pub fn parse_maps(text: &str) -> Vec<(u64, u64, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (s, e) = it.next()?.split_once('-')?;
            let name = it.nth(4).unwrap_or("").to_string();
            Some((
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
                name,
            ))
        })
        .collect()
}

/// How the restarter's `[vvar]`/`[vdso]` block moves to where the image had it, given
/// this process's mappings `maps`, `vdso_hash(start, end)` (the checksum of this process's
/// vDSO text) and `alloc_tmp(len)` (a temporary area, used when source and target overlap).
pub fn plan_vdso(
    h: &ImageHeader,
    maps: Vec<(u64, u64, String)>,
    vdso_hash: impl FnOnce(u64, u64) -> u64,
    alloc_tmp: impl FnOnce(u64) -> Result<u64, String>,
) -> Result<VdsoPlan, String> {
    let own: Vec<(u64, u64, String)> = maps
        .into_iter()
        .filter(|m| matches!(m.2.as_str(), "[vvar]" | "[vvar_vclock]" | "[vdso]"))
        .collect();
    let mut vp = VdsoPlan {
        moves: vec![],
        placeholders: vec![],
        own: own.iter().map(|m| (m.0, m.1)).collect(),
        target: None,
    };
    let Some(saved) = &h.vdso else { return Ok(vp) };
    let vdso = own
        .iter()
        .find(|m| m.2 == "[vdso]")
        .ok_or("this process has no [vdso]")?;
    let start = own.iter().map(|m| m.0).min().unwrap_or(0);
    let end = own.iter().map(|m| m.1).max().unwrap_or(0);
    if end - start != saved.block_end - saved.block_start
        || vdso.0 - start != saved.vdso_start - saved.block_start
        || vdso_hash(vdso.0, vdso.1) != saved.vdso_hash
    {
        return Err(
            "this kernel's vDSO differs from the one the image was taken under (another kernel version?); restart on a node with the same kernel"
                .into(),
        );
    }
    vp.target = Some((saved.block_start, saved.block_end));
    if start == saved.block_start {
        return Ok(vp);
    }
    let overlap = start < saved.block_end && saved.block_start < end;
    let tmp = if overlap {
        Some(alloc_tmp(end - start)?)
    } else {
        None
    };
    for m in &own {
        let len = m.1 - m.0;
        let dst = saved.block_start + (m.0 - start);
        match tmp {
            Some(t) => {
                vp.moves.push(plan::VdsoMove {
                    src: m.0,
                    dst: t + (m.0 - start),
                    len,
                });
            }
            None => vp.moves.push(plan::VdsoMove { src: m.0, dst, len }),
        }
    }
    if let Some(t) = tmp {
        for m in &own {
            vp.moves.push(plan::VdsoMove {
                src: t + (m.0 - start),
                dst: saved.block_start + (m.0 - start),
                len: m.1 - m.0,
            });
        }
        vp.own.push((t, t + (end - start)));
    } else {
        vp.placeholders
            .push((saved.block_start, saved.block_end - saved.block_start));
    }
    Ok(vp)
}

/// The restorer's own limit on threads (the header's validation allows more).
pub fn check_threads(h: &ImageHeader) -> Result<(), String> {
    if h.threads.len() > plan::MAX_THREADS {
        return Err(format!(
            "image has {} threads; at most {} are supported",
            h.threads.len(),
            plan::MAX_THREADS
        ));
    }
    Ok(())
}

/// The first of the image's ranges (and the `[vdso]` target when it needs a placeholder)
/// that overlaps one of `maps` (the restarter's own), described.
pub fn first_collision(
    h: &ImageHeader,
    vp: &VdsoPlan,
    maps: &[(u64, u64, String)],
) -> Option<String> {
    let mut needed: Vec<(u64, u64, &str)> = h
        .regions
        .iter()
        .map(|r| (r.start, r.end, r.name.as_str()))
        .collect();
    if let Some((s, e)) = vp.target {
        if vp.placeholders.iter().any(|p| p.0 == s) {
            needed.push((s, e, "[vdso]"));
        }
    }
    for (ns, ne, nname) in &needed {
        for (ms, me, mname) in maps {
            if mname == "[vsyscall]" || !(ms < ne && ns < me) {
                continue;
            }
            return Some(format!("image region {ns:#x}-{ne:#x} {nname} collides with the restarter's mapping {ms:#x}-{me:#x} {mname}"));
        }
    }
    None
}

/// Fills the final stage's plan `p` from a validated header: vDSO moves, the mm layout
/// (when the kernel would accept it), signal actions, the descriptors to keep, and each
/// thread with its stack top in `stacks`.
pub fn fill_plan(
    p: &mut Plan,
    stacks: &[u64],
    h: &ImageHeader,
    vp: &VdsoPlan,
    keep_fds: &[i32],
) -> Result<(), String> {
    check_threads(h)?;
    if stacks.len() < h.threads.len() {
        return Err(format!(
            "{} thread stacks for {} threads",
            stacks.len(),
            h.threads.len()
        ));
    }
    if vp.moves.len() > plan::MAX_VDSO_MOVES || keep_fds.len() > plan::MAX_KEEP_FDS {
        return Err("too many vdso pieces or descriptors".into());
    }
    for (i, m) in vp.moves.iter().enumerate() {
        p.vdso_moves[i] = *m;
    }
    p.n_vdso_moves = vp.moves.len() as u64;
    let mm = &h.mm;
    let fields = [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
    ];
    let valid = fields
        .iter()
        .all(|&v| (0x10000..0x7fff_ffff_f000).contains(&v))
        && mm.start_code < mm.end_code
        && mm.start_data <= mm.end_data
        && mm.start_brk <= mm.brk
        && mm.arg_start <= mm.arg_end
        && mm.env_start <= mm.env_end;
    if valid {
        let n = mm.auxv.len().min(plan::MAX_AUXV);
        p.auxv[..n].copy_from_slice(&mm.auxv[..n]);
        p.mm = plan::PrctlMmMap {
            start_code: mm.start_code,
            end_code: mm.end_code,
            start_data: mm.start_data,
            end_data: mm.end_data,
            start_brk: mm.start_brk,
            brk: mm.brk,
            start_stack: mm.start_stack,
            arg_start: mm.arg_start,
            arg_end: mm.arg_end,
            env_start: mm.env_start,
            env_end: mm.env_end,
            auxv: p.auxv.as_ptr() as u64,
            auxv_size: (n * 8) as u32,
            exe_fd: u32::MAX,
        };
        p.set_mm = 1;
    } else {
        tracing::warn!("the image's mm layout fails the kernel's checks; brk and the argument area are not restored");
    }
    p.n_sigs = 0;
    for s in h.signals.iter().take(plan::MAX_SIGS) {
        let i = p.n_sigs as usize;
        p.sigs[i] = plan::SigAct {
            signo: s.signo as u64,
            handler: s.handler,
            flags: s.flags,
            restorer: s.restorer,
            mask: s.mask,
        };
        p.n_sigs += 1;
    }
    for (i, fd) in keep_fds.iter().enumerate() {
        p.keep_fds[i] = *fd;
    }
    p.n_keep_fds = keep_fds.len() as u64;
    p.main_index = h.threads.iter().position(|t| t.is_main).unwrap_or(0) as u64;
    for (i, t) in h.threads.iter().enumerate() {
        let c = &t.ctx;
        p.threads[i] = plan::PlanThread {
            ctx: plan::Ctx {
                rbx: c.rbx,
                rbp: c.rbp,
                r12: c.r12,
                r13: c.r13,
                r14: c.r14,
                r15: c.r15,
                rsp: c.rsp,
                rip: c.rip,
                mxcsr: c.mxcsr,
                fpu_cw: c.fpu_cw,
                _pad: 0,
            },
            fs_base: t.fs_base,
            tid_address: t.tid_address,
            robust_head: t.robust_list,
            robust_len: t.robust_len,
            rseq_addr: t.rseq.map_or(0, |r| r.addr),
            rseq_len: t.rseq.map_or(0, |r| r.len),
            rseq_sig: t.rseq.map_or(0, |r| r.sig),
            sigmask: t.sigmask,
            alt_flags: t
                .altstack
                .map_or(libc::SS_DISABLE as i64, |a| a.flags as i64),
            alt_sp: t.altstack.map_or(0, |a| a.sp),
            alt_size: t.altstack.map_or(0, |a| a.size),
            stack_top: stacks[i],
            ..Default::default()
        };
    }
    p.n_threads = h.threads.len() as u64;
    Ok(())
}
