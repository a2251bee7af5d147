#!/usr/bin/env python3
"""Store-format compatibility check: do xarray / rioxarray / zarr-python / TensorStore read a chunkcube cube right?

usage: python3 scripts/check_xarray.py CUBE [--expect-epsg 6933] [--expect-times 2019-01-01,2020-01-01]
                                       [--manifest tiles.csv]

With --manifest, every source tile (read with rioxarray) must equal its window of the cube,
and pixels no tile covers must be nodata.

Prints one line per check and exits 1 with a clear message at the first failure
(see DESIGN.md, "Store format"). Needs the packages in scripts/requirements.txt.
"""
import argparse
import os
import re
import sys
import warnings

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import tensorstore as ts
import xarray as xr
import zarr
from importlib.metadata import version

# rioxarray/affine deprecation chatter is not what this script checks.
warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


def ok(msg):
    print(f"ok    {msg}", flush=True)


def fail(msg):
    print(f"FAIL  {msg}", flush=True)
    sys.exit(1)


def check(cond, msg, why=""):
    if cond:
        ok(msg)
    else:
        fail(f"{msg}: {why}" if why else msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cube", help="path of a chunkcube cube (Zarr v3 group)")
    ap.add_argument("--expect-epsg", type=int, default=6933)
    ap.add_argument("--expect-times", help="comma-separated ISO dates the time coordinate must equal")
    ap.add_argument("--manifest", help="the ingest manifest (path,band,time): compare pixels with the tiles")
    args = ap.parse_args()
    cube = args.cube.rstrip("/")
    print(f"checking {cube} with xarray {xr.__version__}, zarr {zarr.__version__}, "
          f"rioxarray {rioxarray.__version__}, tensorstore {version('tensorstore')}")

    # --- open exactly as a user would -----------------------------------------------------
    try:
        ds = xr.open_zarr(cube, consolidated=False, decode_coords="all")
    except Exception as e:  # noqa: BLE001
        fail(f"xr.open_zarr({cube!r}, consolidated=False, decode_coords='all') raised {type(e).__name__}: {e}")
    bands = sorted(ds.data_vars)
    check(len(bands) > 0, f"open_zarr: data variables {bands}", "no data variables")
    check("spatial_ref" in ds.coords and "spatial_ref" not in ds.data_vars,
          "spatial_ref is a coordinate (decode_coords='all' via grid_mapping)",
          f"coords={list(ds.coords)} data_vars={list(ds.data_vars)}")
    for b in bands:
        check(ds[b].dims == ("time", "y", "x"), f"{b}: dims {ds[b].dims}", "expected ('time', 'y', 'x')")

    # --- CRS and transform ---------------------------------------------------------------
    crs = ds.rio.crs
    check(crs is not None and crs.to_epsg() == args.expect_epsg,
          f"dataset .rio.crs = EPSG:{crs.to_epsg() if crs else None}", f"expected EPSG:{args.expect_epsg}")
    for b in bands:
        c = ds[b].rio.crs
        check(c is not None and c.to_epsg() == args.expect_epsg, f"{b}: .rio.crs = {c}",
              f"expected EPSG:{args.expect_epsg} (grid_mapping={ds[b].encoding.get('grid_mapping')!r})")
    # Informational: with xarray's default decode_coords=True only a `coordinates` attribute
    # (not grid_mapping) makes spatial_ref a coordinate, so `ds[band].rio.crs` needs one.
    plain = xr.open_zarr(cube, consolidated=False)
    if plain[bands[0]].rio.crs is None:
        print(f"note  default xr.open_zarr(cube): {bands[0]}.rio.crs is None (spatial_ref is a data variable; "
              "a band attribute coordinates='spatial_ref' would make it a coordinate)")
    sref = ds["spatial_ref"]
    check(sref.ndim == 0 and np.issubdtype(sref.dtype, np.integer), f"spatial_ref: 0-d {sref.dtype}",
          f"shape {sref.shape}")
    for key in ("crs_wkt", "spatial_ref", "GeoTransform"):
        check(key in sref.attrs, f"spatial_ref has attribute {key}", f"attributes are {sorted(sref.attrs)}")
    gt = [float(v) for v in sref.attrs["GeoTransform"].split()]
    check(len(gt) == 6, f"GeoTransform = {gt}", "expected 6 numbers 'x0 dx 0 y0 0 dy'")
    x0, dx, rx, y0, ry, dy = gt
    for recalc in (False, True):
        t = ds.rio.transform(recalc=recalc)
        got = [t.c, t.a, t.b, t.f, t.d, t.e]  # GDAL order
        check(np.allclose(got, gt, rtol=0, atol=1e-6 * abs(dx)),
              f".rio.transform(recalc={recalc}) == GeoTransform", f"got {got}, GeoTransform {gt}")

    # --- coordinates -----------------------------------------------------------------------
    nx, ny = ds.sizes["x"], ds.sizes["y"]
    want_x = x0 + (np.arange(nx) + 0.5) * dx
    want_y = y0 + (np.arange(ny) + 0.5) * dy
    tol = 1e-6 * abs(dx)
    check(ds.x.dtype == np.float64 and np.allclose(ds.x.values, want_x, rtol=0, atol=tol),
          f"x: {nx} float64 pixel centres {ds.x.values[0]} .. {ds.x.values[-1]}",
          f"dtype {ds.x.dtype}, first {ds.x.values[:3]}, expected {want_x[:3]}")
    check(ds.y.dtype == np.float64 and np.allclose(ds.y.values, want_y, rtol=0, atol=tol),
          f"y: {ny} float64 pixel centres {ds.y.values[0]} .. {ds.y.values[-1]}",
          f"dtype {ds.y.dtype}, first {ds.y.values[:3]}, expected {want_y[:3]}")
    times = ds.time.values
    check(np.issubdtype(times.dtype, np.datetime64),
          f"time decodes to datetime64: {[str(np.datetime_as_string(t, unit='D')) for t in times]}",
          f"got dtype {times.dtype} values {times} (attrs {ds.time.attrs}, encoding {ds.time.encoding})")
    if args.expect_times:
        want = np.array(args.expect_times.split(","), dtype="datetime64[ns]")
        check(np.array_equal(times.astype("datetime64[ns]"), want), f"time == {args.expect_times}",
              f"got {times}")

    # --- zarr-python directly, and nodata decoding per band ----------------------------------
    group = zarr.open_group(cube, mode="r")
    members = sorted(k for k, _ in group.members())
    check(set(bands) | {"x", "y", "time", "spatial_ref"} <= set(members),
          f"zarr.open_group members {members}", "missing band or coordinate arrays")
    for b in bands:
        a = zarr.open_array(f"{cube}/{b}", mode="r")
        var = ds[b]
        raw_dtype = var.encoding.get("dtype")
        check(a.shape == var.shape, f"{b}: zarr shape {a.shape}", f"xarray shape {var.shape}")
        check(a.dtype == raw_dtype, f"{b}: zarr dtype {a.dtype}", f"xarray encoding dtype {raw_dtype}")
        check(tuple(a.metadata.dimension_names or ()) == ("time", "y", "x"),
              f"{b}: dimension_names {a.metadata.dimension_names}")
        chunks = a.chunks  # inner chunks when sharded
        check(var.encoding.get("chunks") == chunks, f"{b}: chunks {chunks}, shards {a.shards}",
              f"xarray encoding chunks {var.encoding.get('chunks')}")
        raw = a[...]
        # TensorStore (its own Zarr v3 codecs, crc32c and sharding included) reads the same.
        t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": os.path.abspath(f"{cube}/{b}")}},
                    open=True).result()
        traw = t.read().result()
        check(traw.shape == raw.shape and traw.dtype == raw.dtype
              and np.array_equal(traw, raw, equal_nan=np.issubdtype(raw.dtype, np.floating)),
              f"{b}: TensorStore reads the same {traw.dtype} {traw.shape} as zarr-python",
              f"TensorStore {traw.dtype} {traw.shape}")
        dec = var.values
        if np.issubdtype(a.dtype, np.integer):
            fv = a.fill_value
            attr_fv = var.encoding.get("_FillValue")
            check(attr_fv is not None and attr_fv == fv,
                  f"{b}: fill_value {fv} == _FillValue attribute {attr_fv}",
                  "integer bands need attribute _FillValue equal to the Zarr fill_value so xarray masks nodata")
            check(np.issubdtype(dec.dtype, np.floating), f"{b}: decodes to {dec.dtype}",
                  "nodata can only become NaN in a float array")
            n_raw, n_nan = int((raw == fv).sum()), int(np.isnan(dec).sum())
            check(n_raw == n_nan, f"{b}: {n_raw} raw nodata ({fv}) pixels == {n_nan} NaN after decoding",
                  "default decoding must turn exactly the nodata pixels into NaN")
        else:
            check(np.isnan(a.fill_value), f"{b}: float fill_value {a.fill_value}", "expected NaN")
            n_raw, n_nan = int(np.isnan(raw).sum()), int(np.isnan(dec).sum())
            check(n_raw == n_nan, f"{b}: {n_raw} raw NaN pixels == {n_nan} NaN after decoding (NaN kept)")
        valid = ~np.isnan(dec)
        check(np.array_equal(raw[valid].astype(dec.dtype), dec[valid]),
              f"{b}: decoded valid pixels equal the raw values")
        if n_raw == 0:
            print(f"note  {b}: no nodata pixels, so the NaN check above proves little")
    if args.manifest:
        check_tiles(cube, ds, args.manifest, gt)
    print(f"all checks passed for {cube}")


def check_tiles(cube, ds, manifest, gt):
    """Each tile equals its window of the raw cube; uncovered pixels are the fill value."""
    import csv
    import os

    x0, dx, _, y0, _, dy = gt
    times = list(ds.time.values.astype("datetime64[D]"))
    raws = {b: zarr.open_array(f"{cube}/{b}", mode="r")[...] for b in ds.data_vars}
    covered = {b: np.zeros(r.shape, bool) for b, r in raws.items()}
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        path = os.path.join(os.path.dirname(os.path.abspath(manifest)), row["path"])
        t = row["time"].strip()
        t = np.datetime64(f"{t}-01-01" if re.fullmatch(r"\d{4}", t) else t, "D")
        band = row["band"]
        if band not in raws or t not in times:
            fail(f"{path}: band {band!r} / time {t} is not in the cube")
        ti = times.index(t)
        tile = rioxarray.open_rasterio(path, masked=False).squeeze("band", drop=True)
        tt = tile.rio.transform()
        col, row0 = round((tt.c - x0) / dx), round((tt.f - y0) / dy)
        h, w = tile.shape
        win = raws[band][ti, row0:row0 + h, col:col + w]
        src = tile.values
        same = np.array_equal(win, src, equal_nan=np.issubdtype(src.dtype, np.floating))
        if not same:
            fail(f"{path}: differs from cube {band}[{ti}, {row0}:{row0 + h}, {col}:{col + w}] "
                 f"in {int((win != src).sum())} pixels")
        covered[band][ti, row0:row0 + h, col:col + w] = True
    ok(f"{len(rows)} source tiles equal their cube windows (manifest {manifest})")
    for b, r in sorted(raws.items()):
        outside = r[~covered[b]]
        fv = zarr.open_array(f"{cube}/{b}", mode="r").fill_value
        nod = np.isnan(outside) if np.issubdtype(r.dtype, np.floating) else outside == fv
        check(bool(nod.all()), f"{b}: {outside.size} pixels no tile covers are nodata",
              f"{int((~nod).sum())} are not")


if __name__ == "__main__":
    main()
