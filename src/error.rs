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
