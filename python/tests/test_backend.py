"""The xarray backend against xr.open_zarr of the same cube."""

import numpy as np
import pytest
import xarray as xr

import chunkcube as cc


def test_backend_equals_open_zarr(cube_path):
    import rioxarray  # noqa: F401

    ours = xr.open_dataset(cube_path, engine="chunkcube", chunks={})
    ref = xr.open_zarr(cube_path, consolidated=False, decode_coords="all")
    assert set(ours.data_vars) == set(ref.data_vars)
    for b in ref.data_vars:
        assert ours[b].chunks == ref[b].chunks, b
        assert ours[b].dtype == ref[b].dtype == np.float32
    # lazy: a window reads through chunkcube, equal to zarr-python's read
    w = dict(time=1, y=slice(30, 130), x=slice(50, 77))
    xr.testing.assert_identical(ours.red.isel(w).compute().drop_attrs(), ref.red.isel(w).compute().drop_attrs())
    xr.testing.assert_allclose(ours.compute().drop_vars("spatial_ref"), ref.compute().drop_vars("spatial_ref"))
    assert ours.red.rio.crs == ref.red.rio.crs
    # the whole cube with dask, band math on top
    ndvi = (ours.nir - ours.red) / (ours.nir + ours.red)
    want = (ref.nir - ref.red) / (ref.nir + ref.red)
    np.testing.assert_array_equal(ndvi.mean("time").values, want.mean("time").values)


def test_backend_without_dask_and_options(cube_path):
    ours = xr.open_dataset(cube_path, engine="chunkcube", measurements=["red"], mask_and_scale=False)
    ref = xr.open_zarr(cube_path, consolidated=False, mask_and_scale=False)
    assert list(ours.data_vars) == ["red"]
    assert ours.red.dtype == np.uint16
    np.testing.assert_array_equal(ours.red[0, 5:9, -3:].values, ref.red[0, 5:9, -3:].values)
    np.testing.assert_array_equal(ours.red[:, 7, 3].values, ref.red[:, 7, 3].values)
    with pytest.raises(ValueError, match="unknown measurement 'bogus'"):
        xr.open_dataset(cube_path, engine="chunkcube", measurements=["bogus"])
    with pytest.raises(FileNotFoundError, match="is not a chunkcube cube"):
        xr.open_dataset(cube_path + "-missing", engine="chunkcube")


def test_backend_guesses_chunkcube_cubes(cube_path, tmp_path):
    from chunkcube.backend import ChunkcubeBackendEntrypoint

    assert ChunkcubeBackendEntrypoint().guess_can_open(cube_path)
    assert not ChunkcubeBackendEntrypoint().guess_can_open(str(tmp_path))
