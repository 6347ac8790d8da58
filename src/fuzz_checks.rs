//! Properties of the parsers that read outside input, shared by the fuzz targets in
//! `fuzz/` (`scripts/checks/fuzz.sh`) and by the tests that replay their corpus and findings.
//!
//! Each check takes arbitrary bytes and panics when a property breaks: a parser panics,
//! a successful parse does not round-trip, or an error is not a single line.

use crate::domain::Cursor;
use crate::encode::{AvroEncoder, schema_from_response};
use crate::pseudonym::{Salt, SaltError, pseudonym};

fn one_line(what: &str, message: &str) {
    assert!(!message.contains('\n'), "{what}: error is not one line: {message:?}");
}

/// The S3 cursor object: parses or fails cleanly; what parses round-trips through
/// [`Cursor::to_json`].
pub fn cursor_object(data: &[u8]) {
    match Cursor::from_json(data) {
        Ok(cursor) => {
            let again = Cursor::from_json(cursor.to_json().as_bytes());
            assert_eq!(again.ok(), Some(cursor), "the cursor does not round-trip");
        }
        Err(e) => one_line("cursor", &e.to_string()),
    }
}

/// The YAML configuration file: parses or fails with one line; what parses round-trips
/// (written back as YAML with every value quoted, it parses to the same maps).
pub fn yaml_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match crate::config::yaml::parse(text) {
        Ok(file) => {
            let again = crate::config::yaml::parse(&yaml_text(&file));
            assert_eq!(again.as_ref(), Ok(&file), "the YAML configuration does not round-trip");
        }
        Err(e) => one_line("yaml", &e),
    }
}

/// A configuration file's YAML text: the two maps, every name and value a string.
fn yaml_text(file: &crate::config::yaml::ConfigFile) -> String {
    use serde_yaml_ng::{Mapping, Value};
    let map = |vars: &std::collections::BTreeMap<String, String>| -> Value {
        Value::Mapping(
            vars.iter()
                .map(|(k, v)| (Value::String(k.clone()), Value::String(v.clone())))
                .collect::<Mapping>(),
        )
    };
    let mut top = Mapping::new();
    top.insert(Value::String("PLAINTEXT_VARIABLES".into()), map(&file.plaintext));
    top.insert(Value::String("ENCRYPTED_VARIABLES".into()), map(&file.encrypted));
    // Serialising a map of strings cannot fail.
    serde_yaml_ng::to_string(&Value::Mapping(top)).unwrap_or_default()
}

/// The schema endpoint's answer, then the schema itself: both fail cleanly.
pub fn schema_response(data: &[u8]) {
    match schema_from_response(data) {
        Ok(schema) => {
            if let Err(e) = AvroEncoder::from_schema_text(&schema) {
                let _ = e.to_string();
            }
        }
        Err(e) => one_line("schema response", &e.to_string()),
    }
}

/// `BCRYPT_SALT`: parses or fails without echoing the value; a parsed salt hashes (cheap
/// costs only) and never prints itself.
pub fn salt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Salt::parse(text) {
        Ok(salt) => {
            assert_eq!(text.len(), 29, "a salt is 29 bytes");
            let shown = format!("{salt} {salt:?}");
            assert!(!shown.contains(&text[7..]), "the salt prints itself: {shown}");
            if salt.cost() <= 5 {
                assert_eq!(pseudonym(&salt, b"x").len(), 31);
            }
        }
        Err(e) => {
            let message = e.to_string();
            one_line("salt", &message);
            // The value may only appear where it is part of the fixed wording (digits
            // aside: the messages carry a length or a cost).
            let digits = |t: &str| t.replace(|c: char| c.is_ascii_digit(), "#");
            let wording = [SaltError::Shape { len: 0 }, SaltError::Cost(0), SaltError::Encoding]
                .map(|e| digits(&e.to_string()));
            let (message, text) = (digits(&message), digits(text));
            if text.len() >= 8 && message.contains(&text) {
                assert!(wording.iter().any(|w| w.contains(&text)), "the error echoes the value: {message}");
            }
        }
    }
}

/// An Avro datum as `decode` reads it (from the stream or a file), with the PcReserve
/// schema: decodes or fails with one line, never panics nor allocates past
/// [`crate::encode::DATUM_MAX_BYTES`] per value (the fuzzer's memory limit catches a
/// crafted length that would); what decodes encodes again to a datum that decodes the same.
pub fn avro_datum(data: &[u8]) {
    static ENCODER: std::sync::OnceLock<Option<AvroEncoder>> = std::sync::OnceLock::new();
    let encoder = ENCODER.get_or_init(|| {
        let body = include_bytes!("../tests/fixtures/PcReserve-schema-response.json");
        schema_from_response(body).ok().and_then(|s| AvroEncoder::from_schema_text(&s).ok())
    });
    let Some(encoder) = encoder else { panic!("the reference schema does not build") };
    match encoder.decode(data) {
        Ok(record) => {
            if let Ok(again) = encoder.encode(&record) {
                assert_eq!(encoder.decode(&again).ok(), Some(record), "the datum does not round-trip");
            }
        }
        Err(e) => one_line("datum", &e.to_string()),
    }
}

/// A property check over arbitrary bytes.
#[cfg(test)]
type Check = fn(&[u8]);

/// Every check by name, for the corpus replay.
#[cfg(test)]
const CHECKS: [(&str, Check); 5] = [
    ("cursor", cursor_object),
    ("yaml", yaml_config),
    ("schema", schema_response),
    ("salt", salt),
    ("datum", avro_datum),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the seed corpus and every saved finding (`fuzz/corpus/<target>/`,
    /// `fuzz/regressions/<target>/`) through its check. Every target has a corpus folder,
    /// and every file found is replayed: a missing folder or a file left out fails.
    #[test]
    fn the_fuzz_corpus_and_findings_still_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = Vec::new();
        for dir in ["corpus", "regressions"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(CHECKS.iter().any(|(n, _)| *n == name), "fuzz/{dir}/{name} has no check");
            }
        }
        for (name, check) in CHECKS {
            for dir in ["corpus", "regressions"] {
                let folder = root.join(dir).join(name);
                let entries = match std::fs::read_dir(&folder) {
                    Ok(entries) => entries,
                    // Findings exist only for targets that had some; every target has a corpus.
                    Err(_) if dir == "regressions" => continue,
                    Err(e) => panic!("{}: {e}", folder.display()),
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    let outcome = std::panic::catch_unwind(|| check(&data));
                    assert!(outcome.is_ok(), "{} fails its check", path.display());
                    replayed.push(path);
                }
            }
        }
        // The 16 files in the repository: 13 seeds (cursor 3, yaml 2, schema 2, salt 3,
        // datum 3) and 3 findings (cursor 2, salt 1).
        assert!(replayed.len() >= 16, "only {} corpus files replayed: {replayed:?}", replayed.len());
    }

    #[test]
    fn checks_accept_the_formats_they_guard() {
        // Each parser accepts the valid form (a parser refusing everything fails here)...
        let cursor = Cursor::from_json(br#"{"pcr_key": "40000000", "pcr_date_time": "2023-04-04 04:00:00"}"#)
            .expect("the original's cursor object");
        assert_eq!(cursor.key, 40_000_000);
        assert_eq!(cursor.to_json(), r#"{"pcr_key": "40000000", "pcr_date_time": "2023-04-04 04:00:00"}"#);
        let file = crate::config::yaml::parse(
            "PLAINTEXT_VARIABLES:\n  A: 1\n  B: yes\nENCRYPTED_VARIABLES:\n  S: QUJD\n",
        )
        .expect("a configuration file");
        assert_eq!((file.plaintext["A"].as_str(), file.plaintext["B"].as_str()), ("1", "yes"));
        assert_eq!(file.encrypted["S"], "QUJD");
        assert_eq!(crate::config::yaml::parse(&yaml_text(&file)), Ok(file));
        let schema = schema_from_response(include_bytes!("../tests/fixtures/PcReserve-schema-response.json"))
            .expect("the schema endpoint's answer");
        AvroEncoder::from_schema_text(&schema).expect("the PcReserve schema");
        let parsed = Salt::parse("$2b$04$abcdefghijklmnopqrstuu").expect("a valid salt");
        assert_eq!(parsed.cost(), 4);
        // ...and the checks pass on them, and on refusals.
        cursor_object(br#"{"pcr_key": "40000000", "pcr_date_time": "2023-04-04 04:00:00"}"#);
        yaml_config(b"PLAINTEXT_VARIABLES:\n  A: 1\n");
        yaml_config(
            b"PLAINTEXT_VARIABLES:\n  'odd: name': \"x\\ny\"\n  EMPTY:\n  T: 2023-01-01 00:00:00 +0000\n",
        );
        schema_response(include_bytes!("../tests/fixtures/PcReserve-schema-response.json"));
        salt(b"$2b$04$abcdefghijklmnopqrstuu");
        salt(b"not a salt at all");
        // Words of the message itself are not an echo (a false alarm of the first version).
        salt(b" charact");
    }
}
