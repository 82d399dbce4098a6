//! No MPICH process runs unprotected: however a program reaches MPICH, under `mana_launch`
//! it gets MANA's wrapper library and the real `libmpich.so.12` is mapped only inside the
//! lower half (asserted from each rank's `/proc/PID/maps` and its lower-half ranges, dumped
//! at `MPI_Finalize` with `MANA_DUMP_REGIONS`); an MPI that cannot be wrapped is refused
//! with one line before the program computes.
//!
//! ```text
//! $ mpiexec.mpich -n 2 mana_launch ./f_ring                 # libmpichfort → libmpich
//! $ mpiexec.mpich -n 2 mana_launch ./dl_mpi /usr/lib/x86_64-linux-gnu/libmpich.so.12
//! $ mpiexec.mpich -n 2 mana_launch ./wrap.sh ./p2p --loop 40  # an exec chain
//! $ mana_launch ./ring_static
//! mana_launch: ./ring_static has MPI linked in statically (libmpich.a): …
//! ```

use mana_tests::*;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The real MPICH library file (what `libmpich.so.12` resolves to).
fn real_mpich() -> PathBuf {
    std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libmpich.so.12")
        .expect("MPICH's libmpich.so.12 (scripts/setup.sh installs it)")
}

/// Checks one rank's region dump: the real MPICH is mapped, and only inside the lower half.
fn assert_mpich_only_in_lower_half(dump: &Path, case: &str) {
    let text = std::fs::read_to_string(dump).unwrap();
    let mut lower = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 && f[0] == "lower" {
            let p = |s: &str| u64::from_str_radix(s, 16).unwrap();
            lower.push((p(f[1]), p(f[2])));
        }
    }
    let real = real_mpich();
    let maps = parse_proc_maps(&text);
    let mpich: Vec<_> = maps
        .iter()
        .filter(|m| Path::new(&m.name) == real.as_path())
        .collect();
    assert!(
        !mpich.is_empty(),
        "{case}: the real MPICH ({}) is not mapped at all in {}",
        real.display(),
        dump.display()
    );
    for m in mpich {
        assert!(
            lower.iter().any(|&(s, e)| s <= m.start && m.end <= e),
            "{case}: {:#x}-{:#x} of {} is in the upper half ({})",
            m.start,
            m.end,
            m.name,
            dump.display()
        );
    }
    assert!(
        maps.iter()
            .any(|m| m.name.ends_with("mana-mpi/libmpich.so.12")),
        "{case}: MANA's wrapper library is not mapped ({})",
        dump.display()
    );
}

/// `args` (a program and its arguments, possibly behind an exec chain) on 2 ranks, natively
/// and under mana_launch: the same result line, and the real MPICH only in the lower half.
fn runs_split(s: &Session, case: &str, args: &[&OsStr], done: &str) {
    let native =
        Proc::spawn(&format!("native {case}"), mpiexec_command(s, 2, args, &[])).wait_output(LONG);
    native.assert_success();
    let expected = result_line(&native.stdout_text(), done);
    assert!(expected.is_some(), "{case}: no '{done}' line natively");

    let dumps = s
        .dir()
        .join(format!("dump-{}", case.replace(['/', ' '], "_")));
    std::fs::create_dir_all(&dumps).unwrap();
    let out = Proc::spawn(
        &format!("mana_launch {case}"),
        launch_command(
            s,
            2,
            args,
            &[("MANA_DUMP_REGIONS", dumps.to_str().unwrap())],
        ),
    )
    .wait_output(LONG);
    out.assert_success();
    assert_eq!(
        result_line(&out.stdout_text(), done),
        expected,
        "{case}: {}",
        out.describe()
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "{case}: one region dump per rank: {files:?}"
    );
    for f in files {
        assert_mpich_only_in_lower_half(&f, case);
    }
}

/// A `#!/bin/sh` wrapper that execs its arguments (what job scripts put in front).
fn exec_wrapper(dir: &Path) -> PathBuf {
    let p = dir.join("wrap.sh");
    std::fs::write(&p, "#!/bin/sh\nexport WRAPPED=1\nexec \"$@\"\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A C program built with plain gcc (not linked with MPI).
fn compile_plain(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mpi")
        .join(format!("{name}.c"));
    let out = dir.join(name);
    let r = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("gcc");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

#[test]
fn every_way_of_loading_mpich_runs_split_process() {
    let s = Session::start("mpi-launch-matrix");
    let dir = s.dir().to_path_buf();
    let os = |p: &Path| p.as_os_str().to_os_string();

    // DT_NEEDED of a library: a Fortran program links libmpichfort.so.12, which links
    // libmpich.so.12.
    let f_ring = compile_mpi("f_ring", &dir);
    runs_split(&s, "fortran", &[f_ring.as_os_str()], "f_ring done");

    // dlopen by soname, by absolute path and through the development link (ctypes,
    // mpi4py's MPI4PY_LIBMPI). (Debian's MPICH has no libmpi.so.12 to compare with.)
    let dl = compile_plain("dl_mpi", &dir);
    let real = real_mpich();
    for lib in [
        OsStr::new("libmpich.so.12"),
        real.as_os_str(),
        OsStr::new("/usr/lib/x86_64-linux-gnu/libmpich.so"),
    ] {
        runs_split(
            &s,
            &format!("dlopen {}", lib.to_string_lossy()),
            &[dl.as_os_str(), lib],
            "dl_mpi done",
        );
    }

    // A binary whose DT_RPATH names MPICH's directory (DT_RPATH outranks LD_LIBRARY_PATH).
    let rpath_dir = dir.join("rpath");
    std::fs::create_dir_all(&rpath_dir).unwrap();
    let ring_rpath = compile_mpi_with(
        "ring",
        &rpath_dir,
        &["-Wl,--disable-new-dtags,-rpath,/usr/lib/x86_64-linux-gnu"],
    );
    let dynamic = Command::new("readelf")
        .arg("-d")
        .arg(&ring_rpath)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&dynamic.stdout).contains("(RPATH)"),
        "the test binary has no DT_RPATH"
    );
    runs_split(&s, "rpath", &[ring_rpath.as_os_str()], "ring size=");

    // Exec chains: env(1) and a #!/bin/sh wrapper that execs the program.
    let ring = compile_mpi("ring", &dir);
    let wrap = exec_wrapper(&dir);
    runs_split(
        &s,
        "env chain",
        &[
            OsStr::new("/usr/bin/env"),
            OsStr::new("X=1"),
            ring.as_os_str(),
        ],
        "ring size=",
    );
    runs_split(
        &s,
        "sh chain",
        &[wrap.as_os_str(), &os(&f_ring)],
        "f_ring done",
    );
}

/// A program behind an exec chain is checkpointed and restarted like any other.
#[test]
fn a_program_behind_an_exec_chain_restarts_like_native() {
    let s = Session::start("mpi-launch-chain-restart");
    let p2p = compile_mpi("p2p", s.dir());
    let wrap = exec_wrapper(s.dir());
    let expected = result_line(&native(&s, 2, &p2p, &["--loop", "40"]), "p2p done");
    assert!(expected.is_some());
    let p2p_arg = p2p.to_str().unwrap().to_string();
    let run = launch(&s, 2, &wrap, &[&p2p_arg, "--loop", "40"], &[]);
    run.wait_for_stdout("p2p ready", LONG);
    wait_registered(&s, 2);
    let mut rng = Rng::seeded("mpi-launch-chain-restart");
    let gen = checkpoint_and_kill(&s, &mut rng, Duration::from_millis(700), run);
    let out = restart(&s, 2, &[]).wait_output(LONG);
    out.assert_success();
    assert_eq!(
        result_line(&out.stdout_text(), "p2p done"),
        expected,
        "{}",
        out.describe()
    );
    assert_images_have_no_lower_half(&gen, 2);
}

/// `ring.c` linked with the static libmpich.a: its MPI calls can never reach a wrapper.
/// mana_launch refuses it before it runs; behind an exec chain, the runtime refuses it
/// before `main`. Stripped, it is recognised by MPICH's own text.
#[test]
fn a_program_with_static_libmpich_is_refused() {
    let s = Session::start("mpi-launch-static");
    let out = s.dir().join("ring_static");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("mpi/ring.c");
    let cc = Command::new("gcc")
        .args(["-O2", "-w", "-o"])
        .arg(&out)
        .arg("-I/usr/include/x86_64-linux-gnu/mpich")
        .arg(&src)
        .args([
            "/usr/lib/x86_64-linux-gnu/libmpich.a",
            "-lpthread",
            "-lhwloc",
            "-lucp",
            "-lucs",
            "-lm",
        ])
        .output()
        .expect("gcc");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let stripped = s.dir().join("ring_stripped");
    assert!(Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&out)
        .status()
        .unwrap()
        .success());
    for prog in [&out, &stripped] {
        let r = s.launch(prog, &[]).wait_output(LONG);
        let err = refusal_line(&r, "mana_launch of a static MPI program");
        assert!(err.starts_with("mana_launch: "), "{err}");
        assert!(err.contains("statically"), "{err}");
        assert!(err.contains(&prog.display().to_string()), "{err}");
        assert!(r.stdout_text().is_empty(), "{}", r.describe());
    }
    let sh = s.launch(
        Path::new("/bin/sh"),
        &["-c", &format!("exec {}", out.display())],
    );
    let r = sh.wait_output(LONG);
    let err = refusal_line(&r, "a program MANA cannot wrap");
    assert!(err.starts_with("mana: "), "{err}");
    assert!(err.contains("statically"), "{err}");
    assert!(r.stdout_text().is_empty(), "{}", r.describe());
}

/// An Open MPI program (libmpi.so.40) is refused before `main` prints anything, and a
/// dlopen of Open MPI's library by path is refused where it happens.
#[test]
fn an_open_mpi_program_is_refused() {
    let s = Session::start("mpi-launch-openmpi");
    let src = s.dir().join("ompi.c");
    std::fs::write(
        &src,
        "#include <mpi.h>\n#include <stdio.h>\nint main(int c, char **v) {\n    printf(\"computing\\n\");\n    fflush(stdout);\n    MPI_Init(&c, &v);\n    MPI_Finalize();\n    return 0;\n}\n",
    )
    .unwrap();
    let prog = s.dir().join("ompi");
    let cc = Command::new("mpicc.openmpi")
        .arg("-o")
        .arg(&prog)
        .arg(&src)
        .output()
        .expect("mpicc.openmpi (scripts/setup.sh installs Open MPI)");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let r = s.launch(&prog, &[]).wait_output(LONG);
    let err = refusal_line(&r, "a program MANA cannot wrap");
    assert!(err.starts_with("mana: "), "{err}");
    assert!(
        err.contains("Open MPI") && err.contains("libmpi.so.40"),
        "{err}"
    );
    assert!(!r.stdout_text().contains("computing"), "{}", r.describe());

    let dl = compile_plain("dl_mpi", s.dir());
    let ompi_lib = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libmpi.so.40")
        .expect("Open MPI's libmpi.so.40");
    let r = s
        .launch(&dl, &[ompi_lib.to_str().unwrap()])
        .wait_output(LONG);
    let err = refusal_line(&r, "a program MANA cannot wrap");
    assert!(err.starts_with("mana: "), "{err}");
    assert!(err.contains("Open MPI"), "{err}");
}
