//! The actix-web adapter (feature `actix-web`): a ready resource that hands each request
//! to a shared [`Processor`] and answers with its [`Outcome`], and a [`VerifiedEvent`]
//! extractor for handlers of your own.
//!
//! ```no_run
//! use std::sync::Arc;
//! use actix_web::{App, HttpServer};
//! use stripe_webhooks::{EventRouter, MemoryStore, Processor, Verifier};
//!
//! #[actix_web::main]
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
//!     HttpServer::new(move || {
//!         App::new().service(stripe_webhooks::actix::service("/webhooks/stripe", Arc::clone(&processor)))
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
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
//! | the `VerifiedEvent` extractor finds no `Verifier` (nor `Processor`) in the app data | 500 | `{"error":"verifier_not_configured"}` |
//! | the store is unreachable | 503 | `{"error":"store_unavailable"}` |
//!
//! `application/json` is matched in any letter case and with any parameters
//! (`Application/JSON; charset=UTF-8`). Stripe always sends
//! `application/json; charset=utf-8`, so a request with no `Content-Type` is refused
//! too.
//!
//! # Body limit
//!
//! actix-web's own limit, from a [`web::PayloadConfig`] in the app data, is **256 KiB**
//! by default, below the largest events Stripe sends. [`service`] registers
//! `web::PayloadConfig::new(processor.max_body())` (1 MiB unless you change it with
//! [`Processor::with_max_body`]) on its own resource. [`VerifiedEvent`], in a handler of
//! your own, reads up to the app data `web::Data<Processor>`'s
//! [`max_body`](Processor::max_body), else [`DEFAULT_MAX_BODY`](crate::DEFAULT_MAX_BODY)
//! (1 MiB), unless the app sets a `web::PayloadConfig` of its own, which it then follows.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::http::header::{HeaderValue, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::{Method, StatusCode};
use actix_web::{
    dev, web, FromRequest, HttpRequest, HttpResponse, Resource, Responder, ResponseError,
};

pub use super::common::Rejection;
use super::common::{self, Reply};
use crate::event::Event;
use crate::processor::{Outcome, Processor};
use crate::signature::Verifier;

/// The webhook resource at `path`: accepts POST (answering any other method 405),
/// checks the content type, reads the body under a `web::PayloadConfig` of
/// [`processor.max_body()`](Processor::max_body) and answers with the processor's
/// [`Outcome`]. Register it with `App::service`, or inside a `web::scope`.
pub fn service(path: &str, processor: Arc<Processor>) -> Resource {
    web::resource(path)
        .app_data(web::PayloadConfig::new(processor.max_body()))
        .to(move |request: HttpRequest, payload: web::Payload| {
            let processor = Arc::clone(&processor);
            async move { respond(&processor, request, payload.into_inner()).await }
        })
}

async fn respond(
    processor: &Arc<Processor>,
    request: HttpRequest,
    payload: dev::Payload,
) -> HttpResponse {
    let content_type = header(&request, CONTENT_TYPE.as_str());
    let encoded = encoded(&request);
    if let Err(reply) = common::precheck(request.method() == Method::POST, content_type, encoded) {
        return into_response(reply);
    }
    let body =
        match common::read_within(processor.body_timeout(), read_body(&request, payload)).await {
            Ok(body) => body,
            Err(rejection) => return rejection.error_response(),
        };
    let signature = request.headers().get(common::SIGNATURE_HEADER).cloned();
    into_response(common::process(processor, signature, body).await)
}

/// Whether the request's body is encoded (see [`common::is_encoded`]): refused before
/// actix-web's `Bytes` extractor, which would decompress it, reads it.
fn encoded(request: &HttpRequest) -> bool {
    common::is_encoded(
        request
            .headers()
            .get_all(CONTENT_ENCODING)
            .map(HeaderValue::as_bytes),
    )
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a [u8]> {
    request.headers().get(name).map(HeaderValue::as_bytes)
}

/// Reads the body through actix-web's `web::Bytes` extractor, so `PayloadConfig` applies.
async fn read_body(
    request: &HttpRequest,
    mut payload: dev::Payload,
) -> Result<web::Bytes, Rejection> {
    web::Bytes::from_request(request, &mut payload)
        .await
        .map_err(|e| {
            if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                Rejection::PayloadTooLarge
            } else {
                Rejection::BodyUnreadable(e.to_string().into())
            }
        })
}

/// Reads the body under the app's own `web::PayloadConfig` when it sets one, else up to
/// `limit`: actix-web's default (256 KiB) is below the largest events Stripe sends.
async fn read_body_within(
    request: &HttpRequest,
    payload: dev::Payload,
    limit: usize,
) -> Result<web::Bytes, Rejection> {
    let configured = request.app_data::<web::PayloadConfig>().is_some()
        || request
            .app_data::<web::Data<web::PayloadConfig>>()
            .is_some();
    if configured {
        return read_body(request, payload).await;
    }
    let stream = actix_web::body::BodyStream::new(payload);
    match actix_web::body::to_bytes_limited(stream, limit).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(Rejection::BodyUnreadable(e.to_string().into())),
        Err(_over) => Err(Rejection::PayloadTooLarge),
    }
}

fn into_response(reply: Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.insert_header((CONTENT_TYPE, common::JSON));
    if let Some(secs) = reply.retry_after {
        response.insert_header((RETRY_AFTER, secs));
    }
    if reply.allow_post {
        response.insert_header((ALLOW, common::ALLOW));
    }
    response.body(reply.body)
}

/// The outcome's status with a short JSON body (`{"status":"processed"}`,
/// `{"error":"in_progress"}`…) and, on a 409, `Retry-After`.
impl Responder for Outcome {
    type Body = BoxBody;

    fn respond_to(self, _request: &HttpRequest) -> HttpResponse {
        into_response(Reply::outcome(&self))
    }
}

/// The rejection's [`status`](Rejection::status) with `{"error":"<name>"}`.
impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        into_response(Reply::rejection(self))
    }
}

/// An extractor for a verified, parsed [`Event`], for handlers of your own. It needs
/// only a [`Verifier`]: app data `web::Data<Verifier>` (or, failing that, a
/// `web::Data<Processor>`'s verifier); without either the request is answered 500.
///
/// It checks the content type (415), reads the body (413 over 1 MiB,
/// [`DEFAULT_MAX_BODY`](crate::DEFAULT_MAX_BODY), or the `web::Data<Processor>`'s
/// [`max_body`](Processor::max_body), or the app's own `web::PayloadConfig` when it sets
/// one; not actix-web's 256 KiB default) within 10 s ([`DEFAULT_BODY_TIMEOUT`](crate::DEFAULT_BODY_TIMEOUT), fixed
/// for the extractor; the ready service takes [`Processor::body_timeout`]; 408 after), verifies the signature (400) and parses the event (400). It does **not**
/// claim the event: Stripe may deliver it more than once, so make your handler
/// idempotent or pass the event to [`Processor::process_event`].
///
/// ```no_run
/// use actix_web::{web, App, HttpServer};
/// use stripe_webhooks::actix::VerifiedEvent;
/// use stripe_webhooks::{Event, Verifier};
///
/// async fn stripe(VerifiedEvent(event): VerifiedEvent) -> &'static str {
///     if let Event::CheckoutSessionCompleted(session) = &event {
///         println!("provision {}", session.id);
///     }
///     "ok"
/// }
///
/// #[actix_web::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let verifier = Verifier::from_secrets_list(&std::env::var("STRIPE_WEBHOOK_SECRET")?)?;
///     let verifier = web::Data::new(verifier);
///     HttpServer::new(move || {
///         App::new()
///             .app_data(verifier.clone())
///             .route("/webhooks/stripe", web::post().to(stripe))
///     })
///     .bind(("127.0.0.1", 8080))?
///     .run()
///     .await?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct VerifiedEvent(pub Event);

impl FromRequest for VerifiedEvent {
    type Error = Rejection;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Rejection>>>>;

    fn from_request(request: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let request = request.clone();
        let payload = payload.take();
        Box::pin(async move {
            let processor = request.app_data::<web::Data<Processor>>();
            let verifier = match request.app_data::<web::Data<Verifier>>() {
                Some(verifier) => Verifier::clone(verifier),
                None => processor
                    .map(|p| p.verifier().clone())
                    .ok_or(Rejection::MissingVerifier)?,
            };
            let limit = processor.map_or(crate::DEFAULT_MAX_BODY, |p| p.max_body());
            common::check_content_type(header(&request, CONTENT_TYPE.as_str()), encoded(&request))?;
            let read = read_body_within(&request, payload, limit);
            let body = common::read_within(crate::DEFAULT_BODY_TIMEOUT, read).await?;
            common::verify_event(&verifier, header(&request, common::SIGNATURE_HEADER), &body)
                .map(VerifiedEvent)
        })
    }
}
