//! Graphviz pictures of the task graph, read bottom-up like Dask's `visualize()`:
//! stored chunks → load tasks → operations → output chunks. Up to [`MAX_DETAILED`] output
//! chunks every task is drawn, so each output chunk's independence is visible; beyond that the
//! graph is summarised per layer (one node per operation with its task count and bytes).

use super::plan::{input_region, layers};
use super::{Node, Op};
use crate::store::grid_shape;
use std::collections::HashMap;
use std::fmt::Write;
use std::ops::Range;
use std::sync::Arc;

/// The most output chunks drawn task by task.
pub(crate) const MAX_DETAILED: u64 = 16;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// DOT text of the graph of `node` computed in `chunks`.
pub fn to_dot(node: &Arc<Node>, chunks: [u64; 3], name: &str) -> String {
    let grid = grid_shape(node.shape, chunks);
    let n: u64 = grid.iter().product();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "digraph \"{}\" {{\n  rankdir=BT;\n  node [fontname=\"Helvetica\", fontsize=10];",
        esc(name)
    );
    if n <= MAX_DETAILED {
        let mut drawn: HashMap<String, ()> = HashMap::new();
        for t in 0..grid[0] {
            for y in 0..grid[1] {
                for x in 0..grid[2] {
                    let idx = [t, y, x];
                    let region: [Range<u64>; 3] = std::array::from_fn(|i| {
                        idx[i] * chunks[i]..((idx[i] + 1) * chunks[i]).min(node.shape[i])
                    });
                    let top = task(&mut s, &mut drawn, node, &region);
                    let out = format!("out_{t}_{y}_{x}");
                    let _ = writeln!(s, "  {out} [shape=box, style=filled, fillcolor=\"#e8f0fe\", label=\"{} ({t}, {y}, {x})\"];", esc(name));
                    let _ = writeln!(s, "  {top} -> {out};");
                }
            }
        }
    } else {
        let _ = writeln!(s, "  label=\"{} output chunks: summarised per layer\";", n);
        for l in layers(node, chunks) {
            if let Some((band, c)) = &l.stored_chunks {
                let _ = writeln!(
                    s,
                    "  store_{} [shape=box, label=\"{} stored chunks of '{}'\"];",
                    l.id,
                    c,
                    esc(band)
                );
                let _ = writeln!(s, "  store_{} -> n{};", l.id, l.id);
            }
            let _ = writeln!(
                s,
                "  n{} [shape=ellipse, label=\"{}\\n{} tasks, {}\"];",
                l.id,
                esc(&l.label),
                l.tasks,
                crate::store::format_bytes(l.bytes),
            );
            for i in &l.inputs {
                let _ = writeln!(s, "  n{i} -> n{};", l.id);
            }
        }
        let _ = writeln!(s, "  out [shape=box, style=filled, fillcolor=\"#e8f0fe\", label=\"{} ({} chunks)\"];\n  n{} -> out;", esc(name), n, node.id);
    }
    s.push_str("}\n");
    s
}

/// Draw the task computing `region` of `node` (and its inputs); returns its DOT id.
fn task(
    s: &mut String,
    drawn: &mut HashMap<String, ()>,
    node: &Arc<Node>,
    region: &[Range<u64>; 3],
) -> String {
    let id = format!(
        "n{}_{}_{}_{}",
        node.id, region[0].start, region[1].start, region[2].start
    );
    if drawn.contains_key(&id) {
        return id;
    }
    drawn.insert(id.clone(), ());
    match &node.op {
        Op::Source { src, .. } if !src.is_persisted() => {
            let _ = writeln!(
                s,
                "  {id} [shape=circle, label=\"{}\"];",
                esc(&node.label())
            );
            for (b, c) in super::source_chunks(node, region) {
                let key = b.chunk_key(c);
                let sid = format!("k_{}", key.replace(['/', '.', '-'], "_"));
                if !drawn.contains_key(&sid) {
                    drawn.insert(sid.clone(), ());
                    let _ = writeln!(s, "  {sid} [shape=box, label=\"{}\"];", esc(&key));
                }
                let _ = writeln!(s, "  {sid} -> {id};");
            }
        }
        Op::Const(_) => {}
        _ => {
            let _ = writeln!(
                s,
                "  {id} [shape=ellipse, label=\"{}\"];",
                esc(&node.label())
            );
            for ch in node.children() {
                if let Op::Const(v) = ch.op {
                    let cid = format!("c{}_{}", ch.id, id);
                    let _ = writeln!(
                        s,
                        "  {cid} [shape=plaintext, label=\"{v}\"];\n  {cid} -> {id};"
                    );
                    continue;
                }
                let r = input_region(node, ch, region);
                let cid = task(s, drawn, ch, &r);
                let _ = writeln!(s, "  {cid} -> {id};");
            }
        }
    }
    id
}
