//! The machine's limit for NDVI over a cube: zstd-decode the red and nir chunks, compute NDVI,
//! zstd-encode the float32 result, for every chunk, spread over all cores with rayon and no
//! scheduling, caching or memory accounting. `bench/calc.sh` compares chunkcube against it.
//!
//! With `--reduce OP BAND` (OP one of max, min, sum, count, mean), the limit for a reduction
//! over time instead: decode every time step of BAND's chunks at one (y, x), reduce them with a
//! plain nodata-aware loop in the band's own integers, encode the float32 result chunk; every
//! chunk file is handed to the kernel's readahead at the start, so cold reads overlap.
//!
//! ```text
//! cargo run --release --example bound_calc -- CUBE [TIME_STEPS]
//! cargo run --release --example bound_calc -- CUBE --reduce max nir
//! ```

use rayon::prelude::*;
use std::sync::Arc;
use std::time::Instant;
use zarrs::array::codec::{Crc32cCodec, ZstdCodec};
use zarrs::array::{Array, ArrayBuilder};
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::store::MemoryStore;
use zarrs::storage::WritableStorageTraits;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let cube = args.get(1).ok_or("usage: bound_calc CUBE [TIME_STEPS]")?;
    // The allocator as chunkcube's command line tunes it, so the bound pays no page faults
    // that chunkcube does not.
    chunkcube::exec::tune_allocator(chunkcube::exec::ExecConfig::default().memory_limit);
    let store = Arc::new(FilesystemStore::new(cube)?);
    if args.get(2).map(String::as_str) == Some("--reduce") {
        let op = args.get(3).ok_or("--reduce OP BAND")?;
        let band = args.get(4).ok_or("--reduce OP BAND")?;
        return reduce_bound(store, cube, op, band);
    }
    let red = Array::open(store.clone(), "/red")?;
    let nir = Array::open(store, "/nir")?;
    let shape = red.shape().to_vec();
    let chunk = red
        .chunk_grid()
        .chunk_shape(&[0, 0, 0])?
        .ok_or("no chunk shape")?;
    let c: Vec<u64> = chunk.iter().map(|v| v.get()).collect();
    let steps = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(shape[0]);
    let grid = [
        steps.div_ceil(c[0]),
        shape[1].div_ceil(c[1]),
        shape[2].div_ceil(c[2]),
    ];
    let out_store = Arc::new(MemoryStore::new());
    let mut b = ArrayBuilder::new(
        vec![steps, shape[1], shape[2]],
        c.clone(),
        zarrs::array::data_type::float32(),
        f32::NAN,
    );
    b.bytes_to_bytes_codecs(vec![
        Arc::new(ZstdCodec::new(3, false)),
        Arc::new(Crc32cCodec::new()),
    ]);
    let out = b.build(out_store.clone(), "/ndvi")?;
    let idx: Vec<[u64; 3]> = (0..grid[0])
        .flat_map(|t| (0..grid[1]).flat_map(move |y| (0..grid[2]).map(move |x| [t, y, x])))
        .collect();
    let start = Instant::now();
    idx.par_iter().try_for_each(|i| -> Result<(), String> {
        let r: ndarray::ArrayD<u16> = red.retrieve_chunk(i).map_err(|e| e.to_string())?;
        let n: ndarray::ArrayD<u16> = nir.retrieve_chunk(i).map_err(|e| e.to_string())?;
        let ndvi = ndarray::Zip::from(&r).and(&n).map_collect(|&r, &n| {
            if r == 0 || n == 0 {
                f32::NAN
            } else {
                (n as f32 - r as f32) / (n as f32 + r as f32)
            }
        });
        out.store_chunk(i, ndvi).map_err(|e| e.to_string())?;
        // Keep memory flat: the bound is about CPU, not holding results.
        out_store
            .erase(
                &zarrs::storage::StoreKey::new(out.chunk_key(i).to_string())
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
        Ok(())
    })?;
    let s = start.elapsed().as_secs_f64();
    println!(
        "{{\"chunks\": {}, \"threads\": {}, \"seconds\": {:.3}}}",
        idx.len(),
        rayon::current_num_threads(),
        s
    );
    Ok(())
}

/// Decode + reduce over time + encode, per (y, x) chunk column, on rayon.
fn reduce_bound(
    store: Arc<FilesystemStore>,
    cube: &str,
    op: &str,
    band: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let a = Array::open(store, &format!("/{band}"))?;
    let shape = a.shape().to_vec();
    let c: Vec<u64> = a
        .chunk_grid()
        .chunk_shape(&[0, 0, 0])?
        .ok_or("no chunk shape")?
        .iter()
        .map(|v| v.get())
        .collect();
    let nodata: u16 = a
        .fill_value()
        .as_ne_bytes()
        .try_into()
        .map(u16::from_ne_bytes)
        .unwrap_or(0);
    let grid = [
        shape[0].div_ceil(c[0]),
        shape[1].div_ceil(c[1]),
        shape[2].div_ceil(c[2]),
    ];
    let out_store = Arc::new(MemoryStore::new());
    let mut b = ArrayBuilder::new(
        vec![1, shape[1], shape[2]],
        vec![1, c[1], c[2]],
        zarrs::array::data_type::float32(),
        f32::NAN,
    );
    b.bytes_to_bytes_codecs(vec![
        Arc::new(ZstdCodec::new(3, false)),
        Arc::new(Crc32cCodec::new()),
    ]);
    let out = b.build(out_store.clone(), "/r")?;
    let idx: Vec<[u64; 3]> = (0..grid[1])
        .flat_map(|y| (0..grid[2]).map(move |x| [0, y, x]))
        .collect();
    let start = Instant::now();
    // Every chunk file asked of the kernel up front, in the order the workers take them, so
    // reads overlap the computation as well as they can (chunkcube reads a few tasks ahead).
    let files: Vec<std::path::PathBuf> = idx
        .iter()
        .flat_map(|i| (0..grid[0]).map(move |t| [t, i[1], i[2]]))
        .map(|c| std::path::Path::new(cube).join(a.chunk_key(&c).as_str()))
        .collect();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        for f in files.iter().filter_map(|p| std::fs::File::open(p).ok()) {
            // SAFETY: a valid descriptor; the advice only schedules reads.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
        }
    });
    idx.par_iter().try_for_each(|i| -> Result<(), String> {
        let mut max: Vec<u16> = Vec::new();
        let mut min: Vec<u16> = Vec::new();
        let mut sum: Vec<u64> = Vec::new();
        let mut cnt: Vec<u32> = Vec::new();
        let mut dims = Vec::new();
        for t in 0..grid[0] {
            let v: ndarray::ArrayD<u16> = a
                .retrieve_chunk(&[t, i[1], i[2]])
                .map_err(|e| e.to_string())?;
            let px = v.len() / v.shape()[0];
            if cnt.is_empty() {
                dims = v.shape()[1..].to_vec();
                cnt = vec![0; px];
                match op {
                    "max" => max = vec![0; px],
                    "min" => min = vec![u16::MAX; px],
                    _ => sum = vec![0; px],
                }
            }
            for plane in v.as_slice().ok_or("not contiguous")?.chunks_exact(px) {
                match op {
                    "max" => max
                        .iter_mut()
                        .zip(&mut cnt)
                        .zip(plane)
                        .for_each(|((m, n), &x)| {
                            let ok = x != nodata;
                            *n += ok as u32;
                            *m = if ok { (*m).max(x) } else { *m };
                        }),
                    "min" => min
                        .iter_mut()
                        .zip(&mut cnt)
                        .zip(plane)
                        .for_each(|((m, n), &x)| {
                            let ok = x != nodata;
                            *n += ok as u32;
                            *m = if ok { (*m).min(x) } else { *m };
                        }),
                    _ => sum
                        .iter_mut()
                        .zip(&mut cnt)
                        .zip(plane)
                        .for_each(|((s, n), &x)| {
                            let ok = x != nodata;
                            *n += ok as u32;
                            *s += if ok { x as u64 } else { 0 };
                        }),
                }
            }
        }
        let r: Vec<f32> = (0..cnt.len())
            .map(|p| match (op, cnt[p]) {
                ("count", n) => n as f32,
                ("sum", _) => sum[p] as f32,
                (_, 0) => f32::NAN,
                ("max", _) => max[p] as f32,
                ("min", _) => min[p] as f32,
                (_, n) => (sum[p] as f64 / n as f64) as f32,
            })
            .collect();
        let mut sh = vec![1usize];
        sh.extend(&dims);
        let r = ndarray::ArrayD::from_shape_vec(sh, r).map_err(|e| e.to_string())?;
        out.store_chunk(i, r).map_err(|e| e.to_string())?;
        out_store
            .erase(
                &zarrs::storage::StoreKey::new(out.chunk_key(i).to_string())
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
        Ok(())
    })?;
    println!(
        "{{\"op\": \"{op}\", \"chunks\": {}, \"threads\": {}, \"seconds\": {:.3}}}",
        idx.len() as u64 * grid[0],
        rayon::current_num_threads(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
