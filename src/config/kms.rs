//! Decrypts `ENCRYPTED_VARIABLES` with AWS KMS (`Decrypt`, in `AWS_REGION`).

use std::collections::BTreeMap;
use std::future::Future;

use base64::Engine as _;
use secrecy::SecretString;

use super::ConfigError;

/// Something that turns a KMS ciphertext into its UTF-8 plaintext.
pub trait Decrypter {
    /// Decrypts one ciphertext. The error text must not contain the ciphertext.
    fn decrypt(&self, ciphertext: Vec<u8>) -> impl Future<Output = Result<Vec<u8>, String>> + Send;
}

/// A decrypter for configurations without encrypted variables; refuses any ciphertext.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDecrypter;

impl Decrypter for NoDecrypter {
    async fn decrypt(&self, _ciphertext: Vec<u8>) -> Result<Vec<u8>, String> {
        Err("no KMS client is configured".into())
    }
}

/// The AWS KMS client.
#[derive(Debug, Clone)]
pub(crate) struct KmsDecrypter {
    client: aws_sdk_kms::Client,
    /// `KMS_KEY_ID`: the only key a ciphertext may be under, when set.
    key_id: Option<String>,
    /// Where the calls go, for error messages.
    target: crate::aws::AwsTarget,
}

impl KmsDecrypter {
    /// A decrypter using the shared AWS configuration (region, profile, endpoint), pinned
    /// to `key_id` (`KMS_KEY_ID`) when given.
    pub(crate) fn new(
        sdk: &aws_config::SdkConfig,
        target: crate::aws::AwsTarget,
        key_id: Option<String>,
    ) -> Self {
        Self { client: aws_sdk_kms::Client::new(sdk), key_id, target }
    }
}

impl Decrypter for KmsDecrypter {
    async fn decrypt(&self, ciphertext: Vec<u8>) -> Result<Vec<u8>, String> {
        // With KeyId, KMS refuses a ciphertext of another key (IncorrectKeyException,
        // https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html).
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ciphertext))
            .set_key_id(self.key_id.clone())
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_kms::error::ProvideErrorMetadata as _;
                if e.code() == Some("IncorrectKeyException") {
                    return format!(
                        "the ciphertext was made under another key than KMS_KEY_ID ({}): IncorrectKeyException",
                        self.key_id.as_deref().unwrap_or_default()
                    );
                }
                crate::permissions::describe(&e, &self.target, "kms:Decrypt", "the KMS key of ENCRYPTED_VARIABLES")
            })?;
        out.plaintext.map(|b| b.into_inner()).ok_or_else(|| "KMS returned no plaintext".to_string())
    }
}

/// Decrypts every `(name, base64 ciphertext)`, all requests at once (a configuration has
/// about a dozen: one after another they were most of a run's start-up time). The first
/// failure in name order names its variable.
pub(crate) async fn decrypt_all(
    kms: &impl Decrypter,
    encrypted: &BTreeMap<String, String>,
) -> Result<Vec<(String, SecretString)>, ConfigError> {
    let results = futures_util::future::join_all(encrypted.iter().map(|(name, b64)| async move {
        let kms_error = |reason: String| ConfigError::Kms { name: name.clone(), reason };
        let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        let ciphertext = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| kms_error("the value is not base64".into()))?;
        let plaintext = kms.decrypt(ciphertext).await.map_err(kms_error)?;
        let text = String::from_utf8(plaintext).map_err(|e| {
            // Wipe the refused plaintext before it is freed.
            zeroize::Zeroize::zeroize(&mut e.into_bytes());
            kms_error("the plaintext is not UTF-8".into())
        })?;
        Ok((name.clone(), SecretString::from(text)))
    }))
    .await;
    // Plaintexts decrypted before a failure are dropped here, and SecretString wipes them.
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::ExposeSecret as _;

    use super::*;

    /// Answers like [`EchoDecrypter`] but fails on ciphertexts starting with `bad`, and
    /// records how many decrypts were in flight at once.
    #[derive(Default)]
    struct CountingDecrypter {
        in_flight: std::sync::atomic::AtomicUsize,
        max_in_flight: std::sync::atomic::AtomicUsize,
    }

    impl Decrypter for CountingDecrypter {
        async fn decrypt(&self, ciphertext: Vec<u8>) -> Result<Vec<u8>, String> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.max_in_flight.fetch_max(now, SeqCst);
            tokio::task::yield_now().await;
            self.in_flight.fetch_sub(1, SeqCst);
            if ciphertext.starts_with(b"bad") {
                return Err("InvalidCiphertextException".into());
            }
            Ok([b"plain-".as_slice(), &ciphertext].concat())
        }
    }

    #[tokio::test]
    async fn decrypts_all_at_once_and_names_the_first_failing_variable() {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let kms = CountingDecrypter::default();
        let names = ["A_HOST", "B_USER", "C_PASSWORD", "D_SALT"];
        let ok: BTreeMap<String, String> = names.iter().map(|n| (n.to_string(), b64(n))).collect();
        let out = decrypt_all(&kms, &ok).await.unwrap();
        let plain: Vec<String> = out.iter().map(|(_, v)| v.expose_secret().to_string()).collect();
        assert_eq!(plain, ["plain-A_HOST", "plain-B_USER", "plain-C_PASSWORD", "plain-D_SALT"]);
        assert_eq!(kms.max_in_flight.load(std::sync::atomic::Ordering::SeqCst), 4);

        let mut failing = ok.clone();
        failing.insert("D_SALT".into(), b64("bad-1"));
        failing.insert("B_USER".into(), b64("bad-2"));
        match decrypt_all(&kms, &failing).await {
            Err(ConfigError::Kms { name, .. }) => assert_eq!(name, "B_USER"),
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }
}
