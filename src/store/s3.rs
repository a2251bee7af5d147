//! Cubes on S3 (and any S3-compatible endpoint) through `object_store`.
//!
//! Credentials, region and endpoint come from the standard AWS environment. Retries (5xx,
//! throttling, timeouts; exponential backoff with jitter, bounded in count and time) are
//! configured here, in one place. Messages never carry secrets: object_store's errors name
//! the path and status, and we never format the builder or credentials.

use super::StoreError;
use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use zarrs::storage::storage_adapter::async_to_sync::{
    AsyncToSyncBlockOn, AsyncToSyncStorageAdapter,
};
use zarrs::storage::ReadableWritableListableStorage;
use zarrs_object_store::AsyncObjectStore;

/// The process-wide tokio runtime that drives object-store I/O.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chunkcube-io")
            .enable_all()
            .build()
            .expect("the tokio runtime must start")
    })
}

/// Blocks a (rayon or main) thread on a future driven by [`runtime`].
#[derive(Clone, Copy)]
pub struct TokioBlockOn;

impl AsyncToSyncBlockOn for TokioBlockOn {
    fn block_on<F: core::future::Future>(&self, future: F) -> F::Output {
        runtime().handle().block_on(future)
    }
}

/// The retry policy for every S3 request.
pub fn retry_config() -> RetryConfig {
    let max_retries = std::env::var("CHUNKCUBE_S3_MAX_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries,
        retry_timeout: Duration::from_secs(60),
    }
}

/// Open `s3://bucket/prefix` as zarrs storage.
pub fn open_s3(url: &str, bucket: &str, prefix: &str) -> Result<ReadableWritableListableStorage, StoreError> {
    let store = object_store_for(url, bucket)?;
    let store: Arc<dyn object_store::ObjectStore> = if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    wrap_object_store(store)
}

/// The raw object store of a bucket, configured from the environment.
pub fn object_store_for(url: &str, bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>, StoreError> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") {
        b = b.with_endpoint(ep);
    }
    let allow_http = std::env::var("AWS_ALLOW_HTTP")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false);
    if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
        b = b.with_region("us-east-1");
    }
    let opts = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(30));
    let s3 = b
        .with_client_options(opts)
        .with_retry(retry_config())
        .build()
        .map_err(|e| StoreError::BadUrl {
            url: url.to_string(),
            reason: redact(&e.to_string()),
        })?;
    Ok(Arc::new(s3))
}

/// zarrs storage over any object store (also used by tests' fault-injecting wrappers).
pub fn wrap_object_store(store: Arc<dyn object_store::ObjectStore>) -> Result<ReadableWritableListableStorage, StoreError> {
    let async_store = Arc::new(AsyncObjectStore::new(store));
    Ok(Arc::new(AsyncToSyncStorageAdapter::new(async_store, TokioBlockOn)))
}

/// Remove anything that looks like a secret from a message: the values of the secret
/// environment variables and presigned-URL query parameters.
pub fn redact(msg: &str) -> String {
    let mut out = msg.to_string();
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"] {
        if let Ok(v) = std::env::var(var) {
            if v.len() >= 4 {
                out = out.replace(&v, "***");
            }
        }
    }
    for marker in ["X-Amz-Signature=", "X-Amz-Credential=", "X-Amz-Security-Token="] {
        while let Some(i) = out.find(marker) {
            let start = i + marker.len();
            let end = out[start..]
                .find(|c: char| c == '&' || c.is_whitespace() || c == '"')
                .map(|e| start + e)
                .unwrap_or(out.len());
            if out[start..end] == *"***" {
                break;
            }
            out.replace_range(start..end, "***");
        }
    }
    out
}
