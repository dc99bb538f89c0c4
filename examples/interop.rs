//! Run with: `bash .ci/interop.sh` (every direction), or by hand: `(cd interop && npm ci &&
//! node node_sign.js /tmp/cases.json)` then `cargo run --example interop --features
//! testing -- verify /tmp/cases.json` (or `-- sign out.json`)
//!
//! Cross-checks this crate's signatures against Stripe's official SDKs (see
//! `.ci/interop.sh`, which runs every direction).
//!
//! - `verify <cases.json>` reads a JSON array of `{secret, timestamp, body, header}` cases
//!   (made by `interop/node_sign.js` or `interop/python_sign.py` with the SDKs' own signing)
//!   and checks that [`Verifier`] accepts each header over its body at the signed time, and
//!   that it rejects a tampered body, a tampered timestamp, a wrong secret and a stale
//!   clock.
//! - `sign <out.json>` writes such cases with [`testing::sign`] (and one
//!   [`testing::sign_with_secrets`] header), for `interop/node_verify.js` and
//!   `interop/python_verify.py` to check with the SDKs' `constructEvent`.
//!
//! Both modes print one line per case; `verify` ends with `N passed, M failed` and exits
//! non-zero if any case failed or there were none.

use std::error::Error;
use std::fmt::Write as _;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use stripe_webhooks::{testing, FixedClock, SignatureError, SigningSecret, Verifier};

/// One signed request: `header` signs `body` with `secret` at `timestamp`.
#[derive(Debug, Serialize, Deserialize)]
struct Case {
    /// What the case covers (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    secret: String,
    timestamp: i64,
    body: String,
    header: String,
}

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, path] if mode == "verify" => verify_file(path),
        [mode, path] if mode == "sign" => sign_file(path),
        _ => {
            eprintln!("usage: interop verify <cases.json> | interop sign <out.json>");
            Ok(ExitCode::from(2))
        }
    }
}

fn verify_file(path: &str) -> Result<ExitCode, Box<dyn Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let cases: Vec<Case> =
        serde_json::from_str(&text).map_err(|e| format!("parsing {path}: {e}"))?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for (i, case) in cases.iter().enumerate() {
        let label = describe(i, case);
        match check_case(case) {
            Ok(()) => {
                passed += 1;
                println!("ok   {label}");
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {label}: {why}");
            }
        }
    }
    if cases.is_empty() {
        println!("no cases in {path}");
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe(index: usize, case: &Case) -> String {
    format!(
        "case {index} ({}; t={}, {} body bytes)",
        case.name.as_deref().unwrap_or("unnamed"),
        case.timestamp,
        case.body.len()
    )
}

fn verifier(secret: &str, now: i64) -> Result<Verifier, String> {
    let secret = SigningSecret::new(secret).map_err(|e| format!("secret rejected: {e}"))?;
    Ok(Verifier::new(secret).with_clock(FixedClock(now)))
}

/// Checks that the case verifies, and that every kind of tampering is refused.
fn check_case(case: &Case) -> Result<(), String> {
    let body = case.body.as_bytes();
    let good = verifier(&case.secret, case.timestamp)?;

    let verified = good
        .verify(body, &case.header)
        .map_err(|e| format!("genuine request rejected: {e}"))?;
    if verified.timestamp() != case.timestamp {
        return Err(format!(
            "verified timestamp {} differs from the case's {}",
            verified.timestamp(),
            case.timestamp
        ));
    }
    if verified.body() != body {
        return Err("verified body differs from the input".to_owned());
    }

    // A body changed on the way: a byte appended (as a re-encoding proxy might) and the
    // first byte replaced.
    let mut appended = body.to_vec();
    appended.push(b'\n');
    expect_mismatch(
        &good,
        &appended,
        &case.header,
        "body with a newline appended",
    )?;
    let mut replaced = body.to_vec();
    match replaced.first_mut() {
        Some(b) => *b = if *b == b' ' { b'\t' } else { b' ' },
        None => replaced.push(b' '),
    }
    expect_mismatch(
        &good,
        &replaced,
        &case.header,
        "body with its first byte replaced",
    )?;

    // The signed timestamp changed in the header.
    let retimed = retime(&case.header, case.timestamp);
    expect_mismatch(
        &good,
        body,
        &retimed,
        "header with the timestamp moved by one second",
    )?;

    // Another secret.
    let mut wrong_secret = case.secret.clone();
    wrong_secret.push('x');
    expect_mismatch(
        &verifier(&wrong_secret, case.timestamp)?,
        body,
        &case.header,
        "wrong secret",
    )?;

    // A genuine signature, but verified long after it was made.
    let late = verifier(&case.secret, case.timestamp.saturating_add(301))?;
    match late.verify(body, &case.header) {
        Err(SignatureError::OutsideTolerance { .. }) => Ok(()),
        Err(e) => Err(format!(
            "verifying 301 s late: expected OutsideTolerance, got {e}"
        )),
        Ok(_) => Err("verifying 301 s late was accepted".to_owned()),
    }
}

fn expect_mismatch(
    verifier: &Verifier,
    body: &[u8],
    header: &str,
    what: &str,
) -> Result<(), String> {
    match verifier.verify(body, header) {
        Err(SignatureError::Mismatch { .. }) => Ok(()),
        Err(e) => Err(format!("{what}: expected a mismatch, got {e}")),
        Ok(_) => Err(format!("{what} was accepted")),
    }
}

/// The header with its `t=` entry replaced by `timestamp + 1`.
fn retime(header: &str, timestamp: i64) -> String {
    let bumped = timestamp.saturating_add(1);
    let mut out = String::with_capacity(header.len() + 1);
    for (i, entry) in header.split(',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        if entry.trim_start().starts_with("t=") {
            let _ = write!(out, "t={bumped}");
        } else {
            out.push_str(entry);
        }
    }
    out
}

fn sign_file(path: &str) -> Result<ExitCode, Box<dyn Error>> {
    let cases = build_signed_cases()?;
    for (i, case) in cases.iter().enumerate() {
        println!("signed {}", describe(i, case));
    }
    let mut json = serde_json::to_string_pretty(&cases)?;
    json.push('\n');
    std::fs::write(path, json).map_err(|e| format!("writing {path}: {e}"))?;
    println!("wrote {} cases to {path}", cases.len());
    Ok(ExitCode::SUCCESS)
}

/// A snapshot event, compact, whose `data.object` is the given JSON object.
fn event(id: &str, event_type: &str, created: i64, object: &serde_json::Value) -> String {
    serde_json::json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
        "data": {"object": object},
    })
    .to_string()
}

/// The request bodies: all valid JSON, since the SDKs' `constructEvent` parses them.
fn bodies() -> Result<Vec<(&'static str, String)>, Box<dyn Error>> {
    let customer = serde_json::json!({
        "id": "cus_interop", "object": "customer", "email": "jenny@example.com",
        "name": "Jenny Rosen", "metadata": {}
    });
    let compact = event(
        "evt_rs_compact",
        "customer.created",
        1_700_000_000,
        &customer,
    );

    let unicode = event(
        "evt_rs_unicode",
        "customer.updated",
        1_700_000_001,
        &serde_json::json!({
            "id": "cus_unicode", "object": "customer",
            "name": "Zoë Café Müller", "description": "日本語のテスト — 東京",
            "metadata": {"emoji": "🎉👩‍💻🇯🇵", "math": "∑ ≠ ∞", "rtl": "مرحبا"}
        }),
    );

    // Pretty-printed with CRLF line endings, as a Windows proxy might forward it.
    let crlf_value = serde_json::json!({
        "id": "evt_rs_crlf", "object": "event", "type": "invoice.paid", "created": 1_700_000_002,
        "livemode": false,
        "data": {"object": {"id": "in_crlf", "object": "invoice", "amount_paid": 4200, "currency": "eur"}}
    });
    let crlf = serde_json::to_string_pretty(&crlf_value)?.replace('\n', "\r\n") + "\r\n";

    // Whitespace-heavy: tabs, wide indentation, trailing spaces and blank lines.
    let spaced = "\n\n  {\t\"id\" :  \"evt_rs_spaced\" ,   \n\n\t\t\"object\"\t:\t\"event\",  \n    \
                  \"type\"    :    \"charge.succeeded\"  ,\n        \"created\" : 1700000003 ,\n\
                  \t\"livemode\":false,\n\t\"data\" : {   \"object\" :  {\n\t\t\t\"id\" : \"ch_spaced\" , \
                  \"object\":\"charge\" ,  \"amount\" :  999  }   }   \n  }  \n\n"
        .to_owned();

    // JSON escapes that must be signed as written, never decoded first.
    let escapes = r#"{"id":"evt_rs_escapes","object":"event","type":"customer.created","created":1700000004,"livemode":false,"data":{"object":{"id":"cus_esc","object":"customer","name":"caf\u00e9 \"quoted\" back\\slash \/ tab\t","description":"\ud83c\udf89 surrogate pair"}}}"#.to_owned();

    // About 64 KiB: many line items.
    let mut items = Vec::new();
    let mut size = 0usize;
    while size < 64 * 1024 - 256 {
        let n = items.len();
        let item = serde_json::json!({
            "id": format!("il_{n:06}"), "object": "line_item", "amount": n * 100,
            "description": format!("Line item {n} — Größe ✓"), "quantity": 1
        });
        size += item.to_string().len() + 1;
        items.push(item);
    }
    let big = event(
        "evt_rs_large",
        "invoice.finalized",
        1_700_000_005,
        &serde_json::json!({"id": "in_large", "object": "invoice", "lines": {"object": "list", "data": items}}),
    );

    Ok(vec![
        ("compact ASCII event", compact),
        ("non-ASCII UTF-8 body (é, 日本, emoji)", unicode),
        ("CRLF pretty-printed body", crlf),
        ("whitespace-heavy body", spaced),
        ("empty object", "{}".to_owned()),
        ("JSON escapes kept as written", escapes),
        ("~64 KiB body", big),
    ])
}

fn build_signed_cases() -> Result<Vec<Case>, Box<dyn Error>> {
    let long_secret = format!("whsec_{}", "0123456789abcdef".repeat(6)); // longer than an HMAC block
    let secrets = [
        "whsec_test_secret".to_owned(),
        "whsec_5hJ0dDmN3pQr8sTuVwXyZaBcDeFgHiJk".to_owned(),
        long_secret,
        "whsec_clé_日本_🔑".to_owned(),
    ];
    let timestamps: [i64; 6] = [
        1,
        1_000_000_000,
        1_700_000_000,
        2_000_000_000,
        4_102_444_800, // 2100-01-01
        9_999_999_999,
    ];

    let mut cases = Vec::new();
    let mut push = |name: String, secret: &str, timestamp: i64, body: &str, header: String| {
        cases.push(Case {
            name: Some(name),
            secret: secret.to_owned(),
            timestamp,
            body: body.to_owned(),
            header,
        });
    };

    let bodies = bodies()?;
    for (what, body) in &bodies {
        serde_json::from_str::<serde_json::Value>(body)
            .map_err(|e| format!("body {what:?} is not valid JSON: {e}"))?;
    }
    for (i, (what, body)) in bodies.iter().enumerate() {
        let secret = &secrets[i % secrets.len()];
        let ts = timestamps[i % timestamps.len()];
        push(
            format!("rust sign: {what}"),
            secret,
            ts,
            body,
            testing::sign(body.as_bytes(), secret, ts),
        );
    }
    // Every secret over the Unicode body.
    let (_, unicode) = &bodies[1];
    for (i, secret) in secrets.iter().enumerate() {
        let ts = timestamps[(i + 2) % timestamps.len()];
        push(
            format!("rust sign: secret #{i} over the non-ASCII body"),
            secret,
            ts,
            unicode,
            testing::sign(unicode.as_bytes(), secret, ts),
        );
    }
    // A rotation: two v1 signatures; the verifying side knows only the second secret.
    let (_, compact) = &bodies[0];
    let (old, new) = (secrets[0].as_str(), secrets[1].as_str());
    push(
        "rust sign_with_secrets: two secrets, verified with the second".to_owned(),
        new,
        1_700_000_000,
        compact,
        testing::sign_with_secrets(compact.as_bytes(), &[old, new], 1_700_000_000),
    );
    // Signed now, so the SDKs' default tolerance applies against their real clocks too.
    let now = testing::now();
    push(
        "rust sign: timestamp is the current time".to_owned(),
        &secrets[0],
        now,
        compact,
        testing::sign(compact.as_bytes(), &secrets[0], now),
    );
    Ok(cases)
}
