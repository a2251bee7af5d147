//! Remote sources for ingest: the fixture tiles served over plain HTTP (a small range-capable
//! server started here, read through GDAL's /vsicurl/) and from the loopback S3 server (moto,
//! through /vsis3/), named in a manifest, on the command line and in a STAC ItemCollection,
//! ingest to the same cube as the local files. Bad URLs and bad STAC are one-line errors
//! naming the URL or item, without secrets.

use crate::common::{self, s};
use crate::s3::{block_on, bucket_store, endpoint, make_bucket, strs, Env};
use object_store::{path::Path as ObjectPath, ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------
// A static file server with HEAD, byte ranges, ETag and 404, on 127.0.0.1:0

struct FileServer {
    base: String,
    requests: Arc<AtomicU64>,
    /// The path of every request, in order (what a worker asked of which tile).
    log: Arc<Mutex<Vec<String>>>,
    /// The path of every HEAD request (GDAL's open of a /vsicurl/ file sends one).
    heads: Arc<Mutex<Vec<String>>>,
}

impl FileServer {
    /// Serve the files under `root` (read from disk on every request, so a file replaced on
    /// disk is a new version: its ETag changes).
    fn start(root: &Path) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (root, count) = (root.to_path_buf(), requests.clone());
        let (l, hl) = (log.clone(), heads.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, count, l, hl) = (root.clone(), count.clone(), l.clone(), hl.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &root, &count, &l, &hl);
                });
            }
        });
        FileServer {
            base,
            requests,
            log,
            heads,
        }
    }

    /// The requests since the last call, per path.
    fn take_log(&self) -> BTreeMap<String, u64> {
        count(std::mem::take(&mut *self.log.lock().unwrap()))
    }

    /// The HEAD requests since the last call, per path.
    fn take_heads(&self) -> BTreeMap<String, u64> {
        count(std::mem::take(&mut *self.heads.lock().unwrap()))
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }
}

fn count(paths: Vec<String>) -> BTreeMap<String, u64> {
    let mut per = BTreeMap::new();
    for p in paths {
        *per.entry(p).or_insert(0) += 1;
    }
    per
}

fn serve(
    conn: std::net::TcpStream,
    root: &Path,
    count: &AtomicU64,
    log: &Mutex<Vec<String>>,
    heads: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("/").to_string(),
        );
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = v.trim().strip_prefix("bytes=").map(str::to_string);
                }
            }
        }
        count.fetch_add(1, Ordering::SeqCst);
        let rel = target.split('?').next().unwrap().trim_start_matches('/');
        log.lock().unwrap().push(rel.to_string());
        if method == "HEAD" {
            heads.lock().unwrap().push(rel.to_string());
        }
        let file = root.join(rel);
        let body = match (rel.contains(".."), std::fs::read(&file)) {
            (false, Ok(b)) if file.is_file() => b,
            _ => {
                out.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
                )?;
                continue;
            }
        };
        let etag = format!("\"{:08x}\"", crc32c::crc32c(&body));
        let len = body.len() as u64;
        let (status, lo, hi) = match range.as_deref().and_then(|r| r.split_once('-')) {
            Some((a, b)) => {
                let lo: u64 = a.parse().unwrap_or(0);
                let hi: u64 = b.parse().unwrap_or(len - 1).min(len - 1);
                ("206 Partial Content", lo, hi)
            }
            None => ("200 OK", 0, len - 1),
        };
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: {etag}\r\nLast-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\nConnection: keep-alive\r\n",
            hi + 1 - lo
        );
        if status.starts_with("206") {
            head.push_str(&format!("Content-Range: bytes {lo}-{hi}/{len}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if method != "HEAD" {
            out.write_all(&body[lo as usize..=hi as usize])?;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// The fixture manifest's rows: (relative path, band, time).
fn fixture_rows() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(common::fixtures_manifest()).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

/// A manifest naming each fixture tile at `url(relative path)`.
fn manifest_at(path: &Path, url: impl Fn(&str) -> String) {
    let mut t = String::from("path,band,time\n");
    for (p, b, time) in fixture_rows() {
        t.push_str(&format!("{},{b},{time}\n", url(&p)));
    }
    std::fs::write(path, t).unwrap();
}

/// The fixtures' cube ingested from the local files (64² chunks).
fn local_cube(dir: &Path) -> PathBuf {
    let out = dir.join("local");
    common::ingest_fixtures(&out, "time=1,y=64,x=64");
    out
}

/// A store tree with what names the input location taken out of the root metadata (the
/// fingerprint and the write id derived from it): everything else must be byte-identical.
fn comparable(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut t = common::tree_bytes(dir);
    fn strip(v: &mut Value) {
        if let Some(o) = v.as_object_mut() {
            for k in ["ingest_fingerprint", "write_id", "job_fingerprint"] {
                o.remove(k);
            }
            o.values_mut().for_each(strip);
        }
    }
    let root = t.get_mut("zarr.json").expect("a committed cube");
    let mut v: Value = serde_json::from_slice(root).unwrap();
    strip(&mut v);
    *root = serde_json::to_vec(&v).unwrap();
    t
}

fn assert_same_cube(what: &str, got: &Path, want: &Path) {
    let (g, w) = (comparable(got), comparable(want));
    assert_eq!(
        g.keys().collect::<Vec<_>>(),
        w.keys().collect::<Vec<_>>(),
        "{what}: the same objects"
    );
    let chunks = w.keys().filter(|k| k.contains("/c/")).count();
    assert!(chunks > 8, "{what}: {chunks} chunk objects");
    for (k, v) in &w {
        assert!(&g[k] == v, "{what}: {k} differs");
    }
}

/// A fake endpoint for runs that touch no S3 (the secrets are still in their environment).
fn no_s3() -> Env {
    Env::new("http://127.0.0.1:9")
}

fn ingest_args(out: &Path, inputs: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["ingest", "--out", s(out), "--quiet", "--chunks"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    a.push("time=1,y=64,x=64".into());
    a.extend(inputs.iter().map(|x| x.to_string()));
    a
}

/// Upload every fixture tile to `bucket` under `fx/`.
fn upload_fixtures(ep: &str, bucket: &str) {
    let store = bucket_store(ep, bucket);
    block_on(async {
        for (p, _, _) in fixture_rows() {
            let bytes = std::fs::read(common::fixtures_dir().join(&p)).unwrap();
            store
                .put(
                    &ObjectPath::from(format!("fx/{p}")),
                    PutPayload::from(bytes),
                )
                .await
                .unwrap();
        }
    });
}

// ---------------------------------------------------------------------------
// Tests

/// The fixture tiles served over HTTP from a copy (so a test may replace a tile on the
/// server), a manifest of their URLs, and the cube the local files ingest to (the reference).
struct Served {
    tmp: tempfile::TempDir,
    want: PathBuf,
    www: PathBuf,
    srv: FileServer,
    env: Env,
    manifest: PathBuf,
}

fn served() -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let want = local_cube(tmp.path());
    let www = tmp.path().join("www");
    common::output::copy_dir(&common::fixtures_dir(), &www);
    let srv = FileServer::start(&www);
    let manifest = tmp.path().join("http.csv");
    manifest_at(&manifest, |p| srv.url(p));
    Served {
        tmp,
        want,
        www,
        srv,
        env: no_s3(),
        manifest,
    }
}

#[test]
fn http_tiles_ingest_to_the_local_cube_and_resume() {
    let Served {
        tmp,
        want,
        www: served,
        srv,
        env,
        manifest: m,
    } = served();
    let out = tmp.path().join("from-http");
    env.ok(&strs(&ingest_args(&out, &["--manifest", s(&m)])));
    assert_same_cube("manifest of http:// URLs", &out, &want);
    assert!(srv.requests.load(Ordering::SeqCst) > 0);

    // URLs on the command line (band and year from their DE Africa names).
    let urls: Vec<String> = fixture_rows().iter().map(|r| srv.url(&r.0)).collect();
    let out2 = tmp.path().join("from-args");
    let mut a = ingest_args(&out2, &[]);
    a.extend(urls.iter().cloned());
    env.ok(&strs(&a));
    assert_same_cube("http:// URLs as arguments", &out2, &want);

    // Resume: the same remote tiles are the same input...
    let (ok, _, err) = env.run(&strs(&ingest_args(&out, &["--manifest", s(&m)])));
    assert!(ok && err.contains("already complete"), "{err}");
    // ...and a tile replaced on the server (new ETag) is not.
    let rows = fixture_rows();
    let (red, nir) = (&rows[3].0, &rows[2].0);
    assert!(red.ends_with("red.tif") && nir.ends_with("nir.tif"));
    std::fs::copy(served.join(nir), served.join(red)).unwrap();
    env.err(
        &strs(&ingest_args(&out, &["--manifest", s(&m)])),
        &["from-http", "different cube"],
    );
}

/// Run the three workers of a job one after another: whether each succeeded, its requests
/// to the server per tile, its stderr.
fn try_workers(
    env: &Env,
    srv: &FileServer,
    out: &Path,
    m: &Path,
) -> Vec<(bool, BTreeMap<String, u64>, String)> {
    srv.take_log();
    srv.take_heads();
    (0..3)
        .map(|i| {
            let sh = format!("{i}/3");
            let (ok, _, err) = env.run(&strs(&ingest_args(
                out,
                &["--manifest", s(m), "--shard", &sh, "--threads", "1"],
            )));
            (ok, srv.take_log(), err)
        })
        .collect()
}

/// [`try_workers`], each required to succeed.
fn workers(
    env: &Env,
    srv: &FileServer,
    out: &Path,
    m: &Path,
) -> Vec<(BTreeMap<String, u64>, String)> {
    try_workers(env, srv, out, m)
        .into_iter()
        .enumerate()
        .map(|(i, (ok, log, err))| {
            assert!(ok, "worker {i}/3: {err}");
            (log, err)
        })
        .collect()
}

#[test]
fn a_saved_scan_spares_the_workers_the_header_reads() {
    let Served {
        tmp,
        want,
        srv,
        env,
        manifest: m,
        ..
    } = served();
    let tiles = fixture_rows().len();
    let gets = |log: &BTreeMap<String, u64>| log.values().sum::<u64>();

    // Without a saved scan every worker reads every tile's header.
    let plain = tmp.path().join("plain");
    let before = workers(&env, &srv, &plain, &m);
    for (log, err) in &before {
        assert_eq!(log.len(), tiles, "each worker scans every tile");
        assert!(!err.contains("saved scan"), "{err}");
    }
    env.ok(&["commit", s(&plain)]);
    assert_same_cube("3 workers, no saved scan", &plain, &want);

    // The scan, once; `plan ingest` then counts a GET of it, not a header read per tile.
    let out = tmp.path().join("scanned");
    let plan = |o: &Path| -> Value {
        let mut a = ingest_args(o, &["--manifest", s(&m), "--shards", "3", "--json"]);
        a.insert(0, "plan".into());
        serde_json::from_str(&env.ok(&strs(&a))).unwrap()
    };
    let plan_before = plan(&out);
    srv.take_log();
    let (ok, _, err) = env.run(&strs(&ingest_args(
        &out,
        &["--manifest", s(&m), "--scan-only"],
    )));
    assert!(ok && err.contains("scanned 40 tiles"), "{err}");
    assert_eq!(srv.take_log().len(), tiles, "the scan reads every tile");
    assert!(out.join("chunkcube-scan.json").is_file());
    let plan_after = plan(&out);
    assert_eq!(
        srv.take_log().len(),
        0,
        "a plan from the saved scan reads no tile"
    );
    for i in 0..3 {
        let (b, a) = (
            plan_before["per_shard"][i]["gets"].as_u64().unwrap(),
            plan_after["per_shard"][i]["gets"].as_u64().unwrap(),
        );
        assert_eq!(b - a, tiles as u64 - 1, "shard {i}: {b} -> {a} GETs");
    }
    // ...info does not take it for a cube.
    env.err(&["info", s(&out)], &["scanned"]);

    let after = workers(&env, &srv, &out, &m);
    let mut union = std::collections::BTreeSet::new();
    for (i, ((log, err), (log0, _))) in after.iter().zip(&before).enumerate() {
        assert!(err.contains("saved scan of 40 tiles"), "{err}");
        assert!(
            log.len() < tiles && gets(log) < gets(log0),
            "worker {i}: {} tiles, {} requests (without the scan: {} tiles, {} requests)",
            log.len(),
            gets(log),
            log0.len(),
            gets(log0)
        );
        // A tile it reads costs no more requests than without the scan.
        // A tile it reads costs fewer requests than without the scan (which spends a HEAD on
        // each tile's identity): checking the open against the scan sends none.
        for (t, n) in log {
            assert!(*n < log0[t], "worker {i}, {t}: {n} >= {}", log0[t]);
        }
        eprintln!(
            "worker {i}/3: {} requests to {} tiles with the saved scan, {} to {} without",
            gets(log),
            log.len(),
            gets(log0),
            log0.len()
        );
        union.extend(log.keys().cloned());
    }
    assert_eq!(union.len(), tiles, "together the workers read every tile");
    env.ok(&["commit", s(&out)]);
    assert_same_cube("3 workers from the saved scan", &out, &want);
    assert!(
        !out.join("chunkcube-scan.json").exists(),
        "commit removes the scan"
    );

    // Never into someone else's files.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    env.err(
        &strs(&ingest_args(
            &foreign,
            &["--manifest", s(&m), "--scan-only"],
        )),
        &["foreign", "not a chunkcube cube"],
    );
    assert!(!foreign.join("chunkcube-scan.json").exists());

    // A scan of another manifest is not used: the worker says so and scans.
    let stale = tmp.path().join("stale");
    env.ok(&strs(&ingest_args(
        &stale,
        &["--manifest", s(&m), "--scan-only"],
    )));
    let text = std::fs::read_to_string(&m).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(&m, lines.join("\n") + "\n").unwrap();
    srv.take_log();
    let (ok, _, err) = env.run(&strs(&ingest_args(
        &stale,
        &["--manifest", s(&m), "--shard", "0/3"],
    )));
    assert!(ok, "{err}");
    assert!(
        err.contains("chunkcube-scan.json")
            && err.contains("other tiles")
            && err.contains("ignoring"),
        "{err}"
    );
    assert_eq!(
        srv.take_log().len(),
        tiles - 1,
        "the worker scanned the tiles itself"
    );
}

/// The last line of a failed run's stderr (a worker says first that it plans from the saved
/// scan), checked to be an error line, without a panic.
fn failure(ok: bool, err: &str) -> String {
    assert!(!ok, "expected a failure: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("error: "), "{err}");
    eprintln!("[error line] {last}");
    last.to_string()
}

#[test]
fn a_tile_replaced_after_the_saved_scan_fails_the_worker_that_reads_it() {
    let Served {
        tmp,
        www,
        srv,
        env,
        manifest: m,
        ..
    } = served();
    // What the workers ask of the server with every tile unchanged.
    let base = tmp.path().join("base");
    env.ok(&strs(&ingest_args(
        &base,
        &["--manifest", s(&m), "--scan-only"],
    )));
    let baseline = workers(&env, &srv, &base, &m);
    // ...of which the HEADs are the opens' own, one per tile read: checking the open
    // against the scan sends none (asking GDAL for the ETag would send another).
    let heads = srv.take_heads();
    let read: BTreeMap<String, u64> = baseline.iter().fold(BTreeMap::new(), |mut a, (l, _)| {
        l.keys().for_each(|k| *a.entry(k.clone()).or_insert(0) += 1);
        a
    });
    assert_eq!(heads, read, "one HEAD per tile per worker that reads it");

    // The scan, then the red tile of x000y000 2019 replaced on the server by the one of
    // x001y001: another size in bytes and pixels, another origin.
    let out = tmp.path().join("out");
    env.ok(&strs(&ingest_args(
        &out,
        &["--manifest", s(&m), "--scan-only"],
    )));
    let rows = fixture_rows();
    let find = |name: &str| rows.iter().find(|r| r.0.contains(name)).unwrap().0.clone();
    let red = find("x000y000_2019--P1Y_final_red");
    let other = find("x001y001_2019--P1Y_final_red");
    std::fs::copy(www.join(&other), www.join(&red)).unwrap();
    let url = srv.url(&red);

    let runs = try_workers(&env, &srv, &out, &m);
    let mut failed = 0;
    for (i, ((ok, log, err), (log0, _))) in runs.iter().zip(&baseline).enumerate() {
        if log.contains_key(red.as_str()) {
            // The worker that reads the replaced tile stops at its open, naming it and what
            // changed, and says how to recover.
            let line = failure(*ok, err);
            for want in [
                url.as_str(),
                "changed since the saved scan",
                "size 14226 → 11423 bytes",
                "120x100 → 90x100 px",
                "origin 2316000,-2500000 → 2317200,-2501000",
                "--scan-only",
            ] {
                assert!(line.contains(want), "worker {i}: {want:?} in {line}");
            }
            failed += 1;
        } else {
            // The others read their unchanged tiles with the very requests they needed
            // before: the check sends none.
            assert!(ok, "worker {i}: {err}");
            assert_eq!(
                log, log0,
                "worker {i}: the same requests as with no tile changed"
            );
        }
    }
    assert!(failed >= 1, "a worker read the replaced tile");
    // Nothing committed: the cube is incomplete and commit names the missing shard(s).
    assert!(!out.join("zarr.json").exists());
    env.err(&["commit", s(&out)], &["not finished"]);
    env.err(&["info", s(&out)], &[s(&out)]);

    // The tile in its place again, reprocessed (the 2020 pixels), and as the message says:
    // clear the output, scan again, run the workers: the cube of the tiles as they now are
    // (the same files ingested locally).
    std::fs::copy(
        www.join(find("x000y000_2020--P1Y_final_red")),
        www.join(&red),
    )
    .unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    env.ok(&strs(&ingest_args(
        &out,
        &["--manifest", s(&m), "--scan-only"],
    )));
    workers(&env, &srv, &out, &m);
    env.ok(&["commit", s(&out)]);
    let local_m = tmp.path().join("www.csv");
    manifest_at(&local_m, |p| s(&www.join(p)).to_string());
    let want = tmp.path().join("want");
    env.ok(&strs(&ingest_args(&want, &["--manifest", s(&local_m)])));
    assert_same_cube("after a new scan", &out, &want);
}

#[test]
fn an_s3_object_rewritten_after_the_saved_scan_is_caught_by_its_modification_time() {
    let Some(ep) = endpoint() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bucket = make_bucket(&ep, "rescan");
    upload_fixtures(&ep, &bucket);
    let env = Env::new(&ep);
    let m = tmp.path().join("s3.csv");
    manifest_at(&m, |p| format!("s3://{bucket}/fx/{p}"));
    let out = tmp.path().join("out");
    env.ok(&strs(&ingest_args(
        &out,
        &["--manifest", s(&m), "--scan-only"],
    )));

    // The same bytes put again a second later: the same size and header, a new Last-Modified
    // (what a same-size rewrite looks like; S3 keeps no older time).
    let red = fixture_rows()[3].0.clone();
    assert!(
        red.contains("x000y000_2019") && red.ends_with("red.tif"),
        "{red}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let bytes = std::fs::read(common::fixtures_dir().join(&red)).unwrap();
    block_on(bucket_store(&ep, &bucket).put(
        &ObjectPath::from(format!("fx/{red}")),
        PutPayload::from(bytes),
    ))
    .unwrap();
    let (ok, _, err) = env.run(&strs(&ingest_args(
        &out,
        &["--manifest", s(&m), "--shard", "0/1"],
    )));
    let line = failure(ok, &err);
    for want in [
        format!("s3://{bucket}/fx/{red}"),
        "changed since the saved scan (modified 20".into(),
        "--scan-only".into(),
    ] {
        assert!(line.contains(&want), "{want:?} in {line}");
    }
    assert!(!line.contains("size"), "{line}");
    assert!(!out.join("zarr.json").exists());

    // Scanned again, the same worker completes the cube (from the saved scan: the open of
    // every tile agreed with it).
    std::fs::remove_dir_all(&out).unwrap();
    env.ok(&strs(&ingest_args(
        &out,
        &["--manifest", s(&m), "--scan-only"],
    )));
    let (ok, _, err) = env.run(&strs(&ingest_args(
        &out,
        &["--manifest", s(&m), "--shard", "0/1"],
    )));
    assert!(ok && err.contains("saved scan of 40 tiles"), "{err}");
    env.ok(&["commit", s(&out)]);
    assert_same_cube("s3 tiles from a new scan", &out, &local_cube(tmp.path()));
}

#[test]
fn s3_tiles_and_a_stac_collection_ingest_to_the_local_cube() {
    let Some(ep) = endpoint() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let want = local_cube(tmp.path());
    let bucket = make_bucket(&ep, "tiles");
    upload_fixtures(&ep, &bucket);
    let env = Env::new(&ep);

    let m = tmp.path().join("s3.csv");
    manifest_at(&m, |p| format!("s3://{bucket}/fx/{p}"));
    let out = tmp.path().join("from-s3");
    env.ok(&strs(&ingest_args(&out, &["--manifest", s(&m)])));
    assert_same_cube("manifest of s3:// URLs", &out, &want);
    let (ok, _, err) = env.run(&strs(&ingest_args(&out, &["--manifest", s(&m)])));
    assert!(ok && err.contains("already complete"), "{err}");

    // STAC: one item per tile and year, red and nir over http, blue and green from S3, smad
    // local (relative to the JSON file). Each band keeps one source kind, so overlapping
    // tiles keep their order.
    let srv = FileServer::start(&common::fixtures_dir());
    let mut items: BTreeMap<(String, String), serde_json::Map<String, Value>> = BTreeMap::new();
    for (p, band, time) in fixture_rows() {
        let tile = p.split('/').nth(1).unwrap().to_string() + p.split('/').nth(2).unwrap();
        let href = match band.as_str() {
            "red" | "nir" => srv.url(&p),
            "blue" | "green" => format!("s3://{bucket}/fx/{p}"),
            _ => p.clone(),
        };
        let year = time[..4].to_string();
        items.entry((tile, year)).or_default().insert(
            band,
            json!({"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}),
        );
    }
    let features: Vec<Value> = items
        .into_iter()
        .map(|((tile, year), mut assets)| {
            assets.insert(
                "thumbnail".into(),
                json!({"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}),
            );
            json!({"type": "Feature", "stac_version": "1.0.0", "id": format!("{tile}_{year}"),
                   "properties": {"datetime": format!("{year}-01-01T00:00:00Z")}, "assets": assets})
        })
        .collect();
    let stac_dir = tmp.path().join("stac");
    std::fs::create_dir_all(&stac_dir).unwrap();
    std::os::unix::fs::symlink(common::fixtures_dir().join("tiles"), stac_dir.join("tiles"))
        .unwrap();
    let stac = stac_dir.join("items.json");
    let doc = json!({"type": "FeatureCollection", "features": features});
    std::fs::write(&stac, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = tmp.path().join("from-stac");
    env.ok(&strs(&ingest_args(&out, &["--stac", s(&stac)])));
    assert_same_cube("STAC ItemCollection", &out, &want);

    // A missing object and a missing bucket: named, no secret (Env::err checks).
    let bad = tmp.path().join("bad.csv");
    let url = format!("s3://{bucket}/fx/nothere_2019--P1Y_final_red.tif");
    std::fs::write(&bad, format!("path,band,time\n{url},red,2019\n")).unwrap();
    env.err(
        &strs(&ingest_args(
            &tmp.path().join("x"),
            &["--manifest", s(&bad)],
        )),
        &[&url, "not found", "row 2"],
    );
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn bad_urls_and_bad_stac_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = FileServer::start(&common::fixtures_dir());
    let env = no_s3();
    let out = tmp.path().join("c");
    // Nothing listens on port 1; the server has no such file; a file that is not a raster.
    let unreachable = "http://127.0.0.1:1/t_2019--P1Y_final_red.tif".to_string();
    env.err(
        &strs(&ingest_args(&out, &[&unreachable])),
        &[&unreachable, "cannot be reached"],
    );
    let missing = srv.url("tiles/t_2019--P1Y_final_red.tif");
    env.err(&strs(&ingest_args(&out, &[&missing])), &[&missing, "404"]);

    let write = |doc: Value| {
        let p = tmp.path().join("items.json");
        std::fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
        p
    };
    let tile = fixture_rows()[3].0.clone();
    let no_time = write(json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "tile-7", "properties": {}, "assets": {"red": {"href": srv.url(&tile)}}}]}));
    env.err(
        &strs(&ingest_args(&out, &["--stac", s(&no_time)])),
        &["items.json", "item 'tile-7'", "datetime"],
    );
    let readme = srv.url("README.md");
    let not_raster = write(json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "tile-8", "properties": {"datetime": "2019-01-01T00:00:00Z"},
         "assets": {"red": {"href": srv.url(&tile), "roles": ["data"]},
                    "nir": {"href": readme, "type": "image/tiff", "roles": ["data"]}}}]}));
    env.err(
        &strs(&ingest_args(&out, &["--stac", s(&not_raster)])),
        &[&readme, "item 'tile-8' asset 'nir'", "not a raster"],
    );
    let not_stac = write(json!({"features": 3}));
    env.err(
        &strs(&ingest_args(&out, &["--stac", s(&not_stac)])),
        &["items.json", "ItemCollection"],
    );
    assert!(!out.exists(), "no output after bad input");
}
