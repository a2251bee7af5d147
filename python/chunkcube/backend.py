"""The xarray backend: ``xr.open_dataset(cube, engine="chunkcube", chunks={})``.

Variables are lazily indexed: each read (a window of one band, or one Dask chunk with
``chunks={}``, which follows the stored chunks) goes through chunkcube's reader, with the GIL
released, and returns the stored values; xarray's CF decoding then masks nodata to NaN and
decodes time, exactly as for ``xr.open_zarr``.
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from . import _xr
from ._chunkcube import Cube as _NativeCube


class ChunkcubeBackendArray(BackendArray):
    """One band of a cube, read window by window through chunkcube."""

    def __init__(self, cube: _NativeCube, band: str, shape, dtype):
        self.cube = cube
        self.band = band
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._raw)

    def _raw(self, key: tuple) -> np.ndarray:
        window, squeeze = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, slice):
                a, b, step = k.indices(n)
                assert step == 1, "BASIC indexing with steps is handled by xarray"
                window.append((a, max(a, b)))
            else:
                i = int(k) + (n if k < 0 else 0)
                window.append((i, i + 1))
                squeeze.append(axis)
        if any(a == b for a, b in window):
            shape = [b - a for a, b in window]
            out = np.empty(shape, self.dtype)
        else:
            buf, dtype, shape = self.cube.read(self.band, window)
            out = _xr.to_numpy(buf, dtype, shape)
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out


class ChunkcubeBackendEntrypoint(BackendEntrypoint):
    """Open a chunkcube cube (local path or ``s3://``) as an ``xarray.Dataset``.

    ``xr.open_dataset("cube", engine="chunkcube", chunks={})`` gives Dask arrays in the
    stored chunks whose reads go through chunkcube. Extra keywords: ``measurements`` (band
    names), ``threads``, ``memory_limit``, ``cache_dir`` (for ``s3://``).
    """

    description = "Open chunkcube Zarr v3 cubes (local or s3://) through chunkcube's reader"
    url = "https://github.com/chunkcube/chunkcube"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "mask_and_scale", "decode_times",
                               "measurements", "threads", "memory_limit", "cache_dir")

    def open_dataset(
        self,
        filename_or_obj,
        *,
        drop_variables=None,
        mask_and_scale=True,
        decode_times=True,
        measurements=None,
        threads=None,
        memory_limit=None,
        cache_dir=None,
    ) -> xr.Dataset:
        from ._cube import _limit, _path

        url = os.fspath(filename_or_obj)
        cube = _NativeCube.open(url, threads=threads, memory_limit=_limit(memory_limit),
                                spill_dir=None, cache_dir=_path(cache_dir))
        bands = list(measurements) if measurements is not None else list(cube.band_names)
        drop = set([drop_variables] if isinstance(drop_variables, str) else (drop_variables or []))
        bands = [b for b in bands if b not in drop]
        if not bands:
            raise ValueError(f"{url}: no band left to open (drop_variables={sorted(drop)})")
        arrays = dict(cube.load(measurements=bands, chunks="auto"))
        info = {b["name"]: b for b in __import__("json").loads(cube.info_json())["bands"]}
        first = arrays[bands[0]]
        g = first.geobox
        variables = {}
        for b in bands:
            a = arrays[b]
            attrs = {"grid_mapping": "spatial_ref"}
            if a.nodata is not None:
                attrs["_FillValue"] = np.array(a.nodata).astype(a.dtype)[()]
            data = indexing.LazilyIndexedArray(ChunkcubeBackendArray(cube, b, a.shape, a.dtype))
            chunks = dict(zip(_xr.DIMS, info[b]["chunk_shape"]))
            variables[b] = xr.Variable(_xr.DIMS, data, attrs, {"preferred_chunks": chunks, "dtype": np.dtype(a.dtype)})
        coords = {
            "time": xr.Variable("time", np.asarray(first.times, "int64"),
                                {"units": "microseconds since 1970-01-01", "calendar": "proleptic_gregorian"}),
            "y": xr.Variable("y", _xr.y_coords(g)),
            "x": xr.Variable("x", _xr.x_coords(g)),
            "spatial_ref": _xr.spatial_ref(g),
        }
        ds = xr.Dataset(variables, coords=coords)
        ds = xr.decode_cf(ds, mask_and_scale=mask_and_scale, decode_times=decode_times)
        ds.attrs["source"] = url
        ds.set_close(None)
        return ds

    def guess_can_open(self, filename_or_obj) -> bool:
        try:
            p = os.fspath(filename_or_obj)
        except TypeError:
            return False
        meta = os.path.join(p, "zarr.json")
        if not os.path.isfile(meta):
            return False
        with open(meta, "rb") as f:
            return b'"chunkcube"' in f.read(1 << 16)
