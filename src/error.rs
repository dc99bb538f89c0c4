//! The crate's top-level error.

use crate::event::ParseError;
use crate::handler::HandlerError;
use crate::idempotency::StoreError;
use crate::secret::SecretError;
use crate::signature::SignatureError;

/// Any error this crate returns, for callers that want one type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A signing secret could not be built.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The request's signature was rejected.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The verified body was not a Stripe event.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The idempotency store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event handler failed.
    #[error(transparent)]
    Handler(#[from] HandlerError),
}

/// An error's text with its sources' (`outer: inner: root`), its credentials hidden
/// ([`redacted_text`](crate::secret::redacted_text)): what a failure is recorded and
/// logged as. A handler's `anyhow` error with context keeps its root cause, which its
/// own text leaves out. A source whose text the error's already ends with (thiserror's
/// `#[error("…: {0}")]` over a `#[source]`) is not repeated.
pub(crate) fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let own = e.to_string();
        if !text.ends_with(&own) {
            text.push_str(": ");
            text.push_str(&own);
        }
        source = e.source();
    }
    crate::secret::redacted_text(text)
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use crate::handler::HandlerError;

    #[derive(Debug, thiserror::Error)]
    #[error("sync customer cus_1")]
    struct Context(#[source] std::io::Error);

    #[test]
    fn error_text_keeps_the_root_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "db down");
        let e = HandlerError::new(Context(io));
        assert_eq!(
            error_text(&e),
            "handler failed: sync customer cus_1: db down"
        );
        let e = HandlerError::new("no such plan");
        assert_eq!(error_text(&e), "handler failed: no such plan");
        let e = HandlerError::new("charging with sk_live_0123456789abcdefghij failed");
        assert!(
            !error_text(&e).contains("sk_live_0123"),
            "{}",
            error_text(&e)
        );
    }
}
