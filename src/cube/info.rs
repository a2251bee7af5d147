//! What `chunkcube info` tells of a cube: dims, CRS, bounds, times, and per band its dtype,
//! nodata, chunking and stored size (from one listing per band; no chunk is read).

use super::{Cube, CubeError};
use crate::store::{format_bytes, grid_shape};
use serde::{Serialize, Serializer};

/// A cube described (`chunkcube info --json` writes this).
#[derive(Debug, Clone, Serialize)]
pub struct CubeInfo {
    /// The cube's URL as given.
    pub cube: String,
    /// Where the arrays are when not at the cube's root: the Zarr group an S3 cube replaced
    /// with `--overwrite` keeps them in (other tools open it with `group=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_group: Option<String>,
    /// Product name.
    pub product: String,
    /// Dimension names.
    pub dims: [&'static str; 3],
    /// The bands' dimensions as stored (`latitude, longitude` read as y, x; a 2-D array is
    /// one step).
    pub stored_dims: Vec<String>,
    /// Shape `[time, y, x]`.
    pub shape: [u64; 3],
    /// `EPSG:n` when the CRS has an EPSG code.
    pub crs: Option<String>,
    /// Whether the cube has a CRS at all (without one it is computed in pixel space).
    pub has_crs: bool,
    /// Bounds in the cube's CRS: min x, min y, max x, max y.
    pub bounds: [f64; 4],
    /// The extent in EPSG:4326: min lon, min lat, max lon, max lat (none without a CRS).
    pub lonlat_bounds: Option<[f64; 4]>,
    /// The store's Zarr format (2 for Zarr v2 stores other tools wrote).
    pub zarr_format: u8,
    /// GDAL geotransform of the first pixel.
    pub transform: [f64; 6],
    /// Pixel size along x and y (y negative for north-up).
    pub resolution: [f64; 2],
    /// Time steps: ISO dates at midnight, ISO datetimes (UTC) otherwise.
    pub time: Vec<String>,
    /// The CF bounds of each step (first and last step a reduction spans), when stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_bounds: Option<Vec<[String; 2]>>,
    /// What every band did over time (`mean` of `cell_methods: "time: mean"`), when they agree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_method: Option<String>,
    /// The bands.
    pub bands: Vec<BandInfo>,
    /// Chunks of all bands' grids.
    pub chunks: u64,
    /// Encoded bytes of all bands.
    pub stored_bytes: u64,
}

/// One band of [`CubeInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct BandInfo {
    /// Band name.
    pub name: String,
    /// Element type.
    pub dtype: String,
    /// Nodata (`"NaN"` in JSON for NaN).
    #[serde(serialize_with = "nodata_json")]
    pub nodata: Option<f64>,
    /// Shape `[time, y, x]`.
    pub shape: [u64; 3],
    /// The chunk shape of reading (inner chunks of shards).
    pub chunk_shape: [u64; 3],
    /// The shard shape of sharded bands.
    pub shard_shape: Option<[u64; 3]>,
    /// Chunks (or shards) of the band's grid.
    pub chunks: u64,
    /// CF `cell_methods` (what reductions made the values), when stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_methods: Option<String>,
    /// CF packing, when the band is stored packed (`dtype` is then the stored type; its
    /// values read as `packed.dtype`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packed: Option<PackedInfo>,
    /// Objects stored (absent chunks are fill).
    pub stored_objects: u64,
    /// Their encoded bytes.
    pub stored_bytes: u64,
}

/// How a packed band's stored values become its values: `raw * scale_factor + add_offset`.
#[derive(Debug, Clone, Serialize)]
pub struct PackedInfo {
    /// `scale_factor` (1 when not stored).
    pub scale_factor: f64,
    /// `add_offset` (0 when not stored).
    pub add_offset: f64,
    /// The dtype the values read as.
    pub dtype: String,
    /// `×0.0000275 + -0.2 → float64`.
    #[serde(skip)]
    pub text: String,
}

/// The methods `cell_methods` names for time, in the order applied: `[mean]` of
/// `time: mean`, `[median]` of `time: median x: mean`, `[median, mean]` of
/// `time: median time: mean` (CF also allows `time: mean (interval: 1 day)`).
fn time_methods(cm: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut words = cm.split_whitespace();
    while words.by_ref().any(|w| w == "time:") {
        if let Some(m) = words.by_ref().find(|w| !w.ends_with(':')) {
            out.push(m);
        }
    }
    out
}

/// What a band did over time, the last reduction first (`mean of median`, as one reads a
/// mean of medians); a count is CF's `time: sum` of a `number_of_observations`.
fn band_time_method(b: &crate::store::layout::BandMeta) -> Option<String> {
    let attr = |k: &str| b.attributes.get(k).and_then(|v| v.as_str());
    let mut ms = time_methods(attr("cell_methods")?);
    let counts = attr("long_name").is_some_and(|l| l.starts_with("number_of_observations"));
    if counts && ms.first() == Some(&"sum") {
        ms[0] = "count";
    }
    (!ms.is_empty()).then(|| ms.iter().rev().copied().collect::<Vec<_>>().join(" of "))
}

fn stored_dims(d: crate::store::layout::BandDims) -> Vec<String> {
    let t = (!d.two_d).then_some("time");
    t.into_iter().chain(d.yx()).map(String::from).collect()
}

fn nodata_json<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) if v.is_nan() => s.serialize_str("NaN"),
        Some(v) => s.serialize_f64(*v),
        None => s.serialize_none(),
    }
}

impl CubeInfo {
    /// Describe `cube` (one listing per band).
    pub fn of(cube: &Cube) -> Result<CubeInfo, CubeError> {
        let m = cube.meta();
        let g = &m.geobox;
        let mut bands = Vec::new();
        for b in &m.bands {
            let listed = cube.store().list_sizes(&format!("{}/", b.name))?;
            let (n, bytes) = listed
                .iter()
                .filter(|(k, _)| {
                    !k.ends_with("zarr.json") && !k.ends_with(crate::store::manifest::MANIFEST_FILE)
                })
                .fold((0u64, 0u64), |(n, s), (_, sz)| (n + 1, s + sz));
            bands.push(BandInfo {
                name: b.name.clone(),
                dtype: b.dtype.to_string(),
                nodata: b.nodata,
                shape: b.shape,
                chunk_shape: b.read_chunk_shape(),
                shard_shape: b.inner_chunk_shape.map(|_| b.chunk_shape),
                cell_methods: b
                    .attributes
                    .get("cell_methods")
                    .and_then(|v| v.as_str())
                    .map(String::from),
                chunks: grid_shape(b.shape, b.chunk_shape).iter().product(),
                packed: b.packing.map(|p| PackedInfo {
                    scale_factor: p.scale,
                    add_offset: p.offset,
                    dtype: crate::store::packing::Packing::DTYPE.to_string(),
                    text: p.describe(),
                }),
                stored_objects: n,
                stored_bytes: bytes,
            });
        }
        Ok(CubeInfo {
            cube: cube.store().root().url().to_string(),
            data_group: (cube.store().root().url() != cube.store().url())
                .then(|| cube.store().url().to_string()),
            product: m.product.clone(),
            dims: crate::store::DIMS,
            stored_dims: m
                .bands
                .first()
                .map(|b| stored_dims(b.dims))
                .unwrap_or_default(),
            shape: [m.times.len() as u64, g.height, g.width],
            crs: g.epsg.map(|e| format!("EPSG:{e}")),
            has_crs: g.has_crs(),
            bounds: g.bounds(),
            lonlat_bounds: g.lonlat_bounds().ok(),
            zarr_format: m.zarr_format,
            transform: g.transform,
            resolution: [crate::geo::tidy(g.dx()), crate::geo::tidy(g.dy())],
            time: m.times.iter().map(|t| t.to_string()).collect(),
            time_bounds: m.time_bounds.as_ref().map(|b| {
                b.iter()
                    .map(|[a, z]| [a.to_string(), z.to_string()])
                    .collect()
            }),
            time_method: {
                let mut it = m.bands.iter().map(band_time_method);
                let first = it.next().flatten();
                it.all(|m| m == first).then_some(first).flatten()
            },
            chunks: bands.iter().map(|b| b.chunks).sum(),
            stored_bytes: bands.iter().map(|b| b.stored_bytes).sum(),
            bands,
        })
    }
}

impl std::fmt::Display for CubeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cube        {}", self.cube)?;
        if let Some(d) = &self.data_group {
            writeln!(f, "data group  {d}")?;
        }
        writeln!(f, "product     {}", self.product)?;
        writeln!(
            f,
            "dims        time: {}, y: {}, x: {}",
            self.shape[0], self.shape[1], self.shape[2]
        )?;
        if self.stored_dims != crate::store::DIMS {
            writeln!(f, "stored as   ({})", self.stored_dims.join(", "))?;
        }
        if self.zarr_format != 3 {
            writeln!(f, "format      Zarr v{}", self.zarr_format)?;
        }
        let crs = match (&self.crs, self.has_crs) {
            (Some(c), _) => c.as_str(),
            (None, true) => "custom (see spatial_ref)",
            (None, false) => "none (x/y as stored; select with --bbox or --isel)",
        };
        writeln!(f, "crs         {crs}")?;
        let b = self.bounds;
        // At least centimetres for metre grids; enough decimals for degree grids.
        let d =
            crate::geo::decimals_for(self.resolution[0].abs().min(self.resolution[1].abs())).max(2);
        writeln!(
            f,
            "bounds      {:.d$}, {:.d$}, {:.d$}, {:.d$} (minx, miny, maxx, maxy)",
            b[0], b[1], b[2], b[3]
        )?;
        if let Some(l) = self.lonlat_bounds {
            writeln!(
                f,
                "lon/lat     {:.6}, {:.6}, {:.6}, {:.6} (min lon, min lat, max lon, max lat; EPSG:4326)",
                l[0], l[1], l[2], l[3]
            )?;
        }
        writeln!(
            f,
            "resolution  {} x {}",
            self.resolution[0], self.resolution[1]
        )?;
        match &self.time_bounds {
            None => writeln!(f, "time        {}", self.time.join(", "))?,
            Some(bounds) => {
                let n = self.time.len();
                let of = self
                    .time_method
                    .as_ref()
                    .map(|m| format!("{m} of "))
                    .unwrap_or_default();
                let steps: Vec<String> = self
                    .time
                    .iter()
                    .zip(bounds)
                    .map(|(t, [a, z])| format!("{t} ({of}{a}..{z})"))
                    .collect();
                let s = if n == 1 { "" } else { "s" };
                writeln!(f, "time        {n} step{s}: {}", steps.join(", "))?
            }
        }
        writeln!(f, "bands:")?;
        // A packed band says how its stored values read: `uint16 (packed: ×… → float64)`.
        let dtypes: Vec<String> = self
            .bands
            .iter()
            .map(|bi| match &bi.packed {
                None => bi.dtype.clone(),
                Some(p) => format!("{} (packed: {})", bi.dtype, p.text),
            })
            .collect();
        let w = dtypes
            .iter()
            .map(|d| d.chars().count())
            .max()
            .unwrap_or(0)
            .max(8);
        writeln!(
            f,
            "  {:<10} {:<w$} {:>8} {:>22} {:>10} {:>12}",
            "name", "dtype", "nodata", "chunk shape", "chunks", "stored"
        )?;
        for (bi, dtype) in self.bands.iter().zip(&dtypes) {
            let c = bi.chunk_shape;
            writeln!(
                f,
                "  {:<10} {:<w$} {:>8} {:>22} {:>10} {:>12}",
                bi.name,
                dtype,
                bi.nodata
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("({}, {}, {})", c[0], c[1], c[2]),
                bi.chunks,
                format_bytes(bi.stored_bytes)
            )?;
        }
        writeln!(
            f,
            "total       {} chunks, {} stored",
            self.chunks,
            format_bytes(self.stored_bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::time_methods;

    #[test]
    fn time_methods_are_read_in_the_order_applied() {
        assert_eq!(time_methods("time: mean"), ["mean"]);
        assert_eq!(time_methods("time: median x: mean"), ["median"]);
        assert_eq!(time_methods("x: mean time: median"), ["median"]);
        assert_eq!(time_methods("time: median time: mean"), ["median", "mean"]);
        assert_eq!(
            time_methods("lat: lon: mean time: maximum (interval: 1 day)"),
            ["maximum"]
        );
        assert_eq!(time_methods("area: mean"), Vec::<&str>::new());
        assert_eq!(time_methods("time:"), Vec::<&str>::new());
    }
}
