//! `chunkcube verify`: check that a cube holds everything its commit declared.
//!
//! Metadata of every array, the chunk manifest against what the store lists (missing chunks,
//! chunks of another size, chunks written after the commit), the coordinates against the
//! geotransform, and with `deep` every chunk fetched and decoded (which checks its crc32c).
//! Every problem is one line naming the key; the caller decides the exit code.

use super::layout::{read_coord_f64, read_cube_meta};
use super::manifest::{self, ArrayManifest, MANIFEST_FILE};
use super::{Store, StoreError};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use zarrs::array::{Array, ArrayBytes};

/// One thing wrong with a cube.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The store key (or array) at fault.
    pub key: String,
    /// What is wrong with it.
    pub msg: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.msg)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Arrays checked.
    pub arrays: u64,
    /// Chunk objects checked (listed and present).
    pub chunks_checked: u64,
    /// Their bytes (as listed by the store).
    pub bytes_checked: u64,
    /// Chunks fetched and decoded (`deep`).
    pub chunks_decoded: u64,
    /// Whether the cube carries a chunk manifest; without one (stores other tools wrote)
    /// a missing chunk cannot be told from one never written.
    pub has_manifest: bool,
    /// Problems, sorted by key.
    #[serde(skip)]
    pub problems: Vec<Problem>,
}

/// Verify the cube in `store`. `progress(done, total)` is called as chunks are checked.
/// Errors only when the cube cannot be examined at all (the store cannot be listed); every
/// defect of the cube itself is a [`Problem`] in the report.
pub fn verify(
    store: &Store,
    deep: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Report, StoreError> {
    let mut rep = Report::default();
    let mut problems = Vec::new();
    let mut problem = |key: &str, msg: String| {
        problems.push(Problem {
            key: key.to_string(),
            msg,
        })
    };

    // The group and what it lists.
    let group: Option<serde_json::Value> = match store.get("zarr.json")? {
        None => {
            problem(
                "zarr.json",
                "missing: the cube was never committed (interrupted?)".into(),
            );
            None
        }
        Some(b) => match serde_json::from_slice(&b) {
            Ok(v) => Some(v),
            Err(e) => {
                problem("zarr.json", format!("not JSON: {e}"));
                None
            }
        },
    };
    let attrs = group
        .as_ref()
        .and_then(|g| g.get("attributes"))
        .and_then(|a| a.as_object())
        .cloned()
        .unwrap_or_default();
    let listed: BTreeMap<String, manifest::Listed> = manifest::listed(&attrs)
        .unwrap_or_default()
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
    rep.has_manifest = !listed.is_empty();
    let present: BTreeSet<String> = manifest::array_names(store)?.into_iter().collect();
    for name in listed.keys().filter(|n| !present.contains(*n)) {
        problem(
            &format!("{name}/zarr.json"),
            "array listed in the group metadata is missing".into(),
        );
    }
    if rep.has_manifest {
        for name in present.iter().filter(|n| !listed.contains_key(*n)) {
            problem(
                &format!("{name}/zarr.json"),
                "array is not listed in the group metadata (added after the commit?)".into(),
            );
        }
    }

    // Per array: metadata, then chunks against the manifest.
    let mut work: Vec<(String, String)> = Vec::new(); // (array, chunk key) to decode
    for name in &present {
        rep.arrays += 1;
        let array = match Array::open(store.storage(), &format!("/{name}")) {
            Ok(a) => a,
            Err(e) => {
                problem(&format!("{name}/zarr.json"), format!("bad metadata: {e}"));
                continue;
            }
        };
        let prefix = format!("{name}/");
        let stored: BTreeMap<String, u64> = store
            .list_sizes(&prefix)?
            .into_iter()
            .filter(|(k, _)| {
                let rest = &k[prefix.len()..];
                rest != "zarr.json" && rest != MANIFEST_FILE
            })
            .collect();
        let m: Option<ArrayManifest> = match listed.get(name) {
            None => None,
            Some(l) => match manifest::load(store, l, true) {
                Ok(m) => Some(m),
                Err(e) => {
                    problem(&format!("{name}/{MANIFEST_FILE}"), e.to_string());
                    None
                }
            },
        };
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        if let Some(m) = &m {
            for (idx, size) in m.chunks() {
                let key = format!(
                    "{prefix}{}",
                    array.chunk_key(&idx).as_str().trim_start_matches(&prefix)
                );
                expected.insert(key, size);
            }
            for (key, size) in &expected {
                match stored.get(key) {
                    None => problem(key, "chunk listed in the manifest is missing".into()),
                    Some(s) if s != size => problem(
                        key,
                        format!("chunk holds {s} bytes, the manifest says {size}"),
                    ),
                    Some(_) => {}
                }
            }
            for key in stored.keys().filter(|k| !expected.contains_key(*k)) {
                problem(
                    key,
                    "object is not in the chunk manifest (written after the commit?)".into(),
                );
            }
        }
        for (key, size) in &stored {
            if m.is_none() || expected.contains_key(key) {
                rep.chunks_checked += 1;
                rep.bytes_checked += size;
                work.push((name.clone(), key.clone()));
            }
        }
    }

    // Coordinates against the geotransform.
    if let Ok(meta) = read_cube_meta(store) {
        let t = meta.geobox.transform;
        for (name, origin, step) in [("x", t[0], t[1]), ("y", t[3], t[5])] {
            if let Ok(v) = read_coord_f64(store, name) {
                let tol = step.abs() * 1e-6;
                if let Some((i, c)) = v
                    .iter()
                    .enumerate()
                    .find(|(i, c)| (**c - (origin + (*i as f64 + 0.5) * step)).abs() > tol)
                {
                    problem(
                        &format!("{name}/c/0"),
                        format!(
                            "coordinate {i} is {c}, the geotransform puts the pixel centre at {}",
                            origin + (i as f64 + 0.5) * step
                        ),
                    );
                }
            }
        }
    }

    // Deep: fetch and decode every chunk (crc32c checked by the codec chain).
    let total = work.len() as u64;
    progress(0, total);
    let done = AtomicU64::new(0);
    let decoded = AtomicU64::new(0);
    if deep {
        let arrays: BTreeMap<String, Option<Array<_>>> = present
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    Array::open(store.storage(), &format!("/{n}")).ok(),
                )
            })
            .collect();
        let found: Vec<Problem> = work
            .par_iter()
            .filter_map(|(name, key)| {
                let array = arrays.get(name).and_then(Option::as_ref)?;
                let rest = &key[name.len() + 1..];
                let out = match manifest::parse_key(rest, array.dimensionality()) {
                    None => Some(Problem {
                        key: key.clone(),
                        msg: "not a chunk key of this array".into(),
                    }),
                    Some(idx) => match array.retrieve_chunk::<ArrayBytes<'static>>(&idx) {
                        Ok(_) => {
                            decoded.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Err(e) => Some(Problem {
                            key: key.clone(),
                            msg: format!("does not decode: {e}"),
                        }),
                    },
                };
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                out
            })
            .collect();
        problems.extend(found);
    }
    rep.chunks_decoded = decoded.into_inner();
    // Whatever else keeps the cube from opening, unless it is a problem already named.
    if group.is_some() {
        if let Err(e) = read_cube_meta(store) {
            let msg = e.to_string();
            if !problems
                .iter()
                .any(|p| msg.contains(&format!("'{}'", p.key)))
            {
                problems.push(Problem {
                    key: "zarr.json".into(),
                    msg: format!("the cube does not open: {msg}"),
                });
            }
        }
    }
    problems.sort();
    rep.problems = problems;
    Ok(rep)
}
