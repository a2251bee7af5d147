//! The chunk manifest: which chunk objects a committed cube holds.
//!
//! Zarr's rule is that an absent chunk reads as fill. That makes a deleted or lost chunk
//! indistinguishable from one that was never written, so a cube that lost objects reads back
//! silently wrong. At every commit chunkcube lists what each array holds and writes, per array,
//! `<array>/chunkcube.manifest`: a bitmap over the array's chunk grid and the size of every
//! present chunk object, zstd-compressed. The group metadata lists the arrays with their chunk
//! count, bytes and the manifest's crc32c (`attributes.chunkcube.arrays`), so a missing array is
//! an error naming it too. Readers consult the manifest only when a chunk is absent (no cost on
//! the happy path); stores without manifests (written by other tools) keep Zarr's rule.
//!
//! Why a bitmap: a continental band holds ~10^7 chunks; one bit each is ~1 MB before
//! compression, where a key list would be hundreds of MB in memory. Sizes are read only by
//! `verify`. Sharded arrays are accounted by their shard objects (inner chunks are covered by
//! each shard's own index and checksum).

use super::{Store, StoreError};
use serde_json::{json, Map, Value};

/// The manifest object inside each array's folder.
pub const MANIFEST_FILE: &str = "chunkcube.manifest";
const MAGIC: &[u8; 8] = b"CCMANIF1";
/// Refuse grids whose bitmap alone would exceed 512 MiB: crafted metadata must not make the
/// tool allocate gigabytes.
pub const MAX_GRID_CHUNKS: u64 = 1 << 32;
/// Manifests larger than this (compressed or decoded) are refused as corrupt.
const MAX_MANIFEST_BYTES: usize = 1 << 30;

/// The chunk objects of one array at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayManifest {
    /// The array's chunk grid (chunks per dimension; empty for a 0-d array).
    pub grid: Vec<u64>,
    present: Vec<u64>,
    /// Sizes of the present chunks in grid (C) order; empty when loaded without sizes.
    sizes: Vec<u32>,
}

impl ArrayManifest {
    /// An empty manifest over `grid`.
    pub fn new(grid: Vec<u64>) -> Result<ArrayManifest, String> {
        let n = grid_len(&grid)?;
        Ok(ArrayManifest {
            grid,
            present: vec![0; n.div_ceil(64) as usize],
            sizes: Vec::new(),
        })
    }

    fn linear(&self, idx: &[u64]) -> Option<u64> {
        if idx.len() != self.grid.len() {
            return None;
        }
        let mut l = 0u64;
        for (&i, &g) in idx.iter().zip(&self.grid) {
            if i >= g {
                return None;
            }
            l = l * g + i;
        }
        Some(l)
    }

    /// A manifest over `grid` listing `chunks` (linear C-order grid index, size), which must
    /// come in increasing order: how synthetic manifests for planning benchmarks are made.
    pub fn from_chunks(
        grid: Vec<u64>,
        chunks: impl IntoIterator<Item = (u64, u32)>,
    ) -> Result<ArrayManifest, String> {
        let mut m = ArrayManifest::new(grid)?;
        let total = grid_len(&m.grid)?;
        let mut next = 0u64;
        for (l, size) in chunks {
            if l < next || l >= total {
                return Err(format!(
                    "chunk {l} out of order or outside a grid of {total} chunks"
                ));
            }
            m.present[(l / 64) as usize] |= 1 << (l % 64);
            m.sizes.push(size);
            next = l + 1;
        }
        Ok(m)
    }

    /// Whether the chunk at grid index `idx` was present at commit.
    pub fn listed(&self, idx: &[u64]) -> bool {
        self.linear(idx)
            .is_some_and(|l| self.present[(l / 64) as usize] >> (l % 64) & 1 == 1)
    }

    /// Number of chunks present at commit.
    pub fn count(&self) -> u64 {
        self.present.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Present chunks in grid order with their sizes (0 when loaded without sizes).
    pub fn chunks(&self) -> impl Iterator<Item = (Vec<u64>, u64)> + '_ {
        let total = grid_len(&self.grid).unwrap_or(0);
        (0..total)
            .filter(|&l| self.present[(l / 64) as usize] >> (l % 64) & 1 == 1)
            .enumerate()
            .map(|(n, l)| {
                let mut idx = vec![0; self.grid.len()];
                let mut rest = l;
                for d in (0..self.grid.len()).rev() {
                    idx[d] = rest % self.grid[d];
                    rest /= self.grid[d];
                }
                (idx, self.sizes.get(n).copied().unwrap_or(0) as u64)
            })
    }

    /// Encode (header, grid, bitmap, sizes), zstd-compressed.
    pub fn encode(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(16 + self.present.len() * 8 + self.sizes.len() * 4);
        raw.extend_from_slice(&(self.grid.len() as u64).to_le_bytes());
        for g in &self.grid {
            raw.extend_from_slice(&g.to_le_bytes());
        }
        for w in &self.present {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        for s in &self.sizes {
            raw.extend_from_slice(&s.to_le_bytes());
        }
        let mut out = MAGIC.to_vec();
        out.extend(zstd::bulk::compress(&raw, 3).unwrap_or_default());
        out
    }

    /// Decode what [`ArrayManifest::encode`] wrote; `with_sizes: false` keeps only the bitmap.
    pub fn decode(bytes: &[u8], with_sizes: bool) -> Result<ArrayManifest, String> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a chunkcube manifest (bad magic)")?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(format!("manifest of {} bytes is too large", body.len()));
        }
        let raw = zstd::bulk::decompress(body, MAX_MANIFEST_BYTES)
            .map_err(|e| format!("manifest does not decompress: {e}"))?;
        let mut words = raw.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        });
        let rank = words.next().ok_or("manifest is empty")?;
        if rank > 32 {
            return Err(format!("manifest claims {rank} dimensions"));
        }
        let grid: Vec<u64> = (0..rank)
            .map(|_| words.next().ok_or("manifest ends inside its grid"))
            .collect::<Result<_, _>>()?;
        let mut m = ArrayManifest::new(grid)?;
        let nwords = m.present.len();
        for w in m.present.iter_mut() {
            *w = words.next().ok_or("manifest ends inside its bitmap")?;
        }
        let n = m.count() as usize;
        let offset = 8 * (1 + rank as usize + nwords);
        let size_bytes = &raw[offset.min(raw.len())..];
        if size_bytes.len() != n * 4 {
            return Err(format!(
                "manifest lists {n} chunks but holds {} bytes of sizes",
                size_bytes.len()
            ));
        }
        if with_sizes {
            m.sizes = size_bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
        Ok(m)
    }
}

/// A manifest loaded with its sizes, indexed for O(1) lookups of one chunk's size (the
/// planner asks for millions): a running count of present chunks per bitmap word.
#[derive(Debug, Clone)]
pub struct SizeIndex {
    manifest: ArrayManifest,
    ranks: Vec<u64>,
}

impl SizeIndex {
    /// Index `manifest` (loaded with sizes: otherwise every present chunk reads as 0 bytes).
    pub fn new(manifest: ArrayManifest) -> SizeIndex {
        let mut ranks = Vec::with_capacity(manifest.present.len());
        let mut n = 0u64;
        for w in &manifest.present {
            ranks.push(n);
            n += w.count_ones() as u64;
        }
        SizeIndex { manifest, ranks }
    }

    /// The stored size of the chunk at grid index `idx`, or None if it is not present.
    pub fn size(&self, idx: &[u64]) -> Option<u64> {
        let l = self.manifest.linear(idx)?;
        let (w, bit) = ((l / 64) as usize, l % 64);
        let word = self.manifest.present[w];
        if word >> bit & 1 == 0 {
            return None;
        }
        let below = (word & ((1u64 << bit) - 1)).count_ones() as u64;
        let n = (self.ranks[w] + below) as usize;
        Some(self.manifest.sizes.get(n).copied().unwrap_or(0) as u64)
    }
}

fn grid_len(grid: &[u64]) -> Result<u64, String> {
    grid.iter()
        .try_fold(1u64, |a, &g| a.checked_mul(g))
        .filter(|&n| n <= MAX_GRID_CHUNKS)
        .ok_or_else(|| {
            format!("a chunk grid of {grid:?} is larger than the {MAX_GRID_CHUNKS} chunks a cube may hold per array")
        })
}

/// The chunk grid of array `name` from its `zarr.json`, or None if it has no regular grid.
fn grid_of(doc: &Value) -> Option<Vec<u64>> {
    let shape: Vec<u64> = doc
        .get("shape")?
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()?;
    let chunks: Vec<u64> = doc
        .get("chunk_grid")?
        .get("configuration")?
        .get("chunk_shape")?
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()?;
    if chunks.len() != shape.len() || chunks.contains(&0) {
        return None;
    }
    Some(
        shape
            .iter()
            .zip(&chunks)
            .map(|(s, c)| s.div_ceil(*c))
            .collect(),
    )
}

/// The grid index of a chunk key under the default v3 encoding (`c/1/2/3`, `c` for 0-d).
pub(crate) fn parse_key(rest: &str, rank: usize) -> Option<Vec<u64>> {
    let mut parts = rest.split('/');
    if parts.next()? != "c" {
        return None;
    }
    let idx: Vec<u64> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    (idx.len() == rank).then_some(idx)
}

fn err(store: &Store, key: &str, msg: impl Into<String>) -> StoreError {
    StoreError::Metadata {
        url: store.url().to_string(),
        key: key.to_string(),
        msg: msg.into(),
    }
}

/// The arrays of a cube: every top-level folder holding a `zarr.json`.
pub fn array_names(store: &Store) -> Result<Vec<String>, StoreError> {
    let dirs = store
        .storage()
        .list_dir(&zarrs::storage::StorePrefix::root())
        .map_err(|e| store.io_err("", e))?;
    let mut names = Vec::new();
    for p in dirs.prefixes() {
        let name = p.as_str().trim_end_matches('/');
        if !name.contains('/') && store.get(&format!("{name}/zarr.json"))?.is_some() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// List what array `name` holds now and build its manifest.
pub fn build(store: &Store, name: &str) -> Result<ArrayManifest, StoreError> {
    let key = format!("{name}/zarr.json");
    let doc: Value = match store.get(&key)? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| err(store, &key, e.to_string()))?,
        None => return Err(err(store, &key, "missing")),
    };
    let grid = grid_of(&doc).ok_or_else(|| err(store, &key, "no regular chunk grid"))?;
    let mut m = ArrayManifest::new(grid).map_err(|e| err(store, &key, e))?;
    let prefix = format!("{name}/");
    let mut found: Vec<(u64, u32)> = Vec::new();
    for (k, size) in store.list_sizes(&prefix)? {
        let Some(rest) = k.strip_prefix(&prefix) else {
            continue;
        };
        let Some(l) = parse_key(rest, m.grid.len()).and_then(|idx| m.linear(&idx)) else {
            continue;
        };
        let size = u32::try_from(size)
            .map_err(|_| err(store, &k, format!("chunk of {size} bytes is over 4 GiB")))?;
        found.push((l, size));
    }
    found.sort_unstable();
    for &(l, _) in &found {
        m.present[(l / 64) as usize] |= 1 << (l % 64);
    }
    m.sizes = found.into_iter().map(|(_, s)| s).collect();
    Ok(m)
}

/// Build and write the manifest of every array; returns the group attribute listing them
/// (`{"red": {"chunks": n, "bytes": b, "crc32c": c}, ...}`). Called at commit, before the
/// group metadata is written, so the manifest describes exactly what the commit declares.
pub fn write_all(store: &Store) -> Result<Map<String, Value>, StoreError> {
    let mut arrays = Map::new();
    for name in array_names(store)? {
        let m = build(store, &name)?;
        let bytes = m.encode();
        let crc = crc32c::crc32c(&bytes);
        let total: u64 = m.sizes.iter().map(|&s| s as u64).sum();
        store.set(&format!("{name}/{MANIFEST_FILE}"), bytes.into())?;
        arrays.insert(
            name,
            json!({ "chunks": m.count(), "bytes": total, "crc32c": crc }),
        );
    }
    Ok(arrays)
}

/// What the group metadata says about one array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Array name.
    pub name: String,
    /// Chunk objects at commit.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// crc32c of the manifest object.
    pub crc32c: u32,
}

/// The arrays the group metadata lists (`attributes.chunkcube.arrays`); None for cubes
/// written without a manifest (older chunkcube, other tools).
pub fn listed(group_attributes: &Map<String, Value>) -> Option<Vec<Listed>> {
    let arrays = group_attributes
        .get("chunkcube")?
        .get("arrays")?
        .as_object()?;
    Some(
        arrays
            .iter()
            .map(|(name, v)| Listed {
                name: name.clone(),
                chunks: v.get("chunks").and_then(Value::as_u64).unwrap_or(0),
                bytes: v.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                crc32c: v.get("crc32c").and_then(Value::as_u64).unwrap_or(0) as u32,
            })
            .collect(),
    )
}

/// Load the manifest of array `l.name`, checking it against the group's crc32c.
pub fn load(store: &Store, l: &Listed, with_sizes: bool) -> Result<ArrayManifest, StoreError> {
    let key = format!("{}/{MANIFEST_FILE}", l.name);
    let bytes = store.get(&key)?.ok_or_else(|| {
        err(
            store,
            &key,
            "the chunk manifest the group metadata lists is missing",
        )
    })?;
    let crc = crc32c::crc32c(&bytes);
    if crc != l.crc32c {
        return Err(err(
            store,
            &key,
            format!(
                "checksum mismatch (crc32c {crc:08x}, the group metadata says {:08x})",
                l.crc32c
            ),
        ));
    }
    ArrayManifest::decode(&bytes, with_sizes).map_err(|e| err(store, &key, e))
}

/// A committed cube lists its arrays: a listed band that is missing is an error naming it
/// (never a cube that silently lost a band); bands get their manifest entry.
pub(crate) fn check_listed(
    store: &Store,
    listed: &[Listed],
    bands: &mut [super::layout::BandMeta],
) -> Result<(), StoreError> {
    for l in listed {
        match bands.iter_mut().find(|b| b.name == l.name) {
            Some(b) => b.manifest = Some(l.clone()),
            None if super::layout::COORD_NAMES.contains(&l.name.as_str()) => {}
            None => {
                return Err(err(
                    store,
                    &format!("{}/zarr.json", l.name),
                    format!(
                        "the group metadata lists array '{}' but it is missing",
                        l.name
                    ),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(grid: &[u64], present: &[Vec<u64>], sizes: &[u32]) -> ArrayManifest {
        let mut m = ArrayManifest::new(grid.to_vec()).unwrap();
        let mut found: Vec<(u64, u32)> = present
            .iter()
            .zip(sizes)
            .map(|(i, &s)| (m.linear(i).unwrap(), s))
            .collect();
        found.sort_unstable();
        found.dedup_by_key(|x| x.0);
        for &(l, _) in &found {
            m.present[(l / 64) as usize] |= 1 << (l % 64);
        }
        m.sizes = found.into_iter().map(|(_, s)| s).collect();
        m
    }

    proptest! {
        /// Round trip over random grids and random present sets: every listed chunk is
        /// reported present with its size, every other index (inside or outside the grid) not.
        #[test]
        fn round_trip(grid in proptest::collection::vec(1u64..7, 0..4), picks in proptest::collection::vec((0u64..1000, 1u32..100_000), 0..40)) {
            let total: u64 = grid.iter().product();
            let present: Vec<Vec<u64>> = picks.iter().map(|&(p, _)| {
                let mut l = p % total;
                let mut idx = vec![0; grid.len()];
                for d in (0..grid.len()).rev() { idx[d] = l % grid[d]; l /= grid[d]; }
                idx
            }).collect();
            let sizes: Vec<u32> = picks.iter().map(|&(_, s)| s).collect();
            let m = naive(&grid, &present, &sizes);
            let back = ArrayManifest::decode(&m.encode(), true).unwrap();
            prop_assert_eq!(&back, &m);
            let expect: std::collections::BTreeMap<Vec<u64>, u32> = present.iter().cloned().zip(sizes.iter().copied()).rev().collect();
            for (idx, size) in back.chunks() {
                prop_assert!(back.listed(&idx));
                prop_assert!(expect.contains_key(&idx));
                let _ = size;
            }
            prop_assert_eq!(back.count() as usize, expect.len());
            // The indexed lookup agrees with walking the manifest in grid order.
            let index = SizeIndex::new(back.clone());
            let mut walked = 0;
            for (idx, size) in back.chunks() {
                prop_assert_eq!(index.size(&idx), Some(size));
                walked += 1;
            }
            for l in 0..total {
                let mut rest = l;
                let mut idx = vec![0; grid.len()];
                for d in (0..grid.len()).rev() { idx[d] = rest % grid[d]; rest /= grid[d]; }
                prop_assert_eq!(index.size(&idx).is_some(), back.listed(&idx));
            }
            prop_assert_eq!(walked, expect.len());
            let mut outside = grid.clone();
            if !outside.is_empty() { prop_assert!(!back.listed(&outside)); outside.pop(); prop_assert!(!back.listed(&outside)); }
        }

        /// Crafted bytes never panic: an error or a manifest.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut b = MAGIC.to_vec();
            b.extend(zstd::bulk::compress(&bytes, 1).unwrap());
            let _ = ArrayManifest::decode(&b, true);
            let _ = ArrayManifest::decode(&bytes, true);
        }
    }

    #[test]
    fn huge_grids_are_refused_not_allocated() {
        let e = ArrayManifest::new(vec![1 << 20, 1 << 20]).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        let e = ArrayManifest::new(vec![u64::MAX, 2]).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn keys_parse_under_the_default_encoding_only() {
        assert_eq!(parse_key("c/1/2/3", 3), Some(vec![1, 2, 3]));
        assert_eq!(parse_key("c", 0), Some(vec![]));
        assert_eq!(parse_key("c/1/2", 3), None);
        assert_eq!(parse_key("zarr.json", 3), None);
        assert_eq!(parse_key(MANIFEST_FILE, 0), None);
        assert_eq!(parse_key("c/x/2/3", 3), None);
    }
}
