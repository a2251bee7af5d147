//! The native half of the `chunkcube` Python package (`chunkcube._chunkcube`): thin PyO3
//! bindings of the library's public API. The Python half (`python/chunkcube/`) builds the
//! user-facing classes, xarray conversion, reprs and the xarray backend on top of it.
//!
//! Every call that reads or computes releases the GIL; computations run on a worker thread
//! while the calling thread watches for Ctrl-C (which interrupts the session) and reports
//! progress.

mod array;
mod cube;
mod dashboard;
mod errors;
mod run;
mod shard;

use pyo3::prelude::*;

#[pymodule]
fn _chunkcube(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cube::PyCube>()?;
    m.add_class::<array::PyArray>()?;
    m.add_class::<dashboard::PyDashboard>()?;
    m.add_function(wrap_pyfunction!(cube::ingest, m)?)?;
    m.add_function(wrap_pyfunction!(array::write_cube, m)?)?;
    m.add_function(wrap_pyfunction!(shard::write_cube_shard, m)?)?;
    m.add_function(wrap_pyfunction!(shard::commit, m)?)?;
    m.add(
        "MemoryLimitError",
        m.py().get_type::<errors::MemoryLimitError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Buffers above an eighth of a typical limit go back to the OS when freed (as the CLI).
    chunkcube::exec::tune_allocator(512 << 20);
    Ok(())
}
