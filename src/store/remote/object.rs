//! zarrs storage over any `object_store` ([`ObjectStoreStorage`]), and listings with sizes.

use super::super::redact::clean;
use super::super::runtime::{runtime, TokioBlockOn};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use std::sync::Arc;
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

/// zarrs storage over any object store (no prefetching, caching or counting): see
/// [`ObjectStoreStorage`].
pub fn wrap_object_store(store: Arc<dyn ObjectStore>) -> ReadableWritableListableStorage {
    Arc::new(ObjectStoreStorage::new(store))
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

/// Runs a GET as a task of the runtime's workers, which poll the body as it arrives, and
/// blocks the caller until it is complete: the calling thread is woken once. Polled by the
/// caller (block_on), every arriving TCP segment woke one of up to 8 blocked threads; this way
/// bench/s3.sh's client needs ~40% fewer context switches and a third less CPU (issue 18).
/// The outer error is the task failing (a panic in it), the inner one the request's.
fn on_workers<T: Send + 'static>(
    request: impl std::future::Future<Output = Result<T, object_store::Error>> + Send + 'static,
) -> Result<Result<T, object_store::Error>, StorageError> {
    TokioBlockOn
        .block_on(runtime().spawn(request))
        .map_err(|e| StorageError::Other(format!("GET task failed: {e}")))
}

impl ReadableStorageTraits for ObjectStoreStorage {
    fn get(&self, key: &StoreKey) -> Result<Option<Bytes>, StorageError> {
        let path = ObjectPath::from(key.as_str());
        let store = self.store.clone();
        match on_workers(async move { store.get(&path).await?.bytes().await })? {
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
        // On the runtime's workers, as `get` (woken once, not per arriving segment).
        let (store, rs) = (self.store.clone(), ranges.clone());
        let r = on_workers(async move {
            let ranges = rs;
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
                    for bytes in store.get_ranges(&path, &b).await? {
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
                                out.push(store.get(&path).await?.bytes().await?);
                                continue;
                            }
                            ByteRange::FromStart(o, None) => GetRange::Offset(*o),
                            ByteRange::Suffix(n) => GetRange::Suffix(*n),
                        };
                        let opts = GetOptions {
                            range: Some(range),
                            ..GetOptions::default()
                        };
                        out.push(store.get_opts(&path, opts).await?.bytes().await?);
                    }
                }
            }
            Ok::<_, object_store::Error>(out)
        })?;
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
