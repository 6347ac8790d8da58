//! The command line: subcommands, flags, and the help text that teaches them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::ConfigSource;
use crate::config::default_path;

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

Exit codes: 0 done (also when nothing was new), 1 the run failed (the message names the
stage), 2 configuration or usage error (nothing was done), 4 another writer moved the
cursor (this run stopped without sending more).";

/// `pc-reserve-poller`.
#[derive(Debug, Parser)]
#[command(name = "pc-reserve-poller", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
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
    #[command(after_help = "Example:\n  ENVIRONMENT=production pc-reserve-poller run --max-batches 10")]
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
}

impl ConfigArgs {
    /// The configuration file and flag overrides these options name.
    pub fn source(&self, run: Option<&RunArgs>) -> ConfigSource {
        let path = self.config.clone().or_else(|| self.environment.as_deref().map(default_path));
        let mut flags: BTreeMap<String, String> = self.set.iter().cloned().collect();
        if let Some(run) = run {
            if let Some(n) = run.max_batches {
                flags.insert("MAX_BATCHES".into(), n.to_string());
            }
            if run.ignore_cache {
                flags.insert("IGNORE_CACHE".into(), "true".into());
            }
            if run.ignore_kinesis {
                flags.insert("IGNORE_KINESIS".into(), "true".into());
            }
        }
        ConfigSource { path, flags }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

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
}
