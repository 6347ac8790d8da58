//! Avro: fetches the `PcReserve` schema from the Platform API, checks that it can carry
//! every field we produce, and encodes each [`PcReserveRecord`] as one schemaless binary
//! datum (no container header, no fingerprint), byte-identical to the original service.

use std::time::Duration;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::domain::PcReserveRecord;
use crate::retry::{RetryCount, RetryPolicy, retry};

/// Why the schema could not be used, or a record not encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The schema endpoint could not be reached or answered an error.
    #[error("schema endpoint: {0}")]
    Fetch(String),
    /// The response is not `{"data": {"schema": "<json>"}}`.
    #[error("schema response is malformed: {0}")]
    Response(String),
    /// The schema text is not a valid Avro schema.
    #[error("schema is not valid Avro: {0}")]
    Parse(String),
    /// The schema cannot carry a record we produce.
    #[error("schema is incompatible: {0}")]
    Incompatible(String),
    /// A record's value does not fit its field.
    #[error("cannot encode field `{field}`: {reason}")]
    Value {
        /// The field's name in the schema (`patron_id`, `key`, ...), or `(record)` for the whole record.
        field: &'static str,
        /// What is wrong (never the value itself).
        reason: String,
    },
}

/// Why a datum could not be read back with the schema (the `decode` tool, dry runs, tests).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a datum of this schema.
    #[error("not a PcReserve datum: {0}")]
    NotADatum(String),
    /// The datum ends before the bytes do.
    #[error("{0} trailing bytes after the datum")]
    TrailingBytes(usize),
    /// The datum is not a record.
    #[error("datum is not a record")]
    NotARecord,
    /// The datum is larger than any record Kinesis can carry.
    #[error("a datum of {0} bytes is larger than the {max} bytes a record may hold", max = DATUM_MAX_BYTES)]
    TooLarge(usize),
}

/// The largest datum read back: Kinesis's record limit (1 MiB,
/// <https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html>), so no
/// datum that was ever sent is refused. It is also the most one string, byte array or
/// collection of a datum may make the Avro reader allocate (apache-avro's process-wide
/// `max_allocation_bytes`, 512 MiB by default), so a crafted length prefix fails at once
/// instead of allocating hundreds of MiB.
pub const DATUM_MAX_BYTES: usize = 1024 * 1024;

/// Sets apache-avro's allocation cap to [`DATUM_MAX_BYTES`] (once per process; the first
/// call wins, so this runs before any datum is read: every encoder is built through
/// [`AvroEncoder::from_schema_text`]).
fn cap_avro_allocation() {
    let _ = apache_avro::util::max_allocation_bytes(DATUM_MAX_BYTES);
}

/// The kinds of value a field of ours holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Int,
}

/// The fields we produce, in the reference schema's order, with their kinds.
const OUR_FIELDS: [(&str, Kind); 13] = [
    ("patron_id", Kind::String),
    ("patron_retrieval_status", Kind::String),
    ("ptype_code", Kind::Int),
    ("patron_home_library_code", Kind::String),
    ("pcode3", Kind::Int),
    ("postal_code", Kind::String),
    ("geoid", Kind::String),
    ("key", Kind::String),
    ("minutes_used", Kind::Int),
    ("transaction_et", Kind::String),
    ("branch", Kind::String),
    ("area", Kind::String),
    ("staff_override", Kind::String),
];

/// How one schema field is written.
#[derive(Debug, Clone)]
struct FieldPlan {
    name: String,
    /// Index into [`OUR_FIELDS`], or `None` for a schema field we do not produce
    /// (always written as null).
    ours: Option<usize>,
    /// Union branch of null, when the field is a union with a null branch.
    null_branch: Option<u32>,
    /// Union branch of the value (`None` when the field is not a union).
    value_branch: Option<u32>,
    /// Whether the value is written as an Avro `long` rather than `int`.
    long: bool,
}

/// An encoder bound to one checked schema.
#[derive(Debug, Clone)]
pub struct AvroEncoder {
    schema: Schema,
    plan: Vec<FieldPlan>,
}

/// A value of ours, before it is placed in the schema.
enum Field<'a> {
    Str(Option<&'a str>),
    Int(Option<i32>),
}

fn record_field(r: &PcReserveRecord, index: usize) -> Field<'_> {
    match index {
        0 => Field::Str(Some(&r.patron_id)),
        1 => Field::Str(r.patron_retrieval_status.as_deref()),
        2 => Field::Int(r.ptype_code),
        3 => Field::Str(r.patron_home_library_code.as_deref()),
        4 => Field::Int(r.pcode3),
        5 => Field::Str(r.postal_code.as_deref()),
        6 => Field::Str(r.geoid.as_deref()),
        7 => Field::Str(Some(&r.key)),
        8 => Field::Int(r.minutes_used),
        9 => Field::Str(r.transaction_et.as_deref()),
        10 => Field::Str(r.branch.as_deref()),
        11 => Field::Str(r.area.as_deref()),
        _ => Field::Str(r.staff_override.as_deref()),
    }
}

impl AvroEncoder {
    /// Checks `schema_json` (the Avro schema text) and builds an encoder for it.
    pub fn from_schema_text(schema_json: &str) -> Result<Self, EncodeError> {
        cap_avro_allocation();
        let schema = Schema::parse_str(schema_json).map_err(|e| EncodeError::Parse(e.to_string()))?;
        let Schema::Record(record) = &schema else {
            return Err(EncodeError::Incompatible("the schema is not a record".into()));
        };
        let mut plan = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            let ours = OUR_FIELDS.iter().position(|(n, _)| *n == field.name);
            let branches: Vec<&Schema> = match &field.schema {
                Schema::Union(u) => u.variants().iter().collect(),
                other => vec![other],
            };
            let is_union = matches!(field.schema, Schema::Union(_));
            let null_branch = branches.iter().position(|s| matches!(s, Schema::Null)).map(|i| i as u32);
            let Some(ours) = ours else {
                if null_branch.is_none() {
                    return Err(EncodeError::Incompatible(format!(
                        "field `{}` is not one we produce and is not nullable",
                        field.name
                    )));
                }
                plan.push(FieldPlan {
                    name: field.name.clone(),
                    ours: None,
                    null_branch: null_branch.filter(|_| is_union),
                    value_branch: None,
                    long: false,
                });
                continue;
            };
            let kind = OUR_FIELDS[ours].1;
            let value_pos = branches.iter().position(|s| match kind {
                Kind::String => matches!(s, Schema::String),
                Kind::Int => matches!(s, Schema::Int | Schema::Long),
            });
            let Some(value_pos) = value_pos else {
                return Err(EncodeError::Incompatible(format!(
                    "field `{}` cannot hold a {}",
                    field.name,
                    match kind {
                        Kind::String => "string",
                        Kind::Int => "int",
                    }
                )));
            };
            plan.push(FieldPlan {
                name: field.name.clone(),
                ours: Some(ours),
                null_branch: null_branch.filter(|_| is_union),
                value_branch: is_union.then_some(value_pos as u32),
                long: matches!(branches[value_pos], Schema::Long),
            });
        }
        for (name, _) in OUR_FIELDS {
            if !plan.iter().any(|p| p.name == name) {
                return Err(EncodeError::Incompatible(format!("it lacks the field `{name}`")));
            }
        }
        Ok(Self { schema, plan })
    }

    /// The checked schema.
    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Encodes one record as a schemaless Avro binary datum.
    pub fn encode(&self, record: &PcReserveRecord) -> Result<Vec<u8>, EncodeError> {
        let mut fields = Vec::with_capacity(self.plan.len());
        for p in &self.plan {
            let (value, field_name) = match p.ours {
                None => (None, "(unproduced)"),
                Some(i) => {
                    let name = OUR_FIELDS[i].0;
                    let v = match record_field(record, i) {
                        Field::Str(s) => s.map(|s| Value::String(s.to_owned())),
                        Field::Int(n) => {
                            n.map(|n| if p.long { Value::Long(i64::from(n)) } else { Value::Int(n) })
                        }
                    };
                    (v, name)
                }
            };
            let written = match (value, p.value_branch, p.null_branch) {
                (Some(v), Some(branch), _) => Value::Union(branch, Box::new(v)),
                (Some(v), None, _) => v,
                (None, _, Some(branch)) => Value::Union(branch, Box::new(Value::Null)),
                (None, None, None) if p.ours.is_none() => Value::Null,
                (None, _, None) => {
                    return Err(EncodeError::Value {
                        field: field_name,
                        reason: "null in a field that is not nullable".into(),
                    });
                }
            };
            fields.push((p.name.clone(), written));
        }
        let value_error =
            |e: apache_avro::Error| EncodeError::Value { field: "(record)", reason: e.to_string() };
        GenericDatumWriter::builder(&self.schema)
            .build()
            .map_err(value_error)?
            .write_value_to_vec(Value::Record(fields))
            .map_err(value_error)
    }

    /// Decodes one datum written with this schema (the `decode` tools and tests use it).
    pub fn decode(&self, datum: &[u8]) -> Result<PcReserveRecord, DecodeError> {
        if datum.len() > DATUM_MAX_BYTES {
            return Err(DecodeError::TooLarge(datum.len()));
        }
        cap_avro_allocation();
        let mut reader = datum;
        let value = GenericDatumReader::builder(&self.schema)
            .build()
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| DecodeError::NotADatum(e.to_string()))?;
        if !reader.is_empty() {
            return Err(DecodeError::TrailingBytes(reader.len()));
        }
        // apache-avro reads a string or bytes value cut off by the end of the datum as a
        // null; such a record does not fit the schema.
        if !value.validate(&self.schema) {
            return Err(DecodeError::NotADatum("the datum ends inside a value".into()));
        }
        let Value::Record(fields) = value else {
            return Err(DecodeError::NotARecord);
        };
        let get = |name: &str| -> Option<Value> {
            fields.iter().find(|(n, _)| n == name).map(|(_, v)| match v {
                Value::Union(_, inner) => (**inner).clone(),
                other => other.clone(),
            })
        };
        let string = |name: &str| match get(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let int = |name: &str| match get(name) {
            Some(Value::Int(n)) => Some(n),
            Some(Value::Long(n)) => i32::try_from(n).ok(),
            _ => None,
        };
        Ok(PcReserveRecord {
            patron_id: string("patron_id").unwrap_or_default(),
            patron_retrieval_status: string("patron_retrieval_status"),
            ptype_code: int("ptype_code"),
            patron_home_library_code: string("patron_home_library_code"),
            pcode3: int("pcode3"),
            postal_code: string("postal_code"),
            geoid: string("geoid"),
            key: string("key").unwrap_or_default(),
            minutes_used: int("minutes_used"),
            transaction_et: string("transaction_et"),
            branch: string("branch"),
            area: string("area"),
            staff_override: string("staff_override"),
        })
    }
}

/// Extracts the Avro schema text from a Platform API response (`data.schema`).
pub fn schema_from_response(body: &[u8]) -> Result<String, EncodeError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| EncodeError::Response(format!("not JSON ({e})")))?;
    match json.pointer("/data/schema") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(EncodeError::Response("`data.schema` is not a string".into())),
        None => Err(EncodeError::Response("no `data.schema` in the response".into())),
    }
}

/// The most a schema response may hold: the reference response is about 4 KiB, so this
/// leaves room for a much larger schema and still bounds what an endpoint can make the
/// poller allocate.
pub const SCHEMA_RESPONSE_MAX_BYTES: usize = 256 * 1024;

/// Checks that `url` is `https://`, or `http://` to a loopback address (the local stack),
/// or says why not (the reason, to follow the variable's name):
/// the schema decides what every record is encoded as, so it must not come over a path
/// where it can be altered.
pub fn check_schema_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        "http" => {
            Err("must be https:// (http:// only to a loopback address such as the local stack)".to_string())
        }
        _ => Err("must be an https:// URL (http:// only to a loopback address)".to_string()),
    }
}

/// Fetches the schema from `url` with a timeout, retrying 5xx answers and connection
/// errors, then checks it. Only `https://` (or loopback `http://`), no redirects, at most
/// [`SCHEMA_RESPONSE_MAX_BYTES`].
pub(crate) async fn fetch_encoder(
    url: &str,
    timeout: Duration,
    policy: &RetryPolicy,
) -> Result<AvroEncoder, EncodeError> {
    let url = check_schema_url(url)
        .map_err(|reason| EncodeError::Fetch(format!("PC_RESERVE_SCHEMA_URL {reason}")))?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect could lead anywhere, plain http included: the configured URL must be
        // the endpoint itself.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| EncodeError::Fetch(e.to_string()))?;
    // Fetched before a run starts: its retries are logged, not part of a run's count.
    let body = retry(
        policy,
        &RetryCount::default(),
        "schema endpoint",
        |e: &FetchFailure| e.retriable,
        || async {
            let mut response = client.get(url.clone()).send().await.map_err(|e| FetchFailure {
                retriable: e.is_connect() || e.is_timeout() || e.is_request(),
                message: without_url(&e),
            })?;
            let status = response.status();
            if status.is_redirection() {
                return Err(FetchFailure {
                    retriable: false,
                    message: format!(
                        "HTTP {status}: redirects are not followed; set PC_RESERVE_SCHEMA_URL to the address that answers"
                    ),
                });
            }
            if !status.is_success() {
                return Err(FetchFailure {
                    retriable: status.is_server_error() || status.as_u16() == 429,
                    message: format!("HTTP {status}"),
                });
            }
            let too_large = |size: String| FetchFailure {
                retriable: false,
                message: format!(
                    "the response is {size} the {SCHEMA_RESPONSE_MAX_BYTES} bytes a schema response may hold"
                ),
            };
            if let Some(n) = response.content_length().filter(|n| *n > SCHEMA_RESPONSE_MAX_BYTES as u64) {
                return Err(too_large(format!("{n} bytes, more than")));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| FetchFailure { retriable: true, message: without_url(&e) })?
            {
                if body.len() + chunk.len() > SCHEMA_RESPONSE_MAX_BYTES {
                    return Err(too_large("more than".to_string()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        },
    )
    .await
    .map_err(|e| EncodeError::Fetch(e.message))?;
    AvroEncoder::from_schema_text(&schema_from_response(&body)?)
}

/// One failed schema request.
#[derive(Debug)]
struct FetchFailure {
    retriable: bool,
    message: String,
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A reqwest error's text naming the endpoint without what a URL can carry besides it
/// (credentials in the user part, tokens in the query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        let endpoint = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        text = text.replace(url.as_str(), &format!("{endpoint}, PC_RESERVE_SCHEMA_URL"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_encoder() -> AvroEncoder {
        let body = include_bytes!("../tests/fixtures/PcReserve-schema-response.json");
        AvroEncoder::from_schema_text(&schema_from_response(body).unwrap()).unwrap()
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        description: String,
        record: Option<PcReserveRecord>,
        decoded: Option<PcReserveRecord>,
        datum_hex: String,
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn encodes_every_reference_vector_byte_for_byte() {
        let enc = reference_encoder();
        let vectors: Vec<Vector> =
            serde_json::from_str(include_str!("../tests/fixtures/avro_pcreserve.json")).unwrap();
        assert_eq!(vectors.len(), 18);
        for v in vectors {
            let record = v.record.or(v.decoded).unwrap();
            let bytes = enc.encode(&record).unwrap();
            assert_eq!(hex(&bytes), v.datum_hex, "{}", v.description);
            assert_eq!(enc.decode(&unhex(&v.datum_hex)).unwrap(), record, "{}", v.description);
        }
    }

    #[test]
    fn a_datum_that_does_not_decode_says_why_in_its_own_terms() {
        let enc = reference_encoder();
        let vectors: Vec<Vector> =
            serde_json::from_str(include_str!("../tests/fixtures/avro_pcreserve.json")).unwrap();
        let datum = unhex(&vectors[0].datum_hex);
        let longer = [datum.as_slice(), &[0, 0, 0]].concat();
        match enc.decode(&longer) {
            Err(e @ DecodeError::TrailingBytes(3)) => {
                assert_eq!(e.to_string(), "3 trailing bytes after the datum")
            }
            other => panic!("{other:?}"),
        }
        match enc.decode(&datum[..1]) {
            Err(e @ DecodeError::NotADatum(_)) => {
                assert!(e.to_string().starts_with("not a PcReserve datum: "), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Avro's zig-zag varint of `n`.
    fn varint(n: i64) -> Vec<u8> {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn a_datum_or_a_length_one_byte_over_the_cap_is_a_one_line_error() {
        let enc = reference_encoder();
        assert_eq!(DATUM_MAX_BYTES, 1_048_576);
        // A whole datum one byte over the cap is refused before it is read.
        let err = enc.decode(&vec![0u8; DATUM_MAX_BYTES + 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a datum of 1048577 bytes is larger than the 1048576 bytes a record may hold"
        );
        // patron_id is a one-branch union of string: branch 0, then the string's length.
        // A length one byte over the cap fails before anything is allocated ...
        let crafted = [varint(0), varint(1_048_577), b"abc".to_vec()].concat();
        let err = enc.decode(&crafted).unwrap_err().to_string();
        assert!(err.starts_with("not a PcReserve datum: "), "{err}");
        assert!(err.contains("1048577") && err.contains("1048576"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        // ... and a length at the cap is allowed, then found to run past the datum.
        let at_cap = [varint(0), varint(1_048_576), b"abc".to_vec()].concat();
        let err = enc.decode(&at_cap).unwrap_err().to_string();
        assert_eq!(err, "not a PcReserve datum: the datum ends inside a value");
        // Without the cap the same prefix could ask for 500 MiB.
        let huge = [varint(0), varint(500 * 1024 * 1024)].concat();
        assert!(enc.decode(&huge).unwrap_err().to_string().contains("524288000"));
    }

    #[test]
    fn the_avsc_file_and_the_response_agree() {
        let from_file =
            AvroEncoder::from_schema_text(include_str!("../tests/fixtures/PcReserve-schema.avsc")).unwrap();
        assert_eq!(from_file.schema(), reference_encoder().schema());
    }

    #[test]
    fn refuses_a_schema_that_lacks_a_field() {
        let text = include_str!("../tests/fixtures/PcReserve-schema.avsc").replace("\"geoid\"", "\"geo\"");
        let err = AvroEncoder::from_schema_text(&text).unwrap_err();
        assert!(err.to_string().contains("geo"), "{err}");
    }

    #[test]
    fn refuses_a_field_of_the_wrong_type() {
        let text = include_str!("../tests/fixtures/PcReserve-schema.avsc").replacen(
            "\"null\",\n        \"int\"",
            "\"null\",\n        \"boolean\"",
            1,
        );
        let err = AvroEncoder::from_schema_text(&text).unwrap_err();
        assert!(err.to_string().contains("ptype_code"), "{err}");
    }

    #[test]
    fn refuses_garbage_responses() {
        for body in [&b"<html>"[..], b"{}", br#"{"data": {"schema": 3}}"#] {
            assert!(schema_from_response(body).is_err());
        }
        assert!(AvroEncoder::from_schema_text("{\"type\": \"nope\"}").is_err());
    }
}
