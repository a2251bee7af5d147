//! Reading stored chunks of one band: the only place band chunks are fetched and decoded.

use super::CubeError;
use crate::graph::{ChunkSource, ReadCost, ReadError};
use crate::store::layout::BandMeta;
use crate::store::shard::ShardLayout;
use crate::store::{DType, IoCounters, Store, Values};
use crate::with_dtype;
use std::ops::Range;
use std::sync::Arc;
use zarrs::array::{
    Array, ArrayBytes, ArrayShardedReadableExt, ArrayShardedReadableExtCache,
    ArrayToBytesCodecTraits, CodecOptions, FromArrayBytes,
};
use zarrs::storage::byte_range::ByteRange;
use zarrs::storage::ReadableWritableListableStorageTraits;

/// One band of an open cube: its metadata and the zarrs array over the cube's store.
pub struct BandReader {
    meta: BandMeta,
    store: Store,
    array: Array<dyn ReadableWritableListableStorageTraits>,
    /// Sharded bands: where inner chunks lie in their shards (indexes read once per shard).
    shards: Option<ShardLayout>,
    /// Sharded bands with codecs around the sharding codec: read through zarrs.
    shard_cache: Option<ArrayShardedReadableExtCache>,
    /// The band's chunk manifest, loaded the first time a chunk object is absent.
    manifest: std::sync::OnceLock<Result<crate::store::manifest::ArrayManifest, String>>,
    /// Stored chunk sizes (from the manifest, or one listing of a store without one), loaded
    /// the first time a read is costed: a job planner costs every shard.
    sizes: std::sync::OnceLock<Option<crate::store::manifest::SizeIndex>>,
    /// The cube's commit when opened: a read that fails because the cube was replaced
    /// meanwhile says so.
    generation: Arc<crate::store::replace::Generation>,
    uid: usize,
}

/// Where the encoded bytes of one inner chunk of a sharded band lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkBytes {
    /// The decode chunk's grid index.
    pub idx: [u64; 3],
    /// The shard object holding it.
    pub key: String,
    /// Its bytes in the shard object.
    pub range: Range<u64>,
}

impl std::fmt::Debug for BandReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BandReader({} of {})", self.meta.name, self.store.url())
    }
}

impl BandReader {
    /// Open band `meta` of `store` (metadata only).
    pub fn open(store: &Store, meta: BandMeta) -> Result<Arc<BandReader>, CubeError> {
        let opened = store.opened_identity()?;
        let generation = crate::store::replace::Generation::new(store, opened);
        BandReader::open_as_of(store, meta, generation)
    }

    /// Open band `meta` of `store` (metadata only), of the cube commit `generation`.
    pub(crate) fn open_as_of(
        store: &Store,
        meta: BandMeta,
        generation: Arc<crate::store::replace::Generation>,
    ) -> Result<Arc<BandReader>, CubeError> {
        let array = crate::store::layout::open_band_array(store, &meta.name)?;
        let shards = match meta.inner_chunk_shape {
            None => None,
            Some(_) => {
                ShardLayout::from_metadata(array.metadata(), meta.chunk_shape).map_err(|msg| {
                    CubeError::Store(crate::store::StoreError::Metadata {
                        url: store.url().to_string(),
                        key: format!("{}/zarr.json", meta.name),
                        msg,
                    })
                })?
            }
        };
        let shard_cache = match (&meta.inner_chunk_shape, &shards) {
            (Some(_), None) => Some(ArrayShardedReadableExtCache::new(&array)),
            _ => None,
        };
        Ok(Arc::new(BandReader {
            meta,
            store: store.clone(),
            array,
            shards,
            shard_cache,
            manifest: std::sync::OnceLock::new(),
            sizes: std::sync::OnceLock::new(),
            generation,
            uid: crate::graph::next_uid(),
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
    /// Element type of the values read: the stored one, or float64 for a packed band
    /// (read decoded, see [`crate::store::packing`]).
    pub fn dtype(&self) -> DType {
        match self.meta.packing {
            None => self.meta.dtype,
            Some(_) => crate::store::packing::Packing::DTYPE,
        }
    }
    /// Nodata of the values read (NaN for a packed band: its missing values decode to NaN).
    pub fn nodata(&self) -> Option<f64> {
        match self.meta.packing {
            None => self.meta.nodata,
            Some(_) => Some(f64::NAN),
        }
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
        self.array
            .chunk_key(self.stored_index(&self.object_index(idx)))
            .to_string()
    }

    /// A grid index as the stored array takes it: a 2-D array has no time index.
    fn stored_index<'a>(&self, idx: &'a [u64; 3]) -> &'a [u64] {
        if self.meta.dims.two_d {
            &idx[1..]
        } else {
            idx
        }
    }

    /// The grid index of the stored object holding decode chunk `idx` (its shard when sharded).
    fn object_index(&self, idx: [u64; 3]) -> [u64; 3] {
        match self.meta.inner_chunk_shape {
            None => idx,
            Some(inner) => {
                let outer = self.meta.chunk_shape;
                [
                    idx[0] * inner[0] / outer[0],
                    idx[1] * inner[1] / outer[1],
                    idx[2] * inner[2] / outer[2],
                ]
            }
        }
    }

    /// Decide what an absent chunk object means. Without a manifest (stores other tools
    /// wrote), Zarr's rule: fill. With one, a chunk the manifest lists was lost after commit:
    /// an error naming the key, never fill passed off as data. Every read path that finds a
    /// chunk object absent must call this.
    pub fn check_absent(&self, idx: [u64; 3]) -> Result<(), ReadError> {
        let Some(listed) = &self.meta.manifest else {
            return Ok(());
        };
        let key = self.chunk_key(idx);
        let m = self.manifest.get_or_init(|| {
            crate::store::manifest::load(&self.store, listed, false).map_err(|e| e.to_string())
        });
        match m {
            Err(e) => Err(self.read_error(key, e.clone())),
            Ok(m) if m.listed(&self.object_index(idx)) => Err(self.read_error(
                key,
                "listed in the cube's chunk manifest but missing from the store (deleted or \
                 lost after the cube was written); run `chunkcube verify`",
            )),
            Ok(_) => Ok(()),
        }
    }

    /// Fetch and decode one decode chunk (full chunk shape, fill beyond the array edge).
    /// Inner chunks of shards are fetched as their byte range of the shard (served from
    /// prefetched bytes when announced, see [`BandReader::prefetch`]). A packed band's chunk
    /// is unpacked here, once per chunk read, so every consumer (elementwise kernels, the
    /// integer and median reductions, writers) sees the values xarray gives; an unpacked
    /// band pays one branch per chunk.
    pub fn read_chunk(&self, idx: [u64; 3]) -> Result<Values, ReadError> {
        let raw = self.read_stored_chunk(idx)?;
        Ok(match &self.meta.packing {
            None => raw,
            Some(p) => p.decode(&raw),
        })
    }

    /// One decode chunk as stored (raw values of the stored dtype).
    fn read_stored_chunk(&self, idx: [u64; 3]) -> Result<Values, ReadError> {
        let err = |e: zarrs::array::ArrayError| self.read_error(self.chunk_key(idx), e);
        let Some(layout) = &self.shards else {
            // The chain chunkcube writes: decoded straight into the values (store::whole).
            if let Some(codecs) = self
                .meta
                .stream_codecs
                .filter(|&c| crate::store::whole::handles(c) && self.shard_cache.is_none())
            {
                let key = self.chunk_key(idx);
                let n = self.meta.chunk_shape.iter().product::<u64>() as usize;
                let shape: Vec<usize> = self.meta.chunk_shape.iter().map(|&d| d as usize).collect();
                if let Some(b) = self
                    .store
                    .get(&key)
                    .map_err(|e| self.read_error(key.clone(), e))?
                {
                    return with_dtype!(self.meta.dtype, T => {
                        let v = crate::store::whole::decode::<T>(&b, codecs, n)
                            .map_err(|e| self.read_error(key.clone(), e))?;
                        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), v)
                            .map_err(|e| self.read_error(key.clone(), e))?;
                        Ok(Values::from(a))
                    });
                }
                return with_dtype!(self.meta.dtype, T => self.absent_chunk::<T>(idx).map(Values::from));
            }
            return with_dtype!(self.meta.dtype, T => {
                let a: ndarray::ArrayD<T> = match &self.shard_cache {
                    None => match self
                        .array
                        .retrieve_chunk_if_exists::<ndarray::ArrayD<T>>(self.stored_index(&idx))
                        .map_err(err)?
                    {
                        // A 2-D array's chunk is one step of the cube's.
                        Some(a) if self.meta.dims.two_d => a.insert_axis(ndarray::Axis(0)),
                        Some(a) => a,
                        None => self.absent_chunk::<T>(idx)?,
                    },
                    Some(cache) => self
                        .array
                        .retrieve_subchunk_opt(cache, &idx, &CodecOptions::default())
                        .map_err(err)?,
                };
                Ok(Values::from(a))
            });
        };
        let bytes = self.read_inner_chunk(layout, idx)?;
        let shape = layout.inner_shape();
        with_dtype!(self.meta.dtype, T => {
            let a = ndarray::ArrayD::<T>::from_array_bytes(bytes, &shape, self.array.data_type())
                .map_err(err)?;
            Ok(Values::from(a))
        })
    }

    /// Chunk `idx`, not stored: the fill value, if its absence is allowed (see `check_absent`).
    fn absent_chunk<T: zarrs::array::ElementOwned>(
        &self,
        idx: [u64; 3],
    ) -> Result<ndarray::ArrayD<T>, ReadError> {
        self.check_absent(idx)?;
        let shape = self.meta.chunk_shape;
        let n = shape.iter().product::<u64>();
        let fill = ArrayBytes::new_fill_value(self.array.data_type(), n, self.array.fill_value())
            .map_err(|e| self.read_error(self.chunk_key(idx), e.to_string()))?;
        ndarray::ArrayD::<T>::from_array_bytes(fill, &shape, self.array.data_type())
            .map_err(|e| self.read_error(self.chunk_key(idx), e))
    }

    /// The decoded bytes of inner chunk `idx` of a sharded band.
    fn read_inner_chunk(
        &self,
        layout: &ShardLayout,
        idx: [u64; 3],
    ) -> Result<ArrayBytes<'static>, ReadError> {
        let key = self.chunk_key(idx);
        let fail = |msg: String| self.read_error(key.clone(), msg);
        let (shard, slot) = layout.locate(idx);
        let index = layout
            .index(&self.store, &key, shard)
            .map_err(|e| self.read_error(key.clone(), e))?;
        let shape = layout.inner_shape();
        let n = shape.iter().product::<u64>();
        let fill = || {
            ArrayBytes::new_fill_value(self.array.data_type(), n, self.array.fill_value())
                .map_err(|e| fail(e.to_string()))
        };
        if index.is_none() {
            self.check_absent(idx)?;
        }
        let Some(range) = layout.entry_range(&index, slot, &key).map_err(fail)? else {
            return fill();
        };
        let what = format!("bytes {}..{}", range.start, range.end);
        let k = zarrs::storage::StoreKey::new(key.as_str()).map_err(|e| fail(e.to_string()))?;
        let want = ByteRange::FromStart(range.start, Some(range.end - range.start));
        let storage = self.store.storage();
        let got = storage
            .get_partial_many(&k, Box::new(std::iter::once(want)))
            .map_err(|e| fail(format!("{what}: {e}")))?
            .and_then(|mut parts| parts.next())
            .ok_or_else(|| {
                fail(format!(
                    "{what}: the shard disappeared after its index was read"
                ))
            })?
            .map_err(|e| fail(format!("{what}: {e}")))?;
        if got.len() as u64 != range.end - range.start {
            return Err(fail(format!("{what}: short read of {} bytes", got.len())));
        }
        let shape_nz: Vec<std::num::NonZeroU64> = shape
            .iter()
            .map(|&d| std::num::NonZeroU64::new(d).expect("positive chunk shape"))
            .collect();
        layout
            .inner_codecs()
            .decode(
                std::borrow::Cow::Borrowed(&got[..]),
                &shape_nz,
                self.array.data_type(),
                self.array.fill_value(),
                &CodecOptions::default(),
            )
            .map(ArrayBytes::into_owned)
            .map_err(|e| fail(format!("{what}: {e}")))
    }

    /// For a sharded band: where the encoded bytes of decode chunks `idxs` lie (shard key and
    /// byte range), in the order given; inner chunks never written (all fill) and chunks of
    /// absent shards have none. Reads each shard's index the first time it is needed (one
    /// ranged GET, then kept). Empty for a band that is not sharded.
    pub fn chunk_byte_ranges(&self, idxs: &[[u64; 3]]) -> Result<Vec<ChunkBytes>, ReadError> {
        let Some(layout) = &self.shards else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(idxs.len());
        for &idx in idxs {
            let key = self.chunk_key(idx);
            let (shard, slot) = layout.locate(idx);
            let index = layout
                .index(&self.store, &key, shard)
                .map_err(|e| self.read_error(key.clone(), e))?;
            let range = layout
                .entry_range(&index, slot, &key)
                .map_err(|msg| self.read_error(key.clone(), msg))?;
            if let Some(range) = range {
                out.push(ChunkBytes { idx, key, range });
            }
        }
        Ok(out)
    }

    /// Announce decode chunks about to be read, so a remote store fetches them concurrently
    /// ahead of the workers: whole chunk objects, or for a sharded band the byte ranges of the
    /// inner chunks, nearby ranges of one shard coalesced into one ranged GET. Returns at once:
    /// shard indexes not read yet are read on the I/O runtime's blocking pool, one task per
    /// shard. A failure there is left for the read of the chunk to report. A local unsharded
    /// band has the kernel read the chunk files ahead (the reads of cold chunks were half of
    /// a reduction's wall time, issue 18); local shards are not announced.
    pub fn prefetch(self: &Arc<Self>, idxs: Vec<[u64; 3]>) {
        if idxs.is_empty() || (!self.store.is_remote() && self.shards.is_some()) {
            return;
        }
        let Some(layout) = &self.shards else {
            self.store
                .prefetch(idxs.iter().map(|&i| self.chunk_key(i)).collect());
            return;
        };
        // In order of first use, so the shards the next tasks need are fetched first.
        let mut by_shard: Vec<([u64; 3], Vec<[u64; 3]>)> = Vec::new();
        for idx in idxs {
            let shard = layout.locate(idx).0;
            match by_shard.iter_mut().rev().find(|(s, _)| *s == shard) {
                Some((_, v)) => v.push(idx),
                None => by_shard.push((shard, vec![idx])),
            }
        }
        for (_, idxs) in by_shard {
            let band = self.clone();
            crate::store::runtime().spawn_blocking(move || {
                if let Ok(found) = band.chunk_byte_ranges(&idxs) {
                    if let Some(first) = found.first() {
                        let key = first.key.clone();
                        let ranges = found.into_iter().map(|c| c.range).collect();
                        band.store.prefetch_ranges(vec![(key, ranges)]);
                    }
                }
            });
        }
    }

    fn read_error(&self, key: String, e: impl Into<crate::graph::BoxError>) -> ReadError {
        let what = format!("band '{}'", self.meta.name);
        // A chunk gone or changed under the reader: the cube was replaced, not damaged.
        if self.generation.replaced() {
            let url = self.generation.url();
            return ReadError::new(
                what,
                key,
                format!("{url} was replaced while reading (its write_id changed); re-run"),
            );
        }
        ReadError::new(what, key, e)
    }

    /// What reading decode chunks `idxs` costs. Unsharded: each stored chunk object is one
    /// GET of its listed size. Sharded: each inner chunk's byte range from its shard's index
    /// (read once, and kept for the reads that follow); a remote store fetches nearby ranges
    /// of one shard with one ranged GET (coalesced as the prefetcher does), a local one reads
    /// each range.
    fn cost(&self, idxs: &[[u64; 3]]) -> ReadCost {
        let mut cost = ReadCost::default();
        if self.shards.is_none() {
            let sizes = self.sizes.get_or_init(|| {
                use crate::store::manifest::{build, load, SizeIndex};
                let m = match &self.meta.manifest {
                    Some(listed) => load(&self.store, listed, true),
                    None => build(&self.store, &self.meta.name),
                };
                m.ok().map(SizeIndex::new)
            });
            for &idx in idxs {
                match sizes.as_ref().and_then(|s| s.size(self.stored_index(&idx))) {
                    Some(n) => {
                        cost.encoded_bytes += n;
                        cost.requests += 1;
                    }
                    None => cost.absent += 1,
                }
            }
            return cost;
        }
        // An index that cannot be read now fails the computation later, naming the key.
        let found = self.chunk_byte_ranges(idxs).unwrap_or_default();
        cost.absent = idxs.len() as u64 - found.len() as u64;
        let mut by_shard: std::collections::BTreeMap<&str, Vec<Range<u64>>> = Default::default();
        for c in &found {
            cost.encoded_bytes += c.range.end - c.range.start;
            by_shard
                .entry(c.key.as_str())
                .or_default()
                .push(c.range.clone());
        }
        cost.requests = if self.store.is_remote() {
            by_shard
                .values()
                .map(|r| crate::store::prefetch::coalesce(r).len() as u64)
                .sum()
        } else {
            found.len() as u64
        };
        cost
    }
}

impl ChunkSource for BandReader {
    fn name(&self) -> &str {
        &self.meta.name
    }
    fn shape(&self) -> [u64; 3] {
        self.meta.shape
    }
    fn chunk_shape(&self) -> [u64; 3] {
        self.meta.read_chunk_shape()
    }
    fn dtype(&self) -> DType {
        BandReader::dtype(self)
    }
    fn nodata(&self) -> Option<f64> {
        BandReader::nodata(self)
    }
    fn uid(&self) -> usize {
        self.uid
    }
    fn chunk_key(&self, idx: [u64; 3]) -> String {
        BandReader::chunk_key(self, idx)
    }
    fn read_chunk(&self, idx: [u64; 3]) -> Result<Arc<Values>, ReadError> {
        BandReader::read_chunk(self, idx).map(Arc::new)
    }
    fn prefetch(self: Arc<Self>, idxs: Vec<[u64; 3]>) {
        BandReader::prefetch(&self, idxs)
    }
    fn is_remote(&self) -> bool {
        self.store.is_remote()
    }
    fn counters(&self) -> Option<Arc<IoCounters>> {
        Some(self.store.counters().clone())
    }
    fn location(&self) -> Option<&crate::store::Location> {
        Some(self.store.location())
    }
    fn read_cost(&self, idxs: &[[u64; 3]]) -> ReadCost {
        self.cost(idxs)
    }
    fn attributes(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        Some(&self.meta.attributes)
    }
    fn rows_bytes(&self) -> Option<u64> {
        let codecs = self.meta.stream_codecs?;
        // A row stream hands over stored values; packed bands are read whole and unpacked.
        if self.meta.inner_chunk_shape.is_some() || self.meta.packing.is_some() {
            return None;
        }
        let bytes = crate::graph::chunk_bytes(self);
        // Object stores hand over the encoded chunk whole (at most its decoded size, plus
        // zstd's bound on incompressible data).
        let encoded = if self.store.is_remote() {
            bytes + bytes / 128 + (64 << 10)
        } else {
            0
        };
        Some(crate::store::rows::rows_bytes(codecs, bytes) + encoded)
    }
    fn open_rows(&self, idx: [u64; 3]) -> Result<Box<dyn crate::store::RowRead>, ReadError> {
        let key = self.chunk_key(idx);
        let whole = self.shards.is_some() || self.meta.packing.is_some();
        let Some(codecs) = self.meta.stream_codecs.filter(|_| !whole) else {
            return Err(self.read_error(key, "cannot be read as a stream of rows"));
        };
        let fill = self.array.fill_value().as_ne_bytes().to_vec();
        let total = crate::graph::chunk_bytes(self);
        crate::store::ChunkRows::open(&self.store, &key, codecs, total, &fill)
            .map(|r| Box::new(r) as Box<dyn crate::store::RowRead>)
            .map_err(|e| self.read_error(key, e))
    }
}
