//! The axum adapter over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(feature = "axum")]

mod adapter_suite;

use std::sync::Arc;

use axum::routing::post;
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

/// The handler that takes the processor from the state gives the same answers.
#[tokio::test]
async fn webhook_handler_with_state() {
    let handler = Arc::new(adapter_suite::Counting::default());
    let processor = adapter_suite::processor(handler.clone());
    let url = spawn(
        axum::Router::new()
            .route("/webhooks/stripe", post(stripe_webhooks::axum::webhook))
            .with_state(processor),
    )
    .await;
    let (header, body) = adapter_suite::signed("evt_state");
    let reply = adapter_suite::post(&url, Some(adapter_suite::JSON), Some(&header), body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, r#"{"status":"processed"}"#);
    assert_eq!(handler.runs(), 1);
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
