//! A size-bounded on-disk cache of fetched chunk objects of a remote cube (`--cache-dir`).
//!
//! Layout: `CACHE/<fnv64 of endpoint|bucket/prefix>/<version>/{data,absent}/<key>`. The version
//! is the cube's `chunkcube.write_id` group attribute (fresh at every commit of a calc output; a
//! fingerprint of the inputs for an ingest) or, for cubes written by other tools, the ETag of
//! the root `zarr.json`, together with the root `zarr.json`'s last-modified time (so even a
//! re-commit under the same id gets a fresh version). A rewritten cube therefore never meets
//! the objects cached for its previous content.
//! Metadata (`zarr.json`) is never cached. Objects known to be absent (chunks never written,
//! e.g. all-nodata) are remembered too, so a second run does no GET at all for them. Byte ranges
//! read from an object never fetched whole (a shard's index and inner chunks) are cached as files
//! of their own under `ranges/<key>/`.
//!
//! Files are written to a temporary name and renamed, so a reader never sees a torn object.
//! When the cache grows beyond its bound, the least recently used files (by modification time,
//! refreshed on hits) are removed until it is under 90% of it. Cache I/O errors never fail a
//! read: the object is then fetched from the store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    ReadableWritableListableStorage, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes,
    StorePrefix, WritableStorageTraits,
};

/// Default bound of the on-disk cache.
pub(crate) const DEFAULT_CACHE_BYTES: u64 = 10 << 30;

/// FNV-1a, 64 bit: a stable, dependency-free hash for directory names.
pub(crate) fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A directory name for a write id (or ETag): readable, filesystem-safe and collision-free.
pub(crate) fn version_dir(write_id: &str) -> String {
    let clean: String = write_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(48)
        .collect();
    format!("{clean}-{:016x}", fnv64(write_id))
}

/// Counters of the cache (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCacheStats {
    /// Reads served from disk.
    pub hits: u64,
    /// Reads that went to the store.
    pub misses: u64,
    /// Files evicted.
    pub evicted: u64,
}

/// The caching layer over a remote cube's storage.
pub struct DiskCacheStore {
    inner: ReadableWritableListableStorage,
    /// The cache root (shared by all cubes, bounded as a whole).
    root: PathBuf,
    /// `root/<cube hash>/<write id>`.
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    /// Set by any write through this store: from then on, reads bypass the cache.
    bypass: AtomicBool,
    evicting: Mutex<()>,
    hits: AtomicU64,
    misses: AtomicU64,
    evicted: AtomicU64,
    seq: AtomicU64,
}

impl DiskCacheStore {
    /// Cache the objects of the cube `identity` (endpoint, bucket and prefix) at version
    /// `write_id` under `root`, keeping `root` under `max_bytes`.
    pub fn new(
        inner: ReadableWritableListableStorage,
        root: &Path,
        identity: &str,
        write_id: &str,
        max_bytes: u64,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let dir = root
            .join(format!("{:016x}", fnv64(identity)))
            .join(version_dir(write_id));
        std::fs::create_dir_all(&dir)?;
        let used = dir_size(root);
        Ok(Self {
            inner,
            root: root.to_path_buf(),
            dir,
            max_bytes,
            used: AtomicU64::new(used),
            bypass: AtomicBool::new(false),
            evicting: Mutex::new(()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            seq: AtomicU64::new(0),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> DiskCacheStats {
        DiskCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// The directory holding this cube version's objects.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `key` is cached (`data/` for objects, `absent/` for known-missing ones), or
    /// `None` if the key is not cacheable.
    fn paths(&self, key: &str) -> Option<(PathBuf, PathBuf)> {
        if self.bypass.load(Ordering::Relaxed)
            || key.ends_with("zarr.json")
            || key.ends_with(".tmp")
            || key.starts_with('/')
            || key
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return None;
        }
        Some((
            self.dir.join("data").join(key),
            self.dir.join("absent").join(key),
        ))
    }

    fn store_file(&self, path: &Path, bytes: &[u8]) {
        let Some(parent) = path.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("obj");
        let tmp = parent.join(format!(".{name}.{}.{n}.part", std::process::id()));
        let ok = std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        let used = self.used.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if used > self.max_bytes {
            self.evict();
        }
    }

    /// Remove the least recently used files until the cache is under 90% of its bound.
    fn evict(&self) {
        let Ok(_g) = self.evicting.try_lock() else {
            return;
        };
        let mut files = Vec::new();
        collect_files(&self.root, &mut files);
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let target = self.max_bytes / 10 * 9;
        files.sort_by_key(|f| f.0);
        for (_, size, path) in files {
            if total <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.used.store(total, Ordering::Relaxed);
    }
}

/// The file name of a cached byte range.
fn range_name(r: &ByteRange) -> String {
    match r {
        ByteRange::FromStart(o, Some(n)) => format!("r{o}-{n}"),
        ByteRange::FromStart(o, None) => format!("r{o}-end"),
        ByteRange::Suffix(n) => format!("s{n}"),
    }
}

/// Refresh a file's modification time (its LRU age) if it is older than a minute.
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let old = f
            .metadata()
            .and_then(|m| m.modified())
            .map(|m| m.elapsed().unwrap_or_default() > Duration::from_secs(60))
            .unwrap_or(true);
        if old {
            let _ = f.set_modified(SystemTime::now());
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<(SystemTime, u64, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            collect_files(&e.path(), out);
        } else if ft.is_file() {
            if let Ok(m) = e.metadata() {
                let t = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((t, m.len(), e.path()));
            }
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.iter().map(|f| f.1).sum()
}

impl ReadableStorageTraits for DiskCacheStore {
    fn get(&self, key: &StoreKey) -> Result<Option<Bytes>, StorageError> {
        let Some((data, absent)) = self.paths(key.as_str()) else {
            return self.inner.get(key);
        };
        if let Ok(b) = std::fs::read(&data) {
            touch(&data);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(Bytes::from(b)));
        }
        if absent.is_file() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let v = self.inner.get(key)?;
        // A write may have happened meanwhile: only cache what this version holds.
        if !self.bypass.load(Ordering::Relaxed) {
            match &v {
                Some(b) => self.store_file(&data, b),
                None => self.store_file(&absent, b""),
            }
        }
        Ok(v)
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let Some((data, absent)) = self.paths(key.as_str()) else {
            return self.inner.get_partial_many(key, byte_ranges);
        };
        let ranges: Vec<ByteRange> = byte_ranges.collect();
        // Byte ranges of a whole cached object are served from its file.
        if let Ok(b) = std::fs::read(&data) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            let b = Bytes::from(b);
            let size = b.len() as u64;
            let mut parts = Vec::new();
            for r in ranges {
                let (start, end) = (r.start(size), r.end(size));
                if start > end || end > size {
                    return Err(StorageError::Other(format!(
                        "byte range {start}..{end} out of bounds of '{}' ({size} bytes)",
                        key.as_str()
                    )));
                }
                parts.push(Ok(b.slice(start as usize..end as usize)));
            }
            return Ok(Some(Box::new(parts.into_iter())));
        }
        if absent.is_file() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        // Ranges read before (a shard's index and inner chunks) have files of their own.
        let dir = self.dir.join("ranges").join(key.as_str());
        let files: Vec<PathBuf> = ranges.iter().map(|r| dir.join(range_name(r))).collect();
        let cached: Vec<Option<Vec<u8>>> = files.iter().map(|f| std::fs::read(f).ok()).collect();
        if cached.iter().all(Option::is_some) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            let parts: Vec<Result<Bytes, StorageError>> = cached
                .into_iter()
                .map(|b| Ok(Bytes::from(b.unwrap_or_default())))
                .collect();
            return Ok(Some(Box::new(parts.into_iter())));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let Some(it) = self
            .inner
            .get_partial_many(key, Box::new(ranges.clone().into_iter()))?
        else {
            if !self.bypass.load(Ordering::Relaxed) {
                self.store_file(&absent, b"");
            }
            return Ok(None);
        };
        let parts: Vec<Result<Bytes, StorageError>> = it.collect();
        if !self.bypass.load(Ordering::Relaxed) {
            for (p, f) in parts.iter().zip(&files) {
                if let Ok(b) = p {
                    self.store_file(f, b);
                }
            }
        }
        Ok(Some(Box::new(parts.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        if let Some((data, absent)) = self.paths(key.as_str()) {
            if let Ok(m) = std::fs::metadata(&data) {
                return Ok(Some(m.len()));
            }
            if absent.is_file() {
                return Ok(None);
            }
        }
        self.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

impl WritableStorageTraits for DiskCacheStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.bypass.store(true, Ordering::Relaxed);
        self.inner.set(key, value)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.bypass.store(true, Ordering::Relaxed);
        self.inner.set_partial_many(key, offset_values)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.bypass.store(true, Ordering::Relaxed);
        self.inner.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.bypass.store(true, Ordering::Relaxed);
        self.inner.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        self.inner.supports_set_partial()
    }
}

impl ListableStorageTraits for DiskCacheStore {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use zarrs::storage::store::MemoryStore;

    fn k(s: &str) -> StoreKey {
        StoreKey::new(s).unwrap()
    }

    fn mem() -> Arc<MemoryStore> {
        let m = Arc::new(MemoryStore::new());
        m.set(&k("zarr.json"), Bytes::from_static(b"{}")).unwrap();
        for i in 0..4u8 {
            m.set(&k(&format!("red/c/0/0/{i}")), Bytes::from(vec![i; 100]))
                .unwrap();
        }
        m
    }

    #[test]
    fn caches_chunks_not_metadata_and_is_keyed_by_write_id() {
        let tmp = tempfile::tempdir().unwrap();
        let m = mem();
        let c = DiskCacheStore::new(m.clone(), tmp.path(), "ep|b/p", "w1", 1 << 20).unwrap();
        assert_eq!(c.get(&k("red/c/0/0/1")).unwrap().unwrap()[0], 1);
        assert!(c.get(&k("red/c/0/0/9")).unwrap().is_none());
        c.get(&k("zarr.json")).unwrap().unwrap();
        assert_eq!(c.stats().misses, 2);
        // The store changes behind the cache's back: the same version serves the cached bytes
        // (and the cached absence); a new write id sees the new bytes.
        m.set(&k("red/c/0/0/1"), Bytes::from(vec![7; 100])).unwrap();
        m.set(&k("red/c/0/0/9"), Bytes::from(vec![9; 100])).unwrap();
        let c1 = DiskCacheStore::new(m.clone(), tmp.path(), "ep|b/p", "w1", 1 << 20).unwrap();
        assert_eq!(c1.get(&k("red/c/0/0/1")).unwrap().unwrap()[0], 1);
        assert!(c1.get(&k("red/c/0/0/9")).unwrap().is_none());
        assert_eq!(c1.stats().hits, 2);
        let c2 = DiskCacheStore::new(m.clone(), tmp.path(), "ep|b/p", "w2", 1 << 20).unwrap();
        assert_eq!(c2.get(&k("red/c/0/0/1")).unwrap().unwrap()[0], 7);
        assert_eq!(c2.get(&k("red/c/0/0/9")).unwrap().unwrap()[0], 9);
        // Another cube never shares entries.
        let c3 = DiskCacheStore::new(m, tmp.path(), "ep|b/other", "w1", 1 << 20).unwrap();
        assert_eq!(c3.get(&k("red/c/0/0/1")).unwrap().unwrap()[0], 7);
        // No metadata file in the cache, no temporary files left.
        let mut files = Vec::new();
        collect_files(tmp.path(), &mut files);
        assert!(files.iter().all(|f| !f.2.ends_with("zarr.json")));
        assert!(files
            .iter()
            .all(|f| !f.2.to_string_lossy().ends_with(".part")));
    }

    #[test]
    fn caches_byte_ranges_of_objects_read_in_parts() {
        let tmp = tempfile::tempdir().unwrap();
        let m = Arc::new(MemoryStore::new());
        let key = k("red/c/0/0/0");
        m.set(&key, Bytes::from((0..100u8).collect::<Vec<u8>>()))
            .unwrap();
        let read = |c: &DiskCacheStore| -> Vec<Vec<u8>> {
            let r: Vec<ByteRange> = vec![ByteRange::Suffix(10), ByteRange::FromStart(5, Some(3))];
            c.get_partial_many(&key, Box::new(r.into_iter()))
                .unwrap()
                .unwrap()
                .map(|b| b.unwrap().to_vec())
                .collect()
        };
        let c = DiskCacheStore::new(m.clone(), tmp.path(), "x", "w", 1 << 20).unwrap();
        let first = read(&c);
        assert_eq!(first, vec![(90..100u8).collect::<Vec<u8>>(), vec![5, 6, 7]]);
        m.set(&key, Bytes::from(vec![0u8; 100])).unwrap();
        let c = DiskCacheStore::new(m, tmp.path(), "x", "w", 1 << 20).unwrap();
        assert_eq!(read(&c), first, "served from the cached ranges");
        assert_eq!(c.stats().hits, 1);
        assert_eq!(c.stats().misses, 0);
    }

    #[test]
    fn evicts_oldest_beyond_the_bound_and_writes_bypass() {
        let tmp = tempfile::tempdir().unwrap();
        let m = mem();
        let c = DiskCacheStore::new(m.clone(), tmp.path(), "x", "w", 250).unwrap();
        for i in 0..4 {
            c.get(&k(&format!("red/c/0/0/{i}"))).unwrap().unwrap();
        }
        assert!(dir_size(tmp.path()) <= 250);
        assert!(c.stats().evicted >= 2);
        // A write through the layer turns the cache off for this store.
        c.set(&k("red/c/0/0/0"), Bytes::from_static(b"x")).unwrap();
        assert_eq!(c.get(&k("red/c/0/0/0")).unwrap().unwrap().as_ref(), b"x");
    }
}
