//! Sharded writes for `to_zarr(client=…, shards=N)`: one shard of the output per Dask task
//! (any process), then one commit that writes the group metadata last.

use crate::array::PyArray;
use crate::errors;
use chunkcube::{Dataset, Shard};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn dataset(arrays: &[Bound<'_, PyArray>]) -> PyResult<Dataset> {
    if arrays.is_empty() {
        return Err(PyValueError::new_err("to_zarr: nothing to write"));
    }
    let mut ds = Dataset::new();
    for a in arrays {
        let a = &a.get().inner;
        if let Some(msg) = a.node().first_error() {
            return Err(PyValueError::new_err(msg));
        }
        ds.insert(a.name(), a.clone());
    }
    Ok(ds)
}

/// Write shard `index` of `count` of the arrays' cube at `url` (GIL released); the report as
/// JSON. The cube opens only after [`commit`].
#[pyfunction]
pub(crate) fn write_cube_shard(
    py: Python<'_>,
    arrays: Vec<Bound<'_, PyArray>>,
    url: &str,
    index: u32,
    count: u32,
) -> PyResult<String> {
    let shard = Shard::new(index, count).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let ds = dataset(&arrays)?;
    let url = url.to_string();
    let report = py
        .detach(move || ds.to_zarr_shard(&url, shard))
        .map_err(errors::cube)?;
    Ok(serde_json::to_string(&report).unwrap_or_default())
}

/// Commit the sharded job at `url` once every shard finished; the report as JSON.
#[pyfunction]
pub(crate) fn commit(py: Python<'_>, url: &str) -> PyResult<String> {
    let url = url.to_string();
    let report = py
        .detach(move || chunkcube::commit(&url))
        .map_err(|e| errors::job(&e))?;
    Ok(serde_json::to_string(&report).unwrap_or_default())
}
