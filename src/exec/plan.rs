//! The planner: how many bytes a task of a graph holds, whether a spilled median streams its
//! output chunk, and the smallest memory limit under which a graph runs. Pure functions of the
//! graph's shapes, chunk grids and dtypes, a limit and a thread count: nothing here reads a
//! chunk, so the planner is tested over synthetic sources (see the tests below and
//! `exec::testing`).
//!
//! A plan holds for every task it is applied to: the per-task need is the largest need of any
//! output chunk, found over the distinct task shapes of the grid (full and edge chunks, and
//! every alignment against the stored chunks), and a path chosen for the plan (a spilled
//! median streaming its chunk) is taken only by the tasks it applies to; the others run whole
//! within the same need.

use super::accept::{format_bytes_up, Planner};
use super::path::Mode;
pub(crate) use super::regions::{alignment_period, representative_regions};
use super::ExecError;
use crate::graph::{chunk_bytes, chunk_pieces, input_region, source_chunks, Node, Op};
use crate::store::{format_bytes, DType};
use std::ops::Range;
use std::sync::Arc;

/// What sizing a task depends on besides the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// The time-stack bytes a task may hold before rechunking through the spill store.
    pub(crate) stack: u64,
    /// Worker threads (a spilled rechunk uses as many helpers).
    pub(crate) threads: u64,
    /// Bytes of one value in flight: 4 (float32), or 8 when the graph computes in float64.
    pub(crate) width: u64,
}

/// What a run asks of the planner besides the graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Demand {
    /// Each task encodes and writes its output chunk.
    pub(crate) writing: bool,
    /// The output is written to an object store (an encoded chunk is held whole for its PUT).
    pub(crate) remote: bool,
    /// Bytes held beside the tasks for the whole run (a result computed into memory).
    pub(crate) hold: u64,
    /// Results will be persisted beside the tasks (room for their chunks kept in memory),
    /// besides any persisted intermediate the graph already reads.
    pub(crate) persisting: bool,
    /// The run can evaluate tasks in row strips (it writes or assigns each strip as it comes).
    pub(crate) strips: bool,
}

/// How the tasks of a run are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskPlan {
    /// Bytes each task reserves: the most any task of the run holds on its path.
    pub(crate) need: u64,
    /// The path tasks take where it applies; the others take the cheapest that does (see
    /// [`task_path`]).
    pub(crate) mode: Mode,
    /// Rows per strip, for the tasks that run in row strips.
    pub(crate) rows: u64,
    /// The time-stack bytes a task may hold before rechunking a median through the spill
    /// store (see [`stack_ladder`]); the executor sizes spilled medians with it.
    pub(crate) stack: u64,
}

impl TaskPlan {
    /// The caps its tasks are sized with, on `threads` workers.
    pub(crate) fn caps(&self, threads: usize, nodes: &[&Arc<Node>]) -> Caps {
        Caps {
            stack: self.stack,
            threads: (threads as u64).max(1),
            width: value_width(nodes),
        }
    }
}

/// How a median over time too large for memory rechunks through the spill store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpillPlan {
    /// Rows of a strip whose time stacks one helper holds while taking medians.
    pub(crate) rows: u64,
    /// Rows of a scratch file (whole strips; fewer, larger files).
    pub(crate) file_rows: u64,
    /// Threads sharing the work of the task.
    pub(crate) helpers: u64,
    /// The task's peak bytes.
    pub(crate) need: u64,
}

/// The decoded-chunk cache's share of a memory limit: an eighth, at most 64 MiB (single passes
/// gain nothing from more; chained computations reuse what fits).
pub(crate) fn cache_cap(limit: u64) -> u64 {
    (limit / 8).min(64 << 20)
}

/// The time-stack bytes a task may hold under `limit` before rechunking through the spill
/// store.
pub(crate) fn stack_cap(limit: u64) -> u64 {
    (limit / 8).max(64 << 10)
}

/// Whether a graph computes in float64: some node of it asks for float64 (a cast, a float64
/// source). Everything else computes in float32.
pub(crate) fn computes_f64(nodes: &[&Arc<Node>]) -> bool {
    fn any(n: &Arc<Node>) -> bool {
        n.dtype == DType::F64 || n.children().into_iter().any(any)
    }
    nodes.iter().any(|n| any(n))
}

/// Bytes of one value in flight for `nodes`.
pub(crate) fn value_width(nodes: &[&Arc<Node>]) -> u64 {
    if computes_f64(nodes) {
        8
    } else {
        4
    }
}

/// Whether a graph reads persisted intermediates.
pub(crate) fn has_persisted(n: &Arc<Node>) -> bool {
    match &n.op {
        Op::Source { src, .. } => src.is_persisted(),
        _ => n.children().into_iter().any(has_persisted),
    }
}

/// Whether a graph reads from a remote store.
pub(crate) fn has_remote_source(n: &Arc<Node>) -> bool {
    match &n.op {
        Op::Source { src, .. } => src.is_remote(),
        _ => n.children().into_iter().any(has_remote_source),
    }
}

/// Whether every source the task reads lies under one single reduction (so nothing but that
/// reduction ever asks for its chunks).
pub(crate) fn sole_reduction(nodes: &[&Arc<Node>]) -> bool {
    // (reductions, sources outside any reduction)
    fn walk(n: &Arc<Node>, under: bool) -> (usize, usize) {
        match &n.op {
            Op::Source { .. } => (0, usize::from(!under)),
            Op::Reduce { input, .. } => {
                let (r, s) = walk(input, true);
                (r + 1, s)
            }
            _ => n.children().into_iter().fold((0, 0), |(r, s), c| {
                let (r2, s2) = walk(c, under);
                (r + r2, s + s2)
            }),
        }
    }
    let (r, s) = nodes.iter().fold((0, 0), |(r, s), n| {
        let (r2, s2) = walk(n, false);
        (r + r2, s + s2)
    });
    r == 1 && s == 0
}

/// How many steps along `axis` a reduction evaluates at once: at most one stored chunk's
/// worth (and at most 1024).
pub(crate) fn reduce_step(input: &Arc<Node>, axis: usize) -> u64 {
    first_source_grid(input, axis)
        .map(|(c, _)| c)
        .unwrap_or(256)
        .clamp(1, 1024)
}

/// The chunk size and offset along `axis` of the first source under `n`.
fn first_source_grid(n: &Arc<Node>, axis: usize) -> Option<(u64, u64)> {
    match &n.op {
        Op::Source { src, offset } => Some((src.chunk_shape()[axis].max(1), offset[axis])),
        _ => n
            .children()
            .into_iter()
            .find_map(|c| first_source_grid(c, axis)),
    }
}

/// The slabs a reduction over `axis` of `input` walks over `full` (the evaluator and the
/// planner both use these): at most [`reduce_step`] steps each, cut at the stored chunk
/// boundaries of the input's first source (its offset applied), so every stored chunk of that
/// source falls in one slab and a slab never holds two chunks along the axis.
pub(crate) fn reduce_slabs(
    input: &Arc<Node>,
    axis: usize,
    full: &[Range<u64>; 3],
) -> Vec<Range<u64>> {
    let step = reduce_step(input, axis);
    let (chunk, off) = first_source_grid(input, axis).unwrap_or((step, 0));
    slabs_at(off, full[axis].clone(), chunk, step)
}

/// Cut `range` (steps of a node whose step `t` is stored step `t + off`) at the multiples of
/// `chunk` in stored steps, and every `step` steps within a chunk.
pub(crate) fn slabs_at(off: u64, range: Range<u64>, chunk: u64, step: u64) -> Vec<Range<u64>> {
    let (chunk, step) = (chunk.max(1), step.max(1).min(chunk.max(1)));
    let mut out = Vec::new();
    let mut s = range.start;
    while s < range.end {
        let abs = s + off;
        let chunk_end = (abs / chunk + 1) * chunk;
        let within = abs - abs / chunk * chunk;
        let step_end = abs - within + (within / step + 1) * step;
        let e = (chunk_end.min(step_end) - off).min(range.end);
        out.push(s..e);
        s = e;
    }
    out
}

/// One slab of each distinct kind among `slabs` along `axis` of `full`: what a slab holds
/// depends on its length and its alignment against every source's chunks (start modulo the
/// sources' alignment period). Past 64 kinds, the longest slab widened to two chunks' worth
/// (which covers any alignment) stands for all.
fn distinct_slabs(
    input: &Arc<Node>,
    axis: usize,
    full: &[Range<u64>; 3],
    slabs: &[Range<u64>],
) -> Vec<[Range<u64>; 3]> {
    let period = alignment_period(&[input], axis);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for s in slabs {
        if seen.insert((s.end - s.start, s.start % period)) {
            let mut r = full.clone();
            r[axis] = s.clone();
            out.push(r);
        }
    }
    if out.len() > 64 {
        let len = slabs.iter().map(|s| s.end - s.start).max().unwrap_or(1);
        let mut r = full.clone();
        r[axis] = full[axis].start..(full[axis].start + 2 * len).min(full[axis].end);
        return vec![r];
    }
    out
}

/// Bytes of bookkeeping per decoded chunk a task holds besides its values (the shared handle,
/// the array header, the task memo's and the cache's entries). Negligible for real chunks;
/// counted so that a grid of tiny chunks is sized honestly too.
const CHUNK_OVERHEAD: u64 = 512;

/// Bytes per piece of a source window (its entry in the piece list, the converted window's
/// header).
const PIECE_OVERHEAD: u64 = 256;

pub(crate) fn px(r: &[Range<u64>; 3]) -> u64 {
    r.iter().map(|r| r.end - r.start).product()
}

/// Decoded bytes of the distinct chunks that computing `region` of `nodes` reads.
fn chunks_under(nodes: &[&Arc<Node>], region: &[Range<u64>; 3]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    for n in nodes {
        for (src, idx) in source_chunks(n, region) {
            if seen.insert((src.uid(), idx)) {
                bytes += chunk_bytes(&*src) + CHUNK_OVERHEAD;
            }
        }
    }
    bytes
}

/// The bytes one task computing `region` of each of `nodes` (one after the other) holds at
/// its peak. A task keeps every chunk it fetched until it ends (so a band named twice is
/// fetched once), except a task whose sources all lie under one reduction, which lets go of
/// each slab of chunks once past it: its chunks are counted per slab, inside the reduction.
pub(crate) fn task_bytes(nodes: &[&Arc<Node>], region: &[Range<u64>; 3], caps: Caps) -> u64 {
    let releases = sole_reduction(nodes);
    let held = if releases {
        0
    } else {
        chunks_under(nodes, region)
    };
    held + nodes
        .iter()
        .map(|n| work(n, region, caps, !releases))
        .sum::<u64>()
}

/// The bytes computing `region` of `node` holds at its peak besides the chunks counted by the
/// caller (`held`: the task holds every chunk it reads; else this counts the chunks of each
/// slab of a reduction, or of a source read outside one). Evaluation is depth-first: a binary
/// op holds its left result while it computes the right one and then works in place, so the
/// peak is `max(left, left_result + right)`, not the sum of every node.
pub(crate) fn work(node: &Arc<Node>, region: &[Range<u64>; 3], caps: Caps, held: bool) -> u64 {
    let out = px(region) * caps.width;
    let est = |c: &Arc<Node>| work(c, &input_region(node, c, region), caps, held);
    match &node.op {
        Op::Const(_) | Op::Invalid(_) => 4,
        Op::Source { src, offset } => {
            // The float result, the piece list, and the chunks under the region unless
            // counted already.
            let pieces = chunk_pieces(&**src, *offset, region).len() as u64;
            let chunks = if held {
                0
            } else {
                pieces * (chunk_bytes(&**src) + CHUNK_OVERHEAD)
            };
            chunks + pieces * PIECE_OVERHEAD + out
        }
        Op::Unary(_, a) | Op::Clip(a, _, _) | Op::Cast(_, a) => est(a),
        Op::Binary(_, a, b) => est(a).max(out + est(b)),
        Op::Where(c, a, b) => est(c).max(out + est(a)).max(2 * out + est(b)) + out,
        Op::Reduce {
            op, axis, input, ..
        } => {
            let full = input_region(node, input, region);
            let slabs = reduce_slabs(input, *axis, &full);
            let child = distinct_slabs(input, *axis, &full, &slabs)
                .iter()
                .map(|slab| work(input, slab, caps, held))
                .max()
                .unwrap_or(0);
            if op.needs_stack() {
                if spills(*axis, &full, caps) {
                    spill_plan(input, &full, out, caps, None, held).need
                } else {
                    child + px(&full) * caps.width + out
                }
            } else {
                // Streaming: a count (u32) per pixel, and a sum (f64), sum and sum of squares,
                // min or max, as the reduction needs.
                child + px(region) * op.state_bytes() + out
            }
        }
    }
}

/// Whether a median over `axis` of `full` rechunks through the spill store (its stacks exceed
/// the stack cap, it runs along time, and there are rows to cut strips from). The evaluator
/// takes the same decision.
pub(crate) fn spills(axis: usize, full: &[Range<u64>; 3], caps: Caps) -> bool {
    px(full) * caps.width > caps.stack && axis == 0 && full[1].end - full[1].start > 1
}

/// Plan the spilled median of `input` over `full` (time along axis 0, walked in the slabs of
/// [`reduce_slabs`], `out` bytes of result). Spilling holds, per helper, one file strip of one slab with the
/// stored chunks under it; taking medians holds the result and `caps.stack` of strips. Phase
/// one runs on every core only when that does not raise the task's peak.
///
/// `streamed` plans a task that writes its chunk strip by strip on one thread (holding, besides
/// one strip of stacks and of medians, these bytes for the chunk writer) instead of holding
/// the result. `held`: the task's chunks are counted by the caller (see [`work`]).
pub(crate) fn spill_plan(
    input: &Arc<Node>,
    full: &[Range<u64>; 3],
    out: u64,
    caps: Caps,
    streamed: Option<u64>,
    held: bool,
) -> SpillPlan {
    let n = full[0].end - full[0].start;
    let h = full[1].end - full[1].start;
    let w = (full[2].end - full[2].start).max(1);
    let threads = if streamed.is_some() {
        1
    } else {
        caps.threads.max(1)
    };
    let rows = (caps.stack / (threads * n.max(1) * w * caps.width)).clamp(1, h.max(1));
    // About 2 MiB a file, within one helper's share of the stack.
    let file_bytes = (2u64 << 20).min(caps.stack / threads);
    let file_rows = (rows * (file_bytes / (rows * w * caps.width)).max(1)).min(h.max(1));
    let mut strip = full.clone();
    strip[1] = full[1].start..full[1].start + file_rows;
    // A slab of several steps is split per step into a copy; one step is spilled as is.
    let slabs = reduce_slabs(input, 0, full);
    let one = distinct_slabs(input, 0, &strip, &slabs)
        .iter()
        .map(|r| {
            let steps = r[0].end - r[0].start;
            work(input, r, caps, held)
                + if steps > 1 {
                    px(r) / steps * caps.width
                } else {
                    0
                }
        })
        .max()
        .unwrap_or(0);
    let medians = match streamed {
        // One strip of stacks, its medians, and the chunk writer.
        Some(writer) => n * rows * w * caps.width + rows * w * caps.width + writer,
        None => out + caps.stack,
    };
    let helpers = if threads * one <= medians { threads } else { 1 };
    SpillPlan {
        rows,
        file_rows,
        helpers,
        need: (helpers * one).max(medians),
    }
}

/// The plan of writing `region` of `node` strip by strip (see `Session::median_streamed`), if
/// `node` is a float median over time whose stacks spill there. `held` is what the chunk
/// writer holds besides its codec state (the encoded chunk, when the store is not local).
pub(crate) fn streamed_plan(
    node: &Arc<Node>,
    region: &[Range<u64>; 3],
    caps: Caps,
    held: u64,
) -> Option<SpillPlan> {
    let Op::Reduce {
        op, axis: 0, input, ..
    } = &node.op
    else {
        return None;
    };
    if !node.dtype.is_float() || !op.needs_stack() {
        return None;
    }
    let full = input_region(node, input, region);
    if !spills(0, &full, caps) {
        return None;
    }
    let out = px(region) * caps.width;
    let writer = crate::store::encode::writer_bytes(px(region) * node.dtype.size() as u64) + held;
    Some(spill_plan(
        input,
        &full,
        out,
        caps,
        Some(writer),
        !sole_reduction(&[node]),
    ))
}

/// What one task of `nodes` over `region` holds, computed whole (and its output chunk
/// encoded, if writing).
pub(crate) fn whole_need(
    nodes: &[&Arc<Node>],
    region: &[Range<u64>; 3],
    chunks: [u64; 3],
    caps: Caps,
    d: Demand,
) -> u64 {
    let mut need = task_bytes(nodes, region, caps);
    if d.writing {
        // Per output, one after another: an edge chunk padded to the chunk shape, its bytes,
        // their compressed copy and the checksummed one (each at most the chunk's size, about),
        // and the encoder's context.
        let chunk_px = chunks.iter().product::<u64>();
        need += nodes
            .iter()
            .map(|n| {
                let bytes = chunk_px * n.dtype.size() as u64;
                let pad = if px(region) < chunk_px {
                    chunk_px * caps.width
                } else {
                    0
                };
                pad + 3 * bytes + crate::store::encode::encoder_bytes(bytes)
            })
            .max()
            .unwrap_or(0);
    }
    need
}

/// What a task over `region` holds when spilled medians stream where they can.
pub(crate) fn streamed_need(
    nodes: &[&Arc<Node>],
    region: &[Range<u64>; 3],
    chunks: [u64; 3],
    caps: Caps,
    d: Demand,
) -> Option<u64> {
    let [node] = nodes else { return None };
    if !d.writing {
        return None;
    }
    let held = if d.remote {
        chunks.iter().product::<u64>() * node.dtype.size() as u64
    } else {
        0
    };
    streamed_plan(node, region, caps, held).map(|p| p.need)
}

/// Plan the tasks computing `nodes` (on one grid, chunked as `chunks`) under `limit` with
/// `threads` workers, or a [`ExecError::MemoryLimit`] stating the smallest limit under which
/// they run.
///
/// Of the paths that fit (whole, streamed medians where they apply, row strips), the one
/// letting most tasks run side by side wins (see the ranking below). A graph with a median is
/// planned with the largest stack cap under which some path fits, [`stack_cap`]`(limit)`
/// first; it is accepted when a cap of [`super::accept::stack_ladder`] fits, which makes acceptance monotone
/// in the limit (see there).
pub(crate) fn plan_tasks(
    nodes: &[&Arc<Node>],
    chunks: [u64; 3],
    limit: u64,
    threads: u64,
    d: Demand,
) -> Result<TaskPlan, ExecError> {
    for n in nodes {
        if let Some(m) = n.first_error() {
            return Err(ExecError::Invalid(m));
        }
    }
    let Some(planner) = Planner::new(nodes, chunks, threads, d) else {
        return Ok(TaskPlan {
            need: 0,
            mode: Mode::Whole,
            rows: 1,
            stack: stack_cap(limit),
        });
    };
    if let Some(p) = planner.plan(limit) {
        return Ok(p);
    }
    let min = planner.minimum();
    let min_text = format_bytes_up(min);
    Err(ExecError::MemoryLimit {
        limit: format_bytes(limit),
        needed: if d.hold > 0 {
            format!("{min_text} to hold the result in memory; write it to a cube with --out / to_zarr instead")
        } else {
            min_text
        },
        minimum: min,
    })
}
