//! The Stripe API client (`client::HttpClient`) against the fake Stripe API
//! (`testing::FakeStripe`): headers, pagination, retrieval, retries and their limits,
//! the concurrency cap, redaction, and fetching before acting.
#![cfg(all(feature = "client", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use stripe_webhooks::client::{
    ClientError, FetchLatest, FetchLatestError, FetchedObject, HttpClient, ListEventsParams,
    ListV2EventsParams, PageToken, RequestContext, StripeClient, WhenGone, API_VERSION,
};
use stripe_webhooks::objects::SubscriptionStatus;
use stripe_webhooks::testing::{self, FakeStripe, Fault, ThinEventBuilder, FAKE_API_KEY};
use stripe_webhooks::{
    async_trait, dangerous, Event, EventHandler, EventType, HandlerError, MemoryStore, ParseError,
    Processor, SigningSecret, Verifier,
};

const BASE: i64 = 1_790_000_000;

/// A snapshot event of `event_type` around its fixture, created at `created`.
fn event_at(id: &str, event_type: &str, created: i64) -> String {
    let mut v: Value =
        serde_json::from_str(&testing::event_for_type(id, event_type).unwrap()).unwrap();
    v["created"] = created.into();
    v.to_string()
}

fn subscription(id: &str, status: &str) -> String {
    let mut v: Value = serde_json::from_str(testing::fixture("subscription").unwrap()).unwrap();
    v["id"] = id.into();
    v["status"] = status.into();
    v.to_string()
}

fn subscription_event(event_id: &str, sub_id: &str, account: Option<&str>) -> String {
    let mut v: Value = serde_json::from_str(&testing::event_json(
        event_id,
        "customer.subscription.updated",
        &subscription(sub_id, "active"),
    ))
    .unwrap();
    if let Some(a) = account {
        v["account"] = a.into();
    }
    v.to_string()
}

async fn fake() -> (FakeStripe, HttpClient) {
    let fake = FakeStripe::start().await.unwrap();
    let client = fake.client().unwrap();
    (fake, client)
}

/// [`fake`], serving the customer `cus_1` from `/v1/customers/cus_1`.
async fn fake_with_customer() -> (FakeStripe, HttpClient) {
    let (fake, client) = fake().await;
    fake.add_object(
        "/v1/customers/cus_1",
        r#"{"id":"cus_1","object":"customer"}"#,
    )
    .unwrap();
    (fake, client)
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id().to_string()).collect()
}

/// A snapshot event that names its account only in `context` (from an organization or
/// Accounts v2 destination) fetches its object with `Stripe-Context`, not from the
/// platform.
#[tokio::test]
async fn a_snapshot_event_with_only_a_context_fetches_with_it() {
    let (fake, client) = fake().await;
    let mut v: Value =
        serde_json::from_str(&subscription_event("evt_ctx", "sub_ctx", None)).unwrap();
    v["context"] = "acct_9".into();
    let event = dangerous::parse_unverified(v.to_string().as_bytes()).unwrap();
    assert_eq!(event.account(), Some("acct_9"));
    assert_eq!(event.context(), Some("acct_9"));
    let ctx = RequestContext::for_event(&event);
    assert_eq!(
        (ctx.stripe_account(), ctx.stripe_context()),
        (None, Some("acct_9"))
    );
    fake.add_object_for(
        "acct_9",
        "/v1/subscriptions/sub_ctx",
        &subscription("sub_ctx", "active"),
    )
    .unwrap();
    event.fetch_latest_object(&client).await.unwrap();
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.path, "/v1/subscriptions/sub_ctx");
    assert_eq!(r.header("stripe-context"), Some("acct_9"));
    assert_eq!(r.header("stripe-account"), None);
}

/// `Stripe-Account` and `Stripe-Context` never go out together (Stripe takes one or the
/// other; its SDKs refuse both): the one set last wins.
#[tokio::test]
async fn a_request_sends_one_of_stripe_account_and_stripe_context() {
    let (fake, client) = fake().await;
    fake.add_object_for(
        "acct_2",
        "/v1/subscriptions/sub_one",
        &subscription("sub_one", "active"),
    )
    .unwrap();
    for ctx in [
        RequestContext::platform()
            .with_stripe_context("acct_1")
            .with_stripe_account("acct_2"),
        RequestContext::platform()
            .with_stripe_account("acct_1")
            .with_stripe_context("acct_2"),
    ] {
        client
            .retrieve_object(&ctx, "/v1/subscriptions/sub_one")
            .await
            .unwrap();
        let r = fake.requests().pop().unwrap();
        let sent = [r.header("stripe-account"), r.header("stripe-context")];
        assert_eq!(sent.iter().flatten().count(), 1, "{sent:?}");
        assert!(sent.contains(&Some("acct_2")), "{sent:?}");
    }
}

#[tokio::test]
async fn snapshot_fetches_send_bearer_version_and_account() {
    let (fake, client) = fake().await;
    let body = subscription_event("evt_1", "sub_1", Some("acct_9"));
    fake.add_event(&body).unwrap();
    fake.add_object_for(
        "acct_9",
        "/v1/subscriptions/sub_1",
        &subscription("sub_1", "active"),
    )
    .unwrap();
    let event = dangerous::parse_unverified(body.as_bytes()).unwrap();

    // The event is the connected account's: the platform cannot see it, as on Stripe.
    let platform = client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap_err();
    assert!(platform.is_not_found(), "{platform:?}");
    let fetched = client
        .retrieve_event(&RequestContext::for_event(&event), "evt_1")
        .await
        .unwrap();
    assert!(matches!(fetched, Event::CustomerSubscriptionUpdated(_)));
    event.fetch_latest_object(&client).await.unwrap();

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.method, "GET");
        let bearer = format!("Bearer {FAKE_API_KEY}");
        assert_eq!(r.header("authorization"), Some(bearer.as_str()));
        assert_eq!(r.header("stripe-version"), Some(API_VERSION));
        assert_eq!(r.header("stripe-context"), None);
        assert_eq!(r.header("stripe-request-trigger"), None);
    }
    assert_eq!(requests[0].path, "/v1/events/evt_1");
    assert_eq!(requests[0].header("stripe-account"), None);
    assert_eq!(requests[1].path, "/v1/events/evt_1");
    assert_eq!(requests[1].header("stripe-account"), Some("acct_9"));
    assert_eq!(requests[2].path, "/v1/subscriptions/sub_1");
    assert_eq!(requests[2].header("stripe-account"), Some("acct_9"));

    // Nor can the platform see the account's object (nor another account).
    for ctx in [
        RequestContext::platform(),
        RequestContext::platform().with_stripe_account("acct_other"),
    ] {
        let err = client
            .retrieve_object(&ctx, "/v1/subscriptions/sub_1")
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{ctx:?}: {err:?}");
    }
}

#[tokio::test]
async fn thin_fetches_send_context_and_request_trigger() {
    let (fake, client) = fake().await;
    let body = ThinEventBuilder::new("evt_thin_1", "v1.customer.updated")
        .related("cus_1", "customer", "/v1/customers/cus_1")
        .context("acct_7")
        .build();
    fake.add_v2_event(&body).unwrap();
    fake.add_object_for(
        "acct_7",
        "/v1/customers/cus_1",
        r#"{"id":"cus_1","object":"customer"}"#,
    )
    .unwrap();
    let n = dangerous::parse_unverified_notification(body.as_bytes()).unwrap();

    n.fetch_related_object(&client).await.unwrap();
    let again = n.fetch_event(&client).await.unwrap();
    assert_eq!(again.id, n.id);

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v1/customers/cus_1");
    assert_eq!(requests[1].path, "/v2/core/events/evt_thin_1");
    for r in &requests {
        assert_eq!(r.header("stripe-context"), Some("acct_7"));
        assert_eq!(r.header("stripe-request-trigger"), Some("event=evt_thin_1"));
        assert_eq!(r.header("stripe-account"), None);
        assert_eq!(r.header("stripe-version"), Some(API_VERSION));
    }
}

#[tokio::test]
async fn list_events_pages_newest_first_with_filters() {
    let (fake, client) = fake().await;
    let types = ["customer.created", "invoice.paid", "invoice.payment_failed"];
    for i in 0..12i64 {
        let id = format!("evt_{i:02}");
        let body = event_at(&id, types[(i % 3) as usize], BASE + i);
        fake.add_event_with_delivery(&body, i != 5).unwrap();
    }
    let params = ListEventsParams::new()
        .with_types(["invoice.paid", "invoice.payment_failed"])
        .with_created_gte(BASE + 1)
        .with_created_lt(BASE + 11)
        .with_delivery_success(true)
        .with_limit(2);
    let ctx = RequestContext::platform();

    let mut pages = Vec::new();
    let mut next = Some(params.clone());
    while let Some(p) = next {
        let page = client.list_events(&ctx, &p).await.unwrap();
        next = page.next_params(&p);
        pages.push(page);
        assert!(pages.len() <= 3, "more pages than there are events");
    }
    let got: Vec<Vec<String>> = pages.iter().map(|p| ids(&p.data)).collect();
    assert_eq!(
        got,
        [
            ["evt_10", "evt_08"],
            ["evt_07", "evt_04"],
            ["evt_02", "evt_01"]
        ]
    );
    assert!(pages[0].has_more && pages[1].has_more && !pages[2].has_more);

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let first = &requests[0];
    assert_eq!(
        first.query_values("types[]"),
        ["invoice.paid", "invoice.payment_failed"]
    );
    assert_eq!(first.query_value("created[gte]"), Some("1790000001"));
    assert_eq!(first.query_value("created[lt]"), Some("1790000011"));
    assert_eq!(first.query_value("delivery_success"), Some("true"));
    assert_eq!(first.query_value("limit"), Some("2"));
    assert_eq!(first.query_value("starting_after"), None);
    assert_eq!(requests[1].query_value("starting_after"), Some("evt_08"));
    assert_eq!(requests[2].query_value("starting_after"), Some("evt_04"));

    // Back from the last page with ending_before.
    let back = client
        .list_events(&ctx, &params.clone().with_ending_before("evt_02"))
        .await
        .unwrap();
    assert_eq!(ids(&back.data), ["evt_07", "evt_04"]);
    // And on towards newer events: the next page ends before this page's newest.
    let back_params = params.clone().with_ending_before("evt_02");
    let next = back.next_params(&back_params).expect("newer events follow");
    assert_eq!(
        (
            next.ending_before.as_ref().map(|e| e.as_str()),
            next.starting_after.as_ref()
        ),
        (Some("evt_07"), None)
    );
    let newest = client.list_events(&ctx, &next).await.unwrap();
    assert_eq!(ids(&newest.data), ["evt_10", "evt_08"]);
    assert!(newest.next_params(&next).is_none());
    // Only the undelivered one.
    let failed = client
        .list_events(&ctx, &ListEventsParams::new().with_delivery_success(false))
        .await
        .unwrap();
    assert_eq!(ids(&failed.data), ["evt_05"]);
}

#[tokio::test]
async fn list_events_rejects_a_limit_over_100_like_stripe() {
    let (fake, client) = fake().await;
    let mut params = ListEventsParams::new();
    params.limit = Some(101); // the builder clamps; the field does not
    let query = params.to_query();
    assert!(query.contains(&("limit".to_owned(), "100".to_owned())));
    let err = client
        .get(
            &RequestContext::platform(),
            "/v1/events",
            &[("limit".to_owned(), "101".to_owned())],
        )
        .await
        .unwrap_err();
    let api = err.api_error().unwrap();
    assert_eq!(
        (api.status, api.code.as_deref()),
        (400, Some("parameter_invalid"))
    );
    assert_eq!(fake.requests().len(), 1, "a 400 is not retried");
    // Not an integer at all: Stripe's own code for it.
    let err = client
        .get(
            &RequestContext::platform(),
            "/v1/events",
            &[("limit".to_owned(), "ten".to_owned())],
        )
        .await
        .unwrap_err();
    let api = err.api_error().unwrap();
    assert_eq!(
        (api.status, api.code.as_deref(), api.param.as_deref()),
        (400, Some("parameter_invalid_integer"), Some("limit"))
    );
}

/// The fake lists as Stripe does: a connected account's events only with its header, at
/// most 20 `types[]`, `type` or `types` but not both, `type` with a wildcard, and a v2
/// `next_page_url` that keeps the filters, so following it alone gives the next page.
#[tokio::test]
async fn the_fake_lists_as_stripe_does() {
    let (fake, client) = fake().await;
    let platform = RequestContext::platform();
    fake.add_event(&event_at("evt_own", "invoice.paid", BASE))
        .unwrap();
    fake.add_event(&subscription_event("evt_theirs", "sub_1", Some("acct_9")))
        .unwrap();
    fake.add_event(&event_at("evt_created", "customer.created", BASE + 1))
        .unwrap();
    let ids = |params: &ListEventsParams, ctx: RequestContext| {
        let client = client.clone();
        let params = params.clone();
        async move {
            let page = client.list_events(&ctx, &params).await.unwrap();
            page.data
                .iter()
                .map(|e| e.id().to_string())
                .collect::<Vec<_>>()
        }
    };
    let all = ListEventsParams::new();
    assert_eq!(
        ids(&all, platform.clone()).await,
        ["evt_created", "evt_own"]
    );
    let theirs = platform.clone().with_stripe_account("acct_9");
    assert_eq!(ids(&all, theirs).await, ["evt_theirs"]);

    let get = |query: Vec<(&str, &str)>| {
        let client = client.clone();
        let query: Vec<(String, String)> = query
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        async move {
            client
                .get(&RequestContext::platform(), "/v1/events", &query)
                .await
        }
    };
    let body = get(vec![("type", "invoice.*")]).await.unwrap();
    assert!(
        body.contains("evt_own") && !body.contains("evt_created"),
        "{body}"
    );
    let both = get(vec![
        ("type", "invoice.paid"),
        ("types[]", "customer.created"),
    ])
    .await;
    assert!(
        matches!(&both, Err(ClientError::Api(e)) if e.status == 400),
        "{both:?}"
    );
    let names: Vec<String> = (0..21).map(|i| format!("invoice.t{i}")).collect();
    let many = get(names.iter().map(|n| ("types[]", n.as_str())).collect()).await;
    assert!(
        matches!(&many, Err(ClientError::Api(e)) if e.status == 400),
        "{many:?}"
    );

    // v2: the next page's URL alone keeps the filter.
    for i in 0..5i64 {
        let object = if i % 2 == 0 { "cus_a" } else { "cus_b" };
        let body = ThinEventBuilder::new(&format!("evt_url_{i}"), "v1.customer.updated")
            .related(object, "customer", &format!("/v1/customers/{object}"))
            .created(BASE + i)
            .build();
        fake.add_v2_event(&body).unwrap();
    }
    let query = vec![
        ("object_id".to_owned(), "cus_a".to_owned()),
        ("limit".to_owned(), "2".to_owned()),
    ];
    let first: Value = serde_json::from_str(
        &client
            .get(&platform, "/v2/core/events", &query)
            .await
            .unwrap(),
    )
    .unwrap();
    let next = first["next_page_url"].as_str().unwrap().to_owned();
    let (path, raw) = next.split_once('?').unwrap();
    let query: Vec<(String, String)> = raw
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let second: Value =
        serde_json::from_str(&client.get(&platform, path, &query).await.unwrap()).unwrap();
    let objects: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|n| n["related_object"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(objects, ["cus_a", "cus_a", "cus_a"], "{next}");
}

#[tokio::test]
async fn list_v2_events_follows_page_tokens() {
    let (fake, client) = fake().await;
    for i in 0..5i64 {
        let object = if i % 2 == 0 { "cus_a" } else { "cus_b" };
        let body = ThinEventBuilder::new(&format!("evt_v2_{i}"), "v1.customer.updated")
            .related(object, "customer", &format!("/v1/customers/{object}"))
            .created(BASE + i)
            .build();
        fake.add_v2_event(&body).unwrap();
    }
    let ctx = RequestContext::platform();
    let params = ListV2EventsParams::new().with_limit(2);
    let mut seen = Vec::new();
    let mut page = client.list_v2_events(&ctx, &params, None).await.unwrap();
    assert!(page.previous_page.is_none());
    loop {
        seen.push(
            page.data
                .iter()
                .map(|n| n.id.to_string())
                .collect::<Vec<_>>(),
        );
        let Some(token) = page.next_page.clone() else {
            break;
        };
        page = client
            .list_v2_events(&ctx, &params, Some(&token))
            .await
            .unwrap();
        assert!(page.previous_page.is_some());
        assert!(seen.len() < 3, "more pages than there are events");
    }
    assert_eq!(
        seen,
        [
            vec!["evt_v2_4", "evt_v2_3"],
            vec!["evt_v2_2", "evt_v2_1"],
            vec!["evt_v2_0"]
        ]
    );

    // A token is a cursor: an event that arrives between two pages does not shift the
    // next page (its last event is not listed again), and the previous page of the
    // second is the first.
    let first = client.list_v2_events(&ctx, &params, None).await.unwrap();
    let newer = ThinEventBuilder::new("evt_v2_new", "v1.customer.updated")
        .related("cus_c", "customer", "/v1/customers/cus_c")
        .created(BASE + 10)
        .build();
    fake.add_v2_event(&newer).unwrap();
    let second = client
        .list_v2_events(&ctx, &params, first.next_page.as_ref())
        .await
        .unwrap();
    let ids = |p: &stripe_webhooks::client::NotificationPage| -> Vec<String> {
        p.data.iter().map(|n| n.id.to_string()).collect()
    };
    assert_eq!(ids(&second), ["evt_v2_2", "evt_v2_1"]);
    let back = client
        .list_v2_events(&ctx, &params, second.previous_page.as_ref())
        .await
        .unwrap();
    assert_eq!(ids(&back), ["evt_v2_4", "evt_v2_3"]);

    // Filters: one object, a time range, a type.
    let filtered = ListV2EventsParams::new()
        .with_object_id("cus_a")
        .with_created_gte(testing::rfc3339(BASE + 1))
        .with_types(["v1.customer.updated"]);
    let page = client.list_v2_events(&ctx, &filtered, None).await.unwrap();
    let got: Vec<String> = page.data.iter().map(|n| n.id.to_string()).collect();
    assert_eq!(got, ["evt_v2_4", "evt_v2_2"]);
    let last = fake.requests().pop().unwrap();
    assert_eq!(last.query_value("object_id"), Some("cus_a"));
    assert_eq!(last.query_value("types[0]"), Some("v1.customer.updated"));
    assert!(last.query_value("created[gte]").is_some());

    // A next page is its `next_page_url`, followed as given, as Stripe's SDKs do (Stripe
    // takes no `page` beside the filters since 2025-03-31.basil): the filters are the
    // URL's, whatever parameters the call passes.
    let first = client
        .list_v2_events(&ctx, &filtered.clone().with_limit(1), None)
        .await
        .unwrap();
    let next = first.next_page.clone().expect("a second page");
    let second = client
        .list_v2_events(&ctx, &ListV2EventsParams::new(), Some(&next))
        .await
        .unwrap();
    assert_eq!(ids(&second), ["evt_v2_2"]);
    let sent = fake.requests().pop().unwrap();
    let (path, query) = next.as_str().split_once('?').unwrap();
    assert_eq!(sent.path, path);
    assert_eq!(
        sent.query.len(),
        query.split('&').count(),
        "{:?}",
        sent.query
    );
    assert_eq!(sent.query_value("object_id"), Some("cus_a"));
    // Followed byte for byte: a `+` in a token goes back as `+` (it was sent as `%2B`,
    // which a server reading the query as a form takes for another token).
    let token = PageToken::new("/v2/core/events?limit=1&page=tok+en%2Bx%2Fy");
    let _ = client.list_v2_events(&ctx, &params, Some(&token)).await;
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.raw_query, "limit=1&page=tok+en%2Bx%2Fy");
    // A page URL off the list (another path, another host) is refused, never fetched.
    let asked = fake.requests().len();
    for bad in [
        "/v1/customers?page=x",
        "https://evil.example/v2/core/events?page=x",
    ] {
        let err = client
            .list_v2_events(&ctx, &params, Some(&PageToken::new(bad)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidUrl { .. }),
            "{bad}: {err:?}"
        );
    }
    assert_eq!(fake.requests().len(), asked);

    // A misspelt filter is refused, as Stripe refuses it, rather than ignored.
    let err = client
        .get(
            &ctx,
            "/v2/core/events",
            &[("created_gte".to_owned(), testing::rfc3339(BASE))],
        )
        .await
        .unwrap_err();
    match &err {
        stripe_webhooks::client::ClientError::Api(e) => {
            assert_eq!(e.status, 400, "{err}");
            assert_eq!(e.code.as_deref(), Some("parameter_unknown"), "{err}");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[tokio::test]
async fn retrieves_v1_and_v2_events_and_objects() {
    let (fake, client) = fake().await;
    let ctx = RequestContext::platform();
    fake.add_event(&event_at("evt_1", "invoice.paid", BASE))
        .unwrap();
    let fetched = include_str!("fixtures/thin/v1.customer.updated.fetched.json");
    fake.add_v2_event(fetched).unwrap();
    fake.add_object(
        "/v1/products/prod_1",
        r#"{"id":"prod_1","object":"product","name":"Gold"}"#,
    )
    .unwrap();

    let event = client.retrieve_event(&ctx, "evt_1").await.unwrap();
    assert!(matches!(event, Event::InvoicePaid(_)), "{event:?}");

    let id = serde_json::from_str::<Value>(fetched).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The fixture is a connected account's (its `context`): fetched with that context.
    assert!(client.retrieve_v2_event(&ctx, &id).await.is_err());
    let account = serde_json::from_str::<Value>(fetched).unwrap()["context"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = client
        .retrieve_v2_event(&ctx.clone().with_stripe_context(account), &id)
        .await
        .unwrap();
    assert!(
        n.changes.is_some(),
        "a fetched thin event keeps its changes"
    );

    let raw = client
        .retrieve_object(&ctx, "/v1/products/prod_1")
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(raw.get()).unwrap()["name"],
        "Gold"
    );

    // An id that would change the path is refused before any request.
    let before = fake.requests().len();
    let err = client
        .retrieve_event(&ctx, "../v1/customers")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err:?}");
    assert_eq!(fake.requests().len(), before);
}

#[tokio::test]
async fn related_objects_are_typed_raw_or_singletons() {
    let (fake, client) = fake().await;
    fake.add_object(
        "/v1/customers/cus_1",
        r#"{"id":"cus_1","object":"customer","email":"a@example.com"}"#,
    )
    .unwrap();
    fake.add_object(
        "/v1/billing/meters/mtr_1",
        r#"{"id":"mtr_1","object":"billing.meter","display_name":"API calls"}"#,
    )
    .unwrap();
    fake.add_object(
        "/v1/tax/settings",
        r#"{"object":"tax.settings","status":"active"}"#,
    )
    .unwrap();

    let customer = ThinEventBuilder::new("evt_a", "v1.customer.updated")
        .related("cus_1", "customer", "/v1/customers/cus_1")
        .build();
    let n = dangerous::parse_unverified_notification(customer.as_bytes()).unwrap();
    let fetched = n.fetch_related_object(&client).await.unwrap();
    match fetched.object() {
        FetchedObject::Customer(c) => assert_eq!(c.email.as_deref(), Some("a@example.com")),
        other => panic!("expected a customer, got {other:?}"),
    }
    assert_eq!(fetched.object_type().as_deref(), Some("customer"));
    assert!(fetched.raw().get().contains("a@example.com"));

    let meter = ThinEventBuilder::new("evt_b", "v1.billing.meter.error_report_triggered")
        .related("mtr_1", "billing.meter", "/v1/billing/meters/mtr_1")
        .build();
    let n = dangerous::parse_unverified_notification(meter.as_bytes()).unwrap();
    let fetched = n.fetch_related_object(&client).await.unwrap();
    assert!(fetched.object().is_other());
    assert_eq!(fetched.id().as_deref(), Some("mtr_1"));
    // An object without a struct hides its credentials in `Debug`, as a typed one does.
    let raw = serde_json::value::RawValue::from_string(
        r#"{"id":"ek_1","object":"ephemeral_key","secret":"ek_test_SHOULD_NOT_SHOW","return_url":"https://example.com/?c=src_client_secret_SHOULD_NOT_SHOW"}"#
            .to_owned(),
    )
    .unwrap();
    let other = FetchedObject::from_raw(&raw);
    assert!(other.is_other());
    let shown = format!("{other:?}");
    assert!(!shown.contains("SHOULD_NOT_SHOW"), "{shown}");
    assert!(shown.contains(r#""id":"ek_1""#), "{shown}");

    let mut singleton: Value =
        serde_json::from_str(&ThinEventBuilder::new("evt_c", "v1.tax.settings.updated").build())
            .unwrap();
    singleton["related_object"] = json!({"type": "tax.settings", "url": "/v1/tax/settings"});
    let n = dangerous::parse_unverified_notification(singleton.to_string().as_bytes()).unwrap();
    assert_eq!(n.related_object_id(), None);
    let fetched = n.fetch_related_object(&client).await.unwrap();
    assert_eq!(fetched.object_type().as_deref(), Some("tax.settings"));
    assert_eq!(fetched.id(), None);

    // Another object answered than the event names (a cache, a proxy, a client of the
    // user's own): refused, not handed to the handler.
    let mixed_up = ThinEventBuilder::new("evt_e", "v1.customer.updated")
        .related("cus_2", "customer", "/v1/customers/cus_1")
        .build();
    let n = dangerous::parse_unverified_notification(mixed_up.as_bytes()).unwrap();
    let err = n.fetch_related_object(&client).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Decode { message, .. } if message.contains("\"cus_2\"")),
        "{err:?}"
    );

    let none = ThinEventBuilder::new("evt_d", "v2.core.event_destination.ping").build();
    let n = dangerous::parse_unverified_notification(none.as_bytes()).unwrap();
    let err = n.fetch_related_object(&client).await.unwrap_err();
    assert!(matches!(err, ClientError::NothingToFetch(_)), "{err:?}");
}

#[tokio::test]
async fn not_found_is_an_api_error_with_type_code_and_request_id() {
    let (fake, client) = fake().await;
    let err = client
        .retrieve_object(&RequestContext::platform(), "/v1/customers/cus_gone")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let ClientError::Api(api) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.status, 404);
    assert_eq!(api.error_type.as_deref(), Some("invalid_request_error"));
    assert_eq!(api.code.as_deref(), Some("resource_missing"));
    assert!(api.message.as_deref().unwrap().contains("cus_gone"));
    assert!(api.request_id.as_deref().unwrap().starts_with("req_fake_"));
    assert!(err.to_string().contains("resource_missing"), "{err}");
    assert_eq!(fake.requests().len(), 1, "a 404 is not retried");
}

/// The fake tells an object that is not there (`resource_missing`) from a URL the API
/// does not know (a 404 without a code), as Stripe does; `is_resource_missing` is only
/// the former.
#[tokio::test]
async fn the_fake_tells_a_missing_object_from_an_unknown_url() {
    let (fake, client) = fake().await;
    let ctx = RequestContext::platform();
    let missing = client
        .retrieve_object(&ctx, "/v1/customers/cus_gone")
        .await
        .unwrap_err();
    assert!(missing.is_resource_missing(), "{missing:?}");
    // So is one in a collection the fake was given an object or a thin event in.
    fake.add_object("/v1/billing/meters/mtr_1", r#"{"id":"mtr_1"}"#)
        .unwrap();
    // A singleton's path makes no collection of `/v1`.
    fake.add_object("/v1/balance", r#"{"object":"balance"}"#)
        .unwrap();
    let meter = client
        .retrieve_object(&ctx, "/v1/billing/meters/mtr_gone")
        .await
        .unwrap_err();
    assert!(meter.is_resource_missing(), "{meter:?}");
    for path in [
        "/v1/custmers/cus_gone",
        "/v1/custmers",
        "/v1/nowhere/at/all",
        "/v2/core",
    ] {
        let err = client.retrieve_object(&ctx, path).await.unwrap_err();
        let ClientError::Api(api) = &err else {
            panic!("{path}: {err:?}")
        };
        assert_eq!((api.status, api.code.as_deref()), (404, None), "{path}");
        assert!(!err.is_resource_missing(), "{path}: {err:?}");
        assert!(
            api.message
                .as_deref()
                .unwrap()
                .contains("Unrecognized request URL"),
            "{path}: {api:?}"
        );
    }
}

/// An event that names its account only in `context` (Accounts v2, organizations)
/// belongs to that account in the fake, as on Stripe: the platform's list leaves it
/// out, and a fetch for the event (`RequestContext::for_event`) finds it.
#[tokio::test]
async fn the_fake_keeps_a_context_only_event_with_its_account() {
    let (fake, client) = fake().await;
    let mut v: Value = serde_json::from_str(&event_at("evt_ctx", "invoice.paid", BASE)).unwrap();
    v["context"] = "acct_ctx".into();
    fake.add_event(&v.to_string()).unwrap();
    let platform = client
        .list_events(&RequestContext::platform(), &ListEventsParams::new())
        .await
        .unwrap();
    assert!(platform.data.is_empty(), "{:?}", platform.data);
    let event = dangerous::parse_unverified(v.to_string().as_bytes()).unwrap();
    let ctx = RequestContext::for_event(&event);
    let found = client.retrieve_event(&ctx, "evt_ctx").await.unwrap();
    assert_eq!(found.id().as_str(), "evt_ctx");
    let listed = client
        .list_events(
            &RequestContext::platform().with_stripe_account("acct_ctx"),
            &ListEventsParams::new(),
        )
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    // Both lists take at most 20 types, as Stripe's do.
    let types: Vec<String> = (0..21).map(|i| format!("x.type_{i}")).collect();
    let v1 = client
        .list_events(
            &RequestContext::platform(),
            &ListEventsParams::new().with_types(types.clone()),
        )
        .await
        .unwrap_err();
    let v2 = client
        .list_v2_events(
            &RequestContext::platform(),
            &ListV2EventsParams::new().with_types(types),
            None,
        )
        .await
        .unwrap_err();
    for err in [v1, v2] {
        let ClientError::Api(api) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(api.status, 400, "{api:?}");
        assert!(
            api.message.as_deref().unwrap().contains("at most 20"),
            "{api:?}"
        );
    }
}

/// Dropping the fake closes the connections it was answering: a client that sent half
/// a request is not left waiting on a task that outlives the server.
#[tokio::test]
async fn dropping_the_fake_closes_its_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = FakeStripe::start().await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    stream
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(fake);
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection stayed open: {read:?}"
    );
}

#[tokio::test]
async fn rides_out_a_429_storm() {
    let (fake, client) = fake().await;
    fake.add_event(&event_at("evt_1", "invoice.paid", BASE))
        .unwrap();
    fake.fail_next(
        5,
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
    );
    let start = Instant::now();
    let page = client
        .list_events(&RequestContext::platform(), &ListEventsParams::new())
        .await
        .unwrap();
    assert_eq!(ids(&page.data), ["evt_1"]);
    assert_eq!(fake.requests().len(), 6);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (fake, client) = fake().await;
    fake.add_event(&event_at("evt_1", "invoice.paid", BASE))
        .unwrap();
    fake.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let start = Instant::now();
    client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

/// `Retry-After` as an HTTP date: waited for until that second, not waited for at all
/// when it is past, and not started when it is past the deadline.
#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let (fake, client) = fake().await;
    fake.add_event(&event_at("evt_1", "invoice.paid", BASE))
        .unwrap();
    let platform = RequestContext::platform();
    let retrieve = || client.retrieve_event(&platform, "evt_1");
    // Two seconds ahead, written to the second: between one and two seconds' wait.
    fake.fail_next(
        1,
        Fault::TooManyRequestsUntil {
            retry_at: SystemTime::now() + Duration::from_secs(2),
        },
    );
    let start = Instant::now();
    retrieve().await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fake.requests().len(), 2);

    // A date already past: retried, and nothing in the way.
    fake.fail_next(
        1,
        Fault::TooManyRequestsUntil {
            retry_at: SystemTime::now() - Duration::from_secs(60),
        },
    );
    retrieve().await.unwrap();
    assert_eq!(fake.requests().len(), 4);

    // An hour ahead, past the client's deadline: the error at once, one attempt.
    fake.fail_path(
        "/v1/events/evt_1",
        None,
        Fault::TooManyRequestsUntil {
            retry_at: SystemTime::now() + Duration::from_secs(3_600),
        },
    );
    let err = retrieve().await.unwrap_err();
    assert!(
        matches!(err, ClientError::DeadlineExceeded { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_rate_limited());
    let sent = fake.requests();
    let last = sent.last().unwrap();
    assert_eq!(last.path, "/v1/events/evt_1");
    assert_eq!(sent.len(), 5);
}

/// An `account` or `context` that cannot be a header value (a forged or corrupted event)
/// is its own error, naming the header, and nothing is sent.
#[tokio::test]
async fn a_header_value_that_cannot_be_sent_is_refused_before_sending() {
    let (fake, client) = fake().await;
    let contexts = [
        (
            RequestContext::platform().with_stripe_account("acct_1\r\nX-Injected: 1"),
            "Stripe-Account",
        ),
        (
            RequestContext::platform().with_stripe_context("ctx\u{0}"),
            "Stripe-Context",
        ),
    ];
    for (ctx, header) in contexts {
        let err = client.retrieve_event(&ctx, "evt_1").await.unwrap_err();
        match &err {
            ClientError::InvalidHeader { name, .. } => assert_eq!(*name, header),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(header), "{err}");
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn gives_up_at_the_deadline_when_faults_never_stop() {
    let (fake, client) = fake().await;
    let client = client
        .with_deadline(Duration::from_millis(300))
        .with_max_attempts(1_000);
    fake.fail_path(
        "/v1/events",
        None,
        Fault::ServerError { should_retry: None },
    );
    let start = Instant::now();
    let err = client
        .list_events(&RequestContext::platform(), &ListEventsParams::new())
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    let ClientError::DeadlineExceeded { attempts, last, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(*attempts > 1, "{attempts}");
    assert_eq!(last.as_ref().unwrap().api_error().unwrap().status, 500);
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
    // The attempt the deadline cut short may not have reached the server.
    let sent = fake.requests().len() as u32;
    assert!(
        sent == *attempts || sent + 1 == *attempts,
        "{sent} sent, {attempts} attempts"
    );

    // A Retry-After that would pass the deadline is not waited for at all (a deadline of
    // 5 s, a wait of 30: answered at once, far from either).
    let client = client.with_deadline(Duration::from_secs(5));
    fake.clear_faults();
    fake.fail_path(
        "/v1/events",
        None,
        Fault::TooManyRequests {
            retry_after_secs: Some(30),
        },
    );
    let start = Instant::now();
    let err = client
        .list_events(&RequestContext::platform(), &ListEventsParams::new())
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(err, ClientError::DeadlineExceeded { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_rate_limited());

    // Nor is one too large for the clock (a proxy's, say): an error, never a panic.
    fake.clear_faults();
    fake.fail_path(
        "/v1/events",
        None,
        Fault::TooManyRequests {
            retry_after_secs: Some(u64::MAX),
        },
    );
    let err = client
        .list_events(&RequestContext::platform(), &ListEventsParams::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::DeadlineExceeded { attempts: 1, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_deadline_of_duration_max_means_none() {
    let (fake, client) = fake().await;
    let client = client.with_deadline(Duration::MAX);
    fake.add_event(&event_at("evt_far", "invoice.paid", BASE))
        .unwrap();
    fake.fail_path(
        "/v1/events/evt_far",
        Some(1),
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
    );
    let event = client
        .retrieve_event(&RequestContext::platform(), "evt_far")
        .await
        .unwrap();
    assert_eq!(event.id().to_string(), "evt_far");
    assert_eq!(fake.requests().len(), 2);

    // Without a deadline, a server asking to wait an hour is not slept through: the call
    // fails at once, and the caller's next pass asks again.
    fake.fail_path(
        "/v1/events/evt_far",
        None,
        Fault::TooManyRequests {
            retry_after_secs: Some(3600),
        },
    );
    let start = Instant::now();
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_far")
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(err, ClientError::RetriesExhausted { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_rate_limited());
    // However long: a wait past the clock's range is no deadline passed.
    fake.clear_faults();
    fake.fail_path(
        "/v1/events/evt_far",
        None,
        Fault::TooManyRequests {
            retry_after_secs: Some(u64::MAX),
        },
    );
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_far")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RetriesExhausted { attempts: 1, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let (fake, client) = fake().await;
    let client = client.with_max_attempts(3);
    fake.fail_path(
        "/v1/events",
        None,
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
    );
    let err = client
        .list_events(&RequestContext::platform(), &ListEventsParams::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.is_rate_limited());
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn stripe_should_retry_false_stops_retrying() {
    let (fake, client) = fake().await;
    fake.add_event(&event_at("evt_1", "invoice.paid", BASE))
        .unwrap();
    fake.fail_next(
        1,
        Fault::ServerError {
            should_retry: Some(false),
        },
    );
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap_err();
    let api = err.api_error().unwrap();
    assert_eq!((api.status, api.should_retry), (500, Some(false)));
    assert!(matches!(err, ClientError::Api(_)));
    assert_eq!(fake.requests().len(), 1);

    // The same 500 without the header is retried.
    fake.fail_next(1, Fault::ServerError { should_retry: None });
    client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn should_retry_true_and_lock_conflicts_are_retried() {
    let (fake, client) = fake().await;
    fake.add_event(&event_at("evt_1", "invoice.paid", BASE))
        .unwrap();
    let error = |status: u16, should_retry| Fault::Error {
        status,
        error_type: "invalid_request_error".into(),
        code: Some("lock_timeout".into()),
        message: "This object cannot be accessed right now.".into(),
        param: None,
        should_retry,
    };
    fake.fail_next(1, error(409, None));
    fake.fail_next(1, error(400, Some(true)));
    client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 3);
    // A plain 400 is final.
    fake.fail_next(1, error(400, None));
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap_err();
    assert_eq!(err.api_error().unwrap().status, 400);
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn dropped_connections_and_slow_answers_are_retried() {
    let (fake, client) = fake().await;
    fake.add_event(&event_at("evt_1", "invoice.paid", BASE))
        .unwrap();
    fake.fail_next(2, Fault::DropConnection);
    client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 3);

    // An attempt timeout a loaded machine's normal answer stays well within, and a slow
    // answer (5 s) well past it: not waited for.
    let client = client.with_attempt_timeout(Duration::from_secs(1));
    fake.fail_next(1, Fault::Delay(Duration::from_secs(5)));
    let start = Instant::now();
    client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fake.requests().len(), 5);
}

#[tokio::test]
async fn network_errors_are_network_errors() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = HttpClient::new(stripe_webhooks::client::ApiKey::new(FAKE_API_KEY).unwrap())
        .unwrap()
        .with_base_url(format!("http://127.0.0.1:{port}"))
        .with_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .with_max_attempts(2);
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap_err();
    let ClientError::RetriesExhausted { attempts: 2, last } = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(**last, ClientError::Network(_)), "{last:?}");
}

/// A server that answers every request with `head` and then `body_len` bytes of `x`,
/// chunked when `head` says so. Returns its base URL.
async fn endless_server(head: &'static str, body_len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunked = head.contains("chunked");
                let piece = vec![b'x'; 1 << 20];
                let mut sent = 0;
                while sent < body_len {
                    let n = piece.len().min(body_len - sent);
                    let framed = if chunked {
                        [
                            format!("{n:x}\r\n").into_bytes(),
                            piece[..n].to_vec(),
                            b"\r\n".to_vec(),
                        ]
                        .concat()
                    } else {
                        piece[..n].to_vec()
                    };
                    if socket.write_all(&framed).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

/// An answer larger than the client reads (64 MiB), announced or streamed, is an error,
/// not the process's memory; it is not retried.
#[tokio::test]
async fn an_endless_answer_is_refused_not_read_into_memory() {
    let announced = endless_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n",
        1 << 20,
    )
    .await;
    let streamed = endless_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        65 << 20,
    )
    .await;
    for base in [announced, streamed] {
        let client = HttpClient::new(stripe_webhooks::client::ApiKey::new(FAKE_API_KEY).unwrap())
            .unwrap()
            .with_base_url(base)
            .with_max_attempts(3);
        let err = client
            .retrieve_event(&RequestContext::platform(), "evt_1")
            .await
            .unwrap_err();
        match &err {
            ClientError::Decode { path, message } => {
                assert_eq!(path, "/v1/events/evt_1");
                assert!(message.contains("larger than 64 MiB"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    // An error answer too large to read is still its status: a 503 is retried, and the
    // attempts end as a 503 with its body left unread.
    let unavailable = endless_server(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 1000000000\r\n\r\n",
        1 << 20,
    )
    .await;
    let client = HttpClient::new(stripe_webhooks::client::ApiKey::new(FAKE_API_KEY).unwrap())
        .unwrap()
        .with_base_url(unavailable)
        .with_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .with_max_attempts(3);
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.api_error().map(|e| e.status), Some(503), "{err:?}");
}

#[tokio::test]
async fn a_bad_base_url_is_not_retried() {
    let client = HttpClient::new(stripe_webhooks::client::ApiKey::new(FAKE_API_KEY).unwrap())
        .unwrap()
        .with_base_url("not a url")
        .with_max_attempts(5);
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err:?}");
}

async fn max_in_flight_with(cap: usize) -> usize {
    let (fake, client) = fake_with_customer().await;
    let client = Arc::new(client.with_max_concurrency(cap));
    fake.fail_path(
        "/v1/customers",
        None,
        Fault::Delay(Duration::from_millis(40)),
    );
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                client
                    .retrieve_object(&RequestContext::platform(), "/v1/customers/cus_1")
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.requests().len(), 12);
    fake.max_in_flight()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_is_respected() {
    let capped = max_in_flight_with(3).await;
    assert!(
        (2..=3).contains(&capped),
        "{capped} in flight with a cap of 3"
    );
    // The control: without the cap, the same load runs wider.
    let uncapped = max_in_flight_with(12).await;
    assert!(uncapped > 3, "{uncapped} in flight with a cap of 12");
}

#[tokio::test]
async fn rate_limit_paces_requests() {
    let (_fake, client) = fake_with_customer().await;
    let client = Arc::new(client.with_rate_limit(10));
    let start = Instant::now();
    let tasks: Vec<_> = (0..15)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                client
                    .retrieve_object(&RequestContext::platform(), "/v1/customers/cus_1")
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // 10 at once, then 5 more at 10 a second.
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );
}

/// A call whose turn under the rate limit comes after its deadline fails at once, sends
/// nothing and counts no attempt, and does not hold its concurrency slot meanwhile: the
/// next call, with a deadline it can meet, goes through.
#[tokio::test]
async fn a_rate_wait_past_the_deadline_fails_at_once_without_holding_a_slot() {
    let (fake, client) = fake_with_customer().await;
    let client = Arc::new(client.with_rate_limit(1).with_max_concurrency(1));
    let ctx = RequestContext::platform();
    let get = |c: &HttpClient| {
        let ctx = ctx.clone();
        let c = c.clone();
        async move { c.retrieve_object(&ctx, "/v1/customers/cus_1").await }
    };
    get(&client).await.unwrap();
    let short = client
        .as_ref()
        .clone()
        .with_deadline(Duration::from_millis(400));
    let start = Instant::now();
    let err = get(&short).await.unwrap_err();
    assert!(
        matches!(err, ClientError::DeadlineExceeded { attempts: 0, .. }),
        "{err:?}"
    );
    // At once, not at the deadline it could not meet.
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fake.requests().len(), 1);
    let long = client
        .as_ref()
        .clone()
        .with_deadline(Duration::from_secs(5));
    get(&long).await.unwrap();
    assert_eq!(fake.requests().len(), 2);
}

/// An error answer whose connection is lost half-way through its body is that error,
/// retried as its status says: a 400 is not retried, a 500 is.
#[tokio::test]
async fn an_error_answer_cut_short_is_retried_only_as_its_status_says() {
    let (fake, client) = fake_with_customer().await;
    let ctx = RequestContext::platform();
    fake.fail_next(1, Fault::CutBody { status: 400 });
    let err = client
        .retrieve_object(&ctx, "/v1/customers/cus_1")
        .await
        .unwrap_err();
    assert_eq!(err.api_error().map(|e| e.status), Some(400), "{err:?}");
    assert_eq!(fake.requests().len(), 1, "not retried");
    fake.fail_next(1, Fault::CutBody { status: 500 });
    client
        .retrieve_object(&ctx, "/v1/customers/cus_1")
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 3, "retried");
}

#[tokio::test]
async fn the_api_key_is_in_no_error_and_no_debug_output() {
    let (fake, client) = fake().await;
    let secret_part = FAKE_API_KEY.trim_start_matches("sk_test_");
    let ctx = RequestContext::platform();
    let mut errors: Vec<ClientError> = Vec::new();

    errors.push(
        client
            .retrieve_object(&ctx, "/v1/customers/x")
            .await
            .unwrap_err(),
    );
    fake.fail_next(
        1,
        Fault::ServerError {
            should_retry: Some(false),
        },
    );
    errors.push(client.retrieve_event(&ctx, "evt_1").await.unwrap_err());
    fake.fail_next(
        10,
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
    );
    errors.push(
        client
            .clone()
            .with_max_attempts(2)
            .retrieve_event(&ctx, "evt_1")
            .await
            .unwrap_err(),
    );
    fake.clear_faults();
    fake.fail_path("/v1/events", None, Fault::DropConnection);
    errors.push(
        client
            .clone()
            .with_deadline(Duration::from_millis(100))
            .retrieve_event(&ctx, "evt_1")
            .await
            .unwrap_err(),
    );
    fake.clear_faults();
    fake.add_event(r#"{"id":"evt_bad","object":"event","created":1,"type":"invoice.paid"}"#)
        .unwrap();
    errors.push(client.retrieve_event(&ctx, "evt_bad").await.unwrap_err());
    errors.push(
        client
            .retrieve_object(&ctx, "https://evil.example/v1/customers")
            .await
            .unwrap_err(),
    );

    // Stripe masks a key it echoes, but were it ever sent whole, it is taken out.
    fake.fail_next(
        1,
        Fault::Error {
            status: 401,
            error_type: "invalid_request_error".into(),
            code: None,
            message: format!("Invalid API Key provided: {FAKE_API_KEY}"),
            param: Some(format!("key {FAKE_API_KEY}")),
            should_retry: None,
        },
    );
    let err = client.retrieve_event(&ctx, "evt_1").await.unwrap_err();
    assert_eq!(err.api_error().unwrap().status, 401);
    assert_eq!(
        err.api_error().unwrap().param.as_deref(),
        Some("key <redacted>")
    );
    assert!(
        err.to_string()
            .contains("Invalid API Key provided: <redacted>"),
        "{err}"
    );
    errors.push(err);

    assert!(
        matches!(errors[4], ClientError::Decode { .. }),
        "{:?}",
        errors[4]
    );
    for e in &errors {
        for text in [e.to_string(), format!("{e:?}"), format!("{e:#?}")] {
            assert!(!text.contains(secret_part), "key in {text}");
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            assert!(!s.to_string().contains(secret_part), "key in {s}");
            source = s.source();
        }
    }
    for text in [format!("{client:?}"), format!("{fake:?}")] {
        assert!(!text.contains(secret_part), "key in {text}");
    }
    assert!(format!("{client:?}").contains("ApiKey(<redacted>)"));
}

#[tokio::test]
async fn absolute_and_foreign_urls_are_refused() {
    let (fake, client) = fake().await;
    for url in [
        "https://evil.example/v1/customers/cus_1",
        "http://127.0.0.1:1/v1/customers/cus_1",
        "//evil.example/v1/customers/cus_1",
        "/v1/../../etc/passwd",
    ] {
        let mut body: Value = serde_json::from_str(
            &ThinEventBuilder::new("evt_x", "v1.customer.updated")
                .related("cus_1", "customer", url)
                .build(),
        )
        .unwrap();
        body["related_object"]["url"] = url.into();
        let n = dangerous::parse_unverified_notification(body.to_string().as_bytes()).unwrap();
        let err = n.fetch_related_object(&client).await.unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
        let err = client
            .get(&RequestContext::platform(), url, &[])
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
    }
    assert!(fake.requests().is_empty());
}

/// An inner handler that records the subscription status it was given.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

/// An event id and the subscription status its handler saw.
type Seen = (String, Option<SubscriptionStatus>);

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let status = match event {
            Event::CustomerSubscriptionUpdated(sub) => sub.status.clone(),
            _ => None,
        };
        self.0
            .lock()
            .unwrap()
            .push((event.id().to_string(), status));
        Ok(())
    }

    async fn handle_stale(
        &self,
        event: &Event,
        _: &stripe_webhooks::Watermark,
    ) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push((format!("stale {}", event.id()), None));
        Ok(())
    }
}

#[tokio::test]
async fn fetch_latest_hands_the_inner_handler_the_fresh_object() {
    let (fake, client) = fake().await;
    fake.add_object_for(
        "acct_3",
        "/v1/subscriptions/sub_1",
        &subscription("sub_1", "canceled"),
    )
    .unwrap();
    let recorder = Recorder::default();
    let handler = FetchLatest::new(
        recorder.clone(),
        Arc::new(client),
        [EventType::CustomerSubscriptionUpdated],
    )
    .unwrap();
    assert!(handler.fetches(&EventType::CustomerSubscriptionUpdated));

    let body = subscription_event("evt_1", "sub_1", Some("acct_3"));
    let event = dangerous::parse_unverified(body.as_bytes()).unwrap();
    handler.handle(&event).await.unwrap();
    // A type not chosen passes through without a request.
    let other =
        dangerous::parse_unverified(event_at("evt_2", "invoice.paid", BASE).as_bytes()).unwrap();
    handler.handle(&other).await.unwrap();
    // A stale event reaches the inner handler's handle_stale, without a fetch.
    let watermark = stripe_webhooks::Watermark::new(BASE + 10, "evt_9".into());
    handler.handle_stale(&event, &watermark).await.unwrap();

    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            ("evt_1".to_owned(), Some(SubscriptionStatus::Canceled)),
            ("evt_2".to_owned(), None),
            ("stale evt_1".to_owned(), None)
        ]
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/subscriptions/sub_1");
    assert_eq!(requests[0].header("stripe-account"), Some("acct_3"));
}

#[test]
fn fetch_latest_refuses_types_it_cannot_fetch() {
    struct Never;
    #[async_trait]
    impl StripeClient for Never {
        async fn get(
            &self,
            _: &RequestContext,
            _: &str,
            _: &[(String, String)],
        ) -> Result<String, ClientError> {
            unreachable!()
        }
    }
    let client: Arc<dyn StripeClient> = Arc::new(Never);
    for (ty, deleted) in [
        (EventType::AccountExternalAccountCreated, false), // card, bank account or source
        (EventType::BalanceAvailable, false),              // a singleton
        (EventType::from_wire("made.up"), false),
        (EventType::CustomerDeleted, true),
    ] {
        let err =
            FetchLatest::new(Recorder::default(), Arc::clone(&client), [ty.clone()]).unwrap_err();
        match err {
            FetchLatestError::Deleted { .. } => assert!(deleted, "{ty}"),
            FetchLatestError::NoApiPath { .. } => assert!(!deleted, "{ty}"),
            other => panic!("{other:?}"),
        }
    }
    // An upcoming invoice has no id: every delivery would fail on it.
    let err = FetchLatest::new(
        Recorder::default(),
        Arc::clone(&client),
        [EventType::from_wire("invoice.upcoming")],
    )
    .unwrap_err();
    assert!(
        matches!(err, FetchLatestError::NoObjectId { .. }),
        "{err:?}"
    );
    for ty in [
        EventType::CheckoutSessionCompleted,
        EventType::InvoicePaymentFailed,
        EventType::PaymentIntentSucceeded,
        EventType::CustomerUpdated,
        EventType::ChargeRefunded,
        // A deleted subscription is a cancelled one, which Stripe still serves.
        EventType::CustomerSubscriptionDeleted,
    ] {
        assert!(FetchLatest::new(Recorder::default(), Arc::clone(&client), [ty]).is_ok());
    }
}

/// An answer with another object than the event's (a cache, a proxy, a client of one's
/// own) is an error, not the event's latest state: a handler acting on it would apply
/// another customer's state. Before, it was taken.
#[tokio::test]
async fn a_fetched_object_that_is_not_the_events_is_refused() {
    let (fake, client) = fake().await;
    fake.add_object_for(
        "acct_3",
        "/v1/subscriptions/sub_1",
        &subscription("sub_OTHER", "canceled"),
    )
    .unwrap();
    let body = subscription_event("evt_1", "sub_1", Some("acct_3"));
    let event = dangerous::parse_unverified(body.as_bytes()).unwrap();
    let err = event.refetched(&client).await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("sub_OTHER"), "{err}");
    let recorder = Recorder::default();
    let handler = FetchLatest::new(
        recorder.clone(),
        Arc::new(client),
        [EventType::CustomerSubscriptionUpdated],
    )
    .unwrap();
    assert!(handler.handle(&event).await.is_err());
    assert!(recorder.0.lock().unwrap().is_empty());

    // An answer with no id at all cannot be told to be the object: refused too.
    fake.add_object_for(
        "acct_3",
        "/v1/subscriptions/sub_1",
        r#"{"object":"subscription","status":"canceled"}"#,
    )
    .unwrap();
    let err = event.refetched(&fake.client().unwrap()).await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("no id"), "{err}");
}

/// An object deleted after its event: Stripe answers 404 to every fetch, so by default
/// the delivery fails (and Stripe retries); `WhenGone::Skip` answers it handled without
/// running the inner handler. Another failure is still a failure under `Skip`.
#[tokio::test]
async fn a_deleted_object_fails_the_delivery_unless_told_to_skip_it() {
    let (fake, client) = fake().await;
    let client: Arc<dyn StripeClient> = Arc::new(client);
    let secret = "whsec_client_test";
    let body = subscription_event("evt_1", "sub_gone", None);
    let header = testing::sign(body.as_bytes(), secret, testing::now());
    let deliver = |when_gone: WhenGone| {
        let recorder = Recorder::default();
        let handler = FetchLatest::new(
            recorder.clone(),
            Arc::clone(&client),
            [EventType::CustomerSubscriptionUpdated],
        )
        .unwrap()
        .when_gone(when_gone);
        let processor = Processor::new(
            Verifier::new(SigningSecret::new(secret).unwrap()),
            MemoryStore::new(),
            handler,
        );
        let (header, body) = (header.clone(), body.clone());
        async move {
            let outcome = processor.process(Some(&header), body.as_bytes()).await;
            let ran = recorder.0.lock().unwrap().len();
            (outcome.status(), ran)
        }
    };
    // Never served: the fake answers 404 `resource_missing`, as Stripe does.
    assert_eq!(deliver(WhenGone::default()).await, (500, 0));
    assert_eq!(deliver(WhenGone::Skip).await, (200, 0));
    assert_eq!(fake.requests().len(), 2);
    // Any other failure is not a deletion: it fails under `Skip` as well.
    fake.fail_next(
        1,
        Fault::ServerError {
            should_retry: Some(false),
        },
    );
    assert_eq!(deliver(WhenGone::Skip).await, (500, 0));
    // Nor is a 404 that is not Stripe's `resource_missing` (a wrong base URL, a
    // proxy's page).
    let proxy = endless_server(
        "HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot here!",
        0,
    )
    .await;
    let recorder = Recorder::default();
    let lost = FetchLatest::new(
        recorder.clone(),
        Arc::new(
            HttpClient::new(stripe_webhooks::client::ApiKey::new(FAKE_API_KEY).unwrap())
                .unwrap()
                .with_base_url(proxy),
        ),
        [EventType::CustomerSubscriptionUpdated],
    )
    .unwrap()
    .when_gone(WhenGone::Skip);
    let event = dangerous::parse_unverified(body.as_bytes()).unwrap();
    assert!(lost.handle(&event).await.is_err());
    assert!(recorder.0.lock().unwrap().is_empty());
    // And an object that is there runs the handler on it.
    fake.add_object(
        "/v1/subscriptions/sub_gone",
        &subscription("sub_gone", "active"),
    )
    .unwrap();
    assert_eq!(deliver(WhenGone::Skip).await, (200, 1));
}

/// A deleted customer is answered 200 with its deleted stub, not 404: it is gone all the
/// same. `refetched` says so (`ObjectDeleted`, gone for good) rather than rebuild the
/// event around a customer with every field empty, and `FetchLatest` fails the delivery,
/// or skips it under `WhenGone::Skip`, as for a 404.
#[tokio::test]
async fn a_deleted_customers_stub_is_gone_not_its_state() {
    let (fake, client) = fake().await;
    fake.add_object(
        "/v1/customers/cus_gone",
        r#"{"id":"cus_gone","object":"customer","deleted":true}"#,
    )
    .unwrap();
    let body = testing::event_json(
        "evt_cus_gone",
        "customer.updated",
        r#"{"id":"cus_gone","object":"customer","email":"old@example.com"}"#,
    );
    let event = dangerous::parse_unverified(body.as_bytes()).unwrap();
    let err = event.refetched(&client).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::ObjectDeleted { path } if path == "/v1/customers/cus_gone"),
        "{err:?}"
    );
    assert!(err.is_resource_missing() && !err.is_not_found(), "{err:?}");
    let client: Arc<dyn StripeClient> = Arc::new(client);
    for (when_gone, ok) in [(WhenGone::Fail, false), (WhenGone::Skip, true)] {
        let recorder = Recorder::default();
        let handler = FetchLatest::new(
            recorder.clone(),
            Arc::clone(&client),
            [EventType::CustomerUpdated],
        )
        .unwrap()
        .when_gone(when_gone);
        assert_eq!(handler.handle(&event).await.is_ok(), ok, "{when_gone:?}");
        assert!(recorder.0.lock().unwrap().is_empty(), "{when_gone:?}");
    }
    // A live customer is fetched and run as ever.
    fake.add_object(
        "/v1/customers/cus_gone",
        r#"{"id":"cus_gone","object":"customer","email":"new@example.com"}"#,
    )
    .unwrap();
    let fresh = event.refetched(&*client).await.unwrap();
    assert!(fresh.raw_object().get().contains("new@example.com"));
}

#[tokio::test]
async fn a_failed_fetch_is_a_500_and_the_retry_succeeds() {
    let (fake, client) = fake().await;
    fake.add_object(
        "/v1/subscriptions/sub_1",
        &subscription("sub_1", "past_due"),
    )
    .unwrap();
    fake.fail_path(
        "/v1/subscriptions/",
        None,
        Fault::ServerError {
            should_retry: Some(false),
        },
    );
    let recorder = Recorder::default();
    let handler = FetchLatest::new(
        recorder.clone(),
        Arc::new(client),
        [EventType::CustomerSubscriptionUpdated],
    )
    .unwrap();
    let secret = "whsec_client_test";
    let processor = Processor::new(
        Verifier::new(SigningSecret::new(secret).unwrap()),
        MemoryStore::new(),
        handler,
    );
    let body = subscription_event("evt_1", "sub_1", None);
    let header = testing::sign(body.as_bytes(), secret, testing::now());

    let outcome = processor.process(Some(&header), body.as_bytes()).await;
    assert_eq!(outcome.status(), 500, "{outcome:?}");
    assert!(
        recorder.0.lock().unwrap().is_empty(),
        "never the stale snapshot"
    );

    // Stripe's retry, once the API answers again.
    fake.clear_faults();
    let outcome = processor.process(Some(&header), body.as_bytes()).await;
    assert_eq!(outcome.status(), 200, "{outcome:?}");
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [("evt_1".to_owned(), Some(SubscriptionStatus::PastDue))]
    );
    // And a duplicate after that runs nothing and fetches nothing.
    let before = fake.requests().len();
    let outcome = processor.process(Some(&header), body.as_bytes()).await;
    assert_eq!(outcome.status(), 200);
    assert_eq!(recorder.0.lock().unwrap().len(), 1);
    assert_eq!(fake.requests().len(), before);
}

/// A client that answers every `GET` with one canned body.
struct Canned(&'static str);

#[async_trait]
impl StripeClient for Canned {
    async fn get(
        &self,
        _ctx: &RequestContext,
        _path: &str,
        _query: &[(String, String)],
    ) -> Result<String, ClientError> {
        Ok(self.0.to_owned())
    }
}

/// A list whose page does not say whether more follow is an error, not the last page:
/// read as the end, a cursor pass would move past the pages it never listed.
#[tokio::test]
async fn a_list_page_without_its_pagination_member_is_a_decode_error() {
    let ctx = RequestContext::platform();
    let v1 = ListEventsParams::new();
    let e = Canned(r#"{"object":"list","data":[]}"#)
        .list_events(&ctx, &v1)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Decode { message, .. } if message.contains("has_more")),
        "{e:?}"
    );
    let page = Canned(r#"{"object":"list","data":[],"has_more":false}"#)
        .list_events(&ctx, &v1)
        .await
        .unwrap();
    assert!(!page.has_more);

    let v2 = ListV2EventsParams::new();
    let e = Canned(r#"{"data":[]}"#)
        .list_v2_events(&ctx, &v2, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Decode { message, .. } if message.contains("next_page_url")),
        "{e:?}"
    );
    let page = Canned(r#"{"data":[],"next_page_url":null,"previous_page_url":null}"#)
        .list_v2_events(&ctx, &v2, None)
        .await
        .unwrap();
    assert!(page.next_page.is_none());
}

/// An answer that echoes the API key (a proxy, a misrouted base URL) reaches the caller
/// with the key redacted, so no decode error quoting the body can carry it.
#[tokio::test]
async fn an_answer_that_echoes_the_key_reaches_the_caller_redacted() {
    let fake = FakeStripe::start().await.unwrap();
    fake.add_object(
        "/v1/customers/cus_echo",
        &json!({"id": "cus_echo", "object": "customer", "name": FAKE_API_KEY}).to_string(),
    )
    .unwrap();
    let client = fake.client().unwrap();
    let ctx = RequestContext::platform();
    let raw = client
        .retrieve_object(&ctx, "/v1/customers/cus_echo")
        .await
        .unwrap();
    assert!(!raw.get().contains(FAKE_API_KEY), "{}", raw.get());
    assert!(raw.get().contains("<redacted>"), "{}", raw.get());
    // A listed event that fails to decode: serde's error quotes the value it refused.
    let mut bad: Value =
        serde_json::from_str(&testing::event_for_type("evt_echo", "invoice.paid").unwrap())
            .unwrap();
    bad["livemode"] = FAKE_API_KEY.into();
    fake.add_event(&bad.to_string()).unwrap();
    let page = client
        .list_events(&ctx, &ListEventsParams::new())
        .await
        .unwrap();
    assert!(page.data.is_empty());
    let e = &page.unreadable[0].error;
    assert!(matches!(e, ParseError::NotAnEvent { .. }), "{e:?}");
    let shown = format!("{e} {e:?} {page:?}");
    assert!(!shown.contains(FAKE_API_KEY), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

/// A short key (a proxy's token) in an answer may be the answer's own data: the answer
/// passes as it is (it had its text replaced by `<redacted>`).
#[tokio::test]
async fn an_answer_that_contains_a_short_key_is_not_changed() {
    let fake = FakeStripe::start().await.unwrap();
    fake.add_object(
        "/v1/customers/cus_acme",
        &json!({"id": "cus_acme", "object": "customer", "email": "billing@acme.example"})
            .to_string(),
    )
    .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let client = |key: &str| {
        HttpClient::with_reqwest(
            http.clone(),
            stripe_webhooks::client::ApiKey::new(key).unwrap(),
        )
        .with_base_url(fake.base_url())
    };
    let ctx = RequestContext::platform();
    for key in ["acme", "tok_elsewhere"] {
        let raw = client(key)
            .retrieve_object(&ctx, "/v1/customers/cus_acme")
            .await
            .unwrap();
        assert!(
            raw.get().contains("billing@acme.example"),
            "{key}: {}",
            raw.get()
        );
    }
}

/// The fake serves an object added for a connected account to a request whose
/// `Stripe-Context` is a path ending in that account, as it does that account's events.
#[tokio::test]
async fn the_fake_serves_an_accounts_object_to_a_context_path_ending_in_it() {
    let fake = FakeStripe::start().await.unwrap();
    fake.add_object_for(
        "acct_2",
        "/v1/customers/cus_nested",
        r#"{"id":"cus_nested","object":"customer"}"#,
    )
    .unwrap();
    let client = fake.client().unwrap();
    for ctx in [
        RequestContext::platform().with_stripe_context("acct_1/acct_2"),
        RequestContext::platform().with_stripe_context("acct_2"),
        RequestContext::platform().with_stripe_account("acct_2"),
    ] {
        let raw = client
            .retrieve_object(&ctx, "/v1/customers/cus_nested")
            .await
            .unwrap_or_else(|e| panic!("{ctx:?}: {e}"));
        assert!(raw.get().contains("cus_nested"));
    }
    for ctx in [
        RequestContext::platform(),
        RequestContext::platform().with_stripe_context("acct_2/acct_3"),
    ] {
        let e = client
            .retrieve_object(&ctx, "/v1/customers/cus_nested")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("404"), "{ctx:?}: {e}");
    }
}

/// A client given to `with_reqwest` that follows redirects, against a server that
/// redirects without end, fails at its first attempt (`Refused`): the API never
/// redirects, so a redirect is a wrong base URL or a proxy, which sending again does
/// not fix. Before, each attempt followed the redirects again until the attempts ran
/// out.
#[tokio::test]
async fn a_redirect_loop_is_refused_at_the_first_attempt() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = socket.read(&mut request).await;
                let answer = "HTTP/1.1 302 Found\r\nLocation: /v1/events/evt_1\r\n\
                              Content-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .unwrap();
    let client = HttpClient::with_reqwest(
        http,
        stripe_webhooks::client::ApiKey::new(FAKE_API_KEY).unwrap(),
    )
    .with_base_url(format!("http://127.0.0.1:{port}"))
    .with_backoff(Duration::from_millis(1), Duration::from_millis(2))
    .with_max_attempts(5);
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_1")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused { .. }), "{err:?}");
    // One attempt: the first request and its three redirects.
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 4);
}

/// The fake compares v2 events' times to the millisecond, as Stripe does: events within
/// one second list newest first by their milliseconds, and `created[gt]` and
/// `created[lte]` at the second's start see the fraction. (It dropped fractions: such
/// events listed in the order they were added, and `created[gt]` at `.000` missed an
/// event at `.500`.)
#[tokio::test]
async fn the_fake_lists_v2_events_to_the_millisecond() {
    let (fake, client) = fake().await;
    let second = testing::rfc3339(BASE);
    let at = |ms: &str| second.replace(".000Z", &format!(".{ms}Z"));
    for (id, ms) in [
        ("evt_ms_500", "500"),
        ("evt_ms_200", "200"),
        ("evt_ms_900", "9"),
    ] {
        let mut v: Value = serde_json::from_str(
            &ThinEventBuilder::new(id, "v1.customer.updated")
                .related("cus_ms", "customer", "/v1/customers/cus_ms")
                .created(BASE)
                .build(),
        )
        .unwrap();
        v["created"] = at(ms).into();
        fake.add_v2_event(&v.to_string()).unwrap();
    }
    let list = |params: ListV2EventsParams| {
        let client = client.clone();
        async move {
            let ctx = RequestContext::platform();
            let page = client.list_v2_events(&ctx, &params, None).await.unwrap();
            page.data
                .iter()
                .map(|n| n.id.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(ListV2EventsParams::new()).await,
        ["evt_ms_900", "evt_ms_500", "evt_ms_200"]
    );
    assert_eq!(
        list(ListV2EventsParams::new().with_created_gt(&second)).await,
        ["evt_ms_900", "evt_ms_500", "evt_ms_200"]
    );
    assert_eq!(
        list(ListV2EventsParams::new().with_created_lte(at("500"))).await,
        ["evt_ms_500", "evt_ms_200"]
    );
    assert_eq!(
        list(ListV2EventsParams::new().with_created_lt(at("200"))).await,
        Vec::<String>::new()
    );
}

/// Sends `request` to the fake over a raw connection and gives back its answer's status
/// line (empty if the connection was reset or closed without one).
async fn raw_exchange(fake: &FakeStripe, request: &[u8]) -> String {
    raw_answer(fake, request)
        .await
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Sends `request` to the fake over a raw connection and gives back its whole answer.
async fn raw_answer(fake: &FakeStripe, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    // A write may fail once the fake has answered and closed: the answer is what counts.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A delay combines with the fault added after it (a slow 500); a fault added before a
/// delay answers at once and leaves the delay for the next request.
#[tokio::test]
async fn a_delay_combines_with_the_fault_after_it() {
    let (fake, _client) = fake().await;
    let get = b"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk_test_x\r\n\r\n";
    let slow = Duration::from_millis(300);
    fake.fail_next(1, Fault::Delay(slow));
    fake.fail_path("/v1/events", Some(1), Fault::Delay(slow));
    fake.fail_next(1, Fault::ServerError { should_retry: None });
    let start = Instant::now();
    let answer = raw_exchange(&fake, get).await;
    assert_eq!(answer, "HTTP/1.1 500 Internal Server Error");
    assert!(start.elapsed() >= slow * 2, "{:?}", start.elapsed());
    // Every rule was used once: the next request is answered as usual.
    assert_eq!(raw_exchange(&fake, get).await, "HTTP/1.1 200 OK");

    fake.fail_next(1, Fault::DropConnection);
    fake.fail_next(1, Fault::Delay(slow));
    assert_eq!(raw_exchange(&fake, get).await, "", "dropped");
    let start = Instant::now();
    assert_eq!(raw_exchange(&fake, get).await, "HTTP/1.1 200 OK");
    assert!(start.elapsed() >= slow, "{:?}", start.elapsed());
    assert_eq!(fake.requests().len(), 4);
}

/// Every answer names its API version, as Stripe's do: the request's `Stripe-Version`,
/// else the version this crate pins; errors and faults' answers too.
#[tokio::test]
async fn answers_name_the_api_version() {
    let (fake, _client) = fake().await;
    let version = |answer: &str| {
        answer
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix("Stripe-Version: "))
            .map(str::to_owned)
    };
    let get = |extra: &str| {
        format!(
            "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk_test_x\r\n{extra}\r\n"
        )
    };
    let pinned = Some(stripe_webhooks::client::API_VERSION.to_owned());
    let answer = raw_answer(&fake, get("Stripe-Version: 2020-08-27\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert_eq!(version(&answer).as_deref(), Some("2020-08-27"));
    let answer = raw_answer(&fake, get("").as_bytes()).await;
    assert_eq!(version(&answer), pinned);
    // Not one token: not echoed.
    let answer = raw_answer(&fake, get("Stripe-Version: 2020-08-27 x\r\n").as_bytes()).await;
    assert_eq!(version(&answer), pinned);
    // An error and a fault's answer.
    let answer = raw_answer(&fake, b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(version(&answer), pinned);
    // A head it cannot read.
    let answer = raw_answer(&fake, b"\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(version(&answer), pinned);
    fake.fail_next(1, Fault::ServerError { should_retry: None });
    let answer = raw_answer(&fake, get("Stripe-Version: 2020-08-27\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert_eq!(version(&answer).as_deref(), Some("2020-08-27"));
}

/// Requests the fake used to drop without an answer or a record, or whose answer a
/// reset could lose: a header value that is not UTF-8 (HTTP allows it) is recorded and
/// answered; a head over 64 KiB is answered 400.
#[tokio::test]
async fn the_fake_answers_requests_it_cannot_serve() {
    let (fake, _client) = fake().await;
    let status = raw_exchange(
        &fake,
        b"GET /v1/events/evt_x HTTP/1.1\r\nHost: x\r\nX-Note: caf\xe9\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    let recorded = fake.requests().pop().unwrap();
    assert_eq!(recorded.path, "/v1/events/evt_x");
    assert_eq!(recorded.header("x-note"), Some("caf\u{fffd}"));

    let mut huge = b"GET /v1/events HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat(b'a').take(70 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw_exchange(&fake, &huge).await, "HTTP/1.1 400 Bad Request");
}

/// An object with a custom id (a plan's or product's, which the account chooses) is
/// fetched at its id escaped into one path segment: `FetchLatest` runs the handler on
/// it. Such an id was refused (`InvalidUrl`), so every delivery failed for three days;
/// one holding a `%` (a coupon's `50%OFF`) was still refused until its escape `%25` was
/// let through.
#[tokio::test]
async fn objects_with_custom_ids_are_fetched() {
    let (fake, client) = fake().await;
    for id in ["pro.monthly", "plan:gold 2026", "50%OFF", "100%"] {
        let object = format!(r#"{{"id":"{id}","object":"product","name":"new name"}}"#);
        fake.add_object(&format!("/v1/products/{id}"), &object)
            .unwrap();
        let event = dangerous::parse_unverified(
            testing::event_json(
                "evt_custom",
                "product.updated",
                &format!(r#"{{"id":"{id}","object":"product","name":"old name"}}"#),
            )
            .as_bytes(),
        )
        .unwrap();
        let fresh = event.refetched(&client).await.unwrap();
        assert!(fresh.raw_object().get().contains("new name"), "{id}");
        let sent = fake.requests().pop().unwrap();
        assert_eq!(sent.path, format!("/v1/products/{id}"));
    }
    // Loaded by its escaped path (as a thin event's `related_object.url` gives it), an
    // object is served all the same, and a fault on that path applies.
    let path = stripe_webhooks::client::object_path("product", "pro:silver").unwrap();
    assert_eq!(path, "/v1/products/pro%3Asilver");
    fake.add_object(
        &path,
        r#"{"id":"pro:silver","object":"product","name":"new name"}"#,
    )
    .unwrap();
    let event = dangerous::parse_unverified(
        testing::event_json(
            "evt_silver",
            "product.updated",
            r#"{"id":"pro:silver","object":"product"}"#,
        )
        .as_bytes(),
    )
    .unwrap();
    fake.fail_path(
        &path,
        Some(1),
        Fault::Error {
            status: 400,
            error_type: "invalid_request_error".to_owned(),
            code: None,
            message: "no".to_owned(),
            param: None,
            should_retry: None,
        },
    );
    assert!(event.refetched(&client).await.is_err());
    let fresh = event.refetched(&client).await.unwrap();
    assert!(fresh.raw_object().get().contains("new name"));
    // An id that would leave its segment is still refused, before anything is sent.
    let sent = fake.requests().len();
    let event = dangerous::parse_unverified(
        testing::event_json(
            "evt_slash",
            "product.updated",
            r#"{"id":"../../v1/customers","object":"product"}"#,
        )
        .as_bytes(),
    )
    .unwrap();
    let err = event.refetched(&client).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err:?}");
    assert_eq!(fake.requests().len(), sent);
}

/// A key of the other mode than the event is refused before anything is sent
/// (`WrongMode`): Stripe would answer its objects 404 `resource_missing`, which reads as
/// deleted, so `FetchLatest` under `WhenGone::Skip` skipped every live event a test key
/// fetched for, and a tie under `TiePolicy::Fetch` ran on the snapshot. Such an
/// event now fails its delivery (500, retried) until the key is right; a connected
/// account's test event with a live key (which a live Connect endpoint gets) is taken
/// as gone, as before.
#[tokio::test]
async fn a_key_of_the_other_mode_is_refused_before_fetching() {
    let (fake, client) = fake().await;
    assert_eq!(client.livemode(), Some(false));
    fake.add_object(
        "/v1/customers/cus_1",
        r#"{"id":"cus_1","object":"customer"}"#,
    )
    .unwrap();
    let mut live: Value = serde_json::from_str(&testing::event_json(
        "evt_live",
        "customer.updated",
        r#"{"id":"cus_1","object":"customer"}"#,
    ))
    .unwrap();
    live["livemode"] = true.into();
    let event = dangerous::parse_unverified(live.to_string().as_bytes()).unwrap();
    let sent = fake.requests().len();
    let err = event.refetched(&client).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::WrongMode {
                event_livemode: true,
                connected: false
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_resource_missing());
    assert!(
        err.to_string().contains("with a test mode api key"),
        "{err}"
    );
    let recorder = Recorder::default();
    let client: Arc<dyn StripeClient> = Arc::new(client);
    let handler = FetchLatest::new(
        recorder.clone(),
        Arc::clone(&client),
        [EventType::CustomerUpdated],
    )
    .unwrap()
    .when_gone(WhenGone::Skip);
    assert!(handler.handle(&event).await.is_err());
    assert!(recorder.0.lock().unwrap().is_empty());
    // A thin event's fetches too.
    let n = ThinEventBuilder::new("evt_live_thin", "v1.customer.updated")
        .related("cus_1", "customer", "/v1/customers/cus_1")
        .livemode(true)
        .build();
    let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
    let err = n.fetch_related_object(&*client).await.unwrap_err();
    assert!(matches!(err, ClientError::WrongMode { .. }), "{err:?}");
    let err = n.fetch_event(&*client).await.unwrap_err();
    assert!(matches!(err, ClientError::WrongMode { .. }), "{err:?}");
    assert_eq!(fake.requests().len(), sent, "nothing sent");
    // A connected account's live event with a test key is a wrong key too: not gone.
    let mut connected = live.clone();
    connected["account"] = "acct_1".into();
    let event = dangerous::parse_unverified(connected.to_string().as_bytes()).unwrap();
    let err = event.refetched(&*client).await.unwrap_err();
    assert!(!err.is_resource_missing(), "{err:?}");
    assert!(handler.handle(&event).await.is_err());
    // A connected account's test event with a live key is expected (Stripe sends
    // connected accounts' test events to a live Connect endpoint too): its objects are
    // out of the key's reach, taken as gone, so `WhenGone::Skip` skips it.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let live_client: Arc<dyn StripeClient> = Arc::new(
        HttpClient::with_reqwest(
            http,
            stripe_webhooks::client::ApiKey::new("sk_live_fake").unwrap(),
        )
        .with_base_url(fake.base_url()),
    );
    connected["livemode"] = false.into();
    let event = dangerous::parse_unverified(connected.to_string().as_bytes()).unwrap();
    let err = event.refetched(&*live_client).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::WrongMode {
                event_livemode: false,
                connected: true
            }
        ),
        "{err:?}"
    );
    assert!(err.is_resource_missing());
    let on_live = FetchLatest::new(
        recorder.clone(),
        Arc::clone(&live_client),
        [EventType::CustomerUpdated],
    )
    .unwrap()
    .when_gone(WhenGone::Skip);
    assert!(on_live.handle(&event).await.is_ok());
    assert!(recorder.0.lock().unwrap().is_empty());
    assert_eq!(fake.requests().len(), sent, "nothing sent");
    // The event's own mode fetches as ever.
    live["livemode"] = false.into();
    let event = dangerous::parse_unverified(live.to_string().as_bytes()).unwrap();
    assert!(event.refetched(&*client).await.is_ok());
}

/// The fake's errors name what Stripe's name: every unknown parameter, the parameter an
/// id that names nothing came from (`param`), and both cursors at once without a code.
/// And it answers a head whose lines end in a bare `\n` (it waited for more).
#[tokio::test]
async fn the_fake_answers_errors_and_odd_requests_as_stripe_does() {
    let (fake, client) = fake().await;
    let ctx = RequestContext::platform();
    let api = |err: ClientError| err.api_error().cloned().unwrap();
    let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let e = api(client
        .get(
            &ctx,
            "/v1/events",
            &q(&[("sort", "x"), ("limit", "3"), ("expand", "y")]),
        )
        .await
        .unwrap_err());
    assert_eq!(
        (e.status, e.code.as_deref(), e.param.as_deref()),
        (400, Some("parameter_unknown"), Some("sort"))
    );
    assert_eq!(
        e.message.as_deref(),
        Some("Received unknown parameters: sort, expand")
    );
    let e = api(client
        .get(&ctx, "/v1/events", &q(&[("sort", "x")]))
        .await
        .unwrap_err());
    assert_eq!(
        e.message.as_deref(),
        Some("Received unknown parameter: sort")
    );

    let e = api(client.retrieve_event(&ctx, "evt_none").await.unwrap_err());
    assert_eq!(
        (e.status, e.code.as_deref(), e.param.as_deref()),
        (404, Some("resource_missing"), Some("id"))
    );
    let e = api(client
        .list_events(
            &ctx,
            &ListEventsParams::new().with_starting_after("evt_none"),
        )
        .await
        .unwrap_err());
    assert_eq!(
        (e.code.as_deref(), e.param.as_deref()),
        (Some("resource_missing"), Some("starting_after"))
    );
    let both = ListEventsParams::new()
        .with_starting_after("evt_none")
        .with_ending_before("evt_none");
    let e = api(client.list_events(&ctx, &both).await.unwrap_err());
    assert_eq!((e.status, e.code.as_deref()), (400, None));
    assert!(
        e.message
            .as_deref()
            .unwrap()
            .starts_with("Received both starting_after and ending_before"),
        "{e:?}"
    );

    let bare = b"GET /v1/events HTTP/1.1\nHost: x\nAuthorization: Bearer sk_test_x\n\n";
    let answer = tokio::time::timeout(Duration::from_secs(10), raw_exchange(&fake, bare)).await;
    assert_eq!(
        answer.as_deref(),
        Ok("HTTP/1.1 200 OK"),
        "the fake did not answer"
    );
    assert_eq!(
        fake.requests().pop().unwrap().header("authorization"),
        Some("Bearer sk_test_x")
    );
}

/// Told the key and the connected accounts, the fake refuses the others as Stripe does
/// (401 with the key masked; 403 for an account the key cannot reach), so a test catches
/// a service configured with the wrong key or account, which it otherwise answered with
/// an empty list.
#[tokio::test]
async fn the_fake_refuses_a_wrong_key_or_account_when_told_them() {
    let (fake, client) = fake().await;
    let own = RequestContext::platform();
    let acct = |a: &str| RequestContext::platform().with_stripe_account(a);
    // Not told: any key, any account.
    let wrong_key = "sk_test_wrong_0000000000009876";
    let other = HttpClient::new(stripe_webhooks::client::ApiKey::new(wrong_key).unwrap())
        .unwrap()
        .with_base_url(fake.base_url());
    let params = ListEventsParams::new();
    assert!(other.list_events(&own, &params).await.is_ok());
    assert!(client.list_events(&acct("acct_x"), &params).await.is_ok());

    fake.require_api_key(FAKE_API_KEY);
    fake.add_account("acct_1");
    fake.add_event(&{
        let mut v: Value = serde_json::from_str(&event_at("evt_a9", "invoice.paid", BASE)).unwrap();
        v["account"] = "acct_9".into();
        v.to_string()
    })
    .unwrap();
    let err = other.list_events(&own, &params).await.unwrap_err();
    let e = err.api_error().unwrap();
    assert_eq!(
        (e.status, e.error_type.as_deref()),
        (401, Some("invalid_request_error"))
    );
    assert_eq!(
        e.message.as_deref(),
        Some("Invalid API Key provided: sk_test_****9876")
    );
    assert!(!format!("{err} {err:?}").contains(wrong_key));
    assert!(client.list_events(&own, &params).await.is_ok());
    // Registered, or owning an added event: taken; another: 403.
    assert!(client.list_events(&acct("acct_1"), &params).await.is_ok());
    let listed = client.list_events(&acct("acct_9"), &params).await.unwrap();
    assert_eq!(listed.data.len(), 1);
    let err = client
        .list_events(&acct("acct_x"), &params)
        .await
        .unwrap_err();
    let e = err.api_error().unwrap();
    assert_eq!(e.status, 403, "{err}");
    assert!(
        e.message
            .as_deref()
            .unwrap()
            .contains("does not have access to account 'acct_x'"),
        "{err}"
    );
    // By `Stripe-Context` too, on either list.
    let ctx = RequestContext::platform().with_stripe_context("acct_x");
    let err = client
        .list_v2_events(&ctx, &ListV2EventsParams::new(), None)
        .await
        .unwrap_err();
    assert_eq!(err.api_error().unwrap().status, 403, "{err}");
}

/// Stripe takes the key as basic auth's user name too (`curl -u sk_test_…:`), and so
/// does the fake; a POST, body and all, is answered 405.
#[tokio::test]
async fn the_fake_takes_basic_auth_and_answers_a_post_with_a_body() {
    let fake = FakeStripe::start().await.unwrap();
    fake.require_api_key(FAKE_API_KEY);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", fake.base_url());
    for password in [Some(""), None] {
        let ok = http.get(&url).basic_auth(FAKE_API_KEY, password);
        assert_eq!(ok.send().await.unwrap().status(), 200, "{password:?}");
    }
    let bearer = http
        .get(&url)
        .header("authorization", format!("bearer {FAKE_API_KEY}"));
    assert_eq!(bearer.send().await.unwrap().status(), 200);
    let wrong = http
        .get(&url)
        .basic_auth("sk_test_wrong_0000000000009876", Some(""));
    let wrong = wrong.send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("sk_test_****9876"));
    for garbage in ["Basic !!!", "Basic", "Digest abc", "Basic Og=="] {
        let r = http
            .get(&url)
            .header("authorization", garbage)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{garbage}");
    }
    for _ in 0..20 {
        let post = http
            .post(&url)
            .bearer_auth(FAKE_API_KEY)
            .body(vec![b'x'; 1 << 20]);
        let answer = post.send().await.unwrap();
        assert_eq!(answer.status(), 405);
        assert_eq!(answer.headers()["allow"], "GET");
    }
}

/// Behind an `Arc` (as a reconciler or a shared service holds it), a client's own
/// methods are the ones called, not the trait's defaults over its `get`.
#[tokio::test]
async fn an_arc_keeps_a_clients_own_methods() {
    struct Canned;
    #[async_trait]
    impl StripeClient for Canned {
        async fn get(
            &self,
            _: &RequestContext,
            path: &str,
            _: &[(String, String)],
        ) -> Result<String, ClientError> {
            panic!("the trait's default over get was called for {path}");
        }

        async fn retrieve_event(&self, _: &RequestContext, id: &str) -> Result<Event, ClientError> {
            let body = testing::event_for_type(id, "invoice.paid").unwrap();
            Ok(dangerous::parse_unverified(body.as_bytes()).unwrap())
        }

        async fn retrieve_object(
            &self,
            _: &RequestContext,
            _: &str,
        ) -> Result<Box<serde_json::value::RawValue>, ClientError> {
            Ok(serde_json::value::RawValue::from_string("{\"id\":\"cus_1\"}".into()).unwrap())
        }
    }
    let shared: Arc<dyn StripeClient> = Arc::new(Canned);
    let twice = Arc::new(Arc::clone(&shared));
    let ctx = RequestContext::platform();
    let event = twice.retrieve_event(&ctx, "evt_canned").await.unwrap();
    assert_eq!(event.id().as_str(), "evt_canned");
    let object = shared
        .retrieve_object(&ctx, "/v1/customers/cus_1")
        .await
        .unwrap();
    assert_eq!(object.get(), "{\"id\":\"cus_1\"}");
}

/// A redirect fails at once, even marked `Stripe-Should-Retry: true`: the client follows
/// none, and asking again is answered the same.
#[tokio::test]
async fn a_redirect_is_not_retried_whatever_its_headers_say() {
    let (fake, client) = fake().await;
    let client = client.with_backoff(Duration::from_millis(1), Duration::from_millis(2));
    fake.fail_path(
        "/v1/events/evt_moved",
        None,
        Fault::Error {
            status: 302,
            error_type: "invalid_request_error".into(),
            code: None,
            message: "moved".into(),
            param: None,
            should_retry: Some(true),
        },
    );
    let err = client
        .retrieve_event(&RequestContext::platform(), "evt_moved")
        .await
        .unwrap_err();
    assert_eq!(err.api_error().map(|e| e.status), Some(302), "{err:?}");
    assert!(!err.api_error().unwrap().is_retryable());
    assert_eq!(fake.requests().len(), 1);
}
