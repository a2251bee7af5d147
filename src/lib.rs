//! chunkcube (crate docs are written in lib.rs at the end of the walkthrough)
pub mod cube;
pub mod exec;
pub mod geo;
pub mod graph;
pub mod ingest;
pub mod progress;
pub mod store;

pub use cube::{Cube, DataArray, Dataset, Query, Values};
pub use exec::{ExecConfig, Session};
pub use store::{ChunkSpec, DType};
