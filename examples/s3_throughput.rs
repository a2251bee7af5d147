//! Full-band read throughput from S3: chunkcube (fetch + decode through the executor, with its
//! prefetching layer) vs a plain concurrent `object_store` GET loop over the same chunk objects
//! (fetch only, same concurrency cap) and the same loop decoding every chunk it gets (crc32c +
//! zstd, the transfer + decode bound). Used by `bench/s3.sh`; configuration from the AWS_*
//! environment, as for the CLI.
//!
//! ```text
//! cargo run --release --example s3_throughput -- s3://bucket/cube --band red [--repeat 3]
//! ```
//! Prints one JSON object: per method the best wall time, MB/s of encoded bytes, and
//! chunkcube's ratio to each loop (opening the cube, a few small metadata GETs, is timed apart).

use chunkcube::store::remote::s3::object_store_for;
use chunkcube::store::{runtime, tuning};
use chunkcube::store::{ChunkSpec, Location};
use chunkcube::{Cube, ExecConfig, Query};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;
use std::time::Instant;

/// CPU seconds of the whole process so far (all threads): what the client takes from a server
/// sharing its cores (moto in bench/s3.sh).
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .filter(|a| a.starts_with("s3://"))
        .ok_or_else(|| {
            anyhow::anyhow!("usage: s3_throughput s3://bucket/cube --band red [--repeat N]")
        })?
        .clone();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let band = opt("--band").unwrap_or_else(|| "red".into());
    let repeat: usize = opt("--repeat").and_then(|v| v.parse().ok()).unwrap_or(3);
    let Location::S3 { bucket, prefix } = Location::parse(&url)? else {
        anyhow::bail!("an s3:// URL is needed");
    };

    // The chunk objects of the band, from one listing.
    let store: Arc<dyn ObjectStore> = object_store_for(&url, &bucket)?;
    let band_prefix = ObjectPath::from(format!("{prefix}/{band}/c"));
    let keys: Vec<(ObjectPath, u64)> = runtime().block_on(
        store
            .list(Some(&band_prefix))
            .map_ok(|m| (m.location, m.size))
            .try_collect(),
    )?;
    let total: u64 = keys.iter().map(|k| k.1).sum();
    anyhow::ensure!(!keys.is_empty(), "no chunk objects under {band_prefix}");

    // As the command line and the Python module do: with glibc's defaults every decoded chunk
    // (512 KiB) came from fresh pages, their faults 5% of the client's CPU.
    chunkcube::exec::tune_allocator(ExecConfig::default().memory_limit);
    let cap = tuning().concurrency;
    // The decode the transfer + decode reference does to every chunk: what the chain asks (crc32c
    // checked when present, then zstd) into a fresh buffer of the chunk's decoded size, as
    // chunkcube must at the least. Read from the band's metadata, like chunkcube's read.
    let meta = Cube::open_with(&url, ExecConfig::default())?
        .band(&band)?
        .meta()
        .clone();
    let codecs = meta
        .stream_codecs
        .filter(|c| c.zstd_level.is_some() && meta.inner_chunk_shape.is_none())
        .ok_or_else(|| {
            anyhow::anyhow!("band {band}: the decode reference needs unsharded bytes→zstd chunks")
        })?;
    let decoded_len = meta.chunk_shape.iter().product::<u64>() as usize * meta.dtype.size();
    let decoder = std::cell::RefCell::new(zstd::bulk::Decompressor::new()?);
    let decode = |encoded: &[u8]| -> anyhow::Result<usize> {
        let body = if codecs.crc32c {
            let (body, sum) = encoded.split_at(encoded.len().saturating_sub(4));
            anyhow::ensure!(
                sum.len() == 4 && crc32c::crc32c(body).to_le_bytes() == sum,
                "crc32c mismatch"
            );
            body
        } else {
            encoded
        };
        let mut out = Vec::with_capacity(decoded_len);
        let n = decoder.borrow_mut().decompress_to_buffer(body, &mut out)?;
        anyhow::ensure!(
            n == decoded_len,
            "decoded {n} bytes, expected {decoded_len}"
        );
        std::hint::black_box(&out);
        Ok(n)
    };
    // The plain GET loop over the chunk objects, `cap` requests in flight, driven by this
    // thread. With `decode_too`, each chunk is decoded (`decode`) here as its GET completes,
    // while the other requests' connections are served by the runtime's workers: the loop a
    // plain client would write, not a strict bound (its decoding briefly holds up the others).
    let get_loop = |decode_too: bool| -> anyhow::Result<(f64, f64)> {
        let (t, c0) = (Instant::now(), cpu_now());
        let n: u64 = runtime().block_on(
            futures::stream::iter(keys.iter().map(|(p, _)| {
                let store = store.clone();
                let decode = &decode;
                async move {
                    let b = store.get(p).await?.bytes().await?;
                    if decode_too {
                        decode(&b)?;
                    }
                    Ok::<u64, anyhow::Error>(b.len() as u64)
                }
            }))
            .buffer_unordered(cap)
            .try_fold(0u64, |a, n| async move { Ok(a + n) }),
        )?;
        anyhow::ensure!(n == total, "GET loop read {n} bytes, expected {total}");
        Ok((t.elapsed().as_secs_f64(), cpu_now() - c0))
    };
    // Opening (metadata and coordinates, a few small sequential GETs) is timed apart from
    // reading the band; a fresh cube and session each time, so no decoded chunk is reused.
    let cube = || -> anyhow::Result<(f64, f64, u64, u64, f64)> {
        let t = Instant::now();
        let cube = Cube::open_with(&url, ExecConfig::default())?;
        let open_s = t.elapsed().as_secs_f64();
        let (t, c0) = (Instant::now(), cpu_now());
        let c = cube.band(&band)?.chunk_shape();
        let q = Query::new()
            .measurements(&[band.as_str()])
            .chunks(ChunkSpec::Dims([Some(c[0]), Some(c[1]), Some(c[2])]));
        let ds = cube.load(&q)?;
        let da = ds
            .get(&band)
            .ok_or_else(|| anyhow::anyhow!("no band {band}"))?;
        let v = da.compute()?;
        std::hint::black_box(&v);
        let s = cube.session().stats();
        Ok((
            open_s,
            t.elapsed().as_secs_f64(),
            s.chunks_read,
            s.bytes_read,
            cpu_now() - c0,
        ))
    };

    // Warm-up (connections, server caches), then alternate the three.
    get_loop(true)?;
    cube()?;
    let (mut best_plain, mut best_decode, mut best_cube, mut best_open) =
        (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let (mut cpu_plain, mut cpu_decode, mut cpu_cube) = (f64::MAX, f64::MAX, f64::MAX);
    let (mut chunks, mut bytes) = (0, 0);
    for _ in 0..repeat {
        let (w, u) = get_loop(false)?;
        best_plain = best_plain.min(w);
        cpu_plain = cpu_plain.min(u);
        let (w, u) = get_loop(true)?;
        best_decode = best_decode.min(w);
        cpu_decode = cpu_decode.min(u);
        let (o, t, c, b, u) = cube()?;
        best_open = best_open.min(o);
        best_cube = best_cube.min(t);
        cpu_cube = cpu_cube.min(u);
        chunks = c;
        bytes = b;
    }
    anyhow::ensure!(
        chunks == keys.len() as u64 && bytes == total,
        "chunkcube read {chunks} chunks / {bytes} bytes, expected {} / {total}",
        keys.len()
    );
    let mb = total as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "url": url,
            "band": band,
            "chunk_objects": keys.len(),
            "encoded_mb": mb,
            "concurrency": cap,
            "repeat": repeat,
            "plain_get_loop": { "best_s": best_plain, "mb_per_s": mb / best_plain, "cpu_s": cpu_plain },
            "get_loop_decode": { "best_s": best_decode, "mb_per_s": mb / best_decode, "cpu_s": cpu_decode },
            "chunkcube_fetch_decode": { "best_s": best_cube, "mb_per_s": mb / best_cube, "cpu_s": cpu_cube },
            "chunkcube_open_s": best_open,
            "ratio": best_plain / best_cube,
            "ratio_decode": best_decode / best_cube,
        })
    );
    Ok(())
}
