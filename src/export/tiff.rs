//! GeoTIFF files through GDAL: blocks of a 2-D array computed ahead of the writer (the next
//! block is computed while the current one is written), a tiled GeoTIFF written directly, or
//! a COG made by GDAL's COG driver from an uncompressed tiled staging file (the driver can
//! only copy), with overviews down to one tile.

use super::{ExportError, ExportOptions, Format, Partial};
use crate::cube::{CubeError, DataArray};
use crate::exec::Session;
use crate::store::{DType, Element, Values};
use gdal::raster::{Buffer, RasterCreationOptions};
use gdal::{DriverManager, Metadata};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// How a 2-D array is cut into blocks: rows of the query chunks' height, as many query chunks
/// wide as fit a sixteenth of the memory limit (two blocks are held at a time, outside the
/// tasks' reservations).
pub(super) struct Blocks {
    rows: Vec<Range<u64>>,
    cols: Vec<Range<u64>>,
}

impl Blocks {
    pub(super) fn of(da: &DataArray, limit: u64) -> Blocks {
        let [_, h, w] = da.shape3();
        let [_, ch, cw] = da.chunks3();
        let row_bytes = ch * cw * da.dtype().size() as u64;
        let across = (limit / 16 / row_bytes.max(1)).max(1);
        let bw = (cw * across).min(w).max(1);
        let cut = |n: u64, step: u64| -> Vec<Range<u64>> {
            (0..n.div_ceil(step))
                .map(|i| i * step..((i + 1) * step).min(n))
                .collect()
        };
        Blocks {
            rows: cut(h, ch.max(1)),
            cols: cut(w, bw),
        }
    }
    /// How many blocks.
    pub(super) fn len(&self) -> u64 {
        (self.rows.len() * self.cols.len()) as u64
    }
    fn all(&self) -> Vec<(Range<u64>, Range<u64>)> {
        self.rows
            .iter()
            .flat_map(|r| self.cols.iter().map(move |c| (r.clone(), c.clone())))
            .collect()
    }
    /// The first (a largest) block, to check the memory limit with.
    pub(super) fn first(&self, da: &DataArray) -> Result<DataArray, CubeError> {
        block(da, &self.rows[0], &self.cols[0])
    }
}

/// The block `rows × cols` of a 2-D array (dimensions it lacks are left alone).
fn block(da: &DataArray, rows: &Range<u64>, cols: &Range<u64>) -> Result<DataArray, CubeError> {
    let mut sel = Vec::new();
    let dims = da.dims();
    if dims.contains(&"y") {
        sel.push(("y", rows.clone()));
    }
    if dims.contains(&"x") {
        sel.push(("x", cols.clone()));
    }
    da.isel(&sel)
}

/// Compute every block of `da` and hand it to `put` (rows, cols, values) in order, the next
/// block computed on another thread while `put` writes the current one.
pub(super) fn for_each_block(
    da: &DataArray,
    pb: &super::Progress,
    mut put: impl FnMut(&Range<u64>, &Range<u64>, Values) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let blocks = Blocks::of(da, da.session().config().memory_limit).all();
    let compute = |i: usize| -> Result<Values, CubeError> {
        block(da, &blocks[i].0, &blocks[i].1)?.compute()
    };
    std::thread::scope(|s| {
        let mut next = Some(s.spawn(move || compute(0)));
        for i in 0..blocks.len() {
            let v = match next.take().map(|h| h.join()) {
                Some(Ok(v)) => v?,
                _ => {
                    return Err(CubeError::Exec(crate::exec::ExecError::Invalid(
                        "a block computation panicked".into(),
                    ))
                    .into())
                }
            };
            if i + 1 < blocks.len() {
                next = Some(s.spawn(move || compute(i + 1)));
            }
            put(&blocks[i].0, &blocks[i].1, v)?;
            pb.block_done();
        }
        Ok(())
    })
}

/// GDAL's block cache sized to an eighth of the memory limit (1 to 256 MiB) and held in
/// the session's budget for as long as this lives, so tasks leave room for it.
pub(super) struct GdalCache {
    session: Arc<Session>,
    bytes: u64,
}

impl GdalCache {
    /// The cache size under `limit`: an eighth, at least 1 MiB, at most 256 MiB.
    pub(super) fn bytes(limit: u64) -> u64 {
        (limit / 8).clamp(1 << 20, 256 << 20)
    }
    pub(super) fn hold(session: &Arc<Session>) -> GdalCache {
        let bytes = GdalCache::bytes(session.config().memory_limit);
        // SAFETY: sets a process-wide size; GDAL flushes blocks beyond it.
        unsafe { gdal_sys::GDALSetCacheMax64(bytes as i64) };
        session.budget().add_held(bytes);
        GdalCache {
            session: session.clone(),
            bytes,
        }
    }
}

impl Drop for GdalCache {
    fn drop(&mut self) {
        self.session.budget().release_held(self.bytes);
    }
}

fn options(list: &[String]) -> RasterCreationOptions {
    RasterCreationOptions::from_iter(list.iter().map(String::as_str))
}

/// The predictor that helps DEFLATE on this type: horizontal differencing for integers,
/// floating-point for floats.
fn predictor(d: DType) -> &'static str {
    if d.is_float() {
        "3"
    } else {
        "2"
    }
}

/// Write the 2-D array `da` as a GeoTIFF (`Format::GTiff`) or COG at `path`.
pub(super) fn write(
    da: &DataArray,
    path: &Path,
    format: Format,
    opts: &ExportOptions,
    pb: &super::Progress,
) -> Result<(), ExportError> {
    crate::geo::capture_gdal_errors();
    let threads = da.session().threads().to_string();
    let bs = opts.blocksize.to_string();
    let part = Partial::new(path, "part");
    let mut create = vec![
        "TILED=YES".to_string(),
        format!("BLOCKXSIZE={bs}"),
        format!("BLOCKYSIZE={bs}"),
        "BIGTIFF=IF_SAFER".into(),
    ];
    if format == Format::Cog {
        // Staged uncompressed: the COG driver re-reads it to compress and build overviews.
        let stage = Partial::new(path, "stage.tif");
        create.push("COMPRESS=NONE".into());
        write_gtiff(da, &stage.tmp, &create, pb)?;
        let src = gdal::Dataset::open(&stage.tmp).map_err(|e| ExportError::gdal(path, e))?;
        let cog =
            DriverManager::get_driver_by_name("COG").map_err(|e| ExportError::gdal(path, e))?;
        let copy = [
            "COMPRESS=DEFLATE".to_string(),
            "PREDICTOR=YES".into(),
            format!("BLOCKSIZE={bs}"),
            "OVERVIEWS=AUTO".into(),
            "BIGTIFF=IF_SAFER".into(),
            format!("NUM_THREADS={threads}"),
        ];
        let opts = options(&copy);
        let out = src
            .create_copy(&cog, &part.tmp, &opts)
            .map_err(|e| ExportError::gdal(path, e))?;
        out.close().map_err(|e| ExportError::gdal(path, e))?;
        check_gdal(path)?;
    } else {
        create.push("COMPRESS=DEFLATE".into());
        create.push(format!("PREDICTOR={}", predictor(da.dtype())));
        create.push(format!("NUM_THREADS={threads}"));
        write_gtiff(da, &part.tmp, &create, pb)?;
    }
    part.commit(path)
}

/// Fail on an error GDAL reported only to its handler during the last calls.
fn check_gdal(path: &Path) -> Result<(), ExportError> {
    match crate::geo::take_gdal_errors().pop() {
        Some(msg) => Err(ExportError::Gdal {
            file: path.display().to_string(),
            msg,
        }),
        None => Ok(()),
    }
}

/// Create a GTiff at `file` with `create` options, georeferenced, and fill it block by block.
fn write_gtiff(
    da: &DataArray,
    file: &Path,
    create: &[String],
    pb: &super::Progress,
) -> Result<(), ExportError> {
    let err = |e: gdal::errors::GdalError| ExportError::gdal(file, e);
    let driver = DriverManager::get_driver_by_name("GTiff").map_err(err)?;
    let [_, h, w] = da.shape3();
    let opts = options(create);
    let mut ds = crate::with_dtype!(da.dtype(), T => driver
        .create_with_band_type_with_options::<T, _>(file, w as usize, h as usize, 1, &opts))
    .map_err(err)?;
    // Written north-up whatever the store's row order: rows of a south-up grid go in reverse.
    let (g, flip) = da.geobox().north_up();
    ds.set_geo_transform(&g.transform).map_err(err)?;
    if !g.wkt.is_empty() {
        ds.set_projection(&g.wkt).map_err(err)?;
    }
    {
        let mut band = ds.rasterband(1).map_err(err)?;
        band.set_no_data_value(da.nodata()).map_err(err)?;
        band.set_description(da.name()).map_err(err)?;
    }
    if let Some(day) = da.times().first() {
        ds.set_metadata_item("TIFFTAG_DATETIME", &tiff_datetime(*day), "")
            .map_err(err)?;
    }
    for_each_block(da, pb, |rows, cols, v| {
        let mut band = ds.rasterband(1).map_err(err)?;
        let row = if flip { h - rows.end } else { rows.start };
        let at = (cols.start as isize, row as isize);
        let size = (
            (cols.end - cols.start) as usize,
            (rows.end - rows.start) as usize,
        );
        crate::on_values!(v, a => put_block(&mut band, at, size, a, flip)).map_err(err)
    })?;
    ds.flush_cache().map_err(err)?;
    ds.close().map_err(err)?;
    check_gdal(file)
}

/// Write one block (its values in row-major order, rows reversed when `flip`) into the band.
fn put_block<T: Element>(
    band: &mut gdal::raster::RasterBand<'_>,
    at: (isize, isize),
    size: (usize, usize),
    mut a: ndarray::ArrayD<T>,
    flip: bool,
) -> Result<(), gdal::errors::GdalError> {
    if flip && a.ndim() >= 2 {
        // The rows axis is the second last of `[(time,) y, x]`; the copy below follows it.
        a.invert_axis(ndarray::Axis(a.ndim() - 2));
    }
    let data = if a.is_standard_layout() {
        a.into_raw_vec_and_offset().0
    } else {
        a.iter().copied().collect()
    };
    let mut buf = Buffer::new(size, data);
    band.write(at, size, &mut buf)
}

/// TIFF's `YYYY:MM:DD HH:MM:SS` of an instant (UTC).
fn tiff_datetime(t: crate::geo::Time) -> String {
    let us = t.micros().rem_euclid(86_400_000_000) / 1_000_000;
    format!(
        "{} {:02}:{:02}:{:02}",
        t.date_iso().replace('-', ":"),
        us / 3600,
        us % 3600 / 60,
        us % 60
    )
}
