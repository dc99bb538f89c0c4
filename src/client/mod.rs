//! Talking back to Stripe: a small, read-only Stripe API client.
//!
//! [`StripeClient`] is the trait (always built, no dependencies): retrieve a snapshot
//! [`Event`] or a thin [`EventNotification`], list either family, and fetch an object by
//! the URL a thin event gives. `HttpClient` (feature `client`) implements it over HTTPS
//! with retries, a deadline, a concurrency cap and a rate limit; the fake Stripe API in
//! `testing::FakeStripe` (feature `testing`) lets tests run it without a network.
//!
//! On top of the trait:
//!
//! - [`EventNotification::fetch_related_object`] and [`Event::fetch_latest_object`]
//!   return a [`Fetched`] object: raw JSON always, typed for the objects in
//!   [`objects`](crate::objects) ([`FetchedObject`]);
//! - [`FetchLatest`] wraps an [`EventHandler`](crate::EventHandler) so that, for the
//!   types you choose, it runs on the object as it is *now*, fetched from the API, and
//!   never on the event's (possibly stale) snapshot.
//!
//! Every call takes a [`RequestContext`]: which account it is for (`Stripe-Account` for a
//! snapshot event's `account`, `Stripe-Context` for a thin event's `context`) and which
//! event triggered it.

mod fetch;
#[cfg(feature = "client")]
mod http;
#[cfg(any(feature = "client", feature = "testing"))]
pub(crate) mod http_date;
pub(crate) mod paths;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{Event, EventId, EventNotification, ParseError};

pub use fetch::{FetchLatest, FetchLatestError, Fetched, FetchedObject, WhenGone};
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use http::{
    HttpClient, DEFAULT_BASE_URL, DEFAULT_BUCKET_RATE, DEFAULT_DEADLINE, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENCY,
};
pub use paths::object_path;

/// The Stripe API version the client sends (`Stripe-Version`) and the crate's types
/// follow.
pub const API_VERSION: &str = "2026-10-28.endive";

/// A Stripe secret or restricted API key (`sk_…`, `rk_…`). `Debug` never prints it, and
/// no error of this module contains it.
///
/// ```
/// use stripe_webhooks::client::ApiKey;
///
/// let key = ApiKey::new("sk_test_123")?;
/// assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
/// # Ok::<(), stripe_webhooks::client::ApiKeyError>(())
/// ```
#[derive(Clone)]
pub struct ApiKey(Arc<str>);

/// Why a string could not become an [`ApiKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// The key was the empty string (often an unset environment variable).
    #[error("api key is empty")]
    Empty,
    /// The key starts or ends with whitespace, usually a stray newline.
    #[error("api key has leading or trailing whitespace")]
    SurroundingWhitespace,
    /// The key has a character that cannot go in an HTTP header.
    #[error("api key has a character that cannot go in a header")]
    InvalidCharacter,
}

impl ApiKey {
    /// Wraps a key as shown in the Dashboard.
    ///
    /// [`HttpClient`] takes the key out of any answer that quotes it (a proxy or a wrong
    /// base URL echoing the request), so that no error built from the answer carries it;
    /// but not a key under 20 characters (a proxy's token, not Stripe's), which may be
    /// the answer's own text: the answer's data is never changed.
    ///
    /// # Errors
    ///
    /// - [`ApiKeyError::Empty`] for an empty string;
    /// - [`ApiKeyError::SurroundingWhitespace`] if it starts or ends with whitespace;
    /// - [`ApiKeyError::InvalidCharacter`] for a control or non-ASCII character.
    pub fn new(key: impl AsRef<str>) -> Result<Self, ApiKeyError> {
        let key = key.as_ref();
        if key.is_empty() {
            return Err(ApiKeyError::Empty);
        }
        if key.trim() != key {
            return Err(ApiKeyError::SurroundingWhitespace);
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiKeyError::InvalidCharacter);
        }
        Ok(Self(Arc::from(key)))
    }

    /// The key, for the `Authorization` header only.
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is a live mode key (`sk_live_…`, `rk_live_…`: `Some(true)`), a test
    /// mode one (`sk_test_…`, `rk_test_…`: `Some(false)`), or neither (`None`: a key in
    /// another shape, an organization key, a proxy's token).
    ///
    /// ```
    /// use stripe_webhooks::client::ApiKey;
    ///
    /// assert_eq!(ApiKey::new("sk_live_x")?.livemode(), Some(true));
    /// assert_eq!(ApiKey::new("rk_test_x")?.livemode(), Some(false));
    /// assert_eq!(ApiKey::new("token")?.livemode(), None);
    /// # Ok::<(), stripe_webhooks::client::ApiKeyError>(())
    /// ```
    pub fn livemode(&self) -> Option<bool> {
        let mode = ["sk_", "rk_"].iter().find_map(|p| self.0.strip_prefix(p))?;
        if mode.starts_with("live_") {
            Some(true)
        } else if mode.starts_with("test_") {
            Some(false)
        } else {
            None
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Which account a request is for, and which event triggered it.
///
/// ```
/// use stripe_webhooks::client::RequestContext;
///
/// let platform = RequestContext::platform();
/// assert_eq!(platform.stripe_account(), None);
/// let connected = RequestContext::platform().with_stripe_account("acct_1");
/// assert_eq!(connected.stripe_account(), Some("acct_1"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestContext {
    stripe_account: Option<String>,
    stripe_context: Option<String>,
    trigger_event: Option<EventId>,
}

impl RequestContext {
    /// The platform's own account: no `Stripe-Account` or `Stripe-Context` header.
    pub fn platform() -> Self {
        Self::default()
    }

    /// For fetching what a snapshot event is about: `Stripe-Account` is the event's
    /// `account` (Connect), if any; an event with only a `context` (from an organization
    /// or Accounts v2 destination) sends it as `Stripe-Context`.
    pub fn for_event(event: &Event) -> Self {
        let account = event.envelope().account();
        Self {
            stripe_account: account.map(str::to_owned),
            stripe_context: account
                .is_none()
                .then(|| event.context().map(str::to_owned))
                .flatten(),
            trigger_event: None,
        }
    }

    /// For fetching a thin event or its related object: `Stripe-Context` is the event's
    /// [`context`](EventNotification::context), if any, and `Stripe-Request-Trigger`
    /// names the event (`event=evt_…`), as Stripe's SDKs send.
    pub fn for_notification(notification: &EventNotification) -> Self {
        Self {
            stripe_account: None,
            stripe_context: notification.context.clone(),
            trigger_event: Some(notification.id.clone()),
        }
    }

    /// Sends `Stripe-Account: <account>` (a connected account, `acct_…`) instead of any
    /// `Stripe-Context`: Stripe takes one or the other (its SDKs refuse both), so the last
    /// one set wins.
    ///
    /// ```
    /// use stripe_webhooks::client::RequestContext;
    ///
    /// let c = RequestContext::platform()
    ///     .with_stripe_context("acct_1")
    ///     .with_stripe_account("acct_2");
    /// assert_eq!((c.stripe_account(), c.stripe_context()), (Some("acct_2"), None));
    /// ```
    #[must_use]
    pub fn with_stripe_account(mut self, account: impl Into<String>) -> Self {
        self.stripe_account = Some(account.into());
        self.stripe_context = None;
        self
    }

    /// Sends `Stripe-Context: <context>` (an account or organization context) instead of
    /// any `Stripe-Account`: the last one set wins, as for
    /// [`with_stripe_account`](Self::with_stripe_account).
    #[must_use]
    pub fn with_stripe_context(mut self, context: impl Into<String>) -> Self {
        self.stripe_context = Some(context.into());
        self.stripe_account = None;
        self
    }

    /// Sends `Stripe-Request-Trigger: event=<id>`.
    #[must_use]
    pub fn with_trigger_event(mut self, id: impl Into<EventId>) -> Self {
        self.trigger_event = Some(id.into());
        self
    }

    /// The `Stripe-Account` header's value, if any.
    pub fn stripe_account(&self) -> Option<&str> {
        self.stripe_account.as_deref()
    }

    /// The `Stripe-Context` header's value, if any.
    pub fn stripe_context(&self) -> Option<&str> {
        self.stripe_context.as_deref()
    }

    /// The event named in `Stripe-Request-Trigger`, if any.
    pub fn trigger_event(&self) -> Option<&EventId> {
        self.trigger_event.as_ref()
    }

    /// The headers this context adds to a request, as `(name, value)`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(account) = &self.stripe_account {
            headers.push(("Stripe-Account", account.clone()));
        }
        if let Some(context) = &self.stripe_context {
            headers.push(("Stripe-Context", context.clone()));
        }
        if let Some(id) = &self.trigger_event {
            headers.push(("Stripe-Request-Trigger", format!("event={id}")));
        }
        headers
    }
}

/// An error answer from the Stripe API: its status and Stripe's error body
/// (`{"error": {"type", "code", "message", …}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status, for example 404.
    pub status: u16,
    /// Stripe's error `type`: `invalid_request_error` (a 429 too, with code
    /// `rate_limit`), `api_error`, `card_error`, `idempotency_error`…
    pub error_type: Option<String>,
    /// Stripe's error `code`, for example `resource_missing`.
    pub code: Option<String>,
    /// Stripe's error `param`: the parameter the error is about, for example `id` or
    /// `starting_after`.
    pub param: Option<String>,
    /// Stripe's human-readable `message`.
    pub message: Option<String>,
    /// The `Request-Id` response header (`req_…`), for Stripe's support and logs.
    pub request_id: Option<String>,
    /// The `Stripe-Should-Retry` response header, when Stripe sent one.
    pub should_retry: Option<bool>,
}

impl ApiError {
    /// Builds the error from a status, the response body and two response headers. A
    /// body that is not Stripe's error shape leaves the fields `None`.
    pub fn from_response(
        status: u16,
        body: &str,
        request_id: Option<String>,
        should_retry: Option<bool>,
    ) -> Self {
        #[derive(Deserialize)]
        struct Body {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(rename = "type", default)]
            error_type: Option<String>,
            #[serde(default)]
            code: Option<String>,
            // Read leniently: an error whose `param` is not a string keeps its other
            // fields.
            #[serde(default)]
            param: Option<serde_json::Value>,
            #[serde(default)]
            message: Option<String>,
        }
        let inner = serde_json::from_str::<Body>(body).ok().map(|b| b.error);
        let (error_type, code, param, message) = match inner {
            Some(i) => {
                let param = i.param.and_then(|p| p.as_str().map(str::to_owned));
                (i.error_type, i.code, param, i.message)
            }
            None => (None, None, None, None),
        };
        Self {
            status,
            error_type,
            code,
            param,
            message,
            request_id,
            should_retry,
        }
    }

    /// Whether the object does not exist (404): deleted, or never there.
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }

    /// Whether this is a rate-limit answer (429).
    pub fn is_rate_limited(&self) -> bool {
        self.status == 429
    }

    /// Whether a retry may succeed: never for a redirect (3xx: the client follows none,
    /// and asking again is answered the same), else `Stripe-Should-Retry` when Stripe
    /// sent it, else a 409 (lock conflict), 429 or 5xx status.
    pub fn is_retryable(&self) -> bool {
        !(300..400).contains(&self.status)
            && self
                .should_retry
                .unwrap_or(self.status == 409 || self.status == 429 || self.status >= 500)
    }
}

/// An error on its own, for code that handles it apart from [`ClientError`] (`?` into a
/// `Box<dyn Error>`, `anyhow`).
impl std::error::Error for ApiError {}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stripe answered {}", self.status)?;
        if let Some(t) = &self.error_type {
            write!(f, " {t}")?;
        }
        if let Some(c) = &self.code {
            write!(f, " ({c})")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        if let Some(r) = &self.request_id {
            write!(f, " [request {r}]")?;
        }
        Ok(())
    }
}

/// Why a Stripe API call failed. No variant ever holds the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Stripe answered with an error that retrying would not fix (or
    /// `Stripe-Should-Retry: false`). A 404 is here with `status` 404: the object was
    /// deleted or never existed ([`ApiError::is_not_found`]). Boxed, so that every
    /// `Result` of the client stays small; `ClientError::from(api_error)` builds it.
    #[error("{0}")]
    Api(Box<ApiError>),
    /// The client gave up after `attempts` attempts, each failed with a retryable error
    /// (429, 5xx, network), or sooner when the server asked to wait more than a minute
    /// (`Retry-After`) and the deadline is further off than that wait (a wait past the
    /// deadline ends the call as [`DeadlineExceeded`](Self::DeadlineExceeded) first, as
    /// under the default 30 s one); `last` is the last one.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many requests were sent.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<ClientError>,
    },
    /// The call's total deadline passed (or the next wait would pass it) before an
    /// answer; `last` is the last attempt's error, if one had finished.
    #[error("deadline of {deadline:?} exceeded after {attempts} attempts{}", last_suffix(.last))]
    DeadlineExceeded {
        /// The deadline.
        deadline: std::time::Duration,
        /// How many requests were sent.
        attempts: u32,
        /// The last finished attempt's error.
        #[source]
        last: Option<Box<ClientError>>,
    },
    /// The request did not get an answer: connection refused or dropped, timeout, TLS.
    #[error("network error: {0}")]
    Network(#[source] Box<dyn StdError + Send + Sync>),
    /// The connection failed in a way a retry would not fix, so it was sent once: the
    /// server's certificate was refused (expired, an unknown issuer, another host's
    /// name: a proxy that intercepts TLS, or a base URL to the wrong host), the two
    /// sides share no TLS version or cipher, or a client given to `with_reqwest` followed
    /// redirects until its limit (the API never redirects; `HttpClient`'s own client
    /// follows none, and answers a 3xx as an [`Api`](Self::Api) error, not retried). Fix
    /// the set-up; waiting does not help.
    #[error("{reason}; not retried: {source}")]
    Refused {
        /// What was refused, as `tls: invalid peer certificate: UnknownIssuer`.
        reason: String,
        /// The transport's error.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The answer's body was not what the call expects (for example not an event).
    #[error("unexpected response body from {path}: {message}")]
    Decode {
        /// The request path.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The URL was refused: an object URL must be a path on the API host (`/v1/…`,
    /// `/v2/…`), never an absolute URL to another host.
    #[error("refused url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A header the [`RequestContext`] asks for cannot be sent: its value (an event's
    /// `account` or `context`, or one given to the context) holds characters HTTP
    /// headers do not allow. Nothing was sent.
    #[error("cannot send header {name}: {value:?} is not a valid header value")]
    InvalidHeader {
        /// The header's name (`Stripe-Account`, `Stripe-Context` or
        /// `Stripe-Request-Trigger`).
        name: &'static str,
        /// The value as given.
        value: String,
    },
    /// There is nothing to fetch: the thin event has no related object, or the event's
    /// object has no `id`.
    #[error("nothing to fetch: {0}")]
    NothingToFetch(&'static str),
    /// The object was deleted: Stripe answered its deleted stub (`{"id": …, "deleted":
    /// true}`, as it answers for a deleted customer) rather than a 404. From
    /// [`Event::refetched`](crate::Event::refetched), which has no object to rebuild the
    /// event around.
    #[error("the object at {path} was deleted")]
    ObjectDeleted {
        /// The object's API path.
        path: String,
    },
    /// The crate knows no API path for this object type (see [`object_path`]).
    #[error("no known api path for objects of type {object_type:?}")]
    NoApiPath {
        /// The object's type, as in its `object` field.
        object_type: String,
    },
    /// The client's key is of the other mode than the event (a test mode key for a live
    /// mode event, or the reverse), so nothing was sent: Stripe would answer 404
    /// `resource_missing`, as if the object were deleted.
    ///
    /// Mostly the key is wrong: not taken as gone
    /// ([`is_resource_missing`](Self::is_resource_missing) is false), so that
    /// `FetchLatest` under `WhenGone::Skip` does not skip, nor a tie under
    /// `TiePolicy::Fetch` run on the snapshot, every event until the key is put right.
    /// One case is expected: a connected account's test mode event (`connected`: it
    /// names an account or a context) with a live key, since Stripe sends connected
    /// accounts' test events to a platform's live Connect endpoint too, and no one key
    /// fetches both modes' objects. That one is taken as gone.
    /// [`Processor::with_livemode`](crate::Processor::with_livemode) answers the other
    /// mode's events without running anything.
    #[error(
        "{} mode event fetched with {} mode api key: its objects cannot be fetched with this key{}",
        mode(*.event_livemode),
        mode(!*.event_livemode),
        if *.connected { " (a connected account's event)" } else { "" }
    )]
    WrongMode {
        /// Whether the event is a live mode one.
        event_livemode: bool,
        /// Whether the event is a connected account's (it names an account or a
        /// context).
        connected: bool,
    },
}

fn mode(live: bool) -> &'static str {
    if live {
        "a live"
    } else {
        "a test"
    }
}

/// Refuses a fetch for an event of `livemode` (a connected account's when `connected`)
/// with a key of the other mode.
pub(crate) fn check_mode(
    client: &dyn StripeClient,
    livemode: bool,
    connected: bool,
) -> Result<(), ClientError> {
    match client.livemode() {
        Some(key) if key != livemode => Err(ClientError::WrongMode {
            event_livemode: livemode,
            connected,
        }),
        _ => Ok(()),
    }
}

fn last_suffix(last: &Option<Box<ClientError>>) -> String {
    match last {
        Some(e) => format!(": {e}"),
        None => String::new(),
    }
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        ClientError::Api(Box::new(e))
    }
}

impl ClientError {
    /// The API error behind this error (directly, or the last attempt's), if any.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e.as_ref()),
            ClientError::RetriesExhausted { last, .. } => last.api_error(),
            ClientError::DeadlineExceeded { last, .. } => last.as_ref()?.api_error(),
            _ => None,
        }
    }

    /// Whether the answer was a 404, for any reason: an object that does not exist, but
    /// also a wrong base URL or a proxy's own page. [`is_resource_missing`](Self::is_resource_missing)
    /// says whether Stripe said the object is gone.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api(e) if e.is_not_found())
    }

    /// Whether the object is gone for good, in Stripe's own words: a 404 with the code
    /// `resource_missing` (not any 404: a wrong base URL or a proxy's own 404 page says
    /// nothing about the object), or a deleted object's stub
    /// ([`ObjectDeleted`](Self::ObjectDeleted)), or a connected account's test mode event
    /// fetched with a live key ([`WrongMode`](Self::WrongMode), `connected`), whose
    /// objects no request with this key reaches. What `FetchLatest` (with
    /// `WhenGone::Skip`) and `TiePolicy::Fetch` take as deleted. A request made for the
    /// wrong account gets the same 404. (Any other event of the other mode than an
    /// `HttpClient`'s key is refused before sending, and is not taken as gone.)
    pub fn is_resource_missing(&self) -> bool {
        // Stripe's own answer only: a 404 it said to retry (`Stripe-Should-Retry`), whose
        // retries then ran out, is not "gone for good".
        match self {
            ClientError::ObjectDeleted { .. } => true,
            // Stripe sends a connected account's test events to a live endpoint too,
            // never its live events to a test one: a live event with a test key is a
            // wrong key, always.
            ClientError::WrongMode {
                event_livemode,
                connected,
            } => *connected && !*event_livemode,
            ClientError::Api(e) => {
                e.is_not_found() && e.code.as_deref() == Some("resource_missing")
            }
            _ => false,
        }
    }

    /// Whether the call failed on rate limits (the last answer was a 429).
    pub fn is_rate_limited(&self) -> bool {
        self.api_error().is_some_and(ApiError::is_rate_limited)
    }

    fn decode(path: &str, message: impl fmt::Display) -> Self {
        ClientError::Decode {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }
}

/// Checks that `url` is a path on the API host: it starts with `/v1/` or `/v2/`, has no
/// scheme, host, `.` or `..` segment, backslash, fragment or control character, and no
/// escape that is malformed or stands for one of those or a `/`. An escaped `%` passes
/// when the path decoded once more (as a server that decodes twice would read it) holds
/// no escape of those either: an id [`object_path`] escaped, such as `plan%3Agold` or
/// `50%25OFF` (the coupon `50%OFF`), passes; `a%252Fb` does not.
///
/// # Errors
///
/// [`ClientError::InvalidUrl`] when it is not.
pub fn check_api_path(url: &str) -> Result<(), ClientError> {
    let refuse = |reason| {
        Err(ClientError::InvalidUrl {
            url: url.to_owned(),
            reason,
        })
    };
    if url.contains("://") || url.starts_with("//") {
        return refuse("an absolute url; only paths on the api host are fetched");
    }
    if !(url.starts_with("/v1/") || url.starts_with("/v2/")) {
        return refuse("not a /v1/ or /v2/ path");
    }
    if url
        .bytes()
        .any(|b| b.is_ascii_control() || b == b'\\' || b == b'#' || b == b' ' || b == b'@')
    {
        return refuse("a character not allowed in an api path");
    }
    let path = url.split('?').next().unwrap_or(url);
    if path
        .split('/')
        .any(|s| s == ".." || s == "." || !harmless_escapes(s))
    {
        return refuse(
            "a dot segment, or an escape of a dot, slash, backslash or control character",
        );
    }
    Ok(())
}

/// Whether each `%` in a path segment starts an escape of two hex digits that stands
/// for a byte a segment may hold as data: not a `.`, `/`, `\` or control byte, which a
/// server decoding the path could read as a segment of its own or a traversal. Where one
/// stands for a `%`, the segment decoded once more is checked the same way (in it, a `%`
/// that starts no escape is data), and so on while escaped `%`s remain, for at most
/// [`MAX_ESCAPE_DEPTH`] decodings (an id escaped once needs one; each costs a pass over
/// the segment, so a segment escaped deeper is refused rather than peeled for ever).
fn harmless_escapes(segment: &str) -> bool {
    let mut decoded = std::borrow::Cow::Borrowed(segment);
    let mut well_formed = true;
    for _ in 0..=MAX_ESCAPE_DEPTH {
        let b = decoded.as_bytes();
        let mut escaped_percent = false;
        let harmless = b
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == b'%')
            .all(|(i, _)| {
                let hex = |j: usize| b.get(j).and_then(|c| char::from(*c).to_digit(16));
                match (hex(i + 1), hex(i + 2)) {
                    (Some(h), Some(l)) => {
                        let byte = u8::try_from(h * 16 + l).unwrap_or(0);
                        escaped_percent |= byte == b'%';
                        !(byte.is_ascii_control() || matches!(byte, b'.' | b'/' | b'\\'))
                    }
                    _ => !well_formed,
                }
            });
        if !harmless {
            return false;
        }
        if !escaped_percent {
            return true;
        }
        decoded = std::borrow::Cow::Owned(decode_escapes(&decoded, false));
        well_formed = false;
    }
    false
}

/// How many times [`harmless_escapes`] decodes a segment whose escapes stand for `%`.
const MAX_ESCAPE_DEPTH: usize = 3;

/// Parameters of `GET /v1/events` (snapshot events, newest first).
///
/// ```
/// use stripe_webhooks::client::ListEventsParams;
///
/// let params = ListEventsParams::new()
///     .with_types(["invoice.paid", "invoice.payment_failed"])
///     .with_created_gte(1_790_000_000)
///     .with_limit(100);
/// assert!(params.to_query().contains(&("types[]".to_owned(), "invoice.paid".to_owned())));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListEventsParams {
    /// `created[gte]`: created at or after (Unix seconds).
    pub created_gte: Option<i64>,
    /// `created[lt]`: created before (Unix seconds).
    pub created_lt: Option<i64>,
    /// `types[]`: only these types (Stripe takes up to 20).
    pub types: Vec<String>,
    /// `delivery_success`: only events whose delivery to every endpoint succeeded
    /// (`true`) or failed for some endpoint (`false`).
    pub delivery_success: Option<bool>,
    /// `starting_after`: the page after this event (the last of the previous page).
    pub starting_after: Option<EventId>,
    /// `ending_before`: the page before this event.
    pub ending_before: Option<EventId>,
    /// `limit`: 1 to 100 (Stripe's default is 10).
    pub limit: Option<u8>,
}

impl ListEventsParams {
    /// No filter: the newest 10 events.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `created[gte]`.
    #[must_use]
    pub fn with_created_gte(mut self, unix: i64) -> Self {
        self.created_gte = Some(unix);
        self
    }

    /// Sets `created[lt]`.
    #[must_use]
    pub fn with_created_lt(mut self, unix: i64) -> Self {
        self.created_lt = Some(unix);
        self
    }

    /// Sets `types[]`.
    #[must_use]
    pub fn with_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `delivery_success`.
    #[must_use]
    pub fn with_delivery_success(mut self, success: bool) -> Self {
        self.delivery_success = Some(success);
        self
    }

    /// Sets `starting_after`.
    #[must_use]
    pub fn with_starting_after(mut self, id: impl Into<EventId>) -> Self {
        self.starting_after = Some(id.into());
        self
    }

    /// Sets `ending_before`.
    #[must_use]
    pub fn with_ending_before(mut self, id: impl Into<EventId>) -> Self {
        self.ending_before = Some(id.into());
        self
    }

    /// Sets `limit`, clamped to Stripe's 1 to 100.
    #[must_use]
    pub fn with_limit(mut self, limit: u8) -> Self {
        self.limit = Some(limit.clamp(1, 100));
        self
    }

    /// The query string pairs, as Stripe spells them.
    pub fn to_query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if let Some(v) = self.created_gte {
            q.push(("created[gte]".to_owned(), v.to_string()));
        }
        if let Some(v) = self.created_lt {
            q.push(("created[lt]".to_owned(), v.to_string()));
        }
        for t in &self.types {
            q.push(("types[]".to_owned(), t.clone()));
        }
        if let Some(v) = self.delivery_success {
            q.push(("delivery_success".to_owned(), v.to_string()));
        }
        if let Some(v) = &self.starting_after {
            q.push(("starting_after".to_owned(), v.to_string()));
        }
        if let Some(v) = &self.ending_before {
            q.push(("ending_before".to_owned(), v.to_string()));
        }
        if let Some(v) = self.limit {
            q.push(("limit".to_owned(), v.clamp(1, 100).to_string()));
        }
        q
    }
}

/// One page of `GET /v1/events`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EventPage {
    /// The events, newest first.
    pub data: Vec<Event>,
    /// The events of the page that this crate could not read, newest first: not
    /// in [`data`](Self::data), and the page still counts them (they are where
    /// [`next_params`](Self::next_params) goes on from, when one is last).
    pub unreadable: Vec<UnreadableEvent>,
    /// Whether there are more events past this page in the direction of the walk: older
    /// ones, or newer ones for a walk with `ending_before`.
    pub has_more: bool,
    /// The page's first and last events' ids, read or not.
    ends: Option<(EventId, EventId)>,
}

/// An event Stripe listed that this crate cannot read as one (its parse, as a webhook
/// body's, refused it: a member Stripe's schema requires is missing or of another
/// type). Its id, and what else could be read of it, so that it
/// can be recorded rather than lost or left to stop every later listing:
/// [`Reconciler`](crate::reconcile::Reconciler) records it in the store as a failed
/// event, with `error` as the reason.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnreadableEvent {
    /// The event's id.
    pub id: EventId,
    /// Its `type`, if it is a string.
    pub event_type: Option<String>,
    /// Its `created`, in Unix seconds, if it could be read (v1: an integer; v2:
    /// RFC 3339).
    pub created: Option<i64>,
    /// A thin event's `snapshot_event` (its snapshot twin's id), if it is a string
    /// that is not empty: the key its delivery is claimed under.
    pub snapshot_event: Option<EventId>,
    /// Why it could not be read.
    pub error: ParseError,
    /// The event's JSON as listed.
    raw: String,
}

impl UnreadableEvent {
    /// The event's JSON as Stripe listed it.
    pub fn raw_json(&self) -> &str {
        &self.raw
    }
}

impl fmt::Debug for UnreadableEvent {
    // The JSON by its length only: it may carry customer data and client secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnreadableEvent")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("created", &self.created)
            .field("snapshot_event", &self.snapshot_event)
            .field("error", &self.error)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

/// A listed page's `data`: the events `parse` reads, the ones it refuses (each with its
/// id and what else can be read of it), and the first and last ids. An element without
/// a string `id` is the page's error: nothing could record it, and the walk could not
/// go on past it.
#[allow(clippy::type_complexity)]
fn read_listed<T>(
    path: &str,
    raw: &[Box<RawValue>],
    parse: fn(&[u8]) -> Result<T, ParseError>,
    id_of: fn(&T) -> &EventId,
) -> Result<(Vec<T>, Vec<UnreadableEvent>, Option<(EventId, EventId)>), ClientError> {
    #[derive(Deserialize)]
    struct Head {
        id: String,
        #[serde(default, rename = "type")]
        event_type: Option<serde_json::Value>,
        #[serde(default)]
        created: Option<serde_json::Value>,
        #[serde(default)]
        snapshot_event: Option<serde_json::Value>,
    }
    let mut read = Vec::with_capacity(raw.len());
    let mut unreadable = Vec::new();
    // Whether the page's first and last elements were read (else unreadable).
    let mut ends_read: Option<(bool, bool)> = None;
    for r in raw {
        let bytes = r.get().as_bytes();
        let was_read = match parse(bytes) {
            Ok(item) => {
                read.push(item);
                true
            }
            Err(error) => {
                let head: Head =
                    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
                        path: path.to_owned(),
                        message: format!("a listed event has no string `id` ({error}; {e})"),
                    })?;
                unreadable.push(UnreadableEvent {
                    id: EventId::new(head.id),
                    event_type: head.event_type.and_then(|t| t.as_str().map(str::to_owned)),
                    created: head.created.and_then(|c| match c {
                        serde_json::Value::String(s) => crate::event::rfc3339_seconds(&s),
                        other => other.as_i64(),
                    }),
                    snapshot_event: head
                        .snapshot_event
                        .and_then(|s| s.as_str().filter(|s| !s.is_empty()).map(EventId::new)),
                    error,
                    raw: r.get().to_owned(),
                });
                false
            }
        };
        ends_read = Some((ends_read.map_or(was_read, |(first, _)| first), was_read));
    }
    // Each list keeps the page's order: an end's id is its own list's first or last.
    let first = |was_read: bool| match was_read {
        true => read.first().map(id_of),
        false => unreadable.first().map(|u| &u.id),
    };
    let last = |was_read: bool| match was_read {
        true => read.last().map(id_of),
        false => unreadable.last().map(|u| &u.id),
    };
    let ends = ends_read
        .and_then(|(f, l)| first(f).zip(last(l)))
        .map(|(f, l)| (f.clone(), l.clone()));
    Ok((read, unreadable, ends))
}

impl EventPage {
    /// The parameters for the next page in the direction `params` walk: older events
    /// (`starting_after` set to this page's last, oldest event), or, for a walk towards
    /// newer events (`params` with `ending_before`), newer ones (`ending_before` set to
    /// this page's first, newest event). `None` when there is no next page, and when
    /// Stripe says there is more but the page is empty (no event to continue from: a
    /// caller that must not miss events treats `has_more` with an empty page as an
    /// error, as the reconciler does).
    pub fn next_params(&self, params: &ListEventsParams) -> Option<ListEventsParams> {
        if !self.has_more {
            return None;
        }
        let (first, last) = self.ends.as_ref()?;
        let mut next = params.clone();
        if params.ending_before.is_some() {
            next.starting_after = None;
            next.ending_before = Some(first.clone());
        } else {
            next.starting_after = Some(last.clone());
        }
        Some(next)
    }
}

/// Parameters of `GET /v2/core/events` (thin events).
///
/// ```
/// use stripe_webhooks::client::ListV2EventsParams;
///
/// let params = ListV2EventsParams::new().with_object_id("cus_1").with_limit(50);
/// assert!(params.to_query().contains(&("object_id".to_owned(), "cus_1".to_owned())));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListV2EventsParams {
    /// `object_id`: only events about this object.
    pub object_id: Option<String>,
    /// `types`: only these types.
    pub types: Vec<String>,
    /// `created[gt]` (RFC 3339).
    pub created_gt: Option<String>,
    /// `created[gte]` (RFC 3339).
    pub created_gte: Option<String>,
    /// `created[lt]` (RFC 3339).
    pub created_lt: Option<String>,
    /// `created[lte]` (RFC 3339).
    pub created_lte: Option<String>,
    /// `limit`: 1 to 100.
    pub limit: Option<u8>,
}

impl ListV2EventsParams {
    /// No filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `object_id`.
    #[must_use]
    pub fn with_object_id(mut self, id: impl Into<String>) -> Self {
        self.object_id = Some(id.into());
        self
    }

    /// Sets `types`.
    #[must_use]
    pub fn with_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `created[gt]` (RFC 3339, for example `testing::rfc3339(unix)`).
    #[must_use]
    pub fn with_created_gt(mut self, rfc3339: impl Into<String>) -> Self {
        self.created_gt = Some(rfc3339.into());
        self
    }

    /// Sets `created[gte]` (RFC 3339).
    #[must_use]
    pub fn with_created_gte(mut self, rfc3339: impl Into<String>) -> Self {
        self.created_gte = Some(rfc3339.into());
        self
    }

    /// Sets `created[lt]` (RFC 3339).
    #[must_use]
    pub fn with_created_lt(mut self, rfc3339: impl Into<String>) -> Self {
        self.created_lt = Some(rfc3339.into());
        self
    }

    /// Sets `created[lte]` (RFC 3339).
    #[must_use]
    pub fn with_created_lte(mut self, rfc3339: impl Into<String>) -> Self {
        self.created_lte = Some(rfc3339.into());
        self
    }

    /// Sets `limit`, clamped to 1 to 100.
    #[must_use]
    pub fn with_limit(mut self, limit: u8) -> Self {
        self.limit = Some(limit.clamp(1, 100));
        self
    }

    /// The query string pairs, as Stripe's SDKs spell a v2 list's query (stripe-node
    /// 23.1.0, API `2026-10-28.endive`): `types[0]`, `types[1]`, … (indexed, as v1
    /// arrays are: the SDKs' form since stripe-node 20.0.0; Stripe still takes the
    /// repeated `types=a&types=b` of before, deprecated) and the `created` object's
    /// members in brackets (`created[gte]`).
    pub fn to_query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if let Some(v) = &self.object_id {
            q.push(("object_id".to_owned(), v.clone()));
        }
        for (i, t) in self.types.iter().enumerate() {
            q.push((format!("types[{i}]"), t.clone()));
        }
        for (k, v) in [
            ("created[gt]", &self.created_gt),
            ("created[gte]", &self.created_gte),
            ("created[lt]", &self.created_lt),
            ("created[lte]", &self.created_lte),
        ] {
            if let Some(v) = v {
                q.push((k.to_owned(), v.clone()));
            }
        }
        if let Some(v) = self.limit {
            q.push(("limit".to_owned(), v.clamp(1, 100).to_string()));
        }
        q
    }
}

/// Where another page of `GET /v2/core/events` is: the `next_page_url` (or
/// `previous_page_url`) Stripe gave, which fetches that page as it is, its filters
/// included. It is followed as given, as Stripe's SDKs do: since API version
/// 2025-03-31.basil, Stripe takes no `page` parameter beside the list's filters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageToken(String);

impl PageToken {
    /// Wraps a `next_page_url` or `previous_page_url` (a path on the API host, with its
    /// query).
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A `next_page_url` / `previous_page_url`, if it is a page of the v2 event list on
    /// the API host.
    fn from_url(url: &str) -> Option<Self> {
        let path = url.split('?').next().unwrap_or(url);
        (path == V2_EVENTS && check_api_path(url).is_ok()).then(|| PageToken(url.to_owned()))
    }
}

/// The path of the v2 event list.
const V2_EVENTS: &str = "/v2/core/events";

/// One page of `GET /v2/core/events`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NotificationPage {
    /// The events, newest first.
    pub data: Vec<EventNotification>,
    /// The events of the page that this crate could not read, newest first (not in [`data`](Self::data)).
    pub unreadable: Vec<UnreadableEvent>,
    /// The next page's token, when there is one.
    pub next_page: Option<PageToken>,
    /// The previous page's token, when there is one.
    pub previous_page: Option<PageToken>,
}

/// A read-only Stripe API client: the few calls a webhook service needs to talk back to
/// Stripe. Only [`get`](Self::get) must be implemented; every other call is built on
/// it, so a test double is a few lines.
///
/// ```
/// use stripe_webhooks::async_trait;
/// use stripe_webhooks::client::{ClientError, RequestContext, StripeClient};
///
/// struct Canned;
///
/// #[async_trait]
/// impl StripeClient for Canned {
///     async fn get(&self, _: &RequestContext, path: &str, _: &[(String, String)]) -> Result<String, ClientError> {
///         Ok(format!(r#"{{"id":"cus_1","object":"customer","path":"{path}"}}"#))
///     }
/// }
///
/// let ctx = RequestContext::platform();
/// let raw = tokio::runtime::Runtime::new()?.block_on(Canned.retrieve_object(&ctx, "/v1/customers/cus_1"))?;
/// assert!(raw.get().contains("cus_1"));
/// // An object URL is a path on the API host, never another host:
/// let err = tokio::runtime::Runtime::new()?.block_on(Canned.retrieve_object(&ctx, "https://evil.example/v1/x"));
/// assert!(matches!(err, Err(ClientError::InvalidUrl { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[async_trait]
pub trait StripeClient: Send + Sync + 'static {
    /// `GET {path}?{query}` on the API host, with the context's headers; the body of a
    /// 2xx answer.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`]: [`Api`](ClientError::Api) for an error answer,
    /// [`InvalidUrl`](ClientError::InvalidUrl) for a path that is not on the API host,
    /// and the transport's own.
    async fn get(
        &self,
        ctx: &RequestContext,
        path: &str,
        query: &[(String, String)],
    ) -> Result<String, ClientError>;

    /// The mode of its API key ([`ApiKey::livemode`]), when it knows it: fetching an
    /// event's object is refused ([`ClientError::WrongMode`]) when the event is of the
    /// other mode. The default: `None` (not known; nothing refused).
    fn livemode(&self) -> Option<bool> {
        None
    }

    /// `GET /v1/events/{id}`: a snapshot event, parsed as a webhook body is.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`ClientError::Decode`] if the body is not an event.
    async fn retrieve_event(&self, ctx: &RequestContext, id: &str) -> Result<Event, ClientError> {
        let path = format!("/v1/events/{}", path_segment(id)?);
        let body = self.get(ctx, &path, &[]).await?;
        Event::from_slice(body.as_bytes()).map_err(|e| ClientError::decode(&path, e))
    }

    /// `GET /v2/core/events/{id}`: a thin event with its `data` and `changes`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`ClientError::Decode`] if the body is not a thin event.
    async fn retrieve_v2_event(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<EventNotification, ClientError> {
        let path = format!("/v2/core/events/{}", path_segment(id)?);
        let body = self.get(ctx, &path, &[]).await?;
        EventNotification::from_slice(body.as_bytes()).map_err(|e| ClientError::decode(&path, e))
    }

    /// `GET {url}` for an object URL a thin event gives (`/v1/customers/cus_…`), as raw
    /// JSON. The URL must be a path on the API host ([`check_api_path`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidUrl`] for any other URL; as [`get`](Self::get); and
    /// [`ClientError::Decode`] if the body is not JSON.
    async fn retrieve_object(
        &self,
        ctx: &RequestContext,
        url: &str,
    ) -> Result<Box<RawValue>, ClientError> {
        check_api_path(url)?;
        let (path, query) = split_query(url);
        let body = self.get(ctx, path, &query).await?;
        serde_json::from_str::<Box<RawValue>>(&body).map_err(|e| ClientError::decode(path, e))
    }

    /// `GET /v1/events`: one page of snapshot events, newest first. Follow
    /// [`EventPage::next_params`] for the next.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`ClientError::Decode`] if the body is not a list of
    /// events.
    async fn list_events(
        &self,
        ctx: &RequestContext,
        params: &ListEventsParams,
    ) -> Result<EventPage, ClientError> {
        // `has_more` is required: read as `false` when missing, it would end the walk
        // early and a cursor pass would move past the pages it never listed.
        #[derive(Deserialize)]
        struct List {
            data: Vec<Box<RawValue>>,
            has_more: bool,
        }
        let path = "/v1/events";
        let body = self.get(ctx, path, &params.to_query()).await?;
        let list: List = serde_json::from_str(&body).map_err(|e| ClientError::decode(path, e))?;
        let (data, unreadable, ends) = read_listed(path, &list.data, Event::from_slice, Event::id)?;
        Ok(EventPage {
            data,
            unreadable,
            has_more: list.has_more,
            ends,
        })
    }

    /// `GET /v2/core/events`: one page of thin events; `page` is where the previous page
    /// said the next one is ([`NotificationPage::next_page`], its `next_page_url`, which
    /// carries the filters: `params` are for the first page, `page` `None`).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); [`ClientError::Decode`] if the body is not a list of thin
    /// events, or its `next_page_url` is not a page of this list; and
    /// [`ClientError::InvalidUrl`] for a `page` that is not one (nothing is sent).
    async fn list_v2_events(
        &self,
        ctx: &RequestContext,
        params: &ListV2EventsParams,
        page: Option<&PageToken>,
    ) -> Result<NotificationPage, ClientError> {
        // `next_page_url` must be there (Stripe writes `null` on the last page): read as
        // the last page when missing, it would end the walk early.
        #[derive(Deserialize)]
        struct List {
            data: Vec<Box<RawValue>>,
            #[serde(deserialize_with = "present")]
            next_page_url: Option<String>,
            #[serde(default)]
            previous_page_url: Option<String>,
        }
        // A page after the first is its URL, as Stripe gave it (its filters in it).
        let (path, query) = match page {
            None => (V2_EVENTS, params.to_query()),
            Some(page) => match PageToken::from_url(page.as_str()) {
                // Read as a form, as the query is sent: a `+` goes back as `+`, and
                // `%2B` as `%2B`, the very bytes Stripe wrote.
                Some(_) => split_query(page.as_str()),
                None => {
                    return Err(ClientError::InvalidUrl {
                        url: page.as_str().to_owned(),
                        reason: "not a page of /v2/core/events on the api host",
                    })
                }
            },
        };
        let body = self.get(ctx, path, &query).await?;
        let list: List = serde_json::from_str(&body).map_err(|e| ClientError::decode(path, e))?;
        let (data, unreadable, _) =
            read_listed(path, &list.data, EventNotification::from_slice, |n| &n.id)?;
        // A next page that cannot be followed is an error, never the end of the list:
        // the pages after it (older events) would be skipped.
        let next_page = match list.next_page_url.as_deref() {
            None => None,
            Some(url) => Some(PageToken::from_url(url).ok_or_else(|| ClientError::Decode {
                path: path.to_owned(),
                message: format!("next_page_url {url:?} is not a page of {V2_EVENTS}"),
            })?),
        };
        Ok(NotificationPage {
            data,
            unreadable,
            next_page,
            previous_page: list
                .previous_page_url
                .as_deref()
                .and_then(PageToken::from_url),
        })
    }
}

#[async_trait]
impl<C: StripeClient + ?Sized> StripeClient for Arc<C> {
    async fn get(
        &self,
        ctx: &RequestContext,
        path: &str,
        query: &[(String, String)],
    ) -> Result<String, ClientError> {
        (**self).get(ctx, path, query).await
    }

    fn livemode(&self) -> Option<bool> {
        (**self).livemode()
    }

    // Every method, not only `get`: a client's own (a cache, a test double) is kept.
    async fn retrieve_event(&self, ctx: &RequestContext, id: &str) -> Result<Event, ClientError> {
        (**self).retrieve_event(ctx, id).await
    }

    async fn retrieve_v2_event(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<EventNotification, ClientError> {
        (**self).retrieve_v2_event(ctx, id).await
    }

    async fn retrieve_object(
        &self,
        ctx: &RequestContext,
        url: &str,
    ) -> Result<Box<RawValue>, ClientError> {
        (**self).retrieve_object(ctx, url).await
    }

    async fn list_events(
        &self,
        ctx: &RequestContext,
        params: &ListEventsParams,
    ) -> Result<EventPage, ClientError> {
        (**self).list_events(ctx, params).await
    }

    async fn list_v2_events(
        &self,
        ctx: &RequestContext,
        params: &ListV2EventsParams,
        page: Option<&PageToken>,
    ) -> Result<NotificationPage, ClientError> {
        (**self).list_v2_events(ctx, params, page).await
    }
}

/// A member that must be present, `null` or not: with `deserialize_with`, serde reads a
/// missing one as an error instead of `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// An id as one path segment: refused if it could change the path.
fn path_segment(id: &str) -> Result<&str, ClientError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ClientError::InvalidUrl {
            url: id.to_owned(),
            reason: "an id must be letters, digits, `_` or `-`",
        });
    }
    Ok(id)
}

/// `/v1/x?a=1&b=2` into the path and its query pairs, decoded as a form (`+` is a
/// space), as they are encoded again when sent.
fn split_query(url: &str) -> (&str, Vec<(String, String)>) {
    match url.split_once('?') {
        None => (url, Vec::new()),
        Some((path, query)) => (
            path,
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode_escapes(k, true), decode_escapes(v, true))
                })
                .collect(),
        ),
    }
}

/// Decodes `%XX` escapes and `+` (form encoding); a bad escape is kept as it is. (The
/// fake API reads queries with it.)
#[cfg(any(test, feature = "testing"))]
pub(crate) fn percent_decode(s: &str) -> String {
    decode_escapes(s, true)
}

/// A URL path with its `%XX` escapes decoded (`+` is itself), as a server reads it.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn path_decode(s: &str) -> String {
    decode_escapes(s, false)
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space`; a bad escape is kept
/// as it is.
fn decode_escapes(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                // Two hex digits exactly (`from_str_radix` alone would take `+1`).
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        for ok in [
            "/v1/customers/cus_1",
            "/v2/core/accounts/acct_1",
            "/v1/tax/settings",
            "/v1/plans/plan%3Agold",
            "/v1/coupons/25%20OFF?expand[]=x",
            "/v1/coupons/50%25OFF",
            "/v1/coupons/a%25%25b",
            "/v1/coupons/100%25",
            "/v1/coupons/a%2525b",
            "/v1/coupons/a%252525b",
        ] {
            assert!(check_api_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://evil.example/v1/customers/cus_1",
            "//evil.example/v1/x",
            "v1/customers",
            "/v3/x",
            "/v1/../admin",
            "/v1/x%2F..",
            "/v1/x/%2E%2E",
            "/v1/x/%2e",
            "/v1/x/a%5Cb",
            "/v1/x/a%0Ab",
            "/v1/x/a%252Fb",
            "/v1/x/%252E%252E",
            "/v1/x/a%25255Cb",
            "/v1/x/a%250A",
            "/v1/x/a%25252525b",
            "/v1/x/a%",
            "/v1/x/a%4",
            "/v1/x/a%zz",
            "/v1/x\r\nHost: evil",
            "/v1/x#frag",
            "/v1/x\\y",
        ] {
            assert!(
                matches!(check_api_path(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("types%5B%5D"), "types[]");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(decode_escapes("%+1%-f", false), "%+1%-f");
        assert_eq!(decode_escapes("%2B%2b", false), "++");
    }

    #[test]
    fn page_token_from_url() {
        let url = "/v2/core/events?limit=2&page=abc%3D";
        assert_eq!(PageToken::from_url(url), Some(PageToken::new(url)));
        // Another path, or one off the API host, is no page of the list.
        for bad in [
            "/v2/core/event_destinations?page=a",
            "https://evil.example/v2/core/events?page=a",
            "//evil.example/v2/core/events",
            "/v2/core/events/../../v1/customers?page=a",
        ] {
            assert_eq!(PageToken::from_url(bad), None, "{bad}");
        }
        // A page URL is read as a form, as its query is sent again.
        let (path, query) = split_query("/v2/core/events?page=a+b%2Bc");
        assert_eq!(path, "/v2/core/events");
        assert_eq!(query, [("page".to_owned(), "a b+c".to_owned())]);
    }

    #[test]
    fn api_error_from_body() {
        let e = ApiError::from_response(
            404,
            r#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer: 'cus_x'"}}"#,
            Some("req_1".into()),
            None,
        );
        assert_eq!(e.code.as_deref(), Some("resource_missing"));
        assert!(e.is_not_found() && !e.is_retryable());
        assert_eq!(
            e.to_string(),
            "stripe answered 404 invalid_request_error (resource_missing): No such customer: 'cus_x' [request req_1]"
        );
        let e = ApiError::from_response(500, "not json", None, Some(false));
        assert!(!e.is_retryable());
        assert!(ApiError::from_response(503, "", None, None).is_retryable());
        assert!(ApiError::from_response(400, "", None, Some(true)).is_retryable());
    }
}
