//! What a graph reads: any chunked `[time, y, x]` array behind the [`ChunkSource`] trait — a
//! stored band of a cube (`cube::BandReader`), an intermediate persisted by the executor, or a
//! synthetic array in tests. Graph and executor see only this trait, so they never depend on
//! how a cube is opened, and the planner can be tested over shapes alone.

use crate::store::{DType, IoCounters, RowRead, Values};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A boxed error from below (a codec, the store, the file system).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A chunk that could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{what} chunk '{key}': {source}")]
pub struct ReadError {
    /// What was read: `band 'red'`, `persisted result 3`.
    pub what: String,
    /// The store key of the chunk.
    pub key: String,
    /// Why.
    #[source]
    pub source: BoxError,
}

impl ReadError {
    /// An error reading chunk `key` of `what`.
    pub fn new(
        what: impl Into<String>,
        key: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        ReadError {
            what: what.into(),
            key: key.into(),
            source: source.into(),
        }
    }
}

/// What reading some chunks of a source costs, as far as the store's listing and indexes tell
/// without reading a chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCost {
    /// Encoded bytes to fetch.
    pub encoded_bytes: u64,
    /// Requests to the store (GETs or ranged GETs).
    pub requests: u64,
    /// Chunks that are not stored (read as fill, cost nothing).
    pub absent: u64,
}

/// A chunked `[time, y, x]` array the executor can read chunk by chunk.
pub trait ChunkSource: Send + Sync + std::fmt::Debug {
    /// Its name (a band name; shown in graphs and messages).
    fn name(&self) -> &str;
    /// Full shape `[time, y, x]`.
    fn shape(&self) -> [u64; 3];
    /// The unit of reading and decoding (the inner chunk of a sharded band).
    fn chunk_shape(&self) -> [u64; 3];
    /// Element type of the values read.
    fn dtype(&self) -> DType;
    /// The value that means "missing" (NaN is always missing in float sources).
    fn nodata(&self) -> Option<f64>;
    /// A process-unique identity (cache keys), from [`next_uid`].
    fn uid(&self) -> usize;
    /// The store key holding chunk `idx` (for messages).
    fn chunk_key(&self, idx: [u64; 3]) -> String;
    /// Read and decode chunk `idx`: the full chunk shape, fill beyond the array edge.
    fn read_chunk(&self, idx: [u64; 3]) -> Result<Arc<Values>, ReadError>;
    /// The bytes one open row reader of a chunk holds ([`ChunkSource::open_rows`]), when this
    /// source's chunks can be read front to back as a stream of rows; `None`: whole chunks
    /// only (sharded, persisted, or a codec chain that does not stream).
    fn rows_bytes(&self) -> Option<u64> {
        None
    }
    /// Open chunk `idx` to read front to back in C order (raw little-endian values of its
    /// dtype, the full chunk shape, fill beyond the array edge), verified when finished.
    fn open_rows(&self, idx: [u64; 3]) -> Result<Box<dyn RowRead>, ReadError> {
        Err(ReadError::new(
            format!("'{}'", self.name()),
            self.chunk_key(idx),
            "cannot be read as a stream of rows",
        ))
    }
    /// Announce chunks about to be read, so a remote source fetches them concurrently ahead
    /// of the workers. Returns at once.
    fn prefetch(self: Arc<Self>, _idxs: Vec<[u64; 3]>) {}
    /// Whether reads go over the network (worth prefetching).
    fn is_remote(&self) -> bool {
        false
    }
    /// Where the store behind it lives, if it is a stored cube (a result must never be
    /// written over or inside its own input).
    fn location(&self) -> Option<&crate::store::Location> {
        None
    }
    /// The I/O counters of the store behind it (`bytes_read` in the statistics).
    fn counters(&self) -> Option<Arc<IoCounters>> {
        None
    }
    /// Whether this is an intermediate the executor persisted (held in memory or spilled):
    /// its reads are not stored-chunk reads, and never worth caching again.
    fn is_persisted(&self) -> bool {
        false
    }
    /// The array's attributes as stored (CF `cell_methods`, `long_name`, `units`…), so a
    /// result written from it can say what its values already are; `None`: it has none.
    fn attributes(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        None
    }
    /// What reading `idxs` costs (bytes, requests, absent chunks), told without reading a
    /// chunk. The default counts one request per chunk and no bytes.
    fn read_cost(&self, idxs: &[[u64; 3]]) -> ReadCost {
        ReadCost {
            encoded_bytes: 0,
            requests: idxs.len() as u64,
            absent: 0,
        }
    }
}

static NEXT_UID: AtomicUsize = AtomicUsize::new(1);

/// A fresh process-unique source identity (never reused, unlike an address, so a cache can
/// never confuse two sources).
pub fn next_uid() -> usize {
    NEXT_UID.fetch_add(1, Ordering::Relaxed)
}

/// Decoded bytes of one chunk of `src`.
pub fn chunk_bytes(src: &dyn ChunkSource) -> u64 {
    src.chunk_shape().iter().product::<u64>() * src.dtype().size() as u64
}

/// A stored chunk index, the window inside that chunk, and the window inside the region.
pub type ChunkPiece = ([u64; 3], [Range<u64>; 3], [Range<u64>; 3]);

/// For each chunk of `src` under `region` (cube indices less `offset`): the chunk index, the
/// window inside the chunk, and the window inside the region.
pub fn chunk_pieces(
    src: &dyn ChunkSource,
    offset: [u64; 3],
    region: &[Range<u64>; 3],
) -> Vec<ChunkPiece> {
    let c = src.chunk_shape();
    let abs: [Range<u64>; 3] =
        std::array::from_fn(|i| region[i].start + offset[i]..region[i].end + offset[i]);
    if abs.iter().any(|r| r.is_empty()) {
        return Vec::new();
    }
    let cr: [Range<u64>; 3] =
        std::array::from_fn(|i| abs[i].start / c[i]..(abs[i].end - 1) / c[i] + 1);
    let mut out = Vec::new();
    for t in cr[0].clone() {
        for y in cr[1].clone() {
            for x in cr[2].clone() {
                let idx = [t, y, x];
                let inner: [Range<u64>; 3] = std::array::from_fn(|i| {
                    let c0 = idx[i] * c[i];
                    abs[i].start.max(c0) - c0..abs[i].end.min(c0 + c[i]) - c0
                });
                let dst: [Range<u64>; 3] = std::array::from_fn(|i| {
                    let c0 = idx[i] * c[i];
                    abs[i].start.max(c0) - abs[i].start..abs[i].end.min(c0 + c[i]) - abs[i].start
                });
                out.push((idx, inner, dst));
            }
        }
    }
    out
}
