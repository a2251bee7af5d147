//! Store-format compatibility: cubes written by `chunkcube ingest` must read back right in
//! xarray, rioxarray and zarr-python (DESIGN.md, "Store format").
//!
//! The checks themselves live in `scripts/check_xarray.py`. Without the Python packages
//! these tests print a skip note and pass, unless `CHUNKCUBE_REQUIRE_PYTHON=1` (as in CI),
//! where they fail and say to run `scripts/setup.sh`.

use crate::common::output::show;
use crate::common::python::python_ready;
use crate::common::{crate_dir, ingest_fixtures_with};
use std::path::Path;
use std::process::Command;

/// `chunkcube ingest --manifest fixtures/manifest.csv --out CUBE --quiet EXTRA...`
fn ingest(cube: &Path, extra: &[&str]) {
    ingest_fixtures_with(cube, extra);
}

/// Run the Python checks on a cube, comparing its pixels with the fixture tiles too.
fn check_xarray(cube: &Path) {
    let dir = crate_dir();
    let o = Command::new("python3")
        .arg(dir.join("scripts/check_xarray.py"))
        .arg(cube)
        .args([
            "--expect-epsg",
            "6933",
            "--expect-times",
            "2019-01-01,2020-01-01",
            "--manifest",
        ])
        .arg(dir.join("fixtures/manifest.csv"))
        .output()
        .expect("run python3 scripts/check_xarray.py");
    assert!(
        o.status.success(),
        "scripts/check_xarray.py {} failed\n{}",
        cube.display(),
        show(&o)
    );
    print!("{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn xarray_reads_chunked_cube() {
    if !python_ready("xarray_reads_chunked_cube") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cube = tmp.path().join("cube");
    ingest(&cube, &["--chunks", "time=1,y=64,x=64"]);
    check_xarray(&cube);
}

#[test]
fn zarr_python_reads_sharded_cube() {
    if !python_ready("zarr_python_reads_sharded_cube") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cube = tmp.path().join("cube");
    ingest(
        &cube,
        &["--chunks", "time=1,y=64,x=64", "--shards", "y=128,x=128"],
    );
    // The sharding codec must be in the store, or this test proves nothing about shards.
    let meta = std::fs::read_to_string(cube.join("red/zarr.json")).unwrap();
    assert!(
        meta.contains("sharding_indexed"),
        "red/zarr.json has no sharding codec:\n{meta}"
    );
    check_xarray(&cube);
}
