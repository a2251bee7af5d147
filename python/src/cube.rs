//! `chunkcube._chunkcube.Cube` (open, describe, query), window reads for the xarray backend,
//! and `ingest`.

use crate::array::PyArray;
use crate::dashboard::PyDashboard;
use crate::{errors, run};
use chunkcube::cube::CubeInfo;
use chunkcube::ingest::{IngestOptions, Sources};
use chunkcube::progress::LiveStatus;
use chunkcube::store::{layout::Codecs, parse_bytes};
use chunkcube::{ChunkSpec, Cube, ExecConfig, Query, Session};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// An open cube (see the Python class `chunkcube.Cube`).
#[pyclass(module = "chunkcube._chunkcube", name = "Cube", frozen)]
pub(crate) struct PyCube {
    cube: Cube,
}

fn bad(what: &str, value: &str, msg: &str) -> PyErr {
    PyValueError::new_err(format!("invalid {what} '{value}': {msg}"))
}

fn spec(what: &str, s: &str) -> PyResult<ChunkSpec> {
    ChunkSpec::parse(s).map_err(|e| bad(what, s, &e.to_string()))
}

/// The execution configuration from the Python keywords.
fn config(
    threads: Option<usize>,
    memory_limit: Option<&str>,
    spill_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
) -> PyResult<ExecConfig> {
    let mut c = ExecConfig::default();
    if let Some(m) = memory_limit {
        c.memory_limit = parse_bytes(m)
            .ok_or_else(|| bad("memory_limit", m, "expected a size such as 512MiB or 2GB"))?;
    }
    match threads {
        Some(0) => return Err(bad("threads", "0", "give at least 1")),
        Some(n) if n > 1024 => return Err(bad("threads", &n.to_string(), "at most 1024")),
        Some(n) => c.threads = n,
        None => {}
    }
    c.quiet = true;
    c.spill_dir = spill_dir;
    c.store.cache_dir = cache_dir;
    Ok(c)
}

#[pymethods]
impl PyCube {
    /// Open a cube (metadata only).
    #[staticmethod]
    #[pyo3(signature = (url, threads=None, memory_limit=None, spill_dir=None, cache_dir=None, dashboard=None))]
    fn open(
        py: Python<'_>,
        url: &str,
        threads: Option<usize>,
        memory_limit: Option<&str>,
        spill_dir: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
        dashboard: Option<Bound<'_, PyDashboard>>,
    ) -> PyResult<PyCube> {
        let mut cfg = config(threads, memory_limit, spill_dir, cache_dir)?;
        // The session's computations show on the dashboard.
        cfg.live = dashboard.and_then(|d| d.get().live());
        let url = url.to_string();
        let cube = py
            .detach(move || -> Result<Cube, chunkcube::cube::CubeError> {
                let session = Session::new(cfg)?;
                Cube::open_in(&url, session)
            })
            .map_err(errors::cube)?;
        Ok(PyCube { cube })
    }
    /// The cube's URL.
    #[getter]
    fn url(&self) -> String {
        self.cube.store().url().to_string()
    }
    /// Band names.
    #[getter]
    fn band_names(&self) -> Vec<String> {
        self.cube.band_names()
    }
    /// `chunkcube info --json`.
    fn info_json(&self, py: Python<'_>) -> PyResult<String> {
        let cube = self.cube.clone();
        let info = py
            .detach(move || CubeInfo::of(&cube))
            .map_err(errors::cube)?;
        Ok(serde_json::to_string(&info).unwrap_or_default())
    }
    /// Session statistics as JSON.
    fn stats_json(&self) -> String {
        serde_json::to_string(&self.cube.session().stats()).unwrap_or_default()
    }
    /// Stop the computations running in this cube's session (as Ctrl-C does).
    fn interrupt(&self) {
        self.cube.session().interrupt();
    }
    /// Forget cached decoded chunks.
    fn clear_cache(&self) {
        self.cube.session().clear_cache();
    }
    /// Run a query; returns `[(name, Array)]` (lazy with `chunks`, else loaded).
    #[pyo3(signature = (measurements=None, lon=None, lat=None, bbox=None, isel=None, time=None, chunks=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn load(
        &self,
        py: Python<'_>,
        measurements: Option<Vec<String>>,
        lon: Option<(f64, f64)>,
        lat: Option<(f64, f64)>,
        bbox: Option<[f64; 4]>,
        isel: Option<Vec<(String, u64, u64)>>,
        time: Option<(String, String)>,
        chunks: Option<&str>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(String, PyArray)>> {
        let mut q = Query::new();
        if let Some(m) = &measurements {
            let m: Vec<&str> = m.iter().map(|s| s.as_str()).collect();
            q = q.measurements(&m);
        }
        match (lon, lat) {
            (Some(lo), Some(la)) => q = q.lon_lat(lo, la),
            (None, None) => {}
            _ => {
                return Err(PyValueError::new_err(
                    "invalid selection: give both lon and lat",
                ))
            }
        }
        if let Some(b) = bbox {
            q = q.bbox(b);
        }
        for (d, a, b) in isel.unwrap_or_default() {
            q = q.isel(&d, a..b);
        }
        if let Some((a, b)) = &time {
            q = q.time(a, b).map_err(errors::cube)?;
        }
        if let Some(c) = chunks {
            q = q.chunks(spec("chunks", c)?);
        }
        let cube = self.cube.clone();
        // Eager loads compute: off the GIL, interruptible.
        let ds = run::blocking(py, self.cube.session(), progress, move || cube.load(&q))?
            .map_err(errors::cube)?;
        Ok(ds
            .names()
            .into_iter()
            .zip(ds.vars().cloned())
            .map(|(n, d)| (n, PyArray::new(d)))
            .collect())
    }
    /// Read a window `[t0:t1, y0:y1, x0:x1]` of a band as stored (the xarray backend's read):
    /// `(bytearray, dtype, shape)`; the GIL is released while reading.
    fn read<'py>(
        &self,
        py: Python<'py>,
        band: &str,
        window: [(u64, u64); 3],
    ) -> PyResult<(Bound<'py, PyByteArray>, &'static str, Vec<usize>)> {
        let mut q = Query::new().measurements(&[band]).chunks(ChunkSpec::Auto);
        for (d, (a, b)) in ["time", "y", "x"].iter().zip(window) {
            q = q.isel(d, a..b);
        }
        let cube = self.cube.clone();
        let name = band.to_string();
        let v = py
            .detach(move || {
                let ds = cube.load(&q)?;
                ds.get(&name).expect("queried band").compute()
            })
            .map_err(errors::cube)?;
        crate::array::buffer(py, &v)
    }
}

/// Ingest GeoTIFF tiles (a manifest or paths) into a cube; returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (out, manifest=None, paths=None, chunks=None, shards=None, compression=None, threads=None, overwrite=false, product=None, allow_huge=false, dashboard=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn ingest(
    py: Python<'_>,
    out: &str,
    manifest: Option<PathBuf>,
    paths: Option<Vec<PathBuf>>,
    chunks: Option<&str>,
    shards: Option<&str>,
    compression: Option<&str>,
    threads: Option<usize>,
    overwrite: bool,
    product: Option<String>,
    allow_huge: bool,
    dashboard: Option<Bound<'_, PyDashboard>>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let sources = match (manifest, paths) {
        (Some(m), None) => Sources::Manifest(m),
        (None, Some(p)) if !p.is_empty() => Sources::Paths(p),
        _ => {
            return Err(PyValueError::new_err(
                "ingest: give manifest=\"tiles.csv\" or paths=[...] (one of them)",
            ))
        }
    };
    let mut o = IngestOptions {
        quiet: true,
        overwrite,
        allow_huge,
        threads,
        live: dashboard.and_then(|d| d.get().live()),
        ..Default::default()
    };
    // The bar reads the chunk writes from the live status (the dashboard's, or one of its own).
    if progress.is_some() && o.live.is_none() {
        o.live = Some(LiveStatus::new("ingest"));
    }
    let chunks_bar = progress.zip(o.live.clone()).map(|(cb, live)| {
        let r = live.report();
        (cb, live, r.runs.len(), r.bytes_written)
    });
    if let Some(c) = chunks {
        o.chunks = spec("chunks", c)?;
    }
    if let Some(s) = shards {
        o.shards = Some(spec("shards", s)?);
    }
    if let Some(c) = compression {
        o.codecs = Codecs::parse(c).map_err(|e| bad("compression", c, &e))?;
    }
    if let Some(p) = product {
        o.product = p;
    }
    // Ctrl-C stops the ingest between chunks: nothing is committed, a re-run resumes.
    let cancel = Arc::new(AtomicBool::new(false));
    o.cancel = Some(cancel.clone());
    let out = out.to_string();
    let tick = |finished: bool| -> PyResult<()> {
        if let Some((cb, live, runs0, bytes0)) = &chunks_bar {
            if let Some((done, total, bytes)) = chunk_writes(live, *runs0, *bytes0) {
                cb.call1((done, total, finished, bytes))?;
            }
        }
        Ok(())
    };
    let result = run::cancellable(
        py,
        &cancel,
        || tick(false),
        move || chunkcube::ingest::ingest(&sources, &out, &o),
    )?;
    let report = result.map_err(errors::ingest)?;
    tick(true)?;
    Ok(serde_json::to_string(&report).unwrap_or_default())
}

/// Chunks written (or kept from an earlier run) and planned, and bytes written, by the
/// ingest's chunk-write run registered on `live` after its first `runs0` runs; `None` before
/// it begins (the tiles' scan) or when it never does (a cube already up to date).
fn chunk_writes(live: &LiveStatus, runs0: usize, bytes0: u64) -> Option<(u64, u64, u64)> {
    let r = live.report();
    let run = r.runs[runs0.min(r.runs.len())..]
        .iter()
        .rfind(|run| run.what == "ingesting chunks")?;
    let layers = r.layers.iter().filter(|l| l.run == run.id);
    let (done, total) = layers.fold((0, 0), |(d, t), l| (d + l.done, t + l.total));
    Some((done, total, r.bytes_written.saturating_sub(bytes0)))
}
