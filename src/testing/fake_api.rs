//! A fake Stripe API: a small HTTP/1.1 server on 127.0.0.1 that serves what a test
//! loaded, injects faults on demand and records every request.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::client::percent_decode;

/// The API key [`FakeStripe::client`] sends. The fake accepts any key, as a bearer token
/// or as basic auth's user name, and answers 401 to a request without one, as Stripe
/// does.
pub const FAKE_API_KEY: &str = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc";

/// A fault [`FakeStripe`] injects instead of (or before) its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// 429, as Stripe answers it (`invalid_request_error`, code `rate_limit`), with
    /// `Retry-After: <secs>` when given.
    TooManyRequests {
        /// The `Retry-After` header, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// 429 (code `rate_limit`) with `Retry-After` as an HTTP date (what a proxy or load
    /// balancer in front of an API may send instead of seconds).
    TooManyRequestsUntil {
        /// The time `Retry-After` names (written to the second).
        retry_at: std::time::SystemTime,
    },
    /// 500 `api_error`, with `Stripe-Should-Retry: <should_retry>` when given.
    ServerError {
        /// The `Stripe-Should-Retry` header.
        should_retry: Option<bool>,
    },
    /// Any answer: a status, Stripe's error `type`, `code` and `message`, and
    /// `Stripe-Should-Retry` when given (a 401 for a revoked key, a 409 lock conflict…).
    Error {
        /// The HTTP status.
        status: u16,
        /// The error's `type`, for example `invalid_request_error`.
        error_type: String,
        /// The error's `code`, if any.
        code: Option<String>,
        /// The error's `message`.
        message: String,
        /// The error's `param`, if any: the parameter it is about.
        param: Option<String>,
        /// The `Stripe-Should-Retry` header.
        should_retry: Option<bool>,
    },
    /// Waits this long, then answers as usual, or with the next matching fault of another
    /// kind (a slow 500, a slow dropped connection): the delays of every matching rule
    /// before that fault add up, and each counts the request.
    Delay(Duration),
    /// Closes the connection without answering.
    DropConnection,
    /// Answers `status` with an error body (`invalid_request_error`) and its full
    /// `Content-Length`, then closes the connection half-way through the body: a
    /// connection lost while an error answer was read.
    CutBody {
        /// The HTTP status.
        status: u16,
    },
}

/// One request the fake received. Its `Debug` hides the `Authorization` header's
/// value (a test may point a client holding a real test key at the fake).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The method, as sent (`GET`).
    pub method: String,
    /// The path, without the query, its `%XX` escapes decoded.
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The query as sent, its escapes as they were (empty when there was none).
    pub raw_query: String,
    /// The headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if n == "authorization" {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (n.as_str(), shown)
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("raw_query", &self.raw_query)
            .field("headers", &headers)
            .finish()
    }
}

impl RecordedRequest {
    /// The first value of a header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a query parameter, in order.
    pub fn query_values(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct FaultRule {
    path_prefix: Option<String>,
    remaining: Option<usize>,
    fault: Fault,
}

struct StoredEvent {
    id: String,
    /// Unix seconds for a v1 event; Unix milliseconds for a v2 event, whose times
    /// Stripe compares to the millisecond.
    created: i64,
    event_type: String,
    delivery_success: bool,
    object_id: Option<String>,
    /// The connected account it belongs to (a snapshot event's `account`, a thin event's
    /// `context`); `None` for the platform's own.
    account: Option<String>,
    order: u64,
    json: String,
}

impl StoredEvent {
    fn key(&self) -> (i64, u64) {
        (self.created, self.order)
    }
}

#[derive(Default)]
struct Inner {
    events: Vec<StoredEvent>,
    v2_events: Vec<StoredEvent>,
    /// By the account they belong to (`None`: the platform's) and path.
    objects: HashMap<(Option<String>, String), String>,
    /// The collections (`/v1/customers`) of the objects added and of the added thin
    /// events' related objects: a missing object there is `resource_missing`, as on
    /// Stripe, where any other path is a URL the API does not know.
    collections: std::collections::HashSet<String>,
    faults: Vec<FaultRule>,
    requests: std::collections::VecDeque<RecordedRequest>,
    order: u64,
    /// Events created before this are gone ([`FakeStripe::retain_events_since`]).
    retained_since: Option<i64>,
    /// The only API key taken ([`FakeStripe::require_api_key`]); any when `None`.
    api_key: Option<String>,
    /// The connected accounts registered ([`FakeStripe::add_account`]): once there is
    /// one, another account's header is refused.
    accounts: std::collections::HashSet<String>,
}

#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    request_ids: AtomicU64,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread cannot leave the maps half-updated in a way that
        // matters to a fake: go on with them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fake Stripe API for tests, on `127.0.0.1` and a free port: point a client at
/// [`base_url`](Self::base_url) and load what it should serve.
///
/// It serves, from what the test loaded:
///
/// - `GET /v1/events` (newest first) with `created[gte|gt|lt|lte]`, `types[]` (at most
///   20), `type` (with a wildcard, `invoice.*`; not with `types[]`), `delivery_success`,
///   `starting_after`, `ending_before` and `limit` (1–100, default 10), answering
///   `{"object": "list", "data", "has_more", "url"}`;
/// - `GET /v1/events/{id}` ([`add_event`](Self::add_event));
/// - `GET /v2/core/events` with `object_id`, `types[0]`, `types[1]`, … (or `types`
///   repeated, the deprecated form Stripe still takes), `created[gt|gte|lt|lte]`
///   (RFC 3339), `limit` (default 20) and `page`, answering `{"data", "next_page_url",
///   "previous_page_url"}` (the page URLs keep the filters; times compare to the
///   millisecond, as Stripe's);
/// - `GET /v2/core/events/{id}` ([`add_v2_event`](Self::add_v2_event));
/// - any object by its path ([`add_object`](Self::add_object), or
///   [`add_object_for`](Self::add_object_for) a connected account's).
///
/// Either list refuses parameters it does not know with Stripe's 400 `parameter_unknown`
/// (naming each), so a misspelt filter fails a test instead of listing everything; an id
/// that names nothing is Stripe's 404 `resource_missing` with the parameter it came from
/// as `param` (`id` for a path, `starting_after`, `ending_before`).
///
/// As on Stripe, an event of a connected account (a snapshot event's `account`, a thin
/// event's `context`) is listed and retrieved only with that account's `Stripe-Account`
/// (v1) or `Stripe-Context` (v2) header, and the platform's own only without one. Unlike
/// Stripe, which lists the last 30 days, it keeps every event it was given (fixtures with
/// fixed dates do not age) until told to forget those before a time
/// ([`retain_events_since`](Self::retain_events_since)).
///
/// Anything else is Stripe's 404 (`invalid_request_error`): `resource_missing` for an
/// object's path (`/v1/customers/cus_404`), no code for a URL the API does not know;
/// every answer has a `Request-Id`, and a `Stripe-Version`: the request's, else
/// [`API_VERSION`](crate::client::API_VERSION). A request without `Authorization` is answered 401,
/// and any method but `GET` 405. Faults ([`fail_next`](Self::fail_next),
/// [`fail_path`](Self::fail_path)) come before the answer. A request whose head it cannot
/// read (over 64 KiB, or without a request line) is answered 400 and not recorded; every
/// other request is recorded
/// ([`requests`](Self::requests), the last [`MAX_RECORDED`] of them), with the most
/// ever in flight at once ([`max_in_flight`](Self::max_in_flight)). The server and the
/// connections it answers stop when the value is dropped.
///
#[cfg_attr(
    feature = "client",
    doc = r#"
```
use stripe_webhooks::client::{ListEventsParams, RequestContext, StripeClient};
use stripe_webhooks::testing::{self, FakeStripe, Fault};

# tokio::runtime::Runtime::new().unwrap().block_on(async {
let fake = FakeStripe::start().await?;
fake.add_event(&testing::event_for_type("evt_1", "invoice.paid").unwrap())?;
fake.fail_next(2, Fault::TooManyRequests { retry_after_secs: Some(0) });

// `fake.client()` is an `HttpClient` with its base URL set to `fake.base_url()`.
let client = fake.client()?;
let page = client.list_events(&RequestContext::platform(), &ListEventsParams::new()).await?;
assert_eq!(page.data.len(), 1); // after two 429s
assert_eq!(fake.requests().len(), 3);
assert_eq!(fake.requests()[2].header("stripe-version"), Some(stripe_webhooks::client::API_VERSION));
# Ok::<(), Box<dyn std::error::Error>>(())
# }).unwrap();
```
"#
)]
pub struct FakeStripe {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FakeStripe {
    /// Starts the server on `127.0.0.1` and a free port, on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The I/O error if no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // The connections' tasks: aborted with this one when the server is dropped
            // (a client's half-sent request or a slow answer does not outlive it).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(serve(stream, Arc::clone(&accept_state)));
                        }
                        // A client that hung up before it was accepted, or no file
                        // descriptor free for now: the server goes on.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`, for `HttpClient::with_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An `HttpClient` for this server: [`FAKE_API_KEY`], base URL
    /// [`base_url`](Self::base_url), and, so that tests stay fast, millisecond backoffs
    /// and a rate limit of 1,000 requests a second. Production's client
    /// (`HttpClient::new`) starts 20 a second, 8 in flight, within a 30 s deadline per
    /// call: a test that fans out hundreds of fetches (a reconciler pass, a queue backlog
    /// under `FetchLatest`) passes here where, in production, the calls whose turn in the
    /// rate limit falls past their deadline fail at once (`DeadlineExceeded`) and their
    /// events are retried later. To test with production's pacing, build the client
    /// yourself: `HttpClient::new(key)?.with_base_url(fake.base_url())`, keeping only
    /// `with_backoff` short.
    ///
    /// # Errors
    ///
    /// As `HttpClient::new`.
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub fn client(&self) -> Result<crate::client::HttpClient, crate::client::ClientError> {
        let key = crate::client::ApiKey::new(FAKE_API_KEY).map_err(|e| {
            crate::client::ClientError::InvalidUrl {
                url: String::new(),
                reason: match e {
                    crate::client::ApiKeyError::Empty => "empty api key",
                    _ => "invalid api key",
                },
            }
        })?;
        // As `HttpClient::new`'s, but never through a proxy from the environment: the
        // server is on this machine.
        let http = crate::client::HttpClient::reqwest_builder()
            .no_proxy()
            .build()
            .map_err(|e| crate::client::ClientError::Network(Box::new(e)))?;
        Ok(crate::client::HttpClient::with_reqwest(http, key)
            .with_base_url(self.base_url())
            .with_backoff(Duration::from_millis(1), Duration::from_millis(20))
            .with_rate_limit(1_000))
    }

    /// Takes only `key` from now on, as Stripe takes only a key of the account: a request
    /// with another is answered Stripe's 401 (`Invalid API Key provided: sk_test_****abcd`,
    /// the key masked as Stripe masks it). By default any bearer token is taken.
    pub fn require_api_key(&self, key: &str) {
        self.state.lock().api_key = Some(key.to_owned());
    }

    /// Registers a connected account. Once one is, a `Stripe-Account` header, or a
    /// `Stripe-Context` ending in an account, that names an account neither registered
    /// nor given to an added event or object is refused, as Stripe refuses an account the
    /// key cannot reach: 403, `The provided key '…' does not have access to account
    /// 'acct_…' (or that account does not exist)`. Without one, any account is taken
    /// (and lists only the events added for it).
    pub fn add_account(&self, account: &str) {
        self.state.lock().accounts.insert(account.to_owned());
    }

    /// Forgets, as Stripe does after 30 days, the events (snapshot and thin) created
    /// before `created` (Unix seconds): they are no longer listed, and retrieving one is
    /// `resource_missing`. `None` (the default) keeps every event. Tests of a reconciler
    /// that was stopped longer than Stripe keeps events use it.
    pub fn retain_events_since(&self, created: Option<i64>) {
        self.state.lock().retained_since = created;
    }

    /// Serves a snapshot event (`"object": "event"`) from `GET /v1/events/{id}` and in
    /// the list, as delivered successfully (`delivery_success=true`).
    ///
    /// # Errors
    ///
    /// The JSON error if it is not JSON with a string `id` and `type` and an integer
    /// `created`.
    pub fn add_event(&self, json: &str) -> Result<(), serde_json::Error> {
        self.add_event_with_delivery(json, true)
    }

    /// As [`add_event`](Self::add_event), with the `delivery_success` filter's answer
    /// for it.
    ///
    /// # Errors
    ///
    /// As [`add_event`](Self::add_event).
    pub fn add_event_with_delivery(
        &self,
        json: &str,
        delivery_success: bool,
    ) -> Result<(), serde_json::Error> {
        #[derive(Deserialize)]
        struct Tag {
            id: String,
            created: i64,
            #[serde(rename = "type")]
            event_type: String,
            #[serde(default)]
            account: Option<String>,
            #[serde(default)]
            context: Option<String>,
        }
        let tag: Tag = serde_json::from_str(json)?;
        // An event with only a `context` (an Accounts v2 or organization event) belongs
        // to the account it names, as `Event::account` reads it.
        let account = tag.account.or_else(|| {
            let context = tag.context.as_deref()?;
            crate::event::context_account(context).map(str::to_owned)
        });
        let mut inner = self.state.lock();
        inner.order += 1;
        let order = inner.order;
        inner.events.retain(|e| e.id != tag.id);
        inner.events.push(StoredEvent {
            id: tag.id,
            created: tag.created,
            event_type: tag.event_type,
            delivery_success,
            object_id: None,
            account,
            order,
            json: json.trim().to_owned(),
        });
        Ok(())
    }

    /// Serves a thin event (`"object": "v2.core.event"`) from `GET /v2/core/events/{id}`
    /// and in the list. Load it as `GET /v2/core/events/{id}` answers it, with `data`
    /// and `changes` where its type has them.
    ///
    /// # Errors
    ///
    /// The JSON error if it is not JSON with a string `id`, `type` and `created`
    /// (RFC 3339).
    pub fn add_v2_event(&self, json: &str) -> Result<(), serde_json::Error> {
        #[derive(Deserialize)]
        struct Related {
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            url: Option<String>,
        }
        #[derive(Deserialize)]
        struct Tag {
            id: String,
            created: String,
            #[serde(rename = "type")]
            event_type: String,
            #[serde(default)]
            related_object: Option<Related>,
            #[serde(default)]
            context: Option<String>,
        }
        let tag: Tag = serde_json::from_str(json)?;
        let created = crate::event::rfc3339_millis(&tag.created).ok_or_else(|| {
            <serde_json::Error as serde::de::Error>::custom("`created` is not RFC 3339")
        })?;
        let mut inner = self.state.lock();
        if let Some(url) = tag.related_object.as_ref().and_then(|r| r.url.as_deref()) {
            note_collection(&mut inner, &object_path(url));
        }
        inner.order += 1;
        let order = inner.order;
        inner.v2_events.retain(|e| e.id != tag.id);
        inner.v2_events.push(StoredEvent {
            id: tag.id,
            created,
            event_type: tag.event_type,
            delivery_success: true,
            object_id: tag.related_object.and_then(|r| r.id),
            account: tag.context,
            order,
            json: json.trim().to_owned(),
        });
        Ok(())
    }

    /// Serves the platform's object `json` from `GET {path}` (a path such as
    /// `/v1/customers/cus_1`, as a thin event's `related_object.url` gives), replacing
    /// what was there. As on Stripe, a request made for a connected account (with
    /// `Stripe-Account` or `Stripe-Context`) does not see it: load a connected account's
    /// objects with [`add_object_for`](Self::add_object_for).
    ///
    /// # Errors
    ///
    /// The JSON error if `json` is not JSON.
    pub fn add_object(&self, path: &str, json: &str) -> Result<(), serde_json::Error> {
        self.insert_object(None, path, json)
    }

    /// Serves `json` from `GET {path}` to requests made for the connected account
    /// `account` (`Stripe-Account: acct_…`, or `Stripe-Context` naming it), and to no
    /// other.
    ///
    /// # Errors
    ///
    /// The JSON error if `json` is not JSON.
    pub fn add_object_for(
        &self,
        account: &str,
        path: &str,
        json: &str,
    ) -> Result<(), serde_json::Error> {
        self.insert_object(Some(account.to_owned()), path, json)
    }

    fn insert_object(
        &self,
        account: Option<String>,
        path: &str,
        json: &str,
    ) -> Result<(), serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(json)?;
        let path = object_path(path);
        let mut inner = self.state.lock();
        note_collection(&mut inner, &path);
        inner
            .objects
            .insert((account, path), json.trim().to_owned());
        Ok(())
    }

    /// Stops serving the object at `path`, for the platform and every account (it
    /// answers 404, as a deleted object does).
    pub fn remove_object(&self, path: &str) {
        let path = object_path(path);
        self.state.lock().objects.retain(|(_, p), _| *p != path);
    }

    /// Answers the next `n` requests (any path) with `fault`.
    ///
    /// Rules apply in the order they were added: a request takes the first rule that
    /// matches it, after every matching [`Fault::Delay`] before that rule, so a delay
    /// added first and a fault added after make a slow fault.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.state.lock().faults.push(FaultRule {
            path_prefix: None,
            remaining: Some(n),
            fault,
        });
    }

    /// Answers requests whose path starts with `path_prefix` with `fault`: the next
    /// `times` of them, or every one until [`clear_faults`](Self::clear_faults) when
    /// `times` is `None`. Rules combine as [`fail_next`](Self::fail_next) says: a
    /// [`Fault::Delay`] slows the fault added after it.
    pub fn fail_path(&self, path_prefix: &str, times: Option<usize>, fault: Fault) {
        self.state.lock().faults.push(FaultRule {
            // Matched against request paths, which are decoded.
            path_prefix: Some(crate::client::path_decode(path_prefix)),
            remaining: times,
            fault,
        });
    }

    /// Removes every fault still pending.
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Every request received so far (the last [`MAX_RECORDED`]), in the order they
    /// arrived.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.iter().cloned().collect()
    }

    /// Forgets the recorded requests and resets [`max_in_flight`](Self::max_in_flight).
    pub fn clear_requests(&self) {
        self.state.lock().requests.clear();
        self.state.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for FakeStripe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeStripe")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An answer: status, extra headers, body.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Closes the connection half-way through the body ([`Fault::CutBody`]).
    cut: bool,
}

impl Answer {
    fn ok(body: String) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body,
            cut: false,
        }
    }

    fn error(status: u16, error_type: &str, code: Option<&str>, message: &str) -> Self {
        let mut error = serde_json::json!({"type": error_type, "message": message});
        if let Some(code) = code {
            error["code"] = code.into();
        }
        Self {
            status,
            headers: Vec::new(),
            body: serde_json::json!({ "error": error }).to_string(),
            cut: false,
        }
    }

    /// Stripe's 404 for an id that names nothing, with the parameter that gave it (`id`
    /// for the request's path).
    fn missing(what: &str, id: &str, param: &str) -> Self {
        Self::error(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such {what}: '{id}'"),
        )
        .with_param(param)
    }

    fn with_param(mut self, param: &str) -> Self {
        if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&self.body) {
            v["error"]["param"] = param.into();
            self.body = v.to_string();
        }
        self
    }

    fn bad_param(param: &str, message: &str) -> Self {
        Self::bad_param_code(param, "parameter_invalid", message)
    }

    fn bad_param_code(param: &str, code: &str, message: &str) -> Self {
        Self::error(400, "invalid_request_error", Some(code), message).with_param(param)
    }
}

/// What [`read_head`] read.
enum Head {
    /// A request head, bytes that are not UTF-8 replaced (HTTP allows them in values).
    Read(String),
    /// More than 64 KiB without the head's end.
    TooLarge,
    /// The connection closed or failed before a whole head.
    Closed,
}

/// Reads one request head.
async fn read_head(stream: &mut TcpStream) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        // The head ends at its first empty line; a line may end in a bare `\n`, as
        // RFC 9112 lets a server accept (such a head used to go unanswered).
        let bare = buf.windows(2).position(|w| w == b"\n\n");
        let crlf = buf.windows(3).position(|w| w == b"\n\r\n");
        if let Some(end) = bare.into_iter().chain(crlf).min() {
            buf.truncate(end);
            return Head::Read(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > 64 * 1024 {
            return Head::TooLarge;
        }
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Head::Closed,
        }
    }
}

fn parse_head(head: &str) -> Option<RecordedRequest> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(RecordedRequest {
        method,
        // As Stripe reads it: a custom id's escapes (`plan%3Agold`) decoded.
        path: crate::client::path_decode(path),
        query,
        raw_query: raw_query.to_owned(),
        headers,
    })
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let request = match read_head(&mut stream).await {
        Head::Closed => return,
        Head::TooLarge => None,
        Head::Read(head) => parse_head(&head),
    };
    let Some(request) = request else {
        let mut answer = Answer::error(
            400,
            "invalid_request_error",
            None,
            "The request could not be read: its head is over 64 KiB or has no request line.",
        );
        answer
            .headers
            .push(("Stripe-Version", crate::client::API_VERSION.to_owned()));
        send(&mut stream, &state, &answer).await;
        return;
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let answer = answer(&request, &state).await.map(|mut a| {
        a.headers
            .push(("Stripe-Version", answered_version(&request).to_owned()));
        a
    });
    // Done before the answer leaves: a client that sends its next request as soon as it
    // reads this one's answer must not be counted twice.
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    if let Some(answer) = answer {
        send(&mut stream, &state, &answer).await;
    }
}

/// The API version an answer names, as Stripe's do: the request's `Stripe-Version`, else
/// the version this crate pins (an account's default, on Stripe). A value that is not one
/// token of visible ASCII is not echoed.
fn answered_version(request: &RecordedRequest) -> &str {
    request
        .header("stripe-version")
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or(crate::client::API_VERSION)
}

/// Writes `answer` and closes the connection.
async fn send(stream: &mut TcpStream, state: &State, answer: &Answer) {
    let id = state.request_ids.fetch_add(1, Ordering::SeqCst) + 1;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRequest-Id: req_fake_{id}\r\nConnection: close\r\n",
        answer.status,
        reason(answer.status),
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let body = if answer.cut {
        // Half the body, on a char boundary (the bodies are JSON text).
        let mut half = answer.body.len() / 2;
        while !answer.body.is_char_boundary(half) {
            half -= 1;
        }
        &answer.body[..half]
    } else {
        &answer.body
    };
    out.push_str(body);
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The API key an `Authorization` header carries, as Stripe takes it: a bearer token, or
/// HTTP basic auth with the key as the user name (`curl -u sk_test_…:`), the password
/// empty. The scheme's name in any case.
fn api_key_of(authorization: &str) -> Option<String> {
    let (scheme, value) = authorization.trim().split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(value)?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _password) = text.split_once(':').unwrap_or((&text, ""));
    Some(user.to_owned())
}

/// Standard base64 (RFC 4648, padding optional); `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for group in text.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in group.iter().enumerate() {
            bits |= digit(c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Some(out)
}

/// A key as Stripe shows it in an error: its prefix (`sk_test_`) and last four
/// characters, `****` between (all masked when it is too short to show any).
fn masked_key(key: &str) -> String {
    let prefix_len = key
        .match_indices('_')
        .nth(1)
        .map_or(0, |(i, _)| i + 1)
        .min(key.len());
    let tail_start = key.len().saturating_sub(4);
    if tail_start <= prefix_len || !key.is_char_boundary(tail_start) {
        return "****".to_owned();
    }
    format!("{}****{}", &key[..prefix_len], &key[tail_start..])
}

/// Whether `account` is registered, or owns an added event or object (a thin event's
/// `context` names its account last: `org_1/acct_7`).
fn knows_account(inner: &Inner, account: &str) -> bool {
    let owns = |a: &Option<String>| {
        a.as_deref()
            .and_then(|a| a.rsplit('/').next())
            .is_some_and(|a| a == account)
    };
    inner.accounts.contains(account)
        || inner.events.iter().any(|e| owns(&e.account))
        || inner.v2_events.iter().any(|e| owns(&e.account))
        || inner.objects.keys().any(|(a, _)| owns(a))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        402 => "Payment Required",
        403 => "Forbidden",
        409 => "Conflict",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

/// The answer to a request, after its fault; `None` to drop the connection.
async fn answer(request: &RecordedRequest, state: &State) -> Option<Answer> {
    let (delay, fault) = {
        let mut inner = state.lock();
        if inner.requests.len() >= MAX_RECORDED {
            inner.requests.pop_front();
        }
        inner.requests.push_back(request.clone());
        // Every matching delay, in the order they were added, up to the first matching
        // fault of another kind: a delay combines with the fault after it.
        let mut delay = Duration::ZERO;
        let mut fault = None;
        for rule in inner.faults.iter_mut().filter(|r| {
            r.remaining != Some(0)
                && r.path_prefix
                    .as_deref()
                    .map_or(true, |p| request.path.starts_with(p))
        }) {
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
            match &rule.fault {
                Fault::Delay(d) => delay = delay.saturating_add(*d),
                other => {
                    fault = Some(other.clone());
                    break;
                }
            }
        }
        inner.faults.retain(|r| r.remaining != Some(0));
        (delay, fault)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        None | Some(Fault::Delay(_)) => {}
        Some(Fault::DropConnection) => return None,
        Some(Fault::CutBody { status }) => {
            let mut a = Answer::error(status, "invalid_request_error", None, "Cut short.");
            a.cut = true;
            return Some(a);
        }
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut a = too_many_requests();
            if let Some(s) = retry_after_secs {
                a.headers.push(("Retry-After", s.to_string()));
            }
            return Some(a);
        }
        Some(Fault::TooManyRequestsUntil { retry_at }) => {
            let mut a = too_many_requests();
            a.headers
                .push(("Retry-After", crate::client::http_date::format(retry_at)));
            return Some(a);
        }
        Some(Fault::ServerError { should_retry }) => {
            let mut a = Answer::error(500, "api_error", None, "An unknown error occurred.");
            if let Some(r) = should_retry {
                a.headers.push(("Stripe-Should-Retry", r.to_string()));
            }
            return Some(a);
        }
        Some(Fault::Error {
            status,
            error_type,
            code,
            message,
            param,
            should_retry,
        }) => {
            let mut a = Answer::error(status, &error_type, code.as_deref(), &message);
            if let Some(param) = param {
                a = a.with_param(&param);
            }
            if let Some(r) = should_retry {
                a.headers.push(("Stripe-Should-Retry", r.to_string()));
            }
            return Some(a);
        }
    }
    if request.method != "GET" {
        let mut a = Answer::error(
            405,
            "invalid_request_error",
            None,
            "the fake Stripe API only answers GET",
        );
        a.headers.push(("Allow", "GET".to_owned()));
        return Some(a);
    }
    let Some(key) = request
        .header("authorization")
        .and_then(api_key_of)
        .filter(|k| !k.is_empty())
    else {
        return Some(Answer::error(
            401,
            "invalid_request_error",
            None,
            "You did not provide an API key.",
        ));
    };
    let key = key.as_str();
    let inner = state.lock();
    if inner.api_key.as_deref().is_some_and(|k| k != key) {
        return Some(Answer::error(
            401,
            "invalid_request_error",
            None,
            &format!("Invalid API Key provided: {}", masked_key(key)),
        ));
    }
    let path = request.path.as_str();
    // As Stripe: the platform sees its own events, and a connected account's only with
    // that account's `Stripe-Account` or `Stripe-Context` header (the v2 API takes only
    // the latter). A context that is a path of accounts (`acct_1/acct_2`) names its last.
    let v1_account = request.header("stripe-account");
    let v2_account = request.header("stripe-context");
    let v1_events_of = v1_account.or_else(|| v2_account.and_then(|c| c.rsplit('/').next()));
    if let Some(account) = v1_events_of.filter(|a| a.starts_with("acct_")) {
        if !inner.accounts.is_empty() && !knows_account(&inner, account) {
            return Some(Answer::error(
                403,
                "invalid_request_error",
                None,
                &format!(
                    "The provided key '{}' does not have access to account '{account}' (or \
                     that account does not exist). Application access may have been revoked.",
                    masked_key(key)
                ),
            ));
        }
    }
    // Seconds for v1 events, milliseconds for v2's.
    let since = inner.retained_since;
    let v1: Vec<&StoredEvent> = inner
        .events
        .iter()
        .filter(|e| e.account.as_deref() == v1_events_of)
        .filter(|e| since.map_or(true, |t| e.created >= t))
        .collect();
    let v2: Vec<&StoredEvent> = inner
        .v2_events
        .iter()
        .filter(|e| e.account.as_deref() == v2_account)
        .filter(|e| since.map_or(true, |t| e.created >= t.saturating_mul(1000)))
        .collect();
    Some(if path == "/v1/events" {
        list_v1(&v1, request)
    } else if path == "/v2/core/events" {
        list_v2(&v2, request)
    } else if let Some(id) = path.strip_prefix("/v1/events/") {
        match v1.iter().find(|e| e.id == id) {
            Some(e) => Answer::ok(e.json.clone()),
            None => Answer::missing("event", id, "id"),
        }
    } else if let Some(id) = path.strip_prefix("/v2/core/events/") {
        match v2.iter().find(|e| e.id == id) {
            Some(e) => Answer::ok(e.json.clone()),
            None => Answer::missing("event", id, "id"),
        }
    } else {
        // An object: the account the request is made for, by either header (the last
        // account of a context path, as for events).
        let account = v1_events_of.map(str::to_owned);
        match inner.objects.get(&(account, path.to_owned())) {
            Some(json) => Answer::ok(json.clone()),
            // As Stripe: an object's path in a collection the fake knows (the client's
            // object paths, and those of the objects and thin events added) that names
            // none is `resource_missing`; any other path (`/v1/custmers/cus_1`) is a URL
            // the API does not know, a 404 without a code.
            None => match path.rsplit_once('/') {
                Some((collection, id)) if known_collection(&inner, collection) => {
                    Answer::missing("object", id, "id")
                }
                _ => Answer::error(
                    404,
                    "invalid_request_error",
                    None,
                    &format!("Unrecognized request URL (GET: {path})."),
                ),
            },
        }
    })
}

/// Where a page of `GET /v2/core/events` starts: after an event (older ones) or before
/// one (newer ones), by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageCursor {
    After((i64, u64)),
    Before((i64, u64)),
}

impl PageCursor {
    fn token(self) -> String {
        match self {
            PageCursor::After((c, o)) => format!("fake_after_{c}_{o}"),
            PageCursor::Before((c, o)) => format!("fake_before_{c}_{o}"),
        }
    }

    fn parse(token: &str) -> Option<Self> {
        let key = |rest: &str| {
            let (c, o) = rest.rsplit_once('_')?;
            Some((c.parse().ok()?, o.parse().ok()?))
        };
        if let Some(rest) = token.strip_prefix("fake_after_") {
            key(rest).map(PageCursor::After)
        } else {
            key(token.strip_prefix("fake_before_")?).map(PageCursor::Before)
        }
    }
}

/// An object's path as requests are matched against it: without its query, and with its
/// escapes decoded, as a request's path is (`/v1/products/plan%3Agold`, as a thin event's
/// `related_object.url` may give it, is the path of `plan:gold`).
fn object_path(path: &str) -> String {
    crate::client::path_decode(path.split('?').next().unwrap_or(path))
}

/// How many `types[]` `GET /v1/events` takes, as Stripe.
const MAX_TYPES: usize = 20;

/// How many requests a [`FakeStripe`] keeps for [`requests`](FakeStripe::requests), the
/// latest: a long-running fake (`examples/reconcile.rs --fake --every …`) stays bounded.
pub const MAX_RECORDED: usize = 10_000;

/// Keeps the collection of an object's `path` (`/v1/customers` of
/// `/v1/customers/cus_1`); a singleton's (`/v1/balance`) has none: `/v1` is no
/// collection.
fn note_collection(inner: &mut Inner, path: &str) {
    if let Some((collection, _)) = path.rsplit_once('/') {
        if collection.matches('/').count() >= 2 {
            inner.collections.insert(collection.to_owned());
        }
    }
}

/// Whether a missing object under `collection` is `resource_missing` (see
/// [`Inner::collections`]).
fn known_collection(inner: &Inner, collection: &str) -> bool {
    crate::client::paths::is_collection(collection) || inner.collections.contains(collection)
}

/// Both lists take at most [`MAX_TYPES`] types, as Stripe's do.
fn too_many_types(types: &[&str]) -> Result<(), Answer> {
    if types.len() > MAX_TYPES {
        return Err(Answer::bad_param(
            "types",
            &format!(
                "You may pass at most {MAX_TYPES} types (you passed {}).",
                types.len()
            ),
        ));
    }
    Ok(())
}

/// `text` percent-encoded for a query (unreserved characters kept).
fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Stripe's 429 answer, without its `Retry-After`.
fn too_many_requests() -> Answer {
    Answer::error(
        429,
        "invalid_request_error",
        Some("rate_limit"),
        "Request rate limit exceeded. Learn more about rate limits here \
         https://stripe.com/docs/rate-limits.",
    )
}

/// Parses an integer parameter; `Err` is the 400 to answer.
fn int_param(request: &RecordedRequest, name: &str) -> Result<Option<i64>, Answer> {
    match request.query_value(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            Answer::bad_param_code(
                name,
                "parameter_invalid_integer",
                &format!("Invalid integer: {v}"),
            )
        }),
    }
}

fn limit_param(request: &RecordedRequest, default: usize) -> Result<usize, Answer> {
    match int_param(request, "limit")? {
        None => Ok(default),
        Some(n) if (1..=100).contains(&n) => Ok(usize::try_from(n).unwrap_or(default)),
        Some(n) => Err(Answer::bad_param(
            "limit",
            &format!("This value must be between 1 and 100 (it was {n})."),
        )),
    }
}

/// `types[]`, `types[0]`, `types` and `type`.
fn types_param(request: &RecordedRequest) -> Vec<&str> {
    request
        .query
        .iter()
        .filter(|(k, _)| k == "types" || k == "type" || k.starts_with("types["))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn list_json(items: &[&StoredEvent]) -> String {
    let data: Vec<&str> = items.iter().map(|e| e.json.as_str()).collect();
    format!("[{}]", data.join(","))
}

fn newest_first<'a>(events: &[&'a StoredEvent]) -> Vec<&'a StoredEvent> {
    let mut all: Vec<&StoredEvent> = events.to_vec();
    all.sort_by_key(|e| std::cmp::Reverse(e.key()));
    all
}

/// Stripe's answer to parameters the endpoint does not take: 400, `parameter_unknown`,
/// naming each (`Received unknown parameters: a, b`), with the first as `param`.
fn only_known_params(
    request: &RecordedRequest,
    names: &[&str],
    prefixes: &[&str],
) -> Result<(), Answer> {
    let mut unknown: Vec<&str> = Vec::new();
    for (k, _) in &request.query {
        let known = names.contains(&k.as_str()) || prefixes.iter().any(|p| k.starts_with(p));
        if !known && !unknown.contains(&k.as_str()) {
            unknown.push(k);
        }
    }
    let Some(first) = unknown.first() else {
        return Ok(());
    };
    let plural = if unknown.len() > 1 { "s" } else { "" };
    Err(Answer::error(
        400,
        "invalid_request_error",
        Some("parameter_unknown"),
        &format!("Received unknown parameter{plural}: {}", unknown.join(", ")),
    )
    .with_param(first))
}

fn list_v1(events: &[&StoredEvent], request: &RecordedRequest) -> Answer {
    let result = (|| {
        only_known_params(
            request,
            &[
                "limit",
                "created",
                "created[gte]",
                "created[gt]",
                "created[lt]",
                "created[lte]",
                "delivery_success",
                "type",
                "starting_after",
                "ending_before",
            ],
            &["types[", "expand["],
        )?;
        let limit = limit_param(request, 10)?;
        let gte = int_param(request, "created[gte]")?;
        let gt = int_param(request, "created[gt]")?;
        let lt = int_param(request, "created[lt]")?;
        let lte = int_param(request, "created[lte]")?;
        let exact = int_param(request, "created")?;
        let delivery = match request.query_value("delivery_success") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(v) => {
                return Err(Answer::bad_param(
                    "delivery_success",
                    &format!("Invalid boolean: {v}"),
                ))
            }
        };
        let types = types_param(request);
        let single = request.query_value("type");
        if single.is_some() && types.len() > 1 {
            return Err(Answer::bad_param(
                "types",
                "You may only specify one of these parameters: type, types.",
            ));
        }
        too_many_types(&types)?;
        let all = newest_first(events);
        let cursor = |name: &str| -> Result<Option<(i64, u64)>, Answer> {
            match request.query_value(name) {
                None => Ok(None),
                Some(id) => all
                    .iter()
                    .find(|e| e.id == id)
                    .map(|e| Some(e.key()))
                    .ok_or_else(|| Answer::missing("event", id, name)),
            }
        };
        if request.query_value("starting_after").is_some()
            && request.query_value("ending_before").is_some()
        {
            return Err(Answer::error(
                400,
                "invalid_request_error",
                None,
                "Received both starting_after and ending_before parameters. Please pass in \
                 only one.",
            ));
        }
        let after = cursor("starting_after")?;
        let before = cursor("ending_before")?;
        let matching: Vec<&StoredEvent> = all
            .into_iter()
            .filter(|e| gte.map_or(true, |v| e.created >= v))
            .filter(|e| gt.map_or(true, |v| e.created > v))
            .filter(|e| lt.map_or(true, |v| e.created < v))
            .filter(|e| lte.map_or(true, |v| e.created <= v))
            .filter(|e| exact.map_or(true, |v| e.created == v))
            .filter(|e| delivery.map_or(true, |d| e.delivery_success == d))
            .filter(|e| match single {
                // `type` takes a wildcard: `invoice.*`.
                Some(t) => t
                    .strip_suffix('*')
                    .map_or(e.event_type == t, |prefix| e.event_type.starts_with(prefix)),
                None => types.is_empty() || types.contains(&e.event_type.as_str()),
            })
            .collect();
        let (page, has_more) = if let Some(b) = before {
            let newer: Vec<&StoredEvent> = matching.into_iter().filter(|e| e.key() > b).collect();
            let start = newer.len().saturating_sub(limit);
            (newer[start..].to_vec(), start > 0)
        } else {
            let older: Vec<&StoredEvent> = matching
                .into_iter()
                .filter(|e| after.map_or(true, |a| e.key() < a))
                .collect();
            let has_more = older.len() > limit;
            (older.into_iter().take(limit).collect(), has_more)
        };
        Ok(format!(
            r#"{{"object":"list","data":{},"has_more":{has_more},"url":"/v1/events"}}"#,
            list_json(&page)
        ))
    })();
    match result {
        Ok(body) => Answer::ok(body),
        Err(a) => a,
    }
}

/// A v2 list's time filter, in Unix milliseconds (Stripe compares v2 times to the
/// millisecond).
fn time_param(request: &RecordedRequest, name: &str) -> Result<Option<i64>, Answer> {
    match request.query_value(name) {
        None => Ok(None),
        Some(v) => crate::event::rfc3339_millis(v)
            .map(Some)
            .ok_or_else(|| Answer::bad_param(name, &format!("Invalid timestamp: {v}"))),
    }
}

fn list_v2(events: &[&StoredEvent], request: &RecordedRequest) -> Answer {
    let result = (|| {
        only_known_params(
            request,
            &[
                "limit",
                "page",
                "object_id",
                "types",
                "created[gt]",
                "created[gte]",
                "created[lt]",
                "created[lte]",
            ],
            &["types["],
        )?;
        let limit = limit_param(request, 20)?;
        let gt = time_param(request, "created[gt]")?;
        let gte = time_param(request, "created[gte]")?;
        let lt = time_param(request, "created[lt]")?;
        let lte = time_param(request, "created[lte]")?;
        let object_id = request.query_value("object_id");
        let types = types_param(request);
        too_many_types(&types)?;
        // A page token is a cursor, as Stripe's: the key of the event a page starts
        // after (`fake_after_…`, older events) or ends before (`fake_before_…`, newer
        // ones), so events added between two requests neither repeat nor vanish.
        let cursor = match request.query_value("page") {
            None => None,
            Some(p) => Some(
                PageCursor::parse(p)
                    .ok_or_else(|| Answer::bad_param("page", "Invalid page token."))?,
            ),
        };
        let matching: Vec<&StoredEvent> = newest_first(events)
            .into_iter()
            .filter(|e| gte.map_or(true, |v| e.created >= v))
            .filter(|e| gt.map_or(true, |v| e.created > v))
            .filter(|e| lt.map_or(true, |v| e.created < v))
            .filter(|e| lte.map_or(true, |v| e.created <= v))
            .filter(|e| object_id.map_or(true, |o| e.object_id.as_deref() == Some(o)))
            .filter(|e| types.is_empty() || types.contains(&e.event_type.as_str()))
            .collect();
        let page: Vec<&StoredEvent> = match cursor {
            None => matching.iter().take(limit).copied().collect(),
            Some(PageCursor::After(key)) => matching
                .iter()
                .filter(|e| e.key() < key)
                .take(limit)
                .copied()
                .collect(),
            Some(PageCursor::Before(key)) => {
                let newer: Vec<&StoredEvent> =
                    matching.iter().filter(|e| e.key() > key).copied().collect();
                newer[newer.len().saturating_sub(limit)..].to_vec()
            }
        };
        // As Stripe's, the URL alone gives the next page: the filters are kept in it.
        let filters: String = request
            .query
            .iter()
            .filter(|(k, _)| k != "page" && k != "limit")
            .map(|(k, v)| format!("&{}={}", encode_query(k), encode_query(v)))
            .collect();
        let url = |token: String| {
            serde_json::Value::from(format!(
                "/v2/core/events?limit={limit}{filters}&page={token}"
            ))
        };
        let next = match page.last() {
            Some(last) if matching.iter().any(|e| e.key() < last.key()) => {
                url(PageCursor::After(last.key()).token())
            }
            _ => serde_json::Value::Null,
        };
        let previous = match page.first() {
            Some(first) if matching.iter().any(|e| e.key() > first.key()) => {
                url(PageCursor::Before(first.key()).token())
            }
            _ => serde_json::Value::Null,
        };
        Ok(format!(
            r#"{{"data":{},"next_page_url":{next},"previous_page_url":{previous}}}"#,
            list_json(&page)
        ))
    })();
    match result {
        Ok(body) => Answer::ok(body),
        Err(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse() {
        let r = parse_head(
            "GET /v1/events?types%5B%5D=a&limit=3 HTTP/1.1\r\nHost: x\r\nStripe-Version: v",
        )
        .unwrap();
        assert_eq!(r.path, "/v1/events");
        assert_eq!(r.query_values("types[]"), ["a"]);
        assert_eq!(r.header("Stripe-Version"), Some("v"));
        assert!(parse_head("").is_none());
    }

    #[test]
    fn a_recorded_request_hides_its_key() {
        let r = parse_head("GET /v1/events HTTP/1.1\r\nAuthorization: Bearer sk_test_secret_1")
            .unwrap();
        assert_eq!(r.header("authorization"), Some("Bearer sk_test_secret_1"));
        let shown = format!("{r:?}");
        assert!(!shown.contains("sk_test_secret_1"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
