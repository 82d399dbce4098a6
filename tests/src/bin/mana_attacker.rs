//! The attacker of tests/tests/coordinator_attack.rs, a program of its own so that it runs
//! as a second user (`setpriv`), apart from the product's user.
//!
//! * `mana_attacker flood ADDR N`: N slow connections to ADDR — half announce a 16 MiB
//!   frame at once and then send one byte every 2 s, half send the 4-byte length prefix
//!   itself one byte every 2 s — each made again when the coordinator drops it. Every 2 s
//!   prints `made M held H` (connections made so far, most held at once).
//! * `mana_attacker impostor PORT`: listens on PORT (all addresses) as a coordinator that
//!   does not know the secret: answers `Greet` with a challenge it cannot prove. Prints
//!   `connection` for each client and `heard-more` if one sent anything after that.

use mana_coordinator::auth;
use mana_coordinator::protocol::{self, FromCoord, ToCoord};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("flood") if args.len() == 4 => {
            flood(&args[2], args[3].parse().expect("N: a number"));
        }
        Some("impostor") if args.len() == 3 => impostor(args[2].parse().expect("PORT")),
        _ => {
            eprintln!("usage: mana_attacker flood ADDR N | impostor PORT");
            std::process::exit(2);
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn flood(addr: &str, n: usize) {
    raise_nofile();
    let made = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    for t in 0..4 {
        let (made, held, addr) = (made.clone(), held.clone(), addr.to_string());
        std::thread::spawn(move || {
            let announce = (16u32 << 20).to_le_bytes();
            let mut conns: Vec<Option<(TcpStream, usize)>> = (0..n / 4).map(|_| None).collect();
            loop {
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
        });
    }
    loop {
        std::thread::sleep(Duration::from_millis(2000));
        say(&format!(
            "made {} held {}",
            made.load(Ordering::Relaxed),
            held.load(Ordering::Relaxed)
        ));
    }
}

fn impostor(port: u16) {
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind the freed port");
    say("listening");
    for c in listener.incoming() {
        let Ok(mut c) = c else { continue };
        say("connection");
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        if let Ok(ToCoord::Greet { .. }) = protocol::recv::<_, ToCoord>(&mut c) {
            let _ = protocol::send(
                &mut c,
                &FromCoord::Challenge {
                    version: auth::PROTOCOL_VERSION,
                    nonce: auth::nonce().expect("random bytes"),
                    proof: auth::nonce().expect("random bytes"),
                },
            );
        }
        if protocol::recv::<_, ToCoord>(&mut c).is_ok() {
            say("heard-more");
        }
    }
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
