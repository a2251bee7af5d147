"""Python-side workloads for bench/python.sh: chunkcube from Python, and its reference
tools on the same cube.

usage: python_bench.py ndvi|mean CUBE OUT        chunkcube from Python, result written as a cube
       python_bench.py latency CUBE [N]          open + 100x100 window: chunkcube, xarray, zarr-python
"""
import json
import statistics
import sys
import time

import numpy as np


def workload(kind, cube, out):
    import chunkcube as cc

    cc.set_options(progress=False)
    t0 = time.time()
    c = cc.open(cube)
    chunks = dict(zip(("time", "y", "x"), next(b for b in c.info()["bands"] if b["name"] == "red")["chunk_shape"]))
    ds = c.load(measurements=["red", "nir"], chunks=chunks)
    ndvi = (ds.nir - ds.red) / (ds.nir + ds.red)
    if kind == "mean":
        ndvi = ndvi.mean("time")
    ndvi.rename("ndvi").to_zarr(out, overwrite=True)
    print(f"{kind}: {time.time() - t0:.2f} s")


def latency(cube, n):
    import chunkcube as cc
    import xarray as xr
    import zarr

    cc.set_options(progress=False)
    g = zarr.open_group(cube, mode="r")
    _, ny, nx = g["red"].shape
    cy, cx = g["red"].chunks[1:]
    # windows inside distinct stored chunks, away from their edges: each touches one chunk
    spots = [((i * 7919) % (ny // cy) * cy + 10, (i * 104729) % (nx // cx) * cx + 10) for i in range(n)]
    res = {}

    def timed(name, open_, read):
        opens, reads = [], []
        for y, x in spots:
            t = time.perf_counter()
            h = open_()
            t1 = time.perf_counter()
            v = read(h, y, x)
            t2 = time.perf_counter()
            assert v.shape[-2:] == (100, 100), v.shape
            opens.append(t1 - t)
            reads.append(t2 - t1)
        res[name] = {"open_ms": 1e3 * statistics.median(opens), "window_ms": 1e3 * statistics.median(reads)}

    timed("chunkcube (Python)", lambda: cc.open(cube, threads=2),
          lambda c, y, x: c.load(measurements=["red"], isel={"time": (0, 1), "y": (y, y + 100), "x": (x, x + 100)}).red.values)
    timed("xarray open_zarr (no dask)", lambda: xr.open_zarr(cube, consolidated=False, chunks=None),
          lambda d, y, x: d.red.isel(time=0, y=slice(y, y + 100), x=slice(x, x + 100)).values)
    timed("xarray open_zarr + dask", lambda: xr.open_zarr(cube, consolidated=False),
          lambda d, y, x: d.red.isel(time=0, y=slice(y, y + 100), x=slice(x, x + 100)).values)
    timed("zarr-python", lambda: zarr.open_group(cube, mode="r"),
          lambda z, y, x: np.asarray(z["red"][0, y : y + 100, x : x + 100]))
    for k, v in res.items():
        print(f"{k:<28} open {v['open_ms']:8.2f} ms   window {v['window_ms']:8.2f} ms")
    print(json.dumps(res))


if __name__ == "__main__":
    if sys.argv[1] == "latency":
        latency(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20)
    else:
        workload(sys.argv[1], sys.argv[2], sys.argv[3])
