//! The coordinator under attack (issue 10, item 1). Until a peer has proved the job's
//! secret it gets no thread, a few hundred bytes of buffer and five seconds in all; so a
//! flood of slow connections announcing 16 MiB frames leaves the coordinator small and
//! the live job checkpointable, and a new command and a restarted job's registration get
//! through during it. Authentication is mutual: a program answering on the
//! coordinator's port without the secret is refused by every client before anything is
//! sent, and a client of the older protocol is refused in one line.

use mana_coordinator::auth;
use mana_coordinator::protocol::{self, FromCoord, Role, ToCoord};
use mana_coordinator::status::StatusFile;
use mana_tests::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn vm_rss_kib(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The attacker's last `made M held H` line.
fn flood_figures(attacker: &Proc) -> (usize, usize) {
    let text = String::from_utf8_lossy(&attacker.stdout()).into_owned();
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with("made "))
        .unwrap_or("made 0 held 0");
    let n: Vec<usize> = last.split(' ').filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

/// The coordinator, the live job, `mana_status` and `mana_restart` run as the ordinary
/// user mana-victim; 1,000 slow connections come from mana-attacker's program
/// (src/bin/mana_attacker.rs).
#[test]
fn a_flood_of_slow_connections_leaves_the_coordinator_small_and_the_job_checkpointable() {
    let victim = user("mana-victim");
    let attacker = user("mana-attacker");
    let s = Session::start_as("flood", victim);
    let status = StatusFile::read(&s.status_file).unwrap();
    let coord_pid = status.pid;
    let rss_before = vm_rss_kib(coord_pid);
    let program = compile("bigmem", Build::Pie, s.dir());
    let args = ["16", "3000", "20"];

    // A live job.
    let run = s.launch(&program, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());

    // $ mana_attacker flood 127.0.0.1:PORT 1000 &   (as mana-attacker)
    let addr = format!("127.0.0.1:{}", status.port);
    let flood = Proc::spawn(
        "mana_attacker flood",
        as_user(attacker, &bin("mana_attacker"), &["flood", &addr, "1000"]),
    );
    std::thread::sleep(Duration::from_secs(6));

    // The live job's checkpoint, during the flood.
    let t0 = Instant::now();
    let gen = s
        .checkpoint()
        .unwrap_or_else(|e| panic!("checkpoint during the flood failed: {e}"));
    let ckpt_secs = t0.elapsed().as_secs_f64();
    assert_committed(&s.ckpt_dir, &gen);
    let mut peak = vm_rss_kib(coord_pid);
    let coord_fds = std::fs::read_dir(format!("/proc/{coord_pid}/fd"))
        .unwrap()
        .count();

    // A new command and a restarted job's registration, during the flood.
    let t1 = Instant::now();
    let killed = s.kill9(run);
    drop(killed);
    let restored = s.restart(&s.ckpt_dir);
    s.wait_registered(restored.pid());
    let register_secs = t1.elapsed().as_secs_f64();
    let list = s.status(&["--list"]);
    list.assert_success();
    peak = peak.max(vm_rss_kib(coord_pid));
    std::thread::sleep(Duration::from_secs(3));
    peak = peak.max(vm_rss_kib(coord_pid));
    let (made, held) = flood_figures(&flood);
    drop(flood.kill9());
    let _ = restored.kill9();

    eprintln!(
        "flood: {made} connections made, up to {held} held at once by the attacker, {coord_fds} \
         descriptors open in the coordinator after the checkpoint; coordinator RSS {rss_before} KiB \
         before, peak {peak} KiB; checkpoint of the live job {ckpt_secs:.2} s; kill, restart and \
         registration {register_secs:.2} s"
    );
    assert!(held >= 900, "the flood held {held} connections at once");
    assert!(peak <= 64 * 1024, "coordinator RSS {peak} KiB over 64 MiB");
    assert!(ckpt_secs <= 20.0, "checkpoint took {ckpt_secs:.1} s");
}

/// What answers on a freed coordinator port without the secret — mana-attacker's program
/// (src/bin/mana_attacker.rs) — answers `Greet` with a challenge it cannot prove and
/// records whether anything came after. The job's commands run as mana-victim.
#[test]
fn an_impostor_on_the_coordinators_port_gets_nothing() {
    let victim = user("mana-victim");
    let attacker = user("mana-attacker");
    let s = Session::start_as("impostor", victim);
    let stale = s.dir().join("stale-status");
    std::fs::copy(&s.status_file, &stale).unwrap();
    chown(&stale, victim);
    let port = StatusFile::read(&stale).unwrap().port;
    s.quit().assert_success();

    // $ mana_attacker impostor PORT &   (as mana-attacker, on the freed port)
    let impostor = Proc::spawn(
        "mana_attacker impostor",
        as_user(
            attacker,
            &bin("mana_attacker"),
            &["impostor", &port.to_string()],
        ),
    );
    impostor.wait_for_stdout("listening", SHORT);
    for cmd in ["--checkpoint", "--list"] {
        let out = s.run(
            "mana_status",
            &["--status-file", stale.to_str().unwrap(), cmd],
            SHORT,
        );
        let line = refusal_line(&out, &format!("mana_status {cmd} against an impostor"));
        assert_mentions_any(&line, &["did not prove"], "impostor");
    }
    // A process registering (the runtime's path is the same client code; mana_launch
    // itself would see the old coordinator's pid gone and start a coordinator of its own).
    let err = mana_coordinator::client::Connection::open(
        &stale,
        Role::Process(mana_coordinator::protocol::ProcessInfo {
            host: "h".into(),
            pid: 1,
            rank: 0,
            world_size: 1,
            program: "p".into(),
            ckpt_dir: "/tmp".into(),
            last_generation: 0,
            interval_secs: None,
            dir_generation: 0,
        }),
    )
    .expect_err("a registration with an impostor must fail");
    assert!(err.to_string().contains("did not prove"), "{err}");
    let heard = String::from_utf8_lossy(&impostor.stdout()).into_owned();
    drop(impostor.kill9());
    assert!(heard.matches("connection").count() >= 3, "{heard}");
    assert_eq!(
        heard.matches("heard-more").count(),
        0,
        "a client sent something after the impostor's unproved challenge"
    );
}

#[test]
fn old_clients_and_wrong_proofs_are_refused_in_one_line() {
    let s = Session::start("old-client");
    let status = StatusFile::read(&s.status_file).unwrap();
    let addr = format!("127.0.0.1:{}", status.port);

    // An old client: `Hello` with the secret itself.
    let mut c = TcpStream::connect(&addr).unwrap();
    protocol::send(
        &mut c,
        &ToCoord::Hello {
            secret: status.secret.clone(),
            role: Role::Command,
        },
    )
    .unwrap();
    match protocol::recv::<_, FromCoord>(&mut c) {
        Ok(FromCoord::Error(m)) => assert!(m.contains("older") && m.contains("protocol"), "{m}"),
        other => panic!("an old client must get one error line: {other:?}"),
    }

    // A client that cannot prove the secret (a proof made with another one).
    let mut c = TcpStream::connect(&addr).unwrap();
    let nonce = auth::nonce().unwrap();
    protocol::send(
        &mut c,
        &ToCoord::Greet {
            version: auth::PROTOCOL_VERSION,
            nonce,
        },
    )
    .unwrap();
    let FromCoord::Challenge {
        nonce: server_nonce,
        proof,
        ..
    } = protocol::recv(&mut c).unwrap()
    else {
        panic!("the coordinator must answer Greet with a challenge");
    };
    assert!(auth::coordinator_proved(
        &status.secret,
        &nonce,
        &server_nonce,
        &proof
    ));
    protocol::send(
        &mut c,
        &ToCoord::Auth {
            proof: auth::client_proof("not-the-secret", &server_nonce, &nonce),
        },
    )
    .unwrap();
    match protocol::recv::<_, FromCoord>(&mut c) {
        Ok(FromCoord::Error(m)) => assert!(m.contains("authentication"), "{m}"),
        other => panic!("a wrong proof must be refused: {other:?}"),
    }

    // A first frame announcing 16 MiB before authentication: closed at once, with a line.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&(16u32 << 20).to_le_bytes()).unwrap();
    let t = Instant::now();
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let r = protocol::recv::<_, FromCoord>(&mut c);
    assert!(
        t.elapsed() < Duration::from_secs(2) && matches!(r, Ok(FromCoord::Error(_))),
        "{r:?}"
    );

    // A silent connection is closed at the handshake deadline, not kept.
    let mut c = TcpStream::connect(&addr).unwrap();
    let t = Instant::now();
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let mut b = [0u8; 1];
    let r = std::io::Read::read(&mut c, &mut b);
    assert!(matches!(r, Ok(0)) || r.is_err(), "{r:?}");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );

    // The coordinator still serves its job.
    s.status(&["--list"]).assert_success();

    // A status file others can read works, with a warning saying what it exposes.
    let loose = s.dir().join("loose-status");
    std::fs::copy(&s.status_file, &loose).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.run(
        "mana_status",
        &["--status-file", loose.to_str().unwrap(), "--list"],
        SHORT,
    );
    out.assert_success();
    assert!(
        out.stderr_text().contains("chmod 600"),
        "a status file of mode 0644 must be warned about: {}",
        out.describe()
    );
}
