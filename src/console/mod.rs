//! The web console (feature `console`): a few server-rendered pages to see what the
//! queue holds and to requeue what failed. Plain HTML and one stylesheet; no script.
//!
//! - **Overview**: the jobs in each state, how long the oldest queued job has waited,
//!   the dead jobs (each with a *Requeue* button, and *Requeue all dead*), the retrying
//!   ones (*Run now*; both reset the job's attempts) and the most recent deliveries;
//! - **a state** (`/state/{state}`): its jobs, oldest first, 200 a page by default
//!   (four times [`with_page_size`](Console::with_page_size)), with the state's count and
//!   *Next page* links (`?after=` the last key of the page before), so that every job of
//!   the state can be reached;
//! - **failed inline** (`/failed`, with [`with_store`](Console::with_store)): the store's
//!   failed events, paged the same way;
//! - **a job**: its record (type, attempts, times, last error) and its raw JSON,
//!   pretty-printed, with client secrets, OAuth codes, bearer URLs and card numbers in it
//!   shown as `"<redacted>"` (such a body's members are then in key order).
//!
//! Build a [`Console`] over any [`QueueAdmin`] with your application's authorization
//! check, and nest its [`router`](Console::router) where you like:
//!
//! ```
//! use std::sync::Arc;
//! use stripe_webhooks::console::{self, Console};
//! use stripe_webhooks::queue::MemoryQueue;
//!
//! let queue = MemoryQueue::new(); // or `SqliteStore::queue()`, `PostgresStore::queue()`
//! let password = std::env::var("CONSOLE_PASSWORD").unwrap_or_default();
//! let console = Console::new(queue, console::basic_auth("admin", &password))
//!     .with_basic_auth_realm("webhooks");
//! let app: axum::Router = axum::Router::new().nest("/admin/webhooks", console.router());
//! ```
//!
//! # Security
//!
//! - A request whose `Host` names a host the console was not told is answered 421 and
//!   nothing else happens (see [`Console::with_allowed_host`]): without that, a page on
//!   another site whose name was re-resolved to the console's address (DNS rebinding)
//!   could read it and post its forms whenever the authorization check is one the browser
//!   does not scope to a site (the client's address, a header a proxy adds). IP
//!   addresses and `localhost` are answered without being named, so a proxy in front
//!   must pass the browser's `Host` on rather than its upstream's address.
//! - Every request, the stylesheet included, passes the authorization check first; a
//!   refused one is answered 401 and nothing is read from the queue. An empty password
//!   or token refuses everyone.
//! - The console does not count refused requests, so nothing slows down guessing: use a
//!   password or token drawn at random, 128 bits at least (`openssl rand -hex 16`), or
//!   put a rate limit in front of the router (a `tower` layer, or your proxy's).
//! - The requeue buttons are POST forms carrying a CSRF token: an HMAC-SHA256, under a
//!   key drawn from the operating system's random source when the console is built, of
//!   a session nonce the console keeps in a `SameSite=Lax`, `HttpOnly` cookie (`Lax`,
//!   not `Strict`: a page opened from a link elsewhere, a chat or an email, then keeps
//!   its nonce rather than getting a new one that would void the other tabs' forms)
//!   (`Secure` over HTTPS, see [`Console::with_secure_cookie`]) and of the hour; a
//!   token is good for one to two hours and only with its cookie. A POST without a good
//!   token, or whose `Origin` names another host (or `http://` for a request that came
//!   over HTTPS) or whose `Sec-Fetch-Site` is not `same-origin`, is refused with 403 and changes nothing. Behind a proxy that
//!   rewrites `Host` (better: have it pass the browser's on, as above), name the public
//!   origin with [`Console::with_allowed_origin`].
//! - Every answer carries `Content-Security-Policy` (no script at all, styles from the
//!   console only, no framing), `X-Frame-Options: DENY`, `Cache-Control: no-store`,
//!   `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin`.
//! - Everything that comes from an event (keys, ids, types, errors, bodies) is
//!   HTML-escaped. No secret is shown: the console only reads the queue, and a body's
//!   credentials (a `client_secret` member, one whose name ends in `secret`, an
//!   `auth_code`, a string holding `…_secret_…` such as a 3-D Secure URL, the bearer
//!   `url` of a verification or billing portal session or of a file link, in its `previous_attributes`
//!   and a thin event's `changes` too, and an issuing card's `number` and `cvc`) are
//!   shown as `<redacted>`; so are, in an error's text, a word holding
//!   `…_secret_…` (in lower case, as Stripe writes it) and an API key or signing secret (`sk_live_`,
//!   `sk_test_`, `rk_live_`, `rk_test_`, `whsec_`) from where it starts in a word.

mod csrf;
mod html;

use std::fmt;
use std::sync::Arc;

use axum::extract::{OriginalUri, Request, State};
use axum::routing::any;
use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use http::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST,
    LOCATION, ORIGIN, REFERRER_POLICY, SET_COOKIE, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use subtle::ConstantTimeEq;

use crate::clock::{Clock, SystemClock};
use crate::event::EventId;
use crate::queue::{JobState, QueueAdmin};
use html::{Ctx, PathSeg};

/// The rows a list shows by default.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The most rows a list of the overview shows ([`Console::with_page_size`]): a page of
/// one state shows four times as many, each read with its body.
pub const MAX_PAGE_SIZE: usize = 250;
/// The largest POST body the console reads (its forms send well under 1 KiB).
const MAX_FORM: usize = 16 * 1024;
/// The cookie holding the browser's CSRF session nonce.
const SESSION_COOKIE: &str = "swh_console";
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const CSS: &str = include_str!("console.css");

type Authorize = dyn Fn(&Parts) -> bool + Send + Sync;

/// The web console: pages over a [`QueueAdmin`], behind your authorization check. See
/// the [module docs](self) for what it shows and how it is protected.
///
/// ```
/// use stripe_webhooks::console::Console;
/// use stripe_webhooks::queue::MemoryQueue;
///
/// // Any check over the request's parts: a header, a cookie your login sets, … (A
/// // header like this one proves something only behind a proxy that sets it and
/// // strips it from what clients send; reached directly, anyone can send it.)
/// let console = Console::new(MemoryQueue::new(), |parts: &http::request::Parts| {
///     parts.headers.get("x-internal-user").is_some_and(|v| v == "ops")
/// });
/// let app: axum::Router = axum::Router::new().nest("/admin/webhooks", console.router());
/// ```
#[derive(Clone)]
pub struct Console {
    queue: Arc<dyn QueueAdmin>,
    store: Option<Arc<dyn crate::StoreAdmin>>,
    authorize: Arc<Authorize>,
    csrf: Arc<csrf::Csrf>,
    realm: Option<HeaderValue>,
    allowed_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    secure_cookie: bool,
    page_size: usize,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("realm", &self.realm)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("secure_cookie", &self.secure_cookie)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console over `queue`, showing a page only to requests `authorize` accepts (it
    /// sees the method, URI and headers: check a header, a cookie or basic auth; see
    /// [`basic_auth`] and [`bearer_token`]). Each console draws its own CSRF key unless
    /// given one ([`with_csrf_key`](Self::with_csrf_key), for replicas).
    pub fn new(
        queue: impl QueueAdmin,
        authorize: impl Fn(&Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            queue: Arc::new(queue),
            store: None,
            authorize: Arc::new(authorize),
            csrf: Arc::new(csrf::Csrf::new()),
            realm: None,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            secure_cookie: false,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// Keys the CSRF tokens of the console's forms with `key` instead of a key drawn
    /// when the console is built. Give every replica behind one load balancer the same
    /// key (32 random bytes from your secret store), or a form rendered by one replica
    /// is refused (403, "reload the page") when its POST lands on another, and every
    /// restart invalidates the pages open in browsers. Keep it secret: with it, a
    /// cross-site form could carry a valid token for a nonce the attacker planted.
    ///
    /// ```
    /// use stripe_webhooks::console::{bearer_token, Console};
    /// use stripe_webhooks::queue::MemoryQueue;
    ///
    /// // In production: 64 hex characters from your secret store.
    /// let hex_key = "5f1c0e9a7b3d4c2e8f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";
    /// let mut key = [0u8; 32];
    /// hex::decode_to_slice(hex_key, &mut key)?;
    /// let console = Console::new(MemoryQueue::new(), bearer_token("ops-token")).with_csrf_key(key);
    /// # let _ = console;
    /// # Ok::<(), hex::FromHexError>(())
    /// ```
    #[must_use]
    pub fn with_csrf_key(mut self, key: [u8; 32]) -> Self {
        self.csrf = Arc::new(csrf::Csrf::with_key(&key));
        self
    }

    /// Answers refused requests with `WWW-Authenticate: Basic realm="…"`, so a browser
    /// asks for a user name and password (pair it with [`basic_auth`]). Quotes and
    /// backslashes in `realm` are dropped.
    #[must_use]
    pub fn with_basic_auth_realm(mut self, realm: &str) -> Self {
        let realm: String = realm
            .chars()
            .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
            .collect();
        self.realm =
            HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")).ok();
        self
    }

    /// Accepts POSTs whose `Origin` is `origin` (`https://admin.example.com`), for a
    /// console behind a proxy that changes the `Host` header. Once one is named, only
    /// the named origins are accepted; otherwise `Origin` must match `Host`.
    ///
    /// Written as a browser writes `Origin`: a default port (`:443` for `https`, `:80`
    /// for `http`) is dropped, and a host without a scheme (`admin.example.com`) is taken
    /// as `https://admin.example.com`, or as `http://` for this machine (`localhost:8080`,
    /// a name under `.localhost`, `127.0.0.1:8080`, `[::1]:8080`). Either would otherwise
    /// never equal what a browser sends, and every POST would be refused.
    #[must_use]
    pub fn with_allowed_origin(mut self, origin: &str) -> Self {
        self.allowed_origins.push(normal_origin(origin));
        self
    }

    /// Also answers requests whose `Host` names `host` (`admin.example.com`; a port
    /// given is ignored). `.example.com` names the domain and every name under it, and
    /// `*` any host: only for a console whose authorization a browser scopes to the
    /// site (basic auth, a bearer token, your login's cookie), since a check the browser
    /// does not scope (the client's address, a header a proxy adds) is what DNS
    /// rebinding gets past.
    ///
    /// Without it the console answers only a `Host` that no DNS answer can point at it
    /// from another site: an IP address, `localhost` and names under `.localhost`, and
    /// the hosts of the origins named with [`with_allowed_origin`](Self::with_allowed_origin).
    /// Any other is answered 421 and nothing is read: a page on `evil.example`, its name
    /// re-resolved to `127.0.0.1`, cannot read the console or post its forms. Behind a
    /// proxy, have it pass the browser's `Host` on (nginx: `proxy_set_header Host
    /// $host;`, not its default `$proxy_host`): a proxy that puts its upstream's address
    /// there makes every request look like one to an address, which this check lets
    /// through whatever the browser asked for.
    ///
    /// ```
    /// use stripe_webhooks::console::{bearer_token, Console};
    /// use stripe_webhooks::queue::MemoryQueue;
    ///
    /// let console = Console::new(MemoryQueue::new(), bearer_token("ops-token"))
    ///     .with_allowed_host("webhooks-admin.internal.example.com");
    /// # let _ = console;
    /// ```
    #[must_use]
    pub fn with_allowed_host(mut self, host: &str) -> Self {
        let host = host_name(host.trim());
        if !host.is_empty() {
            self.allowed_hosts.push(host);
        }
        self
    }

    /// Whether the request's `Host` (or HTTP/2 authority) is one the console answers:
    /// see [`with_allowed_host`](Self::with_allowed_host). A request without one was
    /// not sent by a browser, and DNS rebinding needs one.
    fn host_allowed(&self, parts: &Parts) -> bool {
        let raw = match parts.headers.get(HOST) {
            Some(h) => match h.to_str() {
                Ok(h) => h.to_owned(),
                Err(_) => return false,
            },
            None => match parts.uri.authority() {
                Some(a) => a.as_str().to_owned(),
                None => return true,
            },
        };
        let host = host_name(&raw);
        let cannot_rebind = host.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost");
        let named = |entry: &str| {
            entry == "*"
                || entry == host
                || entry
                    .strip_prefix('.')
                    .is_some_and(|domain| host == domain || host.ends_with(entry))
        };
        let of_origin = |origin: &String| {
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| host_name(authority) == host)
        };
        cannot_rebind
            || self.allowed_hosts.iter().any(|h| named(h))
            || self.allowed_origins.iter().any(of_origin)
    }

    /// Marks the session cookie `Secure` on every answer, for a console only ever
    /// reached over HTTPS; a console serving TLS itself over HTTP/1.1 needs it, since
    /// such a request's URI names no scheme. Without it the cookie is `Secure` when the
    /// request came over HTTPS: its URI says so (HTTP/2), a proxy says so (`X-Forwarded-Proto: https` or
    /// `Forwarded: proto=https`), or an origin named with
    /// [`with_allowed_origin`](Self::with_allowed_origin) is `https://`. (A console
    /// reached over plain HTTP on another host than `localhost` cannot keep a `Secure`
    /// cookie, and its requeue forms would be refused.)
    #[must_use]
    pub fn with_secure_cookie(mut self) -> Self {
        self.secure_cookie = true;
        self
    }

    /// Whether the session cookie gets `Secure` on this request.
    fn over_https(&self, parts: &Parts) -> bool {
        self.secure_cookie
            || self
                .allowed_origins
                .iter()
                .any(|o| o.starts_with("https://"))
            || request_says_https(parts)
    }

    /// Also shows the inline processor's failed events from `store` (its
    /// [`failed_events`](crate::StoreAdmin::failed_events): the oldest on the overview,
    /// every one a page at a time at `/failed`), read only: the store keeps
    /// no body, and Stripe delivers them again by itself. For applications that run some
    /// routes inline ([`Processor::new`](crate::Processor::new)) beside the queue.
    #[must_use]
    pub fn with_store(mut self, store: impl crate::StoreAdmin) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// How many jobs each list of the overview shows (1 to [`MAX_PAGE_SIZE`]; default
    /// [`DEFAULT_PAGE_SIZE`]); a page of a state, or of failed events, shows four times as
    /// many. The lists read each job's body with it, so a page's memory grows with it.
    #[must_use]
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// The console's routes, relative to where you nest them: `/` (the overview),
    /// `/state/{state}`, `/jobs/{key}`, `/failed` (with [`with_store`](Self::with_store)),
    /// `/console.css`, and the POST actions `/requeue` and `/requeue-dead`. Links and redirects follow the path it is nested at.
    pub fn router(&self) -> axum::Router {
        let shared = Arc::new(self.clone());
        axum::Router::new()
            .route("/", any(serve))
            .route("/{*path}", any(serve))
            .with_state(shared)
    }
}

/// An authorization check for HTTP basic auth: accepts `Authorization: Basic …` with
/// exactly `user` and `password`, compared in constant time. An empty password accepts
/// no one.
///
/// ```
/// use stripe_webhooks::console::basic_auth;
///
/// let check = basic_auth("admin", "s3cret");
/// let (parts, ()) = http::Request::get("/")
///     .header("authorization", "Basic YWRtaW46czNjcmV0") // admin:s3cret
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert!(check(&parts));
/// ```
pub fn basic_auth(user: &str, password: &str) -> impl Fn(&Parts) -> bool + Send + Sync + 'static {
    let expected = (!password.is_empty())
        .then(|| digest(base64(format!("{user}:{password}").as_bytes()).as_bytes()));
    move |parts: &Parts| {
        let Some(expected) = &expected else {
            return false;
        };
        credentials(&parts.headers, "basic").is_some_and(|given| same_digest(given, expected))
    }
}

/// A credential's SHA-256: comparing digests, which all have one length, in constant
/// time does not tell the length of the expected value either (a slice compare stops at
/// a length that differs).
fn digest(credential: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(credential).into()
}

/// Whether `given` hashes to `expected`, compared in constant time.
fn same_digest(given: &str, expected: &[u8; 32]) -> bool {
    bool::from(digest(given.as_bytes()).ct_eq(expected))
}

/// An authorization check for a bearer token: accepts `Authorization: Bearer <token>`,
/// compared in constant time. An empty token accepts no one.
///
/// ```
/// use stripe_webhooks::console::bearer_token;
///
/// let check = bearer_token("t0ken");
/// let (parts, ()) = http::Request::get("/").header("authorization", "Bearer t0ken").body(()).unwrap().into_parts();
/// assert!(check(&parts));
/// ```
pub fn bearer_token(token: &str) -> impl Fn(&Parts) -> bool + Send + Sync + 'static {
    let expected = (!token.is_empty()).then(|| digest(token.as_bytes()));
    move |parts: &Parts| {
        let Some(expected) = &expected else {
            return false;
        };
        credentials(&parts.headers, "bearer").is_some_and(|given| same_digest(given, expected))
    }
}

/// The credentials after `scheme` (matched in any case) in `Authorization`.
fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (given_scheme, rest) = value.split_once(' ')?;
    given_scheme
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim())
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a request asks for.
enum Route {
    Overview,
    Css,
    State(String),
    Failed,
    Job(String),
    Requeue,
    RequeueDead,
    NotFound,
}

impl Route {
    fn of(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        match path {
            "" => return Route::Overview,
            "/console.css" => return Route::Css,
            "/requeue" => return Route::Requeue,
            "/requeue-dead" => return Route::RequeueDead,
            "/failed" => return Route::Failed,
            _ => {}
        }
        let one = |prefix: &str| {
            path.strip_prefix(prefix)
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .and_then(|rest| html::percent_decode(rest, false))
        };
        if let Some(state) = one("/state/") {
            Route::State(state)
        } else if let Some(key) = one("/jobs/") {
            Route::Job(key)
        } else {
            Route::NotFound
        }
    }

    fn allows_post(&self) -> bool {
        matches!(self, Route::Requeue | Route::RequeueDead)
    }
}

/// Every request: check its host, authorize, answer, add the security headers.
async fn serve(State(console): State<Arc<Console>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut response = if !console.host_allowed(&parts) {
        message(
            StatusCode::MISDIRECTED_REQUEST,
            "Unknown host",
            "This console does not answer for the host this request named. If it is \
             yours, name it with Console::with_allowed_host.",
        )
    } else if (console.authorize)(&parts) {
        console.answer(&parts, body).await
    } else {
        let mut r = page(
            StatusCode::UNAUTHORIZED,
            html::message("Unauthorized", "Sign in to see the webhook console."),
        );
        if let Some(realm) = &console.realm {
            r.headers_mut().insert(WWW_AUTHENTICATE, realm.clone());
        }
        r
    };
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

fn page(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(status, html::message(title, text))
}

fn unavailable(e: &crate::idempotency::StoreError) -> Response {
    tracing::warn!(error = %e, "console: the queue did not answer");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Queue unavailable",
        "The queue did not answer; see the service's logs, then reload.",
    )
}

fn redirect(to: String) -> Response {
    match HeaderValue::from_str(&to) {
        Ok(location) => (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response(),
        Err(_) => message(StatusCode::OK, "Done", "Done; go back and reload."),
    }
}

/// An origin as a browser's `Origin` header writes it: lower case, scheme and host
/// only (no path), no default port; `https://` when no scheme is given (`http://` for
/// this machine: see [`is_loopback_authority`]).
fn normal_origin(origin: &str) -> String {
    let origin = origin.trim().to_ascii_lowercase();
    let origin = if origin.contains("://") {
        origin
    } else if is_loopback_authority(&origin) {
        // Nobody serves `localhost` over TLS by default: a developer types
        // `localhost:8080` for `http://localhost:8080`.
        format!("http://{origin}")
    } else {
        format!("https://{origin}")
    };
    // An origin has no path: `https://admin.example.com/console` is the site's.
    let origin = match origin.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            format!("{scheme}://{authority}")
        }
        None => origin,
    };
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if origin.starts_with(scheme) {
            if let Some(bare) = origin.strip_suffix(port) {
                return bare.to_owned();
            }
        }
    }
    origin
}

/// Whether a bare `host[:port][/path]` names this machine: `localhost`, a name under
/// `.localhost`, or a loopback address (`127.0.0.1`, `[::1]`).
fn is_loopback_authority(bare: &str) -> bool {
    let authority = bare.split(['/', '?', '#']).next().unwrap_or(bare);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.split(':').next().unwrap_or(authority),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The path the console is nested at (`/admin/webhooks`), without a final `/`; empty
/// when it is served at the root.
fn base_path(parts: &Parts) -> String {
    let inner = parts.uri.path();
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(inner, |o| o.0.path());
    let base = original
        .strip_suffix(inner)
        .or_else(|| (inner == "/").then_some(original))
        .unwrap_or("");
    base.trim_end_matches('/').to_owned()
}

/// Every value of the cookie `name`, in the order the browser sent them: a cookie of
/// the same name set for a longer path or by a sibling domain comes first, and must
/// not hide the console's own.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The host of a `Host` header or an authority (`[::1]:8080` → `::1`,
/// `Admin.Example.com.:443` → `admin.example.com`), in lower case, without a final dot.
fn host_name(authority: &str) -> String {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        },
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn now_secs() -> i64 {
    SystemClock.now_unix()
}

impl Console {
    async fn answer(&self, parts: &Parts, body: Body) -> Response {
        let route = Route::of(parts.uri.path());
        let base = base_path(parts);
        let read = parts.method == Method::GET || parts.method == Method::HEAD;
        if let Route::NotFound = route {
            return message(StatusCode::NOT_FOUND, "Not found", "No such page.");
        }
        match (read, route.allows_post(), parts.method == Method::POST) {
            (true, false, _) => self.get(parts, route, &base).await,
            (_, true, true) => self.post(parts, route, body, &base).await,
            (_, post, _) => {
                let mut r = message(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                    "This page does not take that method.",
                );
                let allow = if post { "POST" } else { "GET, HEAD" };
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                r
            }
        }
    }

    async fn get(&self, parts: &Parts, route: Route, base: &str) -> Response {
        if let Route::Css = route {
            return (
                [(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/css; charset=utf-8"),
                )],
                CSS,
            )
                .into_response();
        }
        let (nonce, fresh) =
            match cookies(&parts.headers, SESSION_COOKIE).find(|n| csrf::valid_nonce(n)) {
                Some(n) => (n.to_owned(), false),
                None => (self.csrf.nonce(), true),
            };
        let token = self.csrf.token(&nonce, now_secs());
        let ctx = Ctx {
            base,
            token: &token,
            now: SystemClock.now_millis(),
        };
        let query = parts.uri.query().map(html::form_pairs).unwrap_or_default();
        let notice = notice(&query);
        let after = query
            .iter()
            .find(|(k, v)| k == "after" && !v.is_empty())
            .map(|(_, v)| EventId::new(v.as_str()));
        let result = match route {
            Route::State(name) => {
                self.state_page(&ctx, &name, after.as_ref(), notice.as_deref())
                    .await
            }
            Route::Failed => {
                self.failed_page(&ctx, after.as_ref(), notice.as_deref())
                    .await
            }
            Route::Job(key) => self.job_page(&ctx, &key, notice.as_deref()).await,
            _ => self.overview(&ctx, notice.as_deref()).await,
        };
        let mut response = match result {
            Ok(r) => r,
            Err(e) => unavailable(&e),
        };
        if fresh {
            // The base comes from the request's path: one that could end the attribute
            // (a `;` is legal in a path, and a route with a parameter takes what it is
            // sent) would let a link add `Domain=` or `Max-Age=` to the cookie. Any
            // other visible character is kept: the cookie's path must match the path
            // as the browser sends it.
            let plain = base
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'));
            let path = if base.is_empty() || !plain { "/" } else { base };
            let secure = if self.over_https(parts) {
                "; Secure"
            } else {
                ""
            };
            // `Lax`: a top-level navigation from another site (a link in a chat) sends
            // the cookie, so its nonce is kept rather than replaced, which would void the
            // forms of every other tab. POSTs still need the token and a same-origin
            // `Sec-Fetch-Site`.
            let attributes = format!("HttpOnly; SameSite=Lax{secure}");
            let value = format!("{SESSION_COOKIE}={nonce}; Path={path}; {attributes}");
            let value = HeaderValue::from_str(&value).or_else(|_| {
                HeaderValue::from_str(&format!("{SESSION_COOKIE}={nonce}; Path=/; {attributes}"))
            });
            if let Ok(v) = value {
                response.headers_mut().append(SET_COOKIE, v);
            }
        }
        response
    }

    async fn overview(
        &self,
        ctx: &Ctx<'_>,
        notice: Option<&str>,
    ) -> Result<Response, crate::idempotency::StoreError> {
        let counts = self.queue.counts().await?;
        let dead = self.queue.jobs(JobState::Dead, self.page_size).await?;
        let retrying = self.queue.jobs(JobState::Retrying, self.page_size).await?;
        let recent = self.queue.recent(self.page_size).await?;
        let mut main = html::overview(ctx, &counts, &dead, &retrying, &recent);
        if let Some(store) = &self.store {
            let failed = store
                .failed_events(self.page_size.saturating_add(1))
                .await?;
            let (failed, more) = one_page(failed, self.page_size, |r| &r.event_id);
            main.push_str(&html::store_failures(ctx, &failed, None, more.as_ref()));
        }
        Ok(page(
            StatusCode::OK,
            html::layout(ctx, "Queue", notice, &main),
        ))
    }

    async fn state_page(
        &self,
        ctx: &Ctx<'_>,
        name: &str,
        after: Option<&EventId>,
        notice: Option<&str>,
    ) -> Result<Response, crate::idempotency::StoreError> {
        let Ok(state) = name.parse::<JobState>() else {
            return Ok(message(
                StatusCode::NOT_FOUND,
                "Not found",
                "No such state.",
            ));
        };
        let counts = self.queue.counts().await?;
        let limit = self.page_size.saturating_mul(4);
        let jobs = match after {
            Some(after) => {
                self.queue
                    .jobs_after(state, after, limit.saturating_add(1))
                    .await?
            }
            None => self.queue.jobs(state, limit.saturating_add(1)).await?,
        };
        let (jobs, next) = one_page(jobs, limit, |j| &j.key);
        let main = html::state_page(ctx, state, &counts, &jobs, after, next.as_ref());
        Ok(page(
            StatusCode::OK,
            html::layout(ctx, state.as_str(), notice, &main),
        ))
    }

    /// The store's failed events, a page at a time (`?after=` the last id of the page
    /// before).
    async fn failed_page(
        &self,
        ctx: &Ctx<'_>,
        after: Option<&EventId>,
        notice: Option<&str>,
    ) -> Result<Response, crate::idempotency::StoreError> {
        let Some(store) = &self.store else {
            return Ok(message(
                StatusCode::NOT_FOUND,
                "Not found",
                "This console was given no idempotency store.",
            ));
        };
        let limit = self.page_size.saturating_mul(4);
        let failed = match after {
            Some(after) => {
                store
                    .failed_events_after(after, limit.saturating_add(1))
                    .await?
            }
            None => store.failed_events(limit.saturating_add(1)).await?,
        };
        let (failed, next) = one_page(failed, limit, |r| &r.event_id);
        let main = html::store_failures(ctx, &failed, Some(after), next.as_ref());
        Ok(page(
            StatusCode::OK,
            html::layout(ctx, "Failed inline", notice, &main),
        ))
    }

    async fn job_page(
        &self,
        ctx: &Ctx<'_>,
        key: &str,
        notice: Option<&str>,
    ) -> Result<Response, crate::idempotency::StoreError> {
        Ok(match self.queue.job(&EventId::new(key)).await? {
            Some(job) => {
                let main = html::job_page(ctx, &job);
                page(StatusCode::OK, html::layout(ctx, key, notice, &main))
            }
            None => {
                let main = format!(
                    "<h1>Not found</h1>\n<p class=\"empty\">The queue holds no job with the key \
                     <span class=\"mono\">{}</span>: it was never queued here, or it completed \
                     and was purged.</p>\n",
                    html::Esc(key)
                );
                page(
                    StatusCode::NOT_FOUND,
                    html::layout(ctx, "Not found", notice, &main),
                )
            }
        })
    }

    /// Whether a POST comes from the console's own pages, by `Sec-Fetch-Site` and
    /// `Origin` when the browser sends them.
    fn same_origin(&self, headers: &HeaderMap, parts: &Parts) -> bool {
        if let Some(site) = headers.get("sec-fetch-site") {
            if site.as_bytes() != b"same-origin" {
                return false;
            }
        }
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if !self.allowed_origins.is_empty() {
            return self.allowed_origins.contains(&origin);
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false; // "null", or garbage
        };
        // Requested over HTTPS (by the request itself or its proxy), a page of the same
        // host over plain HTTP is another origin.
        if scheme != "https" && request_says_https(parts) {
            return false;
        }
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()));
        host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
    }

    async fn post(&self, parts: &Parts, route: Route, body: Body, base: &str) -> Response {
        let forbidden = |text: &str| message(StatusCode::FORBIDDEN, "Forbidden", text);
        if !self.same_origin(&parts.headers, parts) {
            return forbidden("This request did not come from the console's own pages.");
        }
        let body = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => {
                return message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Too large",
                    "The form was larger than the console accepts.",
                )
            }
        };
        let form = html::form_pairs(&String::from_utf8_lossy(&body));
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let token = field("csrf").unwrap_or("");
        let now = now_secs();
        if !cookies(&parts.headers, SESSION_COOKIE).any(|nonce| self.csrf.check(nonce, token, now))
        {
            return forbidden(
                "The form's CSRF token is missing, wrong or expired: reload the page and try again.",
            );
        }
        let home = if base.is_empty() { "/" } else { base };
        match route {
            Route::Requeue => {
                let Some(key) = field("key").filter(|k| !k.is_empty()) else {
                    return message(
                        StatusCode::BAD_REQUEST,
                        "Bad request",
                        "No job key was given.",
                    );
                };
                match self.queue.requeue(&EventId::new(key)).await {
                    Ok(done) => {
                        note_requeued(key, done);
                        let notice = if done { "requeued" } else { "not_requeued" };
                        redirect(format!("{base}/jobs/{}?notice={notice}", PathSeg(key)))
                    }
                    Err(e) => unavailable(&e),
                }
            }
            _ => {
                // Another count of dead jobs than the page showed: jobs died since, or
                // were requeued elsewhere, and the operator has not seen the list as it
                // is. Nothing is requeued; the overview shows it. (A count is no
                // snapshot: a job that dies between this count and the requeue, or as
                // many dying as were requeued elsewhere, is requeued with the rest.)
                if let Some(shown) = field("dead").and_then(|n| n.parse::<u64>().ok()) {
                    match self.queue.counts().await {
                        Ok(c) if c.dead > shown => {
                            let more = c.dead - shown;
                            return redirect(format!("{home}?notice=more_dead&n={more}"));
                        }
                        Ok(c) if c.dead < shown => {
                            return redirect(format!("{home}?notice=fewer_dead"));
                        }
                        Ok(_) => {}
                        Err(e) => return unavailable(&e),
                    }
                }
                self.requeue_all_dead(home).await
            }
        }
    }

    async fn requeue_all_dead(&self, home: &str) -> Response {
        match self.queue.requeue_dead().await {
            Ok(n) => {
                note_requeued_dead(n);
                redirect(format!("{home}?notice=requeued_dead&n={n}"))
            }
            Err(e) => unavailable(&e),
        }
    }
}

/// A page from a listing asked for one item more than `limit`: the page, and the key of its
/// last item when another follows (where the next page starts).
fn one_page<T>(
    mut items: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> &EventId,
) -> (Vec<T>, Option<EventId>) {
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(|i| key(i).clone());
    (items, next)
}

/// The notice a redirect asked for: one of a fixed few, never text from the request.
fn notice(query: &[(String, String)]) -> Option<String> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match get("notice")? {
        "requeued" => Some(
            "Requeued with its attempts reset (a full run of retries again): a worker will \
             run it shortly."
                .to_owned(),
        ),
        "not_requeued" => {
            Some("Not requeued: only dead and retrying jobs can be requeued.".to_owned())
        }
        "requeued_dead" => {
            let n: u64 = get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            Some(format!(
                "Requeued {n} dead job{}.",
                if n == 1 { "" } else { "s" }
            ))
        }
        "fewer_dead" => Some(
            "Nothing was requeued: some of the dead jobs on that page were requeued since \
             it was drawn. Look at the list below, then requeue again."
                .to_owned(),
        ),
        "more_dead" => {
            let n: u64 = get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            Some(format!(
                "Nothing was requeued: {n} more job{} died since that page was drawn. \
                 Look at them below, then requeue again.",
                if n == 1 { "" } else { "s" }
            ))
        }
        _ => None,
    }
}

fn note_requeued(key: &str, done: bool) {
    tracing::info!(job = key, requeued = done, "console: requeue");
}

fn note_requeued_dead(n: u64) {
    tracing::info!(jobs = n, "console: requeue all dead");
}

/// Whether the request came over HTTPS, by its own URI or by what the first proxy says
/// (the first value of `X-Forwarded-Proto`, the `proto` of `Forwarded`'s first element).
fn request_says_https(parts: &Parts) -> bool {
    // The first proxy's view: the one the browser talked to.
    let first = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .unwrap_or("")
    };
    let forwarded_proto = first("forwarded").split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("proto")
            .then(|| value.trim().trim_matches('"'))
    });
    parts.uri.scheme_str() == Some("https")
        || first("x-forwarded-proto")
            .trim()
            .eq_ignore_ascii_case("https")
        || forwarded_proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> Parts {
        let (parts, ()) = http::Request::get("/")
            .header("authorization", value)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn credentials_of_any_length_but_the_right_one_are_refused() {
        let check = bearer_token("t0ken");
        assert!(check(&with_auth("Bearer t0ken")));
        assert!(check(&with_auth("bearer  t0ken ")));
        for wrong in ["t0ke", "t0kenn", "t0keN", "", "x", "t0ken t0ken"] {
            assert!(!check(&with_auth(&format!("Bearer {wrong}"))), "{wrong:?}");
        }
        assert!(!check(&with_auth("Basic t0ken")));
        assert!(!bearer_token("")(&with_auth("Bearer ")));

        let check = basic_auth("admin", "s3cret");
        assert!(check(&with_auth(&format!(
            "Basic {}",
            base64(b"admin:s3cret")
        ))));
        for wrong in ["admin:s3cre", "admin:s3crett", "admin:", "Admin:s3cret"] {
            let value = format!("Basic {}", base64(wrong.as_bytes()));
            assert!(!check(&with_auth(&value)), "{wrong:?}");
        }
    }

    #[test]
    fn allowed_origins_are_written_as_browsers_write_origin() {
        for (given, kept) in [
            ("https://admin.example.com", "https://admin.example.com"),
            (
                "https://Admin.Example.com:443/",
                "https://admin.example.com",
            ),
            ("http://admin.example.com:80", "http://admin.example.com"),
            (
                "https://admin.example.com:8443",
                "https://admin.example.com:8443",
            ),
            (
                "http://admin.example.com:443",
                "http://admin.example.com:443",
            ),
            ("admin.example.com", "https://admin.example.com"),
            ("localhost:8080", "http://localhost:8080"),
            ("LocalHost", "http://localhost"),
            ("app.localhost:3000/console", "http://app.localhost:3000"),
            ("127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("[::1]:3000", "http://[::1]:3000"),
            ("localhost.example.com", "https://localhost.example.com"),
            ("10.0.0.5:3000", "https://10.0.0.5:3000"),
            ("https://localhost:8443", "https://localhost:8443"),
            (" https://admin.example.com ", "https://admin.example.com"),
        ] {
            assert_eq!(normal_origin(given), kept, "{given}");
        }
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn routes() {
        assert!(matches!(Route::of("/"), Route::Overview));
        assert!(matches!(Route::of(""), Route::Overview));
        assert!(matches!(Route::of("/jobs/evt_1%2Fx"), Route::Job(k) if k == "evt_1/x"));
        assert!(matches!(Route::of("/state/dead/"), Route::State(s) if s == "dead"));
        assert!(matches!(Route::of("/jobs/"), Route::NotFound));
        assert!(matches!(Route::of("/failed"), Route::Failed));
        assert!(matches!(Route::of("/failed/x"), Route::NotFound));
        assert!(matches!(Route::of("/jobs/a/b"), Route::NotFound));
        assert!(matches!(Route::of("/other"), Route::NotFound));
    }

    #[test]
    fn notices_are_fixed_text() {
        let q = |s: &str| html::form_pairs(s);
        assert_eq!(notice(&q("notice=<script>")), None);
        assert_eq!(
            notice(&q("notice=requeued_dead&n=3")).as_deref(),
            Some("Requeued 3 dead jobs.")
        );
        assert_eq!(
            notice(&q("notice=requeued_dead&n=<b>")).as_deref(),
            Some("Requeued 0 dead jobs.")
        );
    }
}
