//! `chunkcube._chunkcube.Dashboard`: the command line's `--dashboard` page, served from the
//! notebook's process for the cubes opened (and ingests run) with it.

use chunkcube::dashboard::{Dashboard, DashboardError, DEFAULT_ADDR};
use chunkcube::progress::LiveStatus;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use std::sync::{Arc, Mutex};

/// A running dashboard (see the Python class `chunkcube.Dashboard`).
#[pyclass(module = "chunkcube._chunkcube", name = "Dashboard", frozen)]
pub(crate) struct PyDashboard {
    url: String,
    status: Arc<LiveStatus>,
    /// `None` once closed.
    server: Mutex<Option<Dashboard>>,
}

impl PyDashboard {
    /// The status the work feeds (while the page is up).
    pub(crate) fn live(&self) -> Option<Arc<LiveStatus>> {
        let s = self.server.lock().unwrap_or_else(|e| e.into_inner());
        s.as_ref().map(|_| self.status.clone())
    }
}

fn error(e: DashboardError) -> PyErr {
    match e {
        DashboardError::Address { addr, msg } => {
            PyValueError::new_err(format!("invalid dashboard address '{addr}': {msg}"))
        }
        DashboardError::Bind { addr, source } => {
            PyOSError::new_err(format!("dashboard {addr}: cannot listen: {source}"))
        }
    }
}

#[pymethods]
impl PyDashboard {
    /// Start serving at `address` (`HOST:PORT` or `PORT`; port 0: any free one). Without
    /// one: 127.0.0.1:8787, or a free port on 127.0.0.1 when that one is taken (as Dask does).
    #[new]
    #[pyo3(signature = (address=None))]
    fn new(address: Option<&str>) -> PyResult<PyDashboard> {
        let status = LiveStatus::session("notebook");
        let server = match address {
            Some(a) => Dashboard::start(a, status.clone()),
            None => Dashboard::start(DEFAULT_ADDR, status.clone())
                .or_else(|_| Dashboard::start("127.0.0.1:0", status.clone())),
        }
        .map_err(error)?;
        Ok(PyDashboard {
            url: server.url(),
            status,
            server: Mutex::new(Some(server)),
        })
    }
    /// The page's URL.
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }
    /// Whether the page is still served.
    #[getter]
    fn running(&self) -> bool {
        self.live().is_some()
    }
    /// What `/status.json` serves now.
    fn status_json(&self) -> String {
        serde_json::to_string(&self.status.report()).unwrap_or_default()
    }
    /// Stop serving (the work goes on without it).
    fn close(&self) {
        let mut s = self.server.lock().unwrap_or_else(|e| e.into_inner());
        if s.take().is_some() {
            self.status.finish(Ok(None));
        }
    }
}
