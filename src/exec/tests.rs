//! Property tests of the planner and the executor over synthetic sources: random shapes, chunk
//! grids with edge chunks of every width (1 included), selections that cut stored chunks,
//! dtypes, stack depths, thread counts and limits.
//!
//! - every task of an accepted plan needs at most the plan's per-task need (the distinct task
//!   shapes the planner sizes cover every task of the grid);
//! - a refusal states a minimum under which the same graph is accepted, and runs;
//! - what the executor runs under an accepted limit gives the values plain loops give, keeps
//!   the tracked peak within the limit, and no task allocates more than it reserved;
//! - `explain` reports the planner's numbers.

use super::path::{path_need, task_path};
use super::plan::{cache_cap, plan_tasks, representative_regions, Demand, TaskPlan};
use super::testing::{measure, take_uses, Synthetic};
use super::{ExecConfig, ExecError, Session};
use crate::geo::GeoBox;
use crate::graph::{regions, BinaryOp, Node, Op, ReduceOp};
use crate::store::{DType, Values};
use proptest::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The computations tested.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// A window of one band, in its own dtype.
    Source,
    /// `(a - b) / (a + b)` over two bands with different chunk grids.
    Ndvi,
    /// `where(a > 100, a, b)`.
    Where,
    /// A reduction of `a * 2` over one axis.
    Reduce(ReduceOp, usize),
    /// A reduction of the band `a` as stored over one axis (narrow integers take
    /// `exec::reduce_int`).
    ReduceOfBand(ReduceOp, usize),
    /// A median over time of a band as stored (the spilled path keeps narrow integers).
    MedianOfBand,
}

fn kind() -> impl Strategy<Value = Kind> {
    let op = prop_oneof![
        Just(ReduceOp::Mean),
        Just(ReduceOp::Median),
        Just(ReduceOp::Min),
        Just(ReduceOp::Max),
        Just(ReduceOp::Sum),
        Just(ReduceOp::Count),
        Just(ReduceOp::Std),
    ];
    prop_oneof![
        Just(Kind::Source),
        Just(Kind::Ndvi),
        Just(Kind::Where),
        (op.clone(), 0usize..3).prop_map(|(o, a)| Kind::Reduce(o, a)),
        (op, 0usize..3).prop_map(|(o, a)| Kind::ReduceOfBand(o, a)),
        Just(Kind::MedianOfBand),
    ]
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![
        Just(DType::U8),
        Just(DType::U16),
        Just(DType::I16),
        Just(DType::I32),
        Just(DType::F32),
        Just(DType::F64),
    ]
}

/// A case: a cube shape, two bands' chunk grids, a window, query chunks, a graph, threads and
/// a limit (a fraction of the plan's stated minimum, or more).
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) shape: [u64; 3],
    pub(super) chunks_a: [u64; 3],
    pub(super) chunks_b: [u64; 3],
    pub(super) window: [Range<u64>; 3],
    pub(super) query: [u64; 3],
    pub(super) dtype: DType,
    pub(super) kind: Kind,
    pub(super) threads: usize,
    /// Limit as a multiple of the smallest accepted one (in percent).
    pub(super) headroom: u64,
    /// The sources stream their chunks as rows (row strips may be planned).
    pub(super) streams: bool,
}

pub(super) fn case() -> impl Strategy<Value = Case> {
    (
        (1u64..=7, 1u64..=80, 1u64..=80),
        (0u64..1000, 0u64..1000, 0u64..1000),
        dtype(),
        kind(),
        1usize..=3,
        prop_oneof![Just(100u64), 100u64..400],
        any::<[u64; 12]>(),
        any::<bool>(),
    )
        .prop_map(
            |((t, y, x), _, dtype, kind, threads, headroom, r, streams)| {
                let shape = [t, y, x];
                let pick = |i: usize, n: u64| 1 + r[i] % n;
                let chunks_a = [pick(0, t), pick(1, y), pick(2, x)];
                let chunks_b = [pick(3, t), pick(4, y), pick(5, x)];
                let window: [Range<u64>; 3] = std::array::from_fn(|i| {
                    let s = r[6 + i] % shape[i];
                    let len = 1 + r[9 + i] % (shape[i] - s);
                    s..s + len
                });
                let wshape: [u64; 3] = std::array::from_fn(|i| window[i].end - window[i].start);
                let query = [
                    pick(0, wshape[0]),
                    1 + (r[1] / 7) % wshape[1],
                    1 + (r[2] / 7) % wshape[2],
                ];
                Case {
                    shape,
                    chunks_a,
                    chunks_b,
                    window,
                    query,
                    dtype,
                    kind,
                    threads,
                    headroom,
                    streams,
                }
            },
        )
}

/// The graph of a case, its two sources, and the output's `present` dims.
pub(super) fn graph(c: &Case) -> (Arc<Node>, Arc<Synthetic>, Arc<Synthetic>) {
    let a = Synthetic::new("a", c.shape, c.chunks_a, c.dtype, 1, c.streams);
    let b = Synthetic::new("b", c.shape, c.chunks_b, c.dtype, 2, c.streams);
    let (na, nb) = (a.node().slice(&c.window), b.node().slice(&c.window));
    let shape = na.shape;
    let f = if c.dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let bin = |op, x: &Arc<Node>, y: &Arc<Node>| {
        Node::new(Op::Binary(op, x.clone(), y.clone()), shape, [true; 3], f)
    };
    let konst = |v| Node::new(Op::Const(v), [1, 1, 1], [false; 3], DType::F32);
    let reduce = |op, axis, input: Arc<Node>| {
        let mut s = shape;
        s[axis] = 1;
        let mut present = [true; 3];
        present[axis] = false;
        Node::new(
            Op::Reduce {
                op,
                axis,
                input,
                offset: [0; 3],
            },
            s,
            present,
            f,
        )
    };
    let node = match c.kind {
        Kind::Source => na,
        Kind::Ndvi => bin(
            BinaryOp::Div,
            &bin(BinaryOp::Sub, &na, &nb),
            &bin(BinaryOp::Add, &na, &nb),
        ),
        Kind::Where => {
            let cond = bin(BinaryOp::Gt, &na, &konst(100.0));
            Node::new(Op::Where(cond, na, nb), shape, [true; 3], f)
        }
        Kind::Reduce(op, axis) => reduce(op, axis, bin(BinaryOp::Mul, &na, &konst(2.0))),
        Kind::ReduceOfBand(op, axis) => reduce(op, axis, na),
        Kind::MedianOfBand => reduce(ReduceOp::Median, 0, na),
    };
    (node, a, b)
}

/// The expected result by plain loops over the sources' values, in f64 (`NaN` = missing).
fn reference(c: &Case, node: &Arc<Node>, a: &Synthetic, b: &Synthetic) -> Vec<f64> {
    let w = &c.window;
    let at = |s: &Synthetic, i: [u64; 3]| {
        s.value([w[0].start + i[0], w[1].start + i[1], w[2].start + i[2]])
    };
    let ws: [u64; 3] = std::array::from_fn(|i| w[i].end - w[i].start);
    let out = node.shape;
    let mut v = Vec::new();
    for t in 0..out[0] {
        for y in 0..out[1] {
            for x in 0..out[2] {
                let i = [t, y, x];
                v.push(match c.kind {
                    Kind::Source => at(a, i),
                    Kind::Ndvi => {
                        let (p, q) = (at(a, i), at(b, i));
                        (p - q) / (p + q)
                    }
                    Kind::Where => {
                        let p = at(a, i);
                        if p.is_nan() {
                            f64::NAN
                        } else if p > 100.0 {
                            p
                        } else {
                            at(b, i)
                        }
                    }
                    Kind::Reduce(..) | Kind::ReduceOfBand(..) | Kind::MedianOfBand => {
                        let (op, axis, scale) = match c.kind {
                            Kind::Reduce(op, axis) => (op, axis, 2.0),
                            Kind::ReduceOfBand(op, axis) => (op, axis, 1.0),
                            _ => (ReduceOp::Median, 0, 1.0),
                        };
                        let vals: Vec<f64> = (0..ws[axis])
                            .map(|k| {
                                let mut j = i;
                                j[axis] = k;
                                at(a, j) * scale
                            })
                            .filter(|v| !v.is_nan())
                            .collect();
                        reduce_ref(op, vals)
                    }
                });
            }
        }
    }
    v
}

/// Nan-aware reductions of the valid values, by definition.
fn reduce_ref(op: ReduceOp, mut v: Vec<f64>) -> f64 {
    let n = v.len() as f64;
    match op {
        ReduceOp::Count => n,
        ReduceOp::Sum => v.iter().sum(),
        _ if v.is_empty() => f64::NAN,
        ReduceOp::Mean => v.iter().sum::<f64>() / n,
        ReduceOp::Min => v.iter().cloned().fold(f64::INFINITY, f64::min),
        ReduceOp::Max => v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        ReduceOp::Std => {
            let m = v.iter().sum::<f64>() / n;
            (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt()
        }
        ReduceOp::Median => {
            v.sort_by(f64::total_cmp);
            let k = v.len();
            if k % 2 == 1 {
                v[k / 2]
            } else {
                (v[k / 2 - 1] + v[k / 2]) / 2.0
            }
        }
    }
}

/// Values as f64 with the source's nodata (integers) or NaN as NaN.
fn as_f64(v: &Values, nodata: Option<f64>) -> Vec<f64> {
    crate::on_values!(v, a => a.iter().map(|x| {
        let f = <_ as crate::store::Element>::to_f64(*x);
        if Some(f) == nodata { f64::NAN } else { f }
    }).collect())
}

fn close(got: &[f64], want: &[f64]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} values, want {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-4 * w.abs().max(1.0);
        if !ok {
            return Err(format!("value {i}: {g} != {w}"));
        }
    }
    Ok(())
}

/// The most any task of `nodes` over the whole grid needs on the path it takes (each region
/// sized alone, its path asked as the executor asks it).
fn max_region_need(
    nodes: &[&Arc<Node>],
    chunks: [u64; 3],
    limit: u64,
    threads: u64,
    d: Demand,
    plan: TaskPlan,
) -> u64 {
    let _ = limit;
    let caps = plan.caps(threads as usize, nodes);
    regions(nodes[0].shape, chunks)
        .map(|r| {
            let path = task_path(nodes, &r, chunks, caps, d, plan);
            path_need(nodes, &r, chunks, caps, d, path)
        })
        .max()
        .unwrap_or(0)
}

/// The smallest limit the planner accepts for the case (its own statement when refused).
fn accepted_limit(nodes: &[&Arc<Node>], chunks: [u64; 3], threads: u64, d: Demand) -> u64 {
    match plan_tasks(nodes, chunks, 1 << 16, threads, d) {
        Ok(_) => 1 << 16,
        Err(ExecError::MemoryLimit { minimum, .. }) => minimum,
        Err(e) => panic!("unexpected planner error: {e}"),
    }
}

static RUN_IDS: AtomicU64 = AtomicU64::new(1);

/// Cases per property: `PROPTEST_CASES` when set (long runs by hand), else `default`.
pub(super) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(160), ..ProptestConfig::default() })]

    /// The distinct task shapes the planner sizes bound every task of the grid, and a refusal
    /// states a minimum under which the same graph is accepted.
    #[test]
    fn plans_bound_every_task_and_refusals_state_a_working_minimum(
        c in case(),
        writing in any::<bool>(),
        remote in any::<bool>(),
        limit_kib in 16u64..16_384,
    ) {
        let (node, _, _) = graph(&c);
        let nodes = [&node];
        let d = Demand { writing, remote: remote && writing, strips: true, ..Demand::default() };
        let threads = c.threads as u64;
        let limit = limit_kib << 10;
        match plan_tasks(&nodes, c.query, limit, threads, d) {
            Ok(plan) => {
                let most = max_region_need(&nodes, c.query, limit, threads, d, plan);
                prop_assert!(most <= plan.need, "a task needs {most} > plan {}", plan.need);
                prop_assert!(plan.need + cache_cap(limit) <= limit, "plan {plan:?} over {limit}");
            }
            Err(ExecError::MemoryLimit { minimum, .. }) => {
                prop_assert!(minimum > limit);
                let plan = plan_tasks(&nodes, c.query, minimum, threads, d);
                prop_assert!(plan.is_ok(), "refused at its own minimum {minimum}: {plan:?}");
            }
            Err(e) => prop_assert!(false, "planner error {e}"),
        }
        // The representatives are regions of the grid.
        for r in representative_regions(&nodes, node.shape, c.query) {
            prop_assert!((0..3).all(|i| r[i].end <= node.shape[i] && r[i].start < r[i].end));
        }
    }

    /// Computed under the smallest accepted limit (or more): plain loops' values, the tracked
    /// peak within the limit, no task allocating more than it reserved, `explain` telling the
    /// planner's numbers.
    #[test]
    fn computes_within_the_plan(c in case()) {
        let (node, a, b) = graph(&c);
        let nodes = [&node];
        let result = node.shape.iter().product::<u64>() * node.dtype.size() as u64;
        let d = Demand { hold: result, strips: true, ..Demand::default() };
        let threads = c.threads as u64;
        let limit = accepted_limit(&nodes, c.query, threads, d) * c.headroom / 100;
        let s = Session::new(ExecConfig {
            threads: c.threads,
            memory_limit: limit,
            ..ExecConfig::default()
        }).unwrap();
        let plan = s.plan(&nodes, c.query, Demand { writing: true, strips: true, ..Demand::default() });
        let ex = s.explain(&node, c.query);
        // `explain` tells the planner's numbers for a write, shape by shape.
        match plan {
            Ok(p) => {
                prop_assert_eq!(ex.task_bytes, p.need);
                let most = ex.task_shapes.iter().map(|t| t.bytes).max().unwrap_or(0);
                prop_assert!(most <= p.need);
                let tasks: u64 = ex.task_shapes.iter().map(|t| t.tasks).sum();
                prop_assert!(tasks >= 1);
            }
            Err(ExecError::MemoryLimit { minimum, .. }) => prop_assert_eq!(ex.minimum_limit, Some(minimum)),
            Err(e) => prop_assert!(false, "planner error {e}"),
        }
        prop_assert_eq!(ex.cache_bytes, cache_cap(limit));
        prop_assert_eq!(ex.memory_limit, limit);
        let id = RUN_IDS.fetch_add(1, Ordering::Relaxed);
        let got = {
            let _m = measure(id);
            s.compute(&node, c.query)
        };
        let got = match got {
            Ok(v) => v,
            Err(e) => return Err(TestCaseError::fail(format!("compute under {limit}: {e}"))),
        };
        let nodata = if matches!(c.kind, Kind::Source) { a.nodata } else { None };
        let want = reference(&c, &node, &a, &b);
        close(&as_f64(&got, nodata), &want).map_err(TestCaseError::fail)?;
        prop_assert!(s.stats().peak_tracked_bytes <= limit,
            "tracked peak {} over the limit {limit}", s.stats().peak_tracked_bytes);
        let uses = take_uses(id);
        for u in uses {
            // Small allocations the estimate does not itemise (maps, shapes, piece lists).
            let slack = 32 << 10;
            prop_assert!(u.peak <= u.reserved + slack,
                "a task allocated {} with {} reserved", u.peak, u.reserved);
        }
    }
}

#[test]
fn reduction_slabs_follow_the_stored_chunks() {
    use super::plan::slabs_at;
    // Stored chunks of 2 steps; a selection from step 1 (offset 1) of 11 steps.
    assert_eq!(
        slabs_at(1, 0..11, 2, 2),
        vec![0..1, 1..3, 3..5, 5..7, 7..9, 9..11]
    );
    // Aligned: whole chunks, the last one cut by the range.
    assert_eq!(slabs_at(0, 0..5, 2, 2), vec![0..2, 2..4, 4..5]);
    assert_eq!(slabs_at(4, 2..9, 3, 3), vec![2..5, 5..8, 8..9]);
    assert_eq!(slabs_at(7, 0..3, 1, 1), vec![0..1, 1..2, 2..3]);
    // Chunks of 5 walked 2 steps at a time: cut at the chunk boundary too.
    assert_eq!(
        slabs_at(0, 3..12, 5, 2),
        vec![3..4, 4..5, 5..7, 7..9, 9..10, 10..12]
    );
}

proptest! {
    /// Slabs partition the range, each inside one stored chunk and at most `step` long.
    #[test]
    fn reduction_slabs_partition_within_chunks(
        off in 0u64..50, start in 0u64..50, len in 0u64..200, chunk in 1u64..40, step in 1u64..40,
    ) {
        let slabs = super::plan::slabs_at(off, start..start + len, chunk, step);
        let mut at = start;
        for s in &slabs {
            prop_assert_eq!(s.start, at);
            prop_assert!(s.end > s.start && s.end - s.start <= step.min(chunk));
            prop_assert_eq!((s.start + off) / chunk, (s.end - 1 + off) / chunk);
            at = s.end;
        }
        prop_assert_eq!(at, start + len);
    }
}

/// Under a roomy limit a single written output takes whole tasks: a plan preferring streamed
/// medians where nothing streams (no median, or one that does not spill) is strips in disguise,
/// decoding and encoding every chunk as a stream (issue 18: 1.3x slower on reductions).
#[test]
fn a_roomy_limit_plans_whole_tasks() {
    for kind in [
        Kind::Reduce(ReduceOp::Sum, 0),
        Kind::Reduce(ReduceOp::Max, 0),
        Kind::Ndvi,
        Kind::MedianOfBand,
    ] {
        let c = Case {
            shape: [6, 128, 128],
            chunks_a: [1, 64, 64],
            chunks_b: [1, 64, 64],
            window: [0..6, 0..128, 0..128],
            query: [1, 64, 64],
            dtype: DType::U16,
            kind,
            threads: 2,
            headroom: 100,
            streams: true,
        };
        let (node, _, _) = graph(&c);
        let d = Demand {
            writing: true,
            strips: true,
            ..Demand::default()
        };
        let plan = plan_tasks(&[&node], c.query, 1 << 30, 2, d).unwrap();
        assert_eq!(plan.mode, super::path::Mode::Whole, "{kind:?}: {plan:?}");
    }
}

/// Reductions of a uint8/uint16/int16 band as stored (integer state, no float slabs) equal the
/// float path's (the same reduction of `a + 0`) bit for bit and plain loops, over every axis,
/// with missing pixels, pixels missing at every step (one time step: one in seven), edge chunks
/// and a window cutting stored chunks.
#[test]
fn narrow_band_reductions_equal_the_float_path_and_plain_loops() {
    let ops = [
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Sum,
        ReduceOp::Count,
        ReduceOp::Mean,
        ReduceOp::Std,
    ];
    let before = super::reduce_int::NARROW_RUNS.load(Ordering::Relaxed);
    for dtype in [DType::U8, DType::U16, DType::I16] {
        for (t, window) in [(1u64, [0..1, 0..37, 0..45]), (5, [1..5, 3..37, 2..41])] {
            for axis in 0..3 {
                for op in ops {
                    let c = Case {
                        shape: [t, 37, 45],
                        chunks_a: [2, 16, 32],
                        chunks_b: [2, 16, 32],
                        window: window.clone(),
                        query: [4, 16, 16],
                        dtype,
                        kind: Kind::ReduceOfBand(op, axis),
                        threads: 2,
                        headroom: 100,
                        streams: false,
                    };
                    let (node, a, b) = graph(&c);
                    let Op::Reduce { input, .. } = &node.op else {
                        unreachable!()
                    };
                    let zero = Node::new(Op::Const(0.0), [1, 1, 1], [false; 3], DType::F32);
                    let plus0 = Node::new(
                        Op::Binary(BinaryOp::Add, input.clone(), zero),
                        input.shape,
                        [true; 3],
                        DType::F32,
                    );
                    let float = Node::new(
                        Op::Reduce {
                            op,
                            axis,
                            input: plus0,
                            offset: [0; 3],
                        },
                        node.shape,
                        node.present,
                        node.dtype,
                    );
                    let s = Session::new(ExecConfig {
                        threads: 2,
                        memory_limit: 256 << 20,
                        ..ExecConfig::default()
                    })
                    .unwrap();
                    let got = s.compute(&node, c.query).unwrap();
                    let via_float = s.compute(&float, c.query).unwrap();
                    let what = format!("{dtype:?} {op:?} over {axis}, {t} steps");
                    assert!(
                        got.equals(&via_float),
                        "{what}: differs from the float path"
                    );
                    close(&as_f64(&got, None), &reference(&c, &node, &a, &b))
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
            }
        }
    }
    assert!(
        super::reduce_int::NARROW_RUNS.load(Ordering::Relaxed) > before,
        "the integer path ran"
    );
}

/// A median over time written to a cube whose stacks spill, on a grid with edge chunks:
/// the streamed path where it applies, every chunk written, the values of plain loops.
#[test]
fn spilled_median_written_with_edge_chunks() {
    let c = Case {
        shape: [6, 150, 170],
        chunks_a: [1, 64, 64],
        chunks_b: [1, 64, 64],
        window: [0..6, 0..150, 0..170],
        query: [1, 64, 64],
        dtype: DType::U16,
        kind: Kind::MedianOfBand,
        threads: 2,
        headroom: 100,
        streams: false,
    };
    let (node, a, b) = graph(&c);
    let nodes = [&node];
    let d = Demand {
        writing: true,
        ..Demand::default()
    };
    let min = accepted_limit(&nodes, c.query, 2, d);
    for limit in [min, min * 3 / 2, min * 3] {
        let s = Session::new(ExecConfig {
            threads: 2,
            memory_limit: limit,
            ..ExecConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("med");
        let geobox = GeoBox {
            wkt: String::new(),
            epsg: None,
            transform: [0.0, 10.0, 0.0, 0.0, 0.0, -10.0],
            width: 170,
            height: 150,
        };
        s.write_cube(
            &[("m".to_string(), node.clone())],
            c.query,
            &[crate::geo::Time::EPOCH],
            None,
            &geobox,
            url.to_str().unwrap(),
            false,
        )
        .unwrap_or_else(|e| panic!("write under {limit}: {e}"));
        let store = Arc::new(zarrs::filesystem::FilesystemStore::new(&url).unwrap());
        let arr = zarrs::array::Array::open(store, "/m").unwrap();
        let got: ndarray::ArrayD<f32> = arr
            .retrieve_array_subset(&zarrs::array::ArraySubset::new_with_ranges(&[
                0..1,
                0..150,
                0..170,
            ]))
            .unwrap();
        let got: Vec<f64> = got.iter().map(|v| *v as f64).collect();
        close(&got, &reference(&c, &node, &a, &b)).unwrap();
        assert!(s.stats().peak_tracked_bytes <= limit);
    }
}

#[test]
fn an_interrupt_stops_the_runs_in_progress_and_not_later_ones() {
    let a = Synthetic::new("a", [4, 64, 64], [1, 8, 8], DType::U16, 3, false);
    let s = Session::new(ExecConfig {
        threads: 2,
        memory_limit: 256 << 20,
        ..ExecConfig::default()
    })
    .unwrap();
    let node = a.node();
    let tasks = 4 * 8 * 8;
    a.interrupt_after(5, &s);
    let before = s.progress();
    match s.compute(&node, [1, 8, 8]) {
        Err(ExecError::Interrupted) => {}
        other => panic!(
            "expected an interruption, got {:?}",
            other.map(|v| v.shape())
        ),
    }
    let stopped = s.progress();
    assert_eq!(stopped.planned - before.planned, tasks);
    // Tasks already running finish; no new one starts (2 workers: a few, not all).
    let read = a.reads.load(Ordering::Relaxed);
    assert!(
        (5..=8).contains(&read),
        "{read} chunks read after the interrupt at 5"
    );
    // The next computation is not affected, and its values are the source's.
    let v = s.compute(&node, [1, 8, 8]).unwrap();
    let Values::U16(v) = v else { panic!("not u16") };
    for ((t, y, x), got) in v
        .into_dimensionality::<ndarray::Ix3>()
        .unwrap()
        .indexed_iter()
    {
        assert_eq!(*got as f64, a.stored([t as u64, y as u64, x as u64]));
    }
    assert_eq!(s.progress().done - stopped.done, tasks);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    /// Written to a cube under the smallest accepted limit (or more), on whatever path each
    /// task takes (whole, strips, spilled, streamed): plain loops' values read back, the tracked
    /// peak within the limit, and no task allocating more than it reserved.
    #[test]
    fn writes_within_the_plan(c in case()) {
        let (node, a, b) = graph(&c);
        let nodes = [&node];
        let d = Demand { writing: true, strips: true, ..Demand::default() };
        let threads = c.threads as u64;
        let limit = accepted_limit(&nodes, c.query, threads, d) * c.headroom / 100;
        let s = Session::new(ExecConfig {
            threads: c.threads,
            memory_limit: limit,
            ..ExecConfig::default()
        }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("out");
        let shape = node.shape;
        let geobox = GeoBox {
            wkt: String::new(),
            epsg: None,
            transform: [0.0, 10.0, 0.0, 0.0, 0.0, -10.0],
            width: shape[2],
            height: shape[1],
        };
        let times: Vec<crate::geo::Time> =
            (0..shape[0] as i64).map(crate::geo::Time::from_days).collect();
        let id = RUN_IDS.fetch_add(1, Ordering::Relaxed);
        let res = {
            let _m = measure(id);
            s.write_cube(&[("v".to_string(), node.clone())], c.query, &times, None, &geobox,
                url.to_str().unwrap(), false)
        };
        if let Err(e) = res {
            return Err(TestCaseError::fail(format!("write under {limit}: {e}")));
        }
        let store = Arc::new(zarrs::filesystem::FilesystemStore::new(&url).unwrap());
        let arr = zarrs::array::Array::open(store, "/v").unwrap();
        let all = zarrs::array::ArraySubset::new_with_ranges(&[0..shape[0], 0..shape[1], 0..shape[2]]);
        let got: Values = crate::with_dtype!(node.dtype, T => Values::from(
            arr.retrieve_array_subset::<ndarray::ArrayD<T>>(&all).unwrap()));
        let nodata = if matches!(c.kind, Kind::Source) { a.nodata } else { None };
        close(&as_f64(&got, nodata), &reference(&c, &node, &a, &b)).map_err(TestCaseError::fail)?;
        prop_assert!(s.stats().peak_tracked_bytes <= limit,
            "tracked peak {} over the limit {limit}", s.stats().peak_tracked_bytes);
        for u in take_uses(id) {
            let slack = 32 << 10;
            prop_assert!(u.peak <= u.reserved + slack,
                "a task allocated {} with {} reserved", u.peak, u.reserved);
        }
    }
}
