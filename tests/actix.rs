//! The actix-web adapter over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(feature = "actix-web")]

mod adapter_suite;

use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use stripe_webhooks::actix::VerifiedEvent;
use stripe_webhooks::{Processor, SigningSecret, Verifier};

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

/// The extractor reads up to Stripe's largest bodies without the app setting a
/// `PayloadConfig` (actix-web's own default, 256 KiB, is below them): up to the
/// processor's `max_body` when the app has one, else 1 MiB; 413 past it. An app's own
/// `PayloadConfig` is followed.
#[tokio::test]
async fn the_extractor_takes_large_events_without_a_payload_config() {
    /// Posts to `url` a signed event whose body is padded past `pad` bytes.
    async fn post_large(url: &str, id: &str, pad: usize) -> adapter_suite::Reply {
        use stripe_webhooks::testing;
        let body = testing::event_for_type(id, "invoice.paid").unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["object"]["metadata"] = serde_json::json!({ "note": "x".repeat(pad) });
        let body = v.to_string();
        let header = testing::sign(body.as_bytes(), adapter_suite::SECRET, testing::now());
        adapter_suite::post(url, Some(adapter_suite::JSON), Some(&header), body).await
    }
    let verifier = web::Data::new(Verifier::new(
        SigningSecret::new(adapter_suite::SECRET).unwrap(),
    ));
    let only_verifier = {
        let verifier = verifier.clone();
        spawn(move |cfg| {
            cfg.app_data(verifier.clone())
                .route("/webhooks/stripe", web::post().to(user_handler));
        })
    };
    let reply = post_large(&only_verifier, "evt_large_300k", 300 * 1024).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "evt_large_300k");
    let reply = post_large(&only_verifier, "evt_large_2m", 2 * 1024 * 1024).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    // The processor's own limit, when the app has one.
    let processor = Arc::new(
        Processor::new(
            Verifier::new(SigningSecret::new(adapter_suite::SECRET).unwrap()),
            stripe_webhooks::MemoryStore::new(),
            Arc::new(adapter_suite::Counting::default()),
        )
        .with_max_body(128 * 1024),
    );
    let with_processor = spawn(move |cfg| {
        cfg.app_data(web::Data::from(Arc::clone(&processor)))
            .route("/webhooks/stripe", web::post().to(user_handler));
    });
    let reply = post_large(&with_processor, "evt_large_200k", 200 * 1024).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    // An app's own `PayloadConfig` is followed.
    let configured = spawn(move |cfg| {
        cfg.app_data(verifier.clone())
            .app_data(web::PayloadConfig::new(64 * 1024))
            .route("/webhooks/stripe", web::post().to(user_handler));
    });
    let reply = post_large(&configured, "evt_large_100k", 100 * 1024).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
}
