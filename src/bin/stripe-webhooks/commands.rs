//! The store and queue subcommands: status, failed, dead, show, requeue, purge, migrate.

use std::time::Duration;

use serde::Serialize;
use stripe_webhooks::queue::{JobRecord, JobState, QueueCounts};
use stripe_webhooks::{EventId, EventRecord};

use crate::backend::Backend;
use crate::error::CliError;
use crate::output::{field, human, print_json, utc, when, Table};
use crate::StoreOpts;

/// `status` counts the store's failed events up to this many.
const FAILED_COUNT_CAP: usize = 10_000;

/// One failed event or job, as `failed` and `dead` list it.
#[derive(Debug, Serialize)]
struct Row {
    /// The event id (the job's key).
    id: String,
    /// The event type.
    event_type: String,
    /// `failed` (a store record), `retrying` or `dead` (a queue job).
    state: &'static str,
    /// `store` (inline processing) or `queue`.
    source: &'static str,
    /// Attempts so far.
    attempts: u32,
    /// The last attempt's error.
    last_error: Option<String>,
    /// First claimed (store) or queued (queue), in Unix milliseconds.
    first_seen_ms: i64,
    /// The same, as `YYYY-MM-DD HH:MM:SS UTC`.
    first_seen: String,
    /// When a retrying job runs next, in Unix milliseconds.
    next_run_ms: Option<i64>,
}

impl Row {
    fn from_record(r: &EventRecord) -> Self {
        Self {
            id: r.event_id.as_str().to_owned(),
            event_type: r.event_type.as_str().to_owned(),
            state: "failed",
            source: "store",
            attempts: r.attempts,
            last_error: r.last_error.as_deref().map(redacted_error),
            first_seen_ms: r.first_seen_ms,
            first_seen: utc(r.first_seen_ms),
            next_run_ms: None,
        }
    }

    fn from_job(j: &JobRecord) -> Self {
        Self {
            id: j.key.as_str().to_owned(),
            event_type: j.event_type.clone(),
            state: j.state.as_str(),
            source: "queue",
            attempts: j.attempts,
            last_error: j.last_error.as_deref().map(redacted_error),
            first_seen_ms: j.enqueued_at_ms,
            first_seen: utc(j.enqueued_at_ms),
            next_run_ms: (j.state == JobState::Retrying)
                .then_some(j.run_at_ms)
                .flatten(),
        }
    }
}

/// A last error as printed: with any key or client secret in it redacted (the worker
/// redacts what it records; a record written otherwise may not be).
fn redacted_error(text: &str) -> String {
    stripe_webhooks::__cli::redact_error(text).into_owned()
}

/// A page of `dead --json`: its rows, and the `--after` value for the next page when
/// more follow (`null` on the last page).
#[derive(Debug, Serialize)]
struct DeadPage<'a> {
    data: &'a [Row],
    next_after: Option<&'a str>,
}

/// A page of `failed --json`: its rows, and for each list with more after its page the
/// value for that list's flag (`--after-event`, `--after-job`); `null` once a list ends,
/// or when this page did not list it (only the other list's flag was given).
#[derive(Debug, Serialize)]
struct FailedPage<'a> {
    data: &'a [Row],
    next_after_event: Option<&'a str>,
    next_after_job: Option<&'a str>,
}

fn print_rows(rows: &[Row], empty: &str) {
    if rows.is_empty() {
        crate::outln!("{empty}");
        return;
    }
    let mut t = Table::new(vec![
        "ID",
        "TYPE",
        "STATE",
        "ATTEMPTS",
        "FIRST SEEN",
        "LAST ERROR",
    ]);
    for r in rows {
        t.row(vec![
            r.id.clone(),
            r.event_type.clone(),
            r.state.to_owned(),
            r.attempts.to_string(),
            r.first_seen.clone(),
            r.last_error.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    crate::out!("{}", t.render());
}

#[derive(Debug, Serialize)]
struct Status<'a> {
    store: &'static str,
    target: &'a str,
    table: &'a str,
    queue: QueueCounts,
    /// The age of the oldest queued job, in milliseconds.
    lag_ms: Option<u64>,
    /// The store's failed events (inline processing), at most 10,000 counted.
    failed_events: usize,
    failed_events_capped: bool,
    /// What in the store server's settings can lose records (Redis: eviction,
    /// persistence).
    warnings: Vec<String>,
}

/// `status`: counts by state, the lag, and the store's failed events.
pub(crate) async fn status(b: &Backend, json: bool) -> Result<(), CliError> {
    let queue = b.queue().counts().await.map_err(b.err("counting jobs"))?;
    let failed = b
        .store()
        .failed_events(FAILED_COUNT_CAP + 1)
        .await
        .map_err(b.err("listing failed events"))?;
    let status = Status {
        store: b.kind(),
        target: b.target(),
        table: b.table(),
        lag_ms: queue.oldest_queued_age_ms,
        queue,
        failed_events: failed.len().min(FAILED_COUNT_CAP),
        failed_events_capped: failed.len() > FAILED_COUNT_CAP,
        warnings: b.warnings().await?,
    };
    if json {
        return print_json(&status);
    }
    crate::outln!("store      {} (table {})", status.target, status.table);
    let c = &status.queue;
    crate::outln!("queue      {}", b.queue_name());
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Dead,
        JobState::Completed,
    ] {
        crate::outln!("  {:<10} {}", state.as_str(), c.get(state));
    }
    match c.oldest_queued_age_ms {
        Some(ms) => crate::outln!(
            "lag        {} (the oldest queued job has waited this long)",
            human(Duration::from_millis(ms))
        ),
        None => crate::outln!("lag        none (nothing queued)"),
    }
    crate::outln!(
        "failed     {}{} in the store (inline processing; Stripe retries them)",
        status.failed_events,
        if status.failed_events_capped { "+" } else { "" }
    );
    for w in &status.warnings {
        crate::outln!("warning    {w}");
    }
    let (dead, retrying) = (status.queue.dead, status.queue.retrying);
    if dead > 0 {
        let c = b.command();
        crate::outln!(
            "\n{dead} dead: `{c} dead` lists them, `{c} show ID` shows one, `{c} requeue ID` reruns it"
        );
    }
    if retrying > 0 || status.failed_events > 0 {
        crate::outln!(
            "`{} failed` lists the failing events with their last errors",
            b.command()
        );
    }
    Ok(())
}

/// Where `failed` pages from: the store's failed events after `event`, the queue's
/// retrying jobs after `job`. With either, only the lists it names are shown.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FailedAfter<'a> {
    pub(crate) event: Option<&'a str>,
    pub(crate) job: Option<&'a str>,
}

/// `failed`: the store's failed events and the queue's retrying jobs, a page of each
/// (or of the lists `after` names, each from its place); in text, each list with more
/// after its page says the flag for its next.
pub(crate) async fn failed(
    b: &Backend,
    limit: usize,
    after: FailedAfter<'_>,
    json: bool,
) -> Result<(), CliError> {
    // One more than asked for, to know whether another page follows.
    let ask = limit.saturating_add(1);
    let paging = after.event.is_some() || after.job.is_some();
    let store = b.store();
    let mut events = match after.event.map(EventId::new) {
        Some(after) => store.failed_events_after(&after, ask).await,
        None if paging => Ok(Vec::new()),
        None => store.failed_events(ask).await,
    }
    .map_err(b.err("listing failed events"))?;
    let queue = b.queue();
    let mut jobs = match after.job.map(EventId::new) {
        Some(after) => queue.jobs_after(JobState::Retrying, &after, ask).await,
        None if paging => Ok(Vec::new()),
        None => queue.jobs(JobState::Retrying, ask).await,
    }
    .map_err(b.err("listing retrying jobs"))?;
    // An empty page after an id neither list holds (a typo, a purged record or job) is
    // an error (exit 3), not the end of the list.
    if let Some(e) = after.event.filter(|_| events.is_empty()) {
        let known = store.record(&EventId::new(e)).await;
        if known.map_err(b.err("reading the record"))?.is_none() {
            return Err(unknown_cursor("store record", e, "--after-event"));
        }
    }
    if let Some(j) = after.job.filter(|_| jobs.is_empty()) {
        let known = queue.job(&EventId::new(j)).await;
        if known.map_err(b.err("reading the job"))?.is_none() {
            return Err(unknown_cursor("job", j, "--after-job"));
        }
    }
    let more_events = events.len() > limit;
    let more_jobs = jobs.len() > limit;
    events.truncate(limit);
    jobs.truncate(limit);
    let mut rows: Vec<Row> = events.iter().map(Row::from_record).collect();
    rows.extend(jobs.iter().map(Row::from_job));
    rows.sort_by_key(|r| r.first_seen_ms);
    // Empty: said of the lists that were asked for (a page of one says nothing of the
    // other).
    let empty = match (after.event, after.job) {
        (None, None) => "no failed events and no retrying jobs".to_owned(),
        (Some(e), None) => format!("no more failed events after {e}"),
        (None, Some(j)) => format!("no more retrying jobs after {j}"),
        (Some(e), Some(j)) => {
            format!("no more failed events after {e} and no more retrying jobs after {j}")
        }
    };
    let next_event = events
        .last()
        .filter(|_| more_events)
        .map(|r| r.event_id.as_str());
    let next_job = jobs.last().filter(|_| more_jobs).map(|j| j.key.as_str());
    if json {
        return print_json(&FailedPage {
            data: &rows,
            next_after_event: next_event,
            next_after_job: next_job,
        });
    }
    print_rows(&rows, &empty);
    if let Some(last) = next_event {
        more_follow("failed events", "--after-event", last);
    }
    if let Some(last) = next_job {
        more_follow("retrying jobs", "--after-job", last);
    }
    Ok(())
}

/// The error for a page asked after an id its list does not hold.
fn unknown_cursor(what: &str, id: &str, flag: &str) -> CliError {
    CliError::NotFound(format!(
        "no {what} {id} to page after (a typo, or purged): leave {flag} out to list from \
         the first"
    ))
}

/// In text, after a page with more after it: the flag for the next page of `what`. The
/// flag only: the store's own flags (a URL may carry a password) are the operator's to
/// repeat.
fn more_follow(what: &str, flag: &str, last: &str) {
    crate::outln!(
        "\nmore {what} follow: run this command again with {flag}={}",
        shell_word(last)
    );
}

/// `dead`: the queue's dead jobs, a page of them (after `after`, when given); a page with
/// more after it ends, in text, with the flag for the next.
pub(crate) async fn dead(
    b: &Backend,
    limit: usize,
    after: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let queue = b.queue();
    // One more than asked for, to know whether another page follows.
    let ask = limit.saturating_add(1);
    let mut jobs = match after.map(EventId::new) {
        Some(after) => queue.jobs_after(JobState::Dead, &after, ask).await,
        None => queue.jobs(JobState::Dead, ask).await,
    }
    .map_err(b.err("listing dead jobs"))?;
    let more = jobs.len() > limit;
    jobs.truncate(limit);
    let rows: Vec<Row> = jobs.iter().map(Row::from_job).collect();
    // An empty page after a key the queue does not hold (a typo, a purged job) is an
    // error (exit 3), rather than the end of the list.
    let empty = match after {
        Some(after) if rows.is_empty() => {
            let known = queue.job(&EventId::new(after)).await;
            match known.map_err(b.err("reading the job"))? {
                Some(_) => format!("no dead jobs after {after}"),
                None => return Err(unknown_cursor("job", after, "--after")),
            }
        }
        _ => "no dead jobs".to_owned(),
    };
    let next = rows.last().filter(|_| more).map(|r| r.id.as_str());
    if json {
        return print_json(&DeadPage {
            data: &rows,
            next_after: next,
        });
    }
    print_rows(&rows, &empty);
    if let Some(last) = next {
        more_follow("dead jobs", "--after", last);
    }
    Ok(())
}

/// `s` as one shell word: as it is when it holds only safe characters, else single-quoted.
pub(crate) fn shell_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':');
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A store record, as `show` prints it.
#[derive(Debug, Serialize)]
struct RecordView {
    event_id: String,
    event_type: String,
    status: &'static str,
    attempts: u32,
    last_error: Option<String>,
    first_seen_ms: i64,
    completed_at_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
struct ShowView {
    id: String,
    job: Option<JobRecord>,
    record: Option<RecordView>,
    /// The job's body: JSON as stored (see [`raw_body`]) with any client secret, OAuth
    /// code, bearer URL or card number as `"<redacted>"`; with `--raw`, as stored, or a
    /// string if it is not JSON (without `--raw`, such a body is left out: `null`).
    body: Option<Box<serde_json::value::RawValue>>,
}

/// A job's body for `show --json`: a JSON body as stored, in Stripe's member order and
/// with its numbers as written, less the whitespace between its tokens (the output
/// escapes control characters, which JSON allows raw between tokens but not escaped);
/// any other body as a JSON string.
fn raw_body(body: &[u8]) -> Result<Box<serde_json::value::RawValue>, CliError> {
    let json = std::str::from_utf8(body)
        .ok()
        .filter(|text| serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok())
        .map(stripe_webhooks::__cli::compact_json);
    let json = match json {
        Some(json) => json,
        None => serde_json::to_string(&String::from_utf8_lossy(body))
            .map_err(|e| CliError::Other(format!("cannot write the body as JSON: {e}")))?,
    };
    serde_json::value::RawValue::from_string(json)
        .map_err(|e| CliError::Other(format!("cannot write the body as JSON: {e}")))
}

/// `show ID`: the job and the store record, and the body: with client secrets, OAuth
/// codes, bearer URLs and card numbers redacted unless `raw`.
pub(crate) async fn show(b: &Backend, id: &str, json: bool, raw: bool) -> Result<(), CliError> {
    let key = EventId::new(id);
    let job = b
        .queue()
        .job(&key)
        .await
        .map_err(b.err("reading the job"))?;
    let record = b
        .store()
        .record(&key)
        .await
        .map_err(b.err("reading the store record"))?
        .map(|r| RecordView {
            event_id: r.event_id.as_str().to_owned(),
            event_type: r.event_type.as_str().to_owned(),
            status: r.status.as_str(),
            attempts: r.attempts,
            last_error: r.last_error.as_deref().map(redacted_error),
            first_seen_ms: r.first_seen_ms,
            completed_at_ms: r.completed_at_ms,
        });
    if job.is_none() && record.is_none() {
        return Err(CliError::NotFound(format!(
            "no job and no store record with id {id} in {} (table {}): check the id, and the \
             store flags (--sqlite, --database-url, --redis-url, --table)",
            b.target(),
            b.table()
        )));
    }
    let mut job = job;
    // A body that is not JSON the redaction can read (it reads it as a
    // `serde_json::Value`, which refuses what skipping over it would not: a number out
    // of range, a lone surrogate, nesting past 128 levels) cannot be searched for
    // secrets: left out unless `raw`.
    let mut hidden = false;
    if let Some(j) = job.as_mut() {
        j.last_error = j.last_error.as_deref().map(redacted_error);
        if !raw {
            let text = std::str::from_utf8(&j.body)
                .ok()
                .filter(|t| serde_json::from_str::<serde_json::Value>(t).is_ok());
            match text.map(stripe_webhooks::__cli::redact_body) {
                Some(std::borrow::Cow::Borrowed(_)) => {}
                Some(std::borrow::Cow::Owned(shown)) => j.body = shown.into_bytes(),
                None => hidden = true,
            }
        }
    }
    let body = job
        .as_ref()
        .filter(|_| !hidden)
        .map(|j| raw_body(&j.body))
        .transpose()?;
    let view = ShowView {
        id: id.to_owned(),
        job,
        record,
        body,
    };
    if json {
        return print_json(&view);
    }
    if let Some(j) = &view.job {
        crate::outln!("job {}", field(j.key.as_str()));
        crate::outln!("  event id     {}", field(j.event_id.as_str()));
        crate::outln!("  type         {}", field(j.event_type.as_str()));
        crate::outln!("  kind         {}", j.kind);
        crate::outln!("  state        {}", j.state);
        crate::outln!("  attempts     {}", j.attempts);
        crate::outln!(
            "  last error   {}",
            field(j.last_error.as_deref().unwrap_or("-"))
        );
        crate::outln!("  queued       {}", when(j.enqueued_at_ms));
        if let Some(ms) = j.run_at_ms {
            let label = if j.state == JobState::Running {
                "lease ends"
            } else {
                "runs"
            };
            crate::outln!("  {label:<12} {}", when(ms));
        }
        if let Some(ms) = j.finished_at_ms {
            crate::outln!("  finished     {}", when(ms));
        }
        if matches!(j.state, JobState::Dead | JobState::Retrying) {
            // `--` first for a key clap would read as a flag.
            let dashes = if j.key.as_str().starts_with('-') {
                "-- "
            } else {
                ""
            };
            crate::outln!(
                "  rerun it     {} requeue {dashes}{}",
                b.command(),
                shell_word(j.key.as_str())
            );
        }
    }
    if let Some(r) = &view.record {
        crate::outln!("store record {}", field(r.event_id.as_str()));
        crate::outln!("  type         {}", field(r.event_type.as_str()));
        crate::outln!("  status       {}", r.status);
        crate::outln!("  attempts     {}", r.attempts);
        crate::outln!(
            "  last error   {}",
            field(r.last_error.as_deref().unwrap_or("-"))
        );
        crate::outln!("  first seen   {}", when(r.first_seen_ms));
        if let Some(ms) = r.completed_at_ms {
            crate::outln!("  completed    {}", when(ms));
        }
    }
    match &view.job {
        Some(_) if hidden => crate::outln!(
            "body         (not JSON, so not searched for secrets and not shown: --raw prints it)"
        ),
        Some(j) => match j.pretty_body() {
            Some(pretty) => crate::outln!("body\n{pretty}"),
            None => crate::outln!("body (not JSON)\n{}", String::from_utf8_lossy(&j.body)),
        },
        None => {
            crate::outln!("body         (the store keeps no body; only queued events have one)")
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Requeued<'a> {
    /// The store the jobs were requeued in.
    target: &'a str,
    requeued: u64,
    /// The id requeued by `requeue ID`; left out for `--all-dead`, which counts them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ids: Vec<String>,
}

/// `requeue ID` or `requeue --all-dead`.
pub(crate) async fn requeue(
    b: &Backend,
    id: Option<&str>,
    all_dead: bool,
    json: bool,
) -> Result<(), CliError> {
    let queue = b.queue();
    let result = match id {
        Some(id) if !all_dead => {
            let key = EventId::new(id);
            if !queue.requeue(&key).await.map_err(b.err("requeueing"))? {
                return Err(not_requeued(b, &*queue, &key).await);
            }
            Requeued {
                target: b.target(),
                requeued: 1,
                ids: vec![id.to_owned()],
            }
        }
        None if all_dead => Requeued {
            target: b.target(),
            requeued: queue
                .requeue_dead()
                .await
                .map_err(b.err("requeueing the dead jobs"))?,
            ids: Vec::new(),
        },
        _ => {
            return Err(CliError::Usage(
                "give either an id or --all-dead, not both".to_owned(),
            ))
        }
    };
    if json {
        return print_json(&result);
    }
    match id {
        Some(id) => crate::outln!(
            "{}: requeued {id}: it runs as soon as a worker is free",
            b.target()
        ),
        None => crate::outln!(
            "{}: requeued {} dead job{}: they run as soon as workers are free",
            b.target(),
            result.requeued,
            if result.requeued == 1 { "" } else { "s" }
        ),
    }
    Ok(())
}

/// Why `requeue(key)` did nothing.
async fn not_requeued(
    b: &Backend,
    queue: &dyn stripe_webhooks::queue::QueueAdmin,
    key: &EventId,
) -> CliError {
    match queue.job(key).await {
        Ok(Some(job)) => {
            return CliError::Other(format!(
                "job {key} is {}: only dead or retrying jobs can be requeued",
                job.state
            ))
        }
        Ok(None) => {}
        Err(e) => return b.err("reading the job")(e),
    }
    match b.store().record(key).await {
        Ok(Some(r)) => CliError::Other(format!(
            "{key} is not in the queue; the store has it as {} (processed inline): Stripe \
             delivers a failed event again by itself, or resend it from the Dashboard \
             (Developers → Events → Resend)",
            r.status
        )),
        Ok(None) => CliError::NotFound(format!(
            "no job with id {key} in {} ({})",
            b.target(),
            b.queue_name()
        )),
        Err(e) => b.err("reading the store record")(e),
    }
}

#[derive(Debug, Serialize)]
struct Purged<'a> {
    /// The store purged.
    target: &'a str,
    completed_jobs: u64,
    older_than_secs: u64,
    /// Claims abandoned an hour or more ago, recorded as failed.
    abandoned_recorded_failed: u64,
    /// Store records deleted: only with `--records-older-than`. Watermarks of the same age
    /// are deleted too, and not counted here.
    store_records: Option<u64>,
    records_older_than_secs: Option<u64>,
}

/// How long an event may still come back: Stripe retries a delivery for three days, and
/// lists events for 30, which a reconciler pass may run again (an `undelivered` pass
/// with a lookback over three days lists an event it ran for as long as Stripe keeps
/// it marked undelivered; a cursor held back by a failing event relists what follows
/// it). A completed job or record younger than this is what makes such an event a
/// duplicate.
const EVENT_CAN_COME_BACK: Duration = stripe_webhooks::reconcile::EVENT_RETENTION;

/// `purge`'s ages: completed jobs', and the store records' when they are to go too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PurgeAges {
    pub(crate) jobs: Duration,
    pub(crate) records: Option<Duration>,
}

/// Refuses an age under [`EVENT_CAN_COME_BACK`] without `force`.
fn check_age(flag: &str, age: Duration, force: bool) -> Result<(), CliError> {
    if age < EVENT_CAN_COME_BACK && !force {
        return Err(CliError::Usage(format!(
            "{flag} {} is under 30 days: Stripe retries a delivery for three days and lists \
             events for 30, which a reconciler pass may run again (a lookback over three \
             days, or a cursor held back by a failing event), and a purged event would run \
             again; pass --force to purge anyway",
            human(age)
        )));
    }
    Ok(())
}

/// The most rows a purge deletes in one statement (or Redis script).
const MAX_PURGE_BATCH: usize = 10_000;

/// `purge`'s flags, checked before the store is opened (`redis`: the store is Redis): a
/// usage error is exit 2 at once, not after a connection attempt.
pub(crate) fn check_purge(
    ages: PurgeAges,
    batch: usize,
    force: bool,
    redis: bool,
) -> Result<(), CliError> {
    if !(1..=MAX_PURGE_BATCH).contains(&batch) {
        return Err(CliError::Usage(format!(
            "--batch must be 1 to {MAX_PURGE_BATCH}: a batch holds the store while it runs"
        )));
    }
    check_age("--older-than", ages.jobs, force)?;
    if let Some(records) = ages.records {
        if redis {
            return Err(CliError::Usage(
                "--records-older-than is for the SQL stores: Redis records expire on their \
                 own, after the retention the service wrote them with"
                    .to_owned(),
            ));
        }
        check_age("--records-older-than", records, force)?;
    }
    Ok(())
}

/// `purge`: completed jobs older than `ages.jobs`, in batches; the store's abandoned
/// claims recorded failed; and, when `ages.records` is given, the store's completed and
/// failed records and watermarks older than that (never on the store's default
/// retention, which may be shorter than the service's). Ages under
/// [`EVENT_CAN_COME_BACK`] only with `force`.
pub(crate) async fn purge(
    b: &Backend,
    ages: PurgeAges,
    batch: usize,
    force: bool,
    json: bool,
) -> Result<(), CliError> {
    check_purge(ages, batch, force, b.kind() == "redis")?;
    let mut completed_jobs = 0;
    let queue = b.queue();
    loop {
        let n = queue
            .purge_completed(ages.jobs, batch)
            .await
            .map_err(b.err("purging completed jobs"))?;
        completed_jobs += n;
        if n < u64::try_from(batch).unwrap_or(u64::MAX) {
            break;
        }
    }
    let abandoned = b
        .store()
        .fail_abandoned(stripe_webhooks::ABANDONED_AFTER)
        .await
        .map_err(b.err("recording abandoned claims"))?;
    let store_records = match ages.records {
        Some(age) => Some(
            b.purge_store(age)
                .await
                .map_err(b.err("purging store records"))?,
        ),
        // Redis keeps an index of failed records whose own keys expire: its purge only
        // drops the expired ones' ids (and deletes no record by age).
        None if b.kind() == "redis" => {
            b.store()
                .purge_expired()
                .await
                .map_err(b.err("dropping expired failed-record ids"))?;
            None
        }
        None => None,
    };
    let purged = Purged {
        target: b.target(),
        completed_jobs,
        older_than_secs: ages.jobs.as_secs(),
        abandoned_recorded_failed: abandoned,
        store_records,
        records_older_than_secs: ages.records.map(|a| a.as_secs()),
    };
    if json {
        return print_json(&purged);
    }
    let records = match (store_records, ages.records) {
        (Some(n), Some(age)) => {
            format!(
                "{n} store records older than {} (and watermarks as old, not counted)",
                human(age)
            )
        }
        // Redis records expire on their own (and the flag is refused there).
        _ if b.kind() == "redis" => "no store records (Redis expires them on its own)".to_owned(),
        _ => "no store records (give --records-older-than to purge them)".to_owned(),
    };
    crate::outln!(
        "{}: purged {completed_jobs} completed jobs older than {} and {records}; \
         {abandoned} abandoned claims recorded failed",
        b.target(),
        human(ages.jobs)
    );
    Ok(())
}

#[derive(Debug, Serialize)]
struct Migrated<'a> {
    store: &'static str,
    target: &'a str,
    table: &'a str,
    message: String,
    /// The migration versions applied by this run.
    applied: Vec<u32>,
}

/// `migrate`: the store's schema, with the queue's table.
pub(crate) async fn migrate(opts: &StoreOpts, json: bool) -> Result<(), CliError> {
    let b = Backend::open_or_create(opts).await?;
    let (message, applied) = b.migrate().await?;
    if json {
        return print_json(&Migrated {
            store: b.kind(),
            target: b.target(),
            table: b.table(),
            message,
            applied,
        });
    }
    crate::outln!("{}: {message} (table {})", b.target(), b.table());
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Only the whitespace between tokens goes: strings keep theirs, and escaped quotes
    /// and backslashes do not end them.
    #[test]
    fn compact_json_keeps_strings_whole() {
        let json = "{ \"a\" : \"x \\\" y\\\\\" ,\n\t\"b\":[ 1 , \"  \\t é\" ] }";
        assert_eq!(
            stripe_webhooks::__cli::compact_json(json),
            "{\"a\":\"x \\\" y\\\\\",\"b\":[1,\"  \\t é\"]}"
        );
        let raw = super::raw_body(json.as_bytes()).unwrap();
        assert_eq!(raw.get(), stripe_webhooks::__cli::compact_json(json));
        // Not JSON: a string.
        let raw = super::raw_body(b"not { json").unwrap();
        assert_eq!(raw.get(), "\"not { json\"");
    }
}
