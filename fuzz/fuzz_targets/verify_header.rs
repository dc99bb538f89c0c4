//! Arbitrary bytes become a `Stripe-Signature` header, a body, a clock reading and a
//! tolerance policy; `Verifier::verify` must never panic, whatever they are, and a header
//! made by `testing::sign` for the same body must always verify.
//!
//! Input layout: `[split: 2 bytes LE][now: 8 bytes LE][policy: 1 byte][rest…]`, where
//! `rest[..split % (rest.len() + 1)]` is the header (lossily decoded as UTF-8) and the
//! remainder is the body.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use stripe_webhooks::{testing, FixedClock, SignatureError, SigningSecret, Tolerance, Verifier};

const SECRET: &str = "whsec_fuzz_secret";

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let split = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let mut now_bytes = [0u8; 8];
    now_bytes.copy_from_slice(&data[2..10]);
    let now = i64::from_le_bytes(now_bytes);
    let policy = data[10];
    let rest = &data[11..];
    let split = split % (rest.len() + 1);
    let header = String::from_utf8_lossy(&rest[..split]);
    let body = &rest[split..];

    let tolerance = match policy % 4 {
        0 => Tolerance::default(),
        1 => Tolerance::Symmetric(Duration::from_secs(u64::from(policy) * 1_000_003)),
        2 => Tolerance::PastOnly(Duration::from_secs(u64::MAX >> (policy % 64))),
        _ => Tolerance::DangerouslyUnchecked,
    };
    let (Ok(primary), Ok(other)) = (
        SigningSecret::new(SECRET),
        SigningSecret::new("sk_not_a_whsec"),
    ) else {
        return;
    };
    let verifier = Verifier::new(primary)
        .with_secret(other)
        .with_tolerance_policy(tolerance)
        .with_clock(FixedClock(now));

    // Arbitrary header: any result is fine, a panic is not. Exercise the error's Display
    // too, since it formats fields derived from the input.
    match verifier.verify(body, &header) {
        Ok(verified) => {
            assert_eq!(verified.body(), body);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = verifier.verify_request(body, None);

    // A genuine header for this body, signed at the clock's time, always verifies.
    let ts = now.max(0);
    let genuine = testing::sign(body, SECRET, ts);
    let at_ts = verifier.clone().with_clock(FixedClock(ts));
    match at_ts.verify(body, &genuine) {
        Ok(verified) => assert_eq!(verified.timestamp(), ts),
        Err(e) => panic!("a genuine signature was rejected: {e}"),
    }

    // The genuine signature followed by fuzzed entries: never panics; if it fails, it is
    // only because the fuzzed part made the header unreadable or added a second `t=`.
    let combined = format!("{genuine},{header}");
    if let Err(e) = at_ts.verify(body, &combined) {
        assert!(
            matches!(e, SignatureError::MalformedHeader(_)),
            "genuine signature plus extra entries failed with {e:?}"
        );
    }
});
