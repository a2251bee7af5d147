//! `chunkcube plan ingest|calc … --shards N --json` against what `--shard i/N` workers then
//! actually write (their chunk objects, their markers) and against numbers computed another
//! way (the tiles' file sizes, the input cube's stored chunks).

use crate::common::{self, run_ok, s};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The band chunk objects of a cube directory (not the coordinates' chunks, which shard 0
/// writes besides its share).
fn chunk_files(dir: &Path) -> BTreeSet<String> {
    const COORDS: [&str; 5] = ["x/", "y/", "time/", "time_bnds/", "spatial_ref/"];
    common::tree_bytes(dir)
        .into_keys()
        .filter(|k| k.contains("/c/") && !COORDS.iter().any(|c| k.starts_with(c)))
        .collect()
}

fn plan_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Value {
    let (out, _) = run_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("plan --json: {e}\n{out}"))
}

fn field(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// Runs the workers one after the other; per shard, the chunk objects it added.
fn run_workers(out: &Path, n: u32, args: impl Fn(&str) -> Vec<String>) -> Vec<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    (0..n)
        .map(|i| {
            run_ok(&args(&format!("{i}/{n}")));
            let now = chunk_files(out);
            let mine: BTreeSet<String> = now.difference(&seen).cloned().collect();
            seen = now;
            mine
        })
        .collect()
}

#[test]
fn plan_ingest_matches_what_the_workers_write() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::fixtures_manifest();
    // Tiles' bytes: every pixel of every tile is read once by the whole job.
    let tile_bytes: u64 = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let p = l.split(',').next().unwrap();
            std::fs::metadata(common::fixtures_dir().join(p))
                .unwrap()
                .len()
        })
        .sum();
    for (n, storage) in [(3u32, None), (4, Some("y=128,x=128"))] {
        let out = tmp.path().join(format!("c{n}"));
        let mut base = vec![
            "--manifest".to_string(),
            s(&manifest).into(),
            "--out".into(),
            s(&out).into(),
            "--chunks".into(),
            "time=1,y=64,x=64".into(),
        ];
        if let Some(st) = storage {
            base.extend(["--shards".into(), st.into()]);
        }
        let mut pa = vec!["plan".to_string(), "ingest".into()];
        pa.extend(base.iter().cloned());
        pa.extend(["--shards".into(), n.to_string(), "--json".into()]);
        let plan = plan_json(&pa);
        assert!(!out.exists(), "planning writes nothing");
        let per = plan["per_shard"].as_array().unwrap();
        assert_eq!(per.len(), n as usize);
        let wrote = run_workers(&out, n, |sh| {
            let mut a = vec!["ingest".to_string(), "--quiet".into()];
            a.extend(base.iter().cloned());
            a.extend(["--shard".into(), sh.into()]);
            a
        });
        let mut total_objects = 0;
        for (i, p) in per.iter().enumerate() {
            let marker = common::read_json(&out.join(format!("chunkcube-shards/{i}.json")));
            assert_eq!(
                field(p, "objects"),
                wrote[i].len() as u64,
                "shard {i} objects"
            );
            assert_eq!(field(p, "objects"), field(&marker, "chunks"), "shard {i}");
            assert_eq!(
                field(p, "bytes_written"),
                field(&marker, "bytes"),
                "shard {i}"
            );
            assert_eq!(field(p, "puts"), field(p, "objects") + 2);
            total_objects += wrote[i].len() as u64;
        }
        run_ok(&["commit", s(&out)]);
        let t = &plan["total"];
        assert_eq!(field(t, "objects"), total_objects);
        assert_eq!(field(t, "objects"), chunk_files(&out).len() as u64);
        // Independently, from each band's metadata as written: its chunk grid (the inner
        // 64² chunks, every one written by an ingest) and its decoded bytes.
        let (mut grid_chunks, mut decoded) = (0u64, 0u64);
        let root = common::read_json(&out.join("zarr.json"));
        for band in root["attributes"]["chunkcube"]["arrays"]
            .as_object()
            .unwrap()
            .keys()
        {
            let meta = common::read_json(&out.join(band).join("zarr.json"));
            if meta["shape"].as_array().unwrap().len() != 3 {
                continue; // a coordinate
            }
            let shape: Vec<u64> = meta["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let inner = [1u64, 64, 64];
            grid_chunks += (0..3).map(|d| shape[d].div_ceil(inner[d])).product::<u64>();
            let size = match meta["data_type"].as_str().unwrap() {
                "uint8" | "int8" => 1,
                "uint16" | "int16" => 2,
                "uint32" | "int32" | "float32" => 4,
                _ => 8,
            };
            decoded += shape.iter().product::<u64>() * size;
        }
        assert_eq!(
            field(t, "chunks"),
            grid_chunks,
            "chunks vs the bands' grids"
        );
        assert_eq!(
            field(t, "bytes_written"),
            decoded,
            "decoded bytes vs the bands' shapes"
        );
        if storage.is_some() {
            // 128² shards of 64² chunks: up to 4 chunks per object.
            assert!(field(t, "chunks") > field(t, "objects"));
        } else {
            assert_eq!(field(t, "chunks"), field(t, "objects"));
        }
        let read = field(t, "bytes_read") as f64;
        assert!(
            (read - tile_bytes as f64).abs() <= 0.001 * tile_bytes as f64 + n as f64,
            "{read} vs the tiles' {tile_bytes} bytes"
        );
        assert_eq!(field(t, "gets"), 0, "local tiles need no GETs");
    }
}

#[test]
fn plan_calc_matches_what_the_workers_write() {
    let tmp = tempfile::tempdir().unwrap();
    let cube = common::fixture_cube_64("plan-calc-");
    let n = 3u32;
    let out = tmp.path().join("ndvi");
    let expr = ["--expr", "ndvi=(nir-red)/(nir+red)", "--expr", "s=red+nir"];
    let mut pa = vec!["plan", "calc", s(cube)];
    pa.extend(expr);
    let shards = n.to_string();
    pa.extend(["--out", s(&out), "--shards", &shards, "--json"]);
    let plan = plan_json(&pa);
    let wrote = run_workers(&out, n, |sh| {
        let mut a: Vec<String> = vec!["calc".into(), s(cube).into(), "--quiet".into()];
        a.extend(expr.iter().map(|x| x.to_string()));
        a.extend(["--out".into(), s(&out).into(), "--shard".into(), sh.into()]);
        a
    });
    let per = plan["per_shard"].as_array().unwrap();
    for (i, p) in per.iter().enumerate() {
        assert_eq!(field(p, "objects"), wrote[i].len() as u64, "shard {i}");
        let marker = common::read_json(&out.join(format!("chunkcube-shards/{i}.json")));
        assert_eq!(field(p, "chunks"), field(&marker, "chunks"), "shard {i}");
        assert!(field(p, "memory_bytes") > 0);
    }
    // Each output chunk reads one red and one nir chunk (stored chunks = output chunks), each
    // fetched once by its worker: the GETs are the stored chunks, the bytes their files.
    let t = &plan["total"];
    let stored = common::stored_chunks(cube, "red") + common::stored_chunks(cube, "nir");
    assert_eq!(field(t, "gets"), stored as u64);
    let files: u64 = ["red", "nir"]
        .iter()
        .flat_map(|b| common::tree_bytes(&cube.join(b)).into_iter())
        .filter(|(k, _)| k.starts_with("c/"))
        .map(|(_, v)| v.len() as u64)
        .sum();
    assert_eq!(field(t, "bytes_read"), files);
    assert_eq!(field(t, "objects"), chunk_files(&out).len() as u64);
    // float32 results: 4 bytes per pixel per output.
    let red = common::load_band::<u16>(cube, "red");
    assert_eq!(field(t, "bytes_written"), 2 * 4 * red.len() as u64);
    run_ok(&["commit", s(&out)]);
}

#[test]
fn plan_refuses_bad_shard_counts() {
    let cube = common::fixture_cube_64("plan-calc-");
    let e = common::output::run_one_error(&[
        "plan",
        "calc",
        s(cube),
        "--expr",
        "a=red",
        "--out",
        "/tmp/x",
        "--shards",
        "0",
    ]);
    assert!(e.contains("--shards"), "{e}");
    let e = common::output::run_one_error(&[
        "plan",
        "ingest",
        "--manifest",
        s(&common::fixtures_manifest()),
        "--out",
        "/tmp/x",
    ]);
    assert!(e.contains("--shards N"), "{e}");
}
