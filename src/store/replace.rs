//! Isolated overwrites: the replacement of a committed cube is written beside it and switched
//! in at once, so a reader sees the whole old cube or the whole new one, never a mix, and an
//! interrupted overwrite leaves the old cube as it was.
//!
//! - Local: the new cube is written to the sibling directory `<out>.chunkcube-new-<id>`,
//!   committed there, then exchanged with `<out>` in one `renameat2(RENAME_EXCHANGE)` (two
//!   renames where the file system cannot exchange); the old cube, now at the sibling name,
//!   is removed after.
//! - S3 (no rename): the new cube is written as a complete Zarr group under the prefix
//!   `<out>/v-<id>/`; the root `zarr.json` is then replaced, with a conditional put on the
//!   ETag read when the overwrite began, by a group document naming that data prefix
//!   (`chunkcube.data_prefix`), which chunkcube's readers follow; the old objects are deleted
//!   after. Then, for other tools (Zarr has no redirection), the new objects are copied
//!   server side to the standard paths, the root switched to the plain group metadata and
//!   the prefix removed: once the overwrite returns, the cube is an ordinary Zarr group at
//!   `<out>` again.
//!
//! A reader tells a replacement during its read by the root metadata's identity (write id and
//! data prefix, [`identity_of`]), which every commit changes.

use super::{Location, Store, StoreError, StoreOptions};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The group attribute naming the prefix a replaced remote cube's data lives under.
pub const DATA_PREFIX: &str = "data_prefix";
const NEW: &str = ".chunkcube-new-";

/// A cube's identity in its root `zarr.json`: the write id and data prefix (`None` without a
/// write id: a store another tool wrote).
pub fn identity_of(zarr_json: &[u8]) -> Option<String> {
    let id = super::remote::write_id_of(zarr_json)?;
    Some(format!(
        "{id}|{}",
        data_prefix_of(zarr_json).unwrap_or_default()
    ))
}

/// The data prefix a root `zarr.json` names (one plain path segment), if any.
pub fn data_prefix_of(zarr_json: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(zarr_json).ok()?;
    let p = v.pointer(&format!("/attributes/chunkcube/{DATA_PREFIX}"))?;
    p.as_str()
        .filter(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
        .map(str::to_string)
}

/// The URL of `sub` under `s3://bucket/prefix`.
pub(crate) fn join_url(bucket: &str, prefix: &str, sub: &str) -> String {
    if prefix.is_empty() {
        format!("s3://{bucket}/{sub}")
    } else {
        format!("s3://{bucket}/{prefix}/{sub}")
    }
}

/// Where the replacement of a committed cube is being written.
pub struct Staging {
    store: Store,
    kind: Kind,
}

enum Kind {
    Local {
        target: PathBuf,
        staging: PathBuf,
    },
    S3 {
        root: Arc<dyn ObjectStore>,
        version: UpdateVersion,
        name: String,
        url: String,
    },
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Staging({})", self.store.url())
    }
}

fn io(url: &str, key: &str, msg: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        url: url.to_string(),
        key: key.to_string(),
        msg: super::redact::clean(&msg.to_string()),
    }
}

/// If `url` holds a committed cube, a location beside it to write its replacement (`id`
/// names it: a resumed ingest of the same fingerprint finds its chunks again); `None` when
/// there is no committed cube to protect (write in place). The caller holds the writer lock.
pub fn stage(url: &str, id: &str, opts: &StoreOptions) -> Result<Option<Staging>, StoreError> {
    match Location::parse(url)? {
        Location::Local(p) => {
            if !p.join("zarr.json").is_file() {
                return Ok(None);
            }
            let target = std::fs::canonicalize(&p).map_err(|e| io(url, "", e))?;
            let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
                return Ok(None);
            };
            let name = name.to_string_lossy().to_string();
            let staging = parent.join(format!("{name}{NEW}{id}"));
            clean_leftovers(parent, &name, &staging);
            if staging.join("zarr.json").exists() {
                // A complete cube here is the old one of an interrupted exchange (or a
                // replacement never switched in): not resumable, start afresh.
                std::fs::remove_dir_all(&staging).map_err(|e| io(url, "", e))?;
            }
            let store = Store::open_with(&staging.to_string_lossy(), true, opts)?;
            Ok(Some(Staging {
                store,
                kind: Kind::Local { target, staging },
            }))
        }
        Location::S3 { bucket, prefix } => {
            let raw = super::remote::s3::object_store_for(url, &bucket)?;
            let root: Arc<dyn ObjectStore> = if prefix.is_empty() {
                raw
            } else {
                Arc::new(PrefixStore::new(raw, prefix.as_str()))
            };
            let key = ObjectPath::from("zarr.json");
            let got = super::runtime().block_on(async {
                let g = root.get(&key).await?;
                let (e_tag, version) = (g.meta.e_tag.clone(), g.meta.version.clone());
                Ok::<_, object_store::Error>((g.bytes().await?, e_tag, version))
            });
            let (doc, e_tag, version) = match got {
                Ok(x) => x,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(io(url, "zarr.json", e)),
            };
            let mut name = format!("v-{id}");
            if data_prefix_of(&doc).as_deref() == Some(name.as_str()) {
                // Rewriting the identical content (an ingest's fingerprint): never over the
                // live data.
                name = format!("v-{id}-{}", super::layout::new_write_id());
            }
            let staging_url = join_url(&bucket, &prefix, &name);
            let store = Store::open_with(&staging_url, true, opts)?;
            Ok(Some(Staging {
                store,
                kind: Kind::S3 {
                    root,
                    version: UpdateVersion { e_tag, version },
                    name,
                    url: url.to_string(),
                },
            }))
        }
    }
}

/// Remove the staging directories of earlier interrupted overwrites of `name` (other than
/// `keep`), saying so.
fn clean_leftovers(parent: &Path, name: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let mine = format!("{name}{NEW}");
    for e in entries.flatten() {
        let p = e.path();
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with(&mine) && p != keep && p.is_dir() {
            eprintln!(
                "note: removing {} (left by an interrupted overwrite)",
                p.display()
            );
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

impl Staging {
    /// The store to write the replacement into (committed there as a whole cube).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Switch the committed replacement in, then remove the old cube.
    pub fn swap(self) -> Result<(), StoreError> {
        match self.kind {
            Kind::Local { target, staging } => swap_local(&target, &staging),
            Kind::S3 {
                root,
                version,
                name,
                url,
            } => swap_s3(&self.store, &root, version, &name, &url),
        }
    }
}

fn swap_local(target: &Path, staging: &Path) -> Result<(), StoreError> {
    let url = target.to_string_lossy().to_string();
    let fail = |e: std::io::Error| io(&url, "", format!("replacing the cube: {e}"));
    if !exchange(staging, target).map_err(fail)? {
        // No exchange on this file system: two renames (the cube is absent in between).
        let old = PathBuf::from(format!("{}.chunkcube-old", staging.display()));
        std::fs::rename(target, &old).map_err(fail)?;
        std::fs::rename(staging, target).map_err(fail)?;
        std::fs::rename(&old, staging).map_err(fail)?;
    }
    if let Some(parent) = target.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    // The old cube, now under the staging name.
    std::fs::remove_dir_all(staging).map_err(fail)
}

/// Exchange two paths atomically: Ok(false) when the file system cannot.
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths owned for the duration of the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e),
    }
}

fn swap_s3(
    staged: &Store,
    root: &Arc<dyn ObjectStore>,
    version: UpdateVersion,
    name: &str,
    url: &str,
) -> Result<(), StoreError> {
    let doc = staged.get("zarr.json")?.ok_or_else(|| {
        io(
            staged.url(),
            "zarr.json",
            "the replacement was not committed",
        )
    })?;
    let mut v: Value = serde_json::from_slice(&doc)
        .map_err(|e| io(staged.url(), "zarr.json", format!("invalid JSON: {e}")))?;
    // The root: the same group attributes, naming where the arrays are. (Its arrays are not
    // its children, so no consolidated metadata.)
    if let Some(o) = v.as_object_mut() {
        o.remove("consolidated_metadata");
    }
    if let Some(cc) = v
        .pointer_mut("/attributes/chunkcube")
        .and_then(Value::as_object_mut)
    {
        cc.insert(DATA_PREFIX.into(), Value::String(name.to_string()));
    }
    let body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    let opts = PutOptions {
        mode: PutMode::Update(version),
        ..Default::default()
    };
    let key = ObjectPath::from("zarr.json");
    let switched = match super::runtime().block_on(root.put_opts(&key, body.into(), opts)) {
        Ok(r) => r,
        Err(object_store::Error::Precondition { .. }) => {
            return Err(io(
                url,
                "zarr.json",
                format!(
                    "the cube was replaced by another writer while this one wrote; this result is left at {}",
                    staged.url()
                ),
            ))
        }
        Err(e) => return Err(io(url, "zarr.json", e)),
    };
    // The old cube's objects (and those of interrupted overwrites): all but the new root and
    // data prefix.
    let keep = format!("{name}/");
    let r = super::runtime().block_on(async {
        let old: Vec<ObjectPath> = root
            .list(None)
            .map_ok(|m| m.location)
            .try_filter(|p| {
                let s = p.as_ref();
                std::future::ready(s != "zarr.json" && !s.starts_with(&keep))
            })
            .try_collect()
            .await?;
        let stream = futures::stream::iter(old.into_iter().map(Ok)).boxed();
        root.delete_stream(stream)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
    });
    r.map_err(|e| io(url, "(old objects)", e))?;
    let version = UpdateVersion {
        e_tag: switched.e_tag,
        version: switched.version,
    };
    promote(root, name, url, doc, version)
}

/// Other tools read a group's arrays at the group's own paths only (Zarr has no
/// redirection): once chunkcube's readers follow the data prefix, its objects are copied
/// (server side) to the standard paths, the root is switched to the data group's own
/// metadata (its consolidated metadata included) and the prefix removed. The switch changes
/// the identity, so a chunkcube reader still on the prefix reports the replacement instead
/// of reading holes; another tool reading during an overwrite may see it incomplete, as with
/// any Zarr write in place, and the whole new cube once the overwrite returned.
fn promote(
    root: &Arc<dyn ObjectStore>,
    name: &str,
    url: &str,
    doc: bytes::Bytes,
    version: UpdateVersion,
) -> Result<(), StoreError> {
    let prefix = format!("{name}/");
    let own_root = format!("{name}/zarr.json");
    let rt = super::runtime();
    let staged: Vec<ObjectPath> = rt
        .block_on(
            root.list(Some(&ObjectPath::from(name)))
                .map_ok(|m| m.location)
                .try_collect(),
        )
        .map_err(|e| io(url, &prefix, e))?;
    // Chunks first, metadata last: a reader that finds an array's metadata finds its chunks.
    let (meta, chunks): (Vec<&ObjectPath>, Vec<&ObjectPath>) = staged
        .iter()
        .filter(|p| p.as_ref() != own_root)
        .partition(|p| p.as_ref().ends_with("zarr.json"));
    let plen = prefix.len();
    for group in [chunks, meta] {
        let copies = group.into_iter().map(|from| async move {
            let to = ObjectPath::from(&from.as_ref()[plen..]);
            root.copy(from, &to)
                .await
                .map_err(|e| io(url, to.as_ref(), e))
        });
        rt.block_on(
            futures::stream::iter(copies)
                .buffer_unordered(16)
                .try_collect::<Vec<()>>(),
        )?;
    }
    let opts = PutOptions {
        mode: PutMode::Update(version),
        ..Default::default()
    };
    rt.block_on(root.put_opts(&ObjectPath::from("zarr.json"), doc.into(), opts))
        .map_err(|e| io(url, "zarr.json", e))?;
    let stream = futures::stream::iter(staged.into_iter().map(Ok)).boxed();
    rt.block_on(root.delete_stream(stream).try_collect::<Vec<_>>())
        .map(|_| ())
        .map_err(|e| io(url, &prefix, e))
}

/// What a reader opened: the cube root and its identity then. Tells a replacement that
/// happened since (another run's `--overwrite`), so a read never passes a mix of two cubes,
/// or the holes of one being removed, off as data.
#[derive(Debug)]
pub struct Generation {
    root: Store,
    opened: Option<String>,
    replaced: std::sync::atomic::AtomicBool,
}

impl Generation {
    /// The generation of `store` with the identity it had when opened.
    pub fn new(store: &Store, opened: Option<String>) -> Arc<Generation> {
        Arc::new(Generation {
            root: store.root().clone(),
            opened,
            replaced: Default::default(),
        })
    }

    /// The cube's URL (its root).
    pub fn url(&self) -> &str {
        self.root.url()
    }

    /// Whether the cube was replaced since it was opened (stores of other tools, which carry
    /// no identity: never).
    pub fn check(&self) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;
        let Some(opened) = &self.opened else {
            return Ok(false);
        };
        if self.replaced.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let now = self.root.current_identity()?;
        let replaced = now.as_deref() != Some(opened.as_str());
        self.replaced.store(replaced, Ordering::Relaxed);
        Ok(replaced)
    }

    /// [`Generation::check`], a failure to tell counting as not replaced (for explaining
    /// another error).
    pub fn replaced(&self) -> bool {
        self.check().unwrap_or(false)
    }
}
