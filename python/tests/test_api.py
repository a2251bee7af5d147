"""The notebook's calls on the fixtures, against xarray reading the same cube and numpy
computed from GDAL reads of the tiles."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr

import chunkcube as cc

CHUNKS = {"time": 1, "y": 100, "x": 100}


def lazy(cube_path, **kw):
    return cc.open(cube_path).load(measurements=["red", "nir"], chunks=CHUNKS, **kw)


def ndvi_of(red, nir):
    return (nir - red) / (nir + red)


def test_open_describes_without_reading(cube_path):
    cube = cc.open(cube_path)
    assert cube.bands == ["blue", "green", "nir", "red", "smad"]
    info = cube.info()
    assert info["crs"] == "EPSG:6933"
    ds = cube.load(measurements=["red", "nir"], chunks=CHUNKS)
    assert set(ds) == {"red", "nir"}
    assert ds.red.dims == ("time", "y", "x")
    assert ds.red.shape == tuple(info["shape"])
    assert ds.red.dtype == np.uint16
    assert cube.stats()["chunks_read"] == 0


def test_chunk_table_repr_and_html(cube_path):
    red = lazy(cube_path).red
    t, y, x = red.shape
    n_chunks = t * -(-y // 100) * -(-x // 100)
    text = repr(red)
    for word in ("Array", "Chunk", "Bytes", "Shape", "Count", "Type", f"{n_chunks} Chunks", "uint16"):
        assert word in text, (word, text)
    assert f"({t}, {y}, {x})" in text and "(1, 100, 100)" in text
    html = red._repr_html_()
    assert "<table" in html and "Array" in html and "Chunk" in html and f"{n_chunks} Chunks" in html
    assert red.chunks[1][0] == 100 and sum(red.chunks[2]) == x
    s = red.summary()
    assert s["bytes"] == t * y * x * 2 and s["chunk_bytes"] == 100 * 100 * 2 and s["chunks"] == n_chunks


def test_bands_equal_gdal_reads_and_xarray(cube_path, xr_cube, gdal_mosaic):
    ds = cc.open(cube_path).load(measurements=["red", "nir"], chunks=CHUNKS)
    for b in ("red", "nir"):
        got = ds[b].compute()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.values, gdal_mosaic[b])
        xr.testing.assert_identical(got.drop_vars("spatial_ref").rename(None), xr_cube[b].drop_vars("spatial_ref").rename(None).drop_attrs())


def test_ndvi_coords_crs_and_values(cube_path, xr_cube, gdal_mosaic):
    import rioxarray  # noqa: F401

    ds = lazy(cube_path)
    ndvi = ndvi_of(ds.red, ds.nir)
    assert ndvi.dtype == np.float32
    got = ndvi.compute()
    assert isinstance(got, xr.DataArray) and got.dims == ("time", "y", "x")
    want = ndvi_of(xr_cube.red, xr_cube.nir)
    np.testing.assert_array_equal(got.time.values, xr_cube.time.values)
    np.testing.assert_array_equal(got.y.values, xr_cube.y.values)
    np.testing.assert_array_equal(got.x.values, xr_cube.x.values)
    assert got.rio.crs == xr_cube.red.rio.crs and got.rio.crs.to_epsg() == 6933
    assert got.rio.transform() == xr_cube.red.rio.transform()
    np.testing.assert_allclose(got.values, want.values.astype(np.float32), rtol=1e-6, equal_nan=True)
    r, n = gdal_mosaic["red"], gdal_mosaic["nir"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = (n - r) / (n + r)
    np.testing.assert_allclose(got.values, ref, rtol=1e-6, equal_nan=True)
    assert np.isnan(got.values).any(), "the fixtures have nodata: NaN expected"


@pytest.mark.parametrize("op", ["mean", "median", "min", "max", "sum", "count", "std"])
def test_reductions_over_time_equal_numpy(cube_path, gdal_mosaic, op):
    ds = lazy(cube_path)
    got = getattr(ndvi_of(ds.red, ds.nir), op)("time").compute()
    assert got.dims == ("y", "x")
    r, n = gdal_mosaic["red"].astype(np.float64), gdal_mosaic["nir"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = ((n - r) / (n + r)).astype(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        ref = {
            "mean": np.nanmean, "median": np.nanmedian, "min": np.nanmin, "max": np.nanmax,
            "sum": np.nansum, "std": np.nanstd,
            "count": lambda a, axis: np.sum(~np.isnan(a), axis=axis),
        }[op](v, axis=0)
    np.testing.assert_allclose(got.values, ref, rtol=2e-6, atol=1e-7, equal_nan=True)


def test_band_math_functions(cube_path, xr_cube):
    ds = lazy(cube_path)
    red, nir = ds.red, ds.nir
    xred, xnir = xr_cube.red, xr_cube.nir
    # chunkcube's comparisons are NaN where an operand is (the library's rule), so a
    # condition on a missing pixel leaves it missing, where xarray would take `other`.
    valid = xred.notnull()
    cases = [
        (cc.where(red > 500, red, 0), xr.where(xred > 500, xred, 0).where(valid)),
        (cc.where(red > 500, 1, 0), xr.where(xred > 500, 1.0, 0.0).where(valid)),
        (red.where(red > 500), xred.where(xred > 500)),
        (cc.sqrt(nir), np.sqrt(xnir)),
        (np.sqrt(nir), np.sqrt(xnir)),
        (abs(red - nir), abs(xred - xnir)),
        (nir.clip(100, 2000), xnir.clip(100, 2000)),
        (red.fillna(-1), xred.fillna(-1)),
        (2 * red + 1, 2 * xred + 1),
        (1 / nir, 1 / xnir),
        (-red, -xred),
        (np.maximum(red, nir), np.fmax(xred, xnir).where(xred.notnull() & xnir.notnull())),
    ]
    for i, (a, b) in enumerate(cases):
        got = a.compute().values
        np.testing.assert_allclose(got, b.values.astype(np.float32), rtol=1e-6, equal_nan=True, err_msg=f"case {i}")
    assert red.astype("float64").dtype == np.float64 and (red.astype("float64") + 1).dtype == np.float64


def test_selection_lon_lat_time_isel(cube_path, xr_cube):
    cube = cc.open(cube_path)
    info = cube.info()
    ds = cube.load(measurements=["red"], time=("2020", "2020"), isel={"y": (10, 90), "x": (20, 150)}, chunks=CHUNKS)
    got = ds.red.compute()
    want = xr_cube.red.sel(time="2020").isel(y=slice(10, 90), x=slice(20, 150))
    np.testing.assert_array_equal(got.values, want.values)
    np.testing.assert_array_equal(got.x.values, want.x.values)
    w = ds.red.isel(y=slice(5, 15), x=slice(0, 10)).compute()
    np.testing.assert_array_equal(w.values, want.isel(y=slice(5, 15), x=slice(0, 10)).values)
    assert w.rio.transform() == want.isel(y=slice(5, 15), x=slice(0, 10)).rio.transform()
    # a coordinate window, inclusive, as xarray's sel on pixel centres
    x0, x1 = float(xr_cube.x[30]), float(xr_cube.x[60])
    s = cube.load(measurements=["red"], chunks=CHUNKS).red.sel(x=slice(x0, x1), time="2019").compute()
    np.testing.assert_array_equal(s.values, xr_cube.red.sel(x=slice(x0, x1), time=slice("2019", "2019")).values)
    # a lon/lat box: every pixel whose centre lies inside (cube CRS box by PROJ)
    b = info["bounds"]
    ll = cube.load(measurements=["red"], x=(b[0] + 100, b[0] + 500), y=(b[1] + 100, b[1] + 300), chunks=CHUNKS)
    assert ll.red.shape[1:] == (20, 40)


def test_explain_and_visualize(cube_path, tmp_path):
    ds = lazy(cube_path)
    ndvi = ndvi_of(ds.red, ds.nir)
    e = ndvi.explain()
    for k in ("chunks", "bytes", "requests", "memory", "tasks"):
        assert isinstance(e[k], int) and e[k] > 0, k
    # 2 bands of the whole cube in 64x64 stored chunks
    t, y, x = ds.red.shape
    assert e["chunks"] == 2 * t * -(-y // 64) * -(-x // 64)
    assert e["tasks"] == ndvi.summary()["tasks"]
    g = ndvi.visualize()
    assert g.dot.startswith("digraph")
    ndvi.visualize(str(tmp_path / "ndvi.dot"))
    assert (tmp_path / "ndvi.dot").read_text().startswith("digraph")
    ndvi.visualize(str(tmp_path / "ndvi.svg"))
    assert b"<svg" in (tmp_path / "ndvi.svg").read_bytes()
    assert "<svg" in g._repr_svg_()


def test_to_zarr_is_a_cube_as_calc_writes(cube_path, xr_cube, tmp_path):
    ds = lazy(cube_path)
    ndvi = ndvi_of(ds.red, ds.nir).rename("ndvi")
    out = str(tmp_path / "ndvi")
    ndvi.to_zarr(out)
    back = xr.open_zarr(out, consolidated=False, decode_coords="all").ndvi.compute()
    want = ndvi.compute()
    np.testing.assert_array_equal(back.values, want.values)
    assert back.rio.crs == want.rio.crs
    with pytest.raises(FileExistsError, match="already exists"):
        ndvi.to_zarr(out)
    (ndvi * 2).rename("ndvi").to_zarr(out, overwrite=True)
    again = cc.open(out).load(chunks={}).ndvi.compute()
    np.testing.assert_array_equal(again.values, want.values * 2)
    # reopened with chunkcube: a cube like any other
    m = cc.open(out).load(chunks={}).ndvi.mean("time").compute()
    np.testing.assert_allclose(m.values, (want * 2).mean("time").values, rtol=1e-6, equal_nan=True)


def test_errors_are_python_exceptions_with_the_message(cube_path):
    cube = cc.open(cube_path)
    with pytest.raises(ValueError, match="unknown measurement 'bogus'; the cube has: blue, green, nir, red, smad"):
        cube.load(measurements=["bogus"], chunks=CHUNKS)
    with pytest.raises(ValueError, match="lies outside the cube"):
        cube.load(lon=(0, 1), lat=(0, 1), chunks=CHUNKS)
    with pytest.raises(ValueError, match="--time"):
        cube.load(time=("1990", "1991"), chunks=CHUNKS)
    small = cc.open(cube_path, memory_limit="64KiB")
    red = small.load(measurements=["red"], chunks=CHUNKS).red
    with pytest.raises(MemoryError, match="is below what one task needs; use at least") as e:
        (red + 1).compute()
    assert isinstance(e.value, cc.MemoryLimitError)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="is not a chunkcube cube"):
        cc.open(os.path.join(cube_path, "nope"))
    with pytest.raises(ValueError, match="invalid memory_limit"):
        cc.open(cube_path, memory_limit="lots")
    with pytest.raises(ValueError, match="invalid chunks"):
        cube.load(chunks={"z": 3})
    with pytest.raises(ValueError, match="cannot combine"):
        ds = cube.load(measurements=["red"], chunks=CHUNKS)
        ds.red + ds.red.isel(y=slice(0, 10))
    with pytest.raises(TypeError):
        cube.load(measurements=["red"], chunks=CHUNKS).red + "one"


def test_eager_load_and_persist(cube_path, gdal_mosaic):
    ds = cc.open(cube_path).load(measurements=["red"])
    assert not ds.red._a.is_lazy
    np.testing.assert_array_equal(ds.red.compute().values, gdal_mosaic["red"])
    lz = lazy(cube_path)
    p = (lz.red * 1.0).persist()
    np.testing.assert_array_equal((p + 1).compute().values, gdal_mosaic["red"] + 1)


def test_cube_on_s3(s3_env, cube_path, tmp_path):
    url = f"s3://{s3_env}/gm"
    from conftest import MANIFEST

    cc.ingest(manifest=MANIFEST, out=url, chunks={"time": 1, "y": 64, "x": 64})
    local = lazy(cube_path)
    remote = cc.open(url, cache_dir=tmp_path / "cache").load(measurements=["red", "nir"], chunks=CHUNKS)
    np.testing.assert_array_equal(ndvi_of(remote.red, remote.nir).compute().values,
                                  ndvi_of(local.red, local.nir).compute().values)
    ndvi_of(remote.red, remote.nir).rename("ndvi").to_zarr(f"s3://{s3_env}/ndvi")
    back = cc.open(f"s3://{s3_env}/ndvi").load(chunks={}).ndvi.compute()
    np.testing.assert_array_equal(back.values, ndvi_of(local.red, local.nir).compute().values)
    with pytest.raises(FileNotFoundError) as e:
        cc.open(f"s3://{s3_env}/missing")
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(e.value)


def test_ingest_paths_and_bad_input(cube_path, tmp_path):
    from conftest import FIXTURES

    out = tmp_path / "bypaths"
    r = cc.ingest(paths=[FIXTURES / "tiles"], out=out, chunks={"time": 1, "y": 64, "x": 64})
    assert r["tiles"] == 40 and not r["up_to_date"]
    assert cc.ingest(paths=[FIXTURES / "tiles"], out=out, chunks={"time": 1, "y": 64, "x": 64})["up_to_date"]
    a = cc.open(out).load(measurements=["nir"], chunks={}).nir.compute()
    b = cc.open(cube_path).load(measurements=["nir"], chunks={}).nir.compute()
    xr.testing.assert_identical(a, b)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,band,time\nnope.tif,red,2019\n")
    with pytest.raises((ValueError, OSError), match="nope.tif"):
        cc.ingest(manifest=bad, out=tmp_path / "x")
    with pytest.raises(ValueError, match="manifest"):
        cc.ingest(out=tmp_path / "y")
    with pytest.raises(FileExistsError, match="overwrite"):
        cc.ingest(paths=[FIXTURES / "tiles"], out=out, chunks={"time": 1, "y": 32, "x": 32})


def test_dataset_assign_compute_and_write(cube_path, xr_cube, tmp_path):
    ds = lazy(cube_path)
    ds["ndvi"] = ndvi_of(ds.red, ds.nir)
    assert "ndvi" in ds and ds.ndvi.name == "ndvi" and "ndvi" in repr(ds)
    assert "<table" in ds._repr_html_()
    got = ds.compute()
    assert isinstance(got, xr.Dataset) and set(got.data_vars) == {"red", "nir", "ndvi"}
    np.testing.assert_array_equal(got.red.values, xr_cube.red.values)
    ds.to_zarr(str(tmp_path / "all"))
    back = xr.open_zarr(str(tmp_path / "all"), consolidated=False)
    np.testing.assert_array_equal(back.ndvi.values, got.ndvi.values)
    with pytest.raises(AttributeError, match="no variable 'blue'"):
        ds.blue
