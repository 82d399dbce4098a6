//! Starts the proxy (`mana_lower`, path in argv[1]) in a second loader world inside this
//! process and checks that both worlds work side by side: calls across with FS switching,
//! separate TLS and errno, both allocators busy, and this process's own loader never
//! learning of the lower world (DESIGN.md rule 1). Prints `lower world ok …` and exits 0.

use mana_lower::loader;
use std::ffi::CStr;

fn main() {
    let proxy = std::env::args()
        .nth(1)
        .expect("usage: lower_smoke PATH/TO/mana_lower");
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != "LD_PRELOAD")
        .collect();
    let world = match loader::load(proxy.as_ref(), &env) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("lower_smoke: {e}");
            std::process::exit(1);
        }
    };
    let t = world.table;
    let mut upper: Vec<Vec<u8>> = Vec::new();
    // SAFETY: errno of this (upper) thread.
    unsafe { *libc::__errno_location() = 42 };
    for i in 1..=50u64 {
        upper.push(vec![i as u8; 4096 * i as usize]); // the upper heap grows (brk) meanwhile
                                                      // SAFETY: `probe` is a lower-world function; fs_base is the lower TCB.
        let r = unsafe { loader::call1(t.fs_base, t.probe, 12345) };
        let expect = (0..64)
            .map(|k| format!("12345-{k}").len() as u64)
            .sum::<u64>()
            * 1000
            + i;
        assert_eq!(
            r, expect,
            "probe call {i}: lower TLS counter or allocation broken"
        );
    }
    // SAFETY: errno of this (upper) thread.
    let errno = unsafe { *libc::__errno_location() };
    assert_eq!(errno, 42, "the lower world wrote the upper errno");
    let name = c"getpid";
    // SAFETY: `lookup` is a lower-world function taking a C string.
    let getpid = unsafe { loader::call_ptr(t.fs_base, t.lookup, name.as_ptr()) };
    assert!(!getpid.is_null(), "lower dlsym(getpid) failed");
    // SAFETY: the lower libc's getpid, called in the lower world.
    let getpid: unsafe extern "C" fn(u64) -> u64 = unsafe { core::mem::transmute(getpid) };
    // SAFETY: as above; the argument is ignored.
    let pid = unsafe { loader::call1(t.fs_base, getpid, 0) } as u32;
    assert_eq!(pid, std::process::id());
    // The upper loader's link map knows nothing of the lower world.
    let mut names: Vec<String> = Vec::new();
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut libc::c_void,
    ) -> i32 {
        // SAFETY: called by dl_iterate_phdr with valid pointers.
        let (info, names) = unsafe { (&*info, &mut *(data as *mut Vec<String>)) };
        if !info.dlpi_name.is_null() {
            // SAFETY: a NUL-terminated string owned by the loader.
            names.push(
                unsafe { CStr::from_ptr(info.dlpi_name) }
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        0
    }
    // SAFETY: the callback matches dl_iterate_phdr's contract.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each),
            &mut names as *mut Vec<String> as *mut libc::c_void,
        )
    };
    assert!(
        !names.iter().any(|n| n.contains("mana_lower")),
        "the upper ld.so lists the lower world: {names:?}"
    );
    // Two worlds, two libcs: the second one was mapped by the lower ld.so.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    // Count each libc's first mapping (UCX's code patching may split the lower one's text).
    let libcs = maps
        .lines()
        .filter(|l| l.ends_with("/libc.so.6") && l.split_whitespace().nth(2) == Some("00000000"))
        .count();
    assert_eq!(libcs, 2, "expected two libcs mapped:\n{maps}");
    assert!(
        maps.contains("mana_lower"),
        "the proxy is not mapped:\n{maps}"
    );
    let total: usize = upper.iter().map(Vec::len).sum();
    println!(
        "lower world ok: ld.so at {:#x}-{:#x}, lower stack {:#x}-{:#x}, 50 probe calls, upper heap {} KiB, upper link map {} objects",
        world.ldso.0,
        world.ldso.1,
        world.stack.0,
        world.stack.1,
        total / 1024,
        names.len()
    );
}
