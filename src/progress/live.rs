//! The live status of one command, shared between the code doing the work (exec, ingest) and
//! whoever watches it (the dashboard). Writers touch only atomics on the hot path: a finished
//! task bumps its layers' counters and fills one slot of a ring of recent tasks. Gauges that
//! are costly to compute (memory in use, bytes read across stores) are pulled by a sampler
//! only when someone looks. Registering a run or setting the explanation takes a lock; that
//! happens once per computation, not per task.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Tasks the stream keeps (the most recent ones); a page polls more often than this many
/// tasks finish.
const STREAM_SLOTS: usize = 8192;

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Working.
    Running,
    /// Finished successfully.
    Done,
    /// Stopped by an error.
    Failed,
    /// Between computations of a long-lived status (a notebook's dashboard, see
    /// [`LiveStatus::session`]): nothing is running now, more may come.
    Idle,
}

/// Gauges pulled by the sampler (and frozen at their last values when the run ends).
#[derive(Debug, Default)]
pub struct Gauges {
    /// Encoded bytes read so far.
    pub bytes_read: AtomicU64,
    /// Encoded bytes written so far.
    pub bytes_written: AtomicU64,
    /// Tracked memory now (task reservations, cache, held results).
    pub memory_in_use: AtomicU64,
    /// The memory limit (0: none).
    pub memory_limit: AtomicU64,
    /// Decoded chunks held by the cache.
    pub cache_bytes: AtomicU64,
    /// Bytes spilled to the scratch store.
    pub spilled_bytes: AtomicU64,
    /// High-water mark of tracked memory.
    pub peak_bytes: AtomicU64,
}

/// One layer of a run: an operation of the graph with its tasks.
#[derive(Debug)]
pub struct LayerProgress {
    name: String,
    total: u64,
    /// Tasks of this layer one task of the run completes.
    per_task: u64,
    done: AtomicU64,
}

/// One computation (a pass over output chunks, a scan, an ingest's writes), as registered by
/// [`LiveStatus::begin_run`].
///
/// The handle the work holds while the run lasts: dropping it ends the run (what a session's
/// [`RunState::Idle`] is told from); its counts stay in the status's report.
#[derive(Debug)]
pub struct LiveRun {
    data: Arc<RunData>,
    status: Arc<LiveStatus>,
    /// Registered in the status (runs inside an outer run are not): counted as active.
    counted: bool,
}

/// A run's counts, kept by the status after the run ended.
#[derive(Debug)]
struct RunData {
    id: u32,
    what: String,
    tasks: u64,
    done: AtomicU64,
    layers: Vec<LayerProgress>,
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        if self.counted {
            self.status.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A layer as [`LiveStatus::begin_run`] takes it: a name, its tasks, and how many of them
/// one task of the run completes.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Name ("load red", "sub", "write ndvi").
    pub name: String,
    /// Its tasks.
    pub tasks: u64,
    /// How many of them each task of the run completes (0: counted by [`LiveRun::add`]).
    pub per_task: u64,
}

impl LiveRun {
    /// One task of the run finished on `worker`, started at `start_us` (see
    /// [`LiveStatus::now_us`]): its layers advance and the task stream records it.
    pub fn task_done(&self, worker: usize, start_us: u64) {
        self.data.done.fetch_add(1, Ordering::Relaxed);
        for l in &self.data.layers {
            if l.per_task > 0 {
                l.done.fetch_add(l.per_task, Ordering::Relaxed);
            }
        }
        self.status
            .stream
            .record(worker, self.data.id, start_us, self.status.now_us());
    }
    /// Advance layer `layer` by `n` tasks (layers whose tasks are not one per run task).
    pub fn add(&self, layer: usize, n: u64) {
        if let Some(l) = self.data.layers.get(layer) {
            l.done.fetch_add(n, Ordering::Relaxed);
        }
    }
    /// `n` tasks of layer `layer` done, counting as tasks of the run (an outer run's
    /// progress; its computations' tasks fill the task stream).
    pub fn progress(&self, layer: usize, n: u64) {
        self.add(layer, n);
        self.data.done.fetch_add(n, Ordering::Relaxed);
    }
    /// The status this run belongs to.
    pub fn status(&self) -> &Arc<LiveStatus> {
        &self.status
    }
}

/// What someone watching is told: the progress, the gauges and the recent tasks.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The command (`calc`, `ingest` …).
    pub command: String,
    /// running, done or failed (idle: a session between computations).
    pub state: RunState,
    /// Tasks of every layer done so far.
    pub tasks_done: u64,
    /// Tasks of every layer registered so far (grows as later runs start).
    pub tasks_total: u64,
    /// Per layer, runs in order.
    pub layers: Vec<LayerReport>,
    /// Runs (computations) in order.
    pub runs: Vec<RunReport>,
    /// Encoded bytes read.
    pub bytes_read: u64,
    /// Encoded bytes written.
    pub bytes_written: u64,
    /// Tracked memory now.
    pub memory_in_use: u64,
    /// The memory limit (0: none).
    pub memory_limit: u64,
    /// Decoded chunks in the cache.
    pub cache_bytes: u64,
    /// Bytes spilled.
    pub spilled_bytes: u64,
    /// High-water mark of tracked memory.
    pub peak_bytes: u64,
    /// Seconds since the command started.
    pub elapsed_s: f64,
    /// Worker threads.
    pub workers: usize,
    /// The plan's numbers (as `--explain` prints them), per result.
    pub explain: Vec<(String, serde_json::Value)>,
    /// The final summary (the `--stats` numbers), once the run ended.
    pub summary: Option<serde_json::Value>,
    /// The error, if the run failed.
    pub error: Option<String>,
}

/// A layer in a [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// The run it belongs to.
    pub run: u32,
    /// Name.
    pub name: String,
    /// Tasks done.
    pub done: u64,
    /// Tasks.
    pub total: u64,
}

/// A run in a [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Its id (task stream entries name it).
    pub id: u32,
    /// What it does ("computing", "writing", "ingesting chunks").
    pub what: String,
    /// Its tasks done.
    pub done: u64,
    /// Its tasks.
    pub total: u64,
}

/// One finished task in the stream.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TaskRecord {
    /// Its position in the stream (poll again with `since` = the last one + 1).
    pub seq: u64,
    /// The worker thread that ran it.
    pub worker: u32,
    /// The run it belongs to.
    pub run: u32,
    /// Start, microseconds since the command started.
    pub start_us: u64,
    /// End, microseconds since the command started.
    pub end_us: u64,
}

/// A ring of the most recent finished tasks, written with atomics only: a slot's sequence
/// word is stored last, and a reader keeps a slot only if that word is the same before and
/// after it read the rest (a slot overwritten meanwhile is skipped).
struct TaskStream {
    next: AtomicU64,
    slots: Box<[[AtomicU64; 4]]>,
}

impl TaskStream {
    fn new() -> TaskStream {
        TaskStream {
            next: AtomicU64::new(0),
            slots: (0..STREAM_SLOTS).map(|_| Default::default()).collect(),
        }
    }
    fn record(&self, worker: usize, run: u32, start_us: u64, end_us: u64) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let s = &self.slots[seq as usize % STREAM_SLOTS];
        s[0].store(0, Ordering::Release);
        s[1].store(start_us, Ordering::Relaxed);
        s[2].store(end_us, Ordering::Relaxed);
        s[3].store(((worker as u64) << 32) | run as u64, Ordering::Relaxed);
        s[0].store(seq + 1, Ordering::Release);
    }
    /// Tasks finished since `since` (at most the ring's size, oldest first).
    fn since(&self, since: u64) -> Vec<TaskRecord> {
        let end = self.next.load(Ordering::Acquire);
        let from = since.max(end.saturating_sub(STREAM_SLOTS as u64));
        (from..end)
            .filter_map(|seq| {
                let s = &self.slots[seq as usize % STREAM_SLOTS];
                if s[0].load(Ordering::Acquire) != seq + 1 {
                    return None;
                }
                let (start_us, end_us, meta) = (
                    s[1].load(Ordering::Relaxed),
                    s[2].load(Ordering::Relaxed),
                    s[3].load(Ordering::Relaxed),
                );
                (s[0].load(Ordering::Acquire) == seq + 1).then_some(TaskRecord {
                    seq,
                    worker: (meta >> 32) as u32,
                    run: meta as u32,
                    start_us,
                    end_us,
                })
            })
            .collect()
    }
}

type Sampler = Box<dyn Fn(&Gauges) + Send + Sync>;

/// The live status of one command (see the module docs).
pub struct LiveStatus {
    command: String,
    started: Instant,
    state: AtomicU8,
    /// When the command ended (microseconds since it started; 0 while it runs).
    ended_us: AtomicU64,
    workers: AtomicU64,
    gauges: Gauges,
    runs: Mutex<Vec<Arc<RunData>>>,
    /// Runs begun and not yet ended (their [`LiveRun`] handles alive).
    active: AtomicU64,
    /// A long-lived status that says [`RunState::Idle`] between runs.
    session: bool,
    stream: TaskStream,
    sampler: Mutex<Option<Sampler>>,
    explain: Mutex<Vec<(String, serde_json::Value)>>,
    summary: Mutex<Option<serde_json::Value>>,
    error: Mutex<Option<String>>,
    /// The run of [`LiveStatus::begin_outer_run`] while it lasts (`u64::MAX`: none).
    outer: AtomicU64,
}

impl std::fmt::Debug for LiveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStatus")
            .field("command", &self.command)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl LiveStatus {
    /// A status for `command`, running from now.
    pub fn new(command: &str) -> Arc<LiveStatus> {
        Self::build(command, false)
    }
    /// A status for a process that runs computations now and then (a notebook): between
    /// them it says [`RunState::Idle`] rather than running; it is done when finished.
    pub fn session(command: &str) -> Arc<LiveStatus> {
        Self::build(command, true)
    }
    fn build(command: &str, session: bool) -> Arc<LiveStatus> {
        Arc::new(LiveStatus {
            command: command.to_string(),
            started: Instant::now(),
            state: AtomicU8::new(0),
            ended_us: AtomicU64::new(0),
            workers: AtomicU64::new(0),
            gauges: Gauges::default(),
            runs: Mutex::new(Vec::new()),
            active: AtomicU64::new(0),
            session,
            stream: TaskStream::new(),
            sampler: Mutex::new(None),
            explain: Mutex::new(Vec::new()),
            summary: Mutex::new(None),
            error: Mutex::new(None),
            outer: AtomicU64::new(u64::MAX),
        })
    }
    /// Microseconds since the command started (task stream times).
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
    /// The gauges, for writers that keep them current themselves (ingest).
    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }
    /// Pull the gauges from `f` whenever someone looks (replaces an earlier sampler).
    pub fn set_sampler(&self, f: impl Fn(&Gauges) + Send + Sync + 'static) {
        if let Ok(mut s) = self.sampler.lock() {
            *s = Some(Box::new(f));
        }
    }
    /// Worker threads (the task stream's rows).
    pub fn set_workers(&self, n: usize) {
        self.workers.store(n as u64, Ordering::Relaxed);
    }
    /// Record the plan's numbers of result `name` (shown beside the progress).
    pub fn add_explain(&self, name: &str, explain: serde_json::Value) {
        if let Ok(mut e) = self.explain.lock() {
            e.push((name.to_string(), explain));
        }
    }
    /// Register a computation of `tasks` tasks over `layers`. Inside an outer run (see
    /// [`LiveStatus::begin_outer_run`]) it is not listed: its tasks show in the task stream
    /// as the outer run's, whose layers tell the progress.
    pub fn begin_run(
        self: &Arc<Self>,
        what: &str,
        tasks: u64,
        layers: &[LayerSpec],
    ) -> Arc<LiveRun> {
        let outer = self.outer.load(Ordering::Acquire);
        if outer != u64::MAX {
            return Arc::new(LiveRun {
                data: Arc::new(RunData {
                    id: outer as u32,
                    what: what.to_string(),
                    tasks,
                    done: AtomicU64::new(0),
                    layers: Vec::new(),
                }),
                status: self.clone(),
                counted: false,
            });
        }
        self.register(what, tasks, layers)
    }

    /// Register a run made of many small computations (an export computes each file block
    /// by block): its layers, advanced with [`LiveRun::progress`], stand for the runs begun
    /// until [`LiveStatus::end_outer_run`].
    pub fn begin_outer_run(
        self: &Arc<Self>,
        what: &str,
        tasks: u64,
        layers: &[LayerSpec],
    ) -> Arc<LiveRun> {
        let run = self.register(what, tasks, layers);
        self.outer.store(run.data.id as u64, Ordering::Release);
        run
    }

    /// The outer run ended: runs begun later are listed again.
    pub fn end_outer_run(&self) {
        self.outer.store(u64::MAX, Ordering::Release);
    }

    fn register(self: &Arc<Self>, what: &str, tasks: u64, layers: &[LayerSpec]) -> Arc<LiveRun> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let data = Arc::new(RunData {
            id: runs.len() as u32,
            what: what.to_string(),
            tasks,
            done: AtomicU64::new(0),
            layers: layers
                .iter()
                .map(|l| LayerProgress {
                    name: l.name.clone(),
                    total: l.tasks,
                    per_task: l.per_task,
                    done: AtomicU64::new(0),
                })
                .collect(),
        });
        runs.push(data.clone());
        self.active.fetch_add(1, Ordering::AcqRel);
        Arc::new(LiveRun {
            data,
            status: self.clone(),
            counted: true,
        })
    }
    /// Where the command is.
    pub fn state(&self) -> RunState {
        match self.state.load(Ordering::Acquire) {
            0 if self.session && self.active.load(Ordering::Acquire) == 0 => RunState::Idle,
            0 => RunState::Running,
            1 => RunState::Done,
            _ => RunState::Failed,
        }
    }
    /// The command ended: successfully with its final summary, or with an error. The gauges
    /// are sampled a last time and the sampler dropped (what it watched is going away).
    pub fn finish(&self, result: Result<Option<serde_json::Value>, String>) {
        self.sample();
        if let Ok(mut s) = self.sampler.lock() {
            *s = None;
        }
        let state = match result {
            Ok(summary) => {
                if let Ok(mut s) = self.summary.lock() {
                    *s = summary;
                }
                1
            }
            Err(e) => {
                if let Ok(mut s) = self.error.lock() {
                    *s = Some(e);
                }
                2
            }
        };
        self.ended_us.store(self.now_us().max(1), Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
    }
    fn sample(&self) {
        if let Ok(s) = self.sampler.lock() {
            if let Some(f) = s.as_ref() {
                f(&self.gauges);
            }
        }
    }
    /// Tasks finished since `since` (the task stream).
    pub fn tasks_since(&self, since: u64) -> Vec<TaskRecord> {
        self.stream.since(since)
    }
    /// The status now.
    pub fn report(&self) -> StatusReport {
        // The state first: a report that says "done" has its final numbers.
        let state = self.state();
        self.sample();
        let runs: Vec<Arc<RunData>> = self.runs.lock().map(|r| r.clone()).unwrap_or_default();
        let mut layers = Vec::new();
        let mut run_reports = Vec::new();
        for r in &runs {
            run_reports.push(RunReport {
                id: r.id,
                what: r.what.clone(),
                done: r.done.load(Ordering::Relaxed).min(r.tasks),
                total: r.tasks,
            });
            for l in &r.layers {
                layers.push(LayerReport {
                    run: r.id,
                    name: l.name.clone(),
                    done: l.done.load(Ordering::Relaxed).min(l.total),
                    total: l.total,
                });
            }
        }
        let g = &self.gauges;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatusReport {
            command: self.command.clone(),
            state,
            tasks_done: layers.iter().map(|l| l.done).sum(),
            tasks_total: layers.iter().map(|l| l.total).sum(),
            layers,
            runs: run_reports,
            bytes_read: ld(&g.bytes_read),
            bytes_written: ld(&g.bytes_written),
            memory_in_use: ld(&g.memory_in_use),
            memory_limit: ld(&g.memory_limit),
            cache_bytes: ld(&g.cache_bytes),
            spilled_bytes: ld(&g.spilled_bytes),
            peak_bytes: ld(&g.peak_bytes),
            elapsed_s: match self.ended_us.load(Ordering::Relaxed) {
                0 => self.started.elapsed().as_secs_f64(),
                us => us as f64 / 1e6,
            },
            workers: self.workers.load(Ordering::Relaxed) as usize,
            explain: self.explain.lock().map(|e| e.clone()).unwrap_or_default(),
            summary: self.summary.lock().ok().and_then(|s| s.clone()),
            error: self.error.lock().ok().and_then(|s| s.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_advance_per_task_and_the_stream_keeps_recent_tasks() {
        let s = LiveStatus::new("calc");
        let layers = [
            LayerSpec {
                name: "load red".into(),
                tasks: 8,
                per_task: 2,
            },
            LayerSpec {
                name: "sub".into(),
                tasks: 4,
                per_task: 1,
            },
        ];
        let r = s.begin_run("computing", 4, &layers);
        for i in 0..3 {
            r.task_done(i % 2, 0);
        }
        let rep = s.report();
        assert_eq!(rep.state, RunState::Running);
        assert_eq!((rep.tasks_done, rep.tasks_total), (9, 12));
        assert_eq!(rep.layers[0].done, 6);
        assert_eq!(rep.layers[1].done, 3);
        assert_eq!(rep.runs[0].done, 3);
        let t = s.tasks_since(0);
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].worker, 1);
        assert_eq!(s.tasks_since(2).len(), 1);
        // Past the ring's size only the most recent remain, in order.
        for _ in 0..STREAM_SLOTS + 5 {
            r.task_done(0, 0);
        }
        let t = s.tasks_since(0);
        assert_eq!(t.len(), STREAM_SLOTS);
        assert!(t.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        // Layers never report more than their tasks.
        let rep = s.report();
        assert_eq!(rep.layers[1].done, 4);
        s.finish(Err("boom".into()));
        assert_eq!(s.report().state, RunState::Failed);
        assert_eq!(s.report().error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_session_is_idle_between_runs_and_a_command_is_not() {
        let spec = [LayerSpec {
            name: "sub".into(),
            tasks: 2,
            per_task: 1,
        }];
        let cmd = LiveStatus::new("calc");
        drop(cmd.begin_run("computing", 2, &spec));
        assert_eq!(
            cmd.state(),
            RunState::Running,
            "a command runs until it finishes"
        );

        let s = LiveStatus::session("notebook");
        assert_eq!(s.state(), RunState::Idle);
        let a = s.begin_run("computing", 2, &spec);
        let b = s.begin_run("writing", 2, &spec);
        assert_eq!(s.state(), RunState::Running);
        a.task_done(0, 0);
        drop(a);
        assert_eq!(s.state(), RunState::Running, "one run still going");
        // A computation inside an outer run (an export's blocks) neither starts nor ends one.
        let outer = s.begin_outer_run("exporting", 1, &spec);
        drop(b);
        drop(s.begin_run("computing", 1, &spec));
        assert_eq!(s.state(), RunState::Running, "the outer run still going");
        s.end_outer_run();
        drop(outer);
        assert_eq!(s.state(), RunState::Idle);
        // The ended runs' counts stay in the report.
        let rep = s.report();
        assert_eq!(rep.state, RunState::Idle);
        assert_eq!(rep.runs.len(), 3);
        assert_eq!(rep.runs[0].done, 1);
        s.finish(Ok(None));
        assert_eq!(s.state(), RunState::Done);
    }
}
