//! `--dry-run`: a [`PutRecords`] that writes each record to a file instead of Kinesis,
//! as JSON lines of the decoded record or as an Avro object container file. With no
//! cursor store, a dry run is an ordinary run of the same stages that leaves Kinesis and
//! the S3 cursor untouched.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Mutex;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;

use crate::encode::{AvroEncoder, DecodeError};
use crate::sink::{OutgoingRecord, PutOutcome, PutRecords, SendError};

/// The file format of a dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DryRunFormat {
    /// One JSON object per line: the decoded record, field names as in the schema.
    #[default]
    Jsonl,
    /// An Avro object container file (schema in the header, null codec).
    Avro,
}

enum Output<'a> {
    Jsonl(Box<dyn std::io::Write + Send + 'a>),
    Avro(Box<apache_avro::Writer<'a, BufWriter<File>>>),
}

/// Writes every record it is given to a file and acknowledges it.
pub(crate) struct FileSink<'a> {
    encoder: &'a AvroEncoder,
    schema: &'a Schema,
    output: Mutex<Option<Output<'a>>>,
    /// Records written.
    pub written: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for FileSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").finish_non_exhaustive()
    }
}

/// Why the dry run's file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// Creating, writing or flushing the file failed.
    #[error("dry-run output: {0}")]
    Io(#[from] std::io::Error),
    /// `--format avro --output -`.
    #[error("dry-run output: an Avro container file needs --output PATH, not standard output")]
    AvroToStandardOutput,
    /// A record could not be read back for its JSON line.
    #[error("dry-run output: {0}")]
    Decode(#[from] DecodeError),
    /// A record could not be turned into a JSON line.
    #[error("dry-run output: {0}")]
    Json(#[from] serde_json::Error),
    /// The Avro container could not be written, or a datum read back for it.
    #[error("dry-run output: {0}")]
    Avro(String),
    /// Records came after [`FileSink::finish`].
    #[error("dry-run output: the file is already closed")]
    Closed,
}

impl From<apache_avro::Error> for DryRunError {
    fn from(e: apache_avro::Error) -> Self {
        Self::Avro(e.to_string())
    }
}

/// Creates (or truncates) the output file readable and writable by its owner only (mode
/// 0600): it holds every record a run would send. A file that existed keeps no wider mode.
fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

impl<'a> FileSink<'a> {
    /// A sink writing `format` to `path` (`-` is standard output, JSON lines only).
    pub(crate) fn create(
        encoder: &'a AvroEncoder,
        format: DryRunFormat,
        path: &Path,
    ) -> Result<Self, DryRunError> {
        let schema = encoder.schema();
        let output = match format {
            DryRunFormat::Jsonl if path == Path::new("-") => Output::Jsonl(Box::new(std::io::stdout())),
            DryRunFormat::Jsonl => Output::Jsonl(Box::new(BufWriter::new(create_private(path)?))),
            DryRunFormat::Avro if path == Path::new("-") => {
                return Err(DryRunError::AvroToStandardOutput);
            }
            DryRunFormat::Avro => {
                let file = BufWriter::new(create_private(path)?);
                Output::Avro(Box::new(apache_avro::Writer::new(schema, file)?))
            }
        };
        Ok(Self { encoder, schema, output: Mutex::new(Some(output)), written: Default::default() })
    }

    /// Flushes and closes the file.
    pub(crate) fn finish(&self) -> Result<(), DryRunError> {
        let taken = self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match taken {
            None => Ok(()),
            Some(Output::Jsonl(mut w)) => Ok(w.flush()?),
            Some(Output::Avro(w)) => Ok(w.into_inner()?.flush()?),
        }
    }

    fn write(&self, records: &[OutgoingRecord]) -> Result<(), DryRunError> {
        let mut guard = self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(output) = guard.as_mut() else {
            return Err(DryRunError::Closed);
        };
        for r in records {
            match output {
                Output::Jsonl(w) => {
                    let record = self.encoder.decode(&r.data)?;
                    let line = serde_json::to_string(&record)?;
                    writeln!(w, "{line}")?;
                }
                Output::Avro(w) => {
                    let mut datum = r.data.as_slice();
                    let value = GenericDatumReader::builder(self.schema)
                        .build()
                        .and_then(|reader| reader.read_value(&mut datum))?;
                    w.append_value(value)?;
                }
            }
            self.written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

impl PutRecords for FileSink<'_> {
    async fn put_records(&self, records: &[OutgoingRecord]) -> Result<PutOutcome, SendError> {
        self.write(records)?;
        Ok(vec![None; records.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::schema_from_response;

    fn encoder() -> AvroEncoder {
        let body = include_bytes!("../tests/fixtures/PcReserve-schema-response.json");
        AvroEncoder::from_schema_text(&schema_from_response(body).unwrap()).unwrap()
    }

    #[test]
    fn an_avro_container_on_standard_output_is_refused_by_the_file_sink() {
        let encoder = encoder();
        match FileSink::create(&encoder, DryRunFormat::Avro, Path::new("-")) {
            Err(e @ DryRunError::AvroToStandardOutput) => assert_eq!(
                e.to_string(),
                "dry-run output: an Avro container file needs --output PATH, not standard output"
            ),
            other => panic!("{:?}", other.map(|_| "a sink")),
        }
    }

    #[tokio::test]
    async fn a_write_after_finish_fails_with_the_file_sinks_own_error() {
        let encoder = encoder();
        let dir = std::env::temp_dir().join(format!("pcr-dry-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sink = FileSink::create(&encoder, DryRunFormat::Jsonl, &dir.join("out.jsonl")).unwrap();
        sink.finish().unwrap();
        let record = OutgoingRecord { partition_key: "k".into(), data: vec![0] };
        let err = sink.put_records(&[record]).await.unwrap_err();
        assert!(matches!(err, SendError::File(DryRunError::Closed)), "{err}");
        assert_eq!(err.to_string(), "dry-run output: the file is already closed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_output_file_is_created_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let encoder = encoder();
        let dir = std::env::temp_dir().join(format!("pcr-dry-run-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for format in [DryRunFormat::Jsonl, DryRunFormat::Avro] {
            let new = dir.join(format!("new-{format:?}"));
            FileSink::create(&encoder, format, &new).unwrap().finish().unwrap();
            assert_eq!(std::fs::metadata(&new).unwrap().permissions().mode() & 0o777, 0o600, "{format:?}");
            // A file that was there, world-readable, is narrowed too.
            let old = dir.join(format!("old-{format:?}"));
            std::fs::write(&old, "x").unwrap();
            std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
            FileSink::create(&encoder, format, &old).unwrap().finish().unwrap();
            assert_eq!(std::fs::metadata(&old).unwrap().permissions().mode() & 0o777, 0o600, "{format:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
