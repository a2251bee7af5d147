"""Lazy ``DataArray`` and ``Dataset``: band math, functions and reductions build a chunk
task graph in Rust; ``compute()`` runs it (GIL released, Ctrl-C cancels, progress shown)
and returns ``xarray`` objects."""

from __future__ import annotations

import json
import numbers

import numpy as np

from . import _progress, _xr
from ._chunkcube import write_cube as _write_cube

_REDUCTIONS = ("mean", "median", "min", "max", "sum", "count", "std")


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("kiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _native(x):
    return x._a if isinstance(x, DataArray) else x


def _check_operand(x):
    if isinstance(x, DataArray) or (isinstance(x, numbers.Real) and not isinstance(x, bool)):
        return
    if isinstance(x, (np.generic,)) and np.issubdtype(type(x), np.number):
        return
    raise TypeError(f"cannot combine a chunkcube DataArray with {type(x).__name__}")


class DataArray:
    """A lazy array of a cube, dims ``(time, y, x)`` less any reduced ones.

    Nothing is read until ``compute()``. Arithmetic (``+ - * / **``, comparisons, ``& | ~``),
    functions (``cc.where``, ``cc.sqrt``, ``np.sqrt``, ``abs``, ``clip``, ``fillna``…) and
    reductions (``mean``, ``median``, ``min``, ``max``, ``sum``, ``count``, ``std``) chain lazily
    into one graph, fused per chunk. Integer bands are promoted to float32 before arithmetic
    (no uint16 wrap-around) and nodata becomes NaN.

    >>> ndvi = (ds.nir - ds.red) / (ds.nir + ds.red)   # doctest: +SKIP
    >>> ndvi.compute()                                  # doctest: +SKIP
    <xarray.DataArray (time: 1, y: 1000, x: 1000)> ...
    """

    __slots__ = ("_a", "_r")
    __array_priority__ = 100

    def __init__(self, native, recipe=None):
        self._a = native
        # How to build this array again in another process (Dask workers): a picklable tree
        # of native calls from ("load", ...) leaves; None when it cannot be (persisted).
        self._r = recipe
        err = native.error()
        if err is not None:
            raise ValueError(err)

    def _call(self, method: str, *args) -> "DataArray":
        """A native method's result, with the recipe that rebuilds it."""
        native = [a._a if isinstance(a, DataArray) else a for a in args]
        rec = None
        if self._r is not None and all(a._r is not None for a in args if isinstance(a, DataArray)):
            rec = ("call", self._r, method, tuple(("arr", a._r) if isinstance(a, DataArray) else ("val", a) for a in args))
        return DataArray(getattr(self._a, method)(*native), rec)

    # --- description ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The variable name."""
        return self._a.name

    @property
    def dims(self) -> tuple[str, ...]:
        """Dimension names."""
        return tuple(self._a.dims)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape along ``dims``."""
        return tuple(self._a.shape)

    @property
    def sizes(self) -> dict[str, int]:
        """``{dim: size}``."""
        return dict(zip(self.dims, self.shape))

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.dims)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self) -> np.dtype:
        """Element type of the result (float32 after arithmetic unless float64 was asked)."""
        return np.dtype(self._a.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole result."""
        return self.size * self.dtype.itemsize

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """Dask-style chunk sizes along each dimension."""
        out = []
        for n, c in zip(self.shape, self._a.chunks):
            full, rest = divmod(n, c)
            out.append((c,) * full + ((rest,) if rest else ()))
        return tuple(out)

    @property
    def chunksizes(self) -> dict[str, tuple[int, ...]]:
        """``{dim: chunk sizes}``, as xarray's."""
        return dict(zip(self.dims, self.chunks))

    @property
    def coords(self) -> dict:
        """Coordinates (``time`` as datetime64, ``y``/``x`` pixel centres), without reading."""
        return {k: (v[1] if isinstance(v, tuple) else v.values) for k, v in _xr.coords(self._a).items() if k != "spatial_ref"}

    @property
    def crs(self) -> str:
        """The CRS as WKT."""
        return self._a.geobox["wkt"]

    @property
    def attrs(self) -> dict:
        """``grid_mapping`` and, for a band as stored, its ``nodata``."""
        a = {"grid_mapping": "spatial_ref"}
        if self._a.nodata is not None:
            a["nodata"] = self._a.nodata
        return a

    @property
    def data(self) -> "DataArray":
        """This lazy array itself (``lazy_data.red.data.visualize()`` reads as with Dask)."""
        return self

    def __getitem__(self, key) -> "DataArray":
        """Positional slices, as ``red[:, 100:200, 100:200]`` (stays lazy)."""
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > self.ndim:
            raise IndexError(f"too many indices: {len(key)} for {self.ndim} dimensions {self.dims}")
        return self.isel({d: k for d, k in zip(self.dims, key) if not (isinstance(k, slice) and k == slice(None))})

    def summary(self) -> dict:
        """The chunk table's numbers: bytes, shape, chunk shape, chunks, tasks, dtype."""
        return json.loads(self._a.summary_json())

    def __repr__(self) -> str:
        lazy = "lazy" if self._a.is_lazy else "loaded"
        dims = ", ".join(f"{d}: {n}" for d, n in zip(self.dims, self.shape))
        head = f"<chunkcube.DataArray {self.name!r} ({dims})> {lazy}\n"
        body = self._a.summary_text()
        c = self.coords
        lines = []
        if "time" in c:
            t = [str(v)[:10] for v in c["time"][:4]]
            lines.append("  * time     (time) " + " ".join(t) + (" ..." if len(c["time"]) > 4 else ""))
        for d in ("y", "x"):
            if d in c:
                v = c[d]
                lines.append(f"  * {d:<8} ({d}) {v[0]:.1f} ... {v[-1]:.1f}")
        epsg = self._a.geobox["epsg"]
        lines.append(f"    spatial_ref  EPSG:{epsg}" if epsg else "    spatial_ref  (custom CRS)")
        return head + body + "Coordinates:\n" + "\n".join(lines)

    def _repr_html_(self) -> str:
        s = self.summary()
        tup = lambda v: "(" + ", ".join(str(x) for x in v) + ("," if len(v) == 1 else "") + ")"
        rows = [
            ("Bytes", _fmt_bytes(s["bytes"]), _fmt_bytes(s["chunk_bytes"])),
            ("Shape", tup(s["shape"]), tup(s["chunk_shape"])),
            ("Count", f"{s['tasks']} Tasks", f"{s['chunks']} Chunks"),
            ("Type", s["dtype"], "numpy.ndarray"),
        ]
        cells = "".join(f"<tr><th>{r[0]}</th><td>{r[1]}</td><td>{r[2]}</td></tr>" for r in rows)
        dims = ", ".join(f"<b>{d}</b>: {n}" for d, n in zip(self.dims, self.shape))
        return (
            f"<div><div>&lt;chunkcube.DataArray <b>{self.name}</b> ({dims})&gt;</div>"
            '<table style="border-collapse: collapse;">'
            "<thead><tr><td></td><th>Array</th><th>Chunk</th></tr></thead>"
            f"<tbody>{cells}</tbody></table></div>"
        )

    def explain(self) -> dict:
        """What computing will fetch and hold, before anything is read.

        Keys: ``chunks`` (stored chunks to fetch), ``bytes`` (their encoded bytes),
        ``requests`` (to the store), ``memory`` (projected peak of tracked memory), ``tasks``,
        and the library's detailed fields (``decoded_bytes``, ``output_chunks``,
        ``task_bytes``, ``memory_limit``, ``minimum_limit``…).
        """
        e = json.loads(self._a.explain_json())
        return {
            "chunks": e["stored_chunks"],
            "bytes": e["encoded_bytes"],
            "requests": e["requests"],
            "memory": e["projected_peak_bytes"],
            "tasks": e["tasks"],
            **e,
        }

    def visualize(self, filename: str | None = None):
        """The task graph, read bottom-up as Dask's: stored chunks → loads → ops → outputs.

        With ``filename`` ending ``.dot``, writes DOT; other extensions (``.svg``, ``.png``,
        ``.pdf``) are rendered by Graphviz's ``dot``. Returns a :class:`Graph`, which shows as
        SVG in Jupyter.
        """
        from ._graph import Graph

        g = Graph(self._a.visualize())
        if filename is not None:
            g.write(filename)
        return g

    # --- computing -----------------------------------------------------------------------
    def compute(self):
        """Compute into an ``xarray.DataArray`` with ``time``/``y``/``x`` coordinates, the CRS
        in ``spatial_ref`` (``.rio.crs`` works) and NaN for nodata. The GIL is released while
        Rust computes; Ctrl-C cancels cleanly (``KeyboardInterrupt``)."""
        buf, dtype, shape3 = self._a.compute(_progress.bar(f"computing {self.name}"))
        v = _xr.to_numpy(buf, dtype, shape3).reshape(self.shape)
        return _xr.to_dataarray(self._a, _xr.mask_nodata(v, self._a.nodata))

    def load(self):
        """Same as :meth:`compute` (returns the ``xarray.DataArray``)."""
        return self.compute()

    @property
    def values(self) -> np.ndarray:
        """The computed values as numpy (nodata as NaN)."""
        return self.compute().values

    def __array__(self, dtype=None, copy=None):
        v = self.values
        return v.astype(dtype) if dtype is not None else v

    def persist(self) -> "DataArray":  # noqa: D401
        """Compute once and keep the result in the session (memory, spilled when it does not
        fit); the returned array stays lazy and later computations read the kept chunks."""
        return DataArray(self._a.persist(_progress.bar(f"persisting {self.name}")))

    def to_zarr(self, store: str, *, overwrite: bool = False, client=None, shards: int | None = None):
        """Write as a new cube (local path or ``s3://``), as ``chunkcube calc --out``: chunk by
        chunk, never whole in memory, committed last (an interrupted write never looks
        complete). ``client`` (a ``dask.distributed.Client``) and ``shards`` run the write as
        ``shards`` Dask tasks (each rebuilds the computation in its worker and writes its share
        of the output chunks), then commit; returns the commit report."""
        return Dataset({self.name: self}).to_zarr(store, overwrite=overwrite, client=client, shards=shards)

    # --- building ------------------------------------------------------------------------
    def rename(self, name: str) -> "DataArray":
        """The same array under another name."""
        return self._call("rename", name)

    def chunk(self, chunks) -> "DataArray":
        """Rechunk the computation (``{"time": 1, "y": 512, "x": 512}``, ``"auto"``, ``"64MiB"``)."""
        return self._call("chunk", _xr.chunk_spec(chunks))

    def isel(self, indexers: dict | None = None, **kw) -> "DataArray":
        """Select index ranges: ``isel(y=slice(100, 200), x=slice(0, 50))`` (stays lazy)."""
        sel = dict(indexers or {}, **kw)
        out = []
        for d, s in sel.items():
            if d not in self.dims:
                raise ValueError(f"invalid selection isel {d}: no dimension '{d}'; dimensions are {list(self.dims)}")
            n = self.sizes[d]
            if isinstance(s, (int, np.integer)):
                i = int(s) + (n if s < 0 else 0)
                s = slice(i, i + 1)
            if not isinstance(s, slice) or s.step not in (None, 1):
                raise ValueError(f"invalid selection isel {d}: use a slice with step 1 or an integer")
            a, b, _ = s.indices(n)
            out.append((d, a, b))
        return self._call("isel", out)

    def sel(self, indexers: dict | None = None, **kw) -> "DataArray":
        """Select coordinate ranges (inclusive): ``sel(x=slice(x0, x1), time=slice("2019", "2020"))``."""
        sel = dict(indexers or {}, **kw)
        c = self.coords
        idx = {}
        for d, s in sel.items():
            if d not in c:
                raise ValueError(f"invalid selection sel {d}: no dimension '{d}'; dimensions are {list(self.dims)}")
            v = c[d]
            if not isinstance(s, slice):
                s = slice(s, s)
            lo, hi = s.start, s.stop
            if d == "time":
                conv = lambda t, end: None if t is None else _time_bound(t, end)
                lo, hi = conv(lo, False), conv(hi, True)
            else:
                if lo is not None and hi is not None and lo > hi:
                    lo, hi = hi, lo
            keep = np.ones(len(v), bool)
            if lo is not None:
                keep &= v >= lo
            if hi is not None:
                keep &= v <= hi
            w = np.nonzero(keep)[0]
            if len(w) == 0:
                raise ValueError(f"invalid selection sel {d}: {s.start}..{s.stop} selects nothing")
            idx[d] = slice(int(w[0]), int(w[-1]) + 1)
        return self.isel(idx)

    def _bin(self, op, other, reflected=False):
        _check_operand(other)
        return self._call("binary", op, other if isinstance(other, DataArray) else float(other), reflected)

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, True)
    def __truediv__(self, o): return self._bin("truediv", o)
    def __rtruediv__(self, o): return self._bin("truediv", o, True)
    def __pow__(self, o): return self._bin("pow", o)
    def __rpow__(self, o): return self._bin("pow", o, True)
    def __lt__(self, o): return self._bin("lt", o)
    def __le__(self, o): return self._bin("le", o)
    def __gt__(self, o): return self._bin("gt", o)
    def __ge__(self, o): return self._bin("ge", o)
    def __eq__(self, o): return self._bin("eq", o)  # type: ignore[override]
    def __ne__(self, o): return self._bin("ne", o)  # type: ignore[override]
    def __and__(self, o): return self._bin("and", o)
    def __rand__(self, o): return self._bin("and", o, True)
    def __or__(self, o): return self._bin("or", o)
    def __ror__(self, o): return self._bin("or", o, True)
    def __neg__(self): return self._call("unary", "neg")
    def __pos__(self): return self
    def __abs__(self): return self._call("unary", "abs")
    def __invert__(self): return self._call("unary", "not")
    __hash__ = None  # type: ignore[assignment]

    def __bool__(self):
        raise TypeError("the truth value of a lazy chunkcube DataArray is ambiguous; compute() it first")

    _UFUNCS = {"sqrt": "sqrt", "absolute": "abs", "fabs": "abs", "log": "log", "exp": "exp", "negative": "neg",
               "isnan": "isnull", "logical_not": "not"}
    _BINARY_UFUNCS = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "truediv",
                      "true_divide": "truediv", "power": "pow", "minimum": "minimum", "maximum": "maximum",
                      "fmin": "minimum", "fmax": "maximum", "less": "lt", "less_equal": "le", "greater": "gt",
                      "greater_equal": "ge", "equal": "eq", "not_equal": "ne", "logical_and": "and",
                      "logical_or": "or"}

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """``np.sqrt(da)``, ``np.maximum(a, b)``… stay lazy."""
        if method != "__call__" or kwargs:
            return NotImplemented
        if len(inputs) == 1 and ufunc.__name__ in self._UFUNCS:
            return inputs[0]._call("unary", self._UFUNCS[ufunc.__name__])
        if len(inputs) == 2 and ufunc.__name__ in self._BINARY_UFUNCS:
            a, b = inputs
            op = self._BINARY_UFUNCS[ufunc.__name__]
            return a._bin(op, b) if isinstance(a, DataArray) else b._bin(op, a, True)
        return NotImplemented

    def where(self, cond, other=np.nan) -> "DataArray":
        """``self`` where ``cond`` is true, else ``other`` (NaN by default), as xarray's."""
        return where(cond, self, other)

    def clip(self, min=None, max=None) -> "DataArray":
        """Clamp to ``[min, max]``."""
        lo = -np.inf if min is None else float(min)
        hi = np.inf if max is None else float(max)
        return self._call("clip", lo, hi)

    def fillna(self, value) -> "DataArray":
        """Replace missing values (nodata, NaN) by ``value``."""
        return self._bin("fillna", value)

    def isnull(self) -> "DataArray":
        """1 where missing, else 0."""
        return self._call("unary", "isnull")

    def notnull(self) -> "DataArray":
        """1 where valid, else 0."""
        return self._call("unary", "notnull")

    def astype(self, dtype) -> "DataArray":
        """Cast (integers round and saturate, missing becomes 0); ``float64`` computes
        everything after it in double precision."""
        return self._call("astype", np.dtype(dtype).name)

    def reduce(self, op: str, dim) -> "DataArray":
        """A nan-aware reduction (``op`` in mean, median, min, max, sum, count, std) over one
        dimension, or several for mean, min, max, sum and count."""
        dims = [dim] if isinstance(dim, str) else list(self.dims if dim is None else dim)
        if len(dims) == 1:
            return self._call("reduce", op, dims[0])
        if op in ("min", "max", "sum", "count"):
            inner = "sum" if op == "count" else op
            out = self._call("reduce", op, dims[0])
            for d in dims[1:]:
                out = out._call("reduce", inner, d)
            return out
        if op == "mean":
            return self.reduce("sum", dims) / self.reduce("count", dims)
        raise ValueError(f"invalid reduction {op} over {dims}: {op} reduces one dimension at a time")

    def mean(self, dim=None) -> "DataArray":
        """Nan-aware mean over ``dim`` (a name, names, or all)."""
        return self.reduce("mean", dim)

    def median(self, dim=None) -> "DataArray":
        """Nan-aware median over one dimension (spilled to disk when the stacks do not fit)."""
        return self.reduce("median", dim)

    def min(self, dim=None) -> "DataArray":
        """Nan-aware minimum."""
        return self.reduce("min", dim)

    def max(self, dim=None) -> "DataArray":
        """Nan-aware maximum."""
        return self.reduce("max", dim)

    def sum(self, dim=None) -> "DataArray":
        """Nan-aware sum (0 where no value is valid)."""
        return self.reduce("sum", dim)

    def count(self, dim=None) -> "DataArray":
        """Number of valid values."""
        return self.reduce("count", dim)

    def std(self, dim=None) -> "DataArray":
        """Nan-aware population standard deviation (ddof=0) over one dimension."""
        return self.reduce("std", dim)

    def stats(self) -> dict:
        """The session's statistics (chunks read, bytes read, tasks, peak tracked memory…)."""
        return json.loads(self._a.stats_json())


def _time_bound(t, end: bool) -> np.datetime64:
    """A time bound as datetime64[ns]: a year or a date; an end bound covers its whole period."""
    s = str(t)
    if isinstance(t, (int, np.integer)):
        s = f"{int(t):04d}"
    d = np.datetime64(s)
    if end:
        d = d + np.timedelta64(1, np.datetime_data(d.dtype)[0]) - np.timedelta64(1, "ns")
    return d.astype("datetime64[ns]")


def _as_operand(x):
    if isinstance(x, DataArray):
        return x
    _check_operand(x)
    return float(x)


def where(cond, x, y=np.nan) -> DataArray:
    """``x`` where ``cond`` is true, else ``y`` (arrays or numbers), lazily.

    >>> clear = cc.where(ds.red > 0, ds.red, 0)   # doctest: +SKIP
    """
    like = next((v for v in (x, y, cond) if isinstance(v, DataArray)), None)
    if like is None:
        raise TypeError("where: at least one operand must be a chunkcube DataArray")
    if not isinstance(x, DataArray):
        _check_operand(x)
        x = like._call("scalar", float(x))
    return x._call("where_", _as_operand(cond), _as_operand(y))


def _unary(name):
    def f(x: DataArray) -> DataArray:
        if not isinstance(x, DataArray):
            raise TypeError(f"{name}: expected a chunkcube DataArray, got {type(x).__name__}")
        return x._call("unary", name)

    f.__name__ = name
    f.__doc__ = f"Elementwise ``{name}`` (lazy)."
    return f


sqrt = _unary("sqrt")
log = _unary("log")
exp = _unary("exp")
isnull = _unary("isnull")
notnull = _unary("notnull")


def clip(x: DataArray, min=None, max=None) -> DataArray:
    """Clamp ``x`` to ``[min, max]`` (lazy)."""
    return x.clip(min, max)


def minimum(a, b) -> DataArray:
    """Elementwise minimum (NaN-propagating, lazy)."""
    return a._bin("minimum", b) if isinstance(a, DataArray) else b._bin("minimum", a, True)


def maximum(a, b) -> DataArray:
    """Elementwise maximum (NaN-propagating, lazy)."""
    return a._bin("maximum", b) if isinstance(a, DataArray) else b._bin("maximum", a, True)


class Dataset:
    """Named lazy variables on one grid, as ``xarray.Dataset``: ``ds.red``, ``ds["nir"]``."""

    def __init__(self, data_vars: dict | None = None):
        self._vars: dict[str, DataArray] = {}
        for k, v in (data_vars or {}).items():
            self[k] = v

    @property
    def data_vars(self) -> dict[str, DataArray]:
        """The variables."""
        return dict(self._vars)

    def __getitem__(self, name: str) -> DataArray:
        try:
            return self._vars[name]
        except KeyError:
            raise KeyError(f"no variable '{name}' in the dataset; it has {list(self._vars)}") from None

    def __setitem__(self, name: str, value: DataArray) -> None:
        if not isinstance(value, DataArray):
            raise TypeError(f"a Dataset holds chunkcube DataArrays, not {type(value).__name__}")
        self._vars[name] = value.rename(name)

    def __getattr__(self, name: str) -> DataArray:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._vars[name]
        except KeyError:
            raise AttributeError(f"no variable '{name}' in the dataset; it has {list(self._vars)}") from None

    def __contains__(self, name) -> bool:
        return name in self._vars

    def __iter__(self):
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)

    def __dir__(self):
        return list(super().__dir__()) + list(self._vars)

    @property
    def sizes(self) -> dict[str, int]:
        """``{dim: size}`` of the variables' grid."""
        first = next(iter(self._vars.values()), None)
        return {} if first is None else first.sizes

    dims = sizes

    def __repr__(self) -> str:
        dims = ", ".join(f"{d}: {n}" for d, n in self.sizes.items())
        lines = [f"<chunkcube.Dataset>", f"Dimensions:  ({dims})", "Data variables:"]
        for n, v in self._vars.items():
            c = ", ".join(str(x) for x in v._a.chunks)
            state = f"lazy, chunksize=({c})" if v._a.is_lazy else "loaded"
            lines.append(f"    {n:<8} ({', '.join(v.dims)}) {v.dtype} {state}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return "".join(v._repr_html_() for v in self._vars.values()) or "<div>&lt;chunkcube.Dataset&gt; (empty)</div>"

    def isel(self, indexers=None, **kw) -> "Dataset":
        """:meth:`DataArray.isel` on every variable."""
        return Dataset({k: v.isel(indexers, **kw) for k, v in self._vars.items()})

    def sel(self, indexers=None, **kw) -> "Dataset":
        """:meth:`DataArray.sel` on every variable."""
        return Dataset({k: v.sel(indexers, **kw) for k, v in self._vars.items()})

    def compute(self):
        """Compute every variable into an ``xarray.Dataset``."""
        import xarray as xr

        return xr.Dataset({k: v.compute() for k, v in self._vars.items()})

    load = compute

    def to_zarr(self, store: str, *, overwrite: bool = False, client=None, shards: int | None = None):
        """Write the variables as a new cube (see :meth:`DataArray.to_zarr`)."""
        if not self._vars:
            raise ValueError("to_zarr: the dataset is empty")
        arrays = [v._a for v in self._vars.values()]
        if client is not None or shards is not None:
            from ._distributed import to_zarr_distributed

            return to_zarr_distributed(list(self._vars.values()), store, overwrite=overwrite, client=client, shards=shards)
        _write_cube(arrays, store, overwrite, _progress.bar(f"writing {store}"))
