//! The shared AWS configuration: region, profile, static credentials and
//! `AWS_ENDPOINT_URL` from the merged configuration (so `config/local.yaml` alone reaches
//! the local emulator), otherwise the standard credential chain, and bounded timeouts and
//! retries on every client. Also the one-line description of an SDK error: what failed
//! (the service action, the endpoint) and what to do, never the SDK's debug dump.

use std::error::Error as StdError;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret as _, SecretString};

/// Static credentials given in the configuration (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`): the local emulator's, or any
/// the environment holds. Without them the SDK's default chain is used.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY` (never printed).
    pub secret_access_key: SecretString,
    /// `AWS_SESSION_TOKEN`, for temporary credentials (never printed).
    pub session_token: Option<SecretString>,
}

/// What the AWS clients need to know before the rest of the configuration is validated.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// `AWS_REGION` (from flags, environment or file).
    pub region: Option<String>,
    /// `AWS_PROFILE`, which the original's README tells users to put in the file.
    pub profile: Option<String>,
    /// `AWS_ENDPOINT_URL` (flags, environment or file).
    pub endpoint_url: Option<String>,
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` when both are set.
    pub credentials: Option<StaticCredentials>,
    /// Attempts per AWS call, the first included.
    pub max_attempts: u32,
}

/// Where the AWS calls of a configuration go, for error messages: the facts
/// [`sdk_config`] builds the SDK configuration from ([`AwsSettings::target`]), passed to
/// every client whose errors [`error_text`] describes.
#[derive(Debug, Clone, Default)]
pub struct AwsTarget {
    endpoint_url: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    static_credentials: bool,
}

impl AwsSettings {
    /// Where the calls of an SDK configuration built from these settings go.
    pub fn target(&self) -> AwsTarget {
        AwsTarget {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            static_credentials: self.credentials.is_some(),
        }
    }
}

/// Loads the SDK configuration every client shares; [`AwsSettings::target`] gives the facts
/// its errors are described with.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(c) = &settings.credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose_secret().to_string(),
            c.session_token.as_ref().map(|t| t.expose_secret().to_string()),
            None,
            "configuration",
        ));
    }
    loader.load().await
}

/// Whether S3 must use path-style addressing: with a custom endpoint (a local emulator on
/// an IP address has no virtual-host names).
pub(crate) fn s3_path_style(settings: &AwsSettings) -> bool {
    settings.endpoint_url.is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
}

/// Error codes AWS answers for expired temporary credentials.
const EXPIRED: [&str; 4] =
    ["ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"];
/// Error codes AWS answers for credentials it does not know or whose signature is wrong.
const REFUSED: [&str; 6] = [
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
];

/// The default credential chain, as `aws-config` tries it.
const CHAIN: &str = "tried AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile in ~/.aws/config and ~/.aws/credentials (AWS_PROFILE, SSO included), web identity, the ECS task role and the EC2 instance role";
/// The usual fixes when the chain finds nothing.
const FIXES: &str = "set AWS_PROFILE (after `aws sso login` for an SSO profile), export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with a task role";

/// The service (`kms`) and IAM action (`Decrypt`) of an SDK operation error type, from
/// its type name (`aws_sdk_kms::operation::decrypt::DecryptError`).
fn service_action<E>() -> (&'static str, &'static str) {
    let name = std::any::type_name::<E>();
    let service = name.split("::").next().and_then(|c| c.strip_prefix("aws_sdk_")).unwrap_or("aws");
    let operation = name.rsplit("::").next().and_then(|t| t.strip_suffix("Error")).unwrap_or("call");
    // The IAM actions that authorise these read operations have other names.
    let action = match (service, operation) {
        ("s3", "HeadBucket" | "ListObjectsV2") => "ListBucket",
        ("s3", "HeadObject") => "GetObject",
        _ => operation,
    };
    (service, action)
}

/// The endpoint a service's calls go to: the configured one, else the regional AWS one.
fn endpoint(target: &AwsTarget, service: &str) -> String {
    match &target.endpoint_url {
        Some(url) => format!("{url} (AWS_ENDPOINT_URL)"),
        None => {
            let region = target.region.as_deref().unwrap_or("<no AWS_REGION>");
            format!("https://{service}.{region}.amazonaws.com")
        }
    }
}

/// Every message of an error's cause chain on one line, repeated messages once.
pub(crate) fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The innermost message of an error's cause chain (`Connection refused (os error 111)`).
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut last = err;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn credentials_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a CredentialsError> {
    let mut next: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<CredentialsError>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// What went wrong loading credentials, and what to do.
fn credentials_text(target: &AwsTarget, err: &CredentialsError) -> String {
    let profile = target.profile.clone().or_else(|| std::env::var("AWS_PROFILE").ok());
    match (err, profile) {
        (CredentialsError::CredentialsNotLoaded(_), None) => {
            format!("no AWS credentials found ({CHAIN}; {FIXES})")
        }
        (CredentialsError::CredentialsNotLoaded(_), Some(p)) => format!(
            "no AWS credentials found for AWS_PROFILE={p} (check that the profile exists in ~/.aws/config; for an SSO profile run `aws sso login --profile {p}`)"
        ),
        (CredentialsError::ProviderTimedOut(_), _) => {
            format!("AWS credentials: the provider did not answer in time ({CHAIN}; {FIXES})")
        }
        (other, Some(p)) => format!(
            "AWS credentials of AWS_PROFILE={p} could not be loaded: {}; if its SSO session expired run `aws sso login --profile {p}`",
            chain_text(other)
        ),
        // The chain ended on a provider that failed rather than found nothing (on a
        // machine whose instance metadata service refuses, the EC2 instance role).
        (other, None) => {
            format!("no AWS credentials found ({CHAIN}; the last answered: {}); {FIXES}", chain_text(other))
        }
    }
}

/// An AWS SDK error on one line: what failed and what to do. Credentials that are missing,
/// expired or refused say which chain was tried and the usual fixes; an unreachable
/// endpoint is named; an access denial names the IAM action; any other service error is
/// its code and message. Never the raw response or the SDK's debug output.
pub(crate) fn error_text<E, R>(err: &SdkError<E, R>, target: &AwsTarget) -> String
where
    E: StdError + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    error_text_on(err, target, None)
}

/// [`error_text`] for a call on a known resource (an ARN): a denial then names the action
/// and the resource the role must be allowed, as `deploy/iam-policy.json` grants them.
pub(crate) fn error_text_on<E, R>(err: &SdkError<E, R>, target: &AwsTarget, resource: Option<&str>) -> String
where
    E: StdError + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    let (service, action) = service_action::<E>();
    if let Some(cred) = credentials_error(err) {
        return credentials_text(target, cred);
    }
    match err {
        SdkError::ServiceError(_) => {
            // Answers without a body (HEAD requests) carry no code: the HTTP status is all
            // there is, and the SDK's own text for them is a debug dump.
            let status = err
                .raw_response()
                .and_then(|r| {
                    (r as &dyn std::any::Any).downcast_ref::<aws_sdk_kms::config::http::HttpResponse>()
                })
                .map(|r| r.status().as_u16());
            let code = err.code().unwrap_or_default();
            let message = err.message().map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "));
            let said = match (&message, status) {
                (Some(m), _) if !code.is_empty() => format!("{code}: {m}"),
                (Some(m), _) => m.clone(),
                (None, _) if !code.is_empty() => code.to_string(),
                (None, Some(status)) => format!("HTTP {status}"),
                (None, None) => "an error without a code".to_string(),
            };
            let code = if code.is_empty() && status == Some(403) { "Forbidden" } else { code };
            if crate::permissions::is_access_denied_code(code) {
                let on = resource.map(|r| format!(" on {r}")).unwrap_or_default();
                format!(
                    "access denied ({said}): the role or user running the poller needs {service}:{action}{on}"
                )
            } else if EXPIRED.contains(&code) {
                format!(
                    "the AWS credentials have expired ({said}); renew them (`aws sso login` for an SSO profile, new keys otherwise) and run again"
                )
            } else if REFUSED.contains(&code) {
                let which = if target.static_credentials {
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                } else {
                    "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                };
                format!("AWS refused the credentials ({said}); check {which}")
            } else {
                said
            }
        }
        SdkError::TimeoutError(_) => {
            format!("{service}:{action}: no answer from {} in time", endpoint(target, service))
        }
        SdkError::DispatchFailure(_) => {
            format!("{service}:{action}: cannot reach {}: {}", endpoint(target, service), root_cause(err))
        }
        SdkError::ResponseError(_) => {
            format!(
                "{service}:{action}: unreadable answer from {}: {}",
                endpoint(target, service),
                root_cause(err)
            )
        }
        _ => format!("{service}:{action}: {}", chain_text(err)),
    }
}

/// The most an S3 state object (the cursor, the lease) may hold: both are JSON objects of
/// well under 200 bytes, so anything near this is not one of ours, and is not read whole.
pub(crate) const STATE_OBJECT_MAX_BYTES: usize = 4096;

/// Why a capped read of an S3 object's body failed.
#[derive(Debug)]
pub(crate) enum CappedReadError {
    /// The body is larger than the cap (`size` when S3 announced it).
    TooLarge {
        /// The announced `Content-Length`, when there was one.
        size: Option<u64>,
    },
    /// The body could not be read.
    Read(String),
}

impl CappedReadError {
    /// The error's text for `what` (e.g. `s3://bucket/key`), naming the cap.
    pub(crate) fn describe(&self, what: &str, cap: usize) -> String {
        match self {
            Self::TooLarge { size: Some(n) } => {
                format!("{what} is {n} bytes, more than the {cap} bytes it may hold; it was not read")
            }
            Self::TooLarge { size: None } => {
                format!("{what} is more than the {cap} bytes it may hold; it was not read")
            }
            Self::Read(e) => format!("{what}: cannot read the body: {e}"),
        }
    }
}

/// Reads an S3 object's body, at most `cap` bytes: a `Content-Length` over the cap fails
/// before any byte is read, and a body that runs past it fails at the first chunk that
/// does (so a lying or absent length cannot make it allocate more than `cap` plus one
/// chunk).
pub(crate) async fn read_capped(
    content_length: Option<i64>,
    mut body: aws_sdk_s3::primitives::ByteStream,
    cap: usize,
) -> Result<Vec<u8>, CappedReadError> {
    if let Some(n) = content_length.and_then(|n| u64::try_from(n).ok()) {
        if n > cap as u64 {
            return Err(CappedReadError::TooLarge { size: Some(n) });
        }
    }
    let mut out = Vec::new();
    while let Some(chunk) = body.try_next().await.map_err(|e| CappedReadError::Read(e.to_string()))? {
        if out.len() + chunk.len() > cap {
            return Err(CappedReadError::TooLarge { size: None });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_action_come_from_the_operation_type() {
        assert_eq!(service_action::<aws_sdk_kms::operation::decrypt::DecryptError>(), ("kms", "Decrypt"));
        assert_eq!(
            service_action::<aws_sdk_s3::operation::head_bucket::HeadBucketError>(),
            ("s3", "ListBucket")
        );
        assert_eq!(
            service_action::<aws_sdk_kinesis::operation::put_records::PutRecordsError>(),
            ("kinesis", "PutRecords")
        );
    }

    fn kms_error(code: &str, message: &str) -> SdkError<aws_sdk_kms::operation::decrypt::DecryptError, ()> {
        let meta = aws_sdk_kms::error::ErrorMetadata::builder().code(code).message(message).build();
        SdkError::service_error(aws_sdk_kms::operation::decrypt::DecryptError::generic(meta), ())
    }

    #[test]
    fn service_errors_name_the_action_and_what_to_do() {
        let denied = error_text(
            &kms_error(
                "AccessDeniedException",
                "User: arn:aws:iam::123456789012:user/poller is not authorized to perform: kms:Decrypt",
            ),
            &AwsTarget::default(),
        );
        assert_eq!(
            denied,
            "access denied (AccessDeniedException: User: arn:aws:iam::123456789012:user/poller is not authorized to perform: kms:Decrypt): the role or user running the poller needs kms:Decrypt"
        );
        let expired = error_text(
            &kms_error("ExpiredTokenException", "The security token included in the request is expired"),
            &AwsTarget::default(),
        );
        assert!(
            expired.starts_with("the AWS credentials have expired (ExpiredTokenException: "),
            "{expired}"
        );
        assert!(expired.contains("aws sso login"), "{expired}");
        let refused = error_text(
            &kms_error(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            &AwsTarget::default(),
        );
        assert!(
            refused.starts_with("AWS refused the credentials (UnrecognizedClientException: "),
            "{refused}"
        );
        let other =
            error_text(&kms_error("NotFoundException", "Key 'x' does not exist"), &AwsTarget::default());
        assert_eq!(other, "NotFoundException: Key 'x' does not exist");
    }

    #[test]
    fn a_missing_credential_chain_names_the_chain_and_the_fixes() {
        let err = CredentialsError::not_loaded("no providers in chain provided credentials");
        let text = credentials_text(&AwsTarget::default(), &err);
        assert!(!text.contains('\n'));
        for part in ["no AWS credentials found", "AWS_PROFILE", "aws sso login", "task role"] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }
}
