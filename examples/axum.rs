//! A complete Stripe webhook service on axum.
//!
//! Run with: `cargo run --example axum --features axum,sqlite,tracing`
//! (add `postgres` or `redis` to the features for those stores)
//!
//! - `STRIPE_WEBHOOK_SECRET`: one secret or several, comma-separated (rotation); a local
//!   development secret when unset.
//! - The store: the SQLite file `stripe-webhooks.db` (or `SQLITE_PATH`) by default,
//!   PostgreSQL when `DATABASE_URL=postgres://…`, Redis when `REDIS_URL=redis://…`, memory
//!   when `STRIPE_WEBHOOKS_STORE=memory`.
//! - `PORT` (default 4242) on 127.0.0.1; `RUST_LOG` sets the log level.
//!
//! Routes: `POST /webhook` and `GET /healthz`. The demo handler provisions access on
//! `checkout.session.completed`, records a notice on `invoice.payment_failed` and revokes
//! access on `customer.subscription.deleted`, in an `access` table written in the same
//! transaction as the event's completion mark (SQLite and PostgreSQL). SIGINT or SIGTERM
//! stops it after in-flight deliveries finish.

mod common;

use std::error::Error;
use std::sync::Arc;

use axum::routing::get;
use stripe_webhooks::Processor;

/// The service: the webhook route and a health check. The tests below drive it without a
/// socket.
fn app(processor: Arc<Processor>) -> axum::Router {
    stripe_webhooks::axum::router("/webhook", processor).route("/healthz", get(|| async { "ok" }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    common::init_logging();
    let config = common::Config::from_env()?;
    let processor = common::processor(&config).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    tracing::info!("listening on http://{}/webhook", listener.local_addr()?);
    axum::serve(listener, app(processor))
        .with_graceful_shutdown(common::shutdown_signal())
        .await?;
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
}
