//! `stripe-webhooks`: the operator's tool for the stores and queues of the
//! `stripe-webhooks` crate. It shows what happened to events (counts, failed and dead
//! jobs with their last errors and bodies), reruns them, purges old jobs, applies the
//! schema, and sends signed test events to a local service.
//!
//! Build with `cargo build --features cli`; run `stripe-webhooks --help`.

/// `print!` for the tool's output: through [`output::write_stdout`] (control characters
/// escaped, a closed pipe ends the tool quietly).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` for the tool's output; see [`out!`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod backend;
mod commands;
mod error;
mod output;
mod send;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::{CliError, Redactor};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error: the store is unreachable, its tables are missing (run `stripe-webhooks migrate`),
     a job cannot be requeued, the store failed, or a delivery of `send` could not be sent
     or was not answered as expected; the message says what to do
  2  usage: an unknown flag or subcommand, a bad value, or DATABASE_URL or REDIS_URL set
     but empty
  3  not found: no job or event with that id (also the id a page starts after)

Store: the one flag given of --database-url, --redis-url and --sqlite (two are a usage
error); with none, PostgreSQL when DATABASE_URL is set, else Redis when REDIS_URL is set,
else the SQLite file SQLITE_PATH (default stripe-webhooks.db); a variable set but empty is
a usage error. A flag beats the
environment: `--sqlite x.db` opens x.db even with DATABASE_URL set. `migrate`, `requeue`
and `purge` name the store they changed. The queue is the table `{table}_jobs` beside the
store's table (SQL), or the keys `{prefix}:q:*` (Redis).";

/// See and fix what happened to your Stripe webhooks: the idempotency store and the
/// queue of the `stripe-webhooks` crate.
#[derive(Debug, Parser)]
#[command(name = "stripe-webhooks", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
struct Global {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    store: StoreOpts,
}

/// Which store (and queue) to open.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Store (as the examples read it)")]
pub(crate) struct StoreOpts {
    /// The SQLite file, used when neither --database-url nor --redis-url is set (in the
    /// environment: a store flag typed on the command line always wins).
    #[arg(
        long,
        global = true,
        env = "SQLITE_PATH",
        default_value = crate::backend::DEFAULT_SQLITE,
        value_name = "PATH"
    )]
    pub(crate) sqlite: PathBuf,
    /// A PostgreSQL URL (postgres://user:password@host/db).
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) database_url: Option<String>,
    /// A Redis URL (redis://…, or rediss://… in a build with the `redis-tls` feature),
    /// used when --database-url is not set (in the environment: a store flag typed on the
    /// command line always wins).
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) redis_url: Option<String>,
    /// The store's table (SQL) or key prefix (Redis); the queue is `{table}_jobs` (SQL) or
    /// `{prefix}:q:*` (Redis).
    /// Default: stripe_webhook_events (SQL), stripe_webhooks (Redis).
    #[arg(
        long,
        global = true,
        env = "STRIPE_WEBHOOKS_TABLE",
        value_name = "NAME"
    )]
    pub(crate) table: Option<String>,
    /// Whether the store's URL was typed on the command line rather than read from the
    /// environment: the commands the tool suggests then name it (its password hidden)
    /// rather than the variable, which may name another store.
    #[arg(skip)]
    pub(crate) url_typed: bool,
    /// Whether a store flag was typed: the environment's variables are then not read.
    #[arg(skip)]
    store_typed: bool,
}

impl StoreOpts {
    /// Makes a store flag typed on the command line beat the store variables of the
    /// environment, which the documented order (PostgreSQL, Redis, SQLite) would
    /// otherwise prefer: an operator who types `--sqlite staging.db purge` in a shell
    /// that exports `DATABASE_URL` must not purge that database.
    ///
    /// # Errors
    ///
    /// [`CliError::Usage`] when two store flags are typed, or one is typed empty (`--database-url
    /// "$UNSET"`): the environment's store would otherwise take the command, a
    /// destructive one included.
    fn prefer_command_line(&mut self, matches: &ArgMatches) -> Result<(), CliError> {
        let typed: Vec<&str> = [
            ("database_url", "--database-url"),
            ("redis_url", "--redis-url"),
            ("sqlite", "--sqlite"),
        ]
        .into_iter()
        .filter(|(id, _)| typed_on_command_line(matches, id))
        .map(|(_, flag)| flag)
        .collect();
        // (clap refuses an empty `--sqlite` itself.)
        let empty = |flag: &str| match flag {
            "--database-url" => self.database_url.as_deref() == Some(""),
            "--redis-url" => self.redis_url.as_deref() == Some(""),
            _ => false,
        };
        if let Some(flag) = typed.iter().find(|f| empty(f)) {
            return Err(CliError::Usage(format!(
                "{flag} is empty: give the store, or leave the flag out"
            )));
        }
        self.url_typed = matches!(typed.as_slice(), ["--database-url" | "--redis-url"]);
        self.store_typed = !typed.is_empty();
        match typed.as_slice() {
            [] | ["--database-url"] => {}
            ["--redis-url"] => self.database_url = None,
            ["--sqlite"] => {
                self.database_url = None;
                self.redis_url = None;
            }
            several => {
                return Err(CliError::Usage(format!(
                    "give one store, not {}",
                    several.join(" and ")
                )))
            }
        }
        Ok(())
    }
}

impl StoreOpts {
    /// For a command that opens the store, with no store flag typed: a variable set but
    /// empty (as a compose file writes an unset host variable) is refused as the
    /// examples refuse it, rather than passed over for the next store in the order,
    /// which is not the service's.
    ///
    /// # Errors
    ///
    /// [`CliError::Usage`] naming the variable.
    fn refuse_empty_variables(&self) -> Result<(), CliError> {
        if self.store_typed {
            return Ok(());
        }
        for (value, var) in [
            (&self.database_url, "DATABASE_URL"),
            (&self.redis_url, "REDIS_URL"),
        ] {
            let set_empty = match value.as_deref() {
                Some(v) => v.is_empty(),
                None => std::env::var_os(var).is_some_and(|v| v.is_empty()),
            };
            if set_empty {
                return Err(CliError::Usage(format!(
                    "{var} is set but empty: unset it, or name the store with \
                     --database-url, --redis-url or --sqlite"
                )));
            }
        }
        Ok(())
    }
}

/// Whether the argument `id` was typed (a global flag may be typed after the
/// subcommand, so the subcommand's matches are asked too).
fn typed_on_command_line(matches: &ArgMatches, id: &str) -> bool {
    let mut m = Some(matches);
    while let Some(here) = m {
        if here.value_source(id) == Some(ValueSource::CommandLine) {
            return true;
        }
        m = here.subcommand().map(|(_, sub)| sub);
    }
    false
}

/// A `--limit`: a count of at least 1 (0 would print "no dead jobs" while some are).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Jobs by state, the lag (age of the oldest queued job), and the store's failed events.
    Status,
    /// Events whose last attempt failed: the store's failed events (inline processing) and
    /// the queue's retrying jobs, oldest first.
    Failed {
        /// Show at most this many of each (at least 1).
        #[arg(long, default_value_t = 100, value_parser = at_least_one())]
        limit: usize,
        /// Show the store's failed events after this one (the last id of the page
        /// before), and no retrying jobs unless `--after-job` is given too; write
        /// `--after-event=ID` for an id that starts with `-`.
        #[arg(long, value_name = "ID")]
        after_event: Option<String>,
        /// Show the queue's retrying jobs after this one, and no failed events unless
        /// `--after-event` is given too.
        #[arg(long, value_name = "ID")]
        after_job: Option<String>,
    },
    /// The queue's dead jobs, oldest first: out of attempts, waiting for `requeue`.
    Dead {
        /// Show at most this many (at least 1).
        #[arg(long, default_value_t = 100, value_parser = at_least_one())]
        limit: usize,
        /// Show the dead jobs after this one (the last id of the page before; write
        /// `--after=ID` for an id that starts with `-`).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
    },
    /// One job (or store record), with its last error and its body as JSON: client
    /// secrets, OAuth codes, bearer URLs and card numbers in it shown as "<redacted>".
    Show {
        /// The event id (the job's key).
        id: String,
        /// Print the body exactly as stored, credentials included (and a body that is
        /// not JSON, which is otherwise left out).
        #[arg(long)]
        raw: bool,
    },
    /// Queues a dead or retrying job to run at once, with its attempts reset.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all_dead"])))]
    Requeue {
        /// The event id (the job's key).
        id: Option<String>,
        /// Requeue every dead job.
        #[arg(long)]
        all_dead: bool,
    },
    /// Deletes completed jobs older than --older-than (in bounded batches), records as
    /// failed the store's claims whose process stopped an hour ago or more, and, with
    /// --records-older-than, deletes the store's completed and failed records and object
    /// watermarks older than that (SQL stores; Redis records expire on their own). Dead
    /// jobs are never purged.
    ///
    /// A completed job's key is what stops Stripe's retries (for up to three days) and
    /// the reconciler's passes (over the 30 days Stripe lists events) from running its
    /// event again, so an age under 30 days is refused unless --force.
    Purge {
        /// How old a completed job must be: 30d, 12h, 90m, 3600s (a unit is required).
        #[arg(long, default_value = "30d", value_parser = output::parse_age)]
        older_than: std::time::Duration,
        /// Also delete the store's completed and failed records and object watermarks
        /// older than this (30d, 12h…): match the service's own retention
        /// (`with_retention`), since a record deleted sooner lets a redelivery of its event
        /// run again and a watermark deleted sooner lets an older event be applied. Not
        /// given: the store's records are kept.
        #[arg(long, value_parser = output::parse_age, value_name = "AGE")]
        records_older_than: Option<std::time::Duration>,
        /// Jobs deleted per statement (1 to 10000): each batch holds the store while it
        /// runs (a Redis script blocks the server; a SQLite delete, the write lock), so
        /// a live service waits for it. The store's records and watermarks
        /// (--records-older-than) go in the store's own batches of 1000.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Purge jobs (or records) younger than 30 days too: Stripe may still deliver
        /// their events, or a reconciler list them again, and they then run again.
        #[arg(long)]
        force: bool,
    },
    /// Applies the schema's migrations this database has not had (the store's and the
    /// queue's tables), recorded in `{table}_migrations`; safe to run again.
    Migrate,
    /// Signs events like Stripe and posts them to a local service. Exits 1 unless every
    /// delivery is answered 2xx (with --bad-signature or --stale: refused with a 400, 401 or 403).
    Send(send::SendArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let opens_store = !matches!(cli.command, Command::Send(_));
    let checked = cli
        .global
        .store
        .prefer_command_line(&matches)
        .and_then(|()| match opens_store {
            true => cli.global.store.refuse_empty_variables(),
            false => Ok(()),
        });
    if let Err(e) = checked {
        eprintln!("error: {e}");
        return ExitCode::from(e.exit_code());
    }
    let mut redactor = Redactor::default();
    redactor.add_url(cli.global.store.database_url.as_deref());
    redactor.add_url(cli.global.store.redis_url.as_deref());
    if let Command::Send(args) = &cli.command {
        // A rotation list, and each secret in it.
        redactor.add_secret(args.secret.as_deref());
        for secret in args.secret.iter().flat_map(|s| s.split(',')) {
            redactor.add_secret(Some(secret));
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", redactor.scrub(&error::chain(&e)));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let json = cli.global.json;
    let store = &cli.global.store;
    match cli.command {
        Command::Send(args) => send::run(args, json).await,
        Command::Migrate => commands::migrate(store, json).await,
        command => {
            if let Command::Purge {
                older_than,
                records_older_than,
                batch,
                force,
            } = &command
            {
                let ages = commands::PurgeAges {
                    jobs: *older_than,
                    records: *records_older_than,
                };
                // The store `Backend::open` will open: PostgreSQL, else Redis, else SQLite.
                let given = |url: &Option<String>| url.as_deref().is_some_and(|u| !u.is_empty());
                let redis = !given(&store.database_url) && given(&store.redis_url);
                commands::check_purge(ages, *batch, *force, redis)?;
            }
            let backend = backend::Backend::open(store).await?;
            match command {
                Command::Status => commands::status(&backend, json).await,
                Command::Failed {
                    limit,
                    after_event,
                    after_job,
                } => {
                    let after = commands::FailedAfter {
                        event: after_event.as_deref(),
                        job: after_job.as_deref(),
                    };
                    commands::failed(&backend, limit, after, json).await
                }
                Command::Dead { limit, after } => {
                    commands::dead(&backend, limit, after.as_deref(), json).await
                }
                Command::Show { id, raw } => commands::show(&backend, &id, json, raw).await,
                Command::Requeue { id, all_dead } => {
                    commands::requeue(&backend, id.as_deref(), all_dead, json).await
                }
                Command::Purge {
                    older_than,
                    records_older_than,
                    batch,
                    force,
                } => {
                    let ages = commands::PurgeAges {
                        jobs: older_than,
                        records: records_older_than,
                    };
                    commands::purge(&backend, ages, batch, force, json).await
                }
                Command::Migrate | Command::Send(_) => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
