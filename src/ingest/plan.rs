//! Plan the mosaic: the union of the tiles' extents on their common pixel grid, one band
//! array per measurement, and for every (band, time) the tiles placed on that grid.

use super::scan::TileInfo;
use super::IngestError;
use crate::geo::{same_crs, GeoBox};
use crate::store::DType;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

/// A tile placed on the mosaic grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The GeoTIFF.
    pub path: PathBuf,
    /// Column of the tile's first pixel in the mosaic.
    pub col: u64,
    /// Row of the tile's first pixel in the mosaic.
    pub row: u64,
    /// Tile width.
    pub width: u64,
    /// Tile height.
    pub height: u64,
}

/// One band of the planned cube.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanBand {
    /// Band name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Nodata value.
    pub nodata: Option<f64>,
    /// For each time index, its tiles in priority order (sorted by path: where tiles overlap,
    /// the first tile with a valid pixel wins).
    pub tiles: Vec<Vec<Placed>>,
}

/// The planned cube.
#[derive(Debug, Clone, PartialEq)]
pub struct MosaicPlan {
    /// The mosaic grid.
    pub geobox: GeoBox,
    /// Sorted unique times.
    pub times: Vec<crate::geo::Time>,
    /// Bands sorted by name.
    pub bands: Vec<PlanBand>,
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Check the tiles agree and lay them on one grid.
pub fn plan_mosaic(tiles: &[TileInfo]) -> Result<MosaicPlan, IngestError> {
    let first = tiles
        .first()
        .ok_or_else(|| IngestError::NoTiles("(empty list)".into()))?;
    let (dx, dy) = (first.transform[1], first.transform[5]);
    let (ox, oy) = (first.transform[0], first.transform[3]);
    let mut crs_checked: Vec<&str> = vec![first.wkt.as_str()];
    let mut seen_paths = HashSet::new();
    let mut minx = f64::INFINITY;
    let mut maxy = f64::NEG_INFINITY;
    let mut maxx = f64::NEG_INFINITY;
    let mut miny = f64::INFINITY;
    let file = |t: &TileInfo| super::remote::display_name(&t.source.path);
    for t in tiles {
        if !seen_paths.insert(t.source.path.clone()) {
            return Err(IngestError::Duplicate(format!(
                "file {} is listed twice",
                file(t)
            )));
        }
        if !crs_checked.contains(&t.wkt.as_str()) {
            if !same_crs(&t.wkt, &first.wkt) {
                return Err(IngestError::Mismatch {
                    file: file(t),
                    msg: format!(
                        "mixed CRS: EPSG:{} here but EPSG:{} in {}",
                        t.epsg.map_or("?".into(), |e| e.to_string()),
                        first.epsg.map_or("?".into(), |e| e.to_string()),
                        file(first)
                    ),
                });
            }
            crs_checked.push(t.wkt.as_str());
        }
        if !close(t.transform[1], dx) || !close(t.transform[5], dy) {
            return Err(IngestError::Mismatch {
                file: file(t),
                msg: format!(
                    "mixed resolution: pixel size {}x{} here but {}x{} in {}",
                    t.transform[1],
                    t.transform[5],
                    dx,
                    dy,
                    file(first)
                ),
            });
        }
        let cx = (t.transform[0] - ox) / dx;
        let cy = (t.transform[3] - oy) / dy;
        if (cx - cx.round()).abs() > 1e-6 || (cy - cy.round()).abs() > 1e-6 {
            return Err(IngestError::Mismatch {
                file: file(t),
                msg: format!("grid offset of ({cx:.4}, {cy:.4}) pixels from {} is not a whole number of pixels", file(first)),
            });
        }
        minx = minx.min(t.transform[0]);
        maxy = maxy.max(t.transform[3]);
        maxx = maxx.max(t.transform[0] + t.width as f64 * dx);
        miny = miny.min(t.transform[3] + t.height as f64 * dy);
    }
    let width = ((maxx - minx) / dx).round() as u64;
    let height = ((maxy - miny) / -dy).round() as u64;
    let geobox = GeoBox {
        wkt: first.wkt.clone(),
        epsg: first.epsg,
        transform: [minx, dx, 0.0, maxy, 0.0, dy],
        width,
        height,
    };
    let times: Vec<crate::geo::Time> = tiles
        .iter()
        .map(|t| t.source.time)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    let mut by_band: BTreeMap<&str, Vec<&TileInfo>> = BTreeMap::new();
    for t in tiles {
        by_band.entry(t.source.band.as_str()).or_default().push(t);
    }
    let mut bands = Vec::new();
    for (name, ts) in by_band {
        let b0 = ts[0];
        let mut per_time: Vec<Vec<Placed>> = vec![Vec::new(); times.len()];
        let mut extents: HashMap<(usize, u64, u64, u64, u64), &TileInfo> = HashMap::new();
        for t in &ts {
            if t.dtype != b0.dtype {
                return Err(IngestError::Mismatch {
                    file: file(t),
                    msg: format!(
                        "band '{name}' is {} here but {} in {}",
                        t.dtype,
                        b0.dtype,
                        file(b0)
                    ),
                });
            }
            let same_nodata = match (t.nodata, b0.nodata) {
                (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
                (None, None) => true,
                _ => false,
            };
            if !same_nodata {
                return Err(IngestError::Mismatch {
                    file: file(t),
                    msg: format!(
                        "band '{name}' has nodata {:?} here but {:?} in {}",
                        t.nodata,
                        b0.nodata,
                        file(b0)
                    ),
                });
            }
            let col = ((t.transform[0] - minx) / dx).round() as u64;
            let row = ((t.transform[3] - maxy) / dy).round() as u64;
            let ti = times.binary_search(&t.source.time).unwrap_or(0);
            if let Some(prev) = extents.insert((ti, col, row, t.width, t.height), t) {
                return Err(IngestError::Duplicate(format!(
                    "band '{name}' at {} has two tiles with the same extent: {} ({}) and {} ({})",
                    t.source.time,
                    file(prev),
                    prev.source.origin,
                    file(t),
                    t.source.origin
                )));
            }
            per_time[ti].push(Placed {
                path: t.source.path.clone(),
                col,
                row,
                width: t.width,
                height: t.height,
            });
        }
        for v in &mut per_time {
            v.sort_by(|a, b| a.path.cmp(&b.path));
        }
        let nodata = match b0.nodata {
            Some(v) => Some(v),
            None if b0.dtype.is_float() => Some(f64::NAN),
            None => None,
        };
        bands.push(PlanBand {
            name: name.to_string(),
            dtype: b0.dtype,
            nodata,
            tiles: per_time,
        });
    }
    Ok(MosaicPlan {
        geobox,
        times,
        bands,
    })
}
