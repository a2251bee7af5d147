//! The coordinates of a cube: `x`, `y` (pixel centres), `time` (CF-encoded instants, with
//! CF `bounds` when a step stands for a reduced range) and the CRS variable `spatial_ref`,
//! written as xarray and rioxarray write them and read back from stores either wrote.

use super::{Store, StoreError};
use crate::geo::{encode_times, CfUnits, GeoBox, Time};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use zarrs::array::codec::Crc32cCodec;
use zarrs::array::{ArrayBuilder, ArraySubset};

/// The name of the CF bounds array of the time coordinate.
pub const TIME_BOUNDS: &str = "time_bnds";

/// The spatial dimension names a band may have, `[y, x]` in that order: chunkcube's own, and
/// those xarray, odc-stac and GEE exports write for geographic grids. All read as `y`, `x`.
pub const SPATIAL_DIMS: [[&str; 2]; 3] = [["y", "x"], ["latitude", "longitude"], ["lat", "lon"]];

/// The supported dimension orders, for error messages.
pub const SUPPORTED_DIMS: &str = "(time, y, x), (time, latitude, longitude) or (time, lat, lon), \
     or 2-D (y, x), (latitude, longitude), (lat, lon) with a scalar time coordinate";

/// How a band's stored dimensions map onto the cube's `[time, y, x]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandDims {
    /// Index into [`SPATIAL_DIMS`]: the names of the y and x coordinates.
    pub spatial: usize,
    /// The array has no time dimension (`[y, x]`): read as one step.
    pub two_d: bool,
}

impl BandDims {
    /// The dimensions of a data variable, or `None` if they are not a supported order.
    pub fn of(dims: &[String]) -> Option<BandDims> {
        let (two_d, yx) = match dims {
            [t, y, x] if t == "time" => (false, [y, x]),
            [y, x] => (true, [y, x]),
            _ => return None,
        };
        let spatial = SPATIAL_DIMS
            .iter()
            .position(|p| p[0] == yx[0] && p[1] == yx[1])?;
        Some(BandDims { spatial, two_d })
    }
    /// The names of the y and x coordinate arrays.
    pub fn yx(&self) -> [&'static str; 2] {
        SPATIAL_DIMS[self.spatial]
    }

    /// The supported order of the same dimensions when `dims` holds them in another order
    /// (`(time, lon, lat)` → `(time, lat, lon)`, `(y, x, time)` → `(time, y, x)`), else `None`.
    /// Such arrays are refused rather than transposed on read: every chunk of a band is read
    /// as `[time, y, x]` (windows, shards, byte ranges, row reads), and a transposed source
    /// would need its own path through each of them.
    pub fn supported_order(dims: &[String]) -> Option<Vec<&'static str>> {
        let has = |n: &str| dims.iter().any(|d| d == n);
        let [y, x] = *SPATIAL_DIMS.iter().find(|[y, x]| has(y) && has(x))?;
        let want: Vec<&str> = match dims.len() {
            3 if has("time") => vec!["time", y, x],
            2 => vec![y, x],
            _ => return None,
        };
        (BandDims::of(dims).is_none()).then_some(want)
    }
}

/// Calendars whose dates are the proleptic Gregorian ones chunkcube computes with.
const CALENDARS: [&str; 3] = ["standard", "gregorian", "proleptic_gregorian"];

fn meta_err(store: &Store, key: &str, msg: impl Into<String>) -> StoreError {
    StoreError::Metadata {
        url: store.url().to_string(),
        key: key.to_string(),
        msg: msg.into(),
    }
}

/// Coordinates and the CRS carry a crc32c like bands: a flipped bit in a coordinate would
/// otherwise move every pixel silently.
fn checksummed(b: &mut ArrayBuilder) {
    b.bytes_to_bytes_codecs(vec![Arc::new(Crc32cCodec::new())]);
}

/// Write the coordinate arrays `x`, `y`, `time` (and `time_bnds` when `time_bounds` is
/// given, one `[first, last]` pair per step) and, when the grid has a CRS, `spatial_ref`.
/// A cube without a CRS gets no `spatial_ref` at all rather than an empty WKT.
pub fn write_coords(
    store: &Store,
    geobox: &GeoBox,
    times: &[Time],
    time_bounds: Option<&[[Time; 2]]>,
) -> Result<(), StoreError> {
    super::layout::quiet_zarrs_metadata();
    let st = store.storage();
    // Writing fails for storage reasons (a full disk, a refused PUT), never because of
    // malformed metadata: report it as the storage error it is.
    let err = |key: &str, e: String| StoreError::Io {
        url: store.url().to_string(),
        key: key.to_string(),
        msg: e,
    };
    let write_f64 = |name: &str, vals: Vec<f64>, attrs: Map<String, Value>| {
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
    let axis_attrs = |axis: &str, std: &str, units: &str| {
        let mut m = Map::new();
        m.insert("axis".into(), json!(axis));
        m.insert("standard_name".into(), json!(std));
        m.insert("units".into(), json!(units));
        m
    };
    // CF: degrees on a geographic grid (a cube read from a lat/lon store), metres otherwise.
    let ((xs, xu), (ys, yu)) = if geobox.is_geographic() {
        (("longitude", "degrees_east"), ("latitude", "degrees_north"))
    } else {
        (
            ("projection_x_coordinate", "metre"),
            ("projection_y_coordinate", "metre"),
        )
    };
    write_f64("x", geobox.x_coords(), axis_attrs("X", xs, xu))?;
    write_f64("y", geobox.y_coords(), axis_attrs("Y", ys, yu))?;

    // Steps and bounds share one unit, so xarray decodes both alike.
    let bounds: Vec<Time> = time_bounds
        .iter()
        .flat_map(|b| b.iter().flatten())
        .copied()
        .collect();
    let all: Vec<Time> = times.iter().chain(&bounds).copied().collect();
    let (units, values) = encode_times(&all);
    let (steps, bound_values) = values.split_at(times.len());
    let mut tattrs = Map::new();
    tattrs.insert("units".into(), json!(units));
    tattrs.insert("calendar".into(), json!("proleptic_gregorian"));
    tattrs.insert("standard_name".into(), json!("time"));
    tattrs.insert("axis".into(), json!("T"));
    if time_bounds.is_some() {
        tattrs.insert("bounds".into(), json!(TIME_BOUNDS));
    }
    let write_i64 = |name: &str, shape: Vec<u64>, dims: Vec<&str>, vals: &[i64], attrs| {
        let chunk: Vec<u64> = shape.iter().map(|n| (*n).max(1)).collect();
        let mut b = ArrayBuilder::new(shape.clone(), chunk, zarrs::array::data_type::int64(), 0i64);
        b.dimension_names(Some(dims)).attributes(attrs);
        checksummed(&mut b);
        let a = b
            .build(st.clone(), &format!("/{name}"))
            .map_err(|e| err(name, e.to_string()))?;
        a.store_metadata().map_err(|e| err(name, e.to_string()))?;
        if !vals.is_empty() {
            a.store_array_subset(&ArraySubset::new_with_shape(shape), vals.to_vec())
                .map_err(|e| err(name, e.to_string()))?;
        }
        Ok::<(), StoreError>(())
    };
    write_i64(
        "time",
        vec![times.len() as u64],
        vec!["time"],
        steps,
        tattrs,
    )?;
    if time_bounds.is_some() {
        let mut battrs = Map::new();
        battrs.insert("units".into(), json!(units));
        battrs.insert("calendar".into(), json!("proleptic_gregorian"));
        write_i64(
            TIME_BOUNDS,
            vec![times.len() as u64, 2],
            vec!["time", "nv"],
            bound_values,
            battrs,
        )?;
    }
    if geobox.wkt.is_empty() {
        return Ok(());
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

/// A small 1-D coordinate array, whole: integers exactly, floats as floats.
enum Raw {
    Int(Vec<i64>),
    Float(Vec<f64>),
}

/// Read a coordinate array whole. `strict` (a cube with a chunk manifest, whose coordinates
/// were all written): an absent coordinate chunk is an error naming it, not fill — a lost `x`
/// chunk would otherwise become NaN coordinates. Without a manifest Zarr's rule holds
/// (zarr-python skips chunks equal to the fill value).
fn read_raw(store: &Store, name: &str, strict: bool) -> Result<Raw, StoreError> {
    read_raw_nd(store, name, strict, 1).map(|(r, _)| r)
}

/// [`read_raw`] of an array of up to `max_dims` dimensions (a CF bounds array is 2-D), with
/// its shape; values in C order.
fn read_raw_nd(
    store: &Store,
    name: &str,
    strict: bool,
    max_dims: usize,
) -> Result<(Raw, Vec<u64>), StoreError> {
    use zarrs::array::data_type as dt;
    let a = zarrs::array::Array::open(store.storage(), &format!("/{name}"))
        .map_err(|e| meta_err(store, &format!("{name}/zarr.json"), e.to_string()))?;
    let d = a.data_type().clone();
    let err = |e: zarrs::array::ArrayError| meta_err(store, name, e.to_string());
    // Read whole at open: a crafted shape must not allocate gigabytes.
    if a.shape().iter().product::<u64>() > super::limits::MAX_COORD_LEN
        || a.dimensionality() > max_dims
    {
        return Err(meta_err(
            store,
            &format!("{name}/zarr.json"),
            format!(
                "a coordinate must be {max_dims}-d with at most {} values; found shape {:?}",
                super::limits::MAX_COORD_LEN,
                a.shape()
            ),
        ));
    }
    macro_rules! read {
        ($t:ty) => {{
            let v: Vec<$t> = if strict && a.dimensionality() == 1 {
                let n = a.shape()[0] as usize;
                let mut out: Vec<$t> = Vec::with_capacity(n);
                for i in 0..a.chunk_grid_shape()[0] {
                    let key = a.chunk_key(&[i]).to_string();
                    match a.retrieve_chunk_if_exists::<Vec<$t>>(&[i]).map_err(err)? {
                        Some(v) => out.extend(v),
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
            };
            v
        }};
    }
    let int = |v: Vec<i64>| Raw::Int(v);
    let raw = if d == dt::float64() {
        Raw::Float(read!(f64))
    } else if d == dt::float32() {
        Raw::Float(read!(f32).into_iter().map(f64::from).collect())
    } else if d == dt::int64() {
        int(read!(i64))
    } else if d == dt::int32() {
        int(read!(i32).into_iter().map(i64::from).collect())
    } else if d == dt::uint32() {
        int(read!(u32).into_iter().map(i64::from).collect())
    } else if d == dt::int16() {
        int(read!(i16).into_iter().map(i64::from).collect())
    } else if d == dt::uint16() {
        int(read!(u16).into_iter().map(i64::from).collect())
    } else {
        return Err(meta_err(
            store,
            name,
            format!("unsupported coordinate dtype {d:?}"),
        ));
    };
    Ok((raw, a.shape().to_vec()))
}

/// Read a small 1-D coordinate array whole, as float64.
pub(crate) fn read_coord_f64(store: &Store, name: &str) -> Result<Vec<f64>, StoreError> {
    read_coord(store, name, false)
}

/// Read a 1-D coordinate as float64; `strict` as for a cube with a chunk manifest (an
/// absent chunk is an error naming it).
pub(crate) fn read_coord(store: &Store, name: &str, strict: bool) -> Result<Vec<f64>, StoreError> {
    Ok(match read_raw(store, name, strict)? {
        Raw::Int(v) => v.into_iter().map(|x| x as f64).collect(),
        Raw::Float(v) => v,
    })
}

/// The time steps of a cube, CF-decoded from `doc` (the time array's metadata, `key`) at
/// full resolution: the reference's time of day kept, nothing floored to a day.
pub(crate) fn read_times(
    store: &Store,
    doc: &Value,
    key: &str,
    strict: bool,
) -> Result<Vec<Time>, StoreError> {
    let attr = |k: &str| {
        doc.pointer(&format!("/attributes/{k}"))
            .and_then(Value::as_str)
    };
    let units = attr("units").unwrap_or("days since 1970-01-01");
    let cf = CfUnits::parse(units).map_err(|e| meta_err(store, key, e.to_string()))?;
    if let Some(cal) = attr("calendar") {
        if !CALENDARS.contains(&cal.to_ascii_lowercase().as_str()) {
            return Err(meta_err(
                store,
                key,
                format!(
                    "unsupported calendar '{cal}' (chunkcube reads {})",
                    CALENDARS.join(", ")
                ),
            ));
        }
    }
    decode_times(store, key, &cf, units, read_raw(store, "time", strict)?)
}

/// CF-decode raw time values (`key` and `units` name them in errors).
fn decode_times(
    store: &Store,
    key: &str,
    cf: &CfUnits,
    units: &str,
    raw: Raw,
) -> Result<Vec<Time>, StoreError> {
    let bad = |what: String| {
        meta_err(
            store,
            key,
            format!("time value {what} is out of range for '{units}'"),
        )
    };
    match raw {
        Raw::Int(v) => v
            .into_iter()
            .map(|x| cf.decode_i64(x).ok_or_else(|| bad(x.to_string())))
            .collect(),
        Raw::Float(v) => v
            .into_iter()
            .map(|x| cf.decode_f64(x).ok_or_else(|| bad(x.to_string())))
            .collect(),
    }
}

/// The CF bounds of the time steps (`[first, last]` of the range each step stands for, as
/// reductions write them), from the variable the time coordinate's `bounds` names; `None`
/// when it names none or the variable is absent. Decoded in the bounds' own units if they
/// state any, else in the time's (CF: bounds inherit them).
pub(crate) fn read_time_bounds(
    store: &Store,
    doc: &Value,
    key: &str,
    steps: usize,
) -> Result<Option<Vec<[Time; 2]>>, StoreError> {
    let Some(name) = doc.pointer("/attributes/bounds").and_then(Value::as_str) else {
        return Ok(None);
    };
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || !name.chars().all(safe) {
        return Err(meta_err(
            store,
            key,
            format!("invalid bounds name '{name}'"),
        ));
    }
    let Ok(a) = zarrs::array::Array::open(store.storage(), &format!("/{name}")) else {
        return Ok(None);
    };
    let time_units = doc.pointer("/attributes/units").and_then(Value::as_str);
    let units = a
        .attributes()
        .get("units")
        .and_then(Value::as_str)
        .or(time_units)
        .unwrap_or("days since 1970-01-01")
        .to_string();
    let bkey = format!("{name}/zarr.json");
    let cf = CfUnits::parse(&units).map_err(|e| meta_err(store, &bkey, e.to_string()))?;
    let (raw, shape) = read_raw_nd(store, name, false, 2)?;
    if shape != [steps as u64, 2] {
        return Err(meta_err(
            store,
            &bkey,
            format!("time bounds of shape {shape:?}; the time has {steps} steps, so [{steps}, 2]"),
        ));
    }
    let v = decode_times(store, &bkey, &cf, &units, raw)?;
    Ok(Some(v.chunks(2).map(|p| [p[0], p[1]]).collect()))
}

/// What a grid-mapping variable (`spatial_ref`) says.
pub(crate) struct GridMapping {
    /// The CRS as WKT; empty: the cube has no CRS.
    pub wkt: String,
    /// The GeoTransform; `None` when it must come from the coordinates.
    pub transform: Option<[f64; 6]>,
    /// The EPSG code chunkcube recorded.
    pub epsg: Option<u32>,
}

/// The CRS and GeoTransform of a cube from its grid-mapping variable's attributes (none at
/// all when the variable is absent).
pub(crate) fn read_grid_mapping(store: &Store, name: &str) -> Result<GridMapping, StoreError> {
    let parse = |key: String, b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .map_err(|e| meta_err(store, &key, format!("invalid JSON: {e}")))
    };
    let sref = match store.get(&format!("{name}/zarr.json"))? {
        Some(b) => Some(parse(format!("{name}/zarr.json"), &b)?),
        None => match store.get(&format!("{name}/.zattrs"))? {
            Some(b) => Some(json!({ "attributes": parse(format!("{name}/.zattrs"), &b)? })),
            None => None,
        },
    };
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
        .trim()
        .to_string();
    if wkt.len() > super::limits::MAX_WKT_BYTES {
        return Err(meta_err(
            store,
            &format!("{name}/zarr.json"),
            format!(
                "crs_wkt of {} bytes is longer than the {} a CRS needs",
                wkt.len(),
                super::limits::MAX_WKT_BYTES
            ),
        ));
    }
    let transform = match sattr.get("GeoTransform").and_then(Value::as_str) {
        Some(s) => {
            let v: Vec<f64> = s
                .split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect();
            if v.len() != 6 {
                return Err(meta_err(
                    store,
                    &format!("{name}/zarr.json"),
                    format!("invalid GeoTransform '{s}'"),
                ));
            }
            Some([v[0], v[1], v[2], v[3], v[4], v[5]])
        }
        None => None,
    };
    let mut epsg = sattr.get("epsg").and_then(Value::as_u64).map(|e| e as u32);
    let mut wkt = wkt;
    if wkt.is_empty() && is_wgs84_lonlat(&sattr) {
        let (w, e) = crate::geo::crs_info("EPSG:4326")
            .map_err(|e| meta_err(store, &format!("{name}/zarr.json"), e.to_string()))?;
        (wkt, epsg) = (w, e);
    }
    Ok(GridMapping {
        wkt,
        transform,
        epsg,
    })
}

/// A CF grid mapping without WKT that still names a CRS: `latitude_longitude` on the WGS 84
/// ellipsoid (stated, or left to CF's default) is EPSG:4326. Another ellipsoid is left as
/// no CRS rather than guessed.
fn is_wgs84_lonlat(attrs: &Value) -> bool {
    let num = |k: &str| attrs.get(k).and_then(Value::as_f64);
    let near = |k: &str, want: f64| num(k).is_none_or(|v| (v - want).abs() <= 1e-6 * want);
    attrs.get("grid_mapping_name").and_then(Value::as_str) == Some("latitude_longitude")
        && near("semi_major_axis", 6_378_137.0)
        && near("inverse_flattening", 298.257_223_563)
}
