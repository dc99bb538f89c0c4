//! What can go wrong, the exit code of each, and keeping secrets out of messages.

use std::error::Error as StdError;

use stripe_webhooks::{redis, sqlx, StoreError};

/// Any error but the two below (success is 0).
pub(crate) const EXIT_ERROR: u8 = 1;
/// A usage error (clap exits with 2 for its own).
pub(crate) const EXIT_USAGE: u8 = 2;
/// No job or event with that id.
pub(crate) const EXIT_NOT_FOUND: u8 = 3;

/// What failed and what to check when `target` (as `Backend::target` names it) cannot
/// be reached: a file is opened, a server connected to.
fn advice(target: &str) -> (&'static str, &'static str) {
    if target.starts_with("the SQLite file") {
        (
            "open",
            "check the path, and that this user may read and write the file and its directory",
        )
    } else {
        ("connect to", "check the URL and that the server is running")
    }
}

/// Why a command failed. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The server could not be reached, or refused the connection.
    #[error("cannot {} {target}; {}", advice(target).0, advice(target).1)]
    Unreachable {
        /// The store, with any password redacted.
        target: String,
        /// What the driver said.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The SQLite file does not exist.
    #[error(
        "there is no SQLite database at {path}: pass the service's file with --sqlite PATH \
         (or SQLITE_PATH), or create it with `stripe-webhooks migrate`"
    )]
    NoDatabase {
        /// The path as given.
        path: String,
    },
    /// The store's or the queue's table is missing.
    #[error(
        "the table {table} (or {table}_jobs) is missing in {target}: run `stripe-webhooks migrate` with the same \
         store flags (or pass the service's --table / STRIPE_WEBHOOKS_TABLE)"
    )]
    MissingTable {
        /// The store's table (the queue's is `{table}_jobs`).
        table: String,
        /// The store, with any password redacted.
        target: String,
    },
    /// No job or record with that id.
    #[error("{0}")]
    NotFound(String),
    /// A flag's value is unusable.
    #[error("{0}")]
    Usage(String),
    /// A store call failed for another reason.
    #[error("{context} on {target} failed")]
    Store {
        /// What the tool was doing.
        context: String,
        /// The store, with any password redacted.
        target: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// Anything else, with its explanation.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process's exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::NotFound(_) => EXIT_NOT_FOUND,
            CliError::Usage(_) => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }

    /// Classifies a store error: a missing table or an unreachable server gets its own
    /// variant (and advice); the rest keeps its cause.
    pub(crate) fn from_store(e: StoreError, context: &str, target: &str, table: &str) -> Self {
        match classify(&e) {
            Kind::MissingTable => CliError::MissingTable {
                table: table.to_owned(),
                target: target.to_owned(),
            },
            Kind::Unreachable => CliError::Unreachable {
                target: target.to_owned(),
                source: Box::new(e),
            },
            Kind::Other => CliError::Store {
                context: context.to_owned(),
                target: target.to_owned(),
                source: e,
            },
        }
    }
}

enum Kind {
    MissingTable,
    Unreachable,
    Other,
}

fn classify(e: &(dyn StdError + 'static)) -> Kind {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(sqlx_err) = err.downcast_ref::<sqlx::Error>() {
            match sqlx_err {
                // SQLite: "no such table: x"; PostgreSQL: 42P01 undefined_table.
                sqlx::Error::Database(db)
                    if db.code().as_deref() == Some("42P01")
                        || db.message().contains("no such table") =>
                {
                    return Kind::MissingTable;
                }
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed => return Kind::Unreachable,
                _ => {}
            }
        }
        if let Some(r) = err.downcast_ref::<redis::RedisError>() {
            if r.is_io_error() || r.is_connection_refusal() || r.is_connection_dropped() {
                return Kind::Unreachable;
            }
        }
        let text = err.to_string();
        if text.contains("no such table")
            || (text.contains("relation") && text.contains("does not exist"))
        {
            return Kind::MissingTable;
        }
        cur = err.source();
    }
    Kind::Other
}

/// The error and its causes, joined by `: ` (each cause once).
pub(crate) fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let text = err.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = err.source();
    }
    out
}

/// `url` with its password (and any `password=` parameter or key/value setting) replaced
/// by `***`. Also for a value that is not a URL at all (a libpq key/value connection
/// string given where a URL belongs), which is printed in the error that refuses it.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(password) = url_password(url) {
        out = out.replace(&format!(":{password}@"), ":***@");
    }
    for secret in setting_passwords(url) {
        out = out.replace(&secret, "***");
    }
    out
}

/// The password in `scheme://user:password@host…`, if any. The user information ends at
/// the last `@`, so a password with an unescaped `/`, `?`, `#` or `@` is found whole (a
/// later `@` in the path or query only makes more of the text hidden). Without `://`
/// (`user:password@host/db`, or a mistyped `postgres:/user:password@host`), the text
/// before the last `@` is taken as the user information all the same, unless it holds
/// a blank (a libpq key/value string, read by [`setting_passwords`]).
fn url_password(url: &str) -> Option<&str> {
    let scheme = url.find("://");
    let rest = scheme.map_or(url, |i| &url[i + 3..]);
    let userinfo = &rest[..rest.rfind('@')?];
    if scheme.is_none() && userinfo.contains(char::is_whitespace) {
        return None;
    }
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// The values of every setting whose name contains `password` (`password`,
/// `sslpassword`): as query parameters (`?password=…&…`) and as libpq key/value pairs
/// (`host=db password=… dbname=app`, `password = '…'`, quoted values with spaces); and
/// of a URL's `pass` query parameter (the redis crate's password for a Unix socket,
/// `redis+unix:///run/redis.sock?pass=…`).
fn setting_passwords(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let url = text.contains("://");
    let mut found = Vec::new();
    if url {
        if let Some((_, query)) = text.split_once('?') {
            let query = query.split('#').next().unwrap_or(query);
            for pair in query.split('&') {
                if let Some((name, value)) = pair.split_once('=') {
                    if name.eq_ignore_ascii_case("pass") && !value.is_empty() {
                        found.push(value.to_owned());
                    }
                }
            }
        }
    }
    let mut from = 0;
    while let Some(at) = lower[from..].find("password") {
        let mut i = from + at + "password".len();
        from = i;
        let bytes = text.as_bytes();
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        let value = if bytes.get(i) == Some(&b'\'') {
            // Quoted: up to the closing quote that is not escaped (or the end).
            let body = &text[i + 1..];
            let mut end = body.len();
            let mut escaped = false;
            for (k, c) in body.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = k;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            &body[..end]
        } else {
            // A query parameter ends at `&` or `#`; a key/value setting at a space.
            let rest = &text[i..];
            let end = rest
                .find(|c: char| c.is_whitespace() || (url && (c == '&' || c == '#')))
                .unwrap_or(rest.len());
            &rest[..end]
        };
        if !value.is_empty() {
            found.push(value.to_owned());
        }
    }
    found
}

/// Replaces every secret it knows with `***` in text about to be printed.
#[derive(Debug, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Remembers a URL's password and password parameters.
    pub(crate) fn add_url(&mut self, url: Option<&str>) {
        let Some(url) = url else { return };
        if let Some(p) = url_password(url) {
            self.add_secret(Some(p));
        }
        for p in setting_passwords(url) {
            self.add_secret(Some(&p));
        }
    }

    /// Remembers a secret; not one of three characters or fewer, which scrubbing would
    /// blank wherever its letters stand in the text (a password `1` in `127.0.0.1`), as
    /// `send` leaves them.
    pub(crate) fn add_secret(&mut self, secret: Option<&str>) {
        if let Some(s) = secret.filter(|s| s.len() > 3) {
            self.secrets.push(s.to_owned());
        }
    }

    /// `text` with every known secret replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("postgres://app@db/app?password=hunter2"),
            "postgres://app@db/app?password=***"
        );
        assert_eq!(redact_url("redis://127.0.0.1"), "redis://127.0.0.1");
        // Generated passwords with `/`, `?`, `#` or `@` left unescaped.
        assert_eq!(
            redact_url("postgres://app:Zx/9q@db/app"),
            "postgres://app:***@db/app"
        );
        assert_eq!(
            redact_url("redis://:a#b?c@cache:6379"),
            "redis://:***@cache:6379"
        );
        assert_eq!(
            redact_url("postgres://app:p@ss@db/app"),
            "postgres://app:***@db/app"
        );
        // A password with a blank, in a URL.
        assert_eq!(
            redact_url("postgres://app:pa ss@db/app"),
            "postgres://app:***@db/app"
        );
        // No `://`: the user information is found all the same.
        assert_eq!(redact_url("app:s3cret@db:5432/app"), "app:***@db:5432/app");
        assert_eq!(
            redact_url("postgres:/app:s3cret@db/app"),
            "postgres:***@db/app"
        );
        // libpq key/value strings, which are not URLs.
        assert_eq!(
            redact_url("host=db user=app password=hunter2 dbname=app"),
            "host=db user=app password=*** dbname=app"
        );
        assert_eq!(
            redact_url("host=db password = 'two words' sslpassword=k3y"),
            "host=db password = '***' sslpassword=***"
        );
        let mut kv = Redactor::default();
        kv.add_url(Some("host=db password=hunter2"));
        kv.add_url(Some("postgres://app:Zx/9q@db/app"));
        assert_eq!(
            kv.scrub("cannot connect with hunter2 or Zx/9q"),
            "cannot connect with *** or ***"
        );
        let mut r = Redactor::default();
        r.add_url(Some("postgres://u:p4ss@h/d"));
        r.add_secret(Some("whsec_x"));
        assert_eq!(r.scrub("p4ss and whsec_x"), "*** and ***");
        // Too short to scrub without blanking the rest of the text.
        let mut short = Redactor::default();
        short.add_url(Some("postgres://u:1@127.0.0.1/d"));
        assert_eq!(
            short.scrub("cannot connect to 127.0.0.1"),
            "cannot connect to 127.0.0.1"
        );
    }
}
