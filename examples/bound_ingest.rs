//! The machine's ingest bound: decode every window of every source tile with GDAL and
//! zstd-encode it, in parallel on all cores, writing nothing. An ingest cannot beat this;
//! `bench/ingest.sh` compares `chunkcube ingest` against it.
//!
//! ```text
//! cargo run --release --example bound_ingest -- MANIFEST.csv [--window 1024] [--level 3] [--threads N]
//! ```
//! `MANIFEST.csv` is a `path,band,time` file as written by `examples/make_fixtures.rs`
//! (paths relative to it). Bands must be uint16 or float32. Prints one summary line.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use gdal::raster::GdalDataType;
use rayon::prelude::*;
use zarrs::array::codec::api::{BytesToBytesCodecTraits, CodecOptions};
use zarrs::array::codec::ZstdCodec;

type Res<T> = Result<T, String>;

struct Opts {
    manifest: PathBuf,
    window: usize,
    level: i32,
    threads: usize,
}

fn parse_args() -> Res<Opts> {
    let mut o = Opts {
        manifest: PathBuf::new(),
        window: 1024,
        level: 3,
        threads: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--window" => {
                o.window = val("--window")?
                    .parse()
                    .map_err(|e| format!("--window: {e}"))?
            }
            "--level" => {
                o.level = val("--level")?
                    .parse()
                    .map_err(|e| format!("--level: {e}"))?
            }
            "--threads" => {
                o.threads = val("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            s if s.starts_with("--") => return Err(format!("unknown flag {s}")),
            s => o.manifest = PathBuf::from(s),
        }
    }
    if o.manifest.as_os_str().is_empty() || o.window == 0 {
        return Err(
            "usage: bound_ingest MANIFEST.csv [--window 1024] [--level 3] [--threads N]".into(),
        );
    }
    Ok(o)
}

/// Tile paths from a `path,band,time` manifest.
fn read_manifest(m: &Path) -> Res<Vec<PathBuf>> {
    let text = std::fs::read_to_string(m).map_err(|e| format!("{}: {e}", m.display()))?;
    let dir = m.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| dir.join(l.split(',').next().unwrap_or("").trim()))
        .collect())
}

thread_local! {
    // One GDAL handle per tile per worker (datasets are not thread-safe), as chunkcube does.
    static HANDLES: RefCell<HashMap<PathBuf, gdal::Dataset>> = RefCell::new(HashMap::new());
}

/// Read one window of band 1 as little-endian bytes (what the Zarr `bytes` codec produces).
fn read_window(
    path: &Path,
    (x, y, w, h): (usize, usize, usize, usize),
    float: bool,
) -> Res<Vec<u8>> {
    HANDLES.with(|cell| {
        let mut handles = cell.borrow_mut();
        if !handles.contains_key(path) {
            let ds = gdal::Dataset::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            handles.insert(path.to_path_buf(), ds);
        }
        let band = handles[path].rasterband(1).map_err(|e| e.to_string())?;
        let win = ((x as isize, y as isize), (w, h), (w, h));
        let err = |e: gdal::errors::GdalError| format!("{}: {e}", path.display());
        Ok(if float {
            let mut buf = vec![0f32; w * h];
            band.read_into_slice::<f32>(win.0, win.1, win.2, &mut buf, None)
                .map_err(err)?;
            buf.iter().flat_map(|v| v.to_le_bytes()).collect()
        } else {
            let mut buf = vec![0u16; w * h];
            band.read_into_slice::<u16>(win.0, win.1, win.2, &mut buf, None)
                .map_err(err)?;
            buf.iter().flat_map(|v| v.to_le_bytes()).collect()
        })
    })
}

fn run(o: &Opts) -> Res<()> {
    let start = Instant::now();
    // Each block is decoded once: a small GDAL block cache, as chunkcube ingest uses.
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        gdal::config::set_config_option("GDAL_CACHEMAX", "64").map_err(|e| e.to_string())?;
    }
    let tiles = read_manifest(&o.manifest)?;
    // Every window of every tile: (tile, float?, x, y, w, h).
    let mut tasks = Vec::new();
    for (i, t) in tiles.iter().enumerate() {
        let ds = gdal::Dataset::open(t).map_err(|e| format!("{}: {e}", t.display()))?;
        let (w, h) = ds.raster_size();
        let float = match ds.rasterband(1).map_err(|e| e.to_string())?.band_type() {
            GdalDataType::UInt16 => false,
            GdalDataType::Float32 => true,
            other => return Err(format!("{}: unsupported data type {other:?}", t.display())),
        };
        for y in (0..h).step_by(o.window) {
            for x in (0..w).step_by(o.window) {
                tasks.push((i, float, (x, y, o.window.min(w - x), o.window.min(h - y))));
            }
        }
    }
    let codec = ZstdCodec::new(o.level, false);
    let copts = CodecOptions::default();
    let (raw, enc) = (AtomicU64::new(0), AtomicU64::new(0));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .map_err(|e| e.to_string())?;
    let work = Instant::now();
    pool.install(|| {
        tasks
            .par_iter()
            .try_for_each(|&(i, float, win)| -> Res<()> {
                let bytes = read_window(&tiles[i], win, float)?;
                raw.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let out = codec
                    .encode(bytes.into(), &copts)
                    .map_err(|e| e.to_string())?;
                enc.fetch_add(out.len() as u64, Ordering::Relaxed);
                Ok(())
            })
    })?;
    let secs = work.elapsed().as_secs_f64();
    let (raw, enc) = (raw.into_inner() as f64 / 1e6, enc.into_inner() as f64 / 1e6);
    println!(
        "bound_ingest: {} tiles, {} windows of {}px on {} threads: {raw:.0} MB decoded -> {enc:.0} MB zstd:{} in {secs:.2} s ({:.0} MB/s; {:.2} s total)",
        tiles.len(),
        tasks.len(),
        o.window,
        pool.current_num_threads(),
        o.level,
        raw / secs,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match parse_args().and_then(|o| run(&o)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
