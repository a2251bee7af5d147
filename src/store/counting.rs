//! A storage layer that counts what passes through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    ReadableWritableListableStorage, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes,
    StorePrefix, WritableStorageTraits,
};

/// Counters of chunk traffic. Only chunk keys of data arrays count (not `zarr.json`, not the
/// coordinate arrays `x`, `y`, `time`, `spatial_ref`), matching `--stats`' `chunks_read`.
#[derive(Debug, Default)]
pub struct IoCounters {
    chunk_gets: AtomicU64,
    bytes_read: AtomicU64,
    chunk_puts: AtomicU64,
    bytes_written: AtomicU64,
    per_key: Mutex<HashMap<String, u32>>,
}

/// A snapshot of [`IoCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    /// Chunk objects fetched (whole or partial reads of one key count once each call).
    pub chunk_gets: u64,
    /// Encoded bytes fetched.
    pub bytes_read: u64,
    /// Chunk objects written.
    pub chunk_puts: u64,
    /// Encoded bytes written.
    pub bytes_written: u64,
}

impl IoCounters {
    /// Current values.
    pub fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            chunk_gets: self.chunk_gets.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            chunk_puts: self.chunk_puts.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// How often each chunk key was fetched since the last [`IoCounters::reset`].
    pub fn per_key(&self) -> HashMap<String, u32> {
        self.per_key.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Zero all counters.
    pub fn reset(&self) {
        self.chunk_gets.store(0, Ordering::Relaxed);
        self.bytes_read.store(0, Ordering::Relaxed);
        self.chunk_puts.store(0, Ordering::Relaxed);
        self.bytes_written.store(0, Ordering::Relaxed);
        if let Ok(mut m) = self.per_key.lock() {
            m.clear();
        }
    }

    /// Count a chunk value written (through the layers, or streamed into place).
    pub(crate) fn record_put(&self, key: &str, bytes: u64) {
        if is_data_chunk(key) {
            self.chunk_puts.fetch_add(1, Ordering::Relaxed);
            self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Count bytes written outside a store (the files of an export).
    pub(crate) fn record_file(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count a chunk value read outside the layers (streamed from its file).
    pub(crate) fn record_read(&self, key: &str, bytes: u64) {
        if let Ok(k) = StoreKey::new(key) {
            self.record_get(&k, bytes);
        }
    }

    fn record_get(&self, key: &StoreKey, bytes: u64) {
        if is_data_chunk(key.as_str()) {
            self.chunk_gets.fetch_add(1, Ordering::Relaxed);
            self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
            if let Ok(mut m) = self.per_key.lock() {
                *m.entry(key.as_str().to_string()).or_default() += 1;
            }
        }
    }
}

/// Whether a key is a chunk of a data (band) array: `band/c/…` (Zarr v3), or `band/0.0.0`
/// and `band/0/0/0` (Zarr v2).
pub fn is_data_chunk(key: &str) -> bool {
    if key.ends_with("zarr.json") || key.ends_with(".tmp") {
        return false;
    }
    // `band/c/...` (Zarr v3's default chunk keys); `band/chunkcube.manifest` is metadata;
    // Zarr v2 keys are `band/0.0.0` or `band/0/0/0`.
    let (first, rest) = key.split_once('/').unwrap_or((key, ""));
    let v3_chunk = rest.split('/').next() == Some("c");
    let v2_chunk = rest.starts_with(|c: char| c.is_ascii_digit())
        && rest
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b'.' || c == b'/');
    !matches!(first, "x" | "y" | "time" | "spatial_ref" | "time_bnds") && (v3_chunk || v2_chunk)
}

/// Counts reads and writes of an inner storage.
pub struct CountingStore {
    inner: ReadableWritableListableStorage,
    counters: std::sync::Arc<IoCounters>,
}

impl CountingStore {
    /// Wrap `inner`, counting into `counters`.
    pub fn new(
        inner: ReadableWritableListableStorage,
        counters: std::sync::Arc<IoCounters>,
    ) -> Self {
        Self { inner, counters }
    }
}

impl ReadableStorageTraits for CountingStore {
    fn get(&self, key: &StoreKey) -> Result<Option<Bytes>, StorageError> {
        let v = self.inner.get(key)?;
        if let Some(b) = &v {
            self.counters.record_get(key, b.len() as u64);
        }
        Ok(v)
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        // Collect so the bytes can be counted; partial reads are a handful of ranges.
        let Some(it) = self.inner.get_partial_many(key, byte_ranges)? else {
            return Ok(None);
        };
        let parts: Vec<Result<Bytes, StorageError>> = it.collect();
        let n: u64 = parts
            .iter()
            .map(|p| p.as_ref().map(|b| b.len() as u64).unwrap_or(0))
            .sum();
        self.counters.record_get(key, n);
        Ok(Some(Box::new(parts.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

impl WritableStorageTraits for CountingStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let n = value.len() as u64;
        self.inner.set(key, value)?;
        self.counters.record_put(key.as_str(), n);
        Ok(())
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.inner.set_partial_many(key, offset_values)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.inner.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.inner.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        self.inner.supports_set_partial()
    }
}

impl ListableStorageTraits for CountingStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.inner.list()
    }
    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.inner.list_prefix(prefix)
    }
    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.inner.list_dir(prefix)
    }
    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.inner.size_prefix(prefix)
    }
}
