//! # chunkcube
//!
//! An out-of-core storage format and chunk store for Earth-observation rasters. GeoTIFF tiles
//! (Digital Earth Africa's annual Sentinel-2 geomedian is the model) become chunked Zarr v3
//! cubes on local disk or S3; any selection maps to exactly the stored chunks it touches;
//! band math and reductions chain lazily into a chunk task graph that runs in parallel inside
//! a memory limit.
//!
//! The modules follow the data: [`geo`] → [`store`] → [`ingest`] → [`cube`] → [`graph`] →
//! [`exec`], and [`export`] writes results back out as GeoTIFF. The walk-through below is the path of DE Africa's "Parallel processing with
//! Dask" notebook (see `examples/parallel_processing.rs` for all of it).
//!
//! ```
//! use chunkcube::ingest::{ingest, IngestOptions, Sources};
//! use chunkcube::{ChunkSpec, Cube, Query};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = dir.path().join("cube").to_str().unwrap().to_string();
//! # let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/manifest.csv");
//! // Ingest once: tiles → one cube (one [time, y, x] array per band, committed last).
//! let opts = IngestOptions { chunks: ChunkSpec::parse("time=1,y=64,x=64")?, quiet: true, ..Default::default() };
//! ingest(&Sources::Manifest(manifest), &url, &opts)?;
//!
//! // Open: metadata only.
//! let cube = Cube::open(&url)?;
//!
//! // Query: a lon/lat box and a year, with chunks → lazy (like dask_chunks); without → eager.
//! let q = Query::new()
//!     .measurements(&["red", "nir"])
//!     .lon_lat((24.0, 25.5), (-21.5, -19.0))
//!     .time("2019-01-01", "2019-12-31")?
//!     .chunks(ChunkSpec::parse("time=1,y=100,x=100")?);
//! let ds = cube.load(&q)?;
//! let (red, nir) = (ds.get("red").unwrap(), ds.get("nir").unwrap());
//! println!("{}", red.summary()); // the chunk table: bytes, shape, chunks, tasks
//!
//! // Chain: NDVI without wrap-around (integers are promoted to float32, nodata becomes NaN;
//! // `astype(DType::F64)` on an operand computes everything after it in float64).
//! let ndvi = &(nir - red) / &(nir + red);
//! let graph_dot = ndvi.visualize(); // the task graph, Graphviz DOT
//! assert!(graph_dot.starts_with("digraph"));
//!
//! // Compute: only the chunks under the window are fetched (here one per band).
//! let window = ndvi.isel(&[("y", 10..20), ("x", 10..20)])?;
//! let values = window.compute()?;
//! assert_eq!(values.shape(), vec![1, 10, 10]);
//! assert_eq!(cube.session().stats().chunks_read, 2);
//!
//! // Reduce over time (nan-aware), streamed chunk by chunk inside the memory limit.
//! let mean = ndvi.reduce(chunkcube::graph::ReduceOp::Mean, "time").compute()?;
//! assert_eq!(mean.shape()[0], 1);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod cube;
pub mod dashboard;
pub mod exec;
pub mod export;
pub mod geo;
pub mod graph;
pub mod ingest;
pub mod progress;
pub mod store;

pub use cube::{Cube, DataArray, Dataset, Query};
pub use exec::{ExecConfig, Session};
pub use store::job::{commit, Shard};
pub use store::{ChunkSpec, DType, Values};
