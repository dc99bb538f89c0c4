//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use stripe_webhooks::{FixedClock, SigningSecret, Verifier};

pub const SECRET: &str = "whsec_test_secret";
pub const NOW: i64 = 1_700_000_000;

pub fn verifier_at(now: i64) -> Verifier {
    Verifier::new(SigningSecret::new(SECRET).unwrap()).with_clock(FixedClock(now))
}

/// The path of an example binary that `cargo test --all-features` built beside this test:
/// target/debug/deps/<test>-… → target/debug/examples/<name>.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --example {name} --all-features` (cargo test --all-features does)",
        path.display()
    );
    path
}
