"""The path a user has today to hand a Zarr cube to GDAL tools: xarray opens the cube, and
rioxarray writes each band and time step with to_raster(driver="COG"), with the same COG
options as chunkcube export (DEFLATE, predictor, 512 blocks, overviews, all threads).

    python3 bench/export_xarray.py CUBE OUTDIR red,green,blue,nir
"""
import os
import sys

import numpy as np
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

cube, out, bands = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
os.makedirs(out, exist_ok=True)
ds = xr.open_zarr(cube, consolidated=False, decode_coords="all", mask_and_scale=False)
for b in bands:
    da = ds[b]
    nodata = da.attrs.get("_FillValue", da.encoding.get("_FillValue"))
    for t in range(da.sizes["time"]):
        one = da.isel(time=t)
        if nodata is not None:
            one = one.rio.write_nodata(nodata, encoded=False)
        day = np.datetime_as_string(one.time.values, unit="D")
        one.rio.to_raster(
            os.path.join(out, f"{b}_{day}.tif"),
            driver="COG",
            compress="DEFLATE",
            predictor="YES",
            blocksize=512,
            num_threads="ALL_CPUS",
            tiled=True,
        )
