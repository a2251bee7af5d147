//! Issue 12 — memory bounded whatever the chunk size, and a plan that never lies.
//!
//! Cubes generated here (never committed) whose sides are not multiples of the stored chunk,
//! so every row and column of chunks ends in a narrower edge chunk. NDVI, its mean over time
//! and the median of nir over time are written at several limits from the minimum the
//! planner states up: each run must succeed with its tracked peak (`--stats`) within the
//! limit and equal a reference computed here with plain loops from the source tiles as GDAL
//! reads them (never with chunkcube code). A cube of 4096 x 4096 stored chunks (32 MiB per
//! decoded uint16 chunk) is written under 64 MiB.

use crate::common::{
    self, describe, median_ref, read_stats, reference_mosaic, run, s, stated_minimum,
    write_manifest, write_tif, TifSpec,
};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const NDVI: &str = "ndvi=(nir-red)/(nir+red)";

/// (name, calc arguments, output band, reference values, relative tolerance).
type Case<'a> = (&'a str, Vec<&'a str>, &'a str, Vec<f32>, f32);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generated uint16 value of band `b` at (t, y, x) of a `w`-wide cube; 0 is nodata
/// (about 10 %, and a corner nodata at every time: the median and mean there are NaN).
fn value(b: usize, t: usize, y: usize, x: usize, w: usize) -> u16 {
    if y < 5 && x < 7 {
        return 0;
    }
    let h = splitmix((((b * 8 + t) * 8192 + y) * w + x) as u64 ^ 0xb0d);
    if h.is_multiple_of(10) {
        return 0;
    }
    1 + ((h >> 8) % 10_000) as u16
}

/// A generated cube: its directory, the source tiles per band (one per time step) and the
/// shape.
struct Generated {
    cube: PathBuf,
    tiles: [Vec<PathBuf>; 2],
    t: usize,
    h: usize,
    w: usize,
}

fn tmp_base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Remove leftovers of earlier (killed) test processes: `<prefix><pid>` whose pid is gone.
fn clean_stale(prefix: &str) {
    for e in std::fs::read_dir(tmp_base())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix(prefix) {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Write red and nir tiles of `t` x `h` x `w` and ingest them in `chunks`.
fn generate(name: &str, t: usize, h: usize, w: usize, chunks: &str) -> Generated {
    let prefix = format!("bounded-{name}-");
    clean_stale(&prefix);
    let dir = tmp_base().join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = TifSpec {
        width: w,
        height: h,
        compress: false,
        ..TifSpec::default()
    };
    let mut rows = Vec::new();
    let mut tiles: [Vec<PathBuf>; 2] = [Vec::new(), Vec::new()];
    for (b, band) in ["red", "nir"].into_iter().enumerate() {
        for ti in 0..t {
            let year = (2001 + ti).to_string();
            let rel = format!("tiles/{band}_{year}.tif");
            let mut v = Vec::with_capacity(w * h);
            for y in 0..h {
                for x in 0..w {
                    v.push(value(b, ti, y, x, w));
                }
            }
            write_tif(&dir.join(&rel), &spec, &v);
            tiles[b].push(dir.join(&rel));
            rows.push((rel, band.to_string(), year));
        }
    }
    let m = dir.join("manifest.csv");
    write_manifest(&m, &rows);
    let cube = dir.join("cube");
    let args = [
        "ingest",
        "--manifest",
        s(&m),
        "--out",
        s(&cube),
        "--chunks",
        chunks,
        "--quiet",
    ];
    let (st, o, e) = run(args);
    assert!(st.success(), "ingest\n{}", describe(&args, &st, &o, &e));
    Generated {
        cube,
        tiles,
        t,
        h,
        w,
    }
}

/// A band as GDAL reads its tiles, `[t][y * w + x]` float32, nodata → NaN (each tile alone
/// is the mosaic of its time step).
fn band_ref(g: &Generated, b: usize) -> Vec<Vec<f32>> {
    g.tiles[b]
        .iter()
        .map(|p| {
            let m = reference_mosaic::<u16>(std::slice::from_ref(p));
            assert_eq!(m.pixels.dim(), (g.h, g.w), "{}", p.display());
            m.pixels
                .iter()
                .map(|v| v.map_or(f32::NAN, |v| v as f32))
                .collect()
        })
        .collect()
}

/// NDVI per time step, in float32 as the expression reads.
fn ndvi_ref(red: &[Vec<f32>], nir: &[Vec<f32>]) -> Vec<Vec<f32>> {
    red.iter()
        .zip(nir)
        .map(|(r, n)| r.iter().zip(n).map(|(r, n)| (n - r) / (n + r)).collect())
        .collect()
}

/// Nan-mean along time (f64 sum), NaN where no value is valid.
fn mean_ref(x: &[Vec<f32>]) -> Vec<f32> {
    (0..x[0].len())
        .map(|p| {
            let v: Vec<f64> = x
                .iter()
                .map(|a| a[p])
                .filter(|v| !v.is_nan())
                .map(f64::from)
                .collect();
            if v.is_empty() {
                f32::NAN
            } else {
                (v.iter().sum::<f64>() / v.len() as f64) as f32
            }
        })
        .collect()
}

/// Compare float32 values (NaN equals NaN) within a relative tolerance; the first
/// mismatches, if any.
fn compare(got: &[f32], want: &[f32], tol: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} values, want {}", got.len(), want.len()));
    }
    let bad: Vec<String> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| {
            !((g.is_nan() && w.is_nan()) || (*g - *w).abs() <= tol * w.abs().max(1e-30))
        })
        .take(5)
        .map(|(i, (g, w))| format!("[{i}] {g} vs {w}"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join(", "))
    }
}

/// A band of an output cube, flat float32 (read back through chunkcube's eager load).
fn read_out(cube: &Path, band: &str) -> Vec<f32> {
    common::load_band::<f32>(cube, band)
        .iter()
        .copied()
        .collect()
}

/// `calc CUBE ARGS...`: (success, stderr, description).
fn calc(cube: &Path, args: &[&str]) -> (bool, String, String) {
    let mut a = vec!["calc", s(cube)];
    a.extend_from_slice(args);
    let (st, o, e) = run(&a);
    let d = describe(&a, &st, &o, &e);
    (st.success(), e, d)
}

/// The minimum the planner states for writing `args` (refused under 1 KiB, one error line),
/// in bytes and as printed.
fn stated(cube: &Path, args: &[&str], out: &Path) -> (u64, String) {
    let mut a = args.to_vec();
    a.extend(["--memory-limit", "1KiB", "--out", s(out), "--quiet"]);
    let (ok, e, d) = calc(cube, &a);
    assert!(!ok, "accepted under 1 KiB\n{d}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line\n{d}");
    let min = stated_minimum(lines[0]);
    let b =
        chunkcube::store::parse_bytes(&min).unwrap_or_else(|| panic!("'{min}' is no size\n{d}"));
    (b, min)
}

/// What `calc --explain` tells of `args` under `limit` on 2 threads, describing the write to
/// `out` (`Some`) or the computation into memory: the paths it names per task shape, the
/// projected peak and the text. Nothing may be written.
fn explained(
    cube: &Path,
    args: &[&str],
    limit: u64,
    out: Option<&Path>,
) -> (Vec<String>, u64, String) {
    let l = limit.to_string();
    let mut full = vec!["calc", s(cube)];
    full.extend_from_slice(args);
    full.extend(["--memory-limit", &l, "--threads", "2", "--explain"]);
    if let Some(o) = out {
        full.extend(["--out", s(o)]);
    }
    let (st, o, e) = run(&full);
    assert!(st.success(), "{}", describe(&full, &st, &o, &e));
    if let Some(out) = out {
        assert!(!out.exists(), "--explain wrote {}", out.display());
    }
    let paths = o
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" x "))
        .filter_map(|l| {
            ["whole", "strips", "spilled", "streamed"]
                .into_iter()
                .find(|p| l.contains(&format!(" {p}")))
                .map(str::to_string)
        })
        .collect();
    let peak = o
        .lines()
        .find_map(|l| l.strip_prefix("projected peak memory"))
        .and_then(|r| {
            let w: Vec<&str> = r.split_whitespace().take(2).collect();
            chunkcube::store::parse_bytes(&w.join(" "))
        })
        .unwrap_or_else(|| panic!("no projected peak in\n{o}"));
    (paths, peak, o)
}

/// Write `args` under each limit of `limits` (2 threads) and check each run: success, the
/// tracked peak within the limit, the values of `band` equal to `want`, `--explain`'s
/// projection within the limit. Returns the failed expectations and the paths `--explain`
/// named under each limit.
#[allow(clippy::too_many_arguments)]
fn check_limits(
    g: &Generated,
    what: &str,
    args: &[&str],
    band: &str,
    limits: &[u64],
    want: &[f32],
    tol: f32,
    work: &Path,
) -> (Vec<String>, Vec<Vec<String>>) {
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for &limit in limits {
        let out = work.join(format!("{what}-{limit}"));
        let stats = work.join(format!("{what}-{limit}.json"));
        let spill = work.join("spill");
        std::fs::create_dir_all(&spill).unwrap();
        let l = limit.to_string();
        let mut a = args.to_vec();
        a.extend([
            "--memory-limit",
            &l,
            "--threads",
            "2",
            "--spill-dir",
            s(&spill),
            "--out",
            s(&out),
            "--stats",
            s(&stats),
            "--quiet",
        ]);
        let (ok, _, d) = calc(&g.cube, &a);
        if !ok {
            bad.push(format!("{what} under {limit}: failed\n{d}"));
            continue;
        }
        let st = read_stats(&stats);
        let peak = st["peak_tracked_bytes"].as_u64().unwrap();
        if peak > limit {
            bad.push(format!(
                "{what} under {limit}: tracked peak {peak} above the limit"
            ));
        }
        if let Err(e) = compare(&read_out(&out, band), want, tol) {
            bad.push(format!(
                "{what} under {limit}: differs from the reference: {e}"
            ));
        }
        let (paths, projected, _) = explained(&g.cube, args, limit, Some(&work.join("explained")));
        eprintln!("{what} under {limit}: peak {peak}, projected {projected}, paths {paths:?}");
        if projected > limit {
            bad.push(format!(
                "{what} under {limit}: --explain projects {projected}"
            ));
        }
        if paths.is_empty() {
            bad.push(format!("{what} under {limit}: --explain names no path"));
        }
        seen.push(paths);
        let _ = std::fs::remove_dir_all(&out);
    }
    (bad, seen)
}

/// The edge cube: 6 x 700 x 900 in 256 x 384 chunks (edges of 188 rows and 132 columns).
fn edge_cube() -> &'static Generated {
    static G: OnceLock<Generated> = OnceLock::new();
    G.get_or_init(|| generate("edge", 6, 700, 900, "time=1,y=256,x=384"))
}

/// The limits a case runs under: the stated minimum, a little and a lot more, and a limit
/// under which every task runs whole.
fn limits_from(min: u64) -> Vec<u64> {
    vec![min, min + min / 8, min * 3 / 2, min * 3, 1 << 30]
}

#[test]
fn edge_chunks_at_every_limit_from_the_stated_minimum_up_match_the_reference() {
    let g = edge_cube();
    let work = tempfile::Builder::new()
        .prefix("bounded-work-")
        .tempdir_in(tmp_base())
        .unwrap();
    let (red, nir) = (band_ref(g, 0), band_ref(g, 1));
    assert_eq!((red.len(), red[0].len()), (g.t, g.h * g.w));
    let ndvi = ndvi_ref(&red, &nir);
    let flat: Vec<f32> = ndvi.iter().flatten().copied().collect();
    let cases: [Case; 3] = [
        ("ndvi", vec!["--expr", NDVI], "ndvi", flat, 1e-6),
        (
            "mean",
            vec!["--expr", NDVI, "--reduce", "mean:time"],
            "ndvi",
            mean_ref(&ndvi),
            1e-5,
        ),
        (
            "median",
            vec!["--expr", "m=nir", "--reduce", "median:time"],
            "m",
            median_ref(&nir),
            0.0,
        ),
    ];
    let mut bad = Vec::new();
    for (what, args, band, want, tol) in &cases {
        let (min, text) = stated(&g.cube, args, &work.path().join("refused"));
        assert!(
            !work.path().join("refused").join("zarr.json").exists(),
            "{what}: a refused run committed"
        );
        // Every limit below it is refused stating the same figure.
        for below in [min / 2, min * 9 / 10] {
            let l = below.to_string();
            let o = work.path().join("refused");
            let mut w = args.clone();
            w.extend(["--memory-limit", &l, "--quiet", "--out", s(&o)]);
            let (ok, e, d) = calc(&g.cube, &w);
            if ok {
                bad.push(format!(
                    "{what}: accepted under {below} < minimum {min}\n{d}"
                ));
            } else if stated_minimum(&e) != text {
                bad.push(format!(
                    "{what}: under {below} the stated minimum is {}, under 1 KiB {text}",
                    stated_minimum(&e)
                ));
            }
        }
        let (b, paths) = check_limits(
            g,
            what,
            args,
            band,
            &limits_from(min),
            want,
            *tol,
            work.path(),
        );
        bad.extend(b);
        // At the minimum no task runs whole where a leaner path applies: NDVI in row strips,
        // the median streamed or spilled; with room, every task whole.
        let lean: &[&str] = match *what {
            "ndvi" => &["strips"],
            "median" => &["streamed", "spilled"],
            _ => &["whole", "strips"],
        };
        if !paths[0].iter().all(|p| lean.contains(&p.as_str())) {
            bad.push(format!(
                "{what} at the minimum: paths {:?}, want {lean:?}",
                paths[0]
            ));
        }
        if !paths.last().unwrap().iter().all(|p| p == "whole") {
            bad.push(format!(
                "{what} under 1 GiB: paths {:?}, want whole",
                paths.last()
            ));
        }
    }
    // --explain without --out describes the computation into memory, never a write.
    let (_, _, text) = explained(&g.cube, &["--expr", NDVI], 1 << 30, None);
    if text.contains("written to a cube") || !text.contains("computed into memory, not written") {
        bad.push(format!("--explain without --out:\n{text}"));
    }
    let (_, _, text) = explained(
        &g.cube,
        &["--expr", NDVI],
        1 << 30,
        Some(&work.path().join("e")),
    );
    if !text.contains("written to a cube") {
        bad.push(format!("--explain with --out:\n{text}"));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn ndvi_and_mean_over_4096_chunks_run_under_64_mib() {
    // 2 x 4200 x 4096 in 4096 x 4096 chunks: a full chunk and an edge of 104 rows per step.
    let g = generate("big", 2, 4200, 4096, "time=1,y=4096,x=4096");
    let work = tempfile::Builder::new()
        .prefix("bounded-work-")
        .tempdir_in(tmp_base())
        .unwrap();
    let (red, nir) = (band_ref(&g, 0), band_ref(&g, 1));
    let ndvi = ndvi_ref(&red, &nir);
    let flat: Vec<f32> = ndvi.iter().flatten().copied().collect();
    let limit = [64u64 << 20];
    let (mut bad, mut paths) = check_limits(
        &g,
        "ndvi4096",
        &["--expr", NDVI],
        "ndvi",
        &limit,
        &flat,
        1e-6,
        work.path(),
    );
    let (b, p) = check_limits(
        &g,
        "mean4096",
        &["--expr", NDVI, "--reduce", "mean:time"],
        "ndvi",
        &limit,
        &mean_ref(&ndvi),
        1e-5,
        work.path(),
    );
    bad.extend(b);
    paths.extend(p);
    // A decoded 4096² chunk alone is half the limit: every task runs in row strips.
    for p in &paths {
        if p.is_empty() || !p.iter().all(|p| p == "strips") {
            bad.push(format!("under 64 MiB: paths {p:?}, want strips"));
        }
    }
    let _ = std::fs::remove_dir_all(g.cube.parent().unwrap());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
