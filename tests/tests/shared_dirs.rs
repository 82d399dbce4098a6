//! Checkpoint directories other users can reach (issue 10, item 2), with the product run
//! as an ordinary user and the attacker as a second one (`useradd`; `setpriv` switches
//! user without a fork, so the processes are the programs themselves). A world-writable
//! checkpoint directory — in which the attacker planted a generation directory, a symlink
//! to a file of the victim's in place of an image and a 0666 MANIFEST — is refused by
//! `mana_launch` in one line before the program runs, and nothing of the victim's is
//! overwritten; a directory MANA creates is 0700 with 0600 images the attacker cannot
//! read; a directory made world-writable while the job runs and a symlink in place of a
//! generation directory are refused at the checkpoint, and the program runs on.

use mana_tests::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Victim {
    who: (u32, u32),
    dir: PathBuf,
    status: PathBuf,
}

impl Victim {
    fn run(&self, name: &str, args: &[&str]) -> Output {
        let mut c = as_user(self.who, &bin(name), args);
        c.env("MANA_STATUS_FILE", &self.status);
        Proc::spawn(name, c).wait_output(LONG)
    }

    fn launch(&self, ckpt: &Path, program: &Path, args: &[&str]) -> Proc {
        let mut all = vec![
            "--ckptdir",
            ckpt.to_str().unwrap(),
            program.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let mut c = as_user(self.who, &bin("mana_launch"), &all);
        c.env("MANA_STATUS_FILE", &self.status)
            .current_dir(&self.dir);
        Proc::spawn("mana_launch", c)
    }

    fn wait_registered(&self, pid: u32) {
        let deadline = Instant::now() + SHORT;
        while !self
            .run("mana_status", &["--list"])
            .stdout_text()
            .contains(&pid.to_string())
        {
            assert!(Instant::now() < deadline, "pid {pid} did not register");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn world_writable_and_planted_checkpoint_directories_are_refused() {
    let victim_id = user("mana-victim");
    let attacker = user("mana-attacker");
    let base = std::env::temp_dir().join(format!("mana-shared-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
    let v = Victim {
        who: victim_id,
        dir: base.join("victim"),
        status: base.join("victim/status"),
    };
    fs::create_dir(&v.dir).unwrap();
    fs::set_permissions(&v.dir, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&v.dir, victim_id);
    let program = compile("bigmem", Build::Pie, &base);
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    // A file of the victim's the attacker can neither read nor write.
    let precious = v.dir.join("precious");
    fs::write(&precious, "the victim's data\n").unwrap();
    fs::set_permissions(&precious, fs::Permissions::from_mode(0o600)).unwrap();
    chown(&precious, victim_id);

    // $ mana_coordinator --daemon   (as the victim)
    v.run("mana_coordinator", &["--daemon", "--port", "0"])
        .assert_success();

    // A world-writable directory (like /tmp), in which the attacker planted a generation
    // directory holding a symlink to the victim's file in place of an image, and a 0666
    // image of their own.
    let shared = base.join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let plant = |script: &str| {
        let out = as_user(attacker, Path::new("/bin/sh"), &["-c", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "attacker: {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    plant(&format!(
        "mkdir -m 777 {s}/gen-000001 && ln -s {p} {s}/gen-000001/rank-00000.mana && \
         touch {s}/gen-000001/MANIFEST && chmod 666 {s}/gen-000001/MANIFEST",
        s = shared.display(),
        p = precious.display()
    ));

    // $ mana_launch --ckptdir /shared ./bigmem …   refused before the program runs.
    let out = v
        .launch(&shared, &program, &["8", "3000", "20"])
        .wait_output(SHORT);
    let line = refusal_line(&out, "launch into a world-writable directory");
    assert_mentions_any(
        &line,
        &["writable by every user", "not by you"],
        "world-writable directory",
    );
    assert!(line.contains(shared.to_str().unwrap()), "{line}");
    assert!(
        out.stdout.is_empty(),
        "the program must not run: {}",
        out.describe()
    );
    assert_eq!(
        fs::read_to_string(&precious).unwrap(),
        "the victim's data\n",
        "the victim's file was written through the planted symlink"
    );
    assert_eq!(
        fs::symlink_metadata(shared.join("gen-000001/MANIFEST"))
            .unwrap()
            .len(),
        0,
        "the planted MANIFEST was written"
    );

    // A private directory (MANA makes it) takes the checkpoint.
    let private = v.dir.join("ckpt");
    let mut run = v.launch(&private, &program, &["8", "3000", "20"]);
    run.wait_for_stdout("ready", SHORT);
    v.wait_registered(run.pid());
    let out = v.run("mana_status", &["--checkpoint"]);
    out.assert_success();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    let gen = private.join(latest_generation(&private).expect("a committed generation"));
    let image = rank0_image(&gen);
    assert_eq!(mode(&private), 0o700, "the checkpoint directory MANA made");
    assert_eq!(mode(&gen), 0o700, "the generation directory");
    assert_eq!(mode(&image), 0o600, "the image");
    assert_eq!(fs::metadata(&image).unwrap().uid(), victim_id.0);
    let read = as_user(attacker, Path::new("/bin/cat"), &[image.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !read.status.success(),
        "the attacker read the victim's image"
    );

    // The directory made writable by everyone while the job runs: the next checkpoint
    // is refused, naming it; the job runs on.
    fs::set_permissions(&private, fs::Permissions::from_mode(0o777)).unwrap();
    let out = v.run("mana_status", &["--checkpoint"]);
    let line = refusal_line(&out, "checkpoint into a directory made world-writable");
    assert_mentions_any(
        &line,
        &["writable by every user"],
        "world-writable at checkpoint",
    );
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();

    // A symbolic link where the next generation's directory goes (left by anyone with
    // the victim's rights) is refused, not followed.
    let elsewhere = v.dir.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    chown(&elsewhere, victim_id);
    // The refused attempt above used up its number (numbers are never reused).
    let next = latest_generation(&private)
        .unwrap()
        .trim_start_matches("gen-")
        .parse::<u64>()
        .unwrap()
        + 2;
    let link = private.join(format!("gen-{next:06}"));
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(victim_id.0), Some(victim_id.1)).unwrap();
    let out = v.run("mana_status", &["--checkpoint"]);
    let line = refusal_line(&out, "a symlink in place of a generation directory");
    assert_mentions_any(
        &line,
        &["symbolic link", "not a directory"],
        "planted symlink",
    );
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through the symlink"
    );
    assert!(
        run.is_running(),
        "the program must run on after a refused checkpoint"
    );

    drop(run.kill9());
    v.run("mana_status", &["--quit"]);
    let _ = fs::remove_dir_all(&base);
}
