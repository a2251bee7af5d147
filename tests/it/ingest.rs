//! Integration tests of `chunkcube ingest` (issue 2): pixels against an independent GDAL
//! mosaic, store metadata, resumption, refusal to clobber, bad inputs, overlapping tiles and
//! thread independence. Everything runs on tiny data in temporary directories.

use crate::common::*;
use ndarray::{s as sl, Axis};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const U16_BANDS: [&str; 4] = ["blue", "green", "nir", "red"];
const YEARS: [i32; 2] = [2019, 2020];
/// Fixture mosaic: 240 x 200 px, 2 times.
const W: usize = 240;
const H: usize = 200;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

// ---------------------------------------------------------------------------
// 1. Pixels equal the GDAL reference

/// Every band and time of `cube` equals the GDAL mosaic of the fixture tiles.
fn check_all_pixels(cube: &Path) {
    let mut uncovered_checked = 0;
    for band in U16_BANDS {
        let got = load_band::<u16>(cube, band);
        assert_eq!(got.shape(), &[2, H, W], "{band}: shape [time, y, x]");
        for (ti, year) in YEARS.iter().enumerate() {
            let want = reference_mosaic::<u16>(&fixture_tiles(band, *year));
            let slice = got.index_axis(Axis(0), ti);
            let slice = slice.into_dimensionality::<ndarray::Ix2>().unwrap();
            assert_matches_reference(
                &format!("{} {band} {year}", cube.display()),
                slice.view(),
                &want,
            );
            // Uncovered pixels (the corner the narrow tile leaves) are nodata 0.
            for ((r, c), cov) in want.covered.indexed_iter() {
                if !cov {
                    assert_eq!(
                        slice[[r, c]],
                        0,
                        "{band} {year} uncovered pixel (y={r}, x={c}) must be nodata 0"
                    );
                    uncovered_checked += 1;
                }
            }
        }
    }
    // The fixture has a 30 x 100 px uncovered corner: make sure the test looked at it.
    assert_eq!(
        uncovered_checked,
        4 * 2 * 30 * 100,
        "uncovered pixels checked"
    );

    let got = load_band::<f32>(cube, "smad");
    assert_eq!(got.shape(), &[2, H, W], "smad: shape");
    for (ti, year) in YEARS.iter().enumerate() {
        let want = reference_mosaic::<f32>(&fixture_tiles("smad", *year));
        let slice = got
            .index_axis(Axis(0), ti)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        assert_matches_reference(
            &format!("{} smad {year}", cube.display()),
            slice.view(),
            &want,
        );
        // NaN stays NaN (holes and uncovered corner alike), and there are such pixels.
        let n_nan_ref = want.pixels.iter().filter(|p| p.is_none()).count();
        let n_nan = slice.iter().filter(|v| v.is_nan()).count();
        assert!(
            n_nan_ref > 3000,
            "smad {year}: the fixture should have NaN holes besides the corner"
        );
        assert_eq!(n_nan, n_nan_ref, "smad {year}: NaN pixels");
    }
}

/// Every pixel matches GDAL's reads of the tiles, whatever the storage options: chunks that
/// divide the sides (40 x 40 divides 200 and 240), the usual 64 px (edge chunks), widths that
/// leave narrow edge chunks (37 does not divide 240: 18 px wide) with both times in a chunk,
/// shards, and no compression; each with the metadata its options promise.
#[test]
fn pixels_match_gdal_for_every_storage_option() {
    type Check = fn(&Path);
    let sharded: Check = |cube| {
        let meta = std::fs::read_to_string(cube.join("red/zarr.json")).unwrap();
        assert!(
            meta.contains("sharding_indexed"),
            "red/zarr.json has no sharding codec:\n{meta}"
        );
    };
    let uncompressed: Check = |cube| {
        let names = codec_names(&read_json(&cube.join("red/zarr.json")));
        assert!(
            !names.contains(&"zstd".to_string()),
            "--compression none must not use zstd: {names:?}"
        );
    };
    let nothing: Check = |_| {};
    let cases: [(&[&str], Check); 5] = [
        (&["--chunks", "time=1,y=40,x=40"], nothing),
        (&["--chunks", "time=1,y=64,x=64"], nothing),
        (&["--chunks", "time=2,y=50,x=37"], nothing),
        (
            &["--chunks", "time=1,y=64,x=64", "--shards", "y=128,x=128"],
            sharded,
        ),
        (
            &["--chunks", "time=1,y=64,x=64", "--compression", "none"],
            uncompressed,
        ),
    ];
    for (args, check) in cases {
        let t = tmp();
        let cube = t.path().join("cube");
        ingest_fixtures_with(&cube, args);
        check(&cube);
        check_all_pixels(&cube);
    }
}

#[test]
fn pixels_match_gdal_from_folder_form() {
    // `chunkcube ingest --out CUBE FOLDER` reads band and year from the DE Africa names.
    let t = tmp();
    let cube = t.path().join("cube");
    run_ok(&[
        "ingest",
        "--out",
        s(&cube),
        "--quiet",
        "--chunks",
        "time=1,y=64,x=64",
        s(&fixtures_dir().join("tiles")),
    ]);
    check_all_pixels(&cube);
}

// ---------------------------------------------------------------------------
// 2. Metadata

fn codec_names(array_meta: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(codecs: &Value, out: &mut Vec<String>) {
        for c in codecs.as_array().into_iter().flatten() {
            if let Some(n) = c.get("name").and_then(Value::as_str) {
                out.push(n.to_string());
            }
            if let Some(inner) = c.pointer("/configuration/codecs") {
                walk(inner, out);
            }
        }
    }
    walk(&array_meta["codecs"], &mut out);
    out
}

/// Read a 1-D coordinate array with zarrs directly (not chunkcube).
fn read_coord<T: zarrs::array::ElementOwned>(cube: &Path, name: &str) -> Vec<T> {
    let store = Arc::new(zarrs::filesystem::FilesystemStore::new(cube).unwrap());
    let a = zarrs::array::Array::open(store, &format!("/{name}"))
        .unwrap_or_else(|e| panic!("open /{name}: {e}"));
    a.retrieve_array_subset::<Vec<T>>(&a.subset_all())
        .unwrap_or_else(|e| panic!("read /{name}: {e}"))
}

fn all_fixture_tiles() -> Vec<PathBuf> {
    tifs_under(&fixtures_dir().join("tiles"))
}

#[test]
fn metadata_matches_tiles() {
    let t = tmp();
    let cube = t.path().join("cube");
    ingest_fixtures(&cube, "time=1,y=64,x=64");

    // The union of the tiles' extents, from GDAL.
    let (gt, w, h) = union_grid(&all_fixture_tiles());
    assert_eq!((w, h), (W, H), "fixture mosaic size (test precondition)");

    let c = chunkcube::Cube::open(s(&cube)).expect("cube opens");
    let m = c.meta();
    assert_eq!(
        m.geobox.transform, gt,
        "geobox transform = union of tile extents"
    );
    assert_eq!((m.geobox.width, m.geobox.height), (W as u64, H as u64));
    assert_eq!(m.geobox.epsg, Some(6933));
    assert_eq!(
        m.times.iter().map(|t| t.days()).collect::<Vec<_>>(),
        vec![17897, 18262],
        "2019-01-01 and 2020-01-01 in days since 1970-01-01"
    );
    assert_eq!(
        m.times,
        vec![
            chunkcube::geo::parse_time("2019").unwrap(),
            chunkcube::geo::parse_time("2020-01-01").unwrap()
        ]
    );
    assert_eq!(m.product, "gm_s2_annual");
    let names: Vec<&str> = m.bands.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["blue", "green", "nir", "red", "smad"]);
    for b in &m.bands {
        assert_eq!(b.shape, [2, H as u64, W as u64], "{} shape", b.name);
        assert_eq!(b.chunk_shape, [1, 64, 64], "{} chunk shape", b.name);
        if b.name == "smad" {
            assert_eq!(b.dtype, chunkcube::DType::F32);
            assert!(
                b.nodata.is_some_and(f64::is_nan),
                "smad nodata NaN, got {:?}",
                b.nodata
            );
        } else {
            assert_eq!(b.dtype, chunkcube::DType::U16, "{}", b.name);
            assert_eq!(b.nodata, Some(0.0), "{} nodata", b.name);
        }
    }

    // Band zarr.json: dims, dtype, fill value, attributes, codecs.
    for band in ["blue", "green", "nir", "red", "smad"] {
        let z = read_json(&cube.join(band).join("zarr.json"));
        assert_eq!(z["zarr_format"], 3, "{band}");
        assert_eq!(z["node_type"], "array", "{band}");
        assert_eq!(
            z["dimension_names"],
            serde_json::json!(["time", "y", "x"]),
            "{band}"
        );
        assert_eq!(z["shape"], serde_json::json!([2, H, W]), "{band}");
        assert_eq!(z["attributes"]["grid_mapping"], "spatial_ref", "{band}");
        let codecs = codec_names(&z);
        for want in ["bytes", "zstd", "crc32c"] {
            assert!(
                codecs.iter().any(|c| c == want),
                "{band}: codecs {codecs:?} lack {want}"
            );
        }
        if band == "smad" {
            assert_eq!(z["data_type"], "float32");
            assert_eq!(z["fill_value"], "NaN", "smad fill_value");
        } else {
            assert_eq!(z["data_type"], "uint16", "{band}");
            assert_eq!(z["fill_value"], 0, "{band} fill_value");
            assert_eq!(z["attributes"]["_FillValue"], 0, "{band} _FillValue");
        }
    }

    // Coordinates: pixel centres, and the time axis.
    let xs: Vec<f64> = read_coord(&cube, "x");
    let ys: Vec<f64> = read_coord(&cube, "y");
    assert_eq!(xs.len(), W);
    assert_eq!(ys.len(), H);
    for (i, x) in xs.iter().enumerate() {
        assert!(
            (x - (gt[0] + (i as f64 + 0.5) * gt[1])).abs() < 1e-6,
            "x[{i}] = {x} is not a pixel centre"
        );
    }
    for (j, y) in ys.iter().enumerate() {
        assert!(
            (y - (gt[3] + (j as f64 + 0.5) * gt[5])).abs() < 1e-6,
            "y[{j}] = {y} is not a pixel centre"
        );
    }
    assert_eq!(xs[0], 2_316_005.0);
    assert_eq!(ys[0], -2_500_005.0);
    let times: Vec<i64> = read_coord(&cube, "time");
    assert_eq!(times, vec![17897, 18262]);
    let tz = read_json(&cube.join("time/zarr.json"));
    assert_eq!(tz["attributes"]["units"], "days since 1970-01-01");
    assert_eq!(tz["attributes"]["calendar"], "proleptic_gregorian");
    assert_eq!(tz["dimension_names"], serde_json::json!(["time"]));
    assert_eq!(
        read_json(&cube.join("x/zarr.json"))["dimension_names"],
        serde_json::json!(["x"])
    );
    assert_eq!(
        read_json(&cube.join("y/zarr.json"))["dimension_names"],
        serde_json::json!(["y"])
    );

    // spatial_ref: WKT of EPSG:6933 and the GeoTransform string.
    let sr = read_json(&cube.join("spatial_ref/zarr.json"));
    let gts: Vec<f64> = sr["attributes"]["GeoTransform"]
        .as_str()
        .expect("GeoTransform string")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(gts, gt.to_vec(), "spatial_ref GeoTransform");
    for key in ["crs_wkt", "spatial_ref"] {
        let wkt = sr["attributes"][key]
            .as_str()
            .unwrap_or_else(|| panic!("spatial_ref.{key}"));
        let got = gdal::spatial_ref::SpatialRef::from_wkt(wkt).expect("valid WKT");
        let want = gdal::spatial_ref::SpatialRef::from_epsg(6933).unwrap();
        assert!(got == want, "spatial_ref.{key} is not EPSG:6933: {wkt}");
    }

    // Root group: the commit point.
    let root = read_json(&cube.join("zarr.json"));
    assert_eq!(root["node_type"], "group");
    assert_eq!(root["attributes"]["product"], "gm_s2_annual");

    // info --json.
    let (out, _) = run_ok(&["info", s(&cube), "--json"]);
    let info: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("info --json is not JSON ({e}):\n{out}"));
    assert_eq!(info["shape"], serde_json::json!([2, H, W]));
    assert_eq!(info["dims"], serde_json::json!(["time", "y", "x"]));
    assert_eq!(info["crs"], "EPSG:6933");
    assert_eq!(
        info["time"],
        serde_json::json!(["2019-01-01", "2020-01-01"])
    );
    let bands = info["bands"].as_array().expect("bands");
    let names: Vec<&str> = bands.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["blue", "green", "nir", "red", "smad"]);
    // 2 times x ceil(200/64)=4 x ceil(240/64)=4 = 32 chunks per band.
    for b in bands {
        let name = b["name"].as_str().unwrap();
        assert_eq!(b["chunks"], 32, "{name} chunks");
        assert_eq!(b["chunk_shape"], serde_json::json!([1, 64, 64]), "{name}");
        assert_eq!(b["shape"], serde_json::json!([2, H, W]), "{name}");
        let stored = b["stored_objects"].as_u64().unwrap();
        assert_eq!(
            stored as usize,
            stored_chunks(&cube, name),
            "{name} stored objects vs files on disk"
        );
        assert!(
            stored > 0 && stored <= 32,
            "{name}: {stored} stored objects"
        );
    }
    assert_eq!(info["chunks"], 5 * 32, "total chunks");
    let b = info["bounds"].as_array().unwrap();
    let b: Vec<f64> = b.iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(
        b,
        vec![2_316_000.0, -2_502_000.0, 2_318_400.0, -2_500_000.0],
        "bounds"
    );
}

#[test]
fn chunk_size_minus_one_means_whole_dimension() {
    // DESIGN.md: "A chunk size of -1, or a dimension left out, means the whole dimension";
    // the CLI help of --chunks says "-1 = whole dimension".
    let t = tmp();
    let cube = t.path().join("cube");
    ingest_fixtures(&cube, "time=-1,y=64,x=-1");
    let c = chunkcube::Cube::open(s(&cube)).unwrap();
    assert_eq!(
        c.meta().band("red").unwrap().chunk_shape,
        [2, 64, W as u64],
        "--chunks time=-1,y=64,x=-1"
    );
    check_all_pixels(&cube);
}

#[test]
fn chunk_dimension_left_out_means_whole_dimension() {
    // DESIGN.md: "... or a dimension left out, means the whole dimension (as dask_chunks)".
    let t = tmp();
    let cube = t.path().join("cube");
    ingest_fixtures(&cube, "y=64,x=64");
    let c = chunkcube::Cube::open(s(&cube)).unwrap();
    assert_eq!(
        c.meta().band("red").unwrap().chunk_shape,
        [2, 64, 64],
        "--chunks y=64,x=64 (time left out)"
    );
}

// ---------------------------------------------------------------------------
// 3. Resume, no-op re-runs, refusing to clobber

#[test]
fn resumed_ingest_is_byte_identical_to_fresh() {
    let t = tmp();
    let fresh = t.path().join("fresh");
    let resumed = t.path().join("resumed");
    let chunks = ["--chunks", "time=1,y=64,x=64", "--threads", "2"];
    ingest_fixtures_with(&fresh, &chunks);
    let total = 5 * 32;

    // Interrupt twice, after 10 chunks each time.
    let mut stopped_args = ingest_fixtures_args(&resumed, &chunks);
    stopped_args.extend(["--stop-after-chunks".into(), "10".into()]);
    let mut last = 0;
    for round in 1..=2 {
        let line = run_err(&stopped_args, &[]);
        assert!(
            line.contains("10"),
            "round {round}: the error should say where it stopped: {line}"
        );
        assert!(
            !resumed.join("zarr.json").exists(),
            "round {round}: an interrupted ingest wrote the root zarr.json"
        );
        assert!(
            !cube_opens(&resumed),
            "round {round}: an interrupted ingest opens as a cube"
        );
        let n: usize = ["blue", "green", "nir", "red", "smad"]
            .iter()
            .map(|b| stored_chunks(&resumed, b))
            .sum();
        assert!(
            n >= last + 10 && n < total,
            "round {round}: {n} chunks stored after stopping (before: {last})"
        );
        last = n;
    }

    // Re-running the command (without the stop) completes the same cube.
    let (_, err) = run_ok(&ingest_fixtures_args(&resumed, &chunks));
    let _ = err;
    assert!(cube_opens(&resumed));
    assert_same_tree(&fresh, &resumed);
    check_all_pixels(&resumed);
}

#[test]
fn rerunning_a_complete_ingest_is_a_noop() {
    let t = tmp();
    let cube = t.path().join("cube");
    let args = ingest_fixtures_args(&cube, &["--chunks", "time=1,y=64,x=64"]);
    run_ok(&args);
    let before = tree_bytes(&cube);
    let mtimes = tree_mtimes(&cube);
    std::thread::sleep(std::time::Duration::from_millis(20));
    run_ok(&args);
    assert!(
        tree_bytes(&cube) == before,
        "a no-op re-run changed the cube"
    );
    assert_eq!(tree_mtimes(&cube), mtimes, "a no-op re-run rewrote files");
    assert!(cube_opens(&cube));
}

/// A small DE Africa style tile set under `dir`: columns `x0/` and `x1/` of 8 x 6 px tiles,
/// 2 rows, bands red and nir, years 2019 and 2020 (fast stand-in for the fixtures where only
/// the ingest bookkeeping matters).
fn small_tile_set(dir: &Path) {
    let spec = TifSpec::default();
    for ix in 0..2 {
        for iy in 0..2 {
            for year in [2019, 2020] {
                for band in ["red", "nir"] {
                    let p = dir.join(format!("x{ix}")).join(deafrica_name(
                        &format!("x{ix}y{iy}"),
                        year,
                        band,
                    ));
                    let k = (ix * 7 + iy * 3 + year as usize + band.len()) as u16;
                    write_tif_with::<u16>(
                        &p,
                        &spec.shifted(8 * ix as i64, 6 * iy as i64),
                        |x, y| 1 + k + (x * y) as u16,
                    );
                }
            }
        }
    }
}

/// Ingest a small tile set into a fresh cube, then ingest `other(tiles_dir)` (arguments after
/// `ingest --out CUBE --quiet`): it must fail without --overwrite, leave the old cube untouched
/// and opening, and succeed with --overwrite, giving the same bytes as a fresh ingest of `other`.
fn check_refused_then_overwritten(other: impl Fn(&Path) -> Vec<String>, what: &str) {
    let t = tmp();
    let tiles = t.path().join("tiles");
    small_tile_set(&tiles);
    let cube = t.path().join("cube");
    run_ok(&ingest_paths_args(
        &cube,
        &[&tiles],
        &["--chunks", "time=1,y=4,x=4"],
    ));
    let before = tree_bytes(&cube);

    let mut args: Vec<String> = vec![
        "ingest".into(),
        "--out".into(),
        s(&cube).into(),
        "--quiet".into(),
    ];
    args.extend(other(&tiles));
    let line = run_err(&args, &["--overwrite"]);
    assert!(
        line.contains(s(&cube)),
        "{what}: the error should name the output: {line}"
    );
    assert!(
        tree_bytes(&cube) == before,
        "{what}: a refused ingest changed the existing cube"
    );
    assert!(cube_opens(&cube), "{what}: the old cube no longer opens");

    args.push("--overwrite".into());
    run_ok(&args);
    assert!(
        cube_opens(&cube),
        "{what}: the overwritten cube does not open"
    );
    // Same result as a fresh ingest of the new input elsewhere.
    let fresh = t.path().join("fresh");
    let mut fargs: Vec<String> = vec![
        "ingest".into(),
        "--out".into(),
        s(&fresh).into(),
        "--quiet".into(),
    ];
    fargs.extend(other(&tiles));
    run_ok(&fargs);
    assert_same_tree(&fresh, &cube);
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn different_chunks_need_overwrite() {
    check_refused_then_overwritten(
        |d| strings(&["--chunks", "time=2,y=5,x=3", s(d)]),
        "other chunks",
    );
}

#[test]
fn different_compression_needs_overwrite() {
    check_refused_then_overwritten(
        |d| {
            strings(&[
                "--chunks",
                "time=1,y=4,x=4",
                "--compression",
                "zstd:9",
                s(d),
            ])
        },
        "other compression",
    );
}

#[test]
fn different_shards_need_overwrite() {
    check_refused_then_overwritten(
        |d| strings(&["--chunks", "time=1,y=4,x=4", "--shards", "y=8,x=8", s(d)]),
        "other shards",
    );
}

#[test]
fn different_tiles_need_overwrite() {
    // Only the x0 column of tiles.
    check_refused_then_overwritten(
        |d| strings(&["--chunks", "time=1,y=4,x=4", s(&d.join("x0"))]),
        "other tiles",
    );
}

#[test]
fn different_product_needs_overwrite() {
    // The product name is stored in the cube: a different one is a different cube, not a no-op.
    check_refused_then_overwritten(
        |d| {
            strings(&[
                "--chunks",
                "time=1,y=4,x=4",
                "--product",
                "other_product",
                s(d),
            ])
        },
        "other product",
    );
}

#[test]
fn unfinished_ingest_of_other_options_needs_overwrite() {
    let t = tmp();
    let tiles = t.path().join("tiles");
    small_tile_set(&tiles);
    let cube = t.path().join("cube");
    let mut stopped = ingest_paths_args(&cube, &[&tiles], &["--chunks", "time=1,y=4,x=4"]);
    stopped.extend(["--stop-after-chunks".into(), "5".into()]);
    run_err(&stopped, &[]);
    let before = tree_bytes(&cube);

    let other = ingest_paths_args(&cube, &[&tiles], &["--chunks", "time=2,y=5,x=3"]);
    run_err(&other, &["--overwrite"]);
    assert!(
        tree_bytes(&cube) == before,
        "a refused ingest changed the unfinished one"
    );

    let mut ow = other.clone();
    ow.push("--overwrite".into());
    run_ok(&ow);
    // No leftovers of the unfinished ingest (its 4 px chunks).
    let fresh = t.path().join("fresh");
    run_ok(&ingest_paths_args(
        &fresh,
        &[&tiles],
        &["--chunks", "time=2,y=5,x=3"],
    ));
    assert_same_tree(&fresh, &cube);
}

#[test]
fn non_cube_output_needs_overwrite() {
    let t = tmp();
    let tiles = t.path().join("tiles");
    small_tile_set(&tiles);
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "precious").unwrap();
    let args = ingest_paths_args(&out, &[&tiles], &[]);
    run_err(&args, &["--overwrite"]);
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "precious"
    );
    let mut ow = args.clone();
    ow.push("--overwrite".into());
    run_ok(&ow);
    assert!(cube_opens(&out));
}

// ---------------------------------------------------------------------------
// 4. Bad inputs: exit 1, one line naming the culprit, no cube that opens

/// Run an ingest that must fail; the error line must contain `culprits`; nothing at `out`
/// may open as a cube.
fn bad(args: &[String], out: &Path, culprits: &[&str]) -> String {
    let line = run_err(args, culprits);
    assert!(
        !cube_opens(out),
        "a failed ingest left a cube that opens at {}",
        out.display()
    );
    assert!(
        !out.join("zarr.json").exists(),
        "a failed ingest wrote {}/zarr.json",
        out.display()
    );
    line
}

fn ingest_paths_args(out: &Path, paths: &[&Path], extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "ingest".into(),
        "--out".into(),
        s(out).into(),
        "--quiet".into(),
    ];
    a.extend(extra.iter().map(|x| x.to_string()));
    a.extend(paths.iter().map(|p| s(p).to_string()));
    a
}

fn ingest_manifest_args(out: &Path, manifest: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "ingest".into(),
        "--manifest".into(),
        s(manifest).into(),
        "--out".into(),
        s(out).into(),
        "--quiet".into(),
    ];
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// Three small red 2019 tiles side by side (a, b, c in path order), written by `make_b` for
/// the middle one; ingest must fail naming the middle file and `what`.
fn check_mismatched_middle_tile(what: &str, make_b: impl Fn(&Path, &TifSpec)) {
    let t = tmp();
    let dir = t.path().join("tiles");
    let spec = TifSpec::default();
    let a = dir.join(deafrica_name("a", 2019, "red"));
    let b = dir.join(deafrica_name("b", 2019, "red"));
    let c = dir.join(deafrica_name("c", 2019, "red"));
    write_tif_with::<u16>(&a, &spec, |x, y| (1 + x + y) as u16);
    make_b(&b, &spec.shifted(spec.width as i64, 0));
    write_tif_with::<u16>(&c, &spec.shifted(2 * spec.width as i64, 0), |x, y| {
        (1 + x + y) as u16
    });
    let out = t.path().join("cube");
    bad(
        &ingest_paths_args(&out, &[&dir], &["--chunks", "time=1,y=4,x=4"]),
        &out,
        &[b.file_name().unwrap().to_str().unwrap(), what],
    );
}

#[test]
fn bad_truncated_tiff() {
    let t = tmp();
    let dir = t.path().join("tiles");
    std::fs::create_dir_all(&dir).unwrap();
    let good_src = fixture_tiles("red", 2019)[0].clone();
    let trunc_src = fixture_tiles("red", 2019)[1].clone();
    let good = dir.join(good_src.file_name().unwrap());
    let trunc = dir.join(trunc_src.file_name().unwrap());
    std::fs::copy(&good_src, &good).unwrap();
    let bytes = std::fs::read(&trunc_src).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    // Precondition: the header survives (GDAL opens it) but the pixels are gone.
    {
        let ds =
            gdal::Dataset::open(&trunc).expect("the truncated tile's header should still open");
        let (w, h) = ds.raster_size();
        let r = ds
            .rasterband(1)
            .unwrap()
            .read_as::<u16>((0, 0), (w, h), (w, h), None);
        assert!(
            r.is_err(),
            "precondition: reading the truncated tile with GDAL should fail"
        );
    }
    let out = t.path().join("cube");
    bad(
        &ingest_paths_args(&out, &[&dir], &["--chunks", "time=1,y=32,x=32"]),
        &out,
        &[trunc.file_name().unwrap().to_str().unwrap()],
    );
    // The half-written store is refused by `info` too (one line, exit 1).
    run_err(&["info", s(&out)], &["zarr.json"]);
    // Also through a manifest, with the truncated tile listed first.
    let manifest = t.path().join("tiles.csv");
    write_manifest(
        &manifest,
        &[(s(&trunc), "red", "2019"), (s(&good), "red", "2019")],
    );
    let out2 = t.path().join("cube2");
    bad(
        &ingest_manifest_args(&out2, &manifest, &[]),
        &out2,
        &[trunc.file_name().unwrap().to_str().unwrap()],
    );
}

#[test]
fn bad_not_a_raster() {
    let t = tmp();
    let dir = t.path().join("tiles");
    std::fs::create_dir_all(&dir).unwrap();
    let good_src = fixture_tiles("red", 2019)[0].clone();
    std::fs::copy(&good_src, dir.join(good_src.file_name().unwrap())).unwrap();
    let text = dir.join(deafrica_name("x009y009", 2019, "red"));
    std::fs::write(&text, "this is not a GeoTIFF\n").unwrap();
    let out = t.path().join("cube");
    bad(
        &ingest_paths_args(&out, &[&dir], &[]),
        &out,
        &[text.file_name().unwrap().to_str().unwrap()],
    );
}

/// A tile that does not fit the others (CRS, resolution, a grid offset that is not a whole
/// pixel in x or y, another dtype or nodata for the same band) is refused, naming what differs.
#[test]
fn bad_mismatched_tiles() {
    type Write = fn(&Path, &TifSpec);
    let cases: [(&str, Write); 6] = [
        ("crs", |p, spec| {
            let mut sp = spec.clone();
            sp.epsg = 32735;
            write_tif_with::<u16>(p, &sp, |x, y| (1 + x + y) as u16);
        }),
        ("resolution", |p, spec| {
            let mut sp = spec.clone();
            sp.pixel = (20.0, -20.0);
            write_tif_with::<u16>(p, &sp, |x, y| (1 + x + y) as u16);
        }),
        ("pixel", |p, spec| {
            let mut sp = spec.clone();
            sp.origin.0 += 5.0; // half a pixel
            write_tif_with::<u16>(p, &sp, |x, y| (1 + x + y) as u16);
        }),
        ("pixel", |p, spec| {
            let mut sp = spec.clone();
            sp.origin.1 -= 2.5;
            write_tif_with::<u16>(p, &sp, |x, y| (1 + x + y) as u16);
        }),
        ("red", |p, spec| {
            write_tif_with::<i16>(p, spec, |x, y| (1 + x + y) as i16);
        }),
        ("nodata", |p, spec| {
            let mut sp = spec.clone();
            sp.nodata = Some(65535.0);
            write_tif_with::<u16>(p, &sp, |x, y| (1 + x + y) as u16);
        }),
    ];
    for (what, write) in cases {
        check_mismatched_middle_tile(what, write);
    }
}

#[test]
fn different_dtypes_for_different_bands_are_fine() {
    // Not a bad input: dtype and nodata are per band (like red uint16 and smad float32).
    let t = tmp();
    let dir = t.path().join("tiles");
    let spec = TifSpec::default();
    write_tif_with::<u16>(&dir.join(deafrica_name("a", 2019, "red")), &spec, |x, y| {
        (1 + x + y) as u16
    });
    let mut fs = spec.clone();
    fs.nodata = Some(f64::NAN);
    write_tif_with::<f32>(&dir.join(deafrica_name("a", 2019, "smad")), &fs, |x, _| {
        if x == 0 {
            f32::NAN
        } else {
            x as f32 * 0.5
        }
    });
    let out = t.path().join("cube");
    run_ok(&ingest_paths_args(&out, &[&dir], &[]));
    let red = load_band::<u16>(&out, "red");
    let smad = load_band::<f32>(&out, "smad");
    assert_eq!(red[[0, 2, 3]], 6);
    assert!(smad[[0, 1, 0]].is_nan());
    assert_eq!(smad[[0, 1, 3]], 1.5);
}

/// A manifest with one good row and then `bad_row` as row 3.
fn check_bad_manifest_row(bad_row: &str, culprits: &[&str]) {
    let t = tmp();
    let good = fixture_tiles("red", 2019)[0].clone();
    let manifest = t.path().join("tiles.csv");
    std::fs::write(
        &manifest,
        format!("path,band,time\n{},red,2019\n{bad_row}\n", s(&good)),
    )
    .unwrap();
    let out = t.path().join("cube");
    let mut c = vec!["tiles.csv", "row 3"];
    c.extend_from_slice(culprits);
    bad(&ingest_manifest_args(&out, &manifest, &[]), &out, &c);
}

#[test]
fn bad_manifest_row_missing_column() {
    let good = fixture_tiles("red", 2019)[1].clone();
    check_bad_manifest_row(&format!("{},red", s(&good)), &[]);
}

#[test]
fn bad_manifest_unparseable_time() {
    let good = fixture_tiles("red", 2019)[1].clone();
    check_bad_manifest_row(&format!("{},red,2019-13-01", s(&good)), &["2019-13-01"]);
    check_bad_manifest_row(&format!("{},red,last year", s(&good)), &["last year"]);
}

#[test]
fn bad_duplicate_same_file_twice() {
    let t = tmp();
    let tiles = fixture_tiles("red", 2019);
    let manifest = t.path().join("tiles.csv");
    write_manifest(
        &manifest,
        &[
            (s(&tiles[0]), "red", "2019"),
            (s(&tiles[1]), "red", "2019"),
            (s(&tiles[0]), "red", "2019"),
        ],
    );
    let out = t.path().join("cube");
    bad(
        &ingest_manifest_args(&out, &manifest, &[]),
        &out,
        &["duplicate", tiles[0].file_name().unwrap().to_str().unwrap()],
    );
}

#[test]
fn bad_duplicate_two_files_same_extent() {
    let t = tmp();
    let dir = t.path().join("tiles");
    let spec = TifSpec::default();
    let a = dir.join(deafrica_name("a", 2019, "red"));
    let b = dir.join(deafrica_name("b", 2019, "red"));
    write_tif_with::<u16>(&a, &spec, |x, y| (1 + x + y) as u16);
    write_tif_with::<u16>(&b, &spec, |x, y| (2 + x + y) as u16);
    let out = t.path().join("cube");
    // The line must name both clashing files, or the user cannot tell which one to drop.
    bad(
        &ingest_paths_args(&out, &[&dir], &[]),
        &out,
        &[
            "duplicate",
            a.file_name().unwrap().to_str().unwrap(),
            b.file_name().unwrap().to_str().unwrap(),
        ],
    );
}

#[test]
fn same_extent_different_times_is_fine() {
    // Not a duplicate: the same tile at two times.
    let t = tmp();
    let dir = t.path().join("tiles");
    let spec = TifSpec::default();
    write_tif_with::<u16>(&dir.join(deafrica_name("a", 2019, "red")), &spec, |x, y| {
        (1 + x + y) as u16
    });
    write_tif_with::<u16>(&dir.join(deafrica_name("a", 2020, "red")), &spec, |x, y| {
        (2 + x + y) as u16
    });
    let out = t.path().join("cube");
    run_ok(&ingest_paths_args(&out, &[&dir], &[]));
    let red = load_band::<u16>(&out, "red");
    assert_eq!(red.shape(), &[2, spec.height, spec.width]);
    assert_eq!((red[[0, 0, 0]], red[[1, 0, 0]]), (1, 2));
}

#[test]
fn bad_chunk_specs() {
    let t = tmp();
    let out = t.path().join("cube");
    for spec in [
        "x=0",
        "garbage",
        "band=3",
        "time=1,y=-5,x=64",
        "y=1.5",
        "x=64,x=32",
        "64MiB",
    ] {
        let line = bad(
            &ingest_fixtures_args(&out, &["--chunks", spec]),
            &out,
            &["--chunks"],
        );
        assert!(
            line.contains(spec) || spec == "64MiB",
            "--chunks {spec}: the error should quote the spec: {line}"
        );
    }
    let line = bad(
        &ingest_fixtures_args(&out, &["--chunks", "band=3"]),
        &out,
        &["band"],
    );
    let _ = line;
}

#[test]
fn bad_shards_compression_threads() {
    let t = tmp();
    let out = t.path().join("cube");
    bad(
        &ingest_fixtures_args(
            &out,
            &["--chunks", "time=1,y=64,x=64", "--shards", "y=100,x=128"],
        ),
        &out,
        &["--shards"],
    );
    bad(
        &ingest_fixtures_args(&out, &["--shards", "y=0"]),
        &out,
        &["--shards"],
    );
    bad(
        &ingest_fixtures_args(&out, &["--compression", "lz4"]),
        &out,
        &["--compression"],
    );
    bad(
        &ingest_fixtures_args(&out, &["--threads", "0"]),
        &out,
        &["--threads"],
    );
}

#[test]
fn bad_no_tiles_found() {
    let t = tmp();
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = t.path().join("cube");
    bad(&ingest_paths_args(&out, &[&empty], &[]), &out, &[s(&empty)]);
    // A folder with files, none of them GeoTIFFs.
    std::fs::write(empty.join("readme.txt"), "nothing here").unwrap();
    bad(&ingest_paths_args(&out, &[&empty], &[]), &out, &[s(&empty)]);
    // A manifest with only the header.
    let manifest = t.path().join("header_only.csv");
    std::fs::write(&manifest, "path,band,time\n").unwrap();
    bad(
        &ingest_manifest_args(&out, &manifest, &[]),
        &out,
        &["header_only.csv"],
    );
}

#[test]
fn bad_missing_inputs() {
    let t = tmp();
    let out = t.path().join("cube");
    let manifest = t.path().join("no_such_manifest.csv");
    bad(
        &ingest_manifest_args(&out, &manifest, &[]),
        &out,
        &["no_such_manifest.csv"],
    );
    let nothing = t.path().join("no_such_folder");
    bad(
        &ingest_paths_args(&out, &[&nothing], &[]),
        &out,
        &["no_such_folder"],
    );
    // A manifest row naming a file that does not exist.
    let m2 = t.path().join("tiles.csv");
    write_manifest(&m2, &[("missing_tile.tif", "red", "2019")]);
    bad(
        &ingest_manifest_args(&out, &m2, &[]),
        &out,
        &["missing_tile.tif"],
    );
}

// ---------------------------------------------------------------------------
// 5. Overlapping tiles: the first tile in path order with a valid pixel wins

#[test]
fn overlapping_tiles_first_valid_pixel_in_path_order_wins() {
    // A: 10 x 8 at (0, 0), values 100 + ...; holes (0) at rows 2..5 of column 8 (in the overlap)
    //    and at (row 6, col 9).
    // B: 10 x 8 at (+7 cols, +2 rows), overlapping A's columns 7..10, rows 2..8; values 200 + ...;
    //    a hole at its (row 4, col 2) = mosaic (6, 9), where A has a hole too.
    // Rule: where tiles overlap, the first tile in path order with a valid pixel wins, so B only
    // fills A's holes. The manifest lists B first to show that path order, not listing order,
    // decides.
    let t = tmp();
    let dir = t.path().join("tiles");
    let spec = TifSpec {
        width: 10,
        height: 8,
        ..TifSpec::default()
    };
    let a = dir.join("a_red.tif");
    let b = dir.join("b_red.tif");
    write_tif_with::<u16>(&a, &spec, |x, y| {
        if (x == 8 && (2..5).contains(&y)) || (x == 9 && y == 6) {
            0
        } else {
            (100 + 10 * y + x) as u16
        }
    });
    let bspec = spec.shifted(7, 2);
    write_tif_with::<u16>(&b, &bspec, |x, y| {
        if x == 2 && y == 4 {
            0
        } else {
            (200 + 10 * y + x) as u16
        }
    });
    let manifest = t.path().join("tiles.csv");
    write_manifest(&manifest, &[(s(&b), "red", "2019"), (s(&a), "red", "2019")]);
    let out = t.path().join("cube");
    // Chunk edges cut through the overlap.
    run_ok(&ingest_manifest_args(
        &out,
        &manifest,
        &["--chunks", "time=1,y=3,x=4"],
    ));

    let got = load_band::<u16>(&out, "red");
    assert_eq!(got.shape(), &[1, 10, 17]);
    let g = got.slice(sl![0, .., ..]);
    // Hand-computed expectations.
    assert_eq!(g[[3, 7]], 100 + 30 + 7, "overlap, A valid: A wins");
    assert_eq!(g[[7, 9]], 100 + 70 + 9, "overlap, A valid: A wins");
    assert_eq!(
        g[[2, 8]],
        200 + 1,
        "overlap, A hole: B fills it (B row 0, col 1)"
    );
    assert_eq!(g[[4, 8]], 200 + 20 + 1, "overlap, A hole: B fills it");
    assert_eq!(g[[6, 9]], 0, "overlap, both holes: nodata");
    assert_eq!(g[[5, 12]], 200 + 30 + 5, "B only");
    assert_eq!(g[[1, 2]], 100 + 10 + 2, "A only");
    assert_eq!(g[[9, 3]], 0, "uncovered (below A, left of B): nodata");
    assert_eq!(g[[0, 15]], 0, "uncovered (right of A, above B): nodata");
    // And the whole mosaic equals the independent reference.
    let want = reference_mosaic::<u16>(&[a.clone(), b.clone()]);
    assert_matches_reference("overlap", g.view(), &want);

    // Renaming so that B's file sorts first flips the winner in the overlap.
    let dir2 = t.path().join("tiles2");
    std::fs::create_dir_all(&dir2).unwrap();
    let a2 = dir2.join("z_red.tif");
    let b2 = dir2.join("y_red.tif");
    std::fs::copy(&a, &a2).unwrap();
    std::fs::copy(&b, &b2).unwrap();
    let manifest2 = t.path().join("tiles2.csv");
    write_manifest(
        &manifest2,
        &[(s(&a2), "red", "2019"), (s(&b2), "red", "2019")],
    );
    let out2 = t.path().join("cube2");
    run_ok(&ingest_manifest_args(
        &out2,
        &manifest2,
        &["--chunks", "time=1,y=3,x=4"],
    ));
    let got2 = load_band::<u16>(&out2, "red");
    let g2 = got2.slice(sl![0, .., ..]);
    assert_eq!(
        g2[[3, 7]],
        200 + 10,
        "B's file now sorts first: B wins where valid"
    );
    assert_eq!(g2[[6, 9]], 0, "both holes: nodata");
    assert_matches_reference(
        "overlap reversed",
        g2.view(),
        &reference_mosaic::<u16>(&[a2, b2]),
    );
}

#[test]
fn overlapping_float_tiles_fill_nan_holes() {
    let t = tmp();
    let dir = t.path().join("tiles");
    let spec = TifSpec {
        width: 6,
        height: 5,
        nodata: Some(f64::NAN),
        ..TifSpec::default()
    };
    let a = dir.join("a_smad.tif");
    let b = dir.join("b_smad.tif");
    write_tif_with::<f32>(&a, &spec, |x, y| {
        if x >= 4 && y == 1 {
            f32::NAN
        } else {
            1.0 + x as f32 + 0.25 * y as f32
        }
    });
    write_tif_with::<f32>(&b, &spec.shifted(3, 0), |x, y| {
        if x == 2 && y == 1 {
            f32::NAN
        } else {
            10.0 + x as f32
        }
    });
    let manifest = t.path().join("tiles.csv");
    write_manifest(
        &manifest,
        &[(s(&a), "smad", "2019"), (s(&b), "smad", "2019")],
    );
    let out = t.path().join("cube");
    run_ok(&ingest_manifest_args(
        &out,
        &manifest,
        &["--chunks", "time=1,y=2,x=4"],
    ));
    let got = load_band::<f32>(&out, "smad");
    let g = got.slice(sl![0, .., ..]);
    assert_eq!(g[[0, 4]], 5.0, "A valid wins");
    assert_eq!(g[[1, 4]], 11.0, "A NaN hole filled by B");
    assert!(g[[1, 5]].is_nan(), "both NaN stays NaN");
    assert_matches_reference("float overlap", g.view(), &reference_mosaic::<f32>(&[a, b]));
}

// ---------------------------------------------------------------------------
// 6. Thread independence

#[test]
fn one_and_two_threads_give_identical_cubes() {
    let t = tmp();
    let one = t.path().join("one");
    let two = t.path().join("two");
    ingest_fixtures_with(&one, &["--chunks", "time=1,y=64,x=48", "--threads", "1"]);
    ingest_fixtures_with(&two, &["--chunks", "time=1,y=64,x=48", "--threads", "2"]);
    assert_same_tree(&one, &two);
    // Sharded, on a small tile set with many shards.
    let tiles = t.path().join("tiles");
    small_tile_set(&tiles);
    let one_s = t.path().join("one_s");
    let two_s = t.path().join("two_s");
    run_ok(&ingest_paths_args(
        &one_s,
        &[&tiles],
        &[
            "--chunks",
            "time=1,y=2,x=3",
            "--shards",
            "y=4,x=6",
            "--threads",
            "1",
        ],
    ));
    run_ok(&ingest_paths_args(
        &two_s,
        &[&tiles],
        &[
            "--chunks",
            "time=1,y=2,x=3",
            "--shards",
            "y=4,x=6",
            "--threads",
            "2",
        ],
    ));
    assert!(std::fs::read_to_string(one_s.join("red/zarr.json"))
        .unwrap()
        .contains("sharding_indexed"));
    assert_same_tree(&one_s, &two_s);
}

#[test]
fn library_ingest_matches_cli() {
    // The library entry point gives the same store as the CLI.
    use chunkcube::ingest::{ingest, IngestOptions, Sources};
    let t = tmp();
    let cli = t.path().join("cli");
    let lib = t.path().join("lib");
    ingest_fixtures(&cli, "time=1,y=64,x=64");
    let opts = IngestOptions {
        chunks: chunkcube::ChunkSpec::parse("time=1,y=64,x=64").unwrap(),
        quiet: true,
        threads: Some(2),
        ..IngestOptions::default()
    };
    let r =
        ingest(&Sources::Manifest(fixtures_manifest()), s(&lib), &opts).expect("library ingest");
    assert_eq!(r.tiles, 40);
    assert_same_tree(&cli, &lib);
}

// ---------------------------------------------------------------------------
// More bad inputs and edge cases

#[test]
fn bad_corrupt_tiff() {
    // Bytes in the middle of the pixel data overwritten: DEFLATE decoding fails.
    let t = tmp();
    let dir = t.path().join("tiles");
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture_tiles("red", 2019)[1].clone();
    let corrupt = dir.join(src.file_name().unwrap());
    let mut bytes = std::fs::read(&src).unwrap();
    let n = bytes.len();
    bytes[n / 2..n / 2 + 2000].fill(0xFF);
    std::fs::write(&corrupt, &bytes).unwrap();
    {
        let ds =
            gdal::Dataset::open(&corrupt).expect("the corrupt tile's header should still open");
        let (w, h) = ds.raster_size();
        let r = ds
            .rasterband(1)
            .unwrap()
            .read_as::<u16>((0, 0), (w, h), (w, h), None);
        assert!(
            r.is_err(),
            "precondition: reading the corrupt tile with GDAL should fail"
        );
    }
    let out = t.path().join("cube");
    bad(
        &ingest_paths_args(&out, &[&dir], &["--chunks", "time=1,y=32,x=32"]),
        &out,
        &[corrupt.file_name().unwrap().to_str().unwrap()],
    );
}

#[test]
fn bad_tile_without_georeferencing() {
    let t = tmp();
    let dir = t.path().join("tiles");
    std::fs::create_dir_all(&dir).unwrap();
    write_tif_with::<u16>(
        &dir.join(deafrica_name("a", 2019, "red")),
        &TifSpec::default(),
        |x, _| x as u16 + 1,
    );
    let plain = dir.join(deafrica_name("b", 2019, "red"));
    {
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let ds = driver
            .create_with_band_type::<u16, _>(&plain, 8, 6, 1)
            .unwrap();
        ds.close().unwrap();
    }
    let out = t.path().join("cube");
    bad(
        &ingest_paths_args(&out, &[&dir], &[]),
        &out,
        &[plain.file_name().unwrap().to_str().unwrap()],
    );
}

#[test]
fn bad_manifest_band_names() {
    let good = fixture_tiles("red", 2019)[1].clone();
    // Coordinate names and names that are not safe store keys.
    check_bad_manifest_row(&format!("{},x,2019", s(&good)), &["'x'"]);
    check_bad_manifest_row(&format!("{},spatial_ref,2019", s(&good)), &["spatial_ref"]);
    check_bad_manifest_row(&format!("{},../red,2019", s(&good)), &["../red"]);
}

#[test]
fn usage_errors_follow_the_error_contract() {
    // DESIGN.md: "Exit status non-zero on any failure, with one clear line naming the ... flag";
    // the CLI contract: exit 1, one stderr line starting with "error: ". Argument-parser errors
    // are failures too.
    let t = tmp();
    let out = t.path().join("cube");
    let tiles = fixtures_dir().join("tiles");
    let m = fixtures_manifest();
    run_err(
        &["ingest", "--out", s(&out), "--threads", "abc", s(&tiles)],
        &["--threads", "abc"],
    );
    run_err(
        &["ingest", "--out", s(&out), "--manifest", s(&m), s(&tiles)],
        &["--manifest"],
    );
    run_err(&["ingest", "--manifest", s(&m)], &["--out"]);
    run_err(
        &["ingest", "--out", s(&out), "--bogus", s(&tiles)],
        &["--bogus"],
    );
    assert!(!cube_opens(&out));
}

#[test]
fn failed_overwrite_keeps_the_old_cube_when_inputs_are_bad() {
    // An input error found while scanning (before anything is written) must not destroy the
    // cube that --overwrite would have replaced.
    let t = tmp();
    let good = t.path().join("good");
    small_tile_set(&good);
    let cube = t.path().join("cube");
    run_ok(&ingest_paths_args(&cube, &[&good], &[]));
    let before = tree_bytes(&cube);
    let dir = t.path().join("tiles");
    let spec = TifSpec::default();
    write_tif_with::<u16>(&dir.join(deafrica_name("a", 2019, "red")), &spec, |x, _| {
        x as u16 + 1
    });
    let mut other = spec.shifted(spec.width as i64, 0);
    other.epsg = 32735;
    write_tif_with::<u16>(
        &dir.join(deafrica_name("b", 2019, "red")),
        &other,
        |x, _| x as u16 + 1,
    );
    run_err(
        &ingest_paths_args(&cube, &[&dir], &["--overwrite"]),
        &["crs"],
    );
    assert!(
        tree_bytes(&cube) == before,
        "a failed --overwrite ingest changed the old cube"
    );
    assert!(cube_opens(&cube));
}

#[test]
fn resume_after_a_crash_mid_write() {
    // A crash while writing leaves `<key>.tmp` files (atomic writes) and missing chunks; the
    // re-run must clean them up and end byte-identical to a fresh ingest.
    let t = tmp();
    let fresh = t.path().join("fresh");
    let crashed = t.path().join("crashed");
    ingest_fixtures(&fresh, "time=1,y=64,x=64");
    let mut stopped = ingest_fixtures_args(&crashed, &["--chunks", "time=1,y=64,x=64"]);
    stopped.extend(["--stop-after-chunks".into(), "20".into()]);
    run_err(&stopped, &[]);
    // Simulate the crash: a torn temporary write of a chunk that is not yet stored.
    let torn = crashed.join("red/c/1/3/3.tmp");
    assert!(
        !crashed.join("red/c/1/3/3").exists(),
        "precondition: chunk red/c/1/3/3 not written yet"
    );
    std::fs::create_dir_all(torn.parent().unwrap()).unwrap();
    std::fs::write(&torn, b"torn").unwrap();
    run_ok(&ingest_fixtures_args(
        &crashed,
        &["--chunks", "time=1,y=64,x=64"],
    ));
    assert_same_tree(&fresh, &crashed);
}

#[test]
fn shards_larger_than_the_mosaic() {
    // DESIGN.md's own example `--shards y=4096,x=4096` (default 1024 px chunks) on a mosaic
    // smaller than one chunk, and shards that are a multiple of the requested chunks.
    let t = tmp();
    let cube = t.path().join("cube");
    ingest_fixtures_with(&cube, &["--shards", "y=4096,x=4096"]);
    check_all_pixels(&cube);
    let cube2 = t.path().join("cube2");
    ingest_fixtures_with(
        &cube2,
        &["--chunks", "time=1,y=256,x=256", "--shards", "y=512,x=512"],
    );
    check_all_pixels(&cube2);
}

#[test]
fn other_nodata_values_and_dtypes() {
    // int16 with nodata -9999 and uint16 with nodata 65535 over two tiles with an uncovered
    // corner; uint8 without any nodata.
    let t = tmp();
    let dir = t.path().join("tiles");
    let spec = TifSpec {
        width: 7,
        height: 5,
        ..TifSpec::default()
    };
    let mut i16s = spec.clone();
    i16s.nodata = Some(-9999.0);
    let mut u16s = spec.clone();
    u16s.nodata = Some(65535.0);
    let mut u8s = spec.clone();
    u8s.nodata = None;
    let paths = |band: &str| {
        (
            dir.join(deafrica_name("a", 2019, band)),
            dir.join(deafrica_name("b", 2019, band)),
        )
    };
    let (a, b) = paths("temp");
    write_tif_with::<i16>(&a, &i16s, |x, y| {
        if x == 1 && y == 1 {
            -9999
        } else {
            x as i16 - 3 * y as i16
        }
    });
    write_tif_with::<i16>(&b, &i16s.shifted(7, 3), |x, y| -(x as i16) - 10 * y as i16);
    let (a, b) = paths("qa");
    write_tif_with::<u16>(
        &a,
        &u16s,
        |x, y| if x == 2 { 65535 } else { (x + y) as u16 },
    );
    write_tif_with::<u16>(&b, &u16s.shifted(7, 3), |x, y| (100 + x + y) as u16);
    let (a, b) = paths("mask");
    write_tif_with::<u8>(&a, &u8s, |x, y| (x * y) as u8);
    write_tif_with::<u8>(&b, &u8s.shifted(7, 3), |x, y| (50 + x + y) as u8);
    let out = t.path().join("cube");
    run_ok(&ingest_paths_args(
        &out,
        &[&dir],
        &["--chunks", "time=1,y=3,x=4"],
    ));

    let c = chunkcube::Cube::open(s(&out)).unwrap();
    assert_eq!(c.meta().band("temp").unwrap().nodata, Some(-9999.0));
    assert_eq!(c.meta().band("qa").unwrap().nodata, Some(65535.0));
    assert_eq!(read_json(&out.join("temp/zarr.json"))["fill_value"], -9999);
    assert_eq!(read_json(&out.join("qa/zarr.json"))["fill_value"], 65535);
    assert_eq!(
        read_json(&out.join("qa/zarr.json"))["attributes"]["_FillValue"],
        65535
    );

    let (a, b) = paths("temp");
    let got = load_band::<i16>(&out, "temp");
    let want = reference_mosaic::<i16>(&[a, b]);
    assert_eq!(got[[0, 0, 13]], -9999, "uncovered = nodata -9999");
    assert_eq!(got[[0, 1, 1]], -9999, "hole = nodata -9999");
    assert_matches_reference("int16", got.slice(sl![0, .., ..]), &want);
    let (a, b) = paths("qa");
    let got = load_band::<u16>(&out, "qa");
    assert_eq!(got[[0, 7, 0]], 65535, "uncovered = nodata 65535");
    assert_matches_reference(
        "uint16 nodata 65535",
        got.slice(sl![0, .., ..]),
        &reference_mosaic::<u16>(&[a, b]),
    );
    let (a, b) = paths("mask");
    let got = load_band::<u8>(&out, "mask");
    let want = reference_mosaic::<u8>(&[a, b]);
    // Without nodata every source pixel is valid, 0 included.
    assert_eq!(got[[0, 0, 0]], 0);
    assert_eq!(got[[0, 2, 3]], 6);
    assert_eq!(got[[0, 3, 7]], 50);
    for ((r, col), p) in want.pixels.indexed_iter() {
        if want.covered[[r, col]] {
            assert_eq!(Some(got[[0, r, col]]), *p, "uint8 (y={r}, x={col})");
        }
    }
}

/// A small uncompressed tile whose file size does not depend on its values.
fn write_plain(path: &Path, base: u16) {
    let spec = TifSpec {
        width: 16,
        height: 12,
        compress: false,
        ..TifSpec::default()
    };
    write_tif_with::<u16>(path, &spec, |x, y| base + (x + 16 * y) as u16);
}

#[test]
fn modified_tile_is_not_taken_as_up_to_date() {
    // Re-running after a source tile changed (same size: uncompressed) must not keep the stale
    // cube: either it is refused as different input, or it is re-ingested with the new pixels.
    let t = tmp();
    let dir = t.path().join("tiles");
    let tile = dir.join(deafrica_name("a", 2019, "red"));
    write_plain(&tile, 1);
    let out = t.path().join("cube");
    let args = ingest_paths_args(&out, &[&dir], &["--chunks", "time=1,y=4,x=4"]);
    run_ok(&args);
    let size = std::fs::metadata(&tile).unwrap().len();
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_plain(&tile, 1000);
    assert_eq!(
        std::fs::metadata(&tile).unwrap().len(),
        size,
        "precondition: same file size"
    );
    let (st, so, se) = run(&args);
    if st.success() {
        let got = load_band::<u16>(&out, "red");
        assert_eq!(
            got[[0, 0, 0]],
            1000,
            "the re-run succeeded but kept stale pixels\n{}",
            describe(&args, &st, &so, &se)
        );
    }
}

#[test]
fn modified_tile_is_not_mixed_into_a_resumed_ingest() {
    let t = tmp();
    let dir = t.path().join("tiles");
    let tile = dir.join(deafrica_name("a", 2019, "red"));
    write_plain(&tile, 1);
    let out = t.path().join("cube");
    let args = ingest_paths_args(
        &out,
        &[&dir],
        &["--chunks", "time=1,y=4,x=4", "--threads", "1"],
    );
    let mut stopped = args.clone();
    stopped.extend(["--stop-after-chunks".into(), "3".into()]);
    run_err(&stopped, &[]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_plain(&tile, 1000);
    let (st, so, se) = run(&args);
    if st.success() {
        let got = load_band::<u16>(&out, "red");
        let stale = got.iter().filter(|v| **v < 1000).count();
        assert_eq!(
            stale,
            0,
            "the resumed cube mixes {stale} stale pixels from before the tile changed\n{}",
            describe(&args, &st, &so, &se)
        );
    }
}

/// Resume does not depend on how the manifest (or a tile) path is spelled: a run stopped with
/// `./sub/manifest.csv` resumes from an absolute path and from `sub/../sub/manifest.csv`, and
/// ends byte-identical to a fresh ingest spelled another way still.
#[test]
fn resume_with_the_manifest_path_spelled_three_ways() {
    let t = tmp();
    let sub = t.path().join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    // The fixture tiles behind a symlink, named by the copied manifest with an absolute path
    // for one row and relatively, with a detour, for the others.
    std::os::unix::fs::symlink(fixtures_dir().join("tiles"), t.path().join("tiles")).unwrap();
    let text = std::fs::read_to_string(fixtures_manifest()).unwrap();
    let mut rows = text.lines();
    let mut out = format!("{}\n", rows.next().unwrap());
    for (i, r) in rows.enumerate() {
        let (p, rest) = r.split_once(',').unwrap();
        assert!(p.starts_with("tiles/"), "{p}");
        let p = if i == 0 {
            t.path().join(p).display().to_string()
        } else {
            format!("../sub/../{p}")
        };
        out.push_str(&format!("{p},{rest}\n"));
    }
    std::fs::write(sub.join("manifest.csv"), out).unwrap();
    let cube = t.path().join("cube");
    let fresh = t.path().join("fresh");
    let run_in = |dir: &Path, manifest: &str, out: &Path, extra: &[&str]| {
        let mut c = std::process::Command::new(bin());
        c.current_dir(dir).args([
            "ingest",
            "--manifest",
            manifest,
            "--out",
            s(out),
            "--chunks",
            "time=1,y=64,x=64",
            "-q",
        ]);
        c.args(extra);
        c.output().unwrap()
    };
    let o = run_in(
        t.path(),
        "./sub/manifest.csv",
        &cube,
        &["--stop-after-chunks", "20"],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let abs = sub.join("manifest.csv");
    let o = run_in(
        Path::new("/"),
        s(&abs),
        &cube,
        &["--stop-after-chunks", "40"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && !err.contains("different tiles"),
        "resumed from an absolute path: {err}"
    );
    let o = run_in(&sub, "../sub/manifest.csv", &cube, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("resumed"), "{err}");
    let o = run_in(t.path(), s(&fixtures_manifest()), &fresh, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_tree(&fresh, &cube);
}
