//! The command line: subcommands, flags, and the help text that teaches them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::ConfigSource;
use crate::config::{default_path, variables};
use crate::dry_run::DryRunFormat;
use crate::metrics::MetricsFormat;

const ABOUT: &str = "Send new Envisionware PC reservations, pseudonymised, to the PcReserve Kinesis stream.";

const LONG_ABOUT: &str = "\
Send new Envisionware PC reservations, pseudonymised, to the PcReserve Kinesis stream.

Each run reads the reservations recorded since the cursor kept in S3, looks each patron
up in Sierra and Redshift, replaces every identifier by a bcrypt pseudonym, encodes each
reservation as an Avro PcReserve record, sends the records to Kinesis and moves the
cursor after every acknowledged request.

Configuration comes from config/$ENVIRONMENT.yaml (PLAINTEXT_VARIABLES and
ENCRYPTED_VARIABLES, the latter decrypted with KMS), overridden by the process
environment, overridden by --set and the flags below.";

const EXAMPLES: &str = "\
Examples:
  ENVIRONMENT=qa pc-reserve-poller                 one run with config/qa.yaml
  pc-reserve-poller -c /etc/pcr/prod.yaml run --max-batches 1
  pc-reserve-poller -e devel run --ignore-cache --ignore-kinesis \\
      --set PCR_DATE_TIME='2024-05-01 00:00:00' --set PCR_KEY=0
  echo 23333012345678 | pc-reserve-poller -e qa pseudonymize

  pc-reserve-poller -e qa check                    is every dependency reachable?
  pc-reserve-poller -e qa run --dry-run --output /tmp/would-send.jsonl
  pc-reserve-poller -e qa cursor show

Exit codes: 0 done (also when nothing was new), 1 the run failed (the message names the
stage), 2 configuration or usage error (nothing was done), 3 another runner holds the
lease (or took it during this run; nothing more was sent), 4 another writer moved the
cursor (this run stopped without sending more), 5 retention lost (Envisionware's oldest
row is newer than the cursor and the poller was not caught up within
ENVISIONWARE_RETENTION_HOURS), 6 stopped by SIGTERM/SIGINT after saving the cursor, 7 `check`
found a failing dependency, 8 `reconcile` found a difference above --tolerance.";

/// What `--help` shows after the options: the examples, the exit codes and every variable
/// (from the one table in `config::variables`).
fn long_help_footer() -> String {
    format!("{EXAMPLES}\n\n{}", crate::config::variables::help_text().trim_end())
}

/// `pc-reserve-poller`.
#[derive(Debug, Parser)]
#[command(
    name = "pc-reserve-poller",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    after_long_help = long_help_footer()
)]
pub struct Cli {
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// What to do (default: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options shared by every subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// Environment name: reads config/<ENVIRONMENT>.yaml from the working directory.
    #[arg(short = 'e', long, env = "ENVIRONMENT", global = true, value_name = "NAME")]
    pub environment: Option<String>,
    /// Configuration file to read instead of config/<ENVIRONMENT>.yaml.
    #[arg(short = 'c', long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Set a variable, above the file and the environment; repeatable.
    #[arg(long = "set", global = true, value_name = "NAME=VALUE", value_parser = parse_assignment)]
    pub set: Vec<(String, String)>,
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_string(), value.to_string())),
        _ => Err("expected NAME=VALUE, e.g. --set MAX_BATCHES=2".into()),
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One poll: send every reservation after the cursor, then exit (the default).
    #[command(
        after_help = "Examples:\n  ENVIRONMENT=production pc-reserve-poller run --max-batches 10\n  pc-reserve-poller -e qa run --dry-run --format avro --output /tmp/would-send.avro\n  pc-reserve-poller -e production run --every 15m --metrics emf"
    )]
    Run(RunArgs),
    /// Print the pseudonym of each VALUE (or of each line of standard input), one per line.
    ///
    /// Analysts use it to find a patron or reservation in the warehouse: pass the Sierra
    /// patron id, `barcode <barcode>` for a patron not found in Sierra, or a pcrKey. Only
    /// BCRYPT_SALT is read from the configuration. Reading from standard input keeps the
    /// values out of shell history.
    #[command(
        after_help = "Examples:\n  pc-reserve-poller -e qa pseudonymize 1000000000123 'barcode 25555000000000'\n  cut -f1 patron_ids.tsv | pc-reserve-poller -e qa pseudonymize"
    )]
    Pseudonymize {
        /// Values to pseudonymise; none reads standard input, one value per line.
        values: Vec<String>,
    },
    /// Check every dependency, one line each; sends and writes nothing.
    ///
    /// Checks the configuration and secrets, the schema, Envisionware, Sierra, Redshift
    /// (the tables the poller reads), the Kinesis stream and the S3 cursor, without
    /// retries. Prints one line per dependency: a tick or a cross, the latency and what was found
    /// or why it failed. Exit code 7 when anything failed.
    #[command(
        after_help = "Examples:\n  ENVIRONMENT=production pc-reserve-poller check || echo 'something is down'\n  pc-reserve-poller -e production check --format json | jq -r '.checks[] | select(.ok | not) | .name'"
    )]
    Check {
        /// `text`: one line per dependency; `json`: one JSON object (ok, failed, checks).
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Show or move the S3 cursor.
    #[command(
        subcommand,
        after_help = "Examples:\n  pc-reserve-poller -e qa cursor show\n  pc-reserve-poller -e qa cursor set --date-time '2024-05-01 00:00:00' --key 0"
    )]
    Cursor(CursorCommand),
    /// Print PcReserve records as JSON lines, from the stream or from a file of datums.
    ///
    /// From the stream, every shard is read from the oldest record (--from-start) or from
    /// a time (--since, UTC). --file reads base64 Avro datums, one a line (`-` for
    /// standard input). Only PC_RESERVE_SCHEMA_URL and KINESIS_STREAM_ARN are read from
    /// the configuration.
    #[command(
        group = clap::ArgGroup::new("from").required(true).args(["from_start", "since", "file"]),
        after_help = "Examples:\n  pc-reserve-poller -e qa decode --since '2024-05-01T12:00:00Z' --limit 10\n  pc-reserve-poller -e qa decode --from-start | jq -r .patron_retrieval_status | sort | uniq -c\n  pc-reserve-poller -e qa decode --file datums.b64"
    )]
    Decode {
        /// Read every record still on the stream.
        #[arg(long)]
        from_start: bool,
        /// Read the records the stream received since this UTC time (RFC 3339 or `YYYY-MM-DD HH:MM:SS`).
        #[arg(long, value_name = "TIME", value_parser = parse_utc)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Read base64 datums from this file, one a line (`-`: standard input).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Stop after this many records.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Send the reservations of [FROM, TO) with a cursor object of their own.
    ///
    /// The backfill's cursor is `<S3_RESOURCE without .json>.backfill-<FROM>-<TO>.json` in
    /// S3_BUCKET; the main cursor is not touched, so scheduled runs go on meanwhile.
    /// Backfills of disjoint ranges can run side by side, one per machine or ECS task;
    /// an interrupted backfill resumes where it stopped when started again with the
    /// same range.
    #[command(
        after_help = "Examples:\n  pc-reserve-poller -e production backfill --from 2024-01-01 --to 2024-02-01\n  # two tasks side by side on disjoint ranges:\n  pc-reserve-poller -e production backfill --from 2024-01-01 --to 2024-01-16 &\n  pc-reserve-poller -e production backfill --from 2024-01-16 --to 2024-02-01 &\n  # the late rows a run reported:\n  pc-reserve-poller -e production backfill --only-missing --from '2024-05-01 09:00:00' --to '2024-05-01 12:00:01'"
    )]
    Backfill {
        /// First date-time included (Envisionware's New York time).
        #[arg(long, value_name = "T1", value_parser = parse_date_time)]
        from: chrono::NaiveDateTime,
        /// First date-time excluded.
        #[arg(long, value_name = "T2", value_parser = parse_date_time)]
        to: chrono::NaiveDateTime,
        /// Send only the rows whose record is not on the stream yet (compared by the
        /// pseudonymous key with the records the stream received since a day before T1):
        /// delivers late rows without duplicating the others. Keeps no cursor object.
        #[arg(long)]
        only_missing: bool,
    },
    /// Compare a day's Envisionware reservations with the warehouse's records for it.
    ///
    /// Counts Envisionware reservations whose pcrDateTime falls on DATE and the distinct
    /// keys in Redshift's pc_reserve table (pc_reserve_<REDSHIFT_DB_NAME> outside
    /// production) whose transaction_et is DATE, and prints the difference. Exit code 8
    /// when the difference, either way, is larger than --tolerance (default 0). Envisionware
    /// keeps about two days: reconcile a day it still holds (yesterday).
    #[command(
        after_help = "Examples:\n  pc-reserve-poller -e production reconcile --date 2024-05-01\n  pc-reserve-poller -e production reconcile --date yesterday --tolerance 5 --format json"
    )]
    Reconcile {
        /// The day: `YYYY-MM-DD`, or `yesterday`/`today` by Envisionware's clock (New York
        /// time, as it stamps reservations).
        #[arg(long, value_name = "DATE", value_parser = parse_reconcile_day)]
        date: ReconcileDay,
        /// The largest difference (either way) that still exits 0.
        #[arg(long, value_name = "N", default_value_t = 0)]
        tolerance: u64,
        /// `text`: one line per count; `json`: one JSON object.
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Measures bcrypt hashes per second on one core (used by scripts/bench.sh).
    #[command(hide = true)]
    BenchHash {
        /// bcrypt cost.
        #[arg(long, default_value_t = 4)]
        cost: u32,
        /// `crate` or `lanes1`..`lanes4`; default: the kernel runs use.
        #[arg(long)]
        kernel: Option<String>,
        /// How long to measure.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

/// `cursor` subcommands.
#[derive(Debug, Subcommand)]
pub enum CursorCommand {
    /// Print the cursor, when it was written and how many reservations lie after it.
    #[command(
        after_help = "Examples:\n  pc-reserve-poller -e qa cursor show\n  pc-reserve-poller -e qa cursor show --format json | jq .lag_seconds"
    )]
    Show {
        /// `text`: one line per field; `json`: one JSON object.
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Move the cursor, with the same conditional write runs use.
    ///
    /// Asks for confirmation unless --yes. Refuses to move forward past reservations
    /// that were never sent unless --force. Exit code 4 if another writer moved the
    /// cursor meanwhile.
    #[command(
        after_help = "Examples:\n  pc-reserve-poller -e qa cursor set --date-time '2024-05-01 00:00:00' --key 0\n  pc-reserve-poller -e qa cursor set --date-time '2024-06-01 00:00:00' --key 0 --yes --force"
    )]
    Set {
        /// The new pcr_date_time (`YYYY-MM-DD HH:MM:SS`).
        #[arg(long, value_name = "DATE_TIME")]
        date_time: String,
        /// The new pcr_key.
        #[arg(long, value_name = "KEY")]
        key: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Move forward even past reservations that were never sent.
        #[arg(long)]
        force: bool,
    },
}

/// How a tool prints its answer on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned lines for people.
    #[default]
    Text,
    /// One JSON object on one line, for scripts and alarms.
    Json,
}

/// Parses a date-time given on the command line: `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS`
/// or a bare date (midnight).
fn parse_date_time(text: &str) -> Result<chrono::NaiveDateTime, String> {
    crate::domain::parse_naive_date_time(text).ok_or_else(|| {
        format!("`{}` is not a date-time like 2024-05-01 or '2024-05-01 13:00:00'", text.trim())
    })
}

/// Parses `--every`: `90s`, `15m`, `1h`, `1h30m`, or plain seconds.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("`{t}` is not an interval like 30s, 15m, 1h or 1h30m");
    if let Ok(secs) = t.parse::<u64>() {
        return (secs > 0).then(|| Duration::from_secs(secs)).ok_or_else(bad);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

fn parse_utc(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    parse_date_time(text).map(|t| t.and_utc())
}

/// Flags of `run`.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Stop after this many Envisionware batches (MAX_BATCHES).
    #[arg(long, value_name = "N")]
    pub max_batches: Option<u64>,
    /// Neither read nor write the S3 cursor; start at PCR_DATE_TIME/PCR_KEY (IGNORE_CACHE).
    #[arg(long)]
    pub ignore_cache: bool,
    /// Do everything but send to Kinesis (IGNORE_KINESIS).
    #[arg(long)]
    pub ignore_kinesis: bool,
    /// Write the records to a file instead of Kinesis; the S3 cursor is read but not moved.
    #[arg(long)]
    pub dry_run: bool,
    /// The dry run's file format.
    #[arg(long, value_enum, default_value_t, requires = "dry_run")]
    pub format: DryRunFormat,
    /// The dry run's file (default dry-run.jsonl or dry-run.avro; `-`: standard output, JSON lines only).
    #[arg(long, value_name = "PATH", requires = "dry_run")]
    pub output: Option<PathBuf>,
    /// Keep running: one run per interval (30s, 15m, 1h...); SIGTERM/SIGINT stop it after
    /// the current run (exit code 6).
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub every: Option<Duration>,
    /// Also print the run summary as metrics on standard output (emf: CloudWatch Embedded
    /// Metric Format).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub metrics: Option<MetricsFormat>,
}

impl ConfigArgs {
    /// The configuration file and flag overrides these options name.
    pub fn source(&self, run: Option<&RunArgs>) -> ConfigSource {
        let path = self.config.clone().or_else(|| self.environment.as_deref().map(default_path));
        let mut flags: BTreeMap<String, String> = self.set.iter().cloned().collect();
        if let Some(run) = run {
            if let Some(n) = run.max_batches {
                flags.insert(variables::MAX_BATCHES.name.into(), n.to_string());
            }
            if run.ignore_cache {
                flags.insert(variables::IGNORE_CACHE.name.into(), "true".into());
            }
            if run.ignore_kinesis {
                flags.insert(variables::IGNORE_KINESIS.name.into(), "true".into());
            }
        }
        ConfigSource { path, flags }
    }
}

/// The day `reconcile` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileDay {
    /// A calendar date.
    On(chrono::NaiveDate),
    /// So many days before today by Envisionware's clock (`yesterday` is 1, `today` 0), so a
    /// scheduled check needs no date arithmetic of its own.
    DaysAgo(u32),
}

/// Parses `--date`: `YYYY-MM-DD`, `yesterday` or `today`.
fn parse_reconcile_day(text: &str) -> Result<ReconcileDay, String> {
    match text {
        "yesterday" => Ok(ReconcileDay::DaysAgo(1)),
        "today" => Ok(ReconcileDay::DaysAgo(0)),
        _ => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(ReconcileDay::On)
            .map_err(|_| format!("expected YYYY-MM-DD, yesterday or today, not {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn long_help_lists_every_variable_after_the_examples() {
        let help = Cli::command().render_long_help().to_string();
        let examples = help.find("Examples:").expect("examples");
        let variables = help.find("Variables (file, environment or --set):").expect("the variable list");
        assert!(examples < variables, "{help}");
        assert!(help.contains("  ENVISIONWARE_RETENTION_HOURS: hours, default 48\n"), "{help}");
        let short = Cli::command().render_help().to_string();
        assert!(!short.contains("Variables (file"), "-h stays short: {short}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_variables_and_the_environment_picks_the_file() {
        let cli = Cli::parse_from([
            "p",
            "-e",
            "qa",
            "--set",
            "LOG_LEVEL=debug",
            "run",
            "--max-batches",
            "3",
            "--ignore-cache",
        ]);
        let Some(Command::Run(run)) = &cli.command else { panic!() };
        let src = cli.config.source(Some(run));
        assert_eq!(src.path, Some(PathBuf::from("config/qa.yaml")));
        assert_eq!(src.flags["MAX_BATCHES"], "3");
        assert_eq!(src.flags["IGNORE_CACHE"], "true");
        assert_eq!(src.flags["LOG_LEVEL"], "debug");
        assert!(Cli::try_parse_from(["p", "--set", "novalue"]).is_err());
    }

    #[test]
    fn command_line_dates() {
        assert_eq!(parse_date_time("2024-05-01").unwrap().to_string(), "2024-05-01 00:00:00");
        assert_eq!(parse_date_time("2024-05-01T13:00:05").unwrap().to_string(), "2024-05-01 13:00:05");
        assert!(parse_date_time("yesterday").is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_interval("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_interval("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("15").is_ok());
        assert!(parse_interval("15x").is_err());
        assert!(parse_interval("m").is_err());
    }
}
