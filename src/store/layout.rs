//! The store format: what a chunkcube cube looks like inside a Zarr v3 store, so that xarray,
//! rioxarray and zarr-python read it back with CRS, coordinates and nodata intact.
//!
//! ```text
//! zarr.json              group; attributes: product, chunkcube format version  (written LAST)
//! <band>/zarr.json       [time, y, x] array of the source dtype, fill_value = nodata,
//!                        attributes _FillValue, grid_mapping = "spatial_ref"
//! <band>/c/t/j/i         chunks: bytes → zstd → crc32c (optionally inside shards)
//! x/, y/                 float64 pixel-centre coordinates
//! time/                  int64 days since 1970-01-01 (CF units, proleptic_gregorian)
//! spatial_ref/           0-d int64 with crs_wkt, spatial_ref and GeoTransform attributes
//! ```
//! The group `zarr.json` is the commit point: a cube without it does not open.

use super::{DType, Store, StoreError};
use crate::geo::GeoBox;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use zarrs::array::codec::{Crc32cCodec, ZstdCodec};
use zarrs::array::{ArrayBuilder, ArraySubset};
use zarrs::storage::ReadableWritableListableStorage;

/// The version of the chunkcube store format written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// Names of the coordinate arrays (never bands).
pub const COORD_NAMES: [&str; 4] = ["time", "y", "x", "spatial_ref"];

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
    /// Shape `[time, y, x]`.
    pub shape: [u64; 3],
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
    /// Time steps, days since 1970-01-01.
    pub times: Vec<i64>,
    /// Bands in store order (sorted by name).
    pub bands: Vec<BandMeta>,
    /// Group attributes.
    pub attributes: Map<String, Value>,
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

/// The fill value JSON of a band.
fn fill_json(dtype: DType, nodata: Option<f64>) -> Value {
    match nodata {
        Some(v) if v.is_nan() => json!("NaN"),
        Some(v) if dtype.is_float() => json!(v),
        Some(v) => json!(v as i64),
        None if dtype.is_float() => json!("NaN"),
        None => json!(0),
    }
}

/// Keep zarrs' own provenance attribute out of the arrays we write (it would show up in
/// every xarray `.attrs`).
fn quiet_zarrs_metadata() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        zarrs::config::global_config_mut().set_include_zarrs_metadata(false);
    });
}

/// An array builder for a band with the cube's conventions.
pub fn band_builder(
    dtype: DType,
    nodata: Option<f64>,
    shape: [u64; 3],
    chunks: [u64; 3],
    shards: Option<[u64; 3]>,
    codecs: Codecs,
    extra_attrs: &Map<String, Value>,
) -> ArrayBuilder {
    quiet_zarrs_metadata();
    let outer = shards.unwrap_or(chunks);
    let fill = fill_json(dtype, nodata);
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
    if !matches!(nodata, Some(v) if v.is_nan()) && nodata.is_some() {
        attrs.insert("_FillValue".into(), fill);
    }
    attrs.insert("grid_mapping".into(), json!("spatial_ref"));
    // So that xarray keeps spatial_ref as a coordinate of each band (`ds.red.rio.crs`).
    attrs.insert("coordinates".into(), json!("spatial_ref"));
    b.attributes(attrs);
    b
}

/// Coordinates and the CRS carry a crc32c like bands: a flipped bit in a coordinate would
/// otherwise move every pixel silently.
fn checksummed(b: &mut ArrayBuilder) {
    b.bytes_to_bytes_codecs(vec![Arc::new(Crc32cCodec::new())]);
}

/// Write the coordinate arrays `x`, `y`, `time` and the CRS variable `spatial_ref`.
pub fn write_coords(store: &Store, geobox: &GeoBox, times: &[i64]) -> Result<(), StoreError> {
    quiet_zarrs_metadata();
    let st = store.storage();
    // Writing fails for storage reasons (a full disk, a refused PUT), never because of
    // malformed metadata: report it as the storage error it is.
    let err = |key: &str, e: String| StoreError::Io {
        url: store.url().to_string(),
        key: key.to_string(),
        msg: e,
    };
    let write_1d_f64 = |name: &str, vals: Vec<f64>, attrs: Map<String, Value>| {
        let n = vals.len().max(1) as u64;
        let mut b = ArrayBuilder::new(
            vec![vals.len() as u64],
            vec![n],
            zarrs::array::data_type::float64(),
            f64::NAN,
        );
        b.dimension_names(Some([name])).attributes(attrs);
        checksummed(&mut b);
        let a = b
            .build(st.clone(), &format!("/{name}"))
            .map_err(|e| err(name, e.to_string()))?;
        a.store_metadata().map_err(|e| err(name, e.to_string()))?;
        if !vals.is_empty() {
            a.store_array_subset(&ArraySubset::new_with_shape(vec![vals.len() as u64]), vals)
                .map_err(|e| err(name, e.to_string()))?;
        }
        Ok::<(), StoreError>(())
    };
    let axis_attrs = |axis: &str, std: &str| {
        let mut m = Map::new();
        m.insert("axis".into(), json!(axis));
        m.insert("standard_name".into(), json!(std));
        m.insert("units".into(), json!("metre"));
        m
    };
    write_1d_f64(
        "x",
        geobox.x_coords(),
        axis_attrs("X", "projection_x_coordinate"),
    )?;
    write_1d_f64(
        "y",
        geobox.y_coords(),
        axis_attrs("Y", "projection_y_coordinate"),
    )?;

    let mut tattrs = Map::new();
    tattrs.insert("units".into(), json!("days since 1970-01-01"));
    tattrs.insert("calendar".into(), json!("proleptic_gregorian"));
    tattrs.insert("standard_name".into(), json!("time"));
    tattrs.insert("axis".into(), json!("T"));
    let n = times.len().max(1) as u64;
    let mut b = ArrayBuilder::new(
        vec![times.len() as u64],
        vec![n],
        zarrs::array::data_type::int64(),
        0i64,
    );
    b.dimension_names(Some(["time"])).attributes(tattrs);
    checksummed(&mut b);
    let a = b
        .build(st.clone(), "/time")
        .map_err(|e| err("time", e.to_string()))?;
    a.store_metadata().map_err(|e| err("time", e.to_string()))?;
    if !times.is_empty() {
        a.store_array_subset(
            &ArraySubset::new_with_shape(vec![times.len() as u64]),
            times.to_vec(),
        )
        .map_err(|e| err("time", e.to_string()))?;
    }

    let mut sattrs = Map::new();
    sattrs.insert("crs_wkt".into(), json!(geobox.wkt));
    sattrs.insert("spatial_ref".into(), json!(geobox.wkt));
    sattrs.insert("GeoTransform".into(), json!(geobox.gdal_transform_string()));
    if let Some(code) = geobox.epsg {
        sattrs.insert("epsg".into(), json!(code));
    }
    let mut b = ArrayBuilder::new(
        Vec::<u64>::new(),
        Vec::<u64>::new(),
        zarrs::array::data_type::int64(),
        0i64,
    );
    b.attributes(sattrs);
    b.dimension_names(Option::<Vec<&str>>::Some(vec![]));
    checksummed(&mut b);
    let a = b
        .build(st, "/spatial_ref")
        .map_err(|e| err("spatial_ref", e.to_string()))?;
    a.store_metadata()
        .map_err(|e| err("spatial_ref", e.to_string()))?;
    let code = geobox.epsg.unwrap_or(0) as i64;
    a.store_array_subset(&ArraySubset::new_with_shape(vec![]), vec![code])
        .map_err(|e| err("spatial_ref", e.to_string()))?;
    Ok(())
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
    // array is written, before the group metadata that makes them visible.
    store.sync()?;
    let arrays = super::manifest::write_all(store)?;
    attrs.insert(
        "chunkcube".into(),
        json!({ "format_version": FORMAT_VERSION, "complete": true, "write_id": write_id,
                "arrays": arrays }),
    );
    let doc = json!({ "zarr_format": 3, "node_type": "group", "attributes": attrs });
    let text =
        serde_json::to_vec_pretty(&doc).map_err(|e| meta_err(store, "zarr.json", e.to_string()))?;
    // Everything the cube holds reaches the disk before it is declared complete.
    store.sync()?;
    store.set("zarr.json", text.into())?;
    store.sync()
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

/// Parse one array's `zarr.json` into a band, or `None` if it is not a `[time, y, x]` array.
fn parse_band(store: &Store, name: &str, doc: &Value) -> Result<Option<BandMeta>, StoreError> {
    let key = format!("{name}/zarr.json");
    let bad = |m: &str| meta_err(store, &key, m.to_string());
    if doc.get("node_type").and_then(Value::as_str) != Some("array") {
        return Ok(None);
    }
    let dims: Vec<String> = doc
        .get("dimension_names")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| d.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    if dims != ["time", "y", "x"] {
        return Ok(None);
    }
    let shape = u64_vec(doc.get("shape")).ok_or_else(|| bad("missing or invalid 'shape'"))?;
    if shape.len() != 3 {
        return Err(bad("'shape' must have 3 dimensions"));
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
    if grid.len() != 3 || grid.contains(&0) {
        return Err(bad("chunk_shape must be 3 positive numbers"));
    }
    let mut inner = None;
    if let Some(codecs) = doc.get("codecs").and_then(Value::as_array) {
        if let Some(sh) = codecs
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some("sharding_indexed"))
        {
            let cs = sh
                .pointer("/configuration/chunk_shape")
                .and_then(|v| u64_vec(Some(v)))
                .filter(|v| v.len() == 3 && !v.contains(&0))
                .ok_or_else(|| bad("invalid sharding chunk_shape"))?;
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
    let fill = doc.get("fill_value");
    let nodata = match fill {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s == "NaN" => Some(f64::NAN),
        _ => None,
    };
    Ok(Some(BandMeta {
        manifest: None,
        name: name.to_string(),
        dtype,
        nodata,
        shape: [shape[0], shape[1], shape[2]],
        chunk_shape: [grid[0], grid[1], grid[2]],
        inner_chunk_shape: inner,
        attributes,
        stream_codecs,
    }))
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

/// Parse a CF time unit (`days since 1970-01-01`, `seconds since 2019-01-01 00:00:00`, …)
/// into (seconds per unit, epoch days).
fn parse_cf_units(units: &str) -> Option<(f64, i64)> {
    let (unit, since) = units.split_once(" since ")?;
    let secs = match unit.trim() {
        "days" | "day" | "d" => 86400.0,
        "hours" | "hour" | "h" => 3600.0,
        "minutes" | "minute" | "min" => 60.0,
        "seconds" | "second" | "s" => 1.0,
        "milliseconds" | "ms" => 1e-3,
        "microseconds" | "us" => 1e-6,
        "nanoseconds" | "ns" => 1e-9,
        _ => return None,
    };
    let epoch = crate::geo::parse_time(since.trim()).ok()?;
    Some((secs, epoch))
}

/// Read a small 1-D coordinate array whole.
pub(crate) fn read_coord_f64(store: &Store, name: &str) -> Result<Vec<f64>, StoreError> {
    read_coord(store, name, false)
}

/// Read a 1-d coordinate as f64. `strict` (a cube with a chunk manifest, whose coordinates
/// were all written): an absent coordinate chunk is an error naming it, not fill — a lost
/// `x` chunk would otherwise become NaN coordinates. Without a manifest Zarr's rule holds
/// (zarr-python skips chunks equal to the fill value).
pub(crate) fn read_coord(store: &Store, name: &str, strict: bool) -> Result<Vec<f64>, StoreError> {
    let a = zarrs::array::Array::open(store.storage(), &format!("/{name}"))
        .map_err(|e| meta_err(store, &format!("{name}/zarr.json"), e.to_string()))?;
    let dt = a.data_type().clone();
    let err = |e: zarrs::array::ArrayError| meta_err(store, name, e.to_string());
    macro_rules! read {
        ($t:ty) => {{
            if strict && a.dimensionality() == 1 {
                let n = a.shape()[0] as usize;
                let mut out: Vec<f64> = Vec::with_capacity(n);
                for i in 0..a.chunk_grid_shape()[0] {
                    let key = a.chunk_key(&[i]).to_string();
                    match a.retrieve_chunk_if_exists::<Vec<$t>>(&[i]).map_err(err)? {
                        Some(v) => out.extend(v.into_iter().map(|v| v as f64)),
                        None => {
                            return Err(meta_err(
                                store,
                                &key,
                                "coordinate chunk listed by the cube is missing",
                            ))
                        }
                    }
                }
                out.truncate(n);
                out
            } else {
                a.retrieve_array_subset::<Vec<$t>>(&a.subset_all())
                    .map_err(err)?
                    .into_iter()
                    .map(|v| v as f64)
                    .collect()
            }
        }};
    }
    let vals: Vec<f64> = if dt == zarrs::array::data_type::float64() {
        read!(f64)
    } else if dt == zarrs::array::data_type::float32() {
        read!(f32)
    } else if dt == zarrs::array::data_type::int64() {
        read!(i64)
    } else if dt == zarrs::array::data_type::int32() {
        read!(i32)
    } else {
        return Err(meta_err(
            store,
            name,
            format!("unsupported coordinate dtype {dt:?}"),
        ));
    };
    Ok(vals)
}

/// Read a cube's metadata and coordinates (never a band chunk).
pub fn read_cube_meta(store: &Store) -> Result<CubeMeta, StoreError> {
    let root = get_json(store, "zarr.json")?
        .ok_or_else(|| StoreError::NotACube(store.url().to_string()))?;
    if root.get("node_type").and_then(Value::as_str) != Some("group") {
        return Err(meta_err(
            store,
            "zarr.json",
            "the root is not a Zarr v3 group",
        ));
    }
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

    // Children: every top-level folder with a zarr.json.
    let st = store.storage();
    let dirs = st
        .list_dir(&zarrs::storage::StorePrefix::root())
        .map_err(|e| store.io_err("", e))?;
    let mut bands = Vec::new();
    for p in dirs.prefixes() {
        let name = p.as_str().trim_end_matches('/').to_string();
        if COORD_NAMES.contains(&name.as_str()) || name.contains('/') {
            continue;
        }
        if let Some(doc) = get_json(store, &format!("{name}/zarr.json"))? {
            if let Some(b) = parse_band(store, &name, &doc)? {
                bands.push(b);
            }
        }
    }
    bands.sort_by(|a, b| a.name.cmp(&b.name));
    let listed = super::manifest::listed(&attributes);
    if let Some(listed) = &listed {
        check_listed(store, listed, &mut bands)?;
    }
    if bands.is_empty() {
        return Err(meta_err(
            store,
            "zarr.json",
            "the cube has no [time, y, x] arrays",
        ));
    }

    let strict = listed.is_some();
    let xs = read_coord(store, "x", strict)?;
    let ys = read_coord(store, "y", strict)?;
    let shape = bands[0].shape;
    if xs.len() as u64 != shape[2] || ys.len() as u64 != shape[1] {
        return Err(meta_err(
            store,
            "x/zarr.json",
            "coordinate lengths do not match the band shape",
        ));
    }
    for b in &bands {
        if b.shape != shape {
            return Err(meta_err(
                store,
                &format!("{}/zarr.json", b.name),
                format!(
                    "shape {:?} differs from {:?} of '{}'",
                    b.shape, shape, bands[0].name
                ),
            ));
        }
    }

    // Time: CF-decoded into days.
    let time_doc = get_json(store, "time/zarr.json")?
        .ok_or_else(|| meta_err(store, "time/zarr.json", "missing time coordinate"))?;
    let traw = read_coord(store, "time", strict)?;
    let units = time_doc
        .pointer("/attributes/units")
        .and_then(Value::as_str)
        .unwrap_or("days since 1970-01-01");
    let (secs, epoch) = parse_cf_units(units).ok_or_else(|| {
        meta_err(
            store,
            "time/zarr.json",
            format!("unsupported time units '{units}'"),
        )
    })?;
    let times: Vec<i64> = traw
        .iter()
        .map(|v| epoch + (v * secs / 86400.0).floor() as i64)
        .collect();
    if times.len() as u64 != shape[0] {
        return Err(meta_err(
            store,
            "time/zarr.json",
            "time length does not match the band shape",
        ));
    }

    // CRS and transform from spatial_ref, else from the coordinates.
    let sref = get_json(store, "spatial_ref/zarr.json")?;
    if sref.is_none() && listed.iter().flatten().any(|l| l.name == "spatial_ref") {
        return Err(meta_err(
            store,
            "spatial_ref/zarr.json",
            "the group metadata lists 'spatial_ref' (the CRS) but it is missing",
        ));
    }
    let sattr = sref
        .as_ref()
        .and_then(|d| d.get("attributes"))
        .cloned()
        .unwrap_or(Value::Null);
    let wkt = sattr
        .get("crs_wkt")
        .or_else(|| sattr.get("spatial_ref"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let transform = match sattr.get("GeoTransform").and_then(Value::as_str) {
        Some(s) => {
            let v: Vec<f64> = s
                .split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect();
            if v.len() != 6 {
                return Err(meta_err(
                    store,
                    "spatial_ref/zarr.json",
                    format!("invalid GeoTransform '{s}'"),
                ));
            }
            [v[0], v[1], v[2], v[3], v[4], v[5]]
        }
        None => {
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
        }
    };
    // The EPSG code chunkcube records at write time spares a PROJ database lookup per open.
    let recorded = sattr.get("epsg").and_then(Value::as_u64).map(|e| e as u32);
    let epsg = if recorded.is_some() || wkt.is_empty() {
        recorded
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
        bands,
        attributes,
    })
}

/// A committed cube lists its arrays: a listed band that is missing is an error naming it
/// (never a cube that silently lost a band); bands get their manifest entry.
fn check_listed(
    store: &Store,
    listed: &[super::manifest::Listed],
    bands: &mut [BandMeta],
) -> Result<(), StoreError> {
    for l in listed {
        match bands.iter_mut().find(|b| b.name == l.name) {
            Some(b) => b.manifest = Some(l.clone()),
            None if COORD_NAMES.contains(&l.name.as_str()) => {}
            None => {
                return Err(meta_err(
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
