//! Issue 4 — lazy band math, reductions, task graphs and the executor (`chunkcube calc`).
//!
//! Every expected value is computed here with plain loops over GDAL reads of the fixture
//! tiles (uint16 → f32, nodata → NaN, f32 arithmetic), independently of chunkcube. Chunk
//! counts come from the stored chunk grid by arithmetic.
//!
//! The fixtures cube (stored chunks `time=1,y=64,x=64`) is ingested once per test binary.

use crate::common;
use crate::common::output::{
    copy_dir, run_one_error as run_err, run_output as run, run_output_ok as run_ok, show,
};
use chunkcube::graph::{BinaryOp, ReduceOp};
use chunkcube::{ChunkSpec, Cube, DType, DataArray, ExecConfig, Query, Values};
use ndarray::{Array3, Ix3};
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Fixtures: the cube, the CLI, and an independent GDAL reference mosaic
// ---------------------------------------------------------------------------------------------

const STORED: [u64; 3] = [1, 64, 64];
const DAY_2019: chunkcube::geo::Time = chunkcube::geo::Time::from_days(17897);
const DAY_2020: chunkcube::geo::Time = chunkcube::geo::Time::from_days(18262);
const NDVI: &str = "ndvi=(nir-red)/(nir+red)";
const ALL_REDUCTIONS: [ReduceOp; 7] = [
    ReduceOp::Mean,
    ReduceOp::Median,
    ReduceOp::Min,
    ReduceOp::Max,
    ReduceOp::Sum,
    ReduceOp::Count,
    ReduceOp::Std,
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixtures cube, ingested once per test process under the target's tmp dir.
fn cube_path() -> &'static Path {
    common::fixture_cube_64("calc-test-cube-")
}

fn cube_str() -> &'static str {
    cube_path().to_str().unwrap()
}

fn cfg(threads: usize) -> ExecConfig {
    ExecConfig {
        threads,
        memory_limit: 256 << 20,
        quiet: true,
        ..ExecConfig::default()
    }
}

/// A fresh open of the fixtures cube: new session (empty chunk cache), zeroed counters.
fn fresh_with(threads: usize) -> Cube {
    let c = Cube::open_with(cube_str(), cfg(threads)).expect("open the fixtures cube");
    c.store().counters().reset();
    c
}

fn fresh() -> Cube {
    fresh_with(2)
}

/// Every band of the fixture tiles on the union grid, `[t, y, x]`, as f32 with nodata → NaN
/// (exact for uint16), built with plain loops over GDAL reads.
struct Mosaic {
    bands: HashMap<String, Array3<f32>>,
}

fn mosaic() -> &'static Mosaic {
    static M: OnceLock<Mosaic> = OnceLock::new();
    M.get_or_init(read_mosaic)
}

fn read_mosaic() -> Mosaic {
    let dir = crate_dir().join("fixtures");
    let text = std::fs::read_to_string(dir.join("manifest.csv")).unwrap();
    let (x0, y0, dx, dy, width, height) = (
        2316000.0f64,
        -2500000.0f64,
        10.0f64,
        -10.0f64,
        240usize,
        200usize,
    );
    let mut bands: HashMap<String, Array3<f32>> = HashMap::new();
    let mut cover = 0usize;
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(',').collect();
        let (path, band, time) = (cols[0], cols[1], cols[2]);
        let t = match &time[..4] {
            "2019" => 0,
            "2020" => 1,
            y => panic!("unexpected year {y}"),
        };
        let ds = gdal::Dataset::open(dir.join(path)).unwrap();
        let gt = ds.geo_transform().unwrap();
        assert_eq!((gt[1], gt[5]), (dx, dy), "{path}: resolution");
        let (w, h) = ds.raster_size();
        let rb = ds.rasterband(1).unwrap();
        let nodata = rb.no_data_value();
        let data = rb
            .read_as::<f64>((0, 0), (w, h), (w, h), None)
            .unwrap()
            .data()
            .to_vec();
        let c0 = ((gt[0] - x0) / dx).round() as usize;
        let r0 = ((gt[3] - y0) / dy).round() as usize;
        assert!(
            c0 + w <= width && r0 + h <= height,
            "{path} lies outside the expected mosaic"
        );
        let a = bands
            .entry(band.to_string())
            .or_insert_with(|| Array3::from_elem((2, height, width), f32::NAN));
        for r in 0..h {
            for c in 0..w {
                let v = data[r * w + c];
                let missing = v.is_nan() || nodata.is_some_and(|nd| v == nd);
                a[[t, r0 + r, c0 + c]] = if missing { f32::NAN } else { v as f32 };
                cover += 1;
            }
        }
    }
    assert_eq!(
        cover,
        5 * 2 * (3 * 120 * 100 + 90 * 100),
        "the fixture tiles as described in fixtures/README.md"
    );
    Mosaic { bands }
}

fn band(name: &str) -> &'static Array3<f32> {
    &mosaic().bands[name]
}

/// NDVI by plain loops in f32.
fn ndvi_ref() -> &'static Array3<f32> {
    static N: OnceLock<Array3<f32>> = OnceLock::new();
    N.get_or_init(|| {
        let (r, n) = (band("red"), band("nir"));
        let mut out = Array3::from_elem(r.dim(), f32::NAN);
        for t in 0..2 {
            for y in 0..200 {
                for x in 0..240 {
                    let (rv, nv) = (r[[t, y, x]], n[[t, y, x]]);
                    out[[t, y, x]] = (nv - rv) / (nv + rv);
                }
            }
        }
        out
    })
}

/// A naive nan-aware reduction over `axis` (length 1 kept), with plain loops.
fn naive_reduce(a: &Array3<f32>, op: ReduceOp, axis: usize) -> Array3<f32> {
    let sh = [a.shape()[0], a.shape()[1], a.shape()[2]];
    let n = sh[axis];
    let mut osh = sh;
    osh[axis] = 1;
    let mut out = Array3::from_elem((osh[0], osh[1], osh[2]), f32::NAN);
    for i in 0..osh[0] {
        for j in 0..osh[1] {
            for k in 0..osh[2] {
                let mut v: Vec<f64> = Vec::new();
                for s in 0..n {
                    let mut idx = [i, j, k];
                    idx[axis] = s;
                    let x = a[idx];
                    if !x.is_nan() {
                        v.push(x as f64);
                    }
                }
                let c = v.len() as f64;
                let mean = v.iter().sum::<f64>() / c;
                out[[i, j, k]] = match op {
                    ReduceOp::Count => c as f32,
                    ReduceOp::Sum => v.iter().sum::<f64>() as f32,
                    _ if v.is_empty() => f32::NAN,
                    ReduceOp::Mean => mean as f32,
                    ReduceOp::Min => v.iter().cloned().fold(f64::INFINITY, f64::min) as f32,
                    ReduceOp::Max => v.iter().cloned().fold(f64::NEG_INFINITY, f64::max) as f32,
                    ReduceOp::Std => {
                        (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / c).sqrt() as f32
                    }
                    ReduceOp::Median => {
                        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                        let m = v.len();
                        if m % 2 == 1 {
                            v[m / 2] as f32
                        } else {
                            ((v[m / 2 - 1] + v[m / 2]) / 2.0) as f32
                        }
                    }
                };
            }
        }
    }
    out
}

fn window(a: &Array3<f32>, w: &[Range<usize>; 3]) -> Array3<f32> {
    a.slice(ndarray::s![w[0].clone(), w[1].clone(), w[2].clone()])
        .to_owned()
}

fn as3(v: &Values) -> Array3<f32> {
    v.as_array::<f32>()
        .unwrap_or_else(|| panic!("expected float32 values, got {:?}", v.dtype()))
        .clone()
        .into_dimensionality::<Ix3>()
        .expect("3-D values")
}

/// Assert `got` ≈ `want` elementwise (NaN where NaN), relative tolerance `tol`.
fn assert_close(got: &Array3<f32>, want: &Array3<f32>, tol: f32, ctx: &str) {
    assert_eq!(got.shape(), want.shape(), "{ctx}: shape");
    let mut bad = 0;
    let mut first = String::new();
    for ((idx, g), w) in got.indexed_iter().zip(want.iter()) {
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol * w.abs().max(1.0)
        };
        if !ok {
            bad += 1;
            if first.is_empty() {
                first = format!("first at {idx:?}: got {g}, want {w}");
            }
        }
    }
    assert_eq!(
        bad,
        0,
        "{ctx}: {bad} of {} values differ; {first}",
        want.len()
    );
}

fn lazy(cube: &Cube, bands: &[&str], chunks: &str) -> chunkcube::Dataset {
    cube.load(
        &Query::new()
            .measurements(bands)
            .chunks(ChunkSpec::parse(chunks).unwrap()),
    )
    .unwrap()
}

fn ndvi_of(ds: &chunkcube::Dataset) -> DataArray {
    let (red, nir) = (ds.get("red").unwrap(), ds.get("nir").unwrap());
    (&(nir - red) / &(nir + red)).rename("ndvi")
}

fn expected_keys(band: &str, w: &[Range<u64>; 3]) -> BTreeSet<String> {
    common::expected_keys(band, w, STORED)
}

fn expected_count(w: &[Range<u64>; 3]) -> u64 {
    common::expected_count(w, STORED)
}

fn open_fails(p: &Path, ctx: &str) {
    assert!(
        Cube::open(p.to_str().unwrap()).is_err(),
        "{ctx}: {} must not open as a complete cube",
        p.display()
    );
}

fn urange(w: &[Range<u64>; 3]) -> [Range<usize>; 3] {
    std::array::from_fn(|i| w[i].start as usize..w[i].end as usize)
}

// ---------------------------------------------------------------------------------------------
// NDVI and chunk reads
// ---------------------------------------------------------------------------------------------

#[test]
fn ndvi_equals_a_plain_loop_reference_without_wraparound() {
    let cube = fresh();
    let ds = lazy(&cube, &["red", "nir"], "time=1,y=64,x=64");
    let ndvi = ndvi_of(&ds);
    assert!(ndvi.is_lazy());
    assert_eq!(
        ndvi.dtype(),
        DType::F32,
        "integer bands are promoted to float32"
    );
    assert_eq!(
        cube.store().counters().snapshot().chunk_gets,
        0,
        "building the graph reads nothing"
    );
    let got = as3(&ndvi.compute().unwrap());
    let want = ndvi_ref();
    assert_close(&got, want, 1e-6, "ndvi");

    // Pixels where red > nir exist, and their NDVI is negative (no uint16 wrap-around).
    let (r, n) = (band("red"), band("nir"));
    let mut water = 0;
    for ((idx, rv), nv) in r.indexed_iter().zip(n.iter()) {
        if rv > nv {
            water += 1;
            let g = got[idx];
            assert!(
                (-1.0..0.0).contains(&g),
                "red {rv} > nir {nv} at {idx:?} gives ndvi {g}"
            );
        }
    }
    assert!(water > 1000, "the fixtures have red > nir pixels ({water})");
    let diff = as3(&(ds.get("nir").unwrap() - ds.get("red").unwrap())
        .compute()
        .unwrap());
    assert!(diff.iter().any(|v| *v < -1.0), "nir - red goes negative");
    assert!(diff.iter().all(|v| v.is_nan() || v.abs() < 65536.0));
    // Nodata (0 in either band, and the corner without a tile) is NaN.
    let nan_want = want.iter().filter(|v| v.is_nan()).count();
    assert!(
        nan_want > 100 * 30,
        "the uncovered corner and the holes are nodata"
    );
    assert_eq!(got.iter().filter(|v| v.is_nan()).count(), nan_want);
    assert!(got[[0, 199, 239]].is_nan() && got[[1, 150, 230]].is_nan());
    // Whole cube: each stored chunk of the two bands read once.
    assert_eq!(
        cube.store().counters().snapshot().chunk_gets,
        2 * 32,
        "{:?}",
        cube.store()
            .counters()
            .per_key()
            .values()
            .filter(|n| **n > 1)
            .count()
    );
}

#[test]
fn windows_read_exactly_two_bands_times_the_chunks_they_touch() {
    let windows: Vec<[Range<u64>; 3]> = vec![
        [0..1, 10..20, 10..20],
        [0..2, 60..70, 60..130],
        [1..2, 190..200, 200..240],
        [0..1, 64..128, 128..192],
        [1..2, 199..200, 0..1],
        [0..2, 0..200, 0..240],
    ];
    for w in windows {
        let want: BTreeSet<String> = expected_keys("red", &w)
            .into_iter()
            .chain(expected_keys("nir", &w))
            .collect();
        assert_eq!(want.len() as u64, 2 * expected_count(&w));
        for chunks in ["time=1,y=64,x=64", "time=1,y=50,x=50", "time=2,y=128,x=128"] {
            let ctx = format!("window {w:?} chunks {chunks}");
            // (a) selected in the query, (b) NDVI of the whole cube sliced afterwards.
            for how in ["query", "isel after math"] {
                let cube = fresh();
                let ndvi = if how == "query" {
                    let q = Query::new()
                        .measurements(&["red", "nir"])
                        .isel("time", w[0].clone())
                        .isel("y", w[1].clone())
                        .isel("x", w[2].clone());
                    ndvi_of(
                        &cube
                            .load(&q.chunks(ChunkSpec::parse(chunks).unwrap()))
                            .unwrap(),
                    )
                } else {
                    ndvi_of(&lazy(&cube, &["red", "nir"], chunks))
                        .isel(&[
                            ("time", w[0].clone()),
                            ("y", w[1].clone()),
                            ("x", w[2].clone()),
                        ])
                        .unwrap()
                };
                let got = as3(&ndvi.compute().unwrap());
                assert_close(
                    &got,
                    &window(ndvi_ref(), &urange(&w)),
                    1e-6,
                    &format!("{ctx} ({how})"),
                );
                let c = cube.store().counters();
                let per_key = c.per_key();
                let keys: BTreeSet<String> = per_key.keys().cloned().collect();
                assert_eq!(keys, want, "{ctx} ({how}): keys fetched");
                assert!(
                    per_key.values().all(|n| *n == 1),
                    "{ctx} ({how}): some key fetched twice: {per_key:?}"
                );
                assert_eq!(c.snapshot().chunk_gets, want.len() as u64, "{ctx} ({how})");
                assert_eq!(
                    cube.session().stats().chunks_read,
                    want.len() as u64,
                    "{ctx} ({how}): stats"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions and broadcasting
// ---------------------------------------------------------------------------------------------

fn tol(op: ReduceOp) -> f32 {
    match op {
        ReduceOp::Min | ReduceOp::Max | ReduceOp::Count => 0.0,
        _ => 2e-6,
    }
}

#[test]
fn every_reduction_over_time_matches_a_naive_loop() {
    let cube = fresh();
    let ds = lazy(&cube, &["red", "nir", "smad"], "time=1,y=64,x=64");
    let ndvi = ndvi_of(&ds);
    // NaNs of one step but not the other exist, and pixels NaN in both.
    let nr = ndvi_ref();
    let one = (0..200)
        .flat_map(|y| (0..240).map(move |x| (y, x)))
        .filter(|&(y, x)| nr[[0, y, x]].is_nan() != nr[[1, y, x]].is_nan())
        .count();
    let both = (0..200)
        .flat_map(|y| (0..240).map(move |x| (y, x)))
        .filter(|&(y, x)| nr[[0, y, x]].is_nan() && nr[[1, y, x]].is_nan())
        .count();
    assert!(
        one > 100 && both > 100,
        "fixtures: {one} pixels with one NaN step, {both} with two"
    );
    for op in ALL_REDUCTIONS {
        for (name, da, reference) in [
            ("ndvi", &ndvi, nr),
            ("red", ds.get("red").unwrap(), band("red")),
            ("smad", ds.get("smad").unwrap(), band("smad")),
        ] {
            let r = da.reduce(op, "time");
            assert_eq!(r.dims(), vec!["y", "x"], "{name} {op:?}");
            assert_eq!(r.dtype(), DType::F32);
            let got = as3(&r.compute().unwrap_or_else(|e| panic!("{name} {op:?}: {e}")));
            assert_close(
                &got,
                &naive_reduce(reference, op, 0),
                tol(op),
                &format!("{name} {op:?}(time)"),
            );
        }
    }
    // The named shortcuts are the same reductions.
    assert!(ndvi
        .mean("time")
        .compute()
        .unwrap()
        .equals(&ndvi.reduce(ReduceOp::Mean, "time").compute().unwrap()));
    assert!(ndvi
        .median("time")
        .compute()
        .unwrap()
        .equals(&ndvi.reduce(ReduceOp::Median, "time").compute().unwrap()));
}

#[test]
fn every_reduction_over_y_and_x_matches_a_naive_loop() {
    // Over a window crossing stored chunks, with query chunks that do not match them.
    let cube = fresh();
    let w = [0..2, 30..200, 100..170];
    let ds = cube
        .load(
            &Query::new()
                .measurements(&["red", "nir"])
                .isel("y", w[1].clone())
                .isel("x", w[2].clone())
                .chunks(ChunkSpec::parse("time=1,y=50,x=30").unwrap()),
        )
        .unwrap();
    let ndvi = ndvi_of(&ds);
    let reference = window(ndvi_ref(), &[0..2, 30..200, 100..170]);
    for op in ALL_REDUCTIONS {
        for (axis, dim) in [(1, "y"), (2, "x")] {
            let got = as3(&ndvi
                .reduce(op, dim)
                .compute()
                .unwrap_or_else(|e| panic!("{op:?}({dim}): {e}")));
            assert_close(
                &got,
                &naive_reduce(&reference, op, axis),
                tol(op),
                &format!("ndvi {op:?}({dim})"),
            );
        }
    }
    // Chained reductions: mean over time, then max over x.
    let got = as3(&ndvi
        .mean("time")
        .reduce(ReduceOp::Max, "x")
        .compute()
        .unwrap());
    let want = naive_reduce(
        &naive_reduce(&reference, ReduceOp::Mean, 0),
        ReduceOp::Max,
        2,
    );
    assert_close(&got, &want, 2e-6, "max_x(mean_time(ndvi))");
    let _ = w;
}

#[test]
fn broadcasting_against_a_reduced_dimension() {
    let cube = fresh();
    let ds = lazy(&cube, &["red", "nir"], "time=1,y=64,x=64");
    let ndvi = ndvi_of(&ds);
    let anomaly = &ndvi - &ndvi.mean("time");
    assert_eq!(anomaly.dims(), vec!["time", "y", "x"]);
    assert_eq!(anomaly.shape(), vec![2, 200, 240]);
    let nr = ndvi_ref();
    let mean = naive_reduce(nr, ReduceOp::Mean, 0);
    let mut want = nr.clone();
    for t in 0..2 {
        for y in 0..200 {
            for x in 0..240 {
                want[[t, y, x]] = nr[[t, y, x]] - mean[[0, y, x]];
            }
        }
    }
    assert_close(
        &as3(&anomaly.compute().unwrap()),
        &want,
        1e-6,
        "ndvi - ndvi.mean(time)",
    );
    // Either order, and sliced afterwards.
    let neg = &ndvi.mean("time") - &ndvi;
    assert_close(
        &as3(&neg.compute().unwrap()),
        &want.mapv(|v| -v),
        1e-6,
        "mean - ndvi",
    );
    let sub = anomaly
        .isel(&[("time", 1..2), ("y", 100..164), ("x", 3..90)])
        .unwrap();
    assert_close(
        &as3(&sub.compute().unwrap()),
        &window(&want, &[1..2, 100..164, 3..90]),
        1e-6,
        "anomaly sliced",
    );
    // Standardised: (ndvi - mean) / std, with std = 0 → ±inf or NaN as IEEE says.
    let z = &anomaly / &ndvi.reduce(ReduceOp::Std, "time");
    let std = naive_reduce(nr, ReduceOp::Std, 0);
    let got = as3(&z.compute().unwrap());
    for t in 0..2 {
        for y in (0..200).step_by(7) {
            for x in 0..240 {
                let w = want[[t, y, x]] / std[[0, y, x]];
                let g = got[[t, y, x]];
                assert!(
                    (w.is_nan() && g.is_nan())
                        || (w.is_infinite() && g == w)
                        || (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "z at {t},{y},{x}: got {g}, want {w}"
                );
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_threads_or_chunks() {
    let mut baseline: Option<Vec<Values>> = None;
    for threads in [1, 2] {
        for chunks in [
            "time=1,y=64,x=64",
            "time=1,y=50,x=70",
            "time=2,y=17,x=33",
            "time=-1,y=-1,x=-1",
            "time=1,y=128,x=128",
        ] {
            let cube = fresh_with(threads);
            assert_eq!(cube.session().threads(), threads);
            let ds = lazy(&cube, &["red", "nir"], chunks);
            let ndvi = ndvi_of(&ds);
            let outs: Vec<Values> = [
                ndvi.clone(),
                ndvi.mean("time"),
                ndvi.median("time"),
                ndvi.reduce(ReduceOp::Std, "time"),
                &ndvi - &ndvi.mean("time"),
                ndvi.reduce(ReduceOp::Sum, "y"),
                ndvi.where_(&ndvi.apply_scalar(BinaryOp::Gt, 0.2), &ndvi.scalar(-9.0)),
            ]
            .iter()
            .map(|d| {
                d.compute()
                    .unwrap_or_else(|e| panic!("threads {threads} chunks {chunks}: {e}"))
            })
            .collect();
            assert_close(
                &as3(&outs[0]),
                ndvi_ref(),
                1e-6,
                &format!("threads {threads} chunks {chunks}"),
            );
            match &baseline {
                None => baseline = Some(outs),
                Some(b) => {
                    for (i, (x, y)) in b.iter().zip(&outs).enumerate() {
                        assert!(x.equals(y), "result {i} with {threads} threads and chunks {chunks} differs from 1 thread with stored chunks");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise operations
// ---------------------------------------------------------------------------------------------

fn map2(a: &Array3<f32>, b: &Array3<f32>, f: impl Fn(f32, f32) -> f32) -> Array3<f32> {
    let mut o = a.clone();
    ndarray::Zip::from(&mut o)
        .and(b)
        .for_each(|x, &y| *x = f(*x, y));
    o
}

fn cmp(a: f32, b: f32, r: bool) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if r {
        1.0
    } else {
        0.0
    }
}

#[test]
fn where_clip_comparisons_and_friends() {
    let cube = fresh();
    let ds = lazy(&cube, &["red", "nir", "blue"], "time=1,y=50,x=50");
    let (red, nir, blue) = (
        ds.get("red").unwrap(),
        ds.get("nir").unwrap(),
        ds.get("blue").unwrap(),
    );
    let (r, n, b) = (band("red"), band("nir"), band("blue"));
    let ndvi = ndvi_of(&ds);
    let nr = ndvi_ref();
    let check = |da: DataArray, want: Array3<f32>, ctx: &str| {
        assert_close(
            &as3(&da.compute().unwrap_or_else(|e| panic!("{ctx}: {e}"))),
            &want,
            1e-6,
            ctx,
        );
    };
    check(
        nir.apply(BinaryOp::Gt, red),
        map2(n, r, |a, b| cmp(a, b, a > b)),
        "nir > red",
    );
    check(
        nir.gt(red),
        map2(n, r, |a, b| cmp(a, b, a > b)),
        "nir.gt(red)",
    );
    check(
        red.lt(nir),
        map2(r, n, |a, b| cmp(a, b, a < b)),
        "red.lt(nir)",
    );
    check(
        red.apply(BinaryOp::Ge, blue),
        map2(r, b, |a, b| cmp(a, b, a >= b)),
        "red >= blue",
    );
    check(
        red.apply(BinaryOp::Eq, red),
        map2(r, r, |a, b| cmp(a, b, a == b)),
        "red == red",
    );
    check(
        ndvi.apply_scalar(BinaryOp::Le, 0.0),
        nr.mapv(|v| cmp(v, 0.0, v <= 0.0)),
        "ndvi <= 0",
    );
    // where(cond, a, b): a where cond, else b; NaN where cond is NaN.
    let cond = nir.apply(BinaryOp::Gt, red);
    let w = ndvi.where_(&cond, &ndvi.scalar(-1.0));
    let want = map2(&map2(n, r, |a, b| cmp(a, b, a > b)), nr, |c, v| {
        if c.is_nan() {
            f32::NAN
        } else if c != 0.0 {
            v
        } else {
            -1.0
        }
    });
    check(w, want, "where(nir > red, ndvi, -1)");
    let w = red.where_(&ndvi.apply_scalar(BinaryOp::Lt, 0.0), blue);
    let want = map2(
        &map2(nr, r, |v, rv| {
            if v.is_nan() {
                f32::NAN
            } else if v < 0.0 {
                rv
            } else {
                -7777.0
            }
        }),
        b,
        |x, bv| if x == -7777.0 { bv } else { x },
    );
    check(w, want, "where(ndvi < 0, red, blue)");
    // clip keeps NaN.
    check(
        ndvi.clip(-0.2, 0.5),
        nr.mapv(|v| if v.is_nan() { v } else { v.clamp(-0.2, 0.5) }),
        "clip(ndvi, -0.2, 0.5)",
    );
    check(
        red.clip(500.0, 1500.0),
        r.mapv(|v| {
            if v.is_nan() {
                v
            } else {
                v.clamp(500.0, 1500.0)
            }
        }),
        "clip(red)",
    );
    check(ndvi.abs(), nr.mapv(f32::abs), "abs");
    check(nir.sqrt(), n.mapv(f32::sqrt), "sqrt(nir)");
    check(
        (nir - red).abs(),
        map2(n, r, |a, b| (a - b).abs()),
        "abs(nir - red)",
    );
    check(
        red.isnull(),
        r.mapv(|v| if v.is_nan() { 1.0 } else { 0.0 }),
        "isnull(red)",
    );
    check(
        ndvi.fillna(-2.0),
        nr.mapv(|v| if v.is_nan() { -2.0 } else { v }),
        "fillna",
    );
    check(
        &(&ndvi + 1.0) * 2.0,
        nr.mapv(|v| (v + 1.0) * 2.0),
        "(ndvi + 1) * 2",
    );
    check(1.0 - &ndvi, nr.mapv(|v| 1.0 - v), "1 - ndvi");
    check(-&ndvi, nr.mapv(|v| -v), "-ndvi");
    check(&ndvi / 0.0, nr.mapv(|v| v / 0.0), "ndvi / 0 (IEEE)");
    // Division by zero: (red - red) / (red - red) is NaN, red / (red - red) is +inf.
    check(red / &(red - red), r.mapv(|v| v / (v - v)), "red / 0");
    // Casts: integers round and saturate, missing becomes 0.
    let cast = (nir * 0.5).astype(DType::U16);
    assert_eq!(cast.dtype(), DType::U16);
    let v = cast.compute().unwrap();
    let got = v.as_array::<u16>().expect("uint16 values");
    for ((idx, g), nv) in got.indexed_iter().zip(n.iter()) {
        let want = if nv.is_nan() {
            0
        } else {
            (nv * 0.5).round().clamp(0.0, 65535.0) as u16
        };
        assert_eq!(*g, want, "astype(uint16) at {idx:?}");
    }
    let big = (nir * 100.0).astype(DType::U16).compute().unwrap();
    assert!(
        big.as_array::<u16>().unwrap().iter().any(|v| *v == 65535),
        "saturates"
    );
    // Mismatched grids or times are errors, not wrong data.
    let a = red.isel(&[("x", 0..100)]).unwrap();
    let b = red.isel(&[("x", 100..200)]).unwrap();
    let e = (&a - &b)
        .compute()
        .expect_err("different grids must not combine")
        .to_string();
    assert!(e.contains("grid"), "{e}");
    let a = red.isel(&[("time", 0..1)]).unwrap();
    let b = red.isel(&[("time", 1..2)]).unwrap();
    assert!(
        (&a - &b).compute().is_err(),
        "different times must not combine"
    );
    let a = red.isel(&[("y", 0..100)]).unwrap();
    assert!(
        (&a - red).compute().is_err(),
        "different shapes must not combine"
    );
}

// ---------------------------------------------------------------------------------------------
// Task graphs
// ---------------------------------------------------------------------------------------------

fn dot_renders(dot: &str, ctx: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("Graphviz `dot` is installed on this machine");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{ctx}: dot -Tsvg failed:\n{}\n--- DOT ---\n{dot}",
        String::from_utf8_lossy(&o.stderr)
    );
    let svg = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(svg.contains("<svg"), "{ctx}");
    svg
}

/// Labels of DOT box nodes naming stored chunk keys.
fn stored_keys_in_dot(dot: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in dot.split("label=\"").skip(1) {
        let label = &part[..part.find('"').unwrap_or(0)];
        if label.contains("/c/") {
            out.insert(label.to_string());
        }
    }
    out
}

#[test]
fn visualize_gives_dot_that_graphviz_renders() {
    let cube = fresh();
    // A small window: every task drawn, each stored chunk once.
    let w = [0..2, 60..70, 60..130];
    let q = Query::new()
        .measurements(&["red", "nir"])
        .isel("time", w[0].clone())
        .isel("y", w[1].clone())
        .isel("x", w[2].clone());
    let ndvi = ndvi_of(
        &cube
            .load(&q.chunks(ChunkSpec::parse("time=1,y=64,x=64").unwrap()))
            .unwrap(),
    );
    for (name, da) in [
        ("ndvi", ndvi.clone()),
        ("mean", ndvi.mean("time")),
        ("anomaly", &ndvi - &ndvi.mean("time")),
        (
            "where",
            ndvi.where_(&ndvi.apply_scalar(BinaryOp::Gt, 0.0), &ndvi.scalar(0.0))
                .clip(0.0, 1.0),
        ),
    ] {
        let dot = da.visualize();
        assert!(dot.trim_start().starts_with("digraph"), "{name}: {dot}");
        dot_renders(&dot, name);
        let want: BTreeSet<String> = expected_keys("red", &w)
            .into_iter()
            .chain(expected_keys("nir", &w))
            .collect();
        assert_eq!(
            stored_keys_in_dot(&dot),
            want,
            "{name}: the stored chunks drawn"
        );
    }
    assert!(ndvi.visualize().contains("truediv"));
    assert!(ndvi.mean("time").visualize().contains("mean"));
    assert_eq!(
        cube.store().counters().snapshot().chunk_gets,
        0,
        "visualize reads nothing"
    );
    // A graph of many output chunks is summarised and still renders.
    let big = ndvi_of(&lazy(&cube, &["red", "nir"], "time=1,y=16,x=16"));
    let dot = big.visualize();
    dot_renders(&dot, "summarised");
    assert!(
        dot.len() < 20_000,
        "a summarised graph stays small ({} bytes)",
        dot.len()
    );
}

#[test]
fn cli_graph_writes_dot_and_svg() {
    let tmp = tempfile::tempdir().unwrap();
    let dot = tmp.path().join("g.dot");
    let svg = tmp.path().join("g.svg");
    let out = tmp.path().join("out");
    run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        NDVI,
        "--isel",
        "y=0:100,x=0:100",
        "--graph",
        dot.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let text = std::fs::read_to_string(&dot).unwrap();
    dot_renders(&text, "--graph g.dot");
    assert_eq!(
        stored_keys_in_dot(&text),
        expected_keys("red", &[0..2, 0..100, 0..100])
            .into_iter()
            .chain(expected_keys("nir", &[0..2, 0..100, 0..100]))
            .collect()
    );
    Cube::open(out.to_str().unwrap()).expect("--graph with --out also writes the cube");
    run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        NDVI,
        "--expr",
        "m=mean(ndvi, time)",
        "--reduce",
        "max:x",
        "--graph",
        svg.to_str().unwrap(),
    ]);
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.contains("<svg"), "--graph .svg renders through dot");
}

// ---------------------------------------------------------------------------------------------
// chunkcube calc
// ---------------------------------------------------------------------------------------------

/// Open a result cube and read one variable whole as `[t, y, x]` float32.
fn read_back(out: &Path, name: &str) -> (Cube, Array3<f32>) {
    let c = Cube::open(out.to_str().unwrap())
        .unwrap_or_else(|e| panic!("{} does not open: {e}", out.display()));
    let ds = c.load(&Query::new().measurements(&[name])).unwrap();
    let v = as3(ds.get(name).unwrap().values().unwrap());
    (c, v)
}

fn same_values(a: &Array3<f32>, b: &Array3<f32>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

#[test]
fn cli_calc_out_equals_the_library_result() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ndvi");
    let stats = tmp.path().join("s.json");
    run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        NDVI,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--threads",
        "2",
        "--stats",
        stats.to_str().unwrap(),
    ]);
    let (c, got) = read_back(&out, "ndvi");
    let lib = as3(
        &ndvi_of(&lazy(&fresh(), &["red", "nir"], "time=1,y=64,x=64"))
            .compute()
            .unwrap(),
    );
    assert!(
        same_values(&got, &lib),
        "the CLI result equals the library result"
    );
    assert_close(&got, ndvi_ref(), 1e-6, "calc --out ndvi");
    let src = fresh();
    assert_eq!(c.meta().geobox.transform, src.meta().geobox.transform);
    assert!(chunkcube::geo::same_crs(
        &c.meta().geobox.wkt,
        &src.meta().geobox.wkt
    ));
    assert_eq!(c.meta().geobox.epsg, Some(6933));
    assert_eq!(c.meta().times, vec![DAY_2019, DAY_2020]);
    assert_eq!(c.band_names(), vec!["ndvi".to_string()]);
    assert!(
        c.band("ndvi").unwrap().nodata().unwrap().is_nan(),
        "fill value NaN"
    );
    let s = common::read_stats(&stats);
    assert_eq!(s["chunks_read"], 64, "two bands x 32 stored chunks: {s}");
    assert_eq!(s["chunks_written"], 32, "{s}");

    // A window with a selection, printed.
    let o = run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        NDVI,
        "--isel",
        "time=1:2,y=97:100,x=88:92",
        "--print",
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    // Rows: the y coordinate, then 4 values.
    let rows: Vec<Vec<f32>> = text
        .lines()
        .filter(|l| {
            l.split_whitespace().count() == 5
                && l.split_whitespace().all(|t| t.parse::<f32>().is_ok())
        })
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(|t| t.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 3, "3 rows of 4 values:\n{text}");
    let want = window(ndvi_ref(), &[1..2, 97..100, 88..92]);
    for (y, row) in rows.iter().enumerate() {
        for (x, v) in row.iter().enumerate() {
            let w = want[[0, y, x]];
            assert!(
                (v.is_nan() && w.is_nan()) || (v - w).abs() <= 1e-6,
                "printed {v} at {y},{x}, want {w}\n{text}"
            );
        }
    }
}

#[test]
fn cli_calc_several_exprs_use_earlier_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("multi");
    run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        "d=nir-red",
        "--expr",
        "s=nir+red",
        "--expr",
        "ndvi=d/s",
        "--expr",
        "anom=ndvi-mean(ndvi, time)",
        "--expr",
        "veg=where(ndvi > 0.3, 1, 0)",
        "--isel",
        "y=20:180,x=10:230",
        "--chunks",
        "time=1,y=40,x=55",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let (r, n) = (band("red"), band("nir"));
    let w = [0..2, 20..180, 10..230];
    let nr = window(ndvi_ref(), &w);
    let (c, d) = read_back(&out, "d");
    assert_eq!(
        c.band_names(),
        ["anom", "d", "ndvi", "s", "veg"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    assert_close(&d, &window(&map2(n, r, |a, b| a - b), &w), 0.0, "d");
    assert_close(
        &read_back(&out, "s").1,
        &window(&map2(n, r, |a, b| a + b), &w),
        0.0,
        "s",
    );
    assert_close(&read_back(&out, "ndvi").1, &nr, 1e-6, "ndvi from d and s");
    let mean = naive_reduce(&nr, ReduceOp::Mean, 0);
    let mut anom = nr.clone();
    for ((t, y, x), v) in anom.indexed_iter_mut() {
        let _ = t;
        *v -= mean[[0, y, x]];
    }
    assert_close(&read_back(&out, "anom").1, &anom, 1e-6, "anom");
    assert_close(
        &read_back(&out, "veg").1,
        &nr.mapv(|v| {
            if v.is_nan() {
                f32::NAN
            } else if v > 0.3 {
                1.0
            } else {
                0.0
            }
        }),
        0.0,
        "veg",
    );
    assert_eq!(c.meta().geobox.transform[0], 2316000.0 + 10.0 * 10.0);
    assert_eq!(c.meta().geobox.transform[3], -2500000.0 - 20.0 * 10.0);
}

#[test]
fn cli_calc_reduce_mean_time() {
    let tmp = tempfile::tempdir().unwrap();
    for op in ["mean", "median", "min", "max", "sum", "count", "std"] {
        let out = tmp.path().join(op);
        run_ok(&[
            "calc",
            cube_str(),
            "--expr",
            NDVI,
            "--reduce",
            &format!("{op}:time"),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        let (c, got) = read_back(&out, "ndvi");
        assert_eq!(c.meta().times.len(), 1, "{op}: one time step left");
        assert_eq!(got.shape(), &[1, 200, 240]);
        let rop = ReduceOp::parse(op).unwrap();
        assert_close(
            &got,
            &naive_reduce(ndvi_ref(), rop, 0),
            tol(rop),
            &format!("calc --reduce {op}:time"),
        );
        if op == "mean" {
            let lib = as3(
                &ndvi_of(&lazy(&fresh(), &["red", "nir"], "time=1,y=64,x=64"))
                    .mean("time")
                    .compute()
                    .unwrap(),
            );
            assert!(
                same_values(&got, &lib),
                "CLI --reduce mean:time equals the library's mean(\"time\")"
            );
        }
    }
    // Over y, for a window.
    let out = tmp.path().join("y");
    run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        NDVI,
        "--isel",
        "x=0:50",
        "--reduce",
        "max:y",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let (_, got) = read_back(&out, "ndvi");
    assert_close(
        &got,
        &naive_reduce(
            &window(ndvi_ref(), &[0..2, 0..200, 0..50]),
            ReduceOp::Max,
            1,
        ),
        0.0,
        "--reduce max:y",
    );
}

#[test]
fn cli_calc_bad_input_is_one_clear_error_and_leaves_no_cube() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let c = cube_str();
    // Unknown band: named.
    let line = run_err(&["calc", c, "--expr", "x=nir-swir16", "--out", o]);
    assert!(line.contains("swir16"), "{line}");
    open_fails(&out, "unknown band");
    // Syntax errors: the column shown.
    let line = run_err(&["calc", c, "--expr", "ndvi=(nir-red)/(nir+", "--out", o]);
    assert!(line.contains("column 21"), "{line}");
    open_fails(&out, "syntax error");
    let line = run_err(&["calc", c, "--expr", "ndvi=nir $ red", "--out", o]);
    assert!(line.contains("column 10"), "{line}");
    let line = run_err(&["calc", c, "--expr", "ndvi=(nir-red", "--out", o]);
    assert!(line.contains("column"), "{line}");
    // (An unnamed expression is named 'result', see cli.rs; a bad name is refused.)
    let line = run_err(&["calc", c, "--expr", "1x=nir-red", "--out", o]);
    assert!(line.contains("'1x' is not a valid result name"), "{line}");
    run_err(&["calc", c, "--expr", "ndvi=nosuchfn(nir)", "--out", o]);
    open_fails(&out, "syntax errors");
    // Reductions over an unknown dimension.
    let line = run_err(&[
        "calc",
        c,
        "--expr",
        NDVI,
        "--reduce",
        "mean:band",
        "--out",
        o,
    ]);
    assert!(line.contains("band"), "{line}");
    let line = run_err(&[
        "calc",
        c,
        "--expr",
        NDVI,
        "--reduce",
        "average:time",
        "--out",
        o,
    ]);
    assert!(line.contains("average"), "{line}");
    let line = run_err(&["calc", c, "--expr", "m=mean(nir, band)", "--out", o]);
    assert!(line.contains("band"), "{line}");
    // A reduced dimension cannot be reduced again.
    run_err(&[
        "calc",
        c,
        "--expr",
        "m=mean(nir, time)",
        "--reduce",
        "mean:time",
        "--out",
        o,
    ]);
    open_fails(&out, "unknown dimension");
    // Results of different shapes cannot share one cube.
    run_err(&[
        "calc",
        c,
        "--expr",
        "a=nir",
        "--expr",
        "m=mean(nir, time)",
        "--out",
        o,
    ]);
    open_fails(&out, "mixed shapes");
    // No action.
    run_err(&["calc", c, "--expr", NDVI]);
    // Selection errors.
    run_err(&["calc", c, "--expr", NDVI, "--isel", "x=0:999", "--out", o]);
    run_err(&["calc", c, "--expr", NDVI, "--chunks", "x=0", "--out", o]);
    open_fails(&out, "selection errors");
}

#[test]
fn library_reduce_over_an_unknown_dimension_is_an_error() {
    let cube = fresh();
    let ndvi = ndvi_of(&lazy(&cube, &["red", "nir"], "time=1,y=64,x=64"));
    for dim in ["band", "wavelength", ""] {
        let e = ndvi
            .reduce(ReduceOp::Mean, dim)
            .compute()
            .err()
            .unwrap_or_else(|| panic!("reduce over '{dim}' computed"));
        assert!(e.to_string().contains(&format!("'{dim}'")), "{e}");
    }
    // lat is y's name in geographic stores: an alias, not an unknown dimension.
    let by_lat = ndvi.reduce(ReduceOp::Mean, "lat").compute().unwrap();
    let by_y = ndvi.reduce(ReduceOp::Mean, "y").compute().unwrap();
    assert!(by_lat == by_y, "mean over lat is mean over y");
    let m = ndvi.mean("time");
    assert!(
        m.mean("time").compute().is_err(),
        "time is gone after mean(time)"
    );
    assert!(m.isel(&[("time", 0..1)]).is_err());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    assert!(ndvi
        .reduce(ReduceOp::Max, "band")
        .to_zarr(out.to_str().unwrap(), false)
        .is_err());
    open_fails(&out, "to_zarr of an invalid graph");
}

#[test]
fn memory_limit_below_one_task_says_the_minimum_and_that_minimum_works() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    // Written to a cube, or computed into memory and printed (the result counts too).
    for (extra, print) in [
        (vec![], false),
        (vec!["--reduce", "median:time"], false),
        (vec!["--chunks", "time=1,y=200,x=240"], false),
        (vec!["--reduce", "median:time"], true),
        (vec![], true),
    ] {
        let dest: Vec<&str> = if print {
            vec!["--print"]
        } else {
            vec!["--out", o]
        };
        let mut args = vec!["calc", cube_str(), "--expr", NDVI, "--memory-limit", "1KiB"];
        args.extend(dest.iter().copied());
        args.push("--quiet");
        args.extend(extra.iter().copied());
        let line = run_err(&args);
        assert!(line.contains("--memory-limit"), "{line}");
        open_fails(&out, "memory limit");
        // "use at least N kB ...": that minimum must be enough.
        let min = common::stated_minimum(&line);
        assert!(
            chunkcube::store::parse_bytes(&min).is_some(),
            "the minimum '{min}' is a size the CLI accepts: {line}"
        );
        let mut args = vec!["calc", cube_str(), "--expr", NDVI, "--memory-limit", &min];
        args.extend(dest.iter().copied());
        args.extend(["--quiet", "--overwrite"]);
        args.extend(extra.iter().copied());
        let r = run(&args);
        assert!(
            r.status.success(),
            "with the stated minimum --memory-limit {min} the run should succeed ({extra:?}, print {print})\n{}",
            show(&r)
        );
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn an_existing_output_is_refused_without_overwrite_and_kept_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    run_ok(&["calc", cube_str(), "--expr", NDVI, "--out", o, "--quiet"]);
    let (_, before) = read_back(&out, "ndvi");
    let listing = |p: &Path| {
        let mut v = Vec::new();
        fn walk(p: &Path, v: &mut Vec<(PathBuf, u64)>) {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), v);
                } else {
                    v.push((e.path(), e.metadata().unwrap().len()));
                }
            }
        }
        walk(p, &mut v);
        v.sort();
        v
    };
    let files = listing(&out);
    for args in [
        vec![
            "calc",
            cube_str(),
            "--expr",
            "d=nir-red",
            "--out",
            o,
            "--quiet",
        ],
        vec![
            "calc",
            cube_str(),
            "--expr",
            NDVI,
            "--isel",
            "y=0:10",
            "--out",
            o,
            "--quiet",
        ],
        vec![
            "load",
            cube_str(),
            "--measurements",
            "red",
            "--out",
            o,
            "--quiet",
        ],
    ] {
        let line = run_err(&args);
        assert!(line.contains("--overwrite") && line.contains(o), "{line}");
        assert_eq!(listing(&out), files, "the old cube is untouched");
        let (c, after) = read_back(&out, "ndvi");
        assert!(same_values(&before, &after));
        assert_eq!(c.band_names(), vec!["ndvi".to_string()]);
    }
    // A failure with --overwrite before anything is computed keeps the old cube as well.
    run_err(&[
        "calc",
        cube_str(),
        "--expr",
        "ndvi=(nir-red",
        "--out",
        o,
        "--overwrite",
        "--quiet",
    ]);
    assert_eq!(listing(&out), files);
    // With --overwrite it is replaced.
    run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        "d=nir-red",
        "--out",
        o,
        "--overwrite",
        "--quiet",
    ]);
    let (c, d) = read_back(&out, "d");
    assert_eq!(c.band_names(), vec!["d".to_string()]);
    assert_close(
        &d,
        &map2(band("nir"), band("red"), |a, b| a - b),
        0.0,
        "overwritten",
    );
    // The library refuses too.
    let ndvi = ndvi_of(&lazy(&fresh(), &["red", "nir"], "time=1,y=64,x=64"));
    let e = ndvi
        .to_zarr(o, false)
        .expect_err("to_zarr onto an existing cube without overwrite");
    assert!(e.to_string().contains("overwrite"), "{e}");
    assert_eq!(Cube::open(o).unwrap().band_names(), vec!["d".to_string()]);
    ndvi.to_zarr(o, true).unwrap();
    let (_, got) = read_back(&out, "ndvi");
    assert_close(&got, ndvi_ref(), 1e-6, "to_zarr overwrite");
}

#[test]
fn persist_and_load_keep_results_and_read_each_chunk_once() {
    let cube = fresh();
    let ds = lazy(&cube, &["red", "nir"], "time=1,y=50,x=50");
    let mut ndvi = ndvi_of(&ds);
    ndvi.persist().unwrap();
    assert!(ndvi.is_lazy(), "persist keeps the array lazy");
    assert_eq!(
        cube.store().counters().snapshot().chunk_gets,
        64,
        "persist computes once, each stored chunk read once"
    );
    cube.store().counters().reset();
    // Later computations read the persisted result, not the store.
    assert_close(
        &as3(&ndvi.compute().unwrap()),
        ndvi_ref(),
        1e-6,
        "persisted ndvi",
    );
    let sub = ndvi
        .isel(&[("time", 1..2), ("y", 33..140), ("x", 7..99)])
        .unwrap();
    assert_close(
        &as3(&sub.compute().unwrap()),
        &window(ndvi_ref(), &[1..2, 33..140, 7..99]),
        1e-6,
        "persisted window",
    );
    let anomaly = &ndvi - &ndvi.mean("time");
    let mean = naive_reduce(ndvi_ref(), ReduceOp::Mean, 0);
    let mut want = ndvi_ref().clone();
    for ((_, y, x), v) in want.indexed_iter_mut() {
        *v -= mean[[0, y, x]];
    }
    assert_close(
        &as3(&anomaly.compute().unwrap()),
        &want,
        1e-6,
        "anomaly of persisted ndvi",
    );
    assert_eq!(
        cube.store().counters().snapshot().chunk_gets,
        0,
        "nothing re-read from the store after persist"
    );
    // load() keeps values, compute() does not.
    let mut m = ndvi.mean("time");
    let v = m.compute().unwrap();
    assert!(m.is_lazy());
    m.load().unwrap();
    assert!(!m.is_lazy() && m.values().unwrap().equals(&v));
}

/// A copy of the fixtures cube in `tmp` with one bit flipped in the middle of `key`.
fn corrupt_copy(tmp: &Path, key: &str) -> PathBuf {
    let src = tmp.join("cube");
    copy_dir(cube_path(), &src);
    let p = src.join(key);
    let mut b = std::fs::read(&p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0xff;
    std::fs::write(&p, b).unwrap();
    src
}

#[test]
fn a_corrupt_chunk_mid_computation_fails_naming_the_key_and_leaves_no_cube() {
    let tmp = tempfile::tempdir().unwrap();
    let key = "nir/c/1/2/3";
    let src = corrupt_copy(tmp.path(), key);
    let srcs = src.to_str().unwrap();
    let out = tmp.path().join("out");
    let outs = out.to_str().unwrap();
    // Several runs: the error reported must be the failing chunk's, never another task's
    // "cancelled", whichever task happens to notice the cancellation first.
    let mut lines = Vec::new();
    for extra in [
        vec![],
        vec!["--reduce", "mean:time"],
        vec!["--reduce", "median:time"],
        vec!["--reduce", "mean:time"],
        vec![],
    ] {
        let mut args = vec![
            "calc",
            srcs,
            "--expr",
            NDVI,
            "--out",
            outs,
            "--quiet",
            "--threads",
            "2",
        ];
        args.extend(extra.iter().copied());
        lines.push((extra.clone(), run_err(&args)));
        open_fails(&out, "corrupt chunk");
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec![
            "calc",
            srcs,
            "--expr",
            NDVI,
            "--print-all",
            "--threads",
            "2",
        ];
        args.extend(extra.iter().copied());
        lines.push((extra, run_err(&args)));
    }
    let bad: Vec<_> = lines.iter().filter(|(_, l)| !l.contains(key)).collect();
    assert!(
        bad.is_empty(),
        "the error must name the key '{key}'; {} of {} runs did not: {bad:?}",
        bad.len(),
        lines.len()
    );
    // Over an existing cube with --overwrite: the old one must not look complete unless it
    // is still the old, complete result (never a mix).
    let old = tmp.path().join("old");
    let olds = old.to_str().unwrap();
    run_ok(&["calc", cube_str(), "--expr", NDVI, "--out", olds, "--quiet"]);
    run_err(&[
        "calc",
        srcs,
        "--expr",
        NDVI,
        "--out",
        olds,
        "--quiet",
        "--overwrite",
    ]);
    if let Ok(c) = Cube::open(olds) {
        let ds = c.load(&Query::new()).unwrap();
        assert_close(
            &as3(ds.get("ndvi").unwrap().values().unwrap()),
            ndvi_ref(),
            1e-6,
            "an old cube that still opens must be the old, complete result",
        );
    }
    // Library: the error names the key, no panic.
    for i in 0..10 {
        let cube = Cube::open_with(srcs, cfg(2)).unwrap();
        let ndvi = ndvi_of(&lazy(&cube, &["red", "nir"], "time=1,y=50,x=50"));
        let e = ndvi.mean("time").compute().expect_err("corrupt chunk");
        assert!(e.to_string().contains(key), "run {i}: {e}");
    }
    // Windows not touching it are fine.
    let cube = Cube::open_with(srcs, cfg(2)).unwrap();
    let ndvi = ndvi_of(&lazy(&cube, &["red", "nir"], "time=1,y=50,x=50"));
    let ok = ndvi.isel(&[("y", 0..100)]).unwrap().compute().unwrap();
    assert_close(
        &as3(&ok),
        &window(ndvi_ref(), &[0..2, 0..100, 0..240]),
        1e-6,
        "untouched window",
    );
}

#[test]
fn a_failing_computation_does_not_cancel_another_on_the_same_session() {
    let tmp = tempfile::tempdir().unwrap();
    let key = "nir/c/1/2/3";
    let src = corrupt_copy(tmp.path(), key);
    let cube = Cube::open_with(src.to_str().unwrap(), cfg(2)).unwrap();
    let want = window(ndvi_ref(), &[0..2, 0..100, 0..240]);
    // Several rounds: the failing run stops its own tasks at its first error, while the
    // other run (many small tasks on the same workers) is in full swing.
    for round in 0..10 {
        let good = ndvi_of(&lazy(&cube, &["red", "nir"], "time=1,y=8,x=8"))
            .isel(&[("y", 0..100)])
            .unwrap();
        let bad = ndvi_of(&lazy(&cube, &["red", "nir"], "time=1,y=64,x=64"))
            .isel(&[("time", 1..2), ("y", 128..192)])
            .unwrap();
        std::thread::scope(|sc| {
            let before = cube.session().stats().tasks;
            let other = sc.spawn(|| good.compute());
            while cube.session().stats().tasks < before + 8 && !other.is_finished() {
                std::thread::yield_now();
            }
            let e = bad.compute().expect_err("the corrupt chunk fails its run");
            assert!(e.to_string().contains(key), "round {round}: {e}");
            let v = other
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: the other run was stopped: {e}"));
            assert_close(&as3(&v), &want, 1e-6, "the other run's values");
        });
    }
}

#[test]
fn cli_calc_selection_explain_and_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let stats = tmp.path().join("s.json");
    let st = stats.to_str().unwrap();
    // A window given as a native box and a time range: rows 60..70, cols 60..130, 2020 only.
    let bbox = "2316601,-2500699,2317299,-2500601";
    let w = [1..2u64, 60..70u64, 60..130u64];
    let keys = 2 * expected_count(&w);
    // --explain: the stored chunks of both bands, nothing read.
    let o = run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        NDVI,
        "--bbox",
        bbox,
        "--time",
        "2020-01-01/2020-12-31",
        "--explain",
        "--stats",
        st,
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("stored chunks"))
        .unwrap_or_else(|| panic!("no stored chunks line:\n{text}"));
    let n: u64 = line
        .split_whitespace()
        .find_map(|t| t.parse().ok())
        .unwrap();
    assert_eq!(n, keys, "{line}");
    assert_eq!(
        common::read_stats(&stats)["chunks_read"],
        0,
        "--explain reads nothing"
    );
    // --out: exactly those chunks read, the right values, coordinates and time.
    let out = tmp.path().join("out");
    run_ok(&[
        "calc",
        cube_str(),
        "--expr",
        NDVI,
        "--bbox",
        bbox,
        "--time",
        "2020-01-01/2020-12-31",
        "--chunks",
        "time=1,y=5,x=20",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--stats",
        st,
    ]);
    assert_eq!(
        common::read_stats(&stats)["chunks_read"],
        keys,
        "2 bands x the chunks the window touches"
    );
    let (c, got) = read_back(&out, "ndvi");
    assert_close(
        &got,
        &window(ndvi_ref(), &urange(&w)),
        1e-6,
        "calc --bbox --time",
    );
    assert_eq!(c.meta().times, vec![DAY_2020]);
    assert_eq!(c.meta().geobox.transform[0], 2316000.0 + 600.0);
    assert_eq!(c.meta().geobox.transform[3], -2500000.0 - 600.0);
    assert_eq!((c.meta().geobox.width, c.meta().geobox.height), (70, 10));
    // Broadcasting over a reduced y as well as time.
    let cube = fresh();
    let ndvi = ndvi_of(&lazy(&cube, &["red", "nir"], "time=1,y=64,x=64"));
    let got = as3(&(&ndvi - &ndvi.mean("y")).compute().unwrap());
    let nr = ndvi_ref();
    let my = naive_reduce(nr, ReduceOp::Mean, 1);
    let mut want = nr.clone();
    for ((t, _, x), v) in want.indexed_iter_mut() {
        *v -= my[[t, 0, x]];
    }
    assert_close(&got, &want, 1e-5, "ndvi - ndvi.mean(y)");
    let _ = DAY_2019;
}

/// Read a result variable whole as float64, checking that it was written as float64.
fn read_back_f64(out: &Path, name: &str) -> ndarray::ArrayD<f64> {
    let c = Cube::open(out.to_str().unwrap()).unwrap();
    assert_eq!(
        c.band(name).unwrap().dtype(),
        DType::F64,
        "{name} is float64"
    );
    common::load_band::<f64>(out, name)
}

#[test]
fn float64_on_request_keeps_precision_that_float32_loses() {
    // nir * 100003 - nir * 100002 is nir exactly in float64 (products below 2^53); in float32
    // the products (up to 1e9) round to multiples of 64, so the difference is off for most
    // pixels. The float32 run shows that this check can fail.
    let tmp = tempfile::tempdir().unwrap();
    let nir = band("nir");
    let run_expr = |name: &str, exprs: &[&str], extra: &[&str]| -> PathBuf {
        let out = tmp.path().join(name);
        let mut args = vec!["calc", cube_str()];
        for e in exprs {
            args.extend(["--expr", e]);
        }
        args.extend(extra);
        args.extend(["--out", out.to_str().unwrap(), "--quiet"]);
        run_ok(&args);
        out
    };
    let out64 = run_expr("f64", &["d=float64(nir)*100003 - float64(nir)*100002"], &[]);
    let got = read_back_f64(&out64, "d");
    let mut valid = 0;
    for ((t, y, x), &want) in nir.indexed_iter() {
        let g = got[[t, y, x]];
        if want.is_nan() {
            assert!(g.is_nan(), "nodata stays NaN at {t},{y},{x}: {g}");
        } else {
            valid += 1;
            assert_eq!(g, want as f64, "float64 result at {t},{y},{x}");
        }
    }
    assert!(valid > 1000, "{valid} valid pixels");

    let out32 = run_expr("f32", &["d=nir*100003 - nir*100002"], &[]);
    let (_, got32) = read_back(&out32, "d");
    let off = nir
        .iter()
        .zip(got32.iter())
        .filter(|(w, g)| !w.is_nan() && *w != *g)
        .count();
    assert!(
        off * 2 > valid,
        "float32 loses precision on {off} of {valid} pixels (the float64 check is not vacuous)"
    );

    // Persisted float64 intermediates (a later --expr reuses an earlier name) and a float64
    // reduction: the median over time of d is the median of nir, exactly.
    let out_med = run_expr(
        "f64med",
        &["a=float64(nir)*100003", "d=a - float64(nir)*100002"],
        &["--reduce", "median:time"],
    );
    let got = read_back_f64(&out_med, "d");
    for ((y, x), _) in nir.index_axis(ndarray::Axis(0), 0).indexed_iter() {
        let mut v: Vec<f64> = (0..nir.shape()[0])
            .map(|t| nir[[t, y, x]])
            .filter(|v| !v.is_nan())
            .map(f64::from)
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let want = match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        let g = got[[0, y, x]];
        assert!(
            (g.is_nan() && want.is_nan()) || g == want,
            "median of d at {y},{x}: {g}, want {want}"
        );
    }

    // The library: astype(F64) computes in float64 and returns float64 values.
    let ds = lazy(&fresh(), &["nir"], "time=1,y=64,x=64");
    let n = ds.get("nir").unwrap().astype(DType::F64);
    let d = &(&n * 100003.0) - &(&n * 100002.0);
    let v = d.compute().unwrap();
    let a = v.as_array::<f64>().expect("float64 values");
    for ((t, y, x), &want) in nir.indexed_iter() {
        let g = a[[t, y, x]];
        assert!(
            (g.is_nan() && want.is_nan()) || g == want as f64,
            "library float64 at {t},{y},{x}: {g} vs {want}"
        );
    }
}
