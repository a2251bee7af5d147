//! Reductions written to a cube say what they are, in CF terms, and chunkcube reads that back:
//! the time coordinate's `bounds` (first and last step reduced), each variable's
//! `cell_methods`. References: the input's dates as pandas selects them, CF's list of
//! method names, xarray's decoding.

use crate::common::python::{py, python_ready};
use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// A mid-year series (argv 1) as xarray writes it; prints the dates pandas selects for
/// `--time 2019-03/2020` (whole-period END) as JSON.
const WRITE: &str = r#"
import sys, json, numpy as np, pandas as pd, xarray as xr
t = pd.to_datetime(["2019-01-01", "2019-07-01", "2020-01-01", "2020-07-01", "2021-01-01"])
y = -2500005.0 - 10.0 * np.arange(6)
x = 2316005.0 + 10.0 * np.arange(8)
v = (np.arange(5 * 6 * 8).reshape(5, 6, 8) % 17).astype("float32")
v[1, 0, 0] = np.nan
ds = xr.Dataset({"red": (("time", "y", "x"), v)}, coords={"time": t, "y": y, "x": x})
ds.to_zarr(sys.argv[1], zarr_format=3, consolidated=False)
sel = ds.sel(time=slice("2019-03", "2020")).time.dt.strftime("%Y-%m-%d").values.tolist()
print(json.dumps(sel))
"#;

fn info_json(cube: &Path) -> Value {
    let (out, _) = run_ok(&["info", s(cube), "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("info --json: {e}\n{out}"))
}

fn reduce(src: &Path, out: &Path, op: &str, time: Option<&str>) {
    let mut args = vec![
        "calc".to_string(),
        s(src).to_string(),
        "--expr".into(),
        "r=red*1".into(),
        "--reduce".into(),
        format!("{op}:time"),
        "--out".into(),
        s(out).to_string(),
        "--quiet".into(),
    ];
    if let Some(t) = time {
        args.extend(["--time".into(), t.to_string()]);
    }
    run_ok(&args);
}

#[test]
fn reduced_cubes_read_back_their_time_bounds() {
    if !python_ready("reduced_cubes_read_back_their_time_bounds") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.zarr");
    let selected: Vec<String> = serde_json::from_str(py(WRITE, &[&src]).trim()).unwrap();
    assert_eq!(selected.len(), 3, "{selected:?}");
    // Unreduced input has no bounds, and info says nothing of them.
    assert!(info_json(&src).get("time_bounds").is_none());

    for (time, dates) in [
        (None, vec!["2019-01-01".to_string(), "2021-01-01".into()]),
        (
            Some("2019-03/2020"),
            vec![selected[0].clone(), selected[2].clone()],
        ),
    ] {
        let out = tmp.path().join(format!("mean-{}.zarr", time.is_some()));
        reduce(&src, &out, "mean", time);
        let (first, last) = (&dates[0], &dates[1]);
        let info = info_json(&out);
        assert_eq!(info["time"], serde_json::json!([first]), "{info}");
        assert_eq!(
            info["time_bounds"],
            serde_json::json!([[first, last]]),
            "{info}"
        );
        assert_eq!(info["time_method"], "mean", "{info}");
        let (text, _) = run_ok(&["info", s(&out)]);
        let want = format!("time        1 step: {first} (mean of {first}..{last})");
        assert!(text.contains(&want), "{want}\n{text}");

        // The library's metadata.
        let cube = chunkcube::Cube::open(s(&out)).unwrap();
        let b = cube.meta().time_bounds.clone().expect("time bounds");
        let b: Vec<[String; 2]> = b
            .iter()
            .map(|[a, z]| [a.to_string(), z.to_string()])
            .collect();
        assert_eq!(b, [[first.clone(), last.clone()]]);
    }
}

/// CF 1.11 Appendix E: the method names `cell_methods` may use.
const CF_METHODS: [&str; 11] = [
    "point",
    "sum",
    "maximum",
    "median",
    "mid_range",
    "minimum",
    "mean",
    "mode",
    "range",
    "standard_deviation",
    "variance",
];

/// Reads a reduced cube (argv 1) as xarray decodes it: prints the result's attributes, its
/// dtype and, when cf_xarray is installed, its parse of `cell_methods`.
const READ: &str = r#"
import sys, json, warnings, xarray as xr
with warnings.catch_warnings():
    warnings.simplefilter("error")
    ds = xr.open_zarr(sys.argv[1])
r = ds.r
out = {"attrs": {k: str(v) for k, v in r.attrs.items()}, "dtype": str(r.dtype)}
try:
    from cf_xarray.utils import parse_cell_methods_attr
    out["parsed"] = dict(parse_cell_methods_attr(r.attrs["cell_methods"]))
except ImportError:
    pass
print(json.dumps(out))
"#;

#[test]
fn reductions_write_cf_cell_methods() {
    if !python_ready("reductions_write_cf_cell_methods") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.zarr");
    py(WRITE, &[&src]);
    for (op, method, info_method) in [
        ("mean", "mean", "mean"),
        ("median", "median", "median"),
        ("min", "minimum", "minimum"),
        ("max", "maximum", "maximum"),
        ("sum", "sum", "sum"),
        ("count", "sum", "count"),
        ("std", "standard_deviation", "standard_deviation"),
    ] {
        assert!(CF_METHODS.contains(&method));
        let out = tmp.path().join(format!("{op}.zarr"));
        reduce(&src, &out, op, None);
        let got: Value = serde_json::from_str(py(READ, &[&out]).trim()).unwrap();
        let attrs = &got["attrs"];
        assert_eq!(
            attrs["cell_methods"],
            format!("time: {method}"),
            "{op}: {got}"
        );
        if let Some(p) = got.get("parsed") {
            assert_eq!(p, &serde_json::json!({"time": method}), "{op}: {got}");
        }
        if op == "count" {
            // CF's modifier for a count of valid values; dimensionless.
            assert_eq!(
                attrs["long_name"], "number_of_observations of r over time",
                "{got}"
            );
            assert_eq!(attrs["units"], "1", "{got}");
        } else {
            assert!(attrs.get("long_name").is_none(), "{op}: {got}");
        }
        assert!(!got["dtype"].as_str().unwrap().contains("time"), "{got}");
        assert_eq!(info_json(&out)["time_method"], info_method, "{op}");
    }
}
