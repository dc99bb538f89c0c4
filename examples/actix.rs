//! A complete Stripe webhook service on actix-web: the same service as `examples/axum.rs`.
//!
//! Run with: `cargo run --example actix --features actix-web,sqlite,tracing`
//! (add `postgres` or `redis` to the features for those stores)
//!
//! - `STRIPE_WEBHOOK_SECRET`: one secret or several, comma-separated (rotation); a local
//!   development secret when unset.
//! - The store: the SQLite file `stripe-webhooks.db` (or `SQLITE_PATH`) by default,
//!   PostgreSQL when `DATABASE_URL=postgres://…`, Redis when `REDIS_URL=redis://…`, memory
//!   when `STRIPE_WEBHOOKS_STORE=memory`.
//! - `PORT` (default 4242) on 127.0.0.1; `RUST_LOG` sets the log level.
//!
//! - `STRIPE_THIN_WEBHOOK_SECRET`: the thin event destination's secret(s);
//!   `--print-enabled-events` prints both destinations' `enabled_events` and exits.
//!
//! Routes: `POST /webhook` (actix's 256 KiB body limit raised to the processor's 1 MiB),
//! `POST /webhook/thin` (thin events) and `GET /healthz`. SIGINT or SIGTERM stops it
//! gracefully (actix's own handlers would take SIGINT as a forced shutdown). actix drops its workers' runtimes before `run`
//! returns, so a delivery still running after its client left is cut there, and
//! `Processor::drain` can only report it (Stripe's retry runs it again).

mod common;

use std::error::Error;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use stripe_webhooks::Processor;

/// The service's routes. The tests below drive them without a socket.
fn app(
    processor: Arc<Processor>,
    thin: Arc<Processor>,
) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(stripe_webhooks::actix::service(
            "/webhook",
            processor.clone(),
        ))
        .service(stripe_webhooks::actix::service(
            "/webhook/thin",
            thin.clone(),
        ))
        .route(
            "/healthz",
            web::get().to(|| async { HttpResponse::Ok().body("ok") }),
        );
    }
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn Error>> {
    common::init_logging();
    let config = common::Config::from_env()?;
    let processors = common::processor(&config).await?;
    if common::print_enabled_events(&processors) {
        return Ok(());
    }
    let routes = app(
        Arc::clone(&processors.snapshot),
        Arc::clone(&processors.thin),
    );
    tracing::info!(
        "listening on http://127.0.0.1:{}/webhook (and /webhook/thin)",
        config.port
    );
    // Our own signal future: actix's own handlers take SIGINT (Ctrl-C, or a supervisor
    // that sends it) as a forced shutdown, which cuts deliveries mid-handler.
    HttpServer::new(move || App::new().configure(routes.clone()))
        .shutdown_signal(common::shutdown_signal())
        .bind(("127.0.0.1", config.port))?
        .shutdown_timeout(30)
        .run()
        .await?;
    // actix waited for its connections; a delivery whose client left is on a task of
    // its own.
    processors.drain().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use actix_web::test::{call_service, init_service, read_body, TestRequest};

    use super::*;

    #[actix_web::test]
    async fn the_service_answers_without_a_socket() {
        let (processor, header, body) = common::test_delivery();
        let service =
            init_service(App::new().configure(app(processor, common::test_thin_processor()))).await;
        let post = || {
            TestRequest::post()
                .uri("/webhook")
                .insert_header(("content-type", "application/json"))
                .insert_header(("stripe-signature", header.as_str()))
                .set_payload(body.clone())
                .to_request()
        };
        let first = call_service(&service, post()).await;
        assert_eq!(first.status(), 200);
        assert_eq!(&read_body(first).await[..], br#"{"status":"processed"}"#);
        let again = call_service(&service, post()).await;
        assert_eq!(&read_body(again).await[..], br#"{"status":"duplicate"}"#);
        let health = call_service(&service, TestRequest::get().uri("/healthz").to_request()).await;
        assert_eq!(health.status(), 200);
    }
}
