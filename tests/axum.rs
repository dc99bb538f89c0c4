//! The axum adapter over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(feature = "axum")]

mod adapter_suite;

use std::sync::Arc;

use axum::routing::{any, post};
use stripe_webhooks::axum::VerifiedEvent;
use stripe_webhooks::Processor;

/// Serves `app` on an ephemeral port and returns the URL of `/webhooks/stripe`.
async fn spawn(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/webhooks/stripe")
}

async fn serve_route(processor: Arc<Processor>) -> String {
    spawn(stripe_webhooks::axum::router("/webhooks/stripe", processor)).await
}

async fn user_handler(VerifiedEvent(event): VerifiedEvent) -> String {
    event.id().to_string()
}

/// The extractor reads under the router's own body limit, set here as a user would.
async fn serve_extractor(processor: Arc<Processor>) -> String {
    let limit = processor.max_body();
    spawn(
        axum::Router::new()
            .route("/webhooks/stripe", post(user_handler))
            .layer(axum::extract::DefaultBodyLimit::max(limit))
            .with_state(processor),
    )
    .await
}

adapter_tests!(serve_route, serve_extractor);

/// Verification alone: a router whose state is just a `Verifier`.
#[tokio::test]
async fn extractor_needs_only_a_verifier() {
    adapter_suite::extractor_with_only_a_verifier(|verifier| {
        spawn(
            axum::Router::new()
                .route("/webhooks/stripe", post(user_handler))
                .with_state(verifier),
        )
    })
    .await;
}

/// The handler that takes the processor from the state gives the same answers, mounted
/// with `any` as its docs show (other methods included).
#[tokio::test]
async fn webhook_handler_with_state() {
    let serve = |processor| {
        spawn(
            axum::Router::new()
                .route("/webhooks/stripe", any(stripe_webhooks::axum::webhook))
                .with_state(processor),
        )
    };
    let handler = Arc::new(adapter_suite::Counting::default());
    let url = serve(adapter_suite::processor(handler.clone())).await;
    let (header, body) = adapter_suite::signed("evt_state");
    let reply = adapter_suite::post(&url, Some(adapter_suite::JSON), Some(&header), body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, r#"{"status":"processed"}"#);
    assert_eq!(handler.runs(), 1);
    adapter_suite::other_methods_are_405(serve).await;
}

/// The route mounts on a router with its own state.
#[tokio::test]
async fn route_mounts_on_a_stateful_router() {
    #[derive(Clone)]
    struct AppState;
    let handler = Arc::new(adapter_suite::Counting::default());
    let app = axum::Router::new()
        .route(
            "/webhooks/stripe",
            stripe_webhooks::axum::route(adapter_suite::processor(handler.clone())),
        )
        .route(
            "/health",
            axum::routing::get(|_: axum::extract::State<AppState>| async { "ok" }),
        )
        .with_state(AppState);
    let url = spawn(app).await;
    let (header, body) = adapter_suite::signed("evt_mounted");
    let reply = adapter_suite::post(&url, Some(adapter_suite::JSON), Some(&header), body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(handler.runs(), 1);
}

/// A clock that panics: a panic outside the handler, in the verifier.
#[cfg(feature = "tracing")]
#[derive(Debug)]
struct PanickingClock;

#[cfg(feature = "tracing")]
impl stripe_webhooks::Clock for PanickingClock {
    fn now_unix(&self) -> i64 {
        panic!("clock broke near sk_test_abc123")
    }
}

/// Writes what a test's subscriber logs into a shared buffer.
#[cfg(feature = "tracing")]
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(feature = "tracing")]
impl Captured {
    /// A subscriber writing into a new buffer, the default on this thread while the
    /// guard lives.
    fn logs() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Posts `body` to `url`, signed now with `secret`, as Stripe does.
#[cfg(feature = "tracing")]
async fn post_signed(url: &str, secret: &str, body: String) -> reqwest::Response {
    let header =
        stripe_webhooks::testing::sign(body.as_bytes(), secret, stripe_webhooks::testing::now());
    reqwest::Client::new()
        .post(url)
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[cfg(feature = "tracing")]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A delivery whose task panics outside the handler (here the verifier's clock) is
/// answered 500, so that Stripe delivers it again, and the panic is logged, with the
/// credential it quotes hidden.
#[cfg(feature = "tracing")]
#[tokio::test]
async fn a_delivery_that_panics_outside_its_handler_is_a_logged_500() {
    // The test's runtime has one thread: the server, its delivery tasks and the log
    // line all run on it, under this subscriber.
    let (logs, _guard) = Captured::logs();
    let secret = "whsec_panicking_clock";
    let processor = Arc::new(Processor::new(
        stripe_webhooks::Verifier::new(stripe_webhooks::SigningSecret::new(secret).unwrap())
            .with_clock(PanickingClock),
        stripe_webhooks::MemoryStore::new(),
        stripe_webhooks::EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })),
    ));
    let url = serve_route(processor).await;
    let body = stripe_webhooks::testing::event_json("evt_clock", "customer.created", "{}");
    let response = post_signed(&url, secret, body.to_owned()).await;
    assert_eq!(response.status(), 500);
    let logged = logs.text();
    assert!(
        logged.contains("a delivery panicked outside its handler")
            && logged.contains("clock broke"),
        "{logged}"
    );
    assert!(!logged.contains("sk_test_abc123"), "{logged}");
}

/// A signed body that names an event but is not one (no `created`) is answered 400, and
/// its log line names the event, to look it up by.
#[cfg(feature = "tracing")]
#[tokio::test]
async fn a_body_that_is_not_an_event_is_logged_with_its_id() {
    let (logs, _guard) = Captured::logs();
    let secret = "whsec_not_an_event";
    let processor = Arc::new(Processor::new(
        stripe_webhooks::Verifier::new(stripe_webhooks::SigningSecret::new(secret).unwrap()),
        stripe_webhooks::MemoryStore::new(),
        stripe_webhooks::EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })),
    ));
    let url = serve_route(processor).await;
    let body = r#"{"id":"evt_without_created","object":"event","type":"invoice.paid","livemode":false,"data":{"object":{}}}"#;
    let response = post_signed(&url, secret, body.to_owned()).await;
    assert_eq!(response.status(), 400);
    let logged = logs.text();
    assert!(
        logged.contains("not_an_event") && logged.contains("evt_without_created"),
        "{logged}"
    );
}
