//! Test support for the planner and the executor (unit tests only): a synthetic
//! [`ChunkSource`] whose values are a function of their index, and an allocator that measures
//! what each task really allocates, so tests can hold the planner to what the executor does.

use crate::graph::{next_uid, ChunkSource, Node, Op, ReadError};
use crate::store::{DType, RowRead, StoreError, Values};
use ndarray::{ArrayD, Dimension, IxDyn};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A chunked array whose value at `[t, y, x]` is [`Synthetic::value`], `nodata` where
/// [`Synthetic::missing`] says so, of any band dtype, read chunk by chunk.
#[derive(Debug)]
pub(crate) struct Synthetic {
    pub(crate) name: String,
    pub(crate) shape: [u64; 3],
    pub(crate) chunks: [u64; 3],
    pub(crate) dtype: DType,
    pub(crate) nodata: Option<f64>,
    pub(crate) seed: u64,
    /// Whether chunks can be read as streams of rows (as a stored band's can).
    pub(crate) streams: bool,
    uid: usize,
    /// Chunks read so far.
    pub(crate) reads: AtomicU64,
    /// Interrupt this session when the read count reaches `interrupt_at` (0: never).
    interrupt_at: AtomicU64,
    session: std::sync::OnceLock<std::sync::Weak<crate::exec::Session>>,
}

impl Synthetic {
    /// A source whose chunks stream as rows when `streams`.
    pub(crate) fn new(
        name: &str,
        shape: [u64; 3],
        chunks: [u64; 3],
        dtype: DType,
        seed: u64,
        streams: bool,
    ) -> Arc<Synthetic> {
        Arc::new(Synthetic {
            streams,
            name: name.to_string(),
            shape,
            chunks,
            dtype,
            nodata: (!dtype.is_float()).then_some(0.0),
            seed,
            uid: next_uid(),
            reads: AtomicU64::new(0),
            interrupt_at: AtomicU64::new(0),
            session: std::sync::OnceLock::new(),
        })
    }

    /// Interrupt `session` (once) when the `n`-th chunk is read, as a Ctrl-C mid-run would.
    pub(crate) fn interrupt_after(&self, n: u64, session: &Arc<crate::exec::Session>) {
        let _ = self.session.set(Arc::downgrade(session));
        self.interrupt_at.store(n, Ordering::SeqCst);
    }

    /// Whether the pixel is missing (about one in seven).
    pub(crate) fn missing(&self, i: [u64; 3]) -> bool {
        (i[0] * 31 + i[1] * 17 + i[2] * 7 + self.seed).is_multiple_of(7)
    }

    /// The value at `i` as stored (a small positive integer, so every dtype holds it).
    pub(crate) fn stored(&self, i: [u64; 3]) -> f64 {
        if self.missing(i) {
            return self.nodata.unwrap_or(f64::NAN);
        }
        (1 + (i[0] * 13 + i[1] * 5 + i[2] * 3 + self.seed * 11) % 200) as f64
    }

    /// The value at `i` as computations see it (missing → NaN).
    pub(crate) fn value(&self, i: [u64; 3]) -> f64 {
        if self.missing(i) {
            f64::NAN
        } else {
            self.stored(i)
        }
    }

    /// The stored value at chunk `idx`, element `i` of the chunk in C order (fill beyond the
    /// array edge).
    fn at_chunk(&self, idx: [u64; 3], i: u64) -> f64 {
        let c = self.chunks;
        let local = [i / (c[1] * c[2]), i / c[2] % c[1], i % c[2]];
        let g: [u64; 3] = std::array::from_fn(|k| idx[k] * c[k] + local[k]);
        if (0..3).any(|k| g[k] >= self.shape[k]) {
            self.nodata.unwrap_or(f64::NAN)
        } else {
            self.stored(g)
        }
    }

    /// A graph node reading the whole source.
    pub(crate) fn node(self: &Arc<Self>) -> Arc<Node> {
        Node::new(
            Op::Source {
                src: self.clone(),
                offset: [0; 3],
            },
            self.shape,
            [true; 3],
            self.dtype,
        )
    }
}

impl ChunkSource for Synthetic {
    fn name(&self) -> &str {
        &self.name
    }
    fn shape(&self) -> [u64; 3] {
        self.shape
    }
    fn chunk_shape(&self) -> [u64; 3] {
        self.chunks
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn nodata(&self) -> Option<f64> {
        self.nodata
    }
    fn uid(&self) -> usize {
        self.uid
    }
    fn chunk_key(&self, idx: [u64; 3]) -> String {
        format!("{}/c/{}/{}/{}", self.name, idx[0], idx[1], idx[2])
    }
    fn read_chunk(&self, idx: [u64; 3]) -> Result<Arc<Values>, ReadError> {
        if idx
            .iter()
            .zip(self.shape.iter().zip(self.chunks))
            .any(|(&i, (&s, c))| i * c >= s)
        {
            return Err(ReadError::new(
                format!("band '{}'", self.name),
                self.chunk_key(idx),
                "outside the grid",
            ));
        }
        let n = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
        if self
            .interrupt_at
            .compare_exchange(n, 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            if let Some(s) = self.session.get().and_then(|w| w.upgrade()) {
                s.interrupt();
            }
        }
        let c = self.chunks.map(|v| v as usize);
        let fill = self.nodata.unwrap_or(f64::NAN);
        let at = |i: &[usize]| -> f64 {
            let g = [
                idx[0] * self.chunks[0] + i[0] as u64,
                idx[1] * self.chunks[1] + i[1] as u64,
                idx[2] * self.chunks[2] + i[2] as u64,
            ];
            if (0..3).any(|k| g[k] >= self.shape[k]) {
                fill
            } else {
                self.stored(g)
            }
        };
        let v = crate::with_dtype!(self.dtype, T => Values::from(ArrayD::<T>::from_shape_fn(
            IxDyn(&c),
            |i| <T as crate::store::Element>::from_f64(at(i.slice())),
        )));
        Ok(Arc::new(v))
    }
    fn rows_bytes(&self) -> Option<u64> {
        self.streams.then_some(ROWS_BYTES)
    }
    fn open_rows(&self, idx: [u64; 3]) -> Result<Box<dyn RowRead>, ReadError> {
        if !self.streams {
            return Err(ReadError::new(
                "synthetic",
                self.chunk_key(idx),
                "does not stream",
            ));
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(SyntheticRows {
            src: Synthetic {
                name: self.name.clone(),
                uid: self.uid,
                reads: AtomicU64::new(0),
                interrupt_at: AtomicU64::new(0),
                session: std::sync::OnceLock::new(),
                ..*self
            },
            idx,
            pos: 0,
        }))
    }
}

/// What a synthetic row reader claims to hold.
const ROWS_BYTES: u64 = 4 << 10;

/// A synthetic chunk read front to back (values made as they are read).
struct SyntheticRows {
    src: Synthetic,
    idx: [u64; 3],
    /// Elements handed out so far.
    pos: u64,
}

impl RowRead for SyntheticRows {
    fn read(&mut self, dst: &mut [u8]) -> Result<(), StoreError> {
        let elem = self.src.dtype.size();
        let total = self.src.chunks.iter().product::<u64>();
        let n = (dst.len() / elem) as u64;
        if self.pos + n > total {
            return Err(StoreError::Io {
                url: "synthetic".into(),
                key: self.src.chunk_key(self.idx),
                msg: "read past the end of the chunk".into(),
            });
        }
        for (k, out) in dst.chunks_exact_mut(elem).enumerate() {
            let v = self.src.at_chunk(self.idx, self.pos + k as u64);
            crate::with_dtype!(self.src.dtype, T => {
                let t = <T as crate::store::Element>::from_f64(v);
                out.copy_from_slice(bytemuck::bytes_of(&t));
            });
        }
        self.pos += n;
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
    fn memory(&self) -> u64 {
        0
    }
}

// ---------------------------------------------------------------------------------------------
// What tasks really allocate

/// The global allocator of the unit tests: the system allocator, counting the bytes each
/// thread has live (allocated minus freed by that thread) and its high-water mark.
pub(crate) struct CountingAlloc;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
    static UNTRACKED: Cell<u32> = const { Cell::new(0) };
    /// Bytes the current task left in the chunk cache (the cache's share, not the task's).
    static CACHED: Cell<u64> = const { Cell::new(0) };
}

/// The chunk cache kept `bytes` of values the current task decoded.
pub(crate) fn note_cached(bytes: u64) {
    let _ = CACHED.try_with(|c| c.set(c.get() + bytes));
}

/// Leave the allocations of this thread out of its task's measurement until the guard drops:
/// the chunk cache's own bookkeeping belongs to the cache's share of the budget, not to the
/// task that happened to insert into it.
pub(crate) fn untracked() -> impl Drop {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = UNTRACKED.try_with(|u| u.set(u.get() - 1));
        }
    }
    let _ = UNTRACKED.try_with(|u| u.set(u.get() + 1));
    Guard
}

fn note(delta: i64) {
    if UNTRACKED.try_with(|u| u.get() > 0).unwrap_or(false) {
        return;
    }
    // `try_with`: thread-locals may be gone while a thread exits.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + delta;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting only touches
// thread-local cells, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as i64));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// One task's measurement: what it reserved and the most it had allocated at once beyond what
/// its thread held when it started, less what it left in the chunk cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskUse {
    pub(crate) reserved: u64,
    pub(crate) peak: u64,
}

/// Tasks measured, per run id (tests running side by side keep their own).
static USES: Mutex<Vec<(u64, TaskUse)>> = Mutex::new(Vec::new());

thread_local! {
    /// The measurement the current thread's runs go to (0: not measured).
    static RUN: Cell<u64> = const { Cell::new(0) };
}

/// Measure the tasks of runs started on this thread under `id` until the guard drops.
pub(crate) fn measure(id: u64) -> impl Drop {
    struct Guard(u64);
    impl Drop for Guard {
        fn drop(&mut self) {
            RUN.with(|r| r.set(self.0));
        }
    }
    Guard(RUN.with(|r| r.replace(id)))
}

/// The measurement id of runs started on this thread (read by `run_tasks`).
pub(crate) fn current_run() -> u64 {
    RUN.with(|r| r.get())
}

/// Start measuring a task on this thread: returns what the thread has live.
pub(crate) fn task_start() -> i64 {
    let live = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(live));
    CACHED.with(|c| c.set(0));
    live
}

/// End measuring a task started at `mark` that reserved `reserved` bytes, for run `id`.
pub(crate) fn task_end(id: u64, mark: i64, reserved: u64) {
    if id == 0 {
        return;
    }
    // What the task left in the cache is held by the cache's share of the budget.
    let cached = CACHED.with(|c| c.get());
    let peak = ((PEAK.with(|p| p.get()) - mark).max(0) as u64).saturating_sub(cached);
    if let Ok(mut u) = USES.lock() {
        u.push((id, TaskUse { reserved, peak }));
    }
}

/// The tasks measured for run `id` (taken out).
pub(crate) fn take_uses(id: u64) -> Vec<TaskUse> {
    let mut u = USES.lock().unwrap_or_else(|e| e.into_inner());
    let (mine, rest): (Vec<_>, Vec<_>) = u.drain(..).partition(|(i, _)| *i == id);
    *u = rest;
    mine.into_iter().map(|(_, t)| t).collect()
}
