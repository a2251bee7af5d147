"""The same calc workloads as chunkcube, with xarray + dask, for bench/calc.sh.

usage: calc_dask.py CUBE OUT WORKLOAD [--distributed MEMORY_LIMIT]
WORKLOAD: ndvi (NDVI of every time step written to a Zarr v3 store), mean (NDVI mean over
time, written), median (median of nir over time, written).
"""
import sys
import time

import dask
import numpy as np
import xarray as xr


def main():
    cube, out, workload = sys.argv[1], sys.argv[2], sys.argv[3]
    client = None
    if "--distributed" in sys.argv:
        from dask.distributed import Client, LocalCluster

        limit = sys.argv[sys.argv.index("--distributed") + 1]
        cluster = LocalCluster(n_workers=1, threads_per_worker=2, memory_limit=limit, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        dask.config.set(scheduler="threads")
    t0 = time.time()
    ds = xr.open_zarr(cube, consolidated=False, decode_coords="all")
    if workload == "median":
        res = ds.nir.median("time", skipna=True).to_dataset(name="m")
    else:
        red = ds.red.astype("float32")  # nodata 0 is already NaN under default decoding
        nir = ds.nir.astype("float32")
        ndvi = (nir - red) / (nir + red)
        if workload == "mean":
            ndvi = ndvi.mean("time", skipna=True)
        res = ndvi.astype("float32").to_dataset(name="ndvi")
    for v in res.data_vars.values():
        v.encoding = {}
    res.to_zarr(out, mode="w", zarr_format=3, consolidated=False)
    print(f"{workload}: {time.time() - t0:.2f} s")
    if client is not None:
        client.close()


if __name__ == "__main__":
    main()
