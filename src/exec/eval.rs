//! Evaluation of one region of a graph: the body of every chunk task. An elementwise chain is
//! one task per output chunk (intermediates live only inside the task, one chunk each, depth
//! first); reductions stream over their axis, letting go of each slab once past it.

use super::{ExecError, Session};
use crate::cube::BandReader;
use crate::cube::ValuesOf;
use crate::graph::{input_region, BinaryOp, Node, Op, ReduceOp, UnaryOp};
use crate::store::{DType, Element, Real};
use ndarray::{ArrayD, Axis, IxDyn, Zip};
use std::ops::Range;
use std::sync::Arc;

fn lens(r: &[Range<u64>; 3]) -> [usize; 3] {
    [
        (r[0].end - r[0].start) as usize,
        (r[1].end - r[1].start) as usize,
        (r[2].end - r[2].start) as usize,
    ]
}

/// A stored chunk index, the window inside that chunk, and the window inside the region.
pub(crate) type ChunkPiece = ([u64; 3], [Range<u64>; 3], [Range<u64>; 3]);

/// For each stored chunk under `region` of a source (offset applied): the chunk index, the
/// window inside the chunk, and the window inside the region.
pub(crate) fn chunk_pieces(
    band: &BandReader,
    offset: [u64; 3],
    region: &[Range<u64>; 3],
) -> Vec<ChunkPiece> {
    let c = band.chunk_shape();
    let abs: [Range<u64>; 3] =
        std::array::from_fn(|i| region[i].start + offset[i]..region[i].end + offset[i]);
    let cr: [Range<u64>; 3] =
        std::array::from_fn(|i| abs[i].start / c[i]..(abs[i].end - 1) / c[i] + 1);
    let mut out = Vec::new();
    for t in cr[0].clone() {
        for y in cr[1].clone() {
            for x in cr[2].clone() {
                let idx = [t, y, x];
                let inner: [Range<u64>; 3] = std::array::from_fn(|i| {
                    let c0 = idx[i] * c[i];
                    abs[i].start.max(c0) - c0..abs[i].end.min(c0 + c[i]) - c0
                });
                let dst: [Range<u64>; 3] = std::array::from_fn(|i| {
                    let c0 = idx[i] * c[i];
                    abs[i].start.max(c0) - abs[i].start..abs[i].end.min(c0 + c[i]) - abs[i].start
                });
                out.push((idx, inner, dst));
            }
        }
    }
    out
}

/// The float types a graph is evaluated in (f32, or f64 when the graph asks for it).
pub(crate) trait Float: Real + ValuesOf {}
impl<F: Real + ValuesOf> Float for F {}

/// `v` as f64 (named apart from `num_traits::ToPrimitive::to_f64`, which returns an Option).
#[inline]
fn wide<F: Real>(v: F) -> f64 {
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
            Op::Source { band, offset } => {
                let shape = lens(region);
                let pieces = chunk_pieces(band, *offset, region);
                if let [(idx, inner, _)] = pieces.as_slice() {
                    // Inside one stored chunk: convert straight from it.
                    let chunk = self.chunk(band, *idx)?;
                    return Ok(chunk.window_to_real::<F>(inner, band.nodata()));
                }
                let mut out = ArrayD::<F>::from_elem(IxDyn(&shape), F::nan());
                for (idx, inner, dst) in pieces {
                    let chunk = self.chunk(band, idx)?;
                    let part = chunk.window_to_real::<F>(&inner, band.nodata());
                    out.slice_mut(super::slice3(&dst)).assign(&part);
                }
                out
            }
            Op::Persisted { data, offset } => data.read::<F>(
                self,
                &std::array::from_fn(|i| region[i].start + offset[i]..region[i].end + offset[i]),
            )?,
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
        let step = reduce_step(input, axis);
        if op.needs_stack() {
            let stack_bytes = n * px as u64 * std::mem::size_of::<F>() as u64;
            if stack_bytes > self.stack_cap() && axis == 0 && out_shape[1] > 1 {
                return self.median_spilled::<F>(input, &full, &out_shape, step);
            }
            // Gather the stack plane by plane ([n][px], one memcpy per time step), letting go
            // of each slab's chunks once past it, then take each pixel's nan-median.
            let mut stack = vec![F::nan(); n as usize * px];
            let mut t = 0usize;
            let mut s = full[axis].start;
            while s < full[axis].end {
                let e = (s + step).min(full[axis].end);
                let mut r = full.clone();
                r[axis] = s..e;
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
                t += (e - s) as usize;
                let mut next = full.clone();
                next[axis] = e..(e + step).min(full[axis].end);
                self.release_slab(input, (e < full[axis].end).then_some(&next));
                s = e;
            }
            let mut vals = vec![F::nan(); px];
            median_planes(&stack, n as usize, &mut vals, |v| v);
            return ArrayD::from_shape_vec(IxDyn(&out_shape), vals)
                .map_err(|e| ExecError::Invalid(e.to_string()));
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
        let mut s = full[axis].start;
        while s < full[axis].end {
            let e = (s + step).min(full[axis].end);
            let mut r = full.clone();
            r[axis] = s..e;
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
            let mut next = full.clone();
            next[axis] = e..(e + step).min(full[axis].end);
            self.release_slab(input, (e < full[axis].end).then_some(&next));
            s = e;
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

impl Session {
    /// The most bytes a task may hold as a time stack before it rechunks through the spill store.
    pub(crate) fn stack_cap(&self) -> u64 {
        stack_cap_for(self.config.memory_limit)
    }

    /// Median over time when the stacks do not fit: a bounded-memory rechunk (1, Y, X) →
    /// (T, y, X) through a scratch store (see [`Session::spill_stacks`]), then each strip is
    /// read back with its whole time stack. A task this large usually runs alone under its
    /// limit, so both phases are shared among one helper per core (each holding one strip, as
    /// the planner counted).
    fn median_spilled<F: Float>(
        &self,
        input: &Arc<Node>,
        full: &[Range<u64>; 3],
        out_shape: &[usize; 3],
        step: u64,
    ) -> Result<ArrayD<F>, ExecError> {
        let (h, w) = (out_shape[1] as u64, out_shape[2] as u64);
        let plan = super::spill_plan(
            input,
            full,
            step,
            h * w * F::DTYPE.size() as u64,
            self.caps(F::DTYPE.size() as u64),
            None,
        );
        let mut out = vec![F::nan(); (h * w) as usize];
        let rows = plan.rows;
        let work = std::sync::Mutex::new(out.chunks_mut((rows * w) as usize).enumerate());
        let medians = |take: &StripMedians<'_, F>| {
            let each = || -> Result<(), ExecError> {
                loop {
                    let next = work.lock().map_err(|_| ExecError::Cancelled)?.next();
                    let Some((si, dst)) = next else {
                        return Ok(());
                    };
                    let y0 = si as u64 * rows;
                    take(y0..(y0 + rows).min(h), dst)?;
                }
            };
            // Taking medians fetches nothing: every core helps (each strip is a share of the
            // stack).
            run_helpers(self.threads().max(1), &each)
        };
        self.spilled_stacks::<F>(input, full, step, &plan, &medians)?;
        ArrayD::from_shape_vec(IxDyn(out_shape), out).map_err(|e| ExecError::Invalid(e.to_string()))
    }

    /// Write the spilled median over time of `region` of `node` (a median reduction along
    /// time) as one chunk through `writer`, strip by strip, on this thread alone: neither the
    /// result nor its encoding is ever whole in memory, so several such tasks run side by side
    /// under a limit that fits one whole-result task (the planner counts the same bytes; see
    /// `TaskPlan`).
    pub(crate) fn median_streamed<F: Float + bytemuck::Pod>(
        &self,
        node: &Arc<Node>,
        region: &[Range<u64>; 3],
        writer: &mut crate::store::ChunkWriter<'_>,
    ) -> Result<(), ExecError> {
        let Op::Reduce { axis: 0, input, .. } = &node.op else {
            return Err(ExecError::Invalid(
                "a streamed median reduces along time".into(),
            ));
        };
        let full = input_region(node, input, region);
        let [_, h, w] = lens(region).map(|v| v as u64);
        let plan = super::streamed_plan(node, region, self.caps(F::DTYPE.size() as u64), 0)
            .ok_or_else(|| ExecError::Invalid("not a spilled median over time".into()))?;
        let writer = std::sync::Mutex::new(writer);
        let mut strip = vec![F::nan(); (plan.rows * w) as usize];
        let strip = std::sync::Mutex::new(&mut strip);
        let medians = |take: &StripMedians<'_, F>| {
            let mut strip = strip.lock().map_err(|_| ExecError::Cancelled)?;
            let mut writer = writer.lock().map_err(|_| ExecError::Cancelled)?;
            for y0 in (0..h).step_by(plan.rows as usize) {
                let y1 = (y0 + plan.rows).min(h);
                let dst = &mut strip[..((y1 - y0) * w) as usize];
                take(y0..y1, dst)?;
                writer.push_rows(dst, F::nan())?;
            }
            Ok(())
        };
        self.spilled_stacks::<F>(input, &full, reduce_step(input, 0), &plan, &medians)
    }

    /// Spill the time stacks of `input` over `full` (see [`Session::spill_stacks`]), then
    /// call `medians` with a function that fills a strip of rows with their medians. The
    /// stacks keep the stored band's own values when the input is a band of a narrower
    /// integer type (uint16: half the bytes of float32), else the computed floats.
    fn spilled_stacks<F: Float>(
        &self,
        input: &Arc<Node>,
        full: &[Range<u64>; 3],
        step: u64,
        plan: &super::SpillPlan,
        medians: &dyn Fn(&StripMedians<'_, F>) -> Result<(), ExecError>,
    ) -> Result<(), ExecError> {
        let n = full[0].end - full[0].start;
        let w = full[2].end - full[2].start;
        match &input.op {
            Op::Source { band, offset }
                if !band.dtype().is_float() && band.dtype().size() < F::DTYPE.size() =>
            {
                crate::with_dtype!(band.dtype(), T => {
                    let nd = band.nodata().filter(|v| !v.is_nan()).map(T::from_f64);
                    let raw = |r: &[Range<u64>; 3]| self.raw_window::<T>(band, *offset, r);
                    let scratch = self.spill_stacks::<T>(input, full, step, plan, &raw, T::default())?;
                    medians(&|rows: Range<u64>, dst: &mut [F]| {
                        self.check_cancelled()?;
                        let block = scratch.get::<T>(&[0..n, rows, 0..w])?;
                        median_planes(contiguous(&block)?, n as usize, dst, |v: T| {
                            if v.is_missing(nd) { F::nan() } else { F::of(v) }
                        });
                        Ok(())
                    })
                })
            }
            _ => {
                let eval = |r: &[Range<u64>; 3]| -> Result<Vec<F>, ExecError> {
                    Ok(self.eval::<F>(input, r)?.into_raw_vec_and_offset().0)
                };
                let scratch = self.spill_stacks::<F>(input, full, step, plan, &eval, F::nan())?;
                medians(&|rows: Range<u64>, dst: &mut [F]| {
                    self.check_cancelled()?;
                    let block = scratch.get::<F>(&[0..n, rows, 0..w])?;
                    median_planes(contiguous(&block)?, n as usize, dst, |v| v);
                    Ok(())
                })
            }
        }
    }

    /// The stored values of `band` under `r` (offset applied), in C order, as stored.
    fn raw_window<T: ValuesOf>(
        &self,
        band: &Arc<BandReader>,
        offset: [u64; 3],
        r: &[Range<u64>; 3],
    ) -> Result<Vec<T>, ExecError> {
        let mut out = ArrayD::<T>::from_elem(IxDyn(&lens(r)), T::default());
        for (idx, inner, dst) in chunk_pieces(band, offset, r) {
            let chunk = self.chunk(band, idx)?;
            let a = chunk.as_array::<T>().ok_or_else(|| {
                ExecError::Invalid(format!(
                    "chunk {idx:?} of '{}' is not {:?}",
                    band.name(),
                    T::DTYPE
                ))
            })?;
            out.slice_mut(super::slice3(&dst))
                .assign(&a.slice(super::slice3(&inner)));
        }
        Ok(out.into_raw_vec_and_offset().0)
    }

    /// Phase one of a spilled median: every time step's stored chunks under `full` are fetched
    /// and decoded once (by `strip`, which returns the values of a region in C order) and
    /// spilled as row strips of `plan.file_rows` rows, into a scratch array of time stacks
    /// (removed when dropped).
    fn spill_stacks<S: ValuesOf>(
        &self,
        input: &Arc<Node>,
        full: &[Range<u64>; 3],
        step: u64,
        plan: &super::SpillPlan,
        strip: &StripValues<'_, S>,
        pad: S,
    ) -> Result<super::spill::ScratchArray, ExecError> {
        let n = full[0].end - full[0].start;
        let (h, w) = (full[1].end - full[1].start, full[2].end - full[2].start);
        let file_rows = plan.file_rows;
        let files = h.div_ceil(file_rows);
        let scratch = self.spill.scratch::<S>([n, h, w], [1, file_rows, w])?;
        // Helpers fetch in their own task memo, so only when nothing else in the task reads
        // these sources (else it would fetch them again).
        let helpers = if self.releases_slabs() {
            plan.helpers as usize
        } else {
            1
        };
        let slabs = time_slabs(input, full, step);
        let next_slab = std::sync::atomic::AtomicUsize::new(0);
        let spilled = |bytes: u64| {
            self.stats
                .spilled_bytes
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        };
        let spill_slabs = || -> Result<(), ExecError> {
            loop {
                let k = next_slab.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(slab) = slabs.get(k) else {
                    return Ok(());
                };
                let t0 = slab.start - full[0].start;
                for si in 0..files {
                    self.check_cancelled()?;
                    let mut r = full.clone();
                    r[0] = slab.clone();
                    r[1] = full[1].start + si * file_rows
                        ..(full[1].start + (si + 1) * file_rows).min(full[1].end);
                    let flat = strip(&r)?;
                    let plane = (r[1].end - r[1].start) as usize * w as usize;
                    if flat.len() == plane {
                        spilled(scratch.put_chunk([t0, si, 0], flat, pad)?);
                        continue;
                    }
                    for (t, part) in flat.chunks_exact(plane).enumerate() {
                        let mut chunk = Vec::with_capacity((file_rows * w) as usize);
                        chunk.extend_from_slice(part);
                        spilled(scratch.put_chunk([t0 + t as u64, si, 0], chunk, pad)?);
                    }
                }
                let next = slabs.get(k + 1).filter(|_| helpers == 1).map(|s| {
                    let mut r = full.clone();
                    r[0] = s.clone();
                    r
                });
                self.release_slab(input, next.as_ref());
            }
        };
        run_helpers(helpers, &spill_slabs)?;
        Ok(scratch)
    }
}

/// Fills a strip of rows (a range of rows of the output) with their medians.
type StripMedians<'a, F> = dyn Fn(Range<u64>, &mut [F]) -> Result<(), ExecError> + Sync + 'a;

/// The values of a region in C order (what a spilled median spills).
type StripValues<'a, S> = dyn Fn(&[Range<u64>; 3]) -> Result<Vec<S>, ExecError> + Sync + 'a;

/// The values of a block read back from the scratch store (always in standard layout).
fn contiguous<F>(block: &ArrayD<F>) -> Result<&[F], ExecError> {
    block
        .as_slice()
        .ok_or_else(|| ExecError::Invalid("spilled block is not contiguous".into()))
}

/// Run `f` on the calling thread and `helpers - 1` scoped threads; the first real error wins.
fn run_helpers(
    helpers: usize,
    f: &(dyn Fn() -> Result<(), ExecError> + Sync),
) -> Result<(), ExecError> {
    if helpers <= 1 {
        return f();
    }
    // Helpers work under the policy, and stop with the run, of the task that started them.
    let policy = super::TASK_POLICY.with(|p| p.get());
    let cancel = super::TASK_CANCEL.with(|c| c.borrow().clone());
    let results: Vec<Result<(), ExecError>> = std::thread::scope(|sc| {
        let others: Vec<_> = (1..helpers)
            .map(|_| {
                let cancel = cancel.clone();
                sc.spawn(move || {
                    super::TASK_POLICY.with(|p| p.set(policy));
                    super::TASK_CANCEL.with(|c| *c.borrow_mut() = cancel);
                    f()
                })
            })
            .collect();
        let mut r = vec![f()];
        for h in others {
            r.push(h.join().unwrap_or(Err(ExecError::Cancelled)));
        }
        r
    });
    let mut first = Ok(());
    for r in results {
        match r {
            Err(ExecError::Cancelled) if first.is_ok() => first = Err(ExecError::Cancelled),
            Err(e) if !matches!(e, ExecError::Cancelled) => return Err(e),
            _ => {}
        }
    }
    first
}

/// Pixels whose stacks the small-stack median sorts together (its inner loops run across them,
/// so they vectorise).
const MEDIAN_LANES: usize = 64;
/// Stacks up to this deep are sorted by a network across pixels; deeper ones pixel by pixel.
const MEDIAN_NETWORK_MAX: usize = 32;

/// Nan-median of every pixel of `n` planes laid out one after another (`flat` is
/// `n * dst.len()` values).
fn median_planes<S: Copy, F: Real>(flat: &[S], n: usize, dst: &mut [F], conv: impl Fn(S) -> F) {
    let plane = dst.len();
    if n > MEDIAN_NETWORK_MAX {
        let mut buf = Vec::with_capacity(n);
        for (p, d) in dst.iter_mut().enumerate() {
            buf.clear();
            buf.extend(
                (0..n)
                    .map(|t| conv(flat[t * plane + p]))
                    .filter(|v| !v.is_nan()),
            );
            *d = nan_median(&mut buf);
        }
        return;
    }
    // Per block of pixels: missing values become +inf (they sort last, after every real value,
    // a real +inf included, which equals them), the stacks are sorted by odd-even
    // transposition (branch-free min/max across the block) and each pixel takes the middle of
    // its real values.
    const L: usize = MEDIAN_LANES;
    let mut buf = vec![F::zero(); n * L];
    let mut count = [0u32; L];
    for (b, out) in dst.chunks_mut(L).enumerate() {
        let (p0, m) = (b * L, out.len());
        count[..m].fill(0);
        for t in 0..n {
            let src = &flat[t * plane + p0..t * plane + p0 + m];
            for ((v, &x), c) in buf[t * L..t * L + m].iter_mut().zip(src).zip(&mut count) {
                let x = conv(x);
                let real = !x.is_nan();
                *c += u32::from(real);
                *v = if real { x } else { F::infinity() };
            }
        }
        for pass in 0..n {
            for i in (pass % 2..n.saturating_sub(1)).step_by(2) {
                let (lo, hi) = buf.split_at_mut((i + 1) * L);
                for (a, b) in lo[i * L..i * L + m].iter_mut().zip(&mut hi[..m]) {
                    let (x, y) = (*a, *b);
                    let less = x < y;
                    *a = if less { x } else { y };
                    *b = if less { y } else { x };
                }
            }
        }
        for (l, d) in out.iter_mut().enumerate() {
            let k = count[l] as usize;
            *d = match k {
                0 => F::nan(),
                _ if k % 2 == 1 => buf[k / 2 * L + l],
                _ => F::of_f64((wide(buf[(k / 2 - 1) * L + l]) + wide(buf[k / 2 * L + l])) / 2.0),
            };
        }
    }
}

/// The time-stack bytes a task may hold under `limit` before rechunking through the spill store.
pub(crate) fn stack_cap_for(limit: u64) -> u64 {
    (limit / 8).max(64 << 10)
}

/// Slabs of at most `step` steps along time over `full`, cut at the stored time-chunk
/// boundaries of the input's source (its offset applied), so each stored chunk falls in one
/// slab and helpers that share the slabs never fetch a chunk twice.
fn time_slabs(input: &Arc<Node>, full: &[Range<u64>; 3], step: u64) -> Vec<Range<u64>> {
    fn offset(n: &Arc<Node>) -> Option<u64> {
        match &n.op {
            Op::Source { offset, .. } => Some(offset[0]),
            _ => n.children().into_iter().find_map(offset),
        }
    }
    slabs_at(offset(input).unwrap_or(0), full[0].clone(), step)
}

/// Cut `range` (steps of a node whose step `t` is stored step `t + off`) at multiples of `step`
/// in stored steps.
fn slabs_at(off: u64, range: Range<u64>, step: u64) -> Vec<Range<u64>> {
    let step = step.max(1);
    let mut out = Vec::new();
    let mut s = range.start;
    while s < range.end {
        let e = (((s + off) / step + 1) * step - off).min(range.end);
        out.push(s..e);
        s = e;
    }
    out
}

/// How many steps along `axis` a reduction evaluates at once: one stored chunk's worth.
pub(crate) fn reduce_step(input: &Arc<Node>, axis: usize) -> u64 {
    fn stored(n: &Arc<Node>, axis: usize) -> Option<u64> {
        match &n.op {
            Op::Source { band, .. } => Some(band.chunk_shape()[axis]),
            _ => n.children().into_iter().find_map(|c| stored(c, axis)),
        }
    }
    stored(input, axis).unwrap_or(256).clamp(1, 1024)
}

fn nan_median<F: Real>(v: &mut [F]) -> F {
    if v.is_empty() {
        return F::nan();
    }
    let n = v.len();
    // NaNs were left out, so the order is total.
    v.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if n % 2 == 1 {
        v[n / 2]
    } else {
        F::of_f64((wide(v[n / 2 - 1]) + wide(v[n / 2])) / 2.0)
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

#[cfg(test)]
mod tests {
    use super::{median_planes, slabs_at};

    #[test]
    fn time_slabs_follow_the_stored_time_chunks() {
        // Stored chunks of 2 steps; a selection from step 1 (offset 1) of 11 steps.
        assert_eq!(
            slabs_at(1, 0..11, 2),
            vec![0..1, 1..3, 3..5, 5..7, 7..9, 9..11]
        );
        // Aligned: whole chunks, the last one cut by the range.
        assert_eq!(slabs_at(0, 0..5, 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(slabs_at(4, 2..9, 3), vec![2..5, 5..8, 8..9]);
        assert_eq!(slabs_at(7, 0..3, 1), vec![0..1, 1..2, 2..3]);
        // Every slab lies inside one stored chunk.
        for off in 0..5 {
            for step in 1..5 {
                for s in slabs_at(off, 0..13, step) {
                    assert_eq!((s.start + off) / step, (s.end - 1 + off) / step, "{s:?}");
                }
            }
        }
    }

    /// Median of the non-NaN values by sorting a copy (the textbook definition).
    fn reference(vals: &[f32]) -> f32 {
        let mut v: Vec<f64> = vals
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| x as f64)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f32::NAN,
            k if k % 2 == 1 => v[k / 2] as f32,
            k => ((v[k / 2 - 1] + v[k / 2]) / 2.0) as f32,
        }
    }

    #[test]
    fn median_planes_matches_sorting_each_pixel() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Both kernels (network up to 32 steps, per-pixel sort beyond), planes that are not a
        // multiple of the block, missing values, infinities and ties.
        for n in [1usize, 2, 3, 6, 7, 12, 32, 33, 40] {
            let plane = 131;
            let flat: Vec<f32> = (0..n * plane)
                .map(|_| match next() % 10 {
                    0 | 1 => f32::NAN,
                    2 => f32::INFINITY,
                    3 => f32::NEG_INFINITY,
                    4 => 7.0,
                    _ => (next() % 20_000) as f32 / 7.0 - 1000.0,
                })
                .collect();
            let mut got = vec![0f32; plane];
            median_planes(&flat, n, &mut got, |v| v);
            for p in 0..plane {
                let stack: Vec<f32> = (0..n).map(|t| flat[t * plane + p]).collect();
                let want = reference(&stack);
                assert!(
                    got[p] == want || (got[p].is_nan() && want.is_nan()),
                    "n={n} pixel {p}: {} != {want} for {stack:?}",
                    got[p]
                );
            }
        }
    }
}
