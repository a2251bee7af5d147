//! The dashboard (`--dashboard`): a run watched over HTTP on loopback while it works. Every
//! request goes to 127.0.0.1; the numbers served are checked against the run's own `--stats`
//! and against the output on disk.

use crate::common::{
    bin, deafrica_name, read_stats, run, run_ok, s, tree_bytes, write_manifest, write_tif_with,
    TifSpec,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Tiles of `red` and `nir` over three years, 384 x 512 px with varied values (DEFLATE keeps
/// them small), ingested in 128 x 128 chunks: 36 output chunks per band.
fn cube(dir: &Path) -> PathBuf {
    let spec = TifSpec {
        width: 512,
        height: 384,
        ..TifSpec::default()
    };
    let mut rows = Vec::new();
    for (bi, band) in ["red", "nir"].iter().enumerate() {
        for year in 2019..2022 {
            let rel = format!("tiles/{}", deafrica_name("x1y1", year, band));
            write_tif_with(&dir.join(&rel), &spec, |c, r| {
                (1 + (c * 7 + r * 3 + year as usize + bi * 500) % 2000) as u16
            });
            rows.push((rel, band.to_string(), year.to_string()));
        }
    }
    let m = dir.join("manifest.csv");
    write_manifest(&m, &rows);
    let out = dir.join("cube");
    run_ok(&[
        "ingest",
        "--manifest",
        s(&m),
        "--out",
        s(&out),
        "--chunks",
        "time=1,y=128,x=128",
        "--quiet",
    ]);
    out
}

/// A command started with `--dashboard 127.0.0.1:0`, and the address it printed.
struct Watched {
    child: Child,
    addr: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl Watched {
    fn start(args: &[&str]) -> Watched {
        let mut child = Command::new(bin())
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot run the chunkcube binary");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the command printed nothing on stderr");
        let url = first
            .strip_prefix("dashboard: http://")
            .and_then(|u| u.strip_suffix('/'))
            .unwrap_or_else(|| panic!("expected 'dashboard: http://ADDR/' first, got {first:?}"));
        let addr: SocketAddr = url.parse().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        Watched {
            child,
            addr,
            stderr: rx,
        }
    }
    fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = get(self.addr, "/status.json")?;
        assert_eq!(code, 200, "{body}");
        Some(serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
    }
    fn wait(mut self) -> (bool, String) {
        let st = self.child.wait().unwrap();
        let rest: Vec<String> = self.stderr.try_iter().collect();
        (st.success(), rest.join("\n"))
    }
}

/// GET `path` from `addr` over plain HTTP/1.1: (status code, body), or None when nothing
/// listens (the run ended).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    // Bodies are sent whole (Content-Length); a chunked one would start with its size line.
    Some((code, body.to_string()))
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Total bytes of the chunk files under `dir/band/c/`.
fn chunk_bytes_on_disk(dir: &Path, band: &str) -> u64 {
    tree_bytes(&dir.join(band).join("c"))
        .values()
        .map(|b| b.len() as u64)
        .sum()
}

#[test]
fn status_json_follows_a_calc_from_start_to_done() {
    let dir = tempfile::tempdir().unwrap();
    let cube = cube(dir.path());
    let out = dir.path().join("ndvi");
    let stats = dir.path().join("stats.json");
    let limit: u64 = 32 << 20;
    let w = Watched::start(&[
        "calc",
        s(&cube),
        "--expr",
        "ndvi=(nir-red)/(nir+red)",
        "--out",
        s(&out),
        "--threads",
        "2",
        "--memory-limit",
        "32MiB",
        "--stats",
        s(&stats),
        "--dashboard",
        "127.0.0.1:0",
        "--dashboard-linger",
        "3",
        "--pace-tasks-ms",
        "60",
    ]);
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let last = loop {
        assert!(
            Instant::now() < deadline,
            "the run did not end: {samples:?}"
        );
        let st = w
            .status()
            .expect("the dashboard went away before the run ended");
        assert!(
            u(&st, "memory_in_use") <= limit,
            "memory above the limit: {st}"
        );
        // Known once the session started (before any run registers).
        if u(&st, "tasks_total") > 0 {
            assert_eq!(u(&st, "memory_limit"), limit, "{st}");
        }
        assert!(u(&st, "peak_bytes") <= limit, "{st}");
        let state = st["state"].as_str().unwrap().to_string();
        samples.push((u(&st, "tasks_done"), u(&st, "tasks_total"), state.clone()));
        if state != "running" {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let addr = w.addr;
    assert_eq!(last["state"], "done", "{last}");

    // Progress rose through values strictly between nothing and everything, never fell.
    let done: Vec<u64> = samples.iter().map(|s| s.0).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{samples:?}");
    let mid: std::collections::BTreeSet<u64> = samples
        .iter()
        .filter(|(d, t, st)| st == "running" && *d > 0 && d < t)
        .map(|s| s.0)
        .collect();
    assert!(mid.len() >= 3, "too few mid-run samples: {samples:?}");

    // Layers: the graph's operations and the write, each complete, 36 output chunks each.
    let names: Vec<&str> = last["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for want in ["load red", "load nir", "sub", "add", "truediv", "write"] {
        assert!(names.contains(&want), "no layer {want}: {names:?}");
    }
    for l in last["layers"].as_array().unwrap() {
        assert_eq!((u(l, "done"), u(l, "total")), (36, 36), "{l}");
    }
    assert_eq!(u(&last, "tasks_done"), u(&last, "tasks_total"));
    assert_eq!(u(&last, "tasks_total"), 6 * 36);

    // The numbers served agree with --stats and with the bytes on disk.
    let stats = read_stats(&stats);
    assert_eq!(u(&last, "bytes_read"), u(&stats, "bytes_read"));
    assert_eq!(
        u(&last, "bytes_written"),
        chunk_bytes_on_disk(&out, "ndvi"),
        "bytes_written vs the chunk files written"
    );
    assert_eq!(
        u(&last, "bytes_read"),
        chunk_bytes_on_disk(&cube, "red") + chunk_bytes_on_disk(&cube, "nir"),
        "bytes_read vs the chunk files of the bands read"
    );
    assert_eq!(u(&last["summary"], "chunks_written"), 36);
    assert!(
        last["explain"][0][1]["stored_chunks"].as_u64() == Some(72),
        "{last}"
    );

    // The task stream (read while the page lingers): every task once, on the two workers.
    let (code, body) = get(addr, "/tasks.json?since=0").expect("the dashboard lingers");
    assert_eq!(code, 200);
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(tasks.len(), 36, "{body}");
    let elapsed_us = (last["elapsed_s"].as_f64().unwrap() * 1e6) as u64;
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(u(t, "seq"), i as u64);
        assert!(u(t, "worker") < 2, "{t}");
        // Each task paused 60 ms inside its time.
        assert!(u(t, "start_us") + 60_000 <= u(t, "end_us"), "{t}");
        assert!(u(t, "end_us") <= elapsed_us, "{t}");
    }
    assert!(get(addr, "/tasks.json?since=30").is_some_and(|(_, b)| b.matches("seq").count() == 6));
    assert_eq!(get(addr, "/nothing").map(|r| r.0), Some(404));
    let (ok, err) = w.wait();
    assert!(ok, "calc failed: {err}");
}

#[test]
fn an_ingest_shows_its_bands_and_bad_addresses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cube = cube(dir.path());
    let again = dir.path().join("again");
    let manifest = dir.path().join("manifest.csv");
    let w = Watched::start(&[
        "ingest",
        "--manifest",
        s(&manifest),
        "--out",
        s(&again),
        "--chunks",
        "time=1,y=128,x=128",
        "--dashboard=127.0.0.1:0",
        "--dashboard-linger",
        "2",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        assert!(Instant::now() < deadline, "the ingest did not end");
        let st = w
            .status()
            .expect("the dashboard went away before the ingest ended");
        if st["state"] != "running" {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(last["state"], "done", "{last}");
    let layers: Vec<(String, u64, u64)> = last["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                u(l, "done"),
                u(l, "total"),
            )
        })
        .collect();
    let want = |n: &str, c| (n.to_string(), c, c);
    assert_eq!(
        layers,
        vec![
            want("scan tiles", 6),
            want("write nir", 36),
            want("write red", 36)
        ]
    );
    assert_eq!(
        u(&last, "bytes_written"),
        chunk_bytes_on_disk(&again, "red") + chunk_bytes_on_disk(&again, "nir")
    );
    assert_eq!(u(&last["summary"], "chunks_written"), 72);
    let (ok, err) = w.wait();
    assert!(ok, "ingest failed: {err}");

    // A port already taken is one clear error before any work.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = dir.path().join("o");
    let args = ["load", s(&cube), "--out", s(&out), "--dashboard", &addr];
    let (st, _, err) = run(args);
    assert!(!st.success());
    assert!(
        err.contains(&addr) && err.contains("cannot listen"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !out.exists(),
        "nothing may be written when the dashboard cannot start"
    );
    let (st, _, err) = run(["load", s(&cube), "--out", s(&out), "--dashboard", "nope"]);
    assert!(
        !st.success() && err.contains("invalid --dashboard 'nope'"),
        "{err}"
    );
    let args = [
        "load",
        s(&cube),
        "--out",
        s(&out),
        "--dashboard-linger",
        "3",
    ];
    let (st, _, err) = run(args);
    assert!(!st.success() && err.contains("--dashboard"), "{err}");
}

/// Debian's Chromium, or None (with the reason printed) when it is not installed and the
/// run does not require it (`CHUNKCUBE_REQUIRE_BROWSER=1`, as scripts/test.sh sets).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var("CHUNKCUBE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "chromium not found and CHUNKCUBE_REQUIRE_BROWSER=1 (scripts/setup.sh installs it)"
        );
        eprintln!("skipped: chromium not found (apt-get install chromium, or scripts/setup.sh)");
    }
    found
}

/// Run headless Chromium on `url` with `what` (`--dump-dom` or `--screenshot=FILE`), in a new
/// profile, with everything that would reach the network switched off: no background
/// networking, component updates, sync or QUIC, and a proxy that does not exist for anything
/// but loopback. Returns stdout.
fn browse(chromium: &Path, url: &str, what: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=127.0.0.1:9",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(what)
        .arg(url)
        .output()
        .expect("cannot run chromium");
    assert!(
        o.status.success(),
        "chromium {what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_page_shows_layers_and_progress_in_a_browser_mid_run() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cube = cube(dir.path());
    let out = dir.path().join("ndvi");
    let hold = dir.path().join("hold");
    let w = Watched::start(&[
        "calc",
        s(&cube),
        "--expr",
        "ndvi=(nir-red)/(nir+red)",
        "--out",
        s(&out),
        "--threads",
        "2",
        "--memory-limit",
        "32MiB",
        "--dashboard",
        "127.0.0.1:0",
        "--pace-tasks-ms",
        "150",
        "--hold-tasks-while",
        s(&hold),
    ]);
    // Hold the run once some tasks are done: the browser gets all the time it needs mid-run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = w.status().expect("the dashboard went away");
        assert_eq!(
            st["state"], "running",
            "the run ended before it was held: {st}"
        );
        if u(&st, "tasks_done") > 0 {
            std::fs::write(&hold, b"").unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "no task finished: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://{}/", w.addr);

    // The page itself names nothing outside the process: no URL, no external asset.
    let (code, page) = get(w.addr, "/").unwrap();
    assert_eq!(code, 200);
    for outside in [
        "http:", "https:", "src=", "href=", "url(", "@import", "//cdn",
    ] {
        assert!(!page.contains(outside), "the page refers to {outside}");
    }

    let dom = browse(&chromium, &url, "--dump-dom");
    let shot = dir.path().join("dashboard.png");
    browse(&chromium, &url, &format!("--screenshot={}", shot.display()));
    let held = w.status().unwrap();
    std::fs::remove_file(&hold).unwrap();

    // The rendered DOM: every layer by name, with progress above zero and below the end.
    let attr = |tag: &str, name: &str| -> Option<u64> {
        let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
        tag[at..].split('"').next()?.parse().ok()
    };
    let layers: Vec<(String, u64, u64)> = dom
        .split("<div class=\"layer\"")
        .skip(1)
        .map(|t| {
            let tag = &t[..t.find('>').unwrap()];
            let name = tag.split("data-name=\"").nth(1).unwrap().split('"').next();
            let done = attr(tag, "data-done").unwrap();
            (
                name.unwrap().to_string(),
                done,
                attr(tag, "data-total").unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = layers.iter().map(|l| l.0.as_str()).collect();
    for want in ["load red", "load nir", "sub", "add", "truediv", "write"] {
        assert!(
            names.contains(&want),
            "the page shows no layer {want}: {names:?}\n{dom}"
        );
        assert!(
            dom.contains(&format!(">{want}</span>")),
            "{want} not shown as text"
        );
    }
    for (name, done, total) in &layers {
        assert!(
            *done > 0 && done < total,
            "{name}: {done} / {total} mid-run\n{dom}"
        );
        assert!(*done <= u(&held, "tasks_total"), "{name}");
    }
    assert!(
        dom.contains(">running</span>"),
        "the page does not say running"
    );
    assert!(dom.contains("explain-table") && dom.contains("stored chunks to fetch"));
    // The screenshot: a PNG of the window's size, not an empty page.
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (pw, ph) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((pw, ph), (1280, 1000));
    assert!(
        png.len() > 20_000,
        "a near-empty screenshot ({} bytes)",
        png.len()
    );

    let (ok, err) = w.wait();
    assert!(ok, "calc failed: {err}");
}

#[test]
fn an_export_shows_one_layer_per_variable_with_its_blocks_and_the_bytes_of_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let cube = cube(dir.path());
    let out = dir.path().join("files");
    let stats = dir.path().join("stats.json");
    let hold = dir.path().join("hold");
    std::fs::write(&hold, b"").unwrap();
    // Held once the first block is computed (its 4 chunk tasks) and the second started.
    let w = Watched::start(&[
        "export",
        s(&cube),
        "--out",
        s(&out),
        "--format",
        "GTiff",
        "--threads",
        "2",
        "--memory-limit",
        "256MiB",
        "--stats",
        s(&stats),
        "--dashboard",
        "127.0.0.1:0",
        "--dashboard-linger",
        "2",
        "--hold-tasks-while",
        s(&hold),
        "--hold-after-tasks",
        "6",
    ]);
    let layers = |st: &serde_json::Value| -> Vec<(String, u64, u64)> {
        st["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["name"].as_str().unwrap().into(),
                    u(l, "done"),
                    u(l, "total"),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let st = w.status().expect("the dashboard went away");
        assert_eq!(st["state"], "running", "{st}");
        if u(&st, "tasks_done") > 0 {
            break st;
        }
        assert!(Instant::now() < deadline, "no block was written: {st}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // 384 rows of 128-row chunks: 3 blocks per file, a file per year (3) for each band; all
    // known from the start, one run.
    let names: Vec<(String, u64)> = layers(&held).into_iter().map(|l| (l.0, l.2)).collect();
    assert_eq!(
        names,
        vec![("export nir".to_string(), 9), ("export red".to_string(), 9)]
    );
    assert_eq!(held["runs"].as_array().unwrap().len(), 1, "{held}");
    assert_eq!(u(&held, "tasks_total"), 18);
    assert!(u(&held, "tasks_done") < 18, "held mid-run: {held}");
    assert!(u(&held, "memory_in_use") <= u(&held, "memory_limit"));
    std::fs::remove_file(&hold).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let st = w
            .status()
            .expect("the dashboard went away before the export ended");
        if st["state"] != "running" {
            break st;
        }
        assert!(Instant::now() < deadline, "the export did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(last["state"], "done", "{last}");
    assert!(layers(&last).iter().all(|l| l.1 == l.2), "{last}");
    let files: u64 = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(u(&last, "bytes_written"), files, "the files' bytes");
    assert!(!last["explain"].as_array().unwrap().is_empty(), "{last}");
    let (ok, err) = w.wait();
    assert!(ok, "export failed: {err}");
    assert_eq!(u(&read_stats(&stats), "bytes_written"), files);
}
