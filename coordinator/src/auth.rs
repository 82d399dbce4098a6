//! Mutual authentication of a coordinator connection (issue 10, item 1). Both sides know
//! the per-job secret (the status file's `secret=` line); neither sends it. Each side
//! sends a fresh 32-byte nonce and proves the secret with an HMAC-SHA256 over both nonces
//! under its own label, so a proof cannot be replayed on another connection or reflected
//! to the other side:
//!
//! ```text
//! client → Greet { version, nonce_c }
//! coordinator → Challenge { version, nonce_s, HMAC(secret, "mana-coordinator" ‖ nonce_c ‖ nonce_s) }
//! client checks it (an impostor on a freed port fails here), then
//! client → Auth { HMAC(secret, "mana-client" ‖ nonce_s ‖ nonce_c) } and Register(role)
//! ```
//!
//! The coordinator answers a client of the older protocol (`Hello` carrying the secret)
//! with one error line naming the mismatch.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Version of the handshake above (1 was `Hello { secret }`).
pub const PROTOCOL_VERSION: u32 = 2;

pub type Nonce = [u8; 32];
pub type Proof = [u8; 32];

const COORDINATOR_LABEL: &[u8] = b"mana-coordinator";
const CLIENT_LABEL: &[u8] = b"mana-client";

/// 32 bytes from the kernel's random generator.
pub fn nonce() -> std::io::Result<Nonce> {
    let mut n = [0u8; 32];
    let mut done = 0;
    while done < n.len() {
        // SAFETY: writes at most the rest of `n`.
        let r = unsafe {
            libc::getrandom(
                n[done..].as_mut_ptr() as *mut libc::c_void,
                n.len() - done,
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            done += r as usize;
        }
    }
    Ok(n)
}

fn mac(secret: &str, label: &[u8], first: &Nonce, second: &Nonce) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    m.update(label);
    m.update(first);
    m.update(second);
    m
}

/// The coordinator's proof for the client that sent `client_nonce`.
pub fn coordinator_proof(secret: &str, client_nonce: &Nonce, server_nonce: &Nonce) -> Proof {
    mac(secret, COORDINATOR_LABEL, client_nonce, server_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is the coordinator's (constant-time comparison).
pub fn coordinator_proved(
    secret: &str,
    client_nonce: &Nonce,
    server_nonce: &Nonce,
    proof: &Proof,
) -> bool {
    mac(secret, COORDINATOR_LABEL, client_nonce, server_nonce)
        .verify_slice(proof)
        .is_ok()
}

/// The client's proof for the coordinator that sent `server_nonce`.
pub fn client_proof(secret: &str, server_nonce: &Nonce, client_nonce: &Nonce) -> Proof {
    mac(secret, CLIENT_LABEL, server_nonce, client_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is the client's (constant-time comparison).
pub fn client_proved(
    secret: &str,
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    proof: &Proof,
) -> bool {
    mac(secret, CLIENT_LABEL, server_nonce, client_nonce)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_secret_label_and_both_nonces() {
        let (c, s) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(c, s);
        let p = coordinator_proof("k", &c, &s);
        assert!(coordinator_proved("k", &c, &s, &p));
        assert!(!coordinator_proved("k2", &c, &s, &p), "another secret");
        assert!(!coordinator_proved("k", &s, &c, &p), "nonces swapped");
        assert!(
            !coordinator_proved("k", &nonce().unwrap(), &s, &p),
            "another nonce"
        );
        // A coordinator's proof is not a client's (no reflection).
        assert!(!client_proved("k", &c, &s, &p) && !client_proved("k", &s, &c, &p));
        let q = client_proof("k", &s, &c);
        assert!(client_proved("k", &s, &c, &q));
        assert_ne!(p, q);
    }
}
