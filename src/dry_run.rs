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

use crate::encode::AvroEncoder;
use crate::sink::{OutgoingRecord, PutOutcome, PutRecords, SinkError};

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
pub struct FileSink<'a> {
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

fn io_error(e: impl std::fmt::Display) -> SinkError {
    SinkError::Request { message: format!("dry-run output: {e}"), transient: false }
}

impl<'a> FileSink<'a> {
    /// A sink writing `format` to `path` (`-` is standard output, JSON lines only).
    pub fn create(encoder: &'a AvroEncoder, format: DryRunFormat, path: &Path) -> Result<Self, SinkError> {
        let schema = encoder.schema();
        let output = match format {
            DryRunFormat::Jsonl if path == Path::new("-") => Output::Jsonl(Box::new(std::io::stdout())),
            DryRunFormat::Jsonl => {
                Output::Jsonl(Box::new(BufWriter::new(File::create(path).map_err(io_error)?)))
            }
            DryRunFormat::Avro if path == Path::new("-") => {
                return Err(io_error("an Avro container file needs --output PATH, not standard output"));
            }
            DryRunFormat::Avro => {
                let file = BufWriter::new(File::create(path).map_err(io_error)?);
                Output::Avro(Box::new(apache_avro::Writer::new(schema, file).map_err(io_error)?))
            }
        };
        Ok(Self { encoder, schema, output: Mutex::new(Some(output)), written: Default::default() })
    }

    /// Flushes and closes the file.
    pub fn finish(&self) -> Result<(), SinkError> {
        let taken = self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match taken {
            None => Ok(()),
            Some(Output::Jsonl(mut w)) => w.flush().map_err(io_error),
            Some(Output::Avro(w)) => w.into_inner().map_err(io_error)?.flush().map_err(io_error),
        }
    }

    fn write(&self, records: &[OutgoingRecord]) -> Result<(), SinkError> {
        let mut guard = self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(output) = guard.as_mut() else {
            return Err(io_error("the file is already closed"));
        };
        for r in records {
            match output {
                Output::Jsonl(w) => {
                    let record = self.encoder.decode(&r.data).map_err(io_error)?;
                    let line = serde_json::to_string(&record).map_err(io_error)?;
                    writeln!(w, "{line}").map_err(io_error)?;
                }
                Output::Avro(w) => {
                    let mut datum = r.data.as_slice();
                    let value = GenericDatumReader::builder(self.schema)
                        .build()
                        .and_then(|reader| reader.read_value(&mut datum))
                        .map_err(io_error)?;
                    w.append_value(value).map_err(io_error)?;
                }
            }
            self.written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

impl PutRecords for FileSink<'_> {
    async fn put_records(&self, records: &[OutgoingRecord]) -> Result<PutOutcome, SinkError> {
        self.write(records)?;
        Ok(vec![None; records.len()])
    }
}
