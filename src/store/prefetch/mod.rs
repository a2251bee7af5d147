//! A storage layer for remote stores that fetches announced chunk objects concurrently, ahead
//! of the decoding workers, and serves `get` from the prefetched bytes.
//!
//! - [`PrefetchStore::prefetch`] starts one fetch per announced key on the I/O runtime
//!   ([`crate::store::runtime`]), under ONE process-wide cap of requests in flight (default 3× the
//!   cores, at least 8; `CHUNKCUBE_S3_CONCURRENCY`, see [`crate::store::tuning`]), and only while the prefetched-but-unconsumed
//!   bytes stay under a bound (default 256 MiB; `CHUNKCUBE_S3_PREFETCH_BYTES`); keys beyond it
//!   are skipped and read directly when needed.
//! - [`ReadableStorageTraits::get`] takes a prefetched entry (removing it), waits for the
//!   in-flight fetch of that key, or fetches directly (also under the cap). A rayon worker only
//!   ever blocks on the key it needs. An error of a prefetch surfaces at the `get` of that key,
//!   naming the key.
//! - Keys already consumed recently are not prefetched again (the executor's decoded-chunk
//!   cache normally serves them), nor are whole shards of sharded arrays: their reads are
//!   byte ranges of the shard.
//! - [`PrefetchStore::prefetch_ranges`] announces byte ranges of objects instead (the inner
//!   chunks of a shard, located through its index): ranges of one object less than
//!   [`COALESCE_GAP`] apart are fetched by ONE ranged GET of at most [`COALESCE_MAX`] bytes
//!   (larger single ranges alone), those GETs run concurrently under the same cap and byte bound,
//!   and `get_partial_many` serves each announced range once from the fetched bytes, waiting for
//!   an in-flight one; ranges never announced are fetched directly, under the cap.
//! - Writes through the layer drop any prefetched or in-flight entry of the keys they touch.

mod coalesce;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use coalesce::coalesce;

use super::runtime::runtime;
use super::tuning::{permits, tuning};
use state::{Entry, Fetched, Slot, State};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    ReadableWritableListableStorage, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes,
    StorePrefix, WritableStorageTraits,
};

/// Counters of the prefetch layer (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefetchStats {
    /// Fetches started by `prefetch`.
    pub prefetched: u64,
    /// `get`s served from a prefetched or in-flight entry.
    pub hits: u64,
    /// `get`s that fetched directly.
    pub direct: u64,
    /// Announced keys skipped because of the byte bound.
    pub skipped: u64,
    /// Ranged requests started by `prefetch_ranges` (each covers one or more ranges).
    pub range_requests: u64,
    /// Ranges those requests covered.
    pub ranges_prefetched: u64,
    /// Ranges served from prefetched bytes by `get_partial_many`.
    pub range_hits: u64,
    /// Ranges `get_partial_many` fetched directly (never announced, or skipped).
    pub range_direct: u64,
    /// Announced ranges skipped because of the byte bound.
    pub ranges_skipped: u64,
}

struct Shared {
    inner: ReadableWritableListableStorage,
    state: Mutex<State>,
    changed: Condvar,
    max_bytes: u64,
    stats: Mutex<PrefetchStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, f: impl FnOnce(&mut PrefetchStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }
}

/// The prefetching layer (see the module docs).
pub struct PrefetchStore {
    shared: Arc<Shared>,
}

impl PrefetchStore {
    /// Wrap `inner` with the configured byte bound ([`crate::store::RemoteTuning`]).
    pub fn new(inner: ReadableWritableListableStorage) -> Self {
        Self::with_bound(inner, tuning().prefetch_bytes)
    }

    /// Wrap `inner`, holding at most about `max_bytes` of prefetched, unconsumed data.
    pub fn with_bound(inner: ReadableWritableListableStorage, max_bytes: u64) -> Self {
        let state = State {
            mean_size: 1 << 20,
            ..State::default()
        };
        Self {
            shared: Arc::new(Shared {
                inner,
                state: Mutex::new(state),
                changed: Condvar::new(),
                max_bytes,
                stats: Mutex::new(PrefetchStats::default()),
            }),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> PrefetchStats {
        self.shared.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Bytes fetched ahead and not yet consumed.
    pub fn ready_bytes(&self) -> u64 {
        self.shared.lock().ready_bytes
    }

    /// Start fetching `keys` (chunk keys relative to the cube root) concurrently. Returns at
    /// once; never blocks on the network except to read an array's metadata the first time
    /// one of its chunks is announced (to leave shards alone).
    pub fn prefetch(&self, keys: Vec<String>) {
        let sh = &self.shared;
        let mut todo = Vec::new();
        {
            let mut st = sh.lock();
            if st.pending_bytes() >= sh.max_bytes {
                st.drop_stale();
            }
            let mut seen = HashSet::new();
            for key in keys {
                let slot = Slot::whole(&key);
                if !seen.insert(key.clone()) || st.known(&slot) {
                    continue;
                }
                let Some(array) = array_of(&key) else {
                    continue;
                };
                let sharded = match st.sharded.get(array) {
                    Some(&s) => s,
                    None => {
                        // Read the array metadata outside the lock.
                        let array = array.to_string();
                        drop(st);
                        let s = self.is_sharded(&array);
                        st = sh.lock();
                        st.sharded.insert(array, s);
                        s
                    }
                };
                if sharded || st.entries.contains_key(&slot) {
                    continue;
                }
                if st.pending_bytes() >= sh.max_bytes {
                    sh.bump(|s| s.skipped += 1);
                    continue;
                }
                let id = st.next_id;
                st.next_id += 1;
                st.in_flight += 1;
                st.entries.insert(slot, Entry::InFlight { id });
                todo.push((key, id));
            }
        }
        for (key, id) in todo {
            sh.bump(|s| s.prefetched += 1);
            let sh = self.shared.clone();
            runtime().spawn(async move {
                let permit = permits().clone().acquire_owned().await;
                let inner = sh.inner.clone();
                let k = key.clone();
                let value: Fetched =
                    match tokio::task::spawn_blocking(move || fetch(&inner, &k)).await {
                        Ok(v) => v,
                        Err(e) => Err(format!("GET '{key}': the fetch task failed: {e}")),
                    };
                drop(permit);
                let mut st = sh.lock();
                st.in_flight -= 1;
                let n = st.settle(Slot::whole(&key), id, value);
                if n > 0 {
                    st.mean_size = (st.mean_size * 7 + n) / 8;
                }
                drop(st);
                sh.changed.notify_all();
            });
        }
    }

    /// Start fetching byte ranges of objects (for example the inner chunks of shards), given
    /// as (key relative to the cube root, ranges). Ranges of one key are coalesced
    /// ([`coalesce`]) into few ranged requests that run concurrently under the global cap;
    /// ranges announced before, being fetched, or consumed recently are left out, and groups
    /// beyond the byte bound are skipped (read directly when needed). Returns at once.
    pub fn prefetch_ranges(&self, requests: Vec<(String, Vec<Range<u64>>)>) {
        let sh = &self.shared;
        let mut todo = Vec::new();
        {
            let mut st = sh.lock();
            if st.pending_bytes() >= sh.max_bytes {
                st.drop_stale();
            }
            for (key, ranges) in requests {
                let fresh: Vec<Range<u64>> = ranges
                    .into_iter()
                    .filter(|r| !st.known(&Slot::range(&key, r)))
                    .collect();
                for group in coalesce(&fresh) {
                    if st.pending_bytes() >= sh.max_bytes {
                        sh.bump(|s| s.ranges_skipped += group.len() as u64);
                        continue;
                    }
                    let end = group.iter().map(|r| r.end).max().unwrap_or(0);
                    let span = end - group[0].start;
                    let id = st.next_id;
                    st.next_id += 1;
                    st.in_flight_range_bytes += span;
                    for r in &group {
                        st.entries
                            .insert(Slot::range(&key, r), Entry::InFlight { id });
                    }
                    todo.push((key.clone(), group, span, id));
                }
            }
        }
        for (key, group, span, id) in todo {
            sh.bump(|s| {
                s.range_requests += 1;
                s.ranges_prefetched += group.len() as u64;
            });
            let sh = self.shared.clone();
            runtime().spawn(async move {
                let permit = permits().clone().acquire_owned().await;
                let inner = sh.inner.clone();
                let (k, g) = (key.clone(), group.clone());
                let values: Vec<Fetched> =
                    match tokio::task::spawn_blocking(move || fetch_ranges(&inner, &k, &g)).await {
                        Ok(v) => v,
                        Err(e) => {
                            let msg =
                                format!("GET '{key}' (byte ranges): the fetch task failed: {e}");
                            vec![Err(msg); group.len()]
                        }
                    };
                drop(permit);
                let mut st = sh.lock();
                st.in_flight_range_bytes -= span;
                for (r, value) in group.iter().zip(values) {
                    st.settle(Slot::range(&key, r), id, value);
                }
                drop(st);
                sh.changed.notify_all();
            });
        }
    }

    /// Whether the array at `path` stores shards (its metadata names `sharding_indexed`).
    fn is_sharded(&self, path: &str) -> bool {
        let Ok(key) = StoreKey::new(format!("{path}/zarr.json")) else {
            return true;
        };
        match self.shared.inner.get(&key) {
            Ok(Some(b)) => String::from_utf8_lossy(&b).contains("sharding_indexed"),
            // Unknown: do not prefetch what might be a whole shard.
            _ => true,
        }
    }

    fn invalidate_key(&self, key: &str) {
        let mut st = self.shared.lock();
        let slots: Vec<Slot> = st
            .entries
            .keys()
            .filter(|s| s.key == key)
            .cloned()
            .collect();
        for s in slots {
            st.drop_entry(&s);
        }
        st.recent_set.retain(|s| s.key != key);
        drop(st);
        self.shared.changed.notify_all();
    }

    fn invalidate_prefix(&self, prefix: &str) {
        let mut st = self.shared.lock();
        let keys: Vec<Slot> = st
            .entries
            .keys()
            .filter(|s| s.key.starts_with(prefix))
            .cloned()
            .collect();
        for k in keys {
            st.drop_entry(&k);
        }
        st.sharded.clear();
        st.recent.clear();
        st.recent_set.clear();
        drop(st);
        self.shared.changed.notify_all();
    }
}

/// The array path of a chunk key (`red/c/0/3/1` → `red`); `None` for non-chunk keys.
fn array_of(key: &str) -> Option<&str> {
    if key.ends_with("zarr.json") {
        return None;
    }
    key.find("/c/").map(|i| &key[..i])
}

/// One GET through the inner storage, with an error that names the key.
fn fetch(inner: &ReadableWritableListableStorage, key: &str) -> Fetched {
    let k = StoreKey::new(key).map_err(|e| format!("GET '{key}': {e}"))?;
    inner.get(&k).map_err(|e| format!("GET '{key}': {e}"))
}

/// Byte ranges of one object through the inner storage: one value per range (`Ok(None)` for
/// all when the object is absent), errors naming the key and the ranges. The object-store
/// storage below sends one group as ONE request (object_store's `get_ranges` merges ranges up
/// to 1 MiB apart, more than [`COALESCE_GAP`]); passing the ranges rather than their span lets
/// the disk cache keep each inner chunk on its own, whatever groups a later run forms.
fn fetch_ranges(
    inner: &ReadableWritableListableStorage,
    key: &str,
    ranges: &[Range<u64>],
) -> Vec<Fetched> {
    let what = || match (ranges.first(), ranges.last()) {
        (Some(a), Some(b)) => format!("GET '{key}' bytes {}..{}", a.start, b.end),
        _ => format!("GET '{key}'"),
    };
    let all = |v: Fetched| vec![v; ranges.len()];
    let k = match StoreKey::new(key) {
        Ok(k) => k,
        Err(e) => return all(Err(format!("{}: {e}", what()))),
    };
    let byte_ranges = ranges
        .iter()
        .map(|r| ByteRange::FromStart(r.start, Some(r.end - r.start)));
    match inner.get_partial_many(&k, Box::new(byte_ranges)) {
        Ok(None) => all(Ok(None)),
        Ok(Some(parts)) => {
            let mut out: Vec<Fetched> = parts
                .map(|p| p.map(Some).map_err(|e| format!("{}: {e}", what())))
                .collect();
            if out.len() != ranges.len() {
                let msg = format!(
                    "{}: {} parts for {} ranges",
                    what(),
                    out.len(),
                    ranges.len()
                );
                out = all(Err(msg));
            }
            out
        }
        Err(e) => all(Err(format!("{}: {e}", what()))),
    }
}

impl ReadableStorageTraits for PrefetchStore {
    fn get(&self, key: &StoreKey) -> Result<Option<Bytes>, StorageError> {
        let sh = &self.shared;
        let k = key.as_str();
        let slot = Slot::whole(k);
        let mut st = sh.lock();
        let found = loop {
            match st.entries.get(&slot) {
                Some(Entry::Ready { .. }) => break st.take_ready(&slot),
                Some(Entry::InFlight { .. }) => {
                    st = sh.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                None => break None,
            }
        };
        st.remember(&slot);
        drop(st);
        if let Some(v) = found {
            sh.bump(|s| s.hits += 1);
            return v.map_err(StorageError::Other);
        }
        sh.bump(|s| s.direct += 1);
        let _permit = runtime().block_on(permits().clone().acquire_owned());
        fetch(&sh.inner, k).map_err(StorageError::Other)
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let sh = &self.shared;
        let k = key.as_str();
        let ranges: Vec<ByteRange> = byte_ranges.collect();
        // Only bounded ranges can have been announced.
        let slots: Vec<Option<Slot>> = ranges
            .iter()
            .map(|r| match r {
                ByteRange::FromStart(o, Some(n)) if *n > 0 => Some(Slot::range(k, &(*o..o + n))),
                _ => None,
            })
            .collect();
        let mut found: Vec<Option<Fetched>> = vec![None; ranges.len()];
        {
            let mut st = sh.lock();
            while slots
                .iter()
                .flatten()
                .any(|s| matches!(st.entries.get(s), Some(Entry::InFlight { .. })))
            {
                st = sh.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            for (f, s) in found.iter_mut().zip(&slots) {
                if let Some(s) = s {
                    *f = st.take_ready(s);
                    st.remember(s);
                }
            }
        }
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        let missing: Vec<usize> = (0..ranges.len()).filter(|&i| found[i].is_none()).collect();
        sh.bump(|s| {
            s.range_hits += hits;
            s.range_direct += missing.len() as u64;
        });
        if !missing.is_empty() {
            let _permit = runtime().block_on(permits().clone().acquire_owned());
            let want = missing.iter().map(|&i| ranges[i]).collect::<Vec<_>>();
            let Some(parts) = sh.inner.get_partial_many(key, Box::new(want.into_iter()))? else {
                return Ok(None);
            };
            for (&i, p) in missing.iter().zip(parts) {
                found[i] = Some(p.map(Some).map_err(|e| e.to_string()));
            }
        }
        let mut out = Vec::with_capacity(ranges.len());
        for f in found {
            match f {
                Some(Ok(Some(b))) => out.push(Ok(b)),
                // The object does not exist.
                Some(Ok(None)) => return Ok(None),
                Some(Err(msg)) => return Err(StorageError::Other(msg)),
                None => {
                    return Err(StorageError::Other(format!(
                        "GET '{k}': fewer byte ranges returned than asked for"
                    )))
                }
            }
        }
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.shared.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.shared.inner.supports_get_partial()
    }
}

impl WritableStorageTraits for PrefetchStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.invalidate_key(key.as_str());
        self.shared.inner.set(key, value)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.invalidate_key(key.as_str());
        self.shared.inner.set_partial_many(key, offset_values)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.invalidate_key(key.as_str());
        self.shared.inner.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.invalidate_prefix(prefix.as_str());
        self.shared.inner.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        self.shared.inner.supports_set_partial()
    }
}

impl ListableStorageTraits for PrefetchStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.shared.inner.list()
    }
    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.shared.inner.list_prefix(prefix)
    }
    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.shared.inner.list_dir(prefix)
    }
    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.shared.inner.size_prefix(prefix)
    }
}
