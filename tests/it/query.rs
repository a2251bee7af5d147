//! Issue 3 — the lazy cube: open, query by index / box / lon-lat / time, chunk-pruned reads,
//! chunk summary, eager vs lazy, `load()` vs `compute()`, bad input, and `chunkcube load`.
//!
//! Every expected value is computed here, independently of chunkcube: pixels from GDAL reads
//! of the fixture tiles placed on the union grid with plain loops; chunk counts from the
//! stored chunk grid by plain arithmetic; lon/lat boxes reprojected by `gdaltransform`.
//!
//! The fixtures cube (stored chunks `time=1,y=64,x=64`) is ingested once per test binary.

use crate::common;
use crate::common::output::{copy_dir, run_one_error as run_err, run_output_ok as run_ok, show};
use chunkcube::{ChunkSpec, Cube, ExecConfig, Query, Values};
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Fixtures: the cube, the CLI, and an independent GDAL reference mosaic
// ---------------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_chunkcube");
/// Stored chunk shape of the test cube `[time, y, x]`.
const STORED: [u64; 3] = [1, 64, 64];
const BANDS: [&str; 5] = ["blue", "green", "nir", "red", "smad"];
/// 2019-01-01 and 2020-01-01 in days since 1970-01-01.
const DAY_2019: chunkcube::geo::Time = chunkcube::geo::Time::from_days(17897);
const DAY_2020: chunkcube::geo::Time = chunkcube::geo::Time::from_days(18262);

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixtures cube, ingested once per test process under the target's tmp dir.
fn cube_path() -> &'static Path {
    common::fixture_cube_64("query-test-cube-")
}

fn cube_str() -> String {
    cube_path().to_str().unwrap().to_string()
}

fn cfg(threads: usize) -> ExecConfig {
    ExecConfig {
        threads,
        memory_limit: 256 << 20,
        quiet: true,
        ..ExecConfig::default()
    }
}

/// A fresh open of the fixtures cube: new session (empty chunk cache) and zeroed counters.
fn fresh() -> Cube {
    let c = Cube::open_with(&cube_str(), cfg(2)).expect("open the fixtures cube");
    c.store().counters().reset();
    c
}

/// The fixture tiles mosaicked with plain loops over GDAL reads: `[t][y][x]` per band, as f64
/// (exact for uint16 and float32), nodata where no tile covers a pixel.
struct Mosaic {
    x0: f64,
    y0: f64,
    dx: f64,
    dy: f64,
    width: usize,
    height: usize,
    years: Vec<i32>,
    bands: HashMap<String, Vec<f64>>,
}

impl Mosaic {
    fn at(&self, band: &str, t: usize, y: usize, x: usize) -> f64 {
        self.bands[band][(t * self.height + y) * self.width + x]
    }
}

fn mosaic() -> &'static Mosaic {
    static M: OnceLock<Mosaic> = OnceLock::new();
    M.get_or_init(read_mosaic)
}

fn read_mosaic() -> Mosaic {
    let dir = crate_dir().join("fixtures");
    let text = std::fs::read_to_string(dir.join("manifest.csv")).unwrap();
    struct Tile {
        band: String,
        year: i32,
        gt: [f64; 6],
        w: usize,
        h: usize,
        nodata: f64,
        data: Vec<f64>,
    }
    let mut tiles = Vec::new();
    let mut paths = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(',').collect();
        let (path, band, time) = (cols[0], cols[1], cols[2]);
        let year: i32 = time[..4].parse().unwrap();
        paths.push(dir.join(path));
        let ds = gdal::Dataset::open(dir.join(path)).unwrap();
        let gt = ds.geo_transform().unwrap();
        let (w, h) = ds.raster_size();
        let rb = ds.rasterband(1).unwrap();
        let nodata = rb.no_data_value().unwrap_or(f64::NAN);
        let data = rb
            .read_as::<f64>((0, 0), (w, h), (w, h), None)
            .unwrap()
            .data()
            .to_vec();
        assert_eq!(gt[2], 0.0);
        assert_eq!(gt[4], 0.0);
        tiles.push(Tile {
            band: band.to_string(),
            year,
            gt,
            w,
            h,
            nodata,
            data,
        });
    }
    let (gt, width, height) = common::union_grid(&paths);
    let (x0, dx, y0, dy) = (gt[0], gt[1], gt[3], gt[5]);
    let mut years: Vec<i32> = tiles.iter().map(|t| t.year).collect();
    years.sort();
    years.dedup();
    let mut bands: HashMap<String, Vec<f64>> = HashMap::new();
    for t in &tiles {
        let nt = years.len();
        let v = bands
            .entry(t.band.clone())
            .or_insert_with(|| vec![t.nodata; nt * height * width]);
        let ti = years.iter().position(|y| *y == t.year).unwrap();
        let c0 = ((t.gt[0] - x0) / dx).round() as usize;
        let r0 = ((t.gt[3] - y0) / dy).round() as usize;
        for r in 0..t.h {
            for c in 0..t.w {
                v[(ti * height + r0 + r) * width + c0 + c] = t.data[r * t.w + c];
            }
        }
    }
    Mosaic {
        x0,
        y0,
        dx,
        dy,
        width,
        height,
        years,
        bands,
    }
}

fn urange(r: &Range<u64>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// Assert `v` (shape `[t, y, x]`) equals the reference window `w` of `band`, in the band's dtype.
fn assert_window(v: &Values, band: &str, w: &[Range<u64>; 3], ctx: &str) {
    let m = mosaic();
    let shape: Vec<usize> = w.iter().map(|r| (r.end - r.start) as usize).collect();
    assert_eq!(v.shape(), shape, "{ctx}: shape");
    let mut bad = 0usize;
    let mut first = String::new();
    for (ti, t) in urange(&w[0]).enumerate() {
        for (yi, y) in urange(&w[1]).enumerate() {
            for (xi, x) in urange(&w[2]).enumerate() {
                let want = m.at(band, t, y, x);
                let ok = match v {
                    Values::U16(a) => a[[ti, yi, xi]] as f64 == want,
                    Values::F32(a) => {
                        let g = a[[ti, yi, xi]];
                        (g.is_nan() && want.is_nan()) || g as f64 == want
                    }
                    other => panic!("{ctx}: unexpected dtype {:?}", other.dtype()),
                };
                if !ok {
                    bad += 1;
                    if first.is_empty() {
                        first = format!("first at cube index [{t}, {y}, {x}]: want {want}");
                    }
                }
            }
        }
    }
    assert_eq!(
        bad, 0,
        "{ctx}: {bad} pixels differ from the GDAL reference; {first}"
    );
}

fn expected_keys(band: &str, w: &[Range<u64>; 3]) -> BTreeSet<String> {
    common::expected_keys(band, w, STORED)
}

fn expected_count(w: &[Range<u64>; 3]) -> u64 {
    common::expected_count(w, STORED)
}

/// Assert the store saw exactly the chunk fetches `want`, each key once.
fn assert_fetched(cube: &Cube, want: &BTreeSet<String>, ctx: &str) {
    let c = cube.store().counters();
    let per_key = c.per_key();
    let got: BTreeSet<String> = per_key.keys().cloned().collect();
    assert_eq!(&got, want, "{ctx}: fetched keys");
    let twice: Vec<_> = per_key.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "{ctx}: keys fetched more than once: {twice:?}"
    );
    assert_eq!(
        c.snapshot().chunk_gets,
        want.len() as u64,
        "{ctx}: chunk_gets"
    );
}

fn err_string<T>(r: Result<T, chunkcube::cube::CubeError>, ctx: &str) -> String {
    match r {
        Ok(_) => panic!("{ctx}: expected an error, got Ok"),
        Err(e) => e.to_string(),
    }
}

/// A table of windows `[time, y, x]` over the 2 x 200 x 240 cube with 64 x 64 stored chunks.
fn window_table() -> Vec<(&'static str, [Range<u64>; 3])> {
    vec![
        ("inside one chunk", [0..1, 10..20, 10..20]),
        ("exactly one stored chunk", [1..2, 64..128, 128..192]),
        ("across one y edge", [0..1, 63..65, 5..9]),
        ("across chunk edges", [0..2, 60..70, 60..130]),
        (
            "touching the bottom-right mosaic edge",
            [0..1, 190..200, 200..240],
        ),
        ("touching the top-left mosaic edge", [1..2, 0..3, 0..70]),
        ("uncovered (nodata) corner", [0..2, 150..200, 215..240]),
        ("single pixel", [1..2, 199..200, 239..240]),
        ("single pixel at the origin", [0..1, 0..1, 0..1]),
        ("whole cube", [0..2, 0..200, 0..240]),
    ]
}

const QUERY_CHUNKS: [&str; 5] = [
    "time=1,y=64,x=64",
    "time=1,y=50,x=50",
    "time=1,y=128,x=128",
    "y=-1,x=-1",
    "time=2,y=7,x=13",
];

// ---------------------------------------------------------------------------------------------
// Values: lazy == eager == GDAL
// ---------------------------------------------------------------------------------------------

#[test]
fn reference_mosaic_is_what_the_fixtures_say() {
    let m = mosaic();
    assert_eq!((m.width, m.height), (240, 200));
    assert_eq!(m.years, vec![2019, 2020]);
    assert_eq!(
        (m.x0, m.y0, m.dx, m.dy),
        (2316000.0, -2500000.0, 10.0, -10.0)
    );
    // The corner without a tile is nodata in every band.
    assert_eq!(m.at("red", 0, 199, 239), 0.0);
    assert!(m.at("smad", 1, 150, 230).is_nan());
    let meta = fresh().meta().clone();
    assert_eq!(meta.times, vec![DAY_2019, DAY_2020]);
    assert_eq!(meta.geobox.transform, [m.x0, m.dx, 0.0, m.y0, 0.0, m.dy]);
    assert_eq!((meta.geobox.width, meta.geobox.height), (240, 200));
    assert_eq!(meta.geobox.epsg, Some(6933));
    assert_eq!(
        meta.band_names(),
        BANDS.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn eager_whole_cube_equals_gdal_for_every_band() {
    let cube = fresh();
    let ds = cube.load(&Query::new()).unwrap();
    let full = [0..2, 0..200, 0..240];
    for b in BANDS {
        let da = ds.get(b).unwrap_or_else(|| panic!("band {b} missing"));
        assert!(!da.is_lazy(), "an eager load holds values");
        let v = da.values().unwrap();
        assert_eq!(
            v.dtype(),
            if b == "smad" {
                chunkcube::DType::F32
            } else {
                chunkcube::DType::U16
            }
        );
        assert_window(v, b, &full, &format!("eager {b}"));
    }
    // Each stored chunk of every band read exactly once.
    let want: BTreeSet<String> = BANDS.iter().flat_map(|b| expected_keys(b, &full)).collect();
    assert_fetched(&cube, &want, "eager whole cube");
    assert_eq!(cube.session().stats().chunks_read, 5 * 32);
}

#[test]
fn lazy_windows_equal_eager_and_gdal_and_read_only_the_chunks_they_touch() {
    for (name, w) in window_table() {
        // Eager, selected in the query.
        let cube = fresh();
        let q = Query::new()
            .measurements(&["red", "smad"])
            .isel("time", w[0].clone())
            .isel("y", w[1].clone())
            .isel("x", w[2].clone());
        let eager = cube
            .load(&q)
            .unwrap_or_else(|e| panic!("{name}: eager load: {e}"));
        let want: BTreeSet<String> = ["red", "smad"]
            .iter()
            .flat_map(|b| expected_keys(b, &w))
            .collect();
        assert_eq!(
            want.len() as u64,
            2 * expected_count(&w),
            "{name}: the two ways of counting agree"
        );
        assert_fetched(&cube, &want, &format!("{name}: eager"));
        for b in ["red", "smad"] {
            assert_window(
                eager.get(b).unwrap().values().unwrap(),
                b,
                &w,
                &format!("{name}: eager {b}"),
            );
        }

        for spec in QUERY_CHUNKS {
            let ctx = format!("{name} with query chunks {spec}");
            // Lazy, selected in the query.
            let cube = fresh();
            let ds = cube
                .load(&q.clone().chunks(ChunkSpec::parse(spec).unwrap()))
                .unwrap();
            assert_eq!(
                cube.store().counters().snapshot().chunk_gets,
                0,
                "{ctx}: a lazy load reads nothing"
            );
            for b in ["red", "smad"] {
                let da = ds.get(b).unwrap();
                assert!(da.is_lazy());
                let v = da
                    .compute()
                    .unwrap_or_else(|e| panic!("{ctx}: compute {b}: {e}"));
                assert_window(&v, b, &w, &format!("{ctx}: lazy {b}"));
                assert!(
                    v.equals(eager.get(b).unwrap().values().unwrap()),
                    "{ctx}: lazy {b} != eager"
                );
            }
            assert_fetched(&cube, &want, &format!("{ctx}: lazy query"));
            assert_eq!(
                cube.session().stats().chunks_read,
                want.len() as u64,
                "{ctx}: stats chunks_read"
            );

            // Lazy whole cube, then sliced lazily with DataArray::isel (the notebook's way).
            let cube = fresh();
            let ds = cube
                .load(
                    &Query::new()
                        .measurements(&["red"])
                        .chunks(ChunkSpec::parse(spec).unwrap()),
                )
                .unwrap();
            let sub = ds
                .get("red")
                .unwrap()
                .isel(&[
                    ("time", w[0].clone()),
                    ("y", w[1].clone()),
                    ("x", w[2].clone()),
                ])
                .unwrap();
            assert!(sub.is_lazy());
            assert_eq!(
                sub.shape(),
                w.iter().map(|r| r.end - r.start).collect::<Vec<_>>()
            );
            let v = sub.compute().unwrap();
            assert_window(&v, "red", &w, &format!("{ctx}: DataArray::isel"));
            assert_fetched(
                &cube,
                &expected_keys("red", &w),
                &format!("{ctx}: DataArray::isel"),
            );
        }
    }
}

#[test]
fn a_second_isel_of_an_isel_reads_only_its_own_chunks() {
    let cube = fresh();
    let ds = cube
        .load(
            &Query::new()
                .measurements(&["nir"])
                .isel("y", 40..200)
                .isel("x", 30..240)
                .chunks(ChunkSpec::parse("time=1,y=50,x=50").unwrap()),
        )
        .unwrap();
    let a = ds.get("nir").unwrap().isel(&[("y", 20..100)]).unwrap(); // cube rows 60..140
    let b = a.isel(&[("x", 100..150), ("time", 1..2)]).unwrap(); // cube cols 130..180
    let w = [1..2, 60..140, 130..180];
    assert_window(&b.compute().unwrap(), "nir", &w, "isel of isel");
    assert_fetched(&cube, &expected_keys("nir", &w), "isel of isel");
    // The geobox follows the selection.
    let m = mosaic();
    assert_eq!(b.geobox().transform[0], m.x0 + 130.0 * m.dx);
    assert_eq!(b.geobox().transform[3], m.y0 + 60.0 * m.dy);
    assert_eq!((b.geobox().width, b.geobox().height), (50, 80));
    assert_eq!(b.times(), &[DAY_2020]);
}

#[test]
fn query_chunks_give_the_chunk_table() {
    let cube = fresh();
    let ds = cube
        .load(
            &Query::new()
                .measurements(&["red", "smad"])
                .chunks(ChunkSpec::parse("time=1,y=50,x=50").unwrap()),
        )
        .unwrap();
    let s = ds.get("red").unwrap().summary();
    assert_eq!(s.shape, vec![2, 200, 240]);
    assert_eq!(s.chunk_shape, vec![1, 50, 50]);
    assert_eq!(s.bytes, 2 * 200 * 240 * 2);
    assert_eq!(s.chunk_bytes, 50 * 50 * 2);
    assert_eq!(s.chunks, 2 * 4 * 5);
    assert_eq!(s.dtype, "uint16");
    assert!(s.tasks >= s.chunks);
    let text = s.to_string();
    for want in [
        "Bytes",
        "Shape",
        "Count",
        "Type",
        "192.00 kB",
        "5.00 kB",
        "(2, 200, 240)",
        "(1, 50, 50)",
        "40 Chunks",
        "uint16",
    ] {
        assert!(text.contains(want), "chunk table lacks '{want}':\n{text}");
    }
    let s = ds.get("smad").unwrap().summary();
    assert_eq!(
        (s.bytes, s.chunk_bytes, s.dtype.as_str()),
        (2 * 200 * 240 * 4, 50 * 50 * 4, "float32")
    );
    // Chunks larger than the array are clipped to it; -1 means the whole dimension.
    let ds = cube
        .load(
            &Query::new()
                .measurements(&["red"])
                .isel("y", 0..30)
                .chunks(ChunkSpec::parse("time=-1,y=128,x=100").unwrap()),
        )
        .unwrap();
    let s = ds.get("red").unwrap().summary();
    assert_eq!(s.chunk_shape, vec![2, 30, 100]);
    assert_eq!(s.chunks, 3);
    assert_eq!(
        cube.store().counters().snapshot().chunk_gets,
        0,
        "summaries read nothing"
    );
}

#[test]
fn explain_counts_stored_chunks_without_reading() {
    for (name, w) in window_table() {
        let cube = fresh();
        let ds = cube
            .load(
                &Query::new()
                    .measurements(&["red"])
                    .isel("time", w[0].clone())
                    .isel("y", w[1].clone())
                    .isel("x", w[2].clone())
                    .chunks(ChunkSpec::parse("time=1,y=50,x=50").unwrap()),
            )
            .unwrap();
        let ex = ds.get("red").unwrap().explain();
        assert_eq!(
            ex.stored_chunks,
            expected_count(&w),
            "{name}: explain stored_chunks"
        );
        assert_eq!(
            ex.decoded_bytes,
            expected_count(&w) * 64 * 64 * 2,
            "{name}: decoded bytes"
        );
        // Encoded sizes from the listing: sum of the object sizes on disk.
        let enc: u64 = expected_keys("red", &w)
            .iter()
            .map(|k| std::fs::metadata(cube_path().join(k)).unwrap().len())
            .sum();
        assert_eq!(ex.encoded_bytes, enc, "{name}: encoded bytes");
        assert_eq!(ex.requests, expected_count(&w), "{name}: requests");
        assert!(ex.tasks >= 1 && ex.projected_peak_bytes > 0);
        assert_eq!(
            cube.store().counters().snapshot().chunk_gets,
            0,
            "{name}: explain reads no chunk"
        );
        assert_eq!(cube.session().stats().chunks_read, 0);
    }
}

#[test]
fn load_keeps_values_and_compute_leaves_the_array_lazy() {
    let cube = fresh();
    let mut ds = cube
        .load(
            &Query::new()
                .measurements(&["red", "nir"])
                .isel("y", 100..200)
                .isel("x", 100..200)
                .chunks(ChunkSpec::parse("time=1,y=64,x=64").unwrap()),
        )
        .unwrap();
    let w = [0..2, 100..200, 100..200];
    {
        let red = ds.get("red").unwrap();
        assert!(red.is_lazy() && red.values().is_none());
        let v = red.compute().unwrap();
        assert_window(&v, "red", &w, "compute");
        assert!(red.is_lazy(), "compute() leaves the array lazy");
        assert!(red.values().is_none());
    }
    let mut red = ds.get("red").unwrap().clone();
    let loaded = red.load().unwrap().clone();
    assert_window(&loaded, "red", &w, "load");
    assert!(!red.is_lazy(), "load() keeps the values");
    assert!(red.values().unwrap().equals(&loaded));
    // A loaded array is not recomputed: no chunk fetched even from a new cube/session.
    cube.store().counters().reset();
    assert!(red.compute().unwrap().equals(&loaded));
    assert_eq!(cube.store().counters().snapshot().chunk_gets, 0);
    // Dataset::load loads every variable in place.
    ds.load().unwrap();
    assert!(ds.vars().all(|d| !d.is_lazy()));
    assert_window(
        ds.get("nir").unwrap().values().unwrap(),
        "nir",
        &w,
        "Dataset::load nir",
    );
    // isel of a loaded array slices the values.
    let sub = red.isel(&[("y", 0..3), ("x", 5..6)]).unwrap();
    assert!(!sub.is_lazy());
    assert_window(
        sub.values().unwrap(),
        "red",
        &[0..2, 100..103, 105..106],
        "isel of loaded",
    );
}

// ---------------------------------------------------------------------------------------------
// Boxes: native bbox, sel, lon/lat
// ---------------------------------------------------------------------------------------------

/// Indices `i < n` whose centre `o + (i + 0.5) * d` lies in `[lo, hi]`, by a plain loop.
fn centres_inside(o: f64, d: f64, n: usize, lo: f64, hi: f64) -> Range<u64> {
    let idx: Vec<usize> = (0..n)
        .filter(|i| {
            let c = o + (*i as f64 + 0.5) * d;
            c >= lo && c <= hi
        })
        .collect();
    match (idx.first(), idx.last()) {
        (Some(a), Some(b)) => {
            assert_eq!(b - a + 1, idx.len());
            *a as u64..*b as u64 + 1
        }
        _ => 0..0,
    }
}

#[test]
fn native_bbox_selects_pixels_whose_centres_are_inside() {
    let m = mosaic();
    let boxes: Vec<[f64; 4]> = vec![
        [2316100.0, -2500800.0, 2316500.0, -2500300.0],
        // edges exactly on pixel centres (inclusive) and just inside/outside them
        [2316005.0, -2501995.0, 2318395.0, -2500005.0],
        [
            2316005.000001,
            -2501994.999999,
            2318394.999999,
            -2500005.000001,
        ],
        [2316004.999, -2500105.0, 2316025.0, -2500095.0],
        // larger than the cube: clipped
        [2000000.0, -3000000.0, 3000000.0, -2000000.0],
        // partly outside
        [2318000.0, -2503000.0, 2319000.0, -2501500.0],
        // a single pixel centre
        [2316635.0, -2500555.0, 2316635.0, -2500555.0],
    ];
    for b in boxes {
        let cols = centres_inside(m.x0, m.dx, m.width, b[0], b[2]);
        let rows = centres_inside(m.y0, m.dy, m.height, b[1], b[3]);
        assert!(!cols.is_empty() && !rows.is_empty());
        let w = [0..2, rows.clone(), cols.clone()];
        let cube = fresh();
        let ds = cube
            .load(
                &Query::new()
                    .measurements(&["green"])
                    .bbox(b)
                    .chunks(ChunkSpec::parse("time=1,y=50,x=50").unwrap()),
            )
            .unwrap_or_else(|e| panic!("bbox {b:?}: {e}"));
        let da = ds.get("green").unwrap();
        let g = da.geobox();
        assert_eq!(
            g.transform[0],
            m.x0 + cols.start as f64 * m.dx,
            "bbox {b:?}: first column"
        );
        assert_eq!(
            g.transform[3],
            m.y0 + rows.start as f64 * m.dy,
            "bbox {b:?}: first row"
        );
        assert_window(&da.compute().unwrap(), "green", &w, &format!("bbox {b:?}"));
        assert_fetched(&cube, &expected_keys("green", &w), &format!("bbox {b:?}"));
        // sel by coordinates on a lazy whole-cube array selects the same pixels.
        let all = cube
            .load(
                &Query::new()
                    .measurements(&["green"])
                    .chunks(ChunkSpec::parse("time=1,y=64,x=64").unwrap()),
            )
            .unwrap();
        let s = all
            .get("green")
            .unwrap()
            .sel(&[("x", b[0], b[2]), ("y", b[1], b[3])])
            .unwrap();
        assert_window(&s.compute().unwrap(), "green", &w, &format!("sel {b:?}"));
    }
    // sel on time by day numbers
    let cube = fresh();
    let all = cube
        .load(
            &Query::new()
                .measurements(&["green"])
                .chunks(ChunkSpec::parse("time=1,y=64,x=64").unwrap()),
        )
        .unwrap();
    let s = all
        .get("green")
        .unwrap()
        .sel(&[
            ("time", (DAY_2019.days() + 1) as f64, DAY_2020.days() as f64),
            ("x", 2316000.0, 2316030.0),
        ])
        .unwrap();
    assert_eq!(s.times(), &[DAY_2020]);
    assert_window(
        &s.compute().unwrap(),
        "green",
        &[1..2, 0..200, 0..3],
        "sel time",
    );
}

/// Reproject lon/lat points to EPSG:6933 with `gdaltransform` (PROJ), outside chunkcube.
fn gdaltransform_to_6933(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    use std::io::Write;
    let mut child = Command::new("gdaltransform")
        .args(["-s_srs", "EPSG:4326", "-t_srs", "EPSG:6933", "-output_xy"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gdaltransform (GDAL's command-line tools) must be installed");
    {
        let mut stdin = child.stdin.take().unwrap();
        for (lon, lat) in pts {
            writeln!(stdin, "{lon:.12} {lat:.12}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "gdaltransform failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<(f64, f64)> = text
        .lines()
        .map(|l| {
            let n: Vec<f64> = l.split_whitespace().map(|t| t.parse().unwrap()).collect();
            (n[0], n[1])
        })
        .collect();
    assert_eq!(v.len(), pts.len(), "gdaltransform output: {text}");
    v
}

#[test]
fn lon_lat_boxes_select_centres_inside_the_reprojected_box() {
    let m = mosaic();
    // The cube covers about lon 24.0034..24.0283, lat -20.0061..-19.9894.
    let boxes: Vec<((f64, f64), (f64, f64))> = vec![
        ((24.01, 24.02), (-20.0, -19.995)),
        ((24.0, 24.0101), (-20.01, -19.99)), // overlaps the west, south and north edges
        ((24.0251, 24.05), (-20.0053, -19.9971)), // overlaps the east edge, holes and the uncovered corner
        ((23.0, 25.0), (-21.0, -19.0)),           // contains the whole cube
        ((24.01712, 24.01735), (-19.99612, -19.99588)), // a handful of pixels
    ];
    for (lon, lat) in boxes {
        // Densify each edge (for this cylindrical CRS the corners would do).
        let mut pts = Vec::new();
        for i in 0..=10 {
            let f = i as f64 / 10.0;
            let lo = lon.0 + f * (lon.1 - lon.0);
            let la = lat.0 + f * (lat.1 - lat.0);
            pts.extend([(lo, lat.0), (lo, lat.1), (lon.0, la), (lon.1, la)]);
        }
        let xy = gdaltransform_to_6933(&pts);
        let minx = xy.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let maxx = xy.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        let miny = xy.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let maxy = xy.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        // Keep the test meaningful: no pixel centre within a millimetre of an edge.
        for e in [minx, maxx] {
            let frac = ((e - m.x0) / m.dx - 0.5).rem_euclid(1.0);
            assert!(
                frac.min(1.0 - frac) * m.dx.abs() > 1e-3,
                "box {lon:?},{lat:?} edge x={e} sits on a centre"
            );
        }
        for e in [miny, maxy] {
            let frac = ((e - m.y0) / m.dy - 0.5).rem_euclid(1.0);
            assert!(
                frac.min(1.0 - frac) * m.dy.abs() > 1e-3,
                "box {lon:?},{lat:?} edge y={e} sits on a centre"
            );
        }
        let cols = centres_inside(m.x0, m.dx, m.width, minx, maxx);
        let rows = centres_inside(m.y0, m.dy, m.height, miny, maxy);
        assert!(
            !cols.is_empty() && !rows.is_empty(),
            "box {lon:?},{lat:?} must select something"
        );
        let w = [0..2, rows.clone(), cols.clone()];
        let ctx = format!("lon {lon:?} lat {lat:?} -> rows {rows:?} cols {cols:?}");
        let cube = fresh();
        let ds = cube
            .load(
                &Query::new()
                    .measurements(&["nir"])
                    .lon_lat(lon, lat)
                    .chunks(ChunkSpec::parse("time=1,y=50,x=50").unwrap()),
            )
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let da = ds.get("nir").unwrap();
        assert_eq!(
            da.shape(),
            vec![2, rows.end - rows.start, cols.end - cols.start],
            "{ctx}"
        );
        assert_eq!(
            da.geobox().transform[0],
            m.x0 + cols.start as f64 * m.dx,
            "{ctx}"
        );
        assert_eq!(
            da.geobox().transform[3],
            m.y0 + rows.start as f64 * m.dy,
            "{ctx}"
        );
        assert_window(&da.compute().unwrap(), "nir", &w, &ctx);
        assert_fetched(&cube, &expected_keys("nir", &w), &ctx);

        // The CLI selects the same window.
        let o = run_ok(&[
            "load",
            &cube_str(),
            "--lon",
            &format!("{},{}", lon.0, lon.1),
            "--lat",
            &format!("{},{}", lat.0, lat.1),
            "--measurements",
            "nir",
            "--summary",
        ]);
        let text = String::from_utf8_lossy(&o.stdout);
        let shape = format!("(2, {}, {})", rows.end - rows.start, cols.end - cols.start);
        assert!(
            text.contains(&shape),
            "{ctx}: CLI summary lacks {shape}:\n{text}"
        );
    }
}

#[test]
fn time_ranges_select_the_right_steps() {
    let cases: Vec<(&str, &str, Vec<chunkcube::geo::Time>)> = vec![
        ("2019-01-01", "2019-12-31", vec![DAY_2019]),
        ("2019", "2019", vec![DAY_2019]),
        ("2019-06-01", "2020-06-01", vec![DAY_2020]),
        ("2020-01-01", "2020-01-01", vec![DAY_2020]),
        ("2018-01-01", "2021-12-31", vec![DAY_2019, DAY_2020]),
        ("2019-01-01", "2020-01-01", vec![DAY_2019, DAY_2020]),
        ("1900", "2019-01-01", vec![DAY_2019]),
    ];
    for (a, b, want) in cases {
        let cube = fresh();
        let q = Query::new()
            .measurements(&["blue"])
            .isel("y", 0..10)
            .isel("x", 0..10)
            .time(a, b)
            .unwrap();
        let ds = cube
            .load(
                &q.clone()
                    .chunks(ChunkSpec::parse("time=1,y=64,x=64").unwrap()),
            )
            .unwrap();
        let da = ds.get("blue").unwrap();
        assert_eq!(da.times(), want.as_slice(), "time {a}/{b}");
        let t0 = if want[0] == DAY_2019 { 0 } else { 1 };
        let w = [t0..t0 + want.len() as u64, 0..10, 0..10];
        assert_window(&da.compute().unwrap(), "blue", &w, &format!("time {a}/{b}"));
        assert_fetched(&cube, &expected_keys("blue", &w), &format!("time {a}/{b}"));
        let eager = cube.load(&q).unwrap();
        assert_window(
            eager.get("blue").unwrap().values().unwrap(),
            "blue",
            &w,
            &format!("eager time {a}/{b}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_measurement_is_named_with_the_available_bands() {
    let cube = fresh();
    let msg = err_string(
        cube.load(&Query::new().measurements(&["red", "swir16"])),
        "unknown band",
    );
    assert!(msg.contains("swir16"), "{msg}");
    for b in BANDS {
        assert!(msg.contains(b), "the error should list '{b}': {msg}");
    }
    let msg = err_string(
        cube.load(
            &Query::new()
                .measurements(&["swir16"])
                .chunks(ChunkSpec::parse("time=1").unwrap()),
        ),
        "unknown band lazy",
    );
    assert!(msg.contains("swir16"), "{msg}");
    let msg = err_string(
        cube.load(&Query::new().measurements(&[])),
        "empty measurements",
    );
    assert!(!msg.is_empty());
    assert_eq!(cube.store().counters().snapshot().chunk_gets, 0);
    let line = run_err(&[
        "load",
        &cube_str(),
        "--measurements",
        "red,swir16",
        "--summary",
    ]);
    assert!(line.contains("swir16") && line.contains("nir"), "{line}");
}

#[test]
fn selections_that_select_nothing_or_are_malformed_are_errors() {
    let cube = fresh();
    let lazy = || ChunkSpec::parse("time=1,y=64,x=64").unwrap();
    let q = || Query::new().measurements(&["red"]);
    let cases: Vec<(&str, Query)> = vec![
        ("bbox outside", q().bbox([0.0, 0.0, 1000.0, 1000.0])),
        (
            "bbox just east of the cube",
            q().bbox([2318400.5, -2501000.0, 2318500.0, -2500500.0]),
        ),
        (
            "bbox between two centres",
            q().bbox([2316006.0, -2500100.0, 2316014.0, -2500050.0]),
        ),
        (
            "bbox reversed x",
            q().bbox([2317000.0, -2501000.0, 2316000.0, -2500000.0]),
        ),
        (
            "bbox reversed y",
            q().bbox([2316000.0, -2500000.0, 2317000.0, -2501000.0]),
        ),
        (
            "bbox NaN",
            q().bbox([f64::NAN, -2501000.0, 2317000.0, -2500000.0]),
        ),
        ("lon/lat outside", q().lon_lat((10.0, 11.0), (5.0, 6.0))),
        (
            "lon reversed",
            q().lon_lat((24.02, 24.01), (-20.0, -19.995)),
        ),
        (
            "lat reversed",
            q().lon_lat((24.01, 24.02), (-19.995, -20.0)),
        ),
        ("lat beyond 90", q().lon_lat((24.01, 24.02), (-20.0, 95.0))),
        (
            "time empty (between steps)",
            q().time("2019-01-02", "2019-12-31").unwrap(),
        ),
        (
            "time empty (before)",
            q().time("2000", "2010-12-31").unwrap(),
        ),
        (
            "time empty (after)",
            q().time("2021-01-01", "2030-01-01").unwrap(),
        ),
        (
            "time reversed",
            q().time("2020-01-01", "2019-01-01").unwrap(),
        ),
        ("isel reversed", q().isel("y", Range { start: 20, end: 10 })),
        ("isel empty", q().isel("x", 10..10)),
        ("isel y out of bounds", q().isel("y", 190..201)),
        ("isel x start out of bounds", q().isel("x", 240..250)),
        ("isel time out of bounds", q().isel("time", 0..3)),
    ];
    for (name, query) in cases {
        for chunks in [None, Some(lazy())] {
            let mut qq = query.clone();
            qq.chunks = chunks.clone();
            let r = cube.load(&qq);
            assert!(r.is_err(), "{name} (chunks {chunks:?}): expected an error");
            assert!(!r.err().unwrap().to_string().is_empty());
        }
    }
    for bad in ["2019-13-01", "2019-02-30", "19", "yesterday", ""] {
        assert!(
            q().time(bad, "2020").is_err(),
            "time start '{bad}' should not parse"
        );
    }
    assert_eq!(
        cube.store().counters().snapshot().chunk_gets,
        0,
        "failed queries read nothing"
    );

    // DataArray::isel and sel validate too.
    let ds = cube.load(&q().chunks(lazy())).unwrap();
    let da = ds.get("red").unwrap();
    assert!(da.isel(&[("y", 0..201)]).is_err());
    assert!(da.isel(&[("x", 5..5)]).is_err());
    assert!(da.isel(&[("band", 0..1)]).is_err());
    assert!(
        da.sel(&[("x", 10.0, 20.0)]).is_err(),
        "sel outside the cube"
    );
    assert!(
        da.sel(&[("x", 2317000.0, 2316000.0)]).is_err(),
        "sel reversed"
    );
    assert!(da.sel(&[("time", 0.0, 100.0)]).is_err(), "sel empty time");

    // The CLI says so in one line.
    let c = cube_str();
    for args in [
        vec!["load", &c, "--bbox", "0,0,1000,1000", "--summary"],
        vec![
            "load",
            &c,
            "--lon",
            "24.02,24.01",
            "--lat",
            "-20,-19.995",
            "--summary",
        ],
        vec!["load", &c, "--lon", "24.01,24.02", "--summary"],
        vec!["load", &c, "--time", "2019-01-02/2019-12-31", "--summary"],
        vec!["load", &c, "--time", "2020/2019", "--summary"],
        // A single period is a selection (`--time 2019`); a half-open range is not.
        vec!["load", &c, "--time", "2019/", "--summary"],
        vec!["load", &c, "--isel", "y=10:5", "--summary"],
        vec!["load", &c, "--isel", "x=0:241", "--summary"],
        vec!["load", &c, "--isel", "band=0:1", "--summary"],
        vec!["load", &c, "--isel", "y=-1:5", "--summary"],
        vec!["load", &c, "--bbox", "1,2,3", "--summary"],
    ] {
        run_err(&args);
    }
}

#[test]
fn query_isel_on_an_unknown_dimension_is_an_error() {
    // `Query::isel("band", ..)` must not silently select the whole cube.
    let cube = fresh();
    // lat is y's name in geographic stores: an alias, selecting as y does.
    let shape = |dim: &str| {
        let q = Query::new()
            .measurements(&["red"])
            .isel(dim, 0..1)
            .chunks(ChunkSpec::parse("time=1").unwrap());
        cube.load(&q).unwrap().get("red").map(|a| a.shape())
    };
    assert_eq!(shape("lat"), shape("y"));
    assert_eq!(shape("longitude"), shape("x"));
    for dim in ["band", "X", "wavelength"] {
        let r = cube.load(
            &Query::new()
                .measurements(&["red"])
                .isel(dim, 0..1)
                .chunks(ChunkSpec::parse("time=1").unwrap()),
        );
        assert!(
            r.is_err(),
            "Query::isel(\"{dim}\", 0..1) was silently ignored: it selected {:?}",
            r.ok().and_then(|d| d.get("red").map(|a| a.shape()))
        );
    }
}

#[test]
fn chunk_specs_take_lat_lon_for_y_x() {
    assert_eq!(
        format!("{:?}", ChunkSpec::parse("lat=10,lon=20").unwrap()),
        format!("{:?}", ChunkSpec::parse("y=10,x=20").unwrap())
    );
}

#[test]
fn bad_chunk_specs_are_rejected() {
    for bad in [
        "band=3",
        "wavelength=10",
        "y=10,lat=20",
        "x=0",
        "y=0",
        "time=0",
        "y=-5",
        "x=-2",
        "x=1.5",
        "x=abc",
        "x=",
        "=5",
        "y=10,y=20",
        "x=10;y=10",
        "garbage",
        "-5",
        "0",
    ] {
        let r = ChunkSpec::parse(bad);
        assert!(
            r.is_err(),
            "ChunkSpec::parse({bad:?}) should fail, got {r:?}"
        );
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains(bad.split(['=', ',', ';']).next().unwrap_or(bad)),
            "{bad}: {msg}"
        );
    }
    for ok in ["time=1,y=64,x=64", "y=-1", "x=100", "auto", "1MiB"] {
        assert!(ChunkSpec::parse(ok).is_ok(), "{ok}");
    }
    let c = cube_str();
    for (spec, word) in [("band=3", "band"), ("x=0", "x=0"), ("y=-5", "y=-5")] {
        let line = run_err(&["load", &c, "--chunks", spec, "--summary"]);
        assert!(line.contains(word), "--chunks {spec}: {line}");
    }
}

#[test]
fn paths_that_are_not_cubes_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "hello").unwrap();
    let missing = tmp.path().join("missing");
    let tiles = crate_dir().join("fixtures/tiles");
    for p in [&empty, &file, &missing, &tiles] {
        let s = p.to_str().unwrap();
        let e = Cube::open(s)
            .err()
            .unwrap_or_else(|| panic!("{s} opened as a cube"));
        assert!(
            e.to_string().contains(s),
            "the error should name the path: {e}"
        );
        let line = run_err(&["load", s, "--summary"]);
        assert!(line.contains(s), "{line}");
    }
    assert!(!missing.exists(), "opening must not create the path");
    assert!(Cube::open("ftp://example.com/cube").is_err());
    assert!(Cube::open("").is_err());
}

#[test]
fn malformed_metadata_is_an_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, content) in [
        ("zarr.json", "{ this is not json"),
        ("zarr.json", ""),
        ("zarr.json", "[1, 2, 3]"),
        (
            "red/zarr.json",
            "{\"zarr_format\": 3, \"node_type\": \"array\", \"shape\": [2, 200",
        ),
        ("red/zarr.json", "\u{0}\u{1}garbage"),
        ("time/zarr.json", "not json"),
        ("spatial_ref/zarr.json", "{\"zarr_format\": 3, "),
    ] {
        let dir = tmp.path().join(format!(
            "c{}",
            key.replace('/', "_") + &content.len().to_string()
        ));
        copy_dir(cube_path(), &dir);
        std::fs::write(dir.join(key), content).unwrap();
        let s = dir.to_str().unwrap();
        match Cube::open(s) {
            Ok(_) => panic!("cube with garbage {key} ({content:?}) opened"),
            Err(e) => {
                let m = e.to_string();
                assert!(
                    m.contains(key) || (key == "zarr.json" && m.contains("not a chunkcube cube")),
                    "{key}: the error should name the key: {m}"
                );
            }
        }
        let line = run_err(&["load", s, "--summary"]);
        assert!(line.contains(key) || line.contains(s), "{line}");
    }
}

/// Corrupt a stored chunk of a copy of the cube with `f`; every read touching it fails naming
/// the key, reads not touching it still succeed and are right.
fn check_damaged_chunk(what: &str, f: impl Fn(&Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cube");
    copy_dir(cube_path(), &dir);
    let key = "red/c/1/1/2"; // time 1, rows 64..128, cols 128..192
    f(&dir.join(key));
    let s = dir.to_str().unwrap();
    let touching: Vec<(&str, Query)> = vec![
        ("eager whole cube", Query::new()),
        (
            "eager window",
            Query::new()
                .measurements(&["red"])
                .isel("y", 100..101)
                .isel("x", 150..151),
        ),
        (
            "lazy whole",
            Query::new()
                .measurements(&["red", "nir"])
                .chunks(ChunkSpec::parse("time=1,y=50,x=50").unwrap()),
        ),
        (
            "lazy window",
            Query::new()
                .measurements(&["red"])
                .isel("time", 1..2)
                .isel("y", 60..70)
                .isel("x", 120..130)
                .chunks(ChunkSpec::parse("time=1,y=128,x=128").unwrap()),
        ),
    ];
    for (name, q) in touching {
        let cube = Cube::open_with(s, cfg(2)).unwrap();
        let r = cube.load(&q).and_then(|mut ds| {
            ds.load()?;
            Ok(ds)
        });
        let msg = err_string(r, &format!("{what}: {name}"));
        assert!(
            msg.contains(key),
            "{what}: {name}: the error should name the key '{key}': {msg}"
        );
    }
    // Not touching the damaged chunk: fine and right (pruning).
    let cube = Cube::open_with(s, cfg(2)).unwrap();
    let w = [0..2, 0..64, 0..240];
    let ds = cube
        .load(&Query::new().measurements(&["red"]).isel("y", 0..64))
        .unwrap();
    assert_window(
        ds.get("red").unwrap().values().unwrap(),
        "red",
        &w,
        &format!("{what}: untouched rows"),
    );
    let ds = cube.load(&Query::new().measurements(&["nir"])).unwrap();
    assert_window(
        ds.get("nir").unwrap().values().unwrap(),
        "nir",
        &[0..2, 0..200, 0..240],
        &format!("{what}: other band"),
    );
    // The CLI: one error line naming the key, and no --out cube.
    let line = run_err(&[
        "load",
        s,
        "--measurements",
        "red",
        "--isel",
        "time=1:2,y=64:65,x=128:129",
        "--print",
    ]);
    assert!(line.contains(key), "{line}");
    let out = tmp.path().join("out");
    let line = run_err(&[
        "load",
        s,
        "--measurements",
        "red",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(line.contains(key), "{line}");
    assert!(
        Cube::open(out.to_str().unwrap()).is_err(),
        "{what}: a failed --out must not leave a cube that opens"
    );
}

#[test]
fn a_corrupt_chunk_is_an_error_naming_the_key() {
    for pos in [0.1, 0.5, 0.95] {
        check_damaged_chunk(&format!("flipped byte at {pos}"), |p| {
            let mut b = std::fs::read(p).unwrap();
            let i = ((b.len() as f64 * pos) as usize).min(b.len() - 1);
            b[i] ^= 0x5a;
            std::fs::write(p, b).unwrap();
        });
    }
}

#[test]
fn a_truncated_chunk_is_an_error_naming_the_key() {
    for keep in [0.5, 0.99, 0.0] {
        check_damaged_chunk(&format!("truncated to {keep}"), |p| {
            let b = std::fs::read(p).unwrap();
            let n = ((b.len() as f64 * keep) as usize).min(b.len() - 1);
            std::fs::write(p, &b[..n]).unwrap();
        });
    }
    check_damaged_chunk("truncated to 3 bytes", |p| {
        let b = std::fs::read(p).unwrap();
        std::fs::write(p, &b[..3]).unwrap();
    });
}

#[test]
fn chunk_cache_entries_never_leak_between_cubes_in_one_session() {
    // Two cubes of identical layout opened one after the other in one session: the second
    // (whose `red` holds the first's `nir` pixels) must read its own chunks, not cached ones.
    let tmp = tempfile::tempdir().unwrap();
    let swapped = tmp.path().join("swapped");
    copy_dir(cube_path(), &swapped);
    std::fs::rename(swapped.join("red"), swapped.join("tmp")).unwrap();
    std::fs::rename(swapped.join("nir"), swapped.join("red")).unwrap();
    std::fs::rename(swapped.join("tmp"), swapped.join("nir")).unwrap();
    let session = chunkcube::Session::new(cfg(2)).unwrap();
    let w = [0..1, 0..10, 0..10];
    for round in 0..16 {
        {
            let a = Cube::open_in(&cube_str(), session.clone()).unwrap();
            let ds = a
                .load(
                    &Query::new()
                        .measurements(&["red"])
                        .isel("time", 0..1)
                        .isel("y", 0..10)
                        .isel("x", 0..10),
                )
                .unwrap();
            assert_window(
                ds.get("red").unwrap().values().unwrap(),
                "red",
                &w,
                &format!("round {round}: first cube"),
            );
        }
        {
            let b = Cube::open_in(swapped.to_str().unwrap(), session.clone()).unwrap();
            let ds = b
                .load(
                    &Query::new()
                        .measurements(&["red"])
                        .isel("time", 0..1)
                        .isel("y", 0..10)
                        .isel("x", 0..10),
                )
                .unwrap();
            assert_window(
                ds.get("red").unwrap().values().unwrap(),
                "nir",
                &w,
                &format!("round {round}: second cube's 'red' (= nir pixels)"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The CLI: chunkcube load
// ---------------------------------------------------------------------------------------------

#[test]
fn cli_summary_prints_the_chunk_table_and_reads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("s.json");
    let o = run_ok(&[
        "load",
        &cube_str(),
        "--measurements",
        "red,nir",
        "--chunks",
        "time=1,y=50,x=50",
        "--summary",
        "--stats",
        stats.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "red",
        "nir",
        "Bytes",
        "Shape",
        "Count",
        "Type",
        "192.00 kB",
        "(2, 200, 240)",
        "(1, 50, 50)",
        "40 Chunks",
        "uint16",
        "EPSG:6933",
    ] {
        assert!(text.contains(want), "--summary lacks '{want}':\n{text}");
    }
    assert!(
        !text.contains("blue"),
        "only the measurements asked for:\n{text}"
    );
    let s = common::read_stats(&stats);
    assert_eq!(s["chunks_read"], 0, "{s}");
    assert_eq!(s["bytes_read"], 0, "{s}");
    // Without --chunks it stays lazy as well.
    let o = run_ok(&[
        "load",
        &cube_str(),
        "--isel",
        "y=0:10,x=0:10",
        "--summary",
        "--stats",
        stats.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("(2, 10, 10)"));
    assert_eq!(common::read_stats(&stats)["chunks_read"], 0);
}

#[test]
fn cli_print_of_a_3x3_window() {
    let o = run_ok(&[
        "load",
        &cube_str(),
        "--measurements",
        "red,smad",
        "--isel",
        "time=0:2,y=98:101,x=118:121",
        "--print",
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let m = mosaic();
    // Parse: a header per band, "time = DATE", the x coordinates, then 3 rows of a y
    // coordinate and 3 numbers.
    let mut band = String::new();
    let mut t = 0usize;
    let mut row = 0usize;
    let mut seen = 0usize;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("<chunkcube.DataArray '") {
            band = rest.split('\'').next().unwrap().to_string();
            t = usize::MAX;
            continue;
        }
        if line.starts_with("y \\ x") {
            continue;
        }
        if let Some(d) = line.strip_prefix("time = ") {
            t = match d.trim() {
                "2019-01-01" => 0,
                "2020-01-01" => 1,
                other => panic!("unexpected time {other}:\n{text}"),
            };
            row = 0;
            continue;
        }
        let vals: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| {
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("not a number '{v}' in:\n{text}"))
            })
            .collect();
        assert_eq!(vals.len(), 3, "row of 3 values:\n{text}");
        for (i, v) in vals.iter().enumerate() {
            let want = m.at(&band, t, 98 + row, 118 + i);
            assert!(
                (v.is_nan() && want.is_nan()) || (v - want).abs() <= want.abs() * 1e-6,
                "{band} t{t} y{} x{}: printed {v}, want {want}\n{text}",
                98 + row,
                118 + i
            );
            seen += 1;
        }
        row += 1;
    }
    assert_eq!(seen, 2 * 2 * 9, "two bands x two times x 9 pixels:\n{text}");
}

#[test]
fn cli_explain_reads_nothing_and_counts_stored_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("s.json");
    for (name, w) in window_table() {
        let isel = format!(
            "time={}:{},y={}:{},x={}:{}",
            w[0].start, w[0].end, w[1].start, w[1].end, w[2].start, w[2].end
        );
        let o = run_ok(&[
            "load",
            &cube_str(),
            "--measurements",
            "red",
            "--isel",
            &isel,
            "--chunks",
            "time=1,y=50,x=50",
            "--explain",
            "--stats",
            stats.to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("stored chunks"))
            .unwrap_or_else(|| panic!("{name}: no stored chunks line:\n{text}"));
        let n: u64 = line
            .split_whitespace()
            .find_map(|t| t.parse().ok())
            .unwrap();
        assert_eq!(n, expected_count(&w), "{name}: {line}");
        assert_eq!(
            common::read_stats(&stats)["chunks_read"],
            0,
            "{name}: --explain reads no chunk"
        );
    }
}

#[test]
fn cli_out_writes_a_cube_with_the_same_crs_coords_and_values() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sel");
    let stats = tmp.path().join("s.json");
    let m = mosaic();
    // rows 90..130, cols 100..230, both times: crosses tiles, holes and the uncovered corner.
    let bbox = format!(
        "{},{},{},{}",
        m.x0 + 100.0 * m.dx + 1.0,
        m.y0 + 130.0 * m.dy + 1.0,
        m.x0 + 230.0 * m.dx - 1.0,
        m.y0 + 90.0 * m.dy - 1.0
    );
    run_ok(&[
        "load",
        &cube_str(),
        "--bbox",
        &bbox,
        "--measurements",
        "red,smad",
        "--chunks",
        "time=1,y=32,x=48",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--stats",
        stats.to_str().unwrap(),
    ]);
    let w = [0..2, 90..130, 100..230];
    let s = common::read_stats(&stats);
    assert_eq!(
        s["chunks_read"].as_u64().unwrap(),
        2 * expected_count(&w),
        "{s}"
    );
    assert!(s["chunks_written"].as_u64().unwrap() > 0, "{s}");

    let src = fresh();
    let c = Cube::open(out.to_str().unwrap()).expect("the --out cube opens");
    let (g, sg) = (&c.meta().geobox, &src.meta().geobox);
    assert_eq!(g.epsg, Some(6933));
    assert!(chunkcube::geo::same_crs(&g.wkt, &sg.wkt), "same CRS");
    assert_eq!(
        g.transform,
        [
            m.x0 + 100.0 * m.dx,
            m.dx,
            0.0,
            m.y0 + 90.0 * m.dy,
            0.0,
            m.dy
        ]
    );
    assert_eq!((g.width, g.height), (130, 40));
    assert_eq!(g.x_coords(), sg.x_coords()[100..230].to_vec());
    assert_eq!(g.y_coords(), sg.y_coords()[90..130].to_vec());
    assert_eq!(c.meta().times, vec![DAY_2019, DAY_2020]);
    assert_eq!(c.band_names(), vec!["red".to_string(), "smad".to_string()]);
    let ds = c.load(&Query::new()).unwrap();
    for b in ["red", "smad"] {
        let v = ds.get(b).unwrap().values().unwrap();
        // Same dtype and nodata as the source band.
        assert_eq!(v.dtype(), src.band(b).unwrap().dtype(), "{b} dtype");
        let (nd, snd) = (c.band(b).unwrap().nodata(), src.band(b).unwrap().nodata());
        assert!(
            nd == snd || (nd.unwrap().is_nan() && snd.unwrap().is_nan()),
            "{b} nodata {nd:?} vs {snd:?}"
        );
        assert_window(v, b, &w, &format!("--out {b}"));
    }
    // Writing over it again is refused without --overwrite.
    let line = run_err(&[
        "load",
        &cube_str(),
        "--isel",
        "y=0:5,x=0:5",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(line.contains("--overwrite"), "{line}");
    assert_eq!(
        Cube::open(out.to_str().unwrap())
            .unwrap()
            .meta()
            .geobox
            .width,
        130,
        "the old cube is intact"
    );
}

/// The chunk shape an array's `zarr.json` declares, read as plain JSON.
fn declared_chunks(cube: &Path, array: &str) -> Vec<u64> {
    let meta = common::read_json(&cube.join(array).join("zarr.json"));
    meta["chunk_grid"]["configuration"]["chunk_shape"]
        .as_array()
        .unwrap_or_else(|| panic!("{array}: no regular chunk grid in {meta}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn cli_out_keeps_the_stored_chunks_inside_a_small_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, stats) = (tmp.path().join("copy"), tmp.path().join("s.json"));
    // A limit far below the bands (2 x 200 x 240 each) but above one stored chunk's task.
    let limit: u64 = 1 << 20;
    let copy = |dst: &Path, limit: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "load",
            &cube_str(),
            "--measurements",
            "nir,smad",
            "--memory-limit",
            limit,
            "--out",
            dst.to_str().unwrap(),
            "--quiet",
            "--stats",
            stats.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    run_ok(&copy(&out, "1MiB", &[]));
    let s = common::read_stats(&stats);
    let peak = s["peak_tracked_bytes"].as_u64().unwrap();
    assert!(
        peak > 0 && peak <= limit,
        "peak {peak} > limit {limit}: {s}"
    );
    let w = [0..2, 0..200, 0..240];
    // Every stored chunk is read once, and written once in the same chunking.
    assert_eq!(
        s["chunks_read"].as_u64().unwrap(),
        2 * expected_count(&w),
        "{s}"
    );
    assert_eq!(
        s["chunks_written"].as_u64().unwrap(),
        2 * expected_count(&w),
        "{s}"
    );
    let c = Cube::open(out.to_str().unwrap()).expect("the --out cube opens");
    let ds = c.load(&Query::new()).unwrap();
    for b in ["nir", "smad"] {
        assert_eq!(
            declared_chunks(&out, b),
            STORED.to_vec(),
            "{b}: chunk shape"
        );
        assert_window(
            ds.get(b).unwrap().values().unwrap(),
            b,
            &w,
            &format!("copy {b}"),
        );
    }

    // --chunks still decides when given.
    let rechunked = tmp.path().join("rechunked");
    run_ok(&copy(&rechunked, "8MiB", &["--chunks", "time=2,y=50,x=-1"]));
    let c = Cube::open(rechunked.to_str().unwrap()).unwrap();
    let ds = c.load(&Query::new()).unwrap();
    for b in ["nir", "smad"] {
        assert_eq!(declared_chunks(&rechunked, b), vec![2, 50, 240], "{b}");
        assert_window(
            ds.get(b).unwrap().values().unwrap(),
            b,
            &w,
            &format!("rechunked {b}"),
        );
    }

    // Below what one task needs: refused before anything is written, stating the minimum.
    let small = tmp.path().join("small");
    let line = run_err(&copy(&small, "64KiB", &[]));
    assert!(line.contains("--memory-limit"), "{line}");
    let min = common::stated_minimum(&line);
    assert!(
        !small.exists(),
        "a refused copy created {}",
        small.display()
    );
    // ... and a limit just above the stated minimum (it is printed rounded) works, within it.
    let near = chunkcube::store::parse_bytes(&min.replace(' ', "")).unwrap() * 11 / 10;
    run_ok(&copy(&small, &near.to_string(), &[]));
    let s = common::read_stats(&stats);
    let peak = s["peak_tracked_bytes"].as_u64().unwrap();
    assert!(
        peak <= near,
        "peak {peak} > limit {near} (minimum {min}): {s}"
    );
}

#[test]
fn sharded_cubes_read_the_same_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sharded");
    let o = Command::new(BIN)
        .arg("ingest")
        .arg("--manifest")
        .arg(crate_dir().join("fixtures/manifest.csv"))
        .arg("--out")
        .arg(&dir)
        .args([
            "--chunks",
            "time=1,y=64,x=64",
            "--shards",
            "y=128,x=128",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let s = dir.to_str().unwrap();
    for (name, w) in window_table() {
        let cube = Cube::open_with(s, cfg(2)).unwrap();
        let q = Query::new()
            .measurements(&["red", "smad"])
            .isel("time", w[0].clone())
            .isel("y", w[1].clone())
            .isel("x", w[2].clone());
        let eager = cube.load(&q).unwrap();
        let lazy = cube
            .load(
                &q.clone()
                    .chunks(ChunkSpec::parse("time=1,y=50,x=50").unwrap()),
            )
            .unwrap();
        for b in ["red", "smad"] {
            assert_window(
                eager.get(b).unwrap().values().unwrap(),
                b,
                &w,
                &format!("sharded eager {name} {b}"),
            );
            assert_window(
                &lazy.get(b).unwrap().compute().unwrap(),
                b,
                &w,
                &format!("sharded lazy {name} {b}"),
            );
        }
        // Explain counts the decode (inner) chunks, which are the 64 x 64 chunks.
        let ex = lazy.get("red").unwrap().explain();
        assert_eq!(
            ex.stored_chunks,
            expected_count(&w),
            "sharded {name}: stored chunks"
        );
        // Only the shards the window touches are fetched.
        let c = Cube::open_with(s, cfg(2)).unwrap();
        c.store().counters().reset();
        c.load(
            &Query::new()
                .measurements(&["red"])
                .isel("time", w[0].clone())
                .isel("y", w[1].clone())
                .isel("x", w[2].clone()),
        )
        .unwrap();
        let mut shards = BTreeSet::new();
        for t in w[0].clone() {
            for y in w[1].start / 128..=(w[1].end - 1) / 128 {
                for x in w[2].start / 128..=(w[2].end - 1) / 128 {
                    shards.insert(format!("red/c/{t}/{y}/{x}"));
                }
            }
        }
        let got: BTreeSet<String> = c.store().counters().per_key().keys().cloned().collect();
        assert_eq!(got, shards, "sharded {name}: shard keys fetched");
    }
}
