//! The lower half's region accounting (DESIGN.md rules 2–3): in a rank running under
//! `mana_launch`, every mapping of the real MPICH and its transports (UCX, hwloc, shared
//! memory) lies inside the ranges the runtime reports as lower half — which come from the
//! loader's and the proxy's own records, not from mapping names — and MANA's own wrapper
//! library, although named `libmpich.so.12`, is not among them (it is upper half, saved),
//! nor is the memory MPI hands the application (`MPI_Alloc_mem`, `MPI_Win_allocate`,
//! `MPI_Win_allocate_shared`, whose segment is MANA's own shared file).
//! The stacks of the lower world's threads are lower half too, and what the lower world
//! maps at run time (heap, UCX's POSIX and System V shared memory) lies in its arena.

use mana_tests::*;
use std::process::Command;

#[test]
fn mpich_lives_only_in_the_reported_lower_half_ranges() {
    let s = Session::start("lower-regions");
    let ring = compile_mpi("rma", s.dir());
    let dump = s.dir().join("regions");
    std::fs::create_dir_all(&dump).unwrap();
    let mut cmd = Command::new("mpiexec.mpich");
    cmd.current_dir(s.dir())
        .args(["-n", "2"])
        .arg(bin("mana_launch"))
        .arg(&ring);
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd.env("HOME", &s.home)
        .env("MANA_STATUS_FILE", &s.status_file)
        .env("MANA_DUMP_REGIONS", &dump);
    let out = Proc::spawn("mpiexec -n 2 mana_launch rma", cmd).wait_output(LONG);
    out.assert_success();
    // `rma-memory pid=P alloc_mem=0x… win_base=0x…`, one line per rank.
    let memory: Vec<(String, Vec<u64>)> = out
        .stderr_text()
        .lines()
        .filter_map(|l| l.strip_prefix("rma-memory pid="))
        .map(|l| {
            let mut it = l.split_whitespace();
            let pid = it.next().unwrap().to_string();
            let addrs = it
                .map(|kv| u64::from_str_radix(kv.split_once("=0x").unwrap().1, 16).unwrap())
                .collect();
            (pid, addrs)
        })
        .collect();
    assert_eq!(
        memory.len(),
        2,
        "rma printed its memory: {}",
        out.describe()
    );

    let files: Vec<_> = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "one region dump per rank: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut lower: Vec<(u64, u64)> = Vec::new();
        let mut maps_text = String::new();
        let mut thread_sps: Vec<(String, u64)> = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("thread ") {
                // `TID SP NAME`; `mana-ckpt` is the runtime's own (upper-half) thread.
                let fields: Vec<&str> = t.split_whitespace().collect();
                let sp = u64::from_str_radix(fields[1].trim_start_matches("0x"), 16).unwrap();
                if fields.get(2) != Some(&"mana-ckpt") {
                    thread_sps.push((t.to_string(), sp));
                }
            } else if let Some(r) = line.strip_prefix("lower ") {
                let (a, b) = r.split_once(' ').unwrap();
                lower.push((
                    u64::from_str_radix(a, 16).unwrap(),
                    u64::from_str_radix(b, 16).unwrap(),
                ));
            } else {
                maps_text.push_str(line);
                maps_text.push('\n');
            }
        }
        lower.sort_unstable();
        let covered = |s: u64, e: u64| {
            let mut cur = s;
            for &(a, b) in &lower {
                if a <= cur && cur < b {
                    cur = b;
                }
            }
            cur >= e
        };
        let maps = parse_proc_maps(&maps_text);
        assert!(
            lower.len() > 10,
            "{}: too few lower ranges: {lower:x?}",
            f.display()
        );
        let mpich_like = [
            "libmpich.so.12.",
            "libucp",
            "libucs",
            "libuct",
            "libucm",
            "libhwloc",
            "/dev/shm/",
            "/SYSV",
        ];
        // The arena (DESIGN.md rule 2): one large reservation that holds what the lower
        // world maps at run time — its heap, UCX's and MPICH's shared memory segments.
        let arena = *lower
            .iter()
            .max_by_key(|(a, b)| b - a)
            .expect("lower ranges");
        assert!(
            arena.1 - arena.0 >= 1 << 30,
            "{}: no arena among the lower ranges: {lower:x?}",
            f.display()
        );
        let mut in_arena = 0;
        for m in &maps {
            if m.name.starts_with("/dev/shm/") || m.name.starts_with("/SYSV") {
                if m.name.contains("mana-win-") {
                    continue; // MANA's own shared window: upper half, checked below
                }
                assert!(
                    arena.0 <= m.start && m.end <= arena.1,
                    "{}: lower shared memory {m} lies outside the arena {:#x}-{:#x}",
                    f.display(),
                    arena.0,
                    arena.1
                );
                in_arena += 1;
            }
        }
        assert!(
            in_arena > 0,
            "{}: no shared memory segment of MPI's found",
            f.display()
        );
        let mut seen_mpich = false;
        for m in &maps {
            if mpich_like.iter().any(|p| m.name.contains(p)) && !m.name.contains("mana-mpi") {
                seen_mpich |= m.name.contains("libmpich.so.12.");
                assert!(
                    covered(m.start, m.end),
                    "{}: {m} is MPI's but outside the lower-half ranges",
                    f.display()
                );
            }
            if m.name.contains("mana-mpi/libmpich.so.12") {
                assert!(
                    !lower.iter().any(|&(a, b)| a < m.end && m.start < b),
                    "{}: MANA's wrapper library {m} was counted as lower half (it must be saved)",
                    f.display()
                );
            }
        }
        assert!(
            seen_mpich,
            "{}: the real libmpich is not mapped at all",
            f.display()
        );
        // rma is single-threaded: every other thread but the runtime's belongs to the
        // lower world (parked TCB owners, UCX's progress thread), and so must its stack.
        assert!(
            !thread_sps.is_empty(),
            "{}: no lower-world thread found",
            f.display()
        );
        for (tid, sp) in &thread_sps {
            assert!(
                covered(*sp & !4095, (*sp & !4095) + 4096),
                "{}: thread `{tid}`'s stack ({sp:#x}) is outside the lower-half ranges",
                f.display()
            );
        }
        // The memory MPI handed this rank is the application's (upper half); a
        // shared-memory window's segment is MANA's own /dev/shm file.
        let pid = f
            .file_stem()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("regions-"))
            .unwrap()
            .to_string();
        let (_, addrs) = memory
            .iter()
            .find(|(p, _)| *p == pid)
            .unwrap_or_else(|| panic!("no rma-memory line for pid {pid}"));
        assert_eq!(
            addrs.len(),
            4,
            "alloc_mem, win_base, win_c_base, win_shared"
        );
        for &a in addrs {
            assert!(
                !covered(a, a + 1),
                "{}: memory MPI returned ({a:#x}) lies in the lower half",
                f.display()
            );
        }
        let backing = out
            .stderr_text()
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("rma-shared-map pid={pid} "))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("rank {pid} did not report its shared window's mapping"));
        assert!(
            backing.contains("/dev/shm/mana-win-"),
            "{}: the shared window's memory is `{backing}`, not MANA's segment",
            f.display()
        );
        for &(a, b) in &lower {
            assert!(
                maps.iter().any(|m| m.start < b && a < m.end),
                "{}: lower range {a:#x}-{b:#x} matches no mapping",
                f.display()
            );
        }
    }
}
