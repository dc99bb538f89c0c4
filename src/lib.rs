//! Receive Stripe webhooks correctly: verify every request's `Stripe-Signature`, turn the
//! body into a typed [`Event`], and run your [`EventHandler`] exactly once per event,
//! although Stripe delivers at least once, retries for three days, sends events out of
//! order and may deliver one event to several replicas at the same moment.
//!
//! # Quick start: axum and SQLite
//!
//! `stripe-webhooks = { version = "0.1", features = ["axum", "sqlite"] }` (with `axum =
//! "0.8"` and `tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }`
//! for the server), then implement [`EventHandler`], build one [`Processor`] and mount its
//! route:
//!
#![cfg_attr(
    all(feature = "axum", feature = "sqlite"),
    doc = r#"
```no_run
use std::sync::Arc;
use stripe_webhooks::{async_trait, Event, EventHandler, EventType, HandlerError, Processor, SqliteStore, Verifier};

struct Billing;

#[async_trait]
impl EventHandler for Billing {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        match event {
            Event::CheckoutSessionCompleted(session) => println!("provision {}", session.id),
            Event::InvoicePaymentFailed(invoice) => println!("dunning {:?}", invoice.id),
            // One of these types whose object this release could not read (Stripe
            // changed its shape): fail, so it is recorded and comes back.
            Event::Unparsed(e) => return Err(HandlerError::new(e.error().to_string())),
            _ => {}
        }
        Ok(()) // an error answers 500, and Stripe delivers the event again
    }

    // The types it takes: any other is answered 200 `ignored`, nothing claimed.
    fn handles(&self, t: &EventType) -> bool {
        matches!(t, EventType::CheckoutSessionCompleted | EventType::InvoicePaymentFailed)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Several comma-separated secrets are accepted while you roll them.
    let verifier = Verifier::from_secrets_list(&std::env::var("STRIPE_WEBHOOK_SECRET")?)?;
    let store = SqliteStore::connect("stripe-webhooks.db").await?; // creates and migrates
    let processor = Arc::new(Processor::new(verifier, store, Billing));

    let app = axum::Router::new().route("/webhooks/stripe", stripe_webhooks::axum::route(processor));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4242").await?;
    // In production, stop on SIGTERM too and drain the processor: see the README's
    // quick start (`with_graceful_shutdown`, `Processor::drain`).
    axum::serve(listener, app).await?;
    Ok(())
}
```
"#
)]
//!
//! With any other framework, hand [`Processor::process`] the `Stripe-Signature` header
//! and the raw body, and answer with [`Outcome::status`]. To verify without a store,
//! [`verify_signature`] or a [`Verifier`] gives a [`VerifiedPayload`] to parse:
//!
//! ```
//! use stripe_webhooks::{testing, verify_signature, Event};
//!
//! let body = testing::event_for_type("evt_1", "invoice.payment_failed").unwrap();
//! let header = testing::sign(body.as_bytes(), "whsec_test", testing::now());
//! match verify_signature(body.as_bytes(), &header, "whsec_test")?.parse()? {
//!     Event::InvoicePaymentFailed(invoice) => println!("{:?}", invoice.subscription_id()),
//!     other => println!("{}", other.event_type()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Talking back to Stripe
//!
//! [`client::StripeClient`] retrieves and lists events and fetches the objects thin
//! events point at; `client::HttpClient` (feature `client`) implements it with retries,
//! a deadline, a concurrency cap and a rate limit, and `testing::FakeStripe` stands in
//! for the API in tests. [`client::FetchLatest`] wraps a handler so that, for the types
//! you choose, it acts on the object as it is now rather than on the event's snapshot.
//!
//! # Stores
//!
//! | Store | Feature | Persistence | Claim primitive |
//! |---|---|---|---|
//! | [`MemoryStore`] | always | one process, bounded, forgotten on restart | one map operation under a mutex |
//! | `SqliteStore` | `sqlite` | a file (WAL); several processes on one host | `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING` |
//! | `PostgresStore` | `postgres` | shared by every replica | the same statement |
//! | `RedisStore` | `redis` | shared; needs `noeviction` and AOF | one Lua script per operation |
//!
//! The SQL stores also run an inbox mode ([`Processor::with_inbox`]): the handler's
//! writes and the completion mark commit in one transaction. Every store passes
//! `testing::store_conformance`; so can yours (see [`IdempotencyStore`]).
//!
//! # Features
//!
//! | Feature | Enables |
//! |---|---|
//! | `sqlite`, `postgres`, `redis` | the stores (sqlx, redis), and `sqlx` / `redis` re-exported |
//! | `postgres-tls`, `redis-tls` | TLS to the server (rustls): `sslmode=verify-full`, `rediss://` |
//! | `axum`, `actix-web` | the [`axum`] and [`actix`] adapters: a route and a `VerifiedEvent` extractor |
//! | `console` | `console::Console`, the web console over a queue (on axum) |
//! | `tokio` | handler deadlines, store timeouts, lease renewal (on with every store and adapter) |
//! | `tracing` | one span per delivery |
//! | `metrics` | `stripe_webhooks::metrics`: counters, histograms and gauges through the `metrics` facade |
//! | `client` | `client::HttpClient`, the Stripe API client (reqwest, rustls) |
//! | `testing` | the test kit: signer, fixtures, store conformance, a fake Stripe API |
//! | `cli` | the `stripe-webhooks` command-line tool: status, dead jobs, requeue, purge, migrate, send |
//!
//! None is on by default: the core builds without an async runtime.
//!
//! # Security
//!
//! - Signatures are HMAC-SHA256, compared in constant time as full 32-byte values;
//!   timestamps must be within ±300 s ([`Tolerance`]).
//! - No secret or expected signature appears in any error, `Debug` output or log line.
//! - A `Stripe-Signature` header over 8 KiB or 32 entries, and bodies over 1 MiB, are
//!   refused before any work; the adapters give a body 10 s to arrive.
//! - Parsing without verification is [`dangerous::parse_unverified`], named to stand out;
//!   and [`cloud`], for events a cloud event bus delivered, which carry no signature:
//!   authenticate such a delivery (its platform's credential) before parsing it.
//!
//! The MSRV is the `rust-version` in `Cargo.toml`.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "axum", feature = "actix-web"))]
mod adapters;
pub mod client;
mod clock;
pub mod cloud;
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
pub mod console;
mod display;
mod error;
mod event;
mod handler;
mod idempotency;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod inbox;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod objects;
mod processor;
pub mod queue;
pub mod reconcile;
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
pub use clock::{Clock, FixedClock, ManualClock, SteadyClock, SystemClock};
pub use error::Error;
pub use event::{
    Envelope, Event, EventId, EventNotification, EventRequest, EventType, ObjectError, ParseError,
    RelatedObject, ThinEventType, TypedEvent, UnknownEvent, UnparsedEvent,
};
pub use handler::{
    AccountFilter, EventHandler, EventRouter, HandlerError, ThinEventHandler, ThinEventRouter,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use idempotency::Migration;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use idempotency::DEFAULT_TABLE;
pub use idempotency::{
    Claim, ClaimToken, EventRecord, IdempotencyStore, LockedClaim, MemoryStore, ObjectLock,
    OrderingStore, RecordStatus, StoreAdmin, StoreError, UnknownStatus, Watermark, ABANDONED_AFTER,
    ABANDONED_ERROR, DEFAULT_MAX_RECORDS, DEFAULT_RETENTION, MAX_ERROR_LEN,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use idempotency::{PostgresStore, POSTGRES_MIGRATION};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use idempotency::{RedisServerSettings, RedisStore};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use idempotency::{SqliteStore, SQLITE_MIGRATION};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use inbox::PostgresInbox;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use inbox::SqliteInbox;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use inbox::TransactionalHandler;
pub use processor::{
    EnabledEvents, Inbox, Outcome, OutcomeKind, Processor, TiePolicy, DEFAULT_BODY_TIMEOUT,
    DEFAULT_HANDLER_DEADLINE, DEFAULT_LEASE, DEFAULT_MAX_BODY, DEFAULT_STORE_TIMEOUT,
    MAX_STORE_TIMEOUT,
};
/// Re-export of the `redis` crate the Redis store is built on, so applications build
/// their client and connection manager with the same version.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis;
/// Re-export of the `reqwest` the API client is built on, so that an application that
/// builds its own client for [`HttpClient::with_reqwest`](client::HttpClient::with_reqwest)
/// uses the same version.
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use reqwest;
pub use secret::{SecretError, SigningSecret};
pub use signature::{
    verify_signature, MalformedHeader, MatchedSecret, MismatchHint, SignatureError, Tolerance,
    VerifiedPayload, Verifier, DEFAULT_TOLERANCE, MAX_HEADER_ENTRIES, MAX_HEADER_LEN,
};
/// Re-export of the `sqlx` the SQL stores are built on, so applications use the same
/// version for their pools and inbox handlers.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sqlx;

/// What the `stripe-webhooks` binary (feature `cli`) shares with the crate's own
/// formatting, so the tool and the console print times alike. Not a public API: it may
/// change in any release.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod __cli {
    /// `ms` (Unix milliseconds) as `2025-01-31 23:59:59 UTC`.
    pub fn utc(ms: i64) -> String {
        crate::display::utc(ms)
    }

    /// Valid JSON `text` without the whitespace between its tokens.
    pub fn compact_json(text: &str) -> String {
        crate::display::compact_json(text)
    }

    /// A Stripe body as the console shows it: as written, or, when it holds a client
    /// secret, an OAuth code, a bearer URL or a card number, with each as
    /// `"<redacted>"` (the members then in key order).
    pub fn redact_body(json: &str) -> std::borrow::Cow<'_, str> {
        crate::secret::debug_json(json)
    }

    /// An error text with API keys, webhook secrets and client secrets in it redacted.
    pub fn redact_error(text: &str) -> std::borrow::Cow<'_, str> {
        crate::secret::redact_text(text)
    }
}

/// The README's examples, compiled as doctests (the quick start needs its features).
#[cfg(all(doctest, feature = "axum", feature = "sqlite"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The parts of a thin event notification ([`EventNotification`]): its reason, its
/// changes, and the typed `data` of the types that carry one.
pub mod thin {
    pub use crate::event::{
        AccountLinkReturned, AccountPersonData, CapabilityStatusUpdated, EventChanges, EventReason,
        InvoiceUpcoming, MeterErrorReason, MeterErrorReport, MeterErrorType, MeterSampleError,
        MeterSampleRequest, ReasonRequest, ThinEventData,
    };
}

/// Escape hatches that skip verification. Everything here is unsafe in the security sense.
pub mod dangerous {
    use crate::event::{Event, EventNotification, ParseError};

    /// Parses a snapshot event body **without verifying its signature**. Only for bodies
    /// you verified before and stored, or for tests; never for a request (use
    /// [`VerifiedPayload::parse`](crate::VerifiedPayload::parse)).
    ///
    /// # Errors
    ///
    /// - [`ParseError::InvalidJson`] if the body is not JSON;
    /// - [`ParseError::NotAnEvent`] if it has no `id`, `type`, `created` or
    ///   `data.object`, or its `object` is not `"event"`;
    /// - [`ParseError::ThinEventNotification`] for a v2 thin event.
    pub fn parse_unverified(body: &[u8]) -> Result<Event, ParseError> {
        Event::from_slice(body)
    }

    /// Parses a thin event notification **without verifying its signature**; as
    /// [`parse_unverified`], only for bodies verified before.
    ///
    /// # Errors
    ///
    /// - [`ParseError::SnapshotEvent`] if the body is a v1 snapshot event;
    /// - [`ParseError::InvalidJson`] or [`ParseError::NotAnEvent`] otherwise.
    pub fn parse_unverified_notification(body: &[u8]) -> Result<EventNotification, ParseError> {
        EventNotification::from_slice(body)
    }
}
