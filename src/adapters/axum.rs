//! The axum adapter (feature `axum`): a ready route that hands each request to a shared
//! [`Processor`] and answers with its [`Outcome`], and a [`VerifiedEvent`] extractor for
//! handlers of your own.
//!
//! ```no_run
//! use std::sync::Arc;
//! use stripe_webhooks::{EventRouter, MemoryStore, Processor, Verifier};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Several comma-separated secrets are accepted during a rotation.
//!     let secrets = std::env::var("STRIPE_WEBHOOK_SECRET")?;
//!     let handler = EventRouter::new().fallback(|event| {
//!         Box::pin(async move {
//!             println!("{} {}", event.event_type(), event.id());
//!             Ok(())
//!         })
//!     });
//!     let processor = Arc::new(Processor::new(
//!         Verifier::from_secrets_list(&secrets)?,
//!         MemoryStore::new(),
//!         handler,
//!     ));
//!
//!     let app = stripe_webhooks::axum::router("/webhooks/stripe", processor);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Answers
//!
//! | Request | Status | Body |
//! |---|---|---|
//! | processed, queued, duplicate, ignored, other_mode, ping, stale, completion_not_recorded, lease_lost | 200 | `{"status":"processed"}` (the [`OutcomeKind::name`](crate::OutcomeKind::name)) |
//! | bad or missing signature, not an event | 400 | `{"error":"bad_signature"}`, `{"error":"not_an_event"}` |
//! | the body could not be read (the connection broke, or it was not a valid chunked body) | 400 | `{"error":"body_unreadable"}` |
//! | a method other than POST | 405, `Allow: POST` | `{"error":"method_not_allowed"}` |
//! | another delivery holds the event | 409, `Retry-After` | `{"error":"in_progress"}` |
//! | body over [`Processor::max_body`] (1 MiB by default) | 413 | `{"error":"payload_too_large"}` |
//! | `Content-Type` missing or not `application/json` | 415 | `{"error":"unsupported_media_type"}` |
//! | `Content-Encoding` other than `identity` (Stripe never compresses; refused before the body is read, so no framework inflates it) | 415 | `{"error":"unsupported_media_type"}` |
//! | the body took longer than [`Processor::body_timeout`] (10 s) to arrive | 408 | `{"error":"body_timeout"}` |
//! | the handler failed | 500 | `{"error":"handler_failed"}` |
//! | the store is unreachable | 503 | `{"error":"store_unavailable"}` |
//!
//! `application/json` is matched in any letter case and with any parameters
//! (`Application/JSON; charset=UTF-8`). Stripe always sends
//! `application/json; charset=utf-8`, so a request with no `Content-Type` is refused
//! too. The body is read through axum's [`Bytes`] extractor, so axum's body limit
//! applies; [`route`] sets it to the processor's [`max_body`](Processor::max_body)
//! with [`DefaultBodyLimit`] (change it with [`Processor::with_max_body`]).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{any, MethodRouter};
use axum_core::extract::{DefaultBodyLimit, FromRef, FromRequest, Request};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

pub use super::common::Rejection;
use super::common::{self, Reply};
use crate::event::Event;
use crate::processor::{Outcome, Processor};
use crate::signature::Verifier;

/// The webhook route: accepts POST (answering any other method 405), checks the content
/// type, reads the body under a [`DefaultBodyLimit`] of
/// [`processor.max_body()`](Processor::max_body) and answers with the processor's
/// [`Outcome`].
///
/// Mount it on a router of any state:
///
/// ```
/// # use std::sync::Arc;
/// # use stripe_webhooks::{EventRouter, MemoryStore, Processor, SigningSecret, Verifier};
/// # let processor = Arc::new(Processor::new(
/// #     Verifier::new(SigningSecret::new("whsec_test").unwrap()),
/// #     MemoryStore::new(),
/// #     EventRouter::new(),
/// # ));
/// use axum::extract::State;
///
/// #[derive(Clone)]
/// struct AppState { name: &'static str }
///
/// let app: axum::Router = axum::Router::new()
///     .route("/webhooks/stripe", stripe_webhooks::axum::route(processor))
///     .route("/", axum::routing::get(|State(s): State<AppState>| async move { s.name }))
///     .with_state(AppState { name: "shop" });
/// ```
pub fn route<S>(processor: Arc<Processor>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let limit = processor.max_body();
    any(move |request: Request| {
        let processor = Arc::clone(&processor);
        async move { respond(&processor, request).await }
    })
    .layer(DefaultBodyLimit::max(limit))
}

/// A router with [`route`] mounted at `path` and nothing else, ready to serve or to
/// [`merge`](axum::Router::merge) into your application's router.
///
/// # Panics
///
/// As [`axum::Router::route`]: if `path` is empty or does not start with `/`.
pub fn router(path: &str, processor: Arc<Processor>) -> axum::Router {
    axum::Router::new().route(path, route(processor))
}

/// The webhook handler, taking the processor from the router's state (any state `S`
/// with `Arc<Processor>: FromRef<S>`), for routers you assemble yourself. It makes the
/// same checks and answers as [`route`], but the body limit is whatever your router
/// sets (axum's default is 2 MB); the processor still refuses a body over its
/// [`max_body`](Processor::max_body) with 413.
///
/// Mount it with [`any`](axum::routing::any), as below, so that it answers other
/// methods itself (405 with `Allow: POST` and the JSON body in the table above);
/// mounted with `post`, axum answers them with its own empty 405 before it runs.
///
/// ```
/// # use std::sync::Arc;
/// # use stripe_webhooks::{EventRouter, MemoryStore, Processor, SigningSecret, Verifier};
/// # let processor = Arc::new(Processor::new(
/// #     Verifier::new(SigningSecret::new("whsec_test").unwrap()),
/// #     MemoryStore::new(),
/// #     EventRouter::new(),
/// # ));
/// use axum::extract::DefaultBodyLimit;
/// use axum::routing::any;
///
/// let app: axum::Router = axum::Router::new()
///     .route("/webhooks/stripe", any(stripe_webhooks::axum::webhook))
///     .layer(DefaultBodyLimit::max(processor.max_body()))
///     .with_state(processor);
/// ```
pub async fn webhook(State(processor): State<Arc<Processor>>, request: Request) -> Response {
    respond(&processor, request).await
}

async fn respond(processor: &Arc<Processor>, request: Request) -> Response {
    let headers = request.headers();
    if let Err(reply) = common::precheck(
        request.method() == Method::POST,
        header(headers, CONTENT_TYPE.as_str()),
        encoded(headers),
    ) {
        return into_response(reply);
    }
    let signature = headers.get(common::SIGNATURE_HEADER).cloned();
    let body = match common::read_within(processor.body_timeout(), read_body(request)).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    into_response(common::process(processor, signature, body).await)
}

/// Whether the request's body is encoded (see [`common::is_encoded`]).
fn encoded(headers: &HeaderMap) -> bool {
    common::is_encoded(
        headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(HeaderValue::as_bytes)
}

/// Reads the body through axum's `Bytes` extractor, so `DefaultBodyLimit` applies.
async fn read_body(request: Request) -> Result<Bytes, Rejection> {
    Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Rejection::PayloadTooLarge
        } else {
            Rejection::BodyUnreadable(Box::new(e))
        }
    })
}

fn into_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static(common::JSON))],
        reply.body,
    )
        .into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if reply.allow_post {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(common::ALLOW));
    }
    response
}

/// The outcome's status with a short JSON body (`{"status":"processed"}`,
/// `{"error":"in_progress"}`…) and, on a 409, `Retry-After`.
impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        into_response(Reply::outcome(&self))
    }
}

/// The rejection's [`status`](Rejection::status) with `{"error":"<name>"}`.
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        into_response(Reply::rejection(&self))
    }
}

/// An extractor for a verified, parsed [`Event`], for handlers of your own. It needs
/// only a [`Verifier`] in the router's state (`Verifier: FromRef<S>`; a state of
/// `Arc<Processor>` works too): no store, no handler.
///
/// It checks the content type (415), reads the body through axum's [`Bytes`] extractor
/// (so your `DefaultBodyLimit` applies: 2 MB unless you set it; 413 over it) within 10 s
/// ([`DEFAULT_BODY_TIMEOUT`](crate::DEFAULT_BODY_TIMEOUT), fixed for the extractor; the
/// ready route takes [`Processor::body_timeout`]; 408 after), verifies the
/// signature (400) and parses the event (400). It does **not** claim the event: Stripe
/// may deliver it more than once, so make your handler idempotent or pass the event to
/// [`Processor::process_event`].
///
/// ```no_run
/// use axum::routing::post;
/// use stripe_webhooks::axum::VerifiedEvent;
/// use stripe_webhooks::{Event, Verifier};
///
/// async fn stripe(VerifiedEvent(event): VerifiedEvent) -> &'static str {
///     if let Event::CheckoutSessionCompleted(session) = &event {
///         println!("provision {}", session.id);
///     }
///     "ok"
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let verifier = Verifier::from_secrets_list(&std::env::var("STRIPE_WEBHOOK_SECRET")?)?;
///     let app = axum::Router::new()
///         .route("/webhooks/stripe", post(stripe))
///         .with_state(verifier);
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
///     axum::serve(listener, app).await?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct VerifiedEvent(pub Event);

/// A router whose state is the processor hands its verifier to [`VerifiedEvent`].
impl FromRef<Arc<Processor>> for Verifier {
    fn from_ref(processor: &Arc<Processor>) -> Self {
        processor.verifier().clone()
    }
}

impl<S> FromRequest<S> for VerifiedEvent
where
    S: Send + Sync,
    Verifier: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        common::check_content_type(
            header(request.headers(), CONTENT_TYPE.as_str()),
            encoded(request.headers()),
        )?;
        let signature = request.headers().get(common::SIGNATURE_HEADER).cloned();
        let body = common::read_within(crate::DEFAULT_BODY_TIMEOUT, read_body(request)).await?;
        common::verify_event(
            &verifier,
            signature.as_ref().map(HeaderValue::as_bytes),
            &body,
        )
        .map(VerifiedEvent)
    }
}
