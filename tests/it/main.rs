//! chunkcube's integration tests, one binary (so `common` compiles once), one module per
//! capability: ingest, query, calc, export, the command line, out-of-core execution, S3, and
//! the store format as xarray / rioxarray / zarr-python read it.

mod common;

mod ascending;
mod bounded;
mod calc;
mod cli;
mod dashboard;
mod export;
mod geographic;
mod hostile;
mod ingest;
mod integrity;
mod interop;
mod jobs;
mod out_of_core;
mod overwrite;
mod packed;
mod plan;
mod query;
mod reduced;
mod remote;
mod s3;
mod xarray_compat;
