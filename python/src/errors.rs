//! Library errors → Python exceptions, with the library's one-line message unchanged:
//! bad input → `ValueError`, a memory limit below the stated minimum → `MemoryLimitError`
//! (a `MemoryError`), storage → `OSError` (`FileExistsError` for an existing output),
//! an interruption → `KeyboardInterrupt`.

use chunkcube::cube::CubeError;
use chunkcube::exec::ExecError;
use chunkcube::ingest::IngestError;
use chunkcube::store::job::JobError;
use chunkcube::store::StoreError;
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyKeyboardInterrupt, PyMemoryError, PyOSError,
    PyRuntimeError, PyValueError,
};
use pyo3::PyErr;

pyo3::create_exception!(
    chunkcube,
    MemoryLimitError,
    PyMemoryError,
    "The memory limit is below what one task needs; the message states the minimum that works."
);

/// A store error: a bad URL is bad input, a missing cube a missing file, the rest storage.
pub(crate) fn store(e: &StoreError) -> PyErr {
    let msg = e.to_string();
    match e {
        // A store in an order chunkcube does not read: the data is wrong for it, not the disk.
        StoreError::BadUrl { .. } | StoreError::DimOrder { .. } => PyValueError::new_err(msg),
        StoreError::NotACube(_) | StoreError::NoSuchBucket { .. } => {
            PyFileNotFoundError::new_err(msg)
        }
        StoreError::Io { .. } | StoreError::Metadata { .. } | StoreError::Locked { .. } => {
            PyOSError::new_err(msg)
        }
    }
}

/// An execution error.
pub(crate) fn exec(e: &ExecError) -> PyErr {
    let msg = e.to_string();
    match e {
        ExecError::Invalid(_) => PyValueError::new_err(msg),
        ExecError::MemoryLimit { .. } => MemoryLimitError::new_err(msg),
        ExecError::Read(_) | ExecError::Write { .. } | ExecError::Spill { .. } => {
            PyOSError::new_err(msg)
        }
        ExecError::Store(s) => store(s),
        ExecError::Job(j) => job(j),
        ExecError::Exists(_) | ExecError::Occupied { .. } => PyFileExistsError::new_err(msg),
        ExecError::Interrupted => PyKeyboardInterrupt::new_err(msg),
        ExecError::Cancelled => PyRuntimeError::new_err(msg),
    }
}

/// A cube error.
pub(crate) fn cube(e: CubeError) -> PyErr {
    match &e {
        CubeError::Store(s) => store(s),
        CubeError::Exec(x) => exec(x),
        CubeError::Replaced(_) | CubeError::Output(_) => PyOSError::new_err(e.to_string()),
        CubeError::UnknownBand { .. }
        | CubeError::Selection { .. }
        | CubeError::BadArg { .. }
        | CubeError::Expr(_) => PyValueError::new_err(e.to_string()),
    }
}

/// A sharded job's error: its own storage problems are `OSError`, the rest (a bad shard,
/// another plan's job at the output, missing shards at commit) is bad input.
pub(crate) fn job(e: &JobError) -> PyErr {
    match e {
        JobError::Store(s) => store(s),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// An ingest error: tiles and manifests that cannot be read are storage errors, the rest is
/// bad input.
pub(crate) fn ingest(e: IngestError) -> PyErr {
    let msg = e.to_string();
    match &e {
        IngestError::Store(s) => store(s),
        IngestError::OutputExists { .. } => PyFileExistsError::new_err(msg),
        IngestError::Read { .. } | IngestError::Write { .. } => PyOSError::new_err(msg),
        IngestError::Stopped(_) | IngestError::Interrupted => PyKeyboardInterrupt::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}
