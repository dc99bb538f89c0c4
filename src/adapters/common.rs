//! What the framework adapters share: the request checks, the verification used by the
//! extractors, and the status, headers and JSON body of every answer. Each adapter only
//! reads its framework's request and writes its framework's response.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::event::{Event, ParseError};
use crate::processor::{Answer, Outcome, Processor};
use crate::signature::{SignatureError, Verifier};

/// Why an adapter refused a request before (or instead of) processing it. Its status and
/// name come from the same table as [`OutcomeKind`](crate::OutcomeKind)'s: a bad
/// signature is `400 bad_signature` whether the ready route or a `VerifiedEvent`
/// extractor finds it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The request's `Content-Type` is missing or is not `application/json` (any
    /// parameters, any letter case). 415 `unsupported_media_type`.
    #[error("content type is not application/json")]
    UnsupportedMediaType,
    /// The body is encoded (a `Content-Encoding` other than `identity`, such as `gzip`).
    /// Stripe never compresses a webhook request, and a framework that decompresses
    /// bodies (actix-web with its default compression features) would inflate one
    /// before its size is checked: a few kilobytes of gzip can be gigabytes. Refused
    /// before the body is read. 415 `unsupported_media_type`.
    #[error("request body is encoded (Content-Encoding)")]
    EncodedBody,
    /// The body is longer than the framework's body limit or the processor's
    /// [`max_body`](Processor::max_body). 413 `payload_too_large`.
    #[error("body is longer than the limit")]
    PayloadTooLarge,
    /// The framework could not read the body (the client went away, a malformed chunk).
    /// 400 `body_unreadable`.
    #[error("request body could not be read")]
    BodyUnreadable(#[source] Box<dyn StdError + Send + Sync>),
    /// The body did not arrive within the read deadline
    /// ([`Processor::body_timeout`], [`DEFAULT_BODY_TIMEOUT`](crate::DEFAULT_BODY_TIMEOUT) for the extractors): a
    /// client trickling its body is cut off. 408 `body_timeout`.
    #[error("request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The signature was missing, malformed, stale or wrong. 400 `bad_signature`.
    #[error(transparent)]
    BadSignature(SignatureError),
    /// The verified body is not a Stripe event. 400 `not_an_event`.
    #[error(transparent)]
    NotAnEvent(ParseError),
    /// No [`Verifier`] is where the extractor looks for it (actix-web: app data
    /// `web::Data<Verifier>` or `web::Data<Processor>`). A configuration error. 500
    /// `verifier_not_configured`.
    #[error("no Verifier is registered as app data")]
    MissingVerifier,
}

impl Rejection {
    fn answer(&self) -> Answer {
        match self {
            Rejection::UnsupportedMediaType | Rejection::EncodedBody => {
                Answer::UnsupportedMediaType
            }
            Rejection::PayloadTooLarge => Answer::PayloadTooLarge,
            Rejection::BodyUnreadable(_) => Answer::BodyUnreadable,
            Rejection::BodyTimeout(_) => Answer::BodyTimeout,
            Rejection::BadSignature(_) => Answer::BadSignature,
            Rejection::NotAnEvent(_) => Answer::NotAnEvent,
            Rejection::MissingVerifier => Answer::VerifierMissing,
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.answer().status()
    }

    /// A short stable name, sent as `{"error":"<name>"}`: `unsupported_media_type`,
    /// `payload_too_large`, `body_unreadable`, `body_timeout`, `bad_signature`,
    /// `not_an_event` or `verifier_not_configured`.
    pub fn name(&self) -> &'static str {
        self.answer().name()
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
    fn error(answer: Answer) -> Self {
        Self {
            status: answer.status(),
            body: format!(r#"{{"error":"{}"}}"#, answer.name()),
            retry_after: None,
            allow_post: false,
        }
    }

    /// The answer for a processed delivery: `{"status":"<name>"}` on a 2xx,
    /// `{"error":"<name>"}` otherwise, and `Retry-After` on a 409. The names are
    /// [`OutcomeKind::name`](crate::OutcomeKind::name), fixed ASCII identifiers, so the
    /// body never echoes the request.
    pub(crate) fn outcome(outcome: &Outcome) -> Self {
        let answer = outcome.kind().answer();
        if outcome.is_success() {
            Self {
                status: answer.status(),
                body: format!(r#"{{"status":"{}"}}"#, answer.name()),
                retry_after: None,
                allow_post: false,
            }
        } else {
            Self {
                retry_after: outcome.retry_after_secs(),
                ..Self::error(answer)
            }
        }
    }

    /// A request refused before the processor saw it (counted here, as the processor
    /// counts the deliveries it answers).
    pub(crate) fn rejection(rejection: &Rejection) -> Self {
        let answer = rejection.answer();
        #[cfg(feature = "metrics")]
        crate::metrics::rejected(answer.name());
        Self::error(answer)
    }

    pub(crate) fn method_not_allowed() -> Self {
        #[cfg(feature = "metrics")]
        crate::metrics::rejected(Answer::MethodNotAllowed.name());
        Self {
            allow_post: true,
            ..Self::error(Answer::MethodNotAllowed)
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

/// Whether any `Content-Encoding` value (`values`: each header line) names a coding
/// other than `identity`.
pub(crate) fn is_encoded<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    values.into_iter().any(|v| {
        v.split(|&b| b == b',').any(|coding| {
            let coding = coding.trim_ascii();
            !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity")
        })
    })
}

/// The checks on the request's headers, made before the body is read: 415 for an
/// encoded body ([`Rejection::EncodedBody`]), and unless JSON.
pub(crate) fn check_content_type(
    content_type: Option<&[u8]>,
    encoded: bool,
) -> Result<(), Rejection> {
    if encoded {
        return Err(Rejection::EncodedBody);
    }
    if is_json(content_type) {
        Ok(())
    } else {
        Err(Rejection::UnsupportedMediaType)
    }
}

/// The checks the route makes before reading the body: POST only (405), then an
/// unencoded JSON body only (415).
pub(crate) fn precheck(
    is_post: bool,
    content_type: Option<&[u8]>,
    encoded: bool,
) -> Result<(), Reply> {
    if !is_post {
        return Err(Reply::method_not_allowed());
    }
    check_content_type(content_type, encoded).map_err(|r| Reply::rejection(&r))
}

/// The `Stripe-Signature` value as text. A value that is not UTF-8 is passed on as an
/// empty (malformed) header rather than as a missing one.
pub(crate) fn signature(value: Option<&[u8]>) -> Option<&str> {
    value.map(|v| std::str::from_utf8(v).unwrap_or_default())
}

/// Runs the processor on a request that passed [`precheck`], on a task of its own: a
/// client that disconnects mid-delivery does not cancel the handler half-way, and the
/// event is completed (or released) as if the answer had been read. A delivery whose
/// client left is tied to no connection, so the server's graceful shutdown does not wait
/// for it: the task is counted until it ends, for [`Processor::drain`] (and counted as
/// cut if its runtime drops it first).
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
    let running = processor.delivery_started();
    let delivery = async move {
        let header = signature(signature_header.as_ref().map(AsRef::as_ref));
        let reply = Reply::outcome(&processor.process(header, body.as_ref()).await);
        running.finished();
        reply
    };
    // In the request's span (a tower-http trace layer's, say), which the task would
    // otherwise leave.
    #[cfg(feature = "tracing")]
    let delivery = tracing::Instrument::in_current_span(delivery);
    let delivery = tokio::spawn(delivery);
    // Handler panics are caught inside the processor, so the task fails only if the
    // runtime is shutting down, or on a panic outside the handler (a bug, or a `Clock`
    // given to the verifier that panicked): answer 500 so that Stripe retries, and say
    // why rather than fail in silence.
    delivery.await.unwrap_or_else(|e| {
        #[cfg(feature = "tracing")]
        if e.is_panic() {
            let why = crate::processor::panic_message(&*e.into_panic());
            tracing::error!(
                panic = %crate::secret::redacted_text(why),
                "stripe_webhooks: a delivery panicked outside its handler; answered 500 so \
                 that Stripe delivers it again"
            );
        } else {
            tracing::warn!(
                "stripe_webhooks: a delivery was cut by its runtime's shutdown; answered 500 \
                 so that Stripe delivers it again"
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = e;
        // Counted, as every answer is: the processor's own count never came.
        #[cfg(feature = "metrics")]
        crate::metrics::rejected(Answer::HandlerFailed.name());
        Reply::error(Answer::HandlerFailed)
    })
}

/// Reads a body within `deadline`: a client that trickles its body is answered 408
/// instead of holding a connection and its buffer for as long as it likes.
pub(crate) async fn read_within<T>(
    deadline: Duration,
    read: impl Future<Output = Result<T, Rejection>>,
) -> Result<T, Rejection> {
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(Rejection::BodyTimeout(deadline)))
}

/// What the `VerifiedEvent` extractors do once they have the body (after
/// [`check_content_type`]): verify, parse.
pub(crate) fn verify_event(
    verifier: &Verifier,
    signature_header: Option<&[u8]>,
    body: &[u8],
) -> Result<Event, Rejection> {
    verifier
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
