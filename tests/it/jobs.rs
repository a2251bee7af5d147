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

// ---------------------------------------------------------------------------
// Workers as processes against the loopback S3 server

use crate::s3::{assert_same_objects, endpoint, ingest_args, make_bucket, s3_tree, strs, Env};

/// Run every argument list at once as its own process; all must succeed. Returns stderrs.
fn all_at_once(env: &Env, runs: &[Vec<String>]) -> Vec<String> {
    let children: Vec<_> = runs
        .iter()
        .map(|a| {
            env.command(&strs(a))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .zip(runs)
        .map(|(c, a)| {
            let o = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(o.status.success(), "chunkcube {}: {err}", a.join(" "));
            err
        })
        .collect()
}

fn with_shard(mut a: Vec<String>, shard: &str) -> Vec<String> {
    a.extend(["--shard".to_string(), shard.to_string()]);
    a
}

#[test]
fn concurrent_worker_processes_on_s3_match_one_process() {
    let Some(ep) = endpoint() else { return };
    let env = Env::new(&ep);
    let bucket = make_bucket(&ep, "jobs");
    let chunks = ["--chunks", "time=1,y=64,x=64"];
    let one = format!("s3://{bucket}/one");
    env.ok(&strs(&ingest_args(&one, &chunks)));
    let want = s3_tree(&ep, &bucket, "one");
    for n in [1, 2, 3, 5] {
        let url = format!("s3://{bucket}/n{n}");
        let runs: Vec<Vec<String>> = (0..n)
            .map(|i| with_shard(ingest_args(&url, &chunks), &format!("{i}/{n}")))
            .collect();
        all_at_once(&env, &runs);
        env.err(&["info", &url], &["not a chunkcube cube"]);
        env.ok(&["commit", &url]);
        assert_same_objects(
            &format!("ingest, {n} workers"),
            &s3_tree(&ep, &bucket, &format!("n{n}")),
            &want,
        );
    }

    // calc: NDVI by 1, 2, 3 and 5 workers, the same chunk objects as one process.
    let calc = |out: &str| -> Vec<String> {
        [
            "calc",
            &one,
            "--expr",
            "ndvi=(nir-red)/(nir+red)",
            "--out",
            out,
            "-q",
        ]
        .map(String::from)
        .to_vec()
    };
    let calc_one = format!("s3://{bucket}/ndvi");
    env.ok(&strs(&calc(&calc_one)));
    let want = s3_tree(&ep, &bucket, "ndvi");
    for n in [1, 2, 3, 5] {
        let url = format!("s3://{bucket}/ndvi{n}");
        let runs: Vec<Vec<String>> = (0..n)
            .map(|i| with_shard(calc(&url), &format!("{i}/{n}")))
            .collect();
        all_at_once(&env, &runs);
        env.ok(&["commit", &url]);
        assert_same_objects(
            &format!("calc, {n} workers"),
            &s3_tree(&ep, &bucket, &format!("ndvi{n}")),
            &want,
        );
    }
}

#[test]
fn auto_shards_killed_workers_missing_shards_and_other_plans_on_s3() {
    let Some(ep) = endpoint() else { return };
    let bucket = make_bucket(&ep, "jobsauto");
    let chunks = ["--chunks", "time=1,y=64,x=64"];
    let url = format!("s3://{bucket}/c");
    let worker = |var: &str, i: u32| Env::new(&ep).with(var, &i.to_string());
    let auto = with_shard(ingest_args(&url, &chunks), "auto/3");
    // Shard 0 from Kubernetes' variable, killed after 3 chunks.
    let mut killed = auto.clone();
    killed.extend(["--stop-after-chunks".to_string(), "3".to_string()]);
    let line = worker("JOB_COMPLETION_INDEX", 0).err(
        &strs(&killed),
        &["shard 0/3 (index from JOB_COMPLETION_INDEX)", "stopped"],
    );
    assert!(line.contains("stopped"), "{line}");
    let killed_chunks = s3_tree(&ep, &bucket, "c")
        .keys()
        .filter(|k| k.contains("/c/"))
        .count();
    assert!(killed_chunks >= 3, "{killed_chunks}");
    // Shard 1 from Slurm's.
    let (_, _, err) = worker("SLURM_ARRAY_TASK_ID", 1).run(&strs(&auto));
    assert!(
        err.contains("shard 1/3 (index from SLURM_ARRAY_TASK_ID)"),
        "{err}"
    );
    // Commit refuses while shards 0 and 2 are missing, naming them.
    let line = Env::new(&ep).err(&["commit", &url], &["2 of 3 shards not finished: 0, 2"]);
    assert!(line.contains("--shard I/3"), "{line}");
    // Another plan against the unfinished job: refused.
    let other = with_shard(ingest_args(&url, &["--chunks", "time=1,y=32,x=32"]), "2/3");
    Env::new(&ep).err(&strs(&other), &["another plan"]);
    let fewer = with_shard(ingest_args(&url, &chunks), "1/2");
    Env::new(&ep).err(&strs(&fewer), &["another plan", "2 shards"]);
    // Shard 2 from AWS Batch's, and the killed shard 0 re-run: it keeps its 3 chunks.
    let (_, _, err) = worker("AWS_BATCH_JOB_ARRAY_INDEX", 2).run(&strs(&auto));
    assert!(
        err.contains("shard 2/3 (index from AWS_BATCH_JOB_ARRAY_INDEX)"),
        "{err}"
    );
    let (_, _, err) = worker("JOB_COMPLETION_INDEX", 0).run(&strs(&auto));
    // Every chunk written before the kill (counted in the bucket right after it) is kept.
    assert!(
        err.contains(&format!("{killed_chunks} kept from an earlier run")),
        "{err}"
    );
    Env::new(&ep).ok(&["commit", &url]);
    let one = format!("s3://{bucket}/one");
    Env::new(&ep).ok(&strs(&ingest_args(&one, &chunks)));
    assert_same_objects(
        "auto shards",
        &s3_tree(&ep, &bucket, "c"),
        &s3_tree(&ep, &bucket, "one"),
    );
    // No index variable at all: a clear error.
    Env::new(&ep).err(
        &strs(&auto),
        &[
            "JOB_COMPLETION_INDEX",
            "SLURM_ARRAY_TASK_ID",
            "AWS_BATCH_JOB_ARRAY_INDEX",
        ],
    );
}
