//! The facts of a failed tool or of a failed local step, each formatted as the message
//! the command ends with (`docs/deploying.md`, "The failure line").

use crate::db::DbError;
use crate::encode::DecodeError;

/// A tool failed; the message starts with the stage.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Envisionware could not be read.
    #[error("Envisionware: {0}")]
    Envisionware(#[source] DbError),
    /// The warehouse table of sent records could not be counted.
    #[error("Redshift: {table}: {source}")]
    Redshift {
        /// The table counted.
        table: String,
        /// Why.
        #[source]
        source: DbError,
    },
    /// The stream could not be read (the message says which permission or call).
    #[error("Kinesis: {0}")]
    Kinesis(String),
    /// A datum is not a `PcReserve` record of the schema.
    #[error("decode: {origin}: {source}")]
    Decode {
        /// Where the datum came from (file and line, or shard and sequence number).
        origin: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A decoded record could not be written as JSON.
    #[error("decode: {0}")]
    Json(#[source] serde_json::Error),
    /// The file of base64 datums could not be read.
    #[error("decode: {path}: {source}")]
    ReadFile {
        /// The file, as given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is longer than the base64 of the largest datum.
    #[error(
        "decode: {path} line {line}: longer than {max_bytes} bytes, the base64 of a {}-byte datum",
        crate::encode::DATUM_MAX_BYTES
    )]
    LineTooLong {
        /// The file, as given.
        path: String,
        /// The line number, from 1.
        line: usize,
        /// The longest line accepted.
        max_bytes: usize,
    },
    /// A line of the file is not base64.
    #[error("decode: {origin}: not base64 ({source})")]
    NotBase64 {
        /// The file and line.
        origin: String,
        /// Why.
        #[source]
        source: base64::DecodeError,
    },
    /// A record on the stream, read by `backfill --only-missing`, is not a `PcReserve`.
    #[error("backfill --only-missing: {origin}: {source}")]
    OnStream {
        /// The shard and sequence number.
        origin: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// `cursor set` would skip reservations that were never sent, without `--force`.
    #[error(
        "cursor set: moving forward would skip {0} reservation(s) that were never sent; add --force to skip them on purpose"
    )]
    WouldSkip(u64),
    /// `cursor set` was not confirmed at its prompt.
    #[error("cursor set: not confirmed; the cursor is unchanged")]
    NotConfirmed,
    /// `cursor set` found a cursor object this role cannot read.
    #[error(
        "cursor set: {location} exists but this role cannot read it ({message}): it needs s3:GetObject on {object_arn}; the cursor is unchanged"
    )]
    CursorUnreadable {
        /// `bucket/key`.
        location: String,
        /// What S3 answered.
        message: String,
        /// The object's ARN, for the policy.
        object_arn: String,
    },
}

impl ToolError {
    /// The stage the message starts with.
    pub fn stage(&self) -> &'static str {
        match self {
            Self::Envisionware(_) => "Envisionware",
            Self::Redshift { .. } => "Redshift",
            Self::Kinesis(_) => "Kinesis",
            Self::Decode { .. }
            | Self::Json(_)
            | Self::ReadFile { .. }
            | Self::LineTooLong { .. }
            | Self::NotBase64 { .. } => "decode",
            Self::OnStream { .. } => "backfill --only-missing",
            Self::WouldSkip(_) | Self::NotConfirmed | Self::CursorUnreadable { .. } => "cursor set",
        }
    }
}

/// Something local failed (thread pool, runtime, standard input or output).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The bcrypt thread pool could not be started.
    #[error("bcrypt thread pool: {0}")]
    ThreadPool(#[source] std::io::Error),
    /// Standard input could not be read.
    #[error("cannot read standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// Standard output could not be written.
    #[error("cannot write to standard output: {0}")]
    Stdout(#[source] std::io::Error),
    /// `bench-hash --kernel` names no kernel.
    #[error("unknown kernel {0:?}: crate, lanes1, lanes2, lanes3 or lanes4")]
    UnknownKernel(String),
    /// `bench-hash` could not build its salt.
    #[error("{0}")]
    Bench(#[source] crate::pseudonym::SaltError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_reads_as_the_docs_show_it() {
        let cases: Vec<(String, &str)> = vec![
            (ToolError::NotConfirmed.to_string(), "cursor set: not confirmed; the cursor is unchanged"),
            (
                ToolError::WouldSkip(3).to_string(),
                "cursor set: moving forward would skip 3 reservation(s) that were never sent; add --force to skip them on purpose",
            ),
            (
                ToolError::CursorUnreadable {
                    location: "s3://b/k".into(),
                    message: "403".into(),
                    object_arn: "arn:aws:s3:::b/k".into(),
                }
                .to_string(),
                "cursor set: s3://b/k exists but this role cannot read it (403): it needs s3:GetObject on arn:aws:s3:::b/k; the cursor is unchanged",
            ),
            (ToolError::Kinesis("denied".into()).to_string(), "Kinesis: denied"),
            (
                ToolError::LineTooLong { path: "d.txt".into(), line: 2, max_bytes: 10 }.to_string(),
                "decode: d.txt line 2: longer than 10 bytes, the base64 of a 1048576-byte datum",
            ),
            (
                StartupError::UnknownKernel("x".into()).to_string(),
                "unknown kernel \"x\": crate, lanes1, lanes2, lanes3 or lanes4",
            ),
            (
                crate::app::AppError::from(StartupError::Stdin(std::io::Error::other("closed"))).to_string(),
                "startup: cannot read standard input: closed",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
