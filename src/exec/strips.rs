//! Planning tasks evaluated in row strips: a task computes its output chunk a few rows at a
//! time, its stored chunks decoded as streams of rows ([`crate::store::ChunkRows`]), its
//! output encoded as the rows arrive ([`crate::store::ChunkWriter`]), so what it holds no
//! longer grows with the chunk area. Pure functions of the graph, a region and the caps, as the
//! rest of the planner (the executor's side is `exec::rows`).

use super::plan::{px, work, Caps, Demand};
use crate::graph::{source_chunks, Node, Op};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

/// Values a strip holds per intermediate when there is room (about 1 MiB of float32): large
/// enough that per-strip overheads vanish, small enough to stay in the CPU caches' reach.
const STRIP_PIXELS: u64 = 256 << 10;

/// Whether the tasks of `nodes` can run in row strips: every source streams its chunks (one
/// time step per stored chunk, a codec chain that decodes as a stream), nothing reduces along
/// `y`, and each source is read at one row offset (so its rows are read front to back).
pub(crate) fn strips_apply(nodes: &[&Arc<Node>], d: Demand) -> bool {
    fn walk(n: &Arc<Node>, offsets: &mut HashMap<usize, u64>) -> bool {
        match &n.op {
            Op::Source { src, offset } => {
                src.rows_bytes().is_some()
                    && src.chunk_shape()[0] == 1
                    && *offsets.entry(src.uid()).or_insert(offset[1]) == offset[1]
            }
            Op::Reduce { axis: 1, .. } | Op::Invalid(_) => false,
            _ => n.children().into_iter().all(|c| walk(c, offsets)),
        }
    }
    if !d.strips {
        return false;
    }
    // A bare band read into memory is copied chunk by chunk already.
    if !d.writing && nodes.iter().all(|n| matches!(n.op, Op::Source { .. })) {
        return false;
    }
    let mut offsets = HashMap::new();
    nodes.iter().all(|n| walk(n, &mut offsets))
}

/// The rows of a strip over `region` when there is room: [`STRIP_PIXELS`] values.
pub(crate) fn default_rows(region: &[Range<u64>; 3]) -> u64 {
    let w = (region[2].end - region[2].start).max(1);
    let h = (region[1].end - region[1].start).max(1);
    (STRIP_PIXELS / w).clamp(1, h)
}

/// The strips of `region` of `rows` rows, plane by plane (the order a chunk is encoded in).
pub(crate) fn strip_regions(region: &[Range<u64>; 3], rows: u64) -> Vec<[Range<u64>; 3]> {
    let rows = rows.max(1);
    let mut out = Vec::new();
    for t in region[0].clone() {
        let mut y = region[1].start;
        while y < region[1].end {
            let e = (y + rows).min(region[1].end);
            out.push([t..t + 1, y..e, region[2].clone()]);
            y = e;
        }
    }
    out
}

/// Whether some reduction over time of `n` would rechunk through the spill store for `strip`
/// (strips take whole stacks in memory, or do not apply).
fn spills_in(n: &Arc<Node>, strip: &[Range<u64>; 3], caps: Caps) -> bool {
    match &n.op {
        Op::Reduce {
            op, axis, input, ..
        } => {
            let full = crate::graph::input_region(n, input, strip);
            (op.needs_stack() && super::plan::spills(*axis, &full, caps))
                || spills_in(input, &full, caps)
        }
        _ => n.children().into_iter().any(|c| {
            let r = crate::graph::input_region(n, c, strip);
            spills_in(c, &r, caps)
        }),
    }
}

/// What the open row readers of one strip hold: each stored chunk under the strip has a
/// reader (decoder and read buffer) and a buffer of the rows it read for the strip.
fn readers_bytes(nodes: &[&Arc<Node>], strip: &[Range<u64>; 3]) -> u64 {
    let mut seen = HashSet::new();
    let mut bytes = 0;
    for n in nodes {
        for (src, idx) in source_chunks(n, strip) {
            if !seen.insert((src.uid(), idx)) {
                continue;
            }
            let c = src.chunk_shape();
            let rows = (strip[1].end - strip[1].start).min(c[1]);
            bytes += src.rows_bytes().unwrap_or(0)
                + rows * c[2] * src.dtype().size() as u64
                + READER_OVERHEAD;
        }
    }
    bytes
}

/// Per open reader: its map entry and boxed state.
const READER_OVERHEAD: u64 = 512;

/// What a task over `region` evaluated in strips of `rows` rows holds at its peak, or `None`
/// when strips do not apply to it (a median's stacks would spill even for a strip).
pub(crate) fn strips_need(
    nodes: &[&Arc<Node>],
    region: &[Range<u64>; 3],
    chunks: [u64; 3],
    caps: Caps,
    d: Demand,
    rows: u64,
) -> Option<u64> {
    // Strips differ only by their height and their alignment against the stored chunks (and
    // every plane of a task is alike): one of each kind is sized.
    let first = [
        region[0].start..region[0].start + 1,
        region[1].clone(),
        region[2].clone(),
    ];
    let strips = strip_regions(&first, rows);
    let mut most = 0u64;
    let mut kinds = HashSet::new();
    for s in &strips {
        let key = (s[1].end - s[1].start, s[1].start % period_rows(nodes));
        if !kinds.insert(key) {
            continue;
        }
        if nodes.iter().any(|n| spills_in(n, s, caps)) {
            return None;
        }
        // Outputs are evaluated one after another, each pushed before the next starts.
        let eval = nodes
            .iter()
            .map(|n| work(n, s, caps, true) + convert_bytes(n, s, caps))
            .max()
            .unwrap_or(0);
        most = most.max(readers_bytes(nodes, s) + eval);
    }
    let writers = if d.writing {
        nodes
            .iter()
            .map(|n| {
                let chunk = chunks.iter().product::<u64>() * n.dtype.size() as u64;
                crate::store::encode::writer_bytes(chunk) + if d.remote { chunk } else { 0 }
            })
            .sum()
    } else {
        0
    };
    Some(most + writers)
}

/// A strip converted to an integer result's dtype before it is pushed.
fn convert_bytes(n: &Arc<Node>, s: &[Range<u64>; 3], caps: Caps) -> u64 {
    if n.dtype.is_float() && n.dtype.size() as u64 == caps.width {
        0
    } else {
        px(s) * n.dtype.size() as u64
    }
}

/// The least common multiple of the sources' chunk heights (strips repeat with it).
fn period_rows(nodes: &[&Arc<Node>]) -> u64 {
    super::plan::alignment_period(nodes, 1)
}
