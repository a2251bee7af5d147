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
