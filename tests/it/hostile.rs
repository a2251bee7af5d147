//! Hostile input (issue 16): whatever a user or a crafted file throws at the command line is a
//! one-line error naming the culprit, with exit 1 — never a panic, an abort or a silent
//! misreading.

use crate::common::output::run_one_error;
use crate::common::{fixture_cube_64, s};

fn calc_err(exprs: &[&str]) -> String {
    let cube = fixture_cube_64("hostile-");
    let mut args = vec!["calc", s(cube)];
    for e in exprs {
        args.extend(["--expr", e]);
    }
    args.extend(["--isel", "time=0:1,y=0:4,x=0:4", "--print"]);
    run_one_error(&args)
}

#[test]
fn deep_and_long_expressions_are_errors_not_stack_overflows() {
    let sum = format!("v={}", vec!["nir"; 2000].join("+"));
    let parens = format!("v={}nir{}", "(".repeat(5000), ")".repeat(5000));
    let minus = format!("v={}nir", "-".repeat(5000));
    for e in [&sum, &parens, &minus] {
        let msg = calc_err(&[e]);
        assert!(
            msg.contains("deep") || msg.contains("nests") || msg.contains("bytes long"),
            "{msg}"
        );
        assert!(
            msg.len() < 400,
            "the message quotes a bounded part: {} bytes",
            msg.len()
        );
    }
    // Chained results, each within bounds, that nest past the graph's depth ...
    let deep: Vec<String> = std::iter::once(format!("r0={}", vec!["nir"; 200].join("+")))
        .chain((1..8).map(|i| format!("r{i}=r{}+{}", i - 1, vec!["red"; 199].join("+"))))
        .collect();
    let msg = calc_err(&deep.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(msg.contains("operations deep"), "{msg}");
    // ... or that use each other so often that the graph explodes when walked as a tree.
    let wide: Vec<String> = std::iter::once("r0=nir+red".to_string())
        .chain((1..8).map(|i| format!("r{i}={}", vec![format!("r{}", i - 1); 100].join("+"))))
        .collect();
    let msg = calc_err(&wide.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(msg.contains("expands to"), "{msg}");
}

#[test]
fn a_repeated_result_name_is_refused() {
    let msg = calc_err(&["a=nir", "a=red"]);
    assert!(msg.contains("'a' is already defined by 'a=nir'"), "{msg}");
}

#[test]
fn non_ascii_in_an_expression_is_named_whole() {
    let msg = calc_err(&["v=nir×red"]);
    assert!(msg.contains("'×' (U+00D7)"), "{msg}");
}

mod manifests {
    use crate::common::output::{run_one_error, run_output_ok};
    use crate::common::{load_band, s, write_tif_with, TifSpec};
    use std::path::Path;

    fn tile(dir: &Path, name: &str, spec: &TifSpec) {
        write_tif_with::<u16>(&dir.join(name), spec, |x, y| (1 + x + 10 * y) as u16);
    }

    fn ingest(manifest: &Path, out: &Path) -> Vec<String> {
        vec![
            "ingest".into(),
            "--manifest".into(),
            s(manifest).into(),
            "--out".into(),
            s(out).into(),
            "-q".into(),
        ]
    }

    /// A manifest as spreadsheets write it: a byte-order mark, CRLF line ends, quoted fields
    /// (one holding a comma) — read as CSV, not split at every comma.
    #[test]
    fn bom_crlf_and_quoted_fields() {
        let t = tempfile::tempdir().unwrap();
        tile(t.path(), "a,1.tif", &TifSpec::default());
        tile(t.path(), "b.tif", &TifSpec::default().shifted(8, 0));
        let m = t.path().join("m.csv");
        std::fs::write(
            &m,
            "\u{feff}path,band,time\r\n\"a,1.tif\",red,2019\r\n\"b.tif\",\"red\",\"2019\"\r\n",
        )
        .unwrap();
        let out = t.path().join("cube");
        run_output_ok(&ingest(&m, &out));
        let red = load_band::<u16>(&out, "red");
        assert_eq!(red.shape(), &[1, 6, 16]);
        assert_eq!(red[[0, 0, 0]], 1);
        assert_eq!(red[[0, 5, 15]], 1 + 7 + 50);
    }

    #[test]
    fn a_header_with_a_bom_but_wrong_columns_is_named_plainly() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m.csv");
        std::fs::write(&m, "\u{feff}file,band,time\na.tif,red,2019\n").unwrap();
        let msg = run_one_error(&ingest(&m, &t.path().join("cube")));
        assert!(msg.contains("header 'file,band,time'"), "{msg}");
        assert!(!msg.contains('\u{feff}'), "{msg}");
    }

    #[test]
    fn a_folder_in_the_manifest_is_called_a_folder() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("tiles")).unwrap();
        let m = t.path().join("m.csv");
        std::fs::write(&m, "path,band,time\ntiles,red,2019\n").unwrap();
        let msg = run_one_error(&ingest(&m, &t.path().join("cube")));
        assert!(msg.contains("is a folder, not a GeoTIFF"), "{msg}");
        assert!(msg.contains("m.csv row 2"), "{msg}");
    }

    #[test]
    fn a_multi_band_tile_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let spec = TifSpec {
            bands: 2,
            ..TifSpec::default()
        };
        tile(t.path(), "two.tif", &spec);
        let m = t.path().join("m.csv");
        std::fs::write(&m, "path,band,time\ntwo.tif,red,2019\n").unwrap();
        let out = t.path().join("cube");
        let msg = run_one_error(&ingest(&m, &out));
        assert!(
            msg.contains("two.tif") && msg.contains("has 2 raster bands"),
            "{msg}"
        );
        assert!(!out.join("zarr.json").exists());
    }

    #[test]
    fn an_unclosed_quote_names_its_row() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m.csv");
        std::fs::write(&m, "path,band,time\n\"a.tif,red,2019\n").unwrap();
        let msg = run_one_error(&ingest(&m, &t.path().join("cube")));
        assert!(
            msg.contains("row 2") && msg.contains("never closed"),
            "{msg}"
        );
    }
}

mod output_over_input {
    use crate::common::output::{copy_dir, run_one_error};
    use crate::common::{fixture_cube_64, s, tree_bytes};

    /// `--out` that is the input, inside it, or contains it is refused before anything is
    /// written: the input cube is left byte for byte as it was.
    #[test]
    fn calc_and_load_refuse_their_own_input() {
        let t = tempfile::tempdir().unwrap();
        let cube = t.path().join("cube");
        copy_dir(fixture_cube_64("hostile-"), &cube);
        let before = tree_bytes(&cube);
        let same_spelled_otherwise = format!("{}/../cube", s(&cube));
        let inside = cube.join("sub");
        let cases: Vec<Vec<String>> = [s(&cube), &same_spelled_otherwise, s(&inside), s(t.path())]
            .iter()
            .flat_map(|out| {
                [
                    vec![
                        "calc",
                        s(&cube),
                        "--expr",
                        "v=nir-red",
                        "--out",
                        out,
                        "--overwrite",
                    ],
                    vec![
                        "load",
                        s(&cube),
                        "--measurements",
                        "red",
                        "--out",
                        out,
                        "--overwrite",
                    ],
                ]
            })
            .map(|v| v.into_iter().map(String::from).collect())
            .collect();
        for args in cases {
            let msg = run_one_error(&args);
            assert!(msg.contains("inside the input cube"), "{args:?}: {msg}");
            assert_eq!(tree_bytes(&cube), before, "{args:?} changed the input");
        }
    }

    /// The library refuses too, whatever the caller checked.
    #[test]
    fn to_zarr_refuses_its_own_input() {
        let t = tempfile::tempdir().unwrap();
        let cube = t.path().join("cube");
        copy_dir(fixture_cube_64("hostile-"), &cube);
        let before = tree_bytes(&cube);
        let c = chunkcube::Cube::open(s(&cube)).unwrap();
        let q = chunkcube::Query::new()
            .measurements(&["red"])
            .chunks(chunkcube::ChunkSpec::parse("time=1,y=64,x=64").unwrap());
        let ds = c.load(&q).unwrap();
        let err = ds
            .to_zarr(&format!("{}/red-copy", s(&cube)), true)
            .unwrap_err();
        assert!(err.to_string().contains("band 'red' is read from"), "{err}");
        assert_eq!(tree_bytes(&cube), before);
    }
}

mod flags {
    use crate::common::output::run_one_error;
    use crate::common::{fixture_cube_64, s};

    #[test]
    fn odd_flag_values_are_one_line_errors() {
        let cube = s(fixture_cube_64("hostile-"));
        for (args, says) in [
            (
                vec![
                    "calc",
                    cube,
                    "--expr",
                    "v=nir",
                    "--threads",
                    "100000",
                    "--print",
                ],
                "at most 1024",
            ),
            (
                vec!["load", cube, "--isel", "time=0:1,time=0:1", "--print"],
                "'time' is given more than once",
            ),
            (vec!["info", "s3://bucket/a*b"], "the prefix contains '*'"),
            (
                vec!["info", "s3://bucket/caf\u{e9}"],
                "the prefix contains 'é'",
            ),
            // A newline in a URL is escaped: the error stays one line.
            (vec!["info", "s3://bucket/a\nb"], "'\\n'"),
        ] {
            let msg = run_one_error(&args);
            assert!(msg.contains(says), "{args:?}: {msg}");
        }
    }
}

mod absurd_plans {
    use crate::common::output::run_one_error;
    use crate::common::{s, write_tif_with, TifSpec};
    use gdal::raster::RasterCreationOptions;
    use gdal::spatial_ref::SpatialRef;
    use gdal::DriverManager;
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn ingest_err(m: &Path, out: &Path) -> String {
        let t0 = Instant::now();
        let msg = run_one_error(&["ingest", "--manifest", s(m), "--out", s(out), "-q"]);
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "refused up front, not after the work"
        );
        assert!(!out.join("zarr.json").exists());
        msg
    }

    /// A tile 10,000 km from the others makes a mosaic its tiles hardly cover.
    #[test]
    fn a_tile_far_from_the_others_is_refused_up_front() {
        let t = tempfile::tempdir().unwrap();
        let spec = TifSpec::default();
        write_tif_with::<u16>(&t.path().join("a.tif"), &spec, |x, _| 1 + x as u16);
        let far = TifSpec {
            origin: (spec.origin.0 + 10_000_000.0, spec.origin.1 - 4_000_000.0),
            ..spec.clone()
        };
        write_tif_with::<u16>(&t.path().join("b.tif"), &far, |x, _| 1 + x as u16);
        let m = t.path().join("m.csv");
        std::fs::write(&m, "path,band,time\na.tif,red,2019\nb.tif,red,2019\n").unwrap();
        let msg = ingest_err(&m, &t.path().join("cube"));
        assert!(
            msg.contains("cover only 96 px") && msg.contains("--allow-huge"),
            "{msg}"
        );
        assert!(msg.contains("1000008 x 400006 px"), "the numbers: {msg}");
    }

    /// A sparse file that claims a huge raster (a few KiB holding 4 Gpx).
    #[test]
    fn a_sparse_huge_tile_is_refused_up_front() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("sparse.tif");
        let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
        let opts = RasterCreationOptions::from_iter([
            "SPARSE_OK=TRUE",
            "TILED=YES",
            "BLOCKXSIZE=1024",
            "BLOCKYSIZE=1024",
            "COMPRESS=DEFLATE",
            "BIGTIFF=YES",
        ]);
        let mut ds = driver
            .create_with_band_type_with_options::<u16, _>(&path, 65536, 65536, 1, &opts)
            .unwrap();
        ds.set_spatial_ref(&SpatialRef::from_epsg(6933).unwrap())
            .unwrap();
        ds.set_geo_transform(&[2_316_000.0, 10.0, 0.0, -2_500_000.0, 0.0, -10.0])
            .unwrap();
        ds.rasterband(1)
            .unwrap()
            .set_no_data_value(Some(0.0))
            .unwrap();
        ds.close().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
        let m = t.path().join("m.csv");
        std::fs::write(&m, "path,band,time\nsparse.tif,red,2019\n").unwrap();
        let msg = ingest_err(&m, &t.path().join("cube"));
        assert!(
            msg.contains("GB decoded") && msg.contains("--allow-huge"),
            "{msg}"
        );
    }
}

/// The fuzz targets' inputs (fuzz/) as bounded properties on stable: crafted manifests and
/// crafted metadata are errors or values, never panics, loops or huge allocations.
mod crafted_files {
    use proptest::prelude::*;

    fn json_like() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"zarr_format\"",
            "3",
            "2",
            "\"node_type\"",
            "\"group\"",
            "\"array\"",
            "\"shape\"",
            "[1,2,3]",
            "[18446744073709551615,9,9]",
            "[0,0,0]",
            "\"chunk_grid\"",
            "{\"name\":\"regular\",\"configuration\":{\"chunk_shape\":[1,1,1]}}",
            "\"data_type\"",
            "\"uint16\"",
            "\"float32\"",
            "\"fill_value\"",
            "0",
            "\"NaN\"",
            "\"codecs\"",
            "[{\"name\":\"bytes\"}]",
            "\"dimension_names\"",
            "[\"time\",\"y\",\"x\"]",
            "\"attributes\"",
            "{}",
            "\"chunk_key_encoding\"",
            "{\"name\":\"default\"}",
            "null",
            "-1",
            "1e308",
            "\"\"",
        ]);
        prop::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn manifest_never_panics(text in "(\\PC|\n|\r|\"|,){0,300}") {
            let dir = tempfile::tempdir().unwrap();
            let m = dir.path().join("manifest.csv");
            std::fs::write(&m, text).unwrap();
            let _ = chunkcube::ingest::read_manifest(&m);
        }

        /// Well-formed metadata with hostile numbers: shapes up to u64::MAX, chunk shapes of 0
        /// or larger than the array, odd dtypes and fill values, coordinates of any length.
        #[test]
        fn structured_metadata_never_panics(
            shape in prop::collection::vec(prop_oneof![Just(0u64), 1u64..10, Just(u64::MAX), Just(1u64 << 40)], 3),
            chunk in prop::collection::vec(prop_oneof![Just(0u64), 1u64..10, Just(u64::MAX)], 3),
            dtype in prop::sample::select(vec!["uint16", "float32", "int64", "bool", "complex64", "string"]),
            fill in prop::sample::select(vec!["0", "\"NaN\"", "65535", "-1", "null", "1e400"]),
            ncoord in prop_oneof![Just(0usize), 1usize..5, Just(3)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            std::fs::write(d.join("zarr.json"), r#"{"zarr_format":3,"node_type":"group","attributes":{}}"#).unwrap();
            let arr = |shape: &[u64], chunk: &[u64], dtype: &str, fill: &str, dims: &str| format!(
                r#"{{"zarr_format":3,"node_type":"array","shape":{shape:?},"data_type":"{dtype}","chunk_grid":{{"name":"regular","configuration":{{"chunk_shape":{chunk:?}}}}},"chunk_key_encoding":{{"name":"default","configuration":{{"separator":"/"}}}},"fill_value":{fill},"codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}}],"dimension_names":{dims},"attributes":{{"_FillValue":{fill}}}}}"#);
            for (name, doc) in [
                ("red", arr(&shape, &chunk, dtype, fill, r#"["time","y","x"]"#)),
                ("x", arr(&[ncoord as u64], &[ncoord.max(1) as u64], "float64", "0", r#"["x"]"#)),
                ("y", arr(&[ncoord as u64], &[ncoord.max(1) as u64], "float64", "0", r#"["y"]"#)),
                ("time", arr(&[ncoord as u64], &[ncoord.max(1) as u64], "int64", "0", r#"["time"]"#)),
            ] {
                std::fs::create_dir_all(d.join(name)).unwrap();
                std::fs::write(d.join(name).join("zarr.json"), doc).unwrap();
            }
            if let Ok(cube) = chunkcube::Cube::open(d.to_str().unwrap()) {
                let _ = cube.load(&chunkcube::Query::new().chunks(chunkcube::ChunkSpec::Auto));
            }
        }

        #[test]
        fn metadata_never_panics(group in json_like(), band in json_like()) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("zarr.json"), group).unwrap();
            std::fs::create_dir_all(dir.path().join("red")).unwrap();
            std::fs::write(dir.path().join("red/zarr.json"), band).unwrap();
            let _ = chunkcube::Cube::open(dir.path().to_str().unwrap());
        }
    }
}
