//! The store format: what a chunkcube cube looks like inside a Zarr v3 store, so that xarray,
//! rioxarray and zarr-python read it back with CRS, coordinates and nodata intact.
//!
//! ```text
//! zarr.json              group; attributes: product, chunkcube format version  (written LAST)
//! <band>/zarr.json       [time, y, x] array of the source dtype, fill_value = nodata,
//!                        attributes _FillValue, grid_mapping = "spatial_ref"
//! <band>/c/t/j/i         chunks: bytes → zstd → crc32c (optionally inside shards)
//! x/, y/                 float64 pixel-centre coordinates
//! time/                  int64 CF time: days since 1970-01-01 (finer units for sub-daily steps)
//! time_bnds/             [time, 2] CF bounds of reduced steps (first and last step reduced)
//! spatial_ref/           0-d int64 with crs_wkt, spatial_ref and GeoTransform (absent: no CRS)
//! ```
//! The group `zarr.json` is the commit point: a cube without it does not open. It carries
//! every array's metadata as zarr-python's inline consolidated metadata, so xarray opens a
//! cube with one read. Zarr v2 stores (`.zgroup`) are read too ([`super::v2`]).

pub(crate) use super::coords::{read_coord, read_coord_f64};
pub use super::coords::{write_coords, BandDims, SPATIAL_DIMS, SUPPORTED_DIMS, TIME_BOUNDS};
use super::{DType, Store, StoreError};
use crate::geo::{GeoBox, Time};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use zarrs::array::codec::{Crc32cCodec, ZstdCodec};
use zarrs::array::ArrayBuilder;
use zarrs::storage::ReadableWritableListableStorage;

/// The version of the chunkcube store format written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// Names of the coordinate arrays (never bands).
pub const COORD_NAMES: [&str; 5] = ["time", "y", "x", "spatial_ref", TIME_BOUNDS];

/// The codecs of band chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codecs {
    /// zstd level, or `None` for no compression.
    pub zstd_level: Option<i32>,
    /// Append a crc32c checksum to every chunk (a flipped bit or truncation becomes an error).
    pub crc32c: bool,
}

impl Default for Codecs {
    fn default() -> Self {
        Codecs {
            zstd_level: Some(3),
            crc32c: true,
        }
    }
}

impl Codecs {
    /// Parse `--compression`: `zstd`, `zstd:LEVEL` or `none`.
    pub fn parse(s: &str) -> Result<Codecs, String> {
        let level = match s {
            "none" => None,
            "zstd" => Some(3),
            _ => match s.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(l)) if (-7..=22).contains(&l) => Some(l),
                _ => {
                    return Err(format!(
                        "invalid --compression '{s}': expected zstd, zstd:LEVEL (-7..22) or none"
                    ))
                }
            },
        };
        Ok(Codecs {
            zstd_level: level,
            crc32c: true,
        })
    }
}

/// One band (data variable) of a cube.
#[derive(Debug, Clone, PartialEq)]
pub struct BandMeta {
    /// Array name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Nodata (fill value); NaN for float bands without another nodata.
    pub nodata: Option<f64>,
    /// Shape `[time, y, x]` (a 2-D array is one step).
    pub shape: [u64; 3],
    /// The stored dimensions: which names stand for y and x, and whether time is one.
    pub dims: BandDims,
    /// The shape of the objects in the store (shards when sharded).
    pub chunk_shape: [u64; 3],
    /// The inner chunk shape when sharded: the unit of decoding.
    pub inner_chunk_shape: Option<[u64; 3]>,
    /// Attributes as stored.
    pub attributes: Map<String, Value>,
    /// What the cube's chunk manifest says about this band (None: no manifest, Zarr's rule
    /// that an absent chunk is fill applies).
    pub manifest: Option<super::manifest::Listed>,
    /// The codecs, when the chain is one a chunk can be decoded from as a stream of rows
    /// (`bytes` little-endian, then optionally `zstd`, then optionally `crc32c`; no sharding,
    /// no transpose): see [`crate::store::ChunkRows`].
    pub stream_codecs: Option<Codecs>,
    /// CF packing (`scale_factor`/`add_offset`, see [`super::packing`]): the band reads
    /// decoded, as float64 with missing values NaN.
    pub packing: Option<super::packing::Packing>,
}

impl BandMeta {
    /// The unit of decoding: inner chunks when sharded, else chunks.
    pub fn read_chunk_shape(&self) -> [u64; 3] {
        self.inner_chunk_shape.unwrap_or(self.chunk_shape)
    }
}

/// Everything `open` needs to know about a cube, read from metadata and coordinates only.
#[derive(Debug, Clone)]
pub struct CubeMeta {
    /// Product name from the group attributes.
    pub product: String,
    /// The cube's grid.
    pub geobox: GeoBox,
    /// Time steps, at full resolution.
    pub times: Vec<Time>,
    /// The CF bounds of each step (`[first, last]` step reduced into it), for cubes that
    /// hold reductions over time; `None` when the time coordinate has no bounds.
    pub time_bounds: Option<Vec<[Time; 2]>>,
    /// Bands in store order (sorted by name).
    pub bands: Vec<BandMeta>,
    /// Group attributes.
    pub attributes: Map<String, Value>,
    /// The store's Zarr format: 3, or 2 for stores other tools wrote.
    pub zarr_format: u8,
    /// Arrays that are not `[time, y, x]` (name, dimension names), left out of the bands.
    pub skipped: Vec<(String, Vec<String>)>,
}

impl CubeMeta {
    /// Find a band by name.
    pub fn band(&self, name: &str) -> Option<&BandMeta> {
        self.bands.iter().find(|b| b.name == name)
    }
    /// Names of all bands.
    pub fn band_names(&self) -> Vec<String> {
        self.bands.iter().map(|b| b.name.clone()).collect()
    }
}

fn meta_err(store: &Store, key: &str, msg: impl Into<String>) -> StoreError {
    StoreError::Metadata {
        url: store.url().to_string(),
        key: key.to_string(),
        msg: msg.into(),
    }
}

/// The `_FillValue` attribute of a band as xarray writes it for Zarr v3: floats (NaN included)
/// as the base64 of their little-endian float64 bytes, integers as numbers.
fn fill_attr(dtype: DType, nodata: f64) -> Value {
    if dtype.is_float() {
        json!(base64_encode(&nodata.to_le_bytes()))
    } else {
        json!(nodata as i64)
    }
}

/// The nodata a `_FillValue` attribute states: a number, `"NaN"`, or xarray's base64 float64.
pub(crate) fn fill_attr_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.eq_ignore_ascii_case("nan") => Some(f64::NAN),
        Value::String(s) => {
            let b: [u8; 8] = base64_decode(s)?.try_into().ok()?;
            Some(f64::from_le_bytes(b))
        }
        _ => None,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what Python's `base64.standard_b64encode` writes).
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

/// Keep zarrs' own provenance attribute out of the arrays we write (it would show up in
/// every xarray `.attrs`).
pub(super) fn quiet_zarrs_metadata() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        zarrs::config::global_config_mut().set_include_zarrs_metadata(false);
    });
}

/// An array builder for a band with the cube's conventions. `grid_mapping`: the cube has a
/// CRS (a `spatial_ref` variable the band names); cubes without one name none.
#[allow(clippy::too_many_arguments)]
pub fn band_builder(
    dtype: DType,
    nodata: Option<f64>,
    shape: [u64; 3],
    chunks: [u64; 3],
    shards: Option<[u64; 3]>,
    codecs: Codecs,
    extra_attrs: &Map<String, Value>,
    grid_mapping: bool,
) -> ArrayBuilder {
    quiet_zarrs_metadata();
    let outer = shards.unwrap_or(chunks);
    let nod = nodata.unwrap_or(if dtype.is_float() { f64::NAN } else { 0.0 });
    let mut b = crate::with_dtype!(dtype, T => ArrayBuilder::new(
        shape.to_vec(),
        outer.to_vec(),
        dtype.to_zarrs(),
        <T as crate::store::Element>::from_f64(nod),
    ));
    let mut b2b: Vec<Arc<dyn zarrs::array::BytesToBytesCodecTraits>> = Vec::new();
    if let Some(level) = codecs.zstd_level {
        b2b.push(Arc::new(ZstdCodec::new(level, false)));
    }
    if codecs.crc32c {
        b2b.push(Arc::new(Crc32cCodec::new()));
    }
    b.bytes_to_bytes_codecs(b2b);
    if shards.is_some() {
        b.subchunk_shape(chunks.to_vec());
        // Inner chunks in C order, not in the order their parallel encodings finish, so a
        // sharded cube is byte-identical however it was written (resumed ingests included).
        b.codec_specific_options(
            zarrs::array::CodecSpecificOptions::default().with_option(
                zarrs::array::codec::array_to_bytes::sharding::ShardingCodecOptions::default()
                    .with_subchunk_write_order(
                        zarrs::array::codec::array_to_bytes::sharding::SubchunkWriteOrder::C,
                    ),
            ),
        );
    }
    b.dimension_names(Some(["time", "y", "x"]));
    let mut attrs = extra_attrs.clone();
    // Float bands always have a nodata (NaN unless another is given): xarray masks with
    // `_FillValue`, and rioxarray and GDAL read the nodata from it.
    if nodata.is_some() || dtype.is_float() {
        attrs.insert("_FillValue".into(), fill_attr(dtype, nod));
    }
    if grid_mapping {
        attrs.insert("grid_mapping".into(), json!("spatial_ref"));
        // So that xarray keeps spatial_ref as a coordinate of each band (`ds.red.rio.crs`).
        attrs.insert("coordinates".into(), json!("spatial_ref"));
    }
    b.attributes(attrs);
    b
}

/// A fresh write id: unique per commit, so caches keyed by it never serve stale chunks.
pub(crate) fn new_write_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}-{:x}-{:x}", nanos, std::process::id(), c)
}

/// Write the group metadata: the commit point that makes the cube open as complete.
/// `write_id` identifies this content (a deterministic fingerprint for ingests, so a resumed
/// ingest is byte-identical to an uninterrupted one; [`new_write_id`] otherwise).
pub fn write_group(
    store: &Store,
    product: &str,
    write_id: &str,
    extra: Map<String, Value>,
) -> Result<(), StoreError> {
    let mut attrs = extra;
    attrs.insert("product".into(), json!(product));
    // The chunk manifest describes exactly what this commit declares: listed after every
    // array is written, before the group metadata that makes them visible (the sync below
    // makes the manifests durable with everything else).
    let arrays = super::manifest::write_all(store)?;
    attrs.insert(
        "chunkcube".into(),
        json!({ "format_version": FORMAT_VERSION, "complete": true, "write_id": write_id,
                "arrays": arrays }),
    );
    let doc = json!({
        "zarr_format": 3,
        "node_type": "group",
        "attributes": attrs,
        "consolidated_metadata": consolidated(store)?,
    });
    let text =
        serde_json::to_vec_pretty(&doc).map_err(|e| meta_err(store, "zarr.json", e.to_string()))?;
    // Everything the cube holds reaches the disk before it is declared complete.
    store.sync()?;
    store.set("zarr.json", text.into())?;
    store.sync()
}

/// Every array's `zarr.json` as zarr-python's inline consolidated metadata (what
/// `xr.open_zarr` reads in one request instead of warning and listing the store).
fn consolidated(store: &Store) -> Result<Value, StoreError> {
    let mut metadata = Map::new();
    for name in children(store)? {
        let key = format!("{name}/zarr.json");
        if let Some(doc) = get_json(store, &key)? {
            metadata.insert(name, doc);
        }
    }
    Ok(json!({ "kind": "inline", "must_understand": false, "metadata": metadata }))
}

/// The names of the store's top-level folders.
fn children(store: &Store) -> Result<Vec<String>, StoreError> {
    let dirs = store
        .storage()
        .list_dir(&zarrs::storage::StorePrefix::root())
        .map_err(|e| store.io_err("", e))?;
    Ok(dirs
        .prefixes()
        .iter()
        .map(|p| p.as_str().trim_end_matches('/').to_string())
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .collect())
}

/// Remove the commit point first, so a cube being rewritten never looks complete.
pub(crate) fn uncommit(store: &Store) -> Result<(), StoreError> {
    store.erase("zarr.json")
}

fn get_json(store: &Store, key: &str) -> Result<Option<Value>, StoreError> {
    match store.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| meta_err(store, key, format!("invalid JSON: {e}"))),
    }
}

fn u64_vec(v: Option<&Value>) -> Option<Vec<u64>> {
    v?.as_array()?.iter().map(|x| x.as_u64()).collect()
}

/// What one array of a store is to a cube.
enum Parsed {
    /// A `[time, y, x]` data variable.
    Band(Box<BandMeta>),
    /// An array with other dimensions (its dimension names).
    Other(Vec<String>),
    /// Not an array, or a coordinate, bounds or grid-mapping variable.
    Ignored,
}

fn dim_names(doc: &Value) -> Vec<String> {
    doc.get("dimension_names")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| d.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Parse one array's metadata document (v3, or v2 converted; `key` names it) into a band.
fn parse_band(store: &Store, name: &str, key: &str, doc: &Value) -> Result<Parsed, StoreError> {
    let bad = |m: &str| meta_err(store, key, m.to_string());
    if doc.get("node_type").and_then(Value::as_str) != Some("array") {
        return Ok(Parsed::Ignored);
    }
    let dims = dim_names(doc);
    let Some(band_dims) = BandDims::of(&dims) else {
        // Coordinates (1-D), grid mappings (0-d) and CF bounds are no data variables.
        let bounds = dims
            .iter()
            .any(|d| matches!(d.as_str(), "nv" | "bnds" | "bounds" | "nbnd"));
        if dims.len() < 2 || bounds {
            return Ok(Parsed::Ignored);
        }
        return Ok(Parsed::Other(dims));
    };
    // 2-D latitude/longitude of a curvilinear grid are coordinates, not data.
    if band_dims.two_d && SPATIAL_DIMS.iter().flatten().any(|n| *n == name) {
        return Ok(Parsed::Ignored);
    }
    let nd = dims.len();
    // A 2-D array reads as one time step: its grid padded with a leading 1.
    let pad = |v: &[u64]| match v {
        [y, x] => [1, *y, *x],
        v => [v[0], v[1], v[2]],
    };
    let shape = u64_vec(doc.get("shape")).ok_or_else(|| bad("missing or invalid 'shape'"))?;
    if shape.len() != nd {
        return Err(bad(&format!("'shape' must have {nd} dimensions")));
    }
    let dt_name = doc
        .get("data_type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing 'data_type'"))?;
    let dtype = DType::from_zarr_name(dt_name)
        .ok_or_else(|| bad(&format!("unsupported data_type '{dt_name}'")))?;
    let grid = doc
        .pointer("/chunk_grid/configuration/chunk_shape")
        .and_then(|v| u64_vec(Some(v)))
        .ok_or_else(|| bad("missing regular chunk_grid chunk_shape"))?;
    if grid.len() != nd || grid.contains(&0) {
        return Err(bad(&format!("chunk_shape must be {nd} positive numbers")));
    }
    let mut inner = None;
    super::limits::check_sizes(&shape, &grid, dtype.size() as u64).map_err(|m| bad(&m))?;
    if let Some(codecs) = doc.get("codecs").and_then(Value::as_array) {
        if let Some(sh) = codecs
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some("sharding_indexed"))
        {
            if band_dims.two_d {
                return Err(bad(
                    "sharded 2-D arrays are not supported (add a time dimension)",
                ));
            }
            let cs = sh
                .pointer("/configuration/chunk_shape")
                .and_then(|v| u64_vec(Some(v)))
                .filter(|v| v.len() == 3 && !v.contains(&0))
                .ok_or_else(|| bad("invalid sharding chunk_shape"))?;
            if cs.iter().zip(&grid).any(|(i, o)| o % i != 0) {
                return Err(bad("the sharding chunk_shape must divide the chunk_shape"));
            }
            inner = Some([cs[0], cs[1], cs[2]]);
        }
    }
    let stream_codecs = doc
        .get("codecs")
        .and_then(Value::as_array)
        .and_then(|c| streamable(c));
    let attributes = doc
        .get("attributes")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // `_FillValue` is what xarray masks with (and what chunkcube writes); Zarr's fill_value
    // stands in for stores that have none.
    let fill = doc.get("fill_value");
    let nodata = match attributes.get("_FillValue").and_then(fill_attr_value) {
        Some(v) => Some(v),
        None => match fill {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) if s == "NaN" => Some(f64::NAN),
            _ => None,
        },
    };
    let packing = super::packing::Packing::of(&attributes, nodata).map_err(|m| bad(&m))?;
    Ok(Parsed::Band(Box::new(BandMeta {
        manifest: None,
        name: name.to_string(),
        dtype,
        nodata,
        shape: pad(&shape),
        dims: band_dims,
        chunk_shape: pad(&grid),
        inner_chunk_shape: inner,
        attributes,
        stream_codecs,
        packing,
    })))
}

/// The codecs of a chain that decodes as a stream of rows (see [`BandMeta::stream_codecs`]).
fn streamable(codecs: &[Value]) -> Option<Codecs> {
    let name = |c: &Value| c.get("name").and_then(Value::as_str).map(str::to_string);
    let mut it = codecs.iter();
    let first = it.next()?;
    let endian = first
        .pointer("/configuration/endian")
        .and_then(Value::as_str);
    if name(first)? != "bytes" || !matches!(endian, None | Some("little")) {
        return None;
    }
    let mut out = Codecs {
        zstd_level: None,
        crc32c: false,
    };
    let mut next = it.next();
    if let Some(c) = next.filter(|c| name(c).as_deref() == Some("zstd")) {
        let level = c.pointer("/configuration/level").and_then(Value::as_i64)?;
        out.zstd_level = Some(i32::try_from(level).ok()?);
        next = it.next();
    }
    if next.is_some_and(|c| name(c).as_deref() == Some("crc32c")) {
        out.crc32c = true;
        next = it.next();
    }
    next.is_none().then_some(out)
}

/// The root group document and the store's Zarr format (3, or 2 from `.zgroup`).
fn root_doc(store: &Store) -> Result<(Value, u8), StoreError> {
    if let Some(root) = get_json(store, "zarr.json")? {
        if root.get("node_type").and_then(Value::as_str) != Some("group") {
            return Err(meta_err(
                store,
                "zarr.json",
                "the root is not a Zarr v3 group",
            ));
        }
        return Ok((root, 3));
    }
    match super::v2::group_doc(store)? {
        Some(g) => Ok((g, 2)),
        None => Err(StoreError::NotACube(store.url().to_string())),
    }
}

/// Read a cube's metadata and coordinates (never a band chunk), from a Zarr v3 store or a
/// Zarr v2 store (as xarray writes with `zarr_format=2`, consolidated or not).
pub fn read_cube_meta(store: &Store) -> Result<CubeMeta, StoreError> {
    let (root, zarr_format) = root_doc(store)?;
    let root_key = if zarr_format == 3 {
        "zarr.json"
    } else {
        ".zgroup"
    };
    let array_key = |name: &str| {
        if zarr_format == 3 {
            format!("{name}/zarr.json")
        } else {
            format!("{name}/.zarray")
        }
    };
    let attributes = root
        .get("attributes")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(cc) = attributes.get("chunkcube") {
        if cc.get("complete").and_then(Value::as_bool) == Some(false) {
            return Err(StoreError::NotACube(store.url().to_string()));
        }
    }
    let product = attributes
        .get("product")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();

    // Children: every top-level folder with array metadata.
    let mut bands = Vec::new();
    let mut skipped = Vec::new();
    for name in children(store)? {
        if COORD_NAMES.contains(&name.as_str()) {
            continue;
        }
        let doc = if zarr_format == 3 {
            get_json(store, &array_key(&name))?
        } else {
            super::v2::array_doc(store, &name)?
        };
        if let Some(doc) = doc {
            match parse_band(store, &name, &array_key(&name), &doc)? {
                Parsed::Band(b) => bands.push(*b),
                Parsed::Other(dims) => skipped.push((name, dims)),
                Parsed::Ignored => {}
            }
        }
    }
    // A 2-D array beside (time, y, x) bands is no step of theirs (a DEM next to a series).
    if bands.iter().any(|b| !b.dims.two_d) {
        bands.retain(|b| {
            if b.dims.two_d {
                skipped.push((b.name.clone(), b.dims.yx().map(String::from).to_vec()));
            }
            !b.dims.two_d
        });
    }
    bands.sort_by(|a, b| a.name.cmp(&b.name));
    skipped.sort();
    let listed = super::manifest::listed(&attributes);
    if let Some(listed) = &listed {
        super::manifest::check_listed(store, listed, &mut bands)?;
    }
    if bands.is_empty() {
        // The dimensions are the supported ones in another order: say which order and how
        // to rewrite the store, rather than "malformed".
        let transposed = skipped
            .iter()
            .find_map(|(n, d)| BandDims::supported_order(d).map(|w| (n, d, w)));
        if let Some((name, found, want)) = transposed {
            let quoted: Vec<String> = want.iter().map(|d| format!("'{d}'")).collect();
            return Err(StoreError::DimOrder {
                url: store.url().to_string(),
                msg: format!(
                    "found '{name}' ({}); chunkcube reads ({}) in that order (time first, then y or lat, then x or lon) and does not transpose on read; rewrite it with xarray: ds.transpose({}).to_zarr(...)",
                    found.join(", "),
                    want.join(", "),
                    quoted.join(", ")
                ),
            });
        }
        let found = if skipped.is_empty() {
            "it has no data variables".to_string()
        } else {
            let list: Vec<String> = skipped
                .iter()
                .map(|(n, d)| format!("'{n}' ({})", d.join(", ")))
                .collect();
            format!("found {}", list.join(", "))
        };
        return Err(meta_err(
            store,
            root_key,
            format!("no array with supported dimensions: {found}; chunkcube reads data variables of dimensions {SUPPORTED_DIMS}, e.g. written from xarray after ds.transpose('time', 'y', 'x') or ds.expand_dims('time')"),
        ));
    }

    let strict = listed.is_some();
    let [yname, xname] = bands[0].dims.yx();
    let xs = read_coord(store, xname, strict)?;
    let ys = read_coord(store, yname, strict)?;
    let shape = bands[0].shape;
    if xs.len() as u64 != shape[2] || ys.len() as u64 != shape[1] {
        return Err(meta_err(
            store,
            &array_key(xname),
            "coordinate lengths do not match the band shape",
        ));
    }
    for b in &bands {
        if b.dims != bands[0].dims {
            return Err(meta_err(
                store,
                &array_key(&b.name),
                format!(
                    "dimensions ({}) differ from those of '{}' ({})",
                    b.dims.yx().join(", "),
                    bands[0].name,
                    bands[0].dims.yx().join(", ")
                ),
            ));
        }
        if b.shape != shape {
            return Err(meta_err(
                store,
                &array_key(&b.name),
                format!(
                    "shape {:?} differs from {:?} of '{}'",
                    b.shape, shape, bands[0].name
                ),
            ));
        }
    }

    // Time: CF-decoded at full resolution.
    let time_key = array_key("time");
    let time_doc = if zarr_format == 3 {
        get_json(store, &time_key)?
    } else {
        super::v2::array_doc(store, "time")?
    }
    .ok_or_else(|| {
        let msg = if bands[0].dims.two_d {
            "missing time coordinate: a 2-D array reads as one step of a scalar 'time' \
             (xarray keeps one from ds.isel(time=0); else ds.expand_dims(time=[...]))"
        } else {
            "missing time coordinate"
        };
        meta_err(store, &time_key, msg)
    })?;
    let times = super::coords::read_times(store, &time_doc, &time_key, strict)?;
    if times.len() as u64 != shape[0] {
        return Err(meta_err(
            store,
            &time_key,
            "time length does not match the band shape",
        ));
    }
    let time_bounds = super::coords::read_time_bounds(store, &time_doc, &time_key, times.len())?;

    // CRS and transform from the grid-mapping variable, else from the coordinates.
    let gm = bands[0]
        .attributes
        .get("grid_mapping")
        .and_then(Value::as_str)
        .filter(|n| validate_band_name(n).is_ok() || *n == "spatial_ref")
        .unwrap_or("spatial_ref");
    if gm == "spatial_ref"
        && listed.iter().flatten().any(|l| l.name == "spatial_ref")
        && get_json(store, "spatial_ref/zarr.json")?.is_none()
    {
        return Err(meta_err(
            store,
            "spatial_ref/zarr.json",
            "the group metadata lists 'spatial_ref' (the CRS) but it is missing",
        ));
    }
    let super::coords::GridMapping {
        wkt,
        transform,
        epsg: recorded,
    } = super::coords::read_grid_mapping(store, gm)?;
    let transform = transform.unwrap_or_else(|| {
        let dx = if xs.len() > 1 { xs[1] - xs[0] } else { 1.0 };
        let dy = if ys.len() > 1 { ys[1] - ys[0] } else { -1.0 };
        [
            xs.first().copied().unwrap_or(0.0) - dx / 2.0,
            dx,
            0.0,
            ys.first().copied().unwrap_or(0.0) - dy / 2.0,
            0.0,
            dy,
        ]
    });
    // The EPSG code chunkcube records at write time spares a PROJ database lookup per open.
    let epsg = if recorded.is_some() || wkt.is_empty() {
        recorded.filter(|_| !wkt.is_empty())
    } else {
        crate::geo::crs_info(&wkt).ok().and_then(|(_, e)| e)
    };
    let geobox = GeoBox {
        wkt,
        epsg,
        transform,
        width: shape[2],
        height: shape[1],
    };
    Ok(CubeMeta {
        product,
        geobox,
        times,
        time_bounds,
        bands,
        attributes,
        zarr_format,
        skipped,
    })
}

/// Open a band array for reading or writing chunks.
pub fn open_band_array(
    store: &Store,
    name: &str,
) -> Result<
    zarrs::array::Array<dyn zarrs::storage::ReadableWritableListableStorageTraits>,
    StoreError,
> {
    let st: ReadableWritableListableStorage = store.storage();
    zarrs::array::Array::open(st, &format!("/{name}"))
        .map_err(|e| meta_err(store, &format!("{name}/zarr.json"), e.to_string()))
}

/// Band names become array names: keep them simple and safe as store keys.
pub fn validate_band_name(b: &str) -> Result<(), String> {
    let ok = !b.is_empty()
        && b.len() <= 64
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        && !COORD_NAMES.contains(&b);
    if ok {
        Ok(())
    } else {
        Err(format!("invalid band name '{b}': use letters, digits, '_' or '-', and not time/x/y/spatial_ref"))
    }
}
