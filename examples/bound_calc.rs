//! The machine's limit for NDVI over a cube: zstd-decode the red and nir chunks, compute NDVI,
//! zstd-encode the float32 result, for every chunk, spread over all cores with rayon and no
//! scheduling, caching or memory accounting. `bench/calc.sh` compares chunkcube against it.
//!
//! ```text
//! cargo run --release --example bound_calc -- CUBE [TIME_STEPS]
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
