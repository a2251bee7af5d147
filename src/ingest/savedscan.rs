//! A scan of the tiles saved once in the output (`ingest … --scan-only`), so that the N
//! workers of a sharded ingest plan from it instead of each reading every tile's header
//! (N x tiles requests, and for a continent an hour of scanning per worker).
//!
//! The saved scan is one JSON object at [`SCAN_KEY`], keyed by a fingerprint of the tile list
//! the sources name (path or URL, band, time, where declared: a changed manifest, STAC file or
//! folder is a different list) and of the local tiles' identities (size, mtime, a sample of
//! their bytes: cheap to recompute). A worker whose fingerprint differs ignores the saved scan,
//! says so, and scans as before. A remote tile is not looked at when the scan is loaded
//! (that would cost the requests the scan saves): the workers use the identity (ETag, size,
//! mtime) recorded by the scan, so all of them agree on one plan. A tile replaced on its
//! server since the scan is caught when a chunk task opens it for its pixels, at no extra
//! request ([`super::tilecheck`]): a different size in bytes, `Last-Modified` time, size in
//! pixels, geotransform, CRS, band count, data type or nodata fails the worker, naming the
//! tile and what changed, before anything is committed. Not detected: a rewrite of the same
//! size whose server keeps or omits `Last-Modified` (a static file server copying mtimes)
//! and whose header is unchanged; the ETag would tell, but GDAL sends a request for it.
//! Run `--scan-only` again (into a cleared output) after changing remote tiles.

use super::scan::{TileInfo, TileSource};
use super::IngestError;
use crate::store::job::SCAN_KEY;
use crate::store::{DType, Store};
use serde::{Deserialize, Serialize};

/// Format version of the saved scan; another version is ignored, never misread. (Version 1
/// wrote a NaN nodata as JSON's `null`, read back as no nodata.)
const VERSION: u32 = 2;

/// One tile as scanned: its header and its identity (what resume and the job fingerprint use).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedTile {
    path: String,
    band: String,
    time_us: i64,
    origin: String,
    wkt: String,
    epsg: Option<u32>,
    transform: [f64; 6],
    width: u64,
    height: u64,
    dtype: String,
    /// As Rust prints it (`NaN`, `-inf`, `0`): JSON numbers have no NaN, and this round-trips.
    nodata: Option<String>,
    identity: String,
    bytes: u64,
}

/// The saved scan (see the module documentation).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedScan {
    version: u32,
    sources: String,
    tiles: Vec<SavedTile>,
}

/// A scan loaded for reuse: the tiles' headers, identities and file bytes, in source order.
#[derive(Debug, Clone)]
pub struct Reused {
    /// The tiles' headers.
    pub infos: Vec<TileInfo>,
    /// Each tile's identity, as recorded by the scan.
    pub identities: Vec<String>,
    /// Each tile's file bytes.
    pub bytes: Vec<u64>,
}

/// The fingerprint of the tile list `srcs` names (see the module documentation).
pub(crate) fn sources_fingerprint(srcs: &[TileSource]) -> String {
    let mut s = String::new();
    for t in srcs {
        s.push_str(&format!(
            "{}|{}|{}|{}",
            t.path.display(),
            t.band,
            t.time.micros(),
            t.origin
        ));
        if !super::remote::is_remote_path(&t.path) {
            s.push('|');
            s.push_str(&super::write::tile_identity(&t.path));
        }
        s.push('\n');
    }
    super::write::fnv64(&s)
}

/// Save the scan of `srcs` (`infos`, `identities`, `bytes` in the same order) at `store`.
pub(crate) fn save(
    store: &Store,
    srcs: &[TileSource],
    infos: &[TileInfo],
    identities: &[String],
    bytes: &[u64],
) -> Result<(), IngestError> {
    let tiles = infos
        .iter()
        .zip(identities)
        .zip(bytes)
        .map(|((t, id), b)| SavedTile {
            path: t.source.path.display().to_string(),
            band: t.source.band.clone(),
            time_us: t.source.time.micros(),
            origin: t.source.origin.clone(),
            wkt: t.wkt.clone(),
            epsg: t.epsg,
            transform: t.transform,
            width: t.width,
            height: t.height,
            dtype: t.dtype.zarr_name().to_string(),
            nodata: t.nodata.map(|v| v.to_string()),
            identity: id.clone(),
            bytes: *b,
        })
        .collect();
    let doc = SavedScan {
        version: VERSION,
        sources: sources_fingerprint(srcs),
        tiles,
    };
    let text = serde_json::to_vec(&doc).map_err(|e| IngestError::Write {
        key: SCAN_KEY.into(),
        msg: e.to_string(),
    })?;
    store.set(SCAN_KEY, text.into())?;
    Ok(())
}

/// The scan saved at `store` when it was made of exactly `srcs`; `Ok(None)` (with one line on
/// stderr saying why, unless there is none) when there is none or it does not match.
pub(crate) fn load_matching(
    store: &Store,
    srcs: &[TileSource],
) -> Result<Option<Reused>, IngestError> {
    let Some(bytes) = store.get(SCAN_KEY)? else {
        return Ok(None);
    };
    let where_ = format!("{}/{SCAN_KEY}", store.url().trim_end_matches('/'));
    let ignored = |why: &str| {
        eprintln!("{where_}: {why}; ignoring it and scanning the tiles (run `chunkcube ingest … --scan-only` again to refresh it)");
        Ok(None)
    };
    let Ok(doc) = serde_json::from_slice::<SavedScan>(&bytes) else {
        return ignored("not a saved scan this version of chunkcube can read");
    };
    if doc.version != VERSION {
        return ignored(&format!("saved scan of format {}", doc.version));
    }
    if doc.sources != sources_fingerprint(srcs) || doc.tiles.len() != srcs.len() {
        return ignored("saved scan of other tiles (the manifest, STAC file, folders or local tiles changed since)");
    }
    let mut out = Reused {
        infos: Vec::with_capacity(srcs.len()),
        identities: Vec::with_capacity(srcs.len()),
        bytes: Vec::with_capacity(srcs.len()),
    };
    for (t, src) in doc.tiles.into_iter().zip(srcs) {
        let Some(dtype) = DType::from_zarr_name(&t.dtype) else {
            return ignored(&format!("unknown data type '{}'", t.dtype.escape_debug()));
        };
        if std::path::Path::new(&t.path) != src.path || t.band != src.band {
            return ignored("saved scan of other tiles");
        }
        let nodata = match t.nodata.as_deref().map(str::parse::<f64>) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return ignored("a nodata value that is not a number"),
        };
        out.infos.push(TileInfo {
            source: src.clone(),
            wkt: t.wkt,
            epsg: t.epsg,
            transform: t.transform,
            width: t.width,
            height: t.height,
            dtype,
            nodata,
        });
        out.identities.push(t.identity);
        out.bytes.push(t.bytes);
    }
    Ok(Some(out))
}
