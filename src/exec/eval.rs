//! Evaluation of one region of a graph: the body of every chunk task. An elementwise chain is
//! one task per output chunk (intermediates live only inside the task, one chunk each, depth
//! first); reductions stream over their axis, letting go of each slab once past it.

use super::median::median_planes;
use super::plan::{reduce_slabs, spills};
use super::task::slice3;
use super::{ExecError, Session};
use crate::graph::{chunk_pieces, input_region, BinaryOp, Node, Op, ReduceOp, UnaryOp};
use crate::store::{DType, Element, Real, ValuesOf};
use ndarray::{ArrayD, Axis, IxDyn, Zip};
use std::ops::Range;
use std::sync::Arc;

pub(crate) fn lens(r: &[Range<u64>; 3]) -> [usize; 3] {
    [
        (r[0].end - r[0].start) as usize,
        (r[1].end - r[1].start) as usize,
        (r[2].end - r[2].start) as usize,
    ]
}

/// The float types a graph is evaluated in (f32, or f64 when the graph asks for it).
pub(crate) trait Float: Real + ValuesOf {}
impl<F: Real + ValuesOf> Float for F {}

/// `v` as f64 (named apart from `num_traits::ToPrimitive::to_f64`, which returns an Option).
#[inline]
pub(crate) fn wide<F: Real>(v: F) -> f64 {
    <F as Element>::to_f64(v)
}

impl Session {
    /// Evaluate `region` of `node` in `F` (3-D, length 1 along absent dimensions).
    pub(crate) fn eval<F: Float>(
        &self,
        node: &Arc<Node>,
        region: &[Range<u64>; 3],
    ) -> Result<ArrayD<F>, ExecError> {
        self.check_cancelled()?;
        Ok(match &node.op {
            Op::Invalid(m) => return Err(ExecError::Invalid(m.clone())),
            Op::Const(v) => ArrayD::from_elem(IxDyn(&[1, 1, 1]), F::of_f64(*v)),
            Op::Source { src, offset } if super::rows::reads_rows(src) => {
                self.eval_rows::<F>(src, *offset, region)?
            }
            Op::Source { src, offset } => {
                let shape = lens(region);
                let pieces = chunk_pieces(&**src, *offset, region);
                if let [(idx, inner, _)] = pieces.as_slice() {
                    // Inside one stored chunk: convert straight from it.
                    let chunk = self.chunk(src, *idx)?;
                    return Ok(chunk.window_to_real::<F>(inner, src.nodata()));
                }
                let mut out = ArrayD::<F>::from_elem(IxDyn(&shape), F::nan());
                for (idx, inner, dst) in pieces {
                    let chunk = self.chunk(src, idx)?;
                    let part = chunk.window_to_real::<F>(&inner, src.nodata());
                    out.slice_mut(slice3(&dst)).assign(&part);
                }
                out
            }
            Op::Unary(op, a) => {
                let mut x = self.eval::<F>(a, &input_region(node, a, region))?;
                match op {
                    UnaryOp::Neg => x.mapv_inplace(|v| -v),
                    UnaryOp::Abs => x.mapv_inplace(F::abs),
                    UnaryOp::Sqrt => x.mapv_inplace(F::sqrt),
                    UnaryOp::Log => x.mapv_inplace(F::ln),
                    UnaryOp::Exp => x.mapv_inplace(F::exp),
                    UnaryOp::IsNull => {
                        x.mapv_inplace(|v| if v.is_nan() { F::one() } else { F::zero() })
                    }
                    UnaryOp::NotNull => {
                        x.mapv_inplace(|v| if v.is_nan() { F::zero() } else { F::one() })
                    }
                    UnaryOp::Not => x.mapv_inplace(|v| {
                        if v.is_nan() {
                            v
                        } else if v == F::zero() {
                            F::one()
                        } else {
                            F::zero()
                        }
                    }),
                }
                x
            }
            Op::Clip(a, lo, hi) => {
                let (lo, hi) = (F::of_f64(*lo), F::of_f64(*hi));
                let mut x = self.eval::<F>(a, &input_region(node, a, region))?;
                x.mapv_inplace(|v| if v.is_nan() { v } else { v.max(lo).min(hi) });
                x
            }
            Op::Cast(d, a) => {
                let mut x = self.eval::<F>(a, &input_region(node, a, region))?;
                if !d.is_float() {
                    let (lo, hi) = int_range::<F>(*d);
                    x.mapv_inplace(|v| {
                        if v.is_nan() {
                            F::zero()
                        } else {
                            v.round().max(lo).min(hi)
                        }
                    });
                }
                x
            }
            Op::Binary(op, a, b) => {
                let x = self.eval::<F>(a, &input_region(node, a, region))?;
                let y = self.eval::<F>(b, &input_region(node, b, region))?;
                binary(*op, x, y, lens(region))
            }
            Op::Where(c, a, b) => {
                let shape = lens(region);
                let c = self.eval::<F>(c, &input_region(node, c, region))?;
                let a = self.eval::<F>(a, &input_region(node, a, region))?;
                let b = self.eval::<F>(b, &input_region(node, b, region))?;
                let sh = IxDyn(&shape);
                let (c, a, b) = (bcast(&c, &sh)?, bcast(&a, &sh)?, bcast(&b, &sh)?);
                Zip::from(&c).and(&a).and(&b).map_collect(|&c, &a, &b| {
                    if c.is_nan() {
                        F::nan()
                    } else if c != F::zero() {
                        a
                    } else {
                        b
                    }
                })
            }
            Op::Reduce {
                op, axis, input, ..
            } => self.reduce(node, *op, *axis, input, region)?,
        })
    }

    fn reduce<F: Float>(
        &self,
        node: &Arc<Node>,
        op: ReduceOp,
        axis: usize,
        input: &Arc<Node>,
        region: &[Range<u64>; 3],
    ) -> Result<ArrayD<F>, ExecError> {
        let full = input_region(node, input, region);
        let n = full[axis].end - full[axis].start;
        let mut out_shape = lens(region);
        out_shape[axis] = 1;
        let px: usize = out_shape.iter().product();
        let slabs = reduce_slabs(input, axis, &full);
        let at = |k: usize| {
            slabs.get(k).map(|s| {
                let mut r = full.clone();
                r[axis] = s.clone();
                r
            })
        };
        if op.needs_stack() {
            // The planner takes the same decision (and counts the same bytes).
            if spills(axis, &full, self.caps(F::DTYPE.size() as u64)) {
                return self.median_spilled::<F>(input, &full, &out_shape);
            }
            // Gather the stack plane by plane ([n][px], one memcpy per time step), letting go
            // of each slab's chunks once past it, then take each pixel's nan-median.
            let mut stack = vec![F::nan(); n as usize * px];
            let mut t = 0usize;
            for k in 0..slabs.len() {
                let Some(r) = at(k) else { break };
                let steps = (r[axis].end - r[axis].start) as usize;
                let slab = self.eval::<F>(input, &r)?;
                match (axis, slab.as_slice()) {
                    (0, Some(flat)) if flat.len() % px == 0 => {
                        stack[t * px..t * px + flat.len()].copy_from_slice(flat);
                    }
                    _ => {
                        for (i, lane) in slab.lanes(Axis(axis)).into_iter().enumerate() {
                            for (k, &v) in lane.iter().enumerate() {
                                stack[(t + k) * px + i] = v;
                            }
                        }
                    }
                }
                t += steps;
                self.release_slab(input, at(k + 1).as_ref());
            }
            let mut vals = vec![F::nan(); px];
            median_planes(&stack, n as usize, &mut vals, |v| v);
            return ArrayD::from_shape_vec(IxDyn(&out_shape), vals)
                .map_err(|e| ExecError::Invalid(e.to_string()));
        }
        // A narrow integer band as stored: reduced in its own integers (see `reduce_int`).
        let all: Vec<[Range<u64>; 3]> = (0..slabs.len()).map_while(at).collect();
        if let Some(v) = self.reduce_stored::<F>(op, axis, input, &all, out_shape)? {
            return Ok(v);
        }
        // Only the state the reduction needs (the planner counts the same bytes).
        let wants = |ops: &[ReduceOp]| ops.contains(&op);
        let mut cnt = vec![0u32; px];
        let mut sum = vec![
            0f64;
            if wants(&[ReduceOp::Mean, ReduceOp::Sum, ReduceOp::Std]) {
                px
            } else {
                0
            }
        ];
        let mut sq = vec![0f64; if wants(&[ReduceOp::Std]) { px } else { 0 }];
        let mut mn = vec![F::infinity(); if wants(&[ReduceOp::Min]) { px } else { 0 }];
        let mut mx = vec![F::neg_infinity(); if wants(&[ReduceOp::Max]) { px } else { 0 }];
        for k in 0..slabs.len() {
            let Some(r) = at(k) else { break };
            let slab = self.eval::<F>(input, &r)?;
            let mut add = |i: usize, v: F| {
                if v.is_nan() {
                    return;
                }
                cnt[i] += 1;
                match op {
                    ReduceOp::Mean | ReduceOp::Sum => sum[i] += wide(v),
                    ReduceOp::Std => {
                        sum[i] += wide(v);
                        sq[i] += wide(v) * wide(v);
                    }
                    ReduceOp::Min => mn[i] = mn[i].min(v),
                    ReduceOp::Max => mx[i] = mx[i].max(v),
                    ReduceOp::Count | ReduceOp::Median => {}
                }
            };
            match (axis, slab.as_slice()) {
                // Over time with a contiguous slab: one flat pass per time step.
                (0, Some(flat)) if flat.len() % px == 0 => {
                    for plane in flat.chunks_exact(px) {
                        for (i, &v) in plane.iter().enumerate() {
                            add(i, v);
                        }
                    }
                }
                _ => {
                    for (i, lane) in slab.lanes(Axis(axis)).into_iter().enumerate() {
                        for &v in lane.iter() {
                            add(i, v);
                        }
                    }
                }
            }
            self.release_slab(input, at(k + 1).as_ref());
        }
        let vals: Vec<F> = (0..px)
            .map(|i| {
                let c = cnt[i];
                match op {
                    ReduceOp::Count => F::of_f64(c as f64),
                    ReduceOp::Sum => F::of_f64(sum[i]),
                    _ if c == 0 => F::nan(),
                    ReduceOp::Mean => F::of_f64(sum[i] / c as f64),
                    ReduceOp::Min => mn[i],
                    ReduceOp::Max => mx[i],
                    ReduceOp::Std => {
                        let m = sum[i] / c as f64;
                        F::of_f64((sq[i] / c as f64 - m * m).max(0.0).sqrt())
                    }
                    ReduceOp::Median => F::nan(),
                }
            })
            .collect();
        ArrayD::from_shape_vec(IxDyn(&out_shape), vals)
            .map_err(|e| ExecError::Invalid(e.to_string()))
    }
}

fn int_range<F: Real>(d: DType) -> (F, F) {
    let (lo, hi) = match d {
        DType::U8 => (0.0, 255.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U32 => (0.0, u32::MAX as f64),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        _ => return (F::min_value(), F::max_value()),
    };
    (F::of_f64(lo), F::of_f64(hi))
}

fn bcast<'a, F>(a: &'a ArrayD<F>, sh: &IxDyn) -> Result<ndarray::ArrayViewD<'a, F>, ExecError> {
    a.broadcast(sh.clone())
        .ok_or_else(|| ExecError::Invalid(format!("cannot broadcast {:?} to {:?}", a.shape(), sh)))
}

fn binary<F: Real>(op: BinaryOp, x: ArrayD<F>, y: ArrayD<F>, shape: [usize; 3]) -> ArrayD<F> {
    // One monomorphic loop per operation (a closure, not a fn pointer), so it inlines and
    // vectorises.
    match op {
        BinaryOp::Add => zip_apply(x, y, shape, |a, b| a + b),
        BinaryOp::Sub => zip_apply(x, y, shape, |a, b| a - b),
        BinaryOp::Mul => zip_apply(x, y, shape, |a, b| a * b),
        BinaryOp::Div => zip_apply(x, y, shape, |a, b| a / b),
        BinaryOp::Pow => zip_apply(x, y, shape, F::powf),
        BinaryOp::Lt => zip_apply(x, y, shape, |a, b| cmp(a, b, a < b)),
        BinaryOp::Le => zip_apply(x, y, shape, |a, b| cmp(a, b, a <= b)),
        BinaryOp::Gt => zip_apply(x, y, shape, |a, b| cmp(a, b, a > b)),
        BinaryOp::Ge => zip_apply(x, y, shape, |a, b| cmp(a, b, a >= b)),
        BinaryOp::Eq => zip_apply(x, y, shape, |a, b| cmp(a, b, a == b)),
        BinaryOp::Ne => zip_apply(x, y, shape, |a, b| cmp(a, b, a != b)),
        BinaryOp::And => zip_apply(x, y, shape, |a, b| {
            cmp(a, b, a != F::zero() && b != F::zero())
        }),
        BinaryOp::Or => zip_apply(x, y, shape, |a, b| {
            cmp(a, b, a != F::zero() || b != F::zero())
        }),
        BinaryOp::FillNa => zip_apply(x, y, shape, |a, b| if a.is_nan() { b } else { a }),
        BinaryOp::Min => zip_apply(x, y, shape, |a, b| {
            if a.is_nan() || b.is_nan() {
                F::nan()
            } else {
                a.min(b)
            }
        }),
        BinaryOp::Max => zip_apply(x, y, shape, |a, b| {
            if a.is_nan() || b.is_nan() {
                F::nan()
            } else {
                a.max(b)
            }
        }),
    }
}

/// `f(x, y)` elementwise into `shape`, broadcasting, reusing an operand's buffer when it
/// already has the output shape.
#[inline]
fn zip_apply<F: Real>(
    x: ArrayD<F>,
    y: ArrayD<F>,
    shape: [usize; 3],
    f: impl Fn(F, F) -> F,
) -> ArrayD<F> {
    let sh = IxDyn(&shape);
    if x.shape() == shape {
        let mut x = x;
        if y.shape() == shape {
            if let (Some(xs), Some(ys)) = (x.as_slice_mut(), y.as_slice()) {
                for (a, &b) in xs.iter_mut().zip(ys) {
                    *a = f(*a, b);
                }
            } else {
                Zip::from(&mut x).and(&y).for_each(|a, &b| *a = f(*a, b));
            }
        } else if let Some(yb) = y.broadcast(sh.clone()) {
            Zip::from(&mut x).and(&yb).for_each(|a, &b| *a = f(*a, b));
        }
        return x;
    }
    if y.shape() == shape {
        let mut y = y;
        if let Some(xb) = x.broadcast(sh.clone()) {
            Zip::from(&mut y).and(&xb).for_each(|b, &a| *b = f(a, *b));
        }
        return y;
    }
    match (x.broadcast(sh.clone()), y.broadcast(sh.clone())) {
        (Some(a), Some(b)) => Zip::from(&a).and(&b).map_collect(|&a, &b| f(a, b)),
        _ => ArrayD::from_elem(sh, F::nan()),
    }
}

#[inline]
fn cmp<F: Real>(a: F, b: F, r: bool) -> F {
    if a.is_nan() || b.is_nan() {
        F::nan()
    } else if r {
        F::one()
    } else {
        F::zero()
    }
}
