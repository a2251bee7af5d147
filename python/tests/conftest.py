"""Shared fixtures: the repository's fixture tiles ingested once, the same cube read by
xarray, and the mosaic built independently from GDAL reads of the tiles (rasterio)."""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np
import pytest

import chunkcube as cc

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
MANIFEST = FIXTURES / "manifest.csv"


@pytest.fixture(autouse=True)
def _no_progress():
    cc.set_options(progress=False)
    yield
    cc.set_options(progress="auto")


@pytest.fixture(scope="session")
def cube_path(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("cubes") / "cube"
    report = cc.ingest(manifest=MANIFEST, out=out, chunks={"time": 1, "y": 64, "x": 64})
    assert report["chunks_written"] > 0
    return str(out)


@pytest.fixture(scope="session")
def xr_cube(cube_path):
    import xarray as xr

    return xr.open_zarr(cube_path, consolidated=False, decode_coords="all").compute()


@pytest.fixture(scope="session")
def gdal_mosaic(cube_path):
    """``{band: float32 array [time, y, x]}`` with NaN nodata, built from the tiles alone:
    each tile read with GDAL (rasterio) and placed by its geotransform on the cube grid,
    tiles taken in path order, the first valid pixel winning (the ingest rule)."""
    import rasterio

    info = cc.open(cube_path).info()
    x0, dx, _, y0, _, dy = info["transform"]
    nt, ny, nx = info["shape"]
    times = sorted({_year(r["time"]) for r in _rows()})
    out = {}
    for row in sorted(_rows(), key=lambda r: r["path"]):
        band = row["band"]
        t = times.index(_year(row["time"]))
        with rasterio.open(FIXTURES / row["path"]) as src:
            a = src.read(1).astype(np.float32)
            nodata = src.nodata
            tx = src.transform
        if nodata is not None:
            a[a == nodata] = np.nan
        col = int(round((tx.c - x0) / dx))
        line = int(round((tx.f - y0) / dy))
        dst = out.setdefault(band, np.full((nt, ny, nx), np.nan, np.float32))
        view = dst[t, line : line + a.shape[0], col : col + a.shape[1]]
        holes = np.isnan(view)
        view[holes] = a[: view.shape[0], : view.shape[1]][holes]
    return out


def _rows():
    with open(MANIFEST, newline="") as f:
        return list(csv.DictReader(f))


def _year(t: str) -> int:
    return int(t[:4])


@pytest.fixture(scope="session")
def s3_env():
    """A bucket on the loopback S3 server that scripts/with-s3.sh started, with the AWS_*
    environment pointed at it; skipped when there is none (unless CHUNKCUBE_REQUIRE_S3=1)."""
    ep = os.environ.get("CHUNKCUBE_TEST_S3_ENDPOINT")
    if not ep:
        if os.environ.get("CHUNKCUBE_REQUIRE_S3") == "1":
            pytest.fail("CHUNKCUBE_TEST_S3_ENDPOINT is not set: run under scripts/with-s3.sh")
        pytest.skip("no S3 server (run under scripts/with-s3.sh)")
    import urllib.request

    bucket = f"cc-py-{os.getpid()}"
    req = urllib.request.Request(f"{ep}/{bucket}", method="PUT")
    urllib.request.urlopen(req).read()
    env = {
        "AWS_ACCESS_KEY_ID": "AKIATESTCHUNKCUBEPY",
        "AWS_SECRET_ACCESS_KEY": "zzSECRETpy/ShouldNeverBePrinted+7",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": ep,
        "AWS_ALLOW_HTTP": "true",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield bucket
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
