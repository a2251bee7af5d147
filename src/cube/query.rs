//! Queries: what `dc.load` takes, mapped to a pixel window of the cube.

use super::{Cube, CubeError, DataArray, Dataset};
use crate::geo::{GeoBox, PixelWindow, Time};
use crate::store::ChunkSpec;
use std::ops::Range;

/// A selection of a cube, as `dc.load(product, measurements, x, y, time, dask_chunks)`.
///
/// Spatial selections pick every pixel whose centre lies inside the box. Ranges must be
/// ordered (min ≤ max). A selection that selects nothing is an error, never an empty result.
/// `isel` ranges are cube indices and intersect the other selections.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Bands to load (all when `None`).
    pub measurements: Option<Vec<String>>,
    /// Longitude range (EPSG:4326).
    pub lon: Option<(f64, f64)>,
    /// Latitude range (EPSG:4326).
    pub lat: Option<(f64, f64)>,
    /// Box in the cube's CRS: minx, miny, maxx, maxy.
    pub bbox: Option<[f64; 4]>,
    /// Index ranges along time, y, x.
    pub isel: [Option<Range<u64>>; 3],
    /// Time range, half-open `[start, end)` (see [`Query::time`]).
    pub time: Option<(Time, Time)>,
    /// Query chunks (lazy); `None` = eager.
    pub chunks: Option<ChunkSpec>,
    /// A problem found while building the query, reported when it runs.
    pub invalid: Option<String>,
}

impl Query {
    /// An empty query: everything, eager.
    pub fn new() -> Query {
        Query::default()
    }
    /// Select bands.
    pub fn measurements(mut self, m: &[&str]) -> Query {
        self.measurements = Some(m.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Select a lon/lat box (EPSG:4326).
    pub fn lon_lat(mut self, lon: (f64, f64), lat: (f64, f64)) -> Query {
        self.lon = Some(lon);
        self.lat = Some(lat);
        self
    }
    /// Select a box in the cube's CRS.
    pub fn bbox(mut self, b: [f64; 4]) -> Query {
        self.bbox = Some(b);
        self
    }
    /// Select index ranges (`dim` in time, y, x).
    pub fn isel(mut self, dim: &str, r: Range<u64>) -> Query {
        match crate::store::dim_index(dim) {
            Some(i) => self.isel[i] = Some(r),
            None => {
                self.invalid = Some(format!(
                    "isel: unknown dimension '{dim}' (dimensions are {})",
                    crate::store::DIM_NAMES
                ))
            }
        }
        self
    }
    /// Select index ranges from text as `--isel` takes it: `time=0:1,y=100:200,x=100:200`
    /// (end exclusive). A dimension named twice, an unknown dimension or a bound that is not
    /// a non-negative integer is an error naming the part.
    pub fn isel_spec(mut self, spec: &str) -> Result<Query, CubeError> {
        let bad = |part: &str, msg: String| CubeError::BadArg {
            what: "--isel".into(),
            value: part.trim().to_string(),
            msg,
        };
        let mut seen = [false; 3];
        for part in spec.split(',') {
            let (d, r) = part
                .split_once('=')
                .ok_or_else(|| bad(part, "expected DIM=A:B, e.g. y=100:200".into()))?;
            let d = d.trim();
            let i = crate::store::dim_index(d).ok_or_else(|| {
                bad(
                    part,
                    format!("unknown dimension '{d}' ({})", crate::store::DIM_NAMES),
                )
            })?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(bad(part, format!("'{d}' is given more than once")));
            }
            let (a, b) = r
                .split_once(':')
                .ok_or_else(|| bad(part, "expected DIM=A:B, e.g. y=100:200".into()))?;
            let num = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(part, format!("'{}' is not a non-negative index", v.trim())))
            };
            self.isel[i] = Some(num(a)?..num(b)?);
        }
        Ok(self)
    }

    /// Select an inclusive time range of ISO periods, from the start of `start`'s to the end
    /// of `end`'s, as `dc.load(time=(start, end))` and xarray's `.sel(time=slice(...))`:
    /// `("2019", "2020")` is both whole years, `("2019-06", "2019-08")` June to August,
    /// `("2019-07-02", "2019-07-02")` every step of that day.
    pub fn time(mut self, start: &str, end: &str) -> Result<Query, CubeError> {
        let p = |s: &str| crate::geo::parse_period(s).map_err(time_err);
        self.time = Some((p(start)?.0, p(end)?.1));
        Ok(self)
    }
    /// Select by a `--time` text: `START/END` as [`Query::time`], or one period (`2019`,
    /// `2019-06`, `2019-06-01`), which selects that whole period.
    pub fn time_spec(mut self, spec: &str) -> Result<Query, CubeError> {
        self.time = Some(crate::geo::parse_time_range(spec).map_err(time_err)?);
        Ok(self)
    }
    /// Lazy load with chunks (`dask_chunks`).
    pub fn chunks(mut self, c: ChunkSpec) -> Query {
        self.chunks = Some(c);
        self
    }
}

fn time_err(e: crate::geo::TimeError) -> CubeError {
    sel_err("--time", e.to_string())
}

fn sel_err(what: &str, msg: impl Into<String>) -> CubeError {
    CubeError::Selection {
        what: what.into(),
        msg: msg.into(),
    }
}

fn intersect(a: Range<u64>, b: Range<u64>) -> Range<u64> {
    a.start.max(b.start)..a.end.min(b.end).max(a.start.max(b.start))
}

/// The window `[time, y, x]` a query selects.
pub(crate) fn resolve_window(cube: &Cube, q: &Query) -> Result<[Range<u64>; 3], CubeError> {
    if let Some(m) = &q.invalid {
        return Err(sel_err("query", m.clone()));
    }
    let meta = cube.meta();
    let g = &meta.geobox;
    let mut w = [0..meta.times.len() as u64, 0..g.height, 0..g.width];
    let ordered = |what: &str, a: f64, b: f64| {
        if !(a.is_finite() && b.is_finite()) || a > b {
            Err(sel_err(
                what,
                format!("{a},{b}: expected MIN,MAX with MIN <= MAX"),
            ))
        } else {
            Ok(())
        }
    };
    if q.lon.is_some() != q.lat.is_some() {
        return Err(sel_err(
            "--lon/--lat",
            "give both a longitude and a latitude range",
        ));
    }
    if let (Some(lon), Some(lat)) = (q.lon, q.lat) {
        ordered("--lon", lon.0, lon.1)?;
        ordered("--lat", lat.0, lat.1)?;
        if lat.0 < -90.0 || lat.1 > 90.0 || lon.0 < -180.0 || lon.1 > 180.0 {
            return Err(sel_err(
                "--lon/--lat",
                "longitudes must lie in -180..180 and latitudes in -90..90",
            ));
        }
        if !g.has_crs() {
            return Err(sel_err(
                "--lon/--lat",
                "this cube has no CRS; select with --bbox (in the cube's x/y coordinates) or --isel",
            ));
        }
        let nb = g
            .lonlat_to_native([lon.0, lat.0, lon.1, lat.1])
            .map_err(|e| sel_err("--lon/--lat", e.to_string()))?;
        let PixelWindow { rows, cols } = g.window_for_bbox(nb);
        if rows.is_empty() || cols.is_empty() {
            let given = [lon.0, lat.0, lon.1, lat.1];
            return Err(sel_err("--lon/--lat", empty_box(g, nb, Some(given))));
        }
        w[1] = intersect(w[1].clone(), rows);
        w[2] = intersect(w[2].clone(), cols);
    }
    if let Some(b) = q.bbox {
        ordered("--bbox x", b[0], b[2])?;
        ordered("--bbox y", b[1], b[3])?;
        let PixelWindow { rows, cols } = g.window_for_bbox(b);
        if rows.is_empty() || cols.is_empty() {
            return Err(sel_err("--bbox", empty_box(g, b, None)));
        }
        w[1] = intersect(w[1].clone(), rows);
        w[2] = intersect(w[2].clone(), cols);
    }
    for (i, r) in q.isel.iter().enumerate() {
        if let Some(r) = r {
            let dim = crate::store::DIMS[i];
            let n = [meta.times.len() as u64, g.height, g.width][i];
            if r.start >= r.end {
                return Err(sel_err(
                    "--isel",
                    format!("{dim}={}:{} is empty or reversed", r.start, r.end),
                ));
            }
            if r.end > n {
                return Err(sel_err(
                    "--isel",
                    format!("{dim}={}:{} is out of bounds (size {n})", r.start, r.end),
                ));
            }
            w[i] = intersect(w[i].clone(), r.clone());
        }
    }
    if let Some((a, b)) = q.time {
        if a >= b {
            return Err(sel_err(
                "--time",
                format!("is reversed: it starts at {a} and ends before it, at {b}"),
            ));
        }
        let idx: Vec<u64> = meta
            .times
            .iter()
            .enumerate()
            .filter(|(_, t)| **t >= a && **t < b)
            .map(|(i, _)| i as u64)
            .collect();
        let (Some(first), Some(last)) = (idx.first(), idx.last()) else {
            let have = meta
                .times
                .iter()
                .map(Time::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(sel_err(
                "--time",
                format!("no time steps from {a} to before {b}; the cube has {have}"),
            ));
        };
        w[0] = intersect(w[0].clone(), *first..last + 1);
    }
    for (i, r) in w.iter().enumerate() {
        if r.is_empty() {
            return Err(sel_err(
                "selection",
                format!("selects no pixels along {}", crate::store::DIMS[i]),
            ));
        }
    }
    Ok(w)
}

/// Why a box selects no pixel: outside the cube, or inside its bounds but holding no pixel
/// centre; with the cube's bounds, in lon/lat too when the box was given in lon/lat
/// (`lonlat`) or looks like degrees.
fn empty_box(g: &GeoBox, b: [f64; 4], lonlat: Option<[f64; 4]>) -> String {
    let cb = g.bounds();
    let overlaps = b[0] <= cb[2] && b[2] >= cb[0] && b[1] <= cb[3] && b[3] >= cb[1];
    let crs = g
        .epsg
        .map(|e| format!("EPSG:{e}"))
        .unwrap_or_else(|| "the cube's CRS".into());
    let mut msg = match lonlat {
        Some(l) => format!("the box lon {},{} lat {},{}", l[0], l[2], l[1], l[3]),
        None => "the box".into(),
    };
    if overlaps {
        msg += &format!(
            " lies within the cube's bounds but holds no pixel centre (pixels are {} x {}); widen it",
            crate::geo::tidy(g.dx().abs()),
            crate::geo::tidy(g.dy().abs())
        );
    } else {
        msg += " lies outside the cube";
    }
    let d = g.decimals();
    msg += &format!(
        " (cube bounds {:.d$},{:.d$},{:.d$},{:.d$} in {crs}",
        cb[0], cb[1], cb[2], cb[3]
    );
    let degrees = |v: [f64; 4]| {
        v[0].abs() <= 180.0 && v[2].abs() <= 180.0 && v[1].abs() <= 90.0 && v[3].abs() <= 90.0
    };
    let projected = !degrees(cb);
    let like_degrees = lonlat.is_none() && projected && degrees(b);
    if lonlat.is_some() || like_degrees {
        if let Ok(l) = g.lonlat_bounds() {
            msg += &format!("; lon {:.4},{:.4} lat {:.4},{:.4}", l[0], l[2], l[1], l[3]);
            if let Some(x) = lonlat {
                let swapped = x[1] <= l[2] && x[3] >= l[0] && x[0] <= l[3] && x[2] >= l[1];
                if !overlaps && swapped {
                    msg += "; --lon and --lat look swapped";
                }
            }
        }
    }
    msg.push(')');
    if like_degrees {
        msg += &format!(
            "; --bbox is in the cube's CRS ({crs}): for longitudes and latitudes use --lon/--lat"
        );
    }
    msg
}

/// Run a query.
pub(crate) fn run(cube: &Cube, q: &Query) -> Result<Dataset, CubeError> {
    let names: Vec<String> = match &q.measurements {
        Some(m) if m.is_empty() => return Err(sel_err("--measurements", "empty list")),
        Some(m) => m.clone(),
        None => cube.band_names(),
    };
    let window = resolve_window(cube, q)?;
    let mut ds = Dataset::new();
    for n in &names {
        let band = cube.band(n)?.clone();
        let da = DataArray::from_band(cube, band, &window, q.chunks.as_ref());
        ds.insert(n, da);
    }
    if q.chunks.is_none() {
        ds.load()?;
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::Query;
    use proptest::prelude::*;

    #[test]
    fn isel_specs() {
        let q = Query::new()
            .isel_spec("time=0:1, y=100:200,x = 3:4")
            .unwrap();
        assert_eq!(q.isel, [Some(0..1), Some(100..200), Some(3..4)]);
        for (spec, says) in [
            ("time=0:1,time=0:1", "'time' is given more than once"),
            ("z=0:1", "unknown dimension 'z'"),
            ("y=-1:3", "'-1' is not a non-negative index"),
            ("y=1", "expected DIM=A:B"),
            ("y", "expected DIM=A:B"),
        ] {
            let e = Query::new().isel_spec(spec).unwrap_err().to_string();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    proptest! {
        /// Any text: a query or an error, never a panic; well-formed specs read back.
        #[test]
        fn isel_spec_never_panics(s in "\\PC{0,40}") {
            let _ = Query::new().isel_spec(&s);
        }

        #[test]
        fn isel_spec_round_trips(r in prop::collection::vec((0u64..1000, 0u64..1000), 3), mask in 1u8..8) {
            let dims = ["time", "y", "x"];
            let parts: Vec<String> = (0..3).filter(|i| mask & (1 << i) != 0)
                .map(|i| format!("{}={}:{}", dims[i], r[i].0, r[i].1)).collect();
            let q = Query::new().isel_spec(&parts.join(",")).unwrap();
            for (i, (a, b)) in r.iter().enumerate() {
                let want = (mask & (1 << i) != 0).then_some(*a..*b);
                prop_assert_eq!(q.isel[i].clone(), want);
            }
        }
    }
}
