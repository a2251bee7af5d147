//! Cubes on S3 (and any S3-compatible endpoint) through `object_store`.
//!
//! Credentials, region and endpoint come from the standard AWS environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`).
//!
//! Retries live in ONE place: [`retry_config`] and [`client_options`], handed to object_store's
//! HTTP client, which retries 5xx, 429/503 throttling (`SlowDown`), timeouts, connection errors
//! and bodies cut mid-stream (re-requesting the rest by range, checked by ETag), with exponential
//! backoff and jitter (each wait drawn at random between the initial backoff and twice the
//! previous one), bounded in count and time; other 4xx are not retried. No layer of ours retries
//! again on top of it.
//!
//! A remote cube's storage is layered, outermost first:
//! `CountingStore` → [`PrefetchStore`] (concurrent fetches ahead of the workers, one global
//! cap) → [`DiskCacheStore`] (`--cache-dir`, optional) → [`ObjectStoreStorage`] (one GET per
//! object, byte ranges without HEAD) → `object_store` (`PrefixStore` over `AmazonS3`, or any
//! store given to [`super::Store::from_object_store`]).
//!
//! Messages never carry secrets: object_store's errors name the path and status, we never format
//! the builder or credentials, and every message built here goes through [`redact`].

use super::disk_cache::{DiskCacheStore, DEFAULT_CACHE_BYTES};
use super::prefetch::PrefetchStore;
use super::{StoreError, StoreOptions};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig,
};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::storage_adapter::async_to_sync::{
    AsyncToSyncBlockOn, AsyncToSyncStorageAdapter,
};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    ReadableWritableListableStorage, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes,
    StorePrefix, WritableStorageTraits,
};
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

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.trim().parse().ok())
}

/// The retry policy of every S3 request: up to `CHUNKCUBE_S3_MAX_RETRIES` (default 6) retries,
/// jittered backoff from 100 ms growing up to 5 s, and no new retry once
/// `CHUNKCUBE_S3_RETRY_TIMEOUT_S` (default 15 s) have passed since the first attempt.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: env_u64("CHUNKCUBE_S3_MAX_RETRIES").unwrap_or(6) as usize,
        retry_timeout: Duration::from_secs(env_u64("CHUNKCUBE_S3_RETRY_TIMEOUT_S").unwrap_or(15)),
    }
}

/// HTTP client options: connecting gives up after 3 s (so an unreachable endpoint fails within
/// about 20 s, retries included), a whole request after `CHUNKCUBE_S3_TIMEOUT_S` (default 30 s;
/// a timed-out GET is retried).
pub fn client_options() -> ClientOptions {
    let allow_http = std::env::var("AWS_ALLOW_HTTP")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false);
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(
            env_u64("CHUNKCUBE_S3_TIMEOUT_S").unwrap_or(30),
        ))
        .with_pool_max_idle_per_host(64)
}

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
        .with_client_options(client_options())
        .with_retry(retry_config())
        .build()
        .map_err(|e| StoreError::BadUrl {
            url: url.to_string(),
            reason: clean(&e.to_string()),
        })?;
    Ok(Arc::new(s3))
}

/// zarrs storage over any object store (no prefetching, caching or counting): see
/// [`ObjectStoreStorage`].
pub fn wrap_object_store(
    store: Arc<dyn ObjectStore>,
) -> Result<ReadableWritableListableStorage, StoreError> {
    Ok(Arc::new(ObjectStoreStorage::new(store)))
}

/// Sync zarrs storage over an object store, driven by [`runtime`]. Whole-object reads are ONE
/// GET (zarrs' generic adapter turns them into a HEAD plus a ranged GET) and byte-range reads
/// need no HEAD (suffix and open ranges go to S3 as such); everything else goes through
/// zarrs' async-to-sync adapter.
pub struct ObjectStoreStorage {
    store: Arc<dyn ObjectStore>,
    other: AsyncToSyncStorageAdapter<AsyncObjectStore<Arc<dyn ObjectStore>>, TokioBlockOn>,
}

impl ObjectStoreStorage {
    /// Wrap `store` (the cube root).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        let other = AsyncToSyncStorageAdapter::new(
            Arc::new(AsyncObjectStore::new(store.clone())),
            TokioBlockOn,
        );
        Self { store, other }
    }
}

fn storage_err(e: object_store::Error) -> StorageError {
    StorageError::Other(clean(&e.to_string()))
}

impl ReadableStorageTraits for ObjectStoreStorage {
    fn get(&self, key: &StoreKey) -> Result<Option<Bytes>, StorageError> {
        let path = ObjectPath::from(key.as_str());
        let r = TokioBlockOn.block_on(async {
            let r = self.store.get(&path).await?;
            r.bytes().await
        });
        match r {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_err(e)),
        }
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let path = ObjectPath::from(key.as_str());
        let ranges: Vec<ByteRange> = byte_ranges.collect();
        let r = TokioBlockOn.block_on(async {
            let mut out = Vec::with_capacity(ranges.len());
            let bounded: Option<Vec<std::ops::Range<u64>>> = ranges
                .iter()
                .map(|r| match r {
                    ByteRange::FromStart(o, Some(n)) => Some(*o..o + n),
                    _ => None,
                })
                .collect();
            match bounded {
                // Coalesced into as few requests as object_store sees fit.
                Some(b) if !b.is_empty() && b.iter().all(|r| r.end > r.start) => {
                    for bytes in self.store.get_ranges(&path, &b).await? {
                        out.push(bytes);
                    }
                }
                _ => {
                    for r in &ranges {
                        let range = match r {
                            ByteRange::FromStart(_, Some(0)) | ByteRange::Suffix(0) => {
                                out.push(Bytes::new());
                                continue;
                            }
                            ByteRange::FromStart(o, Some(n)) => GetRange::Bounded(*o..o + n),
                            ByteRange::FromStart(0, None) => {
                                out.push(self.store.get(&path).await?.bytes().await?);
                                continue;
                            }
                            ByteRange::FromStart(o, None) => GetRange::Offset(*o),
                            ByteRange::Suffix(n) => GetRange::Suffix(*n),
                        };
                        let opts = GetOptions {
                            range: Some(range),
                            ..GetOptions::default()
                        };
                        out.push(self.store.get_opts(&path, opts).await?.bytes().await?);
                    }
                }
            }
            Ok::<_, object_store::Error>(out)
        });
        match r {
            Ok(parts) => {
                for (r, b) in ranges.iter().zip(&parts) {
                    let want = match r {
                        ByteRange::FromStart(_, Some(n)) | ByteRange::Suffix(n) => Some(*n),
                        ByteRange::FromStart(_, None) => None,
                    };
                    if want.is_some_and(|n| n != b.len() as u64) {
                        return Err(StorageError::Other(format!(
                            "short read of '{}': asked for {} bytes, got {}",
                            key.as_str(),
                            want.unwrap_or(0),
                            b.len()
                        )));
                    }
                }
                Ok(Some(Box::new(parts.into_iter().map(Ok))))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_err(e)),
        }
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        let path = ObjectPath::from(key.as_str());
        match TokioBlockOn.block_on(self.store.head(&path)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_err(e)),
        }
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl WritableStorageTraits for ObjectStoreStorage {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let path = ObjectPath::from(key.as_str());
        TokioBlockOn
            .block_on(self.store.put(&path, value.into()))
            .map(|_| ())
            .map_err(storage_err)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.other.set_partial_many(key, offset_values)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.other.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.other.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        self.other.supports_set_partial()
    }
}

impl ListableStorageTraits for ObjectStoreStorage {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.other.list()
    }
    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.other.list_prefix(prefix)
    }
    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.other.list_dir(prefix)
    }
    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.other.size_prefix(prefix)
    }
}

/// Keys under `prefix` of the cube root with their sizes, from the listing alone (one request
/// per 1000 keys, where a HEAD per key would be needed through the storage trait).
pub fn list_sizes(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
) -> Result<Vec<(String, u64)>, object_store::Error> {
    use futures::TryStreamExt;
    let p = prefix.trim_end_matches('/');
    let path = (!p.is_empty()).then(|| ObjectPath::from(p));
    let metas: Vec<object_store::ObjectMeta> =
        runtime().block_on(store.list(path.as_ref()).try_collect())?;
    let mut out: Vec<(String, u64)> = metas
        .into_iter()
        .map(|m| (m.location.to_string(), m.size))
        .filter(|(k, _)| k.starts_with(prefix))
        .collect();
    out.sort();
    Ok(out)
}

/// The layers of an open remote cube that [`super::Store`] talks to beyond the storage trait.
#[derive(Clone)]
pub struct Remote {
    /// The prefetching layer ([`super::Store::prefetch`] forwards to it).
    pub prefetch: Arc<PrefetchStore>,
    /// The on-disk cache, with `--cache-dir` on a cube opened for reading.
    pub disk_cache: Option<Arc<DiskCacheStore>>,
    /// The cube root as an object store (listings with sizes).
    pub object_store: Arc<dyn ObjectStore>,
}

/// An opened remote cube: its layered storage (without the counting layer) and [`Remote`].
pub(crate) struct Opened {
    pub storage: ReadableWritableListableStorage,
    pub remote: Remote,
}

/// Open `s3://bucket/prefix`.
pub(crate) fn open_s3(
    url: &str,
    bucket: &str,
    prefix: &str,
    create: bool,
    opts: &StoreOptions,
) -> Result<Opened, StoreError> {
    let raw = object_store_for(url, bucket)?;
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        raw
    } else {
        Arc::new(PrefixStore::new(raw, prefix))
    };
    let host = endpoint_host();
    let identity = format!("{host}|{bucket}/{prefix}");
    open_layers(url, store, bucket, &host, &identity, create, opts)
}

/// Probe the cube root, then build the layers over `store` (the cube root as an object store).
/// Reading (`!create`): the root `zarr.json` must exist; its write id keys the disk cache.
/// Writing: the bucket must exist. A missing bucket and an unreachable endpoint are reported
/// as such, in one line, without secrets.
pub(crate) fn open_layers(
    url: &str,
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    host: &str,
    identity: &str,
    create: bool,
    opts: &StoreOptions,
) -> Result<Opened, StoreError> {
    let fail = |key: &str, e: &object_store::Error| StoreError::Io {
        url: url.to_string(),
        key: key.to_string(),
        msg: describe(e, host),
    };
    let mut write_id = None;
    if create {
        // One listing request: proves the endpoint answers and the bucket exists.
        let probe = runtime().block_on(store.list_with_delimiter(None));
        if let Err(e) = probe {
            return Err(if is_no_such_bucket(&e) {
                no_bucket(url, bucket, host)
            } else {
                fail("(bucket listing)", &e)
            });
        }
    } else {
        let root = ObjectPath::from("zarr.json");
        let probe = runtime().block_on(async {
            let r = store.get(&root).await?;
            let meta = r.meta.clone();
            let bytes = r.bytes().await?;
            Ok::<_, object_store::Error>((meta, bytes))
        });
        match probe {
            Ok((meta, bytes)) => {
                // The write id (or the ETag for cubes of other writers) and the commit time:
                // a re-commit with an unchanged id (a deterministic ingest fingerprint) still
                // gets a fresh cache version.
                let id = write_id_of(&bytes)
                    .or(meta.e_tag)
                    .unwrap_or_else(|| format!("size{}", meta.size));
                write_id = Some(format!("{id}@{}", meta.last_modified.timestamp_millis()));
            }
            Err(e @ object_store::Error::NotFound { .. }) => {
                if is_no_such_bucket(&e) {
                    return Err(no_bucket(url, bucket, host));
                }
                // An S3 GET of a key in a missing bucket is also a 404: ask the bucket.
                return Err(match runtime().block_on(store.list_with_delimiter(None)) {
                    Err(e) if is_no_such_bucket(&e) => no_bucket(url, bucket, host),
                    _ => StoreError::NotACube(url.to_string()),
                });
            }
            Err(e) => return Err(fail("zarr.json", &e)),
        }
    }
    let net = wrap_object_store(store.clone())?;
    let mut disk_cache = None;
    let below_prefetch: ReadableWritableListableStorage = match (&opts.cache_dir, &write_id) {
        (Some(dir), Some(wid)) => {
            let bound = opts.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES);
            let c = DiskCacheStore::new(net, dir, identity, wid, bound).map_err(|e| {
                StoreError::Io {
                    url: url.to_string(),
                    key: "(cache)".into(),
                    msg: format!("cannot use --cache-dir {}: {e}", dir.display()),
                }
            })?;
            let c = Arc::new(c);
            disk_cache = Some(c.clone());
            c
        }
        // No cache, or a cube opened for writing: nothing to reuse, its objects are about to
        // change.
        _ => net,
    };
    let prefetch = Arc::new(PrefetchStore::new(below_prefetch));
    Ok(Opened {
        storage: prefetch.clone(),
        remote: Remote {
            prefetch,
            disk_cache,
            object_store: store,
        },
    })
}

/// The `chunkcube.write_id` attribute of a group `zarr.json`.
pub fn write_id_of(zarr_json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(zarr_json).ok()?;
    let id = v.get("attributes")?.get("chunkcube")?.get("write_id")?;
    id.as_str().map(str::to_string).filter(|s| !s.is_empty())
}

fn no_bucket(url: &str, bucket: &str, host: &str) -> StoreError {
    StoreError::NoSuchBucket {
        url: url.to_string(),
        bucket: bucket.to_string(),
        endpoint: host.to_string(),
    }
}

fn is_no_such_bucket(e: &object_store::Error) -> bool {
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

/// A message fit for one line of output: secrets redacted, whitespace (newlines of XML error
/// bodies) collapsed, and capped in length.
pub fn clean(msg: &str) -> String {
    let one: String = redact(msg).split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 600 {
        let cut: String = one.chars().take(600).collect();
        format!("{cut}…")
    } else {
        one
    }
}

/// Remove anything that looks like a secret from a message: the values of the secret
/// environment variables (every occurrence) and the values of presigned-URL query parameters
/// and `Authorization`-style fields (every occurrence, case-insensitively).
pub fn redact(msg: &str) -> String {
    let mut out = msg.to_string();
    for var in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECURITY_TOKEN",
    ] {
        if let Ok(v) = std::env::var(var) {
            if v.len() >= 4 {
                out = out.replace(&v, "***");
            }
        }
    }
    for marker in [
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "awsaccesskeyid=",
        "signature=",
        "x-amz-security-token: ",
        "authorization: ",
    ] {
        out = redact_values(&out, marker);
    }
    out
}

/// Replace the value after every occurrence of `marker` (ASCII, matched case-insensitively)
/// with `***`. A value ends at `&`, whitespace, a quote or `<`; header-style markers (ending in
/// a space) take the rest of the line.
fn redact_values(s: &str, marker: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let header = marker.ends_with(' ');
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    while let Some(i) = lower[pos..].find(marker) {
        let start = pos + i + marker.len();
        let end = s[start..]
            .find(|c: char| {
                if header {
                    c == '\n' || c == '\r'
                } else {
                    c == '&' || c.is_whitespace() || c == '"' || c == '\'' || c == '<'
                }
            })
            .map(|e| start + e)
            .unwrap_or(s.len());
        out.push_str(&s[pos..start]);
        if end > start {
            out.push_str("***");
        }
        pos = end;
    }
    out.push_str(&s[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_handles_every_occurrence() {
        let msg =
            "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1%2F2&X-Amz-Signature=abc123 \
                   then https://b/k2?x-amz-signature=def456&X-Amz-Security-Token=tok1 and \
                   again X-Amz-Signature=ghi789\"; AWSAccessKeyId=AKIAXX&Signature=s1g<";
        let r = redact(msg);
        for secret in [
            "AKIA1", "abc123", "def456", "tok1", "ghi789", "AKIAXX", "s1g",
        ] {
            assert!(!r.contains(secret), "{secret} left in {r}");
        }
        assert_eq!(r.matches("***").count(), 7, "{r}");
        assert!(r.contains("https://b/k2?x-amz-signature=***&"));
        let hdr =
            redact("authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=zz\nnext line");
        assert_eq!(hdr, "authorization: ***\nnext line");
        // Idempotent, and leaves ordinary text alone.
        assert_eq!(redact(&r), r);
        assert_eq!(redact("no secrets here"), "no secrets here");
    }

    #[test]
    fn clean_is_one_line() {
        assert_eq!(
            clean("a\n  <Error>\n<Code>x</Code>\n"),
            "a <Error> <Code>x</Code>"
        );
    }

    #[test]
    fn write_id_is_read_from_group_attributes() {
        let doc = br#"{"zarr_format":3,"node_type":"group","attributes":{"chunkcube":{"write_id":"abc-1"}}}"#;
        assert_eq!(write_id_of(doc).as_deref(), Some("abc-1"));
        assert_eq!(write_id_of(br#"{"attributes":{}}"#), None);
        assert_eq!(write_id_of(b"not json"), None);
    }
}
