//! Execution: a [`Session`] runs chunk tasks on rayon workers inside a memory budget, with a
//! shared cache of decoded chunks, cancellation on the first error, spill-to-disk for
//! persisted intermediates, progress and statistics. It works over any
//! [`crate::graph::ChunkSource`], never over a cube directly.
//!
//! Every task is a pure function of the chunks it reads and writes whole output chunks, so
//! re-running a task (or running it on another machine) gives the same bytes.
//!
//! One idea a file:
//! - `config`: [`ExecConfig`] and allocator tuning;
//! - `plan`: the planner, pure functions of shapes, chunk grids, dtypes and a limit; `path`:
//!   which way each task runs (whole, strips, spilled, streamed) and what it holds there;
//!   `regions`: the distinct task shapes of a grid the planner sizes; `accept`: choosing a
//!   plan under a limit, and the smallest limit a graph runs under;
//! - `session`: the [`Session`], its chunk cache and budget, compute / persist / explain;
//! - `task`: running the tasks of one computation (prefetch, cancellation, per-task policy);
//! - `eval`: the body of a task, an elementwise chain or a streaming reduction;
//! - `strips`: planning tasks evaluated in row strips; `rows`: running them (stored chunks
//!   read as streams of rows);
//! - `median`: medians over time whose stacks do not fit, rechunked through the spill store;
//! - `spill`: the scratch area, persisted intermediates and scratch arrays;
//! - `stats`: the counters `--stats` writes and [`Explain`];
//! - `write`: results written as a new cube, committed last.
//!
//! A median over time whose stacks exceed the budget rechunks through the spill store: each
//! stored chunk is decoded once and spilled as row strips (in its stored type when that is a
//! narrow integer), then strips are read back with their whole stacks. Written to a cube, such
//! a task streams its output chunk strip by strip into the encoder
//! ([`crate::store::ChunkWriter`]) when that is the only way to fit the limit or lets two
//! tasks share it; otherwise it holds its result and shares its phases among helper threads.

mod accept;
mod budget;
mod cache;
mod config;
mod eval;
pub mod job;
mod jobplan;
mod median;
mod path;
mod plan;
mod reduce_int;
mod regions;
mod rows;
mod session;
mod spill;
mod stats;
mod strips;
mod task;
mod write;

pub use budget::{Budget, Reservation};
pub use config::{total_memory, tune_allocator, ExecConfig};
pub use session::Session;
pub use spill::{install_interrupt_cleanup, remove_live_spill_dirs};
pub use stats::{Explain, Progress, StatsReport, TaskShape};
pub use task::{hold_after_tasks, hold_tasks_while, pace_tasks};
pub use write::result_nodata;

use crate::graph::{BoxError, ReadError};
use crate::store::StoreError;

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
        /// The minimum that would work, formatted (with advice when a result is held).
        needed: String,
        /// The minimum that would work, in bytes.
        minimum: u64,
    },
    /// A chunk could not be read or decoded.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A store problem (writing results, spilling).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sharded job's problem (another plan's workers, a commit refused).
    #[error(transparent)]
    Job(#[from] crate::store::job::JobError),
    /// Writing an output chunk or array failed.
    #[error("writing {key}: {source}")]
    Write {
        /// The key written.
        key: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The output exists.
    #[error("{0} already exists; pass --overwrite to replace it")]
    Exists(String),
    /// The output holds something else than a cube or an unfinished result of this tool.
    #[error("{url} {what}; pass --overwrite to replace it, or write somewhere else")]
    Occupied {
        /// The output.
        url: String,
        /// What it holds.
        what: String,
    },
    /// Another task failed first.
    #[error("cancelled")]
    Cancelled,
    /// The session was interrupted ([`Session::interrupt`], Ctrl-C in a notebook) while the
    /// computation ran; a result being written is left uncommitted.
    #[error("interrupted; nothing was committed")]
    Interrupted,
    /// Spill store problem.
    #[error("spill directory {dir}: {source}")]
    Spill {
        /// Directory.
        dir: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

impl ExecError {
    /// A [`ExecError::Write`] of `key`.
    pub(crate) fn write(key: impl Into<String>, e: impl Into<BoxError>) -> ExecError {
        ExecError::Write {
            key: key.into(),
            source: e.into(),
        }
    }
    /// A [`ExecError::Spill`] in `dir`.
    pub(crate) fn spill(dir: impl std::fmt::Display, e: impl Into<BoxError>) -> ExecError {
        ExecError::Spill {
            dir: dir.to_string(),
            source: e.into(),
        }
    }
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_minimum;
