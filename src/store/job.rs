//! Jobs split over independent workers: `--shard I/N` and `chunkcube commit`.
//!
//! A cube written by one job is a pure function of its plan: every output object (a chunk,
//! or a storage shard of a sharded array) is computed whole by exactly one worker. So N
//! workers that share one store need no scheduler, only
//! - a deterministic split of the plan's objects, in canonical order, into N contiguous runs
//!   balanced by bytes ([`Splitter`]; the unit is the stored object, so no two workers ever
//!   write one object);
//! - a job marker ([`JOB_KEY`]: the plan's fingerprint, the shard count and the group metadata
//!   to write at commit), so that workers of another plan are refused, never merged;
//! - one marker per finished shard ([`ShardMarker`]: fingerprint, chunk count, bytes);
//! - a commit ([`commit`]) that checks every shard of the job finished and then writes the
//!   group metadata last, as a one-process run does. Before it, the cube does not open.
//!
//! A one-process run is the job of one shard, committed at its end.

use super::layout;
use super::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key of the job marker.
pub const JOB_KEY: &str = "chunkcube-job.json";
/// The key of the tiles' scan saved for a job's workers (`ingest --scan-only`), removed by
/// the commit.
pub const SCAN_KEY: &str = "chunkcube-scan.json";
/// The folder of the shard markers (`<index>.json`).
pub const SHARDS_PREFIX: &str = "chunkcube-shards/";

/// The environment variables `--shard auto/N` takes the worker index from, in this order:
/// Kubernetes Indexed Jobs, Slurm array jobs, AWS Batch array jobs.
pub const INDEX_VARS: [&str; 3] = [
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "AWS_BATCH_JOB_ARRAY_INDEX",
];

/// The most shards a job may have (a worker per shard; more would only make empty shards).
pub const MAX_SHARDS: u32 = 1 << 20;

/// Errors of sharded jobs. Each names the flag, variable, store or shard at fault.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A bad `--shard` value or index variable.
    #[error("invalid {what}: {msg}")]
    BadShard {
        /// The flag or variable.
        what: String,
        /// What is wrong.
        msg: String,
    },
    /// A worker of another plan (or shard count) ran against this store.
    #[error("{url} holds an unfinished job of another plan (fingerprint {theirs}, {their_count} shards; this run: {ours}, {our_count} shards): run every worker with the same inputs and options, or write to another location")]
    Mismatch {
        /// The store.
        url: String,
        /// The fingerprint found.
        theirs: String,
        /// Its shard count.
        their_count: u32,
        /// This run's fingerprint.
        ours: String,
        /// This run's shard count.
        our_count: u32,
    },
    /// Commit found shards not finished.
    #[error("{url}: cannot commit, {} of {count} shards not finished: {}; run those workers (the same command with --shard I/{count}) and commit again", missing.len(), list_shards(missing))]
    Missing {
        /// The store.
        url: String,
        /// Shards of the job.
        count: u32,
        /// Those without a marker.
        missing: Vec<u32>,
    },
    /// Commit found no job.
    #[error("{0}: nothing to commit (no sharded job was started here; run the workers with --shard I/N first)")]
    NoJob(String),
    /// A marker that cannot be read.
    #[error("{url} '{key}': {msg}")]
    BadMarker {
        /// The store.
        url: String,
        /// The marker key.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// A store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `0-3, 7, 9` for shard lists in messages (long lists cut).
fn list_shards(v: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", v[i], v[j])
        } else {
            v[i].to_string()
        });
        i = j + 1;
    }
    if parts.len() > 20 {
        let n = parts.len() - 20;
        parts.truncate(20);
        parts.push(format!("and {n} more ranges"));
    }
    parts.join(", ")
}

/// One worker's part of a job: shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// This worker's shard, `0..count`.
    pub index: u32,
    /// Shards in the job.
    pub count: u32,
}

impl Shard {
    /// The whole job in one worker.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`, checked.
    pub fn new(index: u32, count: u32) -> Result<Shard, JobError> {
        let bad = |msg: String| JobError::BadShard {
            what: "shard".into(),
            msg,
        };
        if count == 0 || count > MAX_SHARDS {
            return Err(bad(format!(
                "{index}/{count}: the count must be 1..{MAX_SHARDS}"
            )));
        }
        if index >= count {
            return Err(bad(format!(
                "{index}/{count}: the index must be below the count (0-based)"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parse `I/N` (0-based), or `auto/N` taking I from the first of [`INDEX_VARS`] that is
    /// set. Returns the shard and, for `auto`, the variable it came from (to log).
    pub fn parse(s: &str) -> Result<(Shard, Option<&'static str>), JobError> {
        let bad = |msg: &str| JobError::BadShard {
            what: format!("--shard '{s}'"),
            msg: msg.into(),
        };
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected I/N (0-based) or auto/N"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad("N must be a whole number"))?;
        if i.trim() == "auto" {
            let (shard, var) = Shard::from_env(n)?;
            return Ok((shard, Some(var)));
        }
        let i: u32 = i
            .trim()
            .parse()
            .map_err(|_| bad("I must be a whole number or 'auto'"))?;
        Shard::new(i, n)
            .map(|s| (s, None))
            .map_err(|e| bad(&e.to_string().replace("invalid shard: ", "")))
    }

    /// Shard I of `count`, I from the first of [`INDEX_VARS`] that is set (and which).
    pub fn from_env(count: u32) -> Result<(Shard, &'static str), JobError> {
        Shard::from_lookup(count, |k| std::env::var(k).ok())
    }

    /// [`Shard::from_env`] over any variable lookup (tests, embedding).
    pub fn from_lookup(
        count: u32,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(Shard, &'static str), JobError> {
        for var in INDEX_VARS {
            if let Some(v) = get(var) {
                let i: u32 = v.trim().parse().map_err(|_| JobError::BadShard {
                    what: var.into(),
                    msg: format!("'{v}' is not a whole number"),
                })?;
                let s = Shard::new(i, count).map_err(|e| JobError::BadShard {
                    what: var.into(),
                    msg: e.to_string().replace("invalid shard: ", ""),
                })?;
                return Ok((s, var));
            }
        }
        Err(JobError::BadShard {
            what: format!("--shard auto/{count}"),
            msg: format!("none of {} is set", INDEX_VARS.join(", ")),
        })
    }

    /// Whether this is the whole job.
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Assigns a job's objects, visited in their canonical order, to `count` shards: contiguous
/// runs balanced by weight (bytes). Object k goes to the shard holding the midpoint of its
/// weight on the job's cumulative weight line, so the split depends only on the weights, and
/// every worker computes the same split without talking to the others. O(1) memory.
#[derive(Debug, Clone)]
pub struct Splitter {
    total: u128,
    count: u128,
    before: u128,
}

impl Splitter {
    /// A split of objects of `total` weight into `count` shards.
    pub fn new(total: u64, count: u32) -> Splitter {
        Splitter {
            total: total.max(1) as u128,
            count: count.max(1) as u128,
            before: 0,
        }
    }

    /// The shard of the next object, of `weight`.
    pub fn next(&mut self, weight: u64) -> u32 {
        let mid = 2 * self.before + weight as u128;
        self.before += weight as u128;
        ((mid * self.count / (2 * self.total)).min(self.count - 1)) as u32
    }
}

/// The job marker: what every worker of one job agrees on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMarker {
    /// The plan's fingerprint (inputs, options, grid, codecs).
    pub fingerprint: String,
    /// Shards in the job.
    pub shards: u32,
    /// `ingest` or `calc`.
    pub kind: String,
    /// Product name for the group metadata.
    pub product: String,
    /// The group's write id; `None`: a fresh one at commit.
    pub write_id: Option<String>,
    /// Further group attributes.
    pub attributes: Map<String, Value>,
}

/// The marker of a finished shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMarker {
    /// The job's fingerprint.
    pub fingerprint: String,
    /// This shard.
    pub index: u32,
    /// Shards in the job.
    pub count: u32,
    /// Objects (chunks, or storage shards) of this shard.
    pub chunks: u64,
    /// Of those, written by an earlier run of this worker and verified.
    pub skipped: u64,
    /// Decoded bytes of this shard's objects.
    pub bytes: u64,
}

/// Key of shard `index`'s marker.
pub fn shard_key(index: u32) -> String {
    format!("{SHARDS_PREFIX}{index}.json")
}

/// Key of the note that shard `index` started: a worker that finds it is a re-run and checks
/// the objects already there; a first run writes without looking.
pub fn started_key(index: u32) -> String {
    format!("{SHARDS_PREFIX}{index}.started")
}

/// Note that `shard` started; returns whether an earlier run of it had (a re-run).
pub fn start_shard(store: &Store, shard: Shard) -> Result<bool, JobError> {
    let key = started_key(shard.index);
    if store.get(&key)?.is_some() {
        return Ok(true);
    }
    store.set(&key, bytes::Bytes::from_static(b"{}"))?;
    Ok(false)
}

fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: &str,
) -> Result<Option<T>, JobError> {
    match store.get(key)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| JobError::BadMarker {
                url: store.url().to_string(),
                key: key.to_string(),
                msg: format!("not a chunkcube marker: {e}"),
            }),
    }
}

fn write_json<T: Serialize>(store: &Store, key: &str, v: &T) -> Result<(), JobError> {
    let text = serde_json::to_vec_pretty(v).map_err(|e| JobError::BadMarker {
        url: store.url().to_string(),
        key: key.to_string(),
        msg: e.to_string(),
    })?;
    store.set(key, text.into())?;
    Ok(())
}

/// The job marker at `store`, if any.
pub fn read_job(store: &Store) -> Result<Option<JobMarker>, JobError> {
    read_json(store, JOB_KEY)
}

/// Put down the job marker `job` (a one-process write's first object, so an unfinished
/// result is recognisable as this tool's).
pub fn write_job(store: &Store, job: &JobMarker) -> Result<(), JobError> {
    write_json(store, JOB_KEY, job)
}

/// Whether `key` is bookkeeping of a job (markers), not cube content.
pub fn is_job_key(key: &str) -> bool {
    key == JOB_KEY || key == SCAN_KEY || key.starts_with(SHARDS_PREFIX)
}

fn mismatch(store: &Store, theirs: (&str, u32), ours: &JobMarker) -> JobError {
    JobError::Mismatch {
        url: store.url().to_string(),
        theirs: theirs.0.to_string(),
        their_count: theirs.1,
        ours: ours.fingerprint.clone(),
        our_count: ours.shards,
    }
}

/// Join (or start) the job `job` at `store`: refused if the store holds a job of another
/// plan or shard count, or a finished shard of one.
pub fn begin(store: &Store, job: &JobMarker) -> Result<(), JobError> {
    // Workers start together: on a local store another one may be writing the marker right
    // now (its temporary file is in the way); then read what it wrote.
    let mut tries = 0;
    loop {
        match read_job(store)? {
            Some(j) if j.fingerprint != job.fingerprint || j.shards != job.shards => {
                return Err(mismatch(store, (&j.fingerprint, j.shards), job))
            }
            Some(_) => break,
            None => match write_json(store, JOB_KEY, job) {
                Ok(()) => break,
                Err(_) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            },
        }
    }
    check_shard_markers(store, job)?;
    Ok(())
}

/// Refuse when a finished shard of another job is in the store (two plans started at once:
/// each wrote the job marker before seeing the other's).
fn check_shard_markers(store: &Store, job: &JobMarker) -> Result<Vec<ShardMarker>, JobError> {
    let mut found = Vec::new();
    for (k, _) in store.list_sizes(SHARDS_PREFIX)? {
        if !k.ends_with(".json") {
            continue;
        }
        if let Some(m) = read_json::<ShardMarker>(store, &k)? {
            if m.fingerprint != job.fingerprint || m.count != job.shards {
                return Err(mismatch(store, (&m.fingerprint, m.count), job));
            }
            found.push(m);
        }
    }
    Ok(found)
}

/// Record shard `marker` as finished (after its objects and the arrays' metadata are
/// durable). Refused if the job marker changed meanwhile (another plan's worker).
pub fn finish_shard(store: &Store, job: &JobMarker, marker: &ShardMarker) -> Result<(), JobError> {
    store.sync()?;
    match read_job(store)? {
        Some(j) if j.fingerprint == job.fingerprint && j.shards == job.shards => {}
        Some(j) => return Err(mismatch(store, (&j.fingerprint, j.shards), job)),
        None => return Err(JobError::NoJob(store.url().to_string())),
    }
    write_json(store, &shard_key(marker.index), marker)
}

/// The marker of shard `index` when it finished under the job `job`.
pub fn finished(store: &Store, job: &JobMarker, index: u32) -> Result<bool, JobError> {
    Ok(read_json::<ShardMarker>(store, &shard_key(index))?
        .is_some_and(|m| m.fingerprint == job.fingerprint && m.count == job.shards))
}

/// Where a job stands.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The job.
    pub job: JobMarker,
    /// Finished shards.
    pub done: Vec<ShardMarker>,
    /// Shards not finished.
    pub missing: Vec<u32>,
}

/// Read where the job at `store` stands.
pub fn status(store: &Store) -> Result<JobStatus, JobError> {
    let job = read_job(store)?.ok_or_else(|| JobError::NoJob(store.url().to_string()))?;
    let mut done = check_shard_markers(store, &job)?;
    done.sort_by_key(|m| m.index);
    let mut have = vec![false; job.shards as usize];
    for m in &done {
        if let Some(h) = have.get_mut(m.index as usize) {
            *h = true;
        }
    }
    let missing = (0..job.shards).filter(|i| !have[*i as usize]).collect();
    Ok(JobStatus { job, done, missing })
}

/// What a commit found.
#[derive(Debug, Clone, Serialize)]
pub struct CommitReport {
    /// The job's fingerprint.
    pub fingerprint: String,
    /// Shards committed.
    pub shards: u32,
    /// Objects the shards wrote (or found verified).
    pub chunks: u64,
    /// Their decoded bytes.
    pub bytes: u64,
    /// The cube was already committed (nothing done).
    pub already: bool,
}

/// Commit the job at `url`: check that every shard finished, write the group metadata last
/// (the commit point), then remove the markers. Refused, listing them, while shards are
/// missing. Committing a committed cube is a no-op.
pub fn commit(url: &str) -> Result<CommitReport, JobError> {
    // Opened as a writer (a remote reader would insist on the group metadata this writes),
    // but a missing local directory is not created.
    let missing_dir =
        matches!(super::Location::parse(url)?, super::Location::Local(p) if !p.exists());
    let store = Store::open(url, !missing_dir)?;
    commit_store(&store)
}

/// [`commit`] on an open store.
pub fn commit_store(store: &Store) -> Result<CommitReport, JobError> {
    let job = match read_job(store)? {
        Some(j) => j,
        None if store.get("zarr.json")?.is_some() => {
            return Ok(CommitReport {
                fingerprint: String::new(),
                shards: 0,
                chunks: 0,
                bytes: 0,
                already: true,
            })
        }
        None => return Err(JobError::NoJob(store.url().to_string())),
    };
    let st = status(store)?;
    if !st.missing.is_empty() {
        return Err(JobError::Missing {
            url: store.url().to_string(),
            count: job.shards,
            missing: st.missing,
        });
    }
    let write_id = job.write_id.clone().unwrap_or_else(layout::new_write_id);
    super::gate::committing(store.url(), || -> Result<(), JobError> {
        layout::write_group(store, &job.product, &write_id, job.attributes.clone())?;
        clear(store, job.shards)
    })?;
    Ok(CommitReport {
        fingerprint: job.fingerprint,
        shards: job.shards,
        chunks: st.done.iter().map(|m| m.chunks).sum(),
        bytes: st.done.iter().map(|m| m.bytes).sum(),
        already: false,
    })
}

/// Remove a job's markers (after its commit, or before an overwrite), and on local stores
/// the leftovers of interrupted atomic writes (now that no worker is writing).
pub fn clear(store: &Store, shards: u32) -> Result<(), JobError> {
    for i in 0..shards {
        store.erase(&shard_key(i))?;
        store.erase(&started_key(i))?;
    }
    store.erase(JOB_KEY)?;
    store.erase(SCAN_KEY)?;
    if !store.is_remote() {
        // The markers' folder too: other tools warn about a folder that is no Zarr node.
        store.erase_prefix(SHARDS_PREFIX)?;
        for (k, _) in store.list_sizes("")? {
            if k.ends_with(".tmp") {
                store.erase(&k)?;
            }
        }
    }
    Ok(())
}

/// Whether an object written by a job's codecs is whole: the crc32c every chunk ends with
/// (and, for a storage shard of `inner` chunks, the index's and each inner chunk's).
/// Without checksums only non-emptiness can be told.
pub fn verify_object(bytes: &[u8], crc32c: bool, inner: Option<u64>) -> bool {
    fn tail_ok(b: &[u8]) -> bool {
        b.len() >= 4 && {
            let (body, tail) = b.split_at(b.len() - 4);
            crc32c::crc32c(body).to_le_bytes() == tail
        }
    }
    if !crc32c {
        return !bytes.is_empty();
    }
    let Some(n) = inner else {
        return tail_ok(bytes);
    };
    // Sharding index at the end: n × (offset, nbytes) u64 little-endian, then its crc32c.
    let Some(index_len) = (n as usize).checked_mul(16).map(|l| l + 4) else {
        return false;
    };
    if bytes.len() < index_len || !tail_ok(&bytes[bytes.len() - index_len..]) {
        return false;
    }
    let index = &bytes[bytes.len() - index_len..bytes.len() - 4];
    let data_end = (bytes.len() - index_len) as u64;
    index.chunks_exact(16).all(|e| {
        let off = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(e[8..].try_into().unwrap_or_default());
        if off == u64::MAX && len == u64::MAX {
            return true; // an empty inner chunk (all fill)
        }
        off.checked_add(len)
            .is_some_and(|end| end <= data_end && tail_ok(&bytes[off as usize..end as usize]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_shards_and_names_the_culprit() {
        assert_eq!(
            Shard::parse("2/5").unwrap(),
            (Shard::new(2, 5).unwrap(), None)
        );
        for bad in ["5/5", "1/0", "x/3", "1-3", "1/", "-1/3"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let env = |k: &str| (k == "SLURM_ARRAY_TASK_ID").then(|| "3".to_string());
        assert_eq!(
            Shard::from_lookup(4, env).unwrap(),
            (Shard::new(3, 4).unwrap(), "SLURM_ARRAY_TASK_ID")
        );
        // The first variable set wins, even when a later one is set too.
        let both = |k: &str| match k {
            "JOB_COMPLETION_INDEX" => Some("1".into()),
            "AWS_BATCH_JOB_ARRAY_INDEX" => Some("2".into()),
            _ => None,
        };
        assert_eq!(
            Shard::from_lookup(4, both).unwrap().1,
            "JOB_COMPLETION_INDEX"
        );
        let e = Shard::from_lookup(2, |_| Some("2".into())).unwrap_err();
        assert!(e.to_string().contains("JOB_COMPLETION_INDEX"), "{e}");
        let e = Shard::from_lookup(2, |_| None).unwrap_err();
        assert!(e.to_string().contains("none of"), "{e}");
    }

    #[test]
    fn lists_shard_ranges() {
        assert_eq!(list_shards(&[0, 1, 2, 4, 6, 7]), "0-2, 4, 6-7");
    }

    #[test]
    fn verifies_checksums() {
        let mut chunk = b"hello".to_vec();
        chunk.extend_from_slice(&crc32c::crc32c(b"hello").to_le_bytes());
        assert!(verify_object(&chunk, true, None));
        let mut bad = chunk.clone();
        bad[0] ^= 1;
        assert!(!verify_object(&bad, true, None));
        assert!(!verify_object(&chunk[..chunk.len() - 1], true, None));
        // A shard of two inner chunks, one of them empty.
        let mut shard = chunk.clone();
        let mut index = Vec::new();
        index.extend_from_slice(&0u64.to_le_bytes());
        index.extend_from_slice(&(chunk.len() as u64).to_le_bytes());
        index.extend_from_slice(&u64::MAX.to_le_bytes());
        index.extend_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&index);
        shard.extend_from_slice(&index);
        shard.extend_from_slice(&crc.to_le_bytes());
        assert!(verify_object(&shard, true, Some(2)));
        let mut torn = shard.clone();
        torn[1] ^= 1;
        assert!(!verify_object(&torn, true, Some(2)));
        assert!(!verify_object(&shard, true, Some(3)));
    }

    /// The split by a plain loop: shard of each object from its weight's midpoint.
    fn reference(weights: &[u64], n: u32) -> Vec<u32> {
        let total: f64 = weights.iter().map(|w| *w as f64).sum::<f64>().max(1.0);
        let mut before = 0.0;
        weights
            .iter()
            .map(|w| {
                // Twice the midpoint, so every product is an exact integer in f64.
                let mid2 = 2.0 * before + *w as f64;
                before += *w as f64;
                ((mid2 * n as f64 / (2.0 * total)).floor() as u32).min(n - 1)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn splits_are_contiguous_balanced_and_cover(
            weights in proptest::collection::vec(1u64..1000, 1..300),
            n in 1u32..40,
        ) {
            let total: u64 = weights.iter().sum();
            let mut s = Splitter::new(total, n);
            let got: Vec<u32> = weights.iter().map(|w| s.next(*w)).collect();
            // Monotone: contiguous runs in canonical order, so disjoint and covering.
            prop_assert!(got.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(got.iter().all(|s| *s < n));
            prop_assert_eq!(&got, &reference(&weights, n));
            // Balanced: no shard exceeds its share by more than one object.
            let max_w = *weights.iter().max().unwrap();
            let mut per = vec![0u64; n as usize];
            for (w, s) in weights.iter().zip(&got) {
                per[*s as usize] += w;
            }
            for p in per {
                prop_assert!(p as f64 <= total as f64 / n as f64 + max_w as f64 + 1.0);
            }
        }
    }
}
