//! The check that a tile opened for its pixels is still the tile the plan was made from.
//!
//! A worker of a job plans from the saved scan ([`super::savedscan`]) without reading any
//! tile's header; a tile replaced on its server since the scan would be read with the old
//! tile's grid, silently placing wrong pixels. The chunk tasks open each tile anyway, and that
//! open already holds what tells most replacements apart, at no request: the header (size in
//! pixels, geotransform, CRS, band count, data type, nodata) and the object's size and
//! `Last-Modified` time, which GDAL keeps from the open's own HEAD (`/vsicurl/`) or first
//! ranged GET (`/vsis3/`) and `VSIStatExL(…, VSI_STAT_CACHE_ONLY)` returns (checked with
//! `CPL_CURL_VERBOSE`: no request between the open and the first pixel read). The ETag is
//! not compared: GDAL 3.6 only gives it through `VSIGetFileMetadata(…, "HEADERS")`, which
//! sends another HEAD (or GET) per tile. Local tiles are checked the same way (a `stat`).

use super::scan::{dtype_of, TileInfo};
use super::IngestError;
use crate::geo::{same_crs, tidy, Time};
use crate::store::DType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What one tile looked like when it was scanned.
#[derive(Debug, Clone)]
struct Expected {
    width: u64,
    height: u64,
    transform: [f64; 6],
    wkt: String,
    dtype: DType,
    nodata: Option<f64>,
    /// File size in bytes (`None`: unknown to the scan).
    size: Option<u64>,
    /// Modification time: seconds since the epoch for a remote tile (HTTP's resolution),
    /// nanoseconds for a local one (`None`: unknown to the scan, e.g. no `Last-Modified`).
    mtime: Option<i128>,
}

/// The expected state of every tile of a plan, and where it was learnt.
#[derive(Debug, Clone, Default)]
pub(crate) struct TileChecks {
    tiles: HashMap<PathBuf, Expected>,
    /// Planned from the scan saved by `--scan-only` (not this process's own scan).
    saved: bool,
}

impl TileChecks {
    /// The checks of the tiles `infos` with their identities (as [`super::write::tile_identity`]
    /// writes them), learnt from the saved scan when `saved`.
    pub(crate) fn new(infos: &[TileInfo], identities: &[String], saved: bool) -> TileChecks {
        let tiles = infos
            .iter()
            .zip(identities)
            .map(|(t, id)| {
                let (size, mtime) = parse_identity(&t.source.path, id);
                let e = Expected {
                    width: t.width,
                    height: t.height,
                    transform: t.transform,
                    wkt: t.wkt.clone(),
                    dtype: t.dtype,
                    nodata: t.nodata,
                    size,
                    mtime,
                };
                (t.source.path.clone(), e)
            })
            .collect();
        TileChecks { tiles, saved }
    }

    /// Check the freshly opened `ds` of the tile at `path` against its scan: `Err` naming the
    /// tile and what changed. Sends no request (see the module documentation).
    pub(crate) fn check(&self, path: &Path, ds: &gdal::Dataset) -> Result<(), IngestError> {
        let Some(e) = self.tiles.get(path) else {
            return Ok(());
        };
        let what = differences(path, ds, e);
        if what.is_empty() {
            return Ok(());
        }
        let (since, fix) = if self.saved {
            (
                "the saved scan",
                "clear the output and run `chunkcube ingest … --scan-only` again",
            )
        } else {
            (
                "it was scanned",
                "clear the output and run the ingest again",
            )
        };
        Err(IngestError::Changed {
            file: super::remote::display_name(path),
            since: since.into(),
            what: what.join(", "),
            fix: fix.into(),
        })
    }
}

/// Size and modification time in a tile identity `{path}:{size}:{mtime}:{…}` (local and
/// remote identities share this prefix); `None` for a part that is missing or zero (unknown).
fn parse_identity(path: &Path, identity: &str) -> (Option<u64>, Option<i128>) {
    let prefix = format!("{}:", path.display());
    let Some(rest) = identity.strip_prefix(&prefix) else {
        return (None, None);
    };
    let mut parts = rest.splitn(3, ':');
    let size = parts.next().and_then(|s| s.parse::<u64>().ok());
    let mtime = parts.next().and_then(|s| s.parse::<i128>().ok());
    (size.filter(|&s| s > 0), mtime.filter(|&m| m != 0))
}

/// The tile's size and modification time now, in the units of [`Expected`], from what GDAL
/// cached at the open (remote) or a `stat` (local).
fn current_size_mtime(path: &Path) -> (Option<u64>, Option<i128>) {
    if super::remote::is_remote_path(path) {
        match super::remote::cached_stat(path) {
            Some((size, mtime)) => (Some(size), Some(mtime as i128).filter(|&m| m != 0)),
            None => (None, None),
        }
    } else {
        let Ok(m) = std::fs::metadata(path) else {
            return (None, None);
        };
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128);
        (Some(m.len()), mtime)
    }
}

fn close(a: f64, b: f64) -> bool {
    // The saved scan's JSON may round a float by one unit in the last place.
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// What differs between the tile as opened and as scanned, each as `what old → new`.
fn differences(path: &Path, ds: &gdal::Dataset, e: &Expected) -> Vec<String> {
    let mut what = Vec::new();
    let (size, mtime) = current_size_mtime(path);
    if let (Some(old), Some(new)) = (e.size, size) {
        if old != new {
            what.push(format!("size {old} → {new} bytes"));
        }
    }
    if let (Some(old), Some(new)) = (e.mtime, mtime) {
        if old != new {
            let remote = super::remote::is_remote_path(path);
            let iso = |t: i128| {
                let us = if remote { t * 1_000_000 } else { t / 1000 };
                Time::from_micros(us.clamp(i64::MIN as i128, i64::MAX as i128) as i64).to_iso()
            };
            what.push(format!("modified {} → {}", iso(old), iso(new)));
        }
    }
    let (w, h) = ds.raster_size();
    if (w as u64, h as u64) != (e.width, e.height) {
        what.push(format!("{}x{} → {w}x{h} px", e.width, e.height));
    }
    match ds.geo_transform() {
        Ok(t) => {
            let o = &e.transform;
            if !close(t[0], o[0]) || !close(t[3], o[3]) {
                what.push(format!(
                    "origin {},{} → {},{}",
                    tidy(o[0]),
                    tidy(o[3]),
                    tidy(t[0]),
                    tidy(t[3])
                ));
            }
            if [1, 2, 4, 5].iter().any(|&i| !close(t[i], o[i])) {
                what.push(format!(
                    "pixel size {}x{} → {}x{}",
                    tidy(o[1]),
                    tidy(o[5]),
                    tidy(t[1]),
                    tidy(t[5])
                ));
            }
        }
        Err(_) => what.push("no geotransform now".into()),
    }
    let wkt = ds
        .spatial_ref()
        .and_then(|s| s.to_wkt())
        .unwrap_or_default();
    if wkt != e.wkt && !same_crs(&wkt, &e.wkt) {
        what.push("another CRS".into());
    }
    let n = ds.raster_count();
    if n != 1 {
        what.push(format!("1 → {n} bands"));
    }
    if let Ok(band) = ds.rasterband(1) {
        match dtype_of(band.band_type()) {
            Some(d) if d == e.dtype => {}
            _ => what.push(format!(
                "data type {} → {:?}",
                e.dtype.zarr_name(),
                band.band_type()
            )),
        }
        let nodata = band.no_data_value();
        let same = match (e.nodata, nodata) {
            (None, None) => true,
            (Some(a), Some(b)) => (a.is_nan() && b.is_nan()) || close(a, b),
            _ => false,
        };
        if !same {
            let show = |v: Option<f64>| v.map_or("none".to_string(), |v| v.to_string());
            what.push(format!("nodata {} → {}", show(e.nodata), show(nodata)));
        }
    }
    what
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_give_their_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tif");
        std::fs::write(&p, b"12345").unwrap();
        // The producer's format, as the resume fingerprint writes it.
        let id = super::super::write::tile_identity(&p);
        let (size, mtime) = parse_identity(&p, &id);
        assert_eq!(size, Some(5));
        assert_eq!(mtime, current_size_mtime(&p).1);
        // A remote identity (URL with colons, headers with colons in their dates).
        let url = Path::new("/vsicurl/http://h:8/x.tif");
        let id = "/vsicurl/http://h:8/x.tif:14226:1796083200:etag=\"a\";last-modified=Tue, 01 Dec 2026 00:00:00 GMT";
        assert_eq!(parse_identity(url, id), (Some(14226), Some(1796083200)));
        // Unknown parts are not compared.
        assert_eq!(
            parse_identity(url, "/vsicurl/http://h:8/x.tif:0:0:"),
            (None, None)
        );
        assert_eq!(parse_identity(url, "something else"), (None, None));
    }
}
