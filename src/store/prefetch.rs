//! A storage layer for remote stores that fetches announced chunk objects concurrently, ahead
//! of the decoding workers, and serves `get` from the prefetched bytes.
//!
//! - [`PrefetchStore::prefetch`] starts one fetch per announced key on the I/O runtime
//!   ([`super::s3::runtime`]), under ONE process-wide cap of requests in flight (default 3× the
//!   cores, at least 8; `CHUNKCUBE_S3_CONCURRENCY`), and only while the prefetched-but-unconsumed
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

use super::s3::runtime;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    ReadableWritableListableStorage, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes,
    StorePrefix, WritableStorageTraits,
};

/// Default bound of prefetched-but-unconsumed bytes.
pub const DEFAULT_PREFETCH_BYTES: u64 = 256 << 20;

/// How many recently consumed keys are remembered (and not prefetched again).
const RECENT_KEYS: usize = 8192;

/// Prefetched entries unconsumed for this long are dropped when room is needed.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// Announced ranges of one object closer than this are fetched by one request: reading the
/// bytes between them costs less than another round trip at S3 latency and bandwidth.
pub const COALESCE_GAP: u64 = 256 << 10;

/// A coalesced request spans at most this many bytes (a single larger range is fetched alone),
/// so the ranges of a large shard still spread over several concurrent requests.
pub const COALESCE_MAX: u64 = 8 << 20;

/// Group byte ranges of one object into requests: sorted by start, a range joins the current
/// group when the gap to it is below [`COALESCE_GAP`] and the group's span stays within
/// [`COALESCE_MAX`]. Empty ranges are left out; each group is in ascending order.
pub fn coalesce(ranges: &[Range<u64>]) -> Vec<Vec<Range<u64>>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.end > r.start).cloned().collect();
    sorted.sort_by_key(|r| (r.start, r.end));
    let mut groups: Vec<Vec<Range<u64>>> = Vec::new();
    let mut span = 0..0;
    for r in sorted {
        let joins = match groups.last() {
            Some(_) => {
                r.start < span.end + COALESCE_GAP
                    && r.end.max(span.end) - span.start <= COALESCE_MAX
            }
            None => false,
        };
        if joins {
            span.end = span.end.max(r.end);
            groups.last_mut().expect("a group").push(r);
        } else {
            span = r.clone();
            groups.push(vec![r]);
        }
    }
    groups
}

/// The process-wide cap of S3 requests in flight (prefetches and direct reads alike).
pub fn concurrency() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        std::env::var("CHUNKCUBE_S3_CONCURRENCY")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or((3 * cores).max(8))
    })
}

/// The bound of prefetched-but-unconsumed bytes (`CHUNKCUBE_S3_PREFETCH_BYTES`).
pub fn prefetch_bytes() -> u64 {
    std::env::var("CHUNKCUBE_S3_PREFETCH_BYTES")
        .ok()
        .and_then(|v| super::parse_bytes(&v))
        .unwrap_or(DEFAULT_PREFETCH_BYTES)
}

/// The one semaphore behind [`concurrency`].
fn permits() -> &'static Arc<tokio::sync::Semaphore> {
    static SEM: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    SEM.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(concurrency())))
}

type Fetched = Result<Option<Bytes>, String>;

/// What an entry holds: a whole object, or one byte range of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Slot {
    key: String,
    range: Option<(u64, u64)>,
}

impl Slot {
    fn whole(key: &str) -> Slot {
        Slot {
            key: key.to_string(),
            range: None,
        }
    }

    fn range(key: &str, r: &Range<u64>) -> Slot {
        Slot {
            key: key.to_string(),
            range: Some((r.start, r.end)),
        }
    }
}

enum Entry {
    /// A fetch is running; `id` tells it apart from a later fetch of the same key.
    InFlight { id: u64 },
    /// Fetched, not yet consumed.
    Ready { value: Fetched, at: Instant },
}

#[derive(Default)]
struct State {
    entries: HashMap<Slot, Entry>,
    /// Bytes of `Ready` entries.
    ready_bytes: u64,
    /// Whole-object fetches running.
    in_flight: usize,
    /// Bytes of ranged fetches running (known exactly, unlike whole objects).
    in_flight_range_bytes: u64,
    /// Running mean of fetched object sizes (estimates what in-flight fetches will hold).
    mean_size: u64,
    next_id: u64,
    recent: VecDeque<Slot>,
    recent_set: HashSet<Slot>,
    /// Array path → whether its chunks are shards (not prefetched).
    sharded: HashMap<String, bool>,
}

impl State {
    fn remember(&mut self, slot: &Slot) {
        if self.recent_set.insert(slot.clone()) {
            self.recent.push_back(slot.clone());
            if self.recent.len() > RECENT_KEYS {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
    }

    fn take_ready(&mut self, slot: &Slot) -> Option<Fetched> {
        if !matches!(self.entries.get(slot), Some(Entry::Ready { .. })) {
            return None;
        }
        match self.entries.remove(slot) {
            Some(Entry::Ready { value, .. }) => {
                self.ready_bytes -= value_len(&value);
                Some(value)
            }
            _ => None,
        }
    }

    /// Store a finished fetch, unless its slot was dropped or re-announced meanwhile (then it
    /// belongs to another fetch `id`). Returns the bytes now held.
    fn settle(&mut self, slot: Slot, id: u64, value: Fetched) -> u64 {
        if !matches!(self.entries.get(&slot), Some(Entry::InFlight { id: i }) if *i == id) {
            return 0;
        }
        let n = value_len(&value);
        self.ready_bytes += n;
        self.entries.insert(
            slot,
            Entry::Ready {
                value,
                at: Instant::now(),
            },
        );
        n
    }

    fn drop_entry(&mut self, slot: &Slot) {
        if let Some(Entry::Ready { value, .. }) = self.entries.remove(slot) {
            self.ready_bytes -= value_len(&value);
        }
    }

    /// Bytes held or about to be held by prefetches.
    fn pending_bytes(&self) -> u64 {
        self.ready_bytes + self.in_flight as u64 * self.mean_size + self.in_flight_range_bytes
    }

    /// Whether a slot is announced, being fetched, or was consumed recently.
    fn known(&self, slot: &Slot) -> bool {
        self.entries.contains_key(slot) || self.recent_set.contains(slot)
    }

    /// Drop ready entries nobody consumed for a long time (a cancelled run, a duplicate).
    fn drop_stale(&mut self) {
        let now = Instant::now();
        let stale: Vec<Slot> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Ready { at, .. } if now.duration_since(*at) > STALE_AFTER))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.drop_entry(&k);
        }
    }
}

fn value_len(v: &Fetched) -> u64 {
    match v {
        Ok(Some(b)) => b.len() as u64,
        _ => 0,
    }
}

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
    /// Wrap `inner` with the default byte bound ([`prefetch_bytes`]).
    pub fn new(inner: ReadableWritableListableStorage) -> Self {
        Self::with_bound(inner, prefetch_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use zarrs::storage::store::MemoryStore;

    /// A memory store that counts gets and partial gets.
    struct Counted {
        inner: MemoryStore,
        gets: AtomicU64,
        partials: AtomicU64,
    }
    impl ReadableStorageTraits for Counted {
        fn get(&self, key: &StoreKey) -> Result<Option<Bytes>, StorageError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key)
        }
        fn get_partial_many<'a>(
            &'a self,
            key: &StoreKey,
            r: ByteRangeIterator<'a>,
        ) -> Result<MaybeBytesIterator<'a>, StorageError> {
            self.partials.fetch_add(1, Ordering::SeqCst);
            self.inner.get_partial_many(key, r)
        }
        fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
            self.inner.size_key(key)
        }
        fn supports_get_partial(&self) -> bool {
            true
        }
    }
    impl WritableStorageTraits for Counted {
        fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
            self.inner.set(key, value)
        }
        fn set_partial_many(
            &self,
            key: &StoreKey,
            v: OffsetBytesIterator,
        ) -> Result<(), StorageError> {
            self.inner.set_partial_many(key, v)
        }
        fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
            self.inner.erase(key)
        }
        fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
            self.inner.erase_prefix(prefix)
        }
        fn supports_set_partial(&self) -> bool {
            false
        }
    }
    impl ListableStorageTraits for Counted {
        fn list(&self) -> Result<StoreKeys, StorageError> {
            self.inner.list()
        }
        fn list_prefix(&self, p: &StorePrefix) -> Result<StoreKeys, StorageError> {
            self.inner.list_prefix(p)
        }
        fn list_dir(&self, p: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
            self.inner.list_dir(p)
        }
        fn size_prefix(&self, p: &StorePrefix) -> Result<u64, StorageError> {
            self.inner.size_prefix(p)
        }
    }

    fn setup(n: usize, bound: u64) -> (Arc<Counted>, PrefetchStore) {
        let c = Arc::new(Counted {
            inner: MemoryStore::new(),
            gets: AtomicU64::new(0),
            partials: AtomicU64::new(0),
        });
        let k = |s: &str| StoreKey::new(s).unwrap();
        c.set(&k("red/zarr.json"), Bytes::from_static(b"{\"codecs\":[]}"))
            .unwrap();
        for i in 0..n {
            c.set(
                &k(&format!("red/c/0/0/{i}")),
                Bytes::from(vec![i as u8; 1000]),
            )
            .unwrap();
        }
        let p = PrefetchStore::with_bound(c.clone(), bound);
        (c, p)
    }

    fn wait_ready(p: &PrefetchStore, n: u64) {
        for _ in 0..500 {
            if p.ready_bytes() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("prefetch did not complete");
    }

    #[test]
    fn serves_prefetched_once_and_fetches_directly_after() {
        let (c, p) = setup(10, 64 << 20);
        let keys: Vec<String> = (0..10).map(|i| format!("red/c/0/0/{i}")).collect();
        p.prefetch(keys.clone());
        wait_ready(&p, 10_000);
        let metadata_gets = 1;
        assert_eq!(c.gets.load(Ordering::SeqCst), 10 + metadata_gets);
        for (i, k) in keys.iter().enumerate() {
            let v = p.get(&StoreKey::new(k).unwrap()).unwrap().unwrap();
            assert_eq!(v.as_ref(), &vec![i as u8; 1000][..]);
        }
        assert_eq!(
            c.gets.load(Ordering::SeqCst),
            11,
            "served from prefetched bytes"
        );
        assert_eq!(p.ready_bytes(), 0);
        // Re-announcing consumed keys does not fetch them again.
        p.prefetch(keys.clone());
        assert_eq!(p.stats().prefetched, 10);
        // A second get of a consumed key fetches directly.
        p.get(&StoreKey::new(&keys[0]).unwrap()).unwrap().unwrap();
        assert_eq!(c.gets.load(Ordering::SeqCst), 12);
        assert_eq!(p.stats().hits, 10);
        assert_eq!(p.stats().direct, 1);
    }

    #[test]
    fn byte_bound_skips_and_absent_keys_are_none() {
        let (_c, p) = setup(10, 2500);
        let keys: Vec<String> = (0..10).map(|i| format!("red/c/0/0/{i}")).collect();
        p.prefetch(keys.clone());
        // The first fetch is estimated at 1 MiB, so it alone fills the bound.
        assert!(p.stats().prefetched < 10);
        assert!(p.stats().skipped > 0);
        for (i, k) in keys.iter().enumerate() {
            let v = p.get(&StoreKey::new(k).unwrap()).unwrap().unwrap();
            assert_eq!(v[0], i as u8);
        }
        p.prefetch(vec!["red/c/9/9/9".into()]);
        assert!(p
            .get(&StoreKey::new("red/c/9/9/9").unwrap())
            .unwrap()
            .is_none());
    }

    #[test]
    fn writes_invalidate_prefetched_entries() {
        let (c, p) = setup(2, 64 << 20);
        p.prefetch(vec!["red/c/0/0/0".into()]);
        wait_ready(&p, 1000);
        let k = StoreKey::new("red/c/0/0/0").unwrap();
        p.set(&k, Bytes::from_static(b"new")).unwrap();
        assert_eq!(p.get(&k).unwrap().unwrap().as_ref(), b"new");
        let _ = c;
    }

    #[test]
    fn coalesce_merges_near_ranges_up_to_the_cap() {
        let far = 30 + COALESCE_GAP;
        let g = coalesce(&[10..20, 0..10, 25..30, far..far + 10, 100..100]);
        assert_eq!(g, vec![vec![0..10, 10..20, 25..30], vec![far..far + 10]]);
        let m = COALESCE_MAX;
        assert_eq!(coalesce(&[0..m - 10, m - 5..m]).len(), 1);
        assert_eq!(coalesce(&[0..m - 10, m - 5..m + 1]).len(), 2);
        let whole = 0..2 * m;
        assert_eq!(coalesce(std::slice::from_ref(&whole)), vec![vec![whole]]);
    }

    #[test]
    fn announced_ranges_are_fetched_together_and_served_once() {
        let (c, p) = setup(0, 64 << 20);
        let key = StoreKey::new("red/c/0/0/0").unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        c.set(&key, Bytes::from(data.clone())).unwrap();
        let far = 400 + COALESCE_GAP;
        p.prefetch_ranges(vec![(
            "red/c/0/0/0".into(),
            vec![0..100, 100..250, 300..400, far..far + 1],
        )]);
        let range = |o: u64, n: u64| -> Vec<u8> {
            let r = ByteRange::FromStart(o, Some(n));
            let mut it = p
                .get_partial_many(&key, Box::new(std::iter::once(r)))
                .unwrap()
                .unwrap();
            it.next().unwrap().unwrap().to_vec()
        };
        // The far range lies beyond the object: its group fails alone, at its own read.
        wait_ready(&p, 350);
        assert_eq!(
            c.partials.load(Ordering::SeqCst),
            2,
            "two groups, two requests"
        );
        assert_eq!(range(100, 150), data[100..250]);
        assert_eq!(p.ready_bytes(), 200);
        assert_eq!(range(0, 100), data[..100]);
        assert_eq!(range(300, 100), data[300..400]);
        assert_eq!(
            c.partials.load(Ordering::SeqCst),
            2,
            "served from prefetched bytes"
        );
        assert_eq!(p.ready_bytes(), 0);
        let e = p
            .get_partial_many(
                &key,
                Box::new(std::iter::once(ByteRange::FromStart(far, Some(1)))),
            )
            .err()
            .expect("out of bounds")
            .to_string();
        assert!(e.contains("red/c/0/0/0"), "{e}");
        // Consumed: announcing again fetches nothing; reading again fetches directly.
        p.prefetch_ranges(vec![(
            "red/c/0/0/0".into(),
            std::iter::once(0..100).collect(),
        )]);
        assert_eq!(p.stats().range_requests, 2);
        assert_eq!(range(0, 100), data[..100]);
        assert_eq!(c.partials.load(Ordering::SeqCst), 3);
        let s = p.stats();
        // Hits include the failed range: its error was the prefetched entry.
        assert_eq!((s.range_hits, s.range_direct), (4, 1), "{s:?}");
    }

    #[test]
    fn writes_drop_prefetched_ranges() {
        let (c, p) = setup(1, 64 << 20);
        p.prefetch_ranges(vec![(
            "red/c/0/0/0".into(),
            std::iter::once(0..10).collect(),
        )]);
        wait_ready(&p, 10);
        let k = StoreKey::new("red/c/0/0/0").unwrap();
        p.set(&k, Bytes::from(vec![7u8; 1000])).unwrap();
        assert_eq!(p.ready_bytes(), 0);
        let mut it = p
            .get_partial_many(
                &k,
                Box::new(std::iter::once(ByteRange::FromStart(0, Some(10)))),
            )
            .unwrap()
            .unwrap();
        assert_eq!(it.next().unwrap().unwrap().as_ref(), &[7u8; 10]);
        let _ = c;
    }
}
