//! Lazy expression nodes. Every node has the shape of a `[time, y, x]` block; a dimension
//! removed by a reduction keeps length 1 and is marked absent, so operands broadcast by name.

use super::ChunkSource;
use crate::store::DType;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Elementwise unary operations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// `-a`
    Neg,
    /// `abs(a)`
    Abs,
    /// `sqrt(a)`
    Sqrt,
    /// `isnull(a)`: 1 where NaN, else 0
    IsNull,
    /// `notnull(a)`
    NotNull,
    /// `!a` (logical not; NaN stays NaN)
    Not,
    /// `log(a)`
    Log,
    /// `exp(a)`
    Exp,
}

/// Elementwise binary operations. Comparisons give 1.0 / 0.0, NaN if an operand is NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `&`
    And,
    /// `|`
    Or,
    /// `fillna(a, b)`: `a` where valid, else `b`
    FillNa,
    /// `minimum(a, b)` (NaN-propagating)
    Min,
    /// `maximum(a, b)`
    Max,
    /// `a ** b`
    Pow,
}

impl BinaryOp {
    /// The operator's symbol or name (for graphs and messages).
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "truediv",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::FillNa => "fillna",
            BinaryOp::Min => "minimum",
            BinaryOp::Max => "maximum",
            BinaryOp::Pow => "pow",
        }
    }
}

/// Nan-aware reductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// mean of valid values (NaN if none)
    Mean,
    /// median of valid values
    Median,
    /// minimum of valid values
    Min,
    /// maximum of valid values
    Max,
    /// sum of valid values (0 if none, as numpy's nansum)
    Sum,
    /// number of valid values
    Count,
    /// population standard deviation (ddof = 0) of valid values
    Std,
}

impl ReduceOp {
    /// Parse `mean`, `median`, …
    pub fn parse(s: &str) -> Option<ReduceOp> {
        Some(match s {
            "mean" => ReduceOp::Mean,
            "median" => ReduceOp::Median,
            "min" => ReduceOp::Min,
            "max" => ReduceOp::Max,
            "sum" => ReduceOp::Sum,
            "count" => ReduceOp::Count,
            "std" => ReduceOp::Std,
            _ => return None,
        })
    }
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Mean => "mean",
            ReduceOp::Median => "median",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Sum => "sum",
            ReduceOp::Count => "count",
            ReduceOp::Std => "std",
        }
    }
    /// Whether the reduction needs all values of a pixel at once (no streaming combine).
    pub fn needs_stack(self) -> bool {
        matches!(self, ReduceOp::Median)
    }
    /// Bytes of per-pixel state a streaming reduction keeps: a u32 count, plus an f64 sum
    /// (mean, sum), a sum and a sum of squares (std), or an f32 extreme (min, max).
    pub fn state_bytes(self) -> u64 {
        4 + match self {
            ReduceOp::Mean | ReduceOp::Sum => 8,
            ReduceOp::Std => 16,
            ReduceOp::Min | ReduceOp::Max => 4,
            ReduceOp::Count | ReduceOp::Median => 0,
        }
    }
}

/// What a node computes.
#[derive(Debug, Clone)]
pub enum Op {
    /// A window of a chunked source (a stored band, a persisted intermediate), starting at
    /// `offset` (source indices).
    Source {
        /// The source.
        src: Arc<dyn ChunkSource>,
        /// First index along time, y, x.
        offset: [u64; 3],
    },
    /// A scalar.
    Const(f64),
    /// Elementwise unary.
    Unary(UnaryOp, Arc<Node>),
    /// Elementwise binary (broadcasting over absent dimensions).
    Binary(BinaryOp, Arc<Node>, Arc<Node>),
    /// `where(cond, a, b)`: `a` where cond is true (non-zero), else `b`; NaN where cond is NaN.
    Where(Arc<Node>, Arc<Node>, Arc<Node>),
    /// `clip(a, lo, hi)`
    Clip(Arc<Node>, f64, f64),
    /// Cast to a dtype: rounding/saturation for integers (NaN → nodata 0), stays f32 in flight.
    Cast(DType, Arc<Node>),
    /// Reduction over one axis (0 = time, 1 = y, 2 = x). `offset` selects a sub-window of the
    /// result along the kept axes.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// The axis reduced.
        axis: usize,
        /// The input (full extent along `axis`).
        input: Arc<Node>,
        /// Offset of this node's window within the reduced input's kept axes.
        offset: [u64; 3],
    },
    /// An operation that could not be built (mismatched grids, …): computing it is an error.
    Invalid(String),
}

/// A node of the lazy graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique id (graph pictures, persisted results).
    pub id: u64,
    /// What it computes.
    pub op: Op,
    /// Shape `[time, y, x]` (1 along absent dimensions).
    pub shape: [u64; 3],
    /// Which of time, y, x are present.
    pub present: [bool; 3],
    /// The element type of the result.
    pub dtype: DType,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Node {
    /// A new node with a fresh id.
    pub fn new(op: Op, shape: [u64; 3], present: [bool; 3], dtype: DType) -> Arc<Node> {
        Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op,
            shape,
            present,
            dtype,
        })
    }

    /// The inputs of this node.
    pub fn children(&self) -> Vec<&Arc<Node>> {
        match &self.op {
            Op::Source { .. } | Op::Const(_) | Op::Invalid(_) => vec![],
            Op::Unary(_, a) | Op::Clip(a, _, _) | Op::Cast(_, a) => vec![a],
            Op::Reduce { input, .. } => vec![input],
            Op::Binary(_, a, b) => vec![a, b],
            Op::Where(c, a, b) => vec![c, a, b],
        }
    }

    /// Fold the graph below this node bottom-up, each distinct node (by id) once, without
    /// recursion: `f(node, children's values)`. Graphs share sub-graphs (`nir` named twice,
    /// a result reused by later ones), so a walk that is not memoised can take exponential
    /// time on a crafted expression.
    pub fn fold<T: Clone>(&self, f: impl Fn(&Node, &[T]) -> T) -> T {
        let mut done: std::collections::HashMap<u64, T> = std::collections::HashMap::new();
        let mut stack: Vec<(&Node, bool)> = vec![(self, false)];
        while let Some((n, expanded)) = stack.pop() {
            if done.contains_key(&n.id) {
                continue;
            }
            let kids = n.children();
            if expanded || kids.is_empty() {
                let vals: Vec<T> = kids
                    .iter()
                    .filter_map(|c| done.get(&c.id).cloned())
                    .collect();
                let v = f(n, &vals);
                done.insert(n.id, v);
            } else {
                stack.push((n, true));
                stack.extend(kids.into_iter().map(|c| (&**c, false)));
            }
        }
        done.remove(&self.id).expect("the root is folded last")
    }

    /// The depth of the graph below this node (a source or constant is 1).
    pub fn depth(&self) -> usize {
        self.fold(|_, kids: &[usize]| 1 + kids.iter().copied().max().unwrap_or(0))
    }

    /// How many operations the graph is when every shared sub-graph is counted at each of its
    /// uses (what recursive walks over it visit), saturating.
    pub fn expanded_size(&self) -> u64 {
        self.fold(|_, kids: &[u64]| kids.iter().fold(1u64, |a, &k| a.saturating_add(k)))
    }

    /// The first error of an invalid sub-graph, if any.
    pub fn first_error(&self) -> Option<String> {
        self.fold(|n, kids: &[Option<String>]| match &n.op {
            Op::Invalid(m) => Some(m.clone()),
            _ => kids.iter().find_map(|k| k.clone()),
        })
    }

    /// A short label (graph pictures).
    pub fn label(&self) -> String {
        match &self.op {
            Op::Source { src, .. } if src.is_persisted() => "persisted".into(),
            Op::Source { src, .. } => format!("load {}", src.name()),
            Op::Const(v) => format!("{v}"),
            Op::Unary(u, _) => format!("{u:?}").to_lowercase(),
            Op::Binary(b, _, _) => b.name().to_string(),
            Op::Where(..) => "where".into(),
            Op::Clip(_, lo, hi) => format!("clip({lo},{hi})"),
            Op::Cast(d, _) => format!("astype({d})"),
            Op::Reduce { op, axis, .. } => format!("{}({})", op.name(), crate::store::DIMS[*axis]),
            Op::Invalid(_) => "invalid".into(),
        }
    }

    /// The same computation restricted to a window (`ranges` within this node's shape).
    /// Sources shift their offsets; reductions narrow their kept axes.
    pub fn slice(self: &Arc<Node>, ranges: &[Range<u64>; 3]) -> Arc<Node> {
        let shape = [
            ranges[0].end - ranges[0].start,
            ranges[1].end - ranges[1].start,
            ranges[2].end - ranges[2].start,
        ];
        if shape == self.shape && ranges.iter().all(|r| r.start == 0) {
            return self.clone();
        }
        // Absent dimensions are always 0..1 in the caller's terms.
        let kept = |r: &[Range<u64>; 3], present: [bool; 3]| -> [Range<u64>; 3] {
            let mut out = r.clone();
            for i in 0..3 {
                if !present[i] {
                    out[i] = 0..1;
                }
            }
            out
        };
        let op = match &self.op {
            Op::Source { src, offset } => Op::Source {
                src: src.clone(),
                offset: [
                    offset[0] + ranges[0].start,
                    offset[1] + ranges[1].start,
                    offset[2] + ranges[2].start,
                ],
            },
            Op::Const(v) => Op::Const(*v),
            Op::Invalid(m) => Op::Invalid(m.clone()),
            Op::Unary(u, a) => Op::Unary(*u, a.slice(&kept(ranges, a.present))),
            Op::Clip(a, lo, hi) => Op::Clip(a.slice(&kept(ranges, a.present)), *lo, *hi),
            Op::Cast(d, a) => Op::Cast(*d, a.slice(&kept(ranges, a.present))),
            Op::Binary(b, x, y) => Op::Binary(
                *b,
                x.slice(&kept(ranges, x.present)),
                y.slice(&kept(ranges, y.present)),
            ),
            Op::Where(c, x, y) => Op::Where(
                c.slice(&kept(ranges, c.present)),
                x.slice(&kept(ranges, x.present)),
                y.slice(&kept(ranges, y.present)),
            ),
            Op::Reduce {
                op,
                axis,
                input,
                offset,
            } => {
                let mut off = *offset;
                for i in 0..3 {
                    if i != *axis {
                        off[i] += ranges[i].start;
                    }
                }
                Op::Reduce {
                    op: *op,
                    axis: *axis,
                    input: input.clone(),
                    offset: off,
                }
            }
        };
        Node::new(op, shape, self.present, self.dtype)
    }
}
