//! The command line as an analyst meets it: closed pipes, `--help`, unnamed expressions,
//! `--graph` on load, `--print` with coordinates and numpy-style summaries, remote inputs,
//! manifest paths, and the progress bar in a real terminal.

use crate::common::output::run_one_error;
use crate::common::{bin, fixture_cube_64, load_band, read_stats, run_ok, s};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

fn cube() -> &'static Path {
    fixture_cube_64("cli-cube-")
}

/// Run `chunkcube ARGS | head -1` in bash with pipefail: the pipeline's status is
/// chunkcube's own (head always succeeds).
fn piped_into_head(args: &str) -> (std::process::ExitStatus, String, String) {
    let o = Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(format!("'{}' {args} | head -1", bin().display()))
        .output()
        .unwrap();
    (
        o.status,
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_quietly_with_success() {
    let c = s(cube());
    for args in [
        format!("load '{c}' --print-all --measurements red"),
        format!("load '{c}' --print"),
        format!("info '{c}' --json"),
        format!("calc '{c}' --expr 'n=nir*1' --print-all --isel y=0:100"),
    ] {
        let (st, out, err) = piped_into_head(&args);
        assert!(st.success(), "{args}: {st}\n{err}");
        assert_eq!(out.lines().count(), 1, "{args}: {out}");
        assert!(
            !err.contains("panicked") && err.trim().is_empty(),
            "{args}: {err}"
        );
    }
    // The reader gone before anything is written: the first write fails, still success.
    for args in [vec!["info", c, "--json"], vec!["load", c, "--summary"]] {
        let mut child = Command::new(bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let st = child.wait().unwrap();
        assert!(st.success(), "{args:?}: {st}\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn help_has_examples_and_the_expression_functions() {
    for cmd in ["ingest", "info", "load", "calc", "export"] {
        let (out, _) = run_ok(&[cmd, "--help"]);
        assert!(
            out.contains("Examples:\n  chunkcube "),
            "{cmd} --help:\n{out}"
        );
    }
    let (calc, _) = run_ok(&["calc", "--help"]);
    let functions = chunkcube::graph::FUNCTIONS;
    assert!(calc.contains(functions), "{calc}");
    assert!(calc.contains(chunkcube::graph::OPERATORS), "{calc}");
    // The same list where an unknown function is named.
    let e = run_one_error(&["calc", s(cube()), "--expr", "l=log10(nir)", "--print"]);
    assert!(
        e.contains("unknown function 'log10'") && e.contains(functions),
        "{e}"
    );
}

#[test]
fn an_unnamed_expression_is_called_result() {
    let (out, _) = run_ok(&[
        "calc",
        s(cube()),
        "--expr",
        "(nir-red)/(nir+red)",
        "--isel",
        "y=0:2,x=0:2",
        "--time",
        "2019/2019",
        "--print",
        "-q",
    ]);
    assert!(
        out.starts_with("<chunkcube.DataArray 'result' (time: 1, y: 2, x: 2)> float32"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("r");
    run_ok(&[
        "calc",
        s(cube()),
        "--expr",
        "nir>=red",
        "--out",
        s(&dest),
        "-q",
    ]);
    assert!(dest.join("result").join("zarr.json").is_file());
}

#[test]
fn load_writes_its_task_graph() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("load.dot");
    run_ok(&[
        "load",
        s(cube()),
        "--measurements",
        "red",
        "--isel",
        "y=0:100",
        "--graph",
        s(&g),
    ]);
    let dot = std::fs::read_to_string(&g).unwrap();
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("red"), "{dot}");
}

/// Parse a printed table: (x coordinates of the header, rows of (y label, cells)).
fn table(block: &str) -> (Vec<String>, Vec<(String, Vec<String>)>) {
    let mut lines = block.lines();
    let head: Vec<String> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .skip(3)
        .map(String::from)
        .collect();
    let rows = lines
        .map(|l| {
            let mut f = l.split_whitespace().map(String::from);
            (f.next().unwrap(), f.collect())
        })
        .collect();
    (head, rows)
}

#[test]
fn print_shows_coordinates_and_summarises_large_arrays_like_numpy() {
    let c = s(cube());
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("s.json");
    let (out, _) = run_ok(&[
        "load",
        c,
        "--measurements",
        "red",
        "--print",
        "--stats",
        s(&stats),
    ]);
    let red = load_band::<u16>(cube(), "red");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "<chunkcube.DataArray 'red' (time: 2, y: 200, x: 240)> uint16, nodata 0"
    );
    assert_eq!(lines[1], "time = 2019-01-01");
    let t0 = lines[2..10].join("\n");
    let (xs, rows) = table(&t0);
    // Pixel centres: x0 + 5, y0 - 5 (10 m pixels from 2316000, -2500000).
    assert_eq!(
        xs,
        ["2316005", "2316015", "2316025", "...", "2318375", "2318385", "2318395"]
    );
    let ys: Vec<&str> = rows.iter().map(|(y, _)| y.as_str()).collect();
    assert_eq!(
        ys,
        ["-2500005", "-2500015", "-2500025", "...", "-2501975", "-2501985", "-2501995"]
    );
    let idx = [
        Some(0),
        Some(1),
        Some(2),
        None,
        Some(237),
        Some(238),
        Some(239),
    ];
    let idy = [
        Some(0),
        Some(1),
        Some(2),
        None,
        Some(197),
        Some(198),
        Some(199),
    ];
    for ((_, cells), y) in rows.iter().zip(idy) {
        for (cell, x) in cells.iter().zip(idx) {
            match (y, x) {
                (Some(y), Some(x)) => assert_eq!(cell, &red[[0, y, x]].to_string(), "y={y} x={x}"),
                _ => assert_eq!(cell, "..."),
            }
        }
    }
    assert_eq!(lines[10], "time = 2020-01-01");
    // Only the corners were read: 2 times x 2 chunk rows x 2 chunk columns.
    assert_eq!(read_stats(&stats)["chunks_read"], 8);
    // --print-all: every row of both time steps.
    let (all, _) = run_ok(&[
        "load",
        c,
        "--measurements",
        "red",
        "--isel",
        "x=0:5",
        "--print-all",
    ]);
    assert_eq!(all.lines().count(), 1 + 2 * (2 + 200), "{}", &all[..300]);
    assert!(!all.contains("..."));
    // Small arrays are printed whole by --print too.
    let (small, _) = run_ok(&[
        "load",
        c,
        "--measurements",
        "smad",
        "--isel",
        "time=0:1,y=0:2,x=0:2",
        "--print",
    ]);
    assert!(
        small.contains("nodata nan") && !small.contains("..."),
        "{small}"
    );
}

#[test]
fn remote_inputs_and_missing_manifest_files_say_what_was_tried() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    for url in [
        "gs://bucket/x_2019--P1Y_final_red.tif",
        "/vsiaz/c/x_2019--P1Y_final_red.tif",
    ] {
        let e = run_one_error(&["ingest", "--out", s(&out), url]);
        assert!(
            e.contains("only local paths, http(s):// and s3:// tiles are supported")
                && e.contains(url),
            "{e}"
        );
    }
    let m = dir.path().join("tiles.csv");
    std::fs::write(&m, "path,band,time\nsub/missing.tif,red,2019\n").unwrap();
    let e = run_one_error(&["ingest", "--manifest", s(&m), "--out", s(&out)]);
    let resolved = dir.path().canonicalize().unwrap().join("sub/missing.tif");
    assert!(e.contains(s(&resolved)) && e.contains("row 2"), "{e}");
    std::fs::write(&m, "path,band,time\ngs://host/a.tif,red,2019\n").unwrap();
    let e = run_one_error(&["ingest", "--manifest", s(&m), "--out", s(&out)]);
    assert!(
        e.contains("row 2") && e.contains("gs://host/a.tif: only local paths"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn the_progress_bar_fits_the_terminal_and_leaves_a_summary() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to give the run a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("ndvi");
    for cols in [50, 72, 120] {
        let _ = std::fs::remove_dir_all(&dest);
        let cmd = format!(
            "stty cols {cols} rows 24; '{}' calc '{}' --expr 'ndvi=(nir-red)/(nir+red)' --chunks time=1,y=16,x=16 --out '{}' --threads 1",
            bin().display(),
            s(cube()),
            s(&dest)
        );
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{text}");
        // What the terminal shows: lines split at CR/LF, escape sequences removed.
        let plain = strip_ansi(&text);
        for seg in plain.split(['\r', '\n']) {
            assert!(seg.chars().count() <= cols, "{cols} columns: {seg:?}");
        }
        let last = plain
            .split(['\r', '\n'])
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap();
        assert!(last.starts_with("done: "), "{last:?}");
        if cols >= 120 {
            assert!(
                last.contains("chunks read") && last.contains("peak memory"),
                "{last:?}"
            );
        }
        // The bar was drawn: "<what> <done>/<total> ...".
        let drawn = plain.split(['\r', '\n']).any(|seg| {
            seg.split_whitespace().any(|w| {
                w.split_once('/')
                    .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok())
            })
        });
        assert!(drawn, "the bar was drawn: {plain:?}");
    }
}

/// Text without ANSI escape sequences (CSI ... letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The shared libraries a run of `chunkcube ARGS` loads (glibc's `LD_DEBUG=libs` trace),
/// checking it succeeds.
fn libraries_loaded(args: &[&str]) -> String {
    let o = Command::new(bin())
        .args(args)
        .env("LD_DEBUG", "libs")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "chunkcube {args:?} failed:\n{err}");
    err
}

#[test]
fn commands_that_need_no_gdal_never_load_it() {
    if !chunkcube::geo::gdal_lazy::LAZY {
        eprintln!("skipped: GDAL is linked eagerly on this platform");
        return;
    }
    let c = s(cube());
    for args in [
        vec!["info", c],
        vec!["info", c, "--json"],
        vec!["load", c, "--isel", "time=0:1,y=0:3,x=0:3", "--print"],
        vec![
            "load",
            c,
            "--lon",
            "24.01,24.02",
            "--lat=-20,-19.995",
            "--summary",
        ],
        vec![
            "calc",
            c,
            "--expr",
            "n=nir*2",
            "--isel",
            "y=0:9,x=0:9",
            "--print",
        ],
    ] {
        let trace = libraries_loaded(&args);
        assert!(
            trace.contains("libc.so") && !trace.contains("libgdal"),
            "chunkcube {args:?} loaded GDAL (or the trace is empty):\n{}",
            trace
                .lines()
                .filter(|l| l.contains("libgdal"))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // ... while ingest and export load it on their first GDAL call, and work.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let a = crate::common::ingest_fixtures_args(&out, &["--chunks", "time=1,y=64,x=64"]);
    let a: Vec<&str> = a.iter().map(|x| x.as_str()).collect();
    assert!(
        libraries_loaded(&a).contains("libgdal"),
        "ingest without GDAL?"
    );
    let e = tmp.path().join("e");
    let trace = libraries_loaded(&["export", c, "--out", s(&e), "--measurements", "red", "-q"]);
    assert!(trace.contains("libgdal"), "export without GDAL?");
    assert_eq!(
        std::fs::read_dir(&e).unwrap().count(),
        2,
        "one file per time step"
    );
}
