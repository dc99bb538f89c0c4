//! A complete Stripe webhook service on actix-web: the same service as `examples/axum.rs`.
//!
//! Run with: `cargo run --example actix --all-features`
//!
//! - `STRIPE_WEBHOOK_SECRET`: one secret or several, comma-separated (rotation); a local
//!   development secret when unset.
//! - The store: the SQLite file `stripe-webhooks.db` (or `SQLITE_PATH`) by default,
//!   PostgreSQL when `DATABASE_URL=postgres://…`, Redis when `REDIS_URL=redis://…`, memory
//!   when `STRIPE_WEBHOOKS_STORE=memory`.
//! - `PORT` (default 4242) on 127.0.0.1; `RUST_LOG` sets the log level.
//!
//! Routes: `POST /webhook` (actix's 256 KiB body limit raised to the processor's 1 MiB) and
//! `GET /healthz`. SIGINT or SIGTERM stops it after in-flight deliveries finish (actix's
//! own graceful shutdown).

mod common;

use std::error::Error;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use stripe_webhooks::Processor;

/// The service's routes. Tests drive it without a socket.
fn app(processor: Arc<Processor>) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(stripe_webhooks::actix::service(
            "/webhook",
            processor.clone(),
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
    let processor = common::processor(&config).await?;
    let routes = app(processor);
    tracing::info!("listening on http://127.0.0.1:{}/webhook", config.port);
    HttpServer::new(move || App::new().configure(routes.clone()))
        .bind(("127.0.0.1", config.port))?
        .shutdown_timeout(30)
        .run()
        .await?;
    Ok(())
}
