//! Amazon S3 (and any S3-compatible endpoint) through `object_store`: the client built from
//! the standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`) with the retry
//! policy and timeouts of [`crate::store::RemoteTuning`], and one-line descriptions of its
//! errors. We never format the builder or credentials.

use super::super::redact::clean;
use super::super::tuning::tuning;
use super::super::StoreError;
use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;
use std::sync::Arc;

/// The endpoint's host (and port) for messages: from `AWS_ENDPOINT_URL` without scheme,
/// user info or path, else AWS' regional endpoint.
pub fn endpoint_host() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(ep) if !ep.trim().is_empty() => {
            let rest = ep.split_once("://").map(|(_, r)| r).unwrap_or(&ep);
            let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            let host = authority.rsplit('@').next().unwrap_or(authority);
            host.to_string()
        }
        _ => {
            let region = std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".into());
            format!("s3.{region}.amazonaws.com")
        }
    }
}

/// The raw object store of a bucket, configured from the environment.
pub fn object_store_for(url: &str, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") {
        b = b.with_endpoint(ep);
    }
    if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
        b = b.with_region("us-east-1");
    }
    let s3 = b
        .with_client_options(tuning().client_options())
        .with_retry(tuning().retry_config())
        .build()
        .map_err(|e| StoreError::BadUrl {
            url: url.to_string(),
            reason: clean(&e.to_string()),
        })?;
    Ok(Arc::new(s3))
}

/// Whether `e` says the bucket does not exist.
pub(super) fn is_no_such_bucket(e: &object_store::Error) -> bool {
    let s = e.to_string();
    s.contains("NoSuchBucket") || s.contains("The specified bucket does not exist")
}

/// One clear line for a failed S3 request: the endpoint named when it cannot be reached,
/// credentials hinted at on 403, never a secret.
pub fn describe(e: &object_store::Error, host: &str) -> String {
    let s = clean(&e.to_string());
    let transport = s.contains("error sending request")
        || s.contains("connect")
        || s.contains("dns error")
        || s.contains("timed out")
        || s.contains("operation timed out");
    if transport && !s.contains("status code") {
        format!("cannot reach the S3 endpoint {host}: {s}")
    } else if s.contains("403")
        || s.contains("AccessDenied")
        || s.contains("InvalidAccessKeyId")
        || s.contains("SignatureDoesNotMatch")
    {
        format!("access denied by the S3 endpoint {host} (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN): {s}")
    } else {
        format!("S3 request to {host} failed: {s}")
    }
}
