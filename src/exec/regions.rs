//! The distinct task shapes of a grid: what a task holds depends on each axis's range only
//! through its length and its alignment against the stored chunks of every source, so the
//! planner sizes one region of each kind instead of every task.

use crate::graph::{Node, Op};
use std::ops::Range;
use std::sync::Arc;

/// The chunk sizes of the sources of `nodes` along `axis`.
fn source_chunk_sizes(nodes: &[&Arc<Node>], axis: usize, out: &mut Vec<u64>) {
    for n in nodes {
        match &n.op {
            Op::Source { src, .. } => out.push(src.chunk_shape()[axis].max(1)),
            _ => source_chunk_sizes(&n.children(), axis, out),
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The alignment period along `axis` of the sources of `nodes`: their chunk sizes' least
/// common multiple (past 2^24, every start is its own class).
pub(crate) fn alignment_period(nodes: &[&Arc<Node>], axis: usize) -> u64 {
    let mut sizes = Vec::new();
    source_chunk_sizes(nodes, axis, &mut sizes);
    sizes
        .iter()
        .try_fold(1u64, |l, &c| {
            let m = l / gcd(l, c) * c;
            (m <= 1 << 24).then_some(m)
        })
        .unwrap_or(u64::MAX)
}

/// The most task regions the planner sizes one by one; past it, each axis keeps its longest
/// and shortest ranges of each alignment class that fit.
const MAX_REPRESENTATIVES: usize = 4096;

/// One region for every distinct task of `nodes` in `chunks`: what a task holds depends on
/// each axis's range only through its length and its alignment against the stored chunks of
/// every source (start modulo their least common multiple; offsets are constant per source),
/// so these regions bound every task of the grid.
pub(crate) fn representative_regions(
    nodes: &[&Arc<Node>],
    shape: [u64; 3],
    chunks: [u64; 3],
) -> Vec<[Range<u64>; 3]> {
    let per_axis: [Vec<Range<u64>>; 3] = std::array::from_fn(|axis| {
        let period = alignment_period(nodes, axis);
        let c = chunks[axis].max(1);
        let n = shape[axis].div_ceil(c);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for i in 0..n {
            let r = i * c..((i + 1) * c).min(shape[axis]);
            if seen.insert((r.end - r.start, r.start % period)) {
                out.push(r);
            }
        }
        if out.is_empty() {
            out.push(0..shape[axis].min(c));
        }
        out
    });
    let total: usize = per_axis.iter().map(Vec::len).product();
    let axes: [Vec<Range<u64>>; 3] = if total <= MAX_REPRESENTATIVES {
        per_axis
    } else {
        // Too many alignment classes: keep the longest ranges and the edge of each axis, and
        // every range of the axis with most alignment classes up to the bound.
        per_axis.map(|v| {
            if v.len() <= 16 {
                return v;
            }
            let max = v.iter().map(|r| r.end - r.start).max().unwrap_or(0);
            let mut keep: Vec<Range<u64>> = v
                .iter()
                .filter(|r| r.end - r.start == max)
                .take(15)
                .cloned()
                .collect();
            if let Some(last) = v.last() {
                if !keep.contains(last) {
                    keep.push(last.clone());
                }
            }
            keep
        })
    };
    let mut out = Vec::new();
    for t in &axes[0] {
        for y in &axes[1] {
            for x in &axes[2] {
                out.push([t.clone(), y.clone(), x.clone()]);
            }
        }
    }
    out
}
