//! Storage: a cube URL (local path or `s3://bucket/prefix`) becomes a zarrs storage handle,
//! wrapped in small layers that share one trait, the way object_store composes its stores:
//! - [`CountingStore`] counts chunk fetches and bytes (the `--stats` numbers and the tests'
//!   proof of chunk pruning);
//! - atomic writes for local directories (a chunk is written to `key.tmp` and renamed), so an
//!   interrupted write never leaves a torn chunk under its real key;
//! - for S3, object_store's client with retries configured in one place ([`RemoteTuning`]),
//!   prefetching ([`prefetch`]) and an on-disk cache ([`disk_cache`]) ([`remote`]).
//!
//! [`layout`] is the store format: how a cube's arrays, coordinates and CRS are laid out.

mod chunks;
#[cfg(test)]
mod conformance;
mod coords;
mod counting;
pub(crate) mod disk_cache;
mod dtype;
pub mod encode;
pub mod gate;
pub mod job;
pub mod jobplan;
pub mod layout;
pub mod limits;
mod local;
pub mod lock;
pub mod manifest;
pub mod packing;
pub(crate) mod prefetch;
pub mod redact;
pub mod remote;
pub mod replace;
pub mod rows;
mod runtime;
pub(crate) mod shard;
mod tuning;
mod v2;
mod values;
pub mod verify;
pub mod whole;

pub use chunks::{
    dim_index, format_bytes, grid_shape, parse_bytes, ChunkSpec, ChunkSpecError, DIMS, DIM_NAMES,
};
pub use counting::{is_data_chunk, CountingStore, IoCounters, IoSnapshot};
pub use disk_cache::{DiskCacheStats, DiskCacheStore};
pub use dtype::{DType, Element, Real};
pub use encode::ChunkWriter;
pub use local::LocalStore;
pub use prefetch::{PrefetchStats, PrefetchStore};
pub use redact::redact;
pub use rows::{ChunkRows, RowRead};
pub use runtime::{runtime, TokioBlockOn};
pub use tuning::{tuning, RemoteTuning, DEFAULT_PREFETCH_BYTES};
pub use values::{Values, ValuesOf};

use std::path::PathBuf;
use std::sync::Arc;
use zarrs::storage::storage_adapter::atomic_write::AtomicWriteStorageAdapter;
use zarrs::storage::{ReadableWritableListableStorage, StoreKey, StorePrefix};

/// Errors of opening and using stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A URL that is neither a local path nor `s3://bucket/prefix`.
    #[error("invalid cube URL '{url}': {reason}")]
    BadUrl {
        /// The URL as given (never carries secrets: credentials come from the environment).
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The location holds no cube.
    #[error("{0} is not a chunkcube cube (no Zarr group metadata found: zarr.json, or .zgroup for Zarr v2)")]
    NotACube(String),
    /// The S3 bucket of a cube URL does not exist.
    #[error("S3 bucket '{bucket}' does not exist (endpoint {endpoint}, cube {url})")]
    NoSuchBucket {
        /// Cube URL.
        url: String,
        /// The bucket.
        bucket: String,
        /// The endpoint host asked.
        endpoint: String,
    },
    /// A storage operation failed.
    #[error("storage error at {url} key '{key}': {msg}")]
    Io {
        /// Cube URL.
        url: String,
        /// The key involved.
        key: String,
        /// What went wrong.
        msg: String,
    },
    /// Another run is writing the same output.
    #[error("{url} is being written by another run ({holder}); wait for it to finish, or remove {url}.chunkcube-lock if that run is gone")]
    Locked {
        /// The output URL.
        url: String,
        /// Who holds the lock.
        holder: String,
    },
    /// The data variables hold supported dimensions in an order chunkcube does not read.
    #[error("cannot read {url}: {msg}")]
    DimOrder {
        /// Cube URL.
        url: String,
        /// The variable, its order, the supported one and the rewrite that gives it.
        msg: String,
    },
    /// The cube's metadata is malformed.
    #[error("malformed cube metadata at {url} '{key}': {msg}")]
    Metadata {
        /// Cube URL.
        url: String,
        /// The metadata key.
        key: String,
        /// What is wrong.
        msg: String,
    },
}

/// Where a cube lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket and key prefix (no leading or trailing slash).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket.
        prefix: String,
    },
}

impl Location {
    /// Whether writing a cube at `self` would touch the cube at `other` (or the reverse):
    /// the same location, or one inside the other. Local paths are compared canonically
    /// (symlinks and `..` resolved, as far as they exist).
    pub fn overlaps(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Local(a), Location::Local(b)) => {
                let (a, b) = (canonical_path(a), canonical_path(b));
                a.starts_with(&b) || b.starts_with(&a)
            }
            (
                Location::S3 {
                    bucket: ba,
                    prefix: pa,
                },
                Location::S3 {
                    bucket: bb,
                    prefix: pb,
                },
            ) => {
                let inside =
                    |a: &str, b: &str| b.is_empty() || a == b || a.starts_with(&format!("{b}/"));
                ba == bb && (inside(pa, pb) || inside(pb, pa))
            }
            _ => false,
        }
    }

    /// Parse a cube URL: `s3://bucket/prefix` or a local path (optionally `file://`).
    pub fn parse(url: &str) -> Result<Location, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty()
                || !bucket
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            {
                return Err(bad(
                    "the bucket name must be non-empty lowercase letters, digits, '-' or '.'",
                ));
            }
            if url.contains('?') || url.contains('#') || url.contains('@') {
                return Err(bad("query strings, fragments and credentials do not belong in the URL; use the AWS_* environment"));
            }
            let prefix = prefix.trim_matches('/');
            // Keys must reach the bucket exactly as given (object_store percent-encodes what
            // it considers unsafe, and other tools would not find such keys), so only S3's
            // safe characters.
            if let Some(c) = prefix
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || "-_.=+!'()/".contains(*c)))
            {
                return Err(bad(&format!(
                    "the prefix contains {:?}; use letters, digits and - _ . = + ! ' ( ) between '/' (other characters are stored percent-encoded, where other tools do not find them)",
                    c
                )));
            }
            if prefix.split('/').any(|p| p == ".." || p == ".") || prefix.contains("//") {
                return Err(bad(
                    "the prefix may not contain '.', '..' or empty segments",
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(bad("only local paths and s3://bucket/prefix are supported"));
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        Ok(Location::Local(PathBuf::from(path)))
    }
}

/// Options of opening a store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// For remote cubes: an on-disk cache of fetched chunk objects (`--cache-dir`).
    pub cache_dir: Option<PathBuf>,
    /// Size bound of the on-disk cache in bytes (default 10 GiB).
    pub cache_bytes: Option<u64>,
    /// Local cubes: write chunks without syncing each to disk; the cube is synced once before
    /// its commit point. For writes that are redone from scratch when interrupted (results of
    /// `calc`) and for ingests whose chunks carry a crc32c (a resumed run verifies each one it
    /// finds); an ingest without checksums syncs every chunk, since its resume trusts them.
    pub deferred_sync: bool,
}

/// An open store: the layered zarrs storage of one cube plus its I/O counters.
#[derive(Clone)]
pub struct Store {
    url: String,
    location: Location,
    storage: ReadableWritableListableStorage,
    counters: Arc<IoCounters>,
    /// Remote cubes: the prefetch and disk-cache layers.
    remote: Option<remote::Remote>,
    /// Local cubes written without a sync per chunk (see [`StoreOptions::deferred_sync`]).
    pub(crate) deferred: bool,
    /// A remote cube whose group metadata names a data prefix (written by an isolated
    /// overwrite, see [`replace`]): the cube root, while this store reads the data prefix.
    root: Option<Arc<Store>>,
    /// The cube's identity as its root metadata said when it was opened for reading
    /// (remote cubes; see [`replace::identity_of`]).
    identity: Option<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

impl Store {
    /// Open the store at `url`. With `create`, a missing local directory is created; without,
    /// a missing local directory is an error ([`StoreError::NotACube`]).
    pub fn open(url: &str, create: bool) -> Result<Store, StoreError> {
        Store::open_with(url, create, &StoreOptions::default())
    }

    /// Open with options (see [`StoreOptions`]). For `s3://` cubes opened for reading, the
    /// root `zarr.json` is probed first (a missing bucket, an unreachable endpoint or a prefix
    /// without a cube fail here, clearly); `cache_dir` adds the on-disk chunk cache.
    pub fn open_with(url: &str, create: bool, opts: &StoreOptions) -> Result<Store, StoreError> {
        let location = Location::parse(url)?;
        let io = |key: &str, msg: String| StoreError::Io {
            url: url.to_string(),
            key: key.to_string(),
            msg,
        };
        let mut remote = None;
        let base: ReadableWritableListableStorage = match &location {
            Location::Local(path) => {
                if !path.exists() {
                    if !create {
                        return Err(StoreError::NotACube(url.to_string()));
                    }
                    std::fs::create_dir_all(path).map_err(|e| io("", e.to_string()))?;
                } else if !path.is_dir() {
                    return Err(StoreError::NotACube(url.to_string()));
                }
                let fs = if opts.deferred_sync {
                    LocalStore::new(path)
                } else {
                    LocalStore::durable(path)
                }
                .map_err(|e| io("", e.to_string()))?;
                Arc::new(AtomicWriteStorageAdapter::new(Arc::new(fs)))
            }
            Location::S3 { bucket, prefix } => {
                let o = remote::open_s3(url, bucket, prefix, create, opts)?;
                let root_doc = o.root_doc;
                remote = Some(o.remote);
                if let Some(doc) = root_doc {
                    let identity = replace::identity_of(&doc);
                    if let Some(data) = replace::data_prefix_of(&doc) {
                        // The data lives under the prefix the root names: read it there,
                        // and keep the root to tell a later replacement.
                        let data_url = replace::join_url(bucket, prefix, &data);
                        let root = Store::assemble(url, location.clone(), o.storage, remote);
                        let mut store = Store::open_with(&data_url, false, opts)?;
                        if store.root.is_some() {
                            return Err(StoreError::Metadata {
                                url: data_url,
                                key: "zarr.json".into(),
                                msg: "names a data prefix of its own (one level at most)".into(),
                            });
                        }
                        store.root = Some(Arc::new(root));
                        store.identity = identity;
                        return Ok(store);
                    }
                    let mut store = Store::assemble(url, location, o.storage, remote);
                    store.identity = identity;
                    return Ok(store);
                }
                o.storage
            }
        };
        let deferred = opts.deferred_sync && matches!(location, Location::Local(_));
        let mut store = Store::assemble(url, location, base, remote);
        store.deferred = deferred;
        Ok(store)
    }

    /// The cube root: this store, or for a remote cube whose data lives under a prefix its
    /// group metadata names, the store of the root (where that metadata is replaced).
    pub fn root(&self) -> &Store {
        self.root.as_deref().unwrap_or(self)
    }

    /// The cube's identity now (its root metadata's write id and data prefix); `None` for
    /// stores other tools wrote (nothing to compare) or a location without a cube.
    pub fn current_identity(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .root()
            .get("zarr.json")?
            .and_then(|b| replace::identity_of(&b)))
    }

    /// The cube's identity when this store was opened (remote cubes: from the metadata the
    /// open read; local ones: read now).
    pub fn opened_identity(&self) -> Result<Option<String>, StoreError> {
        match &self.identity {
            Some(i) => Ok(Some(i.clone())),
            None => self.current_identity(),
        }
    }

    /// A remote store over any `object_store` (tests wrap the S3 client with fault injection
    /// this way): the same layers as `s3://` (prefetch, optional disk cache, counting) over
    /// `store`, which must be the cube root. `url` must be an `s3://` URL naming the cube.
    pub fn from_object_store(
        url: &str,
        store: Arc<dyn object_store::ObjectStore>,
        create: bool,
        opts: &StoreOptions,
    ) -> Result<Store, StoreError> {
        let location = Location::parse(url)?;
        let Location::S3 { bucket, .. } = &location else {
            return Err(StoreError::BadUrl {
                url: url.to_string(),
                reason: "an object store is opened under an s3://bucket/prefix URL".into(),
            });
        };
        let identity = format!("{store}|{url}");
        let o = remote::open_layers(url, store, bucket, "object store", &identity, create, opts)?;
        Ok(Store::assemble(url, location, o.storage, Some(o.remote)))
    }

    fn assemble(
        url: &str,
        location: Location,
        base: ReadableWritableListableStorage,
        remote: Option<remote::Remote>,
    ) -> Store {
        let counters = Arc::new(IoCounters::default());
        let storage: ReadableWritableListableStorage =
            Arc::new(CountingStore::new(base, counters.clone()));
        Store {
            url: url.to_string(),
            location,
            storage,
            counters,
            remote,
            deferred: false,
            root: None,
            identity: None,
        }
    }

    /// Announce chunk keys about to be read, so a remote store can fetch them concurrently
    /// ahead of the decoding workers (see [`prefetch`]); a local store has the kernel read
    /// their files into the page cache in the background.
    pub fn prefetch(&self, keys: Vec<String>) {
        if let Some(r) = &self.remote {
            r.prefetch.prefetch(keys);
        } else if let Location::Local(root) = &self.location {
            local::advise_willneed(root, keys);
        }
    }

    /// Announce byte ranges of objects about to be read (the inner chunks of shards), as
    /// (key, ranges): a remote store fetches nearby ranges of one object with one ranged GET,
    /// concurrently (see [`prefetch`]). Local stores ignore it.
    pub fn prefetch_ranges(&self, requests: Vec<(String, Vec<std::ops::Range<u64>>)>) {
        if let Some(r) = &self.remote {
            r.prefetch.prefetch_ranges(requests);
        }
    }

    /// The prefetch and disk-cache layers of a remote store.
    pub fn remote(&self) -> Option<&remote::Remote> {
        self.remote.as_ref()
    }

    /// Whether the store is remote (S3): reads benefit from prefetching and caching.
    pub fn is_remote(&self) -> bool {
        matches!(self.location, Location::S3 { .. })
    }

    /// The URL this store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the store lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The layered zarrs storage.
    pub fn storage(&self) -> ReadableWritableListableStorage {
        self.storage.clone()
    }

    /// The I/O counters of this store.
    pub fn counters(&self) -> &Arc<IoCounters> {
        &self.counters
    }

    /// Read a whole value; `None` if absent.
    pub fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        let k = self.key(key)?;
        self.storage.get(&k).map_err(|e| self.io_err(key, e))
    }

    /// Write a whole value.
    pub fn set(&self, key: &str, value: bytes::Bytes) -> Result<(), StoreError> {
        let k = self.key(key)?;
        self.storage.set(&k, value).map_err(|e| self.io_err(key, e))
    }

    /// Make everything written so far durable (local cubes: one filesystem sync; object
    /// stores: a completed PUT already is). Called just before a cube's commit point.
    pub fn sync(&self) -> Result<(), StoreError> {
        match &self.location {
            Location::Local(path) => local::sync_dir(path).map_err(|e| self.io_err("", e)),
            Location::S3 { .. } => Ok(()),
        }
    }

    /// Delete a value (absent is fine).
    pub fn erase(&self, key: &str) -> Result<(), StoreError> {
        let k = self.key(key)?;
        self.storage.erase(&k).map_err(|e| self.io_err(key, e))
    }

    /// Keys under a prefix (`""` for all), with their sizes in bytes.
    pub fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        if let Some(r) = &self.remote {
            // S3 listings carry the sizes: no HEAD per key.
            return remote::list_sizes(&r.object_store, prefix).map_err(|e| {
                self.io_err(
                    prefix,
                    zarrs::storage::StorageError::Other(redact::clean(&e.to_string())),
                )
            });
        }
        let p = StorePrefix::new(prefix).map_err(|e| self.io_err(prefix, e.into()))?;
        let keys = self
            .storage
            .list_prefix(&p)
            .map_err(|e| self.io_err(prefix, e))?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let size = self
                .storage
                .size_key(&k)
                .map_err(|e| self.io_err(k.as_str(), e))?
                .unwrap_or(0);
            out.push((k.as_str().to_string(), size));
        }
        Ok(out)
    }

    /// Delete everything under a prefix (`""` for the whole cube).
    pub fn erase_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let p = StorePrefix::new(prefix).map_err(|e| self.io_err(prefix, e.into()))?;
        self.storage
            .erase_prefix(&p)
            .map_err(|e| self.io_err(prefix, e))
    }

    fn key(&self, key: &str) -> Result<StoreKey, StoreError> {
        safe_key(key).map_err(|msg| self.io_err(key, zarrs::storage::StorageError::Other(msg)))
    }

    /// A [`StoreError::Io`] for `key`.
    pub fn io_err(&self, key: &str, e: zarrs::storage::StorageError) -> StoreError {
        StoreError::Io {
            url: self.url.clone(),
            key: key.to_string(),
            msg: e.to_string(),
        }
    }
}

/// `p` with its longest existing ancestor canonicalised and the rest appended (a path that
/// does not exist yet still compares right against one that does).
fn canonical_path(p: &std::path::Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// A store key that cannot escape the cube: relative, no `.`/`..` segments.
pub fn safe_key(key: &str) -> Result<StoreKey, String> {
    if key.starts_with('/')
        || key
            .split('/')
            .any(|p| p == ".." || p == "." || p.is_empty())
    {
        return Err(format!(
            "unsafe key '{key}': keys must stay inside the cube"
        ));
    }
    StoreKey::new(key).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::Location;

    fn loc(u: &str) -> Location {
        Location::parse(u).unwrap()
    }

    #[test]
    fn overlapping_locations() {
        for (a, b, want) in [
            ("s3://b/cube", "s3://b/cube", true),
            ("s3://b/cube/sub", "s3://b/cube", true),
            ("s3://b/cube", "s3://b/cube/sub", true),
            ("s3://b", "s3://b/cube", true),
            ("s3://b/cube2", "s3://b/cube", false),
            ("s3://c/cube", "s3://b/cube", false),
            ("s3://b/cube", "/tmp/b/cube", false),
        ] {
            assert_eq!(loc(a).overlaps(&loc(b)), want, "{a} vs {b}");
        }
        let t = tempfile::tempdir().unwrap();
        let cube = t.path().join("cube");
        std::fs::create_dir_all(&cube).unwrap();
        let p = |x: &std::path::Path| Location::Local(x.to_path_buf());
        assert!(p(&cube).overlaps(&p(&t.path().join("cube/../cube"))));
        assert!(p(&cube.join("not/yet")).overlaps(&p(&cube)));
        assert!(!p(&t.path().join("cube2")).overlaps(&p(&cube)));
        std::os::unix::fs::symlink(&cube, t.path().join("link")).unwrap();
        assert!(p(&t.path().join("link/x")).overlaps(&p(&cube)));
    }
}
