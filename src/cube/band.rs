//! Reading stored chunks of one band: the only place band chunks are fetched and decoded.

use super::{CubeError, Values};
use crate::store::layout::BandMeta;
use crate::store::{DType, Store};
use crate::with_dtype;
use std::sync::Arc;
use zarrs::array::{Array, ArrayShardedReadableExt, ArrayShardedReadableExtCache};
use zarrs::storage::ReadableWritableListableStorageTraits;

/// One band of an open cube: its metadata and the zarrs array over the cube's store.
pub struct BandReader {
    meta: BandMeta,
    store: Store,
    array: Array<dyn ReadableWritableListableStorageTraits>,
    shard_cache: Option<ArrayShardedReadableExtCache>,
    uid: usize,
}

static NEXT_UID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

impl std::fmt::Debug for BandReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BandReader({} of {})", self.meta.name, self.store.url())
    }
}

impl BandReader {
    /// Open band `meta` of `store` (metadata only).
    pub fn open(store: &Store, meta: BandMeta) -> Result<Arc<BandReader>, CubeError> {
        let array = crate::store::layout::open_band_array(store, &meta.name)?;
        let shard_cache = meta
            .inner_chunk_shape
            .map(|_| ArrayShardedReadableExtCache::new(&array));
        Ok(Arc::new(BandReader {
            meta,
            store: store.clone(),
            array,
            shard_cache,
            uid: NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }))
    }

    /// Band name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }
    /// Band metadata.
    pub fn meta(&self) -> &BandMeta {
        &self.meta
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.meta.dtype
    }
    /// Nodata.
    pub fn nodata(&self) -> Option<f64> {
        self.meta.nodata
    }
    /// Full shape `[time, y, x]`.
    pub fn shape(&self) -> [u64; 3] {
        self.meta.shape
    }
    /// The unit of decoding (inner chunk when sharded).
    pub fn chunk_shape(&self) -> [u64; 3] {
        self.meta.read_chunk_shape()
    }
    /// The store this band lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// A process-unique identity of this band reader (cache keys); never reused, unlike an
    /// address, so a cache can never confuse two cubes.
    pub fn uid(&self) -> usize {
        self.uid
    }

    /// The store key holding a decode chunk (the shard key when sharded).
    pub fn chunk_key(&self, idx: [u64; 3]) -> String {
        match self.meta.inner_chunk_shape {
            None => self.array.chunk_key(&idx).to_string(),
            Some(inner) => {
                let outer = self.meta.chunk_shape;
                let s = [
                    idx[0] * inner[0] / outer[0],
                    idx[1] * inner[1] / outer[1],
                    idx[2] * inner[2] / outer[2],
                ];
                self.array.chunk_key(&s).to_string()
            }
        }
    }

    /// Fetch and decode one decode chunk (full chunk shape, fill beyond the array edge).
    pub fn read_chunk(&self, idx: [u64; 3]) -> Result<Values, CubeError> {
        let err = |e: zarrs::array::ArrayError| CubeError::Chunk {
            band: self.meta.name.clone(),
            key: self.chunk_key(idx),
            msg: e.to_string(),
        };
        with_dtype!(self.meta.dtype, T => {
            let a: ndarray::ArrayD<T> = match &self.shard_cache {
                None => self.array.retrieve_chunk(&idx).map_err(err)?,
                Some(cache) => self
                    .array
                    .retrieve_subchunk_opt(cache, &idx, &zarrs::array::CodecOptions::default())
                    .map_err(err)?,
            };
            Ok(Values::from(a))
        })
    }

    /// Encoded size of the object holding a chunk (from the store listing), if stored.
    pub fn stored_size(&self, idx: [u64; 3]) -> Option<u64> {
        let key = zarrs::storage::StoreKey::new(self.chunk_key(idx)).ok()?;
        self.store.storage().size_key(&key).ok().flatten()
    }
}
