"""An overwritten cube (isolated overwrite: written beside the old one, switched in) still
opens in other tools: xarray and zarr-python read the same values as chunkcube, locally and
on S3 (zarr-python's ObjectStore over obstore against the loopback server)."""

import os

import numpy as np
import pytest
import xarray as xr
import zarr

import chunkcube as cc
from conftest import MANIFEST

CHUNKS = {"time": 1, "y": 64, "x": 64}


def ndvi(cube_url, scale):
    ds = cc.open(cube_url).load(measurements=["red", "nir"], chunks=CHUNKS)
    return ((ds.nir - ds.red) / (ds.nir + ds.red) * scale).rename("v")


def s3_store(bucket, prefix):
    """zarr-python's ObjectStore over obstore, pointed at the test server (read only)."""
    import obstore
    from zarr.storage import ObjectStore

    s3 = obstore.store.S3Store(
        bucket,
        prefix=prefix,
        endpoint=os.environ["AWS_ENDPOINT_URL"],
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ["AWS_REGION"],
        client_options={"allow_http": True},
    )
    return ObjectStore(s3, read_only=True)


def check_same(store, url, names):
    """xarray (consolidated or not) and zarr-python read `url`'s arrays as chunkcube does."""
    ours = cc.open(url).load(chunks={})
    for consolidated in (True, False):
        ds = xr.open_zarr(store, consolidated=consolidated, decode_coords="all")
        assert sorted(ds.data_vars) == sorted(names), (consolidated, list(ds.data_vars))
        for n in names:
            np.testing.assert_array_equal(ds[n].values, getattr(ours, n).compute().values, err_msg=n)
        np.testing.assert_array_equal(ds["x"].values, getattr(ours, names[0]).compute().x.values)
    g = zarr.open_group(store, mode="r")
    for n in names:
        raw = g[n][...]
        ref = getattr(ours, n).compute().values
        fill = g[n].fill_value
        if np.issubdtype(raw.dtype, np.floating):
            np.testing.assert_array_equal(raw, ref)
        else:
            np.testing.assert_array_equal(np.where(raw == fill, np.nan, raw), ref)


def overwrite_twice(src, out):
    """A result written, then replaced twice (each replacement isolated)."""
    for scale in (1.0, 2.0, 3.0):
        ndvi(src, scale).to_zarr(out, overwrite=True)
    back = cc.open(out).load(chunks={}).v.compute().values
    np.testing.assert_allclose(back, ndvi(src, 3.0).compute().values, rtol=0, atol=0)


def test_a_local_overwritten_result_and_ingest_open_in_xarray_and_zarr(cube_path, tmp_path):
    out = str(tmp_path / "res")
    overwrite_twice(cube_path, out)
    check_same(out, out, ["v"])
    cube = str(tmp_path / "cube")
    for chunks in ({"time": 1, "y": 64, "x": 64}, {"time": 1, "y": 32, "x": 32}, {"time": 1, "y": 48, "x": 48}):
        cc.ingest(manifest=MANIFEST, out=cube, chunks=chunks, overwrite=True)
    assert zarr.open_group(cube, mode="r")["red"].chunks == (1, 48, 48)
    check_same(cube, cube, cc.open(cube).bands)
    assert not [n for n in os.listdir(tmp_path) if ".chunkcube-new-" in n]


def test_an_s3_overwritten_result_and_ingest_open_in_xarray_and_zarr(s3_env, cube_path):
    out = f"s3://{s3_env}/res-ow"
    overwrite_twice(cube_path, out)
    check_same(s3_store(s3_env, "res-ow"), out, ["v"])
    cube = f"s3://{s3_env}/cube-ow"
    for chunks in ({"time": 1, "y": 64, "x": 64}, {"time": 1, "y": 32, "x": 32}, {"time": 1, "y": 48, "x": 48}):
        cc.ingest(manifest=MANIFEST, out=cube, chunks=chunks, overwrite=True)
    store = s3_store(s3_env, "cube-ow")
    assert zarr.open_group(store, mode="r")["red"].chunks == (1, 48, 48)
    check_same(store, cube, cc.open(cube).bands)
    # Nothing of the replaced cubes or of the staging is left beside the new one.
    import asyncio

    async def keys():
        return [k async for k in store.list()]

    ks = asyncio.run(keys())
    assert not [k for k in ks if k.startswith("v-")], ks
    assert "red/zarr.json" in ks and "zarr.json" in ks
