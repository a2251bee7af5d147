//! Geographic stores other tools write: dimensions named `latitude`/`longitude` or `lat`/`lon`
//! (xarray, odc-stac, GEE exports in EPSG:4326), latitude descending as xarray has it, 3-D
//! and 2-D. They open as y/x with their coordinates and CRS, and select exactly as xarray
//! selects them (xarray's own `isel`/`sel` on the same store is the reference).

use crate::common::python::{py, python_ready};
use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// Writes the stores: argv 1..=5 are
/// 1. (time, latitude, longitude) float32, CRS from rioxarray (spatial_ref), Zarr v3;
/// 2. (time, lat, lon) uint16, CF grid mapping `crs` (latitude_longitude, no WKT), Zarr v2;
/// 3. (time, lat, lon) without any CRS, Zarr v3;
/// 4. 2-D (latitude, longitude) with the scalar time `isel(time=0)` keeps, CRS, Zarr v3;
/// 5. 2-D (lat, lon) with no time at all.
const WRITE: &str = r#"
import sys, numpy as np, pandas as pd, xarray as xr, rioxarray
t = pd.to_datetime(["2019-01-01", "2019-07-01", "2020-01-01"])
lat = 10.05 - 0.1 * np.arange(6)
lon = 20.05 + 0.1 * np.arange(8)
tt, yy, xx = np.meshgrid(np.arange(3), np.arange(6), np.arange(8), indexing="ij")
v = ((tt * 97 + yy * 13 + xx * 7) % 251).astype("float32")
a = xr.Dataset({"red": (("time", "latitude", "longitude"), v)},
               coords={"time": t, "latitude": lat, "longitude": lon})
a = a.rio.set_spatial_dims(x_dim="longitude", y_dim="latitude").rio.write_crs("EPSG:4326")
a.to_zarr(sys.argv[1], zarr_format=3, consolidated=False)
b = xr.Dataset({"red": (("time", "lat", "lon"), v.astype("uint16"))},
               coords={"time": t, "lat": lat, "lon": lon})
b["crs"] = xr.DataArray(0, attrs={"grid_mapping_name": "latitude_longitude",
                                  "semi_major_axis": 6378137.0,
                                  "inverse_flattening": 298.257223563})
b.red.attrs["grid_mapping"] = "crs"
b.to_zarr(sys.argv[2], zarr_format=2)
c = xr.Dataset({"red": (("time", "lat", "lon"), v)}, coords={"time": t, "lat": lat, "lon": lon})
c.to_zarr(sys.argv[3], zarr_format=3, consolidated=False)
a.isel(time=1).to_zarr(sys.argv[4], zarr_format=3, consolidated=False)
c.isel(time=0, drop=True).to_zarr(sys.argv[5], zarr_format=3, consolidated=False)
"#;

/// xarray's selection of `src` (argv 1) against what chunkcube wrote (argv 2): values,
/// latitude/longitude against y/x, times.
const COMPARE: &str = r#"
import sys, json, numpy as np, xarray as xr
src = xr.open_zarr(sys.argv[1], consolidated=False)
got = xr.open_zarr(sys.argv[2], consolidated=False)
sel = json.loads(sys.argv[3])
ydim, xdim = [d for d in src.red.dims if d != "time"]
if sel["kind"] == "isel":
    want = src.isel({ydim: slice(*sel["y"]), xdim: slice(*sel["x"])})
else:
    want = src.sel({ydim: slice(sel["lat"][1], sel["lat"][0]), xdim: slice(*sel["lon"])})
w, g = want.red, got.red
if "time" not in w.dims:
    w = w.expand_dims("time")
assert w.shape == g.shape and w.size > 0, (w.shape, g.shape)
assert np.array_equal(w.values, g.values), (w.values, g.values)
assert np.allclose(w[ydim].values, g.y.values, rtol=0, atol=1e-9), (w[ydim].values, g.y.values)
assert np.allclose(w[xdim].values, g.x.values, rtol=0, atol=1e-9)
assert np.array_equal(np.atleast_1d(w.time.values), g.time.values)
print("ok")
"#;

fn info_json(cube: &Path) -> Value {
    let (out, _) = run_ok(&["info", s(cube), "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("info --json: {e}\n{out}"))
}

#[test]
fn lat_lon_stores_open_as_y_x_and_select_as_xarray() {
    if !python_ready("lat_lon_stores_open_as_y_x_and_select_as_xarray") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let (wgs, cf, nocrs, flat, notime) = (
        p("wgs.zarr"),
        p("cf.zarr"),
        p("nocrs.zarr"),
        p("flat.zarr"),
        p("notime.zarr"),
    );
    py(WRITE, &[&wgs, &cf, &nocrs, &flat, &notime]);

    // The grid as xarray has it: pixel centres 0.1° apart, latitude descending.
    let transform = [20.0, 0.1, 0.0, 10.1, 0.0, -0.1];
    for (store, crs, dims, steps) in [
        (&wgs, Some("EPSG:4326"), "time,latitude,longitude", 3),
        (&cf, Some("EPSG:4326"), "time,lat,lon", 3),
        (&nocrs, None, "time,lat,lon", 3),
        (&flat, Some("EPSG:4326"), "latitude,longitude", 1),
    ] {
        let info = info_json(store);
        let ctx = format!("{}: {info}", store.display());
        assert_eq!(info["crs"].as_str(), crs, "{ctx}");
        assert_eq!(info["has_crs"], crs.is_some(), "{ctx}");
        assert_eq!(info["shape"], serde_json::json!([steps, 6, 8]), "{ctx}");
        let stored: Vec<&str> = info["stored_dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(stored.join(","), dims, "{ctx}");
        for (g, w) in info["transform"].as_array().unwrap().iter().zip(transform) {
            assert!((g.as_f64().unwrap() - w).abs() < 1e-9, "{ctx}");
        }
        let (text, _) = run_ok(&["info", s(store)]);
        let want_crs = crs.map_or("crs         none".to_string(), |c| {
            format!("crs         {c}")
        });
        assert!(text.contains(&want_crs), "{text}");
        assert!(
            text.contains(&format!("stored as   ({})", dims.replace(',', ", "))),
            "{text}"
        );
        // The pixel size without the float noise of coordinate differences, the bounds to a
        // tenth of a pixel (not whole degrees).
        assert!(text.contains("resolution  0.1 x -0.1\n"), "{text}");
        assert!(
            text.contains("bounds      20.00, 9.50, 20.80, 10.10 "),
            "{text}"
        );
    }
    // A box inside the bounds between pixel centres: the error's bounds are in degrees to
    // a tenth of a pixel, not rounded to whole degrees.
    let line = run_err(
        &[
            "load",
            s(&wgs),
            "--bbox",
            "20.01,9.91,20.04,9.94",
            "--summary",
        ],
        &[
            "holds no pixel centre",
            "pixels are 0.1 x 0.1",
            "20.00,9.50,20.80,10.10",
        ],
    );
    assert!(!line.contains("outside"), "{line}");

    // Selections, by the store's own dimension names and by y/x, against xarray's.
    let mut n = 0;
    for (store, isel) in [
        (&wgs, "latitude=1:4,longitude=2:6"),
        (&cf, "lat=1:4,lon=2:6"),
        (&nocrs, "y=1:4,x=2:6"),
        (&flat, "latitude=1:4,longitude=2:6"),
    ] {
        n += 1;
        let out = p(&format!("isel-{n}.zarr"));
        run_ok(&[
            "load",
            s(store),
            "--isel",
            isel,
            "--out",
            s(&out),
            "--quiet",
        ]);
        let sel = r#"{"kind": "isel", "y": [1, 4], "x": [2, 6]}"#;
        assert_eq!(py(COMPARE, &[store, &out, Path::new(sel)]).trim(), "ok");
    }
    for store in [&wgs, &cf, &flat] {
        n += 1;
        let out = p(&format!("lonlat-{n}.zarr"));
        run_ok(&[
            "load",
            s(store),
            "--lon",
            "20.2,20.6",
            "--lat",
            "9.6,9.9",
            "--out",
            s(&out),
            "--quiet",
        ]);
        let sel = r#"{"kind": "sel", "lon": [20.2, 20.6], "lat": [9.6, 9.9]}"#;
        assert_eq!(py(COMPARE, &[store, &out, Path::new(sel)]).trim(), "ok");
        // A geographic result's coordinates say degrees, as CF has them (not metres).
        for (dim, std, units) in [
            ("x", "longitude", "degrees_east"),
            ("y", "latitude", "degrees_north"),
        ] {
            let meta: Value =
                serde_json::from_slice(&std::fs::read(out.join(dim).join("zarr.json")).unwrap())
                    .unwrap();
            let a = &meta["attributes"];
            assert_eq!(a["units"], units, "{}: {dim} {a}", out.display());
            assert_eq!(a["standard_name"], std, "{}: {dim} {a}", out.display());
        }
    }

    // No CRS stated: lat/lon names are no licence to assume EPSG:4326.
    run_err(
        &[
            "load",
            s(&nocrs),
            "--lon",
            "20.2,20.6",
            "--lat",
            "9.6,9.9",
            "--summary",
        ],
        &["no CRS"],
    );
    // A 2-D array with no time at all: the error says what is supported and how to fix it.
    run_err(
        &["info", s(&notime)],
        &["missing time coordinate", "scalar 'time'"],
    );
    run_err(
        &["load", s(&wgs), "--isel", "band=0:1", "--summary"],
        &["unknown dimension 'band'", "latitude", "longitude"],
    );
}
