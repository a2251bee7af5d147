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

/// A reduced cube (argv 1) as xarray decodes it: its steps, the bounds the time coordinate
/// names, and every variable's attributes, as JSON (dates as `YYYY-MM-DD`).
const READ_BOUNDS: &str = r#"
import sys, json, warnings, numpy as np, xarray as xr
with warnings.catch_warnings():
    warnings.simplefilter("error")
    ds = xr.open_zarr(sys.argv[1], decode_times=True)
day = lambda d: str(np.datetime_as_string(d, unit="D"))
bname = ds.time.attrs.get("bounds") or ds.time.encoding.get("bounds")
out = {
    "time": [day(d) for d in ds.time.values],
    "bounds_name": bname,
    "bounds": [[day(a), day(b)] for a, b in ds[bname].values] if bname else None,
    "attrs": {k: {a: str(x) for a, x in v.attrs.items()} for k, v in ds.data_vars.items()},
}
print(json.dumps(out))
"#;

/// What a cube says of its time provenance, by chunkcube (`info --json`) and by xarray:
/// (steps, bounds, `cell_methods` of `var`), both required to agree.
fn provenance(cube: &Path, var: &str) -> (Value, Value, Value) {
    let info = info_json(cube);
    let band = info["bands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == var)
        .unwrap_or_else(|| panic!("no band {var}: {info}"))
        .clone();
    let xr: Value = serde_json::from_str(py(READ_BOUNDS, &[cube]).trim()).unwrap();
    assert_eq!(xr["time"], info["time"], "{xr}\n{info}");
    assert_eq!(xr["bounds"], info["time_bounds"], "{xr}\n{info}");
    let cm = xr["attrs"][var]["cell_methods"].clone();
    assert_eq!(cm, band["cell_methods"], "{xr}\n{info}");
    if !xr["bounds"].is_null() {
        assert_eq!(xr["bounds_name"], "time_bnds", "{xr}");
    }
    (info["time"].clone(), info["time_bounds"].clone(), cm)
}

fn cli(args: &[&str]) {
    let mut a: Vec<&str> = args.to_vec();
    a.push("--quiet");
    run_ok(&a);
}

#[test]
fn reduced_cubes_keep_bounds_and_cell_methods_when_read_again() {
    if !python_ready("reduced_cubes_keep_bounds_and_cell_methods_when_read_again") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let src = p("src.zarr");
    py(WRITE, &[&src]);
    // The series WRITE writes runs from 2019-01-01 to 2021-01-01.
    let (first, last) = ("2019-01-01", "2021-01-01");
    let (med, copy, doubled, again) = (p("med.zarr"), p("copy"), p("x2"), p("again"));
    cli(&[
        "calc",
        s(&src),
        "--expr",
        "m=red*1",
        "--reduce",
        "median:time",
        "--out",
        s(&med),
    ]);
    let want = (
        serde_json::json!([first]),
        serde_json::json!([[first, last]]),
        serde_json::json!("time: median"),
    );
    assert_eq!(provenance(&med, "m"), want);

    // Read again: copied as it is, or computed elementwise, it still says what it is.
    cli(&["load", s(&med), "--out", s(&copy)]);
    assert_eq!(provenance(&copy, "m"), want, "load --out");
    cli(&["calc", s(&med), "--expr", "v=m*2", "--out", s(&doubled)]);
    assert_eq!(provenance(&doubled, "v"), want, "calc m*2");

    // Reduced again: a mean of medians over the same range (CF keeps both, in order).
    cli(&[
        "calc",
        s(&med),
        "--expr",
        "v=m",
        "--reduce",
        "mean:time",
        "--out",
        s(&again),
    ]);
    let (t, b, cm) = provenance(&again, "v");
    assert_eq!((t, b), (want.0, want.1));
    assert_eq!(cm, "time: median time: mean");
    // info reads it as a mean of medians (the last reduction first), not as a median.
    assert_eq!(info_json(&again)["time_method"], "mean of median");
}

/// Monthly means as xarray writes them (argv 1): steps mid-month, `time_bnds` the months
/// (CF: [start, next start)), `cell_methods: "time: mean"`, a long name and units. Prints
/// the steps and bounds pandas computes, as JSON.
const MONTHLY: &str = r#"
import sys, json, numpy as np, pandas as pd, xarray as xr
starts = pd.date_range("2019-01-01", periods=5, freq="MS")
ends = starts + pd.offsets.MonthBegin(1)
t = starts + pd.Timedelta(days=14)
y = -2500005.0 - 10.0 * np.arange(6)
x = 2316005.0 + 10.0 * np.arange(8)
v = (np.arange(5 * 6 * 8).reshape(5, 6, 8) % 17).astype("float32")
attrs = {"long_name": "surface reflectance (red)", "units": "1", "cell_methods": "time: mean"}
bnds = np.stack([starts.values, ends.values], axis=1)
ds = xr.Dataset(
    {"red": (("time", "y", "x"), v, attrs), "time_bnds": (("time", "nv"), bnds)},
    coords={"time": t, "y": y, "x": x},
)
ds.time.attrs["bounds"] = "time_bnds"
# Consolidated, as chunkcube writes, so that reading it back is checked warning-free alike.
ds.to_zarr(sys.argv[1], zarr_format=3, consolidated=True)
day = lambda d: str(d.date())
print(json.dumps({"time": [day(d) for d in t], "bounds": [[day(a), day(b)] for a, b in zip(starts, ends)]}))
"#;

#[test]
fn selections_keep_their_steps_bounds_and_reductions_span_them() {
    if !python_ready("selections_keep_their_steps_bounds_and_reductions_span_them") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let src = p("monthly.zarr");
    let refs: Value = serde_json::from_str(py(MONTHLY, &[&src]).trim()).unwrap();
    let (times, bounds) = (
        refs["time"].as_array().unwrap(),
        refs["bounds"].as_array().unwrap(),
    );
    assert_eq!(bounds.len(), 5, "{refs}");
    let mean = serde_json::json!("time: mean");
    assert_eq!(
        provenance(&src, "red"),
        (refs["time"].clone(), refs["bounds"].clone(), mean.clone())
    );

    // February and March, by date and by index: their own bounds only.
    let (by_date, by_index) = (p("febmar"), p("isel"));
    cli(&[
        "load",
        s(&src),
        "--time",
        "2019-02/2019-03",
        "--out",
        s(&by_date),
    ]);
    cli(&["load", s(&src), "--isel", "time=1:3", "--out", s(&by_index)]);
    let want = (
        Value::from(times[1..3].to_vec()),
        Value::from(bounds[1..3].to_vec()),
        mean.clone(),
    );
    assert_eq!(provenance(&by_date, "red"), want, "--time");
    assert_eq!(provenance(&by_index, "red"), want, "--isel");
    // A band written as it is keeps what describes its values; a computed one does not.
    let xr: Value = serde_json::from_str(py(READ_BOUNDS, &[&by_date]).trim()).unwrap();
    assert_eq!(
        xr["attrs"]["red"]["long_name"], "surface reflectance (red)",
        "{xr}"
    );
    assert_eq!(xr["attrs"]["red"]["units"], "1", "{xr}");

    // The library's selection of a lazy array subsets the bounds with the steps.
    let cube = chunkcube::Cube::open(s(&src)).unwrap();
    let ds = cube
        .load(&chunkcube::Query::new().chunks(chunkcube::store::ChunkSpec::Auto))
        .unwrap();
    let da = ds["red"].isel(&[("time", 3..5)]).unwrap();
    let got: Vec<[String; 2]> = da
        .time_bounds()
        .expect("bounds of the selection")
        .iter()
        .map(|[a, b]| [a.to_string(), b.to_string()])
        .collect();
    assert_eq!(serde_json::json!(got), Value::from(bounds[3..5].to_vec()));

    // A mean of February..April spans the months, not the mid-month labels.
    let reduced = p("mean");
    cli(&[
        "calc",
        s(&src),
        "--time",
        "2019-02/2019-04",
        "--expr",
        "r=red*1",
        "--reduce",
        "mean:time",
        "--out",
        s(&reduced),
    ]);
    let (t, b, cm) = provenance(&reduced, "r");
    let span = serde_json::json!([[bounds[1][0], bounds[3][1]]]);
    assert_eq!(b, span, "{t}");
    assert_eq!(t, serde_json::json!([bounds[1][0]]));
    assert_eq!(cm, "time: mean time: mean");
    let xr: Value = serde_json::from_str(py(READ_BOUNDS, &[&reduced]).trim()).unwrap();
    assert!(xr["attrs"]["r"].get("units").is_none(), "{xr}");
}
