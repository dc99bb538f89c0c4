//! `Stripe-Signature` header parsing and verification.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::Mac;
use subtle::{Choice, ConstantTimeEq};

use crate::event::{Event, EventNotification, ParseError};
use crate::secret::{SecretError, SigningSecret};

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
    NoV1Signature {
        /// A `v0` entry was present.
        v0_present: bool,
    },
    /// The signed timestamp is further from now than the tolerance; the request may be a
    /// replay, or the clocks disagree.
    #[error("timestamp is {age_secs}s from now, tolerance is {tolerance_secs}s")]
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
    TooLong {
        /// The header's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header has more than [`MAX_HEADER_ENTRIES`] entries.
    #[error("header has more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
    /// An entry is not of the form `key=value`.
    #[error("entry {index} is not of the form key=value")]
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

/// A source of the current time in Unix seconds, injectable for tests and replays.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time as seconds since the Unix epoch.
    fn now_unix(&self) -> i64;

    /// The current time as milliseconds since the Unix epoch (used for leases). The
    /// default is [`now_unix`](Self::now_unix) × 1000.
    fn now_millis(&self) -> i64 {
        self.now_unix().saturating_mul(1000)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
        }
    }

    fn now_millis(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |s| -s),
        }
    }
}

/// A clock that moves only when told to, shared by its clones: for tests of leases and
/// retention.
///
/// ```
/// use std::time::Duration;
/// use stripe_webhooks::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_700_000_000_000);
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now_millis(), 1_700_000_001_500);
/// assert_eq!(clock.now_unix(), 1_700_000_001);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `millis` (Unix milliseconds).
    pub fn new(millis: i64) -> Self {
        Self(Arc::new(AtomicI64::new(millis)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(ms))
            });
    }

    /// Sets the clock to `millis`.
    pub fn set(&self, millis: i64) {
        self.0.store(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst).div_euclid(1000)
    }

    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A clock stopped at one instant (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.0
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
/// [`VerifiedPayload::parse_notification`] (v2 thin events).
#[derive(Debug, Clone)]
pub struct VerifiedPayload<'a> {
    body: &'a [u8],
    timestamp: i64,
    matched: MatchedSecret,
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
    /// A [`ParseError`] only when the body is not a Stripe event at all; see
    /// [`Event::from_slice`].
    pub fn parse(&self) -> Result<Event, ParseError> {
        Event::from_slice(self.body)
    }

    /// Parses the body as a v2 thin event notification.
    ///
    /// # Errors
    ///
    /// [`ParseError::SnapshotEvent`] for a v1 snapshot event, otherwise as
    /// [`EventNotification::from_slice`].
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
    Verifier::new(SigningSecret::new(secret)?).verify(payload, header)
}

/// A reusable verifier: one or more secrets, a [`Tolerance`] and a [`Clock`].
///
/// Build it once and share it (it is `Send + Sync` and cheap to clone).
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
    secrets: Vec<SigningSecret>,
    tolerance: Tolerance,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    /// A verifier with one secret, the system clock and the default symmetric tolerance.
    pub fn new(secret: SigningSecret) -> Self {
        Self {
            secrets: vec![secret],
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
            secrets,
            tolerance: Tolerance::default(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Adds another secret: a request verifies when it matches any of them. Use it while
    /// rolling a secret, then remove the old one once [`MatchedSecret`] shows it no longer
    /// matches.
    #[must_use]
    pub fn with_secret(mut self, secret: SigningSecret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Sets a symmetric tolerance: reject when `|now − t|` exceeds `tolerance`.
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

    /// Replaces the clock, for example with a [`FixedClock`] in tests or replays.
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
        for (index, secret) in self.secrets.iter().enumerate() {
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
            let hint = self
                .secrets
                .iter()
                .any(|s| !s.has_whsec_prefix())
                .then_some(MismatchHint::SecretWithoutWhsecPrefix);
            return Err(SignatureError::Mismatch { hint });
        };

        check_tolerance(self.tolerance, parsed.timestamp, now)?;
        Ok(VerifiedPayload {
            body: payload,
            timestamp: parsed.timestamp,
            matched: MatchedSecret {
                index,
                label: self.secrets[index].label_arc().cloned(),
            },
        })
    }
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

/// How many well-formed `v1` signatures are kept on the stack; more (which Stripe never
/// sends) spill to the heap.
const INLINE_SIGNATURES: usize = 4;

/// The parts of a `Stripe-Signature` header, decoded without copying the header.
#[derive(Debug)]
pub(crate) struct ParsedHeader<'h> {
    pub(crate) timestamp: i64,
    /// The timestamp's digits as signed: the header's own, without leading zeros (the
    /// SDKs sign the parsed number, so `t=0042` is signed as `42`).
    pub(crate) timestamp_digits: &'h [u8],
    /// The first well-formed `v1` signatures, decoded; `v1_valid` says how many are set.
    inline: [[u8; 32]; INLINE_SIGNATURES],
    /// Well-formed `v1` signatures past the first [`INLINE_SIGNATURES`].
    spilled: Vec<[u8; 32]>,
    pub(crate) v1_valid: usize,
    /// How many `v1` entries there were, well-formed or not.
    pub(crate) v1_seen: usize,
    pub(crate) v0_present: bool,
}

impl<'h> ParsedHeader<'h> {
    /// Parses a header in one pass, in time linear in its length.
    #[cfg(test)]
    pub(crate) fn parse(header: &'h str) -> Result<Self, MalformedHeader> {
        let mut out = Self::empty();
        out.read(header)?;
        Ok(out)
    }

    pub(crate) fn empty() -> Self {
        ParsedHeader {
            timestamp: 0,
            timestamp_digits: b"",
            inline: [[0u8; 32]; INLINE_SIGNATURES],
            spilled: Vec::new(),
            v1_valid: 0,
            v1_seen: 0,
            v0_present: false,
        }
    }

    /// Reads a header into an [`empty`](Self::empty) value, in one pass, in time linear
    /// in its length.
    pub(crate) fn read(&mut self, header: &'h str) -> Result<(), MalformedHeader> {
        if header.len() > MAX_HEADER_LEN {
            return Err(MalformedHeader::TooLong {
                len: header.len(),
                max: MAX_HEADER_LEN,
            });
        }
        let out = self;
        let mut timestamp = None;
        // Byte-wise: `,` `=` space and tab are ASCII, so every split lands on a char
        // boundary, and the entries are those `str::split(',')` would give.
        let mut rest = header.as_bytes();
        let mut index = 0;
        // The common first entry, `t=<digits>,`, read without the general path's scans.
        if let Some((digits, next)) = plain_timestamp_entry(rest) {
            timestamp = Some(parse_timestamp(digits)?);
            out.timestamp_digits = without_leading_zeros(digits);
            rest = next;
            index = 1;
        }
        loop {
            if index >= MAX_HEADER_ENTRIES {
                return Err(MalformedHeader::TooManyEntries {
                    max: MAX_HEADER_ENTRIES,
                });
            }
            // The common entry, a well-formed `v1`, is decoded as it is read, without a
            // separate scan for the comma that ends it.
            let next = if let Some(next) = out.well_formed_v1(rest) {
                out.v1_seen += 1;
                next
            } else {
                let (entry, next) = match rest.iter().position(|&b| b == b',') {
                    Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                    None => (rest, None),
                };
                let entry = trim_blanks(entry);
                let eq = entry
                    .iter()
                    .position(|&b| b == b'=')
                    .ok_or(MalformedHeader::EntryWithoutEquals { index })?;
                let (key, value) = (&entry[..eq], &entry[eq + 1..]);
                match key {
                    b"t" => {
                        if timestamp.is_some() {
                            return Err(MalformedHeader::DuplicateTimestamp);
                        }
                        timestamp = Some(parse_timestamp(value)?);
                        out.timestamp_digits = without_leading_zeros(value);
                    }
                    b"v1" => {
                        out.v1_seen += 1;
                        out.decode_signature(value);
                    }
                    b"v0" => out.v0_present = true,
                    _ => {}
                }
                next
            };
            match next {
                Some(next) => rest = next,
                None => break,
            }
            index += 1;
        }
        out.timestamp = timestamp.ok_or(MalformedHeader::MissingTimestamp)?;
        Ok(())
    }

    /// Decodes a `v1` value into the next free slot; a malformed one is skipped (it
    /// could never match). `false` if it was malformed.
    fn decode_signature(&mut self, hex: &[u8]) -> bool {
        let decoded = match self.inline.get_mut(self.v1_valid) {
            Some(slot) => decode_hex32(hex, slot),
            None => {
                let mut sig = [0u8; 32];
                let ok = decode_hex32(hex, &mut sig);
                if ok {
                    self.spilled.push(sig);
                }
                ok
            }
        };
        self.v1_valid += usize::from(decoded);
        decoded
    }

    /// Reads `v1=<64 hex digits>` at the start of `rest` (blanks around it allowed), up
    /// to the comma that ends it or the end of the header, decoding it into place. `None`
    /// for anything else, which the general path then reads.
    fn well_formed_v1<'r>(&mut self, rest: &'r [u8]) -> Option<Option<&'r [u8]>> {
        let value = trim_start_blanks(rest).strip_prefix(b"v1=")?;
        if value.len() < 64 {
            return None;
        }
        let (hex, after) = value.split_at(64);
        let next = match trim_start_blanks(after) {
            [] => None,
            [b',', next @ ..] => Some(next),
            _ => return None,
        };
        self.decode_signature(hex).then_some(next)
    }

    /// The well-formed `v1` signatures, decoded, in header order.
    pub(crate) fn signatures(&self) -> impl Iterator<Item = &[u8; 32]> {
        let inline = self.v1_valid.min(INLINE_SIGNATURES);
        self.inline[..inline].iter().chain(&self.spilled)
    }
}

/// `t=<1 to 19 digits>,` at the very start of a header: the digits and what follows the
/// comma. `None` for anything else (blanks, no comma, other keys), which the general
/// path then reads.
fn plain_timestamp_entry(header: &[u8]) -> Option<(&[u8], &[u8])> {
    let after = header.strip_prefix(b"t=")?;
    let len = after.iter().take_while(|b| b.is_ascii_digit()).count();
    match after.get(len) {
        Some(b',') if (1..=19).contains(&len) => Some((&after[..len], &after[len + 1..])),
        _ => None,
    }
}

/// `digits` (already checked to be ASCII digits) without its leading zeros; `"0"` for zero.
fn without_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&b| b == b'0').count();
    match &digits[zeros.min(digits.len().saturating_sub(1))..] {
        [] => b"0",
        rest => rest,
    }
}

fn trim_start_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Strips the spaces and tabs around a header entry.
fn trim_blanks(s: &[u8]) -> &[u8] {
    let mut s = trim_start_blanks(s);
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// 1 if two MACs differ anywhere in their 32 bytes, else 0, in constant time: the
/// differences are folded together without a branch or an early exit. The caller
/// combines the results of all candidates and passes only that through `subtle`.
fn differs32(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    // The high bit of `diff | -diff` is set exactly when `diff` is not zero.
    (diff | diff.wrapping_neg()) >> 7
}

/// A plain non-negative decimal of 1 to 19 digits that fits in an `i64`.
fn parse_timestamp(bytes: &[u8]) -> Result<i64, MalformedHeader> {
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(MalformedHeader::InvalidTimestamp);
    }
    // Up to 18 digits always fit in an i64; only the 19th needs checked arithmetic.
    let (head, last) = bytes.split_at(bytes.len().min(18));
    let n = head.iter().fold(0i64, |n, &b| n * 10 + i64::from(b - b'0'));
    last.iter()
        .try_fold(n, |n, &b| {
            n.checked_mul(10)?.checked_add(i64::from(b - b'0'))
        })
        .ok_or(MalformedHeader::InvalidTimestamp)
}

/// Decodes exactly 64 hex characters (either case); anything else is `None`, and never
/// matches. The value is public (it came in the request), so this need not be
/// constant time; the comparison with the expected MAC is. Written without a branch or
/// a table lookup per byte, so that it vectorizes.
fn decode_hex32(value: &[u8], out: &mut [u8; 32]) -> bool {
    let Ok(hex) = <&[u8; 64]>::try_from(value) else {
        return false;
    };
    let mut valid = true;
    let mut nibbles = [0u8; 64];
    for (n, &c) in nibbles.iter_mut().zip(hex) {
        valid &= c.is_ascii_hexdigit();
        // Digits are 0x30..=0x39 (c >> 6 == 0); letters are 0x41..=0x46 and 0x61..=0x66
        // (c >> 6 == 1), whose low nibble plus 9 is their value. At most 15 + 27: no overflow.
        *n = (c & 0x0F) + 9 * (c >> 6);
    }
    if !valid {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(nibbles.chunks_exact(2)) {
        *o = (pair[0] << 4) | pair[1];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_header() {
        let sig = "a".repeat(64);
        let header = format!("t=123,v1={sig}");
        let p = ParsedHeader::parse(&header).unwrap();
        assert_eq!(p.timestamp, 123);
        assert_eq!(p.v1_valid, 1);
        assert_eq!(p.signatures().count(), 1);
        assert_eq!(p.v1_seen, 1);
        assert!(!p.v0_present);
    }

    #[test]
    fn timestamp_grammar() {
        for ok in ["0", "1", "0001", "1700000000", "9223372036854775807"] {
            assert!(parse_timestamp(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "+1",
            "-1",
            "1.5",
            "0x10",
            " 1",
            "1e3",
            "9223372036854775808",
            "12345678901234567890",
            "١٢",
        ] {
            assert_eq!(
                parse_timestamp(bad.as_bytes()),
                Err(MalformedHeader::InvalidTimestamp),
                "{bad}"
            );
        }
    }

    #[test]
    fn hex_decoding_is_exact() {
        fn decode(hex: &[u8]) -> Option<[u8; 32]> {
            let mut out = [0u8; 32];
            decode_hex32(hex, &mut out).then_some(out)
        }
        assert!(decode("0".repeat(64).as_bytes()).is_some());
        assert!(decode("A".repeat(64).as_bytes()).is_some());
        assert!(decode("0".repeat(63).as_bytes()).is_none());
        assert!(decode("0".repeat(65).as_bytes()).is_none());
        assert!(decode("g".repeat(64).as_bytes()).is_none());
        assert!(decode(b"").is_none());
        let mut mixed = *b"00112233445566778899aabbccddeeffAABBCCDDEEFF0123456789abcdefABCD";
        assert_eq!(decode(&mixed).unwrap()[..4], [0x00, 0x11, 0x22, 0x33]);
        for bad in [b'g', b'G', b' ', 0x80, 0xFF, b'/', b':', b'@', b'`'] {
            mixed[17] = bad;
            assert!(decode(&mixed).is_none(), "{bad:#x}");
        }
    }

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
    fn trims_only_blanks() {
        assert_eq!(trim_blanks(b" \t v1=ab \t"), b"v1=ab");
        assert_eq!(trim_blanks(b"  "), b"");
        assert_eq!(trim_blanks(b"\nx"), b"\nx");
    }

    #[test]
    fn timestamp_digits_are_signed_without_leading_zeros() {
        assert_eq!(without_leading_zeros(b"0"), b"0");
        assert_eq!(without_leading_zeros(b"000"), b"0");
        assert_eq!(without_leading_zeros(b"0042"), b"42");
        assert_eq!(without_leading_zeros(b"1700000000"), b"1700000000");
        let p = ParsedHeader::parse("t=0042,v1=x").unwrap();
        assert_eq!((p.timestamp, p.timestamp_digits), (42, &b"42"[..]));
    }

    #[test]
    fn more_signatures_than_fit_inline_are_all_kept() {
        let sigs: Vec<String> = (0..7u8).map(|i| format!("{i:02x}").repeat(32)).collect();
        let header = format!(
            "t=1, v1={} ,v1=zz,{}",
            sigs[0],
            sigs[1..]
                .iter()
                .map(|s| format!("v1={s}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let p = ParsedHeader::parse(&header).unwrap();
        assert_eq!((p.v1_seen, p.v1_valid), (8, 7));
        let got: Vec<u8> = p.signatures().map(|s| s[0]).collect();
        assert_eq!(got, (0..7u8).collect::<Vec<_>>());
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
