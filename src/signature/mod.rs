//! `Stripe-Signature` header parsing and verification.

mod header;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::Mac;
use subtle::{Choice, ConstantTimeEq};

use crate::clock::{Clock, SystemClock};
use crate::event::{Event, EventNotification, ParseError};
use crate::secret::{SecretError, SigningSecret};
use header::ParsedHeader;

/// How far a signed timestamp may be from now by default: 300 seconds, as in Stripe's SDKs.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The longest `Stripe-Signature` header accepted, in bytes.
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// The most comma-separated entries accepted in a `Stripe-Signature` header.
pub const MAX_HEADER_ENTRIES: usize = 32;

/// Why a request's signature was rejected.
///
/// No variant, `Display` or `Debug` output ever contains a secret or an expected
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The request had no `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    /// The header could not be read; the inner value says which part is wrong.
    #[error("malformed Stripe-Signature header: {0}")]
    MalformedHeader(MalformedHeader),
    /// The header carried no `v1` signature. `v0_present` is set when it carried only the
    /// legacy `v0` scheme, which this crate (like Stripe's SDKs) never accepts.
    #[error("no v1 signature in Stripe-Signature header{}", if *.v0_present { " (only a v0 signature, which is never accepted)" } else { "" })]
    #[non_exhaustive]
    NoV1Signature {
        /// A `v0` entry was present.
        v0_present: bool,
    },
    /// The signed timestamp is further from now than the tolerance; the request may be a
    /// replay, or the clocks disagree.
    #[error("timestamp is {age_secs}s from now, tolerance is {tolerance_secs}s")]
    #[non_exhaustive]
    OutsideTolerance {
        /// Now minus the signed timestamp, in seconds (negative: in the future).
        age_secs: i64,
        /// The tolerance in force, in seconds.
        tolerance_secs: u64,
    },
    /// No `v1` signature matched any configured secret: the request was not signed by
    /// Stripe with these secrets, or the body was changed on the way (re-encoded JSON,
    /// a proxy that rewrites bodies).
    #[error("no signature matched{}", match .hint { Some(h) => format!(" ({h})"), None => String::new() })]
    #[non_exhaustive]
    Mismatch {
        /// A likely cause, when one can be detected without revealing anything.
        hint: Option<MismatchHint>,
    },
    /// The secret given to [`verify_signature`] was not usable.
    #[error("invalid signing secret: {0}")]
    InvalidSecret(#[from] SecretError),
}

/// Which part of a `Stripe-Signature` header is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedHeader {
    /// The header is longer than [`MAX_HEADER_LEN`].
    #[error("header is {len} bytes, longer than {max}")]
    #[non_exhaustive]
    TooLong {
        /// The header's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header has more than [`MAX_HEADER_ENTRIES`] entries.
    #[error("header has more than {max} entries")]
    #[non_exhaustive]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
    /// An entry is not of the form `key=value`.
    #[error("entry {index} is not of the form key=value")]
    #[non_exhaustive]
    EntryWithoutEquals {
        /// The entry's position, counting from 0.
        index: usize,
    },
    /// There is no `t=` entry.
    #[error("no t= timestamp")]
    MissingTimestamp,
    /// There is more than one `t=` entry.
    #[error("more than one t= timestamp")]
    DuplicateTimestamp,
    /// The `t=` value is not a plain non-negative decimal number of at most 19 digits
    /// that fits in an `i64`.
    #[error("t= is not a plain non-negative decimal timestamp")]
    InvalidTimestamp,
}

impl From<MalformedHeader> for SignatureError {
    fn from(m: MalformedHeader) -> Self {
        SignatureError::MalformedHeader(m)
    }
}

/// A likely cause of a [`SignatureError::Mismatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MismatchHint {
    /// A configured secret does not start with `whsec_`: it may be an API key (`sk_…`)
    /// or a secret copied without its prefix.
    #[error("a configured secret does not start with whsec_; use the endpoint's signing secret")]
    SecretWithoutWhsecPrefix,
}

/// How the signed timestamp is checked against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tolerance {
    /// Reject when `|now − t|` exceeds the duration. The default, with
    /// [`DEFAULT_TOLERANCE`]: a timestamp far in the future is as suspect as an old one.
    Symmetric(Duration),
    /// Reject only when `now − t` exceeds the duration, accepting any future timestamp.
    /// This is what Stripe's official SDKs do.
    PastOnly(Duration),
    /// Do not check the timestamp at all. Signed requests can then be replayed forever:
    /// use it only to re-verify stored events, never on a live endpoint.
    DangerouslyUnchecked,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance::Symmetric(DEFAULT_TOLERANCE)
    }
}

/// Which configured secret verified a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedSecret {
    index: usize,
    label: Option<Arc<str>>,
}

impl MatchedSecret {
    /// The secret's position in the [`Verifier`], in the order they were added (0 is the
    /// one given to [`Verifier::new`]).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The secret's label, if it was given one with [`SigningSecret::with_label`].
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    pub(crate) fn label_arc(&self) -> Option<&Arc<str>> {
        self.label.as_ref()
    }
}

/// A request body whose signature has been verified.
///
/// It borrows the body; parse it with [`VerifiedPayload::parse`] (snapshot events) or
/// [`VerifiedPayload::parse_notification`] (v2 thin events). Its `Debug` output shows
/// the body's length, not the body (which may hold client secrets and personal data).
#[derive(Clone)]
pub struct VerifiedPayload<'a> {
    body: &'a [u8],
    timestamp: i64,
    matched: MatchedSecret,
}

impl fmt::Debug for VerifiedPayload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedPayload")
            .field("body_len", &self.body.len())
            .field("timestamp", &self.timestamp)
            .field("matched", &self.matched)
            .finish()
    }
}

impl<'a> VerifiedPayload<'a> {
    /// The verified raw body.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The signed timestamp (Unix seconds) from the header.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// Which configured secret matched.
    pub fn matched_secret(&self) -> &MatchedSecret {
        &self.matched
    }

    /// Parses the body as a v1 snapshot event.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] only when the body is not a Stripe event at all:
    /// [`ParseError::InvalidJson`], [`ParseError::NotAnEvent`] (no `id`, `type`,
    /// `created` or `data.object`), or [`ParseError::ThinEventNotification`] for a v2 thin event.
    pub fn parse(&self) -> Result<Event, ParseError> {
        Event::from_slice(self.body)
    }

    /// Parses the body as a v2 thin event notification.
    ///
    /// # Errors
    ///
    /// [`ParseError::SnapshotEvent`] for a v1 snapshot event, otherwise
    /// [`ParseError::InvalidJson`] or [`ParseError::NotAnEvent`].
    pub fn parse_notification(&self) -> Result<EventNotification, ParseError> {
        EventNotification::from_slice(self.body)
    }
}

/// Verifies a request with one secret, the system clock and [`DEFAULT_TOLERANCE`].
///
/// ```
/// use stripe_webhooks::{testing, verify_signature};
///
/// let secret = "whsec_test_secret";
/// let body = br#"{"id":"evt_1","object":"event","type":"customer.created","created":1,"livemode":false,"data":{"object":{"id":"cus_1","object":"customer"}}}"#;
/// let header = testing::sign(body, secret, testing::now());
/// let verified = verify_signature(body, &header, secret)?;
/// assert_eq!(verified.body(), body);
/// # Ok::<(), stripe_webhooks::SignatureError>(())
/// ```
///
/// Build a [`Verifier`] once instead when you have several secrets, want another
/// tolerance or clock, or verify many requests (it keys the HMAC only once).
///
/// # Errors
///
/// Any [`SignatureError`]: [`InvalidSecret`](SignatureError::InvalidSecret) if `secret`
/// is empty or has surrounding whitespace, otherwise as [`Verifier::verify`].
pub fn verify_signature<'a>(
    payload: &'a [u8],
    header: &str,
    secret: &str,
) -> Result<VerifiedPayload<'a>, SignatureError> {
    let secret = SigningSecret::new(secret)?;
    // No `Verifier`: one secret on the stack, nothing allocated.
    verify_with(
        std::slice::from_ref(&secret),
        Tolerance::default(),
        payload,
        header,
        SystemClock.now_unix(),
    )
}

/// A reusable verifier: one or more secrets, a [`Tolerance`] and a [`Clock`].
///
/// Build it once and share it: it is `Send + Sync`, and a clone shares its secrets and
/// clock (two reference counts, no allocation), so an extractor may clone it per request.
///
/// ```
/// use std::time::Duration;
/// use stripe_webhooks::{testing, FixedClock, SigningSecret, Verifier};
///
/// let verifier = Verifier::new(SigningSecret::new("whsec_current")?.with_label("current"))
///     .with_secret(SigningSecret::new("whsec_previous")?.with_label("previous"))
///     .with_tolerance(Duration::from_secs(300))
///     .with_clock(FixedClock(1_700_000_000));
///
/// let body = br#"{"id":"evt_1"}"#;
/// let header = testing::sign(body, "whsec_previous", 1_700_000_000);
/// let verified = verifier.verify(body, &header)?;
/// assert_eq!(verified.matched_secret().label(), Some("previous"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Arc<Vec<SigningSecret>>,
    tolerance: Tolerance,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    /// A verifier with one secret, the system clock and the default symmetric tolerance.
    pub fn new(secret: SigningSecret) -> Self {
        Self {
            secrets: Arc::new(vec![secret]),
            tolerance: Tolerance::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Builds a verifier from a comma-separated list of secrets (as an environment
    /// variable holds them during a rotation). The first is labelled `"0"`, the next `"1"`,
    /// and so on, unless you relabel them.
    ///
    /// # Errors
    ///
    /// A [`SecretError`] for the first entry that is empty or has surrounding whitespace
    /// (the entries are not trimmed: `"a, b"` is an error).
    pub fn from_secrets_list(list: &str) -> Result<Self, SecretError> {
        let mut secrets = Vec::new();
        for (i, s) in list.split(',').enumerate() {
            secrets.push(SigningSecret::new(s)?.with_label(i.to_string()));
        }
        Ok(Self {
            secrets: Arc::new(secrets),
            tolerance: Tolerance::default(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Adds another secret: a request verifies when it matches any of them. Use it while
    /// rolling a secret, then remove the old one once [`MatchedSecret`] shows it no longer
    /// matches.
    #[must_use]
    pub fn with_secret(mut self, secret: SigningSecret) -> Self {
        Arc::make_mut(&mut self.secrets).push(secret);
        self
    }

    /// Sets a symmetric tolerance: reject when `|now − t|` exceeds `tolerance`.
    ///
    /// Zero is strict (only a timestamp of the current second is accepted). It does not
    /// turn the check off, as a tolerance of 0 does in stripe-node and stripe-python; that
    /// is [`Tolerance::DangerouslyUnchecked`]. Timestamps are whole seconds, and so is the
    /// tolerance: a fraction of a second is dropped (900 ms is as strict as zero).
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Tolerance::Symmetric(tolerance);
        self
    }

    /// Sets the tolerance policy, for example [`Tolerance::PastOnly`].
    #[must_use]
    pub fn with_tolerance_policy(mut self, tolerance: Tolerance) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Replaces the clock, for example with a [`FixedClock`](crate::FixedClock) in tests or replays.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The configured secrets, in order.
    pub fn secrets(&self) -> &[SigningSecret] {
        &self.secrets
    }

    /// The tolerance policy in force.
    pub fn tolerance(&self) -> Tolerance {
        self.tolerance
    }

    /// Verifies `payload` against the `Stripe-Signature` header at the clock's time.
    ///
    /// # Errors
    ///
    /// - [`SignatureError::MalformedHeader`] if the header cannot be read;
    /// - [`SignatureError::NoV1Signature`] if it has no `v1` entry;
    /// - [`SignatureError::Mismatch`] if no `v1` matches any secret;
    /// - [`SignatureError::OutsideTolerance`] if the signature matches but the timestamp is
    ///   too far from now.
    pub fn verify<'a>(
        &self,
        payload: &'a [u8],
        header: &str,
    ) -> Result<VerifiedPayload<'a>, SignatureError> {
        self.verify_at(payload, header, self.clock.now_unix())
    }

    /// Like [`verify`](Self::verify), when the header may be absent (as read from a
    /// request): `None` is [`SignatureError::MissingHeader`].
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify), plus [`SignatureError::MissingHeader`].
    pub fn verify_request<'a>(
        &self,
        payload: &'a [u8],
        header: Option<&str>,
    ) -> Result<VerifiedPayload<'a>, SignatureError> {
        self.verify(payload, header.ok_or(SignatureError::MissingHeader)?)
    }

    /// Verifies as if the current time were `now` (Unix seconds).
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify).
    pub fn verify_at<'a>(
        &self,
        payload: &'a [u8],
        header: &str,
        now: i64,
    ) -> Result<VerifiedPayload<'a>, SignatureError> {
        verify_with(&self.secrets, self.tolerance, payload, header, now)
    }
}

/// The check behind [`Verifier::verify_at`] and [`verify_signature`].
fn verify_with<'a>(
    secrets: &[SigningSecret],
    tolerance: Tolerance,
    payload: &'a [u8],
    header: &str,
    now: i64,
) -> Result<VerifiedPayload<'a>, SignatureError> {
    // Read in place: the struct is a few hundred bytes, not worth moving around.
    let mut parsed = ParsedHeader::empty();
    parsed.read(header)?;
    if parsed.v1_seen == 0 {
        return Err(SignatureError::NoV1Signature {
            v0_present: parsed.v0_present,
        });
    }

    // `{t}.` in one piece: at most 19 digits and the dot.
    let mut prefix_buf = [b'.'; 20];
    let digits = parsed.timestamp_digits;
    prefix_buf[..digits.len()].copy_from_slice(digits);
    let prefix = &prefix_buf[..=digits.len()];

    let mut matched = None;
    for (index, secret) in secrets.iter().enumerate() {
        let mut mac = secret.mac();
        mac.update(prefix);
        mac.update(payload);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        // Every candidate is compared over all 32 bytes, with no early exit.
        let all_differ = parsed
            .signatures()
            .fold(1u8, |acc, sig| acc & differs32(&expected, sig));
        let hit: Choice = all_differ.ct_eq(&0);
        // Which secret matched is not secret: stop at the first, so a rotation
        // costs a second MAC only for requests signed with the newer secret.
        if bool::from(hit) {
            matched = Some(index);
            break;
        }
    }
    let Some(index) = matched else {
        let hint = secrets
            .iter()
            .any(|s| !s.has_whsec_prefix())
            .then_some(MismatchHint::SecretWithoutWhsecPrefix);
        return Err(SignatureError::Mismatch { hint });
    };

    check_tolerance(tolerance, parsed.timestamp, now)?;
    Ok(VerifiedPayload {
        body: payload,
        timestamp: parsed.timestamp,
        matched: MatchedSecret {
            index,
            label: secrets[index].label_arc().cloned(),
        },
    })
}

fn check_tolerance(tolerance: Tolerance, timestamp: i64, now: i64) -> Result<(), SignatureError> {
    let age = now.saturating_sub(timestamp);
    let (limit, too_far) = match tolerance {
        Tolerance::DangerouslyUnchecked => return Ok(()),
        Tolerance::Symmetric(d) => (d.as_secs(), age.unsigned_abs() > d.as_secs()),
        Tolerance::PastOnly(d) => (d.as_secs(), age > 0 && age.unsigned_abs() > d.as_secs()),
    };
    if too_far {
        Err(SignatureError::OutsideTolerance {
            age_secs: age,
            tolerance_secs: limit,
        })
    } else {
        Ok(())
    }
}

/// 1 if two MACs differ anywhere in their 32 bytes, else 0, in constant time: the
/// differences are folded together without a branch or an early exit. The caller
/// combines the results of all candidates and passes only that through `subtle`.
fn differs32(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    // The high bit of `diff | -diff` is set exactly when `diff` is not zero.
    (diff | diff.wrapping_neg()) >> 7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs32_sees_every_bit() {
        let a = [7u8; 32];
        assert_eq!(differs32(&a, &a), 0);
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert_eq!(differs32(&a, &b), 1, "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn tolerance_arithmetic_never_overflows() {
        let t = Tolerance::Symmetric(Duration::from_secs(u64::MAX));
        assert!(check_tolerance(t, i64::MAX, i64::MIN).is_ok());
        let t = Tolerance::Symmetric(Duration::from_secs(300));
        assert!(check_tolerance(t, i64::MAX, i64::MIN).is_err());
        assert!(check_tolerance(t, 0, i64::MAX).is_err());
        let t = Tolerance::PastOnly(Duration::from_secs(300));
        assert!(check_tolerance(t, i64::MAX, 0).is_ok());
        assert!(check_tolerance(t, 0, 301).is_err());
        assert!(check_tolerance(t, 0, 300).is_ok());
    }
}
