//! Generate deterministic, geomedian-like GeoTIFF tiles plus a `manifest.csv`.
//!
//! The output mimics how Digital Earth Africa publishes its annual Sentinel-2
//! geomedian (`gm_s2_annual`): one single-band, tiled, DEFLATE-compressed
//! GeoTIFF per tile, year and band, in EPSG:6933 with 10 m pixels.
//!
//! # Usage
//!
//! ```text
//! # regenerate the committed test fixtures (run from the crate root; default out = fixtures)
//! cargo run --example make_fixtures
//!
//! # a benchmark-sized data set
//! cargo run --release --example make_fixtures -- --out DIR --tile-size 4096 \
//!     --grid 2 --bands red,green,blue,nir --years 2019 --block 512 --no-float-band
//! ```
//!
//! Options:
//!
//! * `--out DIR`          output folder (default `fixtures`)
//! * `--grid N`           N x N tiles (default 2)
//! * `--tile-size W|WxH`  tile size in pixels (default 120x100: 120 wide, 100 high)
//! * `--bands a,b,c`      uint16 bands (default `red,green,blue,nir`)
//! * `--years Y1,Y2`      years (default `2019,2020`)
//! * `--block B`          TIFF block size, a multiple of 16 (default 64)
//! * `--no-float-band`    omit the float32 `smad` band (NaN nodata) written by default
//! * `--seed N`           seed of the synthetic fields (default 42)
//!
//! # Layout
//!
//! ```text
//! DIR/manifest.csv                       path,band,time (paths relative to DIR)
//! DIR/tiles/x{IX:03}/y{IY:03}/{YEAR}--P1Y/gm_s2_annual_x{IX:03}y{IY:03}_{YEAR}--P1Y_final_{band}.tif
//! ```
//!
//! Tile `(ix, iy)` has its upper-left corner at
//! `x0 = 2_316_000 + ix * W * 10`, `y0 = -2_500_000 - iy * H * 10` (iy grows
//! southward). When `--tile-size` is not given, the last tile
//! `(N-1, N-1)` is 30 px narrower, so the mosaic has an uncovered corner.
//!
//! Pixel values depend only on (seed, band, year, global column, global row),
//! so neighbouring tiles join seamlessly; nodata holes (0 for uint16, NaN for
//! `smad`) are small deterministic rectangles per tile/band/year, plus a
//! "cloud" rectangle shared by all bands in tile x000/y000 of the first year
//! listed (2019 by default).
//! A smooth "water" region (~15% of pixels) has red > nir (negative NDVI).
//! The manifest writes the time as the year (`2019`) except for 2020 rows,
//! which use the ISO date form (`2020-01-01`), so both accepted forms appear.
//!
//! Output is bit-identical between runs (no timestamps or varying metadata).

use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use gdal::raster::{Buffer, RasterCreationOptions};
use gdal::spatial_ref::SpatialRef;
use gdal::DriverManager;

const X_ORIGIN: f64 = 2_316_000.0;
const Y_ORIGIN: f64 = -2_500_000.0;
const PIXEL: f64 = 10.0;
const EPSG: u32 = 6933;
const FLOAT_BAND: &str = "smad";
/// Width reduction of the last tile when `--tile-size` is not given.
const NARROW_BY: usize = 30;
/// Fraction of pixels that are "water" is roughly P(water field > this).
const WATER_THRESHOLD: f64 = 0.42;
/// Runs whose tiles have at most this many pixels print one line per file.
const SMALL_TILE_PIXELS: usize = 512 * 512;

type Res<T> = Result<T, String>;

const USAGE: &str = "\
usage: make_fixtures [--out DIR] [--grid N] [--tile-size W|WxH] [--bands a,b,c]
                     [--years 2019,2020] [--block B] [--no-float-band] [--seed N]

Writes DIR/tiles/x{IX:03}/y{IY:03}/{YEAR}--P1Y/gm_s2_annual_..._final_{band}.tif
and DIR/manifest.csv. Defaults: --out fixtures --grid 2 --tile-size 120x100
--bands red,green,blue,nir --years 2019,2020 --block 64 --seed 42 (plus a
float32 `smad` band unless --no-float-band).";

#[derive(Debug, Clone)]
struct Opts {
    out: PathBuf,
    grid: usize,
    tile_w: usize,
    tile_h: usize,
    /// True when `--tile-size` was given: then every tile is full size.
    tile_size_given: bool,
    bands: Vec<String>,
    years: Vec<i32>,
    block: usize,
    float_band: bool,
    seed: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            out: PathBuf::from("fixtures"),
            grid: 2,
            tile_w: 120,
            tile_h: 100,
            tile_size_given: false,
            bands: ["red", "green", "blue", "nir"].map(String::from).to_vec(),
            years: vec![2019, 2020],
            block: 64,
            float_band: true,
            seed: 42,
        }
    }
}

fn parse_usize(flag: &str, v: &str) -> Res<usize> {
    v.trim()
        .parse::<usize>()
        .map_err(|e| format!("{flag}: invalid number {v:?}: {e}"))
}

fn parse_tile_size(v: &str) -> Res<(usize, usize)> {
    let (w, h) = match v.split_once(['x', 'X']) {
        Some((w, h)) => (
            parse_usize("--tile-size", w)?,
            parse_usize("--tile-size", h)?,
        ),
        None => {
            let s = parse_usize("--tile-size", v)?;
            (s, s)
        }
    };
    if w == 0 || h == 0 {
        return Err(format!("--tile-size: sizes must be positive, got {v:?}"));
    }
    if w.checked_mul(h).is_none_or(|n| n > (1 << 31)) {
        return Err(format!("--tile-size: {v:?} is too large"));
    }
    Ok((w, h))
}

fn parse_bands(v: &str) -> Res<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for b in v.split(',').map(str::trim) {
        if b.is_empty()
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "--bands: invalid band name {b:?} (use letters, digits, '_' or '-')"
            ));
        }
        if out.iter().any(|o| o == b) {
            return Err(format!("--bands: duplicate band {b:?}"));
        }
        out.push(b.to_string());
    }
    Ok(out)
}

fn parse_years(v: &str) -> Res<Vec<i32>> {
    let mut out: Vec<i32> = Vec::new();
    for y in v.split(',').map(str::trim) {
        let year: i32 = y
            .parse()
            .map_err(|e| format!("--years: invalid year {y:?}: {e}"))?;
        if !(1000..=9999).contains(&year) {
            return Err(format!("--years: year {year} must have four digits"));
        }
        if out.contains(&year) {
            return Err(format!("--years: duplicate year {year}"));
        }
        out.push(year);
    }
    Ok(out)
}

/// Parse the command line. `Ok(None)` means `--help` was requested.
fn parse_args(args: impl IntoIterator<Item = String>) -> Res<Option<Opts>> {
    let mut o = Opts::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Res<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .filter(|v| !v.starts_with("--"))
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--out" => o.out = PathBuf::from(value("--out")?),
            "--grid" => {
                o.grid = parse_usize("--grid", &value("--grid")?)?;
                if !(1..=999).contains(&o.grid) {
                    return Err(format!("--grid must be in 1..=999, got {}", o.grid));
                }
            }
            "--tile-size" => {
                (o.tile_w, o.tile_h) = parse_tile_size(&value("--tile-size")?)?;
                o.tile_size_given = true;
            }
            "--bands" => o.bands = parse_bands(&value("--bands")?)?,
            "--years" => o.years = parse_years(&value("--years")?)?,
            "--block" => {
                o.block = parse_usize("--block", &value("--block")?)?;
                if o.block == 0 || o.block % 16 != 0 {
                    return Err(format!(
                        "--block must be a positive multiple of 16, got {}",
                        o.block
                    ));
                }
            }
            "--no-float-band" => {
                if inline.is_some() {
                    return Err("--no-float-band takes no value".into());
                }
                o.float_band = false;
            }
            "--seed" => {
                let v = value("--seed")?;
                o.seed = v
                    .trim()
                    .parse()
                    .map_err(|e| format!("--seed: invalid number {v:?}: {e}"))?;
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if o.float_band && o.bands.iter().any(|b| b == FLOAT_BAND) {
        return Err(format!(
            "--bands: {FLOAT_BAND:?} is the float32 band; pass --no-float-band to use it as uint16"
        ));
    }
    Ok(Some(o))
}

// ---------------------------------------------------------------------------
// Deterministic hashing

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash a sequence of words into one.
fn hash(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, &w| splitmix64(h ^ w))
}

/// FNV-1a of a band name, so values do not depend on the order of `--bands`.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Uniform in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

// ---------------------------------------------------------------------------
// Smooth fields over global pixel coordinates

/// Number of separable terms in [`ColTerms`] / [`RowTerms`].
const NT: usize = 8;

/// Column-dependent factors of the smooth fields (per global column).
type ColTerms = [f64; NT];
/// Row-dependent factors of the smooth fields (per global row).
type RowTerms = [f64; NT];

/// Phases of the smooth fields: seed dependent, plus year dependent ones.
struct Field {
    p: [f64; 8],
    year_p: [f64; 2],
    year_offset: f64,
}

/// Smooth quantities at one pixel.
struct Px {
    /// Water score in [-1, 1]; water where > [`WATER_THRESHOLD`].
    water: f64,
    /// Vegetation density in [0, 1].
    veg: f64,
    /// Soil brightness in [0, 1].
    bright: f64,
    /// Year multiplier, about 1 +/- 4%.
    year: f64,
}

impl Field {
    fn new(seed: u64, year: i32) -> Self {
        let mut p = [0.0; 8];
        for (k, v) in p.iter_mut().enumerate() {
            *v = TAU * unit(hash(&[seed, 0xF1E1D, k as u64]));
        }
        let yh = |k: u64| unit(hash(&[seed, 0x7EA2, year as u64, k]));
        Field {
            p,
            year_p: [TAU * yh(0), TAU * yh(1)],
            year_offset: 0.02 * (2.0 * yh(2) - 1.0),
        }
    }

    fn col(&self, gx: u64) -> ColTerms {
        let x = gx as f64;
        let p = &self.p;
        let a2 = x * 0.6 / 19.0 + p[2];
        let a5 = x * 0.8 / 31.0 + p[5];
        [
            (x / 13.0 + p[0]).sin(),
            a2.sin(),
            a2.cos(),
            (x / 19.0 + p[3]).sin(),
            a5.sin(),
            a5.cos(),
            (x / 53.0 + p[6]).sin(),
            (x / 71.0 + self.year_p[0]).sin(),
        ]
    }

    fn row(&self, gy: u64) -> RowTerms {
        let y = gy as f64;
        let p = &self.p;
        let b2 = y * 0.8 / 19.0;
        let b5 = -y * 0.6 / 31.0;
        [
            (y / 11.0 + p[1]).sin(),
            b2.cos(),
            b2.sin(),
            (y / 23.0 + p[4]).cos(),
            b5.cos(),
            b5.sin(),
            (y / 47.0 + p[7]).cos(),
            (y / 59.0 + self.year_p[1]).cos(),
        ]
    }

    fn at(&self, c: &ColTerms, r: &RowTerms) -> Px {
        // sin(A + B) = sin A cos B + cos A sin B keeps everything separable.
        let water = 0.6 * c[0] * r[0] + 0.4 * (c[1] * r[1] + c[2] * r[2]);
        let veg = 0.5 + 0.3 * c[3] * r[3] + 0.2 * (c[4] * r[4] + c[5] * r[5]);
        let bright = 0.5 + 0.5 * c[6] * r[6];
        let year = 1.0 + 0.02 * c[7] * r[7] + self.year_offset;
        Px {
            water,
            veg,
            bright,
            year,
        }
    }
}

/// What one output file holds.
#[derive(Clone, Copy)]
enum Kind<'a> {
    U16(&'a str),
    Smad,
}

impl Kind<'_> {
    fn name(&self) -> &str {
        match self {
            Kind::U16(n) => n,
            Kind::Smad => FLOAT_BAND,
        }
    }
}

/// Noiseless reflectance (uint16 scale) of a band at a pixel.
fn reflectance(band: &str, band_h: u64, px: &Px) -> f64 {
    let (v, b) = (px.veg, px.bright);
    let d = ((px.water - WATER_THRESHOLD) / (1.0 - WATER_THRESHOLD)).clamp(0.0, 1.0);
    let is_water = px.water > WATER_THRESHOLD;
    let red_land = 400.0 + 1300.0 * (1.0 - v) + 700.0 * b;
    match (band, is_water) {
        ("red", false) => red_land,
        ("red", true) => 950.0 + 250.0 * b - 150.0 * d,
        ("green", false) => 450.0 + 900.0 * (1.0 - v) + 400.0 * v + 800.0 * b,
        ("green", true) => 1000.0 + 200.0 * b - 100.0 * d,
        ("blue", false) => 300.0 + 800.0 * (1.0 - v) + 700.0 * b,
        ("blue", true) => 1100.0 + 200.0 * b - 100.0 * d,
        ("nir", false) => red_land + 250.0 + 3000.0 * v,
        ("nir", true) => 560.0 + 140.0 * (1.0 - d),
        // Any other band: a generic mix, different per band name.
        (_, false) => {
            let k = unit(band_h);
            500.0 + 1500.0 * b + 1500.0 * ((1.0 - k) * v + k * (1.0 - v))
        }
        (_, true) => 400.0 + 400.0 * unit(band_h) + 100.0 * b,
    }
}

/// smad-like value in [0, 0.05], quantised to multiples of 2^-16 (compresses better).
fn smad(px: &Px, noise: f64) -> f32 {
    let water = if px.water > WATER_THRESHOLD {
        0.01
    } else {
        0.0
    };
    let v = 0.004 + 0.025 * (1.0 - px.veg) * px.year + 0.01 * px.bright + water + 0.002 * noise;
    let q = (v.clamp(0.0, 0.05) * 65536.0).round() / 65536.0;
    q as f32
}

// ---------------------------------------------------------------------------
// Tiles, holes and writing

struct Tile {
    ix: usize,
    iy: usize,
    width: usize,
    height: usize,
}

impl Tile {
    fn code(&self) -> String {
        format!("x{:03}y{:03}", self.ix, self.iy)
    }
}

/// Half-open pixel rectangle within a tile: columns x0..x1, rows y0..y1.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
}

/// Nodata rectangles for one tile/band/year.
fn holes(o: &Opts, tile: &Tile, kind: Kind, year: i32) -> Vec<Rect> {
    let (w, h) = (tile.width, tile.height);
    let base = [
        o.seed,
        0x401E,
        tile.ix as u64,
        tile.iy as u64,
        name_hash(kind.name()),
        year as u64,
    ];
    let n = 1 + hash(&base) % 2;
    let mut out = Vec::new();
    for k in 0..n {
        let hk = |j: u64| {
            let mut words = base.to_vec();
            words.extend([k, j]);
            hash(&words)
        };
        let rw = (5 + hk(0) % 11) as usize;
        let rh = (5 + hk(1) % 11) as usize;
        let x0 = (hk(2) % w.saturating_sub(rw).max(1) as u64) as usize;
        let y0 = (hk(3) % h.saturating_sub(rh).max(1) as u64) as usize;
        out.push(Rect {
            x0,
            x1: (x0 + rw).min(w),
            y0,
            y1: (y0 + rh).min(h),
        });
    }
    // The shared "cloud": all bands of tile x000/y000 in the first year.
    if tile.ix == 0 && tile.iy == 0 && o.years.first() == Some(&year) {
        let x0 = w / 5;
        let y0 = h / 3;
        out.push(Rect {
            x0,
            x1: (x0 + (w / 6).max(1)).min(w),
            y0,
            y1: (y0 + (h / 5).max(1)).min(h),
        });
    }
    out
}

/// Block size actually used for a tile of `w` x `h` pixels (`None` = stripped TIFF).
fn effective_block(block: usize, w: usize, h: usize) -> Option<usize> {
    let m = w.min(h);
    if block <= m {
        Some(block)
    } else if m >= 16 {
        Some(m / 16 * 16)
    } else {
        None
    }
}

/// Path of one GeoTIFF relative to the output folder, always with '/' separators.
fn tif_path(tile: &Tile, year: i32, band: &str) -> String {
    let (x, y, code) = (tile.ix, tile.iy, tile.code());
    format!("tiles/x{x:03}/y{y:03}/{year}--P1Y/gm_s2_annual_{code}_{year}--P1Y_final_{band}.tif")
}

fn write_tif(
    o: &Opts,
    path: &Path,
    tile: &Tile,
    kind: Kind,
    year: i32,
    wkt: &str,
    field: &Field,
) -> Res<()> {
    let err = |what: &str, e: gdal::errors::GdalError| format!("{}: {what}: {e}", path.display());
    let (w, h) = (tile.width, tile.height);
    let block = effective_block(o.block, w, h);
    let mut opts = vec!["COMPRESS=DEFLATE".to_string()];
    if let Some(b) = block {
        opts.push("TILED=YES".into());
        opts.push(format!("BLOCKXSIZE={b}"));
        opts.push(format!("BLOCKYSIZE={b}"));
    }
    opts.push(match kind {
        Kind::U16(_) => "PREDICTOR=2".into(),
        Kind::Smad => "PREDICTOR=3".into(),
    });
    let copts = RasterCreationOptions::from_iter(opts.iter().map(String::as_str));
    let driver = DriverManager::get_driver_by_name("GTiff").map_err(|e| err("GTiff driver", e))?;
    let mut ds = match kind {
        Kind::U16(_) => driver.create_with_band_type_with_options::<u16, _>(path, w, h, 1, &copts),
        Kind::Smad => driver.create_with_band_type_with_options::<f32, _>(path, w, h, 1, &copts),
    }
    .map_err(|e| err("create", e))?;
    ds.set_projection(wkt)
        .map_err(|e| err("set projection", e))?;
    let x0 = X_ORIGIN + (tile.ix * o.tile_w) as f64 * PIXEL;
    let y0 = Y_ORIGIN - (tile.iy * o.tile_h) as f64 * PIXEL;
    ds.set_geo_transform(&[x0, PIXEL, 0.0, y0, 0.0, -PIXEL])
        .map_err(|e| err("set geotransform", e))?;

    let mut band = ds.rasterband(1).map_err(|e| err("band 1", e))?;
    match kind {
        Kind::U16(_) => band.set_no_data_value(Some(0.0)),
        Kind::Smad => band.set_no_data_value(Some(f64::NAN)),
    }
    .map_err(|e| err("set nodata", e))?;

    // Global pixel coordinates use the nominal tile size, so a narrower tile
    // still lines up with its neighbours.
    let gx0 = (tile.ix * o.tile_w) as u64;
    let gy0 = (tile.iy * o.tile_h) as u64;
    let cols: Vec<ColTerms> = (0..w as u64).map(|x| field.col(gx0 + x)).collect();
    let rects = holes(o, tile, kind, year);
    let band_h = name_hash(kind.name());
    let noise_prefix = hash(&[o.seed, 0x7015E, band_h, year as u64]);
    let strip = block.map_or(256, |b| b.max(256 / b * b)).min(h);

    let mut y = 0;
    while y < h {
        let rows = strip.min(h - y);
        let mut u16s: Vec<u16> = Vec::new();
        let mut f32s: Vec<f32> = Vec::new();
        match kind {
            Kind::U16(_) => u16s.reserve_exact(rows * w),
            Kind::Smad => f32s.reserve_exact(rows * w),
        }
        for ly in y..y + rows {
            let gy = gy0 + ly as u64;
            let r = field.row(gy);
            let row_h = splitmix64(noise_prefix ^ gy);
            for (lx, c) in cols.iter().enumerate() {
                let gx = gx0 + lx as u64;
                let nz = splitmix64(row_h ^ gx.wrapping_mul(0xD134_2543_DE82_EF95));
                let noise = 2.0 * unit(nz) - 1.0; // [-1, 1)
                let px = field.at(c, &r);
                match kind {
                    Kind::U16(name) => {
                        let v = reflectance(name, band_h, &px) * px.year + 15.0 * noise;
                        u16s.push(v.round().clamp(1.0, 10_000.0) as u16);
                    }
                    Kind::Smad => f32s.push(smad(&px, noise)),
                }
            }
            for rc in rects.iter().filter(|rc| (rc.y0..rc.y1).contains(&ly)) {
                let row0 = (ly - y) * w;
                match kind {
                    Kind::U16(_) => u16s[row0 + rc.x0..row0 + rc.x1].fill(0),
                    Kind::Smad => f32s[row0 + rc.x0..row0 + rc.x1].fill(f32::NAN),
                }
            }
        }
        match kind {
            Kind::U16(_) => band.write(
                (0, y as isize),
                (w, rows),
                &mut Buffer::new((w, rows), u16s),
            ),
            Kind::Smad => band.write(
                (0, y as isize),
                (w, rows),
                &mut Buffer::new((w, rows), f32s),
            ),
        }
        .map_err(|e| err("write", e))?;
        y += rows;
    }
    ds.close().map_err(|e| err("close", e))
}

fn manifest_time(year: i32) -> String {
    if year == 2020 {
        format!("{year}-01-01")
    } else {
        year.to_string()
    }
}

fn run(o: &Opts) -> Res<()> {
    let wkt = SpatialRef::from_epsg(EPSG)
        .and_then(|s| s.to_wkt())
        .map_err(|e| format!("EPSG:{EPSG}: {e}"))?;

    let mut kinds: Vec<Kind> = o.bands.iter().map(|b| Kind::U16(b)).collect();
    if o.float_band {
        kinds.push(Kind::Smad);
    }
    let n = o.grid;
    let mut tiles = Vec::new();
    for iy in 0..n {
        for ix in 0..n {
            let narrow = !o.tile_size_given && ix == n - 1 && iy == n - 1;
            let width = if narrow {
                o.tile_w.saturating_sub(NARROW_BY).max(1)
            } else {
                o.tile_w
            };
            tiles.push(Tile {
                ix,
                iy,
                width,
                height: o.tile_h,
            });
        }
    }
    let verbose = o.tile_w * o.tile_h <= SMALL_TILE_PIXELS;

    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut bytes: u64 = 0;
    for &year in &o.years {
        let field = Field::new(o.seed, year);
        for tile in &tiles {
            for &kind in &kinds {
                let rel = tif_path(tile, year, kind.name());
                let path = o.out.join(&rel);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("{}: cannot create folder: {e}", dir.display()))?;
                }
                write_tif(o, &path, tile, kind, year, &wkt, &field)?;
                let len = std::fs::metadata(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .len();
                bytes += len;
                if verbose {
                    println!("wrote {} ({len} bytes)", path.display());
                }
                rows.push((rel, kind.name().to_string(), manifest_time(year)));
            }
        }
    }
    rows.sort();
    let mut csv = String::from("path,band,time\n");
    for (p, b, t) in &rows {
        let _ = writeln!(csv, "{p},{b},{t}");
    }
    let manifest = o.out.join("manifest.csv");
    std::fs::write(&manifest, &csv).map_err(|e| format!("{}: {e}", manifest.display()))?;
    bytes += csv.len() as u64;
    println!(
        "done: {} GeoTIFFs + {} ({} files, {bytes} bytes total)",
        rows.len(),
        manifest.display(),
        rows.len() + 1
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(o)) => match run(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("make_fixtures: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("make_fixtures: {e}");
            ExitCode::from(2)
        }
    }
}
