//! The lease object in S3: [`S3LeaseStore`], the real [`LeaseStore`], with conditional
//! writes (`If-None-Match: *`, `If-Match`) and conditional deletes.

use aws_sdk_s3::primitives::ByteStream;

use super::{Deleted, LeaseError, LeaseStore, Written};

/// The lease object in S3.
#[derive(Debug, Clone)]
pub(crate) struct S3LeaseStore {
    client: aws_sdk_s3::Client,
    target: crate::aws::AwsTarget,
    bucket: String,
    key: String,
}

impl S3LeaseStore {
    /// A store for `s3://bucket/key`.
    pub(crate) fn new(
        client: aws_sdk_s3::Client,
        target: crate::aws::AwsTarget,
        bucket: String,
        key: String,
    ) -> Self {
        Self { client, target, bucket, key }
    }

    fn error(&self, message: String) -> LeaseError {
        LeaseError::S3 { location: self.location(), message }
    }

    fn arn(&self) -> String {
        crate::permissions::s3_object_arn(&self.bucket, &self.key)
    }

    async fn put(&self, condition: Condition<'_>, body: String) -> Result<Written, LeaseError> {
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(body.into_bytes()));
        let put = match condition {
            Condition::Absent => put.if_none_match("*"),
            Condition::ETag(etag) => put.if_match(etag),
        };
        match put.send().await {
            Ok(out) => Ok(Written::Ok(out.e_tag().unwrap_or_default().to_string())),
            Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                // 412: precondition failed; 409: a concurrent conditional write; 404: the
                // object was deleted since we read it (If-Match on a missing key).
                Some(412 | 409 | 404) => Ok(Written::PreconditionFailed),
                _ => Err(self.error(crate::permissions::describe(
                    &e,
                    &self.target,
                    "s3:PutObject",
                    &self.arn(),
                ))),
            },
        }
    }
}

enum Condition<'a> {
    Absent,
    ETag(&'a str),
}

impl LeaseStore for S3LeaseStore {
    fn location(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }

    async fn read(&self) -> Result<Option<(Vec<u8>, String)>, LeaseError> {
        match self.client.get_object().bucket(&self.bucket).key(&self.key).send().await {
            Ok(out) => {
                let etag = out.e_tag().unwrap_or_default().to_string();
                let cap = crate::aws::STATE_OBJECT_MAX_BYTES;
                let body = crate::aws::read_capped(out.content_length(), out.body, cap).await.map_err(|e| {
                    self.error(format!(
                        "{}; a lease object is about 120 bytes of JSON: nothing was written, delete it if no poller runs",
                        e.describe("the object", cap)
                    ))
                })?;
                Ok(Some((body, etag)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => {
                Err(self.error(crate::permissions::describe(&e, &self.target, "s3:GetObject", &self.arn())))
            }
        }
    }

    async fn create(&self, body: String) -> Result<Written, LeaseError> {
        self.put(Condition::Absent, body).await
    }

    async fn replace(&self, etag: &str, body: String) -> Result<Written, LeaseError> {
        self.put(Condition::ETag(etag), body).await
    }

    async fn delete(&self, etag: &str) -> Result<Deleted, LeaseError> {
        match self.client.delete_object().bucket(&self.bucket).key(&self.key).if_match(etag).send().await {
            Ok(_) => Ok(Deleted::Ok),
            Err(e) => match crate::permissions::status(&e) {
                // If-Match on a missing key: 404 NoSuchKey
                // (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html).
                Some(404) => Ok(Deleted::Gone),
                Some(412 | 409) => Ok(Deleted::Changed),
                // A conditional delete needs s3:GetObject as well as s3:DeleteObject (same page).
                _ => Err(self.error(crate::permissions::describe(
                    &e,
                    &self.target,
                    "s3:DeleteObject and s3:GetObject",
                    &self.arn(),
                ))),
            },
        }
    }
}
