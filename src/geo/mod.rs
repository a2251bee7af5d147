//! Georeferencing: the [`GeoBox`] of a raster grid (CRS + affine transform + shape),
//! bounding boxes ↔ pixel windows, lon/lat → native CRS (EPSG:6933 in [`ease`], others through
//! GDAL/PROJ), dates of the
//! time axis, and the capture of GDAL's error messages.
//!
//! This module owns every call into GDAL's spatial-reference API; nothing else reprojects.
//! [`gdal_lazy`] makes the binaries load GDAL only on its first call.

pub mod ease;
mod gdal_errors;
pub mod gdal_lazy;
mod time;

pub use gdal_errors::{capture_gdal_errors, take_gdal_errors};
pub use gdal_lazy::gdal_loaded;
pub use time::{
    days_to_iso, encode_times, parse_period, parse_time, parse_time_range, CfUnits, Time, TimeError,
};

use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use std::ops::Range;

/// Errors of georeferencing.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The CRS WKT could not be parsed by GDAL.
    #[error("invalid CRS: {0}")]
    Crs(String),
    /// A coordinate transformation failed.
    #[error("cannot reproject {what}: {msg}")]
    Reproject {
        /// What was being reprojected.
        what: String,
        /// GDAL's message.
        msg: String,
    },
    /// A box with min > max or non-finite numbers.
    #[error("invalid box {0}: expected MIN,MAX with MIN <= MAX")]
    BadBox(String),
    /// A lon/lat operation on a grid without a CRS.
    #[error("this cube has no CRS, so longitudes and latitudes cannot be placed on it")]
    NoCrs,
}

/// A north-up raster grid: CRS, affine geotransform (GDAL order) and shape in pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoBox {
    /// The CRS as WKT (empty if unknown).
    pub wkt: String,
    /// EPSG code, where GDAL knows one.
    pub epsg: Option<u32>,
    /// GDAL geotransform `[x0, dx, 0, y0, 0, dy]` (dy negative for north-up).
    pub transform: [f64; 6],
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels.
    pub height: u64,
}

/// A half-open pixel window `rows × cols` of a grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelWindow {
    /// Row range (y).
    pub rows: Range<u64>,
    /// Column range (x).
    pub cols: Range<u64>,
}

impl GeoBox {
    /// Pixel size along x (positive).
    pub fn dx(&self) -> f64 {
        self.transform[1]
    }
    /// Pixel size along y (negative for north-up grids).
    pub fn dy(&self) -> f64 {
        self.transform[5]
    }

    /// x coordinates of pixel centres.
    pub fn x_coords(&self) -> Vec<f64> {
        (0..self.width)
            .map(|i| self.transform[0] + (i as f64 + 0.5) * self.dx())
            .collect()
    }

    /// y coordinates of pixel centres.
    pub fn y_coords(&self) -> Vec<f64> {
        (0..self.height)
            .map(|j| self.transform[3] + (j as f64 + 0.5) * self.dy())
            .collect()
    }

    /// Decimals that show a coordinate of this grid to a tenth of a pixel or better: 0 for
    /// 10 m pixels, 5 for 0.0001 degree pixels (so degree bounds are not rounded to whole
    /// degrees, nor metre bounds printed with float noise).
    pub fn decimals(&self) -> usize {
        decimals_for(self.dx().abs().min(self.dy().abs()))
    }

    /// Bounds `(minx, miny, maxx, maxy)` of the grid's outer edges.
    pub fn bounds(&self) -> [f64; 4] {
        let x0 = self.transform[0];
        let x1 = x0 + self.width as f64 * self.dx();
        let y0 = self.transform[3];
        let y1 = y0 + self.height as f64 * self.dy();
        [x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)]
    }

    /// The sub-grid of a pixel window: same CRS, shifted origin.
    pub fn window(&self, w: &PixelWindow) -> GeoBox {
        let mut t = self.transform;
        t[0] += w.cols.start as f64 * self.dx();
        t[3] += w.rows.start as f64 * self.dy();
        GeoBox {
            wkt: self.wkt.clone(),
            epsg: self.epsg,
            transform: t,
            width: w.cols.end - w.cols.start,
            height: w.rows.end - w.rows.start,
        }
    }

    /// The same grid north-up: rows in the opposite order when y grows with the row (dy > 0,
    /// as NetCDF/CMIP stores with ascending latitude have it), else unchanged. The flag says
    /// whether rows were reversed. GeoTIFF readers accept a positive dy, but many (COG
    /// viewers, tilers, rasterio's `bounds`) assume north-up, and a picture must be.
    pub fn north_up(&self) -> (GeoBox, bool) {
        if self.dy() <= 0.0 {
            return (self.clone(), false);
        }
        let mut g = self.clone();
        g.transform[3] = self.transform[3] + self.height as f64 * self.dy();
        g.transform[5] = -self.dy();
        (g, true)
    }

    /// The "x0 dx 0 y0 0 dy" string rioxarray stores as `GeoTransform`.
    pub fn gdal_transform_string(&self) -> String {
        self.transform
            .iter()
            .map(|v| format!("{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Every pixel whose centre lies inside the native-CRS box `[minx, miny, maxx, maxy]`
    /// (edges inclusive). The window may be empty.
    pub fn window_for_bbox(&self, b: [f64; 4]) -> PixelWindow {
        let cols = centre_range(self.transform[0], self.dx(), self.width, b[0], b[2]);
        let rows = centre_range(self.transform[3], self.dy(), self.height, b[1], b[3]);
        PixelWindow { rows, cols }
    }

    /// Whether the grid has a CRS (stores without one are computed in pixel space).
    pub fn has_crs(&self) -> bool {
        !self.wkt.trim().is_empty()
    }

    /// Whether the CRS is geographic (x and y in degrees of longitude and latitude): read
    /// from the WKT's root keyword, WKT1 `GEOGCS` or WKT2 `GEOGCRS`/`GEODCRS`, so no PROJ call.
    pub fn is_geographic(&self) -> bool {
        let w = self.wkt.trim_start().to_ascii_uppercase();
        self.epsg == Some(4326)
            || ["GEOGCS[", "GEOGCRS[", "GEODCRS[", "GEOGRAPHICCRS["]
                .iter()
                .any(|k| w.starts_with(k))
    }

    /// The grid's extent in longitude and latitude (EPSG:4326), `[lon_min, lat_min, lon_max,
    /// lat_max]`: the bounds of its outer edges reprojected, densified as rasterio's
    /// `transform_bounds` (for EPSG:6933 the same as gdalinfo's corner coordinates).
    pub fn lonlat_bounds(&self) -> Result<[f64; 4], GeoError> {
        if let Some(b) = self
            .ease()
            .and_then(|_| ease::inverse_bounds(self.bounds()))
        {
            return Ok(b);
        }
        let (src, dst) = self.lonlat_pair()?;
        let ct = CoordTransform::new(&dst, &src).map_err(|e| GeoError::Reproject {
            what: "the cube's bounds".into(),
            msg: e.to_string(),
        })?;
        ct.transform_bounds(&self.bounds(), 21)
            .map_err(|e| GeoError::Reproject {
                what: "the cube's bounds".into(),
                msg: e.to_string(),
            })
    }

    /// `Some` if this grid is in EPSG:6933, reprojected without GDAL (see [`ease`]); boxes
    /// outside its domain still go to GDAL, which decides how to wrap or refuse them.
    fn ease(&self) -> Option<()> {
        (self.has_crs() && self.epsg == Some(ease::EPSG)).then_some(())
    }

    /// EPSG:4326 and this grid's CRS, both in lon/lat (x, y) axis order.
    fn lonlat_pair(&self) -> Result<(SpatialRef, SpatialRef), GeoError> {
        if !self.has_crs() {
            return Err(GeoError::NoCrs);
        }
        let mut src = SpatialRef::from_epsg(4326).map_err(|e| GeoError::Crs(e.to_string()))?;
        src.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let mut dst = SpatialRef::from_wkt(&self.wkt).map_err(|e| GeoError::Crs(e.to_string()))?;
        dst.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        Ok((src, dst))
    }

    /// Reproject a lon/lat (EPSG:4326) box `[lon_min, lat_min, lon_max, lat_max]` to the bounds
    /// of its image in this grid's CRS (edges densified, as rasterio's `transform_bounds`).
    pub fn lonlat_to_native(&self, b: [f64; 4]) -> Result<[f64; 4], GeoError> {
        if let Some(n) = self.ease().and_then(|_| ease::forward_bounds(b)) {
            return Ok(n);
        }
        let (src, dst) = self.lonlat_pair()?;
        let ct = CoordTransform::new(&src, &dst).map_err(|e| GeoError::Reproject {
            what: "lon/lat box".into(),
            msg: e.to_string(),
        })?;
        ct.transform_bounds(&b, 21)
            .map_err(|e| GeoError::Reproject {
                what: format!("lon/lat box {b:?}"),
                msg: e.to_string(),
            })
    }
}

/// Indices `i` in `0..n` whose centre `origin + (i + 0.5) * step` lies in `[lo, hi]`.
fn centre_range(origin: f64, step: f64, n: u64, lo: f64, hi: f64) -> Range<u64> {
    // Solve for the index interval, then clamp; works for negative steps too.
    let a = (lo - origin) / step - 0.5;
    let b = (hi - origin) / step - 0.5;
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    let eps = 1e-9;
    let start = (a - eps).ceil().max(0.0);
    let end = ((b + eps).floor() + 1.0).min(n as f64);
    if !(start.is_finite() && end.is_finite()) || end <= start {
        return 0..0;
    }
    start as u64..end as u64
}

/// Parse a CRS description (WKT, `EPSG:n`) into WKT and, where known, its EPSG code.
pub fn crs_info(wkt: &str) -> Result<(String, Option<u32>), GeoError> {
    let sr = SpatialRef::from_definition(wkt).map_err(|e| GeoError::Crs(e.to_string()))?;
    let out = sr.to_wkt().map_err(|e| GeoError::Crs(e.to_string()))?;
    Ok((out, epsg_of(&sr)))
}

/// EPSG code of a spatial reference, if GDAL can identify one.
pub fn epsg_of(sr: &SpatialRef) -> Option<u32> {
    let mut sr = sr.clone();
    let _ = sr.auto_identify_epsg();
    match (sr.auth_name().as_deref(), sr.auth_code()) {
        (Some("EPSG"), Ok(code)) if code > 0 => Some(code as u32),
        _ => None,
    }
}

/// Decimals that show coordinates on a grid of pixel size `step` to a tenth of a pixel.
pub fn decimals_for(step: f64) -> usize {
    let step = tidy(step.abs());
    if !step.is_finite() || step <= 0.0 {
        return 2;
    }
    (1.0 - step.log10().floor()).clamp(0.0, 12.0) as usize
}

/// `v` to 12 significant digits: pixel sizes derived from coordinate arrays carry float
/// noise (`0.10000000000000142`) that says nothing about the grid.
pub fn tidy(v: f64) -> f64 {
    format!("{v:.11e}").parse().unwrap_or(v)
}

/// Whether two CRS descriptions denote the same CRS (GDAL's `IsSame`).
pub fn same_crs(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (SpatialRef::from_wkt(a), SpatialRef::from_wkt(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn coordinates_print_to_a_tenth_of_a_pixel_and_sizes_without_float_noise() {
        assert_eq!(super::decimals_for(10.0), 0);
        assert_eq!(super::decimals_for(30.0), 0);
        assert_eq!(super::decimals_for(0.5), 2);
        assert_eq!(super::decimals_for(0.0001), 5);
        assert_eq!(super::decimals_for(-0.000089831528), 6);
        assert_eq!(super::decimals_for(0.0), 2);
        assert_eq!(super::tidy(0.10000000000000142), 0.1);
        assert_eq!(super::tidy(-10.000000000000002), -10.0);
        assert_eq!(super::tidy(8.983152841195215e-5), 8.98315284120e-5);
    }

    use super::*;

    #[test]
    fn centre_range_selects_centres_inside() {
        // pixels of size 10 from 0: centres 5, 15, 25, ...
        assert_eq!(centre_range(0.0, 10.0, 10, 5.0, 25.0), 0..3);
        assert_eq!(centre_range(0.0, 10.0, 10, 6.0, 24.0), 1..2);
        assert_eq!(centre_range(0.0, 10.0, 10, -100.0, 1000.0), 0..10);
        assert_eq!(centre_range(0.0, 10.0, 10, 200.0, 300.0), 0..0);
        // north-up y: origin 100, step -10: centres 95, 85, ...
        assert_eq!(centre_range(100.0, -10.0, 10, 80.0, 96.0), 0..2);
    }

    #[test]
    fn north_up_reverses_rows_of_south_up_grids_only() {
        let g = |t: [f64; 6]| GeoBox {
            wkt: String::new(),
            epsg: None,
            transform: t,
            width: 8,
            height: 6,
        };
        // Latitude ascending from 9.5: rows' centres 9.55 .. 10.05.
        let south = g([20.0, 0.1, 0.0, 9.5, 0.0, 0.1]);
        let (n, flipped) = south.north_up();
        assert!(flipped);
        assert_eq!(n.bounds(), south.bounds());
        let mut ys = south.y_coords();
        ys.reverse();
        for (a, b) in n.y_coords().iter().zip(&ys) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        let north = g([20.0, 0.1, 0.0, 10.1, 0.0, -0.1]);
        assert_eq!(north.north_up(), (north.clone(), false));
    }

    #[test]
    fn geographic_crs_is_told_by_the_wkt_root() {
        let g = |wkt: &str, epsg| GeoBox {
            wkt: wkt.into(),
            epsg,
            transform: [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
            width: 1,
            height: 1,
        };
        assert!(g(r#"GEOGCS["WGS 84",DATUM["WGS_1984"]]"#, None).is_geographic());
        assert!(g(
            r#" GEOGCRS["WGS 84",DATUM["World Geodetic System 1984"]]"#,
            None
        )
        .is_geographic());
        assert!(g("", Some(4326)).is_geographic());
        // A projected CRS names its geographic base inside: not geographic.
        assert!(!g(
            r#"PROJCS["WGS 84 / NSIDC EASE-Grid 2.0 Global",GEOGCS["WGS 84"]]"#,
            Some(6933)
        )
        .is_geographic());
        assert!(!g(r#"PROJCRS["x",BASEGEOGCRS["WGS 84"]]"#, None).is_geographic());
        assert!(!g("", None).is_geographic());
    }
}
