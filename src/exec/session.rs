//! The [`Session`]: worker threads, the memory budget, the decoded-chunk cache, the spill
//! area and the statistics, shared by every computation run in it; computing into memory,
//! persisting intermediates, and explaining a computation before running it.

use super::budget::Budget;
use super::cache::ChunkCache;
use super::eval::Float;
use super::path::{task_path, TaskPath};
use super::plan::{cache_cap, computes_f64, plan_tasks, stack_cap, Caps, Demand, TaskPlan};
use super::spill::{Persisted, SpillArea};
use super::stats::{Explain, Stats, StatsReport};
use super::task::{slice3, RegionWriter, TASK_POLICY};
use super::{ExecConfig, ExecError};
use crate::graph::{
    chunk_bytes, chunk_pieces, group_by_source, source_chunks, ChunkPiece, ChunkSource, Node, Op,
    ReadCost,
};
use crate::store::{grid_shape, DType, IoCounters, Values, ValuesOf};
use ndarray::ArrayD;
use rayon::prelude::*;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Executes graphs: thread pool, memory budget, chunk cache, statistics.
pub struct Session {
    pub(crate) config: ExecConfig,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) budget: Budget,
    cache: ChunkCache,
    pub(crate) stats: Stats,
    started: Instant,
    counters: Mutex<Vec<Arc<IoCounters>>>,
    /// The I/O counters of the cubes written.
    written: Mutex<Vec<Arc<IoCounters>>>,
    pub(crate) spill: SpillArea,
    /// Bumped by [`Session::interrupt`]: runs started before a bump stop.
    pub(crate) interrupts: Arc<AtomicU64>,
}

impl Session {
    /// A new session.
    pub fn new(config: ExecConfig) -> Result<Arc<Session>, ExecError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("chunkcube-{i}"))
            // Evaluation recurses over the graph (at most `MAX_GRAPH_DEPTH` deep from the
            // CLI): room for it, reserved as address space, touched only as used.
            .stack_size(16 << 20)
            .build()
            .map_err(|e| {
                ExecError::Invalid(format!("cannot start {} threads: {e}", config.threads))
            })?;
        let limit = config.memory_limit;
        let s = Arc::new(Session {
            spill: SpillArea::new(config.spill_dir.clone()),
            budget: Budget::new(limit, cache_cap(limit)),
            // Chained computations reuse decoded chunks; single passes gain nothing from a big cache.
            cache: ChunkCache::new(cache_cap(limit)),
            config,
            pool,
            stats: Stats::default(),
            started: Instant::now(),
            counters: Mutex::new(Vec::new()),
            interrupts: Arc::new(AtomicU64::new(0)),
            written: Mutex::new(Vec::new()),
        });
        if let Some(live) = &s.config.live {
            live.set_workers(s.threads());
            // Weak: the status outlives the session and must not keep it (and its threads) alive.
            let weak = Arc::downgrade(&s);
            live.set_sampler(move |g| {
                if let Some(s) = weak.upgrade() {
                    s.fill_gauges(g);
                }
            });
        }
        Ok(s)
    }

    /// Copy the numbers a watcher shows into `g`.
    fn fill_gauges(&self, g: &crate::progress::live::Gauges) {
        let r = self.stats();
        let set = |a: &std::sync::atomic::AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&g.bytes_read, r.bytes_read);
        set(&g.bytes_written, r.bytes_written);
        set(&g.memory_in_use, self.budget.in_use());
        set(&g.memory_limit, r.memory_limit);
        set(&g.cache_bytes, self.cache.bytes());
        set(&g.spilled_bytes, r.spilled_bytes);
        set(&g.peak_bytes, r.peak_tracked_bytes);
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

    /// Stop every computation running in this session now (tasks that started finish; no
    /// new one starts); they fail with [`ExecError::Interrupted`]. Computations started
    /// afterwards run normally. Safe to call from any thread (a Ctrl-C handler, a notebook).
    pub fn interrupt(&self) {
        self.interrupts.fetch_add(1, Ordering::SeqCst);
    }

    /// Tasks done and planned so far (poll it to show progress from another thread).
    pub fn progress(&self) -> super::Progress {
        super::Progress {
            done: self.stats.tasks.load(Ordering::Relaxed),
            planned: self.stats.tasks_planned.load(Ordering::Relaxed),
        }
    }

    /// Statistics so far.
    pub fn stats(&self) -> StatsReport {
        let counters = self.counters.lock().map(|s| s.clone()).unwrap_or_default();
        let bytes_read = counters.iter().map(|c| c.snapshot().bytes_read).sum();
        let written = self.written.lock().map(|s| s.clone()).unwrap_or_default();
        let bytes_written = written.iter().map(|c| c.snapshot().bytes_written).sum();
        StatsReport {
            chunks_read: self.stats.chunks_read.load(Ordering::Relaxed),
            bytes_read,
            chunks_written: self.stats.chunks_written.load(Ordering::Relaxed),
            bytes_written,
            tasks: self.stats.tasks.load(Ordering::Relaxed),
            spilled_bytes: self.stats.spilled_bytes.load(Ordering::Relaxed),
            peak_tracked_bytes: self.budget.peak(),
            memory_limit: self.config.memory_limit,
            elapsed_s: self.started.elapsed().as_secs_f64(),
        }
    }

    /// A decoded chunk through the cache (kept there if `keep` and the source is worth
    /// caching), outside any task memo (for work that uses each chunk once).
    pub(crate) fn fetch_chunk(
        &self,
        src: &Arc<dyn ChunkSource>,
        idx: [u64; 3],
        keep: bool,
    ) -> Result<Arc<Values>, ExecError> {
        // Persisted chunks are held by their owner already, or read back from local spill.
        let keep = keep && !src.is_persisted();
        let (v, loaded) = self.cache.get_or_load((src.uid(), idx), keep, || {
            self.note_counters(src);
            src.read_chunk(idx)
        })?;
        if loaded && !src.is_persisted() {
            self.stats.chunks_read.fetch_add(1, Ordering::Relaxed);
            self.budget.set_external(self.cache.bytes());
        }
        Ok(v)
    }

    /// Remember the I/O counters of a cube being written (its bytes written are in the
    /// statistics).
    pub(crate) fn note_written(&self, c: &Arc<IoCounters>) {
        if let Ok(mut all) = self.written.lock() {
            if !all.iter().any(|x| Arc::ptr_eq(x, c)) {
                all.push(c.clone());
            }
        }
    }

    /// Remember the I/O counters of a source's store (its bytes read are in the statistics).
    pub(crate) fn note_counters(&self, src: &Arc<dyn ChunkSource>) {
        let Some(c) = src.counters() else { return };
        if let Ok(mut all) = self.counters.lock() {
            if !all.iter().any(|x| Arc::ptr_eq(x, &c)) {
                all.push(c);
            }
        }
    }

    /// The plan of computing `nodes` in `chunks` under this session's limit and threads.
    pub(crate) fn plan(
        &self,
        nodes: &[&Arc<Node>],
        chunks: [u64; 3],
        demand: Demand,
    ) -> Result<TaskPlan, ExecError> {
        plan_tasks(
            nodes,
            chunks,
            self.config.memory_limit,
            self.threads() as u64,
            demand,
        )
    }

    /// Check, before anything runs, that computing `nodes` in `chunks` fits the memory limit:
    /// written to a local cube if `writing`, with results `persisting` beside the tasks, or
    /// with `hold` bytes held beside them (a result computed into memory). The error states
    /// the minimum that works.
    pub fn check_memory(
        &self,
        nodes: &[&Arc<Node>],
        chunks: [u64; 3],
        writing: bool,
        persisting: bool,
        hold: u64,
    ) -> Result<(), ExecError> {
        let demand = Demand {
            writing,
            remote: false,
            hold,
            persisting,
            strips: true,
        };
        self.plan(nodes, chunks, demand).map(|_| ())
    }

    /// What the planner needs to know of this session to size a task computed in `width`-byte
    /// values.
    /// Inside a task, the stack cap is its plan's.
    pub(crate) fn caps(&self, width: u64) -> Caps {
        let planned = TASK_POLICY.with(|p| p.get().stack);
        Caps {
            stack: if planned > 0 {
                planned
            } else {
                stack_cap(self.config.memory_limit)
            },
            threads: self.threads() as u64,
            width,
        }
    }
}

impl Session {
    /// Compute a node into memory, in `chunks`-sized parallel tasks.
    pub fn compute(&self, node: &Arc<Node>, chunks: [u64; 3]) -> Result<Values, ExecError> {
        let shape = node.shape;
        let dims: Vec<usize> = shape.iter().map(|v| *v as usize).collect();
        let result_bytes = shape.iter().product::<u64>() * node.dtype.size() as u64;
        // The tasks, the cache and the whole result must fit together.
        let demand = Demand {
            hold: result_bytes,
            strips: true,
            ..Demand::default()
        };
        let plan = self.plan(&[node], chunks, demand)?;
        let _hold = self.budget.reserve(result_bytes);
        if let Op::Source { src, offset } = &node.op {
            let fill = src.nodata().unwrap_or(0.0);
            return crate::with_dtype!(node.dtype, T => self
                .compute_source::<T>(node, src, *offset, chunks, plan, fill)
                .map(Values::from));
        }
        let out = Mutex::new(Values::filled(node.dtype, &dims, f64::NAN));
        let wide = computes_f64(&[node]);
        let caps = plan.caps(self.threads(), &[node]);
        self.run_tasks(&[node], shape, chunks, plan, "computing", |r| {
            if let TaskPath::Strips(rows) = task_path(&[node], r, chunks, caps, demand, plan) {
                // Each strip goes straight into the result (a failed task fails the whole
                // computation, so no half result is ever returned).
                let assign = |s: &[Range<u64>; 3], v: Values| -> Result<(), ExecError> {
                    out.lock().map_err(|_| ExecError::Cancelled)?.assign(s, &v);
                    Ok(())
                };
                return if wide {
                    self.run_strips::<f64>(&[node], r, rows, &mut |_, s, v| {
                        assign(s, to_dtype(v, node.dtype))
                    })
                } else {
                    self.run_strips::<f32>(&[node], r, rows, &mut |_, s, v| {
                        assign(s, to_dtype(v, node.dtype))
                    })
                };
            }
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
    fn compute_source<T: ValuesOf>(
        &self,
        node: &Arc<Node>,
        src: &Arc<dyn ChunkSource>,
        offset: [u64; 3],
        chunks: [u64; 3],
        plan: TaskPlan,
        fill: f64,
    ) -> Result<ArrayD<T>, ExecError> {
        let dims: Vec<usize> = node.shape.iter().map(|v| *v as usize).collect();
        // Every value is written below (the tasks tile the result, their pieces tile each task,
        // absent chunks arrive as fill), so the result starts as zeroed pages the kernel hands
        // out on first touch (calloc) rather than a pass writing the fill value. That first
        // touch is what a full-band read pays beyond decoding (perf: 22% of its samples are
        // page faults under copy_window, the copy itself 3%): 50-55 ms of CPU for a 134 MB
        // result against ~160 ms decoding its chunks, so no reader handing back a fresh
        // buffer reaches the decode-only bound here. MADV_POPULATE_WRITE does not make the
        // faults cheaper. Transparent huge pages (madvise on the result) were measured again
        // and left out: a huge page freed moments ago faults in 0.1 ms per 2 MiB (the read
        // loop of examples/window_latency then ran at 0.98-1.01x the decode bound instead of
        // 0.76-0.83x), but this VM reports free 2 MiB blocks to its host (Firecracker,
        // page_reporting_order 9) and one left free a few seconds costs ~10 ms to fault:
        // a lone full read took 650-735 ms instead of 190-420, as a session reading now and
        // then would. Faulting the huge pages one by one and falling back to 4 KiB at the
        // first slow one (on the thread's CPU clock) kept lone reads as they are but gained
        // nothing in the loop: a freed 4 KiB-backed result does not come back as warm huge
        // pages, only the previous read's huge pages were fast.
        let _ = fill;
        let mut out = ArrayD::<T>::from_elem(ndarray::IxDyn(&dims), T::default());
        let writer = RegionWriter::new(&mut out);
        self.run_tasks(&[node], node.shape, chunks, plan, "computing", |r| {
            // Pieces may be decoded on other workers: they follow this task's policy.
            let keep = TASK_POLICY.with(|p| p.get().admit);
            let copy = |(idx, inner, dst): ChunkPiece| -> Result<(), ExecError> {
                let chunk = self.fetch_chunk(src, idx, keep)?;
                let values = chunk.as_array::<T>().ok_or_else(|| {
                    ExecError::Invalid(format!(
                        "chunk {idx:?} of {} is not {:?}",
                        src.name(),
                        T::DTYPE
                    ))
                })?;
                let to: [Range<u64>; 3] =
                    std::array::from_fn(|i| r[i].start + dst[i].start..r[i].start + dst[i].end);
                // SAFETY: tasks' regions tile the result without overlap, and the pieces of
                // one task are disjoint windows of its region.
                let view = unsafe { writer.region(&to) };
                super::task::copy_window(view, values.slice(slice3(&inner)));
                Ok(())
            };
            let pieces = chunk_pieces(&**src, offset, r);
            if pieces.len() > 1 {
                pieces.into_par_iter().try_for_each(copy)
            } else {
                pieces.into_iter().try_for_each(copy)
            }
        })?;
        Ok(out)
    }

    /// Explain what writing `node` in `chunks` to a cube will fetch and hold, from the
    /// planner's own numbers (reads no chunk; sharded bands read their shard indexes).
    pub fn explain(&self, node: &Arc<Node>, chunks: [u64; 3]) -> Explain {
        self.explain_as(node, chunks, true)
    }

    /// [`Session::explain`] of the run that writes `node` to a cube (`written`), or of the one
    /// computing it into memory (the result held beside the tasks, as `--print` does).
    pub fn explain_as(&self, node: &Arc<Node>, chunks: [u64; 3], written: bool) -> Explain {
        let full: [Range<u64>; 3] = std::array::from_fn(|i| 0..node.shape[i]);
        // Stored chunks only (persisted intermediates are not fetched), grouped per source.
        let by_src = group_by_source(source_chunks(node, &full), |s| !s.is_persisted());
        let (mut stored, mut dec, mut cost) = (0u64, 0u64, ReadCost::default());
        for (src, idxs) in &by_src {
            stored += idxs.len() as u64;
            dec += idxs.len() as u64 * chunk_bytes(&**src);
            let c = src.read_cost(idxs);
            cost.encoded_bytes += c.encoded_bytes;
            cost.requests += c.requests;
            cost.absent += c.absent;
        }
        let limit = self.config.memory_limit;
        let output_chunks: u64 = grid_shape(node.shape, chunks).iter().product();
        // As `calc --out` would run it, or `compute` (see there).
        let demand = Demand {
            writing: written,
            hold: if written {
                0
            } else {
                node.shape.iter().product::<u64>() * node.dtype.size() as u64
            },
            strips: true,
            ..Demand::default()
        };
        let (task_bytes, minimum_limit, task_shapes) = match self.plan(&[node], chunks, demand) {
            Ok(p) => (p.need, None, self.task_shapes(node, chunks, demand, p)),
            Err(ExecError::MemoryLimit { minimum, .. }) => (0, Some(minimum), Vec::new()),
            Err(_) => (0, None, Vec::new()),
        };
        let threads = self.threads();
        let cache_bytes = cache_cap(limit);
        // Tasks wait for room in the budget: as many run at once as fit beside the cache and
        // what is held (at least one, which the plan guarantees fits).
        let fit = limit.saturating_sub(cache_bytes + demand.hold) / task_bytes.max(1);
        let conc = (threads as u64).min(output_chunks).min(fit).max(1);
        Explain {
            stored_chunks: stored,
            encoded_bytes: cost.encoded_bytes,
            absent_chunks: cost.absent,
            decoded_bytes: dec,
            requests: cost.requests,
            output_chunks,
            tasks: crate::graph::count_tasks(node, chunks),
            task_bytes,
            threads,
            cache_bytes,
            tasks_at_once: conc,
            projected_peak_bytes: conc * task_bytes + cache_bytes.min(dec) + demand.hold,
            memory_limit: limit,
            minimum_limit,
            written,
            task_shapes,
        }
    }

    /// How each distinct task shape of `node` in `chunks` runs under `plan` (the planner's
    /// own path and figures), with how many tasks have that shape.
    fn task_shapes(
        &self,
        node: &Arc<Node>,
        chunks: [u64; 3],
        d: Demand,
        plan: TaskPlan,
    ) -> Vec<super::stats::TaskShape> {
        use super::path::{is_spilled, path_need};
        use super::plan::representative_regions;
        let nodes = [node];
        let caps = plan.caps(self.threads(), &nodes);
        // Tasks per extent along each axis: full chunks and the edge.
        let counts: [Vec<(u64, u64)>; 3] = std::array::from_fn(|i| {
            let (n, c) = (node.shape[i], chunks[i].max(1));
            let mut v = vec![(c.min(n), n / c)];
            if n % c != 0 && n > c {
                v.push((n % c, 1));
            }
            v.retain(|&(_, k)| k > 0);
            if v.is_empty() {
                v.push((n, 1));
            }
            v
        });
        let mut out: Vec<super::stats::TaskShape> = Vec::new();
        for r in representative_regions(&nodes, node.shape, chunks) {
            let shape: [u64; 3] = std::array::from_fn(|i| r[i].end - r[i].start);
            let path = task_path(&nodes, &r, chunks, caps, d, plan);
            let bytes = path_need(&nodes, &r, chunks, caps, d, path);
            let name = if path == TaskPath::Whole && is_spilled(&nodes, &r, caps) {
                "spilled"
            } else {
                path.name()
            };
            let rows = match path {
                TaskPath::Strips(rows) => Some(rows.min(shape[1])),
                _ => None,
            };
            if let Some(t) = out.iter_mut().find(|t| t.shape == shape && t.path == name) {
                t.bytes = t.bytes.max(bytes);
                continue;
            }
            let tasks = (0..3)
                .map(|i| {
                    counts[i]
                        .iter()
                        .find(|(len, _)| *len == shape[i])
                        .map(|(_, k)| *k)
                        .unwrap_or(1)
                })
                .product();
            out.push(super::stats::TaskShape {
                shape,
                tasks,
                path: name.to_string(),
                rows,
                bytes,
            });
        }
        out
    }

    /// Materialise a node once (memory within budget, the rest spilled) and return a node
    /// that reads the persisted chunks.
    pub fn persist(&self, node: &Arc<Node>, chunks: [u64; 3]) -> Result<Arc<Node>, ExecError> {
        if matches!(&node.op, Op::Source { src, .. } if src.is_persisted()) {
            return Ok(node.clone());
        }
        let plan = self.plan(&[node], chunks, Demand::default())?;
        let need = plan.need;
        // Keep in memory only what leaves room for the cache and for later tasks (half of the
        // rest); spill everything else.
        let room = self
            .config
            .memory_limit
            .saturating_sub(cache_cap(self.config.memory_limit) + need * self.threads() as u64);
        let wide = computes_f64(&[node]);
        let p = Arc::new(
            Persisted::new(
                &self.spill,
                node.shape,
                chunks,
                if wide { DType::F64 } else { DType::F32 },
                (room / 2).min(cache_cap(self.config.memory_limit)),
            )?
            .with_attributes(super::write::provenance(node)),
        );
        // What stays in memory is held by the session, inside the budget's accounting.
        let keep = |bytes: u64, spilled: u64| {
            self.budget.add_held(bytes - spilled);
            self.stats
                .spilled_bytes
                .fetch_add(spilled, Ordering::Relaxed);
        };
        self.run_tasks(&[node], node.shape, chunks, plan, "persisting", |r| {
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
            Op::Source {
                src: p,
                offset: [0; 3],
            },
            node.shape,
            node.present,
            node.dtype,
        ))
    }
}

impl Drop for Session {
    /// The live status keeps the session's last numbers (its sampler can no longer reach it).
    fn drop(&mut self) {
        if let Some(live) = &self.config.live {
            self.fill_gauges(live.gauges());
        }
    }
}

/// Convert results computed in `F` to the node's dtype (casts already rounded and saturated).
fn to_dtype<F: Float>(a: ArrayD<F>, d: DType) -> Values {
    if d == F::DTYPE {
        return F::wrap(a);
    }
    crate::with_dtype!(d, T => Values::from(a.mapv(|v| <T as crate::store::Element>::from_f64(<F as crate::store::Element>::to_f64(v)))))
}
