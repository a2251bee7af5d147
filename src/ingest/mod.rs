//! Ingest: GeoTIFF tiles → a Zarr v3 cube.
//!
//! 1. [`scan`] finds the tiles (manifest or DE Africa file names) and reads their headers;
//! 2. [`plan`] checks they share CRS, resolution and pixel grid and lays them on the union grid;
//! 3. [`write`] builds whole output chunks in parallel from windowed GDAL reads of only the
//!    tiles overlapping each chunk, and commits the cube by writing the group metadata last.
//!
//! Re-running an interrupted ingest resumes: chunks already in the store are kept (they were
//! written atomically) and the result is byte-identical to an uninterrupted run.

mod chunk;
mod csv;
pub mod jobplan;
mod output;
pub mod plan;
pub mod remote;
pub mod savedscan;
pub mod scan;
pub mod stac;
mod tilecheck;
mod write;

pub use plan::{plan_mosaic, MosaicPlan, Placed, PlanBand};
pub use scan::{discover, read_manifest, scan_tile, TileInfo, TileSource};
#[doc(hidden)]
pub use write::stop_after_chunks;
pub use write::{check_plan_size, ingest, IngestOptions, IngestReport, Sources};

use crate::store::StoreError;

/// Errors of ingest. Each names the file, manifest row, flag or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A manifest problem.
    #[error("{file} row {row}: {msg}")]
    Manifest {
        /// Manifest path.
        file: String,
        /// 1-based row (the header is row 1).
        row: usize,
        /// What is wrong.
        msg: String,
    },
    /// A tile that cannot be used.
    #[error("{file}: {msg}")]
    Tile {
        /// Tile path.
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// Tiles that do not fit together.
    #[error("{file}: {msg}")]
    Mismatch {
        /// The tile that disagrees with the first one.
        file: String,
        /// How.
        msg: String,
    },
    /// A tile URL chunkcube cannot read (a scheme other than `http(s)://` and `s3://`).
    #[error("{0}")]
    Remote(String),
    /// A STAC ItemCollection problem, naming the item (and asset).
    #[error("{file} item '{item}': {msg}")]
    Stac {
        /// The STAC file.
        file: String,
        /// The item's id (or `#N`, its position, without one).
        item: String,
        /// What is wrong.
        msg: String,
    },
    /// The same (band, time, tile) twice.
    #[error("duplicate (band, time, tile): {0}")]
    Duplicate(String),
    /// A mosaic whose size is absurd for its tiles (see `check_plan_size`).
    #[error("{0}")]
    Implausible(String),
    /// Nothing to ingest.
    #[error("no tiles found in {0}")]
    NoTiles(String),
    /// A bad command-line option.
    #[error("invalid {flag}: {msg}")]
    BadOption {
        /// The flag.
        flag: String,
        /// What is wrong.
        msg: String,
    },
    /// The output holds something else.
    #[error("{url} {msg}; pass --overwrite to replace it")]
    OutputExists {
        /// The output URL.
        url: String,
        /// What is there.
        msg: String,
    },
    /// Reading a tile failed mid-ingest.
    #[error("reading {file}: {msg}")]
    Read {
        /// Tile path.
        file: String,
        /// GDAL's message.
        msg: String,
    },
    /// A tile that is no longer the one the plan was made from (replaced on its server or
    /// on disk since the scan; see `tilecheck`): its pixels would land on the old grid.
    #[error("tile {file} changed since {since} ({what}): {fix}")]
    Changed {
        /// The tile, as the user named it.
        file: String,
        /// What the expectation came from (the saved scan, or this run's scan).
        since: String,
        /// What changed, `old → new`.
        what: String,
        /// What to do.
        fix: String,
    },
    /// Writing a chunk failed.
    #[error("writing chunk {key}: {msg}")]
    Write {
        /// Chunk key.
        key: String,
        /// What failed.
        msg: String,
    },
    /// Stopped on purpose after N chunks (used by tests of resumption).
    #[error("ingest stopped after {0} chunks as requested; re-run to resume")]
    Stopped(u64),
    /// Cancelled through [`IngestOptions::cancel`] (Ctrl-C in a notebook): nothing was
    /// committed; the chunks written stay for a re-run to resume.
    #[error("ingest interrupted; the cube was not committed (re-run to resume)")]
    Interrupted,
    /// A sharded job's problem (a bad --shard, another plan's workers).
    #[error(transparent)]
    Job(#[from] crate::store::job::JobError),
    /// A store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
}
