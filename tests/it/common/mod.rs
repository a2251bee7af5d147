//! Helpers shared by the integration tests (the `common` module of the one test binary).
//!
//! - running the `chunkcube` binary and checking the one-line error contract;
//! - ingesting the committed fixtures;
//! - an INDEPENDENT reference mosaic of source tiles, read with the `gdal` crate alone (no
//!   chunkcube code), to compare cube pixels against;
//! - writing small GeoTIFFs for bad-input and overlap tests;
//! - comparing two store directories byte for byte.
//!
//! Not every test file uses every helper.

pub mod output;
pub mod python;

use gdal::raster::{Buffer, GdalType, RasterCreationOptions};
use gdal::spatial_ref::SpatialRef;
use gdal::DriverManager;
use ndarray::Array2;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

// ---------------------------------------------------------------------------
// Paths and the binary

/// The crate root.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed fixtures folder (`fixtures/`).
pub fn fixtures_dir() -> PathBuf {
    crate_dir().join("fixtures")
}

/// `fixtures/manifest.csv`.
pub fn fixtures_manifest() -> PathBuf {
    fixtures_dir().join("manifest.csv")
}

/// The `chunkcube` binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chunkcube"))
}

/// Run `chunkcube ARGS...`; returns (status, stdout, stderr). stderr is not a terminal, so
/// no progress bar is drawn.
pub fn run<I, S>(args: I) -> (ExitStatus, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let o = Command::new(bin())
        .args(args)
        .output()
        .expect("cannot run the chunkcube binary");
    (
        o.status,
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Render a command and its result for assertion messages.
pub fn describe<S: AsRef<OsStr>>(
    args: &[S],
    status: &ExitStatus,
    stdout: &str,
    stderr: &str,
) -> String {
    let cmd: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    format!(
        "chunkcube {}\nstatus: {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        cmd.join(" ")
    )
}

/// Run and require success; returns (stdout, stderr).
pub fn run_ok<S: AsRef<OsStr>>(args: &[S]) -> (String, String) {
    let (st, out, err) = run(args);
    assert!(
        st.success(),
        "expected success\n{}",
        describe(args, &st, &out, &err)
    );
    (out, err)
}

/// Run and require the error contract: exit status 1 and exactly one stderr line, starting
/// with `error: `, that contains every string of `culprits` (case-insensitive). Returns that line.
pub fn run_err<S: AsRef<OsStr>>(args: &[S], culprits: &[&str]) -> String {
    let (st, out, err) = run(args);
    let ctx = describe(args, &st, &out, &err);
    assert!(!st.success(), "expected failure\n{ctx}");
    assert_eq!(st.code(), Some(1), "expected exit status 1\n{ctx}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected exactly one stderr line\n{ctx}");
    let line = lines[0];
    eprintln!("[run_err] {line}");
    assert!(
        line.starts_with("error: "),
        "the stderr line must start with 'error: '\n{ctx}"
    );
    let lower = line.to_lowercase();
    for c in culprits {
        assert!(
            lower.contains(&c.to_lowercase()),
            "the error line must name {c:?}\n{ctx}"
        );
    }
    line.to_string()
}

/// Path as a `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------------
// Ingesting the fixtures

/// `chunkcube ingest --manifest fixtures/manifest.csv --out OUT --chunks CHUNKS --quiet`;
/// panics unless it succeeds.
pub fn ingest_fixtures(out: &Path, chunks: &str) {
    ingest_fixtures_with(out, &["--chunks", chunks]);
}

/// `chunkcube ingest --manifest fixtures/manifest.csv --out OUT --quiet EXTRA...`;
/// panics unless it succeeds.
pub fn ingest_fixtures_with(out: &Path, extra: &[&str]) {
    run_ok(&ingest_fixtures_args(out, extra));
}

/// The fixtures ingested with `--chunks time=1,y=64,x=64`, once per test binary, under the
/// target's tmp dir as `PREFIX<pid>`; cubes of earlier runs whose process is gone are removed.
pub fn fixture_cube_64(prefix: &str) -> &'static Path {
    static CUBE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CUBE.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix(prefix) {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = base.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ingest_fixtures(&dir, "time=1,y=64,x=64");
        dir
    })
}

/// The argument list of [`ingest_fixtures_with`] (to run it yourself).
pub fn ingest_fixtures_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "ingest".into(),
        "--manifest".into(),
        s(&fixtures_manifest()).into(),
        "--out".into(),
        s(out).into(),
        "--quiet".into(),
    ];
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// Whether `chunkcube::Cube::open` accepts the location.
pub fn cube_opens(path: &Path) -> bool {
    chunkcube::Cube::open(s(path)).is_ok()
}

/// Load a whole band of a cube as `[time, y, x]` through chunkcube's public API.
pub fn load_band<T: chunkcube::store::ValuesOf>(cube: &Path, band: &str) -> ndarray::ArrayD<T> {
    let c =
        chunkcube::Cube::open(s(cube)).unwrap_or_else(|e| panic!("open {}: {e}", cube.display()));
    let ds = c
        .load(&chunkcube::Query::new().measurements(&[band]))
        .unwrap_or_else(|e| panic!("load {band} of {}: {e}", cube.display()));
    let v = ds
        .get(band)
        .unwrap_or_else(|| panic!("no band {band}"))
        .values()
        .expect("eager load has values");
    v.as_array::<T>()
        .unwrap_or_else(|| panic!("band {band} has dtype {}", v.dtype()))
        .clone()
}

// ---------------------------------------------------------------------------
// Source tiles and the independent GDAL reference

/// Every `.tif` under `dir` (recursive), sorted by path.
pub fn tifs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "tif") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The fixture tiles of one band and year (`..._<year>--P1Y_final_<band>.tif`), in path order.
pub fn fixture_tiles(band: &str, year: i32) -> Vec<PathBuf> {
    let suffix = format!("_{year}--P1Y_final_{band}.tif");
    let v: Vec<PathBuf> = tifs_under(&fixtures_dir().join("tiles"))
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().ends_with(&suffix))
        .collect();
    assert!(!v.is_empty(), "no fixture tiles for {band} {year}");
    v
}

/// Header of a GeoTIFF as GDAL reports it.
#[derive(Debug, Clone)]
pub struct TileHeader {
    /// GDAL geotransform.
    pub transform: [f64; 6],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Read the header of a GeoTIFF with GDAL.
pub fn tile_header(path: &Path) -> TileHeader {
    let ds =
        gdal::Dataset::open(path).unwrap_or_else(|e| panic!("GDAL open {}: {e}", path.display()));
    let (width, height) = ds.raster_size();
    let transform = ds
        .geo_transform()
        .unwrap_or_else(|e| panic!("{}: geotransform: {e}", path.display()));
    TileHeader {
        transform,
        width,
        height,
    }
}

/// The union grid of some tiles: `(transform, width, height)`, computed from the tiles' own
/// geotransforms (north-up, common pixel size assumed: that of the first tile).
pub fn union_grid(paths: &[PathBuf]) -> ([f64; 6], usize, usize) {
    let hs: Vec<TileHeader> = paths.iter().map(|p| tile_header(p)).collect();
    let (dx, dy) = (hs[0].transform[1], hs[0].transform[5]);
    let minx = hs
        .iter()
        .map(|h| h.transform[0])
        .fold(f64::INFINITY, f64::min);
    let maxy = hs
        .iter()
        .map(|h| h.transform[3])
        .fold(f64::NEG_INFINITY, f64::max);
    let maxx = hs
        .iter()
        .map(|h| h.transform[0] + h.width as f64 * dx)
        .fold(f64::NEG_INFINITY, f64::max);
    let miny = hs
        .iter()
        .map(|h| h.transform[3] + h.height as f64 * dy)
        .fold(f64::INFINITY, f64::min);
    let w = ((maxx - minx) / dx).round() as usize;
    let h = ((miny - maxy) / dy).round() as usize;
    ([minx, dx, 0.0, maxy, 0.0, dy], w, h)
}

/// The stored chunk keys of `band` a window touches, by plain loops over a chunk grid of
/// `stored` chunks.
pub fn expected_keys(
    band: &str,
    w: &[std::ops::Range<u64>; 3],
    stored: [u64; 3],
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for t in w[0].start / stored[0]..=(w[0].end - 1) / stored[0] {
        for y in w[1].start / stored[1]..=(w[1].end - 1) / stored[1] {
            for x in w[2].start / stored[2]..=(w[2].end - 1) / stored[2] {
                out.insert(format!("{band}/c/{t}/{y}/{x}"));
            }
        }
    }
    out
}

/// The number of stored chunks a window touches, by arithmetic: the product over dimensions
/// of ceil(end / c) - floor(start / c) (independent of [`expected_keys`]' loops).
pub fn expected_count(w: &[std::ops::Range<u64>; 3], stored: [u64; 3]) -> u64 {
    (0..3)
        .map(|i| w[i].end.div_ceil(stored[i]) - w[i].start / stored[i])
        .product()
}

/// Whether a value is valid under a nodata (NaN is never valid).
pub fn is_valid(v: f64, nodata: Option<f64>) -> bool {
    !v.is_nan() && nodata.is_none_or(|nd| nd.is_nan() || v != nd)
}

/// A mosaic built independently of chunkcube.
#[derive(Debug, Clone)]
pub struct Mosaic<T> {
    /// `Some(v)`: the winning valid pixel; `None`: nodata (no tile has a valid pixel there).
    pub pixels: Array2<Option<T>>,
    /// Whether any tile covers the pixel at all (valid or not).
    pub covered: Array2<bool>,
    /// Nodata of the first tile.
    pub nodata: Option<f64>,
}

/// Mosaic the given tiles (one band at one time) with plain loops: the union of their
/// extents on their pixel grid; where tiles overlap, the first tile in PATH ORDER with a valid
/// pixel wins; pixels no tile covers are nodata. Reads with the `gdal` crate only.
pub fn reference_mosaic<T: GdalType + Copy + Into<f64>>(paths: &[PathBuf]) -> Mosaic<T> {
    let mut paths = paths.to_vec();
    paths.sort();
    let (transform, w, h) = union_grid(&paths);
    let mut pixels: Array2<Option<T>> = Array2::from_elem((h, w), None);
    let mut covered = Array2::from_elem((h, w), false);
    let mut nodata0 = None;
    for (i, p) in paths.iter().enumerate() {
        let ds =
            gdal::Dataset::open(p).unwrap_or_else(|e| panic!("GDAL open {}: {e}", p.display()));
        let gt = ds.geo_transform().unwrap();
        let band = ds.rasterband(1).unwrap();
        let nodata = band.no_data_value();
        if i == 0 {
            nodata0 = nodata;
        }
        let (tw, th) = ds.raster_size();
        let buf: Buffer<T> = band
            .read_as::<T>((0, 0), (tw, th), (tw, th), None)
            .unwrap_or_else(|e| panic!("GDAL read {}: {e}", p.display()));
        let (_, data) = buf.into_shape_and_vec();
        let c0 = ((gt[0] - transform[0]) / transform[1]).round() as usize;
        let r0 = ((gt[3] - transform[3]) / transform[5]).round() as usize;
        for r in 0..th {
            for c in 0..tw {
                let v = data[r * tw + c];
                covered[[r0 + r, c0 + c]] = true;
                let slot = &mut pixels[[r0 + r, c0 + c]];
                if slot.is_none() && is_valid(v.into(), nodata) {
                    *slot = Some(v);
                }
            }
        }
    }
    Mosaic {
        pixels,
        covered,
        nodata: nodata0,
    }
}

/// Compare one `[y, x]` slice of a cube band with a reference mosaic: valid reference pixels
/// must be equal, nodata ones must be the nodata (or NaN). Panics with the first mismatches.
pub fn assert_matches_reference<T>(what: &str, got: ndarray::ArrayView2<T>, want: &Mosaic<T>)
where
    T: Copy + Into<f64> + PartialEq + std::fmt::Debug,
{
    assert_eq!(got.shape(), want.pixels.shape(), "{what}: shape");
    let mut bad = Vec::new();
    let mut n_bad = 0usize;
    for ((r, c), want_px) in want.pixels.indexed_iter() {
        let g = got[[r, c]];
        let ok = match want_px {
            Some(v) => g == *v,
            None => !is_valid(g.into(), want.nodata),
        };
        if !ok {
            n_bad += 1;
            if bad.len() < 10 {
                bad.push(format!(
                    "(y={r}, x={c}): cube {g:?}, reference {want_px:?} (covered: {})",
                    want.covered[[r, c]]
                ));
            }
        }
    }
    assert!(
        n_bad == 0,
        "{what}: {n_bad} pixels differ from the GDAL reference, e.g.\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Writing small GeoTIFFs

/// Georeferencing of a GeoTIFF written by [`write_tif`]. The default is the fixtures' grid:
/// EPSG:6933, 10 m pixels, origin (2316000, -2500000), 8 x 6 px, nodata 0, DEFLATE.
#[derive(Debug, Clone)]
pub struct TifSpec {
    /// Upper-left corner (x0, y0).
    pub origin: (f64, f64),
    /// Pixel size (dx, dy), dy negative for north-up.
    pub pixel: (f64, f64),
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// EPSG code of the CRS.
    pub epsg: u32,
    /// Nodata of band 1.
    pub nodata: Option<f64>,
    /// DEFLATE compression (else uncompressed: the file size depends only on the shape).
    pub compress: bool,
    /// Raster bands (each holds the same values).
    pub bands: usize,
}

impl Default for TifSpec {
    fn default() -> Self {
        TifSpec {
            origin: (2_316_000.0, -2_500_000.0),
            pixel: (10.0, -10.0),
            width: 8,
            height: 6,
            epsg: 6933,
            nodata: Some(0.0),
            compress: true,
            bands: 1,
        }
    }
}

impl TifSpec {
    /// The same spec moved by whole pixels (`cols` right, `rows` down).
    pub fn shifted(&self, cols: i64, rows: i64) -> TifSpec {
        let mut t = self.clone();
        t.origin.0 += cols as f64 * self.pixel.0;
        t.origin.1 += rows as f64 * self.pixel.1;
        t
    }
}

/// Write a GeoTIFF (row-major `values`, `width * height` of them, in each of its bands).
pub fn write_tif<T: GdalType + Copy>(path: &Path, spec: &TifSpec, values: &[T]) {
    assert_eq!(
        values.len(),
        spec.width * spec.height,
        "write_tif {}: values vs size",
        path.display()
    );
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
    let opts = RasterCreationOptions::from_iter([if spec.compress {
        "COMPRESS=DEFLATE"
    } else {
        "COMPRESS=NONE"
    }]);
    let mut ds = driver
        .create_with_band_type_with_options::<T, _>(
            path,
            spec.width,
            spec.height,
            spec.bands,
            &opts,
        )
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    ds.set_spatial_ref(&SpatialRef::from_epsg(spec.epsg).unwrap())
        .unwrap();
    ds.set_geo_transform(&[
        spec.origin.0,
        spec.pixel.0,
        0.0,
        spec.origin.1,
        0.0,
        spec.pixel.1,
    ])
    .unwrap();
    for b in 1..=spec.bands {
        let mut band = ds.rasterband(b).unwrap();
        band.set_no_data_value(spec.nodata).unwrap();
        let mut buf = Buffer::new((spec.width, spec.height), values.to_vec());
        band.write((0, 0), (spec.width, spec.height), &mut buf)
            .unwrap();
    }
    ds.close().unwrap();
}

/// Write a tile filled with `f(col, row)`.
pub fn write_tif_with<T: GdalType + Copy>(
    path: &Path,
    spec: &TifSpec,
    f: impl Fn(usize, usize) -> T,
) {
    let mut v = Vec::with_capacity(spec.width * spec.height);
    for r in 0..spec.height {
        for c in 0..spec.width {
            v.push(f(c, r));
        }
    }
    write_tif(path, spec, &v);
}

/// A DE Africa style file name: `gm_s2_annual_<tile>_<year>--P1Y_final_<band>.tif`.
pub fn deafrica_name(tile: &str, year: i32, band: &str) -> String {
    format!("gm_s2_annual_{tile}_{year}--P1Y_final_{band}.tif")
}

/// Write a `path,band,time` manifest from rows.
pub fn write_manifest<P, B, T>(path: &Path, rows: &[(P, B, T)])
where
    P: std::fmt::Display,
    B: std::fmt::Display,
    T: std::fmt::Display,
{
    let mut t = String::from("path,band,time\n");
    for (p, b, ti) in rows {
        t.push_str(&format!("{p},{b},{ti}\n"));
    }
    std::fs::write(path, t).unwrap();
}

// ---------------------------------------------------------------------------
// Store trees

/// Every file under `dir` (recursive) by relative path, with its bytes.
pub fn tree_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Every file under `dir` with its modification time.
pub fn tree_mtimes(dir: &Path) -> BTreeMap<String, std::time::SystemTime> {
    tree_bytes(dir)
        .into_keys()
        .map(|k| {
            let m = std::fs::metadata(dir.join(&k)).unwrap().modified().unwrap();
            (k, m)
        })
        .collect()
}

/// Assert two store directories hold the same files with the same bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let ta = tree_bytes(a);
    let tb = tree_bytes(b);
    let only_a: Vec<&String> = ta.keys().filter(|k| !tb.contains_key(*k)).collect();
    let only_b: Vec<&String> = tb.keys().filter(|k| !ta.contains_key(*k)).collect();
    let differ: Vec<&String> = ta
        .iter()
        .filter(|(k, v)| tb.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        only_a.is_empty() && only_b.is_empty() && differ.is_empty(),
        "{} and {} differ:\n only in the first: {only_a:?}\n only in the second: {only_b:?}\n different bytes: {differ:?}",
        a.display(),
        b.display()
    );
}

/// Read a JSON file.
/// The minimum a memory-limit error states, as printed ("450.56 kB"): the two words after
/// "use at least " (a hint such as "to hold the result in memory; ..." may follow).
pub fn stated_minimum(msg: &str) -> String {
    let i = msg
        .find("use at least ")
        .unwrap_or_else(|| panic!("the error states no minimum: {msg}"));
    let words: Vec<&str> = msg[i + "use at least ".len()..]
        .split_whitespace()
        .take(2)
        .map(|w| w.trim_end_matches([',', ';']))
        .collect();
    words.join(" ")
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let t = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&t).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// A `--stats` file, checked to hold every field the command line promises.
pub fn read_stats(path: &Path) -> serde_json::Value {
    let v = read_json(path);
    for k in [
        "chunks_read",
        "bytes_read",
        "chunks_written",
        "tasks",
        "spilled_bytes",
        "peak_tracked_bytes",
        "elapsed_s",
    ] {
        assert!(v.get(k).is_some(), "--stats lacks '{k}': {v}");
    }
    v
}

/// Number of stored chunk objects of an array (every file under `<array>/` except its
/// metadata and chunk manifest).
pub fn stored_chunks(cube: &Path, array: &str) -> usize {
    let dir = cube.join(array);
    if !dir.exists() {
        return 0;
    }
    tree_bytes(&dir)
        .keys()
        .filter(|k| {
            !k.ends_with("zarr.json") && !k.ends_with(chunkcube::store::manifest::MANIFEST_FILE)
        })
        .count()
}

/// The reference nan-median along time of `x[t][pixel]`, by plain sorting: NaNs skipped, an
/// even count averages the two middle values, no valid value gives NaN.
pub fn median_ref(x: &[Vec<f32>]) -> Vec<f32> {
    (0..x[0].len())
        .map(|p| {
            let mut v: Vec<f32> = x.iter().map(|a| a[p]).filter(|v| !v.is_nan()).collect();
            if v.is_empty() {
                return f32::NAN;
            }
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                ((v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0) as f32
            }
        })
        .collect()
}
