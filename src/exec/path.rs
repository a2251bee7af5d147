//! The path each task takes (whole, row strips, a spilled median streamed into its chunk),
//! decided per task region from the plan, and what a task holds on it: the planner sizes every
//! distinct region on the path [`task_path`] gives it, and the executor asks the same function.

use super::plan::{spills, streamed_need, whole_need, Caps, Demand, TaskPlan};
use crate::graph::{input_region, Node, Op};
use std::ops::Range;
use std::sync::Arc;

/// The path a plan prefers (see [`TaskPlan::mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// Every task whole (the fastest when the limit allows it).
    Whole,
    /// Row strips wherever they apply.
    Strips,
    /// Spilled medians written strip by strip wherever that applies.
    Streamed,
}

/// The way one task runs (see [`task_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskPath {
    /// The output chunk computed whole, its stored chunks decoded whole.
    Whole,
    /// Row strips of this many rows, stored chunks streamed, the output encoded as it comes.
    Strips(u64),
    /// A spilled median written to its chunk strip by strip.
    Streamed,
}

impl TaskPath {
    /// The name `--explain` shows.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TaskPath::Whole => "whole",
            TaskPath::Strips(_) => "strips",
            TaskPath::Streamed => "streamed",
        }
    }
}

/// The path the task over `region` takes under `plan` (the executor asks the same): the plan's
/// mode where it applies to this region, else the cheapest path that does (an edge chunk whose
/// stacks fit takes another path than a full one). Whole tasks whose median spills are the
/// spilled path (see [`is_spilled`]). Every path taken fits the plan's need: the planner sized
/// every distinct region on the path this function gives it.
pub(crate) fn task_path(
    nodes: &[&Arc<Node>],
    region: &[Range<u64>; 3],
    chunks: [u64; 3],
    caps: Caps,
    d: Demand,
    plan: TaskPlan,
) -> TaskPath {
    if plan.mode == Mode::Whole {
        return TaskPath::Whole;
    }
    let strips = super::strips::strips_apply(nodes, d)
        .then(|| super::strips::strips_need(nodes, region, chunks, caps, d, plan.rows))
        .flatten();
    let streamed = streamed_need(nodes, region, chunks, caps, d);
    match (plan.mode, strips, streamed) {
        (Mode::Strips, Some(_), _) => return TaskPath::Strips(plan.rows),
        (Mode::Streamed, _, Some(_)) => return TaskPath::Streamed,
        _ => {}
    }
    let whole = whole_need(nodes, region, chunks, caps, d);
    [
        (TaskPath::Whole, Some(whole)),
        (TaskPath::Strips(plan.rows), strips),
        (TaskPath::Streamed, streamed),
    ]
    .into_iter()
    .filter_map(|(p, n)| n.map(|n| (p, n)))
    .min_by_key(|&(_, n)| n)
    .map(|(p, _)| p)
    .unwrap_or(TaskPath::Whole)
}

/// Whether a whole task over `region` rechunks a median through the spill store.
pub(crate) fn is_spilled(nodes: &[&Arc<Node>], region: &[Range<u64>; 3], caps: Caps) -> bool {
    fn walk(n: &Arc<Node>, r: &[Range<u64>; 3], caps: Caps) -> bool {
        match &n.op {
            Op::Reduce {
                op, axis, input, ..
            } => {
                let full = input_region(n, input, r);
                (op.needs_stack() && spills(*axis, &full, caps)) || walk(input, &full, caps)
            }
            _ => n
                .children()
                .into_iter()
                .any(|c| walk(c, &input_region(n, c, r), caps)),
        }
    }
    nodes.iter().any(|n| walk(n, region, caps))
}

/// What the task over `region` holds on `path`.
pub(crate) fn path_need(
    nodes: &[&Arc<Node>],
    region: &[Range<u64>; 3],
    chunks: [u64; 3],
    caps: Caps,
    d: Demand,
    path: TaskPath,
) -> u64 {
    let whole = || whole_need(nodes, region, chunks, caps, d);
    match path {
        TaskPath::Whole => whole(),
        TaskPath::Streamed => streamed_need(nodes, region, chunks, caps, d).unwrap_or_else(whole),
        TaskPath::Strips(rows) => {
            super::strips::strips_need(nodes, region, chunks, caps, d, rows).unwrap_or(u64::MAX)
        }
    }
}
