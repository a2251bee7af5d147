//! Find the source tiles (a manifest, or files/folders named the DE Africa way) and scan
//! each with GDAL: CRS, geotransform, size, dtype and nodata.

use super::IngestError;
use crate::geo::{capture_gdal_errors, epsg_of, parse_time, take_gdal_errors};
use crate::store::DType;
use gdal::raster::GdalDataType;
use std::path::{Path, PathBuf};

/// The largest tile side we accept; a guard against corrupt headers before any allocation.
pub const MAX_TILE_SIDE: u64 = 1 << 20;

/// A source tile to ingest: one band at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct TileSource {
    /// Path of the GeoTIFF.
    pub path: PathBuf,
    /// Band (measurement) name.
    pub band: String,
    /// Time of the tile's step.
    pub time: crate::geo::Time,
    /// Where the tile was declared, for error messages (`manifest.csv row 3`, or the path).
    pub origin: String,
}

/// What GDAL reports about a tile.
#[derive(Debug, Clone)]
pub struct TileInfo {
    /// The source.
    pub source: TileSource,
    /// CRS WKT.
    pub wkt: String,
    /// EPSG code if known.
    pub epsg: Option<u32>,
    /// Geotransform.
    pub transform: [f64; 6],
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels.
    pub height: u64,
    /// Element type.
    pub dtype: DType,
    /// Nodata of band 1.
    pub nodata: Option<f64>,
}

/// Read a `path,band,time` manifest; relative paths are relative to the manifest's folder.
pub fn read_manifest(manifest: &Path) -> Result<Vec<TileSource>, IngestError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| IngestError::Tile {
        file: manifest.display().to_string(),
        msg: format!("cannot read the manifest: {e}"),
    })?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let bad = |row: usize, msg: String| IngestError::Manifest {
        file: manifest.display().to_string(),
        row,
        msg,
    };
    let records = super::csv::records(&text).map_err(|(row, msg)| bad(row, msg))?;
    let mut lines = records.into_iter();
    let (_, header) = lines.next().ok_or_else(|| {
        bad(
            1,
            "empty manifest: expected the header path,band,time".into(),
        )
    })?;
    let cols: Vec<String> = header
        .iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let find = |name: &str| cols.iter().position(|c| c == name);
    let (Some(ip), Some(ib), Some(it)) = (find("path"), find("band"), find("time")) else {
        return Err(bad(
            1,
            format!(
                "header '{}' must name the columns path,band,time",
                header.join(",").escape_debug()
            ),
        ));
    };
    let mut out = Vec::new();
    for (row, fields) in lines {
        let fields: Vec<&str> = fields.iter().map(|f| f.trim()).collect();
        if fields.len() != cols.len() {
            return Err(bad(
                row,
                format!(
                    "expected {} columns (path,band,time), found {}",
                    cols.len(),
                    fields.len()
                ),
            ));
        }
        let (p, b, t) = (fields[ip], fields[ib], fields[it]);
        if p.is_empty() || b.is_empty() || t.is_empty() {
            return Err(bad(row, "empty path, band or time".into()));
        }
        crate::store::layout::validate_band_name(b).map_err(|m| bad(row, m))?;
        let time = parse_time(t).map_err(|e| bad(row, e.to_string()))?;
        if let Some(path) = super::remote::gdal_path(p).map_err(|m| bad(row, m))? {
            out.push(TileSource {
                path,
                band: b.to_string(),
                time,
                origin: format!("{} row {row}", manifest.display()),
            });
            continue;
        }
        let path = canonical(&if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            base.join(p)
        });
        // A relative path is resolved against the manifest's folder: say so where it fails.
        let origin = if Path::new(p).is_absolute() {
            format!("{} row {row}", manifest.display())
        } else {
            format!(
                "{} row {row}: '{p}' relative to the manifest's folder",
                manifest.display()
            )
        };
        out.push(TileSource {
            path: std::path::absolute(&path).unwrap_or(path),
            band: b.to_string(),
            time,
            origin,
        });
    }
    if out.is_empty() {
        return Err(IngestError::NoTiles(manifest.display().to_string()));
    }
    Ok(out)
}

/// The canonical form of a tile's path (symlinks, `.` and `..` resolved), so that however a
/// manifest or command line spells a path, the same file is the same input (resume, the
/// ingest fingerprint, overlap order). A path that does not resolve stays as given; scanning
/// reports it.
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Band and time from a DE Africa style name `..._<YYYY>--P1Y_final_<band>.tif` (of a path
/// or URL; a URL's query string is ignored).
pub fn parse_deafrica_name(path: &Path) -> Option<(String, crate::geo::Time)> {
    let name = path.to_str()?.split(['?', '#']).next()?;
    let name = name.rsplit('/').next()?;
    let stem = name
        .strip_suffix(".tif")
        .or_else(|| name.strip_suffix(".tiff"))?;
    let (before, band) = stem.rsplit_once("_final_")?;
    let (before, _period) = before.rsplit_once("--P")?;
    let date = before.rsplit('_').next()?;
    let time = parse_time(date).ok()?;
    crate::store::layout::validate_band_name(band).ok()?;
    Some((band.to_string(), time))
}

/// Collect tiles from files and folders (recursively), and `s3://` or `http(s)://` URLs of
/// single files, named the DE Africa way.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<TileSource>, IngestError> {
    let mut files = Vec::new();
    let mut remote = Vec::new();
    for p in paths {
        let spec = p.to_string_lossy();
        if let Some(g) = super::remote::gdal_path(&spec).map_err(IngestError::Remote)? {
            remote.push(g);
            continue;
        }
        if p.is_dir() {
            walk(p, &mut files)?;
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(IngestError::Tile {
                file: p.display().to_string(),
                msg: "no such file or folder".into(),
            });
        }
    }
    let mut files: Vec<PathBuf> = files.iter().map(|f| canonical(f)).collect();
    files.sort();
    files.dedup();
    remote.sort();
    remote.dedup();
    let mut out = Vec::new();
    for f in files.into_iter().chain(remote) {
        let is_tif = f
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"));
        if !is_tif && !super::remote::is_remote_path(&f) {
            continue;
        }
        let (band, time) = parse_deafrica_name(&f).ok_or_else(|| IngestError::Tile {
            file: super::remote::display_name(&f),
            msg: "name does not follow ..._<YYYY>--P1Y_final_<band>.tif; use --manifest to name band and time".into(),
        })?;
        out.push(TileSource {
            origin: super::remote::display_name(&f),
            path: f,
            band,
            time,
        });
    }
    if out.is_empty() {
        let list = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(IngestError::NoTiles(list));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), IngestError> {
    let rd = std::fs::read_dir(dir).map_err(|e| IngestError::Tile {
        file: dir.display().to_string(),
        msg: e.to_string(),
    })?;
    for entry in rd.flatten() {
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// chunkcube's element type for GDAL's `t` (`None`: not supported).
pub(super) fn dtype_of(t: GdalDataType) -> Option<DType> {
    Some(match t {
        GdalDataType::UInt8 => DType::U8,
        GdalDataType::UInt16 => DType::U16,
        GdalDataType::Int16 => DType::I16,
        GdalDataType::UInt32 => DType::U32,
        GdalDataType::Int32 => DType::I32,
        GdalDataType::Float32 => DType::F32,
        GdalDataType::Float64 => DType::F64,
        _ => return None,
    })
}

/// Open a tile with GDAL and read its header.
pub fn scan_tile(src: &TileSource) -> Result<TileInfo, IngestError> {
    let remote = super::remote::is_remote_path(&src.path);
    let file = super::remote::display_name(&src.path);
    let fail = |msg: String| IngestError::Tile {
        file: file.clone(),
        msg,
    };
    if remote {
        super::remote::configure_gdal();
        if let Err(why) = super::remote::probe(&src.path) {
            return Err(fail(super::remote::with_origin(
                super::remote::why_not_opened(&why),
                &src.origin,
                &file,
            )));
        }
    } else if src.path.is_dir() {
        return Err(fail(format!(
            "is a folder, not a GeoTIFF (from {}); list its files, or pass the folder on the command line instead of --manifest",
            src.origin
        )));
    }
    if !remote && !src.path.is_file() {
        return Err(fail(format!("no such file (from {})", src.origin)));
    }
    capture_gdal_errors();
    let ds = gdal::Dataset::open(&src.path).map_err(|e| {
        let why = take_gdal_errors();
        let why = if why.is_empty() {
            e.to_string()
        } else {
            why.join("; ")
        };
        if remote {
            // GDAL's "returned a NULL pointer" says nothing: the object was there.
            let why = if why.contains("NULL pointer") {
                "not recognised as a raster format"
            } else {
                &why
            };
            fail(super::remote::with_origin(
                super::remote::why_not_opened(why),
                &src.origin,
                &file,
            ))
        } else {
            fail(format!("not a raster GDAL can read: {why}"))
        }
    })?;
    match ds.raster_count() {
        0 => return Err(fail("has no raster bands".into())),
        1 => {}
        n => {
            // One band per file is the model (a geomedian COG per band); taking band 1 of a
            // multi-band file silently would mislabel the others.
            return Err(fail(format!(
                "has {n} raster bands; chunkcube ingests one band per file (split it with gdal_translate -b N)"
            )));
        }
    }
    let (w, h) = ds.raster_size();
    let (w, h) = (w as u64, h as u64);
    if w == 0 || h == 0 || w > MAX_TILE_SIDE || h > MAX_TILE_SIDE {
        return Err(fail(format!("implausible raster size {w}x{h}")));
    }
    let transform = ds
        .geo_transform()
        .map_err(|_| fail("has no geotransform (not georeferenced)".into()))?;
    if transform[2] != 0.0 || transform[4] != 0.0 {
        return Err(fail(
            "rotated or sheared geotransforms are not supported".into(),
        ));
    }
    if !(transform[1] > 0.0 && transform[5] < 0.0) {
        return Err(fail(format!("geotransform {transform:?} is not north-up")));
    }
    let sr = ds.spatial_ref().map_err(|_| fail("has no CRS".into()))?;
    let wkt = sr
        .to_wkt()
        .map_err(|e| fail(format!("CRS cannot be written as WKT: {e}")))?;
    let band = ds.rasterband(1).map_err(|e| fail(e.to_string()))?;
    let dtype = dtype_of(band.band_type())
        .ok_or_else(|| fail(format!("unsupported data type {:?}", band.band_type())))?;
    let nodata = band.no_data_value();
    let errs = take_gdal_errors();
    if !errs.is_empty() {
        return Err(fail(format!("GDAL reported: {}", errs.join("; "))));
    }
    Ok(TileInfo {
        source: src.clone(),
        epsg: epsg_of(&sr),
        wkt,
        transform,
        width: w,
        height: h,
        dtype,
        nodata,
    })
}
