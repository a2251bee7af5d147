//! PNG quicklooks: an 8-bit grey + alpha image of a 2-D array, at most `size` pixels on its
//! longest side (nearest-neighbour sampling of pixel centres, computed block by block like a
//! GeoTIFF), values scaled linearly from `scale` (default: the 2nd to 98th percentile of the
//! valid values shown) to 0..255, nodata and NaN transparent.

use super::tiff::for_each_block;
use super::{ExportError, ExportOptions, Partial};
use crate::cube::DataArray;
use gdal::raster::{Buffer, ColorInterpretation};
use gdal::DriverManager;
use std::path::Path;

/// The quicklook's `(height, width)` for a `h × w` array: the longest side at most `size`,
/// never enlarged, the other side in proportion (at least 1).
pub(super) fn quicklook_shape(h: u64, w: u64, size: u64) -> (u64, u64) {
    let long = h.max(w);
    if long <= size {
        return (h, w);
    }
    let f = size as f64 / long as f64;
    let side = |n: u64| ((n as f64 * f).round() as u64).clamp(1, size);
    (side(h), side(w))
}

/// The source index sampled by output index `i` of `n_out` over `n_in` (the pixel whose
/// centre is nearest to the output pixel's centre).
fn sample(i: u64, n_out: u64, n_in: u64) -> u64 {
    (((i as f64 + 0.5) * n_in as f64 / n_out as f64) as u64).min(n_in - 1)
}

/// The `p`-th percentile (0..=100) of sorted values, by the nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let k = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

/// Write the quicklook of the 2-D array `da` at `path`.
pub(super) fn write(
    da: &DataArray,
    path: &Path,
    opts: &ExportOptions,
    pb: &super::Progress,
) -> Result<(), ExportError> {
    crate::geo::capture_gdal_errors();
    let [_, h, w] = da.shape3();
    let (oh, ow) = quicklook_shape(h, w, opts.size);
    let rows: Vec<u64> = (0..oh).map(|i| sample(i, oh, h)).collect();
    let cols: Vec<u64> = (0..ow).map(|j| sample(j, ow, w)).collect();
    let mut px = vec![f64::NAN; (oh * ow) as usize];
    let nodata = da.nodata();
    for_each_block(da, pb, |br, bc, v| {
        let full =
            v.window_to_real::<f64>(&[0..1, 0..br.end - br.start, 0..bc.end - bc.start], nodata);
        // Output rows and columns whose source pixel lies in this block (sorted indices).
        let (i0, i1) = (
            rows.partition_point(|r| *r < br.start),
            rows.partition_point(|r| *r < br.end),
        );
        let (j0, j1) = (
            cols.partition_point(|c| *c < bc.start),
            cols.partition_point(|c| *c < bc.end),
        );
        for i in i0..i1 {
            for j in j0..j1 {
                let (r, c) = ((rows[i] - br.start) as usize, (cols[j] - bc.start) as usize);
                px[i * ow as usize + j] = full[[0, r, c]];
            }
        }
        Ok(())
    })?;
    // A picture is north-up: a south-up grid's rows (ascending latitude) are shown reversed.
    if da.geobox().north_up().1 {
        let w = ow as usize;
        px = px.chunks(w).rev().flatten().copied().collect();
    }
    let (lo, hi) = match opts.scale {
        Some(s) => s,
        None => {
            let mut valid: Vec<f64> = px.iter().copied().filter(|v| v.is_finite()).collect();
            valid.sort_by(|a, b| a.total_cmp(b));
            if valid.is_empty() {
                (0.0, 1.0)
            } else {
                (percentile(&valid, 2.0), percentile(&valid, 98.0))
            }
        }
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let grey: Vec<u8> = px
        .iter()
        .map(|v| {
            if v.is_finite() {
                ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect();
    let alpha: Vec<u8> = px
        .iter()
        .map(|v| if v.is_finite() { 255 } else { 0 })
        .collect();
    let err = |e: gdal::errors::GdalError| ExportError::gdal(path, e);
    let mem = DriverManager::get_driver_by_name("MEM").map_err(err)?;
    let ds = mem
        .create_with_band_type::<u8, _>("", ow as usize, oh as usize, 2)
        .map_err(err)?;
    let size = (ow as usize, oh as usize);
    for (i, (data, interp)) in [
        (grey, ColorInterpretation::GrayIndex),
        (alpha, ColorInterpretation::AlphaBand),
    ]
    .into_iter()
    .enumerate()
    {
        let mut band = ds.rasterband(i + 1).map_err(err)?;
        band.set_color_interpretation(interp).map_err(err)?;
        band.write((0, 0), size, &mut Buffer::new(size, data))
            .map_err(err)?;
    }
    let part = Partial::new(path, "part");
    let png = DriverManager::get_driver_by_name("PNG").map_err(err)?;
    let out = ds
        .create_copy(&png, &part.tmp, &Default::default())
        .map_err(err)?;
    out.close().map_err(err)?;
    part.commit(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quicklook_keeps_the_aspect_and_never_enlarges() {
        assert_eq!(quicklook_shape(200, 240, 1024), (200, 240));
        assert_eq!(quicklook_shape(200, 240, 120), (100, 120));
        assert_eq!(quicklook_shape(8192, 4096, 1024), (1024, 512));
        assert_eq!(quicklook_shape(1, 5000, 100), (1, 100));
        // Halving samples every other pixel, from the centre of each pair.
        let s: Vec<u64> = (0..4).map(|i| sample(i, 4, 8)).collect();
        assert_eq!(s, vec![1, 3, 5, 7]);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
    }
}
