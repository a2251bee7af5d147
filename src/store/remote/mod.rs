//! Remote cubes. A remote cube's storage is layered, outermost first: `CountingStore` →
//! [`PrefetchStore`] (concurrent fetches ahead of the workers, one global cap) →
//! [`DiskCacheStore`] (`--cache-dir`, optional) → [`ObjectStoreStorage`] (one GET per object,
//! byte ranges without HEAD) → `object_store` (`PrefixStore` over `AmazonS3`, or any store
//! given to [`crate::store::Store::from_object_store`]).
//!
//! - [`s3`]: the S3 client from the environment, and its errors in one line;
//! - `object`: the zarrs adapter over any object store;
//! - this file: probing a cube root and assembling the layers.
//!
//! Retries live in ONE place, [`crate::store::RemoteTuning`], handed to object_store's HTTP
//! client. Messages never carry secrets (see [`crate::store::redact`]).

mod object;
pub mod s3;

pub use object::{list_sizes, wrap_object_store, ObjectStoreStorage};

use super::disk_cache::{DiskCacheStore, DEFAULT_CACHE_BYTES};
use super::prefetch::PrefetchStore;
use super::runtime::runtime;
use super::{StoreError, StoreOptions};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use s3::{describe, endpoint_host, is_no_such_bucket, object_store_for};
use std::sync::Arc;
use zarrs::storage::ReadableWritableListableStorage;

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
    /// Opened for reading: the root `zarr.json` the probe read (absent for Zarr v2 stores).
    pub root_doc: Option<bytes::Bytes>,
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
    let mut root_doc = None;
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
                root_doc = Some(bytes);
            }
            Err(e @ object_store::Error::NotFound { .. }) => {
                if is_no_such_bucket(&e) {
                    return Err(no_bucket(url, bucket, host));
                }
                // A Zarr v2 store (read only): its `.zgroup` stands for the version.
                match runtime().block_on(store.head(&ObjectPath::from(".zgroup"))) {
                    Ok(meta) => {
                        let id = meta.e_tag.unwrap_or_else(|| format!("size{}", meta.size));
                        let t = meta.last_modified.timestamp_millis();
                        write_id = Some(format!("v2-{id}@{t}"));
                    }
                    // An S3 GET of a key in a missing bucket is also a 404: ask the bucket.
                    Err(_) => {
                        return Err(match runtime().block_on(store.list_with_delimiter(None)) {
                            Err(e) if is_no_such_bucket(&e) => no_bucket(url, bucket, host),
                            _ => StoreError::NotACube(url.to_string()),
                        })
                    }
                }
            }
            Err(e) => return Err(fail("zarr.json", &e)),
        }
    }
    let net = wrap_object_store(store.clone());
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
        root_doc,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_id_is_read_from_group_attributes() {
        let doc = br#"{"zarr_format":3,"node_type":"group","attributes":{"chunkcube":{"write_id":"abc-1"}}}"#;
        assert_eq!(write_id_of(doc).as_deref(), Some("abc-1"));
        assert_eq!(write_id_of(br#"{"attributes":{}}"#), None);
        assert_eq!(write_id_of(b"not json"), None);
    }
}
