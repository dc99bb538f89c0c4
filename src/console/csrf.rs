//! CSRF tokens: an HMAC-SHA256, under a key drawn when the console is built (or given,
//! for replicas: [`Console::with_csrf_key`](super::Console::with_csrf_key)), of the
//! browser's session nonce (a cookie the console sets) and the hour. A token is good for
//! its hour and the next, and only with its own cookie.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::digest::KeyInit;
use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::secret::HmacSha256;

/// How long one token window lasts, in seconds.
const WINDOW_SECS: i64 = 3600;
/// The session nonce's length, in hex characters.
pub(super) const NONCE_HEX_LEN: usize = 32;

pub(super) struct Csrf {
    mac: HmacSha256,
    counter: AtomicU64,
    /// Drawn per console, so consoles that share a key (replicas) never hand out the
    /// same nonce.
    salt: [u8; 16],
}

/// `n` bytes from the operating system's random source. Should it fail (it does not on
/// any platform the console runs on), from the standard library's OS-seeded hasher keys
/// instead (128 bits drawn from the OS once per thread, stretched by SipHash).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if getrandom::getrandom(&mut out).is_ok() {
        return out;
    }
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(now_nanos());
        let bytes = h.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    out
}

impl Csrf {
    /// A console's token maker, keyed by 64 random bytes: enough for a key no one
    /// outside the process sees.
    pub(super) fn new() -> Self {
        // A key of SHA-256's block size, infallibly.
        Self::with_mac(<HmacSha256 as KeyInit>::new(&random_bytes::<64>().into()))
    }

    /// A token maker keyed by `key`: consoles given the same key (replicas behind one
    /// load balancer, or one console across restarts) accept each other's tokens.
    pub(super) fn with_key(key: &[u8; 32]) -> Self {
        // HMAC takes a key of any length; 32 bytes is SHA-256's output size.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(key);
        Self::with_mac(<HmacSha256 as KeyInit>::new(&block.into()))
    }

    fn with_mac(mac: HmacSha256) -> Self {
        Self {
            mac,
            counter: AtomicU64::new(0),
            salt: random_bytes::<16>(),
        }
    }

    /// A fresh session nonce: 128 bits, unpredictable without the key.
    pub(super) fn nonce(&self) -> String {
        self.nonce_from(self.counter.fetch_add(1, Ordering::Relaxed), now_nanos())
    }

    /// The nonce of the `n`th request at `nanos`: keyed, and salted per console.
    fn nonce_from(&self, n: u64, nanos: u128) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"nonce\0");
        mac.update(&self.salt);
        mac.update(&n.to_le_bytes());
        mac.update(&nanos.to_le_bytes());
        let bytes = mac.finalize().into_bytes();
        hex::encode(&bytes[..NONCE_HEX_LEN / 2])
    }

    fn mac_for(&self, nonce: &str, window: i64) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(b"csrf\0");
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(&window.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The token for `nonce` now (`now_secs`, Unix seconds).
    pub(super) fn token(&self, nonce: &str, now_secs: i64) -> String {
        hex::encode(self.mac_for(nonce, now_secs.div_euclid(WINDOW_SECS)))
    }

    /// Whether `token` was made for `nonce` in this window or the one before.
    pub(super) fn check(&self, nonce: &str, token: &str, now_secs: i64) -> bool {
        let mut given = [0u8; 32];
        if !valid_nonce(nonce) || hex::decode_to_slice(token, &mut given).is_err() {
            return false;
        }
        let window = now_secs.div_euclid(WINDOW_SECS);
        let mut ok = subtle::Choice::from(0);
        for w in [window, window - 1] {
            ok |= self.mac_for(nonce, w).ct_eq(&given);
        }
        ok.into()
    }
}

/// A nonce this console could have set: 32 lower-case hex characters.
pub(super) fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == NONCE_HEX_LEN
        && nonce
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_drawn_fresh_each_time() {
        let draws: std::collections::HashSet<[u8; 64]> =
            (0..100).map(|_| random_bytes::<64>()).collect();
        assert_eq!(draws.len(), 100);
        assert!(!draws.contains(&[0u8; 64]));
    }

    #[test]
    fn tokens_bind_nonce_and_window() {
        let csrf = Csrf::new();
        let (a, b) = (csrf.nonce(), csrf.nonce());
        assert!(valid_nonce(&a) && a != b);
        let now = 1_700_000_000;
        let token = csrf.token(&a, now);
        assert!(csrf.check(&a, &token, now));
        assert!(csrf.check(&a, &token, now + WINDOW_SECS));
        assert!(!csrf.check(&a, &token, now + 2 * WINDOW_SECS));
        assert!(!csrf.check(&b, &token, now));
        assert!(!csrf.check(&a, &token[..63], now));
        assert!(!csrf.check(&a, "", now));
        assert!(!Csrf::new().check(&a, &token, now), "another console's key");
        assert!(!csrf.check("not-a-nonce", &csrf.token("not-a-nonce", now), now));
    }

    #[test]
    fn a_shared_key_shares_tokens_but_not_nonces() {
        let (a, b) = (Csrf::with_key(&[7; 32]), Csrf::with_key(&[7; 32]));
        let now = 1_700_000_000;
        let nonce = a.nonce();
        assert!(b.check(&nonce, &a.token(&nonce, now), now));
        assert!(!Csrf::with_key(&[8; 32]).check(&nonce, &a.token(&nonce, now), now));
        // Two replicas' first requests in the same nanosecond: only the salt tells them
        // apart.
        assert_eq!(a.nonce_from(0, 42), a.nonce_from(0, 42));
        assert_ne!(a.nonce_from(0, 42), b.nonce_from(0, 42));
    }
}
