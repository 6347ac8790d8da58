//! The IAM permission behind a refused AWS call: every call the poller makes names the
//! action it needs (see `deploy/iam-policy.json`), so a refusal says which permission is
//! missing, on one line: `access denied (AccessDenied: Access Denied): the role or user
//! running the poller needs s3:PutObject on arn:aws:s3:::bucket/key`.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// The error codes, besides the `AccessDenied` family (`AccessDenied`,
/// `AccessDeniedException`: KMS and Kinesis answer 400 with the latter), with which AWS
/// refuses a caller a permission. The one list of them: `aws::error_text` and the
/// permission messages both judge by [`is_access_denied_code`].
const OTHER_DENIED_CODES: [&str; 3] = ["AuthorizationError", "Forbidden", "UnauthorizedOperation"];

/// Whether an error code is an authorisation refusal.
pub(crate) fn is_access_denied_code(code: &str) -> bool {
    code.starts_with("AccessDenied") || OTHER_DENIED_CODES.contains(&code)
}

/// Whether an answer is an authorisation refusal: HTTP 403, or a refusal's error code
/// ([`is_access_denied_code`]).
pub(crate) fn is_access_denied(code: Option<&str>, status: Option<u16>) -> bool {
    status == Some(403) || code.is_some_and(is_access_denied_code)
}

/// The fix named after a refusal: `the role or user running the poller needs ACTION on RESOURCE`.
pub(crate) fn needs(action: &str, resource: &str) -> String {
    format!("the role or user running the poller needs {action} on {resource}")
}

/// The HTTP status of an SDK error's answer, if the service answered.
pub(crate) fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// An SDK error on one line ([`crate::aws::error_text`]), followed by the permission it
/// needs when it is a refusal.
pub(crate) fn describe<E>(
    err: &SdkError<E, HttpResponse>,
    target: &crate::aws::AwsTarget,
    action: &str,
    resource: &str,
) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let text = crate::aws::error_text_on(err, target, Some(resource));
    // `error_text_on` names the permission for the denial codes it knows; any other
    // refusal (a bare 403 with another code) gets the same note here.
    if is_access_denied(err.code(), status(err)) && !text.starts_with("access denied (") {
        format!("access denied ({text}): {}", needs(action, resource))
    } else {
        text
    }
}

/// The ARN of an S3 object.
pub(crate) fn s3_object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recognised_by_status_or_code() {
        assert!(is_access_denied(None, Some(403)));
        assert!(is_access_denied(Some("AccessDeniedException"), Some(400)));
        assert!(is_access_denied(Some("AccessDenied"), None));
        assert!(!is_access_denied(Some("NoSuchKey"), Some(404)));
        assert!(!is_access_denied(Some("ResourceNotFoundException"), Some(400)));
        // The refusals of SNS and IAM (AuthorizationError) and of EC2 (UnauthorizedOperation).
        assert!(is_access_denied(Some("AuthorizationError"), Some(400)));
        assert!(is_access_denied(Some("UnauthorizedOperation"), Some(400)));
        assert!(is_access_denied_code("Forbidden"));
        assert_eq!(
            needs("kms:Decrypt", "the key"),
            "the role or user running the poller needs kms:Decrypt on the key"
        );
        assert_eq!(s3_object_arn("b", "p/state.json"), "arn:aws:s3:::b/p/state.json");
    }
}
