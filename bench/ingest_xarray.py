#!/usr/bin/env python3
"""The xarray way to ingest: rioxarray opens every tile lazily (dask chunks), xarray mosaics them
by coordinates and `.to_zarr` writes a Zarr v3 cube shaped like chunkcube's (time, y, x; zstd:3).

usage: python3 bench/ingest_xarray.py MANIFEST.csv OUT [--chunk 1024] [--level 3] [--threads 2]
"""
import argparse
import collections
import csv
import os
import re
import time

import dask
import numpy as np
import rioxarray
import xarray as xr
from zarr.codecs import ZstdCodec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("out")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    t0 = time.perf_counter()

    # band -> time -> tile paths
    tiles = collections.defaultdict(lambda: collections.defaultdict(list))
    base = os.path.dirname(os.path.abspath(a.manifest))
    with open(a.manifest, newline="") as f:
        for row in csv.DictReader(f):
            t = row["time"].strip()
            t = np.datetime64(f"{t}-01-01" if re.fullmatch(r"\d{4}", t) else t, "ns")
            tiles[row["band"]][t].append(os.path.join(base, row["path"]))

    c = a.chunk
    bands = {}
    for band, by_time in sorted(tiles.items()):
        steps = []
        for t, paths in sorted(by_time.items()):
            # lock=False: parallel reads (rioxarray's default lock serialises them).
            parts = [
                rioxarray.open_rasterio(p, chunks={"x": c, "y": c}, lock=False)
                .squeeze("band", drop=True).rename(band).to_dataset()
                for p in paths
            ]
            steps.append(xr.combine_by_coords(parts, combine_attrs="drop_conflicts")[band]
                         .expand_dims(time=[t]))
        da = xr.concat(steps, dim="time") if len(steps) > 1 else steps[0]
        bands[band] = da.chunk({"time": 1, "y": c, "x": c})
    ds = xr.Dataset(bands)
    enc = {b: {"chunks": (1, c, c), "compressors": [ZstdCodec(level=a.level)]} for b in ds.data_vars}

    with dask.config.set(scheduler="threads", num_workers=a.threads):
        ds.to_zarr(a.out, mode="w", zarr_format=3, consolidated=False, encoding=enc)
    print(f"ingest_xarray: {len(ds.data_vars)} bands {dict(ds.sizes)} -> {a.out} "
          f"in {time.perf_counter() - t0:.2f} s on {a.threads} threads")


if __name__ == "__main__":
    main()
