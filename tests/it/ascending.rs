//! Stores whose y grows with the row: latitude from south to north, as NetCDF, CMIP and
//! most climate stores have it, and projected grids with ascending y. Every path is checked
//! against a reference that does not go through chunkcube: `info`'s bounds against the
//! coordinates' edges, `--lon/--lat` and `--bbox` against xarray's `.sel(lat=slice(lo, hi))`,
//! results against rioxarray's transform of the source, GeoTIFFs against rasterio and
//! `gdallocationinfo` sampling known lon/lat, PNG rows against the source's rows. Also the
//! stores chunkcube does not read (x before y, time last): one line naming the order.

use crate::common::python::{py, python_ready};
use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// Writes (argv 1..=3) ascending-latitude stores: CF grid mapping Zarr v2, rioxarray CRS
/// Zarr v3, and an EPSG:32633 grid with ascending y; (argv 4..=6) the same data stored
/// (time, lon, lat), (time, x, y) and (y, x, time). Prints each store's edges as xarray's
/// coordinates give them (`[minx, miny, maxx, maxy]`).
const WRITE: &str = r#"
import sys, json, numpy as np, pandas as pd, xarray as xr, rioxarray
t = pd.to_datetime(["2019-01-01", "2019-07-01", "2020-01-01"])
lat = -30.05 + 0.1 * np.arange(6)
lon = 20.05 + 0.1 * np.arange(8)
tt, yy, xx = np.meshgrid(np.arange(3), np.arange(6), np.arange(8), indexing="ij")
v = ((tt * 97 + yy * 13 + xx * 7) % 251).astype("float32")
a = xr.Dataset({"red": (("time", "lat", "lon"), v)}, coords={"time": t, "lat": lat, "lon": lon})
cf = a.copy()
cf["crs"] = xr.DataArray(0, attrs={"grid_mapping_name": "latitude_longitude"})
cf.red.attrs["grid_mapping"] = "crs"
cf.to_zarr(sys.argv[1], zarr_format=2)
rio = a.rio.set_spatial_dims(x_dim="lon", y_dim="lat").rio.write_crs("EPSG:4326")
rio.to_zarr(sys.argv[2], zarr_format=3, consolidated=False)
y = 6_000_005.0 + 10.0 * np.arange(6)
x = 400_005.0 + 10.0 * np.arange(8)
p = xr.Dataset({"red": (("time", "y", "x"), v)}, coords={"time": t, "y": y, "x": x})
p.rio.write_crs("EPSG:32633").to_zarr(sys.argv[3], zarr_format=3, consolidated=False)
rio.transpose("time", "lon", "lat").to_zarr(sys.argv[4], zarr_format=3, consolidated=False)
p.transpose("time", "x", "y").to_zarr(sys.argv[5], zarr_format=3, consolidated=False)
p.transpose("y", "x", "time").to_zarr(sys.argv[6], zarr_format=2)
edges = lambda xs, ys: [xs[0] - 0.05, ys[0] - 0.05, xs[-1] + 0.05, ys[-1] + 0.05]
print(json.dumps({"geo": edges(lon, lat),
                  "utm": [x[0] - 5, y[0] - 5, x[-1] + 5, y[-1] + 5]}))
"#;

/// xarray's `.sel` of `src` (argv 1) over the box in argv 3 (`{"x": [lo, hi], "y": [lo, hi]}`,
/// slices in the store's ascending order) against what chunkcube wrote (argv 2): values and
/// coordinates; and rioxarray's transform of the selection against the result's.
const COMPARE: &str = r#"
import sys, json, numpy as np, xarray as xr, rioxarray
src = xr.open_zarr(sys.argv[1], consolidated=False)
got = xr.open_zarr(sys.argv[2], consolidated=False)
box = json.loads(sys.argv[3])
ydim, xdim = [d for d in src.red.dims if d != "time"]
assert src[ydim].values[1] > src[ydim].values[0], "the store's y must ascend"
want = src.sel({ydim: slice(*box["y"]), xdim: slice(*box["x"])}).red
g = got.red
assert want.size > 0 and want.shape == g.shape, (want.shape, g.shape)
assert np.array_equal(want.values, g.values), (want.values, g.values)
assert np.allclose(want[ydim].values, g.y.values, rtol=0, atol=1e-6), (want[ydim].values, g.y.values)
assert np.allclose(want[xdim].values, g.x.values, rtol=0, atol=1e-6)
wt = want.rio.set_spatial_dims(x_dim=xdim, y_dim=ydim).rio.transform(recalc=True)
gt = g.rio.transform()
assert np.allclose(tuple(wt), tuple(gt), rtol=0, atol=1e-6), (wt, gt)
print("ok")
"#;

/// A GeoTIFF exported from `src` (argv 1, time step 0) in argv 2: north-up, its pixels the
/// source's rows reversed, and rasterio's sample at pixel centres' lon/lat (reprojected for
/// a projected grid) equal to xarray's value there. Prints `lon lat value` of one pixel for
/// gdallocationinfo.
const TIFF: &str = r#"
import sys, numpy as np, xarray as xr, rasterio
from rasterio.warp import transform as reproject
src = xr.open_zarr(sys.argv[1], consolidated=False).red.isel(time=0)
ydim, xdim = src.dims
r = rasterio.open(sys.argv[2])
assert r.transform.e < 0, ("not north-up", r.transform)
a = r.read(1)
assert np.array_equal(a, src.values[::-1]), (a, src.values)
i, j = 1, 6
xs, ys = src[xdim].values[[j, 2]], src[ydim].values[[i, 4]]
want = [float(src.values[i, j]), float(src.values[4, 2])]
crs = r.crs
got = [float(s[0]) for s in r.sample(list(zip(xs, ys)))]
assert got == want, (got, want)
lon, lat = reproject(crs, "EPSG:4326", [xs[0]], [ys[0]])
print(f"{lon[0]!r} {lat[0]!r} {want[0]!r}")
"#;

/// A PNG quicklook (argv 2) of `src` (argv 1, step 0) scaled 0..250: its first row is the
/// northernmost row of the source.
const PNG: &str = r#"
import sys, numpy as np, xarray as xr, rasterio
src = xr.open_zarr(sys.argv[1], consolidated=False).red.isel(time=0)
grey = rasterio.open(sys.argv[2]).read(1)
ydim = src.dims[0]
north = src.isel({ydim: int(src[ydim].argmax())}).values
want = np.clip(np.round(north / 250 * 255), 0, 255).astype("uint8")
assert np.array_equal(grey[0], want), (grey[0], want)
print("ok")
"#;

fn info_json(cube: &Path) -> Value {
    let (out, _) = run_ok(&["info", s(cube), "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("info --json: {e}\n{out}"))
}

fn close(got: &Value, want: &[f64], tol: f64, ctx: &str) {
    let g: Vec<f64> = got
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: {got}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(g.len(), want.len(), "{ctx}: {got}");
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() <= tol, "{ctx}: {g:?} vs {want:?}");
    }
}

#[test]
fn ascending_y_stores_select_compute_and_export_as_xarray_and_gdal_read_them() {
    if !python_ready("ascending_y_stores_select_compute_and_export_as_xarray_and_gdal_read_them") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let stores = [
        "cf.zarr",
        "rio.zarr",
        "utm.zarr",
        "tlonlat.zarr",
        "txy.zarr",
        "yxt.zarr",
    ]
    .map(p);
    let args: Vec<&Path> = stores.iter().map(|s| s.as_path()).collect();
    let edges: Value = serde_json::from_str(py(WRITE, &args).trim()).unwrap();
    let [cf, rio, utm, tlonlat, txy, yxt] = &stores;
    let geo: Vec<f64> = serde_json::from_value(edges["geo"].clone()).unwrap();
    let proj: Vec<f64> = serde_json::from_value(edges["utm"].clone()).unwrap();

    // info: bounds are the coordinates' outer edges; the lon/lat extent of a geographic grid
    // is the same box, of the UTM grid inside zone 33's longitudes in the north.
    for (store, bounds) in [(cf, &geo), (rio, &geo), (utm, &proj)] {
        let info = info_json(store);
        let ctx = format!("{}: {info}", store.display());
        close(&info["bounds"], bounds, 1e-6, &ctx);
        assert!(info["transform"][5].as_f64().unwrap() > 0.0, "{ctx}");
        if bounds == &geo {
            close(&info["lonlat_bounds"], bounds, 1e-6, &ctx);
        } else {
            let ll = info["lonlat_bounds"].as_array().unwrap();
            let (lon, lat) = (ll[0].as_f64().unwrap(), ll[1].as_f64().unwrap());
            assert!(
                (12.0..18.0).contains(&lon) && (50.0..60.0).contains(&lat),
                "{ctx}"
            );
        }
    }

    // Selections: the rows xarray's sel gives, coordinates and transform as rioxarray has them.
    let mut n = 0;
    let lonlat: &[&str] = &["--lon", "20.2,20.6", "--lat", "-29.9,-29.6"];
    let lonlat_box = r#"{"x": [20.2, 20.6], "y": [-29.9, -29.6]}"#;
    let bbox: &[&str] = &["--bbox", "400020,6000010,400050,6000040"];
    let bbox_box = r#"{"x": [400020, 400050], "y": [6000010, 6000040]}"#;
    for (store, flags, bx) in [
        (cf, lonlat, lonlat_box),
        (rio, lonlat, lonlat_box),
        (utm, bbox, bbox_box),
    ] {
        n += 1;
        let out = p(&format!("sel-{n}.zarr"));
        let mut args = vec!["load", s(store)];
        args.extend(flags);
        args.extend(["--out", s(&out), "--quiet"]);
        run_ok(&args);
        assert_eq!(py(COMPARE, &[store, &out, Path::new(bx)]).trim(), "ok");
    }
    // calc --out: the whole grid, same transform, values computed by xarray from the source.
    let doubled = p("doubled.zarr");
    run_ok(&[
        "calc",
        s(rio),
        "--expr",
        "red=red*2",
        "--out",
        s(&doubled),
        "--quiet",
    ]);
    let code = r#"
import sys, numpy as np, xarray as xr, rioxarray
src = xr.open_zarr(sys.argv[1], consolidated=False).red
got = xr.open_zarr(sys.argv[2]).red
assert np.array_equal(got.values, src.values * 2)
assert np.allclose(got.y.values, src.lat.values, rtol=0, atol=1e-9)
want = src.rio.set_spatial_dims(x_dim="lon", y_dim="lat").rio.transform(recalc=True)
assert np.allclose(tuple(got.rio.transform()), tuple(want), rtol=0, atol=1e-9)
print("ok")
"#;
    assert_eq!(py(code, &[rio, &doubled]).trim(), "ok");

    // export: north-up GeoTIFFs (COG and plain) that rasterio and GDAL sample as xarray.
    for (store, fmt) in [(rio, "COG"), (cf, "GTiff"), (utm, "COG")] {
        n += 1;
        let dir = p(&format!("export-{n}"));
        run_ok(&[
            "export",
            s(store),
            "--out",
            s(&dir),
            "--format",
            fmt,
            "--quiet",
        ]);
        let tif = dir.join("red_2019-01-01.tif");
        let point = py(TIFF, &[store, &tif]);
        let [lon, lat, value]: [&str; 3] = point
            .split_whitespace()
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let o = std::process::Command::new("gdallocationinfo")
            .args(["-valonly", "-wgs84", s(&tif), lon, lat])
            .output()
            .expect("gdallocationinfo (apt-get install gdal-bin)");
        let got: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        assert_eq!(got, value.parse::<f64>().unwrap(), "{}", tif.display());
    }
    let dir = p("png");
    run_ok(&[
        "export",
        s(rio),
        "--out",
        s(&dir),
        "--format",
        "PNG",
        "--scale",
        "0,250",
        "--quiet",
    ]);
    assert_eq!(
        py(PNG, &[rio, &dir.join("red_2019-01-01.png")]).trim(),
        "ok"
    );

    // x before y, or time last: refused in one line naming the order and the rewrite.
    for (store, found, fix) in [
        (
            tlonlat,
            "'red' (time, lon, lat)",
            "ds.transpose('time', 'lat', 'lon')",
        ),
        (txy, "'red' (time, x, y)", "ds.transpose('time', 'y', 'x')"),
        (yxt, "'red' (y, x, time)", "ds.transpose('time', 'y', 'x')"),
    ] {
        run_err(&["info", s(store)], &[found, fix, "does not transpose"]);
        run_err(&["load", s(store), "--summary"], &[found, fix]);
    }
}
