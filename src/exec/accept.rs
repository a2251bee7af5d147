//! Choosing a plan under a limit, and the smallest limit under which a graph runs: the
//! [`Planner`] weighs the paths of [`super::plan`]'s sizing (whole, strips, streamed) for each
//! stack cap a limit offers. Acceptance is monotone in the limit, so the minimum it states is
//! a threshold (see [`stack_ladder`]).

use super::path::{path_need, task_path, Mode};
use super::plan::{
    cache_cap, has_persisted, representative_regions, stack_cap, streamed_need, value_width, Caps,
    Demand, TaskPlan,
};
use crate::graph::{Node, Op};
use crate::store::format_bytes;
use std::ops::Range;
use std::sync::Arc;

/// What tasks may reserve under `limit`: the limit less the decoded-chunk cache, the persisted
/// chunks kept in memory (at most another cache's worth) and what is held beside the tasks.
/// Never decreases as the limit grows (the cache's share grows slower than the limit).
fn room(limit: u64, persisting: bool, hold: u64) -> u64 {
    let slots = if persisting { 2 } else { 1 };
    limit.saturating_sub(slots * cache_cap(limit) + hold)
}

/// Whether some node of `nodes` takes a median, whose path depends on the stack cap.
fn takes_stacks(nodes: &[&Arc<Node>]) -> bool {
    fn any(n: &Arc<Node>) -> bool {
        matches!(&n.op, Op::Reduce { op, .. } if op.needs_stack())
            || n.children().into_iter().any(any)
    }
    nodes.iter().any(|n| any(n))
}

/// The stack caps a plan under `limit` may use, largest first: the powers of two from the
/// smallest cap up to [`stack_cap`]`(limit)`. A larger limit offers every cap a smaller one
/// does, and what a task holds depends on the limit only through its stack cap, while the
/// room left for tasks grows with the limit: so a graph accepted under some limit is accepted
/// under every larger one, and the stated minimum is a true threshold (a median whose stacks
/// just fit the cap needs more than one that spills, which made the minimum non-monotone when
/// the cap was the limit's eighth alone).
pub(crate) fn stack_ladder(limit: u64) -> Vec<u64> {
    let top = stack_cap(limit);
    let mut out = Vec::new();
    let mut s = MIN_STACK;
    while s <= top {
        out.push(s);
        s *= 2;
    }
    out.reverse();
    out
}

/// The smallest stack cap (see [`stack_cap`]).
const MIN_STACK: u64 = 64 << 10;

/// The planning of one graph under any limit (see [`plan_tasks`]).
pub(crate) struct Planner<'a> {
    nodes: &'a [&'a Arc<Node>],
    chunks: [u64; 3],
    threads: u64,
    d: Demand,
    persisting: bool,
    regions: Vec<[Range<u64>; 3]>,
    /// The graph takes a median (its needs depend on the stack cap).
    stacks: bool,
    /// [`Planner::need_of`] by (stack cap, mode, rows): the search for the minimum asks the
    /// same few again and again.
    needs: std::cell::RefCell<std::collections::HashMap<(u64, Mode, u64), u64>>,
    /// [`Planner::modes`] by stack cap.
    modes: std::cell::RefCell<std::collections::HashMap<u64, Vec<Mode>>>,
}

impl<'a> Planner<'a> {
    /// The planner of `nodes` (on one grid, chunked as `chunks`) on `threads` workers for
    /// `d`, if there are nodes.
    pub(crate) fn new(
        nodes: &'a [&'a Arc<Node>],
        chunks: [u64; 3],
        threads: u64,
        d: Demand,
    ) -> Option<Planner<'a>> {
        let first = nodes.first()?;
        Some(Planner {
            nodes,
            chunks,
            threads: threads.max(1),
            d,
            persisting: d.persisting || nodes.iter().any(|n| has_persisted(n)),
            regions: representative_regions(nodes, first.shape, chunks),
            stacks: takes_stacks(nodes),
            needs: Default::default(),
            modes: Default::default(),
        })
    }

    /// The smallest limit under which the graph is accepted.
    pub(crate) fn minimum(&self) -> u64 {
        minimum_limit(|l| self.accepts(l))
    }

    fn room(&self, l: u64) -> u64 {
        room(l, self.persisting, self.d.hold)
    }

    fn side_by_side(&self, l: u64, need: u64) -> u64 {
        (self.room(l) / need.max(1)).min(self.threads)
    }

    /// What a plan of `mode` with strips of `rows` and stacks capped at `stack` needs: the
    /// most any region needs on its path. Independent of the limit.
    fn need_of(&self, stack: u64, mode: Mode, rows: u64) -> u64 {
        // Without a median the stack cap changes nothing.
        let key = (if self.stacks { stack } else { 0 }, mode, rows);
        if let Some(&n) = self.needs.borrow().get(&key) {
            return n;
        }
        let n = self.size(stack, mode, rows);
        self.needs.borrow_mut().insert(key, n);
        n
    }

    /// [`Planner::need_of`], computed.
    fn size(&self, stack: u64, mode: Mode, rows: u64) -> u64 {
        let caps = Caps {
            stack,
            threads: self.threads,
            width: value_width(self.nodes),
        };
        let plan = TaskPlan {
            need: 0,
            mode,
            rows,
            stack,
        };
        self.regions
            .iter()
            .map(|r| {
                let path = task_path(self.nodes, r, self.chunks, caps, self.d, plan);
                path_need(self.nodes, r, self.chunks, caps, self.d, path)
            })
            .max()
            .unwrap_or(0)
    }

    /// The best plan under `l` with stacks capped at `stack`, if one fits. Of whole, and for
    /// each other mode the strip height letting most tasks run side by side (the tallest
    /// such, halving down to one row), most tasks side by side first; on a tie a streamed
    /// median (it never holds its result, and its tasks share the cores) when there are cores
    /// to share, else whole (the fastest), then strips.
    fn best(&self, l: u64, stack: u64) -> Option<TaskPlan> {
        let plan = |mode, rows| TaskPlan {
            need: self.need_of(stack, mode, rows),
            mode,
            rows,
            stack,
        };
        let mut all = vec![plan(Mode::Whole, 1)];
        let strips = super::strips::strips_apply(self.nodes, self.d);
        let full = self.chunks.map(|c| 0..c.max(1));
        for mode in self.modes(stack).into_iter().skip(1) {
            let mut rows = if strips {
                super::strips::default_rows(&full)
            } else {
                1
            };
            let mut best: Option<TaskPlan> = None;
            loop {
                let p = plan(mode, rows);
                let sbs = self.side_by_side(l, p.need);
                if best.is_none_or(|b| sbs > self.side_by_side(l, b.need)) {
                    best = Some(p);
                }
                if rows == 1 || (p.need <= self.room(l) && sbs == self.threads) {
                    break;
                }
                rows = (rows / 2).max(1);
            }
            all.extend(best);
        }
        let rank = |p: &TaskPlan| {
            let pref = match p.mode {
                Mode::Streamed if self.threads > 1 => 3,
                Mode::Whole => 2,
                Mode::Strips => 1,
                Mode::Streamed => 0,
            };
            (self.side_by_side(l, p.need), pref)
        };
        let whole = all[0].need;
        all.into_iter()
            .filter(|p| p.need <= self.room(l) && (p.mode != Mode::Streamed || p.need < whole))
            .fold(None::<TaskPlan>, |best, p| match best {
                Some(b) if rank(&b) >= rank(&p) => Some(b),
                _ => Some(p),
            })
    }

    /// The stack caps to try under `l` (one when the graph takes no median).
    fn ladder(&self, l: u64) -> Vec<u64> {
        if self.stacks {
            stack_ladder(l)
        } else {
            vec![stack_cap(l)]
        }
    }

    /// The modes that apply to the graph and demand with stacks capped at `stack`.
    fn modes(&self, stack: u64) -> Vec<Mode> {
        let key = if self.stacks { stack } else { 0 };
        if let Some(m) = self.modes.borrow().get(&key) {
            return m.clone();
        }
        let m = self.applicable(stack);
        self.modes.borrow_mut().insert(key, m.clone());
        m
    }

    /// [`Planner::modes`], found.
    fn applicable(&self, stack: u64) -> Vec<Mode> {
        let mut m = vec![Mode::Whole];
        if super::strips::strips_apply(self.nodes, self.d) {
            m.push(Mode::Strips);
        }
        // A streamed plan none of whose tasks streams is a strips plan by another name
        // (every task falls back to its cheapest path): it must not outrank whole tasks.
        // Profiled (issue 18): `calc --reduce sum:time` under the default limit ran every
        // task in strips, decoding and encoding as streams, 1.3x the whole-chunk time.
        if self.nodes.len() == 1 && self.d.writing {
            let caps = Caps {
                stack,
                threads: self.threads,
                width: value_width(self.nodes),
            };
            if self
                .regions
                .iter()
                .any(|r| streamed_need(self.nodes, r, self.chunks, caps, self.d).is_some())
            {
                m.push(Mode::Streamed);
            }
        }
        m
    }

    /// The least-memory plan fitting `l` with some cap of the ladder: a mode that applies,
    /// with one-row strips (no taller strip needs less).
    fn smallest_fit(&self, l: u64) -> Option<TaskPlan> {
        let room = self.room(l);
        self.ladder(l).into_iter().find_map(|stack| {
            self.modes(stack).into_iter().find_map(|mode| {
                let need = self.need_of(stack, mode, 1);
                (need <= room).then_some(TaskPlan {
                    need,
                    mode,
                    rows: 1,
                    stack,
                })
            })
        })
    }

    /// Whether some plan fits under `l`: monotone in `l` (see [`stack_ladder`]; needs do not
    /// depend on the limit, and the room grows with it).
    fn accepts(&self, l: u64) -> bool {
        self.smallest_fit(l).is_some()
    }

    /// The plan under `l`, if accepted: the best with [`stack_cap`]`(l)` when some path fits
    /// with it, else the best with the largest cap of the ladder that fits.
    pub(crate) fn plan(&self, l: u64) -> Option<TaskPlan> {
        let fallback = self.smallest_fit(l)?;
        std::iter::once(stack_cap(l))
            .chain(self.ladder(l))
            .find_map(|s| self.best(l, s))
            .or(Some(fallback))
    }
}

/// The smallest limit under which `fits` holds (`fits` is monotone: see [`stack_ladder`]),
/// found to the byte by a search that does not depend on the limit asked for, so every limit
/// below it is refused stating the same figure.
fn minimum_limit(fits: impl Fn(u64) -> bool) -> u64 {
    let mut hi = 1u64 << 16;
    while !fits(hi) {
        if hi >= 1 << 50 {
            return hi;
        }
        hi *= 2;
    }
    // `lo` does not fit (or is zero).
    let mut lo = if hi == 1 << 16 { 0 } else { hi / 2 };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// `n` in the units of [`format_bytes`], rounded up: the figure, given back as a limit, is at
/// least `n`.
pub(crate) fn format_bytes_up(n: u64) -> String {
    let text = format_bytes(n);
    let Some((num, unit)) = text.split_once(' ') else {
        return text;
    };
    let (Ok(v), true) = (num.parse::<f64>(), num.contains('.')) else {
        return text;
    };
    // Two decimals: step up by hundredths until the figure parses back to at least `n`.
    let mut cents = (v * 100.0).round() as u64;
    loop {
        let t = format!("{}.{:02} {unit}", cents / 100, cents % 100);
        if crate::store::parse_bytes(&t).is_some_and(|b| b >= n) {
            return t;
        }
        cents += 1;
    }
}
