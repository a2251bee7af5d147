//! Planning: which stored chunks an output region needs, and how many tasks a graph has.
//! Everything here is arithmetic on chunk grids: nothing is enumerated per chunk unless asked,
//! so a million-chunk graph plans in milliseconds.

use super::ChunkSource;
use super::{Node, Op};
use crate::store::grid_shape;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// The region of a child needed to compute `region` of `node` (for `child` among its inputs).
pub fn input_region(node: &Node, child: &Node, region: &[Range<u64>; 3]) -> [Range<u64>; 3] {
    let mut r = region.clone();
    if let Op::Reduce { axis, offset, .. } = &node.op {
        for i in 0..3 {
            r[i] = if i == *axis {
                0..child.shape[i]
            } else {
                region[i].start + offset[i]..region[i].end + offset[i]
            };
        }
    }
    for (ri, present) in r.iter_mut().zip(child.present) {
        if !present {
            *ri = 0..1;
        }
    }
    r
}

fn chunk_range(r: &Range<u64>, c: u64) -> Range<u64> {
    if r.is_empty() {
        return 0..0;
    }
    r.start / c..(r.end - 1) / c + 1
}

/// The stored chunks (band, chunk index) that computing `region` of `node` reads, each once.
pub fn source_chunks(
    node: &Arc<Node>,
    region: &[Range<u64>; 3],
) -> Vec<(Arc<dyn ChunkSource>, [u64; 3])> {
    let mut out: Vec<(Arc<dyn ChunkSource>, [u64; 3])> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    collect(node, region, &mut out, &mut seen);
    out
}

fn collect(
    node: &Arc<Node>,
    region: &[Range<u64>; 3],
    out: &mut Vec<(Arc<dyn ChunkSource>, [u64; 3])>,
    seen: &mut std::collections::HashSet<(usize, [u64; 3])>,
) {
    match &node.op {
        Op::Source { src, offset } => {
            let c = src.chunk_shape();
            let abs: Vec<Range<u64>> = (0..3)
                .map(|i| region[i].start + offset[i]..region[i].end + offset[i])
                .collect();
            let (rt, ry, rx) = (
                chunk_range(&abs[0], c[0]),
                chunk_range(&abs[1], c[1]),
                chunk_range(&abs[2], c[2]),
            );
            for t in rt {
                for y in ry.clone() {
                    for x in rx.clone() {
                        if seen.insert((src.uid(), [t, y, x])) {
                            out.push((src.clone(), [t, y, x]));
                        }
                    }
                }
            }
        }
        _ => {
            for ch in node.children() {
                let r = input_region(node, ch, region);
                collect(ch, &r, out, seen);
            }
        }
    }
}

/// Chunk indices grouped per source, sources in first-seen order.
pub type ChunksBySource = Vec<(Arc<dyn ChunkSource>, Vec<[u64; 3]>)>;

/// Group `(source, chunk)` pairs per source (by [`ChunkSource::uid`]), keeping those `keep`
/// accepts.
pub fn group_by_source(
    pairs: impl IntoIterator<Item = (Arc<dyn ChunkSource>, [u64; 3])>,
    keep: impl Fn(&dyn ChunkSource) -> bool,
) -> ChunksBySource {
    let mut out: ChunksBySource = Vec::new();
    for (src, idx) in pairs {
        if !keep(&*src) {
            continue;
        }
        match out.iter_mut().find(|(s, _)| s.uid() == src.uid()) {
            Some((_, v)) => v.push(idx),
            None => out.push((src, vec![idx])),
        }
    }
    out
}

/// One layer of the graph: a node with its number of tasks and the bytes it produces.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Node id.
    pub id: u64,
    /// Label (operation).
    pub label: String,
    /// Tasks in this layer.
    pub tasks: u64,
    /// Bytes produced by all tasks of this layer.
    pub bytes: u64,
    /// Ids of the input layers.
    pub inputs: Vec<u64>,
    /// For sources: stored chunks read and their band.
    pub stored_chunks: Option<(String, u64)>,
}

/// The layers of a graph computed with output chunks `chunks`, inputs first.
pub fn layers(node: &Arc<Node>, chunks: [u64; 3]) -> Vec<Layer> {
    let out_tasks: u64 = grid_shape(node.shape, chunks).iter().product();
    let mut acc: Vec<Layer> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    walk(
        node,
        out_tasks,
        &[0..node.shape[0], 0..node.shape[1], 0..node.shape[2]],
        &mut acc,
        &mut index,
    );
    acc
}

fn walk(
    node: &Arc<Node>,
    tasks: u64,
    region: &[Range<u64>; 3],
    acc: &mut Vec<Layer>,
    index: &mut HashMap<u64, usize>,
) {
    if index.contains_key(&node.id) {
        return;
    }
    let mut inputs = Vec::new();
    for ch in node.children() {
        if let Op::Const(_) = ch.op {
            continue;
        }
        let r = input_region(node, ch, region);
        // A reduction's input runs one task per step along the reduced axis.
        let t = match &node.op {
            Op::Reduce { axis, .. } => tasks * ch.shape[*axis],
            _ => tasks,
        };
        walk(ch, t, &r, acc, index);
        inputs.push(ch.id);
    }
    let elems: u64 = node.shape.iter().product();
    let stored_chunks = match &node.op {
        Op::Source { src, offset } if !src.is_persisted() => {
            let c = src.chunk_shape();
            let n: u64 = (0..3)
                .map(|i| {
                    chunk_range(
                        &(region[i].start + offset[i]..region[i].end + offset[i]),
                        c[i],
                    )
                    .count() as u64
                })
                .product();
            Some((src.name().to_string(), n))
        }
        _ => None,
    };
    index.insert(node.id, acc.len());
    acc.push(Layer {
        id: node.id,
        label: node.label(),
        tasks,
        bytes: elems * node.dtype.size() as u64,
        inputs,
        stored_chunks,
    });
}

/// Tasks of the graph: one per output chunk per layer (constants fold into their users).
pub fn count_tasks(node: &Arc<Node>, chunks: [u64; 3]) -> u64 {
    layers(node, chunks).iter().map(|l| l.tasks).sum()
}

/// The output chunk regions of an array of `shape` computed in `chunks`, in C order (edge
/// chunks cut at the array's end).
pub fn regions(shape: [u64; 3], chunks: [u64; 3]) -> impl Iterator<Item = [Range<u64>; 3]> + Clone {
    let g = grid_shape(shape, chunks);
    (0..g[0]).flat_map(move |t| {
        (0..g[1]).flat_map(move |y| {
            (0..g[2]).map(move |x| {
                let idx = [t, y, x];
                std::array::from_fn(|i| {
                    idx[i] * chunks[i]..((idx[i] + 1) * chunks[i]).min(shape[i])
                })
            })
        })
    })
}
