//! Preparing an ingest's output location: resume, refuse or clear what is there.

use super::IngestError;
use crate::store::job::{self, JobMarker};
use crate::store::{layout, Store};
use serde_json::Value;

/// Decide what to do with the output location. Returns `false` when the identical cube is
/// already complete there. A worker of a job (`sharded`) never erases: another plan's job is
/// refused.
pub(super) fn prepare_output(
    store: &Store,
    job: &JobMarker,
    overwrite: bool,
    sharded: bool,
) -> Result<bool, IngestError> {
    let url = store.url().to_string();
    let exists = |msg: &str| IngestError::OutputExists {
        url: url.clone(),
        msg: msg.into(),
    };
    let fingerprint = job.fingerprint.as_str();
    if let Some(root) = store.get("zarr.json")? {
        let doc: Value = serde_json::from_slice(&root).unwrap_or(Value::Null);
        let fp = doc
            .pointer("/attributes/ingest_fingerprint")
            .and_then(Value::as_str);
        if fp == Some(fingerprint) && !overwrite {
            // Killed between the commit and removing the markers: the cube is complete.
            if let Some(j) = job::read_job(store)? {
                job::clear(store, j.shards)?;
            }
            return Ok(false);
        }
        if !overwrite {
            return Err(exists("already holds a different cube"));
        }
        layout::uncommit(store)?;
        store.erase_prefix("")?;
    } else if let Some(j) = job::read_job(store)? {
        if j.fingerprint != job.fingerprint || j.shards != job.shards {
            if sharded {
                job::begin(store, job)?; // refused, naming both plans
            }
            if !overwrite {
                return Err(exists(if j.kind == "ingest" {
                    "holds an unfinished ingest of different tiles or options"
                } else {
                    "holds an unfinished chunkcube result (a failed or interrupted calc or load --out)"
                }));
            }
            store.erase_prefix("")?;
        }
    } else if store
        .list_sizes("")?
        .iter()
        .any(|(k, _)| !k.ends_with(".tmp") && k != job::SCAN_KEY)
        // Workers start together: what the listing found may be another worker of this job
        // that wrote its job marker after the check above.
        && !(sharded
            && job::read_job(store)?
                .is_some_and(|j| j.fingerprint == job.fingerprint && j.shards == job.shards))
    {
        // (Only leftovers of failed atomic writes, e.g. the marker's own when the disk was
        // full, are no reason to refuse: they are removed below.)
        if !overwrite {
            return Err(exists("is not empty and is not a chunkcube cube"));
        }
        store.erase_prefix("")?;
    }
    // Leftovers of interrupted atomic writes (not while other workers may be writing).
    if job.shards == 1 {
        for (k, _) in store.list_sizes("")? {
            if k.ends_with(".tmp") {
                store.erase(&k)?;
            }
        }
    }
    job::begin(store, job)?;
    Ok(true)
}
