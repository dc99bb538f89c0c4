//! Thin events: every documented type, the recorded payloads, the thin routers, the
//! processor's thin path (ping, livemode, one dedupe key with snapshot events, on every
//! store), and cloud envelopes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};

use stripe_webhooks::cloud::{self, CloudEvent};
use stripe_webhooks::testing::{self, ThinEventBuilder};
use stripe_webhooks::thin::ThinEventData;
use stripe_webhooks::{
    async_trait, dangerous, AccountFilter, Event, EventHandler, EventId, EventNotification,
    EventRouter, EventType, HandlerError, IdempotencyStore, MemoryStore, ParseError, Processor,
    SigningSecret, StoreAdmin, ThinEventHandler, ThinEventRouter, ThinEventType, Verifier,
};

const SNAPSHOT_SECRET: &str = "whsec_snapshot_destination";
const THIN_SECRET: &str = "whsec_thin_destination";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/thin/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

fn parse(body: &str) -> EventNotification {
    dangerous::parse_unverified_notification(body.as_bytes()).unwrap()
}

#[test]
fn all_326_thin_types_parse_to_their_own_type() {
    assert_eq!(ThinEventType::ALL.len(), 326);
    for t in ThinEventType::ALL {
        let mut b = ThinEventBuilder::new("evt_test_1", t.as_str());
        if let Some(related) = t.related_object_type() {
            b = b.related("obj_1", related, "/v1/x/obj_1");
        }
        let n = parse(&b.build());
        assert_eq!(&n.event_type, t, "{t}");
        assert!(!n.event_type.is_unknown(), "{t}");
        assert_eq!(ThinEventType::from_wire(t.as_str()), *t);
        assert_eq!(t.to_string().parse::<ThinEventType>().unwrap(), *t);
    }
    // v1 twins of snapshot types name them; thin-only and v2 types do not.
    assert_eq!(
        ThinEventType::V1CustomerSubscriptionUpdated.snapshot_type(),
        Some(EventType::CustomerSubscriptionUpdated)
    );
    assert_eq!(ThinEventType::V1PriceActivated.snapshot_type(), None);
    assert_eq!(
        ThinEventType::V2CoreEventDestinationPing.snapshot_type(),
        None
    );
    assert_eq!(
        ThinEventType::V1BillingAlertTriggered.related_object_type(),
        Some("billing.alert")
    );
    assert_eq!(
        ThinEventType::V1BalanceAvailable.related_object_type(),
        Some("balance")
    );
    assert!(ThinEventType::V1InvoiceUpcoming.has_data());
    assert!(!ThinEventType::V1CustomerCreated.has_data());
}

#[test]
fn an_unknown_thin_type_is_kept() {
    let n = parse(&ThinEventBuilder::new("evt_1", "v3.future.thing_happened").build());
    assert_eq!(
        n.event_type,
        ThinEventType::Unknown("v3.future.thing_happened".into())
    );
    assert_eq!(n.event_type.as_str(), "v3.future.thing_happened");
}

#[test]
fn ping_fixture_field_by_field() {
    let n = parse(&fixture("v2.core.event_destination.ping.json"));
    assert_eq!(n.event_type, ThinEventType::V2CoreEventDestinationPing);
    assert!(n.is_ping());
    assert!(n.data.is_none(), "`data: null` is no data");
    let rel = n.related_object.as_ref().unwrap();
    assert!(
        rel.object_type == "event_destination" || rel.object_type == "v2.core.event_destination"
    );
    assert!(rel.id.as_deref().unwrap().starts_with("ed_"));
    assert!(rel.url.contains("/v2/core/event_destinations/"));
    assert_eq!(n.snapshot_event, None);
    assert_eq!(n.dedupe_key(), &n.id);
    assert!(n.created_unix().is_some());
}

#[test]
fn meter_fixtures_field_by_field() {
    let n = parse(&fixture("v1.billing.meter.error_report_triggered.json"));
    assert_eq!(
        n.event_type,
        ThinEventType::V1BillingMeterErrorReportTriggered
    );
    let rel = n.related_object.as_ref().unwrap();
    assert_eq!(rel.object_type, "billing.meter");
    assert!(rel.url.starts_with("/v1/billing/meters/"));
    assert_eq!(n.account(), None);

    let c = parse(&fixture(
        "v1.billing.meter.error_report_triggered.connect.json",
    ));
    assert_eq!(c.id.as_str(), "evt_234");
    assert!(c.livemode);
    assert_eq!(c.context.as_deref(), Some("acct_123"));
    assert_eq!(c.account(), Some("acct_123"));
    assert_eq!(c.created, "2022-02-15T00:27:45.330Z");
    assert_eq!(c.created_unix(), Some(1_644_884_865));
    assert_eq!(c.related_object_id(), Some("mtr_123"));
    let reason = c.reason.as_ref().unwrap();
    assert_eq!(reason.reason_type, "request");
    let req = reason.request.as_ref().unwrap();
    assert_eq!(
        (req.id.as_deref(), req.idempotency_key.as_deref()),
        (Some("foo"), Some("bar"))
    );
}

#[test]
fn customer_fixtures_field_by_field() {
    let n = parse(&fixture("v1.customer.created.json"));
    assert_eq!(n.event_type, ThinEventType::V1CustomerCreated);
    assert_eq!(n.related_object_id(), Some("cus_Tq8ZkR2mWxY6vB"));
    assert_eq!(
        n.related_object.as_ref().unwrap().url,
        "/v1/customers/cus_Tq8ZkR2mWxY6vB"
    );
    assert_eq!(
        n.snapshot_event.as_ref().unwrap().as_str(),
        "evt_1Pgc76B7WZ01zgkWwyRHS12y"
    );
    assert_eq!(n.dedupe_key().as_str(), "evt_1Pgc76B7WZ01zgkWwyRHS12y");
    assert_eq!(n.snapshot_type(), Some(EventType::CustomerCreated));
    // A type with no snapshot twin is claimed under its own id even when it names the
    // snapshot event of the change that raised it (several such detail events of one
    // change each run). A type this release does not know keeps the twin's key when
    // the rest of its name is a snapshot type it knows (the rule of every known twin),
    // and its own otherwise: a new detail type of a known object (here
    // `…discount_changed`) names the snapshot event of its change too, and keyed on it
    // was a `duplicate` of that change's other deliveries, never run.
    for (ty, own) in [
        ("v1.invoice.line_item_added", true),
        ("v1.invoice.paid", false),
        ("v1.some_future.thing_happened", true),
        ("v1.customer.subscription.discount_changed", true),
        ("v1.reporting.report_run.succeeded", false),
    ] {
        let built = ThinEventBuilder::new("evt_detail", ty)
            .snapshot_event("evt_change")
            .build();
        let d = parse(&built);
        let want = if own { "evt_detail" } else { "evt_change" };
        assert_eq!(d.dedupe_key().as_str(), want, "{ty}");
    }
    assert_eq!(n.context, None);
    assert!(!n.livemode);
    assert_eq!(
        n.reason
            .as_ref()
            .unwrap()
            .request
            .as_ref()
            .unwrap()
            .id
            .as_deref(),
        Some("req_v24sUK2aV6o01RdVU")
    );

    let f = parse(&fixture("v1.customer.updated.fetched.json"));
    assert_eq!(f.event_type, ThinEventType::V1CustomerUpdated);
    assert!(f.account().is_some());
    let changes = f.changes.as_ref().unwrap();
    assert!(changes.before.as_ref().unwrap().is_object());
    assert!(changes.after.as_ref().unwrap().is_object());
    // Round trip through serde keeps everything.
    let back = parse(&serde_json::to_string(&f).unwrap());
    assert_eq!(back, f);
}

/// A fetched thin event's raw `data` and its `changes` may hold a client secret (a
/// 3-D Secure URL, a `client_secret`): its `Debug` output hides them, as an object's does.
#[test]
fn fetched_thin_events_hide_client_secrets_from_debug() {
    let body = r#"{"id":"evt_1","object":"v2.core.event","type":"v2.money_management.x",
      "created":"2026-10-30T00:00:00Z","livemode":false,
      "data":{"client_secret":"pi_1_secret_data","note":"visible"},
      "changes":{"before":{"client_secret":"pi_1_secret_before"},
        "after":{"next_action":{"url":"https://hooks.stripe.com/3d?payment_intent_client_secret=pi_1_secret_after"}}}}"#;
    let n = parse(body);
    assert!(
        matches!(n.data, Some(ThinEventData::Raw(_))),
        "{:?}",
        n.data
    );
    let shown = format!("{n:?}");
    for secret in [
        "pi_1_secret_data",
        "pi_1_secret_before",
        "pi_1_secret_after",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("visible"), "{shown}");
    // Only `Debug` hides them: the values are the event's.
    assert_eq!(
        n.changes.unwrap().before.unwrap()["client_secret"],
        "pi_1_secret_before"
    );
}

#[test]
fn fetched_data_is_typed_where_the_crate_knows_it() {
    let meter = r#"{"id":"evt_1","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered",
      "created":"2026-10-30T00:00:00Z","livemode":false,
      "data":{"developer_message_summary":"2 errors","validation_start":"2026-10-29T00:00:00Z",
        "validation_end":"2026-10-30T00:00:00Z","reason":{"error_count":2,"error_types":[
          {"code":"meter_event_no_customer_defined","error_count":2,"sample_errors":[
            {"error_message":"no customer","request":{"identifier":"req_1"}}]}]}}}"#;
    let n = parse(meter);
    let Some(ThinEventData::MeterErrorReport(r)) = &n.data else {
        panic!("{:?}", n.data)
    };
    assert_eq!(r.developer_message_summary.as_deref(), Some("2 errors"));
    let reason = r.reason.as_ref().unwrap();
    assert_eq!(reason.error_count, Some(2));
    assert_eq!(
        reason.error_types[0].code.as_deref(),
        Some("meter_event_no_customer_defined")
    );
    assert_eq!(
        reason.error_types[0].sample_errors[0]
            .request
            .as_ref()
            .unwrap()
            .identifier
            .as_deref(),
        Some("req_1")
    );

    let upcoming = r#"{"id":"evt_2","object":"v2.core.event","type":"v1.invoice.upcoming",
      "created":"2026-10-30T00:00:00Z","livemode":false,"data":{"customer":"cus_1","subscription":"sub_1"}}"#;
    let Some(ThinEventData::InvoiceUpcoming(u)) = parse(upcoming).data else {
        panic!()
    };
    assert_eq!(
        (u.customer.as_deref(), u.subscription.as_deref()),
        (Some("cus_1"), Some("sub_1"))
    );

    let link = r#"{"id":"evt_3","object":"v2.core.event","type":"v2.core.account_link.returned",
      "created":"2026-10-30T00:00:00Z","livemode":false,"data":{"account_id":"acct_1","configurations":["merchant"],"use_case":"account_onboarding"}}"#;
    let Some(ThinEventData::AccountLinkReturned(l)) = parse(link).data else {
        panic!()
    };
    assert_eq!(
        (l.account_id.as_deref(), l.use_case.as_deref()),
        (Some("acct_1"), Some("account_onboarding"))
    );
    assert_eq!(l.configurations, ["merchant"]);
    let cap = link
        .replace("v2.core.account_link.returned", "v2.core.account[configuration.merchant].capability_status_updated")
        .replace(r#""account_id":"acct_1","configurations":["merchant"],"use_case":"account_onboarding""#, r#""updated_capability":"cards""#);
    let Some(ThinEventData::CapabilityStatusUpdated(c)) = parse(&cap).data else {
        panic!()
    };
    assert_eq!(c.updated_capability.as_deref(), Some("cards"));
    let person = link.replace(
        "v2.core.account_link.returned",
        "v2.core.account_person.updated",
    );
    let Some(ThinEventData::AccountPerson(p)) = parse(&person).data else {
        panic!()
    };
    assert_eq!(p.account_id.as_deref(), Some("acct_1"));

    // A type whose data the reference does not describe, and a known type's data in a
    // shape this release does not know, are kept raw: never an error.
    let money = link.replace(
        "v2.core.account_link.returned",
        "v2.money_management.transaction.created",
    );
    let Some(ThinEventData::Raw(raw)) = parse(&money).data else {
        panic!()
    };
    assert!(raw.get().contains("account_onboarding"));
    let odd = upcoming.replace(r#""customer":"cus_1""#, r#""customer":{"nested":true}"#);
    assert!(matches!(parse(&odd).data, Some(ThinEventData::Raw(_))));
}

#[test]
fn bad_thin_bodies_are_clear_errors() {
    let snapshot = testing::event_for_type("evt_s", "customer.created").unwrap();
    assert_eq!(
        dangerous::parse_unverified_notification(snapshot.as_bytes()).unwrap_err(),
        ParseError::SnapshotEvent
    );
    for (body, want) in [
        (&b"{"[..], "InvalidJson"),
        (br#"{"object":"v2.core.event","id":"evt_1"}"#, "NotAnEvent"),
        (br#"{"object":"charge","id":"ch_1"}"#, "NotAnEvent"),
        (br#"[1,2]"#, "NotAnEvent"),
        // The members in order, as an array: a derived struct reads it.
        (
            br#"["evt_1","v2.core.event","v1.customer.created","2026-01-01T00:00:00Z",false]"#,
            "NotAnEvent",
        ),
    ] {
        let e = dangerous::parse_unverified_notification(body).unwrap_err();
        assert!(format!("{e:?}").starts_with(want), "{e:?}");
    }
    let body = ThinEventBuilder::new("evt_1", "v1.customer.created")
        .related("cus_1", "customer", "/v1/customers/cus_1")
        .build();
    assert!(parse(&body).livemode.eq(&false));
    // Stripe always sends `livemode`; read as `false`, a live event would be dropped by a
    // processor that takes live events only.
    let no_mode = body.replace(r#""livemode":false,"#, "");
    assert_ne!(no_mode, body);
    match dangerous::parse_unverified_notification(no_mode.as_bytes()) {
        Err(ParseError::NotAnEvent { message, .. }) => {
            assert!(message.contains("`livemode`"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Its parts are objects, not arrays of their members.
    let at = body.find(r#""related_object":{"#).unwrap() + r#""related_object":"#.len();
    let end = at + body[at..].find('}').unwrap() + 1;
    let array = format!(
        r#"{}["cus_1","customer","/v1/customers/cus_1"]{}"#,
        &body[..at],
        &body[end..]
    );
    match dangerous::parse_unverified_notification(array.as_bytes()) {
        Err(ParseError::NotAnEvent { message, .. }) => {
            assert!(message.contains("JSON object"), "{message}")
        }
        other => panic!("{array}: {other:?}"),
    }
    // An empty `snapshot_event` is no twin: claimed under the event's own id (an empty
    // key would make every such event after the first a duplicate).
    let empty_twin = ThinEventBuilder::new("evt_own", "v1.customer.updated")
        .snapshot_event("")
        .build();
    let n = parse(&empty_twin);
    assert_eq!(n.snapshot_event, None);
    assert_eq!(n.dedupe_key().as_str(), "evt_own");
    // The id keys the claim: an empty one is refused.
    let empty = ThinEventBuilder::new("", "v1.customer.created").build();
    match dangerous::parse_unverified_notification(empty.as_bytes()) {
        Err(ParseError::NotAnEvent { message, .. }) => assert!(message.contains("`id` is empty")),
        other => panic!("{other:?}"),
    }
    // `created` must be an RFC 3339 timestamp (with any fraction and offset): the
    // ordering guard and the reconciler's cursor read it.
    let body = ThinEventBuilder::new("evt_1", "v1.customer.created").build();
    for created in ["Z\"", "+01:00\""] {
        let n = parse(&body.replace("Z\"", created));
        assert!(n.created_unix().is_some(), "{created}");
    }
    let no_offset = body.replace("Z\"", "\"");
    let at = no_offset.find("\"created\":").unwrap() + "\"created\":".len();
    let no_offset = &no_offset[at..at + no_offset[at..].find(',').unwrap()];
    for created in [no_offset, "\"soon\"", "null", "1700000000"] {
        let at = body.find("\"created\":").unwrap() + "\"created\":".len();
        let end = at + body[at..].find(',').unwrap();
        let bad = format!("{}{created}{}", &body[..at], &body[end..]);
        match dangerous::parse_unverified_notification(bad.as_bytes()) {
            // Strings that are not timestamps say so; other JSON types are serde's
            // type errors.
            Err(ParseError::NotAnEvent { message, .. }) => {
                let named = message.contains("`created`") || message.contains("invalid type");
                assert!(named, "{created}: {message}");
            }
            other => panic!("{created}: {other:?}"),
        }
    }
}

// ---- Routers ----

fn ok_route<E>(
    hits: &Arc<Mutex<Vec<String>>>,
    name: &'static str,
) -> impl for<'a> Fn(
    &'a E,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send + 'a>,
> + Send
       + Sync
       + 'static
where
    E: Sync + 'static,
{
    let hits = Arc::clone(hits);
    move |_e| {
        hits.lock().unwrap().push(name.to_owned());
        Box::pin(async { Ok(()) })
    }
}

fn snapshot(ty: &str, account: Option<&str>) -> Event {
    let mut json: serde_json::Value =
        serde_json::from_str(&testing::event_for_type("evt_r", ty).unwrap()).unwrap();
    if let Some(a) = account {
        json["account"] = a.into();
    }
    dangerous::parse_unverified(json.to_string().as_bytes()).unwrap()
}

#[tokio::test]
async fn snapshot_router_exact_prefix_catch_all_and_connect() {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let router = EventRouter::new()
        .on(EventType::InvoicePaid, ok_route(&hits, "exact"))
        .on_prefix("invoice.*", ok_route(&hits, "invoice.*"))
        .on_prefix("customer.subscription", ok_route(&hits, "sub.*"))
        .on_prefix("customer.", ok_route(&hits, "customer.*"));
    for (ty, want) in [
        ("invoice.paid", Some("exact")),
        ("invoice.payment_failed", Some("invoice.*")),
        ("customer.subscription.deleted", Some("sub.*")),
        ("customer.created", Some("customer.*")),
        ("invoiceitem.created", None),
        ("charge.succeeded", None),
    ] {
        hits.lock().unwrap().clear();
        let event = snapshot(ty, None);
        assert_eq!(router.handles_event(&event), want.is_some(), "{ty}");
        router.handle(&event).await.unwrap();
        assert_eq!(
            hits.lock().unwrap().first().map(String::as_str),
            want,
            "{ty}"
        );
    }
    // A known type named as `Unknown` (code written before this release knew it) is
    // routed as the event parses: as its own variant.
    let named = EventRouter::new().on(
        EventType::Unknown("invoice.paid".into()),
        ok_route(&hits, "named"),
    );
    hits.lock().unwrap().clear();
    let paid = snapshot("invoice.paid", None);
    assert!(named.handles_event(&paid));
    named.handle(&paid).await.unwrap();
    assert_eq!(*hits.lock().unwrap(), ["named"]);
    assert_eq!(named.unknown_types(), Vec::<String>::new());
    let named_thin = ThinEventRouter::new().on(
        ThinEventType::Unknown("v1.customer.created".into()),
        ok_route(&hits, "named"),
    );
    let created = parse(&ThinEventBuilder::new("evt_1", "v1.customer.created").build());
    assert!(named_thin.handles_notification(&created));

    let manifest = router.enabled_events();
    assert!(manifest.contains(&"invoice.paid".to_owned()));
    assert!(manifest.contains(&"invoice.payment_failed".to_owned()));
    assert!(manifest.contains(&"customer.subscription.trial_will_end".to_owned()));
    assert!(!manifest.iter().any(|t| t.starts_with("invoiceitem.")));
    assert!(
        manifest.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );

    // Connect: the platform's events here, connected accounts' there.
    let split = EventRouter::new()
        .accounts(AccountFilter::Platform)
        .fallback(ok_route(&hits, "platform"))
        .or(EventRouter::new()
            .accounts(AccountFilter::only(["acct_1"]))
            .fallback(ok_route(&hits, "acct_1")));
    for (account, want) in [
        (None, Some("platform")),
        (Some("acct_1"), Some("acct_1")),
        (Some("acct_2"), None),
    ] {
        hits.lock().unwrap().clear();
        let event = snapshot("charge.succeeded", account);
        assert_eq!(split.handles_event(&event), want.is_some());
        split.handle(&event).await.unwrap();
        assert_eq!(
            hits.lock().unwrap().first().map(String::as_str),
            want,
            "{account:?}"
        );
    }
    assert_eq!(split.enabled_events(), ["*"]);
}

#[tokio::test]
async fn thin_router_exact_prefix_catch_all_and_connect() {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let router = ThinEventRouter::new()
        .on(ThinEventType::V1InvoicePaid, ok_route(&hits, "exact"))
        .on_prefix("v1.invoice.*", ok_route(&hits, "v1.invoice.*"))
        .accounts(AccountFilter::Connected);
    let note = |ty: &str, ctx: Option<&str>| {
        let mut b = ThinEventBuilder::new("evt_1", ty);
        if let Some(c) = ctx {
            b = b.context(c);
        }
        parse(&b.build())
    };
    for (ty, ctx, want) in [
        ("v1.invoice.paid", Some("acct_9"), Some("exact")),
        (
            "v1.invoice.line_item_added",
            Some("acct_9"),
            Some("v1.invoice.*"),
        ),
        ("v1.invoice.paid", None, None),
        ("v1.invoiceitem.created", Some("acct_9"), None),
    ] {
        hits.lock().unwrap().clear();
        let n = note(ty, ctx);
        assert_eq!(router.handles_notification(&n), want.is_some(), "{ty}");
        ThinEventHandler::handle(&router, &n).await.unwrap();
        assert_eq!(
            hits.lock().unwrap().first().map(String::as_str),
            want,
            "{ty} {ctx:?}"
        );
    }
    let manifest = router.enabled_events();
    assert!(manifest.contains(&"v1.invoice.paid".to_owned()));
    assert!(manifest.contains(&"v1.invoice.line_item_added".to_owned()));
    assert!(manifest.iter().all(|t| t.starts_with("v1.invoice.")));
    let all = ThinEventRouter::new().fallback(ok_route(&hits, "all"));
    assert_eq!(all.enabled_events(), ["*"]);
    // `"*"` as a prefix is the catch-all, not a prefix nothing matches.
    let star = ThinEventRouter::new().on_prefix("*", ok_route(&hits, "star"));
    assert_eq!(star.enabled_events(), ["*"]);
    assert!(star.handles_notification(&note("v2.core.account.created", None)));
    // A prefix takes the bracketed sub-events of its object too, and only whole
    // segments.
    let account = ThinEventRouter::new().on_prefix("v2.core.account", ok_route(&hits, "acct"));
    assert!(account.handles_notification(&note("v2.core.account.created", None)));
    assert!(account.handles_notification(&note("v2.core.account[requirements].updated", None)));
    assert!(!account.handles_notification(&note("v2.core.account_link.returned", None)));
    let manifest = account.enabled_events();
    assert!(manifest.contains(&"v2.core.account[requirements].updated".to_owned()));
    assert!(manifest.contains(&"v2.core.account.updated".to_owned()));
}

/// A name with a `*` given to `on` (as an endpoint's `enabled_events` holds: `"*"`,
/// `"invoice.*"`) routes as `on_prefix` does, and a whole type given to `on_prefix`
/// takes that type. Both took nothing, while the routers' `enabled_events` said `"*"`:
/// every event was delivered and answered 200 `ignored`, never sent again.
#[tokio::test]
async fn stars_given_to_on_and_whole_types_given_to_on_prefix_route() {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let star = EventRouter::new().on(EventType::from_wire("*"), ok_route(&hits, "star"));
    assert!(star.handles_event(&snapshot("invoice.paid", None)));
    assert_eq!(star.enabled_events(), ["*"]);
    let stem = EventRouter::new().on(EventType::from_wire("invoice.*"), ok_route(&hits, "stem"));
    assert!(stem.handles_event(&snapshot("invoice.paid", None)));
    assert!(!stem.handles_event(&snapshot("invoiceitem.created", None)));
    assert!(stem
        .enabled_events()
        .iter()
        .all(|t| t.starts_with("invoice.")));
    let whole = EventRouter::new().on_prefix("invoice.paid", ok_route(&hits, "whole"));
    assert!(whole.handles_event(&snapshot("invoice.paid", None)));
    assert!(!whole.handles_event(&snapshot("invoice.payment_failed", None)));
    assert_eq!(whole.enabled_events(), ["invoice.paid"]);
    whole.handle(&snapshot("invoice.paid", None)).await.unwrap();
    assert_eq!(*hits.lock().unwrap(), ["whole"]);
    let created = parse(&ThinEventBuilder::new("evt_1", "v1.invoice.created").build());
    let thin_star = ThinEventRouter::new().on(
        ThinEventType::from_wire("v1.invoice.*"),
        ok_route(&hits, "t"),
    );
    assert!(thin_star.handles_notification(&created));
    let thin_whole = ThinEventRouter::new().on_prefix("v1.invoice.created", ok_route(&hits, "t"));
    assert!(thin_whole.handles_notification(&created));
    assert_eq!(thin_whole.enabled_events(), ["v1.invoice.created"]);
}

/// A prefix with a `*` anywhere but as the whole pattern or after its last `.` is
/// refused when the router is built: it matched no type, so its events were answered
/// 200 `ignored` (never sent again) while its endpoint was set up for every type.
#[test]
fn a_prefix_that_would_take_no_type_is_refused_when_built() {
    let refused = |prefix: &'static str| {
        let snapshot = std::panic::catch_unwind(|| {
            EventRouter::new().on_prefix(prefix, |_e| Box::pin(async { Ok(()) }))
        });
        let thin = std::panic::catch_unwind(|| {
            ThinEventRouter::new().on_prefix(prefix, |_n| Box::pin(async { Ok(()) }))
        });
        snapshot.is_err() && thin.is_err()
    };
    for bad in [
        "invoice.payment_*",
        "*.created",
        "invoice*",
        "invoice.*.paid",
        "**",
    ] {
        assert!(refused(bad), "{bad}");
    }
    for good in [
        "*",
        "",
        "invoice.*",
        "invoice.",
        "invoice",
        "v2.core.account",
    ] {
        assert!(!refused(good), "{good}");
    }
}

/// A route of the other family is refused when the router is built: every thin type
/// starts with `v1.` or `v2.` and no snapshot type does, so `ThinEventRouter::on_prefix(
/// "customer.*")` never ran and widened `enabled_events` to `["*"]`, and
/// `EventRouter::on("v1.customer.created")` never ran either.
#[test]
fn a_route_of_the_other_family_is_refused_when_built() {
    let snapshot = |pattern: &'static str| {
        std::panic::catch_unwind(|| {
            EventRouter::new().on_prefix(pattern, |_e| Box::pin(async { Ok(()) }))
        })
        .is_err()
            || std::panic::catch_unwind(|| {
                EventRouter::new().on(EventType::from_wire(pattern), |_e| {
                    Box::pin(async { Ok(()) })
                })
            })
            .is_err()
    };
    let thin = |pattern: &'static str| {
        std::panic::catch_unwind(|| {
            ThinEventRouter::new().on_prefix(pattern, |_n| Box::pin(async { Ok(()) }))
        })
        .is_err()
            || std::panic::catch_unwind(|| {
                ThinEventRouter::new().on(ThinEventType::from_wire(pattern), |_n| {
                    Box::pin(async { Ok(()) })
                })
            })
            .is_err()
    };
    for thin_only in [
        "v1.customer.created",
        "v1.customer.*",
        "v2.*",
        "v1",
        "v2.core.",
    ] {
        assert!(snapshot(thin_only), "{thin_only} on an EventRouter");
        assert!(!thin(thin_only), "{thin_only} on a ThinEventRouter");
    }
    for snapshot_only in [
        "customer.created",
        "customer.*",
        "v1customer.created",
        "vx.y",
    ] {
        assert!(
            !snapshot(snapshot_only),
            "{snapshot_only} on an EventRouter"
        );
        assert!(thin(snapshot_only), "{snapshot_only} on a ThinEventRouter");
    }
    for both in ["*", ""] {
        assert!(!snapshot(both) && !thin(both), "{both:?}");
    }
}

// ---- The processor's thin path ----

/// Counts runs per dedupe key, for both families.
#[derive(Default)]
struct Counter {
    runs: Mutex<Vec<String>>,
    fail: bool,
}

#[stripe_webhooks::async_trait]
impl EventHandler for Counter {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.runs.lock().unwrap().push(event.id().to_string());
        Ok(())
    }
}

#[stripe_webhooks::async_trait]
impl ThinEventHandler for Counter {
    async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if self.fail {
            return Err(HandlerError::new("downstream down"));
        }
        self.runs.lock().unwrap().push(n.dedupe_key().to_string());
        Ok(())
    }
}

fn verifier(secret: &str) -> Verifier {
    Verifier::new(SigningSecret::new(secret).unwrap())
}

fn signed(body: &str, secret: &str) -> String {
    testing::sign(body.as_bytes(), secret, testing::now())
}

async fn deliver(p: &Processor, body: &str, secret: &str) -> stripe_webhooks::Outcome {
    p.process(Some(&signed(body, secret)), body.as_bytes())
        .await
}

/// A thin handler whose `handles_notification` check panics: a 500, the event recorded
/// as failed with the panic's message (each delivery an attempt), the panic kept inside
/// `process`.
#[tokio::test]
async fn a_panicking_thin_check_is_a_500_recorded_as_failed() {
    struct Picky;
    #[async_trait]
    impl ThinEventHandler for Picky {
        async fn handle(&self, _: &EventNotification) -> Result<(), HandlerError> {
            Ok(())
        }
        fn handles_notification(&self, n: &EventNotification) -> bool {
            assert!(n.id.as_str() != "evt_thin_picky", "no such price");
            true
        }
    }
    let store = Arc::new(MemoryStore::new());
    let p = Processor::thin(verifier(THIN_SECRET), Arc::clone(&store), Picky);
    let body = ThinEventBuilder::new("evt_thin_picky", "v1.price.activated")
        .related("price_1", "price", "/v1/prices/price_1")
        .build();
    for attempt in 1..=2 {
        let o = deliver(&p, &body, THIN_SECRET).await;
        common::assert_check_panic_recorded(
            &o,
            &*store,
            "evt_thin_picky",
            attempt,
            "no such price",
        )
        .await;
    }
}

#[tokio::test]
async fn thin_processor_runs_claims_and_answers_like_the_snapshot_one() {
    let counter = Arc::new(Counter::default());
    let store = Arc::new(MemoryStore::new());
    let p = Processor::thin(
        verifier(THIN_SECRET),
        Arc::clone(&store),
        Arc::clone(&counter),
    );
    let body = ThinEventBuilder::new("evt_thin_1", "v1.price.activated")
        .related("price_1", "price", "/v1/prices/price_1")
        .build();
    let o = deliver(&p, &body, THIN_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (200, "processed"));
    assert_eq!(o.thin_event_type(), Some(&ThinEventType::V1PriceActivated));
    assert_eq!(o.claim_key().unwrap().as_str(), "evt_thin_1");
    assert_eq!(o.event_type(), None);
    // Stripe's retry is a duplicate.
    assert_eq!(
        deliver(&p, &body, THIN_SECRET).await.kind().name(),
        "duplicate"
    );
    // Forged or signed with the snapshot destination's secret: 400, nothing run.
    assert_eq!(deliver(&p, &body, SNAPSHOT_SECRET).await.status(), 400);
    assert_eq!(counter.runs.lock().unwrap().len(), 1);
    // The record is in the store, under the thin type (it has no snapshot twin).
    let record = store
        .record(&EventId::new("evt_thin_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.event_type.as_str(), "v1.price.activated");

    // A ping is acknowledged without a handler; a snapshot event sent here is
    // acknowledged and dropped (it must not come back for three days).
    let ping = fixture("v2.core.event_destination.ping.json");
    let o = deliver(&p, &ping, THIN_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (200, "ping"));
    let snap = testing::event_for_type("evt_s1", "customer.created").unwrap();
    let o = deliver(&p, &snap, THIN_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (200, "ignored"));
    assert_eq!(counter.runs.lock().unwrap().len(), 1);
    // Not an event at all: 400.
    assert_eq!(
        deliver(&p, r#"{"object":"v2.core.event"}"#, THIN_SECRET)
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn a_failing_thin_handler_is_500_and_runs_again_on_retry() {
    let failing = Arc::new(Counter {
        fail: true,
        ..Counter::default()
    });
    let store = Arc::new(MemoryStore::new());
    let body = ThinEventBuilder::new("evt_thin_f", "v1.customer.deleted").build();
    let p = Processor::thin(verifier(THIN_SECRET), Arc::clone(&store), failing);
    let o = deliver(&p, &body, THIN_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (500, "handler_failed"));
    let fixed = Arc::new(Counter::default());
    let p = Processor::thin(
        verifier(THIN_SECRET),
        Arc::clone(&store),
        Arc::clone(&fixed),
    );
    let o = deliver(&p, &body, THIN_SECRET).await;
    assert_eq!((o.status(), o.attempt()), (200, Some(2)));
    assert_eq!(fixed.runs.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unrouted_thin_types_are_200_unclaimed() {
    let store = Arc::new(MemoryStore::new());
    let p = Processor::thin(
        verifier(THIN_SECRET),
        Arc::clone(&store),
        ThinEventRouter::new().on(ThinEventType::V1CustomerCreated, |_n| {
            Box::pin(async { Ok(()) })
        }),
    );
    let body = ThinEventBuilder::new("evt_u", "v1.product.created").build();
    let o = deliver(&p, &body, THIN_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (200, "ignored"));
    assert!(store
        .record(&EventId::new("evt_u"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn livemode_guard_on_both_families() {
    let counter = Arc::new(Counter::default());
    let live = Processor::new(
        verifier(SNAPSHOT_SECRET),
        MemoryStore::new(),
        Arc::clone(&counter),
    )
    .with_thin_handler(Arc::clone(&counter))
    .with_livemode(true);
    let test_snapshot = testing::event_for_type("evt_t", "customer.created").unwrap();
    let o = deliver(&live, &test_snapshot, SNAPSHOT_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (200, "other_mode"));
    let test_thin = ThinEventBuilder::new("evt_tt", "v1.customer.created").build();
    let o = deliver(&live, &test_thin, SNAPSHOT_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (200, "other_mode"));
    let live_thin = ThinEventBuilder::new("evt_lt", "v1.customer.created")
        .livemode(true)
        .build();
    assert_eq!(
        deliver(&live, &live_thin, SNAPSHOT_SECRET)
            .await
            .kind()
            .name(),
        "processed"
    );
    assert_eq!(counter.runs.lock().unwrap().as_slice(), ["evt_lt"]);

    let test_only = Processor::new(
        verifier(SNAPSHOT_SECRET),
        MemoryStore::new(),
        Arc::clone(&counter),
    )
    .with_livemode(false);
    assert_eq!(
        deliver(&test_only, &test_snapshot, SNAPSHOT_SECRET)
            .await
            .kind()
            .name(),
        "processed"
    );
}

#[tokio::test]
async fn a_snapshot_only_processor_acknowledges_thin_events() {
    let counter = Arc::new(Counter::default());
    let p = Processor::new(
        verifier(SNAPSHOT_SECRET),
        MemoryStore::new(),
        Arc::clone(&counter),
    );
    let thin = ThinEventBuilder::new("evt_x", "v1.customer.created").build();
    let o = deliver(&p, &thin, SNAPSHOT_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (200, "ignored"));
    assert!(counter.runs.lock().unwrap().is_empty());
    // Also one that the strict thin parse refuses (a `reason` without its `type`): it
    // would only have been acknowledged, so it is not a 400 Stripe retries for days.
    let mut v: serde_json::Value = serde_json::from_str(&thin).unwrap();
    v["reason"] = serde_json::json!({"request": {"id": "req_1"}});
    let odd = v.to_string();
    let o = deliver(&p, &odd, SNAPSHOT_SECRET).await;
    assert_eq!((o.status(), o.kind().name()), (200, "ignored"), "{o:?}");
    // With a thin handler, the same body is refused as it is.
    let with_thin = Processor::new(
        verifier(SNAPSHOT_SECRET),
        MemoryStore::new(),
        Arc::clone(&counter),
    )
    .with_thin_handler(Arc::clone(&counter));
    let o = deliver(&with_thin, &odd, SNAPSHOT_SECRET).await;
    assert_eq!(o.status(), 400, "{o:?}");
}

/// Delivers one change both ways at once, `rounds` times over, to two processors (one
/// per destination, each with its own secret) sharing `store`; returns the runs.
async fn twins_concurrently(
    store: Arc<dyn IdempotencyStore>,
    tag: &str,
    dedupe: bool,
) -> Vec<String> {
    let counter = Arc::new(Counter::default());
    let snapshot_p = Arc::new(Processor::new(
        verifier(SNAPSHOT_SECRET),
        Arc::clone(&store),
        Arc::clone(&counter),
    ));
    let thin_p = Arc::new(
        Processor::thin(
            verifier(THIN_SECRET),
            Arc::clone(&store),
            Arc::clone(&counter),
        )
        .with_snapshot_dedupe(dedupe),
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (snap, thin) = testing::event_pair(
            &format!("evt_{tag}_{i}"),
            "invoice.paid",
            &format!("in_{i}"),
        );
        for _ in 0..3 {
            let (sp, tp) = (Arc::clone(&snapshot_p), Arc::clone(&thin_p));
            let (s, t) = (snap.clone(), thin.clone());
            tasks.push(tokio::spawn(async move {
                let a = deliver(&sp, &s, SNAPSHOT_SECRET);
                let b = deliver(&tp, &t, THIN_SECRET);
                let (a, b) = tokio::join!(a, b);
                assert!(matches!(a.status(), 200 | 409), "{a:?}");
                assert!(matches!(b.status(), 200 | 409), "{b:?}");
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut runs = counter.runs.lock().unwrap().clone();
    runs.sort();
    runs
}

async fn assert_twins_run_once(store: Arc<dyn IdempotencyStore>, tag: &str) {
    let runs = twins_concurrently(store, tag, true).await;
    let unique: std::collections::BTreeSet<_> = runs.iter().collect();
    assert_eq!(runs.len(), 20, "one run per change: {runs:?}");
    assert_eq!(unique.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twins_run_once_on_memory() {
    assert_twins_run_once(Arc::new(MemoryStore::new()), &common::unique("mem")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_snapshot_dedupe_twins_run_twice() {
    let runs = twins_concurrently(Arc::new(MemoryStore::new()), "nodedupe", false).await;
    assert_eq!(runs.len(), 40);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twins_run_once_on_sqlite() {
    let dir = common::TempDir::new("thin_twins");
    let store = stripe_webhooks::SqliteStore::connect(dir.join("events.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert_twins_run_once(Arc::new(store), "sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twins_run_once_on_postgres() {
    let url = std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
        panic!("DATABASE_URL_TEST is not set: run `eval \"$(scripts/services.sh start)\"` or `scripts/test.sh`")
    });
    let table = common::unique("thin_twins");
    let store = stripe_webhooks::PostgresStore::connect(&url)
        .await
        .unwrap()
        .with_table(&table)
        .unwrap();
    store.migrate().await.unwrap();
    assert_twins_run_once(Arc::new(store), &table).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twins_run_once_on_redis() {
    let url = std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| {
        panic!("REDIS_URL_TEST is not set: run `eval \"$(scripts/services.sh start)\"` or `scripts/test.sh`")
    });
    let client = stripe_webhooks::redis::Client::open(url).unwrap();
    let conn = stripe_webhooks::redis::aio::ConnectionManager::new(client)
        .await
        .unwrap();
    let prefix = common::unique("thin_twins");
    let store = stripe_webhooks::RedisStore::new(conn)
        .with_prefix(&prefix)
        .unwrap();
    assert_twins_run_once(Arc::new(store), &prefix).await;
}

#[tokio::test]
async fn the_twin_record_carries_the_snapshot_type() {
    let store = Arc::new(MemoryStore::new());
    let counter = Arc::new(Counter::default());
    let thin_p = Processor::thin(
        verifier(THIN_SECRET),
        Arc::clone(&store),
        Arc::clone(&counter),
    );
    let (_, thin) = testing::event_pair("evt_rec", "customer.updated", "cus_1");
    assert_eq!(
        deliver(&thin_p, &thin, THIN_SECRET).await.kind().name(),
        "processed"
    );
    let record = store
        .record(&EventId::new("evt_rec"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.event_type, EventType::CustomerUpdated);
}

// ---- Cloud destinations ----

fn eventbridge(detail: &str) -> String {
    format!(
        r#"{{"version":"0","id":"6a7e8feb","detail-type":"x","source":"aws.partner/stripe.com/ed_1","account":"123456789012","time":"2026-10-30T14:03:27Z","region":"us-west-2","resources":[],"detail":{detail}}}"#
    )
}

fn event_grid(data: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","type":"x","source":"stripe","id":"eg_1","time":"2026-10-30T14:03:27Z","datacontenttype":"application/json","data":{data}}}"#
    )
}

#[tokio::test]
async fn cloud_envelopes_run_through_the_same_claims() {
    let (snap, thin) = testing::event_pair("evt_cloud", "invoice.paid", "in_1");
    let CloudEvent::Snapshot(e) = cloud::parse_eventbridge(eventbridge(&snap).as_bytes()).unwrap()
    else {
        panic!()
    };
    assert!(matches!(e, Event::InvoicePaid(_)));
    let CloudEvent::Thin(n) = cloud::parse_eventbridge(eventbridge(&thin).as_bytes()).unwrap()
    else {
        panic!()
    };
    assert_eq!(n.event_type, ThinEventType::V1InvoicePaid);

    let one = cloud::parse_event_grid(event_grid(&snap).as_bytes()).unwrap();
    assert_eq!(one.len(), 1);
    let batch = format!("[{},{}]", event_grid(&snap), event_grid(&thin));
    let both: Vec<CloudEvent> = cloud::parse_event_grid(batch.as_bytes())
        .unwrap()
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(matches!(
        &both[..],
        [CloudEvent::Snapshot(_), CloudEvent::Thin(_)]
    ));
    // One event of a batch that is not a Stripe event, or has no `data` at all
    // (CloudEvents allows `data_base64`, or none), is its own error: the others are
    // still there to run.
    let mixed = format!(
        r#"[{},{{"data":{{"object":"charge"}}}},{{"id":"x","data_base64":"e30="}},{}]"#,
        event_grid(&snap),
        event_grid(&thin)
    );
    let items = cloud::parse_event_grid(mixed.as_bytes()).unwrap();
    assert!(
        matches!(
            &items[..],
            [
                Ok(CloudEvent::Snapshot(_)),
                Err(ParseError::NotAnEvent { .. }),
                Err(ParseError::NotAnEvent { .. }),
                Ok(CloudEvent::Thin(_))
            ]
        ),
        "{items:?}"
    );

    // The cloud delivery and a signed delivery of the same change run once.
    let counter = Arc::new(Counter::default());
    let p = Processor::new(
        verifier(SNAPSHOT_SECRET),
        MemoryStore::new(),
        Arc::clone(&counter),
    )
    .with_thin_handler(Arc::clone(&counter));
    let outcomes: Vec<&'static str> = {
        let mut v = Vec::new();
        for e in &both {
            v.push(p.process_unsigned(e).await.kind().name());
        }
        v
    };
    assert_eq!(outcomes, ["processed", "duplicate"]);
    assert_eq!(
        deliver(&p, &snap, SNAPSHOT_SECRET).await.kind().name(),
        "duplicate"
    );
    assert_eq!(counter.runs.lock().unwrap().len(), 1);

    // An ack-fast processor queues cloud deliveries as it queues signed ones, under the
    // same dedupe key, and the queued body parses back.
    let queue = stripe_webhooks::queue::MemoryQueue::new();
    let q = Processor::queued(verifier(SNAPSHOT_SECRET), queue.clone());
    let mut outcomes = Vec::new();
    for e in &both {
        outcomes.push(q.process_unsigned(e).await.kind().name());
    }
    assert_eq!(outcomes, ["queued", "duplicate"]);
    assert_eq!(
        deliver(&q, &snap, SNAPSHOT_SECRET).await.kind().name(),
        "duplicate"
    );
    let jobs =
        stripe_webhooks::queue::Queue::take(&queue, 10, std::time::Duration::from_secs(60), false)
            .await
            .unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(matches!(
        stripe_webhooks::dangerous::parse_unverified(&jobs[0].body).unwrap(),
        Event::InvoicePaid(_)
    ));

    // Bad envelopes are errors, never panics.
    for bad in [
        "{}",
        "[]x",
        r#"{"detail":{"object":"charge"}}"#,
        r#"{"data":1}"#,
        "null",
    ] {
        assert!(cloud::parse_eventbridge(bad.as_bytes()).is_err(), "{bad}");
        let grid = cloud::parse_event_grid(bad.as_bytes());
        assert!(
            grid.is_err() || grid.is_ok_and(|items| items.iter().all(Result::is_err)),
            "{bad}"
        );
    }
    assert!(cloud::parse_event_grid(b"[]").unwrap().is_empty());
}

/// Inbox mode handles snapshot events in the claim's transaction; a thin handler beside
/// it runs the standard way on the same table, so the twins still run once.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twins_run_once_beside_the_sqlite_inbox() {
    use stripe_webhooks::sqlx::{self, Sqlite, SqliteConnection};
    use stripe_webhooks::TransactionalHandler;

    struct Effects;
    #[stripe_webhooks::async_trait]
    impl TransactionalHandler<Sqlite> for Effects {
        async fn handle(
            &self,
            event: &Event,
            conn: &mut SqliteConnection,
        ) -> Result<(), HandlerError> {
            sqlx::query("INSERT INTO effects (key) VALUES (?1)")
                .bind(event.id().as_str())
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(HandlerError::new)
        }
    }

    let dir = common::TempDir::new("thin_inbox");
    let store = stripe_webhooks::SqliteStore::connect(dir.join("events.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    sqlx::query("CREATE TABLE effects (key TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let pool = store.pool().clone();
    let thin_pool = pool.clone();
    let both = Arc::new(
        Processor::with_inbox(
            Verifier::new(SigningSecret::new(SNAPSHOT_SECRET).unwrap())
                .with_secret(SigningSecret::new(THIN_SECRET).unwrap()),
            store.inbox(Effects),
        )
        .with_thin_handler(ThinEventRouter::new().fallback(move |n| {
            let pool = thin_pool.clone();
            let key = n.dedupe_key().to_string();
            Box::pin(async move {
                sqlx::query("INSERT INTO effects (key) VALUES (?1)")
                    .bind(key)
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(HandlerError::new)
            })
        })),
    );
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (snap, thin) =
            testing::event_pair(&format!("evt_inbox_{i}"), "customer.created", "cus_1");
        for (body, secret) in [(snap, SNAPSHOT_SECRET), (thin, THIN_SECRET)] {
            let p = Arc::clone(&both);
            tasks.push(tokio::spawn(async move {
                // 409 and 503 are Stripe-retried answers: deliver until settled.
                for _ in 0..50 {
                    let o = deliver(&p, &body, secret).await;
                    if o.status() == 200 {
                        return o.kind().name();
                    }
                    assert!(matches!(o.status(), 409 | 503), "{o:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                panic!("never settled");
            }));
        }
    }
    let mut names = Vec::new();
    for t in tasks {
        names.push(t.await.unwrap());
    }
    assert_eq!(
        names.iter().filter(|n| **n == "processed").count(),
        10,
        "{names:?}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    let keys: i64 = sqlx::query_scalar("SELECT count(DISTINCT key) FROM effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((rows, keys), (10, 10));
}

/// A thin event in its fetched form can carry a `data` that is not a snapshot's (no
/// `data.object`): it is still recognised as thin wherever both families are taken
/// (it failed as "not an event" before).
#[tokio::test]
async fn a_thin_event_with_its_own_data_is_taken_as_thin() {
    let mut v: serde_json::Value =
        serde_json::from_str(&fixture("v1.billing.meter.error_report_triggered.json")).unwrap();
    v["data"] = serde_json::json!({ "developer_message_summary": "meter not found" });
    let body = v.to_string();
    assert!(matches!(
        dangerous::parse_unverified(body.as_bytes()),
        Err(ParseError::ThinEventNotification)
    ));
    let CloudEvent::Thin(n) = cloud::parse_eventbridge(eventbridge(&body).as_bytes()).unwrap()
    else {
        panic!("not thin")
    };
    assert_eq!(
        n.event_type.as_str(),
        "v1.billing.meter.error_report_triggered"
    );
    let job = stripe_webhooks::queue::NewJob::parse(body.as_bytes()).unwrap();
    assert_eq!(job.kind, stripe_webhooks::queue::PayloadKind::Thin);
    // A route with both handlers runs it as thin.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let p = Processor::new(
        Verifier::new(SigningSecret::new("whsec_both").unwrap()),
        MemoryStore::new(),
        EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })),
    )
    .with_thin_handler(ThinEventRouter::new().fallback(move |n| {
        s.lock().unwrap().push(n.id.clone());
        Box::pin(async { Ok(()) })
    }));
    let header = testing::sign(body.as_bytes(), "whsec_both", testing::now());
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert_eq!(o.kind().name(), "processed", "{o:?}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Bodies that are not events at all, or not JSON, are still refused as such.
    for bad in [
        r#"{"object":"event","data":{}}"#,
        r#"{"object":"v2.core.event""#,
    ] {
        let e = dangerous::parse_unverified(bad.as_bytes()).unwrap_err();
        assert!(
            !matches!(e, ParseError::ThinEventNotification),
            "{bad}: {e:?}"
        );
    }
}
