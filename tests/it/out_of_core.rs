//! Issue 6 — out of core: a hard memory limit, spill-to-disk for intermediates, rechunking
//! through the spill store, `persist()`, and clean-up of the spill directory.
//!
//! A cube several times larger than the limits used here is generated in the test (2 bands ×
//! 12 time steps × 256×256 px uint16 with nodata 0, stored in `time=1,y=128,x=128` chunks:
//! 3 MiB of stored pixels, 6 MiB as float32). Every expected value is computed here with plain
//! loops from the generated pixel values (uint16 → f32, nodata → NaN, f32 arithmetic), never
//! with chunkcube code. Memory limits are found from the planner's own error message ("use at
//! least N") and checked to stay well below the data sizes.

use crate::common;

use crate::common::{describe, median_ref, read_json, run, s, write_manifest, write_tif, TifSpec};
use chunkcube::exec::ExecError;
use chunkcube::graph::ReduceOp;
use chunkcube::{ChunkSpec, Cube, DataArray, ExecConfig, Query};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The generated cube
// ---------------------------------------------------------------------------------------------

const T: usize = 12;
const H: usize = 256;
const W: usize = 256;
const PX: usize = H * W;
const STORED: &str = "time=1,y=128,x=128";
/// Stored chunks per band: 12 × 2 × 2.
const CHUNKS_PER_BAND: u64 = (T * 2 * 2) as u64;
/// Stored chunks of red and nir.
const CHUNKS_BOTH: u64 = 2 * CHUNKS_PER_BAND;
const NDVI: &str = "ndvi=(nir-red)/(nir+red)";

/// A band's pixel value at (t, y, x).
type PixelFn = dyn Fn(usize, usize, usize) -> u16;

/// (name, CLI args, output band, reference values, tolerance).
type Case<'a> = (&'a str, Vec<&'a str>, &'a str, Vec<f32>, f32);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generated uint16 value of band `b` (0 = red, 1 = nir) at (t, y, x); 0 is nodata.
/// About 12 % random nodata, an 8×8 corner that is nodata at every time (median NaN), rows
/// 100..110 drawn from a tiny range (ties in the median), and the rest in 1..=10000.
fn value(b: usize, t: usize, y: usize, x: usize) -> u16 {
    if y < 8 && x < 8 {
        return 0;
    }
    let h = splitmix(((b * T + t) * PX + y * W + x) as u64 ^ 0x5eed);
    if h % 100 < 12 {
        return 0;
    }
    if (100..110).contains(&y) {
        return 1 + ((h >> 8) % 5) as u16;
    }
    1 + ((h >> 8) % 10_000) as u16
}

/// Band `b` as float32 `[t][y*W+x]`, nodata → NaN.
fn band_f32(b: usize) -> Vec<Vec<f32>> {
    (0..T)
        .map(|t| {
            (0..PX)
                .map(|p| match value(b, t, p / W, p % W) {
                    0 => f32::NAN,
                    v => v as f32,
                })
                .collect()
        })
        .collect()
}

/// Reference values, computed with plain loops.
struct Reference {
    nir: Vec<Vec<f32>>,
    ndvi: Vec<Vec<f32>>,
}

fn reference() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let red = band_f32(0);
        let nir = band_f32(1);
        let ndvi = (0..T)
            .map(|t| {
                (0..PX)
                    .map(|p| {
                        let (r, n) = (red[t][p], nir[t][p]);
                        (n - r) / (n + r)
                    })
                    .collect()
            })
            .collect();
        Reference { nir, ndvi }
    })
}

/// Nan-mean along time (f64 sum), NaN when no valid value.
fn mean_ref(x: &[Vec<f32>]) -> Vec<f32> {
    (0..PX)
        .map(|p| {
            let (mut s, mut c) = (0f64, 0u32);
            for a in x {
                if !a[p].is_nan() {
                    s += a[p] as f64;
                    c += 1;
                }
            }
            if c == 0 {
                f32::NAN
            } else {
                (s / c as f64) as f32
            }
        })
        .collect()
}

fn tmp_base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// A fresh scratch directory under the target's tmp dir (removed when dropped).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ooc-")
        .tempdir_in(tmp_base())
        .unwrap()
}

/// Remove leftovers of earlier (killed) test processes: `<prefix><pid>` whose pid is gone.
fn clean_stale(prefix: &str) {
    if let Ok(rd) = std::fs::read_dir(tmp_base()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix(prefix) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// Write the tiles and a manifest for `bands` (name, generator) under `dir`; returns the
/// manifest path.
fn write_tiles(dir: &Path, t_n: usize, h: usize, w: usize, bands: &[(&str, &PixelFn)]) -> PathBuf {
    let spec = TifSpec {
        width: w,
        height: h,
        compress: false,
        ..TifSpec::default()
    };
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for (band, f) in bands {
        for t in 0..t_n {
            let year = 2001 + t as i32;
            let rel = format!("tiles/{band}_{year}.tif");
            let mut v = Vec::with_capacity(w * h);
            for y in 0..h {
                for x in 0..w {
                    v.push(f(t, y, x));
                }
            }
            write_tif(&dir.join(&rel), &spec, &v);
            rows.push((rel, band.to_string(), year.to_string()));
        }
    }
    let m = dir.join("manifest.csv");
    write_manifest(&m, &rows);
    m
}

fn ingest(manifest: &Path, out: &Path, chunks: &str) {
    let args = [
        "ingest",
        "--manifest",
        s(manifest),
        "--out",
        s(out),
        "--chunks",
        chunks,
        "--quiet",
    ];
    let (st, o, e) = run(args);
    assert!(
        st.success(),
        "ingest failed\n{}",
        describe(&args, &st, &o, &e)
    );
}

/// The generated cube (red, nir), ingested once per test process.
fn cube_path() -> &'static Path {
    static CUBE: OnceLock<PathBuf> = OnceLock::new();
    CUBE.get_or_init(|| {
        let prefix = "ooc-cube-";
        clean_stale(prefix);
        let dir = tmp_base().join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let red = |t, y, x| value(0, t, y, x);
        let nir = |t, y, x| value(1, t, y, x);
        let m = write_tiles(&dir.join("src"), T, H, W, &[("red", &red), ("nir", &nir)]);
        let cube = dir.join("cube");
        ingest(&m, &cube, STORED);
        assert_eq!(
            common::stored_chunks(&cube, "red") as u64,
            CHUNKS_PER_BAND,
            "every chunk of red is stored (none all-nodata)"
        );
        assert_eq!(common::stored_chunks(&cube, "nir") as u64, CHUNKS_PER_BAND);
        cube
    })
}

fn cube_str() -> &'static str {
    s(cube_path())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn cfg(limit: u64, spill: &Path) -> ExecConfig {
    ExecConfig {
        threads: 2,
        memory_limit: limit,
        quiet: true,
        spill_dir: Some(spill.to_path_buf()),
        ..ExecConfig::default()
    }
}

fn open(limit: u64, spill: &Path) -> Cube {
    let c = Cube::open_with(cube_str(), cfg(limit, spill)).expect("open the generated cube");
    c.store().counters().reset();
    c
}

/// red and nir, lazily in `chunks`.
fn bands(cube: &Cube, chunks: &str) -> (DataArray, DataArray) {
    let ds = cube
        .load(
            &Query::new()
                .measurements(&["red", "nir"])
                .chunks(ChunkSpec::parse(chunks).unwrap()),
        )
        .expect("lazy load");
    (ds["red"].clone(), ds["nir"].clone())
}

fn ndvi_of(red: &DataArray, nir: &DataArray) -> DataArray {
    (&(nir - red) / &(nir + red)).rename("ndvi")
}

/// Parse a byte size as `format_bytes` prints it ("440.12 kB", "1.50 MB", "900 B").
fn parse_size(t: &str) -> u64 {
    let t = t.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, u) = t.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("size {t:?}"));
    let m = match u.trim() {
        "B" | "" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        other => panic!("unit {other:?} in {t:?}"),
    };
    (n * m).round() as u64
}

/// The minimum a memory-limit error states ("... use at least N ..."), in bytes.
fn stated_minimum(msg: &str) -> u64 {
    parse_size(&common::stated_minimum(msg))
}

/// The minimum from a library error that must be a memory-limit error.
fn minimum_of<T>(r: Result<T, chunkcube::cube::CubeError>, what: &str) -> u64 {
    match r {
        Ok(_) => panic!("{what}: expected a memory-limit error"),
        Err(e) => {
            let is_limit = matches!(&e, chunkcube::cube::CubeError::Exec(x) if matches!(x, ExecError::MemoryLimit { .. }));
            let msg = e.to_string();
            assert!(
                is_limit,
                "{what}: expected ExecError::MemoryLimit, got: {msg}"
            );
            assert!(msg.contains("--memory-limit"), "{what}: {msg}");
            stated_minimum(&msg)
        }
    }
}

/// Entries of a directory (names).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn assert_empty(dir: &Path, when: &str) {
    let e = entries(dir);
    assert!(
        e.is_empty(),
        "spill dir {} not empty {when}: {e:?}",
        dir.display()
    );
}

/// Compare float32 values (NaN equals NaN) with a relative tolerance.
fn compare(what: &str, got: &[f32], want: &[f32], tol: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, want {}", got.len(), want.len()));
    }
    let mut bad = Vec::new();
    let mut n_bad = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            !g.is_nan() && (g - w).abs() <= tol * w.abs().max(1.0)
        };
        if !ok {
            n_bad += 1;
            if bad.len() < 6 {
                bad.push(format!(
                    "(t={}, y={}, x={}): got {g}, want {w}",
                    i / PX,
                    (i % PX) / W,
                    i % W
                ));
            }
        }
    }
    if n_bad == 0 {
        Ok(())
    } else {
        Err(format!(
            "{what}: {n_bad} of {} values differ from the reference, e.g. {}",
            want.len(),
            bad.join("; ")
        ))
    }
}

impl Checks {
    fn values(&mut self, what: &str, got: &[f32], want: &[f32], tol: f32) {
        if let Err(m) = compare(what, got, want, tol) {
            self.check(false, || m);
        }
    }
}

fn flat(x: &[Vec<f32>]) -> Vec<f32> {
    x.iter().flatten().copied().collect()
}

/// A band of an output cube as flat float32 (through chunkcube's eager load, large limit).
fn read_out(cube: &Path, band: &str) -> Vec<f32> {
    let a = common::load_band::<f32>(cube, band);
    a.iter().copied().collect()
}

/// Failed expectations collected through a test, reported together at its end (so one bug
/// does not hide the others).
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            eprintln!("CHECK FAILED: {m}");
            self.0.push(m);
        }
    }
    fn finish(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// Per-key fetch counts: every stored chunk of `bands` fetched exactly once, nothing else.
fn check_each_read_once(c: &mut Checks, cube: &Cube, bands: &[&str], what: &str) {
    let per = cube.store().counters().per_key();
    let mut more: Vec<(&String, &u32)> = per.iter().filter(|(_, n)| **n != 1).collect();
    more.sort();
    let n_more = more.len();
    more.truncate(6);
    c.check(n_more == 0, || {
        format!("{what}: {n_more} stored chunks fetched more than once, e.g. {more:?}")
    });
    for b in bands {
        let n = per
            .keys()
            .filter(|k| k.starts_with(&format!("{b}/")))
            .count() as u64;
        c.check(n == CHUNKS_PER_BAND, || {
            format!("{what}: {n} distinct stored chunks of {b} fetched, want {CHUNKS_PER_BAND}")
        });
    }
    let others: Vec<&String> = per
        .keys()
        .filter(|k| !bands.iter().any(|b| k.starts_with(&format!("{b}/"))))
        .collect();
    c.check(others.is_empty(), || {
        format!("{what}: chunks of other arrays fetched: {others:?}")
    });
}

fn calc_args(extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["calc".into(), cube_str().into()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Run `chunkcube calc CUBE ARGS`; returns (status, stdout, stderr, description).
fn calc(extra: &[&str]) -> (std::process::ExitStatus, String, String, String) {
    let args = calc_args(extra);
    let (st, o, e) = run(&args);
    let d = describe(&args, &st, &o, &e);
    (st, o, e, d)
}

/// The minimum stated by a CLI run that must fail with a memory-limit error (one line).
fn cli_minimum(extra: &[&str]) -> u64 {
    let (st, _, e, d) = calc(extra);
    assert_eq!(st.code(), Some(1), "expected a memory-limit error\n{d}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line\n{d}");
    assert!(lines[0].starts_with("error: "), "{d}");
    assert!(lines[0].contains("--memory-limit"), "{d}");
    stated_minimum(lines[0])
}

/// `calc BASE... --memory-limit LIMIT --threads 2` spilling into `spill`, writing `out` and
/// `stats`; panics unless it succeeds; returns the stats as [`stats_json`] does.
fn calc_limited(
    base: &[&str],
    limit: u64,
    spill: &Path,
    out: &Path,
    stats: &Path,
) -> (u64, u64, u64, u64) {
    let limit = limit.to_string();
    let extra = [
        "--memory-limit",
        &limit,
        "--threads",
        "2",
        "--spill-dir",
        s(spill),
        "--out",
        s(out),
        "--stats",
        s(stats),
    ];
    let (st, _, _, d) = calc(&[base, &extra[..]].concat());
    assert!(st.success(), "{d}");
    stats_json(stats)
}

/// Read a `--stats` file.
fn stats_json(p: &Path) -> (u64, u64, u64, u64) {
    let j = read_json(p);
    let g = |k: &str| {
        j[k].as_u64()
            .unwrap_or_else(|| panic!("--stats has no {k}: {j}"))
    };
    (
        g("chunks_read"),
        g("spilled_bytes"),
        g("peak_tracked_bytes"),
        g("memory_limit"),
    )
}

/// A work dir with an empty `spill/` inside.
fn work() -> (tempfile::TempDir, PathBuf) {
    let w = scratch();
    let spill = w.path().join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    (w, spill)
}

/// The spill area of a live session: created under `spill` (when the run spilled).
fn check_spill_area(c: &mut Checks, cube: &Cube, spill: &Path, what: &str) {
    match cube.session().spill_dir() {
        Some(d) => c.check(
            d.parent() == Some(spill)
                && d.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("chunkcube-spill-"),
            || {
                format!(
                    "{what}: spill area {} is not a chunkcube-spill-* dir in {}",
                    d.display(),
                    spill.display()
                )
            },
        ),
        None => c.check(false, || {
            format!("{what}: spilled but the session has no spill dir")
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. NDVI under a small limit
// ---------------------------------------------------------------------------------------------

/// The minimum the planner states for NDVI written in the stored chunks (library).
fn ndvi_minimum() -> u64 {
    let sp = scratch();
    let cube = open(16 << 10, sp.path());
    let (red, nir) = bands(&cube, STORED);
    let ndvi = ndvi_of(&red, &nir);
    let out = sp.path().join("never");
    let m = minimum_of(ndvi.to_zarr(s(&out), false), "ndvi under 16 KiB");
    assert!(!common::cube_opens(&out), "a refused run writes no cube");
    assert_eq!(cube.session().stats().chunks_read, 0, "refused at planning");
    m
}

#[test]
fn ndvi_under_a_small_limit_equals_the_reference_and_reads_each_chunk_once() {
    let min = ndvi_minimum();
    // Smaller than the stored cube (3 MiB) and its float32 result (3 MiB), encoder and
    // decoder contexts counted.
    assert!(min < 2 << 20, "NDVI needs {min} B per task");
    let limit = min + min / 10;
    let (w, spill) = work();
    let out = w.path().join("ndvi.zarr");
    let mut c = Checks::default();
    {
        let cube = open(limit, &spill);
        let (red, nir) = bands(&cube, STORED);
        let ndvi = ndvi_of(&red, &nir);
        ndvi.to_zarr(s(&out), false).expect("ndvi to_zarr");
        let st = cube.session().stats();
        eprintln!("ndvi library, limit {limit}: {st:?}");
        c.check(st.peak_tracked_bytes <= limit, || {
            format!(
                "peak_tracked_bytes {} > memory_limit {limit}",
                st.peak_tracked_bytes
            )
        });
        c.check(st.peak_tracked_bytes > 0, || "nothing tracked".into());
        c.check(st.memory_limit == limit, || format!("{st:?}"));
        c.check(st.chunks_read == CHUNKS_BOTH, || {
            format!(
                "chunks_read {} with limit {limit}, want {CHUNKS_BOTH} (each stored chunk once)",
                st.chunks_read
            )
        });
        c.check(st.chunks_written == CHUNKS_PER_BAND, || format!("{st:?}"));
        c.check(st.spilled_bytes == 0, || {
            format!("NDVI needs no spill: {st:?}")
        });
        check_each_read_once(&mut c, &cube, &["red", "nir"], "ndvi (library)");
    }
    assert_empty(&spill, "after NDVI");
    c.values(
        "ndvi (library)",
        &read_out(&out, "ndvi"),
        &flat(&reference().ndvi),
        0.0,
    );
    c.finish("NDVI under a small limit (library)");
}

#[test]
fn ndvi_cli_under_a_small_limit() {
    let (w, spill) = work();
    let out = w.path().join("ndvi.zarr");
    let stats = w.path().join("stats.json");
    let min = cli_minimum(&[
        "--expr",
        NDVI,
        "--memory-limit",
        "16KiB",
        "--out",
        s(&out),
        "-q",
    ]);
    assert!(!common::cube_opens(&out), "a refused run writes no cube");
    assert!(min < 2 << 20, "NDVI needs {min} B");
    let limit = min + min / 10;
    let (st, _, _, d) = calc(&[
        "--expr",
        NDVI,
        "--memory-limit",
        &limit.to_string(),
        "--threads",
        "2",
        "--spill-dir",
        s(&spill),
        "--out",
        s(&out),
        "--stats",
        s(&stats),
        "-q",
    ]);
    assert!(st.success(), "{d}");
    let (read, spilled, peak, lim) = stats_json(&stats);
    let mut c = Checks::default();
    c.check(lim == limit, || format!("memory_limit {lim}, want {limit}"));
    c.check(peak <= limit, || {
        format!("peak_tracked_bytes {peak} > memory_limit {limit}")
    });
    c.check(read == CHUNKS_BOTH, || {
        format!("chunks_read {read} with --memory-limit {limit}, want {CHUNKS_BOTH} (each stored chunk once)")
    });
    c.check(spilled == 0, || format!("NDVI spilled {spilled} B"));
    assert_empty(&spill, "after the NDVI run");
    c.values(
        "ndvi (cli)",
        &read_out(&out, "ndvi"),
        &flat(&reference().ndvi),
        0.0,
    );
    c.finish("NDVI under a small limit (CLI)");
}

/// Whether the planner accepts `limit` for NDVI in the stored chunks (probed on one time step:
/// planning looks at one task, so the answer is the same for the whole cube).
fn ndvi_accepts(limit: u64, dir: &Path) -> bool {
    let cube = open(limit, dir);
    let (red, nir) = bands(&cube, STORED);
    let one = ndvi_of(&red, &nir).isel(&[("time", 0..1)]).unwrap();
    let out = tempfile::tempdir_in(dir).unwrap();
    match one.to_zarr(s(&out.path().join("o.zarr")), false) {
        Ok(()) => true,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("--memory-limit"), "limit {limit}: {msg}");
            false
        }
    }
}

/// Any limit the planner accepts keeps the tracked peak within it: the smallest accepted one
/// (one task at a time), a little more, and just enough for two tasks at once.
#[test]
fn tracked_peak_stays_within_every_limit_the_planner_accepts() {
    let sp = scratch();
    // The smallest limit the planner accepts, by bisection between a refused and an accepted one.
    let (mut lo, mut hi) = (16u64 << 10, 4u64 << 20);
    assert!(!ndvi_accepts(lo, sp.path()) && ndvi_accepts(hi, sp.path()));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ndvi_accepts(mid, sp.path()) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let accepted = hi;
    eprintln!("smallest accepted limit for NDVI: {accepted} B");
    let mut c = Checks::default();
    for (i, limit) in [accepted, accepted + accepted / 20, 2 * accepted + 1]
        .into_iter()
        .enumerate()
    {
        let out = sp.path().join(format!("ndvi{i}.zarr"));
        let cube = open(limit, sp.path());
        let (red, nir) = bands(&cube, STORED);
        let r = ndvi_of(&red, &nir).to_zarr(s(&out), false);
        c.check(r.is_ok(), || {
            format!("limit {limit} (accepted by the planner): {:?}", r.err())
        });
        let st = cube.session().stats();
        eprintln!("limit {limit}: {st:?}");
        c.check(st.peak_tracked_bytes <= limit, || {
            format!(
                "limit {limit} (smallest accepted: {accepted}): peak_tracked_bytes {} exceeds it",
                st.peak_tracked_bytes
            )
        });
    }
    c.finish("tracked peak within accepted limits");
}

// ---------------------------------------------------------------------------------------------
// 2. Median over time with time stacks larger than the limit
// ---------------------------------------------------------------------------------------------

/// Query chunks covering a whole 256×256 plane: each task needs the 12-step stack of 3 MiB.
const PLANE: &str = "time=1,y=256,x=256";
const STACK_BYTES: u64 = (T * PX * 4) as u64;

/// Write the median over time of nir (in `PLANE` chunks) as "med" to `out` under `limit`;
/// returns the cube, for its stats and fetch counts.
fn write_median(limit: u64, spill: &Path, out: &Path) -> Cube {
    let cube = open(limit, spill);
    let (_, nir) = bands(&cube, PLANE);
    nir.median("time")
        .rename("med")
        .to_zarr(s(out), false)
        .expect("median to_zarr");
    cube
}

#[test]
fn median_over_time_rechunks_through_the_spill_store() {
    let min = median_minimum();
    let limit = min + min / 10;
    assert!(
        STACK_BYTES > limit,
        "the time stacks ({STACK_BYTES} B) must be larger than the limit ({limit} B)"
    );
    let (w, spill) = work();
    let out = w.path().join("median.zarr");
    let mut c = Checks::default();
    {
        let cube = write_median(limit, &spill, &out);
        let st = cube.session().stats();
        eprintln!("median library, limit {limit}: {st:?}");
        c.check(st.spilled_bytes > 0, || {
            format!("no spill although the stack exceeds the limit: {st:?}")
        });
        // The stacks of a stored uint16 band are spilled as stored (2 bytes a value).
        c.check(st.spilled_bytes >= (T * PX * 2) as u64, || {
            format!(
                "spilled {} B, less than the time stack as stored, {} B",
                st.spilled_bytes,
                T * PX * 2
            )
        });
        c.check(st.peak_tracked_bytes <= limit, || {
            format!(
                "peak_tracked_bytes {} > memory_limit {limit}",
                st.peak_tracked_bytes
            )
        });
        c.check(st.chunks_read == CHUNKS_PER_BAND, || {
            format!("chunks_read {}, want {CHUNKS_PER_BAND}", st.chunks_read)
        });
        check_each_read_once(&mut c, &cube, &["nir"], "median (library)");
        check_spill_area(&mut c, &cube, &spill, "median");
    }
    assert_empty(&spill, "after the median");
    let want = median_ref(&reference().nir);
    c.values(
        "median(nir, time) spilled",
        &read_out(&out, "med"),
        &want,
        0.0,
    );

    // The same median in memory (a large limit: no spill) gives the same values.
    {
        let cube = open(256 << 20, &spill);
        let (_, nir) = bands(&cube, PLANE);
        let v = nir
            .reduce(ReduceOp::Median, "time")
            .compute()
            .expect("median in memory");
        let st = cube.session().stats();
        c.check(st.spilled_bytes == 0, || {
            format!("a 256 MiB limit spilled: {st:?}")
        });
        let got: Vec<f32> = v
            .as_f32()
            .expect("float32 median")
            .iter()
            .copied()
            .collect();
        c.values("median(nir, time) in memory", &got, &want, 0.0);
    }
    assert_empty(&spill, "after the in-memory median");

    // Computed into memory under its own minimum: the result is held whole and the spilled
    // stacks are shared among helper threads (the path a cube write takes when streaming
    // its chunk would not pay).
    let min_c = {
        let sp = scratch();
        let cube = open(16 << 10, sp.path());
        let (_, nir) = bands(&cube, PLANE);
        minimum_of(nir.median("time").compute(), "median compute under 16 KiB")
    };
    let limit_c = min_c + min_c / 10;
    {
        let cube = open(limit_c, &spill);
        let (_, nir) = bands(&cube, PLANE);
        let v = nir.median("time").compute().expect("median computed");
        let st = cube.session().stats();
        c.check(st.spilled_bytes > 0, || {
            format!("computing under {limit_c} B did not spill: {st:?}")
        });
        c.check(st.peak_tracked_bytes <= limit_c, || {
            format!("peak {} > {limit_c}", st.peak_tracked_bytes)
        });
        check_each_read_once(&mut c, &cube, &["nir"], "median computed (library)");
        let got: Vec<f32> = v.as_f32().expect("float32").iter().copied().collect();
        c.values("median(nir, time) computed, spilled", &got, &want, 0.0);
    }
    assert_empty(&spill, "after the computed median");
    c.finish("median over time (library)");
}

#[test]
fn median_over_time_streamed_to_its_chunk_under_a_roomier_limit() {
    // 4 MiB: the stack (3 MiB) still spills, and a task that writes its chunk strip by strip
    // leaves room for two at once, so the result is never whole in memory.
    let limit = 4u64 << 20;
    assert!(STACK_BYTES > limit / 8, "the stack must spill");
    let (w, spill) = work();
    let out = w.path().join("median.zarr");
    let mut c = Checks::default();
    {
        let cube = write_median(limit, &spill, &out);
        let st = cube.session().stats();
        eprintln!("median streamed, limit {limit}: {st:?}");
        c.check(st.spilled_bytes >= (T * PX * 2) as u64, || {
            format!(
                "spilled {} B, less than the stack as stored",
                st.spilled_bytes
            )
        });
        c.check(st.peak_tracked_bytes <= limit, || {
            format!("peak_tracked_bytes {} > {limit}", st.peak_tracked_bytes)
        });
        // No task holds its result whole: each writes its chunk strip by strip (a spilled
        // median streamed, or row strips of streamed chunks), as `explain` tells.
        let (_, nir) = bands(&cube, PLANE);
        let paths: Vec<String> = nir
            .median("time")
            .explain()
            .task_shapes
            .into_iter()
            .map(|t| t.path)
            .collect();
        c.check(
            !paths.is_empty() && paths.iter().all(|p| p == "streamed" || p == "strips"),
            || format!("task paths {paths:?}, want each written strip by strip"),
        );
        c.check(st.chunks_read == CHUNKS_PER_BAND, || {
            format!("chunks_read {}, want {CHUNKS_PER_BAND}", st.chunks_read)
        });
        check_each_read_once(&mut c, &cube, &["nir"], "median streamed");
    }
    assert_empty(&spill, "after the streamed median");
    let stray: Vec<String> = common::tree_bytes(&out)
        .into_keys()
        .filter(|f| f.ends_with(".tmp"))
        .collect();
    c.check(stray.is_empty(), || {
        format!("temporary files left: {stray:?}")
    });
    c.values(
        "median(nir, time) streamed",
        &read_out(&out, "med"),
        &median_ref(&reference().nir),
        0.0,
    );
    c.finish("median over time, streamed");
}

/// The generated cube again, in stored chunks of two time steps.
fn cube_t2_path() -> &'static Path {
    static CUBE: OnceLock<PathBuf> = OnceLock::new();
    CUBE.get_or_init(|| {
        let base = cube_path().parent().unwrap();
        let cube = base.join("cube-t2");
        let _ = std::fs::remove_dir_all(&cube);
        ingest(
            &base.join("src").join("manifest.csv"),
            &cube,
            "time=2,y=128,x=128",
        );
        cube
    })
}

#[test]
fn median_over_a_selection_across_time_chunks_reads_each_stored_chunk_once() {
    // The selection starts at step 1 of chunks of two steps, so slabs of the time walk and
    // stored chunks do not line up: still, no stored chunk may be fetched twice.
    let nir_of = |cube: &Cube| {
        let ds = cube
            .load(
                &Query::new()
                    .measurements(&["nir"])
                    .chunks(ChunkSpec::parse(PLANE).unwrap()),
            )
            .expect("lazy load");
        ds["nir"].isel(&[("time", 1..T as u64)]).unwrap()
    };
    let min = {
        let sp = scratch();
        let cube = Cube::open_with(s(cube_t2_path()), cfg(16 << 10, sp.path())).unwrap();
        minimum_of(
            nir_of(&cube)
                .median("time")
                .to_zarr(s(&sp.path().join("x")), false),
            "median under 16 KiB",
        )
    };
    let want = median_ref(&reference().nir[1..]);
    let mut c = Checks::default();
    // The planner's minimum (the whole result held) and a roomier limit (streamed tasks).
    for limit in [min + min / 10, 4 << 20] {
        let (w, spill) = work();
        let out = w.path().join("median.zarr");
        {
            let cube = Cube::open_with(s(cube_t2_path()), cfg(limit, &spill)).unwrap();
            cube.store().counters().reset();
            nir_of(&cube)
                .median("time")
                .rename("med")
                .to_zarr(s(&out), false)
                .expect("median to_zarr");
            let st = cube.session().stats();
            eprintln!("median over time chunks of 2, limit {limit}: {st:?}");
            c.check(st.spilled_bytes > 0, || {
                format!("limit {limit}: no spill: {st:?}")
            });
            let per = cube.store().counters().per_key();
            let twice: Vec<_> = per.iter().filter(|(_, n)| **n != 1).collect();
            c.check(twice.is_empty(), || {
                format!("limit {limit}: stored chunks fetched more than once: {twice:?}")
            });
            // Steps 1..12 lie in all six stored time chunks, each over 2×2 spatial chunks.
            c.check(per.len() == 24, || {
                format!(
                    "limit {limit}: {} distinct stored chunks fetched, want 24",
                    per.len()
                )
            });
        }
        assert_empty(&spill, "after the median");
        c.values(
            &format!("median(nir[1..], time), limit {limit}"),
            &read_out(&out, "med"),
            &want,
            0.0,
        );
    }
    c.finish("median over a selection across time chunks");
}

#[test]
fn median_of_ndvi_cli_spills_and_matches() {
    let (w, spill) = work();
    let out = w.path().join("median.zarr");
    let stats = w.path().join("stats.json");
    let base = [
        "--expr",
        NDVI,
        "--reduce",
        "median:time",
        "--chunks",
        PLANE,
        "-q",
    ];
    let min = cli_minimum(&[&base[..], &["--memory-limit", "16KiB", "--out", s(&out)]].concat());
    let limit = min + min / 10;
    assert!(
        STACK_BYTES > limit,
        "stack {STACK_BYTES} B vs limit {limit} B"
    );
    let (read, spilled, peak, _) = calc_limited(&base, limit, &spill, &out, &stats);
    eprintln!("median cli: {}", read_json(&stats));
    let mut c = Checks::default();
    c.check(spilled >= STACK_BYTES, || {
        format!("spilled_bytes {spilled} < the time stack {STACK_BYTES}")
    });
    c.check(peak <= limit, || {
        format!("peak_tracked_bytes {peak} > memory_limit {limit}")
    });
    c.check(read == CHUNKS_BOTH, || {
        format!("chunks_read {read} with --memory-limit {limit}, want {CHUNKS_BOTH} (each stored chunk once)")
    });
    assert_empty(&spill, "after the median run");
    c.values(
        "median(ndvi, time) (cli)",
        &read_out(&out, "ndvi"),
        &median_ref(&reference().ndvi),
        1e-6,
    );
    c.finish("median of NDVI (CLI)");
}

// ---------------------------------------------------------------------------------------------
// 3. A persisted intermediate used twice
// ---------------------------------------------------------------------------------------------

#[test]
fn persisted_ndvi_used_twice_is_not_recomputed() {
    // Minimums: of the persist, then of the two computations that read it.
    let sp = scratch();
    let m1 = {
        let cube = open(16 << 10, sp.path());
        let (red, nir) = bands(&cube, STORED);
        let mut ndvi = ndvi_of(&red, &nir);
        minimum_of(ndvi.persist(), "persist under 16 KiB")
    };
    let (m2, m3) = {
        let cube = open(m1, sp.path());
        let (red, nir) = bands(&cube, STORED);
        let mut ndvi = ndvi_of(&red, &nir);
        ndvi.persist().expect("persist at its stated minimum");
        let anom = (&ndvi - &ndvi.mean("time")).rename("anom");
        let dbl = (&ndvi * 2.0).rename("dbl");
        let m = |r: Result<(), chunkcube::cube::CubeError>| match r {
            Ok(()) => m1,
            Err(e) => stated_minimum(&e.to_string()),
        };
        (
            m(anom.to_zarr(s(&sp.path().join("a")), false)),
            m(dbl.to_zarr(s(&sp.path().join("b")), false)),
        )
    };
    let min = m1.max(m2).max(m3);
    let limit = min + min / 10;
    let ndvi_bytes = (T * PX * 4) as u64;
    assert!(
        ndvi_bytes > limit / 4,
        "the persisted array must exceed what stays in memory"
    );
    // (Encoder and decoder contexts counted.)
    assert!(limit < 4 << 20, "persist workloads need {limit} B");

    let (w, spill) = work();
    let (out_a, out_d) = (w.path().join("anom.zarr"), w.path().join("dbl.zarr"));
    let mut c = Checks::default();
    {
        let cube = open(limit, &spill);
        let (red, nir) = bands(&cube, STORED);
        let mut ndvi = ndvi_of(&red, &nir);
        ndvi.persist().expect("persist");
        let after_persist = cube.session().stats();
        eprintln!("persist, limit {limit}: {after_persist:?}");
        c.check(after_persist.chunks_read == CHUNKS_BOTH, || {
            format!(
                "persist read {} stored chunks, want {CHUNKS_BOTH}",
                after_persist.chunks_read
            )
        });
        c.check(after_persist.spilled_bytes > 0, || {
            format!("a {ndvi_bytes} B persisted array under limit {limit} spilled nothing")
        });
        c.check(
            after_persist.spilled_bytes <= ndvi_bytes
                && after_persist.spilled_bytes >= ndvi_bytes - limit / 4,
            || {
                format!(
                    "spilled {} B; the array has {ndvi_bytes} B and at most {} stay in memory",
                    after_persist.spilled_bytes,
                    limit / 4
                )
            },
        );
        check_spill_area(&mut c, &cube, &spill, "persist");
        let anom = (&ndvi - &ndvi.mean("time")).rename("anom");
        anom.to_zarr(s(&out_a), false).expect("anom to_zarr");
        let dbl = (&ndvi * 2.0).rename("dbl");
        dbl.to_zarr(s(&out_d), false).expect("dbl to_zarr");
        let st = cube.session().stats();
        eprintln!("after both uses: {st:?}");
        c.check(st.chunks_read == after_persist.chunks_read, || {
            format!("computations over the persisted array fetched stored chunks again: chunks_read {} after the persist, {} after", after_persist.chunks_read, st.chunks_read)
        });
        c.check(st.peak_tracked_bytes <= limit, || {
            format!(
                "peak_tracked_bytes {} > memory_limit {limit}",
                st.peak_tracked_bytes
            )
        });
        check_each_read_once(&mut c, &cube, &["red", "nir"], "persist + two uses");
    }
    assert_empty(&spill, "after persist and its uses");
    let r = reference();
    let mean = mean_ref(&r.ndvi);
    let anom: Vec<f32> = (0..T * PX)
        .map(|i| r.ndvi[i / PX][i % PX] - mean[i % PX])
        .collect();
    let dbl: Vec<f32> = flat(&r.ndvi).iter().map(|v| v * 2.0).collect();
    c.values(
        "ndvi - mean(ndvi, time)",
        &read_out(&out_a, "anom"),
        &anom,
        1e-6,
    );
    c.values("ndvi * 2", &read_out(&out_d, "dbl"), &dbl, 0.0);
    c.finish("persisted NDVI used twice (library)");
}

/// Run the CLI at the limits it states until it accepts one; returns (limit, stated minimums).
fn cli_accepted_limit(base: &[&str], out: &Path) -> (u64, Vec<u64>) {
    let mut limit = 16u64 << 10;
    let mut stated = Vec::new();
    for _ in 0..4 {
        let (st, _, e, d) = calc(
            &[
                base,
                &[
                    "--memory-limit",
                    &limit.to_string(),
                    "--out",
                    s(out),
                    "--overwrite",
                ],
            ]
            .concat(),
        );
        if st.success() {
            return (limit, stated);
        }
        assert_eq!(st.code(), Some(1), "{d}");
        assert!(
            e.contains("--memory-limit"),
            "expected a memory-limit error\n{d}"
        );
        let m = stated_minimum(&e);
        assert!(
            m > limit,
            "the stated minimum {m} is not above the refused limit {limit}\n{d}"
        );
        stated.push(m);
        limit = m;
    }
    panic!("no accepted limit after following the stated minimums {stated:?}");
}

#[test]
fn persisted_expr_reused_by_a_later_expr_cli() {
    let (w, spill) = work();
    let out = w.path().join("out.zarr");
    let stats = w.path().join("stats.json");
    let base = ["--expr", NDVI, "--expr", "anom=ndvi-mean(ndvi, time)", "-q"];
    let (min, _) = cli_accepted_limit(&base, &w.path().join("probe.zarr"));
    let limit = min + min / 10;
    let ndvi_bytes = (T * PX * 4) as u64;
    assert!(ndvi_bytes > limit / 4);
    let (read, spilled, peak, _) = calc_limited(&base, limit, &spill, &out, &stats);
    eprintln!("persist cli: {}", read_json(&stats));
    let mut c = Checks::default();
    c.check(read == CHUNKS_BOTH, || {
        format!("chunks_read {read} with --memory-limit {limit}, want {CHUNKS_BOTH}: the persisted ndvi must be read, not recomputed")
    });
    c.check(spilled > 0, || {
        format!("ndvi ({ndvi_bytes} B) > limit/4 but nothing spilled")
    });
    c.check(peak <= limit, || {
        format!("peak_tracked_bytes {peak} > memory_limit {limit}")
    });
    assert_empty(&spill, "after the two-expression run");
    let r = reference();
    let mean = mean_ref(&r.ndvi);
    let anom: Vec<f32> = (0..T * PX)
        .map(|i| r.ndvi[i / PX][i % PX] - mean[i % PX])
        .collect();
    c.values(
        "ndvi (cli, persisted)",
        &read_out(&out, "ndvi"),
        &flat(&r.ndvi),
        0.0,
    );
    c.values("anom (cli)", &read_out(&out, "anom"), &anom, 1e-6);
    c.finish("two --expr with a persisted first one (CLI)");
}

// ---------------------------------------------------------------------------------------------
// 4. The spill directory is empty after success (above), failure and interruption
// ---------------------------------------------------------------------------------------------

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let (p, q) = (e.path(), dst.join(e.file_name()));
        if p.is_dir() {
            copy_dir(&p, &q);
        } else {
            std::fs::copy(&p, &q).unwrap();
        }
    }
}

/// A copy of the cube with one late nir chunk (t=9, y=1, x=1) damaged: bytes flipped in its
/// middle (the chunk checksum no longer matches).
fn corrupt_copy(dst: &Path) -> &'static str {
    copy_dir(cube_path(), dst);
    let f = dst.join("nir/c/9/1/1");
    let mut b = std::fs::read(&f).unwrap();
    let mid = b.len() / 2;
    for v in &mut b[mid..mid + 64] {
        *v ^= 0xA5;
    }
    std::fs::write(&f, b).unwrap();
    "9/1/1"
}

/// The minimum the planner states for `nir.median("time")` in whole planes (library).
fn median_minimum() -> u64 {
    let sp = scratch();
    let cube = open(16 << 10, sp.path());
    let (_, nir) = bands(&cube, PLANE);
    minimum_of(
        nir.median("time").to_zarr(s(&sp.path().join("x")), false),
        "median under 16 KiB",
    )
}

#[test]
fn spill_dir_is_removed_after_a_failure_library() {
    let limit = {
        let m = median_minimum();
        m + m / 10
    };
    let (w, spill) = work();
    let bad = w.path().join("bad.zarr");
    let key = corrupt_copy(&bad);
    let out = w.path().join("median.zarr");
    let mut c = Checks::default();
    {
        let cube = Cube::open_with(s(&bad), cfg(limit, &spill)).unwrap();
        let (_, nir) = bands(&cube, PLANE);
        let r = nir.median("time").to_zarr(s(&out), false);
        let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
        c.check(msg.contains("nir") && msg.contains(key), || {
            format!("the median over a corrupt chunk must fail naming nir and {key}: {msg:?}")
        });
        let st = cube.session().stats();
        c.check(st.spilled_bytes > 0, || {
            format!("time steps before the corrupt one were spilled: {st:?}")
        });
        check_spill_area(&mut c, &cube, &spill, "failed median");
    }
    assert_empty(&spill, "after a failed median (session dropped)");
    c.check(!common::cube_opens(&out), || {
        "a failed run left a cube that opens".into()
    });
    {
        let cube = Cube::open_with(s(&bad), cfg(limit, &spill)).unwrap();
        let (red, nir) = bands(&cube, STORED);
        let mut ndvi = ndvi_of(&red, &nir);
        let r = ndvi.persist();
        c.check(r.is_err(), || {
            "persist over a corrupt chunk must fail".into()
        });
    }
    assert_empty(&spill, "after a failed persist (session dropped)");
    c.finish("spill dir after failures (library)");
}

#[test]
fn spill_dir_is_removed_after_a_failure_cli() {
    let (w, spill) = work();
    let bad = w.path().join("bad.zarr");
    let key = corrupt_copy(&bad);
    let out = w.path().join("out.zarr");
    let mut c = Checks::default();
    // 8 MiB: room for every task, yet the 3 MiB time stacks and the 3 MiB persisted NDVI
    // exceed limit/4, so both runs create a spill area (after t=0..8 for the median) before
    // they reach the damaged chunk at t=9.
    for (what, args) in [
        (
            "median",
            vec![
                "--expr",
                NDVI,
                "--reduce",
                "median:time",
                "--chunks",
                PLANE,
                "--memory-limit",
                "8MiB",
            ],
        ),
        (
            "persist",
            vec![
                "--expr",
                NDVI,
                "--expr",
                "anom=ndvi-mean(ndvi, time)",
                "--memory-limit",
                "8MiB",
            ],
        ),
    ] {
        let mut a: Vec<String> = vec!["calc".into(), s(&bad).into()];
        a.extend(args.iter().map(|x| x.to_string()));
        a.extend(
            [
                "--spill-dir",
                s(&spill),
                "--out",
                s(&out),
                "--threads",
                "2",
                "-q",
            ]
            .map(String::from),
        );
        let (st, o, e) = run(&a);
        let d = describe(&a, &st, &o, &e);
        let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
        c.check(st.code() == Some(1), || {
            format!("{what}: exit 1 expected\n{d}")
        });
        c.check(
            lines.len() == 1
                && lines[0].starts_with("error: ")
                && lines[0].contains("nir")
                && lines[0].contains(key),
            || format!("{what}: one error line naming nir chunk {key}\n{d}"),
        );
        c.check(entries(&spill).is_empty(), || {
            format!(
                "{what}: spill dir not empty after the failure: {:?}",
                entries(&spill)
            )
        });
        c.check(!common::cube_opens(&out), || {
            format!("{what}: a failed run left a cube that opens")
        });
    }
    c.finish("spill dir after failures (CLI)");
}

/// Every path under `dir` (relative), depth first.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A larger cube for the interruption test: nir only, 16 × 512×512 in 256×256 chunks.
fn big_cube() -> &'static Path {
    static CUBE: OnceLock<PathBuf> = OnceLock::new();
    CUBE.get_or_init(|| {
        let prefix = "ooc-big-";
        clean_stale(prefix);
        let dir = tmp_base().join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nir = |t: usize, y: usize, x: usize| {
            let h = splitmix(((t * 512 + y) * 512 + x) as u64 ^ 0xb16);
            if h.is_multiple_of(10) {
                0
            } else {
                1 + ((h >> 8) % 10_000) as u16
            }
        };
        let m = write_tiles(&dir.join("src"), 16, 512, 512, &[("nir", &nir)]);
        let cube = dir.join("cube");
        // Two time steps per stored chunk: a median over it rechunks through the spill store
        // (row strips read one time step per stored chunk), which is what these tests watch.
        ingest(&m, &cube, "time=2,y=256,x=256");
        cube
    })
}

#[test]
fn spill_dir_is_removed_after_interruption() {
    let cube = big_cube();
    let (w, spill) = work();
    let out = w.path().join("out.zarr");
    let base: Vec<String> = [
        "calc",
        s(cube),
        "--expr",
        "v=nir*2",
        "--reduce",
        "median:time",
        "--chunks",
        "time=1,y=512,x=512",
        "--threads",
        "1",
        "-q",
    ]
    .map(String::from)
    .to_vec();
    let min = {
        let mut a = base.clone();
        a.extend(["--memory-limit", "16KiB", "--out", s(&out)].map(String::from));
        let (st, o, e) = run(&a);
        assert_eq!(st.code(), Some(1), "{}", describe(&a, &st, &o, &e));
        stated_minimum(&e)
    };
    let limit = (min + min / 10).to_string();
    let mut a = base.clone();
    a.extend(
        [
            "--memory-limit",
            &limit,
            "--spill-dir",
            s(&spill),
            "--out",
            s(&out),
            "--overwrite",
        ]
        .map(String::from),
    );
    // How long the spilling part of an uninterrupted run takes here: the signals land at
    // fractions of it, so the rounds interrupt mid-run on a fast machine and a slow one alike.
    let spilling = {
        let started = Instant::now();
        let mut child = Command::new(common::bin())
            .args(&a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut appeared = None;
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
            if appeared.is_none()
                && entries(&spill)
                    .iter()
                    .any(|e| e.starts_with("chunkcube-spill-"))
            {
                appeared = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let st = child.wait().unwrap();
        assert!(st.success(), "the timing run failed: {st:?}");
        assert_empty(&spill, "after a run that finished");
        appeared
            .map(|t| t.elapsed())
            .unwrap_or(Duration::from_millis(20))
    };
    eprintln!("spilling takes {spilling:?} uninterrupted");
    // The timing run committed `out`: every interrupted overwrite below must leave it whole.
    let mut committed = common::tree_bytes(&out);
    let want = read_out(&out, "v");
    let mut c = Checks::default();
    let mut interrupted = 0;
    for (round, (sig, percent)) in [
        (libc::SIGINT, 5u32),
        (libc::SIGTERM, 25),
        (libc::SIGINT, 50),
        (libc::SIGTERM, 60),
    ]
    .into_iter()
    .enumerate()
    {
        let delay_ms = (spilling * percent / 100).as_millis() as u64;
        let started = Instant::now();
        let mut child = Command::new(common::bin())
            .args(&a)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the run has a spill area, then interrupt it.
        let mut signalled = false;
        while started.elapsed() < Duration::from_secs(20) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if entries(&spill)
                .iter()
                .any(|e| e.starts_with("chunkcube-spill-"))
            {
                std::thread::sleep(Duration::from_millis(delay_ms));
                if child.try_wait().unwrap().is_some() {
                    break; // finished before the signal (checked below)
                }
                // SAFETY: signalling our own child process by its pid.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, sig);
                }
                signalled = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = started.elapsed();
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        eprintln!(
            "round {round}: signal {sig} at {at:?}, exit {:?} after {:?}: {err}",
            o.status,
            started.elapsed()
        );
        if o.status.success() {
            // A fast machine finished the whole run first (or its last instants raced the
            // signal): nothing was interrupted (the count of real interruptions is checked
            // below), and the new cube is whole.
            eprintln!("round {round}: finished before the signal; skipped");
            assert_empty(&spill, "after a run that finished");
            c.check(
                common::cube_opens(&out)
                    && compare("finished", &read_out(&out, "v"), &want, 0.0).is_ok(),
                || format!("round {round}: a run that finished left no whole cube"),
            );
            committed = common::tree_bytes(&out);
            continue;
        }
        assert!(
            signalled,
            "round {round}: the run ended before the signal ({:?}): {err}",
            o.status
        );
        c.check(o.status.code() == Some(130), || {
            format!("round {round} (signal {sig} {delay_ms} ms after the spill dir appeared): exit {:?}, want 130; stderr: {err}", o.status)
        });
        let left = entries(&spill);
        c.check(left.is_empty(), || {
            let tree: Vec<String> = walk(&spill).into_iter().take(6).collect();
            format!("round {round} (signal {sig} {delay_ms} ms after the spill dir appeared): spill dir not empty: {tree:?}")
        });
        // An overwrite writes beside the committed cube and swaps only when done: an
        // interrupted one leaves the old cube opening, byte for byte as it was. A signal that
        // lands after the swap finds the new cube committed, and must say so.
        if err.contains("was committed (it is complete)") {
            eprintln!("round {round}: interrupted after the commit");
            c.check(
                common::cube_opens(&out)
                    && compare("after commit", &read_out(&out, "v"), &want, 0.0).is_ok(),
                || format!("round {round}: said committed, but the new cube is not whole"),
            );
            committed = common::tree_bytes(&out);
        } else {
            interrupted += 1;
            c.check(
                err.contains("no output cube was committed"),
                || format!("round {round}: the interruption did not say whether the output was committed: {err}"),
            );
            c.check(
                common::cube_opens(&out) && common::tree_bytes(&out) == committed,
                || format!("round {round}: an interrupted overwrite changed the committed cube"),
            );
        }
        // The handler exits without destructors; it still releases the writer lock.
        let lock = w.path().join("out.zarr.chunkcube-lock");
        c.check(!lock.exists(), || {
            format!("round {round}: the interrupted run left its writer lock")
        });
        // Start the next round clean whatever happened.
        for e in left {
            let _ = std::fs::remove_dir_all(spill.join(e));
        }
    }
    c.check(interrupted >= 2, || {
        format!("only {interrupted} of 4 rounds were interrupted mid-run: the workload is too small to test interruption")
    });
    c.finish("spill dir after interruption");
}

/// A run killed with SIGKILL (which no handler sees) leaves its spill directory; the next run
/// that spills there removes it and says so, and leaves the directories of live processes.
#[test]
fn stale_spill_dirs_of_killed_runs_are_removed_by_the_next_run() {
    let cube = big_cube();
    let (w, spill) = work();
    let out = w.path().join("out.zarr");
    let mut args: Vec<String> = [
        "calc",
        s(cube),
        "--expr",
        "v=nir*2",
        "--reduce",
        "median:time",
        "--chunks",
        "time=1,y=512,x=512",
        "--threads",
        "1",
        "-q",
        "--spill-dir",
        s(&spill),
        "--out",
        s(&out),
        "--overwrite",
        "--memory-limit",
        "16KiB",
    ]
    .map(String::from)
    .to_vec();
    // Near the smallest limit, so that the run spills.
    let (st, o, e) = run(&args);
    assert_eq!(st.code(), Some(1), "{}", describe(&args, &st, &o, &e));
    let min = stated_minimum(&e);
    *args.last_mut().unwrap() = (min + min / 10).to_string();
    let spill_dirs = || -> Vec<String> {
        entries(&spill)
            .into_iter()
            .filter(|e| e.starts_with("chunkcube-spill-"))
            .collect()
    };
    let mut child = Command::new(common::bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while spill_dirs().is_empty() && started.elapsed() < Duration::from_secs(30) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it spilled"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = spill_dirs();
    assert_eq!(
        left.len(),
        1,
        "a killed run leaves its spill directory: {left:?}"
    );
    // A directory of a live process (this test's) is not touched.
    let live = spill.join(format!(
        "chunkcube-spill-{}-{}-keep",
        hostname(),
        std::process::id()
    ));
    std::fs::create_dir_all(&live).unwrap();
    let (st, _, err) = run(&args);
    assert!(st.success(), "{err}");
    assert!(
        err.contains("removed the spill directory") && err.contains(&left[0]),
        "the next run says what it removed: {err}"
    );
    assert_eq!(
        spill_dirs(),
        vec![live.file_name().unwrap().to_string_lossy().to_string()]
    );
}

fn hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    h.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 5. A limit below one task
// ---------------------------------------------------------------------------------------------

#[test]
fn limit_below_one_task_is_refused_with_a_minimum_that_works() {
    let mut c = Checks::default();
    let r = reference();
    let cases: Vec<Case> = vec![
        ("ndvi", vec!["--expr", NDVI], "ndvi", flat(&r.ndvi), 0.0),
        (
            "median",
            vec!["--expr", NDVI, "--reduce", "median:time", "--chunks", PLANE],
            "ndvi",
            median_ref(&r.ndvi),
            1e-6,
        ),
        (
            "two exprs",
            vec!["--expr", NDVI, "--expr", "anom=ndvi-mean(ndvi, time)"],
            "anom",
            {
                let mean = mean_ref(&r.ndvi);
                (0..T * PX)
                    .map(|i| r.ndvi[i / PX][i % PX] - mean[i % PX])
                    .collect()
            },
            1e-6,
        ),
    ];
    for (what, args, band, want, tol) in cases {
        let (w, spill) = work();
        let out = w.path().join("out.zarr");
        let stats = w.path().join("stats.json");
        let tail = [
            "--spill-dir",
            s(&spill),
            "--out",
            s(&out),
            "--threads",
            "2",
            "-q",
        ];
        let (st, _, e, d) = calc(&[&args[..], &["--memory-limit", "100KiB"], &tail[..]].concat());
        let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(st.code(), Some(1), "{what}: 100KiB must be refused\n{d}");
        assert_eq!(lines.len(), 1, "{what}: one error line\n{d}");
        let line = lines[0];
        assert!(
            line.starts_with("error: --memory-limit 102.40 kB") && line.contains("use at least "),
            "{what}: the error names the limit and the minimum\n{d}"
        );
        let min = common::stated_minimum(line);
        c.check(entries(&spill).is_empty(), || {
            format!("{what}: refused run left {:?}", entries(&spill))
        });
        c.check(!common::cube_opens(&out), || {
            format!("{what}: a refused run left a cube")
        });
        let _ = std::fs::remove_dir_all(&out);
        let (st, _, _, d) = calc(
            &[
                &args[..],
                &["--memory-limit", &min, "--stats", s(&stats)],
                &tail[..],
            ]
            .concat(),
        );
        c.check(st.success(), || {
            format!("{what}: the stated minimum {min} does not work\n{d}")
        });
        if !st.success() {
            continue;
        }
        let (_, _, peak, lim) = stats_json(&stats);
        c.check(peak <= lim, || {
            format!("{what}: at the stated minimum {min}: peak_tracked_bytes {peak} > {lim}")
        });
        c.check(entries(&spill).is_empty(), || {
            format!("{what}: spill dir not empty: {:?}", entries(&spill))
        });
        if let Err(m) = compare(what, &read_out(&out, band), &want, tol) {
            c.check(false, || m);
        }
    }
    c.finish("limit below one task (CLI)");
}

#[test]
fn compute_into_memory_refuses_results_larger_than_the_limit() {
    let sp = scratch();
    let cube = open(1 << 20, sp.path());
    let (red, nir) = bands(&cube, STORED);
    let e = ndvi_of(&red, &nir)
        .compute()
        .expect_err("a 3 MiB result under 1 MiB must be refused");
    let msg = e.to_string();
    assert!(
        msg.contains("--memory-limit") && msg.contains("to_zarr"),
        "{msg}"
    );
    assert_eq!(
        cube.session().stats().chunks_read,
        0,
        "refused before fetching: {msg}"
    );
    // A window that fits is computed, and equals the reference.
    let small = ndvi_of(&red, &nir)
        .isel(&[("time", 0..1), ("y", 0..128)])
        .unwrap();
    let v = small.compute().expect("a 128 KiB window under 1 MiB");
    let got: Vec<f32> = v.as_f32().unwrap().iter().copied().collect();
    let want: Vec<f32> = reference().ndvi[0][..128 * W].to_vec();
    compare("ndvi window", &got, &want, 0.0).unwrap();
}
