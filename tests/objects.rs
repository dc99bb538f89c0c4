//! Drift over every object: each schema in `data/stripe/schemas/` and each fixture in
//! `data/stripe/fixtures/` (plus the constructed ones) parses into its struct, and keeps
//! parsing when Stripe adds fields, adds enum values, sends `null`, or (generated
//! objects) changes a field's type.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use stripe_webhooks::dangerous::parse_unverified;
use stripe_webhooks::{testing, Event};

/// Objects with a hand-written struct: `id` is required there, and a field of another
/// type fails the object (it becomes `Event::Unparsed`, tested in `tests/events.rs`).
const HAND_WRITTEN: &[&str] = &[
    "bank_account",
    "card",
    "charge",
    "checkout.session",
    "customer",
    "dispute",
    "invoice",
    "invoice_payment",
    "line_item",
    "payment_intent",
    "payment_method",
    "plan",
    "price",
    "product",
    "refund",
    "setup_intent",
    "source",
    "subscription",
    "subscription_item",
];

struct Row {
    field: String,
    ty: String,
    enum_values: Vec<String>,
}

fn schemas() -> BTreeMap<String, Vec<Row>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/stripe/schemas");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let object = name.strip_suffix(".tsv").unwrap().to_owned();
        if object.starts_with("event") {
            continue;
        }
        let rows = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                Row {
                    field: c[0].to_owned(),
                    ty: c[1].to_owned(),
                    enum_values: c
                        .get(5)
                        .filter(|v| !v.is_empty())
                        .map(|v| v.split('|').map(str::to_owned).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        out.insert(object, rows);
    }
    out
}

/// A value of the schema type, for objects without a fixture.
fn sample(ty: &str, enum_values: &[String]) -> Value {
    if ty.starts_with("array<") {
        return json!([]);
    }
    if ty.starts_with("list<") {
        return json!({"object": "list", "data": [], "has_more": false, "url": "/v1/x"});
    }
    if ty.starts_with("map<") || ty == "object" || ty == "address" {
        return json!({});
    }
    if ty.starts_with("expandable<") {
        return json!("obj_123");
    }
    match ty {
        "string" | "decimal_string" => json!("x"),
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "const" | "enum" => json!(enum_values.first().map_or("x", String::as_str)),
        _ => Value::Null,
    }
}

/// The object as a fixture, or one built from its schema.
fn object_json(object: &str, rows: &[Row]) -> Map<String, Value> {
    if let Some(f) = testing::fixture(object) {
        return serde_json::from_str(f).unwrap();
    }
    let mut m = Map::new();
    for r in rows.iter().filter(|r| !r.field.contains(['.', '['])) {
        m.insert(r.field.clone(), sample(&r.ty, &r.enum_values));
    }
    if m.contains_key("id") {
        m.insert("id".into(), json!(format!("{object}_1")));
    }
    m
}

fn parse(object: &str, m: &Map<String, Value>) -> Result<Option<String>, String> {
    let text = Value::Object(m.clone()).to_string();
    testing::parse_object(object, &text)
        .unwrap_or_else(|| panic!("no struct for {object}"))
        .map_err(|e| e.to_string())
}

/// Adds an unknown member to every object, at every depth (not to `metadata`, a map of
/// strings whose keys are the user's).
fn add_unknown_fields(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k != "metadata" {
                    add_unknown_fields(v);
                }
            }
            m.insert(
                "field_from_the_future".into(),
                json!({"nested": [1, {"deep": null}], "flag": true}),
            );
        }
        Value::Array(items) => items.iter_mut().for_each(add_unknown_fields),
        _ => {}
    }
}

#[test]
fn every_schema_has_a_struct_and_every_fixture_parses() {
    let schemas = schemas();
    assert_eq!(schemas.len(), 113);
    let with_struct: Vec<&str> = testing::object_types().collect();
    assert_eq!(
        with_struct,
        schemas.keys().map(String::as_str).collect::<Vec<_>>()
    );
    for (object, rows) in &schemas {
        let m = object_json(object, rows);
        let id = parse(object, &m).unwrap_or_else(|e| panic!("{object}: {e}"));
        assert_eq!(
            id.as_deref(),
            m.get("id").and_then(Value::as_str),
            "{object}"
        );
    }
    // Every fixture is an object with a struct.
    for (object, _) in testing::fixtures() {
        if *object != "event" {
            assert!(schemas.contains_key(*object), "{object}");
        }
    }
}

#[test]
fn unknown_fields_enum_values_and_nulls_never_fail_an_object() {
    for (object, rows) in &schemas() {
        let base = object_json(object, rows);
        let id = base.get("id").and_then(Value::as_str).map(str::to_owned);

        let mut v = Value::Object(base.clone());
        add_unknown_fields(&mut v);
        let got = parse(object, v.as_object().unwrap());
        assert_eq!(got, Ok(id.clone()), "{object}: unknown fields");

        // Every top-level enum gets a value this release does not know.
        let mut m = base.clone();
        for r in rows.iter().filter(|r| !r.field.contains(['.', '['])) {
            if r.ty == "enum" {
                m.insert(r.field.clone(), json!("value_from_the_future"));
            } else if r.ty == "array<enum>" {
                m.insert(r.field.clone(), json!(["value_from_the_future"]));
            }
        }
        assert_eq!(
            parse(object, &m),
            Ok(id.clone()),
            "{object}: unknown enum values"
        );

        // Every member but `id` is null.
        let mut m = base.clone();
        for (k, v) in m.iter_mut() {
            if k != "id" {
                *v = Value::Null;
            }
        }
        assert_eq!(parse(object, &m), Ok(id.clone()), "{object}: nulls");

        // Every member absent but `id` (and `object`).
        let m: Map<String, Value> = base
            .iter()
            .filter(|(k, _)| *k == "id" || *k == "object")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(parse(object, &m), Ok(id.clone()), "{object}: absent fields");
    }
}

#[test]
fn a_field_that_changed_type_costs_that_field_not_the_object() {
    for (object, rows) in &schemas() {
        if HAND_WRITTEN.contains(&object.as_str()) {
            continue;
        }
        let base = object_json(object, rows);
        let id = base.get("id").and_then(Value::as_str).map(str::to_owned);
        for r in rows
            .iter()
            .filter(|r| !r.field.contains(['.', '[']) && r.field != "id")
        {
            // A value of another JSON type than the schema's.
            let other = match r.ty.as_str() {
                "string" | "decimal_string" | "enum" | "const" => json!({"became": "an object"}),
                t if t.starts_with("expandable<") => json!(42),
                _ => json!("became a string"),
            };
            let mut m = base.clone();
            m.insert(r.field.clone(), other);
            assert_eq!(parse(object, &m), Ok(id.clone()), "{object}.{}", r.field);
        }
    }
}

#[test]
fn drifted_generated_objects_stay_typed_events() {
    // Through the event parser: every type whose object is generated, with an unknown
    // field, an unknown enum value and a field of another type at once.
    let rows = include_str!("../data/stripe/event-types.tsv");
    let schemas = schemas();
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let mut cols = line.split('\t');
        let (wire, object) = (cols.next().unwrap(), cols.next().unwrap());
        if object.contains('|') || HAND_WRITTEN.contains(&object) {
            continue;
        }
        let rows = &schemas[object];
        let mut m = object_json(object, rows);
        m.insert("field_from_the_future".into(), json!([{"x": 1}]));
        if let Some(r) = rows
            .iter()
            .find(|r| r.ty == "enum" && !r.field.contains('.'))
        {
            m.insert(r.field.clone(), json!("value_from_the_future"));
        }
        if let Some(r) = rows
            .iter()
            .find(|r| r.ty == "integer" && !r.field.contains('.'))
        {
            m.insert(r.field.clone(), json!({"now": "an object"}));
        }
        let json = testing::event_json("evt_drift", wire, &Value::Object(m.clone()).to_string());
        let event = parse_unverified(json.as_bytes()).unwrap();
        assert!(!event.is_untyped(), "{wire}: {event:?}");
        assert!(!matches!(event, Event::Unparsed(_)));
        assert_eq!(
            event.object_id(),
            m.get("id").and_then(Value::as_str),
            "{wire}"
        );
    }
    // An object that is not a JSON object at all is kept whole, as Unparsed.
    let json = testing::event_json("evt_drift", "coupon.created", "[1, 2]");
    let event = parse_unverified(json.as_bytes()).unwrap();
    let Event::Unparsed(u) = event else {
        panic!("{event:?}")
    };
    assert_eq!(u.raw_object().get(), "[1, 2]");
}

#[test]
fn generated_objects_read_their_fields() {
    use stripe_webhooks::objects::{Coupon, CouponDuration, Expandable};
    let json = testing::event_for_type("evt_c", "coupon.created").unwrap();
    let Event::CouponCreated(e) = parse_unverified(json.as_bytes()).unwrap() else {
        panic!()
    };
    let fixture: Value = serde_json::from_str(testing::fixture("coupon").unwrap()).unwrap();
    assert_eq!(e.id.as_deref(), fixture["id"].as_str());
    assert_eq!(e.valid, fixture["valid"].as_bool());
    assert!(matches!(
        e.duration,
        Some(CouponDuration::Forever | CouponDuration::Once | CouponDuration::Repeating)
    ));
    // Serialize writes what was read; it reads back the same.
    let back: Coupon = serde_json::from_str(&serde_json::to_string(e.object()).unwrap()).unwrap();
    assert_eq!(&back, e.object());
    // An unknown enum value is kept as sent.
    let c: Coupon = serde_json::from_str(r#"{"duration":"someday"}"#).unwrap();
    assert_eq!(c.duration, Some(CouponDuration::Unknown("someday".into())));
    assert_eq!(c.duration.unwrap().as_str(), "someday");
    // Expandable fields keep ids and expanded objects.
    let json = testing::event_for_type("evt_p", "payout.paid").unwrap();
    let Event::PayoutPaid(p) = parse_unverified(json.as_bytes()).unwrap() else {
        panic!()
    };
    let fixture: Value = serde_json::from_str(testing::fixture("payout").unwrap()).unwrap();
    let id = fixture["balance_transaction"].as_str().unwrap();
    assert!(
        matches!(&p.balance_transaction, Some(Expandable::Id(got)) if got == id),
        "{:?}",
        p.balance_transaction
    );
    let expanded: stripe_webhooks::objects::Payout = serde_json::from_str(
        r#"{"id":"po_1","balance_transaction":{"id":"txn_9","object":"balance_transaction","amount":5}}"#,
    )
    .unwrap();
    match &expanded.balance_transaction {
        Some(Expandable::Object(bt)) => {
            assert_eq!(bt.id.as_deref(), Some("txn_9"));
            assert_eq!(bt.amount, Some(5));
        }
        other => panic!("not expanded: {other:?}"),
    }
}

/// `Debug` output of an event, of its raw object and of the objects that carry a
/// credential (a client secret, an OAuth code, a session's bearer link) never shows the
/// credential: handlers log events with `?event`.
#[test]
fn debug_output_hides_client_secrets_and_auth_codes() {
    let cases = [
        (
            "payment_intent.succeeded",
            r#"{"id":"pi_1","object":"payment_intent","amount":100,"currency":"usd","status":"succeeded","client_secret":"pi_1_secret_SHOULD_NOT_SHOW"}"#,
        ),
        (
            "identity.verification_session.verified",
            r#"{"id":"vs_1","object":"identity.verification_session","client_secret":"vs_1_secret_SHOULD_NOT_SHOW","status":"verified"}"#,
        ),
        // Bearer links: an identity verification session's (which Stripe says never to
        // log) and a billing portal session's.
        (
            "identity.verification_session.created",
            r#"{"id":"vs_2","object":"identity.verification_session","status":"requires_input","url":"https://verify.stripe.com/start/test_SHOULD_NOT_SHOW"}"#,
        ),
        (
            "billing_portal.session.created",
            r#"{"id":"bps_1","object":"billing_portal.session","customer":"cus_1","livemode":false,"url":"https://billing.stripe.com/p/session/test_SHOULD_NOT_SHOW"}"#,
        ),
        // A file link downloads its file without authentication: on a file's `links`
        // (typed) and in the raw JSON.
        (
            "file.created",
            r#"{"id":"file_1","object":"file","purpose":"dispute_evidence","links":{"object":"list","data":[{"id":"link_1","object":"file_link","expired":false,"file":"file_1","livemode":false,"url":"https://files.stripe.com/links/SHOULD_NOT_SHOW"}],"has_more":false,"url":"/v1/file_links?file=file_1"}}"#,
        ),
        (
            "apps.install.created",
            r#"{"id":"ai_1","object":"apps.install","auth_code":"ac_SHOULD_NOT_SHOW","nested":[{"client_secret":"x_SHOULD_NOT_SHOW"}]}"#,
        ),
        // An issuing card's whole number and CVC (sent when expanded), on the card and
        // on an authorization's card.
        (
            "issuing_card.updated",
            r#"{"id":"ic_1","object":"issuing.card","last4":"4242","number":"4242SHOULD_NOT_SHOW","cvc":"1SHOULD_NOT_SHOW"}"#,
        ),
        (
            "issuing_authorization.request",
            r#"{"id":"iauth_1","object":"issuing.authorization","card":{"id":"ic_2","object":"issuing.card","number":"4000SHOULD_NOT_SHOW","cvc":"2SHOULD_NOT_SHOW"}}"#,
        ),
        // 3-D Secure: the client secret in the redirect URL's query, typed and raw.
        (
            "payment_intent.requires_action",
            r#"{"id":"pi_2","object":"payment_intent","status":"requires_action","next_action":{"type":"redirect_to_url","redirect_to_url":{"url":"https://hooks.stripe.com/3d_secure_2/hosted?payment_intent_client_secret=pi_2_secret_SHOULD_NOT_SHOW"}}}"#,
        ),
        (
            "setup_intent.requires_action",
            r#"{"id":"seti_1","object":"setup_intent","status":"requires_action","next_action":{"redirect_to_url":{"url":"https://hooks.stripe.com/x?setup_intent_client_secret=seti_1_secret_SHOULD_NOT_SHOW"}}}"#,
        ),
        // A whole object inside a generated struct's raw JSON: a terminal reader's failed
        // action holds its payment intent.
        (
            "terminal.reader.action_failed",
            r#"{"id":"tmr_1","object":"terminal.reader","action":{"type":"process_payment_intent","failure_code":"card_declined","api_error":{"type":"card_error","payment_intent":{"id":"pi_3","object":"payment_intent","client_secret":"pi_3_secret_SHOULD_NOT_SHOW"}}}}"#,
        ),
    ];
    for (ty, object) in cases {
        let event = parse_unverified(testing::event_json("evt_1", ty, object).as_bytes()).unwrap();
        let shown = format!("{event:?}");
        assert!(!shown.contains("SHOULD_NOT_SHOW"), "{ty}: {shown}");
        assert!(shown.contains("<redacted>"), "{ty}: {shown}");
        // The data itself is all there.
        assert!(event.raw_object().get().contains("SHOULD_NOT_SHOW"), "{ty}");
    }
    // An update's previous attributes too.
    let mut updated: serde_json::Value = serde_json::from_str(&testing::event_json(
        "evt_2",
        "payment_intent.processing",
        r#"{"id":"pi_3","object":"payment_intent"}"#,
    ))
    .unwrap();
    updated["data"]["previous_attributes"] =
        serde_json::json!({"client_secret": "pi_3_secret_SHOULD_NOT_SHOW", "amount": 5});
    let event = parse_unverified(updated.to_string().as_bytes()).unwrap();
    let shown = format!("{event:?}");
    assert!(!shown.contains("SHOULD_NOT_SHOW"), "{shown}");
    assert!(shown.contains(r#""amount":5"#), "{shown}");
    // A verification session's old bearer link among its previous attributes (which do
    // not say whose members they are): hidden in the event's `Debug`, and in the body as
    // the console shows it.
    let mut canceled: serde_json::Value = serde_json::from_str(&testing::event_json(
        "evt_4",
        "identity.verification_session.canceled",
        r#"{"id":"vs_3","object":"identity.verification_session","status":"canceled","url":null}"#,
    ))
    .unwrap();
    canceled["data"]["previous_attributes"] = serde_json::json!({
        "status": "requires_input",
        "url": "https://verify.stripe.com/start/test_SHOULD_NOT_SHOW"
    });
    let event = parse_unverified(canceled.to_string().as_bytes()).unwrap();
    let shown = format!("{event:?}");
    assert!(!shown.contains("SHOULD_NOT_SHOW"), "{shown}");
    assert!(shown.contains("requires_input"), "{shown}");
    // And a verified body is shown by its length only.
    let body = testing::event_json(
        "evt_3",
        "payment_intent.succeeded",
        r#"{"id":"pi_4","client_secret":"pi_4_secret_SHOULD_NOT_SHOW"}"#,
    );
    let verifier =
        stripe_webhooks::Verifier::new(stripe_webhooks::SigningSecret::new("whsec_debug").unwrap());
    let header = testing::sign(body.as_bytes(), "whsec_debug", testing::now());
    let verified = verifier.verify(body.as_bytes(), &header).unwrap();
    let shown = format!("{verified:?}");
    assert!(!shown.contains("SHOULD_NOT_SHOW"), "{shown}");
    assert!(
        shown.contains(&format!("body_len: {}", body.len())),
        "{shown}"
    );
}

/// Every documented value of a hand-written object's top-level enum field has its own
/// variant (an undocumented one parses as `Unknown`, tested above): a handler that
/// matches on `DisputeStatus::NeedsResponse` must not miss a documented status because
/// it arrived as `Unknown`.
#[test]
fn hand_written_enums_know_every_documented_value() {
    let carriers: BTreeMap<String, String> = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/event-types.tsv"
    ))
    .unwrap()
    .lines()
    .skip(1)
    .filter_map(|l| {
        let c: Vec<&str> = l.split('\t').collect();
        Some((c.get(1)?.to_string(), c.first()?.to_string()))
    })
    .collect();
    let schemas = schemas();
    let mut missing = Vec::new();
    for object in HAND_WRITTEN {
        let Some(event_type) = carriers.get(*object) else {
            continue;
        };
        let rows = &schemas[*object];
        for r in rows
            .iter()
            .filter(|r| r.ty == "enum" && !r.field.contains(['.', '[']))
        {
            for value in &r.enum_values {
                let mut m = object_json(object, rows);
                m.insert(r.field.clone(), json!(value));
                let text = Value::Object(m).to_string();
                let event =
                    parse_unverified(testing::event_json("evt_1", event_type, &text).as_bytes())
                        .unwrap();
                assert!(!matches!(event, Event::Unparsed(_)), "{object}.{}", r.field);
                if format!("{event:?}").contains(&format!("Unknown({value:?})")) {
                    missing.push(format!("{object}.{} = {value}", r.field));
                }
            }
        }
    }
    assert!(missing.is_empty(), "values without a variant: {missing:#?}");
}
