//! One output chunk of an ingest: its tiles' windows read with GDAL into the chunk, encoded
//! and stored.
//!
//! What profiling `bench/ingest.sh` taught (perf; callgrind for instruction counts, the
//! shared machine's timings being too noisy): zstd's compression is ~60% of an ingest and
//! GDAL's inflate + libtiff ~20%; writing the files ~6% (kernel copies). Beyond that, the
//! chunk path used to read each window into a scratch buffer and merge it into the chunk pixel
//! by pixel through a "filled" mask (first valid pixel wins), then hand zarrs an owned ndarray
//! it copied once more. Tiles of a grid do not overlap, so a window no other tile covers is
//! read straight into its rows of the chunk (or copied a row at a time), the mask is kept for
//! overlapping tiles alone, and the chunk is handed to zarrs as a borrowed slice: 6.5% fewer
//! instructions for a whole ingest (2x2 1024² tiles x 4 bands: 3.53 G -> 3.30 G).

use super::IngestError;
use crate::geo::{capture_gdal_errors, take_gdal_errors};
use crate::store::Element;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::plan::PlanBand;
use super::tilecheck::TileChecks;

thread_local! {
    // One GDAL handle per tile per worker: datasets are not thread-safe.
    static HANDLES: RefCell<HashMap<PathBuf, gdal::Dataset>> = RefCell::new(HashMap::new());
}

/// Read a window of band 1 of `path` into `buf` (row-major `w × h`), checking the tile
/// against its scan when it is opened.
fn read_window<T: Element>(
    checks: &TileChecks,
    path: &Path,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    buf: &mut [T],
) -> Result<(), IngestError> {
    let file = super::remote::display_name(path);
    HANDLES.with(|cell| {
        let mut handles = cell.borrow_mut();
        if handles.len() > 256 {
            handles.clear();
        }
        if !handles.contains_key(path) {
            if super::remote::is_remote_path(path) {
                // A worker planning from a saved scan has not opened any tile before.
                super::remote::configure_gdal();
            }
            let ds = gdal::Dataset::open(path).map_err(|e| IngestError::Read {
                file: file.clone(),
                msg: crate::store::redact::clean(&e.to_string()),
            })?;
            checks.check(path, &ds)?;
            handles.insert(path.to_path_buf(), ds);
        }
        let ds = &handles[path];
        capture_gdal_errors();
        let band = ds.rasterband(1).map_err(|e| IngestError::Read {
            file: file.clone(),
            msg: crate::store::redact::clean(&e.to_string()),
        })?;
        let r = band.read_into_slice::<T>((x as isize, y as isize), (w, h), (w, h), buf, None);
        let errs = take_gdal_errors();
        match r {
            Err(e) => Err(IngestError::Read {
                file: file.clone(),
                msg: crate::store::redact::clean(&e.to_string()),
            }),
            Ok(()) if !errs.is_empty() => Err(IngestError::Read {
                file: file.clone(),
                msg: crate::store::redact::clean(&format!(
                    "corrupt or truncated: {}",
                    errs.join("; ")
                )),
            }),
            Ok(()) => Ok(()),
        }
    })
}

/// Build one whole output chunk (or shard) and store it. Returns decoded bytes produced.
pub(super) fn write_chunk<T: Element>(
    checks: &TileChecks,
    band: &PlanBand,
    arr: &zarrs::array::Array<dyn zarrs::storage::ReadableWritableListableStorageTraits>,
    idx: [u64; 3],
    outer: [u64; 3],
    shape: [u64; 3],
) -> Result<u64, IngestError> {
    let nodata: Option<T> = band.nodata.map(T::from_f64);
    let fill = nodata.unwrap_or_default();
    // Integers that are nodata equal the fill already: a window of them is copied as is.
    let float = T::DTYPE.is_float();
    let (ct, cy, cx) = (outer[0] as usize, outer[1] as usize, outer[2] as usize);
    let plane = cy * cx;
    let mut data = vec![fill; ct * plane];
    let r0 = idx[1] * outer[1];
    let c0 = idx[2] * outer[2];
    let r1 = (r0 + outer[1]).min(shape[1]);
    let c1 = (c0 + outer[2]).min(shape[2]);
    let mut buf: Vec<T> = Vec::new();
    for (lt, dst) in data.chunks_exact_mut(plane).enumerate() {
        let t = idx[0] * outer[0] + lt as u64;
        if t >= shape[0] {
            break;
        }
        // Each tile's intersection with the chunk window, in mosaic pixels [r0, c0, r1, c1].
        let parts: Vec<(&Path, [u64; 2], [u64; 4])> = band.tiles[t as usize]
            .iter()
            .filter_map(|tile| {
                let w = [
                    r0.max(tile.row),
                    c0.max(tile.col),
                    r1.min(tile.row + tile.height),
                    c1.min(tile.col + tile.width),
                ];
                (w[0] < w[2] && w[1] < w[3]).then_some((
                    tile.path.as_path(),
                    [tile.row, tile.col],
                    w,
                ))
            })
            .collect();
        let overlap = parts.iter().enumerate().any(|(i, (_, _, a))| {
            parts[..i]
                .iter()
                .any(|(_, _, b)| a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3])
        });
        // Only where tiles overlap does a later tile fill just what is still missing.
        let mut filled = if overlap {
            vec![false; plane]
        } else {
            Vec::new()
        };
        for (path, [row, col], [ir0, ic0, ir1, ic1]) in parts {
            let (w, h) = ((ic1 - ic0) as usize, (ir1 - ir0) as usize);
            let (x, y) = ((ic0 - col) as usize, (ir0 - row) as usize);
            let off = (ir0 - r0) as usize * cx + (ic0 - c0) as usize;
            if !overlap && w == cx {
                // Whole rows of the chunk: GDAL writes them in place.
                let rows = &mut dst[off..off + w * h];
                read_window(checks, path, x, y, w, h, rows)?;
                if float {
                    clean(rows, nodata, fill);
                }
                continue;
            }
            buf.resize(w * h, fill);
            read_window(checks, path, x, y, w, h, &mut buf)?;
            for (r, src) in buf.chunks_exact(w).enumerate() {
                let d0 = off + r * cx;
                let out = &mut dst[d0..d0 + w];
                if overlap {
                    // First valid pixel wins.
                    let done = &mut filled[d0..d0 + w];
                    for i in 0..w {
                        if !done[i] && !src[i].is_missing(nodata) {
                            out[i] = src[i];
                            done[i] = true;
                        }
                    }
                } else {
                    out.copy_from_slice(src);
                    if float {
                        clean(out, nodata, fill);
                    }
                }
            }
        }
    }
    let n = (data.len() * std::mem::size_of::<T>()) as u64;
    // A borrowed slice: zarrs encodes it as it stands (an owned ndarray was copied first).
    arr.store_chunk(&idx, &data[..])
        .map_err(|e| IngestError::Write {
            key: arr.chunk_key(&idx).to_string(),
            msg: e.to_string(),
        })?;
    Ok(n)
}

/// Missing float values (NaN, or nodata) become the fill, as the merge leaves them.
fn clean<T: Element>(v: &mut [T], nodata: Option<T>, fill: T) {
    for x in v {
        if x.is_missing(nodata) {
            *x = fill;
        }
    }
}
