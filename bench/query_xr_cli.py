"""The Python counterpart of `chunkcube load CUBE --measurements red --isel ... --print`:
open the cube with xarray, select the window, load it and print every value.

    python3 bench/query_xr_cli.py CUBE BAND T0:T1 Y0:Y1 X0:X1
"""
import sys

import numpy as np
import xarray as xr

cube, band, t, y, x = sys.argv[1:6]
sl = [slice(*map(int, s.split(":"))) for s in (t, y, x)]
da = xr.open_zarr(cube, consolidated=False)[band].isel(time=sl[0], y=sl[1], x=sl[2]).load()
print(f"{band} {da.dims} {da.dtype}")
for ti in range(da.sizes["time"]):
    print("time", np.datetime_as_string(da.time.values[ti], unit="D"))
    np.savetxt(sys.stdout, da.values[ti], fmt="%g")
