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
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn vm_rss_kib(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid structure.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max.min(1 << 16);
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

/// 1,000 attackers: half announce a 16 MiB frame at once and then send one byte every
/// 2 s, half send the 4-byte length prefix itself one byte every 2 s; each reconnects
/// when the coordinator drops it. Returns (connections made, peak held at once).
struct Flood {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(addr: String, n: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        // Four threads of n/4 connections each.
        let threads = (0..4)
            .map(|t| {
                let (stop, made, held, addr) =
                    (stop.clone(), made.clone(), held.clone(), addr.clone());
                std::thread::spawn(move || {
                    let announce = (16u32 << 20).to_le_bytes();
                    let mut conns: Vec<Option<(TcpStream, usize)>> =
                        (0..n / 4).map(|_| None).collect();
                    while !stop.load(Ordering::Relaxed) {
                        for (i, c) in conns.iter_mut().enumerate() {
                            let slow_prefix = (i + t) % 2 == 0;
                            if c.is_none() {
                                if let Ok(s) = TcpStream::connect(&addr) {
                                    made.fetch_add(1, Ordering::Relaxed);
                                    let _ = s.set_nonblocking(true);
                                    *c = Some((s, 0));
                                }
                            }
                            let Some((s, sent)) = c else { continue };
                            let chunk: &[u8] = if slow_prefix {
                                if *sent < 4 {
                                    &announce[*sent..*sent + 1]
                                } else {
                                    b"x"
                                }
                            } else if *sent == 0 {
                                &announce
                            } else {
                                b"x"
                            };
                            match s.write(chunk) {
                                Ok(k) => *sent += k,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(_) => *c = None,
                            }
                        }
                        let now = conns.iter().filter(|c| c.is_some()).count();
                        held.fetch_max(now * 4, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(2000));
                    }
                })
            })
            .collect();
        Flood {
            stop,
            made,
            held,
            threads,
        }
    }

    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.made.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn a_flood_of_slow_connections_leaves_the_coordinator_small_and_the_job_checkpointable() {
    raise_nofile();
    let s = Session::start("flood");
    let status = StatusFile::read(&s.status_file).unwrap();
    let coord_pid = status.pid;
    let rss_before = vm_rss_kib(coord_pid);
    let program = compile("bigmem", Build::Pie, s.dir());
    let args = ["16", "3000", "20"];
    let native = native_run(&program, &["16", "300", "20"]);
    drop(native);

    // A live job.
    let run = s.launch(&program, &args);
    run.wait_for_stdout("ready", SHORT);
    s.wait_registered(run.pid());

    // $ (1,000 attackers) &
    let flood = Flood::start(format!("127.0.0.1:{}", status.port), 1000);
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
    let (made, held) = flood.stop();
    let _ = restored.kill9();

    eprintln!(
        "flood: {made} connections made, up to {held} held at once by the attackers, {coord_fds} \
         descriptors open in the coordinator after the checkpoint; coordinator RSS {rss_before} KiB \
         before, peak {peak} KiB; checkpoint of the live job {ckpt_secs:.2} s; kill, restart and \
         registration {register_secs:.2} s"
    );
    assert!(held >= 900, "the flood held {held} connections at once");
    assert!(peak <= 64 * 1024, "coordinator RSS {peak} KiB over 64 MiB");
    assert!(ckpt_secs <= 20.0, "checkpoint took {ckpt_secs:.1} s");
}

/// What answers on a freed coordinator port without the secret: it answers `Greet` with
/// a challenge it cannot prove, and records whether anything came after.
#[test]
fn an_impostor_on_the_coordinators_port_gets_nothing() {
    let s = Session::start("impostor");
    let stale = s.dir().join("stale-status");
    std::fs::copy(&s.status_file, &stale).unwrap();
    let port = StatusFile::read(&stale).unwrap().port;
    s.quit().assert_success();

    let impostor = TcpListener::bind(("0.0.0.0", port)).expect("bind the freed port");
    let heard_more = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    {
        let (heard_more, connections) = (heard_more.clone(), connections.clone());
        std::thread::spawn(move || {
            for c in impostor.incoming() {
                let Ok(mut c) = c else { continue };
                connections.fetch_add(1, Ordering::Relaxed);
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                if let Ok(ToCoord::Greet { .. }) = protocol::recv::<_, ToCoord>(&mut c) {
                    let _ = protocol::send(
                        &mut c,
                        &FromCoord::Challenge {
                            version: auth::PROTOCOL_VERSION,
                            nonce: auth::nonce().unwrap(),
                            proof: auth::nonce().unwrap(),
                        },
                    );
                }
                if protocol::recv::<_, ToCoord>(&mut c).is_ok() {
                    heard_more.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    for cmd in ["--checkpoint", "--list"] {
        let out = s.run(
            "mana_status",
            &["--status-file", stale.to_str().unwrap(), cmd],
            SHORT,
        );
        let line = refusal_line(&out, &format!("mana_status {cmd} against an impostor"));
        assert_mentions_any(&line, &["did not prove"], "impostor");
    }
    // A process registering (the runtime's path is the same client code).
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
    assert!(connections.load(Ordering::Relaxed) >= 3);
    assert_eq!(
        heard_more.load(Ordering::Relaxed),
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
