//! In-process read latency of small windows and full-band read throughput, chunkcube against
//! zarrs reading the same cube directly. `bench/query.sh` runs it beside xarray, zarr-python
//! and TensorStore (`bench/query_py.py`) and prints the ratios.
//!
//! ```text
//! cargo run --release --example window_latency -- CUBE WINDOWS.txt [--straddle WINDOWS2.txt]
//!                                                 [--band red] [--size 100]
//!                                                 [--warmup 3] [--full-reps 3]
//!                                                 [--profile METHOD [--loops 20]] [--no-tune]
//! ```
//! `WINDOWS.txt` holds one window origin `t y x` per line; each window is `size` x `size`
//! pixels and lies inside one stored chunk. The chunk cache is cleared before every rep, so
//! each read decodes its chunk again (the OS page cache stays warm: this measures decoding and
//! overhead, not the disk). Reps of the three window methods are interleaved, so a change of
//! machine load hits them alike. Prints one JSON object on stdout, a summary on stderr.
//!
//! Window methods:
//! - `chunkcube_window`: `red.isel(window).compute()` on a lazy band (chunks = stored chunks);
//! - `zarrs_chunk_decode`: `Array::retrieve_chunk` of the one stored chunk the window touches
//!   (the reference: the least work any reader can do);
//! - `zarrs_subset`: `Array::retrieve_array_subset` of the window (zarrs' own window path).
//! - `chunkcube_window_warm`: the same window again right after, its chunk cached: chunkcube's
//!   own overhead (planning, scheduling, copying) without decoding.
//!
//! `--straddle FILE` adds windows that cross stored-chunk edges (the CLI's
//! y=3000:3100,x=3000:3100 touches 4 chunks), against zarrs' subset read and against decoding
//! the touched chunks in parallel on rayon (`zarrs_decode_touched_par`).
//!
//! Full-band methods (whole band into memory, MB/s of decoded pixels):
//! - `chunkcube_full`: `red.compute()` of the lazy band;
//! - `zarrs_full_subset`: `Array::retrieve_array_subset` of the whole array (zarrs decodes the
//!   chunks in parallel straight into the output);
//! - `zarrs_decode_all`: every chunk `retrieve_chunk`ed on rayon and dropped (decode limit).
//!
//! `--profile METHOD` runs only that method (`chunkcube_window`, `chunkcube_window_warm`,
//! `zarrs_chunk_decode`, `zarrs_subset`, `chunkcube_full`) `--loops` times over the windows,
//! for `perf record -g`.

use chunkcube::{ChunkSpec, Cube, Query, Values};
use rayon::prelude::*;
use std::error::Error;
use std::sync::Arc;
use std::time::Instant;
use zarrs::array::{Array, ArraySubset};
use zarrs::filesystem::FilesystemStore;

/// CPU time of the whole process (all threads), seconds: less sensitive to other jobs on the
/// machine than wall time, but it also counts worker threads spinning while idle.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn stats(name: &str, v: &[f64], cpu: &[f64]) -> serde_json::Value {
    let mut c = cpu.to_vec();
    let cpu_med = median(&mut c);
    let mut s = v.to_vec();
    let med = median(&mut s);
    let min = s.first().copied().unwrap_or(f64::NAN);
    let p90 = s
        .get(((s.len() as f64) * 0.9) as usize)
        .copied()
        .unwrap_or(f64::NAN);
    eprintln!(
        "{name:<22} median {:8.3} ms  min {:8.3} ms  p90 {:8.3} ms  cpu {:8.3} ms  (n={})",
        med * 1e3,
        min * 1e3,
        p90 * 1e3,
        cpu_med * 1e3,
        s.len()
    );
    serde_json::json!({"median_s": med, "min_s": min, "p90_s": p90, "cpu_median_s": cpu_med, "n": s.len()})
}

fn u16_sum(v: &Values) -> u64 {
    match v {
        Values::U16(a) => a.iter().map(|&x| x as u64).sum(),
        _ => panic!("expected uint16 values, got {}", v.dtype()),
    }
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Window origins `t y x`, one per line (`#` comments).
fn read_windows(path: &str) -> Result<Vec<[u64; 3]>, Box<dyn Error>> {
    let mut out = vec![];
    for l in std::fs::read_to_string(path)?.lines() {
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        let v: Vec<u64> = l
            .split_whitespace()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        if v.len() != 3 {
            return Err(format!("{path}: window line is not 't y x': {l}").into());
        }
        out.push([v[0], v[1], v[2]]);
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: window_latency CUBE WINDOWS.txt [--straddle WINDOWS2.txt] [--band red] [--size 100] [--warmup 3] [--full-reps 3] [--profile METHOD [--loops N]] [--no-tune]";
    let cube_path = args.get(1).ok_or(usage)?.clone();
    let windows_file = args.get(2).ok_or(usage)?.clone();
    let band = arg(&args, "--band").unwrap_or_else(|| "red".into());
    let size: u64 = arg(&args, "--size").map_or(Ok(100), |s| s.parse())?;
    let warmup: usize = arg(&args, "--warmup").map_or(Ok(3), |s| s.parse())?;
    let full_reps: usize = arg(&args, "--full-reps").map_or(Ok(3), |s| s.parse())?;

    let windows = read_windows(&windows_file)?;
    // As the command line does (every method in this process alike), unless asked not to.
    if !args.iter().any(|a| a == "--no-tune") {
        chunkcube::exec::tune_allocator(chunkcube::exec::ExecConfig::default().memory_limit);
    }

    // chunkcube: open once (metadata), lazy band in the stored chunking.
    // The first open in a process pays for PROJ/GDAL set-up; a second open shows the steady cost.
    let t0 = Instant::now();
    let cube = Cube::open(&cube_path)?;
    let open_first_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    drop(Cube::open(&cube_path)?);
    let open_again_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "Cube::open: first {:.2} ms, again {:.2} ms",
        open_first_s * 1e3,
        open_again_s * 1e3
    );
    let chunk_shape = cube.band(&band)?.chunk_shape();
    let spec = format!(
        "time={},y={},x={}",
        chunk_shape[0], chunk_shape[1], chunk_shape[2]
    );
    let ds = cube.load(
        &Query::new()
            .measurements(&[band.as_str()])
            .chunks(ChunkSpec::parse(&spec)?),
    )?;
    let da = ds.get(&band).ok_or("band missing from dataset")?;
    let shape = da.shape3();

    // zarrs: the same array, straight from the filesystem.
    let store = Arc::new(FilesystemStore::new(&cube_path)?);
    let zarr = Array::open(store, &format!("/{band}"))?;

    for w in &windows {
        for i in 0..3 {
            let c = chunk_shape[i];
            let len = if i == 0 { 1 } else { size };
            if w[i] / c != (w[i] + len - 1) / c || w[i] + len > shape[i] {
                return Err(format!("window {w:?} is not inside one stored chunk").into());
            }
        }
    }

    // Each method returns (wall s, process cpu s, checksum of the window).
    let chunkcube_window = |w: &[u64; 3], cold: bool| -> Result<(f64, f64, u64), Box<dyn Error>> {
        if cold {
            cube.session().clear_cache();
        }
        let c0 = cpu_now();
        let t0 = Instant::now();
        let v = da
            .isel(&[
                ("time", w[0]..w[0] + 1),
                ("y", w[1]..w[1] + size),
                ("x", w[2]..w[2] + size),
            ])?
            .compute()?;
        let dt = t0.elapsed().as_secs_f64();
        let dc = cpu_now() - c0;
        assert_eq!(v.shape(), vec![1, size as usize, size as usize]);
        Ok((dt, dc, u16_sum(&v)))
    };
    let zarrs_chunk = |w: &[u64; 3]| -> Result<(f64, f64, u64), Box<dyn Error>> {
        let idx = [
            w[0] / chunk_shape[0],
            w[1] / chunk_shape[1],
            w[2] / chunk_shape[2],
        ];
        let c0 = cpu_now();
        let t0 = Instant::now();
        let a: ndarray::ArrayD<u16> = zarr.retrieve_chunk(&idx)?;
        let dt = t0.elapsed().as_secs_f64();
        let dc = cpu_now() - c0;
        let (oy, ox) = (
            (w[1] % chunk_shape[1]) as usize,
            (w[2] % chunk_shape[2]) as usize,
        );
        let s = size as usize;
        let sum = a
            .slice(ndarray::s![.., oy..oy + s, ox..ox + s])
            .iter()
            .map(|&x| x as u64)
            .sum();
        Ok((dt, dc, sum))
    };
    let zarrs_subset = |w: &[u64; 3]| -> Result<(f64, f64, u64), Box<dyn Error>> {
        let sub =
            ArraySubset::new_with_ranges(&[w[0]..w[0] + 1, w[1]..w[1] + size, w[2]..w[2] + size]);
        let c0 = cpu_now();
        let t0 = Instant::now();
        let a: ndarray::ArrayD<u16> = zarr.retrieve_array_subset(&sub)?;
        let dt = t0.elapsed().as_secs_f64();
        let dc = cpu_now() - c0;
        Ok((dt, dc, a.iter().map(|&x| x as u64).sum()))
    };

    // Profiling: one method in a loop, nothing else (for `perf record -g`).
    if let Some(m) = arg(&args, "--profile") {
        let loops: usize = arg(&args, "--loops").map_or(Ok(20), |s| s.parse())?;
        let mut wall = vec![];
        let mut cpu = vec![];
        for _ in 0..loops {
            for w in &windows {
                let r = match m.as_str() {
                    "chunkcube_window" => chunkcube_window(w, true)?,
                    "chunkcube_window_warm" => {
                        chunkcube_window(w, true)?; // decode it into the cache first
                        chunkcube_window(w, false)?
                    }
                    "zarrs_chunk_decode" => zarrs_chunk(w)?,
                    "zarrs_subset" => zarrs_subset(w)?,
                    "chunkcube_full" => {
                        cube.session().clear_cache();
                        let (c0, t0) = (cpu_now(), Instant::now());
                        let v = da.compute()?;
                        let r = (t0.elapsed().as_secs_f64(), cpu_now() - c0, 0);
                        drop(v);
                        r
                    }
                    _ => return Err(format!("--profile: unknown method {m}").into()),
                };
                wall.push(r.0);
                cpu.push(r.1);
                if m == "chunkcube_full" {
                    break;
                }
            }
        }
        println!("{}", stats(&m, &wall, &cpu));
        return Ok(());
    }

    // Warm-up: thread pools, allocator, page cache of the first chunks.
    for w in windows.iter().take(warmup) {
        chunkcube_window(w, true)?;
        zarrs_chunk(w)?;
        zarrs_subset(w)?;
    }
    // wall and cpu per method: chunkcube cold, zarrs chunk, zarrs subset, chunkcube warm
    let mut t: [Vec<f64>; 4] = Default::default();
    let mut c: [Vec<f64>; 4] = Default::default();
    let mut sums = vec![];
    for (i, w) in windows.iter().enumerate() {
        // Rotate the order so no method always runs first (or right after another's decode).
        let mut r = [(0.0, 0.0, 0u64); 4];
        for k in 0..3 {
            match (i + k) % 3 {
                0 => {
                    r[0] = chunkcube_window(w, true)?;
                    // The same window again, its chunk now cached: chunkcube's own overhead
                    // (plan, schedule, copy) without any decoding.
                    r[3] = chunkcube_window(w, false)?;
                }
                1 => r[1] = zarrs_chunk(w)?,
                _ => r[2] = zarrs_subset(w)?,
            }
        }
        if r.iter().any(|x| x.2 != r[0].2) {
            return Err(format!(
                "window {w:?}: sums differ (chunkcube {}, zarrs chunk {}, zarrs subset {}, chunkcube warm {})",
                r[0].2, r[1].2, r[2].2, r[3].2
            )
            .into());
        }
        for k in 0..4 {
            t[k].push(r[k].0);
            c[k].push(r[k].1);
        }
        sums.push(r[0].2);
    }
    eprintln!(
        "== {size}x{size} window, cold chunk cache, {} windows ==",
        windows.len()
    );
    let j_cc = stats("chunkcube_window", &t[0], &c[0]);
    let j_zc = stats("zarrs_chunk_decode", &t[1], &c[1]);
    let j_zs = stats("zarrs_subset", &t[2], &c[2]);
    let j_cw = stats("chunkcube_window_warm", &t[3], &c[3]);

    // Windows across stored-chunk edges (the CLI's y=3000:3100,x=3000:3100 touches 4 chunks):
    // chunkcube against zarrs' subset read and against decoding the touched chunks in parallel.
    let mut straddle = serde_json::Map::new();
    let mut straddle_sums = vec![];
    if let Some(f) = arg(&args, "--straddle") {
        let sw = read_windows(&f)?;
        let touched = |w: &[u64; 3]| -> Vec<[u64; 3]> {
            let mut v = vec![];
            for y in w[1] / chunk_shape[1]..=(w[1] + size - 1) / chunk_shape[1] {
                for x in w[2] / chunk_shape[2]..=(w[2] + size - 1) / chunk_shape[2] {
                    v.push([w[0] / chunk_shape[0], y, x]);
                }
            }
            v
        };
        let decode_touched = |w: &[u64; 3]| -> Result<(f64, f64, u64), Box<dyn Error>> {
            let idx = touched(w);
            let c0 = cpu_now();
            let t0 = Instant::now();
            idx.par_iter().try_for_each(|i| -> Result<(), String> {
                let a: ndarray::ArrayD<u16> = zarr.retrieve_chunk(i).map_err(|e| e.to_string())?;
                std::hint::black_box(&a);
                Ok(())
            })?;
            Ok((t0.elapsed().as_secs_f64(), cpu_now() - c0, 0))
        };
        for w in sw.iter().take(warmup) {
            chunkcube_window(w, true)?;
            zarrs_subset(w)?;
            decode_touched(w)?;
        }
        let mut t: [Vec<f64>; 3] = Default::default();
        let mut c: [Vec<f64>; 3] = Default::default();
        let mut n_touched = vec![];
        for (i, w) in sw.iter().enumerate() {
            let mut r = [(0.0, 0.0, 0u64); 3];
            for k in 0..3 {
                match (i + k) % 3 {
                    0 => r[0] = chunkcube_window(w, true)?,
                    1 => r[1] = zarrs_subset(w)?,
                    _ => r[2] = decode_touched(w)?,
                }
            }
            if r[0].2 != r[1].2 {
                return Err(format!(
                    "window {w:?}: sums differ (chunkcube {}, zarrs subset {})",
                    r[0].2, r[1].2
                )
                .into());
            }
            for k in 0..3 {
                t[k].push(r[k].0);
                c[k].push(r[k].1);
            }
            straddle_sums.push(r[0].2);
            n_touched.push(touched(w).len());
        }
        eprintln!(
            "== {size}x{size} window across chunk edges ({}..{} chunks), cold chunk cache, {} windows ==",
            n_touched.iter().min().unwrap_or(&0),
            n_touched.iter().max().unwrap_or(&0),
            sw.len()
        );
        straddle.insert(
            "chunkcube_window".into(),
            stats("chunkcube_window", &t[0], &c[0]),
        );
        straddle.insert("zarrs_subset".into(), stats("zarrs_subset", &t[1], &c[1]));
        straddle.insert(
            "zarrs_decode_touched_par".into(),
            stats("zarrs_decode_touched_par", &t[2], &c[2]),
        );
    }

    // Full band.
    let band_bytes = shape.iter().product::<u64>() * 2;
    let whole = ArraySubset::new_with_ranges(&[0..shape[0], 0..shape[1], 0..shape[2]]);
    let n_chunks: Vec<Vec<u64>> = {
        let g: [u64; 3] = std::array::from_fn(|i| shape[i].div_ceil(chunk_shape[i]));
        (0..g[0])
            .flat_map(|t| (0..g[1]).flat_map(move |y| (0..g[2]).map(move |x| vec![t, y, x])))
            .collect()
    };
    let (mut f_cc, mut f_zs, mut f_zd) = (vec![], vec![], vec![]);
    let (mut g_cc, mut g_zs, mut g_zd) = (vec![], vec![], vec![]);
    let mut full_sum = None;
    // Warm-up one of each, then interleave.
    for rep in 0..=full_reps {
        cube.session().clear_cache();
        let c0 = cpu_now();
        let t0 = Instant::now();
        let v = da.compute()?;
        let dt_cc = t0.elapsed().as_secs_f64();
        let dc_cc = cpu_now() - c0;
        let s_cc = u16_sum(&v);
        drop(v);

        let c0 = cpu_now();
        let t0 = Instant::now();
        let a: ndarray::ArrayD<u16> = zarr.retrieve_array_subset(&whole)?;
        let dt_zs = t0.elapsed().as_secs_f64();
        let dc_zs = cpu_now() - c0;
        let s_zs: u64 = a.iter().map(|&x| x as u64).sum();
        drop(a);

        let c0 = cpu_now();
        let t0 = Instant::now();
        n_chunks
            .par_iter()
            .try_for_each(|idx| -> Result<(), String> {
                let a: ndarray::ArrayD<u16> =
                    zarr.retrieve_chunk(idx).map_err(|e| e.to_string())?;
                std::hint::black_box(&a);
                Ok(())
            })?;
        let dt_zd = t0.elapsed().as_secs_f64();
        let dc_zd = cpu_now() - c0;
        if s_cc != s_zs {
            return Err(format!("full band sums differ: chunkcube {s_cc}, zarrs {s_zs}").into());
        }
        full_sum = Some(s_cc);
        if rep > 0 {
            f_cc.push(dt_cc);
            f_zs.push(dt_zs);
            f_zd.push(dt_zd);
            g_cc.push(dc_cc);
            g_zs.push(dc_zs);
            g_zd.push(dc_zd);
        }
    }
    eprintln!(
        "== full band {band} ({:.1} MB decoded), {full_reps} reps ==",
        band_bytes as f64 / 1e6
    );
    let mbs = |j: &serde_json::Value| band_bytes as f64 / 1e6 / j["median_s"].as_f64().unwrap();
    let mut full = serde_json::Map::new();
    for (name, v, cpu) in [
        ("chunkcube_full", &f_cc, &g_cc),
        ("zarrs_full_subset", &f_zs, &g_zs),
        ("zarrs_decode_all", &f_zd, &g_zd),
    ] {
        let mut j = stats(name, v, cpu);
        let m = mbs(&j);
        eprintln!("{:<22} {m:8.0} MB/s", "");
        j["mb_per_s"] = serde_json::json!(m);
        full.insert(name.into(), j);
    }

    let out = serde_json::json!({
        "cube": cube_path,
        "band": band,
        "window_size": size,
        "threads": cube.session().threads(),
        "open_first_s": open_first_s,
        "open_again_s": open_again_s,
        "window": {
            "chunkcube_window": j_cc,
            "zarrs_chunk_decode": j_zc,
            "zarrs_subset": j_zs,
            "chunkcube_window_warm": j_cw,
        },
        "window_sums": sums,
        "straddle": straddle,
        "straddle_sums": straddle_sums,
        "full": full,
        "full_band_bytes": band_bytes,
        "full_sum": full_sum,
    });
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
