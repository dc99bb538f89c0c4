//! The actix-web adapter over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(feature = "actix-web")]

mod adapter_suite;

use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use stripe_webhooks::actix::VerifiedEvent;
use stripe_webhooks::Processor;

/// Serves the app built by `factory` on an ephemeral port and returns the URL of
/// `/webhooks/stripe`.
fn spawn<F>(factory: F) -> String
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let server = HttpServer::new(move || App::new().configure(factory.clone()))
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
    let addr = server.addrs()[0];
    tokio::spawn(server.run());
    format!("http://{addr}/webhooks/stripe")
}

async fn serve_route(processor: Arc<Processor>) -> String {
    spawn(move |cfg| {
        cfg.service(stripe_webhooks::actix::service(
            "/webhooks/stripe",
            Arc::clone(&processor),
        ));
    })
}

async fn user_handler(VerifiedEvent(event): VerifiedEvent) -> String {
    event.id().to_string()
}

async fn serve_extractor(processor: Arc<Processor>) -> String {
    spawn(move |cfg| {
        cfg.app_data(web::Data::from(Arc::clone(&processor)))
            .app_data(web::PayloadConfig::new(processor.max_body()))
            .route("/webhooks/stripe", web::post().to(user_handler));
    })
}

adapter_tests!(serve_route, serve_extractor);

/// Without a verifier in the app data, the extractor answers 500 and says why.
#[tokio::test]
async fn extractor_without_verifier_is_500() {
    let url = spawn(|cfg| {
        cfg.route("/webhooks/stripe", web::post().to(user_handler));
    });
    let (header, body) = adapter_suite::signed("evt_unconfigured");
    let reply = adapter_suite::post(&url, Some(adapter_suite::JSON), Some(&header), body).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body, r#"{"error":"verifier_not_configured"}"#);
}

/// Verification alone: the extractor needs a `web::Data<Verifier>`, no store and no
/// handler.
#[tokio::test]
async fn extractor_needs_only_a_verifier() {
    adapter_suite::extractor_with_only_a_verifier(|verifier| async move {
        let verifier = web::Data::new(verifier);
        spawn(move |cfg| {
            cfg.app_data(verifier.clone())
                .route("/webhooks/stripe", web::post().to(user_handler));
        })
    })
    .await;
}

/// The resource mounts inside a scope.
#[tokio::test]
async fn service_mounts_in_a_scope() {
    let handler = Arc::new(adapter_suite::Counting::default());
    let processor = adapter_suite::processor(handler.clone());
    let url = spawn(move |cfg| {
        cfg.service(
            web::scope("/webhooks").service(stripe_webhooks::actix::service(
                "/stripe",
                Arc::clone(&processor),
            )),
        );
    });
    let (header, body) = adapter_suite::signed("evt_scoped");
    let reply = adapter_suite::post(&url, Some(adapter_suite::JSON), Some(&header), body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(handler.runs(), 1);
}
