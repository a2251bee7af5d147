//! Bands stored CF-packed by xarray (uint16 with `scale_factor`/`add_offset`/`_FillValue`, as
//! Landsat Collection 2 surface reflectance ships) read as xarray decodes them: float64,
//! `raw * scale_factor + add_offset`, the fill value NaN. Reference: xarray's own decoding
//! and its own computation on the same store.

use crate::common::python::{py, python_ready};
use crate::common::*;
use serde_json::Value;

/// Writes (argv 1) a packed store in Zarr format argv 2: `red` and `nir` reflectances with
/// missing pixels, encoded uint16 × 2.75e-05 − 0.2, `_FillValue` 0, chunks of 1 x 4 x 4 on a
/// 6 x 9 grid (edge chunks 2 rows high and 1 column wide).
const WRITE: &str = r#"
import sys, numpy as np, pandas as pd, xarray as xr, rioxarray
t = pd.to_datetime(["2019-01-01", "2020-01-01"])
y = -2500005.0 - 10.0 * np.arange(6)
x = 2316005.0 + 10.0 * np.arange(9)
tt, yy, xx = np.meshgrid(np.arange(2), np.arange(6), np.arange(9), indexing="ij")
red = 0.02 + 0.001 * (tt * 37 + yy * 13 + xx * 7)
nir = 0.30 + 0.002 * (tt * 11 + yy * 5 + xx * 3)
red[:, 0, 0] = np.nan
red[:, 5, 8] = np.nan  # in the corner edge chunk
nir[1, 2, 3] = np.nan
ds = xr.Dataset({"red": (("time", "y", "x"), red), "nir": (("time", "y", "x"), nir)},
                coords={"time": t, "y": y, "x": x}).rio.write_crs("EPSG:6933")
enc = {b: {"dtype": "uint16", "scale_factor": 2.75e-05, "add_offset": -0.2, "_FillValue": 0,
           "chunks": (1, 4, 4)} for b in ("red", "nir")}
ds.to_zarr(sys.argv[1], zarr_format=int(sys.argv[2].rsplit("/", 1)[-1]), encoding=enc,
           consolidated=False)
"#;

/// Checks chunkcube's outputs (argv 2: `load --out` of a window, argv 3: NDVI by `calc`,
/// argv 4: `--print` of that window) against xarray's decoding of the store (argv 1).
const CHECK: &str = r#"
import sys, numpy as np, xarray as xr
src = xr.open_zarr(sys.argv[1])
assert src.red.dtype == np.float64, src.red.dtype
win = src.isel(time=slice(0, 2), y=slice(2, 6), x=slice(3, 9))
got = xr.open_zarr(sys.argv[2])
for b in ("red", "nir"):
    g, w = got[b].values, win[b].values
    assert np.isnan(w).any(), b
    assert g.shape == w.shape and np.array_equal(np.isnan(g), np.isnan(w)), (b, g, w)
    assert np.allclose(g, w, equal_nan=True, rtol=1e-12), (b, g, w)
    # Written decoded: applying the packing again would be wrong.
    assert "scale_factor" not in got[b].encoding and "add_offset" not in got[b].encoding, got[b].encoding
want = ((src.nir - src.red) / (src.nir + src.red)).values
ndvi = xr.open_zarr(sys.argv[3]).ndvi.values
assert np.isnan(want[0, 0, 0]) and np.isnan(want[1, 2, 3]) and np.isnan(want[1, 5, 8])
assert np.array_equal(np.isnan(ndvi), np.isnan(want)), (ndvi, want)
assert np.allclose(ndvi, want, equal_nan=True, rtol=1e-6), (ndvi, want)
# --print of red at time 0: rows of "y v v v v v".
rows = [l.split() for l in open(sys.argv[4]).read().split("'red'")[1].splitlines()]
rows = [r for r in rows if len(r) == 6 and r[0].startswith("-25")]
printed = np.array([[float(v) for v in r[1:]] for r in rows])
assert printed.shape == (4, 5), rows
pwin = src.red.isel(time=0, y=slice(0, 4), x=slice(0, 5)).values
assert np.allclose(printed, pwin, equal_nan=True, rtol=1e-9), (printed, pwin)
print("ok")
"#;

#[test]
fn packed_bands_read_decoded_as_xarray_does() {
    if !python_ready("packed_bands_read_decoded_as_xarray_does") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for format in [3, 2] {
        let dir = tmp.path().join(format.to_string());
        std::fs::create_dir(&dir).unwrap();
        let store = dir.join("packed.zarr");
        py(WRITE, &[&store, &dir]);

        let (text, _) = run_ok(&["info", s(&store)]);
        assert!(
            text.contains("uint16 (packed: ×0.0000275 + -0.2 → float64)"),
            "{text}"
        );
        let (json, _) = run_ok(&["info", s(&store), "--json"]);
        let info: Value = serde_json::from_str(&json).unwrap();
        let bands = info["bands"].as_array().unwrap();
        let red = bands.iter().find(|b| b["name"] == "red").unwrap();
        assert_eq!(red["packed"]["dtype"], "float64", "{info}");
        assert_eq!(red["packed"]["add_offset"], -0.2, "{info}");

        let win = dir.join("win.zarr");
        let isel = "time=0:2,y=2:6,x=3:9"; // straddles into the edge chunks
        run_ok(&[
            "load",
            s(&store),
            "--isel",
            isel,
            "--out",
            s(&win),
            "--quiet",
        ]);
        let ndvi = dir.join("ndvi.zarr");
        let expr = "ndvi=(nir-red)/(nir+red)";
        run_ok(&[
            "calc",
            s(&store),
            "--expr",
            expr,
            "--out",
            s(&ndvi),
            "--quiet",
        ]);
        let one = "time=0:1,y=0:4,x=0:5";
        let (printed, _) = run_ok(&["load", s(&store), "--isel", one, "--print"]);
        assert!(printed.contains("float64, nodata nan"), "{printed}");
        let printed_file = dir.join("printed.txt");
        std::fs::write(&printed_file, &printed).unwrap();
        let ok = py(CHECK, &[&store, &win, &ndvi, &printed_file]);
        assert_eq!(ok.trim(), "ok", "zarr v{format}");
    }
}
