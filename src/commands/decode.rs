//! `decode`: prints PcReserve records as JSON lines, read from the Kinesis stream (every
//! shard, from the start or from a time) or from a file of base64 datums, one per line.
//! Needs only the schema URL, the stream ARN and AWS access from the configuration.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;

use aws_sdk_kinesis::types::ShardIteratorType;
use base64::Engine as _;

use crate::app::{AppError, StartupError, ToolError};
use crate::cli::ConfigArgs;
use crate::config::{RawConfig, variables};
use crate::encode::fetch_encoder;

/// Where `decode` reads.
#[derive(Debug, Clone)]
pub enum DecodeFrom {
    /// Every record still on the stream.
    Start,
    /// Records the stream received at or after this UTC time.
    Since(chrono::DateTime<chrono::Utc>),
    /// A file of base64 datums, one a line (`-` is standard input).
    File(std::path::PathBuf),
}

/// Prints one datum (the second argument says where it came from, for errors); answers
/// whether to go on.
pub(crate) type PrintDatum<'a> = dyn FnMut(&[u8], &dyn std::fmt::Display) -> Result<bool, AppError> + 'a;

async fn variable(
    raw: &RawConfig,
    sdk: &aws_config::SdkConfig,
    target: &crate::aws::AwsTarget,
    name: &'static str,
) -> Result<String, AppError> {
    use secrecy::ExposeSecret as _;
    let text = crate::app::plain_or_decrypted(raw, name, async || (sdk.clone(), target.clone())).await?;
    // An empty plain value counts as unset; a decrypted one is taken as it is.
    let decrypted = raw.plain(name).is_none();
    match text.as_ref().map(|t| t.expose_secret().trim()) {
        Some(t) if decrypted || !t.is_empty() => Ok(t.to_string()),
        _ => Err(crate::config::ConfigError::Missing(vec![name]).into()),
    }
}

/// An optional variable's text: plain, decrypted when the file encrypts it, else `None`
/// (its default applies).
async fn optional_variable(
    raw: &RawConfig,
    sdk: &aws_config::SdkConfig,
    target: &crate::aws::AwsTarget,
    name: &'static str,
) -> Result<Option<String>, AppError> {
    if raw.plain(name).is_none() && !raw.encrypted_names().any(|n| n == name) {
        return Ok(None);
    }
    variable(raw, sdk, target, name).await.map(Some).or_else(|e| match e {
        // Set but empty: the default applies, as in a run.
        AppError::Config(crate::config::ConfigError::Missing(_)) => Ok(None),
        e => Err(e),
    })
}

/// `decode`: at most `limit` records.
pub async fn decode(config: &ConfigArgs, from: DecodeFrom, limit: Option<u64>) -> Result<(), AppError> {
    let raw = super::gather_and_log(config, &config.source(None))?;
    let aws = raw.aws_settings();
    let sdk = crate::aws::sdk_config(&aws).await;
    let target = aws.target();
    let schema_url = variable(&raw, &sdk, &target, variables::PC_RESERVE_SCHEMA_URL.name).await?;
    // The schema request as `run` makes it: SCHEMA_TIMEOUT_SECONDS per attempt, retried by
    // RETRY_ATTEMPTS/RETRY_BASE_DELAY_MS (README "Configuration").
    let mut fetch_vars = std::collections::BTreeMap::new();
    for var in [variables::SCHEMA_TIMEOUT_SECONDS, variables::RETRY_ATTEMPTS, variables::RETRY_BASE_DELAY_MS]
    {
        if let Some(text) = optional_variable(&raw, &sdk, &target, var.name).await? {
            fetch_vars.insert(var.name.to_string(), text);
        }
    }
    let (timeout, policy) = crate::config::schema_fetch(&fetch_vars)?;
    let encoder = fetch_encoder(&schema_url, timeout, &policy).await.map_err(AppError::Schema)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    let mut print = |datum: &[u8], origin: &dyn std::fmt::Display| -> Result<bool, AppError> {
        let record = encoder
            .decode(datum)
            .map_err(|source| ToolError::Decode { origin: origin.to_string(), source })?;
        let line = serde_json::to_string(&record).map_err(ToolError::Json)?;
        writeln!(out, "{line}").map_err(StartupError::Stdout)?;
        printed += 1;
        Ok(limit.is_none_or(|l| printed < l))
    };
    match from {
        DecodeFrom::File(path) => from_file(&path, &mut print),
        other => {
            let arn = variable(&raw, &sdk, &target, variables::KINESIS_STREAM_ARN.name).await?;
            from_stream(&sdk, &target, &arn, &other, &mut print).await
        }
    }
}

/// The longest line of a datum file: the base64 of the largest datum, a line end besides.
const LINE_MAX_BYTES: usize = crate::encode::DATUM_MAX_BYTES.div_ceil(3) * 4 + 2;

fn from_file(path: &Path, print: &mut PrintDatum<'_>) -> Result<(), AppError> {
    let reader: Box<dyn std::io::BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| AppError::Usage(format!("decode: cannot open {}: {e}", path.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut reader = reader;
    let mut line = Vec::new();
    for n in 0.. {
        line.clear();
        let read = (&mut reader)
            .take(LINE_MAX_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|source| ToolError::ReadFile { path: path.display().to_string(), source })?;
        if read == 0 {
            break;
        }
        if line.len() > LINE_MAX_BYTES {
            return Err(ToolError::LineTooLong {
                path: path.display().to_string(),
                line: n + 1,
                max_bytes: LINE_MAX_BYTES,
            }
            .into());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let origin = format!("{} line {}", path.display(), n + 1);
        let datum = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|source| ToolError::NotBase64 { origin: origin.clone(), source })?;
        if !print(&datum, &origin)? {
            break;
        }
    }
    Ok(())
}

/// Hands every record of every shard of the stream `arn` to `print` (from the oldest, or
/// from a time), until `print` says stop or the shards are read to their end.
pub(crate) async fn from_stream(
    sdk: &aws_config::SdkConfig,
    target: &crate::aws::AwsTarget,
    arn: &str,
    from: &DecodeFrom,
    print: &mut PrintDatum<'_>,
) -> Result<(), AppError> {
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    let fail = ToolError::Kinesis;
    let shards = kinesis
        .list_shards()
        .stream_arn(arn)
        .send()
        .await
        .map_err(|e| fail(crate::permissions::describe(&e, target, "kinesis:ListShards", arn)))?;
    for shard in shards.shards() {
        let mut request = kinesis.get_shard_iterator().stream_arn(arn).shard_id(shard.shard_id());
        request = match from {
            DecodeFrom::Since(t) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs(t.timestamp())),
            _ => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let Some(mut iterator) = request
            .send()
            .await
            .map_err(|e| fail(crate::permissions::describe(&e, target, "kinesis:GetShardIterator", arn)))?
            .shard_iterator
        else {
            continue;
        };
        loop {
            let got = kinesis
                .get_records()
                .stream_arn(arn)
                .shard_iterator(&iterator)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| fail(crate::permissions::describe(&e, target, "kinesis:GetRecords", arn)))?;
            for r in got.records() {
                let origin = format!("shard {} sequence {}", shard.shard_id(), r.sequence_number());
                if !print(r.data().as_ref(), &origin)? {
                    return Ok(());
                }
            }
            let caught_up = got.millis_behind_latest().unwrap_or(0) == 0;
            match got.next_shard_iterator() {
                Some(next) if !(got.records().is_empty() && caught_up) => iterator = next.to_string(),
                _ => break,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_one_byte_over_the_base64_of_the_largest_datum_is_refused() {
        assert_eq!(LINE_MAX_BYTES, 1_398_106, "4 * ceil(1048576 / 3) + 2");
        let dir = std::env::temp_dir().join(format!("pcr-decode-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("datums.b64");
        // At the cap the line is read (and found not to be base64: `!` is not a digit).
        std::fs::write(&path, format!("{}!\n", "A".repeat(LINE_MAX_BYTES - 2))).unwrap();
        let mut seen = 0;
        let err = from_file(&path, &mut |_, _| {
            seen += 1;
            Ok(true)
        })
        .unwrap_err();
        assert!(err.to_string().contains("line 1: not base64"), "{err}");
        assert_eq!(seen, 0);
        // One byte over: refused before it is decoded.
        std::fs::write(&path, format!("{}!\n", "A".repeat(LINE_MAX_BYTES - 1))).unwrap();
        let err = from_file(&path, &mut |_, _| Ok(true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "decode: {} line 1: longer than 1398106 bytes, the base64 of a 1048576-byte datum",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
