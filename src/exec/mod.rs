//! Execution: a [`Session`] runs chunk tasks on rayon workers inside a memory budget, with a
//! shared cache of decoded stored chunks, cancellation on the first error, spill-to-disk for
//! persisted intermediates, progress and statistics.
//!
//! Every task is a pure function of the stored chunks it reads and writes whole output
//! chunks, so re-running a task (or running it on another machine) gives the same bytes.
//!
//! A median over time whose stacks exceed the budget rechunks through the spill store: each
//! stored chunk is decoded once and spilled as row strips (in its stored type when that is a
//! narrow integer), then strips are read back with their whole stacks. Written to a cube, such
//! a task streams its output chunk strip by strip into the encoder
//! ([`crate::store::ChunkWriter`]) when that is the only way to fit the limit or lets two
//! tasks share it; otherwise it holds its result and shares its phases among helper threads.

mod budget;
mod cache;
mod eval;
mod spill;
mod write;

pub use budget::{Budget, Reservation};
pub use cache::ChunkCache;
pub use spill::{install_interrupt_cleanup, remove_live_spill_dirs, Persisted};

use crate::cube::{format_bytes, BandReader, CubeError, Values};
use crate::graph::{input_region, source_chunks, Node, Op};
use crate::store::{grid_shape, DType, StoreError};
use ndarray::ArrayD;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Errors while planning or running tasks.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The graph cannot be computed (mismatched operands, unknown dimension…).
    #[error("{0}")]
    Invalid(String),
    /// A task needs more memory than the limit allows.
    #[error("--memory-limit {limit} is below what one task needs; use at least {needed} (or smaller --chunks)")]
    MemoryLimit {
        /// The limit, formatted.
        limit: String,
        /// The minimum that would work, formatted.
        needed: String,
    },
    /// A stored chunk could not be read.
    #[error(transparent)]
    Cube(#[from] Box<CubeError>),
    /// A store problem (writing results, spilling).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing an output chunk failed.
    #[error("writing {key}: {msg}")]
    Write {
        /// Key.
        key: String,
        /// Message.
        msg: String,
    },
    /// The output exists.
    #[error("{0} already exists; pass --overwrite to replace it")]
    Exists(String),
    /// Another task failed first.
    #[error("cancelled")]
    Cancelled,
    /// Spill store problem.
    #[error("spill directory {dir}: {msg}")]
    Spill {
        /// Directory.
        dir: String,
        /// Message.
        msg: String,
    },
}

/// How a session runs.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Memory limit in bytes for everything the session tracks.
    pub memory_limit: u64,
    /// No progress bar.
    pub quiet: bool,
    /// Where to spill (default: the system temp dir).
    pub spill_dir: Option<PathBuf>,
    /// Store options for cubes opened in this session (on-disk cache of remote chunks).
    pub store: crate::store::StoreOptions,
}

/// Tune glibc's allocator for chunk work under `limit` (the command line does this; a program
/// using the library may call it once at start). Buffers above an eighth of the limit (4 to
/// 32 MiB) go to mmap and back to the OS when freed, so under a tight limit RSS follows the
/// budget rather than the heap's high-water; under a roomy one chunk-sized buffers are recycled
/// from the heap instead of being page-faulted in afresh by every task (a quarter of the time
/// of a large NDVI).
pub fn tune_allocator(limit: u64) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator (glibc serialises it against allocations).
    unsafe {
        let t = (limit / 8).clamp(4 << 20, 32 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, t as libc::c_int);
        // Setting the threshold also freezes glibc's trim threshold at 128 KiB. Keep up to
        // half the limit (at most 256 MiB) of free heap before giving it back: with less, the
        // frees at the end of each task shrink the heap and every task faults its pages in
        // again (an NDVI under 64 MiB spent 7 s of 17 in page faults with 16 MiB).
        let trim = (limit / 2).clamp(2 * t, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim as libc::c_int);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = limit;
}

/// Total physical memory, from /proc/meminfo (fallback 4 GiB).
pub fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30)
}

impl Default for ExecConfig {
    fn default() -> Self {
        // A quarter of RAM, at most 8 GiB: room for the OS, GDAL and the user's other work.
        ExecConfig {
            threads: 0,
            memory_limit: (total_memory() / 4).min(8 << 30),
            quiet: true,
            spill_dir: None,
            store: Default::default(),
        }
    }
}

/// Counters of one session (what `--stats` writes).
#[derive(Debug, Default)]
pub struct Stats {
    chunks_read: AtomicU64,
    chunks_written: AtomicU64,
    tasks: AtomicU64,
    spilled_bytes: AtomicU64,
}

/// A snapshot of the statistics, as written by `--stats FILE.json`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatsReport {
    /// Stored chunks of band arrays fetched and decoded.
    pub chunks_read: u64,
    /// Encoded bytes fetched.
    pub bytes_read: u64,
    /// Output chunks written.
    pub chunks_written: u64,
    /// Tasks run.
    pub tasks: u64,
    /// Bytes spilled to the scratch store.
    pub spilled_bytes: u64,
    /// The memory budget's high-water mark.
    pub peak_tracked_bytes: u64,
    /// The memory limit.
    pub memory_limit: u64,
    /// Wall time since the session started.
    pub elapsed_s: f64,
}

/// What computing an array will do, told before fetching anything.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explain {
    /// Stored chunks to fetch and decode.
    pub stored_chunks: u64,
    /// Their encoded bytes (from the store listing; absent chunks are fill and cost nothing).
    pub encoded_bytes: u64,
    /// Stored chunks that are absent (all fill).
    pub absent_chunks: u64,
    /// Their decoded bytes.
    pub decoded_bytes: u64,
    /// Requests to the store.
    pub requests: u64,
    /// Output chunks (tasks of the final layer).
    pub output_chunks: u64,
    /// Tasks of the whole graph.
    pub tasks: u64,
    /// Bytes one task holds at most.
    pub task_bytes: u64,
    /// Worker threads.
    pub threads: usize,
    /// Projected peak of tracked memory.
    pub projected_peak_bytes: u64,
    /// The memory limit.
    pub memory_limit: u64,
}

impl std::fmt::Display for Explain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "stored chunks to fetch  {} ({} absent, read as fill)",
            self.stored_chunks, self.absent_chunks
        )?;
        writeln!(
            f,
            "encoded bytes           {}",
            format_bytes(self.encoded_bytes)
        )?;
        writeln!(
            f,
            "decoded bytes           {}",
            format_bytes(self.decoded_bytes)
        )?;
        writeln!(f, "requests                {}", self.requests)?;
        writeln!(f, "output chunks           {}", self.output_chunks)?;
        writeln!(f, "tasks                   {}", self.tasks)?;
        writeln!(
            f,
            "per-task memory         {}",
            format_bytes(self.task_bytes)
        )?;
        writeln!(
            f,
            "projected peak memory   {} with {} threads (limit {})",
            format_bytes(self.projected_peak_bytes),
            self.threads,
            format_bytes(self.memory_limit)
        )
    }
}

/// Executes graphs: thread pool, memory budget, chunk cache, statistics.
pub struct Session {
    config: ExecConfig,
    pool: rayon::ThreadPool,
    budget: Budget,
    cache: ChunkCache,
    stats: Stats,
    started: Instant,
    stores: Mutex<Vec<crate::store::Store>>,
    spill: spill::SpillArea,
}

impl Session {
    /// A new session.
    pub fn new(config: ExecConfig) -> Result<Arc<Session>, ExecError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("chunkcube-{i}"))
            .build()
            .map_err(|e| {
                ExecError::Invalid(format!("cannot start {} threads: {e}", config.threads))
            })?;
        let limit = config.memory_limit;
        Ok(Arc::new(Session {
            spill: spill::SpillArea::new(config.spill_dir.clone()),
            budget: Budget::new(limit),
            // Chained computations reuse decoded chunks; single passes gain nothing from a big cache.
            cache: ChunkCache::new(cache_cap(limit)),
            config,
            pool,
            stats: Stats::default(),
            started: Instant::now(),
            stores: Mutex::new(Vec::new()),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &ExecConfig {
        &self.config
    }
    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
    /// The scratch directory for spilled intermediates, once one was needed.
    pub fn spill_dir(&self) -> Option<PathBuf> {
        self.spill.path()
    }
    /// Forget cached decoded chunks (the next computation fetches again).
    pub fn clear_cache(&self) {
        self.cache.clear();
        self.budget.set_external(0);
    }
    /// The memory budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Statistics so far.
    pub fn stats(&self) -> StatsReport {
        let stores = self.stores.lock().map(|s| s.clone()).unwrap_or_default();
        let bytes_read = stores
            .iter()
            .map(|s| s.counters().snapshot().bytes_read)
            .sum();
        StatsReport {
            chunks_read: self.stats.chunks_read.load(Ordering::Relaxed),
            bytes_read,
            chunks_written: self.stats.chunks_written.load(Ordering::Relaxed),
            tasks: self.stats.tasks.load(Ordering::Relaxed),
            spilled_bytes: self.stats.spilled_bytes.load(Ordering::Relaxed),
            peak_tracked_bytes: self.budget.peak(),
            memory_limit: self.config.memory_limit,
            elapsed_s: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Whether the run the current task belongs to was cancelled (by an error in another of
    /// its tasks). Each run has its own flag, so computations running side by side on one
    /// session never stop each other.
    fn check_cancelled(&self) -> Result<(), ExecError> {
        if TASK_CANCEL.with(|c| {
            c.borrow()
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
        }) {
            Err(ExecError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn note_store(&self, band: &BandReader) {
        if let Ok(mut s) = self.stores.lock() {
            if !s.iter().any(|x| {
                x.url() == band.store().url() && Arc::ptr_eq(x.counters(), band.store().counters())
            }) {
                s.push(band.store().clone());
            }
        }
    }

    /// A decoded stored chunk through the cache (kept there if `keep`), outside any task memo
    /// (for work that uses each chunk once).
    fn fetch_chunk(
        &self,
        band: &Arc<BandReader>,
        idx: [u64; 3],
        keep: bool,
    ) -> Result<Arc<Values>, ExecError> {
        let (v, loaded) = self.cache.get_or_load((band.uid(), idx), keep, || {
            self.note_store(band);
            band.read_chunk(idx)
                .map_err(|e| ExecError::Cube(Box::new(e)))
        })?;
        if loaded {
            self.stats.chunks_read.fetch_add(1, Ordering::Relaxed);
            self.budget.set_external(self.cache.bytes());
        }
        Ok(v)
    }

    /// A decoded stored chunk, through the cache.
    pub(crate) fn chunk(
        &self,
        band: &Arc<BandReader>,
        idx: [u64; 3],
    ) -> Result<Arc<Values>, ExecError> {
        let key = (band.uid(), idx);
        // A task keeps the chunks it fetched until it ends, so an expression naming a band
        // twice (nir - red) / (nir + red) never fetches a chunk twice, however small the cache.
        if let Some(v) = TASK_CHUNKS.with(|m| m.borrow().get(&key).cloned()) {
            return Ok(v);
        }
        let v = self.fetch_chunk(band, idx, TASK_POLICY.with(|p| p.get().admit))?;
        TASK_CHUNKS.with(|m| m.borrow_mut().insert(key, v.clone()));
        Ok(v)
    }

    /// The cache's byte cap (part of the memory limit).
    pub fn cache_cap(&self) -> u64 {
        cache_cap(self.config.memory_limit)
    }

    /// Check, before anything runs, that computing `nodes` in `chunks` (and writing them, if
    /// `writing`; or holding `hold` bytes beside the tasks, such as a result computed into
    /// memory) fits the memory limit; the error states the minimum that works.
    pub fn check_memory(
        &self,
        nodes: &[&Arc<Node>],
        chunks: [u64; 3],
        writing: bool,
        persisting: bool,
        hold: u64,
    ) -> Result<(), ExecError> {
        // Written locally (an object store's planning is checked again when writing).
        self.check_nodes_with(nodes, chunks, writing, persisting, false, hold)
            .map(|_| ())
    }

    /// The most bytes one task computing `region` of `node` holds.
    pub fn task_bytes(&self, node: &Arc<Node>, region: &[Range<u64>; 3]) -> u64 {
        estimate(node, region, self.caps(value_width(&[node])))
    }

    /// What the planner needs to know of this session to size a task.
    pub(crate) fn caps(&self, width: u64) -> Caps {
        Caps {
            stack: self.stack_cap(),
            threads: self.threads() as u64,
            width,
        }
    }

    /// How tasks writing `nodes` to a cube run: their per-task need, and whether a spilled
    /// median streams its chunk (see [`TaskPlan`]); `remote`: the cube is in an object store
    /// (an encoded chunk is held whole for its PUT).
    pub(crate) fn plan_write(
        &self,
        nodes: &[&Arc<Node>],
        chunks: [u64; 3],
        remote: bool,
    ) -> Result<TaskPlan, ExecError> {
        let persisting = nodes.iter().any(|n| has_persisted(n));
        self.check_nodes_with(nodes, chunks, true, persisting, remote, 0)
    }

    /// The per-task plan of `nodes` under this session's limit, or a
    /// [`ExecError::MemoryLimit`] stating the smallest limit under which they run (found by
    /// bisection, since what a task holds can depend on the limit: a median rechunks through
    /// the spill store when its stacks exceed a share of it). `hold`: bytes held beside the
    /// tasks (a result computed into memory); `remote`: written to an object store.
    fn check_nodes_with(
        &self,
        nodes: &[&Arc<Node>],
        chunks: [u64; 3],
        writing: bool,
        persisting: bool,
        remote: bool,
        hold: u64,
    ) -> Result<TaskPlan, ExecError> {
        let limit = self.config.memory_limit;
        // Room for one task beside the decoded-chunk cache and, when persisted results are
        // involved, the persisted chunks kept in memory (each at most cache_cap).
        let slots = if persisting { 2 } else { 1 };
        let threads = self.threads() as u64;
        // What tasks may reserve: the limit less the cache and what is held beside the tasks
        // (a result computed into memory).
        let room = |l: u64| l.saturating_sub(slots * cache_cap(l) + hold);
        let whole_fits = |l: u64| -> Result<bool, ExecError> {
            Ok(need_at(nodes, chunks, writing, l, threads)? <= room(l))
        };
        // A single spilled median written to a cube may stream its chunk instead.
        let streamed_at = |l: u64| -> Option<u64> {
            let [node] = nodes else { return None };
            if !writing {
                return None;
            }
            let first: [Range<u64>; 3] = std::array::from_fn(|i| 0..chunks[i].min(node.shape[i]));
            let caps = Caps {
                stack: eval::stack_cap_for(l),
                threads,
                width: value_width(nodes),
            };
            let held = if remote {
                chunks.iter().product::<u64>() * node.dtype.size() as u64
            } else {
                0
            };
            streamed_plan(node, &first, caps, held).map(|p| p.need)
        };
        let need = need_at(nodes, chunks, writing, limit, threads)?;
        let fits = need <= room(limit);
        if let Some(s) = streamed_at(limit) {
            // Streaming when it is the only way to fit, or lets two tasks share the cores.
            if s < need && s <= room(limit) && (!fits || (threads > 1 && 2 * s <= room(limit))) {
                return Ok(TaskPlan {
                    need: s,
                    streamed: true,
                });
            }
        }
        if fits {
            return Ok(TaskPlan {
                need,
                streamed: false,
            });
        }
        // The smallest limit under which either way fits.
        let any_fits = |l: u64| -> Result<bool, ExecError> {
            Ok(whole_fits(l)? || streamed_at(l).is_some_and(|s| s <= room(l)))
        };
        let mut hi = limit.max(1 << 16);
        while !any_fits(hi)? {
            hi = hi.saturating_mul(2);
            if hi >= 1 << 50 {
                break;
            }
        }
        let mut lo = limit;
        while hi - lo > (hi / 1000).max(1) {
            let mid = lo + (hi - lo) / 2;
            if any_fits(mid)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let min = format_bytes(hi + hi / 100);
        Err(ExecError::MemoryLimit {
            limit: format_bytes(limit),
            needed: if hold > 0 {
                format!("{min} to hold the result in memory; write it to a cube with --out / to_zarr instead")
            } else {
                min
            },
        })
    }

    /// Output chunk regions of a node.
    pub fn regions(
        shape: [u64; 3],
        chunks: [u64; 3],
    ) -> impl Iterator<Item = [Range<u64>; 3]> + Clone {
        let g = grid_shape(shape, chunks);
        (0..g[0]).flat_map(move |t| {
            (0..g[1]).flat_map(move |y| {
                (0..g[2]).map(move |x| {
                    let idx = [t, y, x];
                    std::array::from_fn(|i| {
                        idx[i] * chunks[i]..((idx[i] + 1) * chunks[i]).min(shape[i])
                    })
                })
            })
        })
    }

    /// Run `f` on every output chunk region in parallel, reserving `need` bytes per task,
    /// stopping at the first error.
    pub(crate) fn run_tasks<F>(
        &self,
        nodes: &[&Arc<Node>],
        shape: [u64; 3],
        chunks: [u64; 3],
        need: u64,
        what: &str,
        f: F,
    ) -> Result<(), ExecError>
    where
        F: Fn(&[Range<u64>; 3]) -> Result<(), ExecError> + Sync,
    {
        let cancel = Arc::new(AtomicBool::new(false));
        let regions: Vec<[Range<u64>; 3]> = Session::regions(shape, chunks).collect();
        // Remote stores: announce the stored chunks of the next tasks so their fetches run
        // concurrently ahead of the workers (the store bounds what is in flight).
        let remote = nodes.iter().any(|n| has_remote_source(n));
        let prefetched = AtomicU64::new(0);
        let window = (self.threads() as u64 * 4).max(8);
        let prefetch_upto = |upto: u64| {
            if !remote {
                return;
            }
            {
                let cur = prefetched.load(Ordering::Relaxed);
                let end = upto.min(regions.len() as u64);
                // One worker claims the next stretch of tasks; the others go on computing.
                if cur >= end
                    || prefetched
                        .compare_exchange(cur, end, Ordering::SeqCst, Ordering::Relaxed)
                        .is_err()
                {
                    return;
                }
                // Per band: a sharded band announces byte ranges of its shards.
                let mut by_band: Vec<(Arc<crate::cube::BandReader>, Vec<[u64; 3]>)> = Vec::new();
                for r in &regions[cur as usize..end as usize] {
                    for n in nodes {
                        for (band, idx) in source_chunks(n, r) {
                            match by_band.iter_mut().find(|(b, _)| b.uid() == band.uid()) {
                                Some((_, v)) => v.push(idx),
                                None => by_band.push((band, vec![idx])),
                            }
                        }
                    }
                }
                for (band, idxs) in by_band {
                    band.prefetch(idxs);
                }
            }
        };
        prefetch_upto(window);
        // Per run, so computations from several threads on one session never mix policies.
        let policy = TaskPolicy {
            admit: self.worth_caching(nodes, &regions),
            release_slabs: sole_reduction(nodes),
        };
        let started_tasks = AtomicU64::new(0);
        let pb = crate::progress::bar(regions.len() as u64, what, self.config.quiet);
        let start = Instant::now();
        let bytes0 = self.stats().bytes_read;
        // Keep the first real error: tasks stopped by the cancellation report `Cancelled`.
        let first_err: Mutex<Option<ExecError>> = Mutex::new(None);
        let r = self.pool.install(|| {
            regions.par_iter().try_for_each(|r| {
                if cancel.load(Ordering::Relaxed) {
                    return Err(ExecError::Cancelled);
                }
                let i = started_tasks.fetch_add(1, Ordering::Relaxed);
                prefetch_upto(i + window);
                let _res = self.budget.reserve(need);
                TASK_CHUNKS.with(|m| m.borrow_mut().clear());
                let before = TASK_POLICY.with(|p| p.replace(policy));
                let run_before = TASK_CANCEL.with(|c| c.replace(Some(cancel.clone())));
                let mut out = f(r);
                TASK_CANCEL.with(|c| *c.borrow_mut() = run_before);
                TASK_POLICY.with(|p| p.set(before));
                TASK_CHUNKS.with(|m| m.borrow_mut().clear());
                if let Err(e) = out {
                    cancel.store(true, Ordering::Relaxed);
                    if !matches!(e, ExecError::Cancelled) {
                        if let Ok(mut g) = first_err.lock() {
                            g.get_or_insert(e);
                        }
                    }
                    out = Err(ExecError::Cancelled);
                }
                self.stats.tasks.fetch_add(1, Ordering::Relaxed);
                pb.inc(1);
                if pb.position().is_multiple_of(8) {
                    let s = self.stats();
                    let mbs = (s.bytes_read - bytes0) as f64
                        / 1e6
                        / start.elapsed().as_secs_f64().max(1e-3);
                    pb.set_message(format!(
                        "{mbs:.0} MB/s read, mem {} / {}, spilled {}",
                        format_bytes(self.budget.peak()),
                        format_bytes(self.config.memory_limit),
                        format_bytes(s.spilled_bytes)
                    ));
                }
                out
            })
        });
        pb.finish_and_clear();
        match first_err.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => r,
        }
    }

    /// After a reduction's slab: keep in this thread's task memo only the chunks the `next`
    /// slab of `input` needs, so a walk along time holds one slab, not the whole stack. Only
    /// when the reduction is the sole reader of its sources (else a later part of the task
    /// would fetch them again).
    pub(crate) fn release_slab(&self, input: &Arc<Node>, next: Option<&[Range<u64>; 3]>) {
        if !self.releases_slabs() {
            return;
        }
        let keep: std::collections::HashSet<(usize, [u64; 3])> = next
            .map(|r| {
                source_chunks(input, r)
                    .into_iter()
                    .map(|(b, i)| (b.uid(), i))
                    .collect()
            })
            .unwrap_or_default();
        TASK_CHUNKS.with(|m| m.borrow_mut().retain(|k, _| keep.contains(k)));
    }

    /// Whether slabs may be released (see [`Session::release_slab`]).
    pub(crate) fn releases_slabs(&self) -> bool {
        TASK_POLICY.with(|p| p.get().release_slabs)
    }

    /// Whether caching the decoded chunks of a run over `regions` can pay off: some stored
    /// chunk is read by several tasks, or all of them fit in the cache (so that a following
    /// computation over the same selection finds them). A larger scan that reads each chunk
    /// once would only evict what may be reused, and hold memory for nothing.
    fn worth_caching(&self, nodes: &[&Arc<Node>], regions: &[[Range<u64>; 3]]) -> bool {
        // Counting is linear in the tasks; past this many, keep the default.
        if regions.len() > 100_000 {
            return true;
        }
        let mut seen = std::collections::HashSet::new();
        let (mut reads, mut bytes) = (0usize, 0u64);
        for r in regions {
            let mut task = std::collections::HashSet::new();
            for n in nodes {
                for (band, idx) in source_chunks(n, r) {
                    if task.insert((band.uid(), idx)) {
                        reads += 1;
                        if seen.insert((band.uid(), idx)) {
                            bytes += band.chunk_shape().iter().product::<u64>()
                                * band.dtype().size() as u64;
                        }
                    }
                }
            }
        }
        reads > seen.len() || bytes <= self.cache_cap()
    }

    /// Compute a node into memory, in `chunks`-sized parallel tasks.
    pub fn compute(&self, node: &Arc<Node>, chunks: [u64; 3]) -> Result<Values, ExecError> {
        let shape = node.shape;
        let dims: Vec<usize> = shape.iter().map(|v| *v as usize).collect();
        let result_bytes = shape.iter().product::<u64>() * node.dtype.size() as u64;
        // The tasks, the cache and the whole result must fit together.
        let persisting = has_persisted(node);
        let need = self
            .check_nodes_with(&[node], chunks, false, persisting, false, result_bytes)?
            .need;
        let _hold = self.budget.reserve(result_bytes);
        if let Op::Source { band, offset } = &node.op {
            let fill = band.nodata().unwrap_or(0.0);
            return crate::with_dtype!(node.dtype, T => self
                .compute_source::<T>(node, band, *offset, chunks, need, fill)
                .map(Values::from));
        }
        let out = Mutex::new(Values::filled(node.dtype, &dims, f64::NAN));
        let wide = computes_f64(&[node]);
        self.run_tasks(&[node], shape, chunks, need, "computing", |r| {
            let v = if wide {
                to_dtype(self.eval::<f64>(node, r)?, node.dtype)
            } else {
                to_dtype(self.eval::<f32>(node, r)?, node.dtype)
            };
            out.lock().map_err(|_| ExecError::Cancelled)?.assign(r, &v);
            Ok(())
        })?;
        out.into_inner().map_err(|_| ExecError::Cancelled)
    }

    /// Read a window of a band in its own dtype: every stored chunk under a task is decoded
    /// in parallel and copied straight into the result, each task into its own region.
    fn compute_source<T: crate::cube::ValuesOf>(
        &self,
        node: &Arc<Node>,
        band: &Arc<BandReader>,
        offset: [u64; 3],
        chunks: [u64; 3],
        need: u64,
        fill: f64,
    ) -> Result<ArrayD<T>, ExecError> {
        let dims: Vec<usize> = node.shape.iter().map(|v| *v as usize).collect();
        let mut out = ArrayD::<T>::from_elem(ndarray::IxDyn(&dims), T::from_f64(fill));
        let writer = RegionWriter::new(&mut out);
        self.run_tasks(&[node], node.shape, chunks, need, "computing", |r| {
            // Pieces may be decoded on other workers: they follow this task's policy.
            let keep = TASK_POLICY.with(|p| p.get().admit);
            let copy = |(idx, inner, dst): eval::ChunkPiece| -> Result<(), ExecError> {
                let chunk = self.fetch_chunk(band, idx, keep)?;
                let src = chunk.as_array::<T>().ok_or_else(|| {
                    ExecError::Invalid(format!(
                        "chunk {idx:?} of {} is not {:?}",
                        band.name(),
                        T::DTYPE
                    ))
                })?;
                let to: [Range<u64>; 3] =
                    std::array::from_fn(|i| r[i].start + dst[i].start..r[i].start + dst[i].end);
                // SAFETY: tasks' regions tile the result without overlap, and the pieces of
                // one task are disjoint windows of its region.
                let mut view = unsafe { writer.region(&to) };
                view.assign(&src.slice(slice3(&inner)));
                Ok(())
            };
            let pieces = eval::chunk_pieces(band, offset, r);
            if pieces.len() > 1 {
                pieces.into_par_iter().try_for_each(copy)
            } else {
                pieces.into_iter().try_for_each(copy)
            }
        })?;
        Ok(out)
    }

    /// Explain what computing `node` in `chunks` will fetch and hold (fetches nothing).
    pub fn explain(&self, node: &Arc<Node>, chunks: [u64; 3]) -> Explain {
        let full: [Range<u64>; 3] = std::array::from_fn(|i| 0..node.shape[i]);
        let needed = source_chunks(node, &full);
        let mut sizes: HashMap<String, HashMap<String, u64>> = HashMap::new();
        let (mut enc, mut dec, mut absent) = (0u64, 0u64, 0u64);
        for (band, idx) in &needed {
            let url = format!("{}#{}", band.store().url(), band.name());
            let map = sizes.entry(url).or_insert_with(|| {
                band.store()
                    .list_sizes(&format!("{}/", band.name()))
                    .map(|v| v.into_iter().collect())
                    .unwrap_or_default()
            });
            match map.get(&band.chunk_key(*idx)) {
                Some(n) => enc += n,
                None => absent += 1,
            }
            dec += band.chunk_shape().iter().product::<u64>() * band.dtype().size() as u64;
        }
        let stored = needed.len() as u64;
        let output_chunks: u64 = grid_shape(node.shape, chunks).iter().product();
        let first: [Range<u64>; 3] = std::array::from_fn(|i| 0..chunks[i].min(node.shape[i]));
        let task_bytes = estimate(node, &first, self.caps(value_width(&[node])));
        let threads = self.threads();
        let conc = (threads as u64).min(output_chunks).max(1);
        let result = if matches!(node.op, Op::Source { .. }) || output_chunks > 0 {
            node.shape.iter().product::<u64>() * node.dtype.size() as u64
        } else {
            0
        };
        let projected = (conc * task_bytes + (self.config.memory_limit / 4).min(dec) + result)
            .min(self.config.memory_limit.max(task_bytes));
        Explain {
            stored_chunks: stored,
            encoded_bytes: enc,
            absent_chunks: absent,
            decoded_bytes: dec,
            requests: stored - absent,
            output_chunks,
            tasks: crate::graph::count_tasks(node, chunks),
            task_bytes,
            threads,
            projected_peak_bytes: projected,
            memory_limit: self.config.memory_limit,
        }
    }

    /// Materialise a node once (memory within budget, the rest spilled) and return a node
    /// that reads the persisted chunks.
    pub fn persist(&self, node: &Arc<Node>, chunks: [u64; 3]) -> Result<Arc<Node>, ExecError> {
        if matches!(node.op, Op::Persisted { .. }) {
            return Ok(node.clone());
        }
        let need = self
            .check_nodes_with(&[node], chunks, false, has_persisted(node), false, 0)?
            .need;
        // Keep in memory only what leaves room for the cache and for later tasks (half of the
        // rest); spill everything else.
        let room = self
            .config
            .memory_limit
            .saturating_sub(self.cache_cap() + need * self.threads() as u64);
        let wide = computes_f64(&[node]);
        let p = Arc::new(Persisted::new(
            &self.spill,
            node.shape,
            chunks,
            if wide { DType::F64 } else { DType::F32 },
            (room / 2).min(self.cache_cap()),
        )?);
        // What stays in memory is held by the session, inside the budget's accounting.
        let keep = |bytes: u64, spilled: u64| {
            self.budget.add_held(bytes - spilled);
            self.stats
                .spilled_bytes
                .fetch_add(spilled, Ordering::Relaxed);
        };
        self.run_tasks(&[node], node.shape, chunks, need, "persisting", |r| {
            if wide {
                let a = self.eval::<f64>(node, r)?;
                let bytes = (a.len() * 8) as u64;
                keep(bytes, p.put(r, a)?);
            } else {
                let a = self.eval::<f32>(node, r)?;
                let bytes = (a.len() * 4) as u64;
                keep(bytes, p.put(r, a)?);
            }
            Ok(())
        })?;
        Ok(Node::new(
            Op::Persisted {
                data: p,
                offset: [0; 3],
            },
            node.shape,
            node.present,
            node.dtype,
        ))
    }
}

/// How the tasks of a run are sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskPlan {
    /// Bytes each task reserves.
    pub need: u64,
    /// Whether a spilled median writes its chunk strip by strip (`Session::median_streamed`).
    pub streamed: bool,
}

/// How a median over time too large for memory rechunks through the spill store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpillPlan {
    /// Rows of a strip whose time stacks one helper holds while taking medians.
    pub rows: u64,
    /// Rows of a scratch file (whole strips; fewer, larger files).
    pub file_rows: u64,
    /// Threads sharing the work of the task.
    pub helpers: u64,
    /// The task's peak bytes.
    pub need: u64,
}

/// Plan the spilled median of `input` over `full` (time along axis 0, `step` steps a slab,
/// `out` bytes of result). Spilling holds, per helper, one file strip of one slab with the
/// stored chunks under it; taking medians holds the result and `caps.stack` of strips. Phase
/// one runs on every core only when that does not raise the task's peak.
///
/// `streamed` plans a task that writes its chunk strip by strip on one thread (holding, besides
/// one strip of stacks and of medians, these bytes for the chunk writer) instead of holding
/// the result.
pub(crate) fn spill_plan(
    input: &Arc<Node>,
    full: &[Range<u64>; 3],
    step: u64,
    out: u64,
    caps: Caps,
    streamed: Option<u64>,
) -> SpillPlan {
    let n = full[0].end - full[0].start;
    let h = full[1].end - full[1].start;
    let w = (full[2].end - full[2].start).max(1);
    let threads = if streamed.is_some() {
        1
    } else {
        caps.threads.max(1)
    };
    let rows = (caps.stack / (threads * n.max(1) * w * caps.width)).clamp(1, h.max(1));
    // About 2 MiB a file, within one helper's share of the stack.
    let file_bytes = (2u64 << 20).min(caps.stack / threads);
    let file_rows = (rows * (file_bytes / (rows * w * caps.width)).max(1)).min(h.max(1));
    let mut strip = full.clone();
    strip[0] = full[0].start..(full[0].start + step).min(full[0].end);
    strip[1] = full[1].start..full[1].start + file_rows;
    let px: u64 = strip.iter().map(|r| r.end - r.start).product();
    // A slab of several steps is split per step into a copy; one step is spilled as is.
    let one = estimate(input, &strip, caps)
        + if step > 1 {
            px / step.max(1) * caps.width
        } else {
            0
        };
    let medians = match streamed {
        // One strip of stacks, its medians, and the chunk writer.
        Some(writer) => n * rows * w * caps.width + rows * w * caps.width + writer,
        None => out + caps.stack,
    };
    let helpers = if threads * one <= medians { threads } else { 1 };
    SpillPlan {
        rows,
        file_rows,
        helpers,
        need: (helpers * one).max(medians),
    }
}

/// The plan of writing `region` of `node` strip by strip (see `Session::median_streamed`), if
/// `node` is a median over time whose stacks spill. `held` is what the chunk writer holds
/// besides its codec state (the encoded chunk, when the store is not local).
pub(crate) fn streamed_plan(
    node: &Arc<Node>,
    region: &[Range<u64>; 3],
    caps: Caps,
    held: u64,
) -> Option<SpillPlan> {
    let Op::Reduce {
        op, axis: 0, input, ..
    } = &node.op
    else {
        return None;
    };
    if !node.dtype.is_float() {
        return None;
    }
    let full = input_region(node, input, region);
    let px = |r: &[Range<u64>; 3]| r.iter().map(|r| r.end - r.start).product::<u64>();
    let spills = op.needs_stack()
        && px(&full) * caps.width > caps.stack
        && region[1].end - region[1].start > 1;
    if !spills {
        return None;
    }
    let out = px(region) * caps.width;
    let writer = crate::store::encode::writer_bytes(px(region) * node.dtype.size() as u64) + held;
    Some(spill_plan(
        input,
        &full,
        eval::reduce_step(input, 0),
        out,
        caps,
        Some(writer),
    ))
}

/// A 3-D result that parallel tasks fill without a lock, each through a view of its own
/// region (regions never overlap; the caller promises that when it asks for a view).
struct RegionWriter<'a, T> {
    ptr: *mut T,
    shape: [usize; 3],
    // The array stays mutably borrowed while the writer lives.
    _array: std::marker::PhantomData<&'a mut ArrayD<T>>,
}

// SAFETY: the writer only hands out views of disjoint regions (see `region`), so sharing it
// between threads is sharing disjoint `&mut` slices of one array.
unsafe impl<T: Send> Sync for RegionWriter<'_, T> {}
unsafe impl<T: Send> Send for RegionWriter<'_, T> {}

impl<'a, T> RegionWriter<'a, T> {
    /// Write into `a` (3-D, standard layout).
    fn new(a: &'a mut ArrayD<T>) -> RegionWriter<'a, T> {
        let sh = a.shape();
        debug_assert!(sh.len() == 3 && a.is_standard_layout());
        RegionWriter {
            shape: [sh[0], sh[1], sh[2]],
            ptr: a.as_mut_ptr(),
            _array: std::marker::PhantomData,
        }
    }

    /// A mutable view of region `r`.
    ///
    /// # Safety
    /// No two views alive at the same time may overlap.
    unsafe fn region(&self, r: &[Range<u64>; 3]) -> ndarray::ArrayViewMut3<'_, T> {
        // SAFETY: `ptr` and `shape` describe the live, standard-layout array borrowed in `new`;
        // the caller guarantees the region is not aliased.
        unsafe {
            let raw = ndarray::RawArrayViewMut::from_shape_ptr(self.shape, self.ptr);
            raw.slice_move(slice3(r)).deref_into_view_mut()
        }
    }
}

/// An ndarray slice of a 3-D window.
fn slice3(
    r: &[Range<u64>; 3],
) -> ndarray::SliceInfo<[ndarray::SliceInfoElem; 3], ndarray::Ix3, ndarray::Ix3> {
    let u = |i: usize| r[i].start as usize..r[i].end as usize;
    ndarray::s![u(0), u(1), u(2)]
}

/// What sizing a task depends on besides the graph.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// The time-stack bytes a task may hold before rechunking through the spill store.
    pub stack: u64,
    /// Worker threads (a spilled rechunk uses as many helpers).
    pub threads: u64,
    /// Bytes of one value in flight: 4 (float32), or 8 when the graph computes in float64.
    pub width: u64,
}

/// Decoded chunks by (band uid, chunk index).
type TaskChunks = HashMap<(usize, [u64; 3]), Arc<Values>>;

/// What the task running on this thread may do with the chunks it reads (set per run).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskPolicy {
    /// Whether decoded chunks are worth keeping in the cache (see `worth_caching`).
    pub admit: bool,
    /// Whether a reduction may let go of each slab's chunks once past it (its sources are
    /// read by nothing else in the task).
    pub release_slabs: bool,
}

thread_local! {
    /// The current task's policy; outside a run: cache everything, release nothing.
    pub(crate) static TASK_POLICY: std::cell::Cell<TaskPolicy> =
        const { std::cell::Cell::new(TaskPolicy { admit: true, release_slabs: false }) };
    /// The cancellation flag of the run the current task belongs to (see `check_cancelled`).
    pub(crate) static TASK_CANCEL: std::cell::RefCell<Option<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
    /// The decoded chunks the current task holds (cleared at the start and end of each task).
    static TASK_CHUNKS: std::cell::RefCell<TaskChunks> = std::cell::RefCell::new(HashMap::new());
}

/// The decoded-chunk cache's share of a memory limit: an eighth, at most 64 MiB (single passes
/// gain nothing from more; chained computations reuse what fits).
fn cache_cap(limit: u64) -> u64 {
    (limit / 8).min(64 << 20)
}

/// What one task of `nodes` (computed together per output chunk, and written if `writing`)
/// holds at its peak under a memory limit of `limit`.
fn need_at(
    nodes: &[&Arc<Node>],
    chunks: [u64; 3],
    writing: bool,
    limit: u64,
    threads: u64,
) -> Result<u64, ExecError> {
    let mut need = 0;
    for node in nodes {
        if let Some(m) = node.first_error() {
            return Err(ExecError::Invalid(m));
        }
        let first: [Range<u64>; 3] = std::array::from_fn(|i| 0..chunks[i].min(node.shape[i]));
        let caps = Caps {
            stack: eval::stack_cap_for(limit),
            threads,
            width: value_width(&[node]),
        };
        need += estimate(node, &first, caps);
        if writing {
            // The compressed output chunk (the result array itself becomes the encoder input).
            need += chunks.iter().product::<u64>() * node.dtype.size() as u64;
        }
    }
    Ok(need)
}

/// Whether every source the task reads lies under one single reduction (so nothing but that
/// reduction ever asks for its chunks).
fn sole_reduction(nodes: &[&Arc<Node>]) -> bool {
    // (reductions, sources outside any reduction)
    fn walk(n: &Arc<Node>, under: bool) -> (usize, usize) {
        match &n.op {
            Op::Source { .. } => (0, usize::from(!under)),
            Op::Reduce { input, .. } => {
                let (r, s) = walk(input, true);
                (r + 1, s)
            }
            _ => n.children().into_iter().fold((0, 0), |(r, s), c| {
                let (r2, s2) = walk(c, under);
                (r + r2, s + s2)
            }),
        }
    }
    let (r, s) = nodes.iter().fold((0, 0), |(r, s), n| {
        let (r2, s2) = walk(n, false);
        (r + r2, s + s2)
    });
    r == 1 && s == 0
}

/// Whether a graph computes in float64: some node of it asks for float64 (a cast, a float64
/// band). Everything else computes in float32.
pub(crate) fn computes_f64(nodes: &[&Arc<Node>]) -> bool {
    fn any(n: &Arc<Node>) -> bool {
        n.dtype == DType::F64 || n.children().into_iter().any(any)
    }
    nodes.iter().any(|n| any(n))
}

/// Bytes of one value in flight for `nodes`.
fn value_width(nodes: &[&Arc<Node>]) -> u64 {
    if computes_f64(nodes) {
        8
    } else {
        4
    }
}

/// Whether a graph reads persisted results.
fn has_persisted(n: &Arc<Node>) -> bool {
    matches!(n.op, Op::Persisted { .. }) || n.children().into_iter().any(has_persisted)
}

/// Whether a graph reads from a remote store.
fn has_remote_source(n: &Arc<Node>) -> bool {
    match &n.op {
        Op::Source { band, .. } => band.store().is_remote(),
        _ => n.children().into_iter().any(has_remote_source),
    }
}

/// Convert results computed in `F` to the node's dtype (casts already rounded and saturated).
fn to_dtype<F: eval::Float>(a: ArrayD<F>, d: DType) -> Values {
    if d == F::DTYPE {
        return F::wrap(a);
    }
    crate::with_dtype!(d, T => Values::from(a.mapv(|v| <T as crate::store::Element>::from_f64(<F as crate::store::Element>::to_f64(v)))))
}

/// The bytes a task computing `region` of `node` holds at its peak. Evaluation is depth-first:
/// a binary op holds its left result while it computes the right one and then works in place,
/// so the peak is `max(left, left_result + right)`, not the sum of every node.
fn estimate(node: &Arc<Node>, region: &[Range<u64>; 3], caps: Caps) -> u64 {
    let px = |r: &[Range<u64>; 3]| r.iter().map(|r| r.end - r.start).product::<u64>();
    let out = px(region) * caps.width;
    let est = |c: &Arc<Node>| estimate(c, &input_region(node, c, region), caps);
    match &node.op {
        Op::Const(_) | Op::Invalid(_) => 4,
        Op::Persisted { .. } => out,
        Op::Source { band, offset } => {
            // The decoded stored chunks under the region, and the float32 result.
            let c = band.chunk_shape();
            let n = eval::chunk_pieces(band, *offset, region).len() as u64;
            n * c.iter().product::<u64>() * band.dtype().size() as u64 + out
        }
        Op::Unary(_, a) | Op::Clip(a, _, _) | Op::Cast(_, a) => est(a),
        Op::Binary(_, a, b) => est(a).max(out + est(b)),
        Op::Where(c, a, b) => est(c).max(out + est(a)).max(2 * out + est(b)) + out,
        Op::Reduce {
            op, axis, input, ..
        } => {
            let full = input_region(node, input, region);
            let mut slab = full.clone();
            let step = 1u64.max(match &input.op {
                Op::Source { band, .. } => band.chunk_shape()[*axis],
                _ => 1,
            });
            slab[*axis] = full[*axis].start..(full[*axis].start + step).min(full[*axis].end);
            let child = estimate(input, &slab, caps);
            if op.needs_stack() {
                let stack = px(&full) * caps.width;
                if stack > caps.stack && *axis == 0 && full[1].end - full[1].start > 1 {
                    spill_plan(input, &full, step, out, caps, None).need
                } else {
                    child + stack + out
                }
            } else {
                // Streaming: a count (u32) per pixel, and a sum (f64), sum and sum of squares,
                // min or max, as the reduction needs.
                child + px(region) * op.state_bytes() + out
            }
        }
    }
}
