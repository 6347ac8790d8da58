//! `check`: every dependency, one line each (tick or cross, latency, cause); sends
//! nothing and writes nothing. Exit code 7 when anything fails. The databases run the
//! very statements of a run (through the run's own functions) with values that match
//! nothing, and their result columns are checked against the types a run decodes, so a
//! protocol, type or permission problem shows here rather than in the first batch.
//! `--format json` prints the same lines as one JSON object.

use std::future::Future;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::app::{self, AppError};
use crate::cli::{ConfigArgs, OutputFormat};
use crate::config::Settings;

use crate::db::{
    TlsReport, connect_mysql, connect_pg, mysql_options, mysql_tls, pg_options, pg_tls, with_timeout,
};
use crate::domain::{Cursor, format_date_time};
use crate::encode::fetch_encoder;
use crate::enrich::redshift::Redshift;
use crate::enrich::sierra::Sierra;
use crate::retry::RetryPolicy;
use crate::source::envisionware::Envisionware;
use crate::state::{CursorStore as _, S3CursorStore};

/// One dependency's outcome.
#[derive(Debug)]
pub(crate) struct CheckLine {
    /// What was checked.
    pub name: &'static str,
    /// How long it took.
    pub latency: Duration,
    /// What was found (on success) or why it failed.
    pub detail: Result<String, String>,
    /// For a database: what its connection negotiated.
    pub tls: Option<TlsReport>,
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mark, text) = match &self.detail {
            Ok(t) => ("✓", t),
            Err(t) => ("✗", t),
        };
        write!(f, "{mark} {:<14} {:>6} ms  {text}", self.name, self.latency.as_millis())?;
        match &self.tls {
            Some(tls) => write!(f, "; TLS: {}", tls.describe()),
            None => Ok(()),
        }
    }
}

async fn timed<F>(name: &'static str, fut: F) -> CheckLine
where
    F: Future<Output = Result<String, String>>,
{
    let started = Instant::now();
    let detail = fut.await;
    CheckLine { name, latency: started.elapsed(), detail, tls: None }
}

/// [`timed`] for a database, whose check also says what its connection negotiated.
async fn timed_db<F>(name: &'static str, fut: F) -> CheckLine
where
    F: Future<Output = Result<(String, TlsReport), String>>,
{
    let started = Instant::now();
    let (detail, tls) = match fut.await {
        Ok((detail, tls)) => (Ok(detail), Some(tls)),
        Err(e) => (Err(e), None),
    };
    CheckLine { name, latency: started.elapsed(), detail, tls }
}

/// Runs every check, prints one line per dependency (or one JSON object), fails with exit
/// code 7 if any failed.
pub async fn check(config: &ConfigArgs, format: OutputFormat) -> Result<(), AppError> {
    let source = config.source(None);
    let raw = super::gather_and_log(config, &source)?;
    let mut lines = Vec::new();
    let started = Instant::now();
    let loaded = app::load(raw).await;
    let (settings, sdk, aws) = match loaded {
        Ok(v) => {
            lines.push(CheckLine {
                name: "configuration",
                latency: started.elapsed(),
                detail: Ok(format!(
                    "{} valid, secrets decrypted",
                    source.path.as_ref().map_or("environment".into(), |p| p.display().to_string())
                )),
                tls: None,
            });
            v
        }
        Err(e) => {
            lines.push(CheckLine {
                name: "configuration",
                latency: started.elapsed(),
                detail: Err(e.to_string()),
                tls: None,
            });
            return report(&lines, format);
        }
    };
    lines.extend(dependencies(&settings, &sdk, &aws).await);
    report(&lines, format)
}

/// Opens one plain connection and closes it: a refused connection answers at once,
/// where a pool keeps trying until its timeout.
async fn reachable<C: sqlx::Connection>(settings: &Settings, options: &C::Options) -> Result<(), String> {
    let conn = with_timeout(settings.connect_timeout, C::connect_with(options))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// The `--format json` object: `ok`, `failed` and one entry per line, in order.
pub(crate) fn to_json(lines: &[CheckLine]) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let (ok, detail) = match &l.detail {
                Ok(t) => (true, t),
                Err(t) => (false, t),
            };
            let mut entry = serde_json::json!({
                "name": l.name,
                "ok": ok,
                "latency_ms": u64::try_from(l.latency.as_millis()).unwrap_or(u64::MAX),
                "detail": detail,
            });
            if let (Some(tls), Some(map)) = (&l.tls, entry.as_object_mut()) {
                map.insert("tls".into(), tls.to_json());
            }
            entry
        })
        .collect();
    let failed = lines.iter().filter(|l| l.detail.is_err()).count();
    serde_json::json!({ "ok": failed == 0, "failed": failed, "checks": checks })
}

fn report(lines: &[CheckLine], format: OutputFormat) -> Result<(), AppError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // A closed standard output must not hide the verdict, which the exit code carries.
    match format {
        OutputFormat::Text => {
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
        OutputFormat::Json => {
            let _ = writeln!(out, "{}", to_json(lines));
        }
    }
    let failed = lines.iter().filter(|l| l.detail.is_err()).count();
    if failed == 0 { Ok(()) } else { Err(AppError::CheckFailed(failed)) }
}

/// Checks every dependency concurrently, without retries.
pub(crate) async fn dependencies(
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
    aws: &crate::aws::AwsSettings,
) -> Vec<CheckLine> {
    let timeout = settings.statement_timeout.min(settings.connect_timeout.max(Duration::from_secs(5)));
    let target = aws.target();
    let (a, b, c, d, e, f) = tokio::join!(
        timed("schema", schema(settings)),
        timed_db("Envisionware", envisionware(settings, timeout)),
        timed_db("Sierra", sierra(settings, timeout)),
        timed_db("Redshift", redshift(settings, timeout)),
        timed("Kinesis", kinesis(settings, sdk, &target)),
        timed("S3 cursor", s3_cursor(settings, sdk, aws)),
    );
    vec![a, b, c, d, e, f]
}

async fn schema(settings: &Settings) -> Result<String, String> {
    fetch_encoder(&settings.schema_url, settings.schema_timeout, &RetryPolicy::none())
        .await
        .map(|_| "fetched; carries every PcReserve field".to_string())
        .map_err(|e| e.to_string())
}

// Each database runs the statements of a run, through the functions a run uses, on a pool
// opened as a run opens it (after one plain connection, which a refusal answers at once).

async fn envisionware(settings: &Settings, timeout: Duration) -> Result<(String, TlsReport), String> {
    let once = RetryPolicy::none();
    reachable::<sqlx::MySqlConnection>(settings, &mysql_options(&settings.envisionware)).await?;
    let pool = connect_mysql(&settings.envisionware, settings.connect_timeout, &once)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let tls = mysql_tls(&pool, settings.envisionware.ssl_mode, timeout).await;
    let source = Envisionware::new(pool.clone(), timeout, once).with_settle_delay(settings.settle_delay);
    let probed = source.probe().await;
    pool.close().await;
    probed.map_err(|e| e.to_string())?;
    Ok(("connected; the keyset read and the retention query run, their columns decode".to_string(), tls))
}

async fn sierra(settings: &Settings, timeout: Duration) -> Result<(String, TlsReport), String> {
    let once = RetryPolicy::none();
    let options = pg_options(&settings.sierra, false, settings.statement_timeout);
    reachable::<sqlx::PgConnection>(settings, &options).await?;
    let pool = connect_pg("Sierra connect", options, settings.connect_timeout, &once)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let tls = pg_tls(&pool, settings.sierra.ssl_mode, timeout).await;
    let probed = Sierra::new(pool.clone(), timeout, once).probe().await;
    pool.close().await;
    probed.map_err(|e| e.to_string())?;
    Ok(("connected; the phrase_entry and patron_view lookups run, their columns decode".to_string(), tls))
}

async fn redshift(settings: &Settings, timeout: Duration) -> Result<(String, TlsReport), String> {
    let once = RetryPolicy::none();
    let table = &settings.redshift_patron_table;
    let options = pg_options(&settings.redshift, true, settings.statement_timeout);
    reachable::<sqlx::PgConnection>(settings, &options).await?;
    let pool = connect_pg("Redshift connect", options, settings.connect_timeout, &once)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let tls = pg_tls(&pool, settings.redshift.ssl_mode, timeout).await;
    let probed = Redshift::new(pool.clone(), table.clone(), timeout, once).probe().await;
    pool.close().await;
    probed.map_err(|e| e.to_string())?;
    Ok((format!("connected; the {table} lookup runs, its columns decode"), tls))
}

async fn kinesis(
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
    target: &crate::aws::AwsTarget,
) -> Result<String, String> {
    if settings.ignore_kinesis {
        return Ok("IGNORE_KINESIS is set; not checked".to_string());
    }
    let client = aws_sdk_kinesis::Client::new(sdk);
    let answer = client.describe_stream_summary().stream_arn(&settings.kinesis_stream_arn).send().await;
    let out = match answer {
        Ok(out) => out,
        // The scheduled task's role (deploy/iam-policy.json) may only put records; the
        // operator's (deploy/iam-operator-policy.json) may describe the stream.
        Err(e)
            if crate::permissions::is_access_denied(
                aws_sdk_kinesis::error::ProvideErrorMetadata::code(&e),
                crate::permissions::status(&e),
            ) =>
        {
            return Ok(
                "not checked: this role may not describe the stream (kinesis:DescribeStreamSummary is in deploy/iam-operator-policy.json, not the task's policy); a run's PutRecords needs only kinesis:PutRecords"
                    .to_string(),
            );
        }
        Err(e) => {
            return Err(crate::permissions::describe(
                &e,
                target,
                "kinesis:DescribeStreamSummary",
                &settings.kinesis_stream_arn,
            ));
        }
    };
    let summary = out.stream_description_summary().ok_or("no stream description in the answer")?;
    let status = summary.stream_status().as_str().to_string();
    let detail = format!("{} {status}, {} open shard(s)", summary.stream_name(), summary.open_shard_count());
    if status == "ACTIVE" || status == "UPDATING" { Ok(detail) } else { Err(detail) }
}

async fn s3_cursor(
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
    aws: &crate::aws::AwsSettings,
) -> Result<String, String> {
    if settings.ignore_cache {
        return Ok("IGNORE_CACHE is set; not checked".to_string());
    }
    // No HeadBucket: it needs s3:ListBucket, which the task role does not have
    // (deploy/iam-policy.json); reading the cursor object shows a missing bucket too.
    let client = app::s3_client(sdk, aws);
    let store =
        S3CursorStore::new(client, aws.target(), settings.s3_bucket.clone(), settings.s3_resource.clone());
    let location = format!("s3://{}/{}", settings.s3_bucket, settings.s3_resource);
    match store.load().await.map_err(|e| e.to_string())? {
        Some(Cursor { date_time, .. }) => Ok(format!("{location} at {}", format_date_time(date_time))),
        None if settings.start_cursor.is_some() => {
            Ok(format!("{location} does not exist yet; the first run starts at PCR_DATE_TIME"))
        }
        None => Err(format!("{location} does not exist and PCR_DATE_TIME/PCR_KEY are not set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_as_json_lists_each_line_and_counts_the_failures() {
        let lines = [
            CheckLine {
                name: "schema",
                latency: Duration::from_millis(12),
                detail: Ok("fetched".into()),
                tls: None,
            },
            CheckLine {
                name: "Kinesis",
                latency: Duration::from_millis(3),
                detail: Err("not found".into()),
                tls: None,
            },
        ];
        assert_eq!(
            to_json(&lines).to_string(),
            r#"{"checks":[{"detail":"fetched","latency_ms":12,"name":"schema","ok":true},{"detail":"not found","latency_ms":3,"name":"Kinesis","ok":false}],"failed":1,"ok":false}"#
        );
    }
}
