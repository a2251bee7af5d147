//! Store-format compatibility: cubes written by `chunkcube ingest` must read back right in
//! xarray, rioxarray and zarr-python (DESIGN.md, "Store format").
//!
//! The checks themselves live in `scripts/check_xarray.py`. Without the Python packages
//! these tests print a skip note and pass, unless `CHUNKCUBE_REQUIRE_PYTHON=1` (as in CI),
//! where they fail and say to run `scripts/setup.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when the Python side can run; otherwise skip (or fail when it is required).
fn python_ready(test: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import xarray, zarr, rioxarray"])
        .output();
    let why = match &probe {
        Ok(o) if o.status.success() => return true,
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("cannot run python3: {e}"),
    };
    if std::env::var("CHUNKCUBE_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("{test}: python3 cannot import xarray, zarr, rioxarray ({why}); run scripts/setup.sh (as root) or `python3 -m pip install -r scripts/requirements.txt`");
    }
    eprintln!("SKIP {test}: python3 cannot import xarray, zarr, rioxarray ({why}); run scripts/setup.sh to enable it");
    false
}

fn show(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `chunkcube ingest --manifest fixtures/manifest.csv --out CUBE --quiet EXTRA...`
fn ingest(cube: &Path, extra: &[&str]) {
    let manifest = crate_dir().join("fixtures/manifest.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_chunkcube"))
        .arg("ingest")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--out")
        .arg(cube)
        .arg("--quiet")
        .args(extra)
        .output()
        .expect("run chunkcube");
    assert!(
        o.status.success(),
        "chunkcube ingest {extra:?} failed\n{}",
        show(&o)
    );
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
