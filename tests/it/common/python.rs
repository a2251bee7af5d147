//! Running Python (xarray, zarr-python, rioxarray) from the tests: to write stores the way
//! other tools write them, and to read back what chunkcube wrote as users' tools do.
//!
//! Without the Python packages a test prints a skip note and passes, unless
//! `CHUNKCUBE_REQUIRE_PYTHON=1` (as in CI), where it fails and says to run `scripts/setup.sh`.

use std::path::Path;
use std::process::Command;

/// True when python3 imports xarray, zarr, rioxarray and tensorstore; otherwise skip (or fail when required).
pub fn python_ready(test: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import xarray, zarr, rioxarray, tensorstore"])
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
        panic!("{test}: python3 cannot import xarray, zarr, rioxarray, tensorstore ({why}); run scripts/setup.sh (as root) or `python3 -m pip install -r scripts/requirements.txt`");
    }
    eprintln!("SKIP {test}: python3 cannot import xarray, zarr, rioxarray, tensorstore ({why}); run scripts/setup.sh to enable it");
    false
}

/// Run a Python program with `args` as `sys.argv[1:]`; panics with both streams unless it
/// exits 0. Returns stdout.
pub fn py(code: &str, args: &[&Path]) -> String {
    let o = Command::new("python3")
        .args(["-c", code])
        .args(args)
        .output()
        .expect("run python3");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "python failed: {}\n--- program ---\n{code}\n--- stdout ---\n{out}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}
