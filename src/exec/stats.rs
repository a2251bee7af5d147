//! What a session counts (`--stats FILE.json`) and what it tells before computing
//! ([`Explain`], `--explain`).

use crate::store::format_bytes;
use std::sync::atomic::AtomicU64;

/// Counters of one session.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) chunks_read: AtomicU64,
    pub(crate) chunks_written: AtomicU64,
    pub(crate) tasks: AtomicU64,
    /// Tasks of every run started so far (progress: `tasks` of `tasks_planned`).
    pub(crate) tasks_planned: AtomicU64,
    pub(crate) spilled_bytes: AtomicU64,
}

/// Tasks done and planned in a session so far, for a progress display that polls (the
/// difference of two snapshots is the progress of what ran between them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Tasks finished (or stopped).
    pub done: u64,
    /// Tasks of the runs started.
    pub planned: u64,
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
    /// Encoded bytes written to result cubes.
    pub bytes_written: u64,
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

/// What computing an array will do, told before fetching anything, from the same numbers the
/// planner and the executor use.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explain {
    /// Stored chunks to fetch and decode.
    pub stored_chunks: u64,
    /// Their encoded bytes (unsharded: the objects' listed sizes; sharded: the inner chunks'
    /// byte ranges from the shard indexes). Absent chunks are fill and cost nothing.
    pub encoded_bytes: u64,
    /// Stored chunks that are absent (all fill).
    pub absent_chunks: u64,
    /// Their decoded bytes.
    pub decoded_bytes: u64,
    /// Requests to the store (sharded bands on object stores: coalesced byte ranges).
    pub requests: u64,
    /// Output chunks (tasks of the final layer).
    pub output_chunks: u64,
    /// Tasks of the whole graph.
    pub tasks: u64,
    /// Bytes each task reserves (the planner's per-task need; 0 if no limit fits).
    pub task_bytes: u64,
    /// Worker threads.
    pub threads: usize,
    /// The decoded-chunk cache's share of the limit.
    pub cache_bytes: u64,
    /// Tasks that run at once: the workers, fewer when only fewer fit the limit.
    pub tasks_at_once: u64,
    /// Projected peak of tracked memory: the tasks running at once, and the cache.
    pub projected_peak_bytes: u64,
    /// The memory limit.
    pub memory_limit: u64,
    /// The smallest limit the computation runs under, when the limit is below it.
    pub minimum_limit: Option<u64>,
    /// Whether this describes writing the result to a cube (else computing it into memory,
    /// the result held beside the tasks).
    pub written: bool,
    /// How each distinct task shape runs (empty if no limit fits).
    pub task_shapes: Vec<TaskShape>,
}

/// How the tasks of one shape run (see [`Explain::task_shapes`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskShape {
    /// The output region's `[time, y, x]` extent.
    pub shape: [u64; 3],
    /// Tasks of this shape.
    pub tasks: u64,
    /// `whole` (stored chunks decoded whole), `strips` (row strips of streamed chunks),
    /// `spilled` (a median's stacks rechunked through the spill store) or `streamed` (a spilled
    /// median written to its chunk strip by strip).
    pub path: String,
    /// Rows per strip (strips only).
    pub rows: Option<u64>,
    /// What one such task holds at its peak.
    pub bytes: u64,
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
        let how = if self.written {
            "written to a cube"
        } else {
            "computed into memory, not written"
        };
        writeln!(
            f,
            "per-task memory         {} ({how}; by task shape below)",
            format_bytes(self.task_bytes)
        )?;
        writeln!(
            f,
            "chunk cache             {}",
            format_bytes(self.cache_bytes)
        )?;
        writeln!(
            f,
            "projected peak memory   {} with {} threads, {} tasks at once (limit {})",
            format_bytes(self.projected_peak_bytes),
            self.threads,
            self.tasks_at_once,
            format_bytes(self.memory_limit)
        )?;
        for t in &self.task_shapes {
            let rows = t.rows.map(|r| format!(" of {r} rows")).unwrap_or_default();
            writeln!(
                f,
                "  {:>6} x {:<18} {}{rows}, {}",
                t.tasks,
                format!("{}x{}x{}", t.shape[0], t.shape[1], t.shape[2]),
                t.path,
                format_bytes(t.bytes)
            )?;
        }
        if let Some(m) = self.minimum_limit {
            writeln!(
                f,
                "does not fit            use --memory-limit {} or more",
                format_bytes(m)
            )?;
        }
        Ok(())
    }
}
