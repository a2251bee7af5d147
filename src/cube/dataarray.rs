//! [`DataArray`] and [`Dataset`]: lazy (a graph node + query chunks) or loaded (values).
//!
//! `load()` vs `compute()`, as in xarray: `load(&mut self)` computes and keeps the values in
//! this array (it is no longer lazy); `compute(&self)` returns the values and leaves the array
//! lazy, so a later use recomputes (from cached chunks where they are still cached).
//! `persist()` computes once and keeps the result where later lazy computations read it.

use super::{BandReader, ChunkSummary, Cube, CubeError, Dataset};
use crate::exec::Session;
use crate::geo::{GeoBox, Time};
use crate::graph::{BinaryOp, Node, Op, ReduceOp, UnaryOp};
use crate::store::{format_bytes, ChunkSpec, DType, Values, DIMS};
use std::ops::Range;
use std::sync::Arc;

/// One variable: dims `(time, y, x)` minus reduced ones, coordinates, chunks, lazy or loaded.
#[derive(Clone)]
pub struct DataArray {
    name: String,
    pub(super) node: Arc<Node>,
    pub(super) times: Vec<Time>,
    pub(super) geobox: GeoBox,
    chunks: [u64; 3],
    values: Option<Values>,
    pub(super) session: Arc<Session>,
    /// When time was reduced: the range reduced, `[first, last]` (the first step's lower
    /// bound and the last's upper bound when the steps had bounds); the label is its start.
    pub(super) time_span: Option<[Time; 2]>,
    /// The CF bounds of each of `times` when the cube read had them (its steps stand for
    /// reduced ranges), selected with them; written back so the provenance survives.
    pub(super) time_bounds: Option<Vec<[Time; 2]>>,
}

impl DataArray {
    pub(crate) fn from_band(
        cube: &Cube,
        band: Arc<BandReader>,
        w: &[Range<u64>; 3],
        chunks: Option<&ChunkSpec>,
    ) -> DataArray {
        let shape = [
            w[0].end - w[0].start,
            w[1].end - w[1].start,
            w[2].end - w[2].start,
        ];
        let stored = band.chunk_shape();
        let dtype = band.dtype();
        let chunks = chunks
            .unwrap_or(&ChunkSpec::Auto)
            .resolve(shape, stored, dtype.size() as u64);
        let node = Node::new(
            Op::Source {
                src: band.clone(),
                offset: [w[0].start, w[1].start, w[2].start],
            },
            shape,
            [true; 3],
            dtype,
        );
        let meta = cube.meta();
        let steps = w[0].start as usize..w[0].end as usize;
        DataArray {
            name: band.name().to_string(),
            node,
            times: meta.times[steps.clone()].to_vec(),
            geobox: meta.geobox.window(&crate::geo::PixelWindow {
                rows: w[1].clone(),
                cols: w[2].clone(),
            }),
            chunks,
            values: None,
            session: cube.session().clone(),
            time_span: None,
            time_bounds: meta.time_bounds.as_ref().map(|b| b[steps].to_vec()),
        }
    }

    /// The variable name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Rename.
    pub fn rename(mut self, name: &str) -> DataArray {
        self.name = name.to_string();
        self
    }
    /// The graph node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
    /// Present dimension names.
    pub fn dims(&self) -> Vec<&'static str> {
        (0..3)
            .filter(|i| self.node.present[*i])
            .map(|i| DIMS[i])
            .collect()
    }
    /// Shape along the present dimensions.
    pub fn shape(&self) -> Vec<u64> {
        (0..3)
            .filter(|i| self.node.present[*i])
            .map(|i| self.node.shape[i])
            .collect()
    }
    /// Full `[time, y, x]` shape (1 along absent dims).
    pub fn shape3(&self) -> [u64; 3] {
        self.node.shape
    }
    /// Query chunk shape `[time, y, x]`.
    pub fn chunks3(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.chunks[i].min(self.node.shape[i]).max(1))
    }
    /// The element type of the result.
    pub fn dtype(&self) -> DType {
        self.node.dtype
    }
    /// Time coordinates; empty when time was reduced.
    pub fn times(&self) -> &[Time] {
        &self.times
    }
    /// When time was reduced: the first and last steps reduced (CF `bounds` of the result).
    pub fn time_span(&self) -> Option<[Time; 2]> {
        self.time_span
    }
    /// The CF bounds of each time step, when the cube read had them (a reduced cube's).
    pub fn time_bounds(&self) -> Option<&[[Time; 2]]> {
        self.time_bounds.as_deref()
    }
    /// The grid of the selection (CRS, transform of its first pixel, size).
    pub fn geobox(&self) -> &GeoBox {
        &self.geobox
    }
    /// The value marking missing pixels, as computed and written: a band keeps its own
    /// nodata (None if it has none), float results are NaN, integer casts 0.
    pub fn nodata(&self) -> Option<f64> {
        match &self.node.op {
            Op::Source { src, .. } if !src.is_persisted() => src.nodata(),
            _ => Some(crate::exec::result_nodata(&self.node)),
        }
    }
    /// Whether values are not held yet.
    pub fn is_lazy(&self) -> bool {
        self.values.is_none()
    }
    /// Loaded values, if any.
    pub fn values(&self) -> Option<&Values> {
        self.values.as_ref()
    }
    /// The session that computes this array.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Rechunk (query chunks only; stored chunks are unaffected).
    pub fn chunk(mut self, spec: &ChunkSpec) -> DataArray {
        let stored = match &self.node.op {
            Op::Source { src, .. } => src.chunk_shape(),
            _ => self.chunks,
        };
        self.chunks = spec.resolve(self.node.shape, stored, self.dtype().size() as u64);
        self
    }

    /// The chunk table (as Dask's array repr).
    pub fn summary(&self) -> ChunkSummary {
        ChunkSummary::of(self)
    }

    /// Compute and return the values, leaving this array lazy.
    pub fn compute(&self) -> Result<Values, CubeError> {
        if let Some(v) = &self.values {
            return Ok(v.clone());
        }
        Ok(self.session.compute(&self.node, self.chunks3())?)
    }

    /// Compute and keep the values in this array (no longer lazy). Returns them.
    pub fn load(&mut self) -> Result<&Values, CubeError> {
        if self.values.is_none() {
            self.values = Some(self.session.compute(&self.node, self.chunks3())?);
        }
        Ok(self.values.as_ref().expect("just loaded"))
    }

    /// Compute once and keep the result in the session (memory, spilling what does not fit);
    /// the array stays lazy and later computations built on it read the persisted chunks.
    pub fn persist(&mut self) -> Result<(), CubeError> {
        self.node = self.session.persist(&self.node, self.chunks3())?;
        Ok(())
    }

    /// Print-free explanation of what writing this array to a cube will fetch and hold.
    pub fn explain(&self) -> crate::exec::Explain {
        self.session.explain(&self.node, self.chunks3())
    }

    /// [`DataArray::explain`] of writing it to a cube (`written`) or of computing it into
    /// memory (`compute`, `--print`).
    pub fn explain_as(&self, written: bool) -> crate::exec::Explain {
        self.session.explain_as(&self.node, self.chunks3(), written)
    }

    /// The task graph as Graphviz DOT (read bottom-up as Dask's `visualize()`).
    pub fn visualize(&self) -> String {
        crate::graph::to_dot(&self.node, self.chunks3(), &self.name)
    }

    /// Write this array as a new cube (chunk by chunk, never whole in memory).
    pub fn to_zarr(&self, url: &str, overwrite: bool) -> Result<(), CubeError> {
        let mut ds = Dataset::new();
        ds.insert(&self.name, self.clone());
        ds.to_zarr(url, overwrite)
    }

    fn with_node(&self, node: Arc<Node>) -> DataArray {
        let mut times = self.times.clone();
        let mut time_span = self.time_span;
        let mut time_bounds = self.time_bounds.clone();
        if !node.present[0] {
            time_span = time_span.or(self.reduced_span());
            times.clear();
            time_bounds = None;
        }
        DataArray {
            name: self.name.clone(),
            node,
            times,
            geobox: self.geobox.clone(),
            chunks: self.chunks,
            values: None,
            session: self.session.clone(),
            time_span,
            time_bounds,
        }
    }

    /// The range a reduction over all of `times` spans: from the first step's lower bound
    /// to the last step's upper bound when the steps have bounds (reducing a reduced cube
    /// again spans what its steps spanned), else from the first step to the last.
    fn reduced_span(&self) -> Option<[Time; 2]> {
        match self.time_bounds.as_deref() {
            Some(b) if !b.is_empty() => Some([b[0][0], b[b.len() - 1][1]]),
            _ => Some([*self.times.first()?, *self.times.last()?]),
        }
    }

    /// Select index ranges along named dimensions (stays lazy). Out-of-range ranges are
    /// clamped; use [`crate::cube::Query`] for validated selection.
    pub fn isel(&self, sel: &[(&str, Range<u64>)]) -> Result<DataArray, CubeError> {
        let mut r = [
            0..self.node.shape[0],
            0..self.node.shape[1],
            0..self.node.shape[2],
        ];
        for (dim, range) in sel {
            let i = crate::store::dim_index(dim)
                .filter(|i| self.node.present[*i])
                .ok_or_else(|| CubeError::Selection {
                    what: format!("isel {dim}"),
                    msg: format!("no dimension '{dim}'; dimensions are {:?}", self.dims()),
                })?;
            let n = self.node.shape[i];
            if range.start >= range.end || range.end > n {
                return Err(CubeError::Selection {
                    what: format!("isel {dim}"),
                    msg: format!(
                        "{}:{} is empty, reversed or beyond the size {n}",
                        range.start, range.end
                    ),
                });
            }
            r[i] = range.clone();
        }
        let mut out = self.with_node(self.node.slice(&r));
        if !out.times.is_empty() {
            let steps = r[0].start as usize..r[0].end as usize;
            out.times = self.times[steps.clone()].to_vec();
            out.time_bounds = self.time_bounds.as_ref().map(|b| b[steps].to_vec());
        }
        out.geobox = self.geobox.window(&crate::geo::PixelWindow {
            rows: r[1].clone(),
            cols: r[2].clone(),
        });
        if let Some(v) = &self.values {
            out.values = Some(v.window(&r));
        }
        Ok(out)
    }

    /// Select by coordinate ranges (inclusive): `("x", min, max)`, `("y", min, max)` in the
    /// cube CRS, or `("time", start_day, end_day)` in days since 1970-01-01 (fractions are
    /// times of day).
    pub fn sel(&self, sel: &[(&str, f64, f64)]) -> Result<DataArray, CubeError> {
        let mut isel: Vec<(&str, Range<u64>)> = Vec::new();
        for (dim, lo, hi) in sel {
            if lo > hi {
                return Err(CubeError::Selection {
                    what: format!("sel {dim}"),
                    msg: format!("{lo},{hi} is reversed"),
                });
            }
            let r = match *dim {
                "time" => {
                    let idx: Vec<usize> = self
                        .times
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.days_f64() >= *lo && t.days_f64() <= *hi)
                        .map(|(i, _)| i)
                        .collect();
                    match (idx.first(), idx.last()) {
                        (Some(a), Some(b)) => *a as u64..*b as u64 + 1,
                        _ => 0..0,
                    }
                }
                "x" => {
                    self.geobox
                        .window_for_bbox([*lo, f64::MIN, *hi, f64::MAX])
                        .cols
                }
                "y" => {
                    self.geobox
                        .window_for_bbox([f64::MIN, *lo, f64::MAX, *hi])
                        .rows
                }
                other => {
                    return Err(CubeError::Selection {
                        what: format!("sel {other}"),
                        msg: "dimensions are time, y, x".into(),
                    })
                }
            };
            if r.is_empty() {
                return Err(CubeError::Selection {
                    what: format!("sel {dim}"),
                    msg: format!("{lo}..{hi} selects nothing"),
                });
            }
            isel.push((dim, r));
        }
        self.isel(&isel)
    }

    /// Any elementwise unary operation.
    pub fn unary_op(&self, op: UnaryOp) -> DataArray {
        self.unary(op)
    }

    fn unary(&self, op: UnaryOp) -> DataArray {
        let n = &self.node;
        let dtype = match op {
            UnaryOp::Neg | UnaryOp::Abs if n.dtype.is_float() => n.dtype,
            _ => float_of(&[n]),
        };
        self.with_node(Node::new(
            Op::Unary(op, n.clone()),
            n.shape,
            n.present,
            dtype,
        ))
    }

    fn binary(&self, op: BinaryOp, other: &DataArray) -> DataArray {
        let (a, b) = (&self.node, &other.node);
        let mut shape = [1u64; 3];
        let mut present = [false; 3];
        let mut problem = None;
        for i in 0..3 {
            present[i] = a.present[i] || b.present[i];
            shape[i] = if a.present[i] { a.shape[i] } else { b.shape[i] };
            if a.present[i] && b.present[i] && a.shape[i] != b.shape[i] {
                problem = Some(format!(
                    "cannot combine '{}' and '{}': {} has {} vs {} steps",
                    self.name, other.name, DIMS[i], a.shape[i], b.shape[i]
                ));
            }
        }
        // Grids must agree along the spatial axes both operands still have.
        let (ga, gb) = (&self.geobox, &other.geobox);
        let same_x = !(a.present[2] && b.present[2])
            || (ga.transform[0] == gb.transform[0] && ga.transform[1] == gb.transform[1]);
        let same_y = !(a.present[1] && b.present[1])
            || (ga.transform[3] == gb.transform[3] && ga.transform[5] == gb.transform[5]);
        let spatial = |n: &Node| n.present[1] || n.present[2];
        if problem.is_none() && spatial(a) && spatial(b) && (!same_x || !same_y || ga.wkt != gb.wkt)
        {
            problem = Some(format!(
                "cannot combine '{}' and '{}': they lie on different grids",
                self.name, other.name
            ));
        }
        if problem.is_none() && a.present[0] && b.present[0] && self.times != other.times {
            problem = Some(format!(
                "cannot combine '{}' and '{}': their time coordinates differ",
                self.name, other.name
            ));
        }
        let op_ = match problem {
            Some(m) => Op::Invalid(m),
            None => Op::Binary(op, a.clone(), b.clone()),
        };
        let mut out = if a.present.iter().filter(|p| **p).count()
            >= b.present.iter().filter(|p| **p).count()
        {
            self.clone()
        } else {
            other.clone()
        };
        out.values = None;
        out.node = Node::new(op_, shape, present, float_of(&[a, b]));
        if !present[0] {
            out.time_span = out.time_span.or(self.time_span).or(other.time_span);
            out.times.clear();
            out.time_bounds = None;
        } else if a.present[0] && b.present[0] {
            // Same steps (checked above); bounds only one operand states still describe
            // them, two that disagree describe neither.
            out.time_bounds = match (&self.time_bounds, &other.time_bounds) {
                (Some(x), Some(y)) if x != y => None,
                (x, y) => x.clone().or(y.clone()),
            };
        }
        out
    }

    /// A constant on this array's grid (broadcasts to any shape).
    pub fn scalar(&self, v: f64) -> DataArray {
        let mut s = self.clone();
        s.values = None;
        s.node = Node::new(Op::Const(v), [1, 1, 1], [false; 3], DType::F32);
        s.times.clear();
        s.time_bounds = None;
        s
    }

    /// Elementwise binary op with another array (broadcasting over absent dimensions).
    pub fn apply(&self, op: BinaryOp, other: &DataArray) -> DataArray {
        self.binary(op, other)
    }
    /// Elementwise binary op with a scalar.
    pub fn apply_scalar(&self, op: BinaryOp, v: f64) -> DataArray {
        self.binary(op, &self.scalar(v))
    }
    /// `self < v` etc. with another array.
    pub fn lt(&self, o: &DataArray) -> DataArray {
        self.binary(BinaryOp::Lt, o)
    }
    /// `self > o`.
    pub fn gt(&self, o: &DataArray) -> DataArray {
        self.binary(BinaryOp::Gt, o)
    }
    /// `abs(self)`.
    pub fn abs(&self) -> DataArray {
        self.unary(UnaryOp::Abs)
    }
    /// `sqrt(self)`.
    pub fn sqrt(&self) -> DataArray {
        self.unary(UnaryOp::Sqrt)
    }
    /// 1 where missing (nodata/NaN), else 0.
    pub fn isnull(&self) -> DataArray {
        self.unary(UnaryOp::IsNull)
    }
    /// Replace missing values by `v`.
    pub fn fillna(&self, v: f64) -> DataArray {
        self.binary(BinaryOp::FillNa, &self.scalar(v))
    }
    /// Clamp to `[lo, hi]`.
    pub fn clip(&self, lo: f64, hi: f64) -> DataArray {
        let n = &self.node;
        self.with_node(Node::new(
            Op::Clip(n.clone(), lo, hi),
            n.shape,
            n.present,
            float_of(&[n]),
        ))
    }
    /// `self` where `cond` is true, else `other` (xarray's `where`).
    pub fn where_(&self, cond: &DataArray, other: &DataArray) -> DataArray {
        let shape_src = self
            .binary(BinaryOp::Add, other)
            .binary(BinaryOp::Add, cond);
        if let Op::Invalid(_) = &shape_src.node.op {
            return shape_src;
        }
        let n = Node::new(
            Op::Where(cond.node.clone(), self.node.clone(), other.node.clone()),
            shape_src.node.shape,
            shape_src.node.present,
            float_of(&[&self.node, &other.node]),
        );
        let mut out = shape_src;
        out.node = n;
        out.name = self.name.clone();
        out
    }
    /// Cast (integers round and saturate; missing values become 0).
    pub fn astype(&self, d: DType) -> DataArray {
        let n = &self.node;
        self.with_node(Node::new(Op::Cast(d, n.clone()), n.shape, n.present, d))
    }

    /// A nan-aware reduction over `dim`.
    pub fn reduce(&self, op: ReduceOp, dim: &str) -> DataArray {
        let n = &self.node;
        let Some(axis) = crate::store::dim_index(dim).filter(|i| n.present[*i]) else {
            let msg = format!(
                "cannot reduce '{}' over unknown dimension '{dim}'; dimensions are {:?}",
                self.name,
                self.dims()
            );
            return self.with_node(Node::new(Op::Invalid(msg), n.shape, n.present, DType::F32));
        };
        let mut shape = n.shape;
        shape[axis] = 1;
        let mut present = n.present;
        present[axis] = false;
        let dtype = float_of(&[n]);
        let mut out = self.with_node(Node::new(
            Op::Reduce {
                op,
                axis,
                input: n.clone(),
                offset: [0; 3],
            },
            shape,
            present,
            dtype,
        ));
        out.chunks[axis] = 1;
        // A reduced spatial axis becomes one pixel spanning the whole extent.
        let g = &mut out.geobox;
        if axis == 1 {
            g.transform[5] *= g.height as f64;
            g.height = 1;
        } else if axis == 2 {
            g.transform[1] *= g.width as f64;
            g.width = 1;
        }
        out
    }
    /// Mean over a dimension.
    pub fn mean(&self, dim: &str) -> DataArray {
        self.reduce(ReduceOp::Mean, dim)
    }
    /// Median over a dimension.
    pub fn median(&self, dim: &str) -> DataArray {
        self.reduce(ReduceOp::Median, dim)
    }
}

macro_rules! std_op {
    ($tr:ident, $f:ident, $op:expr) => {
        impl std::ops::$tr<&DataArray> for &DataArray {
            type Output = DataArray;
            fn $f(self, o: &DataArray) -> DataArray {
                self.binary($op, o)
            }
        }
        impl std::ops::$tr<f64> for &DataArray {
            type Output = DataArray;
            fn $f(self, v: f64) -> DataArray {
                self.binary($op, &self.scalar(v))
            }
        }
        impl std::ops::$tr<&DataArray> for f64 {
            type Output = DataArray;
            fn $f(self, o: &DataArray) -> DataArray {
                o.scalar(self).binary($op, o)
            }
        }
    };
}
std_op!(Add, add, BinaryOp::Add);
std_op!(Sub, sub, BinaryOp::Sub);
std_op!(Mul, mul, BinaryOp::Mul);
std_op!(Div, div, BinaryOp::Div);

impl std::ops::Neg for &DataArray {
    type Output = DataArray;
    fn neg(self) -> DataArray {
        self.unary(UnaryOp::Neg)
    }
}

impl std::fmt::Display for DataArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self
            .dims()
            .iter()
            .zip(self.shape())
            .map(|(d, n)| format!("{d}: {n}"))
            .collect();
        writeln!(
            f,
            "<chunkcube.DataArray '{}' ({})> {}",
            self.name,
            dims.join(", "),
            self.dtype()
        )?;
        match &self.values {
            Some(v) => writeln!(f, "values loaded ({})", format_bytes(v.nbytes() as u64))?,
            None => write!(f, "{}", self.summary())?,
        }
        if !self.times.is_empty() {
            let t: Vec<String> = self.times.iter().take(4).map(|d| d.to_string()).collect();
            writeln!(
                f,
                "  * time  {}{}",
                t.join(" "),
                if self.times.len() > 4 { " ..." } else { "" }
            )?;
        }
        let g = &self.geobox;
        if self.node.present[1] {
            writeln!(
                f,
                "  * y     {:.1} ... {:.1}",
                g.transform[3] + 0.5 * g.dy(),
                g.transform[3] + (g.height as f64 - 0.5) * g.dy()
            )?;
        }
        if self.node.present[2] {
            writeln!(
                f,
                "  * x     {:.1} ... {:.1}",
                g.transform[0] + 0.5 * g.dx(),
                g.transform[0] + (g.width as f64 - 0.5) * g.dx()
            )?;
        }
        writeln!(
            f,
            "    spatial_ref  {}",
            match (g.epsg, g.wkt.is_empty()) {
                (Some(e), _) => format!("EPSG:{e}"),
                (None, true) => "none (no CRS)".into(),
                (None, false) => "(custom CRS)".into(),
            }
        )
    }
}

/// The float type of a result: float64 when an operand is float64 (asked for with
/// `astype(float64)`), else float32: integers are promoted before arithmetic, so `nir - red`
/// on uint16 never wraps around.
pub(super) fn float_of(operands: &[&Arc<Node>]) -> DType {
    if operands.iter().any(|n| n.dtype == DType::F64) {
        DType::F64
    } else {
        DType::F32
    }
}
