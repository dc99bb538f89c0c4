//! The event model: every type, unknown and unparsable objects, envelope errors.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use proptest::prelude::*;
use stripe_webhooks::dangerous::{parse_unverified, parse_unverified_notification};
use stripe_webhooks::objects::{HasId, PaymentSource};
use stripe_webhooks::{testing, Event, EventType, ParseError};

fn tsv_rows() -> Vec<(String, String)> {
    include_str!("../data/stripe/event-types.tsv")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut c = l.split('\t');
            (c.next().unwrap().to_owned(), c.next().unwrap().to_owned())
        })
        .collect()
}

/// `checkout.session.completed` → `CheckoutSessionCompleted`, written here apart from
/// the generator, so that a generator mapping a type to another variant fails the test.
fn variant_name(wire: &str) -> String {
    wire.split(['.', '_'])
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn every_documented_type_parses_to_its_own_variant() {
    let rows = tsv_rows();
    assert_eq!(rows.len(), 275);
    assert_eq!(EventType::ALL.len(), 275);
    for (wire, object) in &rows {
        // Every object a type can carry, not only the first.
        for obj in object.split('|') {
            let fixture = testing::fixture(obj).unwrap_or_else(|| panic!("no fixture for {obj}"));
            let json = testing::event_json("evt_all", wire, fixture);
            let event = parse_unverified(json.as_bytes()).unwrap();
            assert_eq!(event.event_type().as_str(), wire);
            assert!(!event.event_type().is_unknown(), "{wire} is known");
            if let Event::Unparsed(u) = &event {
                panic!("{wire} with a {obj} fixture did not parse: {}", u.error());
            }
            // The variant itself, read from its Debug form: `InvoicePaid(TypedEvent { …`.
            let debug = format!("{event:?}");
            let variant = debug.split('(').next().unwrap();
            assert_eq!(
                variant,
                variant_name(wire),
                "{wire} parsed to the wrong variant"
            );
            // Every documented type carries a struct of `objects`.
            assert!(!event.is_untyped(), "{wire} is untyped");
            assert!(event.event_type().has_typed_object(), "{wire}");
            assert_eq!(event.id().as_str(), "evt_all");
            let raw: serde_json::Value = serde_json::from_str(event.raw_object().get()).unwrap();
            assert_eq!(raw["object"], obj);
            // The typed object holds the fixture's id, read through the struct.
            if let Some(id) = raw["id"].as_str() {
                assert_eq!(event.object_id(), Some(id), "{wire} / {obj}");
            }
        }
    }
}

#[test]
fn event_type_round_trips_through_strings() {
    for t in EventType::ALL {
        let s = t.as_str();
        assert_eq!(&s.parse::<EventType>().unwrap(), t);
        assert_eq!(t.to_string(), s);
        assert!(t.object_type().is_some());
    }
    let unknown: EventType = "brand_new.thing".parse().unwrap();
    assert_eq!(unknown, EventType::Unknown("brand_new.thing".into()));
    assert_eq!(unknown.as_str(), "brand_new.thing");
    assert_eq!(unknown.object_type(), None);
    assert_eq!(
        EventType::InvoicePaymentFailed.as_str(),
        "invoice.payment_failed"
    );
}

#[test]
fn typed_objects_where_they_exist() {
    let parse = |t: &str| {
        parse_unverified(testing::event_for_type("evt_t", t).unwrap().as_bytes()).unwrap()
    };
    match parse("checkout.session.completed") {
        Event::CheckoutSessionCompleted(s) => assert!(s.id.starts_with("cs_")),
        other => panic!("{other:?}"),
    }
    match parse("invoice.payment_failed") {
        Event::InvoicePaymentFailed(i) => assert!(i.id.is_some()),
        other => panic!("{other:?}"),
    }
    match parse("customer.subscription.deleted") {
        Event::CustomerSubscriptionDeleted(s) => assert!(s.id.starts_with("sub_")),
        other => panic!("{other:?}"),
    }
    match parse("charge.dispute.created") {
        Event::ChargeDisputeCreated(d) => {
            assert!(d.id.starts_with("du_") || d.id.starts_with("dp_"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn polymorphic_sources_dispatch_on_object() {
    for obj in ["bank_account", "card", "source"] {
        let json = testing::event_json(
            "evt_p",
            "customer.source.created",
            testing::fixture(obj).unwrap(),
        );
        match parse_unverified(json.as_bytes()).unwrap() {
            Event::CustomerSourceCreated(e) => {
                let tag = match e.object() {
                    stripe_webhooks::objects::PaymentSource::BankAccount(_) => "bank_account",
                    stripe_webhooks::objects::PaymentSource::Card(_) => "card",
                    stripe_webhooks::objects::PaymentSource::Source(_) => "source",
                    _ => "other",
                };
                assert_eq!(tag, obj);
            }
            other => panic!("{other:?}"),
        }
    }
    // A kind of source Stripe adds later is still typed: its JSON, as sent.
    let json = testing::event_json(
        "evt_p",
        "account.external_account.created",
        r#"{"id":"x_1","object":"alien","customer":{"id":"cus_9","object":"customer"},
            "client_secret":"x_1_secret_abc"}"#,
    );
    match parse_unverified(json.as_bytes()).unwrap() {
        Event::AccountExternalAccountCreated(e) => {
            let source = e.object();
            assert!(matches!(source, PaymentSource::Unknown(_)), "{source:?}");
            assert_eq!(source.object_type(), "alien");
            assert_eq!(source.id(), Some("x_1"));
            assert_eq!(source.customer_id(), Some("cus_9"));
            assert_eq!(
                serde_json::to_value(source).unwrap()["client_secret"],
                "x_1_secret_abc"
            );
            let debug = format!("{source:?}");
            assert!(!debug.contains("secret_abc"), "{debug}");
            assert!(debug.contains("alien"), "{debug}");
        }
        other => panic!("{other:?}"),
    }
    // Without an `object` to tell it by, it cannot be read.
    let json = testing::event_json(
        "evt_p",
        "customer.source.updated",
        r#"{"id":"x_1","customer":"cus_1"}"#,
    );
    match parse_unverified(json.as_bytes()).unwrap() {
        Event::Unparsed(u) => assert!(u.error().message().contains("object"), "{u:?}"),
        other => panic!("{other:?}"),
    }
    // A generated type's object that is not a JSON object: the error says where, 1-based
    // (it said line 0 column 0).
    let json = testing::event_json("evt_c", "coupon.updated", r#""co_1""#);
    match parse_unverified(json.as_bytes()).unwrap() {
        Event::Unparsed(u) => {
            assert_eq!((u.error().line(), u.error().column()), (1, 6), "{u:?}");
            assert!(u.error().message().contains("expected a map"), "{u:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn envelope_accessors() {
    let json = r#"{"id":"evt_env","object":"event","account":"acct_1","api_version":"2025-03-31.basil","context":"acct_1","created":1700000000,
      "data":{"object":{"id":"cus_1","object":"customer","email":"a@b.c"},"previous_attributes":{"email":"old@b.c"}},
      "livemode":true,"pending_webhooks":3,"request":{"id":"req_1","idempotency_key":"ik"},"type":"customer.updated"}"#;
    let e = parse_unverified(json.as_bytes()).unwrap();
    assert_eq!(e.id().as_str(), "evt_env");
    assert_eq!(e.event_type(), &EventType::CustomerUpdated);
    assert_eq!(e.created(), 1_700_000_000);
    assert!(e.livemode());
    assert_eq!(e.api_version(), Some("2025-03-31.basil"));
    assert_eq!(e.account(), Some("acct_1"));
    assert_eq!(e.envelope().context(), Some("acct_1"));
    assert_eq!(e.pending_webhooks(), Some(3));
    let req = e.request().unwrap();
    assert_eq!(req.id.as_deref(), Some("req_1"));
    assert_eq!(req.idempotency_key.as_deref(), Some("ik"));
    assert_eq!(
        e.previous_attributes().unwrap().get(),
        r#"{"email":"old@b.c"}"#
    );
    assert!(e.raw_object().get().contains("a@b.c"));
}

#[test]
fn old_string_request_field_parses() {
    let json = r#"{"id":"evt_old","object":"event","created":1,"data":{"object":{"id":"cus_1","object":"customer"}},"livemode":false,"request":"req_old","type":"customer.created"}"#;
    let e = parse_unverified(json.as_bytes()).unwrap();
    assert_eq!(e.request().unwrap().id.as_deref(), Some("req_old"));
    assert_eq!(e.api_version(), None);
}

#[test]
fn unknown_type_is_kept_whole() {
    let json = testing::event_json(
        "evt_u",
        "quantum.entangled",
        r#"{"id":"q_1","object":"quantum","spin":"up"}"#,
    );
    match parse_unverified(json.as_bytes()).unwrap() {
        Event::Unknown(u) => {
            assert_eq!(u.type_str(), "quantum.entangled");
            assert!(u.raw_object().get().contains(r#""spin":"up""#));
            assert_eq!(u.envelope().id().as_str(), "evt_u");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn known_type_with_broken_object_is_unparsed_with_path() {
    let obj = r#"{"id":"in_1","object":"invoice","lines":{"object":"list","data":[{"id":"il_1","amount":"not a number"}]}}"#;
    let json = testing::event_json("evt_b", "invoice.paid", obj);
    match parse_unverified(json.as_bytes()).unwrap() {
        Event::Unparsed(u) => {
            assert_eq!(u.envelope().event_type(), &EventType::InvoicePaid);
            assert_eq!(u.error().path(), "lines.data[0].amount");
            assert!(
                u.error().to_string().contains("lines.data[0].amount"),
                "{}",
                u.error()
            );
            assert_eq!(u.raw_object().get(), obj);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn not_json_is_invalid_json_with_position() {
    let err = parse_unverified(b"{\"id\": ").unwrap_err();
    assert!(
        matches!(err, ParseError::InvalidJson { line: 1, .. }),
        "{err:?}"
    );
    let err = parse_unverified(&[0xff, 0xfe]).unwrap_err();
    assert!(matches!(err, ParseError::InvalidJson { .. }), "{err:?}");
    // Not UTF-8 in a member no parse reads, of a snapshot and of a thin event: refused
    // all the same, where the bad byte is.
    let snapshot = testing::event_json("evt_utf8", "customer.updated", r#"{"id":"cus_1"}"#);
    let thin = THIN.replacen('{', "{\"x\":\"\u{1}\",", 1);
    for (body, parse) in [
        (snapshot.replacen('{', "{\"x\":\"\u{1}\",", 1), "snapshot"),
        (thin, "thin"),
    ] {
        let mut bytes = body.into_bytes();
        let at = bytes.iter().position(|&b| b == 1).unwrap();
        bytes[at] = 0xff;
        let err = if parse == "thin" {
            parse_unverified_notification(&bytes).unwrap_err()
        } else {
            parse_unverified(&bytes).unwrap_err()
        };
        let ParseError::InvalidJson {
            message,
            line,
            column,
            ..
        } = &err
        else {
            panic!("{parse}: {err:?}")
        };
        assert_eq!(
            (message.as_str(), *line, *column),
            ("invalid UTF-8", 1, at + 1),
            "{parse}"
        );
    }
}

#[test]
fn missing_envelope_fields_are_named() {
    let cases = [
        (
            r#"{"object":"event","type":"x","data":{"object":{}}}"#,
            "`id`",
        ),
        (
            r#"{"id":"evt","object":"event","data":{"object":{}}}"#,
            "`type`",
        ),
        (
            r#"{"id":"evt","type":"x","data":{"object":{}}}"#,
            "`object`",
        ),
        (
            r#"{"id":"evt","object":"event","type":"x","data":{"object":{}}}"#,
            "`created`",
        ),
        (
            r#"{"id":"","object":"event","type":"x","created":1,"data":{"object":{}}}"#,
            "`id` is empty",
        ),
        (
            r#"{"id":"evt","object":"event","type":"x","created":"soon","data":{"object":{}}}"#,
            "`created`",
        ),
        (
            r#"{"id":"evt","object":"event","type":"x","created":1,"livemode":false}"#,
            "`data`",
        ),
        (
            r#"{"id":"evt","object":"event","type":"x","created":1,"data":{"object":{}}}"#,
            "`livemode`",
        ),
        (
            r#"{"id":"evt","object":"event","type":"x","created":1,"livemode":false,"data":[{},{}]}"#,
            "JSON object",
        ),
        (
            r#"{"id":"evt","object":"customer","type":"x","data":{"object":{}}}"#,
            "not \"event\"",
        ),
        (r#"[1,2]"#, "JSON object"),
    ];
    for (json, needle) in cases {
        let err = parse_unverified(json.as_bytes()).unwrap_err();
        match &err {
            ParseError::NotAnEvent {
                message,
                line,
                column,
                ..
            } => {
                assert!(message.contains(needle), "{json}: {message}");
                assert!(*line >= 1 && *column >= 1, "{json}: {line}:{column}");
            }
            other => panic!("{json}: {other:?}"),
        }
        assert!(err.to_string().contains("line"), "{err}");
        // Each case names `evt` at the top, but those without an id (missing, empty, or
        // not an object at all).
        let want = json.contains(r#""id":"evt""#).then_some("evt");
        assert_eq!(err.event_id(), want, "{json}");
    }
    // A thin event that is not one in some part names its id too.
    let thin = r#"{"id":"evt_thin_bad","object":"v2.core.event","livemode":false,"created":"2024-09-17T06:20:52.246Z"}"#;
    let err =
        stripe_webhooks::dangerous::parse_unverified_notification(thin.as_bytes()).unwrap_err();
    assert_eq!(err.event_id(), Some("evt_thin_bad"), "{err:?}");
}

const THIN: &str = r#"{"id":"evt_test_65R9","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered","livemode":false,"created":"2024-09-17T06:20:52.246Z","related_object":{"id":"mtr_123","type":"billing.meter","url":"/v1/billing/meters/mtr_123"},"context":null}"#;

#[test]
fn thin_events_parse_with_their_own_parser() {
    let n = stripe_webhooks::dangerous::parse_unverified_notification(THIN.as_bytes()).unwrap();
    assert_eq!(n.id.as_str(), "evt_test_65R9");
    assert_eq!(
        n.event_type.as_str(),
        "v1.billing.meter.error_report_triggered"
    );
    let rel = n.related_object.unwrap();
    assert_eq!(rel.object_type, "billing.meter");
    assert_eq!(rel.url, "/v1/billing/meters/mtr_123");
}

#[test]
fn wrong_parser_says_which_to_use() {
    let err = parse_unverified(THIN.as_bytes()).unwrap_err();
    assert_eq!(err, ParseError::ThinEventNotification);
    assert!(err.to_string().contains("parse_notification"));
    let snapshot = testing::event_for_type("evt_s", "customer.created").unwrap();
    let err =
        stripe_webhooks::dangerous::parse_unverified_notification(snapshot.as_bytes()).unwrap_err();
    assert_eq!(err, ParseError::SnapshotEvent);
    assert!(err.to_string().contains("`parse`"));
}

#[test]
fn every_fixture_round_trips_through_serde() {
    for (wire, object) in tsv_rows() {
        let obj = object.split('|').next().unwrap();
        let json = testing::event_json("evt_rt", &wire, testing::fixture(obj).unwrap());
        let event = parse_unverified(json.as_bytes()).unwrap();
        let out = serde_json::to_string(&event).unwrap();
        let back: Event = serde_json::from_str(&out).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), out, "{wire}");
        assert_eq!(back.event_type(), event.event_type());
        assert_eq!(back.raw_object().get(), event.raw_object().get());
        let original: serde_json::Value = serde_json::from_str(&json).unwrap();
        let written: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(original, written, "{wire}: serialization keeps every field");
    }
}

/// The same event with `type` first. The one-pass parse reads `type` from the end of
/// the body, so this one takes the two-pass parse.
fn type_first(json: &str, wire: &str) -> String {
    let ty = serde_json::Value::from(wire);
    let tail = format!(r#","type":{ty}}}"#);
    let members = json.strip_suffix(&tail).unwrap().strip_prefix('{').unwrap();
    format!(r#"{{"type":{ty},{members}}}"#)
}

#[test]
fn one_pass_and_two_pass_parses_agree_on_every_fixture() {
    for (wire, object) in tsv_rows() {
        for obj in object.split('|') {
            let json = testing::event_json("evt_agree", &wire, testing::fixture(obj).unwrap());
            let slow = type_first(&json, &wire);
            let (a, b) = (
                parse_unverified(json.as_bytes()).unwrap(),
                parse_unverified(slow.as_bytes()).unwrap(),
            );
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{wire} / {obj}");
            assert_eq!(a.raw_object().get(), b.raw_object().get(), "{wire} / {obj}");
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
        }
    }
    // Also where the object does not fit its struct, and with previous attributes.
    let broken = testing::event_json(
        "evt_b",
        "invoice.paid",
        r#"{"id": 42, "object": "invoice"}"#,
    );
    for body in [broken.clone(), type_first(&broken, "invoice.paid")] {
        let Event::Unparsed(u) = parse_unverified(body.as_bytes()).unwrap() else {
            panic!("an invoice with a numeric id is unparsed")
        };
        assert!(u.error().to_string().contains("id"), "{}", u.error());
    }
    let updated = testing::event_for_type("evt_p", "customer.updated")
        .unwrap()
        .replace(
            r#""data":{"object":"#,
            r#""data":{"previous_attributes":{"email":"old@example.com"},"object":"#,
        );
    for body in [updated.clone(), type_first(&updated, "customer.updated")] {
        let event = parse_unverified(body.as_bytes()).unwrap();
        assert!(matches!(event, Event::CustomerUpdated(_)));
        assert_eq!(
            event.previous_attributes().unwrap().get(),
            r#"{"email":"old@example.com"}"#
        );
    }
}

#[test]
fn invalid_utf8_in_an_ignored_member_is_invalid_json_either_way() {
    let json = testing::event_for_type("evt_u", "invoice.paid").unwrap();
    let mut bad = json
        .replacen(r#""object":{"#, r#""object":{"zz_not_a_field":"XX","#, 1)
        .into_bytes();
    let at = bad.windows(2).position(|w| w == b"XX").unwrap();
    bad[at] = 0xFF;
    let slow = type_first(&json, "invoice.paid").replacen(
        r#""object":{"#,
        r#""object":{"zz_not_a_field":"XX","#,
        1,
    );
    let mut slow = slow.into_bytes();
    let at = slow.windows(2).position(|w| w == b"XX").unwrap();
    slow[at] = 0xFF;
    for body in [bad, slow] {
        let err = parse_unverified(&body).unwrap_err();
        assert!(matches!(err, ParseError::InvalidJson { .. }), "{err:?}");
    }
}

#[test]
fn event_is_at_most_64_bytes() {
    assert!(
        std::mem::size_of::<Event>() <= 64,
        "{}",
        std::mem::size_of::<Event>()
    );
}

#[test]
fn largest_fixture_parses_on_a_256k_stack() {
    let (obj, fixture) = testing::fixtures()
        .iter()
        .max_by_key(|(_, j)| j.len())
        .unwrap();
    let wire = tsv_rows()
        .into_iter()
        .find(|(_, o)| o.split('|').any(|x| x == *obj))
        .unwrap()
        .0;
    let json = testing::event_json("evt_big", &wire, fixture);
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let e = parse_unverified(json.as_bytes()).unwrap();
            assert!(
                !matches!(e, Event::Unknown(_) | Event::Unparsed(_)),
                "{e:?}"
            );
        })
        .unwrap();
    handle.join().unwrap();
}

/// A body that is not JSON (a proxy's HTML page) is `InvalidJson`, as documented; JSON
/// that is not an object is `NotAnEvent`.
#[test]
fn not_json_and_not_an_object_are_told_apart() {
    for body in [
        "<html>",
        "]",
        "}",
        "garbage",
        "\u{1}",
        "502 Bad Gateway",
        "[1,",
        "\"open",
    ] {
        let err = parse_unverified(body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ParseError::InvalidJson { .. }),
            "{body}: {err:?}"
        );
    }
    for body in ["[1,2]", "\"evt\"", "42", "-1", "true", "null"] {
        let err = parse_unverified(body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ParseError::NotAnEvent { .. }),
            "{body}: {err:?}"
        );
    }
    // JSON in all but its UTF-8 (a string's byte 0xFF).
    for body in [&b"\"\xff\""[..], b"[\"\xff\"]"] {
        let err = parse_unverified(body).unwrap_err();
        assert!(matches!(err, ParseError::InvalidJson { .. }), "{err:?}");
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let mut json =
        String::from(r#"{"id":"evt","object":"event","type":"customer.created","data":{"object":"#);
    json.push_str(&"[".repeat(100_000));
    let err = parse_unverified(json.as_bytes()).unwrap_err();
    assert!(matches!(
        err,
        ParseError::InvalidJson { .. } | ParseError::NotAnEvent { .. }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_unverified(&bytes);
        let _ = stripe_webhooks::dangerous::parse_unverified_notification(&bytes);
    }

    #[test]
    fn mutated_events_never_panic(cut in 0usize..2000, byte in any::<u8>()) {
        let json = testing::event_for_type("evt_m", "invoice.payment_failed").unwrap();
        let mut b = json.into_bytes();
        let i = cut % b.len();
        b[i] = byte;
        let _ = parse_unverified(&b);
    }
}

#[test]
fn test_kit_events_carry_the_pinned_api_version() {
    let json = testing::event_json("evt_version", "customer.created", r#"{"id":"cus_1"}"#);
    let e = parse_unverified(json.as_bytes()).unwrap();
    assert_eq!(e.api_version(), Some(stripe_webhooks::client::API_VERSION));
}
