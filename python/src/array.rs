//! `chunkcube._chunkcube.Array`: a lazy (or loaded) [`DataArray`], its operators, and its
//! computation into a buffer that the Python layer wraps as numpy / xarray.

use crate::{errors, run};
use chunkcube::graph::{BinaryOp, ReduceOp, UnaryOp};
use chunkcube::store::Values;
use chunkcube::{ChunkSpec, DType, DataArray, Dataset};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict};

/// A lazy array of a cube (see the Python class `chunkcube.DataArray`).
#[pyclass(module = "chunkcube._chunkcube", name = "Array", frozen)]
#[derive(Clone)]
pub(crate) struct PyArray {
    pub(crate) inner: DataArray,
    /// The stored nodata of a band read as stored (`None` once computed on: NaN marks it).
    nodata: Option<f64>,
}

impl PyArray {
    pub(crate) fn new(inner: DataArray) -> PyArray {
        let nodata = match &inner.node().op {
            chunkcube::graph::Op::Source { src, .. } => src.nodata(),
            _ => None,
        };
        PyArray { inner, nodata }
    }
    fn derived(&self, inner: DataArray) -> PyArray {
        PyArray::new(inner)
    }
}

fn binary_op(name: &str) -> PyResult<BinaryOp> {
    Ok(match name {
        "add" => BinaryOp::Add,
        "sub" => BinaryOp::Sub,
        "mul" => BinaryOp::Mul,
        "truediv" => BinaryOp::Div,
        "lt" => BinaryOp::Lt,
        "le" => BinaryOp::Le,
        "gt" => BinaryOp::Gt,
        "ge" => BinaryOp::Ge,
        "eq" => BinaryOp::Eq,
        "ne" => BinaryOp::Ne,
        "and" => BinaryOp::And,
        "or" => BinaryOp::Or,
        "fillna" => BinaryOp::FillNa,
        "minimum" => BinaryOp::Min,
        "maximum" => BinaryOp::Max,
        "pow" => BinaryOp::Pow,
        _ => return Err(PyValueError::new_err(format!("unknown operator '{name}'"))),
    })
}

fn unary_op(name: &str) -> PyResult<UnaryOp> {
    Ok(match name {
        "neg" => UnaryOp::Neg,
        "abs" => UnaryOp::Abs,
        "sqrt" => UnaryOp::Sqrt,
        "isnull" => UnaryOp::IsNull,
        "notnull" => UnaryOp::NotNull,
        "not" => UnaryOp::Not,
        "log" => UnaryOp::Log,
        "exp" => UnaryOp::Exp,
        _ => return Err(PyValueError::new_err(format!("unknown function '{name}'"))),
    })
}

/// An operand: another array, or a number broadcast on `like`'s grid.
fn operand(like: &DataArray, o: &Bound<'_, PyAny>) -> PyResult<DataArray> {
    if let Ok(a) = o.cast::<PyArray>() {
        return Ok(a.get().inner.clone());
    }
    if let Ok(v) = o.extract::<f64>() {
        return Ok(like.scalar(v));
    }
    Err(PyTypeError::new_err(format!(
        "cannot combine a chunkcube array with {}",
        o.get_type().name()?
    )))
}

/// Values as (bytearray, dtype name, shape): one copy, wrapped by numpy without another.
pub(crate) fn buffer<'py>(
    py: Python<'py>,
    v: &Values,
) -> PyResult<(Bound<'py, PyByteArray>, &'static str, Vec<usize>)> {
    let dtype = v.dtype().zarr_name();
    let shape = v.shape();
    let bytes = chunkcube::on_values!(v, a => {
        let a = a.as_standard_layout();
        let s = a.as_slice().expect("standard layout");
        // SAFETY: plain numeric elements, viewed as their bytes.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
            .to_vec()
    });
    Ok((PyByteArray::new(py, &bytes), dtype, shape))
}

fn reduce_op(op: &str) -> PyResult<ReduceOp> {
    ReduceOp::parse(op).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown reduction '{op}'; use mean, median, min, max, sum, count or std"
        ))
    })
}

#[pymethods]
impl PyArray {
    /// The variable name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }
    /// A copy under another name.
    fn rename(&self, name: &str) -> PyArray {
        PyArray {
            inner: self.inner.clone().rename(name),
            nodata: self.nodata,
        }
    }
    /// Present dimension names.
    #[getter]
    fn dims(&self) -> Vec<&'static str> {
        self.inner.dims()
    }
    /// Shape along the present dimensions.
    #[getter]
    fn shape(&self) -> Vec<u64> {
        self.inner.shape()
    }
    /// Query chunk shape along the present dimensions.
    #[getter]
    fn chunks(&self) -> Vec<u64> {
        let c = self.inner.chunks3();
        let p = self.inner.node().present;
        (0..3).filter(|i| p[*i]).map(|i| c[i]).collect()
    }
    /// Element type (numpy name).
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.dtype().zarr_name()
    }
    /// The stored nodata value of a band read as stored.
    #[getter]
    fn nodata(&self) -> Option<f64> {
        self.nodata
    }
    /// Time coordinates, microseconds since 1970-01-01 (times of day kept; empty once time
    /// is reduced).
    #[getter]
    fn times(&self) -> Vec<i64> {
        self.inner.times().iter().map(|t| t.micros()).collect()
    }
    /// The grid: `{wkt, epsg, transform, width, height}` (transform as GDAL's geotransform).
    #[getter]
    fn geobox<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let g = self.inner.geobox();
        let d = PyDict::new(py);
        d.set_item("wkt", &g.wkt)?;
        d.set_item("epsg", g.epsg)?;
        d.set_item("transform", g.transform.to_vec())?;
        d.set_item("width", g.width)?;
        d.set_item("height", g.height)?;
        Ok(d)
    }
    /// Whether values are not held yet.
    #[getter]
    fn is_lazy(&self) -> bool {
        self.inner.is_lazy()
    }
    /// The chunk table as JSON (bytes, shape, chunks, tasks, dtype).
    fn summary_json(&self) -> String {
        serde_json::to_string(&self.inner.summary()).unwrap_or_default()
    }
    /// The chunk table as text (Dask's layout).
    fn summary_text(&self) -> String {
        self.inner.summary().to_string()
    }
    /// What computing will fetch and hold, as JSON.
    fn explain_json(&self) -> String {
        serde_json::to_string(&self.inner.explain()).unwrap_or_default()
    }
    /// The task graph, Graphviz DOT.
    fn visualize(&self) -> String {
        self.inner.visualize()
    }
    /// An elementwise binary operation; `reflected` puts the other operand first.
    fn binary(&self, op: &str, other: &Bound<'_, PyAny>, reflected: bool) -> PyResult<PyArray> {
        let op = binary_op(op)?;
        let o = operand(&self.inner, other)?;
        Ok(self.derived(if reflected {
            o.apply(op, &self.inner)
        } else {
            self.inner.apply(op, &o)
        }))
    }
    /// A constant on this array's grid (broadcasts to any shape).
    fn scalar(&self, v: f64) -> PyArray {
        self.derived(self.inner.scalar(v))
    }
    /// An elementwise function (neg, abs, sqrt, isnull, notnull, not, log, exp).
    fn unary(&self, op: &str) -> PyResult<PyArray> {
        Ok(self.derived(self.inner.unary_op(unary_op(op)?)))
    }
    /// `self` where `cond`, else `other` (arrays or numbers).
    fn where_(&self, cond: &Bound<'_, PyAny>, other: &Bound<'_, PyAny>) -> PyResult<PyArray> {
        let c = operand(&self.inner, cond)?;
        let o = operand(&self.inner, other)?;
        Ok(self.derived(self.inner.where_(&c, &o)))
    }
    /// Clamp to `[lo, hi]`.
    fn clip(&self, lo: f64, hi: f64) -> PyArray {
        self.derived(self.inner.clip(lo, hi))
    }
    /// Cast to a dtype (uint8, uint16, int16, uint32, int32, float32, float64).
    fn astype(&self, dtype: &str) -> PyResult<PyArray> {
        let d = DType::from_zarr_name(dtype).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unsupported dtype '{dtype}'; use uint8, uint16, int16, uint32, int32, float32 or float64"
            ))
        })?;
        Ok(self.derived(self.inner.astype(d)))
    }
    /// A nan-aware reduction over `dim`.
    fn reduce(&self, op: &str, dim: &str) -> PyResult<PyArray> {
        let r = self.inner.reduce(reduce_op(op)?, dim);
        if let Some(msg) = r.node().first_error() {
            return Err(PyValueError::new_err(msg));
        }
        Ok(self.derived(r))
    }
    /// Index ranges `{dim: (start, stop)}` (stays lazy).
    fn isel(&self, sel: Vec<(String, u64, u64)>) -> PyResult<PyArray> {
        let s: Vec<(&str, std::ops::Range<u64>)> =
            sel.iter().map(|(d, a, b)| (d.as_str(), *a..*b)).collect();
        let out = self.inner.isel(&s).map_err(errors::cube)?;
        Ok(PyArray {
            inner: out,
            nodata: self.nodata,
        })
    }
    /// Rechunk (query chunks only), from a chunk spec such as `time=1,y=512,x=512`.
    fn chunk(&self, spec: &str) -> PyResult<PyArray> {
        let spec = ChunkSpec::parse(spec).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyArray {
            inner: self.inner.clone().chunk(&spec),
            nodata: self.nodata,
        })
    }
    /// The first error of the graph, if it cannot be computed (mismatched operands…).
    fn error(&self) -> Option<String> {
        self.inner.node().first_error()
    }
    /// Compute (GIL released, Ctrl-C cancels) into `(bytearray, dtype, shape3)`.
    #[pyo3(signature = (progress=None))]
    fn compute<'py>(
        &self,
        py: Python<'py>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyByteArray>, &'static str, Vec<usize>)> {
        let da = self.inner.clone();
        let v = run::blocking(py, self.inner.session(), progress, move || da.compute())?
            .map_err(errors::cube)?;
        buffer(py, &v)
    }
    /// Compute once and keep the result in the session (the array stays lazy).
    #[pyo3(signature = (progress=None))]
    fn persist(&self, py: Python<'_>, progress: Option<&Bound<'_, PyAny>>) -> PyResult<PyArray> {
        let mut da = self.inner.clone();
        let da = run::blocking(py, self.inner.session(), progress, move || {
            da.persist().map(|_| da)
        })?
        .map_err(errors::cube)?;
        Ok(self.derived(da))
    }
    /// Session statistics as JSON (chunks read, bytes read, tasks, peak tracked memory…).
    fn stats_json(&self) -> String {
        serde_json::to_string(&self.inner.session().stats()).unwrap_or_default()
    }
}

/// Write arrays of one grid as a new cube (chunk by chunk, committed last).
#[pyfunction]
#[pyo3(signature = (arrays, url, overwrite=false, progress=None))]
pub(crate) fn write_cube(
    py: Python<'_>,
    arrays: Vec<Bound<'_, PyArray>>,
    url: &str,
    overwrite: bool,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let Some(first) = arrays.first() else {
        return Err(PyValueError::new_err("to_zarr: nothing to write"));
    };
    let session = first.get().inner.session().clone();
    let mut ds = Dataset::new();
    for a in &arrays {
        let a = &a.get().inner;
        if let Some(msg) = a.node().first_error() {
            return Err(PyValueError::new_err(msg));
        }
        ds.insert(a.name(), a.clone());
    }
    let url = url.to_string();
    run::blocking(py, &session, progress, move || ds.to_zarr(&url, overwrite))?
        .map_err(errors::cube)
}
