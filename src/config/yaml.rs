//! Reads `config/<env>.yaml`: two maps of variable name to scalar, `PLAINTEXT_VARIABLES`
//! and `ENCRYPTED_VARIABLES`, each value turned into the text the original service saw.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

/// The two maps of a configuration file, values as text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// `PLAINTEXT_VARIABLES`: name -> value.
    pub plaintext: BTreeMap<String, String>,
    /// `ENCRYPTED_VARIABLES`: name -> base64 KMS ciphertext.
    pub encrypted: BTreeMap<String, String>,
}

/// Parses the file's text. The error names the problem, never a value.
pub(crate) fn parse(text: &str) -> Result<ConfigFile, String> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
        Some(loc) => format!("invalid YAML at line {} column {}", loc.line(), loc.column()),
        None => "invalid YAML".to_string(),
    })?;
    let mut file = ConfigFile::default();
    let top = match doc {
        Value::Null => return Ok(file),
        Value::Mapping(m) => m,
        _ => return Err("the file must be a map with PLAINTEXT_VARIABLES and ENCRYPTED_VARIABLES".into()),
    };
    for (section, vars) in top {
        let section = scalar_text(&section).ok_or("a top-level key is not text")?;
        let target = match section.as_str() {
            "PLAINTEXT_VARIABLES" => &mut file.plaintext,
            "ENCRYPTED_VARIABLES" => &mut file.encrypted,
            other => {
                return Err(format!(
                    "unknown top-level key `{other}` (expected PLAINTEXT_VARIABLES and ENCRYPTED_VARIABLES)"
                ));
            }
        };
        let vars = match vars {
            Value::Null => continue,
            Value::Mapping(m) => m,
            _ => return Err(format!("{section} must be a map of NAME: value")),
        };
        for (name, value) in vars {
            let name = scalar_text(&name).ok_or_else(|| format!("a key under {section} is not text"))?;
            let value = scalar_text(&value)
                .ok_or_else(|| format!("{name} in {section} must be a single value, not a list or map"))?;
            target.insert(name, value);
        }
    }
    Ok(file)
}

/// The text of a scalar, as the original's Python `str()` of PyYAML's value, except that
/// an empty value is the empty string (Python said "None").
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Number(n) => Some(if let Some(i) = n.as_i64() {
            i.to_string()
        } else if let Some(u) = n.as_u64() {
            u.to_string()
        } else {
            // Python's repr of a float: `1.0`, not `1`.
            format!("{:?}", n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Some(s.clone()),
        Value::Tagged(t) => scalar_text(&t.value),
        Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_original_format() {
        let f = parse(
            "---\nPLAINTEXT_VARIABLES:\n  AWS_REGION: us-east-1\n  ENVISIONWARE_DB_PORT: 3306\n  IGNORE_CACHE: True\n  PCR_DATE_TIME: 2023-01-01 00:00:00 +0000\n  S3_BUCKET:\n  RATE: 1.0\nENCRYPTED_VARIABLES:\n  BCRYPT_SALT: AQICAHg=\n...\n",
        )
        .unwrap();
        assert_eq!(f.plaintext["ENVISIONWARE_DB_PORT"], "3306");
        assert_eq!(f.plaintext["IGNORE_CACHE"], "True");
        assert_eq!(f.plaintext["PCR_DATE_TIME"], "2023-01-01 00:00:00 +0000");
        assert_eq!(f.plaintext["S3_BUCKET"], "");
        assert_eq!(f.plaintext["RATE"], "1.0");
        assert_eq!(f.encrypted["BCRYPT_SALT"], "AQICAHg=");
    }

    #[test]
    fn empty_documents_are_empty_maps() {
        assert_eq!(parse("").unwrap(), ConfigFile::default());
        assert_eq!(parse("---\n").unwrap(), ConfigFile::default());
        assert_eq!(parse("PLAINTEXT_VARIABLES:\n").unwrap(), ConfigFile::default());
    }

    #[test]
    fn refuses_what_it_cannot_read_without_echoing_values() {
        let err = parse("PLAINTEXT_VARIABLES: [\n  secret-value").unwrap_err();
        assert!(err.contains("line"), "{err}");
        assert!(!err.contains("secret-value"));
        assert!(parse("- a\n- b\n").is_err());
        assert!(parse("PLAINTEXT_VARIABLE:\n  A: 1\n").unwrap_err().contains("PLAINTEXT_VARIABLE"));
        assert!(parse("PLAINTEXT_VARIABLES:\n  A: [1, 2]\n").unwrap_err().contains("A in"));
    }
}
