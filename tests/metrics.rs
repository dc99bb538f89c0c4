//! The metrics (feature `metrics`), scraped from the example services' `GET /metrics` in
//! Prometheus format after a known sequence of deliveries.
//!
//! Needs the example services built with every feature (`scripts/test.sh` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(
    feature = "metrics",
    feature = "axum",
    feature = "sqlite",
    feature = "tracing"
))]

mod common;

use std::time::Duration;

use common::queue_service::{wait_drained, Service, SECRET};
use stripe_webhooks::testing;

/// The sum of a metric's samples whose labels include every `key="value"` of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn post(port: u16, path: &str, body: &str, secret: &str) -> u16 {
    let header = testing::sign(body.as_bytes(), secret, testing::now());
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json")
        .header("stripe-signature", header)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn scrape(port: u16) -> String {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_example_reports_deliveries_jobs_lag_and_depth() {
    let dir = common::TempDir::new("metrics_queue");
    let db = dir.join("q.db");
    let service = Service::start(&[
        ("SQLITE_PATH", db.to_str().unwrap()),
        ("DEMO_HANDLER_SLEEP_MS", "0"),
    ])
    .await;
    let p = service.port;
    let paid = testing::event_for_type("evt_metrics_1", "invoice.paid").unwrap();
    let failed = testing::event_for_type("evt_metrics_2", "invoice.payment_failed").unwrap();
    let mut invented: serde_json::Value = serde_json::from_str(&paid).unwrap();
    invented["id"] = "evt_metrics_3".into();
    invented["type"] = "invented.type.for_metrics".into();
    let invented = invented.to_string();
    assert_eq!(post(p, "/webhook", &paid, SECRET).await, 200);
    assert_eq!(post(p, "/webhook", &paid, SECRET).await, 200); // duplicate
    assert_eq!(post(p, "/webhook", &failed, SECRET).await, 200);
    assert_eq!(post(p, "/webhook", &invented, SECRET).await, 200);
    assert_eq!(post(p, "/webhook", &paid, "whsec_wrong").await, 400);
    wait_drained(&service, 3, Duration::from_secs(30)).await;

    // A job's counters are added just after its completion is committed: scraped until
    // the last one's are in.
    let mut text = scrape(p).await;
    let jobs = "stripe_webhooks_jobs_total";
    for _ in 0..100 {
        if sample(&text, jobs, &[("result", "completed")]) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = scrape(p).await;
    }
    let d = "stripe_webhooks_deliveries_total";
    assert_eq!(sample(&text, d, &[("outcome", "queued")]), 3.0, "{text}");
    assert_eq!(
        sample(
            &text,
            d,
            &[("outcome", "queued"), ("event_type", "invoice.paid")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            d,
            &[("outcome", "duplicate"), ("family", "snapshot")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            d,
            &[("outcome", "bad_signature"), ("reason", "mismatch")]
        ),
        1.0
    );
    // An invented type is counted under `other`, never under its own name.
    assert_eq!(sample(&text, d, &[("event_type", "other")]), 1.0);
    assert!(!text.contains("invented.type.for_metrics"));
    assert_eq!(
        sample(
            &text,
            "stripe_webhooks_jobs_total",
            &[("result", "completed")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "stripe_webhooks_queue_jobs",
            &[("state", "completed")]
        ),
        3.0
    );
    assert_eq!(
        sample(&text, "stripe_webhooks_queue_jobs", &[("state", "dead")]),
        0.0
    );
    assert_eq!(
        sample(&text, "stripe_webhooks_lag_seconds_count", &[]),
        3.0,
        "{text}"
    );
    // Described: each metric has its help line.
    for name in [
        "stripe_webhooks_deliveries_total",
        "stripe_webhooks_jobs_total",
        "stripe_webhooks_queue_jobs",
        "stripe_webhooks_queue_up",
        "stripe_webhooks_lag_seconds",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
    }
    // Histograms, with buckets that add up across replicas (not summaries).
    for name in [
        "stripe_webhooks_lag_seconds",
        "stripe_webhooks_handler_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} histogram")),
            "{name}: {text}"
        );
    }
    assert!(
        text.contains("stripe_webhooks_lag_seconds_bucket{") && text.contains("le=\"259200\""),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "stripe_webhooks_handler_duration_seconds_count",
            &[("result", "ok")]
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inline_example_reports_deliveries_and_handler_runs() {
    let dir = common::TempDir::new("metrics_axum");
    let db = dir.join("a.db");
    let service = Service::start_example("axum", &[("SQLITE_PATH", db.to_str().unwrap())]).await;
    let p = service.port;
    let paid = testing::event_for_type("evt_inline_1", "checkout.session.completed").unwrap();
    assert_eq!(post(p, "/webhook", &paid, SECRET).await, 200);
    assert_eq!(post(p, "/webhook", &paid, SECRET).await, 200);
    assert_eq!(post(p, "/webhook", "{}", SECRET).await, 400);
    // Refused by the adapter before the processor: counted all the same.
    let refused = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{p}/webhook"))
        .header("content-type", "text/plain")
        .body(paid.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 415);
    let wrong_method = reqwest::get(format!("http://127.0.0.1:{p}/webhook"))
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    let text = scrape(p).await;
    let d = "stripe_webhooks_deliveries_total";
    for outcome in ["unsupported_media_type", "method_not_allowed"] {
        assert_eq!(
            sample(&text, d, &[("outcome", outcome), ("family", "unknown")]),
            1.0,
            "{outcome}: {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            d,
            &[
                ("outcome", "processed"),
                ("event_type", "checkout.session.completed")
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, d, &[("outcome", "duplicate")]), 1.0);
    assert_eq!(
        sample(
            &text,
            d,
            &[("outcome", "not_an_event"), ("family", "unknown")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "stripe_webhooks_lag_seconds_count",
            &[("family", "snapshot")]
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "stripe_webhooks_handler_duration_seconds_count", &[]),
        1.0
    );
}

#[derive(Debug)]
struct PanickingClock;

impl stripe_webhooks::Clock for PanickingClock {
    fn now_unix(&self) -> i64 {
        panic!("clock broke")
    }
}

/// A delivery whose task panics outside the handler (here the verifier's clock) is
/// answered 500 and counted as `handler_failed`: the processor's own count never came,
/// so the delivery was missing from `stripe_webhooks_deliveries_total`.
#[test]
fn a_delivery_that_panics_outside_its_handler_is_counted() {
    use std::sync::Arc;
    use stripe_webhooks::{EventRouter, MemoryStore, Processor, SigningSecret, Verifier};
    let (status, text) = common::with_local_prometheus(async {
        let processor = Arc::new(Processor::new(
            Verifier::new(SigningSecret::new(SECRET).unwrap()).with_clock(PanickingClock),
            MemoryStore::new(),
            EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = stripe_webhooks::axum::router("/webhook", processor);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let body = testing::event_json("evt_cut", "customer.created", "{}");
        post(port, "/webhook", &body, SECRET).await
    });
    assert_eq!(status, 500);
    let counted = sample(
        &text,
        "stripe_webhooks_deliveries_total",
        &[("outcome", "handler_failed"), ("family", "unknown")],
    );
    assert_eq!(counted, 1.0, "{text}");
}

/// A stale thin event under `thin_ordered` is completed without a handler (thin handlers
/// have no `handle_stale`): no handler run is counted for it. It was counted as one that
/// succeeded, so the handler-run count read two runs where one handler ran.
#[test]
fn a_stale_thin_event_counts_no_handler_run() {
    use stripe_webhooks::testing::ThinEventBuilder;
    use stripe_webhooks::{
        dangerous, MemoryStore, Processor, SigningSecret, ThinEventRouter, TiePolicy, Verifier,
    };
    let notification = |id: &str, twin: &str, created: i64| {
        let n = ThinEventBuilder::new(id, "v1.customer.updated")
            .related("cus_metrics", "customer", "/v1/customers/cus_metrics")
            .snapshot_event(twin)
            .created(created)
            .build();
        dangerous::parse_unverified_notification(n.as_bytes()).unwrap()
    };
    let (kinds, text) = common::with_local_prometheus(async {
        let thin = Processor::thin_ordered(
            Verifier::new(SigningSecret::new(SECRET).unwrap()),
            MemoryStore::new(),
            ThinEventRouter::new().fallback(|_n| Box::pin(async { Ok(()) })),
            TiePolicy::Run,
        );
        let newer = notification("evt_thin_2", "evt_2", 1_700_000_060);
        let older = notification("evt_thin_1", "evt_1", 1_700_000_000);
        let mut kinds = Vec::new();
        for n in [newer, older] {
            kinds.push(thin.process_notification(&n).await.kind().name());
        }
        kinds
    });
    assert_eq!(kinds, ["processed", "stale"]);
    let runs = sample(&text, "stripe_webhooks_handler_duration_seconds_count", &[]);
    assert_eq!(runs, 1.0, "{text}");
}

/// `record_queue` sets `stripe_webhooks_queue_up` to 1 when it counted the queue and to 0
/// when it could not (here its table is gone); the depth gauges keep their last values
/// rather than read as an empty queue.
#[test]
fn record_queue_says_when_it_cannot_count() {
    use stripe_webhooks::queue::{NewJob, Queue};
    use stripe_webhooks::SqliteStore;
    common::with_local_prometheus_handle(|handle| async move {
        let dir = common::TempDir::new("metrics_queue_up");
        let store = SqliteStore::connect(dir.join("q.db")).await.unwrap();
        let queue = store.queue();
        let body = testing::event_json("evt_depth", "customer.created", "{}");
        queue
            .enqueue(&NewJob::parse(body.as_bytes()).unwrap())
            .await
            .unwrap();
        stripe_webhooks::metrics::record_queue(&queue)
            .await
            .unwrap();
        let text = handle.render();
        assert_eq!(
            sample(&text, "stripe_webhooks_queue_up", &[]),
            1.0,
            "{text}"
        );
        let queued = [("state", "queued")];
        assert_eq!(sample(&text, "stripe_webhooks_queue_jobs", &queued), 1.0);

        stripe_webhooks::sqlx::query("DROP TABLE stripe_webhook_events_jobs")
            .execute(store.pool())
            .await
            .unwrap();
        assert!(stripe_webhooks::metrics::record_queue(&queue)
            .await
            .is_err());
        let text = handle.render();
        assert_eq!(
            sample(&text, "stripe_webhooks_queue_up", &[]),
            0.0,
            "{text}"
        );
        assert_eq!(sample(&text, "stripe_webhooks_queue_jobs", &queued), 1.0);
    });
}
