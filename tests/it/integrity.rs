//! Nothing silently wrong (issue 16): every chunk a commit declares is accounted for by the
//! chunk manifest, so a lost chunk, coordinate, CRS or band is an error naming it — never fill
//! passed off as data — and `chunkcube verify` finds every kind of damage, one line per key.

use crate::common::output::{copy_dir, run_one_error, run_output};
use crate::common::{ingest_fixtures, run_ok, s};
use chunkcube::store::manifest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A fresh copy of the fixtures ingested with edge chunks in both directions (the fixture
/// mosaic is not a multiple of 56), to damage.
fn cube(tag: &str) -> (tempfile::TempDir, PathBuf) {
    static BASE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, base) = BASE.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("base");
        ingest_fixtures(&c, "time=1,y=56,x=56");
        (d, c)
    });
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join(tag);
    copy_dir(base, &c);
    (d, c)
}

/// Chunk objects of `array` on disk with their sizes, by walking the folder (independent of
/// the store layer).
fn chunks_on_disk(cube: &Path, array: &str) -> BTreeMap<String, u64> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, u64>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                if rel.starts_with("c/") || rel == "c" {
                    out.insert(rel, e.metadata().unwrap().len());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&cube.join(array), &cube.join(array), &mut out);
    out
}

fn verify(cube: &Path, deep: bool) -> (Option<i32>, Vec<String>, String) {
    let mut args = vec!["verify", s(cube), "--quiet"];
    if deep {
        args.push("--deep");
    }
    let o = run_output(&args);
    let out = String::from_utf8_lossy(&o.stdout);
    (
        o.status.code(),
        out.lines().map(str::to_string).collect(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn the_manifest_lists_exactly_the_chunk_objects_written() {
    let (_d, c) = cube("m");
    let store = chunkcube::store::Store::open(s(&c), false).unwrap();
    let meta = chunkcube::store::layout::read_cube_meta(&store).unwrap();
    let listed = manifest::listed(&meta.attributes).expect("a committed cube lists its arrays");
    let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    for want in ["blue", "nir", "red", "spatial_ref", "time", "x", "y"] {
        assert!(names.contains(&want), "{want} not listed in {names:?}");
    }
    for l in &listed {
        let on_disk = chunks_on_disk(&c, &l.name);
        let m = manifest::load(&store, l, true).unwrap();
        let mut from_manifest = BTreeMap::new();
        for (idx, size) in m.chunks() {
            let key = if idx.is_empty() {
                "c".to_string()
            } else {
                format!(
                    "c/{}",
                    idx.iter().map(u64::to_string).collect::<Vec<_>>().join("/")
                )
            };
            from_manifest.insert(key, size);
        }
        assert_eq!(from_manifest, on_disk, "{}", l.name);
        assert_eq!(l.chunks as usize, on_disk.len(), "{}", l.name);
        assert_eq!(l.bytes, on_disk.values().sum::<u64>(), "{}", l.name);
    }
    let (code, problems, err) = verify(&c, true);
    assert_eq!(code, Some(0), "{problems:?} {err}");
    assert!(err.contains("no problem"), "{err}");
}

#[test]
fn a_lost_chunk_is_an_error_naming_its_key_not_fill() {
    let (_d, c) = cube("lost");
    std::fs::remove_file(c.join("red/c/1/2/3")).unwrap();
    for args in [
        vec!["load", s(&c), "--measurements", "red", "--print-all"],
        vec![
            "calc",
            s(&c),
            "--expr",
            "v=red*2",
            "--isel",
            "time=1:2",
            "--print-all",
        ],
    ] {
        let e = run_one_error(&args);
        assert!(e.contains("red/c/1/2/3"), "{e}");
        assert!(e.contains("manifest"), "{e}");
    }
    // A selection that does not touch the lost chunk still reads.
    run_ok(&[
        "load",
        s(&c),
        "--measurements",
        "red",
        "--isel",
        "time=0:1",
        "--print",
    ]);
    let (code, problems, _) = verify(&c, false);
    assert_eq!(code, Some(1));
    assert_eq!(
        problems,
        ["red/c/1/2/3: chunk listed in the manifest is missing"]
    );
}

#[test]
fn without_a_manifest_an_absent_chunk_is_fill_as_zarr_says() {
    let (_d, c) = cube("nomanifest");
    // As another tool would write it: no chunkcube manifest in the group metadata.
    let p = c.join("zarr.json");
    let mut g: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    g["attributes"]["chunkcube"]
        .as_object_mut()
        .unwrap()
        .remove("arrays");
    std::fs::write(&p, serde_json::to_vec(&g).unwrap()).unwrap();
    std::fs::remove_file(c.join("red/c/1/0/0")).unwrap();
    let a = crate::common::load_band::<u16>(&c, "red");
    assert!(
        a.slice(ndarray::s![1, 0..48, 0..48])
            .iter()
            .all(|&v| v == 0),
        "fill (nodata 0) where the chunk is absent"
    );
    let (code, problems, err) = verify(&c, true);
    assert_eq!(code, Some(0), "{problems:?}");
    assert!(err.contains("no chunk manifest"), "{err}");
}

#[test]
fn lost_coordinates_crs_and_bands_are_errors_naming_them() {
    let (_d, c) = cube("coords");
    std::fs::remove_file(c.join("x/c/0")).unwrap();
    let e = run_one_error(&["info", s(&c)]);
    assert!(e.contains("x/c/0"), "{e}");
    let (_, problems, _) = verify(&c, false);
    assert!(
        problems.iter().any(|p| p.starts_with("x/c/0: ")),
        "{problems:?}"
    );

    let (_d, c) = cube("crs");
    std::fs::remove_dir_all(c.join("spatial_ref")).unwrap();
    let e = run_one_error(&["info", s(&c)]);
    assert!(e.contains("spatial_ref"), "{e}");
    let (_, problems, _) = verify(&c, false);
    assert!(
        problems.contains(
            &"spatial_ref/zarr.json: array listed in the group metadata is missing".to_string()
        ),
        "{problems:?}"
    );

    let (_d, c) = cube("band");
    std::fs::remove_dir_all(c.join("nir")).unwrap();
    let e = run_one_error(&["info", s(&c)]);
    assert!(e.contains("'nir'"), "{e}");
}

#[test]
fn verify_reports_each_kind_of_damage_one_line_per_key() {
    let (_d, c) = cube("damage");
    // A flipped bit: same size, only a decode (crc32c) finds it.
    let flip = c.join("green/c/0/1/1");
    let mut b = std::fs::read(&flip).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(&flip, &b).unwrap();
    // A truncated chunk: the size tells.
    let cut = c.join("blue/c/1/0/2");
    let b = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &b[..b.len() - 7]).unwrap();
    // A chunk that appeared after the commit.
    std::fs::copy(c.join("red/c/0/0/0"), c.join("red/c/0/0/99")).unwrap();
    // A coordinate off the geotransform (still a valid chunk: rewrite it through zarrs).
    let store = chunkcube::store::Store::open(s(&c), false).unwrap();
    let ys = zarrs::array::Array::open(store.storage(), "/y").unwrap();
    let mut v: Vec<f64> = ys.retrieve_array_subset(&ys.subset_all()).unwrap();
    v[5] += 3.0;
    ys.store_array_subset(&ys.subset_all(), v).unwrap();

    let (code, shallow, _) = verify(&c, false);
    assert_eq!(code, Some(1));
    let (_, deep, err) = verify(&c, true);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let has = |list: &[String], key: &str, what: &str| {
        list.iter()
            .any(|p| p.starts_with(&format!("{key}: ")) && p.contains(what))
    };
    assert!(
        has(&shallow, "blue/c/1/0/2", "bytes, the manifest says"),
        "{shallow:?}"
    );
    assert!(
        has(&shallow, "red/c/0/0/99", "not in the chunk manifest"),
        "{shallow:?}"
    );
    assert!(has(&shallow, "y/c/0", "geotransform"), "{shallow:?}");
    assert!(
        !has(&shallow, "green/c/0/1/1", ""),
        "only --deep decodes: {shallow:?}"
    );
    assert!(has(&deep, "green/c/0/1/1", "does not decode"), "{deep:?}");
    assert!(has(&deep, "blue/c/1/0/2", "does not decode"), "{deep:?}");
    // The rewritten y chunk changed size: listed too.
    assert!(has(&deep, "y/c/0", "bytes, the manifest says") || has(&deep, "y/c/0", "geotransform"));
}

#[test]
fn a_calc_result_is_committed_with_its_manifest() {
    let (_d, c) = cube("calc");
    let out = c.parent().unwrap().join("ndvi");
    run_ok(&[
        "calc",
        s(&c),
        "--expr",
        "ndvi=(nir-red)/(nir+red)",
        "--out",
        s(&out),
        "--quiet",
    ]);
    assert!(!chunks_on_disk(&out, "ndvi").is_empty());
    let (code, problems, err) = verify(&out, true);
    assert_eq!(code, Some(0), "{problems:?} {err}");
    let first = chunks_on_disk(&out, "ndvi").into_keys().next().unwrap();
    std::fs::remove_file(out.join("ndvi").join(&first)).unwrap();
    let e = run_one_error(&["load", s(&out), "--print-all"]);
    assert!(e.contains(&format!("ndvi/{first}")), "{e}");
}

/// The lock file `chunkcube` keeps beside an output while writing it.
fn lock_of(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.chunkcube-lock", out.display()))
}

#[test]
fn a_second_writer_to_one_output_is_refused_and_stale_locks_are_taken_over() {
    let (_d, c) = cube("lock");
    let out = c.parent().unwrap().join("out");
    let calc = |out: &Path| {
        vec![
            "calc".to_string(),
            s(&c).to_string(),
            "--expr".into(),
            "v=nir-red".into(),
            "--out".into(),
            s(out).to_string(),
            "--quiet".into(),
        ]
    };
    // A live writer (this test process) holds the lock: refused, nothing written.
    let me = format!(
        r#"{{"host":"{}","pid":{},"started":0}}"#,
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        std::process::id()
    );
    std::fs::write(lock_of(&out), &me).unwrap();
    let e = run_one_error(&calc(&out));
    assert!(e.contains("being written by another run"), "{e}");
    assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    assert!(!out.exists(), "nothing written while locked");
    // The holder died (a pid that is gone): the lock is stale and taken over, saying so.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(
        lock_of(&out),
        me.replace(&std::process::id().to_string(), &dead.to_string()),
    )
    .unwrap();
    let o = run_output(&calc(&out));
    assert!(o.status.success(), "{}", crate::common::output::show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stale writer lock"));
    assert!(!lock_of(&out).exists(), "released at the end");
    // Another host's lock that has not been refreshed for long is stale too.
    std::fs::write(lock_of(&out), r#"{"host":"elsewhere","pid":1,"started":0}"#).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(lock_of(&out))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let mut args = calc(&out);
    args.push("--overwrite".into());
    crate::common::run_ok(&args);
    // A fresh lock of another host is respected.
    std::fs::write(lock_of(&out), r#"{"host":"elsewhere","pid":1,"started":0}"#).unwrap();
    let e = run_one_error(&args);
    assert!(e.contains("pid 1 on elsewhere"), "{e}");
    std::fs::remove_file(lock_of(&out)).unwrap();
}

#[test]
fn concurrent_ingests_into_one_output_never_mix() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("cube");
    for round in 0..3 {
        let args = crate::common::ingest_fixtures_args(
            &out,
            &["--chunks", "time=1,y=56,x=56", "--overwrite"],
        );
        let kids: Vec<_> = (0..3)
            .map(|_| {
                std::process::Command::new(crate::common::bin())
                    .args(&args)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ok = 0;
        for k in kids {
            let o = k.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            if o.status.success() {
                ok += 1;
            } else {
                assert!(
                    err.contains("being written by another run"),
                    "round {round}: {err}"
                );
            }
        }
        assert!(ok >= 1, "round {round}: one writer wins");
        let (code, problems, err) = verify(&out, true);
        assert_eq!(code, Some(0), "round {round}: {problems:?} {err}");
        assert!(!lock_of(&out).exists());
    }
}

#[test]
fn crafted_metadata_sizes_are_refused_before_anything_is_allocated() {
    let edit = |c: &Path, key: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let p = c.join(key);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    };
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "red/zarr.json",
            "GiB per chunk",
            Box::new(|v| {
                v["chunk_grid"]["configuration"]["chunk_shape"] =
                    serde_json::json!([1, 1u64 << 20, 1u64 << 20])
            }),
        ),
        (
            "red/zarr.json",
            "elements",
            Box::new(|v| v["shape"] = serde_json::json!([u64::MAX, 200, 240])),
        ),
        (
            "red/zarr.json",
            "chunks",
            Box::new(|v| {
                v["shape"] = serde_json::json!([1u64 << 20, 1u64 << 20, 240]);
                v["chunk_grid"]["configuration"]["chunk_shape"] = serde_json::json!([1, 1, 240])
            }),
        ),
        (
            "x/zarr.json",
            "at most",
            Box::new(|v| {
                v["shape"] = serde_json::json!([1u64 << 40]);
            }),
        ),
        (
            "spatial_ref/zarr.json",
            "longer than",
            Box::new(|v| v["attributes"]["crs_wkt"] = serde_json::json!("A".repeat(1 << 20))),
        ),
    ];
    for (key, want, f) in cases {
        let (_d, c) = cube("crafted");
        edit(&c, key, &*f);
        let t = std::time::Instant::now();
        let e = run_one_error(&["info", s(&c)]);
        assert!(e.contains(key) && e.contains(want), "{key}: {e}");
        assert!(t.elapsed().as_secs() < 10, "{key}: refused at once");
    }
}

#[test]
fn library_writers_take_the_writer_lock() {
    // The library's writers lock their output themselves (so the Python package and any
    // other caller of the library is covered, not only the command line).
    let (_d, c) = cube("liblock");
    let dir = c.parent().unwrap();
    let live = format!(
        r#"{{"host":"{}","pid":{},"started":0}}"#,
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        std::process::id()
    );
    let ingest_out = dir.join("ingested");
    let opts = chunkcube::ingest::IngestOptions {
        quiet: true,
        chunks: chunkcube::store::ChunkSpec::parse("time=1,y=64,x=64").unwrap(),
        ..Default::default()
    };
    let sources = chunkcube::ingest::Sources::Manifest(crate::common::fixtures_manifest());
    std::fs::write(lock_of(&ingest_out), &live).unwrap();
    let e = chunkcube::ingest::ingest(&sources, s(&ingest_out), &opts).unwrap_err();
    assert!(
        e.to_string().contains("being written by another run"),
        "{e}"
    );
    assert!(!ingest_out.exists(), "nothing written while locked");
    std::fs::remove_file(lock_of(&ingest_out)).unwrap();
    chunkcube::ingest::ingest(&sources, s(&ingest_out), &opts).unwrap();
    assert!(!lock_of(&ingest_out).exists(), "released");

    let cube = chunkcube::Cube::open(s(&c)).unwrap();
    let ds = cube.load(&chunkcube::Query::default()).unwrap();
    let out = dir.join("copy");
    std::fs::write(lock_of(&out), &live).unwrap();
    let e = ds.to_zarr(s(&out), false).unwrap_err();
    assert!(
        e.to_string().contains("being written by another run"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written while locked");
    std::fs::remove_file(lock_of(&out)).unwrap();
    // The thread holding the lock (as the command line does before planning) may write.
    let held = chunkcube::store::lock::acquire(s(&out)).unwrap();
    ds.to_zarr(s(&out), false).unwrap();
    assert!(lock_of(&out).exists(), "still held by the outer guard");
    // Another thread of this process is refused meanwhile.
    let other = std::thread::scope(|sc| {
        sc.spawn(|| ds.to_zarr(s(&out), true).unwrap_err().to_string())
            .join()
            .unwrap()
    });
    assert!(other.contains("being written by another run"), "{other}");
    drop(held);
    assert!(!lock_of(&out).exists(), "released with the last guard");
    assert!(crate::common::cube_opens(&out));
}
