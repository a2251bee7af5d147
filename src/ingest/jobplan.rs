//! `plan ingest … --shards N`: what each worker of a sharded ingest will read, write and
//! hold, from the tiles' headers and the same split the workers use
//! ([`objects_by_shard`]), without reading a pixel.

use super::plan::PlanBand;
use super::plan::{plan_mosaic, MosaicPlan};
use super::scan::{scan_tile, TileInfo};
use super::write::{check_plan_size, chunk_shapes, read_sources};
use super::{IngestError, IngestOptions, Sources};
use crate::store::grid_shape;
use crate::store::job::{Shard, Splitter};
use crate::store::jobplan::JobPlan;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// GDAL's block cache an ingest sets (MiB), counted in each worker's memory.
const GDAL_CACHE: u64 = 64 << 20;

/// The plan of ingesting `sources` with `opts` as a job of `count` workers: per shard the
/// output chunks and objects, the decoded bytes written, the tiles' bytes read (each tile's
/// file size in proportion to the pixels read from it), requests (remote tiles: a header
/// read per tile touched and a ranged read per tile window; PUTs: objects plus markers) and
/// the projected memory of a worker. When `out` holds a scan of these tiles saved by
/// `ingest --scan-only`, it is the plan's source (no header is read) and the workers' GETs
/// count the one read of the saved scan instead of a header scan of every tile.
pub fn plan_job(
    sources: &Sources,
    opts: &IngestOptions,
    count: u32,
    out: Option<&str>,
) -> Result<JobPlan, IngestError> {
    let srcs = read_sources(sources)?;
    let saved = match out {
        // Opened as a writer (a remote reader insists on group metadata), but a missing
        // local folder is not created: it holds no scan.
        Some(o) => match crate::store::Location::parse(o) {
            Ok(crate::store::Location::Local(p)) if !p.exists() => None,
            _ => match crate::store::Store::open(o, true) {
                Ok(store) => super::savedscan::load_matching(&store, &srcs)?,
                Err(_) => None,
            },
        },
        None => None,
    };
    let (infos, bytes) = match saved {
        Some(r) => (r.infos, Some(r.bytes)),
        None => {
            let infos: Vec<TileInfo> = srcs.par_iter().map(scan_tile).collect::<Result<_, _>>()?;
            (infos, None)
        }
    };
    let plan = plan_mosaic(&infos)?;
    if !opts.allow_huge && bytes.is_none() {
        check_plan_size(&plan, &infos)?;
    }
    let (chunks, shards) = chunk_shapes(&plan, opts)?;
    Ok(plan_objects(
        &plan,
        &infos,
        bytes.as_deref(),
        chunks,
        shards,
        opts,
        count,
    ))
}

/// Bytes of a tile's file (its object size, for a remote tile).
pub(crate) fn file_bytes(path: &Path) -> u64 {
    if super::remote::is_remote_path(path) {
        super::remote::stat(path).map_or(0, |s| s.0)
    } else {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }
}

/// Decoded bytes of object `idx` (clipped to the array).
pub(crate) fn object_bytes(
    band: &PlanBand,
    idx: [u64; 3],
    outer: [u64; 3],
    shape: [u64; 3],
) -> u64 {
    (0..3)
        .map(|i| (shape[i] - idx[i] * outer[i]).min(outer[i]))
        .product::<u64>()
        * band.dtype.size() as u64
}

/// Every object (band, object index) in canonical order (band, time, y, x) with the shard it
/// belongs to when the job is split in `count` shards by decoded bytes: the one split the
/// workers and the planner share.
pub(crate) fn objects_by_shard(
    plan: &MosaicPlan,
    shape: [u64; 3],
    outer: [u64; 3],
    count: u32,
) -> impl Iterator<Item = (u32, (usize, [u64; 3]))> + '_ {
    let grid = grid_shape(shape, outer);
    let all = move || {
        (0..plan.bands.len()).flat_map(move |bi| {
            (0..grid[0]).flat_map(move |t| {
                (0..grid[1]).flat_map(move |y| (0..grid[2]).map(move |x| (bi, [t, y, x])))
            })
        })
    };
    let weight =
        move |(bi, idx): (usize, [u64; 3])| object_bytes(&plan.bands[bi], idx, outer, shape);
    let total: u64 = all().map(weight).sum();
    let mut split = Splitter::new(total, count);
    all().map(move |o| (split.next(weight(o)), o))
}

/// The objects (band, object index) of `shard`, in canonical order (band, time, y, x), split
/// by their decoded bytes.
pub(crate) fn shard_objects(
    plan: &MosaicPlan,
    shape: [u64; 3],
    outer: [u64; 3],
    shard: Shard,
) -> Vec<(usize, [u64; 3])> {
    objects_by_shard(plan, shape, outer, shard.count)
        .filter(|(i, _)| *i == shard.index)
        .map(|(_, o)| o)
        .collect()
}

/// Per shard, what its objects write and read (the body of [`plan_job`]).
fn plan_objects(
    plan: &MosaicPlan,
    infos: &[TileInfo],
    saved_bytes: Option<&[u64]>,
    chunks: [u64; 3],
    shards: Option<[u64; 3]>,
    opts: &IngestOptions,
    count: u32,
) -> JobPlan {
    let mut job = JobPlan::new("ingest", count);
    let shape = [
        plan.times.len() as u64,
        plan.geobox.height,
        plan.geobox.width,
    ];
    let outer = shards.unwrap_or(chunks);
    let inner: u64 = (0..3).map(|i| outer[i] / chunks[i]).product();
    // Bytes per pixel of each tile's file.
    let density: HashMap<PathBuf, f64> = infos
        .par_iter()
        .enumerate()
        .map(|(i, t)| {
            let px = (t.width * t.height).max(1) as f64;
            let b = match saved_bytes {
                Some(b) => b[i],
                None => file_bytes(&t.source.path),
            };
            (t.source.path.clone(), b as f64 / px)
        })
        .collect();
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        as u64;
    let mut touched: HashSet<&Path> = HashSet::new();
    let mut current = None;
    for (i, (bi, idx)) in objects_by_shard(plan, shape, outer, count) {
        if current != Some(i) {
            touched.clear();
            current = Some(i);
        }
        let band = &plan.bands[bi];
        let s = &mut job.per_shard[i as usize];
        let bytes = object_bytes(band, idx, outer, shape);
        let (r0, c0) = (idx[1] * outer[1], idx[2] * outer[2]);
        let (r1, c1) = ((r0 + outer[1]).min(shape[1]), (c0 + outer[2]).min(shape[2]));
        // Edge objects hold only the chunks inside the array.
        let held: u64 = (0..3)
            .map(|d| {
                let start = idx[d] * outer[d];
                let len = (shape[d] - start).min(outer[d]);
                len.div_ceil(chunks[d])
            })
            .product();
        s.chunks += if shards.is_some() { held.min(inner) } else { 1 };
        s.objects += 1;
        s.puts += 1;
        s.bytes_written += bytes;
        let obj_px: u64 = outer.iter().product();
        let mem = threads * (obj_px * (band.dtype.size() as u64 + 1) + bytes) + GDAL_CACHE;
        s.memory_bytes = s.memory_bytes.max(mem);
        let t_end = ((idx[0] + 1) * outer[0]).min(shape[0]);
        for t in idx[0] * outer[0]..t_end {
            for tile in &band.tiles[t as usize] {
                let ir = r1
                    .min(tile.row + tile.height)
                    .saturating_sub(r0.max(tile.row));
                let ic = c1
                    .min(tile.col + tile.width)
                    .saturating_sub(c0.max(tile.col));
                if ir == 0 || ic == 0 {
                    continue;
                }
                s.bytes_read += (density[&tile.path] * (ir * ic) as f64).round() as u64;
                if super::remote::is_remote_path(&tile.path) {
                    s.gets += 1;
                    if touched.insert(&tile.path) {
                        s.gets += 1;
                    }
                }
            }
        }
    }
    // Every worker scans every tile's header before it plans (one GET per remote tile, seen
    // against a loopback S3 server): N x tiles in all, the term that grows with the workers;
    // with a saved scan, one GET of it instead.
    let remote_tiles = match saved_bytes {
        Some(_) => 1,
        None => infos
            .iter()
            .filter(|t| super::remote::is_remote_path(&t.source.path))
            .count() as u64,
    };
    for s in &mut job.per_shard {
        s.puts += 2; // the shard's start note and its finished marker
        s.gets += remote_tiles;
    }
    job.finish()
}
