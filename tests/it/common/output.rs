//! Running the binary and keeping its whole `Output` (status, stdout, stderr), for tests that
//! inspect both streams; the one-line error contract checked in one place.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::Path;
use std::process::{Command, Output};

/// Status and both streams, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run `chunkcube` with `args`.
pub fn run_output<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(super::bin())
        .args(args)
        .output()
        .expect("run chunkcube")
}

/// A run that must succeed.
pub fn run_output_ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> Output {
    let o = run_output(args);
    assert!(
        o.status.success(),
        "chunkcube {args:?} failed\n{}",
        show(&o)
    );
    o
}

/// A failing run: exit status 1 and exactly one `error: ...` line on stderr (returned).
pub fn run_one_error<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let o = run_output(args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "chunkcube {args:?} should exit 1\n{}",
        show(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line for {args:?}\n{}",
        show(&o)
    );
    assert!(lines[0].starts_with("error: "), "{}", show(&o));
    assert!(!err.contains("panicked"), "{}", show(&o));
    lines[0].to_string()
}

/// Copy a directory tree (e.g. a cube, to damage the copy).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let p = e.path();
        let q = dst.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &q);
        } else {
            std::fs::copy(&p, &q).unwrap();
        }
    }
}
