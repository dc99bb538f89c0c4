//! What the framework adapters share: the request checks, the verification used by the
//! extractors, and the status, headers and JSON body of every answer. Each adapter only
//! reads its framework's request and writes its framework's response.

use std::error::Error as StdError;
use std::sync::Arc;

use crate::event::{Event, ParseError};
use crate::processor::{Outcome, Processor};
use crate::signature::SignatureError;

/// Why a `VerifiedEvent` extractor refused a request. Its status and JSON body are the
/// ones the ready-made route answers with for the same problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The request's `Content-Type` is missing or is not `application/json` (any
    /// parameters, any letter case). 415.
    #[error("content type is not application/json")]
    UnsupportedMediaType,
    /// The body is longer than the framework's body limit or the processor's
    /// [`max_body`](Processor::max_body). 413.
    #[error("body is longer than the limit")]
    PayloadTooLarge,
    /// The framework could not read the body (the client went away, a malformed chunk).
    /// 400.
    #[error("request body could not be read")]
    BodyUnreadable(#[source] Box<dyn StdError + Send + Sync>),
    /// The signature was missing, malformed, stale or wrong. 400.
    #[error(transparent)]
    BadSignature(SignatureError),
    /// The verified body is not a Stripe event. 400.
    #[error(transparent)]
    NotAnEvent(ParseError),
    /// No [`Processor`] was registered where the extractor looks for it (actix-web:
    /// `App::app_data(web::Data::from(processor))`). A configuration error. 500.
    #[error("no Processor is registered as app data")]
    MissingProcessor,
}

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::UnsupportedMediaType => 415,
            Rejection::PayloadTooLarge => 413,
            Rejection::BodyUnreadable(_)
            | Rejection::BadSignature(_)
            | Rejection::NotAnEvent(_) => 400,
            Rejection::MissingProcessor => 500,
        }
    }

    /// A short stable name, sent as `{"error":"<name>"}`: `unsupported_media_type`,
    /// `payload_too_large`, `body_unreadable`, `bad_signature`, `not_an_event` or
    /// `processor_not_configured`.
    pub fn name(&self) -> &'static str {
        match self {
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::PayloadTooLarge => "payload_too_large",
            Rejection::BodyUnreadable(_) => "body_unreadable",
            Rejection::BadSignature(_) => "bad_signature",
            Rejection::NotAnEvent(_) => "not_an_event",
            Rejection::MissingProcessor => "processor_not_configured",
        }
    }
}

/// One answer, ready for any framework: status, JSON body and the extra headers.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// Seconds for `Retry-After` (409 only).
    pub(crate) retry_after: Option<u64>,
    /// Send `Allow: POST` (405 only).
    pub(crate) allow_post: bool,
}

/// The `Content-Type` of every answer.
pub(crate) const JSON: &str = "application/json";

/// The value of `Allow` on a 405.
pub(crate) const ALLOW: &str = "POST";

/// The name of the signature header.
pub(crate) const SIGNATURE_HEADER: &str = "stripe-signature";

impl Reply {
    fn error(status: u16, name: &str) -> Self {
        Self {
            status,
            body: format!(r#"{{"error":"{name}"}}"#),
            retry_after: None,
            allow_post: false,
        }
    }

    /// The answer for a processed delivery: `{"status":"<name>"}` on a 2xx,
    /// `{"error":"<name>"}` otherwise, and `Retry-After` on a 409. The names are
    /// [`OutcomeKind::name`](crate::OutcomeKind::name), fixed ASCII identifiers, so the
    /// body never echoes the request.
    pub(crate) fn outcome(outcome: &Outcome) -> Self {
        let name = outcome.kind().name();
        let status = outcome.status();
        if (200..300).contains(&status) {
            Self {
                status,
                body: format!(r#"{{"status":"{name}"}}"#),
                retry_after: None,
                allow_post: false,
            }
        } else {
            Self {
                retry_after: outcome.retry_after_secs(),
                ..Self::error(status, name)
            }
        }
    }

    pub(crate) fn rejection(rejection: &Rejection) -> Self {
        Self::error(rejection.status(), rejection.name())
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self {
            allow_post: true,
            ..Self::error(405, "method_not_allowed")
        }
    }
}

/// Whether a `Content-Type` value is `application/json`, with any parameters and in any
/// letter case (`Application/JSON; Charset=UTF-8`). A missing header is not.
pub(crate) fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence.trim_ascii().eq_ignore_ascii_case(JSON.as_bytes())
}

/// The content-type check, made before the body is read: 415 unless JSON.
pub(crate) fn check_content_type(content_type: Option<&[u8]>) -> Result<(), Rejection> {
    if is_json(content_type) {
        Ok(())
    } else {
        Err(Rejection::UnsupportedMediaType)
    }
}

/// The checks the route makes before reading the body: POST only (405), then JSON only
/// (415).
pub(crate) fn precheck(is_post: bool, content_type: Option<&[u8]>) -> Result<(), Reply> {
    if !is_post {
        return Err(Reply::method_not_allowed());
    }
    check_content_type(content_type).map_err(|r| Reply::rejection(&r))
}

/// The `Stripe-Signature` value as text. A value that is not UTF-8 is passed on as an
/// empty (malformed) header rather than as a missing one.
pub(crate) fn signature(value: Option<&[u8]>) -> Option<&str> {
    value.map(|v| std::str::from_utf8(v).unwrap_or_default())
}

/// Runs the processor on a request that passed [`precheck`], on a task of its own: a
/// client that disconnects mid-delivery does not cancel the handler half-way, and the
/// event is completed (or released) as if the answer had been read. The connection
/// still waits for the answer, so graceful shutdown still waits for the delivery.
pub(crate) async fn process<H, B>(
    processor: &Arc<Processor>,
    signature_header: Option<H>,
    body: B,
) -> Reply
where
    H: AsRef<[u8]> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
{
    let processor = Arc::clone(processor);
    let delivery = tokio::spawn(async move {
        let header = signature(signature_header.as_ref().map(AsRef::as_ref));
        Reply::outcome(&processor.process(header, body.as_ref()).await)
    });
    // The processor never panics (handler panics are caught), so the task only fails
    // if the runtime is shutting down; answer 500 so that Stripe retries.
    delivery
        .await
        .unwrap_or_else(|_| Reply::error(500, "internal_error"))
}

/// What the `VerifiedEvent` extractors do once they have the body (after
/// [`check_content_type`]): check the processor's body limit, verify, parse.
pub(crate) fn verify_event(
    processor: &Processor,
    signature_header: Option<&[u8]>,
    body: &[u8],
) -> Result<Event, Rejection> {
    if body.len() > processor.max_body() {
        return Err(Rejection::PayloadTooLarge);
    }
    processor
        .verifier()
        .verify_request(body, signature(signature_header))
        .map_err(Rejection::BadSignature)?
        .parse()
        .map_err(Rejection::NotAnEvent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON; Charset=UTF-8",
            "  application/json ;charset=latin1",
        ] {
            assert!(is_json(Some(ok.as_bytes())), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "",
            "json",
        ] {
            assert!(!is_json(Some(bad.as_bytes())), "{bad}");
        }
        assert!(!is_json(None));
    }

    #[test]
    fn bodies_are_fixed_json() {
        let r = Reply::method_not_allowed();
        assert_eq!(
            (r.status, r.body.as_str(), r.allow_post),
            (405, r#"{"error":"method_not_allowed"}"#, true)
        );
        let r = Reply::rejection(&Rejection::UnsupportedMediaType);
        assert_eq!(
            (r.status, r.body.as_str()),
            (415, r#"{"error":"unsupported_media_type"}"#)
        );
    }
}
