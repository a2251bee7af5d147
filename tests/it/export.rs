//! `chunkcube export`: GeoTIFF / COG / PNG files read back by GDAL (the `gdal` crate and
//! `gdalinfo -json`), pixel for pixel against the SOURCE TILES (the independent reference
//! mosaic), with CRS, transform and nodata; selections, calc results, memory limits and bad
//! input.

use crate::common::output::run_one_error;
use crate::common::{
    fixture_cube_64, fixture_tiles, read_stats, reference_mosaic, run_ok, s, union_grid, Mosaic,
};
use gdal::raster::GdalType;
use gdal::Dataset;
use ndarray::Array2;
use std::path::Path;

fn cube() -> &'static Path {
    fixture_cube_64("export-cube-")
}

/// Band 1 of a GeoTIFF read with the gdal crate, as `[y, x]`.
fn read_tif<T: GdalType + Copy>(path: &Path) -> Array2<T> {
    let ds = Dataset::open(path).unwrap_or_else(|e| panic!("GDAL open {}: {e}", path.display()));
    let (w, h) = ds.raster_size();
    let b = ds.rasterband(1).unwrap();
    let buf = b.read_as::<T>((0, 0), (w, h), (w, h), None).unwrap();
    let (_, v) = buf.into_shape_and_vec();
    Array2::from_shape_vec((h, w), v).unwrap()
}

/// `gdalinfo -json FILE`.
fn gdalinfo(path: &Path) -> serde_json::Value {
    let o = std::process::Command::new("gdalinfo")
        .arg("-json")
        .arg(path)
        .output()
        .expect("gdalinfo (apt-get install gdal-bin)");
    assert!(
        o.status.success(),
        "gdalinfo {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("gdalinfo -json output")
}

/// Pixels of `got` equal the mosaic's valid pixels; nodata pixels are the file's nodata.
fn assert_pixels<T>(
    what: &str,
    got: &Array2<T>,
    want: &Mosaic<T>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) where
    T: Copy + Into<f64> + PartialEq + std::fmt::Debug,
{
    assert_eq!(got.dim(), (rows.len(), cols.len()), "{what}: shape");
    let mut bad = Vec::new();
    for (r, y) in rows.clone().enumerate() {
        for (c, x) in cols.clone().enumerate() {
            let g = got[[r, c]];
            let ok = match want.pixels[[y, x]] {
                Some(v) => g == v,
                None => {
                    let g: f64 = g.into();
                    g.is_nan() || Some(g) == want.nodata
                }
            };
            if !ok && bad.len() < 5 {
                bad.push(format!(
                    "(y={y}, x={x}): file {g:?}, tiles {:?}",
                    want.pixels[[y, x]]
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{what} differs from the source tiles: {}",
        bad.join("; ")
    );
}

#[test]
fn cog_export_equals_the_source_tiles_with_crs_transform_nodata_and_overviews() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tifs");
    let stats = dir.path().join("stats.json");
    let (_, err) = run_ok(&[
        "export",
        s(cube()),
        "--out",
        s(&out),
        "--measurements",
        "red,smad",
        "--blocksize",
        "64",
        "--memory-limit",
        "64MiB",
        "--stats",
        s(&stats),
    ]);
    assert!(err.contains("exported 4 file(s)"), "{err}");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "red_2019-01-01.tif",
            "red_2020-01-01.tif",
            "smad_2019-01-01.tif",
            "smad_2020-01-01.tif"
        ]
    );
    for year in [2019, 2020] {
        let tiles = fixture_tiles("red", year);
        let (transform, w, h) = union_grid(&tiles);
        let f = out.join(format!("red_{year}-01-01.tif"));
        let ds = Dataset::open(&f).unwrap();
        assert_eq!(ds.raster_size(), (w, h));
        assert_eq!(ds.geo_transform().unwrap(), transform, "{}", f.display());
        let srs = ds.spatial_ref().unwrap();
        let tile_srs = Dataset::open(&tiles[0]).unwrap().spatial_ref().unwrap();
        assert!(
            srs == tile_srs,
            "CRS of {} differs from the tiles'",
            f.display()
        );
        assert_eq!(ds.rasterband(1).unwrap().no_data_value(), Some(0.0));
        let mosaic = reference_mosaic::<u16>(&tiles);
        assert_pixels(
            &format!("red {year}"),
            &read_tif::<u16>(&f),
            &mosaic,
            0..h,
            0..w,
        );
        // Float band: NaN nodata, values bit for bit.
        let f = out.join(format!("smad_{year}-01-01.tif"));
        let m = reference_mosaic::<f32>(&fixture_tiles("smad", year));
        assert_pixels(
            &format!("smad {year}"),
            &read_tif::<f32>(&f),
            &m,
            0..h,
            0..w,
        );
        assert!(Dataset::open(&f)
            .unwrap()
            .rasterband(1)
            .unwrap()
            .no_data_value()
            .unwrap()
            .is_nan());
    }
    // What GDAL's own tool says: a COG, DEFLATE, overviews, EPSG:6933, nodata.
    let info = gdalinfo(&out.join("red_2019-01-01.tif"));
    assert_eq!(
        info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG",
        "{info}"
    );
    assert_eq!(
        info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"],
        "DEFLATE"
    );
    let band = &info["bands"][0];
    assert_eq!(band["type"], "UInt16");
    assert_eq!(band["noDataValue"], 0.0);
    assert_eq!(band["block"], serde_json::json!([64, 64]));
    let ovr: Vec<_> = band["overviews"]
        .as_array()
        .expect("overviews")
        .iter()
        .map(|o| o["size"].clone())
        .collect();
    assert_eq!(
        ovr,
        [serde_json::json!([120, 100]), serde_json::json!([60, 50])]
    );
    assert!(
        info["coordinateSystem"]["wkt"]
            .as_str()
            .unwrap()
            .contains("\"EPSG\",6933"),
        "{info}"
    );
    // Read chunk by chunk: every stored chunk of the two bands once, inside the limit.
    let st = read_stats(&stats);
    assert_eq!(st["chunks_read"], 2 * 2 * 4 * 4, "{st}");
    assert!(
        st["peak_tracked_bytes"].as_u64().unwrap() <= 64 << 20,
        "{st}"
    );
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
}

#[test]
fn gtiff_export_of_a_selection_is_the_window_of_the_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tifs");
    run_ok(&[
        "export",
        s(cube()),
        "--out",
        s(&out),
        "--format",
        "GTiff",
        "--measurements",
        "nir",
        "--isel",
        "y=10:150,x=20:201",
        "--time",
        "2020-01-01/2020-12-31",
        "--quiet",
    ]);
    let f = out.join("nir_2020-01-01.tif");
    let names: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let tiles = fixture_tiles("nir", 2020);
    let (t, _, _) = union_grid(&tiles);
    let ds = Dataset::open(&f).unwrap();
    assert_eq!(ds.raster_size(), (181, 140));
    let gt = ds.geo_transform().unwrap();
    assert_eq!(
        gt,
        [t[0] + 20.0 * t[1], t[1], 0.0, t[3] + 10.0 * t[5], 0.0, t[5]]
    );
    let info = gdalinfo(&f);
    assert_eq!(
        info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"],
        "DEFLATE"
    );
    assert!(
        info["bands"][0]["overviews"]
            .as_array()
            .is_none_or(|o| o.is_empty()),
        "{info}"
    );
    let mosaic = reference_mosaic::<u16>(&tiles);
    assert_pixels(
        "nir window",
        &read_tif::<u16>(&f),
        &mosaic,
        10..150,
        20..201,
    );
}

#[test]
fn calc_results_export_as_float_tifs_equal_to_ndvi_of_the_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ndvi");
    run_ok(&[
        "export",
        s(cube()),
        "--out",
        s(&out),
        "--expr",
        "ndvi=(nir-red)/(nir+red)",
        "--time",
        "2019/2019",
        "--quiet",
    ]);
    let got = read_tif::<f32>(&out.join("ndvi_2019-01-01.tif"));
    let nir = reference_mosaic::<u16>(&fixture_tiles("nir", 2019));
    let red = reference_mosaic::<u16>(&fixture_tiles("red", 2019));
    let mut checked = 0;
    for ((y, x), g) in got.indexed_iter() {
        match (nir.pixels[[y, x]], red.pixels[[y, x]]) {
            (Some(n), Some(r)) => {
                let want = (n as f32 - r as f32) / (n as f32 + r as f32);
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "ndvi at y={y} x={x}: {g} vs {want}"
                );
                checked += 1;
            }
            _ => assert!(g.is_nan(), "ndvi at nodata y={y} x={x} is {g}"),
        }
    }
    assert!(checked > 40_000, "{checked}");
    // A reduction over time has no time in its name; unnamed expressions are 'result'.
    run_ok(&[
        "export",
        s(cube()),
        "--out",
        s(&out),
        "--expr",
        "(nir-red)/(nir+red)",
        "--reduce",
        "max:time",
        "--format",
        "gtiff",
        "--quiet",
    ]);
    assert!(out.join("result.tif").is_file());
}

#[test]
fn png_quicklook_has_the_requested_size_and_transparent_nodata() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("look");
    run_ok(&[
        "export",
        s(cube()),
        "--out",
        s(&out),
        "--format",
        "PNG",
        "--measurements",
        "red",
        "--time",
        "2019/2019",
        "--size",
        "120",
        "--scale",
        "0,2000",
        "--quiet",
    ]);
    let f = out.join("red_2019-01-01.png");
    let bytes = std::fs::read(&f).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    let ds = Dataset::open(&f).unwrap();
    assert_eq!(ds.driver().short_name(), "PNG");
    assert_eq!(ds.raster_size(), (120, 100), "the 240x200 mosaic halved");
    assert_eq!(ds.raster_count(), 2, "grey + alpha");
    let grey = {
        let b = ds.rasterband(1).unwrap();
        let (_, v) = b
            .read_as::<u8>((0, 0), (120, 100), (120, 100), None)
            .unwrap()
            .into_shape_and_vec();
        Array2::from_shape_vec((100, 120), v).unwrap()
    };
    let alpha = {
        let b = ds.rasterband(2).unwrap();
        let (_, v) = b
            .read_as::<u8>((0, 0), (120, 100), (120, 100), None)
            .unwrap()
            .into_shape_and_vec();
        Array2::from_shape_vec((100, 120), v).unwrap()
    };
    // Output pixel (i, j) samples source pixel (2i+1, 2j+1); scaled 0..2000 → 0..255.
    let m = reference_mosaic::<u16>(&fixture_tiles("red", 2019));
    let mut transparent = 0;
    for ((i, j), a) in alpha.indexed_iter() {
        match m.pixels[[2 * i + 1, 2 * j + 1]] {
            Some(v) => {
                assert_eq!(*a, 255, "({i},{j})");
                let want = ((v as f64) / 2000.0 * 255.0).round().clamp(0.0, 255.0) as u8;
                assert_eq!(grey[[i, j]], want, "grey at ({i},{j}) of {v}");
            }
            None => {
                assert_eq!(*a, 0, "nodata at ({i},{j}) is transparent");
                transparent += 1;
            }
        }
    }
    // The corner no tile covers (x >= 210, y >= 100) at least.
    assert!(transparent >= 15 * 50, "{transparent}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "no side files");
}

#[test]
fn export_refuses_bad_input_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tifs");
    let c = s(cube());
    let e = run_one_error(&["export", c, "--out", s(&out), "--format", "JPEG"]);
    assert!(e.contains("--format") && e.contains("JPEG"), "{e}");
    let e = run_one_error(&["export", c, "--out", s(&out), "--measurements", "swir"]);
    assert!(e.contains("swir"), "{e}");
    let e = run_one_error(&[
        "export",
        c,
        "--out",
        s(&out),
        "--memory-limit",
        "64KiB",
        "--quiet",
    ]);
    assert!(e.contains("--memory-limit"), "{e}");
    assert!(!out.exists(), "nothing created by failed runs");
    // An existing file is kept unless --overwrite.
    run_ok(&[
        "export",
        c,
        "--out",
        s(&out),
        "--measurements",
        "red",
        "--time",
        "2019/2019",
        "-q",
    ]);
    let f = out.join("red_2019-01-01.tif");
    std::fs::write(&f, b"mine").unwrap();
    let e = run_one_error(&[
        "export",
        c,
        "--out",
        s(&out),
        "--measurements",
        "red",
        "--time",
        "2019/2019",
    ]);
    assert!(
        e.contains("red_2019-01-01.tif") && e.contains("--overwrite"),
        "{e}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"mine");
    run_ok(&[
        "export",
        c,
        "--out",
        s(&out),
        "--measurements",
        "red",
        "--time",
        "2019/2019",
        "--overwrite",
        "-q",
    ]);
    assert!(Dataset::open(&f).is_ok());
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let e = run_one_error(&["export", c, "--out", s(&file)]);
    assert!(e.contains("a-file") && e.contains("folder"), "{e}");
}
