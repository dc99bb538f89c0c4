//! Stripe-Signature verification: every rule, one broken thing per rejection test.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{verifier_at, NOW, SECRET};
use proptest::prelude::*;
use stripe_webhooks::{
    testing::{sign, sign_with_secrets},
    verify_signature, FixedClock, MalformedHeader, MismatchHint, SecretError, SignatureError,
    SigningSecret, Tolerance, Verifier, DEFAULT_TOLERANCE, MAX_HEADER_ENTRIES, MAX_HEADER_LEN,
};

const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"customer.created"}"#;

fn sig_of(header: &str) -> String {
    header
        .split(',')
        .find_map(|p| p.strip_prefix("v1="))
        .unwrap()
        .to_owned()
}

#[test]
fn known_answer_vectors() {
    let vectors: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/signature_vectors.json")).unwrap();
    assert!(vectors.len() >= 4);
    for v in vectors {
        let secret = v["secret"].as_str().unwrap();
        let t = v["timestamp"].as_i64().unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let expected = v["v1"].as_str().unwrap();
        assert_eq!(sign(body, secret, t), format!("t={t},v1={expected}"));
        let verifier = Verifier::new(SigningSecret::new(secret).unwrap()).with_clock(FixedClock(t));
        let verified = verifier
            .verify(body, &format!("t={t},v1={expected}"))
            .unwrap();
        assert_eq!(verified.timestamp(), t);
        assert_eq!(verified.body(), body);
    }
}

#[test]
fn valid_signature_verifies() {
    let header = sign(BODY, SECRET, NOW);
    let v = verifier_at(NOW).verify(BODY, &header).unwrap();
    assert_eq!(v.timestamp(), NOW);
    assert_eq!(v.matched_secret().index(), 0);
}

#[test]
fn one_call_form_uses_system_clock() {
    let header = sign(BODY, SECRET, stripe_webhooks::testing::now());
    assert!(verify_signature(BODY, &header, SECRET).is_ok());
    let stale = sign(BODY, SECRET, stripe_webhooks::testing::now() - 301);
    assert!(matches!(
        verify_signature(BODY, &stale, SECRET),
        Err(SignatureError::OutsideTolerance {
            tolerance_secs: 300,
            ..
        })
    ));
    assert_eq!(
        verify_signature(BODY, &stale, "").unwrap_err(),
        SignatureError::InvalidSecret(SecretError::Empty)
    );
    assert_eq!(DEFAULT_TOLERANCE, Duration::from_secs(300));
}

#[test]
fn missing_header() {
    assert_eq!(
        verifier_at(NOW).verify_request(BODY, None).unwrap_err(),
        SignatureError::MissingHeader
    );
}

#[test]
fn stale_timestamp() {
    let header = sign(BODY, SECRET, NOW - 301);
    let err = verifier_at(NOW).verify(BODY, &header).unwrap_err();
    assert!(
        matches!(
            err,
            SignatureError::OutsideTolerance {
                age_secs: 301,
                tolerance_secs: 300,
                ..
            }
        ),
        "{err:?}"
    );
    // Exactly at the tolerance is still accepted.
    assert!(verifier_at(NOW)
        .verify(BODY, &sign(BODY, SECRET, NOW - 300))
        .is_ok());
}

#[test]
fn future_timestamp_symmetric_vs_past_only() {
    let header = sign(BODY, SECRET, NOW + 301);
    let err = verifier_at(NOW).verify(BODY, &header).unwrap_err();
    assert!(
        matches!(
            err,
            SignatureError::OutsideTolerance {
                age_secs: -301,
                tolerance_secs: 300,
                ..
            }
        ),
        "{err:?}"
    );
    let past_only = verifier_at(NOW).with_tolerance_policy(Tolerance::PastOnly(DEFAULT_TOLERANCE));
    assert!(past_only.verify(BODY, &header).is_ok());
    assert!(past_only
        .verify(BODY, &sign(BODY, SECRET, NOW - 301))
        .is_err());
}

#[test]
fn unchecked_tolerance_accepts_any_time() {
    let v = verifier_at(NOW).with_tolerance_policy(Tolerance::DangerouslyUnchecked);
    assert!(v.verify(BODY, &sign(BODY, SECRET, 0)).is_ok());
    // ...but still checks the signature.
    assert!(matches!(
        v.verify(BODY, &sign(BODY, "whsec_other", 0)),
        Err(SignatureError::Mismatch { .. })
    ));
}

#[test]
fn custom_tolerance() {
    let v = verifier_at(NOW).with_tolerance(Duration::from_secs(10));
    assert!(v.verify(BODY, &sign(BODY, SECRET, NOW - 10)).is_ok());
    assert!(matches!(
        v.verify(BODY, &sign(BODY, SECRET, NOW - 11)),
        Err(SignatureError::OutsideTolerance {
            age_secs: 11,
            tolerance_secs: 10,
            ..
        })
    ));
}

/// A zero tolerance is strict, as `with_tolerance` documents: it does not turn the check
/// off as 0 does in stripe-node and stripe-python.
#[test]
fn zero_tolerance_is_the_current_second_only() {
    let v = verifier_at(NOW).with_tolerance(Duration::ZERO);
    assert!(v.verify(BODY, &sign(BODY, SECRET, NOW)).is_ok());
    for t in [NOW - 1, NOW + 1] {
        assert!(matches!(
            v.verify(BODY, &sign(BODY, SECRET, t)),
            Err(SignatureError::OutsideTolerance {
                tolerance_secs: 0,
                ..
            })
        ));
    }
}

#[test]
fn wrong_secret_mismatch() {
    let header = sign(BODY, "whsec_other", NOW);
    let err = verifier_at(NOW).verify(BODY, &header).unwrap_err();
    assert!(
        matches!(err, SignatureError::Mismatch { hint: None, .. }),
        "{err:?}"
    );
}

#[test]
fn mismatch_hints_at_secret_without_prefix() {
    let v = Verifier::new(SigningSecret::new("sk_test_123").unwrap()).with_clock(FixedClock(NOW));
    let err = v.verify(BODY, &sign(BODY, SECRET, NOW)).unwrap_err();
    assert!(
        matches!(
            err,
            SignatureError::Mismatch {
                hint: Some(MismatchHint::SecretWithoutWhsecPrefix),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("whsec_"));
    assert!(!err.to_string().contains("sk_test_123"));
}

#[test]
fn modified_body_mismatch() {
    let header = sign(BODY, SECRET, NOW);
    let mut body = BODY.to_vec();
    body.push(b' ');
    assert!(matches!(
        verifier_at(NOW).verify(&body, &header),
        Err(SignatureError::Mismatch { .. })
    ));
}

#[test]
fn prefix_of_valid_signature_never_matches() {
    // CVE-2024-21491: comparing only as many bytes as were sent.
    let header = sign(BODY, SECRET, NOW);
    let sig = sig_of(&header);
    for len in [0, 1, 2, 32, 62, 63] {
        let h = format!("t={NOW},v1={}", &sig[..len]);
        let err = verifier_at(NOW).verify(BODY, &h).unwrap_err();
        assert!(
            matches!(err, SignatureError::Mismatch { hint: None, .. }),
            "prefix of length {len}: {err:?}"
        );
    }
}

#[test]
fn empty_v1_never_matches() {
    let h = format!("t={NOW},v1=");
    let err = verifier_at(NOW).verify(BODY, &h).unwrap_err();
    assert!(
        matches!(err, SignatureError::Mismatch { hint: None, .. }),
        "{err:?}"
    );
}

#[test]
fn malformed_v1_beside_valid_one_still_verifies() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    for junk in ["zz", "", &"0".repeat(65), &"g".repeat(64)] {
        let h = format!("t={NOW},v1={junk},v1={sig}");
        assert!(verifier_at(NOW).verify(BODY, &h).is_ok(), "junk {junk:?}");
        let h = format!("t={NOW},v1={sig},v1={junk}");
        assert!(verifier_at(NOW).verify(BODY, &h).is_ok(), "junk {junk:?}");
    }
}

#[test]
fn v0_and_unknown_keys_are_ignored() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    let h = format!("t={NOW},v0={},v1={sig},v2=abc,foo=bar", "0".repeat(64));
    assert!(verifier_at(NOW).verify(BODY, &h).is_ok());
}

#[test]
fn v0_alone_is_no_v1() {
    let h = format!("t={NOW},v0={}", sig_of(&sign(BODY, SECRET, NOW)));
    let err = verifier_at(NOW).verify(BODY, &h).unwrap_err();
    assert!(
        matches!(
            err,
            SignatureError::NoV1Signature {
                v0_present: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("v0"));
    let err = verifier_at(NOW)
        .verify(BODY, &format!("t={NOW}"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SignatureError::NoV1Signature {
                v0_present: false,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn signature_in_v0_slot_does_not_count() {
    // The right signature under another key is not a v1 signature.
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    let h = format!("t={NOW},v1={},v0={sig}", "0".repeat(64));
    assert!(matches!(
        verifier_at(NOW).verify(BODY, &h),
        Err(SignatureError::Mismatch { .. })
    ));
}

#[test]
fn missing_timestamp() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    assert_eq!(
        verifier_at(NOW)
            .verify(BODY, &format!("v1={sig}"))
            .unwrap_err(),
        SignatureError::MalformedHeader(MalformedHeader::MissingTimestamp)
    );
}

#[test]
fn duplicate_timestamp() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    assert_eq!(
        verifier_at(NOW)
            .verify(BODY, &format!("t={NOW},t={NOW},v1={sig}"))
            .unwrap_err(),
        SignatureError::MalformedHeader(MalformedHeader::DuplicateTimestamp)
    );
}

#[test]
fn bad_timestamps() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    for t in [
        "+1700000000",
        "1700000000.0",
        "0x10",
        "12345678901234567890",
        "",
        "-5",
        "1e9",
        " 17",
    ] {
        assert_eq!(
            verifier_at(NOW)
                .verify(BODY, &format!("t={t},v1={sig}"))
                .unwrap_err(),
            SignatureError::MalformedHeader(MalformedHeader::InvalidTimestamp),
            "t={t:?}"
        );
    }
}

#[test]
fn huge_timestamp_does_not_overflow() {
    let max = i64::MAX;
    let header = sign(BODY, SECRET, max);
    assert!(matches!(
        verifier_at(NOW).verify(BODY, &header),
        Err(SignatureError::OutsideTolerance { .. })
    ));
    let v = Verifier::new(SigningSecret::new(SECRET).unwrap()).with_clock(FixedClock(i64::MIN));
    assert!(matches!(
        v.verify(BODY, &header),
        Err(SignatureError::OutsideTolerance { .. })
    ));
}

#[test]
fn leading_zeros_sign_the_number() {
    // Stripe's SDKs read t as a number, so `t=0001700000000` signs "1700000000.".
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    assert!(verifier_at(NOW)
        .verify(BODY, &format!("t=000{NOW},v1={sig}"))
        .is_ok());
}

#[test]
fn entry_without_equals() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    let err = verifier_at(NOW)
        .verify(BODY, &format!("t={NOW},garbage,v1={sig}"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SignatureError::MalformedHeader(MalformedHeader::EntryWithoutEquals { index: 1, .. })
        ),
        "{err:?}"
    );
}

#[test]
fn header_too_long() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    let h = format!("t={NOW},v1={sig},x={}", "a".repeat(MAX_HEADER_LEN));
    assert!(matches!(
        verifier_at(NOW).verify(BODY, &h).unwrap_err(),
        SignatureError::MalformedHeader(MalformedHeader::TooLong {
            max: MAX_HEADER_LEN,
            ..
        })
    ));
}

#[test]
fn too_many_entries() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    let mut h = format!("t={NOW},v1={sig}");
    for _ in 0..MAX_HEADER_ENTRIES - 2 {
        h.push_str(",x=1");
    }
    assert!(
        verifier_at(NOW).verify(BODY, &h).is_ok(),
        "exactly the maximum is fine"
    );
    h.push_str(",x=1");
    let err = verifier_at(NOW).verify(BODY, &h).unwrap_err();
    assert!(
        matches!(
            err,
            SignatureError::MalformedHeader(MalformedHeader::TooManyEntries {
                max: MAX_HEADER_ENTRIES,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn spaces_around_entries_are_tolerated() {
    let sig = sig_of(&sign(BODY, SECRET, NOW));
    assert!(verifier_at(NOW)
        .verify(BODY, &format!("t={NOW}, v1={sig}"))
        .is_ok());
}

#[test]
fn rotation_reports_matched_secret() {
    let v = Verifier::new(SigningSecret::new("whsec_new").unwrap().with_label("new"))
        .with_secret(SigningSecret::new("whsec_old").unwrap().with_label("old"))
        .with_clock(FixedClock(NOW));
    let old = v.verify(BODY, &sign(BODY, "whsec_old", NOW)).unwrap();
    assert_eq!(old.matched_secret().label(), Some("old"));
    assert_eq!(old.matched_secret().index(), 1);
    let both = v
        .verify(
            BODY,
            &sign_with_secrets(BODY, &["whsec_old", "whsec_new"], NOW),
        )
        .unwrap();
    assert_eq!(
        both.matched_secret().label(),
        Some("new"),
        "the first configured secret wins"
    );
    assert!(matches!(
        v.verify(BODY, &sign(BODY, "whsec_third", NOW)),
        Err(SignatureError::Mismatch { .. })
    ));
}

#[test]
fn secrets_list_from_env_style_string() {
    let v = Verifier::from_secrets_list("whsec_a,whsec_b")
        .unwrap()
        .with_clock(FixedClock(NOW));
    assert_eq!(v.secrets().len(), 2);
    assert_eq!(
        v.verify(BODY, &sign(BODY, "whsec_b", NOW))
            .unwrap()
            .matched_secret()
            .label(),
        Some("1")
    );
    assert_eq!(
        Verifier::from_secrets_list("whsec_a, whsec_b").unwrap_err(),
        SecretError::SurroundingWhitespace
    );
    assert_eq!(
        Verifier::from_secrets_list("whsec_a,,").unwrap_err(),
        SecretError::Empty
    );
}

#[test]
fn invalid_utf8_body_verifies() {
    let body = [0xff, 0xfe, 0x00, b'{', 0xc3];
    let header = sign(&body, SECRET, NOW);
    assert_eq!(
        verifier_at(NOW).verify(&body, &header).unwrap().body(),
        &body
    );
}

#[test]
fn errors_and_debug_never_show_secrets_or_expected_signatures() {
    let secret = "whsec_do_not_print_me";
    let v = Verifier::new(SigningSecret::new(secret).unwrap().with_label("primary"))
        .with_clock(FixedClock(NOW));
    let expected = sig_of(&sign(BODY, secret, NOW));
    let attempts = [
        format!("t={NOW},v1={}", "0".repeat(64)),
        format!("t={NOW}"),
        format!("t={},v1={expected}", NOW - 1000),
        "garbage".to_owned(),
    ];
    for h in &attempts {
        let mut tampered = BODY.to_vec();
        tampered.push(b'x');
        let err = v.verify(&tampered, h).unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("do_not_print_me"), "{text}");
            assert!(!text.contains(&expected), "{text}");
        }
    }
    let dbg = format!("{v:?}");
    assert!(!dbg.contains("do_not_print_me"), "{dbg}");
    assert!(dbg.contains("primary"));
}

#[test]
fn error_messages_are_actionable() {
    let e = verifier_at(NOW)
        .verify(BODY, &sign(BODY, SECRET, NOW - 400))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "timestamp is 400s from now, tolerance is 300s"
    );
    assert_eq!(
        SignatureError::MissingHeader.to_string(),
        "missing Stripe-Signature header"
    );
    assert_eq!(
        SignatureError::MalformedHeader(MalformedHeader::DuplicateTimestamp).to_string(),
        "malformed Stripe-Signature header: more than one t= timestamp"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn sign_then_verify_any_body(body in proptest::collection::vec(any::<u8>(), 0..65536), t in 0i64..4_000_000_000) {
        let header = sign(&body, SECRET, t);
        prop_assert!(verifier_at(t).verify(&body, &header).is_ok());
    }

    #[test]
    fn flipping_any_body_bit_fails(body in proptest::collection::vec(any::<u8>(), 1..4096), idx in any::<usize>(), bit in 0u8..8) {
        let header = sign(&body, SECRET, NOW);
        let mut tampered = body.clone();
        let i = idx % tampered.len();
        tampered[i] ^= 1 << bit;
        let r = verifier_at(NOW).verify(&tampered, &header);
        prop_assert!(matches!(r, Err(SignatureError::Mismatch { .. })), "{:?}", r);
    }

    #[test]
    fn flipping_any_signature_bit_fails(body in proptest::collection::vec(any::<u8>(), 0..1024), idx in 0usize..32, bit in 0u8..8) {
        let header = sign(&body, SECRET, NOW);
        let mut raw = hex::decode(sig_of(&header)).unwrap();
        raw[idx] ^= 1 << bit;
        let h = format!("t={NOW},v1={}", hex::encode(raw));
        let r = verifier_at(NOW).verify(&body, &h);
        prop_assert!(matches!(r, Err(SignatureError::Mismatch { .. })), "{:?}", r);
    }

    #[test]
    fn changing_the_timestamp_fails(body in proptest::collection::vec(any::<u8>(), 0..1024), delta in 1i64..200, bit in 0u32..40) {
        let header = sign(&body, SECRET, NOW);
        let sig = sig_of(&header);
        for t in [NOW + delta, NOW - delta, NOW ^ (1 << bit)] {
            let h = format!("t={t},v1={sig}");
            let v = verifier_at(NOW).with_tolerance_policy(Tolerance::DangerouslyUnchecked);
            let r = v.verify(&body, &h);
            prop_assert!(matches!(r, Err(SignatureError::Mismatch { .. })), "{:?}", r);
        }
    }

    #[test]
    fn header_parser_never_panics(header in ".{0,300}") {
        let _ = verifier_at(NOW).verify(BODY, &header);
    }

    #[test]
    fn header_parser_never_panics_on_structured_junk(
        parts in proptest::collection::vec("(t|v1|v0|x|)(=)?[0-9a-fA-Fx+.-]{0,70}", 0..40)
    ) {
        let header = parts.join(",");
        let _ = verifier_at(NOW).verify(BODY, &header);
    }
}
