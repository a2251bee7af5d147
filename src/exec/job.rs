//! Results written by a job split over workers (`calc … --shard I/N`): the plan's
//! fingerprint, this worker's output chunks, and the output location prepared so that only
//! workers of the same plan share it (see [`crate::store::job`]).

use super::ExecError;
use crate::geo::GeoBox;
use crate::graph::{Node, Op};
use crate::store::job::{self, JobMarker, Shard, Splitter};
use crate::store::Store;
use serde_json::{json, Map};
use std::ops::Range;
use std::sync::Arc;

/// What a worker (or a whole one-process run) wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteReport {
    /// Output chunks of this shard (every output array counted).
    pub chunks: u64,
    /// Of those, written now.
    pub written: u64,
    /// Found whole from an earlier run of this shard (kept).
    pub skipped: u64,
    /// The cube was complete, or this shard finished, already: nothing done.
    pub up_to_date: bool,
    /// The plan's fingerprint (the same in every worker of one job).
    pub fingerprint: String,
}

fn fnv(h: u64, s: &str) -> u64 {
    s.bytes()
        .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// The fingerprint of writing `outputs` on `chunks`: the graphs (operations, constants, the
/// sources' names, locations, shapes, chunks and windows; never process-local ids), the output
/// chunking, times and grid. Two workers agree on it exactly when they compute the same cube.
pub fn plan_fingerprint(
    outputs: &[(String, Arc<Node>)],
    chunks: [u64; 3],
    times: &[crate::geo::Time],
    geobox: &GeoBox,
) -> String {
    let basis = 0xcbf29ce484222325u64;
    let mut text = format!("calc1|{chunks:?}|{times:?}|{geobox:?}");
    for (name, node) in outputs {
        let h = node.fold(|n: &Node, kids: &[u64]| {
            let head = match &n.op {
                Op::Source { src, offset } => format!(
                    "src:{}:{:?}:{:?}:{:?}:{}:{:?}:{offset:?}",
                    src.name(),
                    src.location(),
                    src.shape(),
                    src.chunk_shape(),
                    src.dtype(),
                    src.nodata()
                ),
                Op::Const(v) => format!("const:{v:?}"),
                Op::Unary(o, _) => format!("{o:?}"),
                Op::Binary(o, _, _) => format!("{o:?}"),
                Op::Where(..) => "where".into(),
                Op::Clip(_, lo, hi) => format!("clip:{lo:?}:{hi:?}"),
                Op::Cast(d, _) => format!("cast:{d}"),
                Op::Reduce {
                    op, axis, offset, ..
                } => format!("reduce:{op:?}:{axis}:{offset:?}"),
                Op::Invalid(m) => format!("invalid:{m}"),
            };
            let kid_text: Vec<String> = kids.iter().map(|k| format!("{k:016x}")).collect();
            let own = format!(
                "{head}|{:?}|{:?}|{}|{}",
                n.shape,
                n.present,
                n.dtype,
                kid_text.join(",")
            );
            fnv(basis, &own)
        });
        text.push_str(&format!("|{name}={h:016x}"));
    }
    // Two independent 64-bit hashes of the description.
    format!(
        "{:016x}{:016x}",
        fnv(basis, &text),
        fnv(0x84222325cbf29ce4, &text)
    )
}

/// Every output chunk region in canonical (C) order with the shard it belongs to when the job
/// is split in `count` shards by the regions' pixels: the one split workers and the planner
/// share.
pub fn regions_by_shard(
    shape: [u64; 3],
    chunks: [u64; 3],
    count: u32,
) -> impl Iterator<Item = (u32, [Range<u64>; 3])> {
    let weight = |r: &[Range<u64>; 3]| r.iter().map(|r| r.end - r.start).product::<u64>();
    let total: u64 = crate::graph::regions(shape, chunks)
        .map(|r| weight(&r))
        .sum();
    let mut split = Splitter::new(total, count);
    crate::graph::regions(shape, chunks).map(move |r| (split.next(weight(&r)), r))
}

/// The output chunk regions of `shard`, in canonical (C) order, split by their pixels.
pub fn shard_regions(shape: [u64; 3], chunks: [u64; 3], shard: Shard) -> Vec<[Range<u64>; 3]> {
    regions_by_shard(shape, chunks, shard.count)
        .filter(|(i, _)| *i == shard.index)
        .map(|(_, r)| r)
        .collect()
}

/// The job of writing a result cube with this fingerprint in `count` shards.
pub(crate) fn calc_job(fingerprint: &str, count: u32, has_crs: bool) -> JobMarker {
    let mut attributes = Map::new();
    if has_crs {
        attributes.insert("grid_mapping".into(), json!("spatial_ref"));
    }
    attributes.insert("job_fingerprint".into(), json!(fingerprint));
    JobMarker {
        fingerprint: fingerprint.to_string(),
        shards: count,
        kind: "calc".into(),
        product: "chunkcube_result".into(),
        write_id: None,
        attributes,
    }
}

/// Prepare `store` for a worker of `job`. `Ok(false)`: the cube is committed already (by this
/// job), nothing to do. A committed cube of another plan, other content, or another plan's
/// unfinished job is refused.
pub(crate) fn prepare_shard(store: &Store, job: &JobMarker) -> Result<bool, ExecError> {
    if let Some(root) = store.get("zarr.json")? {
        let doc: serde_json::Value = serde_json::from_slice(&root).unwrap_or_default();
        let fp = doc
            .pointer("/attributes/job_fingerprint")
            .and_then(|v| v.as_str());
        if fp == Some(job.fingerprint.as_str()) {
            return Ok(false);
        }
        return Err(ExecError::Exists(store.url().to_string()));
    }
    if job::read_job(store)?.is_none()
        && store
            .list_sizes("")?
            .iter()
            .any(|(k, _)| !k.ends_with(".tmp") && !job::is_job_key(k))
    {
        return Err(ExecError::Exists(store.url().to_string()));
    }
    job::begin(store, job)?;
    Ok(true)
}
