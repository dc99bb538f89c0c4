//! TLS to the stores' servers (features `postgres-tls` and `redis-tls`), against the
//! servers `scripts/services.sh` starts with a self-signed certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(feature = "postgres-tls", feature = "redis-tls"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use stripe_webhooks::redis;
use stripe_webhooks::testing::store_conformance;
use stripe_webhooks::{Claim, EventId, EventType, IdempotencyStore, PostgresStore, RedisStore};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the servers with `eval \"$(scripts/services.sh start)\"` or run `scripts/test.sh`")
    })
}

/// `sslmode=require` connects (it could not at all without the feature), and the
/// session really is encrypted.
#[tokio::test]
async fn postgres_store_connects_with_sslmode_require() {
    let url = format!("{}?sslmode=require", env("DATABASE_URL_TEST"));
    let store = PostgresStore::connect(&url).await.unwrap();
    let ssl: bool = stripe_webhooks::sqlx::query_scalar(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(ssl, "the connection is not encrypted");
    let store = store.with_table(&common::unique("t_tls")).unwrap();
    store.migrate().await.unwrap();
    store_conformance::first_claim_acquires(&store).await;
    store_conformance::concurrent_claims_acquire_once(Arc::new(store), 10).await;
}

/// A `rediss://` URL connects, verifying the server's certificate, and the store works
/// over it.
#[tokio::test]
async fn redis_store_works_over_rediss() {
    let root_cert = std::fs::read(env("TLS_CA_TEST")).unwrap();
    let client = redis::Client::build_with_tls(
        env("REDIS_TLS_URL_TEST"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )
    .unwrap();
    let conn = tokio::time::timeout(
        Duration::from_secs(30),
        redis::aio::ConnectionManager::new(client),
    )
    .await
    .expect("connecting over TLS took over 30 s")
    .unwrap();
    let store = RedisStore::new(conn)
        .with_prefix(&common::unique("t_tls"))
        .unwrap();
    let id = EventId::new("evt_tls");
    let lease = Duration::from_secs(30);
    let Claim::Acquired(token) = store
        .claim(&id, &EventType::InvoicePaid, lease)
        .await
        .unwrap()
    else {
        panic!("first claim")
    };
    store.complete(&token).await.unwrap();
    assert_eq!(
        store
            .claim(&id, &EventType::InvoicePaid, lease)
            .await
            .unwrap(),
        Claim::Completed
    );
}
