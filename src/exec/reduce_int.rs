//! Reductions of a narrow integer band as stored (`max:time` of a uint16 band): min, max, sum,
//! count, mean and std straight from the decoded chunks, in the band's own integers, without
//! first converting each slab to float with nodata as NaN.
//!
//! Profiled (issue 18, `calc --expr s=nir --reduce max:time`, 6 x 3600 x 4200 uint16): the float
//! path spent a pass per slab converting u16 → f32 (a fresh 4 MiB array per 1024² chunk) before a
//! second pass reducing it, about a tenth of the task's time and twice its memory traffic; here
//! one branch-free pass per row reduces what the decoder wrote. The results equal the float
//! path's exactly: these types convert to f32 exactly, and the sums (of integers, in i64) are
//! the f64 sums the float path forms, exact below 2^53.

use super::eval::Float;
use super::{ExecError, Session};
use crate::graph::{chunk_pieces, ChunkSource, Node, Op, ReduceOp};
use crate::store::{DType, Element, ValuesOf};
use ndarray::{ArrayD, IxDyn};
use std::ops::Range;
use std::sync::Arc;

/// The integer types reduced as stored (each exactly representable in f32).
trait Narrow: Element + ValuesOf + Ord + Into<i64> {
    const LO: Self;
    const HI: Self;
}
impl Narrow for u8 {
    const LO: u8 = u8::MIN;
    const HI: u8 = u8::MAX;
}
impl Narrow for u16 {
    const LO: u16 = u16::MIN;
    const HI: u16 = u16::MAX;
}
impl Narrow for i16 {
    const LO: i16 = i16::MIN;
    const HI: i16 = i16::MAX;
}

/// What a reduction keeps per output pixel (only what `op` needs, no more than the float path
/// keeps, so the planner's figure holds).
struct State<T> {
    op: ReduceOp,
    cnt: Vec<u32>,
    mn: Vec<T>,
    mx: Vec<T>,
    sum: Vec<i64>,
    sq: Vec<i64>,
}

impl<T: Narrow> State<T> {
    fn new(op: ReduceOp, px: usize) -> State<T> {
        let n = |ops: &[ReduceOp]| if ops.contains(&op) { px } else { 0 };
        State {
            op,
            cnt: vec![0; px],
            mn: vec![T::HI; n(&[ReduceOp::Min])],
            mx: vec![T::LO; n(&[ReduceOp::Max])],
            sum: vec![0; n(&[ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Std])],
            sq: vec![0; n(&[ReduceOp::Std])],
        }
    }

    /// Add one row of stored values to the pixels from `at` on (one pixel each), or all of it
    /// to the pixel `at` when the row runs along the reduced axis.
    #[inline]
    fn add_row(&mut self, row: &[T], at: usize, along: bool, nd: Option<T>) {
        // `ok` computed without a branch, so each loop below vectorises.
        let (has, ndv) = (nd.is_some(), nd.unwrap_or_default());
        let ok = |v: T| !has || v != ndv;
        if along {
            for &v in row {
                self.add_one(at, v, ok(v));
            }
            return;
        }
        let cnt = &mut self.cnt[at..at + row.len()];
        for (c, &v) in cnt.iter_mut().zip(row) {
            *c += ok(v) as u32;
        }
        match self.op {
            ReduceOp::Max => {
                for (m, &v) in self.mx[at..at + row.len()].iter_mut().zip(row) {
                    *m = if ok(v) { (*m).max(v) } else { *m };
                }
            }
            ReduceOp::Min => {
                for (m, &v) in self.mn[at..at + row.len()].iter_mut().zip(row) {
                    *m = if ok(v) { (*m).min(v) } else { *m };
                }
            }
            ReduceOp::Sum | ReduceOp::Mean => {
                for (s, &v) in self.sum[at..at + row.len()].iter_mut().zip(row) {
                    *s += if ok(v) { v.into() } else { 0 };
                }
            }
            ReduceOp::Std => {
                let sq = &mut self.sq[at..at + row.len()];
                for ((s, q), &v) in self.sum[at..at + row.len()].iter_mut().zip(sq).zip(row) {
                    let w: i64 = if ok(v) { v.into() } else { 0 };
                    *s += w;
                    *q += w * w;
                }
            }
            ReduceOp::Count | ReduceOp::Median => {}
        }
    }

    #[inline]
    fn add_one(&mut self, i: usize, v: T, ok: bool) {
        if !ok {
            return;
        }
        self.cnt[i] += 1;
        let w: i64 = v.into();
        match self.op {
            ReduceOp::Max => self.mx[i] = self.mx[i].max(v),
            ReduceOp::Min => self.mn[i] = self.mn[i].min(v),
            ReduceOp::Sum | ReduceOp::Mean => self.sum[i] += w,
            ReduceOp::Std => {
                self.sum[i] += w;
                self.sq[i] += w * w;
            }
            ReduceOp::Count | ReduceOp::Median => {}
        }
    }

    /// Each pixel's result, as the float path forms it.
    fn finish<F: Float>(self) -> Vec<F> {
        (0..self.cnt.len())
            .map(|i| {
                let c = self.cnt[i];
                match self.op {
                    ReduceOp::Count => F::of_f64(c as f64),
                    ReduceOp::Sum => F::of_f64(self.sum[i] as f64),
                    _ if c == 0 => F::nan(),
                    ReduceOp::Mean => F::of_f64(self.sum[i] as f64 / c as f64),
                    ReduceOp::Min => F::of(self.mn[i]),
                    ReduceOp::Max => F::of(self.mx[i]),
                    ReduceOp::Std => {
                        let m = self.sum[i] as f64 / c as f64;
                        F::of_f64((self.sq[i] as f64 / c as f64 - m * m).max(0.0).sqrt())
                    }
                    ReduceOp::Median => F::nan(),
                }
            })
            .collect()
    }
}

/// Reductions run on this path (tests check that it is taken).
#[cfg(test)]
pub(crate) static NARROW_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Session {
    /// `op` over `axis` of `input` when it is a uint8, uint16 or int16 band read from whole
    /// decoded chunks, slab by slab (`slabs`: the regions of `full` along `axis`, as the float
    /// path takes them); `None` when this path does not apply.
    pub(crate) fn reduce_stored<F: Float>(
        &self,
        op: ReduceOp,
        axis: usize,
        input: &Arc<Node>,
        slabs: &[[Range<u64>; 3]],
        out_shape: [usize; 3],
    ) -> Result<Option<ArrayD<F>>, ExecError> {
        let Op::Source { src, offset } = &input.op else {
            return Ok(None);
        };
        if op == ReduceOp::Median || super::rows::reads_rows(src) {
            return Ok(None);
        }
        let vals = match src.dtype() {
            DType::U8 => {
                self.reduce_narrow::<u8, F>(op, axis, input, src, *offset, slabs, out_shape)?
            }
            DType::U16 => {
                self.reduce_narrow::<u16, F>(op, axis, input, src, *offset, slabs, out_shape)?
            }
            DType::I16 => {
                self.reduce_narrow::<i16, F>(op, axis, input, src, *offset, slabs, out_shape)?
            }
            _ => return Ok(None),
        };
        let Some(vals) = vals else { return Ok(None) };
        ArrayD::from_shape_vec(IxDyn(&out_shape), vals)
            .map(Some)
            .map_err(|e| ExecError::Invalid(e.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    fn reduce_narrow<T: Narrow, F: Float>(
        &self,
        op: ReduceOp,
        axis: usize,
        input: &Arc<Node>,
        src: &Arc<dyn ChunkSource>,
        offset: [u64; 3],
        slabs: &[[Range<u64>; 3]],
        out_shape: [usize; 3],
    ) -> Result<Option<Vec<F>>, ExecError> {
        // The same missing values as `Values::window_to_real`.
        let nd: Option<T> = src.nodata().filter(|v| !v.is_nan()).map(T::from_f64);
        let px: usize = out_shape.iter().product();
        let mut st = State::<T>::new(op, px);
        let [_, oy, ox] = out_shape;
        for (k, r) in slabs.iter().enumerate() {
            self.check_cancelled()?;
            for (idx, inner, dst) in chunk_pieces(&**src, offset, r) {
                let chunk = self.chunk(src, idx)?;
                let Some(a) = chunk.as_array::<T>() else {
                    // A chunk in another dtype than the band says: let the float path decide.
                    return Ok(None);
                };
                let a = a
                    .view()
                    .into_dimensionality::<ndarray::Ix3>()
                    .map_err(|e| ExecError::Invalid(e.to_string()))?;
                let (i0, i1, i2) = (
                    inner[0].start as usize,
                    inner[1].start as usize,
                    inner[2].clone(),
                );
                for t in 0..(dst[0].end - dst[0].start) as usize {
                    for y in 0..(dst[1].end - dst[1].start) as usize {
                        let row = a.slice(ndarray::s![
                            i0 + t,
                            i1 + y,
                            i2.start as usize..i2.end as usize
                        ]);
                        let Some(row) = row.as_slice() else {
                            return Ok(None);
                        };
                        // The output pixel of the row's first value (the reduced axis at 0).
                        let mut q = [
                            dst[0].start as usize + t,
                            dst[1].start as usize + y,
                            dst[2].start as usize,
                        ];
                        q[axis] = 0;
                        st.add_row(row, (q[0] * oy + q[1]) * ox + q[2], axis == 2, nd);
                    }
                }
            }
            self.release_slab(input, slabs.get(k + 1));
        }
        #[cfg(test)]
        NARROW_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(st.finish::<F>()))
    }
}
