//! The crate's public futures are `Send`: services run them on a multi-threaded runtime,
//! in `tokio::spawn` and behind axum or actix handlers. Whether an `async fn`'s future is
//! `Send` follows from its body, so a change inside one could make it not `Send` without
//! any signature changing; this file stops compiling then.

#![allow(missing_docs)]
#![cfg(all(
    feature = "tokio",
    feature = "sqlite",
    feature = "postgres",
    feature = "redis",
    feature = "client",
    feature = "metrics",
    feature = "testing"
))]

use std::time::Duration;

use stripe_webhooks::client::StripeClient;
use stripe_webhooks::queue::{QueueAdmin, Worker};
use stripe_webhooks::reconcile::Reconciler;
use stripe_webhooks::{
    cloud::CloudEvent, Event, EventNotification, PostgresStore, Processor, SqliteStore,
};

fn send<T: Send>(_: T) {}

/// Never run: the check is that it compiles (`cargo test` builds this file, and clippy
/// checks it on all targets).
#[allow(dead_code, clippy::too_many_arguments)]
fn public_futures_are_send(
    processor: &Processor,
    event: &Event,
    notification: &EventNotification,
    cloud: &CloudEvent,
    worker: &Worker,
    reconciler: &Reconciler,
    client: &dyn StripeClient,
    queue: &dyn QueueAdmin,
    sqlite: &SqliteStore,
    postgres: &PostgresStore,
) {
    send(processor.process(Some("t=1,v1=00"), b"{}"));
    send(processor.process_event(event));
    send(processor.process_notification(notification));
    send(processor.process_unsigned(cloud));
    send(processor.drain(Duration::from_secs(1)));
    send(worker.run_once());
    send(reconciler.since_cursor());
    send(reconciler.undelivered());
    send(reconciler.thin_since_cursor());
    send(notification.fetch_related_object(client));
    send(event.refetched(client));
    send(stripe_webhooks::metrics::record_queue(queue));
    send(SqliteStore::connect("stripe-webhooks.db"));
    send(sqlite.migrate());
    send(PostgresStore::connect("postgres://localhost/app"));
    send(postgres.migrate());
}
