//! Medians over time whose stacks do not fit the memory limit: a bounded-memory rechunk
//! (1, Y, X) → (T, y, X) through the session's spill area, then each strip of rows is read
//! back with its whole time stack. Either the task holds its result and shares both phases
//! among helper threads, or it writes its output chunk strip by strip into the chunk encoder.
//! Also the small-stack median kernel every median uses.

use super::eval::{lens, wide, Float};
use super::plan::{reduce_slabs, spill_plan, streamed_plan, SpillPlan};
use super::spill::ScratchArray;
use super::task::{slice3, TASK_CANCEL, TASK_POLICY};
use super::{ExecError, Session};
use crate::graph::{chunk_pieces, input_region, ChunkSource, Node, Op};
use crate::store::{Element, Real, ValuesOf};
use ndarray::{ArrayD, IxDyn};
use std::ops::Range;
use std::sync::Arc;

impl Session {
    /// Median over time when the stacks do not fit: a bounded-memory rechunk (1, Y, X) →
    /// (T, y, X) through a scratch store (see [`Session::spill_stacks`]), then each strip is
    /// read back with its whole time stack. A task this large usually runs alone under its
    /// limit, so both phases are shared among one helper per core (each holding one strip, as
    /// the planner counted).
    pub(crate) fn median_spilled<F: Float>(
        &self,
        input: &Arc<Node>,
        full: &[Range<u64>; 3],
        out_shape: &[usize; 3],
    ) -> Result<ArrayD<F>, ExecError> {
        let (h, w) = (out_shape[1] as u64, out_shape[2] as u64);
        let plan = spill_plan(
            input,
            full,
            h * w * F::DTYPE.size() as u64,
            self.caps(F::DTYPE.size() as u64),
            None,
            !self.releases_slabs(),
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
        self.spilled_stacks::<F>(input, full, &plan, &medians)?;
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
        let plan = streamed_plan(node, region, self.caps(F::DTYPE.size() as u64), 0)
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
        self.spilled_stacks::<F>(input, &full, &plan, &medians)
    }

    /// Spill the time stacks of `input` over `full` (see [`Session::spill_stacks`]), then
    /// call `medians` with a function that fills a strip of rows with their medians. The
    /// stacks keep the stored band's own values when the input is a band of a narrower
    /// integer type (uint16: half the bytes of float32), else the computed floats.
    fn spilled_stacks<F: Float>(
        &self,
        input: &Arc<Node>,
        full: &[Range<u64>; 3],
        plan: &SpillPlan,
        medians: &dyn Fn(&StripMedians<'_, F>) -> Result<(), ExecError>,
    ) -> Result<(), ExecError> {
        let n = full[0].end - full[0].start;
        let w = full[2].end - full[2].start;
        match &input.op {
            Op::Source { src, offset }
                if !src.dtype().is_float() && src.dtype().size() < F::DTYPE.size() =>
            {
                crate::with_dtype!(src.dtype(), T => {
                    let nd = src.nodata().filter(|v| !v.is_nan()).map(T::from_f64);
                    let raw = |r: &[Range<u64>; 3]| self.raw_window::<T>(src, *offset, r);
                    let scratch = self.spill_stacks::<T>(input, full, plan, &raw, T::default())?;
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
                let scratch = self.spill_stacks::<F>(input, full, plan, &eval, F::nan())?;
                medians(&|rows: Range<u64>, dst: &mut [F]| {
                    self.check_cancelled()?;
                    let block = scratch.get::<F>(&[0..n, rows, 0..w])?;
                    median_planes(contiguous(&block)?, n as usize, dst, |v| v);
                    Ok(())
                })
            }
        }
    }

    /// The values of `src` under `r` (offset applied), in C order, as stored.
    fn raw_window<T: ValuesOf>(
        &self,
        src: &Arc<dyn ChunkSource>,
        offset: [u64; 3],
        r: &[Range<u64>; 3],
    ) -> Result<Vec<T>, ExecError> {
        let mut out = ArrayD::<T>::from_elem(IxDyn(&lens(r)), T::default());
        for (idx, inner, dst) in chunk_pieces(&**src, offset, r) {
            let chunk = self.chunk(src, idx)?;
            let a = chunk.as_array::<T>().ok_or_else(|| {
                ExecError::Invalid(format!(
                    "chunk {idx:?} of '{}' is not {:?}",
                    src.name(),
                    T::DTYPE
                ))
            })?;
            out.slice_mut(slice3(&dst)).assign(&a.slice(slice3(&inner)));
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
        plan: &SpillPlan,
        strip: &StripValues<'_, S>,
        pad: S,
    ) -> Result<ScratchArray, ExecError> {
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
        let slabs = reduce_slabs(input, 0, full);
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
    let policy = TASK_POLICY.with(|p| p.get());
    let cancel = TASK_CANCEL.with(|c| c.borrow().clone());
    let results: Vec<Result<(), ExecError>> = std::thread::scope(|sc| {
        let others: Vec<_> = (1..helpers)
            .map(|_| {
                let cancel = cancel.clone();
                sc.spawn(move || {
                    TASK_POLICY.with(|p| p.set(policy));
                    TASK_CANCEL.with(|c| *c.borrow_mut() = cancel);
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
pub(crate) fn median_planes<S: Copy, F: Real>(
    flat: &[S],
    n: usize,
    dst: &mut [F],
    conv: impl Fn(S) -> F,
) {
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

#[cfg(test)]
mod tests {
    use super::median_planes;

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
