//! A complete Stripe webhook service on axum.
//!
//! Run with: `cargo run --example axum --features axum,sqlite,tracing`
//! (add `postgres` or `redis` to the features for those stores)
//!
//! - `STRIPE_WEBHOOK_SECRET`: one secret or several, comma-separated (rotation); a local
//!   development secret when unset.
//! - The store: the SQLite file `stripe-webhooks.db` (or `SQLITE_PATH`) by default,
//!   PostgreSQL when `DATABASE_URL=postgres://…`, Redis when `REDIS_URL=redis://…`, memory
//!   when `STRIPE_WEBHOOKS_STORE=memory`; naming more than one is refused.
//! - `PORT` (default 4242) on 127.0.0.1; `RUST_LOG` sets the log level.
//!
//! - `STRIPE_THIN_WEBHOOK_SECRET`: the thin event destination's secret(s). With
//!   `STRIPE_WEBHOOK_SECRET` set and this one not, `/webhook/thin` refuses every request
//!   (the development secret is public); with neither set, both use development secrets.
//! - `--print-enabled-events`: prints the `enabled_events` both Stripe destinations need
//!   for the handlers below, as JSON, and exits.
//!
//! Routes: `POST /webhook` (snapshot events), `POST /webhook/thin` (thin events),
//! `GET /healthz`, and `GET /metrics` (Prometheus) with the `metrics` feature. The two routes share one store and one dedupe key (a thin event is
//! claimed under its `snapshot_event`), so a change delivered to both runs once, on
//! whichever route it reaches first: a real thin handler therefore fetches the object
//! and does the same work as the snapshot one (the demo's only logs what it would fetch). The demo handler provisions access on
//! `checkout.session.completed`, records a notice on `invoice.payment_failed` and revokes
//! access on `customer.subscription.deleted`, in an `access` table written in the same
//! transaction as the event's completion mark (SQLite and PostgreSQL). SIGINT or SIGTERM
//! stops it after in-flight deliveries finish.

mod common;

use std::error::Error;
use std::sync::Arc;

use axum::routing::get;
use stripe_webhooks::Processor;

/// The service: the two webhook routes and a health check. The tests below drive it
/// without a socket.
fn app(processor: Arc<Processor>, thin: Arc<Processor>) -> axum::Router {
    stripe_webhooks::axum::router("/webhook", processor)
        .merge(stripe_webhooks::axum::router("/webhook/thin", thin))
        .route("/healthz", get(|| async { "ok" }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    common::init_logging();
    let config = common::Config::from_env()?;
    let processors = common::processor(&config).await?;
    if common::print_enabled_events(&processors) {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    tracing::info!(
        "listening on http://{}/webhook (and /webhook/thin)",
        listener.local_addr()?
    );
    // `GET /metrics` (Prometheus) when built with the `metrics` feature.
    let app = common::with_metrics(
        app(
            Arc::clone(&processors.snapshot),
            Arc::clone(&processors.thin),
        ),
        None,
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(common::shutdown_signal())
        .await?;
    // The server waited for its connections; a delivery whose client left is on a task
    // of its own.
    processors.drain().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn the_service_answers_without_a_socket() {
        let (processor, header, body) = common::test_delivery();
        let thin = common::test_thin_processor();
        let app = |p: Arc<Processor>| super::app(p, thin.clone());
        let post = || {
            Request::post("/webhook")
                .header("content-type", "application/json")
                .header("stripe-signature", &header)
                .body(Body::from(body.clone()))
                .unwrap()
        };
        let first = app(processor.clone()).oneshot(post()).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(first.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], br#"{"status":"processed"}"#);
        let again = app(processor.clone()).oneshot(post()).await.unwrap();
        let bytes = axum::body::to_bytes(again.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], br#"{"status":"duplicate"}"#);
        let health = Request::get("/healthz").body(Body::empty()).unwrap();
        let health = app(processor).oneshot(health).await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_thin_route_takes_thin_events_with_its_own_secret() {
        let (processor, _, _) = common::test_delivery();
        let app = super::app(processor, common::test_thin_processor());
        let body =
            stripe_webhooks::testing::ThinEventBuilder::new("evt_thin", "v1.customer.created")
                .related("cus_1", "customer", "/v1/customers/cus_1")
                .build();
        let post = |secret: &str| {
            let header = stripe_webhooks::testing::sign(
                body.as_bytes(),
                secret,
                stripe_webhooks::testing::now(),
            );
            Request::post("/webhook/thin")
                .header("content-type", "application/json")
                .header("stripe-signature", header)
                .body(Body::from(body.clone()))
                .unwrap()
        };
        let wrong = app.clone().oneshot(post(common::DEV_SECRET)).await.unwrap();
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
        let ok = app.oneshot(post(common::DEV_THIN_SECRET)).await.unwrap();
        let bytes = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], br#"{"status":"processed"}"#);
    }
}
