//! Inner chunks of shards (zarr's `sharding_indexed` codec): where their encoded bytes lie in
//! a shard object, so they can be fetched as byte ranges (and nearby ranges coalesced) instead
//! of whole shards.
//!
//! A shard's index holds, per inner chunk in C order, `(offset, nbytes)` as two u64 (16 bytes
//! little-endian with the default `bytes` index codec), `(u64::MAX, u64::MAX)` for an inner
//! chunk never written (all fill), followed by what the index codecs add (normally a crc32c
//! checksum, which decoding the index verifies). It sits at the end of the shard unless
//! `index_location` is `start`. chunkcube writes inner chunks in C order (see [`super::layout`]),
//! so neighbouring inner chunks are usually adjacent bytes.
//!
//! Each shard's index is read once (a ranged GET) and kept, for a bounded number of shards.

use super::{Store, StoreError};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use zarrs::array::codec::{ShardingCodecConfiguration, ShardingIndexLocation};
use zarrs::array::{
    ArrayMetadata, ArrayToBytesCodecTraits, BytesRepresentation, CodecChain, CodecOptions,
    FillValue,
};
use zarrs::storage::byte_range::ByteRange;
use zarrs::storage::StoreKey;

/// Shard indexes kept per band before the oldest are forgotten (each is 16 bytes per inner
/// chunk); re-reading an index costs one ranged GET.
const MAX_INDEXES: usize = 16_384;

/// The decoded index of one shard: `None` when the shard object does not exist.
pub(crate) type ShardIndex = Option<Vec<(u64, u64)>>;

/// One shard's index once read, behind a lock that its first reader holds while reading.
type IndexCell = Arc<Mutex<Option<Arc<ShardIndex>>>>;

/// How one sharded band array lays out inner chunks in its shards.
pub(crate) struct ShardLayout {
    shard_shape: [u64; 3],
    inner_shape: [u64; 3],
    /// Inner chunks per shard along each axis.
    per_shard: [u64; 3],
    inner_codecs: Arc<CodecChain>,
    index_codecs: CodecChain,
    index_location: ShardingIndexLocation,
    /// Encoded size of an index in bytes.
    index_size: u64,
    /// Shard grid position → its index, behind a per-shard lock so concurrent readers of one
    /// shard read its index once while other shards are read concurrently.
    indexes: Mutex<HashMap<[u64; 3], IndexCell>>,
}

impl std::fmt::Debug for ShardLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ShardLayout(shard {:?}, inner {:?}, index at {:?}, {} bytes)",
            self.shard_shape, self.inner_shape, self.index_location, self.index_size
        )
    }
}

impl ShardLayout {
    /// The layout of a 3-D array whose codecs are exactly one `sharding_indexed` codec;
    /// `Ok(None)` for arrays that are not sharded, or have codecs around the sharding codec
    /// (zarrs reads those whole). Errors describe what is wrong.
    pub(crate) fn from_metadata(
        meta: &ArrayMetadata,
        shard_shape: [u64; 3],
    ) -> Result<Option<ShardLayout>, String> {
        let ArrayMetadata::V3(meta) = meta else {
            return Ok(None);
        };
        let Some(codec) = meta.codecs.iter().find(|c| c.name() == "sharding_indexed") else {
            return Ok(None);
        };
        if meta.codecs.len() != 1 {
            return Ok(None);
        }
        let cfg: ShardingCodecConfiguration = codec
            .to_typed_configuration()
            .map_err(|e| format!("invalid sharding_indexed configuration: {e}"))?;
        let ShardingCodecConfiguration::V1(cfg) = cfg else {
            return Err("unsupported sharding_indexed configuration version".into());
        };
        let inner: Vec<u64> = cfg.chunk_shape.iter().map(|n| n.get()).collect();
        let [a, b, c] = inner[..] else {
            return Err("the sharding chunk_shape must have 3 dimensions".into());
        };
        let inner_shape = [a, b, c];
        if (0..3).any(|i| !shard_shape[i].is_multiple_of(inner_shape[i])) {
            return Err(format!(
                "inner chunk shape {inner_shape:?} does not divide shard shape {shard_shape:?}"
            ));
        }
        let per_shard: [u64; 3] = std::array::from_fn(|i| shard_shape[i] / inner_shape[i]);
        let inner_codecs = CodecChain::from_metadata(&cfg.codecs)
            .map_err(|e| format!("inner codecs of sharding_indexed: {e}"))?;
        let index_codecs = CodecChain::from_metadata(&cfg.index_codecs)
            .map_err(|e| format!("index codecs of sharding_indexed: {e}"))?;
        let index_size = match index_codecs
            .encoded_representation(
                &index_shape(per_shard),
                &zarrs::array::data_type::uint64(),
                &FillValue::from(u64::MAX),
            )
            .map_err(|e| format!("index codecs of sharding_indexed: {e}"))?
        {
            BytesRepresentation::FixedSize(n) => n,
            _ => return Err("the shard index codecs must have a fixed encoded size".into()),
        };
        Ok(Some(ShardLayout {
            shard_shape,
            inner_shape,
            per_shard,
            inner_codecs: Arc::new(inner_codecs),
            index_codecs,
            index_location: cfg.index_location,
            index_size,
            indexes: Mutex::new(HashMap::new()),
        }))
    }

    /// The inner chunk shape (the unit of decoding).
    pub(crate) fn inner_shape(&self) -> [u64; 3] {
        self.inner_shape
    }

    /// The codecs of an inner chunk.
    pub(crate) fn inner_codecs(&self) -> &Arc<CodecChain> {
        &self.inner_codecs
    }

    /// The shard (its grid position) holding inner chunk `idx`, and the inner chunk's place
    /// in that shard's index.
    pub(crate) fn locate(&self, idx: [u64; 3]) -> ([u64; 3], usize) {
        let shard: [u64; 3] = std::array::from_fn(|i| idx[i] / self.per_shard[i]);
        let local: [u64; 3] = std::array::from_fn(|i| idx[i] % self.per_shard[i]);
        let p = self.per_shard;
        (
            shard,
            ((local[0] * p[1] + local[1]) * p[2] + local[2]) as usize,
        )
    }

    /// The byte range of entry `slot` of a shard index; `None` for an inner chunk never written
    /// (or an absent shard). An entry pointing nowhere sensible is an error naming `key`.
    pub(crate) fn entry_range(
        &self,
        index: &ShardIndex,
        slot: usize,
        key: &str,
    ) -> Result<Option<Range<u64>>, String> {
        let Some(entries) = index else {
            return Ok(None);
        };
        match entries.get(slot) {
            Some(&(u64::MAX, u64::MAX)) => Ok(None),
            Some(&(offset, n)) => match offset.checked_add(n) {
                Some(end) => Ok(Some(offset..end)),
                None => Err(format!(
                    "corrupt shard index of '{key}': entry {slot} is ({offset}, {n})"
                )),
            },
            None => Err(format!("shard index of '{key}' has no entry {slot}")),
        }
    }

    /// The index of shard `shard` stored under `key`: read once (one ranged GET through the
    /// store's layers), then served from memory.
    pub(crate) fn index(
        &self,
        store: &Store,
        key: &str,
        shard: [u64; 3],
    ) -> Result<Arc<ShardIndex>, StoreError> {
        let cell = {
            let mut m = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() >= MAX_INDEXES && !m.contains_key(&shard) {
                m.clear();
            }
            m.entry(shard).or_default().clone()
        };
        let mut slot = cell.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ix) = &*slot {
            return Ok(ix.clone());
        }
        let ix = Arc::new(self.read_index(store, key)?);
        *slot = Some(ix.clone());
        Ok(ix)
    }

    fn read_index(&self, store: &Store, key: &str) -> Result<ShardIndex, StoreError> {
        let err = |msg: String| store.io_err(key, zarrs::storage::StorageError::Other(msg));
        let k = StoreKey::new(key).map_err(|e| err(e.to_string()))?;
        let range = match self.index_location {
            ShardingIndexLocation::Start => ByteRange::FromStart(0, Some(self.index_size)),
            ShardingIndexLocation::End => ByteRange::Suffix(self.index_size),
        };
        let storage = store.storage();
        let Some(mut parts) = storage
            .get_partial_many(&k, Box::new(std::iter::once(range)))
            .map_err(|e| store.io_err(key, e))?
        else {
            return Ok(None);
        };
        let bytes = match parts.next() {
            Some(b) => b.map_err(|e| store.io_err(key, e))?,
            None => return Err(err("no bytes returned for the shard index".into())),
        };
        let decoded = self
            .index_codecs
            .decode(
                std::borrow::Cow::Borrowed(&bytes[..]),
                &index_shape(self.per_shard),
                &zarrs::array::data_type::uint64(),
                &FillValue::from(u64::MAX),
                &CodecOptions::default(),
            )
            .and_then(|a| a.into_fixed().map_err(Into::into))
            .map_err(|e| err(format!("cannot decode the shard index: {e}")))?;
        let words: Vec<u64> = decoded
            .chunks_exact(8)
            .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
            .collect();
        Ok(Some(words.chunks_exact(2).map(|p| (p[0], p[1])).collect()))
    }
}

/// The shape of a shard index array: inner chunks per shard, then 2 (offset, nbytes).
fn index_shape(per_shard: [u64; 3]) -> Vec<NonZeroU64> {
    per_shard
        .iter()
        .chain(&[2])
        .map(|&n| NonZeroU64::new(n).expect("positive"))
        .collect()
}
