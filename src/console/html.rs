//! The console's pages: HTML built as strings, every value from an event or a request
//! escaped through [`Esc`] (text and attribute values alike) or [`PathSeg`] (URL path
//! segments, percent-encoded, then escaped).

use std::fmt::{self, Write as _};

use crate::display::{pretty_json, utc};
use crate::event::EventId;
use crate::queue::{JobRecord, JobState, QueueCounts};

/// Text for HTML, escaped for both element content and quoted attribute values.
pub(super) struct Esc<'a>(pub(super) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// One URL path segment, percent-encoded (all but RFC 3986's unreserved characters), so
/// a key holding `/`, `?`, `#` or quotes stays one segment; safe in an attribute as is.
pub(super) struct PathSeg<'a>(pub(super) &'a str);

impl fmt::Display for PathSeg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes (and, for form bodies, `+` as a space). `None` when the result
/// is not UTF-8 or holds a NUL; a malformed escape is kept as it is.
pub(super) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    // No key or id holds a NUL, and PostgreSQL refuses one in text: a lookup with it
    // would read as the queue being down.
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The pairs of an `application/x-www-form-urlencoded` body or a query string; pairs
/// that do not decode to UTF-8 are dropped.
pub(super) fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// A length of time, coarsely: `850 ms`, `12 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub(super) fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `then` relative to `now`: `12 s ago`, `in 3 min 5 s`.
pub(super) fn relative(now: i64, then: i64) -> String {
    let d = now.saturating_sub(then);
    if d >= 0 {
        format!("{} ago", span(d.unsigned_abs()))
    } else {
        format!("in {}", span(d.unsigned_abs()))
    }
}

/// What a page needs to link and post: where the console is mounted, and the CSRF token
/// for its forms.
pub(super) struct Ctx<'a> {
    /// The path the console is mounted at, without a final `/` (empty at the root).
    pub(super) base: &'a str,
    /// This session's CSRF token.
    pub(super) token: &'a str,
    /// Now, in Unix milliseconds.
    pub(super) now: i64,
}

impl Ctx<'_> {
    fn home(&self) -> &str {
        if self.base.is_empty() {
            "/"
        } else {
            self.base
        }
    }
}

/// A whole page: the head, the navigation bar, a notice, then `main`.
pub(super) fn layout(ctx: &Ctx<'_>, title: &str, notice: Option<&str>, main: &str) -> String {
    let mut out = String::with_capacity(main.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"same-origin\">\n\
         <title>{} · Stripe webhooks</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"{}/console.css\">\n</head>\n<body>\n\
         <header class=\"top\"><a class=\"brand\" href=\"{}\">Stripe webhooks</a><nav>",
        Esc(title),
        Esc(ctx.base),
        Esc(ctx.home()),
    );
    let _ = write!(out, "<a href=\"{}\">Overview</a>", Esc(ctx.home()));
    for state in JobState::ALL {
        let _ = write!(
            out,
            "<a href=\"{}/state/{}\">{}</a>",
            Esc(ctx.base),
            state.as_str(),
            capitalized(state)
        );
    }
    out.push_str("</nav></header>\n<main>\n");
    if let Some(notice) = notice {
        let _ = writeln!(
            out,
            "<p class=\"notice\" role=\"status\">{}</p>",
            Esc(notice)
        );
    }
    out.push_str(main);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn capitalized(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "Queued",
        JobState::Running => "Running",
        JobState::Retrying => "Retrying",
        JobState::Completed => "Completed",
        JobState::Dead => "Dead",
    }
}

/// A state badge.
fn badge(state: JobState) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", Esc(state.as_str()))
}

/// The count cards, one per state and the oldest queued job's age.
pub(super) fn counts(ctx: &Ctx<'_>, c: &QueueCounts) -> String {
    let mut out = String::from("<section class=\"cards\" aria-label=\"Jobs by state\">\n");
    for state in JobState::ALL {
        let _ = writeln!(
            out,
            "<a class=\"card {s}\" href=\"{base}/state/{s}\"><span class=\"n\">{n}</span>\
             <span class=\"label\">{label}</span></a>",
            s = state.as_str(),
            base = Esc(ctx.base),
            n = c.get(state),
            label = capitalized(state),
        );
    }
    let age = c
        .oldest_queued_age_ms
        .map_or_else(|| "none queued".to_owned(), span);
    let _ = write!(
        out,
        "<div class=\"card age\"><span class=\"n\">{}</span>\
         <span class=\"label\">Oldest queued</span></div>\n</section>\n",
        Esc(&age)
    );
    out
}

/// A POST form with the CSRF token, hidden fields and one button.
pub(super) fn form(
    ctx: &Ctx<'_>,
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    class: &str,
) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"{}/{}\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        Esc(ctx.base),
        Esc(action),
        Esc(ctx.token)
    );
    for (name, value) in fields {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            Esc(name),
            Esc(value)
        );
    }
    let _ = write!(
        out,
        "<button type=\"submit\" class=\"{}\">{}</button></form>",
        Esc(class),
        Esc(label)
    );
    out
}

fn job_link(ctx: &Ctx<'_>, job: &JobRecord) -> String {
    let mut out = format!(
        "<a class=\"mono\" href=\"{}/jobs/{}\">{}</a>",
        Esc(ctx.base),
        PathSeg(job.key.as_str()),
        Esc(job.key.as_str())
    );
    if job.event_id != job.key {
        let _ = write!(
            out,
            "<div class=\"sub mono\">{}</div>",
            Esc(job.event_id.as_str())
        );
    }
    out
}

/// The first line of an error, cut to `max` characters.
fn short(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max || line.len() < s.trim_end().len() {
        let cut: String = line.chars().take(max).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

fn time_cell(ctx: &Ctx<'_>, ms: Option<i64>) -> String {
    match ms {
        Some(ms) => format!(
            "<time title=\"{}\">{}</time>",
            Esc(&utc(ms)),
            Esc(&relative(ctx.now, ms))
        ),
        None => "<span class=\"muted\">—</span>".to_owned(),
    }
}

/// A table of jobs; `actions` adds a requeue button to dead and retrying rows.
/// A last error, cut for a table cell (the whole text in its title), or a dash.
fn error_cell(error: Option<&str>) -> String {
    error.map_or_else(
        || "<span class=\"muted\">—</span>".to_owned(),
        |e| {
            let e = crate::secret::redact_text(e);
            format!(
                "<span class=\"error\" title=\"{}\">{}</span>",
                Esc(&e),
                Esc(&short(&e, 72))
            )
        },
    )
}

pub(super) fn jobs_table(ctx: &Ctx<'_>, jobs: &[JobRecord], actions: bool, empty: &str) -> String {
    if jobs.is_empty() {
        return format!("<p class=\"empty\">{}</p>\n", Esc(empty));
    }
    let mut out = String::from(
        "<div class=\"table-wrap\"><table>\n<thead><tr><th>Event</th><th>Type</th>\
         <th>State</th><th class=\"num\">Attempts</th><th>Queued</th><th>Next run / finished</th>\
         <th>Last error</th>",
    );
    if actions {
        out.push_str("<th></th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for job in jobs {
        let when = job.run_at_ms.or(job.finished_at_ms);
        let error = error_cell(job.last_error.as_deref());
        let _ = write!(
            out,
            "<tr class=\"{state}\"><td class=\"mono\">{link}</td><td class=\"mono\">{ty}</td><td>{badge}</td>\
             <td class=\"num\">{attempts}</td><td>{queued}</td><td>{when}</td><td>{error}</td>",
            state = job.state.as_str(),
            link = job_link(ctx, job),
            ty = Esc(&job.event_type),
            badge = badge(job.state),
            attempts = job.attempts,
            queued = time_cell(ctx, Some(job.enqueued_at_ms)),
            when = time_cell(ctx, when),
        );
        if actions {
            out.push_str("<td class=\"actions\">");
            if matches!(job.state, JobState::Dead | JobState::Retrying) {
                let label = if job.state == JobState::Dead {
                    "Requeue"
                } else {
                    "Run now"
                };
                out.push_str(&form(
                    ctx,
                    "requeue",
                    &[("key", job.key.as_str())],
                    label,
                    "small",
                ));
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// "Requeue all N dead", carrying N: when the queue holds another number of dead jobs,
/// nothing is requeued and the operator sees the list again (a count, not a snapshot:
/// a job dying between the check and the requeue goes with the rest).
fn requeue_dead_form(ctx: &Ctx<'_>, dead: u64) -> String {
    let shown = dead.to_string();
    let label = format!("Requeue all {dead} dead");
    form(ctx, "requeue-dead", &[("dead", &shown)], &label, "primary")
}

/// The overview: counts, dead and retrying jobs with their buttons, recent deliveries.
pub(super) fn overview(
    ctx: &Ctx<'_>,
    c: &QueueCounts,
    dead: &[JobRecord],
    retrying: &[JobRecord],
    recent: &[JobRecord],
) -> String {
    let mut out = String::from("<h1>Queue</h1>\n");
    out.push_str(&counts(ctx, c));
    out.push_str("<section>\n<div class=\"section-head\"><h2>Dead</h2>");
    if c.dead > 0 {
        out.push_str(&requeue_dead_form(ctx, c.dead));
    }
    out.push_str(
        "</div>\n<p class=\"hint\">Out of attempts: kept with their last error until you \
         requeue them.</p>\n",
    );
    out.push_str(&jobs_table(ctx, dead, true, "No dead jobs."));
    more(&mut out, ctx, JobState::Dead, c.dead, dead.len());
    out.push_str("</section>\n<section>\n<div class=\"section-head\"><h2>Retrying</h2></div>\n");
    out.push_str(
        "<p class=\"hint\">Their last run failed; they run again at the time shown.</p>\n",
    );
    out.push_str(&jobs_table(ctx, retrying, true, "Nothing is retrying."));
    more(
        &mut out,
        ctx,
        JobState::Retrying,
        c.retrying,
        retrying.len(),
    );
    out.push_str(
        "</section>\n<section>\n<div class=\"section-head\"><h2>Recent deliveries</h2></div>\n",
    );
    out.push_str(&jobs_table(ctx, recent, false, "Nothing was queued yet."));
    out.push_str("</section>\n");
    out
}

/// The inline processor's failed events (an idempotency store's `failed_events`): read
/// only, since the store keeps no body and Stripe delivers them again by itself. On the
/// overview (`page` is `None`), a link to the failed page when `next` says more follow;
/// on that page (`page` holds the key it starts after), links to its first and next pages.
pub(super) fn store_failures(
    ctx: &Ctx<'_>,
    failed: &[crate::EventRecord],
    page: Option<Option<&EventId>>,
    next: Option<&EventId>,
) -> String {
    let mut out = String::from(if page.is_some() {
        "<section>\n<h1>Failed inline</h1>\n"
    } else {
        "<section>\n<div class=\"section-head\"><h2>Failed inline</h2></div>\n"
    });
    out.push_str(
        "<p class=\"hint\">Handled in the request (not queued), their last attempt failed: \
         Stripe delivers them again on its own schedule, for up to three days. Fix the cause; \
         the next delivery runs them.</p>\n",
    );
    let links = |out: &mut String| match page {
        Some(after) => pager(out, ctx, "/failed", after, next),
        None if next.is_some() => {
            let _ = writeln!(
                out,
                "<p class=\"more\"><a href=\"{}/failed\">All failed inline events</a></p>",
                Esc(ctx.base)
            );
        }
        None => {}
    };
    if failed.is_empty() {
        out.push_str("<p class=\"empty\">No inline failures.</p>\n");
        links(&mut out);
        out.push_str("</section>\n");
        return out;
    }
    out.push_str(
        "<div class=\"table-wrap\"><table>\n<thead><tr><th>Event</th><th>Type</th>\
         <th class=\"num\">Attempts</th><th>First seen</th><th>Last error</th></tr></thead>\n<tbody>\n",
    );
    for r in failed {
        let error = error_cell(r.last_error.as_deref());
        let _ = writeln!(
            out,
            "<tr class=\"dead\"><td class=\"mono\">{id}</td><td class=\"mono\">{ty}</td>\
             <td class=\"num\">{attempts}</td><td>{seen}</td><td>{error}</td></tr>",
            id = Esc(r.event_id.as_str()),
            ty = Esc(r.event_type.as_str()),
            attempts = r.attempts,
            seen = time_cell(ctx, Some(r.first_seen_ms)),
        );
    }
    out.push_str("</tbody></table></div>\n");
    links(&mut out);
    out.push_str("</section>\n");
    out
}

/// Links from one page of a listing at `path`: to its first page, unless this is it
/// (`after` is none), and to the next, starting after `next`, when one follows.
fn pager(
    out: &mut String,
    ctx: &Ctx<'_>,
    path: &str,
    after: Option<&EventId>,
    next: Option<&EventId>,
) {
    if after.is_none() && next.is_none() {
        return;
    }
    out.push_str("<nav class=\"pager\">");
    if after.is_some() {
        let _ = write!(
            out,
            "<a href=\"{}{}\">First page</a>",
            Esc(ctx.base),
            Esc(path)
        );
    }
    if let Some(next) = next {
        let _ = write!(
            out,
            "<a rel=\"next\" href=\"{}{}?after={}\">Next page</a>",
            Esc(ctx.base),
            Esc(path),
            PathSeg(next.as_str())
        );
    }
    out.push_str("</nav>\n");
}

fn more(out: &mut String, ctx: &Ctx<'_>, state: JobState, total: u64, shown: usize) {
    if total > shown as u64 {
        let _ = writeln!(
            out,
            "<p class=\"more\"><a href=\"{}/state/{}\">All {} {} jobs</a></p>",
            Esc(ctx.base),
            state.as_str(),
            total,
            state.as_str()
        );
    }
}

/// The jobs in one state, oldest first.
pub(super) fn state_page(
    ctx: &Ctx<'_>,
    state: JobState,
    c: &QueueCounts,
    jobs: &[JobRecord],
    after: Option<&EventId>,
    next: Option<&EventId>,
) -> String {
    let mut out = format!(
        "<h1>{} <span class=\"count\">{}</span></h1>\n",
        capitalized(state),
        c.get(state)
    );
    if state == JobState::Dead && c.dead > 0 {
        out.push_str("<div class=\"section-head\">");
        out.push_str(&requeue_dead_form(ctx, c.dead));
        out.push_str("</div>\n");
    }
    let empty = format!("No {} jobs.", state.as_str());
    out.push_str(&jobs_table(ctx, jobs, true, &empty));
    if after.is_none() && next.is_some() {
        let _ = writeln!(
            out,
            "<p class=\"hint\">The oldest {} of {} are shown.</p>",
            jobs.len(),
            c.get(state)
        );
    }
    pager(
        &mut out,
        ctx,
        &format!("/state/{}", state.as_str()),
        after,
        next,
    );
    out
}

/// One job: its record, its last error, its button and its raw JSON.
pub(super) fn job_page(ctx: &Ctx<'_>, job: &JobRecord) -> String {
    let mut out = format!(
        "<div class=\"section-head job-head\"><h1 class=\"mono\">{} {}</h1>",
        Esc(job.key.as_str()),
        badge(job.state)
    );
    if matches!(job.state, JobState::Dead | JobState::Retrying) {
        let label = if job.state == JobState::Dead {
            "Requeue"
        } else {
            "Run now"
        };
        out.push_str(&form(
            ctx,
            "requeue",
            &[("key", job.key.as_str())],
            label,
            "primary",
        ));
    }
    out.push_str("</div>\n<dl class=\"record\">\n");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", Esc(name), value);
    };
    row(
        "Key",
        format!("<span class=\"mono\">{}</span>", Esc(job.key.as_str())),
    );
    row(
        "Event id",
        format!("<span class=\"mono\">{}</span>", Esc(job.event_id.as_str())),
    );
    row(
        "Type",
        format!("<span class=\"mono\">{}</span>", Esc(&job.event_type)),
    );
    row("Payload", Esc(job.kind).to_string());
    row("State", badge(job.state));
    row("Attempts", job.attempts.to_string());
    let full = |ms: Option<i64>| match ms {
        Some(ms) => format!(
            "{} <span class=\"muted\">({})</span>",
            Esc(&utc(ms)),
            Esc(&relative(ctx.now, ms))
        ),
        None => "<span class=\"muted\">—</span>".to_owned(),
    };
    row("Queued", full(Some(job.enqueued_at_ms)));
    let next = if job.state == JobState::Running {
        "Lease ends"
    } else {
        "Next run"
    };
    row(next, full(job.run_at_ms));
    row("Finished", full(job.finished_at_ms));
    out.push_str("</dl>\n");
    if let Some(e) = &job.last_error {
        let _ = write!(
            out,
            "<h2>Last error</h2>\n<pre class=\"error-box\">{}</pre>\n",
            Esc(&crate::secret::redact_text(e))
        );
    }
    let _ = writeln!(
        out,
        "<h2>Raw event <span class=\"muted\">({} bytes)</span></h2>",
        job.body.len()
    );
    // Client secrets and OAuth codes in it shown as `<redacted>` (the body's members are
    // then in key order).
    let shown = std::str::from_utf8(&job.body)
        .ok()
        .map(crate::secret::debug_json);
    let body = shown.as_deref().map_or(&job.body[..], str::as_bytes);
    match pretty_json(body) {
        Some(json) => {
            let _ = writeln!(out, "<pre class=\"json\">{}</pre>", Esc(&json));
        }
        // Not JSON the redaction could read: not shown, since it might hold a secret
        // the console cannot find (`stripe-webhooks show --raw` prints it).
        None => {
            let _ = writeln!(
                out,
                "<p class=\"hint\">The body is not JSON this console can read; it is not \
                 shown (<code>stripe-webhooks show --raw</code> prints it).</p>"
            );
        }
    }
    out
}

/// A short page for a refusal or an error: a title and one sentence.
pub(super) fn message(title: &str, text: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{0}</title>\n</head>\n<body>\n<h1>{0}</h1>\n<p>{1}</p>\n</body>\n</html>\n",
        Esc(title),
        Esc(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            Esc(r#"<script>alert("x&'y")</script>"#).to_string(),
            "&lt;script&gt;alert(&quot;x&amp;&#39;y&quot;)&lt;/script&gt;"
        );
        assert_eq!(Esc("plain évènement").to_string(), "plain évènement");
    }

    #[test]
    fn path_segments_round_trip() {
        let key = "evt_1/../\"x\" <y>?#%";
        let enc = PathSeg(key).to_string();
        assert!(enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
        assert_eq!(percent_decode(&enc, false).as_deref(), Some(key));
        assert_eq!(percent_decode("a%2", false).as_deref(), Some("a%2"));
        assert_eq!(percent_decode("%zz%", false).as_deref(), Some("%zz%"));
        assert_eq!(percent_decode("%ff", false), None);
        assert_eq!(percent_decode("evt%00", false), None);
    }

    #[test]
    fn forms_decode() {
        assert_eq!(
            form_pairs("key=evt_1%2Fx&csrf=ab+c&flag&=v"),
            vec![
                ("key".to_owned(), "evt_1/x".to_owned()),
                ("csrf".to_owned(), "ab c".to_owned()),
                ("flag".to_owned(), String::new()),
                (String::new(), "v".to_owned()),
            ]
        );
    }

    #[test]
    fn spans_read_coarsely() {
        assert_eq!(span(850), "850 ms");
        assert_eq!(span(125_000), "2 min 5 s");
        assert_eq!(span(90_061_000), "1 d 1 h");
        assert_eq!(relative(10_000, 7_000), "3 s ago");
        assert_eq!(relative(7_000, 10_000), "in 3 s");
    }

    #[test]
    fn errors_are_cut_to_one_line() {
        assert_eq!(short("one\ntwo", 90), "one…");
        assert_eq!(short("abcdef", 3), "abc…");
        assert_eq!(short("abc", 3), "abc");
    }
}
