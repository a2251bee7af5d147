//! Running a task in row strips (planned by `exec::strips`): while a strip task runs, its
//! thread reads sources through row readers ([`crate::store::RowRead`]) instead of whole
//! decoded chunks, each stored chunk front to back, keeping only the rows of the current strip.
//! A reader is finished (its chunk's length and checksum verified) as soon as the next strip no
//! longer needs it, and always before the task commits its output.

use super::eval::{lens, Float};
use super::task::slice3;
use super::{ExecError, Session};
use crate::graph::{chunk_pieces, source_chunks, ChunkSource, Node, ReadError};
use crate::store::{Element, RowRead};
use ndarray::{ArrayD, ArrayViewMut3, IxDyn};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One open stored chunk of the current task.
struct Open {
    reader: Box<dyn RowRead>,
    /// What the chunk is (for messages).
    what: String,
    key: String,
    /// The next row the reader gives (rows count across the chunk's planes).
    next: u64,
    /// The rows held in `buf`.
    have: Range<u64>,
    /// Rows as raw bytes (u64 words, so any dtype's values are aligned).
    buf: Vec<u64>,
    row_bytes: usize,
}

/// Open chunks by (source uid, chunk index).
type OpenChunks = HashMap<(usize, [u64; 3]), Open>;

/// Takes each output's strip, in order: (output index, strip region, values).
pub(crate) type StripSink<'a, F> =
    dyn FnMut(usize, &[Range<u64>; 3], ArrayD<F>) -> Result<(), ExecError> + 'a;

thread_local! {
    /// The open chunks of the strip task running on this thread (`None`: not a strip task).
    static ROWS: std::cell::RefCell<Option<OpenChunks>> =
        const { std::cell::RefCell::new(None) };
}

/// Marks the current thread's task as a strip task until dropped (open readers are dropped
/// unverified: the task failed or was cancelled, and commits nothing).
pub(crate) struct StripTask(());

impl StripTask {
    pub(crate) fn begin() -> StripTask {
        ROWS.with(|r| *r.borrow_mut() = Some(HashMap::new()));
        StripTask(())
    }
}

impl Drop for StripTask {
    fn drop(&mut self) {
        let _ = ROWS.try_with(|r| r.borrow_mut().take());
    }
}

/// Whether the current task reads `src` row by row.
pub(crate) fn reads_rows(src: &Arc<dyn ChunkSource>) -> bool {
    src.rows_bytes().is_some() && ROWS.with(|r| r.borrow().is_some())
}

fn read_err(o: &Open, e: impl Into<crate::graph::BoxError>) -> ExecError {
    ExecError::Read(ReadError::new(o.what.clone(), o.key.clone(), e))
}

impl Session {
    /// `region` of a source read row by row (the strip task's counterpart of decoding whole
    /// chunks), as `F` with nodata as NaN.
    pub(crate) fn eval_rows<F: Float>(
        &self,
        src: &Arc<dyn ChunkSource>,
        offset: [u64; 3],
        region: &[Range<u64>; 3],
    ) -> Result<ArrayD<F>, ExecError> {
        let mut out = ArrayD::<F>::from_elem(IxDyn(&lens(region)), F::nan());
        for (idx, inner, dst) in chunk_pieces(&**src, offset, region) {
            let mut view = out
                .slice_mut(slice3(&dst))
                .into_dimensionality::<ndarray::Ix3>()
                .map_err(|e| ExecError::Invalid(e.to_string()))?;
            crate::with_dtype!(src.dtype(), T => self.rows_piece::<T, F>(src, idx, &inner, &mut view))?;
        }
        Ok(out)
    }

    /// Copy the window `inner` of stored chunk `idx` into `view`, reading its rows.
    fn rows_piece<T: Element + bytemuck::Pod, F: Float>(
        &self,
        src: &Arc<dyn ChunkSource>,
        idx: [u64; 3],
        inner: &[Range<u64>; 3],
        view: &mut ArrayViewMut3<'_, F>,
    ) -> Result<(), ExecError> {
        let c = src.chunk_shape();
        let elem = std::mem::size_of::<T>();
        let row_bytes = c[2] as usize * elem;
        // Rows count across planes (a chunk of one time step has one plane).
        let want = inner[0].start * c[1] + inner[1].start..inner[0].start * c[1] + inner[1].end;
        if inner[0].end - inner[0].start != 1 {
            return Err(ExecError::Invalid(format!(
                "a strip reads one time step of chunk {}",
                src.chunk_key(idx)
            )));
        }
        let nd = src.nodata().filter(|v| !v.is_nan()).map(T::from_f64);
        ROWS.with(|rows| -> Result<(), ExecError> {
            let mut rows = rows.borrow_mut();
            let map = rows
                .as_mut()
                .ok_or_else(|| ExecError::Invalid("not a strip task".into()))?;
            let key = (src.uid(), idx);
            if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(key) {
                let reader = src.open_rows(idx)?;
                self.note_counters(src);
                self.stats.chunks_read.fetch_add(1, Ordering::Relaxed);
                slot.insert(Open {
                    reader,
                    what: format!("band '{}'", src.name()),
                    key: src.chunk_key(idx),
                    next: 0,
                    have: 0..0,
                    buf: Vec::new(),
                    row_bytes,
                });
            }
            let o = map.get_mut(&key).expect("inserted above");
            if !(o.have.start <= want.start && want.end <= o.have.end) {
                if want.start < o.next {
                    return Err(read_err(o, "rows read out of order (a planner bug)"));
                }
                let n = (want.end - want.start) as usize;
                let words = (n * o.row_bytes).div_ceil(8).max(o.row_bytes.div_ceil(8));
                if o.buf.len() < words {
                    o.buf.resize(words, 0);
                }
                // Rows before the window are decoded and let go.
                let fit = (o.buf.len() * 8 / o.row_bytes.max(1)).max(1) as u64;
                while o.next < want.start {
                    let k = (want.start - o.next).min(fit) as usize;
                    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut o.buf[..]);
                    let r = o.reader.read(&mut bytes[..k * o.row_bytes]);
                    r.map_err(|e| read_err(o, e))?;
                    o.next += k as u64;
                }
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut o.buf[..]);
                let r = o.reader.read(&mut bytes[..n * o.row_bytes]);
                r.map_err(|e| read_err(o, e))?;
                o.next = want.end;
                o.have = want.clone();
            }
            let bytes: &[u8] = bytemuck::cast_slice(&o.buf[..]);
            let at = (want.start - o.have.start) as usize * o.row_bytes;
            let vals: &[T] = bytemuck::cast_slice(
                &bytes[at..at + (want.end - want.start) as usize * o.row_bytes],
            );
            let (x0, x1) = (inner[2].start as usize, inner[2].end as usize);
            let conv = |v: T| if v.is_missing(nd) { F::nan() } else { F::of(v) };
            for (y, row) in vals.chunks_exact(c[2] as usize).enumerate() {
                let mut dst = view.slice_mut(ndarray::s![0, y, ..]);
                match dst.as_slice_mut() {
                    Some(d) => d
                        .iter_mut()
                        .zip(&row[x0..x1])
                        .for_each(|(d, &v)| *d = conv(v)),
                    None => dst
                        .iter_mut()
                        .zip(&row[x0..x1])
                        .for_each(|(d, &v)| *d = conv(v)),
                }
            }
            Ok(())
        })
    }

    /// After a strip: finish (verify) the readers the `next` strip of `nodes` does not read,
    /// every one at the end of the task.
    pub(crate) fn rows_advance(
        &self,
        nodes: &[&Arc<Node>],
        next: Option<&[Range<u64>; 3]>,
    ) -> Result<(), ExecError> {
        let keep: HashSet<(usize, [u64; 3])> = next
            .map(|r| {
                nodes
                    .iter()
                    .flat_map(|n| source_chunks(n, r))
                    .map(|(s, i)| (s.uid(), i))
                    .collect()
            })
            .unwrap_or_default();
        let done: Vec<Open> = ROWS.with(|rows| {
            let mut rows = rows.borrow_mut();
            let Some(map) = rows.as_mut() else {
                return Vec::new();
            };
            let gone: Vec<_> = map.keys().filter(|k| !keep.contains(k)).copied().collect();
            gone.into_iter().filter_map(|k| map.remove(&k)).collect()
        });
        for o in done {
            let (what, key) = (o.what, o.key);
            o.reader
                .finish()
                .map_err(|e| ExecError::Read(ReadError::new(what, key, e)))?;
        }
        Ok(())
    }

    /// Evaluate every strip of `region` of `nodes` (strips of `rows` rows, plane by plane),
    /// handing each output's strip to `take` in order, then verify every chunk read. The caller
    /// commits its output only after this returns.
    pub(crate) fn run_strips<F: Float>(
        &self,
        nodes: &[&Arc<Node>],
        region: &[Range<u64>; 3],
        rows: u64,
        take: &mut StripSink<'_, F>,
    ) -> Result<(), ExecError> {
        let _task = StripTask::begin();
        let strips = super::strips::strip_regions(region, rows);
        for (k, s) in strips.iter().enumerate() {
            for (i, n) in nodes.iter().enumerate() {
                let v = self.eval::<F>(n, s)?;
                take(i, s, v)?;
            }
            self.rows_advance(nodes, strips.get(k + 1))?;
        }
        Ok(())
    }
}
