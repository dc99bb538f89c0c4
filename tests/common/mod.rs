//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use stripe_webhooks::{FixedClock, SigningSecret, Verifier};

pub const SECRET: &str = "whsec_test_secret";
pub const NOW: i64 = 1_700_000_000;

pub fn verifier_at(now: i64) -> Verifier {
    Verifier::new(SigningSecret::new(SECRET).unwrap()).with_clock(FixedClock(now))
}
