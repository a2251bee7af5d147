"""Arrays rebuild from their recipes in another process; to_zarr(client=…) writes shards as
Dask tasks on a LocalCluster of worker processes, equal to the single-process write."""

import pickle

import numpy as np
import pytest
import xarray as xr

import chunkcube as cc
from chunkcube._distributed import replay

CHUNKS = {"time": 1, "y": 64, "x": 64}


def chain(cube_path):
    ds = cc.open(cube_path).load(measurements=["red", "nir"], chunks=CHUNKS, time=("2019", "2020"))
    ndvi = (ds.nir - ds.red) / (ds.nir + ds.red)
    return ds, cc.where(ndvi > 0.1, ndvi, 0).clip(-0.5, 0.9).isel(y=slice(3, 190)).rename("ndvi")


def test_recipes_rebuild_the_same_computation(cube_path):
    ds, a = chain(cube_path)
    for da in (a, a.mean("time"), a.median("time"), np.sqrt(abs(a)) * 2 - ds.red.isel(y=slice(3, 190)) / 1e4):
        r = pickle.loads(pickle.dumps(da._r))
        again = cc.DataArray(replay(r), r)
        np.testing.assert_array_equal(again.compute().values, da.compute().values)
        assert again.summary() == da.summary()
    assert a.persist()._r is None


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def test_to_zarr_on_a_local_cluster_equals_the_single_process_write(cube_path, client, tmp_path):
    import rioxarray  # noqa: F401

    _, a = chain(cube_path)
    for da, name in ((a, "ndvi"), (a.mean("time").rename("mean"), "mean")):
        one, many = str(tmp_path / f"{name}-one"), str(tmp_path / f"{name}-dask")
        da.to_zarr(one)
        report = da.to_zarr(many, client=client, shards=5)
        # five shards ran as Dask tasks in the worker processes, then one commit here
        assert report["shards"] == 5 and len(report["shard_reports"]) == 5
        chunks = [r["chunks"] for r in report["shard_reports"]]
        assert sum(chunks) == da.summary()["chunks"] and min(chunks) > 0, chunks
        ref = xr.open_zarr(one, consolidated=False, decode_coords="all")[name].compute()
        got = xr.open_zarr(many, consolidated=False, decode_coords="all")[name].compute()
        xr.testing.assert_identical(got, ref)
        assert got.rio.crs == ref.rio.crs
        back = cc.open(many).load(chunks={})[name].compute()
        want = da.compute()
        np.testing.assert_array_equal(back.values.reshape(want.shape), want.values, err_msg=name)


def test_to_zarr_on_a_cluster_refuses_what_it_cannot_ship(cube_path, client, tmp_path):
    _, a = chain(cube_path)
    with pytest.raises(ValueError, match="cannot be rebuilt in a Dask worker"):
        a.persist().to_zarr(str(tmp_path / "p"), client=client, shards=2)
    with pytest.raises(ValueError, match="invalid shards"):
        a.to_zarr(str(tmp_path / "q"), client=client, shards=0)
    with pytest.raises(ValueError, match="overwrite=True cannot be combined with shards"):
        a.to_zarr(str(tmp_path / "o"), client=client, shards=2, overwrite=True)
    # errors of the workers come back as the library's exceptions and messages
    ds = cc.open(cube_path).load(measurements=["red"], chunks=CHUNKS)
    with pytest.raises(ValueError, match="band|name"):
        (ds.red * 1).rename("bad name/").to_zarr(str(tmp_path / "r"), client=client, shards=2)
