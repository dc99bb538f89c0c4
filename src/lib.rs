//! Receive Stripe webhooks correctly: verify every request's `Stripe-Signature`, turn the
//! body into a typed [`Event`], and run your [`EventHandler`] exactly once per event,
//! although Stripe delivers at least once, retries for three days, sends events out of
//! order and may deliver one event to several replicas at the same moment.
//!
//! # Quick start
//!
//! Implement [`EventHandler`] (or build a [`Router`] of closures), pick an
//! [`IdempotencyStore`], and hand every request to a shared [`Processor`]. Its
//! [`Outcome::status`] is the HTTP status to answer with.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use stripe_webhooks::{async_trait, testing, Event, EventHandler, HandlerError, MemoryStore, Processor, Verifier};
//!
//! struct Billing;
//!
//! #[async_trait]
//! impl EventHandler for Billing {
//!     async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
//!         match event {
//!             Event::CheckoutSessionCompleted(session) => println!("provision {}", session.id),
//!             Event::InvoicePaymentFailed(invoice) => println!("dunning {:?}", invoice.id),
//!             _ => {}
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // STRIPE_WEBHOOK_SECRET may hold several comma-separated secrets during a rotation.
//! let secrets = std::env::var("STRIPE_WEBHOOK_SECRET").unwrap_or_else(|_| "whsec_test".into());
//! let processor = Processor::new(Verifier::from_secrets_list(&secrets)?, MemoryStore::new(), Billing);
//!
//! // In your web framework's POST handler: the raw body and the header. (Here Stripe's
//! // part is played by `testing::sign`, with the newest secret of the list.)
//! let body = testing::event_for_type("evt_1", "checkout.session.completed").unwrap();
//! let newest = secrets.rsplit(',').next().unwrap_or_default().trim();
//! let header = testing::sign(body.as_bytes(), newest, testing::now());
//! let outcome = processor.process(Some(&header), body.as_bytes()).await;
//! assert_eq!(outcome.status(), 200);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Verifying without a framework or a store
//!
//! ```
//! use stripe_webhooks::{testing, verify_signature, Event};
//!
//! let body = testing::event_for_type("evt_1", "invoice.payment_failed").unwrap();
//! let header = testing::sign(body.as_bytes(), "whsec_test", testing::now());
//! let verified = verify_signature(body.as_bytes(), &header, "whsec_test")?;
//! match verified.parse()? {
//!     Event::InvoicePaymentFailed(invoice) => println!("{:?}", invoice.subscription_id()),
//!     other => println!("{}", other.event_type()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Stores
//!
//! | Store | Feature | Persistence | Claim primitive |
//! |---|---|---|---|
//! | [`MemoryStore`] | always | none: one process, forgotten on restart | one map operation under a mutex |
//! | `SqliteStore` | `sqlite` | a file (WAL); several processes on one host | `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING` |
//! | `PostgresStore` | `postgres` | shared by every replica | `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING` |
//! | `RedisStore` | `redis` | shared; needs `noeviction` and AOF | one Lua script per operation |
//!
//! Every store runs the same conformance suite (`testing::store_conformance`). Leases are
//! judged by the store's clock, so a crashed replica's claim is taken over once its lease
//! ends. The SQL stores also offer an inbox mode (`SqliteStore::inbox`,
//! `PostgresStore::inbox`): the handler receives the claim's transaction, so its writes
//! and the completion mark commit together.
//!
//! Schedule `purge_expired()` (for example hourly, from one replica) to delete records
//! past their retention (30 days by default); it works in bounded batches and never
//! touches a record under lease.
//!
//! # Features
//!
//! | Feature | Enables | Default |
//! |---|---|---|
//! | `sqlite` | `SqliteStore` and its inbox mode (sqlx) | no |
//! | `postgres` | `PostgresStore` and its inbox mode (sqlx) | no |
//! | `redis` | `RedisStore` (redis, connection manager) | no |
//! | `axum` | `axum`: a ready route and a `VerifiedEvent` extractor | no |
//! | `actix-web` | `actix`: a ready service and a `VerifiedEvent` extractor | no |
//! | `tokio` | handler deadlines and store timeouts on the tokio runtime | no |
//! | `tracing` | one span per delivery, with event id, type, attempt and outcome | no |
//! | `testing` | [`testing`]: signer, event builder, store conformance suite | no |
//!
//! With no features the crate needs no async runtime: verification, the event model, the
//! handler trait, the memory store and the processor all build on their own.
//!
//! # Security
//!
//! - Signatures are HMAC-SHA256 over `{t}.{body}`, compared in constant time
//!   (`subtle`) as full 32-byte values: a prefix or an empty `v1=` never matches.
//! - Timestamps are checked symmetrically (±300 s) by default; replays and far-future
//!   timestamps are refused. [`Tolerance::DangerouslyUnchecked`] turns the check off and
//!   is named to stand out in review.
//! - No secret or expected signature appears in any error, `Debug` output or log line.
//! - Headers over 8 KiB or with more than 32 entries are refused before any work, and
//!   bodies over 1 MiB are refused by the processor.
//!
//! # Minimum supported Rust version
//!
//! The MSRV is the `rust-version` in `Cargo.toml`.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "axum", feature = "actix-web"))]
mod adapters;
mod error;
mod event;
mod handler;
mod idempotency;
mod processor;
mod secret;
mod signature;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
pub use adapters::actix;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use adapters::axum;
pub use async_trait::async_trait;
pub use error::Error;
pub use event::*;
pub use handler::{BoxFuture, EventHandler, HandlerError, Router};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use idempotency::RedisStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use idempotency::TransactionalHandler;
pub use idempotency::{
    new_fence, truncate_error, Claim, ClaimToken, EventRecord, IdempotencyStore, MemoryStore,
    RecordStatus, StoreError, DEFAULT_MEMORY_CAPACITY, DEFAULT_RETENTION, DEFAULT_TABLE,
    MAX_ERROR_LEN,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use idempotency::{PostgresInbox, PostgresStore, POSTGRES_MIGRATION};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use idempotency::{SqliteInbox, SqliteStore, SQLITE_MIGRATION};
pub use processor::{
    run_handler, store_call, DispatchSettings, Dispatched, Dispatcher, Outcome, OutcomeKind,
    Processor, StoreDispatcher, DEFAULT_HANDLER_DEADLINE, DEFAULT_LEASE, DEFAULT_MAX_BODY,
    DEFAULT_STORE_TIMEOUT,
};
pub use secret::{SecretError, SigningSecret};
pub use signature::{
    verify_signature, Clock, FixedClock, MalformedHeader, ManualClock, MatchedSecret, MismatchHint,
    SignatureError, SystemClock, Tolerance, VerifiedPayload, Verifier, DEFAULT_TOLERANCE,
    MAX_HEADER_ENTRIES, MAX_HEADER_LEN,
};
/// Re-export of the `sqlx` the SQL stores are built on, so applications use the same
/// version for their pools and inbox handlers.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sqlx;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Escape hatches that skip verification. Everything here is unsafe in the security sense.
pub mod dangerous {
    use crate::event::{Event, ParseError};

    /// Parses a body **without verifying its signature**. Only for bodies you verified
    /// before and stored, or for tests; never for a request.
    ///
    /// # Errors
    ///
    /// As [`Event::from_slice`].
    pub fn parse_unverified(body: &[u8]) -> Result<Event, ParseError> {
        Event::from_slice(body)
    }
}
