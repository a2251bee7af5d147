//! Jobs split over workers (`--shard I/N`, `chunkcube commit`): the library API on local
//! cubes here; processes against the loopback S3 server in `jobs_s3`.

use crate::common;
use chunkcube::ingest::{ingest, IngestOptions, Sources};
use chunkcube::store::job::{self, JobError, Shard};
use chunkcube::{ChunkSpec, Cube, Query};
use std::collections::BTreeMap;
use std::path::Path;

fn opts(shard: Option<Shard>, shards: Option<&str>) -> IngestOptions {
    IngestOptions {
        chunks: ChunkSpec::parse("time=1,y=64,x=64").unwrap(),
        shards: shards.map(|s| ChunkSpec::parse(s).unwrap()),
        quiet: true,
        threads: Some(1),
        shard,
        ..Default::default()
    }
}

fn sources() -> Sources {
    Sources::Manifest(common::fixtures_manifest())
}

/// The cube's chunk objects (every file under a band's `c/`).
fn chunk_objects(tree: &BTreeMap<String, Vec<u8>>) -> Vec<&String> {
    tree.keys().filter(|k| k.contains("/c/")).collect()
}

/// N workers as threads of one process, all at once, then a commit.
fn sharded_ingest(out: &Path, n: u32, shards: Option<&str>) {
    let url = common::s(out).to_string();
    std::thread::scope(|s| {
        for i in 0..n {
            let url = url.clone();
            s.spawn(move || {
                let r = ingest(
                    &sources(),
                    &url,
                    &opts(Some(Shard::new(i, n).unwrap()), shards),
                )
                .unwrap();
                assert!(!r.up_to_date);
            });
        }
    });
    assert!(
        !common::cube_opens(out),
        "the cube must not open before commit"
    );
    let c = job::commit(&url).unwrap();
    assert_eq!(c.shards, n);
}

#[test]
fn sharded_ingests_are_byte_identical_to_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    for shards in [None, Some("y=128,x=128")] {
        let one = tmp.path().join(format!("one-{}", shards.is_some()));
        ingest(&sources(), common::s(&one), &opts(None, shards)).unwrap();
        let want = common::tree_bytes(&one);
        assert!(chunk_objects(&want).len() > 8);
        for n in [1, 2, 3, 5] {
            let out = tmp.path().join(format!("n{n}-{}", shards.is_some()));
            sharded_ingest(&out, n, shards);
            common::assert_same_tree(&one, &out);
        }
    }
}

#[test]
fn shards_partition_the_objects_and_commit_lists_missing_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let url = common::s(&out).to_string();
    let n = 4;
    let mut per_shard: Vec<Vec<String>> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut done = Vec::new();
    for i in [2u32, 0, 3] {
        ingest(
            &sources(),
            &url,
            &opts(Some(Shard::new(i, n).unwrap()), None),
        )
        .unwrap();
        let now: Vec<String> = chunk_objects(&common::tree_bytes(&out))
            .into_iter()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        assert!(!now.is_empty(), "shard {i} wrote chunks");
        seen.extend(now.iter().cloned());
        per_shard.push(now);
        // Before commit the cube does not open; commit refuses and names the missing shard(s).
        done.push(i);
        let e = job::commit(&url).unwrap_err();
        let want: Vec<u32> = (0..n).filter(|s| !done.contains(s)).collect();
        match &e {
            JobError::Missing { missing, .. } => assert_eq!(missing, &want, "{e}"),
            _ => panic!("expected missing shards: {e}"),
        }
        assert!(e.to_string().contains("not finished"), "{e}");
        assert!(Cube::open(&url).is_err());
    }
    ingest(
        &sources(),
        &url,
        &opts(Some(Shard::new(1, n).unwrap()), None),
    )
    .unwrap();
    per_shard.push(
        chunk_objects(&common::tree_bytes(&out))
            .into_iter()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect(),
    );
    // Balanced by bytes: each shard's decoded bytes (from the cube's metadata: the object's
    // extent clipped to the array, times its dtype's size) within one object of a fair share.
    let c = job::commit(&url).unwrap();
    assert_eq!((c.shards, c.already), (n, false));
    let meta = chunkcube::store::layout::read_cube_meta(
        &chunkcube::store::Store::open(&url, false).unwrap(),
    )
    .unwrap();
    let bytes_of = |key: &str| -> u64 {
        let mut parts = key.split('/');
        let Some(band) = meta.band(parts.next().unwrap()) else {
            return 0; // a coordinate
        };
        let idx: Vec<u64> = parts.skip(1).map(|p| p.parse().unwrap()).collect();
        (0..3)
            .map(|i| (band.shape[i] - idx[i] * band.chunk_shape[i]).min(band.chunk_shape[i]))
            .product::<u64>()
            * band.dtype.size() as u64
    };
    let sums: Vec<u64> = per_shard
        .iter()
        .map(|keys| keys.iter().map(|k| bytes_of(k)).sum())
        .collect();
    let total: u64 = sums.iter().sum();
    let largest = meta
        .bands
        .iter()
        .map(|b| b.chunk_shape.iter().product::<u64>() * b.dtype.size() as u64)
        .max()
        .unwrap();
    for s in &sums {
        assert!(
            s.abs_diff(total / n as u64) <= largest,
            "shard bytes {sums:?} (one object at most {largest})"
        );
    }
    let one = tmp.path().join("one");
    ingest(&sources(), common::s(&one), &opts(None, None)).unwrap();
    common::assert_same_tree(&one, &out);
    // Committing again is a no-op; a worker re-run after the commit has nothing to do.
    assert!(job::commit(&url).unwrap().already);
    let r = ingest(
        &sources(),
        &url,
        &opts(Some(Shard::new(1, n).unwrap()), None),
    )
    .unwrap();
    assert!(r.up_to_date);
}

#[test]
fn mismatched_plans_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let url = common::s(&out).to_string();
    ingest(
        &sources(),
        &url,
        &opts(Some(Shard::new(0, 3).unwrap()), None),
    )
    .unwrap();
    // Another shard count, other chunks: refused, naming both plans, nothing written.
    let before = common::tree_bytes(&out);
    let e = ingest(
        &sources(),
        &url,
        &opts(Some(Shard::new(1, 2).unwrap()), None),
    )
    .unwrap_err();
    assert!(e.to_string().contains("another plan"), "{e}");
    let mut other = opts(Some(Shard::new(1, 3).unwrap()), None);
    other.chunks = ChunkSpec::parse("time=1,y=32,x=32").unwrap();
    let e = ingest(&sources(), &url, &other).unwrap_err();
    assert!(e.to_string().contains("another plan"), "{e}");
    // A one-process run of the same location too (it would commit a cube missing shards),
    // unless told to replace it.
    let e = ingest(&sources(), &url, &opts(None, None)).unwrap_err();
    assert!(e.to_string().contains("--overwrite"), "{e}");
    assert_eq!(common::tree_bytes(&out), before);
}

#[test]
fn a_rerun_worker_keeps_whole_chunks_and_rewrites_torn_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let url = common::s(&out).to_string();
    let args = |shard: &str, extra: &[&str]| {
        let mut a = common::ingest_fixtures_args(&out, &["--chunks", "time=1,y=64,x=64"]);
        a.extend(["--shard".to_string(), shard.to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // A worker that dies after 5 chunks (the test hook), as a killed one would.
    common::run_err(&args("0/2", &["--stop-after-chunks", "5"]), &["stopped"]);
    // Tear one of the chunks written (a worker killed mid-write on a store without atomic
    // renames).
    let tree = common::tree_bytes(&out);
    let written = chunk_objects(&tree);
    assert!(!written.is_empty());
    let torn = out.join(written[0]);
    let len = std::fs::metadata(&torn).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (_, err) = common::run_ok(&args("0/2", &[]));
    assert!(
        err.contains(&format!("{} kept from an earlier run", written.len() - 1)),
        "{err}"
    );
    common::run_ok(&args("1/2", &[]));
    assert!(!common::cube_opens(&out));
    let (_, err) = common::run_ok(&["commit", &url]);
    assert!(err.contains("committed"), "{err}");
    let one = tmp.path().join("one");
    ingest(&sources(), common::s(&one), &opts(None, None)).unwrap();
    common::assert_same_tree(&one, &out);
}

#[test]
fn sharded_calc_matches_one_process() {
    let cube = common::fixture_cube_64("jobs-cube-");
    let tmp = tempfile::tempdir().unwrap();
    let c = Cube::open(common::s(cube)).unwrap();
    let q = Query::new()
        .measurements(&["red", "nir"])
        .chunks(ChunkSpec::parse("time=1,y=64,x=64").unwrap());
    let ds = c.load(&q).unwrap();
    let (red, nir) = (ds.get("red").unwrap(), ds.get("nir").unwrap());
    let ndvi = &(nir - red) / &(nir + red);
    let mut out = chunkcube::Dataset::new();
    out.insert("ndvi", ndvi.clone());
    out.insert("sum", nir + red);
    let one = tmp.path().join("one");
    out.to_zarr(common::s(&one), false).unwrap();
    let want = common::tree_bytes(&one);
    for n in [2u32, 3] {
        let dir = tmp.path().join(format!("n{n}"));
        let url = common::s(&dir).to_string();
        let mut total = 0;
        for i in 0..n {
            let r = out.to_zarr_shard(&url, Shard::new(i, n).unwrap()).unwrap();
            assert_eq!(r.fingerprint, out.plan_fingerprint().unwrap());
            total += r.chunks;
            assert!(Cube::open(&url).is_err());
        }
        let k = job::commit(&url).unwrap();
        assert_eq!(k.chunks, total);
        let got = common::tree_bytes(&dir);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (key, w) in &want {
            if key != "zarr.json" {
                assert!(&got[key] == w, "{key} differs");
            }
        }
        let band_chunks = chunk_objects(&want)
            .into_iter()
            .filter(|k| k.starts_with("ndvi/") || k.starts_with("sum/"))
            .count();
        assert_eq!(total as usize, band_chunks);
    }
    // Another computation against an unfinished job: refused.
    let dir = tmp.path().join("mixed");
    let url = common::s(&dir).to_string();
    out.to_zarr_shard(&url, Shard::new(0, 2).unwrap()).unwrap();
    let mut other = chunkcube::Dataset::new();
    other.insert("ndvi", ndvi.clone());
    let e = other
        .to_zarr_shard(&url, Shard::new(1, 2).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("another plan"), "{e}");
}
