"""Conversions: native buffers → numpy, grids → xarray coordinates (time, y, x and a
rioxarray-style ``spatial_ref``), chunk dicts → chunk specs."""

from __future__ import annotations

import numpy as np

DIMS = ("time", "y", "x")


def chunk_spec(chunks) -> str | None:
    """``{"time": 1, "y": 3000}`` / ``"time=1,y=3000"`` / ``"auto"`` / ``"64MiB"`` → spec text."""
    if chunks is None:
        return None
    if isinstance(chunks, str):
        return chunks
    if isinstance(chunks, int):
        return f"{chunks}B" if chunks > 0 else "auto"
    if isinstance(chunks, dict):
        if not chunks:
            return "auto"
        parts = []
        for k, v in chunks.items():
            if k not in DIMS:
                raise ValueError(f"invalid chunks {chunks!r}: unknown dimension '{k}' (time, y, x)")
            if v is None:
                v = -1
            if isinstance(v, str):
                raise ValueError(f"invalid chunks {chunks!r}: '{k}' needs an integer (-1: whole)")
            parts.append(f"{k}={int(v)}")
        return ",".join(parts)
    raise ValueError(f"invalid chunks {chunks!r}: give a dict such as {{'time': 1, 'y': 1024, 'x': 1024}}")


def to_numpy(buf, dtype: str, shape) -> np.ndarray:
    """A native result buffer as an array (no copy)."""
    return np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape)


def mask_nodata(a: np.ndarray, nodata) -> np.ndarray:
    """What xarray's default decoding does to a band with ``_FillValue``: float, nodata → NaN."""
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        return a
    out = a.astype(np.float32 if a.dtype.itemsize <= 2 else np.float64)
    out[a == nodata] = np.nan
    return out


def times_to_datetime(micros) -> np.ndarray:
    return (np.asarray(micros, dtype="int64").astype("datetime64[us]")).astype("datetime64[ns]")


def x_coords(g) -> np.ndarray:
    t = g["transform"]
    return t[0] + (np.arange(g["width"], dtype=np.float64) + 0.5) * t[1]


def y_coords(g) -> np.ndarray:
    t = g["transform"]
    return t[3] + (np.arange(g["height"], dtype=np.float64) + 0.5) * t[5]


def spatial_ref(g):
    import xarray as xr

    # As the cube stores it (Rust's shortest round-trip form: 10, not 10.0).
    gt = " ".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in g["transform"])
    return xr.Variable(
        (),
        np.int64(g["epsg"] or 0),  # as the cube stores it
        attrs={"crs_wkt": g["wkt"], "spatial_ref": g["wkt"], "GeoTransform": gt},
    )


def coords(native) -> dict:
    """The coordinates of a native array's present dimensions, and ``spatial_ref``."""
    import xarray as xr

    g = native.geobox
    c = {}
    dims = native.dims
    if "time" in dims:
        c["time"] = ("time", times_to_datetime(native.times))
    if "y" in dims:
        c["y"] = ("y", y_coords(g))
    if "x" in dims:
        c["x"] = ("x", x_coords(g))
    c["spatial_ref"] = spatial_ref(g)
    return c


def to_dataarray(native, values: np.ndarray):
    """An ``xarray.DataArray`` of computed values, with coordinates, CRS and NaN nodata."""
    import xarray as xr

    try:  # registers the `.rio` accessor when rioxarray is installed
        import rioxarray  # noqa: F401
    except ImportError:
        pass
    da = xr.DataArray(values, dims=native.dims, coords=coords(native), name=native.name)
    da.encoding["grid_mapping"] = "spatial_ref"
    return da
