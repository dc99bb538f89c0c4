//! Opening the store (and its queue) the flags name, as the examples do: PostgreSQL when
//! a database URL is given, else Redis when a Redis URL is, else the SQLite file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stripe_webhooks::queue::QueueAdmin;
use stripe_webhooks::sqlx::postgres::PgPool;
use stripe_webhooks::sqlx::sqlite::SqlitePoolOptions;
use stripe_webhooks::{
    redis, PostgresStore, RedisStore, SqliteStore, StoreAdmin, StoreError, DEFAULT_TABLE,
};

use crate::error::{redact_url, CliError};
use crate::StoreOpts;

/// The SQLite file the tool opens by default (`--sqlite`'s default).
pub(crate) const DEFAULT_SQLITE: &str = "stripe-webhooks.db";
/// The Redis store's default key prefix.
const REDIS_DEFAULT_PREFIX: &str = "stripe_webhooks";
/// How long to wait for a server before saying it is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One opened store.
#[derive(Debug)]
enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
    Redis(RedisStore),
}

/// The store the flags name, opened, with a description for messages (no password).
#[derive(Debug)]
pub(crate) struct Backend {
    store: Store,
    target: String,
    table: String,
    /// The command that opens this store again, for the commands the tool suggests.
    command: String,
}

impl Backend {
    /// Opens the store without creating anything: a missing SQLite file is an error.
    ///
    /// # Errors
    ///
    /// [`CliError::NoDatabase`], [`CliError::Unreachable`], [`CliError::Usage`].
    pub(crate) async fn open(opts: &StoreOpts) -> Result<Self, CliError> {
        Self::connect(opts, false).await
    }

    /// Opens the store, creating the SQLite file if missing (for `migrate`).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub(crate) async fn open_or_create(opts: &StoreOpts) -> Result<Self, CliError> {
        Self::connect(opts, true).await
    }

    async fn connect(opts: &StoreOpts, create: bool) -> Result<Self, CliError> {
        // An empty table (`--table "$TABLE"` with the variable unset) is not taken as the
        // default one, which may be another service's.
        if opts.table.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(CliError::Usage(
                "--table (or STRIPE_WEBHOOKS_TABLE) is empty: give the table or prefix, or \
                 leave it out for the default"
                    .to_owned(),
            ));
        }
        let table = opts.table.as_deref();
        // How a suggested command names the store: the URL typed (its password hidden:
        // the operator fills it in), or the variable it was read from.
        let url_flag = |flag: &str, url: &str, var: &str| {
            if opts.url_typed {
                format!("{flag}={}", crate::commands::shell_word(&redact_url(url)))
            } else {
                format!("{flag}=\"${var}\"")
            }
        };
        if let Some(url) = opts.database_url.as_deref().filter(|u| !u.is_empty()) {
            let flag = url_flag("--database-url", url, "DATABASE_URL");
            open_postgres(url, table, &flag).await
        } else if let Some(url) = opts.redis_url.as_deref().filter(|u| !u.is_empty()) {
            let flag = url_flag("--redis-url", url, "REDIS_URL");
            open_redis(url, table, &flag).await
        } else {
            open_sqlite(&opts.sqlite, table, create).await
        }
    }

    /// The store, for its operator queries.
    pub(crate) fn store(&self) -> &dyn StoreAdmin {
        match &self.store {
            Store::Sqlite(s) => s,
            Store::Postgres(s) => s,
            Store::Redis(s) => s,
        }
    }

    /// Purges the store's completed and failed records (and object watermarks) older
    /// than `retention`, after recording long-abandoned claims as failed: the store's
    /// own `purge_expired` with the retention the operator gave, not the store's default.
    pub(crate) async fn purge_store(&self, retention: Duration) -> Result<u64, StoreError> {
        match &self.store {
            Store::Sqlite(s) => s.clone().with_retention(retention).purge_expired().await,
            Store::Postgres(s) => s.clone().with_retention(retention).purge_expired().await,
            Store::Redis(s) => s.clone().with_retention(retention).purge_expired().await,
        }
    }

    /// The store's queue.
    ///
    pub(crate) fn queue(&self) -> Arc<dyn QueueAdmin> {
        match &self.store {
            Store::Sqlite(s) => Arc::new(s.queue()),
            Store::Postgres(s) => Arc::new(s.queue()),
            Store::Redis(s) => Arc::new(s.queue()),
        }
    }

    /// Where the queue lives: its table, or its Redis key prefix.
    pub(crate) fn queue_name(&self) -> String {
        match &self.store {
            Store::Sqlite(s) => s.queue().table().to_owned(),
            Store::Postgres(s) => s.queue().table().to_owned(),
            Store::Redis(_) => format!("Redis Streams, keys {}:q:*", self.table()),
        }
    }

    /// What in the store server's settings can lose records (Redis's eviction policy and
    /// persistence); none for the SQL stores, or when the server does not say.
    pub(crate) async fn warnings(&self) -> Result<Vec<String>, CliError> {
        match &self.store {
            Store::Redis(s) => Ok(s
                .check_server()
                .await
                .map_err(self.err("reading the server's settings"))?
                .problems()),
            Store::Sqlite(_) | Store::Postgres(_) => Ok(Vec::new()),
        }
    }

    /// `sqlite`, `postgres` or `redis`.
    pub(crate) fn kind(&self) -> &'static str {
        match &self.store {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
            Store::Redis(_) => "redis",
        }
    }

    /// The store, for messages: `the SQLite file x.db`, `PostgreSQL at postgres://u:***@h/d`.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The store's table (SQL) or key prefix (Redis).
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// `stripe-webhooks` with the flags that open this store again, for the commands the
    /// tool suggests: the SQLite file; the URL typed, its password hidden, or the variable
    /// it was read from; the table when one was given.
    pub(crate) fn command(&self) -> &str {
        &self.command
    }

    /// Turns a store error into an error that says what to do.
    pub(crate) fn err(&self, context: &str) -> impl Fn(StoreError) -> CliError + '_ {
        let context = context.to_owned();
        move |e| CliError::from_store(e, &context, &self.target, &self.table)
    }

    /// Applies the schema: the store's table and the queue's. Returns what was done and
    /// the migration versions applied now.
    ///
    /// # Errors
    ///
    /// [`CliError::Unreachable`] or [`CliError::Store`] if the statements fail.
    pub(crate) async fn migrate(&self) -> Result<(String, Vec<u32>), CliError> {
        // The migrations recorded, to tell a database a newer release migrated.
        let recorded = format!("SELECT version FROM {}_migrations", self.table);
        macro_rules! migrate {
            ($s:expr) => {
                (
                    $s.migrate().await.map_err(self.err("migrating"))?,
                    stripe_webhooks::sqlx::query_scalar::<_, i64>(&recorded)
                        .fetch_all($s.pool())
                        .await,
                    $s.migrations(),
                )
            };
        }
        let (applied, recorded, shipped) = match &self.store {
            Store::Sqlite(s) => migrate!(s),
            Store::Postgres(s) => migrate!(s),
            Store::Redis(_) => {
                return Ok((
                    "Redis needs no schema: nothing to do".to_owned(),
                    Vec::new(),
                ))
            }
        };
        let last_shipped = shipped
            .iter()
            .map(|m| i64::from(m.version))
            .max()
            .unwrap_or(0);
        // Only a report: a read that fails after the migrations went in does not fail them.
        let mut newer: Vec<i64> = recorded
            .unwrap_or_default()
            .into_iter()
            .filter(|v| *v > last_shipped)
            .collect();
        newer.sort_unstable();
        let done = if applied.is_empty() {
            "no migration to apply".to_owned()
        } else {
            let list: Vec<String> = applied.iter().map(u32::to_string).collect();
            format!("applied migration(s) {}", list.join(", "))
        };
        let message = if newer.is_empty() {
            format!("{done}; the store's and the queue's tables are up to date")
        } else {
            let list: Vec<String> = newer.iter().map(i64::to_string).collect();
            format!(
                "{done}; the database also has migration(s) {} from a newer release than \
                 this tool (which knows up to {last_shipped}): a service of this release \
                 runs on it with its own statements, and that release's tool reports its \
                 tables",
                list.join(", ")
            )
        };
        Ok((message, applied))
    }
}

/// The command that opens a store with `store_flag` and `table`.
fn command(store_flag: &str, table: Option<&str>) -> String {
    let mut command = format!("stripe-webhooks {store_flag}");
    if let Some(t) = table {
        command.push_str(" --table=");
        command.push_str(&crate::commands::shell_word(t));
    }
    command
}

async fn open_sqlite(path: &Path, table: Option<&str>, create: bool) -> Result<Backend, CliError> {
    let shown = path.display().to_string();
    let target = format!("the SQLite file {shown}");
    // A path that cannot be looked at (a directory without search permission) is not a
    // missing database: the error says why.
    match path.try_exists() {
        Ok(false) if !create => return Err(CliError::NoDatabase { path: shown }),
        Err(e) => {
            return Err(CliError::Unreachable {
                target,
                source: Box::new(e),
            })
        }
        Ok(_) => {}
    }
    let options = SqliteStore::connect_options(path).create_if_missing(create);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| CliError::Unreachable {
            target: target.clone(),
            source: Box::new(e),
        })?;
    let mut store = SqliteStore::new(pool);
    if let Some(t) = table {
        store = store.with_table(t).map_err(invalid_table)?;
    }
    // Named even when it is the default: a store variable in the operator's environment
    // would otherwise take the command.
    // `--sqlite=…`: a path that starts with `-` is not read as a flag.
    let flag = format!("--sqlite={}", crate::commands::shell_word(&shown));
    Ok(Backend {
        store: Store::Sqlite(store),
        target,
        command: command(&flag, table),
        // As the store reads it: an unquoted name, in lower case.
        table: table.unwrap_or(DEFAULT_TABLE).to_ascii_lowercase(),
    })
}

async fn open_postgres(url: &str, table: Option<&str>, flag: &str) -> Result<Backend, CliError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(CliError::Usage(format!(
            "--database-url (DATABASE_URL) must be a postgres:// URL, not {}",
            redact_url(url)
        )));
    }
    let target = format!("PostgreSQL at {}", redact_url(url));
    let pool: PgPool = PostgresStore::pool_options()
        .max_connections(2)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|e| CliError::Unreachable {
            target: target.clone(),
            source: Box::new(e),
        })?;
    let mut store = PostgresStore::new(pool);
    if let Some(t) = table {
        store = store.with_table(t).map_err(invalid_table)?;
    }
    Ok(Backend {
        store: Store::Postgres(store),
        target,
        command: command(flag, table),
        // As the store reads it: an unquoted name, in lower case.
        table: table.unwrap_or(DEFAULT_TABLE).to_ascii_lowercase(),
    })
}

async fn open_redis(url: &str, prefix: Option<&str>, flag: &str) -> Result<Backend, CliError> {
    let target = format!("Redis at {}", redact_url(url));
    let unreachable = |source: Box<dyn std::error::Error + Send + Sync>| CliError::Unreachable {
        target: target.clone(),
        source,
    };
    // A value that is not a Redis URL at all is the caller's mistake (exit 2), like a
    // PostgreSQL URL with the wrong scheme.
    let client = redis::Client::open(url).map_err(|e| {
        CliError::Usage(format!(
            "--redis-url (REDIS_URL) {:?} is not a Redis URL: {}",
            redact_url(url),
            redact_url(&e.to_string())
        ))
    })?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(CONNECT_TIMEOUT);
    let conn = tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        redis::aio::ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| unreachable("no answer within 10 s".into()))?
    .map_err(|e| unreachable(Box::new(e)))?;
    let mut store = RedisStore::new(conn);
    if let Some(p) = prefix {
        store = store.with_prefix(p).map_err(invalid_table)?;
    }
    Ok(Backend {
        store: Store::Redis(store),
        target,
        command: command(flag, prefix),
        table: prefix.unwrap_or(REDIS_DEFAULT_PREFIX).to_owned(),
    })
}

fn invalid_table(e: StoreError) -> CliError {
    CliError::Usage(format!("--table (STRIPE_WEBHOOKS_TABLE): {e}"))
}
