"""chunkcube: out-of-core Zarr v3 cubes for Earth-observation rasters, in notebooks.

The path of DE Africa's "Parallel processing with Dask" notebook::

    import chunkcube as cc
    cc.ingest(manifest="tiles.csv", out="cube", chunks={"time": 1, "y": 1024, "x": 1024})
    cube = cc.open("cube")                      # local path or s3://bucket/prefix
    ds = cube.load(measurements=["red", "nir"], lon=(24, 25.5), lat=(-21.5, -20),
                   time=("2019", "2019"), chunks={"time": 1, "x": 3000, "y": 3000})
    ds.red                                      # lazy; the chunk table, as Dask's
    ndvi = (ds.nir - ds.red) / (ds.nir + ds.red)  # lazy, float32, nodata -> NaN
    ndvi.explain()                              # chunks, bytes, requests, memory, tasks
    ndvi.visualize("ndvi.svg")                  # the task graph
    x = ndvi.compute()                          # xarray.DataArray with coords and CRS
    ndvi.mean("time").compute()                 # nan-aware reductions
    ndvi.rename("ndvi").to_zarr("out")          # a new cube, as `chunkcube calc --out`

``xr.open_dataset("cube", engine="chunkcube", chunks={})`` reads cubes through chunkcube;
``cc.open("cube", dashboard=True)`` shows its computations live on a page whose link it prints.
"""

from ._chunkcube import __version__
from ._errors import MemoryLimitError
from ._progress import set_options
from ._array import DataArray, Dataset, where, sqrt, log, exp, clip, isnull, notnull, minimum, maximum
from ._graph import Graph
from ._cube import Cube, open, ingest
from ._dashboard import Dashboard, dashboard

__all__ = [
    "__version__",
    "Cube",
    "DataArray",
    "Dashboard",
    "Dataset",
    "Graph",
    "MemoryLimitError",
    "clip",
    "dashboard",
    "exp",
    "ingest",
    "isnull",
    "log",
    "maximum",
    "minimum",
    "notnull",
    "open",
    "set_options",
    "sqrt",
    "where",
]
