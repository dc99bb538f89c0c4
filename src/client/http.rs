//! [`HttpClient`]: the [`StripeClient`] over HTTPS (reqwest, rustls), with retries, a
//! deadline, a concurrency cap and a rate limit.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::API_VERSION;
use super::{check_api_path, ApiError, ApiKey, ClientError, RequestContext, StripeClient};

/// How far away a deadline too large to add to the clock is put (30 years, as tokio's
/// own timers do).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
/// Stripe's API host.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";
/// How long one call may take, retries and waits included.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// The longest `Retry-After` a call waits for, deadline or not.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How many attempts one call may make.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// How many requests may be in flight at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// Requests per second, well under Stripe's live-mode read limit (100/s), which the
/// rest of the application shares.
pub const DEFAULT_BUCKET_RATE: u32 = 20;

/// A read-only Stripe API client over HTTPS (feature `client`).
///
/// - Sends only `GET`s, with `Authorization: Bearer <key>`, `Stripe-Version:`
///   [`API_VERSION`](super::API_VERSION) and the [`RequestContext`]'s headers.
/// - Retries network errors (not a refused certificate, a TLS handshake with nothing in
///   common, or a redirect: [`ClientError::Refused`](super::ClientError::Refused)),
///   409, 429 and 5xx answers (and whatever
///   `Stripe-Should-Retry: true` marks; never what `Stripe-Should-Retry: false` marks),
///   with exponential backoff and jitter (each wait between half and all of its step,
///   as Stripe's SDKs wait), and at least as long as `Retry-After` says when the
///   answer has one (seconds or an HTTP date), for at most [`DEFAULT_MAX_ATTEMPTS`]
///   attempts within a total deadline ([`DEFAULT_DEADLINE`]). A wait that would pass the
///   deadline is not started (the call ends as
///   [`DeadlineExceeded`](super::ClientError::DeadlineExceeded)), and with a deadline over
///   60 s (or none) a `Retry-After` over 60 s ends the call at once
///   ([`RetriesExhausted`](super::ClientError::RetriesExhausted)): the caller's next pass,
///   or Stripe's retry of the delivery, asks again rather than hold a task that long.
/// - Keeps at most [`DEFAULT_MAX_CONCURRENCY`] requests in flight and sends
///   [`DEFAULT_BUCKET_RATE`] requests a second on average (a token bucket that holds
///   one second's worth: after an idle spell that many start at once, so one second
///   may see up to twice the rate), shared by its clones.
/// - Never follows redirects (a 3xx answer is a [`ClientError::Api`](super::ClientError::Api)
///   error, not retried); never puts the key in an error or in `Debug`.
///
/// ```no_run
/// use stripe_webhooks::client::{ApiKey, HttpClient, RequestContext, StripeClient};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = HttpClient::new(ApiKey::new(std::env::var("STRIPE_SECRET_KEY")?)?)?
///     .with_deadline(std::time::Duration::from_secs(10))
///     .with_rate_limit(10);
/// let event = client.retrieve_event(&RequestContext::platform(), "evt_1").await?;
/// println!("{}", event.event_type());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    api_key: ApiKey,
    base_url: String,
    deadline: Duration,
    attempt_timeout: Duration,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_concurrency: usize,
    permits: Arc<Semaphore>,
    rate: u32,
    bucket: Arc<Mutex<TokenBucket>>,
}

impl HttpClient {
    /// A client for Stripe's API host with the defaults above.
    ///
    /// # Errors
    ///
    /// [`ClientError::Network`] if the HTTP client cannot be built (TLS set-up).
    pub fn new(api_key: ApiKey) -> Result<Self, ClientError> {
        let http = Self::reqwest_builder()
            .build()
            .map_err(|e| ClientError::Network(Box::new(e)))?;
        Ok(Self::with_reqwest(http, api_key))
    }

    /// The `reqwest` settings of [`new`](Self::new): no redirects, a 10 s connect
    /// timeout, the crate's user agent.
    pub(crate) fn reqwest_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("stripe-webhooks-rs/", env!("CARGO_PKG_VERSION")))
    }

    /// A client on an existing `reqwest::Client` (its proxy, TLS and pool settings).
    /// Give it `redirect(Policy::none())`: the API never redirects.
    pub fn with_reqwest(http: reqwest::Client, api_key: ApiKey) -> Self {
        Self {
            http,
            api_key,
            base_url: DEFAULT_BASE_URL.to_owned(),
            deadline: DEFAULT_DEADLINE,
            attempt_timeout: Duration::from_secs(20),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            permits: Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENCY)),
            rate: DEFAULT_BUCKET_RATE,
            bucket: Arc::new(Mutex::new(TokenBucket::new(
                DEFAULT_BUCKET_RATE,
                Instant::now(),
            ))),
        }
    }

    /// Sends requests to `base_url` (scheme, host and port, as `http://127.0.0.1:4010`)
    /// instead of [`DEFAULT_BASE_URL`]: a fake Stripe API in tests, or a proxy.
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets the total deadline of one call, retries and waits included
    /// (`Duration::MAX`: none; the attempt timeout and the attempt count still bound it,
    /// and a `Retry-After` over a minute ends the call, as
    /// [`ClientError::RetriesExhausted`], rather than be slept through).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets how long one attempt may take (default 20 s; never past the deadline).
    #[must_use]
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Sets how many attempts one call may make (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the backoff: the `n`th retry waits a random time between half and all of
    /// `min(max, base × 2ⁿ⁻¹)` (default 500 ms and 8 s), and at least what Stripe's
    /// `Retry-After` says.
    #[must_use]
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// Sets how many requests may be in flight at once (at least 1), for this client
    /// and the clones made after.
    #[must_use]
    pub fn with_max_concurrency(mut self, max: usize) -> Self {
        // `usize::MAX` for "no limit" is taken as tokio's most permits, not a panic.
        self.max_concurrency = max.clamp(1, Semaphore::MAX_PERMITS);
        self.permits = Arc::new(Semaphore::new(self.max_concurrency));
        self
    }

    /// Sets how many requests a second may start on average (at least 1), for this
    /// client and the clones made after. The bucket holds one second's worth, so after
    /// an idle spell one second may see up to twice as many: for a limit that must hold
    /// in every second (Stripe's sandbox allows fewer reads a second than live mode), set
    /// half of it.
    #[must_use]
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate = per_second.max(1);
        self.bucket = Arc::new(Mutex::new(TokenBucket::new(self.rate, Instant::now())));
        self
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// One request: an answer, or why not and whether (and when) to try again.
    /// One attempt: a concurrency slot, a rate token, the request. `sent` counts it once
    /// the request goes out; a rate wait that would end at or past `deadline_at` gives
    /// its token and slot back at once ([`Failure::past_deadline`]) rather than hold the
    /// slot until the deadline.
    async fn attempt(
        &self,
        ctx: &RequestContext,
        url: &str,
        query: &[(String, String)],
        deadline_at: Instant,
        sent: &AtomicU32,
    ) -> Result<String, Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Failure::fatal(ClientError::Network(Box::new(e))))?;
        if !rate_token(&self.bucket, deadline_at).await {
            return Err(Failure {
                past_deadline: true,
                ..Failure::fatal(ClientError::Network(
                    "the rate limit's wait passes the deadline".into(),
                ))
            });
        }
        let mut request = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(self.api_key.expose())
            .header("Stripe-Version", API_VERSION)
            .timeout(self.attempt_timeout);
        for (name, value) in ctx.headers() {
            request = request.header(name, value);
        }
        sent.fetch_add(1, Ordering::SeqCst);
        let response = request.send().await.map_err(|e| {
            if e.is_builder() {
                // Not a transient failure: the base URL cannot be sent (the headers were
                // checked before the first attempt).
                Failure::fatal(ClientError::InvalidUrl {
                    url: self.base_url.clone(),
                    reason: "the request cannot be built from this base url",
                })
            } else if let Some(reason) = permanent(&e) {
                Failure::fatal(ClientError::Refused {
                    reason,
                    source: self.transport(e),
                })
            } else {
                Failure::retry(ClientError::Network(self.transport(e)))
            }
        })?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("request-id");
        let should_retry = header("stripe-should-retry").and_then(|v| match v.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        let retry_after = header("retry-after").and_then(|v| retry_after(&v));
        let body = match self.read_body(response, url).await {
            Ok(body) => body,
            // An error answer whose body was lost, or is too large to read, is still that
            // error, retried only as its status says (a 400 is not, a 503 is): read as a
            // network error, a 400 was retried; read as too large, a 503 was not.
            Err(_) if !(200..300).contains(&status) => String::new(),
            Err(f) => return Err(f),
        };
        if (200..300).contains(&status) {
            // Never the key in what the caller gets (a proxy or a misrouted base URL that
            // echoes the request): a decode error quotes the body's values. But a key too
            // short to be only itself (a proxy's token) may be the answer's own text,
            // which is never changed: such a key is not looked for.
            let key = self.api_key.expose();
            if key.len() >= MIN_REDACTED_KEY && body.contains(key) {
                return Ok(self.redact(&body));
            }
            return Ok(body);
        }
        let mut api = ApiError::from_response(status, &body, request_id, should_retry);
        for text in [
            &mut api.message,
            &mut api.code,
            &mut api.error_type,
            &mut api.param,
            &mut api.request_id,
        ]
        .into_iter()
        .flatten()
        {
            *text = self.redact(text);
        }
        Err(Failure {
            retryable: api.is_retryable(),
            retry_after,
            error: ClientError::from(api),
            past_deadline: false,
        })
    }

    /// Reads an answer's body, at most [`MAX_BODY`] bytes: a proxy or a wrong base URL
    /// streaming without end must not take the process's memory. (Stripe's largest
    /// answers, a page of 100 events with their objects, are a few MiB.)
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        url: &str,
    ) -> Result<String, Failure> {
        let too_large = || {
            let path = url.strip_prefix(self.base_url.as_str()).unwrap_or(url);
            Failure::fatal(ClientError::Decode {
                path: path.split('?').next().unwrap_or(path).to_owned(),
                message: format!("the answer is larger than {} MiB", MAX_BODY >> 20),
            })
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Failure::retry(ClientError::Network(self.transport(e))))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        // As `Response::text` reads it: invalid UTF-8 replaced, never an error.
        Ok(match String::from_utf8(body) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A transport error, with the key taken out of its text should it ever be there.
    fn transport(&self, e: reqwest::Error) -> Box<dyn std::error::Error + Send + Sync> {
        let text = e.to_string();
        if text.contains(self.api_key.expose()) {
            self.redact(&text).into()
        } else {
            Box::new(e)
        }
    }

    fn redact(&self, text: &str) -> String {
        text.replace(self.api_key.expose(), "<redacted>")
    }
}

/// Why sending again cannot fix a transport error, if it cannot, as stripe-go decides
/// (it does not retry an unknown certificate authority or a redirect): a redirect (the
/// API never redirects; a client given to [`with_reqwest`](HttpClient::with_reqwest)
/// may follow them), a certificate rustls refused, or a handshake in which the two
/// sides share no TLS version or cipher. A connection refused, reset or timed out is
/// retried (`None`).
fn permanent(e: &reqwest::Error) -> Option<String> {
    if e.is_redirect() {
        return Some("redirected (the Stripe API never redirects)".to_owned());
    }
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            let permanent = matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::AlertReceived(
                        rustls::AlertDescription::HandshakeFailure
                            | rustls::AlertDescription::ProtocolVersion
                            | rustls::AlertDescription::InsufficientSecurity
                    )
            );
            return permanent.then(|| format!("tls: {tls}"));
        }
        // tokio-rustls hands rustls's error up inside an `io::Error` (which hyper wraps
        // in another), and an `io::Error`'s `source` skips the error it wraps: step in.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// A failed attempt.
struct Failure {
    error: ClientError,
    retryable: bool,
    retry_after: Option<Duration>,
    /// Not sent: its turn under the rate limit comes after the deadline.
    past_deadline: bool,
}

impl Failure {
    fn retry(error: ClientError) -> Self {
        Self {
            error,
            retryable: true,
            retry_after: None,
            past_deadline: false,
        }
    }

    fn fatal(error: ClientError) -> Self {
        Self {
            retryable: false,
            ..Self::retry(error)
        }
    }
}

#[async_trait]
impl StripeClient for HttpClient {
    fn livemode(&self) -> Option<bool> {
        self.api_key.livemode()
    }

    async fn get(
        &self,
        ctx: &RequestContext,
        path: &str,
        query: &[(String, String)],
    ) -> Result<String, ClientError> {
        check_api_path(path)?;
        if path.contains('?') {
            return Err(ClientError::InvalidUrl {
                url: path.to_owned(),
                reason: "the query goes in the query parameter",
            });
        }
        for (name, value) in ctx.headers() {
            if reqwest::header::HeaderValue::from_str(&value).is_err() {
                return Err(ClientError::InvalidHeader { name, value });
            }
        }
        let url = format!("{}{path}", self.base_url);
        // `with_deadline(Duration::MAX)` means no deadline, not an overflow.
        let now = Instant::now();
        let no_deadline = now.checked_add(self.deadline).is_none();
        let deadline_at = now
            .checked_add(self.deadline)
            .unwrap_or_else(|| now + FAR_FUTURE);
        // Requests sent: an attempt cut while it waited for its turn sent none.
        let sent = AtomicU32::new(0);
        let exceeded = |last: Option<ClientError>| ClientError::DeadlineExceeded {
            deadline: self.deadline,
            attempts: sent.load(Ordering::SeqCst),
            last: last.map(Box::new),
        };
        let mut last: Option<ClientError> = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let attempt = self.attempt(ctx, &url, query, deadline_at, &sent);
            let outcome = tokio::time::timeout_at(deadline_at, attempt).await;
            let failure = match outcome {
                Err(_elapsed) => return Err(exceeded(last)),
                Ok(Ok(body)) => return Ok(body),
                Ok(Err(failure)) if failure.past_deadline => return Err(exceeded(last)),
                Ok(Err(failure)) => failure,
            };
            if !failure.retryable {
                return Err(failure.error);
            }
            if attempts >= self.max_attempts {
                return Err(ClientError::RetriesExhausted {
                    attempts,
                    last: Box::new(failure.error),
                });
            }
            let wait = retry_wait(
                backoff(attempts, self.backoff_base, self.backoff_max, random_unit()),
                failure.retry_after,
            );
            // `Retry-After` is the server's: a huge value must not overflow the clock.
            // Without a deadline (one past the clock's range, as `Duration::MAX`), the
            // check below ends a long wait.
            if !no_deadline && wait >= deadline_at.saturating_duration_since(Instant::now()) {
                return Err(exceeded(Some(failure.error)));
            }
            // A server that asks for more than MAX_RETRY_AFTER (with no deadline, or a
            // long one) is saying to come back much later: the call fails now, and its
            // caller's next pass (or Stripe's retry of the delivery) asks again, rather
            // than sleep for as long as it says.
            if failure.retry_after.is_some_and(|w| w > MAX_RETRY_AFTER) {
                return Err(ClientError::RetriesExhausted {
                    attempts,
                    last: Box::new(failure.error),
                });
            }
            #[cfg(feature = "tracing")]
            tracing::debug!(
                path,
                attempt = attempts,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %failure.error,
                "stripe api call failed; retrying"
            );
            tokio::time::sleep(wait).await;
            last = Some(failure.error);
        }
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("api_version", &API_VERSION)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &(self.backoff_base, self.backoff_max))
            .field("max_concurrency", &self.max_concurrency)
            .field("rate_per_second", &self.rate)
            .finish()
    }
}

/// The largest answer body the client reads: 64 MiB.
const MAX_BODY: usize = 64 << 20;

/// The shortest API key taken out of an answer that contains it: a shorter one (a proxy's
/// token) could be part of the answer's own data, which is left as it is. Stripe's keys
/// are about a hundred characters long.
const MIN_REDACTED_KEY: usize = 20;

/// A `Retry-After` value: seconds, or an HTTP date (a past one is no wait); `None` when
/// it is neither, and the backoff decides.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = super::http_date::parse(value)?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Equal jitter: a wait of `(1 + unit) / 2` (`unit` 0 to 1) times
/// `min(max, base × 2^(attempt - 1))`, so between half and all of the step: retries of
/// many clients spread out, and none comes back at once (full jitter's waits near zero
/// are a burst against an API that just said it is busy).
fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exp = 2u32.saturating_pow(attempt.saturating_sub(1));
    let cap = base.saturating_mul(exp).min(max);
    // Not `mul_f64`, which panics when the product rounds past `Duration::MAX` (a
    // backoff set to it, times 1.0).
    Duration::try_from_secs_f64(cap.as_secs_f64() * (1.0 + unit.clamp(0.0, 1.0)) / 2.0)
        .unwrap_or(cap)
}

/// The wait before a retry: the backoff, or longer when the server's `Retry-After`
/// asks for longer. A `Retry-After` of 0 (or a date already past) is a floor, not a
/// reason to retry at once.
fn retry_wait(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(backoff, |after| after.max(backoff))
}

/// A random number in 0 to 1 from the standard library's randomly keyed hasher: plenty
/// for jitter, with no dependency.
fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    // 53 random bits, as an f64 mantissa holds.
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Waits for a rate-limit token; `false`, at once, when the wait would end at or past
/// `deadline_at`. A wait given up (so, or cut short: the call's deadline passed, or its
/// caller gave up) gives its reserved token back, so callers that come later do not
/// wait for a request that was never sent (those already waiting keep their turn).
async fn rate_token(bucket: &Mutex<TokenBucket>, deadline_at: Instant) -> bool {
    let now = Instant::now();
    let wait = with_bucket(bucket, |b| b.take(now));
    if wait.is_zero() {
        return true;
    }
    if wait >= deadline_at.saturating_duration_since(now) {
        with_bucket(bucket, TokenBucket::give_back);
        return false;
    }
    struct Reserved<'a> {
        bucket: &'a Mutex<TokenBucket>,
        used: bool,
    }
    impl Drop for Reserved<'_> {
        fn drop(&mut self) {
            if !self.used {
                with_bucket(self.bucket, TokenBucket::give_back);
            }
        }
    }
    let mut reserved = Reserved {
        bucket,
        used: false,
    };
    tokio::time::sleep(wait).await;
    reserved.used = true;
    true
}

/// Runs `f` on the bucket; a panic while it was held left plain numbers behind, so a
/// poisoned lock is used as it is.
fn with_bucket<T>(bucket: &Mutex<TokenBucket>, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
    match bucket.lock() {
        Ok(mut b) => f(&mut b),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// A token bucket: `rate` tokens a second, holding at most `rate`. Taking a token when
/// there is none reserves the next one and says how long to wait for it, so waiting
/// callers are served in turn.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            capacity: rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes a token at `now`; how long to wait before using it.
    fn take(&mut self, now: Instant) -> Duration {
        if now > self.last {
            let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.capacity);
            self.last = now;
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Returns a token taken but not used.
    fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_equal_jitter() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, base, max, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(4, base, max, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(6, base, max, 1.0), max);
        assert_eq!(backoff(60, base, max, 1.0), max); // no overflow
        assert_eq!(
            backoff(3, Duration::MAX, Duration::MAX, 1.0),
            Duration::MAX,
            "no panic at the largest backoff"
        );
        // Never under half the step.
        assert_eq!(backoff(3, base, max, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_millis(300));
        assert_eq!(backoff(0, base, max, 1.0), base);
    }

    #[test]
    fn retry_after_is_a_floor_on_the_backoff() {
        let step = Duration::from_millis(400);
        assert_eq!(retry_wait(step, None), step);
        // `Retry-After: 0`, or a date already past: not a retry at once.
        assert_eq!(retry_wait(step, Some(Duration::ZERO)), step);
        assert_eq!(
            retry_wait(step, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn random_units_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }

    /// A caller that stops waiting for its token gives it back: the next caller waits
    /// for its own turn, not for the abandoned one's too.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn an_abandoned_wait_gives_its_token_back() {
        let t0 = Instant::now();
        let bucket = Mutex::new(TokenBucket::new(2, t0));
        let far = Instant::now() + Duration::from_secs(60);
        assert!(rate_token(&bucket, far).await);
        assert!(rate_token(&bucket, far).await);
        let cut = tokio::time::timeout(Duration::from_millis(10), rate_token(&bucket, far)).await;
        assert!(cut.is_err(), "the third token needs a wait");
        // Counted from the bucket's start (however long this machine took to get here):
        // the next token half a second in, not a second (the abandoned one's turn).
        let at = Instant::now();
        let wait = with_bucket(&bucket, |b| b.take(at)) + at.duration_since(t0);
        assert!(wait <= Duration::from_millis(550), "{wait:?}");
        assert!(wait >= Duration::from_millis(450), "{wait:?}");
    }

    /// A wait that would end past the deadline is not begun: `false` at once, and the
    /// token goes back.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn a_wait_past_the_deadline_is_refused_at_once() {
        let t0 = Instant::now();
        let bucket = Mutex::new(TokenBucket::new(1, t0));
        let soon = Instant::now() + Duration::from_millis(200);
        assert!(rate_token(&bucket, soon).await, "the burst's token");
        assert!(
            !rate_token(&bucket, soon).await,
            "the next is a second away"
        );
        // Counted from the bucket's start: a second in, not two (the refused one's turn).
        let at = Instant::now();
        let wait = with_bucket(&bucket, |b| b.take(at)) + at.duration_since(t0);
        assert!(wait > Duration::from_millis(950), "given back: {wait:?}");
        assert!(wait <= Duration::from_millis(1050), "given back: {wait:?}");
    }

    #[test]
    fn token_bucket_bursts_then_paces() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(4, t0);
        for _ in 0..4 {
            assert_eq!(bucket.take(t0), Duration::ZERO);
        }
        // Empty: the next callers are spaced a quarter second apart.
        assert_eq!(bucket.take(t0), Duration::from_millis(250));
        assert_eq!(bucket.take(t0), Duration::from_millis(500));
        // A second later the bucket has refilled 4 tokens and paid the 2 reserved.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(bucket.take(t1), Duration::ZERO);
        assert_eq!(bucket.take(t1), Duration::ZERO);
        assert_eq!(bucket.take(t1), Duration::from_millis(250));
        // It never holds more than a second's worth.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..4 {
            assert_eq!(bucket.take(t2), Duration::ZERO);
        }
        assert!(bucket.take(t2) > Duration::ZERO);
    }

    #[test]
    fn debug_hides_the_key() {
        let client = HttpClient::with_reqwest(
            reqwest::Client::new(),
            ApiKey::new("sk_test_supersecret").unwrap(),
        );
        let dbg = format!("{client:?}");
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }
}
